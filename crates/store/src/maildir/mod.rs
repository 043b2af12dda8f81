//! The Maildir backend (the default): sessions ([`MaildirDrop`]) and durable writes
//! ([`MaildirWriter`], [`MaildirBatch`]).
//!
//! Reading: messages are the files in `new/` and `cur/` (names starting with `.` are
//! skipped; `tmp/` is never read). The wire size comes from `,W=` in the name when
//! present (trusted as Dovecot does), else from the index `correio-index`, else by
//! reading the file once (then cached in the index with the file's size and mtime).
//! The UIDL of a message is, in order: the one recorded in the index; the one Dovecot
//! showed (`dovecot-uidlist`, see the `dovecot` module); the one Courier showed
//! (`courierpop3dsizelist`, see the `courier` module); one derived from the base name (see
//! the `names` module). It is recorded in the index on first sight, keyed by base name, so a
//! flag rename by another tool keeps it.
//!
//! Deleting is `unlink` (a message renamed since the snapshot is found again by its
//! base name; one already gone counts as deleted), then an fsync of `new/` and `cur/`.
//!
//! Writing: `tmp/<unique>` → write → fsync → rename to `new/<unique>,S=<n>,W=<n>` →
//! fsync `new/`. The message becomes visible at the rename, after its bytes are durable;
//! success is reported only after the directory fsync.
//!
//! Files: `correio-session.lock` (the POP3 session lock), `correio-index`, and the
//! [`crate::expiry`] files `correio-retrieved` and `correio-last-login` live in the
//! Maildir root, where Dovecot and other tools ignore unknown files.

mod courier;
pub(crate) mod dovecot;
pub(crate) mod index;
pub(crate) mod names;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::deliver::{
    DeliverError, DeliverErrorKind, DeliverOptions, Delivered, Normalizer, read_into,
};
use crate::error::StoreError;
use crate::expiry::Update;
use crate::location::LocationError;
use crate::lock::SessionLock;
use crate::maildrop::{CommitReport, Maildrop, MessageInfo, MessageReader, checked_deletions};

pub use index::INDEX_FILE;

/// The session lock file inside the Maildir.
pub const SESSION_LOCK_FILE: &str = "correio-session.lock";

const SUBDIRS: [&str; 3] = ["tmp", "new", "cur"];

/// Creates the Maildir (root, `tmp/`, `new/`, `cur/`, mode 0700) where missing, and
/// checks that each is a directory.
pub fn ensure_maildir(root: &Path) -> Result<(), StoreError> {
    for p in std::iter::once(root.to_path_buf()).chain(SUBDIRS.iter().map(|s| root.join(s))) {
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(LocationError::Unusable {
                    path: p,
                    reason: "exists and is not a directory".into(),
                }
                .into());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().recursive(true).mode(0o700).create(&p) {
                    Ok(()) => {}
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOTDIR)
                            || e.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        return Err(LocationError::Unusable {
                            path: p,
                            reason: "a parent is not a directory".into(),
                        }
                        .into());
                    }
                    Err(e) => return Err(StoreError::io("cannot create Maildir", &p, e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(LocationError::Unusable {
                    path: p,
                    reason: "a parent is not a directory".into(),
                }
                .into());
            }
            Err(e) => return Err(StoreError::io("cannot access Maildir", &p, e)),
        }
    }
    Ok(())
}

use correio_fsutil::sync_dir as fsync_dir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    New,
    Cur,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    sub: Sub,
    name: OsString,
}

impl Entry {
    /// The base name (the UIDL's source): computed when needed, not stored (one
    /// allocation less per message of a 50,000-message listing).
    fn base(&self) -> &[u8] {
        names::base_of(self.name.as_bytes())
    }
}

/// One POP3 session on a Maildir. See the module docs.
#[derive(Debug)]
pub struct MaildirDrop {
    root: PathBuf,
    entries: Vec<Entry>,
    messages: Vec<MessageInfo>,
    /// The index records, one per entry, without their UIDLs: a message's UIDL is
    /// kept once, in `messages` (one allocation per message less), and put back when
    /// the index is written.
    records: Vec<index::IndexEntry>,
    /// `new/` and `cur/`, opened on the first read of a message in each, so every
    /// message is then opened by its name alone (`openat`) rather than by walking its
    /// whole path. `None` inside: the directory could not be opened; paths are used.
    dirs: [std::sync::OnceLock<Option<std::os::fd::OwnedFd>>; 2],
    _lock: SessionLock,
}

fn list_dir(root: &Path, sub: Sub, out: &mut Vec<Entry>) -> Result<(), StoreError> {
    let dir = root.join(sub.name());
    let rd = fs::read_dir(&dir).map_err(|e| StoreError::io("cannot list", &dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io("cannot list", &dir, e))?;
        let name = ent.file_name();
        let bytes = name.as_bytes();
        if bytes.first() == Some(&b'.') {
            continue;
        }
        // Subdirectories are not messages; d_type is free on most file systems.
        if let Ok(t) = ent.file_type()
            && t.is_dir()
        {
            continue;
        }
        if names::base_of(bytes).is_empty() {
            continue;
        }
        out.push(Entry { sub, name });
    }
    Ok(())
}

