//! The authentication cache, after Dovecot's `auth_cache`: POP3 clients poll every few
//! minutes with a fresh login, and each would otherwise pay a slow password hash
//! (ARGON2ID is tens of milliseconds by design) or a database round trip.
//!
//! - A login result is cached under the user name *and* a keyed hash of the password
//!   given (HMAC-SHA-256 with a key drawn at start-up and never written anywhere). So a
//!   cached success answers only the same password again; any other password — a new
//!   one after a change, a guess — goes to the backend. The cache never holds a
//!   password, nor anything that would check one outside this process.
//! - Good logins live `ttl`, refusals `negative_ttl` (shorter: a user who just fixed
//!   the password in the database retries with the *same* wrong password only if it
//!   is still wrong). Unknown users and wrong passwords are cached alike, so the cache
//!   does not tell them apart either.
//! - Temporary failures are never cached.
//! - Looked-up records (LMTP recipients, the record after a SASL login) are cached
//!   too, under the name alone, with the same TTLs.
//! - The server flushes it on reload (SIGHUP, `correio admin reload`) and when the
//!   passwd-file changes.
//!
//! Size-bounded: when full, expired entries go first, then the oldest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use correio_auth::{SaslError, UserRecord};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::CacheConfig;

type Verifier = [u8; 32];

#[derive(Debug, Clone)]
enum Entry {
    /// A login: this password (as verifier) gave this result.
    Login {
        verifier: Verifier,
        result: Result<UserRecord, SaslError>,
    },
    /// A lookup.
    Record(Option<UserRecord>),
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(u8, String), Vec<Slot>>,
    /// Insertion order, for eviction when full.
    order: VecDeque<(u8, String)>,
    len: usize,
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answers given from the cache.
    pub hits: u64,
    /// Questions the backend had to answer.
    pub misses: u64,
}

