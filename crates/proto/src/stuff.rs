//! Byte-stuffing (server), unstuffing (client), and the exact size rule both share.
//!
//! # The rules (RFC 1939 §3, PROTOCOL.md)
//! A stored message is a sequence of lines. A line ends at LF; a CR right before that
//! LF belongs to the line end. On the wire every line end is CRLF, whether it was
//! stored as LF or CRLF. A CR that is *not* followed by LF is an ordinary byte and
//! passes through unchanged (also as the very last byte of a message). A line whose
//! first byte is `.` gets one more `.` in front. A message that does not end with a
//! line end gets CRLF added; an empty message stays empty. The body ends with `.` CRLF.
//!
//! The size of a message ([`WireSizer`], [`wire_size`]) is exactly the octets
//! [`DotStuffer`] sends for it, minus the stuffing dots and the final `.` CRLF: the
//! stored length, plus one for each LF not preceded by CR, plus two when the message is
//! not empty and does not end with LF.
//!
//! `TOP msg n` ([`DotStuffer::top`]) sends the header lines, the blank line that ends
//! the header, then the first `n` body lines. A message with no blank line is all
//! header and is sent whole; so is one with fewer than `n` body lines.
//!
//! # Streaming
//! All three types take input in chunks of any size, cut anywhere (between CR and LF,
//! right after a `.` at a line start, ...) and give the same bytes as for one chunk.
//! They keep a few flags between chunks and never hold a message or a line in memory:
//! runs between line ends are copied in bulk, with no allocation per line.

use std::fmt;

use memchr::{memchr, memchr_iter};

/// The positions of every LF in a slice, in order.
///
/// It looks at 64 bytes at a time and turns them into a bit mask of their LFs with
/// word-at-a-time arithmetic (no branch per byte, no `unsafe`), then hands out the set
/// bits. A mail line is typically 40-80 bytes, so this costs far less per line than
/// restarting a search after each LF.
struct LineEnds<'a> {
    input: &'a [u8],
    /// Where the next block to scan starts.
    next_block: usize,
    /// Where the block that `mask` describes starts.
    base: usize,
    /// The LFs of that block not yet handed out, one bit per byte.
    mask: u64,
}

impl<'a> LineEnds<'a> {
    fn new(input: &'a [u8]) -> Self {
        LineEnds {
            input,
            next_block: 0,
            base: 0,
            mask: 0,
        }
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        loop {
            if self.mask != 0 {
                let lf = self.base + self.mask.trailing_zeros() as usize;
                self.mask &= self.mask - 1;
                return Some(lf);
            }
            let rest = self.input.get(self.next_block..)?;
            self.base = self.next_block;
            if let Some(block) = rest.first_chunk::<64>() {
                self.mask = lf_mask(block);
                self.next_block += 64;
            } else if rest.is_empty() {
                return None;
            } else {
                // The last, short block: pad with bytes that are not LF.
                let mut block = [0u8; 64];
                block[..rest.len()].copy_from_slice(rest);
                self.mask = lf_mask(&block);
                self.next_block = self.input.len();
            }
        }
    }
}

/// One bit per LF byte of `block` (bit i set iff `block[i] == b'\n'`).
#[inline(always)]
fn lf_mask(block: &[u8; 64]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const LFS: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let (words, _) = block.as_chunks::<8>();
    let mut mask = 0u64;
    for (k, word) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*word) ^ LFS;
        // 0x80 exactly in each byte of `w` that is zero (no borrow between bytes).
        let zero = !(((w & LOW7) + LOW7) | w | LOW7);
        // Gather the eight high bits into the top byte, in byte order.
        let bits = (zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        mask |= bits << (k * 8);
    }
    mask
}

/// How far past a line [`copy_run`] may copy before cutting back.
const OVERCOPY: usize = 96;

