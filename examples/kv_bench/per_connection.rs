//! Thread-per-connection mode (the default): each connection has its own OS
//! thread and its own blocking client, and waits inside `read` for its
//! replies.
//!
//! It is the simplest way to drive a server, and the only way `--cluster`
//! runs: following the leader across a failover needs the blocking
//! [`ClusterClient`], one request at a time. Its cost is the client's thread
//! count: at `-c 256` there are 256 client threads, each woken once per
//! reply, on the same cores as the server (see the module docs of
//! `main.rs`).

use std::collections::VecDeque;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use kvstore::client::Client;
use kvstore::cluster_client::ClusterClient;
use kvstore::dial::Dialer;
use kvstore::error::Error as KvError;
use kvstore::tls::TlsFiles;

use crate::{
    count_progress, drive_thread, BenchResult, Driver, Op, Phase, Shared, Stats, WorkerOutcome,
    REPLY_TIMEOUT,
};

/// Where one connection's requests go.
enum Target {
    /// One server (`--port`), with up to `--pipeline` requests in flight.
    Node(Client),
    /// Whichever member of `--cluster` leads, one request at a time.
    Cluster(ClusterClient),
}

/// One connection, driven by its own thread.
struct Connection {
    id: usize,
    target: Target,
}

impl Driver for Connection {
    fn run_phase(&mut self, shared: &Shared, phase: Phase, stats: &mut Stats) -> BenchResult<()> {
        let ops = shared.args.ops(phase, self.id);
        match &mut self.target {
            Target::Node(client) => {
                drive_node(client, ops, phase.window(shared.args), shared, phase, stats)
            }
            Target::Cluster(cluster) => drive_cluster(cluster, ops, shared, phase, stats),
        }
    }
}

/// Connect all `-c` connections, then start one thread per connection.
/// Every thread waits at `shared.ready` once set up.
pub fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    shared: &'scope Shared,
) -> BenchResult<Vec<ScopedJoinHandle<'scope, BenchResult<WorkerOutcome>>>> {
    let args = shared.args;
    // A cluster client finds the leader with its first request. Every
    // connection dials the same way: TCP, then TLS and the auth handshake
    // if asked for (src/dial.rs).
    let tls = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        ca: args.tls_ca.clone(),
    };
    let dialer = Dialer::for_client(args.auth_file.as_deref(), &tls)?;
    let mut connections = Vec::with_capacity(args.connections);
    for id in 0..args.connections {
        let target = match args.port {
            Some(port) => {
                let address = format!("{}:{port}", args.host);
                let client = Client::connect_with(address.as_str(), &dialer)
                    .map_err(|e| format!("connection {id}: {e}"))?;
                client.set_timeout(Some(REPLY_TIMEOUT))?;
                Target::Node(client)
            }
            None => {
                let budget = Duration::from_millis(args.retry_ms);
                let cluster = ClusterClient::new(&args.cluster, budget)?;
                Target::Cluster(cluster.with_dialer(dialer.clone()))
            }
        };
        connections.push(Connection { id, target });
    }

    let mut handles = Vec::with_capacity(connections.len());
    for mut connection in connections {
        let id = connection.id;
        let handle = thread::Builder::new().name(format!("bench-{id}")).spawn_scoped(
            scope,
            move || -> BenchResult<WorkerOutcome> {
                drive_thread(shared, &mut connection)
                    .map_err(|e| format!("connection {id}: {e}").into())
            },
        )?;
        handles.push(handle);
    }
    Ok(handles)
}

/// `--cluster`: one request at a time through the [`ClusterClient`].
fn drive_cluster(
    cluster: &mut ClusterClient,
    ops: impl Iterator<Item = Op>,
    shared: &Shared,
    phase: Phase,
    stats: &mut Stats,
) -> BenchResult<()> {
    let progress = shared.progress(phase);
    for op in ops {
        if shared.aborted() {
            break;
        }
        let sent_at = Instant::now();
        let reply = match op {
            Op::Put(k) => cluster.put(&crate::key(k), &shared.value).map(|_| true),
            Op::Get(k) => cluster.get(&crate::key(k)).map(|found| found.is_some()),
        };
        stats.record_latency(sent_at)?;
        match reply {
            Ok(true) => {}
            Ok(false) => stats.not_found += 1,
            Err(KvError::Indeterminate(why)) => {
                stats.unknown += 1;
                stats.first_unknown.get_or_insert(why);
            }
            Err(KvError::Server { message, .. }) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(message);
            }
            Err(fatal) => return Err(fatal.into()),
        }
        count_progress(progress);
    }
    Ok(())
}

/// `--port`: up to `window` requests in flight on one connection.
fn drive_node(
    client: &mut Client,
    mut ops: impl Iterator<Item = Op>,
    window: usize,
    shared: &Shared,
    phase: Phase,
    stats: &mut Stats,
) -> BenchResult<()> {
    let progress = shared.progress(phase);
    // Requests sent and not yet answered, oldest first: (kind, send time).
    let mut in_flight: VecDeque<(Op, Instant)> = VecDeque::with_capacity(window);
    loop {
        // Fill the window.
        while in_flight.len() < window && !shared.aborted() {
            let Some(op) = ops.next() else { break };
            let request = op.request(&shared.value);
            let sent_at = Instant::now();
            client.send(&request)?;
            in_flight.push_back((op, sent_at));
        }
        // Take the oldest request's reply (the server answers in order).
        let Some((op, sent_at)) = in_flight.pop_front() else {
            return Ok(()); // nothing left to send or to wait for
        };
        let reply = client.receive();
        stats.record_latency(sent_at)?;
        stats.tally(op, reply)?;
        count_progress(progress);
    }
}
