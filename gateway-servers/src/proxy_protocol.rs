//! The PROXY protocol (versions 1 and 2, as HAProxy defines them): a load balancer that relays
//! TCP connections (HAProxy's `send-proxy` and `send-proxy-v2`, nginx's `proxy_protocol on` in
//! its `stream` module, cloud load balancers) begins each connection with a header that gives
//! the client's address and the address the client reached. With
//! [`Config::proxy_protocol`](crate::runtime::Config::proxy_protocol) the HTTP server reads it
//! before the first request, and the environ's `REMOTE_ADDR` and `REMOTE_PORT` are the
//! client's, not the load balancer's.
//!
//! Sans-I/O: [`parse`] looks at the bytes a connection sent so far and says whether they hold
//! a whole header, need more, or are not a header. The header formats are parsed by the `ppp`
//! crate; this module decides what a server does with each.
//!
//! ```
//! use gateway_servers::proxy_protocol::{parse, Parsed};
//!
//! let sent = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 80\r\nGET / HTTP/1.1\r\n";
//! let Parsed::Header { addresses: Some((client, reached)), len } = parse(sent) else {
//!     panic!("a whole header");
//! };
//! assert_eq!(client, "192.0.2.7:40001".parse().unwrap());
//! assert_eq!(reached, "198.51.100.1:80".parse().unwrap());
//! assert!(sent[len..].starts_with(b"GET "));
//! assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Incomplete);
//! assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
//! ```

use std::net::SocketAddr;

use ppp::{PartialResult, v1, v2};

/// The longest header: version 2's 16 bytes and a payload of at most 65,535 (version 1 is at
/// most 107 bytes).
pub const MAX_HEADER_LEN: usize = 16 + 65_535;

/// The client's address and the address it reached, as a header gives them.
pub type Addresses = (SocketAddr, SocketAddr);

/// What the first bytes of a connection are, for a server that expects a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes (what follows is the connection's own data).
    Header {
        /// The client's address and the address it reached, or `None` when the header says
        /// the connection is the proxy's own (version 2's `LOCAL` command, version 1's
        /// `UNKNOWN`, as for a health check) or gives no IP addresses (a Unix socket, an
        /// unspecified family): the connection's own addresses stand then.
        addresses: Option<Addresses>,
        /// The header's length in bytes.
        len: usize,
    },
    /// A beginning of a header: more bytes are needed.
    Incomplete,
    /// Not a header, or a malformed one: the connection is refused. The reason, for the log.
    Invalid(String),
}

/// Version 1's prefix: a text line.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Version 1's longest line, its CRLF included.
const V1_MAX_LEN: usize = 107;
/// Version 2's signature: its first 12 bytes.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Whether `bytes` and `prefix` agree as far as both go.
fn agrees(bytes: &[u8], prefix: &[u8]) -> bool {
    let n = bytes.len().min(prefix.len());
    bytes[..n] == prefix[..n]
}

/// Parses the PROXY header at the start of `bytes`, the first bytes a connection sent.
///
/// A version 1 line is parsed once its CRLF is there (a line cut anywhere, even just after a
/// space, waits for the rest), and refused past 107 bytes without one; a version 2 header
/// once its length is there. Bytes that begin neither version are refused at once.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Incomplete;
    }
    if agrees(bytes, V2_SIGNATURE) {
        if bytes.len() < V2_SIGNATURE.len() {
            return Parsed::Incomplete;
        }
        return match v2::Header::try_from(bytes) {
            Ok(header) => Parsed::Header {
                len: header.len(),
                addresses: v2_addresses(&header),
            },
            Err(error) if error.is_incomplete() => Parsed::Incomplete,
            Err(error) => Parsed::Invalid(format!("version 2: {error}")),
        };
    }
    if !agrees(bytes, V1_PREFIX) {
        return Parsed::Invalid("not a PROXY protocol header".to_owned());
    }
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(cr) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Parsed::Invalid(format!("version 1: no CRLF in {V1_MAX_LEN} bytes"))
        } else {
            Parsed::Incomplete
        };
    };
    match v1::Header::try_from(&bytes[..cr + 2]) {
        Ok(header) => Parsed::Header {
            len: cr + 2,
            addresses: match header.addresses {
                v1::Addresses::Tcp4(ip) => Some((
                    (ip.source_address, ip.source_port).into(),
                    (ip.destination_address, ip.destination_port).into(),
                )),
                v1::Addresses::Tcp6(ip) => Some((
                    (ip.source_address, ip.source_port).into(),
                    (ip.destination_address, ip.destination_port).into(),
                )),
                v1::Addresses::Unknown => None,
            },
        },
        Err(error) => Parsed::Invalid(format!("version 1: {error}")),
    }
}

