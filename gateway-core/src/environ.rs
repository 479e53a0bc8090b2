//! The request as the app sees it: [`Environ`], WSGI's `environ`.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;
use http::Extensions;

use crate::{ErrorStream, Input};

/// The version of this contract, WSGI's `wsgi.version`: `(1, 0)`.
pub const VERSION: (u16, u16) = (1, 0);

/// The scheme of the hop the server sees: `wsgi.url_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UrlScheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl UrlScheme {
    /// `"http"` or `"https"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }

    /// The port a URL of this scheme has when it names none.
    pub const fn default_port(self) -> u16 {
        match self {
            UrlScheme::Http => 80,
            UrlScheme::Https => 443,
        }
    }
}

impl fmt::Display for UrlScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request as the app sees it: CGI meta-variables, gateway fields, the body and the error
/// stream. This is WSGI's `environ`.
///
/// **Meta-variables** (`REQUEST_METHOD`, `PATH_INFO`, `HTTP_USER_AGENT`, ...) are byte
/// strings, because requests are not always UTF-8: [`Environ::get`] gives the bytes,
/// [`Environ::get_str`] a `&str` when they are UTF-8, and [`Environ::get_latin1`] PEP 3333's
/// view (one byte, one code point). Typed getters cover the variables every server sets.
/// Names are compared exactly (they are upper case by convention).
///
/// **Gateway fields** are typed: [`url_scheme`](Environ::url_scheme),
/// [`multithread`](Environ::multithread), [`multiprocess`](Environ::multiprocess),
/// [`run_once`](Environ::run_once), [`input_terminated`](Environ::input_terminated), and the
/// contract [`VERSION`]. Server-specific data goes in [`extensions`](Environ::extensions),
/// typed, with no risk of key clashes. The network servers also give the addresses of the
/// connection: [`peer_addr`](Environ::peer_addr) and [`local_addr`](Environ::local_addr).
///
/// ```
/// use gateway_core::Environ;
///
/// let mut environ = Environ::new();
/// environ.set("REQUEST_METHOD", "GET");
/// environ.set("PATH_INFO", &b"/caf\xe9"[..]);
/// environ.set("HTTP_USER_AGENT", "curl/8");
/// assert_eq!(environ.request_method(), "GET");
/// assert_eq!(environ.path_info(), b"/caf\xe9");
/// assert_eq!(environ.get_latin1("PATH_INFO").unwrap(), "/café");
/// assert_eq!(environ.header("User-Agent"), Some(&b"curl/8"[..]));
/// ```
pub struct Environ {
    vars: Vec<(Text, Text)>,
    /// A bit for each name set ([`name_bit`]): a name whose bit is clear is not set, and a
    /// search for it (a lookup of a variable the front end did not send, the `set` of a new
    /// one) ends without a pass over the variables. Bits stay when variables go.
    names: u64,
    /// The buffer that [`Text::Part`]s are parts of.
    block: Bytes,
    url_scheme: UrlScheme,
    multithread: bool,
    multiprocess: bool,
    run_once: bool,
    input_terminated: bool,
    input: Input,
    errors: ErrorStream,
    peer_addr: Option<SocketAddr>,
    local_addr: Option<SocketAddr>,
    extensions: Extensions,
}

impl Environ {
    /// An environ with no variables, an empty input, errors to stderr, scheme `http`,
    /// `input_terminated` set and the other flags clear.
    pub fn new() -> Self {
        Environ::with_capacity(0)
    }

    /// Like [`Environ::new`], with room for `vars` variables (servers know roughly how many).
    pub fn with_capacity(vars: usize) -> Self {
        Environ {
            vars: Vec::with_capacity(vars),
            names: 0,
            block: Bytes::new(),
            url_scheme: UrlScheme::Http,
            multithread: false,
            multiprocess: false,
            run_once: false,
            input_terminated: true,
            input: Input::empty(),
            errors: ErrorStream::stderr(),
            peer_addr: None,
            local_addr: None,
            extensions: Extensions::new(),
        }
    }

    /// A copy of this environ with `input` in place of the request body: the variables,
    /// the gateway fields, an error stream to the same sink and the extensions. What a
    /// middleware needs to send one request to a second app (a retry, a mirror).
    ///
    /// ```
    /// use gateway_core::{Environ, Input};
    ///
    /// let mut environ = Environ::new();
    /// environ.set("REQUEST_METHOD", "PUT");
    /// environ.set_input_terminated(false);
    /// let copy = environ.copy_with_input(Input::from_bytes("again"));
    /// assert_eq!(copy.request_method(), "PUT");
    /// assert!(!copy.input_terminated());
    /// ```
    pub fn copy_with_input(&self, input: Input) -> Environ {
        Environ {
            vars: self.vars.clone(),
            names: self.names,
            block: self.block.clone(),
            url_scheme: self.url_scheme,
            multithread: self.multithread,
            multiprocess: self.multiprocess,
            run_once: self.run_once,
            input_terminated: self.input_terminated,
            input,
            errors: self.errors.clone(),
            peer_addr: self.peer_addr,
            local_addr: self.local_addr,
            extensions: self.extensions.clone(),
        }
    }

