//! Maildir semantics: delivery, snapshot, sizes, UIDL stability, index rebuild,
//! deletion, locking across processes, quotas, bad locations.

use std::fs;
use std::io::Read;
use std::path::Path;

use correio_store::maildir::{INDEX_FILE, MaildirWriter};
use correio_store::{
    DeliverErrorKind, DeliverOptions, LineEnds, MailLocation, StoreError, deliver, open_maildrop,
};

fn read(md: &dyn correio_store::Maildrop, i: usize) -> Vec<u8> {
    let mut v = Vec::new();
    md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn delivery_names_sizes_and_contents() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    let loc = MailLocation::Maildir(root.clone());
    let got = deliver(
        &loc,
        &b"Subject: a\r\n\r\nbody\r\nno final newline"[..],
        &DeliverOptions::default(),
    )
    .unwrap();
    assert_eq!(
        got.size,
        "Subject: a\n\nbody\nno final newline\n".len() as u64
    );
    assert_eq!(got.wire_size, got.size + 4);
    let name = got.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with(&format!(",S={},W={}", got.size, got.wire_size)),
        "{name}"
    );
    assert_eq!(got.path.parent().unwrap(), root.join("new"));
    assert!(
        files(&root.join("tmp")).is_empty(),
        "tmp/ must be empty after delivery"
    );
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages().len(), 1);
    assert_eq!(md.messages()[0].size, got.wire_size);
    assert_eq!(read(&*md, 0), b"Subject: a\n\nbody\nno final newline\n");
}

#[test]
fn crlf_storage_keeps_wire_form_and_names_the_dot_lines() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    let loc = MailLocation::Maildir(root.clone());
    let crlf = DeliverOptions::default().line_ends(LineEnds::Crlf);
    // LF in, a lone CR, no final line end: stored with CRLF, nothing else changed.
    let clean = deliver(&loc, &b"Subject: a\n\nbody\rx\nend"[..], &crlf).unwrap();
    assert_eq!(
        fs::read(&clean.path).unwrap(),
        b"Subject: a\r\n\r\nbody\rx\r\nend\r\n"
    );
    assert_eq!((clean.size, clean.wire_size), (27, 27));
    let name = clean
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(",S=27,W=27,D=0"), "{name}");
    // Dot lines are counted, the first line and one after a chunk boundary included.
    let dotted = deliver(&loc, &b".a\r\nb\r\n..c\r\n.\r\n"[..], &crlf).unwrap();
    let name = dotted
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(",D=3"), "{name}");
    // LF storage: as before, no D field.
    let lf = deliver(&loc, &b"x\r\n"[..], &DeliverOptions::default()).unwrap();
    let name = lf.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(",S=2,W=3"), "{name}");

    let md = open_maildrop(&loc).unwrap();
    let at = |p: &Path| {
        let n = p.file_name().unwrap().to_string_lossy();
        let base = n.split(',').next().unwrap().to_owned();
        md.messages().iter().position(|m| m.uidl == base).unwrap()
    };
    let (i_clean, i_dotted, i_lf) = (at(&clean.path), at(&dotted.path), at(&lf.path));
    let (f, len) = md.wire_file(i_clean).unwrap().expect("wire form");
    assert_eq!(len, 27);
    assert_eq!(f.metadata().unwrap().len(), 27);
    assert!(md.wire_file(i_dotted).unwrap().is_none(), "needs stuffing");
    assert!(md.wire_file(i_lf).unwrap().is_none(), "LF line ends");
    // Read the ordinary way, a CRLF file gives the same message.
    assert_eq!(read(&*md, i_clean), fs::read(&clean.path).unwrap());
    drop(md);

    // Written long after the time in its name (rewritten in place, same length): not
    // trusted to be in wire form any more.
    let f = fs::File::options().append(true).open(&clean.path).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(7200))
        .unwrap();
    drop(f);
    let md = open_maildrop(&loc).unwrap();
    assert!(md.wire_file(i_clean).unwrap().is_none(), "rewritten later");
    drop(md);

    // A file that changed behind the name is not trusted: measured the usual way.
    fs::write(&clean.path, b"Subject: a\r\n\r\nbody changed!!!!!\r\n").unwrap();
    let md = open_maildrop(&loc).unwrap();
    let i = md
        .messages()
        .iter()
        .position(|m| clean.path.to_string_lossy().contains(&m.uidl))
        .unwrap();
    assert!(md.wire_file(i).unwrap().is_none());
}

