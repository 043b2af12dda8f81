//! Maildir: check and repair (see the module docs of [`super`]).
//!
//! Names are read with the store's own rules ([`crate::maildir::names`]); the checks of
//! a name ([`check_name`]) and of `dovecot-uidlist` ([`check_uidlist`]) are pure
//! functions of bytes, fuzzed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Action, Finding, FsckError, Problem, RepairReport, Report, SizeField};
use crate::lock::SessionLock;
use crate::maildir::{INDEX_FILE, SESSION_LOCK_FILE, STALE_TMP, dovecot, index, names};
use crate::wire::WireCounter;

/// The folder inside the Maildir where repairs put what they move aside.
pub const LOST_FOUND: &str = "correio-lost+found";
/// Dovecot's lock of its uidlist.
const UIDLIST_LOCK: &str = "dovecot-uidlist.lock";
/// Index and uidlist files larger than this are not read (as the store does).
const MAX_META_BYTES: u64 = 256 * 1024 * 1024;

/// The parts of a Maildir name: `<base>[,FIELD...][:INFO]`.
struct NameParts<'a> {
    base: &'a [u8],
    fields: Vec<&'a [u8]>,
    info: Option<&'a [u8]>,
}

fn split_name(name: &[u8]) -> NameParts<'_> {
    let base = names::base_of(name);
    let rest = &name[base.len()..];
    let (fields, info) = match rest.iter().position(|&b| b == b':') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    NameParts {
        base,
        // `fields` is empty or starts with ','.
        fields: fields.split(|&b| b == b',').skip(1).collect(),
        info,
    }
}

/// A size field's value, read by the same rule the store reads names with (a found
/// fuzz case: a 26-digit value with leading zeros was a number here and not there).
fn size_value(v: &[u8]) -> Option<u64> {
    names::parse_decimal(v)
}

/// What is wrong with a Maildir file name (empty: nothing).
pub(crate) fn check_name(name: &[u8]) -> Vec<&'static str> {
    let mut out = Vec::new();
    let p = split_name(name);
    if p.base.is_empty() {
        out.push("no unique part before `,` or `:` (invisible to readers)");
    }
    if name.iter().any(|&b| b < 0x20 || b == 0x7f) {
        out.push("control characters in the name");
    }
    let (mut s, mut w, mut d) = (0, 0, 0);
    for f in &p.fields {
        if f.is_empty() {
            out.push("an empty `,` field");
        } else if let Some(v) = f.strip_prefix(b"S=") {
            s += 1;
            if size_value(v).is_none() {
                out.push("`,S=` is not a number");
            }
        } else if let Some(v) = f.strip_prefix(b"W=") {
            w += 1;
            if size_value(v).is_none() {
                out.push("`,W=` is not a number");
            }
        } else if let Some(v) = f.strip_prefix(b"D=") {
            d += 1;
            if size_value(v).is_none() {
                out.push("`,D=` is not a number");
            }
        }
    }
    if s > 1 {
        out.push("`,S=` given more than once");
    }
    if w > 1 {
        out.push("`,W=` given more than once");
    }
    if d > 1 {
        out.push("`,D=` given more than once");
    }
    if let Some(info) = p.info {
        match info.strip_prefix(b"2,") {
            Some(flags) if flags.contains(&b':') => out.push("more than one `:`"),
            Some(flags) if !flags.iter().all(u8::is_ascii_alphabetic) => {
                out.push("flags after `:2,` that are not letters")
            }
            Some(_) => {}
            None => out.push("the part after `:` is not `2,FLAGS`"),
        }
    }
    out
}

