//! The fetcher: one account's session, planned from CAPA, UIDL, LIST and the local
//! state, with the storage guarantee: nothing is deleted on the server before it is stored and recorded.
//!
//! For each batch of messages (bounded by count and bytes): download them (pipelined
//! when allowed) into the target, [`target::Target::sync`] (fsync),
//! record their keys in the state file (atomic, fsynced), publish, and only then DELE
//! the batch. QUIT is sent only after every DELE was answered. A run that dies at any
//! point leaves each message either on the server, or stored and recorded, or both —
//! never neither; and in keep mode a recorded message is never downloaded again.
//!
//! When the server's UIDLs cannot be trusted (no UIDL, duplicates, missing entries),
//! messages are keyed by a SHA-256 of their content instead, and the summary says so.

pub mod config;
pub mod imap;
pub mod imap_response;
pub mod remote;
pub mod report;
pub mod smtp;
pub mod state;
pub mod target;
pub mod writer;

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_proto::client::{ClientError, SaslMechanism};
use correio_proto::{Capabilities, MsgNum, RespCode, StatusLine};
use correio_store::failpoint;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{self, Trust};
use crate::{BodySink, Client, Error, Request, Window};
use state::UidState;
use target::TargetSpec;
use writer::TargetThread;

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
    /// Chosen from what the server offers, by [`auto_method`]: over TLS a method that
    /// works with every stored secret (PLAIN, USER/PASS, LOGIN); without TLS a
    /// challenge-response one (SCRAM-SHA-256, CRAM-MD5, APOP).
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
    /// Read timeout (each read).
    pub timeout: Duration,
    /// Most time one response may take, a whole message included (see
    /// [`Client::set_response_deadline`]).
    pub response_deadline: Option<Duration>,
    /// Most time a whole session may take, from connecting to QUIT.
    pub session_deadline: Option<Duration>,
    /// Allow a password in cleartext to a non-loopback host.
    pub allow_cleartext: bool,
    /// Fetch every message again, whether the state says it is stored or not
    /// (`--all`); what is fetched is recorded as usual.
    pub fetch_all: bool,
    /// Only count the new messages and their size; download and delete nothing
    /// (`--check`).
    pub check_only: bool,
    /// Protocol trace on standard error, secrets masked (`-v`).
    pub trace: bool,
    /// Group commit: most messages per batch.
    pub batch_messages: usize,
    /// Group commit: most bytes per batch.
    pub batch_bytes: u64,
    /// OAuth2: the login (and an OAuth2 destination's) token comes from here.
    pub oauth: Option<crate::oauth::OAuth>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The account's name.
    pub account: String,
    /// Messages on the server at login.
    pub on_server: usize,
    /// New messages (not in the state; all with `--all`) within the size limit.
    pub new_messages: usize,
    /// Their size by LIST (octets).
    pub new_bytes: u64,
    /// Whether this was a `--check` run (nothing downloaded or deleted).
    pub check_only: bool,
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
    #[error("login failed: {method} authentication failed ({reason}){}", hint_suffix(.hint))]
    Login {
        /// What was tried: `USER/PASS`, `APOP` or a SASL mechanism's name.
        method: String,
        /// Why: the server's `-ERR` text with its response code, or the mechanism's
        /// own error.
        reason: String,
        /// How to log in another way, when the refusal may come from the method
        /// rather than the password (names the `--auth` flag and the `auth` key).
        hint: Option<String>,
    },
    /// The server asked us to wait before logging in again (RFC 2449 LOGIN-DELAY).
    #[error("server says: wait before logging in again ({0})")]
    LoginDelay(String),
    /// Writing the target or the state file failed.
    #[error("local storage: {0}")]
    Storage(#[from] io::Error),
    /// The configuration cannot work (no password, cleartext refused...).
    #[error("{0}")]
    Config(String),
    /// Getting an OAuth2 token failed (the message says which command fixes it).
    #[error(transparent)]
    OAuth(#[from] crate::oauth::OAuthError),
    /// The whole session took longer than [`Account::session_deadline`].
    #[error("the session took longer than the session deadline ({}); what was stored is kept", crate::format_duration(*.0))]
    SessionDeadline(Duration),
    /// The server sent a number or an amount out of bounds (a hostile or broken
    /// server): the session is abandoned.
    #[error("{0}")]
    Bounds(String),
    /// The destination failed (writing, syncing or publishing a message).
    #[error("destination {target}: {source}")]
    Destination {
        /// The destination, as given (`maildir:DIR`, ...).
        target: String,
        /// What failed.
        source: io::Error,
    },
}

/// The kinds of failure that `correio fetch` tells apart by its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Connecting, TLS, timeouts and deadlines, a connection that broke.
    Network,
    /// The server refused the login (or asked to wait: LOGIN-DELAY).
    Authentication,
    /// The server broke the protocol or sent values out of bounds.
    Protocol,
    /// Writing the destination or the state file failed.
    Destination,
    /// The account's settings cannot work.
    Config,
}

