//! Timeouts and shutdown with tokio's paused clock: the server and the test client run
//! in one runtime whose time only moves when everything is idle, so a 10-minute
//! autologout is tested in milliseconds.

use std::path::Path;
use std::time::Duration;

use correio_auth::{HashParams, Scheme, ThrottleConfig, UserRecord, add_user, hash_password};
use correio_server::Server;
use correio_server::config::{Config, Overrides};
use correio_store::{DeliverOptions, MailLocation, deliver};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct Fixture {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(toml: &str, messages: &[&[u8]]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let secret = hash_password(
        &Scheme::Plain,
        b"pw",
        &HashParams::insecure_fast_for_tests(),
    )
    .unwrap();
    add_user(&data.join("users"), &UserRecord::new("alice", Some(secret))).unwrap();
    for m in messages {
        deliver(
            &MailLocation::Maildir(data.join("mail").join("alice")),
            *m,
            &DeliverOptions::default(),
        )
        .unwrap();
    }
    let o = Overrides {
        data_dir: Some(data.clone()),
        pop3: vec!["127.0.0.1:0".parse().unwrap()],
        ..Overrides::default()
    };
    let config = Config::from_toml(&format!("hostname = \"t.invalid\"\n{toml}"), &o).unwrap();
    let throttle = ThrottleConfig {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        ..ThrottleConfig::default()
    };
    let server = Server::with_throttle(config, throttle).unwrap();
    let listeners = server.bind().await.unwrap();
    let addr = listeners.addrs().0[0];
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(listeners, async {
                let _ = rx.await;
            })
            .await;
    });
    Fixture {
        _dir: dir,
        data,
        addr,
        stop: Some(stop),
        task,
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8(l).unwrap();
            }
            let mut tmp = [0u8; 4096];
            let n = self.s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "closed");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn cmd(&mut self, c: &str) -> String {
        self.s
            .write_all(format!("{c}\r\n").as_bytes())
            .await
            .unwrap();
        self.line().await
    }

    async fn login(&mut self) -> String {
        assert!(self.line().await.starts_with("+OK"));
        assert_eq!(self.cmd("USER alice").await, "+OK Send PASS\r\n");
        self.cmd("PASS pw").await
    }

    async fn eof(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            match self.s.read(&mut tmp).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return true,
            }
        }
    }
}

fn count_messages(data: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(data.join("mail").join("alice").join(d))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn post_login_autologout_after_ten_minutes_without_update() {
    let f = start("", &[b"Subject: a\n\nx\n"]).await;
    let mut c = Client::connect(f.addr).await;
    assert!(c.login().await.starts_with("+OK Logged in, 1 messages"));
    assert_eq!(c.cmd("DELE 1").await, "+OK Message 1 deleted\r\n");
    // Still alive after 9 minutes of silence...
    tokio::time::sleep(Duration::from_secs(540)).await;
    assert_eq!(c.cmd("NOOP").await, "+OK\r\n");
    // ...closed after 10 minutes more, and the DELE was not committed.
    let t = tokio::time::Instant::now();
    assert_eq!(c.line().await, "-ERR Autologout; idle for too long\r\n");
    assert!(t.elapsed() >= Duration::from_secs(600));
    assert!(c.eof().await);
    assert_eq!(count_messages(&f.data), 1);
    // The lock was released: a new session sees the message.
    let mut c = Client::connect(f.addr).await;
    assert!(c.login().await.starts_with("+OK Logged in, 1 messages"));
}

#[tokio::test(start_paused = true)]
async fn pre_login_idle_default_is_one_minute() {
    let f = start("", &[]).await;
    let mut c = Client::connect(f.addr).await;
    c.line().await;
    let t = tokio::time::Instant::now();
    assert_eq!(c.line().await, "-ERR Autologout; idle for too long\r\n");
    assert!(t.elapsed() >= Duration::from_secs(60) && t.elapsed() < Duration::from_secs(61));
    assert!(c.eof().await);
}

#[tokio::test(start_paused = true)]
async fn write_stall_drops_a_client_that_stops_reading() {
    let mut big = Vec::new();
    while big.len() < 16 << 20 {
        big.extend_from_slice(&[b'x'; 99]);
        big.push(b'\n');
    }
    let f = start("[limits]\nwrite_stall = \"20s\"", &[&big]).await;
    let mut c = Client::connect(f.addr).await;
    assert!(c.login().await.starts_with("+OK"));
    c.s.write_all(b"RETR 1\r\n").await.unwrap();
    // Never read. After the stall limit the server gives up and releases the lock.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let mut c2 = Client::connect(f.addr).await;
    assert!(
        c2.login().await.starts_with("+OK Logged in, 1 messages"),
        "lock not released"
    );
    drop(c);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_lets_sessions_finish_then_closes_without_update() {
    let mut f = start(
        "[limits]\nshutdown_grace = \"30s\"",
        &[b"Subject: a\n\nx\n", b"Subject: b\n\ny\n"],
    )
    .await;
    let mut a = Client::connect(f.addr).await;
    assert!(a.login().await.starts_with("+OK"));
    assert_eq!(a.cmd("DELE 1").await, "+OK Message 1 deleted\r\n");
    let mut b = Client::connect(f.addr).await;
    b.line().await;
    f.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // No new connections.
    assert!(TcpStream::connect(f.addr).await.is_err());
    // Running sessions still work during the grace period.
    assert_eq!(a.cmd("NOOP").await, "+OK\r\n");
    // B quits cleanly inside the grace period.
    assert_eq!(
        b.cmd("QUIT").await,
        "+OK Correio POP3 server signing off\r\n"
    );
    // After the grace period A is told and closed; its DELE is not committed.
    assert_eq!(
        a.line().await,
        "-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n"
    );
    assert!(a.eof().await);
    tokio::time::timeout(Duration::from_secs(120), f.task)
        .await
        .expect("server did not stop")
        .unwrap();
    assert_eq!(count_messages(&f.data), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_when_sessions_are_done() {
    let mut f = start("[limits]\nshutdown_grace = \"30s\"", &[]).await;
    let mut a = Client::connect(f.addr).await;
    a.line().await;
    assert_eq!(
        a.cmd("QUIT").await,
        "+OK Correio POP3 server signing off\r\n"
    );
    assert!(a.eof().await);
    let t = tokio::time::Instant::now();
    f.stop.take().unwrap().send(()).unwrap();
    f.task.await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
}
