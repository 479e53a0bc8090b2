//! The balancer with in-process backends: strategies, passive and active health, retries,
//! bounds, and the contract on both its sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway_core::{App, Body, Builder, Environ, StartResponse, driver};
use gateway_middleware::balancer::{
    Balancer, BalancerBuilder, HashKey, HashRing, RequestBodyError, Strategy, Unsent,
};
use gateway_testkit::{Mode, TestClient, Validator};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

/// A backend that answers its name; counts the requests it got.
#[derive(Clone)]
struct Named {
    name: &'static str,
    status: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    read_body: bool,
    unreached: bool,
}

impl Named {
    fn new(name: &'static str) -> Named {
        Named {
            name,
            status: Arc::new(AtomicUsize::new(200)),
            calls: Arc::new(AtomicUsize::new(0)),
            read_body: true,
            unreached: false,
        }
    }

    fn answering(self, status: u16) -> Named {
        self.status.store(usize::from(status), Ordering::SeqCst);
        self
    }

    fn not_reading(mut self) -> Named {
        self.read_body = false;
        self
    }

    /// Says its server was never reached, as a remote backend that cannot connect does.
    fn unreached(mut self) -> Named {
        self.unreached = true;
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl App for Named {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut body = Vec::new();
        if self.read_body {
            std::io::Read::read_to_end(environ.input(), &mut body).unwrap();
        }
        if self.unreached {
            environ
                .extensions()
                .get::<Unsent>()
                .expect("the balancer's mark")
                .mark();
        }
        let status = u16::try_from(self.status.load(Ordering::SeqCst)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-backend", HeaderValue::from_static(self.name));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let _ = start.start(StatusCode::from_u16(status).unwrap(), headers);
        Body::from(format!("{} {}", self.name, String::from_utf8_lossy(&body)))
    }
}

fn balancer(backends: &[&Named], strategy: Strategy) -> BalancerBuilder {
    let mut builder = Balancer::builder().strategy(strategy);
    for backend in backends {
        builder = builder.backend(backend.name, (*backend).clone());
    }
    builder
}

fn names(client: &TestClient<impl App>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            client
                .get("/")
                .send()
                .header("x-backend")
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn smooth_weighted_round_robin_spreads_by_weight() {
    let (a, b, c) = (Named::new("a"), Named::new("b"), Named::new("c"));
    let balancer = Balancer::builder()
        .strategy(Strategy::Weighted)
        .weighted_backend("a", a, 5)
        .weighted_backend("b", b, 1)
        .weighted_backend("c", c, 1)
        .build();
    let client = TestClient::new(balancer);
    assert_eq!(
        names(&client, 14),
        [
            "a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"
        ]
    );
    // The guide's example: weights 2, 1, 1.
    let (a, b, c) = (Named::new("a"), Named::new("b"), Named::new("c"));
    let balancer = Balancer::builder()
        .strategy(Strategy::Weighted)
        .weighted_backend("a", a, 2)
        .weighted_backend("b", b, 1)
        .weighted_backend("c", c, 1)
        .build();
    let client = TestClient::new(balancer);
    assert_eq!(names(&client, 8), ["a", "b", "c", "a", "a", "b", "c", "a"]);
}

#[test]
fn a_huge_weight_is_taken_as_the_largest_and_builds_at_once() {
    // Unbounded, the hash ring would get 160 points per unit: billions for this weight.
    let key =
        gateway_middleware::balancer::HashKey::Header(http::HeaderName::from_static("x-user"));
    let balancer = Balancer::builder()
        .strategy(Strategy::Hash(key))
        .backend_header(http::HeaderName::from_static("x-backend"))
        .weighted_backend("a", Named::new("a"), u32::MAX)
        .backend("b", Named::new("b"))
        .build();
    let client = TestClient::new(balancer);
    let status = client.get("/").header("x-user", "1").send().status();
    assert_eq!(status, 200);
}

#[test]
fn round_robin_passes_the_validator_on_both_sides() {
    let outer = Validator::new(Mode::Strict);
    let outer_report = outer.report();
    let inner = Validator::new(Mode::Strict);
    let inner_report = inner.report();
    let (a, b) = (Named::new("a"), Named::new("b"));
    let balancer = Balancer::builder()
        .backend("a", Builder::new().with(inner.clone()).app(a))
        .backend("b", Builder::new().with(inner).app(b))
        .build();
    let client = TestClient::new(Builder::new().with(outer).app(balancer));
    for _ in 0..4 {
        let response = client.post("/x?y").body("payload").send();
        assert_eq!(response.status(), 200);
        assert!(response.text().ends_with(" payload"), "{}", response.text());
    }
    assert!(outer_report.is_clean(), "{:?}", outer_report.violations());
    assert!(inner_report.is_clean(), "{:?}", inner_report.violations());
}

/// A backend whose responses do not end until `release` is set.
#[derive(Clone)]
struct Holding {
    release: Arc<AtomicBool>,
}

impl App for Holding {
    fn call(&self, _: Environ, start: StartResponse) -> Body {
        let mut headers = HeaderMap::new();
        headers.insert("x-backend", HeaderValue::from_static("held"));
        let _ = start.start(StatusCode::OK, headers);
        let release = Arc::clone(&self.release);
        let mut first = true;
        Body::from_stream(futures_stream(move |cx| {
            if std::mem::take(&mut first) {
                return std::task::Poll::Ready(Some(Ok::<_, std::io::Error>("start")));
            }
            if release.load(Ordering::SeqCst) {
                std::task::Poll::Ready(None)
            } else {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }))
    }
}

/// A stream from a poll function.
fn futures_stream<T>(
    poll: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Send + Unpin,
) -> impl futures_core::Stream<Item = T> + Send {
    struct PollStream<F>(F);
    impl<F, T> futures_core::Stream for PollStream<F>
    where
        F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
    {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            (self.0)(cx)
        }
    }
    PollStream(poll)
}

fn get(path: &str) -> Environ {
    let mut environ = Environ::new();
    environ.set("REQUEST_METHOD", "GET");
    environ.set("PATH_INFO", path.to_owned());
    environ.set("SERVER_NAME", "test");
    environ.set("SERVER_PORT", "80");
    environ.set("SERVER_PROTOCOL", "HTTP/1.1");
    environ
}

#[test]
fn least_outstanding_avoids_a_busy_backend() {
    let release = Arc::new(AtomicBool::new(false));
    let held = Holding {
        release: Arc::clone(&release),
    };
    let free = Named::new("free");
    let balancer = Balancer::builder()
        .strategy(Strategy::LeastOutstanding)
        .backend("held", held)
        .backend("free", free.clone())
        .build();
    // Both idle: the tie goes to the first in turn. Its response stays open.
    let open = gateway_core::block_on(driver::call(&balancer, get("/")));
    assert_eq!(open.headers()["x-backend"], "held");
    assert_eq!(balancer.status()[0].outstanding, 1);
    let client = TestClient::new(balancer.clone());
    assert_eq!(names(&client, 5), ["free"; 5]);
    // Once it ends, both share the load again.
    release.store(true, Ordering::SeqCst);
    drop(open);
    assert_eq!(balancer.status()[0].outstanding, 0);
    let seen = names(&client, 4);
    assert!(seen.contains(&"held".to_owned()), "{seen:?}");
    assert_eq!(
        free.calls(),
        5 + seen.iter().filter(|n| *n == "free").count()
    );
}

#[test]
fn no_backend_available_is_503_with_retry_after() {
    let release = Arc::new(AtomicBool::new(false));
    let balancer = Balancer::builder()
        .backend(
            "held",
            Holding {
                release: Arc::clone(&release),
            },
        )
        .max_outstanding(1)
        .build();
    let held = gateway_core::block_on(driver::call(&balancer, get("/")));
    assert_eq!(held.status(), 200);
    let response = TestClient::new(balancer.clone()).get("/").send();
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    release.store(true, Ordering::SeqCst);
    drop(held);
    let empty = Balancer::builder().build();
    assert_eq!(TestClient::new(empty).get("/").send().status(), 503);
}

#[test]
fn max_outstanding_holds_when_requests_decide_at_the_same_time() {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counting, highest) = (Arc::clone(&now), Arc::clone(&most));
    let slow = move |_: Environ, start: StartResponse| {
        let at_once = counting.fetch_add(1, Ordering::SeqCst) + 1;
        highest.fetch_max(at_once, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(100));
        counting.fetch_sub(1, Ordering::SeqCst);
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from("ok")
    };
    let balancer = Balancer::builder()
        .backend("slow", slow)
        .max_outstanding(1)
        .build();
    let ready = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (balancer, ready) = (balancer.clone(), Arc::clone(&ready));
            std::thread::spawn(move || {
                ready.wait();
                TestClient::new(balancer).get("/").send().status().as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(most.load(Ordering::SeqCst), 1, "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.iter().all(|s| [200, 503].contains(s)));
}

#[test]
fn failing_backends_are_retried_ejected_and_probed_after_the_cool_down() {
    let bad = Named::new("bad").answering(502);
    let good = Named::new("good");
    let balancer = balancer(&[&bad, &good], Strategy::RoundRobin)
        .max_fails(2)
        .cool_down(Duration::from_millis(300))
        .build();
    let client = TestClient::new(balancer.clone());
    for _ in 0..10 {
        let response = client.get("/").send();
        assert_eq!(
            response.status(),
            200,
            "every GET is retried on the good backend"
        );
        assert_eq!(response.header("x-backend"), Some("good"));
    }
    assert_eq!(bad.calls(), 2, "ejected after two failures");
    assert!(balancer.status()[0].ejected);
    std::thread::sleep(Duration::from_millis(350));
    // The probe fails: ejected again at once.
    names(&client, 4);
    assert_eq!(bad.calls(), 3, "one probe after the cool-down");
    // The backend recovers: the next probe brings it back.
    bad.status.store(200, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(350));
    let seen = names(&client, 6);
    assert!(seen.iter().filter(|n| *n == "bad").count() >= 2, "{seen:?}");
    assert!(!balancer.status()[0].ejected);
}

#[test]
fn a_post_is_retried_only_when_it_never_reached_a_server() {
    // The first backend answers 503 without reading the body: it may have acted on the POST
    // all the same (a remote backend's 504 comes while its server may still run it), so the
    // POST is not sent twice.
    let lazy = Named::new("lazy").answering(503).not_reading();
    let good = Named::new("good");
    let client = TestClient::new(balancer(&[&lazy, &good], Strategy::RoundRobin).build());
    let response = client.post("/").body("once").send();
    assert_eq!(response.status(), 503);
    assert_eq!(good.calls(), 0);

    // The first backend read the body, then failed: not sent twice either.
    let reader = Named::new("reader").answering(502);
    let good = Named::new("good");
    let client = TestClient::new(balancer(&[&reader, &good], Strategy::RoundRobin).build());
    let response = client.post("/").body("once").send();
    assert_eq!(response.status(), 502);
    assert_eq!(good.calls(), 0);

    // A PUT (idempotent) whose body was read is sent again, body and all.
    let response = client.put("/").body("twice").send();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "good twice");

    // The first backend never reached its server, and says so: the POST goes to the second,
    // its body (read by the first, and held) with it.
    let down = Named::new("down").answering(502).unreached();
    let good = Named::new("good");
    let client = TestClient::new(balancer(&[&down, &good], Strategy::RoundRobin).build());
    let response = client.post("/").body("once").send();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "good once");
    assert_eq!((down.calls(), good.calls()), (1, 1));
}

#[test]
fn an_idempotent_request_is_retried_after_a_504() {
    let slow = Named::new("slow").answering(504).not_reading();
    let good = Named::new("good");
    let client = TestClient::new(balancer(&[&slow, &good], Strategy::RoundRobin).build());
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client.request(method.clone(), "/").send();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.header("x-backend"), Some("good"), "{method}");
    }
}

#[test]
fn consistent_hashing_keeps_keys_on_their_backend() {
    let (a, b, c) = (Named::new("a"), Named::new("b"), Named::new("c"));
    let key = HashKey::Header(HeaderName::from_static("x-user"));
    let client = TestClient::new(balancer(&[&a, &b, &c], Strategy::Hash(key)).build());
    let mut spread = std::collections::HashSet::new();
    for user in 0..60 {
        let user = format!("user-{user}");
        let first = client.get("/").header("x-user", &user).send();
        let again = client.get("/").header("x-user", &user).send();
        assert_eq!(
            first.header("x-backend"),
            again.header("x-backend"),
            "{user}"
        );
        spread.insert(first.header("x-backend").unwrap().to_owned());
    }
    assert_eq!(spread.len(), 3, "keys reach every backend");
    // Without the key: round robin.
    assert_eq!(names(&client, 3).len(), 3);
}

/// A backend with a health endpoint whose answer the test sets.
#[derive(Clone)]
struct WithHealth {
    name: &'static str,
    healthy: Arc<AtomicBool>,
}

impl App for WithHealth {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let status = if environ.path_info() != b"/health" || self.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-backend", HeaderValue::from_static(self.name));
        let _ = start.start(status, headers);
        Body::from(self.name)
    }
}

