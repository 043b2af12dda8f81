//! A real MTA in front of an LMTP listener: a private Postfix instance (Debian package
//! `postfix`) on loopback whose `local_transport` is the LMTP server under test, and
//! [`Smtp`], a minimal SMTP client to submit mail to it.
//!
//! The instance is wholly private: its own `config_directory`, `queue_directory`,
//! `data_directory` and `maillog_file` in a directory the test owns, started and
//! stopped with `postfix -c DIR` (the supported way to run a second instance as root;
//! `alternate_config_directories` only matters to the set-gid tools, which are not
//! used). It writes nothing under /etc/postfix (it only reads the packaged
//! `postfix-files` and `dynamicmaps.cf` there, its `meta_directory`) and leaves any
//! system Postfix alone. Starting it needs root.
//!
//! Its one local domain is [`PostfixConfig::domain`]; `local_recipient_maps` is empty,
//! so Postfix accepts every local address at SMTP time and the LMTP server decides per
//! recipient (an unknown one comes back as a bounce to the sender, delivered over LMTP
//! too). No mail leaves: other transports are `error:`.
//!
//! What Postfix adds to a message, as its documentation says: `smtpd(8)` prepends one
//! `Received:` header (`from HELO (NAME [ADDR]) by MYHOSTNAME (Postfix) with ESMTP id
//! QUEUEID`, plus `for <RCPT>` when there was one recipient; NAME is `unknown` because
//! `smtpd_peername_lookup = no` keeps the host's resolver out of it), and nothing else
//! when the message carries Date, From and Message-ID (`local_header_rewrite_clients`
//! is empty).
//!
//! These types are for tests: they panic (with Postfix's output and log) instead of
//! returning errors.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::peers::{require, try_run_bounded};
use crate::sys::{alive, descendants, kill_pid, passwd_ids};

/// What the private instance is told.
#[derive(Debug, Clone, Copy)]
pub struct PostfixConfig<'a> {
    /// `myhostname`: the name in the `Received:` header Postfix adds.
    pub myhostname: &'a str,
    /// `mydomain`, `myorigin` and `mydestination`: the one local domain, whose mail goes
    /// to `lmtp`.
    pub domain: &'a str,
    /// `local_transport = lmtp:inet:ADDR` or `lmtp:unix:PATH`: the LMTP server under
    /// test.
    pub lmtp: LmtpTarget<'a>,
}

/// Where Postfix's `lmtp` client delivers.
#[derive(Debug, Clone, Copy)]
pub enum LmtpTarget<'a> {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A Unix socket (Postfix's `lmtp` client runs as `mail_owner`, so the socket
    /// must accept that user).
    Unix(&'a Path),
}

impl From<SocketAddr> for LmtpTarget<'_> {
    fn from(a: SocketAddr) -> Self {
        LmtpTarget::Tcp(a)
    }
}

impl std::fmt::Display for LmtpTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpTarget::Tcp(a) => write!(f, "inet:{a}"),
            LmtpTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A private Postfix instance. Dropping it stops it (`postfix stop`) and makes sure its
/// processes are gone (killed by PID if `postfix stop` did not do it); its files stay
/// in the directory it was started in.
#[derive(Debug)]
pub struct Postfix {
    dir: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    smtp: SocketAddr,
    maillog: PathBuf,
    master: Option<u32>,
}

