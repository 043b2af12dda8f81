//! Test support: third-party daemons started on loopback for integration tests.
#![forbid(unsafe_code)]
