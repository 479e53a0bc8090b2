//! Files from a directory: [`StaticFiles`].
//!
//! An app that serves the file named by `PATH_INFO` below a root directory, as a file body
//! (servers that can may send it with sendfile). It answers GET and HEAD with `Content-Type`
//! (from the extension), `Content-Length`, `ETag`, `Last-Modified` and `Accept-Ranges`; honours
//! `If-None-Match` and `If-Modified-Since` (304), and a single `Range` (206, or 416 when it
//! cannot be satisfied; `If-Range` is checked). A directory is served by its `index.html`, and a
//! directory path without its final `/` is redirected to it. No path leaves the root: `..`
//! segments are refused and symbolic links that point outside it are not followed.
//!
//! ```no_run
//! use gateway_middleware::{Mount, StaticFiles};
//!
//! let app = Mount::builder().mount("/static", StaticFiles::new("/srv/www/static")).build();
//! # let _ = app;
//! ```

use std::fs::{File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gateway_core::{App, Body, Environ, StartResponse};
use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::plain::plain;

/// The app: serves the files below a root directory.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    root: PathBuf,
    index: Option<String>,
}

impl StaticFiles {
    /// Serves the files below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StaticFiles {
            root: root.into(),
            index: Some("index.html".to_owned()),
        }
    }

    /// The file that serves a directory (`index.html` by default; `None` for 404).
    pub fn index(mut self, index: Option<&str>) -> Self {
        self.index = index.map(str::to_owned);
        self
    }

    /// The file a path names, if it is below the root: `Err` for a path that tries to leave.
    fn resolve(&self, path: &[u8]) -> Result<PathBuf, ()> {
        let mut resolved = self.root.clone();
        for segment in path.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return Err(()),
                s if s.contains(&0) => return Err(()),
                s => {
                    use std::os::unix::ffi::OsStrExt;
                    resolved.push(std::ffi::OsStr::from_bytes(s));
                }
            }
        }
        Ok(resolved)
    }
}

fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).unwrap_or(HeaderValue::from_static(""))
}

fn entity_tag(meta: &Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), modified)
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, `*` matches all).
fn none_match(header: &[u8], etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    String::from_utf8_lossy(header).split(',').any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/") == etag
    })
}

/// Whether `If-Match` holds for `etag`: `*`, or one of its tags by strong comparison (a weak
/// tag never matches, RFC 9110 section 8.8.3.2).
fn strong_match(header: &[u8], etag: &str) -> bool {
    !etag.starts_with("W/")
        && String::from_utf8_lossy(header)
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag)
}

/// The byte range asked for by a `Range` header, for a file of `len` bytes: `Ok(None)` to send
/// the whole file (no range, several ranges, or a syntax this does not take), `Err(())` when it
/// cannot be satisfied.
fn byte_range(header: &[u8], len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.min(len.saturating_sub(1))),
        (Ok(first), Err(_)) if last.is_empty() => (first, len.saturating_sub(1)),
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

impl App for StaticFiles {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let method = environ.request_method();
        if method != "GET" && method != "HEAD" {
            let mut headers = HeaderMap::new();
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return plain(start, StatusCode::METHOD_NOT_ALLOWED, headers);
        }
        let Ok(mut path) = self.resolve(environ.path_info()) else {
            return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
        };
        let Ok(mut meta) = std::fs::metadata(&path) else {
            return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
        };
        if !meta.is_dir() && environ.path_info().ends_with(b"/") {
            // `/.env/` names no file: serving `.env` would pass front-end rules that match
            // the name at the end of the path.
            return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
        }
        if meta.is_dir() {
            if !environ.path_info().ends_with(b"/") {
                // The path as a URI path again (a `?` or `#` in a name must not end it), with
                // one leading slash (`//docs/` would name the host `docs`).
                let path = environ.path();
                let path = &path[path.iter().take_while(|&&b| b == b'/').count().max(1) - 1..];
                let mut location = bytes::BytesMut::new();
                gateway_core::convert::percent_encode_path(path, &mut location);
                location.extend_from_slice(b"/");
                if !environ.query_string().is_empty() {
                    location.extend_from_slice(b"?");
                    location.extend_from_slice(environ.query_string());
                }
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_bytes(&location) {
                    headers.insert(header::LOCATION, value);
                }
                return plain(start, StatusCode::MOVED_PERMANENTLY, headers);
            }
            let Some(index) = &self.index else {
                return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
            };
            path.push(index);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => meta = m,
                _ => return plain(start, StatusCode::NOT_FOUND, HeaderMap::new()),
            }
        }
        if !meta.is_file() {
            return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
        }
        // The file is opened, then the file opened is checked: a symbolic link put in place
        // between a check and the open cannot lead out of the root.
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                return plain(start, StatusCode::FORBIDDEN, HeaderMap::new());
            }
            Err(_) => return plain(start, StatusCode::NOT_FOUND, HeaderMap::new()),
        };
        if !self.inside_root(&file, &path) {
            return plain(start, StatusCode::NOT_FOUND, HeaderMap::new());
        }
        let meta = match file.metadata() {
            Ok(meta) if meta.is_file() => meta,
            _ => return plain(start, StatusCode::NOT_FOUND, HeaderMap::new()),
        };
        match self.serve(&environ, &path, file, &meta) {
            Ok((status, headers, body)) => match start.start(status, headers) {
                Ok(_) => body,
                Err(error) => Body::error(error),
            },
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                plain(start, StatusCode::FORBIDDEN, HeaderMap::new())
            }
            Err(_) => plain(start, StatusCode::NOT_FOUND, HeaderMap::new()),
        }
    }
}

