//! The validator (lint): a middleware that sits between a server and an app and reports every
//! contract violation of either side, by rule.
//!
//! Each [`Rule`] has a stable, unique id and a one-line explanation ([`Rule::explanation`];
//! [`Rule::ALL`] lists them). The id is `R` and a number, with a letter after it when one
//! numbered rule is checked as two (`R65`, `R65b`). The numbers come from a list of contract
//! rules gathered from PEP 3333 and the lints of other ecosystems, kept outside this
//! repository; PEP 3333 itself numbers no rules. The conformance cases cite the same numbers
//! (`rule 40`): `gateway-conformance --list` prints each case with its rule and what it checks.
//! Errors break the contract; warnings are what the lints of other ecosystems warn about. In
//! [`Mode::Strict`] an error fails the request (a 500 before the head, an aborted response
//! after it); in [`Mode::Warn`] violations are logged to the request's error stream and the
//! request goes on. Either way every violation lands in the [`Report`].
//!
//! Wrap a middleware on both sides to check it as a server and as an app at once:
//! `Validator(middleware(Validator(app)))`. The inner validator checks the environ and the
//! polls the middleware makes as its app's server; the outer one checks the head and body it
//! answers with as an app. Together they also check the rules of middleware alone, which
//! neither side sees by itself (they go to the outer validator's report, `side` `middleware`):
//!
//! - R66, a value per chunk of the app: in one poll of the middleware's body (by its server),
//!   the app's body is polled no more once it yielded a non-empty chunk. A middleware that
//!   needs more of the app's body before it can send anything yields an empty chunk (or, in
//!   Rust's terms, asks to be polled again), as PEP 3333 asks; one that loops over the app's
//!   body, or collects it in its body's first poll, waits for several app chunks, which is
//!   what PEP 3333 forbids. No timing is involved: what counts is which poll drives which.
//!   This is the rule's letter: a middleware that drops an app chunk and polls on for the next
//!   in the same poll is reported too (PEP 3333 has it yield an empty chunk instead).
//! - R67, the app's body is the server's to drive: it is polled only inside a poll of the
//!   middleware's body, never in the middleware's call (it would not return as soon as the app
//!   does) and never by the middleware on its own (a drain when the middleware's body is
//!   dropped; a thread or task that pumps it, whenever it polls between the server's polls).
//!
//! The two validators find each other through the environ's extensions: the outer one puts in
//! its marks (its call of the middleware running, a poll of the middleware's body running, a
//! chunk of the app's body seen in that poll), the inner one takes them out and checks each
//! poll of the app's body against them. A middleware that passes the environ on (or a copy of
//! it, for a retry) is checked; one that builds a new environ for its app is not paired, and
//! nothing is reported of it. A poll of an app's body that has already ended counts for
//! nothing: it cannot wait.
//!
//! What of rules 66 and 67 is not checked, and why: that the middleware's call returns as soon
//! as the app's does, beyond not polling the app's body in it (a call that waits on anything
//! else can only be seen by timing it); that it never pushes data the app's body yielded
//! through the parent's `write()` (the outer validator sees the bytes written, but not whether
//! they came from the app's body, once transformed); that it passes on response forms it does
//! not understand (a body is a [`Body`], the only form). Of the other rules meant for running
//! code, 55 (no `write()` from inside the body) is the driver's to enforce: it refuses
//! `write()` once the call has returned; the close of a replaced body (68) is seen by the
//! [`TestClient`](crate::TestClient)'s close probe, and a length a middleware left stale by the
//! outer validator (R61). The rules checked on the wire (Content-Length cuts, HEAD, `Expect`,
//! path decoding, ...) are the conformance suite's.
//!
//! What the app pushes through [`Writer::write`](gateway_core::Writer::write) is part of its
//! response body, and the validator sees it (through
//! [`StartResponse::map_write`]): written bytes and body bytes count toward the same
//! `Content-Length` and follow the same rules. In strict mode a write that breaks a rule is
//! refused with the violation as its error.
//!
//! R12 is a warning (PEP 3333's "should"): a variable with no value is left out rather than
//! set empty, so that an app can test whether `REMOTE_USER` is there. The variables the rules
//! let be empty are those of [`Environ::may_be_empty`]: `SCRIPT_NAME` (R15: the root mount) and
//! `PATH_INFO` (R17: the mount itself, without a trailing slash), `QUERY_STRING` (R21: present
//! even with no query), `CONTENT_TYPE` and `CONTENT_LENGTH` (R22: a request that carried the
//! header empty) and every `HTTP_*` variable (R25: a header may have an empty value). Any other
//! empty variable is reported: `REMOTE_USER` without authentication, `AUTH_TYPE`,
//! `REMOTE_HOST`, `REMOTE_IDENT`, `HTTPS` without TLS, `PATH_TRANSLATED` without `PATH_INFO`, a
//! variable of the server's own; the required ones (R14, R23, R24) are reported under their
//! own rules too. This project's servers leave such variables out when a front end sends them
//! (`gateway_servers::params`).
//!
//! Rules the types of this contract enforce (by the same numbers), so that no run can break
//! them: the calling convention (1-5, 7: an app is a `Fn(Environ, StartResponse)`), the
//! environ's container and value types (8-10, 28, 29: bytes, a typed scheme, a constant
//! version), the input and error streams' methods (30, 34, 37, 38: `Input` and `ErrorStream`
//! are the only types), status and header syntax and encoding (40-44: `StatusCode`,
//! `HeaderName`, `HeaderValue`), a second start without an error (50: `start` takes `self`),
//! `exc_info` (51, 52: `restart_on_error`), `write()` before start (54: the writer comes from
//! `start`), bodies of bytes (the first half of 57: `Data = Bytes`), the close of the body (58:
//! dropping is closing, and the driver drops it on every path).
//!
//! The second half of 57, "if `len(iterable)` works, it is accurate", is checked (`R57`): in
//! Rust the length a body claims is its [`size_hint`](http_body::Body::size_hint), which hyper
//! sends as the `Content-Length` when it is exact and a middleware may decide by. The
//! validator reads the hint before each poll and holds the body to every bound it gave: more
//! bytes than an upper bound (an exact size is both bounds) break it as they come, fewer than
//! a lower bound when the body ends. The validated body passes the app's hint on, so that a
//! server frames it as it would without the validator.
//!
//! ```
//! use gateway_core::{Body, Builder, Environ, StartResponse};
//! use gateway_testkit::{Mode, Rule, TestClient, Validator};
//!
//! let validator = Validator::new(Mode::Warn);
//! let report = validator.report();
//! let app = Builder::new().with(validator).app(|_: Environ, start: StartResponse| {
//!     let mut headers = http::HeaderMap::new();
//!     headers.insert("content-length", http::HeaderValue::from_static("10"));
//!     let _ = start.start(http::StatusCode::OK, headers);
//!     Body::from("short") // 5 bytes, not 10
//! });
//! TestClient::new(app).get("/").send();
//! assert!(report.contains(Rule::ContentLengthMismatch));
//! ```

