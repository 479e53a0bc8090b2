//! CGI-style variables from a front end, normalised into a valid environ. CGI, FastCGI and
//! uwsgi all receive the request this way, and each front end has its quirks (the environ
//! table of `docs/guide/06-reference.md` shows what each sends); this is the one place that
//! absorbs them.

use std::convert::Infallible;
use std::ops::Range;

use bytes::Bytes;
use gateway_core::convert::split_host;
use gateway_core::{Environ, Input, UrlScheme};

/// A variable of a block: the range of its name and the range of its value.
pub type VarRanges = (Range<usize>, Range<usize>);

/// How the body of a request arrives, as its variables say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `CONTENT_LENGTH` bytes.
    Length(u64),
    /// No length, but `Transfer-Encoding: chunked`: the front end forwards the body to its end
    /// (Apache's mod_cgid de-chunks it and closes stdin; uWSGI's router forwards it raw).
    UntilEnd,
    /// No body.
    None,
    /// `CONTENT_LENGTH` is neither empty nor a number: where the body ends cannot be told, and
    /// the servers answer 400 without calling the app.
    Invalid,
}

/// Builds an environ from a front end's variables, in the order received, normalised:
///
/// - a repeated name keeps its last value (what PHP-FPM, flup and Go do);
/// - empty `CONTENT_LENGTH` and `CONTENT_TYPE` (nginx sends them on every request) are removed,
///   and so are `HTTP_CONTENT_LENGTH` and `HTTP_CONTENT_TYPE` (nginx's duplicates);
/// - `HTTP_PROXY` is removed (httpoxy: nginx and uWSGI pass a client's `Proxy:` header on);
/// - any other variable whose (last) value is empty is removed, unless it may be empty
///   ([`Environ::may_be_empty`]: `SCRIPT_NAME`, `PATH_INFO`, `QUERY_STRING` and `HTTP_*`):
///   PEP 3333 has a variable with no value left out, so that an app can test
///   `REMOTE_USER`'s presence (nginx's `fastcgi_params` sends `REMOTE_USER` empty without
///   authentication, Apache and lighttpd give a CGI script empty variables too);
/// - `QUERY_STRING`, `SCRIPT_NAME` and `PATH_INFO` are always present, and a `SCRIPT_NAME`
///   ending in `/` gives its slash to `PATH_INFO` (it must not end in one, and must never be
///   `/`);
/// - `HTTPS=on` (or `REQUEST_SCHEME=https`) makes the scheme `https`;
/// - `REQUEST_METHOD`, `SERVER_PROTOCOL`, `SERVER_NAME` and `SERVER_PORT` get a value when the
///   front end left them out or empty (see the source of `fill_required`);
/// - `input_terminated` is set: the input returned with [`body_framing`] ends where the body
///   does.
///
/// ```
/// use bytes::Bytes;
/// use gateway_servers::params::environ_from_params;
///
/// let vars = [
///     ("CONTENT_LENGTH", ""),
///     ("HTTP_CONTENT_TYPE", "text/plain"),
///     ("HTTP_PROXY", "http://evil"),
///     ("SCRIPT_NAME", "/app/"),
///     ("PATH_INFO", "x"),
///     ("HTTPS", "on"),
///     ("REMOTE_USER", ""),
/// ];
/// let environ = environ_from_params(vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v))));
/// assert!(!environ.contains("CONTENT_LENGTH") && !environ.contains("HTTP_PROXY"));
/// assert!(!environ.contains("REMOTE_USER"));
/// assert_eq!((environ.script_name(), environ.path_info()), (&b"/app"[..], &b"/x"[..]));
/// assert_eq!(environ.query_string(), b"");
/// assert_eq!(environ.url_scheme(), gateway_core::UrlScheme::Https);
/// ```
pub fn environ_from_params(vars: impl IntoIterator<Item = (Bytes, Bytes)>) -> Environ {
    framed_environ_from_params(vars).0
}

