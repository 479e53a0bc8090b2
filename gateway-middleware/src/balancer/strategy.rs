//! How the balancer picks a backend: the strategies, and the consistent-hash ring.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use gateway_core::Environ;
use http::HeaderName;

/// How a [`Balancer`](super::Balancer) picks the backend of a request. Every strategy skips
/// backends that are ejected, unhealthy or at their bound of outstanding requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Each backend in turn.
    RoundRobin,
    /// In turn, in proportion to the weights, spread evenly (nginx's smooth weighted round
    /// robin: weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`).
    Weighted,
    /// The backend with the fewest outstanding requests for its weight.
    LeastOutstanding,
    /// Consistent hashing on a key taken from the request: the same key goes to the same
    /// backend while it is available, and adding or removing one of n backends moves about 1/n
    /// of the keys. A request without the key goes round robin.
    Hash(HashKey),
}

/// Where [`Strategy::Hash`] takes its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashKey {
    /// A request header (every value, in order).
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's address (`REMOTE_ADDR`).
    ClientAddr,
}

impl HashKey {
    /// The key of a request, if it has one.
    pub fn of<'a>(&self, environ: &'a Environ) -> Option<Cow<'a, [u8]>> {
        match self {
            HashKey::Header(name) => environ.header(name.as_str()).map(Cow::Borrowed),
            HashKey::ClientAddr => environ.get("REMOTE_ADDR").map(Cow::Borrowed),
            HashKey::Cookie(wanted) => {
                environ
                    .get("HTTP_COOKIE")?
                    .split(|&b| b == b';')
                    .find_map(|pair| {
                        let pair = pair.trim_ascii();
                        let eq = pair.iter().position(|&b| b == b'=')?;
                        (pair[..eq].trim_ascii() == wanted.as_bytes())
                            .then(|| Cow::Borrowed(pair[eq + 1..].trim_ascii()))
                    })
            }
        }
    }
}