/// How old a file in `tmp/` must be before it counts as left behind by a crashed
/// writer (the Maildir specification's 36 hours).
pub const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// Removes files in `tmp/` older than [`STALE_TMP`]: deliveries that died half-way.
/// Best effort; a live delivery is never that old.
fn clean_tmp(root: &Path) {
    let dir = root.join("tmp");
    let Ok(rd) = fs::read_dir(&dir) else { return };
    let now = std::time::SystemTime::now();
    for ent in rd.flatten() {
        let Ok(meta) = ent.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_TMP);
        if meta.is_file() && old {
            tracing::info!(path = %ent.path().display(), "removing a stale file from tmp/");
            let _ = fs::remove_file(ent.path());
        }
    }
}

/// A name whose `,W=` lies: renamed to tell the truth (same base, so the UIDL stays),
/// and logged.
fn fix_name(path: &Path, name: &[u8], file_size: Option<u64>, named: u64, measured: u64) {
    tracing::warn!(
        path = %path.display(),
        listed = named,
        measured,
        "Maildir file name gives a wrong ,W= size; announcing the measured size and renaming the file"
    );
    let fixed = names::with_sizes(name, file_size, measured);
    if let Some(dir) = path.parent() {
        let to = dir.join(OsStr::from_bytes(&fixed));
        if let Err(err) = fs::rename(path, &to) {
            tracing::warn!(path = %path.display(), error = %err, "cannot rename the Maildir file");
        }
    }
}

fn wire_size_of_file(path: &Path) -> io::Result<u64> {
    wire_size_of(&mut File::open(path)?)
}

/// The wire size of what `f` holds from where it stands to its end.
fn wire_size_of(f: &mut File) -> io::Result<u64> {
    let mut c = crate::wire::WireCounter::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(c.finish()),
            Ok(n) => c.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn dir_mtime(root: &Path, sub: Sub) -> Result<i128, StoreError> {
    let dir = root.join(sub.name());
    fs::metadata(&dir)
        .map(|m| mtime_ns(&m))
        .map_err(|e| StoreError::io("cannot stat", &dir, e))
}

/// A directory mtime that may vouch for a listing: one unchanged for [`index::QUIET`]
/// (a change within the same clock tick would not move it).
fn quiet(mtime: i128) -> Option<i128> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    (now - mtime > index::QUIET.as_nanos() as i128).then_some(mtime)
}

