//! failover_time — how long losing the leader costs a writer, for kvstore
//! and, measured the same way, for etcd.
//!
//! It starts a cluster of three members on loopback, keeps one writer
//! putting new keys, and then, `--runs` times:
//!
//! 1. finds the leader and applies the `--fault`, noting the time:
//!    - `sigkill`: SIGKILL the leader's process (a crash);
//!    - `sigterm`: SIGTERM the leader (a planned stop: kvstore, like etcd,
//!      hands leadership to a follower and exits 0);
//!    - `transfer`: ask the leader to hand over and stay a follower
//!      (kvstore's TRANSFER_LEADERSHIP, etcd's move-leader);
//! 2. waits until the writer has a write acknowledged by a new leader: the
//!    **failover time** runs from the fault to that acknowledgement;
//! 3. measures the **longest gap** between two consecutive acknowledged
//!    writes around the fault (from 300 ms before it to 300 ms after the
//!    first acknowledgement of the new leader): what a client that writes
//!    all the time notices. After a crash it is about the failover time;
//!    after a planned handover it should be a small fraction of an
//!    election timeout;
//! 4. restarts the stopped member on its data dir (after `sigkill` and
//!    `sigterm`), and waits until every member answers, agrees on one
//!    leader and is within a few records of the others.
//!
//! Two targets share that loop through the [`Target`] trait:
//!
//! - `kvstore` (`--bin ./build/kvstore`): the lessons' commands (leader on
//!   `--port`, followers on the next two ports), default timings, so
//!   `--failover auto`. The writer is a [`ClusterClient`], which follows the
//!   leader; a write counts as the new leader's when the client names
//!   another member than the one that led at the fault.
//! - `etcd` (`--bin etcd`): three members with etcd's defaults (1000 ms
//!   election timeout, 100 ms heartbeat), clients on `--port` and the next
//!   two ports, peers on the three after. The writer speaks to etcd's v3
//!   JSON gateway (`POST /v3/kv/put`, base64 keys), sends each put to one
//!   member (any member forwards it to the leader) with a short timeout,
//!   and tries the next member when one does not answer. A write counts as
//!   the new leader's when its reply carries a newer raft term than the
//!   leader's at the fault. The leader is the member whose
//!   `/v3/maintenance/status` names itself.
//!
//! Both writers retry the same way: a member that refuses outright (not
//! reachable, not the leader, no leader yet) is passed over for the next,
//! with a pause of 25 ms doubling to 100 ms after each round of all three.
//! A write whose outcome is unknown (the connection broke after it was
//! sent, or it timed out) is counted and never resent; the writer goes on
//! with the next key.
//!
//! ```text
//! make build examples
//! ./target/release/examples/failover_time --runs 20
//! ./target/release/examples/failover_time --runs 10 --fault sigterm
//! ./target/release/examples/failover_time --runs 20 --target etcd --port 9621
//! ```
//!
//! With `--dir`, the members' data dirs and logs (`member1.log`, ...; one
//! file per member across its restarts) stay there for reading; kvstore's
//! `[election]` lines carry timestamps.

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::{Parser, ValueEnum};
use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::error::Error;
use parking_lot::Mutex;
use serde_json::{json, Value};
use signal_hook::consts::SIGTERM;

#[derive(Parser, Debug)]
struct Args {
    /// Which store to measure.
    #[arg(long, value_enum, default_value_t = TargetKind::Kvstore)]
    target: TargetKind,
    /// What happens to the leader.
    #[arg(long, value_enum, default_value_t = Fault::Sigkill)]
    fault: Fault,
    /// The server binary (default: ./build/kvstore, or etcd from the PATH).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// First of three consecutive client ports (etcd's peers use the
    /// three after them).
    #[arg(long, default_value_t = 9601)]
    port: u16,
    /// Where the data dirs and logs go (default: a new temporary directory,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many faults.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// etcd only: how long the writer waits for one put's reply.
    #[arg(long, default_value_t = 100)]
    request_timeout_ms: u64,
    /// Extra flags for every member (e.g. "--election-timeout-ms=500").
    #[arg(long, allow_hyphen_values = true)]
    extra: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Kvstore,
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    Sigkill,
    Sigterm,
    Transfer,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Sigkill => "sigkill",
            Fault::Sigterm => "sigterm",
            Fault::Transfer => "transfer",
        }
    }
}

