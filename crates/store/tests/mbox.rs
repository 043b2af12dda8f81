//! mbox semantics: mboxrd writing, reading mboxrd/mboxo/mboxcl2 and files written by
//! another tool (Python's mailbox module), UIDL stability across rewrites and appends,
//! UPDATE keeping messages appended during the session, locks.

use std::fs;
use std::io::Read;
use std::time::Duration;

use correio_store::lock::{MboxLock, dotlock_path};
use correio_store::mbox::MboxWriter;
use correio_store::{
    DeliverErrorKind, DeliverOptions, MailLocation, Maildrop, StoreError, deliver, open_maildrop,
};

fn contents(md: &dyn Maildrop) -> Vec<Vec<u8>> {
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

fn wire_len(stored: &[u8]) -> u64 {
    let lf = stored.iter().filter(|&&b| b == b'\n').count() as u64;
    stored.len() as u64
        + lf
        + if stored.is_empty() || stored.ends_with(b"\n") {
            0
        } else {
            2
        }
}

fn uidls(md: &dyn Maildrop) -> Vec<String> {
    md.messages().iter().map(|m| m.uidl.clone()).collect()
}

#[test]
fn mboxrd_write_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    let msgs: Vec<&[u8]> = vec![
        b"Subject: one\n\nFrom the start\n>From quoted\n>>From twice\n",
        b"Subject: two\r\n\r\nno final newline",
        b"Subject: three\n\n\n\ntrailing blank lines\n\n",
    ];
    let opts = DeliverOptions::default().envelope_sender(Some("a@b".into()));
    for m in &msgs {
        deliver(&loc, *m, &opts).unwrap();
    }
    let raw = fs::read_to_string(&path).unwrap();
    assert!(raw.starts_with("From a@b "));
    assert!(
        raw.contains("\n>From the start\n>>From quoted\n>>>From twice\n"),
        "{raw}"
    );
    assert!(
        !dotlock_path(&path).exists(),
        "dotlock removed after delivery"
    );
    let md = open_maildrop(&loc).unwrap();
    let expected: Vec<Vec<u8>> = vec![
        msgs[0].to_vec(),
        b"Subject: two\n\nno final newline\n".to_vec(),
        msgs[2].to_vec(),
    ];
    assert_eq!(contents(&*md), expected);
    for (m, e) in md.messages().iter().zip(&expected) {
        assert_eq!(m.size, wire_len(e));
    }
}

#[test]
fn reads_mbox_written_by_pythons_mailbox_module() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("py.mbox");
    let script = format!(
        "import mailbox\n\
         mb = mailbox.mbox('{}')\n\
         mb.lock()\n\
         mb.add(b'Subject: py one\\n\\nFrom inside body\\nline\\n')\n\
         mb.add(b'Subject: py two\\n\\n.dot\\n')\n\
         mb.flush(); mb.unlock(); mb.close()\n",
        path.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loc = MailLocation::Mbox(path.clone());
    let md = open_maildrop(&loc).unwrap();
    let c = contents(&*md);
    assert_eq!(
        c.len(),
        2,
        "raw: {}",
        String::from_utf8_lossy(&fs::read(&path).unwrap())
    );
    // Python writes mboxo (">From " quoting); reading it unquotes the line.
    assert_eq!(c[0], b"Subject: py one\n\nFrom inside body\nline\n");
    assert_eq!(c[1], b"Subject: py two\n\n.dot\n");
    for (m, e) in md.messages().iter().zip(&c) {
        assert_eq!(m.size, wire_len(e));
    }
    // Delete the first through Correio; Python still reads the rest.
    md.commit(&[0]).unwrap();
    let check = format!(
        "import mailbox\nmb = mailbox.mbox('{}')\nprint(len(mb), mb[0]['subject'])\n",
        path.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&check)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 py two");
}

#[test]
fn python_reads_what_we_append() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    deliver(
        &loc,
        &b"Subject: ours\n\nFrom x\nbody\n"[..],
        &DeliverOptions::default(),
    )
    .unwrap();
    deliver(
        &loc,
        &b"Subject: ours2\n\nz\n"[..],
        &DeliverOptions::default(),
    )
    .unwrap();
    let check = format!(
        "import mailbox\nmb = mailbox.mbox('{}')\nprint(len(mb), repr(mb[0].get_payload()), mb[1]['subject'])\n",
        path.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&check)
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Python reads mboxo: it keeps our single quoting level on "From x".
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2 '>From x\\nbody\\n' ours2"
    );
}

