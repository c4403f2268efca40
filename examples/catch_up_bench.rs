//! catch_up_bench: how fast a new follower catches up, in records per
//! second, from logs of 1,000, 1,000,000 and 10,000,000 records (lesson 5).
//!
//! Catch-up is lesson 5's handshake followed by a stream: the follower says
//! where its log ends, the leader positions in its WAL with
//! `records_after` (one slot of the memory-mapped index) and sends every
//! later record in AppendEntries of up to 4,096 records; the follower
//! appends each batch to its WAL, fsyncs it and applies it to its map.
//! Every one of those steps costs per record or per byte sent, and none
//! costs per record already in the log, so a full catch-up should run at
//! about the same records/s whatever the log's size: the fastest and the
//! slowest size should be within 1.3× of each other.
//!
//! (Timing `records_after` alone at random LSNs, as
//! `examples/records_after_bench.rs` does, measures the machine instead:
//! a random probe into a 1.5 GB log misses the CPU caches and the TLB
//! where one into a 150 KB log hits them.)
//!
//! For each size it:
//!
//! 1. writes a leader's data dir directly through the WAL API
//!    (`Wal::open`, then `Wal::append` in batches of 10,000 records;
//!    16-byte keys, 100-byte values, all in term 1), once for all runs;
//! 2. starts the real `kvstore` binary as the leader on it
//!    (`--role=leader --peers=P+1 --fsync=never`), and a first follower,
//!    not timed, whose vote lets the leader take office (see below);
//! 3. per run, starts a follower on a new, empty data dir
//!    (`--role=follower --leader=P`, fsync always, the default), waits
//!    until its STATUS shows the leader's last LSN (polled every 10 ms),
//!    and takes:
//!    - the **transfer** time, from the follower's own log line
//!      `[catch-up] received N records, caught up to LSN X in T ms`,
//!      counted from the leader's LEADER_HELLO to the last record applied
//!      (whole milliseconds: a 1,000-record catch-up is 1 or 2 of them);
//!    - the **wall** time, from the follower's spawn until its STATUS
//!      shows the leader's last LSN (start-up, dial, handshake, transfer);
//!    - the CPU time (user + system) of the follower and of the leader
//!      over the catch-up, which, unlike the times, hardly moves when
//!      other programs compete for the cores (shown for catch-ups that
//!      take the follower at least 1 s of CPU: it is counted in 10 ms
//!      ticks);
//!    - the longest **pause**: the longest time the follower's last LSN,
//!      as STATUS shows it, stood still during the catch-up. A follower
//!      that stops applying for longer than the replication timeout
//!      (5 s) is dropped by its leader and must reconnect;
//!
//!    then stops the follower and removes its data dir;
//! 4. stops the leader and removes its data dir before the next size, so
//!    at most one size's logs are on disk (10M records: 1.5 GB of WAL,
//!    twice).
//!
//! A run's records/s is the log's records over the transfer time. If the
//! link broke during the catch-up (the follower connected more than once),
//! the log line covers only the last connection, so that run counts with
//! its wall time instead, and the output says how many runs did.
//!
//! Why a voter, and what the leader does with term 1: a node started as
//! leader with a peer and a log that is not empty does not take office on
//! its own (it could be taking a term a majority gave someone else while
//! it was down); it asks its peer for a vote. The voter gives it; the
//! leader takes office in term 2 and begins the term with a NOOP at LSN
//! N+1, so each follower catches up on N+1 records.
//!
//! ```text
//! cargo build --release --bins --examples && mkdir -p build && cp target/release/kvstore build/
//! ./target/release/examples/catch_up_bench --records 1000,1000000,10000000 --runs 3
//! ```
//!
//! The processes and the data dirs go away at the end, on an error, and on
//! SIGINT or SIGTERM (unless `--keep`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kvstore::client::Client;
use kvstore::status::StatusReport;
use kvstore::wal::{Op, Record, Wal, WAL_DIR_NAME};
use kvstore::Lsn;

