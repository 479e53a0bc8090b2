//! Lingering over a request body the app left unread.
//!
//! An app may answer without reading the request body (a 401, a 413 of its own, a redirect),
//! and the server answers 413 itself when the declared length is over the limit. If the server
//! then closes the connection while the client is still sending, the client's next write meets
//! a closed socket: nginx's `proxy_pass` and `uwsgi_pass` send the whole body before they read
//! the answer, get `EPIPE`, and give their own client a 502; so does any client that writes
//! the whole request first (Python's `http.client`). The server's answer is lost.
//!
//! So the adapters of connection-oriented protocols (HTTP/1, uwsgi) wrap the body the app gets
//! in [`Lingering`]: dropped before its end, it is read to its end and thrown away in a task of
//! its own, for at most [`Config::linger_timeout`](super::Config::linger_timeout), as nginx
//! (`lingering_close`) and Apache (its lingering close) do for their clients. The connection
//! closes after that (uwsgi), or is kept alive (HTTP/1: hyper waits for the body's end before
//! the next request, where it would close the connection with the body unread).
//!
//! FastCGI needs no such body: a kept connection goes on being read for the other requests,
//! and the records of an ended request are dropped as they come. A connection closed after its
//! request (no `FCGI_KEEP_CONN`, nginx's default), and the uwsgi server's own refusals, end
//! with [`read_until_close`] instead: the server shuts its sending down, then reads what the web
//! server still sends until it closes, which it does once it has the answer.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// A request body that, dropped before its end, is read to its end in a task of its own (see
/// the [module](self)).
pub(crate) struct Lingering<B> {
    /// Always there until the drop.
    body: Option<B>,
    ended: bool,
    /// What the drop does with a body not at its end: `None` to let it go unread.
    linger: Option<Linger<B>>,
}

/// Where and for how long to read the rest of a body. The drop goes through `spawn`, made
/// where the body's bounds are known: a `Drop` with bounds of its own makes the futures of
/// the adapters that hold the body fail rustc's check for `Send`.
struct Linger<B> {
    runtime: tokio::runtime::Handle,
    within: Duration,
    spawn: fn(B, &tokio::runtime::Handle, Duration),
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Lingering<B> {
    /// `body`, read to its end when dropped before it, for at most `within`; `within` of zero,
    /// or `linger` false, lets it go unread. Call inside the runtime.
    pub(crate) fn new(body: B, linger: bool, within: Duration) -> Self {
        Lingering {
            body: Some(body),
            ended: false,
            linger: (linger && !within.is_zero()).then(|| Linger {
                runtime: tokio::runtime::Handle::current(),
                within,
                spawn: |body: B, runtime, within| {
                    if !body.is_end_stream() {
                        runtime.spawn(discard(body, within));
                    }
                },
            }),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Lingering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let body = self
            .body
            .as_mut()
            .expect("the body is there until the drop");
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(B::size_hint).unwrap_or_default()
    }
}

impl<B> Drop for Lingering<B> {
    fn drop(&mut self) {
        if let (Some(body), Some(linger), false) =
            (self.body.take(), self.linger.take(), self.ended)
        {
            // The app may drop its body on a worker thread: the task goes to the runtime.
            (linger.spawn)(body, &linger.runtime, linger.within);
        }
    }
}

/// Reads `body` to its end and drops what it reads, for at most `within`.
async fn discard<B: Body<Data = Bytes> + Unpin>(mut body: B, within: Duration) {
    // A body that knows its length ends with its last byte: hyper signals the end of a body
    // the app left unread only when the connection reads again (the next request), and until
    // then the connection would not count as idle.
    let mut ended = false;
    let (bytes, how) = drop_until_end(
        |cx| {
            if ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    ended = body.is_end_stream();
                    Poll::Ready(Some(Ok(frame.data_ref().map_or(0, Bytes::len))))
                }
                Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        },
        within,
    )
    .await;
    tracing::debug!(bytes, "request body left unread: {how}");
}

/// Reads what the peer still sends until it closes (or the read fails), for at most `within`,
/// dropping it: after the server's last answer on a connection and the end of its own sending
/// (a shutdown of the write side), so that a peer still sending a request reads the answer and
/// closes, rather than meeting a reset.
pub(crate) async fn read_until_close(reader: &mut (impl AsyncRead + Unpin), within: Duration) {
    let mut space = vec![0u8; 16 * 1024];
    let (bytes, how) = drop_until_end(
        |cx| {
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
                Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(buf.filled().len()))),
                Poll::Ready(Err(_)) => Poll::Ready(Some(Err(()))),
                Poll::Pending => Poll::Pending,
            }
        },
        within,
    )
    .await;
    tracing::debug!(bytes, "read after the last answer: {how}");
}