impl MaildirDrop {
    /// Opens a session on the Maildir at `root` (created if missing): takes the session
    /// lock (or [`StoreError::InUse`]) and the snapshot.
    pub fn open(root: &Path) -> Result<MaildirDrop, StoreError> {
        ensure_maildir(root)?;
        let lock = SessionLock::acquire(&root.join(SESSION_LOCK_FILE))?;
        clean_tmp(root);
        // The directories' mtimes before they are read: if they still are what the
        // index recorded, nothing was added, removed or renamed since its listing.
        let dirs = [dir_mtime(root, Sub::Cur)?, dir_mtime(root, Sub::New)?];
        let (old_index, old_listing) = match index::load_stored(root) {
            index::Stored::Listing(l) if l.dirs == [Some(dirs[0]), Some(dirs[1])] => {
                match Self::from_listing(root, l) {
                    Ok((entries, messages, records)) => {
                        return Ok(MaildirDrop {
                            root: root.to_path_buf(),
                            entries,
                            messages,
                            records,
                            dirs: Default::default(),
                            _lock: lock,
                        });
                    }
                    Err(l) => (l.to_index(), Some(l)),
                }
            }
            index::Stored::Listing(l) => (l.to_index(), Some(l)),
            other => (other.into_index(), None),
        };
        let mut entries = Vec::new();
        // cur/ first: if a tool left one message under both names, we keep the cur/ one.
        list_dir(root, Sub::Cur, &mut entries)?;
        list_dir(root, Sub::New, &mut entries)?;
        let mut seen = std::collections::HashSet::new();
        entries.retain(|e| seen.insert(e.base().to_vec()));
        // The time is parsed once per entry, not twice per comparison (a sort of 50,000
        // names made ~1.6 million parses: a third of a warm open's CPU, profiled).
        let mut keyed: Vec<((u64, u64), Entry)> = entries
            .into_iter()
            .map(|e| (names::time_of(e.base()), e))
            .collect();
        keyed.sort_by(|a, b| (a.0, a.1.base()).cmp(&(b.0, b.1.base())));
        let entries: Vec<Entry> = keyed.into_iter().map(|(_, e)| e).collect();

        let mut records = Vec::with_capacity(entries.len());
        let mut dovecot: Option<HashMap<Vec<u8>, String>> = None;
        let mut courier: Option<HashMap<Vec<u8>, String>> = None;
        let mut used_uidls = std::collections::HashSet::with_capacity(entries.len());
        let mut messages = Vec::with_capacity(entries.len());
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            let (s_size, w_size) = names::sizes_of(e.name.as_bytes());
            let old = old_index.get(e.base());
            let mut rec = index::IndexEntry {
                uidl: String::new(),
                wire: None,
                file_size: None,
                mtime_ns: None,
            };
            let wire = match w_size {
                Some(w) => w,
                None => {
                    let path = root.join(e.sub.name()).join(&e.name);
                    let meta = match fs::metadata(&path) {
                        Ok(m) => m,
                        // Removed by another program while we listed: not in the snapshot.
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(StoreError::io("cannot stat", &path, err)),
                    };
                    let (fsize, mt) = (meta.len(), mtime_ns(&meta));
                    let cached = old.and_then(|o| {
                        (o.file_size == Some(fsize)
                            && o.mtime_ns == Some(mt)
                            && s_size.is_none_or(|s| s == fsize))
                        .then_some(o.wire)
                        .flatten()
                    });
                    let w = match cached {
                        Some(w) => w,
                        None => match wire_size_of_file(&path) {
                            Ok(w) => w,
                            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                            Err(err) => return Err(StoreError::io("cannot read", &path, err)),
                        },
                    };
                    rec.wire = Some(w);
                    rec.file_size = Some(fsize);
                    rec.mtime_ns = Some(mt);
                    w
                }
            };
            let mut uidl = match old {
                Some(o) => o.uidl.clone(),
                None => {
                    let d = dovecot.get_or_insert_with(|| dovecot::load(root));
                    d.get(e.base())
                        .or_else(|| {
                            courier
                                .get_or_insert_with(|| courier::load(root))
                                .get(e.base())
                        })
                        .cloned()
                        .unwrap_or_else(|| names::uidl_from_base(e.base()))
                }
            };
            // Uniqueness inside the maildrop is a hard rule; a clash can only come from
            // foreign data (e.g. a hand-edited uidlist): fall back to the base name.
            if !used_uidls.insert(uidl.clone()) {
                uidl = names::uidl_from_base(e.base());
                if !used_uidls.insert(uidl.clone()) {
                    uidl = format!(
                        "h:{}",
                        &names::uidl_from_base(&[e.base(), b"#dup"].concat())[2..]
                    );
                    used_uidls.insert(uidl.clone());
                }
            }
            rec.uidl = uidl.clone();
            records.push(rec);
            messages.push(MessageInfo::new(wire, uidl));
            kept.push(e);
        }
        // Records of messages that vanished during listing stay out: the index stays
        // small. Written only on change: sessions on an unchanged Maildir cost no write.
        let listing = index::Listing {
            dirs: [quiet(dirs[0]), quiet(dirs[1])],
            records: kept
                .iter()
                .zip(&records)
                .map(|(e, r)| index::Record {
                    new: e.sub == Sub::New,
                    name: e.name.clone(),
                    entry: r.clone(),
                })
                .collect(),
        };
        if old_listing.as_ref() != Some(&listing)
            && let Err(err) = index::store_listing(root, &listing)
        {
            // The index is a cache of derivable facts; serving without it is safe.
            tracing::warn!(path = %root.display(), error = %err, "cannot write Maildir index");
        }
        for r in &mut records {
            r.uidl = String::new();
        }
        Ok(MaildirDrop {
            root: root.to_path_buf(),
            entries: kept,
            messages,
            records,
            dirs: Default::default(),
            _lock: lock,
        })
    }

    /// A warm open: the listing as the index recorded it, with no directory read.
    /// Gives the listing back when a record lacks a size (then the directories are
    /// listed after all).
    #[allow(clippy::type_complexity)]
    fn from_listing(
        root: &Path,
        l: index::Listing,
    ) -> Result<(Vec<Entry>, Vec<MessageInfo>, Vec<index::IndexEntry>), index::Listing> {
        let wires: Option<Vec<u64>> = l
            .records
            .iter()
            .map(|r| names::sizes_of(r.name.as_bytes()).1.or(r.entry.wire))
            .collect();
        let Some(wires) = wires else {
            return Err(l);
        };
        let n = l.records.len();
        let (mut entries, mut messages, mut records) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (r, wire) in l.records.into_iter().zip(wires) {
            // The UIDL moves to the message; the record keeps none (see `records`).
            let mut entry = r.entry;
            messages.push(MessageInfo::new(wire, std::mem::take(&mut entry.uidl)));
            entries.push(Entry {
                sub: if r.new { Sub::New } else { Sub::Cur },
                name: r.name,
            });
            records.push(entry);
        }
        tracing::debug!(path = %root.display(), messages = n, "Maildir listed from its index");
        Ok((entries, messages, records))
    }

    /// Finds the current file of a message by its base name (after a rename by
    /// another tool).
    fn find_by_base(&self, base: &[u8]) -> Option<PathBuf> {
        for sub in [Sub::Cur, Sub::New] {
            let dir = self.root.join(sub.name());
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for ent in rd.flatten() {
                let name = ent.file_name();
                if names::base_of(name.as_bytes()) == base {
                    return Some(dir.join(name));
                }
            }
        }
        None
    }

    /// The file of message `index` and where it is now (found again by its base
    /// name if another program renamed it since the snapshot).
    fn open_file(&self, index: usize) -> Result<(PathBuf, File), StoreError> {
        let e = self
            .entries
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?;
        let path = self.path_of(e);
        let dir = self.dirs[usize::from(e.sub == Sub::Cur)].get_or_init(|| {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(self.root.join(e.sub.name()), flags, Mode::empty()).ok()
        });
        let opened = match dir {
            Some(dir) => {
                use rustix::fs::{Mode, OFlags};
                rustix::fs::openat(
                    dir,
                    e.name.as_os_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map(File::from)
                .map_err(io::Error::from)
            }
            None => File::open(&path),
        };
        match opened {
            Ok(f) => Ok((path, f)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let moved = self
                    .find_by_base(e.base())
                    .ok_or(StoreError::Vanished(index))?;
                let f = File::open(&moved).map_err(|err| match err.kind() {
                    io::ErrorKind::NotFound => StoreError::Vanished(index),
                    _ => StoreError::io("cannot open", &moved, err),
                })?;
                Ok((moved, f))
            }
            Err(err) => Err(StoreError::io("cannot open", &path, err)),
        }
    }

    fn path_of(&self, e: &Entry) -> PathBuf {
        self.root.join(e.sub.name()).join(&e.name)
    }

    /// A size from the index (no `,W=` in the name) is valid for the file size and
    /// mtime it was computed from: if the open file has others (changed in place by
    /// another program), it is measured, the index corrected (its listing no longer
    /// vouched for), and the measured size announced.
    fn checked_against_record(
        &self,
        index: usize,
        path: PathBuf,
        mut f: File,
        listed: u64,
    ) -> Result<(MessageReader, u64), StoreError> {
        let meta = f
            .metadata()
            .map_err(|err| StoreError::io("cannot stat", &path, err))?;
        let (fsize, mt) = (meta.len(), mtime_ns(&meta));
        let rec = self.records.get(index);
        if rec.is_some_and(|r| r.file_size == Some(fsize) && r.mtime_ns == Some(mt)) {
            return Ok((Box::new(f), listed));
        }
        let measured = wire_size_of(&mut f)
            .and_then(|n| f.seek(io::SeekFrom::Start(0)).map(|_| n))
            .map_err(|err| StoreError::io("cannot read", &path, err))?;
        self.correct_record(index, &path, listed, measured, &meta);
        Ok((Box::new(f), measured))
    }

    /// Records what the file of message `index` really holds (after a change in
    /// place): the index no longer vouches for its listing, the next open lists again.
    fn correct_record(
        &self,
        index: usize,
        path: &Path,
        listed: u64,
        measured: u64,
        meta: &fs::Metadata,
    ) {
        if measured != listed {
            tracing::warn!(
                path = %path.display(),
                listed,
                measured,
                "Maildir file changed in place since it was indexed; announcing the measured size"
            );
        }
        let mut listing = self.listing_without(&[], &self.messages);
        if let Some(r) = listing.records.get_mut(index) {
            r.entry.wire = Some(measured);
            r.entry.file_size = Some(meta.len());
            r.entry.mtime_ns = Some(mtime_ns(meta));
        }
        if let Err(err) = index::store_listing(&self.root, &listing) {
            tracing::warn!(path = %self.root.display(), error = %err, "cannot write Maildir index");
        }
    }

    /// The index after the messages at `gone` (ascending) were removed. The
    /// directories just changed: the next open lists them again.
    fn listing_without(&self, gone: &[usize], messages: &[MessageInfo]) -> index::Listing {
        let mut gone = gone.iter().peekable();
        let mut records = Vec::with_capacity(self.entries.len());
        for (i, ((e, r), m)) in self
            .entries
            .iter()
            .zip(&self.records)
            .zip(messages)
            .enumerate()
        {
            if gone.next_if_eq(&&i).is_some() {
                continue;
            }
            records.push(index::Record {
                new: e.sub == Sub::New,
                name: e.name.clone(),
                entry: index::IndexEntry {
                    uidl: m.uidl.clone(),
                    ..r.clone()
                },
            });
        }
        index::Listing {
            dirs: [None, None],
            records,
        }
    }
}

