//! Conversions between the contract and the types of [`http`]: a request becomes an
//! [`Environ`] ([`environ_from_request`]), an environ becomes a request
//! ([`request_from_environ`]), and an [`http::Response`] answers through a
//! [`StartResponse`] ([`respond`]). An app becomes an `http::Response` through
//! [`driver::call`](crate::driver::call).

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};

use crate::decimal::decimal;
use crate::environ::{Text, header_var_name};
use crate::{Body, BoxError, Environ, ErrorStream, Input, StartResponse, UrlScheme, is_hop_by_hop};

/// What a server knows about itself and the connection, to build an environ from a request.
///
/// ```
/// use gateway_core::convert::ServerContext;
/// use gateway_core::UrlScheme;
///
/// let mut context = ServerContext::default();
/// context.url_scheme = UrlScheme::Https;
/// context.peer_addr = Some("127.0.0.1:50000".parse().unwrap());
/// context.multithread = true;
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ServerContext {
    /// `SERVER_NAME`; when `None`, the host of the request (its `Host` header or URI), then the
    /// local address, then `localhost`.
    pub server_name: Option<Bytes>,
    /// `SERVER_PORT`; when `None`, the port of the `Host`, then of the local address, then the
    /// scheme's default.
    pub server_port: Option<u16>,
    /// `SERVER_SOFTWARE`, when set.
    pub server_software: Option<Bytes>,
    /// `wsgi.url_scheme` (and `HTTPS=on` for https).
    pub url_scheme: UrlScheme,
    /// The client's address: `REMOTE_ADDR`, `REMOTE_PORT` and [`Environ::peer_addr`].
    pub peer_addr: Option<SocketAddr>,
    /// The address the request came in on: [`Environ::local_addr`].
    pub local_addr: Option<SocketAddr>,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `wsgi.run_once`.
    pub run_once: bool,
    /// Where `wsgi.errors` goes; stderr when `None`.
    pub errors: Option<ErrorStream>,
    /// More variables of the connection, set in each of its environs after those above (the
    /// built-in HTTPS server's `SSL_CLIENT_VERIFY` and `SSL_CLIENT_CERT`, for one).
    pub variables: Vec<(Bytes, Bytes)>,
    /// `REMOTE_ADDR` and `REMOTE_PORT` as text, made once for the connection's requests.
    peer_text: OnceLock<(SocketAddr, Bytes, Bytes)>,
    /// `SERVER_PORT` as text, made once for the connection's requests (a port of five digits
    /// is not in [`decimal`]'s static table).
    port_text: OnceLock<(u16, Bytes)>,
}

impl ServerContext {
    /// `REMOTE_ADDR` and `REMOTE_PORT` for `peer`: written once, then shared by every request
    /// of the context (a server keeps one context per connection).
    fn peer_text(&self, peer: SocketAddr) -> (Bytes, Bytes) {
        let (addr, ip, port) = self
            .peer_text
            .get_or_init(|| (peer, ip_text(peer.ip()), decimal(u64::from(peer.port()))));
        if *addr == peer {
            (ip.clone(), port.clone())
        } else {
            // The field was changed after the first request.
            (ip_text(peer.ip()), decimal(u64::from(peer.port())))
        }
    }

    /// `SERVER_PORT` for `port`: written once, then shared by the context's requests that
    /// name the same port (all of them, but for an odd client).
    fn port_text(&self, port: u16) -> Bytes {
        let (first, text) = self
            .port_text
            .get_or_init(|| (port, decimal(u64::from(port))));
        if *first == port {
            text.clone()
        } else {
            decimal(u64::from(port))
        }
    }
}

/// An IP address as text, as `REMOTE_ADDR` has it.
fn ip_text(ip: std::net::IpAddr) -> Bytes {
    Bytes::from(ip.to_string())
}

impl fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerContext")
            .field("server_name", &self.server_name)
            .field("server_port", &self.server_port)
            .field("url_scheme", &self.url_scheme)
            .field("peer_addr", &self.peer_addr)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Builds the environ of an HTTP request.
