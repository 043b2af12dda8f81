//! A program the test starts and must stop (a `correio serve`, HAProxy, Prometheus):
//! its standard error is collected in the background (so the pipe never fills and the
//! test can wait for a log line instead of sleeping), and dropping it stops the
//! process by its PID — SIGTERM, then SIGKILL after 10 s.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child process, stopped when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `cmd` with stdout discarded and stderr collected.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log2 = Arc::clone(&log);
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut g = log2.lock().unwrap_or_else(|p| p.into_inner());
                    g.push_str(&l);
                    g.push('\n');
                }
            });
        }
        Daemon { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (at most `limit`) until the log contains every one of `needles`.
    ///
    /// # Panics
    /// When the time is up or the process exited first; the message has the log.
    pub fn wait_log(&mut self, needles: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.log();
            if needles.iter().all(|n| l.contains(n)) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("process exited ({st}) before logging {needles:?}:\n{l}");
            }
            assert!(Instant::now() < deadline, "no {needles:?} in the log:\n{l}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) until the process logs that it listens, and returns
    /// the address it bound: `correio serve` logs `listening addr=127.0.0.1:PORT
    /// tls=false proxy=false` for each POP3 listener, `listening for LMTP addr=…` and
    /// `metrics listening addr=…`. `message` is the log message (`"listening"`,
    /// `"listening for LMTP"`), `fields` what must follow the address on the line
    /// (`" tls=false proxy=false"`, or `""`). A test that configures port 0 learns the
    /// port the kernel gave, with no window for another program to take it.
    ///
    /// # Panics
    /// When the time is up or the process exited first; the message has the log.
    pub fn wait_listening(
        &mut self,
        message: &str,
        fields: &str,
        limit: Duration,
    ) -> std::net::SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.log();
            if let Some(a) = listening_addr(&l, message, fields) {
                return a;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("process exited ({st}) before logging \"{message}\":\n{l}");
            }
            assert!(
                Instant::now() < deadline,
                "no \"{message}\" line in the log:\n{l}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) until this process accepts connections on a port of
    /// 127.0.0.1.
    ///
    /// # Panics
    /// When the time is up or the process exited first (a port taken between
    /// `free_port` and its bind, say); the message has the log.
    pub fn wait_port(&mut self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "process exited ({st}) before listening on {port}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on 127.0.0.1:{port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself (a failpoint's
    /// abort): its exit status.
    ///
    /// # Panics
    /// When it is still running at the deadline (with its log).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit within {limit:?}; log:\n{}",
                self.pid(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `"HUP"`) to the process.
    pub fn signal(&self, signal: &str) {
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill (Debian package procps)");
        assert!(st.success(), "kill -{signal} {}", self.pid());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the first log line (text format, as `tracing` writes it: `LEVEL
/// target: message addr=ADDR fields…`) of `message` whose address is followed by
/// `fields`; see [`Daemon::wait_listening`].
pub fn listening_addr(log: &str, message: &str, fields: &str) -> Option<std::net::SocketAddr> {
    let marker = format!(": {message} addr=");
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(&marker)?;
        let end = rest.find(' ').unwrap_or(rest.len());
        let (addr, after) = rest.split_at(end);
        if !after.starts_with(fields) {
            return None;
        }
        addr.parse().ok()
    })
}

/// Whether this process runs as root (the root-only parts of tests check it).
pub fn is_root() -> bool {
    effective_uid() == 0
}

fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::listening_addr;

    #[test]
    fn listening_addr_takes_the_line_of_its_listener() {
        let log = "2026-01-01T00:00:00Z  INFO correio_server::metrics: metrics listening addr=127.0.0.1:9 \n\
                   2026-01-01T00:00:00Z  INFO correio_server: listening addr=127.0.0.1:5 tls=true proxy=false\n\
                   2026-01-01T00:00:00Z  INFO correio_server: listening addr=127.0.0.1:4 tls=false proxy=false\n\
                   2026-01-01T00:00:00Z  INFO correio::cmd::serve: listening for LMTP addr=127.0.0.1:7\n";
        let port = |m, f| listening_addr(log, m, f).map(|a| a.port());
        assert_eq!(port("listening", " tls=false proxy=false"), Some(4));
        assert_eq!(port("listening", " tls=true"), Some(5));
        assert_eq!(port("listening for LMTP", ""), Some(7));
        assert_eq!(port("metrics listening", ""), Some(9));
        assert_eq!(port("listening", " tls=false proxy=true"), None);
    }
}
