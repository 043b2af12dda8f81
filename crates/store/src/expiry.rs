//! State kept beside a maildrop for two RFC 2449 policies: when each message was first
//! retrieved (for `EXPIRE n`, §6.7) and when the maildrop was last logged into (for
//! `LOGIN-DELAY n`, §6.5). Both survive a server restart.
//!
//! Files (Maildir: in the root, where Dovecot and other tools ignore unknown files;
//! mbox: beside the mbox file, like its session lock):
//! - `correio-retrieved` / `<mbox>.correio-retrieved`: per UIDL, the Unix time in
//!   seconds of the first RETR of that message, recorded at the UPDATE of the session
//!   that retrieved it. These dates cannot be derived from the messages, so they live in
//!   their own file rather than in the Maildir index (a cache that is rebuilt from
//!   scratch whenever it looks corrupt).
//! - `correio-last-login` / `<mbox>.correio-last-login`: the Unix time in milliseconds
//!   of the last successful login.
//!
//! Format of the retrieval file (text, written whole to a temporary file, fsynced and
//! renamed over the old one, so a reader sees the old or the new file, never a mix):
//! ```text
//! correio-retrieved 1
//! <uidl> <unix seconds>
//! ...
//! end <number of records>
//! ```
//! A malformed file is ignored as a whole (with a warning): every message then counts as
//! not retrieved yet, so a damaged file can delay an expiry but never cause a deletion.
//!
//! Contract (nothing is deleted except by QUIT): this module never deletes anything by itself;
//! [`Update`] only widens what [`crate::Maildrop::update`], the UPDATE state, removes.
//! The clock is always passed in.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_fsutil::{AtomicWrite, TempName};

use crate::error::StoreError;
use crate::location::MailLocation;
pub use crate::maildrop::Update;
use crate::maildrop::{CommitReport, MessageInfo, checked_deletions};

/// The retrieval-date file inside a Maildir.
pub const RETRIEVED_FILE: &str = "correio-retrieved";
/// The last-login file inside a Maildir.
pub const LAST_LOGIN_FILE: &str = "correio-last-login";
const HEADER: &str = "correio-retrieved 1";
/// A retrieval file larger than this is treated as corrupt (a million records fit).
const MAX_RETRIEVED_BYTES: u64 = 128 * 1024 * 1024;

fn sidecar(location: &MailLocation, maildir_name: &str) -> PathBuf {
    match location {
        MailLocation::Maildir(root) => root.join(maildir_name),
        MailLocation::Mbox(path) => {
            let mut s = path.as_os_str().to_os_string();
            s.push(".");
            s.push(maildir_name);
            PathBuf::from(s)
        }
    }
}

/// Where the retrieval dates of the maildrop at `location` are kept.
pub fn retrieved_path(location: &MailLocation) -> PathBuf {
    sidecar(location, RETRIEVED_FILE)
}

/// Where the last login time of the maildrop at `location` is kept.
pub fn last_login_path(location: &MailLocation) -> PathBuf {
    sidecar(location, LAST_LOGIN_FILE)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn valid_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Parses a retrieval file; `None` when anything is malformed.
pub(crate) fn parse_retrieved(text: &[u8]) -> Option<BTreeMap<String, u64>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != HEADER {
        return None;
    }
    let mut map = BTreeMap::new();
    for line in lines {
        if let Some(n) = line.strip_prefix("end ") {
            let n: usize = n.parse().ok()?;
            return (n == map.len()).then_some(map);
        }
        let (uidl, secs) = line.split_once(' ')?;
        // `parse` accepts a leading '+'; only plain digits are ours.
        if !valid_uidl(uidl) || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if map.insert(uidl.to_owned(), secs.parse().ok()?).is_some() {
            return None;
        }
    }
    None
}

fn render_retrieved(map: &BTreeMap<String, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + map.len() * 40);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for (uidl, secs) in map {
        out.extend_from_slice(format!("{uidl} {secs}\n").as_bytes());
    }
    out.extend_from_slice(format!("end {}\n", map.len()).as_bytes());
    out
}

