//! SASL mechanisms (server and client side) and the checks that decide what a user's
//! stored secret allows.
//!
//! All mechanisms are sans-IO state machines over raw (already base64-decoded) bytes;
//! the protocol crate does the `AUTH`/`+ ` framing and base64. Server side:
//! [`ServerMechanism`]; client side: [`ClientMechanism`]. Plain USER/PASS logins use
//! [`verify_login`], APOP uses [`apop_verify`].
//!
//! # What a stored secret allows
//! | secret scheme               | USER/PASS, PLAIN, LOGIN | APOP | CRAM-MD5 | SCRAM-SHA-256 |
//! |-----------------------------|:--:|:--:|:--:|:--:|
//! | PLAIN (CLEAR, CLEARTEXT)    | ✓ | ✓ | ✓ | ✓ |
//! | CRAM-MD5                    | ✓ |   | ✓ |   |
//! | SCRAM-SHA-256               | ✓ |   |   | ✓ |
//! | any other (ARGON2ID, ...)   | ✓ |   |   |   |
//!
//! See [`mechanisms_for`] and [`SecretCaps`].
//!
//! # Failures look the same
//! An unknown user, a wrong password, a secret that does not allow the mechanism, an
//! empty password field and `nologin` all end in [`SaslError::AuthFailed`], after the
//! same work (an unknown user's password is checked against a dummy hash). The
//! [`FailureReason`] inside is for the log only; the client must get one identical reply.

mod client;
mod scram;
mod server;

pub use client::{ClientCredentials, ClientMechanism, ClientMechanismKind};
pub use server::{SecretLookup, ServerMechanism, ServerParams, Step};

use std::fmt;

use md5::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::scheme::{Scheme, dummy_verify, pad_to_dummy_cost};
use crate::userdb::{UserDb, UserRecord};
use crate::username::{UsernameError, validate_username};

/// A server-side authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// SASL PLAIN (RFC 4616).
    Plain,
    /// SASL LOGIN (draft-murchison-sasl-login).
    Login,
    /// SASL CRAM-MD5 (RFC 2195).
    CramMd5,
    /// SASL SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding.
    ScramSha256,
}

impl Mechanism {
    /// Every server mechanism, in the order a server would advertise them.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::ScramSha256,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The SASL name, as in `AUTH <name>` and CAPA's `SASL` line.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Parses a SASL name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether the password crosses the wire recoverably (PLAIN, LOGIN): such
    /// mechanisms must only be offered over TLS (or where the admin allows cleartext).
    pub fn is_cleartext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an authentication failed: for the log and for metrics, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// No such user.
    UnknownUser,
    /// The password (or proof, or digest) is wrong.
    WrongPassword,
    /// The user's secret cannot serve this mechanism (e.g. CRAM-MD5 with ARGON2ID).
    SecretUnsuitable,
    /// The user's password field is empty (and no `nopassword`).
    NoPassword,
    /// The user has `nologin`.
    Disabled,
    /// The stored secret is malformed or uses an unsupported scheme (an admin problem).
    BadStoredSecret,
    /// A user database that checks passwords itself (PAM, an LDAP bind,
    /// checkpassword) said no, without saying whether the user exists.
    Rejected,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureReason::UnknownUser => "unknown user",
            FailureReason::WrongPassword => "wrong password",
            FailureReason::SecretUnsuitable => "stored secret does not allow this mechanism",
            FailureReason::NoPassword => "user has no password",
            FailureReason::Disabled => "user has nologin",
            FailureReason::BadStoredSecret => "stored secret is malformed or unsupported",
            FailureReason::Rejected => "rejected by the user database",
        })
    }
}

/// A failed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The (validated) name the client tried, for throttling and logs.
    pub user: String,
    /// Why it failed (log only).
    pub reason: FailureReason,
}

/// SASL errors (server and client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// Credentials rejected. Send the client the same reply whatever the reason.
    #[error("authentication failed for {}: {}", .0.user, .0.reason)]
    AuthFailed(AuthFailure),
    /// The peer's message does not follow the mechanism's syntax.
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// The username is not acceptable (see [`validate_username`]).
    #[error("{0}")]
    BadUsername(UsernameError),
    /// PLAIN/SCRAM authzid differs from the authcid (we do not support proxy logins).
    #[error("authorization identity differs from authentication identity")]
    AuthzidRefused,
    /// The client asked for channel binding, which we do not offer.
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    /// `step` called after the exchange ended, or an initial response where the
    /// mechanism allows none.
    #[error("unexpected SASL step")]
    UnexpectedStep,
    /// Client side: the server's SCRAM signature is wrong (the server does not know the
    /// password: possible impostor).
    #[error("server signature does not verify (possible impostor)")]
    ServerSignatureMismatch,
    /// Client side: the server reported an error (SCRAM `e=`, OAuth error JSON).
    #[error("server error: {0}")]
    ServerError(String),
    /// Client side: the server claimed success before the exchange was complete.
    #[error("server ended the exchange early")]
    Incomplete,
    /// Server side: the user database cannot answer now (database down, directory
    /// unreachable). Never "wrong password": the client is told to try again later
    /// (`-ERR [SYS/TEMP]`, LMTP 451 4.3.0).
    #[error("user database temporarily unavailable: {0}")]
    Temporary(String),
}

fn failed(user: &str, reason: FailureReason) -> SaslError {
    SaslError::AuthFailed(AuthFailure {
        user: user.to_owned(),
        reason,
    })
}