use std::fmt;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::{
    App, Body, BoxError, Environ, ErrorStream, Middleware, StartResponse, is_hop_by_hop,
};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use http_body::Frame;

use crate::close::{CloseGuard, CloseProbe};

/// How serious a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The contract is broken.
    Error,
    /// Allowed, but other ecosystems' lints warn about it.
    Warning,
}

macro_rules! rules {
    ($($variant:ident = $id:literal, $severity:ident, $text:literal;)*) => {
        /// A rule of the contract the validator checks.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Rule {
            $(
                #[doc = $text]
                $variant,
            )*
        }

        impl Rule {
            /// Every rule the validator checks.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),*];

            /// The stable, unique id: `R` and the rule's number (see the module's
            /// documentation), and a letter when the validator checks that rule as more than
            /// one `Rule`.
            pub const fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id,)* }
            }

            /// The one-line explanation.
            pub const fn explanation(self) -> &'static str {
                match self { $(Rule::$variant => $text,)* }
            }

            /// Error or warning.
            pub const fn severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$severity,)* }
            }
        }
    };
}

rules! {
    EmptyVariable = "R12", Warning, "A variable with no value is left out, not set empty (an app tests whether REMOTE_USER is there): only SCRIPT_NAME, PATH_INFO, QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH and HTTP_* variables may be empty.";
    NoContentHeaderAliases = "R13", Error, "HTTP_CONTENT_TYPE and HTTP_CONTENT_LENGTH never appear: they are CONTENT_TYPE and CONTENT_LENGTH.";
    RequestMethod = "R14", Error, "REQUEST_METHOD is present and is a method token.";
    ScriptName = "R15", Error, "SCRIPT_NAME is empty or starts with '/', and is never exactly '/'.";
    PathInfo = "R17", Error, "PATH_INFO is empty or starts with '/'.";
    PathPresent = "R18", Error, "PATH_INFO is set unless SCRIPT_NAME is set and not empty (so at least one of them is set, and an empty SCRIPT_NAME comes with a PATH_INFO).";
    QueryString = "R21", Warning, "QUERY_STRING is present, empty when there is no query.";
    ContentVariables = "R22", Error, "CONTENT_LENGTH, when present and not empty, is digits only (CONTENT_TYPE and CONTENT_LENGTH may be empty).";
    ServerNameAndPort = "R23", Error, "SERVER_NAME and SERVER_PORT are present and not empty; SERVER_PORT is digits.";
    ServerProtocol = "R24", Error, "SERVER_PROTOCOL is present and looks like HTTP/1.1.";
    HeaderVariableNames = "R25", Error, "HTTP_* variable names are header names in upper case with '-' as '_': no lower-case letter, no '-', nothing a header name cannot hold.";
    HopByHop = "R45", Error, "The app sends no hop-by-hop header (Connection, Transfer-Encoding, ...).";
    StatusHeader = "R42", Error, "There is never a Status header: the status is start's argument.";
    ContentTypeMissing = "R48", Warning, "A response with a body has a Content-Type.";
    DataBeforeStart = "R49", Error, "The response is started before the body yields its first non-empty chunk.";
    NeverStarted = "R53", Error, "The response is started before the body ends.";
    SizeHint = "R57", Error, "A body's size hint is right (WSGI's len() of the iterable): from the moment it is read, the body yields at least its lower bound and at most its upper bound of bytes (exactly the exact size).";
    ContentLengthMismatch = "R61", Error, "A response's body has exactly the length its Content-Length declares.";
    ContentLengthInvalid = "R61b", Error, "A response's Content-Length is ASCII digits only (at most 19), and repeated values are equal.";
    HeadBody = "R64", Warning, "A HEAD response's body is empty (the server strips it, but the app need not make one).";
    BodyForbidden = "R65", Error, "1xx, 204 and 304 responses have no body, and 1xx and 204 no Content-Length.";
    ContentTypeWithoutBody = "R65b", Warning, "1xx, 204 and 304 responses have no Content-Type (Rack and PSGI forbid it).";
    MiddlewareBatches = "R66", Error, "A middleware never waits for several chunks of the app's body: it yields a value per chunk the app yields (an empty one if it has nothing yet), so in one poll of its own body it polls the app's body no more once that yielded a chunk (needs a validator on each side).";
    MiddlewareConsumes = "R67", Error, "A middleware never consumes the app's body itself: the app's body is polled only inside a poll of the middleware's body by its server, never in the middleware's call, nor by the middleware on its own (needs a validator on each side).";
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id(), self.explanation())
    }
}