impl Maildrop for MaildirDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        Ok(Box::new(self.open_file(index)?.1))
    }

    /// A size from the name's `,W=` is checked against the file (read once): a name
    /// that lies is renamed to tell the truth (same base, so the UIDL stays), logged,
    /// and the measured size returned. Sizes that came from the index or from reading
    /// the file at open are exact already.
    fn open_message_checked(&self, index: usize) -> Result<(MessageReader, u64), StoreError> {
        let listed = self
            .messages
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?
            .size;
        let (path, mut f) = self.open_file(index)?;
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let (s_size, w_size) = names::sizes_of(&name);
        let Some(w) = w_size else {
            return self.checked_against_record(index, path, f, listed);
        };
        let measured = wire_size_of(&mut f)
            .and_then(|n| f.seek(io::SeekFrom::Start(0)).map(|_| n))
            .map_err(|err| StoreError::io("cannot read", &path, err))?;
        if measured != w || measured != listed {
            let file_size = f.metadata().map(|m| m.len()).ok();
            fix_name(&path, &name, file_size.or(s_size), w, measured);
        }
        Ok((Box::new(f), measured))
    }

    /// Small messages: read once into memory (never zeroed first) and measured from
    /// the bytes, with the same checks as `open_message_checked`.
    fn read_message_checked(
        &self,
        index: usize,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let listed = self
            .messages
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?
            .size;
        let (path, f) = self.open_file(index)?;
        let cap = listed.min(limit) as usize + 1;
        let mut bytes = Vec::with_capacity(cap);
        let first = loop {
            match rustix::io::read(&f, rustix::buffer::spare_capacity(&mut bytes)) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r.map_err(|err| StoreError::io("cannot read", &path, err.into()))?,
            }
        };
        let mut measured = correio_proto::wire_size(&bytes);
        // A read of a regular file that stops short of the buffer has reached the end:
        // when what it read also measures exactly the listed size, the file is that
        // message, read with one call (no second read to see the end). Anything else
        // (a full buffer, a size that differs: a file that changed, or a file system
        // that returns short reads) reads on to the end and measures again.
        if first == 0 || first >= cap || measured != listed {
            io::Read::read_to_end(
                &mut io::Read::take(&f, (limit + 1).saturating_sub(bytes.len() as u64)),
                &mut bytes,
            )
            .map_err(|err| StoreError::io("cannot read", &path, err))?;
            if bytes.len() as u64 > limit {
                return Ok(None);
            }
            measured = correio_proto::wire_size(&bytes);
        }
        if measured != listed {
            let name = path
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            match names::sizes_of(&name) {
                (_, Some(w)) => fix_name(&path, &name, Some(bytes.len() as u64), w, measured),
                (_, None) => {
                    let meta = f
                        .metadata()
                        .map_err(|err| StoreError::io("cannot stat", &path, err))?;
                    self.correct_record(index, &path, listed, measured, &meta);
                }
            }
        }
        Ok(Some((bytes, measured)))
    }

    /// Only names that say so (`,S=` equal to `,W=`, `,D=0`, given at CRLF delivery),
    /// checked against the file's length: no byte of the file is read here.
    fn wire_file(&self, index: usize) -> Result<Option<(File, u64)>, StoreError> {
        let listed = self
            .messages
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?
            .size;
        let e = &self.entries[index];
        if names::wire_form_size(e.name.as_bytes()) != Some(listed) {
            return Ok(None);
        }
        let (path, f) = self.open_file(index)?;
        // Renamed meanwhile (flags changed by another tool): the new name must say so too.
        if path
            .file_name()
            .map(|n| names::wire_form_size(n.as_bytes()))
            != Some(Some(listed))
        {
            return Ok(None);
        }
        let meta = f
            .metadata()
            .map_err(|err| StoreError::io("cannot stat", &path, err))?;
        // Written when it was delivered (its name holds that time), not since: a file
        // rewritten in place later is read and stuffed the ordinary way.
        let (delivered, _) = names::time_of(e.base());
        let written_after = u64::try_from(meta.mtime()).unwrap_or(0);
        if written_after > delivered.saturating_add(WIRE_FORM_WRITE_WINDOW) {
            return Ok(None);
        }
        let len = meta.len();
        Ok((len == listed).then_some((f, len)))
    }

    fn update(mut self: Box<Self>, update: &Update) -> Result<CommitReport, StoreError> {
        let path = self.root.join(crate::expiry::RETRIEVED_FILE);
        let messages = std::mem::take(&mut self.messages);
        let result =
            crate::expiry::update_with(&path, &messages, update, |d| self.remove(d, &messages));
        // The lock goes now; freeing a large listing (three allocations per message,
        // ~3.5 ms for 50,000) is left to a thread of its own, so the client's `+OK`
        // to QUIT does not wait for it.
        let MaildirDrop {
            entries,
            records,
            _lock,
            ..
        } = *self;
        drop(_lock);
        if entries.len() >= DROP_ASIDE {
            let _ = std::thread::Builder::new()
                .name("correio-free".into())
                .spawn(move || drop((entries, records, messages)));
        }
        result
    }
}

