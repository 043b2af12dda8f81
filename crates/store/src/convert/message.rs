//! The message-level rules of `correio convert` (see the parent module for the
//! decisions): flags, the header fields an mbox keeps them in, the marker field, the
//! From_ line, and the streaming transforms between a message and its mbox form.
//!
//! Everything here works on streams with fixed-size buffers: a header is scanned line by
//! line keeping at most [`PREFIX`] bytes of each line, and message bytes are copied in
//! 64 KiB chunks, so a message of any size costs the same memory.

use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::transform::{FromQuoting, QuoteDir};

/// The marker field's name (see the parent module).
pub(crate) const MARKER_NAME: &[u8] = b"X-Correio-Convert";
/// Bytes of each header line kept by [`scan_header`] (field name and short values).
pub(crate) const PREFIX: usize = 512;
/// Most `Status`/`X-Status` fields recorded per header; a header with more keeps them
/// all as content (see [`HeaderScan::too_many`]).
const MAX_FLAG_FIELDS: usize = 64;
/// Copy buffer size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The flags of a message, in Maildir terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// Seen by a mail program: Maildir `cur/` rather than `new/`; mbox `Status: O`.
    pub old: bool,
    /// Maildir info letters, sorted and unique: `D` draft, `F` flagged, `P` passed,
    /// `R` replied, `S` seen, `T` trashed, `a`–`z` keywords (Dovecot).
    letters: Vec<u8>,
}

impl Flags {
    /// Flags from `old` and info letters (anything but ASCII letters is ignored).
    pub fn new(old: bool, letters: &[u8]) -> Flags {
        let mut v: Vec<u8> = letters
            .iter()
            .copied()
            .filter(u8::is_ascii_alphabetic)
            .collect();
        v.sort_unstable();
        v.dedup();
        Flags { old, letters: v }
    }

    /// The info letters, sorted.
    pub fn letters(&self) -> &[u8] {
        &self.letters
    }

    /// The flags of a Maildir file name (`…:2,LETTERS`) found in `cur/` (`in_cur`) or
    /// `new/`.
    pub fn from_maildir_name(name: &[u8], in_cur: bool) -> Flags {
        let letters = name
            .windows(3)
            .position(|w| w == b":2,")
            .map_or(&[][..], |i| &name[i + 3..]);
        Flags::new(in_cur, letters)
    }

    /// The Maildir info suffix: `:2,LETTERS`, or None for a message without flags in
    /// `new/`.
    pub fn maildir_info(&self) -> Option<String> {
        (self.old || !self.letters.is_empty())
            .then(|| format!(":2,{}", String::from_utf8_lossy(&self.letters)))
    }

    fn has(&self, c: u8) -> bool {
        self.letters.contains(&c)
    }

    fn add(&mut self, c: u8) {
        if c.is_ascii_alphabetic() && !self.has(c) {
            self.letters.push(c);
            self.letters.sort_unstable();
        }
    }

    /// The `Status:` value: `R` (read) for seen, `O` for old.
    pub(crate) fn status_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if self.has(b'S') {
            v.push(b'R');
        }
        if self.old {
            v.push(b'O');
        }
        v
    }

    /// The `X-Status:` value: `A` replied, `F` flagged, `T` draft, `D` trashed.
    pub(crate) fn x_status_value(&self) -> Vec<u8> {
        [(b'R', b'A'), (b'F', b'F'), (b'D', b'T'), (b'T', b'D')]
            .iter()
            .filter(|(m, _)| self.has(*m))
            .map(|&(_, x)| x)
            .collect()
    }

    /// Letters `Status:`/`X-Status:` cannot carry.
    pub(crate) fn extra_letters(&self) -> Vec<u8> {
        self.letters
            .iter()
            .copied()
            .filter(|c| !b"SRFDT".contains(c))
            .collect()
    }

    fn add_status(&mut self, value: &[u8]) {
        for &b in value {
            match b {
                b'R' => self.add(b'S'),
                b'O' => self.old = true,
                _ => {}
            }
        }
    }

    fn add_x_status(&mut self, value: &[u8]) {
        for &b in value {
            match b {
                b'A' => self.add(b'R'),
                b'F' => self.add(b'F'),
                b'T' => self.add(b'D'),
                b'D' => self.add(b'T'),
                _ => {}
            }
        }
    }
}

