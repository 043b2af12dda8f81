//! A real MTA in front of our LMTP listener: a private Postfix instance (Debian package
//! `postfix`) started by the test on loopback, its `local_transport` pointed at Correio's
//! LMTP port, mail submitted to Postfix's SMTP port, and the Maildirs checked byte for
//! byte.
//!
//! The Postfix instance is wholly private: its own `config_directory`,
//! `queue_directory`, `data_directory` and `maillog_file` in a temp dir, started and
//! stopped with `postfix -c DIR` (the supported way to run a second instance as root;
//! `alternate_config_directories` only matters to the set-gid tools, which the test
//! does not use). It writes nothing under /etc/postfix (it only reads the packaged
//! `postfix-files` and `dynamicmaps.cf` there, its `meta_directory`) and leaves any
//! system Postfix alone.
//! `local_recipient_maps` is empty, so Postfix accepts every local address at SMTP time
//! and the LMTP server decides per recipient; an unknown one must come back as a
//! bounce for that recipient alone, delivered (over LMTP too) to the sender.
//!
//! What Postfix adds, as its documentation says: `smtpd(8)` prepends one `Received:`
//! header (`from HELO (NAME [ADDR]) by myhostname (Postfix) with ESMTP id QUEUEID`,
//! plus `for <RCPT>` when there was one recipient; NAME is `unknown` because
//! `smtpd_peername_lookup = no` keeps the host's resolver out of it), and nothing else
//! here because `local_header_rewrite_clients` is empty and the messages carry Date,
//! From and Message-ID. Our LMTP server puts `Return-Path:` with the envelope sender in front.
//! Everything after those two headers must be exactly what was sent (CRLF stored as LF).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use correio_auth::{UserDb, UserDbOptions};
use correio_server::LmtpAddr;
use correio_server::lmtp::{LmtpContext, LmtpListener, run_lmtp};

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
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.mail.join(user).join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
        out
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

/// A private Postfix instance. Dropping it stops it and makes sure its processes are
/// gone (killed by PID if `postfix stop` did not do it), then removes its files.
struct Postfix {
    config: PathBuf,
    smtp: SocketAddr,
    maillog: PathBuf,
    master: Option<u32>,
}

fn postfix_bin() -> PathBuf {
    for p in ["/usr/sbin/postfix", "/usr/local/sbin/postfix"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in path.split(':') {
            let p = Path::new(d).join("postfix");
            if p.exists() {
                return p;
            }
        }
    }
    panic!("postfix is required for this test (Debian package postfix); it is not installed");
}

/// The uid of the `postfix` account (`mail_owner`), from /etc/passwd.
fn postfix_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postfix")).then(|| f.get(2)?.parse().ok())?
        })
        .expect("no `postfix` user: is the Debian package postfix installed?")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Is `pid` still a live process (a zombie counts as gone: PID 1 here may not reap)?
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// The live children of `pid` (Postfix's daemons under its master).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && alive(child) {
            out.push(child);
        }
    }
    out
}

