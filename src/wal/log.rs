//! The log: a sequence of segment files — append, fsync, crash recovery,
//! truncation, compaction and `records_after` (week 9, lesson 5;
//! truncation: `docs/FAILOVER.md`; segments and compaction: `docs/STORAGE.md`).
//!
//! ## The files
//!
//! `DATA_DIR/wal/` holds the segments ([`crate::wal::segment`]: one file
//! of entries per range of LSNs, named by its first LSN) and beside each
//! its index ([`crate::wal::index`]). Records are appended to the last
//! segment; when it holds `--wal-segment-bytes` or more, the next batch
//! goes into a new one. LSNs are contiguous across segments: a segment
//! starts at the LSN after the previous one's last.
//!
//! ## Recovery
//!
//! [`Wal::open`] is given the snapshot the map was loaded from, its
//! **base** `(lsn, term)` (`(0, 0)` without one), and reads every segment
//! in order:
//!
//! - each entry's checksum, LSN and term are checked and its index slot
//!   compared with its offset (rewritten if wrong); records after the base
//!   are decoded and replayed into the map, those at or before it only
//!   checked (the snapshot already holds them);
//! - the segment being appended to is allocated ahead (`preallocate`):
//!   zeros after the last entry are where its log ends;
//! - a torn tail of the last segment (a damaged last entry, with nothing
//!   but zeros after it) is truncated and logged; a damaged entry followed
//!   by more data — or a torn tail in a segment that is not the last — is
//!   corruption: start-up stops, naming file and offset;
//! - segments must follow each other without a gap, and the first must
//!   start at or before `base + 1`: otherwise records are missing and
//!   start-up stops ([`Error::MissingRecords`]).
//!
//! If the log does not hold the base record with the base's term — it ends
//! before it, or holds another term there — the snapshot **supersedes** the
//! log: it was installed from a leader (`docs/STORAGE.md`, snapshot
//! install) and the node crashed before it removed its old segments. They
//! are removed now, and the log starts afresh after the base.
//!
//! ## The term history
//!
//! While it reads or appends records the log keeps a [`TermHistory`]: for
//! each term, the first LSN written in it. It answers "which term wrote LSN
//! n?" without reading the files, which is what the log-matching check of
//! AppendEntries needs. It starts at the record before the first segment
//! (whose term that segment's header carries).
//!
//! ## Truncation (divergence repair) and compaction
//!
//! [`Wal::truncate_after`] removes every record after an LSN: the segments
//! wholly after it are deleted (newest first), then one `ftruncate` at the
//! offset the index gives, and an fsync. A crash in between leaves a log
//! that ends somewhere between the old end and the new one: the follower
//! repeats the repair when it reconnects.
//!
//! [`Wal::remove_through`] deletes the oldest segments, once a snapshot
//! holds their records (oldest first, so a crash leaves a log without a
//! gap); [`Wal::reset_after`] replaces the whole log by an empty one after
//! a snapshot installed from the leader.
//!
//! ## Concurrency
//!
//! One thread at a time appends, truncates or compacts (each takes the
//! writer lock); any number of replication senders read with positioned
//! reads (`pread`), which need no shared file cursor. A reader holds its
//! segments through `Arc`s: a segment deleted while it reads stays open
//! until it is done. A reader is only ever asked for records up to an LSN
//! that has been fully written.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::failpoint;
use crate::limits::{RECORD_BYTES_MAX, WAL_SEGMENT_BYTES_DEFAULT};
use crate::wal::index::{initial_slots, IndexOpened, SegmentIndex};
use crate::wal::record::Record;
use crate::wal::segment::{
    self, decode_entry, encode_entry, entry_body_len, ScanEnd, SegmentHeader, ENTRY_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::wal::terms::TermHistory;
use crate::wal::upgrade;
use crate::{Lsn, Term};

/// Name of the directory of segments inside the data directory.
pub const WAL_DIR_NAME: &str = "wal";

/// How much `records_after` reads per `pread` (1 MiB): big enough that a
/// catch-up costs a few syscalls per thousand records.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// How the log is laid out on disk, and whether a full segment is
/// fsynced when the next one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that holds this many bytes or more is closed and the next
    /// batch starts a new one (`--wal-segment-bytes`).
    pub segment_bytes: u64,
    /// fsync a full segment before continuing in the next one, so that
    /// [`Wal::sync`], which syncs only the active segment, covers every
    /// batch appended before it started (`--fsync always`). Without it
    /// (`--fsync never`) flushing stays with the kernel: syncing up to 64
    /// MiB of dirty pages under the writer's lock stalled every write for
    /// about 250 ms.
    pub sync_full_segments: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions { segment_bytes: WAL_SEGMENT_BYTES_DEFAULT, sync_full_segments: true }
    }
}

/// The snapshot a log continues: the last LSN it holds and that record's
/// term. `Base::NONE` is no snapshot: the log starts at LSN 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    pub lsn: Lsn,
    pub term: Term,
}

impl Base {
    pub const NONE: Base = Base { lsn: 0, term: 0 };
}

/// One segment file, open for positioned reads, with its index.
struct Segment {
    header: SegmentHeader,
    path: PathBuf,
    index_path: PathBuf,
    reader: File,
    index: RwLock<SegmentIndex>,
    /// Bytes of the file that hold whole entries (header included).
    end_offset: AtomicU64,
    /// LSN of its last record; `first_lsn - 1` while it has none.
    last_lsn: AtomicU64,
}

impl Segment {
    /// Open the segment described by `header` in `dir` (the file exists).
    fn open(dir: &Path, header: SegmentHeader, segment_bytes: u64) -> Result<(Segment, bool)> {
        let path = dir.join(segment::segment_file_name(header.first_lsn));
        let index_path = dir.join(segment::index_file_name(header.first_lsn));
        let reader =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let (index, opened) =
            SegmentIndex::open(&index_path, header.first_lsn, initial_slots(segment_bytes))?;
        let segment = Segment {
            header,
            path,
            index_path,
            reader,
            index: RwLock::new(index),
            end_offset: AtomicU64::new(SEGMENT_HEADER_BYTES),
            last_lsn: AtomicU64::new(header.first_lsn - 1),
        };
        Ok((segment, opened == IndexOpened::Created))
    }

    fn first_lsn(&self) -> Lsn {
        self.header.first_lsn
    }

