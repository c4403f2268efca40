//! Snapshots and log compaction, end to end: the disk stays bounded, a
//! restart replays only the tail, a crash anywhere in a snapshot or a
//! compaction loses no acknowledged write, a damaged snapshot is never
//! loaded, and a follower the leader's log has left behind gets the
//! snapshot, then the tail — also when the transfer is cut half-way.
//!
//! Counts are scaled for CI; `KVSTORE_SOAK=1` (or `make soak`) runs the
//! full ones (a million overwrites, sixty crashes).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::*;
use kvstore::client::Client;
use kvstore::protocol::Message;

/// Small segments and thresholds, so a few hundred thousand writes roll
/// and compact the log many times.
const SEGMENT_BYTES: u64 = 64 * 1024;
const SNAPSHOT_AFTER_BYTES: u64 = 256 * 1024;
const RETAIN_BYTES: u64 = 128 * 1024;

/// The bound the data dir stays under while 1,000 keys are overwritten
/// again and again, summed from what may be on disk at once:
/// - WAL: the newest `--wal-retain-bytes` kept at the last compaction,
///   the `--snapshot-after-bytes` written since the last snapshot, and two
///   segments of slack (the one being written, and the one a compaction
///   could not delete yet because it also holds records after the
///   snapshot);
/// - an index beside each of those segments: 2,048 slots of 8 bytes (a
///   64 KiB segment holds about 1,600 records of these sizes);
/// - three snapshots of 1,000 pairs of about 21 bytes: the two kept and
///   one being written;
/// - `STATE`, `CLUSTER_ID`, `LOCK`: a 4 KiB block each.
const DISK_BOUND_BYTES: u64 =
    WAL_BOUND_BYTES + (WAL_BOUND_BYTES / SEGMENT_BYTES + 2) * 16 * 1024 + 3 * 32 * 1024 + 16 * 1024;
const WAL_BOUND_BYTES: u64 = RETAIN_BYTES + SNAPSHOT_AFTER_BYTES + 2 * SEGMENT_BYTES;

