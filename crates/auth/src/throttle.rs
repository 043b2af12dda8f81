//! Brute-force throttling: failed logins cost the attacker time.
//!
//! Each failure adds 1 to a score kept per client IP (IPv6 per /64, since one host
//! usually owns a whole /64) and per user name (ASCII-lowercased, so case variants share
//! a counter); scores halve every [`ThrottleConfig::half_life`]. The delay before a
//! failure reply is `base_delay × 2^(score − 1)`, capped at `max_delay`, using the
//! larger of the IP's and the user's score.
//!
//! **A correct password is never delayed**: the server checks the password first, and
//! only a failure waits (`record_failure` returns the delay). So an attacker hammering
//! one account slows themselves down, not the account's owner. [`Throttle::record_success`]
//! clears the user's score (not the IP's: one valid account must not launder an
//! attacker's IP). An unknown user is counted exactly like a known one, so the delay
//! reveals nothing either.
//!
//! # Use in a server
//! ```ignore
//! let started = Instant::now();
//! match spawn_blocking(move || verify_login(&*users, &user, &pw)).await? {
//!     Ok(record) => { throttle.record_success(ip, &record.name, Instant::now()); /* +OK */ }
//!     Err(e) => {
//!         let delay = throttle.record_failure(ip, failed_user(&e), Instant::now());
//!         // Reply at `started + delay`, not `now + delay`: the time the check took is
//!         // then hidden inside the delay as well.
//!         sleep_until(started + delay).await; /* -ERR [AUTH] */
//!     }
//! }
//! ```
//!
//! Memory is bounded: at most [`ThrottleConfig::max_tracked`] keys per table; the key
//! updated longest ago is evicted first, and decayed-out keys are dropped as we go. The
//! clock is injected (`now: Instant` everywhere), so tests need no sleeping.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttle tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Delay after the first failure (Dovecot's `auth_failure_delay` is 2 s).
    pub base_delay: Duration,
    /// The delay never exceeds this.
    pub max_delay: Duration,
    /// Scores halve after this much time without failures.
    pub half_life: Duration,
    /// At most this many IPs and this many user names are tracked.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            half_life: Duration::from_secs(300),
            max_tracked: 100_000,
        }
    }
}

/// A score below this is forgotten.
const FORGET_BELOW: f64 = 0.05;

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    updated: Instant,
    seq: u64,
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Entry>,
    by_age: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            map: HashMap::new(),
            by_age: BTreeMap::new(),
            seq: 0,
        }
    }

    fn score(&self, key: &K, now: Instant, half_life: Duration) -> f64 {
        self.map
            .get(key)
            .map_or(0.0, |e| decayed(e, now, half_life))
    }

    fn add(&mut self, key: K, delta: f64, now: Instant, cfg: &ThrottleConfig) -> f64 {
        self.prune(now, cfg.half_life);
        let old = self.map.get(&key).copied();
        if let Some(e) = old {
            self.by_age.remove(&(e.updated, e.seq));
        } else if cfg.max_tracked > 0 {
            while self.map.len() >= cfg.max_tracked {
                let Some((_, k)) = self.by_age.pop_first() else {
                    break;
                };
                self.map.remove(&k);
            }
        } else {
            return 0.0;
        }
        let score = old.map_or(0.0, |e| decayed(&e, now, cfg.half_life)) + delta;
        self.seq += 1;
        // `updated` never goes backwards, even if a caller passes an older `now`.
        let updated = old.map_or(now, |e| e.updated.max(now));
        let entry = Entry {
            score,
            updated,
            seq: self.seq,
        };
        self.by_age.insert((entry.updated, entry.seq), key.clone());
        self.map.insert(key, entry);
        score
    }

    fn clear(&mut self, key: &K) {
        if let Some(e) = self.map.remove(key) {
            self.by_age.remove(&(e.updated, e.seq));
        }
    }

    /// Drops the oldest entries whose score has decayed to nothing (bounded work).
    fn prune(&mut self, now: Instant, half_life: Duration) {
        for _ in 0..16 {
            let Some((_, k)) = self.by_age.first_key_value() else {
                return;
            };
            let Some(e) = self.map.get(k) else { return };
            if decayed(e, now, half_life) >= FORGET_BELOW {
                return;
            }
            if let Some((_, k)) = self.by_age.pop_first() {
                self.map.remove(&k);
            }
        }
    }
}

fn decayed(e: &Entry, now: Instant, half_life: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(e.updated).as_secs_f64();
    let hl = half_life.as_secs_f64().max(1e-3);
    e.score * 0.5f64.powf(elapsed / hl)
}

/// Normalizes an address to its throttling key: IPv4 as is (also when IPv4-mapped),
/// IPv6 by its /64 prefix.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn user_key(user: &str) -> String {
    user.to_ascii_lowercase()
}

#[derive(Debug)]
struct Tables {
    ips: Table<IpAddr>,
    users: Table<String>,
}

/// Per-IP and per-user failure counters. Share one per server (`Arc<Throttle>`); all
/// methods take `&self`.
#[derive(Debug)]
pub struct Throttle {
    config: Mutex<ThrottleConfig>,
    tables: Mutex<Tables>,
}

impl Throttle {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config: Mutex::new(config),
            tables: Mutex::new(Tables {
                ips: Table::new(),
                users: Table::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> ThrottleConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration (a reload); the scores recorded so far stay.
    pub fn set_config(&self, config: ThrottleConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave the tables inconsistent in a way
        // that matters (worst case a stale entry), so keep going.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delay_for(config: &ThrottleConfig, score: f64) -> Duration {
        if score < 0.5 {
            return Duration::ZERO;
        }
        let factor = 2f64.powf((score - 1.0).clamp(0.0, 40.0));
        let secs = config.base_delay.as_secs_f64() * factor;
        Duration::try_from_secs_f64(secs)
            .unwrap_or(config.max_delay)
            .min(config.max_delay)
    }

    /// The delay a failure reply would get now, without recording anything.
    pub fn delay_before_reply(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Duration {
        let config = self.config();
        let t = self.lock();
        let hl = config.half_life;
        let ip_score = t.ips.score(&ip_key(ip), now, hl);
        let user_score = user.map_or(0.0, |u| t.users.score(&user_key(u), now, hl));
        Self::delay_for(&config, ip_score.max(user_score))
    }

    /// Records a failed login (wrong password, unknown user, bad SASL exchange) and
    /// returns how long to wait before sending the failure reply. `user` is the name
    /// the client tried, if it got that far (and passed `validate_username`).
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Duration {
        let config = self.config();
        let mut t = self.lock();
        t.users.prune(now, config.half_life);
        let ip_score = t.ips.add(ip_key(ip), 1.0, now, &config);
        let user_score = user.map_or(0.0, |u| t.users.add(user_key(u), 1.0, now, &config));
        drop(t);
        Self::delay_for(&config, ip_score.max(user_score))
    }

    /// Records a successful login: forgets the user's failures (the IP's stay).
    pub fn record_success(&self, ip: IpAddr, user: &str, now: Instant) {
        let _ = (ip, now);
        self.lock().users.clear(&user_key(user));
    }

    /// How many IPs and user names are tracked (for metrics and tests).
    pub fn tracked(&self) -> (usize, usize) {
        let t = self.lock();
        (t.ips.map.len(), t.users.map.len())
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(ThrottleConfig::default())
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
