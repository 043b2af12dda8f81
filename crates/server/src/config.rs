//! The server configuration: a TOML file (every key optional, unknown keys refused) plus
//! command-line overrides, resolved into one [`Config`].
//!
//! ```toml
//! data_dir = "/var/lib/correio"          # users file, TLS pair, mailboxes by default
//! users_file = "/etc/correio/users"      # default: <data_dir>/users
//! mail_location = "maildir:/var/mail/%d/%n/Maildir"   # default: maildir:<data_dir>/mail/%u
//! hostname = "mail.example.org"          # APOP timestamp, CRAM-MD5 challenge
//! allow_cleartext_login = false          # passwords over non-TLS, non-loopback
//! cleartext_login_on_loopback = true     # local tools may log in without TLS
//! trusted_networks = ["10.0.0.0/8"]      # no failed-login throttle, cleartext login ok
//! trusted_proxies = ["127.0.0.1"]        # may send PROXY headers (HAProxy)
//! user = "correio"                       # drop root to this user after binding
//! group = "correio"
//!
//! [listen]
//! pop3 = ["0.0.0.0:110", "[::]:110"]
//! pop3s = ["0.0.0.0:995", "[::]:995"]
//! lmtp = "127.0.0.1:24"                  # or "unix:/run/correio/lmtp"
//! pop3_proxy = ["127.0.0.1:10110"]       # PROXY protocol v1/v2 first (from
//! pop3s_proxy = ["127.0.0.1:10995"]      # trusted_proxies), then POP3 / TLS
//!
//! [tls]
//! cert = "/etc/correio/cert.pem"         # default: <data_dir>/tls/cert.pem
//! key = "/etc/correio/key.pem"           # default: <data_dir>/tls/key.pem
//! sni = [{ name = "mail.example.net", cert = "...", key = "..." }]  # per name
//!
//! [pop3]
//! mechanisms = ["PLAIN", "LOGIN"]        # default; SCRAM-SHA-256 and CRAM-MD5 only
//!                                        # when listed (they need special secrets)
//! apop = false                           # APOP needs PLAIN secrets: opt in
//! login_delay = "0s"                     # announced and enforced when > 0; the last
//!                                        # login is kept beside the maildrop (restarts)
//! expire = "never"                       # or days: 0 = retrieved messages go at QUIT;
//!                                        # n = at the first QUIT n days after first RETR
//! greeting = "Correio POP3 server ready"
//!
//! [auth]
//! username_format = "%u"                 # "%Lu": logins are case-insensitive
//! default_domain = "example.org"         # appended to logins without "@"
//! failure_delay = "2s"                   # first failed login from an address/user
//! failure_delay_max = "5s"               # ceiling (below common client timeouts)
//!
//! [delivery]                             # LMTP and `correio deliver`
//! max_message_size = 67108864
//! quota_bytes = 0                        # 0: none
//! quota_messages = 0
//! quota_permanent = false                # over quota: 4.2.2 (retry), true: 5.2.2
//! line_ends = "lf"                       # Maildir: or "crlf" (wire form, sendfile)
//!
//! [log]
//! format = "text"                        # or "json"; no timestamps under systemd
//! level = "info"                         # RUST_LOG, when set, overrides it
//!
//! [metrics]
//! listen = "127.0.0.1:9110"              # Prometheus /metrics (off when absent)
//!
//! [admin]
//! socket = "/run/correio/admin.sock"     # default <data_dir>/admin.sock; "" = off
//!
//! [limits]
//! max_connections = 1000
//! max_connections_per_ip = 20
//! pre_login_idle = "60s"
//! post_login_idle = "10m"                # RFC 1939: at least 10 minutes
//! tls_handshake = "30s"
//! write_stall = "60s"
//! max_command_line = 255
//! max_bad_commands = 10
//! max_auth_failures = 3
//! shutdown_grace = "30s"
//! ```
//!
//! [`Config::load`] reports errors as "file: key: reason" so `correio check` can say
//! exactly what is wrong and where.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "correio-data";

/// Every SASL mechanism the server can run, in advertising order.
pub const ALL_MECHANISMS: [&str; 4] = ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"];

/// The mechanisms offered when the config lists none: the ones every stored secret can
/// complete. SCRAM-SHA-256 and CRAM-MD5 need secrets of their own (or PLAIN ones); a
/// client that sees them offered tends to pick them, so they are opt-in.
pub const DEFAULT_MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

/// The configuration file read when no `--config` is given, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/correio/correio.toml";

/// The config file a subcommand reads: `--config`, else [`SYSTEM_CONFIG`] when it
/// exists, else none (the `./correio-data` defaults). Every subcommand that needs the
/// server's configuration resolves it here, so they all agree.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_owned()),
        None => {
            let sys = Path::new(SYSTEM_CONFIG);
            sys.exists().then(|| sys.to_owned())
        }
    }
}

/// A configuration error: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if the error is in one.
    pub file: Option<PathBuf>,
    /// The key (dotted path), if known.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: None,
        key: Some(key.to_owned()),
        reason: reason.into(),
    }
}

