//! Issue #9: a server that offers SCRAM-SHA-256 may hold no SCRAM secret for this
//! user. Against a Correio server (in this process) offering SCRAM-SHA-256, with an
//! ARGON2ID user beside a PLAIN one (so that SCRAM is offered at all), `correio fetch`
//! with `--auth auto` over TLS logs in and fetches; an explicit SCRAM-SHA-256 fails
//! with an error naming the mechanism and how to choose another.

mod fetch_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use correio_auth::{HashParams, Scheme, UserRecord, add_user, hash_password};
use correio_server::config::{Config, Overrides};
use correio_server::{Listeners, Server};
use correio_store::{DeliverOptions, MailLocation, deliver};
use fetch_support::*;

/// A Correio server on its own thread and runtime; stops when dropped.
struct InProcessServer {
    pop3: SocketAddr,
    pop3s: SocketAddr,
    cert: PathBuf,
    data: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcessServer {
    /// Starts with `toml` as the config file and `users` (name, password, scheme).
    fn start(toml: &str, users: &[(&str, &str, Scheme)]) -> InProcessServer {
        let dir = tempdir();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("mail")).unwrap();
        let cert = data.join("tls").join("cert.pem");
        let key = data.join("tls").join("key.pem");
        correio_server::tls::write_self_signed(
            &cert,
            &key,
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        for (name, password, scheme) in users {
            let secret = hash_password(
                scheme,
                password.as_bytes(),
                &HashParams::insecure_fast_for_tests(),
            )
            .unwrap();
            add_user(&data.join("users"), &UserRecord::new(name, Some(secret))).unwrap();
        }
        let overrides = Overrides {
            data_dir: Some(data.clone()),
            pop3: vec!["127.0.0.1:0".parse().unwrap()],
            pop3s: vec!["127.0.0.1:0".parse().unwrap()],
            ..Overrides::default()
        };
        let config = Config::from_toml(toml, &overrides).expect("config");
        let server = Server::new(config).expect("server");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listeners: Listeners = server.bind().await.expect("bind");
                addr_tx.send(listeners.addrs()).unwrap();
                server
                    .run(listeners, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (pop3, pop3s) = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server did not start");
        InProcessServer {
            pop3: pop3[0],
            pop3s: pop3s[0],
            cert,
            data,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn deliver(&self, user: &str, message: &[u8]) {
        let loc = MailLocation::Maildir(self.data.join("mail").join(user));
        deliver(&loc, message, &DeliverOptions::default()).unwrap();
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SCRAM-SHA-256 offered explicitly, whatever the server's default list is.
const SCRAM_OFFERED: &str =
    "hostname = \"test.invalid\"\n[pop3]\nmechanisms = [\"SCRAM-SHA-256\", \"PLAIN\", \"LOGIN\"]\n";

fn server_with_argon2id_user() -> (InProcessServer, Vec<Vec<u8>>) {
    let srv = InProcessServer::start(
        SCRAM_OFFERED,
        &[
            ("argon", "argon pass", Scheme::Argon2id),
            // A PLAIN secret allows SCRAM: with it the server offers SCRAM-SHA-256.
            ("plainuser", "plain pass", Scheme::Plain),
        ],
    );
    let msgs = corpus(5);
    for m in &msgs {
        srv.deliver("argon", m);
    }
    (srv, msgs)
}

/// Runs `correio fetch` for `user` into a fresh Maildir; returns whether it
/// succeeded, its standard error, and its work dir.
fn fetch(
    srv: &InProcessServer,
    port: u16,
    user: &str,
    pass: &str,
    extra: &[&str],
) -> (bool, String, tempfile::TempDir) {
    let work = tempdir();
    let to = format!("maildir:{}", work.path().join("M").display());
    let ca = srv.cert.to_str().unwrap();
    let out = fetch_cmd("localhost", port, user, pass, work.path(), extra)
        .args(["--ca", ca, "--to", &to])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (fetched_ok(out.status), err, work)
}

#[test]
fn auto_over_tls_logs_in_where_scram_is_offered_but_the_secret_is_argon2id() {
    let (srv, msgs) = server_with_argon2id_user();
    for (tls, port) in [
        ("implicit", srv.pop3s.port()),
        ("starttls", srv.pop3.port()),
    ] {
        let work = tempdir();
        let md = work.path().join("M");
        let to = format!("maildir:{}", md.display());
        let ca = srv.cert.to_str().unwrap();
        let v = run_json(fetch_cmd(
            "localhost",
            port,
            "argon",
            "argon pass",
            work.path(),
            &["--tls", tls, "--ca", ca, "--to", &to],
        ));
        assert_eq!(summary(&v)["fetched"], 5, "{tls}: {v}");
        assert_eq!(maildir_messages(&md), sorted(&msgs), "{tls}");
    }
}

#[test]
fn explicit_scram_for_an_argon2id_user_names_the_mechanism_and_the_flag() {
    let (srv, _) = server_with_argon2id_user();
    // The mechanism itself works where the secret allows it.
    let (ok, err, _w) = fetch(
        &srv,
        srv.pop3s.port(),
        "plainuser",
        "plain pass",
        &["--tls", "implicit", "--auth", "scram-sha-256"],
    );
    assert!(ok, "{err}");

    let (ok, err, work) = fetch(
        &srv,
        srv.pop3s.port(),
        "argon",
        "argon pass",
        &["--tls", "implicit", "--auth", "scram-sha-256"],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "login failed: SCRAM-SHA-256 authentication failed ([AUTH] Authentication failed); \
             the server may hold no SCRAM secret for this user; \
             try `--auth plain` (or `auth = \"plain\"` in the account file)"
        ),
        "{err}"
    );
    // Over TLS already: no advice to switch to TLS.
    assert!(!err.contains("over TLS"), "{err}");
    assert!(
        maildir_messages(&work.path().join("M")).is_empty(),
        "nothing stored"
    );
}

#[test]
fn auto_without_tls_prefers_scram_and_says_to_use_plain_over_tls() {
    let (srv, _) = server_with_argon2id_user();
    // Loopback allows cleartext, but without TLS auto keeps the password off the
    // wire: SCRAM-SHA-256, which this user's secret cannot do.
    let (ok, err, _w) = fetch(
        &srv,
        srv.pop3.port(),
        "argon",
        "argon pass",
        &["--tls", "none"],
    );
    assert!(!ok);
    assert!(
        err.contains("SCRAM-SHA-256 authentication failed")
            && err.contains(
                "try `--auth plain` (or `auth = \"plain\"` in the account file) over TLS"
            ),
        "{err}"
    );
    // And the advice works: PLAIN chosen by hand, here over loopback cleartext.
    let (ok, err, _w) = fetch(
        &srv,
        srv.pop3.port(),
        "argon",
        "argon pass",
        &["--tls", "none", "--auth", "plain"],
    );
    assert!(ok, "{err}");
}
