//! Every kvstore message and its exact bytes (week 2; lessons 3 and 5).
//!
//! A message is the payload of one frame: a type byte, then its fields.
//! Integers are big-endian; byte strings are `[len u32][bytes]`.
//!
//! | type | name               | fields                                                  |
//! |------|--------------------|---------------------------------------------------------|
//! | 0x01 | PUT                | `[key_len u32][key][value_len u32][value]`              |
//! | 0x02 | GET                | `[key_len u32][key]`                                    |
//! | 0x03 | DELETE             | `[key_len u32][key]`                                    |
//! | 0x04 | STATUS             | (none)                                                  |
//! | 0x10 | OK                 | `[lsn u64]` — the LSN the write was logged at           |
//! | 0x11 | VALUE              | `[value_len u32][value]`                                |
//! | 0x12 | NOT_FOUND          | (none)                                                  |
//! | 0x13 | ERROR              | `[code u16][message_len u32][message utf-8]`            |
//! | 0x14 | STATUS_REPLY       | `[json_len u32][json utf-8]`                            |
//! | 0x20 | APPEND_ENTRIES     | `[commit_lsn u64][leader_last_lsn u64][num_records u32][record]...` |
//! | 0x21 | APPEND_ENTRIES_ACK | `[last_lsn u64]`                                        |
//! | 0x22 | FOLLOWER_HELLO     | `[last_lsn u64]`, optionally `[listen_port u16]`, optionally then `[cluster_id 16 bytes]` |
//! | 0x23 | LEADER_HELLO       | `[cluster_id 16 bytes][last_lsn u64]`                   |
//!
//! A record inside APPEND_ENTRIES has the WAL's layout (see
//! [`crate::wal::record`]): `[lsn u64][cmd u8][key_len u32][key][value_len u32][value]`.
//!
//! Decoding checks every length against what remains and against the
//! limits, and refuses trailing bytes: a frame and its fields must agree.

use crate::cluster::{ClusterId, CLUSTER_ID_BYTES};
use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::limits::{APPEND_ENTRIES_RECORDS_MAX, FRAME_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::protocol::frame::{begin_frame, end_frame};
use crate::wal::record::{Record, RECORD_FIXED_BYTES};
use crate::Lsn;

pub const TYPE_PUT: u8 = 0x01;
pub const TYPE_GET: u8 = 0x02;
pub const TYPE_DELETE: u8 = 0x03;
pub const TYPE_STATUS: u8 = 0x04;
pub const TYPE_OK: u8 = 0x10;
pub const TYPE_VALUE: u8 = 0x11;
pub const TYPE_NOT_FOUND: u8 = 0x12;
pub const TYPE_ERROR: u8 = 0x13;
pub const TYPE_STATUS_REPLY: u8 = 0x14;
pub const TYPE_APPEND_ENTRIES: u8 = 0x20;
pub const TYPE_APPEND_ENTRIES_ACK: u8 = 0x21;
pub const TYPE_FOLLOWER_HELLO: u8 = 0x22;
pub const TYPE_LEADER_HELLO: u8 = 0x23;

/// Longest ERROR message accepted (64 KiB): error texts are one sentence.
const ERROR_MESSAGE_BYTES_MAX: u32 = 64 * 1024;

/// The body of an APPEND_ENTRIES message (lesson 3, plus lesson 4's commit LSN).
///
/// `leader_last_lsn` is the LSN this message brings the follower to: during
/// catch-up, the leader's last LSN when the catch-up began; afterwards the
/// last record in the message; in a heartbeat, the leader's last LSN. A
/// follower whose last LSN reaches it is caught up (lesson 5's log line),
/// and it is how far behind the leader a follower's `status` says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEntries {
    pub commit_lsn: Lsn,
    pub leader_last_lsn: Lsn,
    /// Contiguous records (each LSN one more than the one before); may be
    /// empty, which makes the message a heartbeat.
    pub records: Vec<Record>,
}

