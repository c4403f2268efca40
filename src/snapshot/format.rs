//! A snapshot file, byte by byte: writing it, and reading it back with
//! every check that keeps a damaged one from being loaded.
//!
//! ## Layout
//!
//! ```text
//! offset  field                 why
//! 0       magic "KVSTSNAP" 8    not some other file
//! 8       format_version u32=1  a newer layout is refused, not misread
//! 12      reserved u32 = 0
//! 16      lsn u64               the last record the map includes
//! 24      term u64              that record's term: the log-matching check
//!                               continues from (lsn, term) after a load
//! 32      key_count u64         pairs that follow
//! 40      digest u64            the map's digest at lsn (see crate::store):
//!                               a load recomputes it and must agree
//! 48      created_unix_ms u64   when it was taken (status shows its age)
//! 56      header_crc u32        CRC-32 of bytes 0..56
//! 60      reserved u32 = 0
//! 64      chunks...
//!
//! chunk = [body_len u32][crc32 u32][body]            crc32 of the body
//! body  = [pair_count u32] then pair_count × [key_len u32][key][value_len u32][value]
//! end   = [body_len u32 = 0][crc32 u32 = 0], then the end of the file
//! ```
//!
//! All integers are big-endian; the CRC is the WAL's (CRC-32/ISO-HDLC).
//! A chunk's body holds about [`SNAPSHOT_CHUNK_BYTES`] of pairs (at least
//! one pair, so a 4 MiB value makes a bigger chunk), so both the writer and
//! the reader hold one chunk in memory, never the file; a chunk is also the
//! unit a damaged byte is found in.
//!
//! ## What a reader checks
//!
//! A snapshot is loaded only if every check passes; otherwise it is
//! [`Error::CorruptSnapshot`], never loaded, and start-up falls back to an
//! older snapshot (`crate::snapshot`):
//!
//! - the magic, the version and the header's CRC;
//! - each chunk's length (within [`SNAPSHOT_CHUNK_BYTES_MAX`], checked
//!   before anything is allocated for it) and CRC, and that its pairs fill
//!   its body exactly, within the key and value limits;
//! - the end marker, right where the file ends (a file cut short has none;
//!   one with bytes after it is not ours);
//! - the number of pairs against `key_count`;
//! - when loaded into a map ([`crate::snapshot::load`]): no key twice, and
//!   the digest of the pairs against `digest` — the last word on whether
//!   these are exactly the pairs that were written.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::limits::{
    KEY_BYTES_MAX, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_BYTES_MAX, VALUE_BYTES_MAX,
};
use crate::{Lsn, Term};

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KVSTSNAP";

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Bytes of the header.
pub const SNAPSHOT_HEADER_BYTES: u64 = 64;

/// Bytes of a chunk's header: body_len u32 + crc32 u32.
pub const CHUNK_HEADER_BYTES: usize = 8;

/// How much a reader reads per system call (1 MiB).
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// The fields of a snapshot's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub lsn: Lsn,
    pub term: Term,
    pub key_count: u64,
    pub digest: u64,
    pub created_unix_ms: u64,
}