impl Postfix {
    /// Writes the configuration into `dir` (`etc/`, `queue/`, `data/`, `maillog`) and
    /// starts the instance, its SMTP server on a free loopback port. `dir` is made
    /// mode 0755: Postfix's daemons run as `postfix` and must traverse it. Returns
    /// when the master has bound its sockets.
    ///
    /// # Panics
    /// When Postfix is not installed or does not start (three tries, each on a fresh
    /// port, in case another program took the port between probe and bind).
    pub fn start(dir: &Path, cfg: &PostfixConfig) -> Postfix {
        let bin = require("postfix", "postfix");
        let (uid, _) = passwd_ids("postfix")
            .expect("no `postfix` user: is the Debian package postfix installed?");
        let config = dir.join("etc");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&config, &queue, &data] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        // master(8) refuses a data_directory not owned by mail_owner; the queue's
        // subdirectories are created with the right owners by `postfix start`.
        std::os::unix::fs::chown(&data, Some(uid), None).expect("chown");
        let maillog = dir.join("maillog");
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file = {maillog}\n\
             maillog_file_prefixes = {dir}\n\
             myhostname = {myhostname}\n\
             mydomain = {domain}\n\
             myorigin = {domain}\n\
             mydestination = {domain}\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             local_transport = lmtp:{lmtp}\n\
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
            myhostname = cfg.myhostname,
            domain = cfg.domain,
            lmtp = cfg.lmtp,
        );
        fs::write(config.join("main.cf"), main_cf).expect("main.cf");
        // Retry with a fresh port if another process grabbed ours between probe and bind.
        let mut last = String::new();
        for _ in 0..3 {
            let port = crate::free_port().expect("free port");
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
            fs::write(config.join("master.cf"), master_cf).expect("master.cf");
            let mut pf = Postfix {
                dir: dir.to_owned(),
                bin: bin.clone(),
                config: config.clone(),
                smtp: SocketAddr::from(([127, 0, 0, 1], port)),
                maillog: maillog.clone(),
                master: None,
            };
            // `postfix start` waits (master -w) until the master has bound its sockets.
            let r = try_run_bounded(pf.postfix("start"), None, Duration::from_secs(20), dir);
            pf.master = fs::read_to_string(queue.join("pid").join("master.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let out = match r {
                Ok(r) if r.ok() && pf.master.is_some_and(alive) => return pf,
                Ok(r) => r.log(),
                Err(overrun) => overrun,
            };
            last = format!("{out}\nmaillog:\n{}", pf.log());
            drop(pf);
        }
        panic!("postfix did not start: {last}");
    }

    /// `postfix -c CONFIG_DIR VERB`.
    fn postfix(&self, verb: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-c").arg(&self.config).arg(verb);
        c
    }

    /// The address of its SMTP server (127.0.0.1:port).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    /// Its log (`maillog_file`) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.maillog).unwrap_or_default()).into_owned()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let Some(master) = self.master else {
            return;
        };
        let mut pids = descendants(master);
        pids.push(master);
        let _ = try_run_bounded(
            self.postfix("stop"),
            None,
            Duration::from_secs(10),
            &self.dir,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in pids.into_iter().filter(|&p| alive(p)) {
            eprintln!("postfix process {p} survived `postfix stop`: killing it");
            kill_pid(p);
        }
    }
}

/// A minimal blocking SMTP client: replies exactly as sent, its own dot-stuffing.
#[derive(Debug)]
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    /// Connects, reads the `220` greeting and says `EHLO helo`; the server must offer
    /// 8BITMIME.
    ///
    /// # Panics
    /// When the connection fails or a reply is not the expected one.
    pub fn connect(addr: SocketAddr, helo: &str) -> Smtp {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect to postfix smtpd");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut c = Smtp {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        };
        let g = c.reply();
        assert!(g.starts_with("220 "), "greeting: {g}");
        let e = c.cmd(&format!("EHLO {helo}"));
        assert!(
            e.contains("250-8BITMIME") || e.contains("250 8BITMIME"),
            "{e}"
        );
        c
    }

    /// One reply, the lines of a multi-line one joined with '\n' (line ends removed).
    ///
    /// # Panics
    /// When the server closes the connection or does not answer within 20 s.
    pub fn reply(&mut self) -> String {
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

    /// Sends one command line and returns its reply.
    ///
    /// # Panics
    /// As [`Smtp::reply`].
    pub fn cmd(&mut self, c: &str) -> String {
        self.w
            .write_all(format!("{c}\r\n").as_bytes())
            .expect("send");
        self.reply()
    }

    /// Sends one message (CRLF lines, ending with CRLF) from `from` to `to`, declared
    /// `BODY=8BITMIME` when `eight_bit`; returns the end-of-data reply (see
    /// [`queue_id`]).
    ///
    /// # Panics
    /// When MAIL, a RCPT or DATA is not accepted.
    pub fn send(&mut self, from: &str, to: &[&str], msg: &[u8], eight_bit: bool) -> String {
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
        self.w.write_all(&wire).expect("send data");
        self.reply()
    }
}

/// The queue id from Postfix's end-of-data reply `250 2.0.0 Ok: queued as ID`.
///
/// # Panics
/// When `reply` is another one.
pub fn queue_id(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("end of data: {reply}"))
        .to_string()
}
