//! Property tests of the line framer and the command grammar: the framer gives exactly
//! what a simple model of "lines, and lines over the limit" gives, in any chunking;
//! every command a client can build crosses the wire and parses back to itself.

use correio_proto::command::MsgNum;
use correio_proto::{Command, Line, LineFramer, MAX_COMMAND_LINE};
use proptest::prelude::*;

/// The model: every LF ends a line; a line whose octets with the LF pass `max` is
/// reported once as too long, and so is an unfinished one that already reached `max`
/// octets. A CR right before the LF is not part of the line.
fn model(data: &[u8], max: usize) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        if lf + 1 > max {
            out.push(None);
        } else {
            let line = &rest[..lf];
            out.push(Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec()));
        }
        rest = &rest[lf + 1..];
    }
    if rest.len() >= max {
        out.push(None);
    }
    out
}

fn framed(data: &[u8], max: usize, sizes: &[usize]) -> Vec<Option<Vec<u8>>> {
    let mut f = LineFramer::new(max);
    let mut out = Vec::new();
    let mut rest = data;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        f.push(&rest[..n]);
        rest = &rest[n..];
        k += 1;
        while let Some(line) = f.next_line() {
            out.push(match line {
                Line::Complete(l) => Some(l.to_vec()),
                Line::TooLong => None,
            });
        }
        assert!(
            f.buffered().len() < max,
            "only an unfinished line stays buffered"
        );
    }
    out
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => Just(b"\r\n".to_vec()),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        4 => proptest::collection::vec(b'a'..=b'z', 1..20),
        1 => proptest::collection::vec(b'x'..=b'z', 20..80),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn msg() -> impl Strategy<Value = MsgNum> {
    prop_oneof![1u32..20, Just(MsgNum::MAX)].prop_map(|n| MsgNum::new(n).unwrap())
}

/// Commands as a client builds them: names and secrets of printable characters
/// (spaces allowed where the grammar takes the rest of the line).
fn command() -> impl Strategy<Value = Command> {
    let word = "[!-~]{1,60}";
    let mech = "[A-Z0-9_-]{1,20}";
    prop_oneof![
        word.prop_map(Command::User),
        "[ -~]{1,200}".prop_map(|p| Command::Pass(p.into_bytes())),
        (word, "[0-9a-f]{32}").prop_map(|(name, digest)| Command::Apop { name, digest }),
        Just(Command::Stat),
        proptest::option::of(msg()).prop_map(Command::List),
        msg().prop_map(Command::Retr),
        msg().prop_map(Command::Dele),
        Just(Command::Noop),
        Just(Command::Rset),
        Just(Command::Quit),
        (msg(), any::<u32>()).prop_map(|(msg, lines)| Command::Top { msg, lines }),
        proptest::option::of(msg()).prop_map(Command::Uidl),
        Just(Command::Capa),
        Just(Command::Stls),
        (
            proptest::option::of(mech),
            proptest::option::of("[A-Za-z0-9+/]{1,100}={0,2}|=")
        )
            .prop_map(|(mechanism, ir)| Command::Auth {
                initial_response: mechanism.as_ref().and(ir),
                mechanism,
            }),
        Just(Command::Utf8),
        proptest::option::of("[!-~]{1,40}").prop_map(Command::Lang),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn framer_matches_model_in_any_chunking(
        data in bytes(),
        max in 2usize..40,
        sizes in proptest::collection::vec(1usize..50, 1..5),
    ) {
        prop_assert_eq!(framed(&data, max, &sizes), model(&data, max));
    }

    #[test]
    fn every_command_crosses_the_wire(cmds in proptest::collection::vec(command(), 1..8), chunk in 1usize..64) {
        let mut wire = Vec::new();
        for c in &cmds {
            c.write_to(&mut wire);
        }
        let mut f = LineFramer::new(MAX_COMMAND_LINE);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            f.push(piece);
            while let Some(line) = f.next_line() {
                match line {
                    Line::Complete(l) => got.push(Command::parse(l)),
                    Line::TooLong => panic!("client commands fit the command line"),
                }
            }
        }
        prop_assert_eq!(got, cmds.iter().cloned().map(Ok).collect::<Vec<_>>());
        for c in &cmds {
            prop_assert_eq!(c.validate(), Ok(()));
        }
    }
}
