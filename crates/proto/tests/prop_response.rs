//! Property tests of status lines: whatever text and code the server puts in, the line
//! on the wire is one line of at most 512 octets that the client parses back to the
//! same status, code and (when nothing had to be cut) text.

use correio_proto::response::ServerLine;
use correio_proto::{MAX_STATUS_LINE, RespCode, Status, StatusLine};
use proptest::prelude::*;

fn code() -> impl Strategy<Value = Option<RespCode>> {
    proptest::option::of(prop_oneof![
        Just(RespCode::InUse),
        Just(RespCode::LoginDelay),
        Just(RespCode::SysTemp),
        Just(RespCode::SysPerm),
        Just(RespCode::Auth),
        Just(RespCode::Utf8),
        "[A-Z]{1,10}(/[A-Z]{1,10}){0,2}".prop_map(RespCode::Other),
        "[!-~]{300,600}".prop_map(RespCode::Other),
        ".{0,20}".prop_map(RespCode::Other),
    ])
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        ".{0,40}",
        "[a-z\r\n ]{0,40}",
        "[é€𝄞x]{100,300}",
        "[ -~]{400,700}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn status_lines_are_one_bounded_line(
        ok in any::<bool>(), code in code(), text in text()
    ) {
        let status = if ok { Status::Ok } else { Status::Err };
        let line = StatusLine { status, code: code.clone(), text: text.clone() };
        let wire = line.to_wire();
        prop_assert!(wire.len() <= MAX_STATUS_LINE);
        prop_assert!(wire.ends_with(b"\r\n"));
        let body = &wire[..wire.len() - 2];
        prop_assert!(!body.contains(&b'\r') && !body.contains(&b'\n'));
        prop_assert!(std::str::from_utf8(body).is_ok());

        let Ok(ServerLine::Status(back)) = ServerLine::parse(body) else {
            panic!("our own line parses: {:?}", String::from_utf8_lossy(body));
        };
        prop_assert_eq!(back.status, status);
        // A code is written whole or not at all. (Without a code, text that itself
        // starts with "[CODE]" reads as one: POP3 has no escape for that, so servers
        // must not start free text with a bracket.)
        // The same holds when the given code was left out (malformed or too long).
        let head = if ok { "+OK [" } else { "-ERR [" };
        let code_written = code
            .as_ref()
            .is_some_and(|c| body.starts_with(format!("{head}{}] ", c.as_str()).as_bytes())
                || body == format!("{head}{}]", c.as_str()).as_bytes());
        // Codes compare by their text: a generated Other("AUTH") reads back as Auth.
        let upper = |c: Option<&RespCode>| c.map(|c| c.as_str().to_ascii_uppercase());
        if code_written {
            prop_assert_eq!(upper(back.code.as_ref()), upper(code.as_ref()));
        } else if back.code.is_some() && !text.starts_with('[') {
            prop_assert_eq!(upper(back.code.as_ref()), upper(code.as_ref()));
        }
        let clean = !text.contains(['\r', '\n']) && !text.starts_with(' ') && !text.starts_with('[');
        let written_code = back.code.is_some() == code.is_some();
        if clean && written_code && wire.len() < MAX_STATUS_LINE - 4 {
            prop_assert_eq!(back.text, text);
        }
    }
}
