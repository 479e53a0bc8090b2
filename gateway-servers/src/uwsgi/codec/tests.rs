use super::*;
use proptest::prelude::*;

fn vars_of(packet: &Packet) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
    packet.vars().collect()
}

/// Decodes `bytes` split in two at every position: nothing comes out before the packet is whole,
/// and the result never depends on the split.
fn decode_every_split(bytes: &[u8], limit: usize) -> Result<Option<Packet>, DecodeError> {
    let whole = decode_packet(&mut BytesMut::from(bytes), limit);
    for split in 0..bytes.len() {
        let mut src = BytesMut::from(&bytes[..split]);
        match decode_packet(&mut src, limit) {
            Ok(None) => {}
            Ok(Some(packet)) => panic!("split {split}: decoded early: {packet:?}"),
            Err(error) => {
                assert_eq!(whole, Err(error), "split {split}");
                continue;
            }
        }
        src.extend_from_slice(&bytes[split..]);
        assert_eq!(decode_packet(&mut src, limit), whole, "split {split}");
    }
    whole
}

macro_rules! packets {
    ($($name:ident: $bytes:expr, $limit:expr => $expected:expr;)*) => {$(
        #[test]
        fn $name() {
            let bytes: Vec<u8> = $bytes;
            assert_eq!(decode_every_split(&bytes, $limit), $expected);
        }
    )*};
}

fn packet(modifier1: u8, modifier2: u8, data: &'static [u8]) -> Packet {
    Packet {
        modifier1,
        modifier2,
        data: Bytes::from_static(data),
    }
}

packets! {
    ping: vec![100, 0, 0, 0], MAX_VARS_SIZE => Ok(Some(packet(100, 0, b"")));
    one_var: vec![0, 8, 0, 0, 1, 0, b'A', 3, 0, b'x', b'y', b'z'], MAX_VARS_SIZE
        => Ok(Some(packet(0, 0, b"\x01\x00A\x03\x00xyz")));
    modifier_30: vec![30, 0, 0, 0], MAX_VARS_SIZE => Ok(Some(packet(30, 0, b"")));
    over_a_small_limit: vec![0, 0x00, 0x10, 0], 4095
        => Err(DecodeError::VarsTooLarge { size: 4096, limit: 4095 });
    just_over_the_limit: vec![0, 0x01, 0x10, 0], 4096
        => Err(DecodeError::VarsTooLarge { size: 4097, limit: 4096 });
    empty: vec![], MAX_VARS_SIZE => Ok(None);
}

#[test]
fn the_limit_is_inclusive() {
    let mut bytes = vec![0, 0x00, 0x10, 0];
    bytes.extend(vec![0u8; 4096]);
    assert!(
        decode_packet(&mut BytesMut::from(&bytes[..]), 4096)
            .unwrap()
            .is_some()
    );
}

#[test]
fn vars_decode_with_empty_values_and_fail_on_lies() {
    let mut wire = BytesMut::new();
    encode_request(
        &mut wire,
        0,
        [
            (&b"CONTENT_LENGTH"[..], &b""[..]),
            (b"HTTP_HOST", b"example.com"),
        ],
    )
    .unwrap();
    let packet = decode_packet(&mut wire, MAX_VARS_SIZE).unwrap().unwrap();
    assert_eq!(
        vars_of(&packet).unwrap(),
        vec![
            (Bytes::from("CONTENT_LENGTH"), Bytes::new()),
            (Bytes::from("HTTP_HOST"), Bytes::from("example.com")),
        ]
    );
    for (block, error) in [
        (&b"\x05\x00AB"[..], DecodeError::TruncatedVar),
        (b"\x01\x00A\x09\x00xy", DecodeError::TruncatedVar),
        (b"\x01", DecodeError::TruncatedVar),
        (b"\x01\x00A", DecodeError::TruncatedVar),
        (b"\x00\x00\x01\x00x", DecodeError::EmptyVarName),
    ] {
        let items: Vec<_> = Vars::new(Bytes::from_static(block)).collect();
        assert_eq!(items, vec![Err(error)], "{block:?}");
    }
}

