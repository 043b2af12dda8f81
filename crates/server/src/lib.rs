//! `correio-server`: the tokio drivers for the POP3 server and the LMTP listener.
//!
//! The protocol lives in [`correio_proto::server`]; this crate only does I/O around it,
//! in the style of mini-redis:
//!
//! ```no_run
//! # async fn demo(config: correio_server::config::Config) -> anyhow::Result<()> {
//! let server = correio_server::Server::new(config)?;       // users, TLS, limits
//! let listeners = server.bind().await?;                      // or Listeners::from_std
//! server.run(listeners, tokio::signal::ctrl_c()).await;     // until shutdown resolves
//! # Ok(()) }
//! ```
//!
//! - A semaphore permit (the total connection limit) is taken *before* `accept`, and
//!   moves into the connection task; the per-IP limit is checked right after accept.
//! - Shutdown: stop accepting, let sessions go on for `shutdown_grace`, then tell each
//!   one to close (`-ERR [SYS/TEMP]`, no UPDATE), and wait for them to drain.
//! - [`Server::reload`] (SIGHUP) swaps the configuration, users and certificate for
//!   new connections; running sessions keep what they started with.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod import;
pub mod lmtp;
pub mod metrics;
pub mod ownership;
pub mod privsep;
pub mod proxy;
mod session;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use correio_auth::{Throttle, ThrottleConfig, UserDb, UserDbOptions};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument as _, info, warn};

use crate::config::{Config, UsernamePolicy};
use crate::tls::TlsStore;

pub use crate::config::{ConfigError, Limits, LmtpAddr, Overrides};

/// What SIGHUP can replace: the configuration and what is built from it. A session
/// takes one `Arc<Live>` when it starts and keeps it to its end, so a reload never
/// changes the rules in the middle of a session.
#[derive(Debug)]
pub(crate) struct Live {
    /// Which configuration this is (a new number at every reload).
    generation: u64,
    pub(crate) config: Config,
    pub(crate) session_config: correio_proto::server::ServerConfig,
    pub(crate) users: Accounts,
}

/// The user database seen through the configured name policy (`auth.username_format`,
/// `auth.default_domain`): every lookup — USER/PASS, APOP, SASL, LMTP — goes through
/// [`UsernamePolicy::candidates`], so all of them agree on who `Bob` is. The database
/// is the passwd-file or any backend of `[auth] backend` (see [`correio_users`]), with
/// the authentication cache in front.
#[derive(Debug, Clone)]
pub struct Accounts {
    source: Arc<correio_users::UserSource>,
    policy: UsernamePolicy,
}

impl Accounts {
    /// Opens the user database of `config` (a missing users file: no users yet).
    /// System users (`backend = "system"`) need a PAM checker: see [`Accounts::open_with`].
    pub fn open(config: &Config) -> Result<Accounts, correio_users::OpenError> {
        Accounts::open_with(config, None)
    }

    /// [`Accounts::open`] with the way system passwords are checked (the privileged
    /// helper in `correio serve`, PAM in-process for a tool running as root).
    pub fn open_with(
        config: &Config,
        pam: Option<Arc<dyn correio_users::PamCheck>>,
    ) -> Result<Accounts, correio_users::OpenError> {
        let options = UserDbOptions {
            case_insensitive: config.username.lowercase,
        };
        let source = correio_users::UserSource::open(
            &config.user_backend,
            &config.auth_cache,
            || UserDb::load_or_empty(&config.users_file, options).map(Arc::new),
            pam,
        )?;
        Ok(Accounts {
            source: Arc::new(source),
            policy: config.username.clone(),
        })
    }

    /// The passwd-file, when it is the user database.
    pub fn db(&self) -> Option<&Arc<UserDb>> {
        self.source.passwd_db()
    }

    /// The user database.
    pub fn source(&self) -> &Arc<correio_users::UserSource> {
        &self.source
    }

    /// The name policy.
    pub fn policy(&self) -> &UsernamePolicy {
        &self.policy
    }

