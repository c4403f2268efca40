//! demo_faults — `make demo-faults SEED=N`: a three-node cluster through a
//! short seeded schedule of faults, narrated as it happens.
//!
//! ## What it does
//!
//! 1. Starts three `kvstore` nodes with `--failover auto` and write concern
//!    `majority` (node1 leads term 1), each behind a fault proxy
//!    (`tests/common/proxy.rs`, the one the tests use): a node listens on
//!    its own port, where clients reach it directly, and advertises its
//!    proxy's port, where the other members reach it. So every member link
//!    *into* a node passes through that node's proxy. A follower dials its
//!    leader, so every follower's stream passes through the leader's proxy.
//! 2. Starts a writer: one `ClusterClient` putting `k00001 = v1`,
//!    `k00002 = v2`, ... about 50 a second, recording each acknowledged
//!    put, each whose outcome is unknown, and each refused.
//! 3. Prints the schedule in full, then runs it, one fault at a time:
//!    - **kill** a node (SIGKILL) and restart it on its data dir after a
//!      while (it takes the role it stored);
//!    - **pause** a node (SIGSTOP, then SIGCONT): a process that freezes
//!      and wakes up believing nothing happened;
//!    - **cut** the links into the leader: its proxy forwards nothing and
//!      closes nothing (a partition: the followers hear silence);
//!    - **reset** the links into the leader: its proxy cuts every
//!      connection in the middle of a message (the followers reconnect);
//!    - **slow** the links into the leader: its proxy holds every chunk
//!      for a while before forwarding it.
//!
//!    For each step it says who leads and where each node's log ends,
//!    strikes, watches the nodes' `status` until the fault is healed, then
//!    waits until every node holds the leader's last LSN again, and shows
//!    what the nodes logged (elections, what a follower asked for when it
//!    reconnected, what it was sent, a log repaired) and what the writer
//!    saw.
//! 4. Stops the writer, waits until all three nodes report the same last
//!    LSN and digest, reads every acknowledged key back from every node
//!    (consistency `any`: each node answers from its own map), checks that
//!    no refused write is anywhere, and prints a verdict. It exits 1 if a
//!    check fails, and then keeps the nodes' logs.
//!
//! ## Replaying
//!
//! The schedule is a pure function of the seed ([`schedule`]): `SEED=7`
//! always prints and runs the same steps. What the cluster does in reply
//! is not fixed by it: each node draws its own election timeout, so which
//! follower wins an election, and so which node "the leader" is at a later
//! step, can differ from run to run. The checks at the end hold either way.
//!
//! ## What it leaves out
//!
//! - **Links between two given nodes.** There is one proxy per node, for
//!   every link into it, so network faults strike the links into the
//!   leader: the proxy of a follower carries only what other members send
//!   it unasked (votes, announcements), and cutting it would show nothing.
//! - **A writer kept out of the faults.** `ClusterClient` follows a
//!   follower's answer to the leader's *advertised* address, its proxy, so
//!   after the first failover the writer usually goes through the leader's
//!   proxy and a network fault there strikes its puts too. Each step says
//!   where the writer's puts go.
//! - **Reads under faults, and their consistency.** One writer of unique
//!   keys, read back at the end; `tests/jepsen.rs` checks concurrent puts
//!   and linearizable reads against a history.
//!
//! ```text
//! make demo-faults SEED=7            # the same steps every time
//! make demo-faults                   # a new seed, printed first
//! ./target/release/examples/demo_faults --seed 7 --steps 3 --port 9101
//! ```

#[path = "../tests/common/proxy.rs"]
mod proxy;
#[path = "../tests/common/rng.rs"]
#[allow(dead_code)] // `Rng::fork` serves the jepsen test's clients, not this demo
mod rng;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::error::Error;
use kvstore::protocol::Consistency;
use kvstore::status::StatusReport;
use kvstore::Lsn;
use parking_lot::Mutex;
use proxy::{Fault, Proxy};
use rng::Rng;

/// Election timeout T: short, so that a demo of a minute sees several
/// elections; the heartbeat a tenth of it, as the defaults are.
const ELECTION_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 50;
/// A `majority` put not confirmed within this answers ERROR 5: its outcome
/// is unknown to the writer.
const WRITE_TIMEOUT_MS: u64 = 1_000;
/// How long the writer looks for a leader before a put is refused.
const WRITER_BUDGET: Duration = Duration::from_secs(2);
/// Pause between two puts: about 50 a second, enough for a node to fall
/// visibly behind, few enough to read every one back in a second or two.
const WRITE_PAUSE: Duration = Duration::from_millis(20);
/// How long a status request may take: a paused node must not hold up
/// the narration.
const STATUS_TIMEOUT: Duration = Duration::from_millis(300);
/// How often the nodes are looked at while a fault holds.
const POLL: Duration = Duration::from_millis(100);
/// Writes acknowledged before the first fault (half a second of them).
const WARM_UP_WRITES: usize = 25;
/// How long a node may take to start answering.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long the cluster may take, after a fault is healed, until every
/// node holds the leader's last LSN again.
const HEAL_DEADLINE: Duration = Duration::from_secs(20);
/// How long the nodes may take to agree once the writer has stopped.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);
/// Log lines shown per step, at most (the first and the last ones).
const LOG_LINES_MAX: usize = 20;
const NODES: usize = 3;
/// Steps when `--steps` is not given: every kind of fault, and a few more.
const STEPS_DEFAULT: usize = 8;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(about = "A 3-node kvstore cluster through a seeded schedule of faults, narrated")]
struct Args {
    /// The seed of the schedule (default: a new one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How many faults.
    #[arg(long, default_value_t = STEPS_DEFAULT)]
    steps: usize,
    /// node1..node3 listen on PORT..PORT+2, their proxies on PORT+3..PORT+5
    /// (0: any free ports).
    #[arg(long, default_value_t = 9001)]
    port: u16,
    /// The kvstore binary.
    #[arg(long, default_value = "./build/kvstore")]
    bin: PathBuf,
}

