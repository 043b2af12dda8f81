//! Crash tests: a child process (this test binary, re-run in helper mode) delivers and
//! runs UPDATE in a loop and is killed with SIGKILL after a random delay, many times.
//! After every kill, every message in the mailbox must be intact (byte-exact, with the
//! size the store reports) or absent: never half, never duplicated; and the session
//! lock of the dead process must be free again.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use correio_store::{DeliverOptions, MailLocation, deliver, open_maildrop};

const MODE: &str = "CORREIO_CRASH_MODE";
const TARGET: &str = "CORREIO_CRASH_TARGET";

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
    let start = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut i = seed % 1_000_000_000 * 1000;
    assert_eq!(i % 1000, 0);
    while start.elapsed() < Duration::from_secs(20) {
        i += 1;
        deliver(&loc, &message(i)[..], &DeliverOptions::default()).unwrap();
        if i % 1000 == 1 {
            // Tells the parent we are up, so its random delay lands inside the loop.
            println!("started");
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
        }
        if mode.ends_with("update") {
            let md = open_maildrop(&loc).unwrap();
            let n = md.messages().len();
            if n > 3 {
                md.commit(&[0, n / 2]).unwrap();
            }
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_intact(loc: &MailLocation, round: usize) -> usize {
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

fn crash_loop(mode: &str, loc: &MailLocation, target: &Path, rounds: usize) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{mode}: seed {seed}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut total = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "crash_helper",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MODE, mode)
            .env(TARGET, target)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the helper's first delivery (it gives up by itself after 20 s).
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0
            && !line.trim_end().ends_with("started")
        {
            line.clear();
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 50));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        total = check_intact(loc, round);
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
    eprintln!("{mode}: {rounds} kills, {total} messages at the end, all intact");
}

#[test]
fn sigkill_during_maildir_delivery_and_update() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    let loc = MailLocation::Maildir(root.clone());
    crash_loop("maildir-deliver", &loc, &root, 15);
    crash_loop("maildir-update", &loc, &root, 15);
    assert!(
        check_intact(&loc, 999) > 0,
        "the helper must have delivered something"
    );
}

#[test]
fn sigkill_during_mbox_delivery_and_update() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    crash_loop("mbox-deliver", &loc, &path, 15);
    crash_loop("mbox-update", &loc, &path, 15);
    assert!(
        check_intact(&loc, 999) > 0,
        "the helper must have delivered something"
    );
}