#[derive(Parser, Debug)]
struct Args {
    /// The kvstore binary.
    #[arg(long, default_value = "./build/kvstore")]
    bin: PathBuf,
    /// Log sizes, in records, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000,10000000")]
    records: Vec<u64>,
    /// Catch-ups timed per size (the figures are their medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The leader's port; the followers take the next one.
    #[arg(long, default_value_t = 9850)]
    port: u16,
    /// Where the temporary data dirs go (default: the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep each size's directory (data dirs and the nodes' logs) instead
    /// of removing it, and print where it is. A 10M-record size keeps
    /// 1.5 GB per follower plus the leader's.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object per size, then one with the ratio.
    #[arg(long)]
    json: bool,
}

/// Records per `Wal::append` while the leader's log is built: one write
/// of about 1.5 MB, as in `records_after_bench`.
const BUILD_BATCH_RECORDS: u64 = 10_000;

/// Bytes of every value, and of every key (`key:` and 12 digits): the
/// late-joiner scenario's sizes (`kv_bench -d 100`).
const VALUE_BYTES: usize = 100;
const KEY_BYTES: usize = 16;

/// How often STATUS is asked for while waiting: adds at most 1% to the
/// wall time of a 1M-record catch-up (about 1 s), and answering costs the
/// follower nothing measurable.
const POLL_INTERVAL_MS: u64 = 10;

/// How long a node may take to start answering, or a catch-up to finish:
/// a floor, plus an allowance per million records (a leader replays its
/// log at start-up at about 1M records/s on the reference machine, and a
/// catch-up runs at 0.3-1.2M records/s; 30 s per million covers a busy
/// machine).
const DEADLINE_FLOOR_S: u64 = 60;
const DEADLINE_PER_MILLION_S: u64 = 30;

/// CPU time below which a run's CPU per record is not shown: 100 clock
/// ticks, so the tick's rounding is within 1%.
const CPU_MEASURABLE_MS: f64 = 1_000.0;

/// The follower's log lines this reads (`src/replication/follower.rs`):
/// one per connection to the leader, and one when caught up.
const CONNECTED_LINE: &str = "[catch-up] connected to leader ";
const CAUGHT_UP_LINE: &str = "[catch-up] received ";

