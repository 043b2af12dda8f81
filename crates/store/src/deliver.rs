//! Delivery of one message into a mailbox, shared by `correio deliver` and LMTP: the
//! options, the result, the errors, and the push-style [`Normalizer`] every backend
//! writes through. Which backend stores the message is chosen in [`crate::backend`].
//!
//! Contract (a delivered message is visible only once complete and durable): when
//! [`crate::deliver()`] returns `Ok`, the message is
//! complete and durable (file and directory entry fsynced); until then it is invisible
//! to readers (Maildir: it lives in `tmp/`; mbox: it is appended under the local mail
//! locks and truncated away again on any failure). Errors say whether the sender should
//! retry ([`DeliverError::is_temporary`]) and map to LMTP replies and sendmail exit
//! codes.
//!
//! Stored form: line ends are normalized to LF (CRLF from LMTP becomes LF, as Dovecot
//! stores it) or, with [`LineEnds::Crlf`], to CRLF (Dovecot's `mail_save_crlf`), and a
//! message that does not end with a line end gets one, so the `,W=` size in a Maildir
//! name is exactly what RETR sends. With CRLF, a message none of whose lines starts
//! with `.` is stored exactly as POP3 sends it: the server can hand the file to the
//! socket as it is (see [`Normalized::wire_form`]).

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;
use crate::location::LocationError;
use crate::lock::DEFAULT_LOCK_TIMEOUT;

/// Options of one delivery.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliverOptions {
    /// Refuse messages larger than this many octets (as received). Permanent failure.
    pub max_message_size: Option<u64>,
    /// Per-mailbox quota in stored octets (existing messages plus this one).
    pub quota_bytes: Option<u64>,
    /// Per-mailbox quota in messages (existing messages plus this one).
    pub quota_messages: Option<u64>,
    /// Whether a quota overrun is permanent (5.2.2, bounce) rather than temporary
    /// (4.2.2, the MTA retries later). Default: temporary, as Dovecot.
    pub quota_permanent: bool,
    /// The envelope sender for the mbox `From ` line (`MAILER-DAEMON` when unset).
    pub envelope_sender: Option<String>,
    /// How long to wait for the mbox locks.
    pub lock_timeout: Duration,
    /// The line ends messages are stored with (Maildir; mbox and database stores keep
    /// LF whatever this says).
    pub line_ends: LineEnds,
}

/// The line ends of stored messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnds {
    /// LF, as Dovecot, mutt and most Maildir tools write them (the default).
    #[default]
    Lf,
    /// CRLF, as they go on the wire: a message with no line starting with `.` is
    /// stored in its wire form, which POP3 can send without reading it.
    Crlf,
}

impl LineEnds {
    /// Parses `lf` or `crlf` (the configuration's words).
    pub fn parse(s: &str) -> Option<LineEnds> {
        match s {
            "lf" => Some(LineEnds::Lf),
            "crlf" => Some(LineEnds::Crlf),
            _ => None,
        }
    }
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            max_message_size: None,
            quota_bytes: None,
            quota_messages: None,
            quota_permanent: false,
            envelope_sender: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            line_ends: LineEnds::Lf,
        }
    }
}

impl DeliverOptions {
    /// Sets [`DeliverOptions::max_message_size`].
    pub fn max_message_size(mut self, v: Option<u64>) -> Self {
        self.max_message_size = v;
        self
    }
    /// Sets the quota (octets, messages).
    pub fn quota(mut self, bytes: Option<u64>, messages: Option<u64>) -> Self {
        self.quota_bytes = bytes;
        self.quota_messages = messages;
        self
    }
    /// Sets [`DeliverOptions::quota_permanent`].
    pub fn quota_permanent(mut self, v: bool) -> Self {
        self.quota_permanent = v;
        self
    }
    /// Sets the envelope sender used for the mbox `From ` line.
    pub fn envelope_sender(mut self, v: Option<String>) -> Self {
        self.envelope_sender = v;
        self
    }
    /// Sets the mbox lock timeout.
    pub fn lock_timeout(mut self, v: Duration) -> Self {
        self.lock_timeout = v;
        self
    }
    /// Sets [`DeliverOptions::line_ends`].
    pub fn line_ends(mut self, v: LineEnds) -> Self {
        self.line_ends = v;
        self
    }
}

/// A durable delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// The Maildir file in `new/`, or the mbox file; for a store backend,
    /// `STORE:MAILBOX/UIDL`.
    pub path: PathBuf,
    /// Octets stored (without the mbox `From ` line and quoting).
    pub size: u64,
    /// The POP3 wire size (CRLF line ends) of the stored message.
    pub wire_size: u64,
}

impl Delivered {
    /// A delivery record (for store backends).
    pub fn new(path: PathBuf, size: u64, wire_size: u64) -> Self {
        Delivered {
            path,
            size,
            wire_size,
        }
    }
}

