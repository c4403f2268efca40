//! The write-ahead log (week 9) and its memory-mapped LSN index (lesson 5),
//! kept as a sequence of segment files so that old records can be deleted
//! once a snapshot holds them (`docs/STORAGE.md`).
//!
//! - [`record`]: one change and its bytes (the lesson layout).
//! - [`segment`]: one segment file — its header, its entries, reading it
//!   back after a crash.
//! - [`log`]: the log over its segments — append, roll, fsync, recovery,
//!   truncation, compaction, `records_after`.
//! - [`index`]: per segment, a memory-mapped array of byte offsets, one
//!   slot per LSN, so `records_after(lsn)` jumps straight to its record.
//! - [`terms`]: the term history, term → first LSN, for the log-matching
//!   check of AppendEntries.
//! - [`upgrade`]: the single `wal.log` of formats 1 and 2, and its upgrade
//!   in place to segments.
//!
//! Nothing outside this module touches file offsets or the index.

pub mod index;
pub mod log;
pub mod record;
pub mod segment;
pub mod terms;
pub mod upgrade;

pub use log::{
    prepare_dir, scan_dir, Base, PreparedDir, SegmentInfo, Visit, Wal, WalOptions, WalRecovery,
    WAL_DIR_NAME,
};
pub use record::{Op, Record};
pub use segment::{ScanEnd, WAL_FORMAT_VERSION};
pub use terms::TermHistory;