/// Appends `input[begin..end]` to `out`. Most lines are shorter than [`OVERCOPY`]:
/// for them it copies a fixed-length block (a few vector moves, no branch on the line
/// length) and cuts the excess off again, which is much cheaper than a `memcpy` call
/// of a length that changes with every line.
#[inline(always)]
fn copy_run(input: &[u8], begin: usize, end: usize, out: &mut Vec<u8>) {
    if end - begin <= OVERCOPY && begin + OVERCOPY <= input.len() {
        let at = out.len();
        out.extend_from_slice(&input[begin..begin + OVERCOPY]);
        out.truncate(at + (end - begin));
    } else {
        out.extend_from_slice(&input[begin..end]);
    }
}

/// How a stuffer sends lines: everything (`RETR`), or the `TOP` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The whole message.
    All,
    /// Still in the header; then `body_lines` body lines.
    Header { body_lines: u32 },
    /// In the body; this many lines still to send (at least 1).
    Body { left: u32 },
    /// TOP has sent everything it should.
    Done,
}

/// Server side: stored message bytes (LF or CRLF line ends, any chunking) → wire bytes
/// (CRLF, dot-stuffed). See the module docs for the rules.
///
/// Driving: call [`feed`](DotStuffer::feed) with each chunk read from the store, write
/// what it appended, stop reading when it returns `false`, then call
/// [`finish`](DotStuffer::finish) once and write that too.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    limit: Limit,
    /// Nothing of the current line has been sent yet (a pending CR aside).
    line_start: bool,
    /// The last input byte was a CR whose fate (line end or plain byte) depends on the
    /// next byte.
    pending_cr: bool,
    finished: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer for `RETR`: the whole message.
    pub fn new() -> Self {
        DotStuffer {
            limit: Limit::All,
            line_start: true,
            pending_cr: false,
            finished: false,
        }
    }

    /// A stuffer for `TOP msg body_lines`: header, blank line, first `body_lines` body
    /// lines.
    pub fn top(body_lines: u32) -> Self {
        DotStuffer {
            limit: Limit::Header { body_lines },
            ..Self::new()
        }
    }

    /// Appends the wire bytes for `input` to `out`. Returns `false` once no more input
    /// is needed (TOP has sent its lines); input given after that is ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.limit == Limit::Done || self.finished {
            return false;
        }
        let mut i = 0;
        let n = input.len();
        if n == 0 {
            return true;
        }
        out.reserve(n + n / 16 + 4);
        if self.pending_cr {
            self.pending_cr = false;
            if input[0] == b'\n' {
                out.extend_from_slice(b"\r\n");
                i = 1;
                let empty = self.line_start;
                self.line_start = true;
                if !self.end_line(empty) {
                    return false;
                }
            } else {
                // A bare CR: an ordinary byte, and the line has begun (with CR, not ".").
                out.push(b'\r');
                self.line_start = false;
            }
        }
        if self.limit == Limit::All {
            // The hot path (RETR): no line counting.
            self.feed_all(&input[i..], out);
            return true;
        }
        while i < n {
            let rest = &input[i..];
            match memchr(b'\n', rest) {
                Some(lf) => {
                    let end = if lf > 0 && rest[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    let empty = self.line_start && end == 0;
                    if self.line_start && end > 0 && rest[0] == b'.' {
                        out.push(b'.');
                    }
                    out.extend_from_slice(&rest[..end]);
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    i += lf + 1;
                    if !self.end_line(empty) {
                        return false;
                    }
                }
                None => {
                    self.partial_line(rest, out);
                    break;
                }
            }
        }
        true
    }

    /// The whole-message path: the same rules as [`feed`](DotStuffer::feed) without the
    /// TOP bookkeeping, so the loop per line is as short as it can be.
    fn feed_all(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        // The first line may continue one begun in an earlier chunk.
        if !self.line_start {
            match memchr(b'\n', rest) {
                Some(lf) => {
                    let end = if lf > 0 && rest[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    out.extend_from_slice(&rest[..end]);
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    rest = &rest[lf + 1..];
                }
                None => {
                    self.partial_line(rest, out);
                    return;
                }
            }
        }
        // Here every LF ends a line that began in this chunk.
        out.reserve(rest.len() + rest.len() / 16 + OVERCOPY + 4);
        let n = rest.len();
        let mut begin = 0;
        for lf in LineEnds::new(rest) {
            let end = if lf > begin && rest[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            if end > begin && rest[begin] == b'.' {
                out.push(b'.');
            }
            copy_run(rest, begin, end, out);
            out.extend_from_slice(b"\r\n");
            begin = lf + 1;
        }
        if begin < n {
            self.partial_line(&rest[begin..], out);
        }
    }

    /// A piece of a line with no LF in it (`rest` is not empty).
    fn partial_line(&mut self, rest: &[u8], out: &mut Vec<u8>) {
        let mut end = rest.len();
        if rest[end - 1] == b'\r' {
            // Line end or plain byte: the next chunk decides.
            end -= 1;
            self.pending_cr = true;
        }
        if end > 0 {
            if self.line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            out.extend_from_slice(&rest[..end]);
            self.line_start = false;
        }
    }

    /// Counts a finished line for TOP; false once TOP has sent all it should.
    fn end_line(&mut self, empty: bool) -> bool {
        self.limit = match self.limit {
            Limit::All => return true,
            Limit::Header { body_lines } if empty => match body_lines {
                0 => Limit::Done,
                left => Limit::Body { left },
            },
            Limit::Header { body_lines } => Limit::Header { body_lines },
            Limit::Body { left } if left <= 1 => Limit::Done,
            Limit::Body { left } => Limit::Body { left: left - 1 },
            Limit::Done => Limit::Done,
        };
        self.limit != Limit::Done
    }

    /// Ends the body: a pending CR as a plain byte, CRLF if the message did not end
    /// with a line end, then `.` CRLF. Calling it again appends nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.limit != Limit::Done {
            if self.pending_cr {
                self.pending_cr = false;
                out.push(b'\r');
                self.line_start = false;
            }
            if !self.line_start {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The exact size rule: the octets `RETR` sends for a stored message (CRLF line ends,
/// before stuffing, without the final `.` CRLF), computed from stored bytes given in
/// chunks of any size.
#[derive(Debug, Clone, Default)]
pub struct WireSizer {
    /// Stored bytes plus one per LF not preceded by CR.
    size: u64,
    /// The last byte seen so far, if any.
    last: Option<u8>,
}

impl WireSizer {
    /// A sizer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk of stored bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        // Every LF becomes CRLF: count the LFs, minus those already preceded by CR.
        // Both counts are vectorised scans; CRs are rare in stored mail.
        let lfs = memchr_iter(b'\n', chunk).count() as u64;
        let crlf = memchr_iter(b'\r', chunk)
            .filter(|&i| chunk.get(i + 1) == Some(&b'\n'))
            .count() as u64;
        let across = u64::from(chunk[0] == b'\n' && self.last == Some(b'\r'));
        let bare_lf = lfs - crlf - across;
        self.size += chunk.len() as u64 + bare_lf;
        self.last = Some(last);
    }

    /// The size in octets.
    pub fn finish(self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.size,
            // No final line end: the stuffer adds CRLF.
            Some(_) => self.size + 2,
        }
    }
}

/// The size rule for a message held in memory: see [`WireSizer`].
pub fn wire_size(stored: &[u8]) -> u64 {
    let mut s = WireSizer::new();
    s.feed(stored);
    s.finish()
}

/// The line ends [`DotUnstuffer`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// CRLF, as on the wire (RFC 5322 form).
    Crlf,
    /// LF, as Maildir and mbox files usually hold messages.
    Lf,
}

/// The end of stream came before the terminating `.` CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingTerminator;

impl fmt::Display for MissingTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("multi-line response ended without the terminating \".\" line")
    }
}

