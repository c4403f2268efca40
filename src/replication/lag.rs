//! Replication lag, from the leader's ACK bookkeeping (lesson 4).
//!
//! For every write the leader acknowledges it notes `(lsn, when)`. When the
//! ACKs show that *every* expected follower holds an LSN, each noted write
//! up to it is done: `now - when` is how long that write took to reach the
//! whole cluster after the client heard OK. The samples go into an
//! HDR histogram (microseconds), which `status` summarises as p50/p99/max —
//! the figure PostgreSQL's `pg_stat_replication` calls `replay_lag`.
//!
//! Memory is bounded: at most [`PENDING_WRITES_MAX`] writes wait to be
//! matched; older ones are forgotten (while a follower is down, say).

use std::collections::VecDeque;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::Lsn;

/// Most acknowledged writes remembered while waiting for every follower (1 Mi).
pub const PENDING_WRITES_MAX: usize = 1 << 20;

/// Largest lag the histogram records: one hour, in microseconds.
const LAG_US_MAX: u64 = 3_600_000_000;

/// The summary `status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagSummary {
    /// Writes measured since the leader started.
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Pending writes and the lag histogram.
pub struct LagTracker {
    pending: VecDeque<(Lsn, Instant)>,
    histogram: Histogram<u64>,
}

impl Default for LagTracker {
    fn default() -> Self {
        LagTracker::new()
    }
}

impl LagTracker {
    pub fn new() -> LagTracker {
        let histogram = Histogram::new_with_bounds(1, LAG_US_MAX, 3)
            .expect("constant histogram bounds are valid");
        LagTracker { pending: VecDeque::new(), histogram }
    }

    /// The leader acknowledged the write at `lsn` at `at`.
    pub fn acknowledged(&mut self, lsn: Lsn, at: Instant) {
        if self.pending.len() == PENDING_WRITES_MAX {
            self.pending.pop_front();
        }
        // Writes are acknowledged nearly in LSN order; keep the queue sorted
        // by inserting the rare late one in place.
        let at_index = self.pending.iter().rposition(|(l, _)| *l < lsn).map_or(0, |i| i + 1);
        self.pending.insert(at_index, (lsn, at));
    }

    /// Every expected follower now holds everything up to `lsn`.
    pub fn all_followers_hold(&mut self, lsn: Lsn, now: Instant) {
        while let Some(&(pending_lsn, at)) = self.pending.front() {
            if pending_lsn > lsn {
                break;
            }
            let lag_us = now.saturating_duration_since(at).as_micros() as u64;
            self.histogram.saturating_record(lag_us.clamp(1, LAG_US_MAX));
            self.pending.pop_front();
        }
    }

    pub fn summary(&self) -> Option<LagSummary> {
        let h = &self.histogram;
        (!h.is_empty()).then(|| LagSummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_are_measured_once_every_follower_holds_them() {
        let mut lag = LagTracker::new();
        let t0 = Instant::now();
        lag.acknowledged(1, t0);
        lag.acknowledged(3, t0);
        lag.acknowledged(2, t0); // late, inserted in order
        lag.all_followers_hold(2, t0 + Duration::from_millis(5));
        let s = lag.summary().unwrap();
        assert_eq!(s.count, 2);
        assert!((4_900..=5_100).contains(&s.p50_us), "{s:?}");
        lag.all_followers_hold(3, t0 + Duration::from_millis(9));
        assert_eq!(lag.summary().unwrap().count, 3);
    }
}
