//! The async POP3 client: a thin tokio driver around
//! [`correio_proto::client::ClientSession`].
//!
//! [`Client`] works over any `AsyncRead + AsyncWrite` (a `TcpStream`, a TLS stream, an
//! in-memory duplex in tests). Each method sends its command(s), then reads until the
//! machine has answered them. Every read has a timeout, so a server that stops talking
//! (or that advertises PIPELINING and then drops pipelined commands) becomes an error
//! rather than a hang. Message bodies are streamed: [`Client::retr`] writes into an
//! `AsyncWrite`, and [`Client::retr_many`] into a [`BodySink`], chunk by chunk.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use correio_proto::client::{ClientError, ClientSession, CommandKind, Event, SaslMechanism};
use correio_proto::{Capabilities, Command, MsgNum, StatusLine};
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::{self, TlsSetupError};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The server broke the protocol (the session is unusable).
    #[error("{0}")]
    Protocol(#[from] ClientError),
    /// The server answered `-ERR`.
    #[error("server refused {command}: {}", line_text(.line))]
    Refused {
        /// The command's keyword.
        command: &'static str,
        /// The `-ERR` line.
        line: StatusLine,
    },
    /// No answer within the timeout.
    #[error("server did not answer within {}", crate::format_duration(*.0))]
    Timeout(Duration),
    /// One response (a whole message body included) took longer than the response
    /// deadline: a server that drips bytes slowly enough to defeat the read timeout.
    #[error("server took longer than the response deadline ({}) to answer {command}", crate::format_duration(*.limit))]
    ResponseDeadline {
        /// The command being answered.
        command: &'static str,
        /// The deadline.
        limit: Duration,
    },
    /// TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Something the server lacks (APOP without timestamp, STLS not offered...).
    #[error("{0}")]
    Unsupported(String),
}

fn line_text(l: &StatusLine) -> String {
    match &l.code {
        Some(c) => format!("-ERR [{c}] {}", l.text),
        None => format!("-ERR {}", l.text),
    }
}

impl From<TlsSetupError> for Error {
    fn from(e: TlsSetupError) -> Self {
        Error::Tls(e.to_string())
    }
}

impl Error {
    /// The `-ERR` line, if the server refused a command.
    pub fn refused_line(&self) -> Option<&StatusLine> {
        match self {
            Error::Refused { line, .. } => Some(line),
            _ => None,
        }
    }

    /// Whether the session can still be used after this error (only a `-ERR`).
    pub fn session_usable(&self) -> bool {
        matches!(self, Error::Refused { .. })
    }
}

/// How much may be in flight when pipelining (like mpop: a count and a byte bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most commands sent and not yet answered.
    pub max_commands: usize,
    /// Most expected response bytes (by LIST sizes) in flight; at least one command is
    /// always allowed.
    pub max_bytes: u64,
}

impl Window {
    /// One command at a time.
    pub const SERIAL: Window = Window {
        max_commands: 1,
        max_bytes: 0,
    };
}

impl Default for Window {
    /// 128 commands and 4 MiB of expected responses: enough to keep a link with
    /// 50-100 ms of round trip busy with typical mail. The commands themselves (under
    /// 20 octets each) always fit the socket buffers, so the server can never block on
    /// reading them while the client blocks on writing (RFC 2449 §6.6); responses
    /// wait in the kernel's buffers, not in this process's memory.
    fn default() -> Self {
        Window {
            max_commands: 128,
            max_bytes: 4 << 20,
        }
    }
}

/// One message to download in [`Client::retr_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The message.
    pub msg: MsgNum,
    /// `None` for RETR; `Some(n)` for `TOP msg n`.
    pub top_lines: Option<u32>,
    /// The size from LIST (used for the window's byte bound).
    pub size: u64,
}

