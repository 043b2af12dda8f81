//! Fuzz bodies (`cargo fuzz` targets call these; tests replay the seed corpus).
//! Each checks the invariants a parser must keep on any input, and panics only when
//! one is broken.

/// mbox parsing: never panics; every message's wire size equals the size of the bytes
/// it serves; UIDLs are valid and unique; ranges are ordered and inside the input.
#[doc(hidden)]
pub fn mbox_parse(data: &[u8]) {
    let Ok(msgs) = crate::mbox::parse_bytes(data) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for (size, uidl, content) in &msgs {
        let mut c = crate::wire::WireCounter::new();
        c.feed(content);
        assert_eq!(*size, c.finish(), "wire size must match served bytes");
        assert!(
            !uidl.is_empty()
                && uidl.len() <= 70
                && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
        );
        assert!(seen.insert(uidl.clone()), "UIDLs must be unique");
    }
}

/// mbox write/read round trip: any message appended through the writer's transforms
/// reads back identical (after LF normalization and a final newline).
#[doc(hidden)]
pub fn mbox_roundtrip(data: &[u8]) {
    use crate::transform::{CrlfToLf, FromQuoting, QuoteDir};
    let mut norm = Vec::new();
    let mut n = CrlfToLf::default();
    n.feed(data, &mut norm);
    n.finish(&mut norm);
    if !norm.is_empty() && norm.last() != Some(&b'\n') {
        norm.push(b'\n');
    }
    let mut mbox = b"From sender Thu Jan  1 00:00:00 1970\n".to_vec();
    let mut q = FromQuoting::new(QuoteDir::Quote);
    q.feed(&norm, &mut mbox);
    q.finish(&mut mbox);
    mbox.push(b'\n');
    let msgs = crate::mbox::parse_bytes(&mbox).expect("in-memory scan");
    // A message whose header carries a matching Content-Length may be read verbatim;
    // that is only possible if the quoted form equals the original.
    assert_eq!(msgs.len(), 1, "one message in, one out");
    let (size, _, content) = &msgs[0];
    let mut c = crate::wire::WireCounter::new();
    c.feed(&norm);
    if content != &norm {
        // Only a Content-Length header can explain a difference; it must then be
        // the verbatim reading of the quoted body.
        assert!(
            norm.windows(15)
                .any(|w| w.eq_ignore_ascii_case(b"content-length:")),
            "roundtrip changed the message"
        );
    } else {
        assert_eq!(*size, c.finish());
    }
}

/// The delivery normalizer with CRLF storage, on the same inputs as
/// [`mbox_roundtrip`] (its fuzz target runs both), fed in two chunks cut anywhere:
/// the stored bytes have only CRLF line ends, the wire size is the size rule's, the
/// dot lines are counted right, and a message it calls wire form is exactly what the
/// server's dot-stuffer sends (so sending the file unread is the same as stuffing it).
#[doc(hidden)]
pub fn normalizer_crlf(data: &[u8]) {
    use crate::deliver::{LineEnds, Normalizer};
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut n = Normalizer::new(None, None, false).with_line_ends(LineEnds::Crlf);
    let mut stored = Vec::new();
    let mut sink = |c: &[u8]| {
        stored.extend_from_slice(c);
        Ok(())
    };
    n.feed(&data[..cut], &mut sink).expect("no limits");
    n.feed(&data[cut..], &mut sink).expect("no limits");
    let done = n.finish(&mut sink).expect("no limits");
    assert_eq!(done.stored, stored.len() as u64);
    for (i, &b) in stored.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && stored[i - 1] == b'\r', "bare LF stored");
        }
    }
    assert!(stored.is_empty() || stored.ends_with(b"\r\n"));
    assert_eq!(done.wire, correio_proto::wire_size(&stored));
    let dots = stored
        .split(|&b| b == b'\n')
        .filter(|l| l.first() == Some(&b'.'))
        .count() as u64;
    assert_eq!(done.dot_lines, dots);
    let mut sent = Vec::new();
    let mut st = correio_proto::DotStuffer::new();
    st.feed(&stored, &mut sent);
    st.finish(&mut sent);
    let verbatim = sent.strip_suffix(b".\r\n") == Some(&stored[..]);
    assert_eq!(
        done.wire_form(),
        verbatim,
        "wire form iff the stuffer changes nothing"
    );
}

/// Maildir index parsing: never panics; what parses re-renders to the same records.
#[doc(hidden)]
pub fn maildir_index(data: &[u8]) {
    crate::maildir::fuzz_index(data);
}

/// Dovecot uidlist parsing: never panics; every UIDL it yields is valid.
#[doc(hidden)]
pub fn dovecot_uidlist(data: &[u8]) {
    crate::maildir::fuzz_uidlist(data);
}

/// Retrieval-date file parsing (`EXPIRE n` state): never panics; whatever it accepts
/// renders back to the same records.
#[doc(hidden)]
pub fn expiry_retrieved(data: &[u8]) {
    crate::expiry::fuzz_retrieved(data);
}

/// Courier size list parsing (`courierpop3dsizelist`): never panics; every UIDL it
/// yields is valid.
#[doc(hidden)]
pub fn courier_sizelist(data: &[u8]) {
    crate::maildir::fuzz_courier_sizelist(data);
}

/// Mail locations and store references (`maildir:…`, `mbox:…`, `STORE:MAILBOX`, with
/// templates): never a panic; a file location is absolute; a store reference's
/// mailbox has no control character or space and prints back to itself.
pub fn mailbox_ref(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, user) = text.split_once('\n').unwrap_or((text, "alice@example.org"));
    let vars = crate::TemplateVars {
        user,
        home: Some(std::path::Path::new("/home/u")),
    };
    for parsed in [
        crate::MailboxRef::parse(template),
        crate::MailboxRef::from_template(template, &vars),
    ] {
        match parsed {
            Ok(crate::MailboxRef::File(l)) => match l {
                crate::MailLocation::Maildir(p) | crate::MailLocation::Mbox(p) => {
                    assert!(p.is_absolute(), "{p:?}")
                }
            },
            Ok(r @ crate::MailboxRef::Store { .. }) => {
                let crate::MailboxRef::Store { mailbox, .. } = &r else {
                    unreachable!()
                };
                assert!(!mailbox.is_empty());
                assert!(!mailbox.bytes().any(|b| b.is_ascii_control() || b == b' '));
                assert_eq!(crate::MailboxRef::parse(&r.to_string()).as_ref(), Ok(&r));
            }
            Err(_) => {}
        }
    }
}
