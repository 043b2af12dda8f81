//! `correio-client`: an async POP3 client library, and the fetcher built on it.
//!
//! - [`Client`] drives [`correio_proto::client::ClientSession`] over any tokio
//!   `AsyncRead + AsyncWrite`: greeting, CAPA, STLS, USER/PASS, APOP, SASL, STAT, LIST,
//!   UIDL, RETR/TOP streamed into a writer, DELE, RSET, NOOP, QUIT, and pipelined
//!   RETR/DELE within a bounded [`Window`].
//! - [`tls`]: rustls connectors for the web PKI, an extra CA file, or a pinned
//!   certificate fingerprint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use correio_client::{Client, tls};
//! let connector = tls::connector(&tls::Trust::System)?;
//! let tcp = tokio::net::TcpStream::connect(("pop.example.org", 995)).await?;
//! let mut client = tls_client(tcp, &connector).await?;
//! client.login("alice", b"secret").await?;
//! for (msg, uid) in client.uidl().await? {
//!     let mut file = tokio::fs::File::create(format!("{uid}.eml")).await?;
//!     client.retr(msg, &mut file).await?;
//! }
//! client.quit().await?;
//! # async fn tls_client(tcp: tokio::net::TcpStream, c: &tokio_rustls::TlsConnector)
//! #   -> Result<Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, correio_client::Error> {
//! #   correio_client::connect_tls(tcp, c, "pop.example.org", correio_client::DEFAULT_TIMEOUT).await }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod conn;
pub mod discover;
pub mod discover_mx;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod oauth;
pub mod probe;
pub mod sasl;
pub mod tls;

pub use conn::{
    BodySink, Client, DEFAULT_TIMEOUT, Error, Request, TraceFn, Window, connect_tls,
    mask_command_line,
};

/// Parses a duration such as `5m` or `90s` (for command lines and config files).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Formats a duration for people (`5m 30s`).
pub fn format_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}
