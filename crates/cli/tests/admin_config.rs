//! Issue #9 bugs 2 and 3 as an admin meets them: `correio deliver` reads the server's
//! configuration (users file, `mail_location` with `%d/%n`, name policy, `[delivery]`
//! quotas, `-f` as Return-Path), and — run as root with `user =` in the configuration —
//! the admin commands give what they create to the service user, `deliver` delivers as
//! the mailbox's owner, and `check` reports what the service user could not read.
//! The root-only parts use the system's `nobody` account as the service user.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run correio");
    let _ = c.stdin.take().unwrap().write_all(stdin);
    c.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &[u8]) -> Output {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "correio {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A data dir and a config file naming it; `extra` is appended.
fn setup(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("correio.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}\"\nmail_location = \"maildir:{d}/mail/%d/%n\"\n{extra}",
            d = data.display()
        ),
    )
    .unwrap();
    (dir, data, cfg)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
}

/// Bug 2: `deliver --data` wrote to `data/mail/NAME` while the server read
/// `mail_location`; STAT showed 0. With `--config` both agree.
#[test]
fn deliver_reads_the_servers_configuration() {
    let (_d, data, cfg) =
        setup("[auth]\nusername_format = \"%Lu\"\n[delivery]\nquota_messages = 2\n");
    let cfg_s = cfg.to_str().unwrap();
    ok(
        &[
            "user",
            "add",
            "Bob@Example.Org",
            "--config",
            cfg_s,
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ],
        b"pw\n",
    );
    // The name policy folds the stored name too.
    let list = ok(&["user", "list", "--config", cfg_s], b"");
    assert!(String::from_utf8_lossy(&list.stdout).contains("bob@example.org\tPLAIN"));
    let out = ok(
        &[
            "deliver",
            "--config",
            cfg_s,
            "--user",
            "BOB@example.org",
            "-f",
            "sender@example.net",
        ],
        b"Subject: one\n\nbody\n",
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = data.join("mail/example.org/bob/new");
    let got = files(&new);
    assert_eq!(got.len(), 1, "delivered where mail_location says: {got:?}");
    assert_eq!(
        std::fs::read(&got[0]).unwrap(),
        b"Return-Path: <sender@example.net>\nSubject: one\n\nbody\n"
    );
    // A message that already has a Return-Path keeps its own (no second one).
    ok(
        &[
            "deliver",
            "--config",
            cfg_s,
            "--user",
            "bob@example.org",
            "-f",
            "x@y",
        ],
        b"Return-Path: <orig@example.net>\nSubject: two\n\n",
    );
    let two = files(&new)
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|b| b.windows(3).any(|w| w == b"two"))
        .unwrap();
    assert_eq!(two, b"Return-Path: <orig@example.net>\nSubject: two\n\n");
    // [delivery] quota_messages = 2: the third is refused for now (EX_TEMPFAIL).
    let third = run(
        &["deliver", "--config", cfg_s, "--user", "bob@example.org"],
        b"Subject: three\n\n",
    );
    assert_eq!(
        third.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    // Unknown user: EX_NOUSER, nothing written.
    let nobody = run(&["deliver", "--config", cfg_s, "--user", "zed"], b"x\n");
    assert_eq!(nobody.status.code(), Some(67));
    // A configuration that cannot be read: the MTA keeps the mail (EX_TEMPFAIL).
    let bad = run(
        &[
            "deliver",
            "--config",
            "/nonexistent/c.toml",
            "--user",
            "bob",
        ],
        b"x\n",
    );
    assert_eq!(bad.status.code(), Some(75));
}

/// Bug 3: as root with `user = "nobody"`, `user add`, `cert` and `deliver` made
/// root-owned 0600/0700 files, every login after the privilege drop failed, and
/// `check` said OK. Now what they make belongs to the service user, and `check` names
/// what the service user cannot read.
#[test]
fn root_admin_commands_hand_their_files_to_the_service_user() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nix_nobody();
    let (_d, data, cfg) = setup("user = \"nobody\"\n");
    let cfg_s = cfg.to_str().unwrap();
    ok(
        &[
            "user",
            "add",
            "alice@example.org",
            "--config",
            cfg_s,
            "--password-stdin",
        ],
        b"pw\n",
    );
    ok(&["cert", "--config", cfg_s], b"");
    ok(
        &["deliver", "--config", cfg_s, "--user", "alice@example.org"],
        b"Subject: hi\n\n",
    );
    for p in [
        data.clone(),
        data.join("users"),
        data.join("users.lock"),
        data.join("tls"),
        data.join("tls/cert.pem"),
        data.join("tls/key.pem"),
        data.join("mail"),
        data.join("mail/example.org"),
        data.join("mail/example.org/alice"),
        data.join("mail/example.org/alice/new"),
    ] {
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            m.uid(),
            nobody,
            "{} belongs to the service user",
            p.display()
        );
    }
    for f in files(&data.join("mail/example.org/alice/new")) {
        assert_eq!(
            std::fs::metadata(&f).unwrap().uid(),
            nobody,
            "{}",
            f.display()
        );
    }
    let out = ok(&["check", "--config", cfg_s], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    // What root made by hand, root-only: check says who cannot read what.
    std::os::unix::fs::chown(data.join("users"), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(data.join("users"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["check", "--config", cfg_s], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("users file: the service user \"nobody\" cannot read")
            && err.contains("/data/users")
            && err.contains("0600"),
        "{err}"
    );
    // A mailbox root cannot be written by the service user: named too.
    std::os::unix::fs::chown(data.join("users"), Some(nobody), None).unwrap();
    std::os::unix::fs::chown(data.join("mail/example.org/alice/cur"), Some(0), Some(0)).unwrap();
    let out = run(&["check", "--config", cfg_s], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mailbox of alice@example.org") && err.contains("alice/cur"),
        "{err}"
    );
}

fn nix_nobody() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody")).then(|| f[2].parse().unwrap())
        })
        .expect("a nobody user")
}

