//! The conformance suite: wire-level cases, each with a stable id, what it checks and the rule
//! it comes from, run against a server through the [protocol clients](crate::clients).
//!
//! The server is given by address and protocol ([`Target`]), so the suite holds any server to
//! the contract, this project's or not. It serves the [echo app](crate::echo) there (the
//! cases read what the app saw from its JSON answers). When the suite serves its own app
//! ([`SuiteApp`], in-process through [`Builtin`]), more cases run: an app that fails, that
//! streams only when the client has its first chunk, that notices the client leaving; and the
//! app is wrapped in the [validator](crate::Validator), so every case also checks the server
//! from the app's side (not under CGI, where the app runs in another process).
//!
//! ```no_run
//! use gateway_testkit::conformance::{self, Options, Target};
//!
//! let report = conformance::run(&Target::Http("127.0.0.1:8000".into()), &Options::default());
//! println!("{}", report.table());
//! assert_eq!(report.failed(), 0);
//! ```

mod app;
mod cases;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gateway_core::Builder;
use gateway_servers::fastcgi::codec::{self as fcgi_codec, Role, StreamKind};
use gateway_servers::runtime::Config;

pub use app::{ERROR_LINE, FIRST_CHUNK, HOLD_TICK, Hooks, LAST_CHUNK, SuiteApp};

use crate::clients::{
    self, FrontEnd, Reply, Stream, WireBody, WireRequest, cgi, fastcgi, http, uwsgi,
};
use crate::{Mode, Report as ValidatorReport, TestServer, Validator};

/// A protocol the suite speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// FastCGI.
    FastCgi,
    /// uwsgi.
    Uwsgi,
    /// CGI.
    Cgi,
}

impl Protocol {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::FastCgi => "fastcgi",
            Protocol::Uwsgi => "uwsgi",
            Protocol::Cgi => "cgi",
        }
    }
}

/// The server under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP server at `host:port`.
    Http(String),
    /// A FastCGI application at `host:port` or `unix:/path`.
    FastCgi(String),
    /// A uwsgi server at `host:port` or `unix:/path`.
    Uwsgi(String),
    /// A CGI program and its arguments.
    Cgi(Vec<String>),
}

impl Target {
    /// Its protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            Target::Http(_) => Protocol::Http,
            Target::FastCgi(_) => Protocol::FastCgi,
            Target::Uwsgi(_) => Protocol::Uwsgi,
            Target::Cgi(_) => Protocol::Cgi,
        }
    }

    /// Its address (the program, for CGI).
    pub fn address(&self) -> &str {
        match self {
            Target::Http(a) | Target::FastCgi(a) | Target::Uwsgi(a) => a,
            Target::Cgi(program) => program.first().map_or("", String::as_str),
        }
    }
}

/// What a case needs of the server beyond speaking its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The echo app (every server the suite is pointed at serves it).
    Echo,
    /// The suite's own app ([`SuiteApp`]'s `/__suite/` paths).
    SuiteApp,
    /// The suite's own app in this process ([`Hooks`]).
    InProcess,
    /// The server's body limit, given in [`Limits`].
    BodyLimit,
    /// A FastCGI application that plays every role (Responder, Authorizer, Filter).
    AllRoles,
}

/// A case of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its stable id.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// The rule it comes from.
    pub rule: &'static str,
    /// The protocols it applies to (all when empty).
    pub protocols: &'static [Protocol],
    /// What it needs.
    pub needs: Needs,
    check: fn(&Ctx<'_>) -> Result<(), String>,
}

impl Case {
    const fn new(
        id: &'static str,
        title: &'static str,
        rule: &'static str,
        protocols: &'static [Protocol],
        needs: Needs,
        check: fn(&Ctx<'_>) -> Result<(), String>,
    ) -> Case {
        Case {
            id,
            title,
            rule,
            protocols,
            needs,
            check,
        }
    }

    /// Whether it applies to a protocol.
    pub fn applies_to(&self, protocol: Protocol) -> bool {
        self.protocols.is_empty() || self.protocols.contains(&protocol)
    }
}

/// Every case of the suite.
pub fn cases() -> &'static [Case] {
    cases::CASES
}

