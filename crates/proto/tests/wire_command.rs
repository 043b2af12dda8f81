//! Commands at the wire: exact client bytes in, the grammar's verdict out (the command,
//! or the `-ERR` text it maps to), through the server's 255-octet [`LineFramer`], with
//! every script fed in every chunk size from 1 to 512 bytes. And the client side: exact
//! bytes [`Command::write_to`] puts on the wire.
//!
//! PROTOCOL.md "POP3 core" and "Extensions": keywords case-insensitive, single-space
//! separators, strict message numbers, PASS keeps spaces, 255-octet command lines, the
//! commands of RFC 1939/2449/2595/5034/6856, STLS discarding pipelined cleartext.

use correio_proto::command::MsgNum;
use correio_proto::{Command, CommandError, Line, LineFramer, MAX_COMMAND_LINE};

/// What the server's grammar makes of one framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Cmd(Command),
    /// The `-ERR` line the grammar error maps to, CRLF included.
    Err(String),
    /// The framer refused a line over 255 octets.
    TooLong,
}

fn err(e: CommandError) -> Verdict {
    Verdict::Err(format!("-ERR {}\r\n", e.wire_text()))
}

fn n(v: u32) -> MsgNum {
    MsgNum::new(v).unwrap()
}

/// Feeds `script` to a server-side framer in pieces of `chunk` bytes.
fn run(script: &[u8], chunk: usize) -> Vec<Verdict> {
    let mut framer = LineFramer::new(MAX_COMMAND_LINE);
    let mut out = Vec::new();
    for piece in script.chunks(chunk) {
        framer.push(piece);
        while let Some(line) = framer.next_line() {
            out.push(match line {
                Line::Complete(l) => match Command::parse(l) {
                    Ok(c) => Verdict::Cmd(c),
                    Err(e) => err(e),
                },
                Line::TooLong => Verdict::TooLong,
            });
        }
    }
    out
}

/// Asserts the verdicts for `script` in every chunk size from 1 to 512.
fn check(script: &[u8], expected: &[Verdict]) {
    for chunk in 1..=512 {
        assert_eq!(
            run(script, chunk),
            expected,
            "script {:?} in chunks of {chunk}",
            String::from_utf8_lossy(script)
        );
    }
}

fn one(line: &str, expected: Verdict) {
    check(line.as_bytes(), &[expected]);
}

#[test]
fn authorization_commands() {
    one(
        "USER alice\r\n",
        Verdict::Cmd(Command::User("alice".into())),
    );
    one("USER\r\n", err(CommandError::Syntax));
    one("USER a b\r\n", err(CommandError::Syntax));
    one(
        "PASS s3cret\r\n",
        Verdict::Cmd(Command::Pass(b"s3cret".to_vec())),
    );
    one("PASS\r\n", err(CommandError::Syntax));
    one("PASS \r\n", err(CommandError::Syntax));
    one(
        "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
        Verdict::Cmd(Command::Apop {
            name: "mrose".into(),
            digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
        }),
    );
    // Hex digits in either case; stored lowercase so a comparison is exact.
    one(
        "APOP mrose C4C9334BAC560ECC979E58001B3E22FB\r\n",
        Verdict::Cmd(Command::Apop {
            name: "mrose".into(),
            digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
        }),
    );
    one("APOP mrose c4c9334bac\r\n", err(CommandError::Syntax));
    one(
        "APOP mrose c4c9334bac560ecc979e58001b3e22fg\r\n",
        err(CommandError::Syntax),
    );
    one("APOP mrose\r\n", err(CommandError::Syntax));
    one("QUIT\r\n", Verdict::Cmd(Command::Quit));
    one("QUIT now\r\n", err(CommandError::Syntax));
}

#[test]
fn pass_keeps_every_space() {
    one(
        "PASS  two  spaces \r\n",
        Verdict::Cmd(Command::Pass(b" two  spaces ".to_vec())),
    );
    one(
        "PASS correct horse battery staple\r\n",
        Verdict::Cmd(Command::Pass(b"correct horse battery staple".to_vec())),
    );
    one("pass x y\n", Verdict::Cmd(Command::Pass(b"x y".to_vec())));
    // UTF-8 passwords pass through as bytes.
    one(
        "PASS pässwörd\r\n",
        Verdict::Cmd(Command::Pass("pässwörd".as_bytes().to_vec())),
    );
}

