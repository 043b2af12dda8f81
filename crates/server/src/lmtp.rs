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
//! The conversation itself (grammar, replies, dot-unstuffing, limits, timers) is the
//! sans-IO machine [`correio_proto::lmtp::LmtpSession`]; this module is its driver:
//! the listener, the recipient lookup, the spool and the deliveries.
//!
//! Contract:
//! - Commands: LHLO, MAIL (with `SIZE=` and `BODY=7BIT|8BITMIME`), RCPT (each
//!   recipient checked against the users file: unknown → `550 5.1.1`), DATA with one
//!   reply per accepted recipient, RSET, NOOP, VRFY (`252`), HELP, QUIT. Extensions:
//!   PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES.
//! - A recipient's `250` after DATA is sent only when [`correio_store::deliver()`]
//!   returned, i.e. the message is complete and durable in that mailbox; a failure is
//!   `4xx` (temporary: the MTA retries) or `5xx` for that recipient alone, mapped in one
//!   place ([`delivery_failure`]).
//! - Every input is bounded: command line length, message size (the data is still read
//!   to its end to stay in step, then refused with `552 5.3.4` per recipient),
//!   recipients per transaction, errors per connection, idle time (from the last
//!   complete command line, or the last data read: bytes that never end a line do not
//!   count), connections.
//! - End of data is only CRLF `.` CRLF; a bare LF never ends or stuffs a line (no SMTP
//!   smuggling through a lenient terminator). The data is spooled to an unlinked
//!   temporary file (`tempfile`), never held in memory, and a `Return-Path:` header with
//!   the envelope sender is put in front, as RFC 5321 §4.4 asks of final delivery.
//! - Shutdown: stop accepting; idle connections get `421` at once, a transaction in
//!   progress finishes (its replies are sent) before the connection closes.
//!
//! The user for `RCPT TO:<addr>` is looked up as the full address, then its local part,
//! then the local part without a `+detail` ([`resolve_recipient`]); the mailbox is the
//! user's `userdb_mail=` or the default template (`%u` = the user name found).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use correio_auth::{UserDb, validate_username};
use correio_proto::framer::LineFramer;
use correio_proto::lmtp::{
    Action, ContractViolation, DeliveryFailure, Event, LmtpConfig, LmtpSession, RcptOutcome,
    SpoolOutcome,
};
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

/// The one mapping of a delivery error to its LMTP reply: the code and enhanced status
/// from the error, and a short, path-free text (the full error goes to the log).
pub fn delivery_failure(e: &DeliverError) -> DeliveryFailure {
    let text = match e.kind() {
        DeliverErrorKind::TooLarge => "Message too big",
        DeliverErrorKind::QuotaExceeded => "Mailbox full",
        DeliverErrorKind::DiskFull => "Insufficient system storage",
        DeliverErrorKind::MailboxUnusable => "Mailbox unavailable",
        DeliverErrorKind::LockTimeout => "Mailbox locked, try again later",
        DeliverErrorKind::Input => "Error reading message",
        _ => "Local error in processing",
    };
    DeliveryFailure {
        code: e.reply_code(),
        enhanced: e.enhanced_status().to_string(),
        text: text.to_string(),
    }
}

/// What the driver keeps for an accepted recipient.
#[derive(Debug, Clone)]
struct AcceptedRcpt {
    location: MailboxRef,
    quota: UserQuota,
}

/// The message being received: an unlinked temporary file in the spool directory.
enum Spool {
    None,
    Writing(tokio::fs::File),
    Ready(Arc<File>),
    /// Creating or writing failed; the data is still read to its end.
    Failed(io::Error),
}

