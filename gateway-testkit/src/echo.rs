//! The reference echo app: [`echo`] answers with the environ it saw and a digest of the
//! request body, as JSON. It is the app of every conformance run (the `echo` example program
//! serves it; servers of other languages serve an equivalent one), so its behaviour is fixed:
//!
//! - any request: 200, `Content-Type: application/json`, a `Content-Length`, and
//!   `{"environ": {NAME: VALUE, ...}, "body_len": N, "body_sha256": "HEX"}`, where `environ`
//!   holds every meta-variable as a string (bytes that are not UTF-8 mapped as latin-1, one
//!   byte one code point) plus `"wsgi.url_scheme"`, and `body_len` and `body_sha256` are those
//!   of the request body;
//! - the request body is always read from the input to its end, whatever `CONTENT_LENGTH`
//!   says, before the answer starts (this project's servers end the input after
//!   `CONTENT_LENGTH` bytes, or at the end of a chunked body; an implementation on a server
//!   whose input does not end there reads `CONTENT_LENGTH` bytes when that is a number). A
//!   read that fails makes the answer that error (a 500). Only `/stream/N` and the 400 answers
//!   below do not read it;
//! - `PATH_INFO` `/status/NNN`: status NNN and the same JSON, except that 1xx, 204 and 304
//!   answers have no body and no `Content-Length` (and still the JSON content type);
//! - `/stream/N`: `text/plain`, N chunks of 1000 `x`, no `Content-Length`, each sent as it is
//!   produced;
//! - `/status/` followed by anything but a number from 100 to 999, or `/stream/` followed by
//!   anything but a number: 400, `Content-Type: text/plain`, body `400 Bad Request\n`;
//! - `/headers?name=value&...`: the JSON answer, plus each percent-decoded pair as a response
//!   header, in order (repeated names give repeated headers). Left out: hop-by-hop names
//!   ([`is_hop_by_hop`]), `Status`, `Content-Length`, `Content-Type` (names in any case), and
//!   names or values that are not valid in a header.
//!
//! ```
//! use gateway_core::{driver, Environ};
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("PATH_INFO", "/status/201");
//! let response = gateway_core::block_on(driver::call(&gateway_testkit::echo::echo, environ));
//! assert_eq!(response.status(), 201);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! ```

use bytes::Bytes;
use gateway_core::convert::percent_decode;
use gateway_core::{Body, Environ, StartResponse, is_hop_by_hop, latin1};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

/// The size of each chunk of `/stream/N`.
pub const STREAM_CHUNK: usize = 1000;

/// The echo app (see the [module documentation](self)).
pub fn echo(mut environ: Environ, start: StartResponse) -> Body {
    let path = environ.path_info().to_vec();
    if let Some(count) = path.strip_prefix(b"/stream/") {
        let Some(count) = std::str::from_utf8(count)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return bad_request(start);
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if let Err(error) = start.start(StatusCode::OK, headers) {
            return Body::error(error);
        }
        let chunk = Bytes::from(vec![b'x'; STREAM_CHUNK]);
        return Body::from_chunks((0..count).map(move |_| chunk.clone()));
    }
    let status = match path.strip_prefix(b"/status/") {
        Some(code) => match std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => status,
            None => return bad_request(start),
        },
        None => StatusCode::OK,
    };

    // The body is hashed as it comes: it is never held whole (CGI has no body limit).
    let mut digest = Sha256::new();
    let mut body_len = 0u64;
    loop {
        let input = environ.input();
        let chunk = match std::io::BufRead::fill_buf(input) {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(error) => return Body::error(error),
        };
        digest.update(chunk);
        let n = chunk.len();
        body_len += n as u64;
        std::io::BufRead::consume(input, n);
    }
    let mut vars = serde_json::Map::new();
    for (name, value) in environ.vars() {
        vars.insert(
            latin1(name).into_owned(),
            serde_json::Value::String(latin1(value).into_owned()),
        );
    }
    vars.insert(
        "wsgi.url_scheme".to_owned(),
        serde_json::Value::String(environ.url_scheme().as_str().to_owned()),
    );
    let answer = serde_json::json!({
        "environ": vars,
        "body_len": body_len,
        "body_sha256": hex(&digest.finalize()),
    });
    let json = answer.to_string();

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if path == b"/headers" {
        for (name, value) in query_pairs(environ.query_string()) {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&name),
                HeaderValue::from_bytes(&value),
            ) else {
                continue;
            };
            // What `start` refuses (hop-by-hop names, `Status`) and what the answer sets
            // itself are left out: the answer stays the JSON with its 200.
            if is_hop_by_hop(&name)
                || name == "status"
                || name == CONTENT_LENGTH
                || name == CONTENT_TYPE
            {
                continue;
            }
            headers.append(name, value);
        }
    }
    let bodyless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodyless {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(json.len()));
    }
    match start.start(status, headers) {
        Ok(_) if bodyless => Body::empty(),
        Ok(_) => Body::from(json),
        Err(error) => Body::error(error),
    }
}

