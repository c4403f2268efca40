//! A snapshot being received from the leader (snapshot install, the
//! follower's side of the files): pieces are appended to a `.part` file,
//! which becomes a snapshot only once it is whole and verified.
//!
//! ## Why the old state stays intact until the very end
//!
//! The pieces go to `snapshots/L-T-N.part` (the snapshot's LSN, term and
//! size), never to anything the node reads at start-up. When the last piece
//! is in, the file is fsynced and loaded into a new map, which checks every
//! chunk, the key count and the digest ([`crate::snapshot::load`]); only
//! then is it renamed to `L.snap` and the directory fsynced. That rename is
//! the commit point: before it, a crash or a cut link leaves the node
//! exactly as it was (with a `.part` to resume from); after it, start-up
//! loads the new snapshot and finds that it supersedes the old log
//! (`crate::wal::log`).
//!
//! ## Resuming
//!
//! A `.part` survives a cut link and a restart. When the leader offers a
//! snapshot, the follower answers with the bytes it already holds of *that*
//! snapshot (same LSN, term and size, so the same file): the leader
//! continues from there. A `.part` of any other snapshot is deleted. A file
//! that fails verification is deleted too, and the next offer starts from
//! byte 0.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::{self, SnapshotMeta};
use crate::store::Store;
use crate::{Lsn, Term};

/// The snapshot being received, if any.
pub struct Incoming {
    catalog: Catalog,
    transfer: Option<Transfer>,
}

struct Transfer {
    lsn: Lsn,
    term: Term,
    total: u64,
    path: PathBuf,
    file: File,
    received: u64,
}

impl Incoming {
    pub fn new(catalog: Catalog) -> Incoming {
        Incoming { catalog, transfer: None }
    }

    /// The leader offers the snapshot at `(lsn, term)` of `total` bytes:
    /// open its `.part` (deleting any other) and return how many bytes of
    /// it this node already holds.
    pub fn offer(&mut self, lsn: Lsn, term: Term, total: u64) -> Result<u64> {
        let path = self.catalog.part_path_of(lsn, term, total);
        self.catalog.remove_parts(Some(&path))?;
        let file = crate::datadir::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut received =
            file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
        if received > total {
            file.set_len(0).map_err(|e| Error::io(format!("resetting {}", path.display()), e))?;
            received = 0;
        }
        self.transfer = Some(Transfer { lsn, term, total, path, file, received });
        Ok(received)
    }

    /// A piece of `data` at `offset` of the snapshot at `lsn`: it must
    /// continue what this node holds. Returns the bytes held now.
    pub fn piece(&mut self, lsn: Lsn, offset: u64, data: &[u8]) -> Result<u64> {
        let Some(t) = self.transfer.as_mut().filter(|t| t.lsn == lsn) else {
            return Err(Error::Link(format!(
                "a piece of the snapshot at LSN {lsn} arrived before the leader offered it"
            )));
        };
        if offset != t.received {
            return Err(Error::Link(format!(
                "the leader sent the snapshot from byte {offset}, this node holds {} bytes",
                t.received
            )));
        }
        let ctx = || format!("writing {}", t.path.display());
        t.file.write_all_at(data, offset).map_err(|e| Error::io(ctx(), e))?;
        t.received += data.len() as u64;
        failpoint::hit("install-piece");
        Ok(t.received)
    }

    /// `(lsn, received, total)` of the transfer under way.
    pub fn progress(&self) -> Option<(Lsn, u64, u64)> {
        self.transfer.as_ref().map(|t| (t.lsn, t.received, t.total))
    }

