//! `correio fetch --every`: the daemon fetches new mail on its schedule and backs off
//! when the server cannot be reached.

mod fetch_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_fetches_new_mail_as_it_arrives() {
    let d = Dovecot::start(&DovecotConfig::with_user("dee", "pw")).unwrap();
    fill_maildir(&d.maildir("dee"), &corpus(2));
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let md = work.path().join("M");
    let to = format!("maildir:{}", md.display());
    let mut cmd = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "dee",
        "pw",
        work.path(),
        &["--tls", "none", "--to", &to, "--every", "1s", "--delete"],
    );
    let _g = Guard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while maildir_messages(&md).len() < n {
            assert!(
                Instant::now() < deadline,
                "daemon did not fetch {n} messages"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(2);
    d.deliver_with_lda("dee", b"Subject: later\n\nlater\n")
        .unwrap();
    wait_for(3);
    // And it deleted them on the server on the way.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !maildir_messages(&d.maildir("dee")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "daemon did not delete on the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_backs_off_on_errors() {
    // Nothing listens there, for the whole test (bound, not listening).
    let refused = correio_testkit::RefusedPort::new().unwrap();
    let port = refused.port();
    let work = tempdir();
    let mut cmd = fetch_cmd(
        "127.0.0.1",
        port,
        "x",
        "pw",
        work.path(),
        &[
            "--tls",
            "none",
            "--to",
            "maildir:/nonexistent-never-used",
            "--every",
            "1s",
        ],
    );
    let mut g = Guard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(g.0.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(
        first.contains("cannot connect") && first.contains("retrying in 2s"),
        "{first}"
    );
    assert!(second.contains("retrying in 4s"), "{second}");
}
