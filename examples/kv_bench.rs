//! kv_bench: the load generator for kvstore.
//!
//! It opens `-c` connections, each driven by its own OS thread with the
//! blocking [`kvstore::client::Client`], and sends `-n` operations in total
//! (PUT, GET or a 50/50 mix) over a key space of `-r` keys with `-d`-byte
//! values. Every request's latency — from sending it to reading its reply —
//! goes into an HDR histogram; at the end it prints throughput and the
//! p50/p99/p99.9/max latencies, and with `--json` writes them for scripts.
//!
//! ```text
//! cargo run --release --example kv_bench -- --port 9001 -c 16 -n 200000 -d 100 -t put
//! cargo run --release --example kv_bench -- --port 9001 -t get --preload -r 10000
//! ```
//!
//! `--pipeline N` keeps N requests in flight per connection (like
//! `redis-benchmark -P`); the default, 1, is one request at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use kvstore::client::Client;
use kvstore::error::Error;
use kvstore::protocol::Message;
use serde::Serialize;

/// Load generator for kvstore.
#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    /// Connections, each on its own thread.
    #[arg(short = 'c', default_value_t = 16)]
    connections: u64,
    /// Total operations, split across the connections.
    #[arg(short = 'n', default_value_t = 200_000)]
    operations: u64,
    /// Value size in bytes.
    #[arg(short = 'd', default_value_t = 100)]
    value_bytes: usize,
    /// Key space: keys are key:000000000000 .. key:{r-1}.
    #[arg(short = 'r', default_value_t = 100_000)]
    keys: u64,
    /// put, get or mixed (50/50).
    #[arg(short = 't', value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// PUT every key of the key space before measuring (so GETs hit).
    #[arg(long)]
    preload: bool,
    /// Operations per connection before measuring.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Workload {
    Put,
    Get,
    Mixed,
}

/// What one run measured.
#[derive(Serialize)]
struct Report {
    workload: Workload,
    connections: u64,
    operations: u64,
    value_bytes: usize,
    keys: u64,
    pipeline: usize,
    seconds: f64,
    ops_per_sec: f64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

/// splitmix64: a tiny, fast, seedable generator for picking keys.
struct KeyPicker(u64);

impl KeyPicker {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => print_report(&args, &report),
        Err(e) => {
            eprintln!("kv_bench: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<Report, Error> {
    let address = format!("{}:{}", args.host, args.port);
    if args.preload {
        preload(&address, args)?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_connection = args.operations / args.connections.max(1);
    let started = Instant::now();
    let progress = (!args.quiet).then(|| spawn_progress(Arc::clone(&done), args.operations));
    let histogram = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.connections)
            .map(|id| {
                let (address, done, errors) = (&address, &done, &errors);
                s.spawn(move || worker(address, args, id, per_connection, done, errors))
            })
            .collect();
        let mut merged = new_histogram();
        for w in workers {
            let h = w.join().map_err(|_| Error::Unexpected("a worker panicked".into()))??;
            merged.add(&h).map_err(|e| Error::Unexpected(format!("merging histograms: {e}")))?;
        }
        Ok::<_, Error>(merged)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(u64::MAX, Ordering::Release); // stops the progress thread
    if let Some(p) = progress {
        let _ = p.join();
    }
    let count = histogram.len();
    Ok(Report {
        workload: args.workload,
        connections: args.connections,
        operations: count,
        value_bytes: args.value_bytes,
        keys: args.keys,
        pipeline: args.pipeline,
        seconds,
        ops_per_sec: count as f64 / seconds,
        errors: errors.load(Ordering::Acquire),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// One connection: warm up, then `count` operations with up to `pipeline`
/// in flight; returns its latency histogram (microseconds).
fn worker(
    address: &str,
    args: &Args,
    id: u64,
    count: u64,
    done: &AtomicU64,
    errors: &AtomicU64,
) -> Result<Histogram<u64>, Error> {
    let mut client = Client::connect(address)?;
    let mut picker = KeyPicker(0x5eed ^ (id << 32));
    let value = vec![b'x'; args.value_bytes];
    let request = |picker: &mut KeyPicker| {
        let k = key(picker.next() % args.keys.max(1));
        let put = match args.workload {
            Workload::Put => true,
            Workload::Get => false,
            Workload::Mixed => picker.next().is_multiple_of(2),
        };
        if put {
            Message::Put { key: k, value: value.clone() }
        } else {
            Message::Get { key: k }
        }
    };
    for _ in 0..args.warmup {
        client.request(&request(&mut picker)).ok();
    }
    let mut histogram = new_histogram();
    let mut in_flight = std::collections::VecDeque::with_capacity(args.pipeline);
    let mut sent = 0;
    while sent < count || !in_flight.is_empty() {
        while sent < count && in_flight.len() < args.pipeline.max(1) {
            client.send(&request(&mut picker))?;
            in_flight.push_back(Instant::now());
            sent += 1;
        }
        let reply = client.receive();
        let started = in_flight.pop_front().expect("a request is in flight");
        match reply {
            Ok(_) => {}
            Err(Error::Server { .. }) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        let us = started.elapsed().as_micros() as u64;
        histogram.saturating_record(us.max(1));
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(histogram)
}

/// PUT every key once, pipelined, so a GET run finds them.
fn preload(address: &str, args: &Args) -> Result<(), Error> {
    let mut client = Client::connect(address)?;
    let value = vec![b'x'; args.value_bytes];
    let window = 64;
    let mut in_flight = 0;
    for i in 0..args.keys {
        client.send(&Message::Put { key: key(i), value: value.clone() })?;
        in_flight += 1;
        if in_flight == window {
            client.receive()?;
            in_flight -= 1;
        }
    }
    for _ in 0..in_flight {
        client.receive()?;
    }
    Ok(())
}

/// A line on stderr about once a second: operations done and current rate.
fn spawn_progress(done: Arc<AtomicU64>, total: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (0u64, Instant::now());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = done.load(Ordering::Acquire);
            if now == u64::MAX {
                return;
            }
            let rate = (now - last.0) as f64 / last.1.elapsed().as_secs_f64();
            eprintln!("kv_bench: {now}/{total} ops, {rate:.0} ops/s");
            last = (now, Instant::now());
        }
    })
}

fn print_report(args: &Args, r: &Report) {
    let ms = |us: u64| {
        if us >= 1000 {
            format!("{:.1}ms", us as f64 / 1000.0)
        } else {
            format!("{us}us")
        }
    };
    println!(
        "{:<5} c={} n={} d={} P={}: {:.0} ops/s  p50 {}  p99 {}  p99.9 {}  max {}  errors {}",
        format!("{:?}", r.workload).to_lowercase(),
        r.connections,
        r.operations,
        r.value_bytes,
        r.pipeline,
        r.ops_per_sec,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        ms(r.max_us),
        r.errors
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(r).expect("a report serialises");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("kv_bench: writing {}: {e}", path.display());
            std::process::exit(2);
        }
    }
}
