//! The qmail checkpassword interface, for any user database nothing else here speaks:
//! the program gets `user NUL password NUL timestamp NUL` on descriptor 3, and exits
//! 0 (accepted: it then runs its arguments — here `/usr/bin/env`, whose output gives the
//! `HOME`, `USER` and `userdb_*` variables the program set), 1 (refused), 2 (misused)
//! or 111 (temporary failure). Anything else, a crash or running past `timeout`, is a
//! temporary failure, never "wrong password".
//!
//! The program runs as the service user, with an empty environment plus `PATH`; it is
//! killed (by PID) if it runs past `timeout`. Its output is bounded.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use correio_auth::{FailureReason, SaslError, UserRecord};

use crate::config::CheckpasswordConfig;
use crate::{Temporary, refused};

/// Output read from the program at most.
const MAX_OUTPUT: u64 = 64 * 1024;

/// A checkpassword program.
#[derive(Debug)]
pub struct Checkpassword {
    config: CheckpasswordConfig,
}

impl Checkpassword {
    /// The program of `config`.
    pub fn new(config: CheckpasswordConfig) -> Checkpassword {
        Checkpassword { config }
    }

    /// checkpassword has no lookup without a password: LMTP and `deliver` cannot find
    /// recipients through it. Every name is unknown (LMTP answers 550 5.1.1).
    pub fn lookup(&self, _user: &str) -> Result<Option<UserRecord>, Temporary> {
        Ok(None)
    }

    /// Runs the program.
    pub fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        if password.contains(&0) {
            return Err(refused(user, FailureReason::WrongPassword));
        }
        let (status, output) = self.run(user, password)?;
        match status {
            Some(0) => Ok(record_from_env(user, &output)),
            Some(1) => Err(refused(user, FailureReason::Rejected)),
            other => {
                let why = match other {
                    Some(111) => "temporary failure (exit 111)".to_owned(),
                    Some(c) => format!("exit {c}"),
                    None => "killed by a signal or over its time limit".to_owned(),
                };
                tracing::warn!(
                    target: "correio::auth",
                    program = %self.config.program.display(),
                    "checkpassword: {why}"
                );
                Err(SaslError::Temporary(format!("checkpassword: {why}")))
            }
        }
    }

    fn run(&self, user: &str, password: &[u8]) -> Result<(Option<i32>, Vec<u8>), Temporary> {
        let (reader, mut writer) =
            std::io::pipe().map_err(|e| Temporary(format!("checkpassword: pipe: {e}")))?;
        // Descriptor 3 is the pipe's read end (mapped between fork and exec by
        // command-fds); our copy goes with `cmd`, right after the spawn.
        let mut cmd = Command::new(&self.config.program);
        {
            use command_fds::{CommandFdExt as _, FdMapping};
            use std::os::unix::process::CommandExt as _;
            cmd.arg("/usr/bin/env")
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .fd_mappings(vec![FdMapping {
                    parent_fd: std::os::fd::OwnedFd::from(reader),
                    child_fd: 3,
                }])
                .map_err(|e| Temporary(format!("checkpassword: {e}")))?;
        }
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            Temporary(format!(
                "checkpassword: cannot run {}: {e}",
                self.config.program.display()
            ))
        })?;
        let mut input = Vec::with_capacity(user.len() + password.len() + 16);
        input.extend_from_slice(user.as_bytes());
        input.push(0);
        input.extend_from_slice(password);
        input.push(0);
        input.extend_from_slice(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string()
                .as_bytes(),
        );
        input.push(0);
        let _ = writer.write_all(&input);
        drop(writer);
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(s) = stdout {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut out);
            }
            out
        });
        let deadline = Instant::now() + self.config.timeout();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.code(),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(Temporary(format!("checkpassword: {e}"))),
            }
        };
        let output = reader.join().unwrap_or_default();
        Ok((status, output))
    }
}

/// The record a successful program's environment dump (`/usr/bin/env` output: one
/// `KEY=VALUE` a line) describes: `HOME`, `USER` (the canonical name, if valid) and
/// `userdb_*` fields. Other lines are ignored; so are lines that are not UTF-8.
pub fn record_from_env(user: &str, output: &[u8]) -> UserRecord {
    let mut record = UserRecord::new(user, None);
    for line in output.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "HOME" => record.home = v.to_owned(),
            "USER" => {
                if correio_auth::validate_username(v).is_ok() {
                    record.name = v.to_owned()
                }
            }
            _ => {
                if let Some(field) = k.strip_prefix("userdb_") {
                    crate::apply_field(&mut record, field, v);
                }
            }
        }
    }
    record
}
