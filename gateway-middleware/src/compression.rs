//! Compressed responses: [`Compression`].
//!
//! The response is compressed with the best coding the client accepts (`Accept-Encoding`, with
//! q-values; `br`, `zstd`, `gzip`, `deflate`, preferred in that order when the client ranks them
//! the same), unless it is already encoded, is not a type that compresses (text, JSON,
//! JavaScript, XML, SVG, WebAssembly by default: see [`Compression::predicate`]), is declared
//! smaller than the minimum size, has no body (HEAD, 1xx, 204, 304), or is part of a
//! representation (206 Partial Content, or any response with `Content-Range`: the range counts
//! bytes of the unencoded body, so compressing it would corrupt it). A compressed response
//! loses its `Content-Length` (the length is no longer known), gains `Content-Encoding`, has a
//! strong `ETag` made weak (`W/`: the encoded bytes are not the ones the tag names), and every
//! response the middleware considered gets `Vary: Accept-Encoding`. Each chunk of the body
//! is compressed and flushed as it comes, so streaming responses stay streaming; the app's body
//! is dropped when the response ends, as always.
//!
//! ```
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse};
//! use gateway_middleware::Compression;
//! use http::{header, HeaderMap, HeaderValue};
//!
//! let app = Builder::new().with(Compression::new().min_size(16)).app(|_: Environ, start: StartResponse| {
//!     let mut headers = HeaderMap::new();
//!     headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
//!     let _ = start.start(http::StatusCode::OK, headers);
//!     "hello hello hello hello hello hello hello hello hello hello hello hello"
//! });
//! let mut environ = Environ::new();
//! environ.set("HTTP_ACCEPT_ENCODING", "gzip");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! assert_eq!(response.headers()["content-encoding"], "gzip");
//! assert_eq!(response.headers()["vary"], "accept-encoding");
//! ```

use std::fmt;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::convert::respond;
use gateway_core::driver::{self, ResponseBody, status_has_body};
use gateway_core::{App, Body, BoxError, Environ, Middleware, StartResponse};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Frame;

/// The smallest declared body compressed by default, in bytes: below it the coding's overhead
/// outweighs the gain.
pub const DEFAULT_MIN_SIZE: u64 = 256;

/// A content coding this middleware produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
    /// `gzip`.
    Gzip,
    /// `deflate` (the zlib format, as HTTP means it).
    Deflate,
}

impl Coding {
    /// The name in `Accept-Encoding` and `Content-Encoding`.
    pub const fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    const ALL: [Coding; 4] = [Coding::Brotli, Coding::Zstd, Coding::Gzip, Coding::Deflate];
}

/// Decides whether a response may be compressed, from its status and headers. Closures are
/// predicates.
pub trait Predicate: Send + Sync + 'static {
    /// Whether to compress.
    fn should_compress(&self, status: http::StatusCode, headers: &HeaderMap) -> bool;
}

impl<F> Predicate for F
where
    F: Fn(http::StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
{
    fn should_compress(&self, status: http::StatusCode, headers: &HeaderMap) -> bool {
        self(status, headers)
    }
}

/// The default predicate: types that compress well (text, JSON, JavaScript, XML, SVG,
/// WebAssembly), no `Cache-Control: no-transform`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPredicate;

impl Predicate for DefaultPredicate {
    fn should_compress(&self, _status: http::StatusCode, headers: &HeaderMap) -> bool {
        let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        });
        let Some(content_type) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let compressible = mime.starts_with("text/")
            || mime.ends_with("+json")
            || mime.ends_with("+xml")
            || matches!(
                mime.as_str(),
                "application/json"
                    | "application/javascript"
                    | "application/xml"
                    | "application/wasm"
                    | "image/svg+xml"
            );
        compressible && !no_transform
    }
}

/// The middleware: compresses responses the client accepts compressed.
#[derive(Clone)]
pub struct Compression {
    min_size: u64,
    predicate: Arc<dyn Predicate>,
    codings: Vec<Coding>,
}

impl Compression {
    /// Every coding, the default predicate, and [`DEFAULT_MIN_SIZE`].
    pub fn new() -> Self {
        Compression {
            min_size: DEFAULT_MIN_SIZE,
            predicate: Arc::new(DefaultPredicate),
            codings: Coding::ALL.to_vec(),
        }
    }

    /// Bodies declared smaller than this are sent as they are.
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Decides which responses may be compressed.
    pub fn predicate(mut self, predicate: impl Predicate) -> Self {
        self.predicate = Arc::new(predicate);
        self
    }

    /// The codings to offer, in order of preference.
    pub fn codings(mut self, codings: &[Coding]) -> Self {
        self.codings = codings.to_vec();
        self
    }

