//! The IMAP4rev1 (RFC 3501) response reader the APPEND destination needs: tagged
//! status lines with their response codes (APPENDUID, TRYCREATE, CAPABILITY),
//! untagged CAPABILITY/OK/BYE, continuation requests. Anything else untagged is kept
//! as text and ignored by the caller.
//!
//! Bounded: a response line (literals included, which are skipped, not kept) is at
//! most [`MAX_LINE`] bytes of text, a literal inside an untagged response at most
//! [`MAX_LITERAL`] bytes; more is an error, never unbounded memory. The parser is
//! fuzzed (`fuzz/fuzz_targets/client_imap_response.rs`).

use std::io::{self, BufRead, Read};

/// Most bytes of one response's text (without skipped literals).
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal skipped inside a response (we never FETCH, so literals are rare).
pub const MAX_LITERAL: u64 = 1 << 20;

/// A status condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// OK
    Ok,
    /// NO
    No,
    /// BAD
    Bad,
    /// PREAUTH (greeting only)
    Preauth,
    /// BYE
    Bye,
}

/// A response code (the bracketed part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// `[APPENDUID uidvalidity uid-set]` (RFC 4315).
    AppendUid {
        /// The folder's UIDVALIDITY.
        uidvalidity: u32,
        /// The UID (or UID set, for MULTIAPPEND) given to the message(s).
        uids: String,
    },
    /// `[TRYCREATE]`: the folder does not exist.
    TryCreate,
    /// `[CAPABILITY …]`.
    Capability(Vec<String>),
    /// `[ALERT]`.
    Alert,
    /// Any other code, as text.
    Other(String),
}