/// [`environ_from_params`], and how the request's body arrives: what [`body_framing`] says of
/// the environ, found as the variables go by rather than looked up afterwards.
///
/// ```
/// use bytes::Bytes;
/// use gateway_servers::params::{BodyFraming, body_framing, framed_environ_from_params};
///
/// let vars = [("CONTENT_LENGTH", ""), ("HTTP_TRANSFER_ENCODING", "chunked")];
/// let (environ, framing) =
///     framed_environ_from_params(vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v))));
/// assert_eq!(framing, BodyFraming::UntilEnd);
/// assert_eq!(framing, body_framing(&environ));
/// ```
pub fn framed_environ_from_params(
    vars: impl IntoIterator<Item = (Bytes, Bytes)>,
) -> (Environ, BodyFraming) {
    // Copied into one block, as a front end's variables arrive.
    let mut block = Vec::new();
    let mut ranges = Vec::new();
    for (name, value) in vars {
        let start = block.len();
        block.extend_from_slice(&name);
        let middle = block.len();
        block.extend_from_slice(&value);
        ranges.push(Ok::<_, Infallible>((start..middle, middle..block.len())));
    }
    match framed_environ_from_block(Bytes::from(block), ranges) {
        Ok(framed) => framed,
        Err(never) => match never {},
    }
}

/// [`framed_environ_from_params`] for variables decoded from one buffer, `block` (a FastCGI
/// params stream, a uwsgi vars block), each given as the range of its name and the range of
/// its value in `block`, as the decoders' `next_range` give them: the environ keeps the
/// block, and its variables are parts of it (no copy, and no reference count per name and
/// per value). A decoder may fail part way: the first error is returned instead of an
/// environ.
///
/// ```
/// use bytes::Bytes;
/// use gateway_servers::params::{BodyFraming, framed_environ_from_block};
///
/// let block = Bytes::from_static(b"CONTENT_LENGTH3PATH_INFO/a");
/// let ranges = [Ok::<_, ()>((0..14, 14..15)), Ok((15..24, 24..26))];
/// let (environ, framing) = framed_environ_from_block(block, ranges).unwrap();
/// assert_eq!((environ.path_info(), framing), (&b"/a"[..], BodyFraming::Length(3)));
/// ```
pub fn framed_environ_from_block<E>(
    block: Bytes,
    vars: impl IntoIterator<Item = Result<VarRanges, E>>,
) -> Result<(Environ, BodyFraming), E> {
    let mut seen = Seen::default();
    let mut failed = None;
    let mut environ = Environ::with_capacity(32);
    let bytes = block.clone();
    environ.set_all_in(
        block,
        vars.into_iter()
            .map_while(|var| var.map_err(|error| failed = Some(error)).ok())
            .filter(|(name, value)| seen.keep(&bytes[name.clone()], &bytes, value)),
    );
    if let Some(error) = failed {
        return Err(error);
    }
    for (state, name) in [
        (seen.content_length, "CONTENT_LENGTH"),
        (seen.content_type, "CONTENT_TYPE"),
    ] {
        if state == Emptied::Later {
            environ.remove(name);
        }
    }
    if seen.empty {
        // An empty value that may have replaced one kept before goes after the fact: a name
        // repeated keeps its last value, so a value given before an empty one goes too, and
        // one given after it stays.
        environ.retain_vars(|name, value| !value.is_empty() || Environ::may_be_empty(name));
    }
    if !seen.query_string {
        environ.set("QUERY_STRING", Bytes::new());
    }
    // Already in shape (the usual case), the path is not copied.
    match (seen.script_name, seen.path_info) {
        (Some(script), Some(path))
            if !script.ends_with_slash
                && (path.starts_with_slash || (path.empty && !script.empty)) => {}
        // nginx's uwsgi: the whole path in `PATH_INFO`, no `SCRIPT_NAME`.
        (None, Some(path)) if path.starts_with_slash => environ.set("SCRIPT_NAME", Bytes::new()),
        _ => normalize_path(&mut environ),
    }
    if seen.https || seen.scheme_https {
        environ.set_url_scheme(UrlScheme::Https);
    }
    if seen.required != Seen::ALL_REQUIRED {
        let host = seen.host.map(|value| bytes.slice(value));
        fill_required(&mut environ, seen.required, host.unwrap_or_default());
    }
    environ.set_input_terminated(true);
    // A kept `CONTENT_LENGTH` is the environ's (the lookup finds it); without one, only
    // `Transfer-Encoding` can tell, and it was noted as it went by.
    let framing = match seen.content_length {
        Emptied::Kept => match environ.content_length() {
            Some(length) => BodyFraming::Length(length),
            None => BodyFraming::Invalid,
        },
        Emptied::Nothing | Emptied::Later if seen.chunked => BodyFraming::UntilEnd,
        Emptied::Nothing | Emptied::Later => BodyFraming::None,
    };
    Ok((environ, framing))
}