#[test]
fn encoding_refuses_what_does_not_fit() {
    let long = vec![b'x'; 70_000];
    let mut wire = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode_request(&mut wire, 0, [(&b"A"[..], &long[..])]),
        Err(EncodeError::VarTooLong)
    );
    let value = vec![b'x'; 40_000];
    assert_eq!(
        encode_request(&mut wire, 0, [(&b"A"[..], &value[..]), (b"B", &value[..])]),
        Err(EncodeError::VarsTooLarge { size: 80_010 })
    );
    assert_eq!(
        &wire[..],
        b"kept",
        "a failed encoding leaves the buffer as it was"
    );
}

#[test]
fn ping_and_pong() {
    let mut wire = BytesMut::new();
    encode_ping(&mut wire);
    encode_pong(&mut wire);
    assert_eq!(&wire[..], [100, 0, 0, 0, 100, 0, 0, 1]);
    assert!(decode_packet(&mut wire, 0).unwrap().unwrap().is_ping());
    assert!(!decode_packet(&mut wire, 0).unwrap().unwrap().is_ping());
}

fn dechunk_every_split(wire: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut results = Vec::new();
    for split in 0..=wire.len() {
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&wire[..split]);
        let mut body = Vec::new();
        let mut outcome = Ok(());
        for part in [&wire[split..], &[][..]] {
            loop {
                match decoder.decode(&mut src) {
                    Ok(Some(data)) => {
                        assert!(!data.is_empty());
                        body.extend_from_slice(&data);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            if outcome.is_err() {
                break;
            }
            src.extend_from_slice(part);
        }
        results.push(outcome.map(|()| {
            assert!(decoder.is_done(), "split {split}: body not ended");
            body
        }));
    }
    let first = results[0].clone();
    for (split, result) in results.iter().enumerate() {
        assert_eq!(*result, first, "split {split}");
    }
    first
}

#[test]
fn chunked_bodies() {
    assert_eq!(
        dechunk_every_split(b"6\r\nchunky\r\n0\r\n\r\n").unwrap(),
        b"chunky"
    );
    assert_eq!(
        dechunk_every_split(b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
        b"abc0123456789"
    );
    assert_eq!(dechunk_every_split(b"0\r\n\r\n").unwrap(), b"");
    assert_eq!(
        dechunk_every_split(b"zz\r\n"),
        Err(DecodeError::InvalidChunkSize)
    );
    assert_eq!(
        dechunk_every_split(b"2\r\nabc\r\n0\r\n\r\n"),
        Err(DecodeError::InvalidChunkEnd)
    );
}

#[test]
fn an_endless_chunk_size_line_is_refused() {
    let mut decoder = ChunkedDecoder::new();
    let mut src = BytesMut::from(&vec![b'1'; MAX_CHUNK_LINE + 10][..]);
    assert!(decoder.decode(&mut src).is_err());
}

proptest! {
    #[test]
    fn requests_round_trip(
        modifier1 in any::<u8>(),
        vars in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..40), proptest::collection::vec(any::<u8>(), 0..80)),
            0..20,
        ),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        encode_request(
            &mut wire,
            modifier1,
            vars.iter().map(|(n, v)| (&n[..], &v[..])),
        ).unwrap();
        wire.extend_from_slice(b"BODY");
        let at = split.index(wire.len() + 1);
        let mut src = BytesMut::from(&wire[..at]);
        let first = decode_packet(&mut src, MAX_VARS_SIZE).unwrap();
        src.extend_from_slice(&wire[at..]);
        let packet = match first {
            Some(packet) => packet,
            None => decode_packet(&mut src, MAX_VARS_SIZE).unwrap().unwrap(),
        };
        prop_assert_eq!(packet.modifier1, modifier1);
        let decoded: Vec<(Vec<u8>, Vec<u8>)> = packet.vars()
            .map(|r| r.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded, vars);
        prop_assert_eq!(&src[..], b"BODY", "the body is left for the caller");
    }

    #[test]
    fn chunked_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 0..6)) {
        let mut wire = Vec::new();
        for chunk in &chunks {
            wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&wire[..]);
        let mut body = Vec::new();
        while let Some(data) = decoder.decode(&mut src).unwrap() {
            body.extend_from_slice(&data);
        }
        prop_assert!(decoder.is_done());
        prop_assert_eq!(body, chunks.concat());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut src = BytesMut::from(&bytes[..]);
        if let Ok(Some(packet)) = decode_packet(&mut src, MAX_VARS_SIZE) {
            for var in packet.vars() {
                if var.is_err() { break; }
            }
        }
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut src) {}
    }
}
