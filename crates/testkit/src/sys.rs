//! Processes and accounts, read from `/proc` and `/etc/passwd`: what a test needs to
//! find every process a daemon started (so it can stop them by PID) and the ids of a
//! system account.

use std::fs;

/// Is `pid` a live process? A zombie counts as gone: PID 1 in a container may not reap.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Every PID in `/proc` (live or not).
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The live descendants of `pid` (children, their children, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let pids = all_pids();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &c in &pids {
            if parent(c) == Some(p) && alive(c) && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The uid and gid of the account `name`, from `/etc/passwd`.
pub fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Sends SIGKILL to one process, by PID (errors, e.g. a process already gone, are
/// ignored).
pub fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// An account made for one test with `useradd` (root only), removed with `userdel -r`
/// when dropped.
#[derive(Debug)]
pub struct TempAccount {
    /// The login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl TempAccount {
    /// `useradd [--system] NAME` with `extra` arguments (e.g. `--groups mail`); a
    /// unique name from `prefix`. Retries while another test holds the passwd lock.
    pub fn create(prefix: &str, system: bool, extra: &[&str]) -> TempAccount {
        let useradd = crate::peers::require("useradd", "passwd");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!(
            "{prefix}{:05x}",
            ((nanos as u64) ^ (u64::from(std::process::id()) << 16)) & 0xf_ffff
        );
        let mut last = String::new();
        for _ in 0..20 {
            let mut c = std::process::Command::new(&useradd);
            if system {
                c.args(["--system", "--no-create-home"]);
            }
            c.args(["--shell", "/usr/sbin/nologin"])
                .args(extra)
                .arg(&name);
            let out = c.output().expect("run useradd");
            if out.status.success() {
                let (uid, gid) = passwd_ids(&name).expect("the new account is in /etc/passwd");
                return TempAccount { name, uid, gid };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// Sets the password with `chpasswd`.
    pub fn set_password(&self, password: &str) {
        use std::io::Write as _;
        let mut c = std::process::Command::new(crate::peers::require("chpasswd", "passwd"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{}:{password}\n", self.name).as_bytes())
            .expect("chpasswd input");
        assert!(
            c.wait().expect("chpasswd").success(),
            "chpasswd {}",
            self.name
        );
    }
}

impl Drop for TempAccount {
    fn drop(&mut self) {
        for _ in 0..20 {
            match std::process::Command::new("userdel")
                .arg(&self.name)
                .output()
            {
                Ok(o) if o.status.success() => return,
                Ok(o) => {
                    let e = String::from_utf8_lossy(&o.stderr);
                    if !e.contains("lock") {
                        eprintln!("userdel {}: {e}", self.name);
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("userdel {}: {e}", self.name);
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
