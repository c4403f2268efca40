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
//!
//! ## Shards: no second-long pause when the map grows
//!
//! A hash table grows by doubling: when it is 7/8 full, the next insert
//! allocates a table twice the size and moves every entry into it, all
//! at once. The cost per insert averages out, but the pause does not: at
//! 7,340,032 keys one insert moves 7.3 million entries, which took 1 to
//! 1.6 s on the 2-core benchmark machine, and 3 to 5 s when it was busy.
//! The map's write lock is held meanwhile, so a leader stops answering
//! reads, and a follower catching up does not ACK for so long that its
//! leader may drop the link (silent peer after 5 s) and the catch-up goes
//! on from a new connection.
//!
//! So the map is [`SHARDS`] tables, and a key lives in the one its hash
//! picks. Each table grows on its own and moves only its own entries
//! (about 115,000 at 7.3 million keys). With keys spread evenly the
//! tables fill at nearly the same rate, so their growths still come
//! close together, spread over about 20 batches of 4,096 records: the
//! slowest batch at 10 million keys went from 1.1-1.6 s to 0.12-0.19 s
//! (`examples/store_growth.rs`). The total work is the same
//! as with one table. The shard hash and the tables' own hashes use
//! independent random seeds, so the keys of one shard are not clustered
//! inside its table. Redis avoids the pause differently, by moving a few
//! buckets on every operation (incremental rehashing); std's table
//! cannot do that.
//!
//! ## Copy-on-write shards: snapshots without stopping writes
//!
//! A snapshot (`crate::snapshot`) writes the whole map as it was at one
//! LSN, which takes a while (about a second per million keys), and writes
//! must go on meanwhile. Redis gets a frozen copy from `fork()`: the
//! kernel shares the pages and copies one only when the parent writes it.
//! kvstore does the same one level up: each shard is behind an `Arc`, and
//! [`Store::freeze`] clones the 64 `Arc`s (not the tables) under the map's
//! write lock — the only pause writers see for the snapshot as such, a few
//! microseconds. The snapshot then reads its frozen shards at leisure.
//! When a writer changes a shard that a snapshot still holds, it first
//! copies that one shard (`Arc::make_mut`): 1/64th of the map, about 15,600
//! keys at a million, a millisecond or two, once per shard per snapshot.
//! The snapshot writer lets go of each shard as soon as it has written it,
//! so later writes to it copy nothing. Memory grows by at most one copy of
//! the map (every shard copied), the same bound as Redis's fork. The
//! copies are counted and timed ([`CopyStats`]), and the snapshot's log
//! line reports them.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::wal::record::{Op, Record};
use crate::Lsn;

/// Tables the map is split into (see "Shards" above): enough that one
/// table's growth at 10 million keys moves about 115,000 entries; few
/// enough that an empty store is small (an empty table allocates nothing).
pub const SHARDS: usize = 64;

/// One of the tables the map is split into.
pub type Shard = HashMap<Vec<u8>, Vec<u8>, RandomState>;

/// Keys to values, and the LSN of the last record applied.
pub struct Store {
    /// `SHARDS` tables; a key is in `shards[shard_of(key)]`. An `Arc` is
    /// shared only while a snapshot holds it (copy-on-write, above).
    shards: Vec<Arc<Shard>>,
    /// Picks a key's shard; seeded apart from the tables' own hashers.
    shard_hasher: RandomState,
    applied_lsn: Lsn,
    digest: u64,
    /// Bytes of every live key and value (what a snapshot will hold).
    live_bytes: u64,
    /// Shards copied by writers since the last [`Store::freeze`].
    copies: CopyStats,
}

/// The copies writers made of shards a snapshot held: how many, and how
/// long the longest took (the write lock was held meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub shards: u32,
    pub longest: Duration,
    pub total: Duration,
}