/// A `Status:` or `X-Status:` field of a header, continuation lines included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagField {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// `X-Status` rather than `Status`.
    pub(crate) x: bool,
    /// The value (up to [`PREFIX`] bytes of the first line).
    pub(crate) value: Vec<u8>,
}

/// The last line of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastLine {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Starts with a space or tab (continues the field before it).
    pub(crate) continuation: bool,
    /// Its first [`PREFIX`] bytes.
    pub(crate) text: Vec<u8>,
}

impl LastLine {
    fn complete(&self) -> bool {
        self.text.len() as u64 == self.end - self.start
    }
}

/// What a pass over a message's header found. Lines end at LF; the header ends at the
/// first blank line (`\n` or `\r\n`), or at the end of the message if it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderScan {
    /// Where the header ends: the offset of the blank line, or the message length.
    pub(crate) end: u64,
    /// The blank line ending the header, if any: whether it is `\r\n`.
    pub(crate) blank_crlf: Option<bool>,
    /// `Status:` and `X-Status:` fields, in order.
    pub(crate) fields: Vec<FlagField>,
    /// More than [`MAX_FLAG_FIELDS`] of them (the rest are not in `fields`).
    pub(crate) too_many: bool,
    pub(crate) last: Option<LastLine>,
    /// The line before `last`.
    pub(crate) prev: Option<LastLine>,
    /// The first `Return-Path:` value (up to [`PREFIX`] bytes).
    pub(crate) return_path: Option<Vec<u8>>,
}

/// `read` that retries on EINTR.
pub(crate) fn read_some<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let n = name.len();
    (line.len() > n && line[..n].eq_ignore_ascii_case(name) && line[n] == b':')
        .then(|| &line[n + 1..])
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &v[s..e.max(s)]
}

fn is_marker_named(line: &[u8]) -> bool {
    strip_name(line, MARKER_NAME).is_some()
}

struct HeaderScanner {
    out: HeaderScan,
    /// The last field line was a flag field (continuations extend it).
    in_flag_field: bool,
}

impl HeaderScanner {
    fn line(&mut self, start: u64, len: u64, prefix: &[u8]) {
        let end = start + len;
        let continuation = matches!(prefix.first(), Some(b' ' | b'\t'));
        if continuation {
            if self.in_flag_field
                && let Some(f) = self.out.fields.last_mut()
                && f.end == start
            {
                f.end = end;
            }
        } else {
            self.in_flag_field = false;
            let status = strip_name(prefix, b"Status").map(|v| (false, v));
            let x_status = strip_name(prefix, b"X-Status").map(|v| (true, v));
            if let Some((x, v)) = status.or(x_status) {
                if self.out.fields.len() < MAX_FLAG_FIELDS {
                    self.out.fields.push(FlagField {
                        start,
                        end,
                        x,
                        value: trim(v).to_vec(),
                    });
                    self.in_flag_field = true;
                } else {
                    self.out.too_many = true;
                }
            } else if let Some(v) = strip_name(prefix, b"Return-Path")
                && self.out.return_path.is_none()
            {
                self.out.return_path = Some(trim(v).to_vec());
            }
        }
        self.out.prev = self.out.last.replace(LastLine {
            start,
            end,
            continuation,
            text: prefix.to_vec(),
        });
    }
}

