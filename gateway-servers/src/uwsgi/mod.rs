//! The uwsgi protocol: the packet codec (sans-I/O, both directions).
//!
//! The server (WSGI requests, ping, raw HTTP responses) is built on [`codec`].

pub mod codec;