fn bad_request(start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    match start.start(StatusCode::BAD_REQUEST, headers) {
        Ok(_) => Body::from("400 Bad Request\n"),
        Err(error) => Body::error(error),
    }
}

/// The `name=value` pairs of a query string, percent-decoded, in order.
fn query_pairs(query: &[u8]) -> Vec<(Bytes, Bytes)> {
    query
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{Input, driver};
    use http_body_util::BodyExt;

    fn call(
        path: &str,
        query: &str,
        method: &str,
        body: Option<&'static str>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        environ.set("PATH_INFO", path.to_owned());
        environ.set("QUERY_STRING", query.to_owned());
        environ.set("HTTP_X_LATIN", &b"caf\xe9"[..]);
        if let Some(body) = body {
            environ.set("CONTENT_LENGTH", body.len().to_string());
            environ.set_input(Input::from_bytes(body).with_limit(body.len() as u64));
        }
        let response = gateway_core::block_on(driver::call(&echo, environ));
        let (parts, body) = response.into_parts();
        let body = gateway_core::block_on(body.collect()).unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    #[test]
    fn the_environ_and_the_body_digest() {
        let (status, headers, body) = call("/x", "a=1", "POST", Some("hello"));
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["environ"]["PATH_INFO"], "/x");
        assert_eq!(json["environ"]["QUERY_STRING"], "a=1");
        assert_eq!(json["environ"]["HTTP_X_LATIN"], "caf\u{e9}");
        assert_eq!(json["environ"]["wsgi.url_scheme"], "http");
        assert_eq!(json["body_len"], 5);
        assert_eq!(
            json["body_sha256"],
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn statuses() {
        let (status, headers, body) = call("/status/418", "", "GET", None);
        assert_eq!(status, 418);
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        assert!(headers.contains_key("content-length"));
        for code in [204, 304] {
            let (status, headers, body) = call(&format!("/status/{code}"), "", "GET", None);
            assert_eq!(status.as_u16(), code);
            assert!(body.is_empty());
            assert!(!headers.contains_key("content-length"), "{code}");
            assert_eq!(headers["content-type"], "application/json");
        }
        assert_eq!(call("/status/abc", "", "GET", None).0, 400);
    }

    #[test]
    fn streams() {
        let mut environ = Environ::new();
        environ.set("PATH_INFO", "/stream/3");
        let response = gateway_core::block_on(driver::call(&echo, environ));
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert!(!response.headers().contains_key("content-length"));
        let mut body = response.into_body();
        let mut chunks = Vec::new();
        while let Some(frame) = gateway_core::block_on(body.frame()) {
            chunks.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() == 1000 && c.iter().all(|&b| b == b'x'))
        );
    }

    #[test]
    fn headers_in_order() {
        let (status, headers, _) = call(
            "/headers",
            "x-a=1&x-b=two%20words&x-a=3&bad%20name=v",
            "GET",
            None,
        );
        assert_eq!(status, 200);
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(headers["x-b"], "two words");

        // Names `start` refuses are left out: the answer is still the JSON with its 200.
        let (status, headers, body) = call("/headers", "status=500&x-c=1&Status=1", "GET", None);
        assert_eq!(status, 200);
        assert_eq!(headers["x-c"], "1");
        assert!(!headers.contains_key("status"));
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }

    #[test]
    fn a_body_of_many_chunks_is_hashed_as_it_comes() {
        let chunks = [&b"hel"[..], b"lo"].map(Bytes::from_static);
        let mut environ = Environ::new();
        environ.set("PATH_INFO", "/");
        environ.set_input(Input::from_body(Body::from_chunks(chunks)));
        let response = gateway_core::block_on(driver::call(&echo, environ));
        let body = gateway_core::block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["body_len"], 5);
        assert_eq!(
            json["body_sha256"],
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn head_keeps_the_length() {
        let (status, headers, body) = call("/", "", "HEAD", None);
        assert_eq!(status, 200);
        assert!(body.is_empty());
        assert_ne!(headers["content-length"], "0");
    }
}
