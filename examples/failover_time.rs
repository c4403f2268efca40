//! failover_time — how long a dead leader costs the writers, with
//! `--failover auto` and the default timings.
//!
//! It starts three nodes with the lessons' commands (leader on `--port`,
//! followers on the next two ports, fresh data dirs under `--dir`), keeps
//! one writer putting new keys through a [`ClusterClient`] (which follows
//! the leader), and then, `--runs` times:
//!
//! 1. SIGKILLs whichever node leads, and notes the time;
//! 2. waits until the writer has a write acknowledged by another node: the
//!    **failover time** is the time between the two;
//! 3. restarts the killed node without flags (it takes its stored role,
//!    finds the newer term and follows), and waits until all three nodes
//!    are at the same LSN before the next round.
//!
//! A write in flight when the leader dies has an unknown outcome; the
//! writer counts it and goes on with the next key. At the end it prints
//! every failover time, their median and maximum.
//!
//! ```text
//! make build examples
//! ./target/release/examples/failover_time --bin ./build/kvstore --runs 20
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::error::Error;
use parking_lot::Mutex;

#[derive(Parser, Debug)]
struct Args {
    /// The kvstore server binary.
    #[arg(long, default_value = "./build/kvstore")]
    bin: PathBuf,
    /// First of three consecutive ports.
    #[arg(long, default_value_t = 9601)]
    port: u16,
    /// Where the data dirs go (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Extra flags for every node (e.g. "--election-timeout-ms=500").
    #[arg(long, allow_hyphen_values = true)]
    extra: Vec<String>,
}

/// Give up on anything that takes longer than this.
const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    ports: [u16; 3],
    extra: Vec<String>,
    children: [Option<Child>; 3],
}

impl Cluster {
    fn spawn(&mut self, i: usize, role_args: &[String]) -> Result<(), String> {
        let port = self.ports[i];
        let log = std::fs::File::create(self.dir.join(format!("node{}.log", i + 1)))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{}", i + 1)))
            .args(role_args)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.children[i] = Some(child);
        wait_until(&format!("port {port} answers"), || status(port).map(|_| ()))
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

fn status(port: u16) -> Option<kvstore::status::StatusReport> {
    Client::connect(format!("127.0.0.1:{port}").as_str()).ok()?.status().ok()
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T, String> {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > until {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The writer's news: the last write acknowledged, and by whom.
#[derive(Default)]
struct Acked {
    at: Option<Instant>,
    by: String,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("failover_time: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let temp;
    let dir: &Path = match &args.dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().map_err(|e| e.to_string())?;
            temp.path()
        }
    };
    let p = args.port;
    let mut cluster = Cluster {
        bin: args.bin.clone(),
        dir: dir.to_path_buf(),
        ports: [p, p + 1, p + 2],
        extra: args.extra.clone(),
        children: [None, None, None],
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    cluster.spawn(0, &s(&["--role=leader", &format!("--peers={},{}", p + 1, p + 2)]))?;
    cluster.spawn(1, &s(&["--role=follower", &format!("--leader={p}")]))?;
    cluster.spawn(2, &s(&["--role=follower", &format!("--leader={p}")]))?;

    let members: Vec<String> = cluster.ports.iter().map(|p| p.to_string()).collect();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (stop, unknown, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = {
        let (acked, stop, unknown, written) =
            (Arc::clone(&acked), Arc::clone(&stop), Arc::clone(&unknown), Arc::clone(&written));
        let mut client =
            ClusterClient::new(&members, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                match client.put(format!("k{i}").as_bytes(), b"v") {
                    Ok(_) => {
                        written.fetch_add(1, Ordering::Relaxed);
                        let mut a = acked.lock();
                        a.at = Some(Instant::now());
                        a.by = client.leader().unwrap_or_default().to_string();
                    }
                    Err(Error::Indeterminate(_)) => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("failover_time: write failed: {e}"),
                }
            }
        })
    };

    let mut times = Vec::new();
    for run in 1..=args.runs {
        // Steady state: every node at the same LSN, the writer going.
        wait_until("all three nodes at one LSN", || {
            let lsns: Vec<u64> = cluster
                .ports
                .iter()
                .map(|&p| status(p).map(|s| s.last_lsn))
                .collect::<Option<_>>()?;
            (lsns.iter().all(|&l| l == lsns[0]) || lsns.iter().max()? - lsns.iter().min()? < 50)
                .then_some(())
        })?;
        std::thread::sleep(Duration::from_millis(300));
        let leader = wait_until("a leader", || {
            (0..3).find(|&i| status(cluster.ports[i]).is_some_and(|s| s.role == "leader"))
        })?;
        let killed = format!("127.0.0.1:{}", cluster.ports[leader]);
        cluster.kill(leader);
        let t0 = Instant::now();
        let t1 = wait_until("a write acknowledged by a new leader", || {
            let a = acked.lock();
            a.at.filter(|&at| at > t0 && a.by != killed)
        })?;
        let ms = (t1 - t0).as_secs_f64() * 1000.0;
        println!("run {run:>2}: killed {killed}; first write acknowledged by the new leader after {ms:.0} ms");
        times.push(ms);
        cluster.spawn(leader, &[])?;
    }
    stop.store(true, Ordering::Release);
    let _ = writer.join();
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "failover time over {} runs: median {median:.0} ms, min {:.0} ms, max {max:.0} ms \
         ({} writes acknowledged, {} with an unknown outcome)",
        times.len(),
        times[0],
        written.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed)
    );
    Ok(())
}
