//! The LMTP listener (RFC 2033): how an MTA (Postfix, Exim) hands mail to Correio.
//!
//! Entry point for `correio serve --lmtp ADDR:PORT|unix:PATH`:
//!
//! ```no_run
//! # async fn demo(users: std::sync::Arc<correio_auth::UserDb>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use correio_server::lmtp::{LmtpContext, LmtpListener, run_lmtp};
//! let addr = correio_server::LmtpAddr::parse("127.0.0.1:2424").unwrap();
//! let listener = LmtpListener::bind(&addr).await?;
//! let ctx = Arc::new(LmtpContext::new(users, "maildir:/srv/mail/%u".to_string()));
//! run_lmtp(listener, ctx, tokio::signal::ctrl_c()).await;
//! # Ok(()) }
//! ```
//!
//! Contract:
//! - Commands: LHLO, MAIL (with `SIZE=` and `BODY=7BIT|8BITMIME`), RCPT (each
//!   recipient checked against the users file: unknown → `550 5.1.1`), DATA with one
//!   reply per accepted recipient, RSET, NOOP, VRFY (`252`), HELP, QUIT. Extensions:
//!   PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES.
//! - A recipient's `250` after DATA is sent only when [`correio_store::deliver()`]
//!   returned, i.e. the message is complete and durable in that mailbox; a failure is
//!   `4xx` (temporary: the MTA retries) or `5xx` for that recipient alone.
//! - Every input is bounded: command line length, message size (the data is still read
//!   to its end to stay in step, then refused with `552 5.3.4` per recipient),
//!   recipients per transaction, errors per connection, idle time, connections.
//! - End of data is only CRLF `.` CRLF; a bare LF never ends or stuffs a line (no SMTP
//!   smuggling through a lenient terminator). The data is spooled to an unlinked
//!   temporary file, never held in memory, and a `Return-Path:` header with the
//!   envelope sender is put in front, as RFC 5321 §4.4 asks of final delivery.
//! - Shutdown: stop accepting; idle connections get `421` at once, a transaction in
//!   progress finishes (its replies are sent) before the connection closes.
//!
//! The user for `RCPT TO:<addr>` is looked up as the full address, then its local part,
//! then the local part without a `+detail` ([`resolve_recipient`]); the mailbox is the
//! user's `userdb_mail=` or the default template (`%u` = the user name found).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use correio_auth::{UserDb, validate_username};
use correio_store::{
    DeliverError, DeliverErrorKind, DeliverOptions, MailboxRef, Stores, TemplateVars,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{LmtpAddr, UsernamePolicy};

/// The bounds of the LMTP listener.
#[derive(Debug, Clone)]
pub struct LmtpLimits {
    /// Largest message accepted, in octets as received (after dot-unstuffing).
    pub max_message_size: u64,
    /// Recipients per transaction (RFC 5321 asks for at least 100).
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321: 512; we allow a bit more for
    /// long addresses).
    pub max_command_line: usize,
    /// Idle time allowed while waiting for a command or data.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Bad commands before the connection is closed.
    pub max_errors: u32,
}

impl Default for LmtpLimits {
    fn default() -> Self {
        LmtpLimits {
            max_message_size: 64 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 1024,
            idle_timeout: Duration::from_secs(300),
            max_connections: 100,
            max_errors: 20,
        }
    }
}

/// Everything the listener needs, shared by all connections.
#[derive(Debug)]
#[non_exhaustive]
pub struct LmtpContext {
    /// The users file (recipients are looked up here).
    pub users: Arc<dyn RecipientLookup + Send + Sync>,
    /// The mail location template for users without `userdb_mail=`
    /// (e.g. `maildir:<data>/mail/%u`).
    pub default_mail_location: String,
    /// The name in the greeting and LHLO reply.
    pub hostname: String,
    /// Bounds.
    pub limits: LmtpLimits,
    /// Delivery options (quota...). The size limit is taken from `limits`.
    pub deliver: DeliverOptions,
    /// Where message data is spooled (unlinked at once) during DATA.
    pub spool_dir: PathBuf,
    /// How recipient names are rewritten before lookup (as logins are).
    pub username: UsernamePolicy,
    /// Where delivery results are counted.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The mail stores (the file backends and any configured store).
    pub stores: Stores,
}

impl LmtpContext {
    /// A context with default limits, the machine's host name and the system temp dir
    /// as spool.
    pub fn new(
        users: Arc<dyn RecipientLookup + Send + Sync>,
        default_mail_location: String,
    ) -> Self {
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "localhost".to_string());
        LmtpContext {
            users,
            default_mail_location,
            hostname,
            limits: LmtpLimits::default(),
            deliver: DeliverOptions::default(),
            spool_dir: std::env::temp_dir(),
            username: UsernamePolicy::default(),
            metrics: None,
            stores: Stores::new(),
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: LmtpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the delivery options (quota, lock timeout).
    pub fn with_deliver_options(mut self, opts: DeliverOptions) -> Self {
        self.deliver = opts;
        self
    }

    /// Replaces the name policy.
    pub fn with_username_policy(mut self, policy: UsernamePolicy) -> Self {
        self.username = policy;
        self
    }

    /// Counts deliveries in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replaces the spool directory.
    pub fn with_spool_dir(mut self, dir: PathBuf) -> Self {
        self.spool_dir = dir;
        self
    }
}

/// A bound LMTP socket.
#[derive(Debug)]
pub enum LmtpListener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket (its path is removed again when the listener stops).
    Unix(UnixListener, PathBuf),
}

impl LmtpListener {
    /// Binds `addr`. For a Unix socket, a stale socket file at the path is replaced;
    /// any other kind of file there is an error.
    pub async fn bind(addr: &LmtpAddr) -> io::Result<LmtpListener> {
        match addr {
            LmtpAddr::Tcp(a) => Ok(LmtpListener::Tcp(TcpListener::bind(a).await?)),
            LmtpAddr::Unix(p) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    if m.file_type().is_socket() {
                        std::fs::remove_file(p)?;
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", p.display()),
                        ));
                    }
                }
                Ok(LmtpListener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The TCP address, if TCP (tests bind port 0 and ask).
    pub fn local_tcp_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            LmtpListener::Tcp(l) => l.local_addr().ok(),
            LmtpListener::Unix(..) => None,
        }
    }
}

