//! The probe's connection: raw lines, not the client state machine, because the probe
//! must see exactly what the server sent (line ends, case, length, extra data).
//!
//! Every read is bounded three ways: a timeout per read, a maximum line length and a
//! maximum total for a multi-line response. Nothing the server sends can make it
//! wait forever or hold more than those bounds.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Any stream the probe talks over (TCP, TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The longest status or listing line read (far above RFC 2449's 512, so that an
/// over-long line can be reported rather than cut).
pub const MAX_LINE: usize = 8192;

/// Why a read gave up.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// Nothing (more) within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Eof,
    /// A line or response passed its bound.
    #[error("response longer than {0} octets")]
    TooLong(usize),
}

/// A connection with a read buffer.
#[derive(Debug)]
pub struct Wire<S> {
    io: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps a connected stream.
    pub fn new(io: S, timeout: Duration) -> Self {
        Wire {
            io,
            buf: Vec::new(),
            timeout,
        }
    }

    /// The read timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self, wait: Duration) -> Result<usize, WireError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(wait, self.io.read(&mut chunk))
            .await
            .map_err(|_| WireError::Timeout(wait))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One line, line end included (at most `max` octets). At end of stream, what
    /// is buffered comes back without a line end, then [`WireError::Eof`].
    pub async fn line(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i + 1 > max {
                    return Err(WireError::TooLong(max));
                }
                return Ok(self.buf.drain(..=i).collect());
            }
            if self.buf.len() > max {
                return Err(WireError::TooLong(max));
            }
            if self.fill(self.timeout).await? == 0 {
                if self.buf.is_empty() {
                    return Err(WireError::Eof);
                }
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    /// A multi-line body after its status line: everything up to and including the
    /// terminating `.` line (CRLF or bare LF), at most `max` octets.
    pub async fn body(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        loop {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                return Err(WireError::TooLong(max));
            }
            let line = match self.line(room).await {
                Ok(l) => l,
                Err(WireError::TooLong(_)) => return Err(WireError::TooLong(max)),
                Err(e) => return Err(e),
            };
            let end = line.last() == Some(&b'\n');
            let done = line == b".\r\n" || line == b".\n";
            out.extend_from_slice(&line);
            if done {
                return Ok(out);
            }
            if !end {
                return Err(WireError::Eof);
            }
        }
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let t = self.timeout;
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(t, write)
            .await
            .map_err(|_| WireError::Timeout(t))??;
        Ok(())
    }

    /// Sends a command line (CRLF added).
    pub async fn command(&mut self, line: &str) -> Result<(), WireError> {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.send(&b).await
    }

    /// Sends a command and reads the first line of its answer; also returns the time
    /// from sending to the answer.
    pub async fn ask(&mut self, line: &str) -> Result<(Vec<u8>, Duration), WireError> {
        self.command(line).await?;
        let t0 = Instant::now();
        let answer = self.line(MAX_LINE).await?;
        Ok((answer, t0.elapsed()))
    }

    /// Waits up to `wait` for the server to send anything unasked; returns how many
    /// octets are buffered then (they stay buffered).
    pub async fn unsolicited(&mut self, wait: Duration) -> Result<usize, WireError> {
        let deadline = Instant::now() + wait;
        while self.buf.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.fill(left).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(WireError::Timeout(_)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.buf.len())
    }

    /// Whether the server closes the connection within `wait` (data it sends first is
    /// read and dropped, up to `MAX_LINE`).
    pub async fn closes_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            self.buf.clear();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.fill(left).await {
                Ok(0) => return true,
                Ok(_) => {}
                Err(WireError::Timeout(_)) => return false,
                Err(_) => return true,
            }
        }
    }

    /// The buffered octets not yet read as lines.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The stream and what is still buffered from it.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.io, self.buf)
    }

    /// Closes the write side (ignoring errors: the session is over either way).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_and_bodies_are_bounded() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut w = Wire::new(client, Duration::from_millis(200));
        server
            .write_all(b"+OK hi\r\nline\r\n..x\r\n.\r\nextra")
            .await
            .unwrap();
        assert_eq!(w.line(MAX_LINE).await.unwrap(), b"+OK hi\r\n");
        assert_eq!(w.body(1000).await.unwrap(), b"line\r\n..x\r\n.\r\n");
        assert_eq!(w.buffered(), b"extra");
        assert!(matches!(w.line(3).await, Err(WireError::TooLong(3))));
        assert!(matches!(w.line(MAX_LINE).await, Err(WireError::Timeout(_))));
        server.write_all(b"\n").await.unwrap();
        assert_eq!(w.line(MAX_LINE).await.unwrap(), b"extra\n");
        server.write_all(b"a\r\nb\r\nc\r\n").await.unwrap();
        assert!(matches!(w.body(5).await, Err(WireError::TooLong(5))));
        drop(server);
        assert!(w.closes_within(Duration::from_secs(1)).await);
    }
}
