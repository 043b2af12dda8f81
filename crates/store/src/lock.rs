//! Locks: the POP3 session lock, and the local mail locks of an mbox.
//!
//! - [`SessionLock`]: `flock(LOCK_EX | LOCK_NB)` on a small lock file. `flock` locks
//!   belong to the open file description, so two sessions conflict even inside one
//!   process, and the kernel drops the lock when the file is closed: on drop, on panic
//!   unwinding, and when the process dies. Taking it never waits (POP3 `[IN-USE]`).
//! - [`MboxLock`]: what local mail tools (procmail, Postfix local, mutt, Python's
//!   mailbox) expect around an mbox: a dotlock `<mbox>.lock` created with `O_EXCL`,
//!   then an `fcntl` write lock, then `flock`, each retried until a timeout. A dotlock
//!   older than [`STALE_DOTLOCK`] or whose recorded pid is gone is stale and removed.
//!   If the directory does not allow creating the dotlock (e.g. a read-only spool), we
//!   go on with the kernel locks only, as procmail and mutt do.
//!
//! Caveat of `fcntl` locks (POSIX): they are per process, and closing any descriptor of
//! the file releases them; the dotlock and `flock` still serialize writers inside one
//! process, so this only matters against other processes that use `fcntl` alone while
//! our own process has the file open twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{FlockOperation, flock};

use crate::error::StoreError;

/// A dotlock older than this is considered left behind by a crashed program
/// (procmail and mutt use the same 5 minutes).
pub const STALE_DOTLOCK: Duration = Duration::from_secs(300);

/// The default time to wait for the mbox locks.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How many more times a held session lock is tried, 5 ms apart, before `[IN-USE]`.
const FORK_WINDOW_TRIES: u32 = 4;

/// The exclusive lock of one POP3 session, held while this value lives.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
    path: PathBuf,
}

