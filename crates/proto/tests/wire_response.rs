//! Responses at the wire: the exact bytes the server writes (status lines, response
//! codes, multi-line listings, the CAPA body, SASL challenges) and what the client
//! makes of exact server bytes, fed through a client-side [`LineFramer`] in every chunk
//! size from 1 to 512.
//!
//! PROTOCOL.md: `+OK`/`-ERR` first lines of at most 512 octets with CRLF; RFC 2449/3206
//! response codes; multi-line bodies ending in `.` CRLF with byte-stuffing; CAPA tags;
//! RFC 5034 `+ ` challenges, base64, `*` cancels.

use correio_proto::capa::{Expire, ExpirePolicy, LoginDelay, Utf8Capa};
use correio_proto::response::{ResponseError, ServerLine, write_multiline};
use correio_proto::sasl::{self, SaslError, SaslResponse};
use correio_proto::{
    Capabilities, DotUnstuffer, Line, LineEnding, LineFramer, MAX_STATUS_LINE, RespCode, Status,
    StatusLine,
};

/// What the client makes of one server line.
type Parsed = Result<ServerLine, ResponseError>;

/// Feeds server bytes to a client-side framer (status-line limit) in `chunk`-byte
/// pieces and parses every line.
fn client_lines(wire: &[u8], chunk: usize) -> Vec<Option<Parsed>> {
    let mut framer = LineFramer::new(MAX_STATUS_LINE);
    let mut out = Vec::new();
    for piece in wire.chunks(chunk) {
        framer.push(piece);
        while let Some(line) = framer.next_line() {
            out.push(match line {
                Line::Complete(l) => Some(ServerLine::parse(l)),
                Line::TooLong => None,
            });
        }
    }
    out
}

fn check_client(wire: &[u8], expected: &[Option<Parsed>]) {
    for chunk in 1..=512 {
        assert_eq!(
            client_lines(wire, chunk),
            expected,
            "{:?} in chunks of {chunk}",
            String::from_utf8_lossy(wire)
        );
    }
}

fn status(s: StatusLine) -> Option<Parsed> {
    Some(Ok(ServerLine::Status(s)))
}

fn with_code(status: Status, code: RespCode, text: &str) -> StatusLine {
    StatusLine {
        status,
        code: Some(code),
        text: text.into(),
    }
}

#[test]
fn server_status_lines() {
    let apop_greeting = StatusLine::ok("POP3 server ready <1896.697170952@dbc.mtview.ca.us>");
    assert_eq!(
        apop_greeting.to_wire(),
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    );
    assert_eq!(StatusLine::ok("").to_wire(), b"+OK\r\n");
    assert_eq!(StatusLine::err("").to_wire(), b"-ERR\r\n");
    assert_eq!(StatusLine::ok("2 320").to_wire(), b"+OK 2 320\r\n");
    assert_eq!(
        StatusLine::err("no such message").to_wire(),
        b"-ERR no such message\r\n"
    );
    let mut out = b"before".to_vec();
    StatusLine::ok("x").write_to(&mut out);
    assert_eq!(out, b"before+OK x\r\n");
}

