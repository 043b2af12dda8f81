//! Courier's POP3 UIDLs (`courierpop3dsizelist`) are kept: a Maildir that Courier's
//! POP3 server served lists, through Correio, the UIDLs Courier's clients saw.
//!
//! Courier cannot be installed next to Dovecot (Debian's courier-pop conflicts with
//! every other pop3-server), so the first two tests replay what a real Courier did:
//! the messages, file names, `courierpop3dsizelist` and UIDL/LIST answers below were
//! produced by Debian 12's courierpop3d 1.0.16 (courier-pop 1.0.16-3), run by hand on
//! this Maildir (`AUTHENTICATED=alice courierpop3d Maildir` with the commands on its
//! input). They are copied here byte for byte.

use std::fs;
use std::path::Path;

use correio_store::{MailLocation, open_maildrop};

/// The messages, under the names Courier left them (it moves new/ to cur/ with `:2,`,
/// and RETR adds `S`).
const MESSAGES: [(&str, &str); 5] = [
    (
        "cur/1700000000.M100P10.mail.example.org:2,S",
        "From: a@example.org\nSubject: one\n\nfirst message\n",
    ),
    (
        "cur/1700000100.M200P20.mail.example.org:2,",
        "From: b@example.org\nSubject: two\n\nsecond\n.dot line\n",
    ),
    (
        "cur/1700000200.M300P30.mail.example.org:2,",
        "From: c@example.org\nSubject: three\n\nthird\n",
    ),
    (
        "cur/1700000300.M400P40.mail.example.org,S=42:2,",
        "From: d@example.org\nSubject: four\n\nfourth\n",
    ),
    (
        "cur/1700000400.M500P50.mail.example.org:2,S",
        "From: e@example.org\nSubject: five\n\nfifth\n",
    ),
];

/// What courierpop3d 1.0.16 wrote after two sessions (three messages, then two more).
const SIZELIST: &str = "/3 6 1796427873
1700000000.M100P10.mail.example.org:2,S 52 1:1796427873:0
1700000100.M200P20.mail.example.org:2, 56 2:1796427873:0
1700000200.M300P30.mail.example.org:2, 46 3:1796427873:0
1700000300.M400P40.mail.example.org,S=42:2, 46 4:1796427873:0
1700000400.M500P50.mail.example.org:2,S 45 5:1796427873:0
";

/// Its answers to UIDL and LIST in the second session.
const COURIER_UIDL: &str = "1 UID1-1796427873\r\n2 UID2-1796427873\r\n3 UID3-1796427873\r\n\
                            4 UID4-1796427873\r\n5 UID5-1796427873\r\n";
const COURIER_LIST: &str = "1 52\r\n2 56\r\n3 46\r\n4 46\r\n5 45\r\n";

fn maildir(root: &Path, messages: &[(&str, &str)], sizelist: Option<&str>) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    for (name, body) in messages {
        fs::write(root.join(name), body).unwrap();
    }
    if let Some(s) = sizelist {
        fs::write(root.join("courierpop3dsizelist"), s).unwrap();
    }
}

fn listing(root: &Path) -> (Vec<String>, Vec<String>) {
    let md = open_maildrop(&MailLocation::Maildir(root.to_path_buf())).unwrap();
    let uidl = md
        .messages()
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.uidl))
        .collect();
    let list = md
        .messages()
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.size))
        .collect();
    (uidl, list)
}

#[test]
fn same_uidls_and_sizes_as_courier_1_0_16() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    maildir(&root, &MESSAGES, Some(SIZELIST));
    let (uidl, list) = listing(&root);
    assert_eq!(uidl.concat(), COURIER_UIDL);
    assert_eq!(list.concat(), COURIER_LIST);

    // The UIDLs are now in Correio's index: they survive the loss of the size list,
    // and a message that arrives later gets a UIDL of its own.
    fs::remove_file(root.join("courierpop3dsizelist")).unwrap();
    fs::write(
        root.join("new/1700000500.M600P60.mail.example.org"),
        "Subject: six\n\nnew\n",
    )
    .unwrap();
    let (uidl, _) = listing(&root);
    assert_eq!(uidl[..5].concat(), COURIER_UIDL);
    assert_eq!(uidl[5], "6 1700000500.M600P60.mail.example.org\r\n");
}

/// A version 2 list (no UTF-8 flag), as older Courier releases wrote it; courierpop3d
/// 1.0.16 read this one and answered UID5-123 and UID6-123.
#[test]
fn version2_list_as_courier_reads_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    maildir(
        &root,
        &[
            ("cur/1700000000.M1P1.host:2,", "Subject: a\n\nhello\n"),
            ("cur/1700000001.M2P2.host,S=20:2,", "Subject: b\n\nhello2\n"),
            ("cur/1700000002.M3P3.host:2,S", "Subject: c\n\nx\n"),
        ],
        Some(
            "/2 77 123\n1700000000.M1P1.host:2, 21 5:123\n1700000001.M2P2.host,S=20:2, 22 6:123\n",
        ),
    );
    let (uidl, _) = listing(&root);
    assert_eq!(uidl[0], "1 UID5-123\r\n");
    assert_eq!(uidl[1], "2 UID6-123\r\n");
    // Not in the list: Courier would have numbered it on its next session, but no
    // client saw that number; it gets Correio's UIDL.
    assert_eq!(uidl[2], "3 1700000002.M3P3.host\r\n");
}

/// A list without Courier's header (or of a version it does not read) made Courier
/// start over with new UIDs: its clients never saw those old values, so they are not
/// served either.
#[test]
fn a_list_courier_itself_would_discard_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    maildir(
        &root,
        &[("cur/1700000000.M1P1.host:2,", "Subject: a\n\nhello\n")],
        Some("1700000000.M1P1.host:2, 21 5:123\n"),
    );
    let (uidl, _) = listing(&root);
    assert_eq!(uidl, ["1 1700000000.M1P1.host\r\n"]);
}

/// Both files: dovecot-uidlist wins for the messages it lists (a Dovecot that took over
/// from Courier); Courier's list still serves the others.
#[test]
fn dovecot_uidlist_wins_over_a_courier_list() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    maildir(&root, &MESSAGES, Some(SIZELIST));
    fs::write(
        root.join("dovecot-uidlist"),
        "3 V1700000000 N3 G0\n\
         1 :1700000000.M100P10.mail.example.org:2,S\n\
         2 PUID2-1796427873 :1700000100.M200P20.mail.example.org:2,\n",
    )
    .unwrap();
    let (uidl, _) = listing(&root);
    assert_eq!(
        uidl.concat(),
        "1 000000016553f100\r\n2 UID2-1796427873\r\n3 UID3-1796427873\r\n\
         4 UID4-1796427873\r\n5 UID5-1796427873\r\n"
    );
}

/// Replays fuzz/corpus/store_courier_sizelist/ through the fuzz body.
#[test]
fn store_courier_sizelist_corpus() {
    correio_testkit::fuzz::replay(
        "store_courier_sizelist",
        correio_store::fuzzing::courier_sizelist,
    );
}