impl std::error::Error for MissingTerminator {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unstuff {
    /// At the start of a line.
    LineStart,
    /// A line started with `.`: the terminator or a stuffing dot.
    Dot,
    /// `.` CR at a line start: the terminator if LF follows.
    DotCr,
    /// Inside a line.
    Mid,
    /// The terminator has been consumed.
    Done,
}

/// Client side: the wire bytes that follow the `+OK` line of a multi-line response →
/// message bytes, with lines ended as [`LineEnding`] says. Tolerates bare LF line ends
/// from broken servers; a CR not followed by LF is an ordinary byte. A line that starts
/// with `.` loses that dot (RFC 1939 §3); a line that is just `.` ends the response.
///
/// Driving: feed what the socket gave; [`feed`](DotUnstuffer::feed) says how many bytes
/// it used. Once [`is_done`](DotUnstuffer::is_done), the unused bytes belong to the next
/// (pipelined) response. At end of stream, [`finish`](DotUnstuffer::finish) tells
/// whether the response was complete.
#[derive(Debug, Clone)]
pub struct DotUnstuffer {
    ending: LineEnding,
    state: Unstuff,
    /// Inside a line, the last byte was a CR not yet written.
    pending_cr: bool,
}

impl DotUnstuffer {
    /// An unstuffer that writes lines ended with `ending`.
    pub fn new(ending: LineEnding) -> Self {
        DotUnstuffer {
            ending,
            state: Unstuff::LineStart,
            pending_cr: false,
        }
    }