/// The map frozen at one LSN for a snapshot: its shards, shared with the
/// store until the snapshot has written them (see "Copy-on-write shards").
pub struct Frozen {
    pub shards: Vec<Arc<Shard>>,
    pub lsn: Lsn,
    pub digest: u64,
    pub keys: u64,
    pub live_bytes: u64,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect(),
            shard_hasher: RandomState::default(),
            applied_lsn: 0,
            digest: 0,
            live_bytes: 0,
            copies: CopyStats::default(),
        }
    }

    /// An empty map with room for `keys` keys, so that loading a snapshot
    /// of that many never grows (rehashes) a table: a fifth of the time of
    /// loading a million keys went to growing the tables.
    pub fn with_capacity(keys: usize) -> Store {
        let per_shard = keys / SHARDS + keys / SHARDS / 8 + 1;
        let mut store = Store::new();
        store.shards = (0..SHARDS)
            .map(|_| Arc::new(HashMap::with_capacity_and_hasher(per_shard, RandomState::default())))
            .collect();
        store
    }

    /// Make room for `keys` keys in all, spread over the shards as the
    /// keys will be, before a catch-up brings them: each table is sized
    /// once instead of doubling, and moving every key, on the way. A
    /// table already that large is left alone. False if the memory could
    /// not be had (the tables then grow as records arrive, as before).
    pub fn reserve(&mut self, keys: usize) -> bool {
        let per_shard = keys / SHARDS + 1;
        (0..SHARDS).all(|i| {
            let additional = per_shard.saturating_sub(self.shards[i].len());
            additional == 0 || self.shard_mut(i).try_reserve(additional).is_ok()
        })
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.shard_hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// The shard `i`, to change it: copied first if a snapshot holds it.
    fn shard_mut(&mut self, i: usize) -> &mut Shard {
        let started = (Arc::strong_count(&self.shards[i]) > 1).then(Instant::now);
        let shard = Arc::make_mut(&mut self.shards[i]);
        if let Some(started) = started {
            let took = started.elapsed();
            self.copies.shards += 1;
            self.copies.total += took;
            self.copies.longest = self.copies.longest.max(took);
        }
        shard
    }

    /// Freeze the map for a snapshot (see "Copy-on-write shards"): share
    /// every shard with the snapshot, and start counting copies afresh.
    pub fn freeze(&mut self) -> Frozen {
        self.copies = CopyStats::default();
        Frozen {
            shards: self.shards.clone(),
            lsn: self.applied_lsn,
            digest: self.digest,
            keys: self.len() as u64,
            live_bytes: self.live_bytes,
        }
    }

    /// The copies writers made since the last freeze.
    pub fn copy_stats(&self) -> CopyStats {
        self.copies
    }

    /// Add a pair read from a snapshot, while the map is rebuilt from it
    /// (before any record is applied). False if the key was already there:
    /// a snapshot holds each key once.
    pub fn restore(&mut self, key: Vec<u8>, value: Vec<u8>) -> bool {
        assert_eq!(self.applied_lsn, 0, "a map is restored before any record is applied");
        self.digest = self.digest.wrapping_add(pair_hash(&key, &value));
        self.live_bytes += (key.len() + value.len()) as u64;
        let shard = self.shard_of(&key);
        self.shard_mut(shard).insert(key, value).is_none()
    }

    /// The restored map is the state after `lsn`: records continue from it.
    pub fn restored_at(&mut self, lsn: Lsn) {
        assert_eq!(self.applied_lsn, 0, "a map is restored once");
        self.applied_lsn = lsn;
    }

    /// Bytes of every live key and value.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Apply one record. Records must arrive in LSN order, each exactly once.
    /// Apply one record, the next in LSN order. The record is moved in:
    /// its key and value become the map's own, with no copy (a key already
    /// in the map keeps the stored copy, and the new one is dropped).
    pub fn apply(&mut self, record: Record) {
        assert_eq!(
            record.lsn,
            self.applied_lsn + 1,
            "records are applied in order: applied {}, got {}",
            self.applied_lsn,
            record.lsn
        );
        match record.op {
            Op::Put { key, value } => {
                // pair_hash, with the key's half kept for the old value.
                let key_hash = xxh3_64(&key);
                self.digest = self.digest.wrapping_add(xxh3_64_with_seed(&value, key_hash));
                self.live_bytes += (key.len() + value.len()) as u64;
                let key_len = key.len() as u64;
                let shard = self.shard_of(&key);
                if let Some(old) = self.shard_mut(shard).insert(key, value) {
                    self.digest = self.digest.wrapping_sub(xxh3_64_with_seed(&old, key_hash));
                    self.live_bytes -= key_len + old.len() as u64;
                }
            }
            Op::Delete { key } => {
                let shard = self.shard_of(&key);
                if self.shards[shard].contains_key(key.as_slice()) {
                    if let Some(old) = self.shard_mut(shard).remove(&key) {
                        self.digest = self.digest.wrapping_sub(pair_hash(&key, &old));
                        self.live_bytes -= (key.len() + old.len()) as u64;
                    }
                }
            }
            Op::Noop => {}
        }
        self.applied_lsn = record.lsn;
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.shards[self.shard_of(key)].get(key)
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
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }
}