    /// The record a login name refers to, after the policy's rewriting. A database
    /// that cannot answer reads as "no such user" here (logged); use
    /// [`Accounts::lookup`] to tell the two apart.
    pub fn find(&self, name: &str) -> Option<correio_auth::UserRecord> {
        match self.lookup(name) {
            Ok(r) => r,
            Err(e) => {
                warn!(target: "correio::auth", error = %e, "user database unavailable");
                None
            }
        }
    }

    /// The record a login name refers to, or none; `Err` when the database cannot
    /// answer now.
    pub fn lookup(
        &self,
        name: &str,
    ) -> Result<Option<correio_auth::UserRecord>, correio_users::Temporary> {
        for c in self.policy.candidates(name) {
            if correio_auth::validate_username(&c).is_err() {
                continue;
            }
            if let Some(r) = self.source.lookup(&c)? {
                return Ok(Some(r));
            }
            if self.source.plaintext_only() {
                // A database asked over the network gets the policy's name only.
                break;
            }
        }
        Ok(None)
    }
}

impl correio_auth::SecretLookup for Accounts {
    fn lookup_user(&self, user: &str) -> Option<correio_auth::UserRecord> {
        // Only the passwd-file serves the challenge mechanisms.
        self.db()?;
        self.find(user)
    }

    fn verify_plain(
        &self,
        user: &str,
        password: &[u8],
    ) -> Result<correio_auth::UserRecord, correio_auth::SaslError> {
        let candidates: Vec<String> = self
            .policy
            .candidates(user)
            .into_iter()
            .filter(|c| correio_auth::validate_username(c).is_ok())
            .collect();
        let Some(first) = candidates.first() else {
            return Err(correio_users::refused(
                user,
                correio_auth::FailureReason::UnknownUser,
            ));
        };
        // The passwd-file: the first candidate that names a user (a bare-name file
        // with a default domain); any other database is asked with the policy's name.
        let name = match self.db() {
            Some(db) => candidates
                .iter()
                .find(|c| db.lookup(c).is_some())
                .unwrap_or(first),
            None => first,
        };
        self.source.verify_plain(name, password)
    }
}

/// Connections of one address: those in a session, and those waiting out a
/// failed-login delay (which do not count against `max_connections_per_ip`).
#[derive(Debug, Default, Clone, Copy)]
struct IpCount {
    active: usize,
    parked: usize,
}

/// State shared by all connections of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    live: RwLock<Arc<Live>>,
    pub(crate) tls: TlsStore,
    pub(crate) throttle: Throttle,
    /// The throttle was set by the embedding code (tests): reloads leave it alone.
    explicit_throttle: bool,
    /// Last successful login per user, for LOGIN-DELAY within this process (it also
    /// closes the race between two logins at once); the store keeps the time on disk
    /// beside each maildrop, so a restart does not forget it.
    pub(crate) last_login: Mutex<HashMap<String, tokio::time::Instant>>,
    per_ip: Mutex<HashMap<IpAddr, IpCount>>,
    apop_counter: AtomicU64,
    conn_counter: AtomicU64,
    /// The SASL mechanisms worth advertising, for which configuration and users file.
    mechanisms: Mutex<Option<(u64, Option<FileStamp>, Offered)>>,
    /// The last configuration generation handed out.
    generations: AtomicU64,
    /// Where TLS pairs come from after the privilege drop (the privileged helper).
    tls_source: Mutex<Option<Arc<dyn TlsSource>>>,
    /// How system passwords are checked (PAM here, or the privileged helper).
    pam: Mutex<Arc<dyn correio_users::PamCheck>>,
    /// Prometheus metrics (always kept; served when `[metrics] listen` is set).
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Live sessions, for the admin socket.
    pub(crate) registry: Arc<admin::Registry>,
    /// The mail stores: the file backends, and whatever store the embedding program
    /// registered ([`Server::set_stores`]).
    stores: RwLock<correio_store::Stores>,
    /// The addresses the POP3 listeners really bound (port 0 resolved), by kind
    /// (`pop3`, `pop3s`, `pop3_proxy`, `pop3s_proxy`), once [`Server::run`] started.
    pub(crate) bound: Mutex<Option<Vec<(&'static str, SocketAddr)>>>,
}

