//! Planned handover, end to end (`kv_client transfer-leadership`, SIGTERM
//! on a leader; docs/FAILOVER.md): leadership moves to a follower without
//! waiting for an election timeout, while a writer keeps writing, and a
//! node asked to stop finishes what it was doing and exits 0.
//!
//! The writer's longest gap between two acknowledged writes is printed; the
//! tests only assert that it is well below the election timeout (3 s
//! here), which proves no election timeout was waited for. The gap itself
//! is measured in `make bench` (examples/failover_time.rs --handover).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::error::Error;
use kvstore::status::StatusReport;

/// A long election timeout: a handover that waited for one would show.
const FLAGS: [&str; 4] = [
    "--failover=auto",
    "--election-timeout-ms=3000",
    "--heartbeat-interval-ms=100",
    "--write-concern=majority",
];

/// The longest gap a handover may cost in these tests (a third of the
/// election timeout; the real figure is tens of milliseconds).
const GAP_MAX: Duration = Duration::from_millis(1000);

struct Cluster {
    nodes: Vec<Node>,
}

fn cluster(dirs: &tempfile::TempDir) -> Cluster {
    let ports = [free_port(), free_port(), free_port()];
    let peers = format!("--peers={},{}", ports[1], ports[2]);
    let to_leader = format!("--leader={}", ports[0]);
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let role: Vec<&str> = if i == 0 {
            vec!["--role=leader", &peers]
        } else {
            vec!["--role=follower", &to_leader]
        };
        let args: Vec<&str> = role.into_iter().chain(FLAGS).collect();
        let name = format!("node{}", i + 1);
        nodes.push(Node::start_on(&name, *port, &dirs.path().join(&name), &args));
    }
    Cluster { nodes }
}

impl Cluster {
    fn members(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    fn leader(&self) -> &Node {
        eventually("one leader", DEADLINE, || {
            let leaders: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| try_status(n).is_some_and(|s| s.role == "leader"))
                .collect();
            (leaders.len() == 1).then(|| leaders[0])
        })
    }
}

/// The node's status, or `None` if it does not answer (it is stopping).
fn try_status(node: &Node) -> Option<StatusReport> {
    Client::connect(node.addr).and_then(|mut c| c.status()).ok()
}

/// A writer putting new keys through a [`ClusterClient`] until stopped;
/// returns the times its writes were acknowledged, and how many had an
/// unknown outcome.
fn start_writer(members: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<(Vec<Instant>, u64)> {
    std::thread::spawn(move || {
        let mut client = ClusterClient::new(&members, Duration::from_secs(10)).unwrap();
        let (mut acked, mut unknown) = (Vec::new(), 0);
        let mut i = 0u64;
        while !stop.load(Ordering::Acquire) {
            i += 1;
            match client.put(format!("w{i}").as_bytes(), b"x") {
                Ok(_) => acked.push(Instant::now()),
                Err(Error::Indeterminate(why)) => {
                    eprintln!("unknown: {why}");
                    unknown += 1
                }
                Err(e) => panic!("write {i} failed: {e}"),
            }
        }
        (acked, unknown)
    })
}

/// Let the writer run, do `handover`, let it run on, and return the
/// longest gap between two acknowledged writes.
fn longest_gap_across(cluster: &Cluster, handover: impl FnOnce()) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(cluster.members(), Arc::clone(&stop));
    let leader = cluster.leader();
    let before = leader.last_lsn();
    eventually("the writer is writing", DEADLINE, || {
        (leader.last_lsn() > before + 50).then_some(())
    });
    handover();
    let new_leader = eventually("a new leader", DEADLINE, || {
        let l = cluster.leader();
        (!std::ptr::eq(l, leader)).then_some(l)
    });
    let lsn = new_leader.last_lsn();
    eventually("writes continue on the new leader", DEADLINE, || {
        (new_leader.last_lsn() > lsn + 50).then_some(())
    });
    stop.store(true, Ordering::Release);
    let (acked, unknown) = writer.join().unwrap();
    let gap = acked.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "{} writes acknowledged, {unknown} with an unknown outcome; longest gap {} ms",
        acked.len(),
        gap.as_millis()
    );
    gap
}

#[test]
fn transfer_leadership_under_load_costs_no_election_timeout() {
    // Goal: `kv_client transfer-leadership` moves leadership to the most
    // up-to-date follower in a new term while a writer keeps writing; the
    // writer never waits anything like an election timeout.
    let dirs = tempfile::tempdir().unwrap();
    let cluster = cluster(&dirs);
    let old = cluster.leader();
    let gap = longest_gap_across(&cluster, || {
        let out = kv_client(&["--port", &old.port().to_string(), "transfer-leadership"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("leads term 2 now"), "{}", stdout(&out));
    });
    assert!(gap < GAP_MAX, "longest gap {gap:?}");
    assert_eq!(old.status().role, "follower");
    old.wait_for_log("[election] handing leadership of term 1 to");
    let new = cluster.leader();
    new.wait_for_log("hands leadership over; starting election for term 2");
    assert_eq!(new.status().term, 2);
    wait_converged(&cluster.nodes.iter().collect::<Vec<_>>());

    // A handover to a node that is not a follower is refused, and nothing
    // changes.
    let out = kv_client(&["--port", &new.port().to_string(), "transfer-leadership", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a follower streaming"), "{}", stderr(&out));
    let out = kv_client(&["--port", &old.port().to_string(), "transfer-leadership"]);
    assert!(stderr(&out).contains("not the leader"), "{}", stderr(&out));
    assert_eq!(cluster.leader().status().term, 2);
}

#[test]
fn sigterm_on_a_leader_hands_over_then_exits_cleanly() {
    // Goal: a planned restart. SIGTERM makes the leader hand over, finish
    // its requests and exit 0 with one line saying so; the writer hardly
    // notices; the node restarted without flags follows the new leader.
    let dirs = tempfile::tempdir().unwrap();
    let mut cluster = cluster(&dirs);
    let old = cluster.leader().name.clone();
    let at = cluster.nodes.iter().position(|n| n.name == old).unwrap();
    let gap = longest_gap_across(&cluster, || cluster.nodes[at].signal("TERM"));
    assert!(gap < GAP_MAX, "longest gap {gap:?}");
    let node = &mut cluster.nodes[at];
    assert_eq!(node.wait_exit(), "exit status: 0");
    let log = node.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("[server] stopped on SIGTERM after"), "{log}");
    assert!(log.contains("leads term 2 now"), "{log}");
    node.restart();
    node.wait_for_log("as follower of");
    wait_converged(&cluster.nodes.iter().collect::<Vec<_>>());
}

#[test]
fn sigterm_on_a_follower_exits_cleanly() {
    // Goal: any node stops cleanly on SIGTERM (exit 0, one line), and comes
    // back where it was.
    let dirs = tempfile::tempdir().unwrap();
    let mut cluster = cluster(&dirs);
    cluster.leader().client().put(b"k", b"v").unwrap();
    let node = &mut cluster.nodes[1];
    node.wait_for_lsn(1);
    node.signal("TERM");
    assert_eq!(node.wait_exit(), "exit status: 0");
    assert!(node.log_text().contains("[server] stopped on SIGTERM after"), "{}", node.log_text());
    node.restart();
    wait_converged(&cluster.nodes.iter().collect::<Vec<_>>());
}
