//! The mbox backend: one file per user ([`MboxDrop`] for sessions, [`MboxWriter`] and
//! [`MboxBatch`] for appending).
//!
//! Format: written as mboxrd (a `From <sender> <asctime>` line, the message with LF
//! line ends and `>*From ` lines quoted with one more `>`, then a blank line); read as
//! mboxrd/mboxo and mboxcl2 (the scanner, `scan.rs`, has the exact rules).
//!
//! Locks: a session holds `flock` on `<mbox>.correio-session` (fails fast: POP3
//! `[IN-USE]`); reading the snapshot, appending and UPDATE take the local mail locks
//! ([`crate::lock::MboxLock`]: dotlock, `fcntl`, `flock`) only for as long as they
//! need, so the MTA can keep delivering during a session.
//!
//! UIDLs (the method): a message's UIDL is 32 hex digits of the SHA-256 of its From_
//! line and its stored bytes, leaving out the few header fields that mail programs
//! rewrite in place (`Status`, `X-Status`, `X-UID`, `Content-Length`, ...). No state is
//! kept anywhere, so nothing can get out of sync: a rewrite (ours or another tool's)
//! copies messages unchanged and keeps their UIDLs, and other tools appending add
//! messages without touching the others. The From_ line carries the delivery time to
//! the second and the envelope sender, so two different messages do not share a
//! digest; byte-identical copies (same From_ line, same content) get `-2`, `-3`, ...
//! in file order. The limits of the method: a UIDL can come back only for a message
//! that is byte-for-byte the same as the earlier one (so a client that skips it loses
//! nothing), and if another program deletes one of several identical copies, the
//! remaining copies may swap suffixes (they are indistinguishable anyway).
//!
//! UPDATE rewrites the whole mbox under the local mail locks into a temporary file in
//! the same directory, fsyncs it, renames it over the mbox and fsyncs the directory, so
//! a crash at any instant leaves the old or the new mbox, never a mix. The file is
//! re-read under the lock, so messages appended since the snapshot are kept; the
//! messages to delete are found by UIDL. Tools that keep the mbox open across our
//! rename and append to the old file without re-checking it after locking would lose
//! that message; our own writer re-checks (it opens the file after the dotlock and
//! verifies the inode after locking).
//!
//! Never delete across a doubt: a message whose boundaries are in doubt (a `From ` line
//! inside it that is not a separator by the rules of the scanner, `scan.rs`, so that a
//! laxer reader would split the message there; see [`from_line`]) is never removed by
//! UPDATE, even when marked deleted: its bytes stay, the other deletions are done, and
//! UPDATE then fails with an error naming the message and the offset of the doubtful
//! line, so the client gets `-ERR` for QUIT ("some deleted messages not removed", RFC
//! 1939) and the log says why. `correio mailbox check --repair` quotes such lines, after
//! which the message can be deleted. Before anything is rewritten, the scan must cover
//! the file exactly (preamble and messages end to end), or UPDATE refuses.

pub mod from_line;
pub(crate) mod scan;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_fsutil::{AtomicWrite, TempName};

use crate::deliver::{
    DeliverError, DeliverErrorKind, DeliverOptions, Delivered, Normalizer, read_into,
};
use crate::error::StoreError;
use crate::expiry::Update;
use crate::location::LocationError;
use crate::lock::{DEFAULT_LOCK_TIMEOUT, MboxLock, SessionLock};
use crate::maildrop::{CommitReport, Maildrop, MessageInfo, MessageReader, checked_deletions};
use crate::transform::{FromQuoting, QuoteDir};

pub(crate) use scan::{Encoding, NoteKind, Scan, ScannedMessage, scan, uidls};

/// The session lock file of an mbox: `<mbox>.correio-session`.
pub fn session_lock_path(mbox: &Path) -> PathBuf {
    let mut s = mbox.as_os_str().to_os_string();
    s.push(".correio-session");
    PathBuf::from(s)
}

