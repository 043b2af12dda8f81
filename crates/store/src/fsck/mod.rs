//! Checking and repairing a mailbox (mbox or Maildir): `correio mailbox check`.
//!
//! [`check`] reads a mailbox and names every problem it finds as a typed [`Finding`]
//! (the file, the line or offset, what is wrong); it changes nothing. [`repair`] fixes
//! what can be fixed without losing a byte of message data, and says what it did
//! ([`RepairReport`]).
//!
//! mbox ([`check`] takes shared `fcntl` and `flock` locks while it reads, and creates
//! no file):
//! - data before the first From_ line (a missing From_ line) or a malformed From_ line
//!   (no date, text after the date: see [`crate::mbox::from_line`]);
//! - a well-formed From_ line that is not a separator because no empty line comes
//!   before it: an unquoted `From ` line splitting a message for laxer readers (the
//!   message it is in cannot be deleted by POP3 until repaired, see [`crate::mbox`]);
//! - a `Content-Length:` that does not match the message, or a Content-Length body
//!   followed by a From_ line with no empty line between;
//! - a truncated last message (no final newline); mixed line ends (LF and CRLF);
//! - an interrupted append (`<mbox>.correio-journal`), a stale dotlock, temporary files
//!   left by killed processes.
//!
//! Repair of an mbox writes `<mbox>.repaired` beside it (temporary file, fsync, rename,
//! fsync of the directory) under the local mail locks, and leaves the original as it
//! is: the repaired copy is the original with bytes only added, never removed or
//! changed: `>` before each `From ` text line inside a message (mboxrd quoting, so
//! POP3 serves the same bytes and the UIDL stays), an empty line where a separator
//! lacks one, a From_ line in front of data that had none (it becomes a message), and
//! a final newline after a truncated last message. Line ends are kept as they are.
//! Before the copy is renamed into place, it is scanned again and every message must
//! serve exactly the bytes it served before (the truncated last one: plus its newline),
//! or nothing is written. Taking the locks also does what any mail tool's locking
//! does: a stale dotlock is removed, an interrupted append is undone (its delivery was
//! never acknowledged), and temporary files of killed Correio processes are removed.
//!
//! Maildir (repair takes the POP3 session lock, so it fails with "in use" during a
//! session, and renames within the Maildir, never deletes a message):
//! - missing `tmp/`, `new/` or `cur/` (created), non-files in `new/` or `cur/`;
//! - malformed names (no unique part, bad `,S=`/`,W=`, a bad `:2,` part) and duplicate
//!   unique parts (the store serves only one of them);
//! - `,S=` (octets on disk) or `,W=` (POP3 wire size) that do not match the file:
//!   renamed to the right sizes, keeping the unique part (so the UIDL) and the flags;
//! - files in `tmp/` older than 36 hours (a delivery that died): moved to
//!   `correio-lost+found/tmp/` inside the Maildir; a stale `dovecot-uidlist.lock`,
//!   temporary files of killed processes (removed: they hold no message);
//! - a `correio-index` that cannot be read, has records of messages that are gone, or
//!   a cached size that is wrong (rebuilt; an unreadable one is moved to
//!   `correio-lost+found/` first); a `dovecot-uidlist` with a bad header, malformed or
//!   duplicate records or UIDs out of order (reported only: it is Dovecot's file).
//!
//! Everything moved aside lands in `correio-lost+found/` (Maildir) and can be put back
//! by hand; nothing is deleted but locks and temporary files.

mod maildir;
mod mbox;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The two mailbox formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One file.
    Mbox,
    /// A directory with `tmp/`, `new/` and `cur/`.
    Maildir,
}

