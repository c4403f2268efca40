//! The server: accept loop and one OS thread per connection (week 2).
//!
//! Blocking sockets and a thread per connection are the simplest model that
//! is also fast on a few cores: no event loop, no callbacks; each
//! connection's code reads top to bottom like a C program's `while (read)`
//! loop. The cost — one thread and one descriptor per connection — is
//! bounded by `--max-connections`.
//!
//! - [`run`] opens the data directory, binds, starts replication in the
//!   node's role ([`Replica`]), and runs the accept loop on the calling thread.
//! - [`connection`] authenticates a connection (with `--auth-file`), reads
//!   requests, answers them, and hands a replication connection (first
//!   message FOLLOWER_HELLO) to [`crate::replication::leader`].
//! - [`inbound`] reads a stranger's frames with a deadline per frame and a
//!   shared memory budget.
//!
//! Every connection is admitted against the budgets of
//! [`crate::admission`] before its thread starts.

pub mod connection;
pub mod inbound;
pub mod shutdown;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admission::{Admission, AdmissionLimits, Refusal};
use crate::auth::{Credentials, ServerKeys};
use crate::db::{Db, FsyncPolicy, Recovery};
use crate::dial::Dialer;
use crate::error::{Error, Result};
use crate::limits::{CONNECTION_STACK_BYTES, LISTEN_BACKLOG, REFUSING_THREADS_MAX};
use crate::logline::{bytes, count};
use crate::protocol::{write_message, Message};
use crate::replication::election::ElectionConfig;
use crate::replication::hub::WriteConcern;
use crate::replication::replica::{Replica, RoleView, Startup};
use crate::snapshot::policy::StorageOptions;
use crate::snapshot::snapshotter::Snapshotter;

/// Everything `kvstore` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    /// 0 picks a free port; the chosen address is logged.
    pub port: u16,
    pub data_dir: PathBuf,
    /// `--wal-segment-bytes`, `--snapshot-after-bytes`, `--wal-retain-bytes`,
    /// `--wal-retain-max-bytes`, `--follower-retain-secs`.
    pub storage: StorageOptions,
    pub role: Role,
    pub fsync: FsyncPolicy,
    pub write_concern: WriteConcern,
    pub write_timeout: Duration,
    /// `--max-connections` and the other budgets of [`crate::admission`].
    pub limits: AdmissionLimits,
    /// `--auth-file` (and `--replication-auth-file`): the secrets every
    /// connection must prove it knows. `None`: no authentication.
    pub auth: Option<ServerKeys>,
    /// `--tls-cert`/`--tls-key` (and `--tls-ca`): serve TLS. `None`: plain.
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// `--tls-ca` (and the node's certificate): dial members over TLS.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The address other members reach this node on, if not the bound one
    /// (behind NAT, a container, or a proxy).
    pub advertise: Option<SocketAddr>,
    /// `--failover`, `--election-timeout-ms`, `--heartbeat-interval-ms`.
    pub election: ElectionConfig,
}

/// What this node was told to be on the command line.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accepts writes; streams them to the followers that connect. `peers`
    /// are the followers it expects (they size the majority).
    Leader { peers: Vec<SocketAddr> },
    /// Replicates from `leader`; serves reads, refuses writes.
    Follower { leader: SocketAddr },
    /// `--cluster`: every member is listed; a new node waits for an
    /// election, a restarted one takes its stored role.
    Cluster { members: Vec<SocketAddr> },
    /// No `--role`: the role stored in the data dir (a new node: a
    /// standalone leader).
    Stored,
}

/// What every connection thread shares.
pub struct Node {
    pub db: Arc<Db>,
    /// The node's role, term and members, and every change of them.
    pub replica: Arc<Replica>,
    pub address: SocketAddr,
    pub write_concern: WriteConcern,
    pub write_timeout: Duration,
    /// Set on SIGTERM/SIGINT; counts the requests in flight.
    pub shutdown: shutdown::Shutdown,
    /// The secrets connections must prove they know (`None`: no auth).
    pub auth: Option<ServerKeys>,
    /// The budgets connections draw on, and the refusal counters.
    pub admission: Arc<Admission>,
    /// Serve TLS with this (`None`: plain TCP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The snapshot thread, for `kv_client snapshot`.
    pub snapshotter: Snapshotter,
}

/// Run a kvstore node until the process is killed.
pub fn run(config: Config) -> Result<()> {
    let (node, listener) = start(&config)?;
    shutdown::spawn_signal_handler(Arc::clone(&node))?;
    node.admission.spawn_refusal_logger()?;
    accept_loop(&listener, &node);
    Ok(())
}