/// Every message kvstore sends or receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Status,
    Ok {
        lsn: Lsn,
    },
    Value {
        value: Vec<u8>,
    },
    NotFound,
    Error {
        code: u16,
        message: String,
    },
    StatusReply {
        json: String,
    },
    AppendEntries(AppendEntries),
    AppendEntriesAck {
        last_lsn: Lsn,
    },
    /// Lesson 5: the follower's opening message. Both extensions are
    /// optional on the wire, so the lesson's 9-byte HELLO stays valid:
    /// `listen_port` is the port the follower serves clients on (the leader
    /// matches it with an entry of `--peers`; 0 = not given), `cluster_id`
    /// the cluster the follower's log belongs to (absent for a fresh node).
    FollowerHello {
        last_lsn: Lsn,
        listen_port: Option<u16>,
        cluster_id: Option<ClusterId>,
    },
    /// The leader's answer to FOLLOWER_HELLO, sent before any AppendEntries:
    /// the cluster's id (a fresh follower adopts it) and the leader's last LSN.
    LeaderHello {
        cluster_id: ClusterId,
        last_lsn: Lsn,
    },
}

impl Message {
    /// The message's name as the lessons and docs write it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Put { .. } => "PUT",
            Message::Get { .. } => "GET",
            Message::Delete { .. } => "DELETE",
            Message::Status => "STATUS",
            Message::Ok { .. } => "OK",
            Message::Value { .. } => "VALUE",
            Message::NotFound => "NOT_FOUND",
            Message::Error { .. } => "ERROR",
            Message::StatusReply { .. } => "STATUS_REPLY",
            Message::AppendEntries(_) => "APPEND_ENTRIES",
            Message::AppendEntriesAck { .. } => "APPEND_ENTRIES_ACK",
            Message::FollowerHello { .. } => "FOLLOWER_HELLO",
            Message::LeaderHello { .. } => "LEADER_HELLO",
        }
    }

    /// Build an ERROR reply from an error.
    pub fn error(err: &Error) -> Message {
        Message::Error { code: err.code() as u16, message: err.to_string() }
    }

    /// Append this message as one complete frame (length prefix included).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let at = begin_frame(out);
        self.encode_payload(out);
        end_frame(out, at);
    }

    /// Append the payload: type byte and fields.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Put { key, value } => {
                out.push(TYPE_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Message::Get { key } => {
                out.push(TYPE_GET);
                put_bytes(out, key);
            }
            Message::Delete { key } => {
                out.push(TYPE_DELETE);
                put_bytes(out, key);
            }
            Message::Status => out.push(TYPE_STATUS),
            Message::Ok { lsn } => {
                out.push(TYPE_OK);
                out.extend_from_slice(&lsn.to_be_bytes());
            }
            Message::Value { value } => {
                out.push(TYPE_VALUE);
                put_bytes(out, value);
            }
            Message::NotFound => out.push(TYPE_NOT_FOUND),
            Message::Error { code, message } => {
                out.push(TYPE_ERROR);
                out.extend_from_slice(&code.to_be_bytes());
                put_bytes(out, message.as_bytes());
            }
            Message::StatusReply { json } => {
                out.push(TYPE_STATUS_REPLY);
                put_bytes(out, json.as_bytes());
            }
            Message::AppendEntries(ae) => {
                encode_append_entries(out, ae.commit_lsn, ae.leader_last_lsn, &ae.records)
            }
            Message::AppendEntriesAck { last_lsn } => {
                out.push(TYPE_APPEND_ENTRIES_ACK);
                out.extend_from_slice(&last_lsn.to_be_bytes());
            }
            Message::FollowerHello { last_lsn, listen_port, cluster_id } => {
                out.push(TYPE_FOLLOWER_HELLO);
                out.extend_from_slice(&last_lsn.to_be_bytes());
                if listen_port.is_some() || cluster_id.is_some() {
                    out.extend_from_slice(&listen_port.unwrap_or(0).to_be_bytes());
                }
                if let Some(id) = cluster_id {
                    out.extend_from_slice(&id.0);
                }
            }
            Message::LeaderHello { cluster_id, last_lsn } => {
                out.push(TYPE_LEADER_HELLO);
                out.extend_from_slice(&cluster_id.0);
                out.extend_from_slice(&last_lsn.to_be_bytes());
            }
        }
    }

    /// Decode one frame's payload. Never panics; every error names the field.
    pub fn decode(payload: &[u8]) -> Result<Message> {
        let mut d = Decoder::new(payload);
        let message = match d.u8("message type")? {
            TYPE_PUT => Message::Put {
                key: d.bytes_u32("key", KEY_BYTES_MAX)?,
                value: d.bytes_u32("value", VALUE_BYTES_MAX)?,
            },
            TYPE_GET => Message::Get { key: d.bytes_u32("key", KEY_BYTES_MAX)? },
            TYPE_DELETE => Message::Delete { key: d.bytes_u32("key", KEY_BYTES_MAX)? },
            TYPE_STATUS => Message::Status,
            TYPE_OK => Message::Ok { lsn: d.u64("OK lsn")? },
            TYPE_VALUE => Message::Value { value: d.bytes_u32("value", VALUE_BYTES_MAX)? },
            TYPE_NOT_FOUND => Message::NotFound,
            TYPE_ERROR => {
                let code = d.u16("error code")?;
                let text = d.bytes_u32("error message", ERROR_MESSAGE_BYTES_MAX)?;
                Message::Error { code, message: String::from_utf8_lossy(&text).into_owned() }
            }
            TYPE_STATUS_REPLY => {
                let json = d.bytes_u32("status json", FRAME_BYTES_MAX)?;
                let json = String::from_utf8(json)
                    .map_err(|_| Error::Malformed("status json is not UTF-8".into()))?;
                Message::StatusReply { json }
            }
            TYPE_APPEND_ENTRIES => Message::AppendEntries(decode_append_entries(&mut d)?),
            TYPE_APPEND_ENTRIES_ACK => Message::AppendEntriesAck { last_lsn: d.u64("ack lsn")? },
            TYPE_FOLLOWER_HELLO => {
                let last_lsn = d.u64("hello last_lsn")?;
                let mut listen_port = None;
                let mut cluster_id = None;
                if d.remaining() > 0 {
                    listen_port = Some(d.u16("hello listen_port")?).filter(|p| *p != 0);
                }
                if d.remaining() > 0 {
                    cluster_id = decode_cluster_id(&mut d, "hello cluster_id")?;
                }
                Message::FollowerHello { last_lsn, listen_port, cluster_id }
            }
            TYPE_LEADER_HELLO => {
                let cluster_id =
                    decode_cluster_id(&mut d, "leader hello cluster_id")?.ok_or_else(|| {
                        Error::Malformed("LEADER_HELLO with a zero cluster id".into())
                    })?;
                Message::LeaderHello { cluster_id, last_lsn: d.u64("leader hello last_lsn")? }
            }
            other => return Err(Error::UnknownMessageType(other)),
        };
        d.finish(message.name())?;
        Ok(message)
    }
}

