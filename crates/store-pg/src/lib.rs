//! `correio-store-pg`: a mail store many POP3 frontends share, on PostgreSQL.
//!
//! Mailboxes and messages are rows ([`schema`]); bodies are kept in PostgreSQL or in
//! an S3-compatible object store (or a shared directory), keyed by content hash and
//! written before the row that points to them. It implements
//! [`correio_store::MailStore`]: `correio serve` registers it under the name of its
//! `[store.NAME]` table, and a mail location `NAME:%u` puts a user's mail in it. The
//! server and protocol crates do not know it exists.
//!
//! Guarantees (the store's invariants, across any number of frontends):
//! - **Delivery** writes the body (idempotent: its name is its hash), then one
//!   transaction allocates the UID, checks the quota and inserts the message row;
//!   `deliver` returns only after the commit (LMTP's 250 follows it). A crash before
//!   the commit leaves at most a body no row points to, which [`PgStore::collect_garbage`]
//!   removes later.
//! - **UIDLs** are never reused: UIDs come from the mailbox row's `next_uid`, which only
//!   grows; migrated messages keep their old UIDL ([`PgStore::import_message`]).
//! - **One session per mailbox** across frontends: a lease row (owner, expiry by the
//!   database's clock) taken at login, renewed while the session lives, released at
//!   QUIT or drop; a frontend that dies releases its users when the lease runs out
//!   (`lease`, default 30 s). No database connection is held between statements.
//! - **UPDATE** is one transaction that first checks the session still owns its
//!   lease: a session that lost it (its frontend stalled past the lease) deletes
//!   nothing.
//! - **Failures** of the database or the object store are [`StoreError::Unavailable`]
//!   (`-ERR [SYS/TEMP]`) and temporary delivery errors (LMTP 451, `deliver` exit 75):
//!   nothing is lost.
//!
//! Every method blocks (it drives the async client on a runtime handle): call it off
//! the async workers, as the server does for every store.
#![forbid(unsafe_code)]

mod body;
mod config;
mod maildrop;
pub mod schema;

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_store::{
    DeliverError, DeliverErrorKind, DeliverOptions, Delivered, MailStore, Maildrop, Normalizer,
    StoreError, failpoint,
};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{info, warn};

pub use config::{BodiesConfig, ConfigError, PgStoreConfig, S3Config};

use body::Bodies;

/// A PostgreSQL store (cheap to clone).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("name", &self.inner.name)
            .field("bodies", &self.inner.config.bodies)
            .finish()
    }
}

pub(crate) struct Inner {
    name: String,
    pub(crate) pool: PgPool,
    rt: tokio::runtime::Handle,
    pub(crate) bodies: Bodies,
    pub(crate) config: PgStoreConfig,
    owner_prefix: String,
    sessions: AtomicU64,
    schema_ready: AtomicBool,
    schema_lock: Mutex<()>,
}

/// Why the store could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The configuration is wrong.
    Config(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Config(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OpenError {}

/// What [`PgStore::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Bodies removed.
    pub bodies: u64,
    /// Their stored octets.
    pub octets: u64,
    /// Bodies skipped because a message row began to point to them meanwhile.
    pub kept: u64,
}

/// Counts of one mailbox (for `correio store stat` and the tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxStat {
    /// Messages.
    pub messages: u64,
    /// Their total wire size.
    pub wire_octets: u64,
}

