//! `codec::ChunkedDecoder`, fed a byte at a time after the first part.
#![no_main]
use bytes::BytesMut;
use gateway_servers::uwsgi::codec::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut decoder = ChunkedDecoder::new();
    let mut src = BytesMut::from(&data[..split]);
    for &byte in &data[split..] {
        loop {
            match decoder.decode(&mut src) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        src.extend_from_slice(&[byte]);
    }
    while let Ok(Some(_)) = decoder.decode(&mut src) {}
});
