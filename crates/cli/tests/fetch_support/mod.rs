//! Shared helpers of the `correio fetch` tests: a message corpus, Maildir reading and
//! writing, and running the real binary.
#![allow(dead_code)]

pub mod hostile;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `n` messages with LF line ends that exercise the edges: dot-stuffing, mbox
/// `From ` lines, lines over 2 KB, 8-bit bytes, an empty body, sizes from tiny to
/// ~200 KB. Deterministic.
pub fn corpus(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = format!(
                "From: sender{i}@example.org\nTo: user@example.org\nSubject: corpus message {i}\nMessage-ID: <{i}@corpus.example>\n\n"
            )
            .into_bytes();
            match i % 7 {
                0 => m.extend_from_slice(b".leading dot\n..two dots\n.\nFrom the start\n>From quoted\n"),
                1 => m.extend_from_slice(format!("{}\n", "x".repeat(3000 + i)).as_bytes()),
                2 => m.extend_from_slice("caf\u{e9} na\u{ef}ve \u{2603}\n".as_bytes()),
                3 => {}
                4 => {
                    for l in 0..(i * 37 % 4000) {
                        m.extend_from_slice(format!("line {l} of message {i} with some text\n").as_bytes());
                    }
                }
                5 => m.extend_from_slice(b"\n\n\nblank lines above\n"),
                _ => m.extend_from_slice(format!("body of {i}\n").as_bytes()),
            }
            m
        })
        .collect()
}

/// Writes messages into `maildir/cur` as Dovecot would find them.
pub fn fill_maildir(maildir: &Path, msgs: &[Vec<u8>]) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        fs::write(
            maildir
                .join("cur")
                .join(format!("{}.M{i}P1.corpus:2,", 1_700_000_000 + i)),
            m,
        )
        .unwrap();
    }
}

/// Every message in a Maildir (new and cur), sorted by content. Dovecot may rename
/// files (new/ to cur/, flags) while we list; a listing that raced with a rename is
/// taken again.
pub fn maildir_messages(maildir: &Path) -> Vec<Vec<u8>> {
    fn names(maildir: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = ["new", "cur"]
            .iter()
            .flat_map(|sub| fs::read_dir(maildir.join(sub)).into_iter().flatten())
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
    'again: for _ in 0..100 {
        let before = names(maildir);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for e in rd {
                match fs::read(e.unwrap().path()) {
                    Ok(m) => out.push(m),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue 'again;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        if names(maildir) != before {
            continue 'again;
        }
        out.sort();
        return out;
    }
    panic!("{} keeps changing", maildir.display());
}

/// Sorted copy.
pub fn sorted(v: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The `correio` binary under test.
pub fn correio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_correio"))
}

/// `correio fetch` against `addr` with the given extra arguments; `state` is the
/// state directory.
pub fn fetch_cmd(
    host: &str,
    port: u16,
    user: &str,
    pass: &str,
    state: &Path,
    extra: &[&str],
) -> Command {
    let mut c = correio();
    c.arg("fetch")
        .args(["--host", host, "--port", &port.to_string(), "--user", user])
        .args(["--password-command", &format!("printf %s '{pass}'")])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--timeout", "10s"])
        .args(extra)
        .env("HOME", state)
        .env_remove("XDG_CONFIG_HOME");
    c
}

/// Whether `correio fetch` succeeded: exit status 0 (new messages stored) or 1
/// (nothing new).
pub fn fetched_ok(status: std::process::ExitStatus) -> bool {
    matches!(status.code(), Some(0 | 1))
}

/// Runs and parses `--json` output; panics with stderr on failure.
pub fn run_json(mut c: Command) -> serde_json::Value {
    let out: Output = c.arg("--json").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        fetched_ok(out.status),
        "fetch failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

/// The first account's summary from `--json` output.
pub fn summary(v: &serde_json::Value) -> &serde_json::Value {
    &v["accounts"][0]["summary"]
}

/// A temp dir others (Dovecot's uid) can traverse.
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Path helper.
pub fn p(d: &Path, s: &str) -> PathBuf {
    d.join(s)
}

/// A tiny DNS server on 127.0.0.1 (UDP) answering SRV queries from a fixed table and
/// NXDOMAIN to everything else. Stops when dropped.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// `srv`: (query name with trailing dot, target host with trailing dot, port).
    pub fn start(srv: Vec<(String, String, u16)>) -> DnsServer {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::rdata::SRV;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::new();
                resp.set_id(req.id());
                resp.set_message_type(MessageType::Response);
                resp.set_op_code(req.op_code());
                resp.set_recursion_desired(req.recursion_desired());
                resp.set_recursion_available(true);
                resp.add_queries(req.queries().to_vec());
                for q in req.queries() {
                    let qname = q.name().to_ascii().to_ascii_lowercase();
                    for (name, target, port) in &srv {
                        if q.query_type() == RecordType::SRV && &qname == name {
                            resp.add_answer(Record::from_rdata(
                                q.name().clone(),
                                60,
                                RData::SRV(SRV::new(
                                    0,
                                    0,
                                    *port,
                                    Name::from_ascii(target).unwrap(),
                                )),
                            ));
                        }
                    }
                }
                if resp.answers().is_empty() {
                    resp.set_response_code(ResponseCode::NXDomain);
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), from);
            }
        });
        DnsServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A one-path HTTP/1.1 server on 127.0.0.1 serving `body` for requests whose path
/// starts with `path`, 404 otherwise. Stops when dropped.
pub struct HttpServer {
    pub base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(path: &str, body: String) -> HttpServer {
        HttpServer::start_on("127.0.0.1:0", None, path, body)
    }

    /// On `bind` (e.g. `[::1]:0`); with `redirect = Some(from)`, a request for `from`
    /// gets `302` with the relative `Location: PATH`.
    pub fn start_on(bind: &str, redirect: Option<&str>, path: &str, body: String) -> HttpServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind(bind).unwrap();
        l.set_nonblocking(true).unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let redirect = redirect.map(str::to_owned);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let path = path.to_owned();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((s, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let req_path = first.split(' ').nth(1).unwrap_or("");
                let mut s = s;
                let reply = if redirect.as_deref().is_some_and(|r| req_path.starts_with(r)) {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                } else if req_path.starts_with(&path) {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        HttpServer {
            base,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
