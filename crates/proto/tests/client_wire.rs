//! The client state machine at the wire: exact bytes out, exact server bytes in, every
//! server script also fed in every chunk size from 1 to 512.

use correio_proto::Command;
use correio_proto::client::{ClientError, ClientSession, CommandKind, Event, SaslMechanism};
use correio_proto::command::MsgNum;
use correio_proto::response::{RespCode, StatusLine};

fn m(n: u32) -> MsgNum {
    MsgNum::new(n).unwrap()
}

/// Feeds `server` in chunks of `chunk` bytes and returns the events with body chunks
/// merged (chunking must not change what the client sees).
fn run(s: &mut ClientSession, server: &[u8], chunk: usize) -> Vec<Result<Event, ClientError>> {
    let mut out: Vec<Result<Event, ClientError>> = Vec::new();
    for c in server.chunks(chunk) {
        s.receive(c);
        while let Some(e) = s.poll_event() {
            match (out.last_mut(), e) {
                (Some(Ok(Event::Body(prev))), Ok(Event::Body(more))) => prev.extend(more),
                (_, e) => out.push(e),
            }
        }
    }
    out
}

fn every_chunking(
    setup: impl Fn(&mut ClientSession),
    server: &[u8],
    expect_tx: &[u8],
    expect: &[Result<Event, ClientError>],
) {
    for chunk in 1..=512 {
        let mut s = ClientSession::new();
        s.receive(b"+OK ready\r\n");
        assert!(matches!(s.poll_event(), Some(Ok(Event::Greeting { .. }))));
        setup(&mut s);
        assert_eq!(
            String::from_utf8_lossy(&s.take_transmit()),
            String::from_utf8_lossy(expect_tx)
        );
        let got = run(&mut s, server, chunk);
        assert_eq!(got, expect, "chunk size {chunk}");
    }
}

fn ok(kind: CommandKind, text: &str) -> Result<Event, ClientError> {
    Ok(Event::Status {
        command: kind,
        line: StatusLine::ok(text),
    })
}

#[test]
fn pipelined_session_in_every_chunking() {
    let server = b"+OK user\r\n+OK pass\r\n+OK 2 320\r\n+OK\r\n1 120\r\n2 200\r\n.\r\n\
+OK\r\n1 abc\r\n2 def\r\n.\r\n+OK 120 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n\
+OK\r\nSubject: y\r\n\r\n.\r\n+OK 2 200\r\n+OK 2 def\r\n-ERR no such message\r\n\
+OK deleted\r\n+OK\r\n+OK\r\n+OK bye\r\n";
    let tx = b"USER u\r\nPASS secret word\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\n\
LIST 2\r\nUIDL 2\r\nRETR 9\r\nDELE 1\r\nNOOP\r\nRSET\r\nQUIT\r\n";
    let expect = vec![
        ok(CommandKind::User, "user"),
        ok(CommandKind::Pass, "pass"),
        Ok(Event::Stat {
            count: 2,
            octets: 320,
        }),
        Ok(Event::List(vec![(m(1), 120), (m(2), 200)])),
        Ok(Event::Uidl(vec![
            (m(1), "abc".into()),
            (m(2), "def".into()),
        ])),
        Ok(Event::BodyStart {
            msg: m(1),
            line: StatusLine::ok("120 octets"),
        }),
        Ok(Event::Body(b"Subject: x\r\n\r\n.dot\r\n".to_vec())),
        Ok(Event::BodyEnd { msg: m(1) }),
        Ok(Event::BodyStart {
            msg: m(2),
            line: StatusLine::ok(""),
        }),
        Ok(Event::Body(b"Subject: y\r\n\r\n".to_vec())),
        Ok(Event::BodyEnd { msg: m(2) }),
        Ok(Event::List(vec![(m(2), 200)])),
        Ok(Event::Uidl(vec![(m(2), "def".into())])),
        Ok(Event::Status {
            command: CommandKind::Retr(m(9)),
            line: StatusLine::err("no such message"),
        }),
        ok(CommandKind::Dele(m(1)), "deleted"),
        ok(CommandKind::Noop, ""),
        ok(CommandKind::Rset, ""),
        ok(CommandKind::Quit, "bye"),
    ];
    every_chunking(
        |s| {
            for c in [
                Command::User("u".into()),
                Command::Pass(b"secret word".to_vec()),
                Command::Stat,
                Command::List(None),
                Command::Uidl(None),
                Command::Retr(m(1)),
                Command::Top {
                    msg: m(2),
                    lines: 0,
                },
                Command::List(Some(m(2))),
                Command::Uidl(Some(m(2))),
                Command::Retr(m(9)),
                Command::Dele(m(1)),
                Command::Noop,
                Command::Rset,
                Command::Quit,
            ] {
                s.send(c).unwrap();
            }
        },
        server,
        tx,
        &expect,
    );
}

