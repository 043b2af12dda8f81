//! Postfix hands mail to `correio serve` over an LMTP **Unix socket**, as README's
//! "Postfix over LMTP" describes: the server starts as root with `user = "nobody"`,
//! creates the socket before dropping privileges, and Postfix's `lmtp` client (which
//! runs as `postfix`, neither root nor the service user) must be able to connect.
//! The message is then fetched back over POP3, byte-exact. Root only (CI runs as root).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use correio_testkit::daemon::{Daemon, is_root};
use std::time::{Duration, Instant};

use correio_testkit::postfix::{LmtpTarget, Postfix, PostfixConfig, Smtp};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

#[test]
fn postfix_delivers_over_the_unix_socket_to_a_dropped_server() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    let data = root.join("data");
    let sock = root.join("lmtp.sock");
    let cfg = root.join("correio.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}\"\nmail_location = \"maildir:{d}/mail/%d/%n\"\nuser = \"nobody\"\n\
             [listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"unix:{s}\"\n",
            d = data.display(),
            s = sock.display()
        ),
    )
    .unwrap();
    let add = Command::new(BIN)
        .args([
            "user",
            "add",
            "alice@example.org",
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let mut server = Daemon::start({
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", cfg.to_str().unwrap()]);
        cmd
    });
    server.wait_log(&["dropped root privileges"], Duration::from_secs(20));
    // Port 0 in the configuration: the server reports the port it bound.
    let port = server
        .wait_listening("listening", " tls=false", Duration::from_secs(20))
        .port();

    let pf_dir = root.join("postfix");
    std::fs::create_dir_all(&pf_dir).unwrap();
    let postfix = Postfix::start(
        &pf_dir,
        &PostfixConfig {
            myhostname: "mx.example.org",
            domain: "example.org",
            lmtp: LmtpTarget::Unix(&sock),
        },
    );
    let msg = b"From: sender@example.net\r\nTo: alice@example.org\r\nSubject: over the unix socket\r\n\r\n.leading dot\r\nbody\r\n";
    let mut smtp = Smtp::connect(postfix.smtp_addr(), "client.example.net");
    let r = smtp.send("sender@example.net", &["alice@example.org"], msg, false);
    assert!(r.starts_with("250"), "{r}");

    // Postfix delivers asynchronously: wait (bounded) for the message in the Maildir.
    let new = data.join("mail/example.org/alice/new");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::read_dir(&new).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered; postfix log:\n{}\nserver log:\n{}",
            postfix.log(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Fetch it back (loopback: cleartext login allowed by default).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"USER alice@example.org\r\nPASS pw\r\nRETR 1\r\nQUIT\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let body_start = text.find("octets\r\n").expect("RETR answered") + "octets\r\n".len();
    let body = &text[body_start..text.find("\r\n.\r\n").expect("terminator") + 2];
    // Postfix adds Return-Path (from LMTP's MAIL FROM, by us), Received; the message
    // itself follows unchanged (the leading dot stuffed on the wire).
    assert!(
        body.starts_with("Return-Path: <sender@example.net>\r\n"),
        "{body}"
    );
    assert!(body.contains("Received: from client.example.net"), "{body}");
    assert!(
        body.ends_with("Subject: over the unix socket\r\n\r\n..leading dot\r\nbody\r\n"),
        "{body}"
    );
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o666);
}