/// What [`run`] needs; `main` fills it from the command line, a test by hand.
pub struct Options {
    pub seed: u64,
    pub steps: usize,
    pub port: u16,
    pub bin: PathBuf,
    /// Bold headings and a coloured verdict (on a terminal only).
    pub colour: bool,
    /// Set on Ctrl-C: every wait ends, the nodes are stopped.
    pub interrupted: Arc<AtomicBool>,
}

/// How the run ended.
pub struct Outcome {
    /// Every check held.
    pub passed: bool,
    pub acknowledged: usize,
    /// The nodes' common digest and last LSN at the end.
    pub digest: String,
    pub last_lsn: Lsn,
    /// Reconnects told as "asked for the records after LSN L; it got M",
    /// read from the nodes' `[catch-up]` lines (none would mean the demo
    /// no longer understands them).
    pub catch_ups_told: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 % 1_000_000 // short enough to type back
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("demo: cannot catch signal {signal}: {e}");
        }
    }
    let options = Options {
        seed,
        steps: args.steps,
        port: args.port,
        bin: args.bin,
        colour: std::io::stdout().is_terminal(),
        interrupted,
    };
    match run(&options) {
        Ok(outcome) if outcome.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            // 130: what a shell reports for a command ended by Ctrl-C.
            match options.interrupted.load(Ordering::Relaxed) {
                true => ExitCode::from(130),
                false => ExitCode::FAILURE,
            }
        }
    }
}

// ---- the schedule -------------------------------------------------------------

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL; restart on the same data dir after `hold`.
    Kill,
    /// SIGSTOP for `hold`, then SIGCONT.
    Pause,
    /// The proxy forwards nothing and closes nothing, for `hold`.
    Cut,
    /// The proxy cuts every connection mid-message, for `hold`.
    Reset,
    /// The proxy holds every chunk `delay_ms` before forwarding it.
    Slow { delay_ms: u64 },
}

/// Whom a step strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    /// Whichever node leads when the step starts.
    Leader,
}

/// One fault, how long it holds, and the quiet spell after the cluster
/// has healed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub kind: FaultKind,
    pub target: Target,
    pub hold: Duration,
    pub rest: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.target {
            Target::Node(i) => name(i),
            Target::Leader => "the leader".to_string(),
        };
        let hold = secs(self.hold);
        match self.kind {
            FaultKind::Kill => write!(f, "kill {who} (SIGKILL), restart it {hold} later"),
            FaultKind::Pause => write!(f, "pause {who} (SIGSTOP) for {hold}"),
            FaultKind::Cut => write!(f, "cut the links into {who} for {hold}"),
            FaultKind::Reset => write!(f, "reset the links into {who} for {hold}"),
            FaultKind::Slow { delay_ms } => {
                write!(f, "slow the links into {who} by {delay_ms} ms for {hold}")
            }
        }
    }
}

/// How many kinds of fault [`draw`] knows.
const KINDS: u64 = 5;

/// The schedule of `seed`: a pure function of it. It goes through the five
/// kinds of fault in rounds, each round in an order the seed shuffles, so
/// that steps 1–5, 6–10, ... each show every kind once; how long each
/// holds, and whom a kill or pause strikes, are drawn too.
pub fn schedule(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut round: Vec<u64> = Vec::new();
    let mut schedule = Vec::with_capacity(steps);
    for _ in 0..steps {
        if round.is_empty() {
            round = (0..KINDS).collect();
            for i in (1..round.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                round.swap(i, j);
            }
        }
        let kind = round.pop().expect("a round was just shuffled");
        schedule.push(draw(kind, &mut rng));
    }
    schedule
}

/// One step of kind number `kind` (see [`KINDS`]), its numbers drawn.
fn draw(kind: u64, rng: &mut Rng) -> Step {
    let t = ELECTION_MS;
    let anyone = |rng: &mut Rng| match rng.below(NODES as u64 + 1) {
        0 => Target::Leader,
        i => Target::Node(i as usize - 1),
    };
    let (kind, target, hold) = match kind {
        // Down from one election timeout to several: long enough that a
        // dead leader is replaced, and that a follower misses records.
        0 => (FaultKind::Kill, anyone(rng), rng.millis(t, 6 * t)),
        // From well under an election timeout (nobody should notice) to
        // several (a paused leader is replaced).
        1 => (FaultKind::Pause, anyone(rng), rng.millis(t / 2, 6 * t)),
        // Silence longer than an election timeout: the followers elect
        // one of themselves; the old leader steps down.
        2 => (FaultKind::Cut, Target::Leader, rng.millis(2 * t, 8 * t)),
        // Brief: the links break, the followers reconnect and catch up.
        3 => (FaultKind::Reset, Target::Leader, rng.millis(t / 10, t)),
        // Under half an election timeout a chunk: writes slow down, and
        // nobody starts an election.
        _ => {
            let delay_ms = t / 10 + rng.below(t / 3);
            (FaultKind::Slow { delay_ms }, Target::Leader, rng.millis(3 * t, 8 * t))
        }
    };
    Step { kind, target, hold, rest: rng.millis(t, 3 * t) }
}

fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A time after the fault began: "+0.73 s".
fn offset(d: Duration) -> String {
    format!("+{:.2} s", d.as_secs_f64())
}

// ---- the screen -----------------------------------------------------------------

/// Where the narration goes: stdout, bold and coloured on a terminal only.
struct Screen {
    colour: bool,
}

impl Screen {
    fn heading(&self, text: &str) {
        if self.colour {
            println!("\n\x1b[1m== {text}\x1b[0m");
        } else {
            println!("\n== {text}");
        }
    }

    /// One event of a step, `at` after the fault began.
    fn event(&self, at: Duration, text: &str) {
        println!("  {:>8}  {text}", offset(at));
    }