impl FetchError {
    /// Which kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Connect(..) | FetchError::SessionDeadline(_) => ErrorClass::Network,
            FetchError::Client(e) => match e {
                Error::Io(_)
                | Error::Timeout(_)
                | Error::ResponseDeadline { .. }
                | Error::Tls(_)
                | Error::Protocol(ClientError::UnexpectedEof) => ErrorClass::Network,
                _ => ErrorClass::Protocol,
            },
            FetchError::Login { .. } | FetchError::LoginDelay(_) => ErrorClass::Authentication,
            FetchError::Bounds(_) => ErrorClass::Protocol,
            FetchError::Storage(_) | FetchError::Destination { .. } => ErrorClass::Destination,
            FetchError::Config(_) => ErrorClass::Config,
            FetchError::OAuth(e) => match e {
                crate::oauth::OAuthError::Http(_) => ErrorClass::Network,
                crate::oauth::OAuthError::Config(_) | crate::oauth::OAuthError::Io { .. } => {
                    ErrorClass::Config
                }
                _ => ErrorClass::Authentication,
            },
        }
    }

    /// The error as the user should read it: with the server (`HOST:PORT`) in front
    /// when it concerns the server and does not name it already (a connection
    /// failure, the destination and the state file name themselves).
    pub fn describe(&self, acct: &Account) -> String {
        match self {
            FetchError::Connect(..)
            | FetchError::Storage(_)
            | FetchError::Destination { .. }
            | FetchError::OAuth(_)
            | FetchError::Config(_) => self.to_string(),
            e => format!("{}:{}: {e}", acct.host, acct.port),
        }
    }
}

/// Default [`Account::response_deadline`]: 10 minutes for one response (a 100 MB
/// message over a 2 Mbit/s line takes about 7).
pub const DEFAULT_RESPONSE_DEADLINE: Duration = Duration::from_secs(600);

/// Default [`Account::session_deadline`]: one hour for a whole session (a longer
/// first download goes on at the next run: what was stored is kept).
pub const DEFAULT_SESSION_DEADLINE: Duration = Duration::from_secs(3600);

/// The largest message size taken from the network (LIST), 1 TiB: larger is a broken
/// or hostile server. With at most [`correio_proto::client::MAX_LISTING_ENTRIES`]
/// messages, every sum of sizes fits in a `u64`.
pub const MAX_MESSAGE_OCTETS: u64 = 1 << 40;

/// How far a body may run past its LIST size before the fetcher gives up on the
/// server (LIST sizes may be estimates; a body without end is an attack).
fn body_allowance(listed: u64) -> u64 {
    listed.saturating_mul(2).saturating_add(1 << 20)
}

/// Progress reports, for bars or log lines.
pub trait Progress: Send + Sync {
    /// The plan: how many messages and bytes will be downloaded.
    fn start(&self, account: &str, messages: usize, bytes: u64);
    /// One message stored (`bytes` wire octets).
    fn message(&self, account: &str, bytes: u64);
    /// A notice (warnings, phases).
    fn note(&self, account: &str, text: &str);
    /// The account's run is over: `line` is its summary (or error). A display that
    /// draws bars replaces the account's bar with it, so that the final count stays on
    /// screen and accounts do not erase each other's summary. Returns whether it was
    /// shown (else the caller prints it).
    fn done(&self, _account: &str, _line: &str) -> bool {
        false
    }
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
            if acct.trace {
                c.set_trace(tracer(acct, c.greeting()));
            }
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
    if acct.trace && acct.tls != TlsMode::StartTls {
        client.set_trace(tracer(acct, client.greeting()));
    }
    let caps = client.capa().await?.clone();
    Ok((client, caps))
}

/// The `-v` trace: lines on standard error, after the account's name; starts with
/// the greeting, read before the trace was on.
fn tracer(acct: &Account, greeting: &StatusLine) -> crate::TraceFn {
    let name = acct.name.clone();
    let out = move |line: &str| eprintln!("{name}: {line}");
    out(&format!(
        "S: {} {}",
        if greeting.is_ok() { "+OK" } else { "-ERR" },
        greeting.text
    ));
    Box::new(out)
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!("; {h}"))
        .unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What `auth = auto` logs in with, from the server's capabilities (`caps`, read
