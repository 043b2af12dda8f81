//! `correio convert`: copies mail between a Maildir, an mbox file and a folder of
//! `.eml` files, streaming, resumable, keeping each message's bytes, flags, date and
//! (where the destination can hold it) its POP3 UIDL.
//!
//! # What "the message" is in each format
//!
//! - **Maildir**: the bytes of the file. Flags: the `:2,` info letters of the name, and
//!   whether the file is in `cur/` ("old") or `new/`. Date: the file's mtime (as Dovecot
//!   and Python's `mailbox` read it). UIDL: what Correio's POP3 server shows for it.
//! - **EML folder**: the bytes of each `*.eml` file. Date: its mtime. No flags, no UIDL
//!   (an `.eml` file is only a message; names starting with `.` are not messages).
//! - **mbox**: the bytes between the From_ line and the separator line, mboxrd-unquoted
//!   (a body line `>+From ` loses one `>`), **minus the mbox's flag fields**: the
//!   `Status:` and `X-Status:` fields of the header are metadata, not content, as for
//!   mutt and Dovecot (and Correio's own mbox UIDLs ignore them). Flags: `Status: R`
//!   (seen) and `O` (old), `X-Status: A` (replied), `F` (flagged), `T` (draft), `D`
//!   (trashed) — the mapping mutt, Dovecot and Python use for Maildir `S`, cur/,
//!   `R`, `F`, `D`, `T`. Date: the From_ line's date (read as UTC unless it carries a
//!   numeric zone; Correio, Python and Dovecot write UTC).
//!
//! Reading mbox: mboxrd and mboxo (read as mboxrd; only lines `>>From ` differ, which
//! mboxo cannot tell apart anyway), and Content-Length bodies as Correio's scanner
//! decides (mboxcl2: verbatim); with [`Options::mboxcl`], Content-Length bodies are
//! mboxo-unquoted (mboxcl, as mutt writes them). Writing mbox: always mboxrd.
//!
//! # The marker field, and the one thing mbox cannot store
//!
//! When an mbox is written, the flags become `Status:`/`X-Status:` fields inserted at
//! the end of the header. Three cases cannot be written that way and read back
//! byte-exact; for them (only) one more field is inserted last in the header,
//! `X-Correio-Convert: 1 [no-final-newline] [keep-status [old]] [flags=LETTERS]`, which
//! reading removes again:
//!
//! 1. **A message without a final line end.** No mbox variant can store one: the line
//!    end before the separator is part of the message for every mbox reader (a
//!    Content-Length body must also end at a line end for Correio's scanner and for
//!    mutt). So the mbox gets one `\n` more (every mbox reader sees the message with
//!    it, as they would with any writer) and `no-final-newline` records it, so that a
//!    conversion back is byte-exact. There is no other place to record it: the From_
//!    line is read by other programs (and a stricter scanner may reject additions),
//!    and the separator rules leave no room.
//! 2. **A message that has its own `Status:`/`X-Status:` fields** (for example one that
//!    a POP3 server read out of an mbox). In an mbox they would be taken for flags, so
//!    they are kept as they are, no flag fields are added, and `keep-status` says so;
//!    the real flags are in `old` and `flags=`. Other mail programs then show the
//!    message's own fields.
//! 3. **Flags that `Status:`/`X-Status:` cannot carry** (Maildir `P` passed, keywords
//!    `a`–`z`): `flags=` keeps them.
//!
//! The field is also added when the message's own header ends with a field of that
//! name, so that reading never removes a line that belongs to the message. Only the
//! canonical form as the last header line counts as the marker. Everything else is
//! copied byte for byte, so Maildir → mbox → EML → Maildir gives back every message
//! byte-exact with its date, and Maildir ↔ mbox keeps the flags (EML has none).
//!
//! # UIDLs
//!
//! A Maildir destination keeps them: converting from a Maildir keeps the base name of
//! each file when it is free (and with it the UIDL derived from it); any other UIDL is
//! recorded as a `P<uidl>` record in the destination's `dovecot-uidlist` (Dovecot's
//! migration format, read by Correio's POP3 server and by Dovecot) before the file
//! appears. A UIDL containing `:` cannot be stored there and is not kept. An mbox
//! cannot hold UIDLs without changing the messages (Correio's mbox UIDLs are digests of
//! the From_ line and content), nor can an EML folder; the report counts what was not
//! kept. Converting from POP3 (`correio convert pop3://…`) is `correio fetch` into the
//! destination and keeps no UIDLs in it (the fetch state file records them).
//!
//! # Dates
//!
//! Maildir and EML files get the message's date as mtime; a new Maildir name starts
//! with it (`<secs>.M<position>P<pid>…`, so readers that order by name keep the
//! source's order). An mbox From_ line gets the date in UTC and the envelope sender
//! from `Return-Path:` (else `MAILER-DAEMON`); from an mbox source the original From_
//! line is kept. A From_ line has whole seconds, so dates through an mbox lose their
//! fraction.
//!
//! # Resuming
//!
//! The destination has a state file (see `state.rs`) recording, per source, the
//! messages copied, and the steps an interrupted run left: a killed run restarted with
//! the same source and destination copies the rest, with no duplicate and nothing
//! lost (see `dest.rs` for how each destination commits a batch). Sources are named
//! by kind and canonical path. A failpoint for tests: `CORREIO_FAILPOINT=NAME:N`
//! aborts the process (as a kill would) when point NAME's counter reaches N:
//! `convert-after-write` counts messages written by this run (their batch not yet
//! recorded), `convert-after-commit` is checked after each batch is recorded (its
//! files not yet renamed into place). It is for tests only.
//!
//! # Memory
//!
//! Messages are copied in 64 KiB chunks, headers scanned line by line keeping 512 bytes
//! of a line, so memory does not grow with message size. It grows with the number of
//! messages (the listing and the set of copied keys: some 200 bytes a message).

