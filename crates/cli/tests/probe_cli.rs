//! `correio probe` against real peers on loopback: `correio serve` (the real binary),
//! a private Dovecot started by the testkit, and a test fixture — a tiny scripted
//! POP3 server that is wrong on purpose (LIST sizes that count LF as one octet, +OK
//! to unknown commands, and STLS that keeps the cleartext buffer, so a command
//! pipelined after STLS runs inside TLS). Each gets the findings it should get.
//!
//! No assertion here depends on timing: the two timing checks
//! (`user-enumeration-timing`, `failed-login-delay`) are only reported.

mod fetch_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use correio_testkit::daemon::Daemon;
use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;
use serde_json::Value;

/// Checks whose outcome depends on timing: never asserted.
const TIMING: [&str; 2] = ["user-enumeration-timing", "failed-login-delay"];

fn run_ok(args: &[&str], stdin: &[u8]) {
    let mut c = correio()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "correio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `correio probe ARGS` with a 10 s timeout per read.
fn probe(args: &[&str]) -> Output {
    correio()
        .arg("probe")
        .args(args)
        .args(["--timeout", "10s"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `--json` run: exit code and the report.
fn probe_json(args: &[&str]) -> (i32, Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = probe(&a);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "probe {args:?}: bad JSON ({e}); status {}; stdout {text}; stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

fn status(v: &Value, id: &str) -> String {
    check(v, id)["status"].as_str().unwrap().to_owned()
}

fn assert_status(v: &Value, id: &str, want: &str) {
    assert_eq!(status(v, id), want, "{id}: {}", check(v, id));
}

/// The failed checks, without the timing ones.
fn findings(v: &Value) -> BTreeSet<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .filter(|id| !TIMING.contains(&id.as_str()))
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A `correio serve` with `bob` and `msgs`, cleartext login refused even on loopback,
/// a short failed-login delay. Returns the guard, the data dir, POP3 and POP3S ports.
fn correio_serve(work: &Path, msgs: &[Vec<u8>]) -> (Daemon, std::path::PathBuf, u16, u16) {
    let data = work.join("data");
    let data_s = data.to_str().unwrap();
    run_ok(
        &["user", "add", "bob", "--data", data_s, "--password-stdin"],
        b"b0b pass\n",
    );
    for m in msgs {
        run_ok(&["deliver", "--user", "bob", "--data", data_s], m);
    }
    // Port 0: the server reports the ports it bound.
    let mut server = Daemon::start({
        let mut c = correio();
        c.args(["serve", "--data", data_s])
            .args(["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0"])
            .args(["--set", "cleartext_login_on_loopback=false"])
            .args(["--set", "auth.failure_delay=\"100ms\""])
            .args(["--set", "auth.failure_delay_max=\"200ms\""]);
        c
    });
    let up = Duration::from_secs(20);
    let pop3 = server.wait_listening("listening", " tls=false", up).port();
    let pop3s = server.wait_listening("listening", " tls=true", up).port();
    (server, data, pop3, pop3s)
}

#[test]
fn correio_serve_conforms_and_is_left_unchanged() {
    let work = tempdir();
    let msgs = corpus(8);
    let (_guard, data, pop3, pop3s) = correio_serve(work.path(), &msgs);
    let ca = data.join("tls/cert.pem");
    let ca = ca.to_str().unwrap();
    let mail = data.join("mail/bob");
    let before = maildir_messages(&mail);
    assert_eq!(before, sorted(&msgs));
    let url = format!("pop3://localhost:{pop3}");

    // Without an account.
    let (code, v) = probe_json(&[&url, "--ca", ca, "--samples", "2"]);
    assert_eq!(v["schema"], "correio-probe/1");
    assert_eq!(findings(&v), set(&[]), "{v:#}");
    assert!(code == 0 || code == 3, "{code}");
    for id in [
        "greeting",
        "capa",
        "command-case",
        "pipelining",
        "unknown-command",
        "wrong-state",
        "quit-authorization",
        "auth-unknown-mechanism",
        "auth-cancel",
        "auth-listing",
        "stls-capa",
        "stls-repeat",
        "stls-immediate",
        "tls-offered",
        "tls-versions",
        "cert-trusted",
        "cert-hostname",
        "cert-expiry",
        "cleartext-login",
        "stls-injection",
        "status-case",
        "line-ending",
        "line-length",
    ] {
        assert_status(&v, id, "pass");
    }
    assert_status(&v, "retr-size", "skip");
    assert_status(&v, "user-enumeration-answer", "skip");
    assert_status(&v, "login-delay", "info");
    let offer = &v["offer"];
    assert_eq!(offer["stls"], true);
    assert_eq!(offer["sasl"]["cleartext"], serde_json::json!([]));
    assert_eq!(offer["sasl"]["tls"], serde_json::json!(["PLAIN", "LOGIN"]));
    let versions = offer["tls"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(
        versions.iter().all(|x| x["supported"] == true),
        "{versions:?}"
    );
    let cert = &offer["tls"]["certificate"];
    assert_eq!(cert["trusted"], true);
    assert_eq!(cert["hostname_matches"], true);
    assert!(
        cert["san"]
            .as_array()
            .unwrap()
            .contains(&"DNS:localhost".into())
    );
    assert!(v["mailbox"].is_null());

    // With the account: every read check passes, sizes are exact, nothing changes.
    let pw = "printf %s 'b0b pass'";
    let (_, v) = probe_json(&[
        &url,
        "--ca",
        ca,
        "--user",
        "bob",
        "--password-command",
        pw,
        "--samples",
        "2",
    ]);
    assert_eq!(findings(&v), set(&[]), "{v:#}");
    for id in [
        "capa-transaction",
        "stat",
        "list",
        "uidl-format",
        "uidl-unique",
        "uidl-list",
        "uidl-persistent",
        "retr-size",
        "retr-format",
        "no-such-message",
        "top",
        "noop",
        "quit-keeps",
        "user-enumeration-answer",
    ] {
        assert_status(&v, id, "pass");
    }
    for id in ["dele", "rset", "quit-deletes"] {
        assert_status(&v, id, "skip");
    }
    assert_eq!(v["mailbox"]["messages"], 8);
    assert_eq!(v["mailbox"]["retrieved"], 8);
    assert_eq!(v["mailbox"]["deleted"], 0);
    assert!(
        v["enumeration"]["known_user"]["times_ms"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );
    assert_eq!(
        maildir_messages(&mail),
        before,
        "a read-only probe changed the mailbox"
    );

    // Text over implicit TLS, no timing samples: no finding at all, exit 0.
    let out = probe(&[
        &format!("pop3s://127.0.0.1:{pop3s}"),
        "--ca",
        ca,
        "--user",
        "bob",
        "--password-command",
        pw,
        "--samples",
        "0",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    for s in [
        "\nOffer\n",
        "\nConformance: ",
        "\nExposure: ",
        "hostname 127.0.0.1: matches",
        "TLS 1.3         yes, TLS13_",
        "mailbox bob     8 messages",
        "Summary: 0 findings",
    ] {
        assert!(text.contains(s), "{s:?} missing in\n{text}");
    }
    assert_eq!(maildir_messages(&mail), before);

    // DELE only when allowed: then exactly one message is gone.
    let (_, v) = probe_json(&[
        &format!("pop3s://localhost:{pop3s}"),
        "--ca",
        ca,
        "--user",
        "bob",
        "--password-command",
        pw,
        "--samples",
        "0",
        "--allow-delete",
    ]);
    assert_eq!(findings(&v), set(&[]), "{v:#}");
    for id in ["dele", "rset", "quit-deletes"] {
        assert_status(&v, id, "pass");
    }
    assert_eq!(v["mailbox"]["deleted"], 1);
    let after = maildir_messages(&mail);
    assert_eq!(after.len(), 7);
    assert!(after.iter().all(|m| before.contains(m)));

    // Without --ca the self-signed certificate is not trusted: reported, and the
    // password is not sent.
    let (code, v) = probe_json(&[
        &url,
        "--user",
        "bob",
        "--password-command",
        pw,
        "--samples",
        "0",
    ]);
    assert_eq!(code, 3);
    assert_eq!(findings(&v), set(&["cert-trusted"]), "{v:#}");
    assert!(
        v["account_error"].as_str().unwrap().contains("--ca"),
        "{}",
        v["account_error"]
    );
    assert_status(&v, "retr-size", "skip");
    // ... unless told to.
    let (_, v) = probe_json(&[
        &url,
        "--user",
        "bob",
        "--password-command",
        pw,
        "--samples",
        "0",
        "--insecure-skip-verify",
    ]);
    assert_eq!(findings(&v), set(&["cert-trusted"]), "{v:#}");
    assert_status(&v, "retr-size", "pass");
}

#[test]
fn dovecot_report() {
    const USER: &str = "alice";
    const PASS: &str = "s3cret word";
    let msgs = corpus(8);
    let mut cfg = DovecotConfig::with_user(USER, PASS);
    cfg.tls = true;
    let d = Dovecot::start(&cfg).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &msgs);
    d.give_mail_to_owner().unwrap();
    let before = maildir_messages(&d.maildir(USER));
    let ca = d.cert_pem().unwrap();
    let ca = ca.to_str().unwrap();
    let url = format!("pop3://127.0.0.1:{}", d.pop3_addr().port());
    let pw = format!("printf %s '{PASS}'");

    // Dovecot's auth penalty delays every login from an address after failed ones,
    // for a while: the runs with failed-login samples come last.
    let (code, v) = probe_json(&[
        &url,
        "--ca",
        ca,
        "--user",
        USER,
        "--password-command",
        &pw,
        "--samples",
        "0",
    ]);
    assert_eq!(code, 3);
    // The test configuration allows passwords without TLS (disable_plaintext_auth =
    // no): that is the one finding.
    assert_eq!(findings(&v), set(&["cleartext-login"]), "{v:#}");
    assert_eq!(check(&v, "cleartext-login")["severity"], "medium");
    for id in [
        "greeting",
        "stls-capa",
        "stls-injection",
        "tls-versions",
        "cert-trusted",
        "cert-hostname",
        "unknown-command",
        "stat",
        "list",
        "uidl-format",
        "uidl-unique",
        "uidl-persistent",
        "retr-size",
        "retr-format",
        "top",
        "quit-keeps",
    ] {
        assert_status(&v, id, "pass");
    }
    assert_eq!(v["mailbox"]["messages"], 8);
    assert_eq!(v["mailbox"]["retrieved"], 8);
    assert!(
        v["offer"]["sasl"]["cleartext"]
            .as_array()
            .unwrap()
            .contains(&"PLAIN".into())
    );
    assert_eq!(
        maildir_messages(&d.maildir(USER)),
        before,
        "a read-only probe changed the mailbox"
    );

    // Implicit TLS.
    let pop3s = format!("pop3s://127.0.0.1:{}", d.pop3s_addr().unwrap().port());
    let (_, v) = probe_json(&[&pop3s, "--ca", ca, "--samples", "0"]);
    assert_eq!(findings(&v), set(&[]), "{v:#}");
    assert_status(&v, "cleartext-login", "pass");
    assert_status(&v, "stls-injection", "skip");

    // Text, with failed-login samples (reported, not asserted).
    let out = probe(&[
        &url,
        "--ca",
        ca,
        "--user",
        USER,
        "--password-command",
        &pw,
        "--samples",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("[FAIL medium] cleartext-login"), "{text}");
    assert!(text.contains("mailbox alice   8 messages"), "{text}");
    assert!(
        text.contains("[pass       ] user-enumeration-answer"),
        "{text}"
    );
    assert_eq!(maildir_messages(&d.maildir(USER)), before);
}

// ---- the broken fixture ----------------------------------------------------------------

/// The fixture's two messages (CRLF on the wire). LIST reports their sizes with each
/// line end counted as one octet: wrong by the number of lines.
const FIXTURE_MSGS: [&str; 2] = [
    "Subject: one\r\n\r\n..leading dot\r\nbody\r\n",
    "Subject: two\r\nFrom: x@example.org\r\n\r\nsecond\r\n",
];

enum Chan {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Chan {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Chan::Plain(s) => s.read(b),
            Chan::Tls(s) => s.read(b),
        }
    }
}

impl Write for Chan {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Chan::Plain(s) => s.write(b),
            Chan::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Chan::Plain(s) => s.flush(),
            Chan::Tls(s) => s.flush(),
        }
    }
}

/// One fixture session. Deliberately wrong in three ways (see the module docs).
fn fixture_session(tcp: TcpStream, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut chan = Chan::Plain(tcp);
    let mut buf: Vec<u8> = Vec::new();
    let mut user: Option<String> = None;
    let mut logged_in = false;
    chan.write_all(b"+OK fixture POP3 ready\r\n")?;
    loop {
        let Some(i) = buf.iter().position(|&b| b == b'\n') else {
            let mut tmp = [0u8; 4096];
            let n = chan.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
            continue;
        };
        let line: Vec<u8> = buf.drain(..=i).collect();
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let is_tls = matches!(chan, Chan::Tls(_));
        let reply: String = match (cmd.to_ascii_uppercase().as_str(), logged_in) {
            ("CAPA", _) => {
                let stls = if is_tls { "" } else { "STLS\r\n" };
                format!("+OK\r\n{stls}USER\r\nUIDL\r\n.\r\n")
            }
            ("STLS", false) if !is_tls => {
                chan.write_all(b"+OK begin TLS\r\n")?;
                let Chan::Plain(tcp) = chan else {
                    unreachable!()
                };
                let conn =
                    rustls::ServerConnection::new(tls.clone()).map_err(std::io::Error::other)?;
                chan = Chan::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                // Wrong on purpose: `buf` is kept, so whatever the client pipelined
                // after STLS in cleartext now runs as if it came under TLS.
                continue;
            }
            ("STLS", _) => "-ERR already under TLS\r\n".into(),
            ("USER", false) => {
                user = Some(arg.to_owned());
                "+OK send PASS\r\n".into()
            }
            ("PASS", false) => {
                if user.as_deref() == Some("test") && arg == "pw" {
                    logged_in = true;
                    "+OK logged in\r\n".into()
                } else {
                    user = None;
                    "-ERR [AUTH] invalid login\r\n".into()
                }
            }
            ("AUTH", false) => "-ERR no SASL here\r\n".into(),
            ("QUIT", _) => {
                chan.write_all(b"+OK bye\r\n")?;
                return chan.flush();
            }
            ("STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE", false) => {
                "-ERR log in first\r\n".into()
            }
            ("STAT", true) => {
                let total: usize = FIXTURE_MSGS.iter().map(|m| lf_size(m)).sum();
                format!("+OK 2 {total}\r\n")
            }
            ("LIST", true) => match arg.parse::<usize>() {
                Ok(n @ 1..=2) => format!("+OK {n} {}\r\n", lf_size(FIXTURE_MSGS[n - 1])),
                Ok(_) | Err(_) if !arg.is_empty() => "-ERR no such message\r\n".into(),
                _ => format!(
                    "+OK\r\n1 {}\r\n2 {}\r\n.\r\n",
                    lf_size(FIXTURE_MSGS[0]),
                    lf_size(FIXTURE_MSGS[1])
                ),
            },
            ("UIDL", true) => match arg.parse::<usize>() {
                Ok(n @ 1..=2) => format!("+OK {n} fixture-{n}\r\n"),
                Ok(_) | Err(_) if !arg.is_empty() => "-ERR no such message\r\n".into(),
                _ => "+OK\r\n1 fixture-1\r\n2 fixture-2\r\n.\r\n".into(),
            },
            ("RETR", true) => match arg.parse::<usize>() {
                Ok(n @ 1..=2) => format!("+OK\r\n{}.\r\n", FIXTURE_MSGS[n - 1]),
                _ => "-ERR no such message\r\n".into(),
            },
            ("TOP", true) => "-ERR TOP is not supported\r\n".into(),
            ("NOOP" | "RSET", true) => "+OK\r\n".into(),
            // Wrong on purpose: anything unknown is accepted.
            _ => "+OK\r\n".into(),
        };
        chan.write_all(reply.as_bytes())?;
        chan.flush()?;
    }
}

/// The size with LF counted as one octet (the fixture's mistake).
fn lf_size(m: &str) -> usize {
    m.replace("\r\n", "\n").replace("\n..", "\n.").len()
}

/// The fixture listening on 127.0.0.1; stops accepting when dropped.
struct Fixture {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    fn start(cert: &Path, key: &Path) -> Fixture {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = Arc::new(config);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let cfg = config.clone();
                        std::thread::spawn(move || {
                            let _ = fixture_session(s, cfg);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Fixture {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn broken_fixture_gets_exactly_its_findings() {
    let work = tempdir();
    let data = work.path().join("data");
    run_ok(&["cert", "--data", data.to_str().unwrap()], b"");
    let cert = data.join("tls/cert.pem");
    let fx = Fixture::start(&cert, &data.join("tls/key.pem"));
    // The fixture answers as scripted.
    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", fx.port)).unwrap());
    let mut greeting = String::new();
    s.read_line(&mut greeting).unwrap();
    assert_eq!(greeting, "+OK fixture POP3 ready\r\n");
    drop(s);

    let url = format!("pop3://localhost:{}", fx.port);
    let args = [
        url.as_str(),
        "--ca",
        cert.to_str().unwrap(),
        "--user",
        "test",
        "--password-command",
        "printf %s pw",
        "--samples",
        "0",
    ];
    let (code, v) = probe_json(&args);
    assert_eq!(code, 3);
    assert_eq!(
        findings(&v),
        set(&[
            "unknown-command",
            "retr-size",
            "stls-injection",
            "cleartext-login"
        ]),
        "{v:#}"
    );
    let detail = |id: &str| check(&v, id)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail("retr-size").contains("counts each line end as one octet"),
        "{}",
        detail("retr-size")
    );
    assert!(
        detail("stls-injection").contains("inside TLS"),
        "{}",
        detail("stls-injection")
    );
    assert_eq!(check(&v, "stls-injection")["severity"], "high");
    assert!(detail("unknown-command").contains("XPROBE answered \"+OK\""));
    // What it does right still passes; TOP is not offered, so it is not judged.
    for id in [
        "stat",
        "list",
        "uidl-format",
        "uidl-unique",
        "retr-format",
        "quit-keeps",
        "stls-capa",
    ] {
        assert_status(&v, id, "pass");
    }
    assert_status(&v, "top", "skip");

    let out = probe(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.contains("[FAIL high  ] stls-injection"), "{text}");
    assert!(
        text.contains("Summary: 4 findings (1 high, 3 medium, 0 low)"),
        "{text}"
    );
}

#[test]
fn usage_and_unreachable() {
    let out = probe(&["imap://localhost"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
    let refused = correio_testkit::RefusedPort::new().unwrap();
    let out = probe(&[&format!("pop3://127.0.0.1:{}", refused.port())]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
