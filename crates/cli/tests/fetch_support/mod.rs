//! Shared helpers of the `correio fetch` tests: a message corpus, Maildir reading and
//! writing, and running the real binary.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `n` messages with LF line ends that exercise the edges: dot-stuffing, mbox
/// `From ` lines, lines over 2 KB, 8-bit bytes, an empty body, sizes from tiny to
/// ~200 KB. Deterministic.
pub fn corpus(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = format!(
                "From: sender{i}@example.org\nTo: user@example.org\nSubject: corpus message {i}\nMessage-ID: <{i}@corpus.example>\n\n"
            )
            .into_bytes();
            match i % 7 {
                0 => m.extend_from_slice(b".leading dot\n..two dots\n.\nFrom the start\n>From quoted\n"),
                1 => m.extend_from_slice(format!("{}\n", "x".repeat(3000 + i)).as_bytes()),
                2 => m.extend_from_slice("caf\u{e9} na\u{ef}ve \u{2603}\n".as_bytes()),
                3 => {}
                4 => {
                    for l in 0..(i * 37 % 4000) {
                        m.extend_from_slice(format!("line {l} of message {i} with some text\n").as_bytes());
                    }
                }
                5 => m.extend_from_slice(b"\n\n\nblank lines above\n"),
                _ => m.extend_from_slice(format!("body of {i}\n").as_bytes()),
            }
            m
        })
        .collect()
}

/// Writes messages into `maildir/cur` as Dovecot would find them.
pub fn fill_maildir(maildir: &Path, msgs: &[Vec<u8>]) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        fs::write(
            maildir
                .join("cur")
                .join(format!("{}.M{i}P1.corpus:2,", 1_700_000_000 + i)),
            m,
        )
        .unwrap();
    }
}

/// Every message in a Maildir (new and cur), sorted by content.
pub fn maildir_messages(maildir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in rd {
            out.push(fs::read(e.unwrap().path()).unwrap());
        }
    }
    out.sort();
    out
}

/// Sorted copy.
pub fn sorted(v: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The `correio` binary under test.
pub fn correio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_correio"))
}

/// `correio fetch` against `addr` with the given extra arguments; `state` is the
/// state directory.
pub fn fetch_cmd(
    host: &str,
    port: u16,
    user: &str,
    pass: &str,
    state: &Path,
    extra: &[&str],
) -> Command {
    let mut c = correio();
    c.arg("fetch")
        .args(["--host", host, "--port", &port.to_string(), "--user", user])
        .args(["--password-command", &format!("printf %s '{pass}'")])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--timeout", "10s"])
        .args(extra)
        .env("HOME", state)
        .env_remove("XDG_CONFIG_HOME");
    c
}

/// Runs and parses `--json` output; panics with stderr on failure.
pub fn run_json(mut c: Command) -> serde_json::Value {
    let out: Output = c.arg("--json").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fetch failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

/// The first account's summary from `--json` output.
pub fn summary(v: &serde_json::Value) -> &serde_json::Value {
    &v["accounts"][0]["summary"]
}

/// A temp dir others (Dovecot's uid) can traverse.
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Path helper.
pub fn p(d: &Path, s: &str) -> PathBuf {
    d.join(s)
}
