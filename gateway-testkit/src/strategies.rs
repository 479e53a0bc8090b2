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

/// A header map of 0 to 7 headers with dashed names (no `_`, which servers drop) and visible
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

/// A body: 0 to 4095 bytes (under 4 KiB), any bytes.
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
///
/// The app is mounted at the root (`SCRIPT_NAME` empty) or at a prefix that starts with `/`
/// and does not end with one, so `SCRIPT_NAME` is never `/`, even for paths with empty
/// segments or a decoded `%2F`.
pub fn environ() -> impl Strategy<Value = Environ> {
    (method(), path(), 0..3usize, query(), header_map()).prop_map(
        |(method, path, split, query, headers)| {
            let decoded = gateway_core::convert::percent_decode(path.as_bytes());
            // Mount at the root (`split` 0) or before the `split`-th slash that can end a
            // prefix: not the leading one (the prefix would be empty) and not one right after
            // another slash (the prefix would end in `/`, and be `/` itself at the start).
            let cut = split
                .checked_sub(1)
                .and_then(|nth| {
                    (1..decoded.len())
                        .filter(|&i| decoded[i] == b'/' && decoded[i - 1] != b'/')
                        .nth(nth)
                })
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

/// Wire strategies for adapter authors: whole FastCGI requests and uwsgi packets, split at
/// arbitrary places, and corrupted copies of any wire bytes (feature `servers` too).
#[cfg(feature = "servers")]
pub mod wire {
    use bytes::{Bytes, BytesMut};
    use gateway_servers::fastcgi::codec::{self, Role, StreamKind};
    use proptest::prelude::*;

    /// A FastCGI request as a web server sends it, with what it is made of.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FastCgiRequest {
        /// The request id (1 to 65535).
        pub request_id: u16,
        /// The role.
        pub role: Role,
        /// `FCGI_KEEP_CONN`.
        pub keep_conn: bool,
        /// The params, in order.
        pub params: Vec<(Bytes, Bytes)>,
        /// The stdin data.
        pub stdin: Bytes,
        /// The records: begin, params (cut into records of arbitrary sizes, pairs cut
        /// anywhere), the empty params record, stdin likewise, the empty stdin record.
        pub wire: Bytes,
    }

    /// A name or a value of a pair: mostly short, sometimes over 127 bytes (the 4-byte length).
    fn pair_part() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..20),
            1 => proptest::collection::vec(any::<u8>(), 120..300),
        ]
        .prop_map(Bytes::from)
    }

    /// A whole FastCGI request.
    pub fn fastcgi_request() -> impl Strategy<Value = FastCgiRequest> {
        (
            1..=u16::MAX,
            prop_oneof![
                Just(Role::Responder),
                Just(Role::Authorizer),
                Just(Role::Filter)
            ],
            any::<bool>(),
            proptest::collection::vec((pair_part(), pair_part()), 0..12),
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Bytes::from),
            1..2000usize,
            1..2000usize,
        )
            .prop_map(
                |(request_id, role, keep_conn, params, stdin, params_cut, stdin_cut)| {
                    let mut wire = BytesMut::new();
                    codec::encode_begin_request(&mut wire, request_id, role, keep_conn);
                    let mut pairs = BytesMut::new();
                    for (name, value) in &params {
                        codec::encode_pair(&mut pairs, name, value);
                    }
                    for piece in pairs.chunks(params_cut) {
                        codec::encode_stream(&mut wire, StreamKind::Params, request_id, piece);
                    }
                    codec::encode_end_of_stream(&mut wire, StreamKind::Params, request_id);
                    for piece in stdin.chunks(stdin_cut) {
                        codec::encode_stream(&mut wire, StreamKind::Stdin, request_id, piece);
                    }
                    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, request_id);
                    FastCgiRequest {
                        request_id,
                        role,
                        keep_conn,
                        params,
                        stdin,
                        wire: wire.freeze(),
                    }
                },
            )
    }

    /// A uwsgi request packet (`modifier1` 0) and the body after it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UwsgiPacket {
        /// The vars, in order.
        pub vars: Vec<(Bytes, Bytes)>,
        /// The body that follows the packet.
        pub body: Bytes,
        /// The packet, then the body.
        pub wire: Bytes,
    }

    /// A whole uwsgi packet with a body (var names are never empty: uwsgi has no use for them).
    pub fn uwsgi_packet() -> impl Strategy<Value = UwsgiPacket> {
        let name = pair_part().prop_filter("a var name is not empty", |n| !n.is_empty());
        (
            proptest::collection::vec((name, pair_part()), 0..12),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Bytes::from),
        )
            .prop_map(|(vars, body)| {
                let mut wire = BytesMut::new();
                gateway_servers::uwsgi::codec::encode_request(
                    &mut wire,
                    0,
                    vars.iter().map(|(n, v)| (&n[..], &v[..])),
                )
                .expect("at most 12 vars of at most 300 bytes fit a packet");
                wire.extend_from_slice(&body);
                UwsgiPacket {
                    vars,
                    body,
                    wire: wire.freeze(),
                }
            })
    }

    /// `wire` cut into pieces at arbitrary places (empty pieces included), as reads from a
    /// socket may return it.
    pub fn split(wire: Bytes) -> impl Strategy<Value = Vec<Bytes>> {
        super::chunked(wire)
    }

    /// A corrupted copy of `wire`: a byte changed, bytes cut from the end, garbage inserted, or
    /// a length field made to lie.
    pub fn corrupted(wire: Bytes) -> impl Strategy<Value = Bytes> {
        let len = wire.len().max(1);
        (
            0..4u8,
            0..len,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 1..16),
        )
            .prop_map(move |(how, at, byte, garbage)| {
                let mut bytes = wire.to_vec();
                let at = at.min(bytes.len());
                match how {
                    0 if !bytes.is_empty() => {
                        let at = at.min(bytes.len() - 1);
                        bytes[at] ^= byte | 1;
                    }
                    1 => bytes.truncate(at),
                    2 => {
                        bytes.splice(at..at, garbage);
                    }
                    _ => {
                        // The content length of a FastCGI header, or the datasize of a uwsgi
                        // one: both sit in bytes 1 to 5 of the first header.
                        for i in 1..bytes.len().min(6) {
                            bytes[i] = 0xff;
                        }
                    }
                }
                Bytes::from(bytes)
            })
    }
}