/// How long after the time in its name a wire-form file may last have been written
/// (the delivery's own writes) and still be sent unread.
const WIRE_FORM_WRITE_WINDOW: u64 = 3600;

/// Listings at least this long are freed off the session's path (see `update`).
const DROP_ASIDE: usize = 10_000;

impl MaildirDrop {
    /// Removes the messages at `deletions` (the UPDATE's unlinks, see the module docs).
    fn remove(
        &mut self,
        deletions: &[usize],
        messages: &[MessageInfo],
    ) -> Result<CommitReport, StoreError> {
        let deletions = checked_deletions(deletions, self.entries.len())?;
        let mut report = CommitReport::default();
        let mut first_error = None;
        let mut gone = Vec::with_capacity(deletions.len());
        // Which of new/ and cur/ lost a file, so must be synced.
        let mut changed = [false; 2];
        for &i in &deletions {
            let e = &self.entries[i];
            let path = self.path_of(e);
            let result = match fs::remove_file(&path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    match self.find_by_base(e.base()) {
                        Some(moved) => fs::remove_file(&moved).map(|()| {
                            // Moved by another program: it may be in either directory.
                            changed = [true; 2];
                            true
                        }),
                        None => Ok(false),
                    }
                }
                other => other.map(|()| {
                    changed[usize::from(e.sub == Sub::Cur)] = true;
                    true
                }),
            };
            match result {
                Ok(true) => report.removed += 1,
                Ok(false) => report.already_gone += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => report.already_gone += 1,
                Err(err) => {
                    // Keep going: every other message still gets removed or stays intact.
                    if first_error.is_none() {
                        first_error = Some(StoreError::io("cannot delete", &path, err));
                    }
                    continue;
                }
            }
            gone.push(i);
            crate::failpoint::hit_nth("maildir-update-mid-unlink");
        }
        // The removals are durable once their directories are synced; a session that
        // removed nothing (most QUITs of a download that keeps mail) syncs nothing.
        for (sub, changed) in [Sub::New, Sub::Cur].into_iter().zip(changed) {
            if !changed {
                continue;
            }
            let dir = self.root.join(sub.name());
            if let Err(err) = fsync_dir(&dir) {
                first_error.get_or_insert(StoreError::io("cannot sync", &dir, err));
            }
        }
        if !gone.is_empty()
            && let Err(err) =
                index::store_listing(&self.root, &self.listing_without(&gone, messages))
        {
            tracing::warn!(path = %self.root.display(), error = %err, "cannot write Maildir index");
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// Sums the stored octets and counts the messages of a Maildir (for quotas), using
/// `,S=` from names and `stat` otherwise.
pub fn usage(root: &Path) -> Result<(u64, u64), StoreError> {
    let mut entries = Vec::new();
    list_dir(root, Sub::New, &mut entries)?;
    list_dir(root, Sub::Cur, &mut entries)?;
    let mut bytes = 0u64;
    let mut count = 0u64;
    for e in &entries {
        let size = match names::sizes_of(e.name.as_bytes()).0 {
            Some(s) => s,
            None => match fs::metadata(root.join(e.sub.name()).join(&e.name)) {
                Ok(m) => m.len(),
                Err(_) => continue,
            },
        };
        bytes += size;
        count += 1;
    }
    Ok((bytes, count))
}

/// A durable Maildir writer (delivery, LMTP, and `correio fetch` targets).
#[derive(Debug, Clone)]
pub struct MaildirWriter {
    root: PathBuf,
    host: String,
}

/// A message written to `tmp/`, waiting for [`MaildirBatch::commit`].
#[derive(Debug)]
struct Pending {
    tmp: PathBuf,
    /// Open until the batch fsyncs it.
    file: Option<File>,
    final_name: String,
    size: u64,
    wire: u64,
    /// Handed out by [`MaildirBatch::prepare`]: the caller may have recorded the
    /// rename, so dropping the batch must leave the file for it to finish.
    prepared: bool,
}

/// The message being pushed into a batch.
#[derive(Debug)]
struct Open {
    tmp: PathBuf,
    base: String,
    w: BufWriter<File>,
    norm: Normalizer,
}

/// Several messages written with one round of fsyncs (group commit).
///
/// Each message is pushed in: [`MaildirBatch::begin`], [`MaildirBatch::write`] for
/// every chunk (any line ends; stored with LF), [`MaildirBatch::finish`] — or all at
/// once from a reader with [`MaildirBatch::add`]. The message lives in `tmp/` until
/// [`MaildirBatch::commit`] fsyncs every file (in parallel), renames them into `new/`
/// and fsyncs `new/` once. Only after `commit` returns `Ok` are the messages durable;
/// dropping an uncommitted batch removes its temporary files, so none of its messages
/// appear. A caller that must record the renames before they happen (the fetcher's
/// crash-safe state file) calls [`MaildirBatch::prepare`] first.
#[derive(Debug)]
pub struct MaildirBatch<'a> {
    writer: std::borrow::Cow<'a, MaildirWriter>,
    pending: Vec<Pending>,
    open: Option<Open>,
}

impl MaildirWriter {
    /// A writer for the Maildir at `root`, created (mode 0700) if missing.
    pub fn open(root: &Path) -> Result<MaildirWriter, StoreError> {
        ensure_maildir(root)?;
        Ok(MaildirWriter {
            root: root.to_path_buf(),
            host: names::host_part(),
        })
    }

