//! The IMAP destination: APPEND each fetched message to a folder of an IMAP server
//! (`--to imaps://USER@HOST[:PORT]/FOLDER`).
//!
//! Contract with the fetcher (see [`Target`]): messages of a batch are collected in
//! memory (the batch is bounded in bytes); [`Target::sync`] APPENDs them and returns
//! only when the server has answered every APPEND. A tagged OK is the IMAP server's
//! promise that the message is stored, so only messages it acknowledged are recorded
//! and may be deleted on the POP3 side; a message it refused with NO is reported by
//! [`Target::take_refused`] and stays on the POP3 server for the next run.
//!
//! Duplicates: if the run dies after the server's OK and before the fetcher records
//! the batch (a window of one local fsync and rename), the next run appends those
//! messages again: at most one batch (`--batch-messages`, default 64) of duplicates
//! per crash, never a loss.
//!
//! Wire: one APPEND per message with INTERNALDATE taken from the message's `Date:`
//! header and optionally `\Seen`. With MULTIAPPEND (RFC 3502) and non-synchronizing
//! literals (LITERAL+, RFC 7888; LITERAL- for messages up to 4096 bytes) the whole
//! batch is one command (if the server refuses it, the batch is appended again
//! message by message, so only the culprit is refused); with LITERAL+/- alone the
//! APPENDs are pipelined; otherwise
//! each literal waits for the server's `+`. A `[TRYCREATE]` refusal creates the
//! folder once and retries. `[APPENDUID]` results (UIDPLUS) are appended to a
//! `.imap-uids` file beside the account's state file.