/// Append an APPEND_ENTRIES payload built from borrowed records, so a
/// leader's sender thread never copies records just to send them.
pub fn encode_append_entries(
    out: &mut Vec<u8>,
    commit_lsn: Lsn,
    leader_last_lsn: Lsn,
    records: &[Record],
) {
    out.push(TYPE_APPEND_ENTRIES);
    out.extend_from_slice(&commit_lsn.to_be_bytes());
    out.extend_from_slice(&leader_last_lsn.to_be_bytes());
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        record.encode(out);
    }
}

/// Builds one APPEND_ENTRIES frame record by record, so a sender can mix
/// records from its channel and from the WAL without copying them first.
pub struct AppendEntriesEncoder {
    buf: Vec<u8>,
    count: u32,
    last_lsn: Option<Lsn>,
}

/// Offset of `num_records` in the frame: length 4 + type 1 + commit 8 + last 8.
const AE_COUNT_AT: usize = 4 + 1 + 8 + 8;

impl AppendEntriesEncoder {
    /// Start a message carrying `commit_lsn` and `leader_last_lsn`.
    pub fn new(commit_lsn: Lsn, leader_last_lsn: Lsn) -> AppendEntriesEncoder {
        let mut buf = Vec::with_capacity(64 * 1024);
        let at = begin_frame(&mut buf);
        debug_assert_eq!(at, 0);
        encode_append_entries(&mut buf, commit_lsn, leader_last_lsn, &[]);
        AppendEntriesEncoder { buf, count: 0, last_lsn: None }
    }

    /// Add the next record; it must follow the previous one.
    pub fn push(&mut self, record: &Record) {
        if let Some(last) = self.last_lsn {
            assert_eq!(record.lsn, last + 1, "AppendEntries records must be contiguous");
        }
        record.encode(&mut self.buf);
        self.count += 1;
        self.last_lsn = Some(record.lsn);
    }

