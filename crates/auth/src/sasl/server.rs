//! Server side of SASL: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256.
//!
//! # Driving contract
//! 1. The client sends `AUTH <mech> [initial-response]`. Make the mechanism with
//!    [`ServerMechanism::new`] and call [`start`](ServerMechanism::start) once, with
//!    `Some(bytes)` if there was an initial response (`=` decodes to `Some(b"")`) and
//!    `None` if not.
//! 2. [`Step::Challenge`]`(data)`: send `+ base64(data)`, read the client's line; `*`
//!    cancels (the protocol layer handles that); otherwise base64-decode it and call
//!    [`step`](ServerMechanism::step).
//! 3. [`Step::Success`]: the user is authenticated. `Err(_)`: reply with the failure
//!    (after the throttle's delay). Either way the mechanism is finished.
//!
//! Additional data with success (SCRAM's `v=`) is sent as a last challenge, and the
//! client answers with an empty response, as RFC 5034 §4 and RFC 4422 §5 ask of
//! protocols without a success-data slot: no special case in the server.
//!
//! # Threads
//! `start`/`step` may look the user up (a `stat` of the users file) and run a password
//! hash (PLAIN/LOGIN: up to ~100 ms and 64 MiB with ARGON2ID; SCRAM from a plaintext
//! secret: PBKDF2). Run every call inside `tokio::task::spawn_blocking`: the mechanism
//! is `Send + 'static`, so move it in and get it back with the result:
//! ```ignore
//! let db = Arc::clone(&users); // Arc<UserDb>
//! let (mech, step) = tokio::task::spawn_blocking(move || {
//!     let step = mech.step(&response, &*db);
//!     (mech, step)
//! }).await?;
//! ```

use std::sync::OnceLock;

use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use super::scram::{self, MAX_SCRAM_MESSAGE};
use super::{FailureReason, Mechanism, SaslError, failed, secret_caps, verify_login};
use crate::scheme::{ScramKeys, StoredSecret, hmac_sha256, salted_password};
use crate::userdb::{UserDb, UserRecord};
use crate::username::validate_username;

/// Where mechanisms find users. Implemented by [`UserDb`] (reloads on change) and by
/// `Vec<UserRecord>` (tests, exact names).
pub trait SecretLookup {
    /// The record for `user`, if it exists. `user` has passed `validate_username`.
    fn lookup_user(&self, user: &str) -> Option<UserRecord>;

    /// Checks a plaintext password (USER/PASS, PLAIN, LOGIN): the record on success.
    /// The default looks the user up and verifies the stored hash
    /// ([`verify_record`](super::verify_record)); a user database that checks passwords
    /// itself (PAM, an LDAP bind, checkpassword) or caches results overrides it, and
    /// returns [`SaslError::Temporary`] when it cannot answer now. `user` has passed
    /// `validate_username`. Blocking: call off async threads.
    fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        super::verify_record(user, password, self.lookup_user(user))
    }
}

impl SecretLookup for UserDb {
    fn lookup_user(&self, user: &str) -> Option<UserRecord> {
        self.lookup(user)
    }
}

impl SecretLookup for Vec<UserRecord> {
    fn lookup_user(&self, user: &str) -> Option<UserRecord> {
        self.iter().find(|r| r.name == user).cloned()
    }
}

/// What the server says next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Send this challenge (`+ base64(data)`) and call `step` with the answer.
    Challenge(Vec<u8>),
    /// Authenticated as `user` (the validated name, as it is in the users file).
    Success {
        /// The authenticated user.
        user: String,
    },
}

/// Per-connection inputs a mechanism needs from the server.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// The CRAM-MD5 challenge (RFC 2195: `<unique@hostname>`, never repeated). Build it
    /// with [`ServerParams::cram_challenge`] or pass your own (e.g. the APOP timestamp).
    pub cram_md5_challenge: String,
}

impl ServerParams {
    /// Parameters for one `AUTH` exchange on a server called `hostname`.
    pub fn new(hostname: &str) -> ServerParams {
        ServerParams {
            cram_md5_challenge: ServerParams::cram_challenge(hostname),
        }
    }

    /// A fresh `<random.random@hostname>` challenge; 96 random bits make repeats
    /// practically impossible without needing a clock.
    pub fn cram_challenge(hostname: &str) -> String {
        let mut r = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut r);
        let a = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
        let b = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
        format!("<{a}.{b}@{hostname}>")
    }
}

/// Longest PLAIN/LOGIN/CRAM-MD5 message we accept (RFC 4616 fields are ≤ 255 each).
const MAX_SIMPLE_MESSAGE: usize = 1024;