impl Format {
    /// `mbox` or `maildir`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mbox => "mbox",
            Format::Maildir => "maildir",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which size field of a Maildir name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeField {
    /// `,S=`: octets on disk.
    S,
    /// `,W=`: POP3 wire size (CRLF line ends).
    W,
    /// `,D=`: lines that start with `.` (CRLF storage; `D=0` with `S` equal to `W`
    /// lets the server send the file unread, so a wrong `D` would corrupt RETR).
    D,
}

/// What is wrong. Message numbers are 1-based, as a POP3 session numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// mbox: bytes before the first From_ line (no message holds them).
    MissingFromLine {
        /// How many bytes.
        bytes: u64,
    },
    /// mbox: a line starting with `From ` that is not a well-formed From_ line; it is
    /// read as text of `message` (`None`: of the bytes before the first message).
    MalformedFromLine {
        /// Why it is not well-formed.
        why: &'static str,
        /// Whether an empty line (or the start of the file) comes before it, where a
        /// message would start.
        after_blank: bool,
        /// The message whose text holds it.
        message: Option<usize>,
    },
    /// mbox: a well-formed From_ line with no empty line before it, read as text of
    /// `message` (`None`: before the first message). Laxer readers split there.
    UnquotedFromLine {
        /// The message whose text holds it.
        message: Option<usize>,
    },
    /// mbox: a `Content-Length:` header whose count does not end at a From_ line or at
    /// the end of the file (ignored, as mutt and Dovecot do).
    ContentLengthMismatch {
        /// The message.
        message: usize,
        /// The value of the header.
        declared: u64,
    },
    /// mbox: a Content-Length body followed by a From_ line with no empty line
    /// between (taken as a separator; readers that ignore Content-Length do not).
    ContentLengthWithoutBlank {
        /// The message after the separator.
        message: usize,
    },
    /// mbox: the file does not end with a newline: the last message is cut.
    TruncatedLastMessage,
    /// mbox: LF and CRLF lines in one file.
    MixedLineEnds {
        /// Lines ending in LF only.
        lf: u64,
        /// Lines ending in CRLF.
        crlf: u64,
    },
    /// mbox: an append journal: an append was interrupted; the next locker removes the
    /// bytes after `at`.
    InterruptedAppend {
        /// The mbox length before the append.
        at: u64,
    },
    /// A lock file left behind (old, or its process is gone).
    StaleLock,
    /// A temporary file left by a killed process.
    LeftoverTempFile,
    /// More findings of the scan than are listed.
    TooManyFindings {
        /// How many were left out.
        dropped: u64,
    },
    /// Maildir: `tmp/`, `new/` or `cur/` is missing.
    MissingDirectory,
    /// Maildir: something other than a file in `new/` or `cur/` (ignored by readers).
    NotAFile,
    /// Maildir: a file name that does not follow the Maildir rules.
    MalformedName {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Maildir: another file has the same unique part; readers show only one of them.
    DuplicateName {
        /// The file that is shown.
        shown: PathBuf,
        /// Whether both have the same content.
        identical: bool,
    },
    /// Maildir: `,S=` or `,W=` does not match the file.
    WrongSize {
        /// Which field.
        field: SizeField,
        /// The value in the name.
        named: u64,
        /// The right value.
        actual: u64,
    },
    /// Maildir: a file in `tmp/` older than 36 hours (a delivery that died).
    StaleTmpFile {
        /// Its age in hours.
        age_hours: u64,
    },
    /// Maildir: `correio-index` cannot be read (the store ignores and rebuilds it).
    CorruptIndex,
    /// Maildir: an index record for a message that is not there.
    IndexStaleRecord {
        /// Its unique part (lossy UTF-8).
        base: String,
    },
    /// Maildir: the index caches a wrong wire size for a file (LIST would be wrong).
    IndexWrongSize {
        /// The message file.
        file: PathBuf,
        /// The cached value.
        cached: u64,
        /// The right value.
        actual: u64,
    },
    /// Maildir: `dovecot-uidlist` is malformed or contradicts itself.
    BadUidlist {
        /// What is wrong.
        why: &'static str,
    },
}

impl Problem {
    /// A stable short name (for `--json`).
    pub fn code(&self) -> &'static str {
        match self {
            Problem::MissingFromLine { .. } => "missing-from-line",
            Problem::MalformedFromLine { .. } => "malformed-from-line",
            Problem::UnquotedFromLine { .. } => "unquoted-from-line",
            Problem::ContentLengthMismatch { .. } => "content-length-mismatch",
            Problem::ContentLengthWithoutBlank { .. } => "content-length-without-blank",
            Problem::TruncatedLastMessage => "truncated-last-message",
            Problem::MixedLineEnds { .. } => "mixed-line-ends",
            Problem::InterruptedAppend { .. } => "interrupted-append",
            Problem::StaleLock => "stale-lock",
            Problem::LeftoverTempFile => "leftover-temp-file",
            Problem::TooManyFindings { .. } => "too-many-findings",
            Problem::MissingDirectory => "missing-directory",
            Problem::NotAFile => "not-a-file",
            Problem::MalformedName { .. } => "malformed-name",
            Problem::DuplicateName { .. } => "duplicate-name",
            Problem::WrongSize { .. } => "wrong-size",
            Problem::StaleTmpFile { .. } => "stale-tmp-file",
            Problem::CorruptIndex => "corrupt-index",
            Problem::IndexStaleRecord { .. } => "index-stale-record",
            Problem::IndexWrongSize { .. } => "index-wrong-size",
            Problem::BadUidlist { .. } => "bad-uidlist",
        }
    }

