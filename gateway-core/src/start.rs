//! `start_response`: [`StartResponse`], the [`Writer`] it returns, and their rules.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::BoxError;

/// What the app and the driver share for one request: the head the app set, and what it
/// pushed through [`Writer::write`].
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The status and headers from the last successful start.
    pub(crate) head: Option<(StatusCode, HeaderMap)>,
    /// The head is fixed: it went out, or `write()` was called (which sends it).
    pub(crate) committed: bool,
    /// Data pushed with `write()`, not yet taken by the driver.
    pub(crate) written: VecDeque<Bytes>,
    /// How many bytes `write()` queued in all, against the head's Content-Length.
    pub(crate) written_len: u64,
    /// `write()` is refused once the app's call returned (PEP 3333: the body must not call it).
    pub(crate) writes_closed: bool,
    /// Why the last start was refused, for the driver's report.
    pub(crate) refused: Option<StartError>,
    /// Headers for the driver's 500, should the app fail before its head (see
    /// [`StartResponse::with_failure_header`]).
    pub(crate) failure_headers: FailureHeaders,
}

/// Headers that middleware asked the driver to put on its 500, in the order given.
pub(crate) type FailureHeaders = Vec<(HeaderName, HeaderValue)>;

impl State {
    /// Back to the initial state, for the next request.
    pub(crate) fn reset(&mut self) {
        self.head = None;
        self.committed = false;
        if !self.written.is_empty() {
            self.written.clear();
        }
        self.written_len = 0;
        self.writes_closed = false;
        self.refused = None;
        if !self.failure_headers.is_empty() {
            self.failure_headers.clear();
        }
    }

    /// Takes the headers for the driver's 500 (`None`, and no allocation, when there are none).
    #[inline]
    pub(crate) fn take_failure_headers(&mut self) -> Option<Box<FailureHeaders>> {
        if self.failure_headers.is_empty() {
            return None;
        }
        Some(Box::new(std::mem::take(&mut self.failure_headers)))
    }
}

thread_local! {
    /// One spare `Shared` per thread, so that a thread serving requests one after another
    /// allocates none.
    static SPARE: Cell<Option<Arc<Shared>>> = const { Cell::new(None) };
}

impl Shared {
    /// A `Shared` in its initial state: the thread's spare one, or a new one.
    #[inline]
    pub(crate) fn fresh() -> Arc<Shared> {
        SPARE.with(Cell::take).unwrap_or_default()
    }

    /// Keeps `shared` as the thread's spare, if nothing else holds it (an app may keep its
    /// `Writer`).
    pub(crate) fn recycle(mut shared: Arc<Shared>) {
        if let Some(inner) = Arc::get_mut(&mut shared) {
            inner.state_mut().reset();
            SPARE.with(|spare| spare.set(Some(shared)));
        }
    }

    /// Keeps `shared`, whose state was [reset](State::reset), as the thread's spare; the caller
    /// holds the only reference (it checked with `Arc::get_mut`, and gave none away since).
    #[inline]
    pub(crate) fn recycle_unique(shared: Arc<Shared>) {
        debug_assert_eq!(Arc::strong_count(&shared), 1);
        // The spare was taken by `fresh`: there is nothing to drop in its place.
        let spare = SPARE.replace(Some(shared));
        debug_assert!(spare.is_none());
        drop(spare);
    }