/// A violation: the rule, and what broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// Which side broke it: `server`, `app`, or `middleware` (R66 and R67, seen by a validator
    /// on each side of it and reported to the outer one's report).
    pub side: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} side): {} [{}]",
            self.rule.id(),
            self.side,
            self.rule.explanation(),
            self.detail
        )
    }
}

impl std::error::Error for Violation {}

/// The violations a validator saw; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Report {
    violations: Arc<Mutex<Vec<Violation>>>,
}

impl Report {
    /// Every violation so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `rule` was broken.
    pub fn contains(&self, rule: Rule) -> bool {
        self.violations().iter().any(|v| v.rule == rule)
    }

    /// Whether nothing was broken.
    pub fn is_clean(&self) -> bool {
        self.violations().is_empty()
    }

    /// Forgets the violations so far.
    pub fn clear(&self) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn push(&self, violation: Violation) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(violation);
    }
}

/// What the validator does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Errors fail the request; warnings are logged.
    #[default]
    Strict,
    /// Everything is logged; requests go on.
    Warn,
}

/// The middleware. See the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Validator {
    mode: Mode,
    report: Report,
}

impl Validator {
    /// A validator in `mode`, with a new report.
    pub fn new(mode: Mode) -> Self {
        Validator {
            mode,
            report: Report::default(),
        }
    }

