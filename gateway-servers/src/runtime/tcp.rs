//! Accepting a TCP connection without registering it with the event loop, and a connection
//! that joins the event loop only once a read or a write has to wait.
//!
//! On a listener with deferred accept (see
//! [`BoundSocket::defer_accept`](super::BoundSocket::defer_accept)) a connection comes with its
//! request already received. A web server's uwsgi request, or a FastCGI request without
//! keep-alive, is then read, answered and closed without waiting once: registering such a
//! connection with epoll would cost two system calls (add, delete) and the runtime's
//! bookkeeping for nothing. [`LazyTcp`] reads and writes the socket directly, and registers it
//! the first time the socket is not ready.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Accepts a connection from a non-blocking listening socket: the socket comes non-blocking
/// and close-on-exec, with the peer's address. `WouldBlock` when none is waiting.
pub(crate) fn accept(
    listener: &std::net::TcpListener,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` (a plain C struct).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes and `len` holds the storage's size, as
    // accept4 requires; the listener's descriptor is open while it is borrowed.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&raw mut storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    Ok((stream, socket_addr(&storage)?))
}

/// The address in `storage`, as accept4 filled it in.
fn socket_addr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, and a
            // `sockaddr_storage` is large and aligned enough for any socket address.
            let addr = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                u16::from_be(addr.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let addr = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(addr.sin6_addr.s6_addr),
                u16::from_be(addr.sin6_port),
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
        family => Err(io::Error::other(format!(
            "accepted a socket of address family {family}"
        ))),
    }
}

/// A TCP connection that joins the event loop the first time it is not ready.
///
/// Made with [`LazyTcp::ending_with_response`], it carries one response and ends with it (a
/// uwsgi connection): each write is sent with `MSG_MORE`, so the kernel holds a last segment
/// shorter than the path's largest until a flush, the shutdown or the close pushes it, and
/// the response's last bytes and the connection's `FIN` travel in one segment instead of two
/// (which spares the web server a wake-up and both sides an acknowledgement).
#[derive(Debug)]
pub(crate) struct LazyTcp {
    state: State,
    /// Writes are sent with `MSG_MORE`.
    holds: bool,
    /// Bytes were sent with `MSG_MORE` and nothing pushed them since.
    held: bool,
}

#[derive(Debug)]
enum State {
    /// Not registered: reads and writes go straight to the socket.
    Plain(std::net::TcpStream),
    /// Registered with the runtime's event loop.
    Registered(tokio::net::TcpStream),
    /// Registration failed; the socket is closed.
    Lost,
}

impl LazyTcp {
    /// A connection on `stream`, which must be non-blocking.
    pub(crate) fn new(stream: std::net::TcpStream) -> Self {
        LazyTcp {
            state: State::Plain(stream),
            holds: false,
            held: false,
        }
    }

    /// A connection on `stream` (non-blocking) that carries one response and ends with it:
    /// its writes are held until a flush, the shutdown or the close (see [`LazyTcp`]).
    pub(crate) fn ending_with_response(stream: std::net::TcpStream) -> Self {
        LazyTcp {
            state: State::Plain(stream),
            holds: true,
            held: false,
        }
    }

    /// The flags of a write on the plain socket.
    fn send_flags(&self) -> libc::c_int {
        if self.holds {
            libc::MSG_NOSIGNAL | libc::MSG_MORE
        } else {
            libc::MSG_NOSIGNAL
        }
    }

    /// Notes that a write may have left bytes held: one that wrote on the plain socket (a
    /// write that would have waited registered the stream, and went without `MSG_MORE`).
    fn note_written(&mut self, written: &Poll<io::Result<usize>>) {
        if self.holds
            && matches!(self.state, State::Plain(_))
            && matches!(written, Poll::Ready(Ok(1..)))
        {
            self.held = true;
        }
    }

    /// Sends what the kernel holds of the writes so far: setting `TCP_NODELAY` (set already)
    /// pushes the pending segments.
    fn push(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.held) {
            return Ok(());
        }
        match &self.state {
            State::Plain(stream) => stream.set_nodelay(true),
            State::Registered(stream) => stream.set_nodelay(true),
            State::Lost => Ok(()),
        }
    }

    /// The registered stream, registering it first if needed.
    fn registered(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if let State::Plain(_) = self.state {
            let State::Plain(stream) = std::mem::replace(&mut self.state, State::Lost) else {
                unreachable!("matched Plain above")
            };
            self.state = State::Registered(tokio::net::TcpStream::from_std(stream)?);
        }
        match &mut self.state {
            State::Registered(stream) => Ok(stream),
            _ => Err(io::Error::other(
                "the connection could not join the event loop",
            )),
        }
    }

    /// Runs `op` on the socket while it is not registered (retried when interrupted); `None`
    /// when the stream is registered or `op` would block (the caller then registers it).
    fn try_plain<T>(
        &self,
        mut op: impl FnMut(&std::net::TcpStream) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let State::Plain(stream) = &self.state else {
            return None;
        };
        loop {
            match op(stream) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                result => return Some(result),
            }
        }
    }

    /// One read or write with `buf`: `plain` on the socket while it is not registered, else
    /// (or when it would block, after registering) `registered` on the registered stream.
    fn poll_io<B, T>(
        &mut self,
        mut buf: B,
        mut plain: impl FnMut(&std::net::TcpStream, &mut B) -> io::Result<T>,
        registered: impl FnOnce(Pin<&mut tokio::net::TcpStream>, B) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Some(result) = self.try_plain(|stream| plain(stream, &mut buf)) {
            return Poll::Ready(result);
        }
        match self.registered() {
            Ok(stream) => registered(Pin::new(stream), buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// Reads into the unfilled part of `buf` from the socket, without initialising it first.
fn recv(stream: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: recv only writes into the memory given, never reads it, so uninitialised memory
    // is fine; what it reports written is marked initialised below, and no more.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: the pointer and length describe `unfilled`, valid for writes; the descriptor is
    // open while `stream` is borrowed.
    let read = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            unfilled.as_mut_ptr().cast(),
            unfilled.len(),
            0,
        )
    };
    let Ok(read) = usize::try_from(read) else {
        return Err(io::Error::last_os_error());
    };
    // SAFETY: recv wrote `read` bytes at the start of the unfilled part.
    unsafe { buf.assume_init(read) };
    buf.advance(read);
    Ok(())
}

impl Drop for LazyTcp {
    fn drop(&mut self) {
        // A close with request bytes unread resets the connection, and the kernel discards
        // what it holds: shut the writing side first, which sends it with the FIN.
        if self.held {
            let _ = match &self.state {
                State::Plain(stream) => stream.shutdown(Shutdown::Write),
                State::Registered(stream) => {
                    socket2::SockRef::from(stream).shutdown(Shutdown::Write)
                }
                State::Lost => Ok(()),
            };
        }
    }
}

impl AsyncRead for LazyTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(
            buf,
            |stream, buf| recv(stream, buf),
            |stream, buf| stream.poll_read(cx, buf),
        )
    }
}

impl AsyncWrite for LazyTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let flags = this.send_flags();
        let written = this.poll_io(
            buf,
            |stream, buf| socket2::SockRef::from(stream).send_with_flags(buf, flags),
            |stream, buf| stream.poll_write(cx, buf),
        );
        this.note_written(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let flags = this.send_flags();
        let written = this.poll_io(
            bufs,
            |stream, bufs| socket2::SockRef::from(stream).send_vectored_with_flags(bufs, flags),
            |stream, bufs| stream.poll_write_vectored(cx, bufs),
        );
        this.note_written(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.push() {
            return Poll::Ready(Err(error));
        }
        match &mut this.state {
            State::Registered(stream) => Pin::new(stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The FIN goes with what is held, in its last segment.
        this.held = false;
        match &mut this.state {
            State::Plain(stream) => Poll::Ready(stream.shutdown(Shutdown::Write)),
            State::Registered(stream) => Pin::new(stream).poll_shutdown(cx),
            State::Lost => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn registered(stream: &LazyTcp) -> bool {
        matches!(stream.state, State::Registered(_))
    }

    /// A connection accepted from a fresh listener, and its client.
    async fn connected() -> (std::net::TcpStream, tokio::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        stream.set_nodelay(true).unwrap();
        (stream, client)
    }

    /// Reads `n` bytes within five seconds.
    async fn read_n(client: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut bytes),
        )
        .await
        .expect("the bytes arrive")
        .unwrap();
        bytes
    }

    /// The bytes the kernel holds in the connection's send queue, not sent yet.
    fn unsent(stream: &LazyTcp) -> libc::c_int {
        let State::Plain(socket) = &stream.state else {
            panic!("registered")
        };
        let mut unsent: libc::c_int = 0;
        // SAFETY: SIOCOUTQNSD writes one int through the pointer, which points to one; the
        // descriptor is open while `socket` is borrowed.
        let done = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCOUTQNSD, &raw mut unsent) };
        assert_eq!(done, 0, "{}", io::Error::last_os_error());
        unsent
    }

    #[tokio::test]
    async fn held_writes_leave_at_a_flush_the_shutdown_or_the_close() {
        // A flush sends what is held, and the connection stays open.
        let (stream, mut client) = connected().await;
        let mut stream = LazyTcp::ending_with_response(stream);
        stream.write_all(b"head").await.unwrap();
        assert_eq!(unsent(&stream), 4, "held by MSG_MORE");
        stream.flush().await.unwrap();
        assert_eq!(unsent(&stream), 0, "sent by the flush");
        assert_eq!(read_n(&mut client, 4).await, b"head");
        stream.write_all(b"chunk").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(read_n(&mut client, 5).await, b"chunk");
        // The shutdown sends the rest with the end.
        stream.write_all(b"last").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");

        // Dropped with bytes held (and the request's bytes unread, which makes the close a
        // reset): the bytes arrive all the same, before the end.
        let (stream, mut client) = connected().await;
        client.write_all(b"unread").await.unwrap();
        let mut stream = LazyTcp::ending_with_response(stream);
        stream.write_all(b"response").await.unwrap();
        assert!(stream.held);
        drop(stream);
        assert_eq!(read_n(&mut client, 8).await, b"response");
    }

    #[tokio::test]
    async fn a_connection_joins_the_event_loop_only_when_it_has_to_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(
            accept(&listener).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing to accept yet"
        );
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"request").await.unwrap();
        let (stream, peer) = loop {
            match accept(&listener) {
                Ok(accepted) => break accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(error) => panic!("{error}"),
            }
        };
        assert_eq!(peer, client.local_addr().unwrap());
        let mut stream = LazyTcp::new(stream);
        // Wait until the bytes are there, so that the read finds them.
        while stream.try_plain(|s| s.peek(&mut [0])).is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        let mut read = [0; 7];
        stream.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"request");
        stream.write_all(b"response").await.unwrap();
        assert!(
            !registered(&stream),
            "ready reads and writes need no registration"
        );

        // Nothing to read now: the read registers and waits for the bytes.
        let reading = tokio::spawn(async move {
            let mut more = [0; 4];
            stream.read_exact(&mut more).await.unwrap();
            assert!(registered(&stream));
            stream.write_all(b"done").await.unwrap();
            stream.shutdown().await.unwrap();
            more
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client.write_all(b"more").await.unwrap();
        assert_eq!(&reading.await.unwrap(), b"more");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"responsedone");
    }
}
