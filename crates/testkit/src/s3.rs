//! A private S3-compatible object store on loopback (`s3s-fs`, an S3 server over a
//! directory), for tests of a mail store that keeps message bodies in object storage.
//!
//! [`S3Server::launch`] makes a temporary directory holding the server's data root,
//! creates one bucket in it ([`S3Server::bucket`]) and starts `s3s-fs` in the
//! foreground on `127.0.0.1` and a port chosen at run time (another one if that port
//! was taken in the meantime), with a freshly generated access key and secret key
//! (AWS Signature Version 4; any region is accepted). It waits until the server has
//! logged that it listens on that port, accepts TCP connections and answers an HTTP
//! request (any status: an unsigned request gets `403 AccessDenied`) — no fixed sleep.
//!
//! How `s3s-fs` stores data, under [`S3Server::data_dir`] (its root directory):
//!
//! - a bucket is a subdirectory of the root (`ROOT/BUCKET`), and an object is the
//!   plain file `ROOT/BUCKET/KEY` holding exactly the object's bytes (a `/` in the key
//!   makes subdirectories; a key ending in `/` is an empty directory, not a file);
//! - its metadata live in the root, beside the buckets, not inside them:
//!   `.bucket-B64(BUCKET).object-B64(KEY).metadata.json` (content type, `x-amz-meta-*`)
//!   and `….internal.json` (the ETag), with URL-safe unpadded base64 names; multipart
//!   uploads keep `.upload-ID.json` and `.upload_id-ID.part-N` there too, and every
//!   write goes through a temporary `.tmp.N.internal.part` in the root renamed into
//!   place (so an object is never seen half-written). A DELETE removes the object's
//!   file but leaves its (now empty) parent directories.
//!
//! So [`S3Server::object_count`] is the number of regular files under the bucket
//! directory. Clients must use path-style addressing (`http://127.0.0.1:PORT/BUCKET/KEY`):
//! the server is started without `--domain`, so virtual-hosted-style requests are not
//! understood.
//!
//! [`S3Server::stop`] stops the server (SIGTERM; `s3s-fs` only handles SIGINT, for a
//! graceful shutdown that may wait 10 s for idle keep-alive connections, so SIGTERM
//! ends it at once) by its PID and waits until it has exited; [`S3Server::start`]
//! starts it again on the same data and port, so a test can take the object store away
//! in the middle of a run and bring it back. Dropping the value stops the server the
//! same way (and removes the directory).
//!
//! The binary is `$S3S_FS` when set, else `s3s-fs` on `PATH`, else
//! `$CARGO_HOME/bin/s3s-fs` or `~/.cargo/bin/s3s-fs`. A missing binary panics with the
//! command that installs it instead of skipping the test.
//!
//! These types are for tests: they panic (with the server's log) instead of returning
//! errors.
//!
//! # Example
//!
//! ```no_run
//! use correio_testkit::s3::S3Server;
//!
//! let mut s3 = S3Server::launch();
//! // For the store under test (path-style, region e.g. us-east-1):
//! let (endpoint, bucket) = (s3.endpoint(), s3.bucket().to_string());
//! let (key, secret) = (s3.access_key().to_string(), s3.secret_key().to_string());
//! # let _ = (endpoint, bucket, key, secret);
//! assert_eq!(s3.object_count(), 0);
//! s3.stop(); // the object store is gone: reading a body must fail temporarily
//! s3.start(); // same data, same port
//! ```

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::service::Supervised;

/// The bucket [`S3Server::launch`] creates.
pub const BUCKET: &str = "correio-mail";

/// A region to sign requests for (`s3s-fs` accepts any).
pub const REGION: &str = "us-east-1";

/// The `s3s-fs` version `.ci/run` installs.
const VERSION: &str = "0.14.1";
/// How long the server may take to become ready.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How many ports to try when the chosen one was taken before the server bound it.
const PORT_TRIES: usize = 5;

/// A private `s3s-fs` server with one bucket. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct S3Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    bucket: String,
    access_key: String,
    secret_key: String,
    proc: Supervised,
}

impl S3Server {
    /// Creates the data root and the bucket [`BUCKET`] in a new temporary directory and
    /// starts the server; returns once it answers HTTP requests.
    ///
    /// # Panics
    /// When `s3s-fs` is not installed or the server does not start (with its log).
    pub fn launch() -> S3Server {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("correio-s3-")
            .tempdir()
            .expect("temporary directory");
        let mut s3 = S3Server {
            dir,
            bin,
            port: 0,
            bucket: BUCKET.to_string(),
            access_key: random_hex(10).to_uppercase(),
            secret_key: random_hex(20),
            proc: Supervised::default(),
        };
        for d in [s3.dir.path().to_path_buf(), s3.data_dir(), s3.bucket_dir()] {
            fs::create_dir_all(&d).expect("mkdir");
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        }
        for _ in 0..PORT_TRIES {
            s3.port = crate::free_port().expect("free port");
            if s3.try_start() {
                return s3;
            }
        }
        panic!(
            "s3s-fs found each of {PORT_TRIES} ports taken:\n{}",
            s3.log()
        );
    }