/// Reads the certificate and key on the server's behalf once it no longer may (a
/// root-only key after the privilege drop): see [`crate::privsep`].
pub trait TlsSource: std::fmt::Debug + Send + Sync {
    /// The PEM bytes of the configured certificate chain and key.
    fn read_pair(&self) -> Result<(Vec<u8>, Vec<u8>), tls::TlsError>;
    /// The PEM bytes of the `index`th `[tls] sni` pair.
    fn read_sni_pair(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), tls::TlsError>;
}

/// What a connection is offered, from what the stored secrets allow.
#[derive(Debug, Clone)]
pub(crate) struct Offered {
    /// SASL mechanisms.
    pub(crate) mechanisms: Vec<String>,
    /// APOP (a timestamp in the greeting).
    pub(crate) apop: bool,
}

/// What identifies one version of the users file: the offer is recomputed whenever
/// it changes (a stat per connection, no reading).
type FileStamp = (std::time::SystemTime, u64, u64);

fn users_file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl Shared {
    /// The stores in use now.
    pub(crate) fn stores(&self) -> correio_store::Stores {
        self.stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration and users in force now.
    pub(crate) fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The mechanisms (and APOP) the admin listed that at least one user's stored
    /// secret allows. PLAIN and LOGIN work with every secret; CRAM-MD5, SCRAM-SHA-256
    /// and APOP only with some, are offered only when listed in the configuration
    /// (not by default), and then only when they can succeed for someone.
    pub(crate) fn offered(&self, live: &Arc<Live>) -> Offered {
        let generation = live.generation;
        let stamp = users_file_stamp(&live.config.users_file);
        let mut cache = self.mechanisms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, seen, offered)) = cache.as_ref()
            && *g == generation
            && *seen == stamp
        {
            return offered.clone();
        }
        live.users.source().refresh();
        let Some(users) = live.users.db() else {
            // Any other database is asked with the plaintext password: PLAIN and
            // LOGIN only (the configuration refuses the others for it).
            let offered = Offered {
                mechanisms: live
                    .config
                    .mechanisms
                    .iter()
                    .filter(|m| *m == "PLAIN" || *m == "LOGIN")
                    .cloned()
                    .collect(),
                apop: false,
            };
            *cache = Some((generation, stamp, offered.clone()));
            return offered;
        };
        let apop = live.config.apop
            && users
                .records()
                .iter()
                .any(|r| correio_auth::secret_caps(r).apop);
        let list: Vec<String> = live
            .config
            .mechanisms
            .iter()
            .filter(|m| match correio_auth::Mechanism::from_name(m) {
                Some(
                    mech
                    @ (correio_auth::Mechanism::CramMd5 | correio_auth::Mechanism::ScramSha256),
                ) => correio_auth::any_user_allows(users, mech),
                Some(_) => true,
                None => false,
            })
            .cloned()
            .collect();
        let offered = Offered {
            mechanisms: list,
            apop,
        };
        *cache = Some((generation, stamp, offered.clone()));
        offered
    }

    /// A fresh `<pid.counter.nanos@host>` APOP timestamp: the counter makes it unique
    /// within this process, pid and clock across restarts.
    pub(crate) fn apop_timestamp(&self, hostname: &str) -> String {
        let n = self.apop_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("<{}.{n}.{nanos}@{hostname}>", std::process::id())
    }

    /// Moves one of `ip`'s connections from "in a session" to "waiting out a
    /// failed-login delay", so the wait does not hold one of the address's
    /// `max_connections_per_ip` slots (other users behind the same NAT keep getting
    /// in). At most that many may wait at once per address: `None` means the waiting
    /// room is full, and the caller closes this connection instead of waiting.
    pub(crate) fn park(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ParkedSlot> {
        let ip = ip.to_canonical();
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(ip).or_default();
        if c.parked >= limit {
            return None;
        }
        c.parked += 1;
        c.active = c.active.saturating_sub(1);
        Some(ParkedSlot {
            shared: Arc::clone(self),
            ip,
        })
    }
}