#[derive(Debug)]
enum State {
    PlainStart,
    PlainWait,
    LoginStart,
    LoginUser,
    LoginPass { user: String },
    CramStart { challenge: String },
    CramWait { challenge: String },
    ScramStart,
    ScramFirst,
    ScramFinal(Box<ScramServerState>),
    ScramDone { result: Result<String, SaslError> },
    Done,
}

struct ScramServerState {
    user: String,
    gs2_header: String,
    nonce: String,
    auth_message_prefix: String,
    keys: ScramKeys,
    /// Why the exchange must fail at the end, decided at client-first but hidden until
    /// the proof arrives (unknown user, unsuitable secret).
    doomed: Option<FailureReason>,
}

impl std::fmt::Debug for ScramServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerState")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One server-side SASL exchange. See the module docs for the driving contract.
#[derive(Debug)]
pub struct ServerMechanism {
    mechanism: Mechanism,
    state: State,
    /// The record a password mechanism (PLAIN, LOGIN) verified: the user database
    /// gave it with its answer, so the server need not ask again.
    verified: Option<UserRecord>,
    #[cfg(test)]
    pub(crate) test_nonce: Option<String>,
}

impl ServerMechanism {
    /// Starts an exchange for `mechanism`.
    pub fn new(mechanism: Mechanism, params: &ServerParams) -> ServerMechanism {
        let state = match mechanism {
            Mechanism::Plain => State::PlainStart,
            Mechanism::Login => State::LoginStart,
            Mechanism::CramMd5 => State::CramStart {
                challenge: params.cram_md5_challenge.clone(),
            },
            Mechanism::ScramSha256 => State::ScramStart,
        };
        ServerMechanism {
            mechanism,
            state,
            verified: None,
            #[cfg(test)]
            test_nonce: None,
        }
    }

    /// After a PLAIN or LOGIN success: the record the user database answered with
    /// (so a database that cannot be asked again by name — checkpassword — still
    /// gives the server the user's record). `None` for the other mechanisms.
    pub fn take_verified(&mut self) -> Option<UserRecord> {
        self.verified.take()
    }