/// Receives message bodies from [`Client::retr_many`], in request order.
pub trait BodySink {
    /// A body begins.
    fn start(&mut self, msg: MsgNum) -> io::Result<()>;
    /// Message bytes (CRLF line ends, unstuffed).
    fn data(&mut self, msg: MsgNum, bytes: &[u8]) -> io::Result<()>;
    /// The body ended with its terminator: complete.
    fn end(&mut self, msg: MsgNum) -> io::Result<()>;
    /// The server answered `-ERR` for this message.
    fn refused(&mut self, msg: MsgNum, line: &StatusLine) -> io::Result<()>;
    /// Waits until the sink can take more (backpressure: a sink that hands bytes to
    /// another thread waits here while its queue is full). Called after each event.
    fn ready(&mut self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The default read timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An async POP3 client over `S`.
///
/// ```no_run
/// # async fn demo() -> Result<(), correio_client::Error> {
/// use correio_client::Client;
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:110").await?;
/// let mut client = Client::connect(tcp).await?;
/// client.login("alice", b"secret").await?;
/// let (count, octets) = client.stat().await?;
/// println!("{count} messages, {octets} octets");
/// let mut out = Vec::new();
/// if count > 0 {
///     let first = correio_proto::MsgNum::new(1).unwrap();
///     client.retr(first, &mut out).await?;
/// }
/// client.quit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client<S> {
    io: S,
    session: ClientSession,
    rbuf: Vec<u8>,
    greeting: StatusLine,
    apop_timestamp: Option<String>,
    caps: Option<Capabilities>,
    timeout: Duration,
    /// Most time one response may take (None: only the read timeout).
    response_limit: Option<Duration>,
    /// When the response being read began to be awaited.
    response_started: Option<tokio::time::Instant>,
    /// The command being answered (for messages).
    answering: &'static str,
    /// The protocol trace, if on (see [`Client::set_trace`]).
    trace: Option<Trace>,
}

/// Receives the protocol trace: `C: ` lines sent, `S: ` lines received. Secrets are
/// masked; message bodies are summarized, never shown.
pub type TraceFn = Box<dyn FnMut(&str) + Send>;

struct Trace {
    out: TraceFn,
    /// Inside an AUTH exchange: every client line is a SASL response (masked).
    in_sasl: bool,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

/// One client line as the trace shows it: passwords, SASL initial responses and
/// continuation lines (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER tokens...) and APOP
/// digests are replaced by `****`.
pub fn mask_command_line(line: &str, in_sasl: bool) -> String {
    if in_sasl {
        return if line == "*" {
            "*".into()
        } else {
            "****".into()
        };
    }
    let mut words = line.splitn(3, ' ');
    let kw = words.next().unwrap_or("").to_ascii_uppercase();
    match kw.as_str() {
        "PASS" => "PASS ****".into(),
        "APOP" => match words.next() {
            Some(name) => format!("APOP {name} ****"),
            None => line.into(),
        },
        "AUTH" => match (words.next(), words.next()) {
            (Some(mech), Some(_)) => format!("AUTH {mech} ****"),
            _ => line.into(),
        },
        _ => line.into(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads the greeting from a fresh connection (after the TLS handshake for
    /// implicit TLS). A `-ERR` greeting is an error.
    pub async fn connect(io: S) -> Result<Self, Error> {
        Self::connect_with_timeout(io, DEFAULT_TIMEOUT).await
    }

    /// [`Client::connect`] with a read timeout other than [`DEFAULT_TIMEOUT`].
    pub async fn connect_with_timeout(io: S, timeout: Duration) -> Result<Self, Error> {
        let mut c = Client {
            io,
            session: ClientSession::new(),
            rbuf: vec![0; 64 * 1024],
            greeting: StatusLine::ok(""),
            apop_timestamp: None,
            caps: None,
            timeout,
            response_limit: None,
            response_started: None,
            answering: "greeting",
            trace: None,
        };
        match c.next_event().await? {
            Event::Greeting {
                line,
                apop_timestamp,
            } => {
                if !line.is_ok() {
                    return Err(Error::Refused {
                        command: "greeting",
                        line,
                    });
                }
                c.greeting = line;
                c.apop_timestamp = apop_timestamp;
            }
            other => {
                return Err(
                    ClientError::BadResponse(format!("expected greeting, got {other:?}")).into(),
                );
            }
        }
        Ok(c)
    }

    /// The greeting line.
    pub fn greeting(&self) -> &StatusLine {
        &self.greeting
    }

    /// The APOP timestamp from the greeting, if any.
    pub fn apop_timestamp(&self) -> Option<&str> {
        self.apop_timestamp.as_deref()
    }

    /// The capabilities from the last CAPA (None before CAPA or after STLS).
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// Changes the read timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sets the response deadline: the most time one response may take, from when the
    /// client starts waiting for it until its last byte (a whole message body for
    /// RETR). The read timeout bounds each read only, so a server that drips a byte now
    /// and then would otherwise keep the client forever. `None`: no deadline.
    pub fn set_response_deadline(&mut self, limit: Option<Duration>) {
        self.response_limit = limit;
    }

    /// Turns on the protocol trace: every line sent and received goes to `out`, with
    /// secrets masked ([`mask_command_line`]) and message bodies summarized.
    pub fn set_trace(&mut self, out: TraceFn) {
        self.trace = Some(Trace {
            out,
            in_sasl: false,
        });
    }

    fn trace_sent(&mut self, tx: &[u8]) {
        let Some(t) = self.trace.as_mut() else { return };
        for line in tx.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            let shown = mask_command_line(&line, t.in_sasl);
            if line.len() >= 5 && line[..5].eq_ignore_ascii_case("AUTH ") {
                t.in_sasl = true;
            }
            (t.out)(&format!("C: {shown}"));
        }
    }

    fn trace_event(&mut self, ev: &Event) {
        let Some(t) = self.trace.as_mut() else { return };
        let status = |l: &StatusLine| {
            let mut s = String::from(if l.is_ok() { "+OK" } else { "-ERR" });
            if let Some(c) = &l.code {
                s += &format!(" [{c}]");
            }
            if !l.text.is_empty() {
                s += " ";
                s += &l.text;
            }
            s
        };
        let line = match ev {
            Event::Greeting { line, .. } => format!("S: {}", status(line)),
            Event::Status { line, .. } => format!("S: {}", status(line)),
            Event::Capa(c) => format!("S: +OK (capabilities: {c:?})"),
            Event::Stat { count, octets } => format!("S: +OK {count} {octets}"),
            Event::List(v) => format!("S: +OK ({} messages listed)", v.len()),
            Event::Uidl(v) => format!("S: +OK ({} unique-ids listed)", v.len()),
            Event::BodyStart { msg, .. } => format!("S: +OK (message {msg} follows)"),
            Event::BodyEnd { msg } => format!("S: . (end of message {msg})"),
            Event::Body(_) => return,
            Event::StartTls => "S: +OK (begin TLS)".to_owned(),
        };
        if matches!(ev, Event::Status { .. }) {
            t.in_sasl = false;
        }
        (t.out)(&line);
    }

    /// Queues a command.
    fn send(&mut self, cmd: Command) -> Result<(), ClientError> {
        self.answering = cmd.keyword();
        self.session.send(cmd)
    }

    /// How long the next read may wait, and the error if it does not finish in time.
    fn read_limit(&mut self) -> (Duration, Error) {
        let timeout = (self.timeout, Error::Timeout(self.timeout));
        let Some(limit) = self.response_limit else {
            return timeout;
        };
        let started = *self
            .response_started
            .get_or_insert_with(tokio::time::Instant::now);
        let left = (started + limit).saturating_duration_since(tokio::time::Instant::now());
        if left < self.timeout {
            (
                left,
                Error::ResponseDeadline {
                    command: self.answering,
                    limit,
                },
            )
        } else {
            timeout
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    async fn flush(&mut self) -> Result<(), Error> {
        let tx = self.session.take_transmit();
        if !tx.is_empty() {
            self.trace_sent(&tx);
            let (limit, late) = self.read_limit();
            let write = async {
                self.io.write_all(&tx).await?;
                self.io.flush().await
            };
            tokio::time::timeout(limit, write)
                .await
                .map_err(|_| late)??;
        }
        Ok(())
    }

    /// The next event: sends what is queued, reads as needed.
    async fn next_event(&mut self) -> Result<Event, Error> {
        let ev = self.next_event_inner().await;
        if let Ok(e) = &ev {
            self.trace_event(e);
        }
        // A response is complete unless more of a message body is to come: the next
        // one's deadline starts when the client begins waiting for it.
        if !matches!(ev, Ok(Event::Body(_) | Event::BodyStart { .. })) {
            self.response_started = None;
        }
        ev
    }

    async fn next_event_inner(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(ev) = self.session.poll_event() {
                return Ok(ev?);
            }
            self.flush().await?;
            let (limit, late) = self.read_limit();
            let n = tokio::time::timeout(limit, self.io.read(&mut self.rbuf))
                .await
                .map_err(|_| late)??;
            if n == 0 {
                self.session.receive_eof();
                if let Some(ev) = self.session.poll_event() {
                    return Ok(ev?);
                }
                return Err(ClientError::UnexpectedEof.into());
            }
            self.session.receive(&self.rbuf[..n]);
        }
    }

    async fn simple(&mut self, cmd: Command) -> Result<StatusLine, Error> {
        let kw = cmd.keyword();
        self.send(cmd)?;
        match self.next_event().await? {
            Event::Status { line, .. } if line.is_ok() => Ok(line),
            Event::Status { line, .. } => Err(Error::Refused { command: kw, line }),
            other => Err(unexpected(kw, other)),
        }
    }

    /// CAPA. Servers without CAPA answer `-ERR`; that is `Ok` with no capabilities.
    pub async fn capa(&mut self) -> Result<&Capabilities, Error> {
        self.send(Command::Capa)?;
        let caps = match self.next_event().await? {
            Event::Capa(c) => c,
            Event::Status { line, .. } if !line.is_ok() => Capabilities::new(),
            other => return Err(unexpected("CAPA", other)),
        };
        Ok(self.caps.insert(caps))
    }

    /// USER then PASS.
    pub async fn login(&mut self, user: &str, password: &[u8]) -> Result<(), Error> {
        self.simple(Command::User(user.to_owned())).await?;
        self.simple(Command::Pass(password.to_vec())).await?;
        self.caps = None;
        Ok(())
    }

    /// APOP with the greeting's timestamp and the shared secret.
    pub async fn apop(&mut self, user: &str, secret: &[u8]) -> Result<(), Error> {
        let ts = self
            .apop_timestamp
            .clone()
            .ok_or_else(|| Error::Unsupported("server greeting has no APOP timestamp".into()))?;
        let mut h = Md5::new();
        h.update(ts.as_bytes());
        h.update(secret);
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.simple(Command::Apop {
            name: user.to_owned(),
            digest,
        })
        .await?;
        self.caps = None;
        Ok(())
    }

    /// AUTH with a SASL mechanism (see `correio_auth` for the implementations).
    pub async fn auth(&mut self, mechanism: Box<dyn SaslMechanism>) -> Result<(), Error> {
        self.answering = "AUTH";
        self.session.auth(mechanism)?;
        match self.next_event().await? {
            Event::Status { line, .. } if line.is_ok() => {
                self.caps = None;
                Ok(())
            }
            Event::Status { line, .. } => Err(Error::Refused {
                command: "AUTH",
                line,
            }),
            other => Err(unexpected("AUTH", other)),
        }
    }

    /// STAT: message count and total size.
    pub async fn stat(&mut self) -> Result<(u32, u64), Error> {
        self.send(Command::Stat)?;
        match self.next_event().await? {
            Event::Stat { count, octets } => Ok((count, octets)),
            Event::Status { line, .. } => Err(Error::Refused {
                command: "STAT",
                line,
            }),
            other => Err(unexpected("STAT", other)),
        }
    }

    /// LIST: every message's size.
    pub async fn list(&mut self) -> Result<Vec<(MsgNum, u64)>, Error> {
        self.send(Command::List(None))?;
        self.read_list().await?
    }

    /// UIDL: every message's unique id. `-ERR` means the server has no UIDL.
    pub async fn uidl(&mut self) -> Result<Vec<(MsgNum, String)>, Error> {
        self.send(Command::Uidl(None))?;
        self.read_uidl().await?
    }

    /// Reads the response to a LIST already sent. The outer error ends the session
    /// (the connection, a response that does not fit); the inner one is a refusal.
    async fn read_list(&mut self) -> Result<Result<Vec<(MsgNum, u64)>, Error>, Error> {
        self.answering = "LIST";
        match self.next_event().await? {
            Event::List(v) => Ok(Ok(v)),
            Event::Status { line, .. } => Ok(Err(Error::Refused {
                command: "LIST",
                line,
            })),
            other => Err(unexpected("LIST", other)),
        }
    }

    /// Reads the response to a UIDL already sent (errors as [`Client::read_list`]).
    async fn read_uidl(&mut self) -> Result<Result<Vec<(MsgNum, String)>, Error>, Error> {
        self.answering = "UIDL";
        match self.next_event().await? {
            Event::Uidl(v) => Ok(Ok(v)),
            Event::Status { line, .. } => Ok(Err(Error::Refused {
                command: "UIDL",
                line,
            })),
            other => Err(unexpected("UIDL", other)),
        }
    }

    /// CAPA, LIST and UIDL sent together in one round trip (only for a server that
    /// announced PIPELINING): what a fetch needs after login. The capabilities are
    /// stored as [`Client::capa`] stores them (`-ERR` gives none); LIST's result and
    /// UIDL's are returned as [`Client::list`] and [`Client::uidl`] return them. All
    /// three responses are read even when one is refused, so the session stays in step.
    #[allow(clippy::type_complexity)]
    pub async fn capa_list_uidl(
        &mut self,
    ) -> Result<
        (
            Result<Vec<(MsgNum, u64)>, Error>,
            Result<Vec<(MsgNum, String)>, Error>,
        ),
        Error,
    > {
        self.send(Command::Capa)?;
        self.session.send(Command::List(None))?;
        self.session.send(Command::Uidl(None))?;
        let caps = match self.next_event().await? {
            Event::Capa(c) => c,
            Event::Status { line, .. } if !line.is_ok() => Capabilities::new(),
            other => return Err(unexpected("CAPA", other)),
        };
        self.caps = Some(caps);
        let list = self.read_list().await?;
        let uidl = self.read_uidl().await?;
        Ok((list, uidl))
    }

    /// RETR into `out`; returns the number of message bytes written.
    pub async fn retr<W: AsyncWrite + Unpin>(
        &mut self,
        msg: MsgNum,
        out: &mut W,
    ) -> Result<u64, Error> {
        self.body(Command::Retr(msg), out).await
    }

    /// TOP msg lines into `out` (header, blank line, first `lines` body lines).
    pub async fn top<W: AsyncWrite + Unpin>(
        &mut self,
        msg: MsgNum,
        lines: u32,
        out: &mut W,
    ) -> Result<u64, Error> {
        self.body(Command::Top { msg, lines }, out).await
    }

    async fn body<W: AsyncWrite + Unpin>(
        &mut self,
        cmd: Command,
        out: &mut W,
    ) -> Result<u64, Error> {
        let kw = cmd.keyword();
        self.send(cmd)?;
        let mut written = 0u64;
        loop {
            match self.next_event().await? {
                Event::BodyStart { .. } => {}
                Event::Body(b) => {
                    out.write_all(&b).await?;
                    written += b.len() as u64;
                }
                Event::BodyEnd { .. } => {
                    out.flush().await?;
                    return Ok(written);
                }
                Event::Status { line, .. } => return Err(Error::Refused { command: kw, line }),
                other => return Err(unexpected(kw, other)),
            }
        }
    }

    /// Downloads many messages, pipelined within `window` (use [`Window::SERIAL`] when
    /// the server does not offer PIPELINING). Bodies go to `sink` in request order;
    /// a `-ERR` for one message is reported to the sink and the others go on.
    ///
    /// ```no_run
    /// use correio_client::{BodySink, Client, Request, Window};
    /// use correio_proto::{MsgNum, StatusLine};
    ///
    /// /// Counts the bytes of each message instead of storing them.
    /// struct Sizes(Vec<(MsgNum, u64)>);
    /// impl BodySink for Sizes {
    ///     fn start(&mut self, msg: MsgNum) -> std::io::Result<()> {
    ///         self.0.push((msg, 0));
    ///         Ok(())
    ///     }
    ///     fn data(&mut self, _: MsgNum, bytes: &[u8]) -> std::io::Result<()> {
    ///         if let Some(last) = self.0.last_mut() {
    ///             last.1 += bytes.len() as u64;
    ///         }
    ///         Ok(())
    ///     }
    ///     fn end(&mut self, _: MsgNum) -> std::io::Result<()> { Ok(()) }
    ///     fn refused(&mut self, _: MsgNum, _: &StatusLine) -> std::io::Result<()> { Ok(()) }
    /// }
    ///
    /// # async fn demo() -> Result<(), correio_client::Error> {
    /// let tcp = tokio::net::TcpStream::connect("127.0.0.1:110").await?;
    /// let mut client = Client::connect(tcp).await?;
    /// let pipelining = client.capa().await?.pipelining;
    /// client.login("alice", b"secret").await?;
    /// let requests: Vec<Request> = client
    ///     .list()
    ///     .await?
    ///     .into_iter()
    ///     .map(|(msg, size)| Request { msg, top_lines: None, size })
    ///     .collect();
    /// let window = if pipelining { Window::default() } else { Window::SERIAL };
    /// let mut sizes = Sizes(Vec::new());
    /// client.retr_many(&requests, window, &mut sizes).await?;
    /// client.quit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn retr_many(
        &mut self,
        requests: &[Request],
        window: Window,
        sink: &mut (dyn BodySink + Send),
    ) -> Result<(), Error> {
        self.retr_many_ahead(requests, 0, &[], window, sink)
            .await
            .map(|_| ())
    }

    /// [`Client::retr_many`] for one batch of a longer run, keeping the pipeline full
    /// across batches: the first `already_sent` of `requests` were sent by the previous
    /// call, and once every request of this batch is sent, the window's room goes to
    /// the first of `ahead` (the next batch), whose responses this call does not read.
    /// Returns how many of `ahead` it sent: pass that as the next call's
    /// `already_sent`, with `ahead` as its `requests`. Between the two calls the caller
    /// may do local work (store the batch) while the server already sends; it must send
    /// no other command before the next call.
    pub async fn retr_many_ahead(
        &mut self,
        requests: &[Request],
        already_sent: usize,
        ahead: &[Request],
        window: Window,
        sink: &mut (dyn BodySink + Send),
    ) -> Result<usize, Error> {
        let already_sent = already_sent.min(requests.len());
        let mut in_flight: VecDeque<u64> =
            requests[..already_sent].iter().map(|r| r.size).collect();
        let mut bytes = in_flight.iter().fold(0u64, |a, s| a.saturating_add(*s));
        let mut next = already_sent;
        let mut sent_ahead = 0;
        let mut done = 0;
        while done < requests.len() {
            loop {
                let r = if next < requests.len() {
                    requests[next]
                } else if let Some(r) = ahead.get(sent_ahead) {
                    *r
                } else {
                    break;
                };
                if in_flight.len() >= window.max_commands.max(1)
                    || (!in_flight.is_empty() && bytes.saturating_add(r.size) > window.max_bytes)
                {
                    break;
                }
                self.send(match r.top_lines {
                    None => Command::Retr(r.msg),
                    Some(lines) => Command::Top { msg: r.msg, lines },
                })?;
                in_flight.push_back(r.size);
                bytes = bytes.saturating_add(r.size);
                if next < requests.len() {
                    next += 1;
                } else {
                    sent_ahead += 1;
                }
            }
            let expect = requests[done].msg;
            match self.next_event().await? {
                Event::BodyStart { msg, .. } if msg == expect => sink.start(msg)?,
                Event::Body(b) => sink.data(expect, &b)?,
                Event::BodyEnd { msg } if msg == expect => {
                    sink.end(msg)?;
                    bytes = bytes.saturating_sub(in_flight.pop_front().unwrap_or(0));
                    done += 1;
                }
                Event::Status {
                    command: CommandKind::Retr(msg) | CommandKind::Top(msg),
                    line,
                } if msg == expect => {
                    sink.refused(msg, &line)?;
                    bytes = bytes.saturating_sub(in_flight.pop_front().unwrap_or(0));
                    done += 1;
                }
                other => return Err(unexpected("RETR", other)),
            }
            sink.ready().await?;
        }
        if sent_ahead > 0 {
            // The next batch's commands go out now, before the caller stores this one.
            self.flush().await?;
        }
        Ok(sent_ahead)
    }

    /// DELE for each message, pipelined within `window.max_commands`. Returns the
    /// messages the server refused (with its line); a broken connection is an error.
    pub async fn dele_many(
        &mut self,
        msgs: &[MsgNum],
        window: Window,
    ) -> Result<Vec<(MsgNum, StatusLine)>, Error> {
        let mut refused = Vec::new();
        let mut next = 0;
        let mut done = 0;
        while done < msgs.len() {
            while next < msgs.len() && next - done < window.max_commands.max(1) {
                self.send(Command::Dele(msgs[next]))?;
                next += 1;
            }
            match self.next_event().await? {
                Event::Status {
                    command: CommandKind::Dele(m),
                    line,
                } if m == msgs[done] => {
                    if !line.is_ok() {
                        refused.push((m, line));
                    }
                    done += 1;
                }
                other => return Err(unexpected("DELE", other)),
            }
        }
        Ok(refused)
    }

    /// DELE one message.
    pub async fn dele(&mut self, msg: MsgNum) -> Result<(), Error> {
        self.simple(Command::Dele(msg)).await.map(|_| ())
    }

    /// RSET.
    pub async fn rset(&mut self) -> Result<(), Error> {
        self.simple(Command::Rset).await.map(|_| ())
    }

    /// NOOP.
    pub async fn noop(&mut self) -> Result<(), Error> {
        self.simple(Command::Noop).await.map(|_| ())
    }

    /// QUIT: in TRANSACTION the server now removes the messages marked deleted; `Ok`
    /// means it says it did.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.simple(Command::Quit).await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// STLS (RFC 2595): upgrades the connection to TLS and forgets the capabilities.
    pub async fn stls(
        mut self,
        connector: &TlsConnector,
        host: &str,
    ) -> Result<Client<TlsStream<S>>, Error> {
        self.send(Command::Stls)?;
        match self.next_event().await? {
            Event::StartTls => {}
            Event::Status { line, .. } => {
                return Err(Error::Refused {
                    command: "STLS",
                    line,
                });
            }
            other => return Err(unexpected("STLS", other)),
        }
        self.session.tls_started()?;
        let name = tls::server_name(host)?;
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, self.io))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|e| Error::Tls(tls::describe_handshake_error(&e)))?;
        Ok(Client {
            io: tls,
            session: self.session,
            rbuf: self.rbuf,
            greeting: self.greeting,
            apop_timestamp: self.apop_timestamp,
            caps: None,
            timeout: self.timeout,
            response_limit: self.response_limit,
            response_started: None,
            answering: self.answering,
            trace: self.trace,
        })
    }

