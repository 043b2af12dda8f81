//! `fsck` (issue #13, item 3): each way an mbox or a Maildir gets damaged, found by
//! `check` (named, with its line or offset) and handled by `repair`, which must keep
//! every intact message byte for byte.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use correio_store::fsck::{self, Action, Format, Problem, Report, SizeField};
use correio_store::maildir::MaildirWriter;
use correio_store::{DeliverOptions, MailLocation, deliver, open_maildrop};

// ---------------------------------------------------------------------------------
// Helpers

/// What a POP3 session serves: (UIDL, size, bytes) per message.
fn served(loc: &MailLocation) -> Vec<(String, u64, Vec<u8>)> {
    let md = open_maildrop(loc).unwrap();
    let out = (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            let m = &md.messages()[i];
            (m.uidl.clone(), m.size, v)
        })
        .collect();
    drop(md);
    out
}

fn bodies(v: &[(String, u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    v.iter().map(|m| m.2.clone()).collect()
}

fn mbox_served(path: &Path) -> Vec<(String, u64, Vec<u8>)> {
    served(&MailLocation::Mbox(path.to_path_buf()))
}

fn codes(r: &Report) -> Vec<&'static str> {
    r.findings.iter().map(|f| f.problem.code()).collect()
}

fn message(i: usize) -> Vec<u8> {
    format!(
        "Subject: message {i}\nMessage-ID: <{i}@example.org>\n\nbody of {i}\n>From quoted in {i}\n.dot\n"
    )
    .into_bytes()
}

/// A clean mbox of `n` messages written by the store, and what it serves.
fn clean_mbox(dir: &Path, n: usize) -> (PathBuf, Vec<(String, u64, Vec<u8>)>) {
    let path = dir.join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    for i in 0..n {
        let opts = DeliverOptions::default().envelope_sender(Some(format!("s{i}@example.org")));
        deliver(&loc, &message(i)[..], &opts).unwrap();
    }
    let s = mbox_served(&path);
    assert_eq!(s.len(), n);
    let r = fsck::check(&path).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!((r.format, r.messages), (Format::Mbox, n));
    (path, s)
}

fn offset_of(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(needle)))
}

/// Runs the mbox repair and returns (report, the repaired copy's messages); checks the
/// original is byte-for-byte what it was.
fn repair_mbox(path: &Path) -> (fsck::RepairReport, Vec<(String, u64, Vec<u8>)>) {
    let before = fs::read(path).unwrap();
    let r = fsck::repair(path).unwrap();
    assert_eq!(r.original, path);
    let copy = r.repaired_copy.clone().expect("a repaired copy");
    assert_eq!(copy, fsck::repaired_path(path));
    assert_eq!(
        fs::read(path).unwrap(),
        before,
        "the original is kept as it was"
    );
    let fixed = mbox_served(&copy);
    // The repaired copy checks clean but for what repair leaves by design.
    let again = fsck::check(&copy).unwrap();
    for f in &again.findings {
        assert!(
            matches!(
                f.problem,
                Problem::MixedLineEnds { .. } | Problem::ContentLengthMismatch { .. }
            ),
            "left after repair: {f}"
        );
    }
    (r, fixed)
}

// ---------------------------------------------------------------------------------
// mbox

#[test]
fn mbox_truncated_last_message() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 3);
    let raw = fs::read(&path).unwrap();
    fs::write(&path, &raw[..raw.len() - 2]).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["truncated-last-message"]);
    let f = &r.findings[0];
    assert_eq!(f.offset, Some(raw.len() as u64 - 2));
    assert_eq!(
        f.line,
        Some(raw.iter().filter(|&&b| b == b'\n').count() as u64 - 1)
    );
    assert!(f.to_string().starts_with(&format!(
        "{}:{}: truncated",
        path.display(),
        f.line.unwrap()
    )));
    let (rep, fixed) = repair_mbox(&path);
    assert!(rep.actions.contains(&Action::AddedFinalNewline));
    // Every message, the completed one too, is what the clean mbox served.
    assert_eq!(fixed, orig);
}

#[test]
fn mbox_missing_from_line() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 3);
    let raw = fs::read(&path).unwrap();
    let first_nl = offset_of(&raw, b"\n") + 1;
    fs::write(&path, &raw[first_nl..]).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["missing-from-line"]);
    assert_eq!(
        (r.findings[0].line, r.findings[0].offset),
        (Some(1), Some(0))
    );
    assert_eq!(r.messages, 2, "the headless message is not served");
    let (rep, fixed) = repair_mbox(&path);
    assert!(matches!(rep.actions[0], Action::AddedFromLine { .. }));
    // The data becomes a message again, byte for byte; the others keep their UIDLs.
    assert_eq!(bodies(&fixed), bodies(&orig));
    assert_eq!(fixed[1..], orig[1..]);
}

