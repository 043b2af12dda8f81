//! Wire-level tests of the server session machine: exact bytes in, exact bytes out,
//! every script also fed in every chunk size from 1 to 512 bytes.
//!
//! The harness below is a tiny in-memory driver: it frames lines, answers actions from
//! a fake user table and maildrop, and records what the machine asked to commit.

#![allow(clippy::field_reassign_with_default)]

use correio_proto::LineFramer;
use correio_proto::capa::ExpirePolicy;
use correio_proto::server::{
    Action, AuthOutcome, ConnectionInfo, Event, MessageInfo, OpenError, ServerConfig,
    ServerSession, StreamKind,
};

const TS: &str = "<1234.5678@test>";

/// Messages as (wire body with terminator, size, uid).
const MSGS: [(&str, u64, &str); 3] = [
    ("Subject: a\r\n\r\nbody a\r\n.\r\n", 22, "uid-a"),
    ("Subject: b\r\n\r\n..dot\r\nline2\r\n.\r\n", 27, "uid-b"),
    ("Subject: c\r\n\r\nc\r\n.\r\n", 17, "uid-c"),
];

#[derive(Default)]
struct Fake {
    locked: bool,
    fail_commit: bool,
    login_delay: bool,
    commits: Vec<Vec<usize>>,
    closed: bool,
    sasl: Option<String>,
}

impl Fake {
    fn check(&self, user: &str, pw: &[u8]) -> AuthOutcome {
        if user == "alice" && pw == b"secret pw" {
            if self.login_delay {
                AuthOutcome::LoginDelay
            } else {
                AuthOutcome::Success { user: user.into() }
            }
        } else {
            AuthOutcome::Failure
        }
    }

    fn perform(
        &mut self,
        a: Action,
        s: &mut ServerSession,
        out: &mut Vec<u8>,
        framer: &mut LineFramer,
    ) -> Option<Action> {
        match a {
            Action::Authenticate(c) => {
                let o = self.check(&c.user, &c.password);
                s.handle_event(Event::Auth(o)).unwrap()
            }
            Action::ApopAuthenticate {
                user,
                digest,
                timestamp,
            } => {
                assert_eq!(timestamp, TS);
                // APOP_DIGEST is MD5("<1234.5678@test>secret pw"), computed with md5sum.
                let ok = user == "alice" && digest == APOP_DIGEST;
                let o = if ok {
                    AuthOutcome::Success { user }
                } else {
                    AuthOutcome::Failure
                };
                s.handle_event(Event::Auth(o)).unwrap()
            }
            Action::SaslStart {
                mechanism,
                initial_response,
            } => {
                assert_eq!(mechanism, "PLAIN");
                match initial_response {
                    Some(ir) => s.handle_event(Event::Auth(self.plain(&ir))).unwrap(),
                    None => {
                        self.sasl = Some(mechanism);
                        s.handle_event(Event::SaslChallenge(Vec::new())).unwrap()
                    }
                }
            }
            Action::SaslStep(d) => {
                if d == b"again" {
                    return s
                        .handle_event(Event::SaslChallenge(b"more".to_vec()))
                        .unwrap();
                }
                self.sasl = None;
                let o = self.plain(&d);
                s.handle_event(Event::Auth(o)).unwrap()
            }
            Action::SaslAbort => {
                self.sasl = None;
                None
            }
            Action::OpenMaildrop { user } => {
                assert_eq!(user, "alice");
                let r = if self.locked {
                    Err(OpenError::InUse)
                } else {
                    Ok(MSGS
                        .iter()
                        .map(|(_, size, uid)| MessageInfo {
                            size: *size,
                            uid: (*uid).into(),
                        })
                        .collect())
                };
                s.handle_event(Event::MaildropOpened(r)).unwrap()
            }
            Action::StreamMessage { index, kind } => {
                assert!(
                    s.handle_event(Event::MessageOpened(Ok(())))
                        .unwrap()
                        .is_none()
                );
                out.extend(s.take_output());
                let body = match kind {
                    StreamKind::Retr => MSGS[index].0.to_string(),
                    StreamKind::Top(n) => format!("TOP{n}\r\n.\r\n"),
                };
                out.extend_from_slice(body.as_bytes());
                s.handle_event(Event::MessageSent {
                    bytes: body.len() as u64,
                })
                .unwrap()
            }
            Action::StartTls => {
                out.extend(s.take_output());
                out.extend_from_slice(b"<TLS>");
                framer.clear();
                s.handle_event(Event::TlsStarted).unwrap()
            }
            Action::Commit { deletions } => {
                self.commits.push(deletions);
                let r = if self.fail_commit {
                    Err(OpenError::Temporary)
                } else {
                    Ok(())
                };
                s.handle_event(Event::Committed(r)).unwrap()
            }
            Action::Close => {
                self.closed = true;
                None
            }
        }
    }

