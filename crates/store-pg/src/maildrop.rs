//! One POP3 session's mailbox in PostgreSQL: the lease, the snapshot, body reads and
//! the UPDATE transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use correio_store::{
    CommitReport, Maildrop, MessageInfo, MessageReader, StoreError, Update, failpoint,
};
use object_store::ObjectStoreExt;
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
    /// Bodies read ahead (whole, one chunk each), by snapshot index: clients retrieve
    /// in order, so one query fetches the next few small messages.
    ahead: Mutex<HashMap<usize, Bytes>>,
}

/// Read-ahead bounds: messages per query, and octets held at once.
const AHEAD_MESSAGES: usize = 128;
const AHEAD_OCTETS: u64 = 512 * 1024;
/// Object-store requests in flight for one session's read-ahead.
const AHEAD_OBJECTS: usize = 16;

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
    /// Takes the lease (or [`StoreError::InUse`]) and the snapshot in one round trip;
    /// a mailbox without a row yet gets one first.
    pub(crate) fn open(
        inner: Arc<Inner>,
        mailbox: &str,
        owner: String,
    ) -> Result<PgMaildrop, StoreError> {
        inner.ensure_schema()?;
        let lease = inner.config.lease.as_secs_f64();
        type Snap = (
            i64,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
        );
        let take = || -> Result<Vec<Snap>, StoreError> {
            inner.run(async {
                sqlx::query_as(
                    "WITH l AS (
                       INSERT INTO correio_lease (mailbox_id, owner, expires)
                       SELECT id, $2, now() + make_interval(secs => $3)
                         FROM correio_mailbox WHERE name = $1
                       ON CONFLICT (mailbox_id) DO UPDATE
                         SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
                         WHERE correio_lease.expires < now()
                       RETURNING mailbox_id)
                     SELECT l.mailbox_id, m.uid, m.uidl, m.wire_size, m.size, m.body_hash
                     FROM l LEFT JOIN correio_message m ON m.mailbox_id = l.mailbox_id
                     ORDER BY m.uid",
                )
                .bind(mailbox)
                .bind(&owner)
                .bind(lease)
                .fetch_all(&inner.pool)
                .await
            })
        };
        let mut rows = take()?;
        if rows.is_empty() {
            // Held by another session, or no row for this mailbox yet.
            let exists: Option<(i64,)> = inner.run(async {
                sqlx::query_as("SELECT id FROM correio_mailbox WHERE name = $1")
                    .bind(mailbox)
                    .fetch_optional(&inner.pool)
                    .await
            })?;
            if exists.is_some() {
                return Err(StoreError::InUse);
            }
            inner.run(async {
                sqlx::query(
                    "INSERT INTO correio_mailbox (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                )
                .bind(mailbox)
                .execute(&inner.pool)
                .await
            })?;
            rows = take()?;
            if rows.is_empty() {
                return Err(StoreError::InUse);
            }
        }
        let id = rows[0].0;
        failpoint::hit("pg-open-after-lease");
        let mut md = PgMaildrop {
            inner: Arc::clone(&inner),
            mailbox: mailbox.to_string(),
            id,
            owner,
            messages: Vec::with_capacity(rows.len()),
            rows: Vec::with_capacity(rows.len()),
            max_uid: 0,
            lost: Arc::new(AtomicBool::new(false)),
            renew: None,
            released: false,
            ahead: Mutex::new(HashMap::new()),
        };
        // From here on, dropping `md` releases the lease.
        for (_, uid, uidl, wire, size, hash) in rows {
            let (Some(uid), Some(uidl), Some(wire), Some(size), Some(hash)) =
                (uid, uidl, wire, size, hash)
            else {
                continue; // the empty mailbox's one row
            };
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

impl PgMaildrop {
    /// Fetches message `index` and the small messages after it (up to
    /// [`AHEAD_MESSAGES`] and [`AHEAD_OCTETS`]) in one query; `index`'s reader, or
    /// `None` when the database has no chunk of it.
    fn read_ahead(&self, index: usize) -> Result<Option<MessageReader>, StoreError> {
        let mut want: Vec<(usize, &Row)> = Vec::new();
        let mut octets = 0u64;
        for (i, r) in self.rows.iter().enumerate().skip(index) {
            if want.len() == AHEAD_MESSAGES
                || r.size as usize > body::CHUNK
                || (octets + r.size > AHEAD_OCTETS && !want.is_empty())
            {
                break;
            }
            octets += r.size;
            want.push((i, r));
        }
        let hashes: Vec<Vec<u8>> = want.iter().map(|(_, r)| r.hash.clone()).collect();
        let inner = &self.inner;
        let got: Vec<(Vec<u8>, Vec<u8>)> = inner.run(async {
            sqlx::query_as(
                "SELECT hash, data FROM correio_body_chunk WHERE hash = ANY($1) AND seq = 0",
            )
            .bind(&hashes)
            .fetch_all(&inner.pool)
            .await
        })?;
        let by_hash: HashMap<Vec<u8>, Bytes> =
            got.into_iter().map(|(h, d)| (h, Bytes::from(d))).collect();
        let mut mine = None;
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead.clear();
        for (i, r) in want {
            // Whole bodies only: a row whose chunk is not the whole body is read the
            // ordinary way.
            let Some(b) = by_hash.get(&r.hash).filter(|b| b.len() as u64 == r.size) else {
                continue;
            };
            if i == index {
                mine = Some(b.clone());
            } else {
                ahead.insert(i, b.clone());
            }
        }
        Ok(mine.map(|b| Box::new(bytes::Buf::reader(b)) as MessageReader))
    }

    /// The object-store form of [`PgMaildrop::read_ahead`]: message `index` and the
    /// small messages after it (up to [`AHEAD_OBJECTS`] and [`AHEAD_OCTETS`]) fetched
    /// at once, [`AHEAD_OBJECTS`] requests in flight, so a session waits for one round
    /// trip per batch instead of one per message. `None` when `index` is not there.
    fn read_ahead_objects(&self, index: usize) -> Result<Option<MessageReader>, StoreError> {
        let Bodies::Object { store, prefix } = &self.inner.bodies else {
            return Ok(None);
        };
        let mut want: Vec<(usize, u64, object_store::path::Path)> = Vec::new();
        let mut octets = 0u64;
        for (i, r) in self.rows.iter().enumerate().skip(index) {
            if want.len() == AHEAD_OBJECTS
                || r.size as usize > body::CHUNK
                || (octets + r.size > AHEAD_OCTETS && !want.is_empty())
            {
                break;
            }
            octets += r.size;
            want.push((i, r.size, body::object_key(prefix, &r.hash)));
        }
        let gets = want.iter().map(|(_, _, key)| async move {
            match store.get(key).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let got = self
            .inner
            .run_io(futures_util::future::join_all(gets))
            .map_err(|e| unavailable("object store", e))?;
        let mut mine = None;
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead.clear();
        for ((i, size, key), r) in want.into_iter().zip(got) {
            let b = match r {
                Ok(Some(b)) if b.len() as u64 == size => b,
                // Missing or the wrong size: read the ordinary way (which says why).
                Ok(_) => continue,
                Err(e) if i == index => return Err(unavailable(&format!("object {key}"), e)),
                Err(_) => continue,
            };
            if i == index {
                mine = Some(b);
            } else {
                ahead.insert(i, b);
            }
        }
        Ok(mine.map(|b| Box::new(bytes::Buf::reader(b)) as MessageReader))
    }

    /// A reader of a body kept in the database, its first chunk already fetched;
    /// `None` when the database has no chunk of it.
    fn db_reader(&self, row: &Row) -> Result<Option<MessageReader>, StoreError> {
        if row.size == 0 {
            return Ok(Some(Box::new(std::io::empty())));
        }
        let inner = &self.inner;
        let first: Option<(Vec<u8>,)> = inner.run(async {
            sqlx::query_as("SELECT data FROM correio_body_chunk WHERE hash = $1 AND seq = 0")
                .bind(&row.hash)
                .fetch_optional(&inner.pool)
                .await
        })?;
        let Some((data,)) = first else {
            return Ok(None);
        };
        if data.is_empty() || data.len() as u64 > row.size {
            return Err(StoreError::Backend(format!(
                "body {} chunk 0 has the wrong size",
                hex::encode(&row.hash)
            )));
        }
        Ok(Some(Box::new(DbBodyReader {
            inner: Arc::clone(inner),
            hash: row.hash.clone(),
            seq: 1,
            remaining: row.size,
            buf: Bytes::from(data),
        })))
    }

    /// A reader of a body kept in the object store; `None` when it is not there.
    fn object_reader(&self, row: &Row) -> Result<Option<MessageReader>, StoreError> {
        let Bodies::Object { store, prefix } = &self.inner.bodies else {
            return Ok(None);
        };
        let key = body::object_key(prefix, &row.hash);
        let got = match self
            .inner
            .run_io(store.get(&key))
            .map_err(|e| unavailable("object store", e))?
        {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unavailable(&format!("object {key}"), e)),
        };
        Ok(Some(Box::new(ObjectBodyReader {
            inner: Arc::clone(&self.inner),
            key,
            stream: Some(got.into_stream()),
            remaining: row.size,
            buf: Bytes::new(),
        })))
    }
}

impl Maildrop for PgMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let row = self
            .rows
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?;
        // One round trip for a message of one chunk (up to 256 KiB) kept in the
        // database: its first chunk is fetched here, in the place the backend is
        // configured to keep bodies first; the other place is asked only on a miss
        // (a store whose `bodies` changed keeps serving the older ones).
        let in_db_first = matches!(self.inner.bodies, Bodies::Database)
            || row.size <= self.inner.config.small_bodies_in_database;
        if let Some(b) = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index)
        {
            return Ok(Box::new(bytes::Buf::reader(b)));
        }
        if in_db_first
            && row.size as usize <= body::CHUNK
            && let Some(r) = self.read_ahead(index)?
        {
            return Ok(r);
        }
        if in_db_first && let Some(r) = self.db_reader(row)? {
            return Ok(r);
        }
        if let Bodies::Object { .. } = &self.inner.bodies {
            if !in_db_first
                && row.size as usize <= body::CHUNK
                && let Some(r) = self.read_ahead_objects(index)?
            {
                return Ok(r);
            }
            match self.object_reader(row)? {
                Some(r) => return Ok(r),
                None => {
                    if let Some(r) = self.db_reader(row)? {
                        return Ok(r);
                    }
                }
            }
        }
        let inner = &self.inner;
        let kind: Option<(bool,)> = inner.run(async {
            sqlx::query_as("SELECT in_db FROM correio_body WHERE hash = $1")
                .bind(&row.hash)
                .fetch_optional(&inner.pool)
                .await
        })?;
        match kind {
            None => Err(StoreError::Vanished(index)),
            Some((true,)) => Err(StoreError::Backend(format!(
                "the body of message {} of {} has lost its bytes",
                index + 1,
                self.mailbox
            ))),
            Some((false,)) => Err(StoreError::Backend(format!(
                "message {} of {} is in an object store, and it is not there or none is configured",
                index + 1,
                self.mailbox
            ))),
        }
    }

    fn cheap_read(&self, index: usize) -> bool {
        self.ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&index)
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
        failpoint::hit("pg-update-before-commit");
        // One statement, so one round trip and one implicit transaction: check the
        // lease is still ours, record retrieval dates, delete, release. The rows
        // updated (retrieved, not deleted, no date yet) and the rows deleted are
        // disjoint, as one statement requires.
        let outcome: (i64, Vec<i64>) = inner.run(async {
            sqlx::query_as(
                "WITH held AS (
                   SELECT mailbox_id FROM correio_lease
                   WHERE mailbox_id = $1 AND owner = $2 FOR UPDATE),
                 upd AS (
                   UPDATE correio_message SET first_retrieved = $3
                   WHERE mailbox_id IN (SELECT mailbox_id FROM held)
                     AND uid = ANY($4) AND NOT (uid = ANY($5)) AND first_retrieved IS NULL),
                 del AS (
                   DELETE FROM correio_message
                   WHERE mailbox_id IN (SELECT mailbox_id FROM held)
                     AND (uid = ANY($5) OR (uid <= $6 AND first_retrieved <= $7))
                   RETURNING uid),
                 rel AS (
                   DELETE FROM correio_lease
                   WHERE mailbox_id IN (SELECT mailbox_id FROM held) AND owner = $2)
                 SELECT (SELECT count(*) FROM held), array(SELECT uid FROM del)",
            )
            .bind(id)
            .bind(&owner)
            .bind(now)
            .bind(&retrieved)
            .bind(&del_uids)
            .bind(max_uid)
            .bind(cutoff)
            .fetch_one(&inner.pool)
            .await
        })?;
        let outcome = (outcome.0 == 1).then_some(outcome.1);
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
