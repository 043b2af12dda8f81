//! The server session state machine (RFC 1939 with RFC 2449, 2595, 3206, 5034, 6856).
//!
//! [`ServerSession`] decides every reply; it never touches a socket, a file or a clock.
//! It is driven like quinn-proto's `Connection`:
//!
//! 1. Create it with [`ServerSession::new`]: the greeting is queued at once.
//! 2. Before framing each line, set the framer's limit to [`ServerSession::max_line`]
//!    (it grows during a SASL exchange, whose responses are not commands).
//! 3. Feed each framed line with [`ServerSession::handle_line`]. It returns
//!    `Some(Action)` when the driver must do something (check a password, open the
//!    maildrop, stream a message, start TLS, commit deletions, close).
//! 4. Send what [`ServerSession::take_output`] returns after every call.
//! 5. While an action is pending, feed no further line: do the action, then report its
//!    result with [`ServerSession::handle_event`], which may return the next action.
//!    Pipelined lines stay in the framer meanwhile, so nothing is reordered.
//! 6. [`Action::Close`] (or [`ServerSession::is_closed`]) means: flush the output and
//!    close the connection.
//! 7. Timers belong to the session: wait for the client at most
//!    [`ServerSession::idle_timeout`] (it depends on the state), then call
//!    [`ServerSession::handle_timeout`]; a server shutting down (or an admin ending the
//!    session) calls [`ServerSession::handle_shutdown`].
//!
//! A line fed while an action is pending, or an event that answers none, breaks the
//! contract: the call returns [`ContractViolation`] and the session has queued `-ERR
//! [SYS/TEMP]` and closed, so a driver bug ends the session at once instead of leaving
//! it waiting for its idle timeout. Every store failure becomes its reply in one place,
//! [`store_failure`].
//!
//! The driver's special duties: after [`Action::StartTls`] it must flush the output,
//! then **clear the framer** before the handshake (bytes pipelined after `STLS` in
//! cleartext must never run as commands under TLS), and report
//! [`Event::TlsStarted`]. After [`Action::StreamMessage`] it opens the message and
//! reports [`Event::MessageOpened`] (which queues the `+OK` line), sends the output,
//! streams the body through [`DotStuffer`](crate::stuff) including its terminator, then
//! reports [`Event::MessageSent`]. Nothing is ever deleted except through
//! [`Action::Commit`], which only `QUIT` in TRANSACTION produces.
//!
//! Every "message n" goes through one lookup, [`Maildrop::lookup`], which knows 0 (the
//! grammar already refuses it), out of range, and deleted.

use std::fmt;
use std::time::Duration;

pub use crate::ContractViolation;
use crate::capa::{self, Capabilities, ExpirePolicy, LoginDelay, Utf8Capa};
use crate::command::{Command, MsgNum};
use crate::framer::Line;
use crate::response::{RespCode, StatusLine, write_multiline};
use crate::sasl::{self, SaslResponse};

/// Policy for one server, shared by all its sessions.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Text of the greeting after `+OK` (the APOP timestamp is appended).
    pub greeting: String,
    /// The `IMPLEMENTATION` capability text; `None` leaves the tag out.
    pub implementation: Option<String>,
    /// SASL mechanisms the driver can run, in preference order, upper case.
    /// `PLAIN` and `LOGIN` are hidden where cleartext login is refused.
    pub sasl_mechanisms: Vec<String>,
    /// The `LOGIN-DELAY` announcement in seconds (RFC 2449 §6.8); the driver enforces
    /// it and answers [`AuthOutcome::LoginDelay`].
    pub login_delay: Option<u32>,
    /// The `EXPIRE` announcement (RFC 2449 §6.7). `Some(ExpirePolicy::Days(0))` is enforced
    /// here: messages retrieved in a session are deleted at its `QUIT`. For longer
    /// periods the driver enforces it at UPDATE from stored first-retrieval dates,
    /// using [`ServerSession::retrieved`].
    pub expire: Option<ExpirePolicy>,
    /// Offer `UTF8` and `LANG` (RFC 6856).
    pub utf8: bool,
    /// Bad commands (unknown, malformed, overlong, wrong state) before the session is
    /// closed.
    pub max_bad_commands: u32,
    /// Failed logins before the session is closed.
    pub max_auth_failures: u32,
    /// Client responses accepted in one SASL exchange.
    pub max_sasl_steps: u32,
    /// Longest SASL response line, line end included.
    pub max_sasl_line: usize,
    /// Longest command line, line end included (RFC 2449 §4: at least 255).
    pub max_command_line: usize,
    /// How long the client may be silent before login.
    pub pre_login_idle: Duration,
    /// How long the client may be silent after login (RFC 1939 §3: at least 10
    /// minutes).
    pub post_login_idle: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            greeting: "Correio POP3 server ready".into(),
            implementation: Some(concat!("Correio ", env!("CARGO_PKG_VERSION")).into()),
            sasl_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            login_delay: None,
            expire: None,
            utf8: true,
            max_bad_commands: 10,
            max_auth_failures: 3,
            max_sasl_steps: 8,
            max_sasl_line: sasl::MAX_SASL_LINE + 2,
            max_command_line: crate::MAX_COMMAND_LINE,
            pre_login_idle: Duration::from_secs(60),
            post_login_idle: Duration::from_secs(600),
        }
    }
}