/// Reads the header of the message `r` (and not more than that, plus one buffer).
pub(crate) fn scan_header(mut r: impl Read) -> io::Result<HeaderScan> {
    let mut s = HeaderScanner {
        out: HeaderScan::default(),
        in_flag_field: false,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut line_start = 0u64;
    let mut line_len = 0u64;
    let mut prefix: Vec<u8> = Vec::with_capacity(PREFIX);
    loop {
        let n = read_some(&mut r, &mut buf)?;
        if n == 0 {
            if line_len > 0 {
                s.line(line_start, line_len, &prefix);
            }
            s.out.end = line_start + line_len;
            return Ok(s.out);
        }
        let mut i = 0;
        while i < n {
            let (piece, done) = match buf[i..n].iter().position(|&b| b == b'\n') {
                Some(j) => (&buf[i..=i + j], true),
                None => (&buf[i..n], false),
            };
            let room = PREFIX.saturating_sub(prefix.len());
            prefix.extend_from_slice(&piece[..piece.len().min(room)]);
            line_len += piece.len() as u64;
            i += piece.len();
            if done {
                if (line_len == 1 && prefix == b"\n") || (line_len == 2 && prefix == b"\r\n") {
                    s.out.end = line_start;
                    s.out.blank_crlf = Some(line_len == 2);
                    return Ok(s.out);
                }
                s.line(line_start, line_len, &prefix);
                line_start += line_len;
                line_len = 0;
                prefix.clear();
            }
        }
    }
}

/// The marker field's content (see the parent module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The message had no final line end; the mbox has one more `\n`.
    pub(crate) no_final_newline: bool,
    /// The message's own `Status:`/`X-Status:` fields are content; the flags are
    /// `old` and `letters` here.
    pub(crate) keep_status: bool,
    pub(crate) old: bool,
    /// Flag letters (all of them with `keep_status`, else those `Status:`/`X-Status:`
    /// cannot carry).
    pub(crate) letters: Vec<u8>,
}

/// The marker line, canonical form: `X-Correio-Convert: 1[ no-final-newline][
/// keep-status][ old][ flags=LETTERS]` and the line end.
pub(crate) fn render_marker(m: &Marker, crlf: bool) -> Vec<u8> {
    let mut v = MARKER_NAME.to_vec();
    v.extend_from_slice(b": 1");
    if m.no_final_newline {
        v.extend_from_slice(b" no-final-newline");
    }
    if m.keep_status {
        v.extend_from_slice(b" keep-status");
        if m.old {
            v.extend_from_slice(b" old");
        }
    }
    if !m.letters.is_empty() {
        v.extend_from_slice(b" flags=");
        v.extend_from_slice(&m.letters);
    }
    v.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    v
}

/// Parses a whole marker line; only the exact canonical form is accepted.
pub(crate) fn parse_marker(line: &[u8]) -> Option<Marker> {
    let (body, crlf) = match line.strip_suffix(b"\r\n") {
        Some(b) => (b, true),
        None => (line.strip_suffix(b"\n")?, false),
    };
    let rest = std::str::from_utf8(strip_name(body, MARKER_NAME)?).ok()?;
    let mut toks = rest.strip_prefix(' ')?.split(' ');
    if toks.next()? != "1" {
        return None;
    }
    let mut m = Marker::default();
    for t in toks {
        match t {
            "no-final-newline" => m.no_final_newline = true,
            "keep-status" => m.keep_status = true,
            "old" => m.old = true,
            t => m.letters = t.strip_prefix("flags=")?.as_bytes().to_vec(),
        }
    }
    let f = Flags::new(false, &m.letters);
    (f.letters == m.letters && render_marker(&m, crlf) == line).then_some(m)
}

/// How one message is written into an mbox (computed before writing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MboxPlan {
    /// The From_ line, with its line end.
    pub(crate) from_line: Vec<u8>,
    /// The message length (as scanned), for the header position.
    pub(crate) header_end: u64,
    /// Whether the header ends at a blank line (else at the end of the message).
    pub(crate) has_blank: bool,
    /// The fields inserted at the end of the header.
    pub(crate) insert: Vec<u8>,
    /// The message does not end with `\n`: one is added (and recorded in the marker).
    pub(crate) add_newline: bool,
}

