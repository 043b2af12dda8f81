//! A minimal LMTP client (RFC 2033) for the `mixed` scenario: one connection per
//! worker, one transaction per message, one recipient per transaction.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

use crate::BenchError;

/// An LMTP connection after LHLO.
pub(crate) struct Lmtp {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    line: String,
    io_timeout: Duration,
    out: Vec<u8>,
}

/// Longest reply line accepted.
const MAX_REPLY_LINE: usize = 1024;

impl Lmtp {
    pub(crate) async fn connect(
        addr: SocketAddr,
        io_timeout: Duration,
    ) -> Result<Lmtp, BenchError> {
        let tcp = timeout(io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Timeout("LMTP connect"))?
            .map_err(|e| BenchError::Io("LMTP connect", e))?;
        let _ = tcp.set_nodelay(true);
        let (r, w) = tcp.into_split();
        let mut l = Lmtp {
            r: BufReader::new(r),
            w,
            line: String::new(),
            io_timeout,
            out: Vec::with_capacity(512),
        };
        l.reply("LMTP greeting", 220).await?;
        l.send(b"LHLO bench.localhost\r\n").await?;
        l.reply("LHLO", 250).await?;
        Ok(l)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        timeout(self.io_timeout, self.w.write_all(bytes))
            .await
            .map_err(|_| BenchError::Timeout("LMTP write"))?
            .map_err(|e| BenchError::Io("LMTP write", e))
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    async fn reply(&mut self, what: &'static str, want: u16) -> Result<(), BenchError> {
        loop {
            self.line.clear();
            let n = timeout(
                self.io_timeout,
                (&mut self.r)
                    .take(MAX_REPLY_LINE as u64)
                    .read_line(&mut self.line),
            )
            .await
            .map_err(|_| BenchError::Timeout("LMTP read"))?
            .map_err(|e| BenchError::Io("LMTP read", e))?;
            if n == 0 {
                return Err(BenchError::Closed);
            }
            let l = self.line.as_bytes();
            if l.len() < 4 || !l[..3].iter().all(u8::is_ascii_digit) {
                return Err(BenchError::Protocol(format!(
                    "bad LMTP reply {:?}",
                    self.line.trim_end()
                )));
            }
            if l[3] == b'-' {
                continue;
            }
            let code =
                u16::from(l[0] - b'0') * 100 + u16::from(l[1] - b'0') * 10 + u16::from(l[2] - b'0');
            return if code == want {
                Ok(())
            } else {
                Err(BenchError::Refused(what, self.line.trim_end().to_owned()))
            };
        }
    }

    /// Delivers `message` (already CRLF and dot-stuffed, ending in CRLF) to `rcpt`:
    /// MAIL, RCPT and DATA pipelined (the server announces PIPELINING), then the data.
    pub(crate) async fn deliver(&mut self, rcpt: &str, message: &[u8]) -> Result<(), BenchError> {
        self.out.clear();
        self.out
            .extend_from_slice(b"MAIL FROM:<bench@localhost>\r\nRCPT TO:<");
        self.out.extend_from_slice(rcpt.as_bytes());
        self.out.extend_from_slice(b">\r\nDATA\r\n");
        let out = std::mem::take(&mut self.out);
        let r = self.send(&out).await;
        self.out = out;
        r?;
        self.reply("MAIL", 250).await?;
        self.reply("RCPT", 250).await?;
        self.reply("DATA", 354).await?;
        self.send(message).await?;
        self.send(b".\r\n").await?;
        self.reply("delivery", 250).await
    }
}

/// A message of about `size` bytes: a header, then 76-character lines, CRLF, never a
/// line starting with a dot (so it needs no stuffing).
pub(crate) fn make_message(size: usize, tag: &str) -> Vec<u8> {
    let mut m = format!(
        "From: bench@localhost\r\nTo: user@localhost\r\nSubject: correio bench {tag}\r\nMessage-ID: <{tag}@bench.localhost>\r\n\r\n"
    )
    .into_bytes();
    let line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-the-quick-fox\r\n";
    loop {
        m.extend_from_slice(line);
        if m.len() >= size {
            break;
        }
    }
    m
}
