//! What a run measures: per-worker counters and HDR histograms (merged once at the
//! end, so workers never contend), and what `/proc` says about the server processes.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Microsecond histograms from 1 µs to 10 minutes, 3 significant digits.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

/// How many error texts a run keeps (the count is always exact).
const KEPT_ERRORS: usize = 8;

/// One worker's tallies.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) login: Histogram<u64>,
    pub(crate) op: Histogram<u64>,
    pub(crate) session: Histogram<u64>,
    pub(crate) deliver: Histogram<u64>,
    pub(crate) sessions: u64,
    pub(crate) sessions_failed: u64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) deliveries: u64,
    pub(crate) errors: u64,
    pub(crate) error_texts: Vec<String>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            login: new_hist(),
            op: new_hist(),
            session: new_hist(),
            deliver: new_hist(),
            sessions: 0,
            sessions_failed: 0,
            messages: 0,
            bytes: 0,
            deliveries: 0,
            errors: 0,
            error_texts: Vec::new(),
        }
    }

    pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        let _ = h.record(us);
    }

    pub(crate) fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_texts.len() < KEPT_ERRORS {
            self.error_texts.push(e.to_string());
        }
    }

    pub(crate) fn merge(&mut self, o: Tally) {
        let _ = self.login.add(&o.login);
        let _ = self.op.add(&o.op);
        let _ = self.session.add(&o.session);
        let _ = self.deliver.add(&o.deliver);
        self.sessions += o.sessions;
        self.sessions_failed += o.sessions_failed;
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.deliveries += o.deliveries;
        self.errors += o.errors;
        for t in o.error_texts {
            if self.error_texts.len() < KEPT_ERRORS {
                self.error_texts.push(t);
            }
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }
}

/// What the server processes used during the run (from `/proc`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// The process trees measured (each PID and all its descendants).
    pub pids: Vec<u32>,
    /// User + system CPU seconds spent during the run, reaped children included.
    pub cpu_s: f64,
    /// CPU microseconds per message retrieved (when messages were retrieved).
    pub cpu_us_per_message: Option<f64>,
    /// CPU milliseconds per MB (10^6 bytes) sent (when bytes were sent).
    pub cpu_ms_per_mb: Option<f64>,
    /// CPU microseconds per session (when sessions completed).
    pub cpu_us_per_session: Option<f64>,
    /// Resident memory of the trees before the run, KiB.
    pub rss_before_kib: u64,
    /// Resident memory at the measuring point (idle: with all sessions held), KiB.
    pub rss_kib: u64,
    /// Processes in the trees at the measuring point.
    pub processes: usize,
    /// (rss_kib - rss_before_kib) / sessions held (idle scenario only).
    pub rss_kib_per_session: Option<f64>,
    /// Proportional set size before the run, KiB (shared pages split among sharers).
    pub pss_before_kib: u64,
    /// Proportional set size at the measuring point, KiB.
    pub pss_kib: u64,
    /// (pss_kib - pss_before_kib) / sessions held (idle scenario only).
    pub pss_kib_per_session: Option<f64>,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Free-form label (`--label`), e.g. the server's name.
    pub label: String,
    /// The server address.
    pub target: String,
    /// Cleartext, STLS or implicit TLS.
    pub tls: crate::TlsMode,
    /// Concurrent sessions.
    pub concurrency: usize,
    /// Wall time of the measured part, seconds.
    pub elapsed_s: f64,
    /// Sessions completed (QUIT answered `+OK`).
    pub sessions: u64,
    /// Sessions that failed (each also counts as an error).
    pub sessions_failed: u64,
    /// Messages retrieved completely.
    pub messages: u64,
    /// Bytes of message bodies received (as sent: stuffed, CRLF).
    pub bytes: u64,
    /// LMTP deliveries accepted (mixed scenario).
    pub deliveries: u64,
    /// Errors of any kind.
    pub errors: u64,
    /// Messages per second.
    pub messages_per_s: f64,
    /// MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Completed sessions per second.
    pub sessions_per_s: f64,
    /// Connect until `+OK` to PASS (TLS handshake included).
    pub login_latency: Option<Latency>,
    /// Per scenario: RETR (download: from sending the command to the end of its
    /// reply, queueing in the pipeline included), STAT+UIDL+LIST (open), NOOP (idle).
    pub op_latency: Option<Latency>,
    /// Connect until QUIT answered.
    pub session_latency: Option<Latency>,
    /// One LMTP transaction (mixed).
    pub deliver_latency: Option<Latency>,
    /// Sessions held at once (idle scenario).
    pub held: Option<u64>,
    /// The server's CPU and memory, when `--server-pid` was given.
    pub server: Option<ServerUsage>,
    /// CPU seconds this load generator spent (all threads).
    pub client_cpu_s: f64,
    /// The first few error texts.
    pub error_samples: Vec<String>,
}