use std::io::{self, BufReader, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::imap_response::{Code, Response, Status, read_response};
use super::remote::{RemoteSpec, RemoteTls, Stream, date_header, failpoint, imap_internaldate};
use super::target::{Pending, Target};

/// One IMAP connection, authenticated.
struct Conn {
    r: BufReader<Stream>,
    next_tag: u32,
    caps: Vec<String>,
}

impl Conn {
    fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("c{}", self.next_tag)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.r.get_mut().write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.r.get_mut().flush()
    }

    /// Reads until the tagged answer for `tag`, noting capabilities on the way.
    fn wait(&mut self, tag: &str) -> io::Result<(Status, Option<Code>, String)> {
        loop {
            match read_response(&mut self.r)? {
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } if t == tag => {
                    if let Some(Code::Capability(c)) = &code {
                        self.caps = c.clone();
                    }
                    return Ok((status, code, text));
                }
                Response::Capability(c) => self.caps = c,
                Response::UntaggedStatus {
                    status: Status::Bye,
                    text,
                    ..
                } => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("IMAP server said BYE: {text}"),
                    ));
                }
                _ => {}
            }
        }
    }

    fn simple(&mut self, command: &str) -> io::Result<(Status, Option<Code>, String)> {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes())?;
        self.flush()?;
        self.wait(&tag)
    }

    fn capability(&mut self) -> io::Result<()> {
        let (st, _, text) = self.simple("CAPABILITY")?;
        if st != Status::Ok {
            return Err(io::Error::other(format!("IMAP CAPABILITY refused: {text}")));
        }
        Ok(())
    }

    fn connect(spec: &RemoteSpec) -> io::Result<Conn> {
        let tcp = Stream::connect(spec)?;
        let stream = match spec.tls {
            RemoteTls::Implicit => Stream::tls(spec, tcp)?,
            _ => Stream::Plain(tcp),
        };
        let mut c = Conn {
            r: BufReader::new(stream),
            next_tag: 0,
            caps: Vec::new(),
        };
        match read_response(&mut c.r)? {
            Response::UntaggedStatus {
                status: Status::Ok,
                code,
                ..
            } => {
                if let Some(Code::Capability(caps)) = code {
                    c.caps = caps;
                }
            }
            Response::UntaggedStatus {
                status: Status::Preauth,
                ..
            } => {
                return Err(io::Error::other(
                    "the IMAP server pre-authenticated the connection (PREAUTH): refusing, since STARTTLS and the configured login cannot happen",
                ));
            }
            other => {
                return Err(io::Error::other(format!(
                    "unexpected IMAP greeting: {other:?}"
                )));
            }
        }
        if c.caps.is_empty() {
            c.capability()?;
        }
        if spec.tls == RemoteTls::StartTls {
            if !c.has("STARTTLS") {
                return Err(io::Error::other(format!(
                    "{}:{} does not offer STARTTLS; use imaps:// or (only on a trusted network) --to-insecure",
                    spec.host, spec.port
                )));
            }
            let (st, _, text) = c.simple("STARTTLS")?;
            if st != Status::Ok {
                return Err(io::Error::other(format!("STARTTLS refused: {text}")));
            }
            // Anything the server sent after its OK would be plaintext injected into
            // the TLS session: refuse.
            if !c.r.buffer().is_empty() {
                return Err(io::Error::other("data after STARTTLS OK"));
            }
            let Stream::Plain(tcp) = c.r.into_inner() else {
                return Err(io::Error::other("STARTTLS on a TLS stream"));
            };
            c = Conn {
                r: BufReader::new(Stream::tls(spec, tcp)?),
                next_tag: c.next_tag,
                caps: Vec::new(),
            };
            c.capability()?;
        }
        Ok(c)
    }

    /// AUTHENTICATE with one client message (PLAIN, XOAUTH2, OAUTHBEARER), with
    /// SASL-IR when offered. A second challenge is the server's error report
    /// (XOAUTH2/OAUTHBEARER): answered with an empty response, as RFC 7628 says.
    fn authenticate(&mut self, mech: &str, message: &[u8]) -> io::Result<()> {
        let tag = self.tag();
        let b64 = B64.encode(message);
        let mut sent = false;
        if self.has("SASL-IR") {
            self.send(format!("{tag} AUTHENTICATE {mech} {b64}\r\n").as_bytes())?;
            sent = true;
        } else {
            self.send(format!("{tag} AUTHENTICATE {mech}\r\n").as_bytes())?;
        }
        self.flush()?;
        let mut detail = String::new();
        loop {
            match read_response(&mut self.r)? {
                Response::Continue(challenge) => {
                    if sent {
                        if let Ok(d) = B64.decode(challenge.trim()) {
                            detail = String::from_utf8_lossy(&d).into_owned();
                        }
                        self.send(b"\r\n")?;
                    } else {
                        self.send(format!("{b64}\r\n").as_bytes())?;
                        sent = true;
                    }
                    self.flush()?;
                }
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } if t == tag => {
                    if let Some(Code::Capability(c)) = code {
                        self.caps = c;
                    }
                    if status == Status::Ok {
                        return Ok(());
                    }
                    let detail = if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    };
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("IMAP AUTHENTICATE {mech} refused: {text}{detail}"),
                    ));
                }
                Response::Capability(c) => self.caps = c,
                _ => {}
            }
        }
    }

    fn login(&mut self, spec: &RemoteSpec) -> io::Result<()> {
        let user = spec.user.clone().unwrap_or_default();
        let encrypted = spec.tls != RemoteTls::None;
        if !encrypted && !spec.insecure {
            return Err(io::Error::other("refusing to log in to IMAP without TLS"));
        }
        match spec.auth.as_str() {
            "xoauth2" | "oauth2" | "oauthbearer" => {
                let token = spec.token.as_deref().ok_or_else(|| {
                    io::Error::other("to_auth is OAuth2 but the account has no OAuth2 settings")
                })?;
                let bearer = spec.auth == "oauthbearer"
                    || (spec.auth == "oauth2"
                        && !self.has("AUTH=XOAUTH2")
                        && self.has("AUTH=OAUTHBEARER"));
                if bearer {
                    let msg = format!(
                        "n,a={},\x01host={}\x01port={}\x01auth=Bearer {token}\x01\x01",
                        user.replace('=', "=3D").replace(',', "=2C"),
                        spec.host,
                        spec.port
                    );
                    self.authenticate("OAUTHBEARER", msg.as_bytes())
                } else {
                    let msg = format!("user={user}\x01auth=Bearer {token}\x01\x01");
                    self.authenticate("XOAUTH2", msg.as_bytes())
                }
            }
            method => {
                let password = spec.password()?;
                let plain = method == "plain" || (method == "auto" && self.has("AUTH=PLAIN"));
                if plain {
                    let mut msg = Vec::new();
                    msg.push(0);
                    msg.extend_from_slice(user.as_bytes());
                    msg.push(0);
                    msg.extend_from_slice(&password);
                    return self.authenticate("PLAIN", &msg);
                }
                if self.has("LOGINDISABLED") {
                    return Err(io::Error::other(
                        "the IMAP server disables LOGIN and offers no AUTH=PLAIN",
                    ));
                }
                let tag = self.tag();
                let mut line = format!("{tag} LOGIN ").into_bytes();
                astring(&mut line, user.as_bytes())?;
                line.push(b' ');
                astring(&mut line, &password)?;
                line.extend_from_slice(b"\r\n");
                self.send(&line)?;
                self.flush()?;
                let (st, _, text) = self.wait(&tag)?;
                if st != Status::Ok {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("IMAP LOGIN refused: {text}"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Appends a quoted string (refusing CR, LF and NUL, which need a literal).
fn astring(out: &mut Vec<u8>, s: &[u8]) -> io::Result<()> {
    if s.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(io::Error::other("CR, LF or NUL in an IMAP string"));
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Ok(())
}

/// The server's answer to the APPEND of message `.0` of the batch.
type Answer = (usize, Status, Option<Code>, String);

/// A message waiting for the batch's APPEND.
struct Held {
    bytes: Vec<u8>,
    date: Option<String>,
}

/// The IMAP APPEND target.
pub struct ImapTarget {
    spec: RemoteSpec,
    conn: Option<Conn>,
    current: Option<Vec<u8>>,
    held: Vec<Held>,
    /// The last batch's refusals (index in finish order, why).
    refused: Vec<(usize, String)>,
    /// Whether the folder was created after a `[TRYCREATE]` (only tried once).
    created: bool,
}

impl std::fmt::Debug for ImapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapTarget")
            .field("spec", &self.spec)
            .field("held", &self.held.len())
            .finish()
    }
}

impl ImapTarget {
    /// A target for `spec` (connects on first use).
    pub fn open(spec: &RemoteSpec) -> io::Result<ImapTarget> {
        spec.validate().map_err(io::Error::other)?;
        Ok(ImapTarget {
            spec: spec.clone(),
            conn: None,
            current: None,
            held: Vec::new(),
            refused: Vec::new(),
            created: false,
        })
    }

    fn conn(&mut self) -> io::Result<&mut Conn> {
        if self.conn.is_none() {
            let mut c = Conn::connect(&self.spec)?;
            c.login(&self.spec)?;
            if c.caps.is_empty() || !c.caps.iter().any(|x| x == "IMAP4REV1") {
                c.capability()?;
            }
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("IMAP not connected"))
    }

    /// The APPEND arguments after the folder for message `m`, up to its literal.
    fn append_args(&self, m: &Held, nonsync: bool) -> Vec<u8> {
        let mut a = Vec::new();
        if self.spec.seen {
            a.extend_from_slice(b" (\\Seen)");
        }
        if let Some(d) = &m.date {
            a.extend_from_slice(format!(" \"{d}\"").as_bytes());
        }
        a.extend_from_slice(
            format!(
                " {{{}{}}}\r\n",
                m.bytes.len(),
                if nonsync { "+" } else { "" }
            )
            .as_bytes(),
        );
        a
    }

    /// APPENDs `which` (indices into `held`); returns per index the server's answer.
    fn append(&mut self, which: &[usize]) -> io::Result<Vec<Answer>> {
        let mut folder = Vec::new();
        astring(&mut folder, self.spec.folder.as_bytes())?;
        let lens: Vec<usize> = which.iter().map(|&i| self.held[i].bytes.len()).collect();
        let args: Vec<Vec<u8>> = {
            let c = self.conn()?;
            let plus = c.has("LITERAL+");
            let minus = c.has("LITERAL-");
            lens.iter()
                .map(|&n| plus || (minus && n <= 4096))
                .collect::<Vec<bool>>()
        }
        .into_iter()
        .zip(which)
        .map(|(nonsync, &i)| self.append_args(&self.held[i], nonsync))
        .collect();
        let nonsync_all = args.iter().all(|a| a.ends_with(b"+}\r\n"));
        let held: Vec<&[u8]> = which
            .iter()
            .map(|&i| self.held[i].bytes.as_slice())
            .collect();
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("IMAP not connected"))?;
        let mut out = Vec::new();
        if c.has("MULTIAPPEND") && nonsync_all && which.len() > 1 {
            // One command, all or nothing.
            let tag = c.tag();
            c.send(format!("{tag} APPEND ").as_bytes())?;
            c.send(&folder)?;
            for (a, body) in args.iter().zip(&held) {
                c.send(a)?;
                c.send(body)?;
            }
            c.send(b"\r\n")?;
            c.flush()?;
            let (st, code, text) = c.wait(&tag)?;
            if st == Status::Ok || code == Some(Code::TryCreate) {
                for &i in which {
                    out.push((i, st, code.clone(), text.clone()));
                }
                return Ok(out);
            }
            // Refused as a whole (nothing stored): one message the server will never
            // take must not hold the others back, so append them one by one below
            // and let only the culprit be refused.
        }
        // Pipelined where the literals allow it: the tags are answered in order.
        let mut tags = Vec::new();
        for ((a, body), &i) in args.iter().zip(&held).zip(which) {
            let tag = c.tag();
            c.send(format!("{tag} APPEND ").as_bytes())?;
            c.send(&folder)?;
            c.send(a)?;
            if !a.ends_with(b"+}\r\n") {
                c.flush()?;
                // Wait for the go-ahead; earlier pipelined APPENDs may answer first.
                loop {
                    match read_response(&mut c.r)? {
                        Response::Continue(_) => break,
                        Response::Tagged {
                            tag: t,
                            status,
                            code,
                            text,
                        } => {
                            if t == tag {
                                // Refused before the literal was sent.
                                out.push((i, status, code, text));
                                break;
                            }
                            let idx = tags
                                .iter()
                                .position(|(x, _): &(String, usize)| *x == t)
                                .ok_or_else(|| io::Error::other("unknown IMAP tag"))?;
                            let (_, j) = tags.remove(idx);
                            out.push((j, status, code, text));
                        }
                        _ => {}
                    }
                }
                if out.iter().any(|(j, ..)| *j == i) {
                    continue;
                }
            }
            c.send(body)?;
            c.send(b"\r\n")?;
            tags.push((tag, i));
        }
        c.flush()?;
        for (tag, i) in tags {
            let (st, code, text) = c.wait(&tag)?;
            out.push((i, st, code, text));
        }
        Ok(out)
    }

    fn log_uids(&self, code: &Option<Code>) {
        let Some(Code::AppendUid { uidvalidity, uids }) = code else {
            return;
        };
        tracing::debug!(folder = %self.spec.folder, uidvalidity, uids = %uids, "APPENDUID");
        if let Some(path) = &self.spec.uid_log {
            let line = format!("{}\t{uidvalidity}\t{uids}\n", self.spec.folder);
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
    }
}

impl Target for ImapTarget {
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
        let bytes = self
            .current
            .take()
            .ok_or_else(|| io::Error::other("finish without begin"))?;
        let date = date_header(&bytes).and_then(|d| imap_internaldate(&d));
        self.held.push(Held { bytes, date });
        Ok(())
    }

    fn abort(&mut self) {
        self.current = None;
    }

    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        if self.held.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<usize> = (0..self.held.len()).collect();
        let result = (|| {
            let mut answers = self.append(&all)?;
            let retry: Vec<usize> = answers
                .iter()
                .filter(|(_, st, code, _)| *st == Status::No && *code == Some(Code::TryCreate))
                .map(|(i, ..)| *i)
                .collect();
            if !retry.is_empty() && !self.created {
                self.created = true;
                let mut folder = Vec::new();
                astring(&mut folder, self.spec.folder.as_bytes())?;
                let folder = String::from_utf8_lossy(&folder).into_owned();
                let c = self.conn()?;
                let (st, _, text) = c.simple(&format!("CREATE {folder}"))?;
                if st != Status::Ok {
                    return Err(io::Error::other(format!(
                        "IMAP CREATE {folder} refused: {text}"
                    )));
                }
                answers.retain(|(i, ..)| !retry.contains(i));
                answers.extend(self.append(&retry)?);
            }
            Ok(answers)
        })();
        let answers = match result {
            Ok(a) => a,
            Err(e) => {
                // The connection's state is unknown: start afresh next time. Nothing
                // of this batch is recorded (a message the server did store before the
                // break is appended again next run: bounded by one batch).
                self.conn = None;
                self.held.clear();
                return Err(io::Error::new(e.kind(), format!("IMAP destination: {e}")));
            }
        };
        self.refused.clear();
        let mut logged: Option<&Option<Code>> = None;
        for (i, st, code, text) in &answers {
            if *st == Status::Ok {
                // One MULTIAPPEND answers every message of the batch with one code.
                if logged != Some(code) {
                    self.log_uids(code);
                    logged = Some(code);
                }
            } else {
                self.refused
                    .push((*i, format!("IMAP server refused APPEND: {text}")));
            }
        }
        self.held.clear();
        failpoint("imap-after-append");
        Ok(Vec::new())
    }

    fn take_refused(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.refused)
    }
}

impl Drop for ImapTarget {
    fn drop(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            let _ = c.simple("LOGOUT");
        }
    }
}
