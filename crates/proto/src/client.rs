//! The client session state machine, sans-IO.
//!
//! [`ClientSession`] turns commands into wire bytes and server bytes into [`Event`]s.
//! It never touches a socket: the driver (the `correio-client` crate, or a test) moves
//! bytes between it and the peer.
//!
//! # Driving contract
//! 1. Create it with [`ClientSession::new`]. Feed everything the server sends to
//!    [`ClientSession::receive`]; after each call, drain [`ClientSession::poll_event`]
//!    until it returns `None` ("need more bytes" is a normal state).
//! 2. The first event is [`Event::Greeting`]. Queue commands with
//!    [`ClientSession::send`] (or [`ClientSession::auth`] for SASL); each call appends
//!    the command line to the transmit buffer, which the driver empties with
//!    [`ClientSession::take_transmit`] and writes to the server.
//! 3. Commands may be pipelined: any number can be queued before their responses arrive
//!    (only when the server advertised `PIPELINING`; that policy is the driver's). The
//!    responses are matched to the commands in order: each command yields exactly one
//!    terminal event ([`Event::Status`], [`Event::Stat`], [`Event::List`],
//!    [`Event::Uidl`], [`Event::Capa`] or [`Event::BodyEnd`]) unless the session fails.
//! 4. `RETR` and `TOP` stream: [`Event::BodyStart`], then [`Event::Body`] chunks of
//!    message bytes (unstuffed, CRLF line ends), then [`Event::BodyEnd`]. No message is
//!    ever held whole.
//! 5. After `+OK` to `STLS` the machine yields [`Event::StartTls`] and refuses more
//!    commands until the driver has done the TLS handshake and called
//!    [`ClientSession::tls_started`], which drops any cleartext bytes still buffered.
//! 6. An `Err` from `receive`'s events means the session is unusable (a broken server);
//!    the driver closes the connection without `QUIT`, so the server deletes nothing.
//!
//! Response lines are bounded ([`MAX_RESPONSE_LINE`]); message bodies are not
//! line-framed at all, so body lines of any length pass through.

use std::collections::VecDeque;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::capa::Capabilities;
use crate::command::{Command, MsgNum};
use crate::framer::{Line, LineFramer};
use crate::response::{ServerLine, Status, StatusLine};
use crate::stuff::{DotUnstuffer, LineEnding};

/// The longest response line (status or listing line) the client accepts, line end
/// included. Far above RFC 2449's 512 so that sloppy servers still work, and bounded.
pub const MAX_RESPONSE_LINE: usize = 8192;

/// The most entries a `LIST`, `UIDL` or `CAPA` listing may have before the client gives
/// up on the server (bounds memory against a server that never ends a listing).
pub const MAX_LISTING_ENTRIES: usize = 4_000_000;

/// A SASL mechanism as the client runs it. Implementations live outside the protocol
/// crate (`correio-auth`) so that this crate stays free of cryptography.
pub trait SaslMechanism: Send {
    /// The mechanism name as sent after `AUTH` (e.g. `SCRAM-SHA-256`).
    fn name(&self) -> &str;
    /// The initial response, if the mechanism sends one with the `AUTH` line.
    /// `Some(vec![])` is an empty initial response (sent as `=`).
    fn initial_response(&mut self) -> Option<Vec<u8>>;
    /// Answers one server challenge (already base64-decoded).
    fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String>;
    /// The server said `+OK`: a mechanism with mutual authentication (SCRAM) checks
    /// here that the server proved it knows the secret. An error fails the session.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Where the session is, seen from the commands already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the greeting.
    Greeting,
    /// Before login (RFC 1939 AUTHORIZATION).
    Authorization,
    /// Logged in (TRANSACTION).
    Transaction,
    /// `STLS` was sent; waiting for its answer or for the driver's handshake.
    StartingTls,
    /// `QUIT` was sent, or the session failed.
    Closed,
}

