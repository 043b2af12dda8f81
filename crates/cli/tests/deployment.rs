//! Issue #9: a deployment, end to end, as an admin does it — the built `correio` binary,
//! real peers, nothing faked.
//!
//! In a temporary root directory: a configuration file with `user =` a service user the
//! test creates (`useradd --system`, removed again at the end); `correio cert`; `correio
//! user add` for three users with ARGON2ID, SCRAM-SHA-256 and `{PLAIN}` secrets (one
//! given as `Bob.Smith@Example.Org`, logins are `%Lu`); `correio deliver --config` for
//! each; `correio check`; `correio serve --config` (binds as root, runs sessions as the
//! service user); a private Postfix (`correio_testkit::postfix`, as
//! `crates/server/tests/lmtp_postfix.rs` uses it) hands more mail to the LMTP listener;
//! then curl, mpop, fetchmail and `correio fetch` fetch every message of every user
//! byte-exact, each over STLS and over implicit TLS. Cleartext logins are refused on
//! loopback too (`cleartext_login_on_loopback = false`, loopback not in
//! `trusted_networks`), so every client must really use TLS. Then
//! SIGHUP, with the same server process: a fourth user and `expire` changed from
//! "never" to 0 both take effect, and a session opened before the reload lives on; the
//! certificate is replaced by one whose key only root may read, and new connections get
//! it. A second test: a missing certificate makes `serve` exit non-zero naming the path.
//!
//! What is compared, and how (the conventions of `crates/server/tests/peers_fixtures`,
//! with `correio_testkit::peers::message_problems`):
//! a Maildir file holds LF line ends; a POP3 client receives CRLF. mpop (`received_header
//! off`), fetchmail (an MDA, `set invisible`, `no rewrite`, CRs stripped) and `correio
//! fetch` (Maildir) store the LF form, curl prints the CRLF form. `correio deliver -f S`
//! stores `Return-Path: <S>` then the message; a message that went through Postfix is
//! stored as `Return-Path: <sender>`, Postfix's one `Received:` header (and at most a
//! `Delivered-To:`), then exactly the bytes submitted (CRLF stored as LF). The stored
//! files are first checked against what was submitted; every client must then bring
//! exactly those files, each once.
//!
//! Needs root (CI runs as root): as another user it prints "skipped: needs root" and
//! passes. Needs curl, mpop, fetchmail and postfix (Debian packages of the same names);
//! a missing one fails the test naming the package. Every process it starts is stopped
//! by PID; every wait is bounded.

mod fetch_support;

use std::cell::Cell;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use correio_testkit::daemon::listening_addr;
use correio_testkit::peers::{
    Run, crlf_to_lf, dir_files, lf_to_crlf, make_maildir, message_problems, require,
    run_bounded_input, show_diff, subject, write_private,
};
use correio_testkit::postfix::{Postfix, PostfixConfig, Smtp, queue_id};
use correio_testkit::sys::{alive, all_pids, descendants, passwd_ids};

const BIN: &str = env!("CARGO_BIN_EXE_correio");
/// Time limit of one run of a client or an admin command.
const LIMIT: Duration = Duration::from_secs(60);
const DOMAIN: &str = "example.org";
const MYHOSTNAME: &str = "mx.example.org";
const HELO: &str = "client.example.test";
const SENDER: &str = "sender@example.net";

// ---------------------------------------------------------------------------------
// Progress, privileges, peers
// ---------------------------------------------------------------------------------

fn started() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

