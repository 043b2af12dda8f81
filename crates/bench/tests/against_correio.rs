//! `correio-bench` against a real Correio server (in-process, loopback) and against the
//! canned server: every scenario completes with exact counts and no errors.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use correio_bench::{Credential, Scenario, Settings, Target, TlsMode};
use correio_server::config::{Config, Overrides};
use correio_server::lmtp::{LmtpContext, LmtpListener, run_lmtp};
use correio_server::{LmtpAddr, Server};

const USERS: usize = 4;
const MESSAGES: usize = 30;

struct Fixture {
    pop3: SocketAddr,
    pop3s: SocketAddr,
    lmtp: SocketAddr,
    cert: PathBuf,
    data: PathBuf,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

/// Message `i` of the maildrops: mostly a few KiB; every 10th is around 100-300 KiB,
/// so both the small-message and the large-message RETR paths of the server run, in
/// the same pipelined batch.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!("Subject: m{i}\n\n").into_bytes();
    let lines = if i % 10 == 3 { 2000 * (1 + i % 3) } else { 40 };
    for l in 0..lines {
        // Every 7th line starts with a dot: the server stuffs it, the reader must cope.
        if l % 7 == 0 {
            m.extend_from_slice(b".");
        }
        m.extend_from_slice(
            format!("line {l} of message {i} padding padding padding\n").as_bytes(),
        );
    }
    m
}