/// A connection waiting out a failed-login delay; dropping it makes it an active
/// connection of its address again.
#[derive(Debug)]
pub(crate) struct ParkedSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ParkedSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(self.ip).or_default();
        c.parked = c.parked.saturating_sub(1);
        c.active += 1;
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The user database could not be opened (users file, backend settings).
    #[error("user database: {0}")]
    Users(#[from] correio_users::OpenError),
    /// The certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// pop3s is configured but there is no certificate.
    #[error("pop3s listeners need a certificate (tls.cert / tls.key)")]
    NoCertificate,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reload {
    /// Settings now in force that differ from before: (key, old, new).
    pub changed: Vec<(String, String, String)>,
    /// Settings that differ in the file but need a restart; the running values stay.
    pub needs_restart: Vec<&'static str>,
    /// The certificate reload's result (on error the old pair stays in use).
    pub tls: Result<(), tls::TlsError>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new user database could not be opened.
    #[error("user database: {0}")]
    Users(correio_users::OpenError),
}

/// The throttle settings of a configuration.
fn throttle_config(config: &Config) -> ThrottleConfig {
    ThrottleConfig {
        base_delay: config.throttle.failure_delay,
        max_delay: config.throttle.failure_delay_max,
        ..ThrottleConfig::default()
    }
}

/// The bound POP3 listeners.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Cleartext listeners (STLS offered when TLS is configured).
    pub pop3: Vec<TcpListener>,
    /// Implicit-TLS listeners.
    pub pop3s: Vec<TcpListener>,
    /// Cleartext listeners behind a proxy (PROXY header first).
    pub pop3_proxy: Vec<TcpListener>,
    /// Implicit-TLS listeners behind a proxy (PROXY header, then TLS).
    pub pop3s_proxy: Vec<TcpListener>,
}

impl Listeners {
    /// The local addresses, for tests that bound port 0.
    pub fn addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let a = |v: &Vec<TcpListener>| v.iter().filter_map(|l| l.local_addr().ok()).collect();
        (a(&self.pop3), a(&self.pop3s))
    }
}

/// A POP3 server: configuration, users, TLS, limits.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// Throttle settings: Dovecot-like defaults, overridable for tests.
pub fn default_throttle() -> ThrottleConfig {
    ThrottleConfig::default()
}

impl Server {
    /// Loads the users file (missing: no users yet) and the TLS pair. A pair the
    /// configuration names (`[tls] cert`/`key`), a pair present at the default paths,
    /// and any pair when pop3s listeners exist must load, or the server does not
    /// start; only a missing default pair with cleartext listeners alone means "no
    /// STLS" (`correio serve` creates one on its first run).
    pub fn new(config: Config) -> Result<Server, StartError> {
        let throttle = throttle_config(&config);
        Self::build(config, throttle, false)
    }

    /// Like [`Server::new`] with explicit throttle settings (reloads keep them).
    pub fn with_throttle(config: Config, throttle: ThrottleConfig) -> Result<Server, StartError> {
        Self::build(config, throttle, true)
    }

    fn build(
        config: Config,
        throttle: ThrottleConfig,
        explicit_throttle: bool,
    ) -> Result<Server, StartError> {
        let pam: Arc<dyn correio_users::PamCheck> = Arc::new(correio_users::system::LocalPam);
        let users = Accounts::open_with(&config, Some(Arc::clone(&pam)))?;
        let tls = if config.tls_explicit
            || !config.tls_sni.is_empty()
            || config.tls_cert.exists()
            || config.tls_key.exists()
            || !config.pop3s.is_empty()
        {
            TlsStore::load_with_sni(&config.tls_cert, &config.tls_key, &config.tls_sni)?
        } else {
            warn!(
                cert = %config.tls_cert.display(),
                "no TLS certificate: STLS will not be offered"
            );
            TlsStore::unloaded(&config.tls_cert, &config.tls_key)
        };
        if !config.pop3s.is_empty() && tls.current().is_none() {
            return Err(StartError::NoCertificate);
        }
        let session_config = config.session_config();
        Ok(Server {
            shared: Arc::new(Shared {
                live: RwLock::new(Arc::new(Live {
                    generation: 0,
                    config,
                    session_config,
                    users,
                })),
                tls,
                throttle: Throttle::new(throttle),
                explicit_throttle,
                last_login: Mutex::new(HashMap::new()),
                per_ip: Mutex::new(HashMap::new()),
                apop_counter: AtomicU64::new(0),
                conn_counter: AtomicU64::new(1),
                mechanisms: Mutex::new(None),
                generations: AtomicU64::new(0),
                tls_source: Mutex::new(None),
                pam: Mutex::new(pam),
                metrics: Arc::new(metrics::Metrics::new()),
                registry: Arc::new(admin::Registry::default()),
                stores: RwLock::new(correio_store::Stores::new()),
                bound: Mutex::new(None),
            }),
        })
    }

