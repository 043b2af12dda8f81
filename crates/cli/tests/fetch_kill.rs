//! The guarantee (nothing deleted on the server before it is stored and recorded), tested the hard way: the real `correio fetch`
//! binary is killed with SIGKILL at many points of a run against Dovecot. After every
//! kill, each corpus message must be on the server or stored locally (nothing lost);
//! in keep mode no message may ever be stored twice; at the end one clean run leaves
//! exactly the corpus locally, and in delete mode an empty server.

mod fetch_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const USER: &str = "kim";
const PASS: &str = "pw";

/// A small deterministic generator for kill delays.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn multiset_check(
    corpus: &[Vec<u8>],
    local: &[Vec<u8>],
    server: &[Vec<u8>],
    keep: bool,
    round: usize,
) {
    for m in corpus {
        let l = local.iter().filter(|x| *x == m).count();
        let s = server.iter().filter(|x| *x == m).count();
        assert!(l + s >= 1, "round {round}: a message was lost");
        assert!(l <= 1, "round {round}: a message was stored {l} times");
        if keep {
            assert_eq!(
                s, 1,
                "round {round}: keep mode removed a message from the server"
            );
        }
    }
    assert!(
        local.iter().all(|m| corpus.contains(m)),
        "round {round}: a stored message is not from the corpus (partial?)"
    );
}

fn kill_run(keep: bool) {
    // Enough messages that a whole run takes far longer than the kill delays below even
    // on an idle machine (a run that ends before its kill would end the test early).
    let msgs = corpus(400);
    let d = Dovecot::start(&DovecotConfig::with_user(USER, PASS)).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &msgs);
    d.give_mail_to_owner().unwrap();
    let port = d.pop3_addr().port();
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let mode = if keep { "--keep" } else { "--delete" };
    let args = [
        "--tls",
        "none",
        mode,
        "--to",
        to.as_str(),
        "--batch-messages",
        "4",
        "--quiet",
    ];

    let mut rng = Lcg(if keep { 7 } else { 11 });
    let mut kills = 0;
    let mut intermediate = std::collections::BTreeSet::new();
    for round in 0..40 {
        let stored = maildir_messages(&md).len();
        if stored == msgs.len() {
            break;
        }
        intermediate.insert(stored);
        let mut child = fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Where to kill, by what the run has visibly done (timing alone is unreliable
        // on a busy machine): after a random number of newly published messages (just
        // after a group commit, maybe before its DELEs), or a little after a new file
        // appears in tmp/ (mid-message, before any fsync), or at a random instant of
        // start-up and login.
        let how = round % 3;
        let goal = stored + 1 + rng.next(8) as usize;
        let extra = Duration::from_micros(rng.next(1000));
        let tmp_before = count(&md.join("tmp"));
        let deadline = Instant::now() + Duration::from_secs(15);
        if how == 2 {
            // Start-up, connect and login take a few ms; on an idle machine 40 ms was
            // enough to finish a whole run before the kill, so stay within that phase.
            std::thread::sleep(Duration::from_micros(rng.next(8_000)));
        } else {
            loop {
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                let hit = match how {
                    0 => count(&md.join("new")) >= goal,
                    // A tmp/ file can live shorter than one poll; the first newly
                    // published message is the fallback so the run is still cut.
                    _ => count(&md.join("tmp")) > tmp_before || count(&md.join("new")) > stored,
                };
                if hit {
                    std::thread::sleep(extra);
                    break;
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        // Dovecot notices the dropped connection and releases the maildrop lock
        // without deleting anything.
        multiset_check(
            &msgs,
            &maildir_messages(&md),
            &server_messages(&d.maildir(USER)),
            keep,
            round,
        );
    }
    eprintln!(
        "{}: {kills} kills, stored counts seen at round starts: {intermediate:?}",
        if keep { "keep" } else { "delete" }
    );
    assert!(
        kills >= 8,
        "only {kills} runs were actually killed; the test lost its point"
    );
    assert!(
        intermediate.len() >= 4,
        "kills did not land mid-transfer (states seen: {intermediate:?})"
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

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

fn server_messages(maildir: &Path) -> Vec<Vec<u8>> {
    maildir_messages(maildir)
}

#[test]
fn sigkill_at_many_points_keep_mode_never_duplicates() {
    kill_run(true);
}

#[test]
fn sigkill_at_many_points_delete_mode_never_loses() {
    kill_run(false);
}
