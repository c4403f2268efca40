//! kv_bench — a load generator for kvstore that reports throughput and
//! latency percentiles.
//!
//! ## What it measures
//!
//! `-c N` connections each run on their own OS thread with their own blocking
//! [`kvstore::client::Client`]. Together they perform `-n` operations (PUT,
//! GET or a 50/50 mix) on keys `key:000000000042` drawn uniformly from a key
//! space of `-r` keys, with values of `-d` bytes. It reports:
//!
//! - **throughput**: replies received per second of wall-clock time, from the
//!   moment every connection is ready until the last one finishes;
//! - **latency**: for every request, the time from just before it is sent to
//!   the moment its reply has been read, in microseconds. Each thread records
//!   into its own [`hdrhistogram::Histogram`] (3 significant figures, so
//!   1234us is kept as 1234us and 1234567us within 0.1%); the histograms are
//!   merged at the end and p50, p99, p99.9 and max are read from the result.
//!
//! An ERROR reply (e.g. a write sent to a follower) is a reply like any other:
//! it is counted in `errors` and its latency is recorded. A broken connection
//! is fatal: the run stops and the program exits with status 1.
//!
//! ## Pipelining
//!
//! With `--pipeline 1` (the default) each connection sends a request and waits
//! for its reply: throughput is then bounded by `connections / round-trip
//! time`. With `--pipeline N` each connection keeps a window of N requests in
//! flight; the server answers in order, so the oldest outstanding request is
//! the one the next reply belongs to. Latency still runs from a request's own
//! send to its own reply, so it includes the time spent queued behind the
//! requests ahead of it — which is what a pipelining client really waits.
//!
//! ## A whole cluster
//!
//! With `--cluster 9001,9002,9003` instead of `--port`, each connection is a
//! [`kvstore::cluster_client::ClusterClient`]: writes go to whichever member
//! leads, following the "leader is X" error and trying the other members
//! when one does not answer, within `--retry-ms` (default 5 s). This is the
//! load to run across a failover. One request is in flight per connection
//! (`--pipeline` must be 1), and the latency of a request includes any
//! search for the leader it needed. A write whose outcome is unknown (the
//! connection broke after it was sent, or the leader was deposed before it
//! could confirm it) is counted as `unknown`, never retried and never
//! counted as failed; the run goes on with the next operation. Only a
//! request that finds no leader within the budget stops the run.
//!
//! ## How to run it
//!
//! ```text
//! cargo build --release
//! ./target/release/kvstore --port 0 --data-dir "$(mktemp -d)" --fsync never &
//! #   ... note the port in the "listening on 127.0.0.1:PORT" line
//! cargo run --release --example kv_bench -- --port PORT -c 16 -n 200000 -d 100 -t put
//! cargo run --release --example kv_bench -- --port PORT -t get --preload -r 10000
//! cargo run --release --example kv_bench -- --port PORT -t mixed --pipeline 16 --json /tmp/r.json
//! cargo run --release --example kv_bench -- --cluster 9001,9002,9003 -c 8 -n 100000
//! ```
//!
//! `--preload` first PUTs every key of the key space (pipelined, spread over
//! the connections) so that a `get` run measures hits rather than NOT_FOUND.
//! `--warmup N` runs N unmeasured operations per connection first (warm
//! caches, a grown hash map, a started group commit). Progress goes to stderr
//! about once a second; the one-line result goes to stdout; `--json PATH`
//! also writes the result, with every parameter, as JSON.
//!
//! Numbers from one machine running both client and server measure the pair:
//! the benchmark's own threads compete with the server's for the same cores.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, ValueEnum};
use hdrhistogram::Histogram;
use kvstore::client::Client;
use kvstore::cluster_client::{ClusterClient, RETRY_BUDGET_MS_DEFAULT};
use kvstore::dial::Dialer;
use kvstore::error::Error as KvError;
use kvstore::limits::VALUE_BYTES_MAX;
use kvstore::protocol::Message;
use kvstore::tls::TlsFiles;
use serde::Serialize;

/// Any fatal error; `Send + Sync` so it can travel back from a worker thread.
type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// How long a connection waits for any one reply before the run is declared
/// broken (a hung server must not hang the benchmark forever).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Significant figures kept by the latency histograms.
const HISTOGRAM_SIGFIGS: u8 = 3;

/// Requests in flight per connection while preloading the key space.
const PRELOAD_PIPELINE: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "kv_bench",
    about = "Load generator for kvstore: throughput and latency percentiles"
)]
struct Args {
    /// Connections, each on its own thread.
    #[arg(short = 'c', long = "connections", default_value_t = 1)]
    connections: usize,

