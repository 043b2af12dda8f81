//! Shared by the user-database tests (`userdb_*.rs`): a `correio serve` started with an
//! `[auth]` section of the test's choosing, LMTP delivery to it, and the third-party
//! clients (curl, mpop) that fetch through it, byte-exact.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use correio_testkit::daemon::Daemon;
use correio_testkit::peers::{Run, make_maildir, require, run_bounded, write_private};

pub const BIN: &str = env!("CARGO_BIN_EXE_correio");
const LIMIT: Duration = Duration::from_secs(60);

/// A running `correio serve`.
pub struct Served {
    pub daemon: Daemon,
    pub root: PathBuf,
    pub pop3: u16,
    pub lmtp: u16,
    pub config: PathBuf,
}

/// A directory others may traverse (the server may drop privileges; daemons run as
/// `nobody`).
pub fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

impl Served {
    /// Starts the server with `extra` (TOML, e.g. an `[auth]` section and its table)
    /// after the basics: data under `root/data`, Maildirs under `root/mail/%u`, POP3
    /// (STLS with the first-run self-signed certificate) and LMTP on loopback ports
    /// chosen at run time, no failed-login delay (so the test compares answers, not
    /// waits).
    pub fn start(root: &Path, extra: &str) -> Served {
        Served::start_with(root, "", extra)
    }

    /// [`Served::start`] with top-level keys (`top`, e.g. `user = "..."`) too.
    pub fn start_with(root: &Path, top: &str, extra: &str) -> Served {
        let location = format!("maildir:{}/%u", root.join("mail").display());
        Served::start_located(root, &location, top, extra, &[])
    }

