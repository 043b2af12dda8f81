//! A real MTA in front of our LMTP listener: a private Postfix instance (Debian package
//! `postfix`) started by the test on loopback, its `local_transport` pointed at Correio's
//! LMTP port, mail submitted to Postfix's SMTP port, and the Maildirs checked byte for
//! byte.
//!
//! The Postfix instance is wholly private (see [`correio_testkit::postfix`]: its own
//! directories in a temp dir, started and stopped with `postfix -c DIR`, any system
//! Postfix left alone). `local_recipient_maps` is empty, so Postfix accepts every local
//! address at SMTP time and the LMTP server decides per recipient; an unknown one must
//! come back as a bounce for that recipient alone, delivered (over LMTP too) to the
//! sender.
//!
//! What Postfix adds, as its documentation says: `smtpd(8)` prepends one `Received:`
//! header (`from HELO (NAME [ADDR]) by myhostname (Postfix) with ESMTP id QUEUEID`,
//! plus `for <RCPT>` when there was one recipient; NAME is `unknown` because
//! `smtpd_peername_lookup = no` keeps the host's resolver out of it), and nothing else
//! here because `local_header_rewrite_clients` is empty and the messages carry Date,
//! From and Message-ID. Our LMTP server puts `Return-Path:` with the envelope sender in front.
//! Everything after those two headers must be exactly what was sent (CRLF stored as LF).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use correio_auth::{UserDb, UserDbOptions};
use correio_server::LmtpAddr;
use correio_server::lmtp::{LmtpContext, LmtpListener, run_lmtp};
use correio_testkit::peers::{crlf_to_lf, maildir_messages};
use correio_testkit::postfix::{Postfix, PostfixConfig, Smtp, queue_id};

const DOMAIN: &str = "correio.test";
const MYHOSTNAME: &str = "mx.correio.test";
const HELO: &str = "client.correio.test";

