//! The client machine driven against the server machine in memory: two sans-IO state
//! machines joined by byte queues, with the server's messages streamed through the
//! real `DotStuffer`. For arbitrary stored messages (LF or CRLF, dot lines, missing
//! final newline) and arbitrary chunkings, a pipelined session must deliver every
//! message byte-exact (CRLF), LIST sizes must equal what RETR delivered, and QUIT must
//! commit exactly the DELEs.

use correio_proto::LineFramer;
use correio_proto::client::{ClientSession, Event as CEvent};
use correio_proto::command::{Command, MsgNum};
use correio_proto::server::{
    Action, AuthOutcome, ConnectionInfo, Event, MessageInfo, ServerConfig, ServerSession,
    StreamKind,
};
use correio_proto::stuff::{DotStuffer, wire_size};
use proptest::prelude::*;

/// What the client saw, and what the server committed.
#[derive(Debug, Default)]
struct Outcome {
    list: Vec<(MsgNum, u64)>,
    uidl: Vec<(MsgNum, String)>,
    bodies: Vec<Vec<u8>>,
    tops: Vec<Vec<u8>>,
    committed: Option<Vec<usize>>,
    statuses_ok: usize,
}

fn run_session(stored: &[Vec<u8>], chunk: usize, stuff_chunk: usize) -> Outcome {
    let mut server = ServerSession::new(
        ServerConfig::default(),
        ConnectionInfo {
            tls: true,
            stls_available: false,
            cleartext_login_allowed: false,
        },
        None,
    );
    let mut framer = LineFramer::new(255);
    let mut client = ClientSession::new();
    let mut c2s: Vec<u8> = Vec::new();
    let mut s2c: Vec<u8> = Vec::new();
    let mut out = Outcome::default();
    let n = stored.len();
    // The greeting first: the client queues nothing before it.
    client.receive(&server.take_output());
    assert!(matches!(
        client.poll_event(),
        Some(Ok(CEvent::Greeting { .. }))
    ));

    // The whole session pipelined at once (the server advertises PIPELINING).
    client.send(Command::User("alice".into())).unwrap();
    client.send(Command::Pass(b"pw".to_vec())).unwrap();
    client.send(Command::List(None)).unwrap();
    client.send(Command::Uidl(None)).unwrap();
    for i in 1..=n {
        let m = MsgNum::new(i as u32).unwrap();
        client.send(Command::Retr(m)).unwrap();
        client.send(Command::Top { msg: m, lines: 1 }).unwrap();
        if i % 2 == 1 {
            client.send(Command::Dele(m)).unwrap();
        }
    }
    client.send(Command::Quit).unwrap();

    let mut current: Option<Vec<u8>> = None;
    let mut top_next = false;
    for _round in 0..100_000 {
        c2s.extend(client.take_transmit());
        // Client -> server, `chunk` bytes at a time.
        if !c2s.is_empty() && !server.is_closed() {
            let take = chunk.min(c2s.len());
            let piece: Vec<u8> = c2s.drain(..take).collect();
            framer.push(&piece);
            while let Some(line) = framer.next_line() {
                let mut action = server.handle_line(line).unwrap();
                while let Some(a) = action {
                    action = match a {
                        Action::Authenticate(c) => {
                            assert_eq!(
                                (c.user.as_str(), c.password.as_slice()),
                                ("alice", &b"pw"[..])
                            );
                            server
                                .handle_event(Event::Auth(AuthOutcome::Success { user: c.user }))
                                .unwrap()
                        }
                        Action::OpenMaildrop { .. } => server
                            .handle_event(Event::MaildropOpened(Ok(stored
                                .iter()
                                .enumerate()
                                .map(|(i, m)| MessageInfo {
                                    size: wire_size(m),
                                    uid: format!("uid-{i}"),
                                })
                                .collect())))
                            .unwrap(),
                        Action::StreamMessage { index, kind } => {
                            assert!(
                                server
                                    .handle_event(Event::MessageOpened(Ok(())))
                                    .unwrap()
                                    .is_none()
                            );
                            s2c.extend(server.take_output());
                            let mut st = match kind {
                                StreamKind::Retr => DotStuffer::new(),
                                StreamKind::Top(k) => DotStuffer::top(k),
                            };
                            let before = s2c.len();
                            for piece in stored[index].chunks(stuff_chunk.max(1)) {
                                if !st.feed(piece, &mut s2c) {
                                    break;
                                }
                            }
                            st.finish(&mut s2c);
                            let bytes = (s2c.len() - before) as u64;
                            server.handle_event(Event::MessageSent { bytes }).unwrap()
                        }
                        Action::Commit { deletions } => {
                            out.committed = Some(deletions);
                            server.handle_event(Event::Committed(Ok(()))).unwrap()
                        }
                        Action::Close => None,
                        other => panic!("unexpected action {other:?}"),
                    };
                }
                s2c.extend(server.take_output());
                if server.is_closed() {
                    break;
                }
            }
        }
        // Server -> client, `chunk` bytes at a time.
        if !s2c.is_empty() {
            let take = chunk.min(s2c.len());
            let piece: Vec<u8> = s2c.drain(..take).collect();
            client.receive(&piece);
        } else if server.is_closed() && c2s.is_empty() {
            client.receive_eof();
        }
        while let Some(ev) = client.poll_event() {
            match ev.expect("client failed") {
                CEvent::List(l) => out.list = l,
                CEvent::Uidl(u) => out.uidl = u,
                CEvent::BodyStart { .. } => current = Some(Vec::new()),
                CEvent::Body(b) => current.as_mut().expect("body outside RETR").extend(b),
                CEvent::BodyEnd { .. } => {
                    let body = current.take().unwrap();
                    if top_next {
                        out.tops.push(body);
                    } else {
                        out.bodies.push(body);
                    }
                    top_next = !top_next;
                }
                CEvent::Status { line, .. } => {
                    assert!(line.is_ok(), "{line:?}");
                    out.statuses_ok += 1;
                }
                _ => {}
            }
        }
        if client.is_closed() && s2c.is_empty() {
            return out;
        }
    }
    panic!("session did not finish");
}

