//! EXPIRE n (n > 0 days) and LOGIN-DELAY n at the wire, against a real server on
//! loopback: what CAPA announces is what the server does.
//!
//! EXPIRE: the first RETR of a message is recorded at the QUIT of that session; a
//! message is removed at the first QUIT (UPDATE) at least n days later — never at a
//! session that ends without QUIT, never for a message only read with TOP. The clock is
//! not faked: the test moves the recorded date into the past through the store's API
//! while no session is open, exactly as days passing would.
//!
//! LOGIN-DELAY: the last login is kept beside the maildrop, so a restarted server on
//! the same data dir still refuses a login that comes too soon.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestServer, Wire};
use correio_server::config::{Config, Overrides};
use correio_server::{Listeners, Server};
use correio_store::expiry::{read_retrievals, write_retrievals};
use correio_store::{DeliverOptions, MailLocation, deliver};

const MSGS: [&[u8]; 3] = [
    b"Subject: one\n\nfirst\n",
    b"Subject: two\n\nsecond\n",
    b"Subject: three\n\nthird\n",
];
const DAY: u64 = 86_400;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Logs in and returns the UIDL listing, in message order.
fn uidls(w: &mut Wire) -> Vec<String> {
    w.send(b"UIDL\r\n");
    let text = w.multiline();
    text.lines()
        .skip(1)
        .take_while(|l| *l != ".")
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect()
}

fn retr(w: &mut Wire, n: u32) {
    w.send(format!("RETR {n}\r\n").as_bytes());
    w.multiline();
}

fn session_quit(srv: &TestServer) -> Vec<String> {
    let mut w = srv.connect();
    w.login("alice", "pw");
    let list = uidls(&mut w);
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    list
}

#[test]
fn expire_n_days_removes_a_retrieved_message_at_the_first_quit_it_is_due() {
    let srv = TestServer::builder().toml("[pop3]\nexpire = 2").start();
    srv.add_user("alice", "pw");
    for m in MSGS {
        srv.deliver("alice", m);
    }
    let loc = MailLocation::Maildir(srv.maildir("alice"));

    // Session 1: CAPA announces EXPIRE 2; RETR 1, TOP 2 (whole message), QUIT.
    let mut w = srv.connect();
    w.login("alice", "pw");
    w.send(b"CAPA\r\n");
    let capa = w.multiline();
    assert!(capa.contains("\r\nEXPIRE 2\r\n"), "{capa}");
    let all = uidls(&mut w);
    assert_eq!(all.len(), 3);
    let before = now_secs();
    retr(&mut w, 1);
    w.send(b"TOP 2 1000\r\n");
    w.multiline();
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    let dates = read_retrievals(&loc).unwrap();
    assert_eq!(
        dates.keys().collect::<Vec<_>>(),
        vec![&all[0]],
        "TOP is not a retrieval"
    );
    assert!((before..=now_secs()).contains(&dates[&all[0]]));

    // Not due yet: a QUIT removes nothing.
    assert_eq!(session_quit(&srv), all);

    // Two days and a minute pass (the recorded date moves back; no session is open).
    let past = now_secs() - 2 * DAY - 60;
    write_retrievals(&loc, &BTreeMap::from([(all[0].clone(), past)])).unwrap();

    // A session that ends without QUIT deletes nothing, even though message 1 is due.
    let mut w = srv.connect();
    w.login("alice", "pw");
    assert_eq!(uidls(&mut w), all);
    drop(w);
    // The next session can only start once that one has released the maildrop.
    let mut w = loop_until_logged_in(&srv);
    assert_eq!(uidls(&mut w), all, "dropped connection removed something");
    // This QUIT is an UPDATE at which message 1 is due: it goes.
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert_eq!(
        session_quit(&srv),
        vec![all[1].clone(), all[2].clone()],
        "expired message still listed"
    );
    assert!(
        read_retrievals(&loc).unwrap().is_empty(),
        "date of a removed message kept"
    );
}

