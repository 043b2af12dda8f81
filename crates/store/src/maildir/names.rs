//! Maildir file names: our unique names, the base name, the `,S=`/`,W=` fields, and the
//! mapping from base name to UIDL.
//!
//! A name is `<base>[,KEY=VALUE...][:2,FLAGS]`. The base (before the first `,` or `:`)
//! is the unique part: writers never change it, and tools that change flags only
//! rewrite what follows `:`. Dovecot puts sizes in `,S=<octets on disk>` and
//! `,W=<octets with CRLF>`; we do the same. A message stored with CRLF line ends also
//! gets `,D=<lines starting with .>`: `S` equal to `W` and `D=0` say the file is
//! exactly what RETR sends (its wire form), so it can go to the socket unread. Other
//! readers ignore fields they do not know; a tool that rewrites the sizes drops `D`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The unique base of a Maildir file name (before the first `,` or `:`).
pub(crate) fn base_of(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .position(|&b| b == b',' || b == b':')
        .unwrap_or(name.len());
    &name[..end]
}

/// The `,S=`, `,W=` and `,D=` values of a file name, each if present and well-formed
/// (the last of a field given twice counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) s: Option<u64>,
    pub(crate) w: Option<u64>,
    pub(crate) d: Option<u64>,
}

/// The size fields of a file name: the one parser of them.
pub(crate) fn fields_of(name: &[u8]) -> Fields {
    // Called for every message of every open: bytes, no UTF-8 or str parsing.
    let end = memchr::memchr(b':', name).unwrap_or(name.len());
    let mut f = Fields::default();
    for field in name[..end].split(|&b| b == b',').skip(1) {
        match field {
            [b'S', b'=', v @ ..] => f.s = parse_decimal(v),
            [b'W', b'=', v @ ..] => f.w = parse_decimal(v),
            [b'D', b'=', v @ ..] => f.d = parse_decimal(v),
            _ => {}
        }
    }
    f
}

/// The `,S=` and `,W=` values of a file name, if present and well-formed.
pub(crate) fn sizes_of(name: &[u8]) -> (Option<u64>, Option<u64>) {
    let f = fields_of(name);
    (f.s, f.w)
}

/// The name a delivered message gets in `new/`: its base and sizes, and for CRLF
/// storage its count of dot lines.
pub(crate) fn final_name(
    base: &str,
    n: &crate::deliver::Normalized,
    line_ends: crate::deliver::LineEnds,
) -> String {
    match line_ends {
        crate::deliver::LineEnds::Lf => format!("{base},S={},W={}", n.stored, n.wire),
        crate::deliver::LineEnds::Crlf => {
            format!("{base},S={},W={},D={}", n.stored, n.wire, n.dot_lines)
        }
    }
}

/// Whether a name says its file is in wire form: `,S=` and `,W=` present and equal,
/// and `,D=0`. Returns the size then.
pub(crate) fn wire_form_size(name: &[u8]) -> Option<u64> {
    match fields_of(name) {
        Fields {
            s: Some(s),
            w: Some(w),
            d: Some(0),
        } if s == w => Some(w),
        _ => None,
    }
}

/// A non-empty run of ASCII digits that fits a u64 (at most 20 digits).
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// `name` with its `,W=` set to `wire` and, when given, its `,S=` set to `size` (added
/// if missing); the base and the `:2,` flags stay as they are.
pub(crate) fn with_sizes(name: &[u8], size: Option<u64>, wire: u64) -> Vec<u8> {
    let end = name.iter().position(|&b| b == b':').unwrap_or(name.len());
    let (head, flags) = name.split_at(end);
    let mut fields = head.split(|&b| b == b',');
    let mut out = fields.next().unwrap_or_default().to_vec();
    for f in fields {
        // D= counted the old content's dot lines: no longer known.
        if f.starts_with(b"S=") || f.starts_with(b"W=") || f.starts_with(b"D=") {
            continue;
        }
        out.push(b',');
        out.extend_from_slice(f);
    }
    if let Some(s) = size {
        out.extend_from_slice(format!(",S={s}").as_bytes());
    }
    out.extend_from_slice(format!(",W={wire}").as_bytes());
    out.extend_from_slice(flags);
    out
}

