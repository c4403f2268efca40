//! Linearizability under faults, in the manner of Jepsen: several clients
//! run puts and linearizable gets against a 3-node `--failover auto`
//! cluster while a seeded nemesis kills and restarts nodes, freezes them
//! (SIGSTOP/SIGCONT) and cuts and resets their links; afterwards the
//! recorded history is checked.
//!
//! ## Why a history, not assertions on the fly
//!
//! Under faults a client cannot tell what the right answer to one request
//! is: a put whose connection broke may or may not be in the log, a read
//! that overlaps a put may see either value, and the leader may change
//! between two requests. What *can* be checked is the whole: every put and
//! get, with the moment it was invoked and the moment it returned, must fit
//! one sequential order of a plain register per key
//! (`jepsen/linearizability.rs`). A stale read from a deposed leader, an
//! acknowledged write that vanished in a failover, a failed write that was
//! applied after all, all break that order and are found.
//!
//! Puts use write concern `majority`: an OK means a majority has the record
//! and no election can lose it. A put whose outcome is unknown
//! ([`Error::Indeterminate`], or any error but "no leader found") counts as
//! possibly applied: the checker may place it anywhere after its invocation,
//! or nowhere. A put that found no leader was never accepted by any node, so
//! it is left out, and a read that returns its value is a violation. Reads
//! use consistency `linearizable` (ReadIndex); a read that fails has no
//! effect and is left out.
//!
//! ## What else is checked
//!
//! - **One leader per term**: every `[failover] leader of term N` line of
//!   every node's log, across restarts; no term may have two.
//! - **No acknowledged write is lost**: after the nemesis stops and every
//!   fault is healed, a final linearizable read of each key must return the
//!   key's last acknowledged value or something written after it began (the
//!   checker includes these reads too; this check only says it plainly).
//! - **Convergence**: every node reaches the same last LSN and digest.
//!
//! ## Wiring
//!
//! `KVSTORE_JEPSEN_NET` chooses how the nodes are placed and how the
//! network faults are made ([`Net`]); the clients, the history, the checker
//! and the checks are the same either way.
//!
//! - `proxy` (the default): each node listens on 127.0.0.1 behind a fault
//!   proxy and advertises the proxy's address, so every link between
//!   members passes through the proxy of the node it connects to (as in
//!   tests/failover.rs). A partition blackholes the proxy; a reset cuts
//!   its connections mid-frame.
//! - `netns` (`make jepsen-netns`, root only): each node runs in a Linux
//!   network namespace of its own (`ip netns exec kvj-n1 kvstore --host
//!   10.77.0.1 ...`), on its own address, linked to the others by a veth
//!   pair into a bridge in the root namespace, where the test and its
//!   clients run. A partition drops the node's packets to and from the
//!   other members with nftables; a reset answers them with TCP resets; a
//!   node's link can also go down (`ip link set kvj-n1h down`: clients lose
//!   it too) or turn lossy, and slow where the kernel has netem. Every link
//!   loses a few packets all along. `jepsen/netns.rs` has the layout and
//!   the commands. Without root, `ip`, `ip netns add` or nftables the test
//!   says why in one line and passes without running.
//!
//! In both, clients connect to the nodes directly (not through a proxy,
//! and past a partition), so a node cut off from its peers still hears
//! from clients — exactly the case where a deposed leader could answer
//! stale reads.
//!
//! `make test` runs it for 20 s with proxies; `make jepsen` for 300 s,
//! `make jepsen-netns` for 120 s in namespaces (`KVSTORE_JEPSEN_SECS`).
//! Every run prints `KVSTORE_SEED=...`; setting it (with the same
//! `KVSTORE_JEPSEN_NET`) replays the same fault schedule and the same
//! client operations (the timing, and so the interleaving, differs from
//! run to run).
//!
//! `KVSTORE_JEPSEN_READS=leader` (or `any`) makes the clients read with
//! that consistency instead of `linearizable`, to see the checker at work:
//! a leader answering from its own map can return a write that is not
//! committed yet and is then lost in a failover, or miss one a newer
//! leader already acknowledged, and a run of 20 s usually shows it.