/// What a server told the client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The greeting. `apop_timestamp` is the `<...>` token for APOP, if present.
    Greeting {
        /// The whole status line.
        line: StatusLine,
        /// The APOP timestamp including its angle brackets.
        apop_timestamp: Option<String>,
    },
    /// A single-line answer (USER, PASS, APOP, AUTH end, DELE, NOOP, RSET, QUIT, STLS,
    /// UTF8, LANG with an argument), or `-ERR` to any command.
    Status {
        /// The command this answers.
        command: CommandKind,
        /// The status line.
        line: StatusLine,
    },
    /// `+OK count octets` to STAT.
    Stat {
        /// Messages in the maildrop.
        count: u32,
        /// Their total size.
        octets: u64,
    },
    /// A LIST answer: one entry for `LIST n`, all for `LIST`.
    List(Vec<(MsgNum, u64)>),
    /// A UIDL answer: one entry for `UIDL n`, all for `UIDL`.
    Uidl(Vec<(MsgNum, String)>),
    /// The CAPA listing.
    Capa(Capabilities),
    /// A RETR/TOP body begins. `status` is the `+OK` line (some servers put the size
    /// there).
    BodyStart {
        /// The message.
        msg: MsgNum,
        /// The `+OK` line.
        line: StatusLine,
    },
    /// Message bytes (unstuffed; CRLF line ends; a bare LF from a broken server is
    /// turned into CRLF).
    Body(Vec<u8>),
    /// The body ended with its terminator.
    BodyEnd {
        /// The message.
        msg: MsgNum,
    },
    /// `+OK` to STLS: do the TLS handshake now, then call
    /// [`ClientSession::tls_started`].
    StartTls,
}

/// Which command a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// USER
    User,
    /// PASS
    Pass,
    /// APOP
    Apop,
    /// AUTH (a SASL exchange)
    Auth,
    /// STAT
    Stat,
    /// LIST
    List,
    /// RETR
    Retr(MsgNum),
    /// TOP
    Top(MsgNum),
    /// DELE
    Dele(MsgNum),
    /// NOOP
    Noop,
    /// RSET
    Rset,
    /// QUIT
    Quit,
    /// UIDL
    Uidl,
    /// CAPA
    Capa,
    /// STLS
    Stls,
    /// UTF8
    Utf8,
    /// LANG
    Lang,
}

impl CommandKind {
    fn of(cmd: &Command) -> CommandKind {
        match cmd {
            Command::User(_) => CommandKind::User,
            Command::Pass(_) => CommandKind::Pass,
            Command::Apop { .. } => CommandKind::Apop,
            Command::Stat => CommandKind::Stat,
            Command::List(_) => CommandKind::List,
            Command::Retr(m) => CommandKind::Retr(*m),
            Command::Dele(m) => CommandKind::Dele(*m),
            Command::Noop => CommandKind::Noop,
            Command::Rset => CommandKind::Rset,
            Command::Quit => CommandKind::Quit,
            Command::Top { msg, .. } => CommandKind::Top(*msg),
            Command::Uidl(_) => CommandKind::Uidl,
            Command::Capa => CommandKind::Capa,
            Command::Stls => CommandKind::Stls,
            Command::Auth { .. } => CommandKind::Auth,
            Command::Utf8 => CommandKind::Utf8,
            Command::Lang(_) => CommandKind::Lang,
        }
    }
}

