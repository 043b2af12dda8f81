//! Autodiscovery of POP3 settings from an e-mail address, for
//! `correio fetch --configure`.
//!
//! Order: RFC 6186 SRV records (`_pop3s._tcp.DOMAIN` first, then `_pop3._tcp.DOMAIN`,
//! which means STLS), then the Mozilla autoconfig XML — the ISP's own URLs
//! (`autoconfig.DOMAIN`, then `DOMAIN/.well-known/autoconfig`), then the ISPDB, then
//! the domain's MX records for Microsoft 365 and Google Workspace (`discover_mx`).
//! Nothing found here is trusted blindly: the caller confirms the result with a live
//! CAPA over TLS with certificate checks, and shows the user what was found.
//!
//! The DNS server and the HTTP base URLs can be replaced (tests point them at servers
//! on loopback).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioAsyncResolver;
use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};

use crate::fetch::config::AccountConfig;

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// A DNS server instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// Replaces `https://autoconfig.DOMAIN` (and the well-known URL's host).
    pub autoconfig_base: Option<String>,
    /// Replaces the ISPDB base URL.
    pub ispdb_base: Option<String>,
    /// Per-lookup timeout.
    pub timeout: Duration,
}

/// The public ISPDB.
pub const ISPDB: &str = "https://autoconfig.thunderbird.net/v1.1";

/// What was found.
#[derive(Debug, Clone)]
pub struct Found {
    /// host, port, tls, user filled in.
    pub settings: AccountConfig,
    /// Where each piece came from, for the user to see.
    pub notes: Vec<String>,
}

/// Errors of discovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// Not an address.
    #[error("{0:?} is not an e-mail address")]
    BadAddress(String),
    /// Nothing anywhere.
    #[error("no POP3 settings found for {domain} (tried: {tried})")]
    NotFound {
        /// The domain.
        domain: String,
        /// What was tried.
        tried: String,
    },
}

/// Discovers POP3 settings for `address`.
pub async fn discover(address: &str, opts: &Discovery) -> Result<Found, DiscoverError> {
    let (local, domain) = address
        .rsplit_once('@')
        .filter(|(l, d)| !l.is_empty() && d.contains('.') || !l.is_empty() && !d.is_empty())
        .ok_or_else(|| DiscoverError::BadAddress(address.to_owned()))?;
    if domain.contains(['/', ' ', '?', '#']) {
        return Err(DiscoverError::BadAddress(address.to_owned()));
    }
    let timeout = if opts.timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        opts.timeout
    };
    let mut tried = Vec::new();
    let mut notes = Vec::new();

    for (service, tls) in [("_pop3s._tcp", "implicit"), ("_pop3._tcp", "starttls")] {
        let name = format!("{service}.{domain}.");
        tried.push(format!("DNS SRV {name}"));
        match srv(&name, opts.dns_server, timeout).await {
            Ok(Some((host, port))) => {
                notes.push(format!("DNS SRV {name} -> {host}:{port}"));
                return Ok(Found {
                    settings: AccountConfig {
                        host: Some(host),
                        port: Some(port),
                        tls: Some(tls.to_owned()),
                        user: Some(address.to_owned()),
                        ..Default::default()
                    },
                    notes,
                });
            }
            Ok(None) => {}
            Err(e) => notes.push(format!("DNS SRV {name}: {e}")),
        }
    }

    let enc_addr = percent_encode(address);
    let mut urls = match &opts.autoconfig_base {
        Some(base) => vec![
            format!("{base}/mail/config-v1.1.xml?emailaddress={enc_addr}"),
            format!("{base}/.well-known/autoconfig/mail/config-v1.1.xml"),
        ],
        None => vec![
            format!("https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={enc_addr}"),
            format!("https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml"),
        ],
    };
    urls.push(format!(
        "{}/{domain}",
        opts.ispdb_base
            .as_deref()
            .unwrap_or(ISPDB)
            .trim_end_matches('/')
    ));
    for url in urls {
        tried.push(url.clone());
        let body = match tokio::time::timeout(timeout, http_get(&url)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                notes.push(format!("{url}: {e}"));
                continue;
            }
            Err(_) => {
                notes.push(format!("{url}: timed out"));
                continue;
            }
        };
        match parse_autoconfig(&body, address, local, domain) {
            Ok(Some(settings)) => {
                notes.push(format!("autoconfig {url}"));
                return Ok(Found { settings, notes });
            }
            Ok(None) => notes.push(format!("{url}: no POP3 server listed")),
            Err(e) => notes.push(format!("{url}: {e}")),
        }
    }
    // Last: a domain whose mail Microsoft 365 or Google Workspace handles (MX).
    tried.push(format!("DNS MX {domain}."));
    if let Some(settings) =
        crate::discover_mx::lookup(domain, address, opts.dns_server, timeout, &mut notes).await
    {
        return Ok(Found { settings, notes });
    }
    Err(DiscoverError::NotFound {
        domain: domain.to_owned(),
        tried: tried.join(", "),
    })
}

