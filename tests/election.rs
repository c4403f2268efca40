//! Automatic failover, end to end with real processes (`--failover auto`,
//! src/replication/election.rs): a dead leader is replaced by an election,
//! a follower cut off and back does not disturb the leader (pre-vote), a
//! leader cut off from its followers steps down (check-quorum), and a vote
//! survives a crash.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::proxy::{Fault, Proxy};
use common::*;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::Message;

/// Election flags for these tests: the defaults' shape (heartbeat a tenth
/// of T), faster, so each test takes seconds.
const AUTO: [&str; 3] =
    ["--failover=auto", "--election-timeout-ms=500", "--heartbeat-interval-ms=50"];

fn with_auto(args: &[&str]) -> Vec<String> {
    AUTO.iter().chain(args).map(|s| s.to_string()).collect()
}

fn start(name: &str, dirs: &tempfile::TempDir, port: u16, args: &[&str]) -> Node {
    let args = with_auto(args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_on(name, port, &dirs.path().join(name), &args)
}

/// Wait until exactly one of `nodes` leads, in a term newer than `after`.
fn wait_for_new_leader<'a>(nodes: &[&'a Node], after: u64) -> &'a Node {
    eventually("a newly elected leader", DEADLINE, || {
        let leaders: Vec<&Node> = nodes
            .iter()
            .copied()
            .filter(|n| n.client().status().is_ok_and(|s| s.role == "leader" && s.term > after))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
}

/// The term `node` won its election in: 2, or later if both followers
/// stood at the same moment and split the vote (each voted for itself), as
/// Raft allows; the next timeout, randomized again, settles it.
fn won_term(node: &Node) -> u64 {
    let line = node.wait_for_log("[election] won term ");
    let term = line
        .split("won term ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no term in {line:?}"));
    assert!(term >= 2, "{line}");
    assert!(line.contains("with votes from"), "{line}");
    term
}

