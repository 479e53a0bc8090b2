//! The state of each backend: outstanding requests, passive health (failures in a row,
//! ejection, probes) and active health checks.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use gateway_core::{Environ, SharedApp, driver};
use http_body_util::BodyExt;

use super::Shared;

/// A backend and what the balancer knows of it.
pub(super) struct Backend {
    pub(super) name: String,
    pub(super) app: SharedApp,
    pub(super) weight: u32,
    outstanding: AtomicUsize,
    served: AtomicU64,
    fails: AtomicU32,
    /// When it was ejected, if it is.
    ejected_at: Mutex<Option<Instant>>,
    /// Whether a probe request is out (one at a time after a cool-down).
    probing: AtomicBool,
    /// What the last active check said (true without active checks).
    healthy: AtomicBool,
}

/// What [`Balancer::status`](super::Balancer::status) reports of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Requests sent to it and not finished.
    pub outstanding: usize,
    /// Requests sent to it in all (retries included).
    pub served: u64,
    /// Failures in a row.
    pub fails: u32,
    /// Whether passive health has ejected it.
    pub ejected: bool,
    /// Whether the last active health check passed (true without active checks).
    pub healthy: bool,
}

impl Backend {
    pub(super) fn new(name: String, app: SharedApp, weight: u32) -> Backend {
        Backend {
            name,
            app,
            weight,
            outstanding: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            fails: AtomicU32::new(0),
            ejected_at: Mutex::new(None),
            probing: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        }
    }

    fn ejected_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ejected_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn status(&self) -> BackendStatus {
        BackendStatus {
            name: self.name.clone(),
            weight: self.weight,
            outstanding: self.outstanding(),
            served: self.served.load(Ordering::Relaxed),
            fails: self.fails.load(Ordering::Relaxed),
            ejected: self.ejected_at().is_some(),
            healthy: self.healthy.load(Ordering::Relaxed),
        }
    }

    pub(super) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether a request may go to it now: healthy, under its bound, and not ejected, or
    /// ejected with its cool-down over and no probe out yet ([`claim`](Self::claim) decides
    /// which request is the probe).
    pub(super) fn available(
        &self,
        max_outstanding: usize,
        max_fails: u32,
        cool_down: Duration,
    ) -> bool {
        if !self.healthy.load(Ordering::Relaxed) || self.outstanding() >= max_outstanding {
            return false;
        }
        if max_fails == 0 {
            return true;
        }
        match *self.ejected_at() {
            None => true,
            Some(at) => at.elapsed() >= cool_down && !self.probing.load(Ordering::Relaxed),
        }
    }

    /// Takes an available backend for a request, counting it as outstanding at once (so that
    /// requests deciding at the same time cannot all take the last place under
    /// `max_outstanding`): `Some(true)` when the request is the probe of an ejected backend,
    /// `Some(false)` for an ordinary one, `None` when the backend is at its bound, or another
    /// request became its probe in the meantime. The count is given back by
    /// [`end`](Self::end).
    pub(super) fn claim(&self, max_fails: u32, max_outstanding: usize) -> Option<bool> {
        let under = |n: usize| (n < max_outstanding).then_some(n + 1);
        self.outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, under)
            .ok()?;
        if max_fails == 0 || self.ejected_at().is_none() {
            return Some(false);
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(true)
    }

    /// How long until an ejected backend may be probed (`None` if it is not ejected).
    pub(super) fn ejected_for(&self, cool_down: Duration) -> Option<Duration> {
        self.ejected_at()
            .map(|at| cool_down.saturating_sub(at.elapsed()))
    }

    /// A request claimed (see [`claim`](Self::claim)) starts.
    pub(super) fn begin(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ends (its response body ended or was dropped). If it was the probe and its
    /// answer was never recorded (the client left first), the next request may probe instead.
    pub(super) fn end(&self, probe: bool) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Counts an answer for passive health: a success brings the backend back, the
    /// `max_fails`-th failure in a row (or a failed probe) ejects it.
    pub(super) fn record(&self, failure: bool, max_fails: u32) {
        if max_fails == 0 {
            return;
        }
        let mut ejected_at = self.ejected_at();
        let probe = self.probing.swap(false, Ordering::AcqRel);
        if !failure {
            self.fails.store(0, Ordering::Relaxed);
            *ejected_at = None;
            return;
        }
        let fails = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if probe || fails >= max_fails {
            *ejected_at = Some(Instant::now());
        }
    }

    /// The result of an active check.
    fn checked(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            // Back: passive health starts afresh too.
            self.fails.store(0, Ordering::Relaxed);
            *self.ejected_at() = None;
        }
    }
}

/// Active health checks: a thread that checks every backend at each interval and ends when the
/// balancer is dropped.
pub(super) struct HealthCheck {
    pub(super) path: String,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

impl HealthCheck {
    pub(super) fn start(self, shared: Weak<Shared>) {
        let spawned = std::thread::Builder::new()
            .name("gateway-health".into())
            .spawn(move || {
                loop {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    for backend in &shared.backends {
                        let healthy = gateway_core::block_on(self.check(backend));
                        backend.checked(healthy);
                    }
                    drop(shared);
                    std::thread::sleep(self.interval);
                }
            });
        // Without the thread the backends stay as they are: healthy, passive health at work.
        drop(spawned);
    }

    /// One check: `GET path`, answered 2xx or 3xx, body read whole, within the timeout.
    async fn check(&self, backend: &Backend) -> bool {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        environ.set("SCRIPT_NAME", "");
        environ.set("PATH_INFO", self.path.clone());
        environ.set("QUERY_STRING", "");
        environ.set("REQUEST_URI", self.path.clone());
        environ.set("SERVER_NAME", "localhost");
        environ.set("SERVER_PORT", "80");
        environ.set("SERVER_PROTOCOL", "HTTP/1.1");
        environ.set("HTTP_USER_AGENT", "gateway-health-check");
        environ.set("CONTENT_LENGTH", "0");
        let check = async {
            let response = driver::call(&backend.app, environ).await;
            let good = response.status().is_success() || response.status().is_redirection();
            good && response.into_body().collect().await.is_ok()
        };
        let deadline = futures_timer::Delay::new(self.timeout);
        let mut check = pin!(check);
        let mut deadline = pin!(deadline);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(good) = check.as_mut().poll(cx) {
                return Poll::Ready(good);
            }
            deadline.as_mut().poll(cx).map(|()| false)
        })
        .await
    }
}