/// What [`environ_from_params`] needs to know of the variables, noted as they go by, so that
/// it looks none of them up again in the usual case. A repeated name counts by its last value.
#[derive(Debug, Default)]
struct Seen {
    content_length: Emptied,
    content_type: Emptied,
    query_string: bool,
    script_name: Option<PathShape>,
    path_info: Option<PathShape>,
    /// `HTTPS` is `on` or `1`.
    https: bool,
    /// `REQUEST_SCHEME` is `https`.
    scheme_https: bool,
    /// `HTTP_TRANSFER_ENCODING` names `chunked`.
    chunked: bool,
    /// Which of the variables `fill_required` gives a value are there and not empty.
    required: u8,
    /// A variable that may not be empty ([`Environ::may_be_empty`]) came empty after a value
    /// of its name may have been kept: the empty value is kept too (it replaces the earlier
    /// one), and both go at the end.
    empty: bool,
    /// The names kept so far, as bits of their hash ([`name_bit`]): an empty value whose name
    /// has no bit set was never kept before, and is left out as it comes, with no pass over
    /// the environ at the end (nginx sends `SERVER_NAME` and, over uwsgi, `HTTPS` empty).
    kept: [u64; 4],
    /// Where the value of `HTTP_HOST` is, for `fill_required`.
    host: Option<Range<usize>>,
}

/// The bit of `name` in [`Seen::kept`]: its last four bytes and its length, mixed by a
/// multiplication. The names the front ends send have bits of their own where it matters
/// (`SERVER_NAME`, `HTTPS`, `REMOTE_USER` and the other names sent empty collide with none of
/// the others of nginx's, Apache's and lighttpd's lists; see the tests).
#[inline]
fn name_bit(name: &[u8]) -> u8 {
    let tail = match name.len().checked_sub(4) {
        Some(start) => u32::from_le_bytes([
            name[start],
            name[start + 1],
            name[start + 2],
            name[start + 3],
        ]),
        None => 0,
    };
    let mixed = (tail ^ name.len() as u32).wrapping_mul(0x9E37_79B1);
    (mixed >> 24) as u8
}

/// Where a variable that is removed when empty (`CONTENT_LENGTH`, `CONTENT_TYPE`) stands: an
/// empty value is left out as it comes, and one that replaces a value kept before has that
/// value removed at the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Emptied {
    /// No value kept.
    #[default]
    Nothing,
    /// A value kept, and the last one is not empty.
    Kept,
    /// A value kept, and the last one is empty: the kept one goes.
    Later,
}

/// What `environ_from_params` checks of `SCRIPT_NAME` and `PATH_INFO`.
#[derive(Debug, Clone, Copy)]
struct PathShape {
    empty: bool,
    starts_with_slash: bool,
    ends_with_slash: bool,
}

impl Seen {
    const REQUEST_METHOD: u8 = 1;
    const SERVER_PROTOCOL: u8 = 2;
    const SERVER_NAME: u8 = 4;
    const SERVER_PORT: u8 = 8;
    const ALL_REQUIRED: u8 = 15;

