//! Password schemes: the `{SCHEME}secret` field of a Dovecot passwd-file.
//!
//! [`StoredSecret::parse`] reads a stored field (never fails: an unknown scheme is kept
//! as [`Scheme::Unknown`] and simply never verifies), [`StoredSecret::verify`] checks a
//! password against it, and [`hash_password`] makes a new one. The formats are Dovecot's
//! byte for byte (checked against `doveadm pw` in the tests), so users files move freely
//! between Dovecot and Correio.
//!
//! **Cost.** ARGON2ID/I, the crypt schemes and SCRAM derivation are deliberately slow
//! (tens to hundreds of milliseconds, ARGON2ID with Dovecot's defaults also allocates
//! 64 MiB). Never call [`StoredSecret::verify`], [`hash_password`] or [`dummy_verify`]
//! on an async worker thread: use `tokio::task::spawn_blocking` (or a dedicated thread),
//! and bound how many run at once (a semaphore) so a login flood cannot exhaust memory.
//!
//! **Limits.** Stored parameters are checked before any work: argon2 above 1 GiB / 64
//! passes / 16 lanes, SHA-crypt above 10,000,000 rounds, bcrypt above cost 20 and SCRAM
//! or PBKDF2 above 10,000,000 iterations are reported as malformed, so a typo in the
//! users file cannot make every login burn minutes of CPU or gigabytes of memory.
//!
//! **Timing.** Every comparison of secret material is constant-time (`subtle`); plaintext
//! secrets are compared through SHA-256 digests so lengths do not leak either. For an
//! unknown user, call [`dummy_verify`] so the failure costs the same as a wrong password.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::md5ctx;

/// A password scheme, as named inside `{...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Scheme {
    /// `{ARGON2ID}$argon2id$v=19$m=..,t=..,p=..$salt$hash` (PHC string). The default.
    #[default]
    Argon2id,
    /// `{ARGON2I}$argon2i$...` (PHC string).
    Argon2i,
    /// `{SHA512-CRYPT}$6$[rounds=N$]salt$hash`.
    Sha512Crypt,
    /// `{SHA256-CRYPT}$5$[rounds=N$]salt$hash`.
    Sha256Crypt,
    /// `{BLF-CRYPT}$2y$cost$...` (bcrypt; `$2a$`, `$2b$`, `$2x$`, `$2y$` accepted).
    BlfCrypt,
    /// `{CRYPT}` or no prefix: whatever crypt(3) format the string has (`$6$`, `$5$`,
    /// `$2?$`, `$1$`, `$argon2id$`, `$argon2i$`); DES crypt is not supported.
    Crypt,
    /// `{SSHA512}`: base64(SHA-512(password + salt) + salt).
    Ssha512,
    /// `{SSHA256}`: base64(SHA-256(password + salt) + salt).
    Ssha256,
    /// `{SSHA}`: base64(SHA-1(password + salt) + salt).
    Ssha,
    /// `{SMD5}`: base64(MD5(password + salt) + salt). Verification only.
    Smd5,
    /// `{MD5-CRYPT}` (Dovecot also calls it `{MD5}`): `$1$salt$hash`. Verification only.
    Md5Crypt,
    /// `{PBKDF2}$1$salt$rounds$hex` (Dovecot's PBKDF2-HMAC-SHA1). Verification only.
    Pbkdf2,
    /// `{SHA512}`: base64(SHA-512(password)).
    Sha512,
    /// `{SHA256}`: base64(SHA-256(password)).
    Sha256,
    /// `{SHA}` / `{SHA1}`: base64(SHA-1(password)).
    Sha1,
    /// `{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}`: the password itself.
    Plain,
    /// `{PLAIN-MD5}` / `{LDAP-MD5}`: MD5(password), hex (or base64).
    PlainMd5,
    /// `{CRAM-MD5}`: hex of the HMAC-MD5 inner/outer states (Dovecot's layout).
    CramMd5,
    /// `{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey` (base64 fields).
    ScramSha256,
    /// Any other name: kept so the line round-trips; never verifies.
    Unknown(String),
}

