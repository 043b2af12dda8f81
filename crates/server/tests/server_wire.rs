//! Wire-level tests against a real server on 127.0.0.1: exact bytes in, exact bytes out,
//! one test per PROTOCOL.md item, bad input included.

mod common;

use rustls::pki_types::pem::PemObject as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{TestServer, TlsWire, Wire};

/// A message as stored (LF ends, a line starting with a dot, no CR).
const MSG1: &[u8] = b"From: a@example.org\nSubject: one\n\n.hidden dot line\nsecond\n";
/// Its wire form after "+OK": CRLF, stuffed, terminated.
const MSG1_WIRE: &str =
    "From: a@example.org\r\nSubject: one\r\n\r\n..hidden dot line\r\nsecond\r\n.\r\n";
/// RFC 1939 size of MSG1: CRLF octets, unstuffed, without the terminator.
const MSG1_SIZE: usize = 63;
const MSG2: &[u8] = b"Subject: two\n\nb1\nb2\nb3\n";
const MSG2_SIZE: usize = 28;

fn server_with_mail() -> TestServer {
    let srv = TestServer::start();
    srv.add_user("alice", "secret pw");
    srv.deliver("alice", MSG1);
    srv.deliver("alice", MSG2);
    srv
}

#[test]
fn sizes_are_what_retr_sends() {
    assert_eq!(
        MSG1_SIZE,
        MSG1.len() + MSG1.iter().filter(|&&b| b == b'\n').count()
    );
    assert_eq!(
        MSG2_SIZE,
        MSG2.len() + MSG2.iter().filter(|&&b| b == b'\n').count()
    );
}