#[test]
fn a_dead_leader_is_replaced_by_an_election_and_rejoins_as_a_follower() {
    // Goal: with --failover auto, SIGKILL of the leader costs an election
    // timeout, not an operator: a follower wins term 2, takes writes, the
    // other follows it, and the old leader restarted with its lesson
    // command (--role=leader) learns of term 2 and follows too.
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    let leader_args = ["--role=leader", peers.as_str()];
    let mut leader = start("leader", &dirs, p1, &leader_args);
    let to_leader = format!("--leader={p1}");
    let f2 = start("follower2", &dirs, p2, &["--role=follower", &to_leader]);
    let f3 = start("follower3", &dirs, p3, &["--role=follower", &to_leader]);
    let mut client = leader.client();
    write_keys(&mut client, 0, 10);
    f2.wait_for_lsn(10);
    f3.wait_for_lsn(10);

    leader.kill();
    let killed = Instant::now();
    let new_leader = wait_for_new_leader(&[&f2, &f3], 1);
    eprintln!("elected after {} ms", killed.elapsed().as_millis());
    let term = won_term(new_leader);
    new_leader.wait_for_log(&format!("starting election for term {term} (last LSN 10, term 1)"));
    // LSN 11 is the NOOP that starts the new term.
    assert_eq!(new_leader.client().put(b"after", b"1").unwrap(), 12);
    let status = new_leader.status();
    assert_eq!(status.failover.as_deref(), Some("auto"));
    assert_eq!(status.voted_for, Some(new_leader.addr.to_string()), "it voted for itself");
    let change = status.last_role_change.expect("a role change");
    assert!(
        change.what.starts_with(&format!("leader of term {term} (elected after no AppendEntries")),
        "{change:?}"
    );

    leader.restart();
    leader.wait_for_log("not taking office");
    let (last, _) = wait_converged(&[&leader, &f2, &f3]);
    assert_eq!(last, 12);
    let status = leader.status();
    assert_eq!((status.role.as_str(), status.term), ("follower", term));
    assert_eq!(leader.client().get(b"after").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_leader_whose_address_refuses_connections_is_replaced_without_waiting_out_the_timeout() {
    // Goal: election rule 4. With a 60 s election timeout only the
    // followers' redials, refused because no process listens on the dead
    // leader's port, can start an election within the test's deadline.
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let slow = ["--failover=auto", "--election-timeout-ms=60000", "--heartbeat-interval-ms=50"];
    let args = |extra: &[&str]| -> Vec<String> {
        slow.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let start = |name: &str, port: u16, extra: &[&str]| {
        let args = args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_on(name, port, &dirs.path().join(name), &args)
    };
    let mut leader = start("leader", p1, &["--role=leader", &format!("--peers={p2},{p3}")]);
    let to_leader = format!("--leader={p1}");
    let f2 = start("follower2", p2, &["--role=follower", &to_leader]);
    let f3 = start("follower3", p3, &["--role=follower", &to_leader]);
    write_keys(&mut leader.client(), 0, 5);
    f2.wait_for_lsn(5);
    f3.wait_for_lsn(5);

    leader.kill();
    let new_leader = wait_for_new_leader(&[&f2, &f3], 1);
    let line =
        new_leader.wait_for_log(&format!("[election] leader 127.0.0.1:{p1} refuses connections"));
    assert!(line.contains("standing for election in"), "{line}");
    won_term(new_leader);
    assert_eq!(new_leader.client().put(b"after", b"1").unwrap(), 7, "LSN 6 is the term's NOOP");
}

#[test]
fn a_follower_cut_off_and_back_does_not_disturb_the_leader() {
    // Goal: pre-vote. follower3 reaches the leader through a proxy that is
    // cut: its election clock runs out, but the leader and follower2 still
    // hear each other, so neither would vote for it, and it asks first:
    // nobody's term moves and the leader stays. Healed, it catches up.
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    let leader = start("leader", &dirs, p1, &["--role=leader", &peers]);
    let f2 = start("follower2", &dirs, p2, &["--role=follower", &format!("--leader={p1}")]);
    let proxy = Proxy::start(leader.addr);
    let via_proxy = format!("--leader={}", proxy.addr);
    let f3 = start("follower3", &dirs, p3, &["--role=follower", &via_proxy]);
    // The leader's announcements name its own address: a follower that
    // hears one before its first HELLO goes there directly. Point it back
    // at the proxy until it streams through it (then no more come).
    eventually("follower3 streams through the proxy", DEADLINE, || {
        let leader = f3.status().leader?;
        if leader.address != proxy.addr.to_string() {
            f3.client().follow(&proxy.addr.to_string()).ok()?;
            return None;
        }
        (leader.state == "streaming").then_some(())
    });
    write_keys(&mut leader.client(), 0, 5);
    f3.wait_for_lsn(5);

    proxy.set(Fault::Blackhole);
    f3.wait_for_log("starting election for term 2");
    f3.wait_for_log("pre-vote for term 2: 1 of 3 members would vote for this node");
    write_keys(&mut leader.client(), 5, 5);
    for node in [&leader, &f2, &f3] {
        assert_eq!(node.status().term, 1, "{}: the term did not move", node.name);
    }
    assert_eq!(leader.status().role, "leader");
    assert!(leader.log_text().contains("no, this node leads"), "the leader said no");

    proxy.set(Fault::None);
    let (last, _) = wait_converged(&[&leader, &f2, &f3]);
    assert_eq!(last, 10);
    assert_eq!(leader.status().term, 1);
}

#[test]
fn a_leader_cut_off_from_its_followers_steps_down_and_they_elect_another() {
    // Goal: check-quorum. Both followers reach the leader through a proxy
    // that is cut: within an election timeout the leader hears from no
    // majority, steps down and refuses writes; the followers elect one of
    // themselves in term 2 and take writes.
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    // Every member reaches the leader through one proxy, the address it
    // advertises: cutting the proxy cuts the leader off from both.
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], p1)));
    let advertise = format!("--advertise={}", proxy.addr);
    let leader = start("leader", &dirs, p1, &["--role=leader", &peers, &advertise]);
    let via_proxy = format!("--leader={}", proxy.addr);
    let f2 = start("follower2", &dirs, p2, &["--role=follower", &via_proxy]);
    let f3 = start("follower3", &dirs, p3, &["--role=follower", &via_proxy]);
    write_keys(&mut leader.client(), 0, 5);
    f2.wait_for_lsn(5);
    f3.wait_for_lsn(5);

    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    leader.wait_for_log("stepping down as leader of term 1: check-quorum: heard from 1 of 3");
    eprintln!("stepped down {} ms after the cut", cut.elapsed().as_millis());
    match leader.client().put(b"x", b"1") {
        Err(Error::Server { code: ErrorCode::ReadOnly, .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let new_leader = wait_for_new_leader(&[&f2, &f3], 1);
    assert_eq!(new_leader.client().put(b"y", b"2").unwrap(), 7, "LSN 6 is the term's NOOP");
}

#[test]
fn a_vote_survives_a_crash_and_is_not_given_twice_in_a_term() {
    // Goal: a node stores its vote before it answers: after SIGKILL and a
    // restart it refuses a second candidate in the same term, and says yes
    // again to the one it voted for.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let mut f2 = follower("follower2", &dirs, p2, &leader);
    leader.client().put(b"a", b"1").unwrap();
    f2.wait_for_lsn(1);
    let cluster_id = Some(kvstore::cluster::ClusterId::load(&leader.data_dir).unwrap().unwrap());
    let ask = |node: &Node, candidate: &str| {
        let request = Message::RequestVote {
            cluster_id,
            term: 5,
            last_lsn: 100,
            last_term: 4,
            candidate: candidate.into(),
        };
        match node.client().request(&request).unwrap() {
            Message::Vote { granted, term, .. } => (granted, term),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ask(&f2, "127.0.0.1:1"), (true, 5));
    f2.restart();
    assert_eq!(ask(&f2, "127.0.0.1:2"), (false, 5), "one vote per term, across a crash");
    assert_eq!(ask(&f2, "127.0.0.1:1"), (true, 5), "the same candidate may ask again");
}

#[test]
fn kv_client_with_cluster_finds_the_leader_and_never_retries_an_unknown_write() {
    // Goal: `kv_client --cluster` sends writes to whichever member leads:
    // from a follower's refusal it asks who leads and goes there; across a
    // leader's death it keeps trying until the election is over; with
    // nobody answering it says so (exit 2); and a write whose connection
    // dies after it was sent is reported as unknown (exit 3), not retried.
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    let mut leader = start("leader", &dirs, p1, &["--role=leader", &peers]);
    let to_leader = format!("--leader={p1}");
    let mut f2 = start("follower2", &dirs, p2, &["--role=follower", &to_leader]);
    let mut f3 = start("follower3", &dirs, p3, &["--role=follower", &to_leader]);
    let members = format!("{p2},{p3},{p1}");
    let put = |key: &str, extra: &[&str]| {
        let mut args = vec!["--cluster", members.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["put", key, "v"]);
        kv_client(&args)
    };
    let out = put("a", &[]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "OK (LSN 1)".into()),
        "{}",
        stderr(&out)
    );
    f2.wait_for_lsn(1);
    f3.wait_for_lsn(1);

    leader.kill();
    let out = put("b", &[]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "OK (LSN 3)".into()),
        "{} (LSN 2 is the new term's NOOP)",
        stderr(&out)
    );

    for node in [&mut f2, &mut f3] {
        node.kill();
    }
    let out = put("c", &["--retry-ms=300"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("no leader found"), "{}", stderr(&out));

    // A member that takes the request and hangs up without an answer.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_port = fake.local_addr().unwrap().port().to_string();
    let hang_up = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = fake.accept().unwrap();
        let mut request = [0u8; 16];
        let _ = conn.read(&mut request);
    });
    let out = kv_client(&["--cluster", &fake_port, "put", "d", "v"]);
    hang_up.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("outcome unknown"), "{}", stderr(&out));
}

