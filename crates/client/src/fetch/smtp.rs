//! The SMTP destination (fetchmail's classic mode): relay each fetched message to an
//! MTA for one configured recipient (`--to smtp://HOST[:PORT] --to-recipient ADDR`).
//!
//! Envelope: `MAIL FROM` is the message's `Return-Path:` (empty, `<>`, when it has
//! none), `RCPT TO` the recipient. EHLO; STARTTLS when offered (`smtp://`) or TLS from
//! the start (`smtps://`); `BODY=8BITMIME` when the message has 8-bit bytes and the
//! server offers it, `SMTPUTF8` when an address or the header has UTF-8 and the server
//! offers it; the body is dot-stuffed.
//!
//! Contract with the fetcher: messages of a batch are held in memory and relayed in
//! [`Target::sync`]; a message counts as stored once the server answered `250` to
//! its final dot. Per message:
//! - `4xx` (temporary) anywhere in the transaction: the message stays on the POP3
//!   server and is tried again on the next run;
//! - `5xx` (permanent): reported for that message; with `to_rejected = "keep"` (the
//!   default) it stays on the POP3 server (and is reported on every run until someone
//!   looks), with `to_rejected = "delete"` it is treated as done (recorded, and deleted
//!   on the server in delete mode) — the MTA refused it for good, no bounce is sent.
//!
//! A broken connection fails the batch; messages the MTA had already accepted are
//! relayed again next run (duplicates bounded by one batch, never a loss).

use std::io::{self, BufReader, Write};

use super::remote::{RemoteSpec, RemoteTls, Stream, failpoint, read_line_bounded};
use super::target::{Pending, Target};

struct Conn {
    r: BufReader<Stream>,
    ext: Vec<String>,
}

/// One SMTP reply: code and text of its lines.
struct Reply {
    code: u16,
    text: String,
}