/// What `RCPT TO` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user of the users file, and the mailbox to deliver to.
    Found {
        /// The user name as in the users file.
        user: String,
        /// The mailbox.
        location: MailboxRef,
        /// The user's own quota (`userdb_quota_bytes`, `userdb_quota_messages`: a
        /// column or attribute of the user database), over the configured one.
        quota: UserQuota,
    },
    /// No such user.
    Unknown,
    /// The user exists but the mail location cannot be built (configuration error).
    Unusable(String),
    /// The user database cannot answer now (451 4.3.0, `deliver` exit 75).
    Temporary(String),
}

/// A user's own quota, from their record (none: the configured one applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserQuota {
    /// Octets (0: unlimited).
    pub bytes: Option<u64>,
    /// Messages (0: unlimited).
    pub messages: Option<u64>,
}

impl UserQuota {
    /// Applies this quota over `opts`' (0 means none).
    pub fn apply(&self, opts: DeliverOptions) -> DeliverOptions {
        let bytes = self
            .bytes
            .map_or(opts.quota_bytes, |b| (b > 0).then_some(b));
        let messages = self
            .messages
            .map_or(opts.quota_messages, |m| (m > 0).then_some(m));
        opts.quota(bytes, messages)
    }
}

fn user_quota(record: &correio_auth::UserRecord) -> UserQuota {
    let num = |k: &str| record.field(k).and_then(|v| v.trim().parse::<u64>().ok());
    UserQuota {
        bytes: num("userdb_quota_bytes"),
        messages: num("userdb_quota_messages"),
    }
}

/// Where recipients are looked up: the passwd-file, or any user database of the
/// server ([`crate::Accounts`]). `Err` is a temporary failure.
pub trait RecipientLookup: std::fmt::Debug {
    /// The record for `name` (already rewritten by the name policy), or none.
    fn lookup_recipient(&self, name: &str) -> Result<Option<correio_auth::UserRecord>, String>;
}

impl RecipientLookup for UserDb {
    fn lookup_recipient(&self, name: &str) -> Result<Option<correio_auth::UserRecord>, String> {
        Ok(self.lookup(name))
    }
}

impl RecipientLookup for correio_users::UserSource {
    fn lookup_recipient(&self, name: &str) -> Result<Option<correio_auth::UserRecord>, String> {
        self.lookup(name).map_err(|t| t.0)
    }
}

impl RecipientLookup for crate::Accounts {
    fn lookup_recipient(&self, name: &str) -> Result<Option<correio_auth::UserRecord>, String> {
        self.source().lookup(name).map_err(|t| t.0)
    }
}

