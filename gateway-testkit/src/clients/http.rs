//! An HTTP/1.1 client over raw bytes: it writes requests as given (odd ones included) and
//! reads answers with their framing, so keep-alive sequences, pipelining and `Expect:
//! 100-continue` can be driven step by step.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::BytesMut;

use super::{Reply, Stream, WireBody, WireRequest, read_reply};

/// One connection to an HTTP server.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    buf: BytesMut,
}

impl Connection {
    /// Connects to `host:port` (or `unix:/path`).
    pub fn connect(address: &str) -> io::Result<Connection> {
        Ok(Connection {
            stream: Stream::connect(address)?,
            buf: BytesMut::new(),
        })
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes a request: its head, then its body (chunked when it is [`WireBody::Chunked`]).
    pub fn send(&mut self, request: &WireRequest) -> io::Result<()> {
        let mut head = encode_head(request);
        match &request.body {
            WireBody::None => {}
            WireBody::Full(data) => head.extend_from_slice(data),
            WireBody::Chunked(chunks) => head.extend_from_slice(&encode_chunks(chunks)),
        }
        self.send_raw(&head)
    }

    /// Reads the next answer (interim 1xx answers are collected into it); `head_request`: the
    /// request was HEAD, so the answer has no body whatever its headers say.
    pub fn read_reply(&mut self, head_request: bool) -> io::Result<Reply> {
        read_reply(&mut self.stream, &mut self.buf, head_request)
    }

    /// Sends a request and reads its answer. A server may answer before it has read the whole
    /// request (a 413 for a body over its limit) and close: a failed write is then no error if
    /// the answer can be read.
    pub fn exchange(&mut self, request: &WireRequest) -> io::Result<Reply> {
        let sent = self.send(request);
        match self.read_reply(request.method == "HEAD") {
            Ok(reply) => Ok(reply),
            Err(error) => Err(sent.err().unwrap_or(error)),
        }
    }

    /// Waits up to `wait` for the server to close the connection: true if it did (a read gave
    /// the end of the stream or a reset), false if it stayed open (or sent more bytes).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.closed_within(&mut self.buf, wait)
    }

    /// Reads whatever arrives within `wait` (for a server that should have sent an interim
    /// answer): the bytes, possibly none.
    pub fn read_available(&mut self, wait: Duration) -> io::Result<Vec<u8>> {
        self.stream.set_timeout(Some(wait))?;
        let mut chunk = [0u8; 4096];
        let result = match self.stream.read(&mut chunk) {
            Ok(n) => Ok(chunk[..n].to_vec()),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Vec::new())
            }
            Err(error) => Err(error),
        };
        self.stream.set_timeout(Some(super::DEFAULT_TIMEOUT))?;
        // What was read belongs to the next answer too.
        if let Ok(bytes) = &result {
            self.buf.extend_from_slice(bytes);
        }
        result
    }

    /// Reads from the connection directly (the raw bytes of a streamed answer, as they come).
    pub fn read_some(&mut self, wait: Duration) -> io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            return Ok(self.buf.split().to_vec());
        }
        self.stream.set_timeout(Some(wait))?;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk);
        self.stream.set_timeout(Some(super::DEFAULT_TIMEOUT))?;
        Ok(chunk[..n?].to_vec())
    }

    /// The underlying stream (to close it, or set timeouts).
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }
}

/// The head of a request: request line, headers (with `Content-Length` or
/// `Transfer-Encoding: chunked` for its body, unless it sets one itself), blank line.
pub fn encode_head(request: &WireRequest) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(request.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&request.target);
    out.push(b' ');
    out.extend_from_slice(request.version.as_bytes());
    out.extend_from_slice(b"\r\n");
    let has = |name: &str| {
        request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    for (name, value) in &request.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match &request.body {
        WireBody::Full(data) if !has("content-length") => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", data.len()).as_bytes());
        }
        WireBody::Chunked(_) if !has("transfer-encoding") => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunked body: each (non-empty) chunk, then the last chunk.
pub fn encode_chunks(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// One request on a new connection, and its answer.
pub fn exchange(address: &str, request: &WireRequest) -> io::Result<Reply> {
    Connection::connect(address)?.exchange(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_with_their_framing() {
        let request = WireRequest::post("/p?q", "abc").header("X-A", "1");
        assert_eq!(
            encode_head(&request),
            b"POST /p?q HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n"
        );
        let chunked =
            WireRequest::new("PUT", "/").chunked(vec![b"ab".to_vec(), vec![], b"c".to_vec()]);
        assert!(encode_head(&chunked).ends_with(b"Transfer-Encoding: chunked\r\n\r\n"));
        assert_eq!(
            encode_chunks(&[b"ab".to_vec(), vec![], vec![b'c'; 17]]),
            [&b"2\r\nab\r\n11\r\n"[..], &[b'c'; 17], b"\r\n0\r\n\r\n"].concat()
        );
    }

    #[test]
    fn replies_read_by_their_framing() {
        let cases: &[(&[u8], bool, u16, &[u8])] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA", false, 200, b"abc"),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false, 201, b"abc"),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", false, 200, b"until close"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, 200, b""),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, 204, b""),
        ];
        for &(wire, head, status, body) in cases {
            let mut reader = wire;
            let reply = read_reply(&mut reader, &mut BytesMut::new(), head).unwrap();
            assert_eq!((reply.status, &reply.body[..]), (status, body));
        }
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert!(read_reply(&mut cut, &mut BytesMut::new(), false).is_err());
    }
}