/// Hash of one pair: the value's xxh3 seeded with the key's, so ("ab", "c")
/// and ("a", "bc") differ. Two one-shot calls: a streaming hasher costs more
/// to set up than these short inputs cost to hash.
pub fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
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
        a.apply(put(1, "x", "1"));
        a.apply(put(2, "y", "2"));
        let mut b = Store::new();
        b.apply(put(1, "y", "old"));
        b.apply(put(2, "gone", "soon"));
        b.apply(put(3, "x", "1"));
        b.apply(Record { lsn: 4, term: 1, op: Op::Delete { key: b"gone".to_vec() } });
        b.apply(put(5, "y", "2"));
        assert_eq!(a.digest(), b.digest());
        b.apply(put(6, "y", "3"));
        assert_ne!(a.digest(), b.digest());
        assert_eq!(Store::new().digest(), 0);
    }

    #[test]
    fn every_key_is_found_in_its_shard() {
        // Goal: splitting the map into shards loses nothing. Method: put
        // 10,000 keys (about 156 per shard), overwrite some, delete some,
        // and check every key, the count and that every shard was used.
        let mut s = Store::new();
        let mut lsn = 0;
        let mut apply = |s: &mut Store, op: Op| {
            lsn += 1;
            s.apply(Record { lsn, term: 1, op });
        };
        for i in 0..10_000 {
            apply(&mut s, Op::Put { key: format!("k{i}").into(), value: format!("v{i}").into() });
        }
        for i in (0..10_000).step_by(3) {
            apply(&mut s, Op::Put { key: format!("k{i}").into(), value: b"new".to_vec() });
        }
        for i in (0..10_000).step_by(2) {
            apply(&mut s, Op::Delete { key: format!("k{i}").into() });
        }
        for i in 0..10_000 {
            let want = match (i % 2, i % 3) {
                (0, _) => None,
                (_, 0) => Some(b"new".to_vec()),
                _ => Some(format!("v{i}").into_bytes()),
            };
            assert_eq!(s.get(format!("k{i}").as_bytes()), want.as_ref(), "key k{i}");
        }
        assert_eq!(s.len(), 5_000);
        assert!(s.shards.iter().all(|shard| !shard.is_empty()), "keys spread over every shard");
    }

    #[test]
    fn a_frozen_map_does_not_see_later_writes_and_writers_copy_only_what_they_touch() {
        // Goal: copy-on-write keeps the frozen view exactly the state at
        // its LSN while writes go on. Method: 1,000 keys, freeze, overwrite
        // one key and delete another; the frozen shards still hold the old
        // pairs, the store the new ones, and at most two shards were copied.
        let mut s = Store::new();
        for i in 0..1000u64 {
            let op = Op::Put { key: format!("k{i}").into(), value: b"old".to_vec() };
            s.apply(Record { lsn: i + 1, term: 1, op });
        }
        let frozen = s.freeze();
        let (digest, keys, live) = (s.digest(), s.len(), s.live_bytes());
        assert_eq!((frozen.lsn, frozen.digest, frozen.keys), (1000, digest, 1000));
        s.apply(Record {
            lsn: 1001,
            term: 1,
            op: Op::Put { key: b"k1".to_vec(), value: b"new".to_vec() },
        });
        s.apply(Record { lsn: 1002, term: 1, op: Op::Delete { key: b"k2".to_vec() } });
        s.apply(Record { lsn: 1003, term: 1, op: Op::Delete { key: b"absent".to_vec() } });
        let frozen_get =
            |key: &[u8]| frozen.shards.iter().find_map(|shard| shard.get(key).cloned());
        assert_eq!(frozen_get(b"k1"), Some(b"old".to_vec()));
        assert_eq!(frozen_get(b"k2"), Some(b"old".to_vec()));
        assert_eq!(s.get(b"k1"), Some(&b"new".to_vec()));
        assert_eq!(s.get(b"k2"), None);
        assert_eq!(frozen.shards.iter().map(|s| s.len()).sum::<usize>(), keys);
        assert!((1..=2).contains(&s.copy_stats().shards), "{:?}", s.copy_stats());
        assert_eq!(s.live_bytes(), live - (2 + 3), "k2 and its value are gone");
        assert_ne!(s.digest(), digest);
    }

    #[test]
    fn a_restored_map_has_the_digest_of_the_map_it_came_from() {
        let mut a = Store::new();
        for i in 0..100u64 {
            let op = Op::Put { key: format!("k{i}").into(), value: format!("v{i}").into() };
            a.apply(Record { lsn: i + 1, term: 1, op });
        }
        let frozen = a.freeze();
        let mut b = Store::new();
        for shard in &frozen.shards {
            for (k, v) in shard.iter() {
                assert!(b.restore(k.clone(), v.clone()));
            }
        }
        b.restored_at(frozen.lsn);
        assert_eq!(
            (b.digest(), b.len(), b.live_bytes(), b.applied_lsn()),
            (a.digest(), 100, a.live_bytes(), 100)
        );
        assert!(!b.shards.is_empty());
    }

    #[test]
    fn put_overwrite_delete() {
        let mut s = Store::new();
        let put = |lsn, v: &str| Record {
            lsn,
            term: 1,
            op: Op::Put { key: b"k".to_vec(), value: v.into() },
        };
        s.apply(put(1, "a"));
        s.apply(put(2, "b"));
        assert_eq!(s.get(b"k"), Some(&b"b".to_vec()));
        s.apply(Record { lsn: 3, term: 1, op: Op::Delete { key: b"k".to_vec() } });
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.applied_lsn(), 3);
    }
}