impl SnapshotHeader {
    /// The header's 64 bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        bytes[..8].copy_from_slice(SNAPSHOT_MAGIC);
        bytes[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.lsn.to_be_bytes());
        bytes[24..32].copy_from_slice(&self.term.to_be_bytes());
        bytes[32..40].copy_from_slice(&self.key_count.to_be_bytes());
        bytes[40..48].copy_from_slice(&self.digest.to_be_bytes());
        bytes[48..56].copy_from_slice(&self.created_unix_ms.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..56]);
        bytes[56..60].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Check and decode a header read from `path`.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SnapshotHeader> {
        let corrupt = |reason: String| corrupt(path, 0, reason);
        if bytes.len() < SNAPSHOT_HEADER_BYTES as usize {
            return Err(corrupt(format!("{} bytes, shorter than the 64-byte header", bytes.len())));
        }
        if &bytes[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("no snapshot magic \"KVSTSNAP\" at its start".into()));
        }
        let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}; this kvstore reads version {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let stored = u32::from_be_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]);
        let computed = crc32fast::hash(&bytes[..56]);
        if stored != computed {
            return Err(corrupt(format!(
                "header checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        if bytes[60..64] != [0u8; 4] {
            return Err(corrupt("the reserved bytes after the header checksum are not 0".into()));
        }
        let mut d = Decoder::new(&bytes[16..56]);
        let mut field = |name| d.u64(name);
        Ok(SnapshotHeader {
            lsn: field("lsn")?,
            term: field("term")?,
            key_count: field("key_count")?,
            digest: field("digest")?,
            created_unix_ms: field("created_unix_ms")?,
        })
    }

    /// Read the header of the snapshot at `path` (the rest is not checked).
    pub fn read(path: &Path) -> Result<SnapshotHeader> {
        let mut file = File::open(path).map_err(|e| io(path, "opening", e))?;
        let mut bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        let read = read_full(&mut file, &mut bytes).map_err(|e| io(path, "reading", e))?;
        SnapshotHeader::decode(&bytes[..read], path)
    }
}

/// Writes a snapshot file one chunk at a time.
pub struct SnapshotWriter {
    path: PathBuf,
    file: File,
    header: SnapshotHeader,
    /// The chunk being filled: its header's 8 bytes, then the pair count
    /// and the pairs.
    chunk: Vec<u8>,
    pairs_in_chunk: u32,
    pairs: u64,
    bytes: u64,
}

impl SnapshotWriter {
    /// Create `path` (which must not exist) and write the header.
    pub fn create(path: &Path, header: SnapshotHeader) -> Result<SnapshotWriter> {
        let mut file = crate::datadir::file_options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io(path, "creating", e))?;
        file.write_all(&header.encode()).map_err(|e| io(path, "writing", e))?;
        let mut writer = SnapshotWriter {
            path: path.to_path_buf(),
            file,
            header,
            chunk: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES + 64 * 1024),
            pairs_in_chunk: 0,
            pairs: 0,
            bytes: SNAPSHOT_HEADER_BYTES,
        };
        writer.start_chunk();
        Ok(writer)
    }

    fn start_chunk(&mut self) {
        self.chunk.clear();
        self.chunk.extend_from_slice(&[0u8; CHUNK_HEADER_BYTES + 4]);
        self.pairs_in_chunk = 0;
    }

    /// Add one pair; a full chunk is written out.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.chunk.extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.chunk.extend_from_slice(key);
        self.chunk.extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.chunk.extend_from_slice(value);
        self.pairs_in_chunk += 1;
        self.pairs += 1;
        if self.chunk.len() >= CHUNK_HEADER_BYTES + SNAPSHOT_CHUNK_BYTES {
            self.write_chunk()?;
        }
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<()> {
        if self.pairs_in_chunk == 0 {
            return Ok(());
        }
        let body_len = (self.chunk.len() - CHUNK_HEADER_BYTES) as u32;
        self.chunk[8..12].copy_from_slice(&self.pairs_in_chunk.to_be_bytes());
        let crc = crc32fast::hash(&self.chunk[CHUNK_HEADER_BYTES..]);
        self.chunk[..4].copy_from_slice(&body_len.to_be_bytes());
        self.chunk[4..8].copy_from_slice(&crc.to_be_bytes());
        failpoint::hit("snapshot-chunk");
        self.file.write_all(&self.chunk).map_err(|e| io(&self.path, "writing", e))?;
        self.bytes += self.chunk.len() as u64;
        self.start_chunk();
        Ok(())
    }

    /// Write the last chunk and the end marker, and fsync the file.
    /// Returns the file's size.
    pub fn finish(mut self) -> Result<u64> {
        self.write_chunk()?;
        assert_eq!(
            self.pairs, self.header.key_count,
            "a snapshot holds exactly the keys its header counts"
        );
        self.file
            .write_all(&[0u8; CHUNK_HEADER_BYTES])
            .map_err(|e| io(&self.path, "writing", e))?;
        self.bytes += CHUNK_HEADER_BYTES as u64;
        failpoint::hit("snapshot-before-fsync");
        self.file.sync_all().map_err(|e| io(&self.path, "syncing", e))?;
        Ok(self.bytes)
    }
}

/// Reads a snapshot file chunk by chunk, checking everything on the way.
pub struct SnapshotReader {
    path: PathBuf,
    reader: BufReader<File>,
    header: SnapshotHeader,
    file_bytes: u64,
}

