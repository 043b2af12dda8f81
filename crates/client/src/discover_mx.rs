//! The last step of discovery: the domain's MX records. A domain whose mail is
//! handled by Microsoft 365 (`*.mail.protection.outlook.com`) or Google Workspace
//! (`aspmx.l.google.com`, `*.googlemail.com`) reads its mail from the provider's
//! POP3 server, which requires OAuth2; this is how `--configure` recognises such
//! custom domains when they publish neither SRV records nor autoconfig.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioAsyncResolver;
use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};

use crate::fetch::config::AccountConfig;

/// The provider's POP3 server for a mail exchanger host name, if it is one we know.
pub fn pop3_for_mx(mx: &str) -> Option<(&'static str, &'static str)> {
    let mx = mx.trim_end_matches('.').to_ascii_lowercase();
    if mx.ends_with(".mail.protection.outlook.com") || mx.ends_with(".olc.protection.outlook.com") {
        Some(("outlook.office365.com", "Microsoft 365"))
    } else if mx == "aspmx.l.google.com"
        || mx.ends_with(".aspmx.l.google.com")
        || mx.ends_with(".googlemail.com")
        || mx == "smtp.google.com"
    {
        Some(("pop.gmail.com", "Google Workspace"))
    } else {
        None
    }
}

/// Looks up `domain`'s MX records (through `server` if given) and maps the preferred
/// one to its provider's POP3 settings (implicit TLS, port 995, the address as login).
pub async fn lookup(
    domain: &str,
    address: &str,
    server: Option<SocketAddr>,
    timeout: Duration,
    notes: &mut Vec<String>,
) -> Option<AccountConfig> {
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
            Err(e) => {
                notes.push(format!("DNS MX {domain}: no system DNS configuration: {e}"));
                return None;
            }
        },
    };
    let name = format!("{domain}.");
    let lookup = match resolver.mx_lookup(name.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            notes.push(format!("DNS MX {name}: {e}"));
            return None;
        }
    };
    let mut recs: Vec<_> = lookup.iter().collect();
    recs.sort_by_key(|r| r.preference());
    let first = recs.first()?.exchange().to_utf8();
    match pop3_for_mx(&first) {
        Some((host, provider)) => {
            notes.push(format!(
                "DNS MX {name} -> {first}: {provider}, POP3 at {host}:995"
            ));
            Some(AccountConfig {
                host: Some(host.to_owned()),
                port: Some(995),
                tls: Some("implicit".to_owned()),
                user: Some(address.to_owned()),
                ..Default::default()
            })
        }
        None => {
            notes.push(format!("DNS MX {name} -> {first}: not a known provider"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_exchangers() {
        assert_eq!(
            pop3_for_mx("contoso-com.mail.protection.outlook.com.").map(|p| p.0),
            Some("outlook.office365.com")
        );
        assert_eq!(
            pop3_for_mx("ASPMX.L.GOOGLE.COM").map(|p| p.0),
            Some("pop.gmail.com")
        );
        assert_eq!(
            pop3_for_mx("alt1.aspmx.l.google.com").map(|p| p.0),
            Some("pop.gmail.com")
        );
        assert_eq!(pop3_for_mx("mx.example.org"), None);
        assert_eq!(pop3_for_mx("evil-outlook.com"), None);
    }
}
