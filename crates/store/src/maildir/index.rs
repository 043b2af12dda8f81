//! The small per-Maildir index file `correio-index`: per base name its UIDL and, for
//! files whose name carries no `,W=`, the computed wire size with the file size and
//! mtime it was computed from (so a changed file is never trusted blindly).
//!
//! Format (text, one record per line, written whole to a temporary file, fsynced and
//! renamed over the old one, so a reader sees the old or the new file, never a mix):
//! ```text
//! correio-maildir-index 1
//! <hex base> <uidl> <wire size or -> <file size or -> <mtime ns or ->
//! ...
//! end <number of records>
//! ```
//! A missing, unreadable or malformed file (bad header, bad line, missing or wrong
//! `end`) is ignored as a whole and rebuilt: UIDLs are derived from base names
//! deterministically (or from `dovecot-uidlist`), so a rebuild gives the same UIDLs.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use correio_fsutil::{AtomicWrite, TempName};

/// The index file name inside the Maildir.
pub const INDEX_FILE: &str = "correio-index";
const HEADER: &str = "correio-maildir-index 1";
/// An index larger than this is treated as corrupt (a Maildir of a million messages
/// fits in well under this).
const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) uidl: String,
    /// Cached wire size, with the file size and mtime it is valid for.
    pub(crate) wire: Option<u64>,
    pub(crate) file_size: Option<u64>,
    pub(crate) mtime_ns: Option<i128>,
}

/// The parsed index: base name → record.
pub(crate) type Index = HashMap<Vec<u8>, IndexEntry>;

fn hex_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn opt<T: std::str::FromStr>(s: &str) -> Result<Option<T>, ()> {
    if s == "-" {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(|_| ())
    }
}

fn valid_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Parses index text; `None` when anything is malformed.
pub(crate) fn parse(text: &[u8]) -> Option<Index> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != HEADER {
        return None;
    }
    let mut index = Index::new();
    let mut uidls = std::collections::HashSet::new();
    for line in lines {
        if let Some(n) = line.strip_prefix("end ") {
            let n: usize = n.parse().ok()?;
            return (n == index.len()).then_some(index);
        }
        let mut f = line.split(' ');
        let (b, u, w, s, m) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || !valid_uidl(u) {
            return None;
        }
        let entry = IndexEntry {
            uidl: u.to_string(),
            wire: opt(w).ok()?,
            file_size: opt(s).ok()?,
            mtime_ns: opt(m).ok()?,
        };
        // Two records with one base or one UIDL would break uniqueness: corrupt.
        if !uidls.insert(entry.uidl.clone()) || index.insert(hex_decode(b)?, entry).is_some() {
            return None;
        }
    }
    None
}

/// Reads the index of `root`; an empty index when missing or corrupt.
pub(crate) fn load(root: &Path) -> Index {
    let path = root.join(INDEX_FILE);
    match fs::metadata(&path) {
        Ok(m) if m.len() > MAX_INDEX_BYTES => {
            tracing::warn!(path = %path.display(), "index too large, rebuilding");
            return Index::new();
        }
        Ok(_) => {}
        Err(_) => return Index::new(),
    }
    match fs::read(&path) {
        Ok(bytes) => parse(&bytes).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "index is corrupt, rebuilding");
            Index::new()
        }),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read index, rebuilding");
            Index::new()
        }
    }
}

/// Renders an index.
pub(crate) fn render(index: &Index) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.len() * 96);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    let mut keys: Vec<_> = index.keys().collect();
    keys.sort();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    for k in keys {
        let e = &index[k];
        let line = format!(
            "{} {} {} {} {}\n",
            hex_encode(k),
            e.uidl,
            dash(e.wire.map(|v| v.to_string())),
            dash(e.file_size.map(|v| v.to_string())),
            dash(e.mtime_ns.map(|v| v.to_string())),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(format!("end {}\n", index.len()).as_bytes());
    out
}

/// Writes the index of `root` atomically: temporary file, fsync, rename, fsync dir.
/// The temporary is `correio-index.tmp.<pid>` (fsck recognizes it and removes it once
/// the process is gone); writers hold the session lock, so the name is free.
pub(crate) fn store(root: &Path, index: &Index) -> io::Result<()> {
    AtomicWrite::new()
        .mode(0o600)
        .temp_name(TempName::PidSuffixed(format!("{INDEX_FILE}.tmp.").into()))
        .write(&root.join(INDEX_FILE), &render(index))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut i = Index::new();
        i.insert(
            b"1.a.host".to_vec(),
            IndexEntry {
                uidl: "1.a.host".into(),
                wire: Some(10),
                file_size: Some(9),
                mtime_ns: Some(-5),
            },
        );
        i.insert(
            b"2 b".to_vec(),
            IndexEntry {
                uidl: "0000000100000007".into(),
                wire: None,
                file_size: None,
                mtime_ns: None,
            },
        );
        i
    }

    #[test]
    fn roundtrip() {
        let i = sample();
        assert_eq!(parse(&render(&i)), Some(i));
    }

    #[test]
    fn every_truncation_is_detected() {
        let text = render(&sample());
        for cut in 0..text.len() - 1 {
            assert_eq!(parse(&text[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn duplicate_uidl_is_corrupt() {
        let t = b"correio-maildir-index 1\n61 x - - -\n62 x - - -\nend 2\n";
        assert_eq!(parse(t), None);
    }

    #[test]
    fn store_and_load() {
        let d = tempfile::tempdir().unwrap();
        store(d.path(), &sample()).unwrap();
        assert_eq!(load(d.path()), sample());
        fs::write(d.path().join(INDEX_FILE), b"garbage").unwrap();
        assert!(load(d.path()).is_empty());
    }
}