    fn verdict(&self, passed: bool, text: &str) {
        let (on, off) = match (self.colour, passed) {
            (false, _) => ("", ""),
            (true, true) => ("\x1b[1;32m", "\x1b[0m"),
            (true, false) => ("\x1b[1;31m", "\x1b[0m"),
        };
        println!("\n{on}== {text}{off}");
    }
}

// ---- the cluster --------------------------------------------------------------

/// One `kvstore` process and its proxy.
struct Node {
    /// Clients reach the node here, directly.
    port: u16,
    /// Members reach it here.
    proxy: Proxy,
    data_dir: PathBuf,
    /// The node's stderr, across restarts.
    log_path: PathBuf,
    /// How much of the log the narration has read.
    log_read: u64,
    child: Option<Child>,
}

struct Cluster {
    nodes: Vec<Node>,
    bin: PathBuf,
    /// Flags every start gets.
    common: Vec<Vec<String>>,
    interrupted: Arc<AtomicBool>,
    /// The temporary directory the data dirs are in, shown as `.`.
    dir: String,
}

impl Cluster {
    /// Bind the proxies, start node1 as leader of term 1 and the others as
    /// its followers, and wait until each answers.
    fn start(options: &Options, dir: &Path) -> Res<Cluster> {
        let (node_ports, listeners) = ports(options.port)?;
        let mut nodes = Vec::new();
        for (i, (port, listener)) in node_ports.into_iter().zip(listeners).enumerate() {
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let proxy = Proxy::on(listener, target)?;
            nodes.push(Node {
                port,
                proxy,
                data_dir: dir.join(name(i)),
                log_path: dir.join(format!("{}.log", name(i))),
                log_read: 0,
                child: None,
            });
        }
        let common = nodes
            .iter()
            .map(|n| {
                vec![
                    "--failover=auto".to_string(),
                    format!("--election-timeout-ms={ELECTION_MS}"),
                    format!("--heartbeat-interval-ms={HEARTBEAT_MS}"),
                    "--write-concern=majority".to_string(),
                    format!("--write-timeout-ms={WRITE_TIMEOUT_MS}"),
                    format!("--advertise={}", n.proxy.port()),
                ]
            })
            .collect();
        let mut cluster = Cluster {
            dir: format!("{}/", dir.display()),
            nodes,
            bin: options.bin.clone(),
            common,
            interrupted: options.interrupted.clone(),
        };
        let proxies: Vec<String> =
            cluster.nodes.iter().map(|n| n.proxy.port().to_string()).collect();
        for i in 0..NODES {
            let role = match i {
                0 => {
                    vec!["--role=leader".to_string(), format!("--peers={}", proxies[1..].join(","))]
                }
                _ => vec!["--role=follower".to_string(), format!("--leader={}", proxies[0])],
            };
            let shown: Vec<String> = role.iter().chain(&cluster.common[i]).cloned().collect();
            println!(
                "$ kvstore --port {} --data-dir ./{} {}",
                cluster.nodes[i].port,
                name(i),
                shown.join(" ")
            );
            cluster.spawn(i, &role)?;
        }
        Ok(cluster)
    }

    /// Start node `i` with `extra` flags and wait until it answers STATUS.
    fn spawn(&mut self, i: usize, extra: &[String]) -> Res<()> {
        let node = &mut self.nodes[i];
        let log = OpenOptions::new().create(true).append(true).open(&node.log_path)?;
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(node.port.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(extra)
            .args(&self.common[i])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {} ({}): {e}", self.bin.display(), name(i)))?;
        node.child = Some(child);
        let started = Instant::now();
        while self.status(i).is_none() {
            if let Some(Ok(Some(exit))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                return Err(format!("{} exited ({exit}) on start; see its log", name(i)).into());
            }
            if started.elapsed() > START_DEADLINE {
                return Err(format!("{} did not answer within {START_DEADLINE:?}", name(i)).into());
            }
            self.pause_for(Duration::from_millis(20))?;
        }
        Ok(())
    }

    fn pid(&self, i: usize) -> u32 {
        self.nodes[i].child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restart node `i` on its data dir: no role flags, so it takes the
    /// role it stored (and finds out who leads now).
    fn restart(&mut self, i: usize) -> Res<()> {
        self.spawn(i, &[])
    }

    fn set_link(&self, i: usize, fault: Fault) {
        self.nodes[i].proxy.set(fault);
    }

    /// Node `i`'s status, asked directly, or None if it does not answer
    /// within [`STATUS_TIMEOUT`].
    fn status(&self, i: usize) -> Option<StatusReport> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port));
        let mut client = Client::connect(address).ok()?;
        client.set_timeout(Some(STATUS_TIMEOUT)).ok()?;
        client.status().ok()
    }

    fn view(&self) -> View {
        self.view_without(None)
    }

    /// Every node's status but `silent`'s (it is known not to answer).
    fn view_without(&self, silent: Option<usize>) -> View {
        View((0..NODES).map(|i| if Some(i) == silent { None } else { self.status(i) }).collect())
    }

    /// The addresses clients use, for the writer.
    fn members(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.port.to_string()).collect()
    }

    /// The node a port belongs to (its own or its proxy's).
    fn name_of_port(&self, port: u16) -> Option<String> {
        self.nodes.iter().position(|n| n.port == port || n.proxy.port() == port).map(name)
    }

    /// The log lines node `i` wrote since the last call.
    fn new_log_lines(&mut self, i: usize) -> Res<Vec<String>> {
        let node = &mut self.nodes[i];
        let mut file = File::open(&node.log_path)?;
        file.seek(SeekFrom::Start(node.log_read))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        // Up to the last complete line; a line being written waits.
        let complete = text.rfind('\n').map_or(0, |end| end + 1);
        node.log_read += complete as u64;
        Ok(text[..complete].lines().map(str::to_string).collect())
    }

    /// Sleep `d`, unless Ctrl-C.
    fn pause_for(&self, d: Duration) -> Res<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.signal(i, libc::SIGCONT); // a stopped process cannot die cleanly
            self.kill(i);
        }
    }
}

