//! correio-auth
#![forbid(unsafe_code)]