    // ----- meta-variables -----

    /// The value of a meta-variable, as bytes.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.find(name.as_bytes()).map(|(_, v)| v.of(&self.block))
    }

    /// The value of a meta-variable as [`Bytes`] that share the environ's storage (no copy).
    pub fn get_bytes(&self, name: &str) -> Option<Bytes> {
        self.find(name.as_bytes())
            .map(|(_, v)| v.to_bytes(&self.block))
    }

    /// The variable named `name`.
    #[inline]
    fn find(&self, name: &[u8]) -> Option<&(Text, Text)> {
        if self.names & name_bit(name) == 0 {
            return None;
        }
        self.vars.iter().find(|(n, _)| n.is(&self.block, name))
    }

    /// The value of a meta-variable if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of a meta-variable decoded as ISO-8859-1 (each byte one code point), as PEP
    /// 3333 presents CGI values. Borrowed when the value is ASCII.
    pub fn get_latin1(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(latin1)
    }

    /// Whether the meta-variable is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets a meta-variable, replacing any value it had. Static names and values are stored
    /// without copying.
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = Text::Own(value.into());
        let bit = name_bit(&name);
        let block = &self.block;
        let found = match self.names & bit {
            0 => None,
            _ => self.vars.iter_mut().find(|(n, _)| n.is(block, &name)),
        };
        match found {
            Some(slot) => slot.1 = value,
            None => {
                self.names |= bit;
                self.vars.push((Text::Own(name), value));
            }
        }
    }

    /// Sets each variable of `vars` in order, as [`set`](Environ::set) would one by one: a name
    /// given twice (or already set) keeps its last value, in the place it first had. Made for
    /// servers that receive a whole list of variables from a front end, where names seldom
    /// repeat: names are found through a hash table, and compared by bits of their hash
    /// first, so the list costs hardly any byte comparisons unless a name does repeat.
    ///
    /// ```
    /// use gateway_core::Environ;
    ///
    /// let mut environ = Environ::new();
    /// environ.set_all([("A", "1"), ("B", "2"), ("A", "3")].map(|(n, v)| (n.into(), v.into())));
    /// assert_eq!(environ.vars().collect::<Vec<_>>(), [(&b"A"[..], &b"3"[..]), (b"B", b"2")]);
    /// ```
    pub fn set_all(&mut self, vars: impl IntoIterator<Item = (Bytes, Bytes)>) {
        self.set_texts(
            vars.into_iter()
                .map(|(name, value)| (Text::Own(name), Text::Own(value))),
        );
    }

    /// Sets variables whose names and values are parts of one buffer, `block`, each given as
    /// the range of its name and the range of its value, as [`set_all`](Environ::set_all)
    /// would. The environ keeps `block` (one reference for all of its variables), so a server
    /// that decoded the variables from one buffer (a FastCGI params stream, a uwsgi vars
    /// block) stores them without a reference count per name and per value. Variables set
    /// from an earlier block keep their values.
    ///
    /// # Panics
    ///
    /// If a range is not within `block`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use gateway_core::Environ;
    ///
    /// let block = Bytes::from_static(b"REQUEST_METHODGETPATH_INFO/a");
    /// let mut environ = Environ::new();
    /// environ.set_all_in(block, [(0..14, 14..17), (17..26, 26..28)]);
    /// assert_eq!(environ.request_method(), "GET");
    /// assert_eq!(environ.path_info(), b"/a");
    /// ```
    pub fn set_all_in(
        &mut self,
        block: Bytes,
        vars: impl IntoIterator<Item = (Range<usize>, Range<usize>)>,
    ) {
        let Ok(limit) = u32::try_from(block.len()) else {
            // Offsets would not fit: slices, each with its reference.
            let slice = |range: Range<usize>| Text::Own(block.slice(range));
            return self.set_texts(
                vars.into_iter()
                    .map(|(name, value)| (slice(name), slice(value))),
            );
        };
        if self.vars.iter().any(|(n, v)| n.is_part() || v.is_part()) {
            // Parts of the block before become bytes of their own.
            for text in self.vars.iter_mut().flat_map(|(n, v)| [n, v]) {
                if let Text::Part(..) = text {
                    *text = Text::Own(text.to_bytes(&self.block));
                }
            }
        }
        self.block = block;
        let part = |range: Range<usize>| {
            assert!(
                range.start <= range.end && range.end <= limit as usize,
                "range {range:?} out of a block of {limit} bytes",
            );
            Text::Part(range.start as u32, range.end as u32)
        };
        self.set_texts(
            vars.into_iter()
                .map(|(name, value)| (part(name), part(value))),
        );
    }

    /// [`set_all`](Environ::set_all)'s work, for names and values of either kind. Names are
    /// found through a hash table, and compared by bits of their hash first.
    fn set_texts(&mut self, vars: impl IntoIterator<Item = (Text, Text)>) {
        /// Variables found by hash; past this many, the rest goes through a search.
        const TRACKED: usize = 128;
        /// Slots of the hash table: twice as many as it may hold, so that probes stay short.
        const SLOTS: usize = 2 * TRACKED;
        // Each slot: 0 when free, else eight more bits of the name's hash (compared before the
        // name) above the variable's position plus one.
        let mut table = [0u16; SLOTS];
        // Inlined: a call per variable, with its five arguments, cost more than the probe.
        #[inline(always)]
        fn find(
            table: &[u16; SLOTS],
            vars: &[(Text, Text)],
            block: &[u8],
            name: &[u8],
        ) -> Result<usize, (usize, u8)> {
            let hash = name_hash(name);
            let tag = (hash >> 8) as u8;
            let mut slot = hash as usize % SLOTS;
            loop {
                match table[slot] {
                    0 => return Err((slot, tag)),
                    entry => {
                        let position = usize::from(entry as u8 - 1);
                        if (entry >> 8) as u8 == tag && vars[position].0.is(block, name) {
                            return Ok(position);
                        }
                    }
                }
                slot = (slot + 1) % SLOTS;
            }
        }
        let block = &self.block;
        for position in 0..self.vars.len().min(TRACKED) {
            let name = self.vars[position].0.of(block);
            if let Err((slot, tag)) = find(&table, &self.vars, block, name) {
                table[slot] = u16::from(tag) << 8 | (position as u16 + 1);
            }
        }
        for (name, value) in vars {
            let count = self.vars.len();
            let found = if count >= TRACKED {
                self.vars
                    .iter()
                    .position(|(n, _)| n.is(block, name.of(block)))
                    .ok_or(None)
            } else {
                find(&table, &self.vars, block, name.of(block)).map_err(Some)
            };
            match found {
                Ok(position) => self.vars[position].1 = value,
                Err(free) => {
                    if let Some((slot, tag)) = free {
                        table[slot] = u16::from(tag) << 8 | (count as u16 + 1);
                    }
                    self.names |= name_bit(name.of(block));
                    self.vars.push((name, value));
                }
            }
        }
    }

    /// Adds a meta-variable that the caller knows is not set yet: no search for an earlier
    /// value, for servers that build an environ from names that cannot repeat. The name is
    /// bytes of its own (its bit in the filter of names is taken now, before any block is set);
    /// the value may be a part of the block given later with [`set_block`](Environ::set_block).
    #[inline]
    pub(crate) fn push_new(&mut self, name: Text, value: Text) {
        self.names |= name_bit(name.of(&self.block));
        self.vars.push((name, value));
    }

    /// [`push_new`](Environ::push_new) of a name known at compile time: inlined, so that the
    /// name's bit in the filter of names is computed by the compiler.
    #[inline(always)]
    pub(crate) fn push_static(&mut self, name: &'static str, value: Text) {
        self.names |= name_bit(name.as_bytes());
        self.vars.push((Text::from_static(name.as_bytes()), value));
    }

    /// Gives the environ the block that the [`Text::Part`]s pushed with
    /// [`push_new`](Environ::push_new) are parts of; it must have none before.
    pub(crate) fn set_block(&mut self, block: Bytes) {
        debug_assert!(self.block.is_empty(), "a second block");
        self.block = block;
        debug_assert!(
            {
                let names: Vec<_> = self.vars().map(|(name, _)| name).collect();
                (0..names.len()).all(|i| !names[..i].contains(&names[i]))
            },
            "a name set twice"
        );
    }

    /// Removes a meta-variable, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        if self.names & name_bit(name.as_bytes()) == 0 {
            return None;
        }
        let block = &self.block;
        let i = self
            .vars
            .iter()
            .position(|(n, _)| n.is(block, name.as_bytes()))?;
        Some(self.vars.remove(i).1.to_bytes(&self.block))
    }

    /// Keeps only the meta-variables for which `keep(name, value)` is true, in their order.
    ///
    /// ```
    /// use gateway_core::Environ;
    ///
    /// let mut environ = Environ::new();
    /// environ.set("REMOTE_USER", "");
    /// environ.set("PATH_INFO", "");
    /// environ.retain_vars(|name, value| !value.is_empty() || Environ::may_be_empty(name));
    /// assert!(!environ.contains("REMOTE_USER") && environ.contains("PATH_INFO"));
    /// ```
    pub fn retain_vars(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        let block = &self.block;
        self.vars
            .retain(|(name, value)| keep(name.of(block), value.of(block)));
    }

    /// Whether the meta-variable `name` may be present with an empty value (PEP 3333: a variable
    /// with no value is left out rather than set empty). These may: `SCRIPT_NAME` (the root
    /// mount), `PATH_INFO` (the mount itself, without a trailing slash), `QUERY_STRING` (no
    /// query: present all the same, as Rack and PSGI require), `CONTENT_TYPE` and
    /// `CONTENT_LENGTH` (a request that carried the header empty), and every `HTTP_*` variable
    /// (a header may have an empty value). Any other variable, `REMOTE_USER` with no
    /// authentication, `HTTPS` off, `PATH_TRANSLATED` with no `PATH_INFO`, is left out instead.
    ///
    /// ```
    /// use gateway_core::Environ;
    ///
    /// assert!(Environ::may_be_empty(b"QUERY_STRING") && Environ::may_be_empty(b"HTTP_X_EMPTY"));
    /// assert!(!Environ::may_be_empty(b"REMOTE_USER") && !Environ::may_be_empty(b"HTTPS"));
    /// ```
    #[inline]
    pub fn may_be_empty(name: &[u8]) -> bool {
        matches!(
            name,
            b"SCRIPT_NAME" | b"PATH_INFO" | b"QUERY_STRING" | b"CONTENT_TYPE" | b"CONTENT_LENGTH"
        ) || name.starts_with(b"HTTP_")
    }

    /// Every meta-variable, in the order they were set.
    pub fn vars(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let block = &self.block;
        self.vars.iter().map(|(n, v)| (n.of(block), v.of(block)))
    }

    /// How many meta-variables are set.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no meta-variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// A request header by its HTTP name, in any case: `Content-Type` and `Content-Length`
    /// come from `CONTENT_TYPE` and `CONTENT_LENGTH`, any other name `X-Y` from `HTTP_X_Y`.
    /// A name with `_` finds nothing: servers drop such headers, since they would pose as the
    /// dashed name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        if name.contains('_') {
            return None;
        }
        if name.eq_ignore_ascii_case("content-type") {
            return self.get("CONTENT_TYPE");
        }
        if name.eq_ignore_ascii_case("content-length") {
            return self.get("CONTENT_LENGTH");
        }
        self.vars()
            .find(|(n, _)| is_header_var(n, name))
            .map(|(_, v)| v)
    }

    /// The request headers, from the `HTTP_*` variables (with `CONTENT_TYPE` and
    /// `CONTENT_LENGTH`), as `(variable name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.vars().filter(|(n, _)| {
            n.starts_with(b"HTTP_") || *n == b"CONTENT_TYPE" || *n == b"CONTENT_LENGTH"
        })
    }

    // ----- typed getters for the variables every server sets -----

    /// `REQUEST_METHOD`, or `""` when it is missing or not UTF-8.
    pub fn request_method(&self) -> &str {
        self.get_str("REQUEST_METHOD").unwrap_or("")
    }

    /// `SCRIPT_NAME`: where the app is mounted (`""` at the root).
    #[inline]
    pub fn script_name(&self) -> &[u8] {
        self.get("SCRIPT_NAME").unwrap_or(b"")
    }

    /// `PATH_INFO`: the rest of the path, percent-decoded once (`""` or starting with `/`).
    #[inline]
    pub fn path_info(&self) -> &[u8] {
        self.get("PATH_INFO").unwrap_or(b"")
    }

    /// `SCRIPT_NAME` followed by `PATH_INFO`: the decoded path of the request.
    pub fn path(&self) -> Cow<'_, [u8]> {
        match (self.script_name(), self.path_info()) {
            (b"", path) | (path, b"") => Cow::Borrowed(path),
            (script, path) => Cow::Owned([script, path].concat()),
        }
    }

    /// `QUERY_STRING`, as sent (not decoded); `""` when there is none.
    pub fn query_string(&self) -> &[u8] {
        self.get("QUERY_STRING").unwrap_or(b"")
    }

    /// `CONTENT_TYPE`, when the request had one.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.get("CONTENT_TYPE").filter(|v| !v.is_empty())
    }

    /// `CONTENT_LENGTH` as a number, when it is present and all digits.
    pub fn content_length(&self) -> Option<u64> {
        parse_digits(self.get("CONTENT_LENGTH")?)
    }

    /// `SERVER_NAME`.
    pub fn server_name(&self) -> &[u8] {
        self.get("SERVER_NAME").unwrap_or(b"")
    }

    /// `SERVER_PORT` as a number.
    pub fn server_port(&self) -> Option<u16> {
        parse_digits(self.get("SERVER_PORT")?).and_then(|p| u16::try_from(p).ok())
    }

    /// `SERVER_PROTOCOL`, such as `HTTP/1.1`, or `""`.
    pub fn server_protocol(&self) -> &str {
        self.get_str("SERVER_PROTOCOL").unwrap_or("")
    }

    /// `REQUEST_URI`: the request target as the client sent it (path and query, not decoded).
    pub fn request_uri(&self) -> Option<&[u8]> {
        self.get("REQUEST_URI")
    }

    /// `REMOTE_ADDR`, when the server knows it.
    pub fn remote_addr(&self) -> Option<&str> {
        self.get_str("REMOTE_ADDR")
    }

    // ----- gateway fields -----

    /// The contract version, `wsgi.version`: always [`VERSION`].
    pub const fn version(&self) -> (u16, u16) {
        VERSION
    }

    /// `wsgi.url_scheme`.
    pub fn url_scheme(&self) -> UrlScheme {
        self.url_scheme
    }

    /// Sets `wsgi.url_scheme`.
    pub fn set_url_scheme(&mut self, scheme: UrlScheme) {
        self.url_scheme = scheme;
    }

    /// `wsgi.multithread`: another thread may run the app at the same time.
    pub fn multithread(&self) -> bool {
        self.multithread
    }

    /// Sets `wsgi.multithread`.
    pub fn set_multithread(&mut self, value: bool) {
        self.multithread = value;
    }

    /// `wsgi.multiprocess`: another process may run the app at the same time.
    pub fn multiprocess(&self) -> bool {
        self.multiprocess
    }

    /// Sets `wsgi.multiprocess`.
    pub fn set_multiprocess(&mut self, value: bool) {
        self.multiprocess = value;
    }

    /// `wsgi.run_once`: the process will probably serve this one request (CGI). A hint only.
    pub fn run_once(&self) -> bool {
        self.run_once
    }

    /// Sets `wsgi.run_once`.
    pub fn set_run_once(&mut self, value: bool) {
        self.run_once = value;
    }

    /// `wsgi.input_terminated`: the input ends at the true end of the body, so an app may read
    /// it to the end without looking at `CONTENT_LENGTH`. Every server of this project sets it.
    pub fn input_terminated(&self) -> bool {
        self.input_terminated
    }

    /// Sets `wsgi.input_terminated`.
    pub fn set_input_terminated(&mut self, value: bool) {
        self.input_terminated = value;
    }

    /// The request body, `wsgi.input`.
    pub fn input(&mut self) -> &mut Input {
        &mut self.input
    }

    /// Takes the request body out (to move it into a response body), leaving an empty one.
    pub fn take_input(&mut self) -> Input {
        std::mem::take(&mut self.input)
    }

    /// Replaces the request body.
    pub fn set_input(&mut self, input: Input) {
        self.input = input;
    }

    /// The error stream, `wsgi.errors`. Clone it to keep it in a response body.
    pub fn errors(&mut self) -> &mut ErrorStream {
        &mut self.errors
    }

    /// Replaces the error stream.
    pub fn set_errors(&mut self, errors: ErrorStream) {
        self.errors = errors;
    }

    /// Typed extensions: server-specific data, and data middleware passes to the app.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed extensions, mutable.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The address of the client (or of the web server in front) on the connection the
    /// request came in on, when the server knows it. `REMOTE_ADDR` is the same address as
    /// text, unless a web server in front passed the client's.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Sets [`peer_addr`](Environ::peer_addr).
    pub fn set_peer_addr(&mut self, addr: Option<SocketAddr>) {
        self.peer_addr = addr;
    }

    /// The address the request came in on (the server's side of the connection), when the
    /// server knows it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Sets [`local_addr`](Environ::local_addr).
    pub fn set_local_addr(&mut self, addr: Option<SocketAddr>) {
        self.local_addr = addr;
    }
}

