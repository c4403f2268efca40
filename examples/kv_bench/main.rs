//! kv_bench — a load generator for kvstore that reports throughput and
//! latency percentiles.
//!
//! ## What it measures
//!
//! `-c N` connections together perform `-n` operations (PUT, GET or a 50/50
//! mix) on keys `key:000000000042` drawn uniformly from a key space of `-r`
//! keys, with values of `-d` bytes. It reports:
//!
//! - **throughput**: replies received per second of wall-clock time, from the
//!   moment every connection is ready until the last one finishes;
//! - **latency**: for every request, the time from just before it is written
//!   to the socket to the moment its reply has been read and decoded, in
//!   microseconds. Each thread records into its own
//!   [`hdrhistogram::Histogram`] (3 significant figures, so 1234us is kept as
//!   1234us and 1234567us within 0.1%); the histograms are merged at the end
//!   and p50, p99, p99.9 and max are read from the result.
//!
//! An ERROR reply (e.g. a write sent to a follower) is a reply like any other:
//! it is counted in `errors` and its latency is recorded. A broken connection
//! is fatal: the run stops and the program exits with status 1.
//!
//! ## Two ways to drive the connections
//!
//! A load generator on the same machine as the server competes with it for
//! the cores, and *how* it uses them shapes the tail it reports. So there
//! are two modes, and the summary line names the one that ran:
//!
//! - **Thread per connection** (the default, `mode=thread-per-connection`,
//!   in `per_connection.rs`): each connection has its own OS thread and a
//!   blocking [`kvstore::client::Client`]. This is what an application with
//!   a thread pool does. But at `-c 16` on 2 cores, 16 client threads are
//!   runnable beside the server's: a reply can wait in its socket until its
//!   thread is scheduled again, and that wait lands in the measured tail.
//! - **Event loop** (`--threads T`, `mode=event-loop threads=T`, in
//!   `event_loop.rs`): the connections are dealt out to T threads
//!   (connection i to thread i mod T), and each thread runs one `mio` poll
//!   loop over non-blocking sockets. The client then has T threads however
//!   many connections it opens. `--threads 1` is how `redis-benchmark` runs
//!   by default (one event loop for all its clients), so rows that set
//!   kvstore beside plain `redis-benchmark` use `--threads 1`.
//!
//! Both modes send the same requests (connection i sends the same keys in the
//! same order in either mode), keep the same window of requests in flight
//! per connection and time a request the same way.
//!
//! ## Pipelining
//!
//! With `--pipeline 1` (the default) each connection sends a request and waits
//! for its reply: throughput is then bounded by `connections / round-trip
//! time`. With `--pipeline N` each connection keeps a window of N requests in
//! flight; the server answers in order, so the oldest outstanding request is
//! the one the next reply belongs to. Latency still runs from a request's own
//! write to its own reply, so it includes the time spent queued behind the
//! requests ahead of it — which is what a pipelining client really waits.
//!
//! `redis-benchmark -P N` pipelines in batches instead: it writes N requests,
//! waits for all N replies, then writes the next N, and times every reply of
//! a batch from the batch's first write. kv_bench's window slides: each
//! reply lets one more request go. In event-loop mode the two come close,
//! since one turn of the loop reads every reply that has arrived and refills
//! the window with one write.
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
//! request that finds no leader within the budget stops the run. Following
//! the leader needs the blocking cluster client, so `--cluster` runs thread
//! per connection only (`--threads` is refused).
//!
//! ## How to run it
//!
//! ```text
//! cargo build --release
//! ./target/release/kvstore --port 0 --data-dir "$(mktemp -d)" --fsync never &
//! #   ... note the port in the "listening on 127.0.0.1:PORT" line
//! cargo run --release --example kv_bench -- --port PORT -c 16 -n 200000 -d 100 -t put
//! cargo run --release --example kv_bench -- --port PORT -c 16 --threads 1 -t put
//! cargo run --release --example kv_bench -- --port PORT -t get --preload -r 10000
//! cargo run --release --example kv_bench -- --port PORT -t mixed --pipeline 16 --json /tmp/r.json
//! cargo run --release --example kv_bench -- --cluster 9001,9002,9003 -c 8 -n 100000
//! ```
//!
//! `--preload` first PUTs every key of the key space (pipelined, spread over
//! the connections) so that a `get` run measures hits rather than NOT_FOUND.
//! `--warmup N` runs N unmeasured operations per connection first (warm
//! caches, a grown hash map, a started group commit). Progress goes to stderr
//! about once a second; the one-line result goes to stdout, e.g.
//!
//! ```text
//! put  c=16 n=200000 d=100 mode=event-loop threads=1: 98765 ops/s  p50 150us  p99 400us  p99.9 900us  max 3.1ms  errors 0
//! ```
//!
//! `--json PATH` also writes the result as JSON, with every parameter, the
//! `mode` (`thread-per-connection` or `event-loop`) and `threads`, the OS
//! threads that drove the connections (`-c` in the first mode, `--threads`
//! in the second).
//!
//! Numbers from one machine running both client and server measure the pair:
//! the benchmark's own threads compete with the server's for the same cores.

