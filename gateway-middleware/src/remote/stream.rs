//! Where a backend listens, and a connection to it: TCP or a Unix socket.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The address of a backend: `host:port` (a name is resolved at each new connection) or the
/// path of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `host:port`, `[v6]:port`, `unix:/path` or `/path`.
    pub fn parse(address: &str) -> Result<Endpoint, String> {
        if let Some(path) = address.strip_prefix("unix:") {
            return if path.is_empty() {
                Err("empty Unix socket path".into())
            } else {
                Ok(Endpoint::Unix(path.into()))
            };
        }
        if address.starts_with('/') {
            return Ok(Endpoint::Unix(address.into()));
        }
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(address.to_owned()))
            }
            _ => Err(format!("{address:?} is not host:port or unix:/path")),
        }
    }

    /// Opens a connection, failing with [`io::ErrorKind::TimedOut`] after `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        let connect = async {
            Ok::<_, io::Error>(match self {
                Endpoint::Tcp(address) => {
                    let stream = TcpStream::connect(address.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Stream::Tcp(stream)
                }
                Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {self} timed out after {timeout:?}"),
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(address) => f.write_str(address),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A connection to a backend.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Whether an idle connection can still be used: the peer has neither closed it nor sent
    /// anything unasked (either makes it unusable for a new request).
    pub(crate) fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        let result = match self {
            Stream::Tcp(stream) => stream.try_read(&mut probe),
            Stream::Unix(stream) => stream.try_read(&mut probe),
        };
        matches!(result, Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(stream) => stream.is_write_vectored(),
            Stream::Unix(stream) => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:80"),
            Ok(Endpoint::Tcp("127.0.0.1:80".into()))
        );
        assert_eq!(
            Endpoint::parse("[::1]:8080"),
            Ok(Endpoint::Tcp("[::1]:8080".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/app.sock"),
            Ok(Endpoint::Unix("/run/app.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("/run/app.sock"),
            Ok(Endpoint::Unix("/run/app.sock".into()))
        );
        for bad in ["", "host", "host:", ":80", "host:99999", "unix:"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Endpoint::Unix("/a".into()).to_string(),
            "unix:/a",
            "Display gives back what parse takes"
        );
    }
}
