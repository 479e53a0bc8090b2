//! `codec::Pairs` and `codec::ParamsBuffer`: a params stream in pieces, within a limit.
#![no_main]
use bytes::Bytes;
use gateway_servers::fastcgi::codec::ParamsBuffer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let mut buffer = ParamsBuffer::new(1 << 16);
    for piece in data.chunks(7) {
        if buffer.push(data.slice_ref(piece)).is_err() {
            return;
        }
    }
    for pair in buffer.finish() {
        if pair.is_err() {
            break;
        }
    }
});
