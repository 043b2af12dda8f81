//! Well-formed mbox From_ lines: what may separate two messages.
//!
//! A From_ line is `From `, the envelope sender, and a ctime-style date:
//!
//! ```text
//! From <sender> <Www> <Mmm> <dd> <hh:mm[:ss]> [<zone> [<zone>]] <yyyy> [<zone> [<zone>]] [remote from <host>]
//! ```
//!
//! - The sender is one token without spaces or controls, or a quoted local part with
//!   spaces (`"john doe"@example.org`, as Postfix writes it). It may be missing
//!   (`From  Thu Nov 24 ...`), as some old writers do.
//! - The date is `asctime()` output (`Thu Nov 24 18:22:48 1986`: weekday and month
//!   names in English with their usual capitals, the day padded with a space or a
//!   zero), optionally without seconds, with up to two time zone tokens before the year
//!   (`Wed Aug  2 00:39:12 MET DST 1995`, `Mon Jan 01 00:00:00 +0000 2024` as Gmail's
//!   export writes) or after it (`1986 +0100`), and a UUCP `remote from <host>`.
//! - A zone token is `+hhmm`/`-hhmm` or 1–5 capital letters (`UTC`, `CEST`).
//! - Tokens are separated by spaces or tabs (Postfix and procmail put two spaces
//!   after the sender; asctime pads the day with a space); trailing white space and a
//!   CR before the LF are allowed. Nothing else may follow: `From me Tue Feb  2
//!   00:00:00 2024 said hi` is text, not a From_ line.
//!
//! This is what Postfix `local`, Dovecot, mutt, procmail, Python's `mailbox`, Gmail's
//! export and our own writer ([`super::MboxWriter`]: `From sender Thu Nov 24 18:22:48
//! 1986`) produce. The parser looks at one line, at most [`MAX_LEN`] bytes; it never
//! allocates.

/// The longest From_ line accepted (the line end included). Envelope addresses are at
/// most 256 octets (RFC 5321), so a real From_ line is far shorter.
pub const MAX_LEN: usize = 1024;

/// Why a line starting with `From ` is not a well-formed From_ line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// It does not start with `From `.
    NotFrom,
    /// Longer than [`MAX_LEN`] bytes.
    TooLong,
    /// A control character (other than the line end and tabs).
    Control,
    /// No ctime-style date after the sender.
    NoDate,
    /// Text after the date that is not a time zone or `remote from HOST`.
    TrailingText,
}

impl Malformed {
    /// A short description, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Malformed::NotFrom => "does not start with `From `",
            Malformed::TooLong => "longer than 1024 bytes",
            Malformed::Control => "contains a control character",
            Malformed::NoDate => "no date (`Www Mmm dd hh:mm:ss yyyy`) after the sender",
            Malformed::TrailingText => "text after the date",
        }
    }
}

const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off the next token: skips leading white space, returns (token, rest).
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let s = &s[start..];
    let end = s.iter().position(|&b| is_space(b)).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn digits(t: &[u8], min: usize, max: usize) -> Option<u32> {
    if t.len() < min || t.len() > max || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(t.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
}

fn is_zone(t: &[u8]) -> bool {
    match t.first() {
        Some(b'+' | b'-') => digits(&t[1..], 4, 4).is_some(),
        _ => !t.is_empty() && t.len() <= 5 && t.iter().all(u8::is_ascii_uppercase),
    }
}

fn is_time(t: &[u8]) -> bool {
    let mut parts = t.split(|&b| b == b':');
    let (Some(h), Some(m)) = (parts.next(), parts.next()) else {
        return false;
    };
    let s = parts.next();
    if parts.next().is_some() {
        return false;
    }
    let ok_hm =
        digits(h, 1, 2).is_some_and(|h| h <= 23) && digits(m, 2, 2).is_some_and(|m| m <= 59);
    ok_hm && s.is_none_or(|s| digits(s, 2, 2).is_some_and(|s| s <= 60))
}

/// Whether `s` (after the sender) is a date with an allowed tail and nothing else.
fn date_and_tail(s: &[u8]) -> Result<(), Malformed> {
    let (wd, s) = token(s);
    let (mon, s) = token(s);
    let (day, s) = token(s);
    let (time, mut s) = token(s);
    if !WEEKDAYS.contains(&wd)
        || !MONTHS.contains(&mon)
        || !digits(day, 1, 2).is_some_and(|d| (1..=31).contains(&d))
        || !is_time(time)
    {
        return Err(Malformed::NoDate);
    }
    // Up to two zone tokens, then the year.
    let mut zones = 0;
    let year = loop {
        let (t, rest) = token(s);
        s = rest;
        if digits(t, 4, 4).is_some() {
            break t;
        }
        if zones < 2 && is_zone(t) {
            zones += 1;
            continue;
        }
        return Err(Malformed::NoDate);
    };
    debug_assert_eq!(year.len(), 4);
    // Tail: up to two zone tokens, then optionally `remote from HOST`.
    let mut zones = 0;
    loop {
        let (t, rest) = token(s);
        if t.is_empty() {
            return Ok(());
        }
        if zones < 2 && is_zone(t) {
            zones += 1;
            s = rest;
            continue;
        }
        if t == b"remote" {
            let (from, rest) = token(rest);
            let (host, rest) = token(rest);
            if from == b"from" && !host.is_empty() && token(rest).0.is_empty() {
                return Ok(());
            }
        }
        return Err(Malformed::TrailingText);
    }
}

/// Checks one line (with or without its LF or CRLF) as a From_ line.
pub fn check(line: &[u8]) -> Result<(), Malformed> {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return Err(Malformed::NotFrom);
    };
    if line.len() > MAX_LEN {
        return Err(Malformed::TooLong);
    }
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Malformed::Control);
    }
    // No sender: the date comes first.
    if date_and_tail(rest).is_ok() {
        return Ok(());
    }
    // The sender: a token, where a quoted part may contain spaces.
    let start = rest
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(rest.len());
    let s = &rest[start..];
    let mut i = 0;
    let mut quoted = false;
    while i < s.len() {
        match s[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            b if is_space(b) && !quoted => break,
            _ => {}
        }
        i += 1;
    }
    if i == 0 {
        return Err(Malformed::NoDate);
    }
    date_and_tail(&s[i.min(s.len())..])
}

