//! The mbox parser: splits an mbox into messages without loading it into memory, and
//! computes for each message its byte ranges, its exact wire size and its content
//! digest (the UIDL source).
//!
//! Message boundaries (the separator rule): a line is a From_ line, and starts a
//! message, only where a well-formed one can be, as mutt and Dovecot read mboxes:
//! - it is a well-formed From_ line: `From `, a sender and a ctime-style date
//!   ([`super::from_line`]; `From me Tue Feb  2 00:00:00 2024 said hi` is not one);
//! - and it is at the start of the file or right after an empty line (LF or CRLF).
//!   Before the first message (the preamble: bytes that are no message), an empty line
//!   is not needed unless the preamble itself holds a `From ` line (a broken From_
//!   line: its message then needs an empty line to end, like any other);
//! - or a Content-Length vouches for it (below).
//!
//! The empty line just before a From_ line (or before end of file) is the separator
//! and belongs to no message. Content (what POP3 serves) runs from after the From_
//! line to the separator; body lines `>+From ` are unquoted by one `>` (mboxrd; mboxo
//! files read the same way). When a header has `Content-Length: N` and the N octets
//! after the header end exactly at end of file or before a (blank line and a)
//! well-formed From_ line, the body is taken as those N octets verbatim (mboxcl2: no
//! quoting, `From ` lines allowed inside); a Content-Length that lands anywhere else
//! is ignored, as mutt and Dovecot do. Bytes before the first From_ line are kept as a
//! preamble and preserved by rewrites.
//!
//! Doubts: a line starting with `From ` inside a message (outside a Content-Length
//! body) that is not a separator by these rules — no empty line before it, or not a
//! well-formed From_ line — is message text, but a laxer reader would split there.
//! So would one that ignores Content-Length where a Content-Length body is followed by
//! a From_ line with no empty line between. Such a message's boundaries are in doubt:
//! [`ScannedMessage::doubt`] says where, and UPDATE never deletes it (see the module
//! docs of [`super`]). The same lines are collected as [`Note`]s for `fsck`.
//!
//! Digest: SHA-256 over the From_ line and the stored content lines, leaving out header
//! fields that mail programs rewrite in place (`Status`, `X-Status`, `X-Keywords`,
//! `X-UID`, `X-IMAP`, `X-IMAPbase`, `Content-Length`, `Lines`, `X-Mozilla-Status*`), so
//! a client reading the mbox and marking messages read does not change their UIDLs. An
//! unquoted `From ` text line is digested as if quoted (`>From `), so quoting it (what
//! `correio mailbox check --repair` does) keeps the UIDL.
//!
//! Memory: a fixed-size window; lines of any length are processed in pieces; the notes
//! are capped at [`MAX_NOTES`].

use std::io;

use sha2::{Digest, Sha256};

use super::from_line::{self, Malformed};

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
    /// Where the message's boundaries are in doubt (see the module docs): the offset of
    /// the first such line. `None`: the boundaries are certain.
    pub(crate) doubt: Option<u64>,
}

/// Something `fsck` reports, found while scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    /// Offset of the line.
    pub(crate) offset: u64,
    /// Its line number (1-based).
    pub(crate) line: u64,
    /// The message whose text holds the line (an index into [`Scan::messages`]);
    /// `None`: the preamble.
    pub(crate) message: Option<usize>,
    pub(crate) kind: NoteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoteKind {
    /// A well-formed From_ line with no empty line before it: read as text.
    FromWithoutBlank,
    /// A `From ` line that is not a well-formed From_ line: read as text.
    MalformedFrom {
        /// Whether an empty line (or the start of the file) comes before it, where a
        /// separator would be.
        after_blank: bool,
        why: Malformed,
    },
    /// A `Content-Length:` header whose count does not end at a From_ line or at EOF
    /// (ignored).
    ContentLengthMismatch { declared: u64 },
    /// A Content-Length body followed by a From_ line with no empty line between
    /// (taken as a separator; the note's offset is that of the From_ line).
    ContentLengthWithoutBlank,
}

