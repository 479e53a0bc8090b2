//! Runnable example programs.
