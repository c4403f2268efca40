//! Issue "prove it survives": crashes, restarts, stalls, cut connections,
//! full disks and hostile bytes lose no acknowledged write.
//!
//! Every test here runs real processes. Counts are scaled for CI; set
//! `KVSTORE_SOAK=1` (or run `make soak`) for the full counts, and
//! `--nocapture` to see the figures each test reports.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::*;
use kvstore::client::Client;
use kvstore::protocol::Message;
use parking_lot::Mutex;

/// GET many keys with a pipeline of 64 requests in flight.
fn get_many(client: &mut Client, keys: &[String]) -> Vec<Option<Vec<u8>>> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(64) {
        for key in chunk {
            client.send(&Message::Get { key: key.clone().into_bytes() }).unwrap();
        }
        for _ in chunk {
            values.push(match client.receive().unwrap() {
                Message::Value { value } => Some(value),
                Message::NotFound => None,
                other => panic!("unexpected {other:?}"),
            });
        }
    }
    values
}

/// Keep writing unique keys to `port` until `stop`, reconnecting through
/// crashes; record every write the server acknowledged.
fn write_until(port: u16, id: usize, stop: &AtomicBool, acked: &Mutex<Vec<String>>) -> u64 {
    let addr = format!("127.0.0.1:{port}");
    let mut client: Option<Client> = None;
    let mut attempts = 0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        let Some(c) = client.as_mut() else {
            client = Client::connect(&addr).ok();
            if client.is_none() {
                std::thread::yield_now(); // the leader is restarting: redial
            }
            continue;
        };
        let key = format!("w{id}-{seq}");
        seq += 1;
        attempts += 1;
        match c.put(key.as_bytes(), b"acknowledged") {
            Ok(_) => acked.lock().push(key),
            Err(_) => client = None, // unknown outcome; the next write uses a new key
        }
    }
    attempts
}

/// Wait until every node has the leader's last LSN, then check they all
/// hold the same state (digest).
fn assert_converged(leader: &Node, followers: &[&Node]) -> u64 {
    let last = leader.last_lsn();
    let digest = leader.status().digest;
    for f in followers {
        f.wait_for_lsn(last);
        let status = f.status();
        assert_eq!(status.last_lsn, last, "{} has the leader's last LSN", f.name);
        assert_eq!(status.digest, digest, "{} has the leader's state", f.name);
    }
    last
}

/// Check a follower's WAL holds LSNs 1..=last exactly once each, in order.
fn assert_contiguous_wal(node: &Node, last: u64) {
    let dump = wal_dump(node);
    let lsns: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.strip_prefix("lsn="))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lsns, (1..=last).collect::<Vec<_>>(), "{}'s WAL is contiguous", node.name);
}

#[test]
fn leader_crashes_under_load_lose_no_acknowledged_write() {
    // Goal: fault 1: with --fsync always, every write the leader
    // acknowledged survives SIGKILL. Method: 8 clients write unique keys
    // and remember what was acked; the leader is killed at a random moment
    // 20 times and restarted; then every acked key must be there, and the
    // followers must converge on the leader's LSN and digest.
    let crashes = scale(20, 100);
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let mut leader = leader(&dirs, &[p2, p3], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let f3 = follower("follower3", &dirs, p3, &leader);
    let port = leader.port();
    let mut rng = Rng::seeded("leader_crashes");

    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let attempts: u64 = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|id| {
                s.spawn({
                    let (stop, acked) = (&stop, &acked);
                    move || write_until(port, id, stop, acked)
                })
            })
            .collect();
        for _ in 0..crashes {
            // Let the writers get going, then kill at a random moment.
            let before = acked.lock().len();
            eventually("writes are acknowledged", DEADLINE, || {
                (acked.lock().len() >= before + 20).then_some(())
            });
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            leader.restart();
        }
        stop.store(true, Ordering::Release);
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });

    let acked = acked.into_inner();
    let values = get_many(&mut leader.client(), &acked);
    let lost: Vec<&String> =
        acked.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    let last = assert_converged(&leader, &[&f2, &f3]);
    eprintln!(
        "leader crashes: {crashes} crashes, {attempts} writes attempted, {} acknowledged, \
         {} lost, final LSN {last}",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {:?}", &lost[..lost.len().min(10)]);
}