    /// The report its violations go to.
    pub fn report(&self) -> Report {
        self.report.clone()
    }
}

impl<A> Middleware<A> for Validator {
    type App = ValidatorApp<A>;

    fn wrap(&self, app: A) -> ValidatorApp<A> {
        ValidatorApp {
            inner: app,
            mode: self.mode,
            report: self.report.clone(),
        }
    }
}

/// An app between two validated sides; made by [`Validator`].
#[derive(Debug, Clone)]
pub struct ValidatorApp<A> {
    inner: A,
    mode: Mode,
    report: Report,
}

/// What the validator learns of one response.
#[derive(Debug, Default)]
struct Seen {
    /// The status, the declared length, and whether there is a Content-Type.
    started: Option<(StatusCode, Option<u64>, bool)>,
    sent: u64,
    /// An error to fail the request with (strict mode).
    pending: Option<Violation>,
}

#[derive(Clone)]
struct Recorder {
    mode: Mode,
    report: Report,
    errors: ErrorStream,
    seen: Arc<Mutex<Seen>>,
    is_head: bool,
}

impl Recorder {
    fn record(&self, rule: Rule, side: &'static str, detail: String) {
        let violation = Violation { rule, side, detail };
        let mut errors = self.errors.clone();
        let _ = writeln!(errors, "validator: {violation}");
        if self.mode == Mode::Strict && rule.severity() == Severity::Error {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.pending.get_or_insert(violation.clone());
        }
        self.report.push(violation);
    }

    fn take_pending(&self) -> Option<Violation> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .take()
    }

    /// The error that fails the request in strict mode, left in place for the body to fail
    /// with too.
    fn pending(&self) -> Option<Violation> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .clone()
    }

    /// `len` bytes of response data, written or yielded by the body: both are the response body,
    /// checked by the same rules.
    fn on_data(&self, len: usize) {
        let (started, sent) = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.sent += len as u64;
            (seen.started, seen.sent)
        };
        match started {
            None => self.record(
                Rule::DataBeforeStart,
                "app",
                format!("{len} bytes before start"),
            ),
            Some((status, declared, typed)) => {
                let first = sent == len as u64;
                if has_no_body(status) {
                    self.record(
                        Rule::BodyForbidden,
                        "app",
                        format!("{len} body bytes on a {status}"),
                    );
                } else if self.is_head && first {
                    self.record(Rule::HeadBody, "app", "body bytes for HEAD".into());
                } else if first && !typed {
                    self.record(
                        Rule::ContentTypeMissing,
                        "app",
                        "a body without Content-Type".into(),
                    );
                }
                if let Some(declared) = declared
                    && sent > declared
                    && !has_no_body(status)
                    && !self.is_head
                {
                    self.record(
                        Rule::ContentLengthMismatch,
                        "app",
                        format!("{sent} bytes, Content-Length {declared}"),
                    );
                }
            }
        }
    }

    /// The end of the response body.
    fn on_end(&self) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (started, sent) = (seen.started, seen.sent);
        drop(seen);
        match started {
            None => self.record(Rule::NeverStarted, "app", "the body ended".into()),
            Some((status, Some(declared), _)) => {
                if sent < declared && !has_no_body(status) && !self.is_head {
                    self.record(
                        Rule::ContentLengthMismatch,
                        "app",
                        format!("{sent} bytes, Content-Length {declared}"),
                    );
                }
            }
            Some((_, None, _)) => {}
        }
    }
}

