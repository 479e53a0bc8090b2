//! A minimal executor for the blocking views of async streams.

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
}

/// Runs a future to completion on the current thread, parking the thread while it waits.
///
/// This is how the blocking views of the contract ([`Input`](crate::Input)'s `Read` and
/// `BufRead`) wait for an async source. It needs no runtime, so it works on a worker thread of
/// any server; do not call it on the thread of an async runtime's event loop, where waiting
/// would stall every task on that thread.
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