mod common;
#[path = "jepsen/linearizability.rs"]
mod linearizability;
#[path = "jepsen/nemesis.rs"]
mod nemesis;
#[path = "jepsen/netns.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proxy::{Fault, Proxy};
use common::*;
use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::error::Error;
use kvstore::protocol::Consistency;
use kvstore::status::StatusReport;
use linearizability::{Call, Op, Verdict};
use nemesis::{FaultKind, Menu, Rng, Step, Target};
use netns::{Lab, LinkFault};
use parking_lot::Mutex;

/// Election timeout `T` and heartbeat: the defaults' shape, faster, so a
/// short run sees many failovers.
const ELECTION_MS: u64 = 300;
const HEARTBEAT_MS: u64 = 50;
/// How long a `majority` put waits for its ACKs before ERROR 5.
const WRITE_TIMEOUT_MS: u64 = 1_000;
const NODES: usize = 3;
const CLIENTS: usize = 4;
const KEYS: usize = 4;
/// Length of the run inside `make test`; `KVSTORE_JEPSEN_SECS` overrides.
const SECS_DEFAULT: u64 = 20;
/// How long a client keeps looking for a leader before an operation fails.
const CLIENT_BUDGET: Duration = Duration::from_secs(2);
/// How long the cluster may take to settle once the faults stop.
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn puts_and_linearizable_reads_stay_linearizable_under_crashes_pauses_and_partitions() {
    let seed = seed();
    let secs = std::env::var("KVSTORE_JEPSEN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SECS_DEFAULT);
    let reads = std::env::var("KVSTORE_JEPSEN_READS")
        .map(|r| Consistency::parse(&r).expect("KVSTORE_JEPSEN_READS: leader, linearizable or any"))
        .unwrap_or(Consistency::Linearizable);
    let menu = match std::env::var("KVSTORE_JEPSEN_NET").as_deref() {
        Err(_) | Ok("proxy") => Menu::Proxy,
        Ok("netns") => Menu::Netns,
        Ok(other) => panic!("KVSTORE_JEPSEN_NET={other}: proxy or netns"),
    };
    let lab = match menu {
        Menu::Proxy => None,
        Menu::Netns => match Lab::create(NODES) {
            Ok(lab) => Some(lab),
            Err(why) => {
                eprintln!("jepsen: SKIPPED, nothing was checked: {why}");
                return;
            }
        },
    };
    eprintln!(
        "jepsen: KVSTORE_SEED={seed} ({secs} s, {CLIENTS} clients, {KEYS} keys, {} reads, net {})",
        reads.name(),
        menu.name()
    );
    let dirs = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::start(&dirs, lab));
    cluster.wait_ready();

    // ---- the run: clients and the nemesis, until `until` ----
    let clock = Clock::start();
    let until = clock.epoch + Duration::from_secs(secs);
    let (done, finished) = mpsc::channel();
    // Declared after `cluster`, so dropped before it: on a panic the
    // clients stop before the nodes and their network go away.
    let mut clients = Clients { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() };
    for id in 0..CLIENTS {
        let (members, done) = (cluster.addresses.clone(), done.clone());
        let stop = Arc::clone(&clients.stop);
        clients.threads.push(std::thread::spawn(move || {
            let rng = Rng::fork(seed, id as u64 + 1);
            let _ = done.send(run_client(id, &members, rng, reads, until, &stop, clock));
        }));
    }
    let nemesis = {
        let cluster = Arc::clone(&cluster);
        std::thread::spawn(move || run_nemesis(&cluster, seed, menu, until, clock))
    };
    let faults = match nemesis.join() {
        Ok(faults) => faults,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut runs: Vec<ClientRun> = (0..CLIENTS)
        .map(|_| {
            finished
                .recv_timeout(SETTLE)
                .expect("a client is still waiting on a request a minute after the faults ended")
        })
        .collect();
    runs.sort_by_key(|r| r.id);

    // ---- after the faults: settle, then the final reads ----
    let (last_lsn, digest) = cluster.wait_converged(SETTLE);
    let final_reads = final_reads(&cluster.addresses, clock);

    // ---- checks ----
    let leaders = cluster.leaders_by_term();
    let two_leaders: Vec<String> = leaders
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, nodes)| format!("term {term}: {nodes:?}"))
        .collect();

    let mut history: Vec<Vec<Record>> = (0..KEYS).map(|_| Vec::new()).collect();
    for record in runs.iter().flat_map(|r| r.records.iter()).chain(&final_reads) {
        let mut record = record.clone();
        record.node = record.node.map(|a| cluster.names.get(&a).cloned().unwrap_or(a));
        history[record.key].push(record);
    }
    let lost = lost_writes(&history);

    let check_started = Instant::now();
    let verdicts: Vec<Verdict> = history
        .iter()
        .map(|records| {
            let ops: Vec<Op<String>> = records.iter().map(|r| r.op.clone()).collect();
            linearizability::check(&ops)
        })
        .collect();
    let check_time = check_started.elapsed();

    // ---- the summary, then the verdicts ----
    let count = |f: fn(&ClientRun) -> usize| runs.iter().map(f).sum::<usize>();
    let failovers = leaders.len().saturating_sub(1);
    let states: usize = verdicts
        .iter()
        .map(|v| match v {
            Verdict::Linearizable { states } | Verdict::Unknown { states } => *states,
            Verdict::Violation { .. } => 0,
        })
        .sum();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, n) in runs.iter().flat_map(|r| &r.errors) {
        *errors.entry(kind.clone()).or_default() += n;
    }
    eprintln!("jepsen: faults:\n  {}", faults.join("\n  "));
    eprintln!("jepsen: terms and their leaders: {leaders:?}");
    eprintln!("jepsen: errors by kind: {errors:?}");
    eprintln!(
        "jepsen: KVSTORE_SEED={seed} net={} secs={secs} ops={} (puts ok={} indeterminate={} \
         failed={}; reads ok={} failed={}) faults={} failovers={failovers} last_lsn={last_lsn} \
         digest={digest} check={} ms ({states} states)",
        menu.name(),
        count(|r| r.records.len()),
        count(|r| r.puts_ok),
        count(|r| r.puts_unknown),
        count(|r| r.puts_failed.len()),
        count(|r| r.reads_ok),
        count(|r| r.reads_failed),
        faults.len(),
        check_time.as_millis(),
    );

    let failed_puts: HashMap<&str, &str> = runs
        .iter()
        .flat_map(|r| r.puts_failed.iter().map(|(v, e)| (v.as_str(), e.as_str())))
        .collect();
    let mut problems = Vec::new();
    for (key, verdict) in verdicts.iter().enumerate() {
        match verdict {
            Verdict::Linearizable { .. } => {}
            Verdict::Unknown { states } => problems.push(format!(
                "key k{key}: the checker gave up after {states} states (no verdict)"
            )),
            Verdict::Violation { why, ops } => {
                problems.push(explain_violation(key, why, ops, &history[key], &failed_puts, clock))
            }
        }
    }
    if !two_leaders.is_empty() {
        problems.push(format!("two leaders in one term: {}", two_leaders.join("; ")));
    }
    problems.extend(lost);
    if !problems.is_empty() {
        let saved = save_evidence(seed, &cluster, &history, &faults, clock);
        panic!(
            "KVSTORE_SEED={seed}: {} problem(s) (history and logs in {}):\n\n{}",
            problems.len(),
            saved.display(),
            problems.join("\n\n")
        );
    }
    assert!(count(|r| r.puts_ok) > 0, "no put succeeded: the cluster never served");
    assert!(count(|r| r.reads_ok) > 0, "no linearizable read succeeded");
}

