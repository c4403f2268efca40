//! `kvstore`: the server. Parses arguments, starts logging, runs the node.
//!
//! ```text
//! kvstore --port 9001 --data-dir ./node1 --role=leader --peers=9002,9003
//! kvstore --port 9002 --data-dir ./node2 --role=follower --leader=9001
//! kvstore --port 9002 --data-dir ./node2      # restart in the role it had
//! kvstore --port 9002 --data-dir ./node2 --cluster 9001,9002,9003   # elect the leader
//! kvstore --port 9001 --data-dir ./node1 --auth-file ./kvstore.secret  # connections must authenticate
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use kvstore::admission::AdmissionLimits;
use kvstore::auth::{Secret, ServerKeys};
use kvstore::db::FsyncPolicy;
use kvstore::limits::{
    CATCH_UPS_MAX_DEFAULT, CONNECTIONS_MAX_DEFAULT, ELECTION_TIMEOUT_MS_DEFAULT,
    FOLLOWER_RETAIN_SECS_DEFAULT, FRAME_TIMEOUT_MS_DEFAULT, HEARTBEAT_INTERVAL_MS,
    OBSERVERS_MAX_DEFAULT, PARTIAL_FRAME_BYTES_MAX_DEFAULT,
    UNAUTHENTICATED_CONNECTIONS_MAX_DEFAULT, WAL_RETAIN_BYTES_DEFAULT,
    WAL_RETAIN_MAX_BYTES_DEFAULT, WAL_SEGMENT_BYTES_DEFAULT, WAL_SEGMENT_BYTES_MIN,
    WRITE_TIMEOUT_MS_DEFAULT,
};
use kvstore::replication::election::{ElectionConfig, Failover, Timing};
use kvstore::replication::hub::WriteConcern;
use kvstore::replication::parse_peer;
use kvstore::server::{self, Config, Role};
use kvstore::snapshot::policy::StorageOptions;
use kvstore::tls::TlsFiles;
use kvstore::wal::WalOptions;

