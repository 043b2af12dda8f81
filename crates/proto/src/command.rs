//! The POP3 command grammar: RFC 1939 (core), RFC 2449 (CAPA), RFC 2595 (STLS),
//! RFC 5034 (AUTH) and RFC 6856 (UTF8, LANG).
//!
//! [`Command::parse`] takes one line *without* its line end, as the [`LineFramer`]
//! yields it, and either returns a fully validated command or a [`CommandError`] that
//! says which `-ERR` to send. Parsing is strict ("parse, don't validate"):
//! - keywords are case-insensitive, arguments are separated by single spaces;
//! - message numbers are decimal digits only: no sign, no leading `+`, no trailing
//!   garbage, not 0, and bounded (see [`MsgNum`]);
//! - argument counts are exact;
//! - `PASS` takes the whole rest of the line, spaces included;
//! - NUL and bare CR are rejected anywhere.
//!
//! [`Command::write_to`] serialises a command for the client side, CRLF included.
//!
//! [`LineFramer`]: crate::framer::LineFramer

use std::fmt;
use std::num::NonZeroU32;

/// A message number: 1-based, never 0, at most [`MsgNum::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgNum(NonZeroU32);

impl MsgNum {
    /// The largest message number the grammar accepts. Far beyond any real maildrop,
    /// small enough that an index computed from it never overflows.
    pub const MAX: u32 = 999_999_999;

    /// A message number from its value; `None` for 0 or above [`MsgNum::MAX`].
    pub fn new(n: u32) -> Option<Self> {
        if n > Self::MAX {
            return None;
        }
        NonZeroU32::new(n).map(MsgNum)
    }

    /// The number as the wire shows it (1-based).
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The 0-based index into a maildrop snapshot.
    pub fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }

    /// The message number of a 0-based index; `None` if out of range.
    pub fn from_index(i: usize) -> Option<Self> {
        u32::try_from(i.checked_add(1)?).ok().and_then(Self::new)
    }
}

impl fmt::Display for MsgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One POP3 command, fully parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 1939 §7).
    User(String),
    /// `PASS secret`: the whole rest of the line, spaces included (RFC 1939 §7).
    Pass(Vec<u8>),
    /// `APOP name digest`: digest is 32 lowercase hex digits (RFC 1939 §7).
    Apop {
        /// The mailbox name.
        name: String,
        /// The MD5 digest in lowercase hex.
        digest: String,
    },
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<MsgNum>),
    /// `RETR msg`.
    Retr(MsgNum),
    /// `DELE msg`.
    Dele(MsgNum),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `TOP msg n`.
    Top {
        /// The message.
        msg: MsgNum,
        /// How many lines of the body to send after the header and blank line.
        lines: u32,
    },
    /// `UIDL [msg]`.
    Uidl(Option<MsgNum>),
    /// `CAPA` (RFC 2449).
    Capa,
    /// `STLS` (RFC 2595).
    Stls,
    /// `AUTH [mechanism [initial-response]]` (RFC 5034). Without arguments it asks for
    /// the list of mechanisms (a widespread extension that RFC 1734 clients use).
    Auth {
        /// The SASL mechanism name, uppercased; `None` for a bare `AUTH`.
        mechanism: Option<String>,
        /// The initial response exactly as sent (base64, or `=` for an empty one).
        initial_response: Option<String>,
    },
    /// `UTF8` (RFC 6856).
    Utf8,
    /// `LANG [tag]` (RFC 6856); `None` lists the languages.
    Lang(Option<String>),
}