impl Default for Environ {
    fn default() -> Self {
        Environ::new()
    }
}

impl fmt::Debug for Environ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Vars<'a>(&'a Environ);
        impl fmt::Debug for Vars<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.vars().map(|(n, v)| (latin1(n), latin1(v))))
                    .finish()
            }
        }
        f.debug_struct("Environ")
            .field("vars", &Vars(self))
            .field("url_scheme", &self.url_scheme)
            .field("multithread", &self.multithread)
            .field("multiprocess", &self.multiprocess)
            .field("run_once", &self.run_once)
            .field("input_terminated", &self.input_terminated)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

/// A name or a value of an [`Environ`]: bytes of its own, or a part of the environ's block
/// (the buffer a server decoded its variables from), which needs no reference count of its own.
#[derive(Clone)]
pub(crate) enum Text {
    /// Bytes of its own (static ones cost no reference count either).
    Own(Bytes),
    /// `block[start..end]`.
    Part(u32, u32),
}

// A part fits beside the bytes' pointer that is never null: a text is no larger than bytes.
const _: () = assert!(std::mem::size_of::<Text>() == std::mem::size_of::<Bytes>());

impl Text {
    /// The text's bytes, where `block` is its environ's block.
    #[inline]
    fn of<'a>(&'a self, block: &'a [u8]) -> &'a [u8] {
        match self {
            Text::Own(bytes) => bytes,
            Text::Part(start, end) => &block[*start as usize..*end as usize],
        }
    }

