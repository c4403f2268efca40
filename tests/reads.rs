//! Reads with a chosen consistency, end to end (`kv_client get
//! --consistency`, `--min-lsn`; READ in docs/PROTOCOL.md): a linearizable
//! read is answered only by a leader a majority confirms, a leader cut off
//! from its followers never answers one with stale data (though its plain
//! map still does), and a client reads its own write on a follower.

mod common;

use std::net::SocketAddr;

use common::proxy::{Fault, Proxy};
use common::*;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::Consistency;

#[test]
fn linearizable_reads_come_from_a_confirmed_leader_and_followers_name_it() {
    // Goal: the three consistencies as a client meets them on a healthy
    // cluster, through the library and through kv_client.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--write-concern=majority"]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let _f3 = follower("follower3", &dirs, p3, &leader);
    leader.client().put(b"k", b"v1").unwrap();

    let mut client = leader.client();
    for consistency in [Consistency::Leader, Consistency::Linearizable, Consistency::Any] {
        assert_eq!(client.read(b"k", consistency, 0).unwrap(), Some(b"v1".to_vec()));
        assert_eq!(client.read(b"missing", consistency, 0).unwrap(), None);
    }
    for consistency in [Consistency::Leader, Consistency::Linearizable] {
        match f2.client().read(b"k", consistency, 0) {
            Err(Error::Server { code: ErrorCode::ReadOnly, message }) => assert!(
                message.contains(&format!("the leader is {}", leader.addr)),
                "{consistency:?}: {message}"
            ),
            other => panic!("{consistency:?} on a follower: expected a refusal, got {other:?}"),
        }
    }
    f2.wait_for_lsn(1);
    assert_eq!(f2.client().read(b"k", Consistency::Any, 0).unwrap(), Some(b"v1".to_vec()));

    let port = leader.port().to_string();
    let out = kv_client(&["--port", &port, "get", "k", "--consistency", "linearizable"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "v1".into()), "{}", stderr(&out));
    let out = kv_client(&["--port", &port, "get", "k", "--consistency", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use leader, linearizable or any"), "{}", stderr(&out));
}

#[test]
fn a_leader_cut_off_from_the_majority_never_answers_a_linearizable_read() {
    // Goal: the reason ReadIndex exists. The followers reach the leader
    // only through a proxy (its advertised address); cut it, let them
    // elect a new leader and overwrite a key: the old leader, which does
    // not know yet, still answers from its map (consistency `leader`:
    // stale) but refuses a linearizable read instead of answering the old
    // value. (The old leader runs without check-quorum, `--failover
    // manual`, so that it keeps believing it leads for as long as the test
    // needs: the read must not depend on it having stepped down.)
    let dirs = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], p1)));
    let auto = ["--failover=auto", "--election-timeout-ms=500", "--heartbeat-interval-ms=50"];
    let peers = format!("--peers={p2},{p3}");
    let advertise = format!("--advertise={}", proxy.addr);
    let args =
        ["--role=leader", &peers, &advertise, "--write-timeout-ms=1000", "--failover=manual"];
    let old = Node::start_on("leader", p1, &dirs.path().join("leader"), &args);
    let via_proxy = format!("--leader={}", proxy.addr);
    let follower_args: Vec<&str> =
        ["--role=follower", via_proxy.as_str()].into_iter().chain(auto).collect();
    let f2 = Node::start_on("follower2", p2, &dirs.path().join("follower2"), &follower_args);
    let f3 = Node::start_on("follower3", p3, &dirs.path().join("follower3"), &follower_args);
    old.client().put(b"k", b"old").unwrap();
    f2.wait_for_lsn(1);
    f3.wait_for_lsn(1);

    proxy.set(Fault::Blackhole);
    let new = eventually("a new leader", DEADLINE, || {
        [&f2, &f3].into_iter().find(|n| n.status().role == "leader")
    });
    new.client().put(b"k", b"new").unwrap();
    assert_eq!(old.status().role, "leader", "it does not know yet");

    let mut client = old.client();
    let started = std::time::Instant::now();
    let stale = client.read(b"k", Consistency::Leader, 0).unwrap();
    assert_eq!(stale, Some(b"old".to_vec()), "consistency leader may be stale: it is");
    match client.read(b"k", Consistency::Linearizable, 0) {
        // The confirmation round reached the others: they are in term 2,
        // so this node learns it was deposed and says who leads, or it
        // could not hear a majority in time.
        Err(Error::Server { code: ErrorCode::ReadOnly | ErrorCode::ReadTimeout, .. }) => {}
        other => panic!("a cut-off leader answered a linearizable read: {other:?}"),
    }
    eprintln!("refused after {} ms", started.elapsed().as_millis());
    assert_eq!(
        new.client().read(b"k", Consistency::Linearizable, 0).unwrap(),
        Some(b"new".to_vec())
    );
}

#[test]
fn a_client_reads_its_own_write_on_a_follower_with_min_lsn() {
    // Goal: read-your-writes. A follower whose link is delayed answers a
    // plain GET with the old value, but `--min-lsn` (the LSN put printed)
    // waits until it has applied the write; a LSN it never reaches in time
    // is ERROR 14, not a stale answer.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let proxy = Proxy::start(leader.addr);
    let follower_args = [
        "--role=follower".to_string(),
        format!("--leader={}", proxy.addr),
        "--write-timeout-ms=500".to_string(),
    ];
    let follower_args: Vec<&str> = follower_args.iter().map(String::as_str).collect();
    let f2 = Node::start_on("follower2", p2, &dirs.path().join("follower2"), &follower_args);
    leader.client().put(b"k", b"v1").unwrap();
    f2.wait_for_lsn(1);

    proxy.set(Fault::Delay(std::time::Duration::from_millis(300)));
    let port = leader.port().to_string();
    let out = kv_client(&["--port", &port, "put", "k", "v2"]);
    assert_eq!(stdout(&out), "OK (LSN 2)", "{}", stderr(&out));
    let f2_port = f2.port().to_string();
    let out = kv_client(&["--port", &f2_port, "get", "k", "--min-lsn", "2"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "v2".into()), "{}", stderr(&out));

    match f2.client().read(b"k", Consistency::Any, 99) {
        Err(Error::Server { code: ErrorCode::ReadTimeout, message }) => {
            assert!(message.contains("not LSN 99"), "{message}")
        }
        other => panic!("expected ERROR 14, got {other:?}"),
    }
}
