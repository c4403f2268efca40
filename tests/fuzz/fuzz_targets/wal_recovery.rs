//! Any file as wal.log: recovery never panics, and what it keeps is a run of
//! records with LSNs 1, 2, 3, ... (it never invents or reorders one).
#![no_main]

use kvstore::wal::{Wal, LOG_FILE_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_FILE_NAME), data).unwrap();
    let mut next = 1;
    if let Ok((wal, _)) = Wal::open(dir.path(), |record| {
        assert_eq!(record.lsn, next);
        next += 1;
    }) {
        assert_eq!(wal.last_lsn(), next - 1);
    }
});