mod dest;
mod message;
mod source;
mod state;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use message::Flags;

use crate::error::StoreError;

/// A mailbox to convert from or to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailbox {
    /// `maildir:DIR`
    Maildir(PathBuf),
    /// `mbox:FILE`
    Mbox(PathBuf),
    /// `eml:DIR`: one `.eml` file per message.
    Eml(PathBuf),
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mailbox::Maildir(p) => write!(f, "maildir:{}", p.display()),
            Mailbox::Mbox(p) => write!(f, "mbox:{}", p.display()),
            Mailbox::Eml(p) => write!(f, "eml:{}", p.display()),
        }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

impl Mailbox {
    /// `maildir:DIR`, `mbox:FILE` or `eml:DIR` (`~/` expanded), or a bare path that
    /// exists, recognised by [`Mailbox::detect`].
    pub fn parse(spec: &str) -> Result<Mailbox, ConvertError> {
        if let Some((kind, rest)) = spec.split_once(':') {
            let make = match kind {
                "maildir" => Some(Mailbox::Maildir as fn(PathBuf) -> Mailbox),
                "mbox" => Some(Mailbox::Mbox as fn(PathBuf) -> Mailbox),
                "eml" => Some(Mailbox::Eml as fn(PathBuf) -> Mailbox),
                _ => None,
            };
            if let Some(make) = make {
                if rest.is_empty() {
                    return Err(ConvertError::Usage(format!("{spec:?}: empty path")));
                }
                return Ok(make(expand_home(rest)));
            }
        }
        Mailbox::detect(&expand_home(spec))
    }