    /// The coding to use for an `Accept-Encoding` value: the highest q-value among the codings
    /// offered, ties broken by the order of preference; `None` when nothing acceptable is
    /// offered (identity is then used).
    pub fn choose(&self, accept_encoding: &[u8]) -> Option<Coding> {
        let accept = String::from_utf8_lossy(accept_encoding);
        let mut wildcard: Option<f32> = None;
        let mut listed: Vec<(String, f32)> = Vec::new();
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            if name == "*" {
                wildcard = Some(q);
            } else {
                listed.push((name, q));
            }
        }
        let mut best: Option<(Coding, f32)> = None;
        for &coding in &self.codings {
            let q = listed
                .iter()
                .find(|(n, _)| n == coding.name() || (coding == Coding::Gzip && n == "x-gzip"))
                .map(|(_, q)| *q)
                .or(wildcard)
                .unwrap_or(0.0);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((coding, q));
            }
        }
        best.map(|(c, _)| c)
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::new()
    }
}

impl fmt::Debug for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compression")
            .field("min_size", &self.min_size)
            .field("codings", &self.codings)
            .finish_non_exhaustive()
    }
}

impl<A> Middleware<A> for Compression {
    type App = CompressionApp<A>;

    fn wrap(&self, app: A) -> CompressionApp<A> {
        CompressionApp {
            inner: app,
            config: self.clone(),
        }
    }
}

/// An app whose responses are compressed; made by [`Compression`].
#[derive(Debug, Clone)]
pub struct CompressionApp<A> {
    inner: A,
    config: Compression,
}

impl<A: App> App for CompressionApp<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let coding = environ
            .header("accept-encoding")
            .and_then(|accept| self.config.choose(accept));
        let is_head = environ.request_method() == "HEAD";
        let response = driver::call(&self.inner, environ);
        let config = self.config.clone();
        Body::from_future(async move {
            let response = response.await;
            let (mut parts, body) = response.into_parts();
            // A range's bytes are counted in the unencoded representation: compressed, they
            // would no longer be the bytes `Content-Range` names.
            let partial = parts.status == http::StatusCode::PARTIAL_CONTENT
                || parts.headers.contains_key(header::CONTENT_RANGE);
            let considered = status_has_body(parts.status)
                && !partial
                && !parts.headers.contains_key(header::CONTENT_ENCODING)
                && config
                    .predicate
                    .should_compress(parts.status, &parts.headers);
            if considered {
                parts
                    .headers
                    .append(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
            let small = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|len| len < config.min_size);
            let coding = coding.filter(|_| considered && !small && !is_head);
            let Some(coding) = coding else {
                return Ok(respond(start, http::Response::from_parts(parts, body)));
            };
            let encoder = Encoder::new(coding);
            describe(&mut parts.headers, &encoder);
            let body = Compressed {
                body,
                encoder: Some(encoder),
            };
            Ok(respond(start, http::Response::from_parts(parts, body)))
        })
    }
}

/// Makes a response's head describe the body `encoder` makes of it. `Content-Encoding` names
/// the encoder's coding, which is not always the one chosen: see [`Encoder::zstd_or_gzip`].
fn describe(headers: &mut HeaderMap, encoder: &Encoder) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoder.coding().name()),
    );
    // The encoded body is not byte-identical to the one the app's tag names, but it is the same
    // content: the tag becomes weak, so `If-Range` and caches that combine ranges no longer take
    // one for the other.
    if let Some(weak) = headers.get(header::ETAG).and_then(weak_etag) {
        headers.insert(header::ETAG, weak);
    }
}