/// The I/O half of an LMTP connection: it carries out the session's actions.
struct Driver<R, W> {
    r: R,
    w: W,
    framer: LineFramer,
    ctx: Arc<LmtpContext>,
    peer: String,
    out: Vec<u8>,
    spool: Spool,
    /// Unstuffed data on its way to the spool (kept only during DATA).
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Driver<R, W> {
    /// Takes the session's replies into the output buffer.
    fn collect(&mut self, s: &mut LmtpSession<AcceptedRcpt>) {
        if s.has_output() {
            let o = s.take_output();
            self.out.extend_from_slice(&o);
        }
    }

    /// Sends the buffered replies.
    async fn flush(&mut self, s: &mut LmtpSession<AcceptedRcpt>) -> io::Result<()> {
        self.collect(s);
        if !self.out.is_empty() {
            self.w.write_all(&self.out).await?;
            self.out.clear();
            self.w.flush().await?;
        }
        Ok(())
    }

    /// Logs a broken driving contract (the session has queued `421` and closed).
    fn checked(&self, r: Result<Option<Action>, ContractViolation>) -> Option<Action> {
        r.unwrap_or_else(|e| {
            warn!(peer = %self.peer, error = %e, "lmtp session closed");
            None
        })
    }

    /// Carries out `action` and the ones that follow, until the session waits for the
    /// client again.
    async fn run(
        &mut self,
        s: &mut LmtpSession<AcceptedRcpt>,
        mut action: Option<Action>,
    ) -> io::Result<()> {
        while let Some(a) = action.take() {
            action = match a {
                Action::LookupRecipient(to) => {
                    self.flush(s).await?;
                    let event = Event::Recipient(self.lookup(&to).await);
                    self.checked(s.handle_event(event))
                }
                Action::ReceiveData => {
                    // The 354 goes out before the client may send data.
                    self.flush(s).await?;
                    let dir = self.ctx.spool_dir.clone();
                    self.spool =
                        match tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                            .await
                            .map_err(io::Error::other)
                            .and_then(|r| r)
                        {
                            Ok(f) => Spool::Writing(tokio::fs::File::from_std(f)),
                            Err(e) => Spool::Failed(e),
                        };
                    None
                }
                Action::CommitSpool => {
                    let outcome = match std::mem::replace(&mut self.spool, Spool::None) {
                        Spool::Writing(mut f) => match f.flush().await {
                            Ok(()) => {
                                self.spool = Spool::Ready(Arc::new(f.into_std().await));
                                SpoolOutcome::Ready
                            }
                            Err(e) => {
                                warn!(error = %e, "lmtp spool failed");
                                SpoolOutcome::Failed
                            }
                        },
                        Spool::Failed(e) => {
                            warn!(error = %e, "lmtp spool failed");
                            SpoolOutcome::Failed
                        }
                        Spool::None | Spool::Ready(_) => SpoolOutcome::Failed,
                    };
                    self.checked(s.handle_event(Event::Spooled(outcome)))
                }
                Action::Deliver(n) => {
                    // Earlier recipients' replies go out before this delivery starts.
                    self.flush(s).await?;
                    let result = self.deliver(s, n).await;
                    let next = self.checked(s.handle_event(Event::Delivered(result)));
                    if !matches!(next, Some(Action::Deliver(_))) {
                        self.spool = Spool::None;
                    }
                    next
                }
                Action::Close => None,
            };
        }
        Ok(())
    }

    async fn lookup(&self, to: &str) -> RcptOutcome<AcceptedRcpt> {
        let (ctx, to2) = (self.ctx.clone(), to.to_string());
        let found = tokio::task::spawn_blocking(move || {
            resolve_recipient_with(&*ctx.users, &ctx.default_mail_location, &to2, &ctx.username)
        })
        .await;
        let count = |what| {
            if let Some(m) = &self.ctx.metrics {
                m.delivery(what);
            }
        };
        match found {
            Ok(Recipient::Found {
                user,
                location,
                quota,
            }) => {
                debug!(rcpt = %to, user = %user, "lmtp recipient");
                RcptOutcome::Accepted(AcceptedRcpt { location, quota })
            }
            Ok(Recipient::Unknown) => {
                count("unknown_user");
                RcptOutcome::Unknown
            }
            Ok(Recipient::Temporary(e)) => {
                warn!(rcpt = %to, error = %e, "user database unavailable");
                count("temporary_failure");
                RcptOutcome::Temporary
            }
            Ok(Recipient::Unusable(e)) => {
                warn!(rcpt = %to, error = %e, "mail location unusable");
                RcptOutcome::Unusable
            }
            Err(e) => {
                warn!(rcpt = %to, error = %e, "recipient lookup failed");
                RcptOutcome::Temporary
            }
        }
    }

    async fn deliver(
        &self,
        s: &LmtpSession<AcceptedRcpt>,
        n: usize,
    ) -> Result<(), DeliveryFailure> {
        let (Some((address, rcpt)), Spool::Ready(file)) = (s.recipient(n), &self.spool) else {
            return Err(DeliveryFailure::temporary("Internal error"));
        };
        let (address, rcpt, file) = (address.to_string(), rcpt.clone(), file.clone());
        let opts = rcpt
            .quota
            .apply(self.ctx.deliver.clone())
            .max_message_size(Some(self.ctx.limits.max_message_size.saturating_add(1024)))
            .envelope_sender(s.sender().map(str::to_string));
        let stores = self.ctx.stores.clone();
        let location = rcpt.location.clone();
        let result = tokio::task::spawn_blocking(move || {
            stores.deliver(&location, SpoolReader { file, pos: 0 }, &opts)
        })
        .await;
        let count = |what| {
            if let Some(m) = &self.ctx.metrics {
                m.delivery(what);
            }
        };
        match result {
            Ok(Ok(d)) => {
                info!(target: "correio::lmtp", rcpt = %address, size = d.size, "delivered");
                count("delivered");
                Ok(())
            }
            Ok(Err(e)) => {
                warn!(target: "correio::lmtp", rcpt = %address, mailbox = %rcpt.location, error = %e, temporary = e.is_temporary(), "delivery failed");
                count(if e.is_temporary() {
                    "temporary_failure"
                } else {
                    "permanent_failure"
                });
                Err(delivery_failure(&e))
            }
            Err(e) => {
                warn!(target: "correio::lmtp", rcpt = %address, error = %e, "delivery task failed");
                count("temporary_failure");
                Err(DeliveryFailure::temporary("Internal error"))
            }
        }
    }

    /// Message data from the client: unstuffed by the session into the spool. When the
    /// data ends, the rest goes back to the framer and the session's next action runs.
    async fn feed(&mut self, s: &mut LmtpSession<AcceptedRcpt>, bytes: &[u8]) -> io::Result<()> {
        // One buffer for the whole DATA phase (not one per read).
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.clear();
        let (used, action) = match s.feed_data(bytes, &mut chunk) {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "lmtp session closed");
                return Ok(());
            }
        };
        if !chunk.is_empty()
            && let Spool::Writing(f) = &mut self.spool
            && let Err(e) = f.write_all(&chunk).await
        {
            // Keep reading to the end of the data to stay in step; every recipient
            // gets 451 then.
            self.spool = Spool::Failed(e);
        }
        if s.is_receiving_data() {
            self.chunk = chunk;
        } else {
            self.framer.push(&bytes[used..]);
            self.run(s, action).await?;
        }
        Ok(())
    }
}

