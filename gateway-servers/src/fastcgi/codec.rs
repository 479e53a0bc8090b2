//! FastCGI 1.0 records and name-value pairs, sans-I/O: decoding takes bytes and returns a
//! record or "need more"; encoding appends to a buffer the caller owns. The same code serves the
//! application side (this project's server) and the web-server side (the testkit's client, the
//! middleware's remote backends).
//!
//! ```
//! use bytes::BytesMut;
//! use gateway_servers::fastcgi::codec::{self, Record, Role, StreamKind};
//!
//! let mut wire = BytesMut::new();
//! codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
//! codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"hello");
//! codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
//!
//! let begin = codec::decode_record(&mut wire).unwrap().unwrap();
//! assert_eq!(begin, Record::BeginRequest { request_id: 1, role: Role::Responder, keep_conn: true });
//! let Some(Record::Stream { kind: StreamKind::Stdin, data, .. }) = codec::decode_record(&mut wire).unwrap() else {
//!     panic!("expected stdin")
//! };
//! assert_eq!(data, "hello");
//! ```

use std::fmt;

use crate::params::VarRanges;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only protocol version: `FCGI_VERSION_1`.
pub const VERSION_1: u8 = 1;
/// The length of a record header.
pub const HEADER_LEN: usize = 8;
/// The largest content a record can carry.
pub const MAX_CONTENT_LEN: usize = 65535;
/// The request id of management records: `FCGI_NULL_REQUEST_ID`.
pub const NULL_REQUEST_ID: u16 = 0;
/// The largest record: a header, the largest content and the largest padding.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

/// `FCGI_MAX_CONNS`: how many connections the application accepts at once.
pub const MAX_CONNS: &[u8] = b"FCGI_MAX_CONNS";
/// `FCGI_MAX_REQS`: how many requests the application serves at once.
pub const MAX_REQS: &[u8] = b"FCGI_MAX_REQS";
/// `FCGI_MPXS_CONNS`: `1` if the application multiplexes requests on a connection.
pub const MPXS_CONNS: &[u8] = b"FCGI_MPXS_CONNS";

/// The type of a record (byte 1 of its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// `FCGI_BEGIN_REQUEST` (1).
    BeginRequest,
    /// `FCGI_ABORT_REQUEST` (2).
    AbortRequest,
    /// `FCGI_END_REQUEST` (3).
    EndRequest,
    /// `FCGI_PARAMS` (4).
    Params,
    /// `FCGI_STDIN` (5).
    Stdin,
    /// `FCGI_STDOUT` (6).
    Stdout,
    /// `FCGI_STDERR` (7).
    Stderr,
    /// `FCGI_DATA` (8).
    Data,
    /// `FCGI_GET_VALUES` (9).
    GetValues,
    /// `FCGI_GET_VALUES_RESULT` (10).
    GetValuesResult,
    /// `FCGI_UNKNOWN_TYPE` (11).
    UnknownType,
    /// Any other type number.
    Other(u8),
}

impl RecordType {
    /// The type of a type number.
    pub const fn from_u8(n: u8) -> Self {
        match n {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            n => RecordType::Other(n),
        }
    }

    /// The type number.
    pub const fn as_u8(self) -> u8 {
        match self {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(n) => n,
        }
    }
}

/// The streams of the protocol: records whose content is a byte stream, ended by an empty
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `FCGI_PARAMS`: the CGI environment, as name-value pairs.
    Params,
    /// `FCGI_STDIN`: the request body.
    Stdin,
    /// `FCGI_STDOUT`: the response (a CGI response).
    Stdout,
    /// `FCGI_STDERR`: the application's error output.
    Stderr,
    /// `FCGI_DATA`: the file data of the Filter role.
    Data,
}

impl StreamKind {
    /// The record type that carries this stream.
    pub const fn record_type(self) -> RecordType {
        match self {
            StreamKind::Params => RecordType::Params,
            StreamKind::Stdin => RecordType::Stdin,
            StreamKind::Stdout => RecordType::Stdout,
            StreamKind::Stderr => RecordType::Stderr,
            StreamKind::Data => RecordType::Data,
        }
    }
}

/// The role the web server asks the application to play (`FCGI_BEGIN_REQUEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `FCGI_RESPONDER` (1): answer the request, like CGI.
    Responder,
    /// `FCGI_AUTHORIZER` (2): allow (200) or deny the request.
    Authorizer,
    /// `FCGI_FILTER` (3): answer with a transformation of a file (the DATA stream).
    Filter,
    /// Any other role number.
    Other(u16),
}

