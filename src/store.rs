//! The in-memory hash map (week 1). No I/O, no locking: [`crate::db`] owns it.
//!
//! The map only ever changes by applying WAL records, in LSN order, so two
//! nodes that applied the same records hold the same map. `applied_lsn`
//! says how far that is.
//!
//! ## The digest
//!
//! To let an operator (or a test) check that two nodes at the same LSN hold
//! the same data without comparing every key, the store keeps a **digest**:
//! the wrapping sum, over all live pairs, of `xxh3_64(value, seed = xxh3_64(key))`.
//! A sum does not depend on order, so it is a hash of the *state*, not of
//! the history (like etcd's `hashkv`); it is updated in O(1) per record:
//! subtract the old pair's hash, add the new one.
//!
//! ## The hasher
//!
//! The map hashes keys with foldhash (the default of the `hashbrown` table
//! inside `std`'s HashMap, seeded randomly per process) rather than std's
//! SipHash: a follower catching up on a million records spent a third of its
//! time in SipHash. The random seed keeps an attacker who cannot see the
//! hashes from choosing keys that all collide.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::wal::record::{Op, Record};
use crate::Lsn;

/// Keys to values, and the LSN of the last record applied.
#[derive(Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Vec<u8>, RandomState>,
    applied_lsn: Lsn,
    digest: u64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Apply one record. Records must arrive in LSN order, each exactly once.
    pub fn apply(&mut self, record: &Record) {
        assert_eq!(
            record.lsn,
            self.applied_lsn + 1,
            "records are applied in order: applied {}, got {}",
            self.applied_lsn,
            record.lsn
        );
        match &record.op {
            Op::Put { key, value } => {
                self.digest = self.digest.wrapping_add(pair_hash(key, value));
                if let Some(old) = self.map.insert(key.clone(), value.clone()) {
                    self.digest = self.digest.wrapping_sub(pair_hash(key, &old));
                }
            }
            Op::Delete { key } => {
                if let Some(old) = self.map.remove(key) {
                    self.digest = self.digest.wrapping_sub(pair_hash(key, &old));
                }
            }
            Op::Noop => {}
        }
        self.applied_lsn = record.lsn;
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// Order-independent hash of every live key/value pair.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Hash of one pair: the value's xxh3 seeded with the key's, so ("ab", "c")
/// and ("a", "bc") differ. Two one-shot calls: a streaming hasher costs more
/// to set up than these short inputs cost to hash.
fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, xxh3_64(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_state_not_history() {
        // Goal: two different histories that end in the same pairs have the
        // same digest; any difference in the pairs changes it.
        let put = |lsn, k: &str, v: &str| Record {
            lsn,
            term: 1,
            op: Op::Put { key: k.into(), value: v.into() },
        };
        let mut a = Store::new();
        a.apply(&put(1, "x", "1"));
        a.apply(&put(2, "y", "2"));
        let mut b = Store::new();
        b.apply(&put(1, "y", "old"));
        b.apply(&put(2, "gone", "soon"));
        b.apply(&put(3, "x", "1"));
        b.apply(&Record { lsn: 4, term: 1, op: Op::Delete { key: b"gone".to_vec() } });
        b.apply(&put(5, "y", "2"));
        assert_eq!(a.digest(), b.digest());
        b.apply(&put(6, "y", "3"));
        assert_ne!(a.digest(), b.digest());
        assert_eq!(Store::new().digest(), 0);
    }

    #[test]
    fn put_overwrite_delete() {
        let mut s = Store::new();
        let put = |lsn, v: &str| Record {
            lsn,
            term: 1,
            op: Op::Put { key: b"k".to_vec(), value: v.into() },
        };
        s.apply(&put(1, "a"));
        s.apply(&put(2, "b"));
        assert_eq!(s.get(b"k"), Some(&b"b".to_vec()));
        s.apply(&Record { lsn: 3, term: 1, op: Op::Delete { key: b"k".to_vec() } });
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.applied_lsn(), 3);
    }
}
