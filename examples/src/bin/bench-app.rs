//! `bench-app`: the app every peer of `scripts/bench.sh` serves. `POST /echo` answers with the
//! request body as it came (the benchmark sends 64 KiB); any other request gets `Hello, world!`.
//! Same flags as `hello` (`--http`, `--fastcgi`, `--uwsgi`, CGI under `GATEWAY_INTERFACE`).

use std::io::Read;

use gateway_core::{Body, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

fn bench_app(mut environ: Environ, start: StartResponse) -> Body {
    if environ.path_info() != b"/echo" {
        return examples::hello(environ, start);
    }
    // `read_to_end` reserves room as the body comes, never more than a bounded amount ahead.
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    match start.start(StatusCode::OK, headers) {
        Ok(_) => Body::from(body),
        Err(error) => Body::error(error),
    }
}

fn main() -> std::process::ExitCode {
    gateway_servers::run(bench_app)
}
