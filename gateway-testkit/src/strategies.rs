//! proptest strategies for environs, requests, header maps and bodies split into chunks, for
//! the project's tests and for anyone testing an app, a middleware or an adapter.
//!
//! ```
//! use proptest::prelude::*;
//! use gateway_testkit::strategies;
//!
//! proptest!(|(request in strategies::request())| {
//!     prop_assert!(request.uri().path().starts_with('/'));
//! });
//! ```

use bytes::Bytes;
use gateway_core::Environ;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use proptest::prelude::*;

/// A path segment: unreserved characters, percent escapes, and the odd sub-delimiter.
fn segment() -> impl Strategy<Value = String> {
    proptest::string::string_regex("([a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2}){0,8}")
        .expect("a valid regex")
}

/// A request path (`/` and segments), percent-encoded as a client sends it.
pub fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..5).prop_map(|segments| {
        let mut path = String::from("/");
        path.push_str(&segments.join("/"));
        path
    })
}

/// A query string (without `?`), possibly empty.
pub fn query() -> impl Strategy<Value = String> {
    proptest::string::string_regex("([a-z0-9=&%+._-]|%[0-9A-F]{2}){0,20}").expect("a valid regex")
}

/// A method: the common ones and an extension token.
pub fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
        Just(Method::HEAD),
        Just(Method::from_bytes(b"PURGE").expect("a token")),
    ]
}

/// A header map of 0 to 8 headers with dashed names (no `_`, which servers drop) and visible
/// ASCII values, repeated names included.
pub fn header_map() -> impl Strategy<Value = HeaderMap> {
    let name =
        proptest::string::string_regex("x-[a-z0-9]{1,6}(-[a-z0-9]{1,4})?").expect("a valid regex");
    let value = proptest::string::string_regex("[!-~]([ -~]{0,10}[!-~])?").expect("a valid regex");
    proptest::collection::vec((name, value), 0..8).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("generated names are tokens"),
                HeaderValue::from_str(&value).expect("generated values are visible ASCII"),
            );
        }
        headers
    })
}

/// A body: up to 4 KiB of any bytes.
pub fn body() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..4096).prop_map(Bytes::from)
}

/// `data` split into chunks at arbitrary places (empty chunks included).
pub fn chunked(data: Bytes) -> impl Strategy<Value = Vec<Bytes>> {
    let len = data.len();
    proptest::collection::vec(0..=len, 0..6).prop_map(move |mut cuts| {
        cuts.sort_unstable();
        let mut chunks = Vec::with_capacity(cuts.len() + 1);
        let mut at = 0;
        for cut in cuts {
            chunks.push(data.slice(at..cut));
            at = cut;
        }
        chunks.push(data.slice(at..));
        chunks
    })
}

/// A body and the chunks it is split into.
pub fn chunked_body() -> impl Strategy<Value = (Bytes, Vec<Bytes>)> {
    body().prop_flat_map(|data| (Just(data.clone()), chunked(data)))
}

/// An HTTP request: method, path, query, headers and a body (with `Content-Length` when it has
/// one).
pub fn request() -> impl Strategy<Value = Request<Bytes>> {
    (method(), path(), query(), header_map(), body()).prop_map(
        |(method, path, query, headers, body)| {
            let uri = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .body(body.clone())
                .expect("generated parts are valid");
            *request.headers_mut() = headers;
            if !body.is_empty() {
                request
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            request
        },
    )
}

/// A valid environ, as a server following the contract builds one: the required variables, a
/// split of a path into `SCRIPT_NAME` and `PATH_INFO`, a query, `HTTP_*` headers.
pub fn environ() -> impl Strategy<Value = Environ> {
    (method(), path(), 0..3usize, query(), header_map()).prop_map(
        |(method, path, split, query, headers)| {
            let decoded = gateway_core::convert::percent_decode(path.as_bytes());
            // Mount at the first `split` segments.
            let cut = decoded
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'/')
                .map(|(i, _)| i)
                .nth(split)
                .filter(|&i| i > 0)
                .unwrap_or(0);
            let mut environ = Environ::new();
            environ.set("REQUEST_METHOD", method.as_str().to_owned());
            environ.set("SCRIPT_NAME", decoded.slice(..cut));
            environ.set("PATH_INFO", decoded.slice(cut..));
            environ.set("QUERY_STRING", query);
            environ.set("SERVER_NAME", "localhost");
            environ.set("SERVER_PORT", "80");
            environ.set("SERVER_PROTOCOL", "HTTP/1.1");
            for (name, value) in &headers {
                let var = gateway_core::header_var_name(name.as_str());
                let joined = match environ.get_bytes(std::str::from_utf8(&var).unwrap_or("")) {
                    Some(old) => Bytes::from([&old[..], b", ", value.as_bytes()].concat()),
                    None => Bytes::copy_from_slice(value.as_bytes()),
                };
                environ.set(var, joined);
            }
            environ
        },
    )
}
