//! The single-file logs of WAL formats 1 and 2 (`wal.log`), and their
//! upgrade in place to segments (format 3).
//!
//! ## The old formats
//!
//! ```text
//! format 1:  [body_len u32][crc32 u32][body: lsn u64, cmd u8, key_len u32, key, value_len u32, value] ...
//! format 2:  [magic "KVSTOWAL" 8 bytes][format_version u32 = 2][reserved u32 = 0]
//!            [body_len u32][crc32 u32][body: lsn u64, term u64, cmd u8, ...] ...
//! ```
//!
//! Format 1 (kvstore before terms) had no header and no term: its records
//! are read as term 1, since all of them came from the first leader. Format
//! 2's entries are exactly those of a segment.
//!
//! ## The upgrade, and why it is crash-safe
//!
//! A data dir holding `wal.log` is upgraded when it is opened:
//!
//! 1. every intact record of `wal.log` is written, as a format-2 entry, into
//!    `wal/00000000000000000001.seg.tmp` (one segment, however large: the
//!    next segment starts when the server first appends), which is fsynced,
//!    renamed to `...0001.seg`, and `wal/` fsynced;
//! 2. `wal.log` is deleted (with `wal.idx`, the old index), and the data dir
//!    fsynced.
//!
//! The deletion of `wal.log` is the commit point: **as long as `wal.log`
//! exists, the upgrade has not finished**, and whatever is in `wal/` was
//! written by an interrupted upgrade and is deleted before it runs again.
//! A crash at any point leaves either the old file whole or the upgraded
//! segment whole. A torn tail of the old file is left out (it was never
//! acknowledged), and a damaged record before its tail stops start-up
//! without changing anything, as for any log.
//!
//! A `wal.log` whose header names a version other than 1 or 2 is refused
//! untouched: this build cannot know what its fields mean.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::wal::record::{Record, RECORD_FIXED_BYTES, RECORD_V1_FIXED_BYTES};
use crate::wal::segment::{self, encode_entry, Next, ScanEnd, SegmentHeader};
use crate::Lsn;

/// Name of the single-file log of formats 1 and 2.
pub const LEGACY_LOG_FILE_NAME: &str = "wal.log";
/// Name of format 2's index of `wal.log`.
pub const LEGACY_INDEX_FILE_NAME: &str = "wal.idx";
/// Name of the temporary file format 1 → 2 upgrades used to write.
const LEGACY_UPGRADE_FILE_NAME: &str = "wal.log.upgrade";

/// First bytes of a `wal.log` of format 2.
pub const LEGACY_MAGIC: &[u8; 8] = b"KVSTOWAL";
/// Bytes of format 2's file header.
pub const LEGACY_HEADER_BYTES: u64 = 16;
/// The newest format a `wal.log` can have.
const LEGACY_VERSION_MAX: u32 = 2;

/// Read buffer of a scan (1 MiB).
const SCAN_BUFFER_BYTES: usize = 1024 * 1024;

/// What [`scan_legacy`] found: the file's format version and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyScan {
    pub version: u32,
    pub end: ScanEnd,
}