/// `correio deliver` speaks sendmail's exit codes to the MTA, usage errors included.
#[test]
fn deliver_usage_error_is_ex_usage() {
    let out = run(&["deliver", "--no-such-flag"], b"");
    assert_eq!(out.status.code(), Some(64));
    let out = run(&["deliver"], b"");
    assert_eq!(out.status.code(), Some(64), "--user is required");
    // Other subcommands keep the usual status 2.
    assert_eq!(
        run(&["check", "--no-such-flag"], b"").status.code(),
        Some(2)
    );
}

/// An LMTP Unix socket made by root before the privilege drop is usable by the MTA
/// (another local user) and belongs to the service user.
#[test]
fn lmtp_unix_socket_is_open_to_the_mta() {
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::fs::FileTypeExt as _;
    use std::os::unix::process::CommandExt as _;
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (d, _data, cfg) = setup("");
    let sock = d.path().join("lmtp.sock");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = format!(
        "user = \"nobody\"\n{text}[listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"unix:{}\"\n",
        sock.display()
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The socket appears at bind; its mode and owner are set right after. Wait for
    // both (bounded), then check them.
    let started = std::time::Instant::now();
    let ready = |m: &std::fs::Metadata| {
        m.file_type().is_socket() && m.mode() & 0o777 == 0o666 && m.uid() == nix_nobody()
    };
    while !std::fs::symlink_metadata(&sock).is_ok_and(|m| ready(&m)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no socket with mode 0666 owned by nobody: {:?}",
            std::fs::symlink_metadata(&sock).map(|m| (m.mode(), m.uid()))
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A client that is neither root nor the service user (uid 4242) connects.
    let probe = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket; s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect({:?}); print(s.recv(200).decode())",
            sock.to_str().unwrap()
        ))
        .uid(4242)
        .gid(4242)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let greeting = BufReader::new(&probe.stdout[..]).lines().next();
    assert!(
        greeting
            .as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|l| l.starts_with("220 "))),
        "{:?} {}",
        greeting,
        String::from_utf8_lossy(&probe.stderr)
    );
}