async fn srv(
    name: &str,
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Option<(String, u16)>, String> {
    let mut ro = ResolverOpts::default();
    ro.timeout = timeout;
    ro.attempts = 1;
    let resolver = match server {
        Some(addr) => {
            let mut cfg = ResolverConfig::new();
            cfg.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            TokioAsyncResolver::tokio(cfg, ro)
        }
        None => match hickory_resolver::system_conf::read_system_conf() {
            Ok((cfg, _)) => TokioAsyncResolver::tokio(cfg, ro),
            Err(e) => return Err(format!("no system DNS configuration: {e}")),
        },
    };
    let lookup = match resolver.srv_lookup(name).await {
        Ok(l) => l,
        Err(e)
            if matches!(
                e.kind(),
                hickory_resolver::error::ResolveErrorKind::NoRecordsFound { .. }
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    // RFC 2782: lowest priority first, then highest weight; "." means "not offered".
    let mut recs: Vec<_> = lookup.iter().collect();
    recs.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
    for r in recs {
        let target = r.target().to_utf8();
        let target = target.trim_end_matches('.');
        if target.is_empty() || r.port() == 0 {
            continue;
        }
        return Ok(Some((target.to_owned(), r.port())));
    }
    Ok(None)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Parses a Mozilla autoconfig document; returns the best POP3 server (SSL before
/// STARTTLS before plain).
pub fn parse_autoconfig(
    xml: &str,
    address: &str,
    local: &str,
    domain: &str,
) -> Result<Option<AccountConfig>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("bad XML: {e}"))?;
    let mut best: Option<(u8, AccountConfig)> = None;
    for server in doc
        .descendants()
        .filter(|n| n.has_tag_name("incomingServer") && n.attribute("type") == Some("pop3"))
    {
        let text = |tag: &str| {
            server
                .children()
                .find(|c| c.has_tag_name(tag))
                .and_then(|c| c.text())
                .map(|t| t.trim().to_owned())
        };
        let Some(host) = text("hostname") else {
            continue;
        };
        let (rank, tls) = match text("socketType").as_deref() {
            Some("SSL") => (0, "implicit"),
            Some("STARTTLS") => (1, "starttls"),
            _ => (2, "none"),
        };
        let port = match text("port").map(|p| p.parse::<u16>()) {
            Some(Ok(p)) => p,
            Some(Err(_)) => continue,
            None => {
                if rank == 0 {
                    995
                } else {
                    110
                }
            }
        };
        let user = text("username").map(|u| {
            u.replace("%EMAILADDRESS%", address)
                .replace("%EMAILLOCALPART%", local)
                .replace("%EMAILDOMAIN%", domain)
        });
        let cfg = AccountConfig {
            host: Some(host.replace("%EMAILDOMAIN%", domain)),
            port: Some(port),
            tls: Some(tls.to_owned()),
            user: user.or_else(|| Some(address.to_owned())),
            ..Default::default()
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, cfg));
        }
    }
    Ok(best.map(|(_, c)| c))
}

/// Most bytes of an autoconfig document.
const MAX_BODY: usize = 1 << 20;

/// GET over http or https (reqwest with rustls and the system's roots), following up
/// to 3 redirects (relative ones too), status 200 only, the body read as it arrives
/// and refused past [`MAX_BODY`].
async fn http_get(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .user_agent("correio")
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/xml, text/xml")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err("response too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("response too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "body is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoconfig_prefers_ssl_and_substitutes() {
        let xml = r#"<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="example.org">
  <incomingServer type="imap"><hostname>imap.example.org</hostname><port>993</port><socketType>SSL</socketType></incomingServer>
  <incomingServer type="pop3"><hostname>pop.example.org</hostname><port>110</port><socketType>STARTTLS</socketType><username>%EMAILLOCALPART%</username></incomingServer>
  <incomingServer type="pop3"><hostname>pop3s.%EMAILDOMAIN%</hostname><port>995</port><socketType>SSL</socketType><username>%EMAILADDRESS%</username></incomingServer>
</emailProvider></clientConfig>"#;
        let c = parse_autoconfig(xml, "me@example.org", "me", "example.org")
            .unwrap()
            .unwrap();
        assert_eq!(c.host.as_deref(), Some("pop3s.example.org"));
        assert_eq!(c.port, Some(995));
        assert_eq!(c.tls.as_deref(), Some("implicit"));
        assert_eq!(c.user.as_deref(), Some("me@example.org"));
        assert!(parse_autoconfig("<x/>", "a@b", "a", "b").unwrap().is_none());
        assert!(parse_autoconfig("<x", "a@b", "a", "b").is_err());
    }
}