impl StaticFiles {
    /// Whether `file`, opened from `path`, is below the root (symbolic links resolved). The
    /// path of the open file itself is asked of the kernel (`/proc/self/fd`), so what is checked
    /// is what is served; where that is not available, `path` is resolved again.
    fn inside_root(&self, file: &File, path: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(root) = self.root.canonicalize() else {
            return false;
        };
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| path.canonicalize());
        opened.is_ok_and(|opened| opened.starts_with(root))
    }

    fn serve(
        &self,
        environ: &Environ,
        path: &Path,
        mut file: File,
        meta: &Metadata,
    ) -> io::Result<(StatusCode, HeaderMap, Body)> {
        let len = meta.len();
        let etag = entity_tag(meta);
        let modified = meta.modified().ok();
        let mut headers = HeaderMap::new();
        let content_type = mime_guess::from_path(path).first_or_octet_stream();
        if let Ok(value) = HeaderValue::from_str(content_type.as_ref()) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, value);
        }
        if let Some(modified) = modified {
            headers.insert(header::LAST_MODIFIED, http_date(modified));
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

        // The preconditions in the order of RFC 9110, section 13.2.2.
        let date = |name: &str| {
            environ
                .header(name)
                .and_then(|value| std::str::from_utf8(value).ok())
                .and_then(|value| httpdate::parse_http_date(value).ok())
                // A date later than now is no date a client can have seen.
                .filter(|&date| date <= SystemTime::now())
        };
        // HTTP dates have whole seconds.
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let unmodified_since = |since: SystemTime| modified.is_some_and(|m| secs(m) <= secs(since));
        let precondition_failed = match environ.header("if-match") {
            Some(tags) => !strong_match(tags, &etag),
            None => date("if-unmodified-since").is_some_and(|since| !unmodified_since(since)),
        };
        if precondition_failed {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&etag) {
                headers.insert(header::ETAG, value);
            }
            return Ok((StatusCode::PRECONDITION_FAILED, headers, Body::empty()));
        }
        let not_modified = match environ.header("if-none-match") {
            Some(tags) => none_match(tags, &etag),
            None => date("if-modified-since").is_some_and(unmodified_since),
        };
        if not_modified {
            headers.remove(header::CONTENT_TYPE);
            return Ok((StatusCode::NOT_MODIFIED, headers, Body::empty()));
        }

        let range_applies = match environ.header("if-range") {
            None => true,
            Some(condition) => {
                let condition = String::from_utf8_lossy(condition);
                condition == etag
                    || modified.is_some_and(|m| {
                        httpdate::parse_http_date(&condition)
                            .is_ok_and(|d| httpdate::fmt_http_date(d) == httpdate::fmt_http_date(m))
                    })
            }
        };
        let range = match environ.header("range") {
            Some(range) if range_applies => byte_range(range, len),
            _ => Ok(None),
        };
        match range {
            Err(()) => {
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                let body = "416 Range Not Satisfiable\n";
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                Ok((StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::from(body)))
            }
            Ok(Some((first, last))) => {
                file.seek(SeekFrom::Start(first))?;
                let count = last - first + 1;
                if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
                Ok((
                    StatusCode::PARTIAL_CONTENT,
                    headers,
                    Body::file_range(file, count),
                ))
            }
            Ok(None) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                // HEAD: the length, and no body to open for nothing.
                let body = match environ.request_method() {
                    "HEAD" => Body::empty(),
                    _ => Body::file_range(file, len),
                };
                Ok((StatusCode::OK, headers, body))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::driver;
    use http_body_util::BodyExt;

    struct Tree(PathBuf);

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree(name: &str) -> Tree {
        let root =
            std::env::temp_dir().join(format!("gateway-static-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("www/docs")).unwrap();
        std::fs::write(root.join("www/hello.txt"), "0123456789").unwrap();
        std::fs::write(root.join("www/docs/index.html"), "<p>docs</p>").unwrap();
        std::fs::write(root.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.join("secret.txt"), root.join("www/escape.txt")).unwrap();
        Tree(root)
    }

    struct Answer {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    fn get(app: &StaticFiles, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        environ.set("SCRIPT_NAME", "/static");
        environ.set("PATH_INFO", path.to_owned());
        for (name, value) in headers {
            environ.set(gateway_core::header_var_name(name), value.to_string());
        }
        let response = gateway_core::block_on(driver::call(app, environ));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = gateway_core::block_on(response.into_body().collect()).unwrap();
        Answer {
            status,
            headers,
            body: body.to_bytes().to_vec(),
        }
    }

    #[test]
    fn files_with_their_metadata() {
        let tree = tree("files");
        let app = StaticFiles::new(tree.0.join("www"));
        let a = get(&app, "GET", "/hello.txt", &[]);
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"0123456789");
        assert_eq!(a.headers["content-type"], "text/plain");
        assert_eq!(a.headers["content-length"], "10");
        assert_eq!(a.headers["accept-ranges"], "bytes");
        assert!(a.headers.contains_key("etag") && a.headers.contains_key("last-modified"));
        let head = get(&app, "HEAD", "/hello.txt", &[]);
        assert_eq!((head.status, head.body.len()), (200, 0));
        assert_eq!(head.headers["content-length"], "10");
        assert_eq!(get(&app, "POST", "/hello.txt", &[]).status, 405);
    }

    #[test]
    fn directories_and_escapes() {
        let tree = tree("dirs");
        let app = StaticFiles::new(tree.0.join("www"));
        let redirect = get(&app, "GET", "/docs", &[]);
        assert_eq!(redirect.status, 301);
        assert_eq!(redirect.headers["location"], "/static/docs/");
        let index = get(&app, "GET", "/docs/", &[]);
        assert_eq!(
            (index.status, index.body.as_slice()),
            (200, &b"<p>docs</p>"[..])
        );
        assert_eq!(index.headers["content-type"], "text/html");
        assert_eq!(get(&app, "GET", "/../secret.txt", &[]).status, 404);
        assert_eq!(get(&app, "GET", "/docs/../../secret.txt", &[]).status, 404);
        assert_eq!(
            get(&app, "GET", "/escape.txt", &[]).status,
            404,
            "symlink out of the root"
        );
        assert_eq!(get(&app, "GET", "/missing", &[]).status, 404);
        let no_index = StaticFiles::new(tree.0.join("www")).index(None);
        assert_eq!(get(&no_index, "GET", "/docs/", &[]).status, 404);
        // A file named with a trailing slash is no file.
        assert_eq!(get(&app, "GET", "/hello.txt/", &[]).status, 404);
    }

    #[test]
    fn a_directory_redirect_is_a_uri_path_on_this_host() {
        let tree = tree("redirects");
        std::fs::create_dir_all(tree.0.join("www/a?b #c")).unwrap();
        let app = StaticFiles::new(tree.0.join("www"));
        let redirect = get(&app, "GET", "/a?b #c", &[]);
        assert_eq!(redirect.status, 301);
        assert_eq!(redirect.headers["location"], "/static/a%3Fb%20%23c/");
        // Mounted at the root, `//docs` must not redirect to the host `docs`.
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        environ.set("PATH_INFO", "//docs");
        let response = gateway_core::block_on(driver::call(&app, environ));
        assert_eq!(response.status(), 301);
        assert_eq!(response.headers()["location"], "/docs/");
    }

    #[test]
    fn conditional_requests() {
        let tree = tree("conditional");
        let app = StaticFiles::new(tree.0.join("www"));
        let first = get(&app, "GET", "/hello.txt", &[]);
        let etag = first.headers["etag"].to_str().unwrap().to_owned();
        let modified = first.headers["last-modified"].to_str().unwrap().to_owned();
        let again = get(&app, "GET", "/hello.txt", &[("if-none-match", &etag)]);
        assert_eq!((again.status, again.body.len()), (304, 0));
        assert_eq!(again.headers["etag"], etag.as_str());
        let weak = format!("\"other\", W/{etag}");
        assert_eq!(
            get(&app, "GET", "/hello.txt", &[("if-none-match", &weak)]).status,
            304
        );
        assert_eq!(
            get(&app, "GET", "/hello.txt", &[("if-none-match", "\"x\"")]).status,
            200
        );
        assert_eq!(
            get(
                &app,
                "GET",
                "/hello.txt",
                &[("if-modified-since", &modified)]
            )
            .status,
            304
        );
        assert_eq!(
            get(
                &app,
                "GET",
                "/hello.txt",
                &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")]
            )
            .status,
            200
        );
        // A date later than now is ignored.
        let future =
            httpdate::fmt_http_date(SystemTime::now() + std::time::Duration::from_secs(86_400));
        assert_eq!(
            get(&app, "GET", "/hello.txt", &[("if-modified-since", &future)]).status,
            200
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        let tree = tree("preconditions");
        let app = StaticFiles::new(tree.0.join("www"));
        let first = get(&app, "GET", "/hello.txt", &[]);
        let etag = first.headers["etag"].to_str().unwrap().to_owned();
        let modified = first.headers["last-modified"].to_str().unwrap().to_owned();
        let status = |headers: &[(&str, &str)]| get(&app, "GET", "/hello.txt", headers).status;
        assert_eq!(status(&[("if-match", "\"other\"")]), 412);
        assert_eq!(status(&[("if-match", &format!("\"other\", {etag}"))]), 200);
        assert_eq!(status(&[("if-match", "*")]), 200);
        assert_eq!(
            status(&[("if-match", &format!("W/{etag}"))]),
            412,
            "weak never matches"
        );
        let before = "Thu, 01 Jan 1970 00:00:00 GMT";
        assert_eq!(status(&[("if-unmodified-since", before)]), 412);
        assert_eq!(status(&[("if-unmodified-since", &modified)]), 200);
        // If-Match decides alone when both are there.
        assert_eq!(
            status(&[("if-match", &etag), ("if-unmodified-since", before)]),
            200
        );
    }

    #[test]
    fn ranges() {
        let tree = tree("ranges");
        let app = StaticFiles::new(tree.0.join("www"));
        for (range, body, content_range) in [
            ("bytes=2-4", &b"234"[..], "bytes 2-4/10"),
            ("bytes=7-", b"789", "bytes 7-9/10"),
            ("bytes=-2", b"89", "bytes 8-9/10"),
            ("bytes=5-100", b"56789", "bytes 5-9/10"),
        ] {
            let a = get(&app, "GET", "/hello.txt", &[("range", range)]);
            assert_eq!(a.status, 206, "{range}");
            assert_eq!(a.body, body, "{range}");
            assert_eq!(a.headers["content-range"], content_range);
            assert_eq!(a.headers["content-length"], body.len().to_string().as_str());
        }
        let unsatisfiable = get(&app, "GET", "/hello.txt", &[("range", "bytes=10-")]);
        assert_eq!(unsatisfiable.status, 416);
        assert_eq!(unsatisfiable.headers["content-range"], "bytes */10");
        for whole in ["bytes=0-1,4-5", "items=1-2", "bytes=5-2"] {
            assert_eq!(
                get(&app, "GET", "/hello.txt", &[("range", whole)]).status,
                200,
                "{whole}"
            );
        }
        let stale = get(
            &app,
            "GET",
            "/hello.txt",
            &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
        );
        assert_eq!(stale.status, 200);
        let etag = stale.headers["etag"].to_str().unwrap().to_owned();
        let fresh = get(
            &app,
            "GET",
            "/hello.txt",
            &[("range", "bytes=0-1"), ("if-range", &etag)],
        );
        assert_eq!((fresh.status, fresh.body.as_slice()), (206, &b"01"[..]));
    }

    #[test]
    fn the_body_is_a_file_body_servers_can_send_with_sendfile() {
        let tree = tree("sendfile");
        let app = StaticFiles::new(tree.0.join("www"));
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        environ.set("PATH_INFO", "/hello.txt");
        let start_seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = start_seen.clone();
        let wrapper = move |environ: Environ, start: StartResponse| {
            let body = app.call(environ, start);
            *seen.lock().unwrap() = body.as_file().map(|f| f.remaining());
            body
        };
        gateway_core::block_on(driver::call(&wrapper, environ));
        assert_eq!(*start_seen.lock().unwrap(), Some(Some(10)));
    }
}