    /// Whether the text is `bytes`, where `block` is its environ's block: lengths first, so
    /// that a search through the variables looks at few bytes.
    #[inline]
    fn is(&self, block: &[u8], bytes: &[u8]) -> bool {
        match self {
            Text::Own(own) => own == bytes,
            Text::Part(start, end) => {
                end.wrapping_sub(*start) as usize == bytes.len()
                    && block.get(*start as usize..*end as usize) == Some(bytes)
            }
        }
    }

    /// The text as bytes of its own, sharing `block`'s storage for a part.
    fn to_bytes(&self, block: &Bytes) -> Bytes {
        match self {
            Text::Own(bytes) => bytes.clone(),
            Text::Part(start, end) => block.slice(*start as usize..*end as usize),
        }
    }

    /// A static name or value.
    pub(crate) const fn from_static(text: &'static [u8]) -> Text {
        Text::Own(Bytes::from_static(text))
    }

    fn is_part(&self) -> bool {
        matches!(self, Text::Part(..))
    }
}

/// Decodes bytes as ISO-8859-1: each byte becomes the code point of the same number. Borrowed
/// when the bytes are ASCII.
pub fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8.
        Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
    } else {
        Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

/// The meta-variable name of a request header: `HTTP_` and the name in upper case with `-`
/// as `_` (`CONTENT_TYPE` and `CONTENT_LENGTH` for those two headers).
pub fn header_var_name(header: &str) -> Bytes {
    match common_header_var(header) {
        Some(name) => Bytes::from_static(name.as_bytes()),
        None => built_header_var_name(header),
    }
}

/// [`header_var_name`], built byte by byte.
fn built_header_var_name(header: &str) -> Bytes {
    if header.eq_ignore_ascii_case("content-type") {
        return Bytes::from_static(b"CONTENT_TYPE");
    }
    if header.eq_ignore_ascii_case("content-length") {
        return Bytes::from_static(b"CONTENT_LENGTH");
    }
    let mut name = Vec::with_capacity(5 + header.len());
    name.extend_from_slice(b"HTTP_");
    name.extend(header.bytes().map(|b| match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }));
    Bytes::from(name)
}

