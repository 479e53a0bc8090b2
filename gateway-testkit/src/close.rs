//! Watching response bodies for their drop (WSGI's `close()`) across a whole middleware stack.
//!
//! The body the test client gets back is the outermost one, and the client drops it itself, so
//! its drop says nothing about the app's own body: a middleware may leak that one (forget it,
//! or keep it in a cycle) and still hand the client a body that is dropped. So the client puts
//! a [`CloseProbe`] into the environ's extensions, which travel inward with the environ, and
//! each piece of the testkit that makes or wraps an app's body deeper in the stack (a
//! [`Validator`](crate::Validator), a [`MockApp`](crate::MockApp)) registers that body with the
//! probe. The probe then knows whether every body it watched was dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::{Body, BoxError, Environ};
use http_body::{Frame, SizeHint};

/// How many bodies were registered with a probe, and how many of them were dropped.
#[derive(Debug, Default)]
struct Counts {
    watched: AtomicUsize,
    dropped: AtomicUsize,
}

/// Counts the bodies registered with it and their drops; clones share the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloseProbe {
    counts: Arc<Counts>,
}

impl CloseProbe {
    /// The probe a test client put into `environ`, if any (there is none under a real server).
    pub(crate) fn of(environ: &Environ) -> Option<CloseProbe> {
        environ.extensions().get::<CloseProbe>().cloned()
    }

    /// Puts the probe into `environ`, for the apps deeper in the stack to find.
    pub(crate) fn install(&self, environ: &mut Environ) {
        environ.extensions_mut().insert(self.clone());
    }

    /// Registers one body: the guard goes into the body, and its drop is the body's drop.
    pub(crate) fn guard(&self) -> CloseGuard {
        self.counts.watched.fetch_add(1, Ordering::SeqCst);
        CloseGuard {
            probe: self.clone(),
        }
    }

    /// Wraps `body` so that its drop is counted.
    pub(crate) fn watch(&self, body: Body) -> Body {
        Body::new(Watched {
            body,
            _guard: self.guard(),
        })
    }

    /// Whether at least one body was registered and every registered body was dropped.
    pub(crate) fn all_dropped(&self) -> bool {
        let watched = self.counts.watched.load(Ordering::SeqCst);
        watched > 0 && self.counts.dropped.load(Ordering::SeqCst) == watched
    }
}

/// Held by a watched body; counts the body's drop on its probe.
#[derive(Debug)]
pub(crate) struct CloseGuard {
    probe: CloseProbe,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.probe.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A body with a guard: it yields what its body yields, and its drop is counted.
struct Watched {
    body: Body,
    _guard: CloseGuard,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_counts_drops_of_the_bodies_it_watches() {
        let probe = CloseProbe::default();
        assert!(
            !probe.all_dropped(),
            "nothing watched, nothing to vouch for"
        );
        let first = probe.watch(Body::from("a"));
        let second = probe.watch(Body::empty());
        drop(first);
        assert!(!probe.all_dropped());
        std::mem::forget(second);
        assert!(!probe.all_dropped(), "a leaked body is never dropped");
        let mut environ = Environ::new();
        probe.install(&mut environ);
        let found = CloseProbe::of(&environ).unwrap();
        assert!(Arc::ptr_eq(&found.counts, &probe.counts));
    }
}