/// How the lines of a file end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LineEnds {
    pub(crate) lf: u64,
    pub(crate) crlf: u64,
    /// Line number of the first LF-only and the first CRLF line.
    pub(crate) first_lf: Option<u64>,
    pub(crate) first_crlf: Option<u64>,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Length of the bytes before the first From_ line.
    pub(crate) preamble_len: u64,
    /// Whether the preamble holds anything but empty lines.
    pub(crate) preamble_has_text: bool,
    pub(crate) messages: Vec<ScannedMessage>,
    /// The length scanned (the file length at scan time).
    pub(crate) len: u64,
    /// Lines that are not what they look like, in file order (at most [`MAX_NOTES`]).
    pub(crate) notes: Vec<Note>,
    /// Notes left out beyond [`MAX_NOTES`].
    pub(crate) notes_dropped: u64,
    pub(crate) line_ends: LineEnds,
    /// The number of lines (a last line without LF counts).
    pub(crate) lines: u64,
    /// Whether the scanned bytes end with LF (or are empty).
    pub(crate) final_newline: bool,
}

/// At most this many notes are kept per scan.
pub(crate) const MAX_NOTES: usize = 10_000;

impl Scan {
    fn note(&mut self, n: Note) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(n);
        } else {
            self.notes_dropped += 1;
        }
    }
}