/// Looks up the user for a recipient address (see the module docs for the order) and
/// builds the mailbox location from `userdb_mail=` or `default_template`. Also used by
/// `correio deliver --user`.
pub fn resolve_recipient(
    users: &dyn RecipientLookup,
    default_template: &str,
    address: &str,
) -> Recipient {
    resolve_recipient_with(users, default_template, address, &UsernamePolicy::default())
}

/// [`resolve_recipient`] with the server's name policy (`auth.username_format`,
/// `auth.default_domain`) applied first, so mail for `Bob@Example.Org` reaches the
/// user who logs in as `bob@example.org`.
pub fn resolve_recipient_with(
    users: &dyn RecipientLookup,
    default_template: &str,
    address: &str,
    policy: &UsernamePolicy,
) -> Recipient {
    let mut candidates: Vec<String> = Vec::new();
    let mut push = |c: String| {
        if !candidates.contains(&c) {
            candidates.push(c);
        }
    };
    for first in policy.candidates(address) {
        push(first.clone());
        push(address.to_string());
        if let Some((local, _)) = first.rsplit_once('@') {
            push(local.to_string());
        }
        let local = first.rsplit_once('@').map_or(first.as_str(), |(l, _)| l);
        if let Some((base, _)) = local.split_once('+')
            && !base.is_empty()
        {
            if let Some((_, domain)) = first.rsplit_once('@') {
                push(format!("{base}@{domain}"));
            }
            push(base.to_string());
        }
    }
    for c in candidates {
        if validate_username(&c).is_err() {
            continue;
        }
        let record = match users.lookup_recipient(&c) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return Recipient::Temporary(e),
        };
        let template = record
            .mail_location()
            .unwrap_or(default_template)
            .to_string();
        let home = record.home_dir().map(PathBuf::from);
        return match MailboxRef::from_template(
            &template,
            &TemplateVars {
                user: &record.name,
                home: home.as_deref(),
            },
        ) {
            Ok(location) => Recipient::Found {
                user: record.name.clone(),
                location,
                quota: user_quota(&record),
            },
            Err(e) => Recipient::Unusable(e.to_string()),
        };
    }
    Recipient::Unknown
}

/// Accepts connections until `shutdown` resolves, then stops accepting, lets every
/// transaction in progress finish (idle connections get `421`), and returns when all
/// connections are closed.
pub async fn run_lmtp<F>(listener: LmtpListener, ctx: Arc<LmtpContext>, shutdown: F)
where
    F: Future,
{
    let (_keep, rx) = watch::channel(ctx);
    run_lmtp_reloadable(listener, rx, shutdown).await;
}

/// [`run_lmtp`] with a context that can be replaced while running (SIGHUP): each new
/// connection takes the context current when it is accepted.
pub async fn run_lmtp_reloadable<F>(
    listener: LmtpListener,
    contexts: watch::Receiver<Arc<LmtpContext>>,
    shutdown: F,
) where
    F: Future,
{
    let ctx = contexts.borrow().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Take the permit before accepting: at the limit, connections wait in the
        // kernel's backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = accept(&listener) => a,
        };
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        match accepted {
            Ok(Conn::Tcp(s, peer)) => {
                let _ = s.set_nodelay(true);
                let (ctx, stop) = (contexts.borrow().clone(), stop_rx.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let (r, w) = s.into_split();
                    serve_connection(r, w, ctx, stop, peer.to_string()).await;
                });
            }
            Ok(Conn::Unix(s)) => {
                let (ctx, stop) = (contexts.borrow().clone(), stop_rx.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let (r, w) = s.into_split();
                    serve_connection(r, w, ctx, stop, "unix".to_string()).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "lmtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let LmtpListener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &LmtpListener) -> io::Result<Conn> {
    match l {
        LmtpListener::Tcp(t) => t.accept().await.map(|(s, a)| Conn::Tcp(s, a)),
        LmtpListener::Unix(u, _) => u.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

/// A parsed command (the part of the session with no I/O).
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Lhlo(String),
    HeloOrEhlo,
    Mail { from: String, size: Option<u64> },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
}

/// Why a command line was refused: the reply to send.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(&'static str);

fn parse_path(rest: &str, allow_null: bool) -> Result<(String, &str), Refusal> {
    let rest = rest.trim_start_matches(' ');
    let Some(inner) = rest.strip_prefix('<') else {
        return Err(Refusal("501 5.5.4 Syntax: address must be in <>"));
    };
    let Some(end) = inner.find('>') else {
        return Err(Refusal("501 5.5.4 Syntax: missing >"));
    };
    let addr = &inner[..end];
    // Source routes (`<@a,@b:user@host>`) are obsolete; RFC 5321 says to ignore them.
    let addr = match addr.split_once(':') {
        Some((route, a)) if route.starts_with('@') => a,
        _ => addr,
    };
    if addr.is_empty() && !allow_null {
        return Err(Refusal("501 5.1.3 Empty recipient address"));
    }
    if addr.len() > 254 || !addr.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Refusal("553 5.1.3 Bad address syntax"));
    }
    Ok((addr.to_string(), &inner[end + 1..]))
}