    /// The state, without a lock: only for the one holder of the `Shared`.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave the state half-updated in a way that
        // matters here (each update is one assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Hook = Box<dyn FnMut(&mut StatusCode, &mut HeaderMap) + Send>;

type WriteHook = Box<dyn FnMut(Bytes) -> io::Result<Bytes> + Send>;

/// The middleware hooks of a `StartResponse` or `Writer`, both kinds in one list (one vector
/// to move and drop, and none allocated when there is no middleware), outermost first.
#[derive(Default)]
struct Hooks(ManuallyDrop<Vec<AnyHook>>);

impl Drop for Hooks {
    /// Drops the hooks, if there are any: an empty vector (no middleware, as most apps run)
    /// is left as it is, without the call to its drop.
    #[inline]
    fn drop(&mut self) {
        if self.0.capacity() != 0 {
            self.drop_all();
        }
    }
}

impl Hooks {
    /// The rest of [`Drop::drop`], outlined so that the drop of hooks with no vector is small
    /// enough to be inlined where a `StartResponse` or `Writer` is dropped.
    #[inline(never)]
    fn drop_all(&mut self) {
        drop(std::mem::take(&mut *self.0));
    }
}

enum AnyHook {
    Head(Hook),
    Write(WriteHook),
}

impl Hooks {
    /// The head hooks, innermost first (the order they run in).
    fn head(&mut self) -> impl Iterator<Item = &mut Hook> {
        self.0.iter_mut().rev().filter_map(|hook| match hook {
            AnyHook::Head(hook) => Some(hook),
            AnyHook::Write(_) => None,
        })
    }

    /// The hooks on written data, innermost first (the order they run in).
    fn write(&mut self) -> impl Iterator<Item = &mut WriteHook> {
        self.0.iter_mut().rev().filter_map(|hook| match hook {
            AnyHook::Write(hook) => Some(hook),
            AnyHook::Head(_) => None,
        })
    }

    fn head_count(&self) -> usize {
        self.0
            .iter()
            .filter(|hook| matches!(hook, AnyHook::Head(_)))
            .count()
    }

    fn write_count(&self) -> usize {
        self.0.len() - self.head_count()
    }
}

/// WSGI's `start_response`: how an app sets the status and headers of its response.
///
/// An app gets one with each call and [`start`](StartResponse::start)s it exactly once: `start`
/// takes `self`, so a second plain call does not compile. It may start it in the call itself,
/// or later, inside its body before the first chunk (a lazy or async body). Nothing is sent by
/// `start`: the head goes out with the first non-empty chunk, the first [`Writer::write`], or
/// the end of the body.
///
/// `start` checks what types cannot: there is no `Status` header and no hop-by-hop header
/// (`Connection`, `Keep-Alive`, `Proxy-Authenticate`, `Proxy-Authorization`,
/// `Proxy-Connection`, `TE`, `Trailers`, `Transfer-Encoding`, `Upgrade`), which belong to the server. Header names and values are
/// already valid tokens and field values by the types of [`http`].
///
/// The only second call WSGI allows, with `exc_info`, is [`Writer::restart_on_error`].
///
/// ```
/// use gateway_core::{Body, Environ, StartResponse};
/// use http::{header, HeaderMap, HeaderValue, StatusCode};
///
/// fn app(_environ: Environ, start: StartResponse) -> Body {
///     let mut headers = HeaderMap::new();
///     headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
///     match start.start(StatusCode::OK, headers) {
///         Ok(_writer) => Body::from("Hello"),
///         Err(error) => Body::error(error),
///     }
/// }
/// # let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
/// # assert_eq!(response.status(), 200);
/// ```
pub struct StartResponse {
    shared: Arc<Shared>,
    /// Middleware hooks on the head and on written data, outermost first; applied innermost
    /// first.
    hooks: Hooks,
}

impl StartResponse {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StartResponse {
            shared,
            hooks: Hooks::default(),
        }
    }

    /// Sets the status and headers of the response, and returns the [`Writer`] for apps that
    /// push their output.
    ///
    /// Fails, and the response becomes a 500, when the headers hold a `Status` or a hop-by-hop
    /// header. Calling `start` again is not possible after that, even to fix the headers: return
    /// [`Body::error`](crate::Body::error) with the error.
    pub fn start(mut self, status: StatusCode, headers: HeaderMap) -> Result<Writer, StartError> {
        set_head(&self.shared, &mut self.hooks, status, headers, false)?;
        Ok(Writer {
            shared: self.shared,
            hooks: self.hooks,
        })
    }

