//! The core server end to end (issue: protocol, WAL, server, kv_client):
//! real `kvstore` processes on --port 0, spoken to through kv_client, the
//! client library, and raw bytes on a socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use kvstore::client::Client;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::{read_frame, Message};

/// A node alone in a fresh temp dir.
fn standalone(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start("node", &dir.path().join("data"), extra);
    (dir, node)
}

/// Send raw bytes, then read every byte until the server closes (or 10 s).
fn exchange_until_close(node: &Node, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(node.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("the server closes the connection");
    reply
}

/// The (code, message) of an ERROR frame.
fn error_of(reply: &[u8]) -> (u16, String) {
    let mut input = reply;
    let frame = read_frame(&mut input, u32::MAX).unwrap().expect("an ERROR frame");
    match Message::decode(&frame).unwrap() {
        Message::Error { code, message } => (code, message),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[test]
fn kv_client_puts_gets_and_deletes() {
    // Goal: the lesson commands work through the real kv_client binary,
    // with the documented output and exit codes.
    let (_dir, node) = standalone(&[]);
    let port = node.port().to_string();
    let put = kv_client(&["--port", &port, "put", "hello", "world"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(stdout(&put), "OK (LSN 1)");
    let get = kv_client(&["--port", &port, "get", "hello"]);
    assert_eq!((get.status.code(), stdout(&get).as_str()), (Some(0), "world"));

    let delete = kv_client(&["--port", &port, "delete", "hello"]);
    assert_eq!(stdout(&delete), "OK (LSN 2)");
    let missing = kv_client(&["--port", &port, "get", "hello"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("not found"), "{}", stderr(&missing));
    assert_eq!(stdout(&missing), "");
}

#[test]
fn kv_client_reports_an_unreachable_server() {
    // Goal: no server → a clear message on stderr and exit code 2.
    let port = free_port().to_string();
    let out = kv_client(&["--port", &port, "get", "k"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("connecting to"), "{}", stderr(&out));
}

#[test]
fn raw_requests_get_the_exact_documented_reply_bytes() {
    // Goal: the wire format is exactly docs/PROTOCOL.md's, byte for byte.
    let (_dir, node) = standalone(&[]);
    let mut s = TcpStream::connect(node.addr).unwrap();
    let mut ask = |request: &[u8], reply_len: usize| {
        s.write_all(request).unwrap();
        let mut reply = vec![0u8; reply_len];
        s.read_exact(&mut reply).unwrap();
        reply
    };
    // PUT "k" = "v"  →  OK [lsn 1]
    let put = [0, 0, 0, 11, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v'];
    assert_eq!(ask(&put, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 1]);
    // GET "k"  →  VALUE "v"
    let get = [0, 0, 0, 6, 0x02, 0, 0, 0, 1, b'k'];
    assert_eq!(ask(&get, 10), [0, 0, 0, 6, 0x11, 0, 0, 0, 1, b'v']);
    // GET "x"  →  NOT_FOUND
    let get_missing = [0, 0, 0, 6, 0x02, 0, 0, 0, 1, b'x'];
    assert_eq!(ask(&get_missing, 5), [0, 0, 0, 1, 0x12]);
    // DELETE "k"  →  OK [lsn 2]
    let delete = [0, 0, 0, 6, 0x03, 0, 0, 0, 1, b'k'];
    assert_eq!(ask(&delete, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 2]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Goal: several requests in one write get their replies in order.
    let (_dir, node) = standalone(&[]);
    let mut bytes = Vec::new();
    for m in [
        Message::Put { key: b"a".to_vec(), value: b"1".to_vec() },
        Message::Get { key: b"a".to_vec() },
        Message::Get { key: b"b".to_vec() },
    ] {
        m.encode_frame(&mut bytes);
    }
    let mut client = Client::connect(node.addr).unwrap();
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(&bytes).unwrap();
    let mut reader = std::io::BufReader::new(s);
    let mut next = || Message::decode(&read_frame(&mut reader, 1 << 20).unwrap().unwrap()).unwrap();
    assert_eq!(next(), Message::Ok { lsn: 1 });
    assert_eq!(next(), Message::Value { value: b"1".to_vec() });
    assert_eq!(next(), Message::NotFound);
    assert_eq!(client.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    // Goal: with the default --fsync always, every acknowledged write is
    // there after a crash (SIGKILL), and LSNs continue where they stopped.
    let (_dir, mut node) = standalone(&[]);
    let mut client = node.client();
    for i in 0..500 {
        assert_eq!(
            client.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).unwrap(),
            i + 1
        );
    }
    node.restart();
    let mut client = node.client();
    for i in 0..500 {
        let value = client.get(format!("k{i}").as_bytes()).unwrap();
        assert_eq!(value, Some(format!("v{i}").into_bytes()), "k{i}");
    }
    assert_eq!(client.put(b"next", b"x").unwrap(), 501);
}

#[test]
fn concurrent_acknowledged_writes_survive_sigkill() {
    // Goal: group commit acknowledges nothing early: 4 writers at once,
    // SIGKILL, restart, and every write any of them saw acknowledged is there.
    let (_dir, mut node) = standalone(&[]);
    let acked: Vec<(String, u64)> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let mut client = node.client();
                s.spawn(move || {
                    (0..200)
                        .map(|i| {
                            let key = format!("w{w}-{i}");
                            (key.clone(), client.put(key.as_bytes(), b"v").unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    node.restart();
    let mut client = node.client();
    for (key, lsn) in &acked {
        assert_eq!(client.get(key.as_bytes()).unwrap(), Some(b"v".to_vec()), "{key} @ {lsn}");
    }
    let mut lsns: Vec<u64> = acked.iter().map(|(_, l)| *l).collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=800).collect::<Vec<_>>(), "every write got its own LSN");
}

#[test]
fn an_oversize_length_gets_an_error_and_a_close() {
    // Goal: a 4 GiB length prefix is refused (code 2) before anything is
    // allocated, and that connection is closed.
    let (_dir, node) = standalone(&[]);
    let reply = exchange_until_close(&node, &[0xff, 0xff, 0xff, 0xff, 0x01]);
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::FrameTooLarge as u16);
    assert!(message.contains("exceeds the limit"), "{message}");
}

#[test]
fn an_unknown_type_gets_an_error_and_a_close() {
    let (_dir, node) = standalone(&[]);
    let reply = exchange_until_close(&node, &[0, 0, 0, 2, 0x7f, 0]);
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::UnknownType as u16);
    assert!(message.contains("0x7f"), "{message}");
}

#[test]
fn lengths_that_disagree_with_the_frame_get_an_error_and_a_close() {
    // Goal: a PUT whose key_len claims 200 bytes inside a 6-byte frame is
    // malformed (code 1), and nothing is written.
    let (_dir, node) = standalone(&[]);
    let reply = exchange_until_close(&node, &[0, 0, 0, 6, 0x01, 0, 0, 0, 200, b'k']);
    assert_eq!(error_of(&reply).0, ErrorCode::BadRequest as u16);
    let reply = exchange_until_close(&node, &[0, 0, 0, 0]);
    assert_eq!(error_of(&reply).0, ErrorCode::BadRequest as u16, "zero-length frame");
    assert_eq!(node.last_lsn(), 0);
}

#[test]
fn a_reply_type_sent_as_a_request_gets_an_error_and_a_close() {
    // Goal: a message only a follower sends (APPEND_ENTRIES_ACK) is
    // refused as unexpected (code 9).
    let (_dir, node) = standalone(&[]);
    let reply = exchange_until_close(&node, &[0, 0, 0, 9, 0x21, 0, 0, 0, 0, 0, 0, 0, 5]);
    assert_eq!(error_of(&reply).0, ErrorCode::Unexpected as u16);
}

#[test]
fn follower_hello_after_a_request_is_refused() {
    // Goal: a connection becomes a replication link only by its first
    // message; FOLLOWER_HELLO later on is unexpected (code 9) and closes it.
    let (_dir, node) = standalone(&[]);
    let mut bytes = Vec::new();
    Message::Get { key: b"k".to_vec() }.encode_frame(&mut bytes);
    Message::FollowerHello { last_lsn: 0, listen_port: None, cluster_id: None }
        .encode_frame(&mut bytes);
    let reply = exchange_until_close(&node, &bytes);
    assert_eq!(&reply[..5], [0, 0, 0, 1, 0x12], "the GET is answered first");
    assert_eq!(error_of(&reply[5..]).0, ErrorCode::Unexpected as u16);
}

#[test]
fn garbage_never_disturbs_another_client_or_the_wal() {
    // Goal: hundreds of connections sending random bytes get errors or a
    // close; a second client on its own connection is served correctly
    // throughout, and only its writes reach the WAL.
    let (_dir, node) = standalone(&[]);
    let mut good = node.client();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..300u64 {
        let len = (random() % 40) as usize;
        let junk: Vec<u8> = (0..len).map(|_| random() as u8).collect();
        let mut s = TcpStream::connect(node.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.read_to_end(&mut Vec::new());
        assert_eq!(good.put(format!("good{i}").as_bytes(), b"v").unwrap(), i + 1);
        assert_eq!(good.get(format!("good{i}").as_bytes()).unwrap(), Some(b"v".to_vec()));
    }
    assert_eq!(node.last_lsn(), 300);
}

#[test]
fn wal_dump_shows_records_and_a_torn_tail_which_start_up_truncates() {
    // Goal: wal-dump is a faithful window into the log: one line per
    // record, and the offset of a torn tail; start-up then truncates that
    // tail, logs its offset, and keeps every earlier record.
    let (_dir, mut node) = standalone(&[]);
    let mut client = node.client();
    client.put(b"key1", b"value1").unwrap();
    client.put(b"key2", b"line\nbreak").unwrap();
    client.delete(b"key1").unwrap();
    node.kill();
    let dir = node.data_dir.to_str().unwrap().to_string();
    let dump = stdout(&kv_client(&["wal-dump", &dir]));
    let lines: Vec<&str> = dump.lines().collect();
    assert!(lines[0].starts_with("lsn=1 ") && lines[0].contains(r#"key="key1" value="value1""#));
    assert!(lines[1].contains(r#"value="line\nbreak""#), "escaped: {}", lines[1]);
    assert!(lines[2].contains("DELETE key=\"key1\""));
    assert!(lines[3].contains("3 record(s), last LSN 3, clean end at offset"), "{}", lines[3]);

    let log = node.data_dir.join("wal.log");
    let clean_len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[0, 0, 0, 40, 1, 2])
        .unwrap();
    let dump = stdout(&kv_client(&["wal-dump", &dir]));
    assert!(dump.contains(&format!("torn tail of 6 byte(s) at offset {clean_len}")), "{dump}");

    node.restart();
    node.wait_for_log(&format!("torn tail in {}", log.display()));
    node.wait_for_log(&format!("6 byte(s) from offset {clean_len} truncated"));
    assert_eq!(node.client().get(b"key2").unwrap(), Some(b"line\nbreak".to_vec()));
    assert_eq!(node.last_lsn(), 3);
}

#[test]
fn a_corrupt_middle_record_stops_start_up_with_its_offset() {
    // Goal: damage before the tail is reported, never silently skipped.
    let (_dir, mut node) = standalone(&[]);
    let mut client = node.client();
    for i in 0..3 {
        client.put(format!("k{i}").as_bytes(), b"value").unwrap();
    }
    node.kill();
    let log = node.data_dir.join("wal.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[8 + 20] ^= 0xff; // inside the first record's body
    std::fs::write(&log, bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["--port", "0", "--data-dir", node.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt WAL record") && err.contains("at byte offset 0"), "{err}");
    let dump = kv_client(&["wal-dump", node.data_dir.to_str().unwrap()]);
    assert_eq!(dump.status.code(), Some(2));
}

#[test]
fn two_servers_cannot_share_a_data_dir() {
    // Goal: the data dir is locked; a second server exits with a clear error.
    let (_dir, node) = standalone(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["--port", "0", "--data-dir", node.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another kvstore process"));
}

#[test]
fn connection_n_plus_one_is_refused_and_the_server_stays_healthy() {
    // Goal: --max-connections 2: a third connection gets ERROR code 7 and
    // is closed; once one closes, new connections are served again.
    let (_dir, node) = standalone(&["--max-connections", "2"]);
    let mut first = node.client();
    let mut second = node.client();
    first.put(b"a", b"1").unwrap();
    second.get(b"a").unwrap();
    let reply = exchange_until_close(&node, &[]);
    assert_eq!(error_of(&reply).0, ErrorCode::TooManyConnections as u16);
    drop(first);
    let value = eventually("a connection slot frees up", DEADLINE, || {
        Client::connect(node.addr).ok()?.get(b"a").ok()
    });
    assert_eq!(value, Some(b"1".to_vec()));
    assert_eq!(second.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn too_large_a_value_is_refused_and_nothing_is_written() {
    // Goal: the value limit (4 MiB) is enforced with a clear error.
    let (_dir, node) = standalone(&[]);
    let err = node.client().put(b"k", &vec![0u8; 4 * 1024 * 1024 + 1]).unwrap_err();
    assert!(matches!(&err, Error::Server { code: ErrorCode::BadRequest, .. }), "{err}");
    assert!(err.to_string().contains("value"), "{err}");
    assert_eq!(node.last_lsn(), 0);
}