#[test]
fn followers_killed_at_random_during_writes_end_identical() {
    // Goal: fault 2: followers that crash and restart again and again end
    // with exactly the leader's log: same last LSN, same digest, and a WAL
    // whose LSNs are contiguous (no gap, no duplicate).
    let total = scale(100_000, 1_000_000) as usize;
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    let followers =
        [follower("follower2", &dirs, p2, &leader), follower("follower3", &dirs, p3, &leader)]
            .map(Mutex::new);
    let mut rng = Rng::seeded("followers_killed");
    let done = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let mut client = leader.client();
                s.spawn(move || write_keys(&mut client, w * total / 4, total / 4))
            })
            .collect();
        let killer = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
                followers[rng.below(2) as usize].lock().restart();
                kills.fetch_add(1, Ordering::AcqRel);
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        killer.join().unwrap();
    });
    let [f2, f3] = followers.map(Mutex::into_inner);
    let last = assert_converged(&leader, &[&f2, &f3]);
    assert_eq!(last, total as u64);
    assert_contiguous_wal(&f2, last);
    assert_contiguous_wal(&f3, last);
    eprintln!(
        "followers killed: {} follower crashes during {total} writes; both at LSN {last} with \
         the leader's digest",
        kills.load(Ordering::Acquire)
    );
}

/// A leader, and one follower that reaches it through a fault proxy.
fn proxied_pair(dirs: &tempfile::TempDir) -> (Node, Proxy, Node) {
    let p2 = free_port();
    let leader = leader(dirs, &[p2], &[]);
    let proxy = Proxy::start(leader.addr);
    let f2 = Node::start_on(
        "follower2",
        p2,
        &dirs.path().join("follower2"),
        &["--role=follower", &format!("--leader={}", proxy.port())],
    );
    f2.wait_for_log("caught up");
    (leader, proxy, f2)
}

#[test]
fn a_connection_cut_mid_frame_is_noticed_and_healed() {
    // Goal: fault 3a: a link reset in the middle of an AppendEntries is
    // seen by both sides, the follower redials, and nothing is lost or
    // applied twice.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, proxy, f2) = proxied_pair(&dirs);
    write_keys(&mut leader.client(), 0, 100);
    f2.wait_for_lsn(100);

    let (leader_mark, follower_mark) = (leader.log_len(), f2.log_len());
    proxy.set(Fault::CutMidFrame);
    leader.client().put(b"cut", b"1").unwrap();
    f2.wait_for_log_from(follower_mark, "link to leader");
    leader.wait_for_log_from(leader_mark, "disconnected");
    proxy.set(Fault::None);

    write_keys(&mut leader.client(), 100, 100);
    let last = assert_converged(&leader, &[&f2]);
    assert_contiguous_wal(&f2, last);
    assert_eq!(wal_dump(&f2), wal_dump(&leader));
}

#[test]
fn a_silent_link_is_detected_within_the_timeout_and_healed() {
    // Goal: fault 3b: a partition that closes nothing (a half-open link)
    // is detected by both sides within the replication timeout (5 s), and
    // replication resumes when the path heals.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, proxy, f2) = proxied_pair(&dirs);
    let (leader_mark, follower_mark) = (leader.log_len(), f2.log_len());
    proxy.set(Fault::Blackhole);
    let cut_at = Instant::now();
    leader.client().put(b"during", b"1").unwrap();
    f2.wait_for_log_from(follower_mark, "nothing from the leader for 5000 ms");
    leader.wait_for_log_from(leader_mark, "no ACK for 5000 ms");
    let detected = cut_at.elapsed();
    assert!(detected < Duration::from_secs(10), "detected after {detected:?}");
    proxy.set(Fault::None);

    leader.client().put(b"after", b"2").unwrap();
    wait_for_value(&f2, "during", Some("1"));
    wait_for_value(&f2, "after", Some("2"));
    let last = assert_converged(&leader, &[&f2]);
    assert_contiguous_wal(&f2, last);
    eprintln!("silent link: both sides noticed within {detected:?}");
}

#[test]
fn a_slow_link_delays_but_never_breaks_replication() {
    // Goal: fault 3c: 100 ms of delay on every chunk slows replication but
    // causes no timeout, reconnect, loss or duplicate.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, proxy, f2) = proxied_pair(&dirs);
    let mark = f2.log_len();
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let mut client = leader.client();
    for i in 0..30 {
        client.put(format!("slow{i}").as_bytes(), b"v").unwrap();
    }
    write_keys(&mut client, 0, 1_000);
    let last = assert_converged(&leader, &[&f2]);
    assert_contiguous_wal(&f2, last);
    let logs = f2.log_text();
    let after: Vec<&str> = logs.lines().skip(mark).collect();
    assert!(!after.iter().any(|l| l.contains("link to leader")), "no reconnect: {after:?}");
}

