//! The LMTP session state machine (RFC 2033, with RFC 5321's command grammar and
//! RFC 1870 SIZE, RFC 1652 8BITMIME, RFC 2034 ENHANCEDSTATUSCODES, RFC 2920 PIPELINING).
//!
//! [`LmtpSession`] decides every reply; it never touches a socket, a file or a clock.
//! It is driven like the POP3 [`ServerSession`](crate::server::ServerSession):
//!
//! 1. Create it with [`LmtpSession::new`]: the `220` greeting is queued at once.
//! 2. Frame the client's bytes with a [`LineFramer`](crate::framer::LineFramer) of
//!    [`LmtpSession::max_line`] and feed each line to [`LmtpSession::handle_line`].
//! 3. Send what [`LmtpSession::take_output`] returns. Replies may be batched, but must
//!    be sent before the driver waits for the client or starts a long action.
//! 4. An [`Action`] is the driver's to carry out; it reports the result with
//!    [`LmtpSession::handle_event`], which may return the next action. While an action
//!    is pending, feed no line: pipelined lines wait in the framer, so nothing is
//!    reordered. An event that does not answer the pending action is a
//!    [`ContractViolation`]: the session answers `421` and closes (never a hang).
//! 5. After [`Action::ReceiveData`] (the `354` is queued: send it), the client's bytes
//!    are message data, not lines: take what the framer holds
//!    ([`buffered`](crate::framer::LineFramer::buffered), then
//!    [`clear`](crate::framer::LineFramer::clear)) and every later read through
//!    [`LmtpSession::feed_data`], which unstuffs into the spool buffer and says how much
//!    it used. When the data ends ([`LmtpSession::is_receiving_data`] turns false),
//!    push the unused rest back into the framer; the session returns
//!    [`Action::CommitSpool`] (make the spool durable enough to read back, report
//!    [`Event::Spooled`]) or, for a message over the size limit, no action (its `552`
//!    replies are queued; drop the spool).
//! 6. Then [`Action::Deliver`] comes once per accepted recipient, in RCPT order; each
//!    [`Event::Delivered`] queues that recipient's reply, so a `250` is only ever sent
//!    for a delivery the driver reported durable.
//! 7. Timers belong to the session: wait for the client at most
//!    [`LmtpSession::idle_timeout`], then call [`LmtpSession::handle_timeout`]. A server
//!    shutting down calls [`LmtpSession::handle_shutdown`]: an idle session closes with
//!    `421` at once, a transaction in progress finishes first.
//! 8. [`Action::Close`] (or [`LmtpSession::is_closed`]): send the output and close.
//!
//! The data is strict: only CRLF `.` CRLF ends it, and only a `.` right after CRLF is a
//! stuffing dot; a bare LF never ends or starts a line (no SMTP smuggling through a
//! lenient terminator). A `Return-Path:` header with the envelope sender is put in
//! front of the spooled data, as RFC 5321 §4.4 asks of final delivery.

use std::time::Duration;

pub use crate::ContractViolation;
use crate::framer::Line;

/// Bounds and names for one LMTP listener, shared by its sessions.
#[derive(Debug, Clone)]
pub struct LmtpConfig {
    /// The name in the greeting and the LHLO reply.
    pub hostname: String,
    /// Largest message accepted, in octets after dot-unstuffing. The data of a larger
    /// one is still read to its end (to stay in step), then refused per recipient.
    pub max_message_size: u64,
    /// Recipients per transaction (RFC 5321 §4.5.3.1.8 asks for at least 100).
    pub max_recipients: usize,
    /// Longest command line, line end included.
    pub max_command_line: usize,
    /// Bad commands before the session is closed.
    pub max_errors: u32,
    /// How long the session waits for the client before it closes with `421`.
    pub idle_timeout: Duration,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        LmtpConfig {
            hostname: "localhost".into(),
            max_message_size: 64 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 1024,
            max_errors: 20,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look the recipient address up; answer [`Event::Recipient`].
    LookupRecipient(String),
    /// Send the output (`354`), open a spool, and pass the client's bytes through
    /// [`LmtpSession::feed_data`] until it says the data ended.
    ReceiveData,
    /// The data is complete: finish writing the spool; answer [`Event::Spooled`].
    CommitSpool,
    /// Deliver the spooled message to accepted recipient `n` (see
    /// [`LmtpSession::recipient`]); answer [`Event::Delivered`].
    Deliver(usize),
    /// Send the output and close the connection.
    Close,
}

/// The result of a recipient lookup. `T` is what the driver keeps for an accepted
/// recipient (its mailbox, quota...); the session hands it back with
/// [`LmtpSession::recipient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome<T> {
    /// A user of ours: `250`.
    Accepted(T),
    /// No such user: `550 5.1.1`.
    Unknown,
    /// The user database cannot answer now: `451 4.3.0`.
    Temporary,
    /// The user's mailbox cannot be used (a configuration error): `451 4.3.0`.
    Unusable,
}

