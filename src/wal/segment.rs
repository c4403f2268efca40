//! One WAL segment file: its header, its entries, and how it is read back
//! after a crash (week 9; segments: `docs/STORAGE.md`).
//!
//! The log is a sequence of segment files in `DATA_DIR/wal/`, each named
//! by the LSN of its first record, zero-padded to 20 digits so that names
//! sort in LSN order: `00000000000000000001.seg`, `00000000000000523212.seg`.
//! Only the last segment is written to; when it reaches
//! `--wal-segment-bytes` the next batch starts a new one ("rolling"). Whole
//! segments can then be deleted once a snapshot holds their records
//! (compaction), which a single growing file could not do.
//!
//! ## Layout of a segment
//!
//! ```text
//! [magic "KVWALSEG" 8 bytes][format_version u32 = 3][reserved u32 = 0]
//! [first_lsn u64][prev_term u64]                                          32-byte header
//! [body_len u32][crc32 u32][body: lsn u64, term u64, cmd u8, key_len u32, key, value_len u32, value]
//! ...
//! ```
//!
//! - `first_lsn` is the LSN of the segment's first record (the file name
//!   says it too; they must agree). Entry *k* holds LSN `first_lsn + k`.
//! - `prev_term` is the term of LSN `first_lsn - 1` (0 before LSN 1). When
//!   the segments before it have been deleted, it is how the node still
//!   knows the term of the record just before its log, which the
//!   log-matching check of AppendEntries needs.
//! - An entry is a record ([`crate::wal::record`]) wrapped with its length
//!   and `crc32` (CRC-32/ISO-HDLC, as zlib computes it) of the body: the
//!   same entries as in `wal.log` of format 2.
//!
//! ## Creating a segment
//!
//! A new segment's header is written to `F.seg.tmp`, fsynced, renamed to
//! `F.seg` and the directory fsynced, so that a `.seg` file always has a
//! whole header: a crash leaves either no new segment or an empty one. A
//! left-over `.tmp` is deleted at start-up.
//!
//! ## Reading a segment back: torn tail versus corruption
//!
//! [`scan`] reads a segment from its header on and checks each entry:
//!
//! - an entry cut short by the end of the file, or a bad checksum on the very
//!   last entry, or an all-zero tail, is a **torn tail**: the caller
//!   truncates it if this is the last segment (such a record was never
//!   acknowledged: a write is acknowledged only after its fsync);
//! - a bad checksum, impossible length or wrong LSN **followed by more
//!   data** is **corruption**: start-up fails naming the file and offset.
//!   Truncating there would silently drop every record after it. A torn
//!   tail in a segment that is not the last is corruption too: records
//!   after it, in the next segment, were acknowledged.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::limits::RECORD_BYTES_MAX;
use crate::wal::record::{Record, RECORD_FIXED_BYTES};
use crate::{Lsn, Term};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"KVWALSEG";

/// The WAL format this build writes: 3, segment files. (1 and 2 were a
/// single `wal.log`; they are upgraded at start-up.)
pub const WAL_FORMAT_VERSION: u32 = 3;

/// Bytes of a segment's header: magic 8 + version 4 + reserved 4 +
/// first_lsn 8 + prev_term 8.
pub const SEGMENT_HEADER_BYTES: u64 = 32;

/// Bytes of an entry's header: body_len u32 + crc32 u32.
pub const ENTRY_HEADER_BYTES: usize = 8;

/// How much a scan reads per system call (1 MiB).
const SCAN_BUFFER_BYTES: usize = 1024 * 1024;

/// The fields of a segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// Term of LSN `first_lsn - 1` (0 if that is LSN 0).
    pub prev_term: Term,
}

impl SegmentHeader {
    /// The header's 32 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[..8].copy_from_slice(SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.first_lsn.to_be_bytes());
        bytes[24..32].copy_from_slice(&self.prev_term.to_be_bytes());
        bytes
    }

    /// Read and check the header of the segment at `path`.
    pub fn read(path: &Path) -> Result<SegmentHeader> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        let corrupt =
            |reason: String| Error::CorruptWal { path: path.to_path_buf(), offset: 0, reason };
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(corrupt("shorter than the 32-byte segment header".into()))
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        if &bytes[..8] != SEGMENT_MAGIC {
            return Err(corrupt("no segment magic \"KVWALSEG\" at its start".into()));
        }
        let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != WAL_FORMAT_VERSION {
            return Err(Error::WalVersion {
                path: path.to_path_buf(),
                found: version,
                supported: WAL_FORMAT_VERSION,
            });
        }
        let first_lsn = be_u64(&bytes[16..24]);
        if first_lsn == 0 {
            return Err(corrupt("header names first LSN 0; the first LSN is 1".into()));
        }
        Ok(SegmentHeader { first_lsn, prev_term: be_u64(&bytes[24..32]) })
    }
}

/// `00000000000000000001.seg`: the file name of the segment starting at `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.seg")
}

/// `00000000000000000001.idx`: the file name of that segment's index.
pub fn index_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.idx")
}

