//! `correio-store`: the maildrop behind a POP3 session, and atomic delivery into it.
//!
//! The job of this crate is to keep mail safe on disk and to hand it to the protocol
//! side through one small trait, [`Maildrop`], so that a later database backend needs no
//! change in the server or protocol crates.
//!
//! - [`Maildrop`] / [`open_maildrop`]: one POP3 session's view of a mailbox: an exclusive
//!   cross-process lock (fails fast with [`StoreError::InUse`]), a snapshot of the
//!   messages with their exact CRLF sizes and stable UIDLs, streaming reads, and the
//!   UPDATE step ([`Maildrop::update`] / [`Maildrop::commit`]).
//! - [`expiry`]: what `EXPIRE n` and `LOGIN-DELAY n` need to outlive a restart: first
//!   retrieval dates per UIDL (applied at UPDATE, [`Update`]) and the last login time.
//! - [`MailLocation`]: `maildir:/path` or `mbox:/path/file`, with Dovecot's
//!   `mail_location` templates (`%u`, `%n`, `%d`, `%h`, `~`).
//! - [`deliver()`]: atomic, durable delivery of one message (Maildir tmp → fsync →
//!   rename into new/ → fsync dir; mbox append under the local mail locks with fsync,
//!   truncated back on failure), with quota and size limits and errors classified as
//!   temporary or permanent ([`DeliverError`]).
//! - [`maildir::MaildirWriter`] and [`mbox::MboxWriter`]: the low-level durable writers,
//!   also for fetch targets, each with a batched (group-commit) variant.
//! - [`backend`]: the one place that chooses a backend. [`MailboxRef`] is a file
//!   location or `STORE:MAILBOX`; [`Stores`] opens, delivers and records logins for
//!   both, and a [`MailStore`] registered there (the PostgreSQL store of
//!   `correio-store-pg`) needs no change in the server or protocol crates.
//!
//! Layers: `error`, `maildrop` (the trait and its types) and `deliver` (options,
//! errors, the normalizer) name no backend; `maildir`, `mbox` and `expiry` build on
//! them; `backend` names them all.
//!
//! Contract for every backend (the store's invariants):
//! nothing is deleted except by [`Maildrop::commit`]; a crash at any instant leaves each
//! message fully present or fully absent; a delivered message becomes visible only when
//! complete and durable; a UIDL never changes and is never reused for a different
//! message; one session per maildrop at a time, across processes.
#![forbid(unsafe_code)]

pub mod backend;
pub mod convert;
pub mod deliver;
mod error;
pub mod expiry;
pub mod failpoint;
pub mod fsck;
pub mod fuzzing;
mod location;
pub mod lock;
pub mod maildir;
pub mod maildrop;
pub mod mbox;
mod transform;
mod wire;

pub use backend::{MailStore, MailboxRef, Stores, deliver, open_maildrop};
pub use deliver::{
    DeliverError, DeliverErrorKind, DeliverOptions, Delivered, LineEnds, Normalized, Normalizer,
    read_into,
};
pub use error::StoreError;
pub use location::{LocationError, MailLocation, TemplateVars};
pub use maildrop::{CommitReport, Maildrop, MessageInfo, MessageReader, Update};
