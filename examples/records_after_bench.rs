//! records_after_bench: the cost of positioning in the WAL (lesson 5).
//!
//! Catch-up starts with `records_after(lsn)`. Without an index that is a
//! scan from the start of the log, so its cost grows with the log; with the
//! memory-mapped index it is one slot read and one `pread`, whatever the
//! log's size. This builds WALs of each size given (16-byte keys, 100-byte
//! values, like the catch-up benchmark), then times `records_after` at
//! random LSNs: fetching 1 record (pure positioning) and 1,000 records.
//!
//! It shows what the index buys, not a size-independent cost: a random
//! probe into a 1.4 GB log misses the CPU caches and the TLB where one
//! into a 140 KB log hits them, so the two sizes differ by the cost of a
//! cold memory access. Whether catch-up as a whole keeps its pace as the
//! log grows is `examples/catch_up_bench.rs`'s question (`make bench`,
//! scenario 5).
//!
//! ```text
//! cargo run --release --example records_after_bench -- --records 1000,10000000
//! ```

use std::time::Instant;

use clap::Parser;
use kvstore::wal::{Op, Record, Wal};

#[derive(Parser, Debug)]
struct Args {
    /// WAL sizes to build, in records, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000000")]
    records: Vec<u64>,
    /// Calls timed per size.
    #[arg(long, default_value_t = 20_000)]
    probes: u64,
    /// Print one JSON object per size.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    for &count in &args.records {
        if let Err(e) = measure(count, &args) {
            eprintln!("records_after_bench: {e}");
            std::process::exit(2);
        }
    }
}

fn measure(count: u64, args: &Args) -> Result<(), kvstore::error::Error> {
    let dir = tempfile::tempdir().map_err(|e| kvstore::error::Error::io("tempdir", e))?;
    let (wal, _) = Wal::open(dir.path(), |_| {})?;
    let value = vec![b'v'; 100];
    let built = Instant::now();
    let mut lsn = 1;
    while lsn <= count {
        let batch: Vec<Record> = (lsn..=count.min(lsn + 9_999))
            .map(|l| Record {
                lsn: l,
                term: 1,
                op: Op::Put { key: format!("key:{l:012}").into(), value: value.clone() },
            })
            .collect();
        wal.append(&batch)?;
        lsn += batch.len() as u64;
    }
    wal.sync()?;
    let build_s = built.elapsed().as_secs_f64();

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random_lsn = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + state % count
    };
    let mut time_calls = |records_max: usize, bytes_max: usize| {
        let mut ns: Vec<u64> = (0..args.probes)
            .map(|_| {
                let at = random_lsn();
                let t = Instant::now();
                let got = wal.records_after(at - 1, count, records_max, bytes_max);
                let elapsed = t.elapsed().as_nanos() as u64;
                assert_eq!(got.map(|r| r[0].lsn).ok(), Some(at), "records_after positions exactly");
                elapsed
            })
            .collect();
        ns.sort_unstable();
        (ns[ns.len() / 2], ns[ns.len() * 99 / 100])
    };
    let (one_p50, one_p99) = time_calls(1, 4096);
    let (batch_p50, batch_p99) = time_calls(1000, 1 << 20);
    // Without the index, positioning means reading the log from the start:
    // on average half of it. Time one full scan for comparison.
    let scanned = Instant::now();
    kvstore::wal::scan_dir(dir.path(), |_| {})?;
    let scan_half_us = scanned.elapsed().as_micros() as u64 / 2;
    if args.json {
        println!(
            "{{\"records\":{count},\"one_p50_ns\":{one_p50},\"one_p99_ns\":{one_p99},\
             \"batch1000_p50_ns\":{batch_p50},\"batch1000_p99_ns\":{batch_p99},\
             \"scan_half_us\":{scan_half_us}}}"
        );
    } else {
        println!(
            "records_after on a WAL of {count:>10} records (built in {build_s:.1} s): \
             1 record p50 {:.1} us p99 {:.1} us; 1000 records p50 {:.1} us p99 {:.1} us; \
             without the index (scan half the log) {scan_half_us} us",
            one_p50 as f64 / 1e3,
            one_p99 as f64 / 1e3,
            batch_p50 as f64 / 1e3,
            batch_p99 as f64 / 1e3
        );
    }
    Ok(())
}
