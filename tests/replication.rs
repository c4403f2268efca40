//! Replication end to end with real processes: lessons 3 (AppendEntries),
//! 4 (commit LSN and write concern) and 5 (catch-up).

mod common;

use common::*;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::Message;
use std::collections::HashMap;

#[test]
fn lesson3_put_and_delete_on_the_leader_reach_both_followers() {
    // Goal: lesson 3's Verify section: a put on the leader is readable on
    // both followers, and each follower logs that it applied AppendEntries.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let f3 = follower("follower3", &dirs, p3, &leader);

    leader.client().put(b"hello", b"world").unwrap();
    wait_for_value(&f2, "hello", Some("world"));
    wait_for_value(&f3, "hello", Some("world"));
    f2.wait_for_log("[replication] received AppendEntries, applied 1 record(s), last LSN 1");
    leader.wait_for_log("[replication] sent AppendEntries to");

    leader.client().delete(b"hello").unwrap();
    wait_for_value(&f2, "hello", None);
    wait_for_value(&f3, "hello", None);
}

#[test]
fn lesson5_late_follower_catches_up_on_all_ten_keys() {
    // Goal: lesson 5's Verify section: a follower started after 10 writes
    // asks for everything after LSN 0 and receives exactly those 10.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    let _f2 = follower("follower2", &dirs, p2, &leader);
    let mut client = leader.client();
    for i in 1..=10 {
        client.put(format!("key{i}").as_bytes(), format!("value{i}").as_bytes()).unwrap();
    }

    let f3 = follower("follower3", &dirs, p3, &leader);
    f3.wait_for_log("[catch-up] connected to leader");
    f3.wait_for_log("requesting records after LSN 0");
    // LEADER_HELLO says how many keys the leader holds; the map is sized.
    f3.wait_for_log("[catch-up] sized the map for 10 keys, the leader's count");
    f3.wait_for_log("[catch-up] received 10 records, caught up to LSN 10");
    leader.wait_for_log("requests records after LSN 0; sending 10 record(s)");
    assert_eq!(f3.client().get(b"key1").unwrap(), Some(b"value1".to_vec()));
    assert_eq!(f3.client().get(b"key10").unwrap(), Some(b"value10".to_vec()));
}

#[test]
fn restarted_follower_catches_up_from_its_own_lsn() {
    // Goal: a follower killed while writes continue asks, on restart, only
    // for what it missed, and ends identical to the leader.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let mut f2 = follower("follower2", &dirs, p2, &leader);
    let mut client = leader.client();
    write_keys(&mut client, 0, 20);
    f2.wait_for_lsn(20);

    f2.kill();
    write_keys(&mut client, 20, 30);
    client.delete(b"key3").unwrap();
    f2.restart();
    f2.wait_for_log("requesting records after LSN 20");
    f2.wait_for_log("[catch-up] received 31 records, caught up to LSN 51");
    wait_for_value(&f2, "key3", None);
    wait_for_value(&f2, "key49", Some("value49"));
    assert_eq!(wal_dump(&f2), wal_dump(&leader));
}

#[test]
fn followers_reconnect_after_the_leader_restarts() {
    // Goal: a leader crash is survivable: its followers redial, say HELLO
    // again and keep replicating what the restarted leader writes.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let mut leader = leader(&dirs, &[p2, p3], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let f3 = follower("follower3", &dirs, p3, &leader);
    leader.client().put(b"before", b"1").unwrap();
    wait_for_value(&f3, "before", Some("1"));

    leader.restart();
    f2.wait_for_log("link to leader");
    leader.client().put(b"after", b"2").unwrap();
    wait_for_value(&f2, "after", Some("2"));
    wait_for_value(&f3, "after", Some("2"));
    eventually("leader shows both followers streaming", DEADLINE, || {
        let rows = leader.status().followers;
        // LSN 2 is the NOOP of the restarted leader's new term.
        rows.iter().all(|r| r.state == "streaming" && r.acked_lsn == 3).then_some(())
    });
}

