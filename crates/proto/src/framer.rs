//! A bounded line framer: push bytes in, pop complete lines out.
//!
//! Lines end with CRLF or a bare LF; the line end is not part of the yielded line
//! (a CR just before the LF is removed, any other CR stays and is the parser's to
//! refuse). A line longer than the limit is never buffered: the framer reports
//! [`Line::TooLong`] as soon as the limit is passed, then drops bytes up to and
//! including the next LF. The buffer therefore never holds more than what one
//! [`LineFramer::push`] added plus one line's limit.
//!
//! Driving contract: push what the socket gave, then call [`LineFramer::next_line`]
//! until it returns `None` ("need more bytes" is not an error), then read again.

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without CRLF/LF.
    Complete(&'a [u8]),
    /// A line that passed the limit. Reported once per such line; the rest of that line
    /// is discarded.
    TooLong,
}

/// The framer. See the module docs for the contract.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as lines.
    start: usize,
    /// How far past `start` the search for LF has already looked.
    scanned: usize,
    /// The limit for one line, line end included.
    max_line: usize,
    /// In the middle of an overlong line: drop until LF.
    discarding: bool,
}

impl LineFramer {
    /// A framer whose lines may be at most `max_line` octets, line end included
    /// (255 for POP3 commands on the server side).
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line: max_line.max(2),
            discarding: false,
        }
    }

    /// The line limit, line end included.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Adds bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, or `None` when more bytes are needed.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            let pending = &self.buf[self.start..];
            let from = self.scanned - self.start;
            let found = memchr::memchr(b'\n', &pending[from..]);
            if self.discarding {
                match found {
                    Some(i) => {
                        self.start += from + i + 1;
                        self.scanned = self.start;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        // Drop everything: none of it belongs to a line we will use.
                        self.buf.clear();
                        self.start = 0;
                        self.scanned = 0;
                        return None;
                    }
                }
            }
            return match found {
                Some(i) if from + i < self.max_line => {
                    let line_start = self.start;
                    let lf = self.start + from + i;
                    self.start = lf + 1;
                    self.scanned = self.start;
                    let mut end = lf;
                    if end > line_start && self.buf[end - 1] == b'\r' {
                        end -= 1;
                    }
                    Some(Line::Complete(&self.buf[line_start..end]))
                }
                Some(i) => {
                    // Complete but too long: skip it whole.
                    self.start += from + i + 1;
                    self.scanned = self.start;
                    Some(Line::TooLong)
                }
                None if pending.len() >= self.max_line => {
                    self.discarding = true;
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                    Some(Line::TooLong)
                }
                None => {
                    self.scanned = self.buf.len();
                    None
                }
            };
        }
    }

    /// Bytes received but not yet handed out as lines.
    pub fn buffered(&self) -> &[u8] {
        if self.discarding {
            &[]
        } else {
            &self.buf[self.start..]
        }
    }

    /// Forgets everything buffered. STLS needs this: bytes the client sent in
    /// cleartext after the STLS line must never be read as commands under TLS.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.discarding = false;
    }

    /// Changes the line limit (a client expecting SASL exchanges or long responses).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut LineFramer) -> Vec<Option<Vec<u8>>> {
        let mut v = Vec::new();
        while let Some(l) = f.next_line() {
            v.push(match l {
                Line::Complete(b) => Some(b.to_vec()),
                Line::TooLong => None,
            });
        }
        v
    }

    #[test]
    fn crlf_and_bare_lf() {
        let mut f = LineFramer::new(255);
        f.push(b"NOOP\r\nSTAT\nLI");
        assert_eq!(
            lines(&mut f),
            vec![Some(b"NOOP".to_vec()), Some(b"STAT".to_vec())]
        );
        f.push(b"ST\r\n");
        assert_eq!(lines(&mut f), vec![Some(b"LIST".to_vec())]);
    }

    #[test]
    fn overlong_is_reported_and_skipped() {
        let mut f = LineFramer::new(10);
        f.push(b"0123456789ABCDEF");
        assert_eq!(lines(&mut f), vec![None]);
        f.push(&[b'x'; 1000]);
        assert_eq!(lines(&mut f), vec![]);
        assert!(f.buf.len() <= 10);
        f.push(b"yy\r\nNOOP\r\n");
        assert_eq!(lines(&mut f), vec![Some(b"NOOP".to_vec())]);
    }

    #[test]
    fn exactly_at_limit() {
        // 8 bytes + CRLF = 10: allowed. 9 + CRLF = 11: too long.
        let mut f = LineFramer::new(10);
        f.push(b"12345678\r\n123456789\r\nok\r\n");
        assert_eq!(
            lines(&mut f),
            vec![Some(b"12345678".to_vec()), None, Some(b"ok".to_vec())]
        );
    }
}
