//! The cost of the middleware, in one run: routing lookups against the number of routes (10 to
//! 10,000, for `Mount` and `Router`), the per-layer overhead of a pass-through middleware
//! (the app alone, then under 1 and 8 layers), and compression throughput against
//! tower-http's `CompressionLayer` (the same 64 KiB text in 8 chunks, gzip 6, brotli 5 and
//! zstd 3 on both sides), with the ratios printed at the end. Nothing here asserts a time; run
//! with `cargo bench -p gateway-middleware --bench middleware`.
#![allow(missing_docs)]
// The counting allocator below is the only unsafe code: it forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use gateway_core::{App, Body, Builder, Environ, StartResponse, block_on, driver};
use gateway_middleware::{Coding, Compression, Mount, Router};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Body as _;

/// Counts allocations, so the summary can say how many a layer adds.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout goes to System as it came.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by System with this layout (alloc and realloc forward).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for dealloc; the new size comes from the caller, as the contract asks.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Nanoseconds and allocations per request over `n` requests (inputs built outside the
/// measurement), the best of `rounds`.
fn per_request(rounds: usize, n: usize, make: impl Fn() -> Environ, app: &impl App) -> (f64, f64) {
    let mut best = f64::MAX;
    let mut allocations = 0.0;
    for _ in 0..rounds {
        let inputs: Vec<Environ> = (0..n).map(|_| make()).collect();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        for environ in inputs {
            black_box(run(app, environ));
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n as f64);
        allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    }
    (best, allocations)
}

fn hello(_: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::OK, HeaderMap::new());
    Body::from("hi")
}

fn environ(path: String) -> Environ {
    let mut environ = Environ::with_capacity(4);
    environ.set("REQUEST_METHOD", "GET");
    environ.set("SCRIPT_NAME", "");
    environ.set("PATH_INFO", path);
    environ
}

fn run(app: &impl App, environ: Environ) -> StatusCode {
    let mut future = pin!(driver::call(app, environ));
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(response) = future.as_mut().poll(&mut cx) else {
        unreachable!("nothing waits")
    };
    let status = response.status();
    let mut body = response.into_body();
    while let Poll::Ready(Some(_)) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {}
    status
}

/// A middleware that does nothing: the floor of what a layer costs.
struct PassThrough<A>(A);

