/* The C hello CGI program of scripts/bench.sh (the same as examples/benches/deployment.rs). */
#include <stdio.h>
int main(void) {
  fputs("Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n",
        stdout);
  return 0;
}