impl Role {
    /// The role of a role number.
    pub const fn from_u16(n: u16) -> Self {
        match n {
            1 => Role::Responder,
            2 => Role::Authorizer,
            3 => Role::Filter,
            n => Role::Other(n),
        }
    }

    /// The role number.
    pub const fn as_u16(self) -> u16 {
        match self {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 3,
            Role::Other(n) => n,
        }
    }

    /// The name libfcgi gives the role in `FCGI_ROLE`: `RESPONDER`, `AUTHORIZER`, `FILTER`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Responder => "RESPONDER",
            Role::Authorizer => "AUTHORIZER",
            Role::Filter => "FILTER",
            Role::Other(_) => "UNKNOWN",
        }
    }
}

/// How a request ended (`FCGI_END_REQUEST`'s protocol status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0).
    RequestComplete,
    /// `FCGI_CANT_MPX_CONN` (1): the application does not take a second request on this
    /// connection.
    CantMpxConn,
    /// `FCGI_OVERLOADED` (2): the application is out of some resource.
    Overloaded,
    /// `FCGI_UNKNOWN_ROLE` (3): the application does not play the requested role.
    UnknownRole,
    /// Any other status number.
    Other(u8),
}

impl ProtocolStatus {
    /// The status of a status number.
    pub const fn from_u8(n: u8) -> Self {
        match n {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            n => ProtocolStatus::Other(n),
        }
    }

    /// The status number.
    pub const fn as_u8(self) -> u8 {
        match self {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(n) => n,
        }
    }
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The protocol version (must be [`VERSION_1`]).
    pub version: u8,
    /// The record type.
    pub record_type: RecordType,
    /// The request the record belongs to ([`NULL_REQUEST_ID`] for management records).
    pub request_id: u16,
    /// How many content bytes follow the header.
    pub content_length: u16,
    /// How many padding bytes follow the content.
    pub padding_length: u8,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes, or `None` if there are fewer.
    pub fn parse(src: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            version: h[0],
            record_type: RecordType::from_u8(h[1]),
            request_id: u16::from_be_bytes([h[2], h[3]]),
            content_length: u16::from_be_bytes([h[4], h[5]]),
            padding_length: h[6],
        })
    }

    /// The length of the whole record: header, content and padding.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + usize::from(self.content_length) + usize::from(self.padding_length)
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// `FCGI_BEGIN_REQUEST`: a request starts.
    BeginRequest {
        /// The request.
        request_id: u16,
        /// The role asked for.
        role: Role,
        /// `FCGI_KEEP_CONN`: the web server keeps the connection open after the request.
        keep_conn: bool,
    },
    /// `FCGI_ABORT_REQUEST`: the web server gives up on a request.
    AbortRequest {
        /// The request.
        request_id: u16,
    },
    /// `FCGI_END_REQUEST`: the application finished a request.
    EndRequest {
        /// The request.
        request_id: u16,
        /// The application's exit status.
        app_status: u32,
        /// How the request ended.
        protocol_status: ProtocolStatus,
    },
    /// A piece of a stream; an empty `data` ends the stream.
    Stream {
        /// The request.
        request_id: u16,
        /// Which stream.
        kind: StreamKind,
        /// The bytes (empty: end of stream).
        data: Bytes,
    },
    /// `FCGI_GET_VALUES`: the web server asks for the named values (pairs with empty values).
    GetValues {
        /// The encoded name-value pairs.
        pairs: Bytes,
    },
    /// `FCGI_GET_VALUES_RESULT`: the application's answer to [`Record::GetValues`].
    GetValuesResult {
        /// The encoded name-value pairs.
        pairs: Bytes,
    },
    /// `FCGI_UNKNOWN_TYPE`: the application did not understand a management record.
    UnknownType {
        /// The type it did not understand.
        record_type: u8,
    },
    /// A record of a type this codec does not know.
    Unknown {
        /// The request id in its header.
        request_id: u16,
        /// Its type number.
        record_type: u8,
        /// Its content.
        content: Bytes,
    },
}

