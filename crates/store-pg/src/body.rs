//! Message bodies: in PostgreSQL (chunk rows) or in an object store, keyed by the
//! SHA-256 of the stored bytes, written idempotently before the row that points to
//! them, and streamed both ways (one chunk in memory at a time).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::Inner;

/// Bytes per chunk row, and per object-store part.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Where bodies live.
#[derive(Debug, Clone)]
pub(crate) enum Bodies {
    Database,
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

/// The object key of a body: `PREFIX/ab/cd/<64 hex digits>`.
pub(crate) fn object_key(prefix: &str, hash: &[u8]) -> ObjectPath {
    let h = hex::encode(hash);
    let key = format!("{}/{}/{h}", &h[..2], &h[2..4]);
    if prefix.is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{prefix}/{key}"))
    }
}

/// Uploads the spooled body to the object store unless it is there already with the
/// right size. Content-addressed, so writing it twice (two deliveries of one message,
/// a retry after a crash) writes the same bytes.
pub(crate) async fn put_object(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    file: &mut std::fs::File,
    size: u64,
) -> Result<(), object_store::Error> {
    match store.head(key).await {
        Ok(meta) if meta.size == size => return Ok(()),
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| generic("rewinding the spool", e))?;
    if size as usize <= CHUNK {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf)
            .map_err(|e| generic("reading the spool", e))?;
        store.put(key, PutPayload::from(buf)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(key).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| generic("reading the spool", e))?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(2).await?;
        w.write(&buf[..n]);
    }
    w.finish().await?;
    Ok(())
}

fn generic(what: &str, e: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "spool",
        source: format!("{what}: {e}").into(),
    }
}

/// Reads a body kept in the database, one chunk row at a time.
pub(crate) struct DbBodyReader {
    pub(crate) inner: Arc<Inner>,
    pub(crate) hash: Vec<u8>,
    pub(crate) seq: i32,
    pub(crate) remaining: u64,
    pub(crate) buf: Bytes,
}

impl std::fmt::Debug for DbBodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbBodyReader")
            .field("seq", &self.seq)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Read for DbBodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            if self.remaining == 0 {
                return Ok(0);
            }
            let inner = Arc::clone(&self.inner);
            let (hash, seq) = (self.hash.clone(), self.seq);
            let row: Option<(Vec<u8>,)> = inner
                .run(async {
                    sqlx::query_as(
                        "SELECT data FROM correio_body_chunk WHERE hash = $1 AND seq = $2",
                    )
                    .bind(&hash)
                    .bind(seq)
                    .fetch_optional(&inner.pool)
                    .await
                })
                .map_err(|e| io::Error::other(e.to_string()))?;
            let Some((data,)) = row else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "body {} is missing chunk {seq} ({} octets unread)",
                        hex::encode(&self.hash),
                        self.remaining
                    ),
                ));
            };
            if data.is_empty() || data.len() as u64 > self.remaining {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "body {} chunk {seq} has the wrong size",
                        hex::encode(&self.hash)
                    ),
                ));
            }
            self.seq += 1;
            self.buf = Bytes::from(data);
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Reads a body from the object store as the response arrives.
pub(crate) struct ObjectBodyReader {
    pub(crate) inner: Arc<Inner>,
    pub(crate) key: ObjectPath,
    pub(crate) stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    pub(crate) remaining: u64,
    pub(crate) buf: Bytes,
}

impl std::fmt::Debug for ObjectBodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBodyReader")
            .field("key", &self.key)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Read for ObjectBodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            if self.remaining == 0 {
                return Ok(0);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(io::Error::other("body stream already failed"));
            };
            let inner = Arc::clone(&self.inner);
            match inner.run_io(stream.next()) {
                Ok(Some(Ok(b))) => self.buf = b,
                Ok(Some(Err(e))) => {
                    self.stream = None;
                    return Err(io::Error::other(format!("object {}: {e}", self.key)));
                }
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object {} ended {} octets short", self.key, self.remaining),
                    ));
                }
                Err(e) => return Err(io::Error::other(format!("object {}: {e}", self.key))),
            }
        }
        let n = out.len().min(self.buf.len());
        if n as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object {} is longer than its record", self.key),
            ));
        }
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        self.remaining -= n as u64;
        Ok(n)
    }
}