#[test]
fn keywords_are_case_insensitive() {
    for kw in ["STAT", "stat", "Stat", "sTaT"] {
        one(&format!("{kw}\r\n"), Verdict::Cmd(Command::Stat));
    }
    one("retr 1\r\n", Verdict::Cmd(Command::Retr(n(1))));
    one(
        "Top 1 5\r\n",
        Verdict::Cmd(Command::Top {
            msg: n(1),
            lines: 5,
        }),
    );
    one("capa\r\n", Verdict::Cmd(Command::Capa));
    one("stls\r\n", Verdict::Cmd(Command::Stls));
    one("uTf8\r\n", Verdict::Cmd(Command::Utf8));
    // Arguments keep their case (user names are the store's business).
    one(
        "user Alice\r\n",
        Verdict::Cmd(Command::User("Alice".into())),
    );
}

#[test]
fn transaction_commands() {
    one("STAT\r\n", Verdict::Cmd(Command::Stat));
    one("STAT 1\r\n", err(CommandError::Syntax));
    one("LIST\r\n", Verdict::Cmd(Command::List(None)));
    one("LIST 2\r\n", Verdict::Cmd(Command::List(Some(n(2)))));
    one("LIST 1 2\r\n", err(CommandError::Syntax));
    one("RETR 1\r\n", Verdict::Cmd(Command::Retr(n(1))));
    one("DELE 3\r\n", Verdict::Cmd(Command::Dele(n(3))));
    one("DELE\r\n", err(CommandError::Syntax));
    one("NOOP\r\n", Verdict::Cmd(Command::Noop));
    one("NOOP x\r\n", err(CommandError::Syntax));
    one("RSET\r\n", Verdict::Cmd(Command::Rset));
    one(
        "TOP 1 0\r\n",
        Verdict::Cmd(Command::Top {
            msg: n(1),
            lines: 0,
        }),
    );
    one(
        "TOP 2 4294967295\r\n",
        Verdict::Cmd(Command::Top {
            msg: n(2),
            lines: u32::MAX,
        }),
    );
    one("TOP 1\r\n", err(CommandError::Syntax));
    one("TOP 1 2 3\r\n", err(CommandError::Syntax));
    one("TOP 0 1\r\n", err(CommandError::InvalidNumber));
    one("TOP 1 -1\r\n", err(CommandError::InvalidNumber));
    one("TOP 1 x\r\n", err(CommandError::InvalidNumber));
    // More lines than any message has: the whole message, not an error.
    one(
        "TOP 1 99999999999999999999\r\n",
        Verdict::Cmd(Command::Top {
            msg: n(1),
            lines: u32::MAX,
        }),
    );
    one("TOP 1 +5\r\n", err(CommandError::InvalidNumber));
    one("UIDL\r\n", Verdict::Cmd(Command::Uidl(None)));
    one("UIDL 7\r\n", Verdict::Cmd(Command::Uidl(Some(n(7)))));
    one("UIDL 0\r\n", err(CommandError::InvalidNumber));
}

#[test]
fn message_numbers_are_strict() {
    // PROTOCOL.md: these are errors, never message 1.
    for bad in [
        "RETR 0",
        "RETR -1",
        "RETR 99999999999999999999",
        "RETR 1x",
        "RETR +1",
        "RETR 0x1",
        "RETR 1.0",
        "RETR ١", // a non-ASCII digit
        "RETR 1000000000",
        "DELE 0",
        "LIST -1",
        "UIDL 1x",
    ] {
        one(&format!("{bad}\r\n"), err(CommandError::InvalidNumber));
    }
    one(
        "RETR 999999999\r\n",
        Verdict::Cmd(Command::Retr(n(999_999_999))),
    );
    one("RETR 01\r\n", Verdict::Cmd(Command::Retr(n(1))));
    assert_eq!(MsgNum::new(0), None);
    assert_eq!(MsgNum::new(MsgNum::MAX + 1), None);
    assert_eq!(n(3).index(), 2);
    assert_eq!(MsgNum::from_index(2), Some(n(3)));
}

#[test]
fn single_spaces_only() {
    one("RETR  1\r\n", err(CommandError::Syntax));
    one("TOP 1  2\r\n", err(CommandError::Syntax));
    one("USER  alice\r\n", err(CommandError::Syntax));
    one(" STAT\r\n", err(CommandError::Unknown));
    one("RETR\t1\r\n", err(CommandError::InvalidCharacter));
    // A trailing space is a harmless slip, accepted (but never trimmed from PASS).
    one("RETR 1 \r\n", Verdict::Cmd(Command::Retr(n(1))));
    one("STAT \r\n", Verdict::Cmd(Command::Stat));
}

