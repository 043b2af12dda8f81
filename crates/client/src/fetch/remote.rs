//! What the remote destinations (IMAP APPEND, SMTP relay) share: their settings as
//! given by `--to imap[s]://…` / `smtp[s]://…` and the `to_*` keys, the blocking
//! connection (TCP, then implicit TLS or STARTTLS through rustls), and the secret.
//!
//! Targets run inside the fetcher's synchronous [`Target`](super::target::Target)
//! calls, like the LMTP target, so this is blocking I/O with read and write timeouts.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls::{self, Trust, parse_fingerprint};

/// The protocol of a remote destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteKind {
    /// IMAP APPEND into a folder.
    Imap,
    /// SMTP relay to a recipient (fetchmail's classic mode).
    Smtp,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteTls {
    /// TLS from the first byte (`imaps://`, `smtps://`).
    Implicit,
    /// STARTTLS, required (`imap://`); for `smtp://` used when offered.
    StartTls,
    /// No TLS: only with `to_insecure` (or to a loopback SMTP server).
    None,
}

/// A remote destination's settings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// IMAP or SMTP.
    pub kind: RemoteKind,
    /// TLS mode from the URL scheme and `to_insecure`.
    pub tls: RemoteTls,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login name (`USER@` in the URL; percent-decoded).
    pub user: Option<String>,
    /// IMAP folder (default `INBOX`).
    pub folder: String,
    /// SMTP recipient.
    pub recipient: Option<String>,
    /// Command printing the destination's password.
    pub password_command: Option<String>,
    /// `auto`, `plain`, `login`, `xoauth2`, `oauthbearer`.
    pub auth: String,
    /// Store messages with `\Seen` (IMAP).
    pub seen: bool,
    /// Allow IMAP without STARTTLS.
    pub insecure: bool,
    /// Extra CA file for the destination.
    pub ca: Option<String>,
    /// Pinned certificate fingerprint for the destination.
    pub fingerprint: Option<String>,
    /// SMTP: what a permanent (5xx) refusal does: `keep` (default) or `delete`.
    pub rejected: String,
    /// Where APPENDUID results are appended (next to the state file).
    pub uid_log: Option<PathBuf>,
    /// The OAuth2 access token, filled in at run time for `xoauth2`/`oauthbearer`.
    #[serde(skip)]
    pub token: Option<String>,
}

impl std::fmt::Debug for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSpec")
            .field("kind", &self.kind)
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("folder", &self.folder)
            .field("recipient", &self.recipient)
            .field("auth", &self.auth)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after %-decoding".to_owned())
}

