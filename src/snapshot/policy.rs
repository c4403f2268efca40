//! When to take a snapshot, and which WAL segments compaction may delete:
//! plain functions of a few numbers, so each rule can be tested alone.
//!
//! ## When a snapshot is taken
//!
//! When the WAL written since the last snapshot exceeds
//! `--snapshot-after-bytes`; by default that is the larger of 64 MiB and
//! twice the live data (the bytes of every key and value in the map), as
//! Redis rewrites its AOF when it has grown by a percentage of its last
//! size: replaying the log then never costs much more than loading the
//! snapshot would. And on demand (`kv_client snapshot`, like `BGSAVE`).
//!
//! ## What compaction deletes
//!
//! After a snapshot at LSN S, a segment whose records are all at or below
//! S is no longer needed to restart. It is still kept if:
//!
//! 1. it is among the newest segments that make up `--wal-retain-bytes`
//!    (default 256 MiB, like PostgreSQL's `wal_keep_size` and Redis's
//!    `repl-backlog-size`): a follower a little behind catches up from the
//!    log, which is far cheaper than a whole snapshot;
//! 2. a follower that is connected, or was seen in the last
//!    `--follower-retain-secs` (default 300), still needs it: the segments
//!    from the one holding its acked LSN + 1 are kept (a replication slot,
//!    in PostgreSQL's words) — but never more than `--wal-retain-max-bytes`
//!    (default 1 GiB; PostgreSQL's `max_slot_wal_keep_size`), so a follower
//!    that died for good cannot fill the disk. A follower whose needs were
//!    cut off gets a snapshot when it returns.
//!
//! The segment being appended to is never deleted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::limits::{
    FOLLOWER_RETAIN_SECS_DEFAULT, SNAPSHOT_AFTER_BYTES_FLOOR, WAL_RETAIN_BYTES_DEFAULT,
    WAL_RETAIN_MAX_BYTES_DEFAULT,
};
use crate::wal::{SegmentInfo, WalOptions};
use crate::Lsn;

/// How a node keeps its data on disk: the WAL's segments, when it takes
/// snapshots and what compaction keeps (`docs/STORAGE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// `--wal-segment-bytes`.
    pub wal: WalOptions,
    /// `--snapshot-after-bytes`; `None`: max(64 MiB, 2 × live data).
    pub snapshot_after_bytes: Option<u64>,
    /// `--wal-retain-bytes`.
    pub wal_retain_bytes: u64,
    /// `--wal-retain-max-bytes`.
    pub wal_retain_max_bytes: u64,
    /// `--follower-retain-secs`.
    pub follower_retain: Duration,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions {
            wal: WalOptions::default(),
            snapshot_after_bytes: None,
            wal_retain_bytes: WAL_RETAIN_BYTES_DEFAULT,
            wal_retain_max_bytes: WAL_RETAIN_MAX_BYTES_DEFAULT,
            follower_retain: Duration::from_secs(FOLLOWER_RETAIN_SECS_DEFAULT),
        }
    }
}

impl StorageOptions {
    /// WAL bytes after the last snapshot that call for the next one, for a
    /// map holding `live_bytes`.
    pub fn snapshot_threshold(&self, live_bytes: u64) -> u64 {
        self.snapshot_after_bytes
            .unwrap_or_else(|| SNAPSHOT_AFTER_BYTES_FLOOR.max(live_bytes.saturating_mul(2)))
    }
}

/// The first LSN of the oldest segment that must stay so that the newest
/// segments hold at least `bytes` (all of them if they hold less).
pub fn first_lsn_keeping(segments: &[SegmentInfo], bytes: u64) -> Lsn {
    let mut kept = 0u64;
    for segment in segments.iter().rev() {
        kept += segment.bytes;
        if kept >= bytes {
            return segment.first_lsn;
        }
    }
    segments.first().map_or(1, |s| s.first_lsn)
}

/// Compaction: segments whose records are all at or below the returned
/// LSN may be deleted, after a snapshot at `snapshot_lsn`, given the first
/// LSN each live follower still needs (see the module doc).
pub fn compaction_through(
    snapshot_lsn: Lsn,
    segments: &[SegmentInfo],
    follower_needs: &[Lsn],
    options: &StorageOptions,
) -> Lsn {
    let mut through = snapshot_lsn;
    // 1. The newest --wal-retain-bytes stay.
    through = through.min(first_lsn_keeping(segments, options.wal_retain_bytes).saturating_sub(1));
    // 2. What live followers need, up to --wal-retain-max-bytes each.
    let cap = first_lsn_keeping(segments, options.wal_retain_max_bytes);
    for &needs in follower_needs {
        through = through.min(needs.max(cap).saturating_sub(1));
    }
    through
}

