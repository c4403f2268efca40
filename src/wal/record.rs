//! A WAL record: one change, numbered by its LSN and stamped with the term
//! of the leader that wrote it (week 9; terms: `docs/FAILOVER.md`).
//!
//! The record's bytes are the lesson's layout plus the term, used both
//! inside the WAL file and inside AppendEntries messages, so a follower
//! stores exactly what the leader logged:
//!
//! ```text
//! [lsn u64][term u64][cmd u8][key_len u32][key][value_len u32][value]
//! ```
//!
//! `cmd` is 0x01 for PUT and 0x03 for DELETE (the same numbers as the client
//! request types). A DELETE has `value_len = 0`. All integers are big-endian.
//!
//! `cmd` 0x00 is a NOOP: an empty record a newly elected leader writes
//! first (Raft section 8). Records of older terms are committed only by a
//! record of the leader's own term after them, so without it a leader
//! with no client writes could never tell which of its records are
//! committed, and could not serve a linearizable read.
//!
//! Why the term is in every record: two nodes can hold *different* records
//! at the same LSN (a leader lost its unsynced tail and wrote new records
//! there). The pair (LSN, term) names one record for the whole cluster —
//! only one leader ever writes in a term, and it never writes two records
//! at one LSN — so comparing terms is how two logs find where they agree.
//!
//! The WAL's format version 1 had no term (`[lsn][cmd]...`); [`Record::decode_v1`]
//! reads it, as term 1, when an old data directory is upgraded.

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::{Lsn, Term};

/// `cmd` byte of a NOOP record (a new leader's first record).
pub const CMD_NOOP: u8 = 0x00;
/// `cmd` byte of a PUT record.
pub const CMD_PUT: u8 = 0x01;
/// `cmd` byte of a DELETE record.
pub const CMD_DELETE: u8 = 0x03;

/// Bytes of a record's fixed fields: lsn 8 + term 8 + cmd 1 + key_len 4 + value_len 4.
pub const RECORD_FIXED_BYTES: usize = 25;

/// Bytes of a format-1 record's fixed fields (no term): 8 + 1 + 4 + 4.
pub const RECORD_V1_FIXED_BYTES: usize = 17;

/// What a record does to the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Changes nothing; marks the start of a leader's term.
    Noop,
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
            Op::Noop => &[],
        }
    }

    /// Check the key and value against the limits before anything is logged.
    pub fn check_limits(&self) -> Result<()> {
        let too_large = |what, len: usize, max: u32| Error::TooLarge {
            what,
            len: len as u64,
            max: u64::from(max),
        };
        if self.key().len() > KEY_BYTES_MAX as usize {
            return Err(too_large("key", self.key().len(), KEY_BYTES_MAX));
        }
        if let Op::Put { value, .. } = self {
            if value.len() > VALUE_BYTES_MAX as usize {
                return Err(too_large("value", value.len(), VALUE_BYTES_MAX));
            }
        }
        Ok(())
    }
}

/// One numbered change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    /// The term of the leader that wrote this record (1 or more).
    pub term: Term,
    pub op: Op,
}

impl Record {
    /// Bytes this record takes in the lesson layout.
    pub fn encoded_len(&self) -> usize {
        RECORD_FIXED_BYTES
            + match &self.op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } => key.len(),
                Op::Noop => 0,
            }
    }

    /// Append the record's layout to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (cmd, key, value): (u8, &[u8], &[u8]) = match &self.op {
            Op::Put { key, value } => (CMD_PUT, key, value),
            Op::Delete { key } => (CMD_DELETE, key, &[]),
            Op::Noop => (CMD_NOOP, &[], &[]),
        };
        out.extend_from_slice(&self.lsn.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.push(cmd);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }

    /// Read one record from `d`.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Record> {
        let lsn = d.u64("record lsn")?;
        if lsn == 0 {
            return Err(Error::Malformed("record has LSN 0, the first LSN is 1".into()));
        }
        let term = d.u64("record term")?;
        if term == 0 {
            return Err(Error::Malformed(format!("record at LSN {lsn} has term 0")));
        }
        let op = decode_op(d)?;
        Ok(Record { lsn, term, op })
    }

    /// Read one record of WAL format version 1 (no term field) as term 1:
    /// every record written before terms existed came from the first leader.
    pub fn decode_v1(d: &mut Decoder<'_>) -> Result<Record> {
        let lsn = d.u64("record lsn")?;
        if lsn == 0 {
            return Err(Error::Malformed("record has LSN 0, the first LSN is 1".into()));
        }
        let op = decode_op(d)?;
        Ok(Record { lsn, term: 1, op })
    }
}

