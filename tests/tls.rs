//! TLS end to end (`src/tls.rs`, `--tls-cert`, `--tls-key`, `--tls-ca`):
//! a three-node cluster over mutual TLS replicates and catches up; clients
//! without a certificate from the cluster's CA — another CA's, none, or no
//! TLS at all — are refused and receive nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::certs::make_certs;
use common::*;
use kvstore::client::Client;
use kvstore::dial::Dialer;
use kvstore::protocol::{write_message, Message};
use kvstore::tls::TlsFiles;

/// `--tls-*` flags for NAME's certificate and the cluster CA in `dir`.
fn tls_flags(dir: &Path, name: &str) -> [String; 3] {
    [
        format!("--tls-cert={}", dir.join(format!("{name}.pem")).display()),
        format!("--tls-key={}", dir.join(format!("{name}.key")).display()),
        format!("--tls-ca={}", dir.join("ca.pem").display()),
    ]
}

fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    base.iter().copied().chain(extra.iter().map(String::as_str)).collect()
}

#[test]
fn a_three_node_cluster_over_mutual_tls_replicates_and_catches_up() {
    // Goal: with TLS (and auth on top), lessons 3 and 5 work as before:
    // followers dial their leader over mutual TLS, get every record, and
    // catch up after a restart.
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["node1", "node2", "node3"]);
    let secret = secret_file(dirs.path(), "secret", "correct horse battery staple");
    let auth = format!("--auth-file={}", secret.display());
    let (p2, p3) = (free_port(), free_port());
    let peers = format!("--peers={p2},{p3}");
    let flags1 = [tls_flags(dirs.path(), "node1").to_vec(), vec![auth.clone()]].concat();
    let leader =
        Node::start("leader", &dirs.path().join("n1"), &args(&["--role=leader", &peers], &flags1));
    leader.wait_for_log(
        "[tls] serving TLS with --tls-cert; client certificates signed by --tls-ca required",
    );
    let to_leader = format!("--leader={}", leader.port());
    let flags2 = [tls_flags(dirs.path(), "node2").to_vec(), vec![auth.clone()]].concat();
    let flags3 = [tls_flags(dirs.path(), "node3").to_vec(), vec![auth.clone()]].concat();
    let follower_args2 = args(&["--role=follower", &to_leader], &flags2);
    let follower_args3 = args(&["--role=follower", &to_leader], &flags3);
    let mut f2 = Node::start_on("follower2", p2, &dirs.path().join("n2"), &follower_args2);
    let f3 = Node::start_on("follower3", p3, &dirs.path().join("n3"), &follower_args3);

    let mut client = leader.client();
    write_keys(&mut client, 0, 100);
    // A 4 MiB value: frames much larger than a TLS record, both ways.
    let big = vec![7u8; 4 << 20];
    client.put(b"big", &big).unwrap();
    assert_eq!(client.get(b"big").unwrap().as_deref(), Some(&big[..]));
    wait_converged(&[&leader, &f2, &f3]);
    f2.kill();
    write_keys(&mut client, 100, 100);
    client.put(b"big2", &big).unwrap();
    f2.restart();
    let (lsn, _) = wait_converged(&[&leader, &f2, &f3]);
    assert!(lsn >= 200);
    f2.wait_for_log("[catch-up] received 101 records, caught up");
    assert_eq!(f2.client().get(b"big2").unwrap().as_deref(), Some(&big[..]));
    wait_for_value(&f2, "key150", Some("value150"));
}