/// Why the client refused a command or gave up on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The command is not allowed in the current phase (e.g. RETR before login, or
    /// anything while STLS or a SASL exchange is in progress).
    WrongPhase {
        /// The command's keyword.
        command: &'static str,
        /// The phase the session was in.
        phase: Phase,
    },
    /// The server sent a line that is not a valid response.
    BadResponse(String),
    /// A response line passed [`MAX_RESPONSE_LINE`].
    LineTooLong,
    /// The server sent something when no response was expected.
    Unsolicited,
    /// A listing passed [`MAX_LISTING_ENTRIES`].
    ListingTooLong,
    /// The SASL mechanism failed on a challenge.
    Sasl(String),
    /// The stream ended inside a response (for a body: no terminating `.`).
    UnexpectedEof,
    /// The session is closed.
    Closed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::WrongPhase { command, phase } => {
                write!(f, "{command} is not allowed now ({phase:?})")
            }
            ClientError::BadResponse(s) => write!(f, "bad response from server: {s}"),
            ClientError::LineTooLong => write!(
                f,
                "server response line longer than {MAX_RESPONSE_LINE} octets"
            ),
            ClientError::Unsolicited => f.write_str("server sent data no command asked for"),
            ClientError::ListingTooLong => f.write_str("server listing is too long"),
            ClientError::Sasl(s) => write!(f, "SASL mechanism failed: {s}"),
            ClientError::UnexpectedEof => {
                f.write_str("connection closed in the middle of a response")
            }
            ClientError::Closed => f.write_str("session is closed"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A command sent and not yet answered.
#[derive(Debug)]
struct Pending {
    kind: CommandKind,
    /// Whether `+OK` opens a multi-line body.
    multiline: bool,
    /// For LIST/UIDL with an argument: a single-line answer carrying data.
    single_arg: bool,
}

/// Inside a multi-line response.
enum InBody {
    /// RETR/TOP: streamed through the unstuffer.
    Message {
        msg: MsgNum,
        unstuffer: DotUnstuffer,
    },
    /// A LIST/UIDL/CAPA listing, read line by line.
    Listing(Listing),
}

enum Listing {
    List(Vec<(MsgNum, u64)>),
    Uidl(Vec<(MsgNum, String)>),
    Capa(Capabilities, usize),
    /// `LANG` listing or bare `AUTH`: read and dropped.
    Ignored,
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::List(v) => v.len(),
            Listing::Uidl(v) => v.len(),
            Listing::Capa(_, n) => *n,
            Listing::Ignored => 0,
        }
    }
}