#[test]
fn mbox_malformed_from_lines() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 4);
    let raw = fs::read(&path).unwrap();
    // The second message's From_ line loses its date; the first line of the file gets
    // text after its date.
    let second = offset_of(&raw, b"\nFrom s1@example.org ") + 1;
    let second_end = second + offset_of(&raw[second..], b"\n");
    let mut bad = raw[..second].to_vec();
    bad.extend_from_slice(b"From s1@example.org");
    bad.extend_from_slice(&raw[second_end..]);
    let first_end = offset_of(&bad, b"\n");
    bad.splice(first_end..first_end, b" and some words".iter().copied());
    fs::write(&path, &bad).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["malformed-from-line", "malformed-from-line"]);
    assert!(matches!(
        r.findings[0].problem,
        Problem::MalformedFromLine {
            message: None,
            after_blank: true,
            ..
        }
    ));
    // The second one is read as text of what is served first now (the first message
    // is in the preamble).
    assert!(matches!(
        r.findings[1].problem,
        Problem::MalformedFromLine {
            message: None,
            after_blank: true,
            ..
        }
    ));
    assert_eq!(r.findings[0].line, Some(1));
    assert_eq!(r.messages, 2);
    let served_before = mbox_served(&path);
    let (_rep, fixed) = repair_mbox(&path);
    // Messages 3 and 4 are intact and unchanged (UIDLs too); the damaged ones are one
    // message now, holding every byte of both (the From_ lines as text).
    assert_eq!(fixed[1..], orig[2..]);
    assert_eq!(fixed[1..], served_before[..]);
    let merged = String::from_utf8(fixed[0].2.clone()).unwrap();
    assert!(merged.starts_with("From s0@example.org "), "{merged}");
    assert!(merged.contains(std::str::from_utf8(&orig[0].2).unwrap()));
    assert!(merged.contains("\nFrom s1@example.org\n"));
    assert!(merged.ends_with(std::str::from_utf8(&orig[1].2).unwrap()));
}

#[test]
fn mbox_unquoted_from_line_splitting_a_message() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 3);
    let raw = fs::read(&path).unwrap();
    let at = offset_of(&raw, b"body of 1\n") + b"body of 1\n".len();
    let mut bad = raw.clone();
    bad.splice(
        at..at,
        b"From me Tue Feb  2 00:00:00 2024\nFrom here on\n"
            .iter()
            .copied(),
    );
    fs::write(&path, &bad).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["unquoted-from-line", "malformed-from-line"]);
    assert!(matches!(
        r.findings[0].problem,
        Problem::UnquotedFromLine { message: Some(2) }
    ));
    assert_eq!(r.findings[0].offset, Some(at as u64));
    let line = bad[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    assert_eq!(r.findings[0].line, Some(line));
    assert_eq!(r.findings[1].line, Some(line + 1));
    assert!(r.findings[0].to_string().contains("message 2"));
    // POP3 will not delete message 2 while it is in doubt.
    let before = mbox_served(&path);
    assert_eq!(before.len(), 3);
    let md = open_maildrop(&MailLocation::Mbox(path.clone())).unwrap();
    assert!(md.commit(&[1]).is_err());
    assert_eq!(fs::read(&path).unwrap(), bad);

    let (rep, fixed) = repair_mbox(&path);
    assert_eq!(
        rep.actions,
        [
            Action::QuotedFromLine {
                line,
                offset: at as u64
            },
            Action::QuotedFromLine {
                line: line + 1,
                offset: at as u64 + 33
            },
        ]
    );
    // Same bytes served, same UIDLs: quoting changes nothing a client sees.
    assert_eq!(fixed, before);
    assert_eq!(fixed[0], orig[0]);
    assert_eq!(fixed[2], orig[2]);
    // Once in place, the message can be deleted.
    let copy = fsck::repaired_path(&path);
    fs::rename(&copy, &path).unwrap();
    let md = open_maildrop(&MailLocation::Mbox(path.clone())).unwrap();
    md.commit(&[1]).unwrap();
    let after = mbox_served(&path);
    assert_eq!(after, [orig[0].clone(), orig[2].clone()]);
}

