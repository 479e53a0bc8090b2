//! FastCGI 1.0: the record codec (sans-I/O, both directions), the application side of a
//! connection ([`protocol`], also sans-I/O), and the server.

pub mod codec;
pub mod protocol;
pub mod server;