impl RemoteSpec {
    /// Parses `imaps://USER@HOST[:PORT]/FOLDER`, `imap://…` (STARTTLS),
    /// `smtp://HOST[:PORT]` or `smtps://HOST[:PORT]`. The user, folder and recipient
    /// may be %-encoded.
    pub fn parse(s: &str) -> Result<RemoteSpec, String> {
        let bad = |m: &str| format!("target {s:?}: {m}");
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://"))?;
        let (kind, tls, default_port) = match scheme {
            "imaps" => (RemoteKind::Imap, RemoteTls::Implicit, 993),
            "imap" => (RemoteKind::Imap, RemoteTls::StartTls, 143),
            "smtps" => (RemoteKind::Smtp, RemoteTls::Implicit, 465),
            "smtp" => (RemoteKind::Smtp, RemoteTls::StartTls, 25),
            _ => return Err(bad("unknown scheme")),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(percent_decode(u).map_err(|e| bad(&e))?), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or_else(|| bad("bad IPv6 address"))?;
            (h.to_owned(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        let path = percent_decode(path).map_err(|e| bad(&e))?;
        if path.contains(['\r', '\n', '\0']) {
            return Err(bad("bad folder name"));
        }
        let (folder, recipient) = match kind {
            RemoteKind::Imap => (
                if path.is_empty() {
                    "INBOX".to_owned()
                } else {
                    path
                },
                None,
            ),
            RemoteKind::Smtp => ("".to_owned(), (!path.is_empty()).then_some(path)),
        };
        // An SMTP login is optional (smtp://USER@HOST authenticates); IMAP needs one.
        if kind == RemoteKind::Imap && user.is_none() {
            return Err(bad("give the login as imaps://USER@HOST/FOLDER"));
        }
        Ok(RemoteSpec {
            kind,
            tls,
            host,
            port,
            user,
            folder,
            recipient,
            password_command: None,
            auth: "auto".into(),
            seen: false,
            insecure: false,
            ca: None,
            fingerprint: None,
            rejected: "keep".into(),
            uid_log: None,
            token: None,
        })
    }

    /// The destination as a URL (no secrets).
    pub fn url(&self) -> String {
        let scheme = match (self.kind, self.tls) {
            (RemoteKind::Imap, RemoteTls::Implicit) => "imaps",
            (RemoteKind::Imap, _) => "imap",
            (RemoteKind::Smtp, RemoteTls::Implicit) => "smtps",
            (RemoteKind::Smtp, _) => "smtp",
        };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let path = match self.kind {
            RemoteKind::Imap => self.folder.clone(),
            RemoteKind::Smtp => self.recipient.clone().unwrap_or_default(),
        };
        format!("{scheme}://{user}{}:{}/{path}", self.host, self.port)
    }

    /// Whether the destination logs in with the account's OAuth2 tokens.
    pub fn uses_oauth(&self) -> bool {
        matches!(self.auth.as_str(), "xoauth2" | "oauthbearer" | "oauth2")
    }

    /// Checks the settings once everything is merged.
    pub fn validate(&self) -> Result<(), String> {
        match self.auth.as_str() {
            "auto" | "plain" | "login" | "xoauth2" | "oauthbearer" | "oauth2" => {}
            other => return Err(format!("to_auth: unknown method {other:?}")),
        }
        match self.rejected.as_str() {
            "keep" | "delete" => {}
            other => return Err(format!("to_rejected must be keep or delete, not {other:?}")),
        }
        if self.kind == RemoteKind::Smtp && self.recipient.is_none() {
            return Err(
                "an smtp:// destination needs a recipient (to_recipient or --to-recipient)".into(),
            );
        }
        if self.kind == RemoteKind::Imap && self.tls == RemoteTls::None && !self.insecure {
            return Err("IMAP without TLS needs to_insecure = true (--to-insecure)".into());
        }
        if self.ca.is_some() && self.fingerprint.is_some() {
            return Err("give to_ca or to_fingerprint, not both".into());
        }
        Ok(())
    }

    fn trust(&self) -> io::Result<Trust> {
        Ok(match (&self.fingerprint, &self.ca) {
            (Some(fp), _) => Trust::Fingerprint(parse_fingerprint(fp).map_err(io::Error::other)?),
            (None, Some(ca)) => Trust::ExtraCa(super::target::expand_home(ca)),
            (None, None) => Trust::System,
        })
    }

    /// The password, from `password_command`.
    pub fn password(&self) -> io::Result<Vec<u8>> {
        let cmd = self.password_command.as_deref().ok_or_else(|| {
            io::Error::other(format!(
                "{}:{}: no to_password_command (--to-password-command) for the destination",
                self.host, self.port
            ))
        })?;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "to_password_command failed ({})",
                out.status
            )));
        }
        let first = out.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
        Ok(first.strip_suffix(b"\r").unwrap_or(first).to_vec())
    }

    /// Whether the host is a loopback address.
    pub fn loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Opens the destination's target (connections are made on first use).
pub fn open(spec: &RemoteSpec) -> io::Result<Box<dyn super::target::Target>> {
    Ok(match spec.kind {
        RemoteKind::Imap => Box::new(super::imap::ImapTarget::open(spec)?),
        RemoteKind::Smtp => Box::new(super::smtp::SmtpTarget::open(spec)?),
    })
}

/// Read and write timeout of destination connections.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(120);

/// A plain or TLS byte stream.
#[derive(Debug)]
pub enum Stream {
    /// Cleartext.
    Plain(TcpStream),
    /// rustls over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    /// TCP connection with timeouts.
    pub fn connect(spec: &RemoteSpec) -> io::Result<TcpStream> {
        use std::net::ToSocketAddrs;
        let mut last = io::Error::other(format!("{}: no address", spec.host));
        for addr in (spec.host.as_str(), spec.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(30)) {
                Ok(s) => {
                    s.set_read_timeout(Some(REMOTE_TIMEOUT))?;
                    s.set_write_timeout(Some(REMOTE_TIMEOUT))?;
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(
            last.kind(),
            format!("cannot connect to {}:{}: {last}", spec.host, spec.port),
        ))
    }

    /// Wraps `tcp` in TLS, verifying the certificate as `spec` says.
    pub fn tls(spec: &RemoteSpec, tcp: TcpStream) -> io::Result<Stream> {
        let connector = tls::connector(&spec.trust()?).map_err(io::Error::other)?;
        let config: Arc<rustls::ClientConfig> = Arc::clone(connector.config());
        let name = tls::server_name(&spec.host).map_err(io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Complete the handshake now, so certificate errors show up as such.
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS with {}: {e}", spec.host)))?;
        }
        Ok(Stream::Tls(Box::new(s)))
    }
}

/// Reads one line (up to `max` bytes, CRLF included) into `out`; an error when the
/// line is longer or the peer closed.
pub fn read_line_bounded<R: BufRead>(r: &mut R, max: usize, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    let n = r.by_ref().take(max as u64).read_until(b'\n', out)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !out.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("server line longer than {max} bytes"),
        ));
    }
    Ok(())
}

