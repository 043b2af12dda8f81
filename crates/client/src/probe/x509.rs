//! Just enough X.509 (RFC 5280) to describe a server certificate in a report:
//! subject, issuer, validity and subject alternative names. Trust is not decided
//! here (rustls/webpki does that); this only reads DER for people.
//!
//! A bounded DER reader: definite lengths of at most four octets, at most
//! [`MAX_NAMES`] names, strings cut at [`MAX_STRING`] characters. Anything it does not
//! understand makes the whole parse return `None` (fuzzed by
//! `fuzz/fuzz_targets/client_probe_x509.rs`).

use std::fmt::Write as _;

/// At most this many RDN attributes per name and this many SAN entries.
pub const MAX_NAMES: usize = 64;
/// Strings are cut at this many characters.
pub const MAX_STRING: usize = 256;

/// What a report shows of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as `CN=..., O=...`.
    pub subject: String,
    /// The issuer, in the same form.
    pub issuer: String,
    /// Whether subject and issuer are the same name (octet for octet).
    pub self_issued: bool,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// subjectAltName entries: `DNS:name`, `IP:addr`, `email:addr`, `URI:...`.
    pub san: Vec<String>,
    /// The serial number in hex.
    pub serial: String,
}

/// One DER element: tag, content, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers never occur in the parts we read
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads an element with `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// Dotted form of an OBJECT IDENTIFIER's content.
fn oid(content: &[u8]) -> Option<String> {
    if content.is_empty() || content.len() > 64 {
        return None;
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, &b) in content.iter().enumerate() {
        if acc > (u64::MAX >> 7) {
            return None;
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i == content.len() - 1 {
            return None;
        }
    }
    Some(
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// A directory string of any of the usual types, made printable.
fn string(tag: u8, content: &[u8]) -> Option<String> {
    let s: String = match tag {
        // UTF8String, PrintableString, IA5String, VisibleString, NumericString
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => String::from_utf8_lossy(content).into_owned(),
        // TeletexString: read as Latin-1.
        0x14 => content.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = content
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UTF-32BE.
        0x1c => content
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or('\u{fffd}')
            })
            .collect(),
        _ => return None,
    };
    Some(clean(&s))
}

/// Control characters escaped, cut at [`MAX_STRING`].
fn clean(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= MAX_STRING {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn attribute_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "DC",
        other => other,
    }
}

/// A Name (SEQUENCE OF RDN) as `CN=x, O=y`.
fn name(content: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    let mut rdns = content;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, 0x31)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (atv, rest) = expect(attrs, 0x30)?;
            attrs = rest;
            let (o, value) = expect(atv, 0x06)?;
            let (tag, v, _) = tlv(value)?;
            let o = oid(o)?;
            let v = string(tag, v).unwrap_or_else(|| "?".to_owned());
            if parts.len() >= MAX_NAMES {
                return None;
            }
            parts.push(format!("{}={v}", attribute_name(&o)));
        }
    }
    Some(parts.join(", "))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, content: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(content).ok()?;
    let digits = s.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> { digits.get(r)?.parse().ok() };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = n(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 14) => (n(0..4)?, 4),
        _ => return None,
    };
    let (mo, d, h, mi, se) = (
        n(rest..rest + 2)?,
        n(rest + 2..rest + 4)?,
        n(rest + 4..rest + 6)?,
        n(rest + 6..rest + 8)?,
        n(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The subjectAltName extension's GeneralNames.
fn san(content: &[u8], out: &mut Vec<String>) -> Option<()> {
    let (mut names, _) = expect(content, 0x30)?;
    while !names.is_empty() {
        let (tag, v, rest) = tlv(names)?;
        names = rest;
        if out.len() >= MAX_NAMES {
            return None;
        }
        out.push(match tag {
            0x81 => format!("email:{}", clean(&String::from_utf8_lossy(v))),
            0x82 => format!("DNS:{}", clean(&String::from_utf8_lossy(v))),
            0x86 => format!("URI:{}", clean(&String::from_utf8_lossy(v))),
            0x87 => match v.len() {
                4 => format!("IP:{}", std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3])),
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(v);
                    format!("IP:{}", std::net::Ipv6Addr::from(b))
                }
                _ => "IP:?".to_owned(),
            },
            _ => continue,
        });
    }
    Some(())
}

/// Reads a DER certificate.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (cert, _) = expect(der, 0x30)?;
    let (tbs, _) = expect(cert, 0x30)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if let Some((0xa0, _, r)) = tlv(rest) {
        rest = r;
    }
    let (serial, r) = expect(rest, 0x02)?;
    let (_sig_alg, r) = expect(r, 0x30)?;
    let (issuer_raw, r) = expect(r, 0x30)?;
    let (validity, r) = expect(r, 0x30)?;
    let (subject_raw, r) = expect(r, 0x30)?;
    let (_spki, mut r) = expect(r, 0x30)?;
    let (t1, v1, after) = tlv(validity)?;
    let (t2, v2, _) = tlv(after)?;
    let mut info = CertInfo {
        subject: name(subject_raw)?,
        issuer: name(issuer_raw)?,
        self_issued: subject_raw == issuer_raw,
        not_before: time(t1, v1)?,
        not_after: time(t2, v2)?,
        san: Vec::new(),
        // Without DER's sign octet, as `openssl x509 -serial` shows it.
        serial: serial
            .strip_prefix(&[0])
            .filter(|rest| rest.first().is_some_and(|b| b & 0x80 != 0))
            .unwrap_or(serial)
            .iter()
            .take(32)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    };
    while !r.is_empty() {
        let (tag, content, after) = tlv(r)?;
        r = after;
        if tag != 0xa3 {
            continue; // issuer/subject unique ids
        }
        let (mut exts, _) = expect(content, 0x30)?;
        while !exts.is_empty() {
            let (ext, after) = expect(exts, 0x30)?;
            exts = after;
            let (id, mut v) = expect(ext, 0x06)?;
            if let Some((0x01, _, after)) = tlv(v) {
                v = after; // critical
            }
            let (value, _) = expect(v, 0x04)?;
            if oid(id)? == "2.5.29.17" {
                san(value, &mut info.san)?;
            }
        }
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x17, b"7001010000Z"), None);
        assert_eq!(format_time(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(format_time(2_524_607_999), "2049-12-31T23:59:59Z");
        for t in [0, 1, 86_399, 951_868_800, 4_102_444_800, -86_400] {
            let s = format_time(t);
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(time(0x18, format!("{digits}Z").as_bytes()), Some(t), "{s}");
        }
    }

    #[test]
    fn oids() {
        assert_eq!(oid(&[0x55, 0x1d, 0x11]).as_deref(), Some("2.5.29.17"));
        assert_eq!(
            oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
        assert_eq!(oid(&[0x86]), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse(&[0x30, 0x80]), None);
    }
}
