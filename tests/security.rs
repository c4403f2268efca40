//! Authentication and safe files, end to end with real processes
//! (`src/auth.rs`, `src/datadir.rs`, `docs/SECURITY.md`): with
//! `--auth-file`, a client without the secret, with a wrong one, or
//! replaying a captured handshake gets one ERROR and nothing else — not a
//! value, not the cluster id; a fake follower gets nothing; followers and
//! elections with the secret work as before. Secret files and data dirs
//! that other users may touch are refused with the command that fixes them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use kvstore::auth::{self, ClientHandshake, Credentials, Scope, Secret};
use kvstore::client::Client;
use kvstore::dial::Dialer;
use kvstore::error::{Error, ErrorCode};
use kvstore::protocol::{read_frame, write_message, Message};

const SECRET: &str = "correct horse battery staple";
const WRONG: &str = "incorrect horse battery staple";

/// Election flags of tests/election.rs: fast, with the defaults' shape.
const AUTO: [&str; 3] =
    ["--failover=auto", "--election-timeout-ms=500", "--heartbeat-interval-ms=50"];

fn flag(path: &Path) -> String {
    format!("--auth-file={}", path.display())
}

/// A standalone leader with `--auth-file`, and the key `k` = `secret-value`.
fn leader_with_auth(dirs: &tempfile::TempDir) -> (Node, String) {
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let node = Node::start("leader", &dirs.path().join("leader"), &[&flag(&secret)]);
    node.client().put(b"k", b"secret-value").unwrap();
    let cluster_id = node.status().cluster_id.expect("a cluster id");
    (node, cluster_id)
}

/// Everything the server sends on `stream` until it closes it.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            // A reset after the ERROR (our unread request) also ends it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return bytes,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
}

/// The frames in `bytes`, decoded.
fn messages(mut bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(frame) = read_frame(&mut bytes, 1 << 20).unwrap() {
        out.push(Message::decode(&frame).unwrap());
    }
    out
}

/// Goal of every refusal test: the whole answer is one ERROR of `code`,
/// and none of it is the value or the cluster id, as text or as bytes.
fn assert_refused_with_nothing_else(bytes: &[u8], code: ErrorCode, cluster_id: &str) {
    let replies = messages(bytes);
    assert_eq!(replies.len(), 1, "exactly one reply, got {replies:?}");
    assert!(
        matches!(&replies[0], Message::Error { code: c, .. } if *c == code as u16),
        "ERROR {code:?} expected, got {replies:?}"
    );
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains("secret-value"), "a value leaked: {text}");
    assert!(!text.contains(cluster_id), "the cluster id leaked: {text}");
    let raw_id: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&cluster_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert!(!bytes.windows(16).any(|w| w == raw_id), "the cluster id leaked as bytes");
}

fn send(stream: &mut TcpStream, message: &Message) {
    write_message(stream, message).unwrap();
    stream.flush().unwrap();
}

fn receive(stream: &mut TcpStream) -> Message {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    Message::decode(&read_frame(stream, 1 << 20).unwrap().expect("a frame")).unwrap()
}