#[test]
fn catch_up_of_50000_records_races_with_4_writers_and_loses_nothing() {
    // Goal: the hand-over from catch-up (WAL) to live streaming (channel)
    // never loses, duplicates or reorders a record. Method: preload 50,000
    // records, start a fresh follower while 4 clients keep writing, then
    // compare every node's WAL byte for byte (same LSNs, same records).
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--fsync=never"]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    write_keys(&mut leader.client(), 0, 50_000);

    let late = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let mut client = leader.client();
                s.spawn(move || write_keys(&mut client, 100_000 + w * 10_000, 2_500))
            })
            .collect();
        let late = follower("follower3", &dirs, p3, &leader);
        for w in writers {
            w.join().unwrap();
        }
        late
    });

    let last = leader.last_lsn();
    assert_eq!(last, 60_000);
    f2.wait_for_lsn(last);
    late.wait_for_lsn(last);
    late.wait_for_log("[catch-up] received");
    let reference = wal_dump(&leader);
    assert_eq!(wal_dump(&f2), reference, "follower2's WAL differs from the leader's");
    assert_eq!(wal_dump(&late), reference, "follower3's WAL differs from the leader's");
    assert_eq!(late.status().keys, 60_000);
    let digest = leader.status().digest;
    assert_eq!(f2.status().digest, digest, "same LSN, same state");
    assert_eq!(late.status().digest, digest, "same LSN, same state");
}

#[test]
fn a_follower_refuses_writes_and_names_the_leader() {
    // Goal: writes go to the leader; a follower's ERROR says where that is.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    match f2.client().put(b"k", b"v") {
        Err(Error::Server { code: ErrorCode::ReadOnly, message }) => {
            assert!(message.contains(&leader.addr.to_string()), "{message}")
        }
        other => panic!("expected a read-only error, got {other:?}"),
    }
    let out = kv_client(&["--port", &f2.port().to_string(), "put", "k", "v"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("follower"), "{}", stderr(&out));
    assert_eq!(leader.last_lsn(), 0, "the refused write reached no log");
}

#[test]
fn majority_write_concern_needs_one_of_two_followers() {
    // Goal: with --write-concern majority (3 nodes), one live follower is
    // enough; with none, the write times out with the documented error.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--write-concern=majority", "--write-timeout-ms=1000"]);
    let mut f2 = follower("follower2", &dirs, p2, &leader);
    f2.wait_for_log("caught up");
    assert_eq!(leader.client().put(b"a", b"1").unwrap(), 1);
    assert_eq!(f2.client().get(b"a").unwrap(), Some(b"1".to_vec()), "acked means applied");

    f2.kill();
    match leader.client().put(b"b", b"2") {
        Err(Error::Server { code: ErrorCode::WriteTimeout, message }) => {
            assert!(message.contains("only 1 of the 2 nodes"), "{message}");
            assert!(message.contains("not confirmed"), "{message}");
        }
        other => panic!("expected a write-concern timeout, got {other:?}"),
    }
    // The write is in the leader's log; a returning follower receives it.
    f2.restart();
    wait_for_value(&f2, "b", Some("2"));
}

#[test]
fn all_write_concern_waits_for_every_follower() {
    // Goal: --write-concern all times out while any expected follower is down.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--write-concern=all", "--write-timeout-ms=500"]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    f2.wait_for_log("caught up");
    let err = leader.client().put(b"a", b"1").unwrap_err();
    assert!(err.to_string().contains("only 2 of the 3 nodes"), "{err}");
    let f3 = follower("follower3", &dirs, p3, &leader);
    f3.wait_for_log("caught up");
    leader.client().put(b"b", b"2").unwrap();
}

#[test]
fn a_follower_from_another_cluster_is_refused_and_a_fresh_one_joins() {
    // Goal: the cluster id keeps two histories apart: a data dir that
    // belongs to another cluster is refused (both logs say so), while a
    // fresh follower adopts the leader's id.
    let dirs = tempfile::tempdir().unwrap();
    {
        let mut other = Node::start("other", &dirs.path().join("follower2"), &[]);
        write_keys(&mut other.client(), 0, 2);
        other.kill();
    }
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    leader.client().put(b"x", b"1").unwrap();
    let stranger = follower("follower2", &dirs, p2, &leader);
    leader.wait_for_log("belongs to cluster");
    stranger.wait_for_log("refused us");
    assert_eq!(stranger.client().get(b"x").unwrap(), None);

    let fresh = follower("follower3", &dirs, p3, &leader);
    fresh.wait_for_log("[replication] joined cluster");
    wait_for_value(&fresh, "x", Some("1"));
    let id = leader.status().cluster_id.expect("a leader always has an id");
    assert_eq!(fresh.status().cluster_id.as_deref(), Some(id.as_str()));
    assert_ne!(stranger.status().cluster_id.as_deref(), Some(id.as_str()));
}

