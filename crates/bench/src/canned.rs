//! The load generator's own ceiling, and the machine's.
//!
//! [`CannedServer`] is a trivial POP3 server that answers from prebuilt bytes (every
//! login succeeds, every maildrop holds the same `messages` messages of `size` bytes,
//! RETR copies one prebuilt reply): whatever rate the benchmark reaches against it is
//! the most it can measure on this machine (both share the CPUs, as they would with a
//! real server on loopback). [`loopback`] pushes the same number of bytes through
//! plain TCP sockets on loopback, the ceiling for any server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{BenchError, Credential, Report, Scenario, Settings, Target, TlsMode};

/// The prebuilt replies.
#[derive(Debug)]
struct Canned {
    stat: Vec<u8>,
    uidl: Vec<u8>,
    list: Vec<u8>,
    retr: Vec<u8>,
}

impl Canned {
    fn new(messages: usize, size: usize) -> Canned {
        let body = crate::lmtp::make_message(size, "canned");
        let mut retr = format!("+OK {} octets\r\n", body.len()).into_bytes();
        retr.extend_from_slice(&body);
        retr.extend_from_slice(b".\r\n");
        let mut uidl = b"+OK\r\n".to_vec();
        let mut list = format!("+OK {messages} messages\r\n").into_bytes();
        for i in 1..=messages {
            uidl.extend_from_slice(format!("{i} canned-{i:08}\r\n").as_bytes());
            list.extend_from_slice(format!("{i} {}\r\n", body.len()).as_bytes());
        }
        uidl.extend_from_slice(b".\r\n");
        list.extend_from_slice(b".\r\n");
        Canned {
            stat: format!("+OK {messages} {}\r\n", messages * body.len()).into_bytes(),
            uidl,
            list,
            retr,
        }
    }
}

/// A running canned server (stops when dropped).
#[derive(Debug)]
pub struct CannedServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl CannedServer {
    /// Starts on 127.0.0.1 (a port chosen by the system) in the current runtime.
    pub async fn start(messages: usize, size: usize) -> io::Result<CannedServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let canned = Arc::new(Canned::new(messages, size));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let canned = Arc::clone(&canned);
                tokio::spawn(async move {
                    let _ = serve(tcp, &canned).await;
                });
            }
        });
        Ok(CannedServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One canned connection: answer every complete line, in order, with one write per
/// batch of pipelined commands; bounded input (a line over 1 KiB ends the connection).
async fn serve(mut tcp: TcpStream, c: &Canned) -> io::Result<()> {
    let _ = tcp.set_nodelay(true);
    tcp.write_all(b"+OK canned POP3 server\r\n").await?;
    let mut inbuf = vec![0u8; 4096];
    let mut have = 0usize;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = tcp.read(&mut inbuf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let mut start = 0;
        let mut quit = false;
        while let Some(i) = memchr::memchr(b'\n', &inbuf[start..have]) {
            let line = &inbuf[start..start + i];
            start += i + 1;
            let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
            match verb.as_deref() {
                Some(b"RETR") => out.extend_from_slice(&c.retr),
                Some(b"STAT") => out.extend_from_slice(&c.stat),
                Some(b"UIDL") => out.extend_from_slice(&c.uidl),
                Some(b"LIST") => out.extend_from_slice(&c.list),
                Some(b"QUIT") => {
                    out.extend_from_slice(b"+OK bye\r\n");
                    quit = true;
                    break;
                }
                Some(b"STLS") => out.extend_from_slice(b"-ERR no TLS here\r\n"),
                _ => out.extend_from_slice(b"+OK\r\n"),
            }
            // Keep the output bounded however much is pipelined.
            if out.len() >= 256 * 1024 {
                tcp.write_all(&out).await?;
                out.clear();
            }
        }
        inbuf.copy_within(start..have, 0);
        have -= start;
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
        }
        if quit {
            return Ok(());
        }
        if have == inbuf.len() {
            return Ok(());
        }
    }
}

/// Runs `download` (pipelined, window 32) against a canned in-process server with
/// `concurrency` sessions of `messages` × `size` bytes, bounded by `count` sessions and
/// `duration`.
pub async fn self_test(
    concurrency: usize,
    messages: usize,
    size: usize,
    count: Option<u64>,
    duration: Duration,
) -> Result<Report, BenchError> {
    let server = CannedServer::start(messages, size)
        .await
        .map_err(|e| BenchError::Io("starting the canned server", e))?;
    let settings = Settings {
        target: Target {
            addr: server.addr(),
            tls: TlsMode::None,
            connector: None,
            server_name: rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| BenchError::Settings(e.to_string()))?,
            io_timeout: Duration::from_secs(10),
        },
        users: (0..concurrency)
            .map(|i| Credential {
                user: format!("u{i}"),
                pass: "p".into(),
            })
            .collect(),
        scenario: Scenario::Download {
            pipeline: true,
            window: 32,
        },
        concurrency,
        count,
        duration,
        server_pids: Vec::new(),
        label: "self-test (canned in-process server)".into(),
    };
    crate::run(settings).await
}

/// The result of [`loopback`].
#[derive(Debug, Clone, Serialize)]
pub struct LoopbackReport {
    /// Bytes moved (all streams).
    pub bytes: u64,
    /// Parallel TCP connections.
    pub streams: usize,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// MB (10^6 bytes) per second.
    pub mb_per_s: f64,
}

/// Sends `bytes` (split over `streams` connections) from one task to another through
/// loopback TCP, in 64 KiB writes, and times it. Bounded by `limit`.
pub async fn loopback(
    bytes: u64,
    streams: usize,
    limit: Duration,
) -> Result<LoopbackReport, BenchError> {
    let streams = streams.max(1);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Io("loopback bind", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Io("loopback bind", e))?;
    let per = bytes / streams as u64;
    let start = Instant::now();
    let work = async {
        let mut tasks = Vec::with_capacity(streams * 2);
        for i in 0..streams {
            let share = if i == 0 {
                per + bytes % streams as u64
            } else {
                per
            };
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = share;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..n]).await?;
                    left -= n as u64;
                }
                s.shutdown().await?;
                Ok::<u64, io::Error>(0)
            }));
            let (mut r, _) = listener.accept().await?;
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0u64;
                loop {
                    let n = r.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(got);
                    }
                    got += n as u64;
                }
            }));
        }
        let mut got = 0;
        for t in tasks {
            got += t.await.map_err(io::Error::other)??;
        }
        Ok::<u64, io::Error>(got)
    };
    let got = tokio::time::timeout(limit, work)
        .await
        .map_err(|_| BenchError::Timeout("loopback transfer"))?
        .map_err(|e| BenchError::Io("loopback transfer", e))?;
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    Ok(LoopbackReport {
        bytes: got,
        streams,
        elapsed_s: elapsed,
        mb_per_s: got as f64 / 1e6 / elapsed,
    })
}
