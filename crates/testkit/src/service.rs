//! What the harnesses of database servers ([`crate::postgres`], [`crate::mariadb`],
//! [`crate::slapd`]) share: the account a server that refuses root runs as, waiting
//! for a server to be ready or to have exited, and stopping it by PID.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, is_root};
use crate::sys::{alive, kill_pid};

/// The uid and gid to run a server that refuses root as: `nobody` when the test runs
/// as root, none (the test's own) otherwise.
pub(crate) fn service_owner() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("nobody")
        .expect("reading the account nobody")
        .expect("no account nobody to run the server as");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Panics unless every ancestor of `dir` lets others through (a server running as
/// `nobody` must reach its data in `dir`).
pub(crate) fn check_traversable(dir: &Path) {
    for a in dir.ancestors().skip(1) {
        let mode = fs::metadata(a).map(|m| m.permissions().mode()).unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} (mode {mode:o}) is not traversable by others: the database server, \
             running as nobody, could not reach its data in {}; set TMPDIR to another \
             directory",
            a.display(),
            dir.display()
        );
    }
}

/// Waits (at most `limit`) until `ready(log)`: true then, false as soon as the process
/// has exited.
///
/// # Panics
/// When the time is up, with the log.
pub(crate) fn wait_until(d: &Daemon, limit: Duration, ready: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready(&d.log()) {
            return true;
        }
        if !alive(d.pid()) {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "the database server was not ready within {limit:?}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Does the log of an exited process (whose last lines may still be on their way
/// through the pipe) contain `needle`? Waits at most 2 s for it.
pub(crate) fn log_shows(d: &Daemon, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if d.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends `signal` to the server by PID and waits (at most `limit`, then SIGKILL) until
/// it has exited; returns its log.
pub(crate) fn stop_by_pid(server: Daemon, signal: &str, limit: Duration) -> String {
    let pid = server.pid();
    if alive(pid) {
        server.signal(signal);
    }
    let deadline = Instant::now() + limit;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        kill_pid(pid);
    }
    let log = server.log();
    drop(server); // reaps it
    log
}

/// One server process a harness starts, stops and restarts (PostgreSQL, MariaDB, slapd,
/// s3s-fs): the running [`Daemon`] and the logs of the runs before it.
#[derive(Debug, Default)]
pub(crate) struct Supervised {
    server: Option<Daemon>,
    /// The log of the runs stopped so far (the current one's is in `server`).
    old_log: String,
}

impl Supervised {
    /// Waits (at most `limit`) until `ready(log)` holds for the just started `server`,
    /// and keeps it: `true`. `false` when it exited because its port was taken (the
    /// caller tries another port). Panics with the log, naming `what`, otherwise.
    pub(crate) fn adopt(
        &mut self,
        server: Daemon,
        limit: Duration,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> bool {
        assert!(self.server.is_none(), "{what} is already running");
        if wait_until(&server, limit, ready) {
            self.server = Some(server);
            return true;
        }
        let taken = log_shows(&server, "Address already in use");
        let log = server.log();
        drop(server);
        self.old_log.push_str(&log);
        if taken {
            return false;
        }
        panic!("{what} exited at start:\n{}", self.log());
    }

    /// Stops the process with `signal` by its PID (SIGKILL after `limit`) and waits
    /// until it has exited. Does nothing when it is not running.
    pub(crate) fn stop(&mut self, signal: &str, limit: Duration) {
        if let Some(server) = self.server.take() {
            self.old_log.push_str(&stop_by_pid(server, signal, limit));
        }
    }

    /// Started and not stopped, and alive.
    pub(crate) fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| alive(s.pid()))
    }

    /// Started and not stopped (alive or not).
    pub(crate) fn is_started(&self) -> bool {
        self.server.is_some()
    }

    /// The PID while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Daemon::pid)
    }

    /// Everything it logged, over all its runs.
    pub(crate) fn log(&self) -> String {
        let mut log = self.old_log.clone();
        if let Some(s) = &self.server {
            log.push_str(&s.log());
        }
        log
    }
}
