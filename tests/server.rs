//! The core server end to end: real `kvstore` processes on `--port 0`, spoken
//! to through the `kv_client` binary, the client library, and raw bytes on a
//! socket whose replies are checked byte for byte.
//!
//! Nothing here sleeps a fixed time: every wait polls a condition against a
//! deadline (`eventually`, or a socket read timeout that fails the test).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kvstore::client::Client;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::{read_frame, Message};
use kvstore::Lsn;
use tempfile::TempDir;

/// How long a raw socket waits for a reply before the test fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A standalone node (a leader without followers) in a fresh temp dir.
fn standalone(extra: &[&str]) -> (TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start("node", &dir.path().join("data"), extra);
    (dir, node)
}

/// A raw socket to `node` that fails a read after `REPLY_TIMEOUT`.
fn raw_connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.addr).unwrap();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    stream
}

/// Read exactly `n` reply bytes.
fn read_bytes(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut reply = vec![0u8; n];
    stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("reading {n} reply bytes: {e}"));
    reply
}

/// Read one whole frame, length prefix included.
fn read_raw_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut frame = read_bytes(stream, 4);
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert!((1..=1 << 20).contains(&len), "implausible reply frame length {len}");
    frame.extend(read_bytes(stream, len));
    frame
}

/// Check `frame` is exactly one ERROR frame, `[len][0x13][code u16][msg_len u32][msg]`,
/// and return its code and message.
fn parse_error_frame(frame: &[u8]) -> (u16, String) {
    assert!(frame.len() >= 11 && frame[4] == 0x13, "expected an ERROR frame, got {frame:?}");
    let frame_len = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
    let code = u16::from_be_bytes([frame[5], frame[6]]);
    let msg_len = u32::from_be_bytes(frame[7..11].try_into().unwrap()) as usize;
    assert_eq!(frame_len, 1 + 2 + 4 + msg_len, "ERROR frame length vs message length");
    assert_eq!(frame.len(), 4 + frame_len);
    let message = String::from_utf8(frame[11..].to_vec()).expect("ERROR message is UTF-8");
    assert!(!message.is_empty(), "an ERROR carries a message");
    (code, message)
}

/// The server has closed `stream`: the next read returns end of stream.
fn assert_closed(stream: &mut TcpStream) {
    let mut rest = [0u8; 64];
    match stream.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection closed, got {n} more bytes: {:?}", &rest[..n]),
        Err(e) => panic!("expected the connection closed (EOF), got {e}"),
    }
}

/// A frame around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A node under hostile input, with a well-behaved client on its own
/// connection beside it that counts its writes.
struct Besieged {
    _dir: TempDir,
    node: Node,
    good: Client,
    good_writes: Lsn,
}

impl Besieged {
    fn start() -> Besieged {
        let (dir, node) = standalone(&[]);
        let good = node.client();
        let mut besieged = Besieged { _dir: dir, node, good, good_writes: 0 };
        besieged.good_client_is_served();
        besieged
    }

    /// The good client writes a new key (getting the next LSN) and reads it back.
    fn good_client_is_served(&mut self) {
        let n = self.good_writes + 1;
        let (key, value) = (format!("good{n}"), format!("value{n}"));
        assert_eq!(self.good.put(key.as_bytes(), value.as_bytes()).unwrap(), n, "good write {n}");
        assert_eq!(self.good.get(key.as_bytes()).unwrap(), Some(value.into_bytes()));
        assert_eq!(self.good.get(b"good1").unwrap(), Some(b"value1".to_vec()));
        self.good_writes = n;
    }

    /// Send `bad` on a fresh connection: expect exactly one ERROR frame, then
    /// the close; the good client is still served. Returns (code, message).
    fn refused(&mut self, bad: &[u8]) -> (u16, String) {
        let mut stream = raw_connect(&self.node);
        stream.write_all(bad).unwrap();
        let (code, message) = parse_error_frame(&read_raw_frame(&mut stream));
        assert_closed(&mut stream);
        self.good_client_is_served();
        (code, message)
    }

    /// The server still runs, and its WAL holds the good writes and nothing else.
    fn assert_wal_holds_only_the_good_writes(mut self) {
        assert_eq!(self.node.exit_status(), None, "the server is still running");
        self.good_client_is_served();
        let status = self.node.status();
        assert_eq!(status.last_lsn, self.good_writes, "only the good writes reached the WAL");
        assert_eq!(status.keys, self.good_writes, "only the good keys are in the map");
    }
}

/// Run `kvstore ARGS`, wait (with a deadline) for it to exit, and return its
/// exit status and stderr. A process still running at the deadline is killed.
fn run_kvstore_until_exit(args: &[&str]) -> (ExitStatus, String) {
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kvstore"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvstore"),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = eventually("kvstore exits", Duration::from_secs(10), || {
        child.0.try_wait().expect("try_wait")
    });
    (status, reader.join().unwrap())
}

