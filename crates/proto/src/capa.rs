//! The capability model: what a POP3 server offers in its `CAPA` response.
//!
//! Covers RFC 2449 (TOP, USER, SASL, RESP-CODES, LOGIN-DELAY, PIPELINING, EXPIRE, UIDL,
//! IMPLEMENTATION), RFC 2595 (STLS), RFC 3206 (AUTH-RESP-CODE) and RFC 6856 (UTF8,
//! LANG). Tags the model does not know are kept verbatim, so a client can still look at
//! them and a server can announce vendor tags.
//!
//! Server side: build a [`Capabilities`] for *this* connection (the policy of what to
//! offer, e.g. no STLS once TLS is up, belongs to the session) and call
//! [`Capabilities::write_response`] or [`Capabilities::write_body`].
//!
//! Client side: [`Capabilities::parse_body`] takes the unstuffed body of the `CAPA`
//! response (the lines between `+OK` and `.`). Tags are case-insensitive; a known tag
//! with arguments that do not fit its grammar is kept in [`Capabilities::other`] instead
//! of being half-understood. The parser is bounded: at most [`MAX_CAPA_LINES`] lines.
//!
//! RFC 2449 §5 grammar: `capability = capa-tag *(SP param) CRLF`, where tags and
//! parameters are printable US-ASCII without spaces (a tag never starts with `.`).

use std::fmt;

use crate::response::{StatusLine, write_multiline};

/// The most capability lines a client accepts in one `CAPA` body. Real servers send
/// about a dozen; this only stops a hostile server from growing our memory.
pub const MAX_CAPA_LINES: usize = 256;
/// The longest capability line kept, in octets without the line end (RFC 2449 §4 sets
/// 512 octets for response lines, CRLF included).
pub const MAX_CAPA_LINE: usize = 510;

/// `LOGIN-DELAY n [USER]` (RFC 2449 §6.5): minimum seconds between logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginDelay {
    /// The minimum number of seconds between two logins.
    pub seconds: u32,
    /// `USER`: the delay may differ per user (only meaningful in AUTHORIZATION; the
    /// per-user value is then announced in TRANSACTION).
    pub per_user: bool,
}

/// The retention policy of `EXPIRE` (RFC 2449 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpirePolicy {
    /// `NEVER`: the server never deletes messages on its own.
    Never,
    /// Messages are kept at least this many days after retrieval (0: the server may
    /// delete a message once it was retrieved, even without DELE).
    Days(u32),
}

/// `EXPIRE policy [USER]` (RFC 2449 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expire {
    /// Days or never.
    pub policy: ExpirePolicy,
    /// `USER`: the policy may differ per user.
    pub per_user: bool,
}

/// `UTF8 [USER]` (RFC 6856 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Utf8Capa {
    /// `USER`: the USER command (and PASS) accept UTF-8 before the UTF8 command.
    pub user: bool,
}

/// What a server offers. `Default` is "nothing offered".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `TOP` (RFC 2449 §6.1).
    pub top: bool,
    /// `USER`: USER/PASS login is allowed (RFC 2449 §6.2).
    pub user: bool,
    /// `SASL mech...`: the SASL mechanisms offered, upper-case; empty means the tag is
    /// not sent (RFC 2449 §6.3).
    pub sasl: Vec<String>,
    /// `RESP-CODES` (RFC 2449 §6.4).
    pub resp_codes: bool,
    /// `LOGIN-DELAY n [USER]` (RFC 2449 §6.5).
    pub login_delay: Option<LoginDelay>,
    /// `PIPELINING` (RFC 2449 §6.6).
    pub pipelining: bool,
    /// `EXPIRE n|NEVER [USER]` (RFC 2449 §6.7).
    pub expire: Option<Expire>,
    /// `UIDL` (RFC 2449 §6.8).
    pub uidl: bool,
    /// `IMPLEMENTATION text` (RFC 2449 §6.9): free text; when writing, characters
    /// outside printable US-ASCII are dropped.
    pub implementation: Option<String>,
    /// `STLS` (RFC 2595 §4).
    pub stls: bool,
    /// `AUTH-RESP-CODE` (RFC 3206 §6): the server sends `[AUTH]` and `[SYS/...]`.
    pub auth_resp_code: bool,
    /// `UTF8 [USER]` (RFC 6856 §2).
    pub utf8: Option<Utf8Capa>,
    /// `LANG` (RFC 6856 §3).
    pub lang: bool,
    /// Every other line, kept verbatim (unknown tags, or known tags whose arguments did
    /// not parse). Written as is by the server, after the known tags.
    pub other: Vec<String>,
}

