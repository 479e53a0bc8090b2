//! The cost of the middleware, in one run: routing lookups against the number of routes (10 to
//! 10,000, for `Mount` and `Router`), and the per-layer overhead of a pass-through middleware
//! (the app alone, then under 1 and 8 layers). Nothing here asserts a time; run with
//! `cargo bench -p gateway-middleware --bench middleware`.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BatchSize, BenchmarkId, Criterion};
use gateway_core::{App, Body, Builder, Environ, StartResponse, driver};
use gateway_middleware::{Mount, Router};
use http::{HeaderMap, Method, StatusCode};
use http_body::Body as _;

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
    criterion.final_summary();
}