    /// Consumes wire bytes and appends message bytes to `out`. Returns how many bytes of
    /// `input` it consumed: all of them, except after the terminating line, where it
    /// stops right after its LF.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let crlf = self.ending == LineEnding::Crlf;
        // Constant-length stores: a slice of run-time length would cost a memcpy call
        // per line.
        let eol = |out: &mut Vec<u8>| {
            if crlf {
                out.extend_from_slice(b"\r\n");
            } else {
                out.push(b'\n');
            }
        };
        let n = input.len();
        let mut i = 0;
        out.reserve(n + OVERCOPY);
        while i < n {
            match self.state {
                Unstuff::Done => return i,
                Unstuff::LineStart => {
                    if input[i] == b'.' {
                        self.state = Unstuff::Dot;
                        i += 1;
                        continue;
                    }
                    self.state = Unstuff::Mid;
                }
                Unstuff::Dot => match input[i] {
                    b'\n' => {
                        self.state = Unstuff::Done;
                        return i + 1;
                    }
                    b'\r' => {
                        self.state = Unstuff::DotCr;
                        i += 1;
                        continue;
                    }
                    // The dot was stuffing: drop it, the rest is the line.
                    _ => self.state = Unstuff::Mid,
                },
                Unstuff::DotCr => {
                    if input[i] == b'\n' {
                        self.state = Unstuff::Done;
                        return i + 1;
                    }
                    // ". CR x": the dot was stuffing and the CR is an ordinary byte.
                    out.push(b'\r');
                    self.state = Unstuff::Mid;
                }
                Unstuff::Mid => {}
            }
            // Inside a line.
            if self.pending_cr {
                self.pending_cr = false;
                if input[i] == b'\n' {
                    eol(out);
                    self.state = Unstuff::LineStart;
                    i += 1;
                    continue;
                }
                out.push(b'\r');
            }
            // One iterator over the LFs: lines that do not start with "." are copied
            // here in bulk; a line that does goes back to the state machine above.
            let rest = &input[i..];
            let mut begin = 0;
            let mut at_dot = false;
            for lf in LineEnds::new(rest) {
                let end = if lf > begin && rest[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                copy_run(rest, begin, end, out);
                eol(out);
                begin = lf + 1;
                if rest.get(begin) == Some(&b'.') {
                    at_dot = true;
                    break;
                }
            }
            if at_dot || begin == rest.len() {
                self.state = Unstuff::LineStart;
                i += begin;
                continue;
            }
            // A line that goes on in the next chunk.
            let tail = &rest[begin..];
            let mut end = tail.len();
            if tail[end - 1] == b'\r' {
                end -= 1;
                self.pending_cr = true;
            }
            out.extend_from_slice(&tail[..end]);
            self.state = Unstuff::Mid;
            i = n;
        }
        if self.state == Unstuff::Done { i } else { n }
    }

    /// Whether the terminating `.` line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == Unstuff::Done
    }

