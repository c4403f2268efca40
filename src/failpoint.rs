//! Failpoints: named places where a test can make the process die.
//!
//! A crash test must kill a node *inside* an operation (between the
//! `ftruncate` and the fsync of a divergence repair, say, or halfway
//! through writing a snapshot), which no signal sent from outside can aim
//! at. So such places call [`hit`] with a name; when the environment
//! variable `KVSTORE_FAILPOINT` names it, the process logs one line and
//! aborts on the spot, exactly like a power cut as far as the process is
//! concerned. `KVSTORE_FAILPOINT=name@N` aborts at the N-th hit instead of
//! the first (a crash test picks N at random, from a seed it prints).
//! Unset (always, in production), a hit costs one load of a cached value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms one failpoint.
pub const FAILPOINT_ENV: &str = "KVSTORE_FAILPOINT";

/// Abort the process here if `KVSTORE_FAILPOINT` is `name` (or `name@N`
/// and this is the N-th hit).
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| std::env::var(FAILPOINT_ENV).ok().map(|v| parse(&v)));
    let Some((armed, at)) = armed else { return };
    if armed != name {
        return;
    }
    let hits = HITS.fetch_add(1, Ordering::AcqRel) + 1;
    if hits == *at {
        log::error!(
            "[failpoint] {name} (hit {hits}): aborting the process as {FAILPOINT_ENV} asks"
        );
        std::process::abort();
    }
}

/// `name` or `name@N` → `(name, N)`, N = 1 if absent or not a number.
fn parse(value: &str) -> (String, u64) {
    match value.rsplit_once('@') {
        Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1).max(1)),
        None => (value.to_string(), 1),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failpoint_names_a_place_and_a_hit() {
        assert_eq!(super::parse("snapshot-chunk@7"), ("snapshot-chunk".to_string(), 7));
        assert_eq!(super::parse("truncate-before-cut"), ("truncate-before-cut".to_string(), 1));
        assert_eq!(super::parse("x@0"), ("x".to_string(), 1));
    }
}