/// The first LSN a segment or index file name gives, and which of the two
/// it is (`"seg"` or `"idx"`); `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(Lsn, &str)> {
    let (stem, extension) = name.split_once('.')?;
    let valid = stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit());
    if !valid || !matches!(extension, "seg" | "idx") {
        return None;
    }
    stem.parse().ok().map(|lsn| (lsn, extension))
}

/// Create the segment `dir/F.seg` holding no record yet, durably (see
/// "Creating a segment"). Returns its path.
pub fn create(dir: &Path, header: &SegmentHeader) -> Result<PathBuf> {
    let path = dir.join(segment_file_name(header.first_lsn));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(header.first_lsn)));
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = crate::datadir::create_file(&tmp)?;
    file.write_all_at(&header.encode(), 0).map_err(|e| Error::io(ctx("writing"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    failpoint::hit("segment-create-before-rename");
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(ctx("renaming into place"), e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// fsync a directory, so the names created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
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
pub fn entry_body_len(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= ENTRY_HEADER_BYTES)
        .then(|| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Check and decode one complete entry. The error is the reason it is bad.
pub fn decode_entry(entry: &[u8]) -> std::result::Result<Record, String> {
    decode_entry_with(entry, Record::decode)
}

/// [`decode_entry`] with another record decoder (format 1's, for the
/// upgrade).
pub fn decode_entry_with(
    entry: &[u8],
    decode: fn(&mut Decoder<'_>) -> Result<Record>,
) -> std::result::Result<Record, String> {
    check_crc(entry)?;
    let mut d = Decoder::new(&entry[ENTRY_HEADER_BYTES..]);
    let record = decode(&mut d).map_err(|e| e.to_string())?;
    d.finish("WAL record").map_err(|e| e.to_string())?;
    Ok(record)
}

/// Decode an entry's body whose checksum is already checked.
pub fn decode_body(body: &[u8]) -> std::result::Result<Record, String> {
    let mut d = Decoder::new(body);
    let record = Record::decode(&mut d).map_err(|e| e.to_string())?;
    d.finish("WAL record").map_err(|e| e.to_string())?;
    Ok(record)
}

fn check_crc(entry: &[u8]) -> std::result::Result<(), String> {
    let crc = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
    let actual = crc32fast::hash(&entry[ENTRY_HEADER_BYTES..]);
    if crc != actual {
        return Err(format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"));
    }
    Ok(())
}

/// How a scan of a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last entry ends exactly at the end of the file.
    Clean { end_offset: u64 },
    /// A torn entry starts at `offset` and runs `bytes` to the end of file.
    TornTail { offset: u64, bytes: u64 },
}

/// One entry a scan found intact: where it is, what it names, its body.
pub struct Entry<'a> {
    pub offset: u64,
    pub lsn: Lsn,
    pub term: Term,
    /// The record's bytes, checksum verified (not yet decoded).
    pub body: &'a [u8],
}

impl Entry<'_> {
    /// Decode the record; a failure is corruption at this entry.
    pub fn record(&self, path: &Path) -> Result<Record> {
        decode_body(self.body).map_err(|reason| Error::CorruptWal {
            path: path.to_path_buf(),
            offset: self.offset,
            reason,
        })
    }
}

/// Read the segment at `path` from its header on, calling `visit` with
/// each intact entry (whose LSNs must run on from `first_lsn`), and say
/// how it ends. The checksum, length, LSN and term of each entry are
/// checked here; the body is decoded only if `visit` asks for the record,
/// so a scan that only checks costs no allocation per record.
pub fn scan(
    path: &Path,
    first_lsn: Lsn,
    mut visit: impl FnMut(&Entry<'_>) -> Result<()>,
) -> Result<ScanEnd> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let ctx = || format!("reading {}", path.display());
    let file_len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    reader.read_exact(&mut header).map_err(|e| Error::io(ctx(), e))?;
    let corrupt = |offset, reason| Error::CorruptWal { path: path.to_path_buf(), offset, reason };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected_lsn = first_lsn;
    let mut entry = Vec::new();
    loop {
        let bounds = (offset, file_len);
        let (entry_len, is_last) =
            match read_entry(&mut reader, &mut entry, bounds, RECORD_FIXED_BYTES as u32, path)? {
                Next::End(end) => return Ok(end),
                Next::Entry { len, is_last } => (len, is_last),
            };
        match check_crc(&entry) {
            Ok(()) => {}
            // A damaged entry is a torn tail if nothing but the zeros of
            // preallocated space follows it (an append cut by a crash).
            Err(_) if is_last || rest_is_zero(&mut reader)? => {
                return Ok(ScanEnd::TornTail { offset, bytes: entry_len })
            }
            Err(reason) => return Err(corrupt(offset, reason)),
        }
        let body = &entry[ENTRY_HEADER_BYTES..];
        let (lsn, term) = (be_u64(&body[0..8]), be_u64(&body[8..16]));
        if lsn != expected_lsn {
            return Err(corrupt(offset, format!("expected LSN {expected_lsn}, found {lsn}")));
        }
        if term == 0 {
            return Err(corrupt(offset, format!("record at LSN {lsn} has term 0")));
        }
        visit(&Entry { offset, lsn, term, body })?;
        offset += entry_len;
        expected_lsn += 1;
    }
}

/// What [`read_entry`] found.
pub(crate) enum Next {
    /// A whole entry of `len` bytes (header and body) is in the buffer;
    /// `is_last` if the file ends right after it.
    Entry { len: u64, is_last: bool },
    /// The file ends at the offset: cleanly, or with a torn tail.
    End(ScanEnd),
}

/// Read the entry at `offset` of a file of `file_len` bytes into `entry`,
/// telling by its length alone whether it is whole, torn or impossible
/// (the checksum is the caller's): a body shorter than `body_min` or longer
/// than any record is impossible: if zeros run from it to the end of the
/// file, it is where the log ends (space allocated ahead, or extended by
/// the file system but never filled); otherwise it is corruption.
pub(crate) fn read_entry(
    reader: &mut impl Read,
    entry: &mut Vec<u8>,
    (offset, file_len): (u64, u64),
    body_min: u32,
    path: &Path,
) -> Result<Next> {
    let ctx = || format!("reading {}", path.display());
    let remaining = file_len - offset;
    let torn = Next::End(ScanEnd::TornTail { offset, bytes: remaining });
    if remaining == 0 {
        return Ok(Next::End(ScanEnd::Clean { end_offset: offset }));
    }
    if remaining < ENTRY_HEADER_BYTES as u64 {
        return Ok(torn);
    }
    entry.resize(ENTRY_HEADER_BYTES, 0);
    reader.read_exact(entry).map_err(|e| Error::io(ctx(), e))?;
    let body_len = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let entry_len = ENTRY_HEADER_BYTES as u64 + u64::from(body_len);
    if !(body_min..=RECORD_BYTES_MAX).contains(&body_len) {
        if entry.iter().all(|b| *b == 0) && rest_is_zero(reader)? {
            // Zeros from here to the end of the file: space allocated ahead
            // of the log (the active segment is preallocated) or extended
            // by the file system but never filled. The log ends here.
            return Ok(Next::End(ScanEnd::Clean { end_offset: offset }));
        }
        let reason = format!("impossible entry length {body_len}");
        return Err(Error::CorruptWal { path: path.to_path_buf(), offset, reason });
    }
    if entry_len > remaining {
        return Ok(torn);
    }
    entry.resize(entry_len as usize, 0);
    reader.read_exact(&mut entry[ENTRY_HEADER_BYTES..]).map_err(|e| Error::io(ctx(), e))?;
    Ok(Next::Entry { len: entry_len, is_last: entry_len == remaining })
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

fn be_u64(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::Op;

    fn put(lsn: Lsn) -> Record {
        Record { lsn, term: 1, op: Op::Put { key: b"k".to_vec(), value: b"v".to_vec() } }
    }

    #[test]
    fn header_round_trips_and_names_sort_by_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let header = SegmentHeader { first_lsn: 523_212, prev_term: 4 };
        let path = create(dir.path(), &header).unwrap();
        assert_eq!(path.file_name().unwrap(), "00000000000000523212.seg");
        assert_eq!(SegmentHeader::read(&path).unwrap(), header);
        assert_eq!(parse_file_name("00000000000000523212.seg"), Some((523_212, "seg")));
        assert_eq!(parse_file_name("00000000000000523212.seg.tmp"), None);
        assert_eq!(parse_file_name("523212.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10), "zero-padded names sort");
        assert!(!dir.path().join("00000000000000523212.seg.tmp").exists());
    }

    #[test]
    fn a_scan_checks_lsns_from_the_header_on() {
        // Goal: entries must continue from the segment's first LSN; a
        // segment holding LSN 8 where 7 is due is corrupt, not skipped.
        let dir = tempfile::tempdir().unwrap();
        let path = create(dir.path(), &SegmentHeader { first_lsn: 7, prev_term: 1 }).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        encode_entry(&put(7), &mut bytes);
        encode_entry(&put(8), &mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        let end = scan(&path, 7, |e| {
            seen.push((e.lsn, e.record(&path)?.lsn));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(7, 7), (8, 8)]);
        assert_eq!(end, ScanEnd::Clean { end_offset: bytes.len() as u64 });
        assert!(matches!(scan(&path, 6, |_| Ok(())), Err(Error::CorruptWal { offset: 32, .. })));
    }

    #[test]
    fn a_newer_segment_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(1));
        let mut header = SegmentHeader { first_lsn: 1, prev_term: 0 }.encode();
        header[8..12].copy_from_slice(&4u32.to_be_bytes());
        std::fs::write(&path, header).unwrap();
        match SegmentHeader::read(&path) {
            Err(Error::WalVersion { found: 4, supported: 3, .. }) => {}
            other => panic!("expected WalVersion, got {other:?}"),
        }
    }
}