/// Decides how a message goes into an mbox: `scan` of its header, `len` and
/// `last_byte` of the whole message, its `flags`. See the parent module for the rules.
pub(crate) fn plan_mbox(
    scan: &HeaderScan,
    len: u64,
    last_byte: Option<u8>,
    flags: &Flags,
    from_line: Vec<u8>,
) -> MboxPlan {
    let add_newline = len > 0 && last_byte != Some(b'\n');
    // A header without an empty line whose last line is a lone `\r` gets one when the
    // missing `\n` is added: the header then ends before that line, as a reader sees it.
    let mut header_end = scan.end;
    let mut blank_crlf = scan.blank_crlf;
    let mut last = scan.last.as_ref();
    if blank_crlf.is_none()
        && add_newline
        && let Some(l) = last.filter(|l| l.text == b"\r" && l.end == len)
    {
        header_end = l.start;
        blank_crlf = Some(true);
        last = scan.prev.as_ref();
    }
    let eol: &[u8] = if blank_crlf == Some(true) {
        b"\r\n"
    } else {
        b"\n"
    };
    let own_status = !scan.fields.is_empty() || scan.too_many;
    let last_is_marker = last.is_some_and(|l| !l.continuation && is_marker_named(&l.text));
    let mut insert = Vec::new();
    let mut marker = Marker {
        no_final_newline: add_newline,
        keep_status: own_status,
        ..Marker::default()
    };
    if own_status {
        marker.old = flags.old;
        marker.letters = flags.letters.clone();
    } else {
        let s = flags.status_value();
        if !s.is_empty() {
            insert.extend_from_slice(b"Status: ");
            insert.extend_from_slice(&s);
            insert.extend_from_slice(eol);
        }
        let x = flags.x_status_value();
        if !x.is_empty() {
            insert.extend_from_slice(b"X-Status: ");
            insert.extend_from_slice(&x);
            insert.extend_from_slice(eol);
        }
        marker.letters = flags.extra_letters();
    }
    if add_newline || own_status || last_is_marker || !marker.letters.is_empty() {
        insert.extend_from_slice(&render_marker(&marker, eol.len() == 2));
    }
    MboxPlan {
        from_line,
        header_end,
        has_blank: blank_crlf.is_some(),
        insert,
        add_newline,
    }
}

/// Writes one message into an mbox stream at a message boundary: the From_ line, the
/// message quoted mboxrd-style with the planned fields inserted, and the separator
/// line. Returns the bytes written.
pub(crate) fn write_mbox_message(
    plan: &MboxPlan,
    mut r: impl Read,
    w: &mut impl Write,
) -> io::Result<u64> {
    let mut written = plan.from_line.len() as u64;
    w.write_all(&plan.from_line)?;
    let mut q = FromQuoting::new(QuoteDir::Quote);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 4);
    let mut pos = 0u64;
    let mut inserted = false;
    loop {
        let n = read_some(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        out.clear();
        if !inserted && plan.has_blank && plan.header_end < pos + n as u64 {
            let at = usize::try_from(plan.header_end.saturating_sub(pos))
                .unwrap_or(0)
                .min(n);
            q.feed(&chunk[..at], &mut out);
            q.feed(&plan.insert, &mut out);
            q.feed(&chunk[at..], &mut out);
            inserted = true;
        } else {
            q.feed(chunk, &mut out);
        }
        pos += n as u64;
        w.write_all(&out)?;
        written += out.len() as u64;
    }
    out.clear();
    if plan.add_newline {
        q.feed(b"\n", &mut out);
    }
    if !inserted {
        q.feed(&plan.insert, &mut out);
    }
    q.finish(&mut out);
    out.push(b'\n');
    w.write_all(&out)?;
    written += out.len() as u64;
    Ok(written)
}

/// How the message is recovered from an mbox message's content: what to cut out, and
/// its flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MboxMeta {
    pub(crate) flags: Flags,
    /// Byte ranges of the (unquoted) content that are not part of the message, sorted.
    pub(crate) drop: Vec<(u64, u64)>,
    /// Remove the final `\n` (the marker says we added it).
    pub(crate) strip_final_newline: bool,
}

