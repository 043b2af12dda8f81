//! Files made by root for the service user.
//!
//! An admin runs `correio user add`, `correio cert`, `correio deliver` and the first
//! `correio serve` as root; the server then drops to the configured `user =`. Whatever
//! those commands create must be usable by that user, or every login after the drop
//! fails. [`ServiceAccount`] names the user the files must belong to (from the same
//! configuration the server reads), gives new files and directories to it, and
//! [`access_problem`] tells `correio check` (run as root) what the service user could
//! not read or write, from the modes and owners on the path, exactly as the kernel
//! would decide for a process with that uid and that one gid (the server keeps no
//! supplementary groups after the drop).

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::Config;

/// The user (and group) the server runs as after the drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The user name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// The group the server keeps (`group =`, else the user's primary group).
    pub gid: u32,
}

impl ServiceAccount {
    /// The account `config` names (`user =`, `group =`), if any.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<ServiceAccount>> {
        let Some(user) = &config.run_as_user else {
            return Ok(None);
        };
        let u = User::from_name(user)?
            .ok_or_else(|| anyhow::anyhow!("user: no such system user {user:?}"))?;
        let gid = match &config.run_as_group {
            Some(g) => {
                Group::from_name(g)?
                    .ok_or_else(|| anyhow::anyhow!("group: no such system group {g:?}"))?
                    .gid
            }
            None => u.gid,
        };
        Ok(Some(ServiceAccount {
            name: user.clone(),
            uid: u.uid.as_raw(),
            gid: gid.as_raw(),
        }))
    }

    /// The account a command running as root must hand its files to: the configured
    /// one when this process is root, else none (a normal user's files are its own).
    pub fn for_files(config: &Config) -> anyhow::Result<Option<ServiceAccount>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        Self::from_config(config)
    }

    /// Gives `path` to this account (not following a symlink at the end).
    pub fn give(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
    }

    /// Creates `dir` and its missing parents with `mode`, giving each directory this
    /// call created to the account. Existing directories are left as they are.
    pub fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
        create_dir_all_owned(dir, mode, Some(self))
    }
}

/// Creates `dir` and its missing parents with `mode`; each directory created is given
/// to `owner` when there is one.
pub fn create_dir_all_owned(
    dir: &Path,
    mode: u32,
    owner: Option<&ServiceAccount>,
) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p.to_owned());
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(p) {
            Ok(()) => {
                if let Some(o) = owner {
                    o.give(p)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a process needs on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a file.
    Read,
    /// Read, write and search a directory (create and rename files in it).
    Modify,
}

/// Why the process with `uid`/`gid` could not use `path` as `want`s, or `None` if
/// it can (or the path does not exist: nothing to refuse yet). Every parent
/// directory must be searchable. Root (uid 0) can use everything.
pub fn access_problem(path: &Path, uid: u32, gid: u32, want: Access) -> Option<String> {
    if uid == 0 {
        return None;
    }
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let allowed = |m: &std::fs::Metadata, bits: u32| -> bool {
        let mode = m.mode();
        let class = if m.uid() == uid {
            (mode >> 6) & 7
        } else if m.gid() == gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        class & bits == bits
    };
    let describe = |p: &Path, m: &std::fs::Metadata| {
        let who = |id: u32, user: bool| {
            if user {
                User::from_uid(Uid::from_raw(id))
                    .ok()
                    .flatten()
                    .map_or(id.to_string(), |u| u.name)
            } else {
                Group::from_gid(Gid::from_raw(id))
                    .ok()
                    .flatten()
                    .map_or(id.to_string(), |g| g.name)
            }
        };
        format!(
            "{} (owner {}:{}, mode {:04o})",
            p.display(),
            who(m.uid(), true),
            who(m.gid(), false),
            m.mode() & 0o7777
        )
    };
    // Every directory on the way must be searchable.
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        let Ok(m) = std::fs::metadata(dir) else {
            return None;
        };
        if !allowed(&m, 0o1) {
            return Some(format!("cannot enter {}", describe(dir, &m)));
        }
    }
    let m = std::fs::metadata(&path).ok()?;
    match want {
        Access::Read if !allowed(&m, 0o4) => Some(format!("cannot read {}", describe(&path, &m))),
        Access::Modify if !allowed(&m, 0o7) => {
            Some(format!("cannot write to {}", describe(&path, &m)))
        }
        _ => None,
    }
}

/// Becomes `uid`/`gid` for good (a one-shot command such as `correio deliver` run as
/// root, delivering as the mailbox's owner).
pub fn become_user(uid: u32, gid: u32) -> anyhow::Result<()> {
    use nix::unistd::{setgid, setgroups, setuid};
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[gid])?;
    setgid(gid)?;
    setuid(uid)?;
    if uid.as_raw() != 0 && Uid::effective().is_root() {
        anyhow::bail!("privileges were not dropped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn modes_decide_as_the_kernel_would() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        std::fs::write(&f, "x").unwrap();
        let me = Uid::effective().as_raw();
        let my_gid = Gid::effective().as_raw();
        // Another uid in no group of the file: "other" bits decide.
        let stranger = if me == 4242 { 4243 } else { 4242 };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = access_problem(&f, stranger, 4242, Access::Read).unwrap();
        assert!(p.contains("cannot read") && p.contains("0600"), "{p}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(access_problem(&f, stranger, my_gid, Access::Read).is_none());
        assert!(access_problem(&f, stranger, 4242, Access::Read).is_some());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = access_problem(&f, stranger, my_gid, Access::Read).unwrap();
        assert!(p.contains("cannot enter"), "{p}");
        assert!(access_problem(&f, 0, 0, Access::Read).is_none());
        // Nothing there yet: nothing to refuse, unless the way there is closed.
        let missing = dir.path().join("missing");
        assert!(access_problem(&missing, stranger, 1, Access::Read).is_some());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(access_problem(&missing, stranger, 1, Access::Read).is_none());
    }
}