#[test]
fn response_codes_on_the_wire() {
    let cases: [(RespCode, &[u8]); 6] = [
        (
            RespCode::InUse,
            b"-ERR [IN-USE] maildrop already locked\r\n",
        ),
        (
            RespCode::LoginDelay,
            b"-ERR [LOGIN-DELAY] maildrop already locked\r\n",
        ),
        (
            RespCode::SysTemp,
            b"-ERR [SYS/TEMP] maildrop already locked\r\n",
        ),
        (
            RespCode::SysPerm,
            b"-ERR [SYS/PERM] maildrop already locked\r\n",
        ),
        (RespCode::Auth, b"-ERR [AUTH] maildrop already locked\r\n"),
        (
            RespCode::Other("AUTH/EXPIRED".into()),
            b"-ERR [AUTH/EXPIRED] maildrop already locked\r\n",
        ),
    ];
    for (code, wire) in cases {
        let line = StatusLine::err_code(code.clone(), "maildrop already locked");
        assert_eq!(line.to_wire(), wire);
        // And the client reads the same code back.
        let body = &wire[..wire.len() - 2];
        assert_eq!(ServerLine::parse(body), Ok(ServerLine::Status(line)));
    }
    assert_eq!(
        StatusLine::err_code(RespCode::SysTemp, "").to_wire(),
        b"-ERR [SYS/TEMP]\r\n"
    );
    assert_eq!(
        with_code(Status::Ok, RespCode::Utf8, "UTF8 enabled").to_wire(),
        b"+OK [UTF8] UTF8 enabled\r\n"
    );
}

#[test]
fn status_line_never_passes_512_octets() {
    let line = StatusLine::err("x".repeat(600)).to_wire();
    assert_eq!(line.len(), MAX_STATUS_LINE);
    assert_eq!(&line[..5], b"-ERR ");
    assert!(line.ends_with(b"x\r\n"));
    // Exactly at the limit: nothing cut.
    let text = "y".repeat(MAX_STATUS_LINE - "+OK ".len() - 2);
    let line = StatusLine::ok(text.clone()).to_wire();
    assert_eq!(line.len(), MAX_STATUS_LINE);
    assert_eq!(line, format!("+OK {text}\r\n").into_bytes());
    // A code counts too, and a cut never splits a UTF-8 character.
    let line = StatusLine::err_code(RespCode::SysTemp, "é".repeat(400)).to_wire();
    assert!(line.len() <= MAX_STATUS_LINE && line.len() >= MAX_STATUS_LINE - 1);
    assert!(std::str::from_utf8(&line).is_ok());
    assert!(line.starts_with(b"-ERR [SYS/TEMP] \xc3\xa9"));
    // Text can never end the line early.
    assert_eq!(
        StatusLine::err("bad\r\n+OK fake").to_wire(),
        b"-ERR bad  +OK fake\r\n"
    );
}

