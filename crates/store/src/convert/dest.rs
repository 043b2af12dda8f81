//! Writing the destination mailbox, one batch at a time, with the state file (see
//! [`super::state`]) so that an interrupted run resumes without losing or duplicating
//! a message.
//!
//! Maildir and EML (publish by rename): each message is written to a temporary file
//! and fsynced; the temporary directory is fsynced; the batch's renames are recorded
//! in the state file (fsynced); then the files are renamed to their final names and the
//! directories fsynced. A run that dies before the record leaves only temporary files
//! (removed by the next run); one that dies after it has its renames finished by the
//! next run. Maildir: messages with a UIDL that the file name does not give are
//! recorded in `dovecot-uidlist` (a `P<uidl>` record, Dovecot's migration format, read
//! by Correio's POP3 server and by Dovecot) before the renames.
//!
//! mbox (append in place): under the local mail locks, the state file records where
//! the batch starts and the From_ lines it will write (fsynced); the messages are
//! appended and the mbox fsynced; then the batch is recorded as done (fsynced). A run
//! that dies in between leaves a partial batch at the end of the mbox: the next run
//! checks that everything after the recorded start is ours (only our From_ lines, in
//! order) and cuts it off before going on. If another program appended after our
//! partial batch, it stops with an error rather than guess.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::message::{
    CHUNK, make_from_line, plan_mbox, read_some, scan_header, sender_from_return_path, unix_secs,
    write_mbox_message,
};
use super::source::{Prepared, Source, SourceMessage};
use super::state::{Move, State};
use super::{ConvertError, Options, Report, failpoint, io_err};
use crate::lock::MboxLock;
use crate::wire::WireCounter;

/// Suffix of our temporary files (Maildir `tmp/` and EML folders).
const TMP_SUFFIX: &str = ".correio-convert";
/// Longest From_ line recorded (see `MAX_FROM_LINE` in the parent module).
const MAX_FROM: usize = 4096;

/// An open destination mailbox.
#[derive(Debug)]
pub(crate) enum Dest {
    Maildir {
        root: PathBuf,
        /// Base names present (a Maildir source's base is kept unless taken).
        bases: HashSet<Vec<u8>>,
        host: String,
    },
    Eml {
        dir: PathBuf,
        names: HashSet<OsString>,
        host: String,
    },
    Mbox {
        path: PathBuf,
    },
}

/// What one run has done so far, for the failpoints.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) written: u64,
}

use correio_fsutil::sync_dir as fsync_dir;

/// Renames without ever replacing an existing file.
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