///
/// - `REQUEST_METHOD`; `SCRIPT_NAME` empty and `PATH_INFO` the path, percent-decoded once (an
///   asterisk-form target leaves `PATH_INFO` empty, and so does a `CONNECT`, whose
///   `REQUEST_URI` is its authority); `QUERY_STRING` as sent (empty when there is none, and for
///   a `CONNECT`); `REQUEST_URI` the target as sent; `SERVER_PROTOCOL`, `SERVER_NAME`, `SERVER_PORT`,
///   `GATEWAY_INTERFACE`, and from the context `REMOTE_ADDR`, `REMOTE_PORT`,
///   `SERVER_SOFTWARE`, `HTTPS` and its other variables.
/// - Headers become `HTTP_*` variables; `Content-Type` becomes `CONTENT_TYPE`. Repeated
///   headers are joined with `, ` (`Cookie` with `; `). Headers whose names contain `_` are
///   dropped (they would pose as the dashed name), and so is `Proxy` (httpoxy: it would become
///   `HTTP_PROXY`). An HTTP/2 request's authority becomes `HTTP_HOST` when it has no `Host`
///   header.
/// - `Content-Length` becomes `CONTENT_LENGTH`, the one number it declares: each value is
///   digits only, and repeated values (which HTTP/2 allows when they are equal) are that one
///   number. Values that are not numbers (`+5`, ` 5`, the list `5, 5`) or that differ leave
///   `CONTENT_LENGTH` out, and the input then ends where the body does. hyper refuses such a
///   request itself (400 on HTTP/1, a reset stream on HTTP/2), so only a request made another
///   way (by a tower service's caller, or a test) reaches this with one.
/// - The body becomes the input, bounded by `CONTENT_LENGTH` when there is one, and
///   `input_terminated` is set.
/// - The request's extensions become the environ's; the context's addresses are
///   [`Environ::peer_addr`] and [`Environ::local_addr`].
///
/// ```
/// use gateway_core::convert::{environ_from_request, ServerContext};
///
/// let request = http::Request::post("http://example.com:8080/a%20b?x=1")
///     .header("x-token", "t")
///     .body(http_body_util::Full::new(bytes::Bytes::from("data")))
///     .unwrap();
/// let environ = environ_from_request(request, &ServerContext::default());
/// assert_eq!(environ.request_method(), "POST");
/// assert_eq!(environ.path_info(), b"/a b");
/// assert_eq!(environ.request_uri(), Some(&b"/a%20b?x=1"[..]));
/// assert_eq!(environ.query_string(), b"x=1");
/// assert_eq!(environ.server_name(), b"example.com");
/// assert_eq!(environ.server_port(), Some(8080));
/// assert_eq!(environ.header("x-token"), Some(&b"t"[..]));
/// ```
pub fn environ_from_request<B>(request: Request<B>, context: &ServerContext) -> Environ
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let host_header = parts.headers.get(header::HOST);
    // Room for every variable set below, and no more: the list is one allocation, and
    // a small one is much cheaper for the allocator than one past its smallest bins.
    let vars = 9
        + usize::from(context.server_software.is_some())
        + 2 * usize::from(context.peer_addr.is_some())
        + usize::from(context.url_scheme == UrlScheme::Https)
        + context.variables.len()
        + parts.headers.keys_len()
        + usize::from(host_header.is_none());
    let mut environ = Environ::with_capacity(vars);
    // Every byte copied from the request goes into one buffer, the environ's block, and each
    // variable is a part of it: one allocation per request instead of one per value, and no
    // reference count per value.
    let mut copies = Copies::for_request(&parts, host_header);
    // Every name below is set once (header names are distinct, lower case, and those with `_`
    // are dropped, so no two map to one variable): `push_static` and `push_new` skip the search
    // for a previous value.
    let mut set = |name: &'static str, value: Text| environ.push_static(name, value);
    let own = Text::Own;
    let empty = || Text::from_static(b"");

    set("GATEWAY_INTERFACE", Text::from_static(b"CGI/1.1"));
    set("REQUEST_METHOD", own(method_bytes(&parts.method)));
    // One copy of the target; the path and the query are parts of it when the path has no
    // escape to decode.
    let (path, query, target) = match parts.uri.path_and_query() {
        _ if parts.method == Method::CONNECT => {
            (empty(), empty(), own(authority_bytes(&parts.uri)))
        }
        Some(pq) if pq.as_str() == "*" => (empty(), empty(), Text::from_static(b"*")),
        Some(pq) => {
            let target = pq.as_str().as_bytes();
            let at = copies.0.len();
            let target_text = copies.copy(target);
            // The first `?` starts the query; an empty path (`http://host?q`) is `/`.
            let split = target
                .iter()
                .position(|&b| b == b'?')
                .unwrap_or(target.len());
            let path = match &target[..split] {
                b"" => Text::from_static(b"/"),
                raw if raw.contains(&b'%') => copies.decoded(raw),
                _ => copies.part(at, at + split),
            };
            let query = if split < target.len() {
                copies.part(at + split + 1, at + target.len())
            } else {
                empty()
            };
            (path, query, target_text)
        }
        None => (Text::from_static(b"/"), empty(), Text::from_static(b"/")),
    };
    set("SCRIPT_NAME", empty());
    set("PATH_INFO", path);
    set("QUERY_STRING", query);
    set("REQUEST_URI", target);
    set(
        "SERVER_PROTOCOL",
        Text::from_static(protocol_name(parts.version).as_bytes()),
    );

    let host = host_header
        .map(|h| h.as_bytes())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let (host_name, host_port) = host.map(split_host).unwrap_or((&b""[..], None));
    let server_name = match &context.server_name {
        Some(name) => own(name.clone()),
        None if !host_name.is_empty() => copies.copy(host_name),
        None => match context.local_addr {
            Some(addr) => own(ip_text(addr.ip())),
            None => Text::from_static(b"localhost"),
        },
    };
    let server_port = context
        .server_port
        .or(host_port)
        .or(context.local_addr.map(|a| a.port()))
        .unwrap_or(context.url_scheme.default_port());
    set("SERVER_NAME", server_name);
    set("SERVER_PORT", own(context.port_text(server_port)));
    if let Some(software) = &context.server_software {
        set("SERVER_SOFTWARE", own(software.clone()));
    }
    if let Some(peer) = context.peer_addr {
        let (addr, port) = context.peer_text(peer);
        set("REMOTE_ADDR", own(addr));
        set("REMOTE_PORT", own(port));
    }
    if context.url_scheme == UrlScheme::Https {
        set("HTTPS", Text::from_static(b"on"));
    }
    for (name, value) in &context.variables {
        environ.set(name.clone(), value.clone());
    }

    let mut content_length = None;
    // The values of one name come one after another: each name is looked at once.
    let mut headers = parts.headers.iter().peekable();
    while let Some((name, value)) = headers.next() {
        let name_str = name.as_str();
        let more = std::iter::from_fn(|| headers.next_if(|(next, _)| *next == name));
        if name_str.contains('_') || name == "proxy" {
            more.for_each(drop);
            continue;
        }
        if name == header::CONTENT_LENGTH {
            // The one number, not the values joined: `5, 5` is no CONTENT_LENGTH (rule 22).
            let mut more = more.map(|(_, v)| v);
            content_length = request_content_length(std::iter::once(value).chain(&mut more));
            more.for_each(drop);
            if let Some(length) = content_length {
                environ.push_static("CONTENT_LENGTH", own(decimal(length)));
            }
            continue;
        }
        let separator: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
        let value = copies.join(value, more.map(|(_, v)| v), separator);
        environ.push_new(own(header_var_name(name_str)), value);
    }
    if host_header.is_none()
        && let Some(authority) = parts.uri.authority()
    {
        environ.push_static("HTTP_HOST", copies.copy(authority.as_str().as_bytes()));
    }
    environ.set_block(copies.into_block());

    let input = match content_length {
        Some(0) => Input::empty(),
        Some(n) => Input::from_body(body).with_limit(n),
        None if body.is_end_stream() => Input::empty(),
        None => Input::from_body(body),
    };
    environ.set_input(input);
    environ.set_input_terminated(true);
    environ.set_url_scheme(context.url_scheme);
    environ.set_multithread(context.multithread);
    environ.set_multiprocess(context.multiprocess);
    environ.set_run_once(context.run_once);
    if let Some(errors) = &context.errors {
        environ.set_errors(errors.clone());
    }
    environ.set_peer_addr(context.peer_addr);
    environ.set_local_addr(context.local_addr);
    *environ.extensions_mut() = parts.extensions;
    environ
}

