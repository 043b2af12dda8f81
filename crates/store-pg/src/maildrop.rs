//! One POP3 session's mailbox in PostgreSQL: the lease, the snapshot, body reads and
//! the UPDATE transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use correio_store::{
    CommitReport, Maildrop, MessageInfo, MessageReader, StoreError, Update, failpoint,
};
use tracing::{debug, warn};

use crate::body::{self, Bodies, DbBodyReader, ObjectBodyReader};
use crate::{Inner, unavailable, unix_secs};

struct Row {
    uid: i64,
    hash: Vec<u8>,
    size: u64,
}

pub(crate) struct PgMaildrop {
    inner: Arc<Inner>,
    mailbox: String,
    id: i64,
    owner: String,
    messages: Vec<MessageInfo>,
    rows: Vec<Row>,
    max_uid: i64,
    /// Set by the renewal task when the lease was found taken or gone.
    lost: Arc<AtomicBool>,
    renew: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl std::fmt::Debug for PgMaildrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMaildrop")
            .field("mailbox", &self.mailbox)
            .field("owner", &self.owner)
            .field("messages", &self.messages.len())
            .finish()
    }
}

impl PgMaildrop {
    /// Takes the lease (or [`StoreError::InUse`]), then the snapshot.
    pub(crate) fn open(
        inner: Arc<Inner>,
        mailbox: &str,
        id: i64,
        owner: String,
    ) -> Result<PgMaildrop, StoreError> {
        let lease = inner.config.lease.as_secs_f64();
        let taken: Option<(i64,)> = inner.run(async {
            sqlx::query_as(
                "INSERT INTO correio_lease (mailbox_id, owner, expires)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (mailbox_id) DO UPDATE
                   SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
                   WHERE correio_lease.expires < now()
                 RETURNING mailbox_id",
            )
            .bind(id)
            .bind(&owner)
            .bind(lease)
            .fetch_optional(&inner.pool)
            .await
        })?;
        if taken.is_none() {
            return Err(StoreError::InUse);
        }
        failpoint::hit("pg-open-after-lease");
        let mut md = PgMaildrop {
            inner: Arc::clone(&inner),
            mailbox: mailbox.to_string(),
            id,
            owner,
            messages: Vec::new(),
            rows: Vec::new(),
            max_uid: 0,
            lost: Arc::new(AtomicBool::new(false)),
            renew: None,
            released: false,
        };
        // From here on, dropping `md` releases the lease.
        let rows: Vec<(i64, String, i64, i64, Vec<u8>)> = inner.run(async {
            sqlx::query_as(
                "SELECT uid, uidl, wire_size, size, body_hash FROM correio_message
                 WHERE mailbox_id = $1 ORDER BY uid",
            )
            .bind(id)
            .fetch_all(&inner.pool)
            .await
        })?;
        md.messages.reserve(rows.len());
        md.rows.reserve(rows.len());
        for (uid, uidl, wire, size, hash) in rows {
            md.max_uid = md.max_uid.max(uid);
            md.messages.push(MessageInfo::new(wire as u64, uidl));
            md.rows.push(Row {
                uid,
                hash,
                size: size as u64,
            });
        }
        md.renew = Some(md.spawn_renewal());
        debug!(mailbox = %md.mailbox, owner = %md.owner, messages = md.messages.len(), "lease taken");
        Ok(md)
    }

