//! The cost of the contract: a hello app run through the driver, against the same logic as a
//! tower service called directly, in one run. Reports nanoseconds per request (criterion, and
//! a ratio from one interleaved measurement) and heap allocations per request.
//!
//! Run with `cargo bench -p gateway-core --bench driver`. Benchmark targets: no more than 1.2x
//! tower's time, and no heap allocation per request beyond the environ and the app's own
//! header map. Nothing here asserts a time: the numbers are printed.
//!
//! With `DRIVER_COUNT=1` it runs 20,000 requests each way and nothing else, for an instruction
//! count that machine noise does not blur: `valgrind --tool=callgrind
//! --toggle-collect=driver::through_driver` on the bench binary (or `through_tower`). With
//! `DRIVER_PROFILE=driver` (or `tower`) it runs one side for five seconds, for `perf record`.
#![allow(unsafe_code)]
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use gateway_core::{Body, Environ, StartResponse, driver};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

/// Counts every allocation of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout, through `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HELLO: &str = "Hello, world!\n";

fn hello_app(_environ: Environ, start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    match start.start(StatusCode::OK, headers) {
        Ok(_) => Body::from(HELLO),
        Err(error) => Body::error(error),
    }
}

#[derive(Clone, Copy)]
struct HelloService;

impl Service<Request<()>> for HelloService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut response = Response::new(Full::new(Bytes::from_static(HELLO.as_bytes())));
        *response.headers_mut() = headers;
        ready(Ok(response))
    }
}

/// What a server hands the app: an environ with the usual variables.
fn environ() -> Environ {
    let mut environ = Environ::with_capacity(12);
    for (name, value) in [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "8000"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_HOST", "localhost:8000"),
    ] {
        environ.set(name, value);
    }
    environ
}

/// The same request, as a tower service gets it.
fn request() -> Request<()> {
    Request::get("/")
        .header("host", "localhost:8000")
        .body(())
        .unwrap()
}

fn poll_now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("hello never waits"),
    }
}

/// Sends the response the way a server does: every frame of the body, then drops it.
fn drain<B: http_body::Body + Unpin>(response: Response<B>) -> usize {
    let mut body = response.into_body();
    let mut sent = 0;
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        if let Some(data) = frame.data_ref() {
            sent += bytes::Buf::remaining(data);
        }
    }
    sent
}

fn through_driver(environ: Environ) -> usize {
    let response = poll_now(driver::call(&hello_app, environ));
    black_box(response.headers());
    drain(response)
}

fn through_tower(request: Request<()>) -> usize {
    let response = poll_now(HelloService.call(request)).unwrap();
    black_box(response.headers());
    drain(response)
}

/// Allocations per request, counted over `n` requests whose inputs were built beforehand.
fn allocations_per_request<I>(n: usize, make: impl Fn() -> I, run: impl Fn(I) -> usize) -> f64 {
    let inputs: Vec<I> = (0..n).map(|_| make()).collect();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for input in inputs {
        assert_eq!(run(input), HELLO.len());
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

/// Nanoseconds per request over `n` requests, run in batches of 64 whose inputs are built
/// outside the measurement (as criterion's small batches are).
fn nanos_per_request<I>(n: usize, make: impl Fn() -> I, run: impl Fn(I) -> usize) -> f64 {
    let mut total = std::time::Duration::ZERO;
    for _ in 0..n / 64 {
        let inputs: Vec<I> = (0..64).map(|_| make()).collect();
        let started = Instant::now();
        for input in inputs {
            black_box(run(input));
        }
        total += started.elapsed();
    }
    total.as_nanos() as f64 / (n / 64 * 64) as f64
}

fn main() {
    if let Some(which) = std::env::var_os("DRIVER_PROFILE") {
        let started = Instant::now();
        while started.elapsed().as_secs() < 5 {
            if which == "tower" {
                black_box(nanos_per_request(64_000, request, through_tower));
            } else {
                black_box(nanos_per_request(64_000, environ, through_driver));
            }
        }
        return;
    }
    if std::env::var_os("DRIVER_COUNT").is_some() {
        allocations_per_request(20_000, environ, through_driver);
        allocations_per_request(20_000, request, through_tower);
        return;
    }
    // Warm up (thread-locals, caches), then count.
    allocations_per_request(1000, environ, through_driver);
    let driver_allocs = allocations_per_request(10_000, environ, through_driver);
    let tower_allocs = allocations_per_request(10_000, request, through_tower);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("hello");
    group.bench_function("driver", |b| {
        b.iter_batched(environ, through_driver, BatchSize::SmallInput)
    });
    group.bench_function("tower", |b| {
        b.iter_batched(request, through_tower, BatchSize::SmallInput)
    });
    group.finish();
    criterion.final_summary();

    // One interleaved measurement for the ratio: the best of several rounds of each.
    let (mut best_driver, mut best_tower) = (f64::MAX, f64::MAX);
    for _ in 0..15 {
        best_driver = best_driver.min(nanos_per_request(20_000, environ, through_driver));
        best_tower = best_tower.min(nanos_per_request(20_000, request, through_tower));
    }
    println!();
    println!("summary: hello, one request at a time, inputs built outside the measurement");
    println!("  driver: {best_driver:8.1} ns/request  {driver_allocs:5.2} allocations/request");
    println!("  tower:  {best_tower:8.1} ns/request  {tower_allocs:5.2} allocations/request");
    println!(
        "  ratio driver/tower: {:.2}x time (target <= 1.20x), {:+.2} allocations/request",
        best_driver / best_tower,
        driver_allocs - tower_allocs
    );
}