/// Parses what the `balancer` example's `--strategy` takes: `round-robin`, `weighted`,
/// `least`, `hash:HEADER`, `hash:cookie:NAME`, `hash:client`.
///
/// ```
/// use gateway_middleware::balancer::{HashKey, Strategy};
///
/// assert_eq!("least".parse(), Ok(Strategy::LeastOutstanding));
/// assert_eq!(
///     "hash:X-User".parse(),
///     Ok(Strategy::Hash(HashKey::Header(http::HeaderName::from_static("x-user"))))
/// );
/// assert!("fastest".parse::<Strategy>().is_err());
/// ```
impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Strategy, String> {
        Ok(match text {
            "round-robin" | "roundrobin" | "rr" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "least" | "least-outstanding" | "least-conn" => Strategy::LeastOutstanding,
            "hash:client" | "hash:ip" => Strategy::Hash(HashKey::ClientAddr),
            _ => match text.strip_prefix("hash:") {
                Some(rest) => match rest.strip_prefix("cookie:") {
                    Some(cookie) if !cookie.is_empty() => {
                        Strategy::Hash(HashKey::Cookie(cookie.to_owned()))
                    }
                    _ => Strategy::Hash(HashKey::Header(
                        HeaderName::from_bytes(rest.as_bytes())
                            .map_err(|_| format!("{rest:?} is not a header name"))?,
                    )),
                },
                None => {
                    return Err(format!(
                        "unknown strategy {text:?} (round-robin, weighted, least, hash:HEADER, \
                         hash:cookie:NAME, hash:client)"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::RoundRobin => f.write_str("round-robin"),
            Strategy::Weighted => f.write_str("weighted"),
            Strategy::LeastOutstanding => f.write_str("least"),
            Strategy::Hash(HashKey::Header(name)) => write!(f, "hash:{name}"),
            Strategy::Hash(HashKey::Cookie(name)) => write!(f, "hash:cookie:{name}"),
            Strategy::Hash(HashKey::ClientAddr) => f.write_str("hash:client"),
        }
    }
}

/// Points each node gets on the ring per unit of weight: enough for an even spread (the share
/// of each of 10 nodes stays within a few percent of a tenth).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// A consistent-hash ring: nodes, named and weighted, placed on a circle of 64-bit hashes at
/// [`POINTS_PER_WEIGHT`] points per unit of weight; a key belongs to the first node clockwise
/// from its hash. A node's points depend on its name only, so adding or removing a node moves
/// just the keys that belong to it, about 1/n of them.
///
/// ```
/// use gateway_middleware::balancer::HashRing;
///
/// let ring = HashRing::new([("a", 1), ("b", 1), ("c", 1)]);
/// let node = ring.node_for(b"user-42").unwrap();
/// assert_eq!(ring.node_for(b"user-42"), Some(node), "the same key, the same node");
/// ```
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    points: Vec<(u64, usize)>,
    nodes: usize,
}

impl HashRing {
    /// A ring of the nodes, given as `(name, weight)`; a node is then known by its index in
    /// that order. Nodes of weight 0 get no point.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, u32)>) -> HashRing {
        let mut points = Vec::new();
        let mut count = 0;
        for (index, (name, weight)) in nodes.into_iter().enumerate() {
            count += 1;
            for point in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                let label = format!("{name}#{point}");
                points.push((hash64(label.as_bytes()), index));
            }
        }
        points.sort_unstable();
        HashRing {
            points,
            nodes: count,
        }
    }

    /// The node a key belongs to (`None` for an empty ring).
    pub fn node_for(&self, key: &[u8]) -> Option<usize> {
        self.walk(key).next()
    }

    /// The nodes in the order a key tries them: its own, then each next one clockwise, each
    /// node once.
    pub fn walk(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let hash = hash64(key);
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let mut seen = vec![false; self.nodes];
        let len = self.points.len();
        (0..len).filter_map(move |step| {
            let (_, node) = self.points[(start + step) % len];
            (!std::mem::replace(&mut seen[node], true)).then_some(node)
        })
    }
}

/// A stable 64-bit hash (FNV-1a, then a `splitmix64` finish to spread the bits): the same on
/// every machine and every build, so that processes sharing a ring agree.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_print_back() {
        for text in [
            "round-robin",
            "weighted",
            "least",
            "hash:x-user",
            "hash:cookie:session",
            "hash:client",
        ] {
            let strategy: Strategy = text.parse().unwrap();
            assert_eq!(strategy.to_string(), text);
        }
        assert!("hash:bad header".parse::<Strategy>().is_err());
    }

    #[test]
    fn keys_come_from_headers_cookies_and_the_client() {
        let mut environ = Environ::new();
        environ.set("HTTP_X_USER", "u1");
        environ.set("HTTP_COOKIE", "a=1; session = s-9 ;b=2");
        environ.set("REMOTE_ADDR", "10.0.0.1");
        let key = |k: HashKey| k.of(&environ).map(|v| v.into_owned());
        assert_eq!(
            key(HashKey::Header(HeaderName::from_static("x-user"))),
            Some(b"u1".to_vec())
        );
        assert_eq!(
            key(HashKey::Cookie("session".into())),
            Some(b"s-9".to_vec())
        );
        assert_eq!(key(HashKey::Cookie("none".into())), None);
        assert_eq!(key(HashKey::ClientAddr), Some(b"10.0.0.1".to_vec()));
    }

    #[test]
    fn a_walk_visits_every_node_once_starting_with_the_owner() {
        let ring = HashRing::new([("a", 1), ("b", 2), ("c", 1), ("z", 0)]);
        for key in [&b"k1"[..], b"k2", b"another"] {
            let walk: Vec<usize> = ring.walk(key).collect();
            assert_eq!(walk.len(), 3, "the weightless node is never chosen");
            assert_eq!(Some(walk[0]), ring.node_for(key));
            let mut sorted = walk.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2]);
        }
        assert_eq!(HashRing::new([]).node_for(b"k"), None);
    }

    #[test]
    fn the_hash_is_stable() {
        // Values computed apart from this code (FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c before
        // the finish): a change here would move every key of every deployed ring.
        assert_eq!(hash64(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash64(b"a"), 0x02c0_bdbf_4814_20f8);
        assert_eq!(hash64(b"user-42"), 0x7a15_96f0_e94b_5793);
    }
}
