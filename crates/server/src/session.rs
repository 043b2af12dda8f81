//! One POP3 connection: the thin async driver around
//! [`correio_proto::server::ServerSession`].
//!
//! The machine decides every reply; this file only does what it asks: read bytes
//! into the bounded framer, check passwords (in `spawn_blocking`, with the throttle's
//! delay on failure), open the maildrop, stream messages through the
//! [`DotStuffer`] in bounded chunks, run the STLS handshake (clearing the framer
//! first), commit deletions, and enforce the per-phase timeouts: TLS handshake,
//! pre-login idle, post-login idle, write stall. Every exit path drops the maildrop,
//! which releases its lock without deleting anything, unless QUIT committed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use correio_auth::{
    Mechanism, SaslError, ServerMechanism, ServerParams, Step, UserRecord, apop_verify,
    validate_username, verify_login,
};
use correio_proto::ContractViolation;
use correio_proto::capa::ExpirePolicy;
use correio_proto::server::{
    Action, AuthOutcome, ConnectionInfo, Credentials, Event, MessageInfo, OpenError, ServerSession,
    StreamKind,
};
use correio_proto::stuff::DotStuffer;
use correio_proto::{Line, LineFramer};
use correio_store::{MailboxRef, Maildrop, StoreError, TemplateVars, Update};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::{Live, Shared};

/// Bytes read from the store per trip to the blocking pool while streaming a large
/// message. With the stuffer's output (at most twice the input) this bounds a
/// session's memory during RETR.
const STREAM_CHUNK: usize = 128 * 1024;
/// Messages up to this wire size are opened and read on the async worker itself: a
/// page-cache read of a few KiB takes microseconds, while each trip to the blocking
/// pool costs two thread wake-ups, which on a busy machine cost more than the whole
/// message (profiled: futex wake/schedule were half the server's CPU for 4 KB RETRs).
/// A wire size is never smaller than the file, so one buffer of size + 1 holds it all.
const INLINE_READ_MAX: u64 = 64 * 1024;
/// Messages up to this size are read whole (once, on the blocking pool when over
/// [`INLINE_READ_MAX`]) and sent from memory; larger ones stream in [`STREAM_CHUNK`]s.
/// Bounds a session's memory during one RETR to about twice this.
const WHOLE_READ_MAX: u64 = 2 * 1024 * 1024;
/// Replies to pipelined commands are collected up to this many bytes before a write
/// (one syscall for many small replies); they are always sent before the next read.
const OUTPUT_BATCH: usize = 64 * 1024;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 4096;
/// Messages stored in wire form are sent with `sendfile` from this size on (plain
/// connections, RETR): smaller ones are cheaper read whole and sent in one write with
/// the replies pipelined around them.
const SENDFILE_MIN: u64 = 64 * 1024;
/// Most bytes one `sendfile` call is asked for (the socket buffer takes less anyway).
const SENDFILE_CHUNK: usize = 4 * 1024 * 1024;

/// The connection's byte stream: cleartext, or TLS (implicit or after STLS).
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the STLS handshake runs.
    Upgrading,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// Why a connection ended without the machine closing it.
#[derive(Debug)]
enum Ended {
    /// The peer closed or reset the connection.
    PeerGone,
    /// A write made no progress for the write-stall limit.
    WriteStall,
    /// The TLS handshake failed or timed out.
    Tls(String),
    /// The store failed in the middle of a message; the client sees a cut response.
    Store(String),
    /// The driver broke the session's contract (a bug; logged where it happened).
    Internal,
}

impl Ended {
    fn text(&self) -> String {
        match self {
            Ended::PeerGone => "peer closed the connection".into(),
            Ended::WriteStall => "write stalled".into(),
            Ended::Tls(e) => format!("TLS: {e}"),
            Ended::Store(e) => format!("store failed while sending: {e}"),
            Ended::Internal => "internal error".into(),
        }
    }
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// The connection number (logs, the admin socket).
    pub(crate) id: u64,
    /// The client (behind a proxy: the address its PROXY header named).
    pub(crate) peer: SocketAddr,
    /// The pop3s port: the TLS handshake comes first.
    pub(crate) implicit_tls: bool,
    /// A proxy terminated TLS with the client (PROXY v2 `PP2_CLIENT_SSL`): the session
    /// counts as TLS, without a handshake of ours.
    pub(crate) tls_by_proxy: bool,
}

