//! `correio deliver` as an MTA runs it: message on stdin, sendmail exit codes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(data: &Path, user: &str, input: &[u8], extra: &[&str], uid: Option<u32>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_correio"));
    cmd.arg("deliver")
        .arg("--user")
        .arg(user)
        .arg("--data")
        .arg(data)
        .args(extra);
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The LDA may exit before reading everything (unknown user): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("users"),
        format!("alice:{{PLAIN}}x::::::\ndave:{{PLAIN}}x::::::\ncarol:{{PLAIN}}x::::::userdb_mail=mbox:{}/carol.mbox\n", d.path().display()),
    )
    .unwrap();
    d
}

fn new_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn delivers_and_strips_the_from_line() {
    let d = setup();
    let out = run(
        d.path(),
        "alice",
        b"From bounce@example.org Thu Jan  1 00:00:00 1970\nSubject: hi\n\nbody\n",
        &[],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The From_ line's sender becomes the Return-Path, as LMTP's MAIL FROM does.
    assert_eq!(
        new_files(&d.path().join("mail/alice/new")),
        vec![b"Return-Path: <bounce@example.org>\nSubject: hi\n\nbody\n".to_vec()]
    );
    // Into an mbox: the From_ line carries the envelope sender.
    let out = run(
        d.path(),
        "carol",
        b"From bounce@example.org Thu Jan  1 00:00:00 1970\nSubject: m\n\nFrom x\n",
        &[],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mbox = fs::read_to_string(d.path().join("carol.mbox")).unwrap();
    assert!(mbox.starts_with("From bounce@example.org "), "{mbox}");
    assert!(mbox.ends_with("\nSubject: m\n\n>From x\n\n"), "{mbox}");
}

#[test]
fn exit_codes() {
    let d = setup();
    let out = run(d.path(), "nobody-here", b"x\n", &[], None);
    assert_eq!(out.status.code(), Some(67), "EX_NOUSER");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user"));
    let out = run(
        d.path(),
        "alice",
        &[b'x'; 5000],
        &["--max-size", "1000"],
        None,
    );
    assert_eq!(out.status.code(), Some(69), "too big is permanent");
    let out = run(d.path(), "alice", b"a\n", &["--quota-messages", "0"], None);
    assert_eq!(out.status.code(), Some(75), "over quota is temporary");
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), "alice", b"x\n", &[], None);
    assert_eq!(out.status.code(), Some(75), "no users file: temporary");
    // A mailbox path that is a file.
    fs::create_dir_all(d.path().join("mail")).unwrap();
    fs::write(d.path().join("mail/dave"), b"file").unwrap();
    let out = run(d.path(), "dave", b"x\n", &[], None);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(d.path().join("mail/dave")).unwrap(), b"file");
}

/// Permission denied, tested for real: the LDA runs as `nobody` (65534), as an MTA
/// runs it for a user, and the Maildir belongs to root with mode 0700.
#[test]
fn permission_denied_is_a_temporary_failure_with_nothing_written() {
    let d = setup();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(d.path().join("users"), fs::Permissions::from_mode(0o644)).unwrap();
    let maildir = d.path().join("mail/alice");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    fs::set_permissions(d.path().join("mail"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&maildir, fs::Permissions::from_mode(0o700)).unwrap();
    let out = run(d.path(), "alice", b"Subject: x\n\nx\n", &[], Some(65534));
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");
    assert!(new_files(&maildir.join("new")).is_empty());
    assert!(new_files(&maildir.join("tmp")).is_empty());
}