fn main() {
    let args = Args::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("catch_up_bench: cannot handle signal {signal}: {e}");
            std::process::exit(2);
        }
    }
    if let Err(e) = run(&args, &interrupted) {
        eprintln!("catch_up_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, interrupted: &AtomicBool) -> Result<(), String> {
    if args.runs == 0 || args.records.is_empty() || args.records.contains(&0) {
        return Err("need --runs of at least 1 and --records sizes of at least 1".into());
    }
    let bench = Bench { args, interrupted };
    let mut sizes = Vec::new();
    for &count in &args.records {
        let size = bench.measure_size(count)?;
        size.print(args.json);
        sizes.push(size);
    }
    let rates = sizes.iter().map(Size::records_per_s);
    let fastest = rates.clone().fold(f64::MIN, f64::max);
    let slowest = rates.fold(f64::MAX, f64::min);
    let ratio = fastest / slowest;
    if args.json {
        println!("{{\"max_min_ratio\":{ratio:.2}}}");
    } else {
        println!("fastest / slowest size, by median records/s: {ratio:.2}x (target 1.3x at most)");
    }
    Ok(())
}

// ---- Figures ----------------------------------------------------------------

/// One catch-up's figures.
struct Run {
    /// Records the follower received on its last connection, from the log
    /// line (the leader's whole log, NOOP included, unless the link broke).
    received: u64,
    /// The leader's last LSN: the records the follower caught up on.
    leader_last_lsn: Lsn,
    /// From the follower's log line (its last connection only).
    transfer_ms: u64,
    /// From the follower's spawn to its STATUS showing the leader's last LSN.
    wall_ms: f64,
    /// Connections the follower made to the leader (1 unless the link broke).
    connections: usize,
    /// The longest time the follower's last LSN did not move.
    pause_ms: f64,
    /// CPU time the follower used from its spawn to caught up, and the
    /// leader in the same span.
    follower_cpu_ms: f64,
    leader_cpu_ms: f64,
}

impl Run {
    /// The follower connected more than once, so its log line covers only
    /// part of the catch-up.
    fn link_broke(&self) -> bool {
        self.connections > 1 || self.received != self.leader_last_lsn
    }

    /// Records/s of the transfer, or of the wall time if the link broke.
    fn records_per_s(&self) -> f64 {
        let ms = if self.link_broke() { self.wall_ms } else { self.transfer_ms.max(1) as f64 };
        self.leader_last_lsn as f64 / (ms / 1e3)
    }
}

/// One size's runs.
struct Size {
    records: u64,
    wal_bytes: u64,
    build_s: f64,
    leader_start_s: f64,
    runs: Vec<Run>,
}

/// The median (of an even count, the mean of the middle two).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Size {
    fn median(&self, per_run: impl Fn(&Run) -> f64) -> f64 {
        median(self.runs.iter().map(per_run))
    }

    /// The headline figure: the median of the runs' records/s.
    fn records_per_s(&self) -> f64 {
        self.median(Run::records_per_s)
    }

    fn print(&self, json: bool) {
        let mb = self.wal_bytes as f64 / 1_048_576.0;
        let records_per_mb = self.records as f64 / mb;
        let mb_per_s = self.records_per_s() / records_per_mb;
        let wall_records_per_s = self.median(|r| r.leader_last_lsn as f64 / (r.wall_ms / 1e3));
        // CPU time comes in clock ticks of 10 ms: too coarse for a
        // catch-up that takes a few ms, so shown only for long ones.
        let cpu_measurable = self.runs.iter().all(|r| r.follower_cpu_ms >= CPU_MEASURABLE_MS);
        let cpu_us = |of: fn(&Run) -> f64| {
            let us = self.median(|r| of(r) * 1e3 / r.leader_last_lsn as f64);
            if cpu_measurable {
                format!("{us:.2}")
            } else {
                "null".to_string()
            }
        };
        let follower_cpu_us = cpu_us(|r| r.follower_cpu_ms);
        let leader_cpu_us = cpu_us(|r| r.leader_cpu_ms);
        let broken = self.runs.iter().filter(|r| r.link_broke()).count();
        let pause_ms = self.runs.iter().map(|r| r.pause_ms).fold(0.0, f64::max);
        let list = |f: &dyn Fn(&Run) -> f64| {
            self.runs.iter().map(|r| format!("{:.0}", f(r))).collect::<Vec<_>>().join(",")
        };
        let rates = list(&Run::records_per_s);
        let transfer_ms = list(&|r| r.transfer_ms as f64);
        let wall_ms = list(&|r| r.wall_ms);
        if json {
            println!(
                "{{\"records\":{},\"wal_bytes\":{},\"build_s\":{:.1},\"leader_start_s\":{:.1},\
                 \"records_per_s\":{:.0},\"records_per_s_runs\":[{rates}],\
                 \"mb_per_s\":{mb_per_s:.1},\"wall_records_per_s\":{wall_records_per_s:.0},\
                 \"follower_cpu_us_per_record\":{follower_cpu_us},\
                 \"leader_cpu_us_per_record\":{leader_cpu_us},\"broken_links\":{broken},\
                 \"longest_pause_ms\":{pause_ms:.0},\
                 \"transfer_ms\":[{transfer_ms}],\"wall_ms\":[{wall_ms}]}}",
                self.records,
                self.wal_bytes,
                self.build_s,
                self.leader_start_s,
                self.records_per_s(),
            );
            return;
        }
        println!(
            "{:>10} records ({mb:.0} MB of WAL, built in {:.1} s, leader up in {:.1} s), median \
             of {} catch-ups: {:.0} records/s, {mb_per_s:.1} MB/s; from the follower's spawn \
             {wall_records_per_s:.0} records/s; CPU per record (us): follower \
             {follower_cpu_us}, leader {leader_cpu_us}; longest pause {pause_ms:.0} ms; transfer \
             ms [{transfer_ms}], wall ms [{wall_ms}]{}",
            self.records,
            self.build_s,
            self.leader_start_s,
            self.runs.len(),
            self.records_per_s(),
            match broken {
                0 => String::new(),
                n => format!("; {n} run(s) lost the link and count with their wall time"),
            }
        );
    }
}

// ---- The measurement --------------------------------------------------------

struct Bench<'a> {
    args: &'a Args,
    interrupted: &'a AtomicBool,
}

