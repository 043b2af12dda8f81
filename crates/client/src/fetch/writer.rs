//! The target on its own thread: every file and socket operation of a [`Target`]
//! (writes, fsyncs, renames, MDA and LMTP conversations) runs on a dedicated OS
//! thread, so the async workers only move bytes between the network and a bounded
//! channel.
//!
//! Contract: [`TargetThread::begin`], [`TargetThread::data`], [`TargetThread::finish`]
//! and [`TargetThread::abort`] only queue; [`TargetThread::ready`] hands the queue to
//! the thread, waiting while the channel is full (at most [`CHANNEL_OPS`] operations
//! of at most one network read each are in flight, so memory stays bounded whatever
//! the server sends). A failed operation makes the thread skip message operations
//! until the next [`TargetThread::sync`], whose answer says which messages (by the
//! number [`TargetThread::finish`] gave them) were really finished and what failed.
//! The fetcher records only those, so a message whose write failed is never recorded
//! nor deleted on the server.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::target::{self, Pending, Target, TargetSpec};

/// Operations in flight between the fetcher and the thread.
pub const CHANNEL_OPS: usize = 16;

enum Op {
    Begin,
    Data(Vec<u8>),
    Finish(u64),
    Abort,
    Sync(oneshot::Sender<io::Result<Synced>>),
    Publish(Vec<Pending>, oneshot::Sender<io::Result<()>>),
}

/// What [`TargetThread::sync`] made durable.
#[derive(Debug)]
pub struct Synced {
    /// The renames still to do (see [`Target::sync`]).
    pub pending: Vec<Pending>,
    /// The messages finished since the last sync (numbers from
    /// [`TargetThread::finish`]).
    pub finished: Vec<u64>,
    /// The first failure since the last sync, if any.
    pub failure: Option<io::Error>,
    /// Finished messages the destination refused afterwards (a remote destination's
    /// per-message refusal, see [`Target::take_refused`]), with why: not in
    /// `finished`, so they are not recorded and stay on the server.
    pub refused: Vec<(u64, String)>,
}

/// A [`Target`] running on its own thread (see the module docs).
pub struct TargetThread {
    tx: mpsc::Sender<Op>,
    queue: Vec<Op>,
    failed: Arc<Mutex<Option<String>>>,
    next_id: u64,
    thread: Option<std::thread::JoinHandle<()>>,
    spec: String,
}

impl std::fmt::Debug for TargetThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetThread")
            .field("spec", &self.spec)
            .finish()
    }
}

fn copy_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl TargetThread {
    /// Opens the target on a new thread.
    pub async fn open(spec: &TargetSpec) -> io::Result<TargetThread> {
        let (tx, mut rx) = mpsc::channel::<Op>(CHANNEL_OPS);
        let (opened_tx, opened_rx) = oneshot::channel();
        let failed = Arc::new(Mutex::new(None::<String>));
        let spec2 = spec.clone();
        let failed2 = failed.clone();
        let thread = std::thread::Builder::new()
            .name("correio-fetch-target".into())
            .spawn(move || {
                let mut t: Box<dyn Target> = match target::open(&spec2) {
                    Ok(t) => {
                        let _ = opened_tx.send(Ok(()));
                        t
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let mut failure: Option<io::Error> = None;
                let mut finished = Vec::new();
                // Messages begun by this run (counted for the crash tests' failpoint).
                let mut begun = 0u64;
                let fail = |failure: &mut Option<io::Error>, e: io::Error| {
                    if let Ok(mut f) = failed2.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                    failure.get_or_insert(e);
                };
                while let Some(op) = rx.blocking_recv() {
                    match op {
                        Op::Begin | Op::Data(_) | Op::Finish(_) if failure.is_some() => {}
                        Op::Begin => {
                            begun += 1;
                            if let Err(e) = t.begin() {
                                fail(&mut failure, e);
                            }
                        }
                        Op::Data(d) => {
                            if let Err(e) = t.write(&d) {
                                t.abort();
                                fail(&mut failure, e);
                            }
                            correio_store::failpoint::hit_at("fetch-mid-message", begun);
                        }
                        Op::Finish(id) => match t.finish() {
                            Ok(()) => finished.push(id),
                            Err(e) => {
                                t.abort();
                                fail(&mut failure, e);
                            }
                        },
                        Op::Abort => t.abort(),
                        Op::Sync(reply) => {
                            t.abort();
                            let r = t.sync().map(|pending| {
                                let mut done = std::mem::take(&mut finished);
                                // Refusals are by position in finish order.
                                let mut refused_at = t.take_refused();
                                refused_at.sort_by_key(|r| std::cmp::Reverse(r.0));
                                let mut refused = Vec::new();
                                for (at, why) in refused_at {
                                    if at < done.len() {
                                        refused.push((done.remove(at), why));
                                    }
                                }
                                Synced {
                                    pending,
                                    finished: done,
                                    failure: failure.take(),
                                    refused,
                                }
                            });
                            if let Ok(mut f) = failed2.lock() {
                                *f = None;
                            }
                            finished.clear();
                            let _ = reply.send(r);
                        }
                        Op::Publish(p, reply) => {
                            let _ = reply.send(t.publish(&p));
                        }
                    }
                }
                // Dropped: an unsynced batch is taken back by the target's own Drop.
                t.abort();
            })?;
        match opened_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("the target thread died")),
        }
        Ok(TargetThread {
            tx,
            queue: Vec::new(),
            failed,
            next_id: 0,
            thread: Some(thread),
            spec: spec.to_string(),
        })
    }

    /// Queues: a message begins.
    pub fn begin(&mut self) {
        self.queue.push(Op::Begin);
    }

    /// Queues message bytes.
    pub fn data(&mut self, bytes: &[u8]) {
        self.queue.push(Op::Data(bytes.to_vec()));
    }

    /// Queues the end of the message; returns its number for [`Synced::finished`].
    pub fn finish(&mut self) -> u64 {
        self.next_id += 1;
        self.queue.push(Op::Finish(self.next_id));
        self.next_id
    }

    /// Queues dropping the message in progress.
    pub fn abort(&mut self) {
        self.queue.push(Op::Abort);
    }

    /// Hands the queue to the thread (waiting while the channel is full); an error if
    /// an operation has failed since the last sync.
    pub async fn ready(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.lock().ok().and_then(|f| f.clone()) {
            self.queue.clear();
            return Err(io::Error::other(e));
        }
        for op in std::mem::take(&mut self.queue) {
            self.tx
                .send(op)
                .await
                .map_err(|_| io::Error::other("the target thread died"))?;
        }
        Ok(())
    }

    /// Makes every finished message durable (see [`Target::sync`]).
    pub async fn sync(&mut self) -> io::Result<Synced> {
        let (reply, rx) = oneshot::channel();
        // Whatever failed, the sync must reach the thread.
        let queued = std::mem::take(&mut self.queue);
        for op in queued.into_iter().chain([Op::Sync(reply)]) {
            self.tx
                .send(op)
                .await
                .map_err(|_| io::Error::other("the target thread died"))?;
        }
        rx.await
            .map_err(|_| io::Error::other("the target thread died"))?
            .map_err(|e| copy_err(&e))
    }

    /// Publishes (see [`Target::publish`]).
    pub async fn publish(&mut self, pending: Vec<Pending>) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Publish(pending, reply))
            .await
            .map_err(|_| io::Error::other("the target thread died"))?;
        rx.await
            .map_err(|_| io::Error::other("the target thread died"))?
    }

    /// Stops the thread and waits for it (off the async workers).
    pub async fn close(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
