//! The closest this machine gets to three hosts: every node in a Linux
//! network namespace of its own, on its own address, its link to the others
//! a veth pair into a bridge; faults are made by the kernel.
//!
//! ## Why, when there is a fault proxy
//!
//! The proxy (tests/common/proxy.rs) is a user-space relay on 127.0.0.1:
//! a "partition" is the relay no longer copying bytes, and TCP on either
//! side never notices anything but silence. Here the packets themselves are
//! lost, refused or held: TCP retransmits with backoff, a connection to a
//! node whose link is down hangs in SYN_SENT, a lossy link stalls a stream
//! behind one missing segment, and the nodes bind and advertise real
//! addresses rather than ports of one loopback. None of that changes what
//! the cluster must guarantee, only how the faults reach it.
//!
//! ## The layout
//!
//! ```text
//!   root namespace: the test, its clients, bridge kvj-br 10.77.0.254/24
//!     ├─ kvj-n1h ══ eth0 10.77.0.1/24  namespace kvj-n1: node n1 on port 9001
//!     ├─ kvj-n2h ══ eth0 10.77.0.2/24  namespace kvj-n2: node n2 on port 9001
//!     └─ kvj-n3h ══ eth0 10.77.0.3/24  namespace kvj-n3: node n3 on port 9001
//! ```
//!
//! A node is started as `ip netns exec kvj-nX kvstore --host 10.77.0.X ...`
//! (`ip` execs kvstore, so the signals of the nemesis reach it), binds its
//! own address and is known to the others by it. The clients, in the root
//! namespace, reach the nodes over the bridge. The namespaces have no
//! default route, so nothing in them reaches past the bridge; and while
//! the lab exists the root namespace holds `unreachable 10.77.0.0/24
//! metric 4242`, under the bridge's own route, so that a client still
//! running when the bridge is gone gets an error instead of sending to the
//! machine's default gateway.
//!
//! ## How faults are made
//!
//! - **Link down** (`Isolate`): `ip link set kvj-nXh down` on the root
//!   side. The node's packets go nowhere and nobody's reach it, clients'
//!   neither, without an error on either side.
//! - **nftables** in each node's namespace: a table `inet kvj` whose
//!   `input` and `output` chains are rewritten whole at every change (one
//!   `nft -f -` transaction), so a fault is healed by writing the chains
//!   without it. A *partition* drops every packet to and from the other
//!   members (clients still get through: the case where a deposed leader
//!   could answer stale reads); a *reset* answers them with TCP resets both
//!   ways; *loss* drops packets at random (`numgen random`). Every link
//!   loses [`LOSS_PERMILLE`] per mille of its packets each way all along,
//!   and a `Degrade` fault adds more.
//! - **netem** (`tc qdisc ... netem delay`) on both ends of each link, for
//!   a small delay all along and a larger one under `Degrade`, where the
//!   kernel has it. Many kernels built for virtual machines leave
//!   `CONFIG_NET_SCH_NETEM` out (tc then says "Specified qdisc kind is
//!   unknown"); the lab finds out at start, says so in one line, and runs
//!   without delays. Loss does not need netem: nftables makes it.
//!
//! ## What it needs, and otherwise
//!
//! Root, `ip` (iproute2), a kernel that lets `ip netns add` work, and `nft`
//! (`make jepsen-netns` installs nftables with apt-get when it is missing).
//! Without any of them [`Lab::create`] says why and the test is skipped.
//!
//! ## Cleaning up
//!
//! Every name starts with `kvj-`. Only one lab runs on a machine at a time
//! (a lock on `/run/lock/kvj-jepsen.lock`, waited for); once it holds the
//! lock, a lab first removes whatever a crashed run left with that prefix,
//! and its `Drop` removes everything it made, on success and on panic.

