//! Test support: third-party daemons started on loopback for integration tests.
//!
//! [`Dovecot`] starts Dovecot's POP3 server (Debian package `dovecot-pop3d`; the LDA
//! comes with `dovecot-core`) with its own configuration in a temporary directory:
//! its own `base_dir`, a passwd-file user database, a Maildir per user, POP3 on a
//! loopback port chosen at run time and optionally POP3S with a freshly generated
//! self-signed certificate. It is stopped (by PID) when the value is dropped.
//!
//! Dovecot refuses to access mail as uid 0, so the mail belongs to `nobody`
//! (65534:65534): after writing into a user's Maildir as root, call
//! [`Dovecot::give_mail_to_owner`].
//!
//! [`Pop3`] is a tiny blocking POP3 client for checking what a server serves,
//! byte-exact, without going through Correio's own client.
//!
//! With [`DovecotConfig::imap`] it also serves IMAP, and with
//! [`DovecotConfig::oauth2_introspection_url`] it validates OAuth2 tokens through its
//! `oauth2` passdb against [`oauth_server::AuthServer`], the stand-in for Google's and
//! Microsoft's authorization servers; [`imap_reader`] reads an IMAP folder back with
//! Python's imaplib.
//!
//! [`postfix`] starts a private Postfix instance in front of an LMTP listener and
//! submits mail to it over SMTP; [`peers`] runs third-party programs with a time limit
//! and compares the messages they stored with the ones expected; [`sys`] finds
//! processes (to stop every one a daemon started, by PID) and accounts.
//!
//! [`postgres`] starts a private PostgreSQL server on loopback (stopped and started
//! again on the same data by the test), [`mariadb`] a private MariaDB server and
//! [`slapd`] a private OpenLDAP server (LDAP with StartTLS, and LDAPS).
#![forbid(unsafe_code)]

pub mod daemon;
pub mod fuzz;
pub mod imap_reader;
pub mod mariadb;
pub mod oauth_server;
pub mod peers;
pub mod postfix;
pub mod postgres;
pub mod s3;
mod service;
pub mod slapd;
pub mod sys;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The uid and gid that own the mail Dovecot serves (`nobody`/`nogroup`).
pub const MAIL_UID: u32 = 65534;
/// See [`MAIL_UID`].
pub const MAIL_GID: u32 = 65534;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct DovecotConfig {
    /// Users and their plaintext passwords.
    pub users: Vec<(String, String)>,
    /// Also listen for implicit TLS (POP3S) with a generated self-signed certificate
    /// (and allow STLS on the plain port).
    pub tls: bool,
    /// Extra lines appended to dovecot.conf (e.g. `pop3_uidl_format = %g`).
    pub extra_config: String,
    /// Also serve IMAP (Debian package `dovecot-imapd`) on a loopback port (and IMAPS
    /// with `tls`); see [`Dovecot::imap_addr`].
    pub imap: bool,
    /// Validate OAuth2 tokens (XOAUTH2, OAUTHBEARER) with Dovecot's `oauth2` passdb
    /// by RFC 7662 introspection (POST) at this URL; the `username` attribute names
    /// the user. The passwd-file passdb stays first for passwords.
    pub oauth2_introspection_url: Option<String>,
}

impl DovecotConfig {
    /// A config with one user.
    pub fn with_user(user: &str, password: &str) -> Self {
        DovecotConfig {
            users: vec![(user.to_string(), password.to_string())],
            ..Default::default()
        }
    }
}

/// A running Dovecot (POP3 only). Stopped on drop.
#[derive(Debug)]
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pop3: SocketAddr,
    pop3s: Option<SocketAddr>,
    imap: Option<SocketAddr>,
    imaps: Option<SocketAddr>,
    config_path: PathBuf,
}

/// Finds a free loopback port by binding port 0 (the port is free again when this
/// returns; the tiny race with other programs is acceptable in tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A loopback TCP port where nothing listens, for as long as this value lives: a socket
/// bound to it but not listening holds it, so connections are refused and no other
/// program can start listening there meanwhile (unlike a [`free_port`] number).
#[derive(Debug)]
pub struct RefusedPort {
    _socket: std::os::fd::OwnedFd,
    port: u16,
}

impl RefusedPort {
    /// Binds a fresh loopback port without listening on it.
    pub fn new() -> Result<RefusedPort> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let socket = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&socket, &SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = SocketAddr::try_from(rustix::net::getsockname(&socket)?)
            .map_err(|e| anyhow::anyhow!("getsockname: {e:?}"))?;
        Ok(RefusedPort {
            _socket: socket,
            port: addr.port(),
        })
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Makes `path` and everything under it owned by `uid:gid`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn require_program(path: &str, package: &str) -> Result<()> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        bail!("{path} is missing: install the Debian package {package}")
    }
}

