//! Where an mbox message ends: the separator rule (issue #13, item 2). A `From ` line
//! is a message separator only at the start of the file or after an empty line, and
//! only when it is a well-formed From_ line (an address and a ctime-style date); a
//! Content-Length that lands exactly on such a separator (or EOF) is trusted. Anything
//! else is message text, and a message with such a doubtful line is never deleted.

use std::fs;
use std::io::Read;
use std::path::Path;

use correio_store::{MailLocation, Maildrop, open_maildrop};

fn contents(md: &dyn Maildrop) -> Vec<Vec<u8>> {
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

fn open(path: &Path) -> Box<dyn Maildrop> {
    open_maildrop(&MailLocation::Mbox(path.to_path_buf())).unwrap()
}

const REAL: &str = "Subject: real\n\
                    \n\
                    Hello Bob,\n\
                    From me Tue Feb  2 00:00:00 2024 said hi\n\
                    and this line is part of the real message.\n";

/// The reproduction of the bug: a body line `From me Tue Feb  2 00:00:00 2024 said hi`
/// with no blank line before it was taken as a separator; the server listed a phantom
/// message, and deleting the phantom cut the real message's tail for good.
#[test]
fn regression_body_from_line_is_not_a_phantom_message_and_delete_cannot_cut_the_real_one() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    let text = format!(
        "From alice@example.org Thu Feb  1 10:00:00 2024\n{REAL}\n\
         From carol@example.org Fri Feb  2 11:00:00 2024\nSubject: second\n\nsecond body\n\n"
    );
    fs::write(&path, &text).unwrap();

    // A POP3 session: LIST, then DELE of every message that is not a real one (the
    // phantom, if the reader invents it: its content starts in the middle of a body),
    // then QUIT (UPDATE).
    let md = open(&path);
    let listed = contents(&*md);
    let phantoms: Vec<usize> = listed
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.starts_with(b"Subject: "))
        .map(|(i, _)| i)
        .collect();
    md.commit(&phantoms).unwrap();

    // The real message must still be there, byte for byte, and nothing was removed.
    let md = open(&path);
    let after = contents(&*md);
    assert_eq!(
        String::from_utf8_lossy(&after[0]),
        REAL,
        "the real message was cut"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), text, "the mbox changed");
    // And the listing had exactly the two real messages.
    assert_eq!(
        listed,
        vec![
            REAL.as_bytes().to_vec(),
            b"Subject: second\n\nsecond body\n".to_vec()
        ],
        "phantom messages listed: {phantoms:?}"
    );
}

fn wire_len(stored: &[u8]) -> u64 {
    let bare_lf = stored
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || stored[i - 1] != b'\r'))
        .count() as u64;
    stored.len() as u64
        + bare_lf
        + if stored.is_empty() || stored.ends_with(b"\n") {
            0
        } else {
            2
        }
}

/// Writes `text` as an mbox, opens it, checks the messages read and their sizes.
fn read(text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Vec<Vec<u8>>) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("inbox");
    fs::write(&path, text).unwrap();
    let md = open(&path);
    let c = contents(&*md);
    for (m, e) in md.messages().iter().zip(&c) {
        assert_eq!(
            m.size,
            wire_len(e),
            "wire size of {}",
            String::from_utf8_lossy(e)
        );
    }
    (d, path, c)
}

/// UPDATE with `dele` marked deleted: the error (if any) and the file afterwards.
fn update(path: &Path, dele: &[usize]) -> (Option<String>, Vec<u8>) {
    let md = open(path);
    let r = md.commit(dele).err().map(|e| e.to_string());
    (r, fs::read(path).unwrap())
}

