//! The memory-mapped index of one WAL segment: LSN → byte offset (lesson 5).
//!
//! Catch-up asks "give me every record after LSN n". Scanning the log from
//! the start for that is O(log size); the index makes it O(1): each
//! segment `wal/F.seg` has an index `wal/F.idx` whose slot `k` holds the
//! byte offset, inside that segment, of the record with LSN `F + k`. A
//! sender finds the segment holding LSN n with one binary search over the
//! list of segments kept in memory (a few dozen entries), reads one slot,
//! and then reads the segment sequentially from there.
//!
//! Why one index per segment, not one index with a base LSN: a segment
//! and its index are created together and deleted together when the log
//! is compacted, so the index never needs rewriting to drop its head, and
//! its size is bounded by its segment's. (One index with a base LSN would
//! have to be rewritten, or hole-punched, at every compaction.)
//!
//! ## Layout of `wal/F.idx`
//!
//! ```text
//! [magic "KVSEGIX1" 8 bytes][first_lsn u64]          16-byte header
//! [offset of LSN F u64][offset of LSN F+1 u64]...     one 8-byte slot per LSN, big-endian
//! ```
//!
//! `first_lsn` is the segment's: an index found next to a segment it was
//! not made for is simply rebuilt. The file starts with room for
//! [`initial_slots`] slots and doubles (by at most [`INDEX_GROW_SLOTS`] at
//! a time) when full; it is mapped with `memmap2`, so writing a slot is a
//! store into memory and the kernel writes the page back on its own. The
//! index is never fsynced: **the WAL is the source of truth**. At start-up
//! every slot is checked against the offsets found while reading the
//! segment, so a missing, short, stale or foreign index is rebuilt (and
//! that is logged).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::limits::INDEX_GROW_SLOTS;
use crate::Lsn;

const MAGIC: &[u8; 8] = b"KVSEGIX1";
/// Bytes of the header: magic 8 + first_lsn 8.
pub const INDEX_HEADER_BYTES: u64 = 16;
const SLOT_BYTES: u64 = 8;

/// Fewest slots an index starts with: 1,024 slots are 8 KiB.
const INITIAL_SLOTS_MIN: u64 = 1024;

/// Slots a new index starts with for segments of `segment_bytes`: one per
/// 64 bytes of segment (a small record's entry is about that long), so
/// that most segments never grow their index; capped at one growth step.
pub fn initial_slots(segment_bytes: u64) -> u64 {
    (segment_bytes / 64).clamp(INITIAL_SLOTS_MIN, INDEX_GROW_SLOTS)
}

/// The index of one segment, mapped into memory.
pub struct SegmentIndex {
    path: PathBuf,
    file: File,
    map: MmapMut,
    first_lsn: Lsn,
    slots_capacity: u64,
}

/// What opening the index found, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOpened {
    /// The file existed with a valid header for this segment.
    Existing,
    /// The file was missing or had a bad or foreign header; it starts empty.
    Created,
}

