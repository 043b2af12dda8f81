//! The SMTP destination (`--to smtp://HOST:PORT --to-recipient ADDR`, fetchmail's
//! classic mode) against a real Postfix the test starts (which hands mail on over LMTP
//! to a `correio serve`), and its 4xx/5xx policy against a scripted SMTP server.

mod fetch_support;

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use correio_testkit::daemon::{Daemon, is_root};
use correio_testkit::postfix::{LmtpTarget, Postfix, PostfixConfig};
use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_correio");

/// Corpus messages with a Return-Path (the envelope sender to use). Those with lines
/// over 2048 bytes are left out: Postfix splits such lines (`line_length_limit`).
fn with_return_path(n: usize) -> Vec<Vec<u8>> {
    corpus(n)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 1)
        .map(|(i, m)| {
            let mut r = format!("Return-Path: <bounce{i}@example.net>\n").into_bytes();
            r.extend_from_slice(&m);
            r
        })
        .collect()
}

fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in m {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn retr_all(port: u16, user: &str, pass: &str, n: usize) -> Vec<Vec<u8>> {
    let mut p = correio_testkit::Pop3::login(([127, 0, 0, 1], port).into(), user, pass).unwrap();
    let v = (1..=n).map(|i| p.retr(i).unwrap()).collect();
    let _ = p.quit();
    v
}

#[test]
fn relays_through_postfix_with_envelope_sender_and_dot_stuffing() {
    if !is_root() {
        eprintln!("skipped: Postfix needs root");
        return;
    }
    let msgs = with_return_path(7);
    let d = Dovecot::start(&DovecotConfig::with_user("alice", "apw")).unwrap();
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();

    // correio serve: POP3 to read the result, LMTP for Postfix.
    let dir = tempdir();
    let root = dir.path();
    let data = root.join("data");
    // Port 0: the server reports the ports it bound.
    let cfg = root.join("correio.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}\"\nmail_location = \"maildir:{d}/mail/%d/%n\"\n\
             [listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"127.0.0.1:0\"\n",
            d = data.display(),
        ),
    )
    .unwrap();
    let add = Command::new(BIN)
        .args([
            "user",
            "add",
            "carol@example.org",
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"cpw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let mut server = Daemon::start({
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", cfg.to_str().unwrap()]);
        c
    });
    let lmtp = server
        .wait_listening("listening for LMTP", "", Duration::from_secs(20))
        .port();
    let pop3 = server
        .wait_listening("listening", " tls=false", Duration::from_secs(20))
        .port();
    let pf_dir = root.join("postfix");
    std::fs::create_dir_all(&pf_dir).unwrap();
    let postfix = Postfix::start(
        &pf_dir,
        &PostfixConfig {
            myhostname: "mx.example.org",
            domain: "example.org",
            lmtp: LmtpTarget::Tcp(([127, 0, 0, 1], lmtp).into()),
        },
    );

    let work = tempdir();
    let out = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "alice",
        "apw",
        work.path(),
        &[
            "--tls",
            "none",
            "--delete",
            "--to",
            &format!("smtp://{}", postfix.smtp_addr()),
            "--to-recipient",
            "carol@example.org",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        maildir_messages(&d.maildir("alice")).is_empty(),
        "source emptied"
    );

    // Postfix delivers asynchronously: wait (bounded) until all arrived.
    let new = data.join("mail/example.org/carol/new");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) < msgs.len() {
        assert!(
            Instant::now() < deadline,
            "not delivered; postfix log:\n{}\nserver log:\n{}",
            postfix.log(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut got = retr_all(pop3, "carol@example.org", "cpw", msgs.len());
    got.sort();
    // Each arrives as: Return-Path from our MAIL FROM (added at LMTP delivery),
    // Postfix's Received, then the original message unchanged (dots survived the
    // stuffing on both hops, 8-bit bytes too).
    let mut matched = 0;
    for m in &msgs {
        // Postfix's cleanup removes a Return-Path header from incoming mail (final
        // delivery adds it back from the envelope): the rest must arrive unchanged.
        let want = crlf(&m[m.iter().position(|&b| b == b'\n').unwrap() + 1..]);
        let i = String::from_utf8_lossy(m)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        let sender = i.trim_start_matches("Return-Path: ").to_owned();
        let hit = got.iter().find(|g| g.ends_with(&want)).unwrap_or_else(|| {
            panic!(
                "message {i} not delivered unchanged; got:\n{}",
                got.iter()
                    .map(|g| String::from_utf8_lossy(&g[..g.len().min(400)]).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            )
        });
        let text = String::from_utf8_lossy(hit);
        assert!(
            text.starts_with(&format!("Return-Path: {sender}\r\nReceived: ")),
            "{text}"
        );
        matched += 1;
    }
    assert_eq!(matched, msgs.len());
}

/// A scripted SMTP server: answers each transaction by the message's Subject
/// (`defer` → 451 at DATA's end, `reject` → 550 at RCPT, anything else → 250).
fn scripted_smtp() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        w.write_all(b"220 scripted ESMTP\r\n").unwrap();
        let mut rcpt_reject = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let cmd = line.trim_end().to_ascii_uppercase();
            if cmd.starts_with("EHLO") {
                w.write_all(b"250-scripted\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n")
                    .unwrap();
            } else if cmd == "AUTH PLAIN" {
                w.write_all(b"334 \r\n").unwrap();
                let mut resp = String::new();
                r.read_line(&mut resp).unwrap();
                // base64 of "\0carol\0cpw"
                if resp.trim_end() == "AGNhcm9sAGNwdw==" {
                    accepted.push("AUTH carol".into());
                    w.write_all(b"235 2.7.0 ok\r\n").unwrap();
                } else {
                    w.write_all(b"535 5.7.8 bad credentials\r\n").unwrap();
                }
            } else if cmd.starts_with("MAIL FROM:<REJECT") {
                rcpt_reject = true;
                w.write_all(b"250 ok\r\n").unwrap();
            } else if cmd.starts_with("MAIL") {
                rcpt_reject = false;
                w.write_all(b"250 ok\r\n").unwrap();
            } else if cmd.starts_with("RCPT") {
                if rcpt_reject {
                    w.write_all(b"550 5.1.1 no such user here\r\n").unwrap();
                } else {
                    w.write_all(b"250 ok\r\n").unwrap();
                }
            } else if cmd == "DATA" {
                w.write_all(b"354 go\r\n").unwrap();
                let mut msg = String::new();
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap();
                    if l == ".\r\n" {
                        break;
                    }
                    msg.push_str(&l);
                }
                if msg.contains("Subject: defer") {
                    w.write_all(b"451 4.3.0 try again later\r\n").unwrap();
                } else {
                    accepted.push(msg);
                    w.write_all(b"250 2.0.0 queued\r\n").unwrap();
                }
            } else if cmd == "RSET" {
                w.write_all(b"250 ok\r\n").unwrap();
            } else if cmd == "QUIT" {
                w.write_all(b"221 bye\r\n").unwrap();
                break;
            } else {
                w.write_all(b"500 what\r\n").unwrap();
            }
        }
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        accepted
    });
    (port, h)
}