mod event_loop;
mod per_connection;

use std::error::Error as StdError;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, ValueEnum};
use hdrhistogram::Histogram;
use kvstore::cluster_client::RETRY_BUDGET_MS_DEFAULT;
use kvstore::error::Error as KvError;
use kvstore::limits::VALUE_BYTES_MAX;
use kvstore::logline::count;
use kvstore::protocol::Message;
use serde::Serialize;

/// Any fatal error; `Send + Sync` so it can travel back from a worker thread.
type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// How long a connection waits for any one reply before the run is declared
/// broken (a hung server must not hang the benchmark forever).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the server may take, per connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Connections, each on its own thread (unless --threads).
    #[arg(short = 'c', long = "connections", default_value_t = 1)]
    connections: usize,

    /// Event-loop mode: the connections share T threads, each polling its
    /// share of non-blocking sockets (like redis-benchmark, which uses one).
    #[arg(long, value_name = "T")]
    threads: Option<usize>,

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

    /// No progress line on stderr (there is none when stderr is not a terminal).
    #[arg(short = 'q', long)]
    quiet: bool,

    /// A file holding the secret of a node started with --auth-file: every
    /// connection authenticates first (docs/SECURITY.md). Thread per
    /// connection only.
    #[arg(long, env = "KVSTORE_AUTH_FILE", value_name = "PATH")]
    auth_file: Option<PathBuf>,

    /// Connect over TLS, trusting the CA in this PEM file. Thread per
    /// connection only.
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
        if let Some(threads) = self.threads {
            if self.auth_file.is_some() || self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err("--threads speaks the plain protocol: --auth-file and --tls-* \
                            need the thread-per-connection mode"
                    .into());
            }
            if !self.cluster.is_empty() {
                return Err("--threads needs --port: --cluster follows the leader with a \
                            blocking client per connection, so it runs thread per connection"
                    .into());
            }
            if threads == 0 || threads > self.connections {
                return Err(format!(
                    "--threads must be between 1 and -c ({}): each thread needs a connection",
                    self.connections
                ));
            }
        }
        if self.value_bytes > VALUE_BYTES_MAX as usize {
            return Err(format!("-d must be at most {VALUE_BYTES_MAX} (the server's value limit)"));
        }
        Ok(())
    }

    fn mode(&self) -> Mode {
        match self.threads {
            None => Mode::ThreadPerConnection,
            Some(threads) => Mode::EventLoop { threads },
        }
    }

    /// Measured operations for connection `id`: an even share, the remainder
    /// going one each to the first connections.
    fn ops_for(&self, id: usize) -> u64 {
        let c = self.connections as u64;
        self.ops / c + u64::from((id as u64) < self.ops % c)
    }

    /// What connection `id` sends in `phase`.
    fn ops(&self, phase: Phase, id: usize) -> Box<dyn Iterator<Item = Op>> {
        match phase {
            // Connection `id` writes keys id, id + c, id + 2c, ...
            Phase::Preload => {
                Box::new((id as u64..self.keys).step_by(self.connections).map(Op::Put))
            }
            Phase::WarmUp => Box::new(random_ops(self.workload, self.keys, id, 0, self.warmup)),
            Phase::Measured => {
                Box::new(random_ops(self.workload, self.keys, id, 1, self.ops_for(id)))
            }
        }
    }
}

/// How the connections are driven (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One OS thread and one blocking socket per connection.
    ThreadPerConnection,
    /// `threads` OS threads, each polling its share of non-blocking sockets.
    EventLoop { threads: usize },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ThreadPerConnection => "thread-per-connection",
            Mode::EventLoop { .. } => "event-loop",
        }
    }

    /// The OS threads that drive the `connections`.
    fn threads(self, connections: usize) -> usize {
        match self {
            Mode::ThreadPerConnection => connections,
            Mode::EventLoop { threads } => threads,
        }
    }
}

/// As the summary line shows it: `mode=thread-per-connection` or
/// `mode=event-loop threads=T`.
impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::ThreadPerConnection => write!(f, "mode={}", self.name()),
            Mode::EventLoop { threads } => write!(f, "mode={} threads={threads}", self.name()),
        }
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