impl SnapshotReader {
    /// Open `path` and check its header.
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        let file = File::open(path).map_err(|e| io(path, "opening", e))?;
        let file_bytes = file.metadata().map_err(|e| io(path, "reading", e))?.len();
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        let read = read_full(&mut reader, &mut bytes).map_err(|e| io(path, "reading", e))?;
        let header = SnapshotHeader::decode(&bytes[..read], path)?;
        Ok(SnapshotReader { path: path.to_path_buf(), reader, header, file_bytes })
    }

    pub fn header(&self) -> SnapshotHeader {
        self.header
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Call `visit(key, value)` with every pair, in file order, and
    /// `progress(bytes read so far)` after each chunk; check every chunk,
    /// the end marker and the count (see "What a reader checks").
    pub fn for_each(
        mut self,
        mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
        mut progress: impl FnMut(u64),
    ) -> Result<SnapshotHeader> {
        let mut offset = SNAPSHOT_HEADER_BYTES;
        let mut pairs = 0u64;
        let mut body = Vec::new();
        loop {
            let mut chunk_header = [0u8; CHUNK_HEADER_BYTES];
            let read = read_full(&mut self.reader, &mut chunk_header)
                .map_err(|e| io(&self.path, "reading", e))?;
            if read < CHUNK_HEADER_BYTES {
                return Err(self.corrupt(offset, "the file ends before its end marker".into()));
            }
            let body_len = u32::from_be_bytes([
                chunk_header[0],
                chunk_header[1],
                chunk_header[2],
                chunk_header[3],
            ]);
            let crc = u32::from_be_bytes([
                chunk_header[4],
                chunk_header[5],
                chunk_header[6],
                chunk_header[7],
            ]);
            if body_len == 0 {
                return self.end(offset, crc, pairs);
            }
            if body_len > SNAPSHOT_CHUNK_BYTES_MAX || u64::from(body_len) > self.file_bytes - offset
            {
                let why = format!("chunk length {body_len} is impossible here");
                return Err(self.corrupt(offset, why));
            }
            body.resize(body_len as usize, 0);
            let read =
                read_full(&mut self.reader, &mut body).map_err(|e| io(&self.path, "reading", e))?;
            if read < body.len() {
                return Err(
                    self.corrupt(offset, "a chunk is cut short by the end of the file".into())
                );
            }
            let computed = crc32fast::hash(&body);
            if computed != crc {
                let why =
                    format!("chunk checksum mismatch (stored {crc:08x}, computed {computed:08x})");
                return Err(self.corrupt(offset, why));
            }
            pairs += self.decode_chunk(&body, offset, &mut visit)?;
            offset += (CHUNK_HEADER_BYTES + body.len()) as u64;
            progress(offset);
        }
    }

    /// The pairs of one checked chunk body.
    fn decode_chunk(
        &self,
        body: &[u8],
        offset: u64,
        visit: &mut impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let bad = |e: Error| self.corrupt(offset, format!("a chunk's pairs do not decode: {e}"));
        let mut d = Decoder::new(body);
        let count = d.u32("pair_count").map_err(bad)?;
        for _ in 0..count {
            let key = d.bytes_u32("snapshot key", KEY_BYTES_MAX).map_err(bad)?;
            let value = d.bytes_u32("snapshot value", VALUE_BYTES_MAX).map_err(bad)?;
            visit(key, value)?;
        }
        d.finish("snapshot chunk").map_err(bad)?;
        Ok(u64::from(count))
    }

    /// The end marker at `offset`: its CRC field is 0, the file ends right
    /// after it, and the pairs read match the header's count.
    fn end(mut self, offset: u64, crc: u32, pairs: u64) -> Result<SnapshotHeader> {
        let end = offset + CHUNK_HEADER_BYTES as u64;
        if crc != 0 {
            return Err(self.corrupt(offset, format!("end marker with checksum field {crc:08x}")));
        }
        let mut extra = [0u8; 1];
        let more =
            read_full(&mut self.reader, &mut extra).map_err(|e| io(&self.path, "reading", e))?;
        if more > 0 || end != self.file_bytes {
            let why =
                format!("{} byte(s) after the end marker", self.file_bytes.saturating_sub(end));
            return Err(self.corrupt(end, why));
        }
        if pairs != self.header.key_count {
            let why = format!("{pairs} pair(s), but the header counts {}", self.header.key_count);
            return Err(self.corrupt(offset, why));
        }
        Ok(self.header)
    }

    fn corrupt(&self, offset: u64, reason: String) -> Error {
        corrupt(&self.path, offset, reason)
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> Error {
    Error::CorruptSnapshot { path: path.to_path_buf(), offset, reason }
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} snapshot {}", path.display()), e)
}

/// Read until `buf` is full or the file ends; return how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key_count: u64) -> SnapshotHeader {
        SnapshotHeader { lsn: 1000, term: 3, key_count, digest: 0x1234, created_unix_ms: 99 }
    }

    /// A snapshot of `pairs` written to `dir/s.snap`; returns its path.
    fn write(dir: &Path, pairs: &[(Vec<u8>, Vec<u8>)]) -> PathBuf {
        let path = dir.join("s.snap");
        let mut w = SnapshotWriter::create(&path, header(pairs.len() as u64)).unwrap();
        for (k, v) in pairs {
            w.push(k, v).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        path
    }

    fn pairs(count: usize, value_bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..count).map(|i| (format!("key{i}").into_bytes(), vec![b'v'; value_bytes])).collect()
    }

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn read_all(path: &Path) -> Result<(SnapshotHeader, Pairs)> {
        let mut seen = Vec::new();
        let header = SnapshotReader::open(path)?.for_each(
            |k, v| {
                seen.push((k, v));
                Ok(())
            },
            |_| {},
        )?;
        Ok((header, seen))
    }

    #[test]
    fn pairs_round_trip_across_many_chunks() {
        // Goal: what is written is read back, in order, with its header,
        // when the pairs span several 1 MiB chunks.
        let dir = tempfile::tempdir().unwrap();
        let written = pairs(3000, 1000);
        let path = write(dir.path(), &written);
        let (h, read) = read_all(&path).unwrap();
        assert_eq!((h, read), (header(3000), written));
    }

    #[test]
    fn an_empty_map_is_a_header_and_an_end_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &[]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 + 8);
        assert_eq!(read_all(&path).unwrap().1.len(), 0);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        // Goal: no single damaged byte anywhere in the file goes unnoticed.
        // Method: a snapshot of 3 small pairs (one chunk); flip each byte in
        // turn and read it: CorruptSnapshot every time. (The created_unix_ms
        // and reserved fields are covered by the header CRC too.)
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &pairs(3, 5));
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            match read_all(&path) {
                Err(Error::CorruptSnapshot { .. }) => {}
                other => panic!("flip at byte {at} not detected: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_cut_anywhere_or_extended_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &pairs(3, 5));
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(matches!(read_all(&path), Err(Error::CorruptSnapshot { .. })), "cut at {cut}");
        }
        std::fs::write(&path, [&good[..], &[0u8; 8]].concat()).unwrap();
        assert!(
            matches!(read_all(&path), Err(Error::CorruptSnapshot { .. })),
            "bytes after the end"
        );
    }

    #[test]
    fn a_hostile_chunk_length_is_refused_before_allocating() {
        // Goal: a chunk claiming 4 GiB is an error, not an allocation.
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &pairs(1, 1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[64..68].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        match read_all(&path) {
            Err(Error::CorruptSnapshot { offset: 64, reason, .. }) => {
                assert!(reason.contains("chunk length"), "{reason}")
            }
            other => panic!("expected CorruptSnapshot, got {other:?}"),
        }
    }

    #[test]
    fn the_header_layout_is_exact() {
        let bytes = header(7).encode();
        assert_eq!(&bytes[..8], b"KVSTSNAP");
        assert_eq!(bytes[8..12], 1u32.to_be_bytes());
        assert_eq!(bytes[16..24], 1000u64.to_be_bytes());
        assert_eq!(bytes[24..32], 3u64.to_be_bytes());
        assert_eq!(bytes[32..40], 7u64.to_be_bytes());
        assert_eq!(bytes[56..60], crc32fast::hash(&bytes[..56]).to_be_bytes());
        assert_eq!(SnapshotHeader::decode(&bytes, Path::new("x")).unwrap(), header(7));
    }
}