/// Runs one connection to its end.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    origin: Origin,
    shutdown: watch::Receiver<bool>,
) {
    let Origin {
        id,
        peer,
        implicit_tls,
        tls_by_proxy,
    } = origin;
    let (view, _registered) = shared
        .registry
        .register(id, peer, implicit_tls || tls_by_proxy);
    let _ = tcp.set_nodelay(true);
    let live = shared.live();
    let limits = &live.config.limits;
    let conn = if implicit_tls {
        let Some(tls) = shared.tls.current() else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        match timeout(limits.tls_handshake, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
            Ok(Err(e)) => {
                debug!(remote = %peer, error = %e, "TLS handshake failed");
                shared.metrics.tls_failure("pop3s");
                return;
            }
            Err(_) => {
                debug!(remote = %peer, "TLS handshake timed out");
                shared.metrics.tls_failure("pop3s");
                return;
            }
        }
    } else {
        Conn::Plain(tcp)
    };
    let trusted = live.config.is_trusted(peer.ip());
    let info = ConnectionInfo {
        tls: implicit_tls || tls_by_proxy,
        stls_available: !implicit_tls && !tls_by_proxy && shared.tls.current().is_some(),
        cleartext_login_allowed: live.config.allow_cleartext_login
            || trusted
            || (live.config.cleartext_login_on_loopback && peer.ip().to_canonical().is_loopback()),
    };
    let offered = shared.offered(&live);
    let timestamp = offered
        .apop
        .then(|| shared.apop_timestamp(&live.config.hostname));
    let mut session_config = live.session_config.clone();
    session_config.sasl_mechanisms = offered.mechanisms;
    let session = ServerSession::new(session_config, info, timestamp.clone());
    let mut driver = Driver {
        framer: LineFramer::new(session.max_line()),
        session,
        conn,
        peer,
        shared: Arc::clone(&shared),
        live: Arc::clone(&live),
        trusted,
        close_now: false,
        login_mechanism: String::new(),
        view,
        maildrop: None,
        record: None,
        sasl: None,
        apop_timestamp: timestamp,
        shutdown,
        pending: Vec::new(),
    };
    let end = driver.serve().await;
    driver.finish(end).await;
}

struct Driver {
    shared: Arc<Shared>,
    /// The configuration and users this session started under (a reload does not
    /// change them mid-session).
    live: Arc<Live>,
    /// The peer is in `trusted_networks`: no failed-login throttle.
    trusted: bool,
    /// Close once the pending reply is sent (the address's waiting room for failed
    /// logins is full).
    close_now: bool,
    /// The login kind in progress (`USER`, `APOP` or a SASL mechanism), for metrics.
    login_mechanism: String,
    /// What the admin socket sees of this session (and how it ends it).
    view: Arc<crate::admin::SessionView>,
    session: ServerSession,
    framer: LineFramer,
    conn: Conn,
    peer: SocketAddr,
    maildrop: Option<Box<dyn Maildrop>>,
    /// The user record of the login in progress / done.
    record: Option<UserRecord>,
    sasl: Option<ServerMechanism>,
    apop_timestamp: Option<String>,
    shutdown: watch::Receiver<bool>,
    /// Replies held back while more pipelined commands are already buffered (at most
    /// [`OUTPUT_BATCH`] plus one message chunk); empty, with no capacity, otherwise.
    pending: Vec<u8>,
}

impl Driver {
    async fn serve(&mut self) -> Result<(), Ended> {
        self.flush_output().await?;
        let mut buf = vec![0u8; READ_CHUNK];
        // The idle limit bounds the time to a whole command line, not the time between
        // bytes: the deadline is set when the wait for a line starts and only a
        // complete (or overlong) line moves it, so one byte a second cannot hold a
        // connection slot forever.
        let mut deadline: Option<Instant> = None;
        loop {
            // Answer every complete line already buffered, in order (pipelining).
            loop {
                if self.session.is_closed() || self.close_now {
                    self.flush_output().await?;
                    return Ok(());
                }
                self.framer.set_max_line(self.session.max_line());
                let Some(line) = self.framer.next_line() else {
                    break;
                };
                deadline = None;
                // SASL responses are not commands: no keyword, no sample.
                let keyword = match &line {
                    Line::Complete(bytes) if self.sasl.is_none() => {
                        debug!(remote = %self.peer, len = bytes.len(), "line");
                        Some(crate::metrics::command_keyword(bytes))
                    }
                    _ => None,
                };
                let started = std::time::Instant::now();
                let action = self.session.handle_line(line);
                let action = self.checked(action);
                self.perform(action).await?;
                self.queue_output().await?;
                if let Some(k) = keyword {
                    self.shared
                        .metrics
                        .command(k, started.elapsed().as_secs_f64());
                }
            }
            // Nothing more to answer without reading: everything goes out now.
            self.flush_output().await?;
            let idle = self.session.idle_timeout();
            let until = *deadline.get_or_insert_with(|| Instant::now() + idle);
            let action = tokio::select! {
                r = tokio::time::timeout_at(until, self.conn.read(&mut buf)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => return Err(Ended::PeerGone),
                    Ok(Ok(n)) => {
                        self.framer.push(&buf[..n]);
                        continue;
                    }
                    Err(_) => self.session.handle_timeout(),
                },
                _ = wait_shutdown(&mut self.shutdown) => self.session.handle_shutdown(),
                _ = self.view.kick.notified() => {
                    info!(target: "correio::session", remote = %self.peer, "ended by the admin");
                    self.session.handle_shutdown()
                }
            };
            self.perform(action).await?;
            self.flush_output().await?;
        }
    }

