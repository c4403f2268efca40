//! Snapshots and log compaction: a bounded disk, and a restart time set by
//! the data rather than by its history (`docs/STORAGE.md` tells the whole
//! story; this is the map of the code).
//!
//! Without snapshots the WAL grows forever: a node that took 100 million
//! writes to 10,000 keys keeps 100 million records, replays all of them at
//! every start, and sends all of them to a follower that joins late.
//! Redis rewrites its AOF and ships an RDB file on a full sync; PostgreSQL
//! checkpoints, recycles WAL segments and seeds a standby from a base
//! backup; etcd snapshots, compacts, and sends InstallSnapshot to a
//! follower that is too far behind. kvstore does the same:
//!
//! 1. **A snapshot** is the whole map as of one LSN, with that record's
//!    term ([`format`](mod@format): the bytes; [`catalog`]: the files). It is taken
//!    from a copy-on-write freeze of the map (`crate::store`), so writes
//!    go on while it is written; only records at or below the commit LSN
//!    are ever in a snapshot (a record that might still be removed by a
//!    divergence repair never is).
//! 2. **Compaction** then deletes the WAL segments the snapshot makes
//!    unnecessary, except those followers still need ([`policy`]).
//! 3. **Start-up** loads the newest snapshot that is whole ([`choose`]) —
//!    falling back to an older one if its WAL is still there, refusing to
//!    start otherwise — and replays only the segments after it.
//! 4. **Snapshot install**: a follower whose next record the leader no
//!    longer has receives the snapshot instead, in chunks
//!    (`crate::replication::install`), keeps it in a `.part` file
//!    ([`incoming`]) and switches to it only once it is whole and verified.
//!
//! [`snapshotter`] is the thread that decides when (1) and (2) happen.

pub mod catalog;
pub mod format;
pub mod incoming;
pub mod policy;
pub mod snapshotter;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::failpoint;
use crate::logline::{bytes, count};
use crate::store::{Frozen, Store};
use crate::{Lsn, Term};

use catalog::{Catalog, SnapshotFile};
use format::{SnapshotHeader, SnapshotReader, SnapshotWriter};

/// A snapshot as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub lsn: Lsn,
    pub term: Term,
    pub keys: u64,
    pub digest: u64,
    pub bytes: u64,
    pub created_unix_ms: u64,
    pub path: PathBuf,
}

impl SnapshotMeta {
    fn new(header: &SnapshotHeader, bytes: u64, path: PathBuf) -> SnapshotMeta {
        SnapshotMeta {
            lsn: header.lsn,
            term: header.term,
            keys: header.key_count,
            digest: header.digest,
            bytes,
            created_unix_ms: header.created_unix_ms,
            path,
        }
    }