/// One line per step on stderr, so a failure says how far the deployment got.
fn step(what: &str) {
    eprintln!(
        "[deployment {:6.1}s] {what}",
        started().elapsed().as_secs_f64()
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// The service user, created for this test and removed when dropped.
struct ServiceUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl ServiceUser {
    fn create() -> ServiceUser {
        let useradd = require("useradd", "passwd");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let suffix = format!(
            "{:06x}",
            ((nanos as u64) ^ (u64::from(std::process::id()) << 20)) & 0xff_ffff
        );
        let name = format!("correio-test-{suffix}");
        // useradd locks /etc/passwd: another test creating its user at the same moment
        // makes it fail with "cannot lock"; try again a few times.
        let mut last = String::new();
        for _ in 0..10 {
            let out = Command::new(&useradd)
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .output()
                .expect("run useradd");
            if out.status.success() {
                let (uid, gid) = passwd_ids(&name).expect("the new user is in /etc/passwd");
                step(&format!(
                    "service user {name} created (uid {uid}, gid {gid})"
                ));
                return ServiceUser { name, uid, gid };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// A shell command run as this user (real and effective ids, no supplementary
    /// groups), for checking what the service user can read and write.
    fn sh(&self, script: &str) -> Run {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).uid(self.uid).gid(self.gid);
        run_bounded(c, None, Duration::from_secs(20))
    }
}

impl Drop for ServiceUser {
    fn drop(&mut self) {
        let out = Command::new(require("userdel", "passwd"))
            .arg(&self.name)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "userdel {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("userdel {}: {e}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------------
// Bounded runs, signals
// ---------------------------------------------------------------------------------

/// Sends `sig` (e.g. "HUP") to one process, by PID.
fn kill(sig: &str, pid: u32) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `cmd` in its own process group with `stdin` (or nothing) as input, killing that
/// group (and only it) if it is not done within `limit` (output in files under the
/// temp dir, removed again).
fn run_bounded(cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Run {
    run_bounded_input(cmd, stdin, limit, &std::env::temp_dir())
}

/// `correio ARGS` with `stdin`; it must succeed.
fn correio_ok(args: &[&str], stdin: &[u8]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args);
    let r = run_bounded(c, Some(stdin), LIMIT);
    assert!(r.ok(), "correio {}\n{}", args.join(" "), r.log());
    r
}

// ---------------------------------------------------------------------------------
// /proc: uids, who holds a socket
// ---------------------------------------------------------------------------------

/// Real, effective, saved and filesystem uid of `pid`.
fn uids(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes holding the server side of our TCP connection from `client_port` to
/// `server_port` (from /proc/net/tcp and /proc/PID/fd).
fn socket_holders(server_port: u16, client_port: u16) -> Vec<u32> {
    let port = |s: &str| {
        s.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let inode = fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && port(f[1]) == Some(server_port) && port(f[2]) == Some(client_port))
                .then(|| f[9].to_owned())
        });
    let Some(inode) = inode else {
        return Vec::new();
    };
    let want = format!("socket:[{inode}]");
    let mut holders = Vec::new();
    for pid in all_pids() {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if rd
            .flatten()
            .any(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
        {
            holders.push(pid);
        }
    }
    holders
}

// ---------------------------------------------------------------------------------
// The deployment's files and the server
// ---------------------------------------------------------------------------------

/// Where everything lives under the temporary root, and the ports. The configuration
/// asks for port 0; [`Serve::start`] fills in the ports the server reports it bound
/// (so no other program can take them between a choice and the bind).
struct Layout {
    root: PathBuf,
    config: PathBuf,
    data: PathBuf,
    mail: PathBuf,
    pop3: Cell<u16>,
    pop3s: Cell<u16>,
    lmtp: Cell<u16>,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            config: root.join("correio.toml"),
            data: root.join("data"),
            mail: root.join("mail"),
            pop3: Cell::new(0),
            pop3s: Cell::new(0),
            lmtp: Cell::new(0),
        }
    }

    fn cert(&self) -> PathBuf {
        self.data.join("tls/cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.data.join("tls/key.pem")
    }

    fn config_s(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    /// The configuration an admin writes. `expire` is a TOML value ("\"never\"", "0");
    /// `tls` overrides the default pair under `data_dir`.
    fn config_text(&self, svc: &str, expire: &str, tls: Option<(&Path, &Path)>) -> String {
        let mut t = format!(
            "# Correio, as deployed by crates/cli/tests/deployment.rs\n\
             data_dir = \"{data}\"\n\
             mail_location = \"maildir:{mail}/%d/%n\"\n\
             hostname = \"mail.{DOMAIN}\"\n\
             user = \"{svc}\"\n\
             allow_cleartext_login = false\n\
             cleartext_login_on_loopback = false\n\
             # Not loopback: a trusted network may log in without TLS.\n\
             trusted_networks = [\"192.0.2.0/24\"]\n\
             \n\
             [listen]\n\
             pop3 = [\"127.0.0.1:0\"]\n\
             pop3s = [\"127.0.0.1:0\"]\n\
             lmtp = \"127.0.0.1:0\"\n\
             \n\
             [pop3]\n\
             expire = {expire}\n\
             \n\
             [auth]\n\
             username_format = \"%Lu\"\n\
             default_domain = \"{DOMAIN}\"\n\
             failure_delay = \"1s\"\n\
             failure_delay_max = \"5s\"\n\
             \n\
             [delivery]\n\
             max_message_size = 10485760\n\
             \n\
             [limits]\n\
             shutdown_grace = \"5s\"\n",
            data = self.data.display(),
            mail = self.mail.display(),
        );
        if let Some((cert, key)) = tls {
            t.push_str(&format!(
                "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        t
    }

    /// Writes the config file atomically (the server may read it at any moment).
    /// Root-only (0600), as a config holding secrets would be: after the privilege
    /// drop the server re-reads it through its privileged helper on SIGHUP.
    fn write_config(&self, text: &str) {
        let tmp = self.root.join("correio.toml.new");
        fs::write(&tmp, text).expect("write config");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod config");
        fs::rename(&tmp, &self.config).expect("install config");
    }
}

/// `correio serve --config`: stopped (SIGTERM, then SIGKILL for it and every process
/// it started, each by PID) when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(l: &Layout) -> Serve {
        let log = l.root.join("serve.log");
        let child = Command::new(BIN)
            .args(["serve", "--config", l.config_s()])
            .current_dir(&l.root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(l.root.join("serve.stdout")).expect("stdout file"))
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start correio serve");
        let mut s = Serve { child, log };
        // The ports it bound, from its "listening" log lines.
        let deadline = Instant::now() + Duration::from_secs(20);
        for (port, message, fields) in [
            (&l.pop3, "listening", " tls=false"),
            (&l.pop3s, "listening", " tls=true"),
            (&l.lmtp, "listening for LMTP", ""),
        ] {
            loop {
                let log = fs::read_to_string(&s.log).unwrap_or_default();
                if let Some(a) = listening_addr(&log, message, fields) {
                    port.set(a.port());
                    break;
                }
                if let Some(st) = s.child.try_wait().expect("wait") {
                    panic!("correio serve exited at start ({st})\n{}", s.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "correio serve did not log \"{message}\"{fields} within 20 s\n{}",
                    s.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        format!(
            "--- correio serve log ---\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().expect("wait") {
            panic!("correio serve exited ({st})\n{}", self.log());
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.pid();
        let tree = descendants(pid);
        kill("TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for p in tree {
            if alive(p) {
                eprintln!("process {p} of correio serve survived it: killing it");
                kill("KILL", p);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// A small POP3 client over rustls, for CAPA, logins and the certificate served
// ---------------------------------------------------------------------------------

fn tls_client_config(trust: &[&Path]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for p in trust {
        for c in
            CertificateDer::pem_file_iter(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        {
            roots.add(c.expect("PEM certificate")).expect("add root");
        }
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The DER of the first certificate in a PEM file.
fn cert_der(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("read {}: {e}", pem.display()))
        .as_ref()
        .to_vec()
}

struct TlsPop {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

/// Reads one line from a plain socket, byte by byte (nothing read past it).
fn plain_line(s: &mut TcpStream) -> Result<String, String> {
    let mut l = Vec::new();
    let mut b = [0u8; 1];
    while !l.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) => return Err(format!("connection closed after {l:?}")),
            Ok(_) => l.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&l).into_owned())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

impl TlsPop {
    /// Implicit TLS (the pop3s port); returns after the greeting.
    fn implicit(port: u16, trust: &[&Path]) -> Result<TlsPop, String> {
        let mut p = Self::over(connect(port)?, trust)?;
        let g = p.line()?;
        if !g.starts_with("+OK") {
            return Err(format!("greeting: {g}"));
        }
        Ok(p)
    }

    /// The cleartext port, then STLS.
    fn stls(port: u16, trust: &[&Path]) -> Result<TlsPop, String> {
        let mut s = connect(port)?;
        let g = plain_line(&mut s)?;
        if !g.starts_with("+OK") {
            return Err(format!("greeting: {g}"));
        }
        s.write_all(b"STLS\r\n").map_err(|e| e.to_string())?;
        let r = plain_line(&mut s)?;
        if !r.starts_with("+OK") {
            return Err(format!("STLS: {r}"));
        }
        Self::over(s, trust)
    }

    fn over(s: TcpStream, trust: &[&Path]) -> Result<TlsPop, String> {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let c = rustls::ClientConnection::new(tls_client_config(trust), name)
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(c, s);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(TlsPop {
            tls,
            buf: Vec::new(),
        })
    }

    /// The certificate the server presented.
    fn peer_cert(&self) -> Vec<u8> {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .expect("a server certificate")
    }

    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&l).into_owned());
            }
            let mut tmp = [0u8; 16384];
            let k = self.tls.read(&mut tmp).map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&tmp[..k]);
        }
    }

    fn raw_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.drain(..=i).collect();
            }
            let mut tmp = [0u8; 16384];
            let k = self.tls.read(&mut tmp).expect("read");
            assert!(k > 0, "connection closed");
            self.buf.extend_from_slice(&tmp[..k]);
        }
    }

    fn cmd(&mut self, c: &str) -> String {
        self.tls
            .write_all(format!("{c}\r\n").as_bytes())
            .and_then(|()| self.tls.flush())
            .expect("send");
        self.line().expect("reply")
    }

    /// A multi-line body after its `+OK` line, unstuffed, CRLF kept, without ".".
    fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let l = self.raw_line();
            if l == b".\r\n" {
                return out;
            }
            out.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
        }
    }

    fn capa(&mut self) -> String {
        let r = self.cmd("CAPA");
        assert!(r.starts_with("+OK"), "CAPA: {r}");
        String::from_utf8_lossy(&self.body()).into_owned()
    }

    fn login(&mut self, user: &str, pass: &str) -> Result<String, String> {
        let r = self.cmd(&format!("USER {user}"));
        if !r.starts_with("+OK") {
            return Err(format!("USER: {r}"));
        }
        let r = self.cmd(&format!("PASS {pass}"));
        if !r.starts_with("+OK") {
            return Err(format!("PASS: {r}"));
        }
        Ok(r)
    }
}

// ---------------------------------------------------------------------------------
// Users, messages, expectations
// ---------------------------------------------------------------------------------

struct User {
    /// As given to `correio user add`.
    added_as: &'static str,
    /// The lower-case address (what `%Lu` makes of any spelling).
    address: &'static str,
    password: &'static str,
    scheme: &'static str,
    /// What curl and fetchmail log in with (mpop and `correio fetch` use `address`).
    login_mixed: &'static str,
    /// The name `correio deliver --user` is given, per message (cycled).
    deliver_as: &'static [&'static str],
    /// The SMTP recipient Postfix gets.
    rcpt: &'static str,
}

const USERS: [User; 3] = [
    User {
        added_as: "alice@example.org",
        address: "alice@example.org",
        password: "Alice pw 1",
        scheme: "ARGON2ID",
        login_mixed: "alice@example.org",
        deliver_as: &["alice@example.org"],
        rcpt: "alice@example.org",
    },
    User {
        added_as: "Bob.Smith@Example.Org",
        address: "bob.smith@example.org",
        password: "bob scram pw",
        scheme: "SCRAM-SHA-256",
        login_mixed: "Bob.Smith@Example.Org",
        deliver_as: &["bob.smith@example.org", "Bob.Smith@Example.Org"],
        rcpt: "Bob.Smith@Example.Org",
    },
    User {
        added_as: "carol@example.org",
        address: "carol@example.org",
        password: "carol-plain-pw",
        scheme: "PLAIN",
        login_mixed: "carol@example.org",
        deliver_as: &["carol@example.org"],
        rcpt: "carol@example.org",
    },
];

fn local_part(addr: &str) -> &str {
    addr.split_once('@').map_or(addr, |(l, _)| l)
}

fn header(name: &str, to: &str) -> String {
    format!(
        "From: Sender <{SENDER}>\nTo: {to}\nSubject: {name} for {to}\n\
         Message-ID: <{name}.{local}@deploy.example>\n\
         Date: Sun, 22 Nov 2026 04:00:00 +0000\nMIME-Version: 1.0\n",
        local = local_part(to).to_ascii_lowercase(),
    )
}

/// What `correio deliver` gets for one user: (name, message with LF line ends,
/// envelope sender given with -f). Dot lines, `From ` lines, 8-bit bytes, long lines;
/// alice also gets a 300 KB message.
fn deliver_corpus(u: &User) -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let to = u.address;
    let mut v: Vec<(&'static str, Vec<u8>, Option<&'static str>)> = Vec::new();
    let mut push = |name: &'static str, body: &[u8], sender| {
        let mut m = header(name, to).into_bytes();
        m.extend_from_slice(body);
        v.push((name, m, sender));
    };
    push(
        "plain",
        b"Content-Type: text/plain; charset=us-ascii\n\nHello,\n\nplain LF-only text.\n-- \nSender\n",
        Some(SENDER),
    );
    push(
        "dots",
        b"\n.\n..\n...\n.leading dot\n..two leading dots\n . space then dot\nmiddle\n.\n\n.\n",
        None,
    );
    push(
        "from-lines",
        b"\nFrom here on, a line starting with From:\nFrom sender@example.net Sun Nov 22 04:00:00 2026\n>From quoted\nFrom\n",
        Some("bounces+x@lists.example.net"),
    );
    let mut eight = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nOlá — ação 日本語 📬\n"
        .as_bytes()
        .to_vec();
    eight.extend_from_slice(b"latin-1: caf\xe9 \xff\xfe \x80\x81, tab:\tend\n");
    push("eight-bit", &eight, None);
    let mut long = b"\n".to_vec();
    for len in [998usize, 1000, 4000] {
        long.extend((0..len).map(|i| b"abcdefghij klmnopqrstuvwxyz0123456789."[i % 38]));
        long.push(b'\n');
    }
    push("long-lines", &long, None);
    if u.address.starts_with("alice") {
        let mut big = b"\n".to_vec();
        let mut i = 0u32;
        while big.len() < 300_000 {
            match i % 11 {
                0 => big.extend_from_slice(b".\n"),
                3 => big.extend_from_slice(format!(".dot line {i}\n").as_bytes()),
                5 => big.extend_from_slice(format!("From line {i}\n").as_bytes()),
                _ => big.extend_from_slice(
                    format!("line {i}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
                ),
            }
            i += 1;
        }
        push("big", &big, Some(SENDER));
    }
    v
}

/// The messages Postfix carries, CRLF: one to all three users in one transaction (so
/// the LMTP server answers per recipient), and one 8-bit message to each.
fn postfix_to_all() -> Vec<u8> {
    let mut m = "From: Sender <sender@example.net>\r\nTo: everyone@example.org\r\n\
                 Subject: via postfix to all\r\nMessage-ID: <pf-all@deploy.example>\r\n\
                 Date: Sun, 22 Nov 2026 05:00:00 +0000\r\n\r\n"
        .as_bytes()
        .to_vec();
    m.extend_from_slice(
        b".\r\n..\r\n.leading dot\r\nFrom a line\r\nend with dot.\r\n . space first\r\nlast\r\n",
    );
    m
}

fn postfix_8bit(u: &User) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <{SENDER}>\r\nTo: {rcpt}\r\nSubject: via postfix 8bit\r\n\
         Message-ID: <pf-8bit.{local}@deploy.example>\r\nDate: Sun, 22 Nov 2026 05:00:01 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n",
        rcpt = u.rcpt,
        local = local_part(u.address),
    )
    .into_bytes();
    m.extend_from_slice("Olá, ação, Grüße, 日本語\r\n".as_bytes());
    m.extend_from_slice(b"latin-1: caf\xe9 \xff\xfe\r\n\xc3\xa9.\r\n");
    m
}

/// Checks a message that came through Postfix and the LMTP listener: before exactly
/// the bytes submitted (as LF) there are only the headers Postfix and an LDA add:
/// one `Return-Path: <SENDER>`, Postfix's `Received:` for `qid`, possibly a
/// `Delivered-To:`.
fn check_via_postfix(stored: &[u8], sent: &[u8], qid: &str) -> Result<(), String> {
    let want = crlf_to_lf(sent);
    if !stored.ends_with(&want) {
        return Err(format!(
            "does not end with the {} bytes submitted: {}",
            want.len(),
            show_diff(&want, &stored[stored.len().saturating_sub(want.len())..])
        ));
    }
    let added = String::from_utf8_lossy(&stored[..stored.len() - want.len()]).into_owned();
    let mut fields: Vec<String> = Vec::new();
    for line in added.lines() {
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some(f) => {
                    f.push(' ');
                    f.push_str(line.trim());
                }
                None => return Err(format!("added text starts with a continuation: {added}")),
            }
        } else {
            fields.push(line.to_owned());
        }
    }
    let named = |n: &str| -> Vec<&String> {
        fields
            .iter()
            .filter(|f| {
                f.split_once(':')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case(n))
            })
            .collect()
    };
    let rp = named("Return-Path");
    if rp.len() != 1 || rp[0] != &format!("Return-Path: <{SENDER}>") {
        return Err(format!("want one Return-Path: <{SENDER}>; added:\n{added}"));
    }
    let received = named("Received");
    let postfix = format!("by {MYHOSTNAME} (Postfix) with ESMTP id {qid}");
    if !received.iter().any(|r| {
        r.starts_with(&format!("Received: from {HELO} (unknown [127.0.0.1])"))
            && r.contains(&postfix)
    }) {
        return Err(format!(
            "no Received header from Postfix ({postfix}); added:\n{added}"
        ));
    }
    let known = rp.len() + received.len() + named("Delivered-To").len();
    if known != fields.len() || named("Delivered-To").len() > 1 {
        return Err(format!(
            "headers other than Return-Path, Received, Delivered-To added:\n{added}"
        ));
    }
    Ok(())
}