const WINDOW: usize = 64 * 1024;
/// Bytes of a line looked at to classify it (header name).
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
    /// Lines consumed so far.
    lines: u64,
    ends: LineEnds,
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
            lines: 0,
            ends: LineEnds::default(),
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

    /// Counts a line that ended (with LF, CRLF when `crlf`) without going through
    /// [`next_line`].
    fn count_line(&mut self, lf: bool, crlf: bool) {
        self.lines += 1;
        if crlf {
            self.ends.crlf += 1;
            self.ends.first_crlf.get_or_insert(self.lines);
        } else if lf {
            self.ends.lf += 1;
            self.ends.first_lf.get_or_insert(self.lines);
        }
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
    let ends_crlf = ends_lf && last2[0] == b'\r' && len >= 2;
    w.count_line(ends_lf, ends_crlf);
    Ok(Some(LineInfo {
        start,
        len,
        ends_lf,
        ends_crlf,
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

/// Where a Content-Length body ending at `end` leaves the file, if it is consistent
/// with it: the body ends at a line start and is followed by EOF, or by an optional
/// empty line (LF or CRLF) and a well-formed From_ line (or EOF).
struct ClEnd {
    /// Where the next message (or EOF) starts.
    next: u64,
    /// Whether an empty line comes before `next` (the separator after the body, or the
    /// body's own last line), so that a reader ignoring Content-Length splits there
    /// too. Always true at EOF.
    blank_before: bool,
}

fn check_cl_end<S: Source>(
    src: &S,
    body_start: u64,
    end: u64,
    file_len: u64,
) -> io::Result<Option<ClEnd>> {
    if end > file_len {
        return Ok(None);
    }
    // The bytes before `end`: the body's last line must end there, and whether that
    // line is empty (the header's blank line when the body is empty).
    let mut tail = [0u8; 3];
    let k = end.min(3) as usize;
    let got = src.read_at(&mut tail[3 - k..], end - k as u64)?;
    if got != k {
        return Ok(None);
    }
    if end > body_start && tail[2] != b'\n' {
        return Ok(None);
    }
    let body_ends_blank = tail[1..] == *b"\n\n" || tail == *b"\n\r\n";
    // Room for a whole From_ line after a CRLF separator, plus one byte to tell a
    // longer line from one that ends at EOF.
    let mut buf = vec![0u8; from_line::MAX_LEN + 3];
    let n = src.read_at(&mut buf, end)?;
    let after = &buf[..n];
    if end == file_len {
        return Ok(Some(ClEnd {
            next: end,
            blank_before: true,
        }));
    }
    let sep = if after.starts_with(b"\n") {
        1
    } else if after.starts_with(b"\r\n") {
        2
    } else {
        0
    };
    let next = end + sep as u64;
    if next == file_len {
        return Ok(Some(ClEnd {
            next,
            blank_before: true,
        }));
    }
    let rest = &after[sep..];
    let line_end = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    // A line cut by the buffer is too long to be a From_ line; `check` says so.
    if from_line::is_valid(&rest[..line_end]) {
        return Ok(Some(ClEnd {
            next,
            blank_before: sep > 0 || body_ends_blank,
        }));
    }
    Ok(None)
}

struct Current {
    msg: ScannedMessage,
    hasher: Sha256,
    in_header: bool,
    skipping_field: bool,
    /// The Content-Length header: (value, offset, line number).
    content_length: Option<(u64, u64, u64)>,
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
    // Preamble state: whether the previous line was empty, and whether a `From ` line
    // (a broken From_ line) was seen.
    let mut prev_blank = false;
    let mut preamble_has_from = false;
    // Set where a Content-Length vouched for the From_ line that comes next; the doubt
    // to give the next message.
    let mut after_cl = false;
    let mut next_doubt: Option<u64> = None;
    loop {
        w.ensure(from_line::MAX_LEN + 1)?;
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
        let vouched = std::mem::take(&mut after_cl);

        if peek.starts_with(b"From ") {
            let start = w.pos();
            // A line longer than the window check is cut: `check` says too long.
            let check = from_line::check(&avail[..line_end.min(from_line::MAX_LEN + 1)]);
            let after_blank = match &cur {
                Some(c) => c.pending_blank.is_some(),
                None => start == 0 || prev_blank,
            };
            let separator = vouched
                || check.is_ok()
                    && match &cur {
                        Some(_) => after_blank,
                        None => after_blank || !preamble_has_from,
                    };
            if separator {
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
                        doubt: next_doubt.take(),
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
            // Text that looks like a From_ line: of the current message, or of the
            // preamble.
            let kind = match check {
                Ok(()) => NoteKind::FromWithoutBlank,
                Err(why) => NoteKind::MalformedFrom { after_blank, why },
            };
            let message = cur.as_ref().map(|_| out.messages.len());
            out.note(Note {
                offset: start,
                line: w.lines + 1,
                message,
                kind,
            });
            match cur.as_mut() {
                Some(c) => {
                    c.msg.doubt.get_or_insert(start);
                }
                None => preamble_has_from = true,
            }
        }

        let is_blank = peek == b"\n" || peek == b"\r\n";
        let Some(c) = cur.as_mut() else {
            if let Some(info) = next_line(&mut w, len, |_| {})?
                && out.messages.is_empty()
            {
                out.preamble_len = info.start + info.len;
                out.preamble_has_text |= !is_blank;
                prev_blank = is_blank;
            }
            // (After a message, bytes outside every message can only come from a file
            // that changed while it was read; rewrites refuse such a scan.)
            continue;
        };

        if is_blank {
            c.flush_pending();
            let start = w.pos();
            next_line(&mut w, len, |_| {})?;
            c.pending_blank = Some((start, peek.len() == 2));
            if !c.in_header {
                continue;
            }
            c.in_header = false;
            let Some((cl, cl_offset, cl_line)) = c.content_length else {
                continue;
            };
            let body_start = w.pos();
            let cl_end = match body_start.checked_add(cl) {
                Some(end) => check_cl_end(src, body_start, end, len)?.map(|e| (end, e)),
                None => None,
            };
            let Some((end, ClEnd { next, blank_before })) = cl_end else {
                out.note(Note {
                    offset: cl_offset,
                    line: cl_line,
                    message: Some(out.messages.len()),
                    kind: NoteKind::ContentLengthMismatch { declared: cl },
                });
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
            if !blank_before {
                // A reader that ignores Content-Length reads on: both sides are in
                // doubt.
                c.msg.doubt.get_or_insert(end);
                next_doubt = Some(end);
                out.note(Note {
                    offset: end,
                    line: w.lines + 1,
                    message: Some(out.messages.len()),
                    kind: NoteKind::ContentLengthWithoutBlank,
                });
            }
            if let Some(c) = cur.take() {
                out.messages.push(c.finish(end, next));
            }
            // The separator skipped by the seek is one (empty) line.
            if next > end {
                w.count_line(true, next - end == 2);
            }
            w.seek(next);
            after_cl = true;
            continue;
        }

        c.flush_pending();
        let mut hash = true;
        if c.in_header {
            let continuation = matches!(peek.first(), Some(b' ' | b'\t'));
            if !continuation {
                c.skipping_field = is_volatile(&peek);
                if let Some(v) = content_length(&peek) {
                    c.content_length = Some((v, w.pos(), w.lines + 1));
                }
            }
            hash = !c.skipping_field;
        }
        // An unquoted `From ` text line is digested as its quoted form.
        if hash && peek.starts_with(b"From ") {
            c.hasher.update(b">");
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
    out.lines = w.lines;
    out.line_ends = w.ends;
    out.final_newline = if len == 0 {
        true
    } else {
        let mut b = [0u8; 1];
        src.read_at(&mut b, len - 1)? == 1 && b[0] == b'\n'
    };
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