#[test]
fn mbox_mixed_line_ends_are_reported_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 3);
    let raw = fs::read(&path).unwrap();
    let at = offset_of(&raw, b"Subject: message 1\n");
    let end = offset_of(&raw, b"\nFrom s2@");
    let mut bad = raw[..at].to_vec();
    for &b in &raw[at..end] {
        if b == b'\n' {
            bad.push(b'\r');
        }
        bad.push(b);
    }
    bad.extend_from_slice(&raw[end..]);
    fs::write(&path, &bad).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["mixed-line-ends"]);
    assert!(matches!(r.findings[0].problem, Problem::MixedLineEnds { lf, crlf: 6 } if lf > 6));
    let line = bad[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    assert_eq!(r.findings[0].line, Some(line));
    let rep = fsck::repair(&path).unwrap();
    assert_eq!(rep.repaired_copy, None, "nothing to write");
    assert_eq!(rep.not_repaired.len(), 1);
    assert_eq!(fs::read(&path).unwrap(), bad);
    let now = mbox_served(&path);
    assert_eq!((&now[0], &now[2]), (&orig[0], &orig[2]));
}

#[test]
fn mbox_content_length_problems() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("cl");
    let body = "From inside Thu Jan  1 00:00:00 1970\n";
    // Message 1: a true Content-Length with no empty line after its body; message 2: a
    // lying one; message 3: plain.
    let text = format!(
        "From a@b Thu Jan  1 00:00:00 1970\nContent-Length: {}\n\n{body}\
         From c@d Thu Jan  1 00:00:01 1970\nContent-Length: 999\n\nsecond\n\n\
         From e@f Thu Jan  1 00:00:02 1970\n\nthird\n",
        body.len()
    );
    fs::write(&path, &text).unwrap();
    let before = mbox_served(&path);
    assert_eq!(before.len(), 3);
    let r = fsck::check(&path).unwrap();
    assert_eq!(
        codes(&r),
        ["content-length-without-blank", "content-length-mismatch"]
    );
    assert!(matches!(
        r.findings[0].problem,
        Problem::ContentLengthWithoutBlank { message: 2 }
    ));
    assert_eq!(r.findings[0].line, Some(5));
    assert!(matches!(
        r.findings[1].problem,
        Problem::ContentLengthMismatch {
            message: 2,
            declared: 999
        }
    ));
    assert_eq!(r.findings[1].line, Some(6));
    let (rep, fixed) = repair_mbox(&path);
    assert!(rep.actions.contains(&Action::AddedEmptyLine {
        offset: (text.find("From c@d").unwrap()) as u64
    }));
    assert_eq!(
        rep.not_repaired.len(),
        1,
        "the lying header is message data"
    );
    assert_eq!(fixed, before);
}

#[test]
fn mbox_interrupted_append_stale_lock_and_leftovers() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 2);
    let len = fs::metadata(&path).unwrap().len();
    // A delivery killed half-way: its journal, its partial message.
    fs::write(
        correio_store::mbox::journal_path(&path),
        format!("correio-append {len}\n"),
    )
    .unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"From x@y Thu Jan  1 00:00:00 1970\nSubject: half").unwrap();
    drop(f);
    // A dotlock and temporaries of processes that are gone.
    let dead = "2147483646";
    fs::write(
        correio_store::lock::dotlock_path(&path),
        format!("{dead}\n"),
    )
    .unwrap();
    let tmp = d.path().join(format!(".inbox.correio-tmp.{dead}"));
    fs::write(&tmp, b"old rewrite").unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(
        codes(&r),
        [
            "interrupted-append",
            "stale-lock",
            "leftover-temp-file",
            "truncated-last-message"
        ]
    );
    assert!(matches!(r.findings[0].problem, Problem::InterruptedAppend { at } if at == len));
    let rep = fsck::repair(&path).unwrap();
    assert!(rep.actions.contains(&Action::UndidInterruptedAppend));
    assert_eq!(
        rep.actions
            .iter()
            .filter(|a| matches!(a, Action::Removed { .. }))
            .count(),
        2
    );
    // The original is back to what was acknowledged; nothing else needed a copy.
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert!(!tmp.exists() && !correio_store::lock::dotlock_path(&path).exists());
    assert_eq!(mbox_served(&path), orig);
    assert!(fsck::check(&path).unwrap().is_clean());
}

