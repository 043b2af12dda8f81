//! Multi-line bodies at the wire: the exact bytes RETR and TOP send for stored messages
//! (the server's [`DotStuffer`]), the exact size STAT/LIST report ([`wire_size`],
//! [`WireSizer`]), and what the client's [`DotUnstuffer`] makes of exact wire bytes.
//! Every case is fed in every chunk size from 1 to 512 bytes.
//!
//! PROTOCOL.md: CRLF on the wire whatever the store holds; a line starting with "."
//! gets one more "."; `.` CRLF ends the body; a message without a final line end gets
//! CRLF, counted in the size; the size is the CRLF octet count before stuffing and
//! without the final "."; TOP n sends the header, the blank line and n body lines.

use correio_proto::{
    DotStuffer, DotUnstuffer, LineEnding, MissingTerminator, WireSizer, wire_size,
};

fn stuff(stored: &[u8], top: Option<u32>, chunk: usize) -> Vec<u8> {
    let mut s = top.map_or_else(DotStuffer::new, DotStuffer::top);
    let mut out = Vec::new();
    for piece in stored.chunks(chunk) {
        if !s.feed(piece, &mut out) {
            break;
        }
    }
    s.finish(&mut out);
    out
}

fn size(stored: &[u8], chunk: usize) -> u64 {
    let mut s = WireSizer::new();
    for piece in stored.chunks(chunk) {
        s.feed(piece);
    }
    s.finish()
}

/// RETR: exact wire bytes and the size that LIST reports, in every chunking.
fn retr(stored: &[u8], wire: &[u8], octets: u64) {
    for chunk in 1..=512 {
        assert_eq!(
            stuff(stored, None, chunk),
            wire,
            "{:?} in chunks of {chunk}",
            String::from_utf8_lossy(stored)
        );
        assert_eq!(size(stored, chunk), octets, "size in chunks of {chunk}");
    }
    assert_eq!(wire_size(stored), octets);
}

fn top(stored: &[u8], n: u32, wire: &[u8]) {
    for chunk in 1..=512 {
        assert_eq!(
            stuff(stored, Some(n), chunk),
            wire,
            "TOP {n} of {:?} in chunks of {chunk}",
            String::from_utf8_lossy(stored)
        );
    }
}