    /// The configuration in force now (a reload replaces it).
    pub fn config(&self) -> Config {
        self.shared.live().config.clone()
    }

    /// The users, as sessions see them now.
    pub fn accounts(&self) -> Accounts {
        self.shared.live().users.clone()
    }

    /// The metrics, for the `/metrics` listener and the LMTP listener.
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// The user database, shared with the LMTP listener.
    pub fn users(&self) -> Arc<dyn lmtp::RecipientLookup + Send + Sync> {
        Arc::new(self.shared.live().users.clone())
    }

    /// Which stores sessions and admin commands open mailboxes in: the file backends
    /// always, plus every store `correio serve` built from the configuration (a
    /// database store lives in its own crate and is registered here).
    pub fn set_stores(&self, stores: correio_store::Stores) {
        *self
            .shared
            .stores
            .write()
            .unwrap_or_else(|p| p.into_inner()) = stores;
    }

    /// The stores in use (shared with the LMTP listener).
    pub fn stores(&self) -> correio_store::Stores {
        self.shared.stores()
    }

    fn pam(&self) -> Arc<dyn correio_users::PamCheck> {
        Arc::clone(&self.shared.pam.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How system passwords (`[auth] backend = "system"`) are checked from now on:
    /// `correio serve` hands in its privileged helper once it has dropped root (PAM
    /// needs root to read `/etc/shadow`). The user database is reopened with it.
    pub fn set_pam_check(&self, pam: Arc<dyn correio_users::PamCheck>) -> Result<(), ReloadError> {
        *self.shared.pam.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&pam);
        let mut live = self.shared.live.write().unwrap_or_else(|p| p.into_inner());
        if !matches!(
            live.config.user_backend,
            correio_users::BackendConfig::System(_)
        ) {
            return Ok(());
        }
        let users = Accounts::open_with(&live.config, Some(pam)).map_err(ReloadError::Users)?;
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *live = Arc::new(Live {
            generation,
            config: live.config.clone(),
            session_config: live.session_config.clone(),
            users,
        });
        Ok(())
    }

    /// Whether TLS (STLS and pop3s) is available.
    pub fn has_tls(&self) -> bool {
        self.shared.tls.current().is_some()
    }

    /// From now on, read TLS pairs through `source` (the privileged helper, once this
    /// process has dropped root and may no longer read the key itself).
    pub fn set_tls_source(&self, source: Arc<dyn TlsSource>) {
        *self
            .shared
            .tls_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Re-reads the certificate and key (through the privileged helper if there is
    /// one). Running sessions keep theirs; on error the old pair stays.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        let live = self.shared.live();
        self.shared
            .tls
            .set_paths(&live.config.tls_cert, &live.config.tls_key);
        self.shared.tls.set_sni(&live.config.tls_sni);
        let source = self
            .shared
            .tls_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match source {
            Some(src) => {
                let (cert, key) = src.read_pair()?;
                let mut sni = Vec::new();
                for (i, s) in live.config.tls_sni.iter().enumerate() {
                    let (c, k) = src.read_sni_pair(i)?;
                    sni.push((s.name.clone(), c, k));
                }
                self.shared.tls.install_pem(&cert, &key, &sni)
            }
            None => self.shared.tls.reload(),
        }
    }

    /// Applies a new configuration (SIGHUP): users file, name policy, `[pop3]`,
    /// `[auth]`, `[delivery]`, most limits, and the TLS pair take effect for new
    /// connections; running sessions finish under the rules they started with. If the
    /// new users file cannot be read, nothing changes and the error says why. What
    /// only a restart can change (listeners, `user`/`group`, `max_connections`) is
    /// reported in [`Reload::needs_restart`] and left as it was.
    pub fn reload(&self, mut new: Config) -> Result<Reload, ReloadError> {
        let old = self.shared.live();
        // Fixed at start: keep the running values so later diffs stay honest.
        let mut needs_restart = Vec::new();
        {
            let o = &old.config;
            let mut keep = |key: &'static str, differs: bool| {
                if differs {
                    needs_restart.push(key);
                }
            };
            keep("listen.pop3", o.pop3 != new.pop3);
            keep("listen.pop3s", o.pop3s != new.pop3s);
            keep("listen.lmtp", o.lmtp != new.lmtp);
            keep("listen.pop3_proxy", o.pop3_proxy != new.pop3_proxy);
            keep("listen.pop3s_proxy", o.pop3s_proxy != new.pop3s_proxy);
            keep("user", o.run_as_user != new.run_as_user);
            keep("group", o.run_as_group != new.run_as_group);
            keep(
                "limits.max_connections",
                o.limits.max_connections != new.limits.max_connections,
            );
            keep("log", o.log != new.log);
            keep("metrics.listen", o.metrics_listen != new.metrics_listen);
            keep("admin.socket", o.admin_socket != new.admin_socket);
        }
        new.pop3 = old.config.pop3.clone();
        new.pop3s = old.config.pop3s.clone();
        new.lmtp = old.config.lmtp.clone();
        new.pop3_proxy = old.config.pop3_proxy.clone();
        new.pop3s_proxy = old.config.pop3s_proxy.clone();
        new.run_as_user = old.config.run_as_user.clone();
        new.run_as_group = old.config.run_as_group.clone();
        new.limits.max_connections = old.config.limits.max_connections;
        new.log = old.config.log.clone();
        new.metrics_listen = old.config.metrics_listen;
        new.admin_socket = old.config.admin_socket.clone();

        let users = Accounts::open_with(&new, Some(self.pam())).map_err(ReloadError::Users)?;
        let before: HashMap<&str, String> = old.config.settings().into_iter().collect();
        let changed: Vec<(String, String, String)> = new
            .settings()
            .into_iter()
            .filter(|(k, v)| before.get(k) != Some(v))
            .map(|(k, v)| (k.to_owned(), before.get(k).cloned().unwrap_or_default(), v))
            .collect();
        if !self.shared.explicit_throttle {
            self.shared.throttle.set_config(throttle_config(&new));
        }
        let session_config = new.session_config();
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.shared.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
            generation,
            config: new,
            session_config,
            users,
        });
        let tls = self.reload_tls();
        Ok(Reload {
            changed,
            needs_restart,
            tls,
        })
    }

    /// Binds every configured POP3 listener.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let mut l = Listeners::default();
        let live = self.shared.live();
        for (addrs, out) in [
            (&live.config.pop3, &mut l.pop3),
            (&live.config.pop3s, &mut l.pop3s),
            (&live.config.pop3_proxy, &mut l.pop3_proxy),
            (&live.config.pop3s_proxy, &mut l.pop3s_proxy),
        ] {
            for addr in addrs {
                let listener = bind_listener(*addr).map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
                out.push(listener);
            }
        }
        Ok(l)
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stop accepting,
    /// let sessions finish for `limits.shutdown_grace`, then close the rest without
    /// UPDATE, and wait (bounded) for them to end.
    pub async fn run(&self, listeners: Listeners, shutdown: impl Future) {
        let limits = self.shared.live().config.limits.clone();
        // The dummy hash that makes unknown users cost as much as known ones: build it
        // now, not during the first failed login.
        tokio::task::spawn_blocking(correio_auth::warm_up_dummy);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (close_tx, close_rx) = watch::channel(false);
        // Every connection task holds a clone; recv() returns None once all are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut all = Vec::new();
        let mut bound = Vec::new();
        for (list, kind, name) in [
            (listeners.pop3, ListenerKind::PLAIN, "pop3"),
            (listeners.pop3s, ListenerKind::TLS, "pop3s"),
            (
                listeners.pop3_proxy,
                ListenerKind::PLAIN_PROXY,
                "pop3_proxy",
            ),
            (
                listeners.pop3s_proxy,
                ListenerKind::TLS_PROXY,
                "pop3s_proxy",
            ),
        ] {
            for listener in list {
                if let Ok(a) = listener.local_addr() {
                    info!(addr = %a, tls = kind.implicit_tls, proxy = kind.proxy, "listening");
                    bound.push((name, a));
                }
                all.push((listener, kind));
            }
        }
        *self.shared.bound.lock().unwrap_or_else(|p| p.into_inner()) = Some(bound);
        let accept_task = tokio::spawn(accept_loop(
            Arc::clone(&self.shared),
            all,
            Arc::clone(&permits),
            close_rx.clone(),
            done_tx.clone(),
        ));
        drop(done_tx);
        shutdown.await;
        info!("shutting down: no new connections");
        accept_task.abort();
        let _ = accept_task.await;
        if tokio::time::timeout(limits.shutdown_grace, done_rx.recv())
            .await
            .is_err()
        {
            info!("grace period over: closing remaining sessions without UPDATE");
            let _ = close_tx.send(true);
            let bound = limits.write_stall + Duration::from_secs(5);
            if tokio::time::timeout(bound, done_rx.recv()).await.is_err() {
                warn!("some sessions did not end in time");
            }
        }
        info!("shut down");
    }
}