/// before login), whether the connection is `encrypted` (implicit TLS or after STLS),
/// whether the greeting carried an `apop` timestamp, and which SASL mechanisms the
/// client can run with this account's credentials (`available`).
///
/// A server that offers a mechanism does not promise that it works for every user:
/// SCRAM-SHA-256, CRAM-MD5 and APOP need a secret stored in a matching form, and
/// servers (Dovecot with a passwd-file of SHA512-CRYPT hashes, Correio with mixed
/// schemes) offer them when only some users have one. So:
///
/// - Over TLS the password is protected by TLS: take what works with every stored
///   secret. SASL PLAIN if offered; else USER/PASS (RFC 1939: there unless the
///   server says otherwise, by a CAPA without `USER`); else LOGIN. This is also what
///   Gmail and Outlook (`USER`, `SASL PLAIN XOAUTH2`) expect with an app password.
///   Only a server that lists neither `USER` nor PLAIN/LOGIN gets a
///   challenge-response method over TLS.
/// - Without TLS the password must not cross the network: SCRAM-SHA-256, then
///   CRAM-MD5, then APOP. If none is offered, the same password order as over TLS;
///   the caller then refuses to send it unless cleartext is allowed for the account
///   (or the host is loopback).
pub fn auto_method(
    caps: &Capabilities,
    encrypted: bool,
    apop: bool,
    available: &dyn Fn(&str) -> bool,
) -> AuthMethod {
    let offered = |m: &str| caps.has_sasl(m) && available(m);
    let challenge = || {
        if offered("SCRAM-SHA-256") {
            Some(AuthMethod::Sasl("SCRAM-SHA-256".into()))
        } else if offered("CRAM-MD5") {
            Some(AuthMethod::Sasl("CRAM-MD5".into()))
        } else {
            apop.then_some(AuthMethod::Apop)
        }
    };
    if !encrypted && let Some(m) = challenge() {
        return m;
    }
    // A server without CAPA is an RFC 1939 server: USER is there.
    let user = caps.user || *caps == Capabilities::new();
    if offered("PLAIN") {
        AuthMethod::Sasl("PLAIN".into())
    } else if user {
        AuthMethod::User
    } else if offered("LOGIN") {
        AuthMethod::Sasl("LOGIN".into())
    } else {
        challenge().unwrap_or(AuthMethod::User)
    }
}

/// How a method is named in messages.
fn method_name(m: &AuthMethod) -> &str {
    match m {
        AuthMethod::Auto => "auto",
        AuthMethod::User => "USER/PASS",
        AuthMethod::Apop => "APOP",
        AuthMethod::Sasl(name) => name,
    }
}

/// Whether `m` proves the password without sending it (and so needs the server to
/// hold a secret of a matching kind).
fn is_challenge(m: &AuthMethod) -> bool {
    matches!(m, AuthMethod::Apop)
        || matches!(m, AuthMethod::Sasl(n) if n == "SCRAM-SHA-256" || n == "CRAM-MD5")
}

/// For a challenge-response method the server refused: the likely cause besides a
/// wrong password, and how to choose another method (the real flag and key).
fn challenge_hint(method: &AuthMethod, caps: &Capabilities, encrypted: bool) -> String {
    let secret = match method {
        AuthMethod::Sasl(n) if n == "SCRAM-SHA-256" => "SCRAM",
        other => method_name(other),
    };
    // What `auto` takes over TLS from this server.
    let instead = match auto_method(caps, true, false, &|m| m == "PLAIN" || m == "LOGIN") {
        AuthMethod::Sasl(m) if m == "PLAIN" => "plain",
        AuthMethod::Sasl(m) if m == "LOGIN" => "login",
        _ => "user",
    };
    let over = if encrypted {
        ""
    } else {
        " over TLS (`--tls implicit` or `--tls starttls`)"
    };
    format!(
        "the server may hold no {secret} secret for this user; try `--auth {instead}` (or `auth = \"{instead}\"` in the account file){over}"
    )
}

