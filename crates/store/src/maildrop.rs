//! The [`Maildrop`] trait: one POP3 session's view of a mailbox.

use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime};

use crate::error::StoreError;

/// A message body being read: a plain byte stream in the stored form (normally LF line
/// ends; the server's dot-stuffer turns it into wire form). Owned and `Send + 'static`,
/// so a tokio server can read it in chunks inside `spawn_blocking`.
pub type MessageReader = Box<dyn Read + Send>;

/// One message of the snapshot taken when the maildrop was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageInfo {
    /// The exact size on the wire: octets with CRLF line ends, before byte-stuffing,
    /// without the final "." line (RFC 1939 STAT/LIST; `correio_proto::wire_size`).
    pub size: u64,
    /// The unique id (RFC 1939 UIDL): 1–70 octets in 0x21–0x7E, stable forever, never
    /// reused for a different message.
    pub uidl: String,
}

impl MessageInfo {
    /// A message with this wire size and UIDL (for other backends and tests).
    pub fn new(size: u64, uidl: String) -> Self {
        MessageInfo { size, uidl }
    }
}

/// What [`Maildrop::commit`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReport {
    /// Messages removed by this commit.
    pub removed: usize,
    /// Messages asked for deletion that were already gone (removed by another
    /// program); deletion is idempotent, so this is not an error.
    pub already_gone: usize,
    /// Of the removed or already gone messages, how many were not marked deleted but
    /// due under `EXPIRE n` ([`Update::expire_after`]).
    pub expired: usize,
}

impl CommitReport {
    /// A report (for store backends).
    pub fn new(removed: usize, already_gone: usize, expired: usize) -> Self {
        CommitReport {
            removed,
            already_gone,
            expired,
        }
    }
}

/// One POP3 session's maildrop: locked while this value lives.
///
/// Driving contract:
/// 1. [`crate::open_maildrop`] takes the exclusive session lock (across processes) or fails
///    fast with [`StoreError::InUse`], and takes the snapshot.
/// 2. [`Maildrop::messages`] is that snapshot; message `n` of POP3 is
///    `messages()[n - 1]`. It never changes during the session: messages delivered
///    meanwhile appear in the next session.
/// 3. [`Maildrop::open_message`] streams one message (never whole into memory).
/// 4. [`Maildrop::update`] (or its short form [`Maildrop::commit`]) is the UPDATE
///    state: it removes the given messages (and, under `EXPIRE n`, those first
///    retrieved at least n days ago), records when this session's retrieved messages
///    were first retrieved, and releases the lock. Dropping the maildrop without commit (connection lost, timeout,
///    panic) releases the lock and deletes nothing.
///
/// All methods block (file I/O): call them from `tokio::task::spawn_blocking`. The
/// trait is object-safe; a database backend implements the same four steps.
pub trait Maildrop: Send + fmt::Debug {
    /// The snapshot: every message present when the maildrop was opened, in a stable
    /// order (oldest first).
    fn messages(&self) -> &[MessageInfo];

    /// Opens message `index` (0-based into [`Maildrop::messages`]) for reading.
    /// The stream yields the stored bytes whose wire form has exactly
    /// `messages()[index].size` octets.
    fn open_message(&self, index: usize) -> Result<MessageReader, StoreError>;

    /// Opens message `index` and says how many wire octets its stream really holds.
    /// A backend whose listed size may come from outside the message (a Maildir name's
    /// `,W=`) measures the file it opened, corrects the record and logs the
    /// discrepancy; the caller announces the size returned (`+OK n octets` is always
    /// the number of octets that follow). The default trusts the listing.
    fn open_message_checked(&self, index: usize) -> Result<(MessageReader, u64), StoreError> {
        let size = self
            .messages()
            .get(index)
            .ok_or(StoreError::NoSuchMessage(index))?
            .size;
        Ok((self.open_message(index)?, size))
    }

