//! `cgi::parse_response_head`: the head of a response as an application writes it (CGI style
//! or with an HTTP status line), read by the remote backends and the protocol clients.
#![no_main]
use gateway_servers::cgi::parse_response_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, len))) = parse_response_head(data) {
        assert!(len <= data.len());
    }
});