    /// True when no more records should be added (count or bytes limit).
    pub fn is_full(&self) -> bool {
        self.count >= APPEND_ENTRIES_RECORDS_MAX
            || self.buf.len() >= crate::limits::APPEND_ENTRIES_BYTES_MAX
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn last_lsn(&self) -> Option<Lsn> {
        self.last_lsn
    }

    /// Set `leader_last_lsn` after the fact (e.g. to the last record added).
    pub fn set_leader_last_lsn(&mut self, lsn: Lsn) {
        self.buf[AE_COUNT_AT - 8..AE_COUNT_AT].copy_from_slice(&lsn.to_be_bytes());
    }

    /// The finished frame, length prefix included.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[AE_COUNT_AT..AE_COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        end_frame(&mut self.buf, 0);
        &self.buf
    }
}

fn decode_append_entries(d: &mut Decoder<'_>) -> Result<AppendEntries> {
    let commit_lsn = d.u64("commit_lsn")?;
    let leader_last_lsn = d.u64("leader_last_lsn")?;
    let count = d.u32("num_records")?;
    if count > APPEND_ENTRIES_RECORDS_MAX {
        return Err(Error::TooLarge {
            what: "AppendEntries record count",
            len: u64::from(count),
            max: u64::from(APPEND_ENTRIES_RECORDS_MAX),
        });
    }
    // Never trust `count` for the allocation: at most as many records as
    // the remaining bytes could hold.
    let mut records = Vec::with_capacity((count as usize).min(d.remaining() / RECORD_FIXED_BYTES));
    for _ in 0..count {
        let record = Record::decode(d)?;
        if let Some(prev) = records.last().map(|r: &Record| r.lsn) {
            // checked: a peer may send LSN u64::MAX.
            if prev.checked_add(1) != Some(record.lsn) {
                return Err(Error::Malformed(format!(
                    "AppendEntries records are not contiguous: LSN {} follows {prev}",
                    record.lsn
                )));
            }
        }
        records.push(record);
    }
    Ok(AppendEntries { commit_lsn, leader_last_lsn, records })
}