async fn attempt(
    acct: &Account,
    client: &mut Client<Box<dyn Io>>,
    method: &AuthMethod,
    secret: &[u8],
    mechanisms: &MechanismFactory,
) -> Result<(), Error> {
    match method {
        AuthMethod::User | AuthMethod::Auto => client.login(&acct.user, secret).await,
        AuthMethod::Apop => client.apop(&acct.user, secret).await,
        AuthMethod::Sasl(name) => {
            let mech = mechanisms(name, &acct.user, secret).ok_or_else(|| {
                Error::Unsupported(format!("SASL mechanism {name} is not available"))
            })?;
            client.auth(mech).await
        }
    }
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
    let available = |name: &str| mechanisms(name, &acct.user, secret).is_some();
    let auto = acct.auth == AuthMethod::Auto;
    let mut method = match &acct.auth {
        // OAuth2: the token only works with the OAuth2 mechanisms.
        AuthMethod::Auto if acct.oauth.is_some() => {
            if caps.has_sasl("XOAUTH2") || !caps.has_sasl("OAUTHBEARER") {
                AuthMethod::Sasl("XOAUTH2".into())
            } else {
                AuthMethod::Sasl("OAUTHBEARER".into())
            }
        }
        AuthMethod::Auto => auto_method(
            caps,
            encrypted,
            client.apop_timestamp().is_some(),
            &available,
        ),
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
    if let AuthMethod::Sasl(name) = &method
        && !available(name)
    {
        return Err(FetchError::Config(format!(
            "SASL mechanism {name} is not available"
        )));
    }
    let mut r = attempt(acct, client, &method, secret, mechanisms).await;
    // Refused at USER, before any password went out: the server does not take
    // USER/PASS (for this user); LOGIN sends the same secret the same way.
    if auto
        && method == AuthMethod::User
        && matches!(
            &r,
            Err(Error::Refused {
                command: "USER",
                ..
            })
        )
        && caps.has_sasl("LOGIN")
        && available("LOGIN")
    {
        method = AuthMethod::Sasl("LOGIN".into());
        r = attempt(acct, client, &method, secret, mechanisms).await;
    }
    let refused = |reason: String, may_be_method: bool| FetchError::Login {
        method: method_name(&method).to_owned(),
        reason,
        hint: (may_be_method && is_challenge(&method))
            .then(|| challenge_hint(&method, caps, encrypted)),
    };
    match r {
        Ok(()) => Ok(()),
        Err(Error::Refused { line, .. }) if line.code == Some(RespCode::LoginDelay) => {
            Err(FetchError::LoginDelay(line.text))
        }
        Err(Error::Refused { line, .. }) => {
            // [IN-USE], [SYS/TEMP]... say what went wrong themselves; only a refusal
            // of the credentials ([AUTH], or no code) may be the method's fault.
            let may_be_method = matches!(line.code, None | Some(RespCode::Auth));
            Err(refused(status_text(&line), may_be_method))
        }
        // The mechanism itself gave up: a SCRAM `e=` error from the server (such as
        // invalid-proof or unknown-user) is a refusal of the credentials; any other
        // (a server signature that does not verify) must not suggest sending the
        // password instead.
        Err(Error::Protocol(ClientError::Sasl(why))) => {
            let may_be_method = why.starts_with("server error");
            Err(refused(why, may_be_method))
        }
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
    let run = fetch_account_inner(acct, mechanisms, progress);
    match acct.session_deadline {
        // Cancelling the session is as safe as killing the process: what was stored
        // and recorded stays, nothing half-done is recorded.
        Some(limit) => tokio::time::timeout(limit, run)
            .await
            .unwrap_or(Err(FetchError::SessionDeadline(limit))),
        None => run.await,
    }
}

async fn fetch_account_inner(
    acct: &Account,
    mechanisms: &MechanismFactory,
    progress: &dyn Progress,
) -> Result<Summary, FetchError> {
    // The account's lock first: two runs never refresh (and rotate) one token at once.
    let path = acct.state_file.clone();
    let mut state = tokio::task::spawn_blocking(move || {
        // State files used to be per account only: the first destination to run
        // after the upgrade takes the old one over (it is where those messages went).
        if let Some(old) = config::legacy_state_file(&path)
            && old.exists()
            && !path.exists()
        {
            std::fs::rename(&old, &path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot rename {} to {}: {e}", old.display(), path.display()),
                )
            })?;
        }
        UidState::load(&path)
    })
    .await
    .map_err(io::Error::other)?
    .map_err(|e| match e.kind() {
        // Another fetch holds the account: not a storage failure.
        io::ErrorKind::WouldBlock => FetchError::Config(e.to_string()),
        _ => FetchError::Storage(e),
    })?;
    let mut force = false;
    loop {
        let (prepared, fresh) = with_token(acct, force).await?;
        match fetch_locked(&prepared, mechanisms, progress, &mut state).await {
            // A stored token the server refused (revoked before its expiry): refresh
            // once and try again.
            Err(FetchError::Login { .. }) if acct.oauth.is_some() && !fresh && !force => {
                progress.note(
                    &acct.name,
                    "the server refused the OAuth2 token; refreshing it and trying again",
                );
                force = true;
            }
            r => return r,
        }
    }
}