    /// What an existing path is: a directory with `cur/`, `new/` and `tmp/` is a
    /// Maildir; a directory holding `*.eml` files is an EML folder; a file starting
    /// with a From_ line (or empty) is an mbox.
    pub fn detect(path: &Path) -> Result<Mailbox, ConvertError> {
        let hint = "write maildir:PATH, mbox:PATH or eml:PATH to say which";
        let meta = fs::metadata(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ConvertError::Usage(format!(
                    "{} does not exist; to create it, {hint}",
                    path.display()
                ))
            } else {
                io_err("cannot access", path, e)
            }
        })?;
        if meta.is_dir() {
            if ["cur", "new", "tmp"].iter().all(|s| path.join(s).is_dir()) {
                return Ok(Mailbox::Maildir(path.to_path_buf()));
            }
            let rd = fs::read_dir(path).map_err(|e| io_err("cannot list", path, e))?;
            let has_eml = rd.flatten().any(|e| {
                let n = e.file_name();
                let b = std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str());
                b.len() > 4 && b[b.len() - 4..].eq_ignore_ascii_case(b".eml")
            });
            if has_eml {
                return Ok(Mailbox::Eml(path.to_path_buf()));
            }
            return Err(ConvertError::Usage(format!(
                "cannot tell what {} is (neither a Maildir nor a folder of .eml files); {hint}",
                path.display()
            )));
        }
        let mut head = [0u8; 5];
        let f = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
        let n = f
            .read_at(&mut head, 0)
            .map_err(|e| io_err("cannot read", path, e))?;
        if n == 0 || &head[..n] == b"From " {
            return Ok(Mailbox::Mbox(path.to_path_buf()));
        }
        Err(ConvertError::Usage(format!(
            "{} is not an mbox (it does not start with a From_ line); {hint}",
            path.display()
        )))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            Mailbox::Maildir(p) | Mailbox::Mbox(p) | Mailbox::Eml(p) => p,
        }
    }

    /// The state file of this mailbox as a destination: `.correio-convert-state` in a
    /// Maildir or EML folder, `.NAME.correio-convert-state` next to an mbox `NAME`.
    pub fn state_path(&self) -> PathBuf {
        match self {
            Mailbox::Maildir(p) | Mailbox::Eml(p) => p.join(".correio-convert-state"),
            Mailbox::Mbox(p) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.with_file_name(format!(".{name}.correio-convert-state"))
            }
        }
    }
}

/// Settings of a conversion.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Most messages per batch (one state record and one set of fsyncs per batch).
    pub batch_messages: usize,
    /// Most bytes per batch (about).
    pub batch_bytes: u64,
    /// How long to wait for mbox locks.
    pub lock_timeout: Duration,
    /// Read Content-Length bodies of an mbox source as mboxcl (mboxo-quoted) rather
    /// than mboxcl2 (verbatim).
    pub mboxcl: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_messages: 256,
            batch_bytes: 64 * 1024 * 1024,
            lock_timeout: crate::lock::DEFAULT_LOCK_TIMEOUT,
            mboxcl: false,
        }
    }
}

