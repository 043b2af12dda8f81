//! File-system helpers shared by the Correio crates: the one way to replace a file
//! atomically and durably, and the directory fsync it needs.
//!
//! [`AtomicWrite`] does, in this order:
//! 1. creates a temporary file in the target's own directory (so the rename cannot
//!    cross file systems) with `O_CREAT | O_EXCL` and its final mode from the start (a
//!    secret never sits in a file others may read; with the owner and mode of an
//!    existing file to keep, the temporary starts as 0600 and gets them before any
//!    data is written);
//! 2. lets the caller write the content (a byte slice, or a callback given the file so
//!    large content can be streamed);
//! 3. `fsync`s the file, renames it over the target and `fsync`s the directory, so a
//!    crash leaves the old file or the new one, never a mix or an empty file.
//!
//! On any error before the rename the temporary file is removed and the target is
//! untouched. An error of the final directory fsync comes after the target was
//! replaced (the new content is in place but perhaps not yet durable).
//!
//! A target that is a symbolic link is replaced by the new file (the link itself, not
//! the file it points to), like any rename.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How the temporary file is named (always in the target's directory).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TempName {
    /// `.<target name>.tmp.<pid>.<n>`, with `n` counting per process: unique, so any
    /// number of writers, of this process or others, may replace the same target at
    /// once (the last rename wins). The default.
    #[default]
    Unique,
    /// `<prefix><pid>`: for names other code recognizes (a scanner that skips them, a
    /// cleaner that removes them once the process is gone). The caller must hold a lock
    /// that keeps other writers of this target out: an existing file of that name is
    /// then a leftover of a killed process and is replaced.
    PidSuffixed(OsString),
    /// Exactly this file name. Same contract as [`TempName::PidSuffixed`].
    Fixed(OsString),
}

/// The owner and mode the new file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attrs {
    /// The configured mode (less the umask), the caller's owner.
    New,
    /// Those of the target when it exists (owner best effort), else as `New`.
    KeepExisting,
    /// These (owner best effort).
    Like { mode: u32, uid: u32, gid: u32 },
}

/// Options of an atomic file replacement; see the [crate docs](crate).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use correio_fsutil::AtomicWrite;
/// AtomicWrite::new().mode(0o600).write("/tmp/secret".as_ref(), b"token")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AtomicWrite {
    mode: u32,
    attrs: Attrs,
    temp: TempName,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        Self::new()
    }
}

/// The step of an atomic write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the target's owner and mode (to keep them).
    Stat,
    /// Creating the temporary file or giving it its owner and mode.
    Create,
    /// The content (the callback's own error, unchanged).
    Write,
    /// `fsync` of the temporary file.
    Sync,
    /// Renaming it over the target.
    Rename,
    /// `fsync` of the directory (the target is already replaced).
    SyncDir,
}

/// A failed atomic write: the step, the path it concerned (the temporary file for
/// [`Step::Create`], [`Step::Write`] and [`Step::Sync`], the directory for
/// [`Step::SyncDir`], else the target) and the I/O error. Displays as the I/O error
/// alone, and converts into it, so callers wrap it the way they wrap any I/O error.
#[derive(Debug)]
pub struct Error {
    step: Step,
    path: PathBuf,
    source: io::Error,
}

impl Error {
    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The path the failed step concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The I/O error.
    pub fn io(&self) -> &io::Error {
        &self.source
    }

