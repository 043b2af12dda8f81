//! `correio user` end to end: the built binary against a temporary data directory.
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use correio_auth::{StoredSecret, UserDb};

fn correio(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_correio"))
        .arg("user")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run correio");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        // The command may exit (refusing its arguments) before reading: a broken pipe
        // is expected then.
        let _ = input.write_all(s.as_bytes());
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn add_creates_private_data_dir_and_argon2id_user() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("correio-data");
    ok(&correio(
        &data,
        &["add", "alice@example.org", "--password-stdin"],
        Some("s3cret pass\n"),
    ));
    assert_eq!(mode(&data), 0o700);
    let users = data.join("users");
    assert_eq!(mode(&users), 0o600);
    let text = fs::read_to_string(&users).unwrap();
    assert!(
        text.starts_with("alice@example.org:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        "{text}"
    );
    let db = UserDb::load(&users).unwrap();
    let secret = db.lookup("alice@example.org").unwrap().password.unwrap();
    assert_eq!(
        secret.verify(b"s3cret pass").ok(),
        Some(true),
        "trailing newline stripped, spaces kept"
    );
    // Dovecot agrees (dovecot-core provides doveadm).
    let dove = Command::new("doveadm")
        .args(["pw", "-t", secret.as_stored(), "-p", "s3cret pass"])
        .output()
        .expect("doveadm missing: install dovecot-core");
    assert!(
        dove.status.success(),
        "{}",
        String::from_utf8_lossy(&dove.stderr)
    );
}

#[test]
fn duplicates_and_bad_names_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    ok(&correio(
        data,
        &["add", "bob", "--password-stdin", "--scheme", "SHA512-CRYPT"],
        Some("pw1\n"),
    ));
    let before = fs::read_to_string(data.join("users")).unwrap();
    assert!(
        err(&correio(
            data,
            &["add", "bob", "--password-stdin"],
            Some("pw2\n")
        ))
        .contains("already exists")
    );
    let e = err(&correio(
        data,
        &["add", "BOB", "--password-stdin"],
        Some("pw2\n"),
    ));
    assert!(
        e.contains("user bob already exists"),
        "case variants are taken too: {e}"
    );
    for bad in ["../evil", "a/b", "a%d", "a\tb", "", "-x", "a:b"] {
        let e = err(&correio(
            data,
            &["add", "--password-stdin", "--", bad],
            Some("pw\n"),
        ));
        assert!(e.contains("username"), "{bad:?}: {e}");
    }
    assert_eq!(fs::read_to_string(data.join("users")).unwrap(), before);
}

#[test]
fn passwd_del_and_list_keep_other_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let users = data.join("users");
    fs::write(&users, "# hand-written\ncarol:{PLAIN}hunter2:1000:1000::/home/carol::userdb_mail=maildir:~/Maildir\n").unwrap();
    ok(&correio(
        data,
        &[
            "add",
            "dave",
            "--password-stdin",
            "--scheme",
            "plain",
            "--mail",
            "mbox:/var/mail/dave",
        ],
        Some("pw\n"),
    ));
    let listed = ok(&correio(data, &["list"], None));
    assert_eq!(
        listed,
        "carol\tPLAIN\tmail=maildir:~/Maildir\ndave\tPLAIN\tmail=mbox:/var/mail/dave\n"
    );
    assert!(!listed.contains("hunter2"), "list never shows secrets");
    assert_eq!(
        ok(&correio(data, &["list", "dave"], None)),
        "dave\tPLAIN\tmail=mbox:/var/mail/dave\n"
    );

    ok(&correio(
        data,
        &[
            "passwd",
            "carol",
            "--password-stdin",
            "--scheme",
            "SCRAM-SHA-256",
        ],
        Some("new pw\r\n"),
    ));
    let text = fs::read_to_string(&users).unwrap();
    assert!(
        text.starts_with("# hand-written\ncarol:{SCRAM-SHA-256}4096,"),
        "{text}"
    );
    assert!(
        text.contains(":1000:1000::/home/carol::userdb_mail=maildir:~/Maildir\n"),
        "other fields kept: {text}"
    );
    let db = UserDb::load(&users).unwrap();
    let secret: StoredSecret = db.lookup("carol").unwrap().password.unwrap();
    assert_eq!(secret.verify(b"new pw").ok(), Some(true));

    assert!(
        err(&correio(
            data,
            &["passwd", "nobody", "--password-stdin"],
            Some("x\n")
        ))
        .contains("does not exist")
    );
    // Without --scheme, passwd keeps the user's scheme (dave is PLAIN: APOP keeps working).
    ok(&correio(
        data,
        &["passwd", "dave", "--password-stdin"],
        Some("pw2\n"),
    ));
    assert!(
        fs::read_to_string(&users)
            .unwrap()
            .contains("dave:{PLAIN}pw2:")
    );
    ok(&correio(data, &["del", "dave"], None));
    assert!(err(&correio(data, &["del", "dave"], None)).contains("does not exist"));
    assert_eq!(
        ok(&correio(data, &["list"], None)),
        "carol\tSCRAM-SHA-256\tmail=maildir:~/Maildir\n"
    );
}