/// Open the data directory, bind, and start replication; return the node
/// and its listener (split from [`run`] so the steps read in order).
fn start(config: &Config) -> Result<(Arc<Node>, TcpListener)> {
    // 1. Load the newest snapshot, recover the WAL after it (week 9).
    let (db, recovery) = Db::open_with(&config.data_dir, config.fsync, config.storage)?;
    log_recovery(&db, &recovery);
    let db = Arc::new(db);

    // 2. Bind. Port 0 asks the kernel for a free port; log the real one.
    let bind = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&bind).map_err(|e| Error::io(format!("binding {bind}"), e))?;
    deepen_backlog(&listener).map_err(|e| Error::io(format!("listening on {bind}"), e))?;
    let address = listener.local_addr().map_err(|e| Error::io("reading bound address", e))?;
    if config.auth.is_none() && !address.ip().is_loopback() {
        log::warn!(
            "[server] bound to {address}, reachable beyond this machine, without --auth-file: \
             anyone who can reach this port can read and write every key and join as a follower \
             (see docs/SECURITY.md)"
        );
    }
    if let Some(keys) = &config.auth {
        log::info!("[auth] every connection must authenticate ({})", keys.describe());
    }

    // 3. Replication: the role from the flags and the stored state.
    let startup = match &config.role {
        Role::Leader { peers } => Startup::Leader { peers: peers.clone() },
        Role::Follower { leader } => Startup::Follower { leader: *leader },
        Role::Cluster { members } => Startup::Cluster { members: members.clone() },
        Role::Stored => Startup::Stored,
    };
    let identity = config.advertise.unwrap_or(address);
    if identity != address {
        log::info!("[server] members reach this node at {identity} (--advertise)");
    }
    if config.tls_server.is_some() {
        let clients = if config.tls_client.is_some() {
            "client certificates signed by --tls-ca required (mutual TLS)"
        } else {
            "no client certificates asked for"
        };
        log::info!("[tls] serving TLS with --tls-cert; {clients}");
    }
    // How this node dials other members: TLS with --tls-ca, and the
    // handshake with its own secret.
    let credentials =
        config.auth.as_ref().map_or_else(Credentials::none, |keys| keys.member_credentials());
    let dialer = Dialer::new(credentials, config.tls_client.clone());
    let replica = Replica::start(Arc::clone(&db), identity, startup, config.election, dialer)?;
    let commit = Arc::clone(&replica);
    let snapshotter = Snapshotter::spawn(Arc::clone(&db), Box::new(move || commit.commit_lsn()))?;
    let members = replica.members();
    let term = replica.term();
    match replica.view() {
        RoleView::Leader { .. } => log::info!(
            "[server] listening on {address} as leader of term {term}, expecting followers \
             [{}], write concern {}, fsync {}",
            members
                .iter()
                .filter(|m| **m != identity.to_string())
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            config.write_concern.name(),
            fsync_name(config.fsync)
        ),
        RoleView::Follower { leader: Some(leader), .. } => log::info!(
            "[server] listening on {address} as follower of {leader} in term {term}, fsync {}",
            fsync_name(config.fsync)
        ),
        RoleView::Follower { leader: None, .. } => log::info!(
            "[server] listening on {address} as follower in term {term}, waiting to learn the \
             leader, fsync {}",
            fsync_name(config.fsync)
        ),
    }
    let node = Node {
        db,
        replica,
        address,
        write_concern: config.write_concern,
        write_timeout: config.write_timeout,
        shutdown: shutdown::Shutdown::default(),
        auth: config.auth.clone(),
        admission: Admission::new(config.limits),
        tls: config.tls_server.clone(),
        snapshotter,
    };
    Ok((Arc::new(node), listener))
}