fn check_not_dir(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(LocationError::Unusable {
            path: path.to_path_buf(),
            reason: "is a directory, expected an mbox file".into(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// One POP3 session on an mbox. See the module docs.
#[derive(Debug)]
pub struct MboxDrop {
    path: PathBuf,
    /// The mbox as it was at snapshot time (None: no file, empty mailbox). Reads go
    /// through this descriptor, so a rename over the path does not affect them.
    file: Option<Arc<File>>,
    scanned: Vec<ScannedMessage>,
    messages: Vec<MessageInfo>,
    lock_timeout: Duration,
    _lock: SessionLock,
}

impl MboxDrop {
    /// Opens a session on the mbox at `path`: takes the session lock (or
    /// [`StoreError::InUse`]), then reads the snapshot under the local mail locks.
    pub fn open(path: &Path) -> Result<MboxDrop, StoreError> {
        Self::open_with_timeout(path, DEFAULT_LOCK_TIMEOUT)
    }

    /// As [`MboxDrop::open`], waiting up to `lock_timeout` for the mail locks.
    pub fn open_with_timeout(path: &Path, lock_timeout: Duration) -> Result<MboxDrop, StoreError> {
        check_not_dir(path)?;
        let lock = SessionLock::acquire(&session_lock_path(path)).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                StoreError::io("mbox directory missing for", path, source)
            }
            e => e,
        })?;
        if !path.exists() {
            return Ok(MboxDrop {
                path: path.to_path_buf(),
                file: None,
                scanned: Vec::new(),
                messages: Vec::new(),
                lock_timeout,
                _lock: lock,
            });
        }
        let mail_lock = MboxLock::acquire(path, false, lock_timeout)?;
        recover_interrupted_append(path, &mail_lock)?;
        clean_leftovers(path);
        let file = mail_lock
            .file()
            .try_clone()
            .map_err(|e| StoreError::io("cannot open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("cannot stat", path, e))?
            .len();
        let s = scan(&file, len).map_err(|e| StoreError::io("cannot read", path, e))?;
        drop(mail_lock);
        let ids = uidls(&s.messages);
        let messages = s
            .messages
            .iter()
            .zip(ids)
            .map(|(m, u)| MessageInfo::new(m.wire_size, u))
            .collect();
        Ok(MboxDrop {
            path: path.to_path_buf(),
            file: Some(Arc::new(file)),
            scanned: s.messages,
            messages,
            lock_timeout,
            _lock: lock,
        })
    }
}

/// Reads a byte range of a shared file with `pread`, so several readers need no
/// shared file position.
struct RangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "mbox shrank while reading",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// Unquotes mboxrd `>From ` lines on the fly.
struct UnquoteReader<R> {
    inner: R,
    quoting: FromQuoting,
    out: Vec<u8>,
    out_pos: usize,
    done: bool,
}

impl<R: Read> Read for UnquoteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        while self.out_pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.out.clear();
            self.out_pos = 0;
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                self.quoting.finish(&mut self.out);
                self.done = true;
            } else {
                self.quoting.feed(&chunk[..n], &mut self.out);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

fn reader_for(file: Arc<File>, m: &ScannedMessage) -> MessageReader {
    let range = RangeReader {
        file,
        pos: m.content_start,
        end: m.content_end,
    };
    match m.encoding {
        Encoding::Verbatim => Box::new(range),
        Encoding::Quoted => Box::new(UnquoteReader {
            inner: range,
            quoting: FromQuoting::new(QuoteDir::Unquote),
            out: Vec::with_capacity(16 * 1024),
            out_pos: 0,
            done: false,
        }),
    }
}

impl Maildrop for MboxDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let m = self
            .scanned
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?;
        let file = self.file.clone().ok_or(StoreError::NoSuchMessage(index))?;
        // Our descriptor still points at the snapshot's file; only an in-place rewrite
        // by another program could have moved bytes under it. Check the From_ line.
        let mut head = vec![0u8; m.from_line_head.len()];
        let n = file
            .read_at(&mut head, m.from_start)
            .map_err(|e| StoreError::io("cannot read", &self.path, e))?;
        if n != head.len() || head != m.from_line_head {
            return Err(StoreError::Changed {
                path: self.path.clone(),
                reason: "rewritten in place by another program during the session".into(),
            });
        }
        Ok(reader_for(file, m))
    }

    fn update(self: Box<Self>, update: &Update) -> Result<CommitReport, StoreError> {
        let path = crate::expiry::retrieved_path(&crate::MailLocation::Mbox(self.path.clone()));
        crate::expiry::update_with(&path, &self.messages, update, |d| self.remove(d))
    }
}

impl MboxDrop {
    /// Rewrites the mbox without the messages at `deletions` (the UPDATE).
    fn remove(&self, deletions: &[usize]) -> Result<CommitReport, StoreError> {
        let deletions = checked_deletions(deletions, self.scanned.len())?;
        if deletions.is_empty() {
            return Ok(CommitReport::default());
        }
        let mut doomed: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for &i in &deletions {
            *doomed.entry(self.messages[i].uidl.as_str()).or_default() += 1;
        }
        let r = rewrite_without(&self.path, self.lock_timeout, |uidl| {
            match doomed.get_mut(uidl) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        })?;
        if let Some(&(ref uidl, at)) = r.kept.first() {
            tracing::warn!(
                path = %self.path.display(),
                kept = r.kept.len(),
                removed = r.removed,
                "UPDATE kept messages marked deleted: their boundaries are in doubt"
            );
            return Err(StoreError::Io {
                context: format!(
                    "kept {} of {} messages marked deleted in {}",
                    r.kept.len(),
                    deletions.len(),
                    self.path.display()
                ),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the boundaries of the message with UIDL {uidl} are in doubt (a \
                         `From ` line at offset {at} that is not a message separator), so \
                         its bytes are kept; `correio mailbox check` explains, `--repair` \
                         fixes it"
                    ),
                ),
            });
        }
        Ok(CommitReport {
            removed: r.removed,
            already_gone: deletions.len() - r.removed,
            ..CommitReport::default()
        })
    }
}