#[test]
fn mbox_crlf_file_repair_keeps_crlf() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("crlf");
    let text = "From a@b Thu Jan  1 00:00:00 1970\r\nSubject: one\r\n\r\nhi\r\nFrom me Tue Feb  2 00:00:00 2024\r\n\r\n\
                From c@d Thu Jan  1 00:00:01 1970\r\nSubject: two\r\n\r\nx";
    fs::write(&path, text).unwrap();
    let before = mbox_served(&path);
    let r = fsck::check(&path).unwrap();
    assert_eq!(codes(&r), ["unquoted-from-line", "truncated-last-message"]);
    let (_rep, fixed) = repair_mbox(&path);
    let copy = fs::read_to_string(fsck::repaired_path(&path)).unwrap();
    assert!(copy.contains("hi\r\n>From me Tue"), "{copy}");
    assert!(copy.ends_with("\r\nx\r\n"), "{copy:?}");
    assert_eq!(fixed[0], before[0]);
    assert_eq!(fixed[1].2, b"Subject: two\r\n\r\nx\r\n");
    assert_eq!(fixed[1].1, before[1].1, "same wire size");
}

#[test]
fn mbox_every_corruption_at_once_keeps_every_intact_message() {
    let d = tempfile::tempdir().unwrap();
    let (path, orig) = clean_mbox(d.path(), 8);
    let raw = fs::read(&path).unwrap();
    let mut bad = b"stray text before everything\n".to_vec();
    bad.extend_from_slice(&raw[..raw.len() - 2]);
    let at = offset_of(&bad, b"body of 3\n") + 10;
    bad.splice(
        at..at,
        b"From me Tue Feb  2 00:00:00 2024 said hi\n"
            .iter()
            .copied(),
    );
    let at = offset_of(&bad, b"body of 5\n") + 10;
    bad.splice(
        at..at,
        b"From you@there Wed Feb  3 00:00:00 2024\n".iter().copied(),
    );
    fs::write(&path, &bad).unwrap();
    let r = fsck::check(&path).unwrap();
    assert_eq!(
        codes(&r),
        [
            "missing-from-line",
            "malformed-from-line",
            "unquoted-from-line",
            "truncated-last-message"
        ]
    );
    let before = mbox_served(&path);
    let (_rep, fixed) = repair_mbox(&path);
    // A message made of the stray text, then every message as served before (the
    // truncated last one completed), UIDLs kept.
    assert_eq!(fixed[0].2, b"stray text before everything\n");
    assert_eq!(fixed[1..fixed.len() - 1], before[..before.len() - 1]);
    assert_eq!(fixed[fixed.len() - 1], orig[7]);
    for i in [0, 1, 2, 4, 6, 7] {
        assert_eq!(fixed[i + 1], orig[i], "intact message {}", i + 1);
    }
}

#[test]
fn mbox_preamble_whose_content_length_would_swallow_a_message_is_left() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    // Before the first message: a broken From_ line and a header whose Content-Length
    // counts exactly the first message. As a message, it would swallow that one.
    let text = "From a@b Thu Jan  1 00.00:00 1970\nContent-Length: 37\n\n\
                From inside Thu Jan  1 00:00:00 1970\n\n\
                From c@d Thu Jan  1 00:00:01 1970\n\nz\nFrom x@y Thu Jan  1 00:00:02 1970\nend";
    fs::write(&path, text).unwrap();
    let before = mbox_served(&path);
    assert_eq!(before.len(), 2);
    let r = fsck::check(&path).unwrap();
    assert_eq!(
        codes(&r),
        [
            "malformed-from-line",
            "unquoted-from-line",
            "truncated-last-message"
        ]
    );
    let rep = fsck::repair(&path).unwrap();
    assert!(
        rep.not_repaired
            .iter()
            .any(|(f, why)| f.line == Some(1) && why.contains("left as it is")),
        "{:?}",
        rep.not_repaired
    );
    assert!(
        !rep.actions
            .iter()
            .any(|a| matches!(a, Action::AddedFromLine { .. }))
    );
    let copy = fsck::repaired_path(&path);
    let fixed = mbox_served(&copy);
    assert_eq!(fixed[0], before[0]);
    assert_eq!(fixed[1].2, [&before[1].2[..], b"\n"].concat());
    assert!(
        fs::read_to_string(&copy)
            .unwrap()
            .starts_with("From a@b Thu Jan  1 00.00:00 1970\n")
    );
}