/// The client session. See the module docs for the driving contract.
pub struct ClientSession {
    framer: LineFramer,
    phase: Phase,
    pending: VecDeque<Pending>,
    body: Option<InBody>,
    sasl: Option<Box<dyn SaslMechanism>>,
    transmit: Vec<u8>,
    events: VecDeque<Result<Event, ClientError>>,
    failed: bool,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("phase", &self.phase)
            .field("pending", &self.pending.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientSession {
    /// A session waiting for the server's greeting.
    pub fn new() -> Self {
        ClientSession {
            framer: LineFramer::new(MAX_RESPONSE_LINE),
            phase: Phase::Greeting,
            pending: VecDeque::new(),
            body: None,
            sasl: None,
            transmit: Vec::new(),
            events: VecDeque::new(),
            failed: false,
        }
    }

    /// The phase the session will be in once every queued command has succeeded.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How many commands are waiting for their responses.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether the session has failed (a broken server) or was closed by QUIT.
    pub fn is_closed(&self) -> bool {
        self.failed || (self.phase == Phase::Closed && self.pending.is_empty())
    }

    /// Queues one command. Returns an error, and sends nothing, when the command does
    /// not fit the phase; SASL's `AUTH` goes through [`ClientSession::auth`].
    pub fn send(&mut self, cmd: Command) -> Result<(), ClientError> {
        if self.failed {
            return Err(ClientError::Closed);
        }
        let wrong = || ClientError::WrongPhase {
            command: cmd.keyword(),
            phase: self.phase,
        };
        if self.sasl.is_some() {
            return Err(wrong());
        }
        let allowed = match (&cmd, self.phase) {
            (_, Phase::Greeting | Phase::StartingTls | Phase::Closed) => false,
            (
                Command::Auth {
                    mechanism: Some(_), ..
                },
                _,
            ) => false,
            (Command::Capa | Command::Noop | Command::Quit | Command::Lang(_), _) => true,
            (
                Command::User(_)
                | Command::Pass(_)
                | Command::Apop { .. }
                | Command::Stls
                | Command::Utf8
                | Command::Auth { .. },
                Phase::Authorization,
            ) => true,
            (Command::Utf8, _) => false,
            (_, Phase::Transaction) => !matches!(
                cmd,
                Command::User(_)
                    | Command::Pass(_)
                    | Command::Apop { .. }
                    | Command::Stls
                    | Command::Auth { .. }
            ),
            _ => false,
        };
        if !allowed {
            return Err(wrong());
        }
        self.phase = match cmd {
            Command::Pass(_) | Command::Apop { .. } => Phase::Transaction,
            Command::Stls => Phase::StartingTls,
            Command::Quit => Phase::Closed,
            _ => self.phase,
        };
        let single_arg = matches!(cmd, Command::List(Some(_)) | Command::Uidl(Some(_)));
        self.pending.push_back(Pending {
            kind: CommandKind::of(&cmd),
            multiline: cmd.expects_multiline(),
            single_arg,
        });
        cmd.write_to(&mut self.transmit);
        Ok(())
    }

    /// Starts a SASL exchange (RFC 5034) with `mechanism`, which answers the server's
    /// challenges. No other command can be queued until the exchange ends with
    /// [`Event::Status`] for [`CommandKind::Auth`].
    pub fn auth(&mut self, mut mechanism: Box<dyn SaslMechanism>) -> Result<(), ClientError> {
        if self.failed {
            return Err(ClientError::Closed);
        }
        if self.phase != Phase::Authorization || self.sasl.is_some() {
            return Err(ClientError::WrongPhase {
                command: "AUTH",
                phase: self.phase,
            });
        }
        let initial = mechanism.initial_response().map(|ir| {
            if ir.is_empty() {
                "=".to_owned()
            } else {
                B64.encode(ir)
            }
        });
        let name = mechanism.name().to_ascii_uppercase();
        // RFC 5034 §4: an initial response that would make the line pass 255 octets
        // is sent as the answer to an empty challenge instead.
        let (initial_inline, deferred) = match initial {
            Some(ir) if 5 + name.len() + 1 + ir.len() + 2 > crate::MAX_COMMAND_LINE => {
                (None, Some(ir))
            }
            other => (other, None),
        };
        let cmd = Command::Auth {
            mechanism: Some(name),
            initial_response: initial_inline,
        };
        cmd.write_to(&mut self.transmit);
        self.pending.push_back(Pending {
            kind: CommandKind::Auth,
            multiline: false,
            single_arg: false,
        });
        self.sasl = Some(Box::new(Deferred {
            inner: mechanism,
            first: deferred,
        }));
        self.phase = Phase::Transaction;
        Ok(())
    }

    /// The TLS handshake after `STLS` is done: forget buffered cleartext bytes
    /// (RFC 2595 §4) and accept commands again. The driver should send CAPA again,
    /// since earlier capabilities no longer hold.
    pub fn tls_started(&mut self) -> Result<(), ClientError> {
        if self.phase != Phase::StartingTls || !self.pending.is_empty() {
            return Err(ClientError::WrongPhase {
                command: "STLS",
                phase: self.phase,
            });
        }
        self.framer.clear();
        self.phase = Phase::Authorization;
        Ok(())
    }

    /// Bytes waiting to be written to the server.
    pub fn transmit(&self) -> &[u8] {
        &self.transmit
    }

    /// Takes the bytes waiting to be written to the server.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.transmit)
    }

    /// The next event, `None` when more bytes are needed.
    pub fn poll_event(&mut self) -> Option<Result<Event, ClientError>> {
        self.events.pop_front()
    }

    /// The server closed the connection. A response still in progress (above all a
    /// body without its final `.`) becomes [`ClientError::UnexpectedEof`].
    pub fn receive_eof(&mut self) {
        if self.failed {
            return;
        }
        let waiting = !self.pending.is_empty()
            || self.body.is_some()
            || !self.framer.buffered().is_empty()
            || self.phase == Phase::Greeting;
        if waiting {
            self.fail(ClientError::UnexpectedEof);
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// Feeds bytes from the server. Events become available from
    /// [`ClientSession::poll_event`].
    pub fn receive(&mut self, input: &[u8]) {
        let mut carry = self.receive_step(input);
        while let Some(buf) = carry {
            carry = self.receive_step(&buf);
        }
    }

    /// Processes `data`. When a message body starts, the bytes the line framer already
    /// holds belong to the body: they are taken out and returned, to be fed again.
    fn receive_step(&mut self, mut data: &[u8]) -> Option<Vec<u8>> {
        if self.failed {
            return None;
        }
        if let Some(InBody::Message { msg, unstuffer }) = &mut self.body {
            let mut out = Vec::new();
            let used = unstuffer.feed(data, &mut out);
            let done = unstuffer.is_done();
            let msg = *msg;
            if !out.is_empty() {
                self.events.push_back(Ok(Event::Body(out)));
            }
            data = &data[used.min(data.len())..];
            if !done {
                return None;
            }
            self.body = None;
            self.pending.pop_front();
            self.events.push_back(Ok(Event::BodyEnd { msg }));
        }
        if data.is_empty() {
            return None;
        }
        self.framer.push(data);
        loop {
            let line = match self.framer.next_line() {
                None => return None,
                Some(Line::TooLong) => {
                    self.fail(ClientError::LineTooLong);
                    return None;
                }
                Some(Line::Complete(l)) => l.to_vec(),
            };
            if let Err(e) = self.handle_line(&line) {
                self.fail(e);
                return None;
            }
            if self.failed {
                return None;
            }
            if self.phase == Phase::StartingTls && self.pending.is_empty() {
                // Whatever follows the STLS answer in cleartext is dropped by
                // tls_started(); never read it as a response (RFC 2595 §4).
                return None;
            }
            if matches!(self.body, Some(InBody::Message { .. })) {
                let carry = self.framer.buffered().to_vec();
                self.framer.clear();
                return Some(carry);
            }
        }
    }

    fn fail(&mut self, e: ClientError) {
        self.failed = true;
        self.phase = Phase::Closed;
        self.body = None;
        self.sasl = None;
        self.events.push_back(Err(e));
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        if let Some(InBody::Listing(listing)) = &mut self.body {
            if line == b"." {
                let listing = match self.body.take() {
                    Some(InBody::Listing(l)) => l,
                    _ => return Ok(()),
                };
                self.pending.pop_front();
                let ev = match listing {
                    Listing::List(v) => Some(Event::List(v)),
                    Listing::Uidl(v) => Some(Event::Uidl(v)),
                    Listing::Capa(c, _) => Some(Event::Capa(c)),
                    Listing::Ignored => None,
                };
                if let Some(ev) = ev {
                    self.events.push_back(Ok(ev));
                }
                return Ok(());
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            if listing.len() >= MAX_LISTING_ENTRIES {
                return Err(ClientError::ListingTooLong);
            }
            match listing {
                Listing::List(v) => {
                    let (n, rest) = parse_msg_prefix(line)?;
                    v.push((n, parse_first_u64(rest, line)?));
                }
                Listing::Uidl(v) => {
                    let (n, rest) = parse_msg_prefix(line)?;
                    v.push((n, parse_uid(rest, line)?));
                }
                Listing::Capa(c, n) => {
                    *n += 1;
                    c.add_line(line)
                        .map_err(|e| ClientError::BadResponse(format!("CAPA: {e}")))?;
                }
                Listing::Ignored => {}
            }
            return Ok(());
        }

        if self.phase == Phase::Greeting && self.pending.is_empty() {
            return self.handle_greeting(line);
        }
        let parsed = ServerLine::parse(line)
            .map_err(|e| ClientError::BadResponse(format!("{e}: {}", show(line))))?;
        let Some(front) = self.pending.front() else {
            return Err(ClientError::Unsolicited);
        };
        let kind = front.kind;
        let status = match parsed {
            ServerLine::Continuation(payload) => return self.sasl_step(kind, &payload),
            ServerLine::Status(s) => s,
        };
        if status.status == Status::Err || !front.multiline && !front.single_arg {
            let needs_data = kind == CommandKind::Stat;
            let single_arg = front.single_arg;
            self.pending.pop_front();
            match kind {
                CommandKind::Auth => {
                    let mech = self.sasl.take();
                    if status.status == Status::Err {
                        self.phase = Phase::Authorization;
                    } else if let Some(mut mech) = mech {
                        mech.finish().map_err(ClientError::Sasl)?;
                    }
                }
                CommandKind::Pass | CommandKind::Apop if status.status == Status::Err => {
                    self.phase = Phase::Authorization;
                }
                CommandKind::Stls => {
                    if status.status == Status::Ok {
                        self.events.push_back(Ok(Event::StartTls));
                        return Ok(());
                    }
                    self.phase = Phase::Authorization;
                }
                _ => {}
            }
            if status.status == Status::Ok && needs_data {
                let (count, rest) = parse_u32_prefix(status.text.as_bytes())
                    .ok_or_else(|| ClientError::BadResponse(format!("STAT: {}", status.text)))?;
                let octets = parse_first_u64(rest, status.text.as_bytes())?;
                self.events.push_back(Ok(Event::Stat { count, octets }));
                return Ok(());
            }
            let _ = single_arg;
            self.events.push_back(Ok(Event::Status {
                command: kind,
                line: status,
            }));
            return Ok(());
        }
        // +OK to a command with data.
        let front_single = front.single_arg;
        if front_single {
            self.pending.pop_front();
            let text = status.text.as_bytes();
            let (n, rest) = parse_msg_prefix(text)?;
            let ev = match kind {
                CommandKind::List => Event::List(vec![(n, parse_first_u64(rest, text)?)]),
                _ => Event::Uidl(vec![(n, parse_uid(rest, text)?)]),
            };
            self.events.push_back(Ok(ev));
            return Ok(());
        }
        self.body = Some(match kind {
            CommandKind::Retr(msg) | CommandKind::Top(msg) => {
                self.events
                    .push_back(Ok(Event::BodyStart { msg, line: status }));
                InBody::Message {
                    msg,
                    unstuffer: DotUnstuffer::new(LineEnding::Crlf),
                }
            }
            CommandKind::List => InBody::Listing(Listing::List(Vec::new())),
            CommandKind::Uidl => InBody::Listing(Listing::Uidl(Vec::new())),
            CommandKind::Capa => InBody::Listing(Listing::Capa(Capabilities::new(), 0)),
            _ => InBody::Listing(Listing::Ignored),
        });
        Ok(())
    }

    fn handle_greeting(&mut self, line: &[u8]) -> Result<(), ClientError> {
        let status = match ServerLine::parse(line) {
            Ok(ServerLine::Status(s)) => s,
            _ => {
                return Err(ClientError::BadResponse(format!(
                    "greeting: {}",
                    show(line)
                )));
            }
        };
        if status.status == Status::Err {
            // A server that refuses us at the door (RFC 2449 §8.1: [IN-USE] etc.
            // happen later; -ERR here is "go away").
            self.events.push_back(Ok(Event::Greeting {
                line: status,
                apop_timestamp: None,
            }));
            self.phase = Phase::Closed;
            self.failed = true;
            return Ok(());
        }
        let apop_timestamp = apop_timestamp(&status.text);
        self.phase = Phase::Authorization;
        self.events.push_back(Ok(Event::Greeting {
            line: status,
            apop_timestamp,
        }));
        Ok(())
    }

    fn sasl_step(&mut self, kind: CommandKind, payload: &str) -> Result<(), ClientError> {
        if kind != CommandKind::Auth {
            return Err(ClientError::BadResponse(format!(
                "continuation line outside AUTH: + {payload}"
            )));
        }
        let Some(mech) = self.sasl.as_mut() else {
            return Err(ClientError::Unsolicited);
        };
        let challenge = B64
            .decode(payload.trim())
            .map_err(|_| ClientError::BadResponse("challenge is not base64".into()))?;
        match mech.step(&challenge) {
            Ok(resp) => {
                if resp.is_empty() {
                    // An empty response is an empty line (RFC 5034 §4).
                } else {
                    self.transmit.extend_from_slice(B64.encode(resp).as_bytes());
                }
                self.transmit.extend_from_slice(b"\r\n");
                Ok(())
            }
            Err(e) => {
                // Cancel the exchange; the server answers -ERR to "*".
                self.transmit.extend_from_slice(b"*\r\n");
                self.events.push_back(Err(ClientError::Sasl(e)));
                Ok(())
            }
        }
    }
}

/// Wraps a mechanism whose initial response was too long for the AUTH line: it is sent
/// as the answer to the server's first (empty) challenge.
struct Deferred {
    inner: Box<dyn SaslMechanism>,
    /// Already base64.
    first: Option<String>,
}

impl SaslMechanism for Deferred {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn initial_response(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn finish(&mut self) -> Result<(), String> {
        self.inner.finish()
    }
    fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        match self.first.take() {
            Some(b64) => B64
                .decode(b64)
                .map_err(|_| "internal: initial response".to_owned()),
            None => self.inner.step(challenge),
        }
    }
}

/// The APOP timestamp in a greeting text: the first `<...>` containing an `@`
/// (RFC 1939 §7 calls it a msg-id).
pub fn apop_timestamp(text: &str) -> Option<String> {
    let start = text.find('<')?;
    let end = start + text[start..].find('>')?;
    let token = &text[start..=end];
    if token.contains('@') && token.len() > 2 && !token[1..token.len() - 1].contains('<') {
        Some(token.to_owned())
    } else {
        None
    }
}

fn show(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(100)]).into_owned();
    if line.len() > 100 { s + "..." } else { s }
}

fn parse_u32_prefix(s: &[u8]) -> Option<(u32, &[u8])> {
    let s = trim_start(s);
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 || end > 10 {
        return None;
    }
    let n: u32 = std::str::from_utf8(&s[..end]).ok()?.parse().ok()?;
    Some((n, &s[end..]))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let i = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    &s[i..]
}

fn parse_msg_prefix(line: &[u8]) -> Result<(MsgNum, &[u8]), ClientError> {
    parse_u32_prefix(line)
        .and_then(|(n, rest)| MsgNum::new(n).map(|m| (m, rest)))
        .ok_or_else(|| ClientError::BadResponse(format!("bad message number: {}", show(line))))
}

fn parse_first_u64(rest: &[u8], line: &[u8]) -> Result<u64, ClientError> {
    let s = trim_start(rest);
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 || end > 19 {
        return Err(ClientError::BadResponse(format!(
            "bad size: {}",
            show(line)
        )));
    }
    std::str::from_utf8(&s[..end])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("bad size: {}", show(line))))
}