    /// [`Served::start_with`] with another mail location (a store: `pgsql:%u`) and
    /// environment variables for the server (a failpoint).
    pub fn start_located(
        root: &Path,
        location: &str,
        top: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Served {
        // Port 0: the server reports the ports it bound (its "listening" log lines).
        let config = root.join("correio.toml");
        let text = format!(
            "data_dir = \"{data}\"\nmail_location = \"{location}\"\n\
             trusted_networks = [\"127.0.0.0/8\"]\n{top}\n\
             [listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"127.0.0.1:0\"\n{extra}\n",
            data = root.join("data").display(),
        );
        std::fs::write(&config, text).expect("config");
        let mut daemon = Daemon::start({
            let mut c = Command::new(BIN);
            c.args(["serve", "--config"]).arg(&config);
            c.envs(env.iter().copied());
            c
        });
        let pop3 = daemon
            .wait_listening(
                "listening",
                " tls=false proxy=false",
                Duration::from_secs(30),
            )
            .port();
        let lmtp = daemon
            .wait_listening("listening for LMTP", "", Duration::from_secs(30))
            .port();
        Served {
            daemon,
            root: root.to_owned(),
            pop3,
            lmtp,
            config,
        }
    }

    /// The server's certificate (made at its first start).
    pub fn cert(&self) -> PathBuf {
        self.root.join("data").join("tls").join("cert.pem")
    }

    /// One LMTP transaction: the whole reply text.
    pub fn lmtp(&self, rcpt: &str, message: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.lmtp)).expect("lmtp connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut data = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        let mut script =
            format!("LHLO test\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                .into_bytes();
        script.extend_from_slice(&data);
        script.extend_from_slice(b".\r\nQUIT\r\n");
        s.write_all(&script).expect("lmtp write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Only RCPT: the reply to it.
    pub fn rcpt(&self, rcpt: &str) -> String {
        let out = raw(
            self.lmtp,
            &format!("LHLO test\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<{rcpt}>\r\nQUIT\r\n"),
        );
        out.lines()
            .filter(|l| !l.starts_with("220") && !l.starts_with("250-"))
            .nth(2)
            .unwrap_or("")
            .to_owned()
    }

    /// USER/PASS on the cleartext port (loopback is trusted): the reply to PASS.
    pub fn login_reply(&self, user: &str, pass: &str) -> String {
        let out = raw(
            self.pop3,
            &format!("USER {user}\r\nPASS {pass}\r\nQUIT\r\n"),
        );
        out.lines().nth(2).unwrap_or("").to_owned()
    }

    /// AUTH PLAIN with an initial response: the reply.
    pub fn plain_reply(&self, authcid: &[u8], pass: &[u8]) -> String {
        let mut m = vec![0u8];
        m.extend_from_slice(authcid);
        m.push(0);
        m.extend_from_slice(pass);
        let out = raw(self.pop3, &format!("AUTH PLAIN {}\r\nQUIT\r\n", b64(&m)));
        out.lines().nth(1).unwrap_or("").to_owned()
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

pub fn b64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `script` on a fresh connection and reads until the server closes it.
pub fn raw(port: u16, script: &str) -> String {
    raw_bytes(port, script.as_bytes())
}

/// [`raw`] with arbitrary bytes.
pub fn raw_bytes(port: u16, script: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(script).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A few messages with the awkward parts: dot lines, `From ` lines, 8-bit text.
pub fn corpus(tag: &str) -> Vec<Vec<u8>> {
    vec![
        format!("Subject: {tag} one\r\nFrom: a@example.net\r\n\r\nhello {tag}\r\n").into_bytes(),
        format!(
            "Subject: {tag} two\r\n\r\n.starts with a dot\r\n..two dots\r\nFrom the start\r\n\
             caf\u{e9} na\u{ef}ve\r\n.\r\nend\r\n"
        )
        .into_bytes(),
        {
            let mut m = format!("Subject: {tag} big\r\n\r\n").into_bytes();
            for i in 0..3000 {
                m.extend_from_slice(
                    format!("line {i} of a longer message for {tag}\r\n").as_bytes(),
                );
            }
            m
        },
    ]
}

/// What a POP3 client receives for a message delivered by LMTP as `sent`: the LMTP
/// listener stores it with `Return-Path:` first.
pub fn as_served(sent: &[u8]) -> Vec<u8> {
    let mut m = b"Return-Path: <sender@example.net>\r\n".to_vec();
    m.extend_from_slice(sent);
    m
}

/// curl over STLS: every message of `user`, in order (CRLF form).
pub fn curl_fetch(s: &Served, user: &str, pass: &str) -> Result<Vec<Vec<u8>>, String> {
    require("curl", "curl");
    let curl = |extra: &[String]| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", "--ssl-reqd", "--cacert"])
            .arg(s.cert())
            .arg("-u")
            .arg(format!("{user}:{pass}"));
        c.args(extra);
        run_bounded(c, LIMIT, &s.root)
    };
    let base = format!("pop3://localhost:{}/", s.pop3);
    let r = curl(std::slice::from_ref(&base));
    if !r.ok() {
        return Err(format!("curl LIST as {user}: {}", r.log()));
    }
    let n = r.stdout.lines().filter(|l| !l.trim().is_empty()).count();
    let mut got = Vec::new();
    for i in 1..=n {
        let r = curl(&[format!("{base}{i}")]);
        if !r.ok() {
            return Err(format!("curl RETR {i} as {user}: {}", r.log()));
        }
        got.push(r.stdout.into_bytes());
    }
    Ok(got)
}

/// mpop over STLS, keep on, into a fresh Maildir: the stored messages (LF form,
/// sorted by name, i.e. by arrival).
pub fn mpop_fetch(s: &Served, user: &str, pass: &str, tag: &str) -> Result<Vec<Vec<u8>>, String> {
    require("mpop", "mpop");
    let dir = s.root.join(format!("mpop-{tag}"));
    let md = dir.join("Maildir");
    make_maildir(&md);
    let rc = dir.join("mpoprc");
    write_private(
        &rc,
        &format!(
            "defaults\ntimeout 30\naccount test\nhost localhost\nport {port}\n\
             user {user}\npassword {pass}\ntls on\ntls_starttls on\n\
             tls_trust_file {cert}\ndelivery maildir {md}\nkeep on\n\
             uidls_file {uidls}\nreceived_header off\n",
            port = s.pop3,
            cert = s.cert().display(),
            md = md.display(),
            uidls = dir.join("uidls").display(),
        ),
    );
    let mut c = Command::new("mpop");
    c.env("HOME", &dir)
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(&rc)
        .arg("test");
    let r: Run = run_bounded(c, LIMIT, &dir);
    if !r.ok() {
        return Err(format!("mpop as {user}: {}", r.log()));
    }
    let mut files: Vec<(PathBuf, Vec<u8>)> = correio_testkit::peers::maildir_messages(&md);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files.into_iter().map(|(_, b)| b).collect())
}

/// `crlf` with CRLF line ends made LF (what a Maildir client stores).
pub fn lf(crlf: &[u8]) -> Vec<u8> {
    correio_testkit::peers::crlf_to_lf(crlf)
}

/// Asserts two message lists are equal, showing the first difference.
pub fn assert_messages(what: &str, want: &[Vec<u8>], got: &[Vec<u8>]) {
    assert_eq!(want.len(), got.len(), "{what}: message count");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            w == g,
            "{what}: message {} differs\n{}",
            i + 1,
            correio_testkit::peers::show_diff(w, g)
        );
    }
}

/// Login names that try to break out of a query or filter: none may log in, with any
/// password, whatever the backend.
pub const HOSTILE_NAMES: [&str; 8] = [
    "' OR '1'='1",
    "alice' --",
    "alice'#",
    "%",
    "*",
    "*)(uid=*",
    "alice)(|(uid=*",
    "a%u",
];

/// Checks that every hostile name is refused (as an ordinary failed login, or refused
/// as a name) with `password`, over USER/PASS and AUTH PLAIN; and that a NUL inside a
/// name never reaches a backend.
pub fn assert_hostile_names_refused(s: &Served, password: &str) {
    for name in HOSTILE_NAMES {
        let r = s.login_reply(name, password);
        assert!(r.starts_with("-ERR"), "USER {name:?}: {r}\n{}", s.log());
        let r = s.plain_reply(name.as_bytes(), password.as_bytes());
        assert!(r.starts_with("-ERR"), "AUTH PLAIN {name:?}: {r}");
    }
    // A NUL byte: the POP3 line is refused before any lookup.
    let out = raw_bytes(
        s.pop3,
        format!("USER alice\0x\r\nPASS {password}\r\nQUIT\r\n").as_bytes(),
    );
    assert!(!out.contains("+OK Logged in"), "{out}");
}