fn parse_command(line: &[u8], max_size: u64) -> Result<Cmd, Refusal> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Refusal("500 5.5.2 Command must be ASCII"));
    };
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    match upper.as_str() {
        "LHLO" => {
            let host = rest.trim();
            if host.is_empty() || host.contains(' ') {
                return Err(Refusal("501 5.5.4 Syntax: LHLO hostname"));
            }
            Ok(Cmd::Lhlo(host.to_string()))
        }
        "HELO" | "EHLO" => Ok(Cmd::HeloOrEhlo),
        "MAIL" => {
            let Some(r) = strip_prefix_ci(rest, "FROM:") else {
                return Err(Refusal("501 5.5.4 Syntax: MAIL FROM:<address>"));
            };
            let (from, params) = parse_path(r, true)?;
            let mut size = None;
            for p in params.split(' ').filter(|p| !p.is_empty()) {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.to_ascii_uppercase().as_str() {
                    "SIZE" => {
                        let n: u64 = v
                            .parse()
                            .map_err(|_| Refusal("501 5.5.4 Bad SIZE parameter"))?;
                        if n > max_size {
                            return Err(Refusal(
                                "552 5.3.4 Message size exceeds fixed maximum message size",
                            ));
                        }
                        size = Some(n);
                    }
                    "BODY" => {
                        if !matches!(v.to_ascii_uppercase().as_str(), "7BIT" | "8BITMIME") {
                            return Err(Refusal("501 5.5.4 Unsupported BODY type"));
                        }
                    }
                    _ => return Err(Refusal("555 5.5.4 Unsupported MAIL parameter")),
                }
            }
            Ok(Cmd::Mail { from, size })
        }
        "RCPT" => {
            let Some(r) = strip_prefix_ci(rest, "TO:") else {
                return Err(Refusal("501 5.5.4 Syntax: RCPT TO:<address>"));
            };
            let (to, params) = parse_path(r, false)?;
            if !params.trim().is_empty() {
                return Err(Refusal("555 5.5.4 Unsupported RCPT parameter"));
            }
            Ok(Cmd::Rcpt(to))
        }
        "DATA" if rest.is_empty() => Ok(Cmd::Data),
        "RSET" if rest.is_empty() => Ok(Cmd::Rset),
        "NOOP" => Ok(Cmd::Noop),
        "QUIT" if rest.is_empty() => Ok(Cmd::Quit),
        "VRFY" => Ok(Cmd::Vrfy),
        "HELP" => Ok(Cmd::Help),
        "DATA" | "RSET" | "QUIT" => Err(Refusal("501 5.5.4 Syntax: no parameters allowed")),
        _ => Err(Refusal("500 5.5.2 Command unrecognized")),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Strict SMTP dot-unstuffing: only CRLF `.` CRLF ends the data, and only a `.` right
/// after CRLF (or at the very start) is a stuffing dot. Output keeps CRLF.
#[derive(Debug)]
struct DataUnstuffer {
    /// 0: just after CRLF (line start); 1: line start saw "."; 2: saw ".\r";
    /// 3: mid-line; 4: mid-line after CR; 5: done.
    state: u8,
}

impl DataUnstuffer {
    fn new() -> Self {
        DataUnstuffer { state: 0 }
    }

    fn is_done(&self) -> bool {
        self.state == 5
    }

    /// Appends data bytes to `out`; returns how much of `input` it used (it stops right
    /// after the terminator).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                0 => match b {
                    b'.' => self.state = 1,
                    b'\r' => {
                        out.push(b);
                        self.state = 4;
                    }
                    _ => {
                        out.push(b);
                        self.state = 3;
                    }
                },
                1 => match b {
                    b'\r' => self.state = 2,
                    _ => {
                        // A stuffing dot: dropped; this byte starts the line's text.
                        out.push(b);
                        self.state = 3;
                    }
                },
                2 => {
                    if b == b'\n' {
                        self.state = 5;
                        return i + 1;
                    }
                    // "." CR x: the dot was stuffing; CR was data.
                    out.push(b'\r');
                    out.push(b);
                    self.state = if b == b'\r' { 4 } else { 3 };
                }
                3 => {
                    out.push(b);
                    if b == b'\r' {
                        self.state = 4;
                    }
                }
                4 => {
                    out.push(b);
                    self.state = match b {
                        b'\n' => 0,
                        b'\r' => 4,
                        _ => 3,
                    };
                }
                _ => return i,
            }
        }
        input.len()
    }
}

