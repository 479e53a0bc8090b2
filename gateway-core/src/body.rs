//! The response body an app returns: [`Body`], and the file body servers may send with sendfile.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body::{Frame, SizeHint};

use crate::BoxError;

/// The size of the reads a [`FileBody`] makes when it is polled as a plain body.
pub const FILE_CHUNK_SIZE: usize = 64 * 1024;

/// What an app returns: the response body, a stream of byte chunks (WSGI's iterable).
///
/// `Body` implements [`http_body::Body`] with `Data = Bytes`, so anything in the `http-body`
/// ecosystem can consume it and anything that implements `http_body::Body` can become one
/// ([`Body::new`]). Dropping a body is WSGI's `close()`: servers drop it when the response is
/// complete, when the app fails, and when the client goes away, so a `Drop` implementation in
/// the body is where an app releases what the response held.
///
/// The common bodies, [`Body::empty`] and [`Body::full`] (and the `From` conversions of bytes
/// and strings), are stored inline: building and sending them allocates nothing.
///
/// A body may also be *lazy* ([`Body::from_future`]): it waits for something (a database, a
/// remote backend) and may call [`StartResponse::start`](crate::StartResponse::start) before it
/// produces the body that follows. This is what PEP 3333 allows a generator to do, and it is how
/// an async app decides its status after an `.await`.
///
/// ```
/// use bytes::Bytes;
/// use gateway_core::Body;
/// use http_body::Body as _;
///
/// assert!(Body::empty().is_end_stream());
/// assert_eq!(Body::full("hello").size_hint().exact(), Some(5));
/// let chunks = Body::from_chunks(["a", "b", "c"].map(Bytes::from));
/// assert_eq!(chunks.size_hint().exact(), None);
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Bytes),
    File(FileBody),
    Boxed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>),
    Lazy(Pin<Box<dyn Future<Output = Result<Body, BoxError>> + Send>>),
}

impl Body {
    /// A body with no bytes.
    pub const fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// A body of one chunk. An empty chunk makes an empty body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            Body::empty()
        } else {
            Body {
                kind: Kind::Full(data),
            }
        }
    }

    /// Any [`http_body::Body`] whose data is [`Bytes`], boxed. Its trailers are passed on.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            kind: Kind::Boxed(Box::pin(MapErr { inner: body })),
        }
    }

    /// A body made of the chunks an iterator yields, one frame per item.
    ///
    /// The iterator runs when the body is polled, on the thread of whoever polls it. Servers
    /// poll the bodies of pooled apps on the worker pool, so an iterator may block.
    pub fn from_chunks<I>(chunks: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Bytes> + 'static,
        I::IntoIter: Send + 'static,
    {
        Body::try_from_chunks(chunks.into_iter().map(Ok::<_, BoxError>))
    }

    /// A body made of the chunks a fallible iterator yields. An `Err` item fails the response:
    /// before anything was sent the server answers 500, after that it aborts the response.
    pub fn try_from_chunks<I, T, E>(chunks: I) -> Self
    where
        I: IntoIterator<Item = Result<T, E>>,
        I::IntoIter: Send + 'static,
        T: Into<Bytes>,
        E: Into<BoxError>,
    {
        Body::new(IterBody {
            iter: Some(chunks.into_iter()),
        })
    }

    /// A body made of the chunks a [`Stream`] yields.
    pub fn from_stream<S, T, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Into<Bytes>,
        E: Into<BoxError>,
    {
        Body::new(StreamBody {
            stream: Box::pin(stream),
        })
    }

    /// A body that first waits for a future, then sends the body the future resolves to.
    ///
    /// The future may call [`StartResponse::start`](crate::StartResponse::start): the server
    /// polls it before it sends the head, exactly as PEP 3333 lets a generator call
    /// `start_response` before its first chunk. An `Err` fails the response like an app error.
    pub fn from_future<F>(future: F) -> Self
    where
        F: Future<Output = Result<Body, BoxError>> + Send + 'static,
    {
        Body {
            kind: Kind::Lazy(Box::pin(future)),
        }
    }

    /// A body that fails at its first poll: the server answers 500 (or aborts the response if
    /// the head was already sent) and logs the error.
    pub fn error(error: impl Into<BoxError>) -> Self {
        let error = error.into();
        Body::from_future(std::future::ready(Err(error)))
    }

    /// A file, sent from its current position to its end. Servers that can use sendfile take it
    /// out with [`Body::into_file`]; others read it like any body.
    pub fn file(file: File) -> Self {
        Body {
            kind: Kind::File(FileBody::new(file, None)),
        }
    }

    /// At most `len` bytes of a file, from its current position (a byte range, for example).
    pub fn file_range(file: File, len: u64) -> Self {
        Body {
            kind: Kind::File(FileBody::new(file, Some(len))),
        }
    }

    /// The file behind a file body, if this is one.
    pub fn as_file(&self) -> Option<&FileBody> {
        match &self.kind {
            Kind::File(file) => Some(file),
            _ => None,
        }
    }

    /// Takes the file out of a file body, or gives the body back if it is not one.
    pub fn into_file(self) -> Result<FileBody, Body> {
        match self.kind {
            Kind::File(file) => Ok(file),
            kind => Err(Body { kind }),
        }
    }
}