#[test]
fn a_client_without_the_secret_gets_one_error_and_nothing_else() {
    // Goal: requests on a connection that did not authenticate are not
    // served, not even STATUS. Method: a raw connection sends GET, STATUS
    // and PUT at once; it must get one ERROR 15 and a close, and the PUT
    // must not be applied.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, cluster_id) = leader_with_auth(&dirs);
    let mut stream = TcpStream::connect(leader.addr).unwrap();
    send(&mut stream, &Message::Get { key: b"k".to_vec() });
    send(&mut stream, &Message::Status);
    send(&mut stream, &Message::Put { key: b"k".to_vec(), value: b"overwritten".to_vec() });
    let bytes = read_until_closed(&mut stream);
    assert_refused_with_nothing_else(&bytes, ErrorCode::AuthRequired, &cluster_id);
    assert_eq!(leader.client().get(b"k").unwrap().as_deref(), Some(&b"secret-value"[..]));
    // The refusal is counted and logged once a second, not per attempt.
    leader.wait_for_log("[auth] refused 1 connection(s) that did not authenticate");

    let out = kv_client(&["--port", &leader.port().to_string(), "get", "k"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("authentication required"), "{}", stderr(&out));
}

#[test]
fn a_client_with_a_wrong_secret_is_refused_and_learns_nothing() {
    // Goal: a wrong proof gets ERROR 16 and a close. Method: the client
    // side of the handshake by hand with the wrong secret, then a GET.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, cluster_id) = leader_with_auth(&dirs);
    let wrong = Secret::from_bytes(WRONG.as_bytes()).unwrap();
    let mut stream = TcpStream::connect(leader.addr).unwrap();
    let (handshake, hello) = ClientHandshake::start(Scope::Client, auth::new_nonce().unwrap());
    send(&mut stream, &hello);
    let (_, proof) = handshake.prove(&wrong, &receive(&mut stream)).unwrap();
    send(&mut stream, &proof);
    send(&mut stream, &Message::Get { key: b"k".to_vec() });
    let bytes = read_until_closed(&mut stream);
    assert_refused_with_nothing_else(&bytes, ErrorCode::AuthFailed, &cluster_id);

    // The library client says so plainly.
    let credentials = Credentials::new(Arc::new(wrong), Scope::Client);
    match Client::connect_with(leader.addr, &Dialer::from(credentials)) {
        Err(Error::Server { code: ErrorCode::AuthFailed, message }) => {
            assert_eq!(message, "authentication failed: wrong proof")
        }
        Err(other) => panic!("expected ERROR 16, got {other}"),
        Ok(_) => panic!("a wrong secret was accepted"),
    }
    leader.wait_for_log("connection(s) whose proof was wrong");
}

#[test]
fn a_replayed_handshake_is_refused() {
    // Goal: a handshake captured on the wire cannot be replayed. Method:
    // authenticate once with the secret, keeping the AUTH_HELLO and
    // AUTH_PROOF sent; on a new connection send both again: the server's
    // nonce is new, so the old proof is wrong.
    let dirs = tempfile::tempdir().unwrap();
    let (leader, cluster_id) = leader_with_auth(&dirs);
    let secret = Secret::from_bytes(SECRET.as_bytes()).unwrap();
    let mut stream = TcpStream::connect(leader.addr).unwrap();
    let (handshake, hello) = ClientHandshake::start(Scope::Client, auth::new_nonce().unwrap());
    send(&mut stream, &hello);
    let (server_nonce, proof) = handshake.prove(&secret, &receive(&mut stream)).unwrap();
    send(&mut stream, &proof);
    handshake.check(&secret, &server_nonce, &receive(&mut stream)).unwrap();
    send(&mut stream, &Message::Get { key: b"k".to_vec() });
    assert_eq!(receive(&mut stream), Message::Value { value: b"secret-value".to_vec() });

    let mut replay = TcpStream::connect(leader.addr).unwrap();
    send(&mut replay, &hello);
    let Message::AuthChallenge { server_nonce: fresh } = receive(&mut replay) else {
        panic!("expected AUTH_CHALLENGE")
    };
    assert_ne!(fresh, server_nonce, "every connection gets a new nonce");
    send(&mut replay, &proof);
    send(&mut replay, &Message::Get { key: b"k".to_vec() });
    let bytes = read_until_closed(&mut replay);
    assert_refused_with_nothing_else(&bytes, ErrorCode::AuthFailed, &cluster_id);
}

#[test]
fn a_fake_follower_gets_nothing() {
    // Goal: FOLLOWER_HELLO without the secret is refused before the leader
    // says anything (no LEADER_HELLO, no records); and with a separate
    // --replication-auth-file, a client's secret may not pose as a
    // follower either (ERROR 17).
    let dirs = tempfile::tempdir().unwrap();
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let replication = secret_file(dirs.path(), "replication", "the replication secret");
    let replication_flag = format!("--replication-auth-file={}", replication.display());
    let leader =
        Node::start("leader", &dirs.path().join("leader"), &[&flag(&secret), &replication_flag]);
    leader.wait_for_log("--auth-file for clients, --replication-auth-file for members");
    leader.client().put(b"k", b"secret-value").unwrap();
    let cluster_id = leader.status().cluster_id.unwrap();
    let hello = Message::FollowerHello {
        last_lsn: 0,
        last_term: 0,
        term: 0,
        listen_port: Some(9),
        cluster_id: None,
    };

    let mut stream = TcpStream::connect(leader.addr).unwrap();
    send(&mut stream, &hello);
    let bytes = read_until_closed(&mut stream);
    assert_refused_with_nothing_else(&bytes, ErrorCode::AuthRequired, &cluster_id);

    let mut client = leader.client(); // authenticated with the client secret
    match client.request(&hello) {
        Err(Error::Server { code: ErrorCode::Forbidden, .. }) => {}
        other => panic!("expected ERROR 17, got {other:?}"),
    }
    assert!(client.status().is_err(), "the connection was closed");
    assert_eq!(leader.status().followers.iter().filter(|f| f.state == "streaming").count(), 0);
}

#[test]
fn a_follower_with_the_secret_replicates_and_catches_up_and_one_without_gets_nothing() {
    // Goal: with auth on, lesson 5 works as before: a follower with the
    // secret gets every record, and catches up after a restart; a follower
    // with another secret is refused and stays empty, saying why.
    let dirs = tempfile::tempdir().unwrap();
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let wrong = secret_file(dirs.path(), "wrong", WRONG);
    let (p2, p3) = (free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    let leader = Node::start(
        "leader",
        &dirs.path().join("leader"),
        &["--role=leader", &peers, &flag(&secret)],
    );
    let to_leader = format!("--leader={}", leader.port());
    let follower_args = ["--role=follower", to_leader.as_str(), &flag(&secret)];
    let mut follower = Node::start_on("follower", p2, &dirs.path().join("f2"), &follower_args);
    let stranger = Node::start_on(
        "stranger",
        p3,
        &dirs.path().join("f3"),
        &["--role=follower", &to_leader, &flag(&wrong)],
    );
    let mut client = leader.client();
    write_keys(&mut client, 0, 100);
    wait_converged(&[&leader, &follower]);

    follower.kill();
    write_keys(&mut client, 100, 100);
    follower.restart();
    let (lsn, _) = wait_converged(&[&leader, &follower]);
    assert!(lsn >= 200);
    follower.wait_for_log("[catch-up] received 100 records, caught up");
    wait_for_value(&follower, "key150", Some("value150"));

    stranger.wait_for_log("authentication failed: wrong proof");
    assert_eq!(stranger.status().last_lsn, 0, "the stranger got no record");
    assert!(stranger.status().cluster_id.is_none(), "nor the cluster id");
}

#[test]
fn an_election_works_with_auth_on() {
    // Goal: votes and announcements authenticate too. Method: three nodes
    // with --cluster and one secret elect a leader; kill it; the other two
    // elect a new one, which takes writes.
    let dirs = tempfile::tempdir().unwrap();
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let ports = [free_port(), free_port(), free_port()];
    let cluster = format!("--cluster={},{},{}", ports[0], ports[1], ports[2]);
    let auth = flag(&secret);
    let args: Vec<&str> = AUTO.iter().copied().chain([cluster.as_str(), auth.as_str()]).collect();
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("n{}", i + 1);
            Node::start_on(&name, *port, &dirs.path().join(&name), &args)
        })
        .collect();
    elect_and_replace_leader(&mut nodes);
    for node in &nodes {
        assert!(!node.log_text().contains("[auth] refused"), "{}: a member was refused", node.name);
    }
}

