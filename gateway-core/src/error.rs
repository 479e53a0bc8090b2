//! The error of a failed response: [`Error`] and its [`ErrorKind`].

use std::any::Any;
use std::fmt;

use crate::{BoxError, StartError};

/// What went wrong with a response, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The app's body failed (an `Err` frame, or [`Body::error`](crate::Body::error)).
    App,
    /// The app panicked, in its call or while its body was polled.
    Panic,
    /// The body produced data, or ended, and the response had not been started.
    NotStarted,
    /// [`StartResponse::start`](crate::StartResponse::start) refused the head.
    StartRefused,
    /// The app's `Content-Length` header is not a number, or is repeated with different
    /// values.
    InvalidContentLength,
    /// The body ended before the `Content-Length` the app declared.
    ShortBody,
}

/// A failed response: the app failed, panicked, or broke the contract.
///
/// Before the head was sent the driver turns it into a 500 response, which carries the error
/// as an `Arc<Error>` extension; after that it is the error of the
/// [`ResponseBody`](crate::driver::ResponseBody), and the server aborts the response. Either
/// way the driver logs it to the request's error stream.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn app(source: BoxError) -> Self {
        // A body that fails because start refused its head says so.
        if let Some(refused) = source.downcast_ref::<StartError>() {
            return Error::new(ErrorKind::StartRefused, format!("start refused: {refused}"));
        }
        Error {
            kind: ErrorKind::App,
            message: format!("app failed: {source}"),
            source: Some(source),
        }
    }

    pub(crate) fn panic(payload: &(dyn Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string payload");
        Error::new(ErrorKind::Panic, format!("app panicked: {text}"))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the app's body failed.
    pub fn is_app(&self) -> bool {
        self.kind == ErrorKind::App
    }

    /// Whether the app panicked.
    pub fn is_panic(&self) -> bool {
        self.kind == ErrorKind::Panic
    }

    /// Whether the app broke the contract (no start, a refused head, a bad or unkept
    /// Content-Length) rather than failing on its own.
    pub fn is_contract(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::NotStarted
                | ErrorKind::StartRefused
                | ErrorKind::InvalidContentLength
                | ErrorKind::ShortBody
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An inner app's failure that a middleware passes on as its own ([`convert::respond`] of a
/// response the driver made for a failure): the driver outside answers it with the same
/// [`Error`], as [`driver::failure`] then tells the middleware around it, and does not log it a
/// second time. With the error go the headers middleware put on the 500 inside (see
/// [`StartResponse::with_failure_header`](crate::StartResponse::with_failure_header)), for the
/// 500 outside.
///
/// [`convert::respond`]: crate::convert::respond
/// [`driver::failure`]: crate::driver::failure
#[derive(Debug)]
pub(crate) struct Relayed(
    pub(crate) std::sync::Arc<Error>,
    pub(crate) Option<Box<crate::start::FailureHeaders>>,
);

impl fmt::Display for Relayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Relayed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
        check::<StartError>();
    }

    #[test]
    fn app_errors_keep_their_source_and_refusals_are_contract_errors() {
        let e = Error::app("disk full".into());
        assert!(e.is_app());
        assert_eq!(e.to_string(), "app failed: disk full");
        assert!(std::error::Error::source(&e).is_some());
        let refused = Error::app(Box::new(StartError::StatusHeader));
        assert_eq!(refused.kind(), ErrorKind::StartRefused);
        assert!(refused.is_contract());
    }

    #[test]
    fn panic_payloads_become_messages() {
        let e = Error::panic(&"boom");
        assert_eq!(e.to_string(), "app panicked: boom");
        let e = Error::panic(&String::from("bang"));
        assert_eq!(e.to_string(), "app panicked: bang");
        let e = Error::panic(&42);
        assert!(e.is_panic());
    }
}
