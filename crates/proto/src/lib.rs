//! `correio-proto`: the POP3 protocol core (and LMTP's), with no I/O.
//!
//! Everything here is deterministic: bytes and results go in, bytes, responses and
//! actions come out. There is no tokio, no socket, no file and no clock in this crate,
//! so every behaviour can be tested at the wire level without I/O and fuzzed.
//!
//! - [`framer`]: a bounded line framer (CRLF or bare LF), never grows without bound.
//! - [`command`]: the POP3 command grammar (RFC 1939, 2449, 2595, 5034, 6856).
//! - [`response`]: status lines, RFC 2449/3206 response codes, multi-line bodies.
//! - [`stuff`]: the streaming byte-stuffer (server) and unstuffer (client), and the
//!   exact size rule both sides share.
//! - [`capa`]: the capability model (CAPA body, both sides).
//! - [`sasl`]: SASL line framing for AUTH (RFC 5034), both sides.
//! - [`server`]: the server session state machine.
//! - [`client`]: the client session state machine.
//! - [`lmtp`]: the LMTP session state machine (RFC 2033), its grammar and the strict
//!   SMTP data unstuffer.
#![forbid(unsafe_code)]

pub mod capa;
pub mod client;
pub mod command;
pub mod framer;
#[doc(hidden)]
pub mod fuzzing;
pub mod lmtp;
pub mod response;
pub mod sasl;
pub mod server;
pub mod stuff;

pub use capa::Capabilities;

/// A driver broke the driving contract of a session machine ([`server::ServerSession`],
/// [`lmtp::LmtpSession`]): an event that answers no pending action, a line fed while an
/// action is pending, data outside DATA. The session has queued a final error reply and
/// closed (never a hang); the driver sends it, closes and logs this as a bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractViolation(pub &'static str);

impl std::fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session driver contract violated: {}", self.0)
    }
}

impl std::error::Error for ContractViolation {}
pub use command::{Command, CommandError, MsgNum};
pub use framer::{Line, LineFramer};
pub use response::{RespCode, Status, StatusLine};
pub use stuff::{DotStuffer, DotUnstuffer, LineEnding, MissingTerminator, WireSizer, wire_size};

/// The longest command line a server accepts, CRLF included (RFC 2449 §4).
pub const MAX_COMMAND_LINE: usize = 255;
/// The longest status line a server sends, CRLF included (RFC 2449 §4).
pub const MAX_STATUS_LINE: usize = 512;
/// RFC 1939 §3's limit for one argument (40 octets). RFC 2449 §4 replaced it with the
/// 255-octet command line; the grammar still applies it to LANG tags, which are short.
pub const MAX_ARGUMENT: usize = 40;
