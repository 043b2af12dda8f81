//! The `[auth]` settings that choose and configure the user database, as the server's
//! configuration file spells them:
//!
//! ```toml
//! [auth]
//! backend = "sql"              # passwd-file (default) | system | sql | ldap | checkpassword
//! cache_size = 10000           # entries; 0 = no cache
//! cache_ttl = "1h"             # how long a good login is remembered
//! cache_negative_ttl = "5m"    # how long a refused one is
//!
//! [auth.sql]
//! url = "postgresql://correio:secret@127.0.0.1/mail"   # or mysql:// (MariaDB)
//! password_query = "SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active"
//! user_query = "SELECT maildir AS mail, quota AS quota_bytes FROM mailbox WHERE username = '%u'"
//! ```
//!
//! Every table is checked when the file is read ([`BackendConfig::from_parts`]), so a
//! typo stops `correio serve` and `correio check` with the key and the reason, never a
//! login later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::template::{LdapTemplate, SqlTemplate};

/// Which backend, and its settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BackendConfig {
    /// The passwd-file (`users_file`).
    #[default]
    PasswdFile,
    /// The system's accounts: passwords through PAM, records from the passwd database.
    System(SystemConfig),
    /// An SQL table.
    Sql(SqlConfig),
    /// An LDAP directory.
    Ldap(LdapConfig),
    /// A qmail-style checkpassword program.
    Checkpassword(CheckpasswordConfig),
}

/// A configuration error: the key and the reason.
pub type KeyError = (String, String);

impl BackendConfig {
    /// Resolves `[auth] backend` and its table. A table for another backend than the
    /// chosen one is an error too (a sign the admin edited the wrong thing).
    pub fn from_parts(
        backend: Option<&str>,
        system: Option<SystemConfig>,
        sql: Option<SqlConfig>,
        ldap: Option<LdapConfig>,
        checkpassword: Option<CheckpasswordConfig>,
    ) -> Result<BackendConfig, KeyError> {
        let name = backend.unwrap_or("passwd-file");
        let tables = [
            ("system", system.is_some()),
            ("sql", sql.is_some()),
            ("ldap", ldap.is_some()),
            ("checkpassword", checkpassword.is_some()),
        ];
        for (t, present) in tables {
            if present && t != name {
                return Err((
                    format!("auth.{t}"),
                    format!("set, but auth.backend is {name:?}"),
                ));
            }
        }
        let missing = |t: &str| {
            (
                format!("auth.{t}"),
                format!("auth.backend = {t:?} needs it"),
            )
        };
        let c = match name {
            "passwd-file" => BackendConfig::PasswdFile,
            "system" => BackendConfig::System(system.unwrap_or_default()),
            "sql" => BackendConfig::Sql(sql.ok_or_else(|| missing("sql"))?),
            "ldap" => BackendConfig::Ldap(ldap.ok_or_else(|| missing("ldap"))?),
            "checkpassword" => {
                BackendConfig::Checkpassword(checkpassword.ok_or_else(|| missing("checkpassword"))?)
            }
            other => {
                return Err((
                    "auth.backend".into(),
                    format!(
                        "{other:?} is not one of passwd-file, system, sql, ldap, checkpassword"
                    ),
                ));
            }
        };
        c.validate()?;
        Ok(c)
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::PasswdFile => "passwd-file",
            BackendConfig::System(_) => "system",
            BackendConfig::Sql(_) => "sql",
            BackendConfig::Ldap(_) => "ldap",
            BackendConfig::Checkpassword(_) => "checkpassword",
        }
    }

    /// Whether logins are checked by handing the backend the plaintext password
    /// (every backend but the passwd-file): then only PLAIN, LOGIN and USER can work,
    /// and APOP, CRAM-MD5 and SCRAM-SHA-256 are refused in the configuration.
    pub fn plaintext_only(&self) -> bool {
        !matches!(self, BackendConfig::PasswdFile)
    }

    /// The mail location for users whose record names none, when the backend has its
    /// own default (system users: their mbox under `/var/mail`).
    pub fn default_mail_location(&self) -> Option<String> {
        match self {
            BackendConfig::System(s) => Some(s.mail_location()),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), KeyError> {
        match self {
            BackendConfig::PasswdFile => Ok(()),
            BackendConfig::System(s) => {
                let service = s.pam_service();
                if service.is_empty()
                    || !service
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err((
                        "auth.system.pam_service".into(),
                        "must be a PAM service name (letters, digits, - _ .)".into(),
                    ));
                }
                Ok(())
            }
            BackendConfig::Sql(s) => s.validate(),
            BackendConfig::Ldap(l) => l.validate(),
            BackendConfig::Checkpassword(c) => {
                if !c.program.is_absolute() {
                    return Err((
                        "auth.checkpassword.program".into(),
                        "must be an absolute path".into(),
                    ));
                }
                duration("auth.checkpassword.timeout", c.timeout.as_deref(), 10)?;
                Ok(())
            }
        }
    }
}

