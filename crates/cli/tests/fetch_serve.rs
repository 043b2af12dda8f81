//! `correio fetch` against `correio serve` (both the real binary): STLS and implicit
//! TLS with the server's own certificate, keep then delete, byte-exact.

mod fetch_support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use correio_testkit::daemon::Daemon;
use fetch_support::*;

/// How long `correio serve` may take to start listening.
const UP: Duration = Duration::from_secs(30);

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

#[test]
fn fetch_from_correio_serve_over_stls_and_pop3s() {
    let work = tempdir();
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    let msgs = corpus(21);
    run_ok(
        &["user", "add", "bob", "--data", data_s, "--password-stdin"],
        b"b0b pass\n",
    );
    for m in &msgs {
        run_ok(&["deliver", "--user", "bob", "--data", data_s], m);
    }
    // Port 0: the server reports the ports it bound.
    let mut server = Daemon::start({
        let mut c = correio();
        c.args(["serve", "--data", data_s]).args([
            "--pop3",
            "127.0.0.1:0",
            "--pop3s",
            "127.0.0.1:0",
        ]);
        c
    });
    let pop3 = server.wait_listening("listening", " tls=false", UP).port();
    let pop3s = server.wait_listening("listening", " tls=true", UP).port();
    let ca = data.join("tls/cert.pem");
    let ca_s = ca.to_str().unwrap();

    // Keep mode over STLS.
    let st1 = tempdir();
    let md1 = st1.path().join("M");
    let to1 = format!("maildir:{}", md1.display());
    let v = run_json(fetch_cmd(
        "localhost",
        pop3,
        "bob",
        "b0b pass",
        st1.path(),
        &["--tls", "starttls", "--ca", ca_s, "--to", &to1],
    ));
    assert_eq!(summary(&v)["fetched"], 21, "{v}");
    assert_eq!(maildir_messages(&md1), sorted(&msgs));
    let v = run_json(fetch_cmd(
        "localhost",
        pop3,
        "bob",
        "b0b pass",
        st1.path(),
        &["--tls", "starttls", "--ca", ca_s, "--to", &to1],
    ));
    assert_eq!(summary(&v)["fetched"], 0, "{v}");

    // Delete mode over implicit TLS, into mbox.
    let st2 = tempdir();
    let mbox = st2.path().join("mbox");
    let to2 = format!("mbox:{}", mbox.display());
    let v = run_json(fetch_cmd(
        "localhost",
        pop3s,
        "bob",
        "b0b pass",
        st2.path(),
        &["--tls", "implicit", "--ca", ca_s, "--delete", "--to", &to2],
    ));
    assert_eq!(summary(&v)["fetched"], 21, "{v}");
    assert_eq!(summary(&v)["deleted"], 21, "{v}");
    // The server is empty now.
    let v = run_json(fetch_cmd(
        "localhost",
        pop3s,
        "bob",
        "b0b pass",
        st2.path(),
        &["--tls", "implicit", "--ca", ca_s, "--to", &to2],
    ));
    assert_eq!(summary(&v)["on_server"], 0, "{v}");
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(text.matches("\nFrom MAILER-DAEMON ").count() + 1, 21);
}

#[test]
fn lmtp_target_delivers_into_correio_serve() {
    use correio_testkit::{Dovecot, DovecotConfig};
    let msgs = corpus(8);
    let d = Dovecot::start(&DovecotConfig::with_user("src", "pw")).unwrap();
    fill_maildir(&d.maildir("src"), &msgs);
    d.give_mail_to_owner().unwrap();

    let work = tempdir();
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    run_ok(
        &["user", "add", "bob", "--data", data_s, "--password-stdin"],
        b"pb\n",
    );
    let mut server = Daemon::start({
        let mut c = correio();
        c.args(["serve", "--data", data_s]).args([
            "--pop3",
            "127.0.0.1:0",
            "--lmtp",
            "127.0.0.1:0",
        ]);
        c
    });
    let lmtp = server.wait_listening("listening for LMTP", "", UP).port();
    let pop3 = server.wait_listening("listening", " tls=false", UP).port();
    // Dovecot -> correio fetch -> LMTP -> correio serve.
    let st = tempdir();
    let to = format!("lmtp:127.0.0.1:{lmtp}:bob");
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "src",
        "pw",
        st.path(),
        &["--tls", "none", "--delete", "--to", &to],
    ));
    assert_eq!(summary(&v)["fetched"], 8, "{v}");
    assert!(maildir_messages(&d.maildir("src")).is_empty());
    // correio serve -> correio fetch -> Maildir: each message arrives whole (the
    // LMTP server may add trace headers in front).
    let st2 = tempdir();
    let md = st2.path().join("M");
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        pop3,
        "bob",
        "pb",
        st2.path(),
        &[
            "--tls",
            "none",
            "--to",
            &format!("maildir:{}", md.display()),
        ],
    ));
    assert_eq!(summary(&v)["fetched"], 8, "{v}");
    let got = maildir_messages(&md);
    for m in &msgs {
        assert_eq!(
            got.iter().filter(|g| g.ends_with(m)).count(),
            1,
            "{}",
            String::from_utf8_lossy(m)
        );
    }
}