/// Give up on anything that takes longer than this.
const DEADLINE: Duration = Duration::from_secs(30);

/// A writer gives up on one write after this long without a leader.
const WRITE_BUDGET: Duration = Duration::from_secs(10);

/// Pauses between two rounds of tries, as in `kvstore::cluster_client`.
const RETRY_PAUSE_MIN_MS: u64 = 25;
const RETRY_PAUSE_MAX_MS: u64 = 100;

/// How much of the writer's history around a fault counts for the gap,
/// and how long the cluster runs undisturbed before each fault.
const GAP_MARGIN: Duration = Duration::from_millis(300);

/// Members of a settled cluster may differ by this many records (the
/// writer keeps writing while we look).
const SETTLED_SPREAD: u64 = 50;

// ---- What a target provides -------------------------------------------------

/// The leader at one moment: which member, and the mark the writer sees
/// on the writes it acknowledges (a write with another mark was
/// acknowledged by another leader).
struct Leader {
    member: usize,
    mark: String,
}

/// What one put came to.
enum Put {
    /// Acknowledged; the mark says by which leader.
    Acked(String),
    /// Sent, but no answer: it may or may not be applied.
    Unknown,
    /// No leader took it within the writer's budget.
    Failed(String),
}

/// A client that keeps writing through whichever member leads.
trait Writer: Send {
    fn put(&mut self, key: &str) -> Put;
}

/// One store's cluster of three members, as the measurement needs it.
trait Target {
    /// For the output: "kvstore", "etcd 3.4.23".
    fn name(&self) -> String;
    /// The command that starts member `i` on its data dir under `dir`:
    /// `first` when the cluster is created, otherwise a restart.
    fn command(&self, i: usize, first: bool) -> Command;
    /// Member `i` answers requests.
    fn answers(&self, i: usize) -> bool;
    /// The one leader, if the members agree on one.
    fn leader(&self) -> Option<Leader>;
    /// Every member answers, there is one leader, and no member is more
    /// than [`SETTLED_SPREAD`] records behind another.
    fn settled(&self) -> bool;
    /// Ask `leader` to hand leadership to a follower.
    fn transfer(&self, leader: usize) -> Result<(), String>;
    /// Whether a member stopped by SIGTERM exited as this store should.
    fn stopped_cleanly(&self, status: ExitStatus) -> bool;
    /// A writer for the writer thread.
    fn writer(&self) -> Result<Box<dyn Writer>, String>;
}

// ---- kvstore ----------------------------------------------------------------

struct Kvstore {
    bin: PathBuf,
    dir: PathBuf,
    ports: [u16; 3],
    extra: Vec<String>,
}

fn kv_address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn kv_status(port: u16) -> Option<kvstore::status::StatusReport> {
    Client::connect(kv_address(port).as_str()).ok()?.status().ok()
}

impl Target for Kvstore {
    fn name(&self) -> String {
        "kvstore".to_string()
    }

    /// The lessons' commands the first time; a restarted member takes its
    /// stored role, finds the newer term and follows.
    fn command(&self, i: usize, first: bool) -> Command {
        let [p0, p1, p2] = self.ports;
        let mut command = Command::new(&self.bin);
        command.arg("--port").arg(self.ports[i].to_string());
        command.arg("--data-dir").arg(self.dir.join(format!("member{}", i + 1)));
        if first && i == 0 {
            command.args(["--role=leader".to_string(), format!("--peers={p1},{p2}")]);
        } else if first {
            command.args(["--role=follower".to_string(), format!("--leader={p0}")]);
        }
        command.args(&self.extra);
        command
    }

    fn answers(&self, i: usize) -> bool {
        kv_status(self.ports[i]).is_some()
    }