/// The file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    users_file: Option<PathBuf>,
    mail_location: Option<String>,
    hostname: Option<String>,
    allow_cleartext_login: Option<bool>,
    cleartext_login_on_loopback: Option<bool>,
    trusted_networks: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    listen: FileListen,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    delivery: FileDelivery,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    pop3: FilePop3,
    #[serde(default)]
    limits: FileLimits,
    /// `[store.NAME]`: stores other than the file backends, read by the program that
    /// builds them (the server crate does not know their keys).
    #[serde(default)]
    store: std::collections::BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    pop3: Option<Vec<String>>,
    pop3s: Option<Vec<String>>,
    pop3_proxy: Option<Vec<String>>,
    pop3s_proxy: Option<Vec<String>>,
    lmtp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sni: Option<Vec<FileSni>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSni {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePop3 {
    mechanisms: Option<Vec<String>>,
    apop: Option<bool>,
    login_delay: Option<String>,
    expire: Option<toml::Value>,
    greeting: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    username_format: Option<String>,
    default_domain: Option<String>,
    failure_delay: Option<String>,
    failure_delay_max: Option<String>,
    backend: Option<String>,
    cache_size: Option<usize>,
    cache_ttl: Option<String>,
    cache_negative_ttl: Option<String>,
    system: Option<correio_users::SystemConfig>,
    sql: Option<correio_users::SqlConfig>,
    ldap: Option<correio_users::LdapConfig>,
    checkpassword: Option<correio_users::CheckpasswordConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    max_message_size: Option<u64>,
    quota_bytes: Option<u64>,
    quota_messages: Option<u64>,
    quota_permanent: Option<bool>,
    line_ends: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    pre_login_idle: Option<String>,
    post_login_idle: Option<String>,
    tls_handshake: Option<String>,
    write_stall: Option<String>,
    max_command_line: Option<usize>,
    max_bad_commands: Option<u32>,
    max_auth_failures: Option<u32>,
    shutdown_grace: Option<String>,
}

/// Where the LMTP listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl LmtpAddr {
    /// Parses `ADDR:PORT` or `unix:PATH`.
    pub fn parse(s: &str) -> Result<LmtpAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(LmtpAddr::Unix(PathBuf::from(p)));
        }
        s.parse()
            .map(LmtpAddr::Tcp)
            .map_err(|_| format!("{s:?} is neither ADDR:PORT nor unix:PATH"))
    }
}

/// The limits of item 6 of the server's contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all listeners together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Idle time allowed before login.
    pub pre_login_idle: Duration,
    /// Idle time allowed after login (RFC 1939: at least 10 minutes).
    pub post_login_idle: Duration,
    /// Time allowed for a TLS handshake.
    pub tls_handshake: Duration,
    /// Time one write may stall (a client that stops reading).
    pub write_stall: Duration,
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Bad commands before disconnect.
    pub max_bad_commands: u32,
    /// Failed logins before disconnect.
    pub max_auth_failures: u32,
    /// How long sessions may go on after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_connections_per_ip: 20,
            pre_login_idle: Duration::from_secs(60),
            post_login_idle: Duration::from_secs(600),
            tls_handshake: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            max_command_line: correio_proto::MAX_COMMAND_LINE,
            max_bad_commands: 10,
            max_auth_failures: 3,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How a login name is rewritten before lookup (Dovecot's `auth_username_format`
/// and `auth_default_realm`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsernamePolicy {
    /// Fold names to lower case (`%Lu`, `%Ln`).
    pub lowercase: bool,
    /// Drop the `@domain` part (`%n`, `%Ln`).
    pub strip_domain: bool,
    /// Appended as `@domain` to names without one.
    pub default_domain: Option<String>,
}

impl UsernamePolicy {
    /// The name to look up for what the client sent. The domain is added before case
    /// folding, so `Bob` with default domain `Example.Org` and `%Lu` is
    /// `bob@example.org`.
    pub fn apply(&self, name: &str) -> String {
        let mut out = match &self.default_domain {
            Some(d) if !name.contains('@') => format!("{name}@{d}"),
            _ => name.to_owned(),
        };
        if self.strip_domain
            && let Some((local, _)) = out.split_once('@')
        {
            out = local.to_owned();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    /// Names to try in the users file, best first: the rewritten name, then (when the
    /// default domain was what made it `user@domain`) the bare local part, so a users
    /// file of bare names keeps working when the admin sets a default domain.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let first = self.apply(name);
        let mut out = vec![first.clone()];
        if let Some(d) = &self.default_domain
            && !self.strip_domain
            && let Some((local, domain)) = first.rsplit_once('@')
            && domain.eq_ignore_ascii_case(d)
            && !local.is_empty()
        {
            out.push(local.to_owned());
        }
        out
    }
}

/// Delivery settings shared by the LMTP listener and `correio deliver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Largest message accepted, in octets.
    pub max_message_size: u64,
    /// Mailbox quota in octets.
    pub quota_bytes: Option<u64>,
    /// Mailbox quota in messages.
    pub quota_messages: Option<u64>,
    /// Whether a quota overrun bounces (5.2.2) instead of being retried (4.2.2).
    pub quota_permanent: bool,
    /// The line ends Maildir messages are stored with.
    pub line_ends: correio_store::LineEnds,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            max_message_size: 64 * 1024 * 1024,
            quota_bytes: None,
            quota_messages: None,
            quota_permanent: false,
            line_ends: correio_store::LineEnds::Lf,
        }
    }
}

