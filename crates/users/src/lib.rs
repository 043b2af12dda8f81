//! `correio-users`: where the users live — the passwd-file, the system's own accounts
//! (PAM), an SQL table (PostgreSQL, MariaDB/MySQL), an LDAP directory, or a qmail-style
//! `checkpassword` program — and an authentication cache in front of them.
//!
//! One [`UserSource`] answers two questions for every protocol of the server (USER/PASS,
//! SASL PLAIN and LOGIN, LMTP recipients, `correio deliver`):
//!
//! - [`UserSource::verify_plain`]: is this the user's password? The record on success;
//!   [`SaslError::AuthFailed`] for a wrong password *or* an unknown user (the same
//!   answer, and for the hash-keeping backends the same cost); [`SaslError::Temporary`]
//!   when the database cannot answer now, which the server reports as `-ERR [SYS/TEMP]`
//!   and never as a wrong password.
//! - [`UserSource::lookup`]: the user's record (mail location, home, quota), or none.
//!
//! Both are blocking calls, made from the server's blocking threads (where hashing
//! already runs); the networked backends run their async drivers on the runtime the
//! source was opened in (see [`UserSource::open`]).
//!
//! The passwd-file also serves the challenge mechanisms (APOP, CRAM-MD5, SCRAM) through
//! [`correio_auth::SecretLookup::lookup_user`]; every other backend is asked with the
//! plaintext password ([`UserSource::plaintext_only`]), so a server on one of them
//! offers PLAIN, LOGIN and USER only.
//!
//! Values from the login never reach a query as text: SQL gets them as bound
//! parameters ([`template::SqlTemplate`]), LDAP filters and DNs escaped per RFC 4515 and
//! RFC 4514 ([`template::ldap_filter`], [`template::ldap_dn`]).
#![forbid(unsafe_code)]

pub mod cache;
pub mod checkpassword;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod ldap;
pub mod sql;
pub mod system;
pub mod template;

use std::sync::Arc;

use correio_auth::{AuthFailure, FailureReason, SaslError, UserDb, UserRecord};

pub use crate::cache::{AuthCache, CacheStats};
pub use crate::config::{
    BackendConfig, CacheConfig, CheckpasswordConfig, LdapConfig, SqlConfig, SystemConfig,
};
pub use crate::system::PamCheck;

/// The user database cannot answer now (down, unreachable, timed out, misbehaving).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Temporary(pub String);

impl From<Temporary> for SaslError {
    fn from(t: Temporary) -> SaslError {
        SaslError::Temporary(t.0)
    }
}

/// An authentication failure for `user` (the same reply to the client whatever the
/// reason; the reason is for the log).
pub fn refused(user: &str, reason: FailureReason) -> SaslError {
    SaslError::AuthFailed(AuthFailure {
        user: user.to_owned(),
        reason,
    })
}

/// The backend behind a [`UserSource`].
#[derive(Debug)]
enum Backend {
    PasswdFile(Arc<UserDb>),
    System(system::SystemDb),
    Sql(sql::SqlDb),
    Ldap(Box<ldap::LdapDb>),
    Checkpassword(checkpassword::Checkpassword),
}

/// A user database with its cache. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct UserSource {
    backend: Backend,
    cache: AuthCache,
    runtime: Option<tokio::runtime::Handle>,
}

/// Why a user source could not be opened (a configuration problem: these are
/// reported at start-up, not at login).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The passwd-file is unreadable or malformed.
    #[error(transparent)]
    UsersFile(#[from] correio_auth::UserDbError),
    /// A backend's settings are unusable.
    #[error("{0}")]
    Config(String),
}

impl UserSource {
    /// A source over a loaded passwd-file.
    pub fn passwd_file(db: Arc<UserDb>, cache: &CacheConfig) -> UserSource {
        UserSource {
            backend: Backend::PasswdFile(db),
            cache: AuthCache::new(cache),
            runtime: None,
        }
    }