    fn leader(&self) -> Option<Leader> {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| kv_status(self.ports[i]).is_some_and(|s| s.role == "leader"))
            .collect();
        match leaders[..] {
            [member] => Some(Leader { member, mark: kv_address(self.ports[member]) }),
            _ => None,
        }
    }

    fn settled(&self) -> bool {
        let Some(statuses) = self.ports.iter().map(|&p| kv_status(p)).collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let lsns = statuses.iter().map(|s| s.last_lsn);
        let spread = lsns.clone().max().unwrap_or(0) - lsns.min().unwrap_or(0);
        let leaders = statuses.iter().filter(|s| s.role == "leader").count();
        leaders == 1 && spread < SETTLED_SPREAD
    }

    fn transfer(&self, leader: usize) -> Result<(), String> {
        let address = kv_address(self.ports[leader]);
        let mut client = Client::connect(address.as_str()).map_err(|e| e.to_string())?;
        client.set_timeout(Some(DEADLINE)).map_err(|e| e.to_string())?;
        client.transfer_leadership("").map(|_| ()).map_err(|e| format!("{address}: {e}"))
    }

    /// kvstore hands over, finishes its requests and exits 0.
    fn stopped_cleanly(&self, status: ExitStatus) -> bool {
        status.success()
    }

    fn writer(&self) -> Result<Box<dyn Writer>, String> {
        let members: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
        let client = ClusterClient::new(&members, WRITE_BUDGET).map_err(|e| e.to_string())?;
        Ok(Box::new(KvWriter { client }))
    }
}

struct KvWriter {
    client: ClusterClient,
}

impl Writer for KvWriter {
    fn put(&mut self, key: &str) -> Put {
        match self.client.put(key.as_bytes(), b"v") {
            Ok(_) => Put::Acked(self.client.leader().unwrap_or_default().to_string()),
            Err(Error::Indeterminate(_)) => Put::Unknown,
            Err(e) => Put::Failed(e.to_string()),
        }
    }
}

// ---- etcd -------------------------------------------------------------------

struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    client_ports: [u16; 3],
    peer_ports: [u16; 3],
    extra: Vec<String>,
    request_timeout: Duration,
    /// For status and move-leader requests.
    agent: ureq::Agent,
}

/// What etcd's `/v3/maintenance/status` says about one member.
struct EtcdStatus {
    member_id: String,
    leader: String,
    term: u64,
    applied: u64,
}

/// An HTTP exchange with one member.
enum Reply {
    /// The member answered (etcd's errors come as JSON too).
    Json(Value),
    /// The request never reached it (nothing listening): it did nothing.
    NotSent(String),
    /// Sent, but no complete answer (timeout, connection broken).
    Lost(String),
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Reply {
    let mut response = match agent.post(url).header("Content-Type", "application/json").send(body) {
        Ok(response) => response,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Reply::NotSent(format!("{url}: {e}"))
        }
        Err(e @ (ureq::Error::ConnectionFailed | ureq::Error::HostNotFound)) => {
            return Reply::NotSent(format!("{url}: {e}"))
        }
        Err(e) => return Reply::Lost(format!("{url}: {e}")),
    };
    match response.body_mut().read_to_string() {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(value) => Reply::Json(value),
            Err(e) => Reply::Lost(format!("{url}: not JSON ({e}): {text}")),
        },
        Err(e) => Reply::Lost(format!("{url}: {e}")),
    }
}

/// etcd writes its 64-bit numbers in JSON as strings.
fn json_u64(value: &Value) -> Option<u64> {
    value.as_str()?.parse().ok()
}

impl Etcd {
    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    fn status(&self, i: usize) -> Option<EtcdStatus> {
        let Reply::Json(reply) =
            post(&self.agent, &format!("{}/v3/maintenance/status", self.url(i)), "{}")
        else {
            return None;
        };
        Some(EtcdStatus {
            member_id: reply["header"]["member_id"].as_str()?.to_string(),
            leader: reply["leader"].as_str()?.to_string(),
            term: json_u64(&reply["raftTerm"])?,
            applied: json_u64(&reply["raftAppliedIndex"])?,
        })
    }

    fn statuses(&self) -> Option<Vec<EtcdStatus>> {
        (0..3).map(|i| self.status(i)).collect()
    }
}

impl Target for Etcd {
    fn name(&self) -> String {
        let version = Command::new(&self.bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.lines().next().map(|l| l.replace("etcd Version: ", "")));
        format!("etcd {}", version.unwrap_or_default())
    }