/// The client's address and the one it reached, from a version 2 header that relays a TCP
/// connection over IP.
fn v2_addresses(header: &v2::Header<'_>) -> Option<Addresses> {
    match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(ip)) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
        (v2::Command::Proxy, v2::Addresses::IPv6(ip)) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
        (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.push(0x20 | command);
        header.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(addresses);
        header.extend_from_slice(tlvs);
        header
    }

    fn v2_ipv4(client: [u8; 4], reached: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        let mut addresses = client.to_vec();
        addresses.extend_from_slice(&reached);
        addresses.extend_from_slice(&ports.0.to_be_bytes());
        addresses.extend_from_slice(&ports.1.to_be_bytes());
        v2(0x1, 0x11, &addresses, &[])
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn headers_of_each_kind() {
        let mut v2_ipv6 = [0u8; 36];
        v2_ipv6[15] = 1; // ::1
        v2_ipv6[16] = 0x20;
        v2_ipv6[17] = 0x01;
        v2_ipv6[18] = 0x0d;
        v2_ipv6[19] = 0xb8; // 2001:db8::
        v2_ipv6[32..34].copy_from_slice(&4242u16.to_be_bytes());
        v2_ipv6[34..36].copy_from_slice(&8443u16.to_be_bytes());
        let ipv4 = (addr("192.0.2.7:40001"), addr("198.51.100.1:80"));
        let table: Vec<(Vec<u8>, Option<Addresses>)> = vec![
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 80\r\n".to_vec(),
                Some(ipv4),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n".to_vec(),
                Some((addr("[2001:db8::7]:40001"), addr("[2001:db8::1]:443"))),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n".to_vec(), None),
            (
                v2_ipv4([192, 0, 2, 7], [198, 51, 100, 1], (40001, 80)),
                Some(ipv4),
            ),
            (
                v2(0x1, 0x21, &v2_ipv6, &[]),
                Some((addr("[::1]:4242"), addr("[2001:db8::]:8443"))),
            ),
            // LOCAL: the proxy's own connection (a health check); its addresses are ignored.
            (v2(0x0, 0x11, &[0; 12], &[]), None),
            (v2(0x0, 0x00, &[], &[]), None),
            // A Unix socket's addresses are no IP addresses.
            (v2(0x1, 0x31, &[0; 216], &[]), None),
            // TLVs (here a NOOP of 3 bytes) are part of the header and skipped.
            (
                {
                    let mut addresses = vec![192, 0, 2, 7, 198, 51, 100, 1];
                    addresses.extend_from_slice(&40001u16.to_be_bytes());
                    addresses.extend_from_slice(&80u16.to_be_bytes());
                    v2(0x1, 0x11, &addresses, &[0x04, 0, 3, 1, 2, 3])
                },
                Some(ipv4),
            ),
        ];
        for (header, addresses) in table {
            let mut sent = header.clone();
            sent.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse(&sent),
                Parsed::Header {
                    addresses,
                    len: header.len()
                },
                "{header:?}"
            );
            // Every proper prefix of the header asks for more.
            for end in 1..header.len() {
                assert_eq!(
                    parse(&header[..end]),
                    Parsed::Incomplete,
                    "{:?}",
                    &header[..end]
                );
            }
        }
    }

    #[test]
    fn what_is_no_header_is_invalid_at_once() {
        for sent in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c",
            b"\r\n\r\n\0\r\nQUIT\n\x22\x11\0\x0c",
        ] {
            assert!(
                matches!(parse(sent), Parsed::Invalid(_)),
                "{sent:?}: {:?}",
                parse(sent)
            );
        }
        // A version 1 header has at most 107 bytes: a longer line is refused, not waited on.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking_and_a_header_fits_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Parsed::Header { len, .. } = parse(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn a_version_2_header_gives_back_its_addresses_whatever_follows(
            client in any::<[u8; 4]>(),
            reached in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = v2_ipv4(client, reached, ports);
            let mut sent = header.clone();
            sent.extend_from_slice(&rest);
            prop_assert_eq!(
                parse(&sent),
                Parsed::Header {
                    addresses: Some(((client, ports.0).into(), (reached, ports.1).into())),
                    len: header.len(),
                }
            );
        }
    }
}