    /// Performs actions until the machine asks for none.
    async fn perform(&mut self, mut action: Option<Action>) -> Result<(), Ended> {
        while let Some(a) = action.take() {
            let event = match a {
                Action::Authenticate(c) => {
                    self.login_mechanism = "USER".into();
                    Event::Auth(self.password_login(c).await)
                }
                Action::ApopAuthenticate {
                    user,
                    digest,
                    timestamp,
                } => {
                    self.login_mechanism = "APOP".into();
                    Event::Auth(self.apop_login(user, digest, timestamp).await)
                }
                Action::SaslStart {
                    mechanism,
                    initial_response,
                } => {
                    self.login_mechanism = mechanism.clone();
                    self.sasl_start(&mechanism, initial_response).await
                }
                Action::SaslStep(response) => self.sasl_step(response).await,
                Action::SaslAbort => {
                    self.sasl = None;
                    return Ok(());
                }
                Action::OpenMaildrop { user } => self.open_maildrop(user).await,
                Action::StreamMessage { index, kind } => self.stream(index, kind).await?,
                Action::StartTls => {
                    self.start_tls().await?;
                    Event::TlsStarted
                }
                Action::Commit { deletions } => self.commit(deletions).await,
                Action::Close => return Ok(()),
            };
            if let Event::Auth(outcome) = &event {
                use crate::metrics::LoginResult;
                let result = match outcome {
                    AuthOutcome::Success { .. } => LoginResult::success,
                    AuthOutcome::Failure => LoginResult::wrong_credentials,
                    AuthOutcome::LoginDelay => LoginResult::throttled,
                    AuthOutcome::TempFail => LoginResult::unavailable,
                };
                self.shared.metrics.login(&self.login_mechanism, result);
            }
            let next = self.session.handle_event(event);
            action = self.checked(next);
        }
        Ok(())
    }

    /// Logs a broken driving contract: a bug here, not the client's doing. The session
    /// has queued its `-ERR` and closed, so the connection ends at once.
    fn checked(&self, r: Result<Option<Action>, ContractViolation>) -> Option<Action> {
        r.unwrap_or_else(|e| {
            tracing::error!(remote = %self.peer, error = %e, "session closed");
            None
        })
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        let stall = self.live.config.limits.write_stall;
        match timeout(stall, async {
            self.conn.write_all(bytes).await?;
            self.conn.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::PeerGone),
            Err(_) => Err(Ended::WriteStall),
        }
    }

    /// Sends everything held back and everything the machine has to say.
    async fn flush_output(&mut self) -> Result<(), Ended> {
        self.take_session_output();
        if !self.pending.is_empty() {
            // Drop the buffer after sending: an idle session keeps no output memory.
            let out = std::mem::take(&mut self.pending);
            self.write_all(&out).await?;
        }
        Ok(())
    }

    /// Holds the machine's output back (another pipelined command may add to it),
    /// sending once a batch is full.
    async fn queue_output(&mut self) -> Result<(), Ended> {
        self.take_session_output();
        if self.pending.len() >= OUTPUT_BATCH {
            self.flush_output().await?;
        }
        Ok(())
    }

    fn take_session_output(&mut self) {
        if self.session.has_output() {
            let out = self.session.take_output();
            if self.pending.is_empty() {
                self.pending = out;
            } else {
                self.pending.extend_from_slice(&out);
            }
        }
    }