/// Asserts that `got` holds each of `want` exactly once, byte for byte, and nothing
/// else (as peers_fixtures::assert_same_messages, and as many as `want`). A wanted
/// message is named by its Subject.
fn assert_same(what: &str, want: &[Vec<u8>], got: &[Vec<u8>]) {
    let names: Vec<String> = want.iter().map(|w| subject(w)).collect();
    let labels: Vec<String> = (1..=got.len()).map(|i| format!("message {i}")).collect();
    let want_named: Vec<(&str, &[u8])> = names
        .iter()
        .zip(want)
        .map(|(n, w)| (n.as_str(), w.as_slice()))
        .collect();
    let got_labelled: Vec<(&str, &[u8])> = labels
        .iter()
        .zip(got)
        .map(|(l, g)| (l.as_str(), g.as_slice()))
        .collect();
    let problems = message_problems(&want_named, &got_labelled);
    assert!(
        problems.is_empty() && got.len() == want.len(),
        "{what}: got {} messages, want {}; problems:\n{}",
        got.len(),
        want.len(),
        problems.join("\n")
    );
}

/// The one Maildir of a user under `<mail>/example.org/` (`%d/%n`): found by its local
/// part in any letter case, and there must be exactly one (a second spelling would
/// split a user's mail over two mailboxes).
fn user_maildir(l: &Layout, u: &User) -> PathBuf {
    let dom = l.mail.join(DOMAIN);
    let local = local_part(u.address);
    let hits: Vec<PathBuf> = fs::read_dir(&dom)
        .unwrap_or_else(|e| {
            panic!(
                "no {} ({e}): mail_location maildir:{}/%d/%n not honoured? {}",
                dom.display(),
                l.mail.display(),
                tree(&l.root)
            )
        })
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(local))
        .map(|e| e.path())
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{}: want exactly one Maildir for {local} under {}: {hits:?}",
        u.added_as,
        dom.display()
    );
    hits.into_iter().next().expect("one")
}

