//! Observability: the counters behind `--stats` and the access log of `--access-log`.
//!
//! Counters live in one memory region mapped `MAP_SHARED | MAP_ANONYMOUS` before any fork, so
//! the master's children all see it: each serving process (the one process, or each worker)
//! claims a slot and counts into it with atomic additions; when a worker exits, the master folds
//! its slot into the slot of the retired workers (under a sequence counter, so that a reader
//! never sees a request twice or not at all) and frees it. Whoever serves the stats endpoint
//! (a task of the one process, or, with workers, a process the master forks for it, since the
//! master runs no runtime) reads the region and answers `/metrics` (Prometheus text format) and
//! `/stats.json`.
//!
//! What is counted: requests (when their response ends or is dropped), requests in flight,
//! their latency in fixed buckets, bytes read from and written to connections, connections
//! accepted, and the limits hit: the server's own 400, 414 and 431 answers (hyper's for HTTP,
//! uwsgi's; seen as the response head goes out, without a `Server` header), 408 (the HTTP
//! server's for a head too slow, counted where it writes it), 408, 413 and 503 (from
//! [`Runtime::respond`](super::Runtime::respond)), harakiri kills, and recycles for
//! `--max-rss` and `--max-requests`. Nothing is counted unless [`enable`] was called.
#![allow(unsafe_code)]

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gateway_core::{Body, BoxError, Environ, clf_time, log_escape};
use http::{Response, StatusCode};
use http_body::Frame;

use super::{Listener, Shutdown};

/// The upper bounds of the latency buckets, in microseconds (the last bucket, `+Inf`, is
/// implied).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A limit whose hits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// 400: a malformed request head (HTTP) or packet (uwsgi).
    BadRequest,
    /// 408: the request head or body stalled past its timeout.
    RequestTimeout,
    /// 413: the request body is over `--max-body-size`.
    PayloadTooLarge,
    /// 414: the request target is too long (hyper).
    UriTooLong,
    /// 431: the request head is over `--max-head-size` or `--max-headers`.
    HeaderFieldsTooLarge,
    /// 503: `--max-concurrent-requests` reached.
    ServiceUnavailable,
    /// A worker killed by `--harakiri`.
    Harakiri,
    /// A worker recycled past `--max-rss`.
    MaxRss,
    /// A worker recycled after `--max-requests`.
    MaxRequests,
}

impl Limit {
    /// Every limit, in the order of the counters.
    pub const ALL: [Limit; 9] = [
        Limit::BadRequest,
        Limit::RequestTimeout,
        Limit::PayloadTooLarge,
        Limit::UriTooLong,
        Limit::HeaderFieldsTooLarge,
        Limit::ServiceUnavailable,
        Limit::Harakiri,
        Limit::MaxRss,
        Limit::MaxRequests,
    ];

