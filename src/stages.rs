//! Where the time of a durable write goes: one histogram per stage.
//!
//! A client's PUT under `--write-concern majority --fsync always` crosses
//! several threads and two machines' disks before its OK. When it is slow,
//! the total alone does not say why. So each node keeps a latency
//! histogram (microseconds, 3 significant figures) for every stage a write
//! passes through, and `kv_client status` shows their p50/p99/max:
//!
//! | stage    | measured per | from → to |
//! |----------|--------------|-----------|
//! | `queue`  | batch        | the batch's first write joins the queue → the committer takes the queue |
//! | `write`  | batch        | the WAL `write` of the batch |
//! | `fsync`  | batch        | the WAL `fsync` of the batch (none with `--fsync never`) |
//! | `send`   | batch, per follower | the batch is handed to replication → its AppendEntries is written to the follower's socket |
//! | `ack`    | batch, per follower | the batch is handed to replication → the follower's ACK covering it arrives (network both ways, the follower's write and fsync) |
//! | `wakeup` | write        | the ACK that satisfied the write concern arrives → the client's thread runs again |
//! | `total`  | write        | the leader decoded the request → the reply is ready |
//!
//! On a follower, `queue`, `write` and `fsync` are its own WAL's: the
//! follower's share of the leader's `ack`.
//!
//! ## Matching ACKs to batches
//!
//! `send` and `ack` need the moment each batch was handed over. The
//! committer notes `(last LSN of the batch, when)` in a bounded ring
//! ([`PUBLISHED_RING_BATCHES`] entries); a link that has written or seen
//! ACKed everything through LSN `n` records one sample for each noted
//! batch it had not yet counted, up to `n`. A batch that fell out of the
//! ring (a follower far behind) is simply not measured: these figures
//! describe the live stream, not a catch-up.
//!
//! Recording costs a clock read and a short uncontended lock per batch, and
//! per write for `wakeup` and `total`; the histograms never grow (HDR
//! histograms have a fixed size for a fixed range).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::Lsn;

/// Batches remembered for matching `send` and `ack` samples.
pub const PUBLISHED_RING_BATCHES: usize = 4096;

/// Largest duration recorded: one minute, in microseconds (longer is clamped).
const STAGE_US_MAX: u64 = 60_000_000;

/// One stage of a write (see the module docs for what each measures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queue,
    Write,
    Fsync,
    Send,
    Ack,
    Wakeup,
    Total,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Queue,
        Stage::Write,
        Stage::Fsync,
        Stage::Send,
        Stage::Ack,
        Stage::Wakeup,
        Stage::Total,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Write => "write",
            Stage::Fsync => "fsync",
            Stage::Send => "send",
            Stage::Ack => "ack",
            Stage::Wakeup => "wakeup",
            Stage::Total => "total",
        }
    }
}

/// A stage's figures, as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSummary {
    pub stage: String,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The histograms of one node, and the ring of recently published batches.
pub struct Stages {
    histograms: [Mutex<Histogram<u64>>; Stage::ALL.len()],
    published: Mutex<VecDeque<(Lsn, Instant)>>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages::new()
    }
}

impl Stages {
    pub fn new() -> Stages {
        let histogram = || {
            Mutex::new(
                Histogram::new_with_bounds(1, STAGE_US_MAX, 3)
                    .expect("constant histogram bounds are valid"),
            )
        };
        Stages {
            histograms: std::array::from_fn(|_| histogram()),
            published: Mutex::new(VecDeque::with_capacity(PUBLISHED_RING_BATCHES)),
        }
    }

    /// Add one sample to `stage`.
    pub fn record(&self, stage: Stage, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).clamp(1, STAGE_US_MAX);
        self.histograms[stage as usize].lock().saturating_record(us);
        crate::metrics::global().stage(stage, took);
    }

    /// The committer handed the batch ending at `last_lsn` to replication.
    pub fn published(&self, last_lsn: Lsn, at: Instant) {
        let mut ring = self.published.lock();
        if ring.len() == PUBLISHED_RING_BATCHES {
            ring.pop_front();
        }
        ring.push_back((last_lsn, at));
    }

    /// A link has now done `stage` (`Send` or `Ack`) for every batch through
    /// `through`, and had already counted those through `counted`: one sample
    /// per batch in between. Returns the new `counted`.
    pub fn reached(&self, stage: Stage, counted: Lsn, through: Lsn) -> Lsn {
        if through <= counted {
            return counted;
        }
        let now = Instant::now();
        let times: Vec<Instant> = {
            let ring = self.published.lock();
            let from = ring.partition_point(|&(lsn, _)| lsn <= counted);
            let to = ring.partition_point(|&(lsn, _)| lsn <= through);
            ring.range(from..to).map(|&(_, at)| at).collect()
        };
        let mut histogram = self.histograms[stage as usize].lock();
        for at in times {
            let took = now.saturating_duration_since(at);
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).clamp(1, STAGE_US_MAX);
            histogram.saturating_record(us);
            crate::metrics::global().stage(stage, took);
        }
        through
    }

    /// Every stage that has samples, in the order of [`Stage::ALL`].
    pub fn summaries(&self) -> Vec<StageSummary> {
        Stage::ALL
            .iter()
            .filter_map(|&stage| {
                let h = self.histograms[stage as usize].lock();
                (!h.is_empty()).then(|| StageSummary {
                    stage: stage.name().into(),
                    count: h.len(),
                    p50_us: h.value_at_quantile(0.50),
                    p99_us: h.value_at_quantile(0.99),
                    max_us: h.max(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_published_batch_is_counted_once_per_link() {
        let stages = Stages::new();
        let t0 = Instant::now();
        for last in [3, 5, 9] {
            stages.published(last, t0);
        }
        let counted = stages.reached(Stage::Ack, 0, 5);
        assert_eq!(counted, 5);
        assert_eq!(stages.reached(Stage::Ack, counted, 5), 5, "nothing new");
        stages.reached(Stage::Ack, 5, 100);
        let ack = &stages.summaries()[0];
        assert_eq!((ack.stage.as_str(), ack.count), ("ack", 3));
    }

    #[test]
    fn only_stages_with_samples_are_reported() {
        let stages = Stages::new();
        assert!(stages.summaries().is_empty());
        stages.record(Stage::Fsync, Duration::from_micros(250));
        stages.record(Stage::Fsync, Duration::from_micros(250));
        let fsync = &stages.summaries()[0];
        assert_eq!((fsync.stage.as_str(), fsync.count), ("fsync", 2));
        assert!((249..=251).contains(&fsync.p50_us));
    }

    #[test]
    fn the_ring_is_bounded() {
        let stages = Stages::new();
        let t0 = Instant::now();
        for last in 1..=(PUBLISHED_RING_BATCHES as u64 + 10) {
            stages.published(last, t0);
        }
        stages.reached(Stage::Send, 0, u64::MAX);
        assert_eq!(stages.summaries()[0].count, PUBLISHED_RING_BATCHES as u64);
    }
}