    /// Opens the backend `config` names. `users` is the passwd-file (used by the
    /// `passwd-file` backend only). Networked backends connect lazily (a database that
    /// is down at start-up gives temporary failures until it is back, not a server that
    /// will not start) and run on `runtime` — or, when `None`, on the runtime this is
    /// called from; outside any runtime (a command-line tool) on a private one.
    /// `pam` is how system passwords are checked (the privileged helper in the server).
    pub fn open(
        config: &BackendConfig,
        cache: &CacheConfig,
        users: impl FnOnce() -> Result<Arc<UserDb>, correio_auth::UserDbError>,
        pam: Option<Arc<dyn PamCheck>>,
    ) -> Result<UserSource, OpenError> {
        let runtime = match config {
            BackendConfig::Sql(_) | BackendConfig::Ldap(_) => {
                Some(match tokio::runtime::Handle::try_current() {
                    Ok(r) => r,
                    Err(_) => private_runtime().map_err(|e| OpenError::Config(e.to_string()))?,
                })
            }
            _ => None,
        };
        // The SQL pool's background tasks belong to the runtime that will drive it.
        let _entered = runtime.as_ref().map(|r| r.enter());
        let backend = match config {
            BackendConfig::PasswdFile => Backend::PasswdFile(users()?),
            BackendConfig::System(c) => Backend::System(system::SystemDb::new(c.clone(), pam)),
            BackendConfig::Sql(c) => Backend::Sql(sql::SqlDb::open(c)?),
            BackendConfig::Ldap(c) => Backend::Ldap(Box::new(ldap::LdapDb::open(c)?)),
            BackendConfig::Checkpassword(c) => {
                Backend::Checkpassword(checkpassword::Checkpassword::new(c.clone()))
            }
        };
        Ok(UserSource {
            backend,
            cache: AuthCache::new(cache),
            runtime,
        })
    }

    /// The passwd-file, when that is the backend (the server inspects its secrets to
    /// decide which mechanisms to offer).
    pub fn passwd_db(&self) -> Option<&Arc<UserDb>> {
        match &self.backend {
            Backend::PasswdFile(db) => Some(db),
            _ => None,
        }
    }

    /// The backend's name as configured (`passwd-file`, `system`, `sql`, `ldap`,
    /// `checkpassword`), for logs and `correio check`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::PasswdFile(_) => "passwd-file",
            Backend::System(_) => "system",
            Backend::Sql(_) => "sql",
            Backend::Ldap(_) => "ldap",
            Backend::Checkpassword(_) => "checkpassword",
        }
    }

    /// Whether logins are checked by handing the backend the plaintext password (every
    /// backend but the passwd-file; PAM, an LDAP bind and checkpassword can do nothing
    /// else): such a server offers PLAIN, LOGIN and USER only — no APOP, CRAM-MD5 or
    /// SCRAM, which need the stored secret at hand.
    pub fn plaintext_only(&self) -> bool {
        !matches!(self.backend, Backend::PasswdFile(_))
    }

    /// Picks up an edited passwd-file (one `stat`), and forgets what the cache
    /// learnt from the previous version.
    pub fn refresh(&self) {
        if let Backend::PasswdFile(db) = &self.backend {
            if let Err(e) = db.reload_if_changed() {
                tracing::error!(error = %e, "users file not reloaded; still using the previous version");
            }
            self.cache.sync_generation(db.generation());
        }
    }

    /// The cache's counters (hits, misses), for metrics and the benchmark.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Forgets every cached result (reload, password change).
    pub fn flush_cache(&self) {
        self.cache.flush();
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            // Only the networked backends have futures to run, and they always have a
            // runtime; a blocking call from a synchronous backend never gets here.
            None => private_runtime()
                .expect("a tokio runtime for the user database")
                .block_on(f),
        }
    }

    /// The record for `user` (already rewritten by the server's name policy), or
    /// `None` when there is no such user. Blocking.
    pub fn lookup(&self, user: &str) -> Result<Option<UserRecord>, Temporary> {
        self.refresh();
        if let Some(hit) = self.cache.lookup(user) {
            return Ok(hit);
        }
        let found = match &self.backend {
            Backend::PasswdFile(db) => Ok(db.lookup(user)),
            Backend::System(s) => s.lookup(user),
            Backend::Sql(s) => self.block_on(s.lookup(user)),
            Backend::Ldap(l) => self.block_on(l.lookup(user)),
            Backend::Checkpassword(c) => c.lookup(user),
        }?;
        self.cache.store_lookup(user, found.as_ref());
        Ok(found)
    }

    /// Checks `password` for `user` (already rewritten by the name policy). Blocking;
    /// may hash or ask the database. A result the cache holds for this user *and this
    /// password* is answered from it, without hashing or a round trip.
    pub fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        if password.is_empty() {
            // An empty password is an "unauthenticated bind" to LDAP and nonsense to
            // PAM: never let it reach a backend.
            return Err(refused(user, FailureReason::WrongPassword));
        }
        self.refresh();
        if let Some(hit) = self.cache.verify(user, password) {
            return hit;
        }
        let result = match &self.backend {
            Backend::PasswdFile(db) => correio_auth::verify_record(user, password, db.lookup(user)),
            Backend::System(s) => s.verify_plain(user, password),
            Backend::Sql(s) => match self.block_on(s.password_record(user)) {
                Ok(record) => correio_auth::verify_record(user, password, record)
                    .and_then(|r| self.block_on(s.complete(r)).map_err(SaslError::from)),
                Err(t) => Err(t.into()),
            },
            Backend::Ldap(l) => self.block_on(l.verify_plain(user, password)),
            Backend::Checkpassword(c) => c.verify_plain(user, password),
        };
        self.cache.store_verify(user, password, &result);
        result
    }
}