    /// The label of the limit in the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Limit::BadRequest => "400",
            Limit::RequestTimeout => "408",
            Limit::PayloadTooLarge => "413",
            Limit::UriTooLong => "414",
            Limit::HeaderFieldsTooLarge => "431",
            Limit::ServiceUnavailable => "503",
            Limit::Harakiri => "harakiri",
            Limit::MaxRss => "max_rss",
            Limit::MaxRequests => "max_requests",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

const LIMITS: usize = Limit::ALL.len();
const BUCKETS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Slots for serving processes; a worker that finds none free counts nothing (and says so).
const SLOTS: usize = 256;

/// The counters of one serving process. All-zero bytes are a valid, empty slot.
#[repr(C)]
#[derive(Debug)]
struct Slot {
    /// The process counting here; 0: free.
    pid: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicU64,
    retiring: AtomicU64,
    latency_sum_us: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    limits: [AtomicU64; LIMITS],
}

/// The shared region.
#[repr(C)]
#[derive(Debug)]
struct Region {
    /// Odd while the master folds a slot into `retired`.
    seq: AtomicU64,
    retired: Slot,
    slots: [Slot; SLOTS],
}

static REGION: OnceLock<&'static Region> = OnceLock::new();
static SLOT: OnceLock<&'static Slot> = OnceLock::new();
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Maps the counters' region (before any fork, so that every worker shares it); counting
/// starts in each serving process once it claims a slot. Idempotent.
pub fn enable() -> io::Result<()> {
    if REGION.get().is_some() {
        return Ok(());
    }
    let size = std::mem::size_of::<Region>();
    // SAFETY: an anonymous shared mapping with no address hint; the result is checked.
    let pointer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if pointer == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `size` bytes, page-aligned, zero-filled (a valid `Region`: atomics
    // of zero), never unmapped, and only ever accessed through atomics, from any process.
    let region: &'static Region = unsafe { &*pointer.cast::<Region>() };
    let _ = REGION.set(region);
    Ok(())
}

/// Whether the counters are on in this process.
pub fn is_enabled() -> bool {
    REGION.get().is_some()
}

/// Turns the access log on or off (`--access-log`): one `tracing` event per request, target
/// `gateway::access`, level info, in Combined Log Format followed by the duration in seconds
/// and the pid of the serving process. A request that ended before its response head (the
/// client went away) is logged with status 499, as nginx logs it.
pub fn set_access_log(on: bool) {
    ACCESS_LOG.store(on, Ordering::Relaxed);
}

/// Gives this process (a worker after its fork, or the one serving process) a slot to count
/// in. Nothing without [`enable`].
pub(crate) fn claim() {
    let Some(region) = REGION.get() else {
        return;
    };
    let pid = u64::from(std::process::id());
    for slot in &region.slots {
        if slot
            .pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let _ = SLOT.set(slot);
            return;
        }
    }
    tracing::warn!(pid, "stats: no free slot: this process counts nothing");
}

/// In the master, once a worker is reaped: its counts join the retired workers' and its slot
/// is freed.
pub(crate) fn release(pid: libc::pid_t) {
    let Some(region) = REGION.get() else {
        return;
    };
    let Ok(pid) = u64::try_from(pid) else {
        return;
    };
    let Some(slot) = region
        .slots
        .iter()
        .find(|s| s.pid.load(Ordering::Acquire) == pid)
    else {
        return;
    };
    region.seq.fetch_add(1, Ordering::AcqRel);
    let retired = &region.retired;
    let fold = |from: &AtomicU64, to: &AtomicU64| {
        to.fetch_add(from.swap(0, Ordering::AcqRel), Ordering::AcqRel);
    };
    fold(&slot.requests, &retired.requests);
    fold(&slot.bytes_in, &retired.bytes_in);
    fold(&slot.bytes_out, &retired.bytes_out);
    fold(&slot.connections, &retired.connections);
    fold(&slot.latency_sum_us, &retired.latency_sum_us);
    for (from, to) in slot.latency.iter().zip(&retired.latency) {
        fold(from, to);
    }
    for (from, to) in slot.limits.iter().zip(&retired.limits) {
        fold(from, to);
    }
    // A killed worker's requests in progress never finish.
    slot.in_flight.store(0, Ordering::Release);
    slot.retiring.store(0, Ordering::Release);
    region.seq.fetch_add(1, Ordering::AcqRel);
    slot.pid.store(0, Ordering::Release);
}

fn slot() -> Option<&'static Slot> {
    SLOT.get().copied()
}

