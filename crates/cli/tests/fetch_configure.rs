//! `correio fetch --configure ADDRESS`: discovery by DNS SRV (a DNS server the test
//! runs on loopback) and by Mozilla autoconfig XML (an HTTP server on loopback),
//! confirmed by a live CAPA against Dovecot over TLS, and the written account works.

mod fetch_support;

use std::fs;

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

fn dovecot() -> Dovecot {
    let mut cfg = DovecotConfig::with_user("me@example.test", "pw");
    cfg.tls = true;
    let d = Dovecot::start(&cfg).unwrap();
    fill_maildir(&d.maildir("me@example.test"), &corpus(3));
    d.give_mail_to_owner().unwrap();
    d
}

fn configure(
    work: &std::path::Path,
    dns: &DnsServer,
    http_base: &str,
    ca: &str,
) -> std::process::Output {
    correio()
        .args(["fetch", "--configure", "me@example.test"])
        .args(["--config", work.join("fetch.toml").to_str().unwrap()])
        .args(["--dns-server", &dns.addr.to_string()])
        .args(["--autoconfig-url", http_base, "--ispdb-url", http_base])
        .args(["--ca", ca])
        .env("HOME", work)
        .output()
        .unwrap()
}

fn fetch_configured(work: &std::path::Path) {
    let md = work.join("Mail");
    let out = correio()
        .args([
            "fetch",
            "--config",
            work.join("fetch.toml").to_str().unwrap(),
        ])
        .args(["--password-command", "echo pw", "--json"])
        .args(["--to", &format!("maildir:{}", md.display())])
        .args(["--state-dir", work.to_str().unwrap()])
        .env("HOME", work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(maildir_messages(&md), sorted(&corpus(3)));
}

#[test]
fn srv_records_then_live_capa_then_config_entry() {
    let d = dovecot();
    let ca = d.cert_pem().unwrap();
    let dns = DnsServer::start(vec![(
        "_pop3s._tcp.example.test.".into(),
        "localhost.".into(),
        d.pop3s_addr().unwrap().port(),
    )]);
    let http = HttpServer::start("/nothing-here", String::new());
    let work = tempdir();
    let out = configure(work.path(), &dns, &http.base, ca.to_str().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("DNS SRV _pop3s._tcp.example.test."), "{err}");
    assert!(err.contains("confirmed"), "{err}");
    let toml = fs::read_to_string(work.path().join("fetch.toml")).unwrap();
    assert!(toml.contains("[account.\"me@example.test\"]"), "{toml}");
    assert!(toml.contains("host = \"localhost\""), "{toml}");
    assert!(toml.contains("tls = \"implicit\""), "{toml}");
    fetch_configured(work.path());
    // Configuring the same address again is refused rather than overwritten.
    let again = configure(work.path(), &dns, &http.base, ca.to_str().unwrap());
    assert!(!again.status.success());
}

/// The autoconfig URL on IPv6 loopback (`http://[::1]:PORT`), answered with a relative
/// redirect: the hand-written HTTP client this replaced got both wrong.
#[test]
fn autoconfig_over_ipv6_loopback_through_a_relative_redirect() {
    let d = dovecot();
    let ca = d.cert_pem().unwrap();
    let dns = DnsServer::start(vec![]);
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <incomingServer type="pop3">
      <hostname>localhost</hostname>
      <port>{}</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
  </emailProvider>
</clientConfig>"#,
        d.pop3_addr().port()
    );
    let http = HttpServer::start_on(
        "[::1]:0",
        Some("/mail/config-v1.1.xml"),
        "/moved/config.xml",
        xml,
    );
    assert!(http.base.starts_with("http://[::1]:"), "{}", http.base);
    let work = tempdir();
    let out = configure(work.path(), &dns, &http.base, ca.to_str().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("confirmed"), "{err}");
    fetch_configured(work.path());
}

#[test]
fn autoconfig_xml_when_no_srv() {
    let d = dovecot();
    let ca = d.cert_pem().unwrap();
    let dns = DnsServer::start(vec![]);
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <incomingServer type="imap"><hostname>imap.example.test</hostname><port>993</port><socketType>SSL</socketType></incomingServer>
    <incomingServer type="pop3">
      <hostname>localhost</hostname>
      <port>{}</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
  </emailProvider>
</clientConfig>"#,
        d.pop3_addr().port()
    );
    let http = HttpServer::start("/mail/config-v1.1.xml", xml);
    let work = tempdir();
    let out = configure(work.path(), &dns, &http.base, ca.to_str().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("autoconfig"), "{err}");
    let toml = fs::read_to_string(work.path().join("fetch.toml")).unwrap();
    assert!(toml.contains("tls = \"starttls\""), "{toml}");
    fetch_configured(work.path());
}

#[test]
fn nothing_found_is_a_clear_error() {
    let dns = DnsServer::start(vec![]);
    let http = HttpServer::start("/nothing-here", String::new());
    let work = tempdir();
    let out = configure(work.path(), &dns, &http.base, "/nonexistent.pem");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no POP3 settings found for example.test"),
        "{err}"
    );
}
