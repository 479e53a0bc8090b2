//! gateway-servers: the adapters that run any `gateway_core::App`.

pub mod fastcgi;
pub mod uwsgi;
