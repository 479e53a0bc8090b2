//! gateway-servers