    /// The Maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes one message durably into `new/` (no limits). See [`MaildirWriter::deliver_with`].
    pub fn deliver(&self, reader: impl Read) -> Result<Delivered, DeliverError> {
        self.deliver_with(reader, &DeliverOptions::default())
    }

    /// Writes one message durably into `new/`, applying the size limit and quota of
    /// `opts`. On any failure nothing is left behind.
    pub fn deliver_with(
        &self,
        reader: impl Read,
        opts: &DeliverOptions,
    ) -> Result<Delivered, DeliverError> {
        let mut batch = self.batch();
        batch.add_with(reader, opts)?;
        let mut v = batch.commit()?;
        v.pop()
            .ok_or_else(|| DeliverError::new(DeliverErrorKind::Io, false, "batch lost its message"))
    }

    /// Starts a group commit (see [`MaildirBatch`]).
    pub fn batch(&self) -> MaildirBatch<'_> {
        MaildirBatch {
            writer: std::borrow::Cow::Borrowed(self),
            pending: Vec::new(),
            open: None,
        }
    }

    /// Starts a group commit that owns the writer (to keep in a long-lived struct).
    pub fn into_batch(self) -> MaildirBatch<'static> {
        MaildirBatch {
            writer: std::borrow::Cow::Owned(self),
            pending: Vec::new(),
            open: None,
        }
    }

    /// How much of the quota in `opts` is left, counting `extra` (octets, messages)
    /// not yet in the Maildir.
    fn budget(
        &self,
        opts: &DeliverOptions,
        extra: (u64, u64),
    ) -> Result<Option<u64>, DeliverError> {
        Ok(match (opts.quota_bytes, opts.quota_messages) {
            (None, None) => None,
            (qb, qm) => {
                let (used, count) = usage(&self.root)?;
                let (used, count) = (used + extra.0, count + extra.1);
                if qm.is_some_and(|m| count >= m) {
                    return Err(DeliverError::new(
                        DeliverErrorKind::QuotaExceeded,
                        opts.quota_permanent,
                        "mailbox is full (message quota)",
                    ));
                }
                match qb {
                    Some(b) if used >= b => {
                        return Err(DeliverError::new(
                            DeliverErrorKind::QuotaExceeded,
                            opts.quota_permanent,
                            "mailbox is over quota",
                        ));
                    }
                    Some(b) => Some(b - used),
                    None => None,
                }
            }
        })
    }
}