#[test]
fn lf_and_crlf_both_become_crlf() {
    retr(
        b"Subject: x\n\nbody\n",
        b"Subject: x\r\n\r\nbody\r\n.\r\n",
        20,
    );
    retr(
        b"Subject: x\r\n\r\nbody\r\n",
        b"Subject: x\r\n\r\nbody\r\n.\r\n",
        20,
    );
    retr(b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n.\r\n", 9);
}

#[test]
fn bare_cr_passes_through() {
    retr(b"a\rb\n", b"a\rb\r\n.\r\n", 5);
    retr(b"\r\r\n", b"\r\r\n.\r\n", 3);
    retr(b"x\r\r\r\n", b"x\r\r\r\n.\r\n", 5);
    // A CR at a line start is not a ".": no stuffing after it.
    retr(b"\r.x\n", b"\r.x\r\n.\r\n", 5);
}

#[test]
fn lines_starting_with_a_dot_get_one_more() {
    retr(b".\n", b"..\r\n.\r\n", 3);
    retr(b"..\n", b"...\r\n.\r\n", 4);
    retr(b".hidden\nvisible.\n", b"..hidden\r\nvisible.\r\n.\r\n", 19);
    retr(b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n", 9);
    retr(b".\r\n.\r\n", b"..\r\n..\r\n.\r\n", 6);
    // The size counts the message, not the stuffing dots.
    assert_eq!(wire_size(b".\n.\n.\n"), 9);
}

#[test]
fn missing_final_line_end_gets_crlf_counted_in_the_size() {
    retr(b"no newline", b"no newline\r\n.\r\n", 12);
    retr(b"a\nb", b"a\r\nb\r\n.\r\n", 6);
    retr(b".", b"..\r\n.\r\n", 3);
    // A final CR without LF is a plain byte; then CRLF is added.
    retr(b"a\r", b"a\r\r\n.\r\n", 4);
    retr(b"\r", b"\r\r\n.\r\n", 3);
}

#[test]
fn empty_and_blank_messages() {
    retr(b"", b".\r\n", 0);
    retr(b"\n", b"\r\n.\r\n", 2);
    retr(b"\r\n", b"\r\n.\r\n", 2);
    retr(b"\n\n", b"\r\n\r\n.\r\n", 4);
}

#[test]
fn long_lines_and_many_lines() {
    // Lines longer than any internal block, and many short ones.
    let long = "L".repeat(1000);
    let stored = format!("{long}\n.{long}\n{long}");
    let wire = format!("{long}\r\n..{long}\r\n{long}\r\n.\r\n");
    retr(
        stored.as_bytes(),
        wire.as_bytes(),
        (wire.len() - 1 - 3) as u64,
    );
    let stored = "x\n".repeat(700);
    let wire = format!("{}.\r\n", "x\r\n".repeat(700));
    retr(stored.as_bytes(), wire.as_bytes(), 2100);
}

#[test]
fn size_equals_retr_bytes_minus_stuffing() {
    // The invariant LIST/RETR clients check, on a realistic stored message.
    let stored: &[u8] = b"Return-Path: <a@example.org>\nFrom: a@example.org\nSubject: dots\n\n\
Hello,\n.\n..two dots\n\nquoted:\n> .x\n.last line without newline";
    let wire = stuff(stored, None, stored.len());
    let dots = 3; // ".", "..two dots", ".last..."
    assert_eq!(wire_size(stored), (wire.len() - dots - 3) as u64);
    for chunk in 1..=512 {
        assert_eq!(size(stored, chunk), wire_size(stored));
    }
}

const MSG: &[u8] = b"From: a@example.org\nSubject: top\n\nline 1\n.line 2\nline 3\n";

#[test]
fn top_sends_header_blank_line_and_n_body_lines() {
    top(MSG, 0, b"From: a@example.org\r\nSubject: top\r\n\r\n.\r\n");
    top(
        MSG,
        1,
        b"From: a@example.org\r\nSubject: top\r\n\r\nline 1\r\n.\r\n",
    );
    top(
        MSG,
        2,
        b"From: a@example.org\r\nSubject: top\r\n\r\nline 1\r\n..line 2\r\n.\r\n",
    );
    // n at or beyond the body: the whole message.
    let whole = stuff(MSG, None, MSG.len());
    top(MSG, 3, &whole);
    top(MSG, 4, &whole);
    top(MSG, u32::MAX, &whole);
}

#[test]
fn top_counts_lines_from_the_body_not_the_header() {
    // A header that is longer than n lines must still be sent whole.
    let m = b"A: 1\nB: 2\nC: 3\nD: 4\n\nbody\n";
    top(m, 1, b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nbody\r\n.\r\n");
    top(m, 0, b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n.\r\n");
}

#[test]
fn top_edge_cases() {
    // No blank line: all header, sent whole.
    top(b"A: 1\nB: 2\n", 0, b"A: 1\r\nB: 2\r\n.\r\n");
    top(b"A: 1\nB: 2", 5, b"A: 1\r\nB: 2\r\n.\r\n");
    // CRLF-stored header end, and a blank line as the first body line.
    top(b"A: 1\r\n\r\n\r\nx\r\n", 1, b"A: 1\r\n\r\n\r\n.\r\n");
    // A last body line without line end gets CRLF.
    top(b"A: 1\n\nend", 5, b"A: 1\r\n\r\nend\r\n.\r\n");
    // A blank line is empty: "\r\r\n" is a line holding a CR, not the header end.
    top(
        b"A\n\r\r\nB\n\nC\nD\n",
        1,
        b"A\r\n\r\r\nB\r\n\r\nC\r\n.\r\n",
    );
    // An empty message.
    top(b"", 3, b".\r\n");
}

#[test]
fn top_stops_asking_for_input() {
    let mut s = DotStuffer::top(1);
    let mut out = Vec::new();
    assert!(s.feed(b"H: 1\n", &mut out));
    assert!(!s.feed(b"\nbody 1\nbo", &mut out));
    // Input given after that is ignored.
    assert!(!s.feed(b"dy 2\n", &mut out));
    s.finish(&mut out);
    assert_eq!(out, b"H: 1\r\n\r\nbody 1\r\n.\r\n");
    // finish() twice appends nothing more.
    s.finish(&mut out);
    assert_eq!(out, b"H: 1\r\n\r\nbody 1\r\n.\r\n");
}

/// What the client's unstuffer gives for `wire` in every chunking: the message bytes
/// and how many wire bytes it consumed.
fn unstuff(wire: &[u8], ending: LineEnding, message: &[u8], consumed: usize, done: bool) {
    for chunk in 1..=512 {
        let mut u = DotUnstuffer::new(ending);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(chunk) {
            used += u.feed(piece, &mut out);
            if u.is_done() {
                break;
            }
        }
        assert_eq!(
            (out.as_slice(), used, u.is_done()),
            (message, consumed, done),
            "{:?} in chunks of {chunk}",
            String::from_utf8_lossy(wire)
        );
        assert_eq!(u.finish().is_ok(), done);
    }
}

#[test]
fn unstuffer_removes_stuffing_and_finds_the_terminator() {
    let wire = b"From: a\r\n\r\n..dot\r\n...two\r\nplain.\r\n.\r\n";
    unstuff(
        wire,
        LineEnding::Crlf,
        b"From: a\r\n\r\n.dot\r\n..two\r\nplain.\r\n",
        wire.len(),
        true,
    );
    unstuff(
        wire,
        LineEnding::Lf,
        b"From: a\n\n.dot\n..two\nplain.\n",
        wire.len(),
        true,
    );
    // An empty body.
    unstuff(b".\r\n", LineEnding::Crlf, b"", 3, true);
}

#[test]
fn unstuffer_stops_exactly_after_the_terminator() {
    // Pipelined responses: the next one stays in the caller's buffer untouched.
    let wire = b"1 120\r\n2 200\r\n.\r\n+OK 1 120\r\n-ERR no\r\n";
    unstuff(wire, LineEnding::Crlf, b"1 120\r\n2 200\r\n", 17, true);
    let wire = b"body\r\n.\r\n.\r\n";
    unstuff(wire, LineEnding::Crlf, b"body\r\n", 9, true);
}

#[test]
fn unstuffer_tolerates_bare_lf() {
    let wire = b"a\nb\r\n..c\n.\n+OK";
    unstuff(wire, LineEnding::Crlf, b"a\r\nb\r\n.c\r\n", 11, true);
    unstuff(wire, LineEnding::Lf, b"a\nb\n.c\n", 11, true);
}

#[test]
fn unstuffer_keeps_bare_cr() {
    unstuff(b"a\rb\r\n.\r\n", LineEnding::Crlf, b"a\rb\r\n", 8, true);
    // ". CR x" is not the terminator: a stuffing dot, then a CR in the line.
    unstuff(b".\rx\r\n.\r\n", LineEnding::Crlf, b"\rx\r\n", 8, true);
    unstuff(b"..\r\n.\r\n", LineEnding::Lf, b".\n", 7, true);
}

#[test]
fn unstuffer_reports_a_missing_terminator() {
    unstuff(
        b"line one\r\nline two\r\n",
        LineEnding::Crlf,
        b"line one\r\nline two\r\n",
        20,
        false,
    );
    // The connection dropped inside a line, or right after a "." that might have
    // been the terminator.
    unstuff(b"part", LineEnding::Crlf, b"part", 4, false);
    unstuff(b"x\r\n.", LineEnding::Crlf, b"x\r\n", 4, false);
    unstuff(b"x\r\n.\r", LineEnding::Crlf, b"x\r\n", 5, false);
    unstuff(b"", LineEnding::Crlf, b"", 0, false);
    assert_eq!(
        DotUnstuffer::new(LineEnding::Lf).finish(),
        Err(MissingTerminator)
    );
    assert_eq!(
        MissingTerminator.to_string(),
        "multi-line response ended without the terminating \".\" line"
    );
}

#[test]
fn round_trip_through_the_wire_in_every_chunking() {
    let stored: &[u8] = b"Subject: round trip\n\n.\n..\nx\ry\n\nlast";
    let expected_crlf: &[u8] = b"Subject: round trip\r\n\r\n.\r\n..\r\nx\ry\r\n\r\nlast\r\n";
    let expected_lf: &[u8] = b"Subject: round trip\n\n.\n..\nx\ry\n\nlast\n";
    for chunk in 1..=512 {
        let wire = stuff(stored, None, chunk);
        assert_eq!(wire_size(stored), expected_crlf.len() as u64);
        unstuff(&wire, LineEnding::Crlf, expected_crlf, wire.len(), true);
        unstuff(&wire, LineEnding::Lf, expected_lf, wire.len(), true);
    }
}
