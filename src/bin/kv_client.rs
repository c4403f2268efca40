//! `kv_client`: the command-line client, and `wal-dump`, a window into the log.
//!
//! ```text
//! kv_client --port 9001 put k v        prints the LSN the write got
//! kv_client --port 9002 get k          prints the value alone; exit 1 if missing
//! kv_client --port 9001 get k --consistency linearizable   never stale (ReadIndex)
//! kv_client --port 9002 get k --min-lsn 42   once 9002 has applied LSN 42
//! kv_client --port 9001 delete k
//! kv_client --port 9001 status [--json]
//! kv_client --port 9002 promote [--force]   make 9002 the leader of a new term
//! kv_client --port 9003 follow 127.0.0.1:9002   make 9003 follow 9002
//! kv_client --port 9001 transfer-leadership [127.0.0.1:9002]   planned handover
//! kv_client --port 9001 snapshot       take a snapshot now (like BGSAVE), compact the WAL
//! kv_client wal-dump ./node1           one record a line, like pg_waldump
//! kv_client snapshot-dump ./node1/snapshots/00000000000000001000.snap   its pairs, checked
//! kv_client --cluster 9001,9002,9003 put k v   on whichever member leads
//! kv_client --auth-file ./kvstore.secret --port 9001 put k v   (or KVSTORE_AUTH_FILE=...)
//! kv_client --tls-ca ca.pem --tls-cert client.pem --tls-key client.key --port 9001 get k
//! ```
//!
//! Exit codes: 0 success, 1 key not found, 2 any error (unreachable server,
//! ERROR reply, bad arguments, corrupt WAL, no leader found), 3 the write's
//! outcome is unknown (it may or may not be applied; it was not retried).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use kvstore::client::Client;
use kvstore::cluster_client::{ClusterClient, RETRY_BUDGET_MS_DEFAULT};
use kvstore::dial::Dialer;
use kvstore::error::Error;
use kvstore::protocol::Consistency;
use kvstore::snapshot::format::{SnapshotReader, SNAPSHOT_FORMAT_VERSION};
use kvstore::store::pair_hash;
use kvstore::tls::TlsFiles;
use kvstore::wal::upgrade::{scan_legacy, LEGACY_LOG_FILE_NAME};
use kvstore::wal::{scan_dir, Op, Record, ScanEnd, Visit, WAL_DIR_NAME, WAL_FORMAT_VERSION};

/// Values longer than this are shortened in `wal-dump` output.
const DUMP_VALUE_BYTES_MAX: usize = 200;

