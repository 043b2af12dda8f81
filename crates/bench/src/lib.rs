//! `correio-bench`: the POP3 load generator behind `correio bench`.
//!
//! Point it at any POP3 server ([`Target`]), give it users ([`Credential`]) and a
//! [`Scenario`], and [`run`] drives `concurrency` sessions at once until `count`
//! sessions have been started or `duration` has passed, whichever comes first, then
//! returns a [`Report`]: rates, HDR latency percentiles, errors, and — given the
//! server's PIDs — the server's CPU time per message / MB / session and its resident
//! memory, read from `/proc`.
//!
//! Contract:
//! - Each worker uses only its own users (worker `i` takes users `i`, `i+c`, `i+2c`…),
//!   so no two sessions ever want the same maildrop at once (servers lock it).
//!   Hence at least `concurrency` users are needed.
//! - Every connect, read and write is bounded by the target's I/O timeout; after the
//!   duration no new session and no new RETR starts; the whole run is cut off
//!   (remaining workers aborted, counted as errors) at duration + 2 × I/O timeout.
//! - Memory is bounded: one read buffer per session, a pipelining window of at most
//!   `window` outstanding RETRs, bodies scanned and dropped, never stored.
//! - An error ends that session only; the run goes on and reports it.
//!
//! [`self_test`] runs the download scenario against a trivial canned in-process server
//! ([`canned`]) to show this tool's own ceiling; [`loopback`] measures the same bytes
//! through plain TCP sockets: the machine's limit for any server.
#![forbid(unsafe_code)]

pub mod canned;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod lmtp;
mod stats;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use crate::canned::{LoopbackReport, loopback, self_test};
pub use crate::conn::{Target, TlsMode, insecure_connector};
pub use crate::stats::{Latency, Report, ServerUsage};

use crate::conn::Pop3;
use crate::stats::{Tally, TreeSample, sample_trees, self_cpu_s, usage};

/// Why a session (or a run) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket or file operation failed. (The I/O error is part of the message,
    /// not a `source`, so error chains do not print it twice.)
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// A socket operation took longer than the I/O timeout.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server closed the connection in the middle of a reply.
    #[error("server closed the connection")]
    Closed,
    /// The server answered `-ERR` (or another unwanted reply) to this command.
    #[error("{0} refused: {1}")]
    Refused(&'static str, String),
    /// The server's bytes did not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The settings cannot work (e.g. fewer users than sessions).
    #[error("{0}")]
    Settings(String),
}

