//! `EXPIRE n` and `LOGIN-DELAY n` state in the store, on both backends, with the clock
//! injected: first retrieval dates recorded at UPDATE, due messages removed at a later
//! UPDATE (and only then), never-retrieved messages kept forever, nothing recorded or
//! removed when a session ends without UPDATE, and the last login surviving reopen.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_store::expiry::{self, read_retrievals, write_retrievals};
use correio_store::{DeliverOptions, MailLocation, Update, deliver, open_maildrop};

const DAY: u64 = 86_400;
const T: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn locations(dir: &std::path::Path) -> [MailLocation; 2] {
    [
        MailLocation::Maildir(dir.join("Maildir")),
        MailLocation::Mbox(dir.join("mbox")),
    ]
}

fn fill(loc: &MailLocation, n: usize) {
    for i in 0..n {
        let msg = format!("Subject: m{i}\n\nbody {i}\n");
        deliver(loc, msg.as_bytes(), &DeliverOptions::default()).unwrap();
    }
}

fn uidls(loc: &MailLocation) -> Vec<String> {
    let md = open_maildrop(loc).unwrap();
    md.messages().iter().map(|m| m.uidl.clone()).collect()
}

/// One session at `now`: retrieve `retrieved`, QUIT with `expire_days` (0 = none).
fn session(loc: &MailLocation, retrieved: Vec<usize>, expire_days: u64, now: u64) -> usize {
    let md = open_maildrop(loc).unwrap();
    let mut u = Update::new(Vec::new(), at(now)).with_retrieved(retrieved);
    if expire_days > 0 {
        u = u.with_expiry(Duration::from_secs(expire_days * DAY));
    }
    md.update(&u).unwrap().expired
}

#[test]
fn retrieved_message_expires_after_n_days_not_before() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 3);
        let all = uidls(&loc);
        // Message 2 retrieved at T; the date is recorded at this UPDATE.
        assert_eq!(session(&loc, vec![1], 3, T), 0);
        let dates = read_retrievals(&loc).unwrap();
        assert_eq!(dates, BTreeMap::from([(all[1].clone(), T)]), "{loc:?}");
        // A later retrieval keeps the first date.
        assert_eq!(session(&loc, vec![1], 3, T + DAY), 0);
        assert_eq!(read_retrievals(&loc).unwrap()[&all[1]], T);
        // One second before it is due: kept.
        assert_eq!(session(&loc, vec![], 3, T + 3 * DAY - 1), 0);
        assert_eq!(uidls(&loc), all, "{loc:?}");
        // One second after: removed at this UPDATE, and its date forgotten.
        assert_eq!(session(&loc, vec![], 3, T + 3 * DAY + 1), 1);
        assert_eq!(uidls(&loc), vec![all[0].clone(), all[2].clone()], "{loc:?}");
        assert!(read_retrievals(&loc).unwrap().is_empty());
    }
}

#[test]
fn unretrieved_messages_never_expire() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 2);
        let all = uidls(&loc);
        assert_eq!(session(&loc, vec![], 1, T), 0);
        assert_eq!(session(&loc, vec![], 1, T + 10_000 * DAY), 0);
        assert_eq!(uidls(&loc), all);
        assert!(!expiry::retrieved_path(&loc).exists(), "nothing to record");
    }
}

#[test]
fn session_dropped_without_update_records_and_deletes_nothing() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 2);
        let all = uidls(&loc);
        // Message 1 retrieved long ago (recorded by an earlier UPDATE).
        write_retrievals(&loc, &BTreeMap::from([(all[0].clone(), T)])).unwrap();
        {
            let md = open_maildrop(&loc).unwrap();
            let mut r = md.open_message(1).unwrap();
            std::io::copy(&mut r, &mut std::io::sink()).unwrap();
            // Connection lost: no update().
        }
        assert_eq!(uidls(&loc), all, "due message kept without UPDATE");
        assert_eq!(read_retrievals(&loc).unwrap().len(), 1, "no new date");
        // The next real UPDATE with expiry removes the due one only.
        assert_eq!(session(&loc, vec![], 1, T + 2 * DAY), 1);
        assert_eq!(uidls(&loc), vec![all[1].clone()]);
    }
}

#[test]
fn deletions_and_expiry_together_count_once() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 3);
        let all = uidls(&loc);
        session(&loc, vec![0, 1], 1, T);
        let md = open_maildrop(&loc).unwrap();
        // Message 1 is both marked deleted and due: removed once, not counted as expired.
        let u = Update::new(vec![0], at(T + 2 * DAY)).with_expiry(Duration::from_secs(DAY));
        let report = md.update(&u).unwrap();
        assert_eq!((report.removed, report.expired), (2, 1), "{loc:?}");
        assert_eq!(uidls(&loc), vec![all[2].clone()]);
        assert!(read_retrievals(&loc).unwrap().is_empty());
    }
}

#[test]
fn without_expiry_dates_are_only_recorded() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 1);
        session(&loc, vec![0], 0, T);
        // EXPIRE NEVER (or none): even a very old date removes nothing.
        assert_eq!(session(&loc, vec![], 0, T + 1000 * DAY), 0);
        assert_eq!(uidls(&loc).len(), 1);
    }
}

#[test]
fn future_or_corrupt_dates_never_delete() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 2);
        let all = uidls(&loc);
        // The clock went back: a date after "now" is not due.
        write_retrievals(&loc, &BTreeMap::from([(all[0].clone(), T + DAY)])).unwrap();
        assert_eq!(session(&loc, vec![], 1, T), 0);
        // A damaged file counts as "never retrieved" (warned), and is rebuilt.
        std::fs::write(expiry::retrieved_path(&loc), b"garbage").unwrap();
        assert_eq!(session(&loc, vec![1], 1, T + 500 * DAY), 0);
        assert_eq!(uidls(&loc), all);
        assert!(read_retrievals(&loc).unwrap().contains_key(&all[1]));
    }
}

#[test]
fn bad_indexes_are_refused_before_anything_changes() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 1);
        let md = open_maildrop(&loc).unwrap();
        let u = Update::new(vec![0], at(T)).with_retrieved(vec![5]);
        assert!(md.update(&u).is_err());
        assert_eq!(uidls(&loc).len(), 1);
        assert!(!expiry::retrieved_path(&loc).exists());
    }
}

#[test]
fn last_login_survives_reopen_on_both_backends() {
    let d = tempfile::tempdir().unwrap();
    for loc in locations(d.path()) {
        fill(&loc, 1);
        assert_eq!(expiry::last_login(&loc), None);
        let t = at(T) + Duration::from_millis(250);
        expiry::record_login(&loc, t).unwrap();
        drop(open_maildrop(&loc).unwrap());
        assert_eq!(expiry::last_login(&loc), Some(t));
    }
}
