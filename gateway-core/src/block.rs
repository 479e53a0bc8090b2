//! A minimal executor for the blocking views of async streams.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    /// Whether this thread runs an event loop (see [`mark_event_loop_thread`]).
    static EVENT_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that runs an async runtime's event loop. From then on, a
/// blocking read of an [`Input`](crate::Input) on this thread that would have to wait for the
/// request body fails at once, with [`std::io::ErrorKind::WouldBlock`] and a message that says
/// why, instead of parking the thread: there, the wait would stall every task of the thread,
/// the one that was to deliver the body's bytes included, and so would never end.
///
/// Servers that run apps on their event loop (a non-blocking app) call it on the loop's
/// threads, so that an app that reads its body synchronously there fails its request with a
/// clear error (the driver's 500) rather than hanging the server. A read of bytes that are
/// there already still succeeds. The launcher of `gateway-servers` marks its runtime's threads;
/// a program that builds its own runtime can mark them in tokio's `on_thread_start`.
///
/// ```
/// use std::io::Read;
///
/// std::thread::spawn(|| {
///     gateway_core::mark_event_loop_thread();
///     assert!(gateway_core::is_event_loop_thread());
///     // A body whose bytes have not come: the read fails instead of waiting for ever.
///     let body = gateway_core::Body::from_future(std::future::pending());
///     let mut input = gateway_core::Input::from_body(body);
///     let error = input.read(&mut [0; 8]).unwrap_err();
///     assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
/// })
/// .join()
/// .unwrap();
/// assert!(!gateway_core::is_event_loop_thread());
/// ```
pub fn mark_event_loop_thread() {
    EVENT_LOOP.with(|marked| marked.set(true));
}

/// Whether the calling thread was marked with [`mark_event_loop_thread`].
pub fn is_event_loop_thread() -> bool {
    EVENT_LOOP.with(Cell::get)
}

/// Runs a future to completion on the current thread, parking the thread while it waits.
///
/// This is how the blocking views of the contract ([`Input`](crate::Input)'s `Read` and
/// `BufRead`) wait for an async source. It needs no runtime, so it works on a worker thread of
/// any server; do not call it on the thread of an async runtime's event loop, where waiting
/// would stall every task on that thread (`Input` does not, on a thread marked with
/// [`mark_event_loop_thread`]).
///
/// ```
/// assert_eq!(gateway_core::block_on(async { 40 + 2 }), 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(output) => return output,
                Poll::Pending => thread::park(),
            }
        }
    })
}