/// The account with its OAuth2 token as the password (and an OAuth2 destination's
/// token), and whether that token was just obtained. Accounts without OAuth2 come back
/// as they are.
async fn with_token(acct: &Account, force: bool) -> Result<(Account, bool), FetchError> {
    let mut a = acct.clone();
    let Some(o) = &acct.oauth else {
        return Ok((a, true));
    };
    let (token, fresh) = crate::oauth::token(o, force).await?;
    if let TargetSpec::Remote(r) = &mut a.target
        && r.uses_oauth()
    {
        r.token = Some(token.clone());
    }
    a.password = Some(token.into_bytes());
    Ok((a, fresh))
}

async fn fetch_locked(
    acct: &Account,
    mechanisms: &MechanismFactory,
    progress: &dyn Progress,
    state: &mut UidState,
) -> Result<Summary, FetchError> {
    let mut target = TargetThread::open(&acct.target)
        .await
        .map_err(|e| destination(acct, e))?;
    let mut summary = Summary {
        account: acct.name.clone(),
        ..Default::default()
    };
    let first = run_session(
        acct,
        mechanisms,
        progress,
        state,
        &mut target,
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
                state,
                &mut target,
                &mut summary,
                false,
            )
            .await?;
        }
        other => other?,
    }
    target.close().await;
    Ok(summary)
}