/// The host part of generated names (`/`, `:` and `,` escaped as the Maildir
/// convention says).
fn host_part() -> String {
    let raw = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A new unique base name whose time is the message's date, so that readers ordering
/// by name (the POP3 server, `ls`) keep the source's order: `<secs>.M<n>P<pid>Q<seq>R<hex>.<host>`,
/// where `n` is the source position within the second (6 digits).
fn new_base(date: Option<SystemTime>, ordinal: u64, host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = date.map_or(now.as_secs() as i64, unix_secs).max(0);
    format!(
        "{secs}.M{:06}P{}Q{}R{:x}{:x}.{host}",
        ordinal % 1_000_000,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        now.as_secs(),
        now.subsec_nanos(),
    )
}

fn list_bases(root: &Path) -> Result<HashSet<Vec<u8>>, ConvertError> {
    let mut out = HashSet::new();
    for sub in ["cur", "new"] {
        let dir = root.join(sub);
        let rd = fs::read_dir(&dir).map_err(|e| io_err("cannot list", &dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io_err("cannot list", &dir, e))?;
            let name = ent.file_name();
            let b = name.as_bytes();
            let end = b
                .iter()
                .position(|&c| c == b',' || c == b':')
                .unwrap_or(b.len());
            out.insert(b[..end].to_vec());
        }
    }
    Ok(out)
}

/// A message written to a temporary file, fsynced.
struct Written {
    key: Vec<u8>,
    tmp: PathBuf,
    dest: PathBuf,
    bytes: u64,
    /// A `dovecot-uidlist` record to add: (UIDL, final file name).
    uidlist: Option<(String, OsString)>,
}

impl Dest {
    pub(crate) fn maildir(root: &Path) -> Result<Dest, ConvertError> {
        crate::maildir::ensure_maildir(root)?;
        Ok(Dest::Maildir {
            root: root.to_path_buf(),
            bases: list_bases(root)?,
            host: host_part(),
        })
    }

    pub(crate) fn eml(dir: &Path) -> Result<Dest, ConvertError> {
        fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
        let mut names = HashSet::new();
        let rd = fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
        for ent in rd {
            names.insert(ent.map_err(|e| io_err("cannot list", dir, e))?.file_name());
        }
        Ok(Dest::Eml {
            dir: dir.to_path_buf(),
            names,
            host: host_part(),
        })
    }

    pub(crate) fn mbox(path: &Path) -> Result<Dest, ConvertError> {
        if path.is_dir() {
            return Err(ConvertError::Usage(format!(
                "{} is a directory, not an mbox file",
                path.display()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        Ok(Dest::Mbox {
            path: path.to_path_buf(),
        })
    }

    /// The directory relative paths in the state file are based on.
    fn base_dir(&self) -> &Path {
        match self {
            Dest::Maildir { root, .. } => root,
            Dest::Eml { dir, .. } => dir,
            Dest::Mbox { path } => path.parent().unwrap_or(Path::new(".")),
        }
    }

    /// Finishes what an interrupted run left (see the module docs), then removes our
    /// temporary files that no record points to.
    pub(crate) fn recover(
        &mut self,
        state: &mut State,
        opts: &Options,
        report: &mut Report,
    ) -> Result<(), ConvertError> {
        let moves = state.pending_moves().to_vec();
        if !moves.is_empty() {
            let base = self.base_dir().to_path_buf();
            let mut dirs: Vec<PathBuf> = Vec::new();
            for m in &moves {
                let tmp = base.join(OsStr::from_bytes(&m.tmp));
                let dest = base.join(OsStr::from_bytes(&m.dest));
                if fs::symlink_metadata(&tmp).is_ok() {
                    rename_noreplace(&tmp, &dest)
                        .map_err(|e| io_err("cannot rename to", &dest, e))?;
                    report.recovered += 1;
                } else if fs::symlink_metadata(&dest).is_err() {
                    // Neither name exists: not stored after all; copy it again.
                    state.undo(&m.key).map_err(|e| state.err(e))?;
                    report
                        .warnings
                        .push(format!("a message recorded by the interrupted run was missing and is copied again ({})", dest.display()));
                }
                if let Some(d) = dest.parent()
                    && !dirs.iter().any(|x| x == d)
                {
                    dirs.push(d.to_path_buf());
                }
            }
            for d in &dirs {
                fsync_dir(d).map_err(|e| io_err("cannot sync", d, e))?;
            }
            state.moved().map_err(|e| state.err(e))?;
        }
        match self {
            Dest::Maildir { root, .. } => remove_our_tmp(&root.join("tmp")),
            Dest::Eml { dir, .. } => remove_our_tmp(dir),
            Dest::Mbox { path } => {
                if state.mbox_used() && fs::symlink_metadata(&*path).is_err() {
                    return Err(ConvertError::Usage(format!(
                        "{} is gone, but {} records messages copied into it; remove that file too to copy them again",
                        path.display(),
                        state.path().display()
                    )));
                }
                if let Some(batch) = state.open_mbox_batch().cloned() {
                    let lock = MboxLock::acquire(path, true, opts.lock_timeout)?;
                    let cut = undo_partial_batch(path, lock.file(), &batch, state.path())?;
                    if cut {
                        report.recovered += 1;
                    }
                    state.mbox_undo().map_err(|e| state.err(e))?;
                }
            }
        }
        Ok(())
    }

    /// Copies one batch of messages and records it (see the module docs).
    pub(crate) fn write_batch(
        &mut self,
        source: &Source,
        batch: &[(&SourceMessage, Prepared)],
        state: &mut State,
        opts: &Options,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<(), ConvertError> {
        match self {
            Dest::Mbox { path } => {
                let path = path.clone();
                write_mbox_batch(&path, source, batch, state, opts, report, progress)
            }
            _ => self.write_file_batch(source, batch, state, opts, report, progress),
        }
    }

    fn write_file_batch(
        &mut self,
        source: &Source,
        batch: &[(&SourceMessage, Prepared)],
        state: &mut State,
        opts: &Options,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<(), ConvertError> {
        let mut written: Vec<Written> = Vec::with_capacity(batch.len());
        // Dropped on error: the temporary files go away with it.
        struct Cleanup<'a>(&'a mut Vec<Written>, bool);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    for w in self.0.iter() {
                        let _ = fs::remove_file(&w.tmp);
                    }
                }
            }
        }
        let mut cleanup = Cleanup(&mut written, false);
        for (m, p) in batch {
            let Some(mut r) = source.open(m, p)? else {
                report.vanished += 1;
                continue;
            };
            let w = self.write_one(m, p, &mut r, source, report)?;
            cleanup.0.push(w);
            progress.written += 1;
            failpoint("convert-after-write", progress.written);
        }
        if cleanup.0.is_empty() {
            cleanup.1 = true;
            return Ok(());
        }
        let tmp_dir = match self {
            Dest::Maildir { root, .. } => root.join("tmp"),
            Dest::Eml { dir, .. } => dir.clone(),
            Dest::Mbox { .. } => unreachable_dest()?,
        };
        fsync_dir(&tmp_dir).map_err(|e| io_err("cannot sync", &tmp_dir, e))?;
        if let Dest::Maildir { root, .. } = self {
            let records: Vec<(String, OsString)> =
                cleanup.0.iter().filter_map(|w| w.uidlist.clone()).collect();
            if !records.is_empty() {
                match append_uidlist(root, &records, opts.lock_timeout) {
                    Ok(true) => report.uidls_kept += records.len() as u64,
                    Ok(false) => {
                        report.uidls_not_kept += records.len() as u64;
                        report.note_once(format!(
                            "{}: dovecot-uidlist has a format we do not write to; UIDLs were not kept",
                            root.display()
                        ));
                    }
                    Err(e) => return Err(io_err("cannot update dovecot-uidlist in", root, e)),
                }
            }
        }
        let base = self.base_dir().to_path_buf();
        let rel = |p: &Path| -> Vec<u8> {
            p.strip_prefix(&base)
                .unwrap_or(p)
                .as_os_str()
                .as_bytes()
                .to_vec()
        };
        let moves: Vec<Move> = cleanup
            .0
            .iter()
            .map(|w| Move {
                key: w.key.clone(),
                tmp: rel(&w.tmp),
                dest: rel(&w.dest),
            })
            .collect();
        state.record_moves(&moves).map_err(|e| state.err(e))?;
        // From here on the state file owns the temporary files.
        cleanup.1 = true;
        failpoint("convert-after-commit", progress.written);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for w in cleanup.0.iter() {
            rename_noreplace(&w.tmp, &w.dest)
                .map_err(|e| io_err("cannot rename to", &w.dest, e))?;
            if let Some(d) = w.dest.parent()
                && !dirs.iter().any(|x| x == d)
            {
                dirs.push(d.to_path_buf());
            }
            report.copied += 1;
            report.copied_bytes += w.bytes;
        }
        for d in &dirs {
            fsync_dir(d).map_err(|e| io_err("cannot sync", d, e))?;
        }
        state.moved().map_err(|e| state.err(e))?;
        Ok(())
    }

    /// Writes one message to a temporary file of a Maildir or EML folder and fsyncs it.
    fn write_one(
        &mut self,
        m: &SourceMessage,
        p: &Prepared,
        r: &mut dyn Read,
        source: &Source,
        report: &mut Report,
    ) -> Result<Written, ConvertError> {
        // (temporary file, final directory, final name without the size and info
        // fields, whether it is a Maildir, the UIDL a uidlist record must keep)
        let (tmp, final_dir, stem, maildir, uidl_needed) = match self {
            Dest::Maildir { root, bases, host } => {
                let base = match &p.base {
                    Some(b) if !b.starts_with(b".") && !bases.contains(b) => b.clone(),
                    _ => new_base(p.date, m.ordinal, host).into_bytes(),
                };
                bases.insert(base.clone());
                let sub = if p.flags.old { "cur" } else { "new" };
                let mut tmp_name = base.clone();
                tmp_name.extend_from_slice(TMP_SUFFIX.as_bytes());
                let derived = crate::maildir::uidl_for_name(OsStr::from_bytes(&base));
                let needed = match &p.uidl {
                    Some(u) if *u == derived => {
                        report.uidls_kept += 1;
                        None
                    }
                    Some(u) if valid_p_uidl(u) => Some(u.clone()),
                    Some(_) => {
                        report.uidls_not_kept += 1;
                        None
                    }
                    None => None,
                };
                (
                    root.join("tmp").join(OsStr::from_bytes(&tmp_name)),
                    root.join(sub),
                    base,
                    true,
                    needed,
                )
            }
            Dest::Eml { dir, names, host } => {
                let mut name: Vec<u8> = match (&p.eml_name, &p.base) {
                    (Some(n), _) if !n.as_bytes().starts_with(b".") && !names.contains(n) => {
                        n.as_bytes().to_vec()
                    }
                    (_, Some(b)) if !b.starts_with(b".") => [&b[..], b".eml"].concat(),
                    _ => Vec::new(),
                };
                if name.is_empty() || names.contains(OsStr::from_bytes(&name)) {
                    name = format!("{}.eml", new_base(p.date, m.ordinal, host)).into_bytes();
                }
                names.insert(OsString::from(OsStr::from_bytes(&name)));
                if p.uidl.is_some() {
                    report.uidls_not_kept += 1;
                }
                let tmp_name = [b".", &name[..], TMP_SUFFIX.as_bytes()].concat();
                (
                    dir.join(OsStr::from_bytes(&tmp_name)),
                    dir.clone(),
                    name,
                    false,
                    None,
                )
            }
            Dest::Mbox { .. } => return unreachable_dest(),
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("cannot create", &tmp, e))?;
        let result = (|| -> Result<(u64, u64), ConvertError> {
            let mut w = BufWriter::with_capacity(CHUNK, &file);
            let mut buf = vec![0u8; CHUNK];
            let mut wire = WireCounter::new();
            let mut size = 0u64;
            loop {
                let n = read_some(r, &mut buf).map_err(|e| source.read_err(e))?;
                if n == 0 {
                    break;
                }
                wire.feed(&buf[..n]);
                w.write_all(&buf[..n])
                    .map_err(|e| io_err("cannot write", &tmp, e))?;
                size += n as u64;
            }
            w.flush().map_err(|e| io_err("cannot write", &tmp, e))?;
            drop(w);
            if let Some(t) = p.date {
                file.set_times(FileTimes::new().set_modified(t).set_accessed(t))
                    .map_err(|e| io_err("cannot set the time of", &tmp, e))?;
            }
            file.sync_all()
                .map_err(|e| io_err("cannot sync", &tmp, e))?;
            Ok((size, wire.finish()))
        })();
        let (size, wire) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let mut final_name = stem;
        if maildir {
            // Dovecot's size fields (the POP3 server trusts `W=`), then the flags.
            final_name.extend_from_slice(format!(",S={size},W={wire}").as_bytes());
            if let Some(info) = p.flags.maildir_info() {
                final_name.extend_from_slice(info.as_bytes());
            }
        }
        let final_name = OsString::from(OsStr::from_bytes(&final_name));
        Ok(Written {
            key: m.key.clone(),
            tmp,
            dest: final_dir.join(&final_name),
            bytes: size,
            uidlist: uidl_needed.map(|u| (u, final_name)),
        })
    }
}

fn unreachable_dest<T>() -> Result<T, ConvertError> {
    Err(ConvertError::Usage(
        "internal error: file batch on an mbox".into(),
    ))
}

/// Removes our temporary files (`*.correio-convert`) from `dir`: with the state file
/// locked and its records applied, no run owns them.
fn remove_our_tmp(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for ent in rd.flatten() {
        if ent.file_name().as_bytes().ends_with(TMP_SUFFIX.as_bytes()) {
            tracing::info!(path = %ent.path().display(), "removing a file of an interrupted convert");
            let _ = fs::remove_file(ent.path());
        }
    }
}

/// A UIDL that fits a `dovecot-uidlist` `P` record (no `:`, which ends the fields).
fn valid_p_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// Adds `P<uidl>` records for new files to `dovecot-uidlist`, Dovecot's way: under its
/// dotlock `dovecot-uidlist.lock`, the new content is written into the lock file, which
/// is fsynced and renamed over the list. Creates a version 3 list if there is none.
/// `Ok(false)`: the list exists in a form we do not write to (version 1, damaged
/// header); nothing was changed.
pub(crate) fn append_uidlist(
    root: &Path,
    records: &[(String, OsString)],
    timeout: Duration,
) -> io::Result<bool> {
    let list = root.join("dovecot-uidlist");
    let lock = root.join("dovecot-uidlist.lock");
    let deadline = Instant::now() + timeout;
    let lf = loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Dovecot's stale timeout for this lock is two minutes.
                let stale = fs::metadata(&lock)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(120));
                if stale {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is locked", list.display()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let result = (|| -> io::Result<bool> {
        let old = match File::open(&list) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut w = BufWriter::new(&lf);
        let mut next_uid: u64 = 1;
        match &old {
            None => {
                let validity = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    .clamp(1, u64::from(u32::MAX));
                writeln!(w, "3 V{validity} N{}", next_uid + records.len() as u64)?;
            }
            Some(f) => {
                // First pass: the header, and the highest UID in use.
                let mut rd = BufReader::new(f);
                let mut header = Vec::new();
                rd.read_until(b'\n', &mut header)?;
                let Ok(h) = std::str::from_utf8(&header) else {
                    return Ok(false);
                };
                let fields: Vec<&str> = h.trim_end_matches('\n').split(' ').collect();
                if fields.first() != Some(&"3") {
                    return Ok(false);
                }
                let n = fields
                    .iter()
                    .find_map(|f| f.strip_prefix('N')?.parse::<u64>().ok());
                let Some(n) = n else { return Ok(false) };
                let mut max_uid = 0u64;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if rd.read_until(b'\n', &mut line)? == 0 {
                        break;
                    }
                    let uid = line
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .try_fold(0u64, |acc, &b| {
                            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
                        });
                    if let Some(uid) = uid {
                        max_uid = max_uid.max(uid);
                    }
                }
                next_uid = n.max(max_uid + 1);
                let last = next_uid + records.len() as u64;
                if last > u64::from(u32::MAX) {
                    return Ok(false);
                }
                let new_header: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        if f.starts_with('N') && f[1..].parse::<u64>().is_ok() {
                            format!("N{last}")
                        } else {
                            (*f).to_string()
                        }
                    })
                    .collect();
                writeln!(w, "{}", new_header.join(" "))?;
                // Second pass: the records, unchanged.
                let mut skip = header.len() as u64;
                let mut buf = vec![0u8; CHUNK];
                let mut last_byte = b'\n';
                loop {
                    let n = f.read_at(&mut buf, skip)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n])?;
                    last_byte = buf[n - 1];
                    skip += n as u64;
                }
                if last_byte != b'\n' {
                    w.write_all(b"\n")?;
                }
            }
        }
        for (i, (uidl, name)) in records.iter().enumerate() {
            w.write_all(format!("{} P{uidl} :", next_uid + i as u64).as_bytes())?;
            w.write_all(name.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        drop(w);
        lf.sync_all()?;
        fs::rename(&lock, &list)?;
        fsync_dir(root)?;
        Ok(true)
    })();
    match result {
        Ok(true) => Ok(true),
        other => {
            let _ = fs::remove_file(&lock);
            other
        }
    }
}