/// What the driver knows about this connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// TLS is up (implicit TLS, or later after STLS).
    pub tls: bool,
    /// STLS can be offered (a certificate is loaded and TLS is not up yet).
    pub stls_available: bool,
    /// Passwords may be sent on this connection while it is cleartext (loopback, or
    /// the admin allowed it). Once TLS is up, logins are always allowed.
    pub cleartext_login_allowed: bool,
}

/// One message as the maildrop lists it when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The exact wire size (RFC 1939 octets with CRLF, before stuffing).
    pub size: u64,
    /// The unique id: 1-70 octets in 0x21-0x7E.
    pub uid: String,
}

/// Credentials to check; their `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The login name as the client sent it (unvalidated: the driver validates it).
    pub user: String,
    /// The password, exactly as sent.
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What the machine asks the driver to do. Until the driver reports the result with
/// [`ServerSession::handle_event`], it must feed no further line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check a user name and password (USER/PASS). Answer with [`Event::Auth`].
    Authenticate(Credentials),
    /// Check an APOP digest: MD5(timestamp + secret) in lowercase hex. Answer with
    /// [`Event::Auth`].
    ApopAuthenticate {
        /// The login name as sent.
        user: String,
        /// The digest, lowercase hex.
        digest: String,
        /// The greeting's timestamp, `<...>` included.
        timestamp: String,
    },
    /// Start a SASL exchange with `mechanism` (one of the configured ones).
    /// `initial_response` is already base64-decoded. Answer with
    /// [`Event::SaslChallenge`] or [`Event::Auth`].
    SaslStart {
        /// The mechanism, upper case.
        mechanism: String,
        /// The decoded initial response, if the client sent one.
        initial_response: Option<Vec<u8>>,
    },
    /// The next decoded client response of the running SASL exchange. Answer with
    /// [`Event::SaslChallenge`] or [`Event::Auth`].
    SaslStep(Vec<u8>),
    /// The exchange was cancelled or broken: drop the mechanism's state. No answer.
    SaslAbort,
    /// Lock and open the maildrop of this (authenticated) user. Answer with
    /// [`Event::MaildropOpened`].
    OpenMaildrop {
        /// The authenticated user.
        user: String,
    },
    /// Open message `index` (0-based) for streaming; see the module docs.
    StreamMessage {
        /// 0-based index in the listing given by [`Event::MaildropOpened`].
        index: usize,
        /// Whole message or TOP.
        kind: StreamKind,
    },
    /// Flush the output, clear the framer, run the TLS handshake, then answer with
    /// [`Event::TlsStarted`] (or close on failure).
    StartTls,
    /// Remove these messages (0-based indices) and release the maildrop: the UPDATE
    /// state. Answer with [`Event::Committed`].
    Commit {
        /// The messages marked deleted, ascending.
        deletions: Vec<usize>,
    },
    /// Flush the output and close the connection. The maildrop, if open, is released
    /// without changes.
    Close,
}

/// How much of a message to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// RETR: the whole message.
    Retr,
    /// TOP: the header, the blank line, and this many body lines.
    Top(u32),
}

/// The result of an authentication (password, APOP or SASL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right; `user` is the canonical login name.
    Success {
        /// The authenticated user.
        user: String,
    },
    /// Wrong user or wrong secret: one answer for both.
    Failure,
    /// Right credentials, but the user logged in less than LOGIN-DELAY ago.
    LoginDelay,
    /// The user database could not be read; try later.
    TempFail,
}

/// Why the maildrop could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Another session holds the lock.
    InUse,
    /// A temporary problem (I/O error, lock timeout).
    Temporary,
    /// A permanent problem (corrupt maildrop, bad configuration).
    Permanent,
}

/// What the store was asked to do when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Lock and open the maildrop at login.
    Open,
    /// Open one message for RETR/TOP.
    Read,
    /// Remove the messages marked deleted (UPDATE).
    Commit,
}

/// The one mapping of a store failure to its status line (RFC 2449 `[IN-USE]`,
/// RFC 3206 `[SYS/TEMP]` and `[SYS/PERM]`): the client learns whether to retry.
pub fn store_failure(op: StoreOp, e: OpenError) -> StatusLine {
    let code = match (op, e) {
        (StoreOp::Open, OpenError::InUse) => RespCode::InUse,
        // Deletions not done are never lost: the next session may QUIT again.
        (StoreOp::Commit, _) => RespCode::SysTemp,
        (_, OpenError::Permanent) => RespCode::SysPerm,
        // A message gone under us (another tool removed it) is temporary from the
        // client's point of view.
        (_, OpenError::InUse | OpenError::Temporary) => RespCode::SysTemp,
    };
    let text = match (op, e) {
        (StoreOp::Open, OpenError::InUse) => "Maildrop is locked by another session",
        (StoreOp::Open, OpenError::Temporary) => "Maildrop is not available; try again later",
        (StoreOp::Open, _) => "Maildrop cannot be opened",
        (StoreOp::Read, OpenError::Permanent) => "Message cannot be read",
        (StoreOp::Read, _) => "Message cannot be read now",
        (StoreOp::Commit, _) => "Some deleted messages were not removed",
    };
    StatusLine::err_code(code, text)
}

