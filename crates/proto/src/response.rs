//! POP3 responses: status lines (`+OK` / `-ERR`), RFC 2449/3206 response codes, SASL
//! continuation lines (`+ base64`), and the client-side parser of all three.
//!
//! A status line is at most [`MAX_STATUS_LINE`](crate::MAX_STATUS_LINE) octets with
//! CRLF (RFC 2449 §4); [`StatusLine::write_to`] truncates text to keep that promise.
//! Multi-line bodies are not built here: the server streams them through
//! [`DotStuffer`](crate::stuff::DotStuffer), small ones through [`write_multiline`].

use std::fmt;

/// `+OK` or `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `+OK`
    Ok,
    /// `-ERR`
    Err,
}

/// A response code in square brackets after `-ERR` (or `+OK`), RFC 2449 §8 and RFC 3206.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session (RFC 2449 §8.1.1).
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently (RFC 2449 §8.1.2).
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary system problem (RFC 3206 §4).
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem (RFC 3206 §4).
    SysPerm,
    /// `[AUTH]`: the credentials were wrong (RFC 3206 §5).
    Auth,
    /// `[UTF8]`: RFC 6856 §2.
    Utf8,
    /// Any other code, kept verbatim (for example `AUTH/EXPIRED` or a vendor code).
    Other(String),
}

impl RespCode {
    /// The code's text without brackets.
    pub fn as_str(&self) -> &str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
            RespCode::Utf8 => "UTF8",
            RespCode::Other(s) => s,
        }
    }

    /// Parses the text between the brackets.
    pub fn from_text(s: &str) -> RespCode {
        match s.to_ascii_uppercase().as_str() {
            "IN-USE" => RespCode::InUse,
            "LOGIN-DELAY" => RespCode::LoginDelay,
            "SYS/TEMP" => RespCode::SysTemp,
            "SYS/PERM" => RespCode::SysPerm,
            "AUTH" => RespCode::Auth,
            "UTF8" => RespCode::Utf8,
            _ => RespCode::Other(s.to_owned()),
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status line: status, optional response code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// `+OK` or `-ERR`.
    pub status: Status,
    /// The bracketed code, if any.
    pub code: Option<RespCode>,
    /// The human-readable text (may be empty).
    pub text: String,
}

impl StatusLine {
    /// `+OK text`
    pub fn ok(text: impl Into<String>) -> Self {
        StatusLine {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR text`
    pub fn err(text: impl Into<String>) -> Self {
        StatusLine {
            status: Status::Err,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR [code] text`
    pub fn err_code(code: RespCode, text: impl Into<String>) -> Self {
        StatusLine {
            status: Status::Err,
            code: Some(code),
            text: text.into(),
        }
    }

    /// Whether this is `+OK`.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// Appends the line with CRLF, never more than 512 octets in all: text that would
    /// pass the limit is cut (at a UTF-8 boundary), and CR/LF in text become spaces so
    /// that no text can ever end the line early. A code that is not well-formed
    /// (RFC 2449 §3) or would not fit is left out. Text should not start with `[`:
    /// after `-ERR ` that reads as a response code, and POP3 has no escape for it.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(match self.status {
            Status::Ok => b"+OK",
            Status::Err => b"-ERR",
        });
        if let Some(code) = &self.code {
            // Only a well-formed code that leaves the line within its limit: a code is
            // a machine-readable promise, better left out than cut or garbled.
            let code = code.as_str();
            if is_resp_code(code)
                && out.len() - start + code.len() + 3 + 2 <= crate::MAX_STATUS_LINE
            {
                out.extend_from_slice(b" [");
                out.extend_from_slice(code.as_bytes());
                out.push(b']');
            }
        }
        // Room for the text after the separating space and before CRLF.
        let room = crate::MAX_STATUS_LINE.saturating_sub(out.len() - start + 1 + 2);
        let mut text = self.text.as_str();
        if text.len() > room {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = &text[..cut];
        }
        if !text.is_empty() {
            out.push(b' ');
            out.extend(
                text.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The line as bytes, CRLF included.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.write_to(&mut v);
        v
    }
}

/// Appends a small multi-line response (CAPA, LIST, UIDL listings): status line, each
/// body line dot-stuffed with CRLF, then `.` CRLF.
pub fn write_multiline<'a>(
    status: &StatusLine,
    lines: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    status.write_to(out);
    for line in lines {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// What one response line from a server is, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `+OK ...` or `-ERR ...`.
    Status(StatusLine),
    /// `+ base64` (or a bare `+`): a SASL challenge (RFC 5034 §4). The payload is kept
    /// as sent, still base64-encoded.
    Continuation(String),
}

/// Why a server line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// Neither `+OK`, `-ERR` nor `+ `.
    BadStatus,
    /// A malformed response code. Not produced by [`ServerLine::parse`], which reads
    /// a bracket that holds no well-formed code as plain text (RFC 2449 §8); kept for
    /// callers that check codes themselves.
    BadCode,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseError::BadStatus => "server response is neither +OK nor -ERR",
            ResponseError::BadCode => "malformed response code",
        })
    }
}