/// Writes at a position of a file.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What must come before a From_ line appended at the end of an mbox of length `len`
/// so that it starts a line after a blank line.
fn lead_separator(file: &File, len: u64) -> io::Result<&'static [u8]> {
    if len == 0 {
        return Ok(b"");
    }
    let mut tail = [0u8; 2];
    let k = len.min(2) as usize;
    let n = file.read_at(&mut tail[2 - k..], len - k as u64)?;
    if n != k {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mbox shrank"));
    }
    Ok(if tail[1] != b'\n' {
        b"\n\n"
    } else if k == 2 && tail[0] != b'\n' {
        b"\n"
    } else {
        b""
    })
}

#[allow(clippy::too_many_arguments)]
fn write_mbox_batch(
    path: &Path,
    source: &Source,
    batch: &[(&SourceMessage, Prepared)],
    state: &mut State,
    opts: &Options,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ConvertError> {
    // Plan every message first: the From_ lines go into the state file before the
    // first byte is appended.
    let mut plans = Vec::with_capacity(batch.len());
    for (m, p) in batch {
        let Some(r) = source.open(m, p)? else {
            report.vanished += 1;
            continue;
        };
        let scan = scan_header(r).map_err(|e| source.read_err(e))?;
        let Some((len, last)) = source.len_last(m, p)? else {
            report.vanished += 1;
            continue;
        };
        let from_line = match &p.from_line {
            Some(l) => l.clone(),
            None => {
                let secs = unix_secs(p.date.unwrap_or_else(SystemTime::now));
                make_from_line(&sender_from_return_path(scan.return_path.as_deref()), secs)
            }
        };
        if p.uidl.is_some() {
            report.uidls_not_kept += 1;
        }
        plans.push((m, p, plan_mbox(&scan, len, last, &p.flags, from_line)));
    }
    if plans.is_empty() {
        return Ok(());
    }
    let lock = MboxLock::acquire(path, true, opts.lock_timeout)?;
    let file = lock.file();
    let meta = file
        .metadata()
        .map_err(|e| io_err("cannot stat", path, e))?;
    let start = meta.len();
    let froms: Vec<Vec<u8>> = plans
        .iter()
        .map(|(_, _, pl)| pl.from_line.clone())
        .collect();
    state
        .mbox_begin(start, meta.ino(), &froms)
        .map_err(|e| state.err(e))?;
    let mut keys = Vec::with_capacity(plans.len());
    let mut bytes = 0u64;
    let written = (|| -> Result<u64, ConvertError> {
        let mut w = BufWriter::with_capacity(CHUNK, At { file, pos: start });
        let lead = lead_separator(file, start).map_err(|e| io_err("cannot read", path, e))?;
        w.write_all(lead)
            .map_err(|e| io_err("cannot write", path, e))?;
        for (m, p, plan) in &plans {
            let Some(r) = source.open(m, p)? else {
                report.vanished += 1;
                continue;
            };
            let n = write_mbox_message(plan, r, &mut w).map_err(|e| {
                // Tell a read error of the source from a write error of the mbox.
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    source.read_err(e)
                } else {
                    io_err("cannot write", path, e)
                }
            })?;
            bytes += n;
            keys.push(m.key.clone());
            progress.written += 1;
            failpoint("convert-after-write", progress.written);
        }
        let end = w
            .into_inner()
            .map_err(|e| io_err("cannot write", path, e.into_error()))?
            .pos;
        file.sync_all()
            .map_err(|e| io_err("cannot sync", path, e))?;
        Ok(end)
    })();
    let end = match written {
        Ok(end) => end,
        Err(e) => {
            // Take the partial batch back now (a crash here is what the next run's
            // recovery is for).
            if file.set_len(start).and_then(|()| file.sync_all()).is_ok() {
                let _ = state.mbox_undo();
            }
            return Err(e);
        }
    };
    state.mbox_end(&keys, end).map_err(|e| state.err(e))?;
    report.copied += keys.len() as u64;
    report.copied_bytes += bytes;
    failpoint("convert-after-commit", progress.written);
    drop(lock);
    Ok(())
}

