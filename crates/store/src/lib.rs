//! correio-store
#![forbid(unsafe_code)]
