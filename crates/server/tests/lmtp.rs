//! LMTP at the wire: exact bytes in, exact replies out, over TCP and a Unix socket,
//! plus a real peer (Python's smtplib.LMTP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use correio_auth::{UserDb, UserDbOptions};
use correio_server::LmtpAddr;
use correio_server::lmtp::{LmtpContext, LmtpLimits, LmtpListener, run_lmtp};
use correio_store::{MailLocation, open_maildrop};

struct Harness {
    dir: tempfile::TempDir,
    addr: Option<SocketAddr>,
    unix: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    fn start(limits: LmtpLimits, unix: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users"),
            format!(
                "alice:{{PLAIN}}pw::::::\nbob@example.org:{{PLAIN}}pw::::::\nmboxer:{{PLAIN}}pw::::::userdb_mail=mbox:{}/mboxer.mbox\nbroken:{{PLAIN}}pw::::::userdb_mail=maildir:~/Maildir\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let users = Arc::new(
            UserDb::load_with(dir.path().join("users"), UserDbOptions::default()).unwrap(),
        );
        let template = format!("maildir:{}/mail/%u", dir.path().display());
        let ctx = Arc::new(
            LmtpContext::new(users, template)
                .with_limits(limits)
                .with_spool_dir(dir.path().to_path_buf()),
        );
        let laddr = if unix {
            LmtpAddr::Unix(dir.path().join("lmtp.sock"))
        } else {
            LmtpAddr::Tcp("127.0.0.1:0".parse().unwrap())
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = LmtpListener::bind(&laddr).await.unwrap();
                ready_tx.send(l.local_tcp_addr()).unwrap();
                run_lmtp(l, ctx, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let unix = unix.then(|| dir.path().join("lmtp.sock"));
        Harness {
            dir,
            addr,
            unix,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let (r, w): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match (&self.addr, &self.unix) {
            (Some(a), _) => {
                let s = TcpStream::connect(a).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                (Box::new(s.try_clone().unwrap()), Box::new(s))
            }
            (None, Some(p)) => {
                let s = std::os::unix::net::UnixStream::connect(p).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                (Box::new(s.try_clone().unwrap()), Box::new(s))
            }
            _ => unreachable!(),
        };
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let g = c.line();
        assert!(
            g.starts_with("220 ") && g.ends_with("LMTP Correio ready"),
            "{g}"
        );
        c
    }

    fn maildir(&self, user: &str) -> MailLocation {
        MailLocation::Maildir(self.dir.path().join("mail").join(user))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    r: BufReader<Box<dyn Read + Send>>,
    w: Box<dyn Write + Send>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
        self.w.flush().unwrap();
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        assert!(l.ends_with("\r\n"), "reply not CRLF-terminated: {l:?}");
        l.trim_end().to_string()
    }
    /// Reads one (possibly multi-line) reply, joined with '\n'.
    fn reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let l = self.line();
            let more = l.as_bytes().get(3) == Some(&b'-');
            all.push(l);
            if !more {
                return all.join("\n");
            }
        }
    }
    fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.reply()
    }
}