    /// Milliseconds since it was taken.
    pub fn age_ms(&self) -> u64 {
        unix_ms().saturating_sub(self.created_unix_ms)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The fewest bytes one pair takes in a snapshot file: its two lengths.
const PAIR_BYTES_MIN: u64 = 8;

/// Read the snapshot at `path` into a new map, verifying everything
/// ([`format`](mod@format)'s checks, then no key twice and the digest); `progress` is
/// called with the bytes read so far after each chunk. The map is only
/// returned if the whole file is good.
pub fn load(path: &Path, mut progress: impl FnMut(u64)) -> Result<(Store, SnapshotMeta)> {
    let reader = SnapshotReader::open(path)?;
    let file_bytes = reader.file_bytes();
    // Room for the header's key count, but no more than the file could
    // hold (a pair takes at least its two 4-byte lengths): a damaged count that passed
    // the header's checksum cannot make us allocate more than the file.
    let keys = reader.header().key_count.min(file_bytes / PAIR_BYTES_MIN);
    let mut store = Store::with_capacity(usize::try_from(keys).unwrap_or(usize::MAX));
    let corrupt =
        |reason: String| Error::CorruptSnapshot { path: path.to_path_buf(), offset: 0, reason };
    let header = reader.for_each(
        |key, value| match store.restore(key, value) {
            true => Ok(()),
            false => Err(corrupt("a key appears twice".into())),
        },
        &mut progress,
    )?;
    if store.digest() != header.digest {
        return Err(corrupt(format!(
            "the pairs' digest is {:016x}, the header says {:016x}",
            store.digest(),
            header.digest
        )));
    }
    store.restored_at(header.lsn);
    Ok((store, SnapshotMeta::new(&header, file_bytes, path.to_path_buf())))
}

/// Write the frozen map as the snapshot at `frozen.lsn` (of `term`):
/// into a `.tmp` file, fsynced, then renamed into place and the directory
/// fsynced. Each shard is let go as soon as it is written, so writers stop
/// copying it (see `crate::store`).
pub fn write(catalog: &Catalog, frozen: Frozen, term: Term) -> Result<SnapshotMeta> {
    let header = SnapshotHeader {
        lsn: frozen.lsn,
        term,
        key_count: frozen.keys,
        digest: frozen.digest,
        created_unix_ms: unix_ms(),
    };
    let tmp = catalog.tmp_path_of(frozen.lsn);
    let _ = std::fs::remove_file(&tmp); // a failed attempt's, if any
    let written = write_pairs(&tmp, header, frozen);
    let file_bytes = match written {
        Ok(file_bytes) => file_bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    failpoint::hit("snapshot-before-rename");
    let path = catalog.publish(&tmp, header.lsn)?;
    failpoint::hit("snapshot-after-rename");
    Ok(SnapshotMeta::new(&header, file_bytes, path))
}

fn write_pairs(tmp: &Path, header: SnapshotHeader, frozen: Frozen) -> Result<u64> {
    let mut writer = SnapshotWriter::create(tmp, header)?;
    for shard in frozen.shards {
        for (key, value) in shard.iter() {
            writer.push(key, value)?;
        }
        drop(shard);
    }
    writer.finish()
}

/// What start-up chose to load.
pub struct Chosen {
    pub store: Store,
    pub snapshot: Option<SnapshotMeta>,
    pub load_ms: u64,
}

/// Start-up: load the newest snapshot that is whole and whose WAL after it
/// is still there (the log's first LSN `first_lsn` is at most its LSN + 1;
/// `None`: no segment at all). A damaged snapshot is logged, set aside as
/// `.corrupt`, and the next older one tried. With none usable, start from
/// an empty map if the log starts at LSN 1; otherwise refuse to start,
/// saying which records are missing and why.
pub fn choose(catalog: &Catalog, first_lsn: Option<Lsn>) -> Result<Chosen> {
    let started = Instant::now();
    let mut rejected: Vec<String> = Vec::new();
    for file in catalog.list()? {
        if let Some(first) = first_lsn.filter(|first| *first > file.lsn + 1) {
            rejected.push(format!(
                "{} ends at LSN {} but the WAL starts at LSN {first}",
                file_name(&file.path),
                file.lsn
            ));
            continue;
        }
        match load(&file.path, |_| {}) {
            Ok((store, meta)) => {
                return Ok(Chosen {
                    store,
                    snapshot: Some(meta),
                    load_ms: started.elapsed().as_millis() as u64,
                })
            }
            Err(e @ Error::CorruptSnapshot { .. }) => {
                set_aside(catalog, &file, &e)?;
                rejected.push(format!("{} is damaged", file_name(&file.path)));
            }
            Err(e) => return Err(e),
        }
    }
    match first_lsn {
        None | Some(1) => Ok(Chosen { store: Store::new(), snapshot: None, load_ms: 0 }),
        Some(first) => {
            let why = if rejected.is_empty() {
                format!("the WAL starts at LSN {first} and there is no snapshot")
            } else {
                format!("the WAL starts at LSN {first}; {}", rejected.join("; "))
            };
            Err(Error::MissingRecords { from: 1, to: first - 1, why })
        }
    }
}

fn set_aside(catalog: &Catalog, file: &SnapshotFile, e: &Error) -> Result<()> {
    let aside = catalog.set_aside(file)?;
    log::error!("[snapshot] {e}; set aside as {} and trying an older snapshot", aside.display());
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The log line of a snapshot written.
pub fn written_line(
    meta: &SnapshotMeta,
    took_ms: u64,
    pause_us: u64,
    copies: crate::store::CopyStats,
) -> String {
    format!(
        "[snapshot] wrote {}: LSN {} (term {}), {} keys, {} in {took_ms} ms; writers paused \
         {pause_us} us to freeze the map, then copied {} of {} shards (longest copy {:.2} ms)",
        file_name(&meta.path),
        count(meta.lsn),
        meta.term,
        count(meta.keys),
        bytes(meta.bytes),
        copies.shards,
        crate::store::SHARDS,
        copies.longest.as_secs_f64() * 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Op, Record};

    fn store_with(count: u64) -> Store {
        let mut s = Store::new();
        for i in 1..=count {
            let op = Op::Put { key: format!("k{i}").into(), value: format!("v{i}").into() };
            s.apply(Record { lsn: i, term: 2, op });
        }
        s
    }

    #[test]
    fn a_written_snapshot_loads_into_the_same_map() {
        // Goal: write → load gives the same keys, digest and LSN.
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut store = store_with(5000);
        let meta = write(&catalog, store.freeze(), 2).unwrap();
        assert_eq!((meta.lsn, meta.term, meta.keys), (5000, 2, 5000));
        let (loaded, loaded_meta) = load(&meta.path, |_| {}).unwrap();
        assert_eq!(loaded_meta, meta);
        assert_eq!(
            (loaded.digest(), loaded.len(), loaded.applied_lsn()),
            (store.digest(), 5000, 5000)
        );
        assert_eq!(loaded.get(b"k77"), Some(&b"v77".to_vec()));
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_an_older_one_or_refuses() {
        // Goal: start-up never loads a damaged snapshot. Method: snapshots
        // at 100 and 200; flip a byte of the newest. With the WAL from LSN
        // 101 on, the older one is chosen (and the damaged one set aside);
        // with the WAL from 150 on, nothing can fill 101..149: refuse.
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        write(&catalog, store_with(100).freeze(), 2).unwrap();
        let newest = write(&catalog, store_with(200).freeze(), 2).unwrap();
        let mut bytes = std::fs::read(&newest.path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&newest.path, &bytes).unwrap();
        let copy = tempfile::tempdir().unwrap();
        let copied = Catalog::open(copy.path()).unwrap();
        for f in catalog.list().unwrap() {
            std::fs::copy(&f.path, copied.dir().join(f.path.file_name().unwrap())).unwrap();
        }
        let chosen = choose(&catalog, Some(101)).unwrap();
        assert_eq!(chosen.snapshot.map(|s| s.lsn), Some(100));
        assert_eq!(catalog.list().unwrap().len(), 1, "the damaged one is set aside");
        match choose(&copied, Some(150)) {
            Err(Error::MissingRecords { from: 1, to: 149, why }) => {
                assert!(why.contains("is damaged") && why.contains("ends at LSN 100"), "{why}")
            }
            other => panic!("expected MissingRecords, got {:?}", other.map(|c| c.snapshot)),
        }
    }

    #[test]
    fn without_snapshots_a_log_from_lsn_1_is_enough() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert!(choose(&catalog, Some(1)).unwrap().snapshot.is_none());
        assert!(choose(&catalog, None).unwrap().snapshot.is_none());
        assert!(matches!(
            choose(&catalog, Some(7)),
            Err(Error::MissingRecords { from: 1, to: 6, .. })
        ));
    }
}