/// What [`rewrite_without`] did.
#[derive(Debug, Default)]
pub(crate) struct Rewritten {
    /// Messages left out.
    pub(crate) removed: usize,
    /// Messages `drop_it` chose but that were kept because their boundaries are in
    /// doubt: (UIDL, offset of the doubtful line).
    pub(crate) kept: Vec<(String, u64)>,
}

/// Checks that a scan covers `0..len` end to end (preamble, then each message up to
/// the next), so that a rewrite from its ranges keeps every byte.
pub(crate) fn check_tiling(s: &Scan, path: &Path) -> Result<(), StoreError> {
    let mut at = s.preamble_len;
    for m in &s.messages {
        if m.from_start != at || m.next_start < m.from_start {
            at = u64::MAX;
            break;
        }
        at = m.next_start;
    }
    if at != s.len {
        return Err(StoreError::Changed {
            path: path.to_path_buf(),
            reason: "the scan does not cover the file (changed while read?); not rewriting".into(),
        });
    }
    Ok(())
}

/// Rewrites the mbox at `path` without the messages for whose UIDL `drop_it` says
/// true, atomically (temporary file, fsync, rename, fsync dir), under the mail locks.
/// A message whose boundaries are in doubt is kept even then (see the module docs).
pub(crate) fn rewrite_without(
    path: &Path,
    timeout: Duration,
    mut drop_it: impl FnMut(&str) -> bool,
) -> Result<Rewritten, StoreError> {
    let lock = match MboxLock::acquire(path, false, timeout) {
        Ok(l) => l,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Rewritten::default());
        }
        Err(e) => return Err(e),
    };
    recover_interrupted_append(path, &lock)?;
    let file = lock.file();
    let len = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat", path, e))?
        .len();
    let s = scan(file, len).map_err(|e| StoreError::io("cannot read", path, e))?;
    let ids = uidls(&s.messages);
    let mut keep = vec![(0, s.preamble_len)];
    let mut r = Rewritten::default();
    for (m, id) in s.messages.iter().zip(&ids) {
        if drop_it(id) {
            match m.doubt {
                Some(at) => r.kept.push((id.clone(), at)),
                None => {
                    r.removed += 1;
                    continue;
                }
            }
        }
        keep.push((m.from_start, m.next_start));
    }
    if r.removed == 0 {
        return Ok(r);
    }
    check_tiling(&s, path)?;
    rewrite_ranges(path, &lock, &keep)?;
    Ok(r)
}

/// Replaces the locked mbox at `path` by the concatenation of `ranges` of its current
/// content: temporary file in the same directory (same owner and mode), fsync, rename
/// over the mbox, fsync the directory. A crash leaves the old or the new file.
fn rewrite_ranges(path: &Path, lock: &MboxLock, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
    let file = lock.file();
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat", path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `.<name>.correio-tmp.<pid>`: `clean_leftovers` and fsck recognize it; the mail
    // locks keep other rewriters out. Same owner (best effort: needs root) and mode as
    // the mbox.
    AtomicWrite::new()
        .owner_and_mode_of(&meta)
        .temp_name(TempName::PidSuffixed(
            format!(".{name}.correio-tmp.").into(),
        ))
        .write_with(path, |out| {
            let mut w = BufWriter::with_capacity(256 * 1024, out);
            for &(from, to) in ranges {
                copy_range(file, from, to, &mut w)?;
                crate::failpoint::hit_nth("mbox-update-mid-rewrite");
            }
            w.flush()
        })
        .map_err(|e| StoreError::io("cannot rewrite", path, e.into()))?;
    crate::failpoint::hit_nth("mbox-update-after-rename");
    Ok(())
}