#[test]
fn capa_listing() {
    every_chunking(
        |s| s.send(Command::Capa).unwrap(),
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN SCRAM-SHA-256\r\nSTLS\r\nLOGIN-DELAY 900\r\n.\r\n",
        b"CAPA\r\n",
        &[Ok(Event::Capa({
            let mut c = correio_proto::capa::Capabilities::new();
            for l in [
                "TOP",
                "UIDL",
                "PIPELINING",
                "SASL PLAIN SCRAM-SHA-256",
                "STLS",
                "LOGIN-DELAY 900",
            ] {
                c.add_line(l.as_bytes()).unwrap();
            }
            c
        }))],
    );
}

#[test]
fn body_lines_longer_than_2k_and_bare_lf() {
    let long = "x".repeat(20_000);
    let server = format!("+OK\r\n+OK\r\n+OK\r\n{long}\nnext\r\n.\n+OK\r\n");
    let mut expected_body = long.clone().into_bytes();
    expected_body.extend_from_slice(b"\r\nnext\r\n");
    for chunk in [1, 7, 512, 100_000] {
        let mut s = ClientSession::new();
        s.receive(b"+OK\r\n");
        s.poll_event();
        s.send(Command::User("u".into())).unwrap();
        s.send(Command::Pass(b"p".to_vec())).unwrap();
        s.send(Command::Retr(m(1))).unwrap();
        s.send(Command::Noop).unwrap();
        let ev = run(&mut s, server.as_bytes(), chunk);
        assert_eq!(
            ev[3],
            Ok(Event::Body(expected_body.clone())),
            "chunk {chunk}"
        );
        assert_eq!(ev[4], Ok(Event::BodyEnd { msg: m(1) }));
        assert_eq!(ev[5], ok(CommandKind::Noop, ""));
    }
}

#[test]
fn status_line_longer_than_2k_is_accepted_and_8k_is_refused() {
    let mut s = ClientSession::new();
    let long = format!("+OK {}\r\n", "g".repeat(3000));
    s.receive(long.as_bytes());
    assert!(matches!(s.poll_event(), Some(Ok(Event::Greeting { .. }))));
    s.send(Command::Noop).unwrap();
    let huge = format!("+OK {}\r\n", "g".repeat(9000));
    s.receive(huge.as_bytes());
    assert_eq!(s.poll_event(), Some(Err(ClientError::LineTooLong)));
    assert!(s.is_closed());
    assert!(s.send(Command::Noop).is_err());
}

#[test]
fn missing_terminator_at_eof_is_an_error() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    s.send(Command::Apop {
        name: "u".into(),
        digest: "0".repeat(32),
    })
    .unwrap();
    s.send(Command::Retr(m(1))).unwrap();
    let mut ev = run(&mut s, b"+OK\r\n+OK\r\nhello\r\n", 3);
    s.receive_eof();
    ev.extend(std::iter::from_fn(|| s.poll_event()));
    assert_eq!(ev.last(), Some(&Err(ClientError::UnexpectedEof)));
    assert!(!ev.iter().any(|e| matches!(e, Ok(Event::BodyEnd { .. }))));
}

#[test]
fn err_with_response_codes() {
    every_chunking(
        |s| {
            s.send(Command::User("u".into())).unwrap();
            s.send(Command::Pass(b"p".to_vec())).unwrap();
        },
        b"+OK\r\n-ERR [IN-USE] mailbox locked\r\n",
        b"USER u\r\nPASS p\r\n",
        &[
            ok(CommandKind::User, ""),
            Ok(Event::Status {
                command: CommandKind::Pass,
                line: StatusLine::err_code(RespCode::InUse, "mailbox locked"),
            }),
        ],
    );
}

