//! The authentication cache (issue #11): a repeated login with the same password is
//! answered from it (no hash, no database), any other password goes to the database,
//! and an edited passwd-file empties it at once — so a changed password is never
//! accepted from the cache; `correio admin status` shows the hits.

mod userdb_support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use userdb_support::*;

fn correio(args: &[&str], stdin: &str) -> std::process::Output {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "correio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cache_hits(s: &Served) -> u64 {
    let out = correio(
        &[
            "admin",
            "--config",
            s.config.to_str().unwrap(),
            "--json",
            "status",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["users"]["cache_hits"].as_u64().expect("cache_hits")
}

#[test]
fn the_cache_answers_the_same_password_and_forgets_an_edited_users_file() {
    let dir = open_dir();
    let s = Served::start(dir.path(), "");
    let cfg = s.config.to_str().unwrap().to_owned();
    correio(
        &["user", "add", "alice", "--config", &cfg, "--password-stdin"],
        "first-pw\n",
    );
    assert!(
        s.login_reply("alice", "first-pw").starts_with("+OK"),
        "{}",
        s.log()
    );
    let before = cache_hits(&s);
    assert!(s.login_reply("alice", "first-pw").starts_with("+OK"));
    assert!(s.plain_reply(b"alice", b"first-pw").starts_with("+OK"));
    assert!(
        cache_hits(&s) >= before + 2,
        "the repeated logins hit the cache"
    );
    // Another password goes to the file, and is refused.
    assert!(s.login_reply("alice", "guess").starts_with("-ERR [AUTH]"));

    // The password changes: the old one is refused at once, the new one accepted.
    correio(
        &[
            "user",
            "passwd",
            "alice",
            "--config",
            &cfg,
            "--password-stdin",
        ],
        "second-pw\n",
    );
    assert!(
        s.login_reply("alice", "first-pw")
            .starts_with("-ERR [AUTH]"),
        "an old password must not be accepted from the cache"
    );
    assert!(s.login_reply("alice", "second-pw").starts_with("+OK"));
}
