//! The probe's pure parsers: how it reads what a server sent, byte for byte, before
//! judging it. Nothing here does I/O, so all of it is fuzzed
//! (`fuzz/fuzz_targets/client_probe_response.rs`).
//!
//! Unlike the client's own parser ([`correio_proto::response`]), which is lenient so
//! that it works with sloppy servers, these functions keep every deviation visible:
//! the status keyword's case, the line end actually used, the line's length, a body
//! line that starts with an unstuffed `.`, a bare LF.

use std::fmt::Write as _;

/// RFC 1939 §3 and RFC 2449 §4: a response's first line is at most 512 octets,
/// CRLF included. RFC 2449 §5: so is each capability line.
pub const RFC_LINE_MAX: usize = 512;

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// CRLF, as RFC 1939 §3 requires.
    Crlf,
    /// A bare LF.
    Lf,
    /// No line end (the stream ended or the line was cut at the bound).
    None,
}

/// Splits a raw line into its content and its line end.
pub fn split_ending(raw: &[u8]) -> (&[u8], Ending) {
    if let Some(c) = raw.strip_suffix(b"\r\n") {
        (c, Ending::Crlf)
    } else if let Some(c) = raw.strip_suffix(b"\n") {
        (c, Ending::Lf)
    } else {
        (raw, Ending::None)
    }
}

/// What kind of line a server sent where a status line was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `+OK`
    Ok,
    /// `-ERR`
    Err,
    /// `+ ...`: a SASL continuation (RFC 5034 §4).
    Continuation,
    /// Anything else.
    Other,
}

/// One status line as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The status.
    pub kind: Kind,
    /// `+OK` / `-ERR` in upper case, as RFC 1939 §3 requires (true for the other kinds).
    pub exact_case: bool,
    /// The line end used.
    pub ending: Ending,
    /// The line's length in octets, line end included.
    pub octets: usize,
    /// The response code between `[` and `]` at the start of the text (RFC 2449 §3),
    /// as sent; `None` when the text does not start with a bracketed word.
    pub code: Option<String>,
    /// The text after the status keyword and its space (lossy UTF-8; for a
    /// continuation, the payload).
    pub text: String,
}

impl Classified {
    /// `+OK`, whatever the case.
    pub fn is_ok(&self) -> bool {
        self.kind == Kind::Ok
    }

    /// `-ERR`, whatever the case.
    pub fn is_err(&self) -> bool {
        self.kind == Kind::Err
    }
}