    fn plain(&self, ir: &[u8]) -> AuthOutcome {
        let parts: Vec<&[u8]> = ir.split(|&b| b == 0).collect();
        if parts.len() != 3 {
            return AuthOutcome::Failure;
        }
        self.check(&String::from_utf8_lossy(parts[1]), parts[2])
    }
}

const APOP_DIGEST: &str = "4b11ce8c184efb88631da9dacda01b72";

fn cleartext_remote() -> ConnectionInfo {
    ConnectionInfo {
        tls: false,
        stls_available: true,
        cleartext_login_allowed: false,
    }
}

fn loopback() -> ConnectionInfo {
    ConnectionInfo {
        tls: false,
        stls_available: true,
        cleartext_login_allowed: true,
    }
}

fn tls() -> ConnectionInfo {
    ConnectionInfo {
        tls: true,
        stls_available: false,
        cleartext_login_allowed: false,
    }
}

/// Runs `input` through a fresh session in chunks of `chunk` bytes; returns the wire
/// output and the fake (for what it recorded).
fn run_with(
    config: ServerConfig,
    conn: ConnectionInfo,
    mut fake: Fake,
    input: &[u8],
    chunk: usize,
) -> (String, Fake) {
    let mut s = ServerSession::new(config, conn, Some(TS.into()));
    let mut framer = LineFramer::new(255);
    let mut out = s.take_output();
    'feed: for piece in input.chunks(chunk) {
        framer.push(piece);
        loop {
            framer.set_max_line(s.max_line());
            let Some(line) = framer.next_line() else {
                break;
            };
            let mut act = s.handle_line(line).unwrap();
            while let Some(a) = act {
                act = fake.perform(a, &mut s, &mut out, &mut framer);
            }
            out.extend(s.take_output());
            if s.is_closed() {
                break 'feed;
            }
        }
    }
    (String::from_utf8(out).unwrap(), fake)
}

/// Runs the script in every chunk size 1..=512 and checks all give `expected`.
fn script(conn: ConnectionInfo, input: &str, expected: &str) -> Fake {
    script_cfg(
        ServerConfig::default(),
        conn,
        Fake::default,
        input,
        expected,
    )
}

fn script_cfg(
    config: ServerConfig,
    conn: ConnectionInfo,
    fake: impl Fn() -> Fake,
    input: &str,
    expected: &str,
) -> Fake {
    let (whole, f) = run_with(config.clone(), conn, fake(), input.as_bytes(), usize::MAX);
    assert_eq!(whole, expected, "input:\n{input}");
    for chunk in 1..=512 {
        let (got, _) = run_with(config.clone(), conn, fake(), input.as_bytes(), chunk);
        assert_eq!(got, expected, "chunk size {chunk}");
    }
    f
}

const GREETING: &str = "+OK Correio POP3 server ready <1234.5678@test>\r\n";
const LOGIN: &str = "USER alice\r\nPASS secret pw\r\n";
const LOGGED_IN: &str = "+OK Send PASS\r\n+OK Logged in, 3 messages (66 octets)\r\n";

fn implementation() -> String {
    format!("IMPLEMENTATION Correio {}\r\n", env!("CARGO_PKG_VERSION"))
}

#[test]
fn greeting_carries_apop_timestamp() {
    script(loopback(), "", GREETING);
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    assert_eq!(s.take_output(), b"+OK Correio POP3 server ready\r\n");
}

#[test]
fn capa_on_cleartext_remote_hides_user_and_plain() {
    let expected = format!(
        "{GREETING}+OK Capability list follows\r\nSTLS\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n\
         AUTH-RESP-CODE\r\nPIPELINING\r\nUTF8\r\nLANG\r\n{}.\r\n",
        implementation()
    );
    script(cleartext_remote(), "CAPA\r\n", &expected);
}

