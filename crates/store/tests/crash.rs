//! Crash tests: a child process (this test binary, re-run in helper mode) delivers and
//! runs UPDATE in a loop and aborts (as under `kill -9`: no unwinding, no unlocking) at
//! a named failpoint of the store (`CORREIO_FAILPOINT=NAME:N`, the Nth time it gets
//! there): mid-write, before the fsync, before the rename, mid-rewrite... After every
//! kill, every message in the mailbox must be intact (byte-exact, with the size the
//! store reports) or absent: never half, never duplicated; and the session lock of the
//! dead process must be free again.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use correio_store::{DeliverOptions, MailLocation, deliver, open_maildrop};

const MODE: &str = "CORREIO_CRASH_MODE";
const TARGET: &str = "CORREIO_CRASH_TARGET";
/// Rounds of the helper's loop: far more than any failpoint count below, so a helper
/// that ends by itself means its failpoint was never reached.
const HELPER_ROUNDS: u64 = 200;

/// Message `i`: its number in the subject, a body whose length varies with `i`
/// (up to ~270 KiB: several write calls, so kills land between them), and an end
/// marker.
fn message(i: u64) -> Vec<u8> {
    let mut m = format!("Subject: crash {i}\n\n").into_bytes();
    for k in 0..(i * 7919 % 5000) {
        m.extend_from_slice(
            format!("{i} line {k} From here .. and some padding text\n").as_bytes(),
        );
    }
    m.extend_from_slice(format!("END {i}\n").as_bytes());
    m
}

fn wire_len(stored: &[u8]) -> u64 {
    let lf = stored.iter().filter(|&&b| b == b'\n').count() as u64;
    stored.len() as u64 + lf
}

/// Not a test on its own: the body of the child process the crash tests kill. Run only
/// when the parent sets CORREIO_CRASH_MODE; bounded to 20 s in case nobody kills it.
#[test]
#[ignore = "helper process for the crash tests"]
fn crash_helper() {
    let (Ok(mode), Ok(target)) = (std::env::var(MODE), std::env::var(TARGET)) else {
        return;
    };
    let loc = if mode.starts_with("maildir") {
        MailLocation::Maildir(target.into())
    } else {
        MailLocation::Mbox(target.into())
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Numbers unique across the helpers of one test (the check finds duplicates by it).
    let mut i = seed % 1_000_000_000 * 1000;
    assert_eq!(i % 1000, 0);
    for _ in 0..HELPER_ROUNDS {
        i += 1;
        deliver(&loc, &message(i)[..], &DeliverOptions::default()).unwrap();
        if mode.ends_with("update") {
            let md = open_maildrop(&loc).unwrap();
            let n = md.messages().len();
            if n > 3 {
                md.commit(&[0, n / 2]).unwrap();
            }
        }
    }
}

fn check_intact(loc: &MailLocation, round: &str) -> usize {
    let md =
        open_maildrop(loc).unwrap_or_else(|e| panic!("round {round}: cannot open after kill: {e}"));
    let mut seen = HashSet::new();
    for (k, info) in md.messages().iter().enumerate() {
        let mut body = Vec::new();
        md.open_message(k).unwrap().read_to_end(&mut body).unwrap();
        let text = String::from_utf8_lossy(&body);
        let i: u64 = text
            .strip_prefix("Subject: crash ")
            .and_then(|t| t.split('\n').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: message {k} is damaged: {:?}",
                    &text[..text.len().min(80)]
                )
            });
        assert!(
            body == message(i),
            "round {round}: message {i} is incomplete ({} bytes)",
            body.len()
        );
        assert_eq!(
            info.size,
            wire_len(&body),
            "round {round}: size of message {i}"
        );
        assert!(seen.insert(i), "round {round}: message {i} appears twice");
    }
    md.messages().len()
}

/// Kills the helper at each of `points`, the 1st, 2nd, 5th and 13th time it gets
/// there, checking the mailbox after each kill.
fn crash_loop(mode: &str, loc: &MailLocation, target: &Path, points: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let mut total = 0;
    let mut kills = 0;
    for point in points {
        for n in [1, 2, 5, 13] {
            let round = format!("{point}:{n}");
            let out = Command::new(&exe)
                .args([
                    "crash_helper",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(MODE, mode)
                .env(TARGET, target)
                .env("CORREIO_FAILPOINT", &round)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("failpoint {round} reached")),
                "{mode}: the helper did not die at {round} ({}): {err}",
                out.status
            );
            kills += 1;
            total = check_intact(loc, &round);
        }
    }
    // Whatever the kills left next to the mailbox is cleaned up by the next session.
    drop(open_maildrop(loc).unwrap());
    if let MailLocation::Mbox(p) = loc {
        let dir = p.parent().unwrap();
        let litter: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.contains(".correio-tmp.")
                    || n.contains(".lock.")
                    || n.ends_with(".lock")
                    || n.ends_with(".correio-journal")
            })
            .collect();
        assert!(litter.is_empty(), "left behind: {litter:?}");
    }
    eprintln!("{mode}: {kills} kills, {total} messages at the end, all intact");
}

#[test]
fn killed_at_each_maildir_delivery_and_update_point() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    let loc = MailLocation::Maildir(root.clone());
    crash_loop(
        "maildir-deliver",
        &loc,
        &root,
        &[
            "maildir-deliver-mid-write",
            "maildir-deliver-before-rename",
            "maildir-deliver-before-dir-sync",
        ],
    );
    crash_loop(
        "maildir-update",
        &loc,
        &root,
        &["maildir-update-mid-unlink"],
    );
    assert!(
        check_intact(&loc, "end") > 0,
        "the helper must have delivered something"
    );
}

#[test]
fn killed_at_each_mbox_delivery_and_update_point() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    crash_loop(
        "mbox-deliver",
        &loc,
        &path,
        &[
            "mbox-deliver-mid-append",
            "mbox-deliver-before-sync",
            "mbox-deliver-before-journal-removal",
        ],
    );
    crash_loop(
        "mbox-update",
        &loc,
        &path,
        &["mbox-update-mid-rewrite", "mbox-update-after-rename"],
    );
    assert!(
        check_intact(&loc, "end") > 0,
        "the helper must have delivered something"
    );
}