/// Results of actions that the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The result of [`Action::Authenticate`], [`Action::ApopAuthenticate`] or a SASL
    /// exchange.
    Auth(AuthOutcome),
    /// The SASL mechanism needs another response; this challenge (raw bytes) goes to
    /// the client base64-encoded.
    SaslChallenge(Vec<u8>),
    /// The result of [`Action::OpenMaildrop`].
    MaildropOpened(Result<Vec<MessageInfo>, OpenError>),
    /// The result of opening the message of [`Action::StreamMessage`]. `Ok` queues the
    /// `+OK` line; the driver then streams the body.
    MessageOpened(Result<(), OpenError>),
    /// The body of the message, terminator included, was sent; `bytes` is how many
    /// wire bytes (for the logout log line).
    MessageSent {
        /// Wire bytes sent for the body.
        bytes: u64,
    },
    /// The TLS handshake after STLS succeeded.
    TlsStarted,
    /// The result of [`Action::Commit`]: `Ok` if every marked message is gone.
    Committed(Result<(), OpenError>),
}

/// The protocol state (RFC 1939 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Before login.
    Authorization,
    /// Logged in, maildrop open.
    Transaction,
    /// QUIT received in TRANSACTION: deletions are being committed.
    Update,
    /// The session is over; the driver closes the connection.
    Closed,
}

/// Counters for the logout log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages sent with RETR.
    pub retr: u32,
    /// Messages sent with TOP.
    pub top: u32,
    /// Messages marked with DELE (at the end: the ones committed, if QUIT succeeded).
    pub dele: u32,
    /// Body bytes sent for RETR and TOP.
    pub bytes: u64,
    /// Whether deletions were committed.
    pub committed: bool,
}

/// Why "message n" cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// No message with that number in this session's listing.
    NoSuchMessage,
    /// The message is marked deleted.
    Deleted,
}

impl LookupError {
    fn reply(self) -> StatusLine {
        match self {
            LookupError::NoSuchMessage => StatusLine::err("No such message"),
            LookupError::Deleted => StatusLine::err("Message is deleted"),
        }
    }
}

/// The maildrop as this session sees it: the listing taken at login, and the marks.
#[derive(Debug, Clone, Default)]
pub struct Maildrop {
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
    retrieved: Vec<bool>,
}

impl Maildrop {
    /// A maildrop over a listing.
    pub fn new(messages: Vec<MessageInfo>) -> Self {
        let n = messages.len();
        Maildrop {
            messages,
            deleted: vec![false; n],
            retrieved: vec![false; n],
        }
    }

    /// THE lookup of "message n": every command that names a message goes through it.
    pub fn lookup(&self, n: MsgNum) -> Result<(usize, &MessageInfo), LookupError> {
        let i = n.index();
        let info = self.messages.get(i).ok_or(LookupError::NoSuchMessage)?;
        if self.deleted[i] {
            return Err(LookupError::Deleted);
        }
        Ok((i, info))
    }

    /// Messages not marked deleted and their total size.
    pub fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size))
    }

    fn live(&self) -> impl Iterator<Item = (MsgNum, &MessageInfo)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .filter_map(|(i, m)| MsgNum::from_index(i).map(|n| (n, m)))
    }

    fn deletions(&self, expire_retrieved: bool) -> Vec<usize> {
        (0..self.messages.len())
            .filter(|&i| self.deleted[i] || (expire_retrieved && self.retrieved[i]))
            .collect()
    }
}

/// What the session waits for while an action is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Auth,
    Sasl,
    Open,
    MessageOpen(usize, StreamKind),
    MessageBody(usize, StreamKind),
    Tls,
    Commit,
}

/// Errors in the arguments of a known command (as opposed to an unknown command or
/// garbage on the line).
fn is_argument_error(e: crate::command::CommandError) -> bool {
    use crate::command::CommandError as E;
    matches!(e, E::Syntax | E::InvalidNumber | E::ArgumentTooLong)
}

/// Where AUTHORIZATION is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Login {
    /// Nothing yet.
    Start,
    /// USER was accepted; PASS may follow.
    GotUser(String),
    /// A SASL exchange is running; the driver holds the mechanism state.
    Sasl { steps: u32 },
}

/// One POP3 server session. See the module docs for the driving contract.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    conn: ConnectionInfo,
    apop_timestamp: Option<String>,
    state: State,
    login: Login,
    pending: Pending,
    maildrop: Maildrop,
    user: Option<String>,
    bad_commands: u32,
    auth_failures: u32,
    utf8: bool,
    stats: SessionStats,
    out: Vec<u8>,
}

impl ServerSession {
    /// A new session; the greeting is queued. `apop_timestamp` (`<pid.clock@host>`,
    /// fresh for every connection, made by the driver) enables APOP and goes into the
    /// greeting.
    pub fn new(config: ServerConfig, conn: ConnectionInfo, apop_timestamp: Option<String>) -> Self {
        let mut s = ServerSession {
            config,
            conn,
            apop_timestamp,
            state: State::Authorization,
            login: Login::Start,
            pending: Pending::None,
            maildrop: Maildrop::default(),
            user: None,
            bad_commands: 0,
            auth_failures: 0,
            utf8: false,
            stats: SessionStats::default(),
            out: Vec::with_capacity(256),
        };
        let text = match &s.apop_timestamp {
            Some(ts) => format!("{} {}", s.config.greeting, ts),
            None => s.config.greeting.clone(),
        };
        s.reply(StatusLine::ok(text));
        s
    }

