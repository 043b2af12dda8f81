//! The client state machine driven against the server state machine in memory: two
//! byte queues, no sockets. Every command, pipelined in one go, with the bytes moved in
//! every chunk size from 1 to 512 in both directions.

use correio_proto::client::{ClientSession, CommandKind, Event, SaslMechanism};
use correio_proto::server::{
    Action, AuthOutcome, ConnectionInfo, Event as SEvent, MessageInfo, ServerConfig, ServerSession,
    StreamKind,
};
use correio_proto::{Command, DotStuffer, LineFramer, MsgNum, wire_size};

/// Stored messages (LF line ends, as in a Maildir).
fn store() -> Vec<Vec<u8>> {
    vec![
        b"Subject: a\n\nhello\n.dot line\n..two\n".to_vec(),
        format!("Subject: b\n\n{}\nshort\n", "z".repeat(3000)).into_bytes(),
        b"Subject: c\nX: y\n\nline1\nline2\nline3\n".to_vec(),
        b"Subject: d\n\n".to_vec(),
    ]
}

fn crlf(m: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(m)
        .replace('\n', "\r\n")
        .into_bytes()
}

fn m(n: u32) -> MsgNum {
    MsgNum::new(n).unwrap()
}

/// The server side of the in-memory connection: framer + machine + a toy store.
struct Server {
    framer: LineFramer,
    session: ServerSession,
    msgs: Vec<Vec<u8>>,
    out: Vec<u8>,
    committed: Option<Vec<usize>>,
    closed: bool,
}

impl Server {
    fn new() -> Server {
        let mut session = ServerSession::new(
            ServerConfig::default(),
            ConnectionInfo {
                tls: false,
                stls_available: false,
                cleartext_login_allowed: true,
            },
            Some("<1.2@test>".into()),
        );
        let out = session.take_output();
        Server {
            framer: LineFramer::new(session.max_line()),
            session,
            msgs: store(),
            out,
            committed: None,
            closed: false,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
        loop {
            if self.closed {
                return;
            }
            self.framer.set_max_line(self.session.max_line());
            let Some(line) = self.framer.next_line() else {
                return;
            };
            let action = self.session.handle_line(line).unwrap();
            self.out.extend(self.session.take_output());
            self.act(action);
        }
    }

    fn act(&mut self, mut action: Option<Action>) {
        while let Some(a) = action {
            action = match a {
                Action::Authenticate(c) => self
                    .session
                    .handle_event(SEvent::Auth(if c.user == "u" && c.password == b"p w" {
                        AuthOutcome::Success { user: c.user }
                    } else {
                        AuthOutcome::Failure
                    }))
                    .unwrap(),
                Action::SaslStart {
                    mechanism,
                    initial_response,
                } => {
                    assert_eq!(mechanism, "PLAIN");
                    let ok = initial_response.as_deref() == Some(b"\0u\0p w");
                    self.session
                        .handle_event(SEvent::Auth(if ok {
                            AuthOutcome::Success { user: "u".into() }
                        } else {
                            AuthOutcome::Failure
                        }))
                        .unwrap()
                }
                Action::OpenMaildrop { .. } => {
                    let infos = self
                        .msgs
                        .iter()
                        .enumerate()
                        .map(|(i, msg)| MessageInfo {
                            size: wire_size(msg),
                            uid: format!("uid-{i}"),
                        })
                        .collect();
                    self.session
                        .handle_event(SEvent::MaildropOpened(Ok(infos)))
                        .unwrap()
                }
                Action::StreamMessage { index, kind } => {
                    let next = self
                        .session
                        .handle_event(SEvent::MessageOpened(Ok(())))
                        .unwrap();
                    assert!(next.is_none());
                    self.out.extend(self.session.take_output());
                    let mut st = match kind {
                        StreamKind::Retr => DotStuffer::new(),
                        StreamKind::Top(n) => DotStuffer::top(n),
                    };
                    let before = self.out.len();
                    for chunk in self.msgs[index].chunks(7) {
                        if !st.feed(chunk, &mut self.out) {
                            break;
                        }
                    }
                    st.finish(&mut self.out);
                    let bytes = (self.out.len() - before) as u64;
                    self.session
                        .handle_event(SEvent::MessageSent { bytes })
                        .unwrap()
                }
                Action::Commit { deletions } => {
                    self.committed = Some(deletions);
                    self.session
                        .handle_event(SEvent::Committed(Ok(())))
                        .unwrap()
                }
                Action::Close => {
                    self.closed = true;
                    None
                }
                other => panic!("unexpected action {other:?}"),
            };
            self.out.extend(self.session.take_output());
        }
    }
}

/// Moves bytes both ways in chunks of `chunk` until nothing moves; returns the
/// client's events with body chunks merged.
fn pump(client: &mut ClientSession, server: &mut Server, chunk: usize) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut c2s: Vec<u8> = Vec::new();
    let mut s2c: Vec<u8> = Vec::new();
    for _ in 0..1_000_000 {
        c2s.extend(client.take_transmit());
        s2c.extend(std::mem::take(&mut server.out));
        if c2s.is_empty() && s2c.is_empty() {
            break;
        }
        if !c2s.is_empty() {
            let n = chunk.min(c2s.len());
            server.receive(&c2s[..n]);
            c2s.drain(..n);
        }
        if !s2c.is_empty() {
            let n = chunk.min(s2c.len());
            client.receive(&s2c[..n]);
            s2c.drain(..n);
        }
        while let Some(e) = client.poll_event() {
            let e = e.unwrap_or_else(|err| panic!("client error {err} at chunk {chunk}"));
            match (events.last_mut(), e) {
                (Some(Event::Body(prev)), Event::Body(more)) => prev.extend(more),
                (_, e) => events.push(e),
            }
        }
    }
    events
}