/// The body length a request's `Content-Length` values declare, read as hyper's server reads
/// them: each value is ASCII digits only (no sign, no spaces, no list) and fits a `u64`, and
/// repeated values are equal. `None` when a value is not such a number, or when two differ.
fn request_content_length<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<u64> {
    let mut length = None;
    for value in values {
        let digits = value.as_bytes();
        if digits.is_empty() {
            return None;
        }
        let n = digits.iter().try_fold(0u64, |n, &d| {
            if !d.is_ascii_digit() {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        match length {
            None => length = Some(n),
            Some(m) if m == n => {}
            Some(_) => return None,
        }
    }
    length
}

/// The mount prefix (`SCRIPT_NAME`) of the environ a request was made from, in the request's
/// extensions: [`request_from_environ`] puts it there when it is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptName(pub Bytes);

/// Builds an HTTP request from an environ, for handing the request to an `http`-based service
/// (a tower `Service`, an axum `Router`).
///
/// The URI is `PATH_INFO` (percent-encoded again) and `QUERY_STRING`: a service mounted under
/// a prefix sees the path below its mount, as an app does, and finds the prefix in the
/// [`ScriptName`] extension. Headers come from `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH`;
/// the version from `SERVER_PROTOCOL`; the body is the environ's input; the environ's
/// extensions move to the request.
///
/// Fails when `REQUEST_METHOD` is not a valid method or the path makes no valid URI.
///
/// ```
/// use gateway_core::convert::request_from_environ;
/// use gateway_core::Environ;
///
/// let mut environ = Environ::new();
/// environ.set("REQUEST_METHOD", "PUT");
/// environ.set("SCRIPT_NAME", "/api");
/// environ.set("PATH_INFO", "/a b");
/// environ.set("QUERY_STRING", "q=1");
/// environ.set("HTTP_X_TOKEN", "t");
/// let request = request_from_environ(environ).unwrap();
/// assert_eq!(request.method(), http::Method::PUT);
/// assert_eq!(request.uri(), "/a%20b?q=1");
/// assert_eq!(request.headers()["x-token"], "t");
/// ```
pub fn request_from_environ(mut environ: Environ) -> Result<Request<Input>, http::Error> {
    let method = Method::from_bytes(environ.request_method().as_bytes())?;
    let mut target = BytesMut::with_capacity(environ.path_info().len() + 16);
    match environ.path_info() {
        b"" => target.put_u8(b'/'),
        path => percent_encode_path(path, &mut target),
    }
    if !environ.query_string().is_empty() {
        target.put_u8(b'?');
        target.extend_from_slice(environ.query_string());
    }
    let uri = Uri::from_maybe_shared(target.freeze())?;
    let version = match environ.server_protocol() {
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/2" | "HTTP/2.0" => Version::HTTP_2,
        "HTTP/0.9" => Version::HTTP_09,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(environ.len());
    for (var, value) in environ.headers() {
        if value.is_empty() && !var.starts_with(b"HTTP_") {
            continue;
        }
        let name = match var {
            b"CONTENT_TYPE" => header::CONTENT_TYPE,
            b"CONTENT_LENGTH" => header::CONTENT_LENGTH,
            _ => {
                let lower: Vec<u8> = var[5..]
                    .iter()
                    .map(|&b| {
                        if b == b'_' {
                            b'-'
                        } else {
                            b.to_ascii_lowercase()
                        }
                    })
                    .collect();
                match HeaderName::from_bytes(&lower) {
                    Ok(name) => name,
                    Err(_) => continue,
                }
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let script_name = environ.script_name();
    let script_name = (!script_name.is_empty()).then(|| Bytes::copy_from_slice(script_name));
    let input = environ.take_input();
    let mut extensions = std::mem::take(environ.extensions_mut());
    if let Some(script_name) = script_name {
        extensions.insert(ScriptName(script_name));
    }
    let mut request = Request::new(input);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    *request.extensions_mut() = extensions;
    Ok(request)
}

/// Answers with an [`http::Response`]: starts the response with its status and headers and
/// returns its body. Hop-by-hop headers in the response are dropped (an `http` service may set
/// them; in the contract they are the server's). If the start fails the body is an error.
///
/// A response the [driver](crate::driver) made for an app that failed before its head (the one
/// [`driver::failure`](crate::driver::failure) finds) is passed on as that failure, not as an
/// ordinary 500: the driver outside answers it with the same error, so that the middleware
/// around (error pages, a body limit's 413) still sees a failure, and with the headers
/// middleware inside asked for on it
/// ([`StartResponse::with_failure_header`](crate::StartResponse::with_failure_header)).
///
/// ```
/// use gateway_core::{convert::respond, Body, Environ, StartResponse};
///
/// let app = |_: Environ, start: StartResponse| {
///     respond(start, http::Response::builder().status(201).body(Body::from("made")).unwrap())
/// };
/// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
/// assert_eq!(response.status(), 201);
/// ```
pub fn respond<B>(start: StartResponse, response: Response<B>) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // A 500 still carrying the failure is the driver's; a middleware that made something else
    // of it (another status) answers that instead.
    let failure = response.extensions().get::<std::sync::Arc<crate::Error>>();
    if let Some(failure) =
        failure.filter(|_| response.status() == http::StatusCode::INTERNAL_SERVER_ERROR)
    {
        let headers: crate::start::FailureHeaders = crate::driver::failure_headers(&response)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let headers = (!headers.is_empty()).then(|| Box::new(headers));
        return Body::error(crate::error::Relayed(failure.clone(), headers));
    }
    let (mut parts, body) = response.into_parts();
    let hop_by_hop: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop_by_hop {
        parts.headers.remove(name);
    }
    match start.start(parts.status, parts.headers) {
        Ok(_) => Body::new(body),
        Err(error) => Body::error(error),
    }
}

fn method_bytes(method: &Method) -> Bytes {
    let name: &'static str = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Bytes::copy_from_slice(method.as_str().as_bytes()),
    };
    Bytes::from_static(name.as_bytes())
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn authority_bytes(uri: &Uri) -> Bytes {
    Bytes::copy_from_slice(uri.authority().map_or("", |a| a.as_str()).as_bytes())
}

/// Splits a `Host` value, `host[:port]` or `[v6][:port]`, into the host and the port (`None`
/// when there is none or it is not a port number; a leading `+` is taken, as Rust's `u16`
/// parsing takes it).
///
/// ```
/// use gateway_core::convert::split_host;
/// assert_eq!(split_host(b"example.com:8080"), (&b"example.com"[..], Some(8080)));
/// assert_eq!(split_host(b"[::1]:443"), (&b"[::1]"[..], Some(443)));
/// assert_eq!(split_host(b"[::1]"), (&b"[::1]"[..], None));
/// assert_eq!(split_host(b"example.com"), (&b"example.com"[..], None));
/// ```
pub fn split_host(host: &[u8]) -> (&[u8], Option<u16>) {
    let colon = if host.starts_with(b"[") {
        host.iter()
            .position(|&b| b == b']')
            .and_then(|end| (host.get(end + 1) == Some(&b':')).then_some(end + 1))
    } else {
        host.iter().rposition(|&b| b == b':')
    };
    match colon {
        Some(i) => (&host[..i], port_number(&host[i + 1..])),
        None => (host, None),
    }
}

/// A port number as `u16`'s `FromStr` reads it (digits, an optional leading `+`), without
/// going through `str`.
fn port_number(text: &[u8]) -> Option<u16> {
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u16, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u16::from(d - b'0'))
    })
}

/// The bytes an environ copies from a request, in one buffer sized for all of them.
struct Copies(Vec<u8>);

impl Copies {
    /// Room for the target, the authority (twice: a host name and `HTTP_HOST`) and every
    /// header value with a separator.
    fn for_request(parts: &http::request::Parts, host: Option<&HeaderValue>) -> Self {
        let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        let authority = parts.uri.authority().map_or(0, |a| a.as_str().len());
        let host = host.map_or(0, HeaderValue::len);
        let values: usize = parts.headers.values().map(|v| v.len() + 2).sum();
        Copies(Vec::with_capacity(target + 2 * authority + host + values))
    }

    /// `self.0[start..end]`: a part of the block while offsets fit in 32 bits (a request
    /// head of 4 GiB only gets here from a caller of [`environ_from_request`] that built one),
    /// else a copy of its own.
    fn part(&self, start: usize, end: usize) -> Text {
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Text::Part(start, end),
            _ => Text::Own(Bytes::copy_from_slice(&self.0[start..end])),
        }
    }

    /// A copy of `data`.
    fn copy(&mut self, data: &[u8]) -> Text {
        let start = self.0.len();
        self.0.extend_from_slice(data);
        self.part(start, self.0.len())
    }

    /// `input` with its `%XX` escapes decoded ([`percent_decode`]).
    fn decoded(&mut self, input: &[u8]) -> Text {
        let start = self.0.len();
        percent_decode_into(input, &mut self.0);
        self.part(start, self.0.len())
    }

    /// `first` and the `more` values of the same header, joined by `separator`.
    fn join<'a>(
        &mut self,
        first: &HeaderValue,
        more: impl Iterator<Item = &'a HeaderValue>,
        separator: &[u8],
    ) -> Text {
        let start = self.0.len();
        self.0.extend_from_slice(first.as_bytes());
        for value in more {
            self.0.extend_from_slice(separator);
            self.0.extend_from_slice(value.as_bytes());
        }
        self.part(start, self.0.len())
    }

    /// The buffer, as the block of the environ whose parts it holds.
    fn into_block(self) -> Bytes {
        Bytes::from(self.0)
    }
}

/// Decodes `%XX` escapes once, as CGI's `PATH_INFO` is decoded; a `%` not followed by two hex
/// digits stays as it is.
///
/// ```
/// use gateway_core::convert::percent_decode;
/// assert_eq!(percent_decode(b"/a%2Cb%252c%zz"), &b"/a,b%2c%zz"[..]);
/// ```
pub fn percent_decode(input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len());
    percent_decode_into(input, &mut out);
    Bytes::from(out)
}

