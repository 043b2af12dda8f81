//! The small per-Maildir index file `correio-index`: per message its UIDL and, for
//! files whose name carries no `,W=`, the computed wire size with the file size and
//! mtime it was computed from (so a changed file is never trusted blindly).
//!
//! Format 2 (text, written whole to a temporary file, fsynced and renamed over the old
//! one, so a reader sees the old or the new file, never a mix) is the session's whole
//! listing, in listing order:
//! ```text
//! correio-maildir-index 2
//! dirs <mtime ns of cur/ or -> <mtime ns of new/ or ->
//! <c or n> <file name, %-escaped> <uidl> <wire size or -> <file size or -> <mtime ns or ->
//! ...
//! end <number of records>
//! ```
//! When `cur/` and `new/` still have the recorded mtimes, nothing was added, removed or
//! renamed there since the listing was taken, and a warm open takes it from here
//! without reading the directories (as Dovecot does with its index). A directory that
//! had changed less than [`QUIET`] before the listing was taken is recorded as `-`
//! (a change in the same clock tick would not move its mtime), so the next open lists
//! it again. Format 1 (`correio-maildir-index 1`, keyed by hex base name, no names or
//! order; still read, and written by fsck) never allows the shortcut.
//!
//! A missing, unreadable or malformed file (bad header, bad line, missing or wrong
//! `end`) is ignored as a whole and rebuilt: UIDLs are derived from base names
//! deterministically (or from `dovecot-uidlist`), so a rebuild gives the same UIDLs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use correio_fsutil::{AtomicWrite, TempName};

/// The index file name inside the Maildir.
pub const INDEX_FILE: &str = "correio-index";
const HEADER: &str = "correio-maildir-index 1";
const HEADER2: &str = "correio-maildir-index 2";
/// How long a directory must have been unchanged before its mtime may vouch for its
/// listing (well above any file system's timestamp granularity).
pub(crate) const QUIET: std::time::Duration = std::time::Duration::from_secs(2);
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

/// One message of a format-2 listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// In `new/` (else `cur/`).
    pub(crate) new: bool,
    /// The file name.
    pub(crate) name: OsString,
    /// UIDL and cached sizes.
    pub(crate) entry: IndexEntry,
}

/// A format-2 index: the listing a session took, and the directory mtimes it is valid
/// for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// mtime (ns) of `cur/` and of `new/` before they were read; `None`: not quiet
    /// then, list again.
    pub(crate) dirs: [Option<i128>; 2],
    /// In listing order.
    pub(crate) records: Vec<Record>,
}

impl Listing {
    /// The records keyed by base name (what a full listing consults).
    pub(crate) fn to_index(&self) -> Index {
        self.records
            .iter()
            .map(|r| {
                (
                    super::names::base_of(r.name.as_bytes()).to_vec(),
                    r.entry.clone(),
                )
            })
            .collect()
    }
}

/// What `correio-index` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Nothing usable.
    None,
    /// Format 1 (records by base name).
    Records(Index),
    /// Format 2 (a listing).
    Listing(Listing),
}

impl Stored {
    /// The records keyed by base name.
    pub(crate) fn into_index(self) -> Index {
        match self {
            Stored::None => Index::new(),
            Stored::Records(i) => i,
            Stored::Listing(l) => l.to_index(),
        }
    }
}

/// A file name in the index: bytes 0x21-0x7E other than `%` as they are, the rest as
/// `%XX`.
fn escape_name(name: &[u8], out: &mut Vec<u8>) {
    for &b in name {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

fn unescape_name(s: &str) -> Option<OsString> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if !b.contains(&b'%') {
        // Only what `escape_name` writes unescaped (a found fuzz case: a raw NUL was
        // taken here, written back as `%00`, and that refused on the next read).
        let plain = b.iter().all(|&c| (0x21..=0x7e).contains(&c) && c != b'/');
        return plain.then(|| OsString::from_vec(b.to_vec()));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (!out.contains(&b'/') && !out.contains(&0)).then(|| OsString::from_vec(out))
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
    opt(s).ok()
}

/// Parses a format-2 index; `None` when anything is malformed (two records with one
/// name, base or UIDL included).
pub(crate) fn parse_listing(text: &[u8]) -> Option<Listing> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != HEADER2 {
        return None;
    }
    let dirs = lines.next()?.strip_prefix("dirs ")?;
    let (c, n) = dirs.split_once(' ')?;
    let mut listing = Listing {
        dirs: [parse_num(c)?, parse_num(n)?],
        // One record per line: sized once (growing a 50,000-record vector by doubling
        // copied it about twice over).
        records: Vec::with_capacity(memchr::memchr_iter(b'\n', text.as_bytes()).count()),
    };
    for line in lines {
        if let Some(n) = line.strip_prefix("end ") {
            let n: usize = n.parse().ok()?;
            if n != listing.records.len() {
                return None;
            }
            // Uniqueness: a hand-edited or damaged file must not give two messages
            // one UIDL or one base name (borrowed keys: no copies).
            let mut uidls = rustc_hash::FxHashSet::default();
            let mut bases = rustc_hash::FxHashSet::default();
            uidls.reserve(n);
            bases.reserve(n);
            for r in &listing.records {
                if !uidls.insert(r.entry.uidl.as_str())
                    || !bases.insert(super::names::base_of(r.name.as_bytes()))
                {
                    return None;
                }
            }
            return Some(listing);
        }
        let mut f = line.split(' ');
        let (sub, name, u, w, s, m) = (
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
        );
        if f.next().is_some() || !valid_uidl(u) {
            return None;
        }
        let new = match sub {
            "c" => false,
            "n" => true,
            _ => return None,
        };
        let name = unescape_name(name)?;
        if super::names::base_of(name.as_bytes()).is_empty() || name.as_bytes()[0] == b'.' {
            return None;
        }
        listing.records.push(Record {
            new,
            name,
            entry: IndexEntry {
                uidl: u.to_string(),
                wire: parse_num(w)?,
                file_size: parse_num(s)?,
                mtime_ns: parse_num(m)?,
            },
        });
    }
    None
}

/// Renders a format-2 index.
pub(crate) fn render_listing(l: &Listing) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(64 + l.records.len() * 96);
    out.extend_from_slice(HEADER2.as_bytes());
    out.push(b'\n');
    let num = |out: &mut Vec<u8>, v: Option<i128>| match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push(b'-'),
    };
    out.extend_from_slice(b"dirs ");
    num(&mut out, l.dirs[0]);
    out.push(b' ');
    num(&mut out, l.dirs[1]);
    out.push(b'\n');
    for r in &l.records {
        out.extend_from_slice(if r.new { b"n " } else { b"c " });
        escape_name(r.name.as_bytes(), &mut out);
        out.push(b' ');
        out.extend_from_slice(r.entry.uidl.as_bytes());
        out.push(b' ');
        num(&mut out, r.entry.wire.map(i128::from));
        out.push(b' ');
        num(&mut out, r.entry.file_size.map(i128::from));
        out.push(b' ');
        num(&mut out, r.entry.mtime_ns);
        out.push(b'\n');
    }
    let _ = writeln!(out, "end {}", l.records.len());
    out
}