#[test]
fn kv_client_takes_the_secret_from_a_flag_or_the_environment() {
    let dirs = tempfile::tempdir().unwrap();
    let (leader, _) = leader_with_auth(&dirs);
    let secret = dirs.path().join("secret");
    let port = leader.port().to_string();
    let bin = env!("CARGO_BIN_EXE_kv_client");
    let put = Command::new(bin)
        .args(["--auth-file", secret.to_str().unwrap(), "--port", &port, "put", "a", "1"])
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", stderr(&put));
    let get = Command::new(bin)
        .args(["--port", &port, "get", "a"])
        .env("KVSTORE_AUTH_FILE", &secret)
        .output()
        .unwrap();
    assert_eq!(stdout(&get), "1", "{}", stderr(&get));
}

#[test]
fn a_client_with_a_secret_refuses_a_node_without_auth() {
    // Goal: mutual authentication cannot be skipped by a server that
    // simply does not ask: a node without --auth-file cannot prove the
    // secret, and the client stops before sending a request.
    let dirs = tempfile::tempdir().unwrap();
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let node = Node::start("plain", &dirs.path().join("plain"), &[]);
    let credentials = Credentials::client_from_file(Some(&secret)).unwrap();
    match Client::connect_with(node.addr, &Dialer::from(credentials)) {
        Err(Error::Server { code: ErrorCode::AuthFailed, message }) => {
            assert!(message.contains("without --auth-file"), "{message}")
        }
        Err(other) => panic!("expected ERROR 16, got {other}"),
        Ok(_) => panic!("connected to a node that proved nothing"),
    }
}