fn write_maildir(root: &Path, user: &str) {
    for s in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(user).join(s)).unwrap();
    }
    for i in 0..MESSAGES {
        fs::write(
            root.join(user)
                .join("cur")
                .join(format!("{}.M{i}.bench:2,S", 1_700_000_000 + i)),
            message(i),
        )
        .unwrap();
    }
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mail = data.join("mail");
    fs::create_dir_all(&mail).unwrap();
    let mut users = String::new();
    for u in 0..USERS {
        users.push_str(&format!("u{u}:{{PLAIN}}pw{u}\n"));
        write_maildir(&mail, &format!("u{u}"));
    }
    fs::write(data.join("users"), users).unwrap();
    let cert = data.join("tls").join("cert.pem");
    let key = data.join("tls").join("key.pem");
    correio_server::tls::write_self_signed(&cert, &key, &["localhost".into()]).unwrap();
    let overrides = Overrides {
        data_dir: Some(data.clone()),
        pop3: vec!["127.0.0.1:0".parse().unwrap()],
        pop3s: vec!["127.0.0.1:0".parse().unwrap()],
        ..Overrides::default()
    };
    let config = Config::from_toml("hostname = \"bench.test\"\n", &overrides).unwrap();
    let server = Server::new(config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (pop3, pop3s, lmtp) = rt.block_on(async {
        let listeners = server.bind().await.unwrap();
        let (p, s) = listeners.addrs();
        let lmtp_listener = LmtpListener::bind(&LmtpAddr::Tcp("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let lmtp = lmtp_listener.local_tcp_addr().unwrap();
        let ctx = Arc::new(LmtpContext::new(
            server.users(),
            format!("maildir:{}/%u", mail.display()),
        ));
        let mut rx = stop_rx.clone();
        tokio::spawn(run_lmtp(lmtp_listener, ctx, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let srv = server.clone();
        let mut rx = stop_rx;
        tokio::spawn(async move {
            srv.run(listeners, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
        });
        (p[0], s[0], lmtp)
    });
    Fixture {
        pop3,
        pop3s,
        lmtp,
        cert,
        data,
        rt,
        stop: Some(stop),
        _dir: dir,
    }
}

fn settings(addr: SocketAddr, tls: TlsMode, scenario: Scenario, count: u64) -> Settings {
    Settings {
        target: Target {
            addr,
            tls,
            connector: None,
            server_name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            io_timeout: Duration::from_secs(10),
        },
        users: (0..USERS)
            .map(|u| Credential::parse(&format!("u{u}:pw{u}")).unwrap())
            .collect(),
        scenario,
        concurrency: USERS,
        count: Some(count),
        duration: Duration::from_secs(30),
        server_pids: vec![std::process::id()],
        label: "test".into(),
    }
}

fn assert_clean(r: &correio_bench::Report) {
    assert_eq!(r.errors, 0, "errors: {:?}", r.error_samples);
    assert_eq!(r.sessions_failed, 0);
}

/// Expected wire bytes of one stored message: LF → CRLF, leading dots doubled.
fn wire_len(i: usize) -> u64 {
    let m = message(i);
    let lines = m.iter().filter(|b| **b == b'\n').count() as u64;
    let dots = m
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count() as u64;
    m.len() as u64 + lines + dots
}

#[test]
fn download_pipelined_and_not_counts_every_byte() {
    let f = start();
    let per_session: u64 = (0..MESSAGES).map(wire_len).sum();
    for pipeline in [true, false] {
        let s = settings(
            f.pop3,
            TlsMode::None,
            Scenario::Download {
                pipeline,
                window: 8,
            },
            8,
        );
        let r = f.rt.block_on(correio_bench::run(s)).unwrap();
        assert_clean(&r);
        assert_eq!(r.sessions, 8);
        assert_eq!(r.messages, 8 * MESSAGES as u64);
        assert_eq!(r.bytes, 8 * per_session, "pipeline {pipeline}");
        assert!(r.op_latency.as_ref().unwrap().count == r.messages);
        let usage = r.server.as_ref().unwrap();
        assert!(usage.cpu_us_per_message.is_some());
    }
}

#[test]
fn download_over_implicit_tls_and_stls_with_the_servers_ca() {
    let f = start();
    let connector =
        correio_client::tls::connector(&correio_client::tls::Trust::ExtraCa(f.cert.clone()))
            .unwrap();
    for (addr, tls) in [(f.pop3s, TlsMode::Implicit), (f.pop3, TlsMode::Starttls)] {
        let mut s = settings(
            addr,
            tls,
            Scenario::Download {
                pipeline: true,
                window: 4,
            },
            4,
        );
        s.target.connector = Some(connector.clone());
        let r = f.rt.block_on(correio_bench::run(s)).unwrap();
        assert_clean(&r);
        assert_eq!(r.messages, 4 * MESSAGES as u64);
    }
    // Without a trusted certificate every session fails, and says why.
    let mut s = settings(f.pop3s, TlsMode::Implicit, Scenario::LoginStorm, 2);
    s.target.connector =
        Some(correio_client::tls::connector(&correio_client::tls::Trust::System).unwrap());
    let r = f.rt.block_on(correio_bench::run(s)).unwrap();
    assert_eq!(r.sessions, 0);
    assert_eq!(r.sessions_failed, 2);
    assert!(
        r.error_samples[0].contains("TLS handshake"),
        "{:?}",
        r.error_samples
    );
}

#[test]
fn open_and_login_storm_and_wrong_password() {
    let f = start();
    let r =
        f.rt.block_on(correio_bench::run(settings(
            f.pop3,
            TlsMode::None,
            Scenario::Open,
            6,
        )))
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.sessions, 6);
    assert_eq!(r.op_latency.as_ref().unwrap().count, 6);
    let r =
        f.rt.block_on(correio_bench::run(settings(
            f.pop3,
            TlsMode::None,
            Scenario::LoginStorm,
            20,
        )))
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.sessions, 20);
    assert_eq!(r.login_latency.as_ref().unwrap().count, 20);
    let mut s = settings(f.pop3, TlsMode::None, Scenario::LoginStorm, 1);
    s.users = vec![Credential::parse("u0:wrong").unwrap()];
    s.concurrency = 1;
    let r = f.rt.block_on(correio_bench::run(s)).unwrap();
    assert_eq!((r.sessions, r.sessions_failed, r.errors), (0, 1, 1));
    assert!(
        r.error_samples[0].contains("PASS refused"),
        "{:?}",
        r.error_samples
    );
}

#[test]
fn mixed_deletes_and_delivers_keeping_mailboxes_level() {
    let f = start();
    let s = settings(
        f.pop3,
        TlsMode::None,
        Scenario::Mixed {
            lmtp: f.lmtp,
            batch: 3,
            message_size: 2000,
            domain: "bench.test".into(),
        },
        8,
    );
    let r = f.rt.block_on(correio_bench::run(s)).unwrap();
    assert_clean(&r);
    assert_eq!(r.sessions, 8);
    assert_eq!(r.messages, 24);
    assert_eq!(r.deliveries, 24);
    // Each session deleted 3 and delivered 3: every mailbox holds what it held.
    for u in 0..USERS {
        let dir = f.data.join("mail").join(format!("u{u}"));
        let n = fs::read_dir(dir.join("cur")).unwrap().count()
            + fs::read_dir(dir.join("new")).unwrap().count();
        assert_eq!(n, MESSAGES, "u{u}");
    }
}

#[test]
fn idle_holds_sessions_and_measures_rss() {
    let f = start();
    let mut s = settings(
        f.pop3,
        TlsMode::None,
        Scenario::Idle {
            noop_every: Duration::from_millis(200),
            ramp: 2,
        },
        1,
    );
    s.duration = Duration::from_secs(2);
    let r = f.rt.block_on(correio_bench::run(s)).unwrap();
    assert_clean(&r);
    assert_eq!(r.held, Some(USERS as u64));
    assert_eq!(r.sessions, USERS as u64);
    assert!(r.op_latency.as_ref().unwrap().count >= USERS as u64 * 5);
    let u = r.server.unwrap();
    assert!(u.rss_kib > 0 && u.rss_kib_per_session.is_some());
}

#[test]
fn bad_settings_are_refused() {
    let mut s = settings(
        "127.0.0.1:9".parse().unwrap(),
        TlsMode::None,
        Scenario::Open,
        1,
    );
    s.concurrency = USERS + 1;
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(correio_bench::run(s.clone())).is_err());
    s.concurrency = 1;
    s.target.tls = TlsMode::Implicit;
    assert!(rt.block_on(correio_bench::run(s)).is_err());
    assert!(Credential::parse("nocolon").is_err());
    assert!(Credential::parse(":pw").is_err());
    assert_eq!(Credential::parse("a:b:c").unwrap().pass, "b:c");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-users");
    let e = Credential::read_file(&missing).unwrap_err().to_string();
    assert!(e.contains("no-such-users"), "{e}");
    let file = dir.path().join("users");
    fs::write(&file, "# bench users\na:1\n\nb:2:3\r\nbroken\n").unwrap();
    let e = Credential::read_file(&file).unwrap_err().to_string();
    assert!(e.contains("line 5"), "{e}");
    fs::write(&file, "# bench users\na:1\n\nb:2:3\r\n").unwrap();
    let users = Credential::read_file(&file).unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        (users[1].user.as_str(), users[1].pass.as_str()),
        ("b", "2:3")
    );
}

#[test]
fn a_dead_server_gives_errors_not_a_hang() {
    // A port nothing listens on: every session fails quickly, the run ends at the count.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = settings(port, TlsMode::None, Scenario::LoginStorm, 10);
    let r = rt.block_on(correio_bench::run(s)).unwrap();
    assert_eq!(r.sessions, 0);
    assert_eq!(r.sessions_failed, 10);
}

#[test]
fn self_test_and_loopback_report_exact_volumes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(correio_bench::self_test(
            3,
            50,
            4096,
            Some(6),
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.sessions, 6);
    assert_eq!(r.messages, 300);
    assert_eq!(r.bytes % 300, 0);
    assert!(r.bytes / 300 >= 4096);
    let l = rt
        .block_on(correio_bench::loopback(
            10_000_001,
            3,
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_eq!(l.bytes, 10_000_001);
}