/// `KVSTORE_SEED`, or one from the clock.
fn seed() -> u64 {
    std::env::var("KVSTORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64)
}

/// The run's time origin: operation times are nanoseconds after `epoch`,
/// and `wall` says when that was, to line them up with the nodes' logs.
#[derive(Clone, Copy)]
struct Clock {
    epoch: Instant,
    wall: SystemTime,
}

impl Clock {
    fn start() -> Clock {
        Clock { epoch: Instant::now(), wall: SystemTime::now() }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn secs(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// `t` as the time of day in UTC, as the nodes' logs print it.
    fn utc(&self, t: u64) -> String {
        let at = self.wall.duration_since(UNIX_EPOCH).unwrap() + Duration::from_nanos(t);
        let s = at.as_secs() % 86_400;
        format!("{:02}:{:02}:{:02}.{:06}", s / 3600, s / 60 % 60, s % 60, at.subsec_micros())
    }
}

/// The client threads; dropping this stops them and waits for them.
struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let until = Instant::now() + SETTLE;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---- the cluster ------------------------------------------------------------

/// How the nodes are placed and how network faults are made.
enum Net {
    /// On 127.0.0.1, each behind a fault proxy (tests/common/proxy.rs).
    Proxy(Vec<Proxy>),
    /// Each in a network namespace of its own (jepsen/netns.rs).
    Netns(Lab),
}

struct Cluster {
    /// First, so the nodes are stopped before their network is removed.
    nodes: Vec<Mutex<Node>>,
    net: Net,
    /// Flags for a restart: no role, so the node takes the one it stored.
    restart_args: Vec<Vec<String>>,
    /// Where clients reach each node: directly, not through a proxy.
    addresses: Vec<String>,
    /// Node name by any address it is known by (its own or its proxy's).
    names: HashMap<String, String>,
}

impl Cluster {
    /// n1 leads term 1 with n2 and n3 as followers: behind proxies, or in
    /// the namespaces of `lab`.
    fn start(dirs: &tempfile::TempDir, lab: Option<Lab>) -> Cluster {
        let flags = [
            "--failover=auto".to_string(),
            format!("--election-timeout-ms={ELECTION_MS}"),
            format!("--heartbeat-interval-ms={HEARTBEAT_MS}"),
            "--write-concern=majority".to_string(),
            format!("--write-timeout-ms={WRITE_TIMEOUT_MS}"),
        ];
        // The port each node listens on, where the others know it, and the
        // flag that places it there.
        let (net, ports, members, placement): (Net, Vec<u16>, Vec<String>, Vec<String>) = match lab
        {
            None => {
                let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
                let proxies: Vec<Proxy> = ports
                    .iter()
                    .map(|&p| Proxy::start(SocketAddr::from(([127, 0, 0, 1], p))))
                    .collect();
                let members = proxies.iter().map(|p| p.port().to_string()).collect();
                let placement =
                    proxies.iter().map(|p| format!("--advertise={}", p.port())).collect();
                (Net::Proxy(proxies), ports, members, placement)
            }
            Some(lab) => {
                let members = (0..NODES).map(|i| lab.address(i)).collect();
                let placement = (0..NODES).map(|i| format!("--host={}", lab.ip(i))).collect();
                (Net::Netns(lab), vec![netns::PORT; NODES], members, placement)
            }
        };
        let restart_args: Vec<Vec<String>> = placement
            .iter()
            .map(|place| flags.iter().cloned().chain([place.clone()]).collect())
            .collect();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let mut args = match i {
                0 => {
                    vec!["--role=leader".to_string(), format!("--peers={}", members[1..].join(","))]
                }
                _ => vec!["--role=follower".to_string(), format!("--leader={}", members[0])],
            };
            args.extend(restart_args[i].iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let name = format!("n{}", i + 1);
            let dir = dirs.path().join(&name);
            nodes.push(match &net {
                Net::Proxy(_) => Node::start_on(&name, ports[i], &dir, &args),
                Net::Netns(lab) => {
                    Node::start_wrapped(&name, &lab.exec_prefix(i), ports[i], &dir, &args)
                }
            });
        }
        let addresses: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut names = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            names.insert(node.addr.to_string(), node.name.clone());
            if let Net::Proxy(proxies) = &net {
                names.insert(proxies[i].addr.to_string(), node.name.clone());
            }
        }
        if let Net::Netns(lab) = &net {
            for line in lab.describe() {
                eprintln!("jepsen: {line}");
            }
        }
        let nodes = nodes.into_iter().map(Mutex::new).collect();
        Cluster { nodes, net, restart_args, addresses, names }
    }

    /// Wait until a write commits and every node has it.
    fn wait_ready(&self) {
        let mut client = ClusterClient::new(&self.addresses, DEADLINE).unwrap();
        let lsn = client.put(b"ready", b"1").expect("the first leader takes a write");
        eventually("every node has the first write", DEADLINE, || {
            self.addresses
                .iter()
                .all(|a| status_of(a).is_some_and(|s| s.last_lsn >= lsn))
                .then_some(())
        });
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].lock().name.clone()
    }

    /// The node that says it leads the newest term, if any answers.
    fn current_leader(&self) -> Option<usize> {
        (0..NODES)
            .filter_map(|i| status_of(&self.addresses[i]).map(|s| (i, s)))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    /// Run one step of the schedule: strike, hold, heal. Returns what it did.
    fn inject(&self, step: &Step) -> String {
        let (i, whom) = match step.target {
            Target::Node(i) => (i, self.name(i)),
            Target::Leader { fallback } => match self.current_leader() {
                Some(i) => (i, format!("{} (the leader)", self.name(i))),
                None => (fallback, format!("{} (no leader answered)", self.name(fallback))),
            },
        };
        match (step.kind, &self.net) {
            (FaultKind::Kill, _) => {
                self.nodes[i].lock().kill();
                std::thread::sleep(step.hold);
                let args: Vec<&str> = self.restart_args[i].iter().map(String::as_str).collect();
                self.nodes[i].lock().restart_with(&args);
            }
            (FaultKind::Pause, _) => {
                self.nodes[i].lock().signal("STOP");
                std::thread::sleep(step.hold);
                self.nodes[i].lock().signal("CONT");
            }
            (FaultKind::Partition, Net::Proxy(proxies)) => {
                hold_link(&proxies[i], Fault::Blackhole, step.hold)
            }
            (FaultKind::Reset, Net::Proxy(proxies)) => {
                hold_link(&proxies[i], Fault::CutMidFrame, step.hold)
            }
            (FaultKind::Isolate | FaultKind::Degrade { .. }, Net::Proxy(_)) => {
                unreachable!("the proxy menu has no {:?}", step.kind)
            }
            (FaultKind::Isolate, Net::Netns(lab)) => {
                lab.set_link(i, false);
                std::thread::sleep(step.hold);
                lab.set_link(i, true);
            }
            (FaultKind::Partition, Net::Netns(lab)) => {
                hold_fault(lab, i, LinkFault::Partition, step.hold)
            }
            (FaultKind::Reset, Net::Netns(lab)) => hold_fault(lab, i, LinkFault::Reset, step.hold),
            (FaultKind::Degrade { loss_pct, delay_ms }, Net::Netns(lab)) => {
                hold_fault(lab, i, LinkFault::Degrade { loss_pct, delay_ms }, step.hold);
                if !lab.has_netem() {
                    let hold = step.hold.as_millis();
                    return format!(
                        "{whom}: link loses {loss_pct}% for {hold} ms (no netem: the {delay_ms} \
                         ms delay left out)"
                    );
                }
            }
        }
        format!("{whom}: {step}")
    }

    /// Wait until every node reports the same last LSN and digest.
    fn wait_converged(&self, deadline: Duration) -> (u64, String) {
        let until = Instant::now() + deadline;
        loop {
            let reports: Vec<Option<StatusReport>> =
                self.addresses.iter().map(|a| status_of(a)).collect();
            if let Some(first) = reports[0].as_ref() {
                if reports.iter().all(|r| {
                    r.as_ref()
                        .is_some_and(|r| r.last_lsn == first.last_lsn && r.digest == first.digest)
                }) {
                    return (first.last_lsn, first.digest.clone());
                }
            }
            if Instant::now() > until {
                let shown: Vec<String> = reports
                    .iter()
                    .enumerate()
                    .map(|(i, r)| match r {
                        Some(r) => format!(
                            "{}: {} of term {}, last LSN {}, commit LSN {}, digest {}",
                            self.name(i),
                            r.role,
                            r.term,
                            r.last_lsn,
                            r.commit_lsn,
                            r.digest
                        ),
                        None => format!("{}: no status", self.name(i)),
                    })
                    .collect();
                panic!(
                    "the nodes did not converge within {deadline:?} of the last fault:\n  {}",
                    shown.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every term some node says it led, from all the nodes' logs.
    fn leaders_by_term(&self) -> BTreeMap<u64, BTreeSet<String>> {
        let mut leaders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for node in &self.nodes {
            let node = node.lock();
            for line in node.log_text().lines() {
                let Some(rest) = line.split("[failover] leader of term ").nth(1) else { continue };
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let term = digits.parse().unwrap_or_else(|_| panic!("term in {line:?}"));
                leaders.entry(term).or_default().insert(node.name.clone());
            }
        }
        leaders
    }
}

fn hold_link(proxy: &Proxy, fault: Fault, hold: Duration) {
    proxy.set(fault);
    std::thread::sleep(hold);
    proxy.set(Fault::None);
}

fn hold_fault(lab: &Lab, node: usize, fault: LinkFault, hold: Duration) {
    lab.set_fault(node, fault);
    std::thread::sleep(hold);
    lab.set_fault(node, LinkFault::None);
}

/// A node's status, or None if it does not answer within a second.
fn status_of(address: &str) -> Option<StatusReport> {
    let mut client = Client::connect(address).ok()?;
    client.set_timeout(Some(Duration::from_secs(1))).ok()?;
    client.status().ok()
}

/// Run the seed's schedule until `until`; every fault is healed on return.
fn run_nemesis(
    cluster: &Cluster,
    seed: u64,
    menu: Menu,
    until: Instant,
    clock: Clock,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut done = Vec::new();
    while Instant::now() < until {
        let step = nemesis::next_step(&mut rng, NODES, ELECTION_MS, menu);
        let (at, utc) = (clock.secs(), clock.utc(clock.now()));
        let what = cluster.inject(&step);
        done.push(format!("{at:7.3}s ({utc} UTC)  {what}"));
        std::thread::sleep(step.rest);
    }
    done
}

// ---- the clients ------------------------------------------------------------

/// One operation of the history, on key `k{key}`.
#[derive(Clone)]
struct Record {
    key: usize,
    op: Op<String>,
    /// The member that answered, for the report.
    node: Option<String>,
}

struct ClientRun {
    id: usize,
    records: Vec<Record>,
    puts_ok: usize,
    puts_unknown: usize,
    /// Puts no node accepted: value and error.
    puts_failed: Vec<(String, String)>,
    reads_ok: usize,
    reads_failed: usize,
    errors: BTreeMap<String, usize>,
}

/// Random puts (unique values) and gets (`linearizable` unless told
/// otherwise) on `KEYS` keys, until `until` or `stop`.
fn run_client(
    id: usize,
    members: &[String],
    mut rng: Rng,
    reads: Consistency,
    until: Instant,
    stop: &AtomicBool,
    clock: Clock,
) -> ClientRun {
    let mut run = ClientRun {
        id,
        records: Vec::new(),
        puts_ok: 0,
        puts_unknown: 0,
        puts_failed: Vec::new(),
        reads_ok: 0,
        reads_failed: 0,
        errors: BTreeMap::new(),
    };
    let mut client = ClusterClient::new(members, CLIENT_BUDGET).unwrap();
    let mut seq = 0;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let key = rng.below(KEYS as u64) as usize;
        let name = format!("k{key}");
        let call = clock.now();
        if rng.below(2) == 0 {
            seq += 1;
            let value = format!("{id}-{seq}");
            let outcome = client.put(name.as_bytes(), value.as_bytes());
            let ret = clock.now();
            let ret = match outcome {
                Ok(_) => {
                    run.puts_ok += 1;
                    Some(ret)
                }
                Err(Error::NoLeader(why)) => {
                    // Every member refused or was unreachable: not applied.
                    *run.errors.entry("put: NoLeader".into()).or_default() += 1;
                    run.puts_failed.push((value, why));
                    continue;
                }
                Err(e) => {
                    *run.errors.entry(format!("put: {}", error_kind(&e))).or_default() += 1;
                    run.puts_unknown += 1;
                    None
                }
            };
            let node = ret.and_then(|_| client.leader().map(String::from));
            run.records.push(Record {
                key,
                op: Op { client: id, call, ret, call_kind: Call::Write(value) },
                node,
            });
        } else {
            match client.read(name.as_bytes(), reads, 0) {
                Ok(value) => {
                    let ret = clock.now();
                    run.reads_ok += 1;
                    let value = value.map(|v| String::from_utf8(v).expect("values are text"));
                    run.records.push(Record {
                        key,
                        op: Op { client: id, call, ret: Some(ret), call_kind: Call::Read(value) },
                        node: client.leader().map(String::from),
                    });
                }
                Err(e) => {
                    *run.errors.entry(format!("read: {}", error_kind(&e))).or_default() += 1;
                    run.reads_failed += 1;
                }
            }
        }
    }
    run
}

/// The error's variant (and server code), for the summary.
fn error_kind(e: &Error) -> String {
    match e {
        Error::Server { code, .. } => format!("Server({code:?})"),
        other => format!("{other:?}").split(['(', ' ', '{']).next().unwrap_or("?").to_string(),
    }
}

/// One linearizable read of every key once the cluster has settled, by a
/// client of its own (id `CLIENTS`).
fn final_reads(members: &[String], clock: Clock) -> Vec<Record> {
    let mut client = ClusterClient::new(members, CLIENT_BUDGET).unwrap();
    (0..KEYS)
        .map(|key| {
            let name = format!("k{key}");
            eventually(&format!("a final linearizable read of {name}"), DEADLINE, || {
                let call = clock.now();
                let value = client.read(name.as_bytes(), Consistency::Linearizable, 0).ok()?;
                let value = value.map(|v| String::from_utf8(v).expect("values are text"));
                let op = Op {
                    client: CLIENTS,
                    call,
                    ret: Some(clock.now()),
                    call_kind: Call::Read(value),
                };
                Some(Record { key, op, node: client.leader().map(String::from) })
            })
        })
        .collect()
}

// ---- checks and reports -------------------------------------------------------

/// Acknowledged puts that the final read shows were lost: the final read
/// returned nothing, or a value whose put returned before theirs began.
fn lost_writes(history: &[Vec<Record>]) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, records) in history.iter().enumerate() {
        let Some(last) = records.iter().rev().find(|r| r.op.client == CLIENTS) else { continue };
        let Call::Read(seen) = &last.op.call_kind else { continue };
        let seen_put = seen.as_ref().and_then(|v| {
            records.iter().find(|r| matches!(&r.op.call_kind, Call::Write(w) if w == v))
        });
        for acked in records.iter().filter(|r| matches!(r.op.call_kind, Call::Write(_))) {
            let Some(_) = acked.op.ret else { continue };
            let overwritten_by_older = match (seen, seen_put) {
                (None, _) => true,
                (Some(_), Some(put)) => put.op.ret.is_some_and(|r| r < acked.op.call),
                (Some(_), None) => false, // the checker reports a read of an unknown value
            };
            if overwritten_by_older {
                lost.push(format!(
                    "key k{key}: acknowledged write lost: \"{}\" (answered by {}), but the final \
                     read returned {:?}",
                    acked.op,
                    acked.node.as_deref().unwrap_or("?"),
                    seen
                ));
            }
        }
    }
    lost
}

/// A violation, reduced to a small witness, with times lined up with the
/// nodes' logs and who answered each operation.
fn explain_violation(
    key: usize,
    why: &str,
    ops: &[usize],
    records: &[Record],
    failed_puts: &HashMap<&str, &str>,
    clock: Clock,
) -> String {
    let history: Vec<Op<String>> = records.iter().map(|r| r.op.clone()).collect();
    let witness = linearizability::reduce(&history, Duration::from_secs(30));
    let mut text = format!("key k{key}: not linearizable: {why}\n");
    let mut show = |title: &str, indices: &[usize]| {
        let _ = writeln!(text, "  {title}:");
        for &i in indices {
            let r = &records[i];
            let ret = r.op.ret.map_or("?".to_string(), |t| clock.utc(t));
            let _ = writeln!(
                text,
                "    #{i:<5} {}  (UTC {} .. {}, answered by {})",
                r.op,
                clock.utc(r.op.call),
                ret,
                r.node.as_deref().unwrap_or("-")
            );
        }
    };
    show(&format!("smallest sub-history that still fails ({} ops)", witness.len()), &witness);
    show("operations around the point the search got stuck", ops);
    for r in records {
        if let Call::Read(Some(v)) = &r.op.call_kind {
            if let Some(e) = failed_puts.get(v.as_str()) {
                let _ = writeln!(text, "  {v} was written by a put that failed: {e}");
            }
        }
    }
    text
}

/// Write the whole history, the schedule and every node's log next to the
/// build, for a violation to be studied; return the directory.
fn save_evidence(
    seed: u64,
    cluster: &Cluster,
    history: &[Vec<Record>],
    faults: &[String],
    clock: Clock,
) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jepsen-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!("KVSTORE_SEED={seed}; times in seconds after {}\n", clock.utc(0));
    for (key, records) in history.iter().enumerate() {
        let _ = writeln!(text, "\n== key k{key} ==");
        for (i, r) in records.iter().enumerate() {
            let _ = writeln!(text, "#{i:<5} {}  by {}", r.op, r.node.as_deref().unwrap_or("-"));
        }
    }
    std::fs::write(dir.join("history.txt"), text).unwrap();
    std::fs::write(dir.join("faults.txt"), faults.join("\n")).unwrap();
    for node in &cluster.nodes {
        let node = node.lock();
        std::fs::write(dir.join(format!("{}.log", node.name)), node.log_text()).unwrap();
    }
    let names: Vec<String> =
        cluster.names.iter().map(|(address, name)| format!("{address} {name}")).collect();
    std::fs::write(dir.join("addresses.txt"), names.join("\n")).unwrap();
    dir
}