#[test]
fn failed_login_returns_to_authorization() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    s.send(Command::User("u".into())).unwrap();
    s.send(Command::Pass(b"p".to_vec())).unwrap();
    s.receive(b"+OK\r\n-ERR [AUTH] no\r\n");
    while s.poll_event().is_some() {}
    assert_eq!(s.phase(), correio_proto::client::Phase::Authorization);
    s.send(Command::User("u".into())).unwrap();
}

#[test]
fn stls_then_clear_buffer() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    s.send(Command::Stls).unwrap();
    assert!(s.send(Command::Noop).is_err());
    assert_eq!(s.take_transmit(), b"STLS\r\n");
    // A man in the middle appends a fake response after +OK: it must be dropped.
    s.receive(b"+OK begin TLS\r\n+OK injected\r\n");
    assert_eq!(s.poll_event(), Some(Ok(Event::StartTls)));
    assert_eq!(s.poll_event(), None);
    s.tls_started().unwrap();
    s.send(Command::Noop).unwrap();
    s.receive(b"+OK real\r\n");
    assert_eq!(
        s.poll_event(),
        Some(Ok(ok(CommandKind::Noop, "real").unwrap()))
    );
}

#[test]
fn unsolicited_data_is_an_error() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n+OK surprise\r\n");
    s.poll_event();
    assert_eq!(s.poll_event(), Some(Err(ClientError::Unsolicited)));
}

#[test]
fn garbage_greeting_is_an_error() {
    let mut s = ClientSession::new();
    s.receive(b"220 smtp.example ESMTP\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Err(ClientError::BadResponse(_)))
    ));
}

struct Scripted {
    steps: Vec<(Vec<u8>, Vec<u8>)>,
    initial: Option<Vec<u8>>,
}

impl SaslMechanism for Scripted {
    fn name(&self) -> &str {
        "x-test"
    }
    fn initial_response(&mut self) -> Option<Vec<u8>> {
        self.initial.take()
    }
    fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        if self.steps.is_empty() {
            return Err("unexpected challenge".into());
        }
        let (want, resp) = self.steps.remove(0);
        if want != challenge {
            return Err("wrong challenge".into());
        }
        Ok(resp)
    }
}

#[test]
fn sasl_exchange() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    s.auth(Box::new(Scripted {
        initial: Some(b"hello".to_vec()),
        steps: vec![(b"ch1".to_vec(), b"r1".to_vec()), (b"".to_vec(), vec![])],
    }))
    .unwrap();
    assert!(s.send(Command::Stat).is_err());
    assert_eq!(s.take_transmit(), b"AUTH X-TEST aGVsbG8=\r\n");
    s.receive(b"+ Y2gx\r\n");
    assert_eq!(s.take_transmit(), b"cjE=\r\n");
    s.receive(b"+ \r\n");
    assert_eq!(s.take_transmit(), b"\r\n");
    s.receive(b"+OK logged in\r\n");
    assert_eq!(
        s.poll_event(),
        Some(Ok(ok(CommandKind::Auth, "logged in").unwrap()))
    );
    s.send(Command::Stat).unwrap();
}

#[test]
fn sasl_long_initial_response_goes_after_empty_challenge() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    let token = vec![b'a'; 1000];
    s.auth(Box::new(Scripted {
        initial: Some(token.clone()),
        steps: vec![],
    }))
    .unwrap();
    assert_eq!(s.take_transmit(), b"AUTH X-TEST\r\n");
    s.receive(b"+ \r\n");
    let sent = s.take_transmit();
    assert_eq!(sent.len(), 1000 / 3 * 4 + 4 + 2);
    s.receive(b"-ERR [AUTH] bad token\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Ok(Event::Status {
            command: CommandKind::Auth,
            ..
        }))
    ));
    assert_eq!(s.phase(), correio_proto::client::Phase::Authorization);
}

#[test]
fn sasl_failure_cancels_with_star() {
    let mut s = ClientSession::new();
    s.receive(b"+OK\r\n");
    s.poll_event();
    s.auth(Box::new(Scripted {
        initial: None,
        steps: vec![],
    }))
    .unwrap();
    s.take_transmit();
    s.receive(b"+ Zm9v\r\n");
    assert_eq!(s.take_transmit(), b"*\r\n");
    assert!(matches!(s.poll_event(), Some(Err(ClientError::Sasl(_)))));
    s.receive(b"-ERR cancelled\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Ok(Event::Status {
            command: CommandKind::Auth,
            ..
        }))
    ));
}