#[test]
fn a_secret_file_others_can_read_stops_the_node_with_the_fix() {
    let dirs = tempfile::tempdir().unwrap();
    let secret = secret_file(dirs.path(), "secret", SECRET);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let node = Node::launch_with_env("node", 0, &dirs.path().join("node"), &[&flag(&secret)], &[]);
    assert_eq!(node.wait_exit(), "exit status: 2");
    let fix = format!("chmod 600 {}", secret.display());
    node.wait_for_log_text(&fix);
    node.wait_for_log_text("mode 0640");
}

#[test]
fn data_dirs_are_private_and_one_others_can_write_is_refused() {
    // Goal: a new data dir and its subdirectories (wal/, snapshots/) are
    // 0700 and every file in them 0600; an existing dir others may write
    // to stops the node with the chmod that fixes it.
    let dirs = tempfile::tempdir().unwrap();
    let path = dirs.path().join("node");
    let mut node = Node::start("node", &path, &[]);
    node.client().put(b"k", b"v").unwrap();
    node.client().snapshot().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut pending = vec![path.clone()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                pending.push(entry);
            } else {
                assert_eq!(mode(&entry), 0o600, "{}", entry.display());
                files += 1;
            }
        }
    }
    assert!(files >= 5, "a segment, its index, a snapshot, STATE, CLUSTER_ID, LOCK");
    node.kill();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = Node::launch_with_env("refused", 0, &path, &[], &[]);
    assert_eq!(refused.wait_exit(), "exit status: 1");
    refused.wait_for_log_text(&format!("chmod 700 {}", path.display()));
}

#[test]
fn binding_beyond_localhost_without_auth_warns_and_with_auth_does_not() {
    let dirs = tempfile::tempdir().unwrap();
    let open = Node::start("open", &dirs.path().join("open"), &["--host=0.0.0.0"]);
    open.wait_for_log("reachable beyond this machine, without --auth-file");
    let secret = secret_file(dirs.path(), "secret", SECRET);
    let closed =
        Node::start("closed", &dirs.path().join("closed"), &["--host=0.0.0.0", &flag(&secret)]);
    closed.client().put(b"k", b"v").unwrap();
    assert!(!closed.log_text().contains("without --auth-file"));
}

#[test]
fn watch_needs_the_secret_like_any_client() {
    // Goal: an observer (`kv_client watch`) sees the replication stream,
    // keys and values included, so it needs the secret like any client.
    // Method: attach without it (refused, nothing else), then with the
    // client secret (a LEADER_HELLO, then the record written before).
    let dirs = tempfile::tempdir().unwrap();
    let (leader, _) = leader_with_auth(&dirs);
    let address = leader.addr.to_string();
    match kvstore::watch::Observer::connect(&address, &Dialer::plain(), 1) {
        Err(Error::Server { code: ErrorCode::AuthRequired, .. }) => {}
        Err(other) => panic!("expected ERROR 15 without the secret, got {other}"),
        Ok(_) => panic!("an observer without the secret was attached"),
    }
    let secret = dirs.path().join("secret");
    let dialer = Dialer::from(Credentials::client_from_file(Some(&secret)).unwrap());
    let (mut observer, hello) = kvstore::watch::Observer::connect(&address, &dialer, 1).unwrap();
    assert!(matches!(hello.message, Message::LeaderHello { .. }), "{:?}", hello.message);
    let first = observer.next_message().unwrap();
    let Message::AppendEntries(ae) = first.message else { panic!("{:?}", first.message) };
    let lsns: Vec<u64> = ae.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, [1], "the record written before the watch began");
}
