/* The floor of the uwsgi section of scripts/bench.sh: the least a uwsgi server can do per
 * request. One process, blocking calls, nothing else: accept a connection, read its packet
 * (and its body), write the answer in one write, close. No environ, no app, no event loop:
 * what any real server adds to this is its own cost, and this row's requests per second are
 * the most that any server could reach behind the same nginx on the same core.
 * Answers "Hello, world!" for any request, the request body back for PATH_INFO /echo.
 * Usage: uwsgi_floor HOST:PORT
 * Build: gcc -O2 -o uwsgi_floor uwsgi_floor.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Reads until `want` bytes are in `buf` (from `got`): the bytes held, fewer at EOF. */
static size_t fill(int fd, char *buf, size_t got, size_t want) {
  while (got < want) {
    ssize_t n = read(fd, buf + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  return got;
}

/* The value of the uwsgi var `name` in the vars block, or NULL. */
static const char *var(const unsigned char *vars, size_t size, const char *name, size_t *len) {
  size_t at = 0, want = strlen(name);
  while (at + 2 <= size) {
    size_t name_len = vars[at] | (size_t)vars[at + 1] << 8;
    const unsigned char *n = vars + at + 2;
    at += 2 + name_len;
    if (at + 2 > size) return NULL;
    size_t value_len = vars[at] | (size_t)vars[at + 1] << 8;
    const unsigned char *v = vars + at + 2;
    at += 2 + value_len;
    if (at > size) return NULL;
    if (name_len == want && memcmp(n, name, want) == 0) {
      *len = value_len;
      return (const char *)v;
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2 || !strchr(argv[1], ':')) {
    fprintf(stderr, "usage: uwsgi_floor HOST:PORT\n");
    return 2;
  }
  char host[64];
  snprintf(host, sizeof host, "%.*s", (int)(strchr(argv[1], ':') - argv[1]), argv[1]);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(strchr(argv[1], ':') + 1))};
  int one = 1, sock = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || bind(sock, (void *)&addr, sizeof addr) ||
      listen(sock, 1024)) {
    perror("uwsgi_floor");
    return 1;
  }
  static const char hello[] =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
  size_t capacity = 1 << 17;
  char *buf = malloc(capacity);
  for (;;) {
    int conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) continue;
    size_t got = fill(conn, buf, 0, 4);
    size_t size = got < 4 ? 0 : ((unsigned char)buf[1] | (size_t)(unsigned char)buf[2] << 8);
    got = fill(conn, buf, got, 4 + size);
    if (got < 4 + size) {
      close(conn);
      continue;
    }
    const unsigned char *vars = (const unsigned char *)buf + 4;
    size_t path_len = 0, length_len = 0;
    const char *path = var(vars, size, "PATH_INFO", &path_len);
    const char *length_var = var(vars, size, "CONTENT_LENGTH", &length_len);
    size_t length = 0;
    for (size_t i = 0; length_var && i < length_len && length_var[i] >= '0' && length_var[i] <= '9'; i++)
      length = length * 10 + (size_t)(length_var[i] - '0');
    if (path && path_len == 5 && memcmp(path, "/echo", 5) == 0) {
      size_t head = 4 + size;
      if (head + length > capacity) {
        capacity = head + length;
        buf = realloc(buf, capacity);
      }
      got = fill(conn, buf, got, head + length);
      char prefix[128];
      int prefix_len = snprintf(prefix, sizeof prefix,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                "Content-Length: %zu\r\n\r\n", got - head);
      struct iovec parts[2] = {{prefix, (size_t)prefix_len}, {buf + head, got - head}};
      int first = 0;
      while (first < 2) {
        ssize_t n = writev(conn, parts + first, 2 - first);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (; first < 2 && (size_t)n >= parts[first].iov_len; first++) n -= (ssize_t)parts[first].iov_len;
        if (first < 2) {
          parts[first].iov_base = (char *)parts[first].iov_base + n;
          parts[first].iov_len -= (size_t)n;
        }
      }
    } else {
      ssize_t n = write(conn, hello, sizeof hello - 1);
      (void)n;
    }
    close(conn);
  }
}
