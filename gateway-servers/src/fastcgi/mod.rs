//! FastCGI 1.0: the record codec (sans-I/O, both directions) and the application side of a
//! connection ([`protocol`]), also sans-I/O.

pub mod codec;
pub mod protocol;