#[test]
fn mbox_last_line_a_lone_cr_stays_content() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    fs::write(
        &path,
        "From a@b Thu Jan  1 00:00:00 1970\nSubject: x\n\nbody\n\r",
    )
    .unwrap();
    assert_eq!(mbox_served(&path)[0].2, b"Subject: x\n\nbody\n\r");
    let (_, fixed) = repair_mbox(&path);
    assert_eq!(fixed[0].2, b"Subject: x\n\nbody\n\r\n");
}

#[test]
fn mbox_repair_never_overwrites_and_takes_the_mail_lock() {
    let d = tempfile::tempdir().unwrap();
    let (path, _) = clean_mbox(d.path(), 2);
    let raw = fs::read(&path).unwrap();
    fs::write(&path, &raw[..raw.len() - 1 - 1]).unwrap();
    let copy = fsck::repaired_path(&path);
    fs::write(&copy, b"somebody's file").unwrap();
    let e = fsck::repair(&path).unwrap_err();
    assert!(matches!(e, fsck::FsckError::RepairedExists(_)), "{e}");
    assert_eq!(fs::read(&copy).unwrap(), b"somebody's file");
    fs::remove_file(&copy).unwrap();
    // While another program holds the mail locks, the repair waits for them.
    let held =
        correio_store::lock::MboxLock::acquire(&path, false, Duration::from_secs(1)).unwrap();
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = std::thread::spawn({
        let released = released.clone();
        move || {
            std::thread::sleep(Duration::from_millis(400));
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(held);
        }
    });
    let rep = fsck::repair(&path).unwrap();
    // Done only once the other holder let go (not "after some time").
    assert!(
        released.load(std::sync::atomic::Ordering::SeqCst),
        "repaired while another program held the locks"
    );
    t.join().unwrap();
    assert!(rep.repaired_copy.is_some());
}

#[test]
fn not_a_mailbox() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        fsck::check(&d.path().join("none")),
        Err(fsck::FsckError::NotFound(_))
    ));
    assert!(matches!(
        fsck::check(d.path()),
        Err(fsck::FsckError::NotAMailbox { .. })
    ));
}

// ---------------------------------------------------------------------------------
// Maildir

/// A clean Maildir of `n` messages and what it serves, by UIDL.
fn clean_maildir(dir: &Path, n: usize) -> (PathBuf, Vec<(String, u64, Vec<u8>)>) {
    let root = dir.join("Maildir");
    let w = MaildirWriter::open(&root).unwrap();
    for i in 0..n {
        w.deliver(&message(i)[..]).unwrap();
    }
    let s = served(&MailLocation::Maildir(root.clone()));
    let r = fsck::check(&root).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!((r.format, r.messages), (Format::Maildir, n));
    (root, s)
}

fn files(root: &Path, sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(root.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn maildir_served(root: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut v = served(&MailLocation::Maildir(root.to_path_buf()));
    v.sort();
    v
}

fn sorted(mut v: Vec<(String, u64, Vec<u8>)>) -> Vec<(String, u64, Vec<u8>)> {
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn maildir_wrong_sizes_are_renamed_keeping_the_uidl() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 3);
    let f = files(&root, "new")[1].clone();
    let name = name_of(&f);
    let base = name.split(',').next().unwrap().to_string();
    let wrong = root.join("cur").join(format!("{base},S=1,W=2:2,S"));
    fs::rename(&f, &wrong).unwrap();
    let r = fsck::check(&root).unwrap();
    assert_eq!(codes(&r), ["wrong-size", "wrong-size"]);
    assert!(matches!(
        r.findings[0].problem,
        Problem::WrongSize {
            field: SizeField::S,
            named: 1,
            ..
        }
    ));
    assert!(matches!(
        r.findings[1].problem,
        Problem::WrongSize {
            field: SizeField::W,
            named: 2,
            ..
        }
    ));
    assert_eq!(r.findings[0].path, wrong);
    let rep = fsck::repair(&root).unwrap();
    let right = root.join("cur").join(format!("{}:2,S", name));
    assert!(rep.actions.contains(&Action::Renamed {
        from: wrong,
        to: right.clone()
    }));
    assert!(right.exists());
    assert!(fsck::check(&root).unwrap().is_clean());
    assert_eq!(maildir_served(&root), sorted(orig));
}

/// A CRLF-stored message whose name says `D=0` (sent unread with sendfile) but whose
/// file gained a dot line of the same length behind the store's back: `check` finds
/// the wrong `D`, `repair` writes the true count, and the server no longer takes the
/// file for wire form.
#[test]
fn maildir_wrong_dot_line_count_is_found_and_fixed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("M");
    let loc = MailLocation::Maildir(root.clone());
    let opts = correio_store::DeliverOptions::default().line_ends(correio_store::LineEnds::Crlf);
    let got = correio_store::deliver(&loc, &b"Subject: x\r\n\r\nabc\r\n"[..], &opts).unwrap();
    assert!(name_of(&got.path).ends_with(",D=0"));
    assert!(fsck::check(&root).unwrap().is_clean());
    fs::write(&got.path, b"Subject: x\r\n\r\n.bc\r\n").unwrap();
    let r = fsck::check(&root).unwrap();
    assert_eq!(codes(&r), ["wrong-size"]);
    assert!(matches!(
        r.findings[0].problem,
        Problem::WrongSize {
            field: SizeField::D,
            named: 0,
            actual: 1
        }
    ));
    assert!(
        r.findings[0].problem.to_string().contains(",D=0"),
        "{}",
        r.findings[0].problem
    );
    fsck::repair(&root).unwrap();
    assert!(fsck::check(&root).unwrap().is_clean());
    let names = files(&root, "new");
    assert_eq!(names.len(), 1);
    assert!(
        name_of(&names[0]).ends_with(",S=19,W=19,D=1"),
        "{}",
        name_of(&names[0])
    );
    let md = correio_store::open_maildrop(&loc).unwrap();
    assert!(md.wire_file(0).unwrap().is_none());
}

