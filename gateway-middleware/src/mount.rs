//! Apps mounted under path prefixes: [`Mount`].
//!
//! The longest prefix that matches whole path segments wins: `/app` matches `/app` and
//! `/app/x` but not `/application`. The matched prefix moves from `PATH_INFO` to the end of
//! `SCRIPT_NAME`, as PEP 3333 asks, so the mounted app sees the path below its mount and
//! `SCRIPT_NAME + PATH_INFO` is still the whole path. A lookup costs a hash lookup per segment
//! of the path, whatever the number of mounts.
//!
//! ```
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use gateway_middleware::Mount;
//!
//! let show = |environ: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     let parts = [environ.script_name(), b" ", environ.path_info()].concat();
//!     Body::from(parts)
//! };
//! let app = Mount::builder().mount("/api", show).mount("/legacy/app", show).build();
//!
//! let mut environ = Environ::new();
//! environ.set("PATH_INFO", "/legacy/app/users/7");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
//! assert_eq!(body.unwrap().to_bytes(), "/legacy/app /users/7");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use gateway_core::{App, Body, Environ, SharedApp, StartResponse};

use crate::NotFound;

/// Dispatches each request to the app mounted at the longest matching path prefix, or to the
/// fallback app (404 by default). Built with [`Mount::builder`].
#[derive(Clone)]
pub struct Mount {
    prefixes: HashMap<Box<[u8]>, usize>,
    apps: Vec<(Bytes, SharedApp)>,
    fallback: SharedApp,
}

/// Builds a [`Mount`].
#[derive(Clone)]
pub struct MountBuilder {
    mounts: Vec<(Bytes, SharedApp)>,
    fallback: SharedApp,
}

impl Mount {
    /// A builder with no mounts and a 404 fallback.
    pub fn builder() -> MountBuilder {
        MountBuilder {
            mounts: Vec::new(),
            fallback: Arc::new(NotFound),
        }
    }

    /// The mount that serves `path` (a `PATH_INFO`): its index and the length of its prefix.
    fn find(&self, path: &[u8]) -> Option<(usize, usize)> {
        if let Some(&i) = self.prefixes.get(path) {
            return Some((i, path.len()));
        }
        // Shorter candidates end just before a '/', longest first; "" is the fallback.
        path.iter()
            .enumerate()
            .rev()
            .filter(|&(at, &b)| b == b'/' && at > 0)
            .find_map(|(at, _)| self.prefixes.get(&path[..at]).map(|&i| (i, at)))
    }
}

impl MountBuilder {
    /// Mounts `app` at `prefix` (`/api`, `/legacy/app`). A trailing `/` is ignored; `""` and
    /// `/` replace the fallback. Mounting the same prefix again replaces the app.
    pub fn mount(mut self, prefix: &str, app: impl App + 'static) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            self.fallback = Arc::new(app);
            return self;
        }
        let prefix = if trimmed.starts_with('/') {
            Bytes::copy_from_slice(trimmed.as_bytes())
        } else {
            Bytes::from(format!("/{trimmed}"))
        };
        self.mounts.retain(|(p, _)| *p != prefix);
        self.mounts.push((prefix, Arc::new(app)));
        self
    }

    /// The app for requests no prefix matches (404 by default).
    pub fn fallback(mut self, app: impl App + 'static) -> Self {
        self.fallback = Arc::new(app);
        self
    }

    /// The [`Mount`].
    pub fn build(self) -> Mount {
        let prefixes = self
            .mounts
            .iter()
            .enumerate()
            .map(|(i, (prefix, _))| (Box::from(&prefix[..]), i))
            .collect();
        Mount {
            prefixes,
            apps: self.mounts,
            fallback: self.fallback,
        }
    }
}

