//! The in-memory hash map (week 1). No I/O, no locking: [`crate::db`] owns it.
//!
//! The map only ever changes by applying WAL records, in LSN order, so two
//! nodes that applied the same records hold the same map. `applied_lsn`
//! says how far that is.

use std::collections::HashMap;

use crate::wal::record::{Op, Record};
use crate::Lsn;

/// Keys to values, and the LSN of the last record applied.
#[derive(Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Vec<u8>>,
    applied_lsn: Lsn,
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
                self.map.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                self.map.remove(key);
            }
        }
        self.applied_lsn = record.lsn;
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_overwrite_delete() {
        let mut s = Store::new();
        let put =
            |lsn, v: &str| Record { lsn, op: Op::Put { key: b"k".to_vec(), value: v.into() } };
        s.apply(&put(1, "a"));
        s.apply(&put(2, "b"));
        assert_eq!(s.get(b"k"), Some(&b"b".to_vec()));
        s.apply(&Record { lsn: 3, op: Op::Delete { key: b"k".to_vec() } });
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.applied_lsn(), 3);
    }
}
