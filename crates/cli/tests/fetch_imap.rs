//! The IMAP destination against a real Dovecot IMAP server (Debian package
//! `dovecot-imapd`), with passwords: IMAPS with a pinned CA, the pipelined and the
//! synchronizing-literal paths (by limiting what Dovecot advertises), `\Seen`, and a
//! crash between the IMAP server's tagged OK and the fetcher's record/DELE (a
//! failpoint aborts the process there) that loses nothing and duplicates at most one
//! batch.
//!
//! Bodies are compared after IMAP `BODY.PEEK[]` (Python's imaplib): Dovecot's POP3
//! serves the Maildir's LF messages with CRLF, IMAP stores and returns CRLF, so the
//! expected bytes are the originals with each LF made CRLF.

mod fetch_support;

use correio_testkit::imap_reader::{ImapMessage, read_folder};
use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

fn dovecot(extra: &str) -> Dovecot {
    let cfg = DovecotConfig {
        users: vec![("alice".into(), "apw".into()), ("bob".into(), "bpw".into())],
        imap: true,
        tls: true,
        extra_config: extra.into(),
        ..Default::default()
    };
    Dovecot::start(&cfg).expect("start dovecot with imap")
}

fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    for &b in m {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn bodies(v: &[ImapMessage]) -> Vec<Vec<u8>> {
    let mut b: Vec<Vec<u8>> = v.iter().map(|m| m.body.clone()).collect();
    b.sort();
    b
}

fn want(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut w: Vec<Vec<u8>> = msgs.iter().map(|m| crlf(m)).collect();
    w.sort();
    w
}

fn to_imaps(d: &Dovecot, folder: &str) -> Vec<String> {
    vec![
        "--to".into(),
        format!(
            "imaps://bob@127.0.0.1:{}/{folder}",
            d.imaps_addr().unwrap().port()
        ),
        "--to-password-command".into(),
        "echo bpw".into(),
        "--to-ca".into(),
        d.cert_pem().unwrap().display().to_string(),
    ]
}

fn run(d: &Dovecot, work: &std::path::Path, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "alice",
        "apw",
        work,
        &[&["--tls", "none"], &args[..]].concat(),
    )
    .output()
    .unwrap()
}