impl Conn {
    fn reply(&mut self) -> io::Result<Reply> {
        let mut text = String::new();
        let mut line = Vec::new();
        for _ in 0..1000 {
            read_line_bounded(&mut self.r, 2048, &mut line)?;
            let s = String::from_utf8_lossy(&line);
            let s = s.trim_end();
            let code: u16 = s
                .get(..3)
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| io::Error::other(format!("bad SMTP reply {s:?}")))?;
            if !text.is_empty() {
                text.push_str(" / ");
            }
            text.push_str(s.get(4..).unwrap_or(""));
            if s.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: format!("{code} {text}"),
                });
            }
        }
        Err(io::Error::other("SMTP reply with too many lines"))
    }

    fn cmd(&mut self, line: &str) -> io::Result<Reply> {
        let w = self.r.get_mut();
        w.write_all(line.as_bytes())?;
        w.write_all(b"\r\n")?;
        w.flush()?;
        self.reply()
    }

    fn ehlo(&mut self) -> io::Result<()> {
        let host = hostname();
        let w = self.r.get_mut();
        w.write_all(format!("EHLO {host}\r\n").as_bytes())?;
        w.flush()?;
        let mut line = Vec::new();
        let mut ext = Vec::new();
        loop {
            read_line_bounded(&mut self.r, 2048, &mut line)?;
            let s = String::from_utf8_lossy(&line).trim_end().to_owned();
            if !s.starts_with("250") {
                return Err(io::Error::other(format!("SMTP EHLO refused: {s}")));
            }
            if ext.len() < 256 {
                ext.push(
                    s.get(4..)
                        .unwrap_or("")
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase(),
                );
            }
            if s.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        ext.remove(0); // the greeting line of the EHLO reply
        self.ext = ext;
        Ok(())
    }

    fn has(&self, e: &str) -> bool {
        self.ext.iter().any(|x| x == e)
    }

    fn connect(spec: &RemoteSpec) -> io::Result<Conn> {
        let tcp = Stream::connect(spec)?;
        let stream = match spec.tls {
            RemoteTls::Implicit => Stream::tls(spec, tcp)?,
            _ => Stream::Plain(tcp),
        };
        let mut c = Conn {
            r: BufReader::new(stream),
            ext: Vec::new(),
        };
        let greet = c.reply()?;
        if greet.code != 220 {
            return Err(io::Error::other(format!("SMTP greeting: {}", greet.text)));
        }
        c.ehlo()?;
        if spec.tls == RemoteTls::StartTls && c.has("STARTTLS") {
            let r = c.cmd("STARTTLS")?;
            if r.code != 220 {
                return Err(io::Error::other(format!("SMTP STARTTLS: {}", r.text)));
            }
            if !c.r.buffer().is_empty() {
                return Err(io::Error::other("data after STARTTLS reply"));
            }
            let Stream::Plain(tcp) = c.r.into_inner() else {
                return Err(io::Error::other("STARTTLS on a TLS stream"));
            };
            c = Conn {
                r: BufReader::new(Stream::tls(spec, tcp)?),
                ext: Vec::new(),
            };
            c.ehlo()?;
        }
        c.login(spec)?;
        Ok(c)
    }

    /// AUTH when the destination has a login (`smtp://USER@HOST`) or uses OAuth2:
    /// PLAIN with the password, or XOAUTH2/OAUTHBEARER with the account's token,
    /// sent after the server's empty challenge (two steps). Only over TLS, or to a
    /// loopback server.
    fn login(&mut self, spec: &RemoteSpec) -> io::Result<()> {
        let oauth = spec.uses_oauth();
        let Some(user) = spec.user.clone() else {
            if oauth {
                return Err(io::Error::other(
                    "an OAuth2 SMTP destination needs a login: smtp://USER@HOST",
                ));
            }
            return Ok(());
        };
        let encrypted = matches!(self.r.get_ref(), Stream::Tls(_));
        if !encrypted && !spec.loopback() && !spec.insecure {
            return Err(io::Error::other(
                "refusing to send SMTP credentials without TLS (the server offers no STARTTLS)",
            ));
        }
        use base64::Engine as _;
        let b64 = |m: &[u8]| base64::engine::general_purpose::STANDARD.encode(m);
        let (mech, msg) = if oauth {
            let token = spec.token.as_deref().ok_or_else(|| {
                io::Error::other("to_auth is OAuth2 but the account has no OAuth2 settings")
            })?;
            if spec.auth == "oauthbearer" {
                (
                    "OAUTHBEARER",
                    format!("n,a={user},\x01auth=Bearer {token}\x01\x01").into_bytes(),
                )
            } else {
                (
                    "XOAUTH2",
                    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes(),
                )
            }
        } else {
            let mut m = vec![0];
            m.extend_from_slice(user.as_bytes());
            m.push(0);
            m.extend_from_slice(&spec.password()?);
            ("PLAIN", m)
        };
        let mut r = self.cmd(&format!("AUTH {mech}"))?;
        if r.code == 334 {
            r = self.cmd(&b64(&msg))?;
            if r.code == 334 {
                // The server's error report (XOAUTH2/OAUTHBEARER): an empty answer.
                r = self.cmd("")?;
            }
        }
        if r.code != 235 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("SMTP AUTH {mech} refused: {}", r.text),
            ));
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        })
        .unwrap_or_else(|| "localhost".into())
}

/// The header section of a message (up to the first empty line).
fn header(msg: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < msg.len() {
        let end = msg[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |p| i + p + 1);
        let line = &msg[i..end];
        if line == b"\r\n" || line == b"\n" {
            return &msg[..i];
        }
        i = end;
    }
    msg
}

/// The address of the first `Return-Path:` header (`""` for `<>` or none).
pub fn return_path(msg: &[u8]) -> String {
    for line in header(msg).split(|&b| b == b'\n') {
        if line.len() > 12 && line[..12].eq_ignore_ascii_case(b"return-path:") {
            let v = String::from_utf8_lossy(&line[12..]);
            let v = v.trim();
            let v = v.trim_start_matches('<');
            let v = v.split('>').next().unwrap_or("").trim();
            if v.contains(['\r', '\n', ' ', '<']) {
                return String::new();
            }
            return v.to_owned();
        }
    }
    String::new()
}

