//! The log file: append, fsync, crash recovery, truncation and
//! `records_after` (week 9, lesson 5; truncation: `docs/FAILOVER.md`).
//!
//! ## Layout of `wal.log`
//!
//! A 16-byte header, then a sequence of entries, each one record wrapped
//! with its length and a checksum:
//!
//! ```text
//! [magic "KVSTOWAL" 8 bytes][format_version u32 = 2][reserved u32 = 0]
//! [body_len u32][crc32 u32][body: lsn u64, term u64, cmd u8, key_len u32, key, value_len u32, value]
//! ...
//! ```
//!
//! `crc32` (CRC-32/ISO-HDLC, as zlib computes it) covers the body. LSNs start
//! at 1 and are contiguous: entry *n* holds LSN *n*. Terms never decrease
//! along the log.
//!
//! ## Format versions
//!
//! Version 1 (kvstore before terms) had no header and no term in a record.
//! Opening such a log **upgrades** it: every record is rewritten with term 1
//! into `wal.log.upgrade`, which is fsynced and renamed over `wal.log` (a
//! crash in between leaves the old file whole, and the upgrade runs again).
//! A header with a version newer than [`WAL_FORMAT_VERSION`] is refused with
//! an error naming both versions: this build cannot know what the new
//! fields mean, and guessing would misread every record.
//!
//! ## Recovery: torn tail versus corruption
//!
//! A crash can cut the last write short. At start-up the log is read from
//! the beginning and each entry is checked:
//!
//! - an entry cut short by the end of the file, or a bad checksum on the very
//!   last entry, or an all-zero tail, is a **torn tail**: the file is
//!   truncated at that entry's offset and the offset is logged. Such a record
//!   was never acknowledged (a write is acknowledged only after its fsync).
//! - a bad checksum, impossible length or wrong LSN **followed by more
//!   data** is **corruption**: start-up fails naming the file and offset.
//!   Truncating there would silently drop every record after it.
//!
//! ## The term history
//!
//! While it reads or appends records the log keeps a [`TermHistory`]: for
//! each term, the first LSN written in it (PostgreSQL keeps the same thing
//! in its timeline history files). It answers "which term wrote LSN n?" by
//! a binary search over a handful of entries, which is what the
//! log-matching check of AppendEntries needs, without reading the file.
//!
//! ## Truncation (divergence repair)
//!
//! [`Wal::truncate_after`] removes every record after an LSN: one
//! `ftruncate` at the offset the index gives for the next LSN, then an
//! fsync. A crash before the fsync leaves either the old length (the
//! records are still there and the follower repeats the repair when it
//! reconnects) or the new one; a length in between is a torn tail, which
//! recovery already handles. Index slots past the end are simply stale:
//! they are overwritten by the next append and checked at start-up.
//!
//! ## Concurrency
//!
//! One thread at a time appends or truncates (the group-commit leader in
//! [`crate::db`], or the follower thread); any number of replication
//! senders read with positioned reads (`pread`), which need no shared file
//! cursor. A reader is only ever asked for records up to an LSN that has
//! been fully written.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::limits::RECORD_BYTES_MAX;
use crate::wal::index::{IndexOpened, WalIndex};
use crate::wal::record::{Record, RECORD_FIXED_BYTES, RECORD_V1_FIXED_BYTES};
use crate::wal::terms::TermHistory;
use crate::{Lsn, Term};

/// Name of the log file inside the data directory.
pub const LOG_FILE_NAME: &str = "wal.log";
/// Name of the index file inside the data directory.
pub const INDEX_FILE_NAME: &str = "wal.idx";

/// Bytes of an entry's header: body_len u32 + crc32 u32.
pub const ENTRY_HEADER_BYTES: usize = 8;

/// First bytes of a `wal.log` of format version 2 or later.
pub const WAL_MAGIC: &[u8; 8] = b"KVSTOWAL";

/// The format this build writes (and the newest it can read).
pub const WAL_FORMAT_VERSION: u32 = 2;

/// Bytes of the file header: magic 8 + version 4 + reserved 4.
pub const FILE_HEADER_BYTES: u64 = 16;

/// Name of the temporary file a format-1 log is rewritten into.
const UPGRADE_FILE_NAME: &str = "wal.log.upgrade";

