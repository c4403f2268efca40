//! Watching replication work, with real processes: `kv_client watch` (an
//! observer of the leader's stream), `--trace-replication` (each node's
//! side of the conversation in its log) and `status --timeline` (the
//! leader's bookkeeping, drawn). Lessons 3, 4 and 5, made visible.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::*;
use kvstore::error::{Error, ErrorCode};
use parking_lot::Mutex;

/// A running `kv_client watch`, its output collected line by line; killed
/// when dropped.
struct Watch {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    /// Start `kv_client --port PORT watch ARGS...`.
    fn start(port: u16, args: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kv_client"))
            .arg("--port")
            .arg(port.to_string())
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kv_client watch");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Watch { child, stdout, stderr }
    }

    /// Start and wait until the leader has answered (it is attached).
    fn attached(port: u16, args: &[&str]) -> Watch {
        let watch = Watch::start(port, args);
        watch.wait_for_line("LeaderHello");
        watch
    }

    /// Wait for an output line containing `needle`; return it.
    fn wait_for_line(&self, needle: &str) -> String {
        eventually(&format!("watch prints {needle:?}"), DEADLINE, || {
            self.stdout.lock().iter().find(|l| l.contains(needle)).cloned()
        })
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().clone()
    }

    /// Wait until the process exits; return (success, stderr).
    fn wait_exit(&mut self) -> (bool, String) {
        let status =
            eventually("kv_client watch exits", DEADLINE, || self.child.try_wait().ok().flatten());
        // The reader thread may still be draining the pipe.
        let text = eventually("watch's stderr is read", DEADLINE, || {
            let text = self.stderr.lock().join("\n");
            (!text.is_empty()).then_some(text)
        });
        (status.success(), text)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== kv_client watch printed ====\n{}", self.lines().join("\n"));
            eprintln!("==== and on stderr ====\n{}", self.stderr.lock().join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The LSNs of the records in watch's lines, in the order printed.
fn record_lsns(lines: &[String]) -> Vec<u64> {
    let mut lsns = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("AppendEntries")) {
        let Some((_, records)) = line.split_once(": ") else { continue };
        for record in records.split('[').skip(1) {
            let lsn = record.split([' ', ']']).next().unwrap();
            lsns.push(lsn.parse().unwrap_or_else(|_| panic!("no LSN in {line:?}")));
        }
    }
    lsns
}

#[test]
fn watch_prints_the_puts_made_while_it_runs_in_lsn_order() {
    // Goal: an observer sees each write as it is replicated, decoded, in
    // LSN order, in AppendEntries of the leader's term, and the heartbeats
    // in between unless they are hidden.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let _f2 = follower("follower2", &dirs, p2, &leader);
    let watch = Watch::attached(leader.port(), &[]);
    let quiet = Watch::attached(leader.port(), &["--no-heartbeats"]);

    let mut client = leader.client();
    for i in 1..=5 {
        client.put(format!("user:{i}").as_bytes(), format!("alice {i}").as_bytes()).unwrap();
    }
    client.delete(b"user:2").unwrap();
    for w in [&watch, &quiet] {
        w.wait_for_line("[6 DEL user:2]");
        w.wait_for_line("[1 PUT user:1 = \"alice 1\"]");
        assert_eq!(record_lsns(&w.lines()), (1..=6).collect::<Vec<_>>());
        for line in w.lines().iter().filter(|l| l.starts_with("AppendEntries")) {
            assert!(line.starts_with("AppendEntries term=1 prev=(LSN "), "{line}");
        }
    }
    watch.wait_for_line("records=0 (heartbeat)");
    assert!(!quiet.lines().iter().any(|l| l.contains("(heartbeat)")), "{:?}", quiet.lines());
}

#[test]
fn watch_from_lsn_replays_the_log_then_streams() {
    // Goal: lesson 5, watched: --from-lsn 4 starts with a catch-up of LSN
    // 4..10 from the leader's WAL, then the live stream continues at 11.
    let dirs = tempfile::tempdir().unwrap();
    let leader = leader(&dirs, &[], &[]);
    let mut client = leader.client();
    write_keys(&mut client, 1, 10);

    let watch = Watch::attached(leader.port(), &["--from-lsn", "4", "--no-heartbeats"]);
    let hello = watch.wait_for_line("LeaderHello");
    assert!(hello.contains("last_lsn=10"), "{hello}");
    let catch_up = watch.wait_for_line("[10 PUT key10");
    assert!(catch_up.starts_with("AppendEntries term=1 prev=(LSN 3, term 1)"), "{catch_up}");
    assert!(catch_up.contains("records=7: [4 PUT key4 = \"value4\"]"), "{catch_up}");
    client.put(b"late", b"comer").unwrap();
    watch.wait_for_line("[11 PUT late = \"comer\"]");
    assert_eq!(record_lsns(&watch.lines()), (4..=11).collect::<Vec<_>>());
}

#[test]
fn watch_hex_and_json_show_the_frames() {
    // Goal: --hex puts the frame's bytes under its line (length prefix,
    // then type 0x20); --json prints one object a line, values cut at
    // --max-value-bytes with their full length.
    let dirs = tempfile::tempdir().unwrap();
    let leader = leader(&dirs, &[], &[]);
    leader.client().put(b"k", b"a rather long value").unwrap();
    let hex = Watch::attached(leader.port(), &["--from-lsn", "1", "--hex", "--no-heartbeats"]);
    let json = Watch::attached(
        leader.port(),
        &["--from-lsn", "1", "--json", "--no-heartbeats", "--max-value-bytes", "6"],
    );
    hex.wait_for_line("[1 PUT k = \"a rather long value\"]");
    let lines = hex.lines();
    let at = lines.iter().position(|l| l.starts_with("AppendEntries")).unwrap();
    assert!(lines[at + 1].starts_with("    0000  00 00 00 5a 20 "), "{lines:?}");

    let line = json.wait_for_line("\"AppendEntries\"");
    let object: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(object["records"][0]["lsn"], 1);
    assert_eq!(object["records"][0]["value"], "a rath");
    assert_eq!(object["records"][0]["value_bytes"], 19);
}

#[test]
fn an_observer_does_not_count_toward_a_majority() {
    // Goal: a leader whose only follower is down cannot meet `majority`
    // with an observer attached: the write times out, although the
    // observer received it and ACKed it.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port(); // never started
    let leader = leader(&dirs, &[p2], &["--write-concern=majority", "--write-timeout-ms=1000"]);
    let watch = Watch::attached(leader.port(), &["--no-heartbeats"]);

    match leader.client().put(b"k", b"v") {
        Err(Error::Server { code: ErrorCode::WriteTimeout, message }) => {
            assert!(message.contains("only 1 of the 2 nodes required"), "{message}");
        }
        other => panic!("expected a write-concern timeout, got {other:?}"),
    }
    watch.wait_for_line("[1 PUT k = \"v\"]");
    let status = leader.status();
    let row = status.followers.iter().find(|r| r.observer).expect("the observer's row");
    assert!(!row.expected);
    assert_eq!(status.commit_lsn, 0, "nothing is committed by an observer");
    eventually("the observer's ACK of LSN 1 is in status", DEADLINE, || {
        let status = leader.status();
        status.followers.iter().any(|r| r.observer && r.acked_lsn == 1).then_some(())
    });
}

#[test]
fn the_fifth_observer_is_refused_and_a_freed_place_is_taken() {
    // Goal: --max-observers (default 4) holds: the fifth watcher gets a
    // clear ERROR; once one leaves, another may attach.
    let dirs = tempfile::tempdir().unwrap();
    let leader = leader(&dirs, &[], &[]);
    let mut watches: Vec<Watch> = (0..4).map(|_| Watch::attached(leader.port(), &[])).collect();

    let mut fifth = Watch::start(leader.port(), &[]);
    let (ok, stderr) = fifth.wait_exit();
    assert!(!ok);
    assert!(
        stderr.contains("too many observers: this leader already serves 4 (--max-observers 4)"),
        "{stderr}"
    );

    drop(watches.pop());
    eventually("the leader sees an observer leave", DEADLINE, || {
        let status = leader.status();
        let attached = status.followers.iter().filter(|r| r.observer && r.state == "streaming");
        (attached.count() == 3).then_some(())
    });
    let _another = Watch::attached(leader.port(), &[]);
}

#[test]
fn watch_on_a_follower_names_the_leader() {
    // Goal: only the leader has a stream to watch; a follower says where it is.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let leader = leader(&dirs, &[p2], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let mut watch = Watch::start(f2.port(), &[]);
    let (ok, stderr) = watch.wait_exit();
    assert!(!ok);
    assert!(stderr.contains(&format!("watch the leader {}", leader.addr)), "{stderr}");
}

/// Milliseconds of the day of a log line's timestamp
/// (`2026-11-25T07:55:55.604Z DEBUG ...`).
fn log_ms(line: &str) -> u64 {
    let time = line.split('T').nth(1).and_then(|t| t.split('Z').next()).expect("timestamp");
    let parts: Vec<f64> = time.split(':').map(|p| p.parse().expect("number")).collect();
    ((parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]) * 1000.0).round() as u64
}

#[test]
fn trace_replication_shows_the_conversation_at_debug_one_line_a_second_per_link() {
    // Goal: with --trace-replication and RUST_LOG=debug, each node logs
    // its side of the conversation — HELLO, AppendEntries, ACK — decoded
    // and without values; under load each link logs at most one line a
    // second, saying how many messages it sums. Without debug, nothing.
    let dirs = tempfile::tempdir().unwrap();
    let p2 = free_port();
    let debug = [("RUST_LOG", "debug")];
    let peers = format!("--peers={p2}");
    let leader = Node::start_with_env(
        "leader",
        0,
        &dirs.path().join("leader"),
        &["--role=leader", &peers, "--trace-replication"],
        &debug,
    );
    let leader_arg = format!("--leader={}", leader.port());
    let f2 = Node::start_with_env(
        "follower2",
        p2,
        &dirs.path().join("follower2"),
        &["--role=follower", &leader_arg, "--trace-replication"],
        &debug,
    );
    let mut client = leader.client();
    client.put(b"hello", b"secret-value").unwrap();
    for _ in 0..4 {
        write_keys(&mut client, 0, 500);
    }
    let last = leader.last_lsn();
    f2.wait_for_lsn(last);

    let follower = format!("follower {}", f2.addr);
    leader.wait_for_log(&format!("[trace] received from {follower}: FollowerHello last_lsn=0"));
    f2.wait_for_log(&format!("[trace] sent to leader {}: FollowerHello", leader.addr));
    f2.wait_for_log("[trace] received from leader");
    leader.wait_for_log(&format!("[trace] sent to {follower}: AppendEntries term=1"));
    leader.wait_for_log(&format!("[trace] received from {follower}: AppendEntriesAck"));
    let summed = leader.wait_for_log("messages on this link in");
    assert!(summed.contains(" DEBUG [trace] "), "{summed}");

    // At most one line a second per link: on each node, consecutive trace
    // lines (each node has one link here) are a second apart or more.
    for node in [&leader, &f2] {
        let text = node.log_text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("[trace]")).collect();
        assert!(!text.contains("secret-value"), "a value in {}'s log", node.name);
        for pair in lines.windows(2) {
            let gap = log_ms(pair[1]).saturating_sub(log_ms(pair[0]));
            assert!(gap >= 990, "{} logged two trace lines {gap} ms apart:\n{pair:#?}", node.name);
        }
        let total: u64 = lines
            .iter()
            .map(|l| {
                l.split("(1 of ").nth(1).map_or(1, |rest| {
                    rest.split_whitespace().next().unwrap().parse::<u64>().unwrap()
                })
            })
            .sum();
        assert!(
            total > lines.len() as u64 * 2,
            "{}: {} lines for {total} messages",
            node.name,
            lines.len()
        );
    }