/// Removes what killed processes may leave next to an mbox: rewrite temporaries
/// (`.<name>.correio-tmp.<pid>`; only mail-lock holders create them, so with the lock
/// held any of them is stale) and dotlock temporaries (`<name>.lock.<pid>`) of
/// processes that no longer exist. Call with the mail locks held. Best effort.
pub(crate) fn clean_leftovers(path: &Path) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Ok(rd) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    let rewrite_tmp = format!(".{name}.correio-tmp.");
    let lock_tmp = format!("{name}.lock.");
    for ent in rd.flatten() {
        let f = ent.file_name();
        let Some(f) = f.to_str() else { continue };
        let stale = if let Some(pid) = f.strip_prefix(&rewrite_tmp) {
            pid.bytes().all(|b| b.is_ascii_digit())
        } else if let Some(pid) = f.strip_prefix(&lock_tmp) {
            pid.parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|p| {
                    rustix::process::test_kill_process(p).err() == Some(rustix::io::Errno::SRCH)
                })
        } else {
            false
        };
        if stale {
            tracing::info!(path = %ent.path().display(), "removing a file left by a killed process");
            let _ = fs::remove_file(ent.path());
        }
    }
}

pub(crate) use correio_fsutil::parent_dir;

/// The append journal of an mbox: `<mbox>.correio-journal`, holding the mbox length
/// before an append in progress. It exists only while we append under the mail locks;
/// finding it while holding the locks means an append was interrupted (crash, kill).
pub fn journal_path(mbox: &Path) -> PathBuf {
    let mut s = mbox.as_os_str().to_os_string();
    s.push(".correio-journal");
    PathBuf::from(s)
}

/// Undoes an interrupted append (see [`journal_path`]): the bytes we had appended after
/// the recorded length are removed, so a message is never half in the mbox. If another
/// program appended after our partial message (its From_ line follows), only our part
/// is cut out and its message is kept. Call with the mail locks held.
pub(crate) fn recover_interrupted_append(path: &Path, lock: &MboxLock) -> Result<(), StoreError> {
    let jpath = journal_path(path);
    let text = match fs::read_to_string(&jpath) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("cannot read", &jpath, e)),
    };
    let file = lock.file();
    let len = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat", path, e))?
        .len();
    match text
        .strip_prefix("correio-append ")
        .and_then(|t| t.trim().parse::<u64>().ok())
    {
        Some(orig) if len > orig => {
            tracing::warn!(path = %path.display(), from = orig, to = len, "removing an interrupted append");
            // Our From_ line starts within 2 bytes of `orig` (after the separator we
            // add); a From_ line after it belongs to someone else.
            match find_from_line(file, orig + 3, len)
                .map_err(|e| StoreError::io("cannot read", path, e))?
            {
                Some(p) => rewrite_ranges(path, lock, &[(0, orig), (p, len)])?,
                None => {
                    file.set_len(orig)
                        .map_err(|e| StoreError::io("cannot truncate", path, e))?;
                    file.sync_all()
                        .map_err(|e| StoreError::io("cannot sync", path, e))?;
                }
            }
        }
        Some(_) => {}
        None => tracing::warn!(path = %jpath.display(), "ignoring a malformed append journal"),
    }
    fs::remove_file(&jpath).map_err(|e| StoreError::io("cannot remove", &jpath, e))?;
    correio_fsutil::sync_dir(parent_dir(path))
        .map_err(|e| StoreError::io("cannot sync dir of", path, e))
}

/// The offset of the first line starting with `From ` at or after `from` (the line
/// start itself must be at or after `from`).
fn find_from_line(file: &File, from: u64, len: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from.saturating_sub(1);
    while pos < len {
        let n = buf
            .len()
            .min(usize::try_from(len - pos).unwrap_or(usize::MAX));
        let got = file.read_at(&mut buf[..n], pos)?;
        if got == 0 {
            break;
        }
        if let Some(i) = buf[..got].windows(6).position(|w| w == b"\nFrom ") {
            return Ok(Some(pos + i as u64 + 1));
        }
        if got < 6 {
            break;
        }
        // Overlap so a match across chunks is not missed.
        pos += (got - 5) as u64;
    }
    Ok(None)
}