#[test]
fn clients_without_a_certificate_from_the_cluster_ca_are_refused() {
    // Goal: mutual TLS keeps out a client with another CA's certificate,
    // one with no certificate, and one without TLS; none reads a value.
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["node1", "client"]);
    make_certs(dirs.path(), "other-ca", &["stranger"]);
    let flags = tls_flags(dirs.path(), "node1");
    let node = Node::start("node", &dirs.path().join("n1"), &args(&[], &flags));
    node.client().put(b"k", b"secret-value").unwrap();

    let ca = Some(dirs.path().join("ca.pem"));
    let get = |dialer: Dialer| -> Result<Option<Vec<u8>>, kvstore::error::Error> {
        Client::connect_with(node.addr, &dialer)?.get(b"k")
    };
    let with = |name: &str| TlsFiles {
        cert: Some(dirs.path().join(format!("{name}.pem"))),
        key: Some(dirs.path().join(format!("{name}.key"))),
        ca: ca.clone(),
    };
    let dialer = |files: TlsFiles| Dialer::for_client(None, &files).unwrap();
    assert_eq!(get(dialer(with("client"))).unwrap().as_deref(), Some(&b"secret-value"[..]));
    assert!(get(dialer(with("stranger"))).is_err(), "another CA's certificate was accepted");
    let no_cert = TlsFiles { cert: None, key: None, ca: ca.clone() };
    assert!(get(dialer(no_cert)).is_err(), "a client without a certificate was accepted");

    // Plain TCP: the server waits for a TLS ClientHello and closes.
    let mut plain = TcpStream::connect(node.addr).unwrap();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    write_message(&mut plain, &Message::Get { key: b"k".to_vec() }).unwrap();
    plain.flush().unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.windows(12).any(|w| w == b"secret-value"), "a value leaked");
    node.wait_for_log("sent bad input");
}

#[test]
fn kv_client_speaks_tls_with_its_flags() {
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["node1", "client"]);
    let flags = tls_flags(dirs.path(), "node1");
    let node = Node::start("node", &dirs.path().join("n1"), &args(&[], &flags));
    let port = node.port().to_string();
    let client_flags = tls_flags(dirs.path(), "client");
    let mut put = vec!["--port", &port];
    put.extend(client_flags.iter().map(String::as_str));
    let mut get = put.clone();
    put.extend(["put", "a", "1"]);
    get.extend(["get", "a"]);
    let out = kv_client(&put);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&kv_client(&get)), "1");
}

#[test]
fn a_private_key_others_can_read_stops_the_node_with_the_fix() {
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["node1"]);
    let key = dirs.path().join("node1.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let flags = tls_flags(dirs.path(), "node1");
    let node = Node::launch_with_env("node", 0, &dirs.path().join("n1"), &args(&[], &flags), &[]);
    assert_eq!(node.wait_exit(), "exit status: 2");
    node.wait_for_log_text(&format!("chmod 600 {}", key.display()));
}

#[test]
fn an_election_works_over_mutual_tls() {
    // Goal: votes, pre-votes and announcements go over TLS too. Method:
    // three nodes with --cluster elect a leader; kill it; the other two
    // elect another, which takes writes.
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["n1", "n2", "n3"]);
    let ports = [free_port(), free_port(), free_port()];
    let cluster = format!("--cluster={},{},{}", ports[0], ports[1], ports[2]);
    let auto = ["--failover=auto", "--election-timeout-ms=500", "--heartbeat-interval-ms=50"];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let name = format!("n{}", i + 1);
            let flags = tls_flags(dirs.path(), &name);
            let base: Vec<&str> = auto.iter().copied().chain([cluster.as_str()]).collect();
            Node::start_on(&name, ports[i], &dirs.path().join(&name), &args(&base, &flags))
        })
        .collect();
    elect_and_replace_leader(&mut nodes);
}

#[test]
fn a_node_without_a_ca_serves_tls_without_asking_for_client_certificates() {
    // Goal: --tls-cert and --tls-key alone encrypt; any client that trusts
    // the node's CA connects, without a certificate of its own.
    let dirs = tempfile::tempdir().unwrap();
    make_certs(dirs.path(), "ca", &["node1"]);
    let flags = tls_flags(dirs.path(), "node1");
    let node = Node::start("node", &dirs.path().join("n1"), &args(&[], &flags[..2]));
    node.wait_for_log("[tls] serving TLS with --tls-cert; no client certificates asked for");
    let files = TlsFiles { cert: None, key: None, ca: Some(dirs.path().join("ca.pem")) };
    let mut client = Client::connect_with(node.addr, &Dialer::for_client(None, &files).unwrap())
        .expect("a TLS client without a certificate");
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
