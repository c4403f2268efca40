//! Any file as the first WAL segment (and, the same bytes, as a legacy
//! `wal.log` to upgrade): recovery never panics, and what it keeps is a run
//! of records with LSNs 1, 2, 3, ... (it never invents or reorders one).
#![no_main]

use kvstore::wal::segment::segment_file_name;
use kvstore::wal::upgrade::LEGACY_LOG_FILE_NAME;
use kvstore::wal::{Wal, WAL_DIR_NAME};
use libfuzzer_sys::fuzz_target;

fn recover(dir: &std::path::Path) {
    let mut next = 1;
    if let Ok((wal, _)) = Wal::open(dir, |record| {
        assert_eq!(record.lsn, next);
        next += 1;
    }) {
        assert_eq!(wal.last_lsn(), next - 1);
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(WAL_DIR_NAME)).unwrap();
    std::fs::write(dir.path().join(WAL_DIR_NAME).join(segment_file_name(1)), data).unwrap();
    recover(dir.path());
    let legacy = tempfile::tempdir().unwrap();
    std::fs::write(legacy.path().join(LEGACY_LOG_FILE_NAME), data).unwrap();
    recover(legacy.path());
});
