//! `docs/PROTOCOL.md` is a specification others implement from, so its
//! examples must be the real bytes. These tests read the document and check
//! every example against kvstore's own encoders and decoders:
//!
//! - each `hex` block is one complete frame: the length prefix matches, the
//!   payload decodes with `Message::decode`, and `Message::encode_frame`
//!   gives back exactly the same bytes;
//! - each `hex-wal-entry` block is one WAL entry, equal to what
//!   `encode_entry` writes for the record it holds, with a CRC checked by an
//!   independent CRC-32;
//! - the `hex-wal-header` block followed by the entries is the whole
//!   first segment (`wal/00000000000000000001.seg`) a real WAL writes for
//!   those records;
//! - the `hex-wal-index` block is the start of that segment's index
//!   (`wal/00000000000000000001.idx`) a real WAL writes for those entries;
//! - every annotation that states a number or a text agrees with the bytes
//!   of its line;
//! - each `json` block is a status report exactly as the server serialises it;
//! - the tables of message types, error codes and limits give the values in
//!   the code;
//! - the proofs of the authentication examples are the HMACs of their
//!   nonces under the example secret.

use std::path::PathBuf;

use kvstore::auth::{ClientHandshake, Secret};
use kvstore::codec::Decoder;
use kvstore::error::ErrorCode;
use kvstore::limits;
use kvstore::protocol::Message;
use kvstore::status::StatusReport;
use kvstore::wal::segment::{
    encode_entry, index_file_name, segment_file_name, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
    WAL_FORMAT_VERSION,
};
use kvstore::wal::{Record, Wal, WAL_DIR_NAME};

/// Fewer frame examples than this means the document lost some.
const FRAME_EXAMPLES_MIN: usize = 12;

/// Every message type, as `Message::name` spells it: each needs an example.
const MESSAGE_NAMES: [&str; 32] = [
    "PUT",
    "GET",
    "DELETE",
    "STATUS",
    "PROMOTE",
    "FOLLOW",
    "OK",
    "VALUE",
    "NOT_FOUND",
    "ERROR",
    "STATUS_REPLY",
    "DONE",
    "APPEND_ENTRIES",
    "APPEND_ENTRIES_ACK",
    "FOLLOWER_HELLO",
    "LEADER_HELLO",
    "APPEND_ENTRIES_REFUSE",
    "REQUEST_VOTE",
    "VOTE",
    "LEADER_ANNOUNCE",
    "PRE_VOTE",
    "READ",
    "TRANSFER_LEADERSHIP",
    "TIMEOUT_NOW",
    "OBSERVER_HELLO",
    "AUTH_HELLO",
    "AUTH_CHALLENGE",
    "AUTH_PROOF",
    "AUTH_OK",
    "SNAPSHOT",
    "INSTALL_SNAPSHOT",
    "INSTALL_SNAPSHOT_ACK",
];

/// The secret of the handshake examples of section 11.
const EXAMPLE_SECRET: &str = "correct horse battery staple";

/// The info strings of hex examples these tests check.
const HEX_INFO_STRINGS: [&str; 4] = ["hex", "hex-wal-header", "hex-wal-entry", "hex-wal-index"];

/// One fenced code block of the document.
struct Block {
    info: String,
    /// 1-based line of the opening fence, for error messages.
    line: usize,
    body: String,
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs").join("PROTOCOL.md")
}