impl MaildirBatch<'_> {
    /// Writes one message to `tmp/` from `reader` (no limits).
    pub fn add(&mut self, reader: impl Read) -> Result<(), DeliverError> {
        self.add_with(reader, &DeliverOptions::default())
    }

    /// Writes one message to `tmp/` from `reader`, applying `opts` (the quota counts
    /// the messages already added to this batch).
    pub fn add_with(
        &mut self,
        reader: impl Read,
        opts: &DeliverOptions,
    ) -> Result<(), DeliverError> {
        self.begin(opts)?;
        let r = read_into(reader, |chunk| self.write(chunk));
        match r {
            Ok(()) => self.finish(),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// Starts a message in `tmp/` (a message still open is dropped first).
    pub fn begin(&mut self, opts: &DeliverOptions) -> Result<(), DeliverError> {
        self.abort();
        let extra = (
            self.pending.iter().map(|p| p.size).sum(),
            self.pending.len() as u64,
        );
        let budget = self.writer.budget(opts, extra)?;
        let base = names::new_base(&self.writer.host);
        let tmp = self.writer.root.join("tmp").join(&base);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| DeliverError::from_io(&format!("cannot create {}", tmp.display()), e))?;
        self.open = Some(Open {
            tmp,
            base,
            w: BufWriter::with_capacity(64 * 1024, file),
            norm: Normalizer::new(opts.max_message_size, budget, opts.quota_permanent)
                .with_line_ends(opts.line_ends),
        });
        Ok(())
    }

    /// Message bytes (CRLF or LF line ends, any chunking). On error the message is
    /// dropped.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(open) = self.open.as_mut() else {
            return Err(DeliverError::new(
                DeliverErrorKind::Io,
                false,
                "write without begin",
            ));
        };
        let Open { tmp, w, norm, .. } = open;
        let r = norm.feed(data, |chunk| {
            w.write_all(chunk)
                .map_err(|e| DeliverError::from_io(&format!("writing {}", tmp.display()), e))
        });
        if r.is_err() {
            self.abort();
        }
        crate::failpoint::hit_nth("maildir-deliver-mid-write");
        r
    }

    /// The message is complete (in `tmp/`, not yet durable).
    pub fn finish(&mut self) -> Result<(), DeliverError> {
        let Some(Open {
            tmp,
            base,
            mut w,
            norm,
        }) = self.open.take()
        else {
            return Err(DeliverError::new(
                DeliverErrorKind::Io,
                false,
                "finish without begin",
            ));
        };
        let line_ends = norm.line_ends();
        let result = (|| {
            let n = norm.finish(|chunk| {
                w.write_all(chunk)
                    .map_err(|e| DeliverError::from_io(&format!("writing {}", tmp.display()), e))
            })?;
            let file = w.into_inner().map_err(|e| {
                DeliverError::from_io(&format!("writing {}", tmp.display()), e.into_error())
            })?;
            Ok((file, n))
        })();
        match result {
            Ok((file, n)) => {
                let (size, wire) = (n.stored, n.wire);
                self.pending.push(Pending {
                    final_name: names::final_name(&base, &n, line_ends),
                    tmp,
                    file: Some(file),
                    size,
                    wire,
                    prepared: false,
                });
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Drops the message in progress, if any.
    pub fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open.w);
            let _ = fs::remove_file(&open.tmp);
        }
    }

    /// The writer this batch writes with.
    pub fn writer(&self) -> &MaildirWriter {
        &self.writer
    }

    /// How many finished messages wait for [`MaildirBatch::commit`].
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no message was finished.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Makes every finished message durable in `tmp/` (its file and `tmp/` itself
    /// fsynced) and returns, per message, its temporary path and the path in `new/`
    /// that [`MaildirBatch::commit`] will give it. A caller that records these before
    /// committing can finish the renames after a crash — or after this batch is
    /// dropped uncommitted: prepared files are left in `tmp/` then (whoever did not
    /// record them leaves them to the usual clean-up of old files in `tmp/`).
    pub fn prepare(&mut self) -> Result<Vec<(PathBuf, PathBuf)>, DeliverError> {
        self.sync_files()?;
        let tmp_dir = self.writer.root.join("tmp");
        if !self.pending.is_empty() {
            fsync_dir(&tmp_dir)
                .map_err(|e| DeliverError::from_io(&format!("syncing {}", tmp_dir.display()), e))?;
        }
        let new_dir = self.writer.root.join("new");
        Ok(self
            .pending
            .iter_mut()
            .map(|p| {
                p.prepared = true;
                (p.tmp.clone(), new_dir.join(&p.final_name))
            })
            .collect())
    }

    /// fsyncs the files not yet synced, several at once.
    fn sync_files(&mut self) -> Result<(), DeliverError> {
        let files: Vec<(&File, &Path)> = self
            .pending
            .iter()
            .filter_map(|p| p.file.as_ref().map(|f| (f, p.tmp.as_path())))
            .collect();
        sync_all_parallel(&files)?;
        for p in &mut self.pending {
            p.file = None;
        }
        Ok(())
    }

    /// Makes every finished message durable and moves it into `new/`, then fsyncs
    /// `new/` once. On error, the messages not yet moved are removed from `tmp/`;
    /// those already moved may or may not survive a crash, and the caller must treat
    /// the whole batch as not stored. A message still open (begun, not finished) is
    /// dropped.
    pub fn commit(mut self) -> Result<Vec<Delivered>, DeliverError> {
        self.abort();
        self.sync_files()?;
        crate::failpoint::hit_nth("maildir-deliver-before-rename");
        let new_dir = self.writer.root.join("new");
        let mut done = Vec::with_capacity(self.pending.len());
        let pending = std::mem::take(&mut self.pending);
        let mut iter = pending.into_iter();
        for p in iter.by_ref() {
            let dest = new_dir.join(&p.final_name);
            if let Err(e) = rename_noreplace(&p.tmp, &dest) {
                let _ = fs::remove_file(&p.tmp);
                for rest in iter {
                    let _ = fs::remove_file(&rest.tmp);
                }
                return Err(DeliverError::from_io(
                    &format!("cannot move into {}", new_dir.display()),
                    e,
                ));
            }
            done.push(Delivered {
                path: dest,
                size: p.size,
                wire_size: p.wire,
            });
        }
        crate::failpoint::hit_nth("maildir-deliver-before-dir-sync");
        if !done.is_empty() {
            fsync_dir(&new_dir)
                .map_err(|e| DeliverError::from_io(&format!("syncing {}", new_dir.display()), e))?;
        }
        Ok(done)
    }
}