/// Start-up's log lines: the snapshot loaded, the WAL replayed after it,
/// and anything recovery had to repair.
fn log_recovery(db: &Db, recovery: &Recovery) {
    let wal = &recovery.wal;
    if let Some((path, offset, bytes)) = &wal.torn_tail {
        log::warn!(
            "[wal] torn tail in {}: {bytes} byte(s) from offset {offset} truncated (a write cut \
             short by a crash; it was never acknowledged)",
            path.display()
        );
    }
    if wal.index_slots_rebuilt > 0 {
        log::info!("[wal] index rebuilt from the WAL: {} slot(s) written", wal.index_slots_rebuilt);
    }
    if let Some(why) = &wal.superseded {
        log::warn!(
            "[wal] the snapshot supersedes the old log ({why}): it was installed from the leader \
             and the node stopped before removing the old segments; they are removed now"
        );
    }
    match &recovery.snapshot {
        Some(s) => log::info!(
            "[snapshot] loaded {}: LSN {} (term {}), {} keys, {} in {} ms",
            s.path.display(),
            count(s.lsn),
            s.term,
            count(s.keys),
            bytes(s.bytes),
            recovery.snapshot_load_ms
        ),
        None => log::info!("[snapshot] no snapshot: the map is rebuilt from the whole WAL"),
    }
    let range = if wal.replayed == 0 {
        "none".to_string()
    } else {
        format!("LSN {}..{}", count(wal.last_lsn + 1 - wal.replayed), count(wal.last_lsn))
    };
    let held = if wal.last_lsn >= wal.first_lsn {
        format!("holding LSN {}..{}", count(wal.first_lsn), count(wal.last_lsn))
    } else {
        "holding no record yet".into()
    };
    log::info!(
        "[wal] opened {}: replayed {} record(s){} ({range}) from {} segment(s) {held}; last LSN \
         {} (term {}), {} key(s)",
        db.wal().dir().display(),
        wal.replayed,
        if recovery.snapshot.is_some() { " after the snapshot" } else { "" },
        wal.segments,
        count(wal.last_lsn),
        wal.last_term,
        count(db.key_count() as u64)
    );
}

pub fn fsync_name(fsync: FsyncPolicy) -> &'static str {
    match fsync {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Never => "never",
    }
}

/// Let [`LISTEN_BACKLOG`] connections wait for `accept` instead of the
/// 128 that `TcpListener::bind` asks for: when a thousand clients connect at
/// once, the kernel drops the SYNs beyond the backlog and those clients
/// retry a whole second later. Calling `listen` again on a listening socket
/// only changes its backlog (the kernel caps it at `net.core.somaxconn`).
#[cfg(unix)]
fn deepen_backlog(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `listener`, which outlives the call.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn deepen_backlog(_listener: &TcpListener) -> std::io::Result<()> {
    Ok(())
}

/// Accept connections forever, one thread each, within the budgets of
/// [`crate::admission`].
fn accept_loop(listener: &TcpListener, node: &Arc<Node>) {
    let mut next_id = 0u64;
    for incoming in listener.incoming() {
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: log, pause briefly, keep serving.
                log::warn!("[server] accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = stream.peer_addr().unwrap_or_else(|_| node.address);
        if node.shutdown.is_requested() {
            // Stopping: say so, naming the leader, so a client sends its
            // request elsewhere knowing it was not applied here (a node
            // with auth names nobody to a connection that proved nothing).
            let leader = node.replica.leader_address().filter(|_| node.auth.is_none());
            node.admission.count(Refusal::ShuttingDown, peer);
            refuse_connection(node, stream, Error::ShuttingDown { leader });
            continue;
        }
        let ticket = match node.admission.admit(&stream, peer) {
            Ok(ticket) => ticket,
            Err(e) => {
                refuse_connection(node, stream, e);
                continue;
            }
        };
        next_id += 1;
        let node = Arc::clone(node);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{next_id}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                crate::sched::request_thread();
                connection::serve(stream, peer, &node, ticket)
            });
        if let Err(e) = spawned {
            log::warn!("[server] cannot start a thread for {peer}: {e}");
        }
    }
}

/// A connection we do not serve (one too many, or the node is stopping):
/// tell the client why on a short-lived thread of its own, so that the
/// accept loop never waits. At most [`REFUSING_THREADS_MAX`] such threads
/// run at once; beyond them, and on a TLS node (where the ERROR would need
/// a handshake first), the connection is just closed. The refusal was
/// counted by the caller, and is logged with the others.
fn refuse_connection(node: &Node, stream: TcpStream, err: Error) {
    static REFUSING: AtomicUsize = AtomicUsize::new(0);
    if node.tls.is_some() {
        return; // dropping the stream closes it
    }
    if REFUSING.fetch_add(1, Ordering::AcqRel) >= REFUSING_THREADS_MAX {
        REFUSING.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let spawned = std::thread::Builder::new().name("refuse".into()).spawn(move || {
        send_refusal(stream, err);
        REFUSING.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        REFUSING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Send one ERROR and close without losing it. Closing a socket with
/// unread bytes (the client's first request) sends a reset, which can
/// destroy the reply before the client reads it; so stop writing, read
/// until the client closes (briefly), then close.
fn send_refusal(mut stream: TcpStream, err: Error) {
    let linger = Some(Duration::from_millis(100));
    let _ = stream.set_write_timeout(linger);
    let _ = write_message(&mut stream, &Message::error(&err));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(linger);
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}
