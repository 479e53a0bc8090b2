//! `proxy_protocol::parse`: any first bytes of a connection, and every prefix of them (a
//! header arrives in pieces), parse without panicking, and a header never claims more bytes
//! than were sent.
#![no_main]
use gateway_servers::proxy_protocol::{Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for end in 0..=data.len().min(300) {
        if let Parsed::Header { len, .. } = parse(&data[..end]) {
            assert!(len <= end);
        }
    }
    if let Parsed::Header { len, .. } = parse(data) {
        assert!(len <= data.len());
    }
});
