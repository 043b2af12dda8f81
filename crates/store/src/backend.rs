//! The one place that chooses a backend.
//!
//! The abstract modules ([`crate::maildrop`], [`mod@crate::deliver`]) name no backend; the
//! file backends ([`crate::maildir`], [`crate::mbox`]) and any other store (a database,
//! in its own crate) sit above them. A user's mailbox is a [`MailboxRef`]: a file
//! location (`maildir:PATH`, `mbox:PATH`) served by this crate, or `STORE:MAILBOX` served
//! by a [`MailStore`] registered under the name `STORE` in [`Stores`]. The server, LMTP,
//! `correio deliver` and the admin tools go through [`Stores`] only, so a new backend
//! changes none of them: the program that reads the configuration registers it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::deliver::{DeliverError, DeliverErrorKind, DeliverOptions, Delivered};
use crate::error::StoreError;
use crate::location::{LocationError, MailLocation, TemplateVars, expand_template};
use crate::maildrop::Maildrop;

/// A backend that keeps mailboxes by name (a database), registered in [`Stores`].
///
/// Every method blocks (network and disk I/O): call them off the async workers.
pub trait MailStore: Send + Sync + fmt::Debug {
    /// Opens `mailbox` for one POP3 session, as [`open_maildrop`] does for files: the
    /// exclusive session lock (across every process sharing the store) or
    /// [`StoreError::InUse`], then the snapshot.
    fn open(&self, mailbox: &str) -> Result<Box<dyn Maildrop>, StoreError>;

    /// Delivers one message durably (the contract of [`crate::deliver()`]): when this
    /// returns `Ok` the message is stored and committed.
    fn deliver(
        &self,
        mailbox: &str,
        reader: &mut dyn Read,
        opts: &DeliverOptions,
    ) -> Result<Delivered, DeliverError>;

    /// The last successful login to `mailbox` (LOGIN-DELAY), if one is recorded.
    fn last_login(&self, mailbox: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Records a successful login to `mailbox` at `now`.
    fn record_login(&self, mailbox: &str, now: SystemTime) -> Result<(), StoreError>;

    /// Checks that the store answers (`correio check`); the error says why not.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where one user's mail lives: a file mailbox or a mailbox of a registered store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxRef {
    /// A Maildir or mbox on this machine's file system.
    File(MailLocation),
    /// Mailbox `mailbox` of the store registered as `store` (for example
    /// `pgsql:alice@example.org`).
    Store {
        /// The store's name in [`Stores`].
        store: String,
        /// The mailbox's name inside that store.
        mailbox: String,
    },
}

impl MailboxRef {
    /// Parses `maildir:PATH`, `mbox:PATH` (see [`MailLocation::parse`]) or
    /// `STORE:MAILBOX`, where STORE is a name of letters, digits, `-` and `_`.
    pub fn parse(s: &str) -> Result<Self, LocationError> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| LocationError::UnknownFormat(s.to_string()))?;
        if kind.eq_ignore_ascii_case("maildir") || kind.eq_ignore_ascii_case("mbox") {
            return MailLocation::parse(s).map(MailboxRef::File);
        }
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(LocationError::UnknownFormat(s.to_string()));
        }
        if rest.is_empty()
            || rest.len() > 255
            || rest.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(LocationError::UnsafeName(rest.to_string()));
        }
        Ok(MailboxRef::Store {
            store: kind.to_ascii_lowercase(),
            mailbox: rest.to_string(),
        })
    }

    /// Expands a Dovecot-style template (`%u`, `%n`, `%d`, `%h`, `~`; see
    /// [`MailLocation::from_template`]) and parses the result.
    pub fn from_template(template: &str, vars: &TemplateVars<'_>) -> Result<Self, LocationError> {
        Self::parse(&expand_template(template, vars)?)
    }

    /// The file location, when this is one.
    pub fn file(&self) -> Option<&MailLocation> {
        match self {
            MailboxRef::File(l) => Some(l),
            MailboxRef::Store { .. } => None,
        }
    }
}

impl From<MailLocation> for MailboxRef {
    fn from(l: MailLocation) -> Self {
        MailboxRef::File(l)
    }
}

impl fmt::Display for MailboxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxRef::File(l) => l.fmt(f),
            MailboxRef::Store { store, mailbox } => write!(f, "{store}:{mailbox}"),
        }
    }
}

/// The registry of stores: the file backends always, and every [`MailStore`] the
/// configuration names. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    stores: BTreeMap<String, Arc<dyn MailStore>>,
}

impl Stores {
    /// The file backends only.
    pub fn new() -> Self {
        Stores::default()
    }

    /// Registers `store` under `name` (case-insensitive; `maildir` and `mbox` are
    /// taken by the file backends).
    pub fn register(&mut self, name: &str, store: Arc<dyn MailStore>) {
        self.stores.insert(name.to_ascii_lowercase(), store);
    }

