//! # kvstore — a replicated key-value store
//!
//! A leader appends every change to a write-ahead log (WAL), applies it to an
//! in-memory hash map, and streams the records to its followers in
//! AppendEntries messages. A follower that starts late, or comes back after
//! being offline, says which LSN it has (FOLLOWER_HELLO) and the leader sends
//! everything after it. These are the lessons of week 10 (see `README.md`).
//!
//! Every record also carries the **term** of the leader that wrote it, and
//! every AppendEntries the `(prev_lsn, prev_term)` it continues, so that a
//! follower whose log diverged from its leader's finds out and repairs it,
//! and a leader can be replaced safely (`docs/FAILOVER.md`).
//!
//! ## Map of the modules
//!
//! | module          | owns                                                         | lesson            |
//! |-----------------|--------------------------------------------------------------|-------------------|
//! | [`limits`]      | every bound the server enforces, each with its reason        | —                 |
//! | [`error`]       | the one error type and the codes sent on the wire            | —                 |
//! | [`auth`]        | the shared-secret handshake (HMAC-SHA256, mutual)            | —                 |
//! | [`admission`]   | the budgets connections draw on; refusals counted, not logged one by one | — |
//! | [`tls`]         | TLS over blocking sockets (rustls); a connection two threads share | — |
//! | [`dial`]        | opening a connection: TCP, then TLS, then authentication      | — |
//! | [`datadir`]     | the data directory's permissions: created private, refused if others may write | — |
//! | [`protocol`]    | length-prefixed frames and every message's byte layout       | week 2, lesson 3  |
//! | [`wal`]         | the log file, crash recovery, the LSN index, the term history | week 9, lesson 5 |
//! | [`store`]       | the hash map (copy-on-write shards); no I/O                  | week 1            |
//! | [`snapshot`]    | snapshots, compaction, start-up's choice, install from the leader | —            |
//! | [`db`]          | the one write path: WAL append → fsync → apply → notify      | week 9, lesson 3  |
//! | [`server`]      | accept loop, one thread per connection, request dispatch     | week 2            |
//! | [`sched`]       | the short scheduler slice request threads ask for            | —                 |
//! | [`replication`] | leader side (hub, one sender per follower), follower side; terms, log matching, promotion | lessons 3, 4, 5; failover |
//! | [`status`]      | the STATUS report shown by `kv_client status`                | lesson 4          |
//! | [`metrics`]     | Prometheus series for `--metrics-port` (`/metrics`)         | lesson 4          |
//! | [`progress`]    | one line a second about long work (catch-up, snapshot install): done, rate, ETA | lesson 5 |
//! | [`cluster`]     | the cluster id that keeps two histories apart                | —                 |
//! | [`codec`]       | checked big-endian reads of untrusted bytes                  | week 2            |
//! | [`logline`]     | what a log line may hold: never a value, keys only at debug, one line per event | — |
//! | [`fsutil`]      | small files written atomically and durably                    | —                 |
//! | [`failpoint`]   | named places where a crash test can abort the process         | —                 |
//! | [`client`]      | a small blocking client used by kv_client, tests, examples   | week 2            |
//! | [`cluster_client`] | a client that finds the leader among the members          | failover          |
//! | [`watch`]       | `kv_client watch`: an observer of the replication stream     | lessons 3, 5      |
//!
//! ## Map of the threads in a running `kvstore`
//!
//! - `main`: parses arguments, opens the data directory, runs the accept loop.
//! - `conn-N`: one per client connection; runs the TLS handshake (with
//!   `--tls-cert`) and authenticates it (with `--auth-file`), then reads a
//!   request, answers it, repeats.
//!   On a leader, a connection whose first message is FOLLOWER_HELLO becomes
//!   that follower's **sender** (it streams AppendEntries), and spawns an
//!   **ack reader** that records the follower's APPEND_ENTRIES_ACKs.
//!   A connection whose first message is OBSERVER_HELLO (`kv_client watch`)
//!   becomes an **observer**'s sender the same way: the same stream, but
//!   no member, counted toward nothing.
//! - `follower`: on a follower only; dials the leader, sends FOLLOWER_HELLO,
//!   checks each AppendEntries against its log (repairing it if it
//!   diverged), queues it on the write path and waits until it is written
//!   and fsynced; its `follower-ack` thread applies each to the map and
//!   answers with ACKs, so the next is read and fsynced while one is
//!   applied. A change of leader stops both and starts another pair.
//! - `metrics-http`: with `--metrics-port` only; answers `GET /metrics`
//!   and `GET /healthz`, one request at a time ([`server::http`]).
//! - `announce-tN`: on the leader of term N; tells members that are not
//!   following it that it leads, so a deposed leader learns it was.
//! - `snapshot`: takes a snapshot when the WAL since the last one has grown
//!   enough or `kv_client snapshot` asks, then compacts the WAL
//!   ([`snapshot::snapshotter`]).
//!
//! - `refusals`: logs the refusals of [`admission`] and [`auth`], summed,
//!   once a second at most.
//!
//! `kv_client promote` and `follow` are answered on their connection's
//! thread, which asks the other members for votes with short timeouts.
//!
//! Client writes wait for the WAL's group commit (see [`db`]); no lock is ever
//! held across socket I/O.

pub mod admission;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod cluster_client;
pub mod codec;
pub mod datadir;
pub mod db;
pub mod dial;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod limits;
pub mod logline;
pub mod metrics;
pub mod progress;
pub mod protocol;
pub mod replication;
pub mod sched;
pub mod server;
pub mod snapshot;
pub mod stages;
pub mod status;
pub mod store;
pub mod tls;
pub mod wal;
pub mod watch;

/// A log sequence number: the position of a record in the WAL.
///
/// The first record is LSN 1 and LSNs are contiguous; 0 means "none"
/// (an empty log has `last_lsn == 0`).
pub type Lsn = u64;

/// A leadership term (see `docs/FAILOVER.md`): a number that grows by one
/// every time a node becomes leader, stored in every WAL record.
///
/// The first leader of a new cluster has term 1; 0 means "none" (the term
/// of LSN 0, the position before the first record, is 0).
pub type Term = u64;
