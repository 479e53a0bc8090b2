//! A FastCGI client playing the web server: requests in any role, with or without
//! `FCGI_KEEP_CONN`, streams split into records of any size, several requests interleaved on
//! one connection, `FCGI_ABORT_REQUEST`, `FCGI_GET_VALUES` and raw records.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_servers::fastcgi::codec::{
    self, Pairs, ProtocolStatus, Record, Role, StreamKind, decode_record,
};

use super::{FrontEnd, Reply, Stream, WireBody, WireRequest, cgi_vars, read_reply};

/// What the application sent for one request, up to its `FCGI_END_REQUEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The `FCGI_STDOUT` stream.
    pub stdout: Vec<u8>,
    /// The `FCGI_STDERR` stream.
    pub stderr: Vec<u8>,
    /// The application's status in `FCGI_END_REQUEST`.
    pub app_status: u32,
    /// How the request ended.
    pub protocol_status: ProtocolStatus,
    /// Whether the stdout stream was ended by an empty record before `FCGI_END_REQUEST`.
    pub stdout_closed: bool,
}

impl Outcome {
    /// The answer in the stdout stream.
    pub fn reply(&self, head_request: bool) -> io::Result<Reply> {
        let mut stdout: &[u8] = &self.stdout;
        read_reply(&mut stdout, &mut BytesMut::new(), head_request)
    }
}

/// One connection to a FastCGI application.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    buf: BytesMut,
    /// Records read while waiting for another request's.
    stash: Vec<Record>,
}

impl Connection {
    /// Connects to `host:port` or `unix:/path`.
    pub fn connect(address: &str) -> io::Result<Connection> {
        Ok(Connection {
            stream: Stream::connect(address)?,
            buf: BytesMut::new(),
            stash: Vec::new(),
        })
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// `FCGI_BEGIN_REQUEST`.
    pub fn begin(&mut self, id: u16, role: Role, keep_conn: bool) -> io::Result<()> {
        let mut out = BytesMut::new();
        codec::encode_begin_request(&mut out, id, role, keep_conn);
        self.send_raw(&out)
    }

    /// The `FCGI_PARAMS` stream: the pairs, cut into records of at most `record` bytes (cuts
    /// fall anywhere, even inside a pair), then the empty record.
    pub fn params(&mut self, id: u16, vars: &[(Bytes, Bytes)], record: usize) -> io::Result<()> {
        let mut pairs = BytesMut::new();
        for (name, value) in vars {
            codec::encode_pair(&mut pairs, name, value);
        }
        self.stream_data(id, StreamKind::Params, &pairs, record, true)
    }

    /// A stream's data, in records of at most `record` bytes, ended by the empty record when
    /// `end`.
    pub fn stream_data(
        &mut self,
        id: u16,
        kind: StreamKind,
        data: &[u8],
        record: usize,
        end: bool,
    ) -> io::Result<()> {
        let mut out = BytesMut::new();
        for piece in data.chunks(record.clamp(1, codec::MAX_CONTENT_LEN)) {
            codec::encode_stream(&mut out, kind, id, piece);
        }
        if end {
            codec::encode_end_of_stream(&mut out, kind, id);
        }
        self.send_raw(&out)
    }

    /// `FCGI_ABORT_REQUEST`.
    pub fn abort(&mut self, id: u16) -> io::Result<()> {
        let mut out = BytesMut::new();
        codec::encode_abort_request(&mut out, id);
        self.send_raw(&out)
    }

    /// Asks `FCGI_GET_VALUES` for these names; the pairs of the answer.
    pub fn get_values(&mut self, names: &[&str]) -> io::Result<Vec<(String, String)>> {
        let mut out = BytesMut::new();
        codec::encode_get_values(&mut out, names.iter().map(|n| n.as_bytes()));
        self.send_raw(&out)?;
        loop {
            match self.read_record()? {
                Some(Record::GetValuesResult { pairs }) => {
                    return Pairs::new(pairs)
                        .map(|pair| {
                            let (name, value) = pair.map_err(invalid)?;
                            Ok((
                                String::from_utf8_lossy(&name).into_owned(),
                                String::from_utf8_lossy(&value).into_owned(),
                            ))
                        })
                        .collect();
                }
                Some(other) => self.stash.push(other),
                None => return Err(closed("FCGI_GET_VALUES_RESULT")),
            }
        }
    }

    /// The next record from the application (`None`: it closed the connection).
    pub fn read_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            if let Some(record) = decode_record(&mut self.buf).map_err(invalid)? {
                return Ok(Some(record));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk)? {
                0 if self.buf.is_empty() => return Ok(None),
                0 => return Err(closed("a whole record")),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads the records of request `id` until its `FCGI_END_REQUEST` (records of other
    /// requests are kept for their own reads).
    pub fn read_until_end(&mut self, id: u16) -> io::Result<Outcome> {
        let mut outcome = Outcome {
            stdout: Vec::new(),
            stderr: Vec::new(),
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
            stdout_closed: false,
        };
        let mut stashed = std::mem::take(&mut self.stash).into_iter();
        loop {
            let record = match stashed.next() {
                Some(record) => record,
                None => match self.read_record()? {
                    Some(record) => record,
                    None => return Err(closed("FCGI_END_REQUEST")),
                },
            };
            match record {
                Record::Stream {
                    request_id,
                    kind,
                    data,
                } if request_id == id => match kind {
                    StreamKind::Stdout if data.is_empty() => outcome.stdout_closed = true,
                    StreamKind::Stdout => outcome.stdout.extend_from_slice(&data),
                    StreamKind::Stderr => outcome.stderr.extend_from_slice(&data),
                    _ => {}
                },
                Record::EndRequest {
                    request_id,
                    app_status,
                    protocol_status,
                } if request_id == id => {
                    outcome.app_status = app_status;
                    outcome.protocol_status = protocol_status;
                    self.stash.extend(stashed);
                    return Ok(outcome);
                }
                other => self.stash.push(other),
            }
        }
    }

    /// Sends a whole Responder request: begin, params, stdin (in records of `record` bytes).
    pub fn send_request(
        &mut self,
        id: u16,
        vars: &[(Bytes, Bytes)],
        body: &[u8],
        keep_conn: bool,
        record: usize,
    ) -> io::Result<()> {
        self.begin(id, Role::Responder, keep_conn)?;
        self.params(id, vars, record)?;
        self.stream_data(id, StreamKind::Stdin, body, record, true)
    }

    /// Waits up to `wait` for the application to close the connection.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.closed_within(&mut self.buf, wait)
    }
}

/// One Responder request on a new connection, as a web server sends it for `request`, with
/// the largest records; the outcome and the answer in it.
pub fn exchange(
    address: &str,
    request: &WireRequest,
    front: &FrontEnd,
) -> io::Result<(Reply, Outcome)> {
    let mut connection = Connection::connect(address)?;
    let vars = cgi_vars(request, front);
    let body = match &request.body {
        WireBody::None => Vec::new(),
        body => body.bytes(),
    };
    // An application may end the request before it has read all of stdin (a body over its
    // limit): a failed write is then no error if the answer can be read.
    let sent = connection.send_request(1, &vars, &body, false, codec::MAX_CONTENT_LEN);
    let outcome = match connection.read_until_end(1) {
        Ok(outcome) => outcome,
        Err(error) => return Err(sent.err().unwrap_or(error)),
    };
    let reply = outcome.reply(request.method == "HEAD")?;
    Ok((reply, outcome))
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn closed(waiting_for: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the application closed the connection before {waiting_for}"),
    )
}