    /// The same command every time: with a data dir that holds a member,
    /// etcd ignores the `--initial-*` flags and rejoins.
    fn command(&self, i: usize, _first: bool) -> Command {
        let name = |i: usize| format!("member{}", i + 1);
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let cluster: Vec<String> = (0..3).map(|i| format!("{}={}", name(i), peer_url(i))).collect();
        let mut command = Command::new(&self.bin);
        command
            .arg("--name")
            .arg(name(i))
            .arg("--data-dir")
            .arg(self.dir.join(name(i)))
            .arg("--listen-client-urls")
            .arg(self.url(i))
            .arg("--advertise-client-urls")
            .arg(self.url(i))
            .arg("--listen-peer-urls")
            .arg(peer_url(i))
            .arg("--initial-advertise-peer-urls")
            .arg(peer_url(i))
            .arg("--initial-cluster")
            .arg(cluster.join(","))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("failover-time")
            .args(&self.extra);
        command
    }

    fn answers(&self, i: usize) -> bool {
        self.status(i).is_some()
    }

    fn leader(&self) -> Option<Leader> {
        let statuses = self.statuses()?;
        let leader = &statuses[0].leader;
        if statuses.iter().any(|s| &s.leader != leader) {
            return None;
        }
        let member = statuses.iter().position(|s| &s.member_id == leader)?;
        Some(Leader { member, mark: format!("term {}", statuses[member].term) })
    }

    fn settled(&self) -> bool {
        let Some(statuses) = self.statuses() else { return false };
        let applied = statuses.iter().map(|s| s.applied);
        let spread = applied.clone().max().unwrap_or(0) - applied.min().unwrap_or(0);
        self.leader().is_some() && spread < SETTLED_SPREAD
    }

    fn transfer(&self, leader: usize) -> Result<(), String> {
        let target = (0..3)
            .filter(|&i| i != leader)
            .find_map(|i| self.status(i))
            .ok_or("no follower answers")?;
        let url = format!("{}/v3/maintenance/transfer-leadership", self.url(leader));
        let body = json!({ "targetID": target.member_id }).to_string();
        match post(&self.agent, &url, &body) {
            Reply::Json(reply) if reply.get("error").is_none() => Ok(()),
            Reply::Json(reply) => Err(format!("{url}: {reply}")),
            Reply::NotSent(e) | Reply::Lost(e) => Err(e),
        }
    }

    /// etcd hands over, then ends by the signal itself, as Go programs do
    /// after their signal handlers ran.
    fn stopped_cleanly(&self, status: ExitStatus) -> bool {
        status.success() || status.signal() == Some(SIGTERM)
    }

    fn writer(&self) -> Result<Box<dyn Writer>, String> {
        Ok(Box::new(EtcdWriter {
            agent: http_agent(self.request_timeout),
            urls: (0..3).map(|i| format!("{}/v3/kv/put", self.url(i))).collect(),
            next: 0,
        }))
    }
}

/// Puts through etcd's JSON gateway, to one member at a time.
struct EtcdWriter {
    agent: ureq::Agent,
    urls: Vec<String>,
    /// The member to send to; it changes when one does not answer.
    next: usize,
}

/// etcd's answers that mean the put was not proposed: the member has no
/// leader to forward it to.
fn refused(error: &str) -> bool {
    error.contains("no leader") || error.contains("proposal dropped")
}

impl Writer for EtcdWriter {
    fn put(&mut self, key: &str) -> Put {
        let body = json!({ "key": BASE64.encode(key), "value": BASE64.encode("v") }).to_string();
        let deadline = Instant::now() + WRITE_BUDGET;
        let mut pause = RETRY_PAUSE_MIN_MS;
        let mut last = String::new();
        loop {
            for _ in 0..self.urls.len() {
                let url = &self.urls[self.next % self.urls.len()];
                match post(&self.agent, url, &body) {
                    Reply::Json(reply) => {
                        if let Some(term) = json_u64(&reply["header"]["raft_term"]) {
                            return Put::Acked(format!("term {term}"));
                        }
                        let error = reply["error"].as_str().unwrap_or_default();
                        if !refused(error) {
                            self.next += 1;
                            return Put::Unknown;
                        }
                        last = format!("{url}: {error}");
                    }
                    Reply::NotSent(e) => last = e,
                    Reply::Lost(_) => {
                        self.next += 1;
                        return Put::Unknown;
                    }
                }
                self.next += 1;
            }
            if Instant::now() >= deadline {
                return Put::Failed(format!("no member took the write ({last})"));
            }
            std::thread::sleep(Duration::from_millis(pause));
            pause = (pause * 2).min(RETRY_PAUSE_MAX_MS);
        }
    }
}