#[test]
fn mboxcl2_content_length_and_preamble_and_status_headers() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("cl");
    let body = "From not a separator\n>From literal\n";
    let text = format!(
        "junk before the first message\n\
         From a Thu Jan  1 00:00:00 1970\nContent-Length: {}\nSubject: cl\n\n{body}\n\
         From b Thu Jan  1 00:00:01 1970\nSubject: plain\n\n>From quoted\n",
        body.len()
    );
    fs::write(&path, &text).unwrap();
    let loc = MailLocation::Mbox(path.clone());
    let md = open_maildrop(&loc).unwrap();
    let c = contents(&*md);
    assert_eq!(
        c,
        vec![
            format!("Content-Length: {}\nSubject: cl\n\n{body}", body.len()).into_bytes(),
            b"Subject: plain\n\nFrom quoted\n".to_vec()
        ]
    );
    let ids = uidls(&*md);
    drop(md);
    // A MUA adds Status:/X-Status: headers in place: the UIDL stays.
    let changed = text.replace(
        "Subject: plain\n",
        "Subject: plain\nStatus: RO\nX-Status: A\n",
    );
    fs::write(&path, changed).unwrap();
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(uidls(&*md), ids);
    // UPDATE keeps the preamble.
    md.commit(&[0]).unwrap();
    let after = fs::read_to_string(&path).unwrap();
    assert!(
        after.starts_with("junk before the first message\nFrom b "),
        "{after}"
    );
}

#[test]
fn uidls_stable_across_rewrites_and_foreign_appends_and_update_keeps_new_mail() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    for i in 0..5 {
        deliver(
            &loc,
            format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
            &DeliverOptions::default(),
        )
        .unwrap();
    }
    // Two byte-identical copies (same From_ line too): distinct UIDLs.
    let raw = fs::read(&path).unwrap();
    let first_end = raw.windows(6).position(|w| w == b"\nFrom ").unwrap() + 1;
    let mut dup = raw.clone();
    dup.extend_from_slice(&raw[..first_end]);
    fs::write(&path, &dup).unwrap();
    let md = open_maildrop(&loc).unwrap();
    let ids = uidls(&*md);
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[5], format!("{}-2", ids[0]));
    let set: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(set.len(), 6);
    // During the session another program appends a message.
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(
        &mut f,
        b"From other@tool Fri Jan  2 00:00:00 1970\nSubject: late\n\nlate\n\n",
    )
    .unwrap();
    drop(f);
    let r = md.commit(&[1, 3]).unwrap();
    assert_eq!((r.removed, r.already_gone), (2, 0));
    let md = open_maildrop(&loc).unwrap();
    let after = uidls(&*md);
    assert_eq!(after.len(), 5);
    assert_eq!(
        &after[..4],
        &[
            ids[0].clone(),
            ids[2].clone(),
            ids[4].clone(),
            ids[5].clone()
        ]
    );
    assert_eq!(contents(&*md)[4], b"Subject: late\n\nlate\n");
}

#[test]
fn session_lock_and_mail_locks() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    deliver(&loc, &b"x\n"[..], &DeliverOptions::default()).unwrap();
    let md = open_maildrop(&loc).unwrap();
    assert!(matches!(open_maildrop(&loc), Err(StoreError::InUse)));
    // Delivery goes on during a session (the mail locks are not held by it).
    deliver(&loc, &b"y\n"[..], &DeliverOptions::default()).unwrap();
    drop(md);
    // While another tool holds the mail lock, delivery times out with a temporary error.
    let held = MboxLock::acquire(&path, false, Duration::from_secs(1)).unwrap();
    let e = deliver(
        &loc,
        &b"z\n"[..],
        &DeliverOptions::default().lock_timeout(Duration::from_millis(200)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::LockTimeout);
    assert_eq!(e.exit_code(), 75);
    drop(held);
    assert_eq!(open_maildrop(&loc).unwrap().messages().len(), 2);
}

#[test]
fn missing_mbox_is_empty_and_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let md = open_maildrop(&MailLocation::Mbox(d.path().join("none"))).unwrap();
    assert!(md.messages().is_empty());
    assert_eq!(md.commit(&[]).unwrap().removed, 0);
    let e = deliver(
        &MailLocation::Mbox(d.path().to_path_buf()),
        &b"x\n"[..],
        &DeliverOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::MailboxUnusable);
    assert!(matches!(
        open_maildrop(&MailLocation::Mbox(d.path().to_path_buf())),
        Err(StoreError::Location(_))
    ));
}

#[test]
fn mbox_batch_and_failed_append_truncates_back() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let w = MboxWriter::new(&path, DeliverOptions::default().max_message_size(Some(20)));
    w.append(&b"small\n"[..]).unwrap();
    let before = fs::read(&path).unwrap();
    let e = w.append(&[b'x'; 100][..]).unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::TooLarge);
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a failed append leaves the mbox as it was"
    );
    let mut b = w.batch().unwrap();
    b.add(&b"one\n"[..]).unwrap();
    b.add(&b"two\n"[..]).unwrap();
    assert_eq!(b.commit().unwrap().len(), 2);
    let mut b = w.batch().unwrap();
    b.add(&b"dropped\n"[..]).unwrap();
    drop(b);
    let md = open_maildrop(&MailLocation::Mbox(path.clone())).unwrap();
    assert_eq!(
        contents(&*md),
        vec![b"small\n".to_vec(), b"one\n".to_vec(), b"two\n".to_vec()]
    );
}
