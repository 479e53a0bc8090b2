//! Load balancing: [`Balancer`], an app that sends each request to one of several backend
//! apps (in-process apps, or [`Remote`](crate::remote::Remote) servers), by a [`Strategy`],
//! and keeps away from the ones that fail.
//!
//! - **Passive health**: a backend whose answers fail [`max_fails`](BalancerBuilder::max_fails)
//!   times in a row is ejected for a [`cool_down`](BalancerBuilder::cool_down); then one
//!   request is let through as a probe, and its success brings the backend back. A failure is
//!   an app error before the head, or a 502, 503 or 504 (what a remote backend answers when
//!   its server cannot be reached, is overloaded or too slow); but an app error that is the
//!   request body's ([`RequestBodyError`]) is the client's, passed on as it is, and neither
//!   counted nor retried.
//! - **Active health**: with [`health_check`](BalancerBuilder::health_check), a thread sends
//!   `GET path` to every backend at an interval; a backend that does not answer 2xx or 3xx in
//!   time is out until it does.
//! - **Retries**: a failed request goes to another backend when it can be sent again without
//!   harm: its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or it never
//!   reached the first backend's server (a [`Remote`](crate::remote::Remote) that could not
//!   connect, or whose new connection closed before the request was written, says so with
//!   [`Unsent`]); and the part of the body read so far is still held (up
//!   to [`retry_buffer`](BalancerBuilder::retry_buffer)). A POST answered 502, 503 or 504 is
//!   not sent again, even with its body unread: the server may have acted on it, and a 504 may
//!   come while it still runs. Each backend is tried once at most.
//! - **Bounds**: at most [`max_outstanding`](BalancerBuilder::max_outstanding) requests at once
//!   per backend; a request that finds no backend available gets 503 with `Retry-After`.
//!
//! ```
//! use gateway_core::{Body, Environ, StartResponse};
//! use gateway_middleware::balancer::{Balancer, Strategy};
//! use gateway_testkit::TestClient;
//!
//! fn named(name: &'static str) -> impl gateway_core::App {
//!     move |_: Environ, start: StartResponse| {
//!         let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!         Body::from(name)
//!     }
//! }
//! let balancer = Balancer::builder()
//!     .backend("a", named("a"))
//!     .backend("b", named("b"))
//!     .strategy(Strategy::RoundRobin)
//!     .build();
//! let client = TestClient::new(balancer);
//! let answers: Vec<String> = (0..4).map(|_| client.get("/").send().text()).collect();
//! assert_eq!(answers, ["a", "b", "a", "b"]);
//! ```

mod body_error;
mod health;
mod replay;
mod strategy;
mod unsent;

use std::fmt;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::convert::respond;
use gateway_core::driver::{self, ResponseBody};
use gateway_core::{App, Body, Environ, SharedApp, StartResponse};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;

pub use body_error::RequestBodyError;
pub use health::BackendStatus;
pub use strategy::{HashKey, HashRing, POINTS_PER_WEIGHT, Strategy, hash64};

/// The largest weight of a backend: ten backends of this weight put 1.6 million points on the
/// hash ring. Larger weights are taken as this one.
pub const MAX_WEIGHT: u32 = 1000;
pub use unsent::Unsent;

use crate::plain::plain;
use health::{Backend, HealthCheck};
use replay::Replay;

/// How many failures in a row eject a backend, by default.
pub const DEFAULT_MAX_FAILS: u32 = 3;
/// How long an ejected backend stays out by default before a probe.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(10);
/// How much of a request body is kept by default so an idempotent request can be retried.
pub const DEFAULT_RETRY_BUFFER: usize = 64 * 1024;
/// How long an active health check may take by default.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The settings of a [`Balancer`]; made by [`Balancer::builder`].
pub struct BalancerBuilder {
    backends: Vec<(String, SharedApp, u32)>,
    strategy: Strategy,
    max_fails: u32,
    cool_down: Duration,
    max_outstanding: Option<usize>,
    retry_buffer: usize,
    health: Option<(String, Duration, Duration)>,
    backend_header: Option<HeaderName>,
}