    /// Notes a variable; false for one that is left out.
    /// The variable's value is `block[value]`.
    fn keep(&mut self, name: &[u8], block: &[u8], value: &Range<usize>) -> bool {
        let value_at = value;
        let value = &block[value.clone()];
        let shape = || PathShape {
            empty: value.is_empty(),
            starts_with_slash: value.starts_with(b"/"),
            ends_with_slash: value.ends_with(b"/"),
        };
        let mut required = |bit: u8| {
            if value.is_empty() {
                self.required &= !bit;
            } else {
                self.required |= bit;
            }
        };
        match name {
            // nginx's duplicates of the content headers, and httpoxy.
            b"" | b"HTTP_CONTENT_LENGTH" | b"HTTP_CONTENT_TYPE" | b"HTTP_PROXY" => return false,
            b"CONTENT_LENGTH" => return Self::unless_empty(&mut self.content_length, value),
            b"CONTENT_TYPE" => return Self::unless_empty(&mut self.content_type, value),
            // These may be empty: no need to look them up in `Environ::may_be_empty`, below.
            b"QUERY_STRING" => {
                self.query_string = true;
                return true;
            }
            b"SCRIPT_NAME" => {
                self.script_name = Some(shape());
                return true;
            }
            b"PATH_INFO" => {
                self.path_info = Some(shape());
                return true;
            }
            b"HTTPS" => self.https = value.eq_ignore_ascii_case(b"on") || value == b"1",
            b"REQUEST_SCHEME" => self.scheme_https = value.eq_ignore_ascii_case(b"https"),
            b"HTTP_TRANSFER_ENCODING" => self.chunked = names_chunked(value),
            b"HTTP_HOST" => self.host = Some(value_at.clone()),
            b"REQUEST_METHOD" => required(Self::REQUEST_METHOD),
            b"SERVER_PROTOCOL" => required(Self::SERVER_PROTOCOL),
            b"SERVER_NAME" => required(Self::SERVER_NAME),
            b"SERVER_PORT" => required(Self::SERVER_PORT),
            _ => {}
        }
        let bit = name_bit(name);
        let (word, mask) = (usize::from(bit >> 6), 1u64 << (bit & 63));
        if value.is_empty() && !Environ::may_be_empty(name) {
            if self.kept[word] & mask == 0 {
                return false;
            }
            self.empty = true;
        }
        // An `HTTP_*` value is never left out for being empty: its name needs no bit.
        if !name.starts_with(b"HTTP_") {
            self.kept[word] |= mask;
        }
        true
    }

    /// Keeps a value that is removed when empty, unless it is empty.
    fn unless_empty(state: &mut Emptied, value: &[u8]) -> bool {
        *state = match (value.is_empty(), *state) {
            (false, _) => Emptied::Kept,
            (true, Emptied::Nothing) => Emptied::Nothing,
            (true, Emptied::Kept | Emptied::Later) => Emptied::Later,
        };
        !value.is_empty()
    }
}

/// Makes `SCRIPT_NAME` and `PATH_INFO` present and valid: `PATH_INFO` empty or starting with
/// `/`, `SCRIPT_NAME` not ending with `/` (its slashes go, and `PATH_INFO` starts with one),
/// and `PATH_INFO` `/` when both would be empty. Values that need no change are not copied.
fn normalize_path(environ: &mut Environ) {
    let script_name = environ.get_bytes("SCRIPT_NAME").unwrap_or_default();
    let path_info = environ.get_bytes("PATH_INFO").unwrap_or_default();
    let kept = script_name
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(0, |last| last + 1);
    let slashes_dropped = kept < script_name.len();
    let path_info = if path_info.starts_with(b"/") {
        path_info
    } else if !path_info.is_empty() {
        let mut with_slash = Vec::with_capacity(path_info.len() + 1);
        with_slash.push(b'/');
        with_slash.extend_from_slice(&path_info);
        Bytes::from(with_slash)
    } else if slashes_dropped || kept == 0 {
        Bytes::from_static(b"/")
    } else {
        path_info
    };
    environ.set("SCRIPT_NAME", script_name.slice(..kept));
    environ.set("PATH_INFO", path_info);
}