impl Options {
    /// Sets [`Options::batch_messages`] (at least 1).
    pub fn batch_messages(mut self, n: usize) -> Self {
        self.batch_messages = n.max(1);
        self
    }
    /// Sets [`Options::mboxcl`].
    pub fn mboxcl(mut self, v: bool) -> Self {
        self.mboxcl = v;
        self
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Messages in the source.
    pub source_messages: u64,
    /// Messages copied by this run.
    pub copied: u64,
    /// Their size in octets (as stored in the destination).
    pub copied_bytes: u64,
    /// Messages skipped because an earlier run copied them.
    pub already_done: u64,
    /// Messages removed from the source while this run worked.
    pub vanished: u64,
    /// Steps of an interrupted run finished or undone at the start.
    pub recovered: u64,
    /// UIDLs the destination keeps.
    pub uidls_kept: u64,
    /// UIDLs the destination could not keep.
    pub uidls_not_kept: u64,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

impl Report {
    fn note_once(&mut self, s: String) {
        if !self.warnings.contains(&s) {
            self.warnings.push(s);
        }
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The mailboxes given cannot be used as they are.
    #[error("{0}")]
    Usage(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A store error (locks, Maildir creation).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state file cannot be used.
    #[error("{0}")]
    State(String),
    /// An interrupted run left something that cannot be undone safely.
    #[error("{0}")]
    Recovery(String),
    /// The source changed under us in a way we cannot follow.
    #[error("{0}")]
    SourceChanged(String),
}

pub(crate) fn io_err(what: &str, path: &Path, source: io::Error) -> ConvertError {
    ConvertError::Io {
        context: format!("{what} {}", path.display()),
        source,
    }
}

/// One message of an mbox, as Correio's mbox scanner (the one the POP3 server uses)
/// splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MboxMessage {
    /// Offset of the From_ line.
    pub from_start: u64,
    /// The From_ line, with its line end (at most 4 KiB of it).
    pub from_line: Vec<u8>,
    /// The content: from after the From_ line up to the separator line.
    pub content: Range<u64>,
    /// The body was delimited by a Content-Length field and is stored verbatim
    /// (mboxcl2); otherwise From_ quoting applies to the whole content.
    pub content_length_body: bool,
    /// The UIDL the POP3 server shows for it.
    pub uidl: String,
}

const MAX_FROM_LINE: u64 = 4096;

fn to_mbox_messages(
    scanned: &[crate::mbox::ScannedMessage],
    read_at: impl Fn(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<Vec<MboxMessage>> {
    let ids = crate::mbox::uidls(scanned);
    let mut out = Vec::with_capacity(scanned.len());
    for (m, uidl) in scanned.iter().zip(ids) {
        let len = (m.content_start - m.from_start).min(MAX_FROM_LINE);
        let mut from_line = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let mut got = 0;
        while got < from_line.len() {
            let n = read_at(&mut from_line[got..], m.from_start + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        from_line.truncate(got);
        out.push(MboxMessage {
            from_start: m.from_start,
            from_line,
            content: m.content_start..m.content_end,
            content_length_body: m.encoding == crate::mbox::Encoding::Verbatim,
            uidl,
        });
    }
    Ok(out)
}

/// Splits the mbox `file` into messages with Correio's mbox scanner, without reading
/// it into memory (the list costs some 200 bytes a message).
pub fn scan_mbox(file: &File) -> io::Result<Vec<MboxMessage>> {
    let len = file.metadata()?.len();
    let s = crate::mbox::scan(file, len)?;
    to_mbox_messages(&s.messages, |buf, at| file.read_at(buf, at))
}

/// [`scan_mbox`] on bytes in memory (tests, fuzzing).
fn scan_mbox_bytes(data: &[u8]) -> io::Result<Vec<MboxMessage>> {
    let s = crate::mbox::scan(&data, data.len() as u64)?;
    to_mbox_messages(&s.messages, |buf, at| {
        let start = usize::try_from(at).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    })
}

/// Test-only kill points (see the module docs).
pub(crate) fn failpoint(name: &str, count: u64) {
    crate::failpoint::hit_at(name, count);
}

/// The path `p` names once it exists: canonical parent and file name.
fn canonical_target(p: &Path) -> PathBuf {
    if let Ok(c) = fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| p.to_path_buf())
        }
        _ => p.to_path_buf(),
    }
}

/// Copies every message of `from` that an earlier run into `to` has not copied yet;
/// see the module docs. `progress` is called after each batch with the report so far.
pub fn convert(
    from: &Mailbox,
    to: &Mailbox,
    opts: &Options,
    progress: &mut dyn FnMut(&Report),
) -> Result<Report, ConvertError> {
    let src_path =
        fs::canonicalize(from.path()).map_err(|e| io_err("cannot open", from.path(), e))?;
    if canonical_target(to.path()) == src_path {
        return Err(ConvertError::Usage(format!(
            "{from} and {to} are the same place"
        )));
    }
    let source = match from {
        Mailbox::Maildir(p) => source::Source::maildir(p)?,
        Mailbox::Eml(p) => source::Source::eml(p)?,
        Mailbox::Mbox(p) => source::Source::mbox(p, opts.lock_timeout, opts.mboxcl)?,
    };
    let mut dest = match to {
        Mailbox::Maildir(p) => dest::Dest::maildir(p)?,
        Mailbox::Eml(p) => dest::Dest::eml(p)?,
        Mailbox::Mbox(p) => dest::Dest::mbox(p)?,
    };
    let kind = match from {
        Mailbox::Maildir(_) => "maildir:",
        Mailbox::Mbox(_) => "mbox:",
        Mailbox::Eml(_) => "eml:",
    };
    let id = [
        kind.as_bytes(),
        std::os::unix::ffi::OsStrExt::as_bytes(src_path.as_os_str()),
    ]
    .concat();
    let mut state = state::State::open(&to.state_path(), &id)?;
    let mut report = Report::default();
    dest.recover(&mut state, opts, &mut report)?;
    let list = source.list()?;
    report.source_messages = list.len() as u64;
    let mut run = dest::Progress::default();
    let mut batch: Vec<(&source::SourceMessage, source::Prepared)> = Vec::new();
    let mut batch_bytes = 0u64;
    for m in &list {
        if state.is_done(&m.key) {
            report.already_done += 1;
            continue;
        }
        let Some(p) = source.prepare(m)? else {
            report.vanished += 1;
            continue;
        };
        batch_bytes += p.len_last.map_or(m.size_hint, |(l, _)| l);
        batch.push((m, p));
        if batch.len() >= opts.batch_messages || batch_bytes >= opts.batch_bytes {
            dest.write_batch(&source, &batch, &mut state, opts, &mut report, &mut run)?;
            batch.clear();
            batch_bytes = 0;
            progress(&report);
        }
    }
    if !batch.is_empty() {
        dest.write_batch(&source, &batch, &mut state, opts, &mut report, &mut run)?;
        progress(&report);
    }
    if report.uidls_not_kept > 0 {
        let why = match to {
            Mailbox::Mbox(_) => "an mbox cannot hold UIDLs without changing the messages",
            Mailbox::Eml(_) => "a folder of .eml files has no place for UIDLs",
            Mailbox::Maildir(_) => "they contain ':' or the uidlist could not take them",
        };
        report.note_once(format!("{} UIDL(s) not kept: {why}", report.uidls_not_kept));
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------
// Fuzz bodies (the targets in fuzz/ call these; tests replay the seed corpus).

/// Reads every message of mbox bytes the way a conversion does: (message, flags,
/// From_ line).
/// A message read from an mbox: its bytes, flags and From_ line.
type ReadMessage = (Vec<u8>, Flags, Vec<u8>);

fn read_mbox_bytes(data: &[u8], mboxcl: bool) -> io::Result<Vec<ReadMessage>> {
    use io::Read;
    use message::{Derived, Unquote, Unquoting, mbox_meta, scan_header};
    let mut out = Vec::new();
    for m in scan_mbox_bytes(data)? {
        let raw = &data[usize::try_from(m.content.start).unwrap_or(0)
            ..usize::try_from(m.content.end).unwrap_or(0)];
        let how = match (m.content_length_body, mboxcl) {
            (false, _) => Unquoting::Mboxrd,
            (true, true) => Unquoting::Mboxo,
            (true, false) => Unquoting::None,
        };
        let meta = mbox_meta(&scan_header(Unquote::new(raw, how))?);
        let mut msg = Vec::new();
        Derived::new(Unquote::new(raw, how), &meta).read_to_end(&mut msg)?;
        out.push((msg, meta.flags, m.from_line));
    }
    Ok(out)
}

/// Writes messages as a conversion writes an mbox (a From_ line that does not end
/// with a line end is replaced).
fn write_mbox_bytes(msgs: &[ReadMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for (msg, flags, from) in msgs {
        let Ok(scan) = message::scan_header(&msg[..]) else {
            continue;
        };
        let from = if from.starts_with(b"From ") && from.ends_with(b"\n") {
            from.clone()
        } else {
            message::make_from_line(b"MAILER-DAEMON", 0)
        };
        let plan = message::plan_mbox(&scan, msg.len() as u64, msg.last().copied(), flags, from);
        let _ = message::write_mbox_message(&plan, &msg[..], &mut out);
    }
    out
}

fn mentions_content_length(data: &[u8]) -> bool {
    data.windows(14)
        .any(|w| w.eq_ignore_ascii_case(b"content-length"))
}

/// One message and its flags (from the first byte) written into an mbox and read
/// back: the same bytes and flags. Not asserted when the message mentions
/// Content-Length: the scanner may then read a body verbatim (mboxcl2), by design.
#[doc(hidden)]
pub fn fuzz_message(data: &[u8]) {
    let (bits, msg) = data.split_first().map_or((0, &[][..]), |(b, m)| (*b, m));
    let letters: Vec<u8> = [b'S', b'R', b'F', b'T', b'D', b'P', b'k']
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (2 << i) != 0)
        .map(|(_, &c)| c)
        .collect();
    let flags = Flags::new(bits & 1 != 0, &letters);
    let mbox = write_mbox_bytes(&[(msg.to_vec(), flags.clone(), Vec::new())]);
    let back = read_mbox_bytes(&mbox, false).expect("in-memory read");
    if mentions_content_length(msg) {
        return;
    }
    assert_eq!(back.len(), 1, "one message in, one out");
    assert_eq!(back[0].0, msg, "the message changed");
    assert_eq!(back[0].1, flags, "the flags changed");
}

/// Any mbox read as a conversion reads it, written back and read again: the same
/// messages and flags (a conversion mbox → mbox is exact); From_ line dates parse
/// without panicking and print back to the same time.
#[doc(hidden)]
pub fn fuzz_mbox(data: &[u8]) {
    let Ok(first) = read_mbox_bytes(data, data.first().is_some_and(|b| b & 1 == 1)) else {
        return;
    };
    for (_, _, from) in &first {
        // Years 1000 to 9999 (asctime does not pad other years to four digits).
        if let Some(secs) = message::from_line_date(from)
            && (-30_610_224_000..253_402_300_800).contains(&secs)
        {
            let again = message::make_from_line(b"x", secs);
            assert_eq!(message::from_line_date(&again), Some(secs));
        }
    }
    let second = read_mbox_bytes(&write_mbox_bytes(&first), false).expect("in-memory read");
    if mentions_content_length(data) {
        return;
    }
    let strip = |v: &[ReadMessage]| -> Vec<(Vec<u8>, Flags)> {
        v.iter().map(|(m, f, _)| (m.clone(), f.clone())).collect()
    };
    assert_eq!(
        strip(&second),
        strip(&first),
        "mbox → mbox changed messages"
    );
}

/// State file parsing: never panics; cutting the torn tail it reports gives the same
/// records and nothing more to cut.
#[doc(hidden)]
pub fn fuzz_state(data: &[u8]) {
    if let Ok((parsed, valid)) = state::parse(data, b"maildir:/x") {
        let valid = usize::try_from(valid).expect("fits");
        assert!(valid <= data.len());
        let again = state::parse(&data[..valid], b"maildir:/x").expect("valid prefix parses");
        assert_eq!(again, (parsed, valid as u64));
    }
    for s in [data, &b"%"[..], &b"a%zz"[..]] {
        if let Some(b) = state::unesc(s) {
            assert_eq!(state::esc(&b).as_bytes(), s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            Mailbox::parse("maildir:/x/y").unwrap(),
            Mailbox::Maildir("/x/y".into())
        );
        assert_eq!(Mailbox::parse("mbox:f").unwrap(), Mailbox::Mbox("f".into()));
        assert_eq!(Mailbox::parse("eml:d").unwrap(), Mailbox::Eml("d".into()));
        assert!(Mailbox::parse("maildir:").is_err());
        assert!(Mailbox::parse("/nonexistent/correio/x").is_err());
        assert_eq!(
            Mailbox::Mbox("/a/inbox".into()).state_path(),
            PathBuf::from("/a/.inbox.correio-convert-state")
        );
        assert_eq!(
            Mailbox::Eml("/a/d".into()).state_path(),
            PathBuf::from("/a/d/.correio-convert-state")
        );
    }

    #[test]
    fn fuzz_bodies_on_samples() {
        for m in [
            &b""[..],
            b"\x7fSubject: x\n\nFrom y\n>From z\nno newline",
            b"\x00\n",
            b"\xffStatus: RO\r\n\r\n",
        ] {
            fuzz_message(m);
            fuzz_mbox(m);
            fuzz_state(m);
        }
        fuzz_mbox(b"From a Thu Jan  1 00:00:00 1970\nStatus: O\n\nx\n\nFrom b Fri Jan  2 00:00:00 1970\n\n");
    }
}
