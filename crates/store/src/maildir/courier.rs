//! Reading Courier's `courierpop3dsizelist`, so that a Maildir that Courier's POP3
//! server served keeps the UIDLs its clients already saw (as [`super::dovecot`] does for
//! Dovecot).
//!
//! What Courier does — courier-libs `imap/pop3dserver.c` (`LISTVERSION 3`), checked
//! against Debian 12's courierpop3d 1.0.16 (its output is the fixture of
//! `tests/courier_uidl.rs`):
//!
//! - The first line is `/<version> <next uid> <uidvalidity>`. Courier reads versions 2
//!   and 3 and starts over (new UIDs, so new UIDLs for its clients) on anything else:
//!   a file without that header, or of another version, is ignored here too.
//! - Each further line is `<file name> <size> <uid>:<uidvalidity>:<utf8 flag>` (version
//!   3) or `<file name> <size> <uid>:<uidvalidity>` (version 2). The name is everything
//!   before the last two spaces. A line that does not fit is skipped, as Courier does.
//! - The UIDL is `UID<uid>-<uidvalidity>`, or `UID<uid>` when that record's
//!   uidvalidity is 0. A uid of 0 means Courier's "version 0" UIDL: the file name up to
//!   the first `:`, with every octet outside `0x21..=0x7E` and `'`, `"` and `+` written
//!   as `+XX` (two upper-case hex digits).
//!
//! Assumption (the one place this differs from Courier): Courier matches a record to a
//! file by the whole name up to `:`, we by the base name (up to the first `,` or `:`),
//! like every other UIDL source of this Maildir; base names are unique, so both pick
//! the same record. A UIDL that would not be a valid RFC 1939 unique-id (longer than 70
//! octets) is not used: the message then gets the UIDL derived from its name.
//!
//! A Maildir with both files: `dovecot-uidlist` wins, message by message. A Dovecot
//! that took over from Courier keeps Courier's UIDLs in its own records (`P`, written by
//! Dovecot's courier-dovecot-migrate.pl), and the old size list is often left behind,
//! stale; a message Dovecot never listed still gets Courier's UIDL.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::names::base_of;

/// The size list file name.
pub(crate) const SIZELIST_FILE: &str = "courierpop3dsizelist";
const MAX_SIZELIST_BYTES: u64 = 256 * 1024 * 1024;

/// Base name → the UIDL Courier's POP3 server showed.
pub(crate) fn load(root: &Path) -> HashMap<Vec<u8>, String> {
    let path = root.join(SIZELIST_FILE);
    match fs::metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= MAX_SIZELIST_BYTES => {}
        _ => return HashMap::new(),
    }
    fs::read(&path).map(|b| parse(&b)).unwrap_or_default()
}

fn valid_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Courier's "version 0" UIDL of a file name (see the module docs).
fn version0_uidl(name: &[u8]) -> String {
    let mut out = String::new();
    for &b in name.iter().take_while(|&&b| b != b':') {
        if !(0x21..=0x7e).contains(&b) || b == b'\'' || b == b'"' || b == b'+' {
            out.push_str(&format!("+{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// `<size> <uid>:<uidv>[:<flag>...]` → (uid, uidv).
fn uid_fields(size: &[u8], ids: &[u8]) -> Option<(u64, u64)> {
    number(size)?;
    let mut parts = ids.splitn(3, |&b| b == b':');
    let uid = number(parts.next()?)?;
    let uidv = number(parts.next()?)?;
    if let Some(flag) = parts.next() {
        // Courier reads the flag with `%d`: an optional sign, then digits.
        let digits = flag.strip_prefix(b"-").or_else(|| flag.strip_prefix(b"+"));
        let digits = digits.unwrap_or(flag);
        if !digits.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
    }
    Some((uid, uidv))
}

/// Parses the file; a file without a version 2 or 3 header yields nothing, malformed
/// records are skipped.
pub(crate) fn parse(bytes: &[u8]) -> HashMap<Vec<u8>, String> {
    let mut out = HashMap::new();
    let mut lines = bytes.split(|&b| b == b'\n');
    let Some(header) = lines.next().and_then(|h| h.strip_prefix(b"/")) else {
        return out;
    };
    let mut h = header
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let version = h.next().and_then(number);
    let next_uid = h.next().and_then(number);
    if !matches!(version, Some(2 | 3)) || next_uid.is_none() {
        return out;
    }
    for line in lines {
        let Some(last) = line.iter().rposition(|&b| b == b' ') else {
            continue;
        };
        let Some(mid) = line[..last].iter().rposition(|&b| b == b' ') else {
            continue;
        };
        let name = &line[..mid];
        let Some((uid, uidv)) = uid_fields(&line[mid + 1..last], &line[last + 1..]) else {
            continue;
        };
        // A name may have been written with its directory; Courier compares the last
        // component.
        let name = match name.iter().rposition(|&b| b == b'/') {
            Some(p) => &name[p + 1..],
            None => name,
        };
        let uidl = match (uid, uidv) {
            (0, _) => version0_uidl(name),
            (u, 0) => format!("UID{u}"),
            (u, v) => format!("UID{u}-{v}"),
        };
        let base = base_of(name);
        if !base.is_empty() && valid_uidl(&uidl) {
            out.insert(base.to_vec(), uidl);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version3_as_courier_writes_it() {
        let t = b"/3 4 1796427598\n\
            1700000000.M1P1.host:2, 21 1:1796427598:0\n\
            1700000001.M2P2.host,S=20:2, 22 2:1796427598:0\n\
            1700000002.M3P3.host:2,S 17 3:1796427598:1\n";
        let m = parse(t);
        assert_eq!(m[&b"1700000000.M1P1.host"[..]], "UID1-1796427598");
        assert_eq!(m[&b"1700000001.M2P2.host"[..]], "UID2-1796427598");
        assert_eq!(m[&b"1700000002.M3P3.host"[..]], "UID3-1796427598");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn version2_zero_uidvalidity_and_version0_names() {
        let t = b"/2 78 123\n\
            a.b.host:2, 21 5:123\n\
            c d.host:2,S 9 6:0\n\
            e+f\"g.host,S=3:2, 3 0:0\n\
            broken line\n\
            x.host 1 2\n\
            y.host 1 2:\n\
            z.host one 2:3\n";
        let m = parse(t);
        assert_eq!(m[&b"a.b.host"[..]], "UID5-123");
        assert_eq!(m[&b"c d.host"[..]], "UID6");
        // Version 0: the name up to ':' (",S=3" included), with + and " encoded.
        assert_eq!(m[&b"e+f\"g.host"[..]], "e+2Bf+22g.host,S=3");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn other_versions_and_garbage_are_ignored() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"a.host 1 2:3:0\n").is_empty());
        assert!(parse(b"/1 5 6\na.host 1 2:3:0\n").is_empty());
        assert!(parse(b"/4 5 6\na.host 1 2:3:0\n").is_empty());
        assert!(parse(b"/3\na.host 1 2:3:0\n").is_empty());
        // The uidvalidity of the header is optional (Courier then takes the time).
        assert_eq!(parse(b"/3 5\na.host 1 2:3:0\n").len(), 1);
    }

    #[test]
    fn too_long_version0_uidl_is_not_used() {
        let long = format!("/3 2 9\n{} 1 0:9:0\n", "n".repeat(80));
        assert!(parse(long.as_bytes()).is_empty());
    }
}