/// Reads the metadata of an mbox message from the scan of its (unquoted) content.
pub(crate) fn mbox_meta(scan: &HeaderScan) -> MboxMeta {
    let marker_line = scan
        .last
        .as_ref()
        .filter(|l| !l.continuation && l.complete());
    let marker = marker_line.and_then(|l| parse_marker(&l.text));
    let mut meta = MboxMeta::default();
    match &marker {
        Some(m) if m.keep_status => meta.flags = Flags::new(m.old, &m.letters),
        _ => {
            for f in &scan.fields {
                meta.drop.push((f.start, f.end));
                if f.x {
                    meta.flags.add_x_status(&f.value);
                } else {
                    meta.flags.add_status(&f.value);
                }
            }
            if let Some(m) = &marker {
                for &c in &m.letters {
                    meta.flags.add(c);
                }
            }
        }
    }
    if let (Some(m), Some(l)) = (&marker, marker_line) {
        meta.drop.push((l.start, l.end));
        meta.strip_final_newline = m.no_final_newline;
    }
    meta
}

/// The message from an mbox message's unquoted content: cuts out [`MboxMeta::drop`]
/// and the added final newline, streaming.
#[derive(Debug)]
pub(crate) struct Derived<R> {
    inner: R,
    pos: u64,
    drop: Vec<(u64, u64)>,
    di: usize,
    strip_final: bool,
    held: Option<u8>,
    chunk: Vec<u8>,
    pending: Vec<u8>,
    ppos: usize,
    eof: bool,
}

impl<R: Read> Derived<R> {
    pub(crate) fn new(inner: R, meta: &MboxMeta) -> Self {
        Derived {
            inner,
            pos: 0,
            drop: meta.drop.clone(),
            di: 0,
            strip_final: meta.strip_final_newline,
            held: None,
            chunk: vec![0; CHUNK],
            pending: Vec::with_capacity(CHUNK + 1),
            ppos: 0,
            eof: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.ppos = 0;
        loop {
            if self.eof {
                if let Some(h) = self.held.take()
                    && !(self.strip_final && h == b'\n')
                {
                    self.pending.push(h);
                }
                return Ok(());
            }
            let n = read_some(&mut self.inner, &mut self.chunk)?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            if let Some(h) = self.held.take() {
                self.pending.push(h);
            }
            let (p, e) = (self.pos, self.pos + n as u64);
            let mut cur = p;
            while cur < e {
                while self.di < self.drop.len() && self.drop[self.di].1 <= cur {
                    self.di += 1;
                }
                match self.drop.get(self.di) {
                    Some(&(ds, de)) if ds <= cur => cur = de.min(e),
                    next => {
                        let stop = next.map_or(e, |&(ds, _)| ds.min(e));
                        let (a, b) = ((cur - p) as usize, (stop - p) as usize);
                        self.pending.extend_from_slice(&self.chunk[a..b]);
                        cur = stop;
                    }
                }
            }
            self.pos = e;
            if self.strip_final {
                self.held = self.pending.pop();
            }
            if !self.pending.is_empty() {
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for Derived<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.ppos == self.pending.len() {
            self.fill()?;
            if self.pending.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.ppos);
        buf[..n].copy_from_slice(&self.pending[self.ppos..self.ppos + n]);
        self.ppos += n;
        Ok(n)
    }
}

/// Which quoting to undo when reading mbox content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unquoting {
    /// mboxrd: `>+From ` loses one `>`.
    Mboxrd,
    /// mboxo/mboxcl: exactly `>From ` becomes `From `.
    Mboxo,
    /// None (mboxcl2 bodies).
    None,
}

/// mboxo unquoting at line starts, streaming: `>From ` → `From `.
#[derive(Debug)]
struct MboxoUnquote {
    at_line_start: bool,
    /// Bytes of `>From ` matched at the start of the current line.
    matched: usize,
}

impl MboxoUnquote {
    const PAT: &'static [u8] = b">From ";

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if !self.at_line_start {
                out.push(b);
                self.at_line_start = b == b'\n';
                continue;
            }
            if b == Self::PAT[self.matched] {
                self.matched += 1;
                if self.matched == Self::PAT.len() {
                    out.extend_from_slice(&Self::PAT[1..]);
                    self.matched = 0;
                    self.at_line_start = false;
                }
                continue;
            }
            out.extend_from_slice(&Self::PAT[..self.matched]);
            self.matched = 0;
            out.push(b);
            self.at_line_start = b == b'\n';
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&Self::PAT[..self.matched]);
        self.matched = 0;
    }
}

