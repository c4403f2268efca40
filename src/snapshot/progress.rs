//! Progress lines for long transfers: at most one a second, each with the
//! bytes so far, the percentage, the rate and the time left, e.g.
//!
//! ```text
//! [catch-up] sending snapshot to follower 127.0.0.1:9003: 48.2 MB of 120.5 MB (40%), 61.3 MB/s, 1.2 s left
//! ```

use std::time::{Duration, Instant};

use crate::logline::bytes;

/// How often a progress line is logged at most.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The progress of one transfer of `total` bytes.
pub struct Progress {
    what: String,
    total: u64,
    started: Instant,
    /// Bytes there were when the transfer (re)started: a resumed transfer's
    /// rate counts only what moved since.
    from: u64,
    last_line: Instant,
}

impl Progress {
    /// Start a transfer of `total` bytes, of which `from` are already done;
    /// `what` begins each line (`[catch-up] sending snapshot to ...`).
    pub fn new(what: String, total: u64, from: u64) -> Progress {
        let now = Instant::now();
        Progress { what, total, started: now, from, last_line: now }
    }

    /// `done` bytes are through: log a line if one is due.
    pub fn note(&mut self, done: u64) {
        if self.last_line.elapsed() < PROGRESS_INTERVAL || done >= self.total {
            return;
        }
        self.last_line = Instant::now();
        log::info!("{}", self.line(done));
    }

    /// The line for `done` bytes through.
    pub fn line(&self, done: u64) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done.saturating_sub(self.from) as f64 / elapsed;
        let percent = (done * 100).checked_div(self.total).unwrap_or(100);
        let left = if rate > 0.0 {
            format!("{:.1} s left", self.total.saturating_sub(done) as f64 / rate)
        } else {
            "time left unknown".into()
        };
        format!(
            "{}: {} of {} ({percent}%), {}/s, {left}",
            self.what,
            bytes(done),
            bytes(self.total),
            bytes(rate as u64)
        )
    }

    /// Rate over the whole transfer so far, in bytes a second.
    pub fn rate(&self, done: u64) -> u64 {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        (done.saturating_sub(self.from) as f64 / elapsed) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_bytes_percent_rate_and_time_left() {
        let p = Progress::new("[catch-up] sending snapshot".into(), 10_000_000, 0);
        let line = p.line(2_500_000);
        assert!(
            line.starts_with("[catch-up] sending snapshot: 2.5 MB of 10.0 MB (25%), "),
            "{line}"
        );
        assert!(line.contains("/s, ") && line.ends_with(" s left"), "{line}");
    }
}
