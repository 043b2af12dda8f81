//! Reading Dovecot's `dovecot-uidlist`, so that a Maildir that Dovecot served keeps the
//! POP3 UIDLs its clients already saw.
//!
//! Dovecot's default `pop3_uidl_format` is `%08Xu%08Xv`: the IMAP UID and the
//! UIDVALIDITY, each as 8 hex digits; Dovecot 2.3 expands `%X` in lower case (checked
//! against a running Dovecot in `tests/dovecot_interop.rs`). When a record carries a `P<uidl>`
//! extension (a UIDL Dovecot kept from an earlier migration), that one wins, as in
//! Dovecot; an empty `P` stands for the file name up to `:` (Dovecot's
//! `maildir_mail_get_special`, `MAIL_FETCH_UIDL_BACKEND`). Only versions 1 and 3 of the
//! file exist; anything else is ignored.
//!
//! Formats: version 3 header `3 V<validity> N<next> G<guid>...`, records
//! `<uid> [<ext>...] :<filename>`; version 1 header `1 <validity> <next>`, records
//! `<uid> <filename>`. The file name is matched by its base (before `,` or `:`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::names::base_of;

/// The uidlist file name.
pub(crate) const UIDLIST_FILE: &str = "dovecot-uidlist";
const MAX_UIDLIST_BYTES: u64 = 256 * 1024 * 1024;

/// Base name → the UIDL Dovecot's POP3 server showed.
pub(crate) fn load(root: &Path) -> HashMap<Vec<u8>, String> {
    let path = root.join(UIDLIST_FILE);
    match fs::metadata(&path) {
        Ok(m) if m.len() <= MAX_UIDLIST_BYTES => {}
        _ => return HashMap::new(),
    }
    fs::read(&path).map(|b| parse(&b)).unwrap_or_default()
}

fn valid_uidl(u: &str) -> bool {
    !u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Parses the file; malformed records are skipped.
pub(crate) fn parse(bytes: &[u8]) -> HashMap<Vec<u8>, String> {
    let mut out = HashMap::new();
    let mut lines = bytes.split(|&b| b == b'\n');
    let Some(header) = lines.next() else {
        return out;
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return out;
    };
    let mut h = header.split(' ');
    let version = h.next();
    let validity: Option<u32> = match version {
        Some("3") => h
            .find_map(|f| f.strip_prefix('V'))
            .and_then(|v| v.parse().ok()),
        Some("1") => h.next().and_then(|v| v.parse().ok()),
        _ => None,
    };
    let Some(validity) = validity else { return out };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (fields, name): (&[u8], &[u8]) = if version == Some("3") {
            match line.iter().position(|&b| b == b':') {
                Some(p) => (&line[..p], &line[p + 1..]),
                None => continue,
            }
        } else {
            match line.iter().position(|&b| b == b' ') {
                Some(p) => (&line[..p], &line[p + 1..]),
                None => continue,
            }
        };
        let Ok(fields) = std::str::from_utf8(fields) else {
            continue;
        };
        let mut f = fields.split_ascii_whitespace();
        let Some(uid) = f.next().and_then(|u| u.parse::<u32>().ok()) else {
            continue;
        };
        let mut uidl = format!("{uid:08x}{validity:08x}");
        for ext in f {
            let Some(p) = ext.strip_prefix('P') else {
                continue;
            };
            if valid_uidl(p) {
                uidl = p.to_string();
            } else if p.is_empty() {
                // An empty `P` is Dovecot's short form for "the file name up to ':'"
                // (its storage ID, `,S=`/`,W=` included).
                let id = name.split(|&b| b == b':').next().unwrap_or(name);
                if let Ok(id) = std::str::from_utf8(id)
                    && valid_uidl(id)
                {
                    uidl = id.to_string();
                }
            }
        }
        let base = base_of(name);
        if !base.is_empty() {
            out.insert(base.to_vec(), uidl);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version3_with_and_without_pop3_uidl() {
        let t = b"3 V1700000000 N4 G0123456789abcdef\n1 :1.M1P1.host,S=10,W=12:2,S\n2 W5 :2.M2P2.host\n3 Pold-uidl-3 :3.M3.host\nbad line\n";
        let m = parse(t);
        assert_eq!(m[&b"1.M1P1.host"[..]], "000000016553f100");
        assert_eq!(m[&b"2.M2P2.host"[..]], "000000026553f100");
        assert_eq!(m[&b"3.M3.host"[..]], "old-uidl-3");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn empty_pop3_uidl_is_the_file_name_up_to_the_colon() {
        let t = b"3 V7 N3\n1 P :1.M1P1.host,S=10,W=12:2,S\n2 P W5 :2.M2.host\n";
        let m = parse(t);
        assert_eq!(m[&b"1.M1P1.host"[..]], "1.M1P1.host,S=10,W=12");
        assert_eq!(m[&b"2.M2.host"[..]], "2.M2.host");
    }

    #[test]
    fn version1_and_garbage() {
        let m = parse(b"1 42 3\n1 1.a.host\n2 2.b.host:2,\n");
        assert_eq!(m[&b"1.a.host"[..]], "000000010000002a");
        assert_eq!(m[&b"2.b.host"[..]], "000000020000002a");
        assert!(parse(b"").is_empty());
        assert!(parse(b"9 x\n1 :a").is_empty());
    }
}
