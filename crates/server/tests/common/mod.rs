//! `TestServer`: a real Correio POP3 server on 127.0.0.1 for integration tests, with
//! its own temp data dir, users and mail. Made for wire tests and for tests that drive
//! real clients (curl, poplib, fetchmail, mpop, getmail6) as separate processes.
//!
//! ```ignore
//! mod common;
//! use common::TestServer;
//!
//! let srv = TestServer::start();                 // or TestServer::builder()...start()
//! srv.add_user("alice", "secret");               // PLAIN secret: APOP/CRAM/SCRAM work
//! srv.deliver("alice", b"Subject: hi\n\nbody\n"); // through the store's delivery
//! // srv.pop3 (cleartext + STLS) and srv.pop3s (implicit TLS) are the ports;
//! // srv.cert_pem is the self-signed certificate for "localhost" and 127.0.0.1
//! //   (curl --cacert, fetchmail --sslcertfile, mpop tls_trust_file ...);
//! // srv.maildir("alice") is where the mail lives.
//! drop(srv);                                     // graceful shutdown, temp dir removed
//! ```
//!
//! The server runs on its own thread and runtime, so tests may block (spawn client
//! processes, use std sockets) freely. Failure delays are cut to milliseconds. Users
//! may be added at any time: the server re-reads the users file on change, and what it
//! offers (APOP, CRAM-MD5, SCRAM-SHA-256: only if some secret allows them) follows.
#![allow(dead_code)]

use rustls::pki_types::pem::PemObject as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use correio_auth::{HashParams, Scheme, ThrottleConfig, UserRecord, add_user, hash_password};
use correio_server::config::{Config, Overrides};
use correio_server::{Listeners, Server};
use correio_store::{DeliverOptions, MailLocation, deliver};

/// A running server. Dropping it shuts it down and removes its data.
pub struct TestServer {
    /// Cleartext POP3 (STLS offered).
    pub pop3: SocketAddr,
    /// Implicit TLS POP3.
    pub pop3s: SocketAddr,
    /// The data dir (users file, tls/, mail/).
    pub data: PathBuf,
    /// The server's self-signed certificate (PEM) for `localhost` and `127.0.0.1`.
    pub cert_pem: PathBuf,
    /// The server, for reload tests.
    pub server: Server,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Options before start.
pub struct Builder {
    toml: String,
    allow_cleartext: bool,
    default_offer: bool,
    config_throttle: bool,
}

impl TestServer {
    /// A server with default settings.
    pub fn start() -> TestServer {
        Self::builder().start()
    }

    /// A builder for extra TOML settings.
    pub fn builder() -> Builder {
        Builder {
            toml: String::new(),
            allow_cleartext: false,
            default_offer: false,
            config_throttle: false,
        }
    }

    /// The users file.
    pub fn users_file(&self) -> PathBuf {
        self.data.join("users")
    }

    /// Adds a user with a PLAIN secret (so every mechanism and APOP work).
    pub fn add_user(&self, name: &str, password: &str) {
        self.add_user_scheme(name, password, Scheme::Plain);
    }

    /// Adds a user whose secret is hashed with `scheme` (cheap test parameters).
    pub fn add_user_scheme(&self, name: &str, password: &str, scheme: Scheme) {
        let secret = hash_password(
            &scheme,
            password.as_bytes(),
            &HashParams::insecure_fast_for_tests(),
        )
        .expect("hash");
        add_user(&self.users_file(), &UserRecord::new(name, Some(secret))).expect("add user");
    }

    /// Where `user`'s Maildir is.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.data.join("mail").join(user)
    }

    /// Delivers a message (as stored: LF line ends are fine) to `user`.
    pub fn deliver(&self, user: &str, message: &[u8]) {
        let loc = MailLocation::Maildir(self.maildir(user));
        deliver(&loc, message, &DeliverOptions::default()).expect("deliver");
    }

    /// A std TCP connection to the cleartext port, with a 10 s read timeout.
    pub fn connect(&self) -> Wire {
        Wire::connect(self.pop3)
    }
}

impl Builder {
    /// Extra TOML for the config file (top-level keys first, then tables).
    pub fn toml(mut self, t: &str) -> Builder {
        self.toml.push_str(t);
        self.toml.push('\n');
        self
    }

    /// Make loopback look like a remote cleartext client (cleartext login refused).
    pub fn loopback_untrusted(self) -> Builder {
        self.toml("cleartext_login_on_loopback = false")
    }

    /// Keep the configuration's default mechanisms (PLAIN, LOGIN; no APOP) instead of
    /// offering every one.
    pub fn default_offer(mut self) -> Builder {
        self.default_offer = true;
        self
    }

    /// Use the configuration's `[auth]` throttle settings instead of the suite's
    /// near-zero delays.
    pub fn config_throttle(mut self) -> Builder {
        self.config_throttle = true;
        self
    }

    /// `--allow-cleartext-login`.
    pub fn allow_cleartext(mut self) -> Builder {
        self.allow_cleartext = true;
        self
    }

