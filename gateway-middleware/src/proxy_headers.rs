//! The client as a reverse proxy saw it: [`ProxyHeaders`].
//!
//! Behind nginx or a load balancer, `REMOTE_ADDR` is the proxy's address and the scheme and host
//! are the proxy's hop. The proxy says what it saw in `X-Forwarded-For` and `X-Forwarded-Proto`
//! (and perhaps `X-Forwarded-Host` and `X-Forwarded-Port`), or in `Forwarded` (RFC 7239). Anyone
//! can send those headers, so they are believed only from trusted proxies: when `REMOTE_ADDR` is
//! trusted, the addresses in the headers are walked from the nearest hop outwards, past every
//! trusted proxy, and the first untrusted one is the client. Its hop's scheme then replaces
//! `wsgi.url_scheme` (and `HTTPS`). The values replaced are kept in the [`OriginalPeer`]
//! extension.
//!
//! Only the headers your proxy writes itself may be believed: one it passes through as the client
//! sent them lets any client choose them. So by default only `X-Forwarded-For` and
//! `X-Forwarded-Proto` are read (what nginx's usual `proxy_set_header` lines set), and a client's
//! `Forwarded` is ignored; [`ProxyHeaders::forwarded`] reads `Forwarded` instead (and then
//! ignores the `X-Forwarded-*` family), and [`ProxyHeaders::host`] believes the host and port too
//! (`HTTP_HOST`, `SERVER_NAME`, `SERVER_PORT`), for a proxy that sets them. A host that is not a
//! valid `host[:port]` is ignored.
//!
//! ```
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse, UrlScheme};
//! use gateway_middleware::{ProxyHeaders, TrustedNet};
//!
//! let app = Builder::new()
//!     .with(ProxyHeaders::new().trust("127.0.0.1".parse::<TrustedNet>().unwrap()))
//!     .app(|environ: Environ, start: StartResponse| {
//!         assert_eq!(environ.remote_addr(), Some("203.0.113.7"));
//!         assert_eq!(environ.url_scheme(), UrlScheme::Https);
//!         let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!         Body::empty()
//!     });
//! let mut environ = Environ::new();
//! environ.set("REMOTE_ADDR", "127.0.0.1");
//! environ.set("HTTP_X_FORWARDED_FOR", "198.51.100.1, 203.0.113.7");
//! environ.set("HTTP_X_FORWARDED_PROTO", "https");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! assert_eq!(response.status(), 200);
//! ```

use std::net::IpAddr;

use bytes::Bytes;
use gateway_core::{App, Body, Environ, Middleware, StartResponse, UrlScheme};

/// A network of trusted proxies: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedNet {
    addr: IpAddr,
    prefix: u8,
}

impl TrustedNet {
    /// The network `addr/prefix` (a prefix longer than the address is cut to its length).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        TrustedNet {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for TrustedNet {
    fn from(addr: IpAddr) -> Self {
        TrustedNet::new(addr, if addr.is_ipv4() { 32 } else { 128 })
    }
}

impl std::str::FromStr for TrustedNet {
    type Err = std::net::AddrParseError;

    /// `10.0.0.0/8`, `::1`, `192.168.1.5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse()?;
                let prefix = prefix
                    .parse()
                    .map_err(|_| "/".parse::<IpAddr>().unwrap_err())?;
                Ok(TrustedNet::new(addr, prefix))
            }
            None => Ok(TrustedNet::from(s.parse::<IpAddr>()?)),
        }
    }
}

/// What the proxy headers replaced, in the environ's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalPeer {
    /// The original `REMOTE_ADDR`.
    pub remote_addr: Option<Bytes>,
    /// The original `wsgi.url_scheme`.
    pub url_scheme: UrlScheme,
    /// The original `HTTP_HOST`.
    pub host: Option<Bytes>,
    /// The original `SERVER_PORT`.
    pub server_port: Option<Bytes>,
}

/// The middleware: believes forwarding headers from trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct ProxyHeaders {
    trusted: Vec<TrustedNet>,
    /// Read `Forwarded`, not the `X-Forwarded-*` headers.
    forwarded: bool,
    /// Believe the host and port the proxy reports.
    host: bool,
}

impl ProxyHeaders {
    /// Trusts nobody yet: add proxies with [`ProxyHeaders::trust`].
    pub fn new() -> Self {
        ProxyHeaders::default()
    }

    /// Trusts a proxy or a network of proxies.
    pub fn trust(mut self, net: impl Into<TrustedNet>) -> Self {
        self.trusted.push(net.into());
        self
    }