impl Op {
    /// The request that performs this operation.
    fn request(self, value: &[u8]) -> Message {
        match self {
            Op::Put(k) => Message::Put { key: key(k), value: value.to_vec() },
            Op::Get(k) => Message::Get { key: key(k) },
        }
    }
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

/// What a run does, in order: the first two are unmeasured set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `--preload`: PUT every key once.
    Preload,
    /// `--warmup N`: N random operations per connection.
    WarmUp,
    /// The `-n` operations that are timed and reported.
    Measured,
}

impl Phase {
    /// Requests in flight per connection during this phase.
    fn window(self, args: &Args) -> usize {
        match self {
            Phase::Preload => PRELOAD_PIPELINE,
            Phase::WarmUp | Phase::Measured => args.pipeline,
        }
    }
}

/// What one connection (or one event-loop thread) saw.
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

    /// Count a reply to a request written at `sent_at`, and record its
    /// latency (to now: the caller has just decoded the reply).
    fn record_latency(&mut self, sent_at: Instant) -> BenchResult<()> {
        let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latency_us.record(micros)?;
        self.count += 1;
        Ok(())
    }

    /// Classify the reply to `op` from one server (`--port`). An ERROR reply
    /// is counted, in either form (the blocking client turns it into
    /// [`KvError::Server`]); a broken connection or a reply of the wrong kind
    /// is fatal.
    fn tally(&mut self, op: Op, reply: Result<Message, KvError>) -> BenchResult<()> {
        match (op, reply) {
            (Op::Put(_), Ok(Message::Ok { .. })) | (Op::Get(_), Ok(Message::Value { .. })) => {}
            (Op::Get(_), Ok(Message::NotFound)) => self.not_found += 1,
            (_, Ok(Message::Error { message, .. })) | (_, Err(KvError::Server { message, .. })) => {
                self.errors += 1;
                self.first_error.get_or_insert(message);
            }
            (_, Err(fatal)) => return Err(fatal.into()),
            (op, Ok(other)) => {
                return Err(format!("unexpected {} in reply to {op:?}", other.name()).into());
            }
        }
        Ok(())
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

/// What every driving thread shares with the main thread.
struct Shared<'a> {
    args: &'a Args,
    /// The value of every PUT: `-d` bytes of `x`.
    value: Vec<u8>,
    /// Replies received in the measured phase, over all connections.
    done: AtomicU64,
    /// Set when any connection fails, so the others stop early.
    abort: AtomicBool,
    /// Every driving thread and the main thread meet here once set-up is
    /// finished, so the measured phase starts at the same moment everywhere.
    ready: Barrier,
}

impl Shared<'_> {
    /// The counter to bump per reply in `phase`: only measured replies show
    /// in the progress line.
    fn progress(&self, phase: Phase) -> Option<&AtomicU64> {
        (phase == Phase::Measured).then_some(&self.done)
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
}

/// One driving thread's connections, in either mode: one blocking
/// connection (`per_connection.rs`) or a poll loop over several
/// (`event_loop.rs`).
trait Driver {
    /// Send every connection's operations for `phase`, `phase.window(..)` in
    /// flight at a time, and record each reply into `stats`. Once
    /// `shared.abort` is set, no new request is sent.
    fn run_phase(&mut self, shared: &Shared, phase: Phase, stats: &mut Stats) -> BenchResult<()>;
}