    /// Reads message `index` whole when it holds at most `limit` stored octets, with
    /// the number of wire octets it holds (checked as [`Maildrop::open_message_checked`]
    /// checks it). `Ok(None)`: it is larger; stream it with `open_message_checked`.
    /// Small messages are served this way: read once, measured from the bytes in
    /// hand, never read twice.
    fn read_message_checked(
        &self,
        index: usize,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let (r, size) = self.open_message_checked(index)?;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(r, limit + 1), &mut v).map_err(
            |source| StoreError::Io {
                context: format!("cannot read message {}", index + 1),
                source,
            },
        )?;
        Ok((v.len() as u64 <= limit).then_some((v, size)))
    }

    /// Message `index` as a file whose bytes are exactly what RETR sends before the
    /// final `.` line (CRLF line ends, no line starting with `.`: stored in wire form
    /// at delivery), with its length, which is the message's size: the caller may
    /// hand it to the socket unread (`sendfile`). `Ok(None)` when the message is not
    /// known to be in wire form, or its file is not the size it was listed with
    /// (then [`Maildrop::open_message_checked`] measures and corrects it). The default:
    /// never.
    fn wire_file(&self, index: usize) -> Result<Option<(std::fs::File, u64)>, StoreError> {
        let _ = index;
        Ok(None)
    }

    /// UPDATE: records the first retrieval date (`update.now`) of each message in
    /// `update.retrieved` that has none yet; removes the messages at
    /// `update.deletions` (0-based indexes into the snapshot; duplicates are ignored)
    /// and, when `update.expire_after` is set, every message of the snapshot whose
    /// recorded first retrieval is at least that old; makes all of it durable, then
    /// releases the lock. Each message ends up either fully removed or fully intact,
    /// even on a crash. An index outside the snapshot is refused before anything is
    /// removed. Dropping the maildrop instead records and removes nothing.
    fn update(self: Box<Self>, update: &Update) -> Result<CommitReport, StoreError>;

    /// UPDATE without retrieval dates or expiry: removes the messages at `deletions`.
    fn commit(self: Box<Self>, deletions: &[usize]) -> Result<CommitReport, StoreError> {
        self.update(&Update::new(
            deletions.to_vec(),
            std::time::SystemTime::now(),
        ))
    }

    /// Whether opening and reading message `index` (a small one) is quick enough to do
    /// on an async worker: a local file, yes; a network store, only when it holds the
    /// message in memory already (read ahead); otherwise every read goes through the
    /// blocking pool.
    fn cheap_read(&self, index: usize) -> bool {
        let _ = index;
        true
    }

    /// The total wire size of the snapshot (STAT).
    fn total_size(&self) -> u64 {
        self.messages().iter().map(|m| m.size).sum()
    }
}

/// What one UPDATE (a QUIT in TRANSACTION) does, for [`crate::Maildrop::update`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Update {
    /// Messages marked deleted (0-based snapshot indexes).
    pub deletions: Vec<usize>,
    /// Messages retrieved (RETR) in this session: their first retrieval date is
    /// recorded as `now` unless one is recorded already.
    pub retrieved: Vec<usize>,
    /// `EXPIRE n` with n > 0: also remove every message of the snapshot first retrieved
    /// at least this long before `now`. `None`: no expiry.
    pub expire_after: Option<Duration>,
    /// The time of this UPDATE.
    pub now: SystemTime,
}

impl Update {
    /// An UPDATE at `now` that removes `deletions` and nothing else.
    pub fn new(deletions: Vec<usize>, now: SystemTime) -> Self {
        Update {
            deletions,
            retrieved: Vec::new(),
            expire_after: None,
            now,
        }
    }

    /// Records these messages as retrieved in this session.
    pub fn with_retrieved(mut self, retrieved: Vec<usize>) -> Self {
        self.retrieved = retrieved;
        self
    }

    /// Removes messages first retrieved at least `after` before `now`.
    pub fn with_expiry(mut self, after: Duration) -> Self {
        self.expire_after = Some(after);
        self
    }
}

/// Checks deletion indexes against the snapshot length and returns them sorted and
/// deduplicated.
pub fn checked_deletions(deletions: &[usize], len: usize) -> Result<Vec<usize>, StoreError> {
    let mut v = deletions.to_vec();
    v.sort_unstable();
    v.dedup();
    if let Some(&bad) = v.iter().find(|&&i| i >= len) {
        return Err(StoreError::NoSuchMessage(bad));
    }
    Ok(v)
}
