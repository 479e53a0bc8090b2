//! gateway-testkit