fn session_config(ctx: &LmtpContext) -> LmtpConfig {
    LmtpConfig {
        hostname: ctx.hostname.clone(),
        max_message_size: ctx.limits.max_message_size,
        max_recipients: ctx.limits.max_recipients,
        max_command_line: ctx.limits.max_command_line,
        max_errors: ctx.limits.max_errors,
        idle_timeout: ctx.limits.idle_timeout,
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
    let mut s = LmtpSession::new(session_config(&ctx));
    let mut c = Driver {
        r,
        w,
        framer: LineFramer::new(s.max_line()),
        ctx,
        peer,
        out: Vec::with_capacity(1024),
        spool: Spool::None,
        chunk: Vec::new(),
    };
    debug!(peer = %c.peer, "lmtp connection");
    if let Err(e) = c.serve(&mut s, &mut stop).await {
        debug!(peer = %c.peer, error = %e, "lmtp connection ended");
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Driver<R, W> {
    async fn serve(
        &mut self,
        s: &mut LmtpSession<AcceptedRcpt>,
        stop: &mut watch::Receiver<bool>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut stop_seen = false;
        // The idle limit runs from the last complete command line (or, during DATA,
        // the last bytes of the message): bytes that never finish a line do not keep
        // a connection open (a peer sending one byte at a time, slower than a line).
        let mut deadline = tokio::time::Instant::now() + s.idle_timeout();
        loop {
            // Everything already buffered first: pipelined lines, or data.
            while !s.is_closed() {
                if s.is_receiving_data() {
                    let rest = self.framer.buffered().to_vec();
                    self.framer.clear();
                    self.feed(s, &rest).await?;
                    if s.is_receiving_data() {
                        break;
                    }
                    continue;
                }
                let Some(line) = self.framer.next_line() else {
                    break;
                };
                let action = s.handle_line(line);
                let action = self.checked(action);
                self.run(s, action).await?;
                deadline = tokio::time::Instant::now() + s.idle_timeout();
            }
            self.flush(s).await?;
            if s.is_closed() {
                return Ok(());
            }
            let read = tokio::select! {
                biased;
                r = stop.changed(), if !stop_seen => {
                    stop_seen = true;
                    if r.is_ok() {
                        s.handle_shutdown();
                    }
                    continue;
                }
                r = tokio::time::timeout_at(deadline, self.r.read(&mut buf)) => r,
            };
            match read {
                Err(_) => {
                    s.handle_timeout();
                    // The machine says goodbye (421) and closes; should it not, the
                    // next wait is a full limit again rather than none.
                    deadline = tokio::time::Instant::now() + s.idle_timeout();
                }
                Ok(Ok(0)) => {
                    if s.is_receiving_data() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed during DATA",
                        ));
                    }
                    return Ok(());
                }
                Ok(Ok(n)) => {
                    if s.is_receiving_data() {
                        self.feed(s, &buf[..n]).await?;
                        deadline = tokio::time::Instant::now() + s.idle_timeout();
                    } else {
                        self.framer.push(&buf[..n]);
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}