/// One user's login.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub user: String,
    /// Password.
    pub pass: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Parses `user:password` (the password may contain colons).
    pub fn parse(s: &str) -> Result<Credential, BenchError> {
        let (user, pass) = s
            .split_once(':')
            .ok_or_else(|| BenchError::Settings(format!("{:?} is not user:password", short(s))))?;
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(BenchError::Settings(format!(
                "bad user name in {:?}",
                short(user)
            )));
        }
        if pass.contains(['\r', '\n']) {
            return Err(BenchError::Settings(
                "password contains a line break".into(),
            ));
        }
        Ok(Credential {
            user: user.to_owned(),
            pass: pass.to_owned(),
        })
    }

    /// Reads a users file: one `user:password` per line; empty lines and lines
    /// starting with `#` are skipped. At most 1,000,000 users.
    pub fn read_file(path: &Path) -> Result<Vec<Credential>, BenchError> {
        let err =
            |e: std::io::Error| BenchError::Settings(format!("users file {}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(err)?;
        if meta.len() > 256 * 1024 * 1024 {
            return Err(BenchError::Settings(format!(
                "{}: users file larger than 256 MiB",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(err)?;
        Credential::parse_lines(&text, &path.display().to_string())
    }

    /// Parses the text of a users file (see [`Credential::read_file`]); `origin` names
    /// it in errors.
    pub fn parse_lines(text: &str, origin: &str) -> Result<Vec<Credential>, BenchError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if out.len() >= 1_000_000 {
                return Err(BenchError::Settings("more than 1,000,000 users".into()));
            }
            out.push(
                Credential::parse(line)
                    .map_err(|e| BenchError::Settings(format!("{origin} line {}: {e}", i + 1)))?,
            );
        }
        Ok(out)
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// What each session does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Scenario {
    /// Log in, STAT, UIDL, LIST, RETR every message, QUIT (nothing deleted).
    Download {
        /// Send RETRs ahead, up to `window` outstanding.
        pipeline: bool,
        /// Outstanding RETRs at most (pipelining only).
        window: usize,
    },
    /// Log in, STAT, UIDL, LIST, QUIT: the cost of opening a maildrop.
    Open,
    /// Log in and QUIT, again and again.
    LoginStorm,
    /// Hold `concurrency` authenticated sessions for the duration, NOOP now and then.
    Idle {
        /// Interval between one session's NOOPs.
        noop_every: Duration,
        /// Logins in progress at once while ramping up.
        ramp: usize,
    },
    /// Log in, RETR + DELE up to `batch` messages, QUIT (the deletions are committed),
    /// then deliver `batch` new messages of `message_size` bytes to the same user over
    /// LMTP, so each mailbox stays about the same size.
    Mixed {
        /// The LMTP server.
        lmtp: SocketAddr,
        /// Messages retrieved, deleted and delivered per session.
        batch: usize,
        /// Size of each delivered message.
        message_size: usize,
        /// Domain appended to the user name for RCPT TO (empty: the bare user name).
        domain: String,
    },
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Download { pipeline: true, .. } => "download-pipelined",
            Scenario::Download { .. } => "download",
            Scenario::Open => "open",
            Scenario::LoginStorm => "login-storm",
            Scenario::Idle { .. } => "idle",
            Scenario::Mixed { .. } => "mixed",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server.
    pub target: Target,
    /// The users (at least `concurrency`).
    pub users: Vec<Credential>,
    /// What sessions do.
    pub scenario: Scenario,
    /// Sessions at once.
    pub concurrency: usize,
    /// Sessions to start at most (all workers together); ignored by `idle`.
    pub count: Option<u64>,
    /// Time after which no new session (and no new RETR) starts; for `idle`, how long
    /// the sessions are held.
    pub duration: Duration,
    /// Server processes to measure (each with all its descendants).
    pub server_pids: Vec<u32>,
    /// A label for the report (e.g. the server's name).
    pub label: String,
}

/// Stops the run: the deadline and the session budget.
#[derive(Debug)]
struct Control {
    deadline: Instant,
    count: Option<u64>,
    started: AtomicU64,
}

impl Control {
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
    /// May one more session start?
    fn ticket(&self) -> bool {
        if self.expired() {
            return false;
        }
        match self.count {
            Some(c) => self.started.fetch_add(1, Ordering::Relaxed) < c,
            None => true,
        }
    }
}

/// Runs one benchmark. Fails only on bad settings; session errors are in the report.
pub async fn run(settings: Settings) -> Result<Report, BenchError> {
    if settings.concurrency == 0 {
        return Err(BenchError::Settings(
            "concurrency must be at least 1".into(),
        ));
    }
    if settings.users.len() < settings.concurrency {
        return Err(BenchError::Settings(format!(
            "{} users for {} concurrent sessions: each session needs its own user \
             (servers lock a maildrop per session)",
            settings.users.len(),
            settings.concurrency
        )));
    }
    if settings.target.tls != TlsMode::None && settings.target.connector.is_none() {
        return Err(BenchError::Settings(
            "TLS needs a TLS client configuration".into(),
        ));
    }
    if let Scenario::Download { window: 0, .. } = settings.scenario {
        return Err(BenchError::Settings(
            "the pipelining window must be at least 1".into(),
        ));
    }
    let settings = Arc::new(settings);
    let cpu0 = self_cpu_s();
    let before = sample_trees(&settings.server_pids);
    let start = Instant::now();
    let ctl = Arc::new(Control {
        deadline: start + settings.duration,
        count: settings.count,
        started: AtomicU64::new(0),
    });
    let hard_stop = ctl.deadline + settings.target.io_timeout * 2;
    let (tally, at_point, held) = match settings.scenario {
        Scenario::Idle { noop_every, ramp } => {
            run_idle(&settings, &ctl, hard_stop, noop_every, ramp.max(1)).await
        }
        _ => {
            let tally = run_sessions(&settings, &ctl, hard_stop).await;
            (tally, None, None)
        }
    };
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    if !settings.server_pids.is_empty() {
        // Per-session server processes (Dovecot's pop3) that got the last QUIT are
        // exiting now; once reaped, their CPU shows in the parent's cutime. Sampling
        // at once could miss a process that is gone but not yet reaped.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = sample_trees(&settings.server_pids);
    let server = (!settings.server_pids.is_empty()).then(|| {
        usage(
            &settings.server_pids,
            before,
            at_point.unwrap_or(after),
            after,
            &tally,
            held,
        )
    });
    Ok(Report {
        scenario: settings.scenario.name().to_owned(),
        label: settings.label.clone(),
        target: settings.target.addr.to_string(),
        tls: settings.target.tls,
        concurrency: settings.concurrency,
        elapsed_s: elapsed,
        sessions: tally.sessions,
        sessions_failed: tally.sessions_failed,
        messages: tally.messages,
        bytes: tally.bytes,
        deliveries: tally.deliveries,
        errors: tally.errors,
        messages_per_s: tally.messages as f64 / elapsed,
        mb_per_s: tally.bytes as f64 / 1e6 / elapsed,
        sessions_per_s: tally.sessions as f64 / elapsed,
        login_latency: Latency::of(&tally.login),
        op_latency: Latency::of(&tally.op),
        session_latency: Latency::of(&tally.session),
        deliver_latency: Latency::of(&tally.deliver),
        held,
        server,
        client_cpu_s: self_cpu_s() - cpu0,
        error_samples: tally.error_texts,
    })
}

/// Collects the workers' tallies; workers still running at `hard_stop` are aborted.
async fn collect(mut set: JoinSet<Tally>, hard_stop: Instant) -> Tally {
    let mut total = Tally::new();
    loop {
        match tokio::time::timeout_at(hard_stop, set.join_next()).await {
            Ok(Some(Ok(t))) => total.merge(t),
            Ok(Some(Err(e))) => total.error(format!("worker failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                let n = set.len();
                set.abort_all();
                for _ in 0..n {
                    total.error("worker still busy at the hard time limit; aborted");
                }
                break;
            }
        }
    }
    total
}

async fn run_sessions(settings: &Arc<Settings>, ctl: &Arc<Control>, hard_stop: Instant) -> Tally {
    let message: Arc<[u8]> = match &settings.scenario {
        Scenario::Mixed { message_size, .. } => lmtp::make_message(*message_size, "mixed").into(),
        _ => Arc::from(&[][..]),
    };
    let mut set = JoinSet::new();
    for idx in 0..settings.concurrency {
        let settings = Arc::clone(settings);
        let ctl = Arc::clone(ctl);
        let message = Arc::clone(&message);
        set.spawn(async move { worker(&settings, &ctl, idx, &message).await });
    }
    collect(set, hard_stop).await
}

async fn worker(settings: &Settings, ctl: &Control, idx: usize, message: &[u8]) -> Tally {
    let mut tally = Tally::new();
    let mine: Vec<&Credential> = settings
        .users
        .iter()
        .skip(idx)
        .step_by(settings.concurrency)
        .collect();
    let mut lmtp_conn: Option<lmtp::Lmtp> = None;
    let mut k = 0usize;
    while ctl.ticket() {
        let cred = mine[k % mine.len()];
        k += 1;
        let t0 = Instant::now();
        let r = match &settings.scenario {
            Scenario::Download { pipeline, window } => {
                download(settings, ctl, cred, &mut tally, *pipeline, *window).await
            }
            Scenario::Open => open(settings, cred, &mut tally).await,
            Scenario::LoginStorm => login_storm(settings, cred, &mut tally).await,
            Scenario::Mixed {
                lmtp: addr,
                batch,
                domain,
                ..
            } => {
                let r = mixed_pop3(settings, cred, &mut tally, *batch).await;
                let rcpt = if domain.is_empty() {
                    cred.user.clone()
                } else {
                    format!("{}@{domain}", cred.user)
                };
                let d = deliver_batch(
                    settings,
                    &mut lmtp_conn,
                    *addr,
                    &rcpt,
                    *batch,
                    message,
                    &mut tally,
                )
                .await;
                r.and(d)
            }
            // Idle runs elsewhere.
            Scenario::Idle { .. } => return tally,
        };
        match r {
            Ok(()) => {
                tally.sessions += 1;
                Tally::record(&mut tally.session, t0.elapsed());
            }
            Err(e) => {
                tally.sessions_failed += 1;
                tally.error(format!("{}: {e}", cred.user));
                // A refusing server should not turn the run into a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// Connects and logs in, recording the login latency.
async fn connect_login(
    settings: &Settings,
    cred: &Credential,
    tally: &mut Tally,
    buf: usize,
) -> Result<Pop3, BenchError> {
    let t0 = Instant::now();
    let mut p = Pop3::connect(&settings.target, buf).await?;
    p.login(&cred.user, &cred.pass, false).await?;
    Tally::record(&mut tally.login, t0.elapsed());
    Ok(p)
}

/// STAT, UIDL, LIST: returns the message count.
async fn listing(p: &mut Pop3) -> Result<u64, BenchError> {
    let (n, _) = p.stat().await?;
    p.queue(format_args!("UIDL"));
    p.send().await?;
    p.multiline("UIDL").await?;
    p.queue(format_args!("LIST"));
    p.send().await?;
    p.multiline("LIST").await?;
    Ok(n)
}

/// Read buffer for sessions that move message bodies.
const BULK_BUF: usize = 64 * 1024;
/// Read buffer for sessions that only see status lines.
const SMALL_BUF: usize = 2 * 1024;

async fn download(
    settings: &Settings,
    ctl: &Control,
    cred: &Credential,
    tally: &mut Tally,
    pipeline: bool,
    window: usize,
) -> Result<(), BenchError> {
    let mut p = connect_login(settings, cred, tally, BULK_BUF).await?;
    let n = listing(&mut p).await?;
    if pipeline {
        let mut sent: VecDeque<Instant> = VecDeque::with_capacity(window);
        let mut next = 1u64;
        loop {
            // Refill when half the window has drained: fewer, larger writes.
            if sent.len() <= window / 2 && next <= n && !ctl.expired() {
                let now = Instant::now();
                while sent.len() < window && next <= n {
                    p.queue(format_args!("RETR {next}"));
                    sent.push_back(now);
                    next += 1;
                }
                p.send().await?;
            }
            let Some(t) = sent.pop_front() else {
                break;
            };
            let bytes = p.multiline("RETR").await?;
            tally.messages += 1;
            tally.bytes += bytes;
            Tally::record(&mut tally.op, t.elapsed());
        }
    } else {
        for i in 1..=n {
            if ctl.expired() {
                break;
            }
            let t = Instant::now();
            p.queue(format_args!("RETR {i}"));
            p.send().await?;
            let bytes = p.multiline("RETR").await?;
            tally.messages += 1;
            tally.bytes += bytes;
            Tally::record(&mut tally.op, t.elapsed());
        }
    }
    p.quit().await
}

async fn open(settings: &Settings, cred: &Credential, tally: &mut Tally) -> Result<(), BenchError> {
    let mut p = connect_login(settings, cred, tally, BULK_BUF).await?;
    let t = Instant::now();
    listing(&mut p).await?;
    Tally::record(&mut tally.op, t.elapsed());
    p.quit().await
}

async fn login_storm(
    settings: &Settings,
    cred: &Credential,
    tally: &mut Tally,
) -> Result<(), BenchError> {
    let p = connect_login(settings, cred, tally, SMALL_BUF).await?;
    p.quit().await
}

async fn mixed_pop3(
    settings: &Settings,
    cred: &Credential,
    tally: &mut Tally,
    batch: usize,
) -> Result<(), BenchError> {
    let mut p = connect_login(settings, cred, tally, BULK_BUF).await?;
    let (n, _) = p.stat().await?;
    let k = n.min(batch as u64);
    for i in 1..=k {
        let t = Instant::now();
        p.queue(format_args!("RETR {i}"));
        p.send().await?;
        let bytes = p.multiline("RETR").await?;
        tally.messages += 1;
        tally.bytes += bytes;
        Tally::record(&mut tally.op, t.elapsed());
        p.queue(format_args!("DELE {i}"));
        p.send().await?;
        p.expect_ok("DELE").await?;
    }
    p.quit().await
}

async fn deliver_batch(
    settings: &Settings,
    conn: &mut Option<lmtp::Lmtp>,
    addr: SocketAddr,
    rcpt: &str,
    batch: usize,
    message: &[u8],
    tally: &mut Tally,
) -> Result<(), BenchError> {
    for _ in 0..batch {
        if conn.is_none() {
            *conn = Some(lmtp::Lmtp::connect(addr, settings.target.io_timeout).await?);
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let t = Instant::now();
        match c.deliver(rcpt, message).await {
            Ok(()) => {
                tally.deliveries += 1;
                Tally::record(&mut tally.deliver, t.elapsed());
            }
            Err(e) => {
                // The connection's state is unknown now: start a new one next time.
                *conn = None;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The idle scenario: ramp up, measure with everything held, hold, QUIT.
/// Returns the tally, the server sample at the measuring point, and sessions held.
async fn run_idle(
    settings: &Arc<Settings>,
    ctl: &Arc<Control>,
    hard_stop: Instant,
    noop_every: Duration,
    ramp: usize,
) -> (Tally, Option<TreeSample>, Option<u64>) {
    let ramp = Arc::new(Semaphore::new(ramp));
    let ready = Arc::new(AtomicU64::new(0));
    let settled = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let n = settings.concurrency;
    let mut set = JoinSet::new();
    for idx in 0..n {
        let settings = Arc::clone(settings);
        let ctl = Arc::clone(ctl);
        let ramp = Arc::clone(&ramp);
        let ready = Arc::clone(&ready);
        let settled = Arc::clone(&settled);
        let notify = Arc::clone(&notify);
        // Spread the NOOPs evenly over the interval.
        let phase = noop_every.mul_f64(idx as f64 / n as f64);
        set.spawn(async move {
            let mut tally = Tally::new();
            let cred = &settings.users[idx];
            let t0 = Instant::now();
            let permit = ramp.acquire().await;
            let conn = connect_login(&settings, cred, &mut tally, SMALL_BUF).await;
            drop(permit);
            let mut p = match conn {
                Ok(p) => p,
                Err(e) => {
                    tally.sessions_failed += 1;
                    tally.error(format!("{}: {e}", cred.user));
                    settled.fetch_add(1, Ordering::Relaxed);
                    notify.notify_one();
                    return tally;
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            settled.fetch_add(1, Ordering::Relaxed);
            notify.notify_one();
            let mut next = Instant::now() + phase;
            let r: Result<(), BenchError> = async {
                loop {
                    if next >= ctl.deadline {
                        tokio::time::sleep_until(ctl.deadline).await;
                        break;
                    }
                    tokio::time::sleep_until(next).await;
                    let t = Instant::now();
                    p.queue(format_args!("NOOP"));
                    p.send().await?;
                    p.expect_ok("NOOP").await?;
                    Tally::record(&mut tally.op, t.elapsed());
                    next += noop_every;
                }
                p.quit().await
            }
            .await;
            match r {
                Ok(()) => {
                    tally.sessions += 1;
                    Tally::record(&mut tally.session, t0.elapsed());
                }
                Err(e) => {
                    tally.sessions_failed += 1;
                    tally.error(format!("{}: {e}", cred.user));
                }
            }
            tally
        });
    }
    // Measure once every session has logged in or failed (or at the deadline).
    loop {
        if settled.load(Ordering::Relaxed) >= n as u64 || ctl.expired() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
    }
    // Let the server settle (buffers freed after the login burst) before sampling.
    tokio::time::sleep(
        Duration::from_millis(500).min(ctl.deadline.saturating_duration_since(Instant::now())),
    )
    .await;
    let held = ready.load(Ordering::Relaxed);
    let at_point = sample_trees(&settings.server_pids);
    let tally = collect(set, hard_stop).await;
    (tally, Some(at_point), Some(held))
}
