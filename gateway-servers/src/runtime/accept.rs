//! The accept loop of the adapters that own their connections (uwsgi, FastCGI): the connection
//! limit, and graceful shutdown that waits for the connections in progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

use super::shutdown::UnreadGuard;
use super::{Config, Connection, Listener, Shutdown, Stream};

/// The limit on connections open at once ([`Config::max_connections`]), shared by every
/// listener of a server: a [`Runtime`](super::Runtime) has one, so that a process serving
/// several sockets holds at most that many connections in all, not that many per socket.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// How many connections may be open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many connections are open now, under this limit.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// Accepts connections on `listener` and runs `handle` for each, as a task, while `limit`
/// allows (more wait in the listen backlog), until `shutdown` asks to stop
/// accepting; then closes the listener and waits for the connections still open, within
/// `shutdown_timeout` or until an immediate shutdown. Each connection counts as unread for
/// [`Shutdown::drain`] until its first read.
pub async fn serve_connections<H, F>(
    listener: Listener,
    config: &Config,
    limit: &ConnectionLimit,
    shutdown: Shutdown,
    handle: H,
) -> io::Result<()>
where
    H: Fn(Connection) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let connections = &limit.permits;
    // The loop itself counts as unread until it stops: a connection accepted just as a drain
    // begins gets its own count before this one goes, so the drain never sees a moment with
    // nothing unread between the accept and the count (it did, and closed such a connection
    // with its request unread: the client saw a reset).
    let accepting = shutdown.unread_connection();
    // One wait for the stop, made once and polled only when there is nothing to accept; while
    // connections keep coming, the check at the top of the loop sees the stop.
    let stop = shutdown.wait_stop_accepting();
    let mut stop = std::pin::pin!(stop);
    loop {
        if shutdown.is_not_accepting() {
            break;
        }
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                biased;
                () = stop.as_mut() => break,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            },
        };
        let connection = tokio::select! {
            biased;
            accepted = listener.accept() => accepted,
            () = stop.as_mut() => break,
        };
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait
                // a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        super::stats::connection_accepted();
        connection.stream = Box::new(FirstRead {
            stream: connection.stream,
            unread: Some(shutdown.unread_connection()),
        });
        // Boxed: tokio moves a task's future several times on its way into the task, and a
        // connection's future is a few KiB.
        tokio::spawn(Holding {
            task: Box::pin(handle(connection)),
            _permit: permit,
        });
    }
    drop(listener);
    drop(accepting);
    if shutdown.is_immediate() {
        return Ok(());
    }
    // Every connection under the limit closed (other listeners' too: a server stops all of
    // them at once).
    let all = u32::try_from(limit.max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("shutdown timeout: closing the connections still open");
        }
        () = shutdown.wait_immediate() => {}
    }
    Ok(())
}

pin_project_lite::pin_project! {
    /// A connection's task, holding its place under the connection limit until it ends. (An
    /// `async` block awaiting the task would keep the task twice in its state: the size of
    /// every connection, idle ones included.)
    struct Holding<F> {
        #[pin]
        task: F,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
}

impl<F: Future<Output = ()>> Future for Holding<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().task.poll(cx)
    }
}

/// A connection's stream that counts as unread until its first read completes, and whose
/// bytes are counted (with `--stats`).
struct FirstRead {
    stream: Box<dyn Stream>,
    unread: Option<UnreadGuard>,
}

impl AsyncRead for FirstRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.unread = None;
            super::stats::bytes_in(buf.filled().len().saturating_sub(before));
        }
        polled
    }
}

impl AsyncWrite for FirstRead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            super::stats::bytes_out(&buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            // A response head leads a write: only the first buffer is looked at.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            let first = &first[..n.min(first.len())];
            super::stats::bytes_out(first);
            super::stats::bytes_out_counted(n - first.len());
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server whose connections read one byte and hold on until the client leaves.
    async fn start() -> (Shutdown, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let config = Config::default();
            let limit = ConnectionLimit::new(config.max_connections);
            serve_connections(
                listener,
                &config,
                &limit,
                stop,
                |mut connection| async move {
                    let mut byte = [0; 1];
                    while connection.stream.read(&mut byte).await.is_ok_and(|n| n > 0) {}
                },
            )
            .await
            .unwrap();
        });
        (shutdown, addr, server)
    }

    #[tokio::test]
    async fn drain_waits_for_the_first_bytes_of_accepted_connections() {
        let (shutdown, addr, _server) = start().await;
        while shutdown.unread() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(shutdown.unread(), 1, "the accept loop counts while it runs");
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        while shutdown.unread() < 2 {
            tokio::task::yield_now().await;
        }
        let drain = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.drain(Duration::from_secs(3600)).await }
        });
        shutdown.wait_stop_accepting().await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!shutdown.is_graceful(), "a connection has sent nothing yet");
        client.write_all(b"G").await.unwrap();
        drain.await.unwrap();
        assert!(shutdown.is_graceful());
        assert_eq!(shutdown.unread(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_on_silent_connections_after_its_grace() {
        let (shutdown, addr, _server) = start().await;
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        while shutdown.unread() < 2 {
            tokio::task::yield_now().await;
        }
        shutdown.drain(Duration::from_millis(50)).await;
        assert!(shutdown.is_graceful());
        assert_eq!(
            shutdown.unread(),
            1,
            "the connection is still silent; the loop stopped"
        );
    }

    #[tokio::test]
    async fn listeners_of_one_server_share_its_connection_limit() {
        let config = Config::default();
        let limit = ConnectionLimit::new(1);
        let shutdown = Shutdown::new();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (config, limit, stop) = (config.clone(), limit.clone(), shutdown.clone());
            tokio::spawn(async move {
                // Each connection is greeted with a byte, then held until the client leaves.
                let greet = |mut connection: Connection| async move {
                    connection.stream.write_all(b"+").await.unwrap();
                    let mut byte = [0; 1];
                    while connection.stream.read(&mut byte).await.is_ok_and(|n| n > 0) {}
                };
                serve_connections(listener, &config, &limit, stop, greet)
                    .await
                    .unwrap();
            });
        }
        let mut first = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        let mut byte = [0; 1];
        first.read_exact(&mut byte).await.unwrap();
        assert_eq!(limit.open(), 1);
        let mut second = tokio::net::TcpStream::connect(addrs[1]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
        assert!(
            waited.is_err(),
            "the other listener must wait for the one place"
        );
        drop(first);
        second.read_exact(&mut byte).await.unwrap();
        assert_eq!(byte, *b"+", "accepted once the first connection closed");
        shutdown.immediate();
    }
}
