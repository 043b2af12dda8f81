//! One benchmark connection: a byte stream (cleartext or TLS) with a fixed-size read
//! buffer and a reusable output buffer.
//!
//! The reader never copies a response anywhere: status lines are looked at in place
//! and multi-line bodies are only scanned for their terminator (`CRLF.CRLF`, which
//! byte-stuffing guarantees cannot occur inside a body) with a SIMD substring search,
//! then dropped. So a session costs one buffer, allocated once, whatever it downloads.
//! Every read and write is bounded by the connection's I/O timeout.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::BenchError;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Cleartext POP3.
    None,
    /// Cleartext, then `STLS` and a handshake (RFC 2595).
    Starttls,
    /// TLS from the first byte (POP3S).
    Implicit,
}

impl TlsMode {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// Cleartext, STLS or implicit TLS.
    pub tls: TlsMode,
    /// The TLS client (needed unless `tls` is [`TlsMode::None`]).
    pub connector: Option<TlsConnector>,
    /// The name the certificate is checked against.
    pub server_name: ServerName<'static>,
    /// Bound on every single read, write and connect.
    pub io_timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("server_name", &self.server_name)
            .field("io_timeout", &self.io_timeout)
            .finish_non_exhaustive()
    }
}

/// The byte stream under a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only during the STLS handshake.
    Upgrading,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// A connected POP3 session (greeting read).
pub(crate) struct Pop3 {
    stream: Stream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    io_timeout: Duration,
}

/// Longest status line accepted (RFC 1939 allows 512 octets with CRLF; some servers
/// say more in `-ERR` texts, so be lenient but bounded).
const MAX_STATUS_LINE: usize = 1024;

impl Pop3 {
    /// Connects, does the implicit-TLS handshake or STLS as the target asks, and reads
    /// the greeting. `buf_size` is the read buffer (at least 2 KiB).
    pub(crate) async fn connect(target: &Target, buf_size: usize) -> Result<Pop3, BenchError> {
        let t = target.io_timeout;
        let tcp = timeout(t, TcpStream::connect(target.addr))
            .await
            .map_err(|_| BenchError::Timeout("connect"))?
            .map_err(|e| BenchError::Io("connect", e))?;
        let _ = tcp.set_nodelay(true);
        let stream = match target.tls {
            TlsMode::Implicit => Stream::Tls(Box::new(handshake(target, tcp).await?)),
            _ => Stream::Plain(tcp),
        };
        let mut p = Pop3 {
            stream,
            buf: vec![0u8; buf_size.max(2 * MAX_STATUS_LINE)].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(256),
            io_timeout: t,
        };
        p.expect_ok("greeting").await?;
        if target.tls == TlsMode::Starttls {
            p.queue(format_args!("STLS"));
            p.send().await?;
            p.expect_ok("STLS").await?;
            if p.end != p.start {
                return Err(BenchError::Protocol(
                    "server sent bytes after the STLS reply".into(),
                ));
            }
            let Stream::Plain(tcp) = std::mem::replace(&mut p.stream, Stream::Upgrading) else {
                return Err(BenchError::Protocol("STLS on a TLS stream".into()));
            };
            p.stream = Stream::Tls(Box::new(handshake(target, tcp).await?));
        }
        Ok(p)
    }

    /// Logs in with USER/PASS (both commands in one write when `pipelined`).
    pub(crate) async fn login(
        &mut self,
        user: &str,
        pass: &str,
        pipelined: bool,
    ) -> Result<(), BenchError> {
        if pipelined {
            self.queue(format_args!("USER {user}"));
            self.queue(format_args!("PASS {pass}"));
            self.send().await?;
            self.expect_ok("USER").await?;
            self.expect_ok("PASS").await
        } else {
            self.queue(format_args!("USER {user}"));
            self.send().await?;
            self.expect_ok("USER").await?;
            self.queue(format_args!("PASS {pass}"));
            self.send().await?;
            self.expect_ok("PASS").await
        }
    }