    /// Returns a `StartResponse` that lets `hook` see and change the status and headers before
    /// they are checked and stored. This is how a middleware rewrites the head of the app it
    /// wraps: it gives the app the mapped `StartResponse`. Hooks run innermost first (the hook
    /// of the middleware closest to the app runs first), on `start` and on
    /// [`Writer::restart_on_error`].
    ///
    /// ```
    /// use gateway_core::{App, Body, Environ, StartResponse};
    /// use http::{HeaderValue, StatusCode};
    ///
    /// /// Adds `X-Frame-Options: DENY` to every response of the app it wraps.
    /// struct DenyFrames<A>(A);
    ///
    /// impl<A: App> App for DenyFrames<A> {
    ///     fn call(&self, environ: Environ, start: StartResponse) -> Body {
    ///         let start = start.map_head(|_status: &mut StatusCode, headers: &mut http::HeaderMap| {
    ///             headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    ///         });
    ///         self.0.call(environ, start)
    ///     }
    /// }
    /// # let app = DenyFrames(|_e: Environ, s: StartResponse| {
    /// #     s.start(StatusCode::OK, Default::default()).unwrap();
    /// #     Body::empty()
    /// # });
    /// # let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
    /// # assert_eq!(response.headers()["x-frame-options"], "DENY");
    /// ```
    pub fn map_head<F>(mut self, hook: F) -> StartResponse
    where
        F: FnMut(&mut StatusCode, &mut HeaderMap) + Send + 'static,
    {
        self.hooks.0.push(AnyHook::Head(Box::new(hook)));
        self
    }

    /// Returns a `StartResponse` that lets `hook` see and change each chunk the app pushes
    /// through [`Writer::write`], before it is queued. This is the `write()` half of what
    /// [`map_head`](StartResponse::map_head) is for the head: written data never passes through
    /// the body the app returns, so a middleware that transforms or checks the body must hook
    /// it here as well, or it misses that data.
    ///
    /// Hooks run innermost first, as head hooks do; each gets what the hook inside it returned.
    /// They see every write, empty ones too: an empty write sends nothing but fixes the head,
    /// so a hook that checks the head must be able to refuse it. A hook may return an empty
    /// chunk to hold the data back. A hook that fails makes the write fail with its error: the
    /// chunk is not queued and the head is not fixed by it, though the hooks that ran before it
    /// saw the chunk.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use gateway_core::{App, Body, Environ, StartResponse};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// /// Counts the bytes the app it wraps writes, and refuses more than `limit` of them.
    /// struct WriteLimit<A>(A, usize);
    ///
    /// impl<A: App> App for WriteLimit<A> {
    ///     fn call(&self, environ: Environ, start: StartResponse) -> Body {
    ///         let mut left = self.1;
    ///         let start = start.map_write(move |data: Bytes| {
    ///             left = left
    ///                 .checked_sub(data.len())
    ///                 .ok_or_else(|| std::io::Error::other("too much written"))?;
    ///             Ok(data)
    ///         });
    ///         self.0.call(environ, start)
    ///     }
    /// }
    ///
    /// let app = WriteLimit(|_: Environ, start: StartResponse| {
    ///     let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
    ///     assert!(writer.write("four").is_ok());
    ///     assert!(writer.write("more").is_err());
    ///     Body::empty()
    /// }, 6);
    /// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
    /// let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
    /// assert_eq!(body.unwrap().to_bytes(), "four");
    /// ```
    pub fn map_write<F>(mut self, hook: F) -> StartResponse
    where
        F: FnMut(Bytes) -> io::Result<Bytes> + Send + 'static,
    {
        self.hooks.0.push(AnyHook::Write(Box::new(hook)));
        self
    }

    /// Returns a `StartResponse` whose response carries `name: value` even when the app fails
    /// before its head: the [driver](crate::driver)'s 500 gets the header too (the app's own
    /// head gets only what [`map_head`](StartResponse::map_head) hooks add). Made for headers a
    /// client or an operator needs on every answer, such as a request id or CORS headers.
    ///
    /// The 500 keeps its own `Content-Type` and `Content-Length`; a header it already has is
    /// not added again, and a `Status` or hop-by-hop header is left out, as
    /// [`start`](StartResponse::start) would refuse it. When a middleware that plays server
    /// relays the failure outward (see [`convert::respond`](crate::convert::respond)), the 500
    /// of the driver outside carries these headers too. A server that answers in place of the
    /// 500 (413, 408 or 400, when the request body broke a limit) keeps them as well.
    ///
    /// ```
    /// use gateway_core::{Body, Environ, StartResponse};
    /// use http::HeaderValue;
    ///
    /// let app = |_: Environ, start: StartResponse| -> Body {
    ///     let _start = start.with_failure_header(
    ///         http::header::HeaderName::from_static("x-request-id"),
    ///         HeaderValue::from_static("42"),
    ///     );
    ///     panic!("a bug before the head");
    /// };
    /// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
    /// assert_eq!(response.status(), 500);
    /// assert_eq!(response.headers()["x-request-id"], "42");
    /// ```
    pub fn with_failure_header(self, name: HeaderName, value: HeaderValue) -> StartResponse {
        self.shared.lock().failure_headers.push((name, value));
        self
    }
}