fn is_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The server-side rules, on the environ the app is about to get.
fn check_environ(environ: &Environ, record: &impl Fn(Rule, String)) {
    for name in ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        if environ.contains(name) {
            record(Rule::NoContentHeaderAliases, format!("{name} is set"));
        }
    }
    match environ.get("REQUEST_METHOD") {
        Some(method) if is_token(method) => {}
        other => record(Rule::RequestMethod, format!("REQUEST_METHOD is {other:?}")),
    }
    let script_name = environ.get("SCRIPT_NAME");
    if let Some(script) = script_name
        && (script == b"/" || (!script.is_empty() && !script.starts_with(b"/")))
    {
        record(
            Rule::ScriptName,
            format!("SCRIPT_NAME is {:?}", String::from_utf8_lossy(script)),
        );
    }
    let path_info = environ.get("PATH_INFO");
    if let Some(path) = path_info
        && !path.is_empty()
        && !path.starts_with(b"/")
    {
        record(
            Rule::PathInfo,
            format!("PATH_INFO is {:?}", String::from_utf8_lossy(path)),
        );
    }
    // wsgiref.validate's rule: with no SCRIPT_NAME, or an empty one, the path is all in
    // PATH_INFO, which must then be there (even empty, as it is for CONNECT's authority-form).
    if path_info.is_none() && script_name.is_none_or(<[u8]>::is_empty) {
        let script = match script_name {
            None => "SCRIPT_NAME is not set",
            Some(_) => "SCRIPT_NAME is empty",
        };
        record(
            Rule::PathPresent,
            format!("{script} and PATH_INFO is not set"),
        );
    }
    if !environ.contains("QUERY_STRING") {
        record(Rule::QueryString, "QUERY_STRING is not set".into());
    }
    // PEP 3333 lets CONTENT_TYPE and CONTENT_LENGTH be empty or absent, and rule 22 wants them
    // present whenever the request carried the header, so a server that passes an empty header
    // on as an empty variable is right: only a length that is not a number is wrong.
    if let Some(length) = environ.get("CONTENT_LENGTH")
        && !length.iter().all(u8::is_ascii_digit)
    {
        record(
            Rule::ContentVariables,
            format!("CONTENT_LENGTH is {:?}", String::from_utf8_lossy(length)),
        );
    }
    let name_ok = environ.get("SERVER_NAME").is_some_and(|n| !n.is_empty());
    let port_ok = environ
        .get("SERVER_PORT")
        .is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    if !name_ok || !port_ok {
        record(
            Rule::ServerNameAndPort,
            format!(
                "SERVER_NAME {:?}, SERVER_PORT {:?}",
                environ.get("SERVER_NAME").map(String::from_utf8_lossy),
                environ.get("SERVER_PORT").map(String::from_utf8_lossy)
            ),
        );
    }
    let protocol_ok = environ.get("SERVER_PROTOCOL").is_some_and(|p| {
        let Some(version) = p.strip_prefix(b"HTTP/") else {
            return false;
        };
        match version {
            [major] => major.is_ascii_digit(),
            [major, b'.', minor] => major.is_ascii_digit() && minor.is_ascii_digit(),
            _ => false,
        }
    });
    if !protocol_ok {
        record(
            Rule::ServerProtocol,
            format!(
                "SERVER_PROTOCOL is {:?}",
                environ.get("SERVER_PROTOCOL").map(String::from_utf8_lossy)
            ),
        );
    }
    // A header name is a token, so besides letters, digits and `-` it may hold `.`, `~`, `!`
    // and the other token characters (`X.Trace`), which the variable keeps as they are: only a
    // lower-case letter, a `-` (which becomes `_`) or a byte no header name holds is wrong.
    for (name, value) in environ.vars() {
        if value.is_empty() && !Environ::may_be_empty(name) {
            record(
                Rule::EmptyVariable,
                format!("{} is empty", String::from_utf8_lossy(name)),
            );
        }
        if let Some(rest) = name.strip_prefix(b"HTTP_")
            && (!is_token(rest) || rest.iter().any(|&b| b.is_ascii_lowercase() || b == b'-'))
        {
            record(
                Rule::HeaderVariableNames,
                format!("{:?}", String::from_utf8_lossy(name)),
            );
        }
    }
}

