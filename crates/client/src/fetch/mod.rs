//! The fetcher: one account's session, planned from CAPA, UIDL, LIST and the local
//! state, with the storage guarantee (DESIGN.md invariant 6).
//!
//! For each batch of messages (bounded by count and bytes): download them (pipelined
//! when allowed) into the target, [`Target::sync`](target::Target::sync) (fsync),
//! record their keys in the state file (atomic, fsynced), publish, and only then DELE
//! the batch. QUIT is sent only after every DELE was answered. A run that dies at any
//! point leaves each message either on the server, or stored and recorded, or both —
//! never neither; and in keep mode a recorded message is never downloaded again.
//!
//! When the server's UIDLs cannot be trusted (no UIDL, duplicates, missing entries),
//! messages are keyed by a SHA-256 of their content instead, and the summary says so.

pub mod config;
pub mod report;
pub mod state;
pub mod target;

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_proto::client::SaslMechanism;
use correio_proto::{Capabilities, MsgNum, RespCode, StatusLine};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{self, Trust};
use crate::{BodySink, Client, Error, Request, Window};
use state::UidState;
use target::{Target, TargetSpec};

/// How to secure the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsMode {
    /// TLS from the first byte (port 995).
    Implicit,
    /// Cleartext, then STLS (port 110); fails if the server does not offer STLS.
    StartTls,
    /// No TLS.
    None,
}

/// How to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// The strongest the server offers: SCRAM-SHA-256, then (over TLS) PLAIN or
    /// USER/PASS, then APOP.
    Auto,
    /// USER/PASS.
    User,
    /// APOP.
    Apop,
    /// A SASL mechanism by name (upper case).
    Sasl(String),
}

/// What happens to messages on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Leave them; remember what was fetched by UIDL.
    Keep,
    /// Delete each message once it is stored and recorded.
    Delete,
    /// Delete messages this many days after they were first stored.
    DeleteAfterDays(u32),
}

/// What to do with messages over the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Oversize {
    /// Leave them on the server, unfetched.
    Skip,
    /// Delete them on the server without fetching.
    Delete,
}

/// A fully resolved account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's name (for messages and the summary).
    pub name: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// Which certificates to trust.
    pub trust: Trust,
    /// Login method.
    pub auth: AuthMethod,
    /// Command that prints the password/token (run by the caller to fill `password`).
    pub password_command: Option<String>,
    /// The password or OAuth2 token.
    pub password: Option<Vec<u8>>,
    /// Keep or delete.
    pub mode: Mode,
    /// Size limit in bytes (by LIST).
    pub max_size: Option<u64>,
    /// What to do over the limit.
    pub oversize: Oversize,
    /// Fetch `TOP n 0` instead of RETR.
    pub headers_only: bool,
    /// Where messages go.
    pub target: TargetSpec,
    /// The state file.
    pub state_file: std::path::PathBuf,
    /// Use PIPELINING when the server offers it.
    pub pipelining: bool,
    /// The pipelining window.
    pub window: Window,
    /// Read timeout.
    pub timeout: Duration,
    /// Allow a password in cleartext to a non-loopback host.
    pub allow_cleartext: bool,
    /// Group commit: most messages per batch.
    pub batch_messages: usize,
    /// Group commit: most bytes per batch.
    pub batch_bytes: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The account's name.
    pub account: String,
    /// Messages on the server at login.
    pub on_server: usize,
    /// Messages stored by this run.
    pub fetched: usize,
    /// Their size (wire octets).
    pub fetched_bytes: u64,
    /// Messages deleted on the server by this run (QUIT acknowledged).
    pub deleted: usize,
    /// Messages left alone because of the size limit.
    pub skipped_oversize: usize,
    /// Whether pipelining was used.
    pub pipelined: bool,
    /// Whether messages were keyed by content hash (the server's UIDLs were unusable).
    pub content_hash_keys: bool,
    /// The server's LOGIN-DELAY in seconds, if announced.
    pub login_delay: Option<u32>,
    /// Things the user should know (size mismatches, fallbacks).
    pub warnings: Vec<String>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Could not connect.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    /// The server or the connection failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// Login refused.
    #[error("login failed: {0}")]
    Login(String),
    /// The server asked us to wait before logging in again (RFC 2449 LOGIN-DELAY).
    #[error("server says: wait before logging in again ({0})")]
    LoginDelay(String),
    /// Writing the target or the state file failed.
    #[error("local storage: {0}")]
    Storage(#[from] io::Error),
    /// The configuration cannot work (no password, cleartext refused...).
    #[error("{0}")]
    Config(String),
}