impl Body {
    /// The data of a body in memory (see [`in_memory_len`](Body::in_memory_len)); nothing for
    /// any other.
    pub(crate) fn into_full_bytes(self) -> Bytes {
        match self.kind {
            Kind::Full(data) => data,
            _ => Bytes::new(),
        }
    }

    /// The length of what is left of the body when all of it is in memory (an empty or a full
    /// body): polling it then never waits, never fails and never starts the response.
    pub(crate) fn in_memory_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Empty => Some(0),
            Kind::Full(data) => Some(data.len() as u64),
            _ => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Body");
        match &self.kind {
            Kind::Empty => d.field("kind", &"empty"),
            Kind::Full(data) => d.field("full", &data.len()),
            Kind::File(file) => d.field("file", file),
            Kind::Boxed(_) => d.field("kind", &"boxed"),
            Kind::Lazy(_) => d.field("kind", &"lazy"),
        };
        d.finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.kind {
                Kind::Empty => return Poll::Ready(None),
                Kind::Full(_) => {
                    let Kind::Full(data) = std::mem::replace(&mut self.kind, Kind::Empty) else {
                        unreachable!("matched Full above")
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::File(file) => {
                    return Poll::Ready(file.read_chunk().map(|r| r.map(Frame::data)));
                }
                Kind::Boxed(body) => return body.as_mut().poll_frame(cx),
                Kind::Lazy(future) => match ready!(future.as_mut().poll(cx)) {
                    Ok(body) => self.kind = body.kind,
                    Err(error) => {
                        self.kind = Kind::Empty;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(_) | Kind::Lazy(_) => false,
            Kind::File(file) => file.remaining == Some(0),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(data) => SizeHint::with_exact(data.len() as u64),
            Kind::File(file) => match file.remaining {
                Some(len) => {
                    let mut hint = SizeHint::new();
                    hint.set_upper(len);
                    hint
                }
                None => SizeHint::new(),
            },
            Kind::Boxed(body) => body.size_hint(),
            Kind::Lazy(_) => SizeHint::new(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(data: Bytes) -> Self {
        Body::full(data)
    }
}

impl From<Vec<u8>> for Body {
    fn from(data: Vec<u8>) -> Self {
        Body::full(data)
    }
}

impl From<String> for Body {
    fn from(data: String) -> Self {
        Body::full(data)
    }
}

impl From<&'static str> for Body {
    fn from(data: &'static str) -> Self {
        Body::full(Bytes::from_static(data.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(data: &'static [u8]) -> Self {
        Body::full(Bytes::from_static(data))
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Body::empty()
    }
}

/// A file to send as a response body: WSGI's `wsgi.file_wrapper`.
///
/// The output is the file from its position when the body was made, to its end or to the
/// length given to [`Body::file_range`]. A server with a fast path (sendfile) takes the file
/// with [`FileBody::into_parts`] and sends `remaining` bytes from the file's current position.
/// Read as a plain body it yields chunks of [`FILE_CHUNK_SIZE`] bytes, read with blocking I/O.
pub struct FileBody {
    file: File,
    remaining: Option<u64>,
}

impl FileBody {
    fn new(file: File, remaining: Option<u64>) -> Self {
        FileBody { file, remaining }
    }

    /// The file, positioned where sending starts.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// How many bytes are to be sent at most, or `None` for "to the end of the file".
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// The file and the byte limit, for a server that sends the file itself.
    pub fn into_parts(self) -> (File, Option<u64>) {
        (self.file, self.remaining)
    }

    fn read_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        let want = match self.remaining {
            Some(0) => return None,
            Some(n) => n.min(FILE_CHUNK_SIZE as u64) as usize,
            None => FILE_CHUNK_SIZE,
        };
        let mut buf = BytesMut::zeroed(want);
        let read = loop {
            match self.file.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e.into())),
            }
        };
        if read == 0 {
            self.remaining = Some(0);
            return None;
        }
        if let Some(n) = &mut self.remaining {
            *n -= read as u64;
        }
        buf.truncate(read);
        Some(Ok(buf.freeze()))
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBody")
            .field("file", &self.file)
            .field("remaining", &self.remaining)
            .finish()
    }
}

pin_project_lite::pin_project! {
    struct MapErr<B> {
        #[pin]
        inner: B,
    }
}

impl<B> http_body::Body for MapErr<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project()
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct IterBody<I> {
    iter: Option<I>,
}

// The iterator is never pinned: it is only called through `&mut`.
impl<I> Unpin for IterBody<I> {}

impl<I, T, E> http_body::Body for IterBody<I>
where
    I: Iterator<Item = Result<T, E>>,
    T: Into<Bytes>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(iter) = self.iter.as_mut() else {
            return Poll::Ready(None);
        };
        let item = iter.next();
        if item.is_none() {
            // Drop the iterator as soon as it is exhausted: that is its close().
            self.iter = None;
        }
        Poll::Ready(item.map(|r| r.map(|d| Frame::data(d.into())).map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.iter.is_none()
    }
}

struct StreamBody<S> {
    stream: Pin<Box<S>>,
}

impl<S, T, E> http_body::Body for StreamBody<S>
where
    S: Stream<Item = Result<T, E>>,
    T: Into<Bytes>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.stream
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|r| r.map(|d| Frame::data(d.into())).map_err(Into::into)))
    }