/// Splits the request's path at a mount prefix: when `SCRIPT_NAME` followed by `PATH_INFO`
/// is `prefix` or starts with `prefix/`, `SCRIPT_NAME` becomes `prefix` and `PATH_INFO` the
/// rest; otherwise nothing changes. Trailing slashes of `prefix` are ignored, and an empty
/// prefix (or `/`) mounts nothing. Returns whether the environ was changed.
///
/// For front ends that do not split the path themselves: nginx's FastCGI sends the whole path
/// in `SCRIPT_NAME` and no `PATH_INFO`, Apache's `ProxyPass` to `fcgi://` does the same, and
/// nginx's uwsgi sends it all in `PATH_INFO`. A path the front end did split is split again at
/// `prefix`, so the configured prefix wins. Apply it after [`environ_from_params`].
///
/// ```
/// use bytes::Bytes;
/// use gateway_servers::params::{environ_from_params, mount};
///
/// // What nginx sends for /app/x with `include fastcgi_params;`.
/// let vars = [("SCRIPT_NAME", "/app/x"), ("REQUEST_URI", "/app/x")];
/// let mut environ = environ_from_params(vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v))));
/// assert!(mount(&mut environ, b"/app"));
/// assert_eq!((environ.script_name(), environ.path_info()), (&b"/app"[..], &b"/x"[..]));
/// ```
pub fn mount(environ: &mut Environ, prefix: &[u8]) -> bool {
    let mut prefix = prefix;
    while let Some(rest) = prefix.strip_suffix(b"/") {
        prefix = rest;
    }
    if prefix.is_empty() {
        return false;
    }
    let (script_name, path_info) = (environ.script_name(), environ.path_info());
    let mut path = Vec::with_capacity(script_name.len() + path_info.len());
    path.extend_from_slice(script_name);
    path.extend_from_slice(path_info);
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    if !rest.is_empty() && !rest.starts_with(b"/") {
        return false;
    }
    if script_name == prefix {
        return false;
    }
    let rest = rest.to_vec();
    environ.set("SCRIPT_NAME", prefix.to_vec());
    environ.set("PATH_INFO", rest);
    true
}

/// Gives the variables every environ has (PEP 3333, and the validator's R14, R23, R24) a value
/// when the front end left them out or empty: nginx sends `SERVER_NAME=""` from a server block
/// without `server_name`, and a CGI script run by hand gets no method or protocol at all.
/// `SERVER_NAME` falls back to the `Host` header, then `SERVER_ADDR`, then `localhost`;
/// `SERVER_PORT` to the `Host` header's port, then the scheme's default. `present` holds the
/// [`Seen`] bits of those that came with a value, and `host` is `HTTP_HOST` (empty without
/// one).
fn fill_required(environ: &mut Environ, present: u8, host: Bytes) {
    let missing = |bit: u8| present & bit == 0;
    if missing(Seen::REQUEST_METHOD) {
        environ.set("REQUEST_METHOD", "GET");
    }
    if missing(Seen::SERVER_PROTOCOL) {
        environ.set("SERVER_PROTOCOL", "HTTP/1.0");
    }
    if !(missing(Seen::SERVER_NAME) || missing(Seen::SERVER_PORT)) {
        return;
    }
    let (host_name, host_port) = split_host(&host);
    if missing(Seen::SERVER_NAME) {
        let name = Some(host.slice_ref(host_name))
            .filter(|h| !h.is_empty())
            .or_else(|| environ.get_bytes("SERVER_ADDR"))
            .filter(|h| !h.is_empty())
            .unwrap_or(Bytes::from_static(b"localhost"));
        environ.set("SERVER_NAME", name);
    }
    if missing(Seen::SERVER_PORT) {
        let port = host_port.unwrap_or(environ.url_scheme().default_port());
        environ.set("SERVER_PORT", Bytes::from(port.to_string()));
    }
}

/// How the request's body arrives, from its variables.
pub fn body_framing(environ: &Environ) -> BodyFraming {
    if environ
        .get("CONTENT_LENGTH")
        .is_some_and(|value| !value.is_empty())
    {
        return environ
            .content_length()
            .map_or(BodyFraming::Invalid, BodyFraming::Length);
    }
    if environ
        .get("HTTP_TRANSFER_ENCODING")
        .is_some_and(names_chunked)
    {
        BodyFraming::UntilEnd
    } else {
        BodyFraming::None
    }
}