fn copy_range(file: &File, mut from: u64, to: u64, w: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while from < to {
        let n = buf
            .len()
            .min(usize::try_from(to - from).unwrap_or(usize::MAX));
        let got = file.read_at(&mut buf[..n], from)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "mbox shrank under the lock",
            ));
        }
        w.write_all(&buf[..got])?;
        from += got as u64;
    }
    Ok(())
}

/// Appends messages to an mbox, durably, under the local mail locks.
#[derive(Debug, Clone)]
pub struct MboxWriter {
    path: PathBuf,
    opts: DeliverOptions,
}

/// Several messages appended under one lock with one fsync (group commit). Nothing is
/// durable until [`MboxBatch::commit`] returns `Ok`; dropping an uncommitted batch
/// truncates the mbox back to its length before the batch.
#[derive(Debug)]
pub struct MboxBatch {
    path: PathBuf,
    opts: DeliverOptions,
    lock: MboxLock,
    original_len: u64,
    len: u64,
    /// Messages already in the file before the batch (for the message quota; counted
    /// lazily, only when that quota is set).
    existing: Option<u64>,
    done: Vec<Delivered>,
    committed: bool,
    /// The append journal, if we could write one.
    journal: Option<PathBuf>,
    /// The message being pushed in.
    open: Option<OpenMessage>,
}

/// The message being appended to an [`MboxBatch`].
#[derive(Debug)]
struct OpenMessage {
    /// Where it starts (the batch is cut back here if it fails).
    start: u64,
    /// Where the next bytes go.
    pos: u64,
    norm: Normalizer,
    quoting: FromQuoting,
    /// Quoted bytes not yet written (bounded: flushed at 64 KiB).
    buf: Vec<u8>,
    /// Scratch for one chunk after normalizing.
    lf: Vec<u8>,
}

impl MboxWriter {
    /// A writer for the mbox at `path` (created with mode 0600 on first append), with
    /// the limits and envelope sender of `opts`.
    pub fn new(path: &Path, opts: DeliverOptions) -> MboxWriter {
        MboxWriter {
            path: path.to_path_buf(),
            opts,
        }
    }

    /// Appends one message durably.
    pub fn append(&self, reader: impl Read) -> Result<Delivered, DeliverError> {
        let mut b = self.batch()?;
        b.add(reader)?;
        let mut v = b.commit()?;
        v.pop()
            .ok_or_else(|| DeliverError::new(DeliverErrorKind::Io, false, "batch lost its message"))
    }

    /// Takes the mail locks and starts a group commit.
    pub fn batch(&self) -> Result<MboxBatch, DeliverError> {
        if let Ok(m) = fs::metadata(&self.path)
            && m.is_dir()
        {
            return Err(DeliverError::new(
                DeliverErrorKind::MailboxUnusable,
                false,
                format!(
                    "{} is a directory, expected an mbox file",
                    self.path.display()
                ),
            ));
        }
        let lock = MboxLock::acquire(&self.path, true, self.opts.lock_timeout)?;
        recover_interrupted_append(&self.path, &lock)?;
        let len = lock
            .file()
            .metadata()
            .map_err(|e| DeliverError::from_io("stat mbox", e))?
            .len();
        // The journal lets the next locker undo this append if we die half-way. Where
        // the directory is not writable for us (a shared spool) we go on without it,
        // as without a dotlock.
        let jpath = journal_path(&self.path);
        let journal = match fs::write(&jpath, format!("correio-append {len}\n")) {
            Ok(()) => Some(jpath),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::debug!(path = %jpath.display(), "cannot write the append journal");
                None
            }
            Err(e) => {
                return Err(DeliverError::from_io(
                    &format!("cannot write {}", jpath.display()),
                    e,
                ));
            }
        };
        Ok(MboxBatch {
            path: self.path.clone(),
            opts: self.opts.clone(),
            lock,
            original_len: len,
            len,
            existing: None,
            done: Vec::new(),
            committed: false,
            journal,
            open: None,
        })
    }
}