/// The nodes' and the proxies' ports. From `base`: nodes on base..base+2,
/// proxies on base+3..base+5, each checked free; from 0: any free ports.
/// The proxies' listeners are bound here and kept; a node's port is only
/// found free (kvstore binds it itself), its probe held until all six are
/// chosen so that the kernel cannot hand one out twice.
fn ports(base: u16) -> Res<(Vec<u16>, Vec<TcpListener>)> {
    let count = 2 * NODES as u16;
    if base != 0 && base.checked_add(count - 1).is_none() {
        return Err(format!("--port {base}: the six ports from it must be below 65536").into());
    }
    let bind = |i: u16| {
        let port = if base == 0 { 0 } else { base + i };
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            format!("port {port}: {e}; pick others with: make demo-faults PORT=<base port>")
        })
    };
    let probes: Vec<TcpListener> = (0..NODES as u16).map(bind).collect::<Result<_, _>>()?;
    let listeners = (NODES as u16..count).map(bind).collect::<Result<_, _>>()?;
    let node_ports =
        probes.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
    Ok((node_ports, listeners))
}

/// Every node's status at one moment (None: it did not answer).
struct View(Vec<Option<StatusReport>>);

impl View {
    /// The node that says it leads the newest term.
    fn leader(&self) -> Option<usize> {
        (0..NODES)
            .filter(|&i| self.0[i].as_ref().is_some_and(|s| s.role == "leader"))
            .max_by_key(|&i| self.0[i].as_ref().map_or(0, |s| s.term))
    }

    fn last_lsn(&self, i: usize) -> Option<Lsn> {
        self.0[i].as_ref().map(|s| s.last_lsn)
    }

    /// "node1 leads term 1 at LSN 412; node2 at LSN 410, 2 behind; node3
    /// does not answer (paused)". `silent` says why a node may not answer.
    fn describe(&self, silent: Option<(usize, &str)>) -> String {
        let leader = self.leader();
        let (top_lsn, top_term) = match leader.and_then(|l| self.0[l].as_ref()) {
            Some(s) => (s.last_lsn, s.term),
            None => (0, 0),
        };
        let mut parts = Vec::new();
        // The leader first.
        let order = leader.into_iter().chain((0..NODES).filter(|&i| Some(i) != leader));
        for i in order {
            parts.push(match &self.0[i] {
                Some(s) if Some(i) == leader => {
                    format!("{} leads term {} at LSN {}", name(i), s.term, s.last_lsn)
                }
                Some(s) => {
                    let mut text = format!("{} at LSN {}", name(i), s.last_lsn);
                    if leader.is_some() && s.last_lsn < top_lsn {
                        text += &format!(", {} behind", top_lsn - s.last_lsn);
                    }
                    if s.term != top_term || s.role == "leader" {
                        text += &format!(" ({} of term {})", s.role, s.term);
                    }
                    text
                }
                None => match silent {
                    Some((j, why)) if j == i => format!("{} does not answer ({why})", name(i)),
                    _ => format!("{} does not answer", name(i)),
                },
            });
        }
        if leader.is_none() {
            parts.insert(0, "no node leads".to_string());
        }
        parts.join("; ")
    }
}

// ---- the writer ---------------------------------------------------------------

/// An acknowledged put.
struct Ack {
    key: String,
    value: String,
    lsn: Lsn,
    /// When the OK came, and how long the put took.
    at: Instant,
    took: Duration,
}

/// Everything the writer did.
#[derive(Default)]
struct Writes {
    acked: Vec<Ack>,
    /// Puts whose outcome is unknown (the connection broke after sending,
    /// or ERROR 5/11): key, value, when.
    unknown: Vec<(String, String, Instant)>,
    /// Puts no node took (no leader answered within the budget).
    refused: Vec<(String, String, Instant)>,
    /// The address the writer sent its last put to. It starts with the
    /// nodes' own ports; after a failover it follows the leader's
    /// advertised address, which is the leader's proxy, so a network
    /// fault there strikes the writer too.
    talking_to: Option<String>,
}

struct Writer {
    writes: Arc<Mutex<Writes>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(members: Vec<String>) -> Res<Writer> {
        let mut client = ClusterClient::new(&members, WRITER_BUDGET)?;
        let writes = Arc::new(Mutex::new(Writes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (Arc::clone(&writes), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let (key, value) = (format!("k{n:05}"), format!("v{n}"));
                let sent = Instant::now();
                let outcome = client.put(key.as_bytes(), value.as_bytes());
                let at = Instant::now();
                let mut log = log.lock();
                match outcome {
                    Ok(lsn) => log.acked.push(Ack { key, value, lsn, at, took: at - sent }),
                    Err(Error::Indeterminate(_)) => log.unknown.push((key, value, at)),
                    Err(_) => log.refused.push((key, value, at)),
                }
                log.talking_to = client.leader().map(str::to_string);
                drop(log);
                std::thread::sleep(WRITE_PAUSE);
            }
        });
        Ok(Writer { writes, stop, thread: Some(thread) })
    }