impl App for Mount {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let path = environ.path_info();
        let Some((i, len)) = self.find(path) else {
            return self.fallback.call(environ, start);
        };
        let rest = Bytes::copy_from_slice(&path[len..]);
        let script_name = [environ.script_name(), &self.apps[i].0[..]].concat();
        environ.set("SCRIPT_NAME", script_name);
        environ.set("PATH_INFO", rest);
        self.apps[i].1.call(environ, start)
    }
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field(
                "prefixes",
                &self
                    .apps
                    .iter()
                    .map(|(p, _)| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for MountBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountBuilder")
            .field("mounts", &self.mounts.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    /// Answers `SCRIPT_NAME|PATH_INFO|tag`.
    fn tagged(tag: &'static str) -> impl App + 'static {
        move |environ: Environ, start: StartResponse| {
            let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
            Body::from(
                [
                    environ.script_name(),
                    b"|",
                    environ.path_info(),
                    b"|",
                    tag.as_bytes(),
                ]
                .concat(),
            )
        }
    }

    fn get(app: &Mount, script_name: &str, path: &str) -> (u16, String) {
        let mut environ = Environ::new();
        environ.set("SCRIPT_NAME", script_name.to_owned());
        environ.set("PATH_INFO", path.to_owned());
        let response = gateway_core::block_on(gateway_core::driver::call(app, environ));
        let status = response.status().as_u16();
        let body = gateway_core::block_on(response.into_body().collect()).unwrap();
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    fn app() -> Mount {
        Mount::builder()
            .mount("/app", tagged("app"))
            .mount("/app/admin/", tagged("admin"))
            .mount("legacy/app", tagged("legacy"))
            .build()
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let app = app();
        for (path, expected) in [
            ("/app", "/app||app"),
            ("/app/", "/app|/|app"),
            ("/app/x/y", "/app|/x/y|app"),
            ("/app/admin", "/app/admin||admin"),
            ("/app/admin/users", "/app/admin|/users|admin"),
            ("/app/administrator", "/app|/administrator|app"),
            ("/legacy/app/z", "/legacy/app|/z|legacy"),
        ] {
            assert_eq!(get(&app, "", path), (200, expected.to_owned()), "{path}");
        }
    }

    #[test]
    fn no_match_falls_back_to_404_or_the_fallback() {
        let app = app();
        assert_eq!(get(&app, "", "/application").0, 404);
        assert_eq!(get(&app, "", "/").0, 404);
        assert_eq!(get(&app, "", "").0, 404);
        let app = Mount::builder()
            .mount("/app", tagged("app"))
            .mount("/", tagged("root"))
            .build();
        assert_eq!(get(&app, "", "/other"), (200, "|/other|root".to_owned()));
    }

    #[test]
    fn mounts_nest_under_an_existing_script_name() {
        let inner = app();
        let outer = Mount::builder().mount("/outer", inner).build();
        assert_eq!(
            get(&outer, "/cgi", "/outer/app/x"),
            (200, "/cgi/outer/app|/x|app".to_owned())
        );
    }

    #[test]
    fn ten_thousand_mounts_each_found_by_its_prefix() {
        let mut builder = Mount::builder();
        for i in 0..10_000 {
            builder = builder.mount(&format!("/m{i}"), tagged("many"));
        }
        let app = builder.build();
        assert_eq!(
            get(&app, "", "/m9999/x"),
            (200, "/m9999|/x|many".to_owned())
        );
        assert_eq!(app.find(b"/m5000"), Some((5000, 6)));
    }

    proptest! {
        #[test]
        fn script_name_and_path_info_always_make_the_original_path(
            segments in proptest::collection::vec("[a-c]{0,3}", 0..6),
            trailing in any::<bool>(),
        ) {
            let mut path = String::new();
            for s in &segments {
                path.push('/');
                path.push_str(s);
            }
            if trailing {
                path.push('/');
            }
            let app = Mount::builder()
                .mount("/a", tagged("a"))
                .mount("/a/b", tagged("ab"))
                .mount("/b", tagged("b"))
                .mount("/", tagged("root"))
                .build();
            let (status, body) = get(&app, "/s", &path);
            prop_assert_eq!(status, 200);
            let mut parts = body.split('|');
            let script_name = parts.next().unwrap();
            let path_info = parts.next().unwrap();
            prop_assert_eq!(format!("{script_name}{path_info}"), format!("/s{path}"));
            prop_assert!(path_info.is_empty() || path_info.starts_with('/'));
        }
    }
}
