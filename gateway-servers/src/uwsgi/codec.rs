//! The uwsgi packet format, sans-I/O: the 4-byte header, the vars block, and the chunked body
//! uWSGI's HTTP router forwards with `--http-chunked-input`. Used by this project's uwsgi server
//! and by the clients that speak to one (the testkit, the middleware's remote backends).
//!
//! ```
//! use bytes::BytesMut;
//! use gateway_servers::uwsgi::codec::{self, Packet};
//!
//! let mut wire = BytesMut::new();
//! codec::encode_request(&mut wire, 0, [(&b"REQUEST_METHOD"[..], &b"GET"[..]), (b"PATH_INFO", b"/")])
//!     .unwrap();
//! let packet = codec::decode_packet(&mut wire, codec::MAX_VARS_SIZE).unwrap().unwrap();
//! assert_eq!(packet.modifier1, 0);
//! let vars: Vec<_> = packet.vars().collect::<Result<_, _>>().unwrap();
//! assert_eq!(vars[1], (bytes::Bytes::from("PATH_INFO"), bytes::Bytes::from("/")));
//! ```

use std::fmt;

use crate::params::VarRanges;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The length of a packet header.
pub const HEADER_LEN: usize = 4;

/// The largest vars block the protocol can carry (its size is a 16-bit number), and the
/// default limit of [`decode_packet`] callers in this project. uWSGI itself defaults to 4096
/// bytes (its `buffer-size`), which large cookies or many headers exceed; nginx and Apache send
/// up to this size, so anything lower refuses requests the front end accepted.
pub const MAX_VARS_SIZE: usize = 65535;

/// `modifier1` of a WSGI request, what every front end sends by default.
pub const MODIFIER_WSGI: u8 = 0;
/// `modifier1` 30: a WSGI request whose `PATH_INFO` still starts with `SCRIPT_NAME`, which the
/// backend strips.
pub const MODIFIER_WSGI_MANAGE_PATH_INFO: u8 = 30;
/// `modifier1` of a ping (`modifier2` 0) and of its answer, the pong (`modifier2` 1).
pub const MODIFIER_PING: u8 = 100;

/// A packet header: `modifier1`, the size of the data that follows (little-endian), `modifier2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    /// What the packet is (0: a WSGI request; 100: ping).
    pub modifier1: u8,
    /// The size of the data that follows (for a request, the vars block).
    pub datasize: u16,
    /// A modifier of the modifier.
    pub modifier2: u8,
}

impl PacketHeader {
    /// Reads a header from the first [`HEADER_LEN`] bytes, or `None` if there are fewer.
    pub fn parse(src: &[u8]) -> Option<PacketHeader> {
        let h = src.get(..HEADER_LEN)?;
        Some(PacketHeader {
            modifier1: h[0],
            datasize: u16::from_le_bytes([h[1], h[2]]),
            modifier2: h[3],
        })
    }

    /// Appends the header's four bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.modifier1);
        dst.put_u16_le(self.datasize);
        dst.put_u8(self.modifier2);
    }
}

/// A decoded packet: its header fields and its data (for a request, the vars block). A request's
/// body follows the packet on the wire, `CONTENT_LENGTH` bytes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// What the packet is.
    pub modifier1: u8,
    /// A modifier of the modifier.
    pub modifier2: u8,
    /// The data after the header.
    pub data: Bytes,
}

impl Packet {
    /// The vars of a request packet, as slices of its data (no copy).
    pub fn vars(&self) -> Vars {
        Vars::new(self.data.clone())
    }

    /// Whether this is a ping (`modifier1` 100, `modifier2` 0).
    pub fn is_ping(&self) -> bool {
        self.modifier1 == MODIFIER_PING && self.modifier2 == 0
    }
}