fn has_no_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The most digits a Content-Length may have: every number of 19 digits fits a `u64`. The
/// driver reads lengths by the same rule.
const MAX_LENGTH_DIGITS: usize = 19;

/// The Content-Length the headers declare, read as the driver reads it: each value is 1 to
/// [`MAX_LENGTH_DIGITS`] ASCII digits (no sign, no spaces, no list), and repeated values are
/// equal. `Err` holds the value that breaks this.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let digits = value.as_bytes();
        let parsed = ((1..=MAX_LENGTH_DIGITS).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit))
        .then(|| {
            // At most 19 digits: the number fits, and no step of the sum overflows.
            digits
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
        });
        match (parsed, declared) {
            (Some(n), None) => declared = Some(n),
            (Some(n), Some(m)) if n == m => {}
            _ => return Err(format!("{value:?}")),
        }
    }
    Ok(declared)
}

/// The app-side rules on a head, as the app passes it to `start`.
fn check_head(status: StatusCode, headers: &HeaderMap, recorder: &Recorder) {
    for name in headers.keys() {
        if name == "status" {
            recorder.record(Rule::StatusHeader, "app", "a Status header".into());
        } else if is_hop_by_hop(name) {
            recorder.record(Rule::HopByHop, "app", format!("`{name}` header"));
        }
    }
    if has_no_body(status) {
        if headers.contains_key(CONTENT_TYPE) {
            recorder.record(
                Rule::ContentTypeWithoutBody,
                "app",
                format!("Content-Type on a {status}"),
            );
        }
        if status != StatusCode::NOT_MODIFIED && headers.contains_key(CONTENT_LENGTH) {
            recorder.record(
                Rule::BodyForbidden,
                "app",
                format!("Content-Length on a {status}"),
            );
        }
    }
}

impl<A: App> App for ValidatorApp<A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let recorder = Recorder {
            mode: self.mode,
            report: self.report.clone(),
            errors: environ.errors().clone(),
            seen: Arc::new(Mutex::new(Seen::default())),
            is_head: environ.request_method() == "HEAD",
        };
        check_environ(&environ, &|rule, detail| {
            recorder.record(rule, "server", detail)
        });
        let head_hook = recorder.clone();
        let write_hook = recorder.clone();
        let start = start
            .map_head(move |status: &mut StatusCode, headers: &mut HeaderMap| {
                check_head(*status, headers, &head_hook);
                let declared = declared_length(headers).unwrap_or_else(|value| {
                    head_hook.record(
                        Rule::ContentLengthInvalid,
                        "app",
                        format!("Content-Length {value}"),
                    );
                    None
                });
                let typed = headers.contains_key(CONTENT_TYPE);
                head_hook
                    .seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .started = Some((*status, declared, typed));
            })
            .map_write(move |data: Bytes| {
                if !data.is_empty() {
                    write_hook.on_data(data.len());
                }
                // In strict mode an error refuses the write, as it fails a body chunk: the data
                // never goes out, and the body fails the response at its first poll. An empty
                // write is refused too: it would fix the head, and the driver could then send
                // it without polling the body.
                match write_hook.pending() {
                    Some(violation) => Err(std::io::Error::other(violation)),
                    None => Ok(data),
                }
            });
        // A test client's probe learns whether this body, the app's own, is ever dropped.
        let closed = CloseProbe::of(&environ).map(|probe| probe.guard());
        // The pairing of a validator outside, if one called this one through a middleware;
        // then this one's own, for a validator a middleware inside calls.
        let paired = environ.extensions_mut().remove::<Pairing>();
        let pairing = Pairing::new(recorder.clone());
        environ.extensions_mut().insert(pairing.clone());
        let body = {
            let _calling = pairing.mark(
                |state| state.in_call = true,
                |state| {
                    state.in_call = false;
                },
            );
            self.inner.call(environ, start)
        };
        let mut checked = Checked {
            body,
            recorder,
            done: false,
            hinted: Hinted::default(),
            paired,
            pairing,
            _closed: closed,
        };
        checked.read_hint();
        Body::new(checked)
    }
}