/// A stored message as a client must receive it: CRLF line ends, a final CRLF.
fn expected_wire(m: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut prev = 0u8;
    for &b in m {
        if b == b'\n' && prev != b'\r' {
            v.push(b'\r');
        }
        v.push(b);
        prev = b;
    }
    if !v.is_empty() && !v.ends_with(b"\r\n") {
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[ -~]{0,30}".prop_map(String::into_bytes),
        "\\.[ -~]{0,10}".prop_map(String::into_bytes),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
    ];
    (
        prop::collection::vec((line, any::<bool>()), 1..12),
        any::<bool>(),
    )
        .prop_map(|(lines, final_nl)| {
            let mut m = b"Subject: t\n\n".to_vec();
            let k = lines.len();
            for (i, (l, crlf)) in lines.into_iter().enumerate() {
                m.extend(l);
                if i + 1 < k || final_nl {
                    m.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn pipelined_session_is_byte_exact(
        msgs in prop::collection::vec(message(), 0..5),
        chunk in 1usize..64,
        stuff_chunk in 1usize..16,
    ) {
        let out = run_session(&msgs, chunk, stuff_chunk);
        prop_assert_eq!(out.bodies.len(), msgs.len());
        prop_assert_eq!(out.list.len(), msgs.len());
        prop_assert_eq!(out.uidl.len(), msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            let want = expected_wire(m);
            prop_assert_eq!(&out.bodies[i], &want);
            // Invariant 4: the size LIST reports is exactly what RETR sent.
            prop_assert_eq!(out.list[i].1, out.bodies[i].len() as u64);
            // TOP 1: the header, the blank line, one body line.
            prop_assert!(want.starts_with(&out.tops[i]));
            prop_assert!(out.tops[i].starts_with(b"Subject: t\r\n\r\n"));
        }
        let dels: Vec<usize> = (0..msgs.len()).filter(|i| i % 2 == 0).collect();
        prop_assert_eq!(out.committed, Some(dels));
    }
}

#[test]
fn empty_maildrop_and_one_byte_chunks() {
    let out = run_session(&[], 1, 1);
    assert!(out.bodies.is_empty() && out.list.is_empty());
    assert_eq!(out.committed, Some(vec![]));
    let msgs = vec![b"Subject: t\n\n.\n..\nend".to_vec()];
    let out = run_session(&msgs, 1, 1);
    assert_eq!(out.bodies[0], b"Subject: t\r\n\r\n.\r\n..\r\nend\r\n");
    assert_eq!(out.tops[0], b"Subject: t\r\n\r\n.\r\n");
}