/// Progress reports, for bars or log lines.
pub trait Progress: Send + Sync {
    /// The plan: how many messages and bytes will be downloaded.
    fn start(&self, account: &str, messages: usize, bytes: u64);
    /// One message stored (`bytes` wire octets).
    fn message(&self, account: &str, bytes: u64);
    /// A notice (warnings, phases).
    fn note(&self, account: &str, text: &str);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: usize, _: u64) {}
    fn message(&self, _: &str, _: u64) {}
    fn note(&self, _: &str, _: &str) {}
}

/// The stream type the fetcher works with.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Builds SASL mechanisms by name for a user and secret; `None` if unknown.
pub type MechanismFactory =
    dyn Fn(&str, &str, &[u8]) -> Option<Box<dyn SaslMechanism>> + Send + Sync;

/// Connects, secures the connection and reads CAPA. Also what `--configure` uses to
/// confirm settings.
pub async fn connect(acct: &Account) -> Result<(Client<Box<dyn Io>>, Capabilities), FetchError> {
    let addr = format!("{}:{}", acct.host, acct.port);
    let tcp = tokio::time::timeout(
        acct.timeout,
        TcpStream::connect((acct.host.as_str(), acct.port)),
    )
    .await
    .map_err(|_| FetchError::Connect(addr.clone(), io::ErrorKind::TimedOut.into()))?
    .map_err(|e| FetchError::Connect(addr.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let mut client: Client<Box<dyn Io>> = match acct.tls {
        TlsMode::Implicit => {
            let connector = tls::connector(&acct.trust).map_err(Error::from)?;
            crate::connect_tls(tcp, &connector, &acct.host, acct.timeout)
                .await?
                .map_io(|s| Box::new(s) as Box<dyn Io>)
        }
        TlsMode::StartTls => {
            let mut c = Client::connect_with_timeout(tcp, acct.timeout).await?;
            let caps = c.capa().await?;
            if !caps.stls {
                return Err(FetchError::Config(format!(
                    "{addr} does not offer STLS; use --tls implicit or (only on a trusted network) --tls none"
                )));
            }
            let connector = tls::connector(&acct.trust).map_err(Error::from)?;
            c.stls(&connector, &acct.host)
                .await?
                .map_io(|s| Box::new(s) as Box<dyn Io>)
        }
        TlsMode::None => Client::connect_with_timeout(tcp, acct.timeout)
            .await?
            .map_io(|s| Box::new(s) as Box<dyn Io>),
    };
    let caps = client.capa().await?.clone();
    Ok((client, caps))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn login(
    acct: &Account,
    client: &mut Client<Box<dyn Io>>,
    caps: &Capabilities,
    mechanisms: &MechanismFactory,
) -> Result<(), FetchError> {
    let secret = acct
        .password
        .as_deref()
        .ok_or_else(|| FetchError::Config(format!("account {}: no password", acct.name)))?;
    let encrypted = acct.tls != TlsMode::None;
    let cleartext_ok = encrypted || acct.allow_cleartext || is_loopback(&acct.host);
    let method = match &acct.auth {
        AuthMethod::Auto => {
            if caps.has_sasl("SCRAM-SHA-256") && mechanisms("SCRAM-SHA-256", "", b"").is_some() {
                AuthMethod::Sasl("SCRAM-SHA-256".into())
            } else if cleartext_ok && (caps.user || !caps.has_sasl("PLAIN")) {
                AuthMethod::User
            } else if cleartext_ok && caps.has_sasl("PLAIN") {
                AuthMethod::Sasl("PLAIN".into())
            } else if client.apop_timestamp().is_some() {
                AuthMethod::Apop
            } else {
                AuthMethod::User
            }
        }
        m => m.clone(),
    };
    let sends_secret = matches!(&method, AuthMethod::User)
        || matches!(&method, AuthMethod::Sasl(m) if m == "PLAIN" || m == "LOGIN" || m == "XOAUTH2" || m == "OAUTHBEARER");
    if sends_secret && !cleartext_ok {
        return Err(FetchError::Config(format!(
            "refusing to send the password for {} in cleartext; use TLS or set allow_cleartext",
            acct.name
        )));
    }
    let r = match &method {
        AuthMethod::User | AuthMethod::Auto => client.login(&acct.user, secret).await,
        AuthMethod::Apop => client.apop(&acct.user, secret).await,
        AuthMethod::Sasl(name) => {
            let mech = mechanisms(name, &acct.user, secret).ok_or_else(|| {
                FetchError::Config(format!("SASL mechanism {name} is not available"))
            })?;
            client.auth(mech).await
        }
    };
    match r {
        Ok(()) => Ok(()),
        Err(Error::Refused { line, .. }) if line.code == Some(RespCode::LoginDelay) => {
            Err(FetchError::LoginDelay(line.text))
        }
        Err(Error::Refused { line, .. }) => Err(FetchError::Login(status_text(&line))),
        Err(e) => Err(e.into()),
    }
}

fn status_text(l: &StatusLine) -> String {
    match &l.code {
        Some(c) => format!("[{c}] {}", l.text),
        None => l.text.clone(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One message in the plan.
#[derive(Debug, Clone)]
struct Planned {
    msg: MsgNum,
    size: u64,
    /// The UIDL, or `None` in content-hash mode.
    uid: Option<String>,
}

/// Fetches one account: connects, logs in, stores new messages, deletes what the mode
/// says, QUITs. When a pipelined run fails in a way that suggests the server does not
/// really pipeline, it reconnects once and finishes one command at a time.
pub async fn fetch_account(
    acct: &Account,
    mechanisms: &MechanismFactory,
    progress: &dyn Progress,
) -> Result<Summary, FetchError> {
    let mut state = UidState::load(&acct.state_file)?;
    let mut target = target::open(&acct.target)?;
    let mut summary = Summary {
        account: acct.name.clone(),
        ..Default::default()
    };
    let first = run_session(
        acct,
        mechanisms,
        progress,
        &mut state,
        target.as_mut(),
        &mut summary,
        true,
    )
    .await;
    match first {
        Err(FetchError::Client(Error::Timeout(_) | Error::Protocol(_))) if summary.pipelined => {
            let note = "server advertised PIPELINING but broke the session; retrying one command at a time".to_owned();
            progress.note(&acct.name, &note);
            summary.warnings.push(note);
            summary.pipelined = false;
            run_session(
                acct,
                mechanisms,
                progress,
                &mut state,
                target.as_mut(),
                &mut summary,
                false,
            )
            .await?;
        }
        other => other?,
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    acct: &Account,
    mechanisms: &MechanismFactory,
    progress: &dyn Progress,
    state: &mut UidState,
    target: &mut dyn Target,
    summary: &mut Summary,
    allow_pipelining: bool,
) -> Result<(), FetchError> {
    let (mut client, mut caps) = connect(acct).await?;
    summary.login_delay = caps.login_delay.map(|d| d.seconds);
    login(acct, &mut client, &caps, mechanisms).await?;
    // Capabilities may change after login (RFC 2449 §5).
    if let Ok(c) = client.capa().await
        && *c != Capabilities::new()
    {
        caps = c.clone();
        if let Some(d) = caps.login_delay {
            summary.login_delay = Some(d.seconds);
        }
    }
    let pipelined = allow_pipelining && acct.pipelining && caps.pipelining;
    summary.pipelined = pipelined;
    let window = if pipelined {
        acct.window
    } else {
        Window::SERIAL
    };

    let list = client.list().await?;
    summary.on_server = list.len();
    let uids = match client.uidl().await {
        Ok(u) => Some(u),
        Err(Error::Refused { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut plan: Vec<Planned> = list
        .iter()
        .map(|&(msg, size)| Planned {
            msg,
            size,
            uid: None,
        })
        .collect();
    let usable = match &uids {
        None => Err("the server has no UIDL".to_owned()),
        Some(u) => check_uids(&list, u),
    };
    match usable {
        Ok(()) => {
            let map: std::collections::HashMap<MsgNum, &String> =
                uids.iter().flatten().map(|(m, u)| (*m, u)).collect();
            for p in &mut plan {
                p.uid = map.get(&p.msg).map(|u| (*u).clone());
            }
            // Forget keys of messages no longer on the server: the listing is
            // authoritative, and this keeps the state file small.
            let live: std::collections::HashSet<&str> =
                plan.iter().filter_map(|p| p.uid.as_deref()).collect();
            state
                .seen
                .retain(|k, _| k.starts_with("sha256:") || live.contains(k.as_str()));
        }
        Err(why) => {
            summary.content_hash_keys = true;
            let note = format!(
                "{why}; identifying messages by content hash instead (every message is downloaded to compare)"
            );
            progress.note(&acct.name, &note);
            summary.warnings.push(note);
        }
    }

    let now = now_secs();
    let days_secs = |d: u32| u64::from(d) * 86_400;
    let mut delete_now: Vec<MsgNum> = Vec::new();
    let mut to_fetch: Vec<Planned> = Vec::new();
    for p in plan {
        if let Some(uid) = &p.uid
            && let Some(&first_seen) = state.seen.get(uid)
        {
            match acct.mode {
                Mode::Delete => delete_now.push(p.msg),
                Mode::DeleteAfterDays(d) if now.saturating_sub(first_seen) >= days_secs(d) => {
                    delete_now.push(p.msg)
                }
                _ => {}
            }
            continue;
        }
        if let Some(max) = acct.max_size
            && p.size > max
        {
            match acct.oversize {
                Oversize::Skip => summary.skipped_oversize += 1,
                Oversize::Delete => delete_now.push(p.msg),
            }
            continue;
        }
        to_fetch.push(p);
    }
    progress.start(
        &acct.name,
        to_fetch.len(),
        to_fetch.iter().map(|p| p.size).sum(),
    );

    let mut deleted: Vec<MsgNum> = Vec::new();
    if !delete_now.is_empty() {
        let refused = client.dele_many(&delete_now, window).await?;
        note_refused_deletes(acct, progress, summary, &refused);
        deleted.extend(
            delete_now
                .iter()
                .filter(|m| !refused.iter().any(|(r, _)| r == *m)),
        );
    }

    let delete_fetched = acct.mode == Mode::Delete;
    let mut i = 0;
    while i < to_fetch.len() {
        // One batch: bounded by count and bytes (at least one message).
        let mut end = i;
        let mut bytes = 0u64;
        while end < to_fetch.len()
            && end - i < acct.batch_messages.max(1)
            && (end == i || bytes + to_fetch[end].size <= acct.batch_bytes)
        {
            bytes += to_fetch[end].size;
            end += 1;
        }
        let batch = &to_fetch[i..end];
        i = end;
        let requests: Vec<Request> = batch
            .iter()
            .map(|p| Request {
                msg: p.msg,
                top_lines: acct.headers_only.then_some(0),
                size: p.size,
            })
            .collect();
        let mut sink = FetchSink {
            target: &mut *target,
            batch,
            state: &*state,
            hashing: summary.content_hash_keys,
            headers_only: acct.headers_only,
            current: None,
            done: Vec::new(),
            already: Vec::new(),
            warnings: Vec::new(),
            progress,
            account: &acct.name,
        };
        let result = client.retr_many(&requests, window, &mut sink).await;
        if result.is_err() {
            sink.target.abort();
        }
        let FetchSink {
            done,
            already,
            warnings,
            ..
        } = sink;
        for w in warnings {
            progress.note(&acct.name, &w);
            summary.warnings.push(w);
        }
        // Group commit: even when the connection broke, what arrived whole is kept.
        let pending = target.sync()?;
        let stamp = now_secs();
        for d in &done {
            state.seen.entry(d.key.clone()).or_insert(stamp);
        }
        state.save(&pending)?;
        target.publish(&pending)?;
        summary.fetched += done.len();
        summary.fetched_bytes += done.iter().map(|d| d.size).sum::<u64>();
        result?;
        if delete_fetched {
            let msgs: Vec<MsgNum> = done.iter().map(|d| d.msg).chain(already).collect();
            if !msgs.is_empty() {
                let refused = client.dele_many(&msgs, window).await?;
                note_refused_deletes(acct, progress, summary, &refused);
                deleted.extend(
                    msgs.iter()
                        .filter(|m| !refused.iter().any(|(r, _)| r == *m)),
                );
            }
        }
    }
    // Drop the renames from the state file now that they are done.
    state.save(&[])?;
    match client.quit().await {
        Ok(()) => summary.deleted += deleted.len(),
        Err(e) if !deleted.is_empty() => {
            return Err(FetchError::Client(e));
        }
        Err(_) => {}
    }
    Ok(())
}

fn note_refused_deletes(
    acct: &Account,
    progress: &dyn Progress,
    summary: &mut Summary,
    refused: &[(MsgNum, StatusLine)],
) {
    for (m, line) in refused {
        let w = format!("server refused DELE {m}: {}", status_text(line));
        progress.note(&acct.name, &w);
        summary.warnings.push(w);
    }
}

/// Checks that UIDL covers every listed message exactly once with distinct ids.
fn check_uids(list: &[(MsgNum, u64)], uids: &[(MsgNum, String)]) -> Result<(), String> {
    let mut seen_ids = std::collections::HashSet::new();
    let mut seen_msgs = std::collections::HashSet::new();
    for (m, u) in uids {
        if !seen_ids.insert(u.as_str()) {
            return Err(format!(
                "the server gave the same UIDL {u:?} to two messages"
            ));
        }
        seen_msgs.insert(*m);
    }
    for (m, _) in list {
        if !seen_msgs.contains(m) {
            return Err(format!("the server's UIDL listing misses message {m}"));
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Done {
    msg: MsgNum,
    key: String,
    size: u64,
}

struct FetchSink<'a> {
    target: &'a mut dyn Target,
    batch: &'a [Planned],
    state: &'a UidState,
    hashing: bool,
    headers_only: bool,
    /// Message in progress: index in `batch`, bytes so far, hash.
    current: Option<(usize, u64, Sha256)>,
    done: Vec<Done>,
    /// Content-hash mode: messages already stored (for DELE).
    already: Vec<MsgNum>,
    warnings: Vec<String>,
    progress: &'a dyn Progress,
    account: &'a str,
}

impl BodySink for FetchSink<'_> {
    fn start(&mut self, msg: MsgNum) -> io::Result<()> {
        let idx = self
            .batch
            .iter()
            .position(|p| p.msg == msg)
            .ok_or_else(|| io::Error::other("message not in batch"))?;
        self.target.begin()?;
        self.current = Some((idx, 0, Sha256::new()));
        Ok(())
    }

    fn data(&mut self, _msg: MsgNum, bytes: &[u8]) -> io::Result<()> {
        let Some((_, n, h)) = self.current.as_mut() else {
            return Err(io::Error::other("data without start"));
        };
        *n += bytes.len() as u64;
        if self.hashing {
            h.update(bytes);
        }
        self.target.write(bytes)
    }

    fn end(&mut self, msg: MsgNum) -> io::Result<()> {
        let Some((idx, n, h)) = self.current.take() else {
            return Err(io::Error::other("end without start"));
        };
        let planned = &self.batch[idx];
        let key = match &planned.uid {
            Some(u) => u.clone(),
            None => {
                let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        };
        if planned.uid.is_none()
            && (self.state.contains(&key) || self.done.iter().any(|d| d.key == key))
        {
            self.target.abort();
            self.already.push(msg);
            return Ok(());
        }
        if !self.headers_only && n != planned.size {
            self.warnings.push(format!(
                "message {msg}: LIST said {} octets, RETR sent {n}",
                planned.size
            ));
        }
        self.target.finish()?;
        self.progress.message(self.account, n);
        self.done.push(Done { msg, key, size: n });
        Ok(())
    }

    fn refused(&mut self, msg: MsgNum, line: &StatusLine) -> io::Result<()> {
        self.warnings
            .push(format!("server refused RETR {msg}: {}", status_text(line)));
        Ok(())
    }
}