    /// The failure path shared by all login kinds: count it, wait the throttle's delay,
    /// log without secrets. The same for an unknown user and a wrong password.
    async fn failed_login(&mut self, user: Option<&str>, reason: &str) -> AuthOutcome {
        self.record = None;
        let user = user.filter(|u| validate_username(u).is_ok());
        let now = Instant::now().into_std();
        // Trusted networks (a webmail, the admin's LAN) are exempt from the throttle.
        let delay = if self.trusted {
            Duration::ZERO
        } else {
            self.shared
                .throttle
                .record_failure(self.peer.ip(), user, now)
        };
        info!(
            target: "correio::auth",
            remote = %self.peer,
            user = user.unwrap_or("<invalid>"),
            reason,
            delay_ms = delay.as_millis() as u64,
            "login failed"
        );
        if delay.is_zero() {
            self.shared.metrics.throttle_delay.observe(0.0);
        } else {
            // The wait must not cost the other users behind this address (a NAT, a
            // shared host) their connection slots: while waiting, this connection
            // counts in the address's waiting room, not against its connection limit.
            let limit = self.live.config.limits.max_connections_per_ip;
            match self.shared.park(self.peer.ip(), limit) {
                Some(_parked) => {
                    // Observed once parked: a reader of the metric knows the
                    // connection is in the waiting room.
                    self.shared
                        .metrics
                        .throttle_delay
                        .observe(delay.as_secs_f64());
                    tokio::time::sleep(delay).await
                }
                None => {
                    info!(
                        target: "correio::auth",
                        remote = %self.peer,
                        "too many connections waiting after failed logins from this address; closing"
                    );
                    self.close_now = true;
                }
            }
        }
        AuthOutcome::Failure
    }

    /// The success path: LOGIN-DELAY check (the time kept beside the maildrop, so it
    /// outlives a restart, and this process's own memory), throttle reset, remember
    /// the record.
    async fn logged_in(&mut self, record: UserRecord) -> AuthOutcome {
        let delay = self.live.config.login_delay;
        if !delay.is_zero() {
            if let Ok(location) = self.location(&record) {
                let stores = self.shared.stores();
                let last = tokio::task::spawn_blocking(move || stores.last_login(&location))
                    .await
                    .ok()
                    .and_then(|r| {
                        r.inspect_err(
                            |e| warn!(error = %e, "cannot read the last login time for LOGIN-DELAY"),
                        )
                        .ok()
                    })
                    .flatten();
                // A time in the future (the clock went back) does not lock the user out.
                if let Some(elapsed) = last.and_then(|t| SystemTime::now().duration_since(t).ok())
                    && elapsed < delay
                {
                    return AuthOutcome::LoginDelay;
                }
            }
            let now = Instant::now();
            let mut last = self
                .shared
                .last_login
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(t) = last.get(&record.name)
                && now.duration_since(*t) < delay
            {
                return AuthOutcome::LoginDelay;
            }
            last.insert(record.name.clone(), now);
        }
        self.shared.throttle.record_success(
            self.peer.ip(),
            &record.name,
            Instant::now().into_std(),
        );
        let user = record.name.clone();
        self.record = Some(record);
        AuthOutcome::Success { user }
    }

    async fn password_login(&mut self, c: Credentials) -> AuthOutcome {
        let users = self.live.users.clone();
        let user = c.user.clone();
        // Hashing takes tens of milliseconds and much memory: off the async workers.
        let result =
            tokio::task::spawn_blocking(move || verify_login(&users, &c.user, &c.password)).await;
        match result {
            Ok(Ok(record)) => self.logged_in(record).await,
            Ok(Err(SaslError::Temporary(why))) => self.temp_failed(&user, &why),
            Ok(Err(e)) => self.failed_login(Some(&user), &sasl_reason(&e)).await,
            Err(_) => AuthOutcome::TempFail,
        }
    }

    /// The user database could not answer: `-ERR [SYS/TEMP]`, no throttle (the client
    /// did nothing wrong), logged at warn.
    fn temp_failed(&mut self, user: &str, why: &str) -> AuthOutcome {
        self.record = None;
        warn!(
            target: "correio::auth",
            remote = %self.peer,
            user = if validate_username(user).is_ok() { user } else { "<invalid>" },
            reason = why,
            "login not checked: user database unavailable"
        );
        AuthOutcome::TempFail
    }