    /// The I/O error, owned.
    pub fn into_io(self) -> io::Error {
        self.source
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        e.source
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl AtomicWrite {
    /// Mode 0666 less the umask (as `File::create`), the caller's owner, a unique
    /// temporary name.
    pub fn new() -> Self {
        AtomicWrite {
            mode: 0o666,
            attrs: Attrs::New,
            temp: TempName::Unique,
        }
    }

    /// The mode of a new file (the umask applies, as for any file creation). With
    /// [`AtomicWrite::keep_owner_and_mode`], the mode used when the target does not
    /// exist yet.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Gives the new file the mode (exactly, umask aside) and, best effort (changing
    /// the owner needs privileges), the owner and group of the target when it exists.
    pub fn keep_owner_and_mode(mut self) -> Self {
        self.attrs = Attrs::KeepExisting;
        self
    }

    /// Gives the new file the mode (exactly) and, best effort, the owner and group of
    /// `meta` (the target's, read by the caller, e.g. through a descriptor it holds
    /// locked).
    pub fn owner_and_mode_of(mut self, meta: &fs::Metadata) -> Self {
        self.attrs = Attrs::Like {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        };
        self
    }

    /// How the temporary file is named.
    pub fn temp_name(mut self, temp: TempName) -> Self {
        self.temp = temp;
        self
    }

    /// Replaces `path` by a file holding `data`.
    pub fn write(&self, path: &Path, data: &[u8]) -> Result<(), Error> {
        self.write_with(path, |f| f.write_all(data))
    }

    /// Replaces `path` by a file whose content `fill` writes (it gets the temporary
    /// file, positioned at its start; buffer as needed, flushing before returning). An
    /// error of `fill` is returned as [`Step::Write`] with the error unchanged.
    pub fn write_with(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), Error> {
        let fail = |step, p: &Path| {
            let p = p.to_owned();
            move |source| Error {
                step,
                path: p,
                source,
            }
        };
        let Some(name) = path.file_name() else {
            return Err(Error {
                step: Step::Create,
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            });
        };
        let dir = parent_dir(path);
        let like = match self.attrs {
            Attrs::New => None,
            Attrs::Like { mode, uid, gid } => Some((mode, uid, gid)),
            Attrs::KeepExisting => match fs::metadata(path) {
                Ok(m) => Some((m.mode(), m.uid(), m.gid())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(fail(Step::Stat, path)(e)),
            },
        };
        let create_mode = if like.is_some() { 0o600 } else { self.mode };
        let (tmp, mut file) = self.create_temp(dir, name, create_mode)?;
        let result = (|| {
            if let Some((mode, uid, gid)) = like {
                // Owner first: a chown clears set-user/group-ID bits the mode may have.
                let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
                file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(fail(Step::Create, &tmp))?;
            }
            fill(&mut file).map_err(fail(Step::Write, &tmp))?;
            file.sync_all().map_err(fail(Step::Sync, &tmp))?;
            drop(file);
            fs::rename(&tmp, path).map_err(fail(Step::Rename, path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        sync_dir(dir).map_err(fail(Step::SyncDir, dir))
    }

    fn create_temp(
        &self,
        dir: &Path,
        name: &std::ffi::OsStr,
        mode: u32,
    ) -> Result<(PathBuf, File), Error> {
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(p)
        };
        let fixed = match &self.temp {
            TempName::Unique => None,
            TempName::PidSuffixed(prefix) => {
                let mut n = prefix.clone();
                n.push(std::process::id().to_string());
                Some(n)
            }
            TempName::Fixed(n) => Some(n.clone()),
        };
        let mut last = None;
        match fixed {
            Some(n) => {
                let tmp = dir.join(n);
                for _ in 0..2 {
                    match open(&tmp) {
                        Ok(f) => return Ok((tmp, f)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            // A leftover (see `TempName::Fixed`).
                            let _ = fs::remove_file(&tmp);
                            last = Some((tmp.clone(), e));
                        }
                        Err(e) => {
                            return Err(Error {
                                step: Step::Create,
                                path: tmp,
                                source: e,
                            });
                        }
                    }
                }
            }
            None => {
                for _ in 0..64 {
                    let mut n = OsString::from(".");
                    n.push(name);
                    n.push(format!(
                        ".tmp.{}.{}",
                        std::process::id(),
                        COUNTER.fetch_add(1, Ordering::Relaxed)
                    ));
                    let tmp = dir.join(n);
                    match open(&tmp) {
                        Ok(f) => return Ok((tmp, f)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            last = Some((tmp, e));
                        }
                        Err(e) => {
                            return Err(Error {
                                step: Step::Create,
                                path: tmp,
                                source: e,
                            });
                        }
                    }
                }
            }
        }
        let (path, source) = last.expect("at least one attempt");
        Err(Error {
            step: Step::Create,
            path,
            source,
        })
    }
}

/// Replaces `path` by a file holding `data` (mode 0666 less the umask, unique
/// temporary name); see [`AtomicWrite`] for other modes and owners.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    AtomicWrite::new().write(path, data).map_err(Into::into)
}

/// Replaces `path` by a file whose content `fill` writes, with `options`; see
/// [`AtomicWrite::write_with`].
pub fn replace_with(
    path: &Path,
    options: &AtomicWrite,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    options.write_with(path, fill)
}

/// `fsync` of a directory, so that a file created, renamed or removed in it survives a
/// crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in: its parent, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests;