#[test]
fn password_input_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    // Without a terminal and without --password-stdin we must not hang or guess.
    assert!(err(&correio(data, &["add", "erin"], Some("pw\n"))).contains("--password-stdin"));
    assert!(
        err(&correio(
            data,
            &["add", "erin", "--password-stdin"],
            Some("\n")
        ))
        .contains("empty password")
    );
    assert!(
        err(&correio(
            data,
            &["add", "erin", "--password-stdin"],
            Some("")
        ))
        .contains("no password")
    );
    assert!(
        err(&correio(
            data,
            &["add", "erin", "--password-stdin", "--scheme", "ROT13"],
            Some("pw\n")
        ))
        .contains("ARGON2ID")
    );
    let long = "x".repeat(5000) + "\n";
    assert!(
        err(&correio(
            data,
            &["add", "erin", "--password-stdin"],
            Some(&long)
        ))
        .contains("longer")
    );
    assert!(
        err(&correio(
            data,
            &["add", "erin", "--password-stdin", "--mail", "a b"],
            Some("pw\n")
        ))
        .contains("--mail")
    );
    assert!(
        !data.join("users").exists() || fs::read_to_string(data.join("users")).unwrap().is_empty()
    );
}

#[test]
fn concurrent_adds_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_owned();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_correio"))
                .args([
                    "user",
                    "add",
                    &format!("user{i}"),
                    "--password-stdin",
                    "--scheme",
                    "SSHA512",
                    "--data",
                ])
                .arg(&data)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(b"pw\n").unwrap();
            c
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(UserDb::load(data.join("users")).unwrap().len(), 8);
}

#[test]
fn list_without_a_users_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = correio(&tmp.path().join("none"), &["list"], None);
    assert_eq!(ok(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("correio user add"));
}

/// Drives `correio user add` on a pseudo-terminal (through python3's pty module): the
/// password is asked twice, not echoed, and a mismatch is refused.
fn add_on_tty(data: &Path, name: &str, first: &str, second: &str) -> (i32, String) {
    const SCRIPT: &str = r#"
import os, pty, select, sys, termios, time
binary, data, name, first, second = sys.argv[1:6]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "user", "--data", data, "add", name])
out = b""
def expect(word):
    global out
    deadline = time.time() + 20
    while word not in out:
        left = deadline - time.time()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            sys.exit("timed out waiting for %r in %r" % (word, out))
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            sys.exit("eof waiting for %r in %r" % (word, out))
        out += chunk
def wait_no_echo():
    # The prompt is printed before echo is switched off: typing earlier would be
    # echoed by the terminal, not by us. On Linux the master sees the pty's termios.
    deadline = time.time() + 20
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            sys.exit("echo never switched off")
        time.sleep(0.01)
expect(b"Password for")
wait_no_echo()
os.write(fd, first.encode() + b"\n")
expect(b"Again")
wait_no_echo()
os.write(fd, second.encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(env!("CARGO_BIN_EXE_correio"))
        .arg(data)
        .args([name, first, second])
        .output()
        .expect("python3 is needed for the terminal test");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn terminal_prompt_asks_twice_and_hides_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let (code, text) = add_on_tty(data, "tty", "one-pass", "other-pass");
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("do not match"), "{text}");
    assert!(
        !data.join("users").exists()
            || !fs::read_to_string(data.join("users"))
                .unwrap()
                .contains("tty")
    );
    let (code, text) = add_on_tty(data, "tty", "Tty pass 1", "Tty pass 1");
    assert_eq!(code, 0, "{text}");
    assert!(
        !text.contains("Tty pass 1"),
        "the password must not be echoed: {text}"
    );
    let db = UserDb::load(data.join("users")).unwrap();
    let secret = db.lookup("tty").unwrap().password.unwrap();
    assert_eq!(secret.verify(b"Tty pass 1").ok(), Some(true));
}

#[test]
fn config_file_decides_where_the_users_file_is() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("etc").join("users");
    let cfg = tmp.path().join("correio.toml");
    fs::write(
        &cfg,
        format!("users_file = {:?}\n", users.display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_correio"))
        .args([
            "user",
            "add",
            "frank",
            "--password-stdin",
            "--scheme",
            "SSHA512",
            "--config",
        ])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&out);
    assert_eq!(mode(users.parent().unwrap()), 0o700);
    assert!(
        fs::read_to_string(&users)
            .unwrap()
            .starts_with("frank:{SSHA512}")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_correio"))
        .args(["user", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(ok(&out), "frank\tSSHA512\n");
}