#[test]
fn maildir_malformed_names() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 3);
    let fs_ = files(&root, "new");
    // No unique part: invisible to readers.
    let invisible = root.join("cur").join(",S=3:2,S");
    fs::write(&invisible, b"hi\n").unwrap();
    // A size that is not a number; flags that are not letters.
    let badsize = root.join("cur").join(format!(
        "{},S=abc:2,S",
        name_of(&fs_[0]).split(',').next().unwrap()
    ));
    fs::rename(&fs_[0], &badsize).unwrap();
    let badflags = root.join("cur").join(format!("{}:2,S1", name_of(&fs_[1])));
    fs::rename(&fs_[1], &badflags).unwrap();
    let r = fsck::check(&root).unwrap();
    let mut got: Vec<(String, String)> = r
        .findings
        .iter()
        .map(|f| (name_of(&f.path), f.problem.to_string()))
        .collect();
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .any(|(n, p)| n == ",S=3:2,S" && p.contains("no unique part"))
    );
    assert!(
        got.iter()
            .any(|(n, p)| n.ends_with(",S=abc:2,S") && p.contains("`,S=` is not a number"))
    );
    assert!(
        got.iter()
            .any(|(n, p)| n.ends_with(":2,S1") && p.contains("not letters"))
    );
    assert_eq!(r.messages, 3);

    let rep = fsck::repair(&root).unwrap();
    assert_eq!(rep.not_repaired.len(), 1, "{:?}", rep.not_repaired);
    let after = maildir_served(&root);
    // The three messages as before (same UIDLs), plus the one that was invisible.
    assert_eq!(after.len(), 4);
    for m in &orig {
        assert!(after.contains(m), "lost {}", m.0);
    }
    assert!(after.iter().any(|m| m.2 == b"hi\n"));
    assert!(!invisible.exists() && !badsize.exists() && badflags.exists());
    let left = fsck::check(&root).unwrap();
    assert_eq!(codes(&left), ["malformed-name"]);
}