/// A deterministic xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---- kv_client ---------------------------------------------------------------

#[test]
fn kv_client_puts_gets_and_deletes_with_documented_output_and_exit_codes() {
    // Goal: run kv_client put/get/delete/get; check stdout, stderr and exit codes 0,0,0,1.
    let (_dir, node) = standalone(&[]);
    let port = node.port().to_string();

    let put = kv_client(&["--port", &port, "put", "k", "v"]);
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert_eq!(String::from_utf8_lossy(&put.stdout), "OK (LSN 1)\n");

    let get = kv_client(&["--port", &port, "get", "k"]);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    assert_eq!(get.stdout, b"v\n", "get prints the value alone");
    assert_eq!(stderr(&get), "");

    let delete = kv_client(&["--port", &port, "delete", "k"]);
    assert_eq!(delete.status.code(), Some(0), "{}", stderr(&delete));
    assert_eq!(String::from_utf8_lossy(&delete.stdout), "OK (LSN 2)\n");

    let missing = kv_client(&["--port", &port, "get", "k"]);
    assert_eq!(missing.status.code(), Some(1), "a missing key exits 1");
    assert_eq!(stdout(&missing), "", "nothing on stdout for a missing key");
    let err = stderr(&missing);
    assert!(err.contains("'k'") && err.contains("not found"), "stderr: {err}");
}