/// How much `records_after` reads per `pread` (1 MiB): big enough that a
/// catch-up costs a few syscalls per thousand records.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// The write-ahead log of one data directory.
pub struct Wal {
    log_path: PathBuf,
    writer: Mutex<Writer>,
    index: RwLock<WalIndex>,
    /// A second handle used only for positioned reads by senders.
    reader: File,
    /// Last LSN whose bytes are written and indexed.
    last_lsn: AtomicU64,
    /// Term → first LSN, for every record in the log.
    terms: RwLock<TermHistory>,
}

struct Writer {
    file: File,
    end_offset: u64,
    last_lsn: Lsn,
    buf: Vec<u8>,
}

/// What start-up found in the log, for the operator's log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecovery {
    pub records: u64,
    pub last_lsn: Lsn,
    /// `(offset, bytes)` of a torn tail that was truncated.
    pub torn_tail: Option<(u64, u64)>,
    /// Index slots that were missing or wrong and have been rewritten.
    pub index_slots_rebuilt: u64,
    pub index_created: bool,
    /// `Some(records)` if a format-1 log was upgraded to the current format.
    pub upgraded_from_v1: Option<u64>,
    /// Term of the last record (0 if the log is empty).
    pub last_term: Term,
}

/// What [`scan_log`] found: the file's format version and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub version: u32,
    pub end: ScanEnd,
}

/// How a scan of the log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last entry ends exactly at the end of the file.
    Clean { end_offset: u64 },
    /// A torn entry starts at `offset` and runs `bytes` to the end of file.
    TornTail { offset: u64, bytes: u64 },
}

impl Wal {
    /// Open the WAL in `dir`, recover it, and call `apply` with every record
    /// in LSN order (this is how start-up rebuilds the map).
    pub fn open(dir: &Path, mut apply: impl FnMut(&Record)) -> Result<(Wal, WalRecovery)> {
        let log_path = dir.join(LOG_FILE_NAME);
        // 0. Make sure the file has the current format's header.
        let upgraded_from_v1 = prepare_header(dir, &log_path)?;
        let file = crate::datadir::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let (mut index, opened) = WalIndex::open(&dir.join(INDEX_FILE_NAME))?;

        // 1. Replay every intact entry, checking each index slot on the way.
        let mut recovery = WalRecovery {
            records: 0,
            last_lsn: 0,
            torn_tail: None,
            index_slots_rebuilt: 0,
            index_created: opened == IndexOpened::Created,
            upgraded_from_v1,
            last_term: 0,
        };
        let mut index_error = None;
        let fresh_index = opened == IndexOpened::Created;
        let mut terms = TermHistory::new();
        let scan = scan_log(&log_path, |offset, record| {
            if fresh_index || index.get(record.lsn) != Some(offset) {
                recovery.index_slots_rebuilt += 1;
                if let Err(e) = index.set(record.lsn, offset) {
                    index_error.get_or_insert(e);
                }
            }
            recovery.records += 1;
            recovery.last_lsn = record.lsn;
            terms.note(record.lsn, record.term);
            apply(record);
        })?;
        if let Some(e) = index_error {
            return Err(e);
        }
        if let Some(bad) = terms.decreasing() {
            return Err(Error::CorruptWal { path: log_path, offset: 0, reason: bad });
        }
        recovery.last_term = terms.last_term();

        // 2. Cut off a torn tail so the next append starts on a clean boundary.
        let end_offset = match scan.end {
            ScanEnd::Clean { end_offset } => end_offset,
            ScanEnd::TornTail { offset, bytes } => {
                let ctx = format!("truncating torn tail of {}", log_path.display());
                file.set_len(offset).map_err(|e| Error::io(&ctx, e))?;
                file.sync_all().map_err(|e| Error::io(&ctx, e))?;
                recovery.torn_tail = Some((offset, bytes));
                offset
            }
        };
        let reader = File::open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let wal = Wal {
            log_path,
            writer: Mutex::new(Writer {
                file,
                end_offset,
                last_lsn: recovery.last_lsn,
                buf: Vec::new(),
            }),
            index: RwLock::new(index),
            reader,
            last_lsn: AtomicU64::new(recovery.last_lsn),
            terms: RwLock::new(terms),
        };
        Ok((wal, recovery))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.log_path
    }