/// Upgrade `data_dir/wal.log`, if there is one, into `wal_dir` (see the
/// module doc). Returns `Some((version, records))` if it did.
pub fn upgrade_if_needed(data_dir: &Path, wal_dir: &Path) -> Result<Option<(u32, u64)>> {
    let log_path = data_dir.join(LEGACY_LOG_FILE_NAME);
    let Some(version) = read_legacy_version(&log_path)? else {
        // Missing, or too short to hold a record: nothing to keep.
        if log_path.exists() {
            remove_legacy_files(data_dir)?;
        }
        return Ok(None);
    };
    // 0. Whatever an interrupted upgrade left in wal/ goes.
    clear_dir(wal_dir)?;
    // 1. Write the records into the first segment.
    let header = SegmentHeader { first_lsn: 1, prev_term: 0 };
    let tmp = wal_dir.join(format!("{}.tmp", segment::segment_file_name(1)));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let file = crate::datadir::create_file(&tmp)?;
    let mut out = BufWriter::with_capacity(SCAN_BUFFER_BYTES, file);
    out.write_all(&header.encode()).map_err(|e| Error::io(ctx("writing"), e))?;
    let mut count = 0u64;
    let mut entry = Vec::new();
    let mut write_error = None;
    let scan = scan_legacy(&log_path, |_, record| {
        entry.clear();
        encode_entry(record, &mut entry);
        if write_error.is_none() {
            write_error = out.write_all(&entry).err();
        }
        count += 1;
    })?;
    if let Some(e) = write_error {
        return Err(Error::io(ctx("writing"), e));
    }
    let file = out.into_inner().map_err(|e| Error::io(ctx("writing"), e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    if let ScanEnd::TornTail { offset, bytes } = scan.end {
        log::warn!(
            "[wal] format-{version} log {} has a torn tail of {bytes} byte(s) at offset {offset}; \
             it is left out of the upgrade (it was never acknowledged)",
            log_path.display()
        );
    }
    let segment_path = wal_dir.join(segment::segment_file_name(1));
    std::fs::rename(&tmp, &segment_path).map_err(|e| Error::io(ctx("renaming"), e))?;
    segment::sync_dir(wal_dir)?;
    failpoint::hit("upgrade-before-commit");
    // 2. The commit point: the old log goes.
    remove_legacy_files(data_dir)?;
    log::info!(
        "[wal] upgraded {} from format {version} to format {} (segments in {}): {count} \
         record(s){}",
        log_path.display(),
        segment::WAL_FORMAT_VERSION,
        wal_dir.display(),
        if version == 1 { ", each read as term 1" } else { "" }
    );
    Ok(Some((version, count)))
}

fn remove_legacy_files(data_dir: &Path) -> Result<()> {
    for name in [LEGACY_LOG_FILE_NAME, LEGACY_INDEX_FILE_NAME, LEGACY_UPGRADE_FILE_NAME] {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    segment::sync_dir(data_dir)
}

/// Remove every file in `dir` (an interrupted upgrade's segments).
fn clear_dir(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        if path.is_file() {
            log::warn!("[wal] removing {}, left by an upgrade that did not finish", path.display());
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Read the format version of the `wal.log` at `path`: `Ok(None)` for a
/// file too short to hold any record (missing, empty, or a torn header),
/// 1 for a file without the magic (the format before headers existed).
/// A version newer than 2 is an error: that is no `wal.log` this kvstore
/// ever wrote.
pub fn read_legacy_version(path: &Path) -> Result<Option<u32>> {
    let bytes = match File::open(path) {
        Ok(file) => {
            let mut head = Vec::with_capacity(LEGACY_HEADER_BYTES as usize);
            file.take(LEGACY_HEADER_BYTES)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            head
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    if bytes.len() < LEGACY_HEADER_BYTES as usize {
        // Shorter than a header, and shorter than the smallest v1 entry
        // (8 + 17 bytes): no record can be in it.
        return Ok(None);
    }
    if &bytes[..8] != LEGACY_MAGIC {
        return Ok(Some(1));
    }
    match u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) {
        v @ 1..=LEGACY_VERSION_MAX => Ok(Some(v)),
        found => Err(Error::WalVersion {
            path: path.to_path_buf(),
            found,
            supported: LEGACY_VERSION_MAX,
        }),
    }
}

/// Read the `wal.log` at `path` from the start, calling `visit(offset,
/// record)` for each intact entry, and say which format it has and how it
/// ends. A format-1 file is read as term 1. Used by the upgrade and by
/// `kv_client wal-dump` on a data dir not yet upgraded; it never writes.
pub fn scan_legacy(path: &Path, mut visit: impl FnMut(u64, &Record)) -> Result<LegacyScan> {
    let Some(version) = read_legacy_version(path)? else {
        return Ok(LegacyScan { version: 2, end: ScanEnd::Clean { end_offset: 0 } });
    };
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let ctx = || format!("reading {}", path.display());
    let file_len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let corrupt = |offset, reason| Error::CorruptWal { path: path.to_path_buf(), offset, reason };
    let (mut offset, fixed_bytes, decode): (u64, u32, Decode) = match version {
        1 => (0u64, RECORD_V1_FIXED_BYTES as u32, Record::decode_v1),
        _ => {
            let mut header = [0u8; LEGACY_HEADER_BYTES as usize];
            reader.read_exact(&mut header).map_err(|e| Error::io(ctx(), e))?;
            (LEGACY_HEADER_BYTES, RECORD_FIXED_BYTES as u32, Record::decode)
        }
    };
    let done = |end| Ok(LegacyScan { version, end });
    let mut expected_lsn: Lsn = 1;
    let mut entry = Vec::new();
    loop {
        let bounds = (offset, file_len);
        let (entry_len, is_last) =
            match segment::read_entry(&mut reader, &mut entry, bounds, fixed_bytes, path)? {
                Next::End(end) => return done(end),
                Next::Entry { len, is_last } => (len, is_last),
            };
        let record = match segment::decode_entry_with(&entry, decode) {
            Ok(record) => record,
            Err(_) if is_last => return done(ScanEnd::TornTail { offset, bytes: entry_len }),
            Err(reason) => return Err(corrupt(offset, reason)),
        };
        if record.lsn != expected_lsn {
            let why = format!("expected LSN {expected_lsn}, found {}", record.lsn);
            return Err(corrupt(offset, why));
        }
        visit(offset, &record);
        offset += entry_len;
        expected_lsn += 1;
    }
}

/// A record decoder: format 1's or format 2's.
type Decode = fn(&mut crate::codec::Decoder<'_>) -> Result<Record>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wal::record::Op;

    /// The bytes of a format-1 log (no header, no term) holding `records`.
    pub(crate) fn v1_log(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let mut body = Vec::new();
            let (cmd, key, value): (u8, &[u8], &[u8]) = match &r.op {
                Op::Put { key, value } => (0x01, key, value),
                Op::Delete { key } => (0x03, key, &[]),
                Op::Noop => unreachable!("format 1 had no NOOP"),
            };
            body.extend_from_slice(&r.lsn.to_be_bytes());
            body.push(cmd);
            body.extend_from_slice(&(key.len() as u32).to_be_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(&(value.len() as u32).to_be_bytes());
            body.extend_from_slice(value);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    fn records(count: u64) -> Vec<Record> {
        (1..=count)
            .map(|i| Record {
                lsn: i,
                term: 1,
                op: Op::Put { key: format!("k{i}").into(), value: b"v".to_vec() },
            })
            .collect()
    }

    #[test]
    fn an_interrupted_upgrade_runs_again_from_the_old_file() {
        // Goal: while wal.log exists the upgrade is not done; a segment left
        // by a crash before the commit point is replaced, not trusted.
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir(&wal_dir).unwrap();
        std::fs::write(dir.path().join(LEGACY_LOG_FILE_NAME), v1_log(&records(3))).unwrap();
        std::fs::write(wal_dir.join(segment::segment_file_name(1)), b"half an upgrade").unwrap();
        assert_eq!(upgrade_if_needed(dir.path(), &wal_dir).unwrap(), Some((1, 3)));
        assert!(!dir.path().join(LEGACY_LOG_FILE_NAME).exists());
        let path = wal_dir.join(segment::segment_file_name(1));
        let mut lsns = Vec::new();
        segment::scan(&path, 1, |e| {
            lsns.push((e.lsn, e.term));
            Ok(())
        })
        .unwrap();
        assert_eq!(lsns, [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(upgrade_if_needed(dir.path(), &wal_dir).unwrap(), None, "done once");
    }

    #[test]
    fn a_legacy_log_from_an_unknown_format_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEGACY_LOG_FILE_NAME);
        let mut bytes = LEGACY_MAGIC.to_vec();
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        bytes.extend_from_slice(b"records this build cannot read");
        std::fs::write(&path, &bytes).unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir(&wal_dir).unwrap();
        assert!(matches!(
            upgrade_if_needed(dir.path(), &wal_dir),
            Err(Error::WalVersion { found: 7, supported: 2, .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