/// The app's body, watched.
struct Checked {
    body: Body,
    recorder: Recorder,
    done: bool,
    hinted: Hinted,
    /// The pairing a validator outside put in the environ, when a middleware called this
    /// validator: the polls of this body are checked against it (R66, R67).
    paired: Option<Pairing>,
    /// This validator's pairing, on which its polls of the body are marked.
    pairing: Pairing,
    _closed: Option<CloseGuard>,
}

/// What a validator shares with the validators a middleware calls inside it, to check the
/// middleware's rules 66 and 67. It travels inward in the environ's extensions: each validator
/// takes the one the environ brings (from a validator outside) and puts in its own. The outer
/// validator marks its call of the middleware and each of its polls of the middleware's body;
/// the inner one, at each poll of the app's body, checks what is marked, and reports to the
/// outer one's recorder.
#[derive(Clone)]
struct Pairing(Arc<Paired>);

struct Paired {
    recorder: Recorder,
    state: Mutex<PairState>,
}

#[derive(Debug, Default)]
struct PairState {
    /// The middleware's call is running.
    in_call: bool,
    /// Polls of the middleware's body are running (one, unless a body polls itself).
    polls: u32,
    /// In the poll running, the app's body yielded a non-empty chunk.
    app_yielded: bool,
    /// R66 and R67 are each reported once per request.
    reported_66: bool,
    reported_67: bool,
}

impl Pairing {
    fn new(recorder: Recorder) -> Self {
        Pairing(Arc::new(Paired {
            recorder,
            state: Mutex::new(PairState::default()),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PairState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `mark` now and `unmark` when the guard is dropped (a panic included).
    fn mark(&self, mark: fn(&mut PairState), unmark: fn(&mut PairState)) -> Unmark<'_> {
        mark(&mut self.state());
        Unmark(self, unmark)
    }

    /// The app's body is about to be polled: by its server's poll of the middleware's body,
    /// and not a second time in that poll after it yielded a chunk.
    fn before_app_poll(&self) {
        let mut state = self.state();
        let (rule, detail) = if state.in_call {
            (
                Rule::MiddlewareConsumes,
                "the app's body was polled in the middleware's call",
            )
        } else if state.polls == 0 {
            (
                Rule::MiddlewareConsumes,
                "the app's body was polled while no poll of the middleware's body was running",
            )
        } else if state.app_yielded {
            (
                Rule::MiddlewareBatches,
                "the app's body was polled again in the poll of the middleware's body in which \
                 it yielded a chunk",
            )
        } else {
            return;
        };
        let reported = match rule {
            Rule::MiddlewareBatches => &mut state.reported_66,
            _ => &mut state.reported_67,
        };
        if std::mem::replace(reported, true) {
            return;
        }
        drop(state);
        self.0.recorder.record(rule, "middleware", detail.into());
    }
}

/// Undoes a [`Pairing`]'s mark when dropped.
struct Unmark<'a>(&'a Pairing, fn(&mut PairState));

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        (self.1)(&mut self.0.state());
    }
}

/// What the body's size hints promised (R57): the fewest and the most bytes it may yield in
/// all, from every hint read so far, each counted from the bytes yielded when it was read.
#[derive(Debug, Default)]
struct Hinted {
    /// The bytes the body yielded (not those written: a hint is the body's).
    yielded: u64,
    at_least: u64,
    at_most: Option<u64>,
    /// R57 is reported once per body.
    reported: bool,
}