impl fmt::Debug for BalancerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.backends.iter().map(|(n, _, _)| n.as_str()).collect();
        f.debug_struct("BalancerBuilder")
            .field("backends", &names)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl BalancerBuilder {
    /// Adds a backend of weight 1. The name identifies it in logs, in
    /// [`Balancer::status`] and on the hash ring (keep it stable: a remote backend's URL).
    pub fn backend(self, name: impl Into<String>, app: impl App + 'static) -> Self {
        self.weighted_backend(name, app, 1)
    }

    /// Adds a backend with a weight (for [`Strategy::Weighted`], [`Strategy::LeastOutstanding`]
    /// and the hash ring; 0 is taken as 1, and more than [`MAX_WEIGHT`] as that).
    pub fn weighted_backend(
        mut self,
        name: impl Into<String>,
        app: impl App + 'static,
        weight: u32,
    ) -> Self {
        self.backends
            .push((name.into(), Arc::new(app), weight.clamp(1, MAX_WEIGHT)));
        self
    }

    /// The strategy (default [`Strategy::RoundRobin`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Failures in a row that eject a backend (default [`DEFAULT_MAX_FAILS`]; 0 never ejects).
    pub fn max_fails(mut self, max_fails: u32) -> Self {
        self.max_fails = max_fails;
        self
    }

    /// How long an ejected backend stays out before a probe (default [`DEFAULT_COOL_DOWN`]).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// At most this many requests at once per backend (default: no bound).
    pub fn max_outstanding(mut self, max: usize) -> Self {
        self.max_outstanding = Some(max);
        self
    }

    /// How much of a request body is kept so an idempotent request can be sent again to
    /// another backend (default [`DEFAULT_RETRY_BUFFER`]).
    pub fn retry_buffer(mut self, bytes: usize) -> Self {
        self.retry_buffer = bytes;
        self
    }

    /// Active health checks: `GET path` to each backend every `interval`, answered 2xx or 3xx
    /// within [`DEFAULT_HEALTH_TIMEOUT`].
    pub fn health_check(mut self, path: impl Into<String>, interval: Duration) -> Self {
        self.health = Some((path.into(), interval, DEFAULT_HEALTH_TIMEOUT));
        self
    }

    /// The timeout of each active health check.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        if let Some(health) = &mut self.health {
            health.2 = timeout;
        }
        self
    }

    /// Names the backend that answered in a response header (off by default: it tells
    /// clients about the inside of a deployment; useful in tests and staging).
    pub fn backend_header(mut self, name: HeaderName) -> Self {
        self.backend_header = Some(name);
        self
    }

    /// The balancer; with health checks, their thread starts now (and ends with the balancer).
    pub fn build(self) -> Balancer {
        // The ring (160 points per unit of weight) only for the strategy that walks it.
        let nodes = self
            .backends
            .iter()
            .map(|(name, _, weight)| (name.as_str(), *weight));
        let ring = match self.strategy {
            Strategy::Hash(_) => HashRing::new(nodes),
            _ => HashRing::new(std::iter::empty()),
        };
        let backends: Vec<Backend> = self
            .backends
            .into_iter()
            .map(|(name, app, weight)| Backend::new(name, app, weight))
            .collect();
        let shared = Arc::new(Shared {
            smooth: Mutex::new(vec![0; backends.len()]),
            backends,
            strategy: self.strategy,
            ring,
            next: AtomicUsize::new(0),
            max_fails: self.max_fails,
            cool_down: self.cool_down,
            max_outstanding: self.max_outstanding.unwrap_or(usize::MAX),
            retry_buffer: self.retry_buffer,
            backend_header: self.backend_header,
        });
        if let Some((path, interval, timeout)) = self.health {
            HealthCheck {
                path,
                interval,
                timeout,
            }
            .start(Arc::downgrade(&shared));
        }
        Balancer { shared }
    }
}

/// The balancing app; see the [module](self).
#[derive(Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.shared.strategy)
            .field("backends", &self.status())
            .finish()
    }
}

struct Shared {
    backends: Vec<Backend>,
    strategy: Strategy,
    ring: HashRing,
    /// The round-robin position.
    next: AtomicUsize,
    /// The current weights of smooth weighted round robin.
    smooth: Mutex<Vec<i64>>,
    max_fails: u32,
    cool_down: Duration,
    max_outstanding: usize,
    retry_buffer: usize,
    backend_header: Option<HeaderName>,
}

impl Balancer {
    /// A balancer with no backend yet, round robin, the default health settings.
    pub fn builder() -> BalancerBuilder {
        BalancerBuilder {
            backends: Vec::new(),
            strategy: Strategy::RoundRobin,
            max_fails: DEFAULT_MAX_FAILS,
            cool_down: DEFAULT_COOL_DOWN,
            max_outstanding: None,
            retry_buffer: DEFAULT_RETRY_BUFFER,
            health: None,
            backend_header: None,
        }
    }

    /// The state of each backend, in the order they were added.
    pub fn status(&self) -> Vec<BackendStatus> {
        self.shared.backends.iter().map(Backend::status).collect()
    }
}

impl Shared {
    /// The next backend for a request, among those available and not `tried`, claimed; and
    /// whether the request is its probe.
    fn pick(&self, key: Option<&[u8]>, tried: &[usize]) -> Option<(usize, bool)> {
        let mut lost = Vec::new();
        loop {
            let index = self.choose(key, |i| !tried.contains(&i) && !lost.contains(&i))?;
            if let Some(probe) = self.backends[index].claim(self.max_fails, self.max_outstanding) {
                return Some((index, probe));
            }
            // Another request became its probe, or took its last place, first.
            lost.push(index);
        }
    }

