//! Throughput of the sans-I/O codecs on large inputs: FastCGI records (a 1 MiB
//! `FCGI_STDIN` stream decoded, a 1 MiB `FCGI_STDOUT` stream encoded, a 60 KiB `FCGI_PARAMS`
//! stream of pairs decoded) and uwsgi packets (a 60 KiB vars block decoded and encoded, a
//! 1 MiB chunked body de-chunked). A uwsgi body with `CONTENT_LENGTH` is raw bytes after the
//! packet: no codec touches it.
//!
//! Each case prints MB/s (10^6 bytes per second of input decoded or output encoded), the best
//! of 20 rounds, against the benchmark target (at least 1 GB/s on large bodies). A plain
//! timing loop, as `http.rs` is: this crate has no criterion. Nothing is asserted.
//!
//! `cargo bench -p gateway-servers --bench codecs`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_servers::fastcgi::codec::{
    Pairs, Record, StreamKind, decode_record, encode_end_of_stream, encode_pair, encode_stream,
};
use gateway_servers::uwsgi::codec::{ChunkedDecoder, decode_packet, encode_request};

const BODY: usize = 1 << 20;

fn body() -> Vec<u8> {
    (0..BODY).map(|i| (i % 251) as u8).collect()
}

/// The wire bytes of a whole `FCGI_STDIN` stream carrying `body`.
fn fastcgi_stdin(body: &[u8]) -> Bytes {
    let mut wire = BytesMut::new();
    encode_stream(&mut wire, StreamKind::Stdin, 1, body);
    encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
    wire.freeze()
}

fn fastcgi_decode(wire: BytesMut) -> usize {
    let mut wire = wire;
    let mut total = 0;
    while let Some(record) = decode_record(&mut wire).unwrap() {
        if let Record::Stream { data, .. } = record {
            total += black_box(data).len();
        }
    }
    total
}

fn fastcgi_encode(dst: &mut BytesMut, body: &[u8]) -> usize {
    dst.clear();
    encode_stream(dst, StreamKind::Stdout, 1, body);
    encode_end_of_stream(dst, StreamKind::Stdout, 1);
    dst.len()
}

/// Pairs as a web server sends them, up to about 60 KiB (what one record holds).
fn var_list() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut vars = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < 60 * 1024 {
        let name = format!("HTTP_X_HEADER_{i}").into_bytes();
        let value = vec![b'v'; 40 + (i * 37) % 200];
        size += name.len() + value.len() + 8;
        vars.push((name, value));
        i += 1;
    }
    vars
}

fn fastcgi_params(vars: &[(Vec<u8>, Vec<u8>)]) -> Bytes {
    let mut stream = BytesMut::new();
    for (name, value) in vars {
        encode_pair(&mut stream, name, value);
    }
    stream.freeze()
}

fn pairs_len(pairs: Bytes) -> usize {
    let mut total = 0;
    for pair in Pairs::new(pairs) {
        let (name, value) = pair.unwrap();
        total += black_box(name).len() + black_box(value).len();
    }
    total
}

fn uwsgi_encode(dst: &mut BytesMut, vars: &[(Vec<u8>, Vec<u8>)]) -> usize {
    dst.clear();
    encode_request(
        dst,
        0,
        vars.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
    )
    .unwrap();
    dst.len()
}

fn uwsgi_decode(wire: BytesMut) -> usize {
    let mut wire = wire;
    let packet = decode_packet(&mut wire, 65535).unwrap().unwrap();
    let mut total = 0;
    for var in packet.vars() {
        let (name, value) = var.unwrap();
        total += black_box(name).len() + black_box(value).len();
    }
    total
}

/// A chunked body in chunks of 16 KiB, as uWSGI's router forwards it.
fn chunked(body: &[u8]) -> Bytes {
    let mut wire = BytesMut::new();
    for chunk in body.chunks(16 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire.freeze()
}

fn dechunk(wire: BytesMut) -> usize {
    let mut wire = wire;
    let mut decoder = ChunkedDecoder::new();
    let mut total = 0;
    while let Some(data) = decoder.decode(&mut wire).unwrap() {
        total += black_box(data).len();
    }
    assert!(decoder.is_done());
    total
}

/// MB/s of `bytes` per run of `run`, the best of 20 rounds of `iterations`; the input of each
/// run is built outside the timing by `make`.
fn best_mb_per_s<I>(bytes: usize, make: impl Fn() -> I, run: impl Fn(I) -> usize) -> f64 {
    let iterations = 16;
    let mut best = f64::MAX;
    for _ in 0..20 {
        let inputs: Vec<I> = (0..iterations).map(|_| make()).collect();
        let started = Instant::now();
        for input in inputs {
            black_box(run(input));
        }
        best = best.min(started.elapsed().as_secs_f64() / iterations as f64);
    }
    bytes as f64 / best / 1e6
}

fn main() {
    let body = body();
    let stdin = fastcgi_stdin(&body);
    let vars = var_list();
    let params = fastcgi_params(&vars);
    let mut packet = BytesMut::new();
    uwsgi_encode(&mut packet, &vars);
    let packet = packet.freeze();
    let chunked_body = chunked(&body);

    let mut encode_dst = BytesMut::with_capacity(stdin.len());
    let encode_dst = std::cell::RefCell::new(&mut encode_dst);
    let rows = [
        (
            "fastcgi decode stdin 1 MiB",
            best_mb_per_s(stdin.len(), || BytesMut::from(&stdin[..]), fastcgi_decode),
        ),
        (
            "fastcgi encode stdout 1 MiB",
            best_mb_per_s(
                stdin.len(),
                || (),
                |()| fastcgi_encode(&mut encode_dst.borrow_mut(), &body),
            ),
        ),
        (
            "fastcgi decode params 60 KiB",
            best_mb_per_s(params.len(), || params.clone(), pairs_len),
        ),
        (
            "uwsgi decode vars 60 KiB",
            best_mb_per_s(packet.len(), || BytesMut::from(&packet[..]), uwsgi_decode),
        ),
        (
            "uwsgi encode vars 60 KiB",
            best_mb_per_s(
                packet.len(),
                || (),
                |()| uwsgi_encode(&mut encode_dst.borrow_mut(), &vars),
            ),
        ),
        (
            "uwsgi dechunk body 1 MiB",
            best_mb_per_s(
                chunked_body.len(),
                || BytesMut::from(&chunked_body[..]),
                dechunk,
            ),
        ),
    ];
    println!();
    println!("summary: codec throughput, best of 20 rounds of 16, inputs built outside the timing");
    for (name, mb) in rows {
        let verdict = if mb >= 1000.0 { "met" } else { "missed" };
        println!("  {name:<30} {mb:10.1} MB/s  (target >= 1000 MB/s: {verdict})");
    }
}
