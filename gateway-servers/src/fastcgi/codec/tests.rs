use super::*;
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut src = BytesMut::from(bytes);
    let mut records = Vec::new();
    while let Some(record) = decode_record(&mut src)? {
        records.push(record);
    }
    assert!(src.is_empty(), "trailing bytes: {src:?}");
    Ok(records)
}

/// Decodes `bytes` fed in two parts split at every position: the result must not depend on
/// where the bytes were split, and nothing is decoded before a record is whole.
fn decode_every_split(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let whole = decode_all(bytes);
    for split in 0..bytes.len() {
        let mut src = BytesMut::from(&bytes[..split]);
        let mut records = Vec::new();
        let mut result = Ok(());
        loop {
            match decode_record(&mut src) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            src.extend_from_slice(&bytes[split..]);
            loop {
                match decode_record(&mut src) {
                    Ok(Some(record)) => records.push(record),
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        match (&whole, result) {
            (Ok(expected), Ok(())) => assert_eq!(&records, expected, "split at {split}"),
            (Err(expected), Err(got)) => assert_eq!(*expected, got, "split at {split}"),
            (expected, got) => panic!("split at {split}: {expected:?} vs {got:?}"),
        }
    }
    whole
}

/// `(name, wire bytes, expected records or error)`, decoded at every split.
macro_rules! records {
    ($($name:ident: $bytes:expr => $expected:expr;)*) => {$(
        #[test]
        fn $name() {
            let bytes: Vec<u8> = $bytes;
            assert_eq!(decode_every_split(&bytes), $expected);
        }
    )*};
}

fn stream(request_id: u16, kind: StreamKind, data: &'static [u8]) -> Record {
    Record::Stream {
        request_id,
        kind,
        data: Bytes::from_static(data),
    }
}

records! {
    begin_responder_keep_conn: vec![1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
        => Ok(vec![Record::BeginRequest { request_id: 1, role: Role::Responder, keep_conn: true }]);
    begin_authorizer_with_padding: vec![1, 1, 0, 7, 0, 8, 3, 0, 0, 2, 0, 0, 0, 0, 0, 0, 9, 9, 9]
        => Ok(vec![Record::BeginRequest { request_id: 7, role: Role::Authorizer, keep_conn: false }]);
    begin_unknown_role: vec![1, 1, 0, 1, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0]
        => Ok(vec![Record::BeginRequest { request_id: 1, role: Role::Other(9), keep_conn: false }]);
    abort: vec![1, 2, 1, 0, 0, 0, 0, 0]
        => Ok(vec![Record::AbortRequest { request_id: 256 }]);
    end_request: vec![1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0]
        => Ok(vec![Record::EndRequest { request_id: 1, app_status: 258, protocol_status: ProtocolStatus::UnknownRole }]);
    params_then_end: vec![1, 4, 0, 1, 0, 3, 5, 0, 1, 1, b'A', 0, 0, 0, 0, 0, 1, 4, 0, 1, 0, 0, 0, 0]
        => Ok(vec![stream(1, StreamKind::Params, b"\x01\x01A"), stream(1, StreamKind::Params, b"")]);
    stdin_stdout_stderr_data: vec![
        1, 5, 0, 2, 0, 1, 0, 0, b'i',
        1, 6, 0, 2, 0, 1, 0, 0, b'o',
        1, 7, 0, 2, 0, 1, 0, 0, b'e',
        1, 8, 0, 2, 0, 1, 0, 0, b'd',
    ] => Ok(vec![
        stream(2, StreamKind::Stdin, b"i"),
        stream(2, StreamKind::Stdout, b"o"),
        stream(2, StreamKind::Stderr, b"e"),
        stream(2, StreamKind::Data, b"d"),
    ]);
    get_values: vec![1, 9, 0, 0, 0, 15, 0, 0, 13, 0, b'F', b'C', b'G', b'I', b'_', b'M', b'A', b'X', b'_', b'R', b'E', b'Q', b'S']
        => Ok(vec![Record::GetValues { pairs: Bytes::from_static(b"\x0d\x00FCGI_MAX_REQS") }]);
    unknown_type_reply: vec![1, 11, 0, 0, 0, 8, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0]
        => Ok(vec![Record::UnknownType { record_type: 42 }]);
    unknown_management_type: vec![1, 42, 0, 0, 0, 2, 0, 0, 7, 7]
        => Ok(vec![Record::Unknown { request_id: 0, record_type: 42, content: Bytes::from_static(b"\x07\x07") }]);
    version_zero: vec![0, 1, 0, 1, 0, 8, 0, 0]
        => Err(DecodeError::UnsupportedVersion(0));
    version_two: vec![2, 5, 0, 1, 0, 0, 0, 0]
        => Err(DecodeError::UnsupportedVersion(2));
    begin_too_short: vec![1, 1, 0, 1, 0, 4, 0, 0, 0, 1, 0, 0]
        => Err(DecodeError::BadContentLength { record_type: 1, length: 4 });
    end_too_long: vec![1, 3, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        => Err(DecodeError::BadContentLength { record_type: 3, length: 9 });
    begin_with_null_id: vec![1, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        => Err(DecodeError::BadRequestId { record_type: 1, request_id: 0 });
    get_values_with_an_id: vec![1, 9, 0, 3, 0, 0, 0, 0]
        => Err(DecodeError::BadRequestId { record_type: 9, request_id: 3 });
    empty_input: vec![] => Ok(vec![]);
}

#[test]
fn a_long_stream_encodes_as_go_does() {
    // The test vector of Go's net/http/fcgi: 66000 bytes of stdin for request 300.
    let data = vec![b'x'; 66000];
    let mut wire = BytesMut::new();
    encode_stream(&mut wire, StreamKind::Stdin, 300, &data);
    encode_end_of_stream(&mut wire, StreamKind::Stdin, 300);
    assert_eq!(&wire[..8], [1, 5, 1, 44, 0xff, 0xff, 1, 0]);
    let second = 8 + 65535 + 1;
    assert_eq!(&wire[second..second + 8], [1, 5, 1, 44, 0x01, 0xd1, 7, 0]);
    let end = second + 8 + 465 + 7;
    assert_eq!(&wire[end..], [1, 5, 1, 44, 0, 0, 0, 0]);
    let records = decode_all(&wire).unwrap();
    let mut joined = Vec::new();
    for record in &records {
        let Record::Stream { data, .. } = record else {
            panic!("{record:?}")
        };
        joined.extend_from_slice(data);
    }
    assert_eq!(joined, data);
    assert_eq!(records.len(), 3);
}

#[test]
fn pair_lengths_encode_as_the_specification_says() {
    // Go's sizeTests.
    for (len, expected) in [
        (0usize, &[0u8][..]),
        (127, &[0x7f]),
        (128, &[0x80, 0, 0, 0x80]),
        (1000, &[0x80, 0, 0x03, 0xe8]),
        (33_554_431, &[0x81, 0xff, 0xff, 0xff]),
    ] {
        let mut out = BytesMut::new();
        put_length(&mut out, len);
        assert_eq!(&out[..], expected, "{len}");
        assert_eq!(read_length(expected, 0), Some((len, expected.len())));
    }
}

#[test]
fn pairs_of_every_length_combination_round_trip() {
    let short = b"n".to_vec();
    let long = vec![b'v'; 300];
    let mut stream = BytesMut::new();
    for (name, value) in [
        (&short, &short),
        (&short, &long),
        (&long, &short),
        (&long, &long),
    ] {
        encode_pair(&mut stream, name, value);
    }
    encode_pair(&mut stream, b"EMPTY", b"");
    let pairs: Vec<_> = Pairs::new(stream.freeze())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(pairs.len(), 5);
    assert_eq!(pairs[1].1.len(), 300);
    assert_eq!(pairs[2].0.len(), 300);
    assert_eq!(pairs[4], (Bytes::from("EMPTY"), Bytes::new()));
}

#[test]
fn pairs_that_lie_about_their_length_are_an_error_not_a_panic() {
    // Go's TestMalformedParams: lengths of 50 and 50 in a 10-byte stream.
    let stream = Bytes::from_static(&[50, 50, 1, 2, 3, 4, 5, 6, 7, 8]);
    let items: Vec<_> = Pairs::new(stream).collect();
    assert_eq!(items, vec![Err(DecodeError::TruncatedPair)]);
    // A four-byte length cut short, and one that claims 2^31 bytes.
    for stream in [&[0x80, 0, 0][..], &[0xff, 0xff, 0xff, 0xff, 0, 1]] {
        let items: Vec<_> = Pairs::new(Bytes::copy_from_slice(stream)).collect();
        assert_eq!(items, vec![Err(DecodeError::TruncatedPair)]);
    }
}

#[test]
fn params_buffer_joins_pieces_and_keeps_a_single_one_whole() {
    let mut one = BytesMut::new();
    encode_pair(&mut one, b"A", b"1");
    let one = one.freeze();
    let mut buffer = ParamsBuffer::new(100);
    buffer.push(one.clone()).unwrap();
    let pairs: Vec<_> = buffer.finish().collect::<Result<_, _>>().unwrap();
    assert_eq!(pairs, vec![(Bytes::from("A"), Bytes::from("1"))]);
    // A pair split across two records.
    let mut buffer = ParamsBuffer::new(100);
    buffer.push(one.slice(..2)).unwrap();
    buffer.push(one.slice(2..)).unwrap();
    let pairs: Vec<_> = buffer.finish().collect::<Result<_, _>>().unwrap();
    assert_eq!(pairs, vec![(Bytes::from("A"), Bytes::from("1"))]);
    // The limit.
    let mut buffer = ParamsBuffer::new(5);
    buffer.push(Bytes::from_static(b"abc")).unwrap();
    assert_eq!(
        buffer.push(Bytes::from_static(b"def")),
        Err(DecodeError::ParamsTooLarge { limit: 5 })
    );
}

#[test]
fn management_encoders() {
    let mut wire = BytesMut::new();
    encode_get_values(&mut wire, [MAX_CONNS, MPXS_CONNS]);
    encode_get_values_result(&mut wire, [(MAX_REQS, &b"10"[..])]);
    encode_unknown_type(&mut wire, 99);
    let records = decode_all(&wire).unwrap();
    let Record::GetValues { pairs } = &records[0] else {
        panic!()
    };
    let names: Vec<_> = Pairs::new(pairs.clone()).map(|p| p.unwrap().0).collect();
    assert_eq!(names, [MAX_CONNS, MPXS_CONNS]);
    let Record::GetValuesResult { pairs } = &records[1] else {
        panic!()
    };
    let values: Vec<_> = Pairs::new(pairs.clone()).map(|p| p.unwrap()).collect();
    assert_eq!(values, [(Bytes::from_static(MAX_REQS), Bytes::from("10"))]);
    assert_eq!(records[2], Record::UnknownType { record_type: 99 });
    // Every record is padded to a multiple of 8.
    assert_eq!(wire.len() % 8, 0);
}

fn arb_record() -> impl Strategy<Value = Record> {
    let id = 1..=u16::MAX;
    let kind = prop_oneof![
        Just(StreamKind::Params),
        Just(StreamKind::Stdin),
        Just(StreamKind::Stdout),
        Just(StreamKind::Stderr),
        Just(StreamKind::Data),
    ];
    prop_oneof![
        (id.clone(), 0..5u16, any::<bool>()).prop_map(|(request_id, role, keep_conn)| {
            Record::BeginRequest {
                request_id,
                role: Role::from_u16(role),
                keep_conn,
            }
        }),
        id.clone()
            .prop_map(|request_id| Record::AbortRequest { request_id }),
        (id.clone(), any::<u32>(), 0..6u8).prop_map(|(request_id, app_status, status)| {
            Record::EndRequest {
                request_id,
                app_status,
                protocol_status: ProtocolStatus::from_u8(status),
            }
        }),
        (
            id.clone(),
            kind,
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(request_id, kind, data)| Record::Stream {
                request_id,
                kind,
                data: Bytes::from(data),
            }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|p| Record::GetValues {
            pairs: Bytes::from(p)
        }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|p| Record::GetValuesResult {
            pairs: Bytes::from(p)
        }),
        any::<u8>().prop_map(|record_type| Record::UnknownType { record_type }),
        (
            any::<u16>(),
            12..=255u8,
            proptest::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(request_id, record_type, content)| Record::Unknown {
                request_id,
                record_type,
                content: Bytes::from(content),
            }),
    ]
}

proptest! {
    /// A record written in place, after what the buffer held, leaves the buffer as
    /// `encode_stream` would: one record per 65535 bytes, padded, none for no content.
    #[test]
    fn a_record_written_in_place_is_what_encode_stream_makes(
        before in proptest::collection::vec(any::<u8>(), 0..20),
        len in prop_oneof![0usize..40, Just(MAX_CONTENT_LEN), Just(MAX_CONTENT_LEN + 1), Just(2 * MAX_CONTENT_LEN + 9)],
        request_id in any::<u16>(),
    ) {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut in_place = BytesMut::from(&before[..]);
        let record = begin_stream_record(&mut in_place, StreamKind::Stdout, request_id);
        in_place.put_slice(&data);
        prop_assert_eq!(&record.content(&mut in_place)[..], &data[..]);
        record.close(&mut in_place);
        let mut copied = BytesMut::from(&before[..]);
        encode_stream(&mut copied, StreamKind::Stdout, request_id, &data);
        prop_assert_eq!(in_place, copied);
    }

    #[test]
    fn records_round_trip(records in proptest::collection::vec(arb_record(), 0..8)) {
        let mut wire = BytesMut::new();
        for record in &records {
            record.encode(&mut wire);
        }
        prop_assert_eq!(wire.len() % 8, 0, "every record is padded to 8 bytes");
        let decoded = decode_all(&wire).unwrap();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn records_decode_the_same_at_any_split(
        records in proptest::collection::vec(arb_record(), 1..4),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for record in &records {
            record.encode(&mut wire);
        }
        let at = split.index(wire.len() + 1);
        let mut src = BytesMut::from(&wire[..at]);
        let mut decoded = Vec::new();
        while let Some(record) = decode_record(&mut src).unwrap() {
            decoded.push(record);
        }
        src.extend_from_slice(&wire[at..]);
        while let Some(record) = decode_record(&mut src).unwrap() {
            decoded.push(record);
        }
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut src = BytesMut::from(&bytes[..]);
        while let Ok(Some(record)) = decode_record(&mut src) {
            if let Record::Stream { data, kind: StreamKind::Params, .. } = record {
                for pair in Pairs::new(data) {
                    if pair.is_err() {
                        break;
                    }
                }
            }
        }
        for pair in Pairs::new(Bytes::from(bytes)) {
            if pair.is_err() {
                break;
            }
        }
    }

    #[test]
    fn pairs_round_trip(pairs in proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 0..200), proptest::collection::vec(any::<u8>(), 0..200)),
        0..10,
    )) {
        let mut stream = BytesMut::new();
        for (name, value) in &pairs {
            encode_pair(&mut stream, name, value);
        }
        let expected_len: usize = pairs.iter().map(|(n, v)| encoded_pair_len(n, v)).sum();
        prop_assert_eq!(stream.len(), expected_len);
        let decoded: Vec<(Vec<u8>, Vec<u8>)> = Pairs::new(stream.freeze())
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(decoded, pairs);
    }
}