    /// At end of stream: `Err(MissingTerminator)` unless the terminator was seen.
    pub fn finish(&self) -> Result<(), MissingTerminator> {
        if self.is_done() {
            Ok(())
        } else {
            Err(MissingTerminator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(m: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.feed(m, &mut out);
        s.finish(&mut out);
        out
    }

    fn top(m: &[u8], n: u32) -> Vec<u8> {
        let mut s = DotStuffer::top(n);
        let mut out = Vec::new();
        s.feed(m, &mut out);
        s.finish(&mut out);
        out
    }

    #[test]
    fn lf_mask_is_exact() {
        let naive = |b: &[u8; 64]| (0..64).fold(0u64, |m, i| m | (u64::from(b[i] == b'\n') << i));
        for v in 0..=255u8 {
            let mut block = [v; 64];
            assert_eq!(lf_mask(&block), naive(&block), "all {v:#x}");
            block[3] = b'\n';
            block[40] = b'\n';
            block[63] = b'\n';
            assert_eq!(lf_mask(&block), naive(&block), "{v:#x} with LFs");
        }
        // Neighbours that a borrow or carry between bytes would confuse.
        let block: [u8; 64] =
            std::array::from_fn(|i| [b'\n', 0x8a, 0x0b, 0x09, 0x00, 0xff, 0x0a][i % 7]);
        assert_eq!(lf_mask(&block), naive(&block));
        let ends: Vec<usize> = LineEnds::new(&block[..50]).collect();
        let expected: Vec<usize> = (0..50).filter(|&i| block[i] == b'\n').collect();
        assert_eq!(ends, expected);
    }

    #[test]
    fn stuffing_rules() {
        assert_eq!(stuff(b""), b".\r\n");
        assert_eq!(stuff(b"a\nb\r\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(b".\n..x\n"), b"..\r\n...x\r\n.\r\n");
        assert_eq!(stuff(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(stuff(b"a\rb\n"), b"a\rb\r\n.\r\n");
        assert_eq!(stuff(b"a\r"), b"a\r\r\n.\r\n");
        assert_eq!(stuff(b"\n"), b"\r\n.\r\n");
        assert_eq!(stuff(b"."), b"..\r\n.\r\n");
    }

    #[test]
    fn sizes() {
        for m in [
            &b""[..],
            b"a\nb\r\n",
            b"no end",
            b"a\r",
            b"\r\n\n\r",
            b".\n.",
        ] {
            // Unstuffing with CRLF removes exactly the stuffing dots and the terminator.
            assert_eq!(wire_size(m), unstuffed_len(&stuff(m)) as u64, "{m:?}");
        }
    }

    fn unstuffed_len(wire: &[u8]) -> usize {
        let mut u = DotUnstuffer::new(LineEnding::Crlf);
        let mut out = Vec::new();
        assert_eq!(u.feed(wire, &mut out), wire.len());
        assert!(u.is_done());
        out.len()
    }

    #[test]
    fn top_lines() {
        let m = b"H: 1\nH: 2\n\nb1\nb2\nb3\n";
        assert_eq!(top(m, 0), b"H: 1\r\nH: 2\r\n\r\n.\r\n");
        assert_eq!(top(m, 2), b"H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n.\r\n");
        assert_eq!(top(m, 9), stuff(m));
        assert_eq!(top(b"H: 1\nH: 2\n", 0), b"H: 1\r\nH: 2\r\n.\r\n");
        assert_eq!(top(b"H: 1\n\nlast", 5), b"H: 1\r\n\r\nlast\r\n.\r\n");
    }

    #[test]
    fn unstuffer_stops_after_terminator() {
        let mut u = DotUnstuffer::new(LineEnding::Lf);
        let mut out = Vec::new();
        let wire = b"..a\r\nb\n.\r\n+OK next\r\n";
        assert_eq!(u.feed(wire, &mut out), wire.len() - 10);
        assert_eq!(out, b".a\nb\n");
        assert_eq!(u.finish(), Ok(()));
        let u = DotUnstuffer::new(LineEnding::Lf);
        assert_eq!(u.finish(), Err(MissingTerminator));
    }
}
