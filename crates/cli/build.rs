//! Puts the commit into `correio --version`: `correio 0.1.0 (abc1234 2026-12-04)`.
//!
//! Sets, for the `correio` crate:
//! - `CORREIO_VERSION`: `0.1.0 (abc1234 2026-12-04)` in a git checkout of this
//!   repository, `0.1.0 (unknown)` elsewhere (a source tarball, no git);
//! - `CORREIO_COMMIT_DATE`: the commit's date, `YYYY-MM-DD`, or empty (the man pages'
//!   date).
//!
//! Never fails the build: any problem with git gives "unknown".
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = commit(&manifest_dir);
    let (described, date) = match &commit {
        Some((hash, date)) => (format!("{hash} {date}"), date.clone()),
        None => ("unknown".to_owned(), String::new()),
    };
    println!("cargo:rustc-env=CORREIO_VERSION={version} ({described})");
    println!("cargo:rustc-env=CORREIO_COMMIT_DATE={date}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: HEAD itself (a checkout, a detached commit), the branch
    // it points at, and packed-refs (where `git gc` moves that branch). Paths from
    // git, so a linked worktree (.git is a file there) works too.
    if commit.is_some() {
        for name in ["HEAD", "packed-refs"] {
            watch(&manifest_dir, name);
        }
        if let Some(branch) = git(&manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
            watch(&manifest_dir, &branch);
        }
    }
}

/// Short hash and commit date (`YYYY-MM-DD`) of HEAD, if this crate is in a git
/// checkout of its own repository (not merely somewhere inside another one).
fn commit(manifest_dir: &Path) -> Option<(String, String)> {
    let top = git(manifest_dir, &["rev-parse", "--show-toplevel"])?;
    let workspace = manifest_dir.join("../..").canonicalize().ok()?;
    if Path::new(&top).canonicalize().ok()? != workspace {
        return None;
    }
    let out = git(
        manifest_dir,
        &["log", "-1", "--no-show-signature", "--format=%h %cs"],
    )?;
    let (hash, date) = out.split_once(' ')?;
    let ok = !hash.is_empty()
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && date.len() == 10
        && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    ok.then(|| (hash.to_owned(), date.to_owned()))
}

/// `rerun-if-changed` on a file of the git directory, by git's own path for it.
fn watch(manifest_dir: &Path, name: &str) {
    // A path that does not exist would make cargo rerun this script on every build.
    if let Some(p) = git(
        manifest_dir,
        &["rev-parse", "--path-format=absolute", "--git-path", name],
    ) && Path::new(&p).exists()
    {
        println!("cargo:rerun-if-changed={p}");
    }
}

/// One line of git's output, or None on any failure.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}
