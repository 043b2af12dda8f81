//! The harness itself: Dovecot starts on loopback ports chosen at run time, serves what
//! its LDA delivered, offers POP3S with the generated certificate, and is gone after
//! drop. (With `pop3_lock_session = yes` a second session waits ~10 s for Dovecot's
//! lock before failing, so that is not exercised here.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use correio_testkit::{Dovecot, DovecotConfig, Pop3};

#[test]
fn plain_pop3_with_lda_delivery_and_session_lock() {
    let d = Dovecot::start(&DovecotConfig::with_user("u1", "p1")).unwrap();
    d.deliver_with_lda("u1", b"Subject: t\n\n.dot\nbody\n")
        .unwrap();
    let mut p = Pop3::login(d.pop3_addr(), "u1", "p1").unwrap();
    assert_eq!(p.list().unwrap().len(), 1);
    let m = p.retr(1).unwrap();
    assert!(
        m.ends_with(b"Subject: t\r\n\r\n.dot\r\nbody\r\n"),
        "{}",
        String::from_utf8_lossy(&m)
    );
    p.quit().unwrap();
    assert!(Pop3::login(d.pop3_addr(), "u1", "wrong").is_err());
    let addr = d.pop3_addr();
    drop(d);
    // The master is gone when drop returns; its login processes follow it: wait
    // (bounded) until nothing answers, rather than for a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening 10 s after drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pop3s_with_generated_certificate() {
    let cfg = DovecotConfig {
        tls: true,
        ..DovecotConfig::with_user("u2", "p2")
    };
    let d = Dovecot::start(&cfg).unwrap();
    let addr = d.pop3s_addr().unwrap();
    let cert = d.cert_pem().unwrap();
    // Verified against the generated certificate (openssl, Debian package openssl).
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-CAfile",
        ])
        .arg(&cert)
        .arg("-connect")
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is required for this test");
    child.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    assert!(out.starts_with("+OK"), "{out}");
}