/// Polls `next` (the length of each chunk read; `None` at the end) until the end, a failure or
/// `within`, dropping what it reads: how many bytes, and how it ended.
async fn drop_until_end(
    mut next: impl FnMut(&mut Context<'_>) -> Poll<Option<Result<usize, ()>>>,
    within: Duration,
) -> (u64, &'static str) {
    let mut timer = std::pin::pin!(tokio::time::sleep(within));
    let mut dropped = 0u64;
    let how = std::future::poll_fn(|cx| {
        loop {
            match next(cx) {
                Poll::Ready(Some(Ok(len))) => dropped += len as u64,
                Poll::Ready(Some(Err(()))) => return Poll::Ready("reading failed"),
                Poll::Ready(None) => return Poll::Ready("read to its end"),
                Poll::Pending => break,
            }
        }
        timer
            .as_mut()
            .poll(cx)
            .map(|()| "not at its end within the linger timeout")
    })
    .await;
    (dropped, how)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;

    use super::*;

    /// A body of `n` chunks, then pending for ever (or ended, with `ends`), that counts the
    /// chunks taken from it and its drop.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        ends: bool,
        taken: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    self.taken.fetch_add(1, Ordering::SeqCst);
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                None if self.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.ends && self.chunks.is_empty()
        }
    }

    impl Drop for Chunks {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A body of `n` chunks and its counters (chunks taken, drops).
    fn chunks(n: usize, ends: bool) -> (Chunks, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (taken, dropped) = (Arc::default(), Arc::default());
        let body = Chunks {
            chunks: (0..n).map(|_| Bytes::from_static(b"abc")).collect(),
            ends,
            taken: Arc::clone(&taken),
            dropped: Arc::clone(&dropped),
        };
        (body, taken, dropped)
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_read_to_its_end() {
        let (body, taken, dropped) = chunks(5, true);
        let mut body = Lingering::new(body, true, Duration::from_secs(60));
        body.frame().await.unwrap().unwrap();
        drop(body);
        until(|| dropped.load(Ordering::SeqCst) == 1).await;
        assert_eq!(taken.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_or_not_lingered_over_is_only_dropped() {
        let (body, taken, dropped) = chunks(2, true);
        let mut body = Lingering::new(body, true, Duration::from_secs(60));
        while body.frame().await.is_some() {}
        drop(body);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped at once");
        assert_eq!(taken.load(Ordering::SeqCst), 2);

        for (linger, within) in [(false, Duration::from_secs(60)), (true, Duration::ZERO)] {
            let (body, taken, dropped) = chunks(2, true);
            drop(Lingering::new(body, linger, within));
            assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped at once");
            assert_eq!(taken.load(Ordering::SeqCst), 0, "nothing read");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_given_up_at_the_linger_timeout() {
        let (body, taken, dropped) = chunks(2, false);
        let started = tokio::time::Instant::now();
        drop(Lingering::new(body, true, Duration::from_secs(3)));
        until(|| dropped.load(Ordering::SeqCst) == 1).await;
        assert_eq!(taken.load(Ordering::SeqCst), 2);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reading_until_close_ends_at_the_close_or_the_linger_timeout() {
        use tokio::io::AsyncWriteExt as _;
        // The peer sends, then closes: the read ends at the close, long before the timeout.
        let (mut ours, mut peer) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let sending = tokio::spawn(async move {
            for _ in 0..100 {
                peer.write_all(&[7; 50]).await.unwrap();
            }
        });
        read_until_close(&mut ours, Duration::from_secs(60)).await;
        sending.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));

        // A peer that never closes: the read gives up at the timeout.
        let (mut ours, _peer) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        read_until_close(&mut ours, Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
