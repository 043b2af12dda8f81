//! Fuzz target bodies, kept in the crate so that the normal test suite replays the
//! seed corpus through exactly the code the fuzzer runs (`tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes, must never panic, hang or grow memory without
//! bound on them, and asserts the invariants of its parser (round trips, chunking
//! independence). An assertion failure here is a bug found.

use crate::capa::Capabilities;
use crate::command::Command;
use crate::framer::{Line, LineFramer};
use crate::response::ServerLine;
use crate::sasl::{self, SaslResponse};
use crate::stuff::{DotStuffer, DotUnstuffer, LineEnding};

/// Splits off a control byte, used to pick a limit or a chunk size.
fn control(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

/// Everything a framer yields for `data` pushed in pieces of `chunk` bytes.
fn frame_all(data: &[u8], max_line: usize, chunk: usize) -> Vec<Option<Vec<u8>>> {
    let mut f = LineFramer::new(max_line);
    let mut lines = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        f.push(piece);
        while let Some(line) = f.next_line() {
            lines.push(match line {
                Line::Complete(l) => {
                    // A line plus at least its LF fits the limit.
                    assert!(l.len() < max_line.max(2), "line over the limit");
                    assert!(!l.contains(&b'\n'));
                    Some(l.to_vec())
                }
                Line::TooLong => None,
            });
        }
        // Bounded: never more than one line's limit plus what one push added.
        assert!(f.buffered().len() <= max_line.max(2) + piece.len());
    }
    lines
}

/// The line framer: the same lines whatever the chunking, each within the limit.
#[doc(hidden)]
pub fn framer(data: &[u8]) {
    let (c, data) = control(data);
    let max_line = 2 + usize::from(c);
    let whole = frame_all(data, max_line, data.len());
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            frame_all(data, max_line, chunk),
            whole,
            "chunk size {chunk}"
        );
    }
}

/// The command parser: every accepted command serialises to a line that parses back
/// to the same command; every refusal has wire text.
#[doc(hidden)]
pub fn command(data: &[u8]) {
    match Command::parse(data) {
        Ok(cmd) => {
            let wire = cmd.to_wire();
            let line = wire.strip_suffix(b"\r\n").expect("write_to ends with CRLF");
            assert_eq!(Command::parse(line), Ok(cmd.clone()), "round trip");
            assert!(!cmd.keyword().is_empty());
            let _ = cmd.expects_multiline();
        }
        Err(e) => assert!(!e.wire_text().is_empty()),
    }
    // The same bytes through a server-side framer first, as the session sees them.
    let mut f = LineFramer::new(crate::MAX_COMMAND_LINE);
    f.push(data);
    while let Some(line) = f.next_line() {
        if let Line::Complete(l) = line {
            let _ = Command::parse(l);
        }
    }
}

/// The server-line parser: a parsed status line writes back to a line that parses to
/// the same thing, unless the text had to be changed to fit the wire.
#[doc(hidden)]
pub fn response(data: &[u8]) {
    let Ok(parsed) = ServerLine::parse(data) else {
        return;
    };
    if let ServerLine::Status(status) = &parsed {
        let wire = status.to_wire();
        assert!(wire.len() <= crate::MAX_STATUS_LINE);
        assert!(wire.ends_with(b"\r\n"));
        let line = &wire[..wire.len() - 2];
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        let again = ServerLine::parse(line).expect("our own status line parses");
        // The length the line has when nothing is cut.
        let whole = match status.status {
            crate::response::Status::Ok => 3,
            crate::response::Status::Err => 4,
        } + status.code.as_ref().map_or(0, |c| c.as_str().len() + 3)
            + if status.text.is_empty() {
                0
            } else {
                1 + status.text.len()
            }
            + 2;
        let text_fits = !status.text.contains(['\r', '\n']) && wire.len() == whole;
        if text_fits {
            assert_eq!(again, parsed, "round trip");
        }
    }
}

