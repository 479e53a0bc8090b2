//! [`Unsent`]: how a backend tells the balancer that a request never reached its server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A mark the balancer puts in the extensions of each attempt's environ, which a backend sets
/// when it fails before any part of the request reached its server (it could not connect).
///
/// A failed request whose method is not idempotent goes to another backend only when its
/// attempt was marked so: after an answer, even a 502, 503 or 504, the first server may have
/// acted on it (a request that timed out may still be running), and sending it again could run
/// it twice. [`Remote`](crate::remote::Remote) marks it when it cannot connect, or when a new
/// connection closes before the request is written to it; an app of your own that forwards
/// requests can do the same.
///
/// ```
/// use gateway_core::{Body, Environ, StartResponse};
/// use gateway_middleware::balancer::{Balancer, Unsent};
/// use gateway_testkit::TestClient;
///
/// // A backend whose server is down: the request never left, and it says so.
/// let down = |environ: Environ, start: StartResponse| {
///     if let Some(unsent) = environ.extensions().get::<Unsent>() {
///         unsent.mark();
///     }
///     let _ = start.start(http::StatusCode::BAD_GATEWAY, http::HeaderMap::new());
///     Body::from("")
/// };
/// let up = |_: Environ, start: StartResponse| {
///     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
///     Body::from("ordered")
/// };
/// let balancer = Balancer::builder().backend("down", down).backend("up", up).build();
/// let response = TestClient::new(balancer).post("/orders").body("one").send();
/// assert_eq!(response.text(), "ordered");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Unsent(Arc<AtomicBool>);

impl Unsent {
    /// A mark not set yet.
    pub fn new() -> Unsent {
        Unsent::default()
    }

    /// Says that the request never reached the backend's server, so it may be sent elsewhere.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`mark`](Unsent::mark) was called on this mark or a clone of it.
    ///
    /// ```
    /// use gateway_middleware::balancer::Unsent;
    ///
    /// let unsent = Unsent::new();
    /// assert!(!unsent.is_marked());
    /// unsent.clone().mark();
    /// assert!(unsent.is_marked());
    /// ```
    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
