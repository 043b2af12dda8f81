//! The report as text for people: Offer, then Conformance and Exposure with every
//! check (findings first), then a one-line summary.

use std::fmt::Write as _;

use super::{CheckResult, PerState, Report, Section, Severity, Status};

fn list(v: &Option<Vec<String>>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_empty() => "(none)".into(),
        Some(v) => v.join(" "),
    }
}

fn per_state(p: &PerState, implicit: bool) -> String {
    if implicit {
        format!("TLS: {}", list(&p.tls))
    } else {
        format!("cleartext: {}; TLS: {}", list(&p.cleartext), list(&p.tls))
    }
}

fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<16}{value}");
}

fn status_word(c: &CheckResult) -> String {
    match (c.status, c.severity) {
        (Status::Fail, Some(Severity::High)) => "FAIL high  ".into(),
        (Status::Fail, Some(Severity::Medium)) => "FAIL medium".into(),
        (Status::Fail, _) => "FAIL low   ".into(),
        (Status::Pass, _) => "pass       ".into(),
        (Status::Skip, _) => "skip       ".into(),
        (Status::Info, _) => "info       ".into(),
    }
}

fn section(out: &mut String, r: &Report, s: Section, name: &str) {
    let checks: Vec<&CheckResult> = r.checks.iter().filter(|c| c.section == s).collect();
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        out,
        "\n{name}: {} passed, {} failed, {} skipped, {} info",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
        count(Status::Info)
    );
    let order = |c: &&CheckResult| match c.status {
        Status::Fail => 0,
        Status::Info => 1,
        Status::Pass => 2,
        Status::Skip => 3,
    };
    let mut sorted = checks.clone();
    sorted.sort_by_key(|c| (order(c), std::cmp::Reverse(c.severity)));
    for c in sorted {
        let _ = writeln!(out, "  [{}] {:<24} {}", status_word(c), c.id, c.rfc);
        if c.status == Status::Fail {
            let _ = writeln!(out, "                {}", c.title);
        }
        if !c.detail.is_empty() {
            let mut d = c.detail.clone();
            if c.status != Status::Fail && d.chars().count() > 150 {
                d = d.chars().take(147).collect::<String>() + "...";
            }
            let _ = writeln!(out, "                {d}");
        }
    }
}

/// Renders the report.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::new();
    let implicit = r.target.implicit_tls;
    let _ = writeln!(
        out,
        "correio probe {} ({}:{}), {}, {:.1} s",
        r.target.url,
        r.target.host,
        r.target.port,
        r.started,
        r.duration_ms as f64 / 1000.0
    );
    let o = &r.offer;
    let _ = writeln!(out, "\nOffer");
    row(&mut out, "greeting", o.greeting.as_deref().unwrap_or("-"));
    row(
        &mut out,
        "APOP",
        o.apop_timestamp
            .as_deref()
            .unwrap_or("no timestamp in the greeting"),
    );
    if !implicit {
        row(&mut out, "CAPA cleartext", &list(&o.capa.cleartext));
    }
    row(&mut out, "CAPA TLS", &list(&o.capa.tls));
    row(&mut out, "CAPA logged in", &list(&o.capa.transaction));
    row(&mut out, "SASL", &per_state(&o.sasl, implicit));
    row(
        &mut out,
        "AUTH listing",
        &per_state(&o.auth_listing, implicit),
    );
    if !implicit {
        row(
            &mut out,
            "STLS",
            if o.stls { "offered" } else { "not offered" },
        );
    }
    row(
        &mut out,
        "IMPLEMENTATION",
        o.implementation.as_deref().unwrap_or("-"),
    );
    row(
        &mut out,
        "EXPIRE",
        o.expire.as_deref().unwrap_or("not announced"),
    );
    row(
        &mut out,
        "LOGIN-DELAY",
        o.login_delay.as_deref().unwrap_or("not announced"),
    );
    for v in &o.tls.versions {
        let value = match (&v.cipher_suite, &v.error) {
            (Some(c), _) if v.supported => format!("yes, {c}"),
            (_, Some(e)) => format!("no ({e})"),
            _ => "no".into(),
        };
        row(&mut out, v.version, &value);
    }
    if let Some(c) = &o.tls.certificate {
        row(&mut out, "certificate", &c.subject);
        let pad = |s: String| format!("{:<18}{s}", "");
        let mut lines = vec![format!(
            "issuer {}{}",
            c.issuer,
            if c.self_issued { " (self-issued)" } else { "" }
        )];
        lines.push(format!(
            "SAN {}",
            if c.san.is_empty() {
                "(none)".into()
            } else {
                c.san.join(", ")
            }
        ));
        lines.push(format!(
            "valid {} to {} ({} days left)",
            c.not_before, c.not_after, c.days_left
        ));
        lines.push(match &c.trust_error {
            None => format!("chain: trusted ({})", o.tls.trust),
            Some(e) => format!("chain: NOT trusted: {e} ({})", o.tls.trust),
        });
        lines.push(match &c.hostname_error {
            None => format!("hostname {}: matches", c.hostname),
            Some(e) => format!("hostname {}: does NOT match: {e}", c.hostname),
        });
        lines.push(format!(
            "{} certificate(s) sent; SHA-256 {}",
            c.chain_length, c.sha256
        ));
        for l in lines {
            let _ = writeln!(out, "{}", pad(l));
        }
    }
    match (&r.mailbox, &r.account_error) {
        (Some(m), _) => row(
            &mut out,
            &format!("mailbox {}", m.user),
            &format!(
                "{} messages, {} octets; {} retrieved, {} deleted",
                m.messages, m.octets, m.retrieved, m.deleted
            ),
        ),
        (None, Some(e)) => row(&mut out, "account", &format!("not checked: {e}")),
        (None, None) => {}
    }
    if let Some(e) = &r.enumeration {
        let side = |s: &super::Side| match s.median_ms {
            Some(m) => format!("median {m} ms of {}", s.times_ms.len()),
            None => "no sample".into(),
        };
        let mut v = format!("unknown user {}", side(&e.unknown_user));
        if let Some(k) = &e.known_user {
            let _ = write!(v, "; test account, wrong password {}", side(k));
        }
        row(&mut out, "failed logins", &v);
    }
    section(&mut out, r, Section::Conformance, "Conformance");
    section(&mut out, r, Section::Exposure, "Exposure");
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\nNotes");
        for n in &r.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\nSummary: {} findings ({} high, {} medium, {} low), {} passed, {} skipped, {} info",
        s.failed, s.high, s.medium, s.low, s.passed, s.skipped, s.info
    );
    out
}