/// Cuts an interrupted batch off the end of the mbox after checking that everything
/// from the batch's start is ours: blank lines, then only our From_ lines (in order;
/// the last line may be cut short) and quoted bodies. Returns whether bytes were cut.
fn undo_partial_batch(
    path: &Path,
    file: &File,
    batch: &super::state::MboxBatch,
    state_path: &Path,
) -> Result<bool, ConvertError> {
    let meta = file
        .metadata()
        .map_err(|e| io_err("cannot stat", path, e))?;
    let refuse = |why: &str| {
        Err(ConvertError::Recovery(format!(
            "{}: an earlier convert was interrupted while appending at offset {}, and {why}; \
             look at the end of the mbox and remove the partial copy by hand if needed; to \
             start over, remove the mbox and {}",
            path.display(),
            batch.start,
            state_path.display()
        )))
    };
    if meta.ino() != batch.ino {
        return refuse("the mbox has been replaced since");
    }
    let len = meta.len();
    if len < batch.start {
        return refuse("the mbox has been shortened since");
    }
    if len == batch.start {
        return Ok(false);
    }
    let mut rd =
        BufReader::with_capacity(CHUNK, super::source::range_reader(file, batch.start, len));
    let mut expected = batch.from_lines.iter();
    let mut seen_from = false;
    let mut line = Vec::with_capacity(1024);
    const KEEP: usize = 2 * MAX_FROM;
    loop {
        // Lines of any length: keep only their start.
        line.clear();
        let mut total = 0usize;
        let mut ended = false;
        loop {
            let buf = rd.fill_buf().map_err(|e| io_err("cannot read", path, e))?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() < KEEP {
                line.extend_from_slice(&buf[..take.min(KEEP - line.len())]);
            }
            total += take;
            rd.consume(take);
            if done {
                ended = true;
                break;
            }
        }
        if total == 0 {
            break;
        }
        if line.starts_with(b"From ") {
            // One of ours, in order (some may be missing: vanished from the source);
            // the last line may be cut short.
            let ok = expected.any(|e| *e == line || (!ended && e.starts_with(&line)));
            if !ok {
                return refuse(
                    "what follows is not only the interrupted copy (another program appended)",
                );
            }
            seen_from = true;
        } else if !seen_from {
            let lead = ended && line == b"\n";
            let cut_in_from = !ended && b"From ".starts_with(&line);
            if !lead && !cut_in_from {
                return refuse("what follows does not start with the interrupted copy");
            }
        }
    }
    file.set_len(batch.start)
        .map_err(|e| io_err("cannot truncate", path, e))?;
    file.sync_all()
        .map_err(|e| io_err("cannot sync", path, e))?;
    tracing::warn!(path = %path.display(), offset = batch.start, "removed the partial copy of an interrupted convert");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_source_order() {
        let t = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let a = new_base(t, 9, "h");
        let b = new_base(t, 10, "h");
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("1700000000.M000009P"));
        assert!(!a.contains(',') && !a.contains(':') && !a.contains('/'));
    }

    #[test]
    fn uidlist_is_created_then_appended() {
        let d = tempfile::tempdir().unwrap();
        let r = [("uid-a".to_string(), OsString::from("1.a.h,S=1"))];
        assert!(append_uidlist(d.path(), &r, Duration::from_secs(1)).unwrap());
        let r2 = [("uid-b".to_string(), OsString::from("2.b.h:2,S"))];
        assert!(append_uidlist(d.path(), &r2, Duration::from_secs(1)).unwrap());
        let text = fs::read_to_string(d.path().join("dovecot-uidlist")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("3 V") && lines[0].ends_with(" N3"),
            "{text}"
        );
        assert_eq!(&lines[1..], ["1 Puid-a :1.a.h,S=1", "2 Puid-b :2.b.h:2,S"]);
        let m = super::super::source::parse_dovecot_uidlist(text.as_bytes());
        assert_eq!(m[&b"2.b.h"[..]], "uid-b");
        assert!(!d.path().join("dovecot-uidlist.lock").exists());
        fs::write(d.path().join("dovecot-uidlist"), "1 42 3\n").unwrap();
        assert!(!append_uidlist(d.path(), &r, Duration::from_secs(1)).unwrap());
        assert_eq!(
            fs::read_to_string(d.path().join("dovecot-uidlist")).unwrap(),
            "1 42 3\n"
        );
    }
}
