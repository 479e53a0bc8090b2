//! Writing several buffers to a connection in as few system calls as it takes: one vectored
//! write when the stream takes them, so that what belongs together (a response's head and its
//! body, a FastCGI response and its `END_REQUEST`) reaches the peer in one piece.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// The most buffers given to one vectored write.
const MAX_SLICES: usize = 16;

/// Writes every byte of `bufs`, in order. A stream without vectored writes gets one write per
/// buffer.
pub(crate) async fn write_all_bufs<W>(writer: &mut W, bufs: &mut Vec<Bytes>) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| poll_write_bufs(Pin::new(&mut *writer), bufs, cx)).await
}

/// Writes `bufs` as far as the stream takes them now, removing what was written: ready once
/// every byte is out, pending (with the rest left in `bufs`) when the stream cannot take more.
pub(crate) fn poll_write_bufs<W>(
    mut writer: Pin<&mut W>,
    bufs: &mut Vec<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>>
where
    W: AsyncWrite + ?Sized,
{
    bufs.retain(|b| !b.is_empty());
    let mut first = 0;
    let result = loop {
        if first == bufs.len() {
            break Poll::Ready(Ok(()));
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = (bufs.len() - first).min(MAX_SLICES);
        for (slice, buf) in slices.iter_mut().zip(&bufs[first..first + count]) {
            *slice = IoSlice::new(buf);
        }
        let mut written = match writer.as_mut().poll_write_vectored(cx, &slices[..count]) {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
            Poll::Pending => break Poll::Pending,
        };
        while written > 0 {
            let buf = &mut bufs[first];
            let n = written.min(buf.len());
            buf.advance(n);
            written -= n;
            if buf.is_empty() {
                first += 1;
            }
        }
    };
    if first == bufs.len() {
        bufs.clear();
    } else {
        bufs.drain(..first);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that takes at most `step` bytes per write, vectored or not; with `stall`, every
    /// other vectored write is pending first (and wakes its task at once).
    struct Trickle {
        step: usize,
        vectored: bool,
        got: Vec<u8>,
        writes: usize,
        stall: bool,
        stalled: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.stall {
                self.stalled = !self.stalled;
                if self.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            if !self.vectored {
                // What tokio's default does: the first buffer that is not empty.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                return self.poll_write(cx, first);
            }
            let mut left = self.step;
            for buf in bufs {
                let n = buf.len().min(left);
                self.got.extend_from_slice(&buf[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            self.writes += 1;
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn every_byte_goes_out_in_order_whatever_each_write_takes() {
        let parts: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; usize::from(i % 7)]))
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        for (vectored, stall) in [(true, false), (false, false), (true, true)] {
            for step in [1, 2, 3, 5, 8, 64, 1000] {
                let mut stream = Trickle {
                    step,
                    vectored,
                    got: Vec::new(),
                    writes: 0,
                    stall,
                    stalled: false,
                };
                let mut bufs = parts.clone();
                gateway_core::block_on(write_all_bufs(&mut stream, &mut bufs)).unwrap();
                let case = format!("step {step}, vectored {vectored}, stall {stall}");
                assert_eq!(stream.got, expected, "{case}");
                assert!(bufs.is_empty());
                if vectored && step == 1000 {
                    // 34 non-empty buffers, 16 to a write.
                    assert_eq!(stream.writes, 3, "{case}");
                }
            }
        }
    }
}
