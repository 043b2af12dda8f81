//! `[store.NAME]` with `kind = "postgresql"`: the keys, their defaults and checks.

use std::path::PathBuf;
use std::time::Duration;

/// Where message bodies are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodiesConfig {
    /// In PostgreSQL, in 256 KiB chunks (`bodies = "database"`, the default).
    Database,
    /// In an S3-compatible object store (`bodies = "s3://BUCKET[/PREFIX]"`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty).
        prefix: String,
    },
    /// In a directory shared by every frontend (`bodies = "file:///PATH"`, an NFS or
    /// CephFS mount; one machine's disk only when there is one frontend).
    Directory(PathBuf),
}

/// The S3 connection (`s3_*` keys; each falls back to the usual `AWS_*` variable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `s3_endpoint`: the server's URL (empty: AWS itself).
    pub endpoint: Option<String>,
    /// `s3_region` (default `us-east-1`).
    pub region: Option<String>,
    /// `s3_access_key_id`.
    pub access_key_id: Option<String>,
    /// `s3_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `s3_allow_http`: allow an `http://` endpoint (a server on loopback).
    pub allow_http: bool,
    /// `s3_virtual_hosted`: bucket in the host name rather than the path.
    pub virtual_hosted: bool,
}

/// The settings of one PostgreSQL store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgStoreConfig {
    /// `url`: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]` or a Unix socket
    /// (`postgres:///DB?host=/run/postgresql`).
    pub url: String,
    /// `bodies`.
    pub bodies: BodiesConfig,
    /// The `s3_*` keys.
    pub s3: S3Config,
    /// `lease` (default 30s): how long a session's hold on a mailbox lasts without
    /// renewal; a frontend that dies releases its users within this time.
    pub lease: Duration,
    /// `max_connections` (default 16) per process.
    pub max_connections: u32,
    /// `connect_timeout` (default 5s).
    pub connect_timeout: Duration,
    /// `query_timeout` (default 30s): one statement, or one chunk of a body.
    pub query_timeout: Duration,
    /// `gc_grace` (default 1h): a body no message points to is collected once it has
    /// been untouched this long (a delivery in progress touches it).
    pub gc_grace: Duration,
    /// `small_bodies_in_database` (octets, default 0): with object-store bodies, bodies
    /// up to this size stay in PostgreSQL (one query reads many of them; an object is
    /// one HTTP request each).
    pub small_bodies_in_database: u64,
}

/// A key of `[store.NAME]` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

const KEYS: &[&str] = &[
    "kind",
    "url",
    "bodies",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_allow_http",
    "s3_virtual_hosted",
    "lease",
    "max_connections",
    "connect_timeout",
    "query_timeout",
    "gc_grace",
    "small_bodies_in_database",
];

impl PgStoreConfig {
    /// A configuration with the defaults and this URL.
    pub fn new(url: impl Into<String>) -> Self {
        PgStoreConfig {
            url: url.into(),
            bodies: BodiesConfig::Database,
            s3: S3Config::default(),
            lease: Duration::from_secs(30),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
            gc_grace: Duration::from_secs(3600),
            small_bodies_in_database: 0,
        }
    }