impl SessionLock {
    /// Takes the lock on `path` (created if missing, mode 0600) or fails at once with
    /// [`StoreError::InUse`].
    pub fn acquire(path: &Path) -> Result<SessionLock, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::io("cannot open session lock", path, e))?;
        // A lock released a moment ago can still be held by a child this process is
        // forking (a checkpassword program, a test's helper): the child shares the
        // open file description until its exec closes it. Look again a few times
        // over a few milliseconds before saying [IN-USE].
        let mut tries = 0;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    return Ok(SessionLock {
                        _file: file,
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::AGAIN => {
                    tries += 1;
                    if tries > FORK_WINDOW_TRIES {
                        return Err(StoreError::InUse);
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(StoreError::io("cannot lock", path, e.into())),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The local mail locks on an mbox file (dotlock + fcntl + flock), held while this
/// value lives; dropping it releases them and removes the dotlock.
#[derive(Debug)]
pub struct MboxLock {
    file: File,
    dotlock: Option<PathBuf>,
}

impl MboxLock {
    /// Opens `mbox` (read/write, created with mode 0600 if `create`) and takes all three
    /// locks, waiting up to `timeout` in total.
    pub fn acquire(mbox: &Path, create: bool, timeout: Duration) -> Result<MboxLock, StoreError> {
        let deadline = Instant::now() + timeout;
        let dotlock = take_dotlock(mbox, deadline)?;
        // From here on, `guard` removes the dotlock if a later step fails.
        let guard = DotlockGuard(dotlock);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(mbox)
            .map_err(|e| StoreError::io("cannot open mbox", mbox, e))?;
        retry_until(deadline, mbox, || {
            rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive)
        })?;
        retry_until(deadline, mbox, || {
            flock(&file, FlockOperation::NonBlockingLockExclusive)
        })?;
        let dotlock = guard.0.clone();
        std::mem::forget(guard);
        Ok(MboxLock { file, dotlock })
    }

    /// The locked mbox file (opened read/write, not in append mode).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for MboxLock {
    fn drop(&mut self) {
        let _ = flock(&self.file, FlockOperation::Unlock);
        let _ = rustix::fs::fcntl_lock(&self.file, FlockOperation::Unlock);
        if let Some(p) = &self.dotlock {
            let _ = fs::remove_file(p);
        }
    }
}

struct DotlockGuard(Option<PathBuf>);

impl Drop for DotlockGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn retry_until(
    deadline: Instant,
    path: &Path,
    mut f: impl FnMut() -> rustix::io::Result<()>,
) -> Result<(), StoreError> {
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e)
                if e == rustix::io::Errno::WOULDBLOCK
                    || e == rustix::io::Errno::AGAIN
                    || e == rustix::io::Errno::ACCESS =>
            {
                if Instant::now() >= deadline {
                    return Err(StoreError::LockTimeout(path.to_path_buf()));
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(StoreError::io("cannot lock", path, e.into())),
        }
    }
}

/// The dotlock path of an mbox: `<mbox>.lock`.
pub fn dotlock_path(mbox: &Path) -> PathBuf {
    let mut s = mbox.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// Creates `<mbox>.lock` exclusively, with our pid already in it: the pid is written to
/// `<mbox>.lock.<pid>` first and that file is hard-linked to the lock name (the
/// classic NFS-safe method), so a process killed at any instant never leaves an empty
/// dotlock that nobody could tell is stale. `Ok(None)` when the directory does not let
/// us create it (we then rely on the kernel locks).
fn take_dotlock(mbox: &Path, deadline: Instant) -> Result<Option<PathBuf>, StoreError> {
    let lock = dotlock_path(mbox);
    let mut tmp = lock.as_os_str().to_os_string();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let cleanup = |r| {
        let _ = fs::remove_file(&tmp);
        r
    };
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
    {
        Ok(mut f) => {
            if let Err(e) = writeln!(f, "{}", std::process::id()) {
                return cleanup(Err(StoreError::io("cannot write dotlock", &tmp, e)));
            }
        }
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.raw_os_error() == Some(libc::EROFS) =>
        {
            tracing::debug!(path = %lock.display(), "cannot create dotlock, using kernel locks only");
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::io("mbox directory missing for", mbox, e));
        }
        Err(e) => return Err(StoreError::io("cannot create dotlock", &tmp, e)),
    }
    loop {
        match fs::hard_link(&tmp, &lock) {
            Ok(()) => return cleanup(Ok(Some(lock))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if is_stale(&lock) {
                    // A race with another remover at worst makes this a no-op.
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if Instant::now() >= deadline {
                    return cleanup(Err(StoreError::LockTimeout(lock)));
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return cleanup(Err(StoreError::io("cannot create dotlock", &lock, e))),
        }
    }
}

/// A dotlock is stale when it is older than [`STALE_DOTLOCK`], or when it names a
/// process of this machine that no longer exists.
fn is_stale(lock: &Path) -> bool {
    let Ok(meta) = fs::metadata(lock) else {
        return false;
    };
    if let Ok(m) = meta.modified()
        && SystemTime::now().duration_since(m).unwrap_or_default() > STALE_DOTLOCK
    {
        return true;
    }
    match fs::read_to_string(lock) {
        Ok(s) => match s.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => {
                // kill(pid, 0): ESRCH means no such process.
                let alive = rustix::process::Pid::from_raw(pid)
                    .map(|p| {
                        rustix::process::test_kill_process(p).err() != Some(rustix::io::Errno::SRCH)
                    })
                    .unwrap_or(true);
                !alive
            }
            _ => false,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lock_is_exclusive_within_one_process_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = SessionLock::acquire(&p).unwrap();
        assert!(matches!(SessionLock::acquire(&p), Err(StoreError::InUse)));
        drop(a);
        let _b = SessionLock::acquire(&p).unwrap();
    }

    #[test]
    fn session_lock_released_by_panic_unwinding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let p2 = p.clone();
        let r = std::thread::spawn(move || {
            let _l = SessionLock::acquire(&p2).unwrap();
            panic!("session crashed");
        })
        .join();
        assert!(r.is_err());
        let _b = SessionLock::acquire(&p).unwrap();
    }

    #[test]
    fn mbox_lock_times_out_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("mbox");
        let a = MboxLock::acquire(&mbox, true, Duration::from_secs(1)).unwrap();
        assert!(dotlock_path(&mbox).exists());
        let t = Instant::now();
        assert!(matches!(
            MboxLock::acquire(&mbox, true, Duration::from_millis(200)),
            Err(StoreError::LockTimeout(_))
        ));
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(a);
        assert!(!dotlock_path(&mbox).exists());
        let _b = MboxLock::acquire(&mbox, true, Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn stale_dotlock_of_dead_process_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("mbox");
        // A pid that cannot exist (above the kernel's maximum).
        fs::write(dotlock_path(&mbox), "2147483646\n").unwrap();
        let _l = MboxLock::acquire(&mbox, true, Duration::from_secs(2)).unwrap();
    }

    #[test]
    fn foreign_live_dotlock_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("mbox");
        fs::write(dotlock_path(&mbox), format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(
            MboxLock::acquire(&mbox, true, Duration::from_millis(150)),
            Err(StoreError::LockTimeout(_))
        ));
        assert!(
            dotlock_path(&mbox).exists(),
            "someone else's lock must not be removed"
        );
    }
}