/// The fields after the LSN (and term): cmd, key, value.
fn decode_op(d: &mut Decoder<'_>) -> Result<Op> {
    let cmd = d.u8("record cmd")?;
    let key = d.bytes_u32("record key", KEY_BYTES_MAX)?;
    let value = d.bytes_u32("record value", VALUE_BYTES_MAX)?;
    match cmd {
        CMD_PUT => Ok(Op::Put { key, value }),
        CMD_DELETE if value.is_empty() => Ok(Op::Delete { key }),
        CMD_DELETE => Err(Error::Malformed("DELETE record carries a value".into())),
        CMD_NOOP if key.is_empty() && value.is_empty() => Ok(Op::Noop),
        CMD_NOOP => Err(Error::Malformed("NOOP record carries a key or value".into())),
        other => Err(Error::Malformed(format!("unknown record cmd 0x{other:02x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        let key = proptest::collection::vec(any::<u8>(), 0..64);
        let value = proptest::collection::vec(any::<u8>(), 0..256);
        (1..u64::MAX, 1..u64::MAX, key, value, 0..3u8).prop_map(|(lsn, term, key, value, cmd)| {
            let op = match cmd {
                0 => Op::Put { key, value },
                1 => Op::Delete { key },
                _ => Op::Noop,
            };
            Record { lsn, term, op }
        })
    }

    proptest! {
        // Goal: every record survives encode → decode unchanged, and
        // encoded_len predicts the encoding exactly.
        #[test]
        fn record_round_trips(record in arb_record()) {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), record.encoded_len());
            let mut d = Decoder::new(&bytes);
            prop_assert_eq!(Record::decode(&mut d).unwrap(), record);
            prop_assert_eq!(d.remaining(), 0);
        }

        // Goal: arbitrary bytes never panic the decoder.
        #[test]
        fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Record::decode(&mut Decoder::new(&bytes));
        }
    }

    #[test]
    fn lesson_layout_is_exact() {
        // Goal: the bytes match the documented layout field by field.
        let r =
            Record { lsn: 1, term: 2, op: Op::Put { key: b"k".to_vec(), value: b"v".to_vec() } };
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(
            bytes,
            [
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1,
                b'v'
            ]
        );
    }

    #[test]
    fn version_1_records_read_as_term_1() {
        // Goal: the lesson layout without a term (WAL format 1) still decodes.
        let bytes = [0, 0, 0, 0, 0, 0, 0, 7, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v'];
        let r = Record::decode_v1(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!((r.lsn, r.term), (7, 1));
    }

    #[test]
    fn term_zero_is_refused() {
        let bytes = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Record::decode(&mut Decoder::new(&bytes)).is_err());
    }

    #[test]
    fn key_length_beyond_limit_is_refused_before_allocation() {
        // Goal: a key_len of 4 GiB is an error, not an allocation.
        let mut bytes = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x01];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = Record::decode(&mut Decoder::new(&bytes)).unwrap_err();
        assert!(matches!(err, Error::TooLarge { what: "record key", .. }), "{err}");
    }

    #[test]
    fn delete_with_value_and_unknown_cmd_are_refused() {
        let mut bytes = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, CMD_DELETE];
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']);
        assert!(Record::decode(&mut Decoder::new(&bytes)).is_err());
        bytes[16] = 0x7f;
        assert!(Record::decode(&mut Decoder::new(&bytes)).is_err());
    }
}