/// Reads a spool file from the start with `pread` (independent of other readers).
struct SpoolReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Creates an anonymous spool file: created exclusively (mode 0600) and unlinked at
/// once, so nothing is left behind whatever happens.
fn new_spool(dir: &Path) -> io::Result<File> {
    for _ in 0..16 {
        let name = format!(
            ".correio-lmtp-{}-{}-{}",
            std::process::id(),
            SPOOL_SEQ.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "cannot create a unique spool file",
    ))
}

/// A short, path-free text for an LMTP reply; the full error goes to the log.
fn failure_text(e: &DeliverError) -> &'static str {
    match e.kind() {
        DeliverErrorKind::TooLarge => "Message too big",
        DeliverErrorKind::QuotaExceeded => "Mailbox full",
        DeliverErrorKind::DiskFull => "Insufficient system storage",
        DeliverErrorKind::MailboxUnusable => "Mailbox unavailable",
        DeliverErrorKind::LockTimeout => "Mailbox locked, try again later",
        DeliverErrorKind::Input => "Error reading message",
        _ => "Local error in processing",
    }
}

struct AcceptedRcpt {
    address: String,
    location: MailboxRef,
    quota: UserQuota,
}

/// What the reader saw.
enum Input {
    Line(Vec<u8>),
    TooLong,
    Closed,
    TimedOut,
}

struct Connection<R, W> {
    r: R,
    w: W,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    pos: usize,
    ctx: Arc<LmtpContext>,
    peer: String,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(self.ctx.limits.idle_timeout, self.r.read(&mut chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one command line (without CRLF). A line over the limit is discarded up to
    /// its LF and reported once; the buffer never holds more than the limit plus one
    /// read.
    async fn read_line(&mut self) -> Input {
        let max = self.ctx.limits.max_command_line;
        let mut discarding = false;
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                self.pos += i + 1;
                if discarding || i + 1 > max {
                    return Input::TooLong;
                }
                let mut line = self.buf[start..start + i].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Input::Line(line);
            }
            if self.buf.len() - self.pos > max {
                discarding = true;
                self.pos = self.buf.len();
            }
            match self.fill().await {
                Ok(0) => return Input::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Input::TimedOut,
                Err(_) => return Input::Closed,
            }
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        let mut s = String::with_capacity(text.len() + 2);
        s.push_str(text);
        s.push_str("\r\n");
        self.w.write_all(s.as_bytes()).await?;
        // With PIPELINING the client may have sent more; answering in one flush per
        // command keeps the order and is cheap on loopback.
        self.w.flush().await
    }

    /// Reads the data after `354` into a spool file. Returns the spool, or `None` when
    /// the size limit was passed (then the data was read to its end and dropped).
    async fn read_data(&mut self, sender: &str) -> io::Result<Option<Arc<File>>> {
        let spool_dir = self.ctx.spool_dir.clone();
        let file = tokio::task::spawn_blocking(move || new_spool(&spool_dir))
            .await
            .map_err(io::Error::other)??;
        let mut spool = tokio::fs::File::from_std(file);
        let header = format!("Return-Path: <{sender}>\r\n");
        spool.write_all(header.as_bytes()).await?;
        let max = self.ctx.limits.max_message_size;
        let mut unstuff = DataUnstuffer::new();
        let mut out = Vec::with_capacity(32 * 1024);
        let mut total = 0u64;
        let mut too_big = false;
        loop {
            let used = unstuff.feed(&self.buf[self.pos..], &mut out);
            self.pos += used;
            total += out.len() as u64;
            if total > max {
                too_big = true;
            }
            if !too_big && !out.is_empty() {
                spool.write_all(&out).await?;
            }
            out.clear();
            if unstuff.is_done() {
                break;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during DATA",
                ));
            }
        }
        if too_big {
            return Ok(None);
        }
        spool.flush().await?;
        let file = spool.into_std().await;
        Ok(Some(Arc::new(file)))
    }
}