#[test]
fn a_stalled_follower_costs_the_leader_bounded_memory() {
    // Goal: fault 4: while one follower is frozen (SIGSTOP), the leader's
    // memory stays bounded and the other follower keeps streaming; after
    // SIGCONT the frozen one catches up from the WAL. Method: overwrite a
    // small key space so the map stays small, and sample the leader's RSS.
    let records = scale(200_000, 1_000_000) as usize;
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &["--fsync=never"]);
    let follower_args = |port: u16| {
        vec!["--role=follower".to_string(), format!("--leader={port}"), "--fsync=never".into()]
    };
    let start_follower = |name: &str, port: u16| {
        let args = follower_args(leader.port());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_on(name, port, &dirs.path().join(name), &args)
    };
    let f2 = start_follower("follower2", p2);
    let f3 = start_follower("follower3", p3);
    f3.wait_for_log("caught up");
    let rss_before = leader.rss_kib();

    f3.signal("STOP");
    let done = AtomicBool::new(false);
    let (rss_max, lag_max) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut rss_max, mut lag_max) = (0, 0);
            while !done.load(Ordering::Acquire) {
                rss_max = rss_max.max(leader.rss_kib());
                let (l, f) = (leader.last_lsn(), f2.last_lsn());
                lag_max = lag_max.max(l.saturating_sub(f));
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss_max, lag_max)
        });
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let mut client = leader.client();
                s.spawn(move || {
                    let value = vec![b'v'; 100];
                    let mut outstanding = 0;
                    for i in 0..records / 4 {
                        let key = format!("key{}", (w * 7919 + i) % 10_000).into_bytes();
                        client.send(&Message::Put { key, value: value.clone() }).unwrap();
                        outstanding += 1;
                        if outstanding == 64 {
                            client.receive().unwrap();
                            outstanding -= 1;
                        }
                    }
                    for _ in 0..outstanding {
                        client.receive().unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        sampler.join().unwrap()
    });
    f2.wait_for_lsn(records as u64);
    f3.signal("CONT");
    let last = assert_converged(&leader, &[&f2, &f3]);
    eprintln!(
        "stalled follower: {records} records written; leader RSS {} MiB before, {} MiB max; \
         streaming follower's max lag {lag_max} records; frozen follower caught up to LSN {last}",
        rss_before / 1024,
        rss_max / 1024
    );
    assert!(rss_max < 256 * 1024, "leader RSS reached {rss_max} KiB (bound: 256 MiB)");
}

#[test]
fn a_full_disk_refuses_writes_without_applying_them_and_recovers() {
    // Goal: fault 5: when the WAL cannot grow (here: a file-size limit of
    // 12 MiB, as a full disk would), the client gets an ERROR, the write is
    // neither acknowledged nor applied, and once the limit is lifted the
    // node accepts writes again; a restart finds exactly the acked writes.
    let dirs = tempfile::tempdir().unwrap();
    // SIGXFSZ would kill the process; ignored, the write fails with EFBIG.
    let mut node = Node::start_with_prefix(
        "leader",
        &dirs.path().join("leader"),
        &[],
        "trap '' XFSZ; ulimit -S -f 24576", // 512-byte blocks (POSIX sh): 12 MiB
    );
    let mut client = node.client();
    let value = vec![b'x'; 512 * 1024];
    let mut acked = HashMap::new();
    let refusal = (0..100)
        .find_map(|i| match client.put(format!("k{i}").as_bytes(), &value) {
            Ok(lsn) => {
                acked.insert(format!("k{i}"), lsn);
                None
            }
            Err(e) => Some((i, e)),
        })
        .expect("the file-size limit is reached");
    let (failed, err) = refusal;
    assert!(err.to_string().contains("the WAL cannot be written"), "{err}");
    node.wait_for_log("queued write(s) refused, none applied");
    assert_eq!(client.get(format!("k{failed}").as_bytes()).unwrap(), None, "not applied");
    let last = node.last_lsn();
    assert_eq!(last, acked.len() as u64);

    // Space returns.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &node.pid().to_string(), "--fsize=unlimited"])
        .output()
        .unwrap();
    assert!(lifted.status.success(), "prlimit: {}", String::from_utf8_lossy(&lifted.stderr));
    assert_eq!(client.put(b"after", b"1").unwrap(), last + 1, "the LSN is reused, no gap");

    node.restart();
    let mut client = node.client();
    for key in acked.keys() {
        assert_eq!(client.get(key.as_bytes()).unwrap().as_deref(), Some(&value[..]), "{key}");
    }
    assert_eq!(client.get(format!("k{failed}").as_bytes()).unwrap(), None);
    assert_eq!(node.last_lsn(), last + 1);
    eprintln!(
        "full disk: {} writes acked, write {failed} refused, recovered at LSN {}",
        acked.len(),
        last + 1
    );
}