/// Undoes From_ quoting on a stream.
#[derive(Debug)]
pub(crate) struct Unquote<R> {
    inner: R,
    rd: Option<FromQuoting>,
    o: Option<MboxoUnquote>,
    chunk: Vec<u8>,
    out: Vec<u8>,
    opos: usize,
    done: bool,
}

impl<R: Read> Unquote<R> {
    pub(crate) fn new(inner: R, how: Unquoting) -> Self {
        Unquote {
            inner,
            rd: (how == Unquoting::Mboxrd).then(|| FromQuoting::new(QuoteDir::Unquote)),
            o: (how == Unquoting::Mboxo).then_some(MboxoUnquote {
                at_line_start: true,
                matched: 0,
            }),
            chunk: vec![0; CHUNK],
            out: Vec::with_capacity(CHUNK),
            opos: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for Unquote<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rd.is_none() && self.o.is_none() {
            return self.inner.read(buf);
        }
        while self.opos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.out.clear();
            self.opos = 0;
            let n = read_some(&mut self.inner, &mut self.chunk)?;
            let input = &self.chunk[..n];
            match (&mut self.rd, &mut self.o) {
                (Some(q), _) if n > 0 => q.feed(input, &mut self.out),
                (Some(q), _) => q.finish(&mut self.out),
                (None, Some(q)) if n > 0 => q.feed(input, &mut self.out),
                (None, Some(q)) => q.finish(&mut self.out),
                (None, None) => {}
            }
            self.done = n == 0;
        }
        let n = buf.len().min(self.out.len() - self.opos);
        buf[..n].copy_from_slice(&self.out[self.opos..self.opos + n]);
        self.opos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------
// The From_ line and dates.

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch (negative before 1970).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            // -1.5 s is second -2.
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 { -s - 1 } else { -s }
        }
    }
}

/// The time at `secs` seconds since the epoch.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `Thu Nov 24 18:22:48 1986`, in UTC.
pub(crate) fn asctime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        y
    )
}

/// The envelope sender for a From_ line from a `Return-Path:` value: the address
/// inside `<>`, only graphic ASCII; `MAILER-DAEMON` when there is none.
pub(crate) fn sender_from_return_path(v: Option<&[u8]>) -> Vec<u8> {
    let v = v.unwrap_or_default();
    let inner = match (
        v.iter().position(|&b| b == b'<'),
        v.iter().rposition(|&b| b == b'>'),
    ) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    let s: Vec<u8> = inner
        .iter()
        .copied()
        .filter(u8::is_ascii_graphic)
        .take(256)
        .collect();
    if s.is_empty() {
        b"MAILER-DAEMON".to_vec()
    } else {
        s
    }
}

/// `From SENDER DATE\n`.
pub(crate) fn make_from_line(sender: &[u8], secs: i64) -> Vec<u8> {
    let mut v = b"From ".to_vec();
    v.extend_from_slice(sender);
    v.push(b' ');
    v.extend_from_slice(asctime(secs).as_bytes());
    v.push(b'\n');
    v
}