#[test]
fn capa_on_loopback_and_after_tls() {
    let expected = format!(
        "{GREETING}+OK Capability list follows\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\nTOP\r\n\
         UIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUTF8\r\nLANG\r\n{}.\r\n",
        implementation()
    );
    script(loopback(), "capa\r\n", &expected);
    let expected_tls = expected.replace("STLS\r\n", "");
    script(tls(), "CAPA\r\n", &expected_tls);
}

#[test]
fn capa_in_transaction_keeps_authorization_caps_but_not_stls() {
    let mut cfg = ServerConfig::default();
    cfg.login_delay = Some(900);
    cfg.expire = Some(ExpirePolicy::Never);
    cfg.implementation = None;
    cfg.utf8 = false;
    let caps = "USER\r\nSASL PLAIN LOGIN\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
                PIPELINING\r\nLOGIN-DELAY 900\r\nEXPIRE NEVER\r\n";
    let expected = format!(
        "{GREETING}+OK Capability list follows\r\nSTLS\r\n{caps}.\r\n\
         {LOGGED_IN}+OK Capability list follows\r\n{caps}.\r\n"
    );
    script_cfg(
        cfg,
        loopback(),
        Fake::default,
        &format!("CAPA\r\n{LOGIN}CAPA\r\n"),
        &expected,
    );
}

#[test]
fn full_transaction() {
    let input = format!(
        "{LOGIN}STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 2\r\nTOP 1 0\r\n\
         DELE 1\r\nLIST 1\r\nRETR 1\r\nTOP 1 5\r\nUIDL 1\r\nDELE 1\r\nSTAT\r\nLIST\r\n\
         RSET\r\nSTAT\r\nDELE 3\r\nNOOP\r\nQUIT\r\nSTAT\r\n"
    );
    let expected = format!(
        "{GREETING}{LOGGED_IN}+OK 3 66\r\n\
         +OK 3 messages (66 octets)\r\n1 22\r\n2 27\r\n3 17\r\n.\r\n\
         +OK 2 27\r\n\
         +OK Unique-ID listing follows\r\n1 uid-a\r\n2 uid-b\r\n3 uid-c\r\n.\r\n\
         +OK 3 uid-c\r\n\
         +OK 27 octets\r\nSubject: b\r\n\r\n..dot\r\nline2\r\n.\r\n\
         +OK Top of message follows\r\nTOP0\r\n.\r\n\
         +OK Message 1 deleted\r\n\
         -ERR Message is deleted\r\n-ERR Message is deleted\r\n-ERR Message is deleted\r\n\
         -ERR Message is deleted\r\n-ERR Message is deleted\r\n\
         +OK 2 44\r\n\
         +OK 2 messages (44 octets)\r\n2 27\r\n3 17\r\n.\r\n\
         +OK Maildrop has 3 messages (66 octets)\r\n+OK 3 66\r\n\
         +OK Message 3 deleted\r\n+OK\r\n\
         +OK Correio POP3 server signing off\r\n"
    );
    let f = script(loopback(), &input, &expected);
    assert_eq!(f.commits, vec![vec![2]]);
    assert!(f.closed);
}

#[test]
fn message_numbers_are_strict_and_looked_up_once() {
    let input = format!(
        "{LOGIN}RETR 0\r\nRETR -1\r\nRETR 99999999999999999999\r\nRETR 1x\r\nRETR 4\r\n\
         LIST 4\r\nUIDL 4\r\nTOP 4 1\r\nDELE 4\r\nTOP 1\r\nRETR\r\nTOP 1 -1\r\nQUIT\r\n"
    );
    let expected = format!(
        "{GREETING}{LOGGED_IN}-ERR Invalid message number\r\n-ERR Invalid message number\r\n\
         -ERR Invalid message number\r\n-ERR Invalid message number\r\n\
         -ERR No such message\r\n-ERR No such message\r\n-ERR No such message\r\n\
         -ERR No such message\r\n-ERR No such message\r\n\
         -ERR Syntax error in arguments\r\n-ERR Syntax error in arguments\r\n\
         -ERR Invalid message number\r\n+OK Correio POP3 server signing off\r\n"
    );
    let mut cfg = ServerConfig::default();
    cfg.max_bad_commands = 100;
    let f = script_cfg(cfg, loopback(), Fake::default, &input, &expected);
    assert_eq!(f.commits, vec![Vec::<usize>::new()]);
}