    /// Reads the table `[store.NAME]` (its `kind` must be `postgresql`).
    pub fn from_table(table: &toml::Table) -> Result<Self, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError {
            key: key.to_string(),
            reason,
        };
        for k in table.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(bad(k, "unknown key".into()));
            }
        }
        let string = |key: &str| -> Result<Option<String>, ConfigError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(key, "must be a string".into())),
            }
        };
        let boolean = |key: &str| -> Result<bool, ConfigError> {
            match table.get(key) {
                None => Ok(false),
                Some(toml::Value::Boolean(b)) => Ok(*b),
                Some(_) => Err(bad(key, "must be true or false".into())),
            }
        };
        let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            let d = match table.get(key) {
                None => return Ok(default),
                Some(toml::Value::String(s)) => humantime::parse_duration(s)
                    .map_err(|e| bad(key, format!("{s:?} is not a duration: {e}")))?,
                Some(toml::Value::Integer(n)) if *n > 0 => Duration::from_secs(*n as u64),
                Some(_) => return Err(bad(key, "must be a duration such as \"30s\"".into())),
            };
            if d.is_zero() {
                return Err(bad(key, "must be more than 0s".into()));
            }
            Ok(d)
        };
        match string("kind")?.as_deref() {
            Some("postgresql" | "postgres" | "pgsql") => {}
            Some(other) => return Err(bad("kind", format!("{other:?} is not postgresql"))),
            None => return Err(bad("kind", "missing (kind = \"postgresql\")".into())),
        }
        let url = string("url")?.ok_or_else(|| bad("url", "missing".into()))?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "url",
                "must start with postgres:// or postgresql://".into(),
            ));
        }
        let mut c = PgStoreConfig::new(url);
        c.bodies = match string("bodies")?.as_deref() {
            None | Some("database") => BodiesConfig::Database,
            Some(s) if s.starts_with("s3://") => {
                let rest = &s["s3://".len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("bodies", format!("{s:?} names no bucket")));
                }
                BodiesConfig::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                }
            }
            Some(s) if s.starts_with("file://") => {
                let p = PathBuf::from(&s["file://".len()..]);
                if !p.is_absolute() {
                    return Err(bad("bodies", format!("{s:?} is not file:///ABSOLUTE/PATH")));
                }
                BodiesConfig::Directory(p)
            }
            Some(s) => {
                return Err(bad(
                    "bodies",
                    format!(
                        "{s:?}: expected \"database\", \"s3://BUCKET/PREFIX\" or \"file:///PATH\""
                    ),
                ));
            }
        };
        c.s3 = S3Config {
            endpoint: string("s3_endpoint")?,
            region: string("s3_region")?,
            access_key_id: string("s3_access_key_id")?,
            secret_access_key: string("s3_secret_access_key")?,
            allow_http: boolean("s3_allow_http")?,
            virtual_hosted: boolean("s3_virtual_hosted")?,
        };
        c.lease = duration("lease", c.lease)?;
        if c.lease < Duration::from_secs(3) {
            return Err(bad("lease", "must be at least 3s".into()));
        }
        c.connect_timeout = duration("connect_timeout", c.connect_timeout)?;
        c.query_timeout = duration("query_timeout", c.query_timeout)?;
        c.gc_grace = duration("gc_grace", c.gc_grace)?;
        c.small_bodies_in_database = match table.get("small_bodies_in_database") {
            None => 0,
            Some(toml::Value::Integer(n)) if (0..=256 * 1024).contains(n) => *n as u64,
            Some(_) => {
                return Err(bad(
                    "small_bodies_in_database",
                    "must be a number of octets from 0 to 262144".into(),
                ));
            }
        };
        c.max_connections = match table.get("max_connections") {
            None => c.max_connections,
            Some(toml::Value::Integer(n)) if (1..=10_000).contains(n) => *n as u32,
            Some(_) => return Err(bad("max_connections", "must be 1 to 10000".into())),
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PgStoreConfig, ConfigError> {
        PgStoreConfig::from_table(&toml::from_str(s).unwrap())
    }

    #[test]
    fn reads_every_key_and_refuses_bad_ones() {
        let c = parse(
            r#"kind = "postgresql"
url = "postgres://mail@127.0.0.1:5432/mail"
bodies = "s3://mail-bodies/prod/"
s3_endpoint = "http://127.0.0.1:9000"
s3_allow_http = true
lease = "10s"
max_connections = 4
gc_grace = "2h""#,
        )
        .unwrap();
        assert_eq!(
            c.bodies,
            BodiesConfig::S3 {
                bucket: "mail-bodies".into(),
                prefix: "prod".into()
            }
        );
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.max_connections, 4);
        assert!(c.s3.allow_http);
        assert_eq!(c.gc_grace, Duration::from_secs(7200));
        assert_eq!(
            parse("kind = \"postgresql\"\nurl = \"mysql://x\"")
                .unwrap_err()
                .key,
            "url"
        );
        assert_eq!(parse("url = \"postgres://x\"").unwrap_err().key, "kind");
        assert_eq!(
            parse("kind = \"postgresql\"\nurl = \"postgres://x\"\nlease = \"1s\"")
                .unwrap_err()
                .key,
            "lease"
        );
        assert_eq!(
            parse("kind = \"postgresql\"\nurl = \"postgres://x\"\nbodeis = \"database\"")
                .unwrap_err()
                .key,
            "bodeis"
        );
        assert_eq!(
            parse("kind = \"postgresql\"\nurl = \"postgres://x\"\nbodies = \"file://rel\"")
                .unwrap_err()
                .key,
            "bodies"
        );
    }
}