/// Counts a hit of `limit` in this process.
pub fn count(limit: Limit) {
    if let Some(slot) = slot() {
        slot.limits[limit.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Marks this process as retiring.
pub(crate) fn retiring() {
    if let Some(slot) = slot() {
        slot.retiring.store(1, Ordering::Relaxed);
    }
}

/// Counts an accepted connection.
pub(crate) fn connection_accepted() {
    if let Some(slot) = slot() {
        slot.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts bytes read from a connection.
pub(crate) fn bytes_in(n: usize) {
    if let Some(slot) = slot() {
        slot.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Counts bytes written to a connection, and looks at what was written: a response head of the
/// server's own (400, 414, 431, without a `Server` header) counts as a limit hit.
pub(crate) fn bytes_out(written: &[u8]) {
    let Some(slot) = slot() else {
        return;
    };
    slot.bytes_out
        .fetch_add(written.len() as u64, Ordering::Relaxed);
    if let Some(limit) = own_error_head(written) {
        slot.limits[limit.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts bytes written to a connection, without looking at them.
pub(crate) fn bytes_out_counted(n: usize) {
    if let Some(slot) = slot() {
        slot.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Whether `buf` starts with a whole HTTP/1 response head of status 400, 414 or 431 that has
/// no `Server` header: the answer of the server itself (hyper's on a bad head; uwsgi's on a bad
/// packet), since every answer that goes through the runtime carries a `Server` header. (The
/// HTTP server counts its 408 for a head too slow itself, when it writes it.)
fn own_error_head(buf: &[u8]) -> Option<Limit> {
    if buf.len() < 16 || !buf.starts_with(b"HTTP/1.") || buf[8] != b' ' {
        return None;
    }
    let limit = match &buf[9..13] {
        b"400 " => Limit::BadRequest,
        b"414 " => Limit::UriTooLong,
        b"431 " => Limit::HeaderFieldsTooLarge,
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let has_server = buf[..end + 2]
        .split(|b| *b == b'\n')
        .any(|line| line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"server:"));
    (!has_server).then_some(limit)
}

/// The status logged for a request that ended before its response head.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// What a request's record needs for the access log.
#[derive(Debug)]
struct AccessEntry {
    host: String,
    user: String,
    request_line: String,
    referer: String,
    user_agent: String,
}

/// A request being answered: counted in flight from its start until its response body ends
/// or is dropped; then counted, timed, and logged. Boxed: the futures of every request carry
/// an `Option<Record>`, which costs them a pointer when stats and the access log are off.
#[derive(Debug)]
pub(crate) struct Record(Box<RecordState>);

/// What a [`Record`] follows.
#[derive(Debug)]
struct RecordState {
    start: Instant,
    slot: Option<&'static Slot>,
    access: Option<Box<AccessEntry>>,
    status: u16,
    bytes: u64,
}

impl Record {
    /// A record for the request of `environ`, if stats or the access log are on.
    pub(crate) fn start(environ: &Environ) -> Option<Record> {
        let slot = slot();
        let log = ACCESS_LOG.load(Ordering::Relaxed);
        if slot.is_none() && !log {
            return None;
        }
        if let Some(slot) = slot {
            slot.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let access = log.then(|| Box::new(access_entry(environ)));
        Some(Record(Box::new(RecordState {
            start: Instant::now(),
            slot,
            access,
            status: 0,
            bytes: 0,
        })))
    }

    /// Follows `response` to its end.
    pub(crate) fn attach(mut self, response: Response<Body>) -> Response<Body> {
        self.0.status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Body::new(Recorded { body, record: self }))
    }
}

impl Drop for RecordState {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(slot) = self.slot {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            slot.in_flight.fetch_sub(1, Ordering::Relaxed);
            slot.requests.fetch_add(1, Ordering::Relaxed);
            slot.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
            slot.latency[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(entry) = self.access.take() {
            // No response head: the client went away first (nginx logs 499 so).
            let status = match self.status {
                0 => CLIENT_CLOSED_REQUEST,
                status => status,
            };
            let line = combined_line(&entry, SystemTime::now(), status, self.bytes);
            tracing::info!(
                target: "gateway::access",
                "{line} {:.6} {}",
                elapsed.as_secs_f64(),
                std::process::id()
            );
        }
    }
}

/// The bucket of a latency.
fn bucket(micros: u64) -> usize {
    LATENCY_BUCKETS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(LATENCY_BUCKETS_US.len())
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes for its record, which ends with it.
    struct Recorded {
        #[pin]
        body: Body,
        record: Record,
    }
}

impl http_body::Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.record.0.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn access_entry(environ: &Environ) -> AccessEntry {
    let target = match environ.get("REQUEST_URI") {
        Some(uri) => log_escape(uri),
        None => {
            let mut path = log_escape(environ.script_name());
            path.push_str(&log_escape(environ.path_info()));
            if !environ.query_string().is_empty() {
                path.push('?');
                path.push_str(&log_escape(environ.query_string()));
            }
            path
        }
    };
    AccessEntry {
        host: dash_if_empty(
            environ
                .remote_addr()
                .map(|a| log_escape(a.as_bytes()))
                .unwrap_or_default(),
        ),
        user: dash_if_empty(
            environ
                .get("REMOTE_USER")
                .map(log_escape)
                .unwrap_or_default(),
        ),
        request_line: format!(
            "{} {} {}",
            log_escape(environ.request_method().as_bytes()),
            target,
            log_escape(environ.server_protocol().as_bytes())
        ),
        referer: dash_if_empty(
            environ
                .get("HTTP_REFERER")
                .map(log_escape)
                .unwrap_or_default(),
        ),
        user_agent: dash_if_empty(
            environ
                .get("HTTP_USER_AGENT")
                .map(log_escape)
                .unwrap_or_default(),
        ),
    }
}

/// A Combined Log Format line: `host ident user [time] "request" status bytes "referer"
/// "user-agent"`, the time in UTC.
fn combined_line(entry: &AccessEntry, now: SystemTime, status: u16, bytes: u64) -> String {
    let bytes = if bytes == 0 {
        "-".to_owned()
    } else {
        bytes.to_string()
    };
    format!(
        "{} - {} [{}] \"{}\" {} {} \"{}\" \"{}\"",
        entry.host,
        entry.user,
        clf_time(now),
        entry.request_line,
        status,
        bytes,
        entry.referer,
        entry.user_agent
    )
}

// ---------------------------------------------------------------------------------------------
// Reading and serving.

/// Counters of one slot (or a sum), read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered.
    pub requests: u64,
    /// Requests in progress.
    pub in_flight: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Bytes written to connections.
    pub bytes_out: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Sum of the latencies, in microseconds.
    pub latency_sum_us: u64,
    /// Requests per latency bucket (not cumulative; the last is past every bound).
    pub latency: [u64; BUCKETS],
    /// Hits per limit, in the order of [`Limit::ALL`].
    pub limits: [u64; LIMITS],
}

impl Counters {
    fn read(slot: &Slot) -> Counters {
        let load = |a: &AtomicU64| a.load(Ordering::Acquire);
        Counters {
            requests: load(&slot.requests),
            in_flight: load(&slot.in_flight),
            bytes_in: load(&slot.bytes_in),
            bytes_out: load(&slot.bytes_out),
            connections: load(&slot.connections),
            latency_sum_us: load(&slot.latency_sum_us),
            latency: std::array::from_fn(|i| load(&slot.latency[i])),
            limits: std::array::from_fn(|i| load(&slot.limits[i])),
        }
    }

    fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.in_flight += other.in_flight;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connections += other.connections;
        self.latency_sum_us += other.latency_sum_us;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
        for (a, b) in self.limits.iter_mut().zip(other.limits) {
            *a += b;
        }
    }
}

/// One serving process, as the stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// Its pid.
    pub pid: u64,
    /// Its counters.
    pub counters: Counters,
    /// Its resident memory in bytes (0 if unknown).
    pub rss: u64,
    /// Whether it is retiring.
    pub retiring: bool,
}

/// Every counter, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The sum over every serving process, those that exited included.
    pub total: Counters,
    /// The serving processes alive.
    pub workers: Vec<WorkerView>,
}

/// Reads the counters: `None` without [`enable`].
pub fn snapshot() -> Option<Snapshot> {
    let region = REGION.get()?;
    loop {
        let before = region.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let mut total = Counters::read(&region.retired);
        let mut workers = Vec::new();
        for slot in &region.slots {
            let pid = slot.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            let counters = Counters::read(slot);
            total.add(&counters);
            workers.push(WorkerView {
                pid,
                counters,
                rss: 0,
                retiring: slot.retiring.load(Ordering::Acquire) != 0,
            });
        }
        if region.seq.load(Ordering::Acquire) != before {
            continue;
        }
        for worker in &mut workers {
            worker.rss = rss_of(worker.pid).unwrap_or(0);
        }
        workers.sort_by_key(|w| w.pid);
        return Some(Snapshot { total, workers });
    }
}

/// The resident memory of a process, from `/proc/PID/statm`.
fn rss_of(pid: u64) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// A per-worker metric: name, type, help, value.
type PerWorker = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerView) -> u64,
);

/// The snapshot in Prometheus text format (version 0.0.4).
pub fn prometheus(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let total = &snapshot.total;
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "gateway_requests_total",
        "counter",
        "Requests answered, by every worker (exited ones included).",
        total.requests,
    );
    metric(
        "gateway_requests_in_flight",
        "gauge",
        "Requests in progress.",
        total.in_flight,
    );
    metric(
        "gateway_received_bytes_total",
        "counter",
        "Bytes read from client connections.",
        total.bytes_in,
    );
    metric(
        "gateway_sent_bytes_total",
        "counter",
        "Bytes written to client connections.",
        total.bytes_out,
    );
    metric(
        "gateway_connections_total",
        "counter",
        "Connections accepted.",
        total.connections,
    );
    metric(
        "gateway_workers",
        "gauge",
        "Serving processes alive.",
        snapshot.workers.len() as u64,
    );
    let name = "gateway_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from the request's arrival to the end of its response.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, count) in total.latency.iter().enumerate() {
        cumulative += count;
        let le = match LATENCY_BUCKETS_US.get(i) {
            Some(us) => format!("{}", *us as f64 / 1e6),
            None => "+Inf".to_owned(),
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {cumulative}",
        total.latency_sum_us as f64 / 1e6
    );
    let name = "gateway_limit_hits_total";
    let _ = writeln!(
        out,
        "# HELP {name} Limits hit: the server's 400, 408, 413, 414, 431 and 503 answers, harakiri kills, max-rss and max-requests recycles.\n# TYPE {name} counter"
    );
    for (limit, count) in Limit::ALL.iter().zip(total.limits) {
        let _ = writeln!(out, "{name}{{limit=\"{}\"}} {count}", limit.label());
    }
    let per_worker: [PerWorker; 4] = [
        (
            "gateway_worker_requests_total",
            "counter",
            "Requests answered by a worker.",
            |w| w.counters.requests,
        ),
        (
            "gateway_worker_requests_in_flight",
            "gauge",
            "Requests in progress in a worker.",
            |w| w.counters.in_flight,
        ),
        (
            "gateway_worker_resident_bytes",
            "gauge",
            "Resident memory of a worker.",
            |w| w.rss,
        ),
        (
            "gateway_worker_retiring",
            "gauge",
            "1 while a worker stops to be replaced.",
            |w| u64::from(w.retiring),
        ),
    ];
    for (name, kind, help, value) in per_worker {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for worker in &snapshot.workers {
            let _ = writeln!(out, "{name}{{pid=\"{}\"}} {}", worker.pid, value(worker));
        }
    }
    out
}

/// The snapshot as JSON.
pub fn json(snapshot: &Snapshot) -> String {
    fn counters(c: &Counters) -> String {
        let limits: Vec<String> = Limit::ALL
            .iter()
            .zip(c.limits)
            .map(|(l, n)| format!("\"{}\":{n}", l.label()))
            .collect();
        let latency: Vec<String> = c.latency.iter().map(u64::to_string).collect();
        format!(
            "\"requests\":{},\"in_flight\":{},\"bytes_in\":{},\"bytes_out\":{},\"connections\":{},\"latency_sum_us\":{},\"latency_buckets\":[{}],\"limits\":{{{}}}",
            c.requests,
            c.in_flight,
            c.bytes_in,
            c.bytes_out,
            c.connections,
            c.latency_sum_us,
            latency.join(","),
            limits.join(",")
        )
    }
    let bounds: Vec<String> = LATENCY_BUCKETS_US.iter().map(u64::to_string).collect();
    let workers: Vec<String> = snapshot
        .workers
        .iter()
        .map(|w| {
            format!(
                "{{\"pid\":{},\"rss\":{},\"retiring\":{},{}}}",
                w.pid,
                w.rss,
                w.retiring,
                counters(&w.counters)
            )
        })
        .collect();
    format!(
        "{{\"latency_bounds_us\":[{}],\"total\":{{{}}},\"workers\":[{}]}}\n",
        bounds.join(","),
        counters(&snapshot.total),
        workers.join(",")
    )
}

/// The stats endpoint's answer to a path.
fn answer(path: &str) -> Response<Body> {
    let snapshot = snapshot().unwrap_or_default();
    let (status, kind, text) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus(&snapshot),
        ),
        "/stats.json" => (StatusCode::OK, "application/json", json(&snapshot)),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /stats.json\n".to_owned(),
        ),
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    response
}

/// How many connections the stats endpoint serves at once; more wait in the listen queue.
const MAX_STATS_CONNECTIONS: usize = 64;

/// How long one connection to the stats endpoint may last, requests and all.
const STATS_CONNECTION_TIME: Duration = Duration::from_secs(30);

/// Serves the stats endpoint (HTTP/1.1: `GET /metrics`, `GET /stats.json`) on `listener`
/// until `shutdown` stops accepting: 64 connections at once, each for 30 s, then 5 s more for
/// a request in progress to finish. In one process with the app, a flood of scrapers must not
/// take the descriptors its listeners need. Its own connections and requests are not counted.
pub async fn serve(listener: Listener, shutdown: Shutdown) -> io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_STATS_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = shutdown.wait_stop_accepting() => return Ok(()),
        };
        let Ok(slot) = slot else {
            return Ok(());
        };
        let connection = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait_stop_accepting() => return Ok(()),
        };
        let Ok(connection) = connection else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(|request: http::Request<_>| async move {
                Ok::<_, std::convert::Infallible>(answer(request.uri().path()))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(connection.stream), service);
            let mut connection = std::pin::pin!(connection);
            let served =
                match tokio::time::timeout(STATS_CONNECTION_TIME, connection.as_mut()).await {
                    Ok(served) => Ok(served),
                    Err(_) => {
                        // A scrape in progress is answered, then the connection closes.
                        connection.as_mut().graceful_shutdown();
                        tokio::time::timeout(Duration::from_secs(5), connection).await
                    }
                };
            match served {
                Ok(Err(error)) => tracing::debug!(%error, "stats connection ended with an error"),
                Err(_) => tracing::debug!("stats connection open too long: closed"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// The stats process a master forks: serves `socket` on a runtime of its own until killed;
/// returns its exit code.
pub fn serve_process(socket: &super::BoundSocket) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: stats: cannot start a runtime: {error}");
            return 1;
        }
    };
    let served = runtime.block_on(async {
        let listener = socket.listener()?;
        serve(listener, Shutdown::new()).await
    });
    match served {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: stats: {error}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000), 0);
        assert_eq!(bucket(1_001), 1);
        assert_eq!(bucket(10_000_000), LATENCY_BUCKETS_US.len() - 1);
        assert_eq!(bucket(10_000_001), LATENCY_BUCKETS_US.len());
    }

    #[test]
    fn the_servers_own_error_heads_are_recognised() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(own_error_head(hyper), Some(Limit::HeaderFieldsTooLarge));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(own_error_head(bad), Some(Limit::BadRequest));
        let app = b"HTTP/1.1 400 Bad Request\r\nServer: gateway/0\r\n\r\n";
        assert_eq!(own_error_head(app), None);
        let slow =
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(own_error_head(slow), None, "counted where it is written");
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(own_error_head(ok), None);
        assert_eq!(own_error_head(b"HTTP/1.1 431 Req"), None, "no whole head");
        assert_eq!(
            own_error_head(b"\x01\x06\x00\x01 431 whatever\r\n\r\n"),
            None
        );
    }

    #[test]
    fn combined_log_format() {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        environ.set("REQUEST_URI", "/a?b=\"c\"");
        environ.set("SERVER_PROTOCOL", "HTTP/1.1");
        environ.set("REMOTE_ADDR", "10.0.0.1");
        environ.set("HTTP_USER_AGENT", "curl/8");
        let entry = access_entry(&environ);
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(
            combined_line(&entry, time, 200, 2326),
            "10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\\"c\\\" HTTP/1.1\" 200 2326 \"-\" \"curl/8\""
        );
        assert_eq!(
            clf_time(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "POST");
        environ.set("SCRIPT_NAME", "/app");
        environ.set("PATH_INFO", "/x");
        environ.set("QUERY_STRING", "q=1");
        environ.set("SERVER_PROTOCOL", "HTTP/1.0");
        let line = combined_line(&access_entry(&environ), time, 404, 0);
        assert!(
            line.starts_with("- - - [")
                && line.ends_with("\"POST /app/x?q=1 HTTP/1.0\" 404 - \"-\" \"-\""),
            "{line}"
        );
    }

    #[test]
    fn prometheus_text_sums_the_workers() {
        let mut a = Counters {
            requests: 3,
            ..Counters::default()
        };
        a.latency[0] = 2;
        a.latency[BUCKETS - 1] = 1;
        a.limits[Limit::PayloadTooLarge.index()] = 1;
        let snapshot = Snapshot {
            total: a.clone(),
            workers: vec![WorkerView {
                pid: 42,
                counters: a,
                rss: 1024,
                retiring: false,
            }],
        };
        let text = prometheus(&snapshot);
        for line in [
            "gateway_requests_total 3",
            "gateway_request_duration_seconds_bucket{le=\"0.001\"} 2",
            "gateway_request_duration_seconds_bucket{le=\"10\"} 2",
            "gateway_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "gateway_request_duration_seconds_count 3",
            "gateway_limit_hits_total{limit=\"413\"} 1",
            "gateway_worker_requests_total{pid=\"42\"} 3",
            "gateway_worker_resident_bytes{pid=\"42\"} 1024",
            "gateway_workers 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(json(&snapshot).contains("\"limits\":{\"400\":0,\"408\":0,\"413\":1"));
    }
}