#[test]
fn wrong_password_same_answer_as_unknown_user_and_closes_after_three() {
    let input = "USER alice\r\nPASS wrong\r\nUSER nobody\r\nPASS secret pw\r\n\
                 USER alice\r\nPASS x\r\nNOOP\r\n";
    let expected = format!(
        "{GREETING}+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n\
         +OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n\
         +OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n\
         -ERR Too many failed logins, closing\r\n"
    );
    let f = script(loopback(), input, &expected);
    assert!(f.closed);
    assert!(f.commits.is_empty());
}

#[test]
fn pass_takes_the_rest_of_the_line_and_needs_user_first() {
    let expected = format!("{GREETING}-ERR USER first\r\n{LOGGED_IN}");
    script(loopback(), &format!("PASS secret pw\r\n{LOGIN}"), &expected);
}

#[test]
fn cleartext_login_refused_on_remote_cleartext() {
    let input = "USER alice\r\nPASS secret pw\r\nAUTH PLAIN AGFsaWNlAHNlY3JldCBwdw==\r\n\
                 AUTH\r\n";
    let refuse =
        "-ERR [AUTH] Cleartext login is not allowed on this connection; use STLS or POP3S\r\n";
    let expected =
        format!("{GREETING}{refuse}-ERR USER first\r\n{refuse}+OK Methods supported\r\n.\r\n");
    script(cleartext_remote(), input, &expected);
}

#[test]
fn in_use_maildrop() {
    let expected = format!(
        "{GREETING}+OK Send PASS\r\n-ERR [IN-USE] Maildrop is locked by another session\r\n\
         -ERR Command not valid before login\r\n+OK Correio POP3 server signing off\r\n"
    );
    let f = script_cfg(
        ServerConfig::default(),
        loopback(),
        || Fake {
            locked: true,
            ..Fake::default()
        },
        &format!("{LOGIN}STAT\r\nQUIT\r\n"),
        &expected,
    );
    assert!(f.commits.is_empty());
}

#[test]
fn login_delay_and_expire() {
    let mut cfg = ServerConfig::default();
    cfg.login_delay = Some(60);
    let expected = format!(
        "{GREETING}+OK Send PASS\r\n-ERR [LOGIN-DELAY] Logged in too recently; try again later\r\n"
    );
    script_cfg(
        cfg,
        loopback(),
        || Fake {
            login_delay: true,
            ..Fake::default()
        },
        LOGIN,
        &expected,
    );

    // EXPIRE 0: what was retrieved is removed at QUIT, besides what was deleted.
    let mut cfg = ServerConfig::default();
    cfg.expire = Some(ExpirePolicy::Days(0));
    let (_, f) = run_with(
        cfg,
        loopback(),
        Fake::default(),
        format!("{LOGIN}RETR 3\r\nTOP 2 1\r\nDELE 1\r\nQUIT\r\n").as_bytes(),
        7,
    );
    assert_eq!(f.commits, vec![vec![0, 2]]);
}

#[test]
fn apop() {
    let expected = format!(
        "{GREETING}-ERR [AUTH] Authentication failed\r\n+OK Logged in, 3 messages (66 octets)\r\n"
    );
    script(
        cleartext_remote(),
        &format!("APOP alice 00000000000000000000000000000000\r\nAPOP alice {APOP_DIGEST}\r\n"),
        &expected,
    );
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    s.take_output();
    let mut f = LineFramer::new(255);
    f.push(format!("APOP alice {APOP_DIGEST}\r\n").as_bytes());
    let line = f.next_line().unwrap();
    assert_eq!(s.handle_line(line).unwrap(), None);
    assert_eq!(s.take_output(), b"-ERR APOP is not offered\r\n");
}