#[test]
fn client_parses_server_lines_in_any_chunking() {
    let wire = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n\
+OK 2 320\r\n\
-ERR [IN-USE] locked by another session\r\n\
-ERR [LOGIN-DELAY] wait 15 minutes\r\n\
-ERR [SYS/TEMP] try later\r\n\
-ERR [SYS/PERM] gone\r\n\
-ERR [AUTH] invalid credentials\r\n\
+ PDE4OTYuNjk3MTcwOTUyQGRiYy5tdHZpZXcuY2EudXM+\r\n\
+ \r\n\
+\r\n\
+ok lower case\n\
-ERR\r\n\
+OKAY\r\n\
* OK imap\r\n\
-ERR [IN-USE\r\n";
    check_client(
        wire,
        &[
            status(StatusLine::ok(
                "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
            )),
            status(StatusLine::ok("2 320")),
            status(StatusLine::err_code(
                RespCode::InUse,
                "locked by another session",
            )),
            status(StatusLine::err_code(
                RespCode::LoginDelay,
                "wait 15 minutes",
            )),
            status(StatusLine::err_code(RespCode::SysTemp, "try later")),
            status(StatusLine::err_code(RespCode::SysPerm, "gone")),
            status(StatusLine::err_code(RespCode::Auth, "invalid credentials")),
            Some(Ok(ServerLine::Continuation(
                "PDE4OTYuNjk3MTcwOTUyQGRiYy5tdHZpZXcuY2EudXM+".into(),
            ))),
            Some(Ok(ServerLine::Continuation(String::new()))),
            Some(Ok(ServerLine::Continuation(String::new()))),
            status(StatusLine::ok("lower case")),
            status(StatusLine::err("")),
            Some(Err(ResponseError::BadStatus)),
            Some(Err(ResponseError::BadStatus)),
            // Not a well-formed code: kept as text, the -ERR still counts.
            status(StatusLine::err("[IN-USE")),
        ],
    );
}

#[test]
fn response_codes_are_case_insensitive_and_unknown_ones_kept() {
    assert_eq!(
        ServerLine::parse(b"-ERR [in-use] busy"),
        Ok(ServerLine::Status(StatusLine::err_code(
            RespCode::InUse,
            "busy"
        )))
    );
    assert_eq!(
        ServerLine::parse(b"-ERR [X-VENDOR/THING] hm"),
        Ok(ServerLine::Status(StatusLine::err_code(
            RespCode::Other("X-VENDOR/THING".into()),
            "hm"
        )))
    );
    // A bracket holding text with spaces is text, not a code.
    assert_eq!(
        ServerLine::parse(b"+OK [2 messages] ready"),
        Ok(ServerLine::Status(StatusLine::ok("[2 messages] ready")))
    );
    assert_eq!(
        ServerLine::parse(b"-ERR [SYS//TEMP] x"),
        Ok(ServerLine::Status(StatusLine::err("[SYS//TEMP] x")))
    );
}

#[test]
fn client_framer_bounds_server_lines() {
    let long = format!("+OK {}\r\n+OK short\r\n", "z".repeat(600));
    check_client(long.as_bytes(), &[None, status(StatusLine::ok("short"))]);
}

#[test]
fn multi_line_listings() {
    let mut out = Vec::new();
    let lines: [&[u8]; 2] = [b"1 120", b"2 200"];
    write_multiline(&StatusLine::ok("2 messages (320 octets)"), lines, &mut out);
    assert_eq!(
        out,
        b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    );

    // An empty listing is the status line and the terminator.
    out.clear();
    write_multiline(&StatusLine::ok("0 messages"), std::iter::empty(), &mut out);
    assert_eq!(out, b"+OK 0 messages\r\n.\r\n");

    // A body line that starts with "." is stuffed.
    out.clear();
    let lines: [&[u8]; 2] = [b".hidden", b"."];
    write_multiline(&StatusLine::ok("x"), lines, &mut out);
    assert_eq!(out, b"+OK x\r\n..hidden\r\n..\r\n.\r\n");

    // The client gets the lines back through the unstuffer in any chunking.
    let body = &out[b"+OK x\r\n".len()..];
    for chunk in 1..=512 {
        let mut u = DotUnstuffer::new(LineEnding::Crlf);
        let mut got = Vec::new();
        for piece in body.chunks(chunk) {
            u.feed(piece, &mut got);
        }
        assert!(u.is_done());
        assert_eq!(got, b".hidden\r\n.\r\n");
    }
}

fn full_capabilities() -> Capabilities {
    Capabilities {
        top: true,
        user: true,
        sasl: vec!["PLAIN".into(), "SCRAM-SHA-256".into()],
        resp_codes: true,
        login_delay: Some(LoginDelay {
            seconds: 900,
            per_user: false,
        }),
        pipelining: true,
        expire: Some(Expire {
            policy: ExpirePolicy::Days(31),
            per_user: true,
        }),
        uidl: true,
        implementation: Some("Correio".into()),
        stls: true,
        auth_resp_code: true,
        utf8: Some(Utf8Capa { user: false }),
        lang: true,
        other: vec![],
    }
}

const FULL_CAPA: &[u8] = b"+OK Capability list follows\r\n\
STLS\r\n\
USER\r\n\
SASL PLAIN SCRAM-SHA-256\r\n\
TOP\r\n\
UIDL\r\n\
RESP-CODES\r\n\
AUTH-RESP-CODE\r\n\
PIPELINING\r\n\
LOGIN-DELAY 900\r\n\
EXPIRE 31 USER\r\n\
UTF8\r\n\
LANG\r\n\
IMPLEMENTATION Correio\r\n\
.\r\n";

#[test]
fn capa_response_on_the_wire() {
    let mut out = Vec::new();
    full_capabilities().write_response(&mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(FULL_CAPA)
    );
    let mut body = Vec::new();
    full_capabilities().write_body(&mut body);
    assert_eq!(body, &FULL_CAPA[b"+OK Capability list follows\r\n".len()..]);

    // Nothing offered but the mandatory minimum of a cleartext session after login.
    let mut out = Vec::new();
    Capabilities {
        top: true,
        uidl: true,
        expire: Some(Expire {
            policy: ExpirePolicy::Never,
            per_user: false,
        }),
        login_delay: Some(LoginDelay {
            seconds: 0,
            per_user: true,
        }),
        utf8: Some(Utf8Capa { user: true }),
        ..Capabilities::new()
    }
    .write_body(&mut out);
    assert_eq!(
        out,
        b"TOP\r\nUIDL\r\nLOGIN-DELAY 0 USER\r\nEXPIRE NEVER\r\nUTF8 USER\r\n.\r\n"
    );

    // Free text and unknown tags can never break the body.
    let mut out = Vec::new();
    Capabilities {
        implementation: Some("Evil\r\n.\r\nUSER".into()),
        other: vec!["X-TAG a".into(), ".DOT".into(), "  ".into()],
        ..Capabilities::new()
    }
    .write_body(&mut out);
    assert_eq!(out, b"IMPLEMENTATION Evil.USER\r\nX-TAG a\r\n.\r\n");
}

#[test]
fn client_parses_capa_in_any_chunking() {
    let body = &FULL_CAPA[b"+OK Capability list follows\r\n".len()..];
    let mut wire = body.to_vec();
    wire.extend_from_slice(b"+OK next\r\n");
    for chunk in 1..=512 {
        let mut u = DotUnstuffer::new(LineEnding::Crlf);
        let mut got = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(chunk) {
            used += u.feed(piece, &mut got);
            if u.is_done() {
                break;
            }
        }
        assert_eq!(used, body.len());
        assert_eq!(Capabilities::parse_body(&got), Ok(full_capabilities()));
    }
    // Real-world shapes: lower case, LF only, extra spaces, unknown and vendor tags.
    let caps = Capabilities::parse_body(
        b"capa\ntop\nuidl\nsasl  PLAIN login\nXOAUTH\nx-foo bar baz\nstls\nutf8 user\nexpire never\n",
    )
    .unwrap();
    assert!(caps.top && caps.uidl && caps.stls);
    assert_eq!(caps.sasl, vec!["PLAIN".to_string(), "LOGIN".to_string()]);
    assert_eq!(caps.utf8, Some(Utf8Capa { user: true }));
    assert_eq!(
        caps.expire,
        Some(Expire {
            policy: ExpirePolicy::Never,
            per_user: false
        })
    );
    assert_eq!(caps.other, vec!["capa", "XOAUTH", "x-foo bar baz"]);
    assert!(caps.has_other("XOAUTH") && caps.has_sasl("login"));
    assert!(!caps.user && !caps.pipelining);
}

#[test]
fn sasl_exchange_server_side() {
    // S: + <challenge>    C: <response>    (RFC 5034 §4)
    let mut out = Vec::new();
    sasl::encode_challenge(b"", &mut out);
    assert_eq!(out, b"+ \r\n");
    out.clear();
    sasl::encode_challenge(b"<1896.697170952@postoffice.example.net>", &mut out);
    assert_eq!(
        out,
        b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UuZXhhbXBsZS5uZXQ+\r\n"
    );

    // Client response lines as the server framer yields them (without CRLF).
    let script = b"dGVzdAB0ZXN0AHRlc3Q=\r\n\r\n*\r\n=\r\nnot base64!\r\ndGVzdA\r\n";
    let expected = [
        Ok(SaslResponse::Data(b"test\0test\0test".to_vec())),
        Ok(SaslResponse::Data(Vec::new())),
        Ok(SaslResponse::Cancel),
        Ok(SaslResponse::Data(Vec::new())),
        Err(SaslError::InvalidBase64),
        Ok(SaslResponse::Data(b"test".to_vec())),
    ];
    for chunk in 1..=512 {
        let mut framer = LineFramer::new(sasl::MAX_SASL_LINE + 2);
        let mut got = Vec::new();
        for piece in script.chunks(chunk) {
            framer.push(piece);
            while let Some(Line::Complete(l)) = framer.next_line() {
                got.push(sasl::decode_response(l));
            }
        }
        assert_eq!(got, expected, "chunk {chunk}");
    }
    assert_eq!(
        SaslError::InvalidBase64.wire_text(),
        "Invalid base64 data in SASL response"
    );

    // The initial response from the AUTH line.
    assert_eq!(sasl::decode_initial_response("="), Ok(Vec::new()));
    assert_eq!(
        sasl::decode_initial_response("AGFsaWNlAHB3"),
        Ok(b"\0alice\0pw".to_vec())
    );
    assert_eq!(
        sasl::decode_initial_response("AGFsaWNlAHB3==="),
        Err(SaslError::InvalidBase64)
    );

    // Bounded: a response longer than the limit is refused before decoding.
    let big = vec![b'A'; sasl::MAX_SASL_LINE + 4];
    assert_eq!(sasl::decode_response(&big), Err(SaslError::TooLong));
    let fits = vec![b'A'; sasl::MAX_SASL_LINE];
    assert_eq!(
        sasl::decode_response(&fits)
            .map(|r| matches!(r, SaslResponse::Data(d) if d.len() == sasl::MAX_SASL_PAYLOAD)),
        Ok(true)
    );
}

#[test]
fn sasl_exchange_client_side() {
    let mut out = Vec::new();
    sasl::encode_response(b"test\0test\0test", &mut out);
    sasl::encode_response(b"", &mut out);
    sasl::encode_cancel(&mut out);
    assert_eq!(out, b"dGVzdAB0ZXN0AHRlc3Q=\r\n\r\n*\r\n");
    assert_eq!(sasl::encode_initial_response(b""), "=");
    assert_eq!(sasl::encode_initial_response(b"\0a\0b"), "AGEAYg==");

    // Challenges as the server sends them, through the client framer.
    let wire = b"+ PDEyMz4=\r\n+ \r\n+\r\n+OK done\r\n";
    let expected = [
        Ok(b"<123>".to_vec()),
        Ok(Vec::new()),
        Ok(Vec::new()),
        Err(SaslError::NotAChallenge),
    ];
    for chunk in 1..=512 {
        let mut framer = LineFramer::new(sasl::MAX_SASL_LINE + 2);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            framer.push(piece);
            while let Some(Line::Complete(l)) = framer.next_line() {
                got.push(sasl::decode_challenge(l));
            }
        }
        assert_eq!(got, expected, "chunk {chunk}");
    }
    // The same payload through ServerLine.
    let Ok(ServerLine::Continuation(p)) = ServerLine::parse(b"+ PDEyMz4=") else {
        panic!("a continuation")
    };
    assert_eq!(
        sasl::decode_challenge_payload(p.as_bytes()),
        Ok(b"<123>".to_vec())
    );

    // The AUTH line must fit 255 octets, or the initial response is left out.
    assert!(sasl::initial_response_fits("PLAIN", &[b'x'; 180]));
    assert!(!sasl::initial_response_fits("PLAIN", &[b'x'; 183]));
    assert!(sasl::initial_response_fits("EXTERNAL", b""));
}

#[test]
fn secrets_never_reach_debug_output() {
    let r = format!("{:?}", SaslResponse::Data(b"hunter2".to_vec()));
    assert!(!r.contains("hunter2"), "{r}");
}
