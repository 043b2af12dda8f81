//! Support for the `peers_*` tests: a corpus of awkward messages put into a
//! [`TestServer`] maildrop and a byte-exact comparison of what the client stored with
//! what was delivered. Running the client (bounded), finding it and handling its files
//! is [`correio_testkit::peers`].
//!
//! The contract every peer test checks: each delivered message comes out of the peer
//! exactly once and byte-exact, up to the line-end convention of the peer's output
//! ([`Msg::expected_lf`]). POP3 carries lines as CRLF; fetchmail (`stripcr`, on by
//! default for an MDA), mpop and getmail6 all write Unix files with LF line ends, so
//! the expected bytes are the stored message with LF line ends. The only CRs in the
//! corpus are the line ends of one raw file stored with CRLF (as some other tools write
//! Maildir files; the server must send them without doubling the CR), so that
//! conversion is exact. A non-empty message stored without a final line end is sent
//! with a CRLF added (PROTOCOL.md), so its expected form has a final LF added. Nothing
//! else is normalised: a peer that adds a header is told not to (fetchmail
//! `--invisible`, mpop `received_header off`, getmail6 `received = false` /
//! `delivered_to = false`), and any other difference fails. The one peer rewrite a
//! test accounts for (getmail6's, see `peers_getmail.rs`) is shown there not to come
//! from the server.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use correio_testkit::peers::{crlf_to_lf, maildir_messages, make_maildir, message_problems};

use crate::common::TestServer;

/// One corpus message.
pub struct Msg {
    /// Short name for failure messages (also in the Subject).
    pub name: &'static str,
    /// The bytes handed to the store (or written as a raw Maildir file).
    pub bytes: Vec<u8>,
    /// Written straight into `new/` as another tool would (no `,S=`/`,W=` in the name,
    /// no final newline added), instead of through Correio's delivery.
    pub raw_file: bool,
}

impl Msg {
    /// What a peer that writes LF files must store for this message: CRLF (only in the
    /// raw file written with CRLF line ends) becomes LF, and a final LF is added when
    /// the stored message has none (the server adds CRLF on the wire).
    pub fn expected_lf(&self) -> Vec<u8> {
        let mut v = crlf_to_lf(&self.bytes);
        // An empty file is a message of no lines: nothing to end.
        if !v.is_empty() && !v.ends_with(b"\n") {
            v.push(b'\n');
        }
        v
    }
}

fn header(name: &str, n: usize) -> String {
    format!(
        "Return-Path: <sender@example.org>\nFrom: Sender <sender@example.org>\n\
         To: alice@example.org\nSubject: {name}\nMessage-ID: <peers-{n}@example.org>\n\
         Date: Sun, 22 Nov 2026 04:00:{:02} +0000\nMIME-Version: 1.0\n",
        n % 60
    )
}

/// The corpus: LF-only, dot lines (a line that is just "."), "From " lines, 8-bit and
/// UTF-8 bytes, a folded header, a raw file without final newline, an empty body, a raw
/// file stored with CRLF line ends, long lines (998, 1000 and 4000 octets) and a 1 MiB
/// message.
pub fn corpus() -> Vec<Msg> {
    let mut v = Vec::new();
    let mut push = |name: &'static str, rest: &[u8], raw_file: bool| {
        let mut bytes = header(name, v.len()).into_bytes();
        bytes.extend_from_slice(rest);
        v.push(Msg {
            name,
            bytes,
            raw_file,
        });
    };
    push(
        "plain",
        b"Content-Type: text/plain; charset=us-ascii\n\nHello Alice,\n\nplain LF-only text.\n-- \nSender\n",
        false,
    );
    push(
        "dots",
        b"\n.\n..\n...\n.leading dot\n..two leading dots\n . space then dot\nmiddle\n.\n\n.\n",
        false,
    );
    push(
        "from-lines",
        b"\nFrom here on, a line starting with From:\nFrom sender@example.org Sun Nov 22 04:00:00 2026\n>From quoted\n>>From twice\nFrom\nFrom:\n",
        false,
    );
    push(
        "folded-header",
        b"X-Folded: first part\n\tsecond part after a tab\n    third part after spaces\nX-Empty:\nX-Trailing-Space: value \n\nbody\n",
        false,
    );
    push(
        "eight-bit",
        "X-Utf8: Olá, ação, 日本語, 📬\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nOlá — ação 日本語 📬\n"
            .as_bytes()
            .iter()
            .copied()
            .chain(*b"latin-1: caf\xe9 \xff\xfe \x80\x81\x9f, controls: \x01\x07\x1b[0m \x7f tab:\tend\n")
            .collect::<Vec<u8>>()
            .as_slice(),
        false,
    );
    push("no-final-newline", b"\nthe last line has no line end", true);
    push("empty-body", b"\n", false);
    let mut long = b"\n".to_vec();
    for len in [998usize, 1000, 4000] {
        long.extend((0..len).map(|i| b"abcdefghij klmnopqrstuvwxyz0123456789."[i % 38]));
        long.push(b'\n');
    }
    long.extend(std::iter::repeat_n(b'x', 1000));
    long.push(b'\n');
    long.push(b'.');
    long.extend(std::iter::repeat_n(b'y', 999));
    long.push(b'\n');
    push("long-lines", &long, false);
    let mut big = b"Content-Type: text/plain\n\n".to_vec();
    let mut i = 0u32;
    while big.len() < 1 << 20 {
        match i % 11 {
            0 => big.extend_from_slice(b".\n"),
            3 => big.extend_from_slice(format!(".dot line {i}\n").as_bytes()),
            5 => big.extend_from_slice(format!("From line {i}\n").as_bytes()),
            7 => big.extend_from_slice("ünïcødé ✓\n".as_bytes()),
            _ => big.extend_from_slice(
                format!("line {i}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
            ),
        }
        i += 1;
    }
    push("one-mebibyte", &big, false);
    let mut crlf = Vec::new();
    for line in header("crlf-stored", 99).lines() {
        crlf.extend_from_slice(line.as_bytes());
        crlf.extend_from_slice(b"\r\n");
    }
    crlf.extend_from_slice(b"\r\nstored with CRLF line ends\r\n.\r\n.dot\r\nFrom me\r\n");
    v.push(Msg {
        name: "crlf-stored",
        bytes: crlf,
        raw_file: true,
    });
    v
}