#[test]
fn sasl_plain_initial_response_and_challenge() {
    // "\0alice\0secret pw"
    let ir = "AGFsaWNlAHNlY3JldCBwdw==";
    script(
        loopback(),
        &format!("AUTH PLAIN {ir}\r\n"),
        &format!("{GREETING}+OK Logged in, 3 messages (66 octets)\r\n"),
    );
    script(
        tls(),
        &format!("AUTH plain\r\n{ir}\r\n"),
        &format!("{GREETING}+ \r\n+OK Logged in, 3 messages (66 octets)\r\n"),
    );
    // A multi-step exchange: "again" gets another challenge ("more").
    script(
        tls(),
        &format!("AUTH PLAIN\r\nYWdhaW4=\r\n{ir}\r\n"),
        &format!("{GREETING}+ \r\n+ bW9yZQ==\r\n+OK Logged in, 3 messages (66 octets)\r\n"),
    );
}

#[test]
fn sasl_cancel_bad_base64_and_unknown_mechanism() {
    let input = "AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!notbase64\r\nAUTH PLAIN *\r\n\
                 AUTH X-FOO\r\nAUTH PLAIN %%%\r\nCAPA\r\n";
    let expected = format!(
        "{GREETING}+ \r\n-ERR Authentication cancelled\r\n\
         + \r\n-ERR [AUTH] Invalid base64 data in SASL response\r\n\
         -ERR Authentication cancelled\r\n\
         -ERR Unsupported authentication mechanism\r\n\
         -ERR [AUTH] Invalid base64 data in SASL response\r\n\
         +OK Capability list follows\r\n"
    );
    let (got, f) = run_with(
        ServerConfig::default(),
        tls(),
        Fake::default(),
        input.as_bytes(),
        3,
    );
    assert!(got.starts_with(&expected), "{got}");
    assert!(f.sasl.is_none());
}

#[test]
fn sasl_bounded_exchange() {
    // A response line longer than the SASL limit fails the exchange; the session goes on.
    let mut cfg = ServerConfig::default();
    cfg.max_sasl_line = 100;
    cfg.max_sasl_steps = 2;
    let huge = "A".repeat(5000);
    let input =
        format!("AUTH PLAIN\r\n{huge}\r\nAUTH PLAIN\r\nYWdhaW4=\r\nYWdhaW4=\r\nYWdhaW4=\r\n");
    let expected = format!(
        "{GREETING}+ \r\n-ERR [AUTH] Authentication response too long\r\n\
         + \r\n+ bW9yZQ==\r\n+ bW9yZQ==\r\n-ERR [AUTH] Too many authentication steps\r\n"
    );
    script_cfg(cfg, tls(), Fake::default, &input, &expected);
}

#[test]
fn stls_throws_away_pipelined_cleartext() {
    // CAPA sent in the same packet as STLS must never be answered. (Fed in smaller
    // chunks, CAPA would arrive after the handshake and rightly be answered.)
    let expected = format!("{GREETING}+OK Begin TLS negotiation\r\n<TLS>");
    for chunk in [12, 13, 100] {
        let (got, _) = run_with(
            ServerConfig::default(),
            cleartext_remote(),
            Fake::default(),
            b"STLS\r\nCAPA\r\n",
            chunk,
        );
        assert_eq!(got, expected);
    }
    // After TLS: STLS is gone from CAPA and refused; USER works.
    let (got, _) = run_with(
        ServerConfig::default(),
        cleartext_remote(),
        Fake::default(),
        b"STLS\r\n",
        usize::MAX,
    );
    assert!(got.ends_with("<TLS>"));
    let mut s = ServerSession::new(ServerConfig::default(), cleartext_remote(), None);
    let mut f = LineFramer::new(255);
    f.push(b"STLS\r\n");
    assert_eq!(
        s.handle_line(f.next_line().unwrap()).unwrap(),
        Some(Action::StartTls)
    );
    assert!(s.is_waiting());
    assert_eq!(s.handle_event(Event::TlsStarted).unwrap(), None);
    s.take_output();
    f.clear();
    f.push(b"STLS\r\nCAPA\r\nUSER alice\r\n");
    assert_eq!(s.handle_line(f.next_line().unwrap()).unwrap(), None);
    assert_eq!(s.take_output(), b"-ERR STLS not available\r\n");
    s.handle_line(f.next_line().unwrap()).unwrap();
    let capa = String::from_utf8(s.take_output()).unwrap();
    assert!(
        !capa.contains("STLS") && capa.contains("\r\nUSER\r\n"),
        "{capa}"
    );
    s.handle_line(f.next_line().unwrap()).unwrap();
    assert_eq!(s.take_output(), b"+OK Send PASS\r\n");
}