/// The weak form of a strong entity tag (`"x"` becomes `W/"x"`); `None` when it is weak already.
fn weak_etag(etag: &HeaderValue) -> Option<HeaderValue> {
    if etag.as_bytes().starts_with(b"W/") {
        return None;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    HeaderValue::from_bytes(&weak).ok()
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> Self {
        let level = flate2::Compression::new(6);
        match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            Coding::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), level)),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                5,
                22,
            ))),
            Coding::Zstd => Encoder::zstd_or_gzip(zstd::stream::write::Encoder::new(Vec::new(), 3)),
        }
    }

    /// The zstd encoder `started`, or a gzip one when it failed to start: zstd only fails to
    /// start when out of memory, and gzip always starts.
    fn zstd_or_gzip(started: io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>>) -> Self {
        match started {
            Ok(encoder) => Encoder::Zstd(encoder),
            Err(_) => Encoder::new(Coding::Gzip),
        }
    }

    /// The coding of what this encoder makes, which names it in `Content-Encoding`.
    fn coding(&self) -> Coding {
        match self {
            Encoder::Gzip(_) => Coding::Gzip,
            Encoder::Deflate(_) => Coding::Deflate,
            Encoder::Brotli(_) => Coding::Brotli,
            Encoder::Zstd(_) => Coding::Zstd,
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Deflate(e) => e,
            Encoder::Brotli(e) => &mut **e,
            Encoder::Zstd(e) => e,
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Deflate(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// Compresses `data` and flushes: what can be sent now.
    fn encode(&mut self, data: &[u8]) -> io::Result<Bytes> {
        let writer = self.writer();
        writer.write_all(data)?;
        writer.flush()?;
        Ok(Bytes::from(std::mem::take(self.output())))
    }

    /// Ends the compressed stream: its last bytes.
    fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Deflate(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// The response body, compressed.
struct Compressed {
    body: ResponseBody,
    encoder: Option<Encoder>,
}

impl http_body::Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(polled) => polled,
            };
            let out = match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => encoder.encode(&data),
                    // Trailers cannot follow a compressed body whose end is still to come.
                    Err(_) => continue,
                },
                Some(Err(error)) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => match this.encoder.take() {
                    Some(encoder) => encoder.finish(),
                    None => return Poll::Ready(None),
                },
            };
            match out {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(error) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Builder;
    use http_body_util::BodyExt;
    use std::io::Read;

    const TEXT: &str = "The quick brown fox jumps over the lazy dog. ";

    fn text_app(content_type: &'static str, declared: bool, chunks: usize) -> impl App + 'static {
        move |_: Environ, start: StartResponse| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if declared {
                headers.insert(
                    header::CONTENT_LENGTH,
                    HeaderValue::from(TEXT.len() * chunks),
                );
            }
            let _ = start.start(http::StatusCode::OK, headers);
            Body::from_chunks(vec![TEXT; chunks])
        }
    }

    fn run(app: &impl App, method: &str, accept: Option<&str>) -> (HeaderMap, Vec<u8>) {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        if let Some(accept) = accept {
            environ.set("HTTP_ACCEPT_ENCODING", accept.to_owned());
        }
        let response = gateway_core::block_on(driver::call(app, environ));
        let headers = response.headers().clone();
        let body = gateway_core::block_on(response.into_body().collect()).unwrap();
        (headers, body.to_bytes().to_vec())
    }

    fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            "gzip" => flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap(),
            "deflate" => flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap(),
            "br" => brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap(),
            "zstd" => zstd::stream::read::Decoder::new(data)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap(),
            other => panic!("{other}"),
        };
        out
    }

    #[test]
    fn every_coding_round_trips() {
        let app = Builder::new()
            .with(Compression::new())
            .app(text_app("text/html", true, 50));
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let (headers, body) = run(&app, "GET", Some(coding));
            assert_eq!(headers["content-encoding"], coding);
            assert!(!headers.contains_key("content-length"));
            assert!(body.len() < TEXT.len() * 50, "{coding} compresses");
            assert_eq!(
                decode(coding, &body),
                TEXT.repeat(50).as_bytes(),
                "{coding}"
            );
        }
    }

    #[test]
    fn q_values_and_preferences() {
        let c = Compression::new();
        assert_eq!(c.choose(b"gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(c.choose(b"gzip;q=1, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(c.choose(b"br;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(c.choose(b"*"), Some(Coding::Brotli));
        assert_eq!(c.choose(b"*;q=0.5, br;q=0"), Some(Coding::Zstd));
        assert_eq!(c.choose(b"identity"), None);
        assert_eq!(c.choose(b"gzip;q=0"), None);
        assert_eq!(c.choose(b"x-gzip"), Some(Coding::Gzip));
        assert_eq!(
            c.codings(&[Coding::Gzip]).choose(b"br, gzip"),
            Some(Coding::Gzip)
        );
    }

    #[test]
    fn what_is_not_compressed() {
        let compressed = Compression::new();
        // Not accepted.
        let app = Builder::new()
            .with(compressed.clone())
            .app(text_app("text/plain", true, 50));
        let (headers, body) = run(&app, "GET", None);
        assert!(!headers.contains_key("content-encoding"));
        assert_eq!(headers["vary"], "accept-encoding");
        assert_eq!(body.len(), TEXT.len() * 50);
        // HEAD keeps the length of the uncompressed body.
        let (headers, body) = run(&app, "HEAD", Some("gzip"));
        assert!(!headers.contains_key("content-encoding") && body.is_empty());
        // An image.
        let app = Builder::new()
            .with(compressed.clone())
            .app(text_app("image/png", true, 50));
        let (headers, _) = run(&app, "GET", Some("gzip"));
        assert!(!headers.contains_key("content-encoding") && !headers.contains_key("vary"));
        // Small.
        let app = Builder::new()
            .with(compressed.clone())
            .app(text_app("text/plain", true, 1));
        assert!(
            !run(&app, "GET", Some("gzip"))
                .0
                .contains_key("content-encoding")
        );
        // Already encoded.
        let app = Builder::new()
            .with(compressed)
            .app(|_: Environ, s: StartResponse| {
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                let _ = s.start(http::StatusCode::OK, headers);
                TEXT.repeat(20)
            });
        let (headers, body) = run(&app, "GET", Some("br"));
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(body, TEXT.repeat(20).as_bytes());
    }

    /// An app answering `status` with the text, its `Content-Range` set when `range` is.
    fn ranged_app(status: http::StatusCode, range: Option<&'static str>) -> impl App + 'static {
        move |_: Environ, start: StartResponse| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            if let Some(range) = range {
                headers.insert(header::CONTENT_RANGE, HeaderValue::from_static(range));
            }
            let _ = start.start(status, headers);
            TEXT.repeat(20)
        }
    }

    #[test]
    fn ranges_are_not_compressed() {
        // The first half of a representation twice the text's length.
        let range = "bytes 0-899/1800";
        for (status, range) in [
            (http::StatusCode::PARTIAL_CONTENT, Some(range)),
            // A 206 without its `Content-Range` is still a part.
            (http::StatusCode::PARTIAL_CONTENT, None),
            // And so is any response naming a range.
            (http::StatusCode::OK, Some(range)),
        ] {
            let app = Builder::new()
                .with(Compression::new())
                .app(ranged_app(status, range));
            let (headers, body) = run(&app, "GET", Some("gzip"));
            assert!(
                !headers.contains_key("content-encoding"),
                "{status} {range:?}"
            );
            assert!(!headers.contains_key("vary"), "{status} {range:?}");
            assert_eq!(body, TEXT.repeat(20).as_bytes(), "{status} {range:?}");
        }
    }

    #[test]
    fn compressed_responses_have_weak_etags() {
        let tagged = |etag: &'static str| {
            move |_: Environ, start: StartResponse| {
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                headers.insert(header::ETAG, HeaderValue::from_static(etag));
                let _ = start.start(http::StatusCode::OK, headers);
                TEXT.repeat(20)
            }
        };
        for (etag, compressed, identity) in [
            (r#""v1""#, r#"W/"v1""#, r#""v1""#),
            (r#"W/"v1""#, r#"W/"v1""#, r#"W/"v1""#),
        ] {
            let app = Builder::new().with(Compression::new()).app(tagged(etag));
            let (headers, _) = run(&app, "GET", Some("gzip"));
            assert_eq!(headers["content-encoding"], "gzip");
            assert_eq!(headers["etag"], compressed, "{etag} compressed");
            // Sent as it is, the body is the one the tag names.
            let (headers, _) = run(&app, "GET", None);
            assert_eq!(headers["etag"], identity, "{etag} not compressed");
        }
    }

    #[test]
    fn the_head_names_the_coding_the_encoder_makes() {
        for coding in Coding::ALL {
            assert_eq!(Encoder::new(coding).coding(), coding);
        }
        // zstd's encoder failing to start (out of memory) is not something a test can cause:
        // the failure is handed in.
        let mut encoder = Encoder::zstd_or_gzip(Err(io::Error::other("out of memory")));
        let mut headers = HeaderMap::new();
        describe(&mut headers, &encoder);
        assert_eq!(headers["content-encoding"], "gzip");
        let mut body = encoder.encode(TEXT.as_bytes()).unwrap().to_vec();
        body.extend_from_slice(&encoder.finish().unwrap());
        assert_eq!(decode("gzip", &body), TEXT.as_bytes());
    }

    #[test]
    fn streaming_bodies_are_flushed_chunk_by_chunk() {
        let app =
            Builder::new()
                .with(Compression::new())
                .app(text_app("text/event-stream", false, 3));
        let mut environ = Environ::new();
        environ.set("HTTP_ACCEPT_ENCODING", "gzip");
        let response = gateway_core::block_on(driver::call(&app, environ));
        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) = gateway_core::block_on(body.frame()) {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert!(
            frames.len() >= 3,
            "one compressed frame per chunk, then the end"
        );
        let all: Vec<u8> = frames.concat();
        assert_eq!(decode("gzip", &all), TEXT.repeat(3).as_bytes());
        // The first frame alone decodes to the first chunk: nothing is held back.
        let mut first = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(&frames[0][..]);
        let _ = decoder.read_to_end(&mut first);
        assert_eq!(first, TEXT.as_bytes());
    }
}