    /// The store measured message `index` when it opened it for RETR/TOP and found
    /// `size` wire octets, not the listed size (a size taken from a file name or an
    /// index that was wrong). Call it before [`Event::MessageOpened`]: the `+OK n
    /// octets` line then announces what really follows, and the rest of the session
    /// lists the measured size. RFC 1939's sizes are exact.
    pub fn correct_size(&mut self, index: usize, size: u64) {
        if let Some(m) = self.maildrop.messages.get_mut(index) {
            m.size = size;
        }
    }

    /// Bytes to send now (taken: the buffer is emptied).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether output is queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the session is over (flush the output and close).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether an action is pending (feed no line until its result is reported).
    pub fn is_waiting(&self) -> bool {
        self.pending != Pending::None
    }

    /// The authenticated user, once logged in.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether TLS is up.
    pub fn is_tls(&self) -> bool {
        self.conn.tls
    }

    /// The messages (0-based indexes, ascending) retrieved in full with RETR in this
    /// session, for the driver's `EXPIRE n` bookkeeping at UPDATE. TOP never counts.
    pub fn retrieved(&self) -> Vec<usize> {
        (0..self.maildrop.retrieved.len())
            .filter(|&i| self.maildrop.retrieved[i])
            .collect()
    }

    /// Counters for the logout log line.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The line limit (line end included) the framer must use for the next line.
    pub fn max_line(&self) -> usize {
        match self.login {
            Login::Sasl { .. } => self.config.max_sasl_line,
            _ => self.config.max_command_line,
        }
    }

    /// Whether passwords may be sent on this connection now.
    fn login_allowed(&self) -> bool {
        self.conn.tls || self.conn.cleartext_login_allowed
    }

    fn reply(&mut self, line: StatusLine) {
        line.write_to(&mut self.out);
    }

    /// The driver broke the contract: answer `-ERR [SYS/TEMP]` once and close, never
    /// act on it, never hang.
    fn violation(&mut self, what: &'static str) -> ContractViolation {
        if self.state != State::Closed {
            self.reply(StatusLine::err_code(
                RespCode::SysTemp,
                "Internal error; nothing was deleted",
            ));
            self.state = State::Closed;
        }
        self.pending = Pending::None;
        ContractViolation(what)
    }

    /// How long the client may be silent now; when that passes, call
    /// [`Self::handle_timeout`]. The session owns its timers; the driver only waits.
    pub fn idle_timeout(&self) -> Duration {
        match self.state {
            State::Authorization => self.config.pre_login_idle,
            _ => self.config.post_login_idle,
        }
    }

    /// The client was silent for [`Self::idle_timeout`]: `-ERR`, closed without UPDATE.
    pub fn handle_timeout(&mut self) -> Option<Action> {
        if self.state == State::Closed {
            return None;
        }
        self.reply(StatusLine::err("Autologout; idle for too long"));
        Some(self.close())
    }

    /// The server is shutting down (or the admin ended the session): `-ERR
    /// [SYS/TEMP]`, closed without UPDATE.
    pub fn handle_shutdown(&mut self) -> Option<Action> {
        if self.state == State::Closed {
            return None;
        }
        self.reply(StatusLine::err_code(
            RespCode::SysTemp,
            "Server shutting down; nothing was deleted",
        ));
        Some(self.close())
    }

    /// Feeds one framed line. See the module docs. A line while an action is pending,
    /// or after the close, breaks the driving contract.
    pub fn handle_line(&mut self, line: Line<'_>) -> Result<Option<Action>, ContractViolation> {
        if self.state == State::Closed {
            return Err(ContractViolation("a line after the session closed"));
        }
        if self.pending != Pending::None {
            return Err(self.violation("a line while an action is pending"));
        }
        Ok(self.line(line))
    }

    fn line(&mut self, line: Line<'_>) -> Option<Action> {
        if let Login::Sasl { steps } = self.login {
            return self.sasl_line(line, steps);
        }
        let bytes = match line {
            Line::Complete(b) => b,
            Line::TooLong => {
                self.reply(StatusLine::err("Command line too long"));
                return self.bad_command();
            }
        };
        match Command::parse(bytes) {
            Ok(cmd) => self.command(cmd),
            Err(e) => {
                self.reply(StatusLine::err(e.wire_text()));
                // After login, a known command with a bad argument (`RETR one`,
                // `UIDL 0`, `RETR` alone) is a legitimate client mistake, like asking
                // for a deleted message: answer -ERR and go on. Unknown commands, and
                // anything before login, count toward the limit.
                if self.state == State::Transaction && is_argument_error(e) {
                    return None;
                }
                self.bad_command()
            }
        }
    }

    fn bad_command(&mut self) -> Option<Action> {
        self.bad_commands += 1;
        if self.bad_commands >= self.config.max_bad_commands {
            self.reply(StatusLine::err("Too many bad commands, closing"));
            return Some(self.close());
        }
        None
    }