impl fmt::Debug for Command {
    // PASS and AUTH initial responses carry secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(n) => f.debug_tuple("User").field(n).finish(),
            Command::Pass(_) => f.write_str("Pass(<redacted>)"),
            Command::Apop { name, .. } => f
                .debug_struct("Apop")
                .field("name", name)
                .finish_non_exhaustive(),
            Command::Stat => f.write_str("Stat"),
            Command::List(m) => f.debug_tuple("List").field(m).finish(),
            Command::Retr(m) => f.debug_tuple("Retr").field(m).finish(),
            Command::Dele(m) => f.debug_tuple("Dele").field(m).finish(),
            Command::Noop => f.write_str("Noop"),
            Command::Rset => f.write_str("Rset"),
            Command::Quit => f.write_str("Quit"),
            Command::Top { msg, lines } => f
                .debug_struct("Top")
                .field("msg", msg)
                .field("lines", lines)
                .finish(),
            Command::Uidl(m) => f.debug_tuple("Uidl").field(m).finish(),
            Command::Capa => f.write_str("Capa"),
            Command::Stls => f.write_str("Stls"),
            Command::Auth {
                mechanism,
                initial_response,
            } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field(
                    "initial_response",
                    &initial_response.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
            Command::Utf8 => f.write_str("Utf8"),
            Command::Lang(t) => f.debug_tuple("Lang").field(t).finish(),
        }
    }
}

/// Why a command line was refused. Each maps to one `-ERR` text via
/// [`CommandError::wire_text`]; the session goes on after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The line was empty.
    Empty,
    /// The keyword is not a POP3 command we know.
    Unknown,
    /// Too few or too many arguments, or arguments not separated by single spaces.
    Syntax,
    /// A message number that is not 1..=MAX in plain decimal digits.
    InvalidNumber,
    /// An argument longer than the grammar allows.
    ArgumentTooLong,
    /// NUL, bare CR or another control character in the line.
    InvalidCharacter,
    /// A name or argument that is not valid UTF-8.
    InvalidUtf8,
}

impl CommandError {
    /// The text that follows `-ERR ` on the wire.
    pub fn wire_text(self) -> &'static str {
        match self {
            CommandError::Empty => "Empty command",
            CommandError::Unknown => "Unknown command",
            CommandError::Syntax => "Syntax error in arguments",
            CommandError::InvalidNumber => "Invalid message number",
            CommandError::ArgumentTooLong => "Argument too long",
            CommandError::InvalidCharacter => "Invalid character in command",
            CommandError::InvalidUtf8 => "Invalid UTF-8 in command",
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_text())
    }
}

impl std::error::Error for CommandError {}

/// The longest SASL initial response accepted on the AUTH line itself. The line limit
/// (255 octets) already bounds it; this is the same bound stated for the argument.
const MAX_INITIAL_RESPONSE: usize = crate::MAX_COMMAND_LINE;
/// The longest `PASS` argument. RFC 1939 sets none; the command line bounds it.
const MAX_PASS: usize = crate::MAX_COMMAND_LINE;