    /// Starts the server.
    pub fn start(self) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        // Daemons under test (and clients) may run as other users: keep it traversable.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("mail")).expect("mkdir");
        let cert = data.join("tls").join("cert.pem");
        let key = data.join("tls").join("key.pem");
        correio_server::tls::write_self_signed(
            &cert,
            &key,
            &["localhost".into(), "127.0.0.1".into()],
        )
        .expect("cert");
        let overrides = Overrides {
            data_dir: Some(data.clone()),
            pop3: vec!["127.0.0.1:0".parse().expect("addr")],
            pop3s: vec!["127.0.0.1:0".parse().expect("addr")],
            allow_cleartext_login: self.allow_cleartext,
            // The suite exercises every mechanism and APOP, which a real config
            // opts into (the default offers PLAIN and LOGIN only; see
            // `default_offer_is_what_every_user_can_do`).
            set: if self.default_offer {
                Vec::new()
            } else {
                vec![
                    "pop3.apop=true".into(),
                    "pop3.mechanisms=[\"SCRAM-SHA-256\", \"CRAM-MD5\", \"PLAIN\", \"LOGIN\"]"
                        .into(),
                ]
            },
            ..Overrides::default()
        };
        let text = format!("hostname = \"test.invalid\"\n{}", self.toml);
        let config = Config::from_toml(&text, &overrides).expect("config");
        let throttle = ThrottleConfig {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            ..ThrottleConfig::default()
        };
        let server = if self.config_throttle {
            Server::new(config).expect("server")
        } else {
            Server::with_throttle(config, throttle).expect("server")
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let srv = server.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listeners: Listeners = srv.bind().await.expect("bind");
                addr_tx.send(listeners.addrs()).expect("send addrs");
                srv.run(listeners, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let (pop3, pop3s) = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not start");
        TestServer {
            pop3: pop3[0],
            pop3s: pop3s[0],
            data,
            cert_pem: cert,
            server,
            shutdown: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking line-oriented test connection with exact-byte helpers.
pub struct Wire {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Connects, with a 10 s read timeout so a test never hangs.
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `n` more bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut tmp = [0u8; 8192];
            let k = self.stream.read(&mut tmp).expect("read");
            assert!(
                k > 0,
                "connection closed; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&tmp[..k]);
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one line, CRLF included.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&l).into_owned();
            }
            let mut tmp = [0u8; 8192];
            let k = self.stream.read(&mut tmp).expect("read");
            assert!(
                k > 0,
                "connection closed; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&tmp[..k]);
        }
    }

    /// Expects exactly these bytes next.
    pub fn expect(&mut self, want: &str) {
        let got = self.read_exact(want.len());
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    /// Reads a multi-line response (status line through ".\r\n"), raw.
    pub fn multiline(&mut self) -> String {
        let mut out = self.line();
        assert!(out.starts_with("+OK"), "not +OK: {out}");
        loop {
            let l = self.line();
            out.push_str(&l);
            if l == ".\r\n" {
                return out;
            }
        }
    }

    /// Sends a command line and returns the one-line reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads the greeting and logs in with USER/PASS.
    pub fn login(&mut self, user: &str, pass: &str) {
        let g = self.line();
        assert!(g.starts_with("+OK"), "{g}");
        assert_eq!(self.cmd(&format!("USER {user}")), "+OK Send PASS\r\n");
        let r = self.cmd(&format!("PASS {pass}"));
        assert!(r.starts_with("+OK Logged in"), "{r}");
    }

    /// True once the server closed the connection (reads to EOF; bytes are dropped).
    pub fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A rustls client config trusting exactly the test server's certificate.
pub fn tls_client_config(cert_pem: &Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(cert_pem).expect("read cert");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A blocking TLS connection (implicit TLS, or after STLS on an existing stream).
pub struct TlsWire {
    conn: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsWire {
    /// Implicit TLS to `addr`.
    pub fn connect(addr: SocketAddr, cert_pem: &Path) -> TlsWire {
        let tcp = TcpStream::connect(addr).expect("connect");
        Self::over(tcp, cert_pem)
    }

    /// TLS over an already connected stream (after `STLS` / `+OK`).
    pub fn over(tcp: TcpStream, cert_pem: &Path) -> TlsWire {
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let c = rustls::ClientConnection::new(tls_client_config(cert_pem), name).expect("tls");
        TlsWire {
            conn: rustls::StreamOwned::new(c, tcp),
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("send");
        self.conn.flush().expect("flush");
    }

    /// Reads one line, CRLF included.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&l).into_owned();
            }
            let mut tmp = [0u8; 8192];
            let k = self.conn.read(&mut tmp).expect("read");
            assert!(k > 0, "connection closed");
            self.buf.extend_from_slice(&tmp[..k]);
        }
    }

    /// Sends a command line and returns the one-line reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line response raw.
    pub fn multiline(&mut self) -> String {
        let mut out = self.line();
        assert!(out.starts_with("+OK"), "not +OK: {out}");
        loop {
            let l = self.line();
            out.push_str(&l);
            if l == ".\r\n" {
                return out;
            }
        }
    }
}