fn strs(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

#[test]
fn no_blank_line_before_a_well_formed_from_line_is_text_and_the_message_is_not_deleted() {
    let text = b"From a@b Thu Jan  1 00:00:00 1970\nSubject: one\n\nhi\nFrom c@d Fri Jan  2 00:00:00 1970\nSubject: looks like two\n\nbody\n\n\
From e@f Sat Jan  3 00:00:00 1970\nSubject: three\n\nx\n";
    let (_d, path, c) = read(text);
    assert_eq!(
        strs(&c),
        [
            "Subject: one\n\nhi\nFrom c@d Fri Jan  2 00:00:00 1970\nSubject: looks like two\n\nbody\n",
            "Subject: three\n\nx\n"
        ]
    );
    // DELE 1 and DELE 2: the second goes, the first (in doubt) stays byte for byte.
    let (err, after) = update(&path, &[0, 1]);
    let err = err.expect("UPDATE reports the kept message");
    assert!(err.contains("kept 1 of 2 messages marked deleted"), "{err}");
    assert!(err.contains("offset 51"), "{err}");
    let first_end = text.len() - b"From e@f Sat Jan  3 00:00:00 1970\nSubject: three\n\nx\n".len();
    assert_eq!(after, &text[..first_end]);
}

#[test]
fn blank_line_but_bad_date_is_text_and_kept() {
    for bad in [
        "From me said hi",
        "From me Tue Feb  2 00:00:00 2024 said hi",
        "From x",
        "From a@b Thu Jan 32 00:00:00 1970",
        "From a@b Thu Jan  1 00:00:00",
    ] {
        let text =
            format!("From a@b Thu Jan  1 00:00:00 1970\nSubject: one\n\nhello\n\n{bad}\nmore\n\n");
        let (_d, path, c) = read(text.as_bytes());
        assert_eq!(
            strs(&c),
            [format!("Subject: one\n\nhello\n\n{bad}\nmore\n")],
            "{bad}"
        );
        let (err, after) = update(&path, &[0]);
        assert!(err.is_some(), "{bad}: deleted across a doubt");
        assert_eq!(after, text.as_bytes(), "{bad}");
    }
}

#[test]
fn dates_with_time_zones_and_writer_variants_separate() {
    let lines = [
        "From MAILER-DAEMON Thu Nov 24 18:22:48 1986",
        "From a@b Thu Nov 24 18:22:48 1986 +0100",
        "From a@b Wed Aug  2 00:39:12 MET DST 1995",
        "From 1790002@xxx Mon Jan 01 00:00:00 +0000 2024",
        "From a@b Thu Nov 24 18:22:48 1986 remote from uucp",
        "From \"john doe\"@example.org  Mon Feb  5 09:01:02 2024",
        "From a@b  Thu Nov 24 18:22 1986",
        "From - Thu Nov 24 18:22:48 1986",
    ];
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        text.push_str(&format!("{l}\nSubject: {i}\n\nbody {i}\n\n"));
    }
    let (_d, path, c) = read(text.as_bytes());
    let expected: Vec<String> = (0..lines.len())
        .map(|i| format!("Subject: {i}\n\nbody {i}\n"))
        .collect();
    assert_eq!(strs(&c), expected);
    // Each can be deleted: no doubt anywhere.
    let (err, after) = update(&path, &(0..lines.len()).step_by(2).collect::<Vec<_>>());
    assert_eq!(err, None);
    let md = open(&path);
    assert_eq!(contents(&*md).len(), lines.len() / 2);
    assert!(String::from_utf8(after).unwrap().starts_with(lines[1]));
}

#[test]
fn quoted_from_lines_are_unquoted_text_without_doubt() {
    let text = b"From a@b Thu Jan  1 00:00:00 1970\nSubject: q\n\n>From me Tue Feb  2 00:00:00 2024\n\n>>From x\n>From\n\n\
From c@d Thu Jan  1 00:00:01 1970\n\nz\n";
    let (_d, path, c) = read(text);
    assert_eq!(
        strs(&c),
        [
            "Subject: q\n\nFrom me Tue Feb  2 00:00:00 2024\n\n>From x\n>From\n",
            "\nz\n"
        ]
    );
    let (err, after) = update(&path, &[0]);
    assert_eq!(err, None);
    assert_eq!(after, b"From c@d Thu Jan  1 00:00:01 1970\n\nz\n");
}

#[test]
fn content_length_trusted_only_where_it_lands_on_a_separator() {
    let body =
        "From inside Tue Feb  2 00:00:00 2024\nsecond line\nFrom a@b Thu Jan  1 00:00:00 1970\n";
    // True: lands on a blank line and a From_ line: verbatim body, no doubt.
    let good = format!(
        "From a@b Thu Jan  1 00:00:00 1970\nContent-Length: {}\n\n{body}\nFrom c@d Thu Jan  1 00:00:01 1970\n\nz\n",
        body.len()
    );
    let (_d, path, c) = read(good.as_bytes());
    assert_eq!(
        strs(&c),
        [
            format!("Content-Length: {}\n\n{body}", body.len()),
            "\nz\n".into()
        ]
    );
    assert_eq!(update(&path, &[0]).0, None);

    // Lies (too short, too long, past EOF, not at a line start): ignored; the
    // blank-line rule applies: the From_ line right after the header's blank line
    // separates, the one without a blank line before it is text.
    for cl in [5, body.len() - 1, body.len() + 3, 10_000] {
        let text = format!(
            "From a@b Thu Jan  1 00:00:00 1970\nContent-Length: {cl}\n\n{body}\nFrom c@d Thu Jan  1 00:00:01 1970\n\nz\n"
        );
        let (_d, path, c) = read(text.as_bytes());
        assert_eq!(
            strs(&c),
            [
                format!("Content-Length: {cl}\n"),
                "second line\nFrom a@b Thu Jan  1 00:00:00 1970\n".into(),
                "\nz\n".into()
            ],
            "Content-Length: {cl}"
        );
        assert_eq!(update(&path, &[0]).0, None, "Content-Length: {cl}");
        fs::write(&path, &text).unwrap();
        // The second has a `From ` line that is no separator: kept.
        let (err, after) = update(&path, &[1]);
        assert!(err.is_some(), "Content-Length: {cl}");
        assert_eq!(after, text.as_bytes());
    }

    // Lands on a From_ line with no blank line between: taken (as mutt does), but both
    // messages are in doubt.
    let body2 = "line\n";
    let text = format!(
        "From a@b Thu Jan  1 00:00:00 1970\nContent-Length: {}\n\n{body2}From c@d Thu Jan  1 00:00:01 1970\n\nz\n",
        body2.len()
    );
    let (_d, path, c) = read(text.as_bytes());
    assert_eq!(
        strs(&c),
        [format!("Content-Length: 5\n\n{body2}"), "\nz\n".into()]
    );
    for dele in [0, 1] {
        let (err, after) = update(&path, &[dele]);
        assert!(err.is_some(), "message {dele}");
        assert_eq!(after, text.as_bytes());
    }
}

