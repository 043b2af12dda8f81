//! `correio fetch` and server certificates made the way admins make them: a
//! self-signed certificate from `openssl req -x509 -newkey rsa:2048 -nodes -subj
//! /CN=localhost` (CA:TRUE, no subjectAltName), served by a real Dovecot (POP3S and
//! STLS). Given with `--ca` it is trusted as itself (mpop accepts it too); the name
//! and the validity period are still checked; without trust the error prints its
//! SHA-256 fingerprint and the option that pins it, and that option works.

mod fetch_support;

use std::path::Path;
use std::process::Command;

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const USER: &str = "cert";
const PASS: &str = "pw";

/// `openssl req -x509` into `dir`: (cert.pem, key.pem).
fn openssl_self_signed(dir: &Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("self.pem");
    let key = dir.join("self.key");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the point of the test is a CA:TRUE certificate"
    );
    (cert, key)
}

fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned()
}

/// Dovecot (POP3S and STLS) serving the openssl certificate.
fn dovecot_with(cert: &Path, key: &Path) -> Dovecot {
    let mut cfg = DovecotConfig::with_user(USER, PASS);
    cfg.tls = true;
    // Replaces the test kit's own certificate (later settings win).
    cfg.extra_config = format!(
        "ssl_cert = <{}\nssl_key = <{}\n",
        cert.display(),
        key.display()
    );
    let d = Dovecot::start(&cfg).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &corpus(3));
    d.give_mail_to_owner().unwrap();
    d
}

#[test]
fn an_openssl_self_signed_ca_true_certificate_given_with_ca_is_trusted_as_itself() {
    let keys = tempdir();
    let (cert, key) = openssl_self_signed(keys.path(), "localhost");
    let d = dovecot_with(&cert, &key);
    let ca = cert.to_str().unwrap();
    for (port, tls) in [
        (d.pop3s_addr().unwrap().port(), "implicit"),
        (d.pop3_addr().port(), "starttls"),
    ] {
        let work = tempdir();
        let md = work.path().join("M");
        let to = format!("maildir:{}", md.display());
        let v = run_json(fetch_cmd(
            "localhost",
            port,
            USER,
            PASS,
            work.path(),
            &["--tls", tls, "--ca", ca, "--to", &to],
        ));
        assert_eq!(summary(&v)["fetched"], 3, "{tls}: {v}");
    }
    // The name is still checked: the certificate names localhost, not 127.0.0.1.
    let work = tempdir();
    let out = fetch_cmd(
        "127.0.0.1",
        d.pop3s_addr().unwrap().port(),
        USER,
        PASS,
        work.path(),
        &[
            "--tls",
            "implicit",
            "--ca",
            ca,
            "--to",
            "maildir:/nonexistent/x",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("does not name 127.0.0.1"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", d.pop3s_addr().unwrap().port())),
        "{err}"
    );
}

#[test]
fn an_unknown_issuer_prints_the_fingerprint_and_the_option_that_pins_it() {
    let keys = tempdir();
    let (cert, key) = openssl_self_signed(keys.path(), "localhost");
    let fp = openssl_fingerprint(&cert);
    let d = dovecot_with(&cert, &key);
    let port = d.pop3s_addr().unwrap().port();
    let work = tempdir();
    let md = work.path().join("M");
    let to = format!("maildir:{}", md.display());
    let out = fetch_cmd(
        "localhost",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "implicit", "--to", &to],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(err.contains(&format!("localhost:{port}")), "{err}");
    let option = format!("--fingerprint {fp}");
    assert!(err.contains(&option), "{err}");
    // Exactly what it printed works.
    let v = run_json(fetch_cmd(
        "localhost",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "implicit", "--to", &to, "--fingerprint", &fp],
    ));
    assert_eq!(summary(&v)["fetched"], 3, "{v}");
}
