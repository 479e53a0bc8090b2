//! A uwsgi client: a request packet (the CGI variables a front end sends) and its body, then
//! the raw HTTP answer; and `uwsgi --ping`'s ping.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use gateway_servers::uwsgi::codec::{self, PacketHeader};

use super::{
    FrontEnd, Reply, Stream, WireBody, WireRequest, cgi_vars, http::encode_chunks, read_reply,
};

/// Sends `request` as a front end would (its variables in the packet; a chunked body raw, as
/// uWSGI's router does with `--http-chunked-input`) and reads the answer.
pub fn exchange(address: &str, request: &WireRequest, front: &FrontEnd) -> io::Result<Reply> {
    let mut vars = cgi_vars(request, front);
    if let WireBody::Chunked(_) = request.body {
        vars.push((
            Bytes::from_static(b"HTTP_TRANSFER_ENCODING"),
            Bytes::from_static(b"chunked"),
        ));
    }
    send_packet(address, 0, &vars, &request.body, request.method == "HEAD")
}

/// Sends a packet with `modifier1` and these vars, then the body, and reads the answer.
pub fn send_packet(
    address: &str,
    modifier1: u8,
    vars: &[(Bytes, Bytes)],
    body: &WireBody,
    head_request: bool,
) -> io::Result<Reply> {
    let mut out = BytesMut::new();
    codec::encode_request(
        &mut out,
        modifier1,
        vars.iter().map(|(n, v)| (&n[..], &v[..])),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match body {
        WireBody::None => {}
        WireBody::Full(data) => out.extend_from_slice(data),
        WireBody::Chunked(chunks) => out.extend_from_slice(&encode_chunks(chunks)),
    }
    let mut stream = Stream::connect(address)?;
    // A server may answer before it has read the whole body (over its limit) and close.
    let sent = stream.write_all(&out);
    match read_reply(&mut stream, &mut BytesMut::new(), head_request) {
        Ok(reply) => Ok(reply),
        Err(error) => Err(sent.err().unwrap_or(error)),
    }
}

/// Sends a ping (`modifier1` 100) and returns the header of the answer (`None` if the server
/// closed without one).
pub fn ping(address: &str) -> io::Result<Option<PacketHeader>> {
    let mut out = BytesMut::new();
    codec::encode_ping(&mut out);
    let mut stream = Stream::connect(address)?;
    stream.write_all(&out)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64];
    while answer.len() < 4 {
        match stream.read(&mut chunk)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(PacketHeader::parse(&answer))
}
