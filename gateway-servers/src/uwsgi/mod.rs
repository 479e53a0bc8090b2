//! The uwsgi protocol: the packet codec (sans-I/O, both directions) and the server.

pub mod codec;
pub mod server;