    /// The message number the problem is in, if any.
    pub fn message(&self) -> Option<usize> {
        match self {
            Problem::MalformedFromLine { message, .. } | Problem::UnquotedFromLine { message } => {
                *message
            }
            Problem::ContentLengthMismatch { message, .. }
            | Problem::ContentLengthWithoutBlank { message } => Some(*message),
            _ => None,
        }
    }
}

fn in_message(m: Option<usize>) -> String {
    match m {
        Some(n) => format!("message {n}"),
        None => "the data before the first message".into(),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingFromLine { bytes } => write!(
                f,
                "missing From_ line: {bytes} bytes before the first message belong to no \
                 message (repair puts a From_ line in front)"
            ),
            Problem::MalformedFromLine {
                why,
                after_blank,
                message,
            } => {
                write!(
                    f,
                    "malformed From_ line ({why}) in {}: read as text, but laxer readers \
                     start a message here",
                    in_message(*message)
                )?;
                if let Some(n) = message {
                    write!(f, "; POP3 will not delete message {n} until it is repaired")?;
                }
                if *after_blank {
                    f.write_str("; if it was meant to start a message, give it a date by hand")?;
                }
                Ok(())
            }
            Problem::UnquotedFromLine { message } => {
                write!(
                    f,
                    "unquoted `From ` line in {}: no empty line before it, so it is read \
                     as text, but laxer readers start a message here",
                    in_message(*message)
                )?;
                if let Some(n) = message {
                    write!(f, "; POP3 will not delete message {n} until it is repaired")?;
                }
                Ok(())
            }
            Problem::ContentLengthMismatch { message, declared } => write!(
                f,
                "Content-Length: {declared} of message {message} does not end at a From_ \
                 line or the end of the file (ignored)"
            ),
            Problem::ContentLengthWithoutBlank { message } => write!(
                f,
                "no empty line before message {message}: only its predecessor's \
                 Content-Length separates them"
            ),
            Problem::TruncatedLastMessage => {
                f.write_str("truncated last message: the file does not end with a newline")
            }
            Problem::MixedLineEnds { lf, crlf } => write!(
                f,
                "mixed line ends: {lf} lines end in LF, {crlf} in CRLF (kept as they are)"
            ),
            Problem::InterruptedAppend { at } => write!(
                f,
                "interrupted append: the next delivery or session removes what follows \
                 offset {at} (an unacknowledged delivery)"
            ),
            Problem::StaleLock => f.write_str("stale lock file (old, or its process is gone)"),
            Problem::LeftoverTempFile => f.write_str("temporary file left by a killed process"),
            Problem::TooManyFindings { dropped } => {
                write!(f, "{dropped} more findings of the same kinds not listed")
            }
            Problem::MissingDirectory => f.write_str("missing Maildir directory"),
            Problem::NotAFile => f.write_str("not a message file (ignored by readers)"),
            Problem::MalformedName { why } => write!(f, "malformed Maildir name: {why}"),
            Problem::DuplicateName { shown, identical } => write!(
                f,
                "duplicate unique name: readers show only {} ({})",
                shown.display(),
                if *identical {
                    "same content"
                } else {
                    "different content: this message is invisible"
                }
            ),
            Problem::WrongSize {
                field,
                named,
                actual,
            } => {
                let (k, what) = match field {
                    SizeField::S => ("S", "octets on disk"),
                    SizeField::W => ("W", "wire size"),
                    SizeField::D => ("D", "number of lines starting with a dot"),
                };
                write!(f, "wrong ,{k}={named} in the name: the {what} is {actual}")
            }
            Problem::StaleTmpFile { age_hours } => write!(
                f,
                "stale file in tmp/ ({age_hours} hours old: a delivery that died)"
            ),
            Problem::CorruptIndex => {
                f.write_str("the index cannot be read (ignored and rebuilt by the store)")
            }
            Problem::IndexStaleRecord { base } => {
                write!(f, "index record for a message that is not there: {base}")
            }
            Problem::IndexWrongSize {
                file,
                cached,
                actual,
            } => write!(
                f,
                "the index caches wire size {cached} for {}; it is {actual}",
                file.display()
            ),
            Problem::BadUidlist { why } => write!(f, "dovecot-uidlist: {why}"),
        }
    }
}

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file (or directory) it is in.
    pub path: PathBuf,
    /// Its line (1-based), in text files.
    pub line: Option<u64>,
    /// Its byte offset, in an mbox.
    pub offset: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl Finding {
    pub(crate) fn new(path: &Path, problem: Problem) -> Finding {
        Finding {
            path: path.to_path_buf(),
            line: None,
            offset: None,
            problem,
        }
    }

    pub(crate) fn at(mut self, line: Option<u64>, offset: Option<u64>) -> Finding {
        self.line = line;
        self.offset = offset;
        self
    }
}