    /// Last LSN written to the log (0 if empty). Not necessarily fsynced.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Acquire)
    }

    /// The term of the record at `lsn`: 0 for LSN 0, `None` beyond the end.
    pub fn term_at(&self, lsn: Lsn) -> Option<Term> {
        self.terms.read().term_at(lsn)
    }

    /// Term of the last record (0 if the log is empty).
    pub fn last_term(&self) -> Term {
        self.terms.read().last_term()
    }

    /// A copy of the term history (a few entries: one per term in the log).
    pub fn term_history(&self) -> TermHistory {
        self.terms.read().clone()
    }

    /// Remove every record after `lsn` (divergence repair; see the module
    /// doc). Returns how many records were removed. The caller guarantees
    /// that no append runs at the same time and that nothing after `lsn`
    /// was ever committed.
    pub fn truncate_after(&self, lsn: Lsn) -> Result<u64> {
        let mut w = self.writer.lock();
        if lsn >= w.last_lsn {
            return Ok(0);
        }
        let removed = w.last_lsn - lsn;
        let Some(offset) = self.index.read().get(lsn + 1) else {
            return Err(self.corrupt(0, format!("index has no slot for LSN {}", lsn + 1)));
        };
        assert!(
            offset >= FILE_HEADER_BYTES && offset < w.end_offset,
            "index offset {offset} of LSN {} outside the log (end {})",
            lsn + 1,
            w.end_offset
        );
        failpoint::hit("truncate-before-cut");
        let ctx = format!("truncating {} after LSN {lsn}", self.log_path.display());
        w.file.set_len(offset).map_err(|e| Error::WalFailed(format!("{ctx}: {e}")))?;
        failpoint::hit("truncate-before-fsync");
        w.file.sync_all().map_err(|e| Error::WalFailed(format!("{ctx}: {e}")))?;
        w.end_offset = offset;
        w.last_lsn = lsn;
        self.terms.write().truncate_after(lsn);
        self.last_lsn.store(lsn, Ordering::Release);
        failpoint::hit("truncate-after-fsync");
        Ok(removed)
    }

    /// Append contiguous records with one `write` and index them.
    ///
    /// The caller guarantees `records[0].lsn == last_lsn() + 1`. On failure
    /// the file is cut back to where it was, so no half-written entry stays
    /// behind, and the log is unchanged.
    pub fn append(&self, records: &[Record]) -> Result<()> {
        let mut w = self.writer.lock();
        let Some(first) = records.first() else { return Ok(()) };
        assert_eq!(first.lsn, w.last_lsn + 1, "WAL append must continue the log");
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut offsets = Vec::with_capacity(records.len());
        let mut term = self.terms.read().last_term();
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.lsn, first.lsn + i as u64, "WAL records must be contiguous");
            assert!(record.term >= term, "terms never decrease: {} after {term}", record.term);
            term = record.term;
            offsets.push(w.end_offset + buf.len() as u64);
            encode_entry(record, &mut buf);
        }
        if let Err(e) = w.file.write_all_at(&buf, w.end_offset) {
            // Best effort: remove whatever part of the batch reached the file.
            let _ = w.file.set_len(w.end_offset);
            w.buf = buf;
            return Err(Error::WalFailed(format!(
                "writing {} record(s) at offset {} of {}: {e}",
                records.len(),
                w.end_offset,
                self.log_path.display()
            )));
        }
        {
            let mut index = self.index.write();
            for (record, offset) in records.iter().zip(&offsets) {
                index.set(record.lsn, *offset)?;
            }
        }
        {
            let mut terms = self.terms.write();
            for record in records {
                terms.note(record.lsn, record.term);
            }
        }
        w.end_offset += buf.len() as u64;
        w.last_lsn = records[records.len() - 1].lsn;
        w.buf = buf;
        self.last_lsn.store(w.last_lsn, Ordering::Release);
        Ok(())
    }

    /// Make everything appended so far durable (`fdatasync`).
    pub fn sync(&self) -> Result<()> {
        let w = self.writer.lock();
        w.file.sync_data().map_err(|e| {
            Error::WalFailed(format!("fsync of {} failed: {e}", self.log_path.display()))
        })
    }

    /// Records with LSNs `after + 1 ..= through`, at most `records_max` of
    /// them and about `bytes_max` bytes (always at least one if any is due).
    ///
    /// Lesson 5's `records_after`: the index gives the first record's offset
    /// in O(1), then the log is read sequentially in large chunks.
    pub fn records_after(
        &self,
        after: Lsn,
        through: Lsn,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Record>> {
        let through = through.min(self.last_lsn());
        if after >= through {
            return Ok(Vec::new());
        }
        let Some(mut offset) = self.index.read().get(after + 1) else {
            return Err(self.corrupt(0, format!("index has no slot for LSN {}", after + 1)));
        };
        let mut records = Vec::new();
        let mut bytes_read = 0usize;
        let mut chunk = Vec::new();
        'chunks: while records.len() < records_max && bytes_read < bytes_max {
            let want = READ_CHUNK_BYTES.min(bytes_max - bytes_read).max(ENTRY_HEADER_BYTES);
            self.read_chunk(offset, want, &mut chunk)?;
            let mut at = 0usize;
            loop {
                let next_lsn = after + 1 + records.len() as u64;
                if next_lsn > through || records.len() >= records_max {
                    break 'chunks;
                }
                let entry_offset = offset + at as u64;
                let Some(body_len) = entry_body_len(&chunk[at..]) else {
                    if at == 0 {
                        return Err(self.corrupt(entry_offset, "entry header cut short".into()));
                    }
                    break;
                };
                let entry_len = ENTRY_HEADER_BYTES + body_len as usize;
                if body_len > RECORD_BYTES_MAX {
                    return Err(self.corrupt(entry_offset, format!("entry length {body_len}")));
                }
                if chunk.len() - at < entry_len {
                    if at == 0 {
                        // A record larger than the chunk: read exactly it.
                        self.read_chunk(offset, entry_len, &mut chunk)?;
                        if chunk.len() < entry_len {
                            return Err(self.corrupt(entry_offset, "entry cut short".into()));
                        }
                        continue;
                    }
                    break;
                }
                let record = decode_entry(&chunk[at..at + entry_len], WAL_FORMAT_VERSION)
                    .map_err(|why| self.corrupt(entry_offset, why))?;
                if record.lsn != next_lsn {
                    let why = format!("expected LSN {next_lsn}, found {}", record.lsn);
                    return Err(self.corrupt(entry_offset, why));
                }
                records.push(record);
                at += entry_len;
                bytes_read += entry_len;
                if bytes_read >= bytes_max {
                    break 'chunks;
                }
            }
            offset += at as u64;
        }
        Ok(records)
    }

    fn read_chunk(&self, offset: u64, len: usize, chunk: &mut Vec<u8>) -> Result<()> {
        chunk.resize(len, 0);
        let mut filled = 0;
        while filled < len {
            match self.reader.read_at(&mut chunk[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("reading {}", self.log_path.display()), e)),
            }
        }
        chunk.truncate(filled);
        Ok(())
    }

    fn corrupt(&self, offset: u64, reason: String) -> Error {
        Error::CorruptWal { path: self.log_path.clone(), offset, reason }
    }
}