    fn size_hint(&self) -> SizeHint {
        let (lower, upper) = self.stream.size_hint();
        let mut hint = SizeHint::new();
        // A stream's size hint counts items, not bytes: only "no items" says anything.
        if upper == Some(0) && lower == 0 {
            hint.set_exact(0);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;
    use http_body_util::BodyExt;

    fn collect(body: Body) -> Result<Vec<Bytes>, BoxError> {
        block_on(async move {
            let mut body = body;
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    out.push(data);
                }
            }
            Ok(out)
        })
    }

    #[test]
    fn full_and_empty() {
        assert_eq!(collect(Body::full("ab")).unwrap(), vec![Bytes::from("ab")]);
        assert!(collect(Body::full("")).unwrap().is_empty());
        assert!(collect(Body::empty()).unwrap().is_empty());
        assert!(collect(Body::from(())).unwrap().is_empty());
    }

    #[test]
    fn iterator_yields_each_chunk_and_is_dropped_when_exhausted() {
        let body = Body::from_chunks(vec!["a", "bc"]);
        assert_eq!(
            collect(body).unwrap(),
            vec![Bytes::from("a"), Bytes::from("bc")]
        );
    }

    #[test]
    fn failing_iterator_fails_the_body() {
        let body = Body::try_from_chunks(vec![Ok::<_, BoxError>("a"), Err("boom".into())]);
        assert_eq!(collect(body).unwrap_err().to_string(), "boom");
    }

    #[test]
    fn lazy_body_resolves_to_the_inner_body() {
        let body = Body::from_future(async { Ok(Body::full("later")) });
        assert_eq!(collect(body).unwrap(), vec![Bytes::from("later")]);
        assert_eq!(collect(Body::error("no")).unwrap_err().to_string(), "no");
    }

    #[test]
    fn file_body_reads_from_the_current_position_up_to_the_limit() {
        use std::io::{Seek, SeekFrom, Write};
        let path = std::env::temp_dir().join(format!("gateway-core-body-{}", std::process::id()));
        let mut file = File::create(&path).unwrap();
        file.write_all(b"0123456789").unwrap();
        drop(file);
        let mut file = File::open(&path).unwrap();
        file.seek(SeekFrom::Start(2)).unwrap();
        let body = Body::file_range(file, 5);
        assert_eq!(body.as_file().unwrap().remaining(), Some(5));
        assert_eq!(collect(body).unwrap().concat(), b"23456");
        let mut file = File::open(&path).unwrap();
        file.seek(SeekFrom::Start(7)).unwrap();
        assert_eq!(collect(Body::file(file)).unwrap().concat(), b"789");
        std::fs::remove_file(&path).unwrap();
    }
}
