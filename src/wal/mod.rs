//! The write-ahead log (week 9) and its memory-mapped LSN index (lesson 5).
//!
//! - [`record`]: one change and its bytes (the lesson layout).
//! - [`log`]: the log file — append, fsync, crash recovery, `records_after`.
//! - [`index`]: a memory-mapped array of byte offsets, one slot per LSN, so
//!   `records_after(lsn)` jumps straight to its first record.
//! - [`terms`]: the term history, term → first LSN, for the log-matching
//!   check of AppendEntries.
//!
//! Nothing outside this module touches file offsets or the index.

pub mod index;
pub mod log;
pub mod record;
pub mod terms;

pub use log::{
    scan_log, Scan, ScanEnd, Wal, WalRecovery, INDEX_FILE_NAME, LOG_FILE_NAME, WAL_FORMAT_VERSION,
};
pub use record::{Op, Record};
pub use terms::TermHistory;
