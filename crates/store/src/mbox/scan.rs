//! The mbox parser: splits an mbox into messages without loading it into memory, and
//! computes for each message its byte ranges, its exact wire size and its content
//! digest (the UIDL source).
//!
//! Message boundaries: a line starting with `From ` (the From_ line) starts a message;
//! the blank line just before a From_ line (or before end of file) is the separator and
//! belongs to no message. Content (what POP3 serves) runs from after the From_ line to
//! the separator; body lines `>+From ` are unquoted by one `>` (mboxrd; mboxo files read
//! the same way). When a header has `Content-Length: N` and the N octets after the
//! header end exactly at end of file or before a (blank line and a) From_ line, the body
//! is taken as those N octets verbatim (mboxcl2: no quoting, `From ` lines allowed
//! inside). Bytes before the first From_ line (not an mbox message) are kept as a
//! preamble and preserved by rewrites.
//!
//! Digest: SHA-256 over the From_ line and the stored content lines, leaving out header
//! fields that mail programs rewrite in place (`Status`, `X-Status`, `X-Keywords`,
//! `X-UID`, `X-IMAP`, `X-IMAPbase`, `Content-Length`, `Lines`, `X-Mozilla-Status*`), so
//! a client reading the mbox and marking messages read does not change their UIDLs.
//!
//! Memory: a fixed-size window; lines of any length are processed in pieces.

use std::io;

use sha2::{Digest, Sha256};

/// Random-access byte source: a file (`pread`) or a byte slice (tests, fuzzing).
pub(crate) trait Source {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl Source for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= self.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// How a message's content is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// mboxrd/mboxo: unquote `>+From ` lines when reading.
    Quoted,
    /// mboxcl2: Content-Length body, verbatim.
    Verbatim,
}

/// One message of an mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedMessage {
    /// Offset of the From_ line.
    pub(crate) from_start: u64,
    /// Offset just after the From_ line.
    pub(crate) content_start: u64,
    /// Offset where the content ends (the separator, or the next From_ line, or EOF).
    pub(crate) content_end: u64,
    /// Offset where the next message (or EOF) starts: the raw extent is
    /// `from_start..next_start`, separator included.
    pub(crate) next_start: u64,
    pub(crate) encoding: Encoding,
    /// The POP3 wire size of the (unquoted) content.
    pub(crate) wire_size: u64,
    pub(crate) digest: [u8; 32],
    /// The first bytes of the From_ line (up to 128), to recognise the message later.
    pub(crate) from_line_head: Vec<u8>,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Length of the bytes before the first From_ line.
    pub(crate) preamble_len: u64,
    pub(crate) messages: Vec<ScannedMessage>,
    /// The length scanned (the file length at scan time).
    pub(crate) len: u64,
}

const WINDOW: usize = 64 * 1024;
/// Bytes of a line looked at to classify it (From_ line, header name).
const PREFIX: usize = 64;
const VOLATILE_HEADERS: &[&[u8]] = &[
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"x-imap:",
    b"x-imapbase:",
    b"content-length:",
    b"lines:",
    b"x-mozilla-status:",
    b"x-mozilla-status2:",
];