impl fmt::Debug for StartResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartResponse")
            .field("hooks", &self.hooks.head_count())
            .field("write_hooks", &self.hooks.write_count())
            .finish_non_exhaustive()
    }
}

/// What [`StartResponse::start`] returns: WSGI's `write()` callable, and the one way to start
/// the response a second time.
///
/// [`write`](Writer::write) pushes output before the app returns its body, for apps written in
/// that style; the data goes out before the body, and the first `write` sends the head. The
/// data is queued until the server takes it, so an app that produces much output should return
/// a streaming [`Body`](crate::Body) instead. Calling `write` from inside the returned body is
/// refused, as PEP 3333 requires. Middleware sees and transforms written data with
/// [`StartResponse::map_write`].
///
/// Dropping the writer is fine: most apps never use it.
pub struct Writer {
    shared: Arc<Shared>,
    hooks: Hooks,
}

impl Writer {
    /// Pushes `data` out, after anything written before and before the returned body. The first
    /// call fixes the head: [`Writer::restart_on_error`] fails after it.
    ///
    /// The [`map_write`](StartResponse::map_write) hooks of the middleware around the app get
    /// the data first; when one of them fails, so does the write, and nothing is queued.
    ///
    /// A write that would take what was written past the `Content-Length` of the head (of a
    /// status that has a body: not 1xx, 204 or 304) fails with [`io::ErrorKind::InvalidInput`]
    /// and queues nothing, as PEP 3333 asks of a server; the data counted is what the hooks
    /// return. (A returned body that goes past it is cut there instead: see the
    /// [driver](crate::driver).)
    ///
    /// ```
    /// use gateway_core::{Body, Environ, StartResponse};
    /// use http::{HeaderMap, HeaderValue, StatusCode};
    ///
    /// let app = |_: Environ, start: StartResponse| {
    ///     let mut headers = HeaderMap::new();
    ///     headers.insert("content-length", HeaderValue::from_static("5"));
    ///     let mut writer = start.start(StatusCode::OK, headers).unwrap();
    ///     writer.write("hel").unwrap();
    ///     let refused = writer.write("lo!").unwrap_err();
    ///     assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    ///     writer.write("lo").unwrap();
    ///     Body::empty()
    /// };
    /// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
    /// let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
    /// assert_eq!(body.unwrap().to_bytes(), "hello");
    /// ```
    pub fn write(&mut self, data: impl Into<Bytes>) -> io::Result<()> {
        // The lock is held while the hooks run, so that no hook sees data that is then refused
        // because the app's call returned in the meantime.
        let mut state = self.shared.lock();
        if state.writes_closed {
            return Err(io::Error::other(
                "write() called after the app returned its body; yield the data from the body",
            ));
        }
        let mut data = data.into();
        for hook in self.hooks.write() {
            data = hook(data)?;
        }
        if !data.is_empty()
            && let Some(declared) = write_limit(&state)
        {
            let total = state.written_len + data.len() as u64;
            if total > declared {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "write() of {} bytes refused: the response's Content-Length is \
                             {declared}, and {} bytes were written before",
                        data.len(),
                        state.written_len
                    ),
                ));
            }
        }
        state.committed = true;
        if !data.is_empty() {
            state.written_len += data.len() as u64;
            state.written.push_back(data);
        }
        Ok(())
    }

    /// WSGI's `start_response(status, headers, exc_info)`: replaces the status and headers
    /// after an error, if nothing was sent yet. Once the head is out (or `write` was called) it
    /// fails, handing back `error`, which the app then returns as
    /// [`Body::error`](crate::Body::error) so that the server aborts the response.
    ///
    /// ```
    /// use gateway_core::{Body, Environ, StartResponse};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// fn app(_environ: Environ, start: StartResponse) -> Body {
    ///     let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
    ///     let failure = std::io::Error::other("the database went away");
    ///     match writer.restart_on_error(failure.into(), StatusCode::SERVICE_UNAVAILABLE, HeaderMap::new()) {
    ///         Ok(()) => Body::from("try again later\n"),
    ///         Err(error) => Body::error(error),
    ///     }
    /// }
    /// # let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
    /// # assert_eq!(response.status(), 503);
    /// ```
    pub fn restart_on_error(
        &mut self,
        error: BoxError,
        status: StatusCode,
        headers: HeaderMap,
    ) -> Result<(), BoxError> {
        match set_head(&self.shared, &mut self.hooks, status, headers, true) {
            Ok(()) => Ok(()),
            Err(StartError::AlreadySent) => Err(error),
            Err(refused) => Err(refused.into()),
        }
    }
}

