//! `codec::decode_record`, over a stream of records fed in two parts.
#![no_main]
use bytes::BytesMut;
use gateway_servers::fastcgi::codec::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut src = BytesMut::from(&data[..split]);
    for part in [&data[split..], &[][..]] {
        while let Ok(Some(_record)) = decode_record(&mut src) {}
        src.extend_from_slice(part);
    }
});