fn doc() -> String {
    let path = doc_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every fenced block (three backticks and an info string ... three
/// backticks), in order.
fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let info = info.trim().to_string();
                open = Some(Block { info, line: i + 1, body: String::new() });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.push(open.take().unwrap()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed in {}", doc_path().display());
    blocks
}

fn blocks_with_info<'a>(blocks: &'a [Block], info: &'a str) -> impl Iterator<Item = &'a Block> {
    blocks.iter().filter(move |b| b.info == info)
}

/// The lines of a hex block that hold bytes, as (bytes, annotation).
/// Everything from `#` to the end of a line is the annotation; every other
/// token must be exactly two lowercase hex digits, and every line with
/// bytes must be annotated.
fn hex_lines(block: &Block) -> Vec<(Vec<u8>, String)> {
    let mut lines = Vec::new();
    for (i, line) in block.body.lines().enumerate() {
        let at = block.line + 1 + i;
        let (data, note) = line.split_once('#').unwrap_or((line, ""));
        let mut bytes = Vec::new();
        for token in data.split_whitespace() {
            let valid = token.len() == 2
                && token.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            assert!(
                valid,
                "line {at}: '{token}' is not a byte written as two lowercase hex digits"
            );
            bytes.push(u8::from_str_radix(token, 16).unwrap());
        }
        if !bytes.is_empty() {
            assert!(line.contains('#'), "line {at}: bytes without an annotation");
            check_annotation(&bytes, note.trim(), at);
            lines.push((bytes, note.trim().to_string()));
        }
    }
    assert!(!lines.is_empty(), "the block at line {} holds no bytes", block.line);
    lines
}

/// The bytes of a hex block, annotations dropped.
fn hex_bytes(block: &Block) -> Vec<u8> {
    hex_lines(block).into_iter().flat_map(|(bytes, _)| bytes).collect()
}

/// An annotation must agree with the bytes of its line, so that an edited
/// byte cannot leave a stale annotation behind:
/// - `name = 27`, `name = 0x01 ...`: the line's bytes as a big-endian number;
/// - `name = 9c1d...` (two hex digits per byte of the line): the bytes in hex;
/// - text between double quotes or between backticks: the bytes, exactly.
fn check_annotation(bytes: &[u8], note: &str, at: usize) {
    let disagree = || format!("line {at}: annotation '{note}' disagrees with the bytes");
    if let Some((_, rhs)) = note.split_once(" = ") {
        let token = rhs.split_whitespace().next().unwrap_or("");
        let number = || {
            assert!(bytes.len() <= 8, "line {at}: '{note}' is a number but the field is longer");
            bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
        };
        if let Ok(n) = token.parse::<u64>() {
            assert_eq!(number(), n, "{}", disagree());
        } else if let Some(hex) = token.strip_prefix("0x") {
            let n = u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("line {at}: {e}"));
            assert_eq!(number(), n, "{}", disagree());
        } else if token.len() == 2 * bytes.len() && token.bytes().all(|c| c.is_ascii_hexdigit()) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, token, "{}", disagree());
        }
    }
    if let Some(open) = note.find(['"', '`']) {
        let quote = note[open..].chars().next().unwrap();
        let close = note.rfind(quote).unwrap();
        assert!(close > open, "line {at}: unbalanced {quote} in '{note}'");
        assert_eq!(&note.as_bytes()[open + 1..close], bytes, "{}", disagree());
    }
}

/// CRC-32/ISO-HDLC computed bit by bit from its definition (reflected
/// polynomial 0xedb88320, initial value and final XOR 0xffffffff),
/// independent of the crate the WAL uses, so the document's definition is
/// checked too.
fn crc32_by_definition(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The bytes and record of one WAL entry example, checked field by field
/// and against `encode_entry`.
fn checked_wal_entry(block: &Block) -> (Vec<u8>, Record) {
    let entry = hex_bytes(block);
    let at = block.line;
    assert!(entry.len() >= 8, "line {at}: a WAL entry starts with an 8-byte header");
    let body_len = u32::from_be_bytes(entry[0..4].try_into().unwrap()) as usize;
    assert_eq!(body_len, entry.len() - 8, "line {at}: body_len disagrees with the entry");
    let crc = u32::from_be_bytes(entry[4..8].try_into().unwrap());
    assert_eq!(crc, crc32_by_definition(&entry[8..]), "line {at}: crc32 of the body");
    let mut d = Decoder::new(&entry[8..]);
    let record = Record::decode(&mut d).unwrap_or_else(|e| panic!("line {at}: {e}"));
    d.finish("WAL entry body").unwrap_or_else(|e| panic!("line {at}: {e}"));
    let mut encoded = Vec::new();
    encode_entry(&record, &mut encoded);
    assert_eq!(encoded, entry, "line {at}: encode_entry writes other bytes for {record:?}");
    (entry, record)
}

#[test]
fn every_hex_frame_decodes_and_re_encodes_to_the_same_bytes() {
    // Goal: each ```hex block is exactly the frame kvstore sends for the
    // message it decodes to, there are at least FRAME_EXAMPLES_MIN of them,
    // and every message type has one.
    let doc = doc();
    let blocks = blocks(&doc);
    for block in blocks.iter().filter(|b| b.info.starts_with("hex")) {
        assert!(
            HEX_INFO_STRINGS.contains(&block.info.as_str()),
            "line {}: unknown info string '{}' would go unchecked",
            block.line,
            block.info
        );
    }
    let mut names = Vec::new();
    for block in blocks_with_info(&blocks, "hex") {
        let frame = hex_bytes(block);
        let at = block.line;
        assert!(frame.len() > 4, "line {at}: a frame is a 4-byte length and a payload");
        let len = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "line {at}: the length prefix must count the payload");
        let message =
            Message::decode(&frame[4..]).unwrap_or_else(|e| panic!("line {at}: {e}: {frame:02x?}"));
        let mut encoded = Vec::new();
        message.encode_frame(&mut encoded);
        assert_eq!(encoded, frame, "line {at}: {message:?} encodes to other bytes");
        let row = format!("| 0x{:02x} | {} |", frame[4], message.name());
        assert!(doc.contains(&row), "the message table lacks the row starting '{row}'");
        if let Message::StatusReply { json } = &message {
            serde_json::from_str::<StatusReport>(json)
                .unwrap_or_else(|e| panic!("line {at}: the JSON is not a status report: {e}"));
        }
        names.push(message.name());
    }
    assert!(
        names.len() >= FRAME_EXAMPLES_MIN,
        "only {} hex frame examples, expected at least {FRAME_EXAMPLES_MIN}",
        names.len()
    );
    for name in MESSAGE_NAMES {
        assert!(names.contains(&name), "no hex example of {name}");
    }
}