use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every namespace and link of the lab starts with this.
const PREFIX: &str = "kvj-";
const BRIDGE: &str = "kvj-br";
/// The lab's addresses: node `i` is `SUBNET.(i + 1)`, the bridge `.254`.
const SUBNET: &str = "10.77.0";
/// The route that keeps the subnet's traffic on this machine after the
/// bridge is gone, and its metric (under the bridge's, which is 0).
const GUARD_NET: &str = "10.77.0.0/24";
const GUARD_METRIC: &str = "4242";
/// Port every node listens on, each on its own address.
pub const PORT: u16 = 9001;
/// Packets every link loses each way, all along, in per mille.
pub const LOSS_PERMILLE: u64 = 5;
/// Delay (and jitter) every link adds each way, all along, with netem.
const DELAY_US: u64 = 1_000;
const JITTER_US: u64 = 500;
const LOCK: &str = "/run/lock/kvj-jepsen.lock";
/// How long to wait for another lab on this machine to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// Why namespaces cannot be used here; the test is skipped.
#[derive(Debug)]
pub enum Unavailable {
    NotLinux,
    NotRoot { euid: String },
    NoIp(String),
    NetnsAdd(String),
    NoNft(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NotLinux => write!(f, "network namespaces are a Linux feature"),
            Unavailable::NotRoot { euid } => {
                write!(f, "not root (effective uid {euid}): creating network namespaces needs root")
            }
            Unavailable::NoIp(why) => write!(f, "`ip` (iproute2) cannot be run: {why}"),
            Unavailable::NetnsAdd(why) => write!(f, "`ip netns add` failed: {why}"),
            Unavailable::NoNft(why) => write!(
                f,
                "nftables is not usable ({why}); `apt-get install nftables`, or run `make \
                 jepsen-netns`, which does"
            ),
        }
    }
}

/// A command of the lab that failed: what ran and what it said.
#[derive(Debug)]
pub struct CommandFailed {
    command: String,
    why: String,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed: {}", self.command, self.why)
    }
}

/// A link fault made with nftables and netem; `None` heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    None,
    /// Drop everything to and from the other members.
    Partition,
    /// Answer everything to and from the other members with a TCP reset.
    Reset,
    /// Lose `loss_pct` percent of all packets each way; delay each by
    /// `delay_ms` more (with netem).
    Degrade {
        loss_pct: u64,
        delay_ms: u64,
    },
}

/// The namespaces, links and bridge of one run; removed on drop.
pub struct Lab {
    nodes: usize,
    /// `Err(why)` where this kernel has no netem.
    netem: Result<(), String>,
    /// Held for the lab's lifetime: one lab per machine.
    _lock: File,
}

