//! `correio convert` into a Maildir that Dovecot serves (Debian package dovecot-pop3d):
//! the `dovecot-uidlist` records convert writes are Dovecot's migration format, so
//! Dovecot's POP3 server shows the same UIDLs as Correio's did for the source mbox, and
//! serves the same messages.

use std::io::Read;

use correio_store::convert::{self, Mailbox, Options};
use correio_store::{MailLocation, open_maildrop};
use correio_testkit::{Dovecot, DovecotConfig, Pop3};

#[test]
fn dovecot_shows_the_uidls_and_messages_correio_showed_for_the_mbox() {
    let d = tempfile::tempdir().unwrap();
    let mbox = d.path().join("inbox");
    std::fs::write(
        &mbox,
        concat!(
            "From a@example.org Mon Nov 24 18:22:48 1986\n",
            "Subject: one\n",
            "Status: RO\n",
            "\n",
            ">From quoted\n",
            "\n",
            "From b@example.org Mon Nov 24 18:23:00 1986\n",
            "Subject: two\r\n",
            "\r\n",
            ".dot line\r\n",
            "\n",
            "From c@example.org Tue Nov 25 08:00:00 1986\n",
            "Subject: three\n",
            "X-Status: AF\n",
            "\n",
            "no final newline\n",
            "\n",
        ),
    )
    .unwrap();
    // What Correio's POP3 server shows for the mbox.
    let md = open_maildrop(&MailLocation::Mbox(mbox.clone())).unwrap();
    let uidls: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    let contents: Vec<Vec<u8>> = (0..uidls.len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect();
    drop(md);

    let dc = Dovecot::start(&DovecotConfig::with_user("carol", "pw")).unwrap();
    let r = convert::convert(
        &Mailbox::Mbox(mbox),
        &Mailbox::Maildir(dc.maildir("carol")),
        &Options::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((r.copied, r.uidls_kept), (3, 3), "{r:?}");
    dc.give_mail_to_owner().unwrap();

    let mut p = Pop3::login(dc.pop3_addr(), "carol", "pw").unwrap();
    let shown: Vec<String> = p.uidl().unwrap().into_iter().map(|(_, u)| u).collect();
    assert_eq!(shown, uidls, "Dovecot's UIDLs; log: {}", dc.log());
    for (i, want) in contents.iter().enumerate() {
        let got = p.retr(i + 1).unwrap();
        // Dovecot serves CRLF; the messages minus their mbox flag fields.
        let mut lf = Vec::new();
        for (k, &b) in got.iter().enumerate() {
            if !(b == b'\r' && got.get(k + 1) == Some(&b'\n')) {
                lf.push(b);
            }
        }
        let want_lf: Vec<u8> = String::from_utf8_lossy(want)
            .replace("\r\n", "\n")
            .replace("Status: RO\n", "")
            .replace("X-Status: AF\n", "")
            .into_bytes();
        assert_eq!(
            String::from_utf8_lossy(&lf),
            String::from_utf8_lossy(&want_lf),
            "message {}",
            i + 1
        );
    }
    p.quit().unwrap();
}