impl Dovecot {
    /// Starts Dovecot and waits (up to 10 s) until it answers on the POP3 port.
    /// Fails loudly when Dovecot is not installed.
    pub fn start(cfg: &DovecotConfig) -> Result<Dovecot> {
        require_program("/usr/sbin/dovecot", "dovecot-pop3d (with dovecot-core)")?;
        if !Path::new("/usr/lib/dovecot/pop3").exists() {
            bail!("/usr/lib/dovecot/pop3 is missing: install the Debian package dovecot-pop3d");
        }
        let dir = tempfile::Builder::new()
            .prefix("correio-dovecot-")
            .tempdir()?;
        let root = dir.path().to_path_buf();
        // Dovecot's unprivileged processes must be able to traverse the directory.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        let mail = root.join("mail");
        let home = root.join("home");
        fs::create_dir_all(&mail)?;
        fs::create_dir_all(&home)?;
        fs::set_permissions(&mail, fs::Permissions::from_mode(0o755))?;
        chown_tree(&mail, MAIL_UID, MAIL_GID)?;
        chown_tree(&home, MAIL_UID, MAIL_GID)?;

        let mut users = String::new();
        for (u, p) in &cfg.users {
            if u.contains(':') || p.contains(':') || u.contains('\n') || p.contains('\n') {
                bail!("user names and passwords must not contain ':' or newlines");
            }
            users.push_str(&format!(
                "{u}:{{PLAIN}}{p}:{MAIL_UID}:{MAIL_GID}::{}::\n",
                home.join(u).display()
            ));
        }
        let users_path = root.join("users");
        fs::write(&users_path, users)?;
        fs::set_permissions(&users_path, fs::Permissions::from_mode(0o644))?;

        if cfg.imap && !Path::new("/usr/lib/dovecot/imap").exists() {
            bail!("/usr/lib/dovecot/imap is missing: install the Debian package dovecot-imapd");
        }
        let pop3_port = free_port()?;
        let pop3s_port = if cfg.tls { Some(free_port()?) } else { None };
        let imap_port = if cfg.imap { Some(free_port()?) } else { None };
        let imaps_port = if cfg.imap && cfg.tls {
            Some(free_port()?)
        } else {
            None
        };
        let mut conf = format!(
            "base_dir = {root}/run\n\
             state_dir = {root}/state\n\
             log_path = {root}/dovecot.log\n\
             protocols = pop3{imap_proto}\n\
             listen = 127.0.0.1\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login{oauth_mechs}\n\
             mail_location = maildir:{mail}/%u\n\
             pop3_lock_session = yes\n\
             first_valid_uid = 1\n\
             mail_privileged_group =\n\
             default_login_user = dovenull\n\
             default_internal_user = dovecot\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {users}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {pop3_port}\n  }}\n",
            root = root.display(),
            mail = mail.display(),
            users = users_path.display(),
            imap_proto = if cfg.imap { " imap" } else { "" },
            oauth_mechs = if cfg.oauth2_introspection_url.is_some() {
                " xoauth2 oauthbearer"
            } else {
                ""
            },
        );
        if let Some(p) = pop3s_port {
            conf.push_str(&format!("  inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {p}\n    ssl = yes\n  }}\n"));
        }
        conf.push_str("}\n");
        if let Some(p) = imap_port {
            conf.push_str(&format!(
                "service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {p}\n  }}\n"
            ));
            if let Some(p) = imaps_port {
                conf.push_str(&format!("  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {p}\n    ssl = yes\n  }}\n"));
            }
            conf.push_str("}\n");
        }
        if let Some(url) = &cfg.oauth2_introspection_url {
            let ext = root.join("dovecot-oauth2.conf.ext");
            fs::write(
                &ext,
                format!(
                    "introspection_mode = post\n\
                     introspection_url = {url}\n\
                     force_introspection = yes\n\
                     username_attribute = username\n\
                     active_attribute = active\n\
                     active_value = true\n"
                ),
            )?;
            fs::set_permissions(&ext, fs::Permissions::from_mode(0o644))?;
            conf.push_str(&format!(
                "passdb {{\n  driver = oauth2\n  args = {}\n}}\n",
                ext.display()
            ));
        }
        if cfg.tls {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .context("generating a self-signed certificate")?;
            let cert = root.join("cert.pem");
            let key = root.join("key.pem");
            fs::write(&cert, ck.cert.pem())?;
            fs::write(&key, ck.key_pair.serialize_pem())?;
            conf.push_str(&format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.display(),
                key.display()
            ));
        } else {
            conf.push_str("ssl = no\n");
        }
        conf.push_str(&cfg.extra_config);
        conf.push('\n');
        let config_path = root.join("dovecot.conf");
        fs::write(&config_path, conf)?;

        let child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dovecot")?;
        let mut d = Dovecot {
            dir,
            child: Some(child),
            pop3: SocketAddr::from(([127, 0, 0, 1], pop3_port)),
            pop3s: pop3s_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            imap: imap_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            imaps: imaps_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            config_path,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                self.child = None;
                bail!(
                    "dovecot exited at start ({status}): {err}\nlog:\n{}",
                    self.log()
                );
            }
            if let Ok(s) = TcpStream::connect_timeout(&self.pop3, Duration::from_millis(200)) {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok()
                    && line.starts_with("+OK")
                    && self.imap_ready()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "dovecot did not answer on {} within 10 s; log:\n{}",
                    self.pop3,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn imap_ready(&self) -> bool {
        let Some(addr) = self.imap else {
            return true;
        };
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("* OK")
    }

    /// The IMAP address, when started with `imap`.
    pub fn imap_addr(&self) -> Option<SocketAddr> {
        self.imap
    }

    /// The IMAPS (implicit TLS) address, when started with `imap` and `tls`.
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.imaps
    }