impl io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Writer::write(self, Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("write_hooks", &self.hooks.write_count())
            .finish_non_exhaustive()
    }
}

/// The Content-Length that bounds written data: the head's, when its status has a body and the
/// value is valid (an invalid one fails the response when the driver takes the head).
fn write_limit(state: &State) -> Option<u64> {
    let (status, headers) = state.head.as_ref()?;
    if !crate::driver::status_has_body(*status) {
        return None;
    }
    crate::driver::declared_length(headers.get_all(http::header::CONTENT_LENGTH).iter())
        .ok()
        .flatten()
}

/// Runs the head hooks on a head, checks it and stores it. A restart fails with
/// [`StartError::AlreadySent`], before any hook runs, once the head is fixed.
fn set_head(
    shared: &Shared,
    hooks: &mut Hooks,
    mut status: StatusCode,
    mut headers: HeaderMap,
    restart: bool,
) -> Result<(), StartError> {
    // The lock is held while the hooks run, as `write` holds it for its hooks: the driver,
    // which may take the head on another thread at any time, cannot take it between the check
    // and the store, and no hook sees a head that is then refused because it did.
    let mut state = shared.lock();
    if restart && state.committed {
        return Err(StartError::AlreadySent);
    }
    for hook in hooks.head() {
        hook(&mut status, &mut headers);
    }
    match check_headers(&headers) {
        Ok(()) => {
            state.head = Some((status, headers));
            state.refused = None;
            Ok(())
        }
        Err(e) => {
            state.refused = Some(e.clone());
            Err(e)
        }
    }
}

/// Checks response headers by the rules `start` enforces.
pub(crate) fn check_headers(headers: &HeaderMap) -> Result<(), StartError> {
    for name in headers.keys() {
        let text = name.as_str();
        if text == "status" {
            return Err(StartError::StatusHeader);
        }
        if is_hop_by_hop_str(text) {
            return Err(StartError::HopByHop(name.clone()));
        }
    }
    Ok(())
}

/// Whether a header belongs to one connection and is the server's to manage: `Connection`,
/// `Keep-Alive`, `Proxy-Authenticate`, `Proxy-Authorization`, `Proxy-Connection`, `TE`,
/// `Trailers`, `Transfer-Encoding` and `Upgrade`.
///
/// ```
/// use gateway_core::is_hop_by_hop;
/// assert!(is_hop_by_hop(&http::header::TRANSFER_ENCODING));
/// assert!(!is_hop_by_hop(&http::header::CONTENT_LENGTH));
/// ```
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_str(name.as_str())
}