/// Why bytes are not a valid uwsgi packet or chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet's data is larger than the configured limit.
    VarsTooLarge {
        /// The size the header declares.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A var claims more bytes than the vars block holds.
    TruncatedVar,
    /// A var with an empty name (uWSGI refuses these too).
    EmptyVarName,
    /// A chunk size line of the chunked body is not a hexadecimal number.
    InvalidChunkSize,
    /// The CRLF after a chunk's data is missing.
    InvalidChunkEnd,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::VarsTooLarge { size, limit } => write!(
                f,
                "uwsgi vars block of {size} bytes is larger than the limit of {limit}"
            ),
            DecodeError::TruncatedVar => f.write_str("uwsgi var longer than its vars block"),
            DecodeError::EmptyVarName => f.write_str("uwsgi var with an empty name"),
            DecodeError::InvalidChunkSize => f.write_str("invalid chunk size in a chunked body"),
            DecodeError::InvalidChunkEnd => f.write_str("chunk not followed by CRLF"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a request cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The vars do not fit in one packet ([`MAX_VARS_SIZE`] bytes).
    VarsTooLarge {
        /// The size they would take.
        size: usize,
    },
    /// A name or value longer than 65535 bytes.
    VarTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::VarsTooLarge { size } => write!(
                f,
                "uwsgi vars of {size} bytes do not fit in a packet ({MAX_VARS_SIZE} at most)"
            ),
            EncodeError::VarTooLong => f.write_str("uwsgi var name or value over 65535 bytes"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Decodes one packet from the front of `src`, removing it; its data shares `src`'s memory.
/// `Ok(None)` means the buffer holds no whole packet yet (nothing is removed). A header that
/// declares more than `limit` bytes is refused at once, before its data arrives.
pub fn decode_packet(src: &mut BytesMut, limit: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = PacketHeader::parse(src) else {
        return Ok(None);
    };
    let size = usize::from(header.datasize);
    if size > limit {
        return Err(DecodeError::VarsTooLarge { size, limit });
    }
    if src.len() < HEADER_LEN + size {
        src.reserve(HEADER_LEN + size - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    Ok(Some(Packet {
        modifier1: header.modifier1,
        modifier2: header.modifier2,
        data: src.split_to(size).freeze(),
    }))
}

/// Appends one var (`u16le` name length, name, `u16le` value length, value).
pub fn encode_var(dst: &mut BytesMut, name: &[u8], value: &[u8]) -> Result<(), EncodeError> {
    let (Ok(name_len), Ok(value_len)) = (u16::try_from(name.len()), u16::try_from(value.len()))
    else {
        return Err(EncodeError::VarTooLong);
    };
    dst.reserve(4 + name.len() + value.len());
    dst.put_u16_le(name_len);
    dst.put_slice(name);
    dst.put_u16_le(value_len);
    dst.put_slice(value);
    Ok(())
}

/// Appends a request packet: the header with `modifier1` (and `modifier2` 0), then the vars.
/// The body, if any, is the caller's to append after it.
pub fn encode_request<'a>(
    dst: &mut BytesMut,
    modifier1: u8,
    vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(), EncodeError> {
    let start = dst.len();
    PacketHeader {
        modifier1,
        datasize: 0,
        modifier2: 0,
    }
    .encode(dst);
    for (name, value) in vars {
        if let Err(error) = encode_var(dst, name, value) {
            dst.truncate(start);
            return Err(error);
        }
    }
    let size = dst.len() - start - HEADER_LEN;
    let Ok(datasize) = u16::try_from(size) else {
        dst.truncate(start);
        return Err(EncodeError::VarsTooLarge { size });
    };
    dst[start + 1..start + 3].copy_from_slice(&datasize.to_le_bytes());
    Ok(())
}

/// Appends a ping packet (`modifier1` 100, `modifier2` 0, no data), as `uwsgi --ping` sends.
pub fn encode_ping(dst: &mut BytesMut) {
    PacketHeader {
        modifier1: MODIFIER_PING,
        datasize: 0,
        modifier2: 0,
    }
    .encode(dst);
}

/// Appends the answer to a ping: `modifier1` 100, `modifier2` 1, no data, as uWSGI answers
/// (`uwsgi --ping` takes data in the answer as a warning).
pub fn encode_pong(dst: &mut BytesMut) {
    PacketHeader {
        modifier1: MODIFIER_PING,
        datasize: 0,
        modifier2: 1,
    }
    .encode(dst);
}

/// The vars of a vars block, as slices of it (no copy).
#[derive(Debug, Clone)]
pub struct Vars {
    block: Bytes,
    at: usize,
    failed: bool,
}

impl Vars {
    /// The vars of `block`.
    pub fn new(block: Bytes) -> Self {
        Vars {
            block,
            at: 0,
            failed: false,
        }
    }

    /// The whole vars block, of which the vars are parts.
    pub fn block(&self) -> &Bytes {
        &self.block
    }

    /// The next var as the ranges of its name and of its value in [`block`](Vars::block), for
    /// a caller that keeps the block whole rather than a slice per name and per value (what
    /// [`next`](Iterator::next) gives).
    pub fn next_range(&mut self) -> Option<Result<VarRanges, DecodeError>> {
        if self.failed || self.at >= self.block.len() {
            return None;
        }
        let block = &self.block;
        let read_len = |at: usize| -> Option<usize> {
            let b = block.get(at..at + 2)?;
            Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        let parsed = (|| {
            let name_len = read_len(self.at)?;
            let name_at = self.at + 2;
            let value_len = read_len(name_at + name_len)?;
            let value_at = name_at + name_len + 2;
            let end = value_at + value_len;
            (end <= block.len()).then_some((name_at, name_len, value_at, end))
        })();
        let Some((name_at, name_len, value_at, end)) = parsed else {
            self.failed = true;
            return Some(Err(DecodeError::TruncatedVar));
        };
        if name_len == 0 {
            self.failed = true;
            return Some(Err(DecodeError::EmptyVarName));
        }
        self.at = end;
        Some(Ok((name_at..name_at + name_len, value_at..end)))
    }
}

impl Iterator for Vars {
    type Item = Result<(Bytes, Bytes), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let var = self.next_range()?;
        Some(var.map(|(name, value)| (self.block.slice(name), self.block.slice(value))))
    }
}

/// The largest chunk-size line (with extensions) [`ChunkedDecoder`] waits for.
pub const MAX_CHUNK_LINE: usize = 4096;

/// De-chunks a chunked body (`Transfer-Encoding: chunked`), as uWSGI's HTTP router forwards it
/// with `--http-chunked-input`. Feed it the bytes after the vars block; it yields the body's
/// data and says when the body ended. Chunk sizes are read with `httparse`; trailers are
/// skipped.
///
/// ```
/// use bytes::BytesMut;
/// use gateway_servers::uwsgi::codec::ChunkedDecoder;
///
/// let mut wire = BytesMut::from(&b"6\r\nchunky\r\n0\r\n\r\n"[..]);
/// let mut decoder = ChunkedDecoder::new();
/// assert_eq!(decoder.decode(&mut wire).unwrap().unwrap(), "chunky");
/// assert!(decoder.decode(&mut wire).unwrap().is_none());
/// assert!(decoder.is_done());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Waiting for a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Waiting for the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: skipping trailer lines until an empty one.
    Trailers,
    /// The body ended.
    Done,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub const fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }

    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from the front of `src`: `Ok(Some(data))` is body data (never empty), `Ok(None)`
    /// means more bytes are needed, or the body ended when [`is_done`](Self::is_done).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(None),
                ChunkState::Size => match httparse::parse_chunk_size(src) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        src.advance(used);
                        self.state = match size {
                            0 => ChunkState::Trailers,
                            n => ChunkState::Data(n),
                        };
                    }
                    Ok(httparse::Status::Partial) if src.len() > MAX_CHUNK_LINE => {
                        return Err(DecodeError::InvalidChunkSize);
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(DecodeError::InvalidChunkSize),
                },
                ChunkState::Data(left) => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(src.len());
                    let data = src.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                    return Ok(Some(data));
                }
                ChunkState::DataEnd => {
                    if src.len() < 2 {
                        return Ok(None);
                    }
                    if &src[..2] != b"\r\n" {
                        return Err(DecodeError::InvalidChunkEnd);
                    }
                    src.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(end) = src.windows(2).position(|w| w == b"\r\n") else {
                        if src.len() > MAX_CHUNK_LINE {
                            return Err(DecodeError::InvalidChunkEnd);
                        }
                        return Ok(None);
                    };
                    src.advance(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