fn num(s: &str, max_len: usize) -> Option<i64> {
    (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn zone_offset(t: &str) -> Option<i64> {
    match t.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" => return Some(0),
        _ => {}
    }
    let (sign, digits) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let v = num(digits, 4).filter(|_| digits.len() == 4)?;
    let (h, m) = (v / 100, v % 100);
    (h < 24 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// The date of a From_ line (`From SENDER Www Mmm dd hh:mm[:ss] [ZONE] yyyy [ZONE]`),
/// in seconds since the epoch; a date without a numeric zone is taken as UTC (which
/// is what Correio, Python and Dovecot write).
pub(crate) fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line.strip_prefix(b"From ")?).ok()?;
    let toks: Vec<&str> = text.split_ascii_whitespace().take(16).collect();
    let is = |t: &str, names: &[&str]| names.iter().position(|n| n.eq_ignore_ascii_case(t));
    for i in 0..toks.len().saturating_sub(4) {
        if is(toks[i], &WEEKDAYS).is_none() {
            continue;
        }
        let Some(mon) = is(toks[i + 1], &MONTHS) else {
            continue;
        };
        let day = num(toks[i + 2], 2).filter(|d| (1..=31).contains(d))?;
        let mut hms = toks[i + 3].split(':');
        let h = num(hms.next()?, 2).filter(|v| *v < 24)?;
        let m = num(hms.next()?, 2).filter(|v| *v < 60)?;
        let s = match hms.next() {
            Some(s) => num(s, 2).filter(|v| *v <= 60)?,
            None => 0,
        };
        if hms.next().is_some() {
            return None;
        }
        let rest = &toks[i + 4..toks.len().min(i + 6)];
        let mut year = None;
        let mut zone = 0;
        for t in rest {
            if let Some(y) = num(t, 4).filter(|_| t.len() == 4) {
                year.get_or_insert(y);
            } else if let Some(z) = zone_offset(t) {
                zone = z;
            } else if year.is_some() {
                break;
            }
        }
        let year = year?;
        let days = days_from_civil(year, mon as i64 + 1, day);
        return Some(days * 86_400 + h * 3600 + m * 60 + s - zone);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox_of(msg: &[u8], flags: &Flags) -> Vec<u8> {
        let scan = scan_header(msg).unwrap();
        let plan = plan_mbox(
            &scan,
            msg.len() as u64,
            msg.last().copied(),
            flags,
            make_from_line(b"MAILER-DAEMON", 0),
        );
        let mut out = Vec::new();
        write_mbox_message(&plan, msg, &mut out).unwrap();
        out
    }

    fn back(content_quoted: &[u8]) -> (Vec<u8>, Flags) {
        let mut unq = Vec::new();
        Unquote::new(content_quoted, Unquoting::Mboxrd)
            .read_to_end(&mut unq)
            .unwrap();
        let meta = mbox_meta(&scan_header(&unq[..]).unwrap());
        let mut out = Vec::new();
        Derived::new(&unq[..], &meta).read_to_end(&mut out).unwrap();
        (out, meta.flags)
    }

    /// The content between the From_ line and the separator.
    fn content(mbox: &[u8]) -> &[u8] {
        let start = mbox.iter().position(|&b| b == b'\n').unwrap() + 1;
        &mbox[start..mbox.len() - 1]
    }

    #[test]
    fn flags_map_like_mutt() {
        let f = Flags::from_maildir_name(b"1.M1P1.h,S=5:2,FRSTDPab", true);
        assert_eq!(f.letters(), b"DFPRSTab");
        assert_eq!(f.status_value(), b"RO");
        assert_eq!(f.x_status_value(), b"AFTD");
        assert_eq!(f.extra_letters(), b"Pab");
        assert_eq!(f.maildir_info().unwrap(), ":2,DFPRSTab");
        assert_eq!(
            Flags::from_maildir_name(b"1.M1P1.h", false).maildir_info(),
            None
        );
        assert_eq!(
            Flags::from_maildir_name(b"1.M1P1.h", true)
                .maildir_info()
                .unwrap(),
            ":2,"
        );
    }

    #[test]
    fn inserted_fields_and_marker() {
        let f = Flags::new(true, b"SRP");
        let m = mbox_of(b"Subject: x\n\nbody\n", &f);
        assert_eq!(
            m,
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: x\nStatus: RO\nX-Status: A\nX-Correio-Convert: 1 flags=P\n\nbody\n\n"
        );
        assert_eq!(back(content(&m)), (b"Subject: x\n\nbody\n".to_vec(), f));
    }

    #[test]
    fn round_trips_of_awkward_messages() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"\r\n",
            b"no header no newline",
            b"Subject: x",
            b"Subject: x\n",
            b"Subject: x\r\n\r\nbody without newline",
            b"\n\nFrom leading blank\n",
            b"From x\nFrom y\n>From z\n\n>>From w\nFrom",
            b"Status: RO\nX-Status: A\n\nown status\n",
            b"Subject: a\nX-Correio-Convert: 1 no-final-newline\n\nfake marker\n",
            b"Subject: a\nX-Correio-Convert: 1\n",
            b"Subject: a\n folded\nStatus: R\n more\n\n",
            b"A: b\r\nbare\rcr\r\n\r\n\x00\xff8-bit\r",
            b"Subject: trailing\n\n\n\n",
            b"\r\xfa\n\r",
            b"X-Correio-Convert: 1\n\r",
            b"\r",
            b"Status: R\n\r",
        ];
        let flags = [
            Flags::default(),
            Flags::new(true, b""),
            Flags::new(false, b"S"),
            Flags::new(true, b"DFPRSTxyz"),
        ];
        for c in cases {
            for f in &flags {
                let m = mbox_of(c, f);
                assert_eq!(
                    back(content(&m)),
                    (c.to_vec(), f.clone()),
                    "{:?} {f:?}\n{}",
                    String::from_utf8_lossy(c),
                    String::from_utf8_lossy(&m)
                );
            }
        }
    }

    #[test]
    fn marker_is_strict() {
        let m = Marker {
            no_final_newline: true,
            keep_status: true,
            old: true,
            letters: b"PS".to_vec(),
        };
        let line = render_marker(&m, false);
        assert_eq!(
            line,
            b"X-Correio-Convert: 1 no-final-newline keep-status old flags=PS\n"
        );
        assert_eq!(parse_marker(&line), Some(m.clone()));
        assert_eq!(parse_marker(&render_marker(&m, true)), Some(m));
        for bad in [
            &b"X-Correio-Convert: 1  no-final-newline\n"[..],
            b"X-Correio-Convert: 2\n",
            b"X-Correio-Convert: 1 flags=SP\n",
            b"X-Correio-Convert: 1 old\n",
            b"X-Correio-Convert: 1",
            b"X-Correio-Convert: 1 bogus\n",
        ] {
            assert_eq!(parse_marker(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn dates() {
        for secs in [
            0,
            1,
            86_399,
            530_562_168,
            1_700_000_000,
            -86_401,
            4_102_444_800,
        ] {
            let line = make_from_line(b"a@b", secs);
            assert_eq!(
                from_line_date(&line),
                Some(secs),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
        assert_eq!(
            from_line_date(b"From a@b Mon Nov 24 18:22:48 1986"),
            Some(533_240_568)
        );
        assert_eq!(
            from_line_date(b"From a@b Mon Nov 24 18:22:48 +0100 1986\n"),
            Some(533_240_568 - 3600)
        );
        assert_eq!(
            from_line_date(b"From a@b Mon Nov 24 18:22 1986 -0030\r\n"),
            Some(533_240_520 + 1800)
        );
        assert_eq!(
            from_line_date(b"From Mon Nov 24 18:22:48 1986"),
            Some(533_240_568)
        );
        assert_eq!(from_line_date(b"From a@b yesterday"), None);
        assert_eq!(from_line_date(b"From a@b Mon Nov 24 25:22:48 1986"), None);
        assert_eq!(
            sender_from_return_path(Some(b" <bounce@example.org> ")),
            b"bounce@example.org"
        );
        assert_eq!(sender_from_return_path(Some(b"<>")), b"MAILER-DAEMON");
        assert_eq!(sender_from_return_path(None), b"MAILER-DAEMON");
    }

    #[test]
    fn derived_reader_in_small_reads() {
        let content = b"Status: RO\nSubject: s\nX-Correio-Convert: 1 no-final-newline\n\nabc\n";
        let meta = mbox_meta(&scan_header(&content[..]).unwrap());
        let mut r = Derived::new(&content[..], &meta);
        let mut out = Vec::new();
        let mut one = [0u8; 1];
        while r.read(&mut one).unwrap() == 1 {
            out.push(one[0]);
        }
        assert_eq!(out, b"Subject: s\n\nabc");
        assert_eq!(meta.flags, Flags::new(true, b"S"));
    }

    #[test]
    fn mboxo_unquoting() {
        let mut out = Vec::new();
        Unquote::new(&b">From a\n>>From b\n>Fro\n>From"[..], Unquoting::Mboxo)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"From a\n>>From b\n>Fro\n>From");
    }
}