impl Checked {
    /// Reads the body's size hint: from here on it yields at least its lower bound and at most
    /// its upper bound. Read before each poll, when the body is in the state it describes.
    fn read_hint(&mut self) {
        let hint = http_body::Body::size_hint(&self.body);
        let hinted = &mut self.hinted;
        hinted.at_least = hinted
            .at_least
            .max(hinted.yielded.saturating_add(hint.lower()));
        if let Some(upper) = hint.upper() {
            let most = hinted.yielded.saturating_add(upper);
            hinted.at_most = Some(hinted.at_most.map_or(most, |m| m.min(most)));
        }
    }

    /// `len` bytes yielded: more than an upper bound allowed breaks R57 at once.
    fn on_yield(&mut self, len: usize) {
        self.hinted.yielded += len as u64;
        let hinted = &self.hinted;
        if let Some(most) = hinted.at_most.filter(|&most| hinted.yielded > most) {
            let detail = format!(
                "{} bytes yielded, its size hints allowed at most {most}",
                hinted.yielded
            );
            self.size_hint_broken(detail);
        }
    }

    /// The body's end: fewer bytes than a lower bound promised break R57.
    fn on_body_end(&mut self) {
        let hinted = &self.hinted;
        if hinted.yielded < hinted.at_least {
            let detail = format!(
                "the body ended after {} bytes, its size hints promised at least {}",
                hinted.yielded, hinted.at_least
            );
            self.size_hint_broken(detail);
        }
        self.recorder.on_end();
    }

    fn size_hint_broken(&mut self, detail: String) {
        if !std::mem::replace(&mut self.hinted.reported, true) {
            self.recorder.record(Rule::SizeHint, "app", detail);
        }
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        // A body known to be at its end may be dropped without the poll that says so (the
        // driver does this when the app wrote its whole response and returned an empty body):
        // that is its end all the same. A body that failed is `done`: it never ended.
        if !self.done && http_body::Body::is_end_stream(&self.body) {
            self.done = true;
            self.on_body_end();
        }
    }
}

impl http_body::Body for Checked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(violation) = self.recorder.take_pending() {
            self.done = true;
            return Poll::Ready(Some(Err(Box::new(violation))));
        }
        self.read_hint();
        if let Some(paired) = &self.paired {
            paired.before_app_poll();
        }
        let polled = {
            let this = &mut *self;
            let _polling = this.pairing.mark(
                |state| {
                    state.polls += 1;
                    state.app_yielded = false;
                },
                |state| state.polls -= 1,
            );
            Pin::new(&mut this.body).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    if let Some(paired) = &self.paired {
                        paired.state().app_yielded = true;
                    }
                    let len = data.len();
                    self.recorder.on_data(len);
                    self.on_yield(len);
                }
                if http_body::Body::is_end_stream(&self.body) {
                    // A body known to end here (a full body) may never be polled again.
                    self.done = true;
                    self.on_body_end();
                }
            }
            Poll::Ready(None) => {
                self.done = true;
                self.on_body_end();
            }
            Poll::Ready(Some(Err(_))) => {
                // The app failed (`Body::error`, a failing stream): the response is over, but
                // the body did not end, so neither the start nor the length is checked (the
                // body left behind may well say it is at its end).
                self.done = true;
            }
            Poll::Pending => {}
        }
        if let Some(violation) = self.recorder.take_pending() {
            self.done = true;
            return Poll::Ready(Some(Err(Box::new(violation))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || http_body::Body::is_end_stream(&self.body)
    }

    // The app's hint, passed on: a server frames by it (hyper sends an exact size as the
    // Content-Length), and a middleware may decide by it, as it would without the validator.
    fn size_hint(&self) -> http_body::SizeHint {
        if self.done {
            http_body::SizeHint::with_exact(0)
        } else {
            http_body::Body::size_hint(&self.body)
        }
    }
}
