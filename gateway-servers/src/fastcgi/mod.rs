//! FastCGI 1.0: the record codec (sans-I/O, both directions), the application side of a
//! connection ([`protocol`], also sans-I/O), and the server.
//!
//! The server honours the environment variable `FCGI_WEB_SERVER_ADDRS` (comma-separated IPv4
//! or IPv6 addresses): when it is set, TCP connections from any other address are closed at
//! once ([`web_server_addrs`]).

pub mod codec;
pub mod protocol;
pub mod server;
pub mod web_server_addrs;
