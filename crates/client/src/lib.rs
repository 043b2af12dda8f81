//! correio-client
#![forbid(unsafe_code)]