// ---- The members' processes -------------------------------------------------

struct Cluster {
    target: Box<dyn Target>,
    dir: PathBuf,
    children: [Option<Child>; 3],
}

impl Cluster {
    /// Start member `i`; its stderr goes to `member{i+1}.log`, appended
    /// across restarts.
    fn spawn(&mut self, i: usize, first: bool) -> Result<(), String> {
        let path = self.dir.join(format!("member{}.log", i + 1));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut command = self.target.command(i, first);
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Create the cluster: all three at once (etcd's members wait for
    /// each other before they answer).
    fn start(&mut self) -> Result<(), String> {
        for i in 0..3 {
            self.spawn(i, true)?;
        }
        for i in 0..3 {
            wait_until(&format!("member {} answers", i + 1), || {
                self.target.answers(i).then_some(())
            })?;
        }
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.spawn(i, false)?;
        wait_until(&format!("member {} answers again", i + 1), || {
            self.target.answers(i).then_some(())
        })
    }

    fn pid(&self, i: usize) -> Result<u32, String> {
        self.children[i].as_ref().map(Child::id).ok_or(format!("member {} is not running", i + 1))
    }

    /// Apply the fault to the leader, member `leader`.
    fn fault(&mut self, fault: Fault, leader: usize) -> Result<(), String> {
        match fault {
            Fault::Sigkill => signal("KILL", self.pid(leader)?),
            Fault::Sigterm => signal("TERM", self.pid(leader)?),
            Fault::Transfer => self.target.transfer(leader),
        }
    }

    /// Wait until member `i` has exited (SIGKILL it after [`DEADLINE`]).
    fn reap(&mut self, i: usize) -> Result<ExitStatus, String> {
        let Some(mut child) = self.children[i].take() else {
            return Err(format!("member {} is not running", i + 1));
        };
        let until = Instant::now() + DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("member {} did not exit within {DEADLINE:?}", i + 1));
                }
                Err(e) => return Err(format!("waiting for member {}: {e}", i + 1)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kill -NAME PID`, as a person would type it.
fn signal(name: &str, pid: u32) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{name} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid}: {status}"))
    }
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

// ---- The measurement --------------------------------------------------------

/// One acknowledged write: when, and the mark of the leader that took it.
struct Ack {
    at: Instant,
    mark: String,
}

/// What the writer thread shares with the measuring loop.
#[derive(Default)]
struct Shared {
    acks: Mutex<Vec<Ack>>,
    stop: AtomicBool,
    written: AtomicU64,
    unknown: AtomicU64,
}

fn spawn_writer(mut writer: Box<dyn Writer>, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !shared.stop.load(Ordering::Acquire) {
            i += 1;
            match writer.put(&format!("k{i}")) {
                Put::Acked(mark) => {
                    shared.written.fetch_add(1, Ordering::Relaxed);
                    shared.acks.lock().push(Ack { at: Instant::now(), mark });
                }
                Put::Unknown => {
                    shared.unknown.fetch_add(1, Ordering::Relaxed);
                }
                Put::Failed(e) => eprintln!("failover_time: write failed: {e}"),
            }
        }
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The wall clock as the members' logs print it (UTC, `HH:MM:SS.mmm`), so
/// that a fault can be found among their lines.
fn utc_time_of_day() -> String {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since_epoch.as_secs() % 86_400, since_epoch.subsec_millis());
    format!("{:02}:{:02}:{:02}.{millis:03}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One fault's figures.
struct Run {
    failover_ms: f64,
    gap_ms: f64,
}

/// Apply the fault once and measure; the cluster is settled before and
/// after.
fn measure(
    cluster: &mut Cluster,
    shared: &Shared,
    fault: Fault,
    number: usize,
) -> Result<Run, String> {
    wait_until("the members to settle", || cluster.target.settled().then_some(()))?;
    shared.acks.lock().clear();
    std::thread::sleep(GAP_MARGIN);
    let leader = wait_until("a leader", || cluster.target.leader())?;

    let (t0, wall) = (Instant::now(), utc_time_of_day());
    cluster.fault(fault, leader.member)?;
    let t1 = wait_until("a write acknowledged by a new leader", || {
        let acks = shared.acks.lock();
        acks.iter().find(|a| a.at > t0 && a.mark != leader.mark).map(|a| a.at)
    })?;
    std::thread::sleep(GAP_MARGIN);
    let gap = {
        let acks = shared.acks.lock();
        let around: Vec<Instant> = acks
            .iter()
            .map(|a| a.at)
            .filter(|&at| at + GAP_MARGIN >= t0 && at <= t1 + GAP_MARGIN)
            .collect();
        around.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    };

    let stopped = match fault {
        Fault::Sigkill | Fault::Sigterm => {
            let status = cluster.reap(leader.member)?;
            cluster.restart(leader.member)?;
            match (fault, cluster.target.stopped_cleanly(status)) {
                (Fault::Sigterm, false) => format!(" (it exited with {status})"),
                _ => String::new(),
            }
        }
        Fault::Transfer => String::new(),
    };
    let run = Run { failover_ms: ms(t1 - t0), gap_ms: ms(gap) };
    println!(
        "run {number:>2}: {} member {} (led as {}) at {wall}{stopped}; first write acknowledged \
         by the new leader after {:.0} ms; longest gap between acknowledged writes {:.0} ms",
        fault.name(),
        leader.member + 1,
        leader.mark,
        run.failover_ms,
        run.gap_ms
    );
    Ok(run)
}

/// "median M ms, min A ms, max B ms" (the median of an even count is the
/// mean of the middle two).
fn summary(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    format!("median {median:.0} ms, min {:.0} ms, max {:.0} ms", v[0], v[n - 1])
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("failover_time: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let temp;
    let dir: &Path = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| e.to_string())?;
            temp.path()
        }
    };
    let p = args.port;
    let target: Box<dyn Target> = match args.target {
        TargetKind::Kvstore => Box::new(Kvstore {
            bin: args.bin.clone().unwrap_or_else(|| "./build/kvstore".into()),
            dir: dir.to_path_buf(),
            ports: [p, p + 1, p + 2],
            extra: args.extra.clone(),
        }),
        TargetKind::Etcd => Box::new(Etcd {
            bin: args.bin.clone().unwrap_or_else(|| "etcd".into()),
            dir: dir.to_path_buf(),
            client_ports: [p, p + 1, p + 2],
            peer_ports: [p + 3, p + 4, p + 5],
            extra: args.extra.clone(),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            agent: http_agent(Duration::from_secs(1)),
        }),
    };
    let name = target.name();
    let mut cluster = Cluster { target, dir: dir.to_path_buf(), children: [None, None, None] };
    cluster.start()?;
    println!(
        "{name}: 3 members on ports {p}-{}, fault {}, {} runs{}",
        p + 2,
        args.fault.name(),
        args.runs,
        args.dir.as_ref().map(|d| format!(", logs in {}", d.display())).unwrap_or_default()
    );

    let shared = Arc::new(Shared::default());
    let writer = spawn_writer(cluster.target.writer()?, Arc::clone(&shared));
    let mut runs = Vec::new();
    let mut failure = None;
    for number in 1..=args.runs {
        match measure(&mut cluster, &shared, args.fault, number) {
            Ok(run) => runs.push(run),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Release);
    let _ = writer.join();
    if let Some(e) = failure {
        return Err(e);
    }

    let failover: Vec<f64> = runs.iter().map(|r| r.failover_ms).collect();
    let gaps: Vec<f64> = runs.iter().map(|r| r.gap_ms).collect();
    let what = format!("{name}, {}, {} runs", args.fault.name(), runs.len());
    println!("failover time ({what}): {}", summary(&failover));
    println!("longest gap ({what}): {}", summary(&gaps));
    println!(
        "writes: {} acknowledged, {} with an unknown outcome",
        shared.written.load(Ordering::Relaxed),
        shared.unknown.load(Ordering::Relaxed)
    );
    Ok(())
}