fn check(out: &std::process::Output) {
    // 0: new mail stored; 1: nothing new (as fetchmail).
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// IMAPS, MULTIAPPEND with LITERAL+ (what Dovecot offers), keep mode, `\Seen`; a
/// second run appends nothing again.
#[test]
fn imaps_multiappend_keep_mode_and_seen() {
    let d = dovecot("");
    let msgs = corpus(30);
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let mut args = to_imaps(&d, "INBOX");
    args.extend([
        "--keep".into(),
        "--to-seen".into(),
        "--batch-messages".into(),
        "8".into(),
    ]);
    check(&run(&d, work.path(), &args));
    check(&run(&d, work.path(), &args));
    let got = read_folder(d.imap_addr().unwrap(), "bob", "bpw", "INBOX").unwrap();
    assert_eq!(bodies(&got), want(&msgs));
    assert!(got.iter().all(|m| m.flags.contains("\\Seen")));
    assert_eq!(maildir_messages(&d.maildir("alice")).len(), 30, "keep mode");
}

/// Without MULTIAPPEND but with LITERAL+: pipelined APPENDs. Without LITERAL+:
/// each literal waits for the server's continuation. Both byte-exact.
#[test]
fn pipelined_and_synchronizing_literals() {
    for caps in [
        "imap_capability = IMAP4rev1 LITERAL+ SASL-IR UIDPLUS",
        "imap_capability = IMAP4rev1 UIDPLUS",
    ] {
        let d = dovecot(caps);
        let msgs = corpus(15);
        fill_maildir(&d.maildir("alice"), &msgs);
        d.give_mail_to_owner().unwrap();
        let work = tempdir();
        let mut args = to_imaps(&d, "Fetched");
        args.extend(["--delete".into(), "--batch-messages".into(), "4".into()]);
        check(&run(&d, work.path(), &args));
        let got = read_folder(d.imap_addr().unwrap(), "bob", "bpw", "Fetched").unwrap();
        assert_eq!(bodies(&got), want(&msgs), "{caps}");
        assert!(maildir_messages(&d.maildir("alice")).is_empty(), "{caps}");
    }
}

/// A refused destination login fails the run and deletes nothing; plaintext IMAP is
/// refused without --to-insecure.
#[test]
fn wrong_destination_password_or_plaintext_keeps_everything() {
    let d = dovecot("");
    let msgs = corpus(3);
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let mut args = to_imaps(&d, "INBOX");
    args[3] = "echo wrong".into();
    args.push("--delete".into());
    let out = run(&d, work.path(), &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTHENTICATE PLAIN refused"), "{err}");
    assert_eq!(maildir_messages(&d.maildir("alice")).len(), 3);

    let plain = vec![
        "--to".to_string(),
        format!(
            "imap://bob@127.0.0.1:{}/INBOX",
            d.imap_addr().unwrap().port()
        ),
        "--to-password-command".into(),
        "echo bpw".into(),
        "--to-insecure".into(),
        "--delete".into(),
    ];
    // Explicitly insecure works (loopback Dovecot without STARTTLS use)...
    check(&run(&d, work.path(), &plain));
    assert_eq!(
        bodies(&read_folder(d.imap_addr().unwrap(), "bob", "bpw", "INBOX").unwrap()),
        want(&msgs)
    );
    // ...and without the flag, a server that offers no STARTTLS is refused.
    let bare = Dovecot::start(&DovecotConfig {
        users: vec![("alice".into(), "apw".into()), ("bob".into(), "bpw".into())],
        imap: true,
        ..Default::default()
    })
    .unwrap();
    fill_maildir(&bare.maildir("alice"), &msgs);
    bare.give_mail_to_owner().unwrap();
    let starttls = vec![
        "--to".to_string(),
        format!(
            "imap://bob@127.0.0.1:{}/INBOX",
            bare.imap_addr().unwrap().port()
        ),
        "--to-password-command".into(),
        "echo bpw".into(),
        "--delete".into(),
    ];
    let out = run(&bare, &work.path().join("b"), &starttls);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not offer STARTTLS"), "{err}");
    assert_eq!(maildir_messages(&bare.maildir("alice")).len(), 3);
}

/// The crash window: the process aborts after the IMAP server acknowledged a batch's
/// APPEND and before the fetcher recorded it or sent DELE. Nothing is lost (every
/// message is on the source or in the folder), the next run completes, and the
/// duplicates are at most that one batch.
#[test]
fn crash_after_append_ok_loses_nothing_and_duplicates_at_most_one_batch() {
    let d = dovecot("");
    let msgs = corpus(20);
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let batch = 5;
    let mut args = to_imaps(&d, "INBOX");
    args.extend([
        "--delete".into(),
        "--batch-messages".into(),
        batch.to_string(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        "alice",
        "apw",
        work.path(),
        &[&["--tls", "none"], &argv[..]].concat(),
    )
    .env("CORREIO_FAILPOINT", "imap-after-append")
    .output()
    .unwrap();
    assert!(!out.status.success(), "the failpoint must abort the run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint imap-after-append"));
    let imap = d.imap_addr().unwrap();
    let after_crash = read_folder(imap, "bob", "bpw", "INBOX").unwrap();
    assert_eq!(
        after_crash.len(),
        batch,
        "the acknowledged batch is in the folder"
    );
    // Dovecot releases the killed session's lock without deleting (no QUIT).
    let source = maildir_messages(&d.maildir("alice"));
    assert_eq!(
        source.len(),
        20,
        "nothing deleted on the source before recording"
    );

    // The next run finishes (retrying while Dovecot may still hold the lock).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = run(&d, work.path(), &args);
        // 0: the rest stored; 1: nothing was left to fetch.
        if matches!(out.status.code(), Some(0 | 1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let got = bodies(&read_folder(imap, "bob", "bpw", "INBOX").unwrap());
    assert!(maildir_messages(&d.maildir("alice")).is_empty());
    let mut distinct = got.clone();
    distinct.dedup();
    assert_eq!(distinct, want(&msgs), "every message arrived");
    assert!(
        got.len() - msgs.len() <= batch,
        "{} duplicates, more than one batch",
        got.len() - msgs.len()
    );
}
