//! The memory-mapped WAL index: LSN → byte offset in `wal.log` (lesson 5).
//!
//! Catch-up asks "give me every record after LSN n". Scanning the log from
//! the start for that is O(log size); the index makes it O(1): slot `n`
//! holds the byte offset of the record with LSN `n`, so a sender reads one
//! slot and then reads the log sequentially from there.
//!
//! ## Layout of `wal.idx`
//!
//! ```text
//! [magic "KVWALIX1" 8 bytes][reserved u64 = 0]      16-byte header
//! [offset of LSN 1 u64][offset of LSN 2 u64]...     one 8-byte slot per LSN, big-endian
//! ```
//!
//! The file is grown in steps of [`INDEX_GROW_SLOTS`] and mapped with
//! `memmap2`; writing a slot is a store into memory, and the kernel writes
//! the page back on its own. The index is never fsynced: **the WAL is the
//! source of truth**. At start-up every slot is checked against the offsets
//! found while replaying the log, so a missing, short, stale or foreign index
//! is simply rebuilt (and that is logged).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::limits::INDEX_GROW_SLOTS;
use crate::Lsn;

const MAGIC: &[u8; 8] = b"KVWALIX1";
const HEADER_BYTES: u64 = 16;
const SLOT_BYTES: u64 = 8;

/// The index file, mapped into memory.
pub struct WalIndex {
    path: PathBuf,
    file: File,
    map: MmapMut,
    slots_capacity: u64,
}

/// What opening the index found, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOpened {
    /// The file existed with a valid header.
    Existing,
    /// The file was missing or had a bad header; it starts empty.
    Created,
}

impl WalIndex {
    /// Open (or create) the index at `path`.
    pub fn open(path: &Path) -> Result<(WalIndex, IndexOpened)> {
        let ctx = |what: &str| format!("{what} WAL index {}", path.display());
        let file = crate::datadir::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(ctx("opening"), e))?;
        let len = file.metadata().map_err(|e| Error::io(ctx("reading size of"), e))?.len();
        let mut header_ok = len >= HEADER_BYTES;
        if header_ok {
            let mut magic = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0)
                .map_err(|e| Error::io(ctx("reading"), e))?;
            header_ok = &magic == MAGIC;
        }
        if !header_ok {
            file.set_len(0).map_err(|e| Error::io(ctx("resetting"), e))?;
        }
        let slots_capacity = if header_ok { (len - HEADER_BYTES) / SLOT_BYTES } else { 0 };
        let file_len = HEADER_BYTES + slots_capacity.max(INDEX_GROW_SLOTS) * SLOT_BYTES;
        file.set_len(file_len).map_err(|e| Error::io(ctx("sizing"), e))?;
        let map = map(&file, path)?;
        let mut index = WalIndex {
            path: path.to_path_buf(),
            file,
            map,
            slots_capacity: slots_capacity.max(INDEX_GROW_SLOTS),
        };
        index.map[..8].copy_from_slice(MAGIC);
        let opened = if header_ok { IndexOpened::Existing } else { IndexOpened::Created };
        Ok((index, opened))
    }

    /// The byte offset of the record with LSN `lsn`, if its slot exists.
    /// Callers only ask for LSNs the log has written.
    pub fn get(&self, lsn: Lsn) -> Option<u64> {
        if lsn == 0 || lsn > self.slots_capacity {
            return None;
        }
        let at = slot_at(lsn);
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.map[at..at + 8]);
        Some(u64::from_be_bytes(bytes))
    }

    /// Record that LSN `lsn` starts at byte `offset`, growing the file if needed.
    pub fn set(&mut self, lsn: Lsn, offset: u64) -> Result<()> {
        assert!(lsn > 0, "LSN 0 has no slot");
        if lsn > self.slots_capacity {
            self.grow(lsn)?;
        }
        let at = slot_at(lsn);
        self.map[at..at + 8].copy_from_slice(&offset.to_be_bytes());
        Ok(())
    }

    fn grow(&mut self, lsn: Lsn) -> Result<()> {
        let slots = lsn.div_ceil(INDEX_GROW_SLOTS) * INDEX_GROW_SLOTS;
        let ctx = format!("growing WAL index {}", self.path.display());
        self.file.set_len(HEADER_BYTES + slots * SLOT_BYTES).map_err(|e| Error::io(&ctx, e))?;
        self.map = map(&self.file, &self.path)?;
        self.slots_capacity = slots;
        Ok(())
    }
}

fn slot_at(lsn: Lsn) -> usize {
    (HEADER_BYTES + (lsn - 1) * SLOT_BYTES) as usize
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
        let path = dir.path().join("wal.idx");
        let (mut index, opened) = WalIndex::open(&path).unwrap();
        assert_eq!(opened, IndexOpened::Created);
        index.set(1, 0).unwrap();
        index.set(2, 40).unwrap();
        index.set(INDEX_GROW_SLOTS + 5, 999).unwrap();
        drop(index);
        let (index, opened) = WalIndex::open(&path).unwrap();
        assert_eq!(opened, IndexOpened::Existing);
        assert_eq!(index.get(2), Some(40));
        assert_eq!(index.get(INDEX_GROW_SLOTS + 5), Some(999));
        assert_eq!(index.get(0), None);
    }

    #[test]
    fn foreign_file_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.idx");
        std::fs::write(&path, b"not an index at all").unwrap();
        let (_, opened) = WalIndex::open(&path).unwrap();
        assert_eq!(opened, IndexOpened::Created);
    }
}