/// Runs a command with a time limit; kills it by PID on overrun.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (st.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, format!("timed out after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Postfix {
    /// Writes the configuration into `dir` and starts the instance, with its SMTP
    /// server on a free loopback port and `local_transport` = our LMTP at `lmtp`.
    fn start(dir: &Path, lmtp: SocketAddr) -> Postfix {
        let bin = postfix_bin();
        let uid = postfix_uid();
        let config = dir.join("etc");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&config, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        // master(8) refuses a data_directory not owned by mail_owner; the queue's
        // subdirectories are created with the right owners by `postfix start`.
        std::os::unix::fs::chown(&data, Some(uid), None).unwrap();
        let maillog = dir.join("maillog");
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file = {maillog}\n\
             maillog_file_prefixes = {dir}\n\
             myhostname = {MYHOSTNAME}\n\
             mydomain = {DOMAIN}\n\
             myorigin = {DOMAIN}\n\
             mydestination = {DOMAIN}\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             local_transport = lmtp:inet:{lmtp}\n\
             default_transport = error:5.7.1 no outbound mail from this test\n\
             relay_transport = error:5.7.1 no outbound mail from this test\n\
             relayhost =\n\
             disable_dns_lookups = yes\n\
             smtp_dns_support_level = disabled\n\
             lmtp_host_lookup = native\n\
             smtpd_peername_lookup = no\n\
             smtputf8_enable = no\n\
             biff = no\n\
             append_dot_mydomain = no\n\
             local_header_rewrite_clients =\n\
             lmtp_connect_timeout = 5s\n\
             lmtp_data_done_timeout = 20s\n",
            queue = queue.display(),
            data = data.display(),
            maillog = maillog.display(),
            dir = dir.display(),
        );
        std::fs::write(config.join("main.cf"), main_cf).unwrap();
        // Retry with a fresh port if another process grabbed ours between probe and bind.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            // No chroot: the Debian chroot needs files copied into the queue dir.
            let master_cf = format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup    unix  n - n 60   1 pickup\n\
                 cleanup   unix  n - n -    0 cleanup\n\
                 qmgr      unix  n - n 300  1 qmgr\n\
                 rewrite   unix  - - n -    - trivial-rewrite\n\
                 bounce    unix  - - n -    0 bounce\n\
                 defer     unix  - - n -    0 bounce\n\
                 trace     unix  - - n -    0 bounce\n\
                 verify    unix  - - n -    1 verify\n\
                 flush     unix  n - n 1000? 0 flush\n\
                 proxymap  unix  - - n -    - proxymap\n\
                 smtp      unix  - - n -    - smtp\n\
                 relay     unix  - - n -    - smtp\n\
                 showq     unix  n - n -    - showq\n\
                 error     unix  - - n -    - error\n\
                 retry     unix  - - n -    - error\n\
                 discard   unix  - - n -    - discard\n\
                 lmtp      unix  - - n -    - lmtp\n\
                 anvil     unix  - - n -    1 anvil\n\
                 scache    unix  - - n -    1 scache\n\
                 postlog   unix-dgram n - n - 1 postlogd\n"
            );
            std::fs::write(config.join("master.cf"), master_cf).unwrap();
            let mut pf = Postfix {
                config: config.clone(),
                smtp: SocketAddr::from(([127, 0, 0, 1], port)),
                maillog: maillog.clone(),
                master: None,
            };
            // `postfix start` waits (master -w) until the master has bound its sockets.
            let (ok, out) = run_bounded(
                Command::new(&bin).arg("-c").arg(&config).arg("start"),
                Duration::from_secs(20),
            );
            pf.master = std::fs::read_to_string(queue.join("pid").join("master.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if ok && pf.master.is_some_and(alive) {
                return pf;
            }
            last = format!("{out}\nmaillog:\n{}", pf.log());
            drop(pf);
        }
        panic!("postfix did not start: {last}");
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.maillog).unwrap_or_default()).into_owned()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let Some(master) = self.master else {
            return;
        };
        let kids = children(master);
        let _ = run_bounded(
            Command::new(postfix_bin())
                .arg("-c")
                .arg(&self.config)
                .arg("stop"),
            Duration::from_secs(10),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pids = kids;
        pids.push(master);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in pids.into_iter().filter(|&p| alive(p)) {
            eprintln!("postfix process {p} survived `postfix stop`: killing it");
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(p.to_string())
                .status();
        }
    }
}

/// A minimal SMTP client: exact replies, our own dot-stuffing.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Smtp {
        let s = TcpStream::connect(addr).expect("connect to postfix smtpd");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let g = c.reply();
        assert!(g.starts_with("220 "), "greeting: {g}");
        let e = c.cmd(&format!("EHLO {HELO}"));
        assert!(
            e.contains("250-8BITMIME") || e.contains("250 8BITMIME"),
            "{e}"
        );
        c
    }

    /// One reply, multi-line joined with '\n'.
    fn reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).expect("read reply");
            assert!(n > 0, "postfix closed the connection after {all:?}");
            let l = l.trim_end().to_string();
            let more = l.as_bytes().get(3) == Some(&b'-');
            all.push(l);
            if !more {
                return all.join("\n");
            }
        }
    }

    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    /// Sends one message (CRLF lines); returns the end-of-data reply.
    fn send(&mut self, from: &str, to: &[&str], msg: &[u8], eight_bit: bool) -> String {
        let body = if eight_bit { " BODY=8BITMIME" } else { "" };
        let r = self.cmd(&format!("MAIL FROM:<{from}> SIZE={}{body}", msg.len()));
        assert!(r.starts_with("250 "), "MAIL: {r}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(r.starts_with("250 "), "RCPT {rcpt}: {r}");
        }
        let r = self.cmd("DATA");
        assert!(r.starts_with("354 "), "DATA: {r}");
        assert!(msg.ends_with(b"\r\n"));
        let mut wire = Vec::with_capacity(msg.len() + 1024);
        for line in msg.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
        }
        wire.extend_from_slice(b".\r\n");
        self.w.write_all(&wire).unwrap();
        self.reply()
    }
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
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

/// The queue id from Postfix's `250 2.0.0 Ok: queued as ID`.
fn queue_id(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("end of data: {reply}"))
        .to_string()
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
    // Postfix's daemons run as `postfix`: the config and log dirs must be traversable.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let lmtp = Lmtp::start(dir.path());
    let pf = Postfix::start(dir.path(), lmtp.addr);
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

    let mut c = Smtp::connect(pf.smtp);
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
