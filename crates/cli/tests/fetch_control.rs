//! What fetchmail and mpop users expect of `correio fetch`, each tried with real runs
//! of the binary against a real Dovecot POP3 server (or, where Dovecot cannot play
//! the part, the tests' own POP3 server): `--all`, `--check`, `--show-state` and
//! `--forget-state`, state per account and destination, the `-v` trace with secrets
//! masked, the exit statuses, errors that name what they concern, and `--every` with
//! timestamps, SIGTERM, `--log` and `--syslog`.

mod fetch_support;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Output, Stdio};
use std::time::Duration;

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::hostile::{Body, Hostile, Script};
use fetch_support::*;

const USER: &str = "ctl";
const PASS: &str = "s3cret-Pa55";

fn dovecot(n: usize) -> (Dovecot, Vec<Vec<u8>>) {
    let msgs = corpus(n);
    let d = Dovecot::start(&DovecotConfig::with_user(USER, PASS)).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &msgs);
    d.give_mail_to_owner().unwrap();
    (d, msgs)
}

fn run(d: &Dovecot, work: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec!["--tls", "none"];
    args.extend_from_slice(extra);
    fetch_cmd("127.0.0.1", d.pop3_addr().port(), USER, PASS, work, &args)
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_all_state_per_destination_show_and_forget() {
    let (d, msgs) = dovecot(4);
    let work = tempdir();
    let a = work.path().join("A");
    let to_a = format!("maildir:{}", a.display());
    let total: u64 = msgs
        .iter()
        .map(|m| m.len() as u64 + m.iter().filter(|&&b| b == b'\n').count() as u64)
        .sum();

    // --check: counts and sizes, downloads nothing; exit 0 when there is new mail.
    let o = run(&d, work.path(), &["--to", &to_a, "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("4 new messages ({total} octets)")),
        "{}",
        err(&o)
    );
    assert!(!a.join("new").exists() || maildir_messages(&a).is_empty());

    // A real run stores them (exit 0); the next finds nothing new (exit 1), and so
    // does --check.
    let o = run(&d, work.path(), &["--to", &to_a]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(maildir_messages(&a), sorted(&msgs));
    let o = run(&d, work.path(), &["--to", &to_a]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let o = run(&d, work.path(), &["--to", &to_a, "--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("0 new messages"), "{}", err(&o));

    // State is per destination: a new one gets every message.
    let b = work.path().join("B");
    let to_b = format!("mbox:{}", b.display());
    let o = run(&d, work.path(), &["--to", &to_b, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(summary(&v)["fetched"], 4, "{v}");

    // --all fetches everything again into A.
    let o = run(&d, work.path(), &["--to", &to_a, "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(maildir_messages(&a).len(), 8);

    // --show-state lists the four UIDLs for A; --forget-state forgets them, and the
    // next run fetches all four again.
    let o = run(&d, work.path(), &["--to", &to_a, "--show-state"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let shown = out(&o);
    assert!(
        shown.contains("4 messages recorded as stored in maildir:"),
        "{shown}"
    );
    assert_eq!(
        shown.lines().filter(|l| l.contains("first stored")).count(),
        4,
        "{shown}"
    );
    let o = run(&d, work.path(), &["--to", &to_a, "--forget-state"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("forgot 4 messages"), "{}", out(&o));
    let o = run(&d, work.path(), &["--to", &to_a, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(summary(&v)["fetched"], 4, "{v}");
    // B's state was not touched.
    let o = run(&d, work.path(), &["--to", &to_b]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
}

#[test]
fn an_old_per_account_state_file_is_taken_over() {
    let (d, _msgs) = dovecot(2);
    let work = tempdir();
    let to = format!("maildir:{}", work.path().join("A").display());
    let o = run(&d, work.path(), &["--to", &to]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Make it look like an old release's state file.
    let state: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "state"))
        .collect();
    assert_eq!(state.len(), 1, "{state:?}");
    let legacy = work
        .path()
        .join(format!("{USER}@127.0.0.1_{}.state", d.pop3_addr().port()));
    std::fs::rename(&state[0], &legacy).unwrap();
    let o = run(&d, work.path(), &["--to", &to]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "nothing new expected: {}",
        err(&o)
    );
    assert!(!legacy.exists());
}

#[test]
fn exit_statuses_and_errors_that_name_what_they_concern() {
    let (d, _) = dovecot(1);
    let work = tempdir();
    let port = d.pop3_addr().port();
    // Authentication: 4, naming the server.
    let o = fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        "wrong",
        work.path(),
        &["--tls", "none", "--to", "maildir:/nonexistent-never-used"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        err(&o)
    );
    // Destination: 6, naming it (a file where the Maildir's parent should be).
    let file = work.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let to = format!("maildir:{}/M", file.display());
    let o = run(&d, work.path(), &["--to", &to]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(err(&o).contains(&to), "{}", err(&o));
    // Network: 3, naming the address.
    // A port that refuses for the whole run (bound, not listening).
    let refused = correio_testkit::RefusedPort::new().unwrap();
    let free = refused.port();
    let o = fetch_cmd(
        "127.0.0.1",
        free,
        USER,
        PASS,
        work.path(),
        &["--tls", "none"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("127.0.0.1:{free}")),
        "{}",
        err(&o)
    );
    // Configuration: 7.
    let o = fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "bogus"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert!(err(&o).contains("bogus"), "{}", err(&o));
}

#[test]
fn verbose_traces_the_protocol_with_secrets_masked() {
    let (d, _) = dovecot(2);
    for auth in ["user", "plain", "login"] {
        let work = tempdir();
        let to = format!("maildir:{}", work.path().join("M").display());
        let o = run(&d, work.path(), &["--to", &to, "-v", "--auth", auth]);
        let e = err(&o);
        assert_eq!(o.status.code(), Some(0), "{auth}: {e}");
        assert!(e.contains("C: CAPA") && e.contains("S: +OK"), "{auth}: {e}");
        assert!(
            e.contains("C: RETR 1") && e.contains("C: QUIT"),
            "{auth}: {e}"
        );
        assert!(e.contains("****"), "{auth}: {e}");
        // Neither the password nor its base64 forms appear.
        for secret in [PASS, "czNjcmV0LVBhNTU", "AGN0bABzM2NyZXQtUGE1NQ"] {
            assert!(!e.contains(secret), "{auth}: {secret} leaked: {e}");
        }
        // No message body either.
        assert!(!e.contains("Subject:"), "{auth}: {e}");
    }
    // OAuth2 tokens (XOAUTH2 and OAUTHBEARER initial responses): the tests' own
    // server refuses AUTH; what matters is what the trace shows.
    let srv = Hostile::start(Script {
        messages: vec![Body::Bytes(b"A: b\r\n\r\nx\r\n".to_vec())],
        ..Default::default()
    });
    for mech in ["xoauth2", "oauthbearer"] {
        let work = tempdir();
        let token = "ya29.TOKEN-that-must-not-leak";
        let o = fetch_cmd(
            "127.0.0.1",
            srv.port,
            "me@example.org",
            token,
            work.path(),
            &[
                "--tls",
                "none",
                "--auth",
                mech,
                "-v",
                "--to",
                "maildir:/nonexistent-never-used",
            ],
        )
        .output()
        .unwrap();
        let e = err(&o);
        assert_eq!(o.status.code(), Some(4), "{mech}: {e}");
        // The token goes as the initial response or as the first SASL line.
        let upper = mech.to_uppercase();
        assert!(
            e.contains(&format!("C: AUTH {upper} ****"))
                || e.contains(&format!("C: AUTH {upper}\n")) && e.contains("C: ****"),
            "{mech}: {e}"
        );
        assert!(!e.contains("TOKEN-that-must-not-leak"), "{mech}: {e}");
        assert!(!e.contains("eWEyOS5UT0tFTi"), "{mech}: {e}");
    }
}

#[test]
fn every_stamps_lines_logs_to_a_file_and_syslog_and_stops_on_sigterm() {
    let (d, _) = dovecot(2);
    let work = tempdir();
    let to = format!("maildir:{}", work.path().join("M").display());
    let log = work.path().join("fetch.log");
    let sock_path = work.path().join("syslog.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        USER,
        PASS,
        work.path(),
        &[
            "--tls",
            "none",
            "--to",
            &to,
            "--every",
            "1h",
            "--log",
            log.to_str().unwrap(),
            "--syslog",
            "--syslog-socket",
            sock_path.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Ready: the first run's summary line (after the plan's line).
    let plan = lines.next().unwrap().unwrap();
    let first = lines.next().unwrap().unwrap();
    let stamp = |l: &str| {
        let t = l.split(' ').next().unwrap_or("");
        t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
    };
    assert!(stamp(&plan) && plan.contains("2 new messages"), "{plan}");
    assert!(stamp(&first), "{first}");
    assert!(
        first.contains("2 fetched") && first.contains("next in 1h"),
        "{first}"
    );
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("<22>"), "mail.info expected: {msg}");
    assert!(
        msg.contains("correio-fetch[") && msg.contains("2 fetched"),
        "{msg}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(stamp(&logged) && logged.contains("2 fetched"), "{logged}");
    // SIGTERM stops it as Ctrl-C does.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopping on SIGTERM")),
        "{rest:?}"
    );
}

/// On a terminal (a pseudo-terminal from `script`), each account's bar shows its
/// final count and ends as the account's summary line; two accounts keep both.
#[test]
fn bars_end_as_each_accounts_summary() {
    let srv_one = Hostile::start(Script {
        messages: vec![Body::Bytes(b"A: b\r\n\r\none\r\n".to_vec()); 2],
        ..Default::default()
    });
    let srv_two = Hostile::start(Script {
        messages: vec![Body::Bytes(b"A: b\r\n\r\ntwo\r\n".to_vec()); 3],
        ..Default::default()
    });
    let work = tempdir();
    let config = work.path().join("accounts.toml");
    let mut text = format!(
        "[defaults]\ntls = \"none\"\nuser = \"u\"\npassword_command = \"echo p\"\nstate_dir = \"{}\"\n",
        work.path().display()
    );
    for (name, srv) in [("one", &srv_one), ("two", &srv_two)] {
        text += &format!(
            "[account.{name}]\nhost = \"127.0.0.1\"\nport = {}\nto = \"maildir:{}\"\n",
            srv.port,
            work.path().join(name).display()
        );
    }
    std::fs::write(&config, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_correio");
    let o = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!("{bin} fetch --config {}", config.display()))
        .arg("/dev/null")
        .env("HOME", work.path())
        .output()
        .expect("script (Debian package bsdutils) is needed");
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(
        screen.contains("2/2 messages") && screen.contains("3/3 messages"),
        "{screen}"
    );
    // Each summary replaces its account's bar for good: the bar is not drawn again.
    for (name, line) in [("one", "one: 2 fetched"), ("two", "two: 3 fetched")] {
        let at = screen
            .rfind(line)
            .unwrap_or_else(|| panic!("{line} missing: {screen}"));
        assert!(
            !screen[at..].contains(&format!("{name} [")),
            "{name}'s bar was drawn after its summary: {screen}"
        );
    }
}
