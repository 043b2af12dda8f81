//! Fuzz bodies for the probe's parsers (`fuzz/fuzz_targets/client_probe_*.rs`); the
//! seed corpus is replayed through them by `crates/client/tests/probe_fuzz_corpus.rs`.
//! Each must never panic and asserts its parser's invariants.

use super::parse::{self, Kind};
use super::x509;

/// Response classification, multi-line splitting, listings, TOP prefixes, URLs.
pub fn response(data: &[u8]) {
    let (control, data) = match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => (0, data),
    };

    // One status line: classification keeps what was sent.
    let first = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    let c = parse::classify(first);
    assert_eq!(c.octets, first.len());
    if matches!(c.kind, Kind::Ok | Kind::Err) && c.exact_case {
        assert!(first.starts_with(b"+OK") || first.starts_with(b"-ERR"));
    }
    if let Some(code) = &c.code {
        assert!(c.text.starts_with(&format!("[{code}]")));
    }
    let shown = parse::printable(data, 64);
    assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)));
    assert!(shown.len() <= 64 + 4 + 3);

    // The rest as a multi-line body.
    let body = parse::split_body(data);
    assert_eq!(body.exact_size(), body.content.len() as u64);
    assert_eq!(
        body.content.iter().filter(|&&b| b == b'\n').count(),
        body.lines
    );
    assert_eq!(body.content_lines().count(), body.lines);
    assert!(body.size_lf() <= body.exact_size());
    assert!(body.size_with_stuffing() >= body.exact_size());
    assert!(body.stuffed + body.unstuffed_dots <= body.lines);
    assert!(body.content.len() <= data.len() + body.lines * 2);
    if body.terminated {
        assert!(body.trailing < data.len());
    } else {
        assert_eq!(body.trailing, 0);
    }
    // TOP: a prefix, growing with n, the whole message at most.
    let n = u64::from(control % 8);
    let small = parse::top_prefix(&body.content, n);
    let large = parse::top_prefix(&body.content, n + 1);
    assert!(body.content.starts_with(small));
    assert!(large.starts_with(small));

    // Listings.
    let text = String::from_utf8_lossy(data);
    if let Some((a, b)) = parse::parse_stat(&text) {
        assert_eq!(parse::parse_stat(&format!("{a} {b}")), Some((a, b)));
    }
    if let Some((a, b)) = parse::parse_scan(first) {
        assert_eq!(
            parse::parse_scan(format!("{a} {b}").as_bytes()),
            Some((a, b))
        );
    }
    if let Some((n, uid)) = parse::parse_uidl(first)
        && parse::uid_valid(&uid)
    {
        assert_eq!(
            parse::parse_uidl(format!("{n} {uid}").as_bytes()),
            Some((n, uid.clone()))
        );
        assert!(!uid.contains(' '));
    }
    if let Some(ts) = parse::apop_timestamp(&text) {
        assert!(ts.starts_with('<') && ts.ends_with('>'));
        assert!(text.contains(ts));
        let _ = parse::apop_timestamp_well_formed(ts);
    }
    let _ = parse::capa_line_ok(first);

    // URLs: what parses prints back to the same target.
    if let Ok(t) = parse::parse_url(&text) {
        let host = if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        };
        let scheme = if t.implicit_tls { "pop3s" } else { "pop3" };
        assert_eq!(
            parse::parse_url(&format!("{scheme}://{host}:{}", t.port)),
            Ok(t)
        );
    }
}

/// The certificate reader on arbitrary DER: bounded output, printable times.
pub fn x509(data: &[u8]) {
    if let Some(info) = x509::parse(data) {
        assert!(info.san.len() <= x509::MAX_NAMES);
        let _ = x509::format_time(info.not_before);
        let _ = x509::format_time(info.not_after);
        assert!(info.subject.chars().count() <= x509::MAX_NAMES * (x509::MAX_STRING + 64));
        assert!(!info.subject.chars().any(char::is_control));
        assert!(!info.issuer.chars().any(char::is_control));
    }
}