#[test]
fn kv_client_exits_2_with_a_clear_message_when_no_server_listens() {
    // Goal: run kv_client get against a free port; expect exit 2 and stderr naming the address.
    let port = free_port();
    let out = kv_client(&["--port", &port.to_string(), "get", "k"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains(&format!("connecting to 127.0.0.1:{port}")), "stderr: {err}");
    assert!(err.to_lowercase().contains("refused"), "stderr says why: {err}");
}

// ---- exact bytes ---------------------------------------------------------------

#[test]
fn raw_requests_get_the_exact_documented_reply_bytes() {
    // Goal: send hand-built PUT/GET/DELETE frames on a raw socket; compare every reply byte.
    let (_dir, node) = standalone(&[]);
    let mut s = raw_connect(&node);
    let mut ask = |request: &[u8], reply_len: usize| {
        s.write_all(request).unwrap();
        read_bytes(&mut s, reply_len)
    };
    // PUT "k" = "v" on a fresh node → OK, LSN 1.
    let put = [0, 0, 0, 11, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v'];
    assert_eq!(ask(&put, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 1]);
    // GET "k" → VALUE "v".
    let get = [0, 0, 0, 6, 0x02, 0, 0, 0, 1, b'k'];
    assert_eq!(ask(&get, 10), [0, 0, 0, 6, 0x11, 0, 0, 0, 1, b'v']);
    // GET "x" → NOT_FOUND.
    let get_missing = [0, 0, 0, 6, 0x02, 0, 0, 0, 1, b'x'];
    assert_eq!(ask(&get_missing, 5), [0, 0, 0, 1, 0x12]);
    // PUT "k" = "" (an empty value) → OK, LSN 2; GET → VALUE of length 0.
    let put_empty = [0, 0, 0, 10, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 0];
    assert_eq!(ask(&put_empty, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(ask(&get, 9), [0, 0, 0, 5, 0x11, 0, 0, 0, 0]);
    // DELETE "k" → OK, LSN 3; GET → NOT_FOUND.
    let delete = [0, 0, 0, 6, 0x03, 0, 0, 0, 1, b'k'];
    assert_eq!(ask(&delete, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 3]);
    assert_eq!(ask(&get, 5), [0, 0, 0, 1, 0x12]);
    // Nothing was sent but these replies: after our clean close, EOF follows at once.
    s.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut s);
}

#[test]
fn pipelined_requests_get_their_replies_in_order() {
    // Goal: write PUT, GET, GET-missing in one write_all; read the three exact replies in order.
    let (_dir, node) = standalone(&[]);
    let mut s = raw_connect(&node);
    let mut requests = Vec::new();
    requests.extend(frame(&[0x01, 0, 0, 0, 1, b'a', 0, 0, 0, 1, b'1'])); // PUT a=1
    requests.extend(frame(&[0x02, 0, 0, 0, 1, b'a'])); // GET a
    requests.extend(frame(&[0x02, 0, 0, 0, 1, b'b'])); // GET b
    s.write_all(&requests).unwrap();
    assert_eq!(read_bytes(&mut s, 13), [0, 0, 0, 9, 0x10, 0, 0, 0, 0, 0, 0, 0, 1], "OK, LSN 1");
    assert_eq!(read_bytes(&mut s, 10), [0, 0, 0, 6, 0x11, 0, 0, 0, 1, b'1'], "VALUE 1");
    assert_eq!(read_bytes(&mut s, 5), [0, 0, 0, 1, 0x12], "NOT_FOUND");
}

#[test]
fn pipelined_writes_are_queued_together_and_answered_one_by_one_in_order() {
    // Goal: 200 PUTs and a DELETE, two GETs, then a malformed PUT (key over
    // the limit) and one more PUT, sent in one write: the writes are queued
    // together, yet each gets its own reply in order; the GETs see the
    // writes before them; the malformed request ends the connection with an
    // ERROR after every earlier reply, and the PUT behind it is not applied.
    let (_dir, node) = standalone(&[]);
    let mut s = raw_connect(&node);
    let mut requests = Vec::new();
    let mut add = |m: Message| m.encode_frame(&mut requests);
    for i in 0..100u32 {
        add(Message::Put { key: format!("k{i}").into(), value: b"v".to_vec() });
    }
    add(Message::Delete { key: b"k7".to_vec() });
    for i in 100..200u32 {
        add(Message::Put { key: format!("k{i}").into(), value: b"v".to_vec() });
    }
    add(Message::Get { key: b"k199".to_vec() });
    add(Message::Get { key: b"k7".to_vec() });
    let oversize = vec![b'x'; kvstore::limits::KEY_BYTES_MAX as usize + 1];
    add(Message::Put { key: oversize, value: b"v".to_vec() });
    add(Message::Put { key: b"after".to_vec(), value: b"v".to_vec() });
    s.write_all(&requests).unwrap();
    let mut reply = || read_frame(&mut s, 1 << 20).unwrap().map(|f| Message::decode(&f).unwrap());
    for lsn in 1..=100 {
        assert_eq!(reply(), Some(Message::Ok { lsn }), "PUT k{}", lsn - 1);
    }
    assert_eq!(reply(), Some(Message::Ok { lsn: 101 }), "DELETE k7");
    for lsn in 102..=201 {
        assert_eq!(reply(), Some(Message::Ok { lsn }), "PUT k{}", lsn - 2);
    }
    assert_eq!(reply(), Some(Message::Value { value: b"v".to_vec() }), "GET k199");
    assert_eq!(reply(), Some(Message::NotFound), "GET k7");
    match reply() {
        Some(Message::Error { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest as u16, "{message}");
            assert!(message.contains("key of 65537 bytes"), "{message}");
        }
        other => panic!("the malformed PUT got {other:?}"),
    }
    assert_eq!(reply(), None, "the connection ends after the ERROR");
    let mut client = node.client();
    assert_eq!(client.get(b"after").unwrap(), None, "nothing behind the bad request is applied");
    assert_eq!(node.status().last_lsn, 201);
}

// ---- durability ---------------------------------------------------------------

#[test]
fn acknowledged_writes_survive_sigkill_and_lsns_continue() {
    // Goal: put 500 keys, SIGKILL, restart; every acked key is back and the next LSN is 501.
    const N: u64 = 500;
    let (_dir, mut node) = standalone(&[]);
    let mut client = node.client();
    let mut acked = Vec::new();
    for i in 1..=N {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        let lsn = client.put(key.as_bytes(), value.as_bytes()).unwrap();
        assert_eq!(lsn, i, "LSNs are contiguous from 1");
        acked.push((key, value));
    }
    drop(client);
    node.kill();
    node.restart();

    let mut client = node.client();
    for (key, value) in &acked {
        assert_eq!(client.get(key.as_bytes()).unwrap().as_deref(), Some(value.as_bytes()), "{key}");
    }
    assert_eq!(node.status().last_lsn, N);
    assert_eq!(client.put(b"after-restart", b"x").unwrap(), N + 1, "the LSN continues");
}

#[test]
fn concurrent_acknowledged_writes_survive_sigkill() {
    // Goal: 4 writers put until SIGKILL hits mid-stream; after restart every acked write is there.
    const WRITERS: usize = 4;
    const ACKED_BEFORE_KILL: usize = 800;
    let (_dir, mut node) = standalone(&[]);
    let acked_count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let acked: Vec<(String, String, Lsn)> = std::thread::scope(|scope| {
        // Stops the writers even if this closure panics (the scope joins them).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop_on_drop = StopOnDrop(&stop);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mut client = node.client();
                let (acked_count, stop) = (&acked_count, &stop);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let (key, value) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                        // After the SIGKILL the put fails: that write was never acknowledged.
                        let Ok(lsn) = client.put(key.as_bytes(), value.as_bytes()) else { break };
                        mine.push((key, value, lsn));
                        acked_count.fetch_add(1, Ordering::AcqRel);
                    }
                    mine
                })
            })
            .collect();
        eventually("the writers have many acknowledged writes", DEADLINE, || {
            (acked_count.load(Ordering::Acquire) >= ACKED_BEFORE_KILL).then_some(())
        });
        node.kill(); // while the writers are still writing
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    node.restart();
    let mut client = node.client();
    for (key, value, lsn) in &acked {
        let got = client.get(key.as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()), "{key}, acknowledged at LSN {lsn}");
    }
    let mut lsns: Vec<Lsn> = acked.iter().map(|(_, _, lsn)| *lsn).collect();
    lsns.sort_unstable();
    lsns.dedup();
    assert_eq!(lsns.len(), acked.len(), "every acknowledged write got its own LSN");
    let status = node.status();
    assert!(status.last_lsn >= *lsns.last().unwrap(), "recovered log ends before an acked LSN");
    assert!(
        status.last_lsn <= (acked.len() + WRITERS) as Lsn,
        "at most one unacknowledged write per writer was in flight"
    );
    assert_eq!(status.keys, status.last_lsn, "every recovered record is one distinct key");
}