#[test]
fn maildir_duplicate_names() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 3);
    let f = files(&root, "new");
    // The same message under two names (a tool copied instead of moving), and another
    // message that reuses a unique part.
    let copy = root.join("cur").join(format!("{}:2,S", name_of(&f[0])));
    fs::copy(&f[0], &copy).unwrap();
    let base1 = name_of(&f[1]).split(',').next().unwrap().to_string();
    let other = root.join("cur").join(format!("{base1}:2,"));
    fs::write(&other, b"Subject: a different message\n\nsame name\n").unwrap();
    let r = fsck::check(&root).unwrap();
    assert_eq!(codes(&r), ["duplicate-name", "duplicate-name"]);
    // cur/ is read first: the copies in new/ are the ones not shown.
    assert_eq!((&r.findings[0].path, &r.findings[1].path), (&f[0], &f[1]));
    assert!(
        matches!(&r.findings[0].problem, Problem::DuplicateName { identical: true, shown } if *shown == copy)
    );
    assert!(
        matches!(&r.findings[1].problem, Problem::DuplicateName { identical: false, shown } if *shown == other)
    );
    assert_eq!(r.messages, 3, "readers see one of each pair");

    let hidden = fs::read(&f[1]).unwrap();
    let rep = fsck::repair(&root).unwrap();
    let moved = rep.actions.iter().find_map(|a| match a {
        Action::Moved { from, to } if *from == f[0] => Some(to.clone()),
        _ => None,
    });
    let moved = moved.expect("the identical copy moved aside");
    assert!(moved.starts_with(root.join("correio-lost+found/duplicates")));
    assert_eq!(fs::read(&moved).unwrap(), fs::read(&copy).unwrap());
    let after = maildir_served(&root);
    assert_eq!(
        after.len(),
        4,
        "the hidden different message is visible now"
    );
    assert!(after.iter().any(|m| m.2 == hidden));
    assert!(!f[1].exists(), "renamed to a unique name of its own");
    assert!(
        after
            .iter()
            .any(|m| m.2 == b"Subject: a different message\n\nsame name\n")
    );
    for m in &orig {
        assert!(after.iter().any(|a| a.2 == m.2), "lost a message");
    }
    assert!(fsck::check(&root).unwrap().is_clean());
}

#[test]
fn maildir_stale_tmp_files_and_locks() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 2);
    let old = SystemTime::now() - Duration::from_secs(40 * 3600);
    let stale = root.join("tmp").join("1600000000.M1P1.host");
    fs::write(&stale, b"half a delivery").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let fresh = root.join("tmp").join("1700000000.M1P2.host");
    fs::write(&fresh, b"a delivery in progress").unwrap();
    let lock = root.join("dovecot-uidlist.lock");
    fs::write(&lock, b"").unwrap();
    fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let index_tmp = root.join("correio-index.tmp.2147483646");
    fs::write(&index_tmp, b"x").unwrap();
    let r = fsck::check(&root).unwrap();
    assert_eq!(
        codes(&r),
        ["stale-tmp-file", "stale-lock", "leftover-temp-file"]
    );
    assert!(matches!(
        r.findings[0].problem,
        Problem::StaleTmpFile { age_hours: 39..=40 }
    ));
    assert_eq!(r.findings[0].path, stale);

    let rep = fsck::repair(&root).unwrap();
    let kept = root.join("correio-lost+found/tmp/1600000000.M1P1.host");
    assert!(rep.actions.contains(&Action::Moved {
        from: stale.clone(),
        to: kept.clone()
    }));
    assert_eq!(fs::read(&kept).unwrap(), b"half a delivery");
    assert!(fresh.exists() && !lock.exists() && !index_tmp.exists());
    assert!(fsck::check(&root).unwrap().is_clean());
    assert_eq!(maildir_served(&root), sorted(orig));
}

#[test]
fn maildir_index_that_disagrees_with_the_files() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 3);
    // A message without sizes in its name: its wire size is cached in the index.
    let f = files(&root, "new");
    let plain = root
        .join("new")
        .join(name_of(&f[2]).split(',').next().unwrap());
    fs::rename(&f[2], &plain).unwrap();
    drop(open_maildrop(&MailLocation::Maildir(root.clone())).unwrap());
    let ipath = root.join(correio_store::maildir::INDEX_FILE);
    let text = fs::read_to_string(&ipath).unwrap();
    let wire = orig
        .iter()
        .find(|m| m.2 == fs::read(&plain).unwrap())
        .unwrap()
        .1;
    // The cached size goes wrong; a record stays for a message removed by hand.
    let bad = text.replacen(&format!(" {wire} "), &format!(" {} ", wire + 7), 1);
    assert_ne!(bad, text);
    fs::write(&ipath, bad).unwrap();
    fs::remove_file(&f[0]).unwrap();
    let r = fsck::check(&root).unwrap();
    let mut c = codes(&r);
    c.sort();
    assert_eq!(c, ["index-stale-record", "index-wrong-size"]);
    assert!(r.findings.iter().all(|f| f.path == ipath));
    let rep = fsck::repair(&root).unwrap();
    assert!(rep.actions.contains(&Action::RebuiltIndex));
    assert!(fsck::check(&root).unwrap().is_clean());
    let after = maildir_served(&root);
    let expect: Vec<_> = sorted(orig)
        .into_iter()
        .filter(|m| m.2 != message(0))
        .collect();
    assert_eq!(after, expect, "right sizes, same UIDLs");

    // An index that cannot be read is moved aside and rebuilt.
    fs::write(&ipath, b"garbage").unwrap();
    assert_eq!(codes(&fsck::check(&root).unwrap()), ["corrupt-index"]);
    fsck::repair(&root).unwrap();
    assert_eq!(
        fs::read(root.join("correio-lost+found/index/correio-index")).unwrap(),
        b"garbage"
    );
    assert!(fsck::check(&root).unwrap().is_clean());
    assert_eq!(maildir_served(&root), expect);
}

