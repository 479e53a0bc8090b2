/* The C peer of scripts/bench.sh: a pool of FastCGI responders on libfcgi (Debian's
 * libfcgi-dev). The parent binds the socket and forks N children that each accept and answer
 * one request at a time: "Hello, world!" for any request, the request body back for POST /echo.
 * Usage: fcgi_pool HOST:PORT N
 * Build: gcc -O2 -o fcgi_pool fcgi_pool.c -lfcgi */
#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void serve(int sock) {
  FCGX_Request request;
  size_t capacity = 1 << 16;
  char *buffer = malloc(capacity);
  FCGX_InitRequest(&request, sock, 0);
  while (FCGX_Accept_r(&request) >= 0) {
    const char *uri = FCGX_GetParam("DOCUMENT_URI", request.envp);
    const char *script = FCGX_GetParam("SCRIPT_NAME", request.envp);
    const char *path = uri ? uri : script;
    if (path && strcmp(path, "/echo") == 0) {
      const char *length_var = FCGX_GetParam("CONTENT_LENGTH", request.envp);
      size_t length = length_var ? strtoul(length_var, NULL, 10) : 0;
      if (length > capacity) {
        capacity = length;
        buffer = realloc(buffer, capacity);
      }
      size_t got = 0;
      while (got < length) {
        int n = FCGX_GetStr(buffer + got, (int)(length - got), request.in);
        if (n <= 0) break;
        got += (size_t)n;
      }
      FCGX_FPrintF(request.out,
                   "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n"
                   "Content-Length: %lu\r\n\r\n", (unsigned long)got);
      FCGX_PutStr(buffer, (int)got, request.out);
    } else {
      FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Length: 14\r\n\r\nHello, world!\n", request.out);
    }
    FCGX_Finish_r(&request);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s HOST:PORT N\n", argv[0]);
    return 2;
  }
  int children = atoi(argv[2]);
  FCGX_Init();
  const char *addr = argv[1];
  /* libfcgi binds ":PORT" on every address; "HOST:PORT" on HOST. */
  int sock = FCGX_OpenSocket(addr, 1024);
  if (sock < 0) {
    perror("FCGX_OpenSocket");
    return 1;
  }
  for (int i = 0; i < children; i++) {
    if (fork() == 0) {
      serve(sock);
      _exit(0);
    }
  }
  signal(SIGTERM, SIG_IGN);
  /* The benchmark stops the pool by its process group. */
  while (wait(NULL) > 0) {
  }
  return 0;
}