/// Whether `line` is a well-formed From_ line.
pub fn is_valid(line: &[u8]) -> bool {
    check(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_writers_produce_is_accepted() {
        for l in [
            &b"From MAILER-DAEMON Thu Nov 24 18:22:48 1986\n"[..],
            b"From alice@example.org Thu Jan  1 00:00:00 1970\n",
            b"From alice@example.org  Thu Jan  1 00:00:00 1970\n",
            b"From \"john doe\"@example.org  Mon Feb  5 09:01:02 2024\n",
            b"From - Thu Nov 24 18:22:48 1986\r\n",
            b"From a@b Wed Aug  2 00:39:12 MET DST 1995\n",
            b"From 1789@xxx Mon Jan 01 00:00:00 +0000 2024\n",
            b"From a@b Thu Nov 24 18:22:48 1986 +0100\n",
            b"From a@b Thu Nov 24 18:22:48 1986 remote from uucphost\n",
            b"From a@b Thu Nov 24 18:22 1986\n",
            b"From  Thu Nov 24 18:22:48 1986\n",
            b"From a@b\tThu Nov 24 18:22:48 1986   \n",
            b"From a@b Thu Nov 24 18:22:48 1986",
            b"From Mon Thu Nov 24 18:22:48 1986\n",
        ] {
            assert_eq!(check(l), Ok(()), "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn text_is_refused() {
        for (l, why) in [
            (
                &b"From me Tue Feb  2 00:00:00 2024 said hi\n"[..],
                Malformed::TrailingText,
            ),
            (b"From x\n", Malformed::NoDate),
            (b"From here on, we go\n", Malformed::NoDate),
            (b"From a@b Thu Nov 24 18:22:48\n", Malformed::NoDate),
            (b"From a@b Thu Nov 32 18:22:48 1986\n", Malformed::NoDate),
            (b"From a@b Thu Nov 24 24:22:48 1986\n", Malformed::NoDate),
            (b"From a@b thu nov 24 18:22:48 1986\n", Malformed::NoDate),
            (b"From a@b Thu Nov 24 18:22:48 86\n", Malformed::NoDate),
            (
                b"From a@b Thu Nov 24 18:22:48 1986 PST said\n",
                Malformed::TrailingText,
            ),
            (
                b"From a@b Thu Nov 24 18:22:48 1986 remote from\n",
                Malformed::TrailingText,
            ),
            (b"From a\x01 Thu Nov 24 18:22:48 1986\n", Malformed::Control),
            (b">From a@b Thu Nov 24 18:22:48 1986\n", Malformed::NotFrom),
            (b"From: a@b Thu Nov 24 18:22:48 1986\n", Malformed::NotFrom),
        ] {
            assert_eq!(check(l), Err(why), "{}", String::from_utf8_lossy(l));
        }
        let mut long = b"From ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LEN));
        long.extend_from_slice(b" Thu Nov 24 18:22:48 1986\n");
        assert_eq!(check(&long), Err(Malformed::TooLong));
    }

    #[test]
    fn our_writer_is_accepted() {
        let now = std::time::SystemTime::now();
        assert!(is_valid(
            super::super::from_line(Some("a@b"), now).as_bytes()
        ));
        assert!(is_valid(super::super::from_line(None, now).as_bytes()));
        for secs in [0u64, 951_782_400, 4_102_444_800, 253_402_300_799] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let l = super::super::from_line(Some("x"), t);
            assert!(is_valid(l.as_bytes()), "{l}");
        }
    }
}