/// Our LMTP listener on its own thread and runtime, with users `alice` and `bob`.
struct Lmtp {
    addr: SocketAddr,
    mail: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lmtp {
    fn start(dir: &Path) -> Lmtp {
        std::fs::write(
            dir.join("users"),
            "alice:{PLAIN}pw::::::\nbob:{PLAIN}pw::::::\n",
        )
        .unwrap();
        let users =
            Arc::new(UserDb::load_with(dir.join("users"), UserDbOptions::default()).unwrap());
        let mail = dir.join("mail");
        let ctx = Arc::new(
            LmtpContext::new(users, format!("maildir:{}/%u", mail.display()))
                .with_spool_dir(dir.to_path_buf()),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let laddr = LmtpAddr::Tcp("127.0.0.1:0".parse().unwrap());
                let l = LmtpListener::bind(&laddr).await.unwrap();
                ready_tx.send(l.local_tcp_addr()).unwrap();
                run_lmtp(l, ctx, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("LMTP listener did not start")
            .expect("a TCP listener has an address");
        Lmtp {
            addr,
            mail,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// The raw files delivered to `user` (new/ and cur/), whatever their order.
    fn files(&self, user: &str) -> Vec<Vec<u8>> {
        maildir_messages(&self.mail.join(user))
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }
}

impl Drop for Lmtp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn headers(subject: &str, to: &str, extra: &str) -> String {
    format!(
        "From: Bob <bob@{DOMAIN}>\r\n\
         To: {to}\r\n\
         Date: Sun, 22 Nov 2026 05:00:00 +0000\r\n\
         Message-ID: <{subject}@client.correio.test>\r\n\
         Subject: {subject}\r\n{extra}\r\n"
    )
}

/// Checks one stored message: `Return-Path`, then Postfix's `Received:`, then exactly
/// the message sent.
fn check_stored(stored: &[u8], sender: &str, sent: &[u8], qid: &str, single_rcpt: Option<&str>) {
    let text = String::from_utf8_lossy(stored);
    let rp = format!("Return-Path: <{sender}>\n");
    assert!(text.starts_with(&rp), "no Return-Path first: {text:.300}");
    let rest = &stored[rp.len()..];
    let want = crlf_to_lf(sent);
    assert!(
        rest.ends_with(&want),
        "stored message does not end with the bytes sent (stored {} bytes, sent {})",
        rest.len(),
        want.len()
    );
    let added = String::from_utf8_lossy(&rest[..rest.len() - want.len()]).into_owned();
    // Exactly one header, folded with tabs: the one smtpd(8) documents.
    let mut lines = added.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first == format!("Received: from {HELO} (unknown [127.0.0.1])"),
        "{added}"
    );
    assert!(
        lines.all(|l| l.starts_with('\t')),
        "more than Received added: {added}"
    );
    let unfolded = added.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains(&format!("by {MYHOSTNAME} (Postfix) with ESMTP id {qid}")),
        "{added}"
    );
    match single_rcpt {
        Some(r) => assert!(unfolded.contains(&format!(" for <{r}>; ")), "{added}"),
        None => assert!(!unfolded.contains(" for <"), "{added}"),
    }
}

#[test]
fn postfix_delivers_over_lmtp_byte_exact_with_per_recipient_bounce() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let lmtp = Lmtp::start(dir.path());
    // Makes dir.path() traversable for Postfix's daemons (they run as `postfix`).
    let pf = Postfix::start(
        dir.path(),
        &PostfixConfig {
            myhostname: MYHOSTNAME,
            domain: DOMAIN,
            lmtp: lmtp.addr.into(),
        },
    );
    let up = started.elapsed();

    let alice = format!("alice@{DOMAIN}");
    let bob = format!("bob@{DOMAIN}");
    let ghost = format!("ghost@{DOMAIN}");

    // 1. Dot lines (Postfix must stuff them again for LMTP, we must unstuff), to both
    //    users in one transaction: two per-recipient replies after DATA.
    let m_dots = format!(
        "{}.\r\n..\r\n.leading dot\r\n...three\r\nend with dot.\r\n . space first\r\n.\r\nlast\r\n",
        headers("dots", &format!("{alice}, {bob}"), "")
    )
    .into_bytes();
    // 2. An 8-bit body: UTF-8 and raw Latin-1 bytes, declared BODY=8BITMIME.
    let mut m_8bit = headers(
        "eightbit",
        &alice,
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
    )
    .into_bytes();
    m_8bit.extend_from_slice("Olá, ação, Grüße, 日本語\r\n".as_bytes());
    m_8bit.extend_from_slice(b"latin-1: caf\xe9 \xff\xfe\r\n\xc3\xa9.\r\n");
    // 3. About 1 MB, lines under 998 octets (smtp_line_length_limit), some dotted.
    let mut m_big = headers("big", &bob, "").into_bytes();
    let mut n = 0u32;
    while m_big.len() < 1_000_000 {
        let lead = if n.is_multiple_of(97) { "." } else { "" };
        m_big.extend_from_slice(
            format!(
                "{lead}{n:07} the quick brown fox jumps over the lazy dog 0123456789 {}\r\n",
                n % 13
            )
            .as_bytes(),
        );
        n += 1;
    }
    // 4. A known and an unknown recipient: Postfix accepts both at SMTP time, our LMTP
    //    server refuses the unknown one at RCPT, Postfix delivers to the known one and
    //    bounces to the sender (bob) for the unknown one alone.
    let m_two = format!(
        "{}two recipients, one unknown\r\n",
        headers("two", &format!("{alice}, {ghost}"), "")
    )
    .into_bytes();

    let mut c = Smtp::connect(pf.smtp_addr(), HELO);
    let q_dots = queue_id(&c.send(&bob, &[&alice, &bob], &m_dots, false));
    let q_8bit = queue_id(&c.send(&bob, &[&alice], &m_8bit, true));
    let q_big = queue_id(&c.send(&bob, &[&bob], &m_big, false));
    let q_two = queue_id(&c.send(&bob, &[&alice, &ghost], &m_two, false));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");

    // alice: dots, eightbit, two; bob: dots, big and the bounce for ghost. The log lines
    // are written by postlogd a moment after the delivery: wait for both.
    let log_wants = [
        format!(
            "{q_dots}: to=<{alice}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!(
            "{q_dots}: to=<{bob}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!(
            "{q_8bit}: to=<{alice}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!(
            "{q_big}: to=<{bob}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!(
            "{q_two}: to=<{alice}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!(
            "{q_two}: to=<{ghost}>, relay=127.0.0.1[127.0.0.1]:{}",
            lmtp.addr.port()
        ),
        format!("{q_two}: sender non-delivery notification"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = pf.log();
        let done = lmtp.files("alice").len() >= 3
            && lmtp.files("bob").len() >= 3
            && log_wants.iter().all(|w| log.contains(w.as_str()))
            && log.matches("status=sent").count() >= 6;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 60 s: alice has {}, bob has {}\nmaillog:\n{log}",
            lmtp.files("alice").len(),
            lmtp.files("bob").len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered = started.elapsed();
    let log = pf.log();

    // Per-recipient outcomes as Postfix's lmtp(8) logged them: our exact replies.
    let line_for = |qid: &str, rcpt: &str| -> String {
        log.lines()
            .find(|l| l.contains(&format!("{qid}: to=<{rcpt}>,")))
            .unwrap_or_else(|| panic!("no log line for {qid} {rcpt}:\n{log}"))
            .to_string()
    };
    for (qid, rcpt) in [
        (&q_dots, &alice),
        (&q_dots, &bob),
        (&q_8bit, &alice),
        (&q_big, &bob),
        (&q_two, &alice),
    ] {
        let l = line_for(qid, rcpt);
        assert!(
            l.contains(&format!(
                "dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> Saved)"
            )),
            "{l}"
        );
    }
    let g = line_for(&q_two, &ghost);
    assert!(
        g.contains(&format!(
            "dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <{ghost}> User unknown (in reply to RCPT TO command))"
        )),
        "{g}"
    );
    assert!(
        !log.contains("status=deferred"),
        "a delivery was deferred:\n{log}"
    );
    assert!(!log.contains("warning:"), "postfix warned:\n{log}");

    // Byte-exact contents.
    let find = |user: &str, subject: &str| -> Vec<u8> {
        let key = format!("\nMessage-ID: <{subject}@client.correio.test>\n");
        let hits: Vec<Vec<u8>> = lmtp
            .files(user)
            .into_iter()
            .filter(|f| String::from_utf8_lossy(f).contains(&key))
            .collect();
        assert_eq!(hits.len(), 1, "{user} should have exactly one '{subject}'");
        hits.into_iter().next().unwrap()
    };
    check_stored(&find("alice", "dots"), &bob, &m_dots, &q_dots, None);
    check_stored(&find("bob", "dots"), &bob, &m_dots, &q_dots, None);
    check_stored(
        &find("alice", "eightbit"),
        &bob,
        &m_8bit,
        &q_8bit,
        Some(&alice),
    );
    check_stored(&find("bob", "big"), &bob, &m_big, &q_big, Some(&bob));
    check_stored(&find("alice", "two"), &bob, &m_two, &q_two, None);
    assert_eq!(lmtp.files("alice").len(), 3);
    assert_eq!(lmtp.files("bob").len(), 3);

    // The bounce: from the null sender to bob, for ghost only, with our reply in it.
    let bounce = lmtp
        .files("bob")
        .into_iter()
        .find(|f| f.starts_with(b"Return-Path: <>\n"))
        .expect("a bounce to bob");
    let b = String::from_utf8_lossy(&bounce);
    let bu = b.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        format!("From: Mail Delivery System <MAILER-DAEMON@{DOMAIN}>"),
        "Subject: Undelivered Mail Returned to Sender".to_string(),
        format!("To: {bob}"),
        format!(
            "<{ghost}>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <{ghost}> User unknown (in reply to RCPT TO command)"
        ),
        format!("Final-Recipient: rfc822; {ghost}"),
        "Action: failed".to_string(),
        "Status: 5.1.1".to_string(),
        format!("Diagnostic-Code: smtp; 550 5.1.1 <{ghost}> User unknown"),
        format!("X-Postfix-Queue-ID: {q_two}"),
    ] {
        assert!(bu.contains(&want), "bounce lacks {want:?}:\n{b}");
    }
    assert!(
        !bu.contains(&format!("Final-Recipient: rfc822; {alice}")),
        "alice was delivered, she must not be in the bounce:\n{b}"
    );
    // No temp files left by our deliveries.
    for u in ["alice", "bob"] {
        let tmp = lmtp.mail.join(u).join("tmp");
        assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
    }

    // For the record when run with --nocapture: what lmtp(8) saw from our server.
    for l in log.lines().filter(|l| l.contains("postfix/lmtp[")) {
        eprintln!("{l}");
    }
    drop(pf);
    eprintln!(
        "postfix up in {up:?}, all delivered after {delivered:?}, stopped after {:?}",
        started.elapsed()
    );
}