/// The class of a delivery failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverErrorKind {
    /// Larger than [`DeliverOptions::max_message_size`].
    TooLarge,
    /// Over the mailbox quota.
    QuotaExceeded,
    /// The file system is full (ENOSPC/EDQUOT).
    DiskFull,
    /// The mailbox path cannot be used (a file where a directory belongs, a bad
    /// template, permission denied).
    MailboxUnusable,
    /// The mbox locks could not be taken in time.
    LockTimeout,
    /// Reading the message failed (the sender went away).
    Input,
    /// Another I/O error.
    Io,
}

/// Why a delivery failed; see [`DeliverError::is_temporary`].
#[derive(Debug)]
pub struct DeliverError {
    kind: DeliverErrorKind,
    permanent: bool,
    message: String,
    source: Option<io::Error>,
}

impl DeliverError {
    /// A new error of `kind`; `permanent` says the sender must not retry.
    pub fn new(kind: DeliverErrorKind, permanent: bool, message: impl Into<String>) -> Self {
        DeliverError {
            kind,
            permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the I/O error behind this one.
    pub fn with_source(mut self, e: io::Error) -> Self {
        self.source = Some(e);
        self
    }

    /// Classifies an I/O error hit while writing to `what`.
    pub fn from_io(what: &str, e: io::Error) -> Self {
        let kind = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => DeliverErrorKind::DiskFull,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOTDIR) | Some(libc::EISDIR)
            | Some(libc::EROFS) => DeliverErrorKind::MailboxUnusable,
            _ => DeliverErrorKind::Io,
        };
        // Configuration and disk problems are temporary: the admin can fix them and the
        // MTA keeps the mail queued meanwhile, instead of bouncing it.
        DeliverError::new(kind, false, format!("{what}: {e}")).with_source(e)
    }

    /// The class of failure.
    pub fn kind(&self) -> DeliverErrorKind {
        self.kind
    }

    /// Whether the sender should try again later (LMTP 4xx, exit 75).
    pub fn is_temporary(&self) -> bool {
        !self.permanent
    }

    /// The RFC 3463 enhanced status code.
    pub fn enhanced_status(&self) -> &'static str {
        match (self.kind, self.permanent) {
            (DeliverErrorKind::TooLarge, _) => "5.3.4",
            (DeliverErrorKind::QuotaExceeded, true) => "5.2.2",
            (DeliverErrorKind::QuotaExceeded, false) => "4.2.2",
            (DeliverErrorKind::DiskFull, _) => "4.3.1",
            (DeliverErrorKind::MailboxUnusable, true) => "5.2.0",
            (DeliverErrorKind::MailboxUnusable, false) => "4.2.0",
            (DeliverErrorKind::LockTimeout, _) => "4.2.0",
            (DeliverErrorKind::Input, _) => "4.4.2",
            (DeliverErrorKind::Io, true) => "5.3.0",
            (DeliverErrorKind::Io, false) => "4.3.0",
        }
    }

    /// The basic LMTP/SMTP reply code: 552 for size and permanent quota, 452 for a
    /// temporary quota or full disk, 451 for other temporary failures, 550 otherwise.
    pub fn reply_code(&self) -> u16 {
        match (self.kind, self.permanent) {
            (DeliverErrorKind::TooLarge, _) | (DeliverErrorKind::QuotaExceeded, true) => 552,
            (DeliverErrorKind::QuotaExceeded, false) | (DeliverErrorKind::DiskFull, _) => 452,
            (_, false) => 451,
            (_, true) => 550,
        }
    }

    /// The sendmail exit code (sysexits.h): 75 EX_TEMPFAIL for temporary failures,
    /// 73 EX_CANTCREAT for a permanently unusable mailbox, 69 EX_UNAVAILABLE otherwise
    /// (size, permanent quota).
    pub fn exit_code(&self) -> u8 {
        if !self.permanent {
            return 75;
        }
        match self.kind {
            DeliverErrorKind::MailboxUnusable => 73,
            _ => 69,
        }
    }
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeliverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<StoreError> for DeliverError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LockTimeout(p) => DeliverError::new(
                DeliverErrorKind::LockTimeout,
                false,
                format!("timed out waiting for the lock on {}", p.display()),
            ),
            StoreError::Io { context, source } => DeliverError::from_io(&context, source),
            StoreError::Location(l) => DeliverError::from(l),
            other => DeliverError::new(
                DeliverErrorKind::Io,
                !other.is_temporary(),
                other.to_string(),
            ),
        }
    }
}

impl From<LocationError> for DeliverError {
    fn from(e: LocationError) -> Self {
        // A bad location is a configuration problem: temporary, so mail waits for the fix.
        DeliverError::new(DeliverErrorKind::MailboxUnusable, false, e.to_string())
    }
}

