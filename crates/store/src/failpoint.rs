//! Named kill points for crash tests: a test sets `CORREIO_FAILPOINT=NAME` (abort the
//! first time NAME is reached) or `NAME:N` (abort once the count passed in reaches N),
//! and the process dies there at once, without unwinding, flushing or unlocking, as
//! under `kill -9`. Unset (every real run), a failpoint costs one cached lookup.

use std::sync::OnceLock;

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
        eprintln!("correio: failpoint {name}:{c} reached, aborting");
        std::process::abort();
    }
}

/// Aborts the process if the failpoint `name` is set.
pub fn hit(name: &str) {
    hit_at(name, u64::MAX);
}