/// Why a `CAPA` body was refused by [`Capabilities::parse_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapaError {
    /// More than [`MAX_CAPA_LINES`] lines.
    TooManyLines,
    /// A line longer than [`MAX_CAPA_LINE`] octets.
    LineTooLong,
}

impl fmt::Display for CapaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CapaError::TooManyLines => "CAPA response has too many lines",
            CapaError::LineTooLong => "CAPA response line too long",
        })
    }
}

impl std::error::Error for CapaError {}

impl Capabilities {
    /// Nothing offered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `mechanism` is among the SASL mechanisms (case-insensitive).
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// Whether an unknown tag `tag` was announced (case-insensitive, the first word of a
    /// line kept in [`Capabilities::other`]).
    pub fn has_other(&self, tag: &str) -> bool {
        self.other.iter().any(|l| {
            l.split(' ')
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case(tag))
        })
    }

    /// The body lines in a fixed order, without line ends.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.stls {
            v.push("STLS".to_owned());
        }
        if self.user {
            v.push("USER".to_owned());
        }
        // One SASL line, or several when the mechanisms would make it longer than a
        // line may be (a server that lists many on several lines is read into one
        // list; written back, each line must still fit).
        let mut sasl = String::new();
        for m in self.sasl.iter().filter(|m| is_mechanism(m)) {
            if !sasl.is_empty() && sasl.len() + 1 + m.len() > MAX_CAPA_LINE {
                v.push(std::mem::take(&mut sasl));
            }
            if sasl.is_empty() {
                sasl.push_str("SASL");
            }
            sasl.push(' ');
            sasl.push_str(&m.to_ascii_uppercase());
        }
        if !sasl.is_empty() {
            v.push(sasl);
        }
        if self.top {
            v.push("TOP".to_owned());
        }
        if self.uidl {
            v.push("UIDL".to_owned());
        }
        if self.resp_codes {
            v.push("RESP-CODES".to_owned());
        }
        if self.auth_resp_code {
            v.push("AUTH-RESP-CODE".to_owned());
        }
        if self.pipelining {
            v.push("PIPELINING".to_owned());
        }
        if let Some(d) = self.login_delay {
            v.push(format!(
                "LOGIN-DELAY {}{}",
                d.seconds,
                if d.per_user { " USER" } else { "" }
            ));
        }
        if let Some(e) = self.expire {
            let policy = match e.policy {
                ExpirePolicy::Never => "NEVER".to_owned(),
                ExpirePolicy::Days(n) => n.to_string(),
            };
            v.push(format!(
                "EXPIRE {policy}{}",
                if e.per_user { " USER" } else { "" }
            ));
        }
        if let Some(u) = self.utf8 {
            v.push(if u.user { "UTF8 USER" } else { "UTF8" }.to_owned());
        }
        if self.lang {
            v.push("LANG".to_owned());
        }
        if let Some(text) = &self.implementation {
            let text: String = text
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect();
            let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
            if !words.is_empty() {
                let mut line = format!("IMPLEMENTATION {}", words.join(" "));
                line.truncate(MAX_CAPA_LINE);
                v.push(line);
            }
        }
        for o in &self.other {
            // Only lines the grammar allows: printable US-ASCII words, not starting
            // with "." (which would end the body), within the line limit. Anything
            // else is left out rather than altered, so that it cannot turn into a
            // different tag on the way.
            let line = o
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !line.is_empty()
                && line.len() <= MAX_CAPA_LINE
                && !line.starts_with('.')
                && line.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                v.push(line);
            }
        }
        v
    }

    /// Appends the body lines, each with CRLF, then the terminating `.` CRLF (no status
    /// line: for a server that writes `+OK ...` itself).
    pub fn write_body(&self, out: &mut Vec<u8>) {
        for line in self.lines() {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// Appends the whole response: `+OK Capability list follows`, the body, `.`.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let lines = self.lines();
        write_multiline(
            &StatusLine::ok("Capability list follows"),
            lines.iter().map(|l| l.as_bytes()),
            out,
        );
    }

    /// Parses the body of a `CAPA` response: the unstuffed lines between `+OK` and the
    /// terminating `.`, separated by CRLF or LF (the last line end is optional).
    pub fn parse_body(body: &[u8]) -> Result<Capabilities, CapaError> {
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        if body.is_empty() {
            return Ok(Capabilities::new());
        }
        Self::parse_lines(
            body.split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l)),
        )
    }

    /// Parses body lines given one by one, without line ends (already unstuffed).
    pub fn parse_lines<'a>(
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Capabilities, CapaError> {
        let mut caps = Capabilities::new();
        for (i, line) in lines.into_iter().enumerate() {
            if i >= MAX_CAPA_LINES {
                return Err(CapaError::TooManyLines);
            }
            caps.add_line(line)?;
        }
        Ok(caps)
    }

    /// Adds one body line (without line end) to the model. Blank lines are ignored.
    pub fn add_line(&mut self, line: &[u8]) -> Result<(), CapaError> {
        if line.len() > MAX_CAPA_LINE {
            return Err(CapaError::LineTooLong);
        }
        let text = String::from_utf8_lossy(line);
        // Tabs and repeated spaces separate words as well in what real servers send.
        let words: Vec<&str> = text.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        let Some((tag, args)) = words.split_first() else {
            return Ok(());
        };
        if !self.apply_known(&tag.to_ascii_uppercase(), args) {
            self.other.push(words.join(" "));
        }
        Ok(())
    }

    /// Applies a known tag; false if the tag is unknown or its arguments do not fit.
    fn apply_known(&mut self, tag: &str, args: &[&str]) -> bool {
        let flag = |f: &mut bool| {
            if args.is_empty() {
                *f = true;
                true
            } else {
                false
            }
        };
        match tag {
            "TOP" => flag(&mut self.top),
            "USER" => flag(&mut self.user),
            "UIDL" => flag(&mut self.uidl),
            "RESP-CODES" => flag(&mut self.resp_codes),
            "PIPELINING" => flag(&mut self.pipelining),
            "STLS" => flag(&mut self.stls),
            "AUTH-RESP-CODE" => flag(&mut self.auth_resp_code),
            "LANG" => flag(&mut self.lang),
            "SASL" => {
                // Names that are not SASL mechanism names are ignored: a client must
                // never pick a mechanism it cannot name back on the AUTH line.
                for m in args.iter().filter(|m| is_mechanism(m)) {
                    let m = m.to_ascii_uppercase();
                    if !self.sasl.contains(&m) {
                        self.sasl.push(m);
                    }
                }
                true
            }
            "IMPLEMENTATION" => {
                self.implementation = Some(args.join(" "));
                true
            }
            "UTF8" => match args {
                [] => {
                    self.utf8 = Some(Utf8Capa { user: false });
                    true
                }
                [u] if u.eq_ignore_ascii_case("USER") => {
                    self.utf8 = Some(Utf8Capa { user: true });
                    true
                }
                _ => false,
            },
            "LOGIN-DELAY" => {
                let (n, per_user) = match args {
                    [n] => (n, false),
                    [n, u] if u.eq_ignore_ascii_case("USER") => (n, true),
                    _ => return false,
                };
                match parse_number(n) {
                    Some(seconds) => {
                        self.login_delay = Some(LoginDelay { seconds, per_user });
                        true
                    }
                    None => false,
                }
            }
            "EXPIRE" => {
                let (p, per_user) = match args {
                    [p] => (p, false),
                    [p, u] if u.eq_ignore_ascii_case("USER") => (p, true),
                    _ => return false,
                };
                let policy = if p.eq_ignore_ascii_case("NEVER") {
                    ExpirePolicy::Never
                } else {
                    match parse_number(p) {
                        Some(days) => ExpirePolicy::Days(days),
                        None => return false,
                    }
                };
                self.expire = Some(Expire { policy, per_user });
                true
            }
            _ => false,
        }
    }
}