#[test]
fn wal_entry_examples_are_what_the_wal_writes() {
    // Goal: each ```hex-wal-entry block is the entry encode_entry writes for
    // its record, and its CRC is the CRC-32 the document defines.
    assert_eq!(crc32_by_definition(b"123456789"), 0xcbf4_3926, "the CRC-32 check value");
    let doc = doc();
    assert!(doc.contains("`0xcbf43926`"), "the document gives the CRC-32 check value");
    let blocks = blocks(&doc);
    let entries: Vec<_> =
        blocks_with_info(&blocks, "hex-wal-entry").map(checked_wal_entry).collect();
    assert!(!entries.is_empty(), "no ```hex-wal-entry example");
}

#[test]
fn wal_files_written_for_the_example_records_match_the_doc() {
    // Goal: a real WAL that logs the example records writes exactly the
    // example header and entries into its first segment and the example
    // slots into that segment's index. Method: append the records of the
    // ```hex-wal-entry blocks (which must be LSN 1, 2, ...) to a WAL in a
    // fresh directory, then compare the files with the blocks.
    let doc = doc();
    let blocks = blocks(&doc);
    let (entries, records): (Vec<Vec<u8>>, Vec<Record>) =
        blocks_with_info(&blocks, "hex-wal-entry").map(checked_wal_entry).unzip();
    let lsns: Vec<u64> = records.iter().map(|r| r.lsn).collect();
    let expected: Vec<u64> = (1..=records.len() as u64).collect();
    assert_eq!(lsns, expected, "the WAL entry examples must be the log's first entries");

    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), |_| {}).unwrap();
    wal.append(&records).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let header_blocks: Vec<_> = blocks_with_info(&blocks, "hex-wal-header").collect();
    assert_eq!(header_blocks.len(), 1, "one ```hex-wal-header example");
    let header = hex_bytes(header_blocks[0]);
    assert_eq!(header.len() as u64, SEGMENT_HEADER_BYTES, "the segment header's length");
    assert_eq!(&header[..8], SEGMENT_MAGIC, "the segment magic");
    assert_eq!(header[8..12], WAL_FORMAT_VERSION.to_be_bytes(), "the current format version");
    let wal_dir = dir.path().join(WAL_DIR_NAME);
    let mut log = std::fs::read(wal_dir.join(segment_file_name(1))).unwrap();
    let expected = [header, entries.concat()].concat();
    // The active segment is preallocated: zeros follow the last entry.
    assert!(log.len() >= expected.len(), "the segment is shorter than the examples");
    assert!(log[expected.len()..].iter().all(|b| *b == 0), "only zeros after the last entry");
    log.truncate(expected.len());
    assert!(log == expected, "the segment differs from the examples:\n{log:?}\n{expected:?}");

    let index_blocks: Vec<_> = blocks_with_info(&blocks, "hex-wal-index").collect();
    assert_eq!(index_blocks.len(), 1, "one ```hex-wal-index example");
    let example = hex_bytes(index_blocks[0]);
    assert_eq!(example.len(), 16 + 8 * records.len(), "index header and one slot per entry");
    let index = std::fs::read(wal_dir.join(index_file_name(1))).unwrap();
    assert_eq!(&index[..example.len()], &example[..], "the index differs from the example");
}

