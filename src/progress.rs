//! Progress lines for long work: a catch-up of a million records, a
//! snapshot sent to a follower (lesson 5, at scale).
//!
//! A catch-up that takes a minute used to log one line when it began and
//! one when it ended; in between, an operator could not tell a slow
//! transfer from a stuck one. [`Progress`] gives the lines in between:
//!
//! ```text
//! [catch-up] to follower 127.0.0.1:9003: 412,000 of 1,000,000 records (41.2%), 42.1 MB, 398,000 records/s (40.7 MB/s), ETA 1.5 s
//! [catch-up] sending snapshot at LSN 5,000,000 to follower 127.0.0.1:9003: 48.2 MB of 120.5 MB (40.0%), 61.3 MB/s, ETA 1.2 s
//! ```
//!
//! Rules, so that it never floods the log: nothing during the first
//! second (a short catch-up logs only its start and end lines), then at
//! most one line a second, and none once the work is done (its end line
//! says that). A transfer that resumes after a cut counts its rate from
//! what it already had.

use std::time::{Duration, Instant};

use crate::logline::{bytes, count};

/// How often a line may be logged, and how long work runs before the first.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// What the work counts: records (with the bytes they took), or bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Records,
    Bytes,
}

/// One piece of long work: what it is, its size, when it began and when
/// it last said how far it was.
#[derive(Debug)]
pub struct Progress {
    /// The start of each line, e.g. `[catch-up] to follower 127.0.0.1:9003`.
    what: String,
    unit: Unit,
    total: u64,
    /// Units already done when the work (re)started.
    from: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Work of `total` units, starting now from nothing.
    pub fn new(what: String, unit: Unit, total: u64) -> Progress {
        Progress::resumed(what, unit, total, 0)
    }

    /// Work of `total` units of which `from` are already done (a resumed
    /// transfer), starting now.
    pub fn resumed(what: String, unit: Unit, total: u64, from: u64) -> Progress {
        let now = Instant::now();
        Progress { what, unit, total, from, started: now, last_line: now }
    }

    /// `done` units so far (and `bytes` they took, for records): log a line
    /// at `info` if one is due.
    pub fn note(&mut self, done: u64, bytes: u64) {
        if self.last_line.elapsed() < LINE_INTERVAL || done >= self.total {
            return;
        }
        self.last_line = Instant::now();
        log::info!("{}: {}", self.what, self.line(done, bytes, self.started.elapsed()));
    }

    /// Units a second since the work (re)started.
    pub fn rate(&self, done: u64) -> u64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (done.saturating_sub(self.from) as f64 / secs) as u64
    }

    /// The line for `done` units after `elapsed` (no rate limit, no prefix).
    pub fn line(&self, done: u64, moved_bytes: u64, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = done.saturating_sub(self.from) as f64 / secs;
        let percent = if self.total == 0 { 100.0 } else { 100.0 * done as f64 / self.total as f64 };
        let eta = match self.total.checked_sub(done) {
            Some(left) if rate > 0.0 => format!("ETA {:.1} s", left as f64 / rate),
            Some(_) => "ETA unknown".to_string(),
            None => "ETA 0 s".to_string(),
        };
        match self.unit {
            Unit::Records => format!(
                "{} of {} records ({percent:.1}%), {}, {} records/s ({}/s), {eta}",
                count(done),
                count(self.total),
                bytes(moved_bytes),
                count(rate as u64),
                bytes((moved_bytes as f64 / secs) as u64),
            ),
            Unit::Bytes => format!(
                "{} of {} ({percent:.1}%), {}/s, {eta}",
                bytes(done),
                bytes(self.total),
                bytes(rate as u64),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_done_total_percent_rate_and_eta() {
        let progress = Progress::new("catch-up".into(), Unit::Records, 1_000_000);
        let line = progress.line(250_000, 25_000_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "250,000 of 1,000,000 records (25.0%), 25.0 MB, 125,000 records/s (12.5 MB/s), \
             ETA 6.0 s"
        );
        let transfer = Progress::new("snapshot".into(), Unit::Bytes, 4_000_000);
        assert_eq!(
            transfer.line(1_000_000, 0, Duration::from_secs(1)),
            "1.0 MB of 4.0 MB (25.0%), 1.0 MB/s, ETA 3.0 s"
        );
    }

    #[test]
    fn a_resumed_transfer_counts_its_rate_from_where_it_resumed() {
        let transfer = Progress::resumed("snapshot".into(), Unit::Bytes, 4_000_000, 2_000_000);
        assert_eq!(
            transfer.line(3_000_000, 0, Duration::from_secs(1)),
            "3.0 MB of 4.0 MB (75.0%), 1.0 MB/s, ETA 1.0 s"
        );
    }
}