    fn verified_step(&mut self, r: Result<UserRecord, SaslError>) -> Result<Step, SaslError> {
        let record = r?;
        let user = record.name.clone();
        self.verified = Some(record);
        Ok(Step::Success { user })
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the exchange is over (after `Success` or an error).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// First call: `initial` is the `AUTH` command's initial response, if any.
    pub fn start(
        &mut self,
        initial: Option<&[u8]>,
        store: &dyn SecretLookup,
    ) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, initial) {
            (State::PlainStart, None) => {
                self.state = State::PlainWait;
                Ok(Step::Challenge(Vec::new()))
            }
            (State::PlainStart, Some(r)) => self.verified_step(plain(r, store)),
            (State::LoginStart, None) => {
                self.state = State::LoginUser;
                Ok(Step::Challenge(b"Username:".to_vec()))
            }
            // Some clients send the username as an initial response.
            (State::LoginStart, Some(r)) => self.login_user(r),
            (State::CramStart { challenge }, None) => {
                let c = challenge.clone().into_bytes();
                self.state = State::CramWait { challenge };
                Ok(Step::Challenge(c))
            }
            (State::ScramStart, None) => {
                self.state = State::ScramFirst;
                Ok(Step::Challenge(Vec::new()))
            }
            (State::ScramStart, Some(r)) => self.scram_first(r, store),
            _ => Err(SaslError::UnexpectedStep),
        }
    }

    /// Feeds the client's (decoded) answer to the last challenge.
    pub fn step(&mut self, response: &[u8], store: &dyn SecretLookup) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::PlainWait => self.verified_step(plain(response, store)),
            State::LoginUser => self.login_user(response),
            State::LoginPass { user } => {
                if response.len() > MAX_SIMPLE_MESSAGE {
                    return Err(SaslError::Malformed("password too long"));
                }
                self.verified_step(verify_login(store, &user, response))
            }
            State::CramWait { challenge } => cram(&challenge, response, store),
            State::ScramFirst => self.scram_first(response, store),
            State::ScramFinal(st) => self.scram_final(*st, response),
            State::ScramDone { result } => {
                if !response.is_empty() {
                    return Err(SaslError::Malformed(
                        "expected an empty response after server-final",
                    ));
                }
                result.map(|user| Step::Success { user })
            }
            _ => Err(SaslError::UnexpectedStep),
        }
    }

    fn login_user(&mut self, r: &[u8]) -> Result<Step, SaslError> {
        if r.len() > MAX_SIMPLE_MESSAGE {
            return Err(SaslError::Malformed("username too long"));
        }
        let user =
            std::str::from_utf8(r).map_err(|_| SaslError::Malformed("username is not UTF-8"))?;
        validate_username(user).map_err(SaslError::BadUsername)?;
        self.state = State::LoginPass {
            user: user.to_owned(),
        };
        Ok(Step::Challenge(b"Password:".to_vec()))
    }

    fn scram_first(&mut self, r: &[u8], store: &dyn SecretLookup) -> Result<Step, SaslError> {
        if r.len() > MAX_SCRAM_MESSAGE {
            return Err(SaslError::Malformed("SCRAM message too long"));
        }
        let msg = std::str::from_utf8(r)
            .map_err(|_| SaslError::Malformed("SCRAM message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(SaslError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(SaslError::ChannelBindingUnsupported),
            _ => return Err(SaslError::Malformed("bad channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(SaslError::Malformed("no GS2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let authzid = match authzid {
            "" => None,
            a => Some(scram::decode_saslname(
                a.strip_prefix("a=")
                    .ok_or(SaslError::Malformed("bad authzid"))?,
            )?),
        };
        let attrs = scram::attributes(bare)?;
        if attrs.first().map(|a| a.0) == Some('m') {
            return Err(SaslError::Malformed(
                "unsupported mandatory SCRAM extension",
            ));
        }
        let (Some(('n', name)), Some(('r', cnonce))) =
            (attrs.first().copied(), attrs.get(1).copied())
        else {
            return Err(SaslError::Malformed("client-first must start with n=,r="));
        };
        if !scram::valid_nonce(cnonce) {
            return Err(SaslError::Malformed("bad client nonce"));
        }
        let user = scram::decode_saslname(name)?;
        validate_username(&user).map_err(SaslError::BadUsername)?;
        if authzid.is_some_and(|a| a != user) {
            return Err(SaslError::AuthzidRefused);
        }
        let record = store.lookup_user(&user);
        let (keys, doomed) = scram_keys_for(&user, record.as_ref());
        #[cfg(test)]
        let snonce = self.test_nonce.clone().unwrap_or_else(scram::new_nonce);
        #[cfg(not(test))]
        let snonce = scram::new_nonce();
        let nonce = format!("{cnonce}{snonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            scram::b64(&keys.salt),
            keys.iterations
        );
        let auth_message_prefix = format!("{bare},{server_first},");
        let user = record.map(|r| r.name).unwrap_or(user);
        self.state = State::ScramFinal(Box::new(ScramServerState {
            user,
            gs2_header,
            nonce,
            auth_message_prefix,
            keys,
            doomed,
        }));
        Ok(Step::Challenge(server_first.into_bytes()))
    }

    fn scram_final(&mut self, st: ScramServerState, r: &[u8]) -> Result<Step, SaslError> {
        if r.len() > MAX_SCRAM_MESSAGE {
            return Err(SaslError::Malformed("SCRAM message too long"));
        }
        let msg = std::str::from_utf8(r)
            .map_err(|_| SaslError::Malformed("SCRAM message is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(SaslError::Malformed("no proof"))?;
        let attrs = scram::attributes(without_proof)?;
        let (Some(('c', cbind)), Some(('r', nonce))) =
            (attrs.first().copied(), attrs.get(1).copied())
        else {
            return Err(SaslError::Malformed("client-final must start with c=,r="));
        };
        if scram::unb64(cbind).as_deref() != Some(st.gs2_header.as_bytes()) {
            return Err(SaslError::Malformed(
                "channel binding data does not match the GS2 header",
            ));
        }
        if nonce != st.nonce {
            return Err(SaslError::Malformed("nonce mismatch"));
        }
        let proof: [u8; 32] = scram::unb64(proof)
            .and_then(|p| p.try_into().ok())
            .ok_or(SaslError::Malformed("bad proof"))?;
        let auth_message = format!("{}{without_proof}", st.auth_message_prefix);
        let client_signature = hmac_sha256(&st.keys.stored_key, auth_message.as_bytes());
        let client_key = scram::xor32(&proof, &client_signature);
        let stored: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(client_key).into()
        };
        let proof_ok = bool::from(stored.ct_eq(&st.keys.stored_key));
        let verdict = match st.doomed {
            Some(reason) => Err(failed(&st.user, reason)),
            None if !proof_ok => Err(failed(&st.user, FailureReason::WrongPassword)),
            None => Ok(st.user.clone()),
        };
        match verdict {
            Ok(user) => {
                let server_signature = hmac_sha256(&st.keys.server_key, auth_message.as_bytes());
                self.state = State::ScramDone { result: Ok(user) };
                Ok(Step::Challenge(
                    format!("v={}", scram::b64(&server_signature)).into_bytes(),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// A per-process random key: fake salts for unknown users and salts for plaintext
/// secrets are derived from it, so they stay the same for a name within a process
/// (a changing salt would reveal that the user does not exist).
fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k
    })
}

const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// The SCRAM keys to use for `user`, and why the exchange must fail if it must.
fn scram_keys_for(user: &str, record: Option<&UserRecord>) -> (ScramKeys, Option<FailureReason>) {
    let derived_salt = |tag: &[u8]| {
        let mut m = tag.to_vec();
        m.extend_from_slice(user.as_bytes());
        hmac_sha256(process_key(), &m)[..16].to_vec()
    };
    // Every path runs exactly one PBKDF2 of SCRAM_DEFAULT_ITERATIONS, so the time to
    // answer client-first says nothing about whether or how the user exists.
    let fake = |reason| {
        let salt = derived_salt(b"fake-salt\0");
        let salted = salted_password(process_key(), &salt, SCRAM_DEFAULT_ITERATIONS);
        (
            ScramKeys::from_salted_password(&salted, &salt, SCRAM_DEFAULT_ITERATIONS),
            Some(reason),
        )
    };
    let Some(record) = record else {
        return fake(FailureReason::UnknownUser);
    };
    if !secret_caps(record).scram_sha256 {
        return fake(if record.nologin() {
            FailureReason::Disabled
        } else if record.password.is_none() {
            FailureReason::NoPassword
        } else {
            FailureReason::SecretUnsuitable
        });
    }
    let Some(secret) = record.password.as_ref() else {
        return fake(FailureReason::NoPassword);
    };
    if let Some(keys) = secret.scram_sha256_keys() {
        return match keys {
            Ok(k) => {
                let salt = derived_salt(b"fake-salt\0");
                std::hint::black_box(salted_password(
                    process_key(),
                    &salt,
                    SCRAM_DEFAULT_ITERATIONS,
                ));
                (k, None)
            }
            Err(e) => {
                tracing::error!(user = %record.name, error = %e, "cannot use the stored SCRAM secret");
                fake(FailureReason::BadStoredSecret)
            }
        };
    }
    match secret.plaintext() {
        Some(pw) => {
            let salt = derived_salt(b"plain-salt\0");
            let salted = salted_password(pw, &salt, SCRAM_DEFAULT_ITERATIONS);
            (
                ScramKeys::from_salted_password(&salted, &salt, SCRAM_DEFAULT_ITERATIONS),
                None,
            )
        }
        None => fake(FailureReason::SecretUnsuitable),
    }
}

fn plain(r: &[u8], store: &dyn SecretLookup) -> Result<UserRecord, SaslError> {
    if r.len() > MAX_SIMPLE_MESSAGE {
        return Err(SaslError::Malformed("PLAIN message too long"));
    }
    let mut parts = r.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN needs authzid NUL authcid NUL password",
        ));
    };
    let authcid =
        std::str::from_utf8(authcid).map_err(|_| SaslError::Malformed("authcid is not UTF-8"))?;
    let authzid =
        std::str::from_utf8(authzid).map_err(|_| SaslError::Malformed("authzid is not UTF-8"))?;
    validate_username(authcid).map_err(SaslError::BadUsername)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidRefused);
    }
    if passwd.is_empty() {
        return Err(SaslError::Malformed("empty password"));
    }
    verify_login(store, authcid, passwd)
}

fn cram(challenge: &str, r: &[u8], store: &dyn SecretLookup) -> Result<Step, SaslError> {
    if r.len() > MAX_SIMPLE_MESSAGE {
        return Err(SaslError::Malformed("CRAM-MD5 response too long"));
    }
    let text = std::str::from_utf8(r)
        .map_err(|_| SaslError::Malformed("CRAM-MD5 response is not UTF-8"))?;
    let (user, digest) = text
        .rsplit_once(' ')
        .ok_or(SaslError::Malformed("CRAM-MD5 needs 'user digest'"))?;
    let digest = crate::scheme::hex_decode(digest)
        .filter(|d| d.len() == 16)
        .ok_or(SaslError::Malformed("CRAM-MD5 digest is not 32 hex digits"))?;
    validate_username(user).map_err(SaslError::BadUsername)?;
    let record = store.lookup_user(user);
    let ctx = record
        .as_ref()
        .and_then(|r| r.password.as_ref())
        .and_then(StoredSecret::cram_md5_context);
    // Compute against a dummy context when there is none, so every path does the work.
    let got =
        crate::md5ctx::hmac_md5_from_context(&ctx.unwrap_or([0x5a; 32]), challenge.as_bytes());
    let ok = bool::from(got.as_slice().ct_eq(&digest));
    match record {
        None => Err(failed(user, FailureReason::UnknownUser)),
        Some(r) if ctx.is_none() => Err(failed(&r.name, FailureReason::SecretUnsuitable)),
        Some(r) if !ok => Err(failed(&r.name, FailureReason::WrongPassword)),
        Some(r) if r.nologin() => Err(failed(&r.name, FailureReason::Disabled)),
        Some(r) => Ok(Step::Success { user: r.name }),
    }
}