/// What a user's stored secret allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecretCaps {
    /// USER/PASS, PLAIN and LOGIN (any verifiable secret, or `nopassword`).
    pub password: bool,
    /// APOP (needs the plaintext).
    pub apop: bool,
    /// CRAM-MD5 (plaintext or `{CRAM-MD5}`).
    pub cram_md5: bool,
    /// SCRAM-SHA-256 (plaintext or `{SCRAM-SHA-256}`).
    pub scram_sha256: bool,
}

impl SecretCaps {
    /// Whether the user may use mechanism `m`.
    pub fn allows(&self, m: Mechanism) -> bool {
        match m {
            Mechanism::Plain | Mechanism::Login => self.password,
            Mechanism::CramMd5 => self.cram_md5,
            Mechanism::ScramSha256 => self.scram_sha256,
        }
    }
}

/// What `record`'s secret allows (see the table in the module docs).
pub fn secret_caps(record: &UserRecord) -> SecretCaps {
    if record.nologin() {
        return SecretCaps::default();
    }
    let Some(secret) = &record.password else {
        return SecretCaps {
            password: record.nopassword(),
            ..SecretCaps::default()
        };
    };
    let plain = secret.plaintext().is_some();
    SecretCaps {
        password: !matches!(secret.scheme(), Scheme::Unknown(_)),
        apop: plain,
        cram_md5: plain || *secret.scheme() == Scheme::CramMd5,
        scram_sha256: plain || *secret.scheme() == Scheme::ScramSha256,
    }
}

/// The SASL mechanisms `record` can use, in advertising order.
pub fn mechanisms_for(record: &UserRecord) -> Vec<Mechanism> {
    let caps = secret_caps(record);
    Mechanism::ALL
        .into_iter()
        .filter(|m| caps.allows(*m))
        .collect()
}

/// Whether any user in `db` could use `m`: a server advertises CRAM-MD5 or
/// SCRAM-SHA-256 in CAPA only when this is true.
///
/// Picks up a changed users file first (one `stat`); does not copy the records.
pub fn any_user_allows(db: &UserDb, m: Mechanism) -> bool {
    if let Err(e) = db.reload_if_changed() {
        tracing::error!(error = %e, "users file not reloaded; still using the previous version");
    }
    db.with_records(|records| records.iter().any(|r| secret_caps(r).allows(m)))
}

/// Checks a USER/PASS (or PLAIN/LOGIN) login: looks `user` up, verifies `password`
/// (against a dummy hash if the user is unknown, so both cost the same), honours
/// `nologin` and `nopassword`. Returns the record on success.
///
/// Every failure takes at least as long as a dummy check (a wrong password for a user
/// with a cheap scheme sleeps the difference), so the reply time does not reveal which
/// users exist; call [`warm_up_dummy`](crate::warm_up_dummy) at startup so that cost is
/// known from the first login. Costly (runs the password hash, may sleep): call off
/// async threads.
pub fn verify_login(
    store: &dyn SecretLookup,
    user: &str,
    password: &[u8],
) -> Result<UserRecord, SaslError> {
    validate_username(user).map_err(SaslError::BadUsername)?;
    store.verify_plain(user, password)
}

/// [`verify_login`]'s check against a record already looked up (`None`: no such
/// user): what [`SecretLookup::verify_plain`] does for a store that keeps hashes.
/// Same cost whether the user exists or not; honours `nologin` and `nopassword`.
pub fn verify_record(
    user: &str,
    password: &[u8],
    record: Option<UserRecord>,
) -> Result<UserRecord, SaslError> {
    let started = std::time::Instant::now();
    let Some(record) = record else {
        dummy_verify(password);
        return Err(failed(user, FailureReason::UnknownUser));
    };
    let outcome = match &record.password {
        None if record.nopassword() => Ok(()),
        None => {
            dummy_verify(password);
            Err(FailureReason::NoPassword)
        }
        Some(secret) => match secret.verify(password) {
            Ok(true) => Ok(()),
            Ok(false) => Err(FailureReason::WrongPassword),
            Err(e) => {
                tracing::error!(user = %record.name, error = %e, "cannot check the stored password");
                Err(FailureReason::BadStoredSecret)
            }
        },
    };
    // `nologin` is checked after the password so it does not reveal itself to guessers.
    let result = match outcome {
        Ok(()) if record.nologin() => Err(failed(user, FailureReason::Disabled)),
        Ok(()) => return Ok(record),
        Err(reason) => Err(failed(user, reason)),
    };
    pad_to_dummy_cost(started);
    result
}

/// Checks an APOP login (RFC 1939 §7): `digest` is the client's hex MD5 of
/// `timestamp` (the greeting's `<...>`, brackets included) followed by the password.
/// Needs a plaintext secret; other users fail as with a wrong digest. Cheap.
pub fn apop_verify(
    timestamp: &str,
    digest: &str,
    record: Option<&UserRecord>,
) -> Result<(), FailureReason> {
    let want = crate::scheme::hex_decode(digest).filter(|d| d.len() == 16);
    let secret = record
        .and_then(|r| r.password.as_ref())
        .and_then(|s| s.plaintext());
    // Do the MD5 either way so a missing user costs the same.
    let mut h = md5::Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.unwrap_or(b"\0correio-apop-dummy\0"));
    let got = h.finalize();
    let matches = want
        .as_deref()
        .is_some_and(|w| bool::from(got.as_slice().ct_eq(w)));
    match record {
        None => Err(FailureReason::UnknownUser),
        Some(_) if secret.is_none() => Err(FailureReason::SecretUnsuitable),
        Some(_) if !matches => Err(FailureReason::WrongPassword),
        Some(r) if r.nologin() => Err(FailureReason::Disabled),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