    /// Total measured operations, split across the connections.
    #[arg(short = 'n', long = "ops", default_value_t = 100_000)]
    ops: u64,

    /// Value size in bytes (PUT).
    #[arg(short = 'd', long = "value-bytes", default_value_t = 100)]
    value_bytes: usize,

    /// Key space: keys are key:{i:012} with i uniform in 0..r.
    #[arg(short = 'r', long = "keys", default_value_t = 100_000)]
    keys: u64,

    /// Operation mix.
    #[arg(short = 't', long = "type", value_enum, default_value_t = Workload::Put)]
    workload: Workload,

    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Server port.
    #[arg(long, required_unless_present = "cluster", conflicts_with = "cluster")]
    port: Option<u16>,

    /// Every member of a cluster (ports or host:port, comma-separated):
    /// requests go to whichever member leads.
    #[arg(long, value_delimiter = ',', value_name = "MEMBERS")]
    cluster: Vec<String>,

    /// With --cluster: how long one request may look for the leader.
    #[arg(long, default_value_t = RETRY_BUDGET_MS_DEFAULT, value_name = "MS")]
    retry_ms: u64,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,

    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Unmeasured operations per connection before the measured run.
    #[arg(long, default_value_t = 0)]
    warmup: u64,

    /// PUT every key of the key space before the run, so GETs hit.
    #[arg(long)]
    preload: bool,

    /// No progress lines on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,

    /// A file holding the secret of a node started with --auth-file: every
    /// connection authenticates first (docs/SECURITY.md).
    #[arg(long, env = "KVSTORE_AUTH_FILE", value_name = "PATH")]
    auth_file: Option<PathBuf>,

    /// Connect over TLS, trusting the CA in this PEM file.
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,

    /// A client certificate (PEM) for a node that requires one.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM, mode 0600).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl Args {
    /// Checks clap cannot express with types alone.
    fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("-c must be at least 1".into());
        }
        if self.keys == 0 {
            return Err("-r must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if !self.cluster.is_empty() && self.pipeline > 1 {
            return Err("--cluster sends one request at a time: --pipeline must be 1".into());
        }
        if self.value_bytes > VALUE_BYTES_MAX as usize {
            return Err(format!("-d must be at most {VALUE_BYTES_MAX} (the server's value limit)"));
        }
        Ok(())
    }

    /// Measured operations for connection `id`: an even share, the remainder
    /// going one each to the first connections.
    fn ops_for(&self, id: usize) -> u64 {
        let c = self.connections as u64;
        self.ops / c + u64::from((id as u64) < self.ops % c)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Workload {
    Put,
    Get,
    /// 50% PUT, 50% GET.
    Mixed,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        };
        f.pad(name)
    }
}

/// One operation to perform: which request, on which key index.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put(u64),
    Get(u64),
}

fn key(index: u64) -> Vec<u8> {
    format!("key:{index:012}").into_bytes()
}

/// SplitMix64: a tiny, fast, statistically good PRNG (Steele, Lea & Flood,
/// 2014). It only has to pick benchmark keys, so speed and reproducibility
/// matter and unpredictability does not: never use it for anything secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by multiply-and-shift (Lemire): the bias is below
    /// n / 2^64, far too small to matter for choosing keys.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The random operations of connection `id`: deterministic, so two runs with
/// the same arguments send the same requests. `stream` separates the warm-up
/// sequence from the measured one.
fn random_ops(
    workload: Workload,
    keys: u64,
    id: usize,
    stream: u64,
    count: u64,
) -> impl Iterator<Item = Op> {
    let mut rng = SplitMix64((id as u64) << 32 | stream);
    (0..count).map(move |_| {
        let k = rng.below(keys);
        match workload {
            Workload::Put => Op::Put(k),
            Workload::Get => Op::Get(k),
            Workload::Mixed if rng.next_u64() & 1 == 0 => Op::Put(k),
            Workload::Mixed => Op::Get(k),
        }
    })
}

/// What one connection saw.
struct Stats {
    /// Latency of every reply, in microseconds.
    latency_us: Histogram<u64>,
    /// Replies received (including ERROR replies).
    count: u64,
    /// ERROR replies.
    errors: u64,
    /// GETs answered NOT_FOUND (a `get` run without `--preload` is mostly these).
    not_found: u64,
    /// With --cluster: writes whose outcome is unknown (see the module docs).
    unknown: u64,
    /// The first ERROR reply's text, to show the user what went wrong.
    first_error: Option<String>,
    /// Why the first unknown outcome was unknown.
    first_unknown: Option<String>,
}