#[test]
fn status_shows_every_expected_follower_and_its_lag() {
    // Goal: an operator sees each --peers entry, connected or not.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    leader.client().put(b"a", b"1").unwrap();
    f2.wait_for_lsn(1);
    let rows: HashMap<u16, kvstore::status::FollowerRow> =
        eventually("follower2's ACK is recorded", DEADLINE, || {
            let rows: HashMap<_, _> = leader
                .status()
                .followers
                .into_iter()
                .map(|r| (r.address.rsplit(':').next().unwrap().parse().unwrap(), r))
                .collect();
            (rows[&p2].acked_lsn == 1).then_some(rows)
        });
    assert_eq!(rows[&p2].state, "streaming");
    assert_eq!(rows[&p2].lag_records, 0);
    assert_eq!(rows[&p3].state, "connecting");
    assert_eq!(rows[&p3].lag_records, 1);
    assert_eq!(rows[&p3].last_ack_ms_ago, None);

    let table = kv_client(&["--port", &leader.port().to_string(), "status"]);
    let text = stdout(&table);
    assert!(text.contains("FOLLOWER") && text.contains("connecting"), "{text}");
    let json = kv_client(&["--port", &leader.port().to_string(), "status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(parsed["role"], "leader");
    let f2_status = f2.status();
    assert_eq!(f2_status.role, "follower");
    assert_eq!(f2_status.leader.unwrap().state, "streaming");
}

/// A hand-driven follower: says HELLO, then reads AppendEntries when told.
struct FakeFollower {
    stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl FakeFollower {
    fn connect(leader: &Node, last_lsn: u64) -> FakeFollower {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(leader.addr).unwrap();
        let mut hello = Vec::new();
        Message::FollowerHello {
            last_lsn,
            last_term: u64::from(last_lsn > 0),
            term: 0,
            listen_port: None,
            cluster_id: None,
        }
        .encode_frame(&mut hello);
        stream.write_all(&hello).unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        FakeFollower { stream, reader }
    }

    /// Read the LEADER_HELLO that answers our HELLO.
    fn leader_hello(&mut self) {
        let frame = kvstore::protocol::read_frame(&mut self.reader, u32::MAX).unwrap().unwrap();
        assert!(matches!(Message::decode(&frame).unwrap(), Message::LeaderHello { .. }));
    }

    /// Read one AppendEntries and ACK `ack_lsn` for it.
    fn next(&mut self, ack_lsn: u64) -> kvstore::protocol::AppendEntries {
        use std::io::Write;
        let frame = kvstore::protocol::read_frame(&mut self.reader, u32::MAX).unwrap().unwrap();
        let Message::AppendEntries(ae) = Message::decode(&frame).unwrap() else {
            panic!("expected AppendEntries");
        };
        let mut ack = Vec::new();
        let last = ae.records.last().map_or(ack_lsn.min(ae.prev_lsn), |r| r.lsn);
        Message::AppendEntriesAck { last_lsn: last, term: ae.term, digest_lsn: 0, digest: 0 }
            .encode_frame(&mut ack);
        self.stream.write_all(&ack).unwrap();
        ae
    }
}

#[test]
fn a_follower_that_stops_reading_still_gets_every_record_once() {
    // Goal: a follower that stalls loses nothing and gets nothing twice.
    // (The channel-overflow path itself is tested deterministically by the
    // unit tests in src/replication/leader.rs.) Method: a fake
    // follower stops reading (but keeps sending ACKs, so the link stays up)
    // while 48 MB of large values fill the socket buffers (up to ~36 MB on
    // loopback here) and then 3,000 single-record writes queue up behind
    // them; then it reads
    // everything and checks LSNs 1..=3048 arrive exactly once, in order.
    let dirs = tempfile::tempdir().unwrap();
    let leader = Node::start("leader", &dirs.path().join("leader"), &["--fsync=never"]);
    let mut fake = FakeFollower::connect(&leader, 0);
    fake.leader_hello();
    let first = fake.next(0);
    assert!(first.records.is_empty(), "an empty log sends a heartbeat first");

    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keepalive = {
        use std::io::Write;
        let mut acks = fake.stream.try_clone().unwrap();
        let reading = std::sync::Arc::clone(&reading);
        std::thread::spawn(move || {
            let mut ack = Vec::new();
            let zero = Message::AppendEntriesAck { last_lsn: 0, term: 0, digest_lsn: 0, digest: 0 };
            zero.encode_frame(&mut ack);
            while !reading.load(std::sync::atomic::Ordering::Acquire) {
                let _ = acks.write_all(&ack);
                std::thread::park_timeout(std::time::Duration::from_millis(200));
            }
        })
    };
    let mut client = leader.client();
    let big = vec![b'x'; 1024 * 1024];
    for i in 0..48 {
        client.put(format!("big{i}").as_bytes(), &big).unwrap();
    }
    for i in 0..3_000 {
        client.put(format!("small{i}").as_bytes(), b"v").unwrap();
    }
    reading.store(true, std::sync::atomic::Ordering::Release);
    keepalive.thread().unpark();
    keepalive.join().unwrap();

    let mut expected = 1;
    while expected <= 3_048 {
        for record in fake.next(expected - 1).records {
            assert_eq!(record.lsn, expected, "records arrive once each, in order");
            expected += 1;
        }
    }
}

#[test]
fn a_silent_peer_is_detected_on_both_sides() {
    // Goal: a peer that stops answering (here: SIGSTOP, like a hung host or
    // a half-open connection) is noticed within the replication timeout on
    // both sides, and replication resumes once it answers again.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    f2.wait_for_log("caught up");

    f2.signal("STOP");
    leader.wait_for_log("no ACK for 5000 ms (silent peer); closing the link");
    f2.signal("CONT");
    leader.client().put(b"a", b"1").unwrap();
    wait_for_value(&f2, "a", Some("1"));

    let mark = f2.log_len();
    leader.signal("STOP");
    f2.wait_for_log_from(mark, "nothing from the leader for 5000 ms (silent peer)");
    leader.signal("CONT");
    leader.client().put(b"b", b"2").unwrap();
    wait_for_value(&f2, "b", Some("2"));
}

#[test]
fn status_breaks_a_durable_write_into_stages_on_both_sides() {
    // Goal: after durable majority writes, the leader's status says how long
    // each stage took (queue, write, fsync, send, ACK, total), and a
    // follower's its own queue, write and fsync: the numbers an operator
    // needs to see where a slow write spends its time.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--write-concern=majority", "--fsync=always"]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let f3 = follower("follower3", &dirs, p3, &leader);
    f2.wait_for_log("caught up");
    f3.wait_for_log("caught up");
    let mut client = leader.client();
    for i in 0..20 {
        client.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let count = |report: &kvstore::status::StatusReport, stage: &str| {
        report.write_stages.iter().find(|s| s.stage == stage).map_or(0, |s| s.count)
    };
    // The ACKs of the last writes may still be on their way to the leader.
    eventually("every ACK counted", DEADLINE, || {
        let s = leader.status();
        (count(&s, "ack") >= 20).then_some(())
    });
    let s = leader.status();
    for stage in ["queue", "write", "fsync", "send"] {
        assert!(count(&s, stage) >= 1, "leader stage {stage}: {:?}", s.write_stages);
    }
    assert_eq!(count(&s, "total"), 20, "one sample per client write");
    let total = s.write_stages.iter().find(|s| s.stage == "total").unwrap();
    assert!(total.p50_us <= total.max_us && total.max_us > 0);
    let rendered = s.render();
    assert!(rendered.contains("write stages"), "{rendered}");
    wait_converged(&[&leader, &f2, &f3]);
    let f = f2.status();
    for stage in ["write", "fsync"] {
        assert!(count(&f, stage) >= 1, "follower stage {stage}: {:?}", f.write_stages);
    }
    assert_eq!(count(&f, "total"), 0, "a follower takes no client writes");
}