/// Why bytes are not a valid FastCGI record or pair stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header's version is not 1.
    UnsupportedVersion(u8),
    /// A record whose content must have a fixed length has another one.
    BadContentLength {
        /// The record type number.
        record_type: u8,
        /// The content length in the header.
        length: u16,
    },
    /// A management record with a request id, or an application record without one.
    BadRequestId {
        /// The record type number.
        record_type: u8,
        /// The request id in the header.
        request_id: u16,
    },
    /// A name-value pair claims more bytes than its stream holds.
    TruncatedPair,
    /// The params stream grew past its limit.
    ParamsTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported FastCGI version {v}"),
            DecodeError::BadContentLength {
                record_type,
                length,
            } => write!(
                f,
                "FastCGI record of type {record_type} with a content length of {length}"
            ),
            DecodeError::BadRequestId {
                record_type,
                request_id,
            } => write!(
                f,
                "FastCGI record of type {record_type} with request id {request_id}"
            ),
            DecodeError::TruncatedPair => {
                f.write_str("FastCGI name-value pair longer than its stream")
            }
            DecodeError::ParamsTooLarge { limit } => {
                write!(f, "FastCGI params stream larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one record from the front of `src`, removing it. `Ok(None)` means the buffer holds
/// no whole record yet (nothing is removed); read more bytes and call again. The content of the
/// record shares `src`'s memory.
///
/// Never allocates more than the record itself, and a record is at most [`MAX_RECORD_LEN`]
/// bytes.
pub fn decode_record(src: &mut BytesMut) -> Result<Option<Record>, DecodeError> {
    let Some(header) = Header::parse(src) else {
        return Ok(None);
    };
    if header.version != VERSION_1 {
        return Err(DecodeError::UnsupportedVersion(header.version));
    }
    let type_number = header.record_type.as_u8();
    let management = matches!(
        header.record_type,
        RecordType::GetValues | RecordType::GetValuesResult | RecordType::UnknownType
    );
    let fixed_len = matches!(
        header.record_type,
        RecordType::BeginRequest | RecordType::EndRequest | RecordType::UnknownType
    );
    if fixed_len && header.content_length != 8 {
        return Err(DecodeError::BadContentLength {
            record_type: type_number,
            length: header.content_length,
        });
    }
    let known_application = !management && !matches!(header.record_type, RecordType::Other(_));
    if (management && header.request_id != NULL_REQUEST_ID)
        || (known_application && header.request_id == NULL_REQUEST_ID)
    {
        return Err(DecodeError::BadRequestId {
            record_type: type_number,
            request_id: header.request_id,
        });
    }
    if src.len() < header.record_len() {
        src.reserve(header.record_len() - src.len());
        return Ok(None);
    }
    // The header and padding are skipped in place; only the content becomes a handle of its
    // own (none for an empty record, such as the end of a stream).
    src.advance(HEADER_LEN);
    let content = match usize::from(header.content_length) {
        0 => Bytes::new(),
        len => src.split_to(len).freeze(),
    };
    src.advance(usize::from(header.padding_length));
    let request_id = header.request_id;
    let stream = |kind, data| Record::Stream {
        request_id,
        kind,
        data,
    };
    Ok(Some(match header.record_type {
        RecordType::BeginRequest => Record::BeginRequest {
            request_id,
            role: Role::from_u16(u16::from_be_bytes([content[0], content[1]])),
            keep_conn: content[2] & 1 == 1,
        },
        RecordType::AbortRequest => Record::AbortRequest { request_id },
        RecordType::EndRequest => Record::EndRequest {
            request_id,
            app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
            protocol_status: ProtocolStatus::from_u8(content[4]),
        },
        RecordType::Params => stream(StreamKind::Params, content),
        RecordType::Stdin => stream(StreamKind::Stdin, content),
        RecordType::Stdout => stream(StreamKind::Stdout, content),
        RecordType::Stderr => stream(StreamKind::Stderr, content),
        RecordType::Data => stream(StreamKind::Data, content),
        RecordType::GetValues => Record::GetValues { pairs: content },
        RecordType::GetValuesResult => Record::GetValuesResult { pairs: content },
        RecordType::UnknownType => Record::UnknownType {
            record_type: content[0],
        },
        RecordType::Other(record_type) => Record::Unknown {
            request_id,
            record_type,
            content,
        },
    }))
}

fn put_header(dst: &mut BytesMut, record_type: RecordType, request_id: u16, len: usize, pad: u8) {
    debug_assert!(len <= MAX_CONTENT_LEN);
    dst.put_u8(VERSION_1);
    dst.put_u8(record_type.as_u8());
    dst.put_u16(request_id);
    dst.put_u16(len as u16);
    dst.put_u8(pad);
    dst.put_u8(0);
}

/// Padding that brings `len` to a multiple of 8, as the specification recommends.
const fn padding_for(len: usize) -> u8 {
    ((8 - len % 8) % 8) as u8
}

/// Appends one record with the given content (at most [`MAX_CONTENT_LEN`] bytes), padded to a
/// multiple of 8.
fn put_record(dst: &mut BytesMut, record_type: RecordType, request_id: u16, content: &[u8]) {
    let pad = padding_for(content.len());
    dst.reserve(HEADER_LEN + content.len() + usize::from(pad));
    put_header(dst, record_type, request_id, content.len(), pad);
    dst.put_slice(content);
    dst.put_bytes(0, usize::from(pad));
}

/// Appends `data` to a stream as records of at most [`MAX_CONTENT_LEN`] bytes, each padded to a
/// multiple of 8. Empty `data` appends nothing: use [`encode_end_of_stream`] to end the stream.
pub fn encode_stream(dst: &mut BytesMut, kind: StreamKind, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        put_record(dst, kind.record_type(), request_id, chunk);
    }
}

/// Begins a record of a stream whose content the caller then appends to `dst` itself, so that
/// content written in place (a response's head) needs no buffer of its own; [`OpenRecord::close`]
/// ends it. `dst` must not be split or truncated before the record at its end.
///
/// ```
/// use bytes::{BufMut, BytesMut};
/// use gateway_servers::fastcgi::codec::{self, StreamKind};
///
/// let (mut in_place, mut copied) = (BytesMut::new(), BytesMut::new());
/// let record = codec::begin_stream_record(&mut in_place, StreamKind::Stdout, 1);
/// in_place.put_slice(b"Status: 200 OK\r\n\r\n");
/// record.close(&mut in_place);
/// codec::encode_stream(&mut copied, StreamKind::Stdout, 1, b"Status: 200 OK\r\n\r\n");
/// assert_eq!(in_place, copied);
/// ```
pub fn begin_stream_record(dst: &mut BytesMut, kind: StreamKind, request_id: u16) -> OpenRecord {
    let at = dst.len();
    put_header(dst, kind.record_type(), request_id, 0, 0);
    OpenRecord {
        at,
        kind,
        request_id,
    }
}

/// A stream record begun with [`begin_stream_record`], its content still being appended.
#[derive(Debug)]
#[must_use = "a record is only whole once closed"]
pub struct OpenRecord {
    at: usize,
    kind: StreamKind,
    request_id: u16,
}

impl OpenRecord {
    /// The content appended to `dst` so far.
    pub fn content<'a>(&self, dst: &'a mut BytesMut) -> &'a mut [u8] {
        &mut dst[self.at + HEADER_LEN..]
    }

    /// Ends the record: its header gets the content's length, and padding follows. Nothing
    /// is left of a record without content (an empty record would end the stream), and content
    /// longer than a record holds becomes the records [`encode_stream`] makes of it: `dst`
    /// ends as `encode_stream` would have left it.
    pub fn close(self, dst: &mut BytesMut) {
        let len = dst.len() - self.at - HEADER_LEN;
        if len == 0 {
            dst.truncate(self.at);
        } else if len > MAX_CONTENT_LEN {
            let content = dst.split_off(self.at + HEADER_LEN);
            dst.truncate(self.at);
            encode_stream(dst, self.kind, self.request_id, &content);
        } else {
            let pad = padding_for(len);
            dst[self.at + 4..self.at + 6].copy_from_slice(&(len as u16).to_be_bytes());
            dst[self.at + 6] = pad;
            dst.put_bytes(0, usize::from(pad));
        }
    }
}

