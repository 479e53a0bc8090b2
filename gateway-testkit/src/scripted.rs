//! [`ScriptedStream`]: a connection made of scripted bytes, for testing the FastCGI or uwsgi
//! server without sockets. Reads follow the script (bytes, pauses, an error, a hang, then the
//! end); writes are kept for the test to read back, and can be made to fail, as for a client
//! that left. The stream goes to `serve_connection` of `gateway_servers::fastcgi::server` or
//! `gateway_servers::uwsgi::server`, which serve any byte stream; the HTTP server has no such
//! function (`gateway_servers::http::serve` takes a listener).
//!
//! A uwsgi request, sent in two parts with a pause between them, and the answer the server
//! wrote:
//!
//! ```
//! use std::time::Duration;
//! use bytes::BytesMut;
//! use gateway_servers::runtime::{Config, Runtime};
//! use gateway_servers::uwsgi::{codec, server::serve_connection};
//! use gateway_testkit::scripted::ScriptedStream;
//!
//! let mut wire = BytesMut::new();
//! let vars = [
//!     (&b"REQUEST_METHOD"[..], &b"GET"[..]),
//!     (b"PATH_INFO", b"/status/201"),
//!     (b"SERVER_PROTOCOL", b"HTTP/1.1"),
//! ];
//! codec::encode_request(&mut wire, codec::MODIFIER_WSGI, vars).unwrap();
//! let wire = wire.freeze();
//! let stream = ScriptedStream::new()
//!     .read(wire.slice(..10))
//!     .pause(Duration::from_millis(10))
//!     .read(wire.slice(10..));
//! let written = stream.written();
//! let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! tokio
//!     .block_on(async {
//!         let runtime = Runtime::new(gateway_testkit::echo::echo, Config::default());
//!         serve_connection(runtime, stream, None, codec::MAX_VARS_SIZE).await
//!     })
//!     .unwrap();
//! assert!(written.bytes().starts_with(b"HTTP/1.1 201"));
//! ```

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
enum Step {
    Read(Bytes),
    Pause(Duration),
    Error(io::ErrorKind),
    Hang,
}

/// What a [`ScriptedStream`] was sent; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Written(Arc<Mutex<Vec<u8>>>);

impl Written {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A scripted connection (see the [module](self)). It needs a tokio runtime with its timer
/// for pauses.
#[derive(Debug)]
pub struct ScriptedStream {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    written: Written,
    write_limit: Option<usize>,
    read_size: usize,
}

impl Default for ScriptedStream {
    fn default() -> Self {
        ScriptedStream::new()
    }
}

impl ScriptedStream {
    /// A stream whose reads end at once and whose writes all succeed.
    pub fn new() -> ScriptedStream {
        ScriptedStream {
            steps: VecDeque::new(),
            sleep: None,
            written: Written::default(),
            write_limit: None,
            read_size: usize::MAX,
        }
    }

    /// Then these bytes can be read.
    pub fn read(mut self, bytes: impl Into<Bytes>) -> Self {
        self.steps.push_back(Step::Read(bytes.into()));
        self
    }

    /// Then a read waits this long.
    pub fn pause(mut self, duration: Duration) -> Self {
        self.steps.push_back(Step::Pause(duration));
        self
    }

    /// Then a read fails with this kind of error.
    pub fn error(mut self, kind: io::ErrorKind) -> Self {
        self.steps.push_back(Step::Error(kind));
        self
    }

    /// Then reads never complete (a client that neither sends nor leaves).
    pub fn hang(mut self) -> Self {
        self.steps.push_back(Step::Hang);
        self
    }

    /// Each read returns at most `n` bytes (1: byte by byte, every split).
    pub fn read_size(mut self, n: usize) -> Self {
        self.read_size = n.max(1);
        self
    }

    /// Writes fail (broken pipe) once `n` bytes have been written.
    pub fn fail_writes_after(mut self, n: usize) -> Self {
        self.write_limit = Some(n);
        self
    }

    /// A handle on what is written.
    pub fn written(&self) -> Written {
        self.written.clone()
    }
}

impl AsyncRead for ScriptedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => this.sleep = None,
                }
            }
            match this.steps.front_mut() {
                None => return Poll::Ready(Ok(())),
                Some(Step::Read(bytes)) if bytes.is_empty() => {
                    this.steps.pop_front();
                }
                Some(Step::Read(bytes)) => {
                    let n = bytes.len().min(buf.remaining()).min(this.read_size);
                    buf.put_slice(&bytes[..n]);
                    bytes.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Some(Step::Pause(duration)) => {
                    this.sleep = Some(Box::pin(tokio::time::sleep(*duration)));
                    this.steps.pop_front();
                }
                Some(Step::Error(kind)) => {
                    let kind = *kind;
                    this.steps.pop_front();
                    return Poll::Ready(Err(io::Error::new(kind, "scripted read error")));
                }
                Some(Step::Hang) => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for ScriptedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut written = self.written.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = match self.write_limit {
            Some(limit) if written.len() >= limit => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "scripted: the peer has gone",
                )));
            }
            Some(limit) => limit - written.len(),
            None => usize::MAX,
        };
        let n = data.len().min(room);
        written.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