/// Dot-stuffs `msg` (CRLF line ends) and appends the final `.` line.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    let mut at_start = true;
    for &b in msg {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// How one message fared.
enum Outcome {
    Stored,
    Temporary(String),
    Permanent(String),
}

/// The SMTP relay target.
pub struct SmtpTarget {
    spec: RemoteSpec,
    conn: Option<Conn>,
    current: Option<Vec<u8>>,
    held: Vec<Vec<u8>>,
    refused: Vec<(usize, String)>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget")
            .field("spec", &self.spec)
            .field("held", &self.held.len())
            .finish()
    }
}

impl SmtpTarget {
    /// A target for `spec` (connects on first use).
    pub fn open(spec: &RemoteSpec) -> io::Result<SmtpTarget> {
        spec.validate().map_err(io::Error::other)?;
        Ok(SmtpTarget {
            spec: spec.clone(),
            conn: None,
            current: None,
            held: Vec::new(),
            refused: Vec::new(),
        })
    }

    fn relay(&mut self, msg: &[u8]) -> io::Result<Outcome> {
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(&self.spec)?);
        }
        let rcpt = self.spec.recipient.clone().unwrap_or_default();
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("SMTP not connected"))?;
        let from = return_path(msg);
        let eight_bit = msg.iter().any(|&b| b >= 0x80);
        let utf8 = !from.is_ascii() || !rcpt.is_ascii() || !header(msg).is_ascii();
        let mut mail = format!("MAIL FROM:<{from}>");
        if eight_bit && c.has("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 && c.has("SMTPUTF8") {
            mail.push_str(" SMTPUTF8");
        }
        let judge = |r: &Reply| -> Option<Outcome> {
            match r.code {
                200..=299 | 354 => None,
                400..=499 => Some(Outcome::Temporary(r.text.clone())),
                _ => Some(Outcome::Permanent(r.text.clone())),
            }
        };
        let steps = [mail, format!("RCPT TO:<{rcpt}>"), "DATA".to_owned()];
        for s in &steps {
            let r = c.cmd(s)?;
            if let Some(o) = judge(&r) {
                let _ = c.cmd("RSET");
                return Ok(o);
            }
        }
        let w = c.r.get_mut();
        w.write_all(&dot_stuff(msg))?;
        w.flush()?;
        let r = c.reply()?;
        Ok(judge(&r).unwrap_or(Outcome::Stored))
    }
}

impl Target for SmtpTarget {
    fn begin(&mut self) -> io::Result<()> {
        self.current = Some(Vec::new());
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.current
            .as_mut()
            .ok_or_else(|| io::Error::other("write without begin"))?
            .extend_from_slice(data);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let m = self
            .current
            .take()
            .ok_or_else(|| io::Error::other("finish without begin"))?;
        self.held.push(m);
        Ok(())
    }

    fn abort(&mut self) {
        self.current = None;
    }

    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        let held = std::mem::take(&mut self.held);
        self.refused.clear();
        for (i, m) in held.iter().enumerate() {
            match self.relay(m) {
                Ok(Outcome::Stored) => {}
                Ok(Outcome::Temporary(t)) => self.refused.push((
                    i,
                    format!("SMTP server deferred the message ({t}); kept on the server for the next run"),
                )),
                Ok(Outcome::Permanent(t)) if self.spec.rejected == "delete" => {
                    tracing::warn!("SMTP server rejected a message for good ({t}); dropped as configured (to_rejected = delete)");
                }
                Ok(Outcome::Permanent(t)) => self.refused.push((
                    i,
                    format!("SMTP server rejected the message ({t}); kept on the server (to_rejected = keep)"),
                )),
                Err(e) => {
                    self.conn = None;
                    return Err(io::Error::new(e.kind(), format!("SMTP destination: {e}")));
                }
            }
        }
        failpoint("smtp-after-data");
        Ok(Vec::new())
    }

    fn take_refused(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.refused)
    }
}

impl Drop for SmtpTarget {
    fn drop(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            let _ = c.cmd("QUIT");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_stuffing() {
        let m = b"Return-Path: <bounce@example.org>\r\nFrom: a\r\n\r\n.hidden\r\nx";
        assert_eq!(return_path(m), "bounce@example.org");
        assert_eq!(return_path(b"Return-Path: <>\r\n\r\n"), "");
        assert_eq!(return_path(b"From: a\r\n\r\nReturn-Path: <x@y>\r\n"), "");
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n".to_vec()
        );
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n".to_vec());
    }
}