    // Without RUST_LOG=debug the flag logs nothing.
    let quiet =
        Node::start("quiet", &dirs.path().join("quiet"), &["--role=leader", "--trace-replication"]);
    let _watch = Watch::attached(quiet.port(), &[]);
    quiet.client().put(b"k", b"v").unwrap();
    quiet.wait_for_log("[observer]");
    assert!(!quiet.log_text().contains("[trace]"), "{}", quiet.log_text());
}

#[test]
fn status_timeline_draws_when_each_follower_connected_caught_up_and_acked() {
    // Goal: the demo's story from the leader's own bookkeeping: follower 2
    // connected at once, follower 3 late; both caught up and acked LSN 10.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2, p3], &[]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let mut client = leader.client();
    write_keys(&mut client, 1, 10);
    f2.wait_for_lsn(10);
    let f3 = follower("follower3", &dirs, p3, &leader);
    f3.wait_for_log("caught up to LSN 10");

    let timeline = eventually("both followers acked LSN 10 in the timeline", DEADLINE, || {
        let out = kv_client(&["--port", &leader.port().to_string(), "status", "--timeline"]);
        let text = stdout(&out);
        (out.status.success() && text.matches("acked 10").count() == 2).then_some(text)
    });
    let lines: Vec<&str> = timeline.lines().collect();
    assert!(lines[0].starts_with("replication timeline of term 1, leader "), "{timeline}");
    assert!(lines[2].starts_with("leader "), "{timeline}");
    for follower in [&f2, &f3] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&follower.addr.to_string()))
            .unwrap_or_else(|| panic!("no row for {}:\n{timeline}", follower.name));
        assert!(row.contains("connected ") && row.contains("caught up "), "{row}");
        assert!(row.contains('█'), "a full bar at LSN 10: {row}");
    }
    let report = leader.status().timeline.expect("a leader reports its timeline");
    let row3 = report.rows.iter().find(|r| r.address == f3.addr.to_string()).unwrap();
    let row2 = report.rows.iter().find(|r| r.address == f2.addr.to_string()).unwrap();
    assert!(row3.events[0].ms > row2.events[0].ms, "follower 3 connected later");
    assert_eq!(row3.events[1].lsn, 10, "follower 3 caught up at LSN 10");

    // A follower has no timeline of its own: it says whom to ask.
    let out = kv_client(&["--port", &f2.port().to_string(), "status", "--timeline"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("the timeline is the leader's bookkeeping"), "{}", stderr(&out));
}