#[test]
fn the_install_snapshot_example_carries_a_whole_valid_snapshot_file() {
    // Goal: the snapshot bytes section 8 shows are a file a node would
    // load: header CRC, end marker, key count and digest all check.
    // Method: take the INSTALL_SNAPSHOT example with data, write its data
    // to a file, and load it as start-up does.
    let doc = doc();
    let blocks = blocks(&doc);
    let piece = blocks_with_info(&blocks, "hex")
        .filter_map(|b| match Message::decode(&hex_bytes(b)[4..]).unwrap() {
            Message::InstallSnapshot(piece) if !piece.data.is_empty() => Some(piece),
            _ => None,
        })
        .next()
        .expect("an INSTALL_SNAPSHOT example with data");
    assert_eq!((piece.offset, piece.data.len() as u64), (0, piece.total_bytes), "the whole file");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000002.snap");
    std::fs::write(&path, &piece.data).unwrap();
    let (store, meta) = kvstore::snapshot::load(&path, |_| {}).expect("a valid snapshot");
    assert_eq!((meta.lsn, meta.term, store.len()), (piece.snapshot_lsn, piece.snapshot_term, 0));
}

#[test]
fn status_json_examples_are_status_reports_as_serialised() {
    // Goal: each ```json block is a status report with exactly the field
    // names and layout the server produces (a misspelt, missing or extra
    // field changes the round trip through StatusReport).
    let doc = doc();
    let blocks = blocks(&doc);
    let mut count = 0;
    for block in blocks_with_info(&blocks, "json") {
        let at = block.line;
        let value: serde_json::Value =
            serde_json::from_str(&block.body).unwrap_or_else(|e| panic!("line {at}: {e}"));
        let report: StatusReport = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("line {at}: not a status report: {e}"));
        assert_eq!(serde_json::to_value(&report).unwrap(), value, "line {at}: round trip");
        count += 1;
    }
    assert!(count >= 2, "a leader's and a follower's status report are shown");
}