#[test]
fn nodes_started_with_cluster_elect_their_first_leader_and_keep_their_roles() {
    // Goal: `kvstore --cluster 9001,9002,9003` on three fresh nodes: no
    // one is told to lead; after an election timeout one wins term 2 and
    // founds the cluster, the others join it. Restarted with the same
    // command, a node takes the role it stored.
    let dirs = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let cluster = format!("--cluster={},{},{}", ports[0], ports[1], ports[2]);
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| start(&format!("node{}", i + 1), &dirs, port, &[&cluster]))
        .collect();
    for node in &nodes {
        node.wait_for_log("no leader yet; the members elect one");
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_for_new_leader(&refs, 1);
    leader.wait_for_log("[server] new cluster: id");
    let out = kv_client(&[&cluster, "put", "k", "v"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "OK (LSN 1)".into()),
        "{}",
        stderr(&out)
    );
    wait_converged(&refs);
    let ids: Vec<Option<String>> = nodes.iter().map(|n| n.status().cluster_id).collect();
    assert!(ids[0].is_some() && ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let contacts = leader.status().member_contacts;
    assert_eq!(contacts.len(), 3);
    assert!(contacts.iter().all(|m| m.last_heard_ms_ago.is_some()), "{contacts:?}");

    let leader_name = leader.name.clone();
    let follower = nodes.iter_mut().find(|n| n.name != leader_name).unwrap();
    follower.restart();
    follower.wait_for_log("restarted as follower");
    let out = kv_client(&[&cluster, "put", "k", "v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_converged(&refs);
    assert!(refs.iter().all(|n| n.status().term == 2), "no further election");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["--port", "0", "--data-dir"])
        .arg(dirs.path().join("lonely"))
        .arg(format!("--cluster={},{}", ports[0], ports[1]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("an election needs at least 3"), "{}", stderr(&out));
}