/// 4xx keeps the message on the server for the next run; 5xx is reported per
/// message and, by default (`to_rejected = keep`), keeps it too; the others are
/// relayed and deleted. The login in the URL authenticates with AUTH PLAIN first.
#[test]
fn deferred_and_rejected_messages_stay_on_the_server() {
    let msgs: Vec<Vec<u8>> = vec![
        b"Return-Path: <a@example.net>\nSubject: fine\n\nbody one\n".to_vec(),
        b"Return-Path: <b@example.net>\nSubject: defer\n\nbody two\n".to_vec(),
        b"Return-Path: <reject@example.net>\nSubject: rejected\n\nbody three\n".to_vec(),
        b"Return-Path: <>\nSubject: also fine\n\n.dot\n".to_vec(),
    ];
    let d = Dovecot::start(&DovecotConfig::with_user("alice", "apw")).unwrap();
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();
    let (port, h) = scripted_smtp();
    let work = tempdir();
    let out = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "alice",
        "apw",
        work.path(),
        &[
            "--tls",
            "none",
            "--delete",
            "--to",
            &format!("smtp://carol@127.0.0.1:{port}"),
            "--to-password-command",
            "echo cpw",
            "--to-recipient",
            "carol@example.org",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let accepted = h.join().unwrap();
    assert_eq!(accepted[0], "AUTH carol", "AUTH PLAIN first: {accepted:?}");
    let accepted = &accepted[1..];
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted.iter().any(|m| m.ends_with("\r\n..dot\r\n")),
        "dot-stuffed"
    );
    let left = maildir_messages(&d.maildir("alice"));
    assert_eq!(left.len(), 2, "deferred and rejected stay on the server");
    assert!(
        left.iter()
            .any(|m| m.windows(13).any(|w| w == b"Subject: defe"))
    );
    assert!(
        left.iter()
            .any(|m| m.windows(15).any(|w| w == b"Subject: reject"))
    );
    assert!(
        err.contains("deferred the message (451 4.3.0 try again later)"),
        "{err}"
    );
    assert!(
        err.contains("rejected the message (550 5.1.1 no such user here)"),
        "{err}"
    );
}