fn unavailable(what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn temp_deliver(what: &str, e: impl fmt::Display) -> DeliverError {
    DeliverError::new(DeliverErrorKind::Io, false, format!("{what}: {e}"))
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Inner {
    /// Runs a database future on the store's runtime, bounded by `query_timeout`.
    pub(crate) fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let limit = self.config.query_timeout;
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, f).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&format!("store {}", self.name), e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "store {}: no answer within {}",
                self.name,
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Runs any future on the store's runtime, bounded by `query_timeout`.
    pub(crate) fn run_io<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, String> {
        let limit = self.config.query_timeout;
        self.rt
            .block_on(async { tokio::time::timeout(limit, f).await })
            .map_err(|_| format!("no answer within {}", humantime::format_duration(limit)))
    }

    /// Creates the tables once per process (and checks the version).
    fn ensure_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _g = self.schema_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let version: i32 = self.run(async {
            // Created already: read the version, take no lock.
            let exists: (Option<String>,) =
                sqlx::query_as("SELECT to_regclass('correio_schema')::text")
                    .fetch_one(&self.pool)
                    .await?;
            if exists.0.is_some()
                && let Some((v,)) =
                    sqlx::query_as::<_, (i32,)>("SELECT version FROM correio_schema")
                        .fetch_optional(&self.pool)
                        .await?
            {
                return Ok(v);
            }
            let mut tx = self.pool.begin().await?;
            // One creator at a time across frontends (CREATE IF NOT EXISTS races).
            sqlx::query("SELECT pg_advisory_xact_lock(7290011)")
                .execute(&mut *tx)
                .await?;
            let v: Option<(i32,)> = if sqlx::query_as::<_, (Option<String>,)>(
                "SELECT to_regclass('correio_schema')::text",
            )
            .fetch_one(&mut *tx)
            .await?
            .0
            .is_some()
            {
                sqlx::query_as("SELECT version FROM correio_schema")
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            let v = match v {
                Some((v,)) => v,
                None => {
                    for ddl in schema::DDL {
                        sqlx::query(ddl).execute(&mut *tx).await?;
                    }
                    sqlx::query("INSERT INTO correio_schema (version) VALUES ($1)")
                        .bind(schema::VERSION)
                        .execute(&mut *tx)
                        .await?;
                    schema::VERSION
                }
            };
            tx.commit().await?;
            Ok(v)
        })?;
        if version != schema::VERSION {
            return Err(StoreError::Backend(format!(
                "store {}: the database has schema version {version}, this correio knows {}",
                self.name,
                schema::VERSION
            )));
        }
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn next_owner(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.owner_prefix)
    }
}

impl PgStore {
    /// Opens the store `name` (its `[store.NAME]` table). Nothing is connected yet: a
    /// database that is down gives temporary failures until it is back. Runs on the
    /// runtime this is called from, or outside any runtime (a command-line tool) on a
    /// private one.
    pub fn open(name: &str, config: PgStoreConfig) -> Result<PgStore, OpenError> {
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => private_runtime().map_err(|e| OpenError::Config(e.to_string()))?,
        };
        let options: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e| OpenError::Config(format!("store {name}: url: {e}")))?;
        let options = options.application_name("correio");
        let pool = {
            let _guard = rt.enter();
            PgPoolOptions::new()
                .max_connections(config.max_connections)
                .min_connections(0)
                .acquire_timeout(config.connect_timeout)
                .idle_timeout(Some(Duration::from_secs(300)))
                .connect_lazy_with(options)
        };
        let bodies = match &config.bodies {
            BodiesConfig::Database => Bodies::Database,
            BodiesConfig::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    OpenError::Config(format!("store {name}: bodies {}: {e}", dir.display()))
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                        OpenError::Config(format!("store {name}: bodies {}: {e}", dir.display()))
                    })?;
                Bodies::Object {
                    store: Arc::new(fs),
                    prefix: String::new(),
                }
            }
            BodiesConfig::S3 { bucket, prefix } => {
                // Retries stay inside one statement's time: a store that is down
                // gives a temporary failure within query_timeout, not minutes later.
                let retry = object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: config.query_timeout,
                    ..object_store::RetryConfig::default()
                };
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_retry(retry)
                    .with_bucket_name(bucket)
                    .with_allow_http(config.s3.allow_http)
                    .with_virtual_hosted_style_request(config.s3.virtual_hosted);
                if let Some(e) = &config.s3.endpoint {
                    b = b.with_endpoint(e);
                }
                b = b.with_region(config.s3.region.as_deref().unwrap_or("us-east-1"));
                if let Some(k) = &config.s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &config.s3.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                let s3 = b
                    .build()
                    .map_err(|e| OpenError::Config(format!("store {name}: bodies: {e}")))?;
                Bodies::Object {
                    store: Arc::new(s3),
                    prefix: prefix.clone(),
                }
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let owner_prefix = format!(
            "{host}:{}:{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                name: name.to_string(),
                pool,
                rt,
                bodies,
                config,
                owner_prefix,
                sessions: AtomicU64::new(0),
                schema_ready: AtomicBool::new(false),
                schema_lock: Mutex::new(()),
            }),
        })
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The mailbox's id, creating its row if needed.
    fn mailbox_id(&self, mailbox: &str) -> Result<i64, StoreError> {
        let inner = &self.inner;
        inner.ensure_schema()?;
        inner.run(async {
            if let Some((id,)) =
                sqlx::query_as::<_, (i64,)>("SELECT id FROM correio_mailbox WHERE name = $1")
                    .bind(mailbox)
                    .fetch_optional(&inner.pool)
                    .await?
            {
                return Ok(id);
            }
            sqlx::query(
                "INSERT INTO correio_mailbox (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(mailbox)
            .execute(&inner.pool)
            .await?;
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM correio_mailbox WHERE name = $1")
                .bind(mailbox)
                .fetch_one(&inner.pool)
                .await?;
            Ok(id)
        })
    }

    /// Spools `reader` through the normalizer into an anonymous temporary file,
    /// hashing the stored bytes: (file, stored octets, wire octets, SHA-256).
    fn spool(
        reader: &mut dyn Read,
        opts: &DeliverOptions,
    ) -> Result<(std::fs::File, u64, u64, Vec<u8>), DeliverError> {
        let mut file = tempfile::tempfile()
            .map_err(|e| DeliverError::from_io("creating the spool file", e))?;
        let mut hasher = Sha256::new();
        let mut norm = Normalizer::new(opts.max_message_size, None, opts.quota_permanent);
        let mut sink = |b: &[u8]| -> Result<(), DeliverError> {
            hasher.update(b);
            file.write_all(b)
                .map_err(|e| DeliverError::from_io("writing the spool file", e))
        };
        correio_store::read_into(reader, |data| norm.feed(data, &mut sink))?;
        let n = norm.finish(&mut sink)?;
        Ok((file, n.stored, n.wire, hasher.finalize().to_vec()))
    }

    /// Puts the body (idempotent).
    fn put_body(
        &self,
        file: &mut std::fs::File,
        size: u64,
        hash: &[u8],
    ) -> Result<(), DeliverError> {
        let inner = &self.inner;
        let size_i = i64::try_from(size).unwrap_or(i64::MAX);
        let in_db = matches!(inner.bodies, Bodies::Database)
            || size <= inner.config.small_bodies_in_database;
        match &inner.bodies {
            Bodies::Object { store, prefix } if !in_db => {
                let key = body::object_key(prefix, hash);
                inner
                    .run(async {
                        sqlx::query(
                            "INSERT INTO correio_body (hash, size, in_db) VALUES ($1, $2, false)
                             ON CONFLICT (hash) DO UPDATE SET touched = now()",
                        )
                        .bind(hash)
                        .bind(size_i)
                        .execute(&inner.pool)
                        .await
                    })
                    .map_err(|e| temp_deliver("recording the body", e))?;
                let limit = inner.config.query_timeout;
                let res = inner.rt.block_on(async {
                    // An upload may take long for a big message; bound it by size.
                    let allowed = limit + Duration::from_secs(size / (1024 * 1024));
                    tokio::time::timeout(allowed, body::put_object(store, &key, file, size)).await
                });
                match res {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(temp_deliver("storing the body in the object store", e)),
                    Err(_) => Err(temp_deliver(
                        "storing the body in the object store",
                        "timed out",
                    )),
                }
            }
            _ => {
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| DeliverError::from_io("rewinding the spool file", e))?;
                let limit = inner.config.query_timeout;
                let res = inner.rt.block_on(async {
                    tokio::time::timeout(limit * 4, async {
                        let mut tx = inner.pool.begin().await?;
                        // Touch or create; a new row gets its chunks in the same
                        // transaction, so a body row is never seen without them.
                        let (fresh,): (bool,) = sqlx::query_as(
                            "INSERT INTO correio_body (hash, size, in_db) VALUES ($1, $2, true)
                             ON CONFLICT (hash) DO UPDATE SET touched = now()
                             RETURNING (xmax = 0)",
                        )
                        .bind(hash)
                        .bind(size_i)
                        .fetch_one(&mut *tx)
                        .await?;
                        if fresh {
                            let mut seq = 0i32;
                            let mut buf = vec![0u8; body::CHUNK];
                            loop {
                                let n = read_full(file, &mut buf).map_err(sqlx::Error::Io)?;
                                if n == 0 {
                                    break;
                                }
                                sqlx::query(
                                    "INSERT INTO correio_body_chunk (hash, seq, data) VALUES ($1, $2, $3)",
                                )
                                .bind(hash)
                                .bind(seq)
                                .bind(&buf[..n])
                                .execute(&mut *tx)
                                .await?;
                                seq += 1;
                            }
                        }
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(())
                    })
                    .await
                });
                match res {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(temp_deliver("storing the body", e)),
                    Err(_) => Err(temp_deliver("storing the body", "timed out")),
                }
            }
        }
    }

    /// The message transaction: UID, quota, row. Returns the UIDL.
    #[allow(clippy::too_many_arguments)]
    fn insert_message(
        &self,
        mailbox: &str,
        hash: &[u8],
        stored: u64,
        wire: u64,
        opts: &DeliverOptions,
        uidl: Option<&str>,
        first_retrieved: Option<i64>,
    ) -> Result<Option<String>, DeliverError> {
        let inner = &self.inner;
        let id = self.mailbox_id(mailbox).map_err(DeliverError::from)?;
        let now = unix_secs(SystemTime::now());
        let (qb, qm) = (opts.quota_bytes, opts.quota_messages);
        let outcome = inner
            .run(async {
                let mut tx: Transaction<'_, Postgres> = inner.pool.begin().await?;
                // The row lock serializes deliveries to one mailbox, so UIDs commit
                // in order and a snapshot never misses a smaller one.
                let (uid,): (i64,) = sqlx::query_as(
                    "UPDATE correio_mailbox SET next_uid = next_uid + 1 WHERE id = $1 RETURNING next_uid - 1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if let Some(u) = uidl {
                    let exists: Option<(i64,)> = sqlx::query_as(
                        "SELECT uid FROM correio_message WHERE mailbox_id = $1 AND uidl = $2",
                    )
                    .bind(id)
                    .bind(u)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if exists.is_some() {
                        tx.rollback().await?;
                        return Ok(Err(None));
                    }
                }
                if qb.is_some_and(|q| q > 0) || qm.is_some_and(|q| q > 0) {
                    let (n, bytes): (i64, i64) = sqlx::query_as(
                        "SELECT count(*), coalesce(sum(size), 0)::bigint FROM correio_message WHERE mailbox_id = $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let over_bytes = qb
                        .filter(|q| *q > 0)
                        .is_some_and(|q| (bytes as u64).saturating_add(stored) > q);
                    let over_msgs = qm
                        .filter(|q| *q > 0)
                        .is_some_and(|q| (n as u64).saturating_add(1) > q);
                    if over_bytes || over_msgs {
                        tx.rollback().await?;
                        return Ok(Err(Some(())));
                    }
                }
                let uidl = match uidl {
                    Some(u) => u.to_string(),
                    None => format!("{id:x}.{uid:x}.pg"),
                };
                sqlx::query(
                    "INSERT INTO correio_message (mailbox_id, uid, uidl, size, wire_size, body_hash, delivered, first_retrieved)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(id)
                .bind(uid)
                .bind(&uidl)
                .bind(i64::try_from(stored).unwrap_or(i64::MAX))
                .bind(i64::try_from(wire).unwrap_or(i64::MAX))
                .bind(hash)
                .bind(now)
                .bind(first_retrieved)
                .execute(&mut *tx)
                .await?;
                failpoint::hit("pg-deliver-before-commit");
                tx.commit().await?;
                Ok(Ok(uidl))
            })
            .map_err(|e| temp_deliver("storing the message", e))?;
        match outcome {
            Ok(uidl) => {
                failpoint::hit("pg-deliver-after-commit");
                Ok(Some(uidl))
            }
            Err(None) => Ok(None),
            Err(Some(())) => Err(DeliverError::new(
                DeliverErrorKind::QuotaExceeded,
                opts.quota_permanent,
                "mailbox is over quota",
            )),
        }
    }

    fn store_message(
        &self,
        mailbox: &str,
        reader: &mut dyn Read,
        opts: &DeliverOptions,
        uidl: Option<&str>,
        first_retrieved: Option<i64>,
    ) -> Result<Option<Delivered>, DeliverError> {
        self.inner.ensure_schema().map_err(DeliverError::from)?;
        let (mut file, stored, wire, hash) = Self::spool(reader, opts)?;
        self.put_body(&mut file, stored, &hash)?;
        failpoint::hit("pg-deliver-after-body");
        let Some(uidl) =
            self.insert_message(mailbox, &hash, stored, wire, opts, uidl, first_retrieved)?
        else {
            return Ok(None);
        };
        Ok(Some(Delivered::new(
            format!("{}:{mailbox}/{uidl}", self.inner.name).into(),
            stored,
            wire,
        )))
    }

    /// Stores one message of a migrated mailbox under its old UIDL, so no client
    /// downloads it again; `first_retrieved` (Unix seconds) carries EXPIRE's clock
    /// over. A message whose UIDL the mailbox already has is skipped (`Ok(false)`),
    /// so an interrupted migration can simply be run again.
    pub fn import_message(
        &self,
        mailbox: &str,
        uidl: &str,
        first_retrieved: Option<u64>,
        reader: &mut dyn Read,
    ) -> Result<bool, DeliverError> {
        let opts = DeliverOptions::default();
        let fr = first_retrieved.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        Ok(self
            .store_message(mailbox, reader, &opts, Some(uidl), fr)?
            .is_some())
    }

    /// The UIDLs a mailbox holds (for a migration's resume and its check).
    pub fn uidls(&self, mailbox: &str) -> Result<Vec<String>, StoreError> {
        let id = self.mailbox_id(mailbox)?;
        let inner = &self.inner;
        let rows: Vec<(String,)> = inner.run(async {
            sqlx::query_as("SELECT uidl FROM correio_message WHERE mailbox_id = $1 ORDER BY uid")
                .bind(id)
                .fetch_all(&inner.pool)
                .await
        })?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Messages and wire octets of a mailbox.
    pub fn stat(&self, mailbox: &str) -> Result<MailboxStat, StoreError> {
        let id = self.mailbox_id(mailbox)?;
        let inner = &self.inner;
        let (n, w): (i64, i64) = inner.run(async {
            sqlx::query_as(
                "SELECT count(*), coalesce(sum(wire_size), 0)::bigint FROM correio_message WHERE mailbox_id = $1",
            )
            .bind(id)
            .fetch_one(&inner.pool)
            .await
        })?;
        Ok(MailboxStat {
            messages: n as u64,
            wire_octets: w as u64,
        })
    }

    /// Who holds a mailbox now, if anyone (owner, seconds left).
    pub fn lease_holder(&self, mailbox: &str) -> Result<Option<(String, f64)>, StoreError> {
        let id = self.mailbox_id(mailbox)?;
        let inner = &self.inner;
        inner.run(async {
            sqlx::query_as(
                "SELECT owner, extract(epoch FROM expires - now())::float8 FROM correio_lease
                 WHERE mailbox_id = $1 AND expires > now()",
            )
            .bind(id)
            .fetch_optional(&inner.pool)
            .await
        })
    }

    /// Removes bodies no message points to that have been untouched for `grace` (the
    /// configured `gc_grace` when `None`). Each body goes in its own transaction that
    /// deletes its row, then its object, then commits: a delivery about to reuse it
    /// waits on the row and writes it again; a message row pointing to it makes the
    /// delete fail, and the body is kept.
    pub fn collect_garbage(&self, grace: Option<Duration>) -> Result<GcReport, StoreError> {
        let inner = &self.inner;
        inner.ensure_schema()?;
        let grace = grace.unwrap_or(inner.config.gc_grace);
        let mut report = GcReport::default();
        let candidates: Vec<(Vec<u8>,)> = inner.run(async {
            sqlx::query_as(
                "SELECT b.hash FROM correio_body b
                 WHERE b.touched < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM correio_message m WHERE m.body_hash = b.hash)
                 LIMIT 100000",
            )
            .bind(grace.as_secs_f64())
            .fetch_all(&inner.pool)
            .await
        })?;
        for (hash,) in candidates {
            let res = inner.run(async {
                let mut tx = inner.pool.begin().await?;
                let row: Option<(i64, bool)> = sqlx::query_as(
                    "DELETE FROM correio_body b WHERE b.hash = $1
                     AND b.touched < now() - make_interval(secs => $2)
                     AND NOT EXISTS (SELECT 1 FROM correio_message m WHERE m.body_hash = b.hash)
                     RETURNING size, in_db",
                )
                .bind(&hash)
                .bind(grace.as_secs_f64())
                .fetch_optional(&mut *tx)
                .await?;
                Ok((tx, row))
            });
            let (tx, row) = match res {
                Ok(v) => v,
                Err(e) => {
                    // A foreign-key failure: a message began to use it.
                    warn!(store = %inner.name, body = %hex::encode(&hash), error = %e, "body kept");
                    report.kept += 1;
                    continue;
                }
            };
            let Some((size, in_db)) = row else {
                let _ = inner.run(tx.rollback());
                report.kept += 1;
                continue;
            };
            if !in_db && let Bodies::Object { store, prefix } = &inner.bodies {
                let key = body::object_key(prefix, &hash);
                match inner.run_io(store.delete(&key)) {
                    Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => {}
                    Ok(Err(e)) => {
                        let _ = inner.run(tx.rollback());
                        return Err(unavailable("object store", e));
                    }
                    Err(e) => {
                        let _ = inner.run(tx.rollback());
                        return Err(unavailable("object store", e));
                    }
                }
            }
            failpoint::hit("pg-gc-before-commit");
            match inner.run(tx.commit()) {
                Ok(()) => {
                    report.bodies += 1;
                    report.octets += size as u64;
                }
                Err(_) => report.kept += 1,
            }
        }
        if report.bodies > 0 {
            info!(store = %inner.name, bodies = report.bodies, octets = report.octets, "collected unused bodies");
        }
        Ok(report)
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl MailStore for PgStore {
    fn open(&self, mailbox: &str) -> Result<Box<dyn Maildrop>, StoreError> {
        let owner = self.inner.next_owner();
        Ok(Box::new(maildrop::PgMaildrop::open(
            Arc::clone(&self.inner),
            mailbox,
            owner,
        )?))
    }

    fn deliver(
        &self,
        mailbox: &str,
        reader: &mut dyn Read,
        opts: &DeliverOptions,
    ) -> Result<Delivered, DeliverError> {
        match self.store_message(mailbox, reader, opts, None, None)? {
            Some(d) => Ok(d),
            None => Err(temp_deliver("storing the message", "UIDL clash")),
        }
    }

    fn last_login(&self, mailbox: &str) -> Result<Option<SystemTime>, StoreError> {
        let inner = &self.inner;
        inner.ensure_schema()?;
        let row: Option<(Option<i64>,)> = inner.run(async {
            sqlx::query_as("SELECT last_login FROM correio_mailbox WHERE name = $1")
                .bind(mailbox)
                .fetch_optional(&inner.pool)
                .await
        })?;
        Ok(row
            .and_then(|r| r.0)
            .and_then(|ms| u64::try_from(ms).ok())
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))))
    }

    fn record_login(&self, mailbox: &str, now: SystemTime) -> Result<(), StoreError> {
        let inner = &self.inner;
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        inner.ensure_schema()?;
        inner.run(async {
            // The session that logs in has opened the mailbox, so its row exists.
            sqlx::query("UPDATE correio_mailbox SET last_login = $2 WHERE name = $1")
                .bind(mailbox)
                .bind(ms)
                .execute(&inner.pool)
                .await
        })?;
        Ok(())
    }

    fn check(&self) -> Result<(), StoreError> {
        self.inner.ensure_schema()?;
        if let Bodies::Object { store, prefix } = &self.inner.bodies {
            let probe = object_store::path::Path::from(if prefix.is_empty() {
                "correio-check".to_string()
            } else {
                format!("{prefix}/correio-check")
            });
            match self
                .inner
                .run_io(store.put(&probe, object_store::PutPayload::from_static(b"ok")))
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(unavailable("object store", e)),
                Err(e) => return Err(unavailable("object store", e)),
            }
        }
        Ok(())
    }
}

/// A small runtime for a command-line tool (`correio deliver`).
fn private_runtime() -> io::Result<tokio::runtime::Handle> {
    use std::sync::OnceLock;
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("correio-store-pg")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt).handle().clone())
}