/// Reads the retrieval file at `path`: missing → empty; unreadable or malformed → an
/// error (callers that must go on treat that as empty).
fn load_retrieved(path: &Path) -> Result<BTreeMap<String, u64>, StoreError> {
    let corrupt = |reason: &str| StoreError::Changed {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StoreError::io("cannot stat", path, e)),
        Ok(m) if m.len() > MAX_RETRIEVED_BYTES => return Err(corrupt("retrieval file too large")),
        Ok(_) => {}
    }
    match fs::read(path) {
        Ok(bytes) => parse_retrieved(&bytes).ok_or_else(|| corrupt("malformed retrieval file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(StoreError::io("cannot read", path, e)),
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync dir.
/// Writers hold the maildrop's session lock, so one fixed temporary name suffices
/// (`<file>.tmp`, which fsck recognizes), and a leftover from a killed process is
/// simply replaced by the next write.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.file_name().unwrap_or_default().to_os_string();
    tmp.push(".tmp");
    AtomicWrite::new()
        .mode(0o600)
        .temp_name(TempName::Fixed(tmp))
        .write(path, bytes)?;
    Ok(())
}

/// The first-retrieval dates (Unix seconds) recorded for the maildrop at `location`,
/// by UIDL. For tools and tests; a missing file is empty, a malformed one an error.
pub fn read_retrievals(location: &MailLocation) -> Result<BTreeMap<String, u64>, StoreError> {
    load_retrieved(&retrieved_path(location))
}

/// Replaces the first-retrieval dates of the maildrop at `location` (atomically). For
/// tools and tests: call it while no POP3 session is open on the maildrop, or that
/// session's UPDATE may overwrite it.
pub fn write_retrievals(
    location: &MailLocation,
    dates: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    if let Some(bad) = dates.keys().find(|u| !valid_uidl(u)) {
        return Err(StoreError::Changed {
            path: retrieved_path(location),
            reason: format!("{bad:?} is not a UIDL"),
        });
    }
    let path = retrieved_path(location);
    write_atomically(&path, &render_retrieved(dates))
        .map_err(|e| StoreError::io("cannot write", &path, e))
}

/// The UPDATE of a backend with retrieval dates kept at `path` (call it with the
/// session lock held): records this session's retrievals, adds the messages whose
/// expiry is due to the deletions, calls `remove` with all of them, then forgets the
/// dates of messages that are gone. `messages` is the session's snapshot.
pub(crate) fn update_with(
    path: &Path,
    messages: &[MessageInfo],
    update: &Update,
    remove: impl FnOnce(&[usize]) -> Result<CommitReport, StoreError>,
) -> Result<CommitReport, StoreError> {
    let mut doomed = checked_deletions(&update.deletions, messages.len())?;
    let retrieved = checked_deletions(&update.retrieved, messages.len())?;
    // Sessions that retrieve nothing on a maildrop without expiry cost no file access.
    if retrieved.is_empty() && update.expire_after.is_none() {
        return remove(&doomed);
    }
    let old = load_retrieved(path).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "ignoring retrieval dates");
        BTreeMap::new()
    });
    let now = unix_secs(update.now);
    let mut dates = old.clone();
    for &i in &retrieved {
        dates.entry(messages[i].uidl.clone()).or_insert(now);
    }
    let mut expired = 0;
    if let Some(after) = update.expire_after {
        let after = after.as_secs();
        for (i, m) in messages.iter().enumerate() {
            // A date in the future (the clock went back) is not due: never delete on doubt.
            let due = dates
                .get(&m.uidl)
                .is_some_and(|&t| now >= t && now - t >= after);
            if due && doomed.binary_search(&i).is_err() {
                doomed.push(i);
                expired += 1;
            }
        }
        doomed.sort_unstable();
    }
    let result = remove(&doomed);
    // Keep dates only for messages still here: those of the snapshot, minus what this
    // UPDATE removed (all of it on success; on failure keep every date, which is safe).
    let gone: HashSet<usize> = match &result {
        Ok(_) => doomed.iter().copied().collect(),
        Err(_) => HashSet::new(),
    };
    let live: HashSet<&str> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, m)| m.uidl.as_str())
        .collect();
    dates.retain(|uidl, _| live.contains(uidl.as_str()));
    if dates != old {
        let write = if dates.is_empty() {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            write_atomically(path, &render_retrieved(&dates))
        };
        if let Err(e) = write {
            // The deletions are done; losing dates only postpones later expiries.
            tracing::warn!(path = %path.display(), error = %e, "cannot write retrieval dates");
        }
    }
    result.map(|mut report| {
        report.expired = expired;
        report
    })
}

/// The last successful login to the maildrop at `location`, if one is recorded (a
/// missing or malformed file: none).
pub fn last_login(location: &MailLocation) -> Option<SystemTime> {
    let path = last_login_path(location);
    let mut text = String::new();
    // Bounded read: the file holds one number.
    io::Read::read_to_string(&mut io::Read::take(File::open(&path).ok()?, 64), &mut text).ok()?;
    let digits = text.strip_suffix('\n')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_millis(digits.parse().ok()?))
}

/// Records `now` as the last successful login to the maildrop at `location`
/// (atomically and durably, so a restarted server still knows it). Call it while
/// holding the maildrop's session lock (an open [`crate::Maildrop`]).
pub fn record_login(location: &MailLocation, now: SystemTime) -> Result<(), StoreError> {
    let path = last_login_path(location);
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    write_atomically(&path, format!("{ms}\n").as_bytes())
        .map_err(|e| StoreError::io("cannot write", &path, e))
}

/// Fuzz body: the retrieval-file parser never panics, and what it accepts renders back
/// to input it accepts the same way.
pub(crate) fn fuzz_retrieved(data: &[u8]) {
    if let Some(m) = parse_retrieved(data) {
        assert_eq!(parse_retrieved(&render_retrieved(&m)), Some(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut m = BTreeMap::new();
        m.insert("a1".to_string(), 5);
        m.insert("0000000100000007".to_string(), 1_700_000_000);
        let text = render_retrieved(&m);
        assert_eq!(parse_retrieved(&text), Some(m));
        for cut in 0..text.len() - 1 {
            assert_eq!(parse_retrieved(&text[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_is_refused() {
        for t in [
            &b"correio-retrieved 1\na 1\na 2\nend 2\n"[..],
            b"correio-retrieved 1\na +1\nend 1\n",
            b"correio-retrieved 1\na\nend 1\n",
            b"correio-retrieved 1\na 1 2\nend 1\n",
            b"correio-retrieved 2\nend 0\n",
            b"correio-retrieved 1\na 99999999999999999999999\nend 1\n",
        ] {
            assert_eq!(parse_retrieved(t), None, "{:?}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn last_login_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let loc = MailLocation::Mbox(d.path().join("inbox"));
        assert_eq!(last_login(&loc), None);
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        record_login(&loc, t).unwrap();
        assert_eq!(last_login(&loc), Some(t));
        assert!(d.path().join("inbox.correio-last-login").exists());
        fs::write(last_login_path(&loc), b"12x\n").unwrap();
        assert_eq!(last_login(&loc), None);
    }
}