/// Append one entry (`[body_len][crc32][body]`) for `record` to `out`.
pub fn encode_entry(record: &Record, out: &mut Vec<u8>) {
    let header_at = out.len();
    out.extend_from_slice(&[0u8; ENTRY_HEADER_BYTES]);
    record.encode(out);
    let body = &out[header_at + ENTRY_HEADER_BYTES..];
    let body_len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[header_at..header_at + 4].copy_from_slice(&body_len.to_be_bytes());
    out[header_at + 4..header_at + 8].copy_from_slice(&crc.to_be_bytes());
}

/// The body length an entry header claims, if the header is all there.
fn entry_body_len(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= ENTRY_HEADER_BYTES)
        .then(|| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Check and decode one complete entry of format `version`. The error is
/// the reason it is bad.
fn decode_entry(entry: &[u8], version: u32) -> std::result::Result<Record, String> {
    let crc = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
    let body = &entry[ENTRY_HEADER_BYTES..];
    let actual = crc32fast::hash(body);
    if crc != actual {
        return Err(format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"));
    }
    let mut d = Decoder::new(body);
    let record = match version {
        1 => Record::decode_v1(&mut d),
        _ => Record::decode(&mut d),
    }
    .map_err(|e| e.to_string())?;
    d.finish("WAL record").map_err(|e| e.to_string())?;
    Ok(record)
}

/// The bytes of the current format's file header.
fn file_header() -> [u8; FILE_HEADER_BYTES as usize] {
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    header[..8].copy_from_slice(WAL_MAGIC);
    header[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_be_bytes());
    header
}

/// Read the format version of the log at `path`: `Ok(None)` for a file
/// too short to hold any record (missing, empty, or a torn header), 1 for a
/// file without the magic (the format before headers existed).
pub fn read_format_version(path: &Path) -> Result<Option<u32>> {
    let bytes = match File::open(path) {
        Ok(file) => {
            let mut head = Vec::with_capacity(FILE_HEADER_BYTES as usize);
            file.take(FILE_HEADER_BYTES)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            head
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    if bytes.len() < FILE_HEADER_BYTES as usize {
        // Shorter than a header, and shorter than the smallest v1 entry
        // (8 + 17 bytes): no record can be in it.
        return Ok(None);
    }
    if &bytes[..8] != WAL_MAGIC {
        return Ok(Some(1));
    }
    Ok(Some(u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]])))
}

/// Step 0 of [`Wal::open`]: give a new log its header, upgrade a format-1
/// log, refuse a format from the future. Returns `Some(records)` after an
/// upgrade.
fn prepare_header(dir: &Path, log_path: &Path) -> Result<Option<u64>> {
    match read_format_version(log_path)? {
        Some(WAL_FORMAT_VERSION) => Ok(None),
        None => {
            write_file_durably(dir, log_path, &file_header())?;
            Ok(None)
        }
        Some(1) => upgrade_v1(dir, log_path).map(Some),
        Some(found) => Err(Error::WalVersion {
            path: log_path.to_path_buf(),
            found,
            supported: WAL_FORMAT_VERSION,
        }),
    }
}

/// Rewrite a format-1 log in the current format, every record as term 1.
fn upgrade_v1(dir: &Path, log_path: &Path) -> Result<u64> {
    let mut out = file_header().to_vec();
    let mut count = 0u64;
    let scan = scan_log(log_path, |_, record| {
        encode_entry(record, &mut out);
        count += 1;
    })?;
    if let ScanEnd::TornTail { offset, bytes } = scan.end {
        log::warn!(
            "[wal] format-1 log {} has a torn tail of {bytes} byte(s) at offset {offset}; \
             it is left out of the upgrade (it was never acknowledged)",
            log_path.display()
        );
    }
    let tmp = dir.join(UPGRADE_FILE_NAME);
    write_file_durably(dir, &tmp, &out)?;
    std::fs::rename(&tmp, log_path).map_err(|e| {
        Error::io(format!("renaming {} over {}", tmp.display(), log_path.display()), e)
    })?;
    sync_dir(dir)?;
    log::info!(
        "[wal] upgraded {} from format 1 to format {WAL_FORMAT_VERSION}: {count} record(s), \
         each read as term 1",
        log_path.display()
    );
    Ok(count)
}

/// Write `bytes` to `path` and fsync it (the caller renames it into place
/// or, for a fresh header, it is the file itself).
fn write_file_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = crate::datadir::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    file.write_all_at(bytes, 0).map_err(|e| Error::io(ctx("writing"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Read the log at `path` from the start, calling `visit(offset, record)` for
/// each intact entry, and say which format it has and how it ends. A
/// missing file is an empty log; a format-1 file is read as term 1.
///
/// Used by start-up recovery and by `kv_client wal-dump`; it never writes.
pub fn scan_log(path: &Path, mut visit: impl FnMut(u64, &Record)) -> Result<Scan> {
    let version = match read_format_version(path)? {
        None => {
            let end = ScanEnd::Clean { end_offset: 0 };
            return Ok(Scan { version: WAL_FORMAT_VERSION, end });
        }
        Some(v) if v > WAL_FORMAT_VERSION => {
            return Err(Error::WalVersion {
                path: path.to_path_buf(),
                found: v,
                supported: WAL_FORMAT_VERSION,
            })
        }
        Some(v) => v,
    };
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let ctx = || format!("reading {}", path.display());
    let file_len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    let mut reader = BufReader::with_capacity(READ_CHUNK_BYTES, file);
    let corrupt = |offset, reason| Error::CorruptWal { path: path.to_path_buf(), offset, reason };
    let (mut offset, fixed_bytes) = match version {
        1 => (0u64, RECORD_V1_FIXED_BYTES as u32),
        _ => {
            let mut header = [0u8; FILE_HEADER_BYTES as usize];
            reader.read_exact(&mut header).map_err(|e| Error::io(ctx(), e))?;
            (FILE_HEADER_BYTES, RECORD_FIXED_BYTES as u32)
        }
    };
    let body_max = RECORD_BYTES_MAX;
    let done = |end| Ok(Scan { version, end });
    let mut expected_lsn: Lsn = 1;
    let mut entry = Vec::new();
    loop {
        let remaining = file_len - offset;
        let torn = ScanEnd::TornTail { offset, bytes: remaining };
        if remaining == 0 {
            return done(ScanEnd::Clean { end_offset: offset });
        }
        if remaining < ENTRY_HEADER_BYTES as u64 {
            return done(torn);
        }
        entry.resize(ENTRY_HEADER_BYTES, 0);
        reader.read_exact(&mut entry).map_err(|e| Error::io(ctx(), e))?;
        let body_len = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let entry_len = ENTRY_HEADER_BYTES as u64 + u64::from(body_len);
        if !(fixed_bytes..=body_max).contains(&body_len) {
            // A length no writer produces. Zeros to the end of the file are a
            // tail the file system extended but never filled: torn.
            let rest_is_zero = entry.iter().all(|b| *b == 0) && rest_is_zero(&mut reader)?;
            if rest_is_zero {
                return done(torn);
            }
            return Err(corrupt(offset, format!("impossible entry length {body_len}")));
        }
        if entry_len > remaining {
            return done(torn);
        }
        entry.resize(entry_len as usize, 0);
        reader.read_exact(&mut entry[ENTRY_HEADER_BYTES..]).map_err(|e| Error::io(ctx(), e))?;
        let is_last = entry_len == remaining;
        let record = match decode_entry(&entry, version) {
            Ok(record) => record,
            Err(_) if is_last => return done(torn),
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

fn rest_is_zero(reader: &mut impl Read) -> Result<bool> {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) if buf[..n].iter().all(|b| *b == 0) => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading WAL tail", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::Op;
    use std::fs::OpenOptions;

    fn put(lsn: Lsn, key: &str, value: &str) -> Record {
        Record { lsn, term: 1, op: Op::Put { key: key.into(), value: value.into() } }
    }

    fn open(dir: &Path) -> (Wal, WalRecovery, Vec<Record>) {
        let mut seen = Vec::new();
        let (wal, recovery) = Wal::open(dir, |r| seen.push(r.clone())).unwrap();
        (wal, recovery, seen)
    }

    fn write_records(dir: &Path, count: u64) -> Vec<Record> {
        let (wal, _, _) = open(dir);
        let records: Vec<Record> =
            (1..=count).map(|i| put(i, &format!("key{i}"), &format!("value{i}"))).collect();
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        records
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let records = write_records(dir.path(), 5);
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!(seen, records);
        assert_eq!((recovery.last_lsn, recovery.torn_tail), (5, None));
        assert_eq!(wal.last_lsn(), 5);
    }

    #[test]
    fn truncation_at_every_byte_of_the_last_record_keeps_the_others() {
        // Goal: a crash that cuts the last record anywhere loses only that
        // record. Method: write 3 records, then for every length inside the
        // third, truncate a copy of the log there and recover it.
        let dir = tempfile::tempdir().unwrap();
        let records = write_records(dir.path(), 3);
        let log = std::fs::read(dir.path().join(LOG_FILE_NAME)).unwrap();
        let third_at = {
            let mut bytes = file_header().to_vec();
            encode_entry(&records[0], &mut bytes);
            encode_entry(&records[1], &mut bytes);
            bytes.len()
        };
        for cut in third_at..log.len() {
            let copy = tempfile::tempdir().unwrap();
            std::fs::write(copy.path().join(LOG_FILE_NAME), &log[..cut]).unwrap();
            let (wal, recovery, seen) = open(copy.path());
            assert_eq!(seen, records[..2], "cut at {cut}");
            let torn = (cut > third_at).then_some((third_at as u64, (cut - third_at) as u64));
            assert_eq!(recovery.torn_tail, torn, "cut at {cut}");
            // The log continues cleanly after the truncation.
            wal.append(&[put(3, "again", "x")]).unwrap();
            drop(wal);
            let (_, _, seen) = open(copy.path());
            assert_eq!(seen.len(), 3, "cut at {cut}");
        }
    }

    #[test]
    fn flipped_byte_in_a_middle_record_is_reported_not_skipped() {
        // Goal: corruption before the tail stops start-up with the offset.
        let dir = tempfile::tempdir().unwrap();
        let records = write_records(dir.path(), 3);
        let path = dir.path().join(LOG_FILE_NAME);
        let mut log = std::fs::read(&path).unwrap();
        let mut first = file_header().to_vec();
        encode_entry(&records[0], &mut first);
        let flip_at = first.len() + ENTRY_HEADER_BYTES + 10; // inside record 2's body
        log[flip_at] ^= 0x40;
        std::fs::write(&path, &log).unwrap();
        match Wal::open(dir.path(), |_| {}) {
            Err(Error::CorruptWal { offset, .. }) => assert_eq!(offset, first.len() as u64),
            Err(other) => panic!("expected CorruptWal, got {other}"),
            Ok(_) => panic!("expected CorruptWal, got a WAL"),
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 2);
        let path = dir.path().join(LOG_FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len + 4096).unwrap();
        let (_, recovery, seen) = open(dir.path());
        assert_eq!(seen.len(), 2);
        assert_eq!(recovery.torn_tail, Some((len, 4096)));
    }

    #[test]
    fn index_is_rebuilt_after_deletion_or_truncation() {
        // Goal: the WAL is the source of truth; a lost index costs nothing.
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 50);
        let index_path = dir.path().join(INDEX_FILE_NAME);
        std::fs::remove_file(&index_path).unwrap();
        let (wal, recovery, _) = open(dir.path());
        assert!(recovery.index_created);
        assert_eq!(recovery.index_slots_rebuilt, 50);
        assert_eq!(wal.records_after(40, 50, 100, 1 << 20).unwrap().len(), 10);
        drop(wal);

        let f = OpenOptions::new().write(true).open(&index_path).unwrap();
        f.set_len(16 + 8 * 20).unwrap(); // keep 20 slots only
        drop(f);
        let (wal, recovery, _) = open(dir.path());
        assert!(!recovery.index_created);
        assert_eq!(recovery.index_slots_rebuilt, 30);
        let after = wal.records_after(20, 50, 100, 1 << 20).unwrap();
        assert_eq!(after.first().map(|r| r.lsn), Some(21));
        assert_eq!(after.len(), 30);
    }

    #[test]
    fn records_after_respects_bounds() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 100);
        let (wal, _, _) = open(dir.path());
        let lsns = |v: Vec<Record>| v.iter().map(|r| r.lsn).collect::<Vec<_>>();
        assert_eq!(lsns(wal.records_after(0, 3, 100, 1 << 20).unwrap()), vec![1, 2, 3]);
        assert_eq!(lsns(wal.records_after(97, 100, 100, 1 << 20).unwrap()), vec![98, 99, 100]);
        assert_eq!(wal.records_after(10, 100, 5, 1 << 20).unwrap().len(), 5);
        assert_eq!(wal.records_after(100, 100, 5, 1 << 20).unwrap().len(), 0);
        // A tiny byte budget still returns one record.
        assert_eq!(wal.records_after(0, 100, 100, 1).unwrap().len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        // Goal: recovery never panics on any file, and whatever damage it
        // meets it either keeps a prefix of the records or refuses to start;
        // it never invents or reorders a record.
        #[test]
        fn recovery_of_a_damaged_log_keeps_a_prefix_or_refuses(
            flips in proptest::collection::vec((0usize..2000, 1u8..=255), 0..4),
            cut in 0usize..2000,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let records = write_records(dir.path(), 20);
            let path = dir.path().join(LOG_FILE_NAME);
            let mut log = std::fs::read(&path).unwrap();
            for (at, mask) in flips {
                let at = at % log.len();
                log[at] ^= mask;
            }
            log.truncate(cut.min(log.len()));
            log.extend_from_slice(&junk);
            std::fs::write(&path, &log).unwrap();
            std::fs::remove_file(dir.path().join(INDEX_FILE_NAME)).unwrap();
            let mut seen = Vec::new();
            match Wal::open(dir.path(), |r| seen.push(r.clone())) {
                Ok(_) => proptest::prop_assert_eq!(&records[..seen.len()], &seen[..]),
                // A damaged header is either not ours (corrupt) or names a
                // version this build refuses; never a misread record.
                Err(e) => proptest::prop_assert!(
                    matches!(e, Error::CorruptWal { .. } | Error::WalVersion { .. }),
                    "{}",
                    e
                ),
            }
        }
    }

    #[test]
    fn large_records_cross_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path());
        let big = "x".repeat(700_000);
        let records: Vec<Record> = (1..=4).map(|i| put(i, "k", &big)).collect();
        wal.append(&records).unwrap();
        let all = wal.records_after(0, 4, 100, 64 << 20).unwrap();
        assert_eq!(all, records);
    }

    /// The bytes of a format-1 log (no header, no term) holding `records`.
    fn v1_log(records: &[Record]) -> Vec<u8> {
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

    #[test]
    fn a_format_1_log_is_upgraded_with_every_record_as_term_1() {
        // Goal: a data dir from before terms opens, reads the same records
        // as term 1, and is rewritten in the current format.
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=3).map(|i| put(i, &format!("k{i}"), "v")).collect();
        std::fs::write(dir.path().join(LOG_FILE_NAME), v1_log(&records)).unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        assert_eq!(read_format_version(&path).unwrap(), Some(1));
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!(seen, records);
        assert_eq!(recovery.upgraded_from_v1, Some(3));
        assert_eq!((wal.last_lsn(), wal.last_term()), (3, 1));
        assert_eq!(read_format_version(&path).unwrap(), Some(WAL_FORMAT_VERSION));
        assert_eq!(wal.records_after(1, 3, 10, 1 << 20).unwrap(), records[1..]);
        drop(wal);
        let (_, recovery, seen) = open(dir.path());
        assert_eq!((seen, recovery.upgraded_from_v1), (records, None));
    }

    #[test]
    fn a_log_from_a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let mut bytes = file_header().to_vec();
        bytes[8..12].copy_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"records this build cannot read");
        std::fs::write(&path, &bytes).unwrap();
        match Wal::open(dir.path(), |_| {}) {
            Err(e @ Error::WalVersion { found: 3, supported: 2, .. }) => {
                assert!(e.to_string().contains("format version 3"), "{e}")
            }
            Err(other) => panic!("expected WalVersion, got {other}"),
            Ok(_) => panic!("a format-3 log was opened"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file is untouched");
    }

    #[test]
    fn truncate_after_cuts_the_log_and_the_term_history() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path());
        let mut records: Vec<Record> = (1..=4).map(|i| put(i, "k", "v")).collect();
        records[3].term = 2;
        wal.append(&records).unwrap();
        assert_eq!(wal.truncate_after(2).unwrap(), 2);
        assert_eq!((wal.last_lsn(), wal.last_term(), wal.term_at(3)), (2, 1, None));
        wal.append(&[Record { lsn: 3, term: 3, op: Op::Delete { key: b"k".to_vec() } }]).unwrap();
        drop(wal);
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!(
            seen.iter().map(|r| (r.lsn, r.term)).collect::<Vec<_>>(),
            [(1, 1), (2, 1), (3, 3)]
        );
        assert_eq!((recovery.last_term, wal.term_history().runs()), (3, &[(1, 1), (3, 3)][..]));
    }
}
