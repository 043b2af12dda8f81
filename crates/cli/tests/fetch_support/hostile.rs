//! A hostile POP3 server the tests run: it serves one mailbox whose messages, LIST
//! sizes and pace the test chooses (huge lines, absurd sizes, a drip of one line at a
//! time, a body without end), and counts what it sent, so tests bound the fetcher by
//! counts and limits rather than by the clock.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A message body.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes (CRLF line ends; dot-stuffed by the server).
    Bytes(Vec<u8>),
    /// `head`, then `count` times `byte`, then `tail`: a huge message made on the fly.
    Repeat {
        head: Vec<u8>,
        byte: u8,
        count: u64,
        tail: Vec<u8>,
    },
    /// `head`, then lines without end, one every `every` (a drip).
    Endless { head: Vec<u8>, every: Duration },
}

impl Body {
    /// The octets LIST reports by default.
    pub fn size(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Repeat {
                head, count, tail, ..
            } => head.len() as u64 + count + tail.len() as u64,
            Body::Endless { head, .. } => head.len() as u64 + 100,
        }
    }
}

/// What the server does.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The mailbox.
    pub messages: Vec<Body>,
    /// Sizes for LIST (as text, so they may be absurd); default: the real ones.
    pub list_sizes: Option<Vec<String>>,
    /// Lines of the UIDL listing (so they may be absurd); default `N hostile-N`.
    pub uidl_lines: Option<Vec<String>>,
    /// Pause before each line of every response but message bodies (a drip).
    pub drip: Option<Duration>,
}

/// What the server saw and did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Octets written.
    pub sent: AtomicU64,
    /// Lines dripped.
    pub dripped: AtomicU64,
    /// DELE commands received.
    pub deletes: AtomicU64,
}

/// The running server; stops when dropped.
pub struct Hostile {
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    /// Listens on 127.0.0.1 (ready when this returns) and serves `script` to every
    /// connection.
    pub fn start(script: Script) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let (script, c, s) = (script.clone(), c.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &script, &c, &s);
                });
            }
        });
        Hostile {
            port,
            counters,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Out<'a> {
    w: std::io::BufWriter<TcpStream>,
    c: &'a Counters,
    drip: Option<Duration>,
    stop: &'a AtomicBool,
}

impl Out<'_> {
    /// One line of a response (dripped if the script says so).
    fn line(&mut self, l: &[u8]) -> std::io::Result<()> {
        if let Some(d) = self.drip {
            self.w.flush()?;
            std::thread::sleep(d);
            self.c.dripped.fetch_add(1, Ordering::SeqCst);
        }
        self.raw(l)?;
        self.raw(b"\r\n")?;
        if self.drip.is_some() {
            self.w.flush()?;
        }
        Ok(())
    }

    fn raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("stopped"));
        }
        self.c.sent.fetch_add(b.len() as u64, Ordering::SeqCst);
        self.w.write_all(b)
    }

    /// Message bytes, dot-stuffed.
    fn body(&mut self, b: &[u8], at_line_start: &mut bool) -> std::io::Result<()> {
        let mut start = 0;
        for (i, &x) in b.iter().enumerate() {
            if *at_line_start && x == b'.' {
                self.raw(&b[start..i])?;
                self.raw(b".")?;
                start = i;
            }
            *at_line_start = x == b'\n';
        }
        self.raw(&b[start..])
    }
}

fn serve(conn: TcpStream, script: &Script, c: &Counters, stop: &AtomicBool) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut o = Out {
        w: std::io::BufWriter::with_capacity(64 * 1024, conn),
        c,
        drip: script.drip,
        stop,
    };
    o.line(b"+OK hostile POP3 server ready")?;
    o.w.flush()?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<usize> = words.next().and_then(|w| w.parse().ok());
        let n = script.messages.len();
        match cmd.as_str() {
            "CAPA" => {
                o.line(b"+OK")?;
                o.line(b"USER")?;
                o.line(b"UIDL")?;
                o.line(b"TOP")?;
                o.line(b"SASL PLAIN XOAUTH2 OAUTHBEARER")?;
                o.line(b".")?;
            }
            "USER" | "PASS" | "NOOP" | "RSET" => o.line(b"+OK")?,
            // Takes the SASL exchange's first client line; PLAIN logs in (any
            // credentials), the OAuth2 mechanisms are refused.
            "AUTH" => {
                if line.split_whitespace().count() < 3 {
                    o.line(b"+ ")?;
                    o.w.flush()?;
                    let mut response = String::new();
                    r.read_line(&mut response)?;
                }
                let plain = line
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"));
                if plain {
                    o.line(b"+OK logged in")?
                } else {
                    o.line(b"-ERR [AUTH] refused")?
                }
            }
            "DELE" => {
                c.deletes.fetch_add(1, Ordering::SeqCst);
                o.line(b"+OK")?
            }
            "STAT" => {
                let total: u64 = script.messages.iter().map(Body::size).sum();
                o.line(format!("+OK {n} {total}").as_bytes())?
            }
            "LIST" => {
                o.line(b"+OK")?;
                for (i, m) in script.messages.iter().enumerate() {
                    let size = match &script.list_sizes {
                        Some(v) => v[i].clone(),
                        None => m.size().to_string(),
                    };
                    o.line(format!("{} {size}", i + 1).as_bytes())?;
                }
                o.line(b".")?;
            }
            "UIDL" => {
                o.line(b"+OK")?;
                match &script.uidl_lines {
                    Some(lines) => {
                        for l in lines {
                            o.line(l.as_bytes())?;
                        }
                    }
                    None => {
                        for i in 1..=n {
                            o.line(format!("{i} hostile-{i}").as_bytes())?;
                        }
                    }
                }
                o.line(b".")?;
            }
            "RETR" | "TOP" => {
                let Some(m) = arg.filter(|&a| a >= 1 && a <= n) else {
                    o.line(b"-ERR no such message")?;
                    o.w.flush()?;
                    continue;
                };
                o.line(b"+OK message follows")?;
                let mut sol = true;
                match &script.messages[m - 1] {
                    Body::Bytes(b) => o.body(b, &mut sol)?,
                    Body::Repeat {
                        head,
                        byte,
                        count,
                        tail,
                    } => {
                        o.body(head, &mut sol)?;
                        let chunk = vec![*byte; 64 * 1024];
                        let mut left = *count;
                        while left > 0 {
                            let k = left.min(chunk.len() as u64) as usize;
                            o.body(&chunk[..k], &mut sol)?;
                            left -= k as u64;
                        }
                        o.body(tail, &mut sol)?;
                    }
                    Body::Endless { head, every } => {
                        o.body(head, &mut sol)?;
                        o.w.flush()?;
                        loop {
                            std::thread::sleep(*every);
                            c.dripped.fetch_add(1, Ordering::SeqCst);
                            o.body(b"more\r\n", &mut sol)?;
                            o.w.flush()?;
                        }
                    }
                }
                if !sol {
                    o.raw(b"\r\n")?;
                }
                o.line(b".")?;
            }
            "QUIT" => {
                o.line(b"+OK bye")?;
                o.w.flush()?;
                return Ok(());
            }
            _ => o.line(b"-ERR unknown command")?,
        }
        o.w.flush()?;
    }
}