    /// Stop writing; wait for the put in flight.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// "node2, through its proxy" or "node2, directly": where the writer's
    /// puts go now.
    fn route(&self, cluster: &Cluster) -> String {
        let port = self
            .writes
            .lock()
            .talking_to
            .as_deref()
            .and_then(|a| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
        let Some(port) = port else { return "no node yet".to_string() };
        match cluster.nodes.iter().position(|n| n.port == port || n.proxy.port() == port) {
            Some(i) if cluster.nodes[i].proxy.port() == port => {
                format!("{} through its proxy", name(i))
            }
            Some(i) => format!("{} directly", name(i)),
            None => format!("port {port}"),
        }
    }

    /// What the writer saw between `from` and `to`: a line for a learner.
    fn summary(&self, from: Instant, to: Instant) -> String {
        let writes = self.writes.lock();
        let within = |at: &Instant| (from..=to).contains(at);
        let mut took: Vec<Duration> =
            writes.acked.iter().filter(|a| within(&a.at)).map(|a| a.took).collect();
        took.sort();
        // The longest wait for an OK, counted from the last OK before `from`.
        let mut gap = Duration::ZERO;
        let mut last = writes.acked.iter().rev().find(|a| a.at < from).map_or(from, |a| a.at);
        for ack in writes.acked.iter().filter(|a| within(&a.at)) {
            gap = gap.max(ack.at - last);
            last = ack.at;
        }
        gap = gap.max(to - last);
        let unknown = writes.unknown.iter().filter(|(_, _, at)| within(at)).count();
        let refused = writes.refused.iter().filter(|(_, _, at)| within(at)).count();
        let speed = match (took.get(took.len() / 2), took.last()) {
            (Some(median), Some(slowest)) => {
                format!(" (median {} ms, slowest {} ms)", median.as_millis(), slowest.as_millis())
            }
            _ => String::new(),
        };
        format!(
            "writes meanwhile: {} acknowledged{speed}, {unknown} with unknown outcome, {refused} \
             refused; longest wait for an OK: {}",
            took.len(),
            secs(gap)
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- one step -----------------------------------------------------------------

/// Run one step: say where things stand, strike, watch while the fault
/// holds, heal, wait until every node has caught up, then show what the
/// nodes logged and what the writer saw.
fn run_step(
    cluster: &mut Cluster,
    writer: &Writer,
    screen: &Screen,
    (number, total, started): (usize, usize, Instant),
    step: &Step,
) -> Res<usize> {
    screen.heading(&format!(
        "step {number}/{total} at {:.1} s: {step}",
        started.elapsed().as_secs_f64()
    ));
    for i in 0..NODES {
        cluster.new_log_lines(i)?; // what came before this step was told before
    }
    let before = cluster.view();
    println!("before:  {}", before.describe(None));
    println!("the writer's puts go to {}", writer.route(cluster));
    let victim = match (step.target, before.leader()) {
        (Target::Node(i), _) | (Target::Leader, Some(i)) => i,
        (Target::Leader, None) => {
            println!("(no node leads right now: the fault strikes node1)");
            0
        }
    };
    let struck = Instant::now();
    let struck_wall = SystemTime::now();
    let silent = strike(cluster, screen, step, victim, &before)?;

    // While the fault holds: say when a node's role or term changes. The
    // node the fault silenced is not asked: it would cost a STATUS_TIMEOUT
    // a look, and the heal would come late.
    let mut seen: Vec<Option<(String, u64)>> =
        before.0.iter().map(|s| s.as_ref().map(|s| (s.role.clone(), s.term))).collect();
    let mut at_heal = cluster.view_without(silent.map(|(i, _)| i));
    while struck.elapsed() < step.hold {
        cluster.pause_for(POLL.min(step.hold.saturating_sub(struck.elapsed())))?;
        at_heal = cluster.view_without(silent.map(|(i, _)| i));
        note_changes(screen, struck, &at_heal, &mut seen);
    }
    screen.event(struck.elapsed(), &format!("at the heal: {}", at_heal.describe(silent)));
    heal(cluster, screen, step, victim, struck)?;
    let healed = wait_caught_up(cluster, screen, struck, &mut seen)?;

    let logs = collect_logs(cluster, struck_wall)?;
    println!("the nodes' logs meanwhile (addresses shown as node names):");
    show_logs(&logs);
    let story = what_happened(&before, &at_heal, &cluster.view(), &logs, victim, step);
    for line in &story {
        println!("- {line}");
    }
    println!("{}", writer.summary(struck, healed));
    cluster.pause_for(step.rest)?;
    Ok(story.iter().filter(|line| line.contains(" and asked for the records after LSN ")).count())
}

/// Apply the step's fault to node `victim`; return why that node may not
/// answer while it holds.
fn strike(
    cluster: &mut Cluster,
    screen: &Screen,
    step: &Step,
    victim: usize,
    before: &View,
) -> Res<Option<(usize, &'static str)>> {
    let who = name(victim);
    let lsn = before.last_lsn(victim).map_or("?".into(), |l| l.to_string());
    let text = match step.kind {
        FaultKind::Kill => {
            let pid = cluster.pid(victim);
            // Its port is gone with it: its proxy must refuse too, not
            // accept and close, or peers would think they reached it.
            cluster.set_link(victim, Fault::Refuse);
            cluster.kill(victim);
            format!("SIGKILL {who} (pid {pid}) near LSN {lsn}; its proxy refuses connections")
        }
        FaultKind::Pause => {
            cluster.signal(victim, libc::SIGSTOP);
            format!("SIGSTOP {who} (pid {}) at about LSN {lsn}", cluster.pid(victim))
        }
        FaultKind::Cut => {
            cluster.set_link(victim, Fault::Blackhole);
            format!("{who}'s proxy forwards nothing, closes nothing")
        }
        FaultKind::Reset => {
            cluster.set_link(victim, Fault::CutMidFrame);
            format!("{who}'s proxy cuts every connection mid-message")
        }
        FaultKind::Slow { delay_ms } => {
            cluster.set_link(victim, Fault::Delay(Duration::from_millis(delay_ms)));
            format!("{who}'s proxy holds every chunk {delay_ms} ms")
        }
    };
    screen.event(Duration::ZERO, &text);
    Ok(match step.kind {
        FaultKind::Kill => Some((victim, "killed")),
        FaultKind::Pause => Some((victim, "paused")),
        _ => None,
    })
}

/// Undo the step's fault.
fn heal(
    cluster: &mut Cluster,
    screen: &Screen,
    step: &Step,
    victim: usize,
    struck: Instant,
) -> Res<()> {
    let who = name(victim);
    let text = match step.kind {
        FaultKind::Kill => {
            cluster.restart(victim)?;
            cluster.set_link(victim, Fault::None);
            format!("{who} restarted (pid {}) on its data dir, no role flags", cluster.pid(victim))
        }
        FaultKind::Pause => {
            cluster.signal(victim, libc::SIGCONT);
            format!("SIGCONT {who}")
        }
        FaultKind::Cut | FaultKind::Reset | FaultKind::Slow { .. } => {
            cluster.set_link(victim, Fault::None);
            format!("{who}'s proxy forwards normally again")
        }
    };
    screen.event(struck.elapsed(), &text);
    Ok(())
}

/// Print each node whose role or term changed since `seen`.
fn note_changes(screen: &Screen, struck: Instant, view: &View, seen: &mut [Option<(String, u64)>]) {
    for (i, status) in view.0.iter().enumerate() {
        let Some(status) = status else { continue };
        let now = (status.role.clone(), status.term);
        if seen[i].as_ref() != Some(&now) {
            let what = match now.0.as_str() {
                "leader" => format!("{} is leader of term {}", name(i), now.1),
                role => format!("{} is {role} in term {}", name(i), now.1),
            };
            screen.event(struck.elapsed(), &what);
            seen[i] = Some(now);
        }
    }
}

/// Wait until one node leads and every other holds the leader's last LSN
/// as it was once the fault was healed, and streams from it. Returns when.
fn wait_caught_up(
    cluster: &Cluster,
    screen: &Screen,
    struck: Instant,
    seen: &mut [Option<(String, u64)>],
) -> Res<Instant> {
    let healed = Instant::now();
    let mut target = None;
    loop {
        let view = cluster.view();
        note_changes(screen, struck, &view, seen);
        if let Some(leader) = view.leader() {
            let lsn = *target.get_or_insert(view.last_lsn(leader).unwrap_or(0));
            let caught_up = (0..NODES).all(|i| match &view.0[i] {
                Some(s) if i == leader => s.role == "leader",
                Some(s) => {
                    s.last_lsn >= lsn && s.leader.as_ref().is_some_and(|l| l.state == "streaming")
                }
                None => false,
            });
            if caught_up {
                screen.event(
                    struck.elapsed(),
                    &format!(
                        "all three hold LSN {lsn} (the leader's last LSN at the heal) and {} \
                         followers stream from {}",
                        NODES - 1,
                        name(leader)
                    ),
                );
                return Ok(Instant::now());
            }
        }
        if healed.elapsed() > HEAL_DEADLINE {
            screen.event(
                struck.elapsed(),
                &format!("NOT caught up {HEAL_DEADLINE:?} after the heal: {}", view.describe(None)),
            );
            return Ok(Instant::now());
        }
        cluster.pause_for(POLL)?;
    }
}

// ---- the nodes' logs ------------------------------------------------------------

/// One log line of a node, `at` after the fault began (if its time parses).
struct LogLine {
    node: usize,
    at: Option<Duration>,
    /// Without timestamp and level, addresses replaced by node names.
    text: String,
    /// How many times the node logged exactly this during the step.
    times: usize,
}

impl LogLine {
    /// Lines left out first when a step logged too many: the leader's side
    /// of a link closing (the follower's side says it too), pre-votes,
    /// terms adopted on the way, and a restart's opening lines.
    fn routine(&self) -> bool {
        ["[replication] follower", "[wal] opened", "[server] listening", "[failover] adopted"]
            .iter()
            .any(|p| self.text.starts_with(p))
            || self.text.contains("pre-vote")
    }
}

/// The lines that tell the story of a fault: elections, roles, catch-ups,
/// repairs, restarts, and every warning. Routine replication lines are
/// left out.
fn worth_showing(text: &str, level: &str) -> bool {
    let tags = ["[catch-up]", "[election]", "[failover]", "[wal] opened", "[server] listening"];
    (tags.iter().any(|t| text.starts_with(t)) || level == "WARN" || level == "ERROR")
        && !text.starts_with("[failover] term ") // the NOOP line: true, but one too many
}

/// Every node's new log lines worth showing, in time order.
fn collect_logs(cluster: &mut Cluster, struck_wall: SystemTime) -> Res<Vec<LogLine>> {
    let struck_ms = ms_of_day(struck_wall);
    let mut lines = Vec::new();
    for i in 0..NODES {
        for line in cluster.new_log_lines(i)? {
            // "2026-11-25T08:39:22.525Z INFO  [catch-up] ..."
            let mut fields = line.splitn(3, ' ');
            let (stamp, level) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            let text = fields.next().unwrap_or("").trim_start();
            if !worth_showing(text, level) {
                continue;
            }
            let text = with_names(cluster, text);
            // A line repeated (a reconnect tried again and again) is shown once.
            if let Some(seen) =
                lines.iter_mut().find(|l: &&mut LogLine| l.node == i && l.text == text)
            {
                seen.times += 1;
                continue;
            }
            let at = parse_ms_of_day(stamp)
                .map(|ms| Duration::from_millis(ms.saturating_sub(struck_ms)));
            lines.push(LogLine { node: i, at, text, times: 1 });
        }
    }
    lines.sort_by_key(|l| l.at);
    Ok(lines)
}

/// Print the lines: without the routine ones if there are too many, and
/// then only the first and last ones if there are still too many.
fn show_logs(lines: &[LogLine]) {
    if lines.is_empty() {
        println!("  (nothing worth showing: no election, no link lost, no catch-up)");
        return;
    }
    let show = |l: &LogLine| {
        let at = l.at.map_or(String::new(), offset);
        let again = match l.times {
            1 => String::new(),
            n => format!("  ({n} times)"),
        };
        println!("  {at:>8}  {}  {}{again}", name(l.node), l.text);
    };
    let mut kept: Vec<&LogLine> = lines.iter().collect();
    if kept.len() > LOG_LINES_MAX {
        kept.retain(|l| !l.routine());
        println!(
            "  ({} routine lines left out: links closing on the leader's side, pre-votes, terms \
             adopted)",
            lines.len() - kept.len()
        );
    }
    if kept.len() <= LOG_LINES_MAX {
        kept.into_iter().for_each(show);
        return;
    }
    let (head, tail) = (LOG_LINES_MAX / 2, LOG_LINES_MAX - LOG_LINES_MAX / 2);
    kept[..head].iter().copied().for_each(show);
    println!("  ... {} more lines ...", kept.len() - head - tail);
    kept[kept.len() - tail..].iter().copied().for_each(show);
}

/// `text` with each `127.0.0.1:PORT` of a node or proxy replaced by the
/// node's name.
fn with_names(cluster: &Cluster, text: &str) -> String {
    const HOST: &str = "127.0.0.1:";
    let text = text.replace(&cluster.dir, "./");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(HOST) {
        let after = &rest[start + HOST.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let named = after[..digits].parse().ok().and_then(|p| cluster.name_of_port(p));
        out.push_str(&rest[..start]);
        match named {
            Some(node) => out.push_str(&node),
            None => out.push_str(&rest[start..start + HOST.len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Milliseconds since midnight UTC.
fn ms_of_day(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64 % 86_400_000)
}

/// "2026-11-25T08:39:22.525Z" as milliseconds since midnight.
fn parse_ms_of_day(stamp: &str) -> Option<u64> {
    let time = stamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m): (u64, u64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as u64)
}

/// The number that follows `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The step's story in a few sentences: elections, who fell behind, what
/// each node asked for when it reconnected and what it got, repairs.
fn what_happened(
    before: &View,
    at_heal: &View,
    after: &View,
    logs: &[LogLine],
    victim: usize,
    step: &Step,
) -> Vec<String> {
    let mut story = Vec::new();
    let leader_of = |v: &View| v.leader().and_then(|l| v.0[l].as_ref().map(|s| (l, s.term)));
    match (leader_of(before), leader_of(after)) {
        (Some((old, t0)), Some((new, t1))) if t0 == t1 && old == new => {
            story.push(format!("{} stayed leader of term {t0}: no election", name(old)))
        }
        (_, Some((new, t1))) => {
            let when = logs
                .iter()
                .find(|l| l.node == new && l.text.starts_with("[failover] leader of term"))
                .and_then(|l| l.at)
                .map_or(String::new(), |at| format!(", {} after the fault", secs(at)));
            story.push(format!("{} was elected leader of term {t1}{when}", name(new)));
        }
        (_, None) => story.push("no leader once it was over".into()),
    }
    if let Some(leader) = at_heal.leader() {
        let top = at_heal.last_lsn(leader).unwrap_or(0);
        for i in (0..NODES).filter(|&i| i != leader) {
            match (at_heal.last_lsn(i), before.last_lsn(i)) {
                (Some(lsn), _) if lsn < top => story.push(format!(
                    "{} was {} record(s) behind the leader at the heal (LSN {lsn} of {top})",
                    name(i),
                    top - lsn
                )),
                (None, Some(was)) => story.push(format!(
                    "{} did not answer at the heal ({}): it had missed the records after about \
                     LSN {was}, and the leader was at LSN {top}",
                    name(i),
                    if step.kind == FaultKind::Kill { "down" } else { "paused" }
                )),
                _ => {}
            }
        }
    }
    let mut reconnected = false;
    for i in 0..NODES {
        let mine = logs.iter().filter(|l| l.node == i);
        // The last reconnect whose catch-up finished: "connected to leader
        // X, requesting records after LSN L", then "received M records,
        // caught up to LSN N". (A reconnect to a node that is gone finds
        // nobody to send it anything.)
        let (mut asked, mut done) = (None, None);
        for line in mine.clone() {
            if let Some(after) = number_after(&line.text, "requesting records after LSN ") {
                let leader = line.text.split("connected to leader ").nth(1);
                let leader = leader.and_then(|l| l.split(',').next()).unwrap_or("?");
                asked = Some((leader.to_string(), after));
            } else if let (Some(count), Some(to)) = (
                number_after(&line.text, "received "),
                number_after(&line.text, "caught up to LSN "),
            ) {
                done = asked.take().map(|(leader, after)| (leader, after, count, to));
            }
        }
        if let Some((leader, after, count, to)) = done {
            reconnected = true;
            story.push(format!(
                "{} reconnected to {leader} and asked for the records after LSN {after}; it got \
                 {count}, up to LSN {to}",
                name(i)
            ));
        }
        if let Some(cut) = mine.clone().find(|l| l.text.contains("truncating")) {
            let after = number_after(&cut.text, "after LSN ").unwrap_or(0);
            let removed = number_after(&cut.text, "truncating ").unwrap_or(0);
            story.push(format!(
                "{}'s log had diverged after LSN {after}: it removed {removed} record(s) that no \
                 majority held (never acknowledged to the writer)",
                name(i)
            ));
        }
    }
    if !reconnected {
        story.push(match step.kind {
            FaultKind::Pause => format!(
                "nobody reconnected: {}'s links stayed open, and what was sent to it meanwhile \
                 waited in its sockets until SIGCONT",
                name(victim)
            ),
            FaultKind::Slow { .. } => "no link broke and nobody reconnected: the links were slow, \
                                       not down. A majority write waits for its record to reach a \
                                       follower and the ACK to come back, each held in turn behind \
                                       what the link already held (and so are the writer's own \
                                       request and reply if it goes through the proxy)"
                .to_string(),
            _ => "no link broke and nobody reconnected".to_string(),
        });
    }
    story
}

// ---- the run --------------------------------------------------------------------

/// The whole demo: start, write, run the schedule, check.
pub fn run(options: &Options) -> Res<Outcome> {
    let screen = Screen { colour: options.colour };
    let steps = schedule(options.seed, options.steps);
    let dir = tempfile::Builder::new().prefix("kvstore-faults.").tempdir()?;

    screen.heading(&format!(
        "kvstore fault demo, seed {}: replay it with make demo-faults SEED={}",
        options.seed, options.seed
    ));
    println!("the schedule (a function of the seed alone: this seed always gives these steps):");
    for (i, step) in steps.iter().enumerate() {
        println!("  {:2}. {step}; then {} quiet", i + 1, secs(step.rest));
    }

    screen.heading("Start three nodes, each behind a fault proxy");
    let mut cluster = Cluster::start(options, dir.path())?;
    for (i, node) in cluster.nodes.iter().enumerate() {
        println!(
            "{}: clients reach it on port {}, the other members through its proxy on port {}",
            name(i),
            node.port,
            node.proxy.port()
        );
    }
    println!("(a follower dials its leader: every follower's stream passes the leader's proxy)");
    let mut writer = Writer::start(cluster.members())?;
    println!(
        "a writer puts k00001 = v1, k00002 = v2, ... with write concern majority, one every {} \
         ms, following the leader",
        WRITE_PAUSE.as_millis()
    );

    warm_up(&cluster, &writer)?;

    let started = Instant::now();
    let mut catch_ups_told = 0;
    for (i, step) in steps.iter().enumerate() {
        catch_ups_told +=
            run_step(&mut cluster, &writer, &screen, (i + 1, steps.len(), started), step)?;
    }

    screen.heading("The end: stop writing, wait until the nodes agree, read everything back");
    writer.stop();
    let outcome = Outcome { catch_ups_told, ..check(&cluster, &writer, &screen, options.seed)? };
    if !outcome.passed {
        let kept = dir.keep();
        println!("the nodes' logs and data are kept in {}", kept.display());
    }
    Ok(outcome)
}

/// Let the writer get going before the first fault: [`WARM_UP_WRITES`]
/// acknowledged.
fn warm_up(cluster: &Cluster, writer: &Writer) -> Res<()> {
    let started = Instant::now();
    while writer.writes.lock().acked.len() < WARM_UP_WRITES {
        if started.elapsed() > START_DEADLINE {
            return Err(format!("the writer had no OK within {START_DEADLINE:?}").into());
        }
        cluster.pause_for(POLL)?;
    }
    Ok(())
}

/// The verdict: all nodes agree (last LSN and digest), every acknowledged
/// write is on every node, no refused write is on any.
fn check(cluster: &Cluster, writer: &Writer, screen: &Screen, seed: u64) -> Res<Outcome> {
    let writes = writer.writes.lock();
    println!(
        "the writer: {} acknowledged, {} with unknown outcome, {} refused",
        writes.acked.len(),
        writes.unknown.len(),
        writes.refused.len()
    );
    let waited = Instant::now();
    let mut view = cluster.view();
    let agree = |v: &View| {
        let first = v.0[0].as_ref();
        first.is_some()
            && v.0.iter().all(|s| {
                s.as_ref().zip(first).is_some_and(|(s, f)| {
                    s.last_lsn == f.last_lsn && s.digest == f.digest && s.term == f.term
                })
            })
    };
    while !agree(&view) && waited.elapsed() < CONVERGE_DEADLINE {
        cluster.pause_for(POLL)?;
        view = cluster.view();
    }
    println!("waited {} for the three nodes to agree", secs(waited.elapsed()));
    println!("    NODE   PORT   ROLE      TERM  LAST_LSN  DIGEST");
    for (i, status) in view.0.iter().enumerate() {
        match status {
            Some(s) => println!(
                "    {:<6} {:<6} {:<9} {:<5} {:<9} {}",
                name(i),
                cluster.nodes[i].port,
                s.role,
                s.term,
                s.last_lsn,
                s.digest
            ),
            None => println!("    {:<6} {:<6} does not answer", name(i), cluster.nodes[i].port),
        }
    }
    let mut problems = Vec::new();
    let (last_lsn, digest) = match (agree(&view), view.0[0].as_ref()) {
        (true, Some(s)) => {
            println!(
                "check: all three in term {}, at LSN {}, digest {}: identical",
                s.term, s.last_lsn, s.digest
            );
            (s.last_lsn, s.digest.clone())
        }
        _ => {
            problems.push(format!("the nodes did not agree within {CONVERGE_DEADLINE:?}"));
            (0, String::new())
        }
    };
    let mut applied_unknown = 0;
    for i in 0..NODES {
        let mut client =
            Client::connect(SocketAddr::from(([127, 0, 0, 1], cluster.nodes[i].port)))?;
        let mut read = |key: &str| client.read(key.as_bytes(), Consistency::Any, 0);
        let missing: Vec<String> = writes
            .acked
            .iter()
            .filter(|a| read(&a.key).ok().flatten().as_deref() != Some(a.value.as_bytes()))
            .map(|a| format!("{} (LSN {})", a.key, a.lsn))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} lacks {} acknowledged write(s): {}",
                name(i),
                missing.len(),
                missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let present: Vec<&str> = writes
            .refused
            .iter()
            .filter(|(key, _, _)| read(key).ok().flatten().is_some())
            .map(|(key, _, _)| key.as_str())
            .collect();
        if !present.is_empty() {
            problems.push(format!("{} holds refused write(s): {}", name(i), present.join(", ")));
        }
        if i == 0 {
            applied_unknown =
                writes.unknown.iter().filter(|(k, _, _)| read(k).ok().flatten().is_some()).count();
        }
    }
    if problems.is_empty() {
        println!(
            "check: the {} acknowledged writes read back from each node (consistency any): all \
             there",
            writes.acked.len()
        );
        if !writes.refused.is_empty() {
            println!("check: none of the {} refused writes is on any node", writes.refused.len());
        }
        if !writes.unknown.is_empty() {
            println!(
                "note: of the {} writes with unknown outcome, {applied_unknown} turned out \
                 applied and {} not; every node holds the same ones (same digest)",
                writes.unknown.len(),
                writes.unknown.len() - applied_unknown
            );
        }
    }
    for problem in &problems {
        println!("PROBLEM: {problem}");
    }
    let passed = problems.is_empty();
    let verdict = match passed {
        true => format!("PASS: no acknowledged write lost, digests match (seed {seed})"),
        false => format!("FAIL: {} problem(s) (seed {seed})", problems.len()),
    };
    screen.verdict(passed, &verdict);
    Ok(Outcome { passed, acknowledged: writes.acked.len(), digest, last_lsn, catch_ups_told: 0 })
}
