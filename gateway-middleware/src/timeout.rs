//! A deadline for the head of the response: [`Timeout`].
//!
//! If the app has not decided its head (status and headers, with the first chunk or the end of
//! its body) within the duration, the answer is 504 Gateway Timeout and the app's body is
//! dropped (its `close()`). This bounds what an app waits for inside its body: an async lookup, a
//! remote backend. A blocking app that holds its thread in the call itself is bounded by the
//! server's hard timeout instead, since no middleware can take a thread back. The timer runs on
//! a timer thread of its own (`futures-timer`), so it needs no async runtime.
//!
//! ```
//! use std::time::Duration;
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse};
//! use gateway_middleware::Timeout;
//!
//! let app = Builder::new()
//!     .with(Timeout::new(Duration::from_millis(50)))
//!     .app(|_: Environ, _: StartResponse| Body::from_future(std::future::pending()));
//! let response = gateway_core::block_on(driver::call(&app, Environ::new()));
//! assert_eq!(response.status(), 504);
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use gateway_core::convert::respond;
use gateway_core::{App, Body, Environ, Middleware, StartResponse, driver};
use http::{HeaderMap, StatusCode};

use crate::plain::plain;

/// The middleware: 504 when the head takes longer than the duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    duration: Duration,
}

impl Timeout {
    /// A deadline of `duration` from the call.
    pub const fn new(duration: Duration) -> Self {
        Timeout { duration }
    }
}

impl<A> Middleware<A> for Timeout {
    type App = TimeoutApp<A>;

    fn wrap(&self, app: A) -> TimeoutApp<A> {
        TimeoutApp {
            inner: app,
            duration: self.duration,
        }
    }
}

/// An app with a deadline for its head; made by [`Timeout`].
#[derive(Debug, Clone)]
pub struct TimeoutApp<A> {
    inner: A,
    duration: Duration,
}

impl<A: App> App for TimeoutApp<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let deadline = futures_timer::Delay::new(self.duration);
        let response = driver::call(&self.inner, environ);
        Body::from_future(async move {
            let mut response = pin!(response);
            let mut deadline = pin!(deadline);
            let outcome = std::future::poll_fn(|cx| {
                if let Poll::Ready(response) = response.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                deadline.as_mut().poll(cx).map(|()| None)
            })
            .await;
            Ok(match outcome {
                Some(response) => respond(start, response),
                None => plain(start, StatusCode::GATEWAY_TIMEOUT, HeaderMap::new()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Builder;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_slow_head_is_a_504_and_the_body_is_dropped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let app = Builder::new()
            .with(Timeout::new(Duration::from_millis(20)))
            .app(move |_: Environ, _: StartResponse| {
                let guard = Flag(flag.clone());
                Body::from_future(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    Ok(Body::empty())
                })
            });
        let response = gateway_core::block_on(driver::call(&app, Environ::new()));
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_head_in_time_passes() {
        let app = Builder::new()
            .with(Timeout::new(Duration::from_secs(30)))
            .app(|_: Environ, start: StartResponse| {
                Body::from_future(async move {
                    futures_timer::Delay::new(Duration::from_millis(5)).await;
                    start.start(StatusCode::ACCEPTED, HeaderMap::new())?;
                    Ok(Body::from("done"))
                })
            });
        let response = gateway_core::block_on(driver::call(&app, Environ::new()));
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
}