impl Lab {
    /// Build the lab for `nodes` nodes, or say why it cannot be built here.
    /// Panics on a failure past the point where namespaces proved to work.
    pub fn create(nodes: usize) -> Result<Lab, Unavailable> {
        if !cfg!(target_os = "linux") {
            return Err(Unavailable::NotLinux);
        }
        let euid = effective_uid();
        if euid != "0" {
            return Err(Unavailable::NotRoot { euid });
        }
        run(&["ip", "-V"]).map_err(|e| Unavailable::NoIp(e.why))?;
        run(&["nft", "--version"]).map_err(|e| Unavailable::NoNft(e.why))?;
        let lock = take_lock();
        let left = remove_leftovers();
        if !left.is_empty() {
            eprintln!("jepsen: netns: removed what an earlier run left: {}", left.join(", "));
        }
        run(&["ip", "netns", "add", &namespace(0)]).map_err(|e| Unavailable::NetnsAdd(e.why))?;
        // From here on, dropping `lab` removes whatever was made.
        let mut lab = Lab { nodes, netem: Ok(()), _lock: lock };
        for i in 1..nodes {
            run(&["ip", "netns", "add", &namespace(i)]).unwrap_or_else(|e| panic!("{e}"));
        }
        lab.wire().unwrap_or_else(|e| panic!("building the namespace lab: {e}"));
        lab.install_nft().map_err(|e| Unavailable::NoNft(e.to_string()))?;
        lab.netem = lab.set_delay(0, 0).map_err(|e| e.why);
        if lab.netem.is_ok() {
            for i in 1..nodes {
                lab.set_delay(i, 0).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        for i in 0..nodes {
            lab.set_fault(i, LinkFault::None);
        }
        Ok(lab)
    }

    /// Bridge, veth pairs, addresses, the guard route.
    fn wire(&self) -> Result<(), CommandFailed> {
        run(&["ip", "route", "add", "unreachable", GUARD_NET, "metric", GUARD_METRIC])?;
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{SUBNET}.254/24"), "dev", BRIDGE])?;
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        for i in 0..self.nodes {
            let (ns, host_end) = (namespace(i), self.host_end(i));
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            run(&["ip", "link", "set", &host_end, "master", BRIDGE, "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The `inet kvj` table with its two chains, in every namespace.
    fn install_nft(&self) -> Result<(), CommandFailed> {
        for i in 0..self.nodes {
            self.nft(
                i,
                "add table inet kvj\n\
                 add chain inet kvj input { type filter hook input priority 0; policy accept; }\n\
                 add chain inet kvj output { type filter hook output priority 0; policy accept; }\n",
            )?;
        }
        Ok(())
    }

    /// What this lab is, and a line on what it lacks.
    pub fn describe(&self) -> Vec<String> {
        let last = self.nodes;
        let mut lines = vec![format!(
            "netns: nodes in namespaces {PREFIX}n1..{PREFIX}n{last} at {SUBNET}.1..{SUBNET}.{last} \
             port {PORT}, linked by veth pairs through bridge {BRIDGE} ({SUBNET}.254); every link \
             loses {}.{}% of its packets each way (nftables)",
            LOSS_PERMILLE / 10,
            LOSS_PERMILLE % 10
        )];
        match &self.netem {
            Ok(()) => lines[0].push_str(&format!(
                " and delays them {} ms +- {} ms (netem)",
                DELAY_US as f64 / 1000.0,
                JITTER_US as f64 / 1000.0
            )),
            Err(why) => lines.push(format!(
                "netns: no link delays in this run: netem is not available (`tc qdisc replace \
                 ... netem` said: {why}); loss, partitions, resets and links going down still \
                 happen"
            )),
        }
        lines
    }

    pub fn has_netem(&self) -> bool {
        self.netem.is_ok()
    }

    /// The root namespace's end of node `i`'s veth pair.
    fn host_end(&self, i: usize) -> String {
        format!("{PREFIX}n{}h", i + 1)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Where node `i` listens, and where everyone reaches it.
    pub fn address(&self, i: usize) -> String {
        format!("{}:{PORT}", self.ip(i))
    }

    /// The command that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &namespace(i)].map(String::from).to_vec()
    }

    /// Take node `i`'s link down (`up == false`) or bring it back.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        run(&["ip", "link", "set", &self.host_end(i), state]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Put node `i`'s link in `fault` (rewriting its nftables chains, and
    /// its netem delay where there is netem); `LinkFault::None` heals.
    pub fn set_fault(&self, i: usize, fault: LinkFault) {
        let mut rules = String::from("flush chain inet kvj input\nflush chain inet kvj output\n");
        let mut add = |input: &str, output: &str| {
            rules.push_str(&format!("add rule inet kvj input {input}\n"));
            rules.push_str(&format!("add rule inet kvj output {output}\n"));
        };
        if LOSS_PERMILLE > 0 {
            let lose = format!("numgen random mod 1000 < {LOSS_PERMILLE} drop");
            add(&lose, &lose);
        }
        let peers: Vec<String> = (0..self.nodes).filter(|&j| j != i).map(|j| self.ip(j)).collect();
        let peers = format!("{{ {} }}", peers.join(", "));
        let mut delay_ms = 0;
        match fault {
            LinkFault::None => {}
            LinkFault::Partition => {
                add(&format!("ip saddr {peers} drop"), &format!("ip daddr {peers} drop"));
            }
            LinkFault::Reset => add(
                &format!("ip saddr {peers} meta l4proto tcp reject with tcp reset"),
                &format!("ip daddr {peers} meta l4proto tcp reject with tcp reset"),
            ),
            LinkFault::Degrade { loss_pct, delay_ms: extra } => {
                let lose = format!("numgen random mod 100 < {loss_pct} drop");
                add(&lose, &lose);
                delay_ms = extra;
            }
        }
        self.nft(i, &rules).unwrap_or_else(|e| panic!("{e}"));
        if self.has_netem() {
            self.set_delay(i, delay_ms).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// netem on both ends of node `i`'s link: the lab's delay plus `extra_ms`.
    fn set_delay(&self, i: usize, extra_ms: u64) -> Result<(), CommandFailed> {
        let delay = format!("{}us", DELAY_US + extra_ms * 1000);
        let jitter = format!("{JITTER_US}us");
        let netem = ["root", "netem", "delay", &delay, &jitter];
        let ns = namespace(i);
        let mut inside = vec!["ip", "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0"];
        inside.extend(netem);
        run(&inside)?;
        let host_end = self.host_end(i);
        let mut outside = vec!["tc", "qdisc", "replace", "dev", &host_end];
        outside.extend(netem);
        run(&outside).map(drop)
    }

    /// Run an nftables script inside node `i`'s namespace.
    fn nft(&self, i: usize, script: &str) -> Result<(), CommandFailed> {
        let ns = namespace(i);
        let command = format!("ip netns exec {ns} nft -f -");
        let failed = |why: String| CommandFailed { command: command.clone(), why };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        let mut stdin = child.stdin.take().ok_or_else(|| failed("no stdin".into()))?;
        stdin.write_all(script.as_bytes()).map_err(|e| failed(e.to_string()))?;
        drop(stdin);
        let output = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(failed(format!("{}: {}\nscript:\n{script}", output.status, stderr.trim())))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let removed = remove_leftovers();
        eprintln!("jepsen: netns: removed {}", removed.join(", "));
    }
}

/// The name of node `i`'s namespace.
fn namespace(i: usize) -> String {
    format!("{PREFIX}n{}", i + 1)
}

/// Remove every namespace and link named `kvj-*`, and the guard route:
/// what this lab made, or a crashed run left. Processes still inside a
/// namespace (nodes of a crashed run) are killed first, by pid. Returns
/// what it removed.
fn remove_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !ns.starts_with(PREFIX) {
                continue;
            }
            if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    if run(&["kill", "-KILL", pid]).is_ok() {
                        removed.push(format!("process {pid}"));
                    }
                }
            }
            // A namespace goes once its last process has; its veth end
            // goes with it, taking the root side along.
            if run(&["ip", "netns", "delete", ns]).is_ok() {
                removed.push(ns.to_string());
            }
        }
    }
    if let Ok(links) = run(&["ip", "-o", "link", "show"]) {
        // "7: kvj-n1h@if2: <...> ..."
        for name in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(PREFIX) && run(&["ip", "link", "delete", name]).is_ok() {
                removed.push(name.to_string());
            }
        }
    }
    // Removed last, once the bridge is gone (a run that crashed twice may
    // have left two).
    for _ in 0..4 {
        if run(&["ip", "route", "delete", "unreachable", GUARD_NET, "metric", GUARD_METRIC])
            .is_err()
        {
            break;
        }
        removed.push(format!("route unreachable {GUARD_NET}"));
    }
    removed
}

/// One lab per machine: wait for the lock on [`LOCK`].
fn take_lock() -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
    let until = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => panic!("lock {LOCK}: {e}"),
        }
        if !said {
            eprintln!("jepsen: netns: another namespace run holds {LOCK}; waiting for it");
            said = true;
        }
        if Instant::now() > until {
            panic!("another namespace run held {LOCK} for more than {LOCK_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The effective uid, from /proc (std does not ask the kernel for it).
fn effective_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(String::from)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Run a command; its stdout, or what went wrong.
fn run(args: &[&str]) -> Result<String, CommandFailed> {
    let failed = |why: String| CommandFailed { command: args.join(" "), why };
    let output = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().map_err(
        |e| match e.kind() {
            std::io::ErrorKind::NotFound => failed(format!("{} is not installed", args[0])),
            _ => failed(e.to_string()),
        },
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match (output.status.success(), stderr.trim()) {
        (true, _) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        (false, "") => Err(failed(output.status.to_string())),
        (false, said) => Err(failed(said.to_string())),
    }
}