/// Appends the empty record that ends a stream.
pub fn encode_end_of_stream(dst: &mut BytesMut, kind: StreamKind, request_id: u16) {
    put_header(dst, kind.record_type(), request_id, 0, 0);
}

/// Appends an `FCGI_BEGIN_REQUEST` record.
pub fn encode_begin_request(dst: &mut BytesMut, request_id: u16, role: Role, keep_conn: bool) {
    let role = role.as_u16().to_be_bytes();
    put_record(
        dst,
        RecordType::BeginRequest,
        request_id,
        &[role[0], role[1], u8::from(keep_conn), 0, 0, 0, 0, 0],
    );
}

/// Appends an `FCGI_ABORT_REQUEST` record.
pub fn encode_abort_request(dst: &mut BytesMut, request_id: u16) {
    put_header(dst, RecordType::AbortRequest, request_id, 0, 0);
}

/// Appends an `FCGI_END_REQUEST` record.
pub fn encode_end_request(
    dst: &mut BytesMut,
    request_id: u16,
    app_status: u32,
    protocol_status: ProtocolStatus,
) {
    let s = app_status.to_be_bytes();
    put_record(
        dst,
        RecordType::EndRequest,
        request_id,
        &[s[0], s[1], s[2], s[3], protocol_status.as_u8(), 0, 0, 0],
    );
}