#[test]
fn cram_scram_apop_offered_only_when_some_secret_allows_them() {
    let srv = TestServer::start();
    srv.add_user_scheme("alice", "secret pw", correio_auth::Scheme::Sha512Crypt);
    let mut w = srv.connect();
    // No secret allows APOP either: no timestamp in the greeting.
    assert_eq!(w.line(), "+OK Correio POP3 server ready\r\n");
    w.send(b"CAPA\r\n");
    let capa = w.multiline();
    assert!(capa.contains("SASL PLAIN LOGIN\r\n"), "{capa}");
    assert_eq!(
        w.cmd("AUTH CRAM-MD5"),
        "-ERR Unsupported authentication mechanism\r\n"
    );
    w.send(b"AUTH\r\n");
    assert_eq!(
        w.multiline(),
        "+OK Methods supported\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    );
    // A hashed secret still logs in with USER/PASS and PLAIN.
    w.cmd("USER alice");
    assert!(w.cmd("PASS secret pw").starts_with("+OK Logged in"));
}

#[test]
fn greeting_has_fresh_apop_timestamp() {
    let srv = TestServer::start();
    srv.add_user("alice", "secret pw");
    let mut a = srv.connect();
    let mut b = srv.connect();
    let (ga, gb) = (a.line(), b.line());
    assert!(ga.starts_with("+OK Correio POP3 server ready <"), "{ga}");
    assert!(ga.ends_with("@test.invalid>\r\n"), "{ga}");
    assert_ne!(ga, gb, "timestamps must never repeat");
}

#[test]
fn capa_lists_what_is_offered_on_this_connection() {
    let srv = TestServer::start();
    // A PLAIN secret allows CRAM-MD5 and SCRAM-SHA-256 too.
    srv.add_user("alice", "secret pw");
    let mut w = srv.connect();
    w.line();
    w.send(b"CAPA\r\n");
    let capa = w.multiline();
    for tag in [
        "STLS\r\n",
        "USER\r\n",
        "SASL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN\r\n",
        "TOP\r\n",
        "UIDL\r\n",
        "RESP-CODES\r\n",
        "AUTH-RESP-CODE\r\n",
        "PIPELINING\r\n",
        "UTF8\r\n",
        "IMPLEMENTATION Correio",
    ] {
        assert!(capa.contains(tag), "{tag} missing in {capa}");
    }
    // Implicit TLS: no STLS.
    let mut t = TlsWire::connect(srv.pop3s, &srv.cert_pem);
    t.line();
    t.send(b"CAPA\r\n");
    let capa = t.multiline();
    assert!(
        !capa.contains("STLS") && capa.contains("USER\r\n"),
        "{capa}"
    );
}

#[test]
fn full_session_exact_bytes() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    w.send(b"STAT\r\n");
    w.expect(&format!("+OK 2 {}\r\n", MSG1_SIZE + MSG2_SIZE));
    w.send(b"LIST\r\n");
    w.expect(&format!(
        "+OK 2 messages ({} octets)\r\n1 {MSG1_SIZE}\r\n2 {MSG2_SIZE}\r\n.\r\n",
        MSG1_SIZE + MSG2_SIZE
    ));
    w.send(b"LIST 2\r\n");
    w.expect(&format!("+OK 2 {MSG2_SIZE}\r\n"));
    w.send(b"RETR 1\r\n");
    w.expect(&format!("+OK {MSG1_SIZE} octets\r\n{MSG1_WIRE}"));
    w.send(b"TOP 2 1\r\n");
    w.expect("+OK Top of message follows\r\nSubject: two\r\n\r\nb1\r\n.\r\n");
    w.send(b"TOP 2 0\r\n");
    w.expect("+OK Top of message follows\r\nSubject: two\r\n\r\n.\r\n");
    w.send(b"TOP 2 99\r\n");
    w.expect("+OK Top of message follows\r\nSubject: two\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n");
    w.send(b"UIDL\r\n");
    let uidl = w.multiline();
    let uids: Vec<&str> = uidl.lines().skip(1).take(2).collect();
    assert!(
        uids[0].starts_with("1 ") && uids[1].starts_with("2 "),
        "{uidl}"
    );
    for u in &uids {
        let id = &u[2..];
        assert!((1..=70).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    assert_ne!(uids[0][2..], uids[1][2..]);
    assert_eq!(w.cmd("UIDL 2"), format!("+OK {}\r\n", uids[1]));
    assert_eq!(w.cmd("DELE 1"), "+OK Message 1 deleted\r\n");
    assert_eq!(w.cmd("DELE 1"), "-ERR Message is deleted\r\n");
    assert_eq!(w.cmd("RETR 1"), "-ERR Message is deleted\r\n");
    assert_eq!(w.cmd("LIST 1"), "-ERR Message is deleted\r\n");
    assert_eq!(w.cmd("STAT"), format!("+OK 1 {MSG2_SIZE}\r\n"));
    assert_eq!(
        w.cmd("RSET"),
        format!(
            "+OK Maildrop has 2 messages ({} octets)\r\n",
            MSG1_SIZE + MSG2_SIZE
        )
    );
    assert_eq!(w.cmd("DELE 2"), "+OK Message 2 deleted\r\n");
    assert_eq!(w.cmd("NOOP"), "+OK\r\n");
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert!(w.closed());

    // Message 2 is gone, message 1 stays with the same UIDL and number 1.
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    assert_eq!(w.cmd("STAT"), format!("+OK 1 {MSG1_SIZE}\r\n"));
    assert_eq!(w.cmd("UIDL 1"), format!("+OK {}\r\n", uids[0]));
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
}

#[test]
fn message_numbers_are_strict() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    for (cmd, reply) in [
        ("RETR 0", "-ERR Invalid message number"),
        ("RETR -1", "-ERR Invalid message number"),
        ("RETR 99999999999999999999", "-ERR Invalid message number"),
        ("RETR 1x", "-ERR Invalid message number"),
        ("RETR 3", "-ERR No such message"),
        ("TOP 3 0", "-ERR No such message"),
        ("DELE 0", "-ERR Invalid message number"),
        ("LIST 3", "-ERR No such message"),
        ("UIDL 3", "-ERR No such message"),
        ("RETR  1", "-ERR Syntax error in arguments"),
    ] {
        assert_eq!(w.cmd(cmd), format!("{reply}\r\n"), "{cmd}");
    }
}

#[test]
fn quit_from_authorization_and_dropped_connections_delete_nothing() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert!(w.closed());
    // DELE then drop the connection: nothing deleted, lock released.
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    assert_eq!(w.cmd("DELE 1"), "+OK Message 1 deleted\r\n");
    drop(w);
    let mut w = retry_login(&srv, "alice", "secret pw");
    assert_eq!(
        w.cmd("STAT"),
        format!("+OK 2 {}\r\n", MSG1_SIZE + MSG2_SIZE)
    );
}

