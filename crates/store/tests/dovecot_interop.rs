//! Interoperability with Dovecot (Debian package dovecot-pop3d; the LDA is in
//! dovecot-core): Dovecot serves what Correio delivered, byte-exact, and Correio's store
//! reads a Maildir Dovecot's LDA wrote, with the same sizes and the UIDLs Dovecot's own
//! POP3 server showed.

use std::io::Read;

use correio_store::{DeliverOptions, MailLocation, deliver, open_maildrop};
use correio_testkit::{Dovecot, DovecotConfig, Pop3};

/// The wire form of a stored message: LF → CRLF, final line end added.
fn wire_form(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0u8;
    for &b in stored {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What delivery stores: CRLF → LF.
fn crlf_to_lf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len());
    for (k, &b) in m.iter().enumerate() {
        if b == b'\r' && m.get(k + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: crlf\r\n\r\nHello\r\n.dot line\r\n..two dots\r\nFrom here\r\n".to_vec(),
        b"Subject: lf only\n\nline\n\n\nend without newline".to_vec(),
        "Subject: 8bit\n\nol\u{e1} \u{2603}\n".as_bytes().to_vec(),
        {
            let mut big = b"Subject: big\n\n".to_vec();
            for i in 0..20_000 {
                big.extend_from_slice(format!("line {i} .......................................\n").as_bytes());
            }
            big
        },
    ]
}

#[test]
fn dovecot_serves_what_correio_delivered_byte_exact() {
    let dc = Dovecot::start(&DovecotConfig::with_user("alice", "secret")).unwrap();
    let loc = MailLocation::Maildir(dc.maildir("alice"));
    let msgs = messages();
    for m in &msgs {
        deliver(&loc, &m[..], &DeliverOptions::default()).unwrap();
    }
    dc.give_mail_to_owner().unwrap();

    let mut p = Pop3::login(dc.pop3_addr(), "alice", "secret").unwrap();
    let list = p.list().unwrap();
    assert_eq!(list.len(), msgs.len(), "log: {}", dc.log());
    // Dovecot orders by its UID (arrival); ours is the same order (name timestamps).
    let md = open_maildrop(&loc).unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let expected = wire_form(&crlf_to_lf(m));
        let got = p.retr(i + 1).unwrap();
        assert_eq!(got, expected, "message {}", i + 1);
        assert_eq!(list[i].1, got.len() as u64, "Dovecot's LIST size vs RETR");
        assert_eq!(
            md.messages()[i].size,
            got.len() as u64,
            "our size vs Dovecot's RETR"
        );
        let mut ours = Vec::new();
        md.open_message(i).unwrap().read_to_end(&mut ours).unwrap();
        assert_eq!(wire_form(&ours), got);
    }
    drop(md);
    p.quit().unwrap();
}

#[test]
fn correio_reads_a_maildir_written_by_dovecot_lda_and_keeps_dovecots_uidls() {
    let dc = Dovecot::start(&DovecotConfig::with_user("bob", "pw")).unwrap();
    let msgs = messages();
    for m in &msgs {
        dc.deliver_with_lda("bob", m).unwrap();
    }
    // Dovecot's POP3 view: sizes, bodies and UIDLs (its default %08Xu%08Xv).
    let mut p = Pop3::login(dc.pop3_addr(), "bob", "pw").unwrap();
    let list = p.list().unwrap();
    let uidl = p.uidl().unwrap();
    let bodies: Vec<Vec<u8>> = (1..=msgs.len()).map(|n| p.retr(n).unwrap()).collect();
    p.quit().unwrap();
    assert_eq!(list.len(), msgs.len(), "log: {}", dc.log());

    let loc = MailLocation::Maildir(dc.maildir("bob"));
    let md = open_maildrop(&loc).unwrap();
    assert_eq!(md.messages().len(), msgs.len());
    for i in 0..msgs.len() {
        assert_eq!(
            md.messages()[i].size,
            list[i].1,
            "size of message {}",
            i + 1
        );
        assert_eq!(
            md.messages()[i].uidl,
            uidl[i].1,
            "UIDL of message {} (from dovecot-uidlist)",
            i + 1
        );
        let mut ours = Vec::new();
        md.open_message(i).unwrap().read_to_end(&mut ours).unwrap();
        assert_eq!(wire_form(&ours), bodies[i]);
    }
    let first_uidls: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    drop(md);

    // The UIDLs are now in our index: they survive the loss of dovecot-uidlist.
    std::fs::remove_file(dc.maildir("bob").join("dovecot-uidlist")).unwrap();
    let md = open_maildrop(&loc).unwrap();
    let again: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    assert_eq!(again, first_uidls);
    // Deleting through Correio: Dovecot then sees the rest.
    md.commit(&[0]).unwrap();
    dc.give_mail_to_owner().unwrap();
    let mut p = Pop3::login(dc.pop3_addr(), "bob", "pw").unwrap();
    assert_eq!(p.list().unwrap().len(), msgs.len() - 1);
    p.quit().unwrap();
}