#[test]
fn crlf_storage_chunked_like_lmtp_counts_dot_lines_across_chunks() {
    let d = tempfile::tempdir().unwrap();
    let w = MaildirWriter::open(&d.path().join("M")).unwrap();
    let msg: &[u8] = b"a\n.b\r\nc\r\n.\n";
    for split in 0..=msg.len() {
        let mut batch = w.batch();
        batch
            .begin(&DeliverOptions::default().line_ends(LineEnds::Crlf))
            .unwrap();
        batch.write(&msg[..split]).unwrap();
        batch.write(&msg[split..]).unwrap();
        batch.finish().unwrap();
        let got = batch.commit().unwrap().pop().unwrap();
        assert_eq!(fs::read(&got.path).unwrap(), b"a\r\n.b\r\nc\r\n.\r\n");
        let name = got.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(",S=13,W=13,D=2"), "split {split}: {name}");
    }
}

#[test]
fn foreign_maildir_without_sizes_uses_and_validates_the_index() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("M");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    // As Postfix names them (no ,S= or ,W=), one in cur/ with flags.
    fs::write(
        root.join("new/1700000001.V801I1M1.mx"),
        b"Subject: one\n\nx\n",
    )
    .unwrap();
    fs::write(
        root.join("cur/1700000000.V801I2M2.mx:2,S"),
        b"Subject: zero\r\n\r\ny",
    )
    .unwrap();
    fs::write(root.join("new/.hidden"), b"ignored").unwrap();
    fs::write(root.join("tmp/1700000002.V1.mx"), b"in delivery").unwrap();
    let loc = MailLocation::Maildir(root.clone());
    let md = open_maildrop(&loc).unwrap();
    let m: Vec<(u64, String)> = md
        .messages()
        .iter()
        .map(|m| (m.size, m.uidl.clone()))
        .collect();
    assert_eq!(
        m,
        vec![
            (18 + 2, "1700000000.V801I2M2.mx".to_string()),
            (16 + 3, "1700000001.V801I1M1.mx".to_string())
        ]
    );
    assert_eq!(read(&*md, 0), b"Subject: zero\r\n\r\ny");
    drop(md);
    let index = fs::read_to_string(root.join(INDEX_FILE)).unwrap();
    assert!(index.starts_with("correio-maildir-index 2\n") && index.ends_with("end 2\n"));

    // Another tool changes a file in place: the cached size is not trusted.
    fs::write(
        root.join("new/1700000001.V801I1M1.mx"),
        b"Subject: one\n\nlonger body now\n",
    )
    .unwrap();
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages()[1].size, 30 + 3);
    drop(md);

    // A corrupt index is rebuilt with the same UIDLs.
    fs::write(root.join(INDEX_FILE), b"correio-maildir-index 1\nzz\n").unwrap();
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages()[0].uidl, "1700000000.V801I2M2.mx");
    assert_eq!(md.messages()[1].size, 33);
}

#[test]
fn uidl_survives_flag_renames_and_new_to_cur_moves() {
    let d = tempfile::tempdir().unwrap();
    let loc = MailLocation::Maildir(d.path().join("M"));
    let got = deliver(&loc, &b"x\n"[..], &DeliverOptions::default()).unwrap();
    let before = open_maildrop(&loc).unwrap().messages()[0].clone();
    // A MUA moves it to cur/ and sets flags.
    let name = got.path.file_name().unwrap().to_string_lossy().into_owned();
    let cur = d.path().join("M/cur").join(format!("{name}:2,RS"));
    fs::rename(&got.path, &cur).unwrap();
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages()[0], before);
    // Renamed again during the session: reading and deleting still find it.
    let cur2 = d.path().join("M/cur").join(format!("{name}:2,FRS"));
    fs::rename(&cur, &cur2).unwrap();
    assert_eq!(read(&*md, 0), b"x\n");
    let r = md.commit(&[0]).unwrap();
    assert_eq!((r.removed, r.already_gone), (1, 0));
    assert!(!cur2.exists());
}