#[test]
fn unknown_empty_and_control_characters() {
    one("\r\n", err(CommandError::Empty));
    one("\n", err(CommandError::Empty));
    one("XTND XMIT\r\n", err(CommandError::Unknown));
    one("LAST\r\n", err(CommandError::Unknown));
    one("NO\r\n", err(CommandError::Unknown));
    one("NOOPS\r\n", err(CommandError::Unknown));
    check(b"USER a\0b\r\n", &[err(CommandError::InvalidCharacter)]);
    check(b"USER a\rb\r\n", &[err(CommandError::InvalidCharacter)]);
    check(b"NOOP\r\r\n", &[err(CommandError::InvalidCharacter)]);
    check(b"USER \xff\xfe\r\n", &[err(CommandError::InvalidUtf8)]);
    assert_eq!(
        err(CommandError::Unknown),
        Verdict::Err("-ERR Unknown command\r\n".into())
    );
    assert_eq!(
        err(CommandError::InvalidNumber),
        Verdict::Err("-ERR Invalid message number\r\n".into())
    );
}

#[test]
fn extension_commands() {
    one("CAPA\r\n", Verdict::Cmd(Command::Capa));
    one("CAPA x\r\n", err(CommandError::Syntax));
    one("STLS\r\n", Verdict::Cmd(Command::Stls));
    one("STLS x\r\n", err(CommandError::Syntax));
    one(
        "AUTH\r\n",
        Verdict::Cmd(Command::Auth {
            mechanism: None,
            initial_response: None,
        }),
    );
    one(
        "AUTH plain\r\n",
        Verdict::Cmd(Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial_response: None,
        }),
    );
    one(
        "AUTH PLAIN AGFsaWNlAHB3\r\n",
        Verdict::Cmd(Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial_response: Some("AGFsaWNlAHB3".into()),
        }),
    );
    // "=" is an empty initial response (RFC 5034 §4); decoding is sasl.rs's job.
    one(
        "AUTH EXTERNAL =\r\n",
        Verdict::Cmd(Command::Auth {
            mechanism: Some("EXTERNAL".into()),
            initial_response: Some("=".into()),
        }),
    );
    one(
        "AUTH SCRAM-SHA-256\r\n",
        Verdict::Cmd(Command::Auth {
            mechanism: Some("SCRAM-SHA-256".into()),
            initial_response: None,
        }),
    );
    one("AUTH PL@IN\r\n", err(CommandError::Syntax));
    one(
        "AUTH ABCDEFGHIJKLMNOPQRSTU\r\n",
        err(CommandError::ArgumentTooLong),
    );
    one("AUTH PLAIN a b\r\n", err(CommandError::Syntax));
    one("UTF8\r\n", Verdict::Cmd(Command::Utf8));
    one("UTF8 x\r\n", err(CommandError::Syntax));
    one("LANG\r\n", Verdict::Cmd(Command::Lang(None)));
    one(
        "LANG fr\r\n",
        Verdict::Cmd(Command::Lang(Some("fr".into()))),
    );
    one("LANG *\r\n", Verdict::Cmd(Command::Lang(Some("*".into()))));
    one("LANG en fr\r\n", err(CommandError::Syntax));
    one(
        &format!("LANG {}\r\n", "x".repeat(41)),
        err(CommandError::ArgumentTooLong),
    );
}

#[test]
fn long_user_names_fit_the_line_limit() {
    // RFC 2449 §4 replaced RFC 1939's 40-octet argument with the 255-octet line.
    let name = format!("{}@example.org", "first.last".repeat(5));
    one(
        &format!("USER {name}\r\n"),
        Verdict::Cmd(Command::User(name.clone())),
    );
}

#[test]
fn bare_lf_line_ends() {
    check(
        b"USER alice\nPASS pw\nSTAT\n",
        &[
            Verdict::Cmd(Command::User("alice".into())),
            Verdict::Cmd(Command::Pass(b"pw".to_vec())),
            Verdict::Cmd(Command::Stat),
        ],
    );
}

#[test]
fn command_line_limit_is_255_octets_with_crlf() {
    // "USER " + 248 + CRLF = 255: allowed.
    let fits = format!("USER {}\r\n", "a".repeat(248));
    assert_eq!(fits.len(), 255);
    one(&fits, Verdict::Cmd(Command::User("a".repeat(248))));
    // One more octet: refused, and the session goes on with the next command.
    let over = format!("USER {}\r\n", "a".repeat(249));
    check(
        format!("{over}NOOP\r\n").as_bytes(),
        &[Verdict::TooLong, Verdict::Cmd(Command::Noop)],
    );
    // With a bare LF the line end is one octet: 254 + LF fits.
    let lf = format!("USER {}\n", "b".repeat(249));
    assert_eq!(lf.len(), 255);
    one(&lf, Verdict::Cmd(Command::User("b".repeat(249))));
    // A PASS line is bounded by the same limit.
    let pass = format!("PASS {}\r\n", "p".repeat(300));
    check(
        format!("{pass}QUIT\r\n").as_bytes(),
        &[Verdict::TooLong, Verdict::Cmd(Command::Quit)],
    );
}

