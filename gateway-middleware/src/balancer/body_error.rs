//! [`RequestBodyError`]: how a backend tells the balancer, and the layers outside, that it
//! failed because the request's body did.

use std::fmt;
use std::io;

/// The error an app fails with when the request's body failed while the app read it: the
/// client went away or stalled past the server's body timeout, or the body broke a limit. It
/// is the client's doing, not the backend's: a balancer neither counts it against the backend
/// nor sends the request to another (the body is gone), and the failure goes on as it is, so
/// that the layers outside answer it as they answer any app that fails on its input (the
/// server's 413 past its `max_body_size` or 408 past its body timeout,
/// [`BodyLimit`](crate::BodyLimit)'s 413).
///
/// [`Remote`](crate::remote::Remote) fails with it before its head; an app of your own that
/// forwards requests can do the same.
///
/// ```
/// use gateway_core::{Body, Environ, StartResponse};
/// use gateway_middleware::balancer::{Balancer, RequestBodyError};
/// use gateway_testkit::TestClient;
///
/// // A backend that was reading the body when the client went away.
/// let forward = |_: Environ, _: StartResponse| {
///     Body::error(RequestBodyError::new(std::io::Error::other("the client went away")))
/// };
/// let balancer = Balancer::builder().max_fails(1).backend("one", forward).build();
/// let response = TestClient::new(balancer.clone()).post("/").body("...").send();
/// assert_eq!(response.status(), 500, "the failure, for the layers outside to answer");
/// assert!(response.failure().unwrap().contains("the request body failed"));
/// assert_eq!(balancer.status()[0].fails, 0, "not the backend's");
/// ```
#[derive(Debug)]
pub struct RequestBodyError {
    error: io::Error,
}

impl RequestBodyError {
    /// The error reading the body gave.
    pub fn new(error: io::Error) -> RequestBodyError {
        RequestBodyError { error }
    }

    /// Whether `error` is one, or was caused by one (an app's failure that carries it, relayed
    /// by the layers in between).
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<RequestBodyError>() {
                return true;
            }
            next = error.source();
        }
        false
    }
}

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body failed: {}", self.error)
    }
}

impl std::error::Error for RequestBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