impl Scheme {
    /// Parses a scheme name (case-insensitive, without braces or `.ENCODING` suffix).
    pub fn from_name(name: &str) -> Scheme {
        match name.to_ascii_uppercase().as_str() {
            "ARGON2ID" => Scheme::Argon2id,
            "ARGON2I" => Scheme::Argon2i,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "CRYPT" => Scheme::Crypt,
            "SSHA512" => Scheme::Ssha512,
            "SSHA256" => Scheme::Ssha256,
            "SSHA" => Scheme::Ssha,
            "SMD5" => Scheme::Smd5,
            "MD5-CRYPT" | "MD5" => Scheme::Md5Crypt,
            "PBKDF2" => Scheme::Pbkdf2,
            "SHA512" => Scheme::Sha512,
            "SHA256" => Scheme::Sha256,
            "SHA" | "SHA1" => Scheme::Sha1,
            "PLAIN" | "CLEAR" | "CLEARTEXT" => Scheme::Plain,
            "PLAIN-MD5" | "LDAP-MD5" => Scheme::PlainMd5,
            "CRAM-MD5" | "HMAC-MD5" => Scheme::CramMd5,
            "SCRAM-SHA-256" => Scheme::ScramSha256,
            _ => Scheme::Unknown(name.to_owned()),
        }
    }

