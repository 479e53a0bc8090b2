//! gateway-middleware