/// Logs in, retrying while the previous connection's session still holds the lock.
fn loop_until_logged_in(srv: &TestServer) -> Wire {
    for _ in 0..100 {
        let mut w = srv.connect();
        w.line();
        w.cmd("USER alice");
        let r = w.cmd("PASS pw");
        if r.starts_with("+OK") {
            return w;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("maildrop never released");
}

#[test]
fn expire_never_and_unretrieved_messages_stay() {
    let srv = TestServer::builder()
        .toml("[pop3]\nexpire = \"never\"")
        .start();
    srv.add_user("alice", "pw");
    srv.deliver("alice", MSGS[0]);
    let mut w = srv.connect();
    w.login("alice", "pw");
    w.send(b"CAPA\r\n");
    assert!(w.multiline().contains("\r\nEXPIRE NEVER\r\n"));
    retr(&mut w, 1);
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert_eq!(session_quit(&srv).len(), 1);
    let loc = MailLocation::Maildir(srv.maildir("alice"));
    assert!(
        read_retrievals(&loc).unwrap().is_empty(),
        "NEVER keeps no dates"
    );
}

/// A server of our own on `data`, so a second one can start on the same data dir.
struct OwnServer {
    pop3: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnServer {
    fn start(data: &Path, toml: &str) -> OwnServer {
        let overrides = Overrides {
            data_dir: Some(data.to_path_buf()),
            pop3: vec!["127.0.0.1:0".parse().unwrap()],
            pop3s: vec![],
            ..Overrides::default()
        };
        let text = format!("hostname = \"test.invalid\"\n{toml}\n");
        let config = Config::from_toml(&text, &overrides).unwrap();
        let server = Server::new(config).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listeners: Listeners = server.bind().await.unwrap();
                addr_tx.send(listeners.addrs()).unwrap();
                server
                    .run(listeners, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (pop3, _) = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        OwnServer {
            pop3: pop3[0],
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("mail")).unwrap();
    correio_server::tls::write_self_signed(
        &data.join("tls").join("cert.pem"),
        &data.join("tls").join("key.pem"),
        &["localhost".into()],
    )
    .unwrap();
    for user in ["alice", "bob"] {
        let secret = correio_auth::hash_password(
            &correio_auth::Scheme::Plain,
            format!("pw-{user}").as_bytes(),
            &correio_auth::HashParams::insecure_fast_for_tests(),
        )
        .unwrap();
        let rec = correio_auth::UserRecord::new(user, Some(secret));
        correio_auth::add_user(&data.join("users"), &rec).unwrap();
    }
    data
}

#[test]
fn login_delay_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    deliver(
        &MailLocation::Maildir(data.join("mail").join("alice")),
        MSGS[0],
        &DeliverOptions::default(),
    )
    .unwrap();
    let toml = "[pop3]\nlogin_delay = \"1h\"";
    {
        let srv = OwnServer::start(&data, toml);
        let mut w = Wire::connect(srv.pop3);
        w.send(b"CAPA\r\n");
        w.line();
        assert!(w.multiline().contains("\r\nLOGIN-DELAY 3600\r\n"));
        w.cmd("USER alice");
        assert!(w.cmd("PASS pw-alice").starts_with("+OK Logged in"));
        assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    }
    // A new process-lifetime: nothing in memory remembers alice.
    let srv = OwnServer::start(&data, toml);
    let mut w = Wire::connect(srv.pop3);
    w.line();
    assert_eq!(w.cmd("USER alice"), "+OK Send PASS\r\n");
    assert_eq!(
        w.cmd("PASS pw-alice"),
        "-ERR [LOGIN-DELAY] Logged in too recently; try again later\r\n"
    );
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    // Per maildrop: bob has not logged in, and is let in.
    let mut w = Wire::connect(srv.pop3);
    w.line();
    w.cmd("USER bob");
    assert!(w.cmd("PASS pw-bob").starts_with("+OK Logged in"));
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    drop(srv);

    // Without LOGIN-DELAY configured, the recorded time is not consulted.
    let srv = OwnServer::start(&data, "");
    let mut w = Wire::connect(srv.pop3);
    w.login("alice", "pw-alice");
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
}