impl Delivery {
    /// The store's delivery options for these settings.
    pub fn options(&self) -> correio_store::DeliverOptions {
        correio_store::DeliverOptions::default()
            .max_message_size(Some(self.max_message_size))
            .quota(self.quota_bytes, self.quota_messages)
            .quota_permanent(self.quota_permanent)
            .line_ends(self.line_ends)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Logging: format and level (`RUST_LOG`, when set, overrides the level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Text or JSON.
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The failed-login throttle's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthThrottle {
    /// Delay after the first failure.
    pub failure_delay: Duration,
    /// The delay never exceeds this.
    pub failure_delay_max: Duration,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            failure_delay: Duration::from_secs(2),
            failure_delay_max: Duration::from_secs(5),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The users file (passwd-file format).
    pub users_file: PathBuf,
    /// The mail location template (`maildir:...` or `mbox:...`, with `%u` etc.).
    pub mail_location: String,
    /// The `[store.NAME]` tables as written: stores other than the file backends
    /// (`correio serve` builds them; a mail location `NAME:%u` uses one).
    pub stores: std::collections::BTreeMap<String, toml::Table>,
    /// Host name for the APOP timestamp and CRAM-MD5 challenges.
    pub hostname: String,
    /// Allow USER/PASS, PLAIN and LOGIN on cleartext non-loopback connections.
    pub allow_cleartext_login: bool,
    /// Treat loopback connections as safe for cleartext logins (default: yes).
    pub cleartext_login_on_loopback: bool,
    /// Networks exempt from the failed-login throttle and allowed cleartext logins.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Peers allowed to send PROXY protocol headers (to the `*_proxy` listeners).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How login names are rewritten before lookup.
    pub username: UsernamePolicy,
    /// The failed-login throttle.
    pub throttle: AuthThrottle,
    /// Delivery (LMTP and `correio deliver`): size limit and quotas.
    pub delivery: Delivery,
    /// Logging.
    pub log: LogSettings,
    /// Where Prometheus scrapes `/metrics` (none: no metrics listener).
    pub metrics_listen: Option<SocketAddr>,
    /// The admin control socket (`correio admin`); none when set to `""`.
    pub admin_socket: Option<PathBuf>,
    /// Drop root to this user after binding.
    pub run_as_user: Option<String>,
    /// Drop root to this group after binding.
    pub run_as_group: Option<String>,
    /// Cleartext POP3 listeners (STLS offered when a certificate is loaded).
    pub pop3: Vec<SocketAddr>,
    /// Implicit-TLS POP3 listeners.
    pub pop3s: Vec<SocketAddr>,
    /// Cleartext POP3 listeners behind a proxy: each connection starts with a PROXY
    /// protocol header (v1 or v2) from a `trusted_proxies` peer.
    pub pop3_proxy: Vec<SocketAddr>,
    /// Implicit-TLS POP3 listeners behind a proxy (PROXY header, then TLS).
    pub pop3s_proxy: Vec<SocketAddr>,
    /// The LMTP listener.
    pub lmtp: Option<LmtpAddr>,
    /// Certificate chain, PEM.
    pub tls_cert: PathBuf,
    /// Private key, PEM.
    pub tls_key: PathBuf,
    /// One certificate per server name (SNI); clients naming none of them get the
    /// default pair.
    pub tls_sni: Vec<crate::tls::SniCert>,
    /// The pair was named in the configuration (`[tls] cert`/`key`): it must load.
    /// Otherwise it is the data directory's default pair, which `correio serve`
    /// creates on its first run.
    pub tls_explicit: bool,
    /// Where the users live (`[auth] backend` and its table).
    pub user_backend: correio_users::BackendConfig,
    /// The authentication cache (`[auth] cache_*`).
    pub auth_cache: correio_users::CacheConfig,
    /// SASL mechanisms offered (a user gets only those their secret allows).
    pub mechanisms: Vec<String>,
    /// Offer APOP.
    pub apop: bool,
    /// LOGIN-DELAY, announced and enforced (zero: none).
    pub login_delay: Duration,
    /// EXPIRE policy: `None` announces nothing. `Days(0)`: messages retrieved (RETR)
    /// in a session are removed at its QUIT. `Days(n)`: a message is removed at the
    /// first UPDATE at least n days after its first RETR (dates kept by the store).
    pub expire: Option<correio_proto::capa::ExpirePolicy>,
    /// Greeting text.
    pub greeting: String,
    /// Limits.
    pub limits: Limits,
}

/// The backend's table in one line, secrets masked (for `correio check` and the
/// reload log).
fn backend_settings(b: &correio_users::BackendConfig) -> String {
    use correio_users::BackendConfig as B;
    let mask_url = |u: &str| match (u.find("://"), u.rfind('@')) {
        (Some(a), Some(at)) if a < at => {
            let creds = &u[a + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:****{}", &u[..a], &u[at..]),
                None => u.to_owned(),
            }
        }
        _ => u.to_owned(),
    };
    match b {
        B::PasswdFile => String::new(),
        B::System(s) => format!(
            "pam_service={} mail_location={} first_valid_uid={}",
            s.pam_service(),
            s.mail_location(),
            s.first_valid_uid()
        ),
        B::Sql(s) => format!(
            "url={} password_query={:?} user_query={:?}",
            mask_url(&s.url),
            s.password_query,
            s.user_query.as_deref().unwrap_or("(password_query)")
        ),
        B::Ldap(l) => format!(
            "uri={} base={} filter={:?} auth_bind={} bind_dn={} bind_password={}",
            l.uri,
            l.base,
            l.filter
                .as_deref()
                .unwrap_or("(&(objectClass=posixAccount)(uid=%n))"),
            l.auth_bind.unwrap_or(true),
            l.bind_dn.as_deref().unwrap_or("(anonymous)"),
            if l.bind_password.is_some() {
                "****"
            } else {
                ""
            }
        ),
        B::Checkpassword(c) => format!("program={}", c.program.display()),
    }
}

/// Command-line overrides (`correio serve` flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--pop3 ADDR:PORT` (repeatable).
    pub pop3: Vec<SocketAddr>,
    /// `--pop3s ADDR:PORT` (repeatable).
    pub pop3s: Vec<SocketAddr>,
    /// `--lmtp ADDR:PORT|unix:PATH`.
    pub lmtp: Option<LmtpAddr>,
    /// `--allow-cleartext-login`.
    pub allow_cleartext_login: bool,
    /// `--set KEY=VALUE` (repeatable): any config key by its dotted path, e.g.
    /// `limits.max_connections=50` or `listen.pop3=["[::]:110"]`. The value is read as
    /// TOML, or as a string if it is not valid TOML.
    pub set: Vec<String>,
}

fn duration(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            err(
                key,
                format!("{s:?} is not a duration like \"30s\" or \"10m\": {e}"),
            )
        }),
    }
}

