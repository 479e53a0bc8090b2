//! `FCGI_WEB_SERVER_ADDRS` (FastCGI specification, section 3.2): the addresses of the web servers
//! allowed to connect.
//!
//! When the variable is set, [`serve`](super::server::serve) closes a TCP connection from any
//! other peer address as soon as it is accepted, and logs a line. The value is a
//! comma-separated list of IP addresses; this server takes IPv6 addresses too (libfcgi knows
//! only dotted quads), and compares IPv4-mapped IPv6 peers as the IPv4 address they are. An
//! empty value restricts nothing (as in libfcgi), and a value that is not such a list is an
//! error when the server starts (libfcgi would silently refuse every connection). Connections
//! over Unix sockets have no address and are not restricted (as in libfcgi): the socket file's
//! permissions say who may connect (`--socket-mode`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The name of the environment variable.
pub const FCGI_WEB_SERVER_ADDRS: &str = "FCGI_WEB_SERVER_ADDRS";

/// A value of `FCGI_WEB_SERVER_ADDRS` that is not a comma-separated list of IP addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The entry that is not an IP address.
    pub entry: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{FCGI_WEB_SERVER_ADDRS}: `{}` is not an IP address",
            self.entry
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a value of `FCGI_WEB_SERVER_ADDRS`: IP addresses separated by commas, with optional
/// spaces around each. `Ok(None)` for an empty value (no restriction).
///
/// ```
/// use gateway_servers::fastcgi::web_server_addrs::parse;
///
/// let addrs = parse("127.0.0.1, ::1").unwrap().unwrap();
/// assert_eq!(addrs.len(), 2);
/// assert_eq!(parse(" ").unwrap(), None);
/// assert!(parse("127.0.0.1,localhost").is_err());
/// ```
pub fn parse(value: &str) -> Result<Option<Vec<IpAddr>>, ParseError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value
        .split(',')
        .map(str::trim)
        .map(|entry| {
            entry
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| ParseError {
                    entry: entry.to_owned(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The web servers allowed to connect over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebServerAddrs(Arc<[IpAddr]>);

impl WebServerAddrs {
    /// Only these addresses.
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        WebServerAddrs(addrs.into_iter().map(|ip| ip.to_canonical()).collect())
    }

    /// From the process environment: `Ok(None)` when `FCGI_WEB_SERVER_ADDRS` is unset or empty.
    pub fn from_env() -> Result<Option<Self>, ParseError> {
        let Some(value) = std::env::var_os(FCGI_WEB_SERVER_ADDRS) else {
            return Ok(None);
        };
        let value = value.to_string_lossy();
        Ok(parse(&value)?.map(WebServerAddrs::new))
    }

    /// The addresses.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    /// Whether a connection from `peer` may stay: a listed TCP peer, or a peer with no
    /// address (a Unix socket).
    pub fn allows(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_none_or(|peer| self.0.contains(&peer.ip().to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_into_addresses() {
        let v4 = |a, b, c, d| IpAddr::from([a, b, c, d]);
        let v6: fn(&str) -> IpAddr = |s| s.parse().unwrap();
        for (value, want) in [
            ("", Ok(None)),
            ("  ", Ok(None)),
            ("127.0.0.1", Ok(Some(vec![v4(127, 0, 0, 1)]))),
            (
                "127.0.0.1,10.0.0.2",
                Ok(Some(vec![v4(127, 0, 0, 1), v4(10, 0, 0, 2)])),
            ),
            (
                " 192.0.2.1 , ::1 ",
                Ok(Some(vec![v4(192, 0, 2, 1), v6("::1")])),
            ),
            ("2001:db8::7", Ok(Some(vec![v6("2001:db8::7")]))),
            // An IPv4-mapped IPv6 address is the IPv4 address.
            ("::ffff:127.0.0.1", Ok(Some(vec![v4(127, 0, 0, 1)]))),
            ("localhost", Err("localhost")),
            ("127.0.0.1,", Err("")),
            ("127.0.0.1;10.0.0.2", Err("127.0.0.1;10.0.0.2")),
            ("127.0.0.1:9000", Err("127.0.0.1:9000")),
            ("10.0.0.0/8", Err("10.0.0.0/8")),
            ("[::1]", Err("[::1]")),
        ] {
            let want = want.map_err(|entry: &str| ParseError {
                entry: entry.to_owned(),
            });
            assert_eq!(parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn only_listed_tcp_peers_are_allowed() {
        let allowed = WebServerAddrs::new(parse("127.0.0.1, ::1").unwrap().unwrap());
        let peer = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert!(allowed.allows(peer("127.0.0.1:4000")));
        assert!(allowed.allows(peer("[::1]:4000")));
        assert!(allowed.allows(peer("[::ffff:127.0.0.1]:4000")));
        assert!(!allowed.allows(peer("127.0.0.2:4000")));
        assert!(!allowed.allows(peer("[2001:db8::1]:4000")));
        assert!(allowed.allows(None), "Unix sockets have no address");
    }
}