impl Stats {
    fn new() -> BenchResult<Stats> {
        Ok(Stats {
            latency_us: Histogram::new(HISTOGRAM_SIGFIGS)?,
            count: 0,
            errors: 0,
            not_found: 0,
            unknown: 0,
            first_error: None,
            first_unknown: None,
        })
    }

    fn merge(&mut self, other: &Stats) -> BenchResult<()> {
        self.latency_us.add(&other.latency_us)?;
        self.count += other.count;
        self.errors += other.errors;
        self.not_found += other.not_found;
        self.unknown += other.unknown;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if self.first_unknown.is_none() {
            self.first_unknown.clone_from(&other.first_unknown);
        }
        Ok(())
    }
}

/// Where one connection's requests go.
enum Target {
    /// One server (`--port`), with up to `--pipeline` requests in flight.
    Node(Client),
    /// Whichever member of `--cluster` leads, one request at a time.
    Cluster(ClusterClient),
}

/// Perform `ops` on `target` and record each reply into `stats`.
/// `progress` (if given) counts replies for the progress line; once `abort`
/// is set (another connection failed) no new request is sent.
fn drive(
    target: &mut Target,
    ops: impl Iterator<Item = Op>,
    window: usize,
    value: &[u8],
    stats: &mut Stats,
    progress: Option<&AtomicU64>,
    abort: &AtomicBool,
) -> BenchResult<()> {
    match target {
        Target::Node(client) => drive_node(client, ops, window, value, stats, progress, abort),
        Target::Cluster(cluster) => drive_cluster(cluster, ops, value, stats, progress, abort),
    }
}