#[test]
fn crlf_files() {
    let text = b"From a@b Thu Jan  1 00:00:00 1970\r\nSubject: one\r\n\r\nhello\r\nFrom me Tue Feb  2 00:00:00 2024\r\nend\r\n\r\n\
From c@d Thu Jan  1 00:00:01 1970\r\nSubject: two\r\n\r\nx\r\n\r\n";
    let (_d, path, c) = read(text);
    assert_eq!(
        strs(&c),
        [
            "Subject: one\r\n\r\nhello\r\nFrom me Tue Feb  2 00:00:00 2024\r\nend\r\n",
            "Subject: two\r\n\r\nx\r\n"
        ]
    );
    let (err, after) = update(&path, &[0, 1]);
    assert!(err.is_some());
    let keep =
        text.len() - b"From c@d Thu Jan  1 00:00:01 1970\r\nSubject: two\r\n\r\nx\r\n\r\n".len();
    assert_eq!(after, &text[..keep]);
    // A Content-Length body with a CRLF separator after it.
    let body = "From x\r\n";
    let text = format!(
        "From a@b Thu Jan  1 00:00:00 1970\r\nContent-Length: {}\r\n\r\n{body}\r\nFrom c@d Thu Jan  1 00:00:01 1970\r\n\r\nz\r\n",
        body.len()
    );
    let (_d, path, c) = read(text.as_bytes());
    assert_eq!(
        strs(&c),
        [
            format!("Content-Length: 8\r\n\r\n{body}"),
            "\r\nz\r\n".into()
        ]
    );
    assert_eq!(update(&path, &[0]).0, None);
}

#[test]
fn last_message_without_final_newline() {
    let text = b"From a@b Thu Jan  1 00:00:00 1970\nSubject: one\n\nx\n\nFrom c@d Thu Jan  1 00:00:01 1970\nSubject: two\n\nno newline";
    let (_d, path, c) = read(text);
    assert_eq!(
        strs(&c),
        ["Subject: one\n\nx\n", "Subject: two\n\nno newline"]
    );
    assert_eq!(update(&path, &[1]).0, None);
    assert_eq!(
        fs::read(&path).unwrap(),
        b"From a@b Thu Jan  1 00:00:00 1970\nSubject: one\n\nx\n\n"
    );
    // A From_ line cut before its LF is still one: an empty last message.
    let (_d, _path, c) =
        read(b"From a@b Thu Jan  1 00:00:00 1970\n\nx\n\nFrom c@d Thu Jan  1 00:00:01 1970");
    assert_eq!(strs(&c), ["\nx\n", ""]);
}

#[test]
fn preamble_rules() {
    // Junk, then a From_ line without a blank line: the junk is a preamble, the message
    // is a message (and deletable: the preamble holds no `From ` line).
    let (_d, path, c) = read(b"junk\nFrom a@b Thu Jan  1 00:00:00 1970\n\nx\n");
    assert_eq!(strs(&c), ["\nx\n"]);
    assert_eq!(update(&path, &[0]).0, None);
    assert_eq!(fs::read(&path).unwrap(), b"junk\n");
    // A broken first From_ line: what follows is its message's text until an empty line
    // and a From_ line; no phantom is made from a body line.
    let (_d, _path, c) =
        read(b"From x\nSubject: s\n\nhello\nFrom me Tue Feb  2 00:00:00 2024\nbye\n");
    assert!(c.is_empty(), "{:?}", strs(&c));
    let (_d, _path, c) = read(
        b"From x\nSubject: s\n\nhello\n\nFrom me Tue Feb  2 00:00:00 2024\nSubject: t\n\nbye\n",
    );
    assert_eq!(strs(&c), ["Subject: t\n\nbye\n"]);
}

#[test]
fn a_from_line_right_after_the_from_line_is_header_text() {
    let text =
        b"From a@b Thu Jan  1 00:00:00 1970\nFrom c@d Thu Jan  1 00:00:01 1970\nSubject: x\n\nb\n";
    let (_d, path, c) = read(text);
    assert_eq!(
        strs(&c),
        ["From c@d Thu Jan  1 00:00:01 1970\nSubject: x\n\nb\n"]
    );
    assert!(update(&path, &[0]).0.is_some());
    assert_eq!(fs::read(&path).unwrap(), text);
}