#[test]
fn stls_not_after_login() {
    let expected = format!("{GREETING}{LOGGED_IN}-ERR Command not valid after login\r\n");
    script(loopback(), &format!("{LOGIN}STLS\r\n"), &expected);
}

#[test]
fn overlong_lines_and_bad_commands_close_the_session() {
    let long = "X".repeat(300);
    let mut cfg = ServerConfig::default();
    cfg.max_bad_commands = 4;
    let input = format!("{long}\r\nNOOP\0\r\nFOO\r\nNO\rOP\r\nCAPA\r\n");
    let expected = format!(
        "{GREETING}-ERR Command line too long\r\n-ERR Invalid character in command\r\n\
         -ERR Unknown command\r\n-ERR Invalid character in command\r\n\
         -ERR Too many bad commands, closing\r\n"
    );
    let f = script_cfg(cfg, loopback(), Fake::default, &input, &expected);
    assert!(f.closed);
}

#[test]
fn a_line_of_exactly_255_octets_is_a_command() {
    // "PASS " + 248 + CRLF = 255 octets: a command. One more octet: too long.
    let pw = "a".repeat(248);
    let expected = format!(
        "{GREETING}+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n\
         +OK Send PASS\r\n-ERR Command line too long\r\n"
    );
    script(
        loopback(),
        &format!("USER alice\r\nPASS {pw}\r\nUSER alice\r\nPASS {pw}a\r\n"),
        &expected,
    );
}

#[test]
fn quit_in_authorization_never_commits_nor_does_timeout_or_shutdown() {
    let f = script(
        loopback(),
        "QUIT\r\n",
        &format!("{GREETING}+OK Correio POP3 server signing off\r\n"),
    );
    assert!(f.commits.is_empty() && f.closed);

    type Outside = fn(&mut ServerSession) -> Option<Action>;
    for (event, text) in [
        (
            ServerSession::handle_timeout as Outside,
            "-ERR Autologout; idle for too long\r\n",
        ),
        (
            ServerSession::handle_shutdown as Outside,
            "-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n",
        ),
    ] {
        let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
        let mut fake = Fake::default();
        feed(
            &mut s,
            &mut fake,
            b"USER alice\r\nPASS secret pw\r\nDELE 1\r\n",
        );
        s.take_output();
        assert_eq!(event(&mut s), Some(Action::Close));
        assert_eq!(s.take_output(), text.as_bytes());
        assert!(s.is_closed());
        assert!(fake.commits.is_empty());
        assert_eq!(s.stats().dele, 1);
        assert!(!s.stats().committed);
    }
}

#[test]
fn failed_commit_is_err() {
    let expected = format!(
        "{GREETING}{LOGGED_IN}+OK Message 2 deleted\r\n\
         -ERR [SYS/TEMP] Some deleted messages were not removed\r\n"
    );
    let f = script_cfg(
        ServerConfig::default(),
        loopback(),
        || Fake {
            fail_commit: true,
            ..Fake::default()
        },
        &format!("{LOGIN}DELE 2\r\nQUIT\r\n"),
        &expected,
    );
    assert_eq!(f.commits, vec![vec![1]]);
}

#[test]
fn utf8_and_lang() {
    let expected = format!(
        "{GREETING}+OK UTF8 enabled\r\n+OK Language listing follows\r\nen English\r\n.\r\n\
         +OK en Language is English\r\n-ERR Language not supported\r\n{LOGGED_IN}\
         -ERR Command not valid after login\r\n+OK en Language is English\r\n"
    );
    script(
        loopback(),
        &format!("UTF8\r\nLANG\r\nLANG en\r\nLANG pt\r\n{LOGIN}UTF8\r\nLANG *\r\n"),
        &expected,
    );
}