/// Decimal digits only, fitting u32.
fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A SASL mechanism name (RFC 4422 §3.1): 1 to 20 of `A-Z 0-9 - _` (any case here).
fn is_mechanism(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_server_body() {
        let caps = Capabilities {
            top: true,
            user: true,
            sasl: vec!["PLAIN".into(), "SCRAM-SHA-256".into()],
            resp_codes: true,
            login_delay: Some(LoginDelay {
                seconds: 900,
                per_user: true,
            }),
            pipelining: true,
            expire: Some(Expire {
                policy: ExpirePolicy::Never,
                per_user: false,
            }),
            uidl: true,
            implementation: Some("Correio 0.1".into()),
            stls: true,
            auth_resp_code: true,
            utf8: Some(Utf8Capa { user: true }),
            lang: true,
            other: vec!["X-VENDOR a b".into()],
        };
        let mut out = Vec::new();
        caps.write_response(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK Capability list follows\r\nSTLS\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256\r\nTOP\r\n\
             UIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nLOGIN-DELAY 900 USER\r\n\
             EXPIRE NEVER\r\nUTF8 USER\r\nLANG\r\nIMPLEMENTATION Correio 0.1\r\nX-VENDOR a b\r\n.\r\n"
        );
        let mut body = Vec::new();
        caps.write_body(&mut body);
        let body = body.strip_suffix(b".\r\n").unwrap();
        assert_eq!(Capabilities::parse_body(body).unwrap(), caps);
    }

    #[test]
    fn client_parse_is_case_insensitive_and_keeps_unknown() {
        let caps = Capabilities::parse_body(
            b"top\r\nuser\nsasl plain login\r\nexpire 0 user\r\nlogin-delay x\r\nX-FOO bar\r\n",
        )
        .unwrap();
        assert!(caps.top && caps.user);
        assert!(caps.has_sasl("PLAIN") && caps.has_sasl("login"));
        assert_eq!(
            caps.expire,
            Some(Expire {
                policy: ExpirePolicy::Days(0),
                per_user: true
            })
        );
        assert_eq!(caps.login_delay, None);
        assert_eq!(caps.other, vec!["login-delay x", "X-FOO bar"]);
        assert!(caps.has_other("x-foo"));
    }

    #[test]
    fn nothing_changes_meaning_on_the_way() {
        // Found by the capa fuzzer: "sas\xa7l" must not come back as a SASL tag.
        let caps = Capabilities::parse_body(b"sas\xa7l plain\nSASL PLAIN b@d LOGIN\n").unwrap();
        assert_eq!(caps.sasl, vec!["PLAIN", "LOGIN"]);
        assert_eq!(caps.other, vec!["sas\u{fffd}l plain"]);
        let mut out = Vec::new();
        caps.write_body(&mut out);
        assert_eq!(out, b"SASL PLAIN LOGIN\r\n.\r\n");
    }

    #[test]
    fn bounded() {
        let many = "TOP\r\n".repeat(MAX_CAPA_LINES + 1);
        assert_eq!(
            Capabilities::parse_body(many.as_bytes()),
            Err(CapaError::TooManyLines)
        );
        let long = "X".repeat(MAX_CAPA_LINE + 1);
        assert_eq!(
            Capabilities::parse_body(long.as_bytes()),
            Err(CapaError::LineTooLong)
        );
    }

    /// Found by the `capa` fuzz target: many SASL lines were merged into one list and
    /// written back as a single line longer than a line may be, which our own parser
    /// then refused.
    #[test]
    fn many_sasl_lines_are_written_back_within_the_line_limit() {
        let mut body = String::new();
        for i in 0..60 {
            body.push_str(&format!("SASL X-MECHANISM-{i:03} X-OTHER-{i:03}\r\n"));
        }
        let caps = Capabilities::parse_body(body.as_bytes()).unwrap();
        assert_eq!(caps.sasl.len(), 120);
        let mut out = Vec::new();
        caps.write_body(&mut out);
        let body = out.strip_suffix(b".\r\n").unwrap();
        assert!(
            body.split(|&b| b == b'\n')
                .all(|l| l.len() <= MAX_CAPA_LINE + 1)
        );
        let again = Capabilities::parse_body(body).unwrap();
        assert_eq!(again.sasl, caps.sasl);
    }
}