/// `--cluster`: one request at a time through the [`ClusterClient`].
fn drive_cluster(
    cluster: &mut ClusterClient,
    ops: impl Iterator<Item = Op>,
    value: &[u8],
    stats: &mut Stats,
    progress: Option<&AtomicU64>,
    abort: &AtomicBool,
) -> BenchResult<()> {
    for op in ops {
        if abort.load(Ordering::Relaxed) {
            break;
        }
        let sent_at = Instant::now();
        let reply = match op {
            Op::Put(k) => cluster.put(&key(k), value).map(|_| true),
            Op::Get(k) => cluster.get(&key(k)).map(|found| found.is_some()),
        };
        let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.record(micros)?;
        stats.count += 1;
        match reply {
            Ok(true) => {}
            Ok(false) => stats.not_found += 1,
            Err(KvError::Indeterminate(why)) => {
                stats.unknown += 1;
                stats.first_unknown.get_or_insert(why);
            }
            Err(KvError::Server { message, .. }) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(message);
            }
            Err(fatal) => return Err(fatal.into()),
        }
        if let Some(done) = progress {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// `--port`: up to `window` requests in flight on one connection.
fn drive_node(
    client: &mut Client,
    ops: impl Iterator<Item = Op>,
    window: usize,
    value: &[u8],
    stats: &mut Stats,
    progress: Option<&AtomicU64>,
    abort: &AtomicBool,
) -> BenchResult<()> {
    let mut ops = ops.peekable();
    // Requests sent and not yet answered, oldest first: (kind, send time).
    let mut in_flight: VecDeque<(Op, Instant)> = VecDeque::with_capacity(window);
    loop {
        // Fill the window.
        while in_flight.len() < window && !abort.load(Ordering::Relaxed) {
            let Some(op) = ops.next() else { break };
            let request = match op {
                Op::Put(k) => Message::Put { key: key(k), value: value.to_vec() },
                Op::Get(k) => Message::Get { key: key(k) },
            };
            let sent_at = Instant::now();
            client.send(&request)?;
            in_flight.push_back((op, sent_at));
        }
        // Take the oldest request's reply (the server answers in order).
        let Some((op, sent_at)) = in_flight.pop_front() else {
            return Ok(()); // nothing left to send or to wait for
        };
        let reply = client.receive();
        let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.record(micros)?;
        stats.count += 1;
        match (op, reply) {
            (Op::Put(_), Ok(Message::Ok { .. })) | (Op::Get(_), Ok(Message::Value { .. })) => {}
            (Op::Get(_), Ok(Message::NotFound)) => stats.not_found += 1,
            (_, Err(KvError::Server { message, .. })) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(message);
            }
            (_, Err(fatal)) => return Err(fatal.into()),
            (op, Ok(other)) => {
                return Err(format!("unexpected {} in reply to {op:?}", other.name()).into());
            }
        }
        if let Some(done) = progress {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The work of one connection's thread.
struct Worker<'a> {
    id: usize,
    args: &'a Args,
    value: Vec<u8>,
    /// Replies received in the measured phase, over all connections.
    done: &'a AtomicU64,
    /// Set when any connection fails, so the others stop early.
    abort: &'a AtomicBool,
    /// Every worker and the main thread meet here once set-up is finished,
    /// so the measured phase starts at the same moment on every connection.
    ready: &'a Barrier,
}

/// A worker's measured result and the moment it finished.
struct WorkerOutcome {
    stats: Stats,
    finished_at: Instant,
}

impl Worker<'_> {
    fn run(&self, mut client: Target) -> BenchResult<WorkerOutcome> {
        // Whatever set-up does, reach the barrier: a worker that returned
        // early would leave the others waiting there forever.
        let setup = self.set_up(&mut client);
        if setup.is_err() {
            self.abort.store(true, Ordering::Relaxed);
        }
        self.ready.wait();
        setup?;

        let mut stats = Stats::new()?;
        let ops =
            random_ops(self.args.workload, self.args.keys, self.id, 1, self.args.ops_for(self.id));
        let result = drive(
            &mut client,
            ops,
            self.args.pipeline,
            &self.value,
            &mut stats,
            Some(self.done),
            self.abort,
        );
        let finished_at = Instant::now();
        if let Err(e) = result {
            self.abort.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(WorkerOutcome { stats, finished_at })
    }

    /// Preload this connection's share of the key space, then warm up.
    fn set_up(&self, client: &mut Target) -> BenchResult<()> {
        if self.args.preload {
            // Connection `id` writes keys id, id + c, id + 2c, ...
            let stripe = (self.id as u64..self.args.keys).step_by(self.args.connections);
            let mut stats = Stats::new()?;
            drive(
                client,
                stripe.map(Op::Put),
                PRELOAD_PIPELINE,
                &self.value,
                &mut stats,
                None,
                self.abort,
            )
            .map_err(|e| format!("preload: {e}"))?;
            if let Some(message) = stats.first_error {
                // GETs would measure misses, not hits: stop here.
                return Err(format!(
                    "preload: the server refused {} PUTs, the first with: {message}",
                    stats.errors
                )
                .into());
            }
        }
        if self.args.warmup > 0 {
            let ops = random_ops(self.args.workload, self.args.keys, self.id, 0, self.args.warmup);
            let mut stats = Stats::new()?;
            drive(client, ops, self.args.pipeline, &self.value, &mut stats, None, self.abort)
                .map_err(|e| format!("warm-up: {e}"))?;
        }
        Ok(())
    }
}

/// The result as written by `--json`.
#[derive(Serialize)]
struct JsonReport<'a> {
    workload: Workload,
    throughput_ops_per_s: f64,
    elapsed_s: f64,
    count: u64,
    errors: u64,
    not_found: u64,
    unknown: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
    params: JsonParams<'a>,
}

#[derive(Serialize)]
struct JsonParams<'a> {
    host: &'a str,
    port: Option<u16>,
    cluster: &'a [String],
    connections: usize,
    ops: u64,
    value_bytes: usize,
    keys: u64,
    pipeline: usize,
    warmup: u64,
    preload: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = args.check() {
        Args::command().error(clap::error::ErrorKind::ValueValidation, message).exit();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> BenchResult<()> {
    // Connect every client up front: a server that is not there is reported
    // once, before any thread starts. (A cluster client finds the leader
    // with its first request.)
    let tls = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        ca: args.tls_ca.clone(),
    };
    let dialer = Dialer::for_client(args.auth_file.as_deref(), &tls)?;
    let mut clients = Vec::with_capacity(args.connections);
    for id in 0..args.connections {
        let target = match args.port {
            Some(port) => {
                let address = format!("{}:{port}", args.host);
                let client = Client::connect_with(address.as_str(), &dialer)
                    .map_err(|e| format!("connection {id}: {e}"))?;
                client.set_timeout(Some(REPLY_TIMEOUT))?;
                Target::Node(client)
            }
            None => {
                let budget = Duration::from_millis(args.retry_ms);
                let cluster = ClusterClient::new(&args.cluster, budget)?;
                Target::Cluster(cluster.with_dialer(dialer.clone()))
            }
        };
        clients.push(target);
    }
    if args.preload && !args.quiet {
        eprintln!("preloading {} keys of {} bytes ...", args.keys, args.value_bytes);
    }

    let done = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    let ready = Barrier::new(args.connections + 1);
    let value = vec![b'x'; args.value_bytes];

    let (outcomes, started_at) = thread::scope(|scope| -> BenchResult<_> {
        let mut handles = Vec::with_capacity(args.connections);
        for (id, client) in clients.into_iter().enumerate() {
            let worker = Worker {
                id,
                args,
                value: value.clone(),
                done: &done,
                abort: &abort,
                ready: &ready,
            };
            let handle = thread::Builder::new()
                .name(format!("bench-{id}"))
                .spawn_scoped(scope, move || worker.run(client))?;
            handles.push(handle);
        }

        ready.wait();
        let started_at = Instant::now();
        if !args.quiet && !abort.load(Ordering::Relaxed) && (args.preload || args.warmup > 0) {
            eprintln!("set-up done, measuring ...");
        }
        report_progress(args, &handles, &done, started_at);

        let mut outcomes = Vec::with_capacity(handles.len());
        for (id, handle) in handles.into_iter().enumerate() {
            let outcome = handle
                .join()
                .map_err(|_| format!("connection {id}: the thread panicked"))?
                .map_err(|e| format!("connection {id}: {e}"))?;
            outcomes.push(outcome);
        }
        Ok((outcomes, started_at))
    })?;

    let mut total = Stats::new()?;
    let mut finished_at = started_at;
    for outcome in &outcomes {
        total.merge(&outcome.stats)?;
        finished_at = finished_at.max(outcome.finished_at);
    }
    let elapsed = finished_at.duration_since(started_at);
    print_report(args, &total, elapsed);
    if let Some(path) = &args.json {
        write_json(args, &total, elapsed, path)?;
    }
    Ok(())
}

/// Until every worker has finished, print a progress line on stderr about
/// once a second: replies so far and the rate over the last interval.
fn report_progress<T>(
    args: &Args,
    handles: &[thread::ScopedJoinHandle<'_, T>],
    done: &AtomicU64,
    started_at: Instant,
) {
    let tick = Duration::from_millis(50);
    let mut last_at = started_at;
    let mut last_done = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(tick);
        if args.quiet || last_at.elapsed() < PROGRESS_INTERVAL {
            continue;
        }
        let now = Instant::now();
        let now_done = done.load(Ordering::Relaxed);
        let rate = (now_done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "[{:5.1}s] {now_done:>10} ops  {rate:>10.0} ops/s",
            now.duration_since(started_at).as_secs_f64()
        );
        last_at = now;
        last_done = now_done;
    }
}

fn throughput(total: &Stats, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        total.count as f64 / secs
    } else {
        0.0
    }
}

/// The one-line human result on stdout, e.g.
/// `put  c=16 n=200000 d=100: 123456 ops/s  p50 110us  p99 400us  p99.9 900us  max 3.1ms  errors 0`.
fn print_report(args: &Args, total: &Stats, elapsed: Duration) {
    let h = &total.latency_us;
    let pipeline =
        if args.pipeline > 1 { format!(" pipeline={}", args.pipeline) } else { String::new() };
    let misses = if args.workload == Workload::Put {
        String::new()
    } else {
        format!("  not_found {}", total.not_found)
    };
    let unknown = if args.cluster.is_empty() {
        String::new()
    } else {
        format!("  unknown {}", total.unknown)
    };
    println!(
        "{:<4} c={} n={} d={}{pipeline}: {:.0} ops/s  p50 {}  p99 {}  p99.9 {}  max {}  errors {}{misses}{unknown}",
        args.workload,
        args.connections,
        args.ops,
        args.value_bytes,
        throughput(total, elapsed),
        human_micros(h.value_at_quantile(0.50)),
        human_micros(h.value_at_quantile(0.99)),
        human_micros(h.value_at_quantile(0.999)),
        human_micros(h.max()),
        total.errors,
    );
    if let Some(message) = &total.first_error {
        eprintln!("first error reply: {message}");
    }
    if let Some(why) = &total.first_unknown {
        eprintln!("first unknown outcome: {why}");
    }
}

/// `850us`, `3.1ms`, `1.25s`.
fn human_micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn write_json(args: &Args, total: &Stats, elapsed: Duration, path: &PathBuf) -> BenchResult<()> {
    let h = &total.latency_us;
    let report = JsonReport {
        workload: args.workload,
        throughput_ops_per_s: throughput(total, elapsed),
        elapsed_s: elapsed.as_secs_f64(),
        count: total.count,
        errors: total.errors,
        not_found: total.not_found,
        unknown: total.unknown,
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
        params: JsonParams {
            host: &args.host,
            port: args.port,
            cluster: &args.cluster,
            connections: args.connections,
            ops: args.ops,
            value_bytes: args.value_bytes,
            keys: args.keys,
            pipeline: args.pipeline,
            warmup: args.warmup,
            preload: args.preload,
        },
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}
