//! The application side of a FastCGI connection, sans-I/O: records in, [`Event`]s for the
//! requests and answering records out.
//!
//! [`Connection`] keeps the state of the requests of one connection (their params, whether
//! their input ended) and answers what the protocol answers by itself: `FCGI_GET_VALUES` with
//! exactly the names asked, `FCGI_UNKNOWN_TYPE` for unknown management records,
//! `FCGI_UNKNOWN_ROLE` for roles the app does not play, `FCGI_CANT_MPX_CONN` when multiplexing
//! is off, `FCGI_OVERLOADED` when the server is at its request limit. What is left for the
//! connection loop is to run the app when a request is complete ([`Event::Request`]), feed it
//! its input, and send its output with [`Connection::stdout`], [`Connection::stderr`] and
//! [`Connection::end_request`].
//!
//! ```
//! use bytes::BytesMut;
//! use gateway_servers::fastcgi::codec::{self, Role, StreamKind};
//! use gateway_servers::fastcgi::protocol::{Connection, Event, Settings};
//!
//! let mut wire = BytesMut::new();
//! codec::encode_begin_request(&mut wire, 1, Role::Responder, false);
//! let mut params = BytesMut::new();
//! codec::encode_pair(&mut params, b"REQUEST_METHOD", b"GET");
//! codec::encode_stream(&mut wire, StreamKind::Params, 1, &params);
//! codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
//!
//! let mut connection = Connection::new(Settings::default());
//! let mut out = BytesMut::new();
//! let mut events = Vec::new();
//! while let Some(record) = codec::decode_record(&mut wire).unwrap() {
//!     events.extend(connection.receive(record, true, &mut out).unwrap());
//! }
//! assert!(matches!(events[..], [Event::Request { request_id: 1, role: Role::Responder, .. }]));
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::codec::{
    self, DecodeError, MAX_CONNS, MAX_REQS, MPXS_CONNS, Pairs, ParamsBuffer, ProtocolStatus,
    Record, Role, StreamKind,
};

/// The largest params stream a request may send by default: 1 MiB. nginx sends at most 64 KiB
/// (one record); anything larger is a misbehaving peer.
pub const DEFAULT_MAX_PARAMS_SIZE: usize = 1 << 20;

/// What a connection answers and allows. The numbers are the ones `FCGI_GET_VALUES` reports,
/// so they must be the server's real limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// `FCGI_MAX_CONNS`: how many connections the server accepts at once.
    pub max_conns: usize,
    /// `FCGI_MAX_REQS`: how many requests the server serves at once.
    pub max_reqs: usize,
    /// `FCGI_MPXS_CONNS`: whether several requests may share a connection.
    pub multiplex: bool,
    /// The largest params stream of one request, in bytes, and the most params bytes one
    /// connection holds at once for the requests still receiving theirs (a peer that begins
    /// many requests and never ends their params is refused past it).
    pub max_params_size: usize,
    /// The most requests one connection may have open at once (when multiplexing).
    pub max_requests_per_connection: usize,
    /// Which roles the app plays; others are answered with `FCGI_UNKNOWN_ROLE`.
    pub roles: Roles,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_conns: 1024,
            max_reqs: 1024,
            multiplex: true,
            max_params_size: DEFAULT_MAX_PARAMS_SIZE,
            max_requests_per_connection: 128,
            roles: Roles::RESPONDER,
        }
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// The Responder role only.
    pub const RESPONDER: Roles = Roles(1);
    /// The Authorizer role only.
    pub const AUTHORIZER: Roles = Roles(2);
    /// The Filter role only.
    pub const FILTER: Roles = Roles(4);
    /// All three roles.
    pub const ALL: Roles = Roles(7);

    /// Both sets.
    #[must_use]
    pub const fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    /// Whether `role` is in the set.
    pub const fn contains(self, role: Role) -> bool {
        let bit = match role {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 4,
            _ => 0,
        };
        self.0 & bit != 0
    }
}

/// What a connection's requests need from the connection loop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A request's params are complete: build its environ from `params` and run the app.
    Request {
        /// The request.
        request_id: u16,
        /// Its role.
        role: Role,
        /// Whether the web server keeps the connection after it (`FCGI_KEEP_CONN`).
        keep_conn: bool,
        /// Its params.
        params: Pairs,
    },
    /// Request body bytes (`FCGI_STDIN`); empty when the body ended.
    Stdin {
        /// The request.
        request_id: u16,
        /// The bytes.
        data: Bytes,
    },
    /// Filter file bytes (`FCGI_DATA`); empty when the data ended.
    Data {
        /// The request.
        request_id: u16,
        /// The bytes.
        data: Bytes,
    },
    /// The web server gave up on a running request: drop its response, then call
    /// [`Connection::end_request`].
    Abort {
        /// The request.
        request_id: u16,
    },
}