impl SegmentIndex {
    /// Open (or create) the index at `path` of the segment whose first
    /// record is `first_lsn`.
    pub fn open(
        path: &Path,
        first_lsn: Lsn,
        initial_slots: u64,
    ) -> Result<(SegmentIndex, IndexOpened)> {
        assert!(first_lsn > 0, "a segment's first LSN is 1 or more");
        let ctx = |what: &str| format!("{what} WAL index {}", path.display());
        let file = crate::datadir::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(ctx("opening"), e))?;
        let len = file.metadata().map_err(|e| Error::io(ctx("reading size of"), e))?.len();
        let mut header_ok = len >= INDEX_HEADER_BYTES;
        if header_ok {
            let mut header = [0u8; INDEX_HEADER_BYTES as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0)
                .map_err(|e| Error::io(ctx("reading"), e))?;
            header_ok = &header[..8] == MAGIC && header[8..] == first_lsn.to_be_bytes();
        }
        if !header_ok {
            file.set_len(0).map_err(|e| Error::io(ctx("resetting"), e))?;
        }
        let existing = if header_ok { (len - INDEX_HEADER_BYTES) / SLOT_BYTES } else { 0 };
        let slots_capacity = existing.max(initial_slots.max(1));
        let file_len = INDEX_HEADER_BYTES + slots_capacity * SLOT_BYTES;
        file.set_len(file_len).map_err(|e| Error::io(ctx("sizing"), e))?;
        let map = map(&file, path)?;
        let mut index =
            SegmentIndex { path: path.to_path_buf(), file, map, first_lsn, slots_capacity };
        index.map[..8].copy_from_slice(MAGIC);
        index.map[8..16].copy_from_slice(&first_lsn.to_be_bytes());
        let opened = if header_ok { IndexOpened::Existing } else { IndexOpened::Created };
        Ok((index, opened))
    }

    /// The byte offset of the record with LSN `lsn`, if its slot exists.
    /// Callers only ask for LSNs the segment has written.
    pub fn get(&self, lsn: Lsn) -> Option<u64> {
        let slot = lsn.checked_sub(self.first_lsn)?;
        if slot >= self.slots_capacity {
            return None;
        }
        let at = slot_at(slot);
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.map[at..at + 8]);
        Some(u64::from_be_bytes(bytes))
    }

    /// Record that LSN `lsn` starts at byte `offset`, growing the file if needed.
    pub fn set(&mut self, lsn: Lsn, offset: u64) -> Result<()> {
        assert!(lsn >= self.first_lsn, "LSN {lsn} is before its segment ({})", self.first_lsn);
        let slot = lsn - self.first_lsn;
        if slot >= self.slots_capacity {
            self.grow(slot + 1)?;
        }
        let at = slot_at(slot);
        self.map[at..at + 8].copy_from_slice(&offset.to_be_bytes());
        Ok(())
    }

    /// Double the capacity (at least to `slots_needed`), by at most
    /// [`INDEX_GROW_SLOTS`] beyond what is needed.
    fn grow(&mut self, slots_needed: u64) -> Result<()> {
        let doubled = (self.slots_capacity * 2).max(slots_needed);
        let slots = doubled.min(slots_needed.div_ceil(INDEX_GROW_SLOTS) * INDEX_GROW_SLOTS);
        let ctx = format!("growing WAL index {}", self.path.display());
        let len = INDEX_HEADER_BYTES + slots * SLOT_BYTES;
        self.file.set_len(len).map_err(|e| Error::io(&ctx, e))?;
        self.map = map(&self.file, &self.path)?;
        self.slots_capacity = slots;
        Ok(())
    }
}

fn slot_at(slot: u64) -> usize {
    (INDEX_HEADER_BYTES + slot * SLOT_BYTES) as usize
}

fn map(file: &File, path: &Path) -> Result<MmapMut> {
    // SAFETY: the index file lives in the server's own data directory, which
    // is locked against a second server; nothing else writes it while mapped.
    unsafe { MmapMut::map_mut(file) }
        .map_err(|e| Error::io(format!("mapping WAL index {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_survive_reopen_and_growth() {
        // Goal: offsets written before a remap and before a reopen read back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000101.idx");
        let (mut index, opened) = SegmentIndex::open(&path, 101, 16).unwrap();
        assert_eq!(opened, IndexOpened::Created);
        index.set(101, 32).unwrap();
        index.set(102, 72).unwrap();
        index.set(101 + 5000, 999).unwrap();
        drop(index);
        let (index, opened) = SegmentIndex::open(&path, 101, 16).unwrap();
        assert_eq!(opened, IndexOpened::Existing);
        assert_eq!(index.get(102), Some(72));
        assert_eq!(index.get(5101), Some(999));
        assert_eq!(index.get(100), None, "before the segment");
        assert_eq!(index.get(0), None);
    }

    #[test]
    fn foreign_or_other_segments_file_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.idx");
        std::fs::write(&path, b"not an index at all").unwrap();
        let (mut index, opened) = SegmentIndex::open(&path, 1, 16).unwrap();
        assert_eq!(opened, IndexOpened::Created);
        index.set(1, 32).unwrap();
        drop(index);
        let (_, opened) = SegmentIndex::open(&path, 7, 16).unwrap();
        assert_eq!(opened, IndexOpened::Created, "an index made for another segment");
    }

    #[test]
    fn small_segments_get_small_indexes() {
        assert_eq!(initial_slots(64 * 1024), 1024);
        assert_eq!(initial_slots(64 * 1024 * 1024), INDEX_GROW_SLOTS);
    }
}
