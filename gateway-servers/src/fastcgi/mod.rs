//! FastCGI 1.0: the record codec (sans-I/O, both directions).
//!
//! The server (all three roles, multiplexing, management records) is built on [`codec`].

pub mod codec;