/// One server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ text`
    Continue(String),
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text`
    UntaggedStatus {
        /// The condition.
        status: Status,
        /// The code.
        code: Option<Code>,
        /// The text.
        text: String,
    },
    /// `* CAPABILITY …`
    Capability(Vec<String>),
    /// Any other untagged response (text, literals removed).
    Untagged(String),
    /// `TAG OK|NO|BAD [code] text`
    Tagged {
        /// The tag.
        tag: String,
        /// The condition.
        status: Status,
        /// The code.
        code: Option<Code>,
        /// The text.
        text: String,
    },
}

fn invalid(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// If `line` (without CRLF) ends with a literal announcement `{N}` (or `{N+}`),
/// returns N.
fn trailing_literal(line: &[u8]) -> Option<Result<u64, ()>> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Some(Err(()));
    }
    Some(
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(()),
    )
}

/// Reads one whole response (following literals, which are skipped) and parses it.
pub fn read_response<R: BufRead>(r: &mut R) -> io::Result<Response> {
    let mut text: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let room = MAX_LINE.saturating_sub(text.len()) + 2;
        let n = r.by_ref().take(room as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the IMAP server closed the connection",
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(invalid(format!(
                "IMAP response longer than {MAX_LINE} bytes"
            )));
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        text.extend_from_slice(&line);
        match trailing_literal(&line) {
            None => break,
            Some(Err(())) => return Err(invalid("bad literal size in IMAP response")),
            Some(Ok(size)) => {
                if size > MAX_LITERAL {
                    return Err(invalid(format!(
                        "IMAP literal of {size} bytes (more than {MAX_LITERAL})"
                    )));
                }
                let skipped = io::copy(&mut r.by_ref().take(size), &mut io::sink())?;
                if skipped < size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the IMAP server closed the connection inside a literal",
                    ));
                }
            }
        }
    }
    parse(&text)
}

fn word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((w, rest)) => (w, rest),
        None => (s, ""),
    }
}

fn status(w: &str) -> Option<Status> {
    Some(match w.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        "PREAUTH" => Status::Preauth,
        "BYE" => Status::Bye,
        _ => return None,
    })
}

fn caps(s: &str) -> Vec<String> {
    s.split_ascii_whitespace()
        .take(512)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `[code] text` → (code, text).
fn resp_text(s: &str) -> (Option<Code>, String) {
    let Some(rest) = s.strip_prefix('[') else {
        return (None, s.to_owned());
    };
    let Some((inner, text)) = rest.split_once(']') else {
        return (None, s.to_owned());
    };
    let (name, args) = word(inner);
    let code = match name.to_ascii_uppercase().as_str() {
        "APPENDUID" => {
            let (v, uids) = word(args);
            match v.parse::<u32>() {
                Ok(uidvalidity)
                    if !uids.is_empty()
                        && uids
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b == b':' || b == b',') =>
                {
                    Code::AppendUid {
                        uidvalidity,
                        uids: uids.to_owned(),
                    }
                }
                _ => Code::Other(inner.to_owned()),
            }
        }
        "TRYCREATE" => Code::TryCreate,
        "CAPABILITY" => Code::Capability(caps(args)),
        "ALERT" => Code::Alert,
        _ => Code::Other(inner.to_owned()),
    };
    (Some(code), text.trim_start().to_owned())
}

/// Parses one response's text (no CRLF; literals already removed).
pub fn parse(line: &[u8]) -> io::Result<Response> {
    let s = String::from_utf8_lossy(line);
    let s = s.as_ref();
    if let Some(rest) = s.strip_prefix('+') {
        return Ok(Response::Continue(rest.trim_start().to_owned()));
    }
    let (first, rest) = word(s);
    if first == "*" {
        let (w, after) = word(rest);
        if let Some(st) = status(w) {
            let (code, text) = resp_text(after);
            return Ok(Response::UntaggedStatus {
                status: st,
                code,
                text,
            });
        }
        if w.eq_ignore_ascii_case("CAPABILITY") {
            return Ok(Response::Capability(caps(after)));
        }
        return Ok(Response::Untagged(rest.to_owned()));
    }
    // tag = 1*<any ASTRING-CHAR except "+">
    if first.is_empty()
        || !first
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\+]".contains(&b))
    {
        return Err(invalid(format!(
            "unexpected IMAP response: {:?}",
            s.chars().take(80).collect::<String>()
        )));
    }
    let (w, after) = word(rest);
    let st = status(w).ok_or_else(|| invalid("tagged IMAP response without OK/NO/BAD"))?;
    let (code, text) = resp_text(after);
    Ok(Response::Tagged {
        tag: first.to_owned(),
        status: st,
        code,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(wire: &[u8]) -> Vec<io::Result<Response>> {
        let mut r = io::BufReader::new(wire);
        let mut out = Vec::new();
        loop {
            match read_response(&mut r) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                x => {
                    let stop = x.is_err();
                    out.push(x);
                    if stop {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn dovecot_responses() {
        let wire = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n\
            * CAPABILITY IMAP4rev1 MULTIAPPEND UIDPLUS\r\n\
            + \r\n\
            a2 OK [APPENDUID 1733 4:6] Append completed (0.003 + 0.000 secs).\r\n\
            a3 NO [TRYCREATE] Mailbox doesn't exist: Foo\r\n\
            * 3 FETCH (BODY[] {5}\r\nab\r\nc)\r\n\
            a4 BAD Error in IMAP command\r\n";
        let got: Vec<Response> = all(wire).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            got[0],
            Response::UntaggedStatus {
                status: Status::Ok,
                code: Some(Code::Capability(vec![
                    "IMAP4REV1".into(),
                    "SASL-IR".into(),
                    "LITERAL+".into(),
                    "AUTH=PLAIN".into()
                ])),
                text: "Dovecot ready.".into()
            }
        );
        assert_eq!(
            got[1],
            Response::Capability(vec![
                "IMAP4REV1".into(),
                "MULTIAPPEND".into(),
                "UIDPLUS".into()
            ])
        );
        assert_eq!(got[2], Response::Continue("".into()));
        assert_eq!(
            got[3],
            Response::Tagged {
                tag: "a2".into(),
                status: Status::Ok,
                code: Some(Code::AppendUid {
                    uidvalidity: 1733,
                    uids: "4:6".into()
                }),
                text: "Append completed (0.003 + 0.000 secs).".into()
            }
        );
        assert!(matches!(
            &got[4],
            Response::Tagged {
                status: Status::No,
                code: Some(Code::TryCreate),
                ..
            }
        ));
        assert_eq!(got[5], Response::Untagged("3 FETCH (BODY[] {5})".into()));
        assert!(matches!(
            &got[6],
            Response::Tagged {
                status: Status::Bad,
                ..
            }
        ));
    }

    #[test]
    fn bounds_and_garbage() {
        let mut long = vec![b'*'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\n");
        assert!(all(&long)[0].is_err());
        assert!(all(b"* X {99999999999}\r\n")[0].is_err());
        assert!(all(b"* X {12a}\r\n")[0].is_err());
        assert!(all(b"a1 MAYBE fine\r\n")[0].is_err());
        assert!(all(b"(x OK\r\n")[0].is_err());
        // A literal cut short is an end of stream, not a hang.
        let r = read_response(&mut io::BufReader::new(&b"* 1 FETCH {10}\r\nabc"[..]));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // Chunked literal lines add up within MAX_LINE.
        let mut many = Vec::new();
        for _ in 0..(MAX_LINE / 4) {
            many.extend_from_slice(b"x {0}\r\n");
        }
        many.extend_from_slice(b"\r\n");
        let mut w = b"* ".to_vec();
        w.extend_from_slice(&many);
        assert!(all(&w)[0].is_err());
    }
}