    /// Starts the server again (after [`S3Server::stop`]) on the same data and port;
    /// returns once it answers HTTP requests.
    ///
    /// # Panics
    /// When it is running, or does not start (the port may have been taken by another
    /// program while it was stopped).
    pub fn start(&mut self) {
        assert!(!self.proc.is_started(), "s3s-fs is already running");
        assert!(
            self.try_start(),
            "s3s-fs cannot listen on its port {} again (taken meanwhile):\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts the server on `self.port` and waits until it is ready: true when it is,
    /// false when it exited because the port was in use.
    fn try_start(&mut self) -> bool {
        // s3s-fs logs (tracing) to standard output, which `Daemon` discards: a shell
        // `exec`s it (same PID) with standard output sent to the collected stderr.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec \"$0\" \"$@\" 1>&2")
            .arg(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .current_dir(self.dir.path())
            // "server is running at …" (info) and request errors, nothing per request.
            .env("RUST_LOG", "s3s_fs=info,s3s=error")
            .env("NO_COLOR", "1");
        let server = Daemon::start(cmd);
        let port = self.port;
        let running = format!("server is running at http://127.0.0.1:{port}");
        self.proc.adopt(server, START_LIMIT, "s3s-fs", |log| {
            log.contains(&running) && answers_http(port)
        })
    }

    /// Stops the server (SIGTERM) by its PID and waits until it has exited (killing it
    /// after 10 s). Nothing listens on [`S3Server::port`] afterwards. Does nothing when
    /// it is not running.
    pub fn stop(&mut self) {
        self.proc.stop("TERM", STOP_LIMIT);
    }

    /// Is the server running (started and not stopped)?
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The TCP port on 127.0.0.1 (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The endpoint URL, `http://127.0.0.1:PORT` (path-style: objects are at
    /// `ENDPOINT/BUCKET/KEY`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket created at launch ([`BUCKET`]).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key (access key id) requests must be signed with.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key requests must be signed with.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server's root directory (buckets are its subdirectories; object metadata
    /// are `.bucket-*.json` files in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The bucket's directory: object `KEY` is the file `bucket_dir()/KEY`.
    pub fn bucket_dir(&self) -> PathBuf {
        self.data_dir().join(&self.bucket)
    }

    /// The temporary directory holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// How many objects the bucket holds: the regular files under its directory, at
    /// any depth (metadata are kept outside it, in [`S3Server::data_dir`]).
    pub fn object_count(&self) -> usize {
        count_files(&self.bucket_dir())
    }

    /// Everything the server logged, over all its starts.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Does an HTTP server on 127.0.0.1:`port` answer a request (with any status)?
fn answers_http(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    // "HTTP/1.1 403"
    got == head.len() && head.starts_with(b"HTTP/1.") && head[9..12].iter().all(u8::is_ascii_digit)
}

/// The regular files under `dir`, at any depth (0 when it does not exist).
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// `bytes` random bytes from `/dev/urandom`, in lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `s3s-fs` binary: `$S3S_FS`, else on `PATH`, else in Cargo's bin directory.
///
/// # Panics
/// When there is none, with the command that installs it.
fn binary() -> PathBuf {
    let install = format!("cargo install s3s-fs --features binary --locked --version {VERSION}");
    if let Some(p) = std::env::var_os("S3S_FS") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "S3S_FS={} is not a file: this test needs the S3 server s3s-fs ({install})",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo_home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    for dir in dirs {
        let p = dir.join("s3s-fs");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`s3s-fs` is not installed (not in $S3S_FS, on PATH, in $CARGO_HOME/bin or \
         ~/.cargo/bin): this test needs it as its S3 server ({install})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::alive;

    /// Launches, stops and starts again on the same port and data.
    #[test]
    fn launch_stop_start() {
        let mut s3 = S3Server::launch();
        assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
        assert!(s3.bucket_dir().is_dir());
        assert_eq!(s3.object_count(), 0);
        TcpStream::connect(s3.addr()).expect("s3s-fs accepts connections");
        let (port, first) = (s3.port(), s3.pid().expect("pid"));

        s3.stop();
        assert!(s3.pid().is_none() && !alive(first));
        assert!(TcpStream::connect(s3.addr()).is_err(), "still listening");

        fs::write(s3.bucket_dir().join("kept"), b"body").expect("write");
        s3.start();
        assert_eq!(s3.port(), port);
        assert!(s3.is_running() && answers_http(port));
        assert_eq!(s3.object_count(), 1);
        s3.stop();
        assert!(!s3.is_running());
    }

    /// A port taken by another program is told apart from other start failures (so
    /// `launch` tries another one).
    #[test]
    fn taken_port_is_detected() {
        let mut s3 = S3Server::launch();
        s3.stop();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free = s3.port;
        s3.port = taken.local_addr().expect("addr").port();
        assert!(!s3.try_start(), "started on a taken port:\n{}", s3.log());
        assert!(!s3.proc.is_started());
        s3.port = free;
        s3.start();
        assert!(answers_http(s3.port()));
    }
}