struct Window<'a, S: Source> {
    src: &'a S,
    buf: Vec<u8>,
    /// File offset of buf[0].
    base: u64,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'a, S: Source> Window<'a, S> {
    fn new(src: &'a S, at: u64) -> Self {
        Window {
            src,
            buf: vec![0; WINDOW],
            base: at,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn pos(&self) -> u64 {
        self.base + self.start as u64
    }

    fn seek(&mut self, at: u64) {
        self.base = at;
        self.start = 0;
        self.end = 0;
        self.eof = false;
    }

    /// Makes at least `n` bytes available unless EOF comes first.
    fn ensure(&mut self, n: usize) -> io::Result<()> {
        if self.end - self.start >= n || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < n.min(self.buf.len()) && !self.eof {
            let got = self
                .src
                .read_at(&mut self.buf[self.end..], self.base + self.end as u64);
            match got {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// Line classification results collected while a line is consumed.
struct LineInfo {
    start: u64,
    len: u64,
    ends_lf: bool,
    ends_crlf: bool,
    /// The line matches `>+From ` (unquoted one `>` shorter).
    quoted_from: bool,
}

/// Consumes one line (up to and including LF, or to EOF), passing its bytes to `f` in
/// pieces. Returns None at EOF.
fn next_line<S: Source>(
    w: &mut Window<'_, S>,
    limit: u64,
    mut f: impl FnMut(&[u8]),
) -> io::Result<Option<LineInfo>> {
    w.ensure(PREFIX)?;
    let start = w.pos();
    if w.avail().is_empty() || start >= limit {
        return Ok(None);
    }
    let mut len = 0u64;
    let mut last2 = [0u8; 2];
    let mut gts = 0u64;
    let mut matched = 0usize;
    let mut decided: Option<bool> = None;
    loop {
        w.ensure(1)?;
        let room = usize::try_from(limit - w.pos()).unwrap_or(usize::MAX);
        let avail = w.avail();
        if avail.is_empty() || room == 0 {
            break;
        }
        let avail = &avail[..avail.len().min(room)];
        let (piece, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        for &b in piece {
            if decided.is_none() {
                if matched == 0 && b == b'>' {
                    gts += 1;
                } else if b == b"From "[matched] {
                    matched += 1;
                    if matched == 5 {
                        decided = Some(gts > 0);
                    }
                } else {
                    decided = Some(false);
                }
            }
            last2 = [last2[1], b];
        }
        f(piece);
        len += piece.len() as u64;
        let n = piece.len();
        w.start += n;
        if done {
            break;
        }
    }
    let ends_lf = last2[1] == b'\n';
    Ok(Some(LineInfo {
        start,
        len,
        ends_lf,
        ends_crlf: ends_lf && last2[0] == b'\r' && len >= 2,
        quoted_from: decided == Some(true),
    }))
}

fn line_wire(info: &LineInfo, unquote: bool) -> u64 {
    let mut n = info.len;
    if unquote && info.quoted_from {
        n -= 1;
    }
    if !info.ends_lf {
        n + 2
    } else if info.ends_crlf {
        n
    } else {
        n + 1
    }
}

fn is_volatile(prefix: &[u8]) -> bool {
    VOLATILE_HEADERS
        .iter()
        .any(|h| prefix.len() >= h.len() && prefix[..h.len()].eq_ignore_ascii_case(h))
}

fn content_length(prefix: &[u8]) -> Option<u64> {
    const CL: &[u8] = b"content-length:";
    if prefix.len() < CL.len() || !prefix[..CL.len()].eq_ignore_ascii_case(CL) {
        return None;
    }
    let v = std::str::from_utf8(&prefix[CL.len()..]).ok()?;
    v.trim().parse().ok()
}

/// Whether a Content-Length body ending at `end` is consistent with the file: it ends
/// at a line start and is followed by EOF, or by an optional blank line and a From_
/// line (or EOF). Returns where the next message starts and the separator length.
fn check_cl_end<S: Source>(
    src: &S,
    body_start: u64,
    end: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
    if end > file_len {
        return Ok(None);
    }
    if end > body_start {
        let mut b = [0u8; 1];
        if src.read_at(&mut b, end - 1)? != 1 || b[0] != b'\n' {
            return Ok(None);
        }
    }
    if end == file_len {
        return Ok(Some(end));
    }
    let mut six = [0u8; 6];
    let n = src.read_at(&mut six, end)?;
    let six = &six[..n];
    if six.starts_with(b"From ") {
        return Ok(Some(end));
    }
    if six == b"\n" && end + 1 == file_len {
        return Ok(Some(end + 1));
    }
    if six.starts_with(b"\nFrom ") {
        return Ok(Some(end + 1));
    }
    Ok(None)
}

struct Current {
    msg: ScannedMessage,
    hasher: Sha256,
    in_header: bool,
    skipping_field: bool,
    content_length: Option<u64>,
    /// Header lines counted one octet shorter for `>From ` unquoting; given back if
    /// the message turns out to be mboxcl2 (verbatim, no unquoting at all).
    header_unquoted: u64,
    /// A blank line not yet counted: (offset, CRLF?). It is the separator if a From_
    /// line or EOF follows, else content.
    pending_blank: Option<(u64, bool)>,
}

impl Current {
    fn flush_pending(&mut self) {
        if let Some((_, crlf)) = self.pending_blank.take() {
            self.hasher
                .update(if crlf { &b"\r\n"[..] } else { &b"\n"[..] });
            self.msg.wire_size += 2;
        }
    }

    fn finish(mut self, content_end: u64, next_start: u64) -> ScannedMessage {
        self.msg.content_end = match self.pending_blank {
            Some((start, _)) => start,
            None => content_end,
        };
        self.msg.next_start = next_start;
        self.msg.digest = self.hasher.finalize().into();
        self.msg
    }
}

/// Scans `src` (of length `len`) into messages.
pub(crate) fn scan<S: Source>(src: &S, len: u64) -> io::Result<Scan> {
    let mut w = Window::new(src, 0);
    let mut out = Scan {
        len,
        ..Scan::default()
    };
    let mut cur: Option<Current> = None;
    loop {
        w.ensure(PREFIX)?;
        let avail = w.avail();
        let avail = &avail[..avail
            .len()
            .min(usize::try_from(len.saturating_sub(w.pos())).unwrap_or(usize::MAX))];
        if avail.is_empty() {
            break;
        }
        let line_end = avail
            .iter()
            .position(|&b| b == b'\n')
            .map_or(avail.len(), |i| i + 1);
        let peek: Vec<u8> = avail[..line_end.min(PREFIX)].to_vec();

        if peek.starts_with(b"From ") {
            let start = w.pos();
            if let Some(c) = cur.take() {
                out.messages.push(c.finish(start, start));
            }
            let mut hasher = Sha256::new();
            let mut head = Vec::new();
            let Some(info) = next_line(&mut w, len, |p| {
                hasher.update(p);
                if head.len() < 128 {
                    head.extend_from_slice(&p[..(128 - head.len()).min(p.len())]);
                }
            })?
            else {
                break;
            };
            let end = info.start + info.len;
            cur = Some(Current {
                msg: ScannedMessage {
                    from_start: info.start,
                    content_start: end,
                    content_end: end,
                    next_start: end,
                    encoding: Encoding::Quoted,
                    wire_size: 0,
                    digest: [0; 32],
                    from_line_head: head,
                },
                hasher,
                in_header: true,
                skipping_field: false,
                content_length: None,
                header_unquoted: 0,
                pending_blank: None,
            });
            continue;
        }

        let Some(c) = cur.as_mut() else {
            if let Some(info) = next_line(&mut w, len, |_| {})? {
                out.preamble_len = info.start + info.len;
            }
            continue;
        };

        if peek == b"\n" || peek == b"\r\n" {
            c.flush_pending();
            let start = w.pos();
            next_line(&mut w, len, |_| {})?;
            c.pending_blank = Some((start, peek.len() == 2));
            if !c.in_header {
                continue;
            }
            c.in_header = false;
            let Some(cl) = c.content_length else { continue };
            let body_start = w.pos();
            let Some(end) = body_start.checked_add(cl) else {
                continue;
            };
            let Some(next) = check_cl_end(src, body_start, end, len)? else {
                continue;
            };
            // mboxcl2: the header's blank line is content; the body is `cl` octets
            // taken verbatim.
            c.flush_pending();
            c.msg.encoding = Encoding::Verbatim;
            c.msg.wire_size += c.header_unquoted;
            while w.pos() < end {
                let hasher = &mut c.hasher;
                let Some(info) = next_line(&mut w, end, |p| hasher.update(p))? else {
                    break;
                };
                c.msg.wire_size += line_wire(&info, false);
            }
            if let Some(c) = cur.take() {
                out.messages.push(c.finish(end, next));
            }
            w.seek(next);
            continue;
        }

        c.flush_pending();
        let mut hash = true;
        if c.in_header {
            let continuation = matches!(peek.first(), Some(b' ' | b'\t'));
            if !continuation {
                c.skipping_field = is_volatile(&peek);
                if let Some(v) = content_length(&peek) {
                    c.content_length = Some(v);
                }
            }
            hash = !c.skipping_field;
        }
        let hasher = &mut c.hasher;
        let Some(info) = next_line(&mut w, len, |p| {
            if hash {
                hasher.update(p);
            }
        })?
        else {
            break;
        };
        if c.in_header && info.quoted_from {
            c.header_unquoted += 1;
        }
        c.msg.wire_size += line_wire(&info, true);
    }
    if let Some(c) = cur.take() {
        out.messages.push(c.finish(len, len));
    }
    Ok(out)
}

/// The UIDLs of scanned messages: 32 hex digits of the digest; the k-th message with
/// the same digest (k ≥ 2, counted in file order) gets `-k` appended.
pub(crate) fn uidls(messages: &[ScannedMessage]) -> Vec<String> {
    let mut seen: std::collections::HashMap<[u8; 32], u32> = std::collections::HashMap::new();
    messages
        .iter()
        .map(|m| {
            let mut s = String::with_capacity(44);
            for b in &m.digest[..16] {
                s.push_str(&format!("{b:02x}"));
            }
            let k = seen.entry(m.digest).or_insert(0);
            *k += 1;
            if *k > 1 {
                s.push_str(&format!("-{k}"));
            }
            s
        })
        .collect()
}