/// Every file in a Maildir's new/ and cur/, sorted.
fn stored(dir: &Path) -> Vec<Vec<u8>> {
    fetch_support::maildir_messages(dir)
}

/// A listing of `dir` with owners and modes, for failure messages.
fn tree(dir: &Path) -> String {
    let mut c = Command::new("ls");
    c.arg("-lanR").arg(dir);
    run_bounded(c, None, Duration::from_secs(10)).stdout
}

// ---------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Tls {
    /// The cleartext port, STLS required.
    Stls,
    /// The pop3s port.
    Implicit,
}

/// curl: LIST, then every message (RETR n) in one run; returns the CRLF messages.
fn curl_fetch(l: &Layout, cert: &Path, login: &str, pass: &str, tls: Tls) -> Vec<Vec<u8>> {
    let base = match tls {
        Tls::Stls => format!("pop3://localhost:{}/", l.pop3.get()),
        Tls::Implicit => format!("pop3s://localhost:{}/", l.pop3s.get()),
    };
    let curl = |extra: &[String]| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", "--cacert"])
            .arg(cert)
            .arg("-u")
            .arg(format!("{login}:{pass}"));
        if tls == Tls::Stls {
            c.arg("--ssl-reqd");
        }
        c.args(extra);
        run_bounded(c, None, LIMIT)
    };
    let r = curl(std::slice::from_ref(&base));
    assert!(r.ok(), "curl LIST {base} as {login}\n{}", r.log());
    let numbers: Vec<(u32, usize)> = r
        .stdout
        .lines()
        .filter_map(|line| {
            let (n, s) = line.trim().split_once(' ')?;
            Some((n.parse().ok()?, s.trim().parse().ok()?))
        })
        .collect();
    assert!(!numbers.is_empty(), "curl LIST as {login}: {}", r.log());
    let out = l
        .root
        .join("clients")
        .join(format!("curl-{}-{tls:?}", local_part(login)));
    fs::create_dir_all(&out).expect("mkdir");
    let mut args = Vec::new();
    for (n, _) in &numbers {
        args.push("-o".to_owned());
        args.push(out.join(format!("{n:04}")).display().to_string());
        args.push(format!("{base}{n}"));
    }
    let r = curl(&args);
    assert!(r.ok(), "curl RETR as {login} ({tls:?})\n{}", r.log());
    let mut got = Vec::new();
    for (n, size) in &numbers {
        let m = fs::read(out.join(format!("{n:04}"))).expect("curl output file");
        // RFC 1939 / PROTOCOL.md: the LIST size is exactly what RETR sends.
        assert_eq!(m.len(), *size, "curl as {login}: LIST size of message {n}");
        got.push(m);
    }
    got
}