/// The server's limits, where the suite knows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body it takes.
    pub max_body: Option<u64>,
}

/// How the suite runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The server serves the suite's own app ([`SuiteApp`]), not just the echo app.
    pub suite_app: bool,
    /// The suite's app runs in this process: its hooks.
    pub hooks: Option<Hooks>,
    /// The validator's report of the suite's app, when it is wrapped in one.
    pub validator: Option<ValidatorReport>,
    /// The server's limits.
    pub limits: Limits,
    /// The FastCGI application plays every role.
    pub all_roles: bool,
    /// What the FastCGI, uwsgi and CGI clients say about the front end.
    pub front: FrontEnd,
    /// Run only the cases whose id starts with one of these (all when empty).
    pub only: Vec<String>,
}

/// The result of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed, and why.
    Fail(String),
    /// It did not run, and why.
    Skip(String),
}

/// A case and its result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// Its result.
    pub verdict: Verdict,
    /// How long it took.
    pub elapsed: Duration,
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The protocol the server was checked on.
    pub protocol: Protocol,
    /// Every case, in order.
    pub outcomes: Vec<Outcome>,
}

/// What the cases use to talk to the server.
pub(crate) struct Ctx<'a> {
    target: &'a Target,
    hooks: Option<&'a Hooks>,
    limits: Limits,
    front: &'a FrontEnd,
}

/// An echo answer: the reply and its JSON.
pub(crate) struct Echo {
    reply: Reply,
    json: serde_json::Value,
}

impl Echo {
    fn var(&self, name: &str) -> Option<&str> {
        self.json["environ"][name].as_str()
    }

    fn body_len(&self) -> Option<u64> {
        self.json["body_len"].as_u64()
    }

    fn body_sha256(&self) -> Option<String> {
        self.json["body_sha256"].as_str().map(str::to_owned)
    }
}

/// A request whose answer is read as raw bytes, as they arrive.
pub(crate) struct RawExchange {
    stream: Stream,
    seen: Vec<u8>,
}

