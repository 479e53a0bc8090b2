//! `codec::decode_packet` and the vars of what it decodes.
#![no_main]
use bytes::BytesMut;
use gateway_servers::uwsgi::codec::{MAX_VARS_SIZE, decode_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut src = BytesMut::from(data);
    while let Ok(Some(packet)) = decode_packet(&mut src, MAX_VARS_SIZE) {
        for var in packet.vars() {
            if var.is_err() {
                break;
            }
        }
    }
});