fn small_log_flags() -> Vec<String> {
    vec![
        format!("--wal-segment-bytes={SEGMENT_BYTES}"),
        format!("--snapshot-after-bytes={SNAPSHOT_AFTER_BYTES}"),
        format!("--wal-retain-bytes={RETAIN_BYTES}"),
        "--fsync=never".into(),
    ]
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, as `du`
/// counts them: the sparse tail of an index file costs nothing).
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_use(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// PUT `key{i % keys}` = `value` for `count` writes, pipelined; returns
/// the last value written to each key.
fn overwrite(
    client: &mut Client,
    keys: u64,
    range: std::ops::Range<u64>,
    value: impl Fn(u64) -> String,
    last: &mut HashMap<String, String>,
) {
    const WINDOW: u64 = 64;
    let mut outstanding = 0;
    for seq in range {
        let (key, value) = (format!("key{}", seq % keys), value(seq));
        client
            .send(&Message::Put { key: key.clone().into(), value: value.clone().into() })
            .unwrap();
        last.insert(key, value);
        outstanding += 1;
        if outstanding == WINDOW {
            assert!(matches!(client.receive().unwrap(), Message::Ok { .. }));
            outstanding -= 1;
        }
    }
    for _ in 0..outstanding {
        assert!(matches!(client.receive().unwrap(), Message::Ok { .. }));
    }
}

/// Every key of `expected` has its value on `node`.
fn assert_values(node: &Node, expected: &HashMap<String, String>) {
    let mut client = node.client();
    let keys: Vec<&String> = expected.keys().collect();
    for chunk in keys.chunks(64) {
        for key in chunk {
            client.send(&Message::Get { key: key.as_bytes().to_vec() }).unwrap();
        }
        for key in chunk {
            match client.receive().unwrap() {
                Message::Value { value } => {
                    assert_eq!(value, expected[*key].as_bytes(), "{} on {}", key, node.name)
                }
                other => panic!("{key} on {}: {other:?}", node.name),
            }
        }
    }
}

/// The number in `replayed N record(s)` of the start-up line.
fn replayed(line: &str) -> u64 {
    let after = line.split("replayed ").nth(1).unwrap_or_else(|| panic!("no count in {line:?}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn overwrites_of_1000_keys_keep_the_disk_bounded_and_a_restart_replays_only_the_tail() {
    // Goal: with snapshots and compaction the data dir stays under a fixed
    // bound however many writes there are, and a restart replays only the
    // WAL after the last snapshot. Method: overwrite 1,000 keys 100,000
    // times (1,000,000 with KVSTORE_SOAK) with 64 KiB segments, measuring
    // the data dir after every 10,000 writes; SIGKILL, restart, check the
    // replay count in the start-up line, then every key.
    let writes = scale(100_000, 1_000_000);
    let dirs = tempfile::tempdir().unwrap();
    let data = dirs.path().join("node");
    let flags = small_log_flags();
    let mut node = Node::start("node", &data, &strs(&flags));
    let mut client = node.client();
    let mut last = HashMap::new();
    let mut most = 0;
    for batch in 0..writes / 10_000 {
        let range = batch * 10_000..(batch + 1) * 10_000;
        overwrite(&mut client, 1000, range, |seq| format!("v{seq}"), &mut last);
        let used = disk_use(&data);
        most = most.max(used);
        assert!(
            used <= DISK_BOUND_BYTES,
            "{used} bytes on disk after {} writes",
            (batch + 1) * 10_000
        );
    }
    let status = node.status();
    let storage = status.storage.expect("storage status");
    let snapshot = storage.snapshot.clone().expect("a snapshot was taken");
    assert!(storage.wal_first_lsn > 1, "the log was compacted: {storage:?}");
    eprintln!(
        "{writes} writes: at most {most} bytes on disk (bound {DISK_BOUND_BYTES}); WAL {} bytes in {} \
         segments from LSN {}; snapshot at LSN {}",
        storage.wal_bytes, storage.wal_segments, storage.wal_first_lsn, snapshot.lsn
    );
    drop(client);

    // The restart replays only what follows the last snapshot: at most the
    // WAL that calls for a snapshot and a segment, in entries of at least
    // 36 bytes (8 + 25 + "key0" ... "v0").
    node.kill();
    let from = node.log_len();
    node.restart();
    let line = node.wait_for_log_from(from, "[wal] opened");
    let tail_max = (SNAPSHOT_AFTER_BYTES + SEGMENT_BYTES) / 36;
    assert!(replayed(&line) <= tail_max, "replayed more than the tail ({tail_max}): {line}");
    node.wait_for_log_from(from, "[snapshot] loaded");
    assert!(node.last_lsn() >= writes, "a restarted leader may add its NOOP");
    assert_values(&node, &last);
}

/// Where a crash is made to happen: a failpoint, and how many hits of it
/// to let pass (`KVSTORE_FAILPOINT=name@N`), or a SIGKILL after a delay.
fn crash_point(rng: &mut Rng) -> (Option<String>, u64) {
    const FAILPOINTS: [(&str, u64); 6] = [
        ("snapshot-chunk", 6),
        ("snapshot-before-fsync", 3),
        ("snapshot-before-rename", 3),
        ("snapshot-after-rename", 3),
        ("compact-between-deletes", 4),
        ("segment-create-before-rename", 20),
    ];
    let pick = rng.below(FAILPOINTS.len() as u64 + 1) as usize;
    match FAILPOINTS.get(pick) {
        Some((name, hits)) => (Some(format!("{name}@{}", 1 + rng.below(*hits))), 0),
        None => (None, 50 + rng.below(500)),
    }
}

/// Write `seq`-numbered values to random keys on `port` until the node
/// dies or `max` writes are acknowledged; record what was acknowledged and
/// what was sent, per key.
fn write_until_dead(
    port: u16,
    rng: &mut Rng,
    max: u64,
    seq: &mut u64,
    acked: &mut HashMap<u64, u64>,
    sent: &mut HashMap<u64, u64>,
) {
    let Ok(mut client) = Client::connect(format!("127.0.0.1:{port}")) else { return };
    let mut in_flight = std::collections::VecDeque::new();
    let mut done = 0;
    while done < max {
        *seq += 1;
        let key = rng.below(1000);
        let value = format!("{:012}", *seq) + &"x".repeat(1100);
        if client
            .send(&Message::Put { key: format!("key{key}").into(), value: value.into() })
            .is_err()
        {
            return;
        }
        sent.insert(key, *seq);
        in_flight.push_back((key, *seq));
        while in_flight.len() >= 32
            || (done + in_flight.len() as u64 >= max && !in_flight.is_empty())
        {
            match client.receive() {
                Ok(Message::Ok { .. }) => {
                    let (key, s) = in_flight.pop_front().unwrap();
                    acked.insert(key, s);
                    done += 1;
                }
                _ => return,
            }
        }
    }
}

#[test]
fn a_crash_anywhere_in_snapshots_and_compaction_loses_no_acknowledged_write() {
    // Goal: the snapshot's .tmp/fsync/rename/dir-fsync, the compaction's
    // deletions and the segment rolls are crash-safe: after a crash at any
    // of them the node restarts with every acknowledged write. Method: one
    // data dir, 8 rounds (60 with KVSTORE_SOAK); each round starts the node
    // with a failpoint and a hit count picked from a printed seed (or plans
    // a SIGKILL after a random delay), writes 1.1 KB values to 1,000 keys
    // until it dies (killing it if the failpoint never fires), restarts it
    // and checks that each key holds its last acknowledged value or a later
    // one that was sent.
    let mut rng = Rng::seeded("snapshot crash test");
    let rounds = scale(8, 60);
    let dirs = tempfile::tempdir().unwrap();
    let data = dirs.path().join("node");
    let port = free_port();
    let flags = vec![
        "--wal-segment-bytes=65536".to_string(),
        "--snapshot-after-bytes=262144".to_string(),
        "--wal-retain-bytes=65536".to_string(),
        "--fsync=never".to_string(),
    ];
    let (mut seq, mut acked, mut sent) = (0u64, HashMap::new(), HashMap::new());
    for round in 0..rounds {
        let (failpoint, kill_after_ms) = crash_point(&mut rng);
        let env: Vec<(&str, &str)> =
            failpoint.iter().map(|f| ("KVSTORE_FAILPOINT", f.as_str())).collect();
        let mut node = Node::launch_with_env("node", port, &data, &strs(&flags), &env);
        let ready = eventually("the node listens or dies", DEADLINE, || {
            if node.log_text().contains("listening on") {
                return Some(true);
            }
            node.exit_status().map(|_| false)
        });
        if ready {
            std::thread::scope(|s| {
                if failpoint.is_none() {
                    let node = &node;
                    s.spawn(move || {
                        std::thread::sleep(Duration::from_millis(kill_after_ms));
                        node.signal("KILL");
                    });
                }
                write_until_dead(port, &mut rng, 3000, &mut seq, &mut acked, &mut sent);
            });
        }
        let how = failpoint.clone().unwrap_or_else(|| format!("SIGKILL after {kill_after_ms} ms"));
        let fired = node.log_text().contains("[failpoint]");
        node.kill();
        drop(node);
        eprintln!(
            "round {round}: {how}{}",
            if failpoint.is_some() && !fired { " (not reached; SIGKILL)" } else { "" }
        );

        let back = Node::start_on("node", port, &data, &strs(&flags));
        let mut client = back.client();
        for key in 0..1000u64 {
            let Some(&sent_seq) = sent.get(&key) else { continue };
            let value = client.get(format!("key{key}").as_bytes()).unwrap();
            let got: u64 = value
                .as_deref()
                .and_then(|v| std::str::from_utf8(&v[..12]).ok()?.parse().ok())
                .unwrap_or(0);
            let want = acked.get(&key).copied().unwrap_or(0);
            assert!(
                got >= want && got <= sent_seq,
                "round {round} ({how}): key{key} holds write {got}; acknowledged {want}, sent up to {sent_seq}"
            );
            // What survived is now the floor for the next round.
            acked.insert(key, got);
            sent.insert(key, got);
        }
        drop(client);
        drop(back); // SIGKILL
    }
}

/// A node with snapshots only on demand, a short-lived WAL (`retain`
/// bytes kept), and 2,000 keys written twice with a snapshot after each
/// pass; then killed. Returns the node, the newest snapshot's path, and
/// the values every key must have.
fn two_snapshots(
    dirs: &tempfile::TempDir,
    retain: u64,
) -> (Node, std::path::PathBuf, HashMap<String, String>) {
    let flags = vec![
        "--wal-segment-bytes=16384".to_string(),
        format!("--wal-retain-bytes={retain}"),
        "--fsync=never".into(),
    ];
    let mut node = Node::start("node", &dirs.path().join("node"), &strs(&flags));
    let mut client = node.client();
    let mut last = HashMap::new();
    overwrite(&mut client, 2000, 0..2000, |seq| format!("first{seq}"), &mut last);
    assert!(client.snapshot().unwrap().starts_with("snapshot at LSN 2,000"));
    overwrite(&mut client, 2000, 2000..4000, |seq| format!("second{seq}"), &mut last);
    client.snapshot().unwrap();
    overwrite(&mut client, 2000, 4000..4100, |seq| format!("tail{seq}"), &mut last);
    drop(client);
    node.kill();
    let newest = node.data_dir.join("snapshots").join(format!("{:020}.snap", 4000));
    assert!(newest.exists());
    (node, newest, last)
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_snapshot_is_set_aside_and_the_older_one_loaded_with_its_wal() {
    // Goal: a flipped byte in the newest snapshot is detected, never
    // loaded, and start-up falls back to the older snapshot and replays the
    // WAL after it (kept: --wal-retain-bytes is large). Method: snapshots
    // at LSN 2,000 and 4,000, 100 records after; flip a byte in the middle
    // of the newest; restart; every key has its last value.
    let dirs = tempfile::tempdir().unwrap();
    let (mut node, newest, last) = two_snapshots(&dirs, 100 * 1024 * 1024);
    flip_a_byte(&newest);
    let from = node.log_len();
    node.restart();
    let line = node.wait_for_log_from(from, "[snapshot] corrupt snapshot");
    assert!(line.contains("chunk checksum mismatch"), "{line}");
    node.wait_for_log_from(from, "00000000000000002000.snap: LSN 2,000");
    let opened = node.wait_for_log_from(from, "[wal] opened");
    assert_eq!(replayed(&opened), 2100, "{opened}");
    assert!(newest.with_extension("snap.corrupt").exists(), "set aside for inspection");
    assert_values(&node, &last);
    assert!(node.last_lsn() >= 4100);
}

#[test]
fn a_damaged_snapshot_whose_wal_is_gone_stops_start_up_with_a_clear_error() {
    // Goal: never start with silently missing data. Method: as above, but
    // the WAL after the older snapshot was compacted away; start-up must
    // refuse, saying which records are missing and why.
    let dirs = tempfile::tempdir().unwrap();
    let (node, newest, _) = two_snapshots(&dirs, 16384);
    flip_a_byte(&newest);
    let data = node.data_dir.clone();
    drop(node);
    let refused = Node::launch_with_env("refused", 0, &data, &[], &[]);
    assert_eq!(refused.wait_exit(), "exit status: 1");
    let line = refused.wait_for_log_text("cannot start");
    assert!(
        line.contains("records LSN 1..") && line.contains("refusing to start with missing data"),
        "{line}"
    );
    assert!(
        line.contains("is damaged") && line.contains("ends at LSN 2000 but the WAL starts at LSN"),
        "{line}"
    );
}

/// A leader expecting the followers on `peers` whose log compacts quickly
/// (a snapshot every `snapshot_after` bytes of WAL) and which forgets a
/// silent follower after a second.
fn compacting_leader(dirs: &tempfile::TempDir, peers: &[u16], snapshot_after: u64) -> Node {
    let snapshot_after = format!("--snapshot-after-bytes={snapshot_after}");
    let flags = [
        "--wal-segment-bytes=65536",
        &snapshot_after,
        "--wal-retain-bytes=65536",
        "--wal-retain-max-bytes=65536",
        "--follower-retain-secs=1",
        "--fsync=never",
    ];
    leader(dirs, peers, &flags)
}

/// Overwrite until the leader's log starts after LSN `lsn`.
fn compact_past(
    leader: &Node,
    lsn: u64,
    keys: u64,
    value_bytes: usize,
    last: &mut HashMap<String, String>,
) {
    let mut client = leader.client();
    let mut seq = leader.last_lsn();
    eventually(&format!("the leader compacts past LSN {lsn}"), Duration::from_secs(60), || {
        overwrite(
            &mut client,
            keys,
            seq..seq + 2000,
            |s| format!("{s:08}{}", "x".repeat(value_bytes)),
            last,
        );
        seq += 2000;
        let first = leader.status().storage?.wal_first_lsn;
        (first > lsn + 1).then_some(())
    });
}

/// The leader of [`compacting_leader`] and follower2, and the port
/// follower3 is to use (each test starts follower3 its own way). With
/// `member3` false, follower3 is an extra follower, not in `--peers`: the
/// leader then never announces itself to it, which would lead it straight
/// to the leader's own address, around a fault proxy.
fn trio(dirs: &tempfile::TempDir, snapshot_after: u64, member3: bool) -> (Node, Node, u16) {
    let (p2, p3) = (free_port(), free_port());
    let peers = if member3 { vec![p2, p3] } else { vec![p2] };
    let leader = compacting_leader(dirs, &peers, snapshot_after);
    let f2 = follower("follower2", dirs, p2, &leader);
    (leader, f2, p3)
}

/// Write `keys` keys of `value_bytes`, wait until `f3` has them, stop it,
/// then overwrite until the leader's log starts after them. Returns the
/// digest `f3` had when it stopped.
fn leave_behind(
    leader: &Node,
    f3: &mut Node,
    (keys, value_bytes): (u64, usize),
    last: &mut HashMap<String, String>,
) -> String {
    let value = |s: u64| format!("{s:08}{}", "v".repeat(value_bytes));
    overwrite(&mut leader.client(), keys, 0..keys, value, last);
    f3.wait_for_lsn(keys);
    let digest = f3.status().digest;
    f3.kill();
    compact_past(leader, keys, keys, value_bytes, last);
    digest
}

#[test]
fn a_follower_left_behind_by_compaction_gets_the_snapshot_then_the_tail() {
    // Goal: lesson 5 when the leader no longer has the records: the
    // follower gets the snapshot, then the records after it, and ends with
    // the leader's digest. Method: leader + 2 followers; stop follower3;
    // overwrite until the leader's log starts after follower3's last LSN;
    // restart follower3; check both sides' log lines, then convergence.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, f2, p3) = trio(&dirs, SNAPSHOT_AFTER_BYTES, true);
    let mut f3 = follower("follower3", &dirs, p3, &leader);
    let mut last = HashMap::new();
    leave_behind(&leader, &mut f3, (1000, 100), &mut last);

    let from = leader.log_len();
    f3.restart();
    let line = leader.wait_for_log_from(from, "sending snapshot");
    assert!(
        line.contains(&format!(
            "follower 127.0.0.1:{p3} asks for records after LSN 1,000; our log starts at LSN"
        )),
        "{line}"
    );
    assert!(
        line.contains("(snapshot at ") && line.contains(" keys, ") && line.contains("), then "),
        "{line}"
    );
    f3.wait_for_log("installed the snapshot at LSN");
    overwrite(&mut leader.client(), 1000, 0..200, |s| format!("after{s}"), &mut last);
    wait_converged(&[&leader, &f2, &f3]);
    assert_values(&f3, &last);
}

#[test]
fn a_snapshot_transfer_cut_half_way_resumes_and_ends_with_the_leaders_digest() {
    // Goal: a transfer cut mid-message leaves the follower's old state
    // intact, and on reconnect it resumes from the bytes it kept. Method:
    // follower3 (an extra follower) reaches the leader through the fault
    // proxy; a snapshot of
    // 20,000 keys of 500 bytes (about 10 MB) crosses a link slowed to a few
    // MB/s; once 2 MB are through, the proxy cuts the link half-way through
    // a read; the follower redials and must resume, not start over.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, f2, p3) = trio(&dirs, 4 * 1024 * 1024, false);
    let proxy = Proxy::start(leader.addr);
    let leader_arg = format!("--leader={}", proxy.port());
    let mut f3 = Node::start_on(
        "follower3",
        p3,
        &dirs.path().join("follower3"),
        &["--role=follower", &leader_arg],
    );
    let mut last = HashMap::new();
    let before = leave_behind(&leader, &mut f3, (20_000, 500), &mut last);

    proxy.set(Fault::Delay(Duration::from_millis(15)));
    f3.restart();
    eventually("2 MB of the snapshot reach follower3", DEADLINE, || {
        let resync = f3.client().status().ok()?.resync?;
        (resync.received_bytes >= 2_000_000).then_some(())
    });
    assert_eq!(f3.status().digest, before, "the old state is intact during the transfer");
    let from = f3.log_len();
    proxy.set(Fault::CutMidFrame);
    f3.wait_for_log_from(from, "link to leader");
    proxy.set(Fault::None);
    let resumed = f3.wait_for_log_from(from, "resuming after the");
    assert!(resumed.contains("MB already here"), "{resumed}");
    leader.wait_for_log("already holds");
    f3.wait_for_log_from(from, "installed the snapshot at LSN");
    wait_converged(&[&leader, &f2, &f3]);
    assert_values(&f3, &last);
}

#[test]
fn a_follower_that_crashes_during_an_install_recovers_and_installs() {
    // Goal: a crash at any step of the follower's install — mid-transfer,
    // after verifying but before the rename, after the rename while the old
    // log is removed — leaves a node that restarts consistent and ends with
    // the leader's digest. Method: leave follower3 behind a compacted log
    // once, keep a copy of its data dir, and for each failpoint restart a
    // fresh copy with it armed (it aborts), then without (it recovers).
    let dirs = tempfile::tempdir().unwrap();
    let (leader, f2, p3) = trio(&dirs, SNAPSHOT_AFTER_BYTES, true);
    // Small segments, so that removing the old log takes several steps.
    let leader_arg = format!("--leader={}", leader.port());
    let args = ["--role=follower", leader_arg.as_str(), "--wal-segment-bytes=16384"];
    let mut f3 = Node::start_on("follower3", p3, &dirs.path().join("follower3"), &args);
    let mut last = HashMap::new();
    leave_behind(&leader, &mut f3, (1000, 100), &mut last);
    let behind = dirs.path().join("follower3-behind");
    copy_dir(&dirs.path().join("follower3"), &behind);
    for failpoint in
        ["install-piece", "install-before-rename", "install-after-rename", "reset-between-deletes"]
    {
        let dir = dirs.path().join(format!("f3-{failpoint}"));
        copy_dir(&behind, &dir);
        Node::crash_at_failpoint("follower3", p3, &dir, &args, failpoint);
        let back = Node::start_on("follower3", p3, &dir, &args);
        // Before the rename the transfer is finished on return; after it,
        // start-up finds the snapshot already there, superseding the log.
        let committed = matches!(failpoint, "install-after-rename" | "reset-between-deletes");
        back.wait_for_log(if committed {
            "the snapshot supersedes the old log"
        } else {
            "installed the snapshot at LSN"
        });
        wait_converged(&[&leader, &f2, &back]);
        assert_values(&back, &last);
        eprintln!("{failpoint}: recovered and converged");
    }
}