    /// Reads `Forwarded` (RFC 7239) instead of the `X-Forwarded-*` headers, for proxies that
    /// write it; the `X-Forwarded-*` headers are then ignored, whoever sent them.
    pub fn forwarded(mut self) -> Self {
        self.forwarded = true;
        self
    }

    /// Believes the host and port the proxy reports (`X-Forwarded-Host` and
    /// `X-Forwarded-Port`, or `Forwarded`'s `host=`), which replace `HTTP_HOST`, `SERVER_NAME`
    /// and `SERVER_PORT`. Only for a proxy that sets them itself (nginx:
    /// `proxy_set_header X-Forwarded-Host $host;`): one that passes the client's own through
    /// lets any client choose the host the app builds its links with.
    pub fn host(mut self) -> Self {
        self.host = true;
        self
    }

    fn trusts(&self, addr: &str) -> bool {
        parse_node(addr).is_some_and(|ip| self.trusted.iter().any(|net| net.contains(ip)))
    }
}

impl<A> Middleware<A> for ProxyHeaders {
    type App = ProxyHeadersApp<A>;

    fn wrap(&self, app: A) -> ProxyHeadersApp<A> {
        ProxyHeadersApp {
            inner: app,
            config: self.clone(),
        }
    }
}

/// An app behind trusted proxies; made by [`ProxyHeaders`].
#[derive(Debug, Clone)]
pub struct ProxyHeadersApp<A> {
    inner: A,
    config: ProxyHeaders,
}

/// What one hop says: the address it received from, its scheme, host and port.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Hop {
    for_: Option<String>,
    proto: Option<String>,
    host: Option<String>,
    port: Option<String>,
}

/// An address as the headers write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `"[::1]"`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

/// Whether `host` is a `host[:port]` an app may build links with: a name of letters, digits,
/// `-`, `_` and `.`, or a bracketed IPv6 address, and a port that is a number up to 65535.
fn valid_host(host: &str) -> bool {
    let (name, port) = split_host(host);
    let name_ok = match name.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
    };
    // A `:` left in the name is a port that is not a number.
    name_ok && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

/// Splits `host[:port]` (or `[v6]:port`) into the name and the port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    let split = match host.strip_prefix('[') {
        Some(rest) => rest.find(']').and_then(|end| {
            host.get(end + 2..)
                .and_then(|r| r.strip_prefix(':'))
                .map(|p| (end + 2, p))
        }),
        None => host.rsplit_once(':').map(|(name, port)| (name.len(), port)),
    };
    match split {
        Some((at, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (&host[..at], Some(port))
        }
        _ => (host, None),
    }
}

fn list(value: Option<&[u8]>) -> Vec<String> {
    value
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The hops of `Forwarded`, nearest last.
fn forwarded(value: &[u8]) -> Vec<Hop> {
    String::from_utf8_lossy(value)
        .split(',')
        .map(|element| {
            let mut hop = Hop::default();
            for pair in element.split(';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"').to_owned();
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => hop.for_ = Some(value),
                    "proto" => hop.proto = Some(value.to_ascii_lowercase()),
                    "host" => hop.host = Some(value),
                    _ => {}
                }
            }
            hop
        })
        .collect()
}

/// The hops of the `X-Forwarded-*` headers, nearest last; the host and port only `with_host`.
fn x_forwarded(environ: &Environ, with_host: bool) -> Vec<Hop> {
    let addrs = list(environ.get("HTTP_X_FORWARDED_FOR"));
    let protos = list(environ.get("HTTP_X_FORWARDED_PROTO"));
    let (hosts, ports) = match with_host {
        true => (
            list(environ.get("HTTP_X_FORWARDED_HOST")),
            list(environ.get("HTTP_X_FORWARDED_PORT")),
        ),
        false => (Vec::new(), Vec::new()),
    };
    let n = addrs.len().max(1);
    // A list as long as the addresses is one value per hop; any other list (a proxy that sets
    // rather than appends) is what the nearest proxy says, for every hop.
    let from_right = |values: &[String], i: usize| -> Option<String> {
        let value = if values.len() == n {
            values.get(i)
        } else {
            values.last()
        };
        value.map(|v| v.to_lowercase())
    };
    (0..n)
        .map(|i| Hop {
            for_: addrs.get(i).cloned(),
            proto: from_right(&protos, i),
            host: from_right(&hosts, i).map(|h| h.to_owned()),
            port: from_right(&ports, i),
        })
        .collect()
}