#[test]
fn active_health_checks_take_a_backend_out_and_back() {
    let flaky = WithHealth {
        name: "flaky",
        healthy: Arc::new(AtomicBool::new(false)),
    };
    let steady = WithHealth {
        name: "steady",
        healthy: Arc::new(AtomicBool::new(true)),
    };
    let balancer = Balancer::builder()
        .backend("flaky", flaky.clone())
        .backend("steady", steady)
        .health_check("/health", Duration::from_millis(50))
        .build();
    let wait_for = |healthy: bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while balancer.status()[0].healthy != healthy {
            assert!(Instant::now() < deadline, "the check never saw {healthy}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(false);
    let client = TestClient::new(balancer.clone());
    assert_eq!(names(&client, 4), ["steady"; 4]);
    flaky.healthy.store(true, Ordering::SeqCst);
    wait_for(true);
    assert!(names(&client, 4).contains(&"flaky".to_owned()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Removing one of n nodes moves only its own keys (about 1/n of them); adding one moves
    /// keys only to the new node (about 1/(n+1) of them).
    #[test]
    fn consistent_hashing_remaps_about_one_nth(n in 3usize..12, removed in 0usize..12, seed in any::<u64>()) {
        let removed = removed % n;
        let names: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:8000")).collect();
        let all = HashRing::new(names.iter().map(|name| (name.as_str(), 1)));
        let kept: Vec<usize> = (0..n).filter(|&i| i != removed).collect();
        let fewer = HashRing::new(kept.iter().map(|&i| (names[i].as_str(), 1)));
        let keys: Vec<String> = (0..4000).map(|k| format!("key-{seed}-{k}")).collect();
        let mut moved = 0;
        for key in &keys {
            let before = all.node_for(key.as_bytes()).unwrap();
            let after = kept[fewer.node_for(key.as_bytes()).unwrap()];
            if before == removed {
                moved += 1;
                prop_assert_ne!(after, removed);
            } else {
                prop_assert_eq!(after, before, "a key of a remaining node moved");
            }
        }
        let fraction = f64::from(moved) / keys.len() as f64;
        let expected = 1.0 / n as f64;
        prop_assert!(fraction > expected * 0.5 && fraction < expected * 1.6,
            "removing moved {fraction:.3} of the keys, expected about {expected:.3}");

        // Adding back: the keys that move all go to the new node.
        for key in &keys {
            let before = kept[fewer.node_for(key.as_bytes()).unwrap()];
            let after = all.node_for(key.as_bytes()).unwrap();
            prop_assert!(after == before || after == removed);
        }
    }
}

/// A backend whose behaviour the test switches: 0 fails (502), 1 never answers, 2 answers 200.
#[derive(Clone, Default)]
struct Switch(Arc<AtomicUsize>);

impl App for Switch {
    fn call(&self, _: Environ, start: StartResponse) -> Body {
        match self.0.load(Ordering::SeqCst) {
            0 => {
                let _ = start.start(StatusCode::BAD_GATEWAY, HeaderMap::new());
                Body::empty()
            }
            1 => Body::from_future(std::future::pending()),
            _ => {
                let _ = start.start(StatusCode::OK, HeaderMap::new());
                Body::from("back")
            }
        }
    }
}

#[test]
fn a_probe_abandoned_by_its_client_lets_the_next_request_probe() {
    let switch = Switch::default();
    let balancer = Balancer::builder()
        .backend("only", switch.clone())
        .max_fails(1)
        .cool_down(Duration::from_millis(100))
        .build();
    let client = TestClient::new(balancer.clone());
    assert_eq!(client.get("/").send().status(), 502);
    assert!(balancer.status()[0].ejected);
    assert_eq!(
        client.get("/").send().status(),
        503,
        "ejected: nobody to ask"
    );

    std::thread::sleep(Duration::from_millis(150));
    switch.0.store(1, Ordering::SeqCst);
    {
        // The probe hangs, and its client gives up on it.
        let mut probe = std::pin::pin!(driver::call(&balancer, get("/")));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(probe.as_mut().poll(&mut cx).is_pending());
    }
    switch.0.store(2, Ordering::SeqCst);
    let response = client.get("/").send();
    assert_eq!(
        response.status(),
        200,
        "a new probe went out and brought the backend back"
    );
    assert!(!balancer.status()[0].ejected);
}

#[test]
fn a_broken_request_body_neither_counts_against_a_backend_nor_for_it() {
    // `/fail` is the backend's failure (502); `/body` fails on the client's body. A streak of
    // failures goes on past it, and ejects at the second real one.
    let backend = |environ: Environ, start: StartResponse| match environ.path_info() {
        b"/fail" => {
            let _ = start.start(StatusCode::BAD_GATEWAY, HeaderMap::new());
            Body::empty()
        }
        _ => Body::error(RequestBodyError::new(std::io::Error::other(
            "the client went away",
        ))),
    };
    let balancer = Balancer::builder()
        .max_fails(2)
        .backend("one", backend)
        .build();
    let client = TestClient::new(balancer.clone());
    assert_eq!(client.get("/fail").send().status(), 502);
    assert_eq!(balancer.status()[0].fails, 1);
    assert_eq!(client.post("/body").body("...").send().status(), 500);
    assert_eq!(balancer.status()[0].fails, 1, "the streak goes on");
    assert_eq!(client.get("/fail").send().status(), 502);
    assert!(balancer.status()[0].ejected);
}