/// mpop (as peers_mpop.rs configures it), keep on, into a fresh Maildir.
fn mpop_fetch(l: &Layout, cert: &Path, login: &str, pass: &str, tls: Tls) -> Vec<Vec<u8>> {
    require("mpop", "mpop");
    let dir = l
        .root
        .join("clients")
        .join(format!("mpop-{}-{tls:?}", local_part(login)));
    let md = dir.join("Maildir");
    make_maildir(&md);
    let (port, starttls) = match tls {
        Tls::Stls => (l.pop3.get(), "on"),
        Tls::Implicit => (l.pop3s.get(), "off"),
    };
    let rc = dir.join("mpoprc");
    write_private(
        &rc,
        &format!(
            "defaults\ntimeout 30\naccount test\nhost localhost\nport {port}\n\
             user {login}\npassword {pass}\ntls on\ntls_starttls {starttls}\n\
             tls_trust_file {cert}\ndelivery maildir {md}\nkeep on\n\
             uidls_file {uidls}\nreceived_header off\n",
            cert = cert.display(),
            md = md.display(),
            uidls = dir.join("uidls").display(),
        ),
    );
    let mut c = Command::new("mpop");
    c.env("HOME", &dir)
        .env("LC_ALL", "C")
        .env("TMPDIR", &dir)
        .arg("-C")
        .arg(&rc)
        .args(["--debug", "test"]);
    let r = run_bounded(c, None, LIMIT);
    assert!(r.ok(), "mpop as {login} ({tls:?})\n{}", r.log());
    let sent_stls = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .any(|l| l == "--> STLS");
    assert_eq!(sent_stls, tls == Tls::Stls, "mpop and STLS\n{}", r.log());
    stored(&md)
}

/// fetchmail (as peers_fetchmail.rs configures it: an MDA writing one file per
/// message, `set invisible`, `no rewrite`, `sslcertck`), keep.
fn fetchmail_fetch(l: &Layout, cert: &Path, login: &str, pass: &str, tls: Tls) -> Vec<Vec<u8>> {
    require("fetchmail", "fetchmail");
    let dir = l
        .root
        .join("clients")
        .join(format!("fetchmail-{}-{tls:?}", local_part(login)));
    let out = dir.join("mda-out");
    fs::create_dir_all(&out).expect("mkdir");
    let (port, tls_opts) = match tls {
        Tls::Stls => (l.pop3.get(), "sslproto 'TLS1.2+'"),
        Tls::Implicit => (l.pop3s.get(), "ssl"),
    };
    let rc = dir.join("fetchmailrc");
    write_private(
        &rc,
        &format!(
            "set no syslog\nset no bouncemail\nset invisible\n\
             poll localhost with proto POP3 port {port} timeout 30 uidl\n\
             \tuser \"{login}\" there with password \"{pass}\"\n\
             \t{tls_opts} sslcertck sslcertfile \"{cert}\"\n\
             \tno rewrite\n\
             \tmda \"cat > $(mktemp {out}/msg.XXXXXXXXXX)\"\n\
             \tkeep\n",
            cert = cert.display(),
            out = out.display(),
        ),
    );
    let mut c = Command::new("fetchmail");
    // As root, fetchmail would switch the MDA to the user named in these variables, and
    // share /var/run/fetchmail.pid with every other run: keep it to itself.
    c.env_remove("FETCHMAILUSER")
        .env_remove("LOGNAME")
        .env_remove("USER")
        .env("HOME", &dir)
        .env("LC_ALL", "C")
        .env("FETCHMAILHOME", &dir)
        .env("TMPDIR", &dir)
        .arg("-f")
        .arg(&rc)
        .arg("--pidfile")
        .arg(dir.join("fetchmail.pid"))
        .arg("--idfile")
        .arg(dir.join("fetchids"))
        .args(["--nodetach", "-v", "-v", "localhost"]);
    let r = run_bounded(c, None, LIMIT);
    assert_eq!(
        r.status.code(),
        Some(0),
        "fetchmail as {login} ({tls:?})\n{}",
        r.log()
    );
    assert!(
        !r.stdout.contains("was not the expected length"),
        "LIST size differs from the message fetchmail received\n{}",
        r.log()
    );
    let sent_stls = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .any(|l| l.split_once("POP3> ").is_some_and(|(_, c)| c == "STLS"));
    assert_eq!(
        sent_stls,
        tls == Tls::Stls,
        "fetchmail and STLS\n{}",
        r.log()
    );
    dir_files(&out).into_iter().map(|(_, b)| b).collect()
}

/// `correio fetch` with its defaults but for the one-off account's flags, into a fresh
/// Maildir.
fn correio_fetch(l: &Layout, cert: &Path, login: &str, pass: &str, tls: Tls) -> Vec<Vec<u8>> {
    let dir = l
        .root
        .join("clients")
        .join(format!("correio-fetch-{}-{tls:?}", local_part(login)));
    let state = dir.join("state");
    fs::create_dir_all(&state).expect("mkdir");
    let md = dir.join("Maildir");
    let (port, mode) = match tls {
        Tls::Stls => (l.pop3.get(), "starttls"),
        Tls::Implicit => (l.pop3s.get(), "implicit"),
    };
    let mut c = fetch_support::fetch_cmd(
        "localhost",
        port,
        login,
        pass,
        &state,
        &[
            "--tls",
            mode,
            "--ca",
            cert.to_str().expect("utf-8"),
            "--to",
            &format!("maildir:{}", md.display()),
            "--json",
        ],
    );
    c.current_dir(&dir);
    let r = run_bounded(c, None, LIMIT);
    assert!(r.ok(), "correio fetch as {login} ({tls:?})\n{}", r.log());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("correio fetch --json: {e}\n{}", r.log()));
    let got = stored(&md);
    assert_eq!(
        fetch_support::summary(&v)["fetched"].as_u64(),
        Some(got.len() as u64),
        "{v}"
    );
    got
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

/// What the steps of the deployment share.
struct Site<'a> {
    svc: &'a ServiceUser,
    l: &'a Layout,
    /// The config file's path, as given to `--config`.
    cfg: &'a str,
    /// A copy of the certificate `correio cert` made (the new one replaces it).
    first_cert: PathBuf,
}

/// Per user (in `USERS` order), the messages with LF line ends.
type Messages = Vec<Vec<Vec<u8>>>;

