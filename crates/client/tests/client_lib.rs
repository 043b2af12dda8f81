//! The async client against scripted servers over in-memory pipes.

use std::time::Duration;

use correio_client::{BodySink, Client, Error, Request, Window};
use correio_proto::{MsgNum, StatusLine};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn m(n: u32) -> MsgNum {
    MsgNum::new(n).unwrap()
}

/// A server that answers each expected command line with a canned reply; it reads
/// exactly the bytes it expects, so pipelined commands are checked byte for byte.
async fn scripted(
    mut io: DuplexStream,
    greeting: &'static [u8],
    script: Vec<(&'static [u8], Vec<u8>)>,
) {
    io.write_all(greeting).await.unwrap();
    for (expect, reply) in script {
        let mut got = vec![0; expect.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expect)
        );
        io.write_all(&reply).await.unwrap();
    }
}

#[tokio::test]
async fn login_list_retr_quit() {
    let (a, b) = tokio::io::duplex(64);
    let server = tokio::spawn(scripted(
        b,
        b"+OK ready <1.2@host>\r\n",
        vec![
            (b"CAPA\r\n", b"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n".to_vec()),
            (
                b"APOP bob 9efd8f742dc138171923c50a4da31186\r\n",
                b"+OK\r\n".to_vec(),
            ),
            (b"STAT\r\n", b"+OK 1 9\r\n".to_vec()),
            (b"LIST\r\n", b"+OK\r\n1 9\r\n.\r\n".to_vec()),
            (b"UIDL\r\n", b"+OK\r\n1 u-1\r\n.\r\n".to_vec()),
            (b"RETR 1\r\n", b"+OK\r\n..hi\r\nyo\r\n.\r\n".to_vec()),
            (b"TOP 1 0\r\n", b"+OK\r\nyo\r\n.\r\n".to_vec()),
            (b"DELE 1\r\n", b"+OK\r\n".to_vec()),
            (b"RSET\r\n", b"+OK\r\n".to_vec()),
            (b"NOOP\r\n", b"+OK\r\n".to_vec()),
            (b"QUIT\r\n", b"+OK bye\r\n".to_vec()),
        ],
    ));
    let mut c = Client::connect(a).await.unwrap();
    assert_eq!(c.apop_timestamp(), Some("<1.2@host>"));
    assert!(c.capa().await.unwrap().pipelining);
    // md5("<1.2@host>" + "pw")
    c.apop("bob", b"pw").await.unwrap();
    assert_eq!(c.stat().await.unwrap(), (1, 9));
    assert_eq!(c.list().await.unwrap(), vec![(m(1), 9)]);
    assert_eq!(c.uidl().await.unwrap(), vec![(m(1), "u-1".to_owned())]);
    let mut out = Vec::new();
    assert_eq!(c.retr(m(1), &mut out).await.unwrap(), 9);
    assert_eq!(out, b".hi\r\nyo\r\n");
    out.clear();
    c.top(m(1), 0, &mut out).await.unwrap();
    assert_eq!(out, b"yo\r\n");
    c.dele(m(1)).await.unwrap();
    c.rset().await.unwrap();
    c.noop().await.unwrap();
    c.quit().await.unwrap();
    server.await.unwrap();
}

#[derive(Default)]
struct Collect {
    bodies: Vec<(MsgNum, Vec<u8>)>,
    refused: Vec<MsgNum>,
}

impl BodySink for Collect {
    fn start(&mut self, msg: MsgNum) -> std::io::Result<()> {
        self.bodies.push((msg, Vec::new()));
        Ok(())
    }
    fn data(&mut self, _msg: MsgNum, bytes: &[u8]) -> std::io::Result<()> {
        self.bodies.last_mut().unwrap().1.extend_from_slice(bytes);
        Ok(())
    }
    fn end(&mut self, _msg: MsgNum) -> std::io::Result<()> {
        Ok(())
    }
    fn refused(&mut self, msg: MsgNum, _line: &StatusLine) -> std::io::Result<()> {
        self.refused.push(msg);
        Ok(())
    }
}