impl Command {
    /// Parses one command line, given without its CRLF or LF.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        // Control characters have no place in a command: NUL and bare CR would let a
        // client smuggle data into logs or paths. TAB is not a separator either.
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(CommandError::InvalidCharacter);
        }
        let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        if keyword.len() > 4 || keyword.len() < 3 {
            return Err(CommandError::Unknown);
        }
        let mut kw = [0u8; 4];
        kw[..keyword.len()].copy_from_slice(keyword);
        kw.make_ascii_uppercase();
        let kw = &kw[..keyword.len()];

        // PASS keeps its argument verbatim: the rest of the line, spaces included.
        if kw == b"PASS" {
            let secret = rest.ok_or(CommandError::Syntax)?;
            if secret.is_empty() {
                return Err(CommandError::Syntax);
            }
            if secret.len() > MAX_PASS {
                return Err(CommandError::ArgumentTooLong);
            }
            return Ok(Command::Pass(secret.to_vec()));
        }

        let args = Args::split(rest)?;
        let cmd = match kw {
            b"USER" => Command::User(args.exactly1()?.text()?),
            b"APOP" => {
                let [name, digest] = args.exactly2()?;
                let digest = digest.text()?;
                if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CommandError::Syntax);
                }
                Command::Apop {
                    name: name.text()?,
                    digest: digest.to_ascii_lowercase(),
                }
            }
            b"STAT" => args.none(Command::Stat)?,
            b"LIST" => Command::List(args.optional_msg()?),
            b"RETR" => Command::Retr(args.exactly1()?.msg()?),
            b"DELE" => Command::Dele(args.exactly1()?.msg()?),
            b"NOOP" => args.none(Command::Noop)?,
            b"RSET" => args.none(Command::Rset)?,
            b"QUIT" => args.none(Command::Quit)?,
            b"TOP" => {
                let [msg, lines] = args.exactly2()?;
                Command::Top {
                    msg: msg.msg()?,
                    lines: lines.count()?,
                }
            }
            b"UIDL" => Command::Uidl(args.optional_msg()?),
            b"CAPA" => args.none(Command::Capa)?,
            b"STLS" => args.none(Command::Stls)?,
            b"AUTH" => match args.as_slice() {
                [] => Command::Auth {
                    mechanism: None,
                    initial_response: None,
                },
                [mech] => Command::Auth {
                    mechanism: Some(mech.mechanism()?),
                    initial_response: None,
                },
                [mech, ir] => {
                    if ir.0.len() > MAX_INITIAL_RESPONSE {
                        return Err(CommandError::ArgumentTooLong);
                    }
                    Command::Auth {
                        mechanism: Some(mech.mechanism()?),
                        initial_response: Some(ir.text()?),
                    }
                }
                _ => return Err(CommandError::Syntax),
            },
            b"UTF8" => args.none(Command::Utf8)?,
            b"LANG" => match args.as_slice() {
                [] => Command::Lang(None),
                [tag] => Command::Lang(Some(tag.arg_text()?)),
                _ => return Err(CommandError::Syntax),
            },
            _ => return Err(CommandError::Unknown),
        };
        Ok(cmd)
    }

    /// Checks that this command, built by a client, is one the grammar allows: that
    /// [`write_to`](Command::write_to) gives a line that parses back to it (no CR, LF
    /// or NUL in a name or secret, arguments without spaces, the 255-octet limit...).
    /// A client calls this on commands built from user input before sending them.
    pub fn validate(&self) -> Result<(), CommandError> {
        let mut line = Vec::with_capacity(32);
        self.write_unchecked(&mut line);
        if line.len() + 2 > crate::MAX_COMMAND_LINE {
            return Err(CommandError::ArgumentTooLong);
        }
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(CommandError::InvalidCharacter);
        }
        match Command::parse(&line) {
            Ok(parsed) if parsed == *self => Ok(()),
            Ok(_) => Err(CommandError::Syntax),
            Err(e) => Err(e),
        }
    }

    /// Appends the command line, CRLF included, to `out` (the client side).
    ///
    /// Never more than one line: a CR, LF or NUL inside a name or secret is written as
    /// a space, so no value can smuggle a second command onto the wire (call
    /// [`validate`](Command::validate) to refuse such values instead).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.write_unchecked(out);
        for b in &mut out[start..] {
            if matches!(*b, b'\r' | b'\n' | 0) {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    fn write_unchecked(&self, out: &mut Vec<u8>) {
        fn msg_arg(out: &mut Vec<u8>, kw: &[u8], m: Option<MsgNum>) {
            out.extend_from_slice(kw);
            if let Some(m) = m {
                out.push(b' ');
                out.extend_from_slice(m.to_string().as_bytes());
            }
        }
        match self {
            Command::User(n) => {
                out.extend_from_slice(b"USER ");
                out.extend_from_slice(n.as_bytes());
            }
            Command::Pass(p) => {
                out.extend_from_slice(b"PASS ");
                out.extend_from_slice(p);
            }
            Command::Apop { name, digest } => {
                out.extend_from_slice(b"APOP ");
                out.extend_from_slice(name.as_bytes());
                out.push(b' ');
                out.extend_from_slice(digest.as_bytes());
            }
            Command::Stat => out.extend_from_slice(b"STAT"),
            Command::List(m) => msg_arg(out, b"LIST", *m),
            Command::Retr(m) => msg_arg(out, b"RETR", Some(*m)),
            Command::Dele(m) => msg_arg(out, b"DELE", Some(*m)),
            Command::Noop => out.extend_from_slice(b"NOOP"),
            Command::Rset => out.extend_from_slice(b"RSET"),
            Command::Quit => out.extend_from_slice(b"QUIT"),
            Command::Top { msg, lines } => {
                msg_arg(out, b"TOP", Some(*msg));
                out.push(b' ');
                out.extend_from_slice(lines.to_string().as_bytes());
            }
            Command::Uidl(m) => msg_arg(out, b"UIDL", *m),
            Command::Capa => out.extend_from_slice(b"CAPA"),
            Command::Stls => out.extend_from_slice(b"STLS"),
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                out.extend_from_slice(b"AUTH");
                if let Some(m) = mechanism {
                    out.push(b' ');
                    out.extend_from_slice(m.as_bytes());
                    if let Some(ir) = initial_response {
                        out.push(b' ');
                        out.extend_from_slice(ir.as_bytes());
                    }
                }
            }
            Command::Utf8 => out.extend_from_slice(b"UTF8"),
            Command::Lang(t) => {
                out.extend_from_slice(b"LANG");
                if let Some(t) = t {
                    out.push(b' ');
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
    }

    /// The command line as bytes, CRLF included.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.write_to(&mut v);
        v
    }

    /// The upper-case keyword, for logs and for matching responses to commands.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Top { .. } => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Auth { .. } => "AUTH",
            Command::Utf8 => "UTF8",
            Command::Lang(_) => "LANG",
        }
    }

    /// Whether the server answers this command with a multi-line body after `+OK`.
    /// `LIST` and `UIDL` only without an argument; `AUTH` only when bare.
    pub fn expects_multiline(&self) -> bool {
        matches!(
            self,
            Command::List(None)
                | Command::Uidl(None)
                | Command::Retr(_)
                | Command::Top { .. }
                | Command::Capa
                | Command::Lang(None)
                | Command::Auth {
                    mechanism: None,
                    ..
                }
        )
    }
}

