//! Property tests of byte-stuffing, unstuffing and the size rule, for arbitrary messages
//! cut into arbitrary chunks, against small reference models written for clarity
//! rather than speed.

use correio_proto::{DotStuffer, DotUnstuffer, LineEnding, WireSizer, wire_size};
use proptest::prelude::*;

/// The lines of a stored message: (content, had a line end). A CR right before LF
/// belongs to the line end; a last piece without LF is a line without line end.
fn model_lines(m: &[u8]) -> Vec<(&[u8], bool)> {
    let mut lines = Vec::new();
    let mut rest = m;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..lf];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        lines.push((line, true));
        rest = &rest[lf + 1..];
    }
    if !rest.is_empty() {
        lines.push((rest, false));
    }
    lines
}

/// The wire bytes RETR (top = None) or TOP (top = Some(n)) must send, terminator
/// included.
fn model_stuff(m: &[u8], top: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_header = true;
    let mut body_left = top;
    for (line, _) in model_lines(m) {
        if !in_header {
            match body_left {
                Some(0) => break,
                Some(n) => body_left = Some(n - 1),
                None => {}
            }
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if in_header && line.is_empty() {
            in_header = false;
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The message as the client must get it back: every line ended with `eol`.
fn model_normalized(m: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (line, _) in model_lines(m) {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out
}

/// The client-side reference: (message bytes, bytes consumed, terminator seen) for
/// arbitrary wire bytes. A last, incomplete line is given as the streaming unstuffer
/// has emitted it so far: without a leading stuffing dot and without a trailing CR
/// (which may still turn out to be part of CRLF).
fn model_unstuff(wire: &[u8], eol: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(lf) = wire[pos..].iter().position(|&b| b == b'\n') {
        let mut line = &wire[pos..pos + lf];
        pos += lf + 1;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line == b"." {
            return (out, pos, true);
        }
        if line.first() == Some(&b'.') {
            line = &line[1..];
        }
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    let mut tail = &wire[pos..];
    if tail.first() == Some(&b'.') {
        tail = &tail[1..];
    }
    if tail.last() == Some(&b'\r') {
        tail = &tail[..tail.len() - 1];
    }
    out.extend_from_slice(tail);
    (out, wire.len(), false)
}

/// Cuts `data` into pieces whose lengths cycle through `sizes`.
fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut v = Vec::new();
    let mut rest = data;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        v.push(&rest[..n]);
        rest = &rest[n..];
        k += 1;
    }
    v
}

fn stuff_chunked(m: &[u8], top: Option<u32>, sizes: &[usize]) -> Vec<u8> {
    let mut s = match top {
        Some(n) => DotStuffer::top(n),
        None => DotStuffer::new(),
    };
    let mut out = Vec::new();
    for c in chunks(m, sizes) {
        if !s.feed(c, &mut out) {
            break;
        }
    }
    s.finish(&mut out);
    out
}

fn unstuff_chunked(wire: &[u8], ending: LineEnding, sizes: &[usize]) -> (Vec<u8>, usize, bool) {
    let mut u = DotUnstuffer::new(ending);
    let mut out = Vec::new();
    let mut consumed = 0;
    for c in chunks(wire, sizes) {
        let used = u.feed(c, &mut out);
        assert!(used <= c.len());
        consumed += used;
        if u.is_done() {
            break;
        }
        assert_eq!(used, c.len(), "consumes everything until the terminator");
    }
    assert_eq!(u.finish().is_ok(), u.is_done());
    (out, consumed, u.is_done())
}

/// Message bytes biased toward what matters: line ends, CRs, dots, and long runs (to
/// cross the 64-byte scanning blocks and the copy fast path).
fn message() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => Just(b"\n".to_vec()),
        3 => Just(b"\r\n".to_vec()),
        2 => Just(b"\r".to_vec()),
        3 => Just(b".".to_vec()),
        4 => proptest::collection::vec(b'a'..=b'z', 1..12),
        1 => proptest::collection::vec(b'x'..=b'z', 60..200),
        1 => proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        proptest::collection::vec(1usize..8, 1..6),
        proptest::collection::vec(1usize..200, 1..6),
        Just(vec![usize::MAX]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn stuffer_matches_model_in_any_chunking(m in message(), sizes in chunk_sizes()) {
        prop_assert_eq!(stuff_chunked(&m, None, &sizes), model_stuff(&m, None));
    }

    #[test]
    fn top_matches_model_in_any_chunking(
        m in message(), n in prop_oneof![0u32..4, Just(u32::MAX)], sizes in chunk_sizes()
    ) {
        prop_assert_eq!(stuff_chunked(&m, Some(n), &sizes), model_stuff(&m, Some(n)));
    }

    #[test]
    fn unstuff_of_stuff_is_the_message_with_crlf(
        m in message(), s1 in chunk_sizes(), s2 in chunk_sizes(),
    ) {
        let wire = stuff_chunked(&m, None, &s1);
        let mut piped = wire.clone();
        piped.extend_from_slice(b"+OK next response\r\n");
        let (crlf, used, done) = unstuff_chunked(&piped, LineEnding::Crlf, &s2);
        prop_assert!(done);
        prop_assert_eq!(used, wire.len(), "stops right after the terminator");
        prop_assert_eq!(&crlf, &model_normalized(&m, b"\r\n"));
        let (lf, _, _) = unstuff_chunked(&piped, LineEnding::Lf, &s2);
        prop_assert_eq!(lf, model_normalized(&m, b"\n"));
    }

    #[test]
    fn size_rule_equals_bytes_sent(m in message(), s1 in chunk_sizes(), s2 in chunk_sizes()) {
        let wire = stuff_chunked(&m, None, &s1);
        // The stuffing dots: one per line that starts with ".".
        let dots = model_lines(&m).iter().filter(|(l, _)| l.first() == Some(&b'.')).count();
        let expected = (wire.len() - dots - b".\r\n".len()) as u64;
        prop_assert_eq!(wire_size(&m), expected);
        let mut sizer = WireSizer::new();
        for c in chunks(&m, &s2) {
            sizer.feed(c);
        }
        prop_assert_eq!(sizer.finish(), expected);
    }

    #[test]
    fn unstuffer_matches_model_on_any_wire_bytes(wire in message(), sizes in chunk_sizes()) {
        for (ending, eol) in [(LineEnding::Crlf, &b"\r\n"[..]), (LineEnding::Lf, &b"\n"[..])] {
            prop_assert_eq!(
                unstuff_chunked(&wire, ending, &sizes),
                model_unstuff(&wire, eol)
            );
        }
    }
}