/// `From ` line: envelope sender (no spaces or controls; `MAILER-DAEMON` when empty)
/// and the time in asctime format, UTC.
pub(crate) fn from_line(sender: Option<&str>, now: SystemTime) -> String {
    let s: String = sender
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    let s = if s.is_empty() || s == "<>" {
        "MAILER-DAEMON".to_string()
    } else {
        s.trim_matches(['<', '>']).to_string()
    };
    let s = if s.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        s
    };
    format!("From {s} {}\n", asctime(now))
}

/// `Thu Nov 24 18:22:48 1986` in UTC.
pub(crate) fn asctime(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        y
    )
}

impl MboxBatch {
    /// Appends one message from `reader` (not yet durable: see [`MboxBatch::commit`]).
    /// On failure the mbox is truncated back to where this message started.
    pub fn add(&mut self, reader: impl Read) -> Result<(), DeliverError> {
        self.begin()?;
        match read_into(reader, |chunk| self.write(chunk)) {
            Ok(()) => self.finish(),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// Starts a message: its `From ` line is appended (a message still open is
    /// dropped first). Then [`MboxBatch::write`] its bytes and [`MboxBatch::finish`].
    pub fn begin(&mut self) -> Result<(), DeliverError> {
        self.abort();
        let opts = &self.opts;
        if let Some(qm) = opts.quota_messages {
            let existing = match self.existing {
                Some(n) => n,
                None => {
                    let s = scan(self.lock.file(), self.original_len)
                        .map_err(|e| DeliverError::from_io("reading mbox", e))?;
                    let n = s.messages.len() as u64;
                    self.existing = Some(n);
                    n
                }
            };
            if existing + self.done.len() as u64 >= qm {
                return Err(DeliverError::new(
                    DeliverErrorKind::QuotaExceeded,
                    opts.quota_permanent,
                    "mailbox is full (message quota)",
                ));
            }
        }
        let budget = match opts.quota_bytes {
            Some(q) if self.len >= q => {
                return Err(DeliverError::new(
                    DeliverErrorKind::QuotaExceeded,
                    opts.quota_permanent,
                    "mailbox is over quota",
                ));
            }
            Some(q) => Some(q - self.len),
            None => None,
        };
        let start = self.len;
        let file = self.lock.file();
        let io_err = |e| DeliverError::from_io("writing mbox", e);
        // A From_ line must start a line, after a blank line.
        let mut buf = Vec::with_capacity(64 * 1024 + 64);
        if start > 0 {
            let mut tail = [0u8; 2];
            let k = if start >= 2 { 2 } else { 1 };
            file.read_at(&mut tail[2 - k..], start - k as u64)
                .map_err(io_err)?;
            if tail[1] != b'\n' {
                buf.extend_from_slice(b"\n\n");
            } else if start >= 2 && tail[0] != b'\n' {
                buf.push(b'\n');
            }
        }
        buf.extend_from_slice(
            from_line(opts.envelope_sender.as_deref(), SystemTime::now()).as_bytes(),
        );
        self.open = Some(OpenMessage {
            start,
            pos: start,
            norm: Normalizer::new(opts.max_message_size, budget, opts.quota_permanent),
            quoting: FromQuoting::new(QuoteDir::Quote),
            buf,
            lf: Vec::new(),
        });
        Ok(())
    }

    /// Message bytes (CRLF or LF line ends, any chunking). On error the message is
    /// cut off again.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(open) = self.open.as_mut() else {
            return Err(DeliverError::new(
                DeliverErrorKind::Io,
                false,
                "write without begin",
            ));
        };
        let file = self.lock.file();
        let OpenMessage {
            pos,
            norm,
            quoting,
            buf,
            lf,
            ..
        } = open;
        lf.clear();
        let r = norm
            .feed(data, |chunk| {
                lf.extend_from_slice(chunk);
                Ok(())
            })
            .and_then(|()| {
                quoting.feed(lf, buf);
                if buf.len() >= 64 * 1024 {
                    flush_at(file, pos, buf)?;
                    crate::failpoint::hit_nth("mbox-deliver-mid-append");
                    Ok(())
                } else {
                    Ok(())
                }
            });
        if r.is_err() {
            self.abort();
        }
        r
    }