    fn last_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Acquire)
    }

    fn bytes(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    fn name(&self) -> String {
        segment::segment_file_name(self.header.first_lsn)
    }

    /// A write handle on the file.
    fn open_for_writing(&self) -> Result<File> {
        crate::datadir::file_options()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::WalFailed(format!("opening {}: {e}", self.path.display())))
    }

    /// A write handle on the file for appending, its space allocated up to
    /// `bytes` (see [`preallocate`]).
    fn open_appending(&self, bytes: u64) -> Result<File> {
        let file = self.open_for_writing()?;
        preallocate(&file, &self.path, bytes)?;
        Ok(file)
    }

    /// Delete the segment and its index from the disk (the caller fsyncs
    /// the directory). Readers still holding it keep reading their handle.
    fn remove_files(&self) -> Result<()> {
        for path in [&self.path, &self.index_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// Append to `out` the records `first..=through` this segment holds,
    /// within the limits (always at least one if any is due), counting
    /// their bytes in `bytes_read`.
    fn read_records(
        &self,
        first: Lsn,
        through: Lsn,
        (records_max, bytes_max): (usize, usize),
        out: &mut Vec<Record>,
        bytes_read: &mut usize,
    ) -> Result<()> {
        let through = through.min(self.last_lsn());
        if first > through {
            return Ok(());
        }
        let Some(mut offset) = self.index.read().get(first) else {
            return Err(self.corrupt(0, format!("index has no slot for LSN {first}")));
        };
        let started_with = out.len();
        let mut chunk = Vec::new();
        'chunks: loop {
            let taken = out.len() - started_with;
            if taken >= records_max || *bytes_read >= bytes_max {
                break;
            }
            let want = READ_CHUNK_BYTES.min(bytes_max - *bytes_read).max(ENTRY_HEADER_BYTES);
            self.read_chunk(offset, want, &mut chunk)?;
            let mut at = 0usize;
            loop {
                let next_lsn = first + (out.len() - started_with) as u64;
                if next_lsn > through || out.len() - started_with >= records_max {
                    break 'chunks;
                }
                let entry_offset = offset + at as u64;
                let Some(body_len) = entry_body_len(&chunk[at..]) else {
                    if at == 0 {
                        return Err(self.corrupt(entry_offset, "entry header cut short".into()));
                    }
                    break;
                };
                if body_len > RECORD_BYTES_MAX {
                    return Err(self.corrupt(entry_offset, format!("entry length {body_len}")));
                }
                let entry_len = ENTRY_HEADER_BYTES + body_len as usize;
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
                let record = decode_entry(&chunk[at..at + entry_len])
                    .map_err(|why| self.corrupt(entry_offset, why))?;
                if record.lsn != next_lsn {
                    let why = format!("expected LSN {next_lsn}, found {}", record.lsn);
                    return Err(self.corrupt(entry_offset, why));
                }
                out.push(record);
                at += entry_len;
                *bytes_read += entry_len;
                if *bytes_read >= bytes_max {
                    break 'chunks;
                }
            }
            offset += at as u64;
        }
        Ok(())
    }

    fn read_chunk(&self, offset: u64, len: usize, chunk: &mut Vec<u8>) -> Result<()> {
        chunk.resize(len, 0);
        let mut filled = 0;
        while filled < len {
            match self.reader.read_at(&mut chunk[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
            }
        }
        chunk.truncate(filled);
        Ok(())
    }

    fn corrupt(&self, offset: u64, reason: String) -> Error {
        Error::CorruptWal { path: self.path.clone(), offset, reason }
    }
}

/// A segment as `status`, compaction and `wal-dump` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file name, e.g. `00000000000000000001.seg`.
    pub name: String,
    pub first_lsn: Lsn,
    /// `first_lsn - 1` while the segment holds no record.
    pub last_lsn: Lsn,
    /// Bytes of the segment file (its index not counted).
    pub bytes: u64,
}

/// The write-ahead log of one data directory.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    sync_full_segments: bool,
    writer: Mutex<Writer>,
    /// Every segment kept, oldest first; the last is the one appended to.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Last LSN whose bytes are written and indexed.
    last_lsn: AtomicU64,
    /// Bytes appended since the log was opened (the snapshot thread is
    /// woken as it grows).
    appended: AtomicU64,
    /// Term → first LSN, for every record in the log.
    terms: RwLock<TermHistory>,
}

struct Writer {
    /// A write handle on the active (last) segment, shared with an fsync
    /// running outside the writer's lock (see [`Wal::sync`]).
    file: Arc<File>,
    active: Arc<Segment>,
    end_offset: u64,
    last_lsn: Lsn,
    buf: Vec<u8>,
}

/// What start-up found in the log, for the operator's log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecovery {
    /// Records read from every segment.
    pub records: u64,
    /// Of those, records after the base: replayed into the map.
    pub replayed: u64,
    /// The first LSN the log holds (base + 1 if it holds none).
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    /// Term of the last record (the base's term if the log is empty).
    pub last_term: Term,
    pub segments: usize,
    /// `(segment, offset, bytes)` of a torn tail that was truncated.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Index slots that were missing or wrong and have been rewritten.
    pub index_slots_rebuilt: u64,
    /// Indexes that were missing or foreign and were created afresh.
    pub indexes_created: u64,
    /// `Some((version, records))` if a `wal.log` of that format was upgraded.
    pub upgraded: Option<(u32, u64)>,
    /// Why the old segments were removed, if the snapshot superseded them.
    pub superseded: Option<String>,
}

impl Wal {
    /// Open the WAL of `data_dir` with the default options and no snapshot,
    /// calling `apply` with every record in LSN order.
    pub fn open(data_dir: &Path, apply: impl FnMut(Record)) -> Result<(Wal, WalRecovery)> {
        Wal::open_with(data_dir, WalOptions::default(), Base::NONE, apply)
    }