/// [`percent_decode`], appending to `out`.
fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) {
    if !input.contains(&b'%') {
        out.extend_from_slice(input);
        return;
    }
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a decoded path for a URI: every byte that is not allowed in a path segment
/// (RFC 3986 `pchar`) or `/` becomes `%XX`, `%` included, so decoding gives the path back.
pub fn percent_encode_path(path: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.put_u8(b);
        } else {
            out.put_u8(b'%');
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 15)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn get(uri: &str) -> Environ {
        let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        environ_from_request(request, &ServerContext::default())
    }

    #[test]
    fn path_is_decoded_once_and_the_raw_target_kept() {
        let env = get("/a%2Cb/%252c//c%E9?x=%20");
        assert_eq!(env.path_info(), b"/a,b/%2c//c\xe9");
        assert_eq!(env.request_uri(), Some(&b"/a%2Cb/%252c//c%E9?x=%20"[..]));
        assert_eq!(env.query_string(), b"x=%20");
        assert_eq!(env.script_name(), b"");
    }

    #[test]
    fn required_variables_are_present() {
        let env = get("/");
        for name in [
            "REQUEST_METHOD",
            "SCRIPT_NAME",
            "PATH_INFO",
            "QUERY_STRING",
            "SERVER_NAME",
            "SERVER_PORT",
            "SERVER_PROTOCOL",
        ] {
            assert!(env.contains(name), "{name}");
        }
        assert_eq!(env.server_name(), b"localhost");
        assert_eq!(env.server_port(), Some(80));
        assert_eq!(env.server_protocol(), "HTTP/1.1");
        assert!(!env.contains("CONTENT_LENGTH"));
        assert!(!env.contains("CONTENT_TYPE"));
    }

    #[test]
    fn headers_are_mapped_joined_and_filtered() {
        let request = Request::post("/")
            .header("accept", "a")
            .header("accept", "b")
            .header("cookie", "x=1")
            .header("cookie", "y=2")
            .header("x_forwarded_for", "spoof")
            .header("proxy", "http://evil")
            .header("x_forwarded_for", "again")
            .header("proxy", "again")
            .header("x-after", "kept")
            .header("content-type", "text/plain")
            .header("content-length", "3")
            .header("host", "[::1]:8443")
            .body(Full::new(Bytes::from("abcdef")))
            .unwrap();
        let mut env = environ_from_request(request, &ServerContext::default());
        assert_eq!(env.get("HTTP_ACCEPT"), Some(&b"a, b"[..]));
        assert_eq!(env.get("HTTP_COOKIE"), Some(&b"x=1; y=2"[..]));
        assert!(!env.contains("HTTP_X_FORWARDED_FOR"));
        assert!(!env.contains("HTTP_PROXY"));
        assert_eq!(env.get("HTTP_X_AFTER"), Some(&b"kept"[..]));
        assert_eq!(env.get("HTTP_HOST"), Some(&b"[::1]:8443"[..]));
        assert!(!env.contains("HTTP_CONTENT_TYPE"));
        assert!(!env.contains("HTTP_CONTENT_LENGTH"));
        assert_eq!(env.content_type(), Some(&b"text/plain"[..]));
        assert_eq!(env.content_length(), Some(3));
        assert_eq!(env.server_name(), b"[::1]");
        assert_eq!(env.server_port(), Some(8443));
        let mut body = Vec::new();
        std::io::Read::read_to_end(env.input(), &mut body).unwrap();
        assert_eq!(body, b"abc", "the input stops at CONTENT_LENGTH");
    }

    #[test]
    fn content_length_is_the_one_number_its_values_declare() {
        let environ_with = |values: &[&'static str]| {
            let mut request = Request::post("/");
            for value in values {
                request = request.header("content-length", *value);
            }
            let body = Full::new(Bytes::from("abcdefgh"));
            environ_from_request(request.body(body).unwrap(), &ServerContext::default())
        };
        // Read as hyper's server reads them: digits, repeated values equal.
        for values in [
            &["5"][..],
            &["5", "5"],
            &["005"],
            &["000000000000000000005"],
        ] {
            let mut env = environ_with(values);
            assert_eq!(env.get("CONTENT_LENGTH"), Some(&b"5"[..]), "{values:?}");
            assert!(!env.contains("HTTP_CONTENT_LENGTH"), "{values:?}");
            let mut body = Vec::new();
            std::io::Read::read_to_end(env.input(), &mut body).unwrap();
            assert_eq!(body, b"abcde", "{values:?}: the input stops at the length");
        }
        // No number: no CONTENT_LENGTH, and the input ends where the body does.
        let no_number: [&[&str]; 9] = [
            &["+5"],
            &[" 5"],
            &["5, 5"],
            &["5", "6"],
            &["5", "+5"],
            &[""],
            &["0x5"],
            &["18446744073709551616"],
            &["5 bytes"],
        ];
        for values in no_number {
            let mut env = environ_with(values);
            assert!(!env.contains("CONTENT_LENGTH"), "{values:?}");
            assert!(!env.contains("HTTP_CONTENT_LENGTH"), "{values:?}");
            let mut body = Vec::new();
            std::io::Read::read_to_end(env.input(), &mut body).unwrap();
            assert_eq!(body, b"abcdefgh", "{values:?}");
        }
        // The headers after it are still read.
        let request = Request::post("/")
            .header("content-length", "+5")
            .header("content-length", "5")
            .header("x-after", "kept")
            .body(Full::new(Bytes::from("abcde")))
            .unwrap();
        let env = environ_from_request(request, &ServerContext::default());
        assert_eq!(env.get("HTTP_X_AFTER"), Some(&b"kept"[..]));
        assert!(!env.contains("CONTENT_LENGTH"));
    }

    #[test]
    fn context_fills_the_connection_variables() {
        let context = ServerContext {
            peer_addr: Some("10.0.0.1:4000".parse().unwrap()),
            local_addr: Some("127.0.0.1:9000".parse().unwrap()),
            url_scheme: UrlScheme::Https,
            server_software: Some(Bytes::from_static(b"gateway")),
            multithread: true,
            variables: vec![(
                Bytes::from_static(b"SSL_CLIENT_VERIFY"),
                Bytes::from_static(b"SUCCESS"),
            )],
            ..ServerContext::default()
        };
        let request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let env = environ_from_request(request, &context);
        assert_eq!(env.get("SSL_CLIENT_VERIFY"), Some(&b"SUCCESS"[..]));
        assert_eq!(env.remote_addr(), Some("10.0.0.1"));
        assert_eq!(env.get("REMOTE_PORT"), Some(&b"4000"[..]));
        assert_eq!(env.server_port(), Some(9000));
        assert_eq!(env.server_name(), b"127.0.0.1");
        assert_eq!(env.get("HTTPS"), Some(&b"on"[..]));
        assert_eq!(env.url_scheme(), UrlScheme::Https);
        assert!(env.multithread());
        assert_eq!(env.peer_addr(), context.peer_addr);
        // The port's text is kept for the context's next requests: one that names another
        // port still gets its own.
        for port in ["18090", "18091", "18090"] {
            let request = Request::get("/")
                .header("host", format!("example.com:{port}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let env = environ_from_request(request, &context);
            assert_eq!(env.get("SERVER_PORT"), Some(port.as_bytes()));
        }
    }

    #[test]
    fn odd_targets() {
        let request = Request::options("*").body(Empty::<Bytes>::new()).unwrap();
        let env = environ_from_request(request, &ServerContext::default());
        assert_eq!(env.path_info(), b"");
        assert_eq!(env.request_uri(), Some(&b"*"[..]));
        let request = Request::builder()
            .method("CONNECT")
            .uri("example.com:443")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let env = environ_from_request(request, &ServerContext::default());
        assert_eq!(env.request_uri(), Some(&b"example.com:443"[..]));
        assert_eq!(env.get("HTTP_HOST"), Some(&b"example.com:443"[..]));
        // Absolute form with no path: the path is `/`, the query what follows `?`.
        for (uri, path, query) in [
            ("http://example.com?x=1", &b"/"[..], &b"x=1"[..]),
            ("http://example.com/a?", b"/a", b""),
            ("http://example.com/a%3Fb?c?d", b"/a?b", b"c?d"),
        ] {
            let env = get(uri);
            assert_eq!(
                (env.path_info(), env.query_string()),
                (path, query),
                "{uri}"
            );
        }
    }

    #[test]
    fn request_round_trips_through_the_environ() {
        let request = Request::post("/p%20q/%2Fr?a=1&b")
            .header("x-one", "1")
            .header("content-type", "text/plain")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let env = environ_from_request(request, &ServerContext::default());
        let back = request_from_environ(env).unwrap();
        assert_eq!(back.method(), Method::POST);
        // %2F was decoded to '/', as CGI does: the path is equivalent, not identical.
        assert_eq!(back.uri(), "/p%20q//r?a=1&b");
        assert_eq!(back.headers()["x-one"], "1");
        assert_eq!(back.headers()["content-type"], "text/plain");
    }

    #[test]
    fn ports_are_read_as_u16_reads_them() {
        for text in [
            "80", "+80", "00080", "65535", "65536", "0", "", "+", "-1", "8a", " 80", "80 ",
            "999999", "++1",
        ] {
            assert_eq!(
                port_number(text.as_bytes()),
                text.parse::<u16>().ok(),
                "{text:?}"
            );
        }
        assert_eq!(split_host(b"h:+80"), (&b"h"[..], Some(80)));
        assert_eq!(split_host(b"h:"), (&b"h"[..], None));
    }

    #[test]
    fn percent_encoding_inverts_decoding() {
        let raw = b"/a b/%/\xff/;=@";
        let mut encoded = BytesMut::new();
        percent_encode_path(raw, &mut encoded);
        assert_eq!(&encoded[..], b"/a%20b/%25/%FF/;=@");
        assert_eq!(percent_decode(&encoded), &raw[..]);
    }
}