/// The variables of the headers most requests carry, without building them (header names
/// from `http` are lower case; others take the general path).
fn common_header_var(header: &str) -> Option<&'static str> {
    Some(match header {
        "host" => "HTTP_HOST",
        "user-agent" => "HTTP_USER_AGENT",
        "accept" => "HTTP_ACCEPT",
        "accept-encoding" => "HTTP_ACCEPT_ENCODING",
        "accept-language" => "HTTP_ACCEPT_LANGUAGE",
        "connection" => "HTTP_CONNECTION",
        "cookie" => "HTTP_COOKIE",
        "referer" => "HTTP_REFERER",
        "authorization" => "HTTP_AUTHORIZATION",
        "cache-control" => "HTTP_CACHE_CONTROL",
        "origin" => "HTTP_ORIGIN",
        "x-forwarded-for" => "HTTP_X_FORWARDED_FOR",
        "x-forwarded-proto" => "HTTP_X_FORWARDED_PROTO",
        "x-forwarded-host" => "HTTP_X_FORWARDED_HOST",
        "x-real-ip" => "HTTP_X_REAL_IP",
        "if-none-match" => "HTTP_IF_NONE_MATCH",
        "if-modified-since" => "HTTP_IF_MODIFIED_SINCE",
        _ => return None,
    })
}

