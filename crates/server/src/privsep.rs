//! Privilege separation: the small part of `correio serve` that stays root.
//!
//! The server binds its ports as root and then runs every session as the service user.
//! A few things still need root later: re-reading a TLS key that only root may read
//! (Let's Encrypt's default) when SIGHUP asks for a new certificate. For those, the
//! server starts a helper process *before* it drops privileges, joined to it by a Unix
//! socket pair, as OpenSSH's monitor and Dovecot's root processes do. The helper:
//!
//! - checks system users' passwords with PAM (`[auth] backend = "system"`:
//!   [`Request::Pam`], answered with a tag so several logins can wait on PAM at once,
//!   each on a thread of its own, at most [`MAX_PAM_AT_ONCE`]); the PAM service and the
//!   uid floor come from the configuration the helper reads itself;
//! - answers two requests. [`Request::TlsPair`]: it reads the configuration file
//!   itself (the one the server was started with, as root) and returns the PEM bytes
//!   of the `[tls] cert` and `key` it names. [`Request::ConfigText`]: the text of that
//!   configuration file, for SIGHUP (it may be readable by root only). It never reads
//!   a path the unprivileged side sends, so a compromised session process cannot use
//!   it to read other files;
//! - holds no sockets to clients and runs no protocol code;
//! - ends when the server closes its end (EOF), so it never outlives the server.
//!
//! The wire between the two is length-prefixed and bounded: a request is one line
//! (`PAIR\n`, `CONFIG\n`); a reply is `+` with two big-endian `u32`-length blobs
//! (certificate, key), `=` with one (a file's text), or `-` with one (a reason).
//! [`decode_reply`] is fuzzed.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use crate::tls::TlsError;

/// Largest certificate chain or key the helper sends (a chain is a few KiB).
pub const MAX_BLOB: usize = 1024 * 1024;
/// How long the server waits for the helper's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the unprivileged server may ask.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// The configured certificate chain and key, as PEM bytes.
    TlsPair,
    /// The configuration file's text (it may be readable by root only).
    ConfigText,
    /// The PEM bytes of the nth `[tls] sni` pair of the configuration.
    SniPair(u16),
    /// Check a system user's password with PAM (`[auth] backend = "system"`); the
    /// answer is tagged with `id`, so several can be under way at once.
    Pam {
        /// Tags the answer.
        id: u32,
        /// The login name.
        user: String,
        /// The password.
        password: Vec<u8>,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::TlsPair => f.write_str("TlsPair"),
            Request::ConfigText => f.write_str("ConfigText"),
            Request::SniPair(n) => write!(f, "SniPair({n})"),
            // Never the password, not even in a debug print.
            Request::Pam { id, user, .. } => write!(f, "Pam {{ id: {id}, user: {user:?} }}"),
        }
    }
}

/// Longest PAM login name and password passed to the helper.
pub const MAX_PAM_USER: usize = 255;
/// See [`MAX_PAM_USER`].
pub const MAX_PAM_PASSWORD: usize = 1024;
/// Longest request line (a PAM request with both at their limits, base64).
const MAX_REQUEST_LINE: usize = 32 + (MAX_PAM_USER + MAX_PAM_PASSWORD) * 4 / 3 + 8;
/// PAM conversations under way at once in the helper (each may sleep out PAM's
/// failure delay); more are answered "try later".
pub const MAX_PAM_AT_ONCE: usize = 64;
/// How long the server waits for a PAM answer.
const PAM_TIMEOUT: Duration = Duration::from_secs(30);