/// `name` with `base` as its unique part, its `,S=`/`,W=` set to `s`/`w` and, when
/// given, its `,D=` to `d` (other fields and the `:2,` part kept).
fn compose_name(name: &[u8], base: &[u8], s: u64, w: u64, d: Option<u64>) -> Vec<u8> {
    let p = split_name(name);
    let mut out = base.to_vec();
    for f in &p.fields {
        if !f.is_empty() && !f.starts_with(b"S=") && !f.starts_with(b"W=") && !f.starts_with(b"D=")
        {
            out.push(b',');
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(format!(",S={s},W={w}").as_bytes());
    if let Some(d) = d {
        out.extend_from_slice(format!(",D={d}").as_bytes());
    }
    if let Some(info) = p.info {
        out.push(b':');
        out.extend_from_slice(info);
    }
    out
}

/// Checks a `dovecot-uidlist`: (line, what is wrong) for each problem.
pub(crate) fn check_uidlist(bytes: &[u8]) -> Vec<(u64, &'static str)> {
    let mut out = Vec::new();
    let mut lines = bytes.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let Ok(header) = std::str::from_utf8(header) else {
        out.push((1, "the header is not text"));
        return out;
    };
    let mut h = header.split(' ');
    let version = h.next().unwrap_or_default();
    let next_uid: Option<u32> = match version {
        "3" => {
            let fields: Vec<&str> = h.collect();
            let validity = fields
                .iter()
                .find_map(|f| f.strip_prefix('V'))
                .and_then(|v| v.parse::<u32>().ok());
            if validity.is_none() {
                out.push((1, "the header has no UIDVALIDITY (`V` field)"));
                return out;
            }
            fields
                .iter()
                .find_map(|f| f.strip_prefix('N'))
                .and_then(|v| v.parse().ok())
        }
        "1" => {
            let (v, n) = (h.next(), h.next());
            if v.and_then(|v| v.parse::<u32>().ok()).is_none() {
                out.push((1, "the header has no UIDVALIDITY"));
                return out;
            }
            n.and_then(|n| n.parse().ok())
        }
        _ => {
            out.push((1, "unknown header (versions 1 and 3 exist)"));
            return out;
        }
    };
    let mut last_uid = 0u32;
    let mut bases = HashSet::new();
    for (i, line) in lines.enumerate() {
        let no = i as u64 + 2;
        if line.is_empty() {
            continue;
        }
        let sep = if version == "3" { b':' } else { b' ' };
        let Some(p) = line.iter().position(|&b| b == sep) else {
            out.push((no, "a record without a file name"));
            continue;
        };
        let (fields, name) = (&line[..p], &line[p + 1..]);
        let uid = std::str::from_utf8(fields)
            .ok()
            .and_then(|f| f.split_ascii_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok())
            .filter(|&u| u > 0);
        let Some(uid) = uid else {
            out.push((no, "a record without a UID"));
            continue;
        };
        if name.is_empty() || names::base_of(name).is_empty() {
            out.push((no, "a record without a file name"));
            continue;
        }
        if uid == last_uid {
            out.push((no, "a UID listed twice"));
        } else if uid < last_uid {
            out.push((no, "UIDs not in ascending order"));
        }
        last_uid = last_uid.max(uid);
        if next_uid.is_some_and(|n| uid >= n) {
            out.push((no, "a UID not below the header's next UID"));
        }
        if !bases.insert(names::base_of(name).to_vec()) {
            out.push((no, "a file listed twice"));
        }
    }
    out
}

/// One file of `new/` or `cur/`.
#[derive(Debug)]
struct Msg {
    sub: &'static str,
    name: OsString,
    path: PathBuf,
    base: Vec<u8>,
    len: u64,
    wire: u64,
    mtime_ns: i128,
    problems: Vec<&'static str>,
    /// (S, W) when the name's sizes are wrong or malformed.
    fix_sizes: bool,
    /// The file's count of dot lines, when its name has a `,D=` (written back).
    dots: Option<u64>,
    /// Index in `msgs` of the file readers show instead; whether identical.
    duplicate_of: Option<(usize, bool)>,
}

/// What [`examine`] saw, for the repair.
#[derive(Debug, Default)]
struct State {
    msgs: Vec<Msg>,
    missing_dirs: Vec<PathBuf>,
    stale_tmp: Vec<PathBuf>,
    removable: Vec<PathBuf>,
    index_corrupt: bool,
    index_stale: Vec<Vec<u8>>,
    index_wrong: Vec<Vec<u8>>,
}

/// A file's wire size, length and number of lines starting with `.`.
fn wire_and_len(path: &Path) -> io::Result<(u64, u64, u64)> {
    let mut f = File::open(path)?;
    let mut c = WireCounter::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    let mut dots = crate::transform::DotLines::default();
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((c.finish(), len, dots.count())),
            Ok(n) => {
                let chunk = &buf[..n];
                c.feed(chunk);
                len += n as u64;
                dots.feed(chunk);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn read_capped(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Ok(m) if m.len() > MAX_META_BYTES => Ok(Some(Vec::new())),
        Ok(_) => fs::read(path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn examine(root: &Path) -> Result<(Report, State), FsckError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(FsckError::NotAMailbox {
                path: root.to_path_buf(),
                reason: "not a directory, so not a Maildir".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FsckError::NotFound(root.to_path_buf()));
        }
        Err(e) => return Err(FsckError::io("cannot stat", root, e)),
    }
    let mut findings = Vec::new();
    let mut st = State::default();
    for sub in ["tmp", "new", "cur"] {
        let p = root.join(sub);
        if !p.is_dir() {
            st.missing_dirs.push(p);
        }
    }
    if st.missing_dirs.len() == 3 {
        return Err(FsckError::NotAMailbox {
            path: root.to_path_buf(),
            reason: "no tmp/, new/ or cur/: not a Maildir".into(),
        });
    }
    for p in &st.missing_dirs {
        findings.push(Finding::new(p, Problem::MissingDirectory));
    }

    // Messages: cur/ first, then new/, as the store lists them.
    let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
    for sub in ["cur", "new"] {
        let dir = root.join(sub);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsckError::io("cannot list", &dir, e)),
        };
        let mut ents: Vec<(OsString, PathBuf)> = rd
            .map(|e| e.map(|e| (e.file_name(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(|e| FsckError::io("cannot list", &dir, e))?;
        ents.sort();
        for (name, path) in ents {
            let bytes = name.as_bytes();
            if bytes.first() == Some(&b'.') {
                continue;
            }
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FsckError::io("cannot stat", &path, e)),
            };
            if !meta.is_file() {
                findings.push(Finding::new(&path, Problem::NotAFile));
                continue;
            }
            let (wire, len, dots) = match wire_and_len(&path) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FsckError::io("cannot read", &path, e)),
            };
            let problems = check_name(bytes);
            for why in &problems {
                findings.push(Finding::new(&path, Problem::MalformedName { why }));
            }
            let mut fix_sizes = problems
                .iter()
                .any(|w| w.contains(",S=") || w.contains(",W=") || w.contains(",D="));
            let names::Fields { s, w, d } = names::fields_of(bytes);
            for (field, named, actual) in [
                (SizeField::S, s, len),
                (SizeField::W, w, wire),
                (SizeField::D, d, dots),
            ] {
                if let Some(named) = named
                    && named != actual
                {
                    fix_sizes = true;
                    findings.push(Finding::new(
                        &path,
                        Problem::WrongSize {
                            field,
                            named,
                            actual,
                        },
                    ));
                }
            }
            let base = names::base_of(bytes).to_vec();
            let mut duplicate_of = None;
            if !base.is_empty() {
                match first.get(&base) {
                    Some(&i) => {
                        let shown = &st.msgs[i].path;
                        let identical = same_content(shown, &path)
                            .map_err(|e| FsckError::io("cannot read", &path, e))?;
                        findings.push(Finding::new(
                            &path,
                            Problem::DuplicateName {
                                shown: shown.clone(),
                                identical,
                            },
                        ));
                        duplicate_of = Some((i, identical));
                    }
                    None => {
                        first.insert(base.clone(), st.msgs.len());
                    }
                }
            }
            st.msgs.push(Msg {
                sub,
                name,
                path,
                base,
                len,
                wire,
                dots: d.map(|_| dots),
                mtime_ns: mtime_ns(&meta),
                problems,
                fix_sizes,
                duplicate_of,
            });
        }
    }

    // tmp/: deliveries that died.
    let tmp = root.join("tmp");
    if let Ok(rd) = fs::read_dir(&tmp) {
        let mut ents: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        ents.sort();
        for p in ents {
            let Ok(meta) = fs::metadata(&p) else { continue };
            let age = super::age(&meta);
            if meta.is_file() && age > STALE_TMP {
                findings.push(Finding::new(
                    &p,
                    Problem::StaleTmpFile {
                        age_hours: age.as_secs() / 3600,
                    },
                ));
                st.stale_tmp.push(p);
            }
        }
    }

    // Locks and temporaries in the root.
    let lock = root.join(UIDLIST_LOCK);
    if lock.exists() && super::dotlock_is_stale(&lock) {
        findings.push(Finding::new(&lock, Problem::StaleLock));
        st.removable.push(lock);
    }
    if let Ok(rd) = fs::read_dir(root) {
        let mut ents: Vec<_> = rd
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        ents.sort();
        for (name, p) in ents {
            let Some(rest) = name.strip_prefix("correio-") else {
                continue;
            };
            let Some(i) = rest.find(".tmp") else { continue };
            let tail = &rest[i + 4..];
            let stale = match tail.strip_prefix('.') {
                Some(pid) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                    super::pid_is_gone(pid)
                }
                _ if tail.is_empty() => {
                    fs::metadata(&p).is_ok_and(|m| super::age(&m) > crate::lock::STALE_DOTLOCK)
                }
                _ => false,
            };
            if stale {
                findings.push(Finding::new(&p, Problem::LeftoverTempFile));
                st.removable.push(p);
            }
        }
    }

    // The index: readable, no records of absent messages, no wrong cached size.
    let ipath = root.join(INDEX_FILE);
    match read_capped(&ipath).map_err(|e| FsckError::io("cannot read", &ipath, e))? {
        None => {}
        Some(bytes) => match index::parse(&bytes) {
            None => {
                findings.push(Finding::new(&ipath, Problem::CorruptIndex));
                st.index_corrupt = true;
            }
            Some(idx) => {
                let by_base: HashMap<&[u8], &Msg> = st
                    .msgs
                    .iter()
                    .filter(|m| m.duplicate_of.is_none())
                    .map(|m| (&m.base[..], m))
                    .collect();
                let mut keys: Vec<_> = idx.keys().collect();
                keys.sort();
                for k in keys {
                    let rec = &idx[k];
                    match by_base.get(&k[..]) {
                        None => {
                            findings.push(Finding::new(
                                &ipath,
                                Problem::IndexStaleRecord {
                                    base: String::from_utf8_lossy(k).into_owned(),
                                },
                            ));
                            st.index_stale.push(k.clone());
                        }
                        Some(m) => {
                            let trusted = names::sizes_of(m.name.as_bytes()).1.is_none()
                                && rec.file_size == Some(m.len)
                                && rec.mtime_ns == Some(m.mtime_ns);
                            if let Some(cached) = rec.wire
                                && trusted
                                && cached != m.wire
                            {
                                findings.push(Finding::new(
                                    &ipath,
                                    Problem::IndexWrongSize {
                                        file: m.path.clone(),
                                        cached,
                                        actual: m.wire,
                                    },
                                ));
                                st.index_wrong.push(k.clone());
                            }
                        }
                    }
                }
            }
        },
    }

    // Dovecot's uidlist: read only.
    let upath = root.join(dovecot::UIDLIST_FILE);
    if let Some(bytes) = read_capped(&upath).map_err(|e| FsckError::io("cannot read", &upath, e))? {
        for (line, why) in check_uidlist(&bytes) {
            findings.push(Finding::new(&upath, Problem::BadUidlist { why }).at(Some(line), None));
        }
    }

    let messages = st
        .msgs
        .iter()
        .filter(|m| m.duplicate_of.is_none() && !m.base.is_empty())
        .count();
    Ok((
        Report {
            path: root.to_path_buf(),
            format: super::Format::Maildir,
            messages,
            findings,
        },
        st,
    ))
}

pub(super) fn check(root: &Path) -> Result<Report, FsckError> {
    examine(root).map(|(r, _)| r)
}

/// Moves `from` into `<root>/correio-lost+found/<kind>/`, under its own name or with
/// `.1`, `.2`, ... appended; never replaces a file.
fn move_aside(root: &Path, kind: &str, from: &Path, name: &[u8]) -> io::Result<PathBuf> {
    let dir = root.join(LOST_FOUND).join(kind);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    for k in 0..1000 {
        let mut n = name.to_vec();
        if k > 0 {
            n.extend_from_slice(format!(".{k}").as_bytes());
        }
        let to = dir.join(OsString::from_vec(n));
        match super::rename_noreplace(from, &to) {
            Ok(()) => {
                correio_fsutil::sync_dir(&dir)?;
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name in lost+found",
    ))
}

fn sync_dir(p: &Path) -> Result<(), FsckError> {
    correio_fsutil::sync_dir(p).map_err(|e| FsckError::io("cannot sync", p, e))
}

pub(super) fn repair(root: &Path) -> Result<RepairReport, FsckError> {
    if !root.is_dir() {
        // Not one: let `examine` say why, before a lock file is created.
        examine(root)?;
    }
    // The session lock: no POP3 session runs while we rename (fails fast if one does).
    let lock = SessionLock::acquire(&root.join(SESSION_LOCK_FILE))?;
    let (found, st) = examine(root)?;
    let mut actions = Vec::new();
    let mut not_repaired = Vec::new();
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| FsckError::io(what, &p, e)
    };

    for p in &st.missing_dirs {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(p)
            .map_err(io("cannot create", p))?;
        actions.push(Action::Created { path: p.clone() });
    }
    for p in &st.stale_tmp {
        let name = p
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let to = move_aside(root, "tmp", p, &name).map_err(io("cannot move", p))?;
        actions.push(Action::Moved {
            from: p.clone(),
            to,
        });
    }
    for p in &st.removable {
        match fs::remove_file(p) {
            Ok(()) => actions.push(Action::Removed { path: p.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsckError::io("cannot remove", p, e)),
        }
    }

    // Messages: duplicates, invisible names, wrong sizes.
    let host = names::host_part();
    let mut renamed = false;
    for m in &st.msgs {
        if let Some((_, true)) = m.duplicate_of {
            let to = move_aside(root, "duplicates", &m.path, m.name.as_bytes())
                .map_err(io("cannot move", &m.path))?;
            actions.push(Action::Moved {
                from: m.path.clone(),
                to,
            });
            continue;
        }
        let fresh = m.base.is_empty() || m.duplicate_of.is_some();
        if !fresh && !m.fix_sizes {
            for f in found.findings.iter().filter(|f| f.path == m.path) {
                if matches!(f.problem, Problem::MalformedName { .. }) {
                    not_repaired.push((f.clone(), "readers still serve it: left as it is"));
                }
            }
            continue;
        }
        let dir = root.join(m.sub);
        let mut done = None;
        for _ in 0..100 {
            let base = if fresh {
                names::new_base(&host).into_bytes()
            } else {
                m.base.clone()
            };
            let to = dir.join(OsString::from_vec(compose_name(
                m.name.as_bytes(),
                &base,
                m.len,
                m.wire,
                m.dots,
            )));
            match super::rename_noreplace(&m.path, &to) {
                Ok(()) => {
                    done = Some(to);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && fresh => continue,
                Err(e) => return Err(FsckError::io("cannot rename", &m.path, e)),
            }
        }
        let to = done.ok_or_else(|| {
            FsckError::io(
                "cannot rename",
                &m.path,
                io::Error::new(io::ErrorKind::AlreadyExists, "no free name"),
            )
        })?;
        renamed = true;
        actions.push(Action::Renamed {
            from: m.path.clone(),
            to,
        });
        for why in &m.problems {
            if !(why.contains(",S=")
                || why.contains(",W=")
                || why.contains(",D=")
                || why.starts_with("no unique"))
            {
                not_repaired.push((
                    Finding::new(&m.path, Problem::MalformedName { why }),
                    "readers still serve it: left as it is",
                ));
            }
        }
    }
    if renamed || !st.stale_tmp.is_empty() {
        for sub in ["tmp", "new", "cur"] {
            let d = root.join(sub);
            if d.is_dir() {
                sync_dir(&d)?;
            }
        }
    }

    // The index: move an unreadable one aside; drop stale records and wrong sizes.
    let ipath = root.join(INDEX_FILE);
    let mut index_changed = false;
    if st.index_corrupt {
        let to = move_aside(root, "index", &ipath, INDEX_FILE.as_bytes())
            .map_err(io("cannot move", &ipath))?;
        actions.push(Action::Moved {
            from: ipath.clone(),
            to,
        });
        index_changed = true;
    } else if !st.index_stale.is_empty() || !st.index_wrong.is_empty() {
        let bytes = fs::read(&ipath).map_err(io("cannot read", &ipath))?;
        if let Some(mut idx) = index::parse(&bytes) {
            for k in &st.index_stale {
                idx.remove(k);
            }
            for k in &st.index_wrong {
                if let Some(r) = idx.get_mut(k) {
                    r.wire = None;
                    r.file_size = None;
                    r.mtime_ns = None;
                }
            }
            index::store(root, &idx).map_err(io("cannot write", &ipath))?;
            index_changed = true;
        }
    }
    for f in &found.findings {
        match f.problem {
            Problem::BadUidlist { .. } => not_repaired.push((
                f.clone(),
                "Dovecot's own file: Correio reads it only, Dovecot rebuilds it",
            )),
            Problem::NotAFile => not_repaired.push((f.clone(), "not a message: left as it is")),
            _ => {}
        }
    }
    drop(lock);
    if index_changed || renamed {
        // A session fills the index in (cached sizes, UIDLs kept by unique name); if
        // one is running now, it does that itself.
        match crate::maildir::MaildirDrop::open(root) {
            Ok(md) => drop(md),
            Err(crate::StoreError::InUse) => {}
            Err(e) => return Err(e.into()),
        }
        actions.push(Action::RebuiltIndex);
    }
    Ok(RepairReport {
        found,
        actions,
        not_repaired,
        repaired_copy: None,
        original: root.to_path_buf(),
    })
}

/// The fuzz body: see [`super::fuzzing::maildir_name`].
pub(crate) fn fuzz_name(data: &[u8]) {
    let problems = check_name(data);
    let (s, w) = names::sizes_of(data);
    if problems.is_empty() {
        assert!(!names::base_of(data).is_empty());
        let p = split_name(data);
        for f in &p.fields {
            if f.starts_with(b"S=") {
                assert!(s.is_some());
            }
            if f.starts_with(b"W=") {
                assert!(w.is_some());
            }
        }
    }
    // A renamed name keeps the unique part and the flags and reads the new sizes.
    let base = names::base_of(data);
    if !base.is_empty() {
        let n = compose_name(data, base, 12, 34, Some(5));
        assert_eq!(names::base_of(&n), base);
        assert_eq!(names::sizes_of(&n), (Some(12), Some(34)));
        assert_eq!(names::fields_of(&n).d, Some(5));
        assert_eq!(names::wire_form_size(&n), None);
        let wire = compose_name(data, base, 34, 34, Some(0));
        assert_eq!(names::wire_form_size(&wire), Some(34));
        assert_eq!(split_name(&n).info, split_name(data).info);
        let after = check_name(&n);
        assert!(
            after.iter().all(|p| problems.contains(p)
                && !p.contains(",S=")
                && !p.contains(",W=")
                && !p.contains(",D=")),
            "{after:?}"
        );
    }
}

/// The fuzz body: see [`super::fuzzing::uidlist`].
pub(crate) fn fuzz_uidlist(data: &[u8]) {
    let lines = data.split(|&b| b == b'\n').count() as u64;
    for (line, _) in check_uidlist(data) {
        assert!(line >= 1 && line <= lines);
    }
    // The store's reader never panics on what the checker sees either.
    let _ = dovecot::parse(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(b"1700000000.M1P2.host,S=120,W=124:2,RS").is_empty());
        assert!(check_name(b"1.2.host").is_empty());
        assert!(check_name(b"1.2.host:2,").is_empty());
        assert_eq!(check_name(b",S=1:2,S").len(), 1);
        assert_eq!(check_name(b"1.2.h,S=x"), ["`,S=` is not a number"]);
        assert_eq!(check_name(b"1.2.h,S=1,S=1"), ["`,S=` given more than once"]);
        assert_eq!(
            check_name(b"1.2.h:1,S"),
            ["the part after `:` is not `2,FLAGS`"]
        );
        assert_eq!(check_name(b"1.2.h:2,S:2,S"), ["more than one `:`"]);
        assert_eq!(check_name(b"1.2.h,,S=1"), ["an empty `,` field"]);
        assert_eq!(
            compose_name(b"1.2.h,S=1,X=y,W=2:2,RS", b"1.2.h", 5, 7, None),
            b"1.2.h,X=y,S=5,W=7:2,RS"
        );
        assert_eq!(
            compose_name(b":2,S", b"new", 5, 7, None),
            b"new,S=5,W=7:2,S"
        );
    }

    #[test]
    fn uidlists() {
        assert!(check_uidlist(b"3 V1 N4 G0\n1 :1.a.h\n2 W5 :2.b.h:2,S\n").is_empty());
        assert!(check_uidlist(b"1 42 3\n1 1.a.h\n2 2.b.h\n").is_empty());
        assert_eq!(
            check_uidlist(b"9 x\n"),
            [(1, "unknown header (versions 1 and 3 exist)")]
        );
        assert_eq!(
            check_uidlist(b"3 V1 N3\n2 :a.h\n1 :b.h\nx :c.h\n2 :a.h\n5 :d.h\nnoname\n"),
            [
                (3, "UIDs not in ascending order"),
                (4, "a record without a UID"),
                (5, "a UID listed twice"),
                (5, "a file listed twice"),
                (6, "a UID not below the header's next UID"),
                (7, "a record without a file name"),
            ]
        );
    }
}