/// `path[:line|:offset]: what`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        match (self.line, self.offset) {
            (Some(l), _) => write!(f, ":{l}")?,
            (None, Some(o)) => write!(f, ":{o}")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.problem)
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mailbox.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// How many messages a POP3 session would list.
    pub messages: usize,
    /// Every problem, in file order where that applies.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One thing [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// mbox: `>` put before a `From ` text line (mboxrd quoting).
    QuotedFromLine {
        /// Line in the original.
        line: u64,
        /// Offset in the original.
        offset: u64,
    },
    /// mbox: a From_ line put in front of data that had none.
    AddedFromLine {
        /// The line added (without its newline).
        from_line: String,
    },
    /// mbox: an empty line added before a From_ line.
    AddedEmptyLine {
        /// Offset in the original.
        offset: u64,
    },
    /// mbox: a newline added at the end of the truncated last message.
    AddedFinalNewline,
    /// mbox: an interrupted append was undone in the original (as the next delivery
    /// or session would have).
    UndidInterruptedAppend,
    /// A stale lock or temporary file removed.
    Removed {
        /// The file.
        path: PathBuf,
    },
    /// Maildir: a file moved aside.
    Moved {
        /// From.
        from: PathBuf,
        /// To.
        to: PathBuf,
    },
    /// Maildir: a message renamed (right sizes, or a new unique name).
    Renamed {
        /// From.
        from: PathBuf,
        /// To.
        to: PathBuf,
    },
    /// Maildir: a missing directory created.
    Created {
        /// The directory.
        path: PathBuf,
    },
    /// Maildir: the index was rebuilt.
    RebuiltIndex,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::QuotedFromLine { line, offset } => {
                write!(
                    f,
                    "quoted the `From ` line at line {line} (offset {offset})"
                )
            }
            Action::AddedFromLine { from_line } => {
                write!(f, "added the From_ line `{from_line}` in front")
            }
            Action::AddedEmptyLine { offset } => {
                write!(
                    f,
                    "added an empty line before the From_ line at offset {offset}"
                )
            }
            Action::AddedFinalNewline => f.write_str("added the final newline"),
            Action::UndidInterruptedAppend => {
                f.write_str("undid the interrupted append in the original")
            }
            Action::Removed { path } => write!(f, "removed {}", path.display()),
            Action::Moved { from, to } => {
                write!(f, "moved {} to {}", from.display(), to.display())
            }
            Action::Renamed { from, to } => {
                write!(f, "renamed {} to {}", from.display(), to.display())
            }
            Action::Created { path } => write!(f, "created {}", path.display()),
            Action::RebuiltIndex => f.write_str("rebuilt the index"),
        }
    }
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// What was found before repairing (under the locks).
    pub found: Report,
    /// What was done.
    pub actions: Vec<Action>,
    /// Findings left as they are, with the reason.
    pub not_repaired: Vec<(Finding, &'static str)>,
    /// mbox: the repaired copy (`<mbox>.repaired`), when one was written.
    pub repaired_copy: Option<PathBuf>,
    /// Where the original is kept (mbox: unchanged at its path; Maildir: repaired in
    /// place, moved files in `correio-lost+found/`).
    pub original: PathBuf,
}

/// Why a mailbox could not be checked or repaired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsckError {
    /// Nothing at the path.
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    /// Not a mailbox of the expected format.
    #[error("{path}: {reason}")]
    NotAMailbox {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `<mbox>.repaired` exists already.
    #[error("{0} exists already: move it away first (a repair never overwrites a file)")]
    RepairedExists(PathBuf),
    /// The repaired copy did not serve the same messages; nothing was written.
    #[error("{path}: the repaired copy would change {}; nothing written", match message {
        0 => "the number of messages".to_string(),
        n => format!("message {n}"),
    })]
    VerifyFailed {
        /// The mbox.
        path: PathBuf,
        /// The message (1-based).
        message: usize,
    },
    /// From the store (locks, in use).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What and where.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl FsckError {
    pub(crate) fn io(what: &str, path: &Path, source: io::Error) -> FsckError {
        if source.kind() == io::ErrorKind::NotFound && what == "cannot open" {
            return FsckError::NotFound(path.to_path_buf());
        }
        FsckError::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}