/// A violation of the protocol by the peer: the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A record could not be decoded.
    Decode(DecodeError),
    /// A record only an application sends (STDOUT, STDERR, END_REQUEST, ...) came from the web
    /// server.
    UnexpectedRecord(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Decode(error) => error.fmt(f),
            ProtocolError::UnexpectedRecord(name) => {
                write!(
                    f,
                    "the web server sent {name}, which only applications send"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<DecodeError> for ProtocolError {
    fn from(error: DecodeError) -> Self {
        ProtocolError::Decode(error)
    }
}

#[derive(Debug)]
enum State {
    /// Collecting params.
    Params {
        role: Role,
        keep_conn: bool,
        params: ParamsBuffer,
    },
    /// The app runs.
    Running,
}

/// A map keyed by request id. The default hasher (SipHash, built for keys chosen to collide)
/// cost more than the rest of a map's work per request here; a connection holds a bounded
/// number of ids (`max_requests_per_connection`), and one multiplication, which maps distinct
/// ids to distinct hashes, spreads them well enough.
pub(crate) type IdMap<V> =
    std::collections::HashMap<u16, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: a request id times an odd constant.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(ID_HASH_FACTOR);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(ID_HASH_FACTOR);
    }
}

/// 2^64 divided by the golden ratio, odd.
const ID_HASH_FACTOR: u64 = 0x9e37_79b9_7f4a_7c15;

/// The FastCGI state of one connection (see the [module documentation](self)).
#[derive(Debug)]
pub struct Connection {
    settings: Settings,
    requests: IdMap<State>,
    /// Whether the connection is to be closed once its requests end (a request without
    /// `FCGI_KEEP_CONN`).
    close_after: bool,
    /// Params bytes held for the requests still receiving theirs.
    collecting: usize,
}

impl Connection {
    /// A connection with no requests.
    pub fn new(settings: Settings) -> Self {
        Connection {
            settings,
            requests: IdMap::default(),
            close_after: false,
            collecting: 0,
        }
    }

    /// How many requests are open.
    pub fn open_requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether the connection should be closed now: a request asked for it (no
    /// `FCGI_KEEP_CONN`) and no request is open any more.
    pub fn should_close(&self) -> bool {
        self.close_after && self.requests.is_empty()
    }

    /// Handles one record from the web server. Answers the protocol gives by itself are
    /// appended to `out`; what the connection loop must act on is returned. `can_accept` says
    /// whether the server has room for one more request (else a new request is answered
    /// `FCGI_OVERLOADED`).
    pub fn receive(
        &mut self,
        record: Record,
        can_accept: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        match record {
            Record::BeginRequest {
                request_id,
                role,
                keep_conn,
            } => {
                if self.requests.contains_key(&request_id) {
                    // The id is active: the specification says to ignore the record.
                    return Ok(None);
                }
                if !keep_conn {
                    self.close_after = true;
                }
                let refusal = if !self.settings.roles.contains(role) {
                    Some(ProtocolStatus::UnknownRole)
                } else if !self.requests.is_empty() && !self.settings.multiplex {
                    Some(ProtocolStatus::CantMpxConn)
                } else if !can_accept
                    || self.requests.len() >= self.settings.max_requests_per_connection
                {
                    Some(ProtocolStatus::Overloaded)
                } else {
                    None
                };
                match refusal {
                    Some(status) => codec::encode_end_request(out, request_id, 0, status),
                    None => {
                        self.requests.insert(
                            request_id,
                            State::Params {
                                role,
                                keep_conn,
                                params: ParamsBuffer::new(self.settings.max_params_size),
                            },
                        );
                    }
                }
                Ok(None)
            }
            Record::Stream {
                request_id,
                kind,
                data,
            } => match kind {
                StreamKind::Params => self.params(request_id, data),
                StreamKind::Stdin | StreamKind::Data => {
                    if !matches!(self.requests.get(&request_id), Some(State::Running)) {
                        // Input for a request that is not running (refused, or ended): ignored.
                        return Ok(None);
                    }
                    Ok(Some(match kind {
                        StreamKind::Stdin => Event::Stdin { request_id, data },
                        _ => Event::Data { request_id, data },
                    }))
                }
                StreamKind::Stdout => Err(ProtocolError::UnexpectedRecord("FCGI_STDOUT")),
                StreamKind::Stderr => Err(ProtocolError::UnexpectedRecord("FCGI_STDERR")),
            },
            Record::AbortRequest { request_id } => match self.requests.get(&request_id) {
                None => Ok(None),
                Some(State::Params { .. }) => {
                    // The app never started: the request ends here.
                    self.end_request(request_id, 0, out);
                    Ok(None)
                }
                Some(State::Running) => Ok(Some(Event::Abort { request_id })),
            },
            Record::GetValues { pairs } => {
                let mut answers: Vec<(Bytes, Bytes)> = Vec::new();
                for pair in Pairs::new(pairs) {
                    let (name, _) = pair?;
                    let value = match &name[..] {
                        n if n == MAX_CONNS => self.settings.max_conns.to_string(),
                        n if n == MAX_REQS => self.settings.max_reqs.to_string(),
                        n if n == MPXS_CONNS => u8::from(self.settings.multiplex).to_string(),
                        _ => continue,
                    };
                    answers.push((name, Bytes::from(value)));
                }
                codec::encode_get_values_result(out, answers.iter().map(|(n, v)| (&n[..], &v[..])));
                Ok(None)
            }
            Record::Unknown {
                request_id,
                record_type,
                ..
            } => {
                if request_id == codec::NULL_REQUEST_ID {
                    codec::encode_unknown_type(out, record_type);
                }
                // An unknown application record is ignored, as Apache and lighttpd do.
                Ok(None)
            }
            Record::EndRequest { .. } => Err(ProtocolError::UnexpectedRecord("FCGI_END_REQUEST")),
            Record::GetValuesResult { .. } => {
                Err(ProtocolError::UnexpectedRecord("FCGI_GET_VALUES_RESULT"))
            }
            Record::UnknownType { .. } => Err(ProtocolError::UnexpectedRecord("FCGI_UNKNOWN_TYPE")),
        }
    }

    fn params(&mut self, request_id: u16, data: Bytes) -> Result<Option<Event>, ProtocolError> {
        let Some(State::Params { params, .. }) = self.requests.get_mut(&request_id) else {
            return Ok(None);
        };
        if !data.is_empty() {
            let limit = self.settings.max_params_size;
            if self.collecting + data.len() > limit {
                return Err(DecodeError::ParamsTooLarge { limit }.into());
            }
            self.collecting += data.len();
            params.push(data)?;
            return Ok(None);
        }
        let Some(State::Params {
            role,
            keep_conn,
            params,
        }) = self.requests.insert(request_id, State::Running)
        else {
            unreachable!("matched Params above")
        };
        self.collecting -= params.len();
        Ok(Some(Event::Request {
            request_id,
            role,
            keep_conn,
            params: params.finish(),
        }))
    }

    /// Appends response bytes of a request as `FCGI_STDOUT` records. Empty data appends
    /// nothing (an empty record would end the stream).
    pub fn stdout(&self, request_id: u16, data: &[u8], out: &mut BytesMut) {
        codec::encode_stream(out, StreamKind::Stdout, request_id, data);
    }

    /// Appends error output of a request as `FCGI_STDERR` records.
    pub fn stderr(&self, request_id: u16, data: &[u8], out: &mut BytesMut) {
        codec::encode_stream(out, StreamKind::Stderr, request_id, data);
    }

    /// Ends a request: the end of its STDOUT stream, then `FCGI_END_REQUEST` with
    /// `app_status` and `FCGI_REQUEST_COMPLETE`. The request id is free again.
    pub fn end_request(&mut self, request_id: u16, app_status: u32, out: &mut BytesMut) {
        if let Some(state) = self.requests.remove(&request_id) {
            if let State::Params { params, .. } = state {
                self.collecting -= params.len();
            }
            codec::encode_end_of_stream(out, StreamKind::Stdout, request_id);
            codec::encode_end_request(out, request_id, app_status, ProtocolStatus::RequestComplete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Peer {
        connection: Connection,
        out: BytesMut,
    }

    impl Peer {
        fn new(settings: Settings) -> Self {
            Peer {
                connection: Connection::new(settings),
                out: BytesMut::new(),
            }
        }

        /// Feeds encoded records; returns the events.
        fn feed(
            &mut self,
            wire: &mut BytesMut,
            can_accept: bool,
        ) -> Result<Vec<Event>, ProtocolError> {
            let mut events = Vec::new();
            while let Some(record) = codec::decode_record(wire)? {
                events.extend(self.connection.receive(record, can_accept, &mut self.out)?);
            }
            Ok(events)
        }

        fn answers(&mut self) -> Vec<Record> {
            let mut records = Vec::new();
            while let Some(record) = codec::decode_record(&mut self.out).unwrap() {
                records.push(record);
            }
            records
        }
    }

    fn begin(wire: &mut BytesMut, id: u16, role: Role, keep_conn: bool, params: &[(&str, &str)]) {
        codec::encode_begin_request(wire, id, role, keep_conn);
        let mut block = BytesMut::new();
        for (n, v) in params {
            codec::encode_pair(&mut block, n.as_bytes(), v.as_bytes());
        }
        codec::encode_stream(wire, StreamKind::Params, id, &block);
        codec::encode_end_of_stream(wire, StreamKind::Params, id);
    }

    fn end(id: u16, status: ProtocolStatus) -> Record {
        Record::EndRequest {
            request_id: id,
            app_status: 0,
            protocol_status: status,
        }
    }

    #[test]
    fn a_request_with_params_split_across_records_and_stdin() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
        let mut block = BytesMut::new();
        codec::encode_pair(&mut block, b"SCRIPT_NAME", b"/app");
        codec::encode_stream(&mut wire, StreamKind::Params, 1, &block[..5]);
        codec::encode_stream(&mut wire, StreamKind::Params, 1, &block[5..]);
        codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
        codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"body");
        codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
        let events = peer.feed(&mut wire, true).unwrap();
        let [
            Event::Request {
                request_id: 1,
                keep_conn: true,
                params,
                ..
            },
            Event::Stdin { data: a, .. },
            Event::Stdin { data: b, .. },
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        let pairs: Vec<_> = params.clone().collect::<Result<_, _>>().unwrap();
        assert_eq!(pairs, [(Bytes::from("SCRIPT_NAME"), Bytes::from("/app"))]);
        assert_eq!((a.as_ref(), b.as_ref()), (&b"body"[..], &b""[..]));
        assert!(peer.answers().is_empty());
        assert!(!peer.connection.should_close());

        peer.connection
            .stdout(1, b"Status: 200 OK\r\n\r\n", &mut peer.out);
        peer.connection.end_request(1, 0, &mut peer.out);
        let answers = peer.answers();
        assert_eq!(answers.len(), 3, "stdout, end of stdout, end request");
        assert_eq!(answers[2], end(1, ProtocolStatus::RequestComplete));
        assert_eq!(peer.connection.open_requests(), 0);
    }

    #[test]
    fn multiplexed_requests_interleave() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
        codec::encode_begin_request(&mut wire, 2, Role::Responder, true);
        codec::encode_end_of_stream(&mut wire, StreamKind::Params, 2);
        codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
        codec::encode_stream(&mut wire, StreamKind::Stdin, 2, b"two");
        codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"one");
        let events = peer.feed(&mut wire, true).unwrap();
        let order: Vec<(u16, &str)> = events
            .iter()
            .map(|e| match e {
                Event::Request { request_id, .. } => (*request_id, "request"),
                Event::Stdin { request_id, .. } => (*request_id, "stdin"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [(2, "request"), (1, "request"), (2, "stdin"), (1, "stdin")]
        );
    }

    #[test]
    fn refusals_unknown_role_cant_mpx_overloaded() {
        let mut peer = Peer::new(Settings {
            multiplex: false,
            ..Settings::default()
        });
        let mut wire = BytesMut::new();
        begin(&mut wire, 1, Role::Authorizer, true, &[]);
        begin(&mut wire, 2, Role::Responder, true, &[]);
        begin(&mut wire, 3, Role::Responder, true, &[]);
        let events = peer.feed(&mut wire, true).unwrap();
        assert_eq!(events.len(), 1, "only request 2 runs: {events:?}");
        assert_eq!(
            peer.answers(),
            [
                end(1, ProtocolStatus::UnknownRole),
                end(3, ProtocolStatus::CantMpxConn)
            ]
        );

        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        begin(&mut wire, 1, Role::Responder, true, &[]);
        assert!(peer.feed(&mut wire, false).unwrap().is_empty());
        assert_eq!(peer.answers(), [end(1, ProtocolStatus::Overloaded)]);
    }

    #[test]
    fn every_role_when_declared() {
        let mut peer = Peer::new(Settings {
            roles: Roles::ALL,
            ..Settings::default()
        });
        let mut wire = BytesMut::new();
        begin(&mut wire, 1, Role::Authorizer, true, &[]);
        begin(&mut wire, 2, Role::Filter, true, &[]);
        codec::encode_stream(&mut wire, StreamKind::Data, 2, b"file");
        let events = peer.feed(&mut wire, true).unwrap();
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[2], Event::Data { request_id: 2, data } if data == "file"));
        assert!(Roles::RESPONDER.union(Roles::FILTER).contains(Role::Filter));
        assert!(!Roles::RESPONDER.contains(Role::Other(9)));
    }

    #[test]
    fn get_values_answers_exactly_the_names_asked() {
        let mut peer = Peer::new(Settings {
            max_conns: 7,
            max_reqs: 9,
            multiplex: false,
            ..Settings::default()
        });
        let mut wire = BytesMut::new();
        codec::encode_get_values(&mut wire, [MPXS_CONNS, &b"FCGI_OTHER"[..], MAX_REQS]);
        assert!(peer.feed(&mut wire, true).unwrap().is_empty());
        let answers = peer.answers();
        let [Record::GetValuesResult { pairs }] = &answers[..] else {
            panic!("{answers:?}")
        };
        let pairs: Vec<_> = Pairs::new(pairs.clone()).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            pairs,
            [
                (Bytes::from_static(MPXS_CONNS), Bytes::from("0")),
                (Bytes::from_static(MAX_REQS), Bytes::from("9")),
            ]
        );
    }

    #[test]
    fn unknown_management_records_get_unknown_type_and_application_ones_are_ignored() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        Record::Unknown {
            request_id: 0,
            record_type: 77,
            content: Bytes::new(),
        }
        .encode(&mut wire);
        Record::Unknown {
            request_id: 1,
            record_type: 78,
            content: Bytes::new(),
        }
        .encode(&mut wire);
        assert!(peer.feed(&mut wire, true).unwrap().is_empty());
        assert_eq!(peer.answers(), [Record::UnknownType { record_type: 77 }]);
    }

    #[test]
    fn abort_before_and_after_the_app_started() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
        codec::encode_abort_request(&mut wire, 1);
        assert!(peer.feed(&mut wire, true).unwrap().is_empty());
        assert_eq!(
            peer.answers().last(),
            Some(&end(1, ProtocolStatus::RequestComplete))
        );

        begin(&mut wire, 2, Role::Responder, true, &[]);
        codec::encode_abort_request(&mut wire, 2);
        let events = peer.feed(&mut wire, true).unwrap();
        assert_eq!(events.last(), Some(&Event::Abort { request_id: 2 }));
        peer.connection.end_request(2, 1, &mut peer.out);
        assert_eq!(peer.connection.open_requests(), 0);
    }

    #[test]
    fn keep_conn_decides_when_to_close() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        begin(&mut wire, 1, Role::Responder, false, &[]);
        peer.feed(&mut wire, true).unwrap();
        assert!(
            !peer.connection.should_close(),
            "not while the request runs"
        );
        peer.connection.end_request(1, 0, &mut peer.out);
        assert!(peer.connection.should_close());
    }

    #[test]
    fn limits_and_wrong_direction_records_are_errors() {
        let mut peer = Peer::new(Settings {
            max_params_size: 10,
            ..Settings::default()
        });
        let mut wire = BytesMut::new();
        codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
        codec::encode_stream(&mut wire, StreamKind::Params, 1, &[0; 11]);
        assert_eq!(
            peer.feed(&mut wire, true),
            Err(ProtocolError::Decode(DecodeError::ParamsTooLarge {
                limit: 10
            }))
        );

        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        codec::encode_stream(&mut wire, StreamKind::Stdout, 1, b"x");
        assert_eq!(
            peer.feed(&mut wire, true),
            Err(ProtocolError::UnexpectedRecord("FCGI_STDOUT"))
        );
    }

    #[test]
    fn input_for_requests_that_are_not_running_is_ignored() {
        let mut peer = Peer::new(Settings::default());
        let mut wire = BytesMut::new();
        codec::encode_stream(&mut wire, StreamKind::Stdin, 5, b"stray");
        codec::encode_stream(&mut wire, StreamKind::Params, 5, b"stray");
        assert!(peer.feed(&mut wire, true).unwrap().is_empty());
        assert!(peer.answers().is_empty());
    }
}
