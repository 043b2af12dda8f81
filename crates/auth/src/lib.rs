//! correio-auth: who may log in, and how.
//!
//! - [`userdb`]: the users file, a Dovecot-compatible passwd-file
//!   (`user:{SCHEME}secret:uid:gid:gecos:home:shell:extra`), read by [`UserDb`]
//!   (reloaded on change, last good version kept) and edited atomically under a lock by
//!   [`add_user`], [`set_password`], [`update_user`], [`delete_user`].
//! - [`scheme`]: password schemes as Dovecot writes them (ARGON2ID default, ARGON2I,
//!   SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, SSHA512/256, SSHA, SHA512/256/1, PLAIN,
//!   PLAIN-MD5, CRAM-MD5, SCRAM-SHA-256; for imports also MD5-CRYPT, SMD5 and PBKDF2):
//!   [`StoredSecret::verify`], [`hash_password`], [`dummy_verify`].
//! - [`sasl`]: server mechanisms (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256) as sans-IO
//!   steps, client mechanisms (also XOAUTH2, OAUTHBEARER), USER/PASS and APOP checks, and
//!   what each stored secret allows ([`mechanisms_for`]).
//! - [`throttle`]: per-IP and per-user failure delays with bounded memory.
//! - [`username`]: [`validate_username`], the gate before any path or log.
//!
//! Nothing here does network I/O. Password hashing and users-file reads block: async
//! callers run them in `spawn_blocking` (see [`scheme`] and [`sasl`]).
#![forbid(unsafe_code)]

mod md5ctx;
pub mod sasl;
pub mod scheme;
pub mod throttle;
pub mod userdb;
pub mod username;

#[doc(hidden)]
pub mod fuzzing;

pub use sasl::{
    AuthFailure, ClientCredentials, ClientMechanism, ClientMechanismKind, FailureReason, Mechanism,
    SaslError, SecretCaps, SecretLookup, ServerMechanism, ServerParams, Step, any_user_allows,
    apop_verify, mechanisms_for, secret_caps, verify_login, verify_record,
};
pub use scheme::{
    HashParams, Scheme, SchemeError, ScramKeys, StoredSecret, dummy_verify, hash_password,
    warm_up_dummy,
};
pub use throttle::{Throttle, ThrottleConfig};
pub use userdb::{
    ExtraField, LineError, UserDb, UserDbError, UserDbOptions, UserRecord, add_user,
    default_users_path, delete_user, set_password, update_user,
};
pub use username::{MAX_USERNAME_LEN, UsernameError, split_username, validate_username};
