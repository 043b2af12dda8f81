//! Reading the source mailbox: its messages in order, each with a key that stays the
//! same across runs (for the state file), its date, flags and UIDL, and a stream of
//! the message's bytes.
//!
//! - Maildir: the files in `cur/` and `new/` (as the POP3 server lists them: names
//!   starting with `.` and directories skipped, one file per base name), oldest first by
//!   the time in the base name. Key: the base name. Date: the file's mtime. Flags: the
//!   `:2,` info and `cur/`. UIDL: what Correio's POP3 server shows for it (its index
//!   `correio-index`, else `dovecot-uidlist`, else derived from the base name). A file
//!   renamed while we work (a mail program changing flags) is found again by its base.
//! - EML: the regular files named `*.eml` not starting with `.`, by mtime then name. Key:
//!   the file name. Date: mtime. No flags, no UIDL.
//! - mbox: split by Correio's mbox scanner ([`super::scan_mbox`]) under the mail locks,
//!   then read through our own descriptor (an mbox rewritten by rename does not affect
//!   us; one rewritten in place is detected by the From_ line no longer being where it
//!   was). Key and UIDL: the UIDL the POP3 server shows. Date: the From_ line.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::message::{
    Derived, Flags, MboxMeta, Unquote, Unquoting, from_line_date, mbox_meta, read_some, scan_header,
};
use super::{ConvertError, MboxMessage, io_err, scan_mbox};
use crate::lock::MboxLock;

/// One message of the source, as listed.
#[derive(Debug, Clone)]
pub(crate) struct SourceMessage {
    /// Identifies the message within its source across runs.
    pub(crate) key: Vec<u8>,
    /// Position in the source's order.
    pub(crate) ordinal: u64,
    /// About its size (for batching).
    pub(crate) size_hint: u64,
    loc: Loc,
}

#[derive(Debug, Clone)]
enum Loc {
    Maildir { name: OsString, cur: bool },
    Eml { name: OsString },
    Mbox { index: usize },
}

/// What is known once a message is looked at closely (right before it is copied).
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) flags: Flags,
    pub(crate) date: Option<SystemTime>,
    pub(crate) uidl: Option<String>,
    /// mbox sources: the original From_ line (with its line end).
    pub(crate) from_line: Option<Vec<u8>>,
    /// Maildir sources: the base name, which a Maildir destination keeps.
    pub(crate) base: Option<Vec<u8>>,
    /// EML sources: the file name, which an EML destination keeps.
    pub(crate) eml_name: Option<OsString>,
    /// The message's length and last byte, when known without reading it.
    pub(crate) len_last: Option<(u64, Option<u8>)>,
    path: Option<PathBuf>,
    meta: Option<MboxMeta>,
}

/// An open source mailbox.
#[derive(Debug)]
pub(crate) enum Source {
    Maildir {
        root: PathBuf,
        uidls: HashMap<Vec<u8>, String>,
    },
    Eml {
        dir: PathBuf,
    },
    Mbox {
        path: PathBuf,
        file: File,
        messages: Vec<MboxMessage>,
        /// How Content-Length (verbatim) bodies are read: as they are (mboxcl2) or
        /// mboxo-unquoted (mboxcl).
        cl_unquoting: Unquoting,
    },
}

fn base_of(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .position(|&b| b == b',' || b == b':')
        .unwrap_or(name.len());
    &name[..end]
}