/// Classifies one raw line (with its line end, if any).
pub fn classify(raw: &[u8]) -> Classified {
    let (content, ending) = split_ending(raw);
    let keyword = |k: &[u8]| -> Option<(bool, &[u8])> {
        let head = content.get(..k.len())?;
        if !head.eq_ignore_ascii_case(k) {
            return None;
        }
        let rest = &content[k.len()..];
        match rest.first() {
            None => Some((head == k, rest)),
            Some(b' ') => Some((head == k, &rest[1..])),
            // "+OKAY" is not "+OK".
            Some(_) => None,
        }
    };
    let (kind, exact_case, rest) = if let Some((exact, rest)) = keyword(b"+OK") {
        (Kind::Ok, exact, rest)
    } else if let Some((exact, rest)) = keyword(b"-ERR") {
        (Kind::Err, exact, rest)
    } else if content == b"+" {
        (Kind::Continuation, true, &content[1..])
    } else if let Some(rest) = content.strip_prefix(b"+ ") {
        (Kind::Continuation, true, rest)
    } else {
        (Kind::Other, true, content)
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let code = if matches!(kind, Kind::Ok | Kind::Err) {
        text.strip_prefix('[')
            .and_then(|after| after.find(']').map(|end| after[..end].to_owned()))
            .filter(|c| !c.is_empty() && !c.contains(' '))
    } else {
        None
    };
    Classified {
        kind,
        exact_case,
        ending,
        octets: raw.len(),
        code,
        text,
    }
}

/// A line for a report: printable ASCII kept, the rest escaped, cut at `max` chars.
pub fn printable(raw: &[u8], max: usize) -> String {
    let (content, _) = split_ending(raw);
    let mut s = String::new();
    for &b in content {
        if s.len() >= max {
            s.push_str("...");
            break;
        }
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// A multi-line body as the wire carried it (the lines after the status line, up to
/// and including the terminating `.` line), unstuffed and measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// The content the client keeps: each line without its stuffing dot, ended with
    /// CRLF (RFC 1939 §3), the terminating line left out.
    pub content: Vec<u8>,
    /// Content lines (the terminator not counted).
    pub lines: usize,
    /// Lines that started with `..` (a stuffing dot removed).
    pub stuffed: usize,
    /// Lines that started with a single `.` followed by other octets: the server did
    /// not stuff them (RFC 1939 §3), and a client drops their first octet.
    pub unstuffed_dots: usize,
    /// Lines ended by a bare LF (the terminating line included).
    pub bare_lf: usize,
    /// The longest line, line end included.
    pub longest: usize,
    /// Whether the terminating `.` line was there.
    pub terminated: bool,
    /// Octets after the terminating line (a reader that stops at it sees none).
    pub trailing: usize,
}

impl Body {
    /// The size RFC 1939 §5 and §11 give for the message: the octets of its lines
    /// with CRLF line ends, without stuffing dots and without the terminator.
    pub fn exact_size(&self) -> u64 {
        self.content.len() as u64
    }

    /// The size a server gets when it also counts the stuffing dots.
    pub fn size_with_stuffing(&self) -> u64 {
        self.exact_size() + self.stuffed as u64
    }

    /// The size a server gets when it counts each line end as one octet (LF).
    pub fn size_lf(&self) -> u64 {
        self.exact_size().saturating_sub(self.lines as u64)
    }

    /// The content's lines (each without its CRLF).
    pub fn content_lines(&self) -> impl Iterator<Item = &[u8]> {
        let body = self.content.strip_suffix(b"\r\n").unwrap_or(&self.content);
        let empty = self.content.is_empty();
        body.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(move |_| !empty)
    }
}

/// Splits and unstuffs a raw multi-line body (everything after the status line).
pub fn split_body(raw: &[u8]) -> Body {
    let mut body = Body::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => rest.split_at(i + 1),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        body.longest = body.longest.max(line.len());
        let (content, ending) = split_ending(line);
        if ending == Ending::Lf {
            body.bare_lf += 1;
        }
        if content == b"." && ending != Ending::None {
            body.terminated = true;
            body.trailing = rest.len();
            return body;
        }
        let kept = match content.strip_prefix(b".") {
            Some(r) if r.first() == Some(&b'.') => {
                body.stuffed += 1;
                r
            }
            Some(r) => {
                body.unstuffed_dots += 1;
                r
            }
            None => content,
        };
        body.content.extend_from_slice(kept);
        body.content.extend_from_slice(b"\r\n");
        body.lines += 1;
    }
    body
}

/// What `TOP msg n` must send for a message whose content (CRLF lines) is `msg`
/// (RFC 1939 §7): the header, the blank line after it, then the first `n` body lines;
/// the whole message when it has no blank line or fewer body lines.
pub fn top_prefix(msg: &[u8], n: u64) -> &[u8] {
    let mut pos = 0;
    let mut in_header = true;
    let mut left = n;
    while pos < msg.len() {
        if !in_header && left == 0 {
            return &msg[..pos];
        }
        let end = match msg[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => msg.len(),
        };
        let line = &msg[pos..end];
        if in_header {
            if line == b"\r\n" || line == b"\n" {
                in_header = false;
            }
        } else {
            left -= 1;
        }
        pos = end;
    }
    msg
}

/// `+OK nn mm` (RFC 1939 §5): the text after `+OK `. Strict: two decimal numbers,
/// one space between them; anything may follow after another space.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let mut it = text.splitn(3, ' ');
    let count = decimal(it.next()?)?;
    let octets = decimal(it.next()?)?;
    Some((count, octets))
}