/// One space-separated argument, borrowed from the line.
#[derive(Clone, Copy)]
struct Arg<'a>(&'a [u8]);

impl Arg<'_> {
    fn text(self) -> Result<String, CommandError> {
        std::str::from_utf8(self.0)
            .map(str::to_owned)
            .map_err(|_| CommandError::InvalidUtf8)
    }

    /// A short argument (a LANG tag): at most [`MAX_ARGUMENT`](crate::MAX_ARGUMENT).
    fn arg_text(self) -> Result<String, CommandError> {
        if self.0.len() > crate::MAX_ARGUMENT {
            return Err(CommandError::ArgumentTooLong);
        }
        self.text()
    }

    fn mechanism(self) -> Result<String, CommandError> {
        // RFC 4422 §3.1: 1-20 characters of [A-Z0-9-_].
        if self.0.len() > 20 {
            return Err(CommandError::ArgumentTooLong);
        }
        if !self
            .0
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(CommandError::Syntax);
        }
        Ok(String::from_utf8_lossy(self.0).to_ascii_uppercase())
    }

    fn digits(self) -> Result<u64, CommandError> {
        // Digits only: no sign, no space, no hex; at most 10 digits so the sum fits.
        if self.0.is_empty() || self.0.len() > 10 || !self.0.iter().all(u8::is_ascii_digit) {
            return Err(CommandError::InvalidNumber);
        }
        Ok(self
            .0
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    }

    fn msg(self) -> Result<MsgNum, CommandError> {
        let n = self.digits()?;
        u32::try_from(n)
            .ok()
            .and_then(MsgNum::new)
            .ok_or(CommandError::InvalidNumber)
    }

    /// TOP's line count: any non-negative decimal number. A count beyond `u32` means
    /// "more lines than any message has", so it saturates instead of failing.
    fn count(self) -> Result<u32, CommandError> {
        if self.0.is_empty() || !self.0.iter().all(u8::is_ascii_digit) {
            return Err(CommandError::InvalidNumber);
        }
        Ok(self.0.iter().fold(0u32, |n, d| {
            n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        }))
    }
}