/// Accepts on every listener from one loop, so that the one permit taken before
/// accepting is never parked on an idle listener while another has clients waiting.
/// Binds one listening socket. IPv6 sockets are IPv6-only, so `0.0.0.0:110` and
/// `[::]:110` can both be listed (as nginx does) instead of the second failing with
/// "address in use" on Linux's dual-stack default. Call inside the runtime (tokio's
/// `from_std` needs its I/O driver): [`Server::bind`] does.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = if addr.is_ipv6() {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    // Restarts must not wait for old connections in TIME_WAIT.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// What a listener expects first.
#[derive(Debug, Clone, Copy)]
struct ListenerKind {
    implicit_tls: bool,
    proxy: bool,
}

impl ListenerKind {
    fn label(self) -> metrics::Listener {
        match (self.implicit_tls, self.proxy) {
            (false, false) => metrics::Listener::pop3,
            (true, false) => metrics::Listener::pop3s,
            (false, true) => metrics::Listener::pop3_proxy,
            (true, true) => metrics::Listener::pop3s_proxy,
        }
    }
}

/// Counts a connection open while it lives.
struct OpenConnection {
    metrics: Arc<metrics::Metrics>,
    labels: metrics::ConnLabels,
}

impl OpenConnection {
    fn new(metrics: &Arc<metrics::Metrics>, kind: ListenerKind) -> OpenConnection {
        let labels = metrics::ConnLabels {
            listener: kind.label(),
        };
        metrics.connections.get_or_create(&labels).inc();
        metrics.connections_open.get_or_create(&labels).inc();
        OpenConnection {
            metrics: Arc::clone(metrics),
            labels,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .get_or_create(&self.labels)
            .dec();
    }
}

impl ListenerKind {
    const PLAIN: ListenerKind = ListenerKind {
        implicit_tls: false,
        proxy: false,
    };
    const TLS: ListenerKind = ListenerKind {
        implicit_tls: true,
        proxy: false,
    };
    const PLAIN_PROXY: ListenerKind = ListenerKind {
        implicit_tls: false,
        proxy: true,
    };
    const TLS_PROXY: ListenerKind = ListenerKind {
        implicit_tls: true,
        proxy: true,
    };
}

/// On a PROXY listener: checks the peer is a trusted proxy and reads its header
/// (bounded by the TLS-handshake limit). Returns the client address and whether the
/// proxy terminated TLS; `None` closes the connection.
async fn accept_proxied(
    shared: &Shared,
    tcp: &mut tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, bool)> {
    let live = shared.live();
    if !live.config.is_trusted_proxy(peer.ip()) {
        warn!(remote = %peer, error = %proxy::ProxyError::Untrusted(peer.ip()), "connection refused");
        return None;
    }
    match tokio::time::timeout(live.config.limits.tls_handshake, proxy::read_header(tcp)).await {
        Ok(Ok(h)) => Some((h.client.unwrap_or(peer), h.tls)),
        Ok(Err(e)) => {
            warn!(remote = %peer, error = %e, "connection refused");
            None
        }
        Err(_) => {
            warn!(remote = %peer, "connection refused: no PROXY header in time");
            None
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, ListenerKind)>,
    permits: Arc<Semaphore>,
    close: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    if listeners.is_empty() {
        return;
    }
    let mut next = 0usize;
    loop {
        // The permit first: at the limit, new connections wait in the backlog.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let accepted = std::future::poll_fn(|cx| {
            // Round-robin start so one busy listener cannot starve the others.
            let n = listeners.len();
            for k in 0..n {
                let i = (next + k) % n;
                if let std::task::Poll::Ready(r) = listeners[i].0.poll_accept(cx) {
                    next = (i + 1) % n;
                    return std::task::Poll::Ready(r.map(|(s, p)| (s, p, listeners[i].1)));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        let (mut tcp, peer, kind) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let implicit_tls = kind.implicit_tls;
        let conn_id = shared.conn_counter.fetch_add(1, Ordering::Relaxed);
        let shared2 = Arc::clone(&shared);
        let close = close.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
            let _open = OpenConnection::new(&shared2.metrics, kind);
            // Behind a proxy, the client is who the header names: that address
            // is the one the per-address limit, the throttle and the logs see.
            let (peer, tls_by_proxy) = if kind.proxy {
                match accept_proxied(&shared2, &mut tcp, peer).await {
                    Some(x) => x,
                    None => return,
                }
            } else {
                (peer, false)
            };
            let ip = peer.ip().to_canonical();
            let per_ip_limit = shared2.live().config.limits.max_connections_per_ip;
            let over = {
                let mut map = shared2.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let c = map.entry(ip).or_default();
                if c.active >= per_ip_limit {
                    true
                } else {
                    c.active += 1;
                    false
                }
            };
            if over {
                info!(remote = %peer, "too many connections from this address");
                refuse(tcp, implicit_tls).await;
                return;
            }
            let _slot = IpSlot {
                shared: Arc::clone(&shared2),
                ip,
            };
            // Every line a session logs carries its connection number, so one
            // session's lines can be picked out of a busy log.
            let span = tracing::info_span!("pop3", conn = conn_id);
            let origin = session::Origin {
                id: conn_id,
                peer,
                implicit_tls,
                tls_by_proxy,
            };
            session::run(shared2, tcp, origin, close)
                .instrument(span)
                .await;
        });
    }
}

/// Releases a per-IP slot when the connection ends, on every path.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(&self.ip) {
            c.active = c.active.saturating_sub(1);
            if c.active == 0 && c.parked == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn refuse(mut tcp: tokio::net::TcpStream, implicit_tls: bool) {
    // On the TLS port a cleartext line would be noise to the client; just close.
    if !implicit_tls {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tcp.write_all(
                &correio_proto::StatusLine::err_code(
                    correio_proto::RespCode::SysTemp,
                    "Too many connections from your address",
                )
                .to_wire(),
            ),
        )
        .await;
    }
}

/// Whether the process runs as root (it may then bind ports below 1024).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Drops root to `user` (and `group`, default: the user's primary group) after the
/// listeners are bound. Does nothing when not running as root.
pub fn drop_privileges(user: &str, group: Option<&str>) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let u = User::from_name(user)?.ok_or_else(|| anyhow::anyhow!("no such user {user:?}"))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)?
                .ok_or_else(|| anyhow::anyhow!("no such group {g:?}"))?
                .gid
        }
        None => u.gid,
    };
    // The user's supplementary groups too (e.g. `mail` for /var/mail mboxes), as
    // initgroups(3) would give a login; the chosen group first.
    let cname = std::ffi::CString::new(user)?;
    let mut groups = nix::unistd::getgrouplist(&cname, gid).unwrap_or_else(|_| vec![gid]);
    groups.retain(|g| *g != gid);
    groups.insert(0, gid);
    setgroups(&groups)?;
    setgid(gid)?;
    setuid(u.uid)?;
    if Uid::effective().is_root() || Gid::effective() != gid {
        anyhow::bail!("privileges were not dropped");
    }
    info!(
        user,
        uid = u.uid.as_raw(),
        gid = gid.as_raw(),
        "dropped root privileges"
    );
    Ok(())
}