fn parse_uid(rest: &[u8], line: &[u8]) -> Result<String, ClientError> {
    let s = trim_start(rest);
    let end = s
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(s.len());
    let uid = &s[..end];
    // RFC 1939: 1-70 octets in 0x21-0x7E. Longer ones are accepted (bounded by the line
    // limit) because the fetcher only compares them; empty or control bytes are not.
    if uid.is_empty() || !uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ClientError::BadResponse(format!(
            "bad unique-id: {}",
            show(line)
        )));
    }
    Ok(String::from_utf8_lossy(uid).into_owned())
}

/// Fuzz body (`fuzz/fuzz_targets/client_session.rs`): arbitrary server bytes against a
/// client that pipelines every command. The first byte picks the chunk size. Must
/// never panic; the client's buffers stay bounded by what one call fed it.
#[doc(hidden)]
pub fn fuzz_client_session(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut s = ClientSession::new();
    let mut greeted = false;
    for piece in rest.chunks(chunk) {
        s.receive(piece);
        while let Some(ev) = s.poll_event() {
            if matches!(ev, Ok(Event::Greeting { .. })) && !greeted {
                greeted = true;
                let one = MsgNum::new(1).expect("1 is a message number");
                for c in [
                    Command::Capa,
                    Command::User("u".into()),
                    Command::Pass(b"p".to_vec()),
                    Command::Stat,
                    Command::List(None),
                    Command::Uidl(None),
                    Command::Retr(one),
                    Command::Top { msg: one, lines: 0 },
                    Command::List(Some(one)),
                    Command::Uidl(Some(one)),
                    Command::Dele(one),
                    Command::Quit,
                ] {
                    let _ = s.send(c);
                }
            }
        }
        let _ = s.take_transmit();
        assert!(s.framer.buffered().len() <= MAX_RESPONSE_LINE + chunk);
    }
    s.receive_eof();
    while s.poll_event().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32) -> MsgNum {
        MsgNum::new(n).unwrap()
    }

    fn events(s: &mut ClientSession) -> Vec<Result<Event, ClientError>> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn greeting_timestamp() {
        assert_eq!(
            apop_timestamp("POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>".into())
        );
        assert_eq!(apop_timestamp("ready <nope>"), None);
        assert_eq!(apop_timestamp("ready"), None);
        assert_eq!(apop_timestamp("ready <a@b"), None);
    }

    #[test]
    fn login_and_retr_wire() {
        let mut s = ClientSession::new();
        s.receive(b"+OK hi <1.2@x>\r\n");
        assert_eq!(
            events(&mut s),
            vec![Ok(Event::Greeting {
                line: StatusLine::ok("hi <1.2@x>"),
                apop_timestamp: Some("<1.2@x>".into())
            })]
        );
        s.send(Command::User("u".into())).unwrap();
        s.send(Command::Pass(b"p w".to_vec())).unwrap();
        s.send(Command::Retr(m(1))).unwrap();
        assert_eq!(s.take_transmit(), b"USER u\r\nPASS p w\r\nRETR 1\r\n");
        s.receive(b"+OK\r\n+OK in\r\n+OK 5 octets\r\n..a\r\nb\r\n.\r\n");
        let ev = events(&mut s);
        assert_eq!(ev.len(), 5, "{ev:?}");
        let body: Vec<u8> = ev
            .iter()
            .filter_map(|e| match e {
                Ok(Event::Body(b)) => Some(b.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(body, b".a\r\nb\r\n");
        assert_eq!(ev.last(), Some(&Ok(Event::BodyEnd { msg: m(1) })));
    }

    #[test]
    fn wrong_phase_is_refused() {
        let mut s = ClientSession::new();
        assert!(s.send(Command::Stat).is_err());
        s.receive(b"+OK\r\n");
        assert!(s.send(Command::Retr(m(1))).is_err());
        assert!(s.transmit().is_empty());
    }

    #[test]
    fn eof_inside_body() {
        let mut s = ClientSession::new();
        s.receive(b"+OK\r\n");
        s.send(Command::User("u".into())).unwrap();
        s.send(Command::Pass(b"p".to_vec())).unwrap();
        s.send(Command::Retr(m(1))).unwrap();
        s.receive(b"+OK\r\n+OK\r\n+OK\r\nabc\r\n");
        s.receive_eof();
        let ev = events(&mut s);
        assert_eq!(ev.last(), Some(&Err(ClientError::UnexpectedEof)));
    }
}
