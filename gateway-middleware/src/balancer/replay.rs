//! A request body that can be sent again: the part read so far is kept (up to a limit), so a
//! second attempt reads it again before the rest.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use gateway_core::Input;
use http_body::{Body as _, Frame};

/// The request body shared by the attempts at a request.
#[derive(Debug, Clone)]
pub(super) struct Replay {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    source: Input,
    /// Everything read from `source` so far, while it fits in `limit`.
    kept: BytesMut,
    limit: usize,
    /// Whether more was read than `kept` holds: the body cannot be sent again.
    overflowed: bool,
    /// How many readings were made; the one that overflowed is the only one that may go on.
    readings: u64,
    overflowed_by: u64,
}

impl Replay {
    pub(super) fn new(source: Input, limit: usize) -> Replay {
        Replay {
            state: Arc::new(Mutex::new(State {
                source,
                kept: BytesMut::new(),
                limit,
                overflowed: false,
                readings: 0,
                overflowed_by: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an attempt can read the body from its start again.
    pub(super) fn replayable(&self) -> bool {
        !self.lock().overflowed
    }

    /// A new reading of the body, from its start, as long as the body when that is known: a
    /// backend sends a request without a body as one (not as a body of unknown length, which
    /// an HTTP backend sends chunked), and one with a length with that length.
    pub(super) fn input(&self) -> Input {
        let (reading, length) = {
            let mut state = self.lock();
            state.readings += 1;
            (state.readings, state.length())
        };
        let input = Input::from_body(Reader {
            replay: self.clone(),
            reading,
            position: 0,
        });
        match length {
            Some(length) => input.with_limit(length),
            None => input,
        }
    }
}

impl State {
    /// How long a reading from the start is, when that is known: what was kept, and what the
    /// source has left.
    fn length(&self) -> Option<u64> {
        let kept = self.kept.len() as u64;
        if self.overflowed {
            // The reading fails.
            None
        } else if self.source.is_end_stream() {
            Some(kept)
        } else if self.source.is_exhausted() {
            // The source failed, and the reading must give its error.
            None
        } else {
            self.source.remaining_limit().map(|left| kept + left)
        }
    }
}

/// One attempt's reading of the body.
struct Reader {
    replay: Replay,
    reading: u64,
    position: usize,
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let replay = self.replay.clone();
        let mut state = replay.lock();
        if self.reading != state.readings {
            // A later attempt reads the body now: a failed attempt still sending it (its
            // connection's task goes on a while) must neither take chunks from it nor steal
            // the wake-ups of the source.
            return Poll::Ready(Some(Err(io::Error::other(
                "the request body went to a later attempt",
            ))));
        }
        if self.position < state.kept.len() {
            let again = Bytes::copy_from_slice(&state.kept[self.position..]);
            self.position = state.kept.len();
            return Poll::Ready(Some(Ok(Frame::data(again))));
        }
        if state.overflowed && state.overflowed_by != self.reading {
            // An earlier attempt read past what was kept: this one cannot go on.
            return Poll::Ready(Some(Err(io::Error::other(
                "the request body was consumed by an earlier attempt",
            ))));
        }
        match state.source.poll_chunk(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if !state.overflowed && state.kept.len() + data.len() <= state.limit {
                    state.kept.extend_from_slice(&data);
                    self.position = state.kept.len();
                } else {
                    state.overflowed = true;
                    state.overflowed_by = self.reading;
                    state.kept = BytesMut::new();
                    self.position = 0;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(mut input: Input) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        input.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_second_attempt_reads_the_body_again() {
        let source = Input::from_body(gateway_core::Body::from_chunks(["ab", "cd", "ef"]));
        let replay = Replay::new(source, 100);
        let mut first = replay.input();
        let mut two = [0u8; 2];
        first.read_exact(&mut two).unwrap();
        assert!(replay.replayable());
        drop(first);
        assert_eq!(read_all(replay.input()).unwrap(), b"abcdef");
        assert_eq!(read_all(replay.input()).unwrap(), b"abcdef");
    }

    #[test]
    fn an_earlier_attempt_still_reading_stops_when_a_later_one_begins() {
        let source = Input::from_body(gateway_core::Body::from_chunks(["ab", "cd", "ef"]));
        let replay = Replay::new(source, 100);
        let mut first = replay.input();
        let mut two = [0u8; 2];
        first.read_exact(&mut two).unwrap();
        let second = replay.input();
        assert!(
            first.read(&mut two).is_err(),
            "the body went to the later attempt"
        );
        assert_eq!(read_all(second).unwrap(), b"abcdef");
    }

    #[test]
    fn each_reading_has_the_body_s_length_when_it_is_known() {
        let exact = |input: &Input| input.size_hint().exact();
        let source = Input::from_body(gateway_core::Body::from_chunks(["ab", "c"])).with_limit(3);
        let replay = Replay::new(source, 100);
        let mut first = replay.input();
        assert_eq!(exact(&first), Some(3));
        let mut two = [0u8; 2];
        first.read_exact(&mut two).unwrap();
        assert_eq!(
            exact(&replay.input()),
            Some(3),
            "2 kept, 1 left in the source"
        );

        let replay = Replay::new(Input::empty(), 100);
        assert!(replay.input().is_end_stream(), "no body: none to send");

        let unknown = Input::from_body(gateway_core::Body::from_chunks(["ab"]));
        assert_eq!(exact(&Replay::new(unknown, 100).input()), None);
    }

    #[test]
    fn a_body_over_the_limit_cannot_be_replayed() {
        let source = Input::from_body(gateway_core::Body::from_chunks(["abc", "def"]));
        let replay = Replay::new(source, 4);
        assert_eq!(read_all(replay.input()).unwrap(), b"abcdef");
        assert!(!replay.replayable());
        assert!(read_all(replay.input()).is_err());
    }
}