#[test]
fn deletion_is_idempotent_and_only_on_commit() {
    let d = tempfile::tempdir().unwrap();
    let loc = MailLocation::Maildir(d.path().join("M"));
    let a = deliver(&loc, &b"a\n"[..], &DeliverOptions::default()).unwrap();
    deliver(&loc, &b"b\n"[..], &DeliverOptions::default()).unwrap();
    deliver(&loc, &b"c\n"[..], &DeliverOptions::default()).unwrap();
    // A session that ends without commit deletes nothing.
    drop(open_maildrop(&loc).unwrap());
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages().len(), 3);
    let uidls: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    // Another program removes message 1 meanwhile.
    fs::remove_file(&a.path).unwrap();
    assert!(matches!(md.open_message(0), Err(StoreError::Vanished(0))));
    assert!(matches!(
        md.open_message(3),
        Err(StoreError::NoSuchMessage(3))
    ));
    let r = md.commit(&[0, 2, 2]).unwrap();
    assert_eq!((r.removed, r.already_gone), (1, 1));
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages().len(), 1);
    assert_eq!(md.messages()[0].uidl, uidls[1]);
    // Out of range is refused before anything is removed.
    assert!(matches!(
        md.commit(&[0, 5]),
        Err(StoreError::NoSuchMessage(5))
    ));
    assert_eq!(open_maildrop(&loc).unwrap().messages().len(), 1);
}

#[test]
fn one_session_at_a_time_across_processes() {
    let d = tempfile::tempdir().unwrap();
    let loc = MailLocation::Maildir(d.path().join("M"));
    let md = open_maildrop(&loc).unwrap();
    assert!(matches!(open_maildrop(&loc), Err(StoreError::InUse)));
    // Another process (flock(1) from util-linux) sees the lock too, and fails fast.
    let lock = d
        .path()
        .join("M")
        .join(correio_store::maildir::SESSION_LOCK_FILE);
    let out = std::process::Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap();
    assert!(
        !out.success(),
        "flock -n must fail while a session holds the maildrop"
    );
    drop(md);
    let out = std::process::Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap();
    assert!(out.success());
    // And a lock held by another process makes us fail fast with InUse.
    let mut child = std::process::Command::new("flock")
        .arg(&lock)
        .arg("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let mut seen = false;
    while t.elapsed() < std::time::Duration::from_secs(3) {
        match open_maildrop(&loc) {
            Err(StoreError::InUse) => {
                seen = true;
                break;
            }
            Ok(m) => drop(m),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen);
}

#[test]
fn quotas_and_size_limits() {
    let d = tempfile::tempdir().unwrap();
    let loc = MailLocation::Maildir(d.path().join("M"));
    let opts = DeliverOptions::default().quota(Some(10), Some(2));
    deliver(&loc, &b"12345\n"[..], &opts).unwrap();
    let e = deliver(&loc, &b"123456789\n"[..], &opts).unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::QuotaExceeded);
    assert!(e.is_temporary());
    assert_eq!(
        (e.reply_code(), e.enhanced_status(), e.exit_code()),
        (452, "4.2.2", 75)
    );
    deliver(&loc, &b"1\n"[..], &opts).unwrap();
    let e = deliver(&loc, &b"1\n"[..], &opts.clone().quota_permanent(true)).unwrap_err();
    assert!(!e.is_temporary());
    assert_eq!((e.reply_code(), e.enhanced_status()), (552, "5.2.2"));
    let e = deliver(
        &loc,
        &[b'x'; 100][..],
        &DeliverOptions::default().max_message_size(Some(50)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::TooLarge);
    assert_eq!(
        (e.reply_code(), e.enhanced_status(), e.exit_code()),
        (552, "5.3.4", 69)
    );
    assert_eq!(open_maildrop(&loc).unwrap().messages().len(), 2);
    assert!(
        files(&d.path().join("M/tmp")).is_empty(),
        "failed deliveries leave nothing in tmp/"
    );
}

#[test]
fn mailbox_path_that_is_a_file_or_under_a_file() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("f");
    fs::write(&file, b"x").unwrap();
    for loc in [
        MailLocation::Maildir(file.clone()),
        MailLocation::Maildir(file.join("sub")),
    ] {
        let e = deliver(&loc, &b"x\n"[..], &DeliverOptions::default()).unwrap_err();
        assert_eq!(e.kind(), DeliverErrorKind::MailboxUnusable, "{e}");
        assert!(e.is_temporary());
        assert!(matches!(open_maildrop(&loc), Err(StoreError::Location(_))));
    }
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

#[test]
fn batch_group_commit_is_all_or_nothing_visible() {
    let d = tempfile::tempdir().unwrap();
    let w = MaildirWriter::open(&d.path().join("M")).unwrap();
    let mut b = w.batch();
    for i in 0..5 {
        b.add(format!("message {i}\n").as_bytes()).unwrap();
    }
    assert_eq!(b.len(), 5);
    assert!(
        files(&d.path().join("M/new")).is_empty(),
        "not visible before commit"
    );
    let done = b.commit().unwrap();
    assert_eq!(done.len(), 5);
    assert_eq!(files(&d.path().join("M/new")).len(), 5);
    // Dropped without commit: nothing appears, nothing is left in tmp/.
    let mut b = w.batch();
    b.add(&b"lost\n"[..]).unwrap();
    drop(b);
    assert_eq!(files(&d.path().join("M/new")).len(), 5);
    assert!(files(&d.path().join("M/tmp")).is_empty());
    let md = open_maildrop(&MailLocation::Maildir(d.path().join("M"))).unwrap();
    let texts: Vec<Vec<u8>> = (0..5).map(|i| read(&*md, i)).collect();
    let mut sorted = texts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..5)
            .map(|i| format!("message {i}\n").into_bytes())
            .collect::<Vec<_>>()
    );
}