#[test]
fn hostile_frames_to_leader_and_follower_never_disturb_a_good_client() {
    // Goal: fault 6: thousands of random and adversarial frames sent to a
    // leader and to a follower get errors and closed connections, nothing
    // reaches any WAL, and a well-behaved client is served throughout.
    use std::io::{Read, Write};
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    f2.wait_for_log("caught up");
    let mut rng = Rng::seeded("hostile");
    let rounds = scale(2_000, 20_000);

    let adversarial = |rng: &mut Rng| -> Vec<u8> {
        let frame = |payload: &[u8], claimed: Option<u32>| {
            let len = claimed.unwrap_or(payload.len() as u32);
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(payload);
            out
        };
        match rng.below(8) {
            0 => frame(&[], Some(u32::MAX)),    // huge length
            1 => frame(&[], Some(0)),           // zero length
            2 => frame(&[0x7f, 1, 2, 3], None), // unknown type
            3 => {
                // FOLLOWER_HELLO from a stranger with an absurd LSN
                let mut hello = Vec::new();
                Message::FollowerHello {
                    last_lsn: u64::MAX - rng.below(10),
                    last_term: u64::MAX,
                    term: u64::MAX,
                    listen_port: Some(1),
                    cluster_id: Some(kvstore::cluster::ClusterId([7; 16])),
                }
                .encode_frame(&mut hello);
                hello
            }
            4 => {
                // AppendEntries sent *to* a node, with a plausible record
                let mut ae = Vec::new();
                let header = kvstore::protocol::AppendEntriesHeader {
                    term: u64::MAX,
                    prev_lsn: 0,
                    prev_term: 0,
                    commit_lsn: 1,
                    leader_last_lsn: 1,
                };
                kvstore::protocol::message::encode_append_entries(&mut ae, &header, &[]);
                frame(&ae, None)
            }
            5 => frame(&[0x01, 0, 0, 0, 200, b'k'], None), // PUT whose key_len lies
            6 => (0..rng.below(64)).map(|_| rng.below(256) as u8).collect(), // noise
            _ => {
                let len = 1 + rng.below(32) as usize;
                let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                frame(&payload, None)
            }
        }
    };

    let stop = AtomicBool::new(false);
    let good_ops = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut to_leader, mut to_follower) = (leader.client(), f2.client());
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let key = format!("good{i}");
                let lsn = to_leader.put(key.as_bytes(), b"v").unwrap();
                assert_eq!(lsn, i + 1, "only the good client's writes reach the WAL");
                assert_eq!(to_leader.get(key.as_bytes()).unwrap(), Some(b"v".to_vec()));
                let _ = to_follower.get(key.as_bytes()).unwrap();
                good_ops.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
        });
        // A client that connects and never sends must not block anyone.
        let _idle =
            [std::net::TcpStream::connect(leader.addr), std::net::TcpStream::connect(f2.addr)];
        for round in 0..rounds {
            let target = if round % 2 == 0 { leader.addr } else { f2.addr };
            let mut stream = std::net::TcpStream::connect(target).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = stream.write_all(&adversarial(&mut rng));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply); // an ERROR, or nothing; then closed
        }
        stop.store(true, Ordering::Release);
    });
    let good = good_ops.load(Ordering::Acquire);
    assert!(good > 0);
    assert_eq!(leader.last_lsn(), good, "the WAL holds the good client's writes only");
    assert_converged(&leader, &[&f2]);
    eprintln!("hostile frames: {rounds} adversarial connections; {good} good round trips served");
}