/// A scan listing line `n size` (RFC 1939 §5), without its line end; anything after
/// another space is allowed. Also the text of `+OK n size` for `LIST n`.
pub fn parse_scan(line: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut it = text.splitn(3, ' ');
    let n = decimal(it.next()?)?;
    let size = decimal(it.next()?)?;
    Some((n, size))
}

/// A unique-id listing line `n uid` (RFC 1939 §7), without its line end. The id is
/// returned as sent (lossy); [`uid_valid`] judges it.
pub fn parse_uidl(line: &[u8]) -> Option<(u64, String)> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let n = decimal(std::str::from_utf8(&line[..sp]).ok()?)?;
    let uid = &line[sp + 1..];
    Some((n, String::from_utf8_lossy(uid).into_owned()))
}

/// RFC 1939 §7: one to 70 characters in the range 0x21 to 0x7E.
pub fn uid_valid(uid: &str) -> bool {
    (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Decimal digits only (at most 19, so it fits).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The APOP timestamp in a greeting (RFC 1939 §7): the first `<...>`.
pub fn apop_timestamp(text: &str) -> Option<&str> {
    let start = text.find('<')?;
    let len = text[start..].find('>')?;
    Some(&text[start..=start + len])
}

/// Whether a timestamp has the `msg-id` form RFC 1939 §7 asks for: `<local@domain>`,
/// printable ASCII, no space.
pub fn apop_timestamp_well_formed(ts: &str) -> bool {
    let Some(inner) = ts.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
        return false;
    };
    match inner.split_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && !d.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        }
        None => false,
    }
}

/// Whether a capability line follows RFC 2449 §5 (`capa-tag *(SP param)`, printable
/// US-ASCII words, one space between them) and fits 512 octets with its CRLF.
pub fn capa_line_ok(content: &[u8]) -> bool {
    content.len() + 2 <= RFC_LINE_MAX
        && !content.is_empty()
        && content
            .split(|&b| b == b' ')
            .all(|w| !w.is_empty() && w.iter().all(|b| b.is_ascii_graphic()))
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `pop3s://`: TLS from the first byte.
    pub implicit_tls: bool,
}

