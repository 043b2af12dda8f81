//! Privilege separation: the small part of `correio serve` that stays root.
//!
//! The server binds its ports as root and then runs every session as the service user.
//! A few things still need root later: re-reading a TLS key that only root may read
//! (Let's Encrypt's default) when SIGHUP asks for a new certificate. For those, the
//! server starts a helper process *before* it drops privileges, joined to it by a Unix
//! socket pair, as OpenSSH's monitor and Dovecot's root processes do. The helper:
//!
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The configured certificate chain and key, as PEM bytes.
    TlsPair,
    /// The configuration file's text (it may be readable by root only).
    ConfigText,
    /// The PEM bytes of the nth `[tls] sni` pair of the configuration.
    SniPair(u16),
}

impl Request {
    /// The request on the wire.
    pub fn encode(self) -> Vec<u8> {
        match self {
            Request::TlsPair => b"PAIR\n".to_vec(),
            Request::ConfigText => b"CONFIG\n".to_vec(),
            Request::SniPair(n) => format!("SNI {n}\n").into_bytes(),
        }
    }

    /// Parses a request line (without its LF).
    pub fn decode(line: &[u8]) -> Option<Request> {
        match line {
            b"PAIR" => Some(Request::TlsPair),
            b"CONFIG" => Some(Request::ConfigText),
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
        Some(_) => Err(DecodeError::Malformed),
    }
}

/// The server's end: asks the helper for the TLS pair.
#[derive(Debug)]
pub struct HelperClient {
    stream: Mutex<UnixStream>,
}

impl HelperClient {
    /// Wraps the server's end of the socket pair.
    pub fn new(stream: UnixStream) -> HelperClient {
        HelperClient {
            stream: Mutex::new(stream),
        }
    }

    fn ask(&self, req: Request) -> io::Result<Reply> {
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        s.set_write_timeout(Some(REPLY_TIMEOUT))?;
        s.write_all(&req.encode())?;
        let mut buf = Vec::with_capacity(8192);
        let mut chunk = [0u8; 8192];
        loop {
            match decode_reply(&buf) {
                Ok((reply, _)) => return Ok(reply),
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the privileged helper has exited",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
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
            Ok(Reply::Text(_)) => Err(helper_error("unexpected reply".into())),
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
            Ok(Reply::Text(_)) => Err(helper_error("unexpected reply".into())),
            Err(e) => Err(helper_error(e.to_string())),
        }
    }
}

/// The helper's loop: answers requests on `stream` until the server closes it.
/// `pair_paths` is called for each TLS request (`None`: the default pair, `Some(n)`:
/// the nth `[tls] sni` pair): it re-reads the configuration, so a
/// reload that changed `[tls]` is followed. `config_file` is the one configuration
/// file the helper sends on request (none: the defaults, sent as empty text).
pub fn serve_helper(
    mut stream: UnixStream,
    config_file: Option<&std::path::Path>,
    pair_paths: impl Fn(Option<u16>) -> Result<(std::path::PathBuf, std::path::PathBuf), String>,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if byte[0] != b'\n' {
            if line.len() >= 64 {
                // Not our server speaking: stop.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request too long",
                ));
            }
            line.push(byte[0]);
            continue;
        }
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
            None => Reply::Error("unknown request".into()),
        };
        line.clear();
        stream.write_all(&reply.encode())?;
    }
}

/// Fuzz body (`fuzz/fuzz_targets/privsep_reply.rs`): never panics; what decodes
/// re-encodes to the same bytes.
#[doc(hidden)]
pub fn fuzz_reply(data: &[u8]) {
    if let Ok((reply, used)) = decode_reply(data) {
        assert!(used <= data.len());
        // Error texts are decoded lossily; pairs are bytes and must round-trip.
        if matches!(reply, Reply::Pair(..) | Reply::Text(..)) {
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
            serve_helper(b, Some(&cfg), move |sni| match sni {
                None => Ok((c2.clone(), k2.clone())),
                Some(n) => Err(format!("no SNI pair {n}")),
            })
        });
        let client = HelperClient::new(a);
        use crate::TlsSource as _;
        assert_eq!(client.read_pair().unwrap(), (b"C".to_vec(), b"K".to_vec()));
        std::fs::remove_file(&key).unwrap();
        let e = client.read_pair().unwrap_err().to_string();
        assert!(e.contains("k.pem"), "{e}");
        assert_eq!(client.config_text().unwrap(), "hostname = \"h\"\n");
        drop(client);
        helper.join().unwrap().unwrap();
    }
}