/// Read 16 id bytes; all zeros means "none".
fn decode_cluster_id(d: &mut Decoder<'_>, what: &str) -> Result<Option<ClusterId>> {
    let mut id = [0u8; CLUSTER_ID_BYTES];
    id.copy_from_slice(d.take(CLUSTER_ID_BYTES, what)?);
    Ok((id != [0u8; CLUSTER_ID_BYTES]).then_some(ClusterId(id)))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::Op;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_records() -> impl Strategy<Value = Vec<Record>> {
        (1..1_000_000u64, proptest::collection::vec((bytes(16), bytes(32), any::<bool>()), 0..8))
            .prop_map(|(first, ops)| {
                ops.into_iter()
                    .enumerate()
                    .map(|(i, (key, value, put))| Record {
                        lsn: first + i as u64,
                        op: if put { Op::Put { key, value } } else { Op::Delete { key } },
                    })
                    .collect()
            })
    }

    fn arb_cluster_id() -> impl Strategy<Value = ClusterId> {
        any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]).prop_map(ClusterId)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (bytes(32), bytes(64)).prop_map(|(key, value)| Message::Put { key, value }),
            bytes(32).prop_map(|key| Message::Get { key }),
            bytes(32).prop_map(|key| Message::Delete { key }),
            Just(Message::Status),
            any::<u64>().prop_map(|lsn| Message::Ok { lsn }),
            bytes(64).prop_map(|value| Message::Value { value }),
            Just(Message::NotFound),
            (any::<u16>(), ".{0,40}").prop_map(|(code, message)| Message::Error { code, message }),
            ".{0,40}".prop_map(|json| Message::StatusReply { json }),
            (any::<u64>(), any::<u64>(), arb_records()).prop_map(|(c, l, records)| {
                Message::AppendEntries(AppendEntries { commit_lsn: c, leader_last_lsn: l, records })
            }),
            any::<u64>().prop_map(|last_lsn| Message::AppendEntriesAck { last_lsn }),
            (
                any::<u64>(),
                proptest::option::of(1..=u16::MAX),
                proptest::option::of(arb_cluster_id())
            )
                .prop_map(|(last_lsn, listen_port, cluster_id)| {
                    Message::FollowerHello { last_lsn, listen_port, cluster_id }
                }),
            (arb_cluster_id(), any::<u64>())
                .prop_map(|(cluster_id, last_lsn)| Message::LeaderHello { cluster_id, last_lsn }),
        ]
    }

    proptest! {
        // Goal: every message decodes to itself after encoding.
        #[test]
        fn every_message_round_trips(message in arb_message()) {
            let mut payload = Vec::new();
            message.encode_payload(&mut payload);
            prop_assert_eq!(Message::decode(&payload).unwrap(), message);
        }

        // Goal: a message cut short anywhere is an error, never a panic or
        // a different message.
        #[test]
        fn truncated_messages_are_errors(message in arb_message(), cut in any::<prop::sample::Index>()) {
            let mut payload = Vec::new();
            message.encode_payload(&mut payload);
            let at = cut.index(payload.len());
            if let Ok(decoded) = Message::decode(&payload[..at]) {
                // Only HELLO has optional tails: a cut exactly at the end of
                // a field (byte 9 or 11) yields a shorter, valid HELLO.
                let is_short_hello = matches!(
                    (&message, &decoded),
                    (Message::FollowerHello { .. }, Message::FollowerHello { .. })
                ) && (at == 9 || at == 11);
                prop_assert!(is_short_hello, "{:?} decoded from a cut {:?}", decoded, message);
            }
        }

        // Goal: arbitrary payloads never panic the decoder.
        #[test]
        fn decoder_never_panics(payload in bytes(256)) {
            let _ = Message::decode(&payload);
        }
    }

    #[test]
    fn put_has_the_documented_bytes() {
        // Goal: PUT "k" = "v" is exactly the frame PROTOCOL.md shows.
        let mut out = Vec::new();
        Message::Put { key: b"k".to_vec(), value: b"v".to_vec() }.encode_frame(&mut out);
        assert_eq!(out, [0, 0, 0, 11, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v']);
    }

    #[test]
    fn encoder_builds_the_same_bytes_as_the_message() {
        // Goal: the streaming encoder and Message::AppendEntries agree.
        let records: Vec<Record> = (3..6)
            .map(|lsn| Record { lsn, op: Op::Put { key: vec![lsn as u8], value: vec![1, 2] } })
            .collect();
        let mut enc = AppendEntriesEncoder::new(2, 0);
        for r in &records {
            enc.push(r);
        }
        enc.set_leader_last_lsn(5);
        let mut expected = Vec::new();
        Message::AppendEntries(AppendEntries { commit_lsn: 2, leader_last_lsn: 5, records })
            .encode_frame(&mut expected);
        assert_eq!(enc.finish(), &expected[..]);
    }

    #[test]
    fn unknown_type_is_named() {
        assert!(matches!(Message::decode(&[0x7f]), Err(Error::UnknownMessageType(0x7f))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        // Goal: a frame longer than its fields say is malformed.
        assert!(matches!(Message::decode(&[TYPE_STATUS, 0]), Err(Error::Malformed(_))));
    }

    #[test]
    fn lengths_that_disagree_with_the_frame_are_refused() {
        // key_len says 100 but only 1 byte follows.
        let payload = [TYPE_GET, 0, 0, 0, 100, b'k'];
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }

    #[test]
    fn absurd_record_count_is_refused_before_allocation() {
        let mut payload = vec![TYPE_APPEND_ENTRIES];
        payload.extend_from_slice(&[0; 16]);
        payload.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Message::decode(&payload), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn a_record_after_lsn_u64_max_is_refused_without_overflow() {
        // Goal: found by `make fuzz`: "the next LSN" of u64::MAX must not
        // overflow; the message is malformed, never a panic.
        let records = vec![
            Record { lsn: u64::MAX, op: Op::Delete { key: b"a".to_vec() } },
            Record { lsn: 1, op: Op::Delete { key: b"b".to_vec() } },
        ];
        let mut payload = Vec::new();
        encode_append_entries(&mut payload, 0, 0, &records);
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }

    #[test]
    fn non_contiguous_records_are_refused() {
        let records = vec![
            Record { lsn: 5, op: Op::Delete { key: b"a".to_vec() } },
            Record { lsn: 7, op: Op::Delete { key: b"b".to_vec() } },
        ];
        let mut payload = Vec::new();
        encode_append_entries(&mut payload, 0, 7, &records);
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }
}
