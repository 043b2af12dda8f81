//! Named kill points for crash tests: a test sets `CORREIO_FAILPOINT=NAME` (abort the
//! first time NAME is reached) or `NAME:N` (abort once the count passed in reaches N),
//! and the process dies there at once, without unwinding, flushing or unlocking, as
//! under `kill -9`. Unset (every real run), a failpoint costs one cached lookup.
//!
//! The store's own points, counted per process by [`hit_nth`] (`NAME:N` = the Nth time
//! there; `crates/store/tests/crash.rs` kills at each): `maildir-deliver-mid-write`
//! (part of a message written to `tmp/`), `maildir-deliver-before-rename` (fsynced, not
//! yet in `new/`), `maildir-deliver-before-dir-sync` (renamed, `new/` not yet
//! fsynced), `maildir-update-mid-unlink` (one deletion of an UPDATE done),
//! `mbox-deliver-mid-append` (part of a message appended), `mbox-deliver-before-sync`,
//! `mbox-deliver-before-journal-removal` (synced, journal still there),
//! `mbox-update-mid-rewrite` (part of the rewrite written) and
//! `mbox-update-after-rename` (the rewrite in place, locks still held). The converter,
//! the PostgreSQL store and `correio fetch` have theirs (see their `failpoint` calls).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the failpoint.
pub const ENV: &str = "CORREIO_FAILPOINT";

fn spec() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        match v.rsplit_once(':') {
            Some((n, c)) if c.bytes().all(|b| b.is_ascii_digit()) && !c.is_empty() => {
                Some((n.to_string(), c.parse().ok()?))
            }
            _ => Some((v, 0)),
        }
    })
    .as_ref()
}

/// Aborts the process if the failpoint `name` is set and `count` has reached its
/// count.
pub fn hit_at(name: &str, count: u64) {
    if let Some((n, c)) = spec()
        && n == name
        && count >= *c
    {
        abort(name, *c);
    }
}

/// Aborts the process the Nth time it reaches the failpoint `name` when `NAME:N` is
/// set (the first time for `NAME` alone): for points in loops that keep no count of
/// their own. Only the one configured point is counted.
pub fn hit_nth(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((n, c)) = spec()
        && n == name
    {
        let hits = HITS.fetch_add(1, Ordering::Relaxed) + 1;
        if hits >= *c {
            abort(name, *c);
        }
    }
}

fn abort(name: &str, count: u64) -> ! {
    eprintln!("correio: failpoint {name}:{count} reached, aborting");
    std::process::abort();
}

/// Aborts the process if the failpoint `name` is set.
pub fn hit(name: &str) {
    hit_at(name, u64::MAX);
}
