"""The Python peer app of scripts/bench.sh (a WSGI app, standard library only), for gunicorn,
uWSGI and flup: "Hello, world!" for any request, the request body back for POST /echo."""

HELLO = b"Hello, world!\n"


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
        )
        return [body]
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]