    fn close(&mut self) -> Action {
        self.state = State::Closed;
        self.pending = Pending::None;
        Action::Close
    }

    fn wrong_state(&mut self) -> Option<Action> {
        let text = match self.state {
            State::Authorization => "Command not valid before login",
            _ => "Command not valid after login",
        };
        self.reply(StatusLine::err(text));
        self.bad_command()
    }

    fn command(&mut self, cmd: Command) -> Option<Action> {
        // Commands valid in both states first.
        match cmd {
            Command::Capa => {
                self.capa();
                return None;
            }
            Command::Noop if self.state == State::Transaction => {
                self.reply(StatusLine::ok(""));
                return None;
            }
            Command::Quit => return self.quit(),
            Command::Lang(tag) if self.config.utf8 => {
                self.lang(tag);
                return None;
            }
            _ => {}
        }
        match self.state {
            State::Authorization => self.authorization(cmd),
            State::Transaction => self.transaction(cmd),
            State::Update | State::Closed => None,
        }
    }

    fn quit(&mut self) -> Option<Action> {
        match self.state {
            State::Transaction => {
                self.state = State::Update;
                self.pending = Pending::Commit;
                let expire_now = self.config.expire == Some(ExpirePolicy::Days(0));
                Some(Action::Commit {
                    deletions: self.maildrop.deletions(expire_now),
                })
            }
            _ => {
                self.reply(StatusLine::ok("Correio POP3 server signing off"));
                Some(self.close())
            }
        }
    }

    fn capa(&mut self) {
        let login_ok = self.login_allowed();
        let caps = Capabilities {
            top: true,
            user: login_ok,
            sasl: self
                .config
                .sasl_mechanisms
                .iter()
                .filter(|m| login_ok || !sends_cleartext(m))
                .cloned()
                .collect(),
            resp_codes: true,
            login_delay: self.config.login_delay.map(|seconds| LoginDelay {
                seconds,
                per_user: false,
            }),
            pipelining: true,
            expire: self.config.expire.map(|policy| capa::Expire {
                policy,
                per_user: false,
            }),
            uidl: true,
            implementation: self.config.implementation.clone(),
            // RFC 2595: only before login and only while the connection is cleartext.
            stls: self.state == State::Authorization && !self.conn.tls && self.conn.stls_available,
            auth_resp_code: true,
            utf8: self.config.utf8.then_some(Utf8Capa { user: false }),
            lang: self.config.utf8,
            other: Vec::new(),
        };
        caps.write_response(&mut self.out);
    }

    fn lang(&mut self, tag: Option<String>) {
        match tag.as_deref() {
            None => write_multiline(
                &StatusLine::ok("Language listing follows"),
                [&b"en English"[..]],
                &mut self.out,
            ),
            Some(t) if t == "*" || t.eq_ignore_ascii_case("en") => {
                self.reply(StatusLine::ok("en Language is English"))
            }
            Some(_) => self.reply(StatusLine::err("Language not supported")),
        }
    }

    fn refuse_cleartext(&mut self) -> Option<Action> {
        self.reply(StatusLine::err_code(
            RespCode::Auth,
            "Cleartext login is not allowed on this connection; use STLS or POP3S",
        ));
        None
    }

    fn authorization(&mut self, cmd: Command) -> Option<Action> {
        match cmd {
            Command::User(name) => {
                if !self.login_allowed() {
                    self.login = Login::Start;
                    return self.refuse_cleartext();
                }
                self.login = Login::GotUser(name);
                // The same answer whether or not the user exists.
                self.reply(StatusLine::ok("Send PASS"));
                None
            }
            Command::Pass(password) => {
                let Login::GotUser(user) = std::mem::replace(&mut self.login, Login::Start) else {
                    self.reply(StatusLine::err("USER first"));
                    return self.bad_command();
                };
                if !self.login_allowed() {
                    return self.refuse_cleartext();
                }
                self.pending = Pending::Auth;
                Some(Action::Authenticate(Credentials { user, password }))
            }
            Command::Apop { name, digest } => {
                self.login = Login::Start;
                let Some(timestamp) = self.apop_timestamp.clone() else {
                    self.reply(StatusLine::err("APOP is not offered"));
                    return self.bad_command();
                };
                self.pending = Pending::Auth;
                Some(Action::ApopAuthenticate {
                    user: name,
                    digest,
                    timestamp,
                })
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                self.login = Login::Start;
                let login_ok = self.login_allowed();
                let mechs: Vec<Vec<u8>> = self
                    .config
                    .sasl_mechanisms
                    .iter()
                    .filter(|m| login_ok || !sends_cleartext(m))
                    .map(|m| m.as_bytes().to_vec())
                    .collect();
                write_multiline(
                    &StatusLine::ok("Methods supported"),
                    mechs.iter().map(Vec::as_slice),
                    &mut self.out,
                );
                None
            }
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => {
                self.login = Login::Start;
                if !self.config.sasl_mechanisms.contains(&mechanism) {
                    self.reply(StatusLine::err("Unsupported authentication mechanism"));
                    return self.bad_command();
                }
                if sends_cleartext(&mechanism) && !self.login_allowed() {
                    return self.refuse_cleartext();
                }
                let initial_response = match initial_response {
                    None => None,
                    Some(ir) => match sasl::decode_initial_response(&ir) {
                        Ok(d) => Some(d),
                        Err(_) if ir == "*" => {
                            self.reply(StatusLine::err("Authentication cancelled"));
                            return None;
                        }
                        Err(e) => {
                            self.login = Login::Start;
                            self.refuse_sasl_response(e);
                            return (self.auth_failures >= self.config.max_auth_failures)
                                .then(|| self.abort_or_close());
                        }
                    },
                };
                self.login = Login::Sasl { steps: 0 };
                self.pending = Pending::Sasl;
                Some(Action::SaslStart {
                    mechanism,
                    initial_response,
                })
            }
            Command::Stls => {
                if self.conn.tls || !self.conn.stls_available {
                    self.reply(StatusLine::err("STLS not available"));
                    return self.bad_command();
                }
                self.login = Login::Start;
                self.reply(StatusLine::ok("Begin TLS negotiation"));
                self.pending = Pending::Tls;
                Some(Action::StartTls)
            }
            Command::Utf8 if self.config.utf8 => {
                self.utf8 = true;
                self.reply(StatusLine::ok("UTF8 enabled"));
                None
            }
            Command::Noop => {
                // RFC 1939 lists NOOP for TRANSACTION only.
                self.wrong_state()
            }
            _ => self.wrong_state(),
        }
    }