/// The push-style core of every write into a mailbox (Maildir, mbox; `deliver`, LMTP
/// and `correio fetch`): message bytes go in by [`Normalizer::feed`] in whatever chunks
/// they arrive, stored bytes come out to a sink. It normalizes line ends (CRLF → LF,
/// a final line end added), counts the POP3 wire size, and enforces the size limit on
/// the octets received and `budget` on the octets stored. Memory is bounded by the
/// chunk size: nothing is kept between calls but a pending CR.
#[derive(Debug)]
pub struct Normalizer {
    max_size: Option<u64>,
    budget: Option<u64>,
    quota_permanent: bool,
    norm: LineEndTransform,
    wire: crate::wire::WireCounter,
    received: u64,
    stored: u64,
    /// Stored lines that start with `.` (the dot-stuffer doubles those dots).
    dot_lines: crate::transform::DotLines,
    last: Option<u8>,
    out: Vec<u8>,
}

/// The line-end normalization of a [`Normalizer`].
#[derive(Debug)]
enum LineEndTransform {
    ToLf(crate::transform::CrlfToLf),
    ToCrlf(crate::transform::LfToCrlf),
}

/// What a [`Normalizer`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Normalized {
    /// Octets stored.
    pub stored: u64,
    /// The POP3 wire size (RFC 1939's exact size).
    pub wire: u64,
    /// How many stored lines start with `.`.
    pub dot_lines: u64,
}

impl Normalized {
    /// Whether the stored bytes are exactly what RETR sends before the final `.`
    /// line: every line end is CRLF (then the stored and wire sizes agree) and no line
    /// needs a stuffing dot.
    pub fn wire_form(&self) -> bool {
        self.stored == self.wire && self.dot_lines == 0
    }
}

impl Normalizer {
    /// A normalizer to LF line ends.
    pub fn new(max_size: Option<u64>, budget: Option<u64>, quota_permanent: bool) -> Self {
        Normalizer {
            max_size,
            budget,
            quota_permanent,
            norm: LineEndTransform::ToLf(Default::default()),
            wire: crate::wire::WireCounter::new(),
            received: 0,
            stored: 0,
            dot_lines: Default::default(),
            last: None,
            out: Vec::new(),
        }
    }

    /// Stores with `line_ends` instead of LF.
    pub fn with_line_ends(mut self, line_ends: LineEnds) -> Self {
        self.norm = match line_ends {
            LineEnds::Lf => LineEndTransform::ToLf(Default::default()),
            LineEnds::Crlf => LineEndTransform::ToCrlf(Default::default()),
        };
        self
    }

    /// The line ends this normalizer stores.
    pub fn line_ends(&self) -> LineEnds {
        match self.norm {
            LineEndTransform::ToLf(_) => LineEnds::Lf,
            LineEndTransform::ToCrlf(_) => LineEnds::Crlf,
        }
    }

    fn emit(
        &mut self,
        sink: &mut impl FnMut(&[u8]) -> Result<(), DeliverError>,
    ) -> Result<(), DeliverError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stored += self.out.len() as u64;
        if let Some(b) = self.budget
            && self.stored > b
        {
            return Err(DeliverError::new(
                DeliverErrorKind::QuotaExceeded,
                self.quota_permanent,
                "mailbox is over quota",
            ));
        }
        self.wire.feed(&self.out);
        self.dot_lines.feed(&self.out);
        self.last = self.out.last().copied();
        sink(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Message bytes as received; the stored form goes to `sink`.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), DeliverError>,
    ) -> Result<(), DeliverError> {
        self.received = self.received.saturating_add(data.len() as u64);
        if let Some(max) = self.max_size
            && self.received > max
        {
            return Err(DeliverError::new(
                DeliverErrorKind::TooLarge,
                true,
                format!("message exceeds the size limit of {max} octets"),
            ));
        }
        match &mut self.norm {
            LineEndTransform::ToLf(n) => n.feed(data, &mut self.out),
            LineEndTransform::ToCrlf(n) => n.feed(data, &mut self.out),
        }
        self.emit(&mut sink)
    }

    /// The message is complete: flushes the rest (adding a final line end when it has
    /// none) and says what was stored.
    pub fn finish(
        mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), DeliverError>,
    ) -> Result<Normalized, DeliverError> {
        if let LineEndTransform::ToLf(n) = &mut self.norm {
            n.finish(&mut self.out);
        }
        self.emit(&mut sink)?;
        if self.last.is_some() && self.last != Some(b'\n') {
            match self.norm {
                LineEndTransform::ToLf(_) => self.out.push(b'\n'),
                LineEndTransform::ToCrlf(_) => self.out.extend_from_slice(b"\r\n"),
            }
            self.emit(&mut sink)?;
        }
        Ok(Normalized {
            stored: self.stored,
            wire: self.wire.finish(),
            dot_lines: self.dot_lines.count(),
        })
    }
}

/// Reads a whole message from `reader` into `write` (the pull-style entry of the
/// push-style writers).
pub fn read_into(
    mut reader: impl Read,
    mut write: impl FnMut(&[u8]) -> Result<(), DeliverError>,
) -> Result<(), DeliverError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DeliverError::new(
                    DeliverErrorKind::Input,
                    false,
                    format!("reading the message: {e}"),
                )
                .with_source(e));
            }
        };
        write(&buf[..n])?;
    }
}