/// The push-style writer (what `correio fetch` uses): chunks in any size and line
/// ends; prepare() returns the renames, and a batch dropped after prepare() leaves
/// the prepared files in tmp/ for whoever recorded the renames to finish them.
#[test]
fn pushed_messages_prepare_and_a_dropped_prepared_batch_keeps_its_files() {
    let d = tempfile::tempdir().unwrap();
    let w = MaildirWriter::open(&d.path().join("M")).unwrap();
    let mut b = w.clone().into_batch();
    let msg = b"Subject: pushed\r\n\r\nline one\r\nline two\r\n";
    for chunk in [1, 3, 7] {
        b.begin(&Default::default()).unwrap();
        for c in msg.chunks(chunk) {
            b.write(c).unwrap();
        }
        b.finish().unwrap();
    }
    // One begun and dropped: not kept.
    b.begin(&Default::default()).unwrap();
    b.write(b"half").unwrap();
    b.abort();
    let renames = b.prepare().unwrap();
    assert_eq!(renames.len(), 3);
    drop(b);
    assert!(files(&d.path().join("M/new")).is_empty());
    assert_eq!(files(&d.path().join("M/tmp")).len(), 3);
    for (tmp, dest) in &renames {
        assert_eq!(
            fs::read(tmp).unwrap(),
            b"Subject: pushed\n\nline one\nline two\n"
        );
        let name = dest.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(",S=35,W=39"), "{name}");
        fs::rename(tmp, dest).unwrap();
    }
    assert_eq!(files(&d.path().join("M/new")).len(), 3);
}

/// Sets the mtime of `root`'s cur/ and new/ to a minute ago: the directories are quiet,
/// so their mtimes may vouch for the index's listing.
fn age_dirs(root: &Path) -> [std::time::SystemTime; 2] {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for sub in ["cur", "new"] {
        set_mtime(&root.join(sub), t);
    }
    [t, t]
}

fn set_mtime(dir: &Path, t: std::time::SystemTime) {
    fs::File::open(dir)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t))
        .unwrap();
}

