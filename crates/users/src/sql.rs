//! Users in an SQL table: PostgreSQL or MariaDB/MySQL through sqlx's pools.
//!
//! The queries are Dovecot's (`password_query`, `user_query`) with `%u`, `%n`, `%d`
//! bound as parameters ([`crate::template`]). A row's columns fill the record
//! ([`crate::apply_field`]): `password` (a hash with or without a `{SCHEME}` prefix —
//! Postfixadmin stores bare `$1$`, `$5$`, `$6$`, `$2y$` and `$argon2id$` strings),
//! `user`, `mail`, `home`, `quota_bytes`, `quota_messages`, `uid`, `gid`, `nologin`,
//! and anything else as an extra field. NULLs are ignored.
//!
//! Failures: the pool connects lazily; a database that is down, a query over
//! `query_timeout`, or any driver error is [`Temporary`] — the client is told to try
//! later, never that its password is wrong. A query returning two rows for one user is
//! refused as an error in the data (logged), not resolved by picking one.

use std::time::Duration;

use correio_auth::UserRecord;
use futures_util::StreamExt as _;
use sqlx::{Column as _, Row as _};

use crate::config::{SqlConfig, SqlDriver};
use crate::template::SqlTemplate;
use crate::{OpenError, Temporary};

#[derive(Debug)]
enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
}

/// An SQL user database.
#[derive(Debug)]
pub struct SqlDb {
    pool: Pool,
    password: SqlTemplate,
    user: SqlTemplate,
    /// Whether a separate user query completes the record after a login.
    separate_user_query: bool,
    query_timeout: Duration,
}

/// One value of a row, as text.
type Fields = Vec<(String, String)>;

macro_rules! column_text {
    ($row:expr, $i:expr) => {{
        let row = $row;
        let i = $i;
        if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            v
        } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map(|v| v.to_string())
        } else if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
            v.map(|v| v.to_string())
        } else if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
            v.map(|v| v.to_string())
        } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
            v.map(|v| if v { "yes".to_owned() } else { "no".to_owned() })
        } else if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
            v.and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        }
    }};
}

impl SqlDb {
    /// Builds the pool (no connection yet). Call inside the runtime that will drive it.
    pub fn open(c: &SqlConfig) -> Result<SqlDb, OpenError> {
        let config = |(k, r): (String, String)| OpenError::Config(format!("{k}: {r}"));
        let password = c.password_template().map_err(config)?;
        let user = c.user_template().map_err(config)?;
        let max = c.max_connections.unwrap_or(8);
        let bad_url = |e: sqlx::Error| {
            // The URL holds a password: name the key, not the value.
            OpenError::Config(format!("auth.sql.url: {}", strip_url(&e.to_string())))
        };
        let pool = match c.driver() {
            Some(SqlDriver::Postgres) => Pool::Pg(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(c.connect_timeout())
                    // One round trip per login, not two: a broken connection shows up
                    // as a failed query, which is retried once on a fresh connection.
                    .test_before_acquire(false)
                    .connect_lazy(&c.url)
                    .map_err(bad_url)?,
            ),
            Some(SqlDriver::MySql) => {
                let url = match c.url.split_once("://") {
                    Some((s, rest)) if s.eq_ignore_ascii_case("mariadb") => {
                        format!("mysql://{rest}")
                    }
                    _ => c.url.clone(),
                };
                Pool::My(
                    sqlx::mysql::MySqlPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(c.connect_timeout())
                        .test_before_acquire(false)
                        .connect_lazy(&url)
                        .map_err(bad_url)?,
                )
            }
            None => return Err(OpenError::Config("auth.sql.url: unknown driver".into())),
        };
        Ok(SqlDb {
            pool,
            password,
            user,
            separate_user_query: c.user_query.is_some(),
            query_timeout: c.query_timeout(),
        })
    }

    async fn run_once(&self, t: &SqlTemplate, name: &str) -> Result<Option<Fields>, String> {
        let values = t.values(name);
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(&t.sql);
                for v in &values {
                    q = q.bind(*v);
                }
                let mut rows = q.fetch($pool);
                let first = match rows.next().await {
                    None => return Ok(None),
                    Some(r) => r.map_err(|e| e.to_string())?,
                };
                if let Some(second) = rows.next().await {
                    second.map_err(|e| e.to_string())?;
                    return Err(format!(
                        "the query returned more than one row for {name:?}: \
                         refusing to pick one"
                    ));
                }
                let mut fields = Fields::new();
                for (i, col) in first.columns().iter().enumerate() {
                    if let Some(v) = column_text!(&first, i) {
                        fields.push((col.name().to_ascii_lowercase(), v));
                    }
                }
                Ok(Some(fields))
            }};
        }
        match &self.pool {
            Pool::Pg(p) => run!(p),
            Pool::My(p) => run!(p),
        }
    }

    async fn run(&self, t: &SqlTemplate, name: &str) -> Result<Option<Fields>, Temporary> {
        let mut last = String::new();
        for _attempt in 0..2 {
            match tokio::time::timeout(self.query_timeout, self.run_once(t, name)).await {
                Ok(Ok(f)) => return Ok(f),
                Ok(Err(e)) if e.contains("more than one row") => {
                    tracing::error!(target: "correio::auth", user = name, "SQL: {e}");
                    return Ok(None);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    return Err(Temporary(format!(
                        "SQL query took longer than {:?}",
                        self.query_timeout
                    )));
                }
            }
        }
        tracing::warn!(target: "correio::auth", error = %last, "SQL user database unavailable");
        Err(Temporary(format!("SQL: {last}")))
    }

    /// The row of the password query, as a record (password included).
    pub async fn password_record(&self, name: &str) -> Result<Option<UserRecord>, Temporary> {
        Ok(self
            .run(&self.password, name)
            .await?
            .map(|f| crate::record_from(name, f)))
    }

    /// Completes a verified record with the user query's fields (when there is a
    /// separate one).
    pub async fn complete(&self, mut record: UserRecord) -> Result<UserRecord, Temporary> {
        if !self.separate_user_query {
            return Ok(record);
        }
        if let Some(fields) = self.run(&self.user, &record.name.clone()).await? {
            for (k, v) in fields {
                if k != "password" && k != "user" && k != "username" {
                    crate::apply_field(&mut record, &k, &v);
                }
            }
        }
        Ok(record)
    }

    /// The user's record from the user query (no password), or none.
    pub async fn lookup(&self, name: &str) -> Result<Option<UserRecord>, Temporary> {
        Ok(self.run(&self.user, name).await?.map(|f| {
            let mut r = crate::record_from(name, f);
            r.password = None;
            r
        }))
    }
}

/// An error text without the URL's credentials.
fn strip_url(e: &str) -> String {
    match (e.find("://"), e.rfind('@')) {
        (Some(a), Some(b)) if a < b => format!("{}://…{}", &e[..a], &e[b..]),
        _ => e.to_owned(),
    }
}