impl<A: App> App for PassThrough<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        self.0.call(environ, start)
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();

    let mut routing_summary = Vec::new();
    let mut group = criterion.benchmark_group("routing");
    for routes in [10usize, 100, 1_000, 10_000] {
        let mut mount = Mount::builder();
        let mut router = Router::builder();
        for i in 0..routes {
            mount = mount.mount(&format!("/m{i}"), hello);
            router = router.route(Method::GET, &format!("/r{i}/{{id}}"), hello);
        }
        let (mount, router) = (mount.build(), router.build().unwrap());
        let last = routes - 1;
        group.bench_with_input(BenchmarkId::new("mount", routes), &routes, |b, _| {
            b.iter_batched(
                || environ(format!("/m{last}/x")),
                |e| assert_eq!(run(&mount, e), StatusCode::OK),
                BatchSize::SmallInput,
            )
        });
        let mount_ns = per_request(10, 2000, || environ(format!("/m{last}/x")), &mount).0;
        let router_ns = per_request(10, 2000, || environ(format!("/r{last}/7")), &router).0;
        routing_summary.push((routes, mount_ns, router_ns));
        group.bench_with_input(BenchmarkId::new("router", routes), &routes, |b, _| {
            b.iter_batched(
                || environ(format!("/r{last}/7")),
                |e| assert_eq!(run(&router, e), StatusCode::OK),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("pass-through");
    let none = hello;
    let one = Builder::new().with(PassThrough).app(hello);
    let eight = Builder::new()
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .with(PassThrough)
        .app(hello);
    group.bench_function("0 layers", |b| {
        b.iter_batched(
            || environ("/".into()),
            |e| black_box(run(&none, e)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("1 layer", |b| {
        b.iter_batched(
            || environ("/".into()),
            |e| black_box(run(&one, e)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("8 layers", |b| {
        b.iter_batched(
            || environ("/".into()),
            |e| black_box(run(&eight, e)),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let layers = [
        per_request(10, 20_000, || environ("/".into()), &none),
        per_request(10, 20_000, || environ("/".into()), &one),
        per_request(10, 20_000, || environ("/".into()), &eight),
    ];
    let ratios = compression(&mut criterion);
    criterion.final_summary();
    println!();
    println!("summary: routing, the last of N routes, best of 10 rounds of 2,000 lookups");
    for (routes, mount, router) in &routing_summary {
        println!("  {routes:6} routes  Mount {mount:8.1} ns  Router {router:8.1} ns");
    }
    if let (Some(first), Some(last)) = (routing_summary.first(), routing_summary.last()) {
        println!(
            "  10,000 routes against 10: Mount {:.2}x, Router {:.2}x (target <= 2x)",
            last.1 / first.1,
            last.2 / first.2
        );
    }
    println!("summary: pass-through layers, best of 10 rounds of 20,000 requests");
    for (name, (ns, allocations)) in ["0 layers", "1 layer", "8 layers"].iter().zip(layers) {
        println!("  {name:8} {ns:8.1} ns/request  {allocations:5.2} allocations/request");
    }
    println!(
        "  per layer: {:.1} ns, {:+.2} allocations (target < 50 ns, no allocation)",
        (layers[2].0 - layers[0].0) / 8.0,
        (layers[2].1 - layers[0].1) / 8.0
    );
    println!();
    println!("summary: compression of 64 KiB of text in 8 chunks, best of 10 rounds each");
    for (coding, ours, theirs, sizes) in ratios {
        println!(
            "  {coding:5} gateway {:7.1} MB/s ({} bytes out)  tower-http {:7.1} MB/s ({} bytes out)  throughput gateway/tower-http {:.2}x",
            mb_per_s(ours),
            sizes.0,
            mb_per_s(theirs),
            sizes.1,
            theirs / ours
        );
    }
}

/// The text both sides compress: 64 KiB of log-like lines.
fn text() -> Vec<Bytes> {
    let mut all = String::new();
    let mut i = 0u64;
    while all.len() < 64 * 1024 {
        all.push_str(&format!(
            "127.0.0.1 - - [01/Dec/2026:04:{:02}:{:02} +0000] \"GET /items/{} HTTP/1.1\" 200 {}\n",
            i % 60,
            (i * 7) % 60,
            i * 31 % 977,
            i * 13 % 5000
        ));
        i += 1;
    }
    let all = Bytes::from(all);
    (0..8)
        .map(|k| all.slice(k * all.len() / 8..(k + 1) * all.len() / 8))
        .collect()
}

fn text_app(chunks: Vec<Bytes>) -> impl App + Clone {
    move |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from_chunks(chunks.clone())
    }
}

/// Compressed bytes out of our middleware for one request.
fn ours(app: &impl App, coding: &str) -> usize {
    let mut environ = environ("/".into());
    environ.set("HTTP_ACCEPT_ENCODING", coding.to_owned());
    let response = block_on(driver::call(app, environ));
    drain(response.into_body())
}

fn drain<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut total = 0;
    while let Some(frame) = block_on(std::future::poll_fn(|cx| {
        Pin::new(&mut body).poll_frame(cx)
    })) {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
        }
    }
    total
}

type TowerBody = tower_http::compression::CompressionBody<Body>;

/// Compressed bytes out of tower-http's layer for one request.
fn theirs<S>(service: &S, coding: &str) -> usize
where
    S: tower::Service<http::Request<()>, Response = http::Response<TowerBody>> + Clone,
    S::Error: std::fmt::Debug,
{
    let request = http::Request::builder()
        .header("accept-encoding", coding)
        .body(())
        .unwrap();
    let response = block_on(service.clone().call(request)).unwrap();
    drain(response.into_body())
}

fn tower_text(
    chunks: Vec<Bytes>,
    layer: tower_http::compression::CompressionLayer,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<TowerBody>,
    Error = std::convert::Infallible,
> + Clone {
    tower::ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(move |_: http::Request<()>| {
            let chunks = chunks.clone();
            async move {
                let mut response = http::Response::new(Body::from_chunks(chunks));
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("text/plain"));
                Ok::<_, std::convert::Infallible>(response)
            }
        }))
}

fn mb_per_s(nanos_per_request: f64) -> f64 {
    (64.0 * 1024.0) / nanos_per_request * 1e9 / 1e6
}

fn best_nanos(rounds: usize, n: usize, run: impl Fn() -> usize) -> f64 {
    (0..rounds)
        .map(|_| {
            let started = std::time::Instant::now();
            for _ in 0..n {
                black_box(run());
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::MAX, f64::min)
}

/// What the compression group measured for one coding: its name, our ns/request,
/// tower-http's, and the compressed sizes (ours, theirs).
type Measured = (&'static str, f64, f64, (usize, usize));

/// The compression group, and what it measured for each coding.
fn compression(criterion: &mut Criterion) -> Vec<Measured> {
    use tower_http::CompressionLevel;
    use tower_http::compression::CompressionLayer;

    let chunks = text();
    let mut group = criterion.benchmark_group("compression");
    group.throughput(Throughput::Bytes(64 * 1024));
    let mut ratios = Vec::new();
    for (name, coding, level) in [
        ("gzip", Coding::Gzip, 6),
        ("br", Coding::Brotli, 5),
        ("zstd", Coding::Zstd, 3),
    ] {
        let app = Builder::new()
            .with(Compression::new().codings(&[coding]))
            .app(text_app(chunks.clone()));
        let layer = CompressionLayer::new()
            .no_gzip()
            .no_br()
            .no_zstd()
            .no_deflate()
            .quality(CompressionLevel::Precise(level));
        let layer = match coding {
            Coding::Gzip => layer.gzip(true),
            Coding::Brotli => layer.br(true),
            _ => layer.zstd(true),
        };
        let service = tower_text(chunks.clone(), layer);
        // Both sides really compress, to sizes of the same order.
        let (a, b) = (ours(&app, name), theirs(&service, name));
        assert!(a < 32 * 1024 && b < 32 * 1024, "{name}: {a} and {b} bytes");
        group.bench_function(BenchmarkId::new("gateway", name), |bench| {
            bench.iter(|| black_box(ours(&app, name)))
        });
        group.bench_function(BenchmarkId::new("tower-http", name), |bench| {
            bench.iter(|| black_box(theirs(&service, name)))
        });
        let ours_ns = best_nanos(10, 50, || ours(&app, name));
        let theirs_ns = best_nanos(10, 50, || theirs(&service, name));
        ratios.push((name, ours_ns, theirs_ns, (a, b)));
    }
    group.finish();
    ratios
}