    /// Open the WAL of `data_dir`, recover it, and call `apply` with every
    /// record after `base` in LSN order (this is how start-up rebuilds the
    /// map on top of the snapshot it loaded). See the module doc.
    pub fn open_with(
        data_dir: &Path,
        options: WalOptions,
        base: Base,
        apply: impl FnMut(Record),
    ) -> Result<(Wal, WalRecovery)> {
        let dir = data_dir.join(WAL_DIR_NAME);
        let upgraded = prepare_dir(data_dir)?.upgraded;
        let mut headers = list_segments(&dir)?;
        if headers.is_empty() {
            let header = SegmentHeader { first_lsn: base.lsn + 1, prev_term: base.term };
            segment::create(&dir, &header)?;
            headers.push(header);
        }
        if headers[0].first_lsn > base.lsn + 1 {
            return Err(Error::MissingRecords {
                from: base.lsn + 1,
                to: headers[0].first_lsn - 1,
                why: format!(
                    "the oldest WAL segment starts at LSN {}, and the snapshot loaded ends at LSN \
                     {}",
                    headers[0].first_lsn, base.lsn
                ),
            });
        }
        let mut recovery = WalRecovery {
            records: 0,
            replayed: 0,
            first_lsn: headers[0].first_lsn,
            last_lsn: 0,
            last_term: 0,
            segments: 0,
            torn_tail: None,
            index_slots_rebuilt: 0,
            indexes_created: 0,
            upgraded,
            superseded: None,
        };
        let mut replay = Replay {
            base,
            apply,
            terms: TermHistory::starting_after(headers[0].first_lsn - 1, headers[0].prev_term),
            superseded: None,
        };
        let mut segments = Vec::with_capacity(headers.len());
        for (i, header) in headers.iter().enumerate() {
            let is_last = i + 1 == headers.len();
            let segment =
                recover_segment(&dir, options, *header, is_last, &mut replay, &mut recovery)?;
            segments.push(Arc::new(segment));
        }
        if let Some(bad) = replay.terms.decreasing() {
            let path = dir.clone();
            return Err(Error::CorruptWal { path, offset: 0, reason: bad });
        }
        replay.check_base_at_end();
        let mut terms = replay.terms;
        if let Some(why) = replay.superseded {
            // The snapshot replaces the log: start it afresh after the base.
            for segment in segments.iter().rev() {
                segment.remove_files()?;
            }
            let header = SegmentHeader { first_lsn: base.lsn + 1, prev_term: base.term };
            segment::create(&dir, &header)?;
            let (segment, _) = Segment::open(&dir, header, options.segment_bytes)?;
            segments = vec![Arc::new(segment)];
            terms = TermHistory::starting_after(base.lsn, base.term);
            recovery.first_lsn = base.lsn + 1;
            recovery.superseded = Some(why);
        }
        let active = Arc::clone(segments.last().expect("at least one segment"));
        let last_lsn = terms.last_lsn();
        recovery.last_lsn = last_lsn;
        recovery.last_term = terms.last_term();
        recovery.segments = segments.len();
        let file = active.open_appending(options.segment_bytes)?;
        let wal = Wal {
            dir,
            segment_bytes: options.segment_bytes,
            sync_full_segments: options.sync_full_segments,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                end_offset: active.bytes(),
                last_lsn,
                active,
                buf: Vec::new(),
            }),
            segments: RwLock::new(segments),
            last_lsn: AtomicU64::new(last_lsn),
            appended: AtomicU64::new(0),
            terms: RwLock::new(terms),
        };
        Ok((wal, recovery))
    }

    /// The directory of segments (`DATA_DIR/wal`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Last LSN written to the log (0 if empty). Not necessarily fsynced.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Acquire)
    }

    /// The first LSN the log holds (the one after its base when it holds
    /// none): records before it are only in a snapshot.
    pub fn first_lsn(&self) -> Lsn {
        self.segments.read()[0].first_lsn()
    }

    /// The term of the record at `lsn`: 0 for LSN 0, `None` beyond the end
    /// or before the log's base (compacted).
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

    /// Every segment kept, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .read()
            .iter()
            .map(|s| SegmentInfo {
                name: s.name(),
                first_lsn: s.first_lsn(),
                last_lsn: s.last_lsn(),
                bytes: s.bytes(),
            })
            .collect()
    }

    /// Bytes of the segments on disk (indexes not counted).
    pub fn bytes_on_disk(&self) -> u64 {
        self.segments.read().iter().map(|s| s.bytes()).sum()
    }

    /// Bytes of the log holding records after `lsn` (0 if none).
    pub fn bytes_after(&self, lsn: Lsn) -> u64 {
        let segments = self.segments.read();
        let mut bytes = 0;
        for s in segments.iter().rev() {
            if s.last_lsn() <= lsn {
                break;
            }
            if s.first_lsn() > lsn {
                bytes += s.bytes() - SEGMENT_HEADER_BYTES;
                continue;
            }
            let offset = s.index.read().get(lsn + 1).unwrap_or(SEGMENT_HEADER_BYTES);
            bytes += s.bytes().saturating_sub(offset);
            break;
        }
        bytes
    }

    /// Append contiguous records with one `write` and index them, first
    /// starting a new segment if the active one is full.
    ///
    /// The caller guarantees `records[0].lsn == last_lsn() + 1`. On failure
    /// the file is cut back to where it was, so no half-written entry stays
    /// behind, and the log is unchanged.
    pub fn append(&self, records: &[Record]) -> Result<()> {
        let mut w = self.writer.lock();
        let Some(first) = records.first() else { return Ok(()) };
        assert_eq!(first.lsn, w.last_lsn + 1, "WAL append must continue the log");
        if w.end_offset >= self.segment_bytes && w.last_lsn >= w.active.first_lsn() {
            self.roll(&mut w)?;
        }
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
                w.active.path.display()
            )));
        }
        {
            let mut index = w.active.index.write();
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
        self.appended.fetch_add(buf.len() as u64, Ordering::AcqRel);
        w.buf = buf;
        w.active.end_offset.store(w.end_offset, Ordering::Release);
        w.active.last_lsn.store(w.last_lsn, Ordering::Release);
        self.last_lsn.store(w.last_lsn, Ordering::Release);
        Ok(())
    }

    /// Bytes appended since the log was opened.
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Close the full active segment and start the next one. With
    /// `sync_full_segments` (`--fsync always`) the full one is fsynced
    /// first: a batch may have been written to it while an fsync was
    /// running, and later fsyncs only reach the new active segment.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if self.sync_full_segments {
            w.file.sync_data().map_err(|e| {
                Error::WalFailed(format!(
                    "fsync of full segment {} failed: {e}",
                    w.active.path.display()
                ))
            })?;
        }
        let header = SegmentHeader { first_lsn: w.last_lsn + 1, prev_term: self.last_term() };
        let failed = |e: Error| Error::WalFailed(format!("starting a new WAL segment: {e}"));
        segment::create(&self.dir, &header).map_err(failed)?;
        let (segment, _) = Segment::open(&self.dir, header, self.segment_bytes).map_err(failed)?;
        let segment = Arc::new(segment);
        let file = segment.open_appending(self.segment_bytes)?;
        log::info!(
            "[wal] segment {} is full ({} bytes, LSN {}..{}); continuing in {}",
            w.active.name(),
            w.end_offset,
            w.active.first_lsn(),
            w.last_lsn,
            segment.name()
        );
        self.segments.write().push(Arc::clone(&segment));
        w.file = Arc::new(file);
        w.active = segment;
        w.end_offset = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    /// Make everything appended so far durable (`fdatasync`).
    ///
    /// The fsync runs without the writer's lock, so the next batch can be
    /// written meanwhile (the committer's pipeline, `crate::db`). It covers
    /// every batch appended before it started: those in the active segment
    /// by this call, those in earlier segments by `Wal::roll`.
    pub fn sync(&self) -> Result<()> {
        let (file, path) = {
            let w = self.writer.lock();
            (Arc::clone(&w.file), w.active.path.clone())
        };
        file.sync_data()
            .map_err(|e| Error::WalFailed(format!("fsync of {} failed: {e}", path.display())))
    }

    /// Records with LSNs `after + 1 ..= through`, at most `records_max` of
    /// them and about `bytes_max` bytes (always at least one if any is due).
    ///
    /// Lesson 5's `records_after`: a binary search over the segments and
    /// one index slot give the first record's offset, then the segments are
    /// read sequentially in large chunks. [`Error::Compacted`] if `after +
    /// 1` is before the log's first LSN.
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
        let segments = self.segments_from(after + 1)?;
        let mut records = Vec::new();
        let mut bytes_read = 0usize;
        for segment in segments {
            let next = after + 1 + records.len() as u64;
            let left = records_max - records.len();
            if next > through || left == 0 || bytes_read >= bytes_max {
                break;
            }
            segment.read_records(
                next,
                through,
                (left, bytes_max),
                &mut records,
                &mut bytes_read,
            )?;
        }
        Ok(records)
    }

    /// Call `apply` with every record `after + 1 ..= through`, in order.
    pub fn replay(&self, after: Lsn, through: Lsn, mut apply: impl FnMut(Record)) -> Result<()> {
        let mut next = after + 1;
        while next <= through {
            let records = self.records_after(next - 1, through, 4096, READ_CHUNK_BYTES)?;
            let Some(last) = records.last().map(|r| r.lsn) else {
                return Err(Error::Unexpected(format!("no record after LSN {}", next - 1)));
            };
            records.into_iter().for_each(&mut apply);
            next = last + 1;
        }
        Ok(())
    }

    /// The segments from the one holding `lsn` on.
    fn segments_from(&self, lsn: Lsn) -> Result<Vec<Arc<Segment>>> {
        let segments = self.segments.read();
        let first_lsn = segments[0].first_lsn();
        if lsn < first_lsn {
            return Err(Error::Compacted { lsn, first_lsn });
        }
        let i = segments.partition_point(|s| s.first_lsn() <= lsn) - 1;
        Ok(segments[i..].to_vec())
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
        let segments = self.segments_from(lsn + 1)?;
        let keep = Arc::clone(&segments[0]);
        failpoint::hit("truncate-before-cut");
        let failed =
            |e: Error| Error::WalFailed(format!("truncating the log after LSN {lsn}: {e}"));
        // 1. Whole segments after the cut go, newest first.
        for segment in segments[1..].iter().rev() {
            segment.remove_files().map_err(failed)?;
        }
        if segments.len() > 1 {
            self.segments.write().retain(|s| s.first_lsn() <= keep.first_lsn());
            segment::sync_dir(&self.dir).map_err(failed)?;
        }
        // 2. One cut inside the segment that holds LSN `lsn + 1`.
        let Some(offset) = keep.index.read().get(lsn + 1) else {
            return Err(keep.corrupt(0, format!("index has no slot for LSN {}", lsn + 1)));
        };
        assert!(
            offset >= SEGMENT_HEADER_BYTES && offset < keep.bytes(),
            "index offset {offset} of LSN {} outside its segment (end {})",
            lsn + 1,
            keep.bytes()
        );
        let file = keep.open_for_writing()?;
        let ctx = format!("truncating {} after LSN {lsn}", keep.path.display());
        file.set_len(offset).map_err(|e| Error::WalFailed(format!("{ctx}: {e}")))?;
        failpoint::hit("truncate-before-fsync");
        file.sync_all().map_err(|e| Error::WalFailed(format!("{ctx}: {e}")))?;
        preallocate(&file, &keep.path, self.segment_bytes)?;
        keep.end_offset.store(offset, Ordering::Release);
        keep.last_lsn.store(lsn, Ordering::Release);
        w.file = Arc::new(file);
        w.active = keep;
        w.end_offset = offset;
        w.last_lsn = lsn;
        self.terms.write().truncate_after(lsn);
        self.last_lsn.store(lsn, Ordering::Release);
        failpoint::hit("truncate-after-fsync");
        Ok(removed)
    }

    /// Compaction: delete the oldest segments whose records are all at or
    /// below `lsn` (never the one appended to), oldest first. Returns how
    /// many segments and bytes went.
    pub fn remove_through(&self, lsn: Lsn) -> Result<(usize, u64)> {
        let _w = self.writer.lock();
        let segments = self.segments.read().clone();
        let count = segments[..segments.len() - 1]
            .iter()
            .take_while(|s| s.last_lsn() <= lsn && s.last_lsn() >= s.first_lsn())
            .count();
        if count == 0 {
            return Ok((0, 0));
        }
        let mut bytes = 0;
        for (i, segment) in segments[..count].iter().enumerate() {
            if i > 0 {
                failpoint::hit("compact-between-deletes");
            }
            segment.remove_files()?;
            bytes += segment.bytes();
        }
        self.segments.write().drain(..count);
        segment::sync_dir(&self.dir)?;
        let first = &segments[count];
        self.terms.write().forget_before(first.first_lsn() - 1);
        Ok((count, bytes))
    }

    /// Replace the whole log by an empty one that continues a snapshot
    /// ending at `(lsn, term)`: the snapshot installed from the leader
    /// holds everything, and our records may even differ from its.
    pub fn reset_after(&self, lsn: Lsn, term: Term) -> Result<()> {
        let mut w = self.writer.lock();
        let segments = self.segments.read().clone();
        let failed = |e: Error| Error::WalFailed(format!("resetting the log after LSN {lsn}: {e}"));
        for segment in segments.iter().rev() {
            segment.remove_files().map_err(failed)?;
            failpoint::hit("reset-between-deletes");
        }
        segment::sync_dir(&self.dir).map_err(failed)?;
        let header = SegmentHeader { first_lsn: lsn + 1, prev_term: term };
        segment::create(&self.dir, &header).map_err(failed)?;
        let (segment, _) = Segment::open(&self.dir, header, self.segment_bytes).map_err(failed)?;
        let segment = Arc::new(segment);
        w.file = Arc::new(segment.open_appending(self.segment_bytes)?);
        w.active = Arc::clone(&segment);
        w.end_offset = SEGMENT_HEADER_BYTES;
        w.last_lsn = lsn;
        *self.segments.write() = vec![segment];
        *self.terms.write() = TermHistory::starting_after(lsn, term);
        self.last_lsn.store(lsn, Ordering::Release);
        Ok(())
    }
}