#[test]
fn wrong_state_commands() {
    let expected = format!(
        "{GREETING}-ERR Command not valid before login\r\n-ERR Command not valid before login\r\n\
         -ERR Command not valid before login\r\n{LOGGED_IN}-ERR Command not valid after login\r\n\
         -ERR Command not valid after login\r\n-ERR Command not valid after login\r\n"
    );
    script(
        loopback(),
        &format!("STAT\r\nRETR 1\r\nNOOP\r\n{LOGIN}USER bob\r\nPASS x\r\nAUTH PLAIN\r\n"),
        &expected,
    );
}

#[test]
fn stats_count_retr_top_dele_and_bytes() {
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    feed(
        &mut s,
        &mut Fake::default(),
        b"USER alice\r\nPASS secret pw\r\nRETR 1\r\nRETR 2\r\nTOP 3 0\r\nDELE 1\r\nQUIT\r\n",
    );
    let st = s.stats();
    assert_eq!((st.retr, st.top, st.dele, st.committed), (2, 1, 1, true));
    assert_eq!(
        st.bytes,
        (MSGS[0].0.len() + MSGS[1].0.len() + "TOP0\r\n.\r\n".len()) as u64
    );
    assert_eq!(s.user(), Some("alice"));
}

#[test]
fn a_line_fed_while_waiting_is_never_acted_on_and_closes_the_session() {
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    let mut f = LineFramer::new(255);
    f.push(b"USER alice\r\nPASS secret pw\r\nQUIT\r\n");
    s.handle_line(f.next_line().unwrap()).unwrap();
    assert!(matches!(
        s.handle_line(f.next_line().unwrap()).unwrap(),
        Some(Action::Authenticate(_))
    ));
    assert!(s.handle_line(f.next_line().unwrap()).is_err());
    assert!(s.is_closed() && !s.is_waiting());
    assert!(
        String::from_utf8(s.take_output())
            .unwrap()
            .ends_with("-ERR [SYS/TEMP] Internal error; nothing was deleted\r\n")
    );
    // Debug output never shows the password.
    let mut s2 = ServerSession::new(ServerConfig::default(), loopback(), None);
    s2.handle_line(correio_proto::Line::Complete(b"USER alice"))
        .unwrap();
    let a = s2
        .handle_line(correio_proto::Line::Complete(b"PASS hunter2"))
        .unwrap();
    assert!(!format!("{a:?}").contains("hunter2"));
}

#[test]
fn message_opened_error_gives_sys_temp() {
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    feed(
        &mut s,
        &mut Fake::default(),
        b"USER alice\r\nPASS secret pw\r\n",
    );
    s.take_output();
    let a = s
        .handle_line(correio_proto::Line::Complete(b"RETR 2"))
        .unwrap();
    assert_eq!(
        a,
        Some(Action::StreamMessage {
            index: 1,
            kind: StreamKind::Retr
        })
    );
    assert_eq!(
        s.handle_event(Event::MessageOpened(Err(OpenError::Temporary)))
            .unwrap(),
        None
    );
    assert_eq!(
        s.take_output(),
        b"-ERR [SYS/TEMP] Message cannot be read now\r\n"
    );
    assert!(!s.is_waiting());
}

/// Issue #9 item 7: a logged-in client asking for a missing message with a bad
/// argument (`RETR one`, `UIDL 0`, `RETR` alone) gets -ERR and keeps its session, however
/// often; unknown commands still count, and so does anything before login.
#[test]
fn argument_errors_after_login_never_close_the_session() {
    let mut cfg = ServerConfig::default();
    cfg.max_bad_commands = 3;
    let bad_args = "RETR one\r\nUIDL 0\r\nRETR\r\nTOP 1\r\nLIST 1 2\r\n".repeat(3);
    let input = format!("{LOGIN}{bad_args}STAT\r\nXYZZY\r\nFOO\r\nBAR\r\nSTAT\r\n");
    let one_round = "-ERR Syntax error in arguments\r\n-ERR Invalid message number\r\n\
                     -ERR Syntax error in arguments\r\n-ERR Syntax error in arguments\r\n\
                     -ERR Syntax error in arguments\r\n"
        .replace(
            "-ERR Syntax error in arguments\r\n-ERR Invalid message number",
            "-ERR Invalid message number\r\n-ERR Invalid message number",
        );
    let expected = format!(
        "{GREETING}{LOGGED_IN}{}+OK 3 66\r\n-ERR Unknown command\r\n-ERR Unknown command\r\n\
         -ERR Unknown command\r\n-ERR Too many bad commands, closing\r\n",
        one_round.repeat(3)
    );
    let f = script_cfg(cfg.clone(), loopback(), Fake::default, &input, &expected);
    assert!(f.closed);
    // Before login the same argument errors count.
    let input = "RETR one\r\nUIDL 0\r\nRETR\r\nCAPA\r\n";
    let expected = format!(
        "{GREETING}-ERR Invalid message number\r\n-ERR Invalid message number\r\n\
         -ERR Syntax error in arguments\r\n-ERR Too many bad commands, closing\r\n"
    );
    let f = script_cfg(cfg, loopback(), Fake::default, input, &expected);
    assert!(f.closed);
}

