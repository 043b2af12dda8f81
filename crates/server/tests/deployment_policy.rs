//! Regression tests for issue #9's server bugs, each reproduced over the wire against a
//! real server on loopback: what is offered to whom, argument errors after login,
//! user-name folding and the default domain, the failed-login throttle (ceiling,
//! trusted networks, the address's connection slots), the pre-login limit on a slow
//! client, and reloads.

mod common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::{TestServer, TlsWire, Wire};
use correio_auth::Scheme;

fn capa(w: &mut Wire) -> String {
    w.send(b"CAPA\r\n");
    w.multiline()
}

fn sasl_line(capa: &str) -> String {
    capa.lines()
        .find(|l| l.starts_with("SASL"))
        .unwrap_or("")
        .to_owned()
}

/// Bug 1: one user with a SCRAM-SHA-256 secret (or a CRAM-MD5 one) made the server
/// offer SCRAM-SHA-256 to everyone; clients picked it and the ARGON2ID users were
/// locked out. By default only what every user can complete is offered.
#[test]
fn default_offer_is_what_every_user_can_do() {
    let srv = TestServer::builder().default_offer().start();
    srv.add_user_scheme("alice", "alice pw", Scheme::Argon2id);
    srv.add_user_scheme("bob", "bob pw", Scheme::ScramSha256);
    srv.add_user_scheme("carol", "carol pw", Scheme::CramMd5);
    let mut w = srv.connect();
    let greeting = w.line();
    assert!(!greeting.contains('<'), "no APOP timestamp: {greeting}");
    let c = capa(&mut w);
    assert_eq!(sasl_line(&c), "SASL PLAIN LOGIN", "{c}");
    w.send(b"AUTH\r\n");
    assert_eq!(
        w.multiline(),
        "+OK Methods supported\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    );
    // Every user gets in with what is offered, whatever their scheme.
    for (user, pw) in [
        ("alice", "alice pw"),
        ("bob", "bob pw"),
        ("carol", "carol pw"),
    ] {
        let mut w = srv.connect();
        w.line();
        let ir = base64_plain(user, pw);
        let r = w.cmd(&format!("AUTH PLAIN {ir}"));
        assert!(r.starts_with("+OK"), "{user}: {r}");
    }
}

/// Bug 1, the admin's side: listing SCRAM-SHA-256 and APOP offers them (to a server
/// whose users can use them).
#[test]
fn listed_mechanisms_are_offered() {
    let srv = TestServer::builder()
        .default_offer()
        .toml("[pop3]\nmechanisms = [\"SCRAM-SHA-256\", \"PLAIN\"]\napop = true")
        .start();
    srv.add_user("dave", "pw");
    let mut w = srv.connect();
    assert!(w.line().contains("<"), "APOP timestamp when listed");
    assert_eq!(sasl_line(&capa(&mut w)), "SASL SCRAM-SHA-256 PLAIN");
}

fn base64_plain(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

/// Bug 7: argument errors after login (`RETR one`, `UIDL 0`, `RETR`) closed the
/// session after 10; a client asking for what is not there goes on.
#[test]
fn argument_errors_after_login_keep_the_session() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.deliver("alice", b"Subject: x\n\nbody\n");
    let mut w = srv.connect();
    w.login("alice", "pw");
    for _ in 0..15 {
        assert_eq!(w.cmd("RETR one"), "-ERR Invalid message number\r\n");
        assert_eq!(w.cmd("UIDL 0"), "-ERR Invalid message number\r\n");
        assert_eq!(w.cmd("RETR"), "-ERR Syntax error in arguments\r\n");
        assert_eq!(w.cmd("RETR 9"), "-ERR No such message\r\n");
    }
    assert!(w.cmd("STAT").starts_with("+OK 1 "));
    // Unknown commands still count.
    for _ in 0..9 {
        assert_eq!(w.cmd("XYZZY"), "-ERR Unknown command\r\n");
    }
    assert_eq!(w.cmd("XYZZY"), "-ERR Unknown command\r\n");
    assert_eq!(w.line(), "-ERR Too many bad commands, closing\r\n");
}

/// Bug 8: `Bob` was refused for the user `bob@example.org`. With `%Lu` and a default
/// domain, case variants and bare names find the user, by every login kind.
#[test]
fn username_format_and_default_domain() {
    let srv = TestServer::builder()
        .toml("[auth]\nusername_format = \"%Lu\"\ndefault_domain = \"Example.Org\"")
        .start();
    srv.add_user("bob@example.org", "bob pw");
    srv.add_user("Legacy", "legacy pw");
    srv.deliver("bob@example.org", b"Subject: b\n\nhi\n");
    for name in ["Bob", "bob", "BOB@EXAMPLE.ORG", "bob@Example.org"] {
        let mut w = srv.connect();
        w.line();
        assert_eq!(w.cmd(&format!("USER {name}")), "+OK Send PASS\r\n");
        let r = w.cmd("PASS bob pw");
        assert!(r.starts_with("+OK Logged in, 1 "), "{name}: {r}");
        w.cmd("QUIT");
        let mut w = srv.connect();
        w.line();
        let r = w.cmd(&format!("AUTH PLAIN {}", base64_plain(name, "bob pw")));
        assert!(r.starts_with("+OK"), "{name} PLAIN: {r}");
        w.cmd("QUIT");
    }
    // A users-file name in mixed case matches any case too.
    let mut w = srv.connect();
    w.line();
    w.cmd("USER legacy");
    assert!(w.cmd("PASS legacy pw").starts_with("+OK"));
    // Without the policy, case matters (Dovecot's passwd-file default).
    let plain = TestServer::start();
    plain.add_user("bob", "pw");
    let mut w = plain.connect();
    w.line();
    w.cmd("USER Bob");
    assert!(w.cmd("PASS pw").starts_with("-ERR [AUTH]"));
}

/// A sample of the server's metrics (`name` with its suffix, e.g.
/// `correio_auth_failure_delay_seconds_sum`), 0 when absent.
fn metric(srv: &TestServer, name: &str) -> f64 {
    let text = srv.server.metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Bug 9 and trusted networks: a client on `trusted_networks` is never delayed after a
/// failed login and may log in without TLS. The delay each failure got is read from
/// the server's metrics (not guessed from how long a reply took); the same settings
/// without `trusted_networks` are shown to delay, so the check has something to miss.
#[test]
fn trusted_networks_skip_the_throttle_and_may_log_in_in_cleartext() {
    let throttle = "[auth]\nfailure_delay = \"3s\"\nfailure_delay_max = \"3s\"";
    let srv = TestServer::builder()
        .loopback_untrusted()
        .config_throttle()
        .toml(&format!(
            "trusted_networks = [\"127.0.0.0/8\", \"::1\"]\n{throttle}"
        ))
        .start();
    srv.add_user("alice", "pw");
    let mut w = srv.connect();
    w.line();
    for _ in 0..2 {
        w.cmd("USER alice");
        assert_eq!(w.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    }
    assert_eq!(
        metric(&srv, "correio_auth_failure_delay_seconds_count"),
        2.0,
        "both failures counted"
    );
    assert_eq!(
        metric(&srv, "correio_auth_failure_delay_seconds_sum"),
        0.0,
        "a trusted client was delayed"
    );
    w.cmd("USER alice");
    assert!(w.cmd("PASS pw").starts_with("+OK Logged in"));

    // The same throttle for an untrusted client: the first failure waits 3 s (seen
    // in the metrics as soon as the connection waits; no need to wait it out).
    let untrusted = TestServer::builder()
        .config_throttle()
        .toml(throttle)
        .start();
    untrusted.add_user("alice", "pw");
    let mut w = untrusted.connect();
    w.line();
    w.cmd("USER alice");
    w.send(b"PASS wrong\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&untrusted, "correio_auth_failure_delay_seconds_count") < 1.0 {
        assert!(Instant::now() < deadline, "the failure was never counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        metric(&untrusted, "correio_auth_failure_delay_seconds_sum"),
        3.0,
        "an untrusted client must wait out the configured delay"
    );
    assert_eq!(w.line(), "-ERR [AUTH] Authentication failed\r\n");
}

/// Bug 9: the ceiling is configurable and bounds the delay, whatever the score.
#[test]
fn failure_delay_ceiling_bounds_the_wait() {
    let srv = TestServer::builder()
        .config_throttle()
        .toml("[auth]\nfailure_delay = \"50ms\"\nfailure_delay_max = \"200ms\"\n[limits]\nmax_auth_failures = 50")
        .start();
    srv.add_user("alice", "pw");
    let mut w = srv.connect();
    w.line();
    // Twenty failures: uncapped, 50 ms × 2^19 would be hours; the test's 10 s read
    // timeout fails it if the ceiling does not hold.
    for _ in 0..20 {
        w.cmd("USER alice");
        assert_eq!(w.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    }
    // The default ceiling is below common client timeouts (poplib: 10 s and more).
    let c = correio_server::config::Config::from_toml("", &Default::default()).unwrap();
    assert!(c.throttle.failure_delay_max <= Duration::from_secs(5));
}

/// Bug 10: one byte a second with no line end kept a connection past
/// `pre_login_idle`; the limit bounds the time to a whole command.
#[test]
fn a_slow_drip_before_login_is_cut_at_the_idle_limit() {
    let srv = TestServer::builder()
        .toml("[limits]\npre_login_idle = \"2s\"")
        .start();
    let mut w = srv.connect();
    w.line();
    let started = Instant::now();
    let mut closed = false;
    // Never more than 12 s: far past the 2 s limit.
    while started.elapsed() < Duration::from_secs(12) {
        if w.stream.write_all(b"C").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        w.stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut b = [0u8; 256];
        match w.stream.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                // The autologout reply: the close follows.
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    // A client that sends whole commands in time is not affected.
    let mut w = srv.connect();
    w.line();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        assert!(w.cmd("NOOP").starts_with("-ERR"), "still served");
    }
}

/// Bug 11: connections parked in a failed-login delay filled the address's connection
/// limit, locking out every other user behind it. They no longer count against it.
#[test]
fn a_failing_neighbour_does_not_lock_out_the_address() {
    let srv = TestServer::builder()
        .config_throttle()
        .toml("[auth]\nfailure_delay = \"4s\"\nfailure_delay_max = \"4s\"\n[limits]\nmax_connections_per_ip = 3")
        .start();
    srv.add_user("alice", "alice pw");
    srv.add_user("mallory", "x");
    // Three connections from this address fail a password and wait out the delay.
    let mut attackers: Vec<Wire> = (0..3)
        .map(|_| {
            let mut w = srv.connect();
            w.line();
            w.cmd("USER mallory");
            w.send(b"PASS guess\r\n");
            w
        })
        .collect();
    // Wait until all three wait out their delay (their replies are 4 s away): the
    // server counts a delay once the connection is in the address's waiting room.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !srv
        .server
        .metrics()
        .encode()
        .contains("correio_auth_failure_delay_seconds_count 3")
    {
        assert!(
            Instant::now() < deadline,
            "the failures never reached the delay"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Another user behind the same address still gets in, at once.
    let mut w = srv.connect();
    let g = w.line();
    assert!(g.starts_with("+OK"), "refused while others wait: {g}");
    w.cmd("USER alice");
    assert!(w.cmd("PASS alice pw").starts_with("+OK Logged in"));
    drop(w);
    // The waiting room is bounded too: a fourth failing connection does not wait, it
    // gets its answer and is closed.
    let mut extra = srv.connect();
    extra.line();
    extra.cmd("USER mallory");
    assert_eq!(
        extra.cmd("PASS guess"),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert!(extra.closed(), "closed when the waiting room is full");
    for a in &mut attackers {
        assert_eq!(a.line(), "-ERR [AUTH] Authentication failed\r\n");
    }
}

/// Bug 6: SIGHUP (here `Server::reload`) applies a new users file path, `expire`,
/// mechanisms and limits to new connections; an unreadable users file changes nothing.
#[test]
fn reload_applies_everything_and_keeps_the_old_on_error() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut old = srv.connect();
    old.line();
    let before = capa(&mut old);
    assert!(!before.contains("EXPIRE"), "{before}");

    let mut c = srv.server.config();
    c.expire = Some(correio_proto::capa::ExpirePolicy::Days(0));
    c.mechanisms = vec!["PLAIN".into()];
    let other_users = srv.data.join("users2");
    std::fs::write(&other_users, "zoe:{PLAIN}zoe pw\n").unwrap();
    c.users_file = other_users;
    c.limits.max_connections = 7;
    let r = srv.server.reload(c).expect("reload");
    let keys: Vec<&str> = r.changed.iter().map(|(k, _, _)| k.as_str()).collect();
    assert!(
        keys.contains(&"pop3.expire") && keys.contains(&"users_file"),
        "{keys:?}"
    );
    assert_eq!(r.needs_restart, vec!["limits.max_connections"]);
    assert!(r.tls.is_ok());

    let mut w = srv.connect();
    w.line();
    let after = capa(&mut w);
    assert!(after.contains("EXPIRE 0"), "{after}");
    assert_eq!(sasl_line(&after), "SASL PLAIN");
    w.cmd("USER zoe");
    assert!(w.cmd("PASS zoe pw").starts_with("+OK Logged in"));
    // The session that started before keeps its rules.
    assert_eq!(capa(&mut old), before);

    // A users file that cannot be read: nothing changes.
    let mut bad = srv.server.config();
    bad.users_file = srv.data.join("missing-dir/users");
    std::fs::create_dir_all(srv.data.join("unreadable")).unwrap();
    bad.users_file = srv.data.join("unreadable"); // a directory: cannot be read
    bad.expire = None;
    assert!(srv.server.reload(bad).is_err());
    let mut w = srv.connect();
    w.line();
    assert!(capa(&mut w).contains("EXPIRE 0"));

    // TLS still works over the implicit port after the reloads.
    let mut t = TlsWire::connect(srv.pop3s, &srv.cert_pem);
    assert!(t.line().starts_with("+OK"));
}
