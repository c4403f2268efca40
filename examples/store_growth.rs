//! store_growth: the longest pause of the map while it grows (week 1).
//!
//! A hash table grows by doubling, and the insert that finds it 7/8 full
//! moves every entry into the new table before it returns. This applies
//! `--records` PUTs of new keys to a [`Store`] in batches of 4,096 records
//! (one full AppendEntries, which a follower applies under the map's write
//! lock) and reports the mean cost per record and the slowest batch: the
//! pause a leader's readers, or a catching-up follower's leader, would see.
//! Keys and values are the catch-up benchmark's (16 and 100 bytes).
//!
//! ```text
//! cargo run --release --example store_growth -- --records 10000000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use kvstore::store::Store;
use kvstore::wal::{Op, Record};

/// The server's allocator, so that allocation costs are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Keys to insert.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
}

/// Records per batch: one full AppendEntries (`APPEND_ENTRIES_RECORDS_MAX`).
const BATCH_RECORDS: u64 = kvstore::limits::APPEND_ENTRIES_RECORDS_MAX as u64;

fn main() {
    let args = Args::parse();
    // The server runs without transparent huge pages (src/bin/kvstore.rs),
    // which changes what a growing table costs in page faults.
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only how
    // this process's future page faults are served.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };

    let mut store = Store::new();
    let value = vec![b'v'; 100];
    let (mut applying, mut slowest, mut slowest_at) = (Duration::ZERO, Duration::ZERO, 0);
    let mut lsn = 1;
    while lsn <= args.records {
        let batch: Vec<Record> = (lsn..=args.records.min(lsn + BATCH_RECORDS - 1))
            .map(|l| Record {
                lsn: l,
                term: 1,
                op: Op::Put { key: format!("key:{l:012}").into(), value: value.clone() },
            })
            .collect();
        let count = batch.len() as u64;
        let started = Instant::now();
        for record in batch {
            store.apply(record);
        }
        let took = started.elapsed();
        applying += took;
        if took > slowest {
            (slowest, slowest_at) = (took, lsn);
        }
        lsn += count;
    }
    println!(
        "{} keys applied in batches of {BATCH_RECORDS}: {:.2} us per record; slowest batch \
         {:.0} ms (from LSN {slowest_at})",
        store.len(),
        applying.as_secs_f64() * 1e6 / args.records as f64,
        slowest.as_secs_f64() * 1e3
    );
}