#[test]
fn error_code_and_limit_tables_match_the_code() {
    // Goal: the error-code table lists every ErrorCode with its number, and
    // the limits table gives each limit's exact value.
    // Method: every wire code that `ErrorCode::from_u16` knows (unknown codes
    // map to `Internal`, whose own number is 6) needs its row, and codes 1
    // to 13 must all be known.
    let doc = doc();
    let mut known_codes = Vec::new();
    for code in 1..=u16::MAX {
        let known = ErrorCode::from_u16(code);
        if known as u16 != code {
            continue;
        }
        known_codes.push(code);
        let row = format!("| {code} | `{known:?}` |");
        assert!(doc.contains(&row), "the error-code table lacks the row starting '{row}'");
    }
    for code in 1..=19u16 {
        assert!(known_codes.contains(&code), "ErrorCode::from_u16({code}) is not code {code}");
    }
    let limits: [(&str, u64); 39] = [
        ("FRAME_BYTES_MAX", limits::FRAME_BYTES_MAX.into()),
        ("KEY_BYTES_MAX", limits::KEY_BYTES_MAX.into()),
        ("VALUE_BYTES_MAX", limits::VALUE_BYTES_MAX.into()),
        ("APPEND_ENTRIES_RECORDS_MAX", limits::APPEND_ENTRIES_RECORDS_MAX.into()),
        ("APPEND_ENTRIES_BYTES_MAX", limits::APPEND_ENTRIES_BYTES_MAX as u64),
        ("RECORD_BYTES_MAX", limits::RECORD_BYTES_MAX.into()),
        ("HEARTBEAT_INTERVAL_MS", limits::HEARTBEAT_INTERVAL_MS),
        ("REPLICATION_TIMEOUT_MS", limits::REPLICATION_TIMEOUT_MS),
        ("CLIENT_READ_TIMEOUT_MS", limits::CLIENT_READ_TIMEOUT_MS),
        ("CONNECTIONS_MAX_DEFAULT", limits::CONNECTIONS_MAX_DEFAULT as u64),
        ("RECONNECT_BACKOFF_MIN_MS", limits::RECONNECT_BACKOFF_MIN_MS),
        ("RECONNECT_BACKOFF_MAX_MS", limits::RECONNECT_BACKOFF_MAX_MS),
        ("INDEX_GROW_SLOTS", limits::INDEX_GROW_SLOTS),
        ("ADDRESS_BYTES_MAX", limits::ADDRESS_BYTES_MAX as u64),
        ("MEMBERS_MAX", limits::MEMBERS_MAX as u64),
        ("DIGEST_RING_RECORDS", limits::DIGEST_RING_RECORDS as u64),
        ("DIGEST_REPORT_INTERVAL_MS", limits::DIGEST_REPORT_INTERVAL_MS),
        ("ANNOUNCE_INTERVAL_MS", limits::ANNOUNCE_INTERVAL_MS),
        ("PEER_REQUEST_TIMEOUT_MS", limits::PEER_REQUEST_TIMEOUT_MS),
        ("PROBE_ROUNDS_MAX", limits::PROBE_ROUNDS_MAX.into()),
        (
            "UNAUTHENTICATED_CONNECTIONS_MAX_DEFAULT",
            limits::UNAUTHENTICATED_CONNECTIONS_MAX_DEFAULT as u64,
        ),
        ("FRAME_TIMEOUT_MS_DEFAULT", limits::FRAME_TIMEOUT_MS_DEFAULT),
        ("PARTIAL_FRAME_BYTES_MAX_DEFAULT", limits::PARTIAL_FRAME_BYTES_MAX_DEFAULT as u64),
        ("CATCH_UPS_MAX_DEFAULT", limits::CATCH_UPS_MAX_DEFAULT as u64),
        ("AUTH_TIMEOUT_MS", limits::AUTH_TIMEOUT_MS),
        ("AUTH_FRAME_BYTES_MAX", limits::AUTH_FRAME_BYTES_MAX.into()),
        ("AUTH_SECRET_BYTES_MIN", limits::AUTH_SECRET_BYTES_MIN as u64),
        ("AUTH_SECRET_BYTES_MAX", limits::AUTH_SECRET_BYTES_MAX as u64),
        ("FOLLOWER_FRAME_BYTES_MAX", limits::FOLLOWER_FRAME_BYTES_MAX.into()),
        ("INSTALL_SNAPSHOT_DATA_BYTES_MAX", limits::INSTALL_SNAPSHOT_DATA_BYTES_MAX.into()),
        ("SNAPSHOT_INSTALL_TIMEOUT_MS", limits::SNAPSHOT_INSTALL_TIMEOUT_MS),
        ("SNAPSHOT_CHUNK_BYTES", limits::SNAPSHOT_CHUNK_BYTES as u64),
        ("SNAPSHOT_CHUNK_BYTES_MAX", limits::SNAPSHOT_CHUNK_BYTES_MAX.into()),
        ("WAL_SEGMENT_BYTES_DEFAULT", limits::WAL_SEGMENT_BYTES_DEFAULT),
        ("WAL_RETAIN_BYTES_DEFAULT", limits::WAL_RETAIN_BYTES_DEFAULT),
        ("WAL_RETAIN_MAX_BYTES_DEFAULT", limits::WAL_RETAIN_MAX_BYTES_DEFAULT),
        ("FOLLOWER_RETAIN_SECS_DEFAULT", limits::FOLLOWER_RETAIN_SECS_DEFAULT),
        ("SNAPSHOT_AFTER_BYTES_FLOOR", limits::SNAPSHOT_AFTER_BYTES_FLOOR),
        ("INDEX_GROW_SLOTS", limits::INDEX_GROW_SLOTS),
    ];
    for (name, value) in limits {
        let tag = format!("`{name}`");
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&tag))
            .unwrap_or_else(|| panic!("the limits table lacks {name}"));
        let numbers: Vec<&str> = row.split(|c: char| !c.is_ascii_digit()).collect();
        assert!(numbers.contains(&value.to_string().as_str()), "{name} = {value}; table: {row}");
    }
}

#[test]
fn the_authentication_examples_are_a_real_handshake() {
    // Goal: section 11's AUTH_PROOF and AUTH_OK are the proofs kvstore
    // computes for its AUTH_HELLO and AUTH_CHALLENGE under the example
    // secret, so an implementation can test itself against them. Method:
    // replay the client's side of the handshake on the example messages.
    let doc = doc();
    assert!(doc.contains(&format!("`{EXAMPLE_SECRET}`")), "the doc names the example secret");
    let blocks = blocks(&doc);
    let find = |name: &str| {
        blocks_with_info(&blocks, "hex")
            .map(|b| Message::decode(&hex_bytes(b)[4..]).unwrap())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no {name} example"))
    };
    let Message::AuthHello { scope, client_nonce } = find("AUTH_HELLO") else { unreachable!() };
    let secret = Secret::from_bytes(EXAMPLE_SECRET.as_bytes()).unwrap();
    let (client, _) = ClientHandshake::start(scope, client_nonce);
    let (server_nonce, proof) = client.prove(&secret, &find("AUTH_CHALLENGE")).unwrap();
    assert_eq!(proof, find("AUTH_PROOF"), "AUTH_PROOF is not the HMAC of the example");
    client.check(&secret, &server_nonce, &find("AUTH_OK")).expect("AUTH_OK is the server's HMAC");
}