/// Degenerate messages another tool could leave in a Maildir, all as raw files: an
/// empty file, a header without final newline, a header with no body and no blank
/// line, and a body with an empty header. Not in [`corpus`] because fetchmail and
/// getmail6 repair such messages (fetchmail adds the missing blank line and invents
/// headers for a headerless one; getmail6 adds `Return-Path: <unknown>`); mpop stores
/// them exactly as sent.
pub fn degenerate_corpus() -> Vec<Msg> {
    let raw = |name, bytes: &[u8]| Msg {
        name,
        bytes: bytes.to_vec(),
        raw_file: true,
    };
    vec![
        raw("empty-file", b""),
        raw("header-no-newline", b"Subject: header-no-newline"),
        raw("header-only", b"Subject: header-only\n"),
        raw("empty-header", b"\nSubject: empty-header (in the body)\n"),
    ]
}

/// Puts the corpus into `user`'s maildrop and checks the store holds what we expect.
pub fn deliver_corpus(srv: &TestServer, user: &str, corpus: &[Msg]) {
    for (n, m) in corpus.iter().enumerate() {
        if m.raw_file {
            let dir = srv.maildir(user);
            make_maildir(&dir);
            // A name as another MDA would write it: no sizes, so the server must count.
            let name = format!("1790000000.M{n}P1.peers.invalid");
            fs::write(dir.join("new").join(name), &m.bytes).expect("write raw maildir file");
        } else {
            srv.deliver(user, &m.bytes);
        }
    }
    let stored = maildir_messages(&srv.maildir(user));
    assert_eq!(stored.len(), corpus.len(), "store did not take the corpus");
}

/// How many messages are left in `user`'s maildrop on the server.
pub fn server_count(srv: &TestServer, user: &str) -> usize {
    maildir_messages(&srv.maildir(user)).len()
}

/// Asserts that `got` holds each corpus message exactly once, byte-exact (LF form), and
/// nothing else. `what` names the peer and mode for the failure message.
pub fn assert_same_messages(what: &str, corpus: &[Msg], got: &[(PathBuf, Vec<u8>)]) {
    assert_same_messages_after(what, corpus, got, |b| b);
}

/// As [`assert_same_messages`], with a peer's own documented rewrite `peer` applied to
/// each expected message first (only for rewrites shown not to come from the server).
pub fn assert_same_messages_after(
    what: &str,
    corpus: &[Msg],
    got: &[(PathBuf, Vec<u8>)],
    peer: impl Fn(Vec<u8>) -> Vec<u8>,
) {
    let wants: Vec<Vec<u8>> = corpus.iter().map(|m| peer(m.expected_lf())).collect();
    let want: Vec<(&str, &[u8])> = corpus
        .iter()
        .zip(&wants)
        .map(|(m, w)| (m.name, w.as_slice()))
        .collect();
    let labels: Vec<String> = got
        .iter()
        .map(|(p, _)| format!("file {}", p.display()))
        .collect();
    let got: Vec<(&str, &[u8])> = labels
        .iter()
        .zip(got)
        .map(|(l, (_, b))| (l.as_str(), b.as_slice()))
        .collect();
    let problems = message_problems(&want, &got);
    assert!(
        problems.is_empty(),
        "{what}: {} of {} messages wrong:\n{}",
        problems.len(),
        corpus.len(),
        problems.join("\n")
    );
}

/// A self-signed certificate for `localhost` that the test server does not use, to
/// show a peer really verifies the server's certificate.
pub fn foreign_cert(dir: &Path) -> PathBuf {
    let cert = dir.join("foreign-cert.pem");
    correio_server::tls::write_self_signed(
        &cert,
        &dir.join("foreign-key.pem"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .expect("foreign cert");
    cert
}