async fn serve_connection<R, W>(
    r: R,
    w: W,
    ctx: Arc<LmtpContext>,
    mut stop: watch::Receiver<bool>,
    peer: String,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut c = Connection {
        r,
        w,
        buf: Vec::with_capacity(16 * 1024),
        pos: 0,
        ctx: ctx.clone(),
        peer,
    };
    let greeting = format!("220 {} LMTP Correio ready", ctx.hostname);
    if c.reply(&greeting).await.is_err() {
        return;
    }
    debug!(peer = %c.peer, "lmtp connection");
    let mut greeted = false;
    let mut sender: Option<String> = None;
    let mut rcpts: Vec<AcceptedRcpt> = Vec::new();
    let mut errors = 0u32;
    loop {
        let input = tokio::select! {
            biased;
            // Between commands, a shutdown closes the connection unless a transaction
            // is open; an open one finishes first.
            _ = stop.changed(), if sender.is_none() => {
                let _ = c.reply("421 4.3.2 Service shutting down").await;
                return;
            }
            i = c.read_line() => i,
        };
        let line = match input {
            Input::Line(l) => l,
            Input::TooLong => {
                errors += 1;
                if c.reply("500 5.5.2 Line too long").await.is_err()
                    || errors >= ctx.limits.max_errors
                {
                    let _ = c
                        .reply("421 4.7.0 Too many errors, closing connection")
                        .await;
                    return;
                }
                continue;
            }
            Input::Closed => return,
            Input::TimedOut => {
                let _ = c.reply("421 4.4.2 Idle timeout, closing connection").await;
                return;
            }
        };
        let cmd = match parse_command(&line, ctx.limits.max_message_size) {
            Ok(cmd) => cmd,
            Err(Refusal(text)) => {
                errors += 1;
                if c.reply(text).await.is_err() {
                    return;
                }
                if errors >= ctx.limits.max_errors {
                    let _ = c
                        .reply("421 4.7.0 Too many errors, closing connection")
                        .await;
                    return;
                }
                continue;
            }
        };
        let result = match cmd {
            Cmd::Lhlo(_) => {
                greeted = true;
                sender = None;
                rcpts.clear();
                let text = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {}",
                    ctx.hostname, ctx.limits.max_message_size
                );
                c.reply(&text).await
            }
            Cmd::HeloOrEhlo => {
                errors += 1;
                c.reply("500 5.5.1 This is LMTP: use LHLO").await
            }
            Cmd::Mail { from, size: _ } => {
                if !greeted {
                    c.reply("503 5.5.1 Send LHLO first").await
                } else if sender.is_some() {
                    c.reply("503 5.5.1 Nested MAIL command").await
                } else {
                    sender = Some(from);
                    c.reply("250 2.1.0 Sender OK").await
                }
            }
            Cmd::Rcpt(to) => {
                if sender.is_none() {
                    c.reply("503 5.5.1 Send MAIL first").await
                } else if rcpts.len() >= ctx.limits.max_recipients {
                    c.reply("452 4.5.3 Too many recipients").await
                } else {
                    let (ctx2, to2) = (ctx.clone(), to.clone());
                    let found = tokio::task::spawn_blocking(move || {
                        resolve_recipient_with(
                            &*ctx2.users,
                            &ctx2.default_mail_location,
                            &to2,
                            &ctx2.username,
                        )
                    })
                    .await;
                    match found {
                        Ok(Recipient::Found {
                            user,
                            location,
                            quota,
                        }) => {
                            debug!(rcpt = %to, user = %user, "lmtp recipient");
                            rcpts.push(AcceptedRcpt {
                                address: to,
                                location,
                                quota,
                            });
                            c.reply("250 2.1.5 Recipient OK").await
                        }
                        Ok(Recipient::Unknown) => {
                            if let Some(m) = &c.ctx.metrics {
                                m.delivery("unknown_user");
                            }
                            c.reply(&format!("550 5.1.1 <{to}> User unknown")).await
                        }
                        Ok(Recipient::Temporary(e)) => {
                            warn!(rcpt = %to, error = %e, "user database unavailable");
                            if let Some(m) = &c.ctx.metrics {
                                m.delivery("temporary_failure");
                            }
                            c.reply(&format!(
                                "451 4.3.0 <{to}> User database unavailable, try again later"
                            ))
                            .await
                        }
                        Ok(Recipient::Unusable(e)) => {
                            warn!(rcpt = %to, error = %e, "mail location unusable");
                            c.reply(&format!(
                                "451 4.3.0 <{to}> Mailbox unavailable, try again later"
                            ))
                            .await
                        }
                        Err(_) => c.reply("451 4.3.0 Internal error, try again later").await,
                    }
                }
            }
            Cmd::Data => {
                if sender.is_none() {
                    c.reply("503 5.5.1 Send MAIL first").await
                } else if rcpts.is_empty() {
                    c.reply("503 5.5.1 No valid recipients").await
                } else {
                    let from = sender.take().unwrap_or_default();
                    let list = std::mem::take(&mut rcpts);
                    match data_phase(&mut c, &from, list).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            debug!(peer = %c.peer, error = %e, "lmtp data phase ended");
                            return;
                        }
                    }
                }
            }
            Cmd::Rset => {
                sender = None;
                rcpts.clear();
                c.reply("250 2.0.0 OK").await
            }
            Cmd::Noop => c.reply("250 2.0.0 OK").await,
            Cmd::Vrfy => {
                c.reply("252 2.5.2 Cannot VRFY user, but will accept message")
                    .await
            }
            Cmd::Help => {
                c.reply("214 2.0.0 Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT")
                    .await
            }
            Cmd::Quit => {
                let _ = c.reply("221 2.0.0 Bye").await;
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// 354, the data, then one reply per recipient in RCPT order, each sent only once that
/// recipient's delivery is durable (or has failed).
async fn data_phase<R, W>(
    c: &mut Connection<R, W>,
    sender: &str,
    rcpts: Vec<AcceptedRcpt>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    c.reply("354 Start mail input; end with <CRLF>.<CRLF>")
        .await?;
    let spool = match c.read_data(sender).await {
        Ok(v) => v,
        Err(e)
            if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::TimedOut =>
        {
            if e.kind() == io::ErrorKind::TimedOut {
                let _ = c
                    .reply("421 4.4.2 Timeout during DATA, closing connection")
                    .await;
            }
            return Err(e);
        }
        Err(e) => {
            // The spool failed (disk full...). The data must still be consumed to stay
            // in step; simplest and safe: refuse each recipient and close.
            warn!(error = %e, "lmtp spool failed");
            for r in &rcpts {
                c.reply(&format!("451 4.3.0 <{}> Cannot spool message", r.address))
                    .await?;
            }
            return Err(e);
        }
    };
    let Some(spool) = spool else {
        for r in &rcpts {
            c.reply(&format!("552 5.3.4 <{}> Message too big", r.address))
                .await?;
        }
        return Ok(());
    };
    for r in rcpts {
        let opts = r
            .quota
            .apply(c.ctx.deliver.clone())
            .max_message_size(Some(c.ctx.limits.max_message_size.saturating_add(1024)))
            .envelope_sender(Some(sender.to_string()));
        let file = spool.clone();
        let location = r.location.clone();
        let stores = c.ctx.stores.clone();
        let result = tokio::task::spawn_blocking(move || {
            stores.deliver(&location, SpoolReader { file, pos: 0 }, &opts)
        })
        .await;
        let text = match result {
            Ok(Ok(d)) => {
                info!(target: "correio::lmtp", rcpt = %r.address, size = d.size, "delivered");
                if let Some(m) = &c.ctx.metrics {
                    m.delivery("delivered");
                }
                format!("250 2.0.0 <{}> Saved", r.address)
            }
            Ok(Err(e)) => {
                warn!(target: "correio::lmtp", rcpt = %r.address, mailbox = %r.location, error = %e, temporary = e.is_temporary(), "delivery failed");
                if let Some(m) = &c.ctx.metrics {
                    m.delivery(if e.is_temporary() {
                        "temporary_failure"
                    } else {
                        "permanent_failure"
                    });
                }
                format!(
                    "{} {} <{}> {}",
                    e.reply_code(),
                    e.enhanced_status(),
                    r.address,
                    failure_text(&e)
                )
            }
            Err(_) => format!("451 4.3.0 <{}> Internal error", r.address),
        };
        c.reply(&text).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff_all(input: &[u8], split: usize) -> (Vec<u8>, usize, bool) {
        let mut u = DataUnstuffer::new();
        let mut out = Vec::new();
        let a = u.feed(&input[..split], &mut out);
        let mut used = a;
        if !u.is_done() {
            used += u.feed(&input[split..], &mut out);
        }
        (out, used, u.is_done())
    }

    #[test]
    fn data_unstuffing_in_every_split() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nafter";
        for split in 0..=wire.len() {
            let (out, used, done) = unstuff_all(wire, split);
            assert!(done, "split {split}");
            assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n", "split {split}");
            assert_eq!(&wire[used..], b"after");
        }
    }

    #[test]
    fn bare_lf_never_terminates() {
        let wire = b"a\n.\nb\r\n.\r\n";
        let (out, used, done) = unstuff_all(wire, 3);
        assert!(done);
        assert_eq!(used, wire.len());
        assert_eq!(out, b"a\n.\nb\r\n");
        // Empty message.
        let (out, _, done) = unstuff_all(b".\r\n", 1);
        assert!(done && out.is_empty());
        // ".\rx" at a line start: the dot was stuffing.
        let (out, _, done) = unstuff_all(b".\rx\r\n.\r\n", 2);
        assert!(done);
        assert_eq!(out, b"\rx\r\n");
    }

    #[test]
    fn command_grammar() {
        let max = 1000;
        assert_eq!(
            parse_command(b"LHLO mx.example.org", max),
            Ok(Cmd::Lhlo("mx.example.org".into()))
        );
        assert_eq!(
            parse_command(b"mail from:<a@b> SIZE=10 BODY=8BITMIME", max),
            Ok(Cmd::Mail {
                from: "a@b".into(),
                size: Some(10)
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<>", max),
            Ok(Cmd::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM: <x@y>", max),
            Ok(Cmd::Mail {
                from: "x@y".into(),
                size: None
            })
        );
        assert!(
            parse_command(b"MAIL FROM:<a@b> SIZE=1001", max)
                .unwrap_err()
                .0
                .starts_with("552")
        );
        assert!(
            parse_command(b"MAIL FROM:<a@b> FOO=1", max)
                .unwrap_err()
                .0
                .starts_with("555")
        );
        assert!(
            parse_command(b"MAIL FROM:a@b", max)
                .unwrap_err()
                .0
                .starts_with("501")
        );
        assert_eq!(
            parse_command(b"RCPT TO:<@relay:u@h>", max),
            Ok(Cmd::Rcpt("u@h".into()))
        );
        assert!(
            parse_command(b"RCPT TO:<>", max)
                .unwrap_err()
                .0
                .starts_with("501")
        );
        assert!(parse_command(b"RCPT TO:<a b@c>", max).is_err());
        assert!(
            parse_command(b"DATA x", max)
                .unwrap_err()
                .0
                .starts_with("501")
        );
        assert!(
            parse_command(b"\xff\xfe", max)
                .unwrap_err()
                .0
                .starts_with("500")
        );
        assert!(
            parse_command(b"BDAT 10", max)
                .unwrap_err()
                .0
                .starts_with("500")
        );
        assert_eq!(parse_command(b"EHLO x", max), Ok(Cmd::HeloOrEhlo));
    }
}

/// Fuzz bodies for the LMTP parsers (`fuzz/fuzz_targets/lmtp_input.rs`; the seeds are
/// replayed by `tests/lmtp_fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzzing {
    use super::{DataUnstuffer, Refusal, parse_command};

    /// Every line of `data` through the command parser (never panics; every refusal is
    /// a well-formed reply), and `data` through the DATA unstuffer, checked against a
    /// plain reference implementation in every two-way split.
    pub fn lmtp_input(data: &[u8]) {
        for line in data.split(|&b| b == b'\n') {
            if let Err(Refusal(text)) = parse_command(line, 1000) {
                let b = text.as_bytes();
                assert!(b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ');
                assert!(matches!(b[0], b'4' | b'5'));
            }
        }
        let framed = [&b"\r\n"[..], data].concat();
        let Some(p) = framed.windows(5).position(|w| w == b"\r\n.\r\n") else {
            let mut u = DataUnstuffer::new();
            let mut out = Vec::new();
            assert_eq!(u.feed(data, &mut out), data.len());
            assert!(!u.is_done() && out.len() <= data.len());
            return;
        };
        let body = &framed[..p + 2];
        let mut expected = Vec::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            expected.push(body[i]);
            if body[i..].starts_with(b"\r\n.") {
                expected.push(b'\n');
                i += 3;
                continue;
            }
            i += 1;
        }
        let expected = &expected[2..];
        let consumed = p + 5 - 2;
        for split in [0, data.len() / 3, data.len() / 2, data.len()] {
            let mut u = DataUnstuffer::new();
            let mut out = Vec::new();
            let mut used = u.feed(&data[..split], &mut out);
            if !u.is_done() {
                used += u.feed(&data[split..], &mut out);
            }
            assert!(u.is_done());
            assert_eq!(used, consumed);
            assert_eq!(out, expected);
        }
    }
}