/// Appends an `FCGI_GET_VALUES` record asking for `names`. Names that would not fit in one
/// record are left out.
pub fn encode_get_values<'a>(dst: &mut BytesMut, names: impl IntoIterator<Item = &'a [u8]>) {
    let mut pairs = BytesMut::new();
    for name in names {
        if pairs.len() + encoded_pair_len(name, b"") > MAX_CONTENT_LEN {
            break;
        }
        encode_pair(&mut pairs, name, b"");
    }
    put_record(dst, RecordType::GetValues, NULL_REQUEST_ID, &pairs);
}

/// Appends an `FCGI_GET_VALUES_RESULT` record with the given pairs. Pairs that would not fit in
/// one record are left out.
pub fn encode_get_values_result<'a>(
    dst: &mut BytesMut,
    values: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    let mut pairs = BytesMut::new();
    for (name, value) in values {
        if pairs.len() + encoded_pair_len(name, value) > MAX_CONTENT_LEN {
            break;
        }
        encode_pair(&mut pairs, name, value);
    }
    put_record(dst, RecordType::GetValuesResult, NULL_REQUEST_ID, &pairs);
}

/// Appends an `FCGI_UNKNOWN_TYPE` record answering a management record of `record_type`.
pub fn encode_unknown_type(dst: &mut BytesMut, record_type: u8) {
    put_record(
        dst,
        RecordType::UnknownType,
        NULL_REQUEST_ID,
        &[record_type, 0, 0, 0, 0, 0, 0, 0],
    );
}

impl Record {
    /// Appends the record's encoding to `dst` (streams longer than one record become several).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Record::BeginRequest {
                request_id,
                role,
                keep_conn,
            } => encode_begin_request(dst, *request_id, *role, *keep_conn),
            Record::AbortRequest { request_id } => encode_abort_request(dst, *request_id),
            Record::EndRequest {
                request_id,
                app_status,
                protocol_status,
            } => encode_end_request(dst, *request_id, *app_status, *protocol_status),
            Record::Stream {
                request_id,
                kind,
                data,
            } if data.is_empty() => encode_end_of_stream(dst, *kind, *request_id),
            Record::Stream {
                request_id,
                kind,
                data,
            } => encode_stream(dst, *kind, *request_id, data),
            Record::GetValues { pairs } => {
                put_record(dst, RecordType::GetValues, NULL_REQUEST_ID, pairs)
            }
            Record::GetValuesResult { pairs } => {
                put_record(dst, RecordType::GetValuesResult, NULL_REQUEST_ID, pairs)
            }
            Record::UnknownType { record_type } => encode_unknown_type(dst, *record_type),
            Record::Unknown {
                request_id,
                record_type,
                content,
            } => put_record(
                dst,
                RecordType::Other(*record_type),
                *request_id,
                &content[..content.len().min(MAX_CONTENT_LEN)],
            ),
        }
    }
}

// ----- name-value pairs -----

/// The length of a name or value as the pair encoding writes it: 1 byte below 128, else 4.
fn length_len(len: usize) -> usize {
    if len < 128 { 1 } else { 4 }
}

/// How many bytes [`encode_pair`] appends for this pair.
pub fn encoded_pair_len(name: &[u8], value: &[u8]) -> usize {
    length_len(name.len()) + length_len(value.len()) + name.len() + value.len()
}