    async fn apop_login(&mut self, user: String, digest: String, timestamp: String) -> AuthOutcome {
        if validate_username(&user).is_err() {
            return self.failed_login(None, "invalid user name").await;
        }
        debug_assert_eq!(Some(&timestamp), self.apop_timestamp.as_ref());
        let users = self.live.users.clone();
        let lookup_user = user.clone();
        let result = tokio::task::spawn_blocking(move || {
            let record = users.find(&lookup_user);
            apop_verify(&timestamp, &digest, record.as_ref()).map(|()| record)
        })
        .await;
        match result {
            Ok(Ok(Some(record))) => self.logged_in(record).await,
            Ok(Ok(None)) => AuthOutcome::TempFail,
            Ok(Err(reason)) => self.failed_login(Some(&user), &reason.to_string()).await,
            Err(_) => AuthOutcome::TempFail,
        }
    }

    async fn sasl_start(&mut self, mechanism: &str, initial: Option<Vec<u8>>) -> Event {
        let Some(mech) = Mechanism::from_name(mechanism) else {
            // The machine only asks for configured mechanisms, all of which exist.
            return Event::Auth(AuthOutcome::TempFail);
        };
        let params = ServerParams::new(&self.live.config.hostname);
        let mut m = ServerMechanism::new(mech, &params);
        let users = self.live.users.clone();
        let result = tokio::task::spawn_blocking(move || {
            let step = m.start(initial.as_deref(), &users);
            (m, step)
        })
        .await;
        self.sasl_result(result).await
    }

    async fn sasl_step(&mut self, response: Vec<u8>) -> Event {
        let Some(mut m) = self.sasl.take() else {
            return Event::Auth(AuthOutcome::TempFail);
        };
        let users = self.live.users.clone();
        let result = tokio::task::spawn_blocking(move || {
            let step = m.step(&response, &users);
            (m, step)
        })
        .await;
        self.sasl_result(result).await
    }

    async fn sasl_result(
        &mut self,
        result: Result<(ServerMechanism, Result<Step, SaslError>), tokio::task::JoinError>,
    ) -> Event {
        let Ok((mut m, step)) = result else {
            return Event::Auth(AuthOutcome::TempFail);
        };
        match step {
            Ok(Step::Challenge(data)) => {
                self.sasl = Some(m);
                Event::SaslChallenge(data)
            }
            Ok(Step::Success { user }) => {
                self.sasl = None;
                if let Some(record) = m.take_verified() {
                    return Event::Auth(self.logged_in(record).await);
                }
                let users = self.live.users.clone();
                let lookup_user = user.clone();
                let found = tokio::task::spawn_blocking(move || users.lookup(&lookup_user)).await;
                match found {
                    Ok(Ok(Some(record))) => Event::Auth(self.logged_in(record).await),
                    Ok(Err(t)) => Event::Auth(self.temp_failed(&user, &t.0)),
                    _ => Event::Auth(AuthOutcome::TempFail),
                }
            }
            Ok(_) => Event::Auth(AuthOutcome::TempFail),
            Err(SaslError::Temporary(why)) => {
                self.sasl = None;
                Event::Auth(self.temp_failed("", &why))
            }
            Err(e) => {
                self.sasl = None;
                let user = match &e {
                    SaslError::AuthFailed(f) => Some(f.user.clone()),
                    _ => None,
                };
                Event::Auth(self.failed_login(user.as_deref(), &sasl_reason(&e)).await)
            }
        }
    }

    /// Where `record`'s mail lives.
    fn location(&self, record: &UserRecord) -> Result<MailboxRef, correio_store::LocationError> {
        let template = record
            .mail_location()
            .unwrap_or(&self.live.config.mail_location);
        let home = record.home_dir().map(std::path::PathBuf::from);
        MailboxRef::from_template(
            template,
            &TemplateVars {
                user: &record.name,
                home: home.as_deref(),
            },
        )
    }