fn duration(key: &str, v: Option<&str>, default_secs: u64) -> Result<Duration, KeyError> {
    match v {
        None => Ok(Duration::from_secs(default_secs)),
        Some(t) => {
            let d = humantime::parse_duration(t)
                .map_err(|e| (key.to_owned(), format!("{t:?}: {e}")))?;
            if d.is_zero() {
                return Err((key.to_owned(), "must be more than 0".into()));
            }
            Ok(d)
        }
    }
}

/// `[auth.system]`: the machine's own accounts.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The PAM service (`/etc/pam.d/<name>`; PAM uses `other` when it is missing).
    /// Default `correio`.
    pub pam_service: Option<String>,
    /// Where system users' mail is (default `mbox:/var/mail/%u`, Debian's spool;
    /// `maildir:%h/Maildir` for a Maildir in the home directory).
    pub mail_location: Option<String>,
    /// Accounts with a smaller uid cannot log in (root, daemons). Default 1000.
    pub first_valid_uid: Option<u32>,
}

impl SystemConfig {
    /// The PAM service name.
    pub fn pam_service(&self) -> String {
        self.pam_service.clone().unwrap_or_else(|| "correio".into())
    }

    /// The mail location template.
    pub fn mail_location(&self) -> String {
        self.mail_location
            .clone()
            .unwrap_or_else(|| "mbox:/var/mail/%u".into())
    }

    /// The smallest uid allowed to log in.
    pub fn first_valid_uid(&self) -> u32 {
        self.first_valid_uid.unwrap_or(1000)
    }
}

/// `[auth.sql]`: users in a PostgreSQL or MariaDB/MySQL table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// `postgresql://USER:PASSWORD@HOST[:PORT]/DB` or `mysql://...` (also
    /// `mariadb://`). Keep the configuration file readable by root only.
    pub url: String,
    /// Returns the row of the user trying to log in: a `password` column (a hash with or
    /// without a `{SCHEME}` prefix, or a bare crypt string), optionally `user` (the
    /// canonical name), `mail`, `home`, `quota_bytes`, `quota_messages`, `nologin`.
    /// `%u` (the whole name), `%n` (the part before `@`) and `%d` (the domain) become
    /// bound parameters, quoted (`'%u'`) or not.
    pub password_query: String,
    /// Returns the user's record without the password (LMTP recipients, `deliver`);
    /// default: `password_query`.
    pub user_query: Option<String>,
    /// Connections kept open at most. Default 8.
    pub max_connections: Option<u32>,
    /// How long to wait for a connection. Default 5 s.
    pub connect_timeout: Option<String>,
    /// How long one query may take. Default 5 s.
    pub query_timeout: Option<String>,
}

/// The SQL dialect, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDriver {
    /// PostgreSQL (`$1` parameters).
    Postgres,
    /// MariaDB or MySQL (`?` parameters).
    MySql,
}

impl SqlConfig {
    /// The driver the URL names.
    pub fn driver(&self) -> Option<SqlDriver> {
        let scheme = self.url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(SqlDriver::Postgres),
            "mysql" | "mariadb" => Some(SqlDriver::MySql),
            _ => None,
        }
    }

    /// The password query, compiled for the driver.
    pub fn password_template(&self) -> Result<SqlTemplate, KeyError> {
        let driver = self.driver().ok_or_else(bad_url)?;
        SqlTemplate::compile(&self.password_query, driver)
            .map_err(|e| ("auth.sql.password_query".into(), e))
    }

    /// The user query (default: the password query), compiled for the driver.
    pub fn user_template(&self) -> Result<SqlTemplate, KeyError> {
        let driver = self.driver().ok_or_else(bad_url)?;
        match &self.user_query {
            Some(q) => {
                SqlTemplate::compile(q, driver).map_err(|e| ("auth.sql.user_query".into(), e))
            }
            None => self.password_template(),
        }
    }

    /// Connection wait.
    pub fn connect_timeout(&self) -> Duration {
        duration("", self.connect_timeout.as_deref(), 5).unwrap_or(Duration::from_secs(5))
    }

    /// Query time limit.
    pub fn query_timeout(&self) -> Duration {
        duration("", self.query_timeout.as_deref(), 5).unwrap_or(Duration::from_secs(5))
    }

    fn validate(&self) -> Result<(), KeyError> {
        self.driver().ok_or_else(bad_url)?;
        self.password_template()?;
        self.user_template()?;
        if self.max_connections == Some(0) {
            return Err((
                "auth.sql.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        duration(
            "auth.sql.connect_timeout",
            self.connect_timeout.as_deref(),
            5,
        )?;
        duration("auth.sql.query_timeout", self.query_timeout.as_deref(), 5)?;
        Ok(())
    }
}

fn bad_url() -> KeyError {
    (
        "auth.sql.url".into(),
        "must start with postgresql://, postgres://, mysql:// or mariadb://".into(),
    )
}

/// `[auth.ldap]`: users in an LDAP directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://HOST[:PORT]` or `ldaps://HOST[:PORT]`.
    pub uri: String,
    /// Upgrade `ldap://` with StartTLS (recommended unless the directory is local).
    pub starttls: Option<bool>,
    /// A PEM file of CA certificates to trust (default: the system's).
    pub ca: Option<PathBuf>,
    /// The account that searches for users (none: anonymous searches).
    pub bind_dn: Option<String>,
    /// Its password.
    pub bind_password: Option<String>,
    /// Where users are searched.
    pub base: String,
    /// The search filter; `%u`, `%n`, `%d` are escaped (RFC 4515). Default
    /// `(&(objectClass=posixAccount)(uid=%n))`.
    pub filter: Option<String>,
    /// Check the password by binding as the user (default true); false: read
    /// `password_attribute` with the search account and compare the hash here.
    pub auth_bind: Option<bool>,
    /// Bind as this DN without searching first (`uid=%n,ou=people,dc=example,dc=org`;
    /// values escaped per RFC 4514).
    pub auth_bind_dn: Option<String>,
    /// The attribute holding the password hash (`auth_bind = false`). Default
    /// `userPassword`.
    pub password_attribute: Option<String>,
    /// Record fields from attributes: `home`, `mail`, `quota_bytes`, `quota_messages`,
    /// `uid`, `gid`, `user`. Default `{ home = "homeDirectory", uid = "uidNumber",
    /// gid = "gidNumber" }`.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Time limit for connecting and for each operation. Default 5 s.
    pub timeout: Option<String>,
}