impl RawExchange {
    /// Reads until the peer closes the connection (or resets it): false when `wait` passed
    /// first.
    fn read_to_close(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_timeout(Some(left)).is_err() {
                return false;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.seen.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    /// Reads until `needle` has arrived (true) or `wait` has passed (false).
    fn read_until(&mut self, needle: &[u8], wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.seen.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_timeout(Some(left)).is_err() {
                return false;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.seen.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl Ctx<'_> {
    fn unique(&self, what: &str) -> String {
        format!(
            "{what}-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn vars(&self, request: &WireRequest) -> Vec<(bytes::Bytes, bytes::Bytes)> {
        clients::cgi_vars(request, self.front)
    }

    /// Sends a request through the target's protocol.
    fn send(&self, request: &WireRequest) -> Result<Reply, String> {
        let address = self.target.address();
        let reply = match self.target {
            Target::Http(_) => http::exchange(address, request),
            Target::FastCgi(_) => fastcgi::exchange(address, request, self.front).map(|(r, _)| r),
            Target::Uwsgi(_) => uwsgi::exchange(address, request, self.front),
            Target::Cgi(_) => return self.cgi_run(request)?.reply.map_err(|e| e.to_string()),
        };
        reply.map_err(|e| format!("{}: {e}", self.target.protocol().name()))
    }

    /// Sends a request that the echo app answers 200 with JSON.
    fn echo(&self, request: &WireRequest) -> Result<Echo, String> {
        let reply = self.send(request)?;
        if reply.status != 200 {
            return Err(format!(
                "status {} (want 200): {:?}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
            ));
        }
        let json = reply.json()?;
        Ok(Echo { reply, json })
    }

    fn http_connection(&self) -> Result<http::Connection, String> {
        http::Connection::connect(self.target.address()).map_err(|e| format!("connect: {e}"))
    }

    fn fastcgi_exchange(&self, request: &WireRequest) -> Result<(Reply, fastcgi::Outcome), String> {
        fastcgi::exchange(self.target.address(), request, self.front).map_err(|e| e.to_string())
    }

    fn cgi_run(&self, request: &WireRequest) -> Result<cgi::CgiRun, String> {
        self.cgi_run_with_extra(request, b"")
    }

    fn cgi_run_with_extra(
        &self,
        request: &WireRequest,
        extra: &[u8],
    ) -> Result<cgi::CgiRun, String> {
        let Target::Cgi(program) = self.target else {
            return Err("not a CGI target".into());
        };
        cgi::run(program, request, self.front, extra)
            .map_err(|e| format!("running the program: {e}"))
    }

    /// The bytes of `request` on the wire of the target's protocol (FastCGI: one Responder
    /// request without FCGI_KEEP_CONN).
    fn wire(&self, request: &WireRequest) -> Result<Vec<u8>, String> {
        let body = request.body.bytes();
        Ok(match self.target {
            Target::Http(_) => {
                let mut wire = http::encode_head(request);
                match &request.body {
                    WireBody::Chunked(chunks) => wire.extend(http::encode_chunks(chunks)),
                    _ => wire.extend_from_slice(&body),
                }
                wire
            }
            Target::FastCgi(_) => {
                let mut out = BytesMut::new();
                fcgi_codec::encode_begin_request(&mut out, 1, Role::Responder, false);
                let mut pairs = BytesMut::new();
                for (name, value) in self.vars(request) {
                    fcgi_codec::encode_pair(&mut pairs, &name, &value);
                }
                fcgi_codec::encode_stream(&mut out, StreamKind::Params, 1, &pairs);
                fcgi_codec::encode_end_of_stream(&mut out, StreamKind::Params, 1);
                fcgi_codec::encode_stream(&mut out, StreamKind::Stdin, 1, &body);
                fcgi_codec::encode_end_of_stream(&mut out, StreamKind::Stdin, 1);
                out.to_vec()
            }
            Target::Uwsgi(_) => {
                let mut out = BytesMut::new();
                let vars = self.vars(request);
                gateway_servers::uwsgi::codec::encode_request(
                    &mut out,
                    0,
                    vars.iter().map(|(n, v)| (&n[..], &v[..])),
                )
                .map_err(|e| e.to_string())?;
                out.extend_from_slice(&body);
                out.to_vec()
            }
            Target::Cgi(_) => return Err("CGI has no connection".into()),
        })
    }

    /// Sends a request on a new connection and returns it for reading raw bytes.
    fn raw_exchange(&self, request: &WireRequest) -> Result<RawExchange, String> {
        let wire = self.wire(request)?;
        let mut stream =
            Stream::connect(self.target.address()).map_err(|e| format!("connect: {e}"))?;
        stream.write_all(&wire).map_err(|e| e.to_string())?;
        Ok(RawExchange {
            stream,
            seen: Vec::new(),
        })
    }

    /// What follows the head of the answer to `request` on the wire (HTTP and uwsgi: until
    /// the connection closes; FastCGI: the rest of stdout).
    fn raw_body_after_head(&self, request: &WireRequest) -> Result<Vec<u8>, String> {
        let raw = match self.target {
            Target::FastCgi(_) => self.fastcgi_exchange(request)?.1.stdout,
            Target::Http(_) => {
                let request = request.clone().header("Connection", "close");
                let mut exchange = self.raw_exchange(&request)?;
                let _ = exchange.stream.set_timeout(Some(Duration::from_secs(5)));
                let _ = exchange.stream.read_to_end(&mut exchange.seen);
                exchange.seen
            }
            _ => {
                let mut exchange = self.raw_exchange(request)?;
                let _ = exchange.stream.set_timeout(Some(Duration::from_secs(5)));
                let _ = exchange.stream.read_to_end(&mut exchange.seen);
                exchange.seen
            }
        };
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|at| at + 2))
            .ok_or_else(|| format!("no whole head in {:?}", String::from_utf8_lossy(&raw)))?;
        Ok(raw[end..].to_vec())
    }
}

/// Runs the suite against `target`.
pub fn run(target: &Target, options: &Options) -> Report {
    let protocol = target.protocol();
    let cx = Ctx {
        target,
        hooks: options.hooks.as_ref(),
        limits: options.limits,
        front: &options.front,
    };
    let mut outcomes = Vec::new();
    for case in cases() {
        if !options.only.is_empty() && !options.only.iter().any(|p| case.id.starts_with(p.as_str()))
        {
            continue;
        }
        let skip = if !case.applies_to(protocol) {
            Some(format!("not a {} case", protocol.name()))
        } else {
            match case.needs {
                Needs::Echo => None,
                Needs::SuiteApp if options.suite_app => None,
                Needs::SuiteApp => Some("needs the suite's own app".to_owned()),
                Needs::InProcess if options.hooks.is_some() => None,
                Needs::InProcess => Some("needs the suite's own app in this process".to_owned()),
                Needs::BodyLimit if options.limits.max_body.is_some() => None,
                Needs::BodyLimit => Some("needs the server's body limit (--max-body)".to_owned()),
                Needs::AllRoles if options.all_roles => None,
                Needs::AllRoles => {
                    Some("needs an application that plays every role (--all-roles)".to_owned())
                }
            }
        };
        if let Some(why) = skip {
            outcomes.push(Outcome {
                case: *case,
                verdict: Verdict::Skip(why),
                elapsed: Duration::ZERO,
            });
            continue;
        }
        // Counted as they are read below: the server's side only (the echo app's own answers
        // add violations of the app's side as the run goes).
        let seen = options
            .validator
            .as_ref()
            .map_or(0, |r| server_side(r).len());
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.check)(&cx)))
            .unwrap_or_else(|_| Err("the case panicked".to_owned()));
        // The app's side: what the validator saw the server do during the case.
        let result = result.and_then(|()| match &options.validator {
            Some(report) => {
                let violations = server_side(report);
                match violations.get(seen..).and_then(<[_]>::first) {
                    Some(violation) => Err(format!("validator: {violation}")),
                    None => Ok(()),
                }
            }
            None => Ok(()),
        });
        outcomes.push(Outcome {
            case: *case,
            verdict: match result {
                Ok(()) => Verdict::Pass,
                Err(why) => Verdict::Fail(why),
            },
            elapsed: started.elapsed(),
        });
    }
    Report { protocol, outcomes }
}