/// Allocate the segment being appended to up to `bytes` at once
/// (`fallocate`), and fsync that. An append then writes into space the file
/// already has: its `fdatasync` has data to flush but no file size to
/// commit, which on ext4 takes a quarter to a third off each fsync of a
/// small batch (docs/BENCHMARKS.md). PostgreSQL fills each 16 MiB WAL
/// segment with zeros before use, and etcd preallocates its 64 MB files,
/// for the same reason. Recovery reads the zeros after the last entry as
/// the end of the log ([`segment::scan`]).
///
/// Where the file system cannot (no `fallocate`, no space for the whole
/// segment, a file-size limit), the segment simply grows with each append,
/// as it would without this; the disk running full then shows as a failed
/// write, as before.
fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<()> {
    let ctx = || format!("preallocating {}", path.display());
    let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    if len >= bytes {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(end) = libc::off_t::try_from(bytes) else { return Ok(()) };
        // SAFETY: fallocate on a descriptor this `File` owns; it touches no
        // memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, end) };
        if rc != 0 {
            let why = std::io::Error::last_os_error();
            log::debug!("[wal] {} not preallocated ({why}); appends grow it", path.display());
            return Ok(());
        }
        file.sync_all().map_err(|e| Error::io(ctx(), e))?;
    }
    Ok(())
}