#[test]
fn endless_line_never_grows_the_buffer() {
    let mut framer = LineFramer::new(MAX_COMMAND_LINE);
    let junk = [b'x'; 4096];
    let mut too_long = 0;
    for _ in 0..256 {
        framer.push(&junk);
        while let Some(line) = framer.next_line() {
            assert_eq!(line, Line::TooLong);
            too_long += 1;
        }
        assert!(framer.buffered().len() <= MAX_COMMAND_LINE);
    }
    assert_eq!(too_long, 1, "one report per overlong line");
    framer.push(b"\r\nNOOP\r\n");
    assert_eq!(framer.next_line(), Some(Line::Complete(b"NOOP")));
    assert_eq!(framer.next_line(), None);
}

#[test]
fn pipelined_commands_keep_their_order() {
    let script = b"USER alice\r\nPASS pw\r\nSTAT\r\nLIST\r\nUIDL 1\r\nRETR 1\r\nTOP 2 10\r\nDELE 1\r\nRSET\r\nNOOP\r\nQUIT\r\n";
    check(
        script,
        &[
            Verdict::Cmd(Command::User("alice".into())),
            Verdict::Cmd(Command::Pass(b"pw".to_vec())),
            Verdict::Cmd(Command::Stat),
            Verdict::Cmd(Command::List(None)),
            Verdict::Cmd(Command::Uidl(Some(n(1)))),
            Verdict::Cmd(Command::Retr(n(1))),
            Verdict::Cmd(Command::Top {
                msg: n(2),
                lines: 10,
            }),
            Verdict::Cmd(Command::Dele(n(1))),
            Verdict::Cmd(Command::Rset),
            Verdict::Cmd(Command::Noop),
            Verdict::Cmd(Command::Quit),
        ],
    );
}

/// RFC 2595 §4 / PROTOCOL.md: bytes sent after STLS in the same cleartext packet are
/// thrown away, never read as commands under TLS. The server's driver calls
/// `framer.clear()` when it sees STLS and reads nothing more in cleartext.
#[test]
fn stls_discards_pipelined_cleartext() {
    let script = b"STLS\r\nCAPA\r\n";
    for chunk in 1..=512 {
        let mut framer = LineFramer::new(MAX_COMMAND_LINE);
        let mut seen = Vec::new();
        'conn: for piece in script.chunks(chunk) {
            framer.push(piece);
            while let Some(line) = framer.next_line() {
                let Line::Complete(l) = line else {
                    panic!("no overlong line here")
                };
                let cmd = Command::parse(l).unwrap();
                seen.push(cmd.clone());
                if cmd == Command::Stls {
                    framer.clear();
                    assert_eq!(framer.buffered(), b"");
                    assert_eq!(framer.next_line(), None);
                    break 'conn;
                }
            }
        }
        assert_eq!(seen, vec![Command::Stls], "chunk {chunk}");
    }
    // Both in one packet: CAPA was buffered, and clear() throws it away.
    let mut framer = LineFramer::new(MAX_COMMAND_LINE);
    framer.push(script);
    assert_eq!(framer.next_line(), Some(Line::Complete(b"STLS")));
    assert_eq!(framer.buffered(), b"CAPA\r\n");
    framer.clear();
    assert_eq!(framer.next_line(), None);
    // After the handshake, a new command works normally.
    framer.push(b"CAPA\r\n");
    assert_eq!(framer.next_line(), Some(Line::Complete(b"CAPA")));
}