    /// The strategy's choice among the available backends that `allowed` lets through.
    fn choose(&self, key: Option<&[u8]>, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        let open = |i: usize| {
            allowed(i)
                && self.backends[i].available(self.max_outstanding, self.max_fails, self.cool_down)
        };
        match (&self.strategy, key) {
            (Strategy::Hash(_), Some(key)) => self.ring.walk(key).find(|&i| open(i)),
            (Strategy::Weighted, _) => {
                let mut current = self.smooth.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| open(i)) {
                    let weight = i64::from(self.backends[i].weight);
                    current[i] += weight;
                    total += weight;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(best) = best {
                    current[best] -= total;
                }
                best
            }
            (Strategy::LeastOutstanding, _) => {
                // Ties go round robin, so equal backends share the load.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let load = |i: usize| {
                    let backend = &self.backends[i];
                    (backend.outstanding() as u64 + 1) * 1_000_000 / u64::from(backend.weight)
                };
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| open(i))
                    .min_by_key(|&i| load(i))
            }
            _ => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| open(i))
            }
        }
    }

    /// What `Retry-After` says when no backend is available: until the first ejected one may
    /// be probed, at least one second.
    fn retry_after(&self) -> u64 {
        self.backends
            .iter()
            .filter_map(|backend| backend.ejected_for(self.cool_down))
            .min()
            .map_or(1, |wait| wait.as_secs_f64().ceil() as u64)
            .max(1)
    }
}

/// Whether a method may be sent twice with the effect of once (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Whether a backend's answer counts as its failure.
fn failed<B>(response: &Response<B>) -> bool {
    match driver::failure(response) {
        // The request's body failed: the client's doing.
        Some(error) => !RequestBodyError::caused(error),
        None => matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
    }
}

/// Whether an answer says nothing of the backend either way: the request's own body failed
/// (the client's doing), so the backend may not even have been reached.
fn says_nothing<B>(response: &Response<B>) -> bool {
    driver::failure(response).is_some_and(|error| RequestBodyError::caused(error))
}

impl App for Balancer {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let shared = Arc::clone(&self.shared);
        let key = match &shared.strategy {
            Strategy::Hash(key) => key.of(&environ).map(|k| Bytes::copy_from_slice(&k)),
            _ => None,
        };
        let idempotent = is_idempotent(environ.request_method());
        let replay = Replay::new(environ.take_input(), shared.retry_buffer);
        Body::from_future(async move {
            let mut tried = Vec::new();
            let mut last: Option<(Response<ResponseBody>, Outstanding)> = None;
            while let Some((index, probe)) = shared.pick(key.as_deref(), &tried) {
                tried.push(index);
                let backend = &shared.backends[index];
                let outstanding = Outstanding::new(Arc::clone(&shared), index, probe);
                let unsent = Unsent::new();
                let mut attempt = environ.copy_with_input(replay.input());
                attempt.extensions_mut().insert(unsent.clone());
                let response = driver::call(&backend.app, attempt).await;
                let failure = failed(&response);
                // Neither a failure nor a success: an ejected backend's probe that met a broken
                // body does not bring it back, nor does it end a streak of failures.
                if !says_nothing(&response) {
                    backend.record(failure, shared.max_fails);
                }
                // An unread body says nothing about a request that may have been acted on
                // without it: only a request that never reached a server is safe to send
                // again whatever its method.
                let again = (idempotent || unsent.is_marked()) && replay.replayable();
                if failure && again {
                    let _ = writeln!(
                        environ.errors(),
                        "balancer: backend {} failed ({}), trying another",
                        backend.name,
                        response.status()
                    );
                    // The last failure is kept, body and all, in case no other backend is
                    // left; if it is still sending the request body, it stops as the next
                    // attempt begins reading it (see `Replay`).
                    last = Some((response, outstanding));
                    continue;
                }
                return Ok(forward(start, response, outstanding));
            }
            Ok(match last {
                Some((response, outstanding)) => forward(start, response, outstanding),
                None => {
                    let mut headers = HeaderMap::new();
                    headers.insert(RETRY_AFTER, HeaderValue::from(shared.retry_after()));
                    let _ = writeln!(environ.errors(), "balancer: no backend available");
                    plain(start, StatusCode::SERVICE_UNAVAILABLE, headers)
                }
            })
        })
    }
}

/// Sends a backend's response on, counting it outstanding until its body ends.
fn forward(
    start: StartResponse,
    mut response: Response<ResponseBody>,
    outstanding: Outstanding,
) -> Body {
    if let Some(name) = &outstanding.shared.backend_header {
        let backend = &outstanding.shared.backends[outstanding.index].name;
        if let Ok(value) = HeaderValue::from_str(backend) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    respond(
        start,
        response.map(|body| Tracked {
            body,
            _outstanding: outstanding,
        }),
    )
}

/// A request counted against its backend until dropped (and, for a probe, holding the probe).
struct Outstanding {
    shared: Arc<Shared>,
    index: usize,
    probe: bool,
}

impl Outstanding {
    fn new(shared: Arc<Shared>, index: usize, probe: bool) -> Outstanding {
        shared.backends[index].begin();
        Outstanding {
            shared,
            index,
            probe,
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.shared.backends[self.index].end(self.probe);
    }
}

/// A backend's response body, its request outstanding until the body is dropped.
struct Tracked {
    body: ResponseBody,
    _outstanding: Outstanding,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = gateway_core::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