// ---- hostile input ---------------------------------------------------------------

#[test]
fn a_length_prefix_of_4_gib_gets_frame_too_large_and_a_close() {
    // Goal: send a 0xFFFFFFFF length; expect ERROR 2 then EOF while another client is served.
    let mut besieged = Besieged::start();
    let (code, message) = besieged.refused(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(code, ErrorCode::FrameTooLarge as u16, "{message}");
    assert!(message.contains("4294967295") && message.contains("exceeds the limit"), "{message}");
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn an_unknown_message_type_gets_unknown_type_and_a_close() {
    // Goal: send frames of type 0x7f/0xff; expect ERROR 3 then EOF while another client is served.
    let mut besieged = Besieged::start();
    for type_byte in [0x7f_u8, 0xff] {
        let (code, message) = besieged.refused(&frame(&[type_byte, 0, 0, 0, 1, b'k']));
        assert_eq!(code, ErrorCode::UnknownType as u16, "{message}");
        assert!(message.contains(&format!("0x{type_byte:02x}")), "names the type: {message}");
    }
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn a_put_whose_key_len_disagrees_with_the_frame_gets_bad_request_and_a_close() {
    // Goal: send PUTs whose key_len disagrees with the frame; expect ERROR 1, EOF, nothing logged.
    let mut besieged = Besieged::start();
    let bad_puts: [&[u8]; 4] = [
        // key_len 200, but the frame holds 1 key byte and no value.
        &[0x01, 0, 0, 0, 200, b'k'],
        // key_len 2 in a well-sized PUT k=v: value_len then runs past the end.
        &[0x01, 0, 0, 0, 2, b'k', 0, 0, 0, 1, b'v'],
        // key_len 0: the key bytes are read as an absurd value_len.
        &[0x01, 0, 0, 0, 0, b'k', 0, 0, 0, 1, b'v'],
        // A correct PUT k=v followed by a byte the fields do not account for.
        &[0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v', 0],
    ];
    for payload in bad_puts {
        let (code, message) = besieged.refused(&frame(payload));
        assert_eq!(code, ErrorCode::BadRequest as u16, "{payload:?}: {message}");
    }
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn a_zero_length_frame_gets_bad_request_and_a_close() {
    // Goal: send a zero-length frame; expect ERROR 1 then EOF while another client is served.
    let mut besieged = Besieged::start();
    let (code, message) = besieged.refused(&[0, 0, 0, 0]);
    assert_eq!(code, ErrorCode::BadRequest as u16, "{message}");
    assert!(message.contains("empty frame"), "{message}");
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn replication_messages_from_a_client_get_unexpected_and_a_close() {
    // Goal: send APPEND_ENTRIES_ACK / APPEND_ENTRIES as a client; expect ERROR 9, EOF, no write.
    let mut besieged = Besieged::start();
    // APPEND_ENTRIES_ACK [last_lsn u64 = 5][term u64 = 1][digest_lsn u64][digest u64].
    let mut ack = vec![0x21];
    for field in [5u64, 1, 0, 0] {
        ack.extend(field.to_be_bytes());
    }
    let ack = frame(&ack);
    let (code, message) = besieged.refused(&ack);
    assert_eq!(code, ErrorCode::Unexpected as u16, "{message}");
    assert!(message.contains("APPEND_ENTRIES_ACK"), "{message}");

    // APPEND_ENTRIES carrying a PUT record that would continue the log: it
    // must not reach the WAL through a client connection.
    let next = besieged.good_writes + 1;
    let mut ae = vec![0x20];
    ae.extend(9u64.to_be_bytes()); // term
    ae.extend((next - 1).to_be_bytes()); // prev_lsn
    ae.extend(1u64.to_be_bytes()); // prev_term
    ae.extend(0u64.to_be_bytes()); // commit_lsn
    ae.extend(next.to_be_bytes()); // leader_last_lsn
    ae.extend(1u32.to_be_bytes()); // num_records
    ae.extend(next.to_be_bytes()); // record: lsn
    ae.extend(9u64.to_be_bytes()); // record: term
    ae.extend([0x01, 0, 0, 0, 6]); // cmd PUT, key_len 6
    ae.extend(b"intrud"); // key
    ae.extend([0, 0, 0, 1, b'x']); // value
    let (code, message) = besieged.refused(&frame(&ae));
    assert_eq!(code, ErrorCode::Unexpected as u16, "{message}");
    assert_eq!(besieged.good.get(b"intrud").unwrap(), None);
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn follower_hello_after_a_request_is_refused() {
    // Goal: send GET then FOLLOWER_HELLO in one write; expect NOT_FOUND, then ERROR 9 and EOF.
    let mut besieged = Besieged::start();
    let mut requests = frame(&[0x02, 0, 0, 0, 1, b'k']); // GET k
    let mut hello = vec![0x22]; // FOLLOWER_HELLO: last_lsn, last_term, term 0; port 0; no cluster
    hello.extend([0u8; 8 * 3 + 2 + 16]);
    requests.extend(frame(&hello));
    let mut stream = raw_connect(&besieged.node);
    stream.write_all(&requests).unwrap();
    assert_eq!(read_bytes(&mut stream, 5), [0, 0, 0, 1, 0x12], "the GET is answered first");
    let (code, message) = parse_error_frame(&read_raw_frame(&mut stream));
    assert_eq!(code, ErrorCode::Unexpected as u16, "{message}");
    assert!(message.contains("FOLLOWER_HELLO"), "{message}");
    assert_closed(&mut stream);
    besieged.good_client_is_served();
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn random_garbage_never_crashes_the_server_or_reaches_the_wal() {
    // Goal: 400 connections send xorshift garbage; replies stay well-formed, no bad write logged.
    let mut besieged = Besieged::start();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Known types, except FOLLOWER_HELLO (0x22), which legitimately turns a
    // connection into a replication stream instead of a request/reply one.
    // Nor the administrative ones (PROMOTE, FOLLOW, REQUEST_VOTE,
    // LEADER_ANNOUNCE), whose effect on the role is their purpose.
    let types =
        [0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21, 0x23, 0x24, 0x26];
    for attempt in 0..400 {
        let len = (rng.next() % (1 << (rng.next() % 11))) as usize; // 0..1024, mostly short
        let bytes = if attempt % 2 == 0 {
            rng.bytes(len)
        } else {
            let type_byte = match rng.next() % 4 {
                0 => 0x28 + (rng.next() % 0xd8) as u8, // an unknown type, 0x28..=0xff
                _ => types[rng.next() as usize % types.len()],
            };
            let mut payload = vec![type_byte];
            payload.extend(rng.bytes(len));
            frame(&payload)
        };
        let mut stream = raw_connect(&besieged.node);
        // The server may close early (e.g. after a bad length prefix), so
        // writing the rest may fail; what matters is how the server behaves.
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let mut reply = Vec::new();
        match stream.read_to_end(&mut reply) {
            Ok(_) => {
                // Whatever came back is a sequence of whole, well-formed replies.
                let mut rest = &reply[..];
                while !rest.is_empty() {
                    let decoded = read_frame(&mut rest, u32::MAX);
                    let payload = decoded.unwrap_or_else(|e| {
                        panic!("attempt {attempt}: reply {reply:?} is not whole frames: {e}")
                    });
                    let message = Message::decode(&payload.unwrap())
                        .unwrap_or_else(|e| panic!("attempt {attempt}: bad reply frame: {e}"));
                    if let Message::Error { code, .. } = message {
                        assert!((1..=12).contains(&code), "attempt {attempt}: code {code}");
                    }
                }
            }
            // Closing with unread input makes the kernel send RST: acceptable.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("attempt {attempt}: the server neither answered nor closed: {e}"),
        }
        besieged.good_client_is_served();
    }
    besieged.assert_wal_holds_only_the_good_writes();
}

#[test]
fn too_large_a_value_is_refused_and_nothing_is_written() {
    // Goal: put a value 1 byte over 4 MiB; expect ERROR 1 naming the value, a close, LSN 0.
    let (_dir, node) = standalone(&[]);
    let mut client = node.client();
    let err = client.put(b"k", &vec![0u8; 4 * 1024 * 1024 + 1]).unwrap_err();
    assert!(matches!(&err, Error::Server { code: ErrorCode::BadRequest, .. }), "{err}");
    assert!(err.to_string().contains("value"), "{err}");
    assert!(client.put(b"k", b"small").is_err(), "code 1 closes the connection");
    assert_eq!(node.last_lsn(), 0, "nothing was written");
    assert_eq!(node.client().get(b"k").unwrap(), None);
}

// ---- wal-dump and recovery ---------------------------------------------------------

/// Write `key{i}` = `value{i}` for i in 1..=puts, then delete `key1`; kill
/// the node. Returns the expected (lsn, offset, text) of every record.
fn killed_node_with_records(node: &mut Node, puts: u64) -> Vec<(Lsn, u64, String)> {
    let mut client = node.client();
    let mut expected = Vec::new();
    let mut offset = 32u64; // after the segment header
    for i in 1..=puts {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        assert_eq!(client.put(key.as_bytes(), value.as_bytes()).unwrap(), i);
        let text = format!(r#"PUT    key="{key}" value="{value}""#);
        expected.push((i, offset, text));
        // Entry: [body_len u32][crc u32], body: lsn 8, term 8, cmd 1, key_len 4, key,
        // value_len 4, value.
        offset += 8 + 25 + (key.len() + value.len()) as u64;
    }
    assert_eq!(client.delete(b"key1").unwrap(), puts + 1);
    expected.push((puts + 1, offset, r#"DELETE key="key1""#.to_string()));
    drop(client);
    node.kill();
    expected
}

/// The one segment of a node's young log.
fn first_segment(node: &Node) -> std::path::PathBuf {
    node.data_dir.join("wal").join("00000000000000000001.seg")
}

/// Where the log of [`killed_node_with_records`] ends: after its last
/// record, the DELETE of `key1` (entry header 8, fixed fields 25, key 4).
/// The segment is preallocated, so zeros follow up to the file's end.
fn log_end(expected: &[(Lsn, u64, String)]) -> u64 {
    expected.last().map(|(_, offset, _)| offset + 8 + 25 + 4).unwrap()
}

/// Write what a crash leaves of an append cut short, at the end of the log
/// (inside the preallocated space): an entry header claiming a 40-byte
/// body, of which only 2 bytes made it. Recovery sees a 48-byte entry whose
/// checksum fails, with only zeros after it: a torn tail.
fn tear_the_tail(log: &std::path::Path, end: u64) {
    use std::os::unix::fs::FileExt;
    let torn = [0, 0, 0, 40, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02];
    std::fs::OpenOptions::new().write(true).open(log).unwrap().write_all_at(&torn, end).unwrap();
}

/// Check that `dump`'s record lines are exactly `expected`; return the last line.
fn assert_dump_records<'a>(dump: &'a str, expected: &[(Lsn, u64, String)]) -> &'a str {
    let mut lines: Vec<&str> = dump.lines().collect();
    assert_eq!(
        lines.remove(0),
        "-- segment wal/00000000000000000001.seg: first LSN 1 (LSN 0 has term 0)",
        "the segment's line comes first:\n{dump}"
    );
    assert_eq!(lines.len(), expected.len() + 1, "one line per record plus a summary:\n{dump}");
    for (line, (lsn, offset, text)) in lines.iter().zip(expected) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], format!("lsn={lsn}"), "{line}");
        assert_eq!(fields[1], "term=1", "a standalone node's first term: {line}");
        assert_eq!(fields[2], format!("offset={offset}"), "{line}");
        assert!(line.ends_with(text.as_str()), "{line:?} should end with {text:?}");
    }
    lines[lines.len() - 1]
}

#[test]
fn wal_dump_prints_one_line_per_record_and_the_count() {
    // Goal: kill a node after 5 puts + 1 delete; wal-dump shows each LSN, offset, op and a summary.
    let (_dir, mut node) = standalone(&[]);
    let expected = killed_node_with_records(&mut node, 5);
    let out = kv_client(&["wal-dump", node.data_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dump = stdout(&out);
    let summary = assert_dump_records(&dump, &expected);
    let end = log_end(&expected);
    assert_eq!(
        summary,
        format!(
            "-- 6 record(s), last LSN 6, clean end at offset {end} of \
             wal/00000000000000000001.seg; format 3"
        )
    );
}

#[test]
fn wal_dump_reports_a_torn_tail_with_its_offset() {
    // Goal: write 10 bytes of a cut-short entry after the last record; wal-dump names the torn tail's offset.
    let (_dir, mut node) = standalone(&[]);
    let expected = killed_node_with_records(&mut node, 5);
    let log = first_segment(&node);
    let clean_len = log_end(&expected);
    tear_the_tail(&log, clean_len);

    let out = kv_client(&["wal-dump", node.data_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dump = stdout(&out);
    let summary = assert_dump_records(&dump, &expected);
    assert!(summary.starts_with("-- 6 record(s), last LSN 6"), "{summary}");
    assert!(
        summary.contains(&format!("torn tail of 48 byte(s) at offset {clean_len}")),
        "{summary}"
    );
}

#[test]
fn start_up_truncates_a_torn_tail_logs_it_and_keeps_every_earlier_record() {
    // Goal: tear the entry after the last record, restart; expect a "torn tail" log, every key, and LSN 7 next.
    let (_dir, mut node) = standalone(&[]);
    let expected = killed_node_with_records(&mut node, 5);
    let log = first_segment(&node);
    let clean_len = log_end(&expected);
    let allocated = std::fs::metadata(&log).unwrap().len();
    tear_the_tail(&log, clean_len);

    node.restart();
    let line = node.wait_for_log("torn tail");
    assert!(line.contains(&format!("48 byte(s) from offset {clean_len} truncated")), "{line}");
    let mut client = node.client();
    assert_eq!(client.get(b"key1").unwrap(), None, "the delete survived");
    for i in 2..=5 {
        let value = client.get(format!("key{i}").as_bytes()).unwrap();
        assert_eq!(value, Some(format!("value{i}").into_bytes()), "key{i}");
    }
    assert_eq!(node.last_lsn(), 6);
    let after_cut = std::fs::read(&log).unwrap();
    assert!(after_cut[clean_len as usize..].iter().all(|b| *b == 0), "the torn entry is gone");
    assert_eq!(after_cut.len() as u64, allocated, "and the segment is allocated again");
    assert_eq!(client.put(b"after", b"torn").unwrap(), 7, "the log continues after the cut");

    drop(client);
    node.kill();
    let dump = stdout(&kv_client(&["wal-dump", node.data_dir.to_str().unwrap()]));
    let summary = dump.lines().last().unwrap();
    assert!(summary.starts_with("-- 7 record(s), last LSN 7, clean end"), "{dump}");
}

#[test]
fn a_corrupt_middle_record_stops_start_up_with_its_offset() {
    // Goal: flip a byte in record 1 of 3, start kvstore; it exits non-zero naming offset 32.
    let (_dir, mut node) = standalone(&[]);
    let mut client = node.client();
    for i in 0..3 {
        client.put(format!("k{i}").as_bytes(), b"value").unwrap();
    }
    drop(client);
    node.kill();
    let log = first_segment(&node);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[32 + 8 + 20] ^= 0xff; // inside the first record's body (after the segment header)
    std::fs::write(&log, bytes).unwrap();

    let dir = node.data_dir.to_str().unwrap();
    let (status, err) = run_kvstore_until_exit(&["--port", "0", "--data-dir", dir]);
    assert!(!status.success(), "kvstore started on a corrupt WAL: {err}");
    assert!(err.contains("corrupt WAL record") && err.contains("at byte offset 32"), "{err}");
    let dump = kv_client(&["wal-dump", dir]);
    assert_eq!(dump.status.code(), Some(2), "wal-dump reports corruption as an error");
}

// ---- process and connection limits ---------------------------------------------------

#[test]
fn a_second_server_on_the_same_data_dir_exits_non_zero() {
    // Goal: start a 2nd kvstore on a live node's dir; it exits non-zero, the 1st keeps serving.
    let (_dir, node) = standalone(&[]);
    let mut client = node.client();
    assert_eq!(client.put(b"a", b"1").unwrap(), 1);
    let dir = node.data_dir.to_str().unwrap();
    let (status, err) = run_kvstore_until_exit(&["--port", "0", "--data-dir", dir]);
    assert!(!status.success(), "the second server must not run: {status}");
    assert!(err.contains("another kvstore process"), "stderr says why: {err}");
    assert_eq!(client.put(b"b", b"2").unwrap(), 2, "the first server is unharmed");
    assert_eq!(client.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn connection_over_the_limit_gets_too_many_connections_until_one_closes() {
    // Goal: --max-connections 2: a 3rd connection gets ERROR 7; after one closes, a new one works.
    let (_dir, node) = standalone(&["--max-connections", "2"]);
    let mut first = node.client();
    let mut second = node.client();
    assert_eq!(first.put(b"a", b"1").unwrap(), 1);
    assert_eq!(second.get(b"a").unwrap(), Some(b"1".to_vec()));

    // The third connection is refused without sending anything: the ERROR
    // arrives unasked, then the close.
    let mut third = raw_connect(&node);
    let (code, message) = parse_error_frame(&read_raw_frame(&mut third));
    assert_eq!(code, ErrorCode::TooManyConnections as u16, "{message}");
    assert!(message.contains("the limit is 2"), "{message}");
    assert_closed(&mut third);
    // A client that sends a request at once sees the same ERROR.
    let err = Client::connect(node.addr).unwrap().get(b"a").unwrap_err();
    assert!(matches!(err, Error::Server { code: ErrorCode::TooManyConnections, .. }), "{err}");

    assert_eq!(second.get(b"a").unwrap(), Some(b"1".to_vec()), "admitted ones still work");
    drop(first);
    let value = eventually("a connection slot frees up", DEADLINE, || {
        Client::connect(node.addr).ok()?.get(b"a").ok()
    });
    assert_eq!(value, Some(b"1".to_vec()));
    assert_eq!(second.get(b"a").unwrap(), Some(b"1".to_vec()));
}

// ---- WAL format versions -------------------------------------------------------------

/// A format-1 `wal.log` (no header, no term) holding PUT key{i} = value{i}.
fn format_1_log(count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=count {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        let mut body = i.to_be_bytes().to_vec();
        body.push(0x01);
        body.extend((key.len() as u32).to_be_bytes());
        body.extend(key.as_bytes());
        body.extend((value.len() as u32).to_be_bytes());
        body.extend(value.as_bytes());
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(crc32fast::hash(&body).to_be_bytes());
        out.extend(body);
    }
    out
}

#[test]
fn a_data_dir_of_wal_format_1_is_upgraded_and_its_records_read_as_term_1() {
    // Goal: a data dir written before terms existed starts, says it was
    // upgraded, serves every key, and its records show term 1.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wal.log"), format_1_log(3)).unwrap();
    let before = kv_client(&["wal-dump", dir.path().to_str().unwrap()]);
    assert!(stdout(&before).contains("format 1"), "{}", stdout(&before));
    let node = Node::start("old", dir.path(), &[]);
    node.wait_for_log("upgraded");
    node.wait_for_log("from format 1 to format 3");
    node.wait_for_log("3 record(s), each read as term 1");
    assert!(!dir.path().join("wal.log").exists(), "the old log is gone");
    assert_eq!(node.client().get(b"key3").unwrap(), Some(b"value3".to_vec()));
    assert_eq!(node.client().put(b"key4", b"value4").unwrap(), 4);
    let dump = stdout(&kv_client(&["wal-dump", dir.path().to_str().unwrap()]));
    assert!(dump.lines().nth(1).unwrap().starts_with("lsn=1        term=1 "), "{dump}");
    assert!(dump.contains("lsn=4        term=2 "), "a new term after the upgrade: {dump}");
    assert!(dump.ends_with("; format 3"), "{dump}");
}

/// A format-2 `wal.log` (16-byte header, entries with terms) holding
/// PUT key{i} = value{i} of term 1.
fn format_2_log(count: u64) -> Vec<u8> {
    let mut out = b"KVSTOWAL".to_vec();
    out.extend(2u32.to_be_bytes());
    out.extend(0u32.to_be_bytes());
    for i in 1..=count {
        let op = kvstore::wal::Op::Put {
            key: format!("key{i}").into_bytes(),
            value: format!("value{i}").into_bytes(),
        };
        let record = kvstore::wal::Record { lsn: i, term: 1, op };
        kvstore::wal::segment::encode_entry(&record, &mut out);
    }
    out
}

#[test]
fn a_format_2_wal_log_survives_a_crash_in_its_upgrade_and_then_upgrades() {
    // Goal: the upgrade to segments is crash-safe. Method: a data dir with
    // a format-2 wal.log of 50 records; start kvstore with a failpoint
    // that aborts after the new segment is in place but before wal.log is
    // removed; the old file must be whole. Start again: it upgrades, serves
    // every key, and continues the log at LSN 51.
    let dir = tempfile::tempdir().unwrap();
    let old = format_2_log(50);
    std::fs::write(dir.path().join("wal.log"), &old).unwrap();
    let crashed = Node::launch_with_env(
        "upgrading",
        0,
        dir.path(),
        &[],
        &[("KVSTORE_FAILPOINT", "upgrade-before-commit")],
    );
    crashed.wait_exit();
    assert_eq!(std::fs::read(dir.path().join("wal.log")).unwrap(), old, "the old log is whole");
    let node = Node::start("upgraded", dir.path(), &[]);
    node.wait_for_log("removing");
    node.wait_for_log("from format 2 to format 3");
    assert!(!dir.path().join("wal.log").exists());
    for i in [1, 25, 50] {
        let value = node.client().get(format!("key{i}").as_bytes()).unwrap();
        assert_eq!(value, Some(format!("value{i}").into_bytes()), "key{i}");
    }
    assert!(node.client().put(b"after", b"upgrade").unwrap() > 50);
}

#[test]
fn a_data_dir_from_a_newer_wal_format_is_refused_untouched() {
    // Goal: a WAL segment whose header names format 4 stops start-up with
    // an error naming both versions, and the file is left exactly as it was.
    let dir = tempfile::tempdir().unwrap();
    let mut log = b"KVWALSEG".to_vec();
    log.extend(4u32.to_be_bytes());
    log.extend(0u32.to_be_bytes());
    log.extend(1u64.to_be_bytes());
    log.extend(0u64.to_be_bytes());
    log.extend(b"records of a format this build cannot know");
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    let path = dir.path().join("wal").join("00000000000000000001.seg");
    std::fs::write(&path, &log).unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let (status, err) = run_kvstore_until_exit(&["--port", "0", "--data-dir", dir_arg]);
    assert!(!status.success(), "kvstore started on a format-4 WAL: {err}");
    assert!(err.contains("WAL format version 4, but this kvstore reads versions 1 to 3"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), log, "nothing was changed");
    let dump = kv_client(&["wal-dump", dir_arg]);
    assert_eq!(dump.status.code(), Some(2), "{}", stdout(&dump));
}