/// Writes a format-2 index of `root` atomically (as [`store`]).
pub(crate) fn store_listing(root: &Path, l: &Listing) -> io::Result<()> {
    AtomicWrite::new()
        .mode(0o600)
        .temp_name(TempName::PidSuffixed(format!("{INDEX_FILE}.tmp.").into()))
        .write(&root.join(INDEX_FILE), &render_listing(l))?;
    Ok(())
}

/// Reads the index of `root` in either format.
pub(crate) fn load_stored(root: &Path) -> Stored {
    let path = root.join(INDEX_FILE);
    match fs::metadata(&path) {
        Ok(m) if m.len() > MAX_INDEX_BYTES => {
            tracing::warn!(path = %path.display(), "index too large, rebuilding");
            return Stored::None;
        }
        Ok(_) => {}
        Err(_) => return Stored::None,
    }
    match fs::read(&path) {
        Ok(bytes) if bytes.starts_with(HEADER2.as_bytes()) => match parse_listing(&bytes) {
            Some(l) => Stored::Listing(l),
            None => {
                tracing::warn!(path = %path.display(), "index is corrupt, rebuilding");
                Stored::None
            }
        },
        Ok(bytes) => match parse(&bytes) {
            Some(i) => Stored::Records(i),
            None => {
                tracing::warn!(path = %path.display(), "index is corrupt, rebuilding");
                Stored::None
            }
        },
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read index, rebuilding");
            Stored::None
        }
    }
}

/// Parses index text of either format into records by base name; `None` when
/// anything is malformed.
pub(crate) fn parse(text: &[u8]) -> Option<Index> {
    if text.starts_with(HEADER2.as_bytes()) {
        return parse_listing(text).map(|l| l.to_index());
    }
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

/// Reads the index of `root` (either format) as records by base name; an empty index
/// when missing or corrupt.
#[cfg(test)]
pub(crate) fn load(root: &Path) -> Index {
    load_stored(root).into_index()
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

    fn sample_listing() -> Listing {
        Listing {
            dirs: [Some(1_700_000_000_123_456_789), None],
            records: vec![
                Record {
                    new: false,
                    name: OsString::from("1700000000.M1P2.host,S=10,W=12:2,S"),
                    entry: IndexEntry {
                        uidl: "1700000000.M1P2.host".into(),
                        wire: None,
                        file_size: None,
                        mtime_ns: None,
                    },
                },
                Record {
                    new: true,
                    name: OsString::from_vec(b"1700000001.M2 odd%\xff".to_vec()),
                    entry: IndexEntry {
                        uidl: "0000000100000007".into(),
                        wire: Some(34),
                        file_size: Some(30),
                        mtime_ns: Some(-5),
                    },
                },
            ],
        }
    }

    #[test]
    fn listing_roundtrip_keeps_order_names_and_dirs() {
        let l = sample_listing();
        let text = render_listing(&l);
        assert!(text.starts_with(b"correio-maildir-index 2\ndirs 1700000000123456789 -\n"));
        // Spaces, % and bytes outside ASCII are escaped: one record per line, 6 fields.
        assert!(
            String::from_utf8_lossy(&text).contains("n 1700000001.M2%20odd%25%FF "),
            "{}",
            String::from_utf8_lossy(&text)
        );
        assert_eq!(parse_listing(&text), Some(l.clone()));
        assert_eq!(parse(&text), Some(l.to_index()));
    }

    #[test]
    fn every_truncation_of_a_listing_is_detected() {
        let text = render_listing(&sample_listing());
        for cut in 0..text.len() - 1 {
            assert_eq!(parse_listing(&text[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_listing_with_one_uidl_or_base_twice_is_corrupt() {
        let uidl = b"correio-maildir-index 2\ndirs - -\nc 1.a x - - -\nn 2.b x - - -\nend 2\n";
        assert_eq!(parse_listing(uidl), None);
        let base = b"correio-maildir-index 2\ndirs - -\nc 1.a:2,S x - - -\nn 1.a y - - -\nend 2\n";
        assert_eq!(parse_listing(base), None);
        let slash = b"correio-maildir-index 2\ndirs - -\nc a%2Fb x - - -\nend 1\n";
        assert_eq!(parse_listing(slash), None);
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