/// The whole deployment, in the order of issue #9.
#[test]
fn deployment_as_an_admin_does_it() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    started();
    for (p, pkg) in [
        ("curl", "curl"),
        ("mpop", "mpop"),
        ("fetchmail", "fetchmail"),
        ("postfix", "postfix"),
    ] {
        require(p, pkg);
    }
    // Dropped last: by then every process of the service user is gone.
    let svc = ServiceUser::create();
    let root_dir = tempfile::Builder::new()
        .prefix("correio-deploy-")
        .tempdir()
        .expect("tempdir");
    // tempfile makes 0700: the service user must be able to traverse the root.
    fs::set_permissions(root_dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let l = Layout::new(root_dir.path());
    l.write_config(&l.config_text(&svc.name, "\"never\"", None));
    step(&format!("config {}", l.config.display()));
    let site = Site {
        svc: &svc,
        l: &l,
        cfg: l.config_s(),
        first_cert: l.root.join("first-cert.pem"),
    };

    let (maildirs, delivered) = install(&site);
    step("correio serve --config");
    let mut srv = Serve::start(&l);
    step(&format!(
        "listening: pop3 {}, pop3s {}, lmtp {}",
        l.pop3.get(),
        l.pop3s.get(),
        l.lmtp.get()
    ));
    let serving_pid = session_process(&site, &srv);
    step(&format!(
        "sessions run as {} in process {serving_pid} (serve is {})",
        svc.name,
        srv.pid()
    ));
    let mut p = TlsPop::implicit(l.pop3s.get(), &[&site.first_cert]).expect("pop3s");
    let c = p.capa();
    assert!(c.contains("EXPIRE NEVER"), "CAPA before the reload:\n{c}");
    p.cmd("QUIT");

    let expected = postfix_delivers(&site, &srv, &maildirs, &delivered);
    every_client_fetches_everything(&site, &expected);
    srv.assert_running();
    reload_users_and_expire(&site, &mut srv, expected[2].len());
    assert_eq!(
        session_process(&site, &srv),
        serving_pid,
        "another process serves sessions after SIGHUP (restarted?)"
    );
    reload_root_only_certificate(&site, &mut srv, &expected[0]);
    assert_eq!(
        session_process(&site, &srv),
        serving_pid,
        "another process serves sessions after SIGHUP (restarted?)"
    );
    cleartext_login_is_refused(&site);
    stop(srv);
    step("done");
}

/// `correio cert`, `correio user add` (three schemes), `correio deliver -f`, then
/// checks that what root made is usable by the service user, and `correio check`.
/// Returns each user's Maildir and what was delivered to it.
fn install(s: &Site) -> (Vec<PathBuf>, Messages) {
    let (l, cfg) = (s.l, s.cfg);
    step("correio cert --config");
    let r = correio_ok(&["cert", "--config", cfg], b"");
    assert!(
        l.cert().is_file() && l.key().is_file(),
        "correio cert --config did not write {} and {}\n{}\n{}",
        l.cert().display(),
        l.key().display(),
        r.log(),
        tree(&l.root)
    );
    fs::copy(l.cert(), &s.first_cert).expect("keep a copy of the first certificate");

    for u in &USERS {
        step(&format!(
            "correio user add {} --scheme {}",
            u.added_as, u.scheme
        ));
        correio_ok(
            &[
                "user",
                "add",
                u.added_as,
                "--config",
                cfg,
                "--password-stdin",
                "--scheme",
                u.scheme,
            ],
            format!("{}\n", u.password).as_bytes(),
        );
    }
    let r = correio_ok(&["user", "list", "--config", cfg], b"");
    for u in &USERS {
        let line = r
            .stdout
            .lines()
            .find(|line| {
                line.split('\t')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(u.address))
            })
            .unwrap_or_else(|| panic!("{} not in `correio user list`:\n{}", u.address, r.stdout));
        assert!(line.contains(u.scheme), "{line}");
    }

    let mut delivered: Messages = Vec::new();
    for u in &USERS {
        let mut want = Vec::new();
        for (i, (name, msg, sender)) in deliver_corpus(u).into_iter().enumerate() {
            let to = u.deliver_as[i % u.deliver_as.len()];
            step(&format!("correio deliver --user {to} ({name})"));
            let mut args = vec!["deliver", "--config", cfg, "--user", to];
            if let Some(sender) = sender {
                args.extend(["-f", sender]);
            }
            correio_ok(&args, &msg);
            let mut expect = match sender {
                Some(sender) => format!("Return-Path: <{sender}>\n").into_bytes(),
                None => Vec::new(),
            };
            expect.extend_from_slice(&msg);
            want.push(expect);
        }
        delivered.push(want);
    }
    let maildirs: Vec<PathBuf> = USERS.iter().map(|u| user_maildir(l, u)).collect();
    for ((u, md), want) in USERS.iter().zip(&maildirs).zip(&delivered) {
        assert_same(
            &format!(
                "{}: what correio deliver stored in {}",
                u.address,
                md.display()
            ),
            want,
            &stored(md),
        );
    }

    step("files made by root are usable by the service user");
    let r = s.svc.sh(&format!(
        "for f in '{users}' '{cert}' '{key}'; do test -r \"$f\" || echo \"cannot read $f\"; done; \
         find '{mail}' -type d \\( ! -readable -o ! -writable -o ! -executable \\) -printf 'directory not rwx: %p\\n' \
              -o -type f ! -readable -printf 'file not readable: %p\\n'",
        users = l.data.join("users").display(),
        cert = l.cert().display(),
        key = l.key().display(),
        mail = l.mail.display(),
    ));
    assert!(
        r.ok() && r.stdout.trim().is_empty(),
        "as {}: {}\n{}",
        s.svc.name,
        r.log(),
        tree(&l.root)
    );

    step("correio check --config");
    correio_ok(&["check", "--config", cfg], b"");
    (maildirs, delivered)
}

/// The process serving a new session, after checking that every process holding it
/// runs as the service user with no way back to root (real, effective, saved and
/// filesystem uid).
fn session_process(s: &Site, srv: &Serve) -> u32 {
    let mut conn = connect(s.l.pop3.get()).expect("connect");
    let g = plain_line(&mut conn).expect("greeting");
    assert!(g.starts_with("+OK"), "{g}");
    let me = conn.local_addr().expect("addr").port();
    let holders = socket_holders(s.l.pop3.get(), me);
    assert!(
        !holders.is_empty(),
        "no process holds the server side of the session\n{}",
        srv.log()
    );
    for &p in &holders {
        assert_eq!(
            uids(p),
            vec![s.svc.uid; 4],
            "process {p} serving a session: real, effective, saved and fs uid must all be {} ({})",
            s.svc.uid,
            s.svc.name
        );
    }
    let _ = conn.write_all(b"QUIT\r\n");
    holders[0]
}