    /// The canonical name, as written between braces.
    pub fn name(&self) -> &str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Crypt => "CRYPT",
            Scheme::Ssha512 => "SSHA512",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Ssha => "SSHA",
            Scheme::Smd5 => "SMD5",
            Scheme::Md5Crypt => "MD5-CRYPT",
            Scheme::Pbkdf2 => "PBKDF2",
            Scheme::Sha512 => "SHA512",
            Scheme::Sha256 => "SHA256",
            Scheme::Sha1 => "SHA",
            Scheme::Plain => "PLAIN",
            Scheme::PlainMd5 => "PLAIN-MD5",
            Scheme::CramMd5 => "CRAM-MD5",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::Unknown(n) => n,
        }
    }

    /// Whether [`hash_password`] can make new secrets with this scheme.
    pub fn can_generate(&self) -> bool {
        !matches!(
            self,
            Scheme::Crypt | Scheme::Unknown(_) | Scheme::Smd5 | Scheme::Md5Crypt | Scheme::Pbkdf2
        )
    }

    /// The schemes `correio user --scheme` accepts, default first.
    pub const GENERATABLE: &'static [&'static str] = &[
        "ARGON2ID",
        "ARGON2I",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "BLF-CRYPT",
        "SSHA512",
        "SSHA256",
        "SSHA",
        "SHA512",
        "SHA256",
        "SHA",
        "PLAIN",
        "PLAIN-MD5",
        "CRAM-MD5",
        "SCRAM-SHA-256",
    ];
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An explicit binary encoding suffix (`{SHA512.HEX}`, `{PLAIN-MD5.b64}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

/// Errors from hashing, or from a stored secret that cannot be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemeError {
    /// The stored value does not have the format its scheme requires.
    #[error("stored {scheme} secret is malformed: {why}")]
    Malformed {
        /// The scheme of the stored value.
        scheme: String,
        /// What is wrong (never contains secret material).
        why: &'static str,
    },
    /// The scheme is unknown or cannot be used for this operation.
    #[error("password scheme {0} is not supported here")]
    Unsupported(String),
    /// A parameter is out of range (e.g. argon2 memory, bcrypt cost).
    #[error("invalid hashing parameter: {0}")]
    BadParams(String),
}

fn malformed(scheme: &Scheme, why: &'static str) -> SchemeError {
    SchemeError::Malformed {
        scheme: scheme.name().to_owned(),
        why,
    }
}

/// Cost parameters for new hashes. Defaults are Dovecot's, so Correio's hashes cost the
/// same to check as Dovecot's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashParams {
    /// Argon2 memory in KiB (Dovecot: 65536 = 64 MiB).
    pub argon2_memory_kib: u32,
    /// Argon2 passes (Dovecot: 3).
    pub argon2_iterations: u32,
    /// Argon2 lanes (Dovecot: 1).
    pub argon2_parallelism: u32,
    /// SHA-crypt rounds (5000 is the standard default and is then not written).
    pub sha_crypt_rounds: u32,
    /// bcrypt cost (Dovecot writes 5; we default to 10, a value still fast to check).
    pub bcrypt_cost: u32,
    /// PBKDF2 iterations for SCRAM-SHA-256 (Dovecot and RFC 7677: 4096).
    pub scram_iterations: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            argon2_memory_kib: 65536,
            argon2_iterations: 3,
            argon2_parallelism: 1,
            sha_crypt_rounds: 5000,
            bcrypt_cost: 10,
            scram_iterations: 4096,
        }
    }
}

impl HashParams {
    /// Very cheap parameters for tests only (never for real passwords).
    #[doc(hidden)]
    pub fn insecure_fast_for_tests() -> Self {
        HashParams {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            sha_crypt_rounds: 1000,
            bcrypt_cost: 4,
            scram_iterations: 4096,
        }
    }
}

/// Verification limits. Stored parameters come from the admin's users file, but a typo
/// (an extra digit) must not let every login pin a CPU for minutes or allocate gigabytes:
/// above these a secret is reported as malformed instead of being checked.
const MAX_CRYPT_ROUNDS: usize = 10_000_000;
/// See [`MAX_CRYPT_ROUNDS`]: bcrypt cost 20 is already about a minute per check.
const MAX_BCRYPT_COST: u32 = 20;
/// See [`MAX_CRYPT_ROUNDS`]: 1 GiB of argon2 memory, 64 passes, 16 lanes.
const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ARGON2_ITERATIONS: u32 = 64;
const MAX_ARGON2_LANES: u32 = 16;

/// Upper bound on SCRAM PBKDF2 iterations we agree to compute, so a bogus stored value
/// cannot pin a CPU for minutes.
const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// A stored secret: `{SCHEME}data` as found in a users file.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    scheme: Scheme,
    encoding: Option<Encoding>,
    raw: String,
    data_start: usize,
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// SCRAM-SHA-256 keys derived from a password (RFC 5802 §3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramKeys {
    /// Derives the keys from a password (PBKDF2-HMAC-SHA-256; costly, see module docs).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = salted_password(password, salt, iterations);
        ScramKeys::from_salted_password(&salted, salt, iterations)
    }

    /// Derives the keys from an already computed SaltedPassword.
    pub fn from_salted_password(salted: &[u8; 32], salt: &[u8], iterations: u32) -> ScramKeys {
        let client_key = hmac_sha256(salted, b"Client Key");
        let stored_key: [u8; 32] = sha2::Sha256::digest(client_key).into();
        let server_key = hmac_sha256(salted, b"Server Key");
        ScramKeys {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }
}

pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
    out
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(s).ok())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Compares two byte strings in constant time with respect to their contents and
/// lengths (both are hashed first).
pub(crate) fn ct_eq_any_len(a: &[u8], b: &[u8]) -> bool {
    let da = sha2::Sha256::digest(a);
    let db = sha2::Sha256::digest(b);
    bool::from(da.ct_eq(&db))
}

impl StoredSecret {
    /// Parses a password field. `{NAME}` or `{NAME.ENC}` selects the scheme; without a
    /// prefix the field is a crypt(3) string (Dovecot's passwd-file default, `CRYPT`).
    pub fn parse(field: &str) -> StoredSecret {
        if let Some(rest) = field.strip_prefix('{')
            && let Some(end) = rest.find('}')
        {
            let name = &rest[..end];
            let (base, enc) = match name.rsplit_once('.') {
                Some((b, e)) if e.eq_ignore_ascii_case("hex") => (b, Some(Encoding::Hex)),
                Some((b, e))
                    if e.eq_ignore_ascii_case("b64") || e.eq_ignore_ascii_case("base64") =>
                {
                    (b, Some(Encoding::Base64))
                }
                _ => (name, None),
            };
            return StoredSecret {
                scheme: Scheme::from_name(base),
                encoding: enc,
                raw: field.to_owned(),
                data_start: end + 2,
            };
        }
        StoredSecret {
            scheme: Scheme::Crypt,
            encoding: None,
            raw: field.to_owned(),
            data_start: 0,
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The whole field as stored (`{SCHEME}data`), for writing back to the file.
    pub fn as_stored(&self) -> &str {
        &self.raw
    }

    fn data(&self) -> &str {
        &self.raw[self.data_start..]
    }

    /// The password itself, if the scheme stores it recoverably (PLAIN family). APOP,
    /// and CRAM-MD5/SCRAM from a plaintext secret, need it.
    pub fn plaintext(&self) -> Option<&[u8]> {
        match self.scheme {
            Scheme::Plain if self.encoding.is_none() => Some(self.data().as_bytes()),
            _ => None,
        }
    }

    /// Binary digest of a scheme whose default encoding is `default` (Dovecot falls back
    /// to the other encoding when the declared one does not decode to the right length).
    fn binary(&self, default: Encoding, want_len: Option<usize>) -> Result<Vec<u8>, SchemeError> {
        let data = self.data();
        let first = self.encoding.unwrap_or(default);
        let decode = |e: Encoding| match e {
            Encoding::Hex => hex_decode(data),
            Encoding::Base64 => b64_decode(data),
        };
        let ok = |v: &Vec<u8>| want_len.is_none_or(|n| v.len() == n);
        if let Some(v) = decode(first).filter(ok) {
            return Ok(v);
        }
        let other = if first == Encoding::Hex {
            Encoding::Base64
        } else {
            Encoding::Hex
        };
        decode(other)
            .filter(ok)
            .ok_or_else(|| malformed(&self.scheme, "bad encoding or length"))
    }

    /// The CRAM-MD5 context, from a `{CRAM-MD5}` secret or computed from a plaintext one.
    pub(crate) fn cram_md5_context(&self) -> Option<[u8; 32]> {
        match self.scheme {
            Scheme::CramMd5 => {
                let v = self.binary(Encoding::Hex, Some(32)).ok()?;
                let mut out = [0u8; 32];
                out.copy_from_slice(&v);
                Some(out)
            }
            _ => self.plaintext().map(md5ctx::cram_context),
        }
    }

    /// The SCRAM-SHA-256 keys, if the secret is stored in that scheme.
    pub fn scram_sha256_keys(&self) -> Option<Result<ScramKeys, SchemeError>> {
        if self.scheme != Scheme::ScramSha256 {
            return None;
        }
        Some(self.parse_scram())
    }

    fn parse_scram(&self) -> Result<ScramKeys, SchemeError> {
        let bad = |why| malformed(&self.scheme, why);
        let mut it = self.data().split(',');
        let iterations: u32 = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("iterations"))?;
        if iterations == 0 || iterations > MAX_SCRAM_ITERATIONS {
            return Err(bad("iteration count out of range"));
        }
        let salt = it.next().and_then(b64_decode).ok_or_else(|| bad("salt"))?;
        let key32 = |s: Option<&str>, why| -> Result<[u8; 32], SchemeError> {
            let v = s.and_then(b64_decode).ok_or_else(|| bad(why))?;
            v.try_into().map_err(|_| bad(why))
        };
        let stored_key = key32(it.next(), "stored key")?;
        let server_key = key32(it.next(), "server key")?;
        if it.next().is_some() {
            return Err(bad("trailing fields"));
        }
        Ok(ScramKeys {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Checks `password` against this secret. `Ok(false)` is a wrong password; `Err` is a
    /// stored value that cannot be checked (log it for the admin; treat as a failure).
    /// Costly for slow schemes: call off async threads (see module docs).
    pub fn verify(&self, password: &[u8]) -> Result<bool, SchemeError> {
        let data = self.data();
        match &self.scheme {
            Scheme::Plain => match self.encoding {
                None => Ok(ct_eq_any_len(data.as_bytes(), password)),
                Some(e) => {
                    let v = self.binary(e, None)?;
                    Ok(ct_eq_any_len(&v, password))
                }
            },
            Scheme::PlainMd5 => {
                let want = self.binary(Encoding::Hex, Some(16))?;
                Ok(bool::from(
                    md5::Md5::digest(password).as_slice().ct_eq(&want),
                ))
            }
            Scheme::Sha512 => {
                digest_eq::<sha2::Sha512>(&self.binary(Encoding::Base64, Some(64))?, password, &[])
            }
            Scheme::Sha256 => {
                digest_eq::<sha2::Sha256>(&self.binary(Encoding::Base64, Some(32))?, password, &[])
            }
            Scheme::Sha1 => {
                digest_eq::<sha1::Sha1>(&self.binary(Encoding::Base64, Some(20))?, password, &[])
            }
            Scheme::Ssha512 => self.salted::<sha2::Sha512>(64, password),
            Scheme::Ssha256 => self.salted::<sha2::Sha256>(32, password),
            Scheme::Ssha => self.salted::<sha1::Sha1>(20, password),
            Scheme::Smd5 => self.salted::<md5::Md5>(16, password),
            Scheme::Md5Crypt => verify_crypt(&self.scheme, data, password),
            Scheme::Pbkdf2 => verify_dovecot_pbkdf2(&self.scheme, data, password),
            Scheme::CramMd5 => {
                let ctx = self
                    .cram_md5_context()
                    .ok_or_else(|| malformed(&self.scheme, "bad encoding or length"))?;
                Ok(bool::from(md5ctx::cram_context(password).ct_eq(&ctx)))
            }
            Scheme::ScramSha256 => {
                let keys = self.parse_scram()?;
                let got = ScramKeys::derive(password, &keys.salt, keys.iterations);
                Ok(bool::from(got.stored_key.ct_eq(&keys.stored_key)))
            }
            Scheme::Argon2id
            | Scheme::Argon2i
            | Scheme::Sha512Crypt
            | Scheme::Sha256Crypt
            | Scheme::BlfCrypt => verify_crypt(&self.scheme, data, password),
            Scheme::Crypt => verify_crypt(&self.scheme, data, password),
            Scheme::Unknown(name) => Err(SchemeError::Unsupported(name.clone())),
        }
    }

    fn salted<D: sha2::Digest>(
        &self,
        digest_len: usize,
        password: &[u8],
    ) -> Result<bool, SchemeError> {
        let v = self.binary(Encoding::Base64, None)?;
        if v.len() <= digest_len {
            return Err(malformed(&self.scheme, "no salt"));
        }
        let (want, salt) = v.split_at(digest_len);
        digest_eq::<D>(want, password, salt)
    }
}

fn digest_eq<D: sha2::Digest>(
    want: &[u8],
    password: &[u8],
    salt: &[u8],
) -> Result<bool, SchemeError> {
    let mut h = D::new();
    h.update(password);
    h.update(salt);
    Ok(bool::from(h.finalize().as_slice().ct_eq(want)))
}

/// Verifies a crypt(3)-style string; for `Scheme::Crypt` the format is detected.
fn verify_crypt(scheme: &Scheme, data: &str, password: &[u8]) -> Result<bool, SchemeError> {
    if data.starts_with("$argon2") {
        let hash =
            argon2::PasswordHash::new(data).map_err(|_| malformed(scheme, "not a PHC string"))?;
        let params =
            argon2::Params::try_from(&hash).map_err(|_| malformed(scheme, "argon2 parameters"))?;
        if params.m_cost() > MAX_ARGON2_MEMORY_KIB
            || params.t_cost() > MAX_ARGON2_ITERATIONS
            || params.p_cost() > MAX_ARGON2_LANES
        {
            return Err(malformed(
                scheme,
                "argon2 parameters above the verification limit",
            ));
        }
        let alg = argon2::Algorithm::try_from(hash.algorithm)
            .map_err(|_| malformed(scheme, "argon2 variant"))?;
        let want = hash.hash.ok_or_else(|| malformed(scheme, "no hash"))?;
        let salt = hash.salt.ok_or_else(|| malformed(scheme, "no salt"))?;
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|_| malformed(scheme, "salt"))?;
        let version = hash
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(|_| malformed(scheme, "argon2 version"))?
            .unwrap_or(argon2::Version::V0x10);
        let out_len = want.len();
        let params = argon2::Params::new(
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            Some(out_len),
        )
        .map_err(|_| malformed(scheme, "argon2 parameters"))?;
        let mut out = vec![0u8; out_len];
        argon2::Argon2::new(alg, version, params)
            .hash_password_into(password, salt, &mut out)
            .map_err(|_| malformed(scheme, "argon2 parameters"))?;
        return Ok(bool::from(out.as_slice().ct_eq(want.as_bytes())));
    }
    if data.starts_with("$6$") || data.starts_with("$5$") {
        return verify_sha_crypt(scheme, data, password);
    }
    if let Some(rest) = data.strip_prefix("$1$") {
        let (salt, want) = rest
            .rsplit_once('$')
            .ok_or_else(|| malformed(scheme, "no hash"))?;
        let got = md5_crypt(password, salt.as_bytes());
        return Ok(bool::from(got.as_bytes().ct_eq(want.as_bytes())));
    }
    if data.starts_with("$2") {
        let cost: Option<u32> = data.get(4..6).and_then(|c| c.parse().ok());
        if cost.is_none_or(|c| c > MAX_BCRYPT_COST) {
            return Err(malformed(
                scheme,
                "bcrypt cost missing or above the verification limit",
            ));
        }
        return bcrypt::verify(password, data)
            .map_err(|_| malformed(scheme, "not a bcrypt string"));
    }
    Err(SchemeError::Unsupported(format!(
        "{} (crypt format not supported)",
        scheme.name()
    )))
}

/// SHA-crypt check over bytes (the sha-crypt crate's own check wants UTF-8 passwords).
fn verify_sha_crypt(scheme: &Scheme, data: &str, password: &[u8]) -> Result<bool, SchemeError> {
    let bad = |why| malformed(scheme, why);
    let is512 = data.starts_with("$6$");
    let mut rest = &data[3..];
    let mut rounds = 5000usize;
    if let Some(r) = rest.strip_prefix("rounds=") {
        let (n, after) = r.split_once('$').ok_or_else(|| bad("rounds"))?;
        let n: usize = n.parse().map_err(|_| bad("rounds"))?;
        // crypt(3) clamps the round count into [1000, 999999999]; we refuse more than
        // MAX_CRYPT_ROUNDS (see there).
        if n > MAX_CRYPT_ROUNDS {
            return Err(bad("rounds above the verification limit"));
        }
        rounds = n.max(1000);
        rest = after;
    }
    let (salt, want) = rest.rsplit_once('$').ok_or_else(|| bad("no hash"))?;
    // crypt(3) uses at most 16 salt characters.
    let salt = &salt.as_bytes()[..salt.len().min(16)];
    let got = if is512 {
        let p = sha_crypt::Sha512Params::new(rounds).map_err(|_| bad("rounds"))?;
        sha_crypt::sha512_crypt_b64(password, salt, &p).map_err(|_| bad("crypt"))?
    } else {
        let p = sha_crypt::Sha256Params::new(rounds).map_err(|_| bad("rounds"))?;
        sha_crypt::sha256_crypt_b64(password, salt, &p).map_err(|_| bad("crypt"))?
    };
    Ok(bool::from(got.as_bytes().ct_eq(want.as_bytes())))
}

/// The hash part of FreeBSD/glibc MD5-crypt (`$1$`), as in crypt(3). Only for checking
/// old imported secrets.
fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    let salt = &salt[..salt.len().min(8)];
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(CRYPT_SALT_ALPHABET[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    put(f(11), 2);
    out
}

/// Dovecot's `{PBKDF2}$1$salt$rounds$hex(PBKDF2-HMAC-SHA1(password, salt, rounds, 20))`.
fn verify_dovecot_pbkdf2(
    scheme: &Scheme,
    data: &str,
    password: &[u8],
) -> Result<bool, SchemeError> {
    let bad = |why| malformed(scheme, why);
    let mut it = data.split('$');
    if (it.next(), it.next()) != (Some(""), Some("1")) {
        return Err(bad("not $1$"));
    }
    let salt = it.next().ok_or_else(|| bad("salt"))?;
    let rounds: u32 = it
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| bad("rounds"))?;
    if rounds == 0 || rounds > MAX_SCRAM_ITERATIONS {
        return Err(bad("rounds out of range"));
    }
    let want = it.next().and_then(hex_decode).ok_or_else(|| bad("hash"))?;
    if it.next().is_some() || want.is_empty() || want.len() > 64 {
        return Err(bad("hash"));
    }
    let mut got = vec![0u8; want.len()];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt.as_bytes(), rounds, &mut got);
    Ok(bool::from(got.ct_eq(&want)))
}

const CRYPT_SALT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt_salt() -> String {
    random_bytes::<16>()
        .iter()
        .map(|b| CRYPT_SALT_ALPHABET[usize::from(b & 63)] as char)
        .collect()
}

/// Hashes `password` with `scheme`, returning the field to store (`{SCHEME}data`).
/// Costly for slow schemes: call off async threads (see module docs).
pub fn hash_password(
    scheme: &Scheme,
    password: &[u8],
    params: &HashParams,
) -> Result<StoredSecret, SchemeError> {
    let data = match scheme {
        Scheme::Argon2id | Scheme::Argon2i => {
            let alg = if *scheme == Scheme::Argon2id {
                argon2::Algorithm::Argon2id
            } else {
                argon2::Algorithm::Argon2i
            };
            let p = argon2::Params::new(
                params.argon2_memory_kib,
                params.argon2_iterations,
                params.argon2_parallelism,
                Some(32),
            )
            .map_err(|e| SchemeError::BadParams(e.to_string()))?;
            let salt = random_bytes::<16>();
            let mut out = [0u8; 32];
            argon2::Argon2::new(alg, argon2::Version::V0x13, p)
                .hash_password_into(password, &salt, &mut out)
                .map_err(|e| SchemeError::BadParams(e.to_string()))?;
            let variant = if *scheme == Scheme::Argon2id {
                "argon2id"
            } else {
                "argon2i"
            };
            format!(
                "${variant}$v=19$m={},t={},p={}${}${}",
                params.argon2_memory_kib,
                params.argon2_iterations,
                params.argon2_parallelism,
                STANDARD_NO_PAD.encode(salt),
                STANDARD_NO_PAD.encode(out)
            )
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let salt = crypt_salt();
            let rounds = params.sha_crypt_rounds as usize;
            if !(1000..=999_999_999).contains(&rounds) {
                return Err(SchemeError::BadParams(
                    "sha-crypt rounds must be 1000..=999999999".into(),
                ));
            }
            let (id, hash) = if *scheme == Scheme::Sha512Crypt {
                let p = sha_crypt::Sha512Params::new(rounds)
                    .map_err(|_| SchemeError::BadParams("rounds".into()))?;
                (
                    "6",
                    sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p),
                )
            } else {
                let p = sha_crypt::Sha256Params::new(rounds)
                    .map_err(|_| SchemeError::BadParams("rounds".into()))?;
                (
                    "5",
                    sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p),
                )
            };
            let hash = hash.map_err(|_| SchemeError::BadParams("sha-crypt".into()))?;
            if rounds == 5000 {
                format!("${id}${salt}${hash}")
            } else {
                format!("${id}$rounds={rounds}${salt}${hash}")
            }
        }
        Scheme::BlfCrypt => {
            if !(4..=31).contains(&params.bcrypt_cost) {
                return Err(SchemeError::BadParams("bcrypt cost must be 4..=31".into()));
            }
            if password.len() > 72 {
                // bcrypt silently ignores everything past 72 bytes; refuse instead of
                // storing a hash that accepts a different password.
                return Err(SchemeError::BadParams(
                    "BLF-CRYPT passwords are limited to 72 bytes".into(),
                ));
            }
            bcrypt::hash_with_salt(password, params.bcrypt_cost, random_bytes::<16>())
                .map_err(|e| SchemeError::BadParams(e.to_string()))?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Ssha512 => salted_b64::<sha2::Sha512>(password),
        Scheme::Ssha256 => salted_b64::<sha2::Sha256>(password),
        Scheme::Ssha => salted_b64::<sha1::Sha1>(password),
        Scheme::Sha512 => STANDARD.encode(sha2::Sha512::digest(password)),
        Scheme::Sha256 => STANDARD.encode(sha2::Sha256::digest(password)),
        Scheme::Sha1 => STANDARD.encode(sha1::Sha1::digest(password)),
        Scheme::Plain => {
            let s = std::str::from_utf8(password)
                .map_err(|_| SchemeError::BadParams("PLAIN passwords must be UTF-8".into()))?;
            if s.contains([':', '\n', '\r', '\0']) {
                return Err(SchemeError::BadParams(
                    "PLAIN passwords cannot contain ':', CR, LF or NUL".into(),
                ));
            }
            s.to_owned()
        }
        Scheme::PlainMd5 => hex_lower(&md5::Md5::digest(password)),
        Scheme::CramMd5 => hex_lower(&md5ctx::cram_context(password)),
        Scheme::ScramSha256 => {
            if params.scram_iterations < 4096 || params.scram_iterations > MAX_SCRAM_ITERATIONS {
                return Err(SchemeError::BadParams(
                    "SCRAM iterations must be 4096..=10000000".into(),
                ));
            }
            let salt = random_bytes::<16>();
            let k = ScramKeys::derive(password, &salt, params.scram_iterations);
            format!(
                "{},{},{},{}",
                k.iterations,
                STANDARD.encode(&k.salt),
                STANDARD.encode(k.stored_key),
                STANDARD.encode(k.server_key)
            )
        }
        Scheme::Crypt | Scheme::Unknown(_) | Scheme::Smd5 | Scheme::Md5Crypt | Scheme::Pbkdf2 => {
            return Err(SchemeError::Unsupported(scheme.name().to_owned()));
        }
    };
    Ok(StoredSecret::parse(&format!("{{{}}}{data}", scheme.name())))
}

fn salted_b64<D: sha2::Digest>(password: &[u8]) -> String {
    let salt = random_bytes::<8>();
    let mut h = D::new();
    h.update(password);
    h.update(salt);
    let mut v = h.finalize().to_vec();
    v.extend_from_slice(&salt);
    STANDARD.encode(v)
}

static DUMMY: OnceLock<StoredSecret> = OnceLock::new();

/// Verifies `password` against a fixed secret of the default scheme with default
/// parameters, and throws the answer away. Call it when the user does not exist, so an
/// unknown user costs the same time (and memory) as a wrong password. The first call
/// also creates the dummy hash; call [`warm_up_dummy`] at startup to keep that cost out
/// of the first login.
pub fn dummy_verify(password: &[u8]) {
    let secret = DUMMY.get_or_init(make_dummy);
    let start = Instant::now();
    let _ = std::hint::black_box(secret.verify(password));
    let took = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u64;
    // A moving average of what a dummy check costs, for `pad_to_dummy_cost`.
    let old = DUMMY_COST_MICROS.load(Ordering::Relaxed);
    let new = if old == 0 { took } else { (old * 3 + took) / 4 };
    DUMMY_COST_MICROS.store(new, Ordering::Relaxed);
}

/// What a [`dummy_verify`] costs lately (zero before the first one).
static DUMMY_COST_MICROS: AtomicU64 = AtomicU64::new(0);

/// Sleeps (this is a blocking thread) until `started` is as far in the past as a dummy
/// verification takes. A wrong password for a user with a cheap scheme (SSHA, PLAIN,
/// CRAM-MD5...) then costs as long as an unknown user's dummy ARGON2ID check, so the
/// reply time does not reveal which users exist.
pub(crate) fn pad_to_dummy_cost(started: Instant) {
    let cost = Duration::from_micros(DUMMY_COST_MICROS.load(Ordering::Relaxed));
    let elapsed = started.elapsed();
    if elapsed < cost {
        std::thread::sleep(cost - elapsed);
    }
}

/// Creates the dummy hash used by [`dummy_verify`] now (costs one hash).
pub fn warm_up_dummy() {
    DUMMY.get_or_init(make_dummy);
    // Also learn what a dummy check costs, for the padding of cheap failures.
    dummy_verify(b"warm-up");
}

/// Makes [`dummy_verify`] cheap in this process, so fuzzers run fast. Fuzzing only:
/// it defeats the timing protection.
pub(crate) fn cheap_dummy_for_fuzzing() {
    let _ = DUMMY.set(
        hash_password(
            &Scheme::Argon2id,
            b"fuzz",
            &HashParams::insecure_fast_for_tests(),
        )
        .unwrap_or_else(|_| StoredSecret::parse("{PLAIN}\0")),
    );
}

fn make_dummy() -> StoredSecret {
    let pw = random_bytes::<24>();
    hash_password(&Scheme::Argon2id, &pw, &HashParams::default())
        .unwrap_or_else(|_| StoredSecret::parse("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
}

#[cfg(test)]
#[path = "scheme_tests.rs"]
mod tests;