impl Bench<'_> {
    /// Steps 1 to 4 of the module doc for a log of `count` records.
    fn measure_size(&self, count: u64) -> Result<Size, String> {
        let dir = match &self.args.dir {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let leader_dir = dir.path().join("leader");
        let built = Instant::now();
        self.build_log(&leader_dir, count)?;
        let build_s = built.elapsed().as_secs_f64();
        let wal_bytes = wal_bytes_of(&leader_dir)?;

        let follower_port = self.args.port + 1;
        let deadline = Duration::from_secs(
            DEADLINE_FLOOR_S + DEADLINE_PER_MILLION_S * count.div_ceil(1_000_000),
        );
        let started = Instant::now();
        let mut leader = Node::spawn(
            &self.args.bin,
            self.args.port,
            &leader_dir,
            &dir.path().join("leader.log"),
            &["--role=leader".into(), format!("--peers={follower_port}"), "--fsync=never".into()],
        )?;
        self.wait("the leader to answer", deadline, &mut leader, || status(self.args.port))?;
        let leader_start_s = started.elapsed().as_secs_f64();
        let leader_last_lsn = self.elect(&mut leader, dir.path(), count, deadline)?;

        let mut runs = Vec::new();
        for number in 1..=self.args.runs {
            let name = format!("follower-{number}");
            let follower_dir = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            runs.push(self.catch_up(
                &mut leader,
                &follower_dir,
                &log,
                leader_last_lsn,
                deadline,
            )?);
            self.remove(&follower_dir)?;
        }
        drop(leader);
        if self.args.keep {
            eprintln!("catch_up_bench: kept {}", dir.keep().display());
        }
        Ok(Size { records: count, wal_bytes, build_s, leader_start_s, runs })
    }

    /// Step 1: the leader's log, written as the leader's own group commit
    /// would have written it.
    fn build_log(&self, dir: &Path, count: u64) -> Result<(), String> {
        let fail = |e: kvstore::error::Error| format!("building the log in {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (wal, _) = Wal::open(dir, |_| {}).map_err(fail)?;
        let value = vec![b'v'; VALUE_BYTES];
        let mut lsn = 1;
        while lsn <= count {
            if self.interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let batch: Vec<Record> = (lsn..=count.min(lsn + BUILD_BATCH_RECORDS - 1))
                .map(|l| Record {
                    lsn: l,
                    term: 1,
                    op: Op::Put { key: format!("key:{l:012}").into(), value: value.clone() },
                })
                .collect();
            assert_eq!(batch[0].op.key().len(), KEY_BYTES, "keys have the late joiner's size");
            wal.append(&batch).map_err(fail)?;
            lsn += batch.len() as u64;
        }
        wal.sync().map_err(fail)
    }

    /// Step 2's voter: a follower, not timed, whose vote lets the leader
    /// take office. It is stopped as soon as the leader has written the
    /// NOOP that begins its term. Returns the leader's last LSN.
    fn elect(
        &self,
        leader: &mut Node,
        dir: &Path,
        count: u64,
        deadline: Duration,
    ) -> Result<Lsn, String> {
        let port = self.args.port;
        let mut voter = Node::spawn(
            &self.args.bin,
            port + 1,
            &dir.join("voter"),
            &dir.join("voter.log"),
            &["--role=follower".into(), format!("--leader={port}")],
        )?;
        let last_lsn = self.wait("the leader to take office", deadline, &mut voter, || {
            status(port).filter(|s| s.role == "leader" && s.last_lsn > count).map(|s| s.last_lsn)
        })?;
        drop(voter);
        leader.check_running()?;
        self.remove(&dir.join("voter"))?;
        Ok(last_lsn)
    }

    /// Step 3: one follower, from spawn to caught up.
    fn catch_up(
        &self,
        leader: &mut Node,
        dir: &Path,
        log: &Path,
        leader_last_lsn: Lsn,
        deadline: Duration,
    ) -> Result<Run, String> {
        let port = self.args.port;
        let leader_cpu_before = leader.cpu_ms()?;
        let spawned = Instant::now();
        let mut follower = Node::spawn(
            &self.args.bin,
            port + 1,
            dir,
            log,
            &["--role=follower".into(), format!("--leader={port}")],
        )?;
        // The last LSN seen, since when, and the longest it stood still.
        let (mut seen, mut seen_at, mut pause) = (0, Instant::now(), Duration::ZERO);
        let wall = self.wait("the follower to catch up", deadline, &mut follower, || {
            let last_lsn = status(port + 1)?.last_lsn;
            if last_lsn != seen {
                if seen > 0 {
                    pause = pause.max(seen_at.elapsed());
                }
                (seen, seen_at) = (last_lsn, Instant::now());
            }
            (last_lsn >= leader_last_lsn).then(|| spawned.elapsed())
        })?;
        let follower_cpu_ms = follower.cpu_ms()?;
        let leader_cpu_ms = leader.cpu_ms()? - leader_cpu_before;
        let (received, transfer_ms) =
            self.wait("the follower's caught-up log line", deadline, &mut follower, || {
                caught_up_line(log)
            })?;
        leader.check_running()?;
        let connections = std::fs::read_to_string(log)
            .map(|text| text.lines().filter(|l| l.contains(CONNECTED_LINE)).count())
            .unwrap_or(1);
        Ok(Run {
            received,
            leader_last_lsn,
            transfer_ms,
            wall_ms: ms(wall),
            connections,
            pause_ms: ms(pause),
            follower_cpu_ms,
            leader_cpu_ms,
        })
    }

    /// Poll `check` every [`POLL_INTERVAL_MS`] until it gives a value,
    /// `node` exits, SIGINT or SIGTERM arrives, or `deadline` passes.
    fn wait<T>(
        &self,
        what: &str,
        deadline: Duration,
        node: &mut Node,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, String> {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return Ok(value);
            }
            if self.interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            node.check_running()?;
            if started.elapsed() > deadline {
                return Err(format!(
                    "timed out after {deadline:?} waiting for {what}; {}",
                    node.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }

    /// Remove a follower's data dir as soon as it is done with (unless
    /// `--keep`): a 10M-record one holds 1.5 GB.
    fn remove(&self, dir: &Path) -> Result<(), String> {
        if self.args.keep {
            return Ok(());
        }
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn status(port: u16) -> Option<StatusReport> {
    let mut client = Client::connect(format!("127.0.0.1:{port}").as_str()).ok()?;
    client.set_timeout(Some(Duration::from_secs(5))).ok()?;
    client.status().ok()
}

/// `(received, ms)` from the first `[catch-up] received N records, caught
/// up to LSN X in T ms` line of a follower's log.
fn caught_up_line(log: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(CAUGHT_UP_LINE))?;
    let rest = &line[line.find(CAUGHT_UP_LINE)? + CAUGHT_UP_LINE.len()..];
    let received = rest.split(' ').next()?.parse().ok()?;
    let ms = rest.rsplit(" in ").next()?.strip_suffix(" ms")?.parse().ok()?;
    Some((received, ms))
}

// ---- The nodes' processes ---------------------------------------------------

/// A `kvstore` process, killed when dropped.
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    /// Start `bin` on `port` and data dir `dir`, its log (stderr) in `log`.
    fn spawn(
        bin: &Path,
        port: u16,
        dir: &Path,
        log: &Path,
        args: &[String],
    ) -> Result<Node, String> {
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Node { child, port, log: log.to_path_buf() })
    }

    /// An error, with the end of its log, if the process has exited.
    fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the node on port {} exited ({status}); {}",
                self.port,
                self.log_tail()
            )),
            Err(e) => Err(format!("waiting for the node on port {}: {e}", self.port)),
        }
    }

    /// CPU time (user + system, ms) the process has used so far, from
    /// fields 14 and 15 of `/proc/PID/stat` (counted in clock ticks).
    fn cpu_ms(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // Field 2, the command name, is in parentheses and may hold spaces:
        // split after its closing one, where field 3 begins.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<u64>().ok());
        let (Some(user), Some(system)) = (ticks(14), ticks(15)) else {
            return Err(format!("{path}: no CPU times in {stat:?}"));
        };
        // SAFETY: sysconf only reads a configuration value.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((user + system) as f64 * 1e3 / ticks_per_s)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        format!("the end of {}:\n  {tail}", self.log.display())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes of the WAL segments of a data dir.
fn wal_bytes_of(data_dir: &Path) -> Result<u64, String> {
    let dir = data_dir.join(WAL_DIR_NAME);
    let listing = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut bytes = 0;
    for entry in listing {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.path().extension().is_some_and(|e| e == "seg") {
            bytes += entry.metadata().map_err(|e| format!("{}: {e}", dir.display()))?.len();
        }
    }
    Ok(bytes)
}