/// The delivery time in a base name, for ordering: leading seconds and the
/// microseconds of `.M<usec>` (as the POP3 server orders a Maildir).
fn time_of(base: &[u8]) -> (u64, u64) {
    let num = |b: &[u8]| -> u64 {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count().min(19);
        std::str::from_utf8(&b[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let secs = num(base);
    let usec = base
        .strip_prefix(format!("{secs}.M").as_bytes())
        .map(num)
        .unwrap_or(0);
    (secs, usec)
}

fn valid_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

const MAX_UID_FILE: u64 = 256 * 1024 * 1024;

fn read_small(path: &Path) -> Option<Vec<u8>> {
    match fs::metadata(path) {
        Ok(m) if m.len() <= MAX_UID_FILE => fs::read(path).ok(),
        _ => None,
    }
}

/// The POP3 server's Maildir index (`correio-index`, see `maildir/index.rs`): base
/// name → UIDL. Anything malformed voids the whole file, as for the server.
pub(crate) fn parse_correio_index(bytes: &[u8]) -> Option<HashMap<Vec<u8>, String>> {
    // The store's own parser (either format), so the two can never disagree.
    crate::maildir::index::parse(bytes).map(|i| i.into_iter().map(|(k, e)| (k, e.uidl)).collect())
}

/// Dovecot's `dovecot-uidlist` (versions 1 and 3): base name → the UIDL Dovecot's
/// POP3 server shows (`%08x%08x` of UID and UIDVALIDITY, or the `P` extension).
pub(crate) fn parse_dovecot_uidlist(bytes: &[u8]) -> HashMap<Vec<u8>, String> {
    let mut out = HashMap::new();
    let mut lines = bytes.split(|&b| b == b'\n');
    let Some(header) = lines.next().and_then(|h| std::str::from_utf8(h).ok()) else {
        return out;
    };
    let mut h = header.split(' ');
    let version = h.next();
    let validity: Option<u32> = match version {
        Some("3") => h
            .find_map(|f| f.strip_prefix('V'))
            .and_then(|v| v.parse().ok()),
        Some("1") => h.next().and_then(|v| v.parse().ok()),
        _ => None,
    };
    let Some(validity) = validity else {
        return out;
    };
    for line in lines {
        let sep = if version == Some("3") { b':' } else { b' ' };
        let Some(p) = line.iter().position(|&b| b == sep) else {
            continue;
        };
        let (fields, name) = (&line[..p], &line[p + 1..]);
        let Ok(fields) = std::str::from_utf8(fields) else {
            continue;
        };
        let mut f = fields.split_ascii_whitespace();
        let Some(uid) = f.next().and_then(|u| u.parse::<u32>().ok()) else {
            continue;
        };
        let mut uidl = format!("{uid:08x}{validity:08x}");
        for ext in f {
            if let Some(p) = ext.strip_prefix('P')
                && valid_uidl(p)
            {
                uidl = p.to_string();
            }
        }
        let base = base_of(name);
        if !base.is_empty() {
            out.insert(base.to_vec(), uidl);
        }
    }
    out
}

fn mtime(m: &fs::Metadata) -> Option<SystemTime> {
    m.modified().ok()
}

/// The last byte of a file of length `len`.
fn last_byte_of(f: &File, len: u64) -> io::Result<Option<u8>> {
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    let n = f.read_at(&mut b, len - 1)?;
    Ok((n == 1).then_some(b[0]))
}

/// A byte range of a file, read with `pread`.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
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
                "the mbox shrank while being read",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

impl Source {
    /// Opens a Maildir source (it must exist).
    pub(crate) fn maildir(root: &Path) -> Result<Source, ConvertError> {
        for sub in ["cur", "new"] {
            let p = root.join(sub);
            if !p.is_dir() {
                return Err(ConvertError::Usage(format!(
                    "{} is not a Maildir (no {sub}/ directory)",
                    root.display()
                )));
            }
        }
        let mut uidls = read_small(&root.join("dovecot-uidlist"))
            .map(|b| parse_dovecot_uidlist(&b))
            .unwrap_or_default();
        // The server's own index wins over dovecot-uidlist, as in the server.
        if let Some(index) =
            read_small(&root.join(crate::maildir::INDEX_FILE)).and_then(|b| parse_correio_index(&b))
        {
            uidls.extend(index);
        }
        Ok(Source::Maildir {
            root: root.to_path_buf(),
            uidls,
        })
    }

    /// Opens a folder of `.eml` files (it must exist).
    pub(crate) fn eml(dir: &Path) -> Result<Source, ConvertError> {
        if !dir.is_dir() {
            return Err(ConvertError::Usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(Source::Eml {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an mbox source: scans it under the local mail locks (an append that
    /// Correio left half-done is undone first) and keeps a descriptor for reading.
    pub(crate) fn mbox(
        path: &Path,
        lock_timeout: Duration,
        mboxcl: bool,
    ) -> Result<Source, ConvertError> {
        let meta = fs::metadata(path).map_err(|e| io_err("cannot open", path, e))?;
        if meta.is_dir() {
            return Err(ConvertError::Usage(format!(
                "{} is a directory, not an mbox file",
                path.display()
            )));
        }
        if crate::mbox::journal_path(path).exists() {
            // Taking the writer's locks undoes an interrupted append (the store's own
            // recovery); the empty batch is dropped unused.
            let w = crate::mbox::MboxWriter::new(
                path,
                crate::DeliverOptions::default().lock_timeout(lock_timeout),
            );
            drop(w.batch().map_err(|e| {
                ConvertError::Usage(format!(
                    "{} has an interrupted append that must be repaired first, which needs write access: {e}",
                    path.display()
                ))
            })?);
        }
        let (file, _lock) = match MboxLock::acquire(path, false, lock_timeout) {
            Ok(lock) => {
                let f = lock
                    .file()
                    .try_clone()
                    .map_err(|e| io_err("cannot open", path, e))?;
                (f, Some(lock))
            }
            Err(crate::StoreError::Io { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                // Read-only: no locks for us (readers of a spool we may not write).
                tracing::warn!(path = %path.display(), "reading the mbox without locks (no write access)");
                (
                    File::open(path).map_err(|e| io_err("cannot open", path, e))?,
                    None,
                )
            }
            Err(e) => return Err(e.into()),
        };
        let messages = scan_mbox(&file).map_err(|e| io_err("cannot read", path, e))?;
        Ok(Source::Mbox {
            path: path.to_path_buf(),
            file,
            messages,
            cl_unquoting: if mboxcl {
                Unquoting::Mboxo
            } else {
                Unquoting::None
            },
        })
    }

    /// Every message, in the source's order.
    pub(crate) fn list(&self) -> Result<Vec<SourceMessage>, ConvertError> {
        let mut out = Vec::new();
        match self {
            Source::Maildir { root, .. } => {
                // (time in the name, base, file name, in cur/)
                type Entry = ((u64, u64), Vec<u8>, OsString, bool);
                let mut entries: Vec<Entry> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (sub, cur) in [("cur", true), ("new", false)] {
                    let dir = root.join(sub);
                    let rd = fs::read_dir(&dir).map_err(|e| io_err("cannot list", &dir, e))?;
                    for ent in rd {
                        let ent = ent.map_err(|e| io_err("cannot list", &dir, e))?;
                        let name = ent.file_name();
                        let b = name.as_bytes();
                        if b.first() == Some(&b'.') || ent.file_type().is_ok_and(|t| t.is_dir()) {
                            continue;
                        }
                        let base = base_of(b).to_vec();
                        if base.is_empty() || !seen.insert(base.clone()) {
                            continue;
                        }
                        entries.push((time_of(&base), base, name, cur));
                    }
                }
                entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                for (i, (_, base, name, cur)) in entries.into_iter().enumerate() {
                    out.push(SourceMessage {
                        key: base,
                        ordinal: i as u64,
                        size_hint: 0,
                        loc: Loc::Maildir { name, cur },
                    });
                }
            }
            Source::Eml { dir } => {
                let rd = fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
                let mut entries = Vec::new();
                for ent in rd {
                    let ent = ent.map_err(|e| io_err("cannot list", dir, e))?;
                    let name = ent.file_name();
                    let b = name.as_bytes();
                    let is_eml = b.len() > 4 && b[b.len() - 4..].eq_ignore_ascii_case(b".eml");
                    if !is_eml || b.first() == Some(&b'.') {
                        continue;
                    }
                    let Ok(m) = fs::metadata(ent.path()) else {
                        continue;
                    };
                    if !m.is_file() {
                        continue;
                    }
                    entries.push((mtime(&m), m.len(), name));
                }
                entries.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
                for (i, (_, len, name)) in entries.into_iter().enumerate() {
                    out.push(SourceMessage {
                        key: name.as_bytes().to_vec(),
                        ordinal: i as u64,
                        size_hint: len,
                        loc: Loc::Eml { name },
                    });
                }
            }
            Source::Mbox { messages, .. } => {
                for (i, m) in messages.iter().enumerate() {
                    out.push(SourceMessage {
                        key: m.uidl.as_bytes().to_vec(),
                        ordinal: i as u64,
                        size_hint: m.content.end - m.content.start,
                        loc: Loc::Mbox { index: i },
                    });
                }
            }
        }
        Ok(out)
    }

    /// Looks at one message: flags, date, UIDL. `Ok(None)`: it was removed from the
    /// source since the listing.
    pub(crate) fn prepare(&self, m: &SourceMessage) -> Result<Option<Prepared>, ConvertError> {
        let mut p = Prepared {
            flags: Flags::default(),
            date: None,
            uidl: None,
            from_line: None,
            base: None,
            eml_name: None,
            len_last: None,
            path: None,
            meta: None,
        };
        match (self, &m.loc) {
            (Source::Maildir { root, uidls }, Loc::Maildir { name, cur }) => {
                let mut found =
                    Some((root.join(if *cur { "cur" } else { "new" }).join(name), *cur));
                let mut file = None;
                for _ in 0..3 {
                    let Some((path, _)) = &found else { break };
                    match File::open(path) {
                        Ok(f) => {
                            file = Some(f);
                            break;
                        }
                        // Renamed by a mail program (flags), or removed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            found = find_by_base(root, &m.key)?;
                        }
                        Err(e) => return Err(io_err("cannot open", path, e)),
                    }
                }
                let (Some(file), Some((path, cur))) = (file, found) else {
                    return Ok(None);
                };
                let meta = file
                    .metadata()
                    .map_err(|e| io_err("cannot stat", &path, e))?;
                let fname = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                p.flags = Flags::from_maildir_name(fname, cur);
                p.date = mtime(&meta);
                p.uidl = Some(uidls.get(&m.key).cloned().unwrap_or_else(|| {
                    crate::maildir::uidl_for_name(path.file_name().unwrap_or_default())
                }));
                p.base = Some(m.key.clone());
                p.len_last = Some((
                    meta.len(),
                    last_byte_of(&file, meta.len()).map_err(|e| io_err("cannot read", &path, e))?,
                ));
                p.path = Some(path);
            }
            (Source::Eml { dir }, Loc::Eml { name }) => {
                let path = dir.join(name);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_err("cannot open", &path, e)),
                };
                let meta = file
                    .metadata()
                    .map_err(|e| io_err("cannot stat", &path, e))?;
                p.date = mtime(&meta);
                p.eml_name = Some(name.clone());
                p.len_last = Some((
                    meta.len(),
                    last_byte_of(&file, meta.len()).map_err(|e| io_err("cannot read", &path, e))?,
                ));
                p.path = Some(path);
            }
            (
                Source::Mbox {
                    path,
                    file,
                    messages,
                    cl_unquoting,
                },
                Loc::Mbox { index },
            ) => {
                let Some(msg) = messages.get(*index) else {
                    return Ok(None);
                };
                check_from_line(file, path, msg)?;
                let how = if msg.content_length_body {
                    *cl_unquoting
                } else {
                    Unquoting::Mboxrd
                };
                let scan = scan_header(Unquote::new(range(file, msg), how))
                    .map_err(|e| io_err("cannot read", path, e))?;
                let meta = mbox_meta(&scan);
                p.flags = meta.flags.clone();
                p.date = from_line_date(&msg.from_line).map(super::message::from_unix_secs);
                p.uidl = Some(msg.uidl.clone());
                if msg.from_line.ends_with(b"\n") {
                    p.from_line = Some(msg.from_line.clone());
                }
                p.meta = Some(meta);
            }
            _ => return Ok(None),
        }
        Ok(Some(p))
    }

    /// A stream of the message's bytes. `Ok(None)`: it was removed meanwhile.
    pub(crate) fn open(
        &self,
        m: &SourceMessage,
        p: &Prepared,
    ) -> Result<Option<Box<dyn Read + '_>>, ConvertError> {
        match (self, &m.loc) {
            (
                Source::Mbox {
                    path,
                    file,
                    messages,
                    cl_unquoting,
                },
                Loc::Mbox { index },
            ) => {
                let Some(msg) = messages.get(*index) else {
                    return Ok(None);
                };
                check_from_line(file, path, msg)?;
                let how = if msg.content_length_body {
                    *cl_unquoting
                } else {
                    Unquoting::Mboxrd
                };
                let meta = p.meta.clone().unwrap_or_default();
                Ok(Some(Box::new(Derived::new(
                    Unquote::new(range(file, msg), how),
                    &meta,
                ))))
            }
            _ => {
                let Some(path) = &p.path else {
                    return Ok(None);
                };
                match File::open(path) {
                    Ok(f) => Ok(Some(Box::new(f))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err("cannot open", path, e)),
                }
            }
        }
    }

    /// The message's length and last byte: from the file, or (mbox sources) by
    /// reading the message once.
    pub(crate) fn len_last(
        &self,
        m: &SourceMessage,
        p: &Prepared,
    ) -> Result<Option<(u64, Option<u8>)>, ConvertError> {
        if let Some(v) = p.len_last {
            return Ok(Some(v));
        }
        let Some(mut r) = self.open(m, p)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; super::message::CHUNK];
        let (mut len, mut last) = (0u64, None);
        loop {
            let n = read_some(&mut r, &mut buf).map_err(|e| self.read_err(e))?;
            if n == 0 {
                return Ok(Some((len, last)));
            }
            len += n as u64;
            last = Some(buf[n - 1]);
        }
    }

    /// An error reading the source, with its path.
    pub(crate) fn read_err(&self, e: io::Error) -> ConvertError {
        let path = match self {
            Source::Maildir { root, .. } => root,
            Source::Eml { dir } => dir,
            Source::Mbox { path, .. } => path,
        };
        io_err("cannot read from", path, e)
    }
}

/// A reader of the bytes `start..end` of `file`.
pub(crate) fn range_reader(file: &File, start: u64, end: u64) -> impl Read + '_ {
    RangeReader {
        file,
        pos: start,
        end,
    }
}

fn range<'a>(file: &'a File, m: &MboxMessage) -> RangeReader<'a> {
    RangeReader {
        file,
        pos: m.content.start,
        end: m.content.end,
    }
}

/// The From_ line must still be where the scan found it: otherwise another program
/// rewrote the mbox in place under us.
fn check_from_line(file: &File, path: &Path, m: &MboxMessage) -> Result<(), ConvertError> {
    let mut head = vec![0u8; m.from_line.len().min(128)];
    let n = file
        .read_at(&mut head, m.from_start)
        .map_err(|e| io_err("cannot read", path, e))?;
    if n != head.len() || !m.from_line.starts_with(&head) {
        return Err(ConvertError::SourceChanged(format!(
            "{} was rewritten in place by another program while being converted; run the same command again to go on",
            path.display()
        )));
    }
    Ok(())
}

/// Finds a Maildir message by its base name (after a rename), with whether it is in
/// `cur/`.
fn find_by_base(root: &Path, base: &[u8]) -> Result<Option<(PathBuf, bool)>, ConvertError> {
    for (sub, cur) in [("cur", true), ("new", false)] {
        let dir = root.join(sub);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            if base_of(name.as_bytes()) == base {
                return Ok(Some((dir.join(name), cur)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_uidlist() {
        let idx = parse_correio_index(
            b"correio-maildir-index 1\n312e612e686f7374 uid-a 10 9 -5\n32 uid-b - - -\nend 2\n",
        )
        .unwrap();
        assert_eq!(idx[&b"1.a.host"[..]], "uid-a");
        assert_eq!(idx[&b"2"[..]], "uid-b");
        assert!(parse_correio_index(b"correio-maildir-index 1\n32 x - - -\n").is_none());
        assert!(parse_correio_index(b"correio-maildir-index 1\n32 x - - -\nend 2\n").is_none());
        let d = parse_dovecot_uidlist(
            b"3 V1700000000 N4 G0123\n1 :1.M1P1.host,S=10:2,S\n3 Pold-3 :3.M3.host\nbad\n",
        );
        assert_eq!(d[&b"1.M1P1.host"[..]], "000000016553f100");
        assert_eq!(d[&b"3.M3.host"[..]], "old-3");
        let d = parse_dovecot_uidlist(b"1 42 3\n2 2.b.host:2,\n");
        assert_eq!(d[&b"2.b.host"[..]], "000000020000002a");
    }

    #[test]
    fn order_by_time_in_name() {
        assert!(time_of(b"1700000000.M9P1.h") < time_of(b"1700000000.M10P1.h"));
        assert_eq!(time_of(b"x"), (0, 0));
    }
}