/// The format of the mailbox at `path`: a directory is a Maildir, a file an mbox.
pub fn detect(path: &Path) -> Result<Format, FsckError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Format::Maildir),
        Ok(m) if m.is_file() => Ok(Format::Mbox),
        Ok(_) => Err(FsckError::NotAMailbox {
            path: path.to_path_buf(),
            reason: "neither a file (mbox) nor a directory (Maildir)".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(FsckError::NotFound(path.to_path_buf()))
        }
        Err(e) => Err(FsckError::io("cannot stat", path, e)),
    }
}

/// Checks the mailbox at `path` (format detected). Changes nothing.
pub fn check(path: &Path) -> Result<Report, FsckError> {
    check_as(path, detect(path)?)
}

/// Checks the mailbox at `path` as `format`.
pub fn check_as(path: &Path, format: Format) -> Result<Report, FsckError> {
    match format {
        Format::Mbox => mbox::check(path),
        Format::Maildir => maildir::check(path),
    }
}

/// Repairs the mailbox at `path` (format detected). See the module docs.
pub fn repair(path: &Path) -> Result<RepairReport, FsckError> {
    repair_as(path, detect(path)?)
}

/// Repairs the mailbox at `path` as `format`.
pub fn repair_as(path: &Path, format: Format) -> Result<RepairReport, FsckError> {
    match format {
        Format::Mbox => mbox::repair(path),
        Format::Maildir => maildir::repair(path),
    }
}

/// `<mbox>.repaired`.
pub fn repaired_path(mbox: &Path) -> PathBuf {
    let mut s = mbox.as_os_str().to_os_string();
    s.push(".repaired");
    PathBuf::from(s)
}

/// Whether process `pid` is gone (`kill(pid, 0)` fails with ESRCH).
pub(crate) fn pid_is_gone(pid: &str) -> bool {
    pid.parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| {
            rustix::process::test_kill_process(p).err() == Some(rustix::io::Errno::SRCH)
        })
}

/// The age of a file, from its mtime (zero when in the future or unknown).
pub(crate) fn age(meta: &std::fs::Metadata) -> std::time::Duration {
    meta.modified()
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

/// A dotlock is stale when older than [`crate::lock::STALE_DOTLOCK`] or when the pid
/// it records is gone (the rule of [`crate::lock`]).
pub(crate) fn dotlock_is_stale(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if age(&meta) > crate::lock::STALE_DOTLOCK {
        return true;
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split([':', '\n']).next().map(|p| p.trim().to_string()))
        .is_some_and(|pid| !pid.is_empty() && pid_is_gone(&pid))
}

/// Renames without ever replacing a file: `renameat2(RENAME_NOREPLACE)`, or `link` +
/// `unlink` where the file system lacks it.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Fuzz bodies for the parsers of this module (`cargo fuzz` targets call these; the
/// suite replays their seed corpora).
#[doc(hidden)]
pub mod fuzzing {
    /// mbox repair plan on any bytes: never panics; the repaired bytes are the input
    /// with bytes only inserted; when the repair verifies, every message serves the
    /// same bytes as before, and the repaired mbox has no From_ line problem left in
    /// quoted messages, no data outside messages, and a final newline.
    pub fn mbox_repair(data: &[u8]) {
        super::mbox::fuzz_repair(data);
    }

    /// Maildir name checks on any bytes: never panics; a name the checker accepts has
    /// a unique part, and the sizes it reads are the ones the store reads.
    pub fn maildir_name(data: &[u8]) {
        super::maildir::fuzz_name(data);
    }

    /// `dovecot-uidlist` checks on any bytes: never panics; findings carry line numbers
    /// inside the input.
    pub fn uidlist(data: &[u8]) {
        super::maildir::fuzz_uidlist(data);
    }

    /// From_ line parser on any bytes: never panics; what it accepts starts with
    /// `From `, has no control character and is at most 1024 bytes.
    pub fn from_line(data: &[u8]) {
        let ok = crate::mbox::from_line::is_valid(data);
        if ok {
            assert!(data.starts_with(b"From "));
            assert!(data.len() <= crate::mbox::from_line::MAX_LEN);
            let body = data.strip_suffix(b"\n").unwrap_or(data);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            assert!(!body.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f));
        }
    }
}