impl Request {
    /// The request on the wire.
    pub fn encode(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Request::TlsPair => b"PAIR\n".to_vec(),
            Request::ConfigText => b"CONFIG\n".to_vec(),
            Request::SniPair(n) => format!("SNI {n}\n").into_bytes(),
            Request::Pam { id, user, password } => format!(
                "PAM {id} {} {}\n",
                b64.encode(user.as_bytes()),
                b64.encode(password)
            )
            .into_bytes(),
        }
    }

    /// Parses a request line (without its LF).
    pub fn decode(line: &[u8]) -> Option<Request> {
        match line {
            b"PAIR" => Some(Request::TlsPair),
            b"CONFIG" => Some(Request::ConfigText),
            _ if line.starts_with(b"PAM ") => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD;
                let text = std::str::from_utf8(&line[4..]).ok()?;
                let mut parts = text.split(' ');
                let (Some(id), Some(user), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                if id.is_empty() || id.len() > 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let user = String::from_utf8(b64.decode(user).ok()?).ok()?;
                let password = b64.decode(password).ok()?;
                if user.len() > MAX_PAM_USER || password.len() > MAX_PAM_PASSWORD {
                    return None;
                }
                Some(Request::Pam {
                    id: id.parse().ok()?,
                    user,
                    password,
                })
            }
            _ => {
                let n = line.strip_prefix(b"SNI ")?;
                if n.is_empty() || n.len() > 5 || !n.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                std::str::from_utf8(n)
                    .ok()?
                    .parse()
                    .ok()
                    .map(Request::SniPair)
            }
        }
    }
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Certificate chain and key PEM.
    Pair(Vec<u8>, Vec<u8>),
    /// A file's text.
    Text(Vec<u8>),
    /// Why not (names the path and the OS error).
    Error(String),
    /// The answer to [`Request::Pam`] `id`.
    Pam {
        /// The request's tag.
        id: u32,
        /// What PAM said.
        answer: PamAnswer,
    },
}

/// What PAM said of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PamAnswer {
    /// Accepted (authentication and account checks).
    Accepted,
    /// Refused.
    Refused,
    /// PAM could not answer now (why).
    Temporary(String),
}