/// The arguments of a line: at most three are ever needed, so no allocation.
struct Args<'a> {
    items: [Arg<'a>; 3],
    len: usize,
}

impl<'a> Args<'a> {
    fn split(rest: Option<&'a [u8]>) -> Result<Self, CommandError> {
        let mut args = Args {
            items: [Arg(b""); 3],
            len: 0,
        };
        let Some(mut rest) = rest else {
            return Ok(args);
        };
        // Trailing spaces are a common client slip; they carry no meaning except in
        // PASS, which never reaches here.
        while let [head @ .., b' '] = rest {
            rest = head;
        }
        if rest.is_empty() {
            return Ok(args);
        }
        for part in rest.split(|&b| b == b' ') {
            if part.is_empty() {
                return Err(CommandError::Syntax);
            }
            if args.len == args.items.len() {
                return Err(CommandError::Syntax);
            }
            args.items[args.len] = Arg(part);
            args.len += 1;
        }
        Ok(args)
    }

    fn as_slice(&self) -> &[Arg<'a>] {
        &self.items[..self.len]
    }

    fn none(&self, cmd: Command) -> Result<Command, CommandError> {
        if self.len == 0 {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax)
        }
    }

    // No 40-octet cap on USER and APOP names: RFC 2449 §4 replaced RFC 1939's
    // "47 characters" with the 255-octet line limit, and user names that are e-mail
    // addresses are often longer than 40. The line limit bounds them.
    fn exactly1(&self) -> Result<Arg<'a>, CommandError> {
        match self.as_slice() {
            [a] => Ok(*a),
            _ => Err(CommandError::Syntax),
        }
    }

    fn exactly2(&self) -> Result<[Arg<'a>; 2], CommandError> {
        match self.as_slice() {
            [a, b] => Ok([*a, *b]),
            _ => Err(CommandError::Syntax),
        }
    }

    fn optional_msg(&self) -> Result<Option<MsgNum>, CommandError> {
        match self.as_slice() {
            [] => Ok(None),
            [a] => a.msg().map(Some),
            _ => Err(CommandError::Syntax),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn message_numbers_are_strict() {
        assert_eq!(p("RETR 1"), Ok(Command::Retr(MsgNum::new(1).unwrap())));
        assert_eq!(p("retr 1"), Ok(Command::Retr(MsgNum::new(1).unwrap())));
        for bad in [
            "RETR 0",
            "RETR -1",
            "RETR +1",
            "RETR 1x",
            "RETR 99999999999999999999",
            "RETR 1000000000",
            "RETR 0x1",
            "RETR ",
        ] {
            assert!(p(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(p("RETR 1 2"), Err(CommandError::Syntax));
        assert_eq!(p("RETR  1"), Err(CommandError::Syntax));
    }

    #[test]
    fn pass_takes_the_rest_of_the_line() {
        assert_eq!(
            p("PASS  two  spaces "),
            Ok(Command::Pass(b" two  spaces ".to_vec()))
        );
        assert_eq!(p("PASS"), Err(CommandError::Syntax));
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(
            Command::parse(b"USER a\0b"),
            Err(CommandError::InvalidCharacter)
        );
        assert_eq!(
            Command::parse(b"USER a\rb"),
            Err(CommandError::InvalidCharacter)
        );
        assert_eq!(
            Command::parse(b"USER\ta"),
            Err(CommandError::InvalidCharacter)
        );
    }

    #[test]
    fn round_trip() {
        for line in [
            "USER alice",
            "PASS s3cret with space",
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
            "STAT",
            "LIST",
            "LIST 3",
            "RETR 7",
            "DELE 2",
            "NOOP",
            "RSET",
            "QUIT",
            "TOP 1 0",
            "UIDL",
            "UIDL 4",
            "CAPA",
            "STLS",
            "AUTH",
            "AUTH PLAIN",
            "AUTH PLAIN AGFsaWNlAHB3",
            "UTF8",
            "LANG",
            "LANG en",
        ] {
            let cmd = p(line).unwrap();
            assert_eq!(cmd.to_wire(), format!("{line}\r\n").into_bytes());
        }
    }
}