/// The client side: the exact bytes each command puts on the wire.
#[test]
fn client_serialisation() {
    let cases: Vec<(Command, &[u8])> = vec![
        (Command::User("alice".into()), b"USER alice\r\n"),
        (Command::Pass(b" a  b ".to_vec()), b"PASS  a  b \r\n"),
        (
            Command::Apop {
                name: "mrose".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
            },
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
        ),
        (Command::Stat, b"STAT\r\n"),
        (Command::List(None), b"LIST\r\n"),
        (Command::List(Some(n(12))), b"LIST 12\r\n"),
        (Command::Retr(n(1)), b"RETR 1\r\n"),
        (Command::Dele(n(999_999_999)), b"DELE 999999999\r\n"),
        (Command::Noop, b"NOOP\r\n"),
        (Command::Rset, b"RSET\r\n"),
        (Command::Quit, b"QUIT\r\n"),
        (
            Command::Top {
                msg: n(3),
                lines: 0,
            },
            b"TOP 3 0\r\n",
        ),
        (Command::Uidl(None), b"UIDL\r\n"),
        (Command::Uidl(Some(n(4))), b"UIDL 4\r\n"),
        (Command::Capa, b"CAPA\r\n"),
        (Command::Stls, b"STLS\r\n"),
        (
            Command::Auth {
                mechanism: None,
                initial_response: None,
            },
            b"AUTH\r\n",
        ),
        (
            Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some("=".into()),
            },
            b"AUTH PLAIN =\r\n",
        ),
        (
            Command::Auth {
                mechanism: Some("XOAUTH2".into()),
                initial_response: None,
            },
            b"AUTH XOAUTH2\r\n",
        ),
        (Command::Utf8, b"UTF8\r\n"),
        (Command::Lang(None), b"LANG\r\n"),
        (Command::Lang(Some("de".into())), b"LANG de\r\n"),
    ];
    for (cmd, wire) in cases {
        assert_eq!(cmd.to_wire(), wire, "{cmd:?}");
        let mut out = b"prefix".to_vec();
        cmd.write_to(&mut out);
        assert_eq!(&out[6..], wire);
        // What the client sends, the server reads back as the same command.
        assert_eq!(
            run(wire, wire.len()),
            vec![Verdict::Cmd(cmd.clone())],
            "{cmd:?}"
        );
        assert_eq!(cmd.validate(), Ok(()));
        assert_eq!(
            cmd.keyword().as_bytes(),
            &wire[..cmd.keyword().len()],
            "{cmd:?}"
        );
    }
}

#[test]
fn client_never_writes_two_lines() {
    let evil = Command::User("alice\r\nDELE 1".into());
    assert_eq!(evil.to_wire(), b"USER alice  DELE 1\r\n");
    assert_eq!(evil.validate(), Err(CommandError::InvalidCharacter));
    let evil = Command::Pass(b"pw\nQUIT".to_vec());
    assert_eq!(evil.to_wire(), b"PASS pw QUIT\r\n");
    assert_eq!(evil.validate(), Err(CommandError::InvalidCharacter));
    assert_eq!(
        Command::User("a b".into()).validate(),
        Err(CommandError::Syntax)
    );
    assert_eq!(
        Command::Pass(vec![b'p'; 300]).validate(),
        Err(CommandError::ArgumentTooLong)
    );
    assert_eq!(
        Command::Auth {
            mechanism: Some("plain".into()),
            initial_response: None
        }
        .validate(),
        Err(CommandError::Syntax),
        "mechanism names are upper-case in the model"
    );
}

#[test]
fn multiline_expectations() {
    let multi = [
        Command::List(None),
        Command::Uidl(None),
        Command::Retr(n(1)),
        Command::Top {
            msg: n(1),
            lines: 0,
        },
        Command::Capa,
        Command::Lang(None),
        Command::Auth {
            mechanism: None,
            initial_response: None,
        },
    ];
    for c in &multi {
        assert!(c.expects_multiline(), "{c:?}");
    }
    let single = [
        Command::List(Some(n(1))),
        Command::Uidl(Some(n(1))),
        Command::Stat,
        Command::Dele(n(1)),
        Command::Noop,
        Command::Rset,
        Command::Quit,
        Command::Stls,
        Command::Utf8,
        Command::Lang(Some("en".into())),
        Command::User("a".into()),
        Command::Pass(b"p".to_vec()),
        Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial_response: None,
        },
    ];
    for c in &single {
        assert!(!c.expects_multiline(), "{c:?}");
    }
}

#[test]
fn secrets_never_reach_debug_output() {
    let pass = format!("{:?}", Command::Pass(b"hunter2".to_vec()));
    assert!(!pass.contains("hunter2"), "{pass}");
    let auth = format!(
        "{:?}",
        Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial_response: Some("AGFsaWNlAGh1bnRlcjI=".into()),
        }
    );
    assert!(!auth.contains("AGFsaWNlAGh1bnRlcjI="), "{auth}");
    let apop = format!(
        "{:?}",
        Command::Apop {
            name: "mrose".into(),
            digest: "c4c9334bac560ecc979e58001b3e22fb".into()
        }
    );
    assert!(!apop.contains("c4c9334b"), "{apop}");
}