    /// Changes the stream type (for example to box it).
    pub fn map_io<T>(self, f: impl FnOnce(S) -> T) -> Client<T> {
        Client {
            io: f(self.io),
            session: self.session,
            rbuf: self.rbuf,
            greeting: self.greeting,
            apop_timestamp: self.apop_timestamp,
            caps: self.caps,
            timeout: self.timeout,
            response_limit: self.response_limit,
            response_started: self.response_started,
            answering: self.answering,
            trace: self.trace,
        }
    }
}

fn unexpected(kw: &str, ev: Event) -> Error {
    let what = match ev {
        Event::Body(_) => "message data".to_owned(),
        other => format!("{other:?}"),
    };
    Error::Protocol(ClientError::BadResponse(format!(
        "unexpected answer to {kw}: {what}"
    )))
}

/// Connects with implicit TLS (port 995) and reads the greeting.
pub async fn connect_tls<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    connector: &TlsConnector,
    host: &str,
    timeout: Duration,
) -> Result<Client<TlsStream<S>>, Error> {
    let name = tls::server_name(host)?;
    let tls = tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(|e| Error::Tls(tls::describe_handshake_error(&e)))?;
    Client::connect_with_timeout(tls, timeout).await
}

#[cfg(test)]
mod tests {
    use super::mask_command_line;

    #[test]
    fn the_trace_masks_every_secret() {
        let cases = [
            ("PASS s3cret", false, "PASS ****"),
            ("pass two words", false, "PASS ****"),
            ("USER me", false, "USER me"),
            (
                "APOP me c4c9334bac560ecc979e58001b3e22fb",
                false,
                "APOP me ****",
            ),
            ("AUTH PLAIN AG1lAHMzY3JldA==", false, "AUTH PLAIN ****"),
            ("AUTH XOAUTH2 dXNlcj1tZQFhdXRo", false, "AUTH XOAUTH2 ****"),
            ("AUTH OAUTHBEARER bixhPW1l", false, "AUTH OAUTHBEARER ****"),
            ("AUTH LOGIN", false, "AUTH LOGIN"),
            ("AUTH", false, "AUTH"),
            ("bWU=", true, "****"),
            ("*", true, "*"),
            ("RETR 1", false, "RETR 1"),
        ];
        for (line, in_sasl, shown) in cases {
            assert_eq!(mask_command_line(line, in_sasl), shown, "{line:?}");
        }
    }
}