fn read_all(loc: &MailLocation) -> Vec<Vec<u8>> {
    let md = open_maildrop(loc).unwrap();
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

#[test]
fn full_transaction_with_per_recipient_replies_and_dot_unstuffing() {
    let h = Harness::start(LmtpLimits::default(), false);
    let mut c = h.connect();
    let lhlo = c.cmd("LHLO mx.example.org");
    let lines: Vec<&str> = lhlo.lines().collect();
    assert!(lines[0].starts_with("250-"));
    assert_eq!(
        &lines[1..],
        [
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250 SIZE 67108864"
        ]
    );
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.net> BODY=8BITMIME SIZE=100"),
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.org>"),
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.org>"),
        "550 5.1.1 <nobody@example.org> User unknown"
    );
    assert_eq!(c.cmd("RCPT TO:<bob@example.org>"), "250 2.1.5 Recipient OK");
    assert_eq!(
        c.cmd("RCPT TO:<alice+lists@example.org>"),
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        c.cmd("DATA"),
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    c.send(b"Subject: hi\r\n\r\n..dot\r\nol\xc3\xa1\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <alice@example.org> Saved");
    assert_eq!(c.reply(), "250 2.0.0 <bob@example.org> Saved");
    assert_eq!(c.reply(), "250 2.0.0 <alice+lists@example.org> Saved");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
    let expected = b"Return-Path: <sender@example.net>\nSubject: hi\n\n.dot\nol\xc3\xa1\n".to_vec();
    assert_eq!(
        read_all(&h.maildir("alice")),
        vec![expected.clone(), expected.clone()]
    );
    assert_eq!(read_all(&h.maildir("bob@example.org")), vec![expected]);
}

#[test]
fn pipelined_commands_in_one_write_get_ordered_replies() {
    let h = Harness::start(LmtpLimits::default(), false);
    let mut c = h.connect();
    c.send(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nRCPT TO:<ghost>\r\nDATA\r\n");
    assert!(c.reply().ends_with("250 SIZE 67108864"));
    assert_eq!(c.reply(), "250 2.1.0 Sender OK");
    assert_eq!(c.reply(), "250 2.1.5 Recipient OK");
    assert_eq!(c.reply(), "550 5.1.1 <ghost> User unknown");
    assert_eq!(c.reply(), "354 Start mail input; end with <CRLF>.<CRLF>");
    // Data and the next transaction in one write, split across the terminator.
    c.send(b"a\r\n.\r\nRSET\r\nNOOP\r\nMAIL FROM:<x@y>\r\nRCPT TO:<mboxer>\r\nDATA\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <alice> Saved");
    assert_eq!(c.reply(), "250 2.0.0 OK");
    assert_eq!(c.reply(), "250 2.0.0 OK");
    assert_eq!(c.reply(), "250 2.1.0 Sender OK");
    assert_eq!(c.reply(), "250 2.1.5 Recipient OK");
    assert_eq!(c.reply(), "354 Start mail input; end with <CRLF>.<CRLF>");
    c.send(b"From the start\r\n.\r\nQUIT\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <mboxer> Saved");
    assert_eq!(c.reply(), "221 2.0.0 Bye");
    assert_eq!(
        read_all(&h.maildir("alice")),
        vec![b"Return-Path: <>\na\n".to_vec()]
    );
    let mbox = MailLocation::Mbox(h.dir.path().join("mboxer.mbox"));
    assert_eq!(
        read_all(&mbox),
        vec![b"Return-Path: <x@y>\nFrom the start\n".to_vec()]
    );
    let raw = std::fs::read(h.dir.path().join("mboxer.mbox")).unwrap();
    assert!(
        raw.starts_with(b"From x@y "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        raw.ends_with(b"\n>From the start\n\n"),
        "mboxrd quoting: {}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn sequence_errors_and_malformed_input() {
    let limits = LmtpLimits {
        max_command_line: 64,
        max_recipients: 2,
        max_message_size: 100,
        ..LmtpLimits::default()
    };
    let h = Harness::start(limits, false);
    let mut c = h.connect();
    assert_eq!(c.cmd("MAIL FROM:<a@b>"), "503 5.5.1 Send LHLO first");
    assert_eq!(c.cmd("EHLO x"), "500 5.5.1 This is LMTP: use LHLO");
    assert_eq!(c.cmd("HELO x"), "500 5.5.1 This is LMTP: use LHLO");
    assert!(c.cmd("LHLO x").ends_with("250 SIZE 100"));
    assert_eq!(c.cmd("RCPT TO:<alice>"), "503 5.5.1 Send MAIL first");
    assert_eq!(c.cmd("DATA"), "503 5.5.1 Send MAIL first");
    assert_eq!(
        c.cmd("MAIL FROM:<a@b> SIZE=101"),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(
        c.cmd("MAIL FROM:a@b"),
        "501 5.5.4 Syntax: address must be in <>"
    );
    assert_eq!(c.cmd("FOO"), "500 5.5.2 Command unrecognized");
    c.send(&[b'x'; 200]);
    c.send(b"\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Line too long");
    assert_eq!(c.cmd("MAIL FROM:<a@b>"), "250 2.1.0 Sender OK");
    assert_eq!(c.cmd("MAIL FROM:<a@b>"), "503 5.5.1 Nested MAIL command");
    assert_eq!(c.cmd("DATA"), "503 5.5.1 No valid recipients");
    assert_eq!(c.cmd("RCPT TO:<alice>"), "250 2.1.5 Recipient OK");
    assert_eq!(c.cmd("RCPT TO:<alice>"), "250 2.1.5 Recipient OK");
    assert_eq!(c.cmd("RCPT TO:<alice>"), "452 4.5.3 Too many recipients");
    assert_eq!(c.cmd("RCPT TO:<broken>"), "452 4.5.3 Too many recipients");
    assert_eq!(
        c.cmd("DATA"),
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    // Over the size limit: read to the end, then refused per recipient.
    let mut big = vec![b'y'; 300];
    big.extend_from_slice(b"\r\n.\r\n");
    c.send(&big);
    assert_eq!(c.reply(), "552 5.3.4 <alice> Message too big");
    assert_eq!(c.reply(), "552 5.3.4 <alice> Message too big");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK");
    assert_eq!(
        c.cmd("VRFY alice"),
        "252 2.5.2 Cannot VRFY user, but will accept message"
    );
    // A user whose mail location cannot be built (~ without a home): temporary.
    assert_eq!(c.cmd("MAIL FROM:<a@b>"), "250 2.1.0 Sender OK");
    assert_eq!(
        c.cmd("RCPT TO:<broken>"),
        "451 4.3.0 <broken> Mailbox unavailable, try again later"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
    // Nothing at all was stored.
    assert!(
        !h.dir.path().join("mail").join("alice").join("new").exists()
            || read_all(&h.maildir("alice")).is_empty()
    );
}

/// The idle limit runs from the last complete line: a peer that sends one byte now
/// and then, never finishing a line, is closed after the limit (it used to be reset by
/// every read, so such a peer could hold a connection for ever). The peer here keeps
/// dripping (a byte every 250 ms, for up to 30 s) until the server closes on it; the
/// 421 must come while it does, within the client's 10 s read limit, against a 1 s idle
/// limit. With the old per-read timer no 421 ever comes and the read times out.
#[test]
fn bytes_that_never_finish_a_line_do_not_hold_the_connection() {
    let limits = LmtpLimits {
        idle_timeout: Duration::from_secs(1),
        ..LmtpLimits::default()
    };
    let h = Harness::start(limits, false);
    let mut c = h.connect();
    assert!(c.cmd("LHLO x").starts_with("250"));
    let mut w = std::mem::replace(&mut c.w, Box::new(std::io::sink()));
    let drip = std::thread::spawn(move || {
        for b in b"NOOP".iter().cycle().take(120) {
            if w.write_all(&[*b]).and_then(|()| w.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    assert_eq!(c.line(), "421 4.4.2 Idle timeout, closing connection");
    let mut rest = String::new();
    assert_eq!(c.r.read_line(&mut rest).unwrap(), 0, "closed after the 421");
    drop(c);
    drip.join().unwrap();
}

#[test]
fn too_many_errors_close_the_connection() {
    let limits = LmtpLimits {
        max_errors: 3,
        ..LmtpLimits::default()
    };
    let h = Harness::start(limits, false);
    let mut c = h.connect();
    assert_eq!(c.cmd("X"), "500 5.5.2 Command unrecognized");
    assert_eq!(c.cmd("X"), "500 5.5.2 Command unrecognized");
    assert_eq!(c.cmd("X"), "500 5.5.2 Command unrecognized");
    assert_eq!(c.reply(), "421 4.7.0 Too many errors, closing connection");
    let mut rest = String::new();
    assert_eq!(
        c.r.read_line(&mut rest).unwrap(),
        0,
        "connection must be closed"
    );
}

#[test]
fn connection_lost_during_data_stores_nothing() {
    // One connection at a time: the next greeting comes only once the server has
    // finished with the lost connection, so the checks below see its outcome, not a
    // moment before it.
    let limits = LmtpLimits {
        max_connections: 1,
        ..LmtpLimits::default()
    };
    let h = Harness::start(limits, false);
    {
        let mut c = h.connect();
        c.cmd("LHLO x");
        c.cmd("MAIL FROM:<a@b>");
        c.cmd("RCPT TO:<alice>");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: half\r\n\r\nbody without end");
    }
    let mut c = h.connect();
    // A whole message on the next connection is stored: the check below can see one.
    c.cmd("LHLO x");
    c.cmd("MAIL FROM:<a@b>");
    c.cmd("RCPT TO:<alice>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: whole\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let got = read_all(&h.maildir("alice"));
    let has = |m: &Vec<u8>, s: &str| String::from_utf8_lossy(m).contains(s);
    assert_eq!(got.len(), 1, "only the whole message is stored");
    assert!(has(&got[0], "Subject: whole") && !has(&got[0], "Subject: half"));
    // No spool file is left behind either (they are unlinked at creation).
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".correio-lmtp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn unix_socket_listener() {
    let h = Harness::start(LmtpLimits::default(), true);
    let mut c = h.connect();
    c.cmd("LHLO x");
    c.cmd("MAIL FROM:<a@b>");
    assert_eq!(c.cmd("RCPT TO:<alice>"), "250 2.1.5 Recipient OK");
    c.cmd("DATA");
    c.send(b"hello\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <alice> Saved");
    c.cmd("QUIT");
    assert_eq!(read_all(&h.maildir("alice")).len(), 1);
}

fn python_lmtp(addr: &str, port: u16, script_tail: &str) -> std::process::Output {
    let script = format!(
        "import smtplib, sys\n\
         c = smtplib.LMTP('{addr}', {port})\n\
         {script_tail}\n"
    );
    std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 is required for this test (Debian package python3)")
}

#[test]
fn python_smtplib_lmtp_delivers_and_gets_per_recipient_results() {
    let h = Harness::start(LmtpLimits::default(), false);
    let port = h.addr.unwrap().port();
    let out = python_lmtp(
        "127.0.0.1",
        port,
        "msg = b'Subject: from python\\r\\n\\r\\n.leading dot\\r\\nline\\r\\n'\n\
         refused = c.sendmail('p@example.net', ['alice', 'bob@example.org', 'ghost'], msg)\n\
         print(sorted(refused.keys()))\n\
         c.quit()",
    );
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "['ghost']");
    let expected =
        b"Return-Path: <p@example.net>\nSubject: from python\n\n.leading dot\nline\n".to_vec();
    assert_eq!(read_all(&h.maildir("alice")), vec![expected.clone()]);
    assert_eq!(read_all(&h.maildir("bob@example.org")), vec![expected]);
}

#[test]
fn python_smtplib_over_unix_socket() {
    let h = Harness::start(LmtpLimits::default(), true);
    let sock = h.unix.clone().unwrap();
    let out = python_lmtp(
        &sock.display().to_string(),
        0,
        "print(c.sendmail('p@x', ['alice'], b'Subject: u\\r\\n\\r\\nx\\r\\n'))\nc.quit()",
    );
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}");
    assert_eq!(read_all(&h.maildir("alice")).len(), 1);
}

/// A mailbox path that is a file: a temporary failure for that recipient only.
#[test]
fn mailbox_path_that_is_a_file_is_a_temporary_failure() {
    let h = Harness::start(LmtpLimits::default(), false);
    std::fs::create_dir_all(h.dir.path().join("mail")).unwrap();
    std::fs::write(h.dir.path().join("mail").join("alice"), b"not a maildir").unwrap();
    let mut c = h.connect();
    c.cmd("LHLO x");
    c.cmd("MAIL FROM:<a@b>");
    c.cmd("RCPT TO:<alice>");
    c.cmd("RCPT TO:<bob@example.org>");
    c.cmd("DATA");
    c.send(b"x\r\n.\r\n");
    assert_eq!(c.reply(), "451 4.2.0 <alice> Mailbox unavailable");
    assert_eq!(c.reply(), "250 2.0.0 <bob@example.org> Saved");
    assert_eq!(
        std::fs::read(h.dir.path().join("mail").join("alice")).unwrap(),
        b"not a maildir"
    );
}

/// A full disk (a 1 MiB tmpfs the test mounts; needs root as the suite runs): `452
/// 4.3.1` for the recipient, earlier messages intact, nothing half-written.
#[test]
fn full_disk_is_452_and_leaves_nothing_half_written() {
    let h = Harness::start(LmtpLimits::default(), false);
    let mnt = h.dir.path().join("mail");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "this test needs root to mount a 1 MiB tmpfs");
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Umount(mnt.clone());
    let mut c = h.connect();
    c.cmd("LHLO x");
    let body: Vec<u8> = std::iter::repeat_n(
        &b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"[..],
        3000,
    )
    .flatten()
    .copied()
    .collect();
    let mut saved = 0;
    let last = loop {
        c.cmd("MAIL FROM:<a@b>");
        c.cmd("RCPT TO:<alice>");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(&body);
        c.send(b".\r\n");
        let r = c.reply();
        if r != "250 2.0.0 <alice> Saved" {
            break r;
        }
        saved += 1;
        assert!(saved < 20, "1 MiB cannot hold 20 messages of 200 KB");
    };
    assert_eq!(last, "452 4.3.1 <alice> Insufficient system storage");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK", "the session goes on");
    c.cmd("QUIT");
    let msgs = read_all(&h.maildir("alice"));
    assert_eq!(msgs.len(), saved);
    let expected_len = "Return-Path: <a@b>\n".len() + 3000 * 65;
    assert!(msgs.iter().all(|m| m.len() == expected_len));
    assert_eq!(std::fs::read_dir(mnt.join("alice/tmp")).unwrap().count(), 0);
}