/// The bit of `name` in [`Environ`]'s filter of the names set: its length, its middle byte and
/// its last byte, mixed by a multiplication (the middle byte tells `SCRIPT_NAME` from
/// `SERVER_NAME`).
#[inline(always)]
fn name_bit(name: &[u8]) -> u64 {
    let mixed = match name.last() {
        Some(&last) => {
            u32::from(last) | u32::from(name[name.len() / 2]) << 8 | (name.len() as u32) << 16
        }
        None => 0,
    };
    1 << (mixed.wrapping_mul(0x9E37_79B1) >> 26)
}

/// A hash of a variable name, to compare names by a few bits before their bytes. Names are
/// short: two loads of eight bytes (overlapping below 16 bytes) cover most of them, and the
/// words between are mixed in for longer ones.
#[inline]
fn name_hash(name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let len = name.len();
    let word = |at: usize| u64::from_le_bytes(name[at..at + 8].try_into().expect("eight bytes"));
    let (first, last) = if len >= 8 {
        (word(0), word(len - 8))
    } else if len >= 4 {
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                name[at..at + 4].try_into().expect("four"),
            ))
        };
        (half(0), half(len - 4))
    } else {
        let small = name
            .iter()
            .enumerate()
            .fold(0u64, |small, (i, &b)| small | u64::from(b) << (8 * i));
        (small, 0)
    };
    let mut hash = (len as u64 ^ first).wrapping_mul(K).rotate_left(31);
    let mut at = 8;
    while len > 16 && at < len - 8 {
        hash = (hash ^ word(at)).wrapping_mul(K).rotate_left(31);
        at += 8;
    }
    hash = (hash ^ last).wrapping_mul(K);
    hash ^ (hash >> 29)
}

/// Whether the variable `var` is `HTTP_` + `header` under the header-to-variable mapping.
fn is_header_var(var: &[u8], header: &str) -> bool {
    let Some(rest) = var.strip_prefix(b"HTTP_") else {
        return false;
    };
    rest.len() == header.len()
        && rest.iter().zip(header.bytes()).all(|(&v, h)| match h {
            b'-' => v == b'_',
            h => v == h.to_ascii_uppercase(),
        })
}