impl Drop for MaildirBatch<'_> {
    fn drop(&mut self) {
        self.abort();
        for p in self.pending.iter().filter(|p| !p.prepared) {
            let _ = fs::remove_file(&p.tmp);
        }
    }
}

/// fsyncs files from several threads at once: the file system then commits them in a
/// few journal transactions instead of one each, which is most of what group commit
/// saves on ext4/xfs. Every file is synced (or an error returned) before this returns.
fn sync_all_parallel(files: &[(&File, &Path)]) -> Result<(), DeliverError> {
    let sync = |(f, p): &(&File, &Path)| {
        f.sync_all()
            .map_err(|e| DeliverError::from_io(&format!("syncing {}", p.display()), e))
    };
    if files.len() <= 1 {
        return files.iter().try_for_each(sync);
    }
    const THREADS: usize = 8;
    let per = files.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(sync)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(DeliverError::new(
                    DeliverErrorKind::Io,
                    false,
                    "fsync thread panicked",
                ))
            })
        })
    })
}

/// Renames without ever replacing an existing file (names are unique, but a clash
/// must never destroy a message): `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink`
/// where the file system does not support it.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// File name helpers exposed for tests and tools.
#[doc(hidden)]
pub fn uidl_for_name(name: &OsStr) -> String {
    names::uidl_from_base(names::base_of(name.as_bytes()))
}

#[doc(hidden)]
pub(crate) fn fuzz_index(data: &[u8]) {
    if let Some(i) = index::parse(data) {
        assert_eq!(index::parse(&index::render(&i)), Some(i));
    }
    // Format 2: a listing renders back to itself, and its records by base name are
    // what the format-1 reader sees.
    if let Some(l) = index::parse_listing(data) {
        let text = index::render_listing(&l);
        assert_eq!(index::parse_listing(&text), Some(l.clone()));
        assert_eq!(index::parse(&text), Some(l.to_index()));
    }
}

#[doc(hidden)]
pub(crate) fn fuzz_uidlist(data: &[u8]) {
    for u in dovecot::parse(data).values() {
        assert!(!u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}

#[doc(hidden)]
pub(crate) fn fuzz_courier_sizelist(data: &[u8]) {
    for u in courier::parse(data).values() {
        assert!(!u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}
