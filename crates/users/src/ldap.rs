//! Users in an LDAP directory (OpenLDAP, 389 DS, Active Directory), through ldap3.
//!
//! - `auth_bind = true` (default): find the user's entry with the search account (or
//!   build its DN from `auth_bind_dn` without searching), then bind as that DN with the
//!   password on a connection of its own. The directory checks the password, whatever
//!   hash it keeps.
//! - `auth_bind = false`: read `password_attribute` (`userPassword`) with the search
//!   account and check the hash here (`{SSHA}`, `{CRYPT}$6$…`, `{ARGON2}`…).
//!
//! TLS: `ldaps://` or StartTLS (`starttls = true`), verified against `ca` or the
//! system's roots. The search connection is kept and shared by concurrent logins
//! (LDAP multiplexes operations on one connection); a user bind gets its own.
//!
//! Values are escaped into filters (RFC 4515) and DNs (RFC 4514). An empty password is
//! refused before any bind (to LDAP it would be an anonymous bind that "succeeds").
//! The directory unreachable, timing out, busy or unwilling is [`Temporary`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use correio_auth::{FailureReason, SaslError, UserRecord};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::config::LdapConfig;
use crate::template::{LdapTemplate, ldap_dn, ldap_filter};
use crate::{OpenError, Temporary, refused};

/// An LDAP user database.
#[derive(Debug)]
pub struct LdapDb {
    config: LdapConfig,
    filter: LdapTemplate,
    bind_dn: Option<LdapTemplate>,
    attributes: BTreeMap<String, String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    search: tokio::sync::Mutex<Option<Ldap>>,
    timeout: Duration,
}

/// LDAP result codes that mean "try again later" (RFC 4511 appendix A).
const BUSY: [u32; 3] = [51, 52, 53];
const INVALID_CREDENTIALS: u32 = 49;
const NO_SUCH_OBJECT: u32 = 32;

fn temp(what: &str, e: impl std::fmt::Display) -> Temporary {
    tracing::warn!(target: "correio::auth", error = %e, "LDAP: {what}");
    Temporary(format!("LDAP {what}: {e}"))
}

impl LdapDb {
    /// Prepares the connection settings (no connection yet).
    pub fn open(c: &LdapConfig) -> Result<LdapDb, OpenError> {
        let config = |(k, r): (String, String)| OpenError::Config(format!("{k}: {r}"));
        let filter = c.filter_template().map_err(config)?;
        let bind_dn = c.bind_dn_template().map_err(config)?;
        let lower = c.uri.to_ascii_lowercase();
        let tls = if lower.starts_with("ldaps://") || c.starttls == Some(true) {
            Some(Arc::new(tls_config(c.ca.as_deref())?))
        } else {
            None
        };
        Ok(LdapDb {
            config: c.clone(),
            filter,
            bind_dn,
            attributes: c.attribute_map(),
            tls,
            search: tokio::sync::Mutex::new(None),
            timeout: c.timeout(),
        })
    }

    fn auth_bind(&self) -> bool {
        self.config.auth_bind.unwrap_or(true)
    }