/// Why a delivery failed, as the recipient's reply gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// The reply code: 4xx (the MTA retries) or 5xx (it bounces). Anything else is
    /// sent as 451.
    pub code: u16,
    /// The RFC 3463 enhanced status code, such as `4.2.2`.
    pub enhanced: String,
    /// A short text with no paths or secrets in it.
    pub text: String,
}

impl DeliveryFailure {
    /// A temporary local failure (`451 4.3.0`).
    pub fn temporary(text: impl Into<String>) -> Self {
        DeliveryFailure {
            code: 451,
            enhanced: "4.3.0".into(),
            text: text.into(),
        }
    }
}

/// Whether the spool holds the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolOutcome {
    /// Written and readable: the deliveries may start.
    Ready,
    /// Writing failed (a full disk...): every recipient gets `451`.
    Failed,
}

/// The result of an action, reported to [`LmtpSession::handle_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// Answers [`Action::LookupRecipient`].
    Recipient(RcptOutcome<T>),
    /// Answers [`Action::CommitSpool`].
    Spooled(SpoolOutcome),
    /// Answers [`Action::Deliver`]: `Ok` only once the message is durable there.
    Delivered(Result<(), DeliveryFailure>),
}

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `LHLO host`.
    Lhlo(String),
    /// `HELO` or `EHLO`: refused, this is LMTP.
    HeloOrEhlo,
    /// `MAIL FROM:<path>` with an optional `SIZE=` (checked against the limit).
    Mail {
        /// The reverse path (empty for a bounce).
        from: String,
        /// The announced size.
        size: Option<u64>,
    },
    /// `RCPT TO:<path>`.
    Rcpt(String),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` (answered 252).
    Vrfy,
    /// `HELP`.
    Help,
}

/// Why a command line was refused: the reply to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

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

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Parses one command line (without its line end). `max_size` is the message size
/// limit, for `MAIL FROM:<> SIZE=`.
pub fn parse_command(line: &[u8], max_size: u64) -> Result<Command, Refusal> {
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
            Ok(Command::Lhlo(host.to_string()))
        }
        "HELO" | "EHLO" => Ok(Command::HeloOrEhlo),
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
            Ok(Command::Mail { from, size })
        }
        "RCPT" => {
            let Some(r) = strip_prefix_ci(rest, "TO:") else {
                return Err(Refusal("501 5.5.4 Syntax: RCPT TO:<address>"));
            };
            let (to, params) = parse_path(r, false)?;
            if !params.trim().is_empty() {
                return Err(Refusal("555 5.5.4 Unsupported RCPT parameter"));
            }
            Ok(Command::Rcpt(to))
        }
        "DATA" if rest.is_empty() => Ok(Command::Data),
        "RSET" if rest.is_empty() => Ok(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" if rest.is_empty() => Ok(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "DATA" | "RSET" | "QUIT" => Err(Refusal("501 5.5.4 Syntax: no parameters allowed")),
        _ => Err(Refusal("500 5.5.2 Command unrecognized")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unstuff {
    /// Right after CRLF (or at the very start).
    LineStart,
    /// A line started with `.`: the terminator or a stuffing dot.
    Dot,
    /// `.` CR at a line start: the terminator if LF follows.
    DotCr,
    /// Inside a line; `cr`: its last byte so far was CR.
    Mid { cr: bool },
    /// The terminator has been consumed.
    Done,
}

/// Strict SMTP dot-unstuffing (RFC 5321 §4.5.2): the wire bytes after `354` → the
/// message, lines kept as they came (CRLF). Only CRLF `.` CRLF ends the data and only a
/// `.` right after CRLF is a stuffing dot; a bare LF is an ordinary byte.
#[derive(Debug, Clone)]
pub struct DataUnstuffer {
    state: Unstuff,
}

impl Default for DataUnstuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DataUnstuffer {
    /// An unstuffer at the start of the data.
    pub fn new() -> Self {
        DataUnstuffer {
            state: Unstuff::LineStart,
        }
    }

    /// Whether the terminating `.` line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == Unstuff::Done
    }

    /// Appends message bytes to `out`; returns how much of `input` it used: all of it,
    /// except after the terminator, where it stops right after its LF.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                Unstuff::Done => return i,
                Unstuff::LineStart => {
                    if input[i] == b'.' {
                        self.state = Unstuff::Dot;
                        i += 1;
                    } else {
                        self.state = Unstuff::Mid { cr: false };
                    }
                }
                Unstuff::Dot => {
                    if input[i] == b'\r' {
                        self.state = Unstuff::DotCr;
                        i += 1;
                    } else {
                        // A stuffing dot: dropped; this byte starts the line's text.
                        self.state = Unstuff::Mid { cr: false };
                    }
                }
                Unstuff::DotCr => {
                    if input[i] == b'\n' {
                        self.state = Unstuff::Done;
                        return i + 1;
                    }
                    // "." CR x: the dot was stuffing and the CR is data.
                    out.push(b'\r');
                    self.state = Unstuff::Mid { cr: true };
                }
                Unstuff::Mid { cr } => {
                    // Copy up to and including the next LF in one go.
                    let rest = &input[i..];
                    match memchr::memchr(b'\n', rest) {
                        Some(j) => {
                            let crlf = if j > 0 { rest[j - 1] == b'\r' } else { cr };
                            out.extend_from_slice(&rest[..=j]);
                            i += j + 1;
                            self.state = if crlf {
                                Unstuff::LineStart
                            } else {
                                Unstuff::Mid { cr: false }
                            };
                        }
                        None => {
                            out.extend_from_slice(rest);
                            self.state = Unstuff::Mid {
                                cr: rest.last() == Some(&b'\r'),
                            };
                            i = input.len();
                        }
                    }
                }
            }
        }
        if self.state == Unstuff::Done {
            i
        } else {
            input.len()
        }
    }
}

/// What the session is doing.
#[derive(Debug)]
enum Phase {
    /// Reading commands.
    Commands,
    /// Waiting for [`Event::Recipient`] for this address.
    Lookup(String),
    /// Reading the data after `354`.
    Data {
        unstuff: DataUnstuffer,
        /// Octets of message so far (after unstuffing, without Return-Path).
        size: u64,
        /// The `Return-Path:` line is still to be written.
        header_pending: bool,
    },
    /// Waiting for [`Event::Spooled`].
    Spool,
    /// Waiting for [`Event::Delivered`] for recipient n.
    Delivering(usize),
    /// Closed.
    Closed,
}

/// The open transaction: MAIL seen.
#[derive(Debug)]
struct Transaction<T> {
    sender: String,
    recipients: Vec<(String, T)>,
}

/// One LMTP session. See the module docs for how to drive it.
#[derive(Debug)]
pub struct LmtpSession<T> {
    config: LmtpConfig,
    phase: Phase,
    greeted: bool,
    transaction: Option<Transaction<T>>,
    errors: u32,
    /// The server is shutting down: close when the transaction ends.
    stopping: bool,
    out: Vec<u8>,
}

impl<T> LmtpSession<T> {
    /// A new session; the greeting is queued.
    pub fn new(config: LmtpConfig) -> Self {
        let mut s = LmtpSession {
            config,
            phase: Phase::Commands,
            greeted: false,
            transaction: None,
            errors: 0,
            stopping: false,
            out: Vec::with_capacity(256),
        };
        let greeting = format!("220 {} LMTP Correio ready", s.config.hostname);
        s.reply(&greeting);
        s
    }

    /// The replies queued so far (taking them).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether replies are queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether the session is over (send the output, then close).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether the client's bytes are message data now (see [`Self::feed_data`]).
    pub fn is_receiving_data(&self) -> bool {
        matches!(self.phase, Phase::Data { .. })
    }

    /// The framer's line limit.
    pub fn max_line(&self) -> usize {
        self.config.max_command_line
    }

    /// How long to wait for the client before [`Self::handle_timeout`].
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// The open transaction's envelope sender.
    pub fn sender(&self) -> Option<&str> {
        self.transaction.as_ref().map(|t| t.sender.as_str())
    }

    /// Accepted recipient `n` of the open transaction: its address and the driver's
    /// data for it.
    pub fn recipient(&self, n: usize) -> Option<(&str, &T)> {
        let t = self.transaction.as_ref()?;
        t.recipients.get(n).map(|(a, d)| (a.as_str(), d))
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn close(&mut self, text: &str) -> Option<Action> {
        self.reply(text);
        self.phase = Phase::Closed;
        Some(Action::Close)
    }

    fn violation(&mut self, what: &'static str) -> ContractViolation {
        if !self.is_closed() {
            self.reply("421 4.3.0 Internal error, closing connection");
            self.phase = Phase::Closed;
        }
        ContractViolation(what)
    }

    /// A bad command: counted; too many close the session.
    fn refuse(&mut self, text: &str) -> Option<Action> {
        self.errors += 1;
        self.reply(text);
        if self.errors >= self.config.max_errors {
            return self.close("421 4.7.0 Too many errors, closing connection");
        }
        None
    }

    /// The transaction is over (done, reset or refused): back to commands, or closed if
    /// the server is shutting down.
    fn end_transaction(&mut self) -> Option<Action> {
        self.transaction = None;
        self.phase = Phase::Commands;
        if self.stopping {
            return self.close("421 4.3.2 Service shutting down");
        }
        None
    }

    /// Feeds one framed command line.
    pub fn handle_line(&mut self, line: Line<'_>) -> Result<Option<Action>, ContractViolation> {
        if !matches!(self.phase, Phase::Commands) {
            return Err(self.violation("a line while an action is pending"));
        }
        let line = match line {
            Line::Complete(l) => l,
            Line::TooLong => return Ok(self.refuse("500 5.5.2 Line too long")),
        };
        let cmd = match parse_command(line, self.config.max_message_size) {
            Ok(c) => c,
            Err(Refusal(text)) => return Ok(self.refuse(text)),
        };
        Ok(match cmd {
            Command::Lhlo(_) => {
                self.greeted = true;
                let text = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {}",
                    self.config.hostname, self.config.max_message_size
                );
                self.reply(&text);
                // LHLO resets any transaction (RFC 5321 §4.1.4).
                if self.transaction.is_some() {
                    self.end_transaction()
                } else {
                    None
                }
            }
            Command::HeloOrEhlo => self.refuse("500 5.5.1 This is LMTP: use LHLO"),
            Command::Mail { from, size: _ } => {
                if !self.greeted {
                    self.reply("503 5.5.1 Send LHLO first");
                } else if self.transaction.is_some() {
                    self.reply("503 5.5.1 Nested MAIL command");
                } else {
                    self.transaction = Some(Transaction {
                        sender: from,
                        recipients: Vec::new(),
                    });
                    self.reply("250 2.1.0 Sender OK");
                }
                None
            }
            Command::Rcpt(to) => match &self.transaction {
                None => {
                    self.reply("503 5.5.1 Send MAIL first");
                    None
                }
                Some(t) if t.recipients.len() >= self.config.max_recipients => {
                    self.reply("452 4.5.3 Too many recipients");
                    None
                }
                Some(_) => {
                    self.phase = Phase::Lookup(to.clone());
                    Some(Action::LookupRecipient(to))
                }
            },
            Command::Data => match &self.transaction {
                None => {
                    self.reply("503 5.5.1 Send MAIL first");
                    None
                }
                Some(t) if t.recipients.is_empty() => {
                    self.reply("503 5.5.1 No valid recipients");
                    None
                }
                Some(_) => {
                    self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
                    self.phase = Phase::Data {
                        unstuff: DataUnstuffer::new(),
                        size: 0,
                        header_pending: true,
                    };
                    Some(Action::ReceiveData)
                }
            },
            Command::Rset => {
                self.reply("250 2.0.0 OK");
                if self.transaction.is_some() {
                    self.end_transaction()
                } else {
                    None
                }
            }
            Command::Noop => {
                self.reply("250 2.0.0 OK");
                None
            }
            Command::Vrfy => {
                self.reply("252 2.5.2 Cannot VRFY user, but will accept message");
                None
            }
            Command::Help => {
                self.reply("214 2.0.0 Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT");
                None
            }
            Command::Quit => self.close("221 2.0.0 Bye"),
        })
    }

    /// Feeds message data (only while [`Self::is_receiving_data`]): appends what goes
    /// into the spool to `spool` and returns how many bytes of `input` it used. When the
    /// terminator has been read, it returns the next action too.
    pub fn feed_data(
        &mut self,
        input: &[u8],
        spool: &mut Vec<u8>,
    ) -> Result<(usize, Option<Action>), ContractViolation> {
        let max = self.config.max_message_size;
        let Phase::Data {
            unstuff,
            size,
            header_pending,
        } = &mut self.phase
        else {
            return Err(self.violation("data outside DATA"));
        };
        if std::mem::take(header_pending) {
            let sender = self.transaction.as_ref().map_or("", |t| t.sender.as_str());
            spool.extend_from_slice(b"Return-Path: <");
            spool.extend_from_slice(sender.as_bytes());
            spool.extend_from_slice(b">\r\n");
        }
        let before = spool.len();
        let used = unstuff.feed(input, spool);
        let added = (spool.len() - before) as u64;
        let over = *size > max;
        *size = size.saturating_add(added);
        if over || *size > max {
            // Over the limit: keep reading to the end, but hand nothing more out.
            spool.truncate(before);
        }
        if !unstuff.is_done() {
            return Ok((used, None));
        }
        if *size > max {
            let replies: Vec<String> = self
                .transaction
                .iter()
                .flat_map(|t| &t.recipients)
                .map(|(a, _)| format!("552 5.3.4 <{a}> Message too big"))
                .collect();
            for r in replies {
                self.reply(&r);
            }
            return Ok((used, self.end_transaction()));
        }
        self.phase = Phase::Spool;
        Ok((used, Some(Action::CommitSpool)))
    }

    /// Reports the result of the pending action.
    pub fn handle_event(&mut self, event: Event<T>) -> Result<Option<Action>, ContractViolation> {
        match (std::mem::replace(&mut self.phase, Phase::Commands), event) {
            (Phase::Lookup(to), Event::Recipient(outcome)) => {
                match outcome {
                    RcptOutcome::Accepted(data) => {
                        if let Some(t) = self.transaction.as_mut() {
                            t.recipients.push((to, data));
                        }
                        self.reply("250 2.1.5 Recipient OK");
                    }
                    RcptOutcome::Unknown => self.reply(&format!("550 5.1.1 <{to}> User unknown")),
                    RcptOutcome::Temporary => self.reply(&format!(
                        "451 4.3.0 <{to}> User database unavailable, try again later"
                    )),
                    RcptOutcome::Unusable => self.reply(&format!(
                        "451 4.3.0 <{to}> Mailbox unavailable, try again later"
                    )),
                }
                Ok(None)
            }
            (Phase::Spool, Event::Spooled(SpoolOutcome::Ready)) => {
                self.phase = Phase::Delivering(0);
                Ok(Some(Action::Deliver(0)))
            }
            (Phase::Spool, Event::Spooled(SpoolOutcome::Failed)) => {
                let replies: Vec<String> = self
                    .transaction
                    .iter()
                    .flat_map(|t| &t.recipients)
                    .map(|(a, _)| format!("451 4.3.0 <{a}> Cannot spool message"))
                    .collect();
                for r in replies {
                    self.reply(&r);
                }
                Ok(self.end_transaction())
            }
            (Phase::Delivering(n), Event::Delivered(result)) => {
                let address = self
                    .transaction
                    .as_ref()
                    .and_then(|t| t.recipients.get(n))
                    .map(|(a, _)| a.clone())
                    .unwrap_or_default();
                let text = match result {
                    Ok(()) => format!("250 2.0.0 <{address}> Saved"),
                    Err(f) => {
                        let code = if (400..600).contains(&f.code) {
                            f.code
                        } else {
                            451
                        };
                        let enhanced = if valid_enhanced(&f.enhanced, code) {
                            f.enhanced
                        } else {
                            format!("{}.0.0", code / 100)
                        };
                        let text = f.text.replace(['\r', '\n'], " ");
                        format!("{code} {enhanced} <{address}> {text}")
                    }
                };
                self.reply(&text);
                let count = self.transaction.as_ref().map_or(0, |t| t.recipients.len());
                if n + 1 < count {
                    self.phase = Phase::Delivering(n + 1);
                    Ok(Some(Action::Deliver(n + 1)))
                } else {
                    Ok(self.end_transaction())
                }
            }
            (phase, _) => {
                self.phase = phase;
                Err(self.violation("an event that answers no pending action"))
            }
        }
    }

    /// The client was silent for [`Self::idle_timeout`]: `421`, closed.
    pub fn handle_timeout(&mut self) -> Option<Action> {
        match self.phase {
            Phase::Closed => Some(Action::Close),
            Phase::Data { .. } => self.close("421 4.4.2 Timeout during DATA, closing connection"),
            _ => self.close("421 4.4.2 Idle timeout, closing connection"),
        }
    }

    /// The server is shutting down: an idle session closes at once with `421`; one with
    /// a transaction open (or an action pending) finishes that transaction first.
    pub fn handle_shutdown(&mut self) -> Option<Action> {
        self.stopping = true;
        if matches!(self.phase, Phase::Commands) && self.transaction.is_none() {
            return self.close("421 4.3.2 Service shutting down");
        }
        None
    }
}

/// `x.y.z` with x the reply code's class, y and z small numbers (RFC 3463).
fn valid_enhanced(s: &str, code: u16) -> bool {
    let mut parts = s.split('.');
    let class = parts.next();
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let (sub, detail) = (parts.next(), parts.next());
    class == Some(if code >= 500 { "5" } else { "4" })
        && ok(sub)
        && ok(detail)
        && parts.next().is_none()
}

/// Fuzz bodies for LMTP (`fuzz/fuzz_targets/lmtp_input.rs`, `lmtp_session.rs`; the
/// seeds are replayed by the test suite).
#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use crate::framer::LineFramer;

    /// Every line of `data` through the command parser (never panics; every refusal is
    /// a well-formed reply), and `data` through the DATA unstuffer, checked against a
    /// plain reference implementation in several two-way splits.
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

    /// The transcript of one scripted run: the output, the messages delivered (per
    /// recipient) and whether the session closed.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Transcript {
        /// Everything the session sent.
        pub output: Vec<u8>,
        /// (recipient, spooled message) per successful delivery.
        pub delivered: Vec<(String, Vec<u8>)>,
        /// Closed by the session.
        pub closed: bool,
    }

    /// Drives a session over `input` cut into the given pieces, the way the server's
    /// driver does, with outcomes picked by `choose` (called once per action, with a
    /// running counter). Checks the driving contract and bounds as it goes.
    pub fn drive(
        config: LmtpConfig,
        input: &[u8],
        cuts: &[usize],
        mut choose: impl FnMut(u32) -> u8,
    ) -> Transcript {
        let mut s: LmtpSession<String> = LmtpSession::new(config.clone());
        let mut framer = LineFramer::new(s.max_line());
        let mut t = Transcript {
            output: s.take_output(),
            delivered: Vec::new(),
            closed: false,
        };
        let mut spool: Vec<u8> = Vec::new();
        let mut pieces = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().filter(|&&c| c > 0 && c < input.len()) {
            if c > last {
                pieces.push(&input[last..c]);
                last = c;
            }
        }
        pieces.push(&input[last..]);
        let mut counter = 0u32;
        let mut run = |s: &mut LmtpSession<String>,
                       mut action: Option<Action>,
                       spool: &mut Vec<u8>,
                       t: &mut Transcript|
         -> bool {
            let mut steps = 0;
            while let Some(a) = action.take() {
                steps += 1;
                assert!(steps <= 2 * config.max_recipients + 8, "action loop");
                counter += 1;
                let pick = choose(counter);
                action = match a {
                    Action::LookupRecipient(to) => {
                        assert!(!to.is_empty() && to.len() <= 254);
                        let outcome = match pick % 8 {
                            0 => RcptOutcome::Unknown,
                            1 => RcptOutcome::Temporary,
                            2 => RcptOutcome::Unusable,
                            _ => RcptOutcome::Accepted(to.to_ascii_lowercase()),
                        };
                        s.handle_event(Event::Recipient(outcome)).unwrap()
                    }
                    Action::ReceiveData => {
                        assert!(s.is_receiving_data());
                        spool.clear();
                        return true;
                    }
                    Action::CommitSpool => {
                        assert!(spool.starts_with(b"Return-Path: <"));
                        let outcome = if pick.is_multiple_of(16) {
                            SpoolOutcome::Failed
                        } else {
                            SpoolOutcome::Ready
                        };
                        s.handle_event(Event::Spooled(outcome)).unwrap()
                    }
                    Action::Deliver(n) => {
                        let (addr, data) = s.recipient(n).expect("deliver an accepted recipient");
                        assert_eq!(&addr.to_ascii_lowercase(), data);
                        let result = if pick.is_multiple_of(8) {
                            Err(DeliveryFailure {
                                code: 452,
                                enhanced: "4.2.2".into(),
                                text: "Mailbox full".into(),
                            })
                        } else {
                            t.delivered.push((addr.to_string(), spool.clone()));
                            Ok(())
                        };
                        s.handle_event(Event::Delivered(result)).unwrap()
                    }
                    Action::Close => {
                        assert!(s.is_closed());
                        None
                    }
                };
            }
            false
        };
        for piece in pieces {
            let mut data = piece.to_vec();
            loop {
                if s.is_receiving_data() {
                    let (used, action) = s.feed_data(&data, &mut spool).unwrap();
                    assert!(used <= data.len());
                    // Bounded: never more than the limit plus the header in the spool.
                    assert!(spool.len() as u64 <= config.max_message_size + 300);
                    data.drain(..used);
                    if s.is_receiving_data() {
                        assert!(data.is_empty(), "data left unused mid-DATA");
                        break;
                    }
                    run(&mut s, action, &mut spool, &mut t);
                    t.output.extend(s.take_output());
                    if s.is_closed() {
                        t.closed = true;
                        return t;
                    }
                }
                framer.push(&data);
                data.clear();
                let mut entered_data = false;
                while let Some(line) = framer.next_line() {
                    let action = s.handle_line(line).unwrap();
                    entered_data = run(&mut s, action, &mut spool, &mut t);
                    t.output.extend(s.take_output());
                    if s.is_closed() {
                        t.closed = true;
                        return t;
                    }
                    if entered_data {
                        break;
                    }
                }
                if !entered_data {
                    break;
                }
                // What the framer still holds is message data.
                data = framer.buffered().to_vec();
                framer.clear();
            }
        }
        t
    }

    /// Fuzz body (`fuzz/fuzz_targets/lmtp_session.rs`): the session over arbitrary
    /// client bytes with outcomes picked from the data: never a panic or a contract
    /// violation, every reply line well formed, and the same transcript whether the
    /// bytes come whole or in pieces.
    pub fn lmtp_session(data: &[u8]) {
        let Some((&flags, input)) = data.split_first() else {
            return;
        };
        let config = LmtpConfig {
            hostname: "fuzz.example".into(),
            max_message_size: 64 + u64::from(flags & 0x3f) * 16,
            max_recipients: 1 + usize::from(flags >> 6),
            max_command_line: 64,
            max_errors: 8,
            idle_timeout: Duration::from_secs(1),
        };
        let choose = |n: u32| {
            (u32::from(flags)
                .wrapping_mul(2654435761)
                .wrapping_add(n * 40503)
                >> 7) as u8
        };
        let whole = drive(config.clone(), input, &[], choose);
        for line in whole
            .output
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            assert!(line.ends_with(b"\r"), "reply line without CRLF");
            assert!(
                line.len() >= 5 && line.len() <= 512 + 300,
                "reply line length"
            );
            assert!(line[..3].iter().all(u8::is_ascii_digit), "reply code");
            assert!(line[3] == b' ' || line[3] == b'-', "reply separator");
        }
        let n = input.len();
        for cuts in [vec![1, 2, 3], vec![n / 3, 2 * n / 3], vec![n / 2]] {
            assert_eq!(
                drive(config.clone(), input, &cuts, choose),
                whole,
                "cuts {cuts:?}"
            );
        }
        let bytewise: Vec<usize> = (1..n.min(512)).collect();
        assert_eq!(
            drive(config, input, &bytewise, choose),
            whole,
            "byte by byte"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::fuzzing::{Transcript, drive};
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
        for split in 0..=wire.len() {
            let (out, used, done) = unstuff_all(wire, split);
            assert!(done);
            assert_eq!(used, wire.len());
            assert_eq!(out, b"a\n.\nb\r\n");
        }
        // Empty message.
        let (out, _, done) = unstuff_all(b".\r\n", 1);
        assert!(done && out.is_empty());
        // ".\rx" at a line start: the dot was stuffing.
        let (out, _, done) = unstuff_all(b".\rx\r\n.\r\n", 2);
        assert!(done);
        assert_eq!(out, b"\rx\r\n");
        // ". CR CR LF": stuffing dot, then a CR and a CRLF line end.
        let (out, _, done) = unstuff_all(b".\r\r\n.\r\n", 2);
        assert!(done);
        assert_eq!(out, b"\r\r\n");
    }

    #[test]
    fn command_grammar() {
        let max = 1000;
        assert_eq!(
            parse_command(b"LHLO mx.example.org", max),
            Ok(Command::Lhlo("mx.example.org".into()))
        );
        assert_eq!(
            parse_command(b"mail from:<a@b> SIZE=10 BODY=8BITMIME", max),
            Ok(Command::Mail {
                from: "a@b".into(),
                size: Some(10)
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<>", max),
            Ok(Command::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM: <x@y>", max),
            Ok(Command::Mail {
                from: "x@y".into(),
                size: None
            })
        );
        let code = |l: &[u8]| parse_command(l, max).unwrap_err().0[..3].to_string();
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=1001"), "552");
        assert_eq!(code(b"MAIL FROM:<a@b> FOO=1"), "555");
        assert_eq!(code(b"MAIL FROM:a@b"), "501");
        assert_eq!(
            parse_command(b"RCPT TO:<@relay:u@h>", max),
            Ok(Command::Rcpt("u@h".into()))
        );
        assert_eq!(code(b"RCPT TO:<>"), "501");
        assert_eq!(code(b"RCPT TO:<a b@c>"), "553");
        assert_eq!(code(b"DATA x"), "501");
        assert_eq!(code(b"\xff\xfe"), "500");
        assert_eq!(code(b"BDAT 10"), "500");
        assert_eq!(parse_command(b"EHLO x", max), Ok(Command::HeloOrEhlo));
    }

    const SCRIPT: &[u8] = b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\n\
DATA\r\nSubject: t\r\n\r\n..dot\r\nbare\nlf\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@x>\r\nDATA\r\n\
x\r\n.\r\nNOOP\r\nQUIT\r\n";

    /// Every outcome accepted, every spool ready, every delivery durable.
    fn all_ok(_: u32) -> u8 {
        7
    }

    fn text(t: &Transcript) -> String {
        String::from_utf8_lossy(&t.output).into_owned()
    }

    #[test]
    fn a_pipelined_session_gives_the_same_transcript_in_every_chunking() {
        let whole = drive(LmtpConfig::default(), SCRIPT, &[], all_ok);
        let all = text(&whole);
        let codes: Vec<&str> = all
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| &l[..4])
            .collect();
        assert_eq!(
            codes,
            [
                "220 ", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "250 ", "354 ",
                "250 ", "250 ", "250 ", "250 ", "354 ", "250 ", "250 ", "221 "
            ]
        );
        assert!(whole.closed);
        let msg = b"Return-Path: <s@x>\r\nSubject: t\r\n\r\n.dot\r\nbare\nlf\r\n".to_vec();
        assert_eq!(
            whole.delivered,
            [
                ("a@x".to_string(), msg.clone()),
                ("b@x".to_string(), msg),
                ("c@x".to_string(), b"Return-Path: <>\r\nx\r\n".to_vec()),
            ]
        );
        for split in 1..SCRIPT.len() {
            assert_eq!(
                drive(LmtpConfig::default(), SCRIPT, &[split], all_ok),
                whole,
                "split {split}"
            );
        }
        let bytewise: Vec<usize> = (1..SCRIPT.len()).collect();
        assert_eq!(
            drive(LmtpConfig::default(), SCRIPT, &bytewise, all_ok),
            whole
        );
    }

    #[test]
    fn replies_per_recipient_follow_each_outcome() {
        // One pick per action, in order: the two lookups, DATA (unused), the spool
        // (8: ready) and the delivery (8: a full mailbox).
        let picks = |n: u32| match n {
            1 => 0, // RCPT a: unknown
            2 => 3, // RCPT b: accepted
            _ => 8,
        };
        let input =
            b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n";
        let t = drive(LmtpConfig::default(), input, &[], picks);
        let out = text(&t);
        assert!(out.contains("550 5.1.1 <a@x> User unknown\r\n"), "{out}");
        assert!(out.contains("250 2.1.5 Recipient OK\r\n"), "{out}");
        assert!(out.ends_with("452 4.2.2 <b@x> Mailbox full\r\n"), "{out}");
        assert!(t.delivered.is_empty());
    }

    #[test]
    fn a_message_over_the_limit_is_read_to_its_end_and_refused_per_recipient() {
        let config = LmtpConfig {
            max_message_size: 10,
            ..LmtpConfig::default()
        };
        let input = b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n\
0123456789abcdef\r\n.\r\nNOOP\r\n";
        let t = drive(config, input, &[], all_ok);
        let out = text(&t);
        assert!(
            out.ends_with("552 5.3.4 <a@x> Message too big\r\n552 5.3.4 <b@x> Message too big\r\n250 2.0.0 OK\r\n"),
            "{out}"
        );
        assert!(t.delivered.is_empty());
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let config = LmtpConfig {
            max_errors: 3,
            ..LmtpConfig::default()
        };
        let t = drive(config, b"FOO\r\nEHLO x\r\nBAR\r\nNOOP\r\n", &[], all_ok);
        assert!(t.closed);
        assert!(text(&t).ends_with(
            "500 5.5.2 Command unrecognized\r\n421 4.7.0 Too many errors, closing connection\r\n"
        ));
    }

    #[test]
    fn an_overlong_line_is_refused_once_and_the_session_goes_on() {
        let config = LmtpConfig {
            max_command_line: 32,
            ..LmtpConfig::default()
        };
        let mut input = b"LHLO mx\r\nNOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let t = drive(config, &input, &[], all_ok);
        assert!(
            text(&t).ends_with("500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"),
            "{}",
            text(&t)
        );
    }

    #[test]
    fn shutdown_closes_an_idle_session_and_lets_a_transaction_finish() {
        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig::default());
        s.take_output();
        assert_eq!(s.handle_shutdown(), Some(Action::Close));
        assert!(
            String::from_utf8(s.take_output())
                .unwrap()
                .starts_with("421 4.3.2")
        );

        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig::default());
        for l in [&b"LHLO mx"[..], b"MAIL FROM:<a@b>"] {
            assert_eq!(s.handle_line(Line::Complete(l)), Ok(None));
        }
        assert_eq!(
            s.handle_line(Line::Complete(b"RCPT TO:<c@d>")),
            Ok(Some(Action::LookupRecipient("c@d".into())))
        );
        assert_eq!(s.handle_shutdown(), None, "a transaction is open");
        assert_eq!(
            s.handle_event(Event::Recipient(RcptOutcome::Accepted(()))),
            Ok(None)
        );
        assert_eq!(
            s.handle_line(Line::Complete(b"DATA")),
            Ok(Some(Action::ReceiveData))
        );
        let mut spool = Vec::new();
        assert_eq!(
            s.feed_data(b"x\r\n.\r\n", &mut spool),
            Ok((6, Some(Action::CommitSpool)))
        );
        assert_eq!(
            s.handle_event(Event::Spooled(SpoolOutcome::Ready)),
            Ok(Some(Action::Deliver(0)))
        );
        assert_eq!(
            s.handle_event(Event::Delivered(Ok(()))),
            Ok(Some(Action::Close))
        );
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(
            out.ends_with("250 2.0.0 <c@d> Saved\r\n421 4.3.2 Service shutting down\r\n"),
            "{out}"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn the_idle_timer_is_the_sessions_own() {
        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig {
            idle_timeout: Duration::from_secs(7),
            ..LmtpConfig::default()
        });
        assert_eq!(s.idle_timeout(), Duration::from_secs(7));
        s.take_output();
        assert_eq!(s.handle_timeout(), Some(Action::Close));
        assert_eq!(
            s.take_output(),
            b"421 4.4.2 Idle timeout, closing connection\r\n"
        );
    }

    #[test]
    fn an_event_that_answers_nothing_is_a_contract_violation_not_a_hang() {
        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig::default());
        s.take_output();
        let e = s.handle_event(Event::Delivered(Ok(()))).unwrap_err();
        assert!(e.to_string().contains("no pending action"));
        assert!(s.is_closed());
        assert_eq!(
            s.take_output(),
            b"421 4.3.0 Internal error, closing connection\r\n"
        );

        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig::default());
        s.handle_line(Line::Complete(b"LHLO x")).unwrap();
        s.handle_line(Line::Complete(b"MAIL FROM:<>")).unwrap();
        s.handle_line(Line::Complete(b"RCPT TO:<a@b>")).unwrap();
        assert!(
            s.handle_line(Line::Complete(b"NOOP")).is_err(),
            "a line during a lookup"
        );
        assert!(s.is_closed());
        let mut spool = Vec::new();
        assert!(s.feed_data(b"x", &mut spool).is_err());
    }

    #[test]
    fn a_delivery_failure_reply_is_always_well_formed() {
        let mut s: LmtpSession<()> = LmtpSession::new(LmtpConfig::default());
        for l in [&b"LHLO mx"[..], b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"] {
            s.handle_line(Line::Complete(l)).unwrap();
        }
        s.handle_event(Event::Recipient(RcptOutcome::Accepted(())))
            .unwrap();
        s.handle_line(Line::Complete(b"DATA")).unwrap();
        s.feed_data(b".\r\n", &mut Vec::new()).unwrap();
        s.handle_event(Event::Spooled(SpoolOutcome::Ready)).unwrap();
        s.take_output();
        let bad = DeliveryFailure {
            code: 250,
            enhanced: "2.0.0".into(),
            text: "line\r\nbreak".into(),
        };
        s.handle_event(Event::Delivered(Err(bad))).unwrap();
        assert_eq!(s.take_output(), b"451 4.0.0 <c@d> line  break\r\n");
    }
}
