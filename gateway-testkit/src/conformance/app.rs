//! The app side of the suite: the echo app, plus paths that only the suite's own app serves
//! (under `/__suite/`), for the cases that need an app to fail, to hold its body open or to
//! wait for the client. In-process, a [`Hooks`] lets the cases open gates and see closes.

use std::collections::HashMap;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::{App, Body, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::echo::echo;

/// The first chunk of the suite's streamed answers.
pub const FIRST_CHUNK: &[u8] = b"first-chunk;";
/// The last chunk of a gated answer.
pub const LAST_CHUNK: &[u8] = b"last-chunk.";
/// The line `/__suite/errors` writes to `wsgi.errors`.
pub const ERROR_LINE: &str = "gateway-conformance: a line for wsgi.errors";

/// What the cases and the app share in-process: gates the app waits on, and the bodies that
/// were closed.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    state: Arc<Mutex<HookState>>,
}

#[derive(Debug, Default)]
struct HookState {
    /// Gate id: opened, and the waker of the body waiting on it.
    gates: HashMap<String, (bool, Option<Waker>)>,
    /// Ids of held bodies that were dropped.
    closed: Vec<String>,
}

impl Hooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens gate `id`: the body waiting on it sends its last chunk.
    pub fn open(&self, id: &str) {
        let mut state = self.lock();
        let gate = state.gates.entry(id.to_owned()).or_default();
        gate.0 = true;
        if let Some(waker) = gate.1.take() {
            waker.wake();
        }
    }

    /// Whether the held body `id` was closed (dropped), waiting up to `wait`.
    pub fn closed_within(&self, id: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.lock().closed.iter().any(|c| c == id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn poll_gate(&self, id: &str, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        let gate = state.gates.entry(id.to_owned()).or_default();
        if gate.0 {
            Poll::Ready(())
        } else {
            gate.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// The suite's app: the echo app, and under `/__suite/`:
///
/// - `fail-before`: fails before its head (the server must answer 500);
/// - `fail-after`: sends its head and a first chunk, then fails (the server must cut the
///   response short);
/// - `gate/ID`: sends its head and [`FIRST_CHUNK`], then waits for [`Hooks::open`] before
///   [`LAST_CHUNK`] (a server that buffers never shows the first chunk in time);
/// - `hold/ID`: sends its head and [`FIRST_CHUNK`], then a byte every [`HOLD_TICK`], never
///   ending; its close is recorded;
/// - `errors`: writes [`ERROR_LINE`] to `wsgi.errors`, then answers like echo.
#[derive(Debug, Clone, Default)]
pub struct SuiteApp {
    hooks: Hooks,
}

impl SuiteApp {
    /// The app, and the hooks the cases use in-process.
    pub fn new() -> (SuiteApp, Hooks) {
        let hooks = Hooks::default();
        (
            SuiteApp {
                hooks: hooks.clone(),
            },
            hooks,
        )
    }
}

fn streamed_head(start: StartResponse) -> Result<(), Body> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    start
        .start(StatusCode::OK, headers)
        .map(|_| ())
        .map_err(Body::error)
}

impl App for SuiteApp {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let path = environ.path_info().to_vec();
        let Some(what) = path.strip_prefix(b"/__suite/") else {
            return echo(environ, start);
        };
        let what = String::from_utf8_lossy(what).into_owned();
        match what.split_once('/') {
            None if what == "fail-before" => Body::error("the suite's app fails before its head"),
            None if what == "fail-after" => {
                if let Err(body) = streamed_head(start) {
                    return body;
                }
                Body::try_from_chunks([
                    Ok(Bytes::from_static(FIRST_CHUNK)),
                    Err("the suite's app fails after its head"),
                ])
            }
            None if what == "errors" => {
                let _ = writeln!(environ.errors(), "{ERROR_LINE}");
                let _ = environ.errors().flush();
                echo(environ, start)
            }
            Some(("gate", id)) => {
                if let Err(body) = streamed_head(start) {
                    return body;
                }
                Body::from_stream(Gated {
                    hooks: self.hooks.clone(),
                    id: id.to_owned(),
                    step: 0,
                })
            }
            Some(("hold", id)) => {
                if let Err(body) = streamed_head(start) {
                    return body;
                }
                Body::from_stream(Held {
                    hooks: self.hooks.clone(),
                    id: id.to_owned(),
                    sent_first: false,
                    ticker: None,
                })
            }
            _ => echo(environ, start),
        }
    }
}

/// The body of `gate/ID`.
struct Gated {
    hooks: Hooks,
    id: String,
    step: u8,
}

impl futures_core::Stream for Gated {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(Bytes::from_static(FIRST_CHUNK))))
            }
            1 => match self.hooks.poll_gate(&self.id, cx) {
                Poll::Ready(()) => {
                    self.step = 2;
                    Poll::Ready(Some(Ok(Bytes::from_static(LAST_CHUNK))))
                }
                Poll::Pending => Poll::Pending,
            },
            _ => Poll::Ready(None),
        }
    }
}

/// How often a held body sends a byte: a server learns that its client left when a write
/// fails, so a body that never wrote would never be closed on any protocol without keep-alive
/// probes of its own.
pub const HOLD_TICK: Duration = Duration::from_millis(100);

/// The body of `hold/ID`: [`FIRST_CHUNK`], then a `.` every [`HOLD_TICK`], forever.
struct Held {
    hooks: Hooks,
    id: String,
    sent_first: bool,
    ticker: Option<Arc<Mutex<Option<Waker>>>>,
}

impl futures_core::Stream for Held {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !std::mem::replace(&mut self.sent_first, true) {
            return Poll::Ready(Some(Ok(Bytes::from_static(FIRST_CHUNK))));
        }
        match &self.ticker {
            // Woken by the ticker: one more byte, then wait for the next tick.
            Some(waker) => {
                let mut slot = waker.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(cx.waker().clone());
                    return Poll::Ready(Some(Ok(Bytes::from_static(b"."))));
                }
                *slot = Some(cx.waker().clone());
                Poll::Pending
            }
            None => {
                let slot: Arc<Mutex<Option<Waker>>> =
                    Arc::new(Mutex::new(Some(cx.waker().clone())));
                let weak = Arc::downgrade(&slot);
                std::thread::spawn(move || {
                    // Ends when the body is dropped (the slot with it).
                    while let Some(slot) = weak.upgrade() {
                        std::thread::sleep(HOLD_TICK);
                        let waker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some(waker) = waker {
                            waker.wake();
                        }
                    }
                });
                self.ticker = Some(slot);
                Poll::Pending
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.hooks.lock().closed.push(self.id.clone());
    }
}