/// Whether a `Transfer-Encoding` value names `chunked`.
fn names_chunked(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Bounds an input by the request's framing: `CONTENT_LENGTH` bytes, to its end, or nothing.
pub fn bound_input(input: Input, framing: BodyFraming) -> Input {
    match framing {
        BodyFraming::Length(0) | BodyFraming::None | BodyFraming::Invalid => Input::empty(),
        BodyFraming::Length(n) => input.with_limit(n),
        BodyFraming::UntilEnd => input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of [`environ_from_params`] applied one at a time, by lookups: the model the
    /// single pass is checked against.
    fn by_lookups(vars: &[(Bytes, Bytes)]) -> Environ {
        let mut environ = Environ::new();
        for (name, value) in vars.iter().filter(|(name, _)| !name.is_empty()) {
            environ.set(name.clone(), value.clone());
        }
        for name in ["CONTENT_LENGTH", "CONTENT_TYPE"] {
            if environ.get(name).is_some_and(<[u8]>::is_empty) {
                environ.remove(name);
            }
        }
        for name in ["HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_PROXY"] {
            environ.remove(name);
        }
        let empty: Vec<String> = environ
            .vars()
            .filter(|(name, value)| value.is_empty() && !Environ::may_be_empty(name))
            .map(|(name, _)| String::from_utf8(name.to_vec()).unwrap())
            .collect();
        for name in empty {
            environ.remove(&name);
        }
        if !environ.contains("QUERY_STRING") {
            environ.set("QUERY_STRING", Bytes::new());
        }
        // `SCRIPT_NAME` and `PATH_INFO` made valid by the rules as written.
        let mut script_name = environ.script_name().to_vec();
        let mut path_info = environ.path_info().to_vec();
        if !path_info.is_empty() && !path_info.starts_with(b"/") {
            path_info.insert(0, b'/');
        }
        while script_name.ends_with(b"/") {
            script_name.pop();
            if !path_info.starts_with(b"/") {
                path_info.insert(0, b'/');
            }
        }
        if script_name.is_empty() && path_info.is_empty() {
            path_info.push(b'/');
        }
        environ.set("SCRIPT_NAME", script_name);
        environ.set("PATH_INFO", path_info);
        let https = environ
            .get("HTTPS")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"on") || v == b"1")
            || environ
                .get("REQUEST_SCHEME")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"https"));
        if https {
            environ.set_url_scheme(UrlScheme::Https);
        }
        // The required variables, each looked up.
        let mut present = 0;
        for (bit, name) in [
            (Seen::REQUEST_METHOD, "REQUEST_METHOD"),
            (Seen::SERVER_PROTOCOL, "SERVER_PROTOCOL"),
            (Seen::SERVER_NAME, "SERVER_NAME"),
            (Seen::SERVER_PORT, "SERVER_PORT"),
        ] {
            if environ.get(name).is_some_and(|value| !value.is_empty()) {
                present |= bit;
            }
        }
        let host = environ.get_bytes("HTTP_HOST").unwrap_or_default();
        fill_required(&mut environ, present, host);
        environ
    }

    proptest::proptest! {
        /// The single pass gives what the rules one by one give, whatever the front end sends
        /// (names repeated, values empty, paths out of shape), with the body's framing that
        /// environ has. The order of the variables may differ when an empty value came before
        /// the one kept, so they are compared sorted.
        #[test]
        fn environ_from_params_is_its_rules_one_by_one(vars in proptest::collection::vec((
            proptest::sample::select(&[
                "", "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_PROXY",
                "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "HTTPS", "REQUEST_SCHEME",
                "REQUEST_METHOD", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST",
                "SERVER_ADDR", "HTTP_X", "HTTP_TRANSFER_ENCODING", "REMOTE_USER",
            ][..]),
            proptest::sample::select(&[
                "", "/", "/a", "a/", "/a/", "on", "1", "HTTPS", "GET", "x:81", "5", "chunked",
                "gzip, Chunked", "12x",
            ][..]),
        ), 0..24)) {
            let vars: Vec<(Bytes, Bytes)> = vars
                .into_iter()
                .map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes())))
                .collect();
            let expected = by_lookups(&vars);
            let (environ, framing) = framed_environ_from_params(vars);
            proptest::prop_assert_eq!(framing, body_framing(&expected));
            let sorted = |environ: &Environ| {
                let mut vars: Vec<_> = environ.vars().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                vars.sort();
                vars
            };
            proptest::prop_assert_eq!(sorted(&environ), sorted(&expected));
            proptest::prop_assert_eq!(environ.url_scheme(), expected.url_scheme());
        }
    }

    fn environ(vars: &[(&'static str, &'static str)]) -> Environ {
        environ_from_params(vars.iter().map(|(n, v)| {
            (
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        }))
    }

    #[test]
    fn front_end_quirks() {
        // nginx: empty CONTENT_*, HTTP_CONTENT_* duplicates, repeated headers as repeated params.
        let e = environ(&[
            ("CONTENT_LENGTH", ""),
            ("CONTENT_TYPE", ""),
            ("HTTP_CONTENT_LENGTH", "5"),
            ("HTTP_X_DUP", "1"),
            ("HTTP_X_DUP", "2"),
            ("SCRIPT_NAME", "/index.php"),
        ]);
        assert!(!e.contains("CONTENT_LENGTH") && !e.contains("CONTENT_TYPE"));
        assert!(!e.contains("HTTP_CONTENT_LENGTH"));
        assert_eq!(e.get("HTTP_X_DUP"), Some(&b"2"[..]));
        assert_eq!(e.path_info(), b"");
        assert_eq!(body_framing(&e), BodyFraming::None);
        // lighttpd: CONTENT_LENGTH=0.
        assert_eq!(
            body_framing(&environ(&[("CONTENT_LENGTH", "0")])),
            BodyFraming::Length(0)
        );
        // Apache mod_cgid with a chunked request: no length, Transfer-Encoding chunked.
        let e = environ(&[("HTTP_TRANSFER_ENCODING", "chunked")]);
        assert_eq!(body_framing(&e), BodyFraming::UntilEnd);
        // A length that is not a number cannot delimit the body, chunked or not.
        for length in ["abc", "5 ", "+5", "-1"] {
            let vars = [
                ("CONTENT_LENGTH", length),
                ("HTTP_TRANSFER_ENCODING", "chunked"),
            ];
            let vars = vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v)));
            let (e, framing) = framed_environ_from_params(vars);
            assert_eq!(framing, BodyFraming::Invalid, "{length}");
            assert_eq!(body_framing(&e), BodyFraming::Invalid, "{length}");
        }
    }

    /// What nginx (fastcgi_params, uwsgi_params), Apache and lighttpd send empty is left out as
    /// it comes, with no pass over the environ at the end: no name of theirs shares its bit
    /// with one sent empty.
    #[test]
    fn the_usual_empty_variables_are_left_out_as_they_come() {
        let sent = [
            "REQUEST_METHOD",
            "REQUEST_URI",
            "DOCUMENT_URI",
            "DOCUMENT_ROOT",
            "SERVER_PROTOCOL",
            "REQUEST_SCHEME",
            "GATEWAY_INTERFACE",
            "SERVER_SOFTWARE",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "SERVER_ADDR",
            "SERVER_PORT",
            "REDIRECT_STATUS",
            "SCRIPT_FILENAME",
            "SERVER_ADMIN",
            "CONTEXT_DOCUMENT_ROOT",
            "UNIQUE_ID",
            "DOCUMENT_NAME",
            "UWSGI_SCHEME",
        ];
        let empty = [
            "SERVER_NAME",
            "HTTPS",
            "REMOTE_USER",
            "AUTH_TYPE",
            "REMOTE_HOST",
            "REMOTE_IDENT",
            "PATH_TRANSLATED",
            "SERVER_SIGNATURE",
            "CONTEXT_PREFIX",
        ];
        let mut seen = Seen::default();
        for name in sent {
            assert!(seen.keep(name.as_bytes(), b"x", &(0..1)), "{name}");
        }
        for name in empty {
            assert!(!seen.keep(name.as_bytes(), b"", &(0..0)), "{name}");
        }
        assert!(!seen.empty);
    }

    #[test]
    fn empty_variables_are_left_out_unless_they_may_be_empty() {
        // What nginx's fastcgi_params sends for a GET without authentication or query, and the
        // empty variables Apache and lighttpd may give a CGI script.
        let e = environ(&[
            ("QUERY_STRING", ""),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_TYPE", ""),
            ("CONTENT_LENGTH", ""),
            ("SCRIPT_NAME", "/app"),
            ("PATH_INFO", ""),
            ("REMOTE_USER", ""),
            ("AUTH_TYPE", ""),
            ("REMOTE_HOST", ""),
            ("REMOTE_IDENT", ""),
            ("HTTPS", ""),
            ("PATH_TRANSLATED", ""),
            ("SERVER_NAME", ""),
            ("HTTP_X_EMPTY", ""),
            ("REMOTE_ADDR", "127.0.0.1"),
        ]);
        for gone in [
            "REMOTE_USER",
            "AUTH_TYPE",
            "REMOTE_HOST",
            "REMOTE_IDENT",
            "HTTPS",
            "PATH_TRANSLATED",
        ] {
            assert!(!e.contains(gone), "{gone}");
        }
        for (kept, value) in [
            ("QUERY_STRING", ""),
            ("PATH_INFO", ""),
            ("HTTP_X_EMPTY", ""),
            ("SCRIPT_NAME", "/app"),
            ("REMOTE_ADDR", "127.0.0.1"),
            // Filled in, as before.
            ("SERVER_NAME", "localhost"),
        ] {
            assert_eq!(e.get(kept), Some(value.as_bytes()), "{kept}");
        }
        assert_eq!(e.url_scheme(), UrlScheme::Http);
        // A name repeated counts by its last value: empty, it goes; set, it stays.
        let e = environ(&[("REMOTE_USER", "alice"), ("REMOTE_USER", "")]);
        assert!(!e.contains("REMOTE_USER"));
        let e = environ(&[("REMOTE_USER", ""), ("REMOTE_USER", "alice")]);
        assert_eq!(e.get("REMOTE_USER"), Some(&b"alice"[..]));
        // Nothing empty: nothing removed.
        let e = environ(&[("REMOTE_USER", "alice"), ("AUTH_TYPE", "Basic")]);
        assert_eq!(e.get("AUTH_TYPE"), Some(&b"Basic"[..]));
    }

    #[test]
    fn paths_are_made_valid() {
        for (script, path, want_script, want_path) in [
            ("", "", "", "/"),
            ("/", "", "", "/"),
            ("/", "/x", "", "/x"),
            ("/app/", "x", "/app", "/x"),
            ("/app", "", "/app", ""),
            ("/cgi-bin/echo", "/a/b", "/cgi-bin/echo", "/a/b"),
        ] {
            let e = environ(&[("SCRIPT_NAME", script), ("PATH_INFO", path)]);
            assert_eq!(
                (e.script_name(), e.path_info()),
                (want_script.as_bytes(), want_path.as_bytes()),
                "{script:?} {path:?}"
            );
        }
    }

    #[test]
    fn a_mount_prefix_splits_the_path() {
        for (prefix, script, path, want_script, want_path, changed) in [
            // nginx FastCGI: the whole path in SCRIPT_NAME, no PATH_INFO.
            ("/app", "/app/x", "", "/app", "/x", true),
            ("/app/", "/app/x/y", "", "/app", "/x/y", true),
            // (environ_from_params already gave the trailing slash to PATH_INFO.)
            ("/app", "/app/", "", "/app", "/", false),
            ("/app", "/app", "", "/app", "", false),
            ("/a/b", "/a/b/c", "", "/a/b", "/c", true),
            // nginx uwsgi: the whole path in PATH_INFO.
            ("/app", "", "/app/x", "/app", "/x", true),
            // Already split at the prefix (lighttpd): unchanged.
            ("/app", "/app", "/x", "/app", "/x", false),
            // Split elsewhere: the prefix wins.
            ("/app", "/app/sub", "/x", "/app", "/sub/x", true),
            ("/app/sub", "/app", "/sub/x", "/app/sub", "/x", true),
            // Not under the prefix, or only a name that begins like it: unchanged.
            ("/app", "/other/x", "", "/other/x", "", false),
            ("/app", "/application/x", "", "/application/x", "", false),
            ("/app", "/ap", "", "/ap", "", false),
            // No prefix.
            ("", "/app/x", "", "/app/x", "", false),
            ("/", "/app/x", "", "/app/x", "", false),
        ] {
            let mut e = environ(&[("SCRIPT_NAME", script), ("PATH_INFO", path)]);
            assert_eq!(
                mount(&mut e, prefix.as_bytes()),
                changed,
                "{prefix:?} {script:?} {path:?}"
            );
            assert_eq!(
                (e.script_name(), e.path_info()),
                (want_script.as_bytes(), want_path.as_bytes()),
                "{prefix:?} {script:?} {path:?}"
            );
        }
    }

    #[test]
    fn inputs_are_bounded_by_their_framing() {
        use std::io::Read;
        let read = |framing| {
            let mut out = Vec::new();
            bound_input(Input::from_bytes("0123456789"), framing)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        assert_eq!(read(BodyFraming::Length(4)), b"0123");
        assert_eq!(read(BodyFraming::UntilEnd), b"0123456789");
        assert_eq!(read(BodyFraming::None), b"");
    }
}