    /// True once every byte of the offered snapshot is here.
    pub fn is_whole(&self) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.received == t.total)
    }

    /// The last piece is in: fsync the file, verify it by loading it into
    /// a new map, and rename it into place (the commit point; see the
    /// module doc). A file that fails verification is deleted. Returns the
    /// new map and the snapshot.
    pub fn finish(&mut self, progress: impl FnMut(u64)) -> Result<(Store, SnapshotMeta)> {
        let Some(t) = self.transfer.take() else {
            return Err(Error::Unexpected("no snapshot transfer to finish".into()));
        };
        assert_eq!(t.received, t.total, "a snapshot is finished only when whole");
        t.file.sync_all().map_err(|e| Error::io(format!("syncing {}", t.path.display()), e))?;
        drop(t.file);
        let loaded = snapshot::load(&t.path, progress).and_then(|(store, meta)| {
            if (meta.lsn, meta.term) != (t.lsn, t.term) {
                return Err(Error::CorruptSnapshot {
                    path: t.path.clone(),
                    offset: 0,
                    reason: format!(
                        "it holds LSN {} of term {}, the leader offered LSN {} of term {}",
                        meta.lsn, meta.term, t.lsn, t.term
                    ),
                });
            }
            Ok((store, meta))
        });
        let (store, meta) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = std::fs::remove_file(&t.path);
                return Err(e);
            }
        };
        failpoint::hit("install-before-rename");
        let path = self.catalog.publish(&t.path, t.lsn)?;
        failpoint::hit("install-after-rename");
        Ok((store, SnapshotMeta { path, ..meta }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Op, Record};

    /// A snapshot file of `keys` keys at LSN `keys` written in `dir`.
    fn snapshot_bytes(keys: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut store = Store::new();
        for i in 1..=keys {
            let op = Op::Put { key: format!("k{i}").into(), value: vec![b'v'; 100] };
            store.apply(Record { lsn: i, term: 2, op });
        }
        let meta = snapshot::write(&catalog, store.freeze(), 2).unwrap();
        std::fs::read(meta.path).unwrap()
    }

    #[test]
    fn a_cut_transfer_resumes_where_it_stopped_and_installs_whole() {
        // Goal: the follower keeps what it received across a cut (a new
        // Incoming, as after a reconnect) and finishes from there; the
        // result is the leader's snapshot, renamed into place.
        let bytes = snapshot_bytes(3000);
        let total = bytes.len() as u64;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut first = Incoming::new(catalog.clone());
        assert_eq!(first.offer(3000, 2, total).unwrap(), 0);
        let half = bytes.len() / 2;
        first.piece(3000, 0, &bytes[..half]).unwrap();
        drop(first); // the link is cut
        let mut second = Incoming::new(catalog.clone());
        assert_eq!(second.offer(3000, 2, total).unwrap(), half as u64, "resume point");
        assert!(second.piece(3000, 0, &bytes[..10]).is_err(), "a piece must continue the file");
        let mut second = Incoming::new(catalog.clone());
        second.offer(3000, 2, total).unwrap();
        second.piece(3000, half as u64, &bytes[half..]).unwrap();
        assert!(second.is_whole());
        let (store, meta) = second.finish(|_| {}).unwrap();
        assert_eq!((store.len(), meta.lsn, meta.term), (3000, 3000, 2));
        assert_eq!(catalog.list().unwrap()[0].path, meta.path);
    }

    #[test]
    fn a_damaged_transfer_is_deleted_and_never_installed() {
        let mut bytes = snapshot_bytes(100);
        bytes[500] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut incoming = Incoming::new(catalog.clone());
        incoming.offer(100, 2, bytes.len() as u64).unwrap();
        incoming.piece(100, 0, &bytes).unwrap();
        assert!(matches!(incoming.finish(|_| {}), Err(Error::CorruptSnapshot { .. })));
        assert!(catalog.list().unwrap().is_empty(), "nothing was installed");
        let mut again = Incoming::new(catalog);
        assert_eq!(again.offer(100, 2, bytes.len() as u64).unwrap(), 0, "it starts over");
    }

    #[test]
    fn an_offer_of_another_snapshot_drops_the_old_part() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut incoming = Incoming::new(catalog.clone());
        incoming.offer(100, 2, 1000).unwrap();
        incoming.piece(100, 0, &[1u8; 10]).unwrap();
        assert_eq!(incoming.offer(200, 2, 1000).unwrap(), 0);
        assert!(!catalog.part_path_of(100, 2, 1000).exists());
    }
}
