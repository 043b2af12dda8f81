//! The guarantee (nothing deleted on the server before it is stored and recorded), tested the hard way: the real `correio fetch`
//! binary is killed (aborted, as under `kill -9`) at named points of a run against
//! Dovecot (`CORREIO_FAILPOINT`, see `correio_client::fetch::remote::failpoint`):
//! after login, in the middle of a message, after a batch's fsync, after its record,
//! after its publication and (delete mode) after its DELEs. After every kill, each
//! corpus message must be on the server or stored locally (nothing lost); no message
//! may be stored twice nor half; in keep mode none may leave the server. At the end
//! one clean run leaves exactly the corpus locally, and in delete mode an empty server.

mod fetch_support;

use std::path::Path;
use std::time::{Duration, Instant};

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const USER: &str = "kim";
const PASS: &str = "pw";
const BATCH: usize = 4;

fn multiset_check(
    corpus: &[Vec<u8>],
    local: &[Vec<u8>],
    server: &[Vec<u8>],
    keep: bool,
    round: &str,
) {
    for m in corpus {
        let l = local.iter().filter(|x| *x == m).count();
        let s = server.iter().filter(|x| *x == m).count();
        assert!(l + s >= 1, "{round}: a message was lost");
        assert!(l <= 1, "{round}: a message was stored {l} times");
        if keep {
            assert_eq!(s, 1, "{round}: keep mode removed a message from the server");
        }
    }
    assert!(
        local.iter().all(|m| corpus.contains(m)),
        "{round}: a stored message is not from the corpus (partial?)"
    );
}

/// The kills of one mode: each named point at a few counts (`NAME:N` = the Nth batch
/// of the run, or the Nth message for `fetch-mid-message`).
fn kill_points(keep: bool) -> Vec<(&'static str, u64)> {
    let mut points = vec![("fetch-after-login", 1)];
    for n in [1, 2, 6] {
        points.push(("fetch-mid-message", n));
    }
    let mut batch_points = vec![
        "fetch-after-sync",
        "fetch-after-state",
        "fetch-after-publish",
    ];
    if !keep {
        batch_points.push("fetch-after-dele");
    }
    for n in [1, 2, 3] {
        for p in &batch_points {
            points.push((p, n));
        }
    }
    points
}

fn kill_run(keep: bool) {
    let points = kill_points(keep);
    // Enough messages that no kill point lies past the end of the run: each kill
    // moves the run on by at most 3 batches.
    let msgs = corpus(BATCH * 3 * (points.len() + 2));
    let d = Dovecot::start(&DovecotConfig::with_user(USER, PASS)).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &msgs);
    d.give_mail_to_owner().unwrap();
    let port = d.pop3_addr().port();
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let mode = if keep { "--keep" } else { "--delete" };
    let batch = BATCH.to_string();
    let args = [
        "--tls",
        "none",
        mode,
        "--to",
        to.as_str(),
        "--batch-messages",
        batch.as_str(),
        "--quiet",
    ];

    let mut stored_seen = std::collections::BTreeSet::new();
    for (point, n) in &points {
        let round = format!("{point}:{n}");
        let stored = maildir_messages(&md).len();
        assert!(
            stored < msgs.len(),
            "{round}: the corpus ran out before the kill"
        );
        stored_seen.insert(stored);
        // The run must die at the named point, not end, nor fail elsewhere (a retry
        // only while Dovecot still holds the maildrop lock of the previous kill).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args)
                .env("CORREIO_FAILPOINT", &round)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains(&format!("failpoint {round} reached")) {
                assert!(!out.status.success(), "{round}: aborted yet succeeded?");
                break;
            }
            assert!(
                !fetched_ok(out.status) && Instant::now() < deadline,
                "{round}: the run did not reach its failpoint ({}): {err}",
                out.status
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        multiset_check(
            &msgs,
            &maildir_messages(&md),
            &server_messages(&d.maildir(USER)),
            keep,
            &round,
        );
    }
    eprintln!(
        "{}: {} kills, stored counts seen before them: {stored_seen:?}",
        if keep { "keep" } else { "delete" },
        points.len()
    );
    assert!(
        stored_seen.len() >= 4,
        "kills did not land mid-transfer (states seen: {stored_seen:?})"
    );

    // A final clean run (retrying while Dovecot still holds the lock of a killed one).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args)
            .output()
            .unwrap();
        if fetched_ok(out.status) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "final run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        maildir_messages(&md),
        sorted(&msgs),
        "local store must hold the corpus exactly once"
    );
    let server = server_messages(&d.maildir(USER));
    if keep {
        assert_eq!(server.len(), msgs.len());
    } else {
        assert!(
            server.is_empty(),
            "{} messages left on the server",
            server.len()
        );
    }
}

fn server_messages(maildir: &Path) -> Vec<Vec<u8>> {
    maildir_messages(maildir)
}

#[test]
fn killed_at_each_named_point_keep_mode_never_duplicates() {
    kill_run(true);
}

#[test]
fn killed_at_each_named_point_delete_mode_never_loses() {
    kill_run(false);
}