/// The cache. `size` 0 turns it off.
#[derive(Debug)]
pub struct AuthCache {
    config: CacheConfig,
    key: [u8; 32],
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The version of the source the entries came from (the passwd-file's generation).
    generation: AtomicU64,
}

const LOGIN: u8 = 0;
const LOOKUP: u8 = 1;
/// Different passwords remembered per user at most (a guesser cycling passwords must
/// not grow one user's list without bound).
const PER_USER: usize = 4;

impl AuthCache {
    /// A cache with a fresh random key.
    pub fn new(config: &CacheConfig) -> AuthCache {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        AuthCache {
            config: *config,
            key,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Flushes the cache when the source's version is not the one its entries came
    /// from (the passwd-file was edited).
    pub fn sync_generation(&self, generation: u64) {
        if self.generation.swap(generation, Ordering::AcqRel) != generation {
            self.flush();
        }
    }

    fn enabled(&self) -> bool {
        self.config.size > 0
    }

    fn verifier(&self, user: &str, password: &[u8]) -> Verifier {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The cached result of `user` logging in with `password`, if fresh.
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<Result<UserRecord, SaslError>> {
        self.verify_at(user, password, Instant::now())
    }

    /// [`AuthCache::verify`] as of `now` (the clock is injected for tests).
    fn verify_at(
        &self,
        user: &str,
        password: &[u8],
        now: Instant,
    ) -> Option<Result<UserRecord, SaslError>> {
        if !self.enabled() {
            return None;
        }
        let v = self.verifier(user, password);
        let inner = self.lock();
        let hit = inner.map.get(&(LOGIN, user.to_owned())).and_then(|slots| {
            slots.iter().find_map(|s| match &s.entry {
                Entry::Login { verifier, result }
                    if s.expires > now && bool::from(verifier.ct_eq(&v)) =>
                {
                    Some(result.clone())
                }
                _ => None,
            })
        });
        self.count(hit.is_some());
        hit
    }

    /// Remembers a login result (not a temporary failure).
    pub fn store_verify(
        &self,
        user: &str,
        password: &[u8],
        result: &Result<UserRecord, SaslError>,
    ) {
        if !self.enabled() {
            return;
        }
        let ttl = match result {
            Ok(_) => self.config.ttl,
            Err(SaslError::AuthFailed(_)) => self.config.negative_ttl,
            Err(_) => return,
        };
        let v = self.verifier(user, password);
        self.insert(
            (LOGIN, user.to_owned()),
            Entry::Login {
                verifier: v,
                result: result.clone(),
            },
            ttl,
        );
        if let Ok(record) = result {
            // The server looks the user up again after a SASL login.
            self.insert(
                (LOOKUP, user.to_owned()),
                Entry::Record(Some(record.clone())),
                ttl,
            );
        }
    }

    /// The cached record of `user` (`Some(None)`: known not to exist), if fresh.
    pub fn lookup(&self, user: &str) -> Option<Option<UserRecord>> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let inner = self.lock();
        let hit = inner.map.get(&(LOOKUP, user.to_owned())).and_then(|slots| {
            slots.iter().find_map(|s| match &s.entry {
                Entry::Record(r) if s.expires > now => Some(r.clone()),
                _ => None,
            })
        });
        self.count(hit.is_some());
        hit
    }

    /// Remembers a lookup.
    pub fn store_lookup(&self, user: &str, record: Option<&UserRecord>) {
        if !self.enabled() {
            return;
        }
        let ttl = if record.is_some() {
            self.config.ttl
        } else {
            self.config.negative_ttl
        };
        self.insert(
            (LOOKUP, user.to_owned()),
            Entry::Record(record.cloned()),
            ttl,
        );
    }

    fn insert(&self, key: (u8, String), entry: Entry, ttl: std::time::Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let slots = inner.map.entry(key.clone()).or_default();
        let before = slots.len();
        // One slot per password (or one record): replace the same verifier's slot.
        slots.retain(|s| {
            s.expires > now
                && match (&s.entry, &entry) {
                    (Entry::Login { verifier: a, .. }, Entry::Login { verifier: b, .. }) => a != b,
                    (Entry::Record(_), Entry::Record(_)) => false,
                    _ => true,
                }
        });
        if slots.len() >= PER_USER {
            slots.remove(0);
        }
        slots.push(Slot {
            entry,
            expires: now + ttl,
        });
        let after = slots.len();
        inner.len = inner.len - before + after;
        if before == 0 {
            inner.order.push_back(key);
        }
        while inner.len > self.config.size {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.len -= gone.len();
            }
        }
    }

    /// Forgets everything.
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.len = 0;
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use correio_auth::{AuthFailure, FailureReason};
    use std::time::Duration;

    fn cache(size: usize) -> AuthCache {
        AuthCache::new(&CacheConfig {
            size,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
        })
    }

    fn refused(user: &str) -> Result<UserRecord, SaslError> {
        Err(SaslError::AuthFailed(AuthFailure {
            user: user.into(),
            reason: FailureReason::WrongPassword,
        }))
    }

    #[test]
    fn a_success_answers_only_the_same_password() {
        let c = cache(100);
        let ok = Ok(UserRecord::new("alice", None));
        c.store_verify("alice", b"right", &ok);
        assert_eq!(c.verify("alice", b"right"), Some(ok));
        assert_eq!(
            c.verify("alice", b"wrong"),
            None,
            "another password asks the backend"
        );
        assert_eq!(c.verify("bob", b"right"), None);
        assert_eq!(
            c.lookup("alice").flatten().map(|r| r.name),
            Some("alice".into())
        );
    }

    #[test]
    fn a_changed_password_is_not_refused_from_the_cache() {
        // The old password was refused (after a change), the new one is asked fresh.
        let c = cache(100);
        c.store_verify("alice", b"old", &refused("alice"));
        assert_eq!(c.verify("alice", b"old"), Some(refused("alice")));
        assert_eq!(c.verify("alice", b"new"), None);
    }

    #[test]
    fn temporary_failures_are_not_cached() {
        let c = cache(100);
        c.store_verify("alice", b"pw", &Err(SaslError::Temporary("db down".into())));
        assert_eq!(c.verify("alice", b"pw"), None);
    }

    #[test]
    fn size_is_bounded_and_flush_empties() {
        let c = cache(10);
        for i in 0..100 {
            c.store_verify(&format!("u{i}"), b"pw", &refused("x"));
        }
        assert!(c.len() <= 10, "{}", c.len());
        // One user cycling passwords keeps at most PER_USER of them.
        for i in 0..50 {
            c.store_verify("guessed", format!("pw{i}").as_bytes(), &refused("guessed"));
        }
        assert!(c.len() <= 10);
        c.flush();
        assert!(c.is_empty());
        assert_eq!(c.verify("u99", b"pw"), None);
    }

    #[test]
    fn entries_answer_until_their_ttl_and_not_after() {
        let c = AuthCache::new(&CacheConfig {
            size: 10,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        });
        let ok = Ok(UserRecord::new("alice", None));
        c.store_verify("alice", b"pw", &ok);
        c.store_verify("alice", b"bad", &refused("alice"));
        let t = Instant::now();
        let at = |secs| t + Duration::from_secs(secs);
        assert_eq!(c.verify_at("alice", b"pw", at(59)), Some(ok.clone()));
        assert_eq!(c.verify_at("alice", b"pw", at(61)), None, "past cache_ttl");
        assert_eq!(c.verify_at("alice", b"bad", at(4)), Some(refused("alice")));
        assert_eq!(
            c.verify_at("alice", b"bad", at(6)),
            None,
            "past cache_negative_ttl"
        );
    }

    #[test]
    fn off_when_size_is_zero() {
        let c = cache(0);
        c.store_verify("alice", b"pw", &Ok(UserRecord::new("alice", None)));
        assert_eq!(c.verify("alice", b"pw"), None);
        assert_eq!(c.stats(), CacheStats::default());
    }
}