/// The violations of the server's side. The app's side is the echo app's, whose answers are
/// fixed by its specification (a `Content-Type` on its 204 and 304 answers, a body for HEAD).
fn server_side(report: &ValidatorReport) -> Vec<crate::Violation> {
    report
        .violations()
        .into_iter()
        .filter(|v| v.side == "server")
        .collect()
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Pass))
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Fail(_)))
    }

    /// How many cases were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Skip(_)))
    }

    fn count(&self, f: impl Fn(&Verdict) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.verdict)).count()
    }

    /// The failures: id and reason.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.outcomes
            .iter()
            .filter_map(|o| match &o.verdict {
                Verdict::Fail(why) => Some((o.case.id, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The final line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// The line before the summary: how many cases did not apply or could not run.
    fn skipped_line(&self) -> String {
        format!(
            "{} skipped (not for this protocol, or needing what the server does not offer)\n",
            self.skipped()
        )
    }

    /// A plain-text table: id, result, reason; then the summary line.
    pub fn table(&self) -> String {
        let width = self
            .outcomes
            .iter()
            .map(|o| o.case.id.len())
            .max()
            .unwrap_or(2)
            .max(4);
        let mut out = format!("{:width$}  {:6}  {}\n", "case", "result", "reason");
        for outcome in &self.outcomes {
            let (result, reason) = verdict_text(&outcome.verdict);
            out.push_str(&format!(
                "{:width$}  {:6}  {}\n",
                outcome.case.id, result, reason
            ));
        }
        out.push_str(&self.skipped_line());
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// A Markdown table: id, what it checks, the rule, the result and the reason.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Conformance of a {} server\n\n| case | checks | rule | result | reason |\n|---|---|---|---|---|\n",
            self.protocol.name()
        );
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        for outcome in &self.outcomes {
            let (result, reason) = verdict_text(&outcome.verdict);
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                outcome.case.id,
                cell(outcome.case.title),
                cell(outcome.case.rule),
                result,
                cell(reason)
            ));
        }
        out.push('\n');
        out.push_str(&self.skipped_line());
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The report as JSON: the protocol, each case and the counts.
    pub fn json(&self) -> String {
        let cases: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .map(|o| {
                let (result, reason) = verdict_text(&o.verdict);
                serde_json::json!({
                    "id": o.case.id,
                    "checks": o.case.title,
                    "rule": o.case.rule,
                    "result": result,
                    "reason": reason,
                    "millis": o.elapsed.as_millis() as u64,
                })
            })
            .collect();
        serde_json::json!({
            "protocol": self.protocol.name(),
            "cases": cases,
            "passed": self.passed(),
            "failed": self.failed(),
            "skipped": self.skipped(),
        })
        .to_string()
    }
}

fn verdict_text(verdict: &Verdict) -> (&'static str, &str) {
    match verdict {
        Verdict::Pass => ("pass", ""),
        Verdict::Fail(why) => ("FAIL", why),
        Verdict::Skip(why) => ("skip", why),
    }
}

/// This project's own server of a protocol, serving the suite's app wrapped in a strict
/// validator, in this process: the suite then runs every case, and checks both sides. For CGI
/// the app runs in the program given, once per request, with no validator (every CGI case
/// still runs: none needs the app in this process).
#[derive(Debug)]
pub struct Builtin {
    /// The server (HTTP, FastCGI and uwsgi; `None` for CGI, which runs a program).
    pub server: Option<TestServer>,
    /// Where it is.
    pub target: Target,
    /// The options that go with it.
    pub options: Options,
}

/// The body limit the built-in servers are given (so `limit-body` can run).
pub const BUILTIN_MAX_BODY: u64 = 4 * 1024 * 1024;

impl Builtin {
    /// Starts this project's server for `protocol` with the suite's app. For CGI, `cgi_program` is
    /// a program that serves [`SuiteApp`] as CGI (the `gateway-conformance` binary does).
    pub fn start(protocol: Protocol, cgi_program: Option<Vec<String>>) -> Builtin {
        let (app, hooks) = SuiteApp::new();
        let validator = Validator::new(Mode::Strict);
        let report = validator.report();
        let app = Builder::new().with(validator).app(app);
        let mut config = Config::default();
        config.max_body_size = BUILTIN_MAX_BODY;
        let (server, target) = match protocol {
            Protocol::Http => {
                let server = TestServer::start(move |listener, stop| {
                    let runtime = gateway_servers::runtime::Runtime::new(app, config);
                    gateway_servers::http::serve(listener, runtime, stop)
                });
                let target = Target::Http(server.addr.to_string());
                (Some(server), target)
            }
            Protocol::FastCgi => {
                let server = TestServer::start(move |listener, stop| {
                    let runtime = gateway_servers::runtime::Runtime::new(app, config);
                    let mut settings = gateway_servers::fastcgi::protocol::Settings::default();
                    settings.roles = gateway_servers::fastcgi::protocol::Roles::ALL;
                    gateway_servers::fastcgi::server::serve(listener, runtime, stop, settings)
                });
                let target = Target::FastCgi(server.addr.to_string());
                (Some(server), target)
            }
            Protocol::Uwsgi => {
                let server = TestServer::start(move |listener, stop| {
                    let runtime = gateway_servers::runtime::Runtime::new(app, config);
                    let max_vars = gateway_servers::uwsgi::codec::MAX_VARS_SIZE;
                    gateway_servers::uwsgi::server::serve(listener, runtime, stop, max_vars)
                });
                let target = Target::Uwsgi(server.addr.to_string());
                (Some(server), target)
            }
            Protocol::Cgi => (None, Target::Cgi(cgi_program.unwrap_or_default())),
        };
        let in_process = server.is_some();
        Builtin {
            server,
            target,
            options: Options {
                suite_app: true,
                hooks: in_process.then_some(hooks),
                validator: in_process.then_some(report),
                limits: Limits {
                    max_body: in_process.then_some(BUILTIN_MAX_BODY),
                },
                all_roles: protocol == Protocol::FastCgi,
                ..Options::default()
            },
        }
    }

    /// Runs the suite against it.
    pub fn run(&self) -> Report {
        run(&self.target, &self.options)
    }
}