/// Talk to a kvstore node, or inspect a data directory's WAL.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    host: String,
    /// Server port.
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Every member (ports, or host:port), comma-separated: put, get and
    /// delete go to whichever one leads, found by asking.
    #[arg(long, global = true, value_delimiter = ',', conflicts_with = "port")]
    cluster: Vec<String>,
    /// With --cluster: how long to keep looking for the leader.
    #[arg(long, global = true, default_value_t = RETRY_BUDGET_MS_DEFAULT)]
    retry_ms: u64,
    /// A file holding the secret of a node started with --auth-file: the
    /// connection authenticates first, and the node must prove it knows
    /// the secret too.
    #[arg(long, global = true, env = "KVSTORE_AUTH_FILE", value_name = "PATH")]
    auth_file: Option<PathBuf>,
    /// Connect over TLS, trusting the CA in this PEM file.
    #[arg(long, global = true, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for a node that requires one (mutual TLS).
    #[arg(long, global = true, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, mode 0600).
    #[arg(long, global = true, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY (on the leader).
    Put { key: String, value: String },
    /// Print the value of KEY; exit 1 if it does not exist.
    ///
    /// Without --consistency, the node asked answers from its own map (a
    /// follower may be behind); with --cluster the leader answers.
    Get {
        key: String,
        /// leader: the leader's map; linearizable: the leader, after a
        /// majority confirms it still leads (never stale); any: this node.
        #[arg(long, value_parser = parse_consistency)]
        consistency: Option<Consistency>,
        /// First wait until the node has applied this LSN (the one `put`
        /// printed): read your own write on any node.
        #[arg(long, default_value_t = 0)]
        min_lsn: u64,
    },
    /// Remove KEY (on the leader).
    Delete { key: String },
    /// Show the node's role, term, LSNs and followers.
    Status {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the node the leader of a new term (like pg_promote). It first
    /// checks that a majority of members answer and none holds more.
    Promote {
        /// Promote even without a majority, or if another node holds more
        /// (records only that node holds would be lost).
        #[arg(long)]
        force: bool,
    },
    /// Make the node follow the leader at HOST:PORT (like REPLICAOF); a
    /// leader steps down first.
    Follow { leader: String },
    /// Hand leadership to TARGET (default: the most up-to-date follower)
    /// at once, without waiting for an election timeout (etcd's move-leader).
    TransferLeadership { target: Option<String> },
    /// Take a snapshot now and compact the WAL (like Redis's BGSAVE:
    /// writes go on); prints what was done once it is written.
    Snapshot,
    /// Print every record of DATA_DIR's WAL, and where a torn tail starts.
    WalDump { data_dir: PathBuf },
    /// Print a snapshot file's header and every pair, checking it as a
    /// node does before loading it.
    SnapshotDump { file: PathBuf },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::WalDump { data_dir } = &args.command {
        return wal_dump(data_dir);
    }
    if let Command::SnapshotDump { file } = &args.command {
        return snapshot_dump(file);
    }
    let tls = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        ca: args.tls_ca.clone(),
    };
    let dialer = match Dialer::for_client(args.auth_file.as_deref(), &tls) {
        Ok(dialer) => dialer,
        Err(e) => {
            eprintln!("kv_client: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.cluster.is_empty() {
        let budget = Duration::from_millis(args.retry_ms);
        return on_cluster(&args.cluster, budget, dialer, args.command);
    }
    let Some(port) = args.port else {
        eprintln!("kv_client: --port (or --cluster) is required for this command");
        return ExitCode::from(2);
    };
    let address = format!("{}:{port}", args.host);
    match run(&address, &dialer, args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kv_client: {address}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(address: &str, dialer: &Dialer, command: Command) -> Result<ExitCode, Error> {
    let mut client = Client::connect_with(address, dialer)?;
    let mut stdout = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock, bytes: &[u8]| {
        let _ = out.write_all(bytes);
        let _ = out.write_all(b"\n");
    };
    match command {
        Command::Put { key, value } => {
            let lsn = client.put(key.as_bytes(), value.as_bytes())?;
            print(&mut stdout, format!("OK (LSN {lsn})").as_bytes());
        }
        Command::Delete { key } => {
            let lsn = client.delete(key.as_bytes())?;
            print(&mut stdout, format!("OK (LSN {lsn})").as_bytes());
        }
        Command::Get { key, consistency: None, min_lsn: 0 } => match client.get(key.as_bytes())? {
            Some(value) => print(&mut stdout, &value),
            None => {
                eprintln!("kv_client: key '{key}' not found");
                return Ok(ExitCode::from(1));
            }
        },
        Command::Get { key, consistency, min_lsn } => {
            match client.read(key.as_bytes(), consistency.unwrap_or(Consistency::Any), min_lsn)? {
                Some(value) => print(&mut stdout, &value),
                None => {
                    eprintln!("kv_client: key '{key}' not found");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Promote { force } => print(&mut stdout, client.promote(force)?.as_bytes()),
        Command::Follow { leader } => print(&mut stdout, client.follow(&leader)?.as_bytes()),
        Command::TransferLeadership { target } => print(
            &mut stdout,
            client.transfer_leadership(target.as_deref().unwrap_or(""))?.as_bytes(),
        ),
        Command::Status { json: true } => print(&mut stdout, client.status_json()?.as_bytes()),
        Command::Status { json: false } => {
            print(&mut stdout, client.status()?.render().trim_end().as_bytes())
        }
        Command::Snapshot => print(&mut stdout, client.snapshot()?.as_bytes()),
        Command::WalDump { .. } | Command::SnapshotDump { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--cluster`: put, get and delete on whichever member leads.
fn on_cluster(members: &[String], budget: Duration, dialer: Dialer, command: Command) -> ExitCode {
    let cluster = ClusterClient::new(members, budget).map(|c| c.with_dialer(dialer));
    let result = cluster.and_then(|mut cluster| {
        let line = match &command {
            Command::Put { key, value } => {
                let lsn = cluster.put(key.as_bytes(), value.as_bytes())?;
                format!("OK (LSN {lsn})").into_bytes()
            }
            Command::Delete { key } => {
                format!("OK (LSN {})", cluster.delete(key.as_bytes())?).into_bytes()
            }
            Command::Get { key, consistency, min_lsn } => match cluster.read(
                key.as_bytes(),
                consistency.unwrap_or(Consistency::Leader),
                *min_lsn,
            )? {
                Some(value) => value,
                None => {
                    eprintln!("kv_client: key '{key}' not found");
                    return Ok(None);
                }
            },
            _ => {
                return Err(Error::Unexpected(
                    "--cluster is for put, get and delete; use --port for the others".into(),
                ))
            }
        };
        Ok(Some(line))
    });
    match result {
        Ok(Some(line)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::from(1),
        Err(e @ Error::Indeterminate(_)) => {
            eprintln!("kv_client: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("kv_client: {e}");
            ExitCode::from(2)
        }
    }
}

/// Print the WAL one record a line, then how it ends: the segments of
/// `DATA_DIR/wal/`, or a `wal.log` of formats 1 and 2 not yet upgraded.
fn wal_dump(data_dir: &std::path::Path) -> ExitCode {
    let legacy = data_dir.join(LEGACY_LOG_FILE_NAME);
    let segments = data_dir.join(WAL_DIR_NAME);
    let mut out = std::io::stdout().lock();
    let mut count = 0u64;
    let mut last_lsn = 0;
    let mut first_lsn = None;
    let mut segment_name = String::new();
    let mut print_record = |out: &mut std::io::StdoutLock, offset: u64, record: &Record| {
        count += 1;
        last_lsn = record.lsn;
        let _ = writeln!(
            out,
            "lsn={:<8} term={:<4} offset={:<10} {}",
            record.lsn,
            record.term,
            offset,
            describe(&record.op)
        );
    };
    let result = if legacy.exists() {
        scan_legacy(&legacy, |offset, record| print_record(&mut out, offset, record)).map(|scan| {
            let format = match scan.version {
                1 => "format 1 (no terms: read as term 1; the server upgrades it to segments at \
                      start-up)"
                    .to_string(),
                v => format!("format {v} (the server upgrades it to segments at start-up)"),
            };
            (scan.end, format)
        })
    } else if segments.is_dir() {
        let scanned = scan_dir(data_dir, |visit| match visit {
            Visit::Segment(path, header) => {
                segment_name = format!("{WAL_DIR_NAME}/{}", file_name(path));
                first_lsn.get_or_insert(header.first_lsn);
                let _ = writeln!(
                    out,
                    "-- segment {segment_name}: first LSN {} (LSN {} has term {})",
                    header.first_lsn,
                    header.first_lsn - 1,
                    header.prev_term
                );
            }
            Visit::Record(offset, record) => print_record(&mut out, offset, record),
        });
        scanned.map(|end| {
            let mut format = format!("format {WAL_FORMAT_VERSION}");
            if let Some(first) = first_lsn.filter(|lsn| *lsn > 1) {
                format.push_str(&format!(
                    "; records before LSN {first} were compacted into a snapshot"
                ));
            }
            (end, format)
        })
    } else {
        eprintln!("kv_client: no WAL in {}", data_dir.display());
        return ExitCode::from(2);
    };
    let of = if segment_name.is_empty() { String::new() } else { format!(" of {segment_name}") };
    match result {
        Ok((end, format)) => {
            let end = match end {
                ScanEnd::Clean { end_offset } => format!("clean end at offset {end_offset}{of}"),
                ScanEnd::TornTail { offset, bytes } => format!(
                    "torn tail of {bytes} byte(s) at offset {offset}{of} (the server truncates it \
                     at start-up)"
                ),
            };
            let _ = writeln!(out, "-- {count} record(s), last LSN {last_lsn}, {end}; {format}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("kv_client: {e}");
            ExitCode::from(2)
        }
    }
}

/// Print a snapshot: its header, one pair a line, then what was checked.
fn snapshot_dump(path: &std::path::Path) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let reader = match SnapshotReader::open(path) {
        Ok(reader) => reader,
        Err(e) => {
            eprintln!("kv_client: {e}");
            return ExitCode::from(2);
        }
    };
    let header = reader.header();
    let file_bytes = reader.file_bytes();
    let _ = writeln!(
        out,
        "-- snapshot {}: LSN {} (term {}), {} key(s), digest {:016x}, taken at unix ms {}; \
         format {SNAPSHOT_FORMAT_VERSION}",
        path.display(),
        header.lsn,
        header.term,
        header.key_count,
        header.digest,
        header.created_unix_ms
    );
    let mut digest = 0u64;
    let mut chunks = 0u64;
    let result = reader.for_each(
        |key, value| {
            digest = digest.wrapping_add(pair_hash(&key, &value));
            let _ = writeln!(out, "key={} value={}", escape(&key), escape(&value));
            Ok(())
        },
        |_| chunks += 1,
    );
    match result {
        Ok(_) if digest != header.digest => {
            let _ = out.flush();
            eprintln!(
                "kv_client: corrupt snapshot {}: the pairs' digest is {digest:016x}, the header \
                 says {:016x}",
                path.display(),
                header.digest
            );
            ExitCode::from(2)
        }
        Ok(_) => {
            let _ = writeln!(
                out,
                "-- {} pair(s) in {chunks} chunk(s), {file_bytes} bytes; header, chunk checksums, \
                 end marker, key count and digest all check",
                header.key_count
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("kv_client: {e}");
            ExitCode::from(2)
        }
    }
}

/// A record's operation as `wal-dump` and `snapshot-dump` print it.
fn describe(op: &Op) -> String {
    match op {
        Op::Put { key, value } => format!("PUT    key={} value={}", escape(key), escape(value)),
        Op::Delete { key } => format!("DELETE key={}", escape(key)),
        Op::Noop => "NOOP   (start of term)".to_string(),
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Quote bytes for a terminal: printable ASCII as is, the rest escaped.
fn escape(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(DUMP_VALUE_BYTES_MAX)];
    let mut s = format!("\"{}\"", shown.escape_ascii());
    if bytes.len() > shown.len() {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    Consistency::parse(text)
        .ok_or_else(|| format!("'{text}' is not a consistency: use leader, linearizable or any"))
}