/// Bytes a follower needing records from `needs` holds back: the segments
/// from the one holding `needs` on, at most `--wal-retain-max-bytes`.
pub fn pinned_bytes(segments: &[SegmentInfo], needs: Lsn, options: &StorageOptions) -> u64 {
    let bytes: u64 = segments.iter().filter(|s| s.last_lsn >= needs).map(|s| s.bytes).sum();
    bytes.min(options.wal_retain_max_bytes)
}

/// The followers a leader has seen: the first LSN each still needs, and
/// when it was last heard from. It outlives a leadership (a hub lasts one
/// term), so a follower that was away during a change of term still
/// counts; it does not outlive the process.
#[derive(Debug, Default)]
pub struct FollowerPins {
    pins: HashMap<SocketAddr, (Lsn, Instant)>,
}

impl FollowerPins {
    /// `follower` acknowledged everything up to `acked_lsn` (or, during a
    /// snapshot install, will continue after it).
    pub fn note(&mut self, follower: SocketAddr, acked_lsn: Lsn, now: Instant) {
        self.pins.insert(follower, (acked_lsn + 1, now));
    }

    /// Forget followers not heard from within `retain`; return the first
    /// LSN each of the others needs, by address.
    pub fn live(&mut self, now: Instant, retain: Duration) -> Vec<(SocketAddr, Lsn)> {
        self.pins.retain(|_, (_, seen)| now.saturating_duration_since(*seen) <= retain);
        let mut live: Vec<(SocketAddr, Lsn)> =
            self.pins.iter().map(|(a, (n, _))| (*a, *n)).collect();
        live.sort();
        live
    }

    /// The first LSN `follower` needs, if it is live.
    pub fn needs(&self, follower: SocketAddr) -> Option<Lsn> {
        self.pins.get(&follower).map(|(needs, _)| *needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten segments of 100 bytes: LSN 1..10, 11..20, ..., 91..100.
    fn segments() -> Vec<SegmentInfo> {
        (0..10)
            .map(|i| SegmentInfo {
                name: format!("{}", i * 10 + 1),
                first_lsn: i * 10 + 1,
                last_lsn: i * 10 + 10,
                bytes: 100,
            })
            .collect()
    }

    fn options(retain: u64, retain_max: u64) -> StorageOptions {
        StorageOptions {
            wal_retain_bytes: retain,
            wal_retain_max_bytes: retain_max,
            ..StorageOptions::default()
        }
    }

    #[test]
    fn the_snapshot_bounds_what_goes() {
        // Nothing retained beyond the snapshot: segments through LSN 50.
        assert_eq!(compaction_through(55, &segments(), &[], &options(0, 1000)), 55);
        assert_eq!(compaction_through(0, &segments(), &[], &options(0, 1000)), 0);
    }

    #[test]
    fn the_newest_retain_bytes_stay() {
        // 250 bytes: the newest three segments (71..100) stay.
        assert_eq!(compaction_through(95, &segments(), &[], &options(250, 1000)), 70);
        // More than the whole log: everything stays.
        assert_eq!(compaction_through(95, &segments(), &[], &options(5000, 9000)), 0);
    }

    #[test]
    fn a_live_follower_pins_from_its_acked_lsn_up_to_the_cap() {
        // A follower needing LSN 34 on keeps 31..; with a 300-byte cap it
        // keeps only 71.., and another needing 85 keeps 81...
        assert_eq!(compaction_through(95, &segments(), &[34], &options(0, 1000)), 33);
        assert_eq!(compaction_through(95, &segments(), &[34], &options(0, 300)), 70);
        assert_eq!(compaction_through(95, &segments(), &[85], &options(0, 1000)), 84);
        assert_eq!(pinned_bytes(&segments(), 34, &options(0, 1000)), 700);
        assert_eq!(pinned_bytes(&segments(), 34, &options(0, 300)), 300);
    }

    #[test]
    fn followers_unheard_for_too_long_stop_pinning() {
        let mut pins = FollowerPins::default();
        let start = Instant::now();
        let (a, b) = ("127.0.0.1:9002".parse().unwrap(), "127.0.0.1:9003".parse().unwrap());
        pins.note(a, 10, start);
        pins.note(b, 20, start + Duration::from_secs(200));
        let later = start + Duration::from_secs(400);
        assert_eq!(pins.live(later, Duration::from_secs(300)), vec![(b, 21)]);
        assert_eq!((pins.needs(a), pins.needs(b)), (None, Some(21)));
    }

    #[test]
    fn the_default_threshold_follows_the_live_data() {
        let o = StorageOptions::default();
        assert_eq!(o.snapshot_threshold(1000), 64 * 1024 * 1024);
        assert_eq!(o.snapshot_threshold(100 << 20), 200 << 20);
        let fixed = StorageOptions { snapshot_after_bytes: Some(4096), ..o };
        assert_eq!(fixed.snapshot_threshold(100 << 20), 4096);
    }
}