fn destination(acct: &Account, e: io::Error) -> FetchError {
    FetchError::Destination {
        target: acct.target.to_string(),
        source: e,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    acct: &Account,
    mechanisms: &MechanismFactory,
    progress: &dyn Progress,
    state: &mut UidState,
    target: &mut TargetThread,
    summary: &mut Summary,
    allow_pipelining: bool,
) -> Result<(), FetchError> {
    let (mut client, mut caps) = connect(acct).await?;
    client.set_response_deadline(acct.response_deadline);
    summary.login_delay = caps.login_delay.map(|d| d.seconds);
    login(acct, &mut client, &caps, mechanisms).await?;
    failpoint::hit("fetch-after-login");
    // Capabilities may change after login (RFC 2449 §5): ask again. A server that
    // pipelines gets CAPA, LIST and UIDL in one round trip.
    let (list, uids) = if allow_pipelining && acct.pipelining && caps.pipelining {
        // A server that only claims to pipeline fails here first: the caller then
        // reconnects and goes one command at a time.
        summary.pipelined = true;
        let (list, uids) = client.capa_list_uidl().await?;
        if let Some(c) = client.capabilities()
            && *c != Capabilities::new()
        {
            caps = c.clone();
        }
        (list?, uids)
    } else {
        if let Ok(c) = client.capa().await
            && *c != Capabilities::new()
        {
            caps = c.clone();
        }
        let list = client.list().await?;
        (list, client.uidl().await)
    };
    if let Some(d) = caps.login_delay {
        summary.login_delay = Some(d.seconds);
    }
    let pipelined = allow_pipelining && acct.pipelining && caps.pipelining;
    summary.pipelined = pipelined;
    let window = if pipelined {
        acct.window
    } else {
        Window::SERIAL
    };

    if let Some((m, size)) = list.iter().find(|(_, size)| *size > MAX_MESSAGE_OCTETS) {
        return Err(FetchError::Bounds(format!(
            "LIST says message {m} has {size} octets, more than the {MAX_MESSAGE_OCTETS} this client accepts (a broken or hostile server)"
        )));
    }
    summary.on_server = list.len();
    let uids = match uids {
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
            && !acct.fetch_all
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
    summary.new_messages = to_fetch.len();
    summary.new_bytes = to_fetch
        .iter()
        .fold(0u64, |sum, p| sum.saturating_add(p.size));
    if acct.check_only {
        summary.check_only = true;
        let _ = client.quit().await;
        return Ok(());
    }
    progress.start(
        &acct.name,
        to_fetch.len(),
        to_fetch
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.size)),
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
    // Batches: bounded by count and bytes (at least one message each).
    let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < to_fetch.len() {
        let mut end = i;
        let mut bytes = 0u64;
        while end < to_fetch.len()
            && end - i < acct.batch_messages.max(1)
            && (end == i || bytes.saturating_add(to_fetch[end].size) <= acct.batch_bytes)
        {
            bytes = bytes.saturating_add(to_fetch[end].size);
            end += 1;
        }
        batches.push(i..end);
        i = end;
    }
    let requests_of = |r: &std::ops::Range<usize>| -> Vec<Request> {
        to_fetch[r.clone()]
            .iter()
            .map(|p| Request {
                msg: p.msg,
                top_lines: acct.headers_only.then_some(0),
                size: p.size,
            })
            .collect()
    };
    // Where no DELE comes between batches, the next batch's RETRs are already on the
    // wire while this one is stored: the pipeline does not drain at every batch.
    let overlap = pipelined && !delete_fetched;
    let mut next_requests: Option<Vec<Request>> = batches.first().map(&requests_of);
    let mut already_sent = 0;
    for (k, range) in batches.iter().enumerate() {
        // Batches begun by this session, from 1 (the crash tests' failpoints count them).
        let batch_no = k as u64 + 1;
        let batch = &to_fetch[range.clone()];
        let requests = next_requests.take().unwrap_or_default();
        next_requests = batches.get(k + 1).map(&requests_of);
        let ahead: &[Request] = match (&next_requests, overlap) {
            (Some(n), true) => n,
            _ => &[],
        };
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
            overrun: None,
            progress,
            account: &acct.name,
        };
        let result = client
            .retr_many_ahead(&requests, already_sent, ahead, window, &mut sink)
            .await;
        if result.is_err() {
            sink.target.abort();
        }
        already_sent = *result.as_ref().unwrap_or(&0);
        let FetchSink {
            mut done,
            already,
            warnings,
            overrun,
            ..
        } = sink;
        for w in warnings {
            progress.note(&acct.name, &w);
            summary.warnings.push(w);
        }
        // Group commit: even when the connection broke, what arrived whole is kept —
        // but only what the target really finished is recorded. A remote destination
        // may refuse single messages: they stay on the server.
        let synced = target.sync().await.map_err(|e| destination(acct, e))?;
        failpoint::hit_at("fetch-after-sync", batch_no);
        for (id, why) in &synced.refused {
            if let Some(d) = done.iter().find(|d| d.id == *id) {
                let w = format!("message {}: {why}", d.msg);
                progress.note(&acct.name, &w);
                summary.warnings.push(w);
            }
        }
        done.retain(|d| synced.finished.contains(&d.id));
        let stamp = now_secs();
        for d in &done {
            state.seen.entry(d.key.clone()).or_insert(stamp);
        }
        save_state(state, synced.pending.clone()).await?;
        failpoint::hit_at("fetch-after-state", batch_no);
        target
            .publish(synced.pending)
            .await
            .map_err(|e| destination(acct, e))?;
        failpoint::hit_at("fetch-after-publish", batch_no);
        summary.fetched += done.len();
        summary.fetched_bytes += done.iter().map(|d| d.size).sum::<u64>();
        // What went wrong first: the destination, a server out of bounds, the session.
        if let Some(e) = synced.failure {
            return Err(destination(acct, e));
        }
        if let Some(why) = overrun {
            return Err(FetchError::Bounds(why));
        }
        result?;
        if delete_fetched {
            let msgs: Vec<MsgNum> = done.iter().map(|d| d.msg).chain(already).collect();
            if !msgs.is_empty() {
                let refused = client.dele_many(&msgs, window).await?;
                failpoint::hit_at("fetch-after-dele", batch_no);
                note_refused_deletes(acct, progress, summary, &refused);
                deleted.extend(
                    msgs.iter()
                        .filter(|m| !refused.iter().any(|(r, _)| r == *m)),
                );
            }
        }
    }
    // Drop the renames from the state file now that they are done.
    save_state(state, Vec::new()).await?;
    match client.quit().await {
        Ok(()) => summary.deleted += deleted.len(),
        Err(e) if !deleted.is_empty() => {
            return Err(FetchError::Client(e));
        }
        Err(_) => {}
    }
    Ok(())
}

/// Saves the state file off the async workers.
async fn save_state(state: &UidState, pending: Vec<target::Pending>) -> Result<(), FetchError> {
    let snap = state.snapshot();
    tokio::task::spawn_blocking(move || snap.save(&pending))
        .await
        .map_err(io::Error::other)??;
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
    /// The target's number for it (see [`writer::Synced::finished`]).
    id: u64,
    msg: MsgNum,
    key: String,
    size: u64,
}