/// Count one measured reply for the progress line (`None`: not measured).
fn count_progress(progress: Option<&AtomicU64>) {
    if let Some(done) = progress {
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A driving thread's measured result and the moment it finished.
struct WorkerOutcome {
    stats: Stats,
    finished_at: Instant,
}

/// The life of one driving thread, in either mode: set up, meet the others
/// at the barrier, run the measured phase.
fn drive_thread(shared: &Shared, driver: &mut impl Driver) -> BenchResult<WorkerOutcome> {
    // Whatever set-up does, reach the barrier: a thread that returned early
    // would leave the others waiting there forever.
    let setup = set_up(shared, driver);
    if setup.is_err() {
        shared.abort.store(true, Ordering::Relaxed);
    }
    shared.ready.wait();
    setup?;

    let mut stats = Stats::new()?;
    let result = driver.run_phase(shared, Phase::Measured, &mut stats);
    let finished_at = Instant::now();
    if let Err(e) = result {
        shared.abort.store(true, Ordering::Relaxed);
        return Err(e);
    }
    Ok(WorkerOutcome { stats, finished_at })
}

/// Preload the driver's share of the key space, then warm up.
fn set_up(shared: &Shared, driver: &mut impl Driver) -> BenchResult<()> {
    if shared.args.preload {
        let mut stats = Stats::new()?;
        driver
            .run_phase(shared, Phase::Preload, &mut stats)
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
    if shared.args.warmup > 0 {
        let mut stats = Stats::new()?;
        driver.run_phase(shared, Phase::WarmUp, &mut stats).map_err(|e| format!("warm-up: {e}"))?;
    }
    Ok(())
}

/// The result as written by `--json`.
#[derive(Serialize)]
struct JsonReport<'a> {
    workload: Workload,
    /// `thread-per-connection` or `event-loop`.
    mode: &'static str,
    /// OS threads that drove the connections.
    threads: usize,
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
    let (total, elapsed) = measure(args)?;
    print_report(args, &total, elapsed);
    if let Some(path) = &args.json {
        write_json(args, &total, elapsed, path)?;
    }
    Ok(())
}

/// Connect, set up, run the measured phase on every connection; return
/// what they saw together and how long the measured phase took.
fn measure(args: &Args) -> BenchResult<(Stats, Duration)> {
    let mode = args.mode();
    let shared = Shared {
        args,
        value: vec![b'x'; args.value_bytes],
        done: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        ready: Barrier::new(mode.threads(args.connections) + 1),
    };

    let (outcomes, started_at) = thread::scope(|scope| -> BenchResult<_> {
        // Each mode connects every connection before it starts any thread:
        // a server that is not there is reported once, and nobody is left
        // waiting at the barrier.
        let handles = match mode {
            Mode::ThreadPerConnection => per_connection::start(scope, &shared)?,
            Mode::EventLoop { threads } => event_loop::start(scope, &shared, threads)?,
        };
        if args.preload && !args.quiet {
            eprintln!("preloading {} keys of {} bytes ...", args.keys, args.value_bytes);
        }

        shared.ready.wait();
        let started_at = Instant::now();
        if !args.quiet && !shared.aborted() && (args.preload || args.warmup > 0) {
            eprintln!("set-up done, measuring ...");
        }
        report_progress(args, &handles, &shared.done, started_at);

        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            let outcome = handle.join().map_err(|_| "a benchmark thread panicked")??;
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
    Ok((total, finished_at.duration_since(started_at)))
}

/// Until every driving thread has finished, keep one live progress line on
/// stderr when it is a terminal: replies so far of `--ops`, the rate over
/// the last second, and an ETA; the line is rewritten in place and erased
/// at the end. Piped or with `--quiet`, nothing is printed.
fn report_progress<T>(
    args: &Args,
    handles: &[thread::ScopedJoinHandle<'_, T>],
    done: &AtomicU64,
    started_at: Instant,
) {
    let live = !args.quiet && std::io::stderr().is_terminal();
    let tick = Duration::from_millis(50);
    let (mut last_at, mut last_done, mut rate) = (started_at, 0, 0.0);
    let mut shown = false;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(tick);
        if !live || last_at.elapsed() < PROGRESS_INTERVAL / 4 {
            continue;
        }
        let now = Instant::now();
        let now_done = done.load(Ordering::Relaxed);
        if now.duration_since(last_at) >= PROGRESS_INTERVAL {
            rate = (now_done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
            (last_at, last_done) = (now, now_done);
        }
        let percent = 100.0 * now_done as f64 / args.ops.max(1) as f64;
        let eta = match args.ops.checked_sub(now_done) {
            Some(left) if rate > 0.0 => format!("ETA {:.0} s", left as f64 / rate),
            _ => String::new(),
        };
        eprint!(
            "\r\x1b[K[{:5.1}s] {} of {} ops ({percent:.0}%)  {} ops/s  {eta}",
            now.duration_since(started_at).as_secs_f64(),
            count(now_done),
            count(args.ops),
            count(rate as u64),
        );
        shown = true;
    }
    if shown {
        eprint!("\r\x1b[K");
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
/// `put  c=16 n=200000 d=100 mode=event-loop threads=1: 123456 ops/s  p50 110us  p99 400us  p99.9 900us  max 3.1ms  errors 0`.
fn print_report(args: &Args, total: &Stats, elapsed: Duration) {
    let h = &total.latency_us;
    let pipeline =
        if args.pipeline > 1 { format!(" pipeline={}", args.pipeline) } else { String::new() };
    let mode = args.mode();
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
        "{:<4} c={} n={} d={}{pipeline} {mode}: {:.0} ops/s  p50 {}  p99 {}  p99.9 {}  max {}  errors {}{misses}{unknown}",
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
    let mode = args.mode();
    let report = JsonReport {
        workload: args.workload,
        mode: mode.name(),
        threads: mode.threads(args.connections),
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