impl correio_auth::SecretLookup for UserSource {
    fn lookup_user(&self, user: &str) -> Option<UserRecord> {
        // The challenge mechanisms (CRAM-MD5, SCRAM, APOP) need the stored secret: only
        // the backends that keep one are asked. A temporary failure reads as "no such
        // user" here; those mechanisms are only offered with the passwd-file.
        match &self.backend {
            Backend::PasswdFile(db) => db.lookup(user),
            _ => None,
        }
    }

    fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        UserSource::verify_plain(self, user, password)
    }
}

/// A record for `name` from a backend's fields (an SQL row, LDAP attributes).
pub fn record_from(name: &str, fields: impl IntoIterator<Item = (String, String)>) -> UserRecord {
    let mut record = UserRecord::new(name, None);
    for (k, v) in fields {
        apply_field(&mut record, &k, &v);
    }
    record
}

/// Sets one field of `record` from a backend's column or attribute named `key`:
/// `password`, `user` (the canonical name, if valid), `mail`, `home`, `quota_bytes`,
/// `quota_messages` (with or without Dovecot's `userdb_` prefix), `uid`, `gid`,
/// `nologin`, `nopassword`; any other key is kept as an extra field.
pub fn apply_field(record: &mut UserRecord, key: &str, value: &str) {
    let key = key.to_ascii_lowercase();
    let bare = key.strip_prefix("userdb_").unwrap_or(&key);
    match bare {
        "password" => {
            record.password = (!value.is_empty()).then(|| correio_auth::StoredSecret::parse(value));
        }
        "user" | "username" => {
            if correio_auth::validate_username(value).is_ok() {
                record.name = value.to_owned();
            }
        }
        "mail" | "home" | "quota_bytes" | "quota_messages" => {
            if !value.is_empty() {
                record.set_field(&format!("userdb_{bare}"), Some(value));
            }
        }
        "uid" => record.uid = value.to_owned(),
        "gid" => record.gid = value.to_owned(),
        "nologin" | "nopassword" => {
            let on = !matches!(
                value.to_ascii_lowercase().as_str(),
                "" | "n" | "no" | "0" | "false" | "f"
            );
            record.set_field(bare, on.then_some("y"));
        }
        _ => record.set_field(&key, Some(value)),
    }
}

/// A small runtime for a command-line tool that asks a networked user database.
fn private_runtime() -> std::io::Result<tokio::runtime::Handle> {
    use std::sync::OnceLock;
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("correio-userdb")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt).handle().clone())
}