/// mimalloc instead of the system allocator: every request and every
/// replicated record allocates its key and value, and under load glibc's
/// malloc and free were a third of a follower's CPU time during catch-up.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process (as Redis recommends).
/// mimalloc gives every thread its own heap in 4 MiB-aligned segments, and
/// with huge pages a connection thread that allocates a few hundred bytes
/// is backed by a 2 MiB page: 1,000 connections held 1.26 GiB, against
/// 126 MiB without (docs/BENCHMARKS.md, "Connections"). Called first thing,
/// before any thread exists.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only
        // how this process's future page faults are served.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "kvstore: cannot disable transparent huge pages ({}); memory per connection \
                 may be higher",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A replicated key-value store: a leader streams its write-ahead log to followers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to serve clients and followers on (0 picks a free port and logs it).
    #[arg(long)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Directory holding this node's WAL (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// leader or follower. Without it the node takes the role stored in its
    /// data dir (a new node: a standalone leader).
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Leader only: the followers it expects, comma-separated (a bare port means 127.0.0.1).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Follower only: the leader to replicate from (port, or host:port).
    #[arg(long)]
    leader: Option<String>,
    /// Every member, this node included, comma-separated: instead of
    /// --role, the members elect the first leader among themselves.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["role", "peers", "leader"])]
    cluster: Vec<String>,
    /// always: acknowledge a write only once it is fsynced. never: leave it to the kernel.
    #[arg(long, value_enum, default_value_t = FsyncArg::Always)]
    fsync: FsyncArg,
    /// While this node leads (from the start, or after a promotion): how many
    /// nodes must have a write before the client hears OK.
    #[arg(long, value_enum, default_value_t = ConcernArg::Local)]
    write_concern: ConcernArg,
    /// While this node leads: how long a majority/all write waits for acknowledgements.
    #[arg(long, default_value_t = WRITE_TIMEOUT_MS_DEFAULT)]
    write_timeout_ms: u64,
    /// Most connections served at once; the next one gets an ERROR and is closed.
    #[arg(long, default_value_t = CONNECTIONS_MAX_DEFAULT)]
    max_connections: usize,
    /// The scheduler slice (µs) the threads that answer requests ask for,
    /// so a woken one runs soon on a busy machine (Linux 6.12+; see
    /// src/sched.rs). 0: the kernel's default.
    #[arg(long, default_value_t = kvstore::sched::REQUEST_SLICE_US_DEFAULT)]
    request_slice_us: u64,
    /// Most of those connections that have not authenticated (or, without
    /// --auth-file, sent a first request) yet; when full, the oldest is
    /// closed to make room. Default: with --auth-file 128 (or
    /// --max-connections if smaller); without, --max-connections.
    #[arg(long)]
    max_unauthenticated: Option<usize>,
    /// Most followers probed and caught up at once; one more is refused
    /// (ERROR 18) and redials.
    #[arg(long, default_value_t = CATCH_UPS_MAX_DEFAULT)]
    max_catch_ups: usize,
    /// Most bytes held for frames still arriving, over all connections.
    #[arg(long, default_value_t = PARTIAL_FRAME_BYTES_MAX_DEFAULT)]
    max_partial_frame_bytes: usize,
    /// Once a frame's first byte has arrived, the whole frame must arrive
    /// within this time or the connection is closed (slow senders).
    #[arg(long, default_value_t = FRAME_TIMEOUT_MS_DEFAULT)]
    frame_timeout_ms: u64,
    /// A file holding a secret (at least 16 bytes, mode 0600): every
    /// connection — clients, followers, members asking for votes — must
    /// prove it knows it, and this node uses it to dial other members.
    #[arg(long, value_name = "PATH")]
    auth_file: Option<PathBuf>,
    /// A second secret for what members say to each other (FOLLOWER_HELLO,
    /// votes, announcements): clients, with --auth-file's secret, then
    /// cannot pose as a follower.
    #[arg(long, value_name = "PATH", requires = "auth_file")]
    replication_auth_file: Option<PathBuf>,
    /// Serve TLS with this certificate (PEM; the chain, leaf first); with
    /// --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, mode 0600).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed every member's and client's certificate:
    /// clients must present one (mutual TLS), and this node dials its
    /// leader and the other members over TLS, checking theirs.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// The address other members reach this node on (port, or host:port),
    /// if not the one it binds: behind NAT, a container or a proxy.
    #[arg(long)]
    advertise: Option<String>,
    /// auto: followers elect a new leader when theirs goes silent; manual:
    /// only `kv_client promote` does. Default: auto with 3 or more members.
    #[arg(long, value_enum)]
    failover: Option<FailoverArg>,
    /// T: a follower that hears nothing from its leader for a random time
    /// in [T, 2T) starts an election; a leader that hears from no majority
    /// within T steps down.
    #[arg(long, default_value_t = ELECTION_TIMEOUT_MS_DEFAULT)]
    election_timeout_ms: u64,
    /// How often a leader sends an empty AppendEntries on an idle link.
    #[arg(long, default_value_t = HEARTBEAT_INTERVAL_MS)]
    heartbeat_interval_ms: u64,
    /// While this node leads: how many `kv_client watch` observers it
    /// serves at once; the next one is refused with an ERROR.
    #[arg(long, default_value_t = OBSERVERS_MAX_DEFAULT)]
    max_observers: usize,
    /// Log every replication message this node sends and receives, decoded
    /// (values only by size), at debug level (RUST_LOG=debug); at most one
    /// line a second per link, the rest counted in it.
    #[arg(long)]
    trace_replication: bool,
    /// Serve Prometheus metrics (GET /metrics) and a health check (GET
    /// /healthz) over HTTP on this port, on --host (0 picks a free port).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// A WAL segment that holds this many bytes is closed and the next
    /// begun; compaction deletes whole segments.
    #[arg(long, default_value_t = WAL_SEGMENT_BYTES_DEFAULT)]
    wal_segment_bytes: u64,
    /// Take a snapshot when the WAL written since the last one exceeds
    /// this. Default: the larger of 64 MiB and twice the live data.
    #[arg(long)]
    snapshot_after_bytes: Option<u64>,
    /// After a snapshot, keep at least this much of the newest WAL, so a
    /// follower a little behind catches up from the log.
    #[arg(long, default_value_t = WAL_RETAIN_BYTES_DEFAULT)]
    wal_retain_bytes: u64,
    /// The most WAL one away follower may hold back.
    #[arg(long, default_value_t = WAL_RETAIN_MAX_BYTES_DEFAULT)]
    wal_retain_max_bytes: u64,
    /// A follower connected, or seen within this many seconds, keeps the
    /// WAL after its acknowledged LSN (up to --wal-retain-max-bytes).
    #[arg(long, default_value_t = FOLLOWER_RETAIN_SECS_DEFAULT)]
    follower_retain_secs: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FailoverArg {
    Auto,
    Manual,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Leader,
    Follower,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FsyncArg {
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ConcernArg {
    Local,
    Majority,
    All,
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write;
            // One line per event, whatever text a peer put in it.
            let text = record.args().to_string();
            let text = kvstore::logline::one_line(&text);
            writeln!(buf, "{} {:<5} {text}", buf.timestamp_millis(), record.level())
        })
        .init();
    let args = Args::parse();
    let config = match config(args) {
        Ok(config) => config,
        Err(why) => {
            eprintln!("kvstore: {why}");
            return ExitCode::from(2);
        }
    };
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("[server] cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--cluster`: every member listed; elections pick the leader, so they
/// must be on (`--failover auto`) and able to reach a majority.
fn cluster_role(args: &Args) -> Result<Role, String> {
    let members: Result<Vec<_>, _> =
        args.cluster.iter().filter(|m| !m.trim().is_empty()).map(|m| parse_peer(m)).collect();
    let members = members.map_err(|e| e.to_string())?;
    if members.len() < 3 {
        return Err(format!(
            "--cluster lists {} member(s); an election needs at least 3 (for 1 or 2 nodes, start \
             one with --role=leader)",
            members.len()
        ));
    }
    if members.len() > kvstore::limits::MEMBERS_MAX {
        return Err(format!(
            "--cluster lists {} members; a cluster has at most {}",
            members.len(),
            kvstore::limits::MEMBERS_MAX
        ));
    }
    if matches!(args.failover, Some(FailoverArg::Manual)) {
        return Err("--cluster needs --failover auto: the members elect their leader".into());
    }
    Ok(Role::Cluster { members })
}

/// `--max-connections` and the budgets of `kvstore::admission`.
fn admission_limits(args: &Args) -> Result<AdmissionLimits, String> {
    let unauthenticated_max = match args.max_unauthenticated {
        Some(0) => return Err("--max-unauthenticated must be at least 1".into()),
        Some(n) if n > args.max_connections => {
            return Err(format!(
                "--max-unauthenticated ({n}) must be at most --max-connections ({})",
                args.max_connections
            ))
        }
        Some(n) => n,
        // Without a secret there is nothing to prove: a connection that has
        // not sent its first request yet is just a client that connected a
        // moment ago, and a burst of them (a pool warming up) must not be
        // cut. Slow senders are still bounded by --frame-timeout-ms.
        None if args.auth_file.is_none() => args.max_connections,
        None => UNAUTHENTICATED_CONNECTIONS_MAX_DEFAULT.min(args.max_connections),
    };
    if args.max_catch_ups == 0 || args.frame_timeout_ms == 0 {
        return Err("--max-catch-ups and --frame-timeout-ms must be at least 1".into());
    }
    if args.max_partial_frame_bytes < kvstore::limits::PARTIAL_FRAME_STEP_BYTES {
        return Err(format!(
            "--max-partial-frame-bytes must be at least {} (one step of a frame's buffer)",
            kvstore::limits::PARTIAL_FRAME_STEP_BYTES
        ));
    }
    Ok(AdmissionLimits {
        connections_max: args.max_connections,
        unauthenticated_max,
        partial_frame_bytes_max: args.max_partial_frame_bytes,
        catch_ups_max: args.max_catch_ups,
        frame_timeout: Duration::from_millis(args.frame_timeout_ms),
    })
}

/// `--wal-segment-bytes` and the snapshot and compaction flags.
fn storage_options(args: &Args) -> Result<StorageOptions, String> {
    if args.wal_segment_bytes < WAL_SEGMENT_BYTES_MIN {
        return Err(format!(
            "--wal-segment-bytes must be at least {WAL_SEGMENT_BYTES_MIN}, not {}",
            args.wal_segment_bytes
        ));
    }
    if args.snapshot_after_bytes == Some(0) {
        return Err("--snapshot-after-bytes must be at least 1".into());
    }
    if args.wal_retain_max_bytes < args.wal_retain_bytes {
        return Err(format!(
            "--wal-retain-max-bytes ({}) must be at least --wal-retain-bytes ({})",
            args.wal_retain_max_bytes, args.wal_retain_bytes
        ));
    }
    Ok(StorageOptions {
        // Whether full segments are fsynced follows --fsync (Db::open_with).
        wal: WalOptions { segment_bytes: args.wal_segment_bytes, ..WalOptions::default() },
        snapshot_after_bytes: args.snapshot_after_bytes,
        wal_retain_bytes: args.wal_retain_bytes,
        wal_retain_max_bytes: args.wal_retain_max_bytes,
        follower_retain: Duration::from_secs(args.follower_retain_secs),
    })
}

fn load_secret(path: &Path) -> Result<Arc<Secret>, String> {
    Secret::load(path).map(Arc::new).map_err(|e| e.to_string())
}

fn config(args: Args) -> Result<Config, String> {
    let role = match (args.role, &args.leader) {
        _ if !args.cluster.is_empty() => cluster_role(&args)?,
        (Some(RoleArg::Follower), Some(leader)) => {
            if !args.peers.is_empty() {
                return Err("--peers is for a leader; a follower takes --leader only".into());
            }
            Role::Follower { leader: parse_peer(leader).map_err(|e| e.to_string())? }
        }
        (Some(RoleArg::Follower), None) => return Err("--role=follower needs --leader".into()),
        (_, Some(_)) => return Err("--leader is for --role=follower".into()),
        (None, None) if args.peers.is_empty() => Role::Stored,
        (Some(RoleArg::Leader) | None, None) => {
            let peers: Result<Vec<_>, _> =
                args.peers.iter().filter(|p| !p.trim().is_empty()).map(|p| parse_peer(p)).collect();
            let peers = peers.map_err(|e| e.to_string())?;
            if peers.len() >= kvstore::limits::MEMBERS_MAX {
                return Err(format!(
                    "--peers lists {} followers; a cluster has at most {} members",
                    peers.len(),
                    kvstore::limits::MEMBERS_MAX
                ));
            }
            Role::Leader { peers }
        }
    };
    if args.request_slice_us != 0 && !(100..=100_000).contains(&args.request_slice_us) {
        return Err(format!(
            "--request-slice-us must be 0 (the kernel's default) or 100..100000, not {}",
            args.request_slice_us
        ));
    }
    kvstore::sched::set_request_slice_us(args.request_slice_us);
    kvstore::replication::hub::set_observers_max(args.max_observers);
    if args.trace_replication {
        if !log::log_enabled!(log::Level::Debug) {
            eprintln!(
                "kvstore: --trace-replication logs at debug level, which is off; run with \
                 RUST_LOG=debug to see the trace"
            );
        }
        kvstore::replication::trace::enable();
    }
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let limits = admission_limits(&args)?;
    let tls = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        ca: args.tls_ca.clone(),
    };
    let tls_server = tls.server_config().map_err(|e| e.to_string())?;
    // Without --tls-ca, the node serves TLS but asks for no client
    // certificate, and has no CA to check other members with.
    let tls_client = match &args.tls_ca {
        Some(_) => tls.client_config().map_err(|e| e.to_string())?,
        None => None,
    };
    let auth = match &args.auth_file {
        Some(path) => Some(ServerKeys::new(
            load_secret(path)?,
            args.replication_auth_file.as_deref().map(load_secret).transpose()?,
        )),
        None => None,
    };
    if args.heartbeat_interval_ms == 0 || args.heartbeat_interval_ms * 2 > args.election_timeout_ms
    {
        return Err(format!(
            "--heartbeat-interval-ms ({}) must be at least 1 and at most half of \
             --election-timeout-ms ({}), or followers would start elections under a healthy \
             leader",
            args.heartbeat_interval_ms, args.election_timeout_ms
        ));
    }
    let storage = storage_options(&args)?;
    let advertise = match &args.advertise {
        Some(a) => Some(parse_peer(a).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Config {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir,
        storage,
        role,
        fsync: match args.fsync {
            FsyncArg::Always => FsyncPolicy::Always,
            FsyncArg::Never => FsyncPolicy::Never,
        },
        write_concern: match args.write_concern {
            ConcernArg::Local => WriteConcern::Local,
            ConcernArg::Majority => WriteConcern::Majority,
            ConcernArg::All => WriteConcern::All,
        },
        write_timeout: Duration::from_millis(args.write_timeout_ms),
        limits,
        auth,
        tls_server,
        tls_client,
        advertise,
        metrics_port: args.metrics_port,
        election: ElectionConfig {
            failover: args.failover.map(|f| match f {
                FailoverArg::Auto => Failover::Auto,
                FailoverArg::Manual => Failover::Manual,
            }),
            timing: Timing {
                election_ms: args.election_timeout_ms,
                heartbeat_ms: args.heartbeat_interval_ms,
            },
        },
    })
}
