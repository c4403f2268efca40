//! Progress lines for long work: a catch-up of a million records, a
//! snapshot sent to a follower (lesson 5, at scale).
//!
//! A catch-up that takes a minute used to log one line when it began and
//! one when it ended; in between, an operator could not tell a slow
//! transfer from a stuck one. [`Progress`] gives the line in between:
//!
//! ```text
//! [catch-up] to follower 127.0.0.1:9003: 412,000 of 1,000,000 records (41.2%), 42.1 MB, 398,000 records/s (40.7 MB/s), ETA 1.5 s
//! ```
//!
//! Rules, so that it never floods the log: nothing during the first
//! second (a short catch-up logs only its start and end lines, as before),
//! then at most one line a second. The caller logs the line with its own
//! `[component]` prefix and peer; this module only counts and formats.

use std::time::{Duration, Instant};

/// How often a line may be logged, and how long work runs before the first.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// What the work counts: records (with the bytes they took), or bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Records,
    Bytes,
}

/// One piece of long work: its size, when it began, when it last said so.
#[derive(Debug)]
pub struct Progress {
    unit: Unit,
    total: u64,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// Work of `total` units, starting now.
    pub fn new(unit: Unit, total: u64) -> Progress {
        Progress { unit, total, started: Instant::now(), last_line: None }
    }

    /// `done` units so far (and `bytes`, for records): a line if one is due.
    pub fn line(&mut self, done: u64, bytes: u64) -> Option<String> {
        let now = Instant::now();
        let since = self.last_line.unwrap_or(self.started);
        if now.duration_since(since) < LINE_INTERVAL {
            return None;
        }
        self.last_line = Some(now);
        Some(self.describe(done, bytes, now.duration_since(self.started)))
    }

    /// The line for `done` units after `elapsed` (no rate limit).
    pub fn describe(&self, done: u64, bytes: u64, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let percent = if self.total == 0 { 100.0 } else { 100.0 * done as f64 / self.total as f64 };
        let eta = match self.total.checked_sub(done) {
            Some(left) if rate > 0.0 => format!("ETA {:.1} s", left as f64 / rate),
            Some(_) => "ETA unknown".to_string(),
            None => "ETA 0 s".to_string(),
        };
        match self.unit {
            Unit::Records => format!(
                "{} of {} records ({percent:.1}%), {:.1} MB, {} records/s ({:.1} MB/s), {eta}",
                thousands(done),
                thousands(self.total),
                bytes as f64 / 1e6,
                thousands(rate as u64),
                bytes as f64 / 1e6 / secs,
            ),
            Unit::Bytes => format!(
                "{:.1} of {:.1} MB ({percent:.1}%), {:.1} MB/s, {eta}",
                done as f64 / 1e6,
                self.total as f64 / 1e6,
                done as f64 / 1e6 / secs,
            ),
        }
    }
}

/// `1234567` as `1,234,567`: large LSNs and counts, readable.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(5_000_001), "5,000,001");
    }

    #[test]
    fn a_line_names_done_total_percent_rate_and_eta() {
        let progress = Progress::new(Unit::Records, 1_000_000);
        let line = progress.describe(250_000, 25_000_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "250,000 of 1,000,000 records (25.0%), 25.0 MB, 125,000 records/s (12.5 MB/s), \
             ETA 6.0 s"
        );
        let bytes = Progress::new(Unit::Bytes, 4_000_000);
        assert_eq!(
            bytes.describe(1_000_000, 0, Duration::from_secs(1)),
            "1.0 of 4.0 MB (25.0%), 1.0 MB/s, ETA 3.0 s"
        );
    }

    #[test]
    fn nothing_in_the_first_second() {
        let mut progress = Progress::new(Unit::Records, 10);
        assert_eq!(progress.line(5, 50), None);
    }
}