    /// The message is complete (appended, not yet durable: see [`MboxBatch::commit`]).
    pub fn finish(&mut self) -> Result<(), DeliverError> {
        let Some(open) = self.open.take() else {
            return Err(DeliverError::new(
                DeliverErrorKind::Io,
                false,
                "finish without begin",
            ));
        };
        let file = self.lock.file();
        let OpenMessage {
            start,
            mut pos,
            norm,
            mut quoting,
            mut buf,
            mut lf,
        } = open;
        lf.clear();
        let result = norm
            .finish(|chunk| {
                lf.extend_from_slice(chunk);
                Ok(())
            })
            .and_then(|n| {
                quoting.feed(&lf, &mut buf);
                quoting.finish(&mut buf);
                buf.push(b'\n');
                flush_at(file, &mut pos, &mut buf)?;
                Ok((n.stored, n.wire))
            });
        match result {
            Ok((size, wire)) => {
                self.len = pos;
                self.done.push(Delivered {
                    path: self.path.clone(),
                    size,
                    wire_size: wire,
                });
                Ok(())
            }
            Err(e) => {
                // Take back the partial message; the batch stays usable.
                let _ = file.set_len(start);
                let _ = file.sync_data();
                Err(e)
            }
        }
    }

    /// Drops the message in progress, if any (the mbox is cut back to where it
    /// started; the batch stays usable).
    pub fn abort(&mut self) {
        if let Some(open) = self.open.take()
            && open.pos != open.start
        {
            let file = self.lock.file();
            let _ = file.set_len(open.start);
            let _ = file.sync_data();
        }
    }

    /// Makes every appended message durable (one fsync of the mbox, one of its
    /// directory for the journal's removal) and releases the locks.
    pub fn commit(mut self) -> Result<Vec<Delivered>, DeliverError> {
        self.abort();
        crate::failpoint::hit_nth("mbox-deliver-before-sync");
        if let Err(e) = self.lock.file().sync_all() {
            // Unknown what reached the disk: Drop takes it all back.
            return Err(DeliverError::from_io("syncing mbox", e));
        }
        // The journal must be gone for good before we report success, or a crash could
        // make the next locker remove a message we acknowledged.
        crate::failpoint::hit_nth("mbox-deliver-before-journal-removal");
        if let Some(jpath) = &self.journal {
            fs::remove_file(jpath)
                .and_then(|()| correio_fsutil::sync_dir(parent_dir(&self.path)))
                .map_err(|e| {
                    DeliverError::from_io(&format!("cannot remove {}", jpath.display()), e)
                })?;
        }
        self.committed = true;
        Ok(std::mem::take(&mut self.done))
    }
}

impl Drop for MboxBatch {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.open = None;
        if self.len != self.original_len {
            let _ = self.lock.file().set_len(self.original_len);
            let _ = self.lock.file().sync_all();
        }
        // Only once the mbox is back to its old length may the journal go; if the
        // truncation failed, the journal stays and the next locker retries it.
        if let Some(jpath) = &self.journal
            && self
                .lock
                .file()
                .metadata()
                .map(|m| m.len() == self.original_len)
                .unwrap_or(false)
        {
            let _ = fs::remove_file(jpath);
        }
    }
}

/// Writes `buf` at `pos` and empties it.
fn flush_at(file: &File, pos: &mut u64, buf: &mut Vec<u8>) -> Result<(), DeliverError> {
    file.write_all_at(buf, *pos)
        .map_err(|e| DeliverError::from_io("writing mbox", e))?;
    *pos += buf.len() as u64;
    buf.clear();
    Ok(())
}

/// Scans mbox bytes (for the fuzzer and tests): per message the wire size, the UIDL and
/// the content as POP3 would serve it.
pub(crate) fn parse_bytes(data: &[u8]) -> io::Result<Vec<(u64, String, Vec<u8>)>> {
    let s = scan(&data, data.len() as u64)?;
    let ids = uidls(&s.messages);
    let mut out = Vec::new();
    for (m, id) in s.messages.iter().zip(ids) {
        let raw = &data[usize::try_from(m.content_start).unwrap_or(0)
            ..usize::try_from(m.content_end).unwrap_or(0)];
        let content = match m.encoding {
            Encoding::Verbatim => raw.to_vec(),
            Encoding::Quoted => {
                let mut q = FromQuoting::new(QuoteDir::Unquote);
                let mut v = Vec::new();
                q.feed(raw, &mut v);
                q.finish(&mut v);
                v
            }
        };
        out.push((m.wire_size, id, content));
    }
    Ok(out)
}