#[test]
fn maildir_dovecot_uidlist_is_checked_not_touched() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 2);
    let f = files(&root, "new");
    let list = format!(
        "3 V1700000000 N3 G0\n2 :{}\n1 :{}\n2 :{}\n",
        name_of(&f[0]),
        name_of(&f[1]),
        name_of(&f[1])
    );
    let upath = root.join("dovecot-uidlist");
    fs::write(&upath, &list).unwrap();
    let r = fsck::check(&root).unwrap();
    let found: Vec<_> = r
        .findings
        .iter()
        .map(|f| (f.line, f.problem.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (
                Some(3),
                "dovecot-uidlist: UIDs not in ascending order".to_string()
            ),
            (Some(4), "dovecot-uidlist: a UID listed twice".to_string()),
            (Some(4), "dovecot-uidlist: a file listed twice".to_string()),
        ]
    );
    let rep = fsck::repair(&root).unwrap();
    assert_eq!(rep.not_repaired.len(), 3);
    assert_eq!(fs::read_to_string(&upath).unwrap(), list);
    assert_eq!(maildir_served(&root).len(), orig.len());
}

#[test]
fn maildir_missing_directory_and_session_in_use() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 2);
    fs::remove_dir(root.join("tmp")).unwrap();
    let r = fsck::check(&root).unwrap();
    assert_eq!(codes(&r), ["missing-directory"]);
    assert_eq!(r.findings[0].path, root.join("tmp"));
    // A POP3 session holds the Maildir: the repair refuses, the check still works.
    let md = open_maildrop(&MailLocation::Maildir(root.clone()));
    // (Opening a session creates tmp/ itself; take it away again.)
    let _ = fs::remove_dir(root.join("tmp"));
    let md = md.unwrap();
    assert!(matches!(
        fsck::repair(&root),
        Err(fsck::FsckError::Store(correio_store::StoreError::InUse))
    ));
    assert_eq!(codes(&fsck::check(&root).unwrap()), ["missing-directory"]);
    drop(md);
    let rep = fsck::repair(&root).unwrap();
    assert_eq!(
        rep.actions,
        [Action::Created {
            path: root.join("tmp")
        }]
    );
    assert!(fsck::check(&root).unwrap().is_clean());
    assert_eq!(maildir_served(&root), sorted(orig));
}

#[test]
fn maildir_every_corruption_at_once_keeps_every_message() {
    let d = tempfile::tempdir().unwrap();
    let (root, orig) = clean_maildir(d.path(), 6);
    let f = files(&root, "new");
    let b = |p: &Path| name_of(p).split(',').next().unwrap().to_string();
    fs::rename(
        &f[0],
        root.join("cur").join(format!("{},S=9,W=9:2,RS", b(&f[0]))),
    )
    .unwrap();
    fs::copy(
        &f[1],
        root.join("cur").join(format!("{}:2,S", name_of(&f[1]))),
    )
    .unwrap();
    fs::rename(&f[2], root.join("new").join(format!("{},S=x", b(&f[2])))).unwrap();
    fs::write(root.join("cur").join(":2,"), b"nameless\n").unwrap();
    fs::write(root.join(correio_store::maildir::INDEX_FILE), b"junk").unwrap();
    let stale = root.join("tmp").join("stale");
    fs::write(&stale, b"dead delivery").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(37 * 3600))
        .unwrap();
    let r = fsck::check(&root).unwrap();
    assert!(r.findings.len() >= 6, "{:?}", codes(&r));
    fsck::repair(&root).unwrap();
    assert!(fsck::check(&root).unwrap().is_clean());
    let after = maildir_served(&root);
    assert_eq!(after.len(), 7);
    for m in &orig {
        assert!(
            after.iter().any(|a| a.2 == m.2 && a.1 == m.1),
            "lost a message"
        );
    }
    assert_eq!(
        fs::read(root.join("correio-lost+found/tmp/stale")).unwrap(),
        b"dead delivery"
    );
}