impl Report {
    /// A human-readable summary, several lines.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {}{} against {} (TLS: {}), {} sessions at once, {:.2} s",
            self.scenario,
            self.label,
            if self.label.is_empty() { "" } else { ":" },
            self.target,
            self.tls.name(),
            self.concurrency,
            self.elapsed_s
        );
        let _ = writeln!(
            s,
            "  sessions {} ({:.1}/s), failed {}, messages {} ({:.1}/s), {:.2} MB ({:.2} MB/s), deliveries {}, errors {}",
            self.sessions,
            self.sessions_per_s,
            self.sessions_failed,
            self.messages,
            self.messages_per_s,
            self.bytes as f64 / 1e6,
            self.mb_per_s,
            self.deliveries,
            self.errors
        );
        for (name, l) in [
            ("login", &self.login_latency),
            ("op", &self.op_latency),
            ("session", &self.session_latency),
            ("deliver", &self.deliver_latency),
        ] {
            if let Some(l) = l {
                let _ = writeln!(
                    s,
                    "  {name:<8} latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}  (n={})",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms, l.count
                );
            }
        }
        if let Some(h) = self.held {
            let _ = writeln!(s, "  held {h} authenticated sessions at once");
        }
        if let Some(u) = &self.server {
            let _ = write!(
                s,
                "  server {:?}: cpu {:.3} s, rss {} KiB (before {} KiB, {} processes)",
                u.pids, u.cpu_s, u.rss_kib, u.rss_before_kib, u.processes
            );
            if let Some(x) = u.cpu_us_per_message {
                let _ = write!(s, ", {x:.1} µs cpu/message");
            }
            if let Some(x) = u.cpu_ms_per_mb {
                let _ = write!(s, ", {x:.2} ms cpu/MB");
            }
            if let Some(x) = u.cpu_us_per_session {
                let _ = write!(s, ", {x:.1} µs cpu/session");
            }
            if let Some(x) = u.rss_kib_per_session {
                let _ = write!(s, ", {x:.1} KiB rss/session");
            }
            if let Some(x) = u.pss_kib_per_session {
                let _ = write!(s, ", {x:.1} KiB pss/session");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "  load generator cpu {:.3} s", self.client_cpu_s);
        for e in &self.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}

/// Linux's USER_HZ: /proc/*/stat counts CPU in these ticks (100 on every Linux
/// architecture we run on; the kernel fixes it for user space).
const TICKS_PER_S: f64 = 100.0;

/// One process's line of /proc/PID/stat: (ppid, utime+stime, cutime+cstime) in ticks.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    let cut: u64 = f.get(13)?.parse().ok()?;
    let cst: u64 = f.get(14)?.parse().ok()?;
    Some((ppid, ut + st, cut + cst))
}

/// Proportional set size: shared pages divided among the processes sharing them, so a
/// sum over many forked processes (Dovecot) does not count its libraries N times.
fn pss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A snapshot of process trees.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TreeSample {
    pub(crate) cpu_ticks: u64,
    pub(crate) rss_kib: u64,
    pub(crate) pss_kib: u64,
    pub(crate) processes: usize,
}

/// Samples every process tree rooted at `roots`: the CPU of live members plus the
/// reaped-children CPU of each root (Dovecot's per-session processes exit and are
/// reaped by the master, so their CPU lands in the master's cutime/cstime).
pub(crate) fn sample_trees(roots: &[u32]) -> TreeSample {
    if roots.is_empty() {
        return TreeSample::default();
    }
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut cpu: HashMap<u32, (u64, u64)> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, own, children)) = proc_stat(pid) {
                parent.insert(pid, ppid);
                cpu.insert(pid, (own, children));
            }
        }
    }
    let in_tree = |mut pid: u32| {
        for _ in 0..64 {
            if roots.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p != 0 && p != pid => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut out = TreeSample::default();
    for (&pid, &(own, children)) in &cpu {
        if !in_tree(pid) {
            continue;
        }
        out.cpu_ticks += own;
        if roots.contains(&pid) {
            out.cpu_ticks += children;
        }
        out.rss_kib += vm_rss_kib(pid).unwrap_or(0);
        out.pss_kib += pss_kib(pid).unwrap_or(0);
        out.processes += 1;
    }
    out
}

/// CPU seconds this process has used (all threads).
pub(crate) fn self_cpu_s() -> f64 {
    proc_stat(std::process::id())
        .map(|(_, own, _)| own as f64 / TICKS_PER_S)
        .unwrap_or(0.0)
}

pub(crate) fn usage(
    pids: &[u32],
    before: TreeSample,
    at_point: TreeSample,
    after: TreeSample,
    t: &Tally,
    held: Option<u64>,
) -> ServerUsage {
    let cpu_s = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_S;
    let per = |n: u64, scale: f64| (n > 0).then(|| cpu_s * scale / n as f64);
    ServerUsage {
        pids: pids.to_vec(),
        cpu_s,
        cpu_us_per_message: per(t.messages, 1e6),
        cpu_ms_per_mb: (t.bytes > 0).then(|| cpu_s * 1e3 / (t.bytes as f64 / 1e6)),
        cpu_us_per_session: per(t.sessions, 1e6),
        rss_before_kib: before.rss_kib,
        rss_kib: at_point.rss_kib,
        processes: at_point.processes,
        rss_kib_per_session: held
            .filter(|h| *h > 0)
            .map(|h| at_point.rss_kib.saturating_sub(before.rss_kib) as f64 / h as f64),
        pss_before_kib: before.pss_kib,
        pss_kib: at_point.pss_kib,
        pss_kib_per_session: held
            .filter(|h| *h > 0)
            .map(|h| at_point.pss_kib.saturating_sub(before.pss_kib) as f64 / h as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_tree_is_sampled() {
        let me = std::process::id();
        let s = sample_trees(&[me]);
        assert!(s.processes >= 1);
        assert!(s.rss_kib > 0);
        assert!(
            s.pss_kib > 0,
            "smaps_rollup is readable for our own process"
        );
        assert!(proc_stat(me).is_some());
    }

    #[test]
    fn latency_percentiles_are_ordered() {
        let mut t = Tally::new();
        for us in 1..=1000u64 {
            Tally::record(&mut t.op, Duration::from_micros(us));
        }
        let l = Latency::of(&t.op).unwrap();
        assert_eq!(l.count, 1000);
        assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{}", l.p50_ms);
        assert!(Latency::of(&Tally::new().op).is_none());
    }
}
