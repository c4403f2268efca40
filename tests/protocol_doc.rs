//! docs/PROTOCOL.md's hex examples are produced by the real code: every
//! ```hex block must decode as a message and re-encode to the same bytes,
//! and the ```hex-wal-entry block must be a valid WAL entry.

use kvstore::codec::Decoder;
use kvstore::protocol::Message;
use kvstore::wal::log::encode_entry;
use kvstore::wal::Record;

/// The fenced blocks of PROTOCOL.md with the given info string, as bytes
/// (everything after `#` on a line is an annotation).
fn hex_blocks(info: &str) -> Vec<Vec<u8>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim() == format!("```{info}") => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.push(current.take().unwrap()),
            Some(bytes) => {
                let data = line.split('#').next().unwrap();
                for byte in data.split_whitespace() {
                    let parsed = u8::from_str_radix(byte, 16);
                    bytes.push(parsed.unwrap_or_else(|_| panic!("bad hex {byte:?} in {line:?}")));
                }
            }
        }
    }
    blocks
}

#[test]
fn every_message_example_is_exactly_what_the_code_sends() {
    // Goal: the document cannot drift from the code. Method: decode each
    // example frame and re-encode it; the bytes must match exactly.
    let blocks = hex_blocks("hex");
    assert!(blocks.len() >= 16, "only {} hex examples found", blocks.len());
    for frame in blocks {
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4, "length prefix of {frame:02x?}");
        let message = Message::decode(&frame[4..])
            .unwrap_or_else(|e| panic!("example {frame:02x?} does not decode: {e}"));
        let mut encoded = Vec::new();
        message.encode_frame(&mut encoded);
        assert_eq!(encoded, frame, "{} example re-encodes differently", message.name());
    }
}

#[test]
fn the_wal_entry_example_is_a_valid_entry() {
    // Goal: the on-disk example has the right length and checksum.
    let blocks = hex_blocks("hex-wal-entry");
    assert_eq!(blocks.len(), 1);
    let entry = &blocks[0];
    let mut d = Decoder::new(&entry[8..]);
    let record = Record::decode(&mut d).unwrap();
    assert_eq!(d.remaining(), 0);
    let mut encoded = Vec::new();
    encode_entry(&record, &mut encoded);
    assert_eq!(&encoded, entry);
}