    async fn open_maildrop(&mut self, user: String) -> Event {
        let Some(record) = self.record.clone() else {
            return Event::MaildropOpened(Err(OpenError::Temporary));
        };
        let location = match self.location(&record) {
            Ok(l) => l,
            Err(e) => {
                warn!(user = %user, error = %e, "mail location unusable");
                return Event::MaildropOpened(Err(OpenError::Permanent));
            }
        };
        let record_login = !self.live.config.login_delay.is_zero();
        let path = location.to_string();
        let stores = self.shared.stores();
        let result = tokio::task::spawn_blocking(move || {
            let md = stores.open(&location)?;
            // A login counts for LOGIN-DELAY once it reached TRANSACTION (not on [IN-USE]).
            if record_login && let Err(e) = stores.record_login(&location, SystemTime::now()) {
                warn!(error = %e, "cannot record the login time for LOGIN-DELAY");
            }
            Ok::<_, StoreError>(md)
        })
        .await;
        match result {
            Ok(Ok(md)) => {
                let listing: Vec<MessageInfo> = md
                    .messages()
                    .iter()
                    .map(|m| MessageInfo {
                        size: m.size,
                        uid: m.uidl.clone(),
                    })
                    .collect();
                info!(
                    target: "correio::session",
                    user = %user,
                    remote = %self.peer,
                    tls = self.session.is_tls(),
                    messages = listing.len(),
                    octets = listing.iter().map(|m| m.size).sum::<u64>(),
                    "login"
                );
                self.maildrop = Some(md);
                *self.view.user.lock().unwrap_or_else(|p| p.into_inner()) = Some(user.clone());
                Event::MaildropOpened(Ok(listing))
            }
            Ok(Err(e)) => {
                // Another session holding the lock is routine; anything else (a
                // permission, a corrupt mailbox) is the admin's to see, with the path.
                if !matches!(e, StoreError::InUse) {
                    self.shared.metrics.store_errors.inc();
                }
                if matches!(e, StoreError::InUse) {
                    info!(target: "correio::session", user = %user, remote = %self.peer, "maildrop in use");
                } else {
                    warn!(target: "correio::session", user = %user, remote = %self.peer, mailbox = %path, error = %e, "maildrop not opened");
                }
                self.record = None;
                Event::MaildropOpened(Err(open_error(&e)))
            }
            Err(_) => Event::MaildropOpened(Err(OpenError::Temporary)),
        }
    }

    /// RETR/TOP: `+OK`, then the stuffed body. Messages up to [`WHOLE_READ_MAX`] are
    /// read whole, once (on this worker up to [`INLINE_READ_MAX`], else on the
    /// blocking pool); larger ones are read in [`STREAM_CHUNK`]s on the blocking pool
    /// and written in bounded batches. The reply is left in `pending` for the caller
    /// to send (with the replies to further pipelined commands).
    async fn stream(&mut self, index: usize, kind: StreamKind) -> Result<Event, Ended> {
        let Some(md) = self.maildrop.take() else {
            return Ok(Event::MessageOpened(Err(OpenError::Temporary)));
        };
        let listed = md.messages().get(index).map(|m| m.size);
        // Stored in wire form: a large message goes from its file to a plain socket
        // unread. (Whether it is says the name, in memory; opening and measuring the
        // file are two quick calls on a local store.)
        if matches!(kind, StreamKind::Retr)
            && matches!(self.conn, Conn::Plain(_))
            && listed.is_some_and(|size| size >= SENDFILE_MIN)
            && md.cheap_read(index)
        {
            match md.wire_file(index) {
                Ok(Some((file, len))) => {
                    self.maildrop = Some(md);
                    return self.send_file(index, file, len).await;
                }
                Ok(None) => {}
                Err(e) => {
                    self.maildrop = Some(md);
                    return Ok(self.open_failed(&e));
                }
            }
        }
        let md = if listed.is_some_and(|size| size <= WHOLE_READ_MAX) {
            // Read whole (small ones on this worker, the others on the blocking pool):
            // one read, measured from the bytes, one write.
            let inline = listed.is_some_and(|size| size <= INLINE_READ_MAX) && md.cheap_read(index);
            let (md, read) = if inline {
                let r = md.read_message_checked(index, WHOLE_READ_MAX);
                (md, r)
            } else {
                match tokio::task::spawn_blocking(move || {
                    let r = md.read_message_checked(index, WHOLE_READ_MAX);
                    (md, r)
                })
                .await
                {
                    Ok(x) => x,
                    Err(_) => return Ok(Event::MessageOpened(Err(OpenError::Temporary))),
                }
            };
            match read {
                Ok(Some((bytes, measured))) => {
                    self.maildrop = Some(md);
                    let (mut out, unsent_before, mut stuffer) =
                        self.begin_body(index, kind, measured)?;
                    out.reserve(bytes.len() + bytes.len() / 16 + 8);
                    stuffer.feed(&bytes, &mut out);
                    return self.finish_stream(kind, stuffer, out, unsent_before, 0);
                }
                // Grown past the bound since it was listed: streamed below.
                Ok(None) => md,
                Err(e) => {
                    self.maildrop = Some(md);
                    return Ok(self.open_failed(&e));
                }
            }
        } else {
            md
        };
        // Larger messages: measured by the store, then read in chunks on the blocking
        // pool.
        let opened = tokio::task::spawn_blocking(move || {
            let r = md.open_message_checked(index);
            (md, r)
        })
        .await;
        let Ok((md, reader)) = opened else {
            return Ok(Event::MessageOpened(Err(OpenError::Temporary)));
        };
        self.maildrop = Some(md);
        let (mut reader, measured) = match reader {
            Ok(x) => x,
            Err(e) => return Ok(self.open_failed(&e)),
        };
        let (mut out, mut unsent_before, mut stuffer) = self.begin_body(index, kind, measured)?;
        let mut sent: u64 = 0;
        let mut inbuf = vec![0u8; STREAM_CHUNK];
        loop {
            let read = tokio::task::spawn_blocking(move || {
                let r = read_some(&mut reader, &mut inbuf);
                (reader, inbuf, r)
            })
            .await
            .map_err(|e| Ended::Store(e.to_string()))?;
            let n;
            (reader, inbuf, n) = read;
            let n = n.map_err(|e| Ended::Store(e.to_string()))?;
            if n == 0 {
                break;
            }
            let more = stuffer.feed(&inbuf[..n], &mut out);
            if out.len() >= OUTPUT_BATCH {
                sent += (out.len() - unsent_before) as u64;
                unsent_before = 0;
                self.write_all(&out).await?;
                out.clear();
            }
            if !more {
                break;
            }
        }
        self.finish_stream(kind, stuffer, out, unsent_before, sent)
    }