    /// The store registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn MailStore>> {
        self.stores.get(name)
    }

    /// The names of the registered stores.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    fn store(&self, name: &str) -> Result<&Arc<dyn MailStore>, LocationError> {
        self.stores
            .get(name)
            .ok_or_else(|| LocationError::Unusable {
                path: PathBuf::from(format!("{name}:")),
                reason: format!("no store named {name:?} is configured"),
            })
    }

    /// Whether `mailbox` names a backend that exists (a configuration check).
    pub fn knows(&self, mailbox: &MailboxRef) -> Result<(), LocationError> {
        match mailbox {
            MailboxRef::File(_) => Ok(()),
            MailboxRef::Store { store, .. } => self.store(store).map(|_| ()),
        }
    }

    /// Opens `mailbox` for one POP3 session (see [`crate::Maildrop`]).
    pub fn open(&self, mailbox: &MailboxRef) -> Result<Box<dyn Maildrop>, StoreError> {
        match mailbox {
            MailboxRef::File(l) => open_maildrop(l),
            MailboxRef::Store { store, mailbox } => self.store(store)?.open(mailbox),
        }
    }

    /// Delivers one message into `mailbox` (see [`crate::deliver()`]).
    pub fn deliver(
        &self,
        mailbox: &MailboxRef,
        mut reader: impl Read,
        opts: &DeliverOptions,
    ) -> Result<Delivered, DeliverError> {
        match mailbox {
            MailboxRef::File(l) => deliver(l, reader, opts),
            MailboxRef::Store { store, mailbox } => {
                let s = self.store(store).map_err(|e| {
                    DeliverError::new(DeliverErrorKind::MailboxUnusable, false, e.to_string())
                })?;
                s.deliver(mailbox, &mut reader, opts)
            }
        }
    }

    /// The last recorded login (LOGIN-DELAY).
    pub fn last_login(&self, mailbox: &MailboxRef) -> Result<Option<SystemTime>, StoreError> {
        match mailbox {
            MailboxRef::File(l) => Ok(crate::expiry::last_login(l)),
            MailboxRef::Store { store, mailbox } => self.store(store)?.last_login(mailbox),
        }
    }

    /// Records a successful login (LOGIN-DELAY).
    pub fn record_login(&self, mailbox: &MailboxRef, now: SystemTime) -> Result<(), StoreError> {
        match mailbox {
            MailboxRef::File(l) => crate::expiry::record_login(l, now),
            MailboxRef::Store { store, mailbox } => self.store(store)?.record_login(mailbox, now),
        }
    }
}

/// Opens the file maildrop at `location` for one session: takes the session lock
/// (failing fast with [`StoreError::InUse`]) and the snapshot. A Maildir that does not
/// exist yet is created empty; a missing mbox file is an empty mailbox.
pub fn open_maildrop(location: &MailLocation) -> Result<Box<dyn Maildrop>, StoreError> {
    match location {
        MailLocation::Maildir(path) => Ok(Box::new(crate::maildir::MaildirDrop::open(path)?)),
        MailLocation::Mbox(path) => Ok(Box::new(crate::mbox::MboxDrop::open(path)?)),
    }
}

/// Delivers one message from `reader` into the file mailbox at `location`, durably
/// (see [`mod@crate::deliver`]).
pub fn deliver(
    location: &MailLocation,
    reader: impl Read,
    opts: &DeliverOptions,
) -> Result<Delivered, DeliverError> {
    match location {
        MailLocation::Maildir(root) => {
            let w = crate::maildir::MaildirWriter::open(root)?;
            w.deliver_with(reader, opts)
        }
        MailLocation::Mbox(path) => {
            let w = crate::mbox::MboxWriter::new(path, opts.clone());
            w.append(reader)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_store_references() {
        assert_eq!(
            MailboxRef::parse("maildir:/srv/mail/a").unwrap(),
            MailboxRef::File(MailLocation::Maildir("/srv/mail/a".into()))
        );
        assert_eq!(
            MailboxRef::parse("PgSQL:alice@example.org").unwrap(),
            MailboxRef::Store {
                store: "pgsql".into(),
                mailbox: "alice@example.org".into()
            }
        );
        assert!(MailboxRef::parse("pg sql:alice").is_err());
        assert!(MailboxRef::parse("pgsql:").is_err());
        assert!(MailboxRef::parse("pgsql:a b").is_err());
        assert!(MailboxRef::parse("alice").is_err());
    }

    #[test]
    fn an_unregistered_store_is_a_clear_error() {
        let stores = Stores::new();
        let r = MailboxRef::parse("pgsql:alice").unwrap();
        let e = stores.open(&r).unwrap_err();
        assert!(e.to_string().contains("no store named \"pgsql\""), "{e}");
        let e = stores
            .deliver(&r, &b"x\n"[..], &DeliverOptions::default())
            .unwrap_err();
        assert!(
            e.is_temporary(),
            "a configuration problem keeps the mail queued"
        );
    }
}