    fn sasl_line(&mut self, line: Line<'_>, steps: u32) -> Option<Action> {
        let decoded = match line {
            Line::TooLong => {
                self.login = Login::Start;
                self.reply(StatusLine::err_code(
                    RespCode::Auth,
                    "Authentication response too long",
                ));
                self.auth_failed_count();
                return Some(self.abort_or_close());
            }
            Line::Complete(b) => sasl::decode_response(b),
        };
        match decoded {
            Ok(SaslResponse::Cancel) => {
                self.login = Login::Start;
                self.reply(StatusLine::err("Authentication cancelled"));
                Some(Action::SaslAbort)
            }
            Err(e) => {
                self.login = Login::Start;
                self.refuse_sasl_response(e);
                Some(self.abort_or_close())
            }
            Ok(SaslResponse::Data(d)) => {
                if steps + 1 > self.config.max_sasl_steps {
                    self.login = Login::Start;
                    self.reply(StatusLine::err_code(
                        RespCode::Auth,
                        "Too many authentication steps",
                    ));
                    self.auth_failed_count();
                    return Some(self.abort_or_close());
                }
                self.login = Login::Sasl { steps: steps + 1 };
                self.pending = Pending::Sasl;
                Some(Action::SaslStep(d))
            }
        }
    }

    /// After a broken SASL exchange: abort it, or close if failures are exhausted.
    fn abort_or_close(&mut self) -> Action {
        if self.auth_failures >= self.config.max_auth_failures {
            self.reply(StatusLine::err("Too many failed logins, closing"));
            self.close()
        } else {
            Action::SaslAbort
        }
    }

    fn auth_failed_count(&mut self) {
        self.auth_failures += 1;
    }

    /// A SASL response that cannot be decoded (bad base64, too long), whether it came
    /// as AUTH's initial response or as a later line: the same `[AUTH]` reply and a
    /// failed attempt either way.
    fn refuse_sasl_response(&mut self, e: sasl::SaslError) {
        self.reply(StatusLine::err_code(RespCode::Auth, e.wire_text()));
        self.auth_failed_count();
    }