/// A private Postfix gets one message for all three users and one 8-bit message for
/// each, and hands them to the LMTP listener. Checks what was stored and returns each
/// user's whole maildrop: what every client must fetch.
fn postfix_delivers(s: &Site, srv: &Serve, maildirs: &[PathBuf], delivered: &Messages) -> Messages {
    step("postfix start");
    let pf = Postfix::start(
        &s.l.root.join("postfix"),
        &PostfixConfig {
            myhostname: MYHOSTNAME,
            domain: DOMAIN,
            lmtp: SocketAddr::from(([127, 0, 0, 1], s.l.lmtp.get())).into(),
        },
    );
    let mut smtp = Smtp::connect(pf.smtp_addr(), HELO);
    let to_all = postfix_to_all();
    let rcpts: Vec<&str> = USERS.iter().map(|u| u.rcpt).collect();
    let q_all = queue_id(&smtp.send(SENDER, &rcpts, &to_all, true));
    let q_8bit: Vec<(String, Vec<u8>)> = USERS
        .iter()
        .map(|u| {
            let m = postfix_8bit(u);
            (queue_id(&smtp.send(SENDER, &[u.rcpt], &m, true)), m)
        })
        .collect();
    assert!(smtp.cmd("QUIT").starts_with("221"));
    step("waiting for Postfix to deliver over LMTP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = pf.log();
        let done = maildirs
            .iter()
            .zip(delivered)
            .all(|(md, want)| stored(md).len() >= want.len() + 2)
            && log.matches("status=sent").count() >= 2 * USERS.len();
        if done {
            break;
        }
        assert!(
            !log.contains("status=bounced") && !log.contains("status=deferred"),
            "Postfix could not deliver to the LMTP listener:\n{log}\n{}",
            srv.log()
        );
        assert!(
            Instant::now() < deadline,
            "Postfix did not deliver within 30 s:\n{log}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut expected: Messages = Vec::new();
    for (i, ((u, md), want)) in USERS.iter().zip(maildirs).zip(delivered).enumerate() {
        assert_eq!(
            user_maildir(s.l, u),
            *md,
            "{}: a second Maildir appeared",
            u.address
        );
        let files = stored(md);
        let mut rest: Vec<Vec<u8>> = files.clone();
        for w in want {
            let at = rest.iter().position(|f| f == w).unwrap_or_else(|| {
                panic!(
                    "{}: {:?} no longer stored as delivered",
                    u.address,
                    subject(w)
                )
            });
            rest.remove(at);
        }
        assert_eq!(rest.len(), 2, "{}: want 2 messages from Postfix", u.address);
        for f in &rest {
            let text = String::from_utf8_lossy(f);
            let (sent, qid) = if text.contains("<pf-all@deploy.example>") {
                (&to_all, &q_all)
            } else {
                (&q_8bit[i].1, &q_8bit[i].0)
            };
            check_via_postfix(f, sent, qid)
                .unwrap_or_else(|e| panic!("{}: a message from Postfix: {e}", u.address));
        }
        expected.push(files);
    }
    expected
}

/// curl, mpop, fetchmail and `correio fetch`, for every user, over STLS and over
/// implicit TLS, each bring every message once, byte-exact. All keep the mail.
fn every_client_fetches_everything(s: &Site, expected: &Messages) {
    type Client = fn(&Layout, &Path, &str, &str, Tls) -> Vec<Vec<u8>>;
    // (name, client, logs in with the lower-case address rather than `login_mixed`)
    let clients: [(&str, Client, bool); 4] = [
        ("curl", curl_fetch as Client, false),
        ("mpop", mpop_fetch as Client, true),
        ("fetchmail", fetchmail_fetch as Client, false),
        ("correio fetch", correio_fetch as Client, true),
    ];
    let cert = s.l.cert();
    for (u, want) in USERS.iter().zip(expected) {
        let want_crlf: Vec<Vec<u8>> = want.iter().map(|m| lf_to_crlf(m)).collect();
        for (name, client, lower_case_login) in clients {
            for tls in [Tls::Stls, Tls::Implicit] {
                let login = if lower_case_login {
                    u.address
                } else {
                    u.login_mixed
                };
                let what = format!("{name} as {login} over {tls:?}");
                step(&what);
                let got = client(s.l, &cert, login, u.password, tls);
                if name == "curl" {
                    assert_same(&what, &want_crlf, &got);
                } else {
                    assert_same(&what, want, &got);
                }
            }
        }
        assert_eq!(
            stored(&user_maildir(s.l, u)).len(),
            want.len(),
            "{}: kept everywhere, yet mail is gone",
            u.address
        );
    }
}

/// A fourth user is added and `expire` goes from "never" to 0; after SIGHUP both are
/// in force, and a session opened before the reload lives on.
fn reload_users_and_expire(s: &Site, srv: &mut Serve, carol_messages: usize) {
    const DAVE: &str = "dave@example.org";
    const DAVE_PW: &str = "dave pw 4";
    let l = s.l;
    let trust: [&Path; 1] = [&s.first_cert];
    step("correio user add dave@example.org; expire = 0; SIGHUP");
    correio_ok(
        &["user", "add", DAVE, "--config", s.cfg, "--password-stdin"],
        format!("{DAVE_PW}\n").as_bytes(),
    );
    let dave_msg = [header("for-dave", DAVE).as_bytes(), b"\nhello dave\n.\n"].concat();
    correio_ok(&["deliver", "--config", s.cfg, "--user", DAVE], &dave_msg);
    // A restart would end this session.
    let carol = &USERS[2];
    let mut held = TlsPop::implicit(l.pop3s.get(), &trust).expect("pop3s");
    held.login(carol.address, carol.password)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", carol.address, srv.log()));
    l.write_config(&l.config_text(&s.svc.name, "0", None));
    assert!(kill("HUP", srv.pid()), "kill -HUP {}", srv.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        srv.assert_running();
        let c = TlsPop::implicit(l.pop3s.get(), &trust).map(|mut p| {
            let c = p.capa();
            p.cmd("QUIT");
            c
        });
        if c.as_ref().is_ok_and(|c| c.contains("EXPIRE 0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CAPA does not show EXPIRE 0 10 s after SIGHUP: {c:?}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut p = TlsPop::stls(l.pop3.get(), &trust).expect("STLS");
    let c = p.capa();
    assert!(
        c.contains("EXPIRE 0"),
        "CAPA after STLS, after the reload:\n{c}"
    );
    p.login(DAVE, DAVE_PW)
        .unwrap_or_else(|e| panic!("the fourth user after SIGHUP: {e}\n{}", srv.log()));
    let r = p.cmd("RETR 1");
    assert!(r.starts_with("+OK"), "RETR 1: {r}");
    assert_eq!(p.body(), lf_to_crlf(&dave_msg), "dave's message");
    assert!(p.cmd("QUIT").starts_with("+OK"));
    // EXPIRE 0: what a session retrieved is gone after its QUIT.
    let mut p = TlsPop::implicit(l.pop3s.get(), &trust).expect("pop3s");
    p.login(DAVE, DAVE_PW).expect("dave again");
    let stat = p.cmd("STAT");
    assert!(
        stat.starts_with("+OK 0 "),
        "EXPIRE 0 in force: the message dave retrieved should be gone: {stat}"
    );
    p.cmd("QUIT");
    let r = held.cmd("NOOP");
    assert!(r.starts_with("+OK"), "session opened before SIGHUP: {r}");
    assert!(held.cmd("QUIT").starts_with("+OK"));
    assert_eq!(
        stored(&user_maildir(l, carol)).len(),
        carol_messages,
        "{}'s session retrieved nothing: nothing may expire",
        carol.address
    );
    srv.assert_running();
}

/// A new pair is installed over the configured paths, its key root:root 0600 (as a
/// renewal tool leaves it); after SIGHUP new connections get the new certificate, on
/// both ports, and curl trusts it and no longer the first one.
fn reload_root_only_certificate(s: &Site, srv: &mut Serve, alice_messages: &[Vec<u8>]) {
    let l = s.l;
    step("new certificate with a root-only key; SIGHUP");
    let renew = l.root.join("renew");
    fs::create_dir_all(&renew).expect("mkdir");
    let renew_cfg = renew.join("renew.toml");
    let (new_cert, new_key) = (renew.join("cert.pem"), renew.join("key.pem"));
    fs::write(
        &renew_cfg,
        format!(
            "data_dir = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            renew.display(),
            new_cert.display(),
            new_key.display()
        ),
    )
    .expect("renew config");
    let r = correio_ok(
        &[
            "cert",
            "--config",
            renew_cfg.to_str().expect("utf-8"),
            "--force",
        ],
        b"",
    );
    eprintln!("{}", r.stdout.trim_end());
    for (p, mode) in [(&new_cert, 0o644), (&new_key, 0o600)] {
        std::os::unix::fs::chown(p, Some(0), Some(0)).expect("chown root:root");
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::rename(&new_cert, l.cert()).expect("install cert");
    fs::rename(&new_key, l.key()).expect("install key");
    let r = s.svc.sh(&format!("cat '{}' >/dev/null", l.key().display()));
    assert!(
        !r.ok(),
        "the service user can read the new key: the test's premise is wrong"
    );
    let new_der = cert_der(&l.cert());
    assert_ne!(new_der, cert_der(&s.first_cert));
    assert!(kill("HUP", srv.pid()), "kill -HUP {}", srv.pid());
    let cert = l.cert();
    let both: [&Path; 2] = [&s.first_cert, &cert];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        srv.assert_running();
        let seen = TlsPop::implicit(l.pop3s.get(), &both).map(|mut p| {
            p.cmd("QUIT");
            p.peer_cert()
        });
        if seen.as_ref().is_ok_and(|d| *d == new_der) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pop3s still presents the first certificate (or fails: {:?}) 10 s after SIGHUP\n{}",
            seen.err(),
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = TlsPop::stls(l.pop3.get(), &both).expect("STLS after the new certificate");
    assert!(
        p.peer_cert() == new_der,
        "STLS presents the first certificate"
    );
    drop(p);
    let alice = &USERS[0];
    let got = curl_fetch(l, &cert, alice.address, alice.password, Tls::Implicit);
    let want: Vec<Vec<u8>> = alice_messages.iter().map(|m| lf_to_crlf(m)).collect();
    assert_same("curl with the new certificate", &want, &got);
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&s.first_cert)
        .arg("-u")
        .arg(format!("{}:{}", alice.address, alice.password))
        .arg(format!("pop3s://localhost:{}/", l.pop3s.get()));
    let r = run_bounded(c, None, LIMIT);
    assert!(
        !r.ok(),
        "curl still accepts the first certificate\n{}",
        r.log()
    );
    srv.assert_running();
}

/// No login on the cleartext port without STLS, from loopback too. (Last: a refused
/// login may count as a failure and slow the next logins from 127.0.0.1.)
fn cleartext_login_is_refused(s: &Site) {
    step("no login without TLS");
    let carol = &USERS[2];
    let mut conn = connect(s.l.pop3.get()).expect("connect");
    plain_line(&mut conn).expect("greeting");
    conn.write_all(format!("USER {}\r\n", carol.address).as_bytes())
        .expect("send");
    let r = plain_line(&mut conn).expect("reply");
    if r.starts_with("+OK") {
        conn.write_all(format!("PASS {}\r\n", carol.password).as_bytes())
            .expect("send");
        let r = plain_line(&mut conn).expect("reply");
        assert!(r.starts_with("-ERR"), "cleartext login accepted: {r}");
    }
    let _ = conn.write_all(b"QUIT\r\n");
}

/// SIGTERM: exit status 0, no process of the server left, no password in its log.
fn stop(mut srv: Serve) {
    step("SIGTERM");
    let mut tree = descendants(srv.pid());
    tree.push(srv.pid());
    assert!(kill("TERM", srv.pid()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = srv.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "no stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", srv.log());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tree.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = tree.into_iter().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "processes of correio serve outlived it: {left:?}"
    );
    let log = srv.log();
    for u in &USERS {
        assert!(!log.contains(u.password), "a password in the log");
    }
}

/// `serve` with its certificate missing: exits non-zero, naming the path.
#[test]
fn serve_without_its_certificate_exits_naming_the_path() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = ServiceUser::create();
    let root_dir = tempfile::Builder::new()
        .prefix("correio-nocert-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(root_dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let l = Layout::new(root_dir.path());
    let cert = l.root.join("etc/no-such-dir/cert.pem");
    let key = l.root.join("etc/no-such-dir/key.pem");
    l.write_config(&l.config_text(&svc.name, "\"never\"", Some((&cert, &key))));
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", l.config_s()])
        .current_dir(&l.root);
    let r = run_bounded(c, None, Duration::from_secs(20));
    assert!(
        !r.ok(),
        "serve started without its certificate\n{}",
        r.log()
    );
    assert!(
        r.stderr.contains(&cert.display().to_string()),
        "the message does not name {}\n{}",
        cert.display(),
        r.log()
    );
    assert!(
        !cert.exists(),
        "serve invented a certificate at a configured path"
    );
}