/// The record fields an LDAP attribute may fill.
pub const LDAP_FIELDS: [&str; 7] = [
    "home",
    "mail",
    "quota_bytes",
    "quota_messages",
    "uid",
    "gid",
    "user",
];

impl LdapConfig {
    /// The filter template.
    pub fn filter_template(&self) -> Result<LdapTemplate, KeyError> {
        LdapTemplate::compile(
            self.filter
                .as_deref()
                .unwrap_or("(&(objectClass=posixAccount)(uid=%n))"),
        )
        .map_err(|e| ("auth.ldap.filter".into(), e))
    }

    /// The direct-bind DN template, if set.
    pub fn bind_dn_template(&self) -> Result<Option<LdapTemplate>, KeyError> {
        self.auth_bind_dn
            .as_deref()
            .map(LdapTemplate::compile)
            .transpose()
            .map_err(|e| ("auth.ldap.auth_bind_dn".into(), e))
    }

    /// Field → attribute.
    pub fn attribute_map(&self) -> BTreeMap<String, String> {
        self.attributes.clone().unwrap_or_else(|| {
            [
                ("home", "homeDirectory"),
                ("uid", "uidNumber"),
                ("gid", "gidNumber"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
        })
    }

    /// The time limit.
    pub fn timeout(&self) -> Duration {
        duration("", self.timeout.as_deref(), 5).unwrap_or(Duration::from_secs(5))
    }

    fn validate(&self) -> Result<(), KeyError> {
        let lower = self.uri.to_ascii_lowercase();
        let ldaps = lower.starts_with("ldaps://");
        if !ldaps && !lower.starts_with("ldap://") {
            return Err((
                "auth.ldap.uri".into(),
                "must start with ldap:// or ldaps://".into(),
            ));
        }
        if ldaps && self.starttls == Some(true) {
            return Err((
                "auth.ldap.starttls".into(),
                "ldaps:// is TLS already".into(),
            ));
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            return Err((
                "auth.ldap.bind_password".into(),
                "bind_dn and bind_password go together".into(),
            ));
        }
        self.filter_template()?;
        self.bind_dn_template()?;
        if self.auth_bind == Some(false) && self.auth_bind_dn.is_some() {
            return Err((
                "auth.ldap.auth_bind_dn".into(),
                "needs auth_bind = true".into(),
            ));
        }
        for field in self.attribute_map().keys() {
            if !LDAP_FIELDS.contains(&field.as_str()) {
                return Err((
                    "auth.ldap.attributes".into(),
                    format!("{field:?} is not one of {}", LDAP_FIELDS.join(", ")),
                ));
            }
        }
        duration("auth.ldap.timeout", self.timeout.as_deref(), 5)?;
        Ok(())
    }
}

/// `[auth.checkpassword]`: a qmail-style checkpassword program.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpasswordConfig {
    /// The program: reads `user NUL password NUL timestamp NUL` on descriptor 3, exits 0
    /// (accepted: it runs its argument, whose environment gives `HOME` and friends),
    /// 1 (refused) or 111 (temporary failure).
    pub program: PathBuf,
    /// How long it may take. Default 10 s.
    pub timeout: Option<String>,
}

impl CheckpasswordConfig {
    /// The time limit.
    pub fn timeout(&self) -> Duration {
        duration("", self.timeout.as_deref(), 10).unwrap_or(Duration::from_secs(10))
    }
}

/// The authentication cache's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries kept at most (0: no cache).
    pub size: usize,
    /// How long a good login (and a looked-up record) is remembered.
    pub ttl: Duration,
    /// How long a refused login (or an unknown user) is remembered.
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size: 10_000,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
        }
    }
}

impl CacheConfig {
    /// No cache.
    pub fn off() -> CacheConfig {
        CacheConfig {
            size: 0,
            ..CacheConfig::default()
        }
    }
}