fn put_length(dst: &mut BytesMut, len: usize) {
    if len < 128 {
        dst.put_u8(len as u8);
    } else {
        dst.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends one name-value pair. Names and values are at most 2^31 - 1 bytes long.
pub fn encode_pair(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.reserve(encoded_pair_len(name, value));
    put_length(dst, name.len());
    put_length(dst, value.len());
    dst.put_slice(name);
    dst.put_slice(value);
}

/// Reads a pair length at `src[at..]`: the length and how many bytes it took, or `None` when
/// the bytes end first.
fn read_length(src: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *src.get(at)?;
    if first & 0x80 == 0 {
        return Some((usize::from(first), 1));
    }
    let b = src.get(at..at + 4)?;
    let len = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
    Some((len as usize, 4))
}

/// The name-value pairs of a complete stream (PARAMS, or the content of a GET_VALUES record),
/// as slices of its bytes (no copy).
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use gateway_servers::fastcgi::codec::{encode_pair, Pairs};
///
/// let mut stream = BytesMut::new();
/// encode_pair(&mut stream, b"SCRIPT_NAME", b"/app");
/// encode_pair(&mut stream, b"LONG", &[b'x'; 200]);
/// let pairs: Vec<_> = Pairs::new(stream.freeze()).collect::<Result<_, _>>().unwrap();
/// assert_eq!(pairs[0], (Bytes::from("SCRIPT_NAME"), Bytes::from("/app")));
/// assert_eq!(pairs[1].1.len(), 200);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairs {
    stream: Bytes,
    at: usize,
    failed: bool,
}

impl Pairs {
    /// The pairs of `stream`.
    pub fn new(stream: Bytes) -> Self {
        Pairs {
            stream,
            at: 0,
            failed: false,
        }
    }

    /// The whole stream, of which the pairs are parts.
    pub fn stream(&self) -> &Bytes {
        &self.stream
    }

    /// The next pair as the ranges of its name and of its value in [`stream`](Pairs::stream),
    /// for a caller that keeps the stream whole rather than a slice per name and per value
    /// (what [`next`](Iterator::next) gives).
    pub fn next_range(&mut self) -> Option<Result<VarRanges, DecodeError>> {
        if self.failed || self.at >= self.stream.len() {
            return None;
        }
        let parsed = (|| {
            let (name_len, a) = read_length(&self.stream, self.at)?;
            let (value_len, b) = read_length(&self.stream, self.at + a)?;
            let name_at = self.at + a + b;
            let value_at = name_at.checked_add(name_len)?;
            let end = value_at.checked_add(value_len)?;
            (end <= self.stream.len()).then_some((name_at, value_at, end))
        })();
        match parsed {
            Some((name_at, value_at, end)) => {
                self.at = end;
                Some(Ok((name_at..value_at, value_at..end)))
            }
            None => {
                self.failed = true;
                Some(Err(DecodeError::TruncatedPair))
            }
        }
    }
}

impl Iterator for Pairs {
    type Item = Result<(Bytes, Bytes), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.next_range()?;
        Some(pair.map(|(name, value)| (self.stream.slice(name), self.stream.slice(value))))
    }
}

/// Collects the pieces of a PARAMS stream until its end, within a size limit. A single record
/// (what nginx and lighttpd send) is kept without copying.
#[derive(Debug, Clone)]
pub struct ParamsBuffer {
    pieces: BytesMut,
    single: Option<Bytes>,
    limit: usize,
}

impl ParamsBuffer {
    /// A buffer that refuses streams longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        ParamsBuffer {
            pieces: BytesMut::new(),
            single: None,
            limit,
        }
    }

    /// Adds a piece of the stream.
    pub fn push(&mut self, piece: Bytes) -> Result<(), DecodeError> {
        if self.len() + piece.len() > self.limit {
            return Err(DecodeError::ParamsTooLarge { limit: self.limit });
        }
        match self.single.take() {
            None if self.pieces.is_empty() => self.single = Some(piece),
            None => self.pieces.extend_from_slice(&piece),
            Some(first) => {
                self.pieces.extend_from_slice(&first);
                self.pieces.extend_from_slice(&piece);
            }
        }
        Ok(())
    }

    /// How many bytes were collected.
    pub fn len(&self) -> usize {
        self.single.as_ref().map_or(self.pieces.len(), Bytes::len)
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole stream, as pairs.
    pub fn finish(self) -> Pairs {
        Pairs::new(self.single.unwrap_or_else(|| self.pieces.freeze()))
    }
}

#[cfg(test)]
mod tests;