struct FetchSink<'a> {
    target: &'a mut TargetThread,
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
    /// A body that ran far past its LIST size (the session is abandoned).
    overrun: Option<String>,
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
        self.target.begin();
        self.current = Some((idx, 0, Sha256::new()));
        Ok(())
    }

    fn data(&mut self, msg: MsgNum, bytes: &[u8]) -> io::Result<()> {
        let Some((idx, n, h)) = self.current.as_mut() else {
            return Err(io::Error::other("data without start"));
        };
        *n = n.saturating_add(bytes.len() as u64);
        let listed = self.batch[*idx].size;
        if *n > body_allowance(listed) {
            let why = format!(
                "message {msg}: the server sent more than {} octets though LIST said {listed} (a broken or hostile server)",
                body_allowance(listed)
            );
            self.target.abort();
            self.overrun = Some(why.clone());
            return Err(io::Error::other(why));
        }
        if self.hashing {
            h.update(bytes);
        }
        self.target.data(bytes);
        Ok(())
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
        let id = self.target.finish();
        self.progress.message(self.account, n);
        self.done.push(Done {
            id,
            msg,
            key,
            size: n,
        });
        Ok(())
    }

    fn refused(&mut self, msg: MsgNum, line: &StatusLine) -> io::Result<()> {
        self.warnings
            .push(format!("server refused RETR {msg}: {}", status_text(line)));
        Ok(())
    }

    fn ready(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(self.target.ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CAPA bodies as real servers send them (the `+OK` line and final dot left out).
    const DOVECOT: &str = "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n";
    /// Dovecot with `auth_mechanisms = plain login cram-md5 scram-sha-256`.
    const DOVECOT_ALL: &str = "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n";
    /// Dovecot without TLS and `disable_plaintext_auth = yes`: no USER, no PLAIN.
    /// (Over TLS Dovecot lists them; here it stands for any server that does not.)
    const DOVECOT_NO_PLAINTEXT: &str = "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nSASL CRAM-MD5 SCRAM-SHA-256\r\n";
    /// Correio with every mechanism configured (some user has a PLAIN secret).
    const CORREIO_ALL: &str = "TOP\r\nUSER\r\nSASL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN\r\nRESP-CODES\r\nPIPELINING\r\nUIDL\r\nAUTH-RESP-CODE\r\n";
    /// Correio's default mechanisms.
    const CORREIO_DEFAULT: &str =
        "TOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nPIPELINING\r\nUIDL\r\nAUTH-RESP-CODE\r\n";
    const GMAIL: &str = "USER\r\nRESP-CODES\r\nEXPIRE 0\r\nLOGIN-DELAY 300\r\nTOP\r\nUIDL\r\nX-GOOGLE-RICO\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\n";
    const OUTLOOK: &str = "TOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n";
    const ONLY_USER: &str = "USER\r\nUIDL\r\n";
    /// A server that answers CAPA with `-ERR` (RFC 1939 only).
    const NO_CAPA: &str = "";
    /// CAPA without USER but with SASL LOGIN.
    const LOGIN_ONLY: &str = "UIDL\r\nSASL LOGIN\r\n";
    /// CAPA without USER and without a password mechanism.
    const SCRAM_ONLY: &str = "UIDL\r\nSASL SCRAM-SHA-256\r\n";

    fn caps(body: &str) -> Capabilities {
        Capabilities::parse_body(body.as_bytes()).expect("CAPA body")
    }

    fn sasl(m: &str) -> AuthMethod {
        AuthMethod::Sasl(m.into())
    }

    fn all(_: &str) -> bool {
        true
    }

    /// The client can run no SASL mechanism (e.g. a password that is not UTF-8).
    fn none(_: &str) -> bool {
        false
    }

    #[test]
    fn auto_over_tls_takes_a_method_every_stored_secret_allows() {
        // (server, APOP timestamp in greeting, expected)
        let cases: &[(&str, bool, AuthMethod)] = &[
            (DOVECOT, false, sasl("PLAIN")),
            (DOVECOT_ALL, false, sasl("PLAIN")),
            (DOVECOT_ALL, true, sasl("PLAIN")),
            (DOVECOT_NO_PLAINTEXT, false, sasl("SCRAM-SHA-256")),
            (CORREIO_ALL, true, sasl("PLAIN")),
            (CORREIO_DEFAULT, false, sasl("PLAIN")),
            (GMAIL, false, sasl("PLAIN")),
            (OUTLOOK, false, sasl("PLAIN")),
            (ONLY_USER, false, AuthMethod::User),
            (ONLY_USER, true, AuthMethod::User),
            (NO_CAPA, false, AuthMethod::User),
            (NO_CAPA, true, AuthMethod::User),
            (LOGIN_ONLY, false, sasl("LOGIN")),
            (LOGIN_ONLY, true, sasl("LOGIN")),
            (SCRAM_ONLY, false, sasl("SCRAM-SHA-256")),
        ];
        for (server, apop, want) in cases {
            assert_eq!(
                auto_method(&caps(server), true, *apop, &all),
                *want,
                "{server:?} apop={apop}"
            );
        }
    }

    #[test]
    fn auto_without_tls_prefers_challenge_response() {
        let cases: &[(&str, bool, AuthMethod)] = &[
            (DOVECOT, false, sasl("PLAIN")),
            (DOVECOT, true, AuthMethod::Apop),
            (DOVECOT_ALL, false, sasl("SCRAM-SHA-256")),
            (DOVECOT_ALL, true, sasl("SCRAM-SHA-256")),
            (DOVECOT_NO_PLAINTEXT, false, sasl("SCRAM-SHA-256")),
            (CORREIO_ALL, true, sasl("SCRAM-SHA-256")),
            (CORREIO_DEFAULT, false, sasl("PLAIN")),
            (CORREIO_DEFAULT, true, AuthMethod::Apop),
            (GMAIL, false, sasl("PLAIN")),
            (OUTLOOK, false, sasl("PLAIN")),
            (ONLY_USER, false, AuthMethod::User),
            (ONLY_USER, true, AuthMethod::Apop),
            (NO_CAPA, false, AuthMethod::User),
            (NO_CAPA, true, AuthMethod::Apop),
            (LOGIN_ONLY, false, sasl("LOGIN")),
            (SCRAM_ONLY, false, sasl("SCRAM-SHA-256")),
            ("USER\r\nSASL CRAM-MD5 PLAIN\r\n", true, sasl("CRAM-MD5")),
        ];
        for (server, apop, want) in cases {
            assert_eq!(
                auto_method(&caps(server), false, *apop, &all),
                *want,
                "{server:?} apop={apop}"
            );
        }
    }

    #[test]
    fn auto_skips_mechanisms_the_client_cannot_run() {
        for encrypted in [true, false] {
            for server in [DOVECOT, DOVECOT_ALL, CORREIO_ALL, GMAIL, ONLY_USER] {
                assert_eq!(
                    auto_method(&caps(server), encrypted, false, &none),
                    AuthMethod::User,
                    "{server:?} encrypted={encrypted}"
                );
            }
        }
        // APOP needs no SASL mechanism.
        assert_eq!(
            auto_method(&caps(CORREIO_ALL), false, true, &none),
            AuthMethod::Apop
        );
        let no_scram = |m: &str| m != "SCRAM-SHA-256";
        assert_eq!(
            auto_method(&caps(DOVECOT_ALL), false, false, &no_scram),
            sasl("CRAM-MD5")
        );
    }

    fn login_error(method: &AuthMethod, server: &str, encrypted: bool) -> String {
        let caps = caps(server);
        FetchError::Login {
            method: method_name(method).to_owned(),
            reason: "[AUTH] Authentication failed".into(),
            hint: is_challenge(method).then(|| challenge_hint(method, &caps, encrypted)),
        }
        .to_string()
    }

    #[test]
    fn a_refused_challenge_mechanism_names_itself_and_the_way_out() {
        assert_eq!(
            login_error(&sasl("SCRAM-SHA-256"), CORREIO_ALL, true),
            "login failed: SCRAM-SHA-256 authentication failed ([AUTH] Authentication failed); \
             the server may hold no SCRAM secret for this user; \
             try `--auth plain` (or `auth = \"plain\"` in the account file)"
        );
        assert_eq!(
            login_error(&sasl("CRAM-MD5"), DOVECOT_ALL, false),
            "login failed: CRAM-MD5 authentication failed ([AUTH] Authentication failed); \
             the server may hold no CRAM-MD5 secret for this user; \
             try `--auth plain` (or `auth = \"plain\"` in the account file) \
             over TLS (`--tls implicit` or `--tls starttls`)"
        );
        // No PLAIN offered: USER/PASS is the way.
        assert_eq!(
            login_error(&AuthMethod::Apop, ONLY_USER, false),
            "login failed: APOP authentication failed ([AUTH] Authentication failed); \
             the server may hold no APOP secret for this user; \
             try `--auth user` (or `auth = \"user\"` in the account file) \
             over TLS (`--tls implicit` or `--tls starttls`)"
        );
        // Neither USER nor PLAIN, but LOGIN.
        assert!(
            login_error(&sasl("SCRAM-SHA-256"), "SASL SCRAM-SHA-256 LOGIN\r\n", true)
                .ends_with("try `--auth login` (or `auth = \"login\"` in the account file)")
        );
    }

    #[test]
    fn a_refused_password_method_names_itself() {
        assert_eq!(
            login_error(&sasl("PLAIN"), DOVECOT, true),
            "login failed: PLAIN authentication failed ([AUTH] Authentication failed)"
        );
        assert_eq!(
            login_error(&AuthMethod::User, ONLY_USER, true),
            "login failed: USER/PASS authentication failed ([AUTH] Authentication failed)"
        );
        assert_eq!(
            login_error(&sasl("LOGIN"), LOGIN_ONLY, true),
            "login failed: LOGIN authentication failed ([AUTH] Authentication failed)"
        );
    }
}