impl Reply {
    /// The reply on the wire.
    pub fn encode(&self) -> Vec<u8> {
        fn blob(out: &mut Vec<u8>, b: &[u8]) {
            let b = &b[..b.len().min(MAX_BLOB)];
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        let mut out = Vec::new();
        match self {
            Reply::Pair(c, k) => {
                out.push(b'+');
                blob(&mut out, c);
                blob(&mut out, k);
            }
            Reply::Text(t) => {
                out.push(b'=');
                blob(&mut out, t);
            }
            Reply::Error(e) => {
                out.push(b'-');
                blob(&mut out, e.as_bytes());
            }
            Reply::Pam { id, answer } => {
                out.push(b'P');
                out.extend_from_slice(&id.to_be_bytes());
                match answer {
                    PamAnswer::Accepted => out.push(b'+'),
                    PamAnswer::Refused => out.push(b'-'),
                    PamAnswer::Temporary(why) => {
                        out.push(b'!');
                        blob(&mut out, why.as_bytes());
                    }
                }
            }
        }
        out
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed.
    #[error("reply incomplete")]
    Incomplete,
    /// The bytes are not a reply.
    #[error("malformed reply from the privileged helper")]
    Malformed,
    /// A blob is larger than [`MAX_BLOB`].
    #[error("reply from the privileged helper too large")]
    TooLarge,
}

/// Decodes one reply from the start of `buf`: the reply and how many bytes it used.
pub fn decode_reply(buf: &[u8]) -> Result<(Reply, usize), DecodeError> {
    fn blob(buf: &[u8], at: usize) -> Result<(&[u8], usize), DecodeError> {
        let head = buf.get(at..at + 4).ok_or(DecodeError::Incomplete)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_BLOB {
            return Err(DecodeError::TooLarge);
        }
        let body = buf
            .get(at + 4..at + 4 + len)
            .ok_or(DecodeError::Incomplete)?;
        Ok((body, at + 4 + len))
    }
    match buf.first() {
        None => Err(DecodeError::Incomplete),
        Some(b'+') => {
            let (cert, at) = blob(buf, 1)?;
            let (key, end) = blob(buf, at)?;
            Ok((Reply::Pair(cert.to_vec(), key.to_vec()), end))
        }
        Some(b'=') => {
            let (text, end) = blob(buf, 1)?;
            Ok((Reply::Text(text.to_vec()), end))
        }
        Some(b'-') => {
            let (reason, end) = blob(buf, 1)?;
            Ok((
                Reply::Error(String::from_utf8_lossy(reason).into_owned()),
                end,
            ))
        }
        Some(b'P') => {
            let head = buf.get(1..6).ok_or(DecodeError::Incomplete)?;
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            match head[4] {
                b'+' => Ok((
                    Reply::Pam {
                        id,
                        answer: PamAnswer::Accepted,
                    },
                    6,
                )),
                b'-' => Ok((
                    Reply::Pam {
                        id,
                        answer: PamAnswer::Refused,
                    },
                    6,
                )),
                b'!' => {
                    let (why, end) = blob(buf, 6)?;
                    Ok((
                        Reply::Pam {
                            id,
                            answer: PamAnswer::Temporary(String::from_utf8_lossy(why).into_owned()),
                        },
                        end,
                    ))
                }
                _ => Err(DecodeError::Malformed),
            }
        }
        Some(_) => Err(DecodeError::Malformed),
    }
}

/// The server's end: asks the helper for the TLS pair, the configuration text, and
/// PAM checks. A reader thread takes the helper's replies: tagged PAM answers go to
/// the login waiting for them (several at once), the others to the one synchronous
/// request under way.
#[derive(Debug)]
pub struct HelperClient {
    writer: Mutex<UnixStream>,
    /// One synchronous request at a time.
    ask_lock: Mutex<()>,
    shared: std::sync::Arc<ClientShared>,
    next_id: std::sync::atomic::AtomicU32,
}

#[derive(Debug, Default)]
struct ClientShared {
    /// Where the reply to the synchronous request goes.
    sync: Mutex<Option<std::sync::mpsc::Sender<Reply>>>,
    /// PAM requests waiting for their answer, by id.
    pam: Mutex<std::collections::HashMap<u32, std::sync::mpsc::Sender<PamAnswer>>>,
    /// The helper is gone.
    closed: std::sync::atomic::AtomicBool,
}

impl HelperClient {
    /// Wraps the server's end of the socket pair (and starts its reader thread).
    pub fn new(stream: UnixStream) -> HelperClient {
        let shared = std::sync::Arc::new(ClientShared::default());
        if let Ok(reader) = stream.try_clone() {
            let shared = std::sync::Arc::clone(&shared);
            let _ = std::thread::Builder::new()
                .name("correio-helper-replies".into())
                .spawn(move || read_replies(reader, &shared));
        } else {
            shared
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        HelperClient {
            writer: Mutex::new(stream),
            ask_lock: Mutex::new(()),
            shared,
            next_id: std::sync::atomic::AtomicU32::new(1),
        }
    }

    fn send(&self, req: &Request) -> io::Result<()> {
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(gone());
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.set_write_timeout(Some(REPLY_TIMEOUT))?;
        w.write_all(&req.encode())
    }

    fn ask(&self, req: Request) -> io::Result<Reply> {
        let _one = self.ask_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = std::sync::mpsc::channel();
        *self.shared.sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.send(&req)?;
        let reply = rx.recv_timeout(REPLY_TIMEOUT).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                "the privileged helper did not answer",
            ),
            std::sync::mpsc::RecvTimeoutError::Disconnected => gone(),
        });
        *self.shared.sync.lock().unwrap_or_else(|p| p.into_inner()) = None;
        reply
    }