fn addrs(key: &str, v: &Option<Vec<String>>) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
    let Some(list) = v else { return Ok(None) };
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| err(key, format!("{s:?} is not ADDR:PORT (IPv6: \"[::1]:110\")")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl Config {
    /// Reads and resolves a config file (if any) with overrides. A missing file given
    /// explicitly is an error.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match path {
            None => String::new(),
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                file: Some(p.to_owned()),
                key: None,
                reason: format!("cannot read: {e}"),
            })?,
        };
        Self::load_text(path, &text, overrides)
    }

    /// Resolves the text of the config file at `path` (read elsewhere, e.g. by the
    /// privileged helper); errors name `path`.
    pub fn load_text(
        path: Option<&Path>,
        text: &str,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let in_file = |mut e: ConfigError| {
            if e.key.as_deref() != Some("--set") {
                e.file = path.map(Path::to_owned);
            }
            e
        };
        let file = Self::parse_with_sets(text, &overrides.set).map_err(in_file)?;
        Self::resolve(file, overrides).map_err(in_file)
    }

    /// Parses config text (for tests and `correio check`).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::resolve(Self::parse_with_sets(text, &overrides.set)?, overrides)
    }

    /// The file, then each `--set KEY=VALUE` applied on top of it.
    fn parse_with_sets(text: &str, sets: &[String]) -> Result<FileConfig, ConfigError> {
        // Parse the text alone first, so its errors carry line numbers.
        let file = Self::parse_file(text)?;
        if sets.is_empty() {
            return Ok(file);
        }
        let set_err = |reason: String| ConfigError {
            file: None,
            key: Some("--set".into()),
            reason,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| set_err(e.to_string()))?;
        for item in sets {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| set_err(format!("{item:?} is not KEY=VALUE")))?;
            let key = key.trim();
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
            let mut parts = key.split('.').peekable();
            let mut cur = &mut table;
            while let Some(part) = parts.next() {
                if part.is_empty() {
                    return Err(set_err(format!("{key:?} is not a dotted key")));
                }
                if parts.peek().is_none() {
                    cur.insert(part.to_owned(), value.clone());
                    break;
                }
                let next = cur
                    .entry(part.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = next
                    .as_table_mut()
                    .ok_or_else(|| set_err(format!("{part:?} in {key:?} is not a table")))?;
            }
        }
        FileConfig::deserialize(table).map_err(|e| set_err(e.message().to_owned()))
    }

    fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            ConfigError {
                file: None,
                key: line.map(|l| format!("line {l}")),
                reason: e.message().to_owned(),
            }
        })
    }

    fn resolve(mut f: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let data_dir = o
            .data_dir
            .clone()
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        // The mail template needs an absolute path: make a relative data dir absolute.
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()
                .map(|d| d.join(&data_dir))
                .unwrap_or(data_dir)
        };
        let users_file = f.users_file.unwrap_or_else(|| data_dir.join("users"));
        let mail_location = f
            .mail_location
            .unwrap_or_else(|| format!("maildir:{}/mail/%u", data_dir.display()));
        let scheme = mail_location
            .split_once(':')
            .map(|(k, _)| k.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("maildir" | "mbox") => {}
            Some(k) if f.store.keys().any(|n| n.eq_ignore_ascii_case(k)) => {}
            _ => {
                return Err(err(
                    "mail_location",
                    format!(
                        "{mail_location:?} must start with maildir:, mbox: or the name of a [store.NAME] table"
                    ),
                ));
            }
        }
        for name in f.store.keys() {
            if name.eq_ignore_ascii_case("maildir")
                || name.eq_ignore_ascii_case("mbox")
                || name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    &format!("store.{name}"),
                    "a store name is letters, digits, - and _, and not maildir or mbox",
                ));
            }
        }
        let stores = f.store.clone();
        let hostname = match f.hostname {
            Some(h) if h.is_empty() || h.bytes().any(|b| !b.is_ascii_graphic() || b == b'>') => {
                return Err(err("hostname", format!("{h:?} is not a host name")));
            }
            Some(h) => h,
            None => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'>'))
                .unwrap_or_else(|| "localhost".into()),
        };

        let pop3 = if o.pop3.is_empty() {
            addrs("listen.pop3", &f.listen.pop3)?.unwrap_or_default()
        } else {
            o.pop3.clone()
        };
        let pop3s = if o.pop3s.is_empty() {
            addrs("listen.pop3s", &f.listen.pop3s)?.unwrap_or_default()
        } else {
            o.pop3s.clone()
        };
        let lmtp = match (&o.lmtp, &f.listen.lmtp) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(s)) => Some(LmtpAddr::parse(s).map_err(|r| err("listen.lmtp", r))?),
            (None, None) => None,
        };

        let mechanisms = match f.pop3.mechanisms {
            None => DEFAULT_MECHANISMS.iter().map(|m| (*m).to_owned()).collect(),
            Some(list) => {
                let mut out = Vec::new();
                for m in list {
                    let up = m.to_ascii_uppercase();
                    if !ALL_MECHANISMS.contains(&up.as_str()) {
                        return Err(err(
                            "pop3.mechanisms",
                            format!(
                                "unknown mechanism {m:?} (known: {})",
                                ALL_MECHANISMS.join(", ")
                            ),
                        ));
                    }
                    if !out.contains(&up) {
                        out.push(up);
                    }
                }
                out
            }
        };
        let user_backend = correio_users::BackendConfig::from_parts(
            f.auth.backend.as_deref(),
            f.auth.system.clone(),
            f.auth.sql.clone(),
            f.auth.ldap.clone(),
            f.auth.checkpassword.clone(),
        )
        .map_err(|(k, r)| err(&k, r))?;
        if user_backend.plaintext_only() {
            // Those mechanisms need the stored secret at hand; this backend is asked
            // with the plaintext password only. Refused here, not offered and failed.
            if let Some(m) = mechanisms.iter().find(|m| *m != "PLAIN" && *m != "LOGIN") {
                return Err(err(
                    "pop3.mechanisms",
                    format!(
                        "{m} needs the stored secret, which auth.backend = {:?} does not \
                         give; use PLAIN and LOGIN (over TLS)",
                        user_backend.name()
                    ),
                ));
            }
            if f.pop3.apop == Some(true) {
                return Err(err(
                    "pop3.apop",
                    format!(
                        "APOP needs the plaintext secret, which auth.backend = {:?} does not give",
                        user_backend.name()
                    ),
                ));
            }
        }
        let dc = correio_users::CacheConfig::default();
        let auth_cache = correio_users::CacheConfig {
            size: f.auth.cache_size.unwrap_or(dc.size),
            ttl: duration("auth.cache_ttl", &f.auth.cache_ttl, dc.ttl)?,
            negative_ttl: duration(
                "auth.cache_negative_ttl",
                &f.auth.cache_negative_ttl,
                dc.negative_ttl,
            )?,
        };
        let expire = match f.pop3.expire {
            None => None,
            Some(toml::Value::String(s)) if s.eq_ignore_ascii_case("never") => {
                Some(correio_proto::capa::ExpirePolicy::Never)
            }
            Some(toml::Value::Integer(n)) if (0..=i64::from(u32::MAX)).contains(&n) => {
                Some(correio_proto::capa::ExpirePolicy::Days(n as u32))
            }
            Some(v) => {
                return Err(err(
                    "pop3.expire",
                    format!("{v} must be \"never\" or a number of days"),
                ));
            }
        };
        let greeting = f
            .pop3
            .greeting
            .unwrap_or_else(|| "Correio POP3 server ready".into());
        if greeting.bytes().any(|b| b < 0x20 || b == 0x7f) || greeting.len() > 200 {
            return Err(err(
                "pop3.greeting",
                "must be one line of at most 200 printable characters",
            ));
        }

        let trusted_proxies = f
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|n| parse_network(n).map_err(|r| err("trusted_proxies", r)))
            .collect::<Result<Vec<_>, _>>()?;
        let pop3_proxy = addrs("listen.pop3_proxy", &f.listen.pop3_proxy)?.unwrap_or_default();
        let pop3s_proxy = addrs("listen.pop3s_proxy", &f.listen.pop3s_proxy)?.unwrap_or_default();
        if (!pop3_proxy.is_empty() || !pop3s_proxy.is_empty()) && trusted_proxies.is_empty() {
            return Err(err(
                "trusted_proxies",
                "PROXY listeners (listen.pop3_proxy / pop3s_proxy) need trusted_proxies",
            ));
        }
        let trusted_networks = f
            .trusted_networks
            .unwrap_or_default()
            .iter()
            .map(|n| parse_network(n).map_err(|r| err("trusted_networks", r)))
            .collect::<Result<Vec<_>, _>>()?;
        let username = username_policy(&f.auth)?;
        let dt = AuthThrottle::default();
        let throttle = AuthThrottle {
            failure_delay: duration(
                "auth.failure_delay",
                &f.auth.failure_delay,
                dt.failure_delay,
            )?,
            failure_delay_max: duration(
                "auth.failure_delay_max",
                &f.auth.failure_delay_max,
                dt.failure_delay_max,
            )?,
        };
        if throttle.failure_delay > throttle.failure_delay_max {
            return Err(err(
                "auth.failure_delay",
                "must not be more than auth.failure_delay_max",
            ));
        }
        if throttle.failure_delay_max > Duration::from_secs(60) {
            return Err(err(
                "auth.failure_delay_max",
                "must be at most 60s (clients time out long before)",
            ));
        }
        let log = LogSettings {
            format: match f.log.format.as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(err(
                        "log.format",
                        format!("{other:?} is not \"text\" or \"json\""),
                    ));
                }
            },
            level: match f.log.level.as_deref().unwrap_or("info") {
                l @ ("error" | "warn" | "info" | "debug" | "trace") => l.to_owned(),
                other => {
                    return Err(err(
                        "log.level",
                        format!("{other:?} is not one of error, warn, info, debug, trace"),
                    ));
                }
            },
        };
        let mut tls_sni: Vec<crate::tls::SniCert> = Vec::new();
        for s in f.tls.sni.take().unwrap_or_default() {
            let name = s.name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(err("tls.sni", format!("{:?} is not a host name", s.name)));
            }
            if tls_sni.iter().any(|x| x.name == name) {
                return Err(err("tls.sni", format!("{name:?} is listed twice")));
            }
            tls_sni.push(crate::tls::SniCert {
                name,
                cert: s.cert,
                key: s.key,
            });
        }
        let dd = Delivery::default();
        let delivery = Delivery {
            max_message_size: f.delivery.max_message_size.unwrap_or(dd.max_message_size),
            quota_bytes: f.delivery.quota_bytes.filter(|n| *n > 0),
            quota_messages: f.delivery.quota_messages.filter(|n| *n > 0),
            quota_permanent: f.delivery.quota_permanent.unwrap_or(false),
            line_ends: match f.delivery.line_ends.as_deref() {
                None => dd.line_ends,
                Some(v) => correio_store::LineEnds::parse(v).ok_or_else(|| {
                    err(
                        "delivery.line_ends",
                        format!("{v:?} is not \"lf\" or \"crlf\""),
                    )
                })?,
            },
        };
        if delivery.max_message_size == 0 {
            return Err(err("delivery.max_message_size", "must be at least 1"));
        }

        let d = Limits::default();
        let l = &f.limits;
        let limits = Limits {
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_connections_per_ip: l.max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
            pre_login_idle: duration("limits.pre_login_idle", &l.pre_login_idle, d.pre_login_idle)?,
            post_login_idle: duration(
                "limits.post_login_idle",
                &l.post_login_idle,
                d.post_login_idle,
            )?,
            tls_handshake: duration("limits.tls_handshake", &l.tls_handshake, d.tls_handshake)?,
            write_stall: duration("limits.write_stall", &l.write_stall, d.write_stall)?,
            max_command_line: l.max_command_line.unwrap_or(d.max_command_line),
            max_bad_commands: l.max_bad_commands.unwrap_or(d.max_bad_commands),
            max_auth_failures: l.max_auth_failures.unwrap_or(d.max_auth_failures),
            shutdown_grace: duration("limits.shutdown_grace", &l.shutdown_grace, d.shutdown_grace)?,
        };
        if limits.max_connections == 0 {
            return Err(err("limits.max_connections", "must be at least 1"));
        }
        if limits.max_connections_per_ip == 0 {
            return Err(err("limits.max_connections_per_ip", "must be at least 1"));
        }
        if limits.post_login_idle < Duration::from_secs(600) {
            return Err(err(
                "limits.post_login_idle",
                "must be at least 10m (RFC 1939 §3 autologout timer)",
            ));
        }
        if !(255..=8192).contains(&limits.max_command_line) {
            return Err(err(
                "limits.max_command_line",
                "must be between 255 (RFC 2449 §4) and 8192",
            ));
        }
        if limits.max_bad_commands == 0 || limits.max_auth_failures == 0 {
            return Err(err(
                "limits",
                "max_bad_commands and max_auth_failures must be at least 1",
            ));
        }
        for (key, v) in [
            ("limits.pre_login_idle", limits.pre_login_idle),
            ("limits.tls_handshake", limits.tls_handshake),
            ("limits.write_stall", limits.write_stall),
        ] {
            if v.is_zero() {
                return Err(err(key, "must be more than 0s"));
            }
        }

        Ok(Config {
            users_file,
            mail_location,
            stores,
            hostname,
            allow_cleartext_login: o.allow_cleartext_login
                || f.allow_cleartext_login.unwrap_or(false),
            cleartext_login_on_loopback: f.cleartext_login_on_loopback.unwrap_or(true),
            trusted_networks,
            trusted_proxies,
            pop3_proxy,
            pop3s_proxy,
            username,
            throttle,
            delivery,
            log,
            admin_socket: match f.admin.socket.as_deref() {
                None => Some(data_dir.join("admin.sock")),
                Some("") => None,
                Some(p) => Some(PathBuf::from(p)),
            },
            metrics_listen: match &f.metrics.listen {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    err(
                        "metrics.listen",
                        format!("{a:?} is not ADDR:PORT (e.g. \"127.0.0.1:9110\")"),
                    )
                })?),
            },
            run_as_user: f.user,
            run_as_group: f.group,
            pop3,
            pop3s,
            lmtp,
            tls_explicit: f.tls.cert.is_some() || f.tls.key.is_some(),
            tls_sni,
            tls_cert: f
                .tls
                .cert
                .unwrap_or_else(|| data_dir.join("tls").join("cert.pem")),
            tls_key: f
                .tls
                .key
                .unwrap_or_else(|| data_dir.join("tls").join("key.pem")),
            user_backend,
            auth_cache,
            mechanisms,
            apop: f.pop3.apop.unwrap_or(false),
            login_delay: duration("pop3.login_delay", &f.pop3.login_delay, Duration::ZERO)?,
            expire,
            greeting,
            limits,
            data_dir,
        })
    }

    /// Whether `ip` may send PROXY headers.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Whether `ip` is in `trusted_networks`.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    /// Every setting as `key = value`, in file order: what `correio check` prints and
    /// what a reload compares to log what changed.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let list = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let opt = |v: Option<u64>| v.map_or("none".to_owned(), |n| n.to_string());
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let l = &self.limits;
        vec![
            ("data_dir", self.data_dir.display().to_string()),
            ("users_file", self.users_file.display().to_string()),
            ("mail_location", self.mail_location.clone()),
            ("hostname", self.hostname.clone()),
            (
                "allow_cleartext_login",
                self.allow_cleartext_login.to_string(),
            ),
            (
                "cleartext_login_on_loopback",
                self.cleartext_login_on_loopback.to_string(),
            ),
            (
                "trusted_networks",
                self.trusted_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "trusted_proxies",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("user", self.run_as_user.clone().unwrap_or_default()),
            ("group", self.run_as_group.clone().unwrap_or_default()),
            ("listen.pop3", list(&self.pop3)),
            ("listen.pop3s", list(&self.pop3s)),
            ("listen.pop3_proxy", list(&self.pop3_proxy)),
            ("listen.pop3s_proxy", list(&self.pop3s_proxy)),
            (
                "listen.lmtp",
                match &self.lmtp {
                    None => String::new(),
                    Some(LmtpAddr::Tcp(a)) => a.to_string(),
                    Some(LmtpAddr::Unix(p)) => format!("unix:{}", p.display()),
                },
            ),
            ("tls.cert", self.tls_cert.display().to_string()),
            ("tls.key", self.tls_key.display().to_string()),
            (
                "tls.sni",
                self.tls_sni
                    .iter()
                    .map(|s| format!("{}={}", s.name, s.cert.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("pop3.mechanisms", self.mechanisms.join(" ")),
            ("pop3.apop", self.apop.to_string()),
            ("pop3.login_delay", dur(self.login_delay)),
            (
                "pop3.expire",
                match self.expire {
                    None => "(not announced)".into(),
                    Some(correio_proto::capa::ExpirePolicy::Never) => "never".into(),
                    Some(correio_proto::capa::ExpirePolicy::Days(n)) => n.to_string(),
                },
            ),
            ("pop3.greeting", self.greeting.clone()),
            ("auth.username_format", self.username.format()),
            (
                "auth.default_domain",
                self.username.default_domain.clone().unwrap_or_default(),
            ),
            ("auth.failure_delay", dur(self.throttle.failure_delay)),
            ("auth.backend", self.user_backend.name().to_owned()),
            ("auth.cache_size", self.auth_cache.size.to_string()),
            ("auth.cache_ttl", dur(self.auth_cache.ttl)),
            ("auth.cache_negative_ttl", dur(self.auth_cache.negative_ttl)),
            (
                "auth.backend_settings",
                backend_settings(&self.user_backend),
            ),
            (
                "auth.failure_delay_max",
                dur(self.throttle.failure_delay_max),
            ),
            (
                "delivery.max_message_size",
                self.delivery.max_message_size.to_string(),
            ),
            ("delivery.quota_bytes", opt(self.delivery.quota_bytes)),
            ("delivery.quota_messages", opt(self.delivery.quota_messages)),
            (
                "delivery.quota_permanent",
                self.delivery.quota_permanent.to_string(),
            ),
            (
                "delivery.line_ends",
                match self.delivery.line_ends {
                    correio_store::LineEnds::Lf => "lf".into(),
                    correio_store::LineEnds::Crlf => "crlf".into(),
                },
            ),
            (
                "log.format",
                match self.log.format {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                },
            ),
            ("log.level", self.log.level.clone()),
            (
                "admin.socket",
                self.admin_socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "metrics.listen",
                self.metrics_listen
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ),
            ("limits.max_connections", l.max_connections.to_string()),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip.to_string(),
            ),
            ("limits.pre_login_idle", dur(l.pre_login_idle)),
            ("limits.post_login_idle", dur(l.post_login_idle)),
            ("limits.tls_handshake", dur(l.tls_handshake)),
            ("limits.write_stall", dur(l.write_stall)),
            ("limits.max_command_line", l.max_command_line.to_string()),
            ("limits.max_bad_commands", l.max_bad_commands.to_string()),
            ("limits.max_auth_failures", l.max_auth_failures.to_string()),
            ("limits.shutdown_grace", dur(l.shutdown_grace)),
        ]
    }

    /// The session policy for the protocol machine.
    pub fn session_config(&self) -> correio_proto::server::ServerConfig {
        correio_proto::server::ServerConfig {
            greeting: self.greeting.clone(),
            sasl_mechanisms: self.mechanisms.clone(),
            login_delay: (!self.login_delay.is_zero())
                .then(|| u32::try_from(self.login_delay.as_secs()).unwrap_or(u32::MAX)),
            expire: self.expire,
            max_bad_commands: self.limits.max_bad_commands,
            max_auth_failures: self.limits.max_auth_failures,
            max_command_line: self.limits.max_command_line,
            pre_login_idle: self.limits.pre_login_idle,
            post_login_idle: self.limits.post_login_idle,
            ..correio_proto::server::ServerConfig::default()
        }
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (a /32 or /128).
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not an address or ADDRESS/PREFIX (e.g. \"10.0.0.0/8\")"))
}

fn username_policy(a: &FileAuth) -> Result<UsernamePolicy, ConfigError> {
    let (lowercase, strip_domain) = match a.username_format.as_deref().unwrap_or("%u") {
        "%u" => (false, false),
        "%Lu" => (true, false),
        "%n" => (false, true),
        "%Ln" => (true, true),
        other => {
            return Err(err(
                "auth.username_format",
                format!("{other:?} is not one of \"%u\", \"%Lu\", \"%n\", \"%Ln\""),
            ));
        }
    };
    let default_domain = match &a.default_domain {
        None => None,
        Some(d) if d.is_empty() => None,
        Some(d) => {
            let d = d.strip_prefix('@').unwrap_or(d);
            if correio_auth::validate_username(&format!("u@{d}")).is_err() || d.contains('@') {
                return Err(err(
                    "auth.default_domain",
                    format!("{d:?} is not a domain name"),
                ));
            }
            Some(d.to_owned())
        }
    };
    Ok(UsernamePolicy {
        lowercase,
        strip_domain,
        default_domain,
    })
}

impl UsernamePolicy {
    /// The `auth.username_format` this policy was read from.
    pub fn format(&self) -> String {
        match (self.lowercase, self.strip_domain) {
            (false, false) => "%u",
            (true, false) => "%Lu",
            (false, true) => "%n",
            (true, true) => "%Ln",
        }
        .to_owned()
    }
}

/// Fuzz body (`fuzz/fuzz_targets/server_config.rs`): config text, then NUL-separated
/// `--set` items. Must never panic; an accepted config must keep the limits' promises.
#[doc(hidden)]
pub fn fuzz_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let toml_text = parts.next().unwrap_or("");
    let overrides = Overrides {
        data_dir: Some(PathBuf::from("/nonexistent-fuzz")),
        set: parts.map(str::to_owned).collect(),
        ..Overrides::default()
    };
    if let Ok(c) = Config::from_toml(toml_text, &overrides) {
        assert!(c.limits.post_login_idle >= Duration::from_secs(600));
        assert!((255..=8192).contains(&c.limits.max_command_line));
        assert!(c.limits.max_connections >= 1 && c.limits.max_connections_per_ip >= 1);
        assert!(c.mail_location.starts_with("maildir:") || c.mail_location.starts_with("mbox:"));
        assert!(c.throttle.failure_delay <= c.throttle.failure_delay_max);
        assert!(c.throttle.failure_delay_max <= Duration::from_secs(60));
        assert!(c.delivery.max_message_size >= 1);
        for s in &c.tls_sni {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(!s.name.is_empty());
        }
        for n in &c.trusted_networks {
            assert_eq!(*n, n.trunc());
        }
        let name = c.username.apply("Some.User");
        assert!(!c.username.lowercase || name == name.to_lowercase());
        let _ = c.session_config();
        let _ = c.settings();
    }
    let _ = LmtpAddr::parse(toml_text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_toml("", &Overrides::default()).unwrap();
        assert!(c.data_dir.ends_with(DEFAULT_DATA_DIR));
        assert_eq!(c.users_file, c.data_dir.join("users"));
        assert_eq!(
            c.mail_location,
            format!("maildir:{}/mail/%u", c.data_dir.display())
        );
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.post_login_idle, Duration::from_secs(600));
        assert!(!c.allow_cleartext_login);
    }

    #[test]
    fn full_file_and_overrides() {
        let text = r#"
data_dir = "/srv/mail"
mail_location = "mbox:/var/mail/%u"
hostname = "mx.example.org"
[listen]
pop3 = ["127.0.0.1:1110", "[::1]:1110"]
lmtp = "unix:/run/lmtp"
[pop3]
mechanisms = ["plain", "SCRAM-SHA-256"]
login_delay = "15m"
expire = 0
[limits]
max_connections = 5
post_login_idle = "30m"
"#;
        let o = Overrides {
            pop3s: vec!["127.0.0.1:1995".parse().unwrap()],
            ..Overrides::default()
        };
        let c = Config::from_toml(text, &o).unwrap();
        assert_eq!(c.pop3.len(), 2);
        assert_eq!(c.pop3s, vec!["127.0.0.1:1995".parse().unwrap()]);
        assert_eq!(c.lmtp, Some(LmtpAddr::Unix("/run/lmtp".into())));
        assert_eq!(c.mechanisms, vec!["PLAIN", "SCRAM-SHA-256"]);
        assert_eq!(c.login_delay, Duration::from_secs(900));
        assert_eq!(c.expire, Some(correio_proto::capa::ExpirePolicy::Days(0)));
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.tls_cert, PathBuf::from("/srv/mail/tls/cert.pem"));
        let s = c.session_config();
        assert_eq!(s.login_delay, Some(900));
    }

    #[test]
    fn set_flags_reach_every_key() {
        let o = Overrides {
            set: vec![
                "limits.max_connections=7".into(),
                "pop3.expire=never".into(),
                "listen.pop3=[\"127.0.0.1:2110\"]".into(),
                "hostname=mx.example.org".into(),
            ],
            ..Overrides::default()
        };
        let c = Config::from_toml("[limits]\nmax_connections = 3\n", &o).unwrap();
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.expire, Some(correio_proto::capa::ExpirePolicy::Never));
        assert_eq!(c.pop3, vec!["127.0.0.1:2110".parse().unwrap()]);
        assert_eq!(c.hostname, "mx.example.org");
        let bad = Overrides {
            set: vec!["limits.bogus=1".into()],
            ..Overrides::default()
        };
        let e = Config::from_toml("", &bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("--set"));
        assert!(e.reason.contains("bogus"), "{e}");
        let bad = Overrides {
            set: vec!["novalue".into()],
            ..Overrides::default()
        };
        assert!(Config::from_toml("", &bad).is_err());
    }

    #[test]
    fn errors_say_where_and_why() {
        let e = Config::from_toml(
            "[limits]\npost_login_idle = \"1m\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.post_login_idle"));
        assert!(e.reason.contains("10m"), "{e}");
        let e = Config::from_toml("\n\nbogus = 1\n", &Overrides::default()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("line 3"));
        assert!(e.reason.contains("bogus"), "{e}");
        let e = Config::from_toml("[listen]\npop3 = [\"localhost\"]\n", &Overrides::default())
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listen.pop3"));
        let e = Config::from_toml("[pop3]\nmechanisms = [\"GSSAPI\"]\n", &Overrides::default())
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pop3.mechanisms: unknown mechanism")
        );
        let e = Config::from_toml("[limits]\nmax_command_line = 100\n", &Overrides::default())
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.max_command_line"));
    }
}
