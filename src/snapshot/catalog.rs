//! The `snapshots/` directory: which snapshot files there are, what each
//! file name means, and the renames that make a snapshot appear whole.
//!
//! | name                                  | what                                                    |
//! |---------------------------------------|---------------------------------------------------------|
//! | `00000000000005000000.snap`           | a complete snapshot at LSN 5,000,000 (fsynced, renamed into place) |
//! | `00000000000005000000.snap.tmp`       | one being written; deleted at start-up (a crash cut it short) |
//! | `00000000000005000000-3-1200000.part` | one being received from the leader: LSN, term, total bytes; kept so a cut transfer resumes |
//! | `00000000000005000000.snap.corrupt`   | one found damaged at start-up: never loaded, kept for inspection |
//!
//! LSNs are zero-padded to 20 digits so that names sort in LSN order. A
//! `.snap` appears only by `rename` of a complete, fsynced file, followed by
//! an fsync of the directory: after a crash a snapshot is either whole
//! under its name or not there at all.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::wal::segment::sync_dir;
use crate::{Lsn, Term};

/// Name of the snapshot directory inside the data directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Complete snapshots kept: the newest, and one before it to fall back on
/// if the newest is found damaged (as long as the WAL after it is kept).
pub const SNAPSHOTS_KEPT: usize = 2;

/// One complete snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub lsn: Lsn,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The snapshot directory of one data dir.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
}

impl Catalog {
    /// Open (create, mode 0700) `data_dir/snapshots`, and delete the
    /// `.tmp` files a crash left there.
    pub fn open(data_dir: &Path) -> Result<Catalog> {
        let dir = data_dir.join(SNAPSHOT_DIR_NAME);
        match std::fs::DirBuilder::new().mode(crate::datadir::DATA_DIR_MODE).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
        let catalog = Catalog { dir };
        for name in catalog.names()? {
            if name.ends_with(".snap.tmp") {
                let path = catalog.dir.join(&name);
                log::info!(
                    "[snapshot] removing {}, left by a snapshot a crash cut short",
                    path.display()
                );
                remove(&path)?;
            }
        }
        Ok(catalog)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the snapshot at `lsn` lives once complete.
    pub fn path_of(&self, lsn: Lsn) -> PathBuf {
        self.dir.join(format!("{lsn:020}.snap"))
    }

    /// Where the snapshot at `lsn` is written before it is complete.
    pub fn tmp_path_of(&self, lsn: Lsn) -> PathBuf {
        self.dir.join(format!("{lsn:020}.snap.tmp"))
    }

    /// Where a snapshot received from the leader accumulates.
    pub fn part_path_of(&self, lsn: Lsn, term: Term, total_bytes: u64) -> PathBuf {
        self.dir.join(format!("{lsn:020}-{term}-{total_bytes}.part"))
    }

    /// Every complete snapshot, newest first.
    pub fn list(&self) -> Result<Vec<SnapshotFile>> {
        let mut files = Vec::new();
        for name in self.names()? {
            let Some(lsn) = name.strip_suffix(".snap").and_then(parse_lsn) else { continue };
            let path = self.dir.join(&name);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .len();
            files.push(SnapshotFile { lsn, path, bytes });
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.lsn));
        Ok(files)
    }

    /// Move a complete `tmp` file to its name, durably: rename, then fsync
    /// the directory.
    pub fn publish(&self, tmp: &Path, lsn: Lsn) -> Result<PathBuf> {
        let path = self.path_of(lsn);
        std::fs::rename(tmp, &path).map_err(|e| {
            Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e)
        })?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Set a damaged snapshot aside under `.corrupt`, so that it is never
    /// tried again nor counted among the snapshots kept.
    pub fn set_aside(&self, file: &SnapshotFile) -> Result<PathBuf> {
        let aside = self.dir.join(format!("{:020}.snap.corrupt", file.lsn));
        std::fs::rename(&file.path, &aside).map_err(|e| {
            Error::io(format!("renaming {} to {}", file.path.display(), aside.display()), e)
        })?;
        sync_dir(&self.dir)?;
        Ok(aside)
    }

    /// Delete complete snapshots beyond the newest `keep`; return them.
    pub fn keep_newest(&self, keep: usize) -> Result<Vec<SnapshotFile>> {
        let old: Vec<SnapshotFile> = self.list()?.into_iter().skip(keep).collect();
        for file in &old {
            remove(&file.path)?;
        }
        if !old.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(old)
    }

    /// Delete every complete snapshot but the one at `lsn`, and every
    /// partial transfer but `except` (after a snapshot was installed).
    pub fn keep_only(&self, lsn: Lsn, except: Option<&Path>) -> Result<()> {
        for file in self.list()? {
            if file.lsn != lsn {
                remove(&file.path)?;
            }
        }
        self.remove_parts(except)?;
        sync_dir(&self.dir)
    }

    /// Delete every `.part` file but `except`.
    pub fn remove_parts(&self, except: Option<&Path>) -> Result<()> {
        for name in self.names()? {
            let path = self.dir.join(&name);
            if name.ends_with(".part") && Some(path.as_path()) != except {
                remove(&path)?;
            }
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>> {
        let listing = |e| Error::io(format!("listing {}", self.dir.display()), e);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(listing)? {
            let entry = entry.map_err(listing)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

/// Bytes on disk of every file in `dir` (for `status`).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

fn parse_lsn(stem: &str) -> Option<Lsn> {
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_lsn_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        for lsn in [9, 100, 10] {
            std::fs::write(catalog.path_of(lsn), b"x").unwrap();
        }
        std::fs::write(catalog.tmp_path_of(200), b"half").unwrap();
        std::fs::write(catalog.part_path_of(300, 2, 99), b"part").unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let lsns: Vec<Lsn> = catalog.list().unwrap().iter().map(|f| f.lsn).collect();
        assert_eq!(lsns, [100, 10, 9]);
        assert!(!catalog.tmp_path_of(200).exists(), "a .tmp is a crash's leftover");
        assert!(catalog.part_path_of(300, 2, 99).exists(), "a .part is kept to resume");
        let removed = catalog.keep_newest(2).unwrap();
        assert_eq!(removed.iter().map(|f| f.lsn).collect::<Vec<_>>(), [9]);
        let set_aside = catalog.set_aside(&catalog.list().unwrap()[0]).unwrap();
        assert!(set_aside.to_string_lossy().ends_with("00000000000000000100.snap.corrupt"));
        assert_eq!(catalog.list().unwrap().len(), 1);
    }
}