    fn transaction(&mut self, cmd: Command) -> Option<Action> {
        match cmd {
            Command::Stat => {
                let (n, size) = self.maildrop.stat();
                self.reply(StatusLine::ok(format!("{n} {size}")));
                None
            }
            Command::List(Some(n)) => {
                let line = match self.maildrop.lookup(n) {
                    Ok((_, m)) => StatusLine::ok(format!("{n} {}", m.size)),
                    Err(e) => e.reply(),
                };
                self.reply(line);
                None
            }
            Command::List(None) => {
                let (count, size) = self.maildrop.stat();
                StatusLine::ok(format!("{count} messages ({size} octets)")).write_to(&mut self.out);
                self.out.reserve(count * 16 + 3);
                for (n, m) in self.maildrop.live() {
                    push_decimal(&mut self.out, u64::from(n.get()));
                    self.out.push(b' ');
                    push_decimal(&mut self.out, m.size);
                    self.out.extend_from_slice(b"\r\n");
                }
                self.out.extend_from_slice(b".\r\n");
                None
            }
            Command::Uidl(Some(n)) => {
                let line = match self.maildrop.lookup(n) {
                    Ok((_, m)) => StatusLine::ok(format!("{n} {}", m.uid)),
                    Err(e) => e.reply(),
                };
                self.reply(line);
                None
            }
            Command::Uidl(None) => {
                StatusLine::ok("Unique-ID listing follows").write_to(&mut self.out);
                self.out.reserve(self.maildrop.stat().0 * 40 + 3);
                for (n, m) in self.maildrop.live() {
                    push_decimal(&mut self.out, u64::from(n.get()));
                    self.out.push(b' ');
                    self.out.extend_from_slice(m.uid.as_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
                self.out.extend_from_slice(b".\r\n");
                None
            }
            Command::Retr(n) => self.stream(n, StreamKind::Retr),
            Command::Top { msg, lines } => self.stream(msg, StreamKind::Top(lines)),
            Command::Dele(n) => {
                let line = match self.maildrop.lookup(n) {
                    Ok((i, _)) => {
                        self.maildrop.deleted[i] = true;
                        self.stats.dele += 1;
                        StatusLine::ok(format!("Message {n} deleted"))
                    }
                    Err(e) => e.reply(),
                };
                self.reply(line);
                None
            }
            Command::Rset => {
                self.maildrop.deleted.iter_mut().for_each(|d| *d = false);
                self.stats.dele = 0;
                let (n, size) = self.maildrop.stat();
                self.reply(StatusLine::ok(format!(
                    "Maildrop has {n} messages ({size} octets)"
                )));
                None
            }
            _ => self.wrong_state(),
        }
    }

    fn stream(&mut self, n: MsgNum, kind: StreamKind) -> Option<Action> {
        match self.maildrop.lookup(n) {
            Ok((index, _)) => {
                self.pending = Pending::MessageOpen(index, kind);
                Some(Action::StreamMessage { index, kind })
            }
            Err(e) => {
                self.reply(e.reply());
                None
            }
        }
    }

    /// Reports the result of the pending action. See the module docs. An event that
    /// answers no pending action breaks the driving contract.
    pub fn handle_event(&mut self, event: Event) -> Result<Option<Action>, ContractViolation> {
        if self.state == State::Closed {
            return Err(ContractViolation("an event after the session closed"));
        }
        self.event(event)
    }

    fn event(&mut self, event: Event) -> Result<Option<Action>, ContractViolation> {
        Ok(match (self.pending, event) {
            (Pending::Auth | Pending::Sasl, Event::Auth(outcome)) => {
                self.pending = Pending::None;
                if matches!(self.login, Login::Sasl { .. }) {
                    self.login = Login::Start;
                }
                self.auth_result(outcome)
            }
            (Pending::Sasl, Event::SaslChallenge(challenge)) => {
                self.pending = Pending::None;
                sasl::encode_challenge(&challenge, &mut self.out);
                None
            }
            (Pending::Open, Event::MaildropOpened(result)) => {
                self.pending = Pending::None;
                match result {
                    Ok(listing) => {
                        self.maildrop = Maildrop::new(listing);
                        self.state = State::Transaction;
                        let (n, size) = self.maildrop.stat();
                        self.reply(StatusLine::ok(format!(
                            "Logged in, {n} messages ({size} octets)"
                        )));
                        None
                    }
                    Err(e) => {
                        self.user = None;
                        self.reply(store_failure(StoreOp::Open, e));
                        None
                    }
                }
            }
            (Pending::MessageOpen(index, kind), Event::MessageOpened(result)) => match result {
                Ok(()) => {
                    self.pending = Pending::MessageBody(index, kind);
                    let line = match kind {
                        StreamKind::Retr => {
                            let size = self.maildrop.messages[index].size;
                            StatusLine::ok(format!("{size} octets"))
                        }
                        StreamKind::Top(_) => StatusLine::ok("Top of message follows"),
                    };
                    self.reply(line);
                    None
                }
                Err(e) => {
                    self.pending = Pending::None;
                    self.reply(store_failure(StoreOp::Read, e));
                    None
                }
            },
            (Pending::MessageBody(index, kind), Event::MessageSent { bytes }) => {
                self.pending = Pending::None;
                self.stats.bytes += bytes;
                match kind {
                    StreamKind::Retr => {
                        self.stats.retr += 1;
                        self.maildrop.retrieved[index] = true;
                    }
                    StreamKind::Top(_) => self.stats.top += 1,
                }
                None
            }
            (Pending::Tls, Event::TlsStarted) => {
                self.pending = Pending::None;
                self.conn.tls = true;
                self.login = Login::Start;
                None
            }
            (Pending::Commit, Event::Committed(result)) => {
                self.pending = Pending::None;
                match result {
                    Ok(()) => {
                        self.stats.committed = true;
                        self.reply(StatusLine::ok("Correio POP3 server signing off"));
                    }
                    Err(e) => self.reply(store_failure(StoreOp::Commit, e)),
                }
                Some(self.close())
            }
            _ => return Err(self.violation("an event that answers no pending action")),
        })
    }

    fn auth_result(&mut self, outcome: AuthOutcome) -> Option<Action> {
        match outcome {
            AuthOutcome::Success { user } => {
                self.user = Some(user.clone());
                self.pending = Pending::Open;
                Some(Action::OpenMaildrop { user })
            }
            AuthOutcome::Failure => {
                self.auth_failures += 1;
                self.reply(StatusLine::err_code(
                    RespCode::Auth,
                    "Authentication failed",
                ));
                if self.auth_failures >= self.config.max_auth_failures {
                    self.reply(StatusLine::err("Too many failed logins, closing"));
                    return Some(self.close());
                }
                None
            }
            AuthOutcome::LoginDelay => {
                self.reply(StatusLine::err_code(
                    RespCode::LoginDelay,
                    "Logged in too recently; try again later",
                ));
                None
            }
            AuthOutcome::TempFail => {
                self.reply(StatusLine::err_code(
                    RespCode::SysTemp,
                    "Authentication is temporarily unavailable",
                ));
                None
            }
        }
    }

    /// Whether the client sent `UTF8` (RFC 6856).
    pub fn utf8_enabled(&self) -> bool {
        self.utf8
    }
}

/// Mechanisms that carry the password itself (refused where cleartext login is).
fn sends_cleartext(mechanism: &str) -> bool {
    matches!(mechanism, "PLAIN" | "LOGIN")
}

/// Appends `v` in decimal (a listing of 50,000 lines formats 100,000 numbers: no
/// `fmt` machinery, no allocation).
fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Fuzz body (`fuzz/fuzz_targets/server_session.rs`): drives a session with arbitrary
/// client bytes and data-chosen action results, and checks the machine's promises:
/// no panic, bounded status lines, every action answered in a few steps, `Commit`
/// only from UPDATE (entered only by QUIT) with indices inside the listing.
/// Byte 0 picks the connection flags; the rest is the client's byte stream.
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) {
    use crate::framer::LineFramer;
    fn ev(s: &mut ServerSession, e: Event) -> Option<Action> {
        s.handle_event(e).expect("the driver keeps the contract")
    }
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let conn = ConnectionInfo {
        tls: flags & 1 != 0,
        stls_available: flags & 2 != 0,
        cleartext_login_allowed: flags & 4 != 0,
    };
    let config = ServerConfig {
        login_delay: (flags & 16 != 0).then_some(60),
        expire: (flags & 32 != 0).then_some(ExpirePolicy::Days(0)),
        ..ServerConfig::default()
    };
    let apop = (flags & 8 != 0).then(|| "<1.2@fuzz>".to_owned());
    let mut s = ServerSession::new(config, conn, apop);
    let mut framer = LineFramer::new(s.max_line());
    let listing: Vec<MessageInfo> = (0..3u64)
        .map(|i| MessageInfo {
            size: 10 + i,
            uid: format!("u{i}"),
        })
        .collect();
    let mut choice = flags;
    let check_output = |out: Vec<u8>| {
        // Status lines never pass 512 octets (RFC 2449 §4); body lines are the
        // machine's own listings, also short.
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= crate::MAX_STATUS_LINE, "overlong output line");
        }
    };
    check_output(s.take_output());
    // Irregular chunking exercises the framer/machine boundary.
    for chunk in input.chunks(1 + usize::from(flags >> 6) * 5) {
        framer.push(chunk);
        loop {
            framer.set_max_line(s.max_line());
            let Some(line) = framer.next_line() else {
                break;
            };
            let mut action = s.handle_line(line).expect("the driver keeps the contract");
            let mut steps = 0;
            while let Some(a) = action {
                steps += 1;
                assert!(steps < 8, "action loop");
                choice = choice.wrapping_mul(31).wrapping_add(7);
                action = match a {
                    Action::Authenticate(_) | Action::ApopAuthenticate { .. } => ev(
                        &mut s,
                        Event::Auth(match choice % 4 {
                            0 => AuthOutcome::Failure,
                            1 => AuthOutcome::LoginDelay,
                            2 => AuthOutcome::TempFail,
                            _ => AuthOutcome::Success { user: "u".into() },
                        }),
                    ),
                    Action::SaslStart { .. } | Action::SaslStep(_) => match choice % 3 {
                        0 => ev(&mut s, Event::SaslChallenge(vec![choice; 3])),
                        1 => ev(&mut s, Event::Auth(AuthOutcome::Failure)),
                        _ => ev(
                            &mut s,
                            Event::Auth(AuthOutcome::Success { user: "u".into() }),
                        ),
                    },
                    Action::SaslAbort | Action::Close => None,
                    Action::OpenMaildrop { .. } => ev(
                        &mut s,
                        Event::MaildropOpened(if choice % 5 == 0 {
                            Err(OpenError::InUse)
                        } else {
                            Ok(listing.clone())
                        }),
                    ),
                    Action::StreamMessage { index, .. } => {
                        assert!(index < listing.len(), "stream index out of range");
                        assert_eq!(s.state(), State::Transaction);
                        if choice % 7 == 0 {
                            ev(&mut s, Event::MessageOpened(Err(OpenError::Temporary)))
                        } else {
                            let none = ev(&mut s, Event::MessageOpened(Ok(())));
                            assert!(none.is_none());
                            check_output(s.take_output());
                            ev(&mut s, Event::MessageSent { bytes: 12 })
                        }
                    }
                    Action::StartTls => {
                        assert!(!s.is_tls());
                        check_output(s.take_output());
                        framer.clear();
                        ev(&mut s, Event::TlsStarted)
                    }
                    Action::Commit { deletions } => {
                        assert_eq!(s.state(), State::Update, "commit outside UPDATE");
                        assert!(deletions.iter().all(|&i| i < listing.len()));
                        assert!(deletions.windows(2).all(|w| w[0] < w[1]));
                        ev(&mut s, Event::Committed(Ok(())))
                    }
                };
            }
            check_output(s.take_output());
            if s.is_closed() {
                return;
            }
        }
    }
}