/// Parses a non-empty string of ASCII digits, as CGI numbers are written.
pub(crate) fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_header_names_map_as_the_general_rule_does() {
        for header in [
            "host",
            "user-agent",
            "accept",
            "accept-encoding",
            "accept-language",
            "connection",
            "cookie",
            "referer",
            "authorization",
            "cache-control",
            "origin",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "if-none-match",
            "if-modified-since",
            "content-type",
            "content-length",
            "Content-Type",
            "X-Other-Header",
        ] {
            assert_eq!(
                header_var_name(header),
                built_header_var_name(header),
                "{header}"
            );
        }
        assert!(common_header_var("x-other-header").is_none());
    }

    #[test]
    fn set_all_keeps_the_last_value_of_a_repeated_name_in_its_first_place() {
        let mut env = Environ::new();
        env.set("B", "0");
        let vars = [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4")];
        env.set_all(vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v))));
        let seen: Vec<_> = env.vars().collect();
        assert_eq!(seen, [(&b"B"[..], &b"2"[..]), (b"A", b"3"), (b"C", b"4")]);
        // Past the names followed by hash, a search takes over with the same result.
        let mut many = Environ::new();
        many.set_all((0..300).map(|n| {
            (
                Bytes::from(format!("V{}", n % 200)),
                Bytes::from(n.to_string()),
            )
        }));
        assert_eq!(many.len(), 200);
        assert_eq!(many.get("V5"), Some(&b"205"[..]));
        assert_eq!(many.get("V150"), Some(&b"150"[..]));
    }

    proptest::proptest! {
        /// `set_all` is `set` one by one, whatever the names (short, long, sharing prefixes
        /// and words of eight bytes, repeated) and however many were set before.
        #[test]
        fn set_all_is_set_one_by_one(
            before in proptest::collection::vec(("[AB_]{0,18}", "[0-9]{0,3}"), 0..20),
            vars in proptest::collection::vec(("[AB_]{0,18}", "[0-9]{0,3}"), 0..160),
        ) {
            let mut expected = Environ::new();
            let mut environ = Environ::new();
            for (name, value) in &before {
                expected.set(name.clone(), value.clone());
                environ.set(name.clone(), value.clone());
            }
            for (name, value) in &vars {
                expected.set(name.clone(), value.clone());
            }
            environ.set_all(vars.iter().map(|(n, v)| (Bytes::from(n.clone()), Bytes::from(v.clone()))));
            proptest::prop_assert_eq!(environ.vars().collect::<Vec<_>>(), expected.vars().collect::<Vec<_>>());
        }

        /// `set_all_in` is `set` one by one too, with `set` between two blocks, and what
        /// the environ hands out of a block (`get_bytes`, `remove`, a copy) outlives it.
        #[test]
        fn set_all_in_is_set_one_by_one(
            first in proptest::collection::vec(("[AB_]{0,18}", "[0-9]{0,3}"), 0..80),
            between in proptest::collection::vec(("[AB_]{0,3}", "[0-9]{0,3}"), 0..4),
            second in proptest::collection::vec(("[AB_]{0,18}", "[0-9]{0,3}"), 0..80),
        ) {
            let block_of = |vars: &[(String, String)]| {
                let mut block = Vec::new();
                let mut ranges = Vec::new();
                for (name, value) in vars {
                    let at = block.len();
                    block.extend_from_slice(name.as_bytes());
                    let middle = block.len();
                    block.extend_from_slice(value.as_bytes());
                    ranges.push((at..middle, middle..block.len()));
                }
                (Bytes::from(block), ranges)
            };
            let mut expected = Environ::new();
            for (name, value) in first.iter().chain(&between).chain(&second) {
                expected.set(name.clone(), value.clone());
            }
            let mut environ = Environ::new();
            let (block, ranges) = block_of(&first);
            environ.set_all_in(block, ranges);
            for (name, value) in &between {
                environ.set(name.clone(), value.clone());
            }
            let (block, ranges) = block_of(&second);
            environ.set_all_in(block, ranges);
            proptest::prop_assert_eq!(environ.vars().collect::<Vec<_>>(), expected.vars().collect::<Vec<_>>());
            let copy = environ.copy_with_input(Input::empty());
            proptest::prop_assert_eq!(copy.vars().collect::<Vec<_>>(), expected.vars().collect::<Vec<_>>());
            if let Some((name, _)) = first.first() {
                let kept = environ.get_bytes(name);
                let removed = environ.remove(name);
                proptest::prop_assert_eq!(&kept, &removed);
                proptest::prop_assert_eq!(removed.is_some(), expected.contains(name));
                proptest::prop_assert!(!environ.contains(name));
                drop(environ);
                let last = expected.get(name).unwrap_or_default();
                proptest::prop_assert_eq!(kept.as_deref(), Some(last));
            }
        }
    }

    /// What a sequence of changes does to a list of variables, one by one.
    #[derive(Debug, Clone)]
    enum Change {
        Set(String, String),
        Remove(String),
        /// Keeps the variables whose value is not this one.
        RetainNot(String),
        /// A block of variables set at once.
        Block(Vec<(String, String)>),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        let name = "[A-Z_]{0,6}|HTTP_[A-Z]{1,4}|(SCRIPT|SERVER|CONTENT)_[A-Z]{2,4}";
        prop_oneof![
            (name, "[0-9]{0,2}").prop_map(|(n, v)| Change::Set(n, v)),
            name.prop_map(Change::Remove),
            "[0-9]{0,2}".prop_map(Change::RetainNot),
            proptest::collection::vec((name, "[0-9]{0,2}"), 0..12).prop_map(Change::Block),
        ]
    }

    proptest::proptest! {
        /// Every lookup finds what a plain list of the variables holds, whatever was set,
        /// removed and kept before, and for names of the same bit in the filter of names.
        #[test]
        fn lookups_find_what_a_plain_list_holds(
            changes in proptest::collection::vec(change(), 0..40),
            probes in proptest::collection::vec("[A-Z_]{0,6}|HTTP_[A-Z]{1,4}|(SCRIPT|SERVER|CONTENT)_[A-Z]{2,4}", 0..40),
        ) {
            let mut model: Vec<(String, String)> = Vec::new();
            let mut environ = Environ::new();
            let set = |model: &mut Vec<(String, String)>, name: &String, value: &String| {
                match model.iter_mut().find(|(n, _)| n == name) {
                    Some(var) => var.1 = value.clone(),
                    None => model.push((name.clone(), value.clone())),
                }
            };
            for change in &changes {
                match change {
                    Change::Set(name, value) => {
                        set(&mut model, name, value);
                        environ.set(name.clone(), value.clone());
                    }
                    Change::Remove(name) => {
                        let held = model.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                        model.retain(|(n, _)| n != name);
                        let removed = environ.remove(name);
                        let held = held.as_deref().map(str::as_bytes);
                        proptest::prop_assert_eq!(removed.as_deref(), held);
                    }
                    Change::RetainNot(value) => {
                        model.retain(|(_, v)| v != value);
                        environ.retain_vars(|_, v| v != value.as_bytes());
                    }
                    Change::Block(vars) => {
                        let mut block = Vec::new();
                        let mut ranges = Vec::new();
                        for (name, value) in vars {
                            set(&mut model, name, value);
                            let at = block.len();
                            block.extend_from_slice(name.as_bytes());
                            let middle = block.len();
                            block.extend_from_slice(value.as_bytes());
                            ranges.push((at..middle, middle..block.len()));
                        }
                        environ.set_all_in(Bytes::from(block), ranges);
                    }
                }
            }
            let copy = environ.copy_with_input(Input::empty());
            for name in probes.iter().chain(model.iter().map(|(n, _)| n)) {
                let expected = model.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_bytes());
                proptest::prop_assert_eq!(environ.get(name), expected, "{}", name);
                proptest::prop_assert_eq!(copy.get(name), expected, "{}", name);
            }
            let vars: Vec<_> = model.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            proptest::prop_assert_eq!(environ.vars().collect::<Vec<_>>(), vars);
        }
    }

    #[test]
    #[should_panic(expected = "out of a block")]
    fn a_range_out_of_the_block_panics() {
        Environ::new().set_all_in(Bytes::from_static(b"AB"), [(0..1, 1..3)]);
    }

    #[test]
    fn set_replaces_and_keeps_order() {
        let mut env = Environ::new();
        env.set("A", "1");
        env.set("B", "2");
        env.set("A", "3");
        let vars: Vec<_> = env.vars().collect();
        assert_eq!(vars, vec![(&b"A"[..], &b"3"[..]), (&b"B"[..], &b"2"[..])]);
        assert_eq!(env.remove("A").unwrap(), "3");
        assert!(!env.contains("A"));
    }

    #[test]
    fn header_lookup_maps_names() {
        let mut env = Environ::new();
        env.set("CONTENT_TYPE", "text/plain");
        env.set("HTTP_X_FORWARDED_FOR", "1.2.3.4");
        assert_eq!(env.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(env.header("X-Forwarded-For"), Some(&b"1.2.3.4"[..]));
        assert_eq!(env.header("X-Forwarded_For"), None);
        assert_eq!(env.headers().count(), 2);
        assert_eq!(header_var_name("x-a-b"), "HTTP_X_A_B");
        assert_eq!(header_var_name("Content-Length"), "CONTENT_LENGTH");
    }

    #[test]
    fn numbers_are_digits_only() {
        assert_eq!(parse_digits(b"0"), Some(0));
        assert_eq!(parse_digits(b"123"), Some(123));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"0x1",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
        let mut env = Environ::new();
        env.set("SERVER_PORT", "70000");
        assert_eq!(env.server_port(), None);
        env.set("SERVER_PORT", "8080");
        assert_eq!(env.server_port(), Some(8080));
    }

    #[test]
    fn path_joins_script_name_and_path_info() {
        let mut env = Environ::new();
        assert_eq!(&*env.path(), b"");
        env.set("PATH_INFO", "/x");
        assert_eq!(&*env.path(), b"/x");
        env.set("SCRIPT_NAME", "/app");
        assert_eq!(&*env.path(), b"/app/x");
        assert!(matches!(env.path(), Cow::Owned(_)));
    }

    #[test]
    fn latin1_maps_each_byte() {
        assert_eq!(latin1(b"abc"), "abc");
        assert_eq!(latin1(&[0x63, 0xe9, 0xff]), "c\u{e9}\u{ff}");
    }
}
