//! The error type of maildrop sessions.

use std::io;
use std::path::{Path, PathBuf};

use crate::location::LocationError;

/// What went wrong while opening, reading or updating a maildrop.
///
/// The POP3 server maps [`StoreError::InUse`] to `-ERR [IN-USE]`, errors for which
/// [`StoreError::is_temporary`] holds to `[SYS/TEMP]`, the rest to `[SYS/PERM]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another session (in this or another process) holds the maildrop.
    #[error("maildrop is in use by another session")]
    InUse,
    /// The index given to [`crate::Maildrop::open_message`] or
    /// [`crate::Maildrop::commit`] is outside the snapshot.
    #[error("no such message: index {0}")]
    NoSuchMessage(usize),
    /// The message was removed by another program since the snapshot was taken.
    #[error("message {0} vanished (removed by another program)")]
    Vanished(usize),
    /// The local mail locks (dotlock, fcntl, flock) could not be taken in time.
    #[error("timed out waiting for the mailbox lock on {0}")]
    LockTimeout(PathBuf),
    /// The mailbox changed under us in a way we cannot follow safely
    /// (for example an mbox rewritten in place by another program during the session).
    #[error("mailbox {path} changed unexpectedly: {reason}")]
    Changed {
        /// The mailbox.
        path: PathBuf,
        /// What was seen.
        reason: String,
    },
    /// The mail location is not usable (bad template, not a directory, ...).
    #[error(transparent)]
    Location(#[from] LocationError),
    /// A store on the network (a database, an object store) did not answer or failed;
    /// the session can be tried again later.
    #[error("{0}")]
    Unavailable(String),
    /// A store refused something for good (a broken schema, a row that cannot be).
    #[error("{0}")]
    Backend(String),
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with a short description of the operation and the path.
    pub(crate) fn io(what: &str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// Whether trying again later may succeed (a lock held, a full disk, an I/O
    /// error) as opposed to a permanent condition (a bad configuration).
    pub fn is_temporary(&self) -> bool {
        match self {
            StoreError::InUse
            | StoreError::LockTimeout(_)
            | StoreError::Vanished(_)
            | StoreError::Changed { .. }
            | StoreError::Unavailable(_)
            | StoreError::Io { .. } => true,
            StoreError::NoSuchMessage(_) | StoreError::Location(_) | StoreError::Backend(_) => {
                false
            }
        }
    }
}