/// What [`prepare_dir`] did and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedDir {
    /// `Some((version, records))` if a `wal.log` of that format was upgraded.
    pub upgraded: Option<(u32, u64)>,
    /// The first LSN of the oldest segment; `None` if there is none yet.
    pub first_lsn: Option<Lsn>,
}

/// Step 0 of opening the log, also run alone by start-up before it picks
/// the snapshot to load (which depends on where the log starts): create
/// `wal/`, upgrade a `wal.log` into it, delete what a crash left behind,
/// and say where the log starts. Running it twice does nothing more.
pub fn prepare_dir(data_dir: &Path) -> Result<PreparedDir> {
    let dir = data_dir.join(WAL_DIR_NAME);
    create_private_dir(&dir)?;
    let upgraded = upgrade::upgrade_if_needed(data_dir, &dir)?;
    remove_leftovers(&dir)?;
    let first_lsn = files_of(&dir, "seg")?.first().map(|(lsn, _)| *lsn);
    Ok(PreparedDir { upgraded, first_lsn })
}

/// The replay of recovery: which records go to the map, and whether the
/// log agrees with the snapshot's base (see "Recovery").
struct Replay<F> {
    base: Base,
    apply: F,
    terms: TermHistory,
    /// Set when the log does not hold the base record with the base's term.
    superseded: Option<String>,
}

impl<F: FnMut(Record)> Replay<F> {
    /// Before the first record after the base: does the log hold the base?
    fn check_base(&mut self) {
        if self.base.lsn == 0 || self.superseded.is_some() {
            return;
        }
        match self.terms.term_at(self.base.lsn) {
            Some(term) if term == self.base.term => {}
            Some(term) => {
                self.superseded = Some(format!(
                    "the log holds LSN {} of term {term}, the snapshot has term {} there",
                    self.base.lsn, self.base.term
                ))
            }
            None => {
                self.superseded = Some(format!(
                    "the log ends at LSN {}, before the snapshot's LSN {}",
                    self.terms.last_lsn(),
                    self.base.lsn
                ))
            }
        }
    }

    /// After the last segment: a log that stops at or before the base.
    fn check_base_at_end(&mut self) {
        if self.terms.last_lsn() <= self.base.lsn {
            self.check_base();
        }
    }
}

/// Step 1 of recovery for one segment: scan it, check and rebuild its
/// index, note its terms, replay what comes after the base; cut a torn
/// tail of the last segment.
fn recover_segment<F: FnMut(Record)>(
    dir: &Path,
    options: WalOptions,
    header: SegmentHeader,
    is_last: bool,
    replay: &mut Replay<F>,
    recovery: &mut WalRecovery,
) -> Result<Segment> {
    let (segment, index_created) = Segment::open(dir, header, options.segment_bytes)?;
    let path = segment.path.clone();
    let expected = replay.terms.last_lsn() + 1;
    if header.first_lsn != expected {
        let why = format!(
            "starts at LSN {}, but the log before it ends at LSN {}",
            header.first_lsn,
            expected - 1
        );
        return Err(Error::CorruptWal { path, offset: 0, reason: why });
    }
    if replay.terms.term_at(expected - 1) != Some(header.prev_term) {
        let why = format!(
            "its header says LSN {} has term {}, the log before it has term {:?}",
            expected - 1,
            header.prev_term,
            replay.terms.term_at(expected - 1)
        );
        return Err(Error::CorruptWal { path, offset: 0, reason: why });
    }
    recovery.indexes_created += u64::from(index_created);
    let mut index_error = None;
    let mut last_lsn = header.first_lsn - 1;
    let end = {
        let mut index = segment.index.write();
        segment::scan(&path, header.first_lsn, |entry| {
            if index_created || index.get(entry.lsn) != Some(entry.offset) {
                recovery.index_slots_rebuilt += 1;
                if let Err(e) = index.set(entry.lsn, entry.offset) {
                    index_error.get_or_insert(e);
                }
            }
            recovery.records += 1;
            if entry.lsn == replay.base.lsn + 1 {
                replay.check_base();
            }
            replay.terms.note(entry.lsn, entry.term);
            last_lsn = entry.lsn;
            if entry.lsn > replay.base.lsn && replay.superseded.is_none() {
                (replay.apply)(entry.record(&path)?);
                recovery.replayed += 1;
            }
            Ok(())
        })?
    };
    if let Some(e) = index_error {
        return Err(e);
    }
    let end_offset = match end {
        ScanEnd::Clean { end_offset } => end_offset,
        ScanEnd::TornTail { offset, .. } if !is_last => {
            let why = "damaged record at the end of a segment that later segments follow".into();
            return Err(Error::CorruptWal { path, offset, reason: why });
        }
        ScanEnd::TornTail { offset, bytes } => {
            let ctx = format!("truncating torn tail of {}", path.display());
            let file = segment.open_for_writing()?;
            file.set_len(offset).map_err(|e| Error::io(&ctx, e))?;
            file.sync_all().map_err(|e| Error::io(&ctx, e))?;
            recovery.torn_tail = Some((path, offset, bytes));
            offset
        }
    };
    segment.end_offset.store(end_offset, Ordering::Release);
    segment.last_lsn.store(last_lsn, Ordering::Release);
    Ok(segment)
}