/// [`is_hop_by_hop`] on the text of a name.
#[inline(always)]
fn is_hop_by_hop_str(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Why [`StartResponse::start`] or [`Writer::restart_on_error`] refused a head.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// A hop-by-hop header: the server manages connections and transfer codings.
    HopByHop(HeaderName),
    /// A `Status` header: the status is the `status` argument.
    StatusHeader,
    /// A restart after the head was sent. [`Writer::restart_on_error`] hands back the app's
    /// error instead of this one.
    AlreadySent,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::HopByHop(name) => write!(
                f,
                "hop-by-hop header `{name}` in the response (the server manages it)"
            ),
            StartError::StatusHeader => {
                f.write_str("`Status` header in the response (the status is an argument)")
            }
            StartError::AlreadySent => f.write_str("the response head was already sent"),
        }
    }
}

impl std::error::Error for StartError {}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn pair() -> (StartResponse, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        (StartResponse::new(shared.clone()), shared)
    }

    #[test]
    fn start_stores_the_head_and_sends_nothing() {
        let (start, shared) = pair();
        let _writer = start.start(StatusCode::CREATED, HeaderMap::new()).unwrap();
        let state = shared.lock();
        assert_eq!(state.head.as_ref().unwrap().0, StatusCode::CREATED);
        assert!(!state.committed);
    }

    #[test]
    fn hop_by_hop_and_status_headers_are_refused() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "te",
        ] {
            let (start, shared) = pair();
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            let err = start.start(StatusCode::OK, headers).unwrap_err();
            assert!(matches!(err, StartError::HopByHop(_)), "{name}");
            assert!(shared.lock().head.is_none());
            assert!(shared.lock().refused.is_some());
        }
        let (start, _) = pair();
        let mut headers = HeaderMap::new();
        headers.insert("status", HeaderValue::from_static("200"));
        assert_eq!(
            start.start(StatusCode::OK, headers).unwrap_err(),
            StartError::StatusHeader
        );
    }

    #[test]
    fn restart_replaces_the_head_until_something_is_written() {
        let (start, shared) = pair();
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        writer
            .restart_on_error("first".into(), StatusCode::BAD_GATEWAY, HeaderMap::new())
            .unwrap();
        assert_eq!(
            shared.lock().head.as_ref().unwrap().0,
            StatusCode::BAD_GATEWAY
        );
        writer.write("x").unwrap();
        let err = writer
            .restart_on_error("second".into(), StatusCode::IM_A_TEAPOT, HeaderMap::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "second", "the original error comes back");
        assert_eq!(
            shared.lock().head.as_ref().unwrap().0,
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn a_restart_that_loses_the_head_to_the_driver_hands_back_the_apps_error() {
        // While the hooks of a restart run, another thread (the driver's) takes the head if the
        // state lets it: the restart must either win whole or hand back the app's error.
        let (start, shared) = pair();
        let driver = shared.clone();
        let hooked = Arc::new(Mutex::new(Vec::new()));
        let seen = hooked.clone();
        let start = start.map_head(move |status: &mut StatusCode, _: &mut HeaderMap| {
            seen.lock().unwrap().push(*status);
            if *status == StatusCode::SERVICE_UNAVAILABLE {
                let driver = driver.clone();
                std::thread::spawn(move || {
                    if let Ok(mut state) = driver.state.try_lock() {
                        state.committed = true;
                    }
                })
                .join()
                .unwrap();
            }
        });
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        let restarted = writer.restart_on_error(
            "the app's error".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            HeaderMap::new(),
        );
        let head = shared.lock().head.as_ref().unwrap().0;
        match restarted {
            Ok(()) => assert_eq!(head, StatusCode::SERVICE_UNAVAILABLE),
            Err(error) => {
                assert_eq!(error.to_string(), "the app's error");
                assert_eq!(head, StatusCode::OK);
            }
        }

        // Once the head is fixed, a restart runs no hook: none sees a head that is not sent.
        shared.lock().committed = true;
        hooked.lock().unwrap().clear();
        let error = writer
            .restart_on_error("again".into(), StatusCode::BAD_GATEWAY, HeaderMap::new())
            .unwrap_err();
        assert_eq!(error.to_string(), "again");
        assert!(hooked.lock().unwrap().is_empty());
    }

    #[test]
    fn writes_queue_in_order_and_are_refused_after_the_call() {
        let (start, shared) = pair();
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        writer.write("a").unwrap();
        io::Write::write_all(&mut writer, b"b").unwrap();
        assert_eq!(shared.lock().written, ["a", "b"]);
        shared.lock().writes_closed = true;
        assert!(writer.write("c").is_err());
    }

    #[test]
    fn writes_past_the_content_length_are_refused_whole() {
        let with_length = |status: StatusCode, length: &'static str| {
            let (start, shared) = pair();
            let mut headers = HeaderMap::new();
            headers.insert("content-length", HeaderValue::from_static(length));
            (start.start(status, headers).unwrap(), shared)
        };
        let (mut writer, shared) = with_length(StatusCode::OK, "5");
        writer.write("hel").unwrap();
        let err = writer.write("lo!").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("Content-Length is 5"), "{err}");
        assert_eq!(shared.lock().written, ["hel"], "nothing of it is queued");
        writer.write("lo").unwrap();
        assert!(writer.write("!").is_err());
        assert_eq!(shared.lock().written, ["hel", "lo"]);

        // The first write alone can be too long, and then it does not fix the head.
        let (mut writer, shared) = with_length(StatusCode::OK, "0");
        assert!(writer.write("x").is_err());
        assert!(!shared.lock().committed);
        writer.write("").unwrap();

        // No body to bound (the driver drops it), or a length the driver refuses anyway.
        for (status, length) in [
            (StatusCode::NOT_MODIFIED, "2"),
            (StatusCode::NO_CONTENT, "2"),
            (StatusCode::OK, "two"),
        ] {
            let (mut writer, _) = with_length(status, length);
            writer.write("three").unwrap();
        }
    }

    #[test]
    fn hooks_run_innermost_first() {
        let (start, shared) = pair();
        let start = start
            .map_head(|_, h: &mut HeaderMap| {
                h.append("x-order", HeaderValue::from_static("outer"));
            })
            .map_head(|s: &mut StatusCode, h: &mut HeaderMap| {
                *s = StatusCode::ACCEPTED;
                h.append("x-order", HeaderValue::from_static("inner"));
            });
        start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        let state = shared.lock();
        let (status, headers) = state.head.as_ref().unwrap();
        assert_eq!(*status, StatusCode::ACCEPTED);
        let order: Vec<_> = headers.get_all("x-order").iter().collect();
        assert_eq!(order, ["inner", "outer"]);
    }

    #[test]
    fn write_hooks_run_innermost_first_and_see_every_write() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (outer_seen, inner_seen) = (seen.clone(), seen.clone());
        let (start, shared) = pair();
        let start = start
            .map_write(move |data: Bytes| {
                outer_seen.lock().unwrap().push(format!("outer {data:?}"));
                Ok(Bytes::from([&data[..], b"!"].concat()))
            })
            .map_write(move |data: Bytes| {
                inner_seen.lock().unwrap().push(format!("inner {data:?}"));
                Ok(Bytes::from(data.to_ascii_uppercase()))
            });
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        writer.write("hi").unwrap();
        assert_eq!(shared.lock().written, ["HI!"]);
        writer.write("").unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "inner b\"hi\"",
                "outer b\"HI\"",
                "inner b\"\"",
                "outer b\"\""
            ]
        );
        assert_eq!(shared.lock().written, ["HI!", "!"]);
    }

    #[test]
    fn an_empty_write_fixes_the_head_unless_a_hook_refuses_it() {
        let (start, shared) = pair();
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        writer.write("").unwrap();
        assert!(shared.lock().committed);
        assert!(shared.lock().written.is_empty());

        let (start, shared) = pair();
        let start = start.map_write(|_| Err(io::Error::other("refused")));
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        assert_eq!(writer.write("").unwrap_err().to_string(), "refused");
        assert!(!shared.lock().committed);
    }

    #[test]
    fn a_failing_write_hook_fails_the_write_and_queues_nothing() {
        let (start, shared) = pair();
        let start = start
            .map_write(|_| Err(io::Error::other("refused")))
            .map_write(Ok);
        let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
        let err = writer.write("x").unwrap_err();
        assert_eq!(err.to_string(), "refused");
        let state = shared.lock();
        assert!(state.written.is_empty());
        assert!(!state.committed, "a refused write does not fix the head");
    }
}
