//! The per-account state file: which messages (by UIDL, or by content hash when the
//! server's UIDLs cannot be trusted) are already stored locally, and since when.
//!
//! The file is JSON, replaced atomically: written to `NAME.tmp`, fsynced, renamed over
//! `NAME`, then the directory is fsynced. So at any instant the file on disk is either
//! the old state or the new one, never a mix.
//!
//! A key in the state means "this message is durably stored". The fetcher records keys
//! only after [`Target::sync`](super::target::Target::sync), and sends DELE only after
//! the save. For rename-published targets the save also carries the renames still to
//! do ([`Pending`]); [`UidState::load`] finishes them, so a crash between the save and
//! the renames neither loses nor duplicates a message.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use correio_fsutil::{AtomicWrite, Step, TempName};
use serde::{Deserialize, Serialize};

use super::target::{Pending, publish};

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// key → first seen (Unix seconds).
    seen: BTreeMap<String, u64>,
    #[serde(default)]
    pending: Vec<Pending>,
}

/// The loaded state of one account.
#[derive(Debug)]
pub struct UidState {
    path: PathBuf,
    /// key (UIDL or `sha256:...`) → Unix time the message was first stored.
    pub seen: BTreeMap<String, u64>,
    _lock: StateLock,
}

impl UidState {
    /// Loads the state (empty if the file does not exist), takes the account's lock
    /// (so two fetchers never work on one account), and finishes renames a crash left.
    pub fn load(path: &Path) -> io::Result<UidState> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let lock = StateLock::acquire(path)?;
        let disk: OnDisk = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("state file {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => OnDisk::default(),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read the state file {}: {e}", path.display()),
                ));
            }
        };
        let mut state = UidState {
            path: path.to_owned(),
            seen: disk.seen,
            _lock: lock,
        };
        if !disk.pending.is_empty() {
            publish(&disk.pending)?;
            state.save(&[])?;
        }
        Ok(state)
    }

    /// Forgets what the state file records (under the account's lock, so not while a
    /// fetch runs): the next run fetches every message again. Returns how many keys
    /// were forgotten.
    pub fn forget(path: &Path) -> io::Result<usize> {
        let mut state = UidState::load(path)?;
        let n = state.seen.len();
        state.seen.clear();
        state.save(&[])?;
        Ok(n)
    }

    /// Writes the state atomically and durably, with `pending` renames.
    pub fn save(&mut self, pending: &[Pending]) -> io::Result<()> {
        write_state(&self.path, &self.seen, pending)
    }

    /// A copy of what [`UidState::save`] writes, to save from another thread.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            path: self.path.clone(),
            seen: self.seen.clone(),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `key` is stored.
    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains_key(key)
    }
}

/// What a state file holds, detached from the lock (see [`UidState::snapshot`]).
#[derive(Debug)]
pub struct StateSnapshot {
    path: PathBuf,
    seen: BTreeMap<String, u64>,
}

impl StateSnapshot {
    /// Writes it atomically and durably, with `pending` renames (blocking).
    pub fn save(&self, pending: &[Pending]) -> io::Result<()> {
        write_state(&self.path, &self.seen, pending)
    }
}

fn write_state(path: &Path, seen: &BTreeMap<String, u64>, pending: &[Pending]) -> io::Result<()> {
    let disk = OnDiskRef {
        version: 1,
        seen,
        pending,
    };
    let bytes = serde_json::to_vec(&disk).map_err(io::Error::other)?;
    let named = |e: &io::Error, what: &str, p: &Path| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    // `<file>.tmp`: writers hold the account's lock, so a fixed name suffices and a
    // leftover of a killed run is replaced by the next write.
    let mut tmp = path.file_name().unwrap_or_default().to_os_string();
    tmp.push(".tmp");
    AtomicWrite::new()
        .temp_name(TempName::Fixed(tmp))
        .write(path, &bytes)
        .map_err(|e| {
            let what = match e.step() {
                Step::Rename => "cannot replace the state file",
                Step::SyncDir => "cannot sync",
                _ => "cannot write the state file",
            };
            named(e.io(), what, e.path())
        })
}

#[derive(Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    seen: &'a BTreeMap<String, u64>,
    pending: &'a [Pending],
}

/// An exclusive `flock` on `STATE.lock`, released when dropped (and by the kernel if
/// the process dies).
#[derive(Debug)]
struct StateLock {
    _file: File,
}

impl StateLock {
    fn acquire(state: &Path) -> io::Result<StateLock> {
        let mut p = state.as_os_str().to_owned();
        p.push(".lock");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(PathBuf::from(p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another correio fetch is working on this account ({} is locked)",
                        state.display()
                    ),
                )
            },
        )?;
        Ok(StateLock { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_recover_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acct.state");
        let from = dir.path().join("tmpfile");
        let to = dir.path().join("final");
        fs::write(&from, b"x").unwrap();
        {
            let mut s = UidState::load(&path).unwrap();
            assert!(s.seen.is_empty());
            s.seen.insert("uid1".into(), 5);
            s.save(&[Pending {
                from: from.clone(),
                to: to.clone(),
            }])
            .unwrap();
            // A second loader is refused while the first holds the lock.
            assert!(UidState::load(&path).is_err());
        }
        // "Crash" before the rename: loading finishes it.
        let s = UidState::load(&path).unwrap();
        assert!(s.contains("uid1"));
        assert!(!from.exists());
        assert_eq!(fs::read(&to).unwrap(), b"x");
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acct.state");
        fs::write(&path, b"{not json").unwrap();
        assert!(UidState::load(&path).is_err());
    }
}