    /// Appends one command line (CRLF added) to the output buffer.
    pub(crate) fn queue(&mut self, cmd: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.out.write_fmt(cmd);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends what is queued.
    pub(crate) async fn send(&mut self) -> Result<(), BenchError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let r = timeout(self.io_timeout, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await;
        self.out = out;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BenchError::Io("write", e)),
            Err(_) => Err(BenchError::Timeout("write")),
        }
    }

    async fn fill(&mut self) -> Result<(), BenchError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(BenchError::Protocol(
                "line longer than the read buffer".into(),
            ));
        }
        let n = timeout(self.io_timeout, self.stream.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| BenchError::Timeout("read"))?
            .map_err(|e| BenchError::Io("read", e))?;
        if n == 0 {
            return Err(BenchError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Reads one status line; returns it without CRLF.
    pub(crate) async fn status_line(&mut self) -> Result<&[u8], BenchError> {
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.start + scanned..self.end];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let line_start = self.start;
                let line_end = self.start + scanned + i;
                self.start = line_end + 1;
                let mut line = &self.buf[line_start..line_end];
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                return Ok(line);
            }
            scanned = self.end - self.start;
            if scanned > MAX_STATUS_LINE {
                return Err(BenchError::Protocol("status line too long".into()));
            }
            self.fill().await?;
        }
    }

    /// Reads a status line and fails unless it is `+OK`.
    pub(crate) async fn expect_ok(&mut self, what: &'static str) -> Result<(), BenchError> {
        let line = self.status_line().await?;
        if line.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(BenchError::Refused(
                what,
                String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
            ))
        }
    }

    /// STAT: the message count and octets.
    pub(crate) async fn stat(&mut self) -> Result<(u64, u64), BenchError> {
        self.queue(format_args!("STAT"));
        self.send().await?;
        let line = self.status_line().await?;
        let text = std::str::from_utf8(line).unwrap_or("");
        let mut it = text.split_ascii_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some("+OK"), Some(n), Some(s)) => match (n.parse(), s.parse()) {
                (Ok(n), Ok(s)) => Ok((n, s)),
                _ => Err(BenchError::Protocol(format!("bad STAT reply {text:?}"))),
            },
            _ => Err(BenchError::Refused(
                "STAT",
                text.chars().take(200).collect::<String>(),
            )),
        }
    }

    /// Reads a multi-line reply (status line included); returns the body's bytes as
    /// sent (still stuffed, CRLFs included, without the terminating `.` line).
    pub(crate) async fn multiline(&mut self, what: &'static str) -> Result<u64, BenchError> {
        self.expect_ok(what).await?;
        self.body().await
    }

    async fn body(&mut self) -> Result<u64, BenchError> {
        let mut end = BodyEnd::new();
        loop {
            match end.scan(&self.buf[self.start..self.end]) {
                Scan::Done { consumed, body } => {
                    self.start += consumed;
                    return Ok(body);
                }
                Scan::More { consumed } => {
                    self.start += consumed;
                    self.fill().await?;
                }
            }
        }
    }

    /// Sends QUIT and reads its reply.
    pub(crate) async fn quit(mut self) -> Result<(), BenchError> {
        self.queue(format_args!("QUIT"));
        self.send().await?;
        self.expect_ok("QUIT").await?;
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        Ok(())
    }
}

/// Finds the end of a multi-line reply's body (sans-IO): fed the unconsumed bytes
/// after the status line again and again (each time with more appended), it says how
/// many it is done with. The body ends at the first `CRLF.CRLF` (or at `.CRLF` right at
/// its start): byte-stuffing guarantees that sequence cannot occur inside a body, so
/// one substring search finds it; the last 4 bytes are kept back in case the
/// terminator is split across reads.
#[derive(Debug)]
pub(crate) struct BodyEnd {
    started: bool,
    bytes: u64,
    finder: memmem::Finder<'static>,
}

/// What [`BodyEnd::scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The body ended: `consumed` bytes (terminator included) are done with; the body
    /// (stuffed, CRLFs included, terminator excluded) had `body` bytes in all.
    Done { consumed: usize, body: u64 },
    /// Not yet: `consumed` bytes are done with, the rest must be offered again with
    /// more bytes after it.
    More { consumed: usize },
}

impl BodyEnd {
    pub(crate) fn new() -> BodyEnd {
        BodyEnd {
            started: false,
            bytes: 0,
            finder: memmem::Finder::new(b"\r\n.\r\n"),
        }
    }

    pub(crate) fn scan(&mut self, avail: &[u8]) -> Scan {
        if !self.started {
            // An empty body is the terminator right at the start.
            if avail.len() < 3 && b".\r\n".starts_with(avail) {
                return Scan::More { consumed: 0 };
            }
            self.started = true;
            if avail.starts_with(b".\r\n") {
                return Scan::Done {
                    consumed: 3,
                    body: 0,
                };
            }
        }
        if let Some(i) = self.finder.find(avail) {
            self.bytes += (i + 2) as u64;
            return Scan::Done {
                consumed: i + 5,
                body: self.bytes,
            };
        }
        let drop = avail.len().saturating_sub(4);
        self.bytes += drop as u64;
        Scan::More { consumed: drop }
    }
}

async fn handshake(target: &Target, tcp: TcpStream) -> Result<TlsStream<TcpStream>, BenchError> {
    let Some(connector) = target.connector.as_ref() else {
        return Err(BenchError::Protocol(
            "TLS requested without a TLS client".into(),
        ));
    };
    timeout(
        target.io_timeout,
        connector.connect(target.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| BenchError::Timeout("TLS handshake"))?
    .map_err(|e| BenchError::Io("TLS handshake", e))
}

/// A TLS client that accepts any certificate but still checks the handshake
/// signatures (for benchmarking servers with throwaway self-signed certificates).
pub fn insecure_connector() -> Result<TlsConnector, rustls::Error> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(algorithms)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