/// What [`scan_dir`] shows its visitor, in log order.
pub enum Visit<'a> {
    /// A segment begins: its path and header.
    Segment(&'a Path, &'a SegmentHeader),
    /// A record of that segment, at this byte offset in it.
    Record(u64, &'a Record),
}

/// Read every segment of `data_dir`'s log in order, with the checks of
/// recovery (contiguous LSNs, headers that agree, a torn tail only at the
/// very end), showing each segment and record to `visit`; return how the
/// last segment ends. Used by `kv_client wal-dump`; it never writes.
pub fn scan_dir(data_dir: &Path, mut visit: impl FnMut(Visit<'_>)) -> Result<ScanEnd> {
    let dir = data_dir.join(WAL_DIR_NAME);
    let headers = list_segments(&dir)?;
    let mut end = ScanEnd::Clean { end_offset: 0 };
    let mut expected: Option<Lsn> = None;
    for (i, header) in headers.iter().enumerate() {
        let path = dir.join(segment::segment_file_name(header.first_lsn));
        if let Some(lsn) = expected.filter(|lsn| *lsn != header.first_lsn) {
            let why = format!(
                "starts at LSN {}, but the log before it ends at LSN {}",
                header.first_lsn,
                lsn - 1
            );
            return Err(Error::CorruptWal { path, offset: 0, reason: why });
        }
        visit(Visit::Segment(&path, header));
        let mut next = header.first_lsn;
        end = segment::scan(&path, header.first_lsn, |entry| {
            visit(Visit::Record(entry.offset, &entry.record(&path)?));
            next = entry.lsn + 1;
            Ok(())
        })?;
        if let (ScanEnd::TornTail { offset, .. }, false) = (end, i + 1 == headers.len()) {
            let why = "damaged record at the end of a segment that later segments follow".into();
            return Err(Error::CorruptWal { path, offset, reason: why });
        }
        expected = Some(next);
    }
    Ok(end)
}

/// The headers of the segments in `dir`, in LSN order; each file's name
/// and header must agree.
fn list_segments(dir: &Path) -> Result<Vec<SegmentHeader>> {
    let mut headers = Vec::new();
    for (first_lsn, path) in files_of(dir, "seg")? {
        let header = SegmentHeader::read(&path)?;
        if header.first_lsn != first_lsn {
            let why = format!("its name says LSN {first_lsn}, its header LSN {}", header.first_lsn);
            return Err(Error::CorruptWal { path, offset: 0, reason: why });
        }
        headers.push(header);
    }
    headers.sort_by_key(|h| h.first_lsn);
    Ok(headers)
}

/// `(first_lsn, path)` of every `.seg` or `.idx` file in `dir`.
fn files_of(dir: &Path, extension: &str) -> Result<Vec<(Lsn, PathBuf)>> {
    let listing = |e| Error::io(format!("listing {}", dir.display()), e);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        let name = entry.file_name();
        let Some((lsn, ext)) = name.to_str().and_then(segment::parse_file_name) else { continue };
        if ext == extension {
            files.push((lsn, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Delete what a crash can leave behind: a segment's `.tmp` (created but
/// never renamed into place), and an index whose segment is gone.
fn remove_leftovers(dir: &Path) -> Result<()> {
    let listing = |e| Error::io(format!("listing {}", dir.display()), e);
    let segments: Vec<Lsn> = files_of(dir, "seg")?.into_iter().map(|(lsn, _)| lsn).collect();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan_index = segment::parse_file_name(&name)
            .is_some_and(|(lsn, ext)| ext == "idx" && !segments.contains(&lsn));
        if name.ends_with(".seg.tmp") || orphan_index {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        log::info!("[wal] removed {} left by a crash: {}", removed.len(), removed.join(", "));
    }
    Ok(())
}

/// Create `dir` (mode 0700) if it does not exist.
fn create_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(crate::datadir::DATA_DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("creating {}", dir.display()), e)),
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

    fn small() -> WalOptions {
        WalOptions { segment_bytes: 200, sync_full_segments: true }
    }

    fn open(dir: &Path) -> (Wal, WalRecovery, Vec<Record>) {
        open_with(dir, WalOptions::default(), Base::NONE)
    }

    fn open_with(dir: &Path, options: WalOptions, base: Base) -> (Wal, WalRecovery, Vec<Record>) {
        let mut seen = Vec::new();
        let (wal, recovery) = Wal::open_with(dir, options, base, |r| seen.push(r.clone())).unwrap();
        (wal, recovery, seen)
    }

    fn records(first: Lsn, last: Lsn) -> Vec<Record> {
        (first..=last).map(|i| put(i, &format!("key{i}"), &format!("value{i}"))).collect()
    }

    /// Append `records` one at a time (so a small segment rolls between them).
    fn append_each(wal: &Wal, records: &[Record]) {
        for r in records {
            wal.append(std::slice::from_ref(r)).unwrap();
        }
        wal.sync().unwrap();
    }

    fn write_records(dir: &Path, count: u64) -> Vec<Record> {
        let (wal, _, _) = open(dir);
        let records = records(1, count);
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        records
    }

    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(WAL_DIR_NAME).join(segment::segment_file_name(1))
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
    fn small_segments_roll_and_every_record_is_read_back_across_them() {
        // Goal: with 200-byte segments a new segment starts every few
        // records; reopening replays all of them in order, records_after
        // reads across segment boundaries, and the segments are contiguous.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        let all = records(1, 40);
        append_each(&wal, &all);
        let segments = wal.segments();
        assert!(segments.len() >= 8, "{segments:?}");
        for pair in segments.windows(2) {
            assert_eq!(pair[1].first_lsn, pair[0].last_lsn + 1, "{segments:?}");
        }
        assert_eq!(wal.records_after(0, 40, 100, 1 << 20).unwrap(), all);
        assert_eq!(wal.records_after(17, 23, 100, 1 << 20).unwrap(), all[17..23]);
        drop(wal);
        let (wal, recovery, seen) = open_with(dir.path(), small(), Base::NONE);
        assert_eq!(seen, all);
        assert_eq!((recovery.segments, recovery.replayed), (segments.len(), 40));
        assert_eq!(wal.segments(), segments);
    }

    #[test]
    fn compaction_deletes_whole_old_segments_and_replay_starts_at_the_base() {
        // Goal: after remove_through(20), reads before the first kept
        // segment say "compacted"; a reopen with base 20 replays only what
        // follows it, and still knows the term of LSN 20.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 40));
        let (removed, bytes) = wal.remove_through(20).unwrap();
        assert!(removed >= 3 && bytes > 0);
        let first = wal.first_lsn();
        assert!(first > 1 && first <= 21, "first LSN {first}");
        assert!(matches!(wal.records_after(0, 40, 10, 1 << 20), Err(Error::Compacted { .. })));
        assert_eq!(wal.term_at(first - 1), Some(1));
        assert_eq!(wal.term_at(first.saturating_sub(2)), None, "compacted");
        drop(wal);
        let (wal, recovery, seen) = open_with(dir.path(), small(), Base { lsn: 20, term: 1 });
        assert_eq!(seen, records(21, 40));
        assert_eq!((recovery.first_lsn, recovery.replayed, recovery.superseded), (first, 20, None));
        assert_eq!(wal.term_at(20), Some(1));
    }

    #[test]
    fn a_log_that_starts_after_the_base_is_refused() {
        // Goal: never start with silently missing data: segments from LSN
        // 25 on and a snapshot at 10 leave 11..24 nowhere.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 40));
        wal.remove_through(30).unwrap();
        let first = wal.first_lsn();
        drop(wal);
        match Wal::open_with(dir.path(), small(), Base { lsn: 10, term: 1 }, |_| {}) {
            Err(Error::MissingRecords { from: 11, to, .. }) => assert_eq!(to, first - 1),
            Err(other) => panic!("expected MissingRecords, got {other}"),
            Ok(_) => panic!("opened a log with a gap"),
        }
    }

    #[test]
    fn a_snapshot_beyond_the_log_supersedes_it() {
        // Goal: a snapshot installed from the leader at LSN 100 (term 3),
        // with the node's old log 1..10 still there after a crash, wins:
        // the old segments go and the log continues at 101.
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 10);
        let (wal, recovery, seen) = open_with(dir.path(), small(), Base { lsn: 100, term: 3 });
        assert!(seen.is_empty());
        assert!(recovery.superseded.unwrap().contains("ends at LSN 10"));
        assert_eq!((wal.last_lsn(), wal.last_term(), wal.first_lsn()), (100, 3, 101));
        wal.append(&[Record { lsn: 101, term: 3, op: Op::Noop }]).unwrap();
        drop(wal);
        let (_, recovery, seen) = open_with(dir.path(), small(), Base { lsn: 100, term: 3 });
        assert_eq!((seen.len(), recovery.superseded), (1, None));
    }

    #[test]
    fn a_log_holding_another_term_at_the_base_is_superseded() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 10);
        let (_, recovery, seen) = open_with(dir.path(), small(), Base { lsn: 5, term: 2 });
        assert!(seen.is_empty(), "nothing of the old log is replayed");
        assert!(recovery.superseded.unwrap().contains("LSN 5 of term 1"));
    }

    #[test]
    fn truncation_at_every_byte_of_the_last_record_keeps_the_others() {
        // Goal: a crash that cuts the last record anywhere loses only that
        // record. Method: write 3 records, then for every length inside the
        // third, truncate a copy of the segment there and recover it.
        let dir = tempfile::tempdir().unwrap();
        let records = write_records(dir.path(), 3);
        let mut log = std::fs::read(first_segment(dir.path())).unwrap();
        let (third_at, end) = {
            let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
            encode_entry(&records[0], &mut bytes);
            encode_entry(&records[1], &mut bytes);
            let third_at = bytes.len();
            encode_entry(&records[2], &mut bytes);
            (third_at, bytes.len())
        };
        log.truncate(end); // the rest is preallocated zeros
        for cut in third_at..log.len() {
            let copy = tempfile::tempdir().unwrap();
            std::fs::create_dir(copy.path().join(WAL_DIR_NAME)).unwrap();
            std::fs::write(first_segment(copy.path()), &log[..cut]).unwrap();
            let (wal, recovery, seen) = open(copy.path());
            assert_eq!(seen, records[..2], "cut at {cut}");
            let torn = recovery.torn_tail.map(|(_, offset, bytes)| (offset, bytes));
            let expected = (cut > third_at).then_some((third_at as u64, (cut - third_at) as u64));
            assert_eq!(torn, expected, "cut at {cut}");
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
        let path = first_segment(dir.path());
        let mut log = std::fs::read(&path).unwrap();
        let mut first = vec![0u8; SEGMENT_HEADER_BYTES as usize];
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
    fn a_damaged_end_of_a_segment_that_others_follow_is_corruption() {
        // Goal: only the last segment may have a torn tail: records in the
        // next segment were acknowledged after the damaged one.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 20));
        drop(wal);
        let path = first_segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        match Wal::open_with(dir.path(), small(), Base::NONE, |_| {}) {
            Err(Error::CorruptWal { path: p, .. }) => assert_eq!(p, path),
            Err(other) => panic!("expected CorruptWal, got {other}"),
            Ok(_) => panic!("opened a log with a damaged middle segment"),
        }
    }

    #[test]
    fn a_preallocated_segment_ends_at_its_zeros_and_a_damaged_last_entry_is_torn() {
        // Goal: the active segment is allocated ahead (zeros after the last
        // entry): reopening it finds every record and no torn tail, and
        // appends continue where the records end. A damaged last entry with
        // only zeros after it is a torn tail, not corruption.
        let dir = tempfile::tempdir().unwrap();
        let records = write_records(dir.path(), 3);
        let path = first_segment(dir.path());
        let allocated = std::fs::metadata(&path).unwrap().len();
        assert_eq!(allocated, WalOptions::default().segment_bytes, "preallocated");
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!((seen.len(), recovery.torn_tail.clone()), (3, None));
        wal.append(&[put(4, "four", "4")]).unwrap();
        drop(wal);
        let (_, recovery, seen) = open(dir.path());
        assert_eq!((seen.len(), recovery.torn_tail), (4, None));

        let fourth_at = {
            let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
            for record in &records {
                encode_entry(record, &mut bytes);
            }
            bytes.len() as u64
        };
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"X", fourth_at + 12).unwrap(); // inside the fourth entry's body
        drop(f);
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!(seen, records);
        let (torn_path, offset, _) = recovery.torn_tail.unwrap();
        assert_eq!((torn_path, offset), (path.clone(), fourth_at));
        wal.append(&[put(4, "again", "x")]).unwrap();
        drop(wal);
        let (_, recovery, seen) = open(dir.path());
        assert_eq!((seen.len(), recovery.torn_tail), (4, None));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), allocated, "allocated again");
    }

    #[test]
    fn index_is_rebuilt_after_deletion_or_truncation() {
        // Goal: the WAL is the source of truth; a lost index costs nothing.
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 50);
        let index_path = dir.path().join(WAL_DIR_NAME).join(segment::index_file_name(1));
        std::fs::remove_file(&index_path).unwrap();
        let (wal, recovery, _) = open(dir.path());
        assert_eq!(recovery.indexes_created, 1);
        assert_eq!(recovery.index_slots_rebuilt, 50);
        assert_eq!(wal.records_after(40, 50, 100, 1 << 20).unwrap().len(), 10);
        drop(wal);

        let f = OpenOptions::new().write(true).open(&index_path).unwrap();
        f.set_len(16 + 8 * 20).unwrap(); // keep 20 slots only
        drop(f);
        let (wal, recovery, _) = open(dir.path());
        assert_eq!(recovery.indexes_created, 0);
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

        // Goal: recovery never panics on any segment, and whatever damage
        // it meets it either keeps a prefix of the records or refuses to
        // start; it never invents or reorders a record.
        #[test]
        fn recovery_of_a_damaged_segment_keeps_a_prefix_or_refuses(
            flips in proptest::collection::vec((0usize..2000, 1u8..=255), 0..4),
            cut in 0usize..2000,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let records = write_records(dir.path(), 20);
            let path = first_segment(dir.path());
            let mut log = std::fs::read(&path).unwrap();
            for (at, mask) in flips {
                let at = at % log.len();
                log[at] ^= mask;
            }
            log.truncate(cut.min(log.len()));
            log.extend_from_slice(&junk);
            std::fs::write(&path, &log).unwrap();
            std::fs::remove_file(path.with_extension("idx")).unwrap();
            let mut seen = Vec::new();
            match Wal::open(dir.path(), |r| seen.push(r)) {
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

    #[test]
    fn a_format_1_log_is_upgraded_with_every_record_as_term_1() {
        // Goal: a data dir from before terms opens, reads the same records
        // as term 1, and is rewritten as segments.
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=3).map(|i| put(i, &format!("k{i}"), "v")).collect();
        let legacy = dir.path().join(upgrade::LEGACY_LOG_FILE_NAME);
        std::fs::write(&legacy, upgrade::tests::v1_log(&records)).unwrap();
        let (wal, recovery, seen) = open(dir.path());
        assert_eq!(seen, records);
        assert_eq!(recovery.upgraded, Some((1, 3)));
        assert_eq!((wal.last_lsn(), wal.last_term()), (3, 1));
        assert!(!legacy.exists());
        assert_eq!(wal.records_after(1, 3, 10, 1 << 20).unwrap(), records[1..]);
        drop(wal);
        let (_, recovery, seen) = open(dir.path());
        assert_eq!((seen, recovery.upgraded), (records, None));
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

    #[test]
    fn truncation_across_segments_removes_the_later_ones() {
        // Goal: cutting after LSN 7 in a log of many small segments leaves
        // exactly 1..7, and appending continues from 8 into the right file.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 30));
        assert_eq!(wal.truncate_after(7).unwrap(), 23);
        let last = wal.segments().last().cloned().unwrap();
        assert_eq!(last.last_lsn, 7);
        wal.append(&records(8, 9)).unwrap();
        drop(wal);
        let (wal, _, seen) = open_with(dir.path(), small(), Base::NONE);
        assert_eq!(seen, records(1, 9));
        assert_eq!(wal.segments().last().unwrap().last_lsn, 9);
    }

    #[test]
    fn reset_after_a_snapshot_starts_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 30));
        wal.reset_after(500, 4).unwrap();
        assert_eq!((wal.last_lsn(), wal.first_lsn(), wal.term_at(500)), (500, 501, Some(4)));
        assert_eq!(wal.segments().len(), 1);
        wal.append(&[Record { lsn: 501, term: 4, op: Op::Noop }]).unwrap();
        drop(wal);
        let (_, recovery, seen) = open_with(dir.path(), small(), Base { lsn: 500, term: 4 });
        assert_eq!((seen.len(), recovery.first_lsn), (1, 501));
    }

    #[test]
    fn bytes_after_counts_the_log_past_an_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open_with(dir.path(), small(), Base::NONE);
        append_each(&wal, &records(1, 30));
        let total: u64 = wal.segments().iter().map(|s| s.bytes - SEGMENT_HEADER_BYTES).sum();
        assert_eq!(wal.bytes_after(0), total);
        assert_eq!(wal.bytes_after(30), 0);
        let mut entry = Vec::new();
        encode_entry(&records(30, 30)[0], &mut entry);
        assert_eq!(wal.bytes_after(29), entry.len() as u64);
    }
}