/// Parses `pop3://HOST[:PORT]` or `pop3s://HOST[:PORT]` (IPv6 in brackets; a
/// trailing `/` allowed). Ports default to 110 and 995.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let bad =
        |why: &str| format!("{url:?}: {why} (expected pop3://HOST[:PORT] or pop3s://HOST[:PORT])");
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let (implicit_tls, rest) = if lower.starts_with("pop3s://") {
        (true, &url[8..])
    } else if lower.starts_with("pop3://") {
        (false, &url[7..])
    } else {
        return Err(bad("unknown scheme"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) || rest.is_empty() {
        return Err(bad("only a host and a port may follow the scheme"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        match after {
            "" => (h, None),
            p => (
                h,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let bracketed = rest.starts_with('[');
    if host.is_empty()
        || host.len() > 253
        || (!bracketed
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)))
    {
        return Err(bad("bad host"));
    }
    let port = match port {
        None => {
            if implicit_tls {
                995
            } else {
                110
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("bad port")),
        },
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        implicit_tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_status_lines() {
        let c = classify(b"+OK ready\r\n");
        assert_eq!(
            (c.kind, c.exact_case, c.ending),
            (Kind::Ok, true, Ending::Crlf)
        );
        assert_eq!((c.octets, c.text.as_str()), (11, "ready"));
        let c = classify(b"-err [IN-USE] locked\n");
        assert_eq!(
            (c.kind, c.exact_case, c.ending),
            (Kind::Err, false, Ending::Lf)
        );
        assert_eq!(c.code.as_deref(), Some("IN-USE"));
        assert_eq!(c.text, "[IN-USE] locked");
        assert_eq!(classify(b"+OKAY\r\n").kind, Kind::Other);
        assert_eq!(classify(b"+\r\n").kind, Kind::Continuation);
        assert_eq!(classify(b"+ PDE+\r\n").text, "PDE+");
        assert_eq!(classify(b"+OK").ending, Ending::None);
        assert_eq!(classify(b"+OK [2 messages]\r\n").code, None);
    }

    #[test]
    fn bodies_unstuff_and_measure() {
        let b = split_body(b"Subject: x\r\n\r\n..dot\r\n.bad\nend\r\n.\r\n");
        assert_eq!(b.content, b"Subject: x\r\n\r\n.dot\r\nbad\r\nend\r\n");
        assert_eq!(
            (b.lines, b.stuffed, b.unstuffed_dots, b.bare_lf),
            (5, 1, 1, 1)
        );
        assert!(b.terminated);
        assert_eq!(b.exact_size(), 30);
        assert_eq!(b.size_with_stuffing(), 31);
        assert_eq!(b.size_lf(), 25);
        let lines: Vec<&[u8]> = b.content_lines().collect();
        assert_eq!(lines.len(), 5);
        let empty = split_body(b".\r\n");
        assert!(empty.terminated && empty.content.is_empty());
        assert_eq!(empty.content_lines().count(), 0);
        assert!(!split_body(b"a\r\n").terminated);
    }

    #[test]
    fn top_prefixes() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top_prefix(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top_prefix(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top_prefix(m, 9), m);
        assert_eq!(top_prefix(b"A: 1\r\n", 0), b"A: 1\r\n");
        assert_eq!(top_prefix(b"", 3), b"");
    }

    #[test]
    fn listings() {
        assert_eq!(parse_stat("2 320"), Some((2, 320)));
        assert_eq!(parse_stat("2 320 octets"), Some((2, 320)));
        assert_eq!(parse_stat("2  320"), None);
        assert_eq!(parse_stat("two 320"), None);
        assert_eq!(parse_scan(b"1 120"), Some((1, 120)));
        assert_eq!(parse_scan(b"1"), None);
        assert_eq!(
            parse_uidl(b"3 whqtswO00WBw418f9t5JxYwZ"),
            Some((3, "whqtswO00WBw418f9t5JxYwZ".into()))
        );
        assert!(uid_valid("a"));
        assert!(!uid_valid(""));
        assert!(!uid_valid("a b"));
        assert!(!uid_valid(&"x".repeat(71)));
    }

    #[test]
    fn apop() {
        let g = "POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
        let ts = apop_timestamp(g).unwrap();
        assert_eq!(ts, "<1896.697170952@dbc.mtview.ca.us>");
        assert!(apop_timestamp_well_formed(ts));
        assert!(!apop_timestamp_well_formed("<nohost>"));
        assert_eq!(apop_timestamp("ready"), None);
    }

    #[test]
    fn urls() {
        let t = parse_url("pop3://mail.example.org").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.implicit_tls),
            ("mail.example.org", 110, false)
        );
        let t = parse_url("POP3S://[::1]:1995/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.implicit_tls),
            ("::1", 1995, true)
        );
        assert_eq!(parse_url("pop3s://h").unwrap().port, 995);
        assert!(parse_url("imap://h").is_err());
        assert!(parse_url("pop3://h:0").is_err());
        assert!(parse_url("pop3://h:x").is_err());
        assert!(parse_url("pop3://u@h").is_err());
        assert!(parse_url("pop3://").is_err());
        assert!(parse_url("pop3://[zz]:1").is_err());
    }

    #[test]
    fn capa_lines() {
        assert!(capa_line_ok(b"SASL PLAIN LOGIN"));
        assert!(!capa_line_ok(b"SASL  PLAIN"));
        assert!(!capa_line_ok(b""));
        assert!(!capa_line_ok(&[b'X'; 511]));
    }
}