/// The unstuffer: the same result in any chunking, and the stuffer's output for the
/// same bytes (taken as a message) unstuffs back to the message.
#[doc(hidden)]
pub fn unstuffer(data: &[u8]) {
    let (c, data) = control(data);
    let chunk = 1 + usize::from(c % 32);
    let ending = if c & 0x80 == 0 {
        LineEnding::Crlf
    } else {
        LineEnding::Lf
    };
    let run = |chunk: usize| {
        let mut u = DotUnstuffer::new(ending);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in data.chunks(chunk) {
            let n = u.feed(piece, &mut out);
            assert!(n <= piece.len());
            used += n;
            if u.is_done() {
                break;
            }
            assert_eq!(n, piece.len());
        }
        (out, used, u.finish().is_ok())
    };
    assert_eq!(run(chunk), run(data.len().max(1)));

    // Stuff, then unstuff: the message with every line ended by `ending`.
    let mut s = DotStuffer::new();
    let mut wire = Vec::new();
    for piece in data.chunks(chunk) {
        s.feed(piece, &mut wire);
    }
    s.finish(&mut wire);
    assert_eq!(crate::stuff::wire_size(data) + 3, {
        let dots = count_stuffed(&wire);
        (wire.len() - dots) as u64
    });
    let mut u = DotUnstuffer::new(LineEnding::Crlf);
    let mut back = Vec::new();
    assert_eq!(u.feed(&wire, &mut back), wire.len());
    assert!(u.is_done());
    assert_eq!(back.len() as u64, crate::stuff::wire_size(data));
}

/// Lines of a stuffed body (terminator excluded) that start with `..`: each carries one
/// stuffing dot.
fn count_stuffed(wire: &[u8]) -> usize {
    let body = &wire[..wire.len() - 3];
    let mut n = 0;
    let mut at_start = true;
    let mut i = 0;
    while i < body.len() {
        if at_start && body[i] == b'.' {
            n += 1;
        }
        at_start = body[i] == b'\n';
        i += 1;
    }
    n
}

/// SASL framing: decoded responses and challenges re-encode to lines that decode to
/// the same bytes.
#[doc(hidden)]
pub fn sasl(data: &[u8]) {
    if let Ok(SaslResponse::Data(bytes)) = sasl::decode_response(data) {
        let mut line = Vec::new();
        sasl::encode_response(&bytes, &mut line);
        let line = &line[..line.len() - 2];
        assert_eq!(
            sasl::decode_response(line),
            Ok(SaslResponse::Data(bytes)),
            "response round trip"
        );
    }
    if let Ok(bytes) = sasl::decode_challenge(data) {
        let mut line = Vec::new();
        sasl::encode_challenge(&bytes, &mut line);
        assert_eq!(
            sasl::decode_challenge(&line[..line.len() - 2]),
            Ok(bytes),
            "challenge round trip"
        );
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = sasl::decode_initial_response(text)
    {
        let arg = sasl::encode_initial_response(&bytes);
        assert_eq!(sasl::decode_initial_response(&arg), Ok(bytes));
    }
}

/// CAPA bodies: parsing is bounded, and writing what was parsed is stable (parse →
/// write → parse → write gives the same body).
#[doc(hidden)]
pub fn capa(data: &[u8]) {
    let Ok(caps) = Capabilities::parse_body(data) else {
        return;
    };
    let mut once = Vec::new();
    caps.write_body(&mut once);
    let body = once
        .strip_suffix(b".\r\n")
        .expect("body ends with the terminator");
    let reparsed = Capabilities::parse_body(body).expect("our own body parses");
    let mut twice = Vec::new();
    reparsed.write_body(&mut twice);
    assert_eq!(once, twice, "write/parse is stable");
    assert!(
        once.split(|&b| b == b'\n')
            .all(|l| l.len() <= crate::MAX_STATUS_LINE),
        "capability lines fit a response line"
    );
}