#[test]
fn the_idle_limit_is_the_sessions_own_and_depends_on_the_state() {
    let config = ServerConfig {
        pre_login_idle: std::time::Duration::from_secs(30),
        post_login_idle: std::time::Duration::from_secs(900),
        ..ServerConfig::default()
    };
    let mut s = ServerSession::new(config, loopback(), None);
    assert_eq!(s.idle_timeout().as_secs(), 30);
    feed(
        &mut s,
        &mut Fake::default(),
        b"USER alice\r\nPASS secret pw\r\n",
    );
    assert_eq!(s.state(), correio_proto::server::State::Transaction);
    assert_eq!(s.idle_timeout().as_secs(), 900);
}

/// A driver that reports an event no action asked for (the bug that used to leave the
/// session waiting for its idle timeout) gets an error, and the client gets `-ERR`
/// and a closed connection at once.
#[test]
fn an_event_that_answers_no_action_closes_the_session_at_once() {
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    s.take_output();
    let e = s.handle_event(Event::MessageSent { bytes: 1 }).unwrap_err();
    assert!(e.to_string().contains("no pending action"), "{e}");
    assert!(s.is_closed());
    assert_eq!(
        s.take_output(),
        b"-ERR [SYS/TEMP] Internal error; nothing was deleted\r\n"
    );
    // And a line while an action is pending.
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    s.handle_line(correio_proto::Line::Complete(b"USER alice"))
        .unwrap();
    let a = s
        .handle_line(correio_proto::Line::Complete(b"PASS pw"))
        .unwrap();
    assert!(matches!(a, Some(Action::Authenticate(_))));
    assert!(
        s.handle_line(correio_proto::Line::Complete(b"NOOP"))
            .is_err()
    );
    assert!(s.is_closed());
}

/// Bad base64 is an `[AUTH]` failure whether it comes as AUTH's initial response or
/// as a later response line.
#[test]
fn bad_base64_gets_the_same_auth_reply_on_both_paths() {
    let expected = b"-ERR [AUTH] Invalid base64 data in SASL response\r\n";
    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    s.take_output();
    assert_eq!(
        s.handle_line(correio_proto::Line::Complete(b"AUTH PLAIN !!!"))
            .unwrap(),
        None
    );
    assert_eq!(s.take_output(), expected);

    let mut s = ServerSession::new(ServerConfig::default(), loopback(), None);
    let a = s
        .handle_line(correio_proto::Line::Complete(b"AUTH PLAIN"))
        .unwrap();
    assert!(matches!(a, Some(Action::SaslStart { .. })));
    assert_eq!(
        s.handle_event(Event::SaslChallenge(Vec::new())).unwrap(),
        None
    );
    s.take_output();
    assert_eq!(
        s.handle_line(correio_proto::Line::Complete(b"!!!"))
            .unwrap(),
        Some(Action::SaslAbort)
    );
    assert_eq!(s.take_output(), expected);
}

/// Feeds `input` line by line, carrying out every action with `fake`.
fn feed(s: &mut ServerSession, fake: &mut Fake, input: &[u8]) {
    let mut framer = LineFramer::new(255);
    let mut out = Vec::new();
    framer.push(input);
    while let Some(line) = framer.next_line() {
        let mut act = s.handle_line(line).unwrap();
        while let Some(a) = act {
            act = fake.perform(a, s, &mut out, &mut LineFramer::new(255));
        }
    }
}
