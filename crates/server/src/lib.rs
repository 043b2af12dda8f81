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
//! - [`Server::reload_tls`] (SIGHUP) swaps the certificate for new handshakes only.
#![forbid(unsafe_code)]

pub mod config;
pub mod lmtp;
mod session;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use correio_auth::{Throttle, ThrottleConfig, UserDb, UserDbOptions};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument as _, info, warn};

use crate::config::Config;
use crate::tls::TlsStore;

pub use crate::config::{ConfigError, Limits, LmtpAddr, Overrides};

/// State shared by all connections of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) session_config: correio_proto::server::ServerConfig,
    pub(crate) tls: TlsStore,
    pub(crate) users: Arc<UserDb>,
    pub(crate) throttle: Throttle,
    /// Last successful login per user, for LOGIN-DELAY within this process (it also
    /// closes the race between two logins at once); the store keeps the time on disk
    /// beside each maildrop, so a restart does not forget it.
    pub(crate) last_login: Mutex<HashMap<String, tokio::time::Instant>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    apop_counter: AtomicU64,
    conn_counter: AtomicU64,
    /// The SASL mechanisms worth advertising, and when that was last computed.
    mechanisms: Mutex<Option<(Option<FileStamp>, Offered)>>,
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
    /// The configured mechanisms (and APOP) that at least one user's stored secret
    /// allows. PLAIN and LOGIN work with every secret; CRAM-MD5, SCRAM-SHA-256 and APOP
    /// only with some, and a client that sees them offered tends to pick them, so they
    /// are only offered when they can succeed for someone.
    pub(crate) fn offered(&self) -> Offered {
        let stamp = users_file_stamp(&self.config.users_file);
        let mut cache = self.mechanisms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, offered)) = cache.as_ref()
            && *seen == stamp
        {
            return offered.clone();
        }
        let _ = self.users.reload_if_changed();
        let apop = self.config.apop
            && self
                .users
                .records()
                .iter()
                .any(|r| correio_auth::secret_caps(r).apop);
        let list: Vec<String> = self
            .config
            .mechanisms
            .iter()
            .filter(|m| match correio_auth::Mechanism::from_name(m) {
                Some(
                    mech
                    @ (correio_auth::Mechanism::CramMd5 | correio_auth::Mechanism::ScramSha256),
                ) => correio_auth::any_user_allows(&self.users, mech),
                Some(_) => true,
                None => false,
            })
            .cloned()
            .collect();
        let offered = Offered {
            mechanisms: list,
            apop,
        };
        *cache = Some((stamp, offered.clone()));
        offered
    }

    /// A fresh `<pid.counter.nanos@host>` APOP timestamp: the counter makes it unique
    /// within this process, pid and clock across restarts.
    pub(crate) fn apop_timestamp(&self) -> String {
        let n = self.apop_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "<{}.{n}.{nanos}@{}>",
            std::process::id(),
            self.config.hostname
        )
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The users file could not be read.
    #[error("users file: {0}")]
    Users(#[from] correio_auth::UserDbError),
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

/// The bound POP3 listeners.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Cleartext listeners (STLS offered when TLS is configured).
    pub pop3: Vec<TcpListener>,
    /// Implicit-TLS listeners.
    pub pop3s: Vec<TcpListener>,
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
    /// Loads the users file (missing: no users yet) and the TLS pair (missing while
    /// only cleartext listeners are configured: no STLS).
    pub fn new(config: Config) -> Result<Server, StartError> {
        Self::with_throttle(config, default_throttle())
    }

    /// Like [`Server::new`] with explicit throttle settings.
    pub fn with_throttle(config: Config, throttle: ThrottleConfig) -> Result<Server, StartError> {
        let users = UserDb::load_or_empty(&config.users_file, UserDbOptions::default())?;
        let tls = if config.tls_cert.exists() || config.tls_key.exists() || !config.pop3s.is_empty()
        {
            match TlsStore::load(&config.tls_cert, &config.tls_key) {
                Ok(t) => t,
                Err(e) if !config.pop3s.is_empty() => return Err(e.into()),
                Err(e) => {
                    warn!(error = %e, "TLS not available: STLS will not be offered");
                    TlsStore::unloaded(&config.tls_cert, &config.tls_key)
                }
            }
        } else {
            TlsStore::unloaded(&config.tls_cert, &config.tls_key)
        };
        if !config.pop3s.is_empty() && tls.current().is_none() {
            return Err(StartError::NoCertificate);
        }
        let session_config = config.session_config();
        Ok(Server {
            shared: Arc::new(Shared {
                session_config,
                tls,
                users: Arc::new(users),
                throttle: Throttle::new(throttle),
                last_login: Mutex::new(HashMap::new()),
                per_ip: Mutex::new(HashMap::new()),
                apop_counter: AtomicU64::new(0),
                conn_counter: AtomicU64::new(1),
                mechanisms: Mutex::new(None),
                config,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The users database, shared with the LMTP listener.
    pub fn users(&self) -> Arc<UserDb> {
        Arc::clone(&self.shared.users)
    }

    /// Whether TLS (STLS and pop3s) is available.
    pub fn has_tls(&self) -> bool {
        self.shared.tls.current().is_some()
    }

    /// Re-reads the certificate and key (SIGHUP). Running sessions keep theirs; on
    /// error the old pair stays.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        self.shared.tls.reload()
    }

    /// Binds every configured POP3 listener.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let mut l = Listeners::default();
        for (addrs, out) in [
            (&self.shared.config.pop3, &mut l.pop3),
            (&self.shared.config.pop3s, &mut l.pop3s),
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
        let limits = self.shared.config.limits.clone();
        // The dummy hash that makes unknown users cost as much as known ones: build it
        // now, not during the first failed login.
        tokio::task::spawn_blocking(correio_auth::warm_up_dummy);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (close_tx, close_rx) = watch::channel(false);
        // Every connection task holds a clone; recv() returns None once all are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut all = Vec::new();
        for (list, implicit_tls) in [(listeners.pop3, false), (listeners.pop3s, true)] {
            for listener in list {
                if let Ok(a) = listener.local_addr() {
                    info!(addr = %a, tls = implicit_tls, "listening");
                }
                all.push((listener, implicit_tls));
            }
        }
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

async fn accept_loop(
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, bool)>,
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
        let (tcp, peer, implicit_tls) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let over = {
            let mut map = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= shared.config.limits.max_connections_per_ip {
                true
            } else {
                *n += 1;
                false
            }
        };
        let conn_id = shared.conn_counter.fetch_add(1, Ordering::Relaxed);
        let shared2 = Arc::clone(&shared);
        let close = close.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
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
            session::run(shared2, tcp, peer, implicit_tls, close)
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
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
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
            tcp.write_all(b"-ERR [SYS/TEMP] Too many connections from your address\r\n"),
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
    setgroups(&[gid])?;
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
