"""The echo app of the conformance suite, as a WSGI application (PEP 3333).

It behaves exactly as the reference echo app, ``gateway_testkit::echo`` (its module
documentation fixes the behaviour), so ``gateway-conformance`` can be run against Python
servers serving it (see docs/conformance.md):

- any request: 200, ``Content-Type: application/json``, a ``Content-Length``, and
  ``{"environ": {NAME: VALUE, ...}, "body_len": N, "body_sha256": "HEX"}``, where ``environ``
  holds every meta-variable (the CGI and ``HTTP_*`` keys; in Python 3 WSGI they are already
  str, one latin-1 code point per byte) plus ``"wsgi.url_scheme"``, and the body is read as
  ``CONTENT_LENGTH`` bytes when that is a number, to the end of the input otherwise;
- ``PATH_INFO`` ``/status/NNN``: status NNN and the same JSON, except that 1xx, 204 and 304
  answers have no body and no ``Content-Length`` (and still the JSON content type);
- ``/stream/N``: ``text/plain``, N chunks of 1000 ``x``, no ``Content-Length``, each yielded as
  it is produced;
- ``/headers?name=value&...``: the JSON answer, plus each percent-decoded pair as a response
  header, in order (repeated names give repeated headers); hop-by-hop names, Content-Length and
  Content-Type are skipped.

Standard library only.
"""

import hashlib
import http
import json
import re
from urllib.parse import unquote_to_bytes

STREAM_CHUNK = 1000

# The hop-by-hop headers an app may not set (gateway_core::is_hop_by_hop).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}

# An HTTP token (a valid header name) and a valid header value (no control bytes but tab).
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


def status_line(code):
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    return f"{code} {reason}"


def bad_request(start_response):
    start_response("400 Bad Request", [("Content-Type", "text/plain")])
    return [b"400 Bad Request\n"]


def read_body(environ):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    chunks = []
    if length.isdigit():
        left = int(length)
        while left > 0:
            chunk = stream.read(min(left, 64 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    elif environ.get("wsgi.input_terminated", True):
        # No length: the input ends where the body does (a server that says it does not has
        # no way to tell the end, so nothing is read).
        while True:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def query_pairs(query):
    """The name=value pairs of a query string (a latin-1 str), percent-decoded, as bytes."""
    pairs = []
    for pair in query.encode("latin-1").split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def stream(count):
    chunk = b"x" * STREAM_CHUNK
    for _ in range(count):
        yield chunk


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/stream/"):
        count = path[len("/stream/") :]
        if not (count.isascii() and count.isdigit()):
            return bad_request(start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream(int(count))

    code = 200
    if path.startswith("/status/"):
        text = path[len("/status/") :]
        if not (text.isascii() and text.isdigit()) or not 100 <= int(text) <= 999:
            return bad_request(start_response)
        code = int(text)

    body = read_body(environ)
    variables = {
        name: value
        for name, value in environ.items()
        if isinstance(value, str) and "." not in name
    }
    variables["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    answer = json.dumps(
        {
            "environ": variables,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")

    headers = [("Content-Type", "application/json")]
    if path == "/headers":
        for name, value in query_pairs(environ.get("QUERY_STRING", "")):
            if not TOKEN.match(name) or not VALUE.match(value):
                continue
            name = name.decode("ascii").lower()
            if name in HOP_BY_HOP or name in ("content-length", "content-type"):
                continue
            headers.append((name, value.decode("latin-1")))
    bodyless = code < 200 or code in (204, 304)
    if not bodyless:
        headers.append(("Content-Length", str(len(answer))))
    start_response(status_line(code), headers)
    return [] if bodyless else [answer]