/// A warm open of a quiet Maildir takes its listing from the index without reading
/// the directories (what makes 50,000 messages cheap); any change to cur/ or new/
/// moves their mtime and the next open lists them again.
#[test]
fn a_quiet_maildir_is_listed_from_its_index_and_any_change_is_seen() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("M");
    let loc = MailLocation::Maildir(root.clone());
    for body in [&b"a\n"[..], b"b\n", b"c\n"] {
        deliver(&loc, body, &DeliverOptions::default()).unwrap();
    }
    // Just changed: listed from the directories, and the index does not vouch yet.
    let first: Vec<_> = open_maildrop(&loc).unwrap().messages().to_vec();
    assert_eq!(first.len(), 3);
    let index = fs::read_to_string(root.join(INDEX_FILE)).unwrap();
    assert!(index.contains("\ndirs - -\n"), "{index}");
    // Quiet: the next open records the mtimes; the one after uses them.
    let [t, _] = age_dirs(&root);
    assert_eq!(open_maildrop(&loc).unwrap().messages(), &first[..]);
    let index = fs::read_to_string(root.join(INDEX_FILE)).unwrap();
    assert!(!index.contains("\ndirs - -\n"), "{index}");
    // Proof that the directories are not read: a file slipped into cur/ with the
    // directory's mtime put back is not seen (no real program can do this: any
    // change moves the mtime).
    fs::write(root.join("cur/1800000000.M1P1.sneaky,S=2,W=3:2,"), b"s\n").unwrap();
    set_mtime(&root.join("cur"), t);
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages(), &first[..]);
    assert_eq!(read(&*md, 2), b"c\n");
    drop(md);
    // The mtime moves (as it does for any real change): the new file is listed.
    set_mtime(&root.join("cur"), std::time::SystemTime::now());
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages().len(), 4);
    drop(md);
    // Delivery, removal by another program, a flag rename: each is seen at once.
    age_dirs(&root);
    open_maildrop(&loc).unwrap();
    let got = deliver(&loc, &b"d\n"[..], &DeliverOptions::default()).unwrap();
    assert_eq!(open_maildrop(&loc).unwrap().messages().len(), 5);
    age_dirs(&root);
    open_maildrop(&loc).unwrap();
    fs::remove_file(&got.path).unwrap();
    assert_eq!(open_maildrop(&loc).unwrap().messages().len(), 4);
    // A session's deletions: the next open lists again and they are gone.
    age_dirs(&root);
    open_maildrop(&loc).unwrap();
    let md = open_maildrop(&loc).unwrap();
    let uidls: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    md.commit(&[0]).unwrap();
    let after: Vec<String> = open_maildrop(&loc)
        .unwrap()
        .messages()
        .iter()
        .map(|m| m.uidl.clone())
        .collect();
    assert_eq!(after, uidls[1..]);
}

/// A file without sizes in its name, changed in place after it was indexed, in a
/// quiet Maildir: the listing comes from the index, but RETR measures the file and
/// announces what really follows, and the index is corrected.
#[test]
fn a_file_changed_in_place_under_a_trusted_index_is_measured_at_retr() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("M");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let file = root.join("cur/1700000000.V801I2M2.mx:2,S");
    fs::write(&file, b"Subject: zero\n\ny\n").unwrap();
    let loc = MailLocation::Maildir(root.clone());
    let [t, _] = age_dirs(&root);
    assert_eq!(open_maildrop(&loc).unwrap().messages()[0].size, 17 + 3);
    // Changed in place (a later mtime), the directories untouched.
    fs::write(&file, b"Subject: zero\n\nlonger body\n").unwrap();
    set_mtime(&root.join("cur"), t);
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(
        md.messages()[0].size,
        17 + 3,
        "listed from the trusted index"
    );
    let (mut r, size) = md.open_message_checked(0).unwrap();
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(size, 27 + 3);
    assert_eq!(body, b"Subject: zero\n\nlonger body\n");
    drop(md);
    assert_eq!(open_maildrop(&loc).unwrap().messages()[0].size, 30);
}