#[test]
fn every_command_pipelined_in_every_chunking() {
    let msgs = store();
    for chunk in 1..=512 {
        let mut server = Server::new();
        let mut client = ClientSession::new();
        let greeting = pump(&mut client, &mut server, chunk);
        match &greeting[..] {
            [Event::Greeting { apop_timestamp, .. }] => {
                assert_eq!(apop_timestamp.as_deref(), Some("<1.2@test>"))
            }
            other => panic!("{other:?}"),
        }
        let cmds = vec![
            Command::Capa,
            Command::User("u".into()),
            Command::Pass(b"p w".to_vec()),
            Command::Stat,
            Command::List(None),
            Command::Uidl(None),
            Command::Retr(m(1)),
            Command::Retr(m(2)),
            Command::Top {
                msg: m(3),
                lines: 1,
            },
            Command::Retr(m(4)),
            Command::List(Some(m(2))),
            Command::Uidl(Some(m(3))),
            Command::Dele(m(1)),
            Command::Retr(m(1)),
            Command::Noop,
            Command::Rset,
            Command::Dele(m(2)),
            Command::Dele(m(4)),
            Command::Retr(m(9)),
            Command::Quit,
        ];
        for c in cmds {
            client.send(c).unwrap();
        }
        let ev = pump(&mut client, &mut server, chunk);
        let sizes: Vec<(MsgNum, u64)> = msgs
            .iter()
            .enumerate()
            .map(|(i, x)| (m(i as u32 + 1), wire_size(x)))
            .collect();
        let mut i = ev.iter();
        assert!(matches!(i.next(), Some(Event::Capa(c)) if c.uidl && c.pipelining && c.top));
        assert!(
            matches!(i.next(), Some(Event::Status { command: CommandKind::User, line }) if line.is_ok())
        );
        assert!(
            matches!(i.next(), Some(Event::Status { command: CommandKind::Pass, line }) if line.is_ok())
        );
        assert_eq!(
            i.next(),
            Some(&Event::Stat {
                count: 4,
                octets: sizes.iter().map(|s| s.1).sum()
            })
        );
        assert_eq!(i.next(), Some(&Event::List(sizes.clone())));
        assert_eq!(
            i.next(),
            Some(&Event::Uidl(
                (1..=4).map(|n| (m(n), format!("uid-{}", n - 1))).collect()
            ))
        );
        let mut body = |n: u32, expect: Vec<u8>| {
            assert!(
                matches!(i.next(), Some(Event::BodyStart { msg, .. }) if *msg == m(n)),
                "chunk {chunk}"
            );
            if !expect.is_empty() {
                assert_eq!(
                    i.next(),
                    Some(&Event::Body(expect)),
                    "chunk {chunk} msg {n}"
                );
            }
            assert_eq!(i.next(), Some(&Event::BodyEnd { msg: m(n) }));
        };
        body(1, crlf(&msgs[0]));
        body(2, crlf(&msgs[1]));
        body(3, b"Subject: c\r\nX: y\r\n\r\nline1\r\n".to_vec());
        body(4, crlf(&msgs[3]));
        assert_eq!(i.next(), Some(&Event::List(vec![sizes[1]])));
        assert_eq!(i.next(), Some(&Event::Uidl(vec![(m(3), "uid-2".into())])));
        let status = |e: Option<&Event>, kind: CommandKind, ok: bool| match e {
            Some(Event::Status { command, line }) => {
                assert_eq!(*command, kind);
                assert_eq!(line.is_ok(), ok, "{kind:?}: {line:?}");
            }
            other => panic!("{kind:?}: {other:?}"),
        };
        status(i.next(), CommandKind::Dele(m(1)), true);
        status(i.next(), CommandKind::Retr(m(1)), false); // deleted
        status(i.next(), CommandKind::Noop, true);
        status(i.next(), CommandKind::Rset, true);
        status(i.next(), CommandKind::Dele(m(2)), true);
        status(i.next(), CommandKind::Dele(m(4)), true);
        status(i.next(), CommandKind::Retr(m(9)), false);
        status(i.next(), CommandKind::Quit, true);
        assert_eq!(i.next(), None);
        assert_eq!(
            server.committed.as_deref(),
            Some(&[1, 3][..]),
            "RSET undid DELE 1"
        );
        assert!(client.is_closed());
    }
}