/// The UIDL of a message from its base name: the base itself when it already is a
/// valid RFC 1939 unique-id (1–70 octets in 0x21–0x7E) containing a `.` (every
/// standard Maildir name does), otherwise `h:` and 40 hex digits of its SHA-256. The
/// two forms cannot collide: bases never contain `:`. Base names are unique forever,
/// so the UIDL is never reused.
pub(crate) fn uidl_from_base(base: &[u8]) -> String {
    let direct = !base.is_empty()
        && base.len() <= 70
        && base.contains(&b'.')
        && base.iter().all(|&b| (0x21..=0x7e).contains(&b));
    if direct {
        // All bytes are ASCII here.
        return String::from_utf8_lossy(base).into_owned();
    }
    let digest = Sha256::digest(base);
    let mut s = String::with_capacity(42);
    s.push_str("h:");
    for b in &digest[..20] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The delivery time of a base name for ordering (oldest first): the leading seconds,
/// and the microseconds of a `.M<usec>` part (Dovecot's and our names) so that
/// messages of one second keep their order.
pub(crate) fn time_of(base: &[u8]) -> (u64, u64) {
    let num = |b: &[u8]| -> u64 {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count().min(19);
        std::str::from_utf8(&b[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let secs = num(base);
    let usec = base
        .strip_prefix(format!("{secs}.M").as_bytes())
        .map(num)
        .unwrap_or(0);
    (secs, usec)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A new unique base name: `<secs>.M<usecs>P<pid>Q<seq>R<nanos-hex>.<host>`, as Dovecot
/// builds them, plus a per-process counter, so names are unique across processes
/// (pid), within a process (counter), across hosts (host) and across pid reuse (time).
pub(crate) fn new_base(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}R{:x}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        now.subsec_nanos(),
        host
    )
}

/// The host part of names: `/` and `:` are escaped as the Maildir spec says (`\057`,
/// `\072`), `,` too (`\054`) since it starts our fields; other unusual bytes become `_`.
pub(crate) fn host_part() -> String {
    let raw = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let raw = if raw.is_empty() {
        "localhost".to_string()
    } else {
        raw
    };
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_needs_equal_sizes_and_no_dot_lines() {
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=10,D=0:2,S"), Some(10));
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=10,D=0"), Some(10));
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=10,D=1"), None);
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=12,D=0"), None);
        // LF storage (no D), and a flag letter that only looks like the field.
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=10"), None);
        assert_eq!(wire_form_size(b"1.M2.h,S=10,W=10:2,D=0"), None);
        // A size fix drops D: the new content's dot lines are not known.
        assert_eq!(
            with_sizes(b"1.M2.h,S=10,W=10,D=0:2,S", Some(12), 12),
            b"1.M2.h,S=12,W=12:2,S".to_vec()
        );
    }

    #[test]
    fn sizes_are_rewritten_keeping_base_and_flags() {
        assert_eq!(
            with_sizes(b"123.M1P2.host,S=10,W=5:2,S", Some(10), 113),
            b"123.M1P2.host,S=10,W=113:2,S".to_vec()
        );
        assert_eq!(
            with_sizes(b"123.host,W=100000", Some(7), 9),
            b"123.host,S=7,W=9".to_vec()
        );
        assert_eq!(
            sizes_of(&with_sizes(b"b,X=1,W=2:2,", None, 3)),
            (None, Some(3))
        );
    }

    #[test]
    fn base_and_sizes() {
        let n = b"1700000000.M1P2.host,S=120,W=124:2,RS";
        assert_eq!(base_of(n), b"1700000000.M1P2.host");
        assert_eq!(sizes_of(n), (Some(120), Some(124)));
        assert_eq!(sizes_of(b"1.2.host:2,S"), (None, None));
        assert_eq!(sizes_of(b"1.2.host,S=x,W=5"), (None, Some(5)));
        assert_eq!(base_of(b"1.2.host"), b"1.2.host");
    }

    #[test]
    fn uidl_mapping_is_valid_and_stable() {
        assert_eq!(
            uidl_from_base(b"1700000000.M1P2.host"),
            "1700000000.M1P2.host"
        );
        let long = [b'a'; 80];
        let u = uidl_from_base(&long);
        assert!(u.starts_with("h:") && u.len() == 42);
        assert_eq!(u, uidl_from_base(&long));
        let odd = uidl_from_base("1.2.hé st".as_bytes());
        assert!(odd.bytes().all(|b| (0x21..=0x7e).contains(&b)) && odd.len() <= 70);
        assert_ne!(uidl_from_base(b"nodot"), "nodot");
    }

    #[test]
    fn new_names_are_unique_and_clean() {
        let h = host_part();
        let a = new_base(&h);
        let b = new_base(&h);
        assert_ne!(a, b);
        assert!(!a.contains(',') && !a.contains(':') && !a.contains('/'));
        assert_eq!(uidl_from_base(a.as_bytes()), a);
        assert!(time_of(a.as_bytes()).0 > 1_600_000_000);
        assert_eq!(time_of(b"1700000000.M99P1.h"), (1_700_000_000, 99));
        assert!(time_of(b"1700000000.M99P1.h") < time_of(b"1700000000.M100P1.h"));
    }
}