impl std::error::Error for ResponseError {}

impl ServerLine {
    /// Parses one server line given without its line end. Lenient where real servers
    /// differ harmlessly (status keyword case, missing text), strict where a mistake
    /// would change meaning.
    pub fn parse(line: &[u8]) -> Result<ServerLine, ResponseError> {
        let line = String::from_utf8_lossy(line);
        let upper_prefix = |p: &str| {
            line.len() >= p.len() && line.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        };
        let (status, rest) = if upper_prefix("+OK") {
            (Status::Ok, &line[3..])
        } else if upper_prefix("-ERR") {
            (Status::Err, &line[4..])
        } else if line == "+" {
            return Ok(ServerLine::Continuation(String::new()));
        } else if let Some(payload) = line.strip_prefix("+ ") {
            return Ok(ServerLine::Continuation(payload.trim_end().to_owned()));
        } else {
            return Err(ResponseError::BadStatus);
        };
        // "+OKAY" is not "+OK": the keyword must end at a space or the line end.
        let rest = match rest.as_bytes().first() {
            None => "",
            Some(b' ') => &rest[1..],
            Some(_) => return Err(ResponseError::BadStatus),
        };
        // A bracket that does not hold a well-formed code is just text: servers that
        // do not announce RESP-CODES may well start their text with "[" (RFC 2449 §8:
        // clients ignore what they do not understand).
        let (code, text) = match rest.strip_prefix('[').and_then(|after| {
            let end = after.find(']')?;
            let code = &after[..end];
            is_resp_code(code).then(|| {
                let text = &after[end + 1..];
                (code, text.strip_prefix(' ').unwrap_or(text))
            })
        }) {
            Some((code, text)) => (Some(RespCode::from_text(code)), text),
            None => (None, rest),
        };
        Ok(ServerLine::Status(StatusLine {
            status,
            code,
            text: text.to_owned(),
        }))
    }
}

/// RFC 2449 §3: `resp-level *("/" resp-level)`, each level one or more printable
/// characters other than `/` and `]` (and, here, `[`).
fn is_resp_code(code: &str) -> bool {
    !code.is_empty()
        && code.split('/').all(|level| {
            !level.is_empty()
                && level
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_STATUS_LINE;

    #[test]
    fn status_lines_on_the_wire() {
        assert_eq!(StatusLine::ok("hi").to_wire(), b"+OK hi\r\n");
        assert_eq!(StatusLine::ok("").to_wire(), b"+OK\r\n");
        assert_eq!(
            StatusLine::err_code(RespCode::InUse, "locked").to_wire(),
            b"-ERR [IN-USE] locked\r\n"
        );
        // A code that fits, leaving no room for text: the line is still within 512.
        let code = "C".repeat(MAX_STATUS_LINE - "-ERR []\r\n".len() - 1);
        let full = StatusLine::err_code(RespCode::Other(code.clone()), "text").to_wire();
        assert_eq!(full, format!("-ERR [{code}]\r\n").into_bytes());
        let huge_code = StatusLine::err_code(RespCode::Other("X".repeat(600)), "t").to_wire();
        assert_eq!(huge_code, b"-ERR t\r\n");
        let bad_code = StatusLine::err_code(RespCode::Other("A B]\r\n".into()), "t").to_wire();
        assert_eq!(bad_code, b"-ERR t\r\n");
        let long = StatusLine::err("x".repeat(2000)).to_wire();
        assert_eq!(long.len(), 512);
        assert!(long.ends_with(b"\r\n"));
        assert_eq!(StatusLine::ok("a\r\nb").to_wire(), b"+OK a  b\r\n");
    }

    #[test]
    fn parse_server_lines() {
        assert_eq!(
            ServerLine::parse(b"-ERR [SYS/TEMP] try later"),
            Ok(ServerLine::Status(StatusLine::err_code(
                RespCode::SysTemp,
                "try later"
            )))
        );
        assert_eq!(
            ServerLine::parse(b"+OK"),
            Ok(ServerLine::Status(StatusLine::ok("")))
        );
        assert_eq!(
            ServerLine::parse(b"+ PDEyMz4="),
            Ok(ServerLine::Continuation("PDEyMz4=".into()))
        );
        assert_eq!(ServerLine::parse(b"+OKAY"), Err(ResponseError::BadStatus));
        assert_eq!(
            ServerLine::parse(b"-ERR [IN-USE"),
            Ok(ServerLine::Status(StatusLine::err("[IN-USE")))
        );
        assert_eq!(
            ServerLine::parse(b"+OK [2 messages] here"),
            Ok(ServerLine::Status(StatusLine::ok("[2 messages] here")))
        );
    }
}
