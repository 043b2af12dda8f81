//! `correio-server`: the tokio drivers for the POP3 server and the LMTP listener.
#![forbid(unsafe_code)]

pub mod lmtp;