    /// RETR of a message whose file holds exactly its `len` wire octets: `+OK` (after
    /// what is held back), then the file with `sendfile` (the kernel copies it from
    /// the page cache to the socket), then `.` CRLF.
    async fn send_file(
        &mut self,
        index: usize,
        file: std::fs::File,
        len: u64,
    ) -> Result<Event, Ended> {
        let (out, unsent_before, stuffer) = self.begin_body(index, StreamKind::Retr, len)?;
        self.write_all(&out).await?;
        let mut sent = (out.len() - unsent_before) as u64;
        drop(out);
        let stall = self.live.config.limits.write_stall;
        let Conn::Plain(tcp) = &self.conn else {
            return Err(Ended::Internal);
        };
        let mut offset = 0u64;
        while offset < len {
            let want = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(SENDFILE_CHUNK);
            let step = timeout(stall, async {
                loop {
                    tcp.writable().await?;
                    match tcp.try_io(tokio::io::Interest::WRITABLE, || {
                        rustix::fs::sendfile(tcp, &file, Some(&mut offset), want)
                            .map_err(io::Error::from)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return r,
                    }
                }
            })
            .await;
            match step {
                Ok(Ok(0)) => {
                    // Shorter than it measured a moment ago (truncated meanwhile): the
                    // client gets a cut response, as when a streamed read fails.
                    return Err(Ended::Store("the message file shrank while sent".into()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::NotConnected
                    ) =>
                {
                    return Err(Ended::PeerGone);
                }
                Ok(Err(e)) => return Err(Ended::Store(e.to_string())),
                Err(_) => return Err(Ended::WriteStall),
            }
        }
        sent += len;
        self.shared.metrics.sendfile_bytes.inc_by(len);
        // The body ends with CRLF (wire form), so the stuffer adds only `.` CRLF.
        self.finish_stream(StreamKind::Retr, stuffer, Vec::new(), 0, sent)
    }

    /// The message could not be opened: counted, logged, and the session told.
    fn open_failed(&mut self, e: &StoreError) -> Event {
        self.shared.metrics.store_errors.inc();
        warn!(remote = %self.peer, error = %e, "cannot open message");
        Event::MessageOpened(Err(open_error(e)))
    }

    /// The message is open and holds `measured` wire octets (what `+OK n octets`
    /// announces): the session's `+OK` goes into the output after what is already
    /// held back. Returns the output, how much of it precedes this message, and the
    /// stuffer for the body.
    fn begin_body(
        &mut self,
        index: usize,
        kind: StreamKind,
        measured: u64,
    ) -> Result<(Vec<u8>, usize, DotStuffer), Ended> {
        self.session.correct_size(index, measured);
        let action = self.session.handle_event(Event::MessageOpened(Ok(())));
        if !matches!(action, Ok(None)) {
            // Nothing to stream: the session is closed (a contract violation).
            self.checked(action);
            return Err(Ended::Internal);
        }
        let mut out = std::mem::take(&mut self.pending);
        let unsent_before = out.len();
        out.extend_from_slice(&self.session.take_output());
        let stuffer = match kind {
            StreamKind::Retr => DotStuffer::new(),
            StreamKind::Top(n) => DotStuffer::top(n),
        };
        Ok((out, unsent_before, stuffer))
    }

    /// The terminator, the counters, and the output left for the caller to send.
    fn finish_stream(
        &mut self,
        kind: StreamKind,
        mut stuffer: DotStuffer,
        mut out: Vec<u8>,
        unsent_before: usize,
        mut sent: u64,
    ) -> Result<Event, Ended> {
        stuffer.finish(&mut out);
        sent += (out.len() - unsent_before) as u64;
        self.shared.metrics.sent_bytes.inc_by(sent);
        self.view
            .bytes
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        if matches!(kind, StreamKind::Retr) {
            self.shared.metrics.messages_sent.inc();
        }
        self.pending = out;
        Ok(Event::MessageSent { bytes: sent })
    }

    async fn start_tls(&mut self) -> Result<(), Ended> {
        self.flush_output().await?;
        // RFC 2595 / CVE-2011-0411 class: nothing sent in cleartext after STLS may be
        // read as a command under TLS.
        self.framer.clear();
        let Some(config) = self.shared.tls.current() else {
            return Err(Ended::Tls("no TLS configuration".into()));
        };
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Upgrading) else {
            return Err(Ended::Tls("STLS on a TLS connection".into()));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match timeout(self.live.config.limits.tls_handshake, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                self.conn = Conn::Tls(Box::new(s));
                self.view
                    .tls
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.shared.metrics.tls_failure("stls");
                Err(Ended::Tls(e.to_string()))
            }
            Err(_) => {
                self.shared.metrics.tls_failure("stls");
                Err(Ended::Tls("handshake timed out".into()))
            }
        }
    }

    async fn commit(&mut self, deletions: Vec<usize>) -> Event {
        let Some(md) = self.maildrop.take() else {
            return Event::Committed(Err(OpenError::Temporary));
        };
        let deletions_len = deletions.len();
        let mut update = Update::new(deletions, SystemTime::now());
        // Dates are kept only while they matter (EXPIRE n > 0): other policies cost no
        // extra write at QUIT.
        if let Some(ExpirePolicy::Days(days)) = self.live.config.expire
            && days > 0
        {
            update = update
                .with_retrieved(self.session.retrieved())
                .with_expiry(Duration::from_secs(u64::from(days) * 86_400));
        }
        let removed = deletions_len;
        let result = tokio::task::spawn_blocking(move || md.update(&update)).await;
        match result {
            Ok(Ok(report)) => {
                self.shared
                    .metrics
                    .deletions
                    .inc_by((removed + report.expired) as u64);
                if report.expired > 0 {
                    info!(target: "correio::session", remote = %self.peer, expired = report.expired, "EXPIRE removed messages");
                }
                Event::Committed(Ok(()))
            }
            Ok(Err(e)) => {
                self.shared.metrics.store_errors.inc();
                warn!(remote = %self.peer, error = %e, "UPDATE failed");
                Event::Committed(Err(open_error(&e)))
            }
            Err(_) => Event::Committed(Err(OpenError::Temporary)),
        }
    }

    /// Flushes what is left, closes, releases the maildrop (no UPDATE), logs logout.
    async fn finish(mut self, end: Result<(), Ended>) {
        let reason = match &end {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.text(),
        };
        if end.is_ok() {
            let _ = self.flush_output().await;
            let _ = timeout(Duration::from_secs(1), self.conn.shutdown()).await;
        }
        // Dropping the maildrop releases the lock and deletes nothing.
        drop(self.maildrop.take());
        if let Some(user) = self.session.user() {
            let st = self.session.stats();
            info!(
                target: "correio::session",
                user = %user,
                remote = %self.peer,
                tls = self.session.is_tls(),
                retr = st.retr,
                top = st.top,
                dele = if st.committed { st.dele } else { 0 },
                bytes = st.bytes,
                updated = st.committed,
                reason = %reason,
                "logout"
            );
        } else {
            debug!(remote = %self.peer, reason = %reason, "connection closed before login");
        }
    }
}

fn read_some(r: &mut correio_store::MessageReader, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    if *rx.borrow() {
        return;
    }
    while rx.changed().await.is_ok() {
        if *rx.borrow() {
            return;
        }
    }
    // The sender is gone: the server itself is gone; treat as shutdown.
}

fn open_error(e: &StoreError) -> OpenError {
    match e {
        StoreError::InUse => OpenError::InUse,
        e if e.is_temporary() => OpenError::Temporary,
        _ => OpenError::Permanent,
    }
}

/// A log-safe reason: names and reasons, never a secret.
fn sasl_reason(e: &SaslError) -> String {
    match e {
        SaslError::AuthFailed(f) => f.reason.to_string(),
        other => other.to_string(),
    }
}