#[tokio::test]
async fn pipelined_retr_and_dele_window() {
    let (a, b) = tokio::io::duplex(1 << 16);
    // The server insists on receiving all three RETRs before answering: only a client
    // that really pipelines gets through.
    let server = tokio::spawn(scripted(
        b,
        b"+OK\r\n",
        vec![
            (b"USER u\r\n", b"+OK\r\n".to_vec()),
            (b"PASS p\r\n", b"+OK\r\n".to_vec()),
            (
                b"RETR 1\r\nRETR 2\r\nRETR 3\r\n",
                b"+OK\r\none\r\n.\r\n-ERR gone\r\n+OK\r\nthree\r\n.\r\n".to_vec(),
            ),
            (b"DELE 1\r\nDELE 3\r\n", b"+OK\r\n-ERR no\r\n".to_vec()),
        ],
    ));
    let mut c = Client::connect(a).await.unwrap();
    c.login("u", b"p").await.unwrap();
    let reqs: Vec<Request> = (1..=3)
        .map(|n| Request {
            msg: m(n),
            top_lines: None,
            size: 10,
        })
        .collect();
    let mut sink = Collect::default();
    c.retr_many(
        &reqs,
        Window {
            max_commands: 8,
            max_bytes: 100,
        },
        &mut sink,
    )
    .await
    .unwrap();
    assert_eq!(
        sink.bodies,
        vec![(m(1), b"one\r\n".to_vec()), (m(3), b"three\r\n".to_vec())]
    );
    assert_eq!(sink.refused, vec![m(2)]);
    let refused = c.dele_many(&[m(1), m(3)], Window::default()).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, m(3));
    server.await.unwrap();
}

/// The pipeline does not drain between two batches: the server answers nothing until
/// it has the RETRs of the first batch *and* those of the second that fit the window,
/// so only a client that sends the next batch before it returns from the first gets
/// through; CAPA, LIST and UIDL likewise come in one flight.
#[tokio::test]
async fn the_next_batch_is_on_the_wire_before_this_one_returns() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(scripted(
        b,
        b"+OK\r\n",
        vec![
            (b"USER u\r\n", b"+OK\r\n".to_vec()),
            (b"PASS p\r\n", b"+OK\r\n".to_vec()),
            (
                b"CAPA\r\nLIST\r\nUIDL\r\n",
                b"+OK\r\nPIPELINING\r\n.\r\n+OK\r\n1 5\r\n2 5\r\n3 5\r\n.\r\n-ERR no UIDL\r\n"
                    .to_vec(),
            ),
            (
                b"RETR 1\r\nRETR 2\r\nRETR 3\r\n",
                b"+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n.\r\n+OK\r\nthree\r\n.\r\n".to_vec(),
            ),
            (b"QUIT\r\n", b"+OK\r\n".to_vec()),
        ],
    ));
    let mut c = Client::connect(a).await.unwrap();
    c.login("u", b"p").await.unwrap();
    let (list, uidl) = c.capa_list_uidl().await.unwrap();
    assert!(c.capabilities().unwrap().pipelining);
    let list = list.unwrap();
    assert_eq!(list.len(), 3);
    assert!(matches!(
        uidl,
        Err(Error::Refused {
            command: "UIDL",
            ..
        })
    ));
    let reqs: Vec<Request> = list
        .iter()
        .map(|&(msg, size)| Request {
            msg,
            top_lines: None,
            size,
        })
        .collect();
    let window = Window {
        max_commands: 8,
        max_bytes: 1000,
    };
    let mut first = Collect::default();
    let sent = c
        .retr_many_ahead(&reqs[..1], 0, &reqs[1..], window, &mut first)
        .await
        .unwrap();
    assert_eq!(sent, 2, "both requests of the next batch fit the window");
    assert_eq!(first.bodies, vec![(m(1), b"one\r\n".to_vec())]);
    let mut second = Collect::default();
    let sent = c
        .retr_many_ahead(&reqs[1..], sent, &[], window, &mut second)
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert_eq!(
        second.bodies,
        vec![(m(2), b"two\r\n".to_vec()), (m(3), b"three\r\n".to_vec())]
    );
    c.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn silent_server_times_out() {
    let (a, _b) = tokio::io::duplex(64);
    let r = Client::connect_with_timeout(a, Duration::from_millis(100)).await;
    assert!(matches!(r, Err(Error::Timeout(_))));
}

#[tokio::test]
async fn missing_terminator_is_an_error() {
    let (a, mut b) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        b.write_all(b"+OK\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = b.read(&mut buf).await.unwrap();
        b.write_all(b"+OK\r\n").await.unwrap();
        let _ = b.read(&mut buf).await.unwrap();
        b.write_all(b"+OK\r\n").await.unwrap();
        let _ = b.read(&mut buf).await.unwrap();
        b.write_all(b"+OK\r\npartial\r\n").await.unwrap();
        drop(b);
    });
    let mut c = Client::connect(a).await.unwrap();
    c.login("u", b"p").await.unwrap();
    let mut out = Vec::new();
    let e = c.retr(m(1), &mut out).await.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    server.await.unwrap();
}