/// Logs in, retrying while the previous session's lock is still being released.
fn retry_login(srv: &TestServer, user: &str, pass: &str) -> Wire {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut w = srv.connect();
        w.line();
        w.cmd(&format!("USER {user}"));
        let r = w.cmd(&format!("PASS {pass}"));
        if r.starts_with("+OK") {
            return w;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        assert!(Instant::now() < deadline, "lock never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pipelined_commands_in_one_packet_and_split_anywhere() {
    let srv = server_with_mail();
    let script = b"USER alice\r\nPASS secret pw\r\nSTAT\r\nLIST 1\r\nRETR 1\r\nNOOP\r\nQUIT\r\n";
    let expected = format!(
        "+OK Send PASS\r\n+OK Logged in, 2 messages ({} octets)\r\n+OK 2 {}\r\n+OK 1 {MSG1_SIZE}\r\n\
         +OK {MSG1_SIZE} octets\r\n{MSG1_WIRE}+OK\r\n+OK Correio POP3 server signing off\r\n",
        MSG1_SIZE + MSG2_SIZE,
        MSG1_SIZE + MSG2_SIZE
    );
    // One packet.
    let mut w = srv.connect();
    w.line();
    w.send(script);
    w.expect(&expected);
    assert!(w.closed());
    // Split at several places, including inside CRLF, with pauses.
    for split in [1usize, 5, 11, 12, 13, 30] {
        let mut w = retry_conn(&srv);
        w.stream.set_nodelay(true).unwrap();
        for piece in script.chunks(split) {
            w.stream.write_all(piece).unwrap();
            w.stream.flush().unwrap();
            if split < 5 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.expect(&expected);
    }
}

/// A connection after every previous session has ended, its lock released: the
/// server's `correio_connections_open` gauge drops only after the session (and the
/// maildrop it holds) is gone, so wait (bounded) for it to read 0.
fn retry_conn(srv: &TestServer) -> Wire {
    let open = || -> f64 {
        srv.server
            .metrics()
            .encode()
            .lines()
            .filter(|l| l.starts_with("correio_connections_open{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while open() != 0.0 {
        assert!(Instant::now() < deadline, "sessions still open after 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut w = srv.connect();
    w.line();
    w
}

#[test]
fn overlong_lines_nul_and_bare_cr() {
    let srv = TestServer::start();
    let mut w = srv.connect();
    w.line();
    let long = vec![b'A'; 10_000];
    w.send(&long);
    w.send(b"\r\n");
    assert_eq!(w.line(), "-ERR Command line too long\r\n");
    assert_eq!(w.cmd("CAPA\0"), "-ERR Invalid character in command\r\n");
    w.send(b"NO\rOP\r\n");
    assert_eq!(w.line(), "-ERR Invalid character in command\r\n");
    // The session goes on.
    w.send(b"CAPA\r\n");
    assert!(w.multiline().contains("TOP"));
}

#[test]
fn too_many_bad_commands_close_the_session() {
    let srv = TestServer::builder()
        .toml("[limits]\nmax_bad_commands = 3")
        .start();
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("FOO"), "-ERR Unknown command\r\n");
    assert_eq!(w.cmd("BAR"), "-ERR Unknown command\r\n");
    w.send(b"BAZ\r\n");
    assert_eq!(w.line(), "-ERR Unknown command\r\n");
    assert_eq!(w.line(), "-ERR Too many bad commands, closing\r\n");
    assert!(w.closed());
}

#[test]
fn command_line_limit_is_configurable() {
    // "CAPA" + 290 spaces + CRLF = 296 octets: too long by default (255)...
    let line = format!("CAPA{}\r\n", " ".repeat(290));
    let srv = TestServer::start();
    let mut w = srv.connect();
    w.line();
    w.send(line.as_bytes());
    assert_eq!(w.line(), "-ERR Command line too long\r\n");
    // ...and accepted when the limit is 300.
    let srv = TestServer::builder()
        .toml("[limits]\nmax_command_line = 300")
        .start();
    let mut w = srv.connect();
    w.line();
    w.send(line.as_bytes());
    assert!(w.multiline().contains("TOP\r\n"));
}

#[test]
fn stls_discards_pipelined_cleartext() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.line();
    // An attacker in the middle appends CAPA to the STLS packet.
    w.send(b"STLS\r\nCAPA\r\n");
    assert_eq!(w.line(), "+OK Begin TLS negotiation\r\n");
    let mut t = TlsWire::over(w.stream, &srv.cert_pem);
    // The first thing under TLS must be the answer to OUR command.
    t.send(b"NOOP\r\n");
    assert_eq!(t.line(), "-ERR Command not valid before login\r\n");
    t.send(b"CAPA\r\n");
    let capa = t.multiline();
    assert!(!capa.contains("STLS"), "{capa}");
    assert_eq!(t.cmd("STLS"), "-ERR STLS not available\r\n");
    assert_eq!(t.cmd("USER alice"), "+OK Send PASS\r\n");
    assert!(
        t.cmd("PASS secret pw")
            .starts_with("+OK Logged in, 2 messages")
    );
    t.send(b"RETR 1\r\n");
    assert_eq!(t.line(), format!("+OK {MSG1_SIZE} octets\r\n"));
    let mut body = String::new();
    loop {
        let l = t.line();
        body.push_str(&l);
        if l == ".\r\n" {
            break;
        }
    }
    assert_eq!(body, MSG1_WIRE);
    assert_eq!(t.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
}

#[test]
fn stls_not_after_login() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    assert_eq!(w.cmd("STLS"), "-ERR Command not valid after login\r\n");
}

#[test]
fn cleartext_login_refused_where_not_allowed() {
    let srv = TestServer::builder().loopback_untrusted().start();
    srv.add_user("alice", "secret pw");
    let mut w = srv.connect();
    w.line();
    w.send(b"CAPA\r\n");
    let capa = w.multiline();
    assert!(!capa.contains("USER\r\n"), "{capa}");
    assert!(capa.contains("SASL SCRAM-SHA-256 CRAM-MD5\r\n"), "{capa}");
    let refuse =
        "-ERR [AUTH] Cleartext login is not allowed on this connection; use STLS or POP3S\r\n";
    assert_eq!(w.cmd("USER alice"), refuse);
    assert_eq!(w.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldCBwdw=="), refuse);
    // After STLS the same login works and USER is advertised.
    assert_eq!(w.cmd("STLS"), "+OK Begin TLS negotiation\r\n");
    let mut t = TlsWire::over(w.stream, &srv.cert_pem);
    t.send(b"CAPA\r\n");
    assert!(t.multiline().contains("USER\r\n"));
    assert!(
        t.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldCBwdw==")
            .starts_with("+OK Logged in")
    );

    // --allow-cleartext-login turns it back on.
    let srv = TestServer::builder()
        .loopback_untrusted()
        .allow_cleartext()
        .start();
    srv.add_user("alice", "secret pw");
    let mut w = srv.connect();
    w.login("alice", "secret pw");
}

#[test]
fn implicit_tls_session() {
    let srv = server_with_mail();
    let mut t = TlsWire::connect(srv.pop3s, &srv.cert_pem);
    assert!(t.line().starts_with("+OK Correio POP3 server ready"));
    assert_eq!(t.cmd("USER alice"), "+OK Send PASS\r\n");
    assert!(t.cmd("PASS secret pw").starts_with("+OK Logged in"));
    t.send(b"LIST\r\n");
    assert_eq!(
        t.multiline(),
        format!(
            "+OK 2 messages ({} octets)\r\n1 {MSG1_SIZE}\r\n2 {MSG2_SIZE}\r\n.\r\n",
            MSG1_SIZE + MSG2_SIZE
        )
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_reply() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("USER alice"), "+OK Send PASS\r\n");
    assert_eq!(w.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(w.cmd("USER nobody"), "+OK Send PASS\r\n");
    assert_eq!(
        w.cmd("PASS secret pw"),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert_eq!(w.cmd("USER alice"), "+OK Send PASS\r\n");
    w.send(b"PASS x\r\n");
    assert_eq!(w.line(), "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(w.line(), "-ERR Too many failed logins, closing\r\n");
    assert!(w.closed());
}

#[test]
fn credentials_with_tab_cr_nul_percent_slash() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.line();
    assert_eq!(
        w.cmd("USER al\tice"),
        "-ERR Invalid character in command\r\n"
    );
    w.send(b"USER al\rice\r\n");
    assert_eq!(w.line(), "-ERR Invalid character in command\r\n");
    w.send(b"USER al\0ice\r\n");
    assert_eq!(w.line(), "-ERR Invalid character in command\r\n");
    // Printable but unsafe names are refused like any wrong login, after USER.
    assert_eq!(w.cmd("USER al%ice"), "+OK Send PASS\r\n");
    assert_eq!(
        w.cmd("PASS secret pw"),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert_eq!(w.cmd("USER ../alice"), "+OK Send PASS\r\n");
    assert_eq!(
        w.cmd("PASS secret pw"),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // SASL PLAIN smuggling a NUL-separated extra field or a TAB in the name.
    let mut w = srv.connect();
    w.line();
    // "\0al\tice\0secret pw"
    assert_eq!(
        w.cmd("AUTH PLAIN AGFsCWljZQBzZWNyZXQgcHc="),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // A password with spaces, % and a TAB-free rest of line works as is.
    srv.add_user("bob", "a b%c  d");
    let mut w = srv.connect();
    w.login("bob", "a b%c  d");
}

#[test]
fn auth_bad_base64_huge_response_cancel() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(
        w.cmd("!!!notbase64"),
        "-ERR [AUTH] Invalid base64 data in SASL response\r\n"
    );
    assert_eq!(w.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(w.cmd("*"), "-ERR Authentication cancelled\r\n");
    assert_eq!(
        w.cmd("AUTH PLAIN %%%"),
        "-ERR [AUTH] Invalid base64 data in SASL response\r\n"
    );
    // Bad base64 is a failed login on both paths (AUTH's initial response and a
    // response line): a third one closes the session (max_auth_failures = 3).
    assert_eq!(
        w.cmd("AUTH PLAIN ###"),
        "-ERR [AUTH] Invalid base64 data in SASL response\r\n"
    );
    assert_eq!(w.line(), "-ERR Too many failed logins, closing\r\n");
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("AUTH PLAIN"), "+ \r\n");
    // 1 MB of base64: refused without buffering it.
    let huge = vec![b'Q'; 1 << 20];
    w.send(&huge);
    w.send(b"\r\n");
    assert_eq!(w.line(), "-ERR [AUTH] Authentication response too long\r\n");
    // Still usable.
    assert_eq!(
        w.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldCBwdw==").get(..13),
        Some("+OK Logged in")
    );
}

#[test]
fn auth_mechanisms_each_log_in() {
    let srv = server_with_mail();
    // PLAIN with the challenge round.
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("AUTH PLAIN"), "+ \r\n");
    assert!(
        w.cmd("AGFsaWNlAHNlY3JldCBwdw==")
            .starts_with("+OK Logged in")
    );
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    // LOGIN.
    let mut w = retry_conn(&srv);
    assert_eq!(w.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6\r\n");
    let r = w.cmd("YWxpY2U="); // alice
    assert!(r.starts_with("+ "), "{r}");
    assert!(w.cmd("c2VjcmV0IHB3").starts_with("+OK Logged in")); // secret pw
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    // CRAM-MD5 and SCRAM-SHA-256 with the auth crate's client side.
    for (kind, name) in [
        (correio_auth::ClientMechanismKind::CramMd5, "CRAM-MD5"),
        (
            correio_auth::ClientMechanismKind::ScramSha256,
            "SCRAM-SHA-256",
        ),
    ] {
        let mut w = retry_conn(&srv);
        sasl_login(&mut w, kind, name);
        assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    }
}

fn sasl_login(w: &mut Wire, kind: correio_auth::ClientMechanismKind, name: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut m = correio_auth::ClientMechanism::new(
        kind,
        correio_auth::ClientCredentials::new("alice", "secret pw"),
    )
    .unwrap();
    let mut line = match m.initial_response() {
        Some(ir) if ir.is_empty() => w.cmd(&format!("AUTH {name} =")),
        Some(ir) => w.cmd(&format!("AUTH {name} {}", b64.encode(ir))),
        None => w.cmd(&format!("AUTH {name}")),
    };
    for _ in 0..5 {
        if line.starts_with("+OK Logged in") {
            return;
        }
        assert!(line.starts_with("+ "), "{name}: {line}");
        let challenge = b64.decode(line[2..].trim_end()).unwrap();
        let resp = m.step(&challenge).unwrap();
        line = w.cmd(&b64.encode(resp));
    }
    panic!("{name}: no success after 5 steps");
}

#[test]
fn apop_login() {
    let srv = server_with_mail();
    let mut w = srv.connect();
    let g = w.line();
    let ts = &g[g.find('<').unwrap()..=g.rfind('>').unwrap()];
    use md5::Digest as _;
    let digest = md5::Md5::digest(format!("{ts}secret pw").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        w.cmd("APOP alice 0123456789abcdef0123456789abcdef"),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert!(
        w.cmd(&format!("APOP alice {hex}"))
            .starts_with("+OK Logged in, 2 messages")
    );
}

#[test]
fn second_session_gets_in_use() {
    let srv = server_with_mail();
    let mut a = srv.connect();
    a.login("alice", "secret pw");
    let mut b = srv.connect();
    b.line();
    b.cmd("USER alice");
    assert_eq!(
        b.cmd("PASS secret pw"),
        "-ERR [IN-USE] Maildrop is locked by another session\r\n"
    );
    assert_eq!(a.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    drop(retry_login(&srv, "alice", "secret pw"));
}

#[test]
fn utf8_and_lang() {
    let srv = TestServer::start();
    let mut w = srv.connect();
    w.line();
    assert_eq!(w.cmd("UTF8"), "+OK UTF8 enabled\r\n");
    w.send(b"LANG\r\n");
    assert_eq!(
        w.multiline(),
        "+OK Language listing follows\r\nen English\r\n.\r\n"
    );
    assert_eq!(w.cmd("LANG en"), "+OK en Language is English\r\n");
    assert_eq!(w.cmd("LANG xx"), "-ERR Language not supported\r\n");
}

#[test]
fn login_delay_and_expire_announced_and_enforced() {
    let srv = TestServer::builder()
        .toml("[pop3]\nlogin_delay = \"1h\"\nexpire = 0")
        .start();
    srv.add_user("alice", "secret pw");
    srv.deliver("alice", MSG1);
    srv.deliver("alice", MSG2);
    let mut w = srv.connect();
    w.line();
    w.send(b"CAPA\r\n");
    let capa = w.multiline();
    assert!(
        capa.contains("LOGIN-DELAY 3600\r\n") && capa.contains("EXPIRE 0\r\n"),
        "{capa}"
    );
    w.cmd("USER alice");
    assert!(w.cmd("PASS secret pw").starts_with("+OK"));
    // EXPIRE 0: what was retrieved goes at QUIT even without DELE.
    w.send(b"RETR 2\r\n");
    w.line();
    while w.line() != ".\r\n" {}
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    let mut w = srv.connect();
    w.line();
    w.cmd("USER alice");
    assert_eq!(
        w.cmd("PASS secret pw"),
        "-ERR [LOGIN-DELAY] Logged in too recently; try again later\r\n"
    );
    let files = std::fs::read_dir(srv.maildir("alice").join("cur"))
        .map(|d| d.count())
        .unwrap_or(0)
        + std::fs::read_dir(srv.maildir("alice").join("new"))
            .map(|d| d.count())
            .unwrap_or(0);
    assert_eq!(files, 1);
}

#[test]
fn per_ip_connection_limit() {
    let srv = TestServer::builder()
        .toml("[limits]\nmax_connections_per_ip = 2")
        .start();
    let mut a = srv.connect();
    let mut b = srv.connect();
    a.line();
    b.line();
    let mut c = srv.connect();
    assert_eq!(
        c.line(),
        "-ERR [SYS/TEMP] Too many connections from your address\r\n"
    );
    assert!(c.closed());
    drop(a);
    // The slot frees up once the server sees the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = srv.connect();
        if d.line().starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn total_connection_limit_waits_in_backlog() {
    let srv = TestServer::builder()
        .toml("[limits]\nmax_connections = 1")
        .start();
    let mut a = srv.connect();
    a.line();
    let mut b = Wire::connect(srv.pop3);
    b.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut tmp = [0u8; 16];
    assert!(
        std::io::Read::read(&mut b.stream, &mut tmp).is_err(),
        "second connection must wait"
    );
    b.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(a.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert!(b.line().starts_with("+OK Correio POP3 server ready"));
}

#[test]
fn pre_login_idle_timeout() {
    let srv = TestServer::builder()
        .toml("[limits]\npre_login_idle = \"300ms\"")
        .start();
    let mut w = srv.connect();
    w.line();
    let t = Instant::now();
    assert_eq!(w.line(), "-ERR Autologout; idle for too long\r\n");
    assert!(w.closed());
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[test]
fn tls_handshake_timeout() {
    let srv = TestServer::builder()
        .toml("[limits]\ntls_handshake = \"300ms\"")
        .start();
    let mut w = Wire::connect(srv.pop3s);
    let t = Instant::now();
    assert!(w.closed());
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn slow_client_does_not_stall_others() {
    let srv = TestServer::start();
    srv.add_user("big", "pw");
    srv.add_user("alice", "secret pw");
    srv.deliver("alice", MSG1);
    // 8 MB message that the slow client requests and never reads.
    let mut big = Vec::with_capacity(8 << 20);
    while big.len() < 8 << 20 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\n",
        );
    }
    srv.deliver("big", &big);
    let mut slow = srv.connect();
    slow.login("big", "pw");
    slow.send(b"RETR 1\r\n");
    // Another client mid-line that never finishes.
    let mut half = srv.connect();
    half.line();
    half.send(b"USER al");
    // Meanwhile a normal session completes quickly.
    let t = Instant::now();
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    w.send(b"RETR 1\r\n");
    w.expect(&format!("+OK {MSG1_SIZE} octets\r\n{MSG1_WIRE}"));
    assert_eq!(w.cmd("QUIT"), "+OK Correio POP3 server signing off\r\n");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn large_message_streams_byte_exact() {
    let srv = TestServer::start();
    srv.add_user("alice", "secret pw");
    let mut msg = b"Subject: big\n\n".to_vec();
    let mut i = 0u32;
    while msg.len() < 3 << 20 {
        if i.is_multiple_of(7) {
            msg.extend_from_slice(b".starts with a dot\n");
        }
        msg.extend_from_slice(format!("line {i} of the body\n").as_bytes());
        i += 1;
    }
    srv.deliver("alice", &msg);
    let mut wire = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line[0] == b'.' {
            wire.push(b'.');
        }
        wire.extend_from_slice(&line[..line.len() - 1]);
        wire.extend_from_slice(b"\r\n");
    }
    let size = msg.len() + msg.iter().filter(|&&b| b == b'\n').count();
    let mut w = srv.connect();
    w.login("alice", "secret pw");
    assert_eq!(w.cmd("LIST 1"), format!("+OK 1 {size}\r\n"));
    w.send(b"RETR 1\r\n");
    assert_eq!(w.line(), format!("+OK {size} octets\r\n"));
    let got = w.read_exact(wire.len() + 3);
    assert!(got[..wire.len()] == wire[..], "body differs");
    assert_eq!(&got[wire.len()..], b".\r\n");
}

#[test]
fn certificate_reload_keeps_sessions() {
    let srv = server_with_mail();
    let mut t = TlsWire::connect(srv.pop3s, &srv.cert_pem);
    t.line();
    // New pair on disk, reload (what SIGHUP does).
    let key = srv.data.join("tls").join("key.pem");
    correio_server::tls::write_self_signed(&srv.cert_pem, &key, &["localhost".into()]).unwrap();
    srv.server.reload_tls().unwrap();
    // The old session goes on; a new one sees (and trusts) the new certificate.
    assert_eq!(t.cmd("USER alice"), "+OK Send PASS\r\n");
    let mut t2 = TlsWire::connect(srv.pop3s, &srv.cert_pem);
    assert!(t2.line().starts_with("+OK"));
}

#[test]
fn tls_1_2_and_1_3_are_both_accepted() {
    use std::io::{Read as _, Write as _};
    let srv = TestServer::start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let pem = std::fs::read(&srv.cert_pem).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = std::net::TcpStream::connect(srv.pop3s).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"+OK"), "{version:?}");
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
        tls.write_all(b"QUIT\r\n").unwrap();
    }
}

#[test]
fn offer_follows_the_users_file_at_once() {
    let srv = TestServer::start();
    srv.add_user_scheme("bob", "pw", correio_auth::Scheme::Sha512Crypt);
    let capa = |srv: &TestServer| {
        let mut w = srv.connect();
        let greeting = w.line();
        w.send(b"CAPA\r\n");
        (greeting, w.multiline())
    };
    let (g, c) = capa(&srv);
    assert!(
        !g.contains('<') && c.contains("SASL PLAIN LOGIN\r\n"),
        "{g}{c}"
    );
    srv.add_user("alice", "secret pw");
    let (g, c) = capa(&srv);
    assert!(g.contains('<'), "{g}");
    assert!(
        c.contains("SASL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN\r\n"),
        "{c}"
    );
}