    /// Asks the helper to check a system user's password with PAM. Blocking (PAM may
    /// sleep out its failure delay); several calls may be under way at once.
    pub fn pam_check(&self, user: &str, password: &[u8]) -> PamAnswer {
        if user.len() > MAX_PAM_USER || password.len() > MAX_PAM_PASSWORD {
            return PamAnswer::Refused;
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared
            .pam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let req = Request::Pam {
            id,
            user: user.to_owned(),
            password: password.to_vec(),
        };
        let answer = match self.send(&req) {
            Err(e) => PamAnswer::Temporary(format!("privileged helper: {e}")),
            Ok(()) => rx.recv_timeout(PAM_TIMEOUT).unwrap_or_else(|e| {
                PamAnswer::Temporary(match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => {
                        "the privileged helper did not answer the PAM check".into()
                    }
                    std::sync::mpsc::RecvTimeoutError::Disconnected => gone().to_string(),
                })
            }),
        };
        self.shared
            .pam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        answer
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the privileged helper has exited",
    )
}

/// The reader thread: decodes replies and hands each to its waiter.
fn read_replies(mut stream: UnixStream, shared: &ClientShared) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    'outer: loop {
        loop {
            match decode_reply(&buf) {
                Ok((reply, used)) => {
                    buf.drain(..used);
                    match reply {
                        Reply::Pam { id, answer } => {
                            if let Some(tx) = shared
                                .pam
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&id)
                            {
                                let _ = tx.send(answer);
                            }
                        }
                        other => {
                            if let Some(tx) =
                                shared.sync.lock().unwrap_or_else(|p| p.into_inner()).take()
                            {
                                let _ = tx.send(other);
                            }
                        }
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(_) => break 'outer,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    shared
        .closed
        .store(true, std::sync::atomic::Ordering::Release);
    // Wake every waiter: their senders go.
    shared.sync.lock().unwrap_or_else(|p| p.into_inner()).take();
    shared.pam.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

impl correio_users::PamCheck for HelperClient {
    fn check(
        &self,
        _service: &str,
        user: &str,
        password: &[u8],
    ) -> Result<bool, correio_users::Temporary> {
        // The helper takes the PAM service from the configuration it reads itself.
        match self.pam_check(user, password) {
            PamAnswer::Accepted => Ok(true),
            PamAnswer::Refused => Ok(false),
            PamAnswer::Temporary(why) => Err(correio_users::Temporary(why)),
        }
    }
}

impl HelperClient {
    /// The configuration file's text, read by the helper (as root).
    pub fn config_text(&self) -> Result<String, String> {
        match self.ask(Request::ConfigText) {
            Ok(Reply::Text(t)) => {
                String::from_utf8(t).map_err(|_| "the configuration is not UTF-8".to_owned())
            }
            Ok(Reply::Error(e)) => Err(e),
            Ok(_) => Err("unexpected reply from the privileged helper".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl crate::TlsSource for HelperClient {
    fn read_pair(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let helper_error = |reason: String| TlsError::Pem {
            path: "(privileged helper)".into(),
            reason,
        };
        match self.ask(Request::TlsPair) {
            Ok(Reply::Pair(c, k)) => Ok((c, k)),
            Ok(Reply::Error(e)) => Err(helper_error(e)),
            Ok(_) => Err(helper_error("unexpected reply".into())),
            Err(e) => Err(helper_error(e.to_string())),
        }
    }

    fn read_sni_pair(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let helper_error = |reason: String| TlsError::Pem {
            path: "(privileged helper)".into(),
            reason,
        };
        let n = u16::try_from(index).map_err(|_| helper_error("too many SNI pairs".into()))?;
        match self.ask(Request::SniPair(n)) {
            Ok(Reply::Pair(c, k)) => Ok((c, k)),
            Ok(Reply::Error(e)) => Err(helper_error(e)),
            Ok(_) => Err(helper_error("unexpected reply".into())),
            Err(e) => Err(helper_error(e.to_string())),
        }
    }
}

/// Checks a system password for the helper: the PAM service comes from the
/// configuration the helper reads itself (`Err`: PAM cannot answer now, or system
/// users are not configured).
pub type PamFn = std::sync::Arc<dyn Fn(&str, &[u8]) -> Result<bool, String> + Send + Sync>;

/// The helper's loop: answers requests on `stream` until the server closes it.
/// `pair_paths` is called for each TLS request (`None`: the default pair, `Some(n)`:
/// the nth `[tls] sni` pair): it re-reads the configuration, so a
/// reload that changed `[tls]` is followed. `config_file` is the one configuration
/// file the helper sends on request (none: the defaults, sent as empty text). `pam`
/// checks system passwords; each check runs on a thread of its own (PAM sleeps after a
/// failure), at most [`MAX_PAM_AT_ONCE`] at once.
pub fn serve_helper(
    stream: UnixStream,
    config_file: Option<&std::path::Path>,
    pair_paths: impl Fn(Option<u16>) -> Result<(std::path::PathBuf, std::path::PathBuf), String>,
    pam: Option<PamFn>,
) -> io::Result<()> {
    let writer = std::sync::Arc::new(Mutex::new(stream.try_clone()?));
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let send = |reply: &Reply| -> io::Result<()> {
        writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&reply.encode())
    };
    let mut reader = io::BufReader::new(stream);
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        let n = io::BufRead::read_until(
            &mut (&mut reader).take(MAX_REQUEST_LINE as u64 + 1),
            b'\n',
            &mut line,
        )?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            // Too long, or cut short: not our server speaking. Stop.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
        line.pop();
        let reply = match Request::decode(&line) {
            Some(req @ (Request::TlsPair | Request::SniPair(_))) => match pair_paths(match req {
                Request::SniPair(n) => Some(n),
                _ => None,
            }) {
                Ok((cert, key)) => match crate::tls::read_pair(&cert, &key) {
                    Ok((c, k)) if c.len() <= MAX_BLOB && k.len() <= MAX_BLOB => Reply::Pair(c, k),
                    Ok(_) => Reply::Error(format!(
                        "{} or {} is larger than {MAX_BLOB} bytes",
                        cert.display(),
                        key.display()
                    )),
                    Err(e) => Reply::Error(e.to_string()),
                },
                Err(e) => Reply::Error(e),
            },
            Some(Request::ConfigText) => match config_file {
                None => Reply::Text(Vec::new()),
                Some(p) => match std::fs::read(p) {
                    Ok(t) if t.len() <= MAX_BLOB => Reply::Text(t),
                    Ok(_) => Reply::Error(format!("{}: larger than {MAX_BLOB} bytes", p.display())),
                    Err(e) => Reply::Error(format!("{}: cannot read: {e}", p.display())),
                },
            },
            Some(Request::Pam { id, user, password }) => {
                let Some(pam) = pam.clone() else {
                    send(&Reply::Pam {
                        id,
                        answer: PamAnswer::Temporary("PAM is not available".into()),
                    })?;
                    continue;
                };
                if running.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= MAX_PAM_AT_ONCE {
                    running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    send(&Reply::Pam {
                        id,
                        answer: PamAnswer::Temporary("too many PAM checks at once".into()),
                    })?;
                    continue;
                }
                let (writer2, running2) = (
                    std::sync::Arc::clone(&writer),
                    std::sync::Arc::clone(&running),
                );
                let spawned = std::thread::Builder::new()
                    .name("correio-pam".into())
                    .spawn(move || {
                        let (writer, running) = (writer2, running2);
                        let answer = match pam(&user, &password) {
                            Ok(true) => PamAnswer::Accepted,
                            Ok(false) => PamAnswer::Refused,
                            Err(e) => PamAnswer::Temporary(e),
                        };
                        running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                        let _ = writer
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .write_all(&Reply::Pam { id, answer }.encode());
                    });
                if spawned.is_err() {
                    running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    send(&Reply::Pam {
                        id,
                        answer: PamAnswer::Temporary("cannot start a PAM thread".into()),
                    })?;
                }
                continue;
            }
            None => Reply::Error("unknown request".into()),
        };
        send(&reply)?;
    }
}

/// Fuzz body (`fuzz/fuzz_targets/privsep_reply.rs`): never panics; what decodes
/// re-encodes to the same bytes.
#[doc(hidden)]
pub fn fuzz_reply(data: &[u8]) {
    if let Ok((reply, used)) = decode_reply(data) {
        assert!(used <= data.len());
        // Error texts are decoded lossily; pairs are bytes and must round-trip.
        if matches!(
            reply,
            Reply::Pair(..)
                | Reply::Text(..)
                | Reply::Pam {
                    answer: PamAnswer::Accepted | PamAnswer::Refused,
                    ..
                }
        ) {
            assert_eq!(reply.encode(), data[..used].to_vec());
        }
    }
    let _ = Request::decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_in_every_split() {
        for reply in [
            Reply::Pair(b"CERT".to_vec(), b"KEY".to_vec()),
            Reply::Pair(Vec::new(), Vec::new()),
            Reply::Text(b"data_dir = \"/srv\"\n".to_vec()),
            Reply::Error("/etc/x: cannot read: denied".into()),
            Reply::Pam {
                id: 7,
                answer: PamAnswer::Accepted,
            },
            Reply::Pam {
                id: u32::MAX,
                answer: PamAnswer::Refused,
            },
            Reply::Pam {
                id: 0,
                answer: PamAnswer::Temporary("AUTHINFO_UNAVAIL".into()),
            },
        ] {
            let wire = reply.encode();
            for cut in 0..wire.len() {
                assert_eq!(decode_reply(&wire[..cut]), Err(DecodeError::Incomplete));
            }
            assert_eq!(decode_reply(&wire), Ok((reply.clone(), wire.len())));
        }
        assert_eq!(decode_reply(b"x"), Err(DecodeError::Malformed));
        assert_eq!(
            decode_reply(&[b'-', 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn helper_reads_only_the_configured_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, b"C").unwrap();
        std::fs::write(&key, b"K").unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let (c2, k2) = (cert.clone(), key.clone());
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "hostname = \"h\"\n").unwrap();
        let helper = std::thread::spawn(move || {
            serve_helper(
                b,
                Some(&cfg),
                move |sni| match sni {
                    None => Ok((c2.clone(), k2.clone())),
                    Some(n) => Err(format!("no SNI pair {n}")),
                },
                Some(std::sync::Arc::new(|user: &str, pw: &[u8]| match user {
                    "down" => Err("PAM: AUTHINFO_UNAVAIL".into()),
                    _ => Ok(user == "alice" && pw == b"secret"),
                })),
            )
        });
        let client = HelperClient::new(a);
        use crate::TlsSource as _;
        assert_eq!(client.read_pair().unwrap(), (b"C".to_vec(), b"K".to_vec()));
        std::fs::remove_file(&key).unwrap();
        let e = client.read_pair().unwrap_err().to_string();
        assert!(e.contains("k.pem"), "{e}");
        assert_eq!(client.config_text().unwrap(), "hostname = \"h\"\n");
        assert_eq!(client.pam_check("alice", b"secret"), PamAnswer::Accepted);
        assert_eq!(client.pam_check("alice", b"wrong"), PamAnswer::Refused);
        assert!(matches!(
            client.pam_check("down", b"x"),
            PamAnswer::Temporary(_)
        ));
        // Several at once, each answered by its tag.
        let client = std::sync::Arc::new(client);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let c = std::sync::Arc::clone(&client);
                std::thread::spawn(move || {
                    let pw: &[u8] = if i % 2 == 0 { b"secret" } else { b"nope" };
                    (i, c.pam_check("alice", pw))
                })
            })
            .collect();
        for t in threads {
            let (i, a) = t.join().unwrap();
            let want = if i % 2 == 0 {
                PamAnswer::Accepted
            } else {
                PamAnswer::Refused
            };
            assert_eq!(a, want);
        }
        drop(client);
        helper.join().unwrap().unwrap();
    }
}