    async fn connect(&self) -> Result<Ldap, Temporary> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.config.starttls == Some(true));
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.uri)
            .await
            .map_err(|e| temp(&format!("cannot connect to {}", self.config.uri), e))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// The shared search connection, bound as the search account.
    async fn search_conn(&self) -> Result<Ldap, Temporary> {
        let mut slot = self.search.lock().await;
        if let Some(l) = slot.as_mut()
            && !l.is_closed()
        {
            return Ok(l.clone());
        }
        let mut ldap = self.connect().await?;
        if let (Some(dn), Some(pw)) = (&self.config.bind_dn, &self.config.bind_password) {
            let res = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| temp("search account bind", e))?;
            if res.rc != 0 {
                // A configuration problem, but never the user's wrong password.
                tracing::error!(
                    target: "correio::auth",
                    rc = res.rc,
                    text = %res.text,
                    "LDAP: the search account (auth.ldap.bind_dn) cannot bind"
                );
                return Err(Temporary(format!(
                    "LDAP search account bind refused (rc {})",
                    res.rc
                )));
            }
        }
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    async fn drop_search_conn(&self) {
        *self.search.lock().await = None;
    }

    fn wanted_attributes(&self) -> Vec<String> {
        let mut a: Vec<String> = self.attributes.values().cloned().collect();
        if !self.auth_bind() {
            a.push(self.password_attribute());
        }
        if a.is_empty() {
            // RFC 4511: "1.1" asks for no attributes (an empty list means all).
            a.push("1.1".into());
        }
        a
    }

    fn password_attribute(&self) -> String {
        self.config
            .password_attribute
            .clone()
            .unwrap_or_else(|| "userPassword".into())
    }

    /// The user's entry (`None`: no such user, or an ambiguous filter, logged).
    async fn find(&self, user: &str) -> Result<Option<SearchEntry>, Temporary> {
        let filter = ldap_filter(&self.filter, user);
        let attrs = self.wanted_attributes();
        let mut last = None;
        for _attempt in 0..2 {
            let mut ldap = self.search_conn().await?;
            match ldap
                .with_timeout(self.timeout)
                .search(&self.config.base, Scope::Subtree, &filter, attrs.clone())
                .await
            {
                Ok(result) => {
                    let (entries, res) = (result.0, result.1);
                    if res.rc == NO_SUCH_OBJECT {
                        return Ok(None);
                    }
                    if BUSY.contains(&res.rc) || (res.rc != 0 && entries.is_empty()) {
                        return Err(temp("search", format!("rc {}: {}", res.rc, res.text)));
                    }
                    return match entries.len() {
                        0 => Ok(None),
                        1 => Ok(entries.into_iter().next().map(SearchEntry::construct)),
                        n => {
                            tracing::error!(
                                target: "correio::auth",
                                user,
                                entries = n,
                                "LDAP: the filter matches more than one entry; refusing the login"
                            );
                            Ok(None)
                        }
                    };
                }
                Err(e) => {
                    // A dropped connection: once more on a fresh one.
                    self.drop_search_conn().await;
                    last = Some(e);
                }
            }
        }
        Err(temp(
            "search",
            last.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }

    fn record(&self, user: &str, entry: &SearchEntry) -> UserRecord {
        let fields = self.attributes.iter().filter_map(|(field, attr)| {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(attr))
                .and_then(|(_, v)| v.first())
                .map(|v| (field.clone(), v.clone()))
        });
        crate::record_from(user, fields)
    }

    /// The user's record (no password), or none.
    pub async fn lookup(&self, user: &str) -> Result<Option<UserRecord>, Temporary> {
        Ok(self.find(user).await?.map(|e| self.record(user, &e)))
    }

    /// Checks `password` as configured (bind, or compare the stored hash).
    pub async fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        if !self.auth_bind() {
            let entry = self.find(user).await?;
            let record = entry.map(|e| {
                let mut r = self.record(user, &e);
                let attr = self.password_attribute();
                r.password = e
                    .attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&attr))
                    .and_then(|(_, v)| v.first())
                    .filter(|v| !v.is_empty())
                    .map(|v| correio_auth::StoredSecret::parse(v));
                r
            });
            return correio_auth::verify_record(user, password, record);
        }
        let Ok(password) = std::str::from_utf8(password) else {
            return Err(refused(user, FailureReason::WrongPassword));
        };
        if password.is_empty() {
            return Err(refused(user, FailureReason::WrongPassword));
        }
        let (dn, entry) = match &self.bind_dn {
            Some(t) => (ldap_dn(t, user), None),
            None => match self.find(user).await? {
                Some(e) => (e.dn.clone(), Some(e)),
                None => {
                    // The same round trip as for a wrong password: a bind the directory
                    // refuses, so the reply time does not say the user is unknown.
                    let dummy = format!("cn=correio-no-such-user,{}", self.config.base);
                    if let Ok(mut l) = self.connect().await {
                        let _ = l
                            .with_timeout(self.timeout)
                            .simple_bind(&dummy, password)
                            .await;
                        let _ = l.unbind().await;
                    }
                    return Err(refused(user, FailureReason::UnknownUser));
                }
            },
        };
        let mut ldap = self.connect().await?;
        let res = ldap
            .with_timeout(self.timeout)
            .simple_bind(&dn, password)
            .await
            .map_err(|e| SaslError::from(temp("user bind", e)))?;
        let outcome = match res.rc {
            0 => {
                let entry = match entry {
                    Some(e) => Some(e),
                    // Bound by DN template: read the user's own entry for its fields.
                    None => ldap
                        .with_timeout(self.timeout)
                        .search(
                            &dn,
                            Scope::Base,
                            "(objectClass=*)",
                            self.wanted_attributes(),
                        )
                        .await
                        .ok()
                        .and_then(|r| r.0.into_iter().next())
                        .map(SearchEntry::construct),
                };
                Ok(match entry {
                    Some(e) => self.record(user, &e),
                    None => UserRecord::new(user, None),
                })
            }
            INVALID_CREDENTIALS => Err(refused(user, FailureReason::Rejected)),
            rc if BUSY.contains(&rc) => Err(SaslError::from(temp(
                "user bind",
                format!("rc {rc}: {}", res.text),
            ))),
            rc => {
                tracing::info!(target: "correio::auth", user, rc, text = %res.text, "LDAP bind refused");
                Err(refused(user, FailureReason::Rejected))
            }
        };
        let _ = ldap.unbind().await;
        outcome
    }
}

/// The TLS settings for `ldaps://` and StartTLS: `ca`'s certificates, else the
/// system's roots.
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, OpenError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| OpenError::Config(format!("auth.ldap.ca: {}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| {
                    OpenError::Config(format!("auth.ldap.ca: {}: {e}", path.display()))
                })?;
                roots.add(c).map_err(|e| {
                    OpenError::Config(format!("auth.ldap.ca: {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(OpenError::Config(format!(
                    "auth.ldap.ca: {}: no certificate",
                    path.display()
                )));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