impl<A: App> App for ProxyHeadersApp<A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let peer = environ.remote_addr().map(str::to_owned);
        if !peer.as_deref().is_some_and(|p| self.config.trusts(p)) {
            return self.inner.call(environ, start);
        }
        let hops = match self.config.forwarded {
            true => environ
                .get("HTTP_FORWARDED")
                .map(forwarded)
                .unwrap_or_default(),
            false => x_forwarded(&environ, self.config.host),
        };
        // From the nearest hop outwards: past trusted proxies, to the client.
        let mut chosen: Option<&Hop> = None;
        for hop in hops.iter().rev() {
            chosen = Some(hop);
            match &hop.for_ {
                Some(addr) if self.config.trusts(addr) => continue,
                _ => break,
            }
        }
        let Some(hop) = chosen else {
            return self.inner.call(environ, start);
        };
        let original = OriginalPeer {
            remote_addr: environ.get_bytes("REMOTE_ADDR"),
            url_scheme: environ.url_scheme(),
            host: environ.get_bytes("HTTP_HOST"),
            server_port: environ.get_bytes("SERVER_PORT"),
        };
        if let Some(ip) = hop.for_.as_deref().and_then(parse_node) {
            environ.set("REMOTE_ADDR", Bytes::from(ip.to_string()));
            environ.remove("REMOTE_PORT");
        }
        match hop.proto.as_deref() {
            Some("https") => {
                environ.set_url_scheme(UrlScheme::Https);
                environ.set("HTTPS", "on");
            }
            Some("http") => {
                environ.set_url_scheme(UrlScheme::Http);
                environ.remove("HTTPS");
            }
            _ => {}
        }
        let host = hop.host.as_deref().filter(|_| self.config.host);
        if let Some(host) = host.filter(|host| valid_host(host)) {
            let (name, port) = split_host(host);
            let port = port.map_or_else(
                || environ.url_scheme().default_port().to_string(),
                str::to_owned,
            );
            environ.set("SERVER_NAME", Bytes::from(name.to_owned()));
            environ.set("SERVER_PORT", Bytes::from(port));
            environ.set("HTTP_HOST", Bytes::from(host.to_owned()));
        }
        let port = hop.port.as_deref().filter(|_| self.config.host);
        if let Some(port) = port.filter(|p| p.parse::<u16>().is_ok()) {
            environ.set("SERVER_PORT", Bytes::from(port.to_owned()));
        }
        environ.extensions_mut().insert(original);
        self.inner.call(environ, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{Builder, driver};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Option<(String, UrlScheme, String, String, String)>>>;

    fn run(
        config: ProxyHeaders,
        vars: &[(&'static str, &'static str)],
    ) -> (String, UrlScheme, String, String, String) {
        let seen: Seen = Arc::new(Mutex::new(None));
        let record = seen.clone();
        let app = Builder::new()
            .with(config)
            .app(move |e: Environ, s: StartResponse| {
                let text = |n: &str| e.get_str(n).unwrap_or("").to_owned();
                *record.lock().unwrap() = Some((
                    text("REMOTE_ADDR"),
                    e.url_scheme(),
                    text("HTTP_HOST"),
                    text("SERVER_NAME"),
                    text("SERVER_PORT"),
                ));
                let _ = s.start(http::StatusCode::OK, http::HeaderMap::new());
                Body::empty()
            });
        let mut environ = Environ::new();
        environ.set("SERVER_NAME", "backend");
        environ.set("SERVER_PORT", "8000");
        environ.set("HTTP_HOST", "backend:8000");
        for (n, v) in vars {
            environ.set(*n, *v);
        }
        gateway_core::block_on(driver::call(&app, environ));
        seen.lock().unwrap().take().unwrap()
    }

    fn proxy() -> ProxyHeaders {
        ProxyHeaders::new()
            .trust("127.0.0.1".parse::<TrustedNet>().unwrap())
            .trust("10.0.0.0/8".parse::<TrustedNet>().unwrap())
    }

    #[test]
    fn untrusted_peers_are_not_believed() {
        let seen = run(
            proxy(),
            &[
                ("REMOTE_ADDR", "192.0.2.1"),
                ("HTTP_X_FORWARDED_FOR", "1.1.1.1"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
            ],
        );
        assert_eq!(seen.0, "192.0.2.1");
        assert_eq!(seen.1, UrlScheme::Http);
    }

    #[test]
    fn trusted_hops_are_walked_to_the_client() {
        let seen = run(
            proxy().host(),
            &[
                ("REMOTE_ADDR", "127.0.0.1"),
                ("HTTP_X_FORWARDED_FOR", "6.6.6.6, 203.0.113.9, 10.1.1.1"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
                ("HTTP_X_FORWARDED_HOST", "example.com"),
            ],
        );
        // 6.6.6.6 is what the client claimed; 203.0.113.9 is the first untrusted hop.
        assert_eq!(seen.0, "203.0.113.9");
        assert_eq!(seen.1, UrlScheme::Https);
        assert_eq!(
            (seen.2.as_str(), seen.3.as_str(), seen.4.as_str()),
            ("example.com", "example.com", "443")
        );
    }

    #[test]
    fn a_client_cannot_choose_what_the_proxy_does_not_write() {
        // nginx's usual lines set X-Forwarded-For and -Proto, and pass the rest as sent.
        let sent = [
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "203.0.113.9"),
            ("HTTP_X_FORWARDED_PROTO", "http"),
            (
                "HTTP_FORWARDED",
                "for=127.0.0.1;proto=https;host=admin.internal",
            ),
            ("HTTP_X_FORWARDED_HOST", "evil.example"),
            ("HTTP_X_FORWARDED_PORT", "1"),
        ];
        let seen = run(proxy(), &sent);
        assert_eq!(seen.0, "203.0.113.9");
        assert_eq!(seen.1, UrlScheme::Http);
        assert_eq!(
            (seen.2.as_str(), seen.3.as_str(), seen.4.as_str()),
            ("backend:8000", "backend", "8000")
        );
        // With `forwarded`, the X-Forwarded-* family is the one ignored.
        let seen = run(proxy().forwarded(), &sent);
        assert_eq!(seen.0, "127.0.0.1", "the only hop named is trusted");
        assert_eq!(
            seen.2, "backend:8000",
            "its host is not believed without `host`"
        );
    }

    #[test]
    fn a_host_that_is_not_a_host_is_ignored() {
        for host in [":8080", "a b/c", "evil.example:99999", "x:y", ""] {
            let seen = run(
                proxy().host(),
                &[
                    ("REMOTE_ADDR", "127.0.0.1"),
                    ("HTTP_X_FORWARDED_FOR", "203.0.113.9"),
                    ("HTTP_X_FORWARDED_HOST", host),
                ],
            );
            assert_eq!(
                (seen.2.as_str(), seen.3.as_str()),
                ("backend:8000", "backend"),
                "{host:?}"
            );
        }
        assert!(valid_host("[2001:db8::1]:8443") && valid_host("shop.example"));
    }

    #[test]
    fn forwarded_header() {
        let seen = run(
            proxy().forwarded().host(),
            &[
                ("REMOTE_ADDR", "10.0.0.5"),
                (
                    "HTTP_FORWARDED",
                    "for=198.51.100.17;proto=https;host=shop.example:8443, for=\"[2001:db8::1]:4711\"",
                ),
            ],
        );
        assert_eq!(seen.0, "2001:db8::1");
        let seen = run(
            proxy().forwarded().host(),
            &[
                ("REMOTE_ADDR", "10.0.0.5"),
                (
                    "HTTP_FORWARDED",
                    "for=198.51.100.17;proto=https;host=shop.example:8443",
                ),
            ],
        );
        assert_eq!(seen.0, "198.51.100.17");
        assert_eq!(seen.1, UrlScheme::Https);
        assert_eq!((seen.3.as_str(), seen.4.as_str()), ("shop.example", "8443"));
    }

    #[test]
    fn originals_are_kept() {
        let original = Arc::new(Mutex::new(None));
        let record = original.clone();
        let app = Builder::new()
            .with(proxy())
            .app(move |e: Environ, s: StartResponse| {
                *record.lock().unwrap() = e.extensions().get::<OriginalPeer>().cloned();
                let _ = s.start(http::StatusCode::OK, http::HeaderMap::new());
                Body::empty()
            });
        let mut environ = Environ::new();
        environ.set("REMOTE_ADDR", "127.0.0.1");
        environ.set("HTTP_X_FORWARDED_FOR", "203.0.113.1");
        gateway_core::block_on(driver::call(&app, environ));
        let original = original.lock().unwrap().clone().unwrap();
        assert_eq!(original.remote_addr.as_deref(), Some(&b"127.0.0.1"[..]));
    }

    #[test]
    fn networks() {
        let net: TrustedNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let v6: TrustedNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: TrustedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/x".parse::<TrustedNet>().is_err());
        assert_eq!(parse_node("\"[::1]:80\""), Some("::1".parse().unwrap()));
        assert_eq!(parse_node("1.2.3.4:80"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(split_host("a.example:81"), ("a.example", Some("81")));
        assert_eq!(split_host("[::1]:81"), ("[::1]", Some("81")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("a.example"), ("a.example", None));
    }
}