/// Aborts the process (a crash) when the failpoint `name` is set in
/// `CORREIO_FAILPOINT` (the project's one failpoint switch,
/// [`correio_store::failpoint`]), for the crash tests only: `imap-after-append` (after
/// the APPENDs were acknowledged, before the fetcher records or deletes anything),
/// `smtp-after-data` (the same after SMTP's 250). The POP3 side of `correio fetch` has
/// its own: `fetch-after-login`, and, counted (`NAME:N` = the Nth batch or message of
/// the run), `fetch-mid-message` (in the writer thread, after part of a body was
/// written), `fetch-after-sync` (the batch fsynced, not yet recorded),
/// `fetch-after-state` (recorded, not yet published), `fetch-after-publish` (published,
/// not yet deleted) and `fetch-after-dele` (DELEs answered, no QUIT yet).
pub fn failpoint(name: &str) {
    correio_store::failpoint::hit(name);
}

/// The RFC 5322 `Date:` of a message (CRLF or LF line ends), unfolded, if any.
pub fn date_header(msg: &[u8]) -> Option<String> {
    let mut value: Option<Vec<u8>> = None;
    for line in msg.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = value.as_mut() {
                v.push(b' ');
                v.extend_from_slice(line.trim_ascii());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:") {
            value = Some(line[5..].trim_ascii().to_vec());
        }
    }
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// An IMAP `date-time` (`"05-Dec-2026 01:58:14 +0000"`) from a `Date:` header value,
/// or `None` when it does not parse (the server then uses its own clock).
pub fn imap_internaldate(date: &str) -> Option<String> {
    use time::format_description::well_known::Rfc2822;
    // Drop a trailing comment such as "(UTC)" and repeated spaces.
    let cleaned = date.split('(').next().unwrap_or(date);
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let t = time::OffsetDateTime::parse(&cleaned, &Rfc2822).ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off = t.offset();
    let (h, m, _) = off.as_hms();
    let sign = if off.is_negative() { '-' } else { '+' };
    Some(format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        h.unsigned_abs(),
        m.unsigned_abs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let s = RemoteSpec::parse("imaps://me%40example.org@mail.example.org/Archive/Old").unwrap();
        assert_eq!(s.kind, RemoteKind::Imap);
        assert_eq!(s.tls, RemoteTls::Implicit);
        assert_eq!(s.port, 993);
        assert_eq!(s.user.as_deref(), Some("me@example.org"));
        assert_eq!(s.folder, "Archive/Old");
        let s = RemoteSpec::parse("imap://u@127.0.0.1:1143").unwrap();
        assert_eq!(
            (s.tls, s.port, s.folder.as_str()),
            (RemoteTls::StartTls, 1143, "INBOX")
        );
        let s = RemoteSpec::parse("smtp://localhost").unwrap();
        assert_eq!((s.kind, s.port), (RemoteKind::Smtp, 25));
        assert!(s.validate().is_err(), "no recipient");
        for bad in [
            "imaps://host/INBOX",
            "imap://u@:12/",
            "imap://u@h:x/",
            "ftp://h",
        ] {
            assert!(RemoteSpec::parse(bad).is_err(), "{bad}");
        }
        let mut plain = RemoteSpec::parse("imap://u@h/").unwrap();
        plain.tls = RemoteTls::None;
        assert!(plain.validate().is_err());
        plain.insecure = true;
        assert!(plain.validate().is_ok());
    }

    #[test]
    fn internaldate_from_date_header() {
        let m = b"From: a@b\r\nDate: Tue, 1 Jul 2003 10:52:37\r\n +0200 (CEST)\r\nSubject: x\r\n\r\nDate: no\r\n";
        let d = date_header(m).unwrap();
        assert_eq!(d, "Tue, 1 Jul 2003 10:52:37 +0200 (CEST)");
        assert_eq!(
            imap_internaldate(&d).as_deref(),
            Some("01-Jul-2003 10:52:37 +0200")
        );
        assert_eq!(
            imap_internaldate("Fri, 21 Nov 1997 09:55:06 -0600").as_deref(),
            Some("21-Nov-1997 09:55:06 -0600")
        );
        assert_eq!(imap_internaldate("yesterday"), None);
        assert_eq!(date_header(b"Subject: x\r\n\r\n"), None);
    }
}