struct Plain;
impl SaslMechanism for Plain {
    fn name(&self) -> &str {
        "PLAIN"
    }
    fn initial_response(&mut self) -> Option<Vec<u8>> {
        Some(b"\0u\0p w".to_vec())
    }
    fn step(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, String> {
        Err("PLAIN has no second step".into())
    }
}

#[test]
fn sasl_plain_then_pipelined_transaction() {
    for chunk in [1, 2, 3, 5, 64, 512] {
        let mut server = Server::new();
        let mut client = ClientSession::new();
        pump(&mut client, &mut server, chunk);
        client.auth(Box::new(Plain)).unwrap();
        let ev = pump(&mut client, &mut server, chunk);
        assert!(
            matches!(&ev[..], [Event::Status { command: CommandKind::Auth, line }] if line.is_ok()),
            "{ev:?}"
        );
        client.send(Command::Stat).unwrap();
        client.send(Command::Quit).unwrap();
        let ev = pump(&mut client, &mut server, chunk);
        assert!(matches!(ev[0], Event::Stat { count: 4, .. }));
        assert_eq!(server.committed.as_deref(), Some(&[][..]));
    }
}

#[test]
fn wrong_password_then_retry() {
    let mut server = Server::new();
    let mut client = ClientSession::new();
    pump(&mut client, &mut server, 512);
    client.send(Command::User("u".into())).unwrap();
    client.send(Command::Pass(b"nope".to_vec())).unwrap();
    let ev = pump(&mut client, &mut server, 3);
    assert!(matches!(&ev[1], Event::Status { command: CommandKind::Pass, line } if !line.is_ok()));
    client.send(Command::User("u".into())).unwrap();
    client.send(Command::Pass(b"p w".to_vec())).unwrap();
    client.send(Command::Quit).unwrap();
    let ev = pump(&mut client, &mut server, 3);
    assert!(matches!(&ev[1], Event::Status { command: CommandKind::Pass, line } if line.is_ok()));
}