    /// The POP3 address (127.0.0.1:port).
    pub fn pop3_addr(&self) -> SocketAddr {
        self.pop3
    }

    /// The POP3S (implicit TLS) address, when started with `tls`.
    pub fn pop3s_addr(&self) -> Option<SocketAddr> {
        self.pop3s
    }

    /// The PEM file of the self-signed certificate, when started with `tls`.
    pub fn cert_pem(&self) -> Option<PathBuf> {
        self.pop3s.map(|_| self.dir.path().join("cert.pem"))
    }

    /// The Maildir Dovecot serves for `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// The temporary directory holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Gives all mail to [`MAIL_UID`]:[`MAIL_GID`] (call after writing mail as root).
    pub fn give_mail_to_owner(&self) -> Result<()> {
        chown_tree(&self.dir.path().join("mail"), MAIL_UID, MAIL_GID)
    }

    /// Delivers `message` to `user` with Dovecot's own LDA (`dovecot-lda`).
    pub fn deliver_with_lda(&self, user: &str, message: &[u8]) -> Result<()> {
        require_program("/usr/lib/dovecot/dovecot-lda", "dovecot-core")?;
        let mut child = Command::new("/usr/lib/dovecot/dovecot-lda")
            .arg("-c")
            .arg(&self.config_path)
            .arg("-d")
            .arg(user)
            .arg("-f")
            .arg("sender@example.org")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dovecot-lda")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(message)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "dovecot-lda failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A minimal blocking POP3 client for tests (plaintext; USER/PASS).
#[derive(Debug)]
pub struct Pop3 {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Pop3 {
    /// Connects, reads the greeting and logs in with USER/PASS.
    pub fn login(addr: SocketAddr, user: &str, pass: &str) -> Result<Pop3> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let w = s.try_clone()?;
        let mut p = Pop3 {
            r: BufReader::new(s),
            w,
        };
        p.status()?;
        p.cmd(&format!("USER {user}"))?;
        p.cmd(&format!("PASS {pass}"))?;
        Ok(p)
    }

    fn line(&mut self) -> Result<Vec<u8>> {
        let mut l = Vec::new();
        if self.r.read_until(b'\n', &mut l)? == 0 {
            bail!("connection closed");
        }
        Ok(l)
    }

    fn status(&mut self) -> Result<String> {
        let l = self.line()?;
        let s = String::from_utf8_lossy(&l).trim_end().to_string();
        if !s.starts_with("+OK") {
            bail!("server said: {s}");
        }
        Ok(s)
    }

    /// Sends one command and returns its `+OK` status line (an error for `-ERR`).
    pub fn cmd(&mut self, c: &str) -> Result<String> {
        self.w.write_all(format!("{c}\r\n").as_bytes())?;
        self.status()
    }

    /// Reads a multi-line body after `+OK` and removes the byte-stuffing; lines keep
    /// their CRLF, the terminating "." line is not included.
    fn body(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let l = self.line()?;
            if l == b".\r\n" {
                return Ok(out);
            }
            if l.starts_with(b".") {
                out.extend_from_slice(&l[1..]);
            } else {
                out.extend_from_slice(&l);
            }
        }
    }

    /// RETR: the message exactly as sent (CRLF line ends, unstuffed).
    pub fn retr(&mut self, n: usize) -> Result<Vec<u8>> {
        self.cmd(&format!("RETR {n}"))?;
        self.body()
    }

    /// LIST: (number, size) pairs.
    pub fn list(&mut self) -> Result<Vec<(usize, u64)>> {
        self.cmd("LIST")?;
        let b = String::from_utf8(self.body()?)?;
        b.lines()
            .map(|l| {
                let (n, s) = l
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("bad LIST line {l:?}"))?;
                Ok((n.parse()?, s.trim().parse()?))
            })
            .collect()
    }

    /// UIDL: (number, uidl) pairs.
    pub fn uidl(&mut self) -> Result<Vec<(usize, String)>> {
        self.cmd("UIDL")?;
        let b = String::from_utf8(self.body()?)?;
        b.lines()
            .map(|l| {
                let (n, u) = l
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("bad UIDL line {l:?}"))?;
                Ok((n.parse()?, u.trim().to_string()))
            })
            .collect()
    }

    /// QUIT.
    pub fn quit(mut self) -> Result<String> {
        self.cmd("QUIT")
    }
}

#[cfg(test)]
mod tests {
    use super::RefusedPort;

    #[test]
    fn a_refused_port_refuses_and_cannot_be_taken() {
        let p = RefusedPort::new().unwrap();
        let e = std::net::TcpStream::connect(("127.0.0.1", p.port())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", p.port())).is_err());
    }
}