    /// Renews the lease every third of its length while the session lives; a lease
    /// found gone or taken marks the session lost (its UPDATE then deletes nothing).
    fn spawn_renewal(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        let (id, owner, lost) = (self.id, self.owner.clone(), Arc::clone(&self.lost));
        let every = inner.config.lease / 3;
        inner.rt.spawn({
            let inner = Arc::clone(&inner);
            async move {
                let lease = inner.config.lease.as_secs_f64();
                loop {
                    tokio::time::sleep(every).await;
                    let r = sqlx::query(
                        "UPDATE correio_lease SET expires = now() + make_interval(secs => $3)
                         WHERE mailbox_id = $1 AND owner = $2",
                    )
                    .bind(id)
                    .bind(&owner)
                    .bind(lease)
                    .execute(&inner.pool)
                    .await;
                    match r {
                        Ok(done) if done.rows_affected() == 1 => {}
                        Ok(_) => {
                            warn!(owner = %owner, "the session's lease was taken over; its QUIT will delete nothing");
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        // The database may be back before the lease runs out.
                        Err(e) => warn!(owner = %owner, error = %e, "cannot renew the session's lease"),
                    }
                }
            }
        })
    }

    fn stop_renewal(&mut self) {
        if let Some(h) = self.renew.take() {
            h.abort();
        }
    }
}

impl Drop for PgMaildrop {
    fn drop(&mut self) {
        self.stop_renewal();
        if self.released {
            return;
        }
        // The session ended without UPDATE: give the mailbox back now (a lost
        // release is covered by the lease running out).
        let inner = Arc::clone(&self.inner);
        let (id, owner) = (self.id, std::mem::take(&mut self.owner));
        self.inner.rt.spawn(async move {
            let _ = sqlx::query("DELETE FROM correio_lease WHERE mailbox_id = $1 AND owner = $2")
                .bind(id)
                .bind(&owner)
                .execute(&inner.pool)
                .await;
        });
    }
}

impl Maildrop for PgMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let row = self.rows.get(index).ok_or(StoreError::NoSuchMessage(index))?;
        let inner = Arc::clone(&self.inner);
        // Which kind of body: a row in correio_body says.
        let in_db: Option<(bool,)> = inner.run(async {
            sqlx::query_as("SELECT in_db FROM correio_body WHERE hash = $1")
                .bind(&row.hash)
                .fetch_optional(&inner.pool)
                .await
        })?;
        match in_db {
            None => Err(StoreError::Vanished(index)),
            Some((true,)) => Ok(Box::new(DbBodyReader {
                inner,
                hash: row.hash.clone(),
                seq: 0,
                remaining: row.size,
                buf: Bytes::new(),
            })),
            Some((false,)) => {
                let Bodies::Object { store, prefix } = &inner.bodies else {
                    return Err(StoreError::Backend(format!(
                        "message {} of {} is in an object store, and none is configured",
                        index + 1,
                        self.mailbox
                    )));
                };
                let key = body::object_key(prefix, &row.hash);
                let got = inner
                    .run_io(store.get(&key))
                    .map_err(|e| unavailable("object store", e))?
                    .map_err(|e| unavailable(&format!("object {key}"), e))?;
                let stream = got.into_stream();
                Ok(Box::new(ObjectBodyReader {
                    inner: Arc::clone(&inner),
                    key,
                    stream: Some(stream),
                    remaining: row.size,
                    buf: Bytes::new(),
                }))
            }
        }
    }

    fn cheap_reads(&self) -> bool {
        false
    }

    fn update(mut self: Box<Self>, update: &Update) -> Result<CommitReport, StoreError> {
        self.stop_renewal();
        let dels = correio_store::maildrop::checked_deletions(&update.deletions, self.rows.len())?;
        let del_uids: Vec<i64> = dels.iter().map(|&i| self.rows[i].uid).collect();
        let mut retrieved: Vec<i64> = update
            .retrieved
            .iter()
            .filter_map(|&i| self.rows.get(i).map(|r| r.uid))
            .collect();
        retrieved.sort_unstable();
        retrieved.dedup();
        let now = unix_secs(update.now);
        let cutoff: Option<i64> = update
            .expire_after
            .map(|d| now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
        let inner = Arc::clone(&self.inner);
        let (id, owner, max_uid) = (self.id, self.owner.clone(), self.max_uid);
        let outcome: Option<Vec<i64>> = inner.run(async {
            let mut tx = inner.pool.begin().await?;
            let held: Option<(i64,)> = sqlx::query_as(
                "SELECT mailbox_id FROM correio_lease WHERE mailbox_id = $1 AND owner = $2 FOR UPDATE",
            )
            .bind(id)
            .bind(&owner)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                tx.rollback().await?;
                return Ok(None);
            }
            if !retrieved.is_empty() {
                sqlx::query(
                    "UPDATE correio_message SET first_retrieved = $3
                     WHERE mailbox_id = $1 AND uid = ANY($2) AND first_retrieved IS NULL",
                )
                .bind(id)
                .bind(&retrieved)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let removed: Vec<(i64,)> = sqlx::query_as(
                "DELETE FROM correio_message WHERE mailbox_id = $1
                 AND (uid = ANY($2) OR (uid <= $3 AND first_retrieved <= $4))
                 RETURNING uid",
            )
            .bind(id)
            .bind(&del_uids)
            .bind(max_uid)
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM correio_lease WHERE mailbox_id = $1 AND owner = $2")
                .bind(id)
                .bind(&owner)
                .execute(&mut *tx)
                .await?;
            failpoint::hit("pg-update-before-commit");
            tx.commit().await?;
            Ok(Some(removed.into_iter().map(|r| r.0).collect()))
        })?;
        let Some(removed) = outcome else {
            self.released = true;
            return Err(StoreError::Unavailable(format!(
                "the session's hold on mailbox {} ran out and was taken over; nothing was deleted",
                self.mailbox
            )));
        };
        failpoint::hit("pg-update-after-commit");
        self.released = true;
        let wanted: HashSet<i64> = del_uids.iter().copied().collect();
        let gone: HashSet<i64> = removed.iter().copied().collect();
        Ok(CommitReport::new(
            removed.len(),
            wanted.difference(&gone).count(),
            gone.difference(&wanted).count(),
        ))
    }
}
