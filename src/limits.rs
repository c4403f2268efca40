//! Every bound kvstore enforces, in one place, each with the reason for its value.
//!
//! A server that trusts a length prefix can be made to allocate 4 GiB by one
//! hostile packet; a follower that is never told "enough" can make a leader
//! buffer forever. So everything has a limit, and the limits live here.
//! Names put the unit last: `frame_bytes_max`, `heartbeat_interval_ms`.

/// Largest frame payload accepted, in bytes (16 MiB).
/// Large enough for the biggest PUT (key + value + headers) and for an
/// AppendEntries batch of [`APPEND_ENTRIES_BYTES_MAX`]; small enough that a
/// hostile length prefix cannot exhaust memory.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Largest key, in bytes (64 KiB). Keys are hashed and compared on every
/// request; Redis allows larger, but nothing reasonable needs more.
pub const KEY_BYTES_MAX: u32 = 64 * 1024;

/// Largest value, in bytes (4 MiB). Leaves room inside one frame, and inside
/// one AppendEntries batch, for the largest record plus its headers.
pub const VALUE_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Largest WAL record body on disk: the record's fixed 25 bytes (lsn, term,
/// cmd, two lengths) plus the largest key and value. Recovery treats a
/// longer length as corruption.
pub const RECORD_BYTES_MAX: u32 = 25 + KEY_BYTES_MAX + VALUE_BYTES_MAX;

/// Largest frame a leader reads from a follower (66 KiB): ACKs and
/// refusals are 33 bytes, and an ERROR carries at most 64 KiB of text. A
/// follower cannot make its leader buffer a 16 MiB frame.
pub const FOLLOWER_FRAME_BYTES_MAX: u32 = 66 * 1024;

/// Most records in one AppendEntries message. Bounds the follower's work per
/// message (one fsync each) and keeps ACKs flowing during a long catch-up.
pub const APPEND_ENTRIES_RECORDS_MAX: u32 = 4096;

/// Most record bytes in one AppendEntries message (8 MiB): under
/// [`FRAME_BYTES_MAX`] with room for one maximal record beyond it.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Batches a follower's sender thread may have queued in its channel.
/// When the channel is full the leader stops queueing for that follower and
/// its sender reads from the WAL instead: memory stays bounded and a slow
/// follower never slows the others (the log on disk is the buffer).
pub const FOLLOWER_CHANNEL_BATCHES_MAX: usize = 1024;

/// Default maximum number of client and replication connections. Each costs
/// one OS thread and one file descriptor; 1000 stays under the common default
/// `ulimit -n` of 1024 and leaves descriptors for the WAL, index and listener.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1000;

/// Longest a stopping node waits for its requests in flight to finish
/// (10 s): longer than `--write-timeout-ms`'s default, so a write waiting
/// for its write concern gets its answer.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;

/// How long a stopping node's connections must be silent before it exits
/// (100 ms): a client that keeps sending on an open connection is answered
/// (and, after a handover, sent to the new leader) instead of cut off.
pub const SHUTDOWN_QUIET_MS: u64 = 100;

/// Connections the kernel may hold for `accept` (Redis's `tcp-backlog`
/// is 511): a burst of a thousand connects is not dropped and retried a
/// second later. The kernel caps it at `net.core.somaxconn` (4096).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Stack size of a connection thread (256 KiB): request handling is shallow,
/// and a small stack keeps a thousand connections cheap.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// How often an idle leader sends an empty AppendEntries (a heartbeat) so
/// that both sides can tell a quiet link from a dead one, and followers'
/// election clocks do not run out (`--heartbeat-interval-ms`; etcd's
/// default is 100 ms too).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;

/// The shortest election timeout `T` (`--election-timeout-ms`): a follower
/// that hears nothing from its leader for a random time in `[T, 2T)` starts
/// an election, and a leader that hears from no majority within `T` steps
/// down. Ten heartbeats, as in etcd (whose default is 1000 ms too).
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 1_000;

/// How long either side of a replication link waits for any message before
/// declaring the peer dead and closing the link (the follower then redials).
/// Fifty heartbeats: long enough to ride out a stall, short enough to notice a
/// half-open connection quickly.
pub const REPLICATION_TIMEOUT_MS: u64 = 5_000;

/// First delay before a follower redials an unreachable leader; doubled after
/// every failure up to [`RECONNECT_BACKOFF_MAX_MS`].
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 100;

/// Cap of the follower's redial backoff: a restarted leader is found again
/// within two seconds.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;

/// Default time a `majority`/`all` write waits for acknowledgements.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Default most connections that have not yet authenticated, out of
/// `--max-connections` (`--max-unauthenticated`, with `--auth-file`;
/// without it the default is `--max-connections`, so a burst of clients
/// connecting at once is never cut, and the flag can still set a share for
/// connections that have not sent their first complete message). Such a connection has
/// proved nothing yet, so it gets a small share: a flood of idle or slow
/// strangers can hold at most this many threads, and every other slot stays
/// for clients that proved themselves. When the share is full the *oldest*
/// waiting connection is closed to make room, so a legitimate client, whose
/// handshake takes a round trip or two, still gets in during a flood.
pub const UNAUTHENTICATED_CONNECTIONS_MAX_DEFAULT: usize = 128;

/// Default time a frame may take to arrive once its first byte has
/// (`--frame-timeout-ms`; a slow-loris defence, like nginx's
/// `client_body_timeout`). 10 s lets the largest frame (16 MiB) through at
/// 1.6 MB/s; a client that trickles a byte at a time is cut off instead of
/// holding a thread and a partial buffer forever.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default bound on the bytes held for frames that have begun to arrive and
/// are not complete yet, summed over every connection
/// (`--max-partial-frame-bytes`, 256 MiB). A frame's buffer grows as its
/// bytes arrive (never from the length prefix alone), in steps of
/// [`PARTIAL_FRAME_STEP_BYTES`]; every step after a frame's first is taken
/// from this budget. When it is spent, the frame that needed more is
/// refused (ERROR 18) and its connection closed; requests smaller than a
/// step never are. 64 clients sending 4 MiB values at once fit.
pub const PARTIAL_FRAME_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Step in which a frame's buffer grows (64 KiB). A frame's first step is
/// the connection's own, like its 64 KiB read buffer; the later steps of a
/// large frame are charged to the partial-frame budget.
pub const PARTIAL_FRAME_STEP_BYTES: usize = 64 * 1024;

/// Default most followers a leader probes and catches up at once
/// (`--max-catch-ups`). A catch-up reads the WAL from the follower's last
/// LSN, possibly the whole log; without a cap, a flood of FOLLOWER_HELLOs
/// (fake followers, where auth is off) would make the leader read its log
/// N times at once. 8 lets every follower of a 9-member cluster reconnect
/// together after a restart; one more is refused (ERROR 18) and redials.
pub const CATCH_UPS_MAX_DEFAULT: usize = 8;

/// Most threads telling refused connections why at once (16): each sends
/// one ERROR and lingers at most 100 ms so the reply is not lost; beyond
/// this, a refused connection is closed without a word, so that a flood
/// of connections over `--max-connections` never slows the accept loop.
pub const REFUSING_THREADS_MAX: usize = 16;

/// How often the refusals of the limits above (and of authentication) are
/// logged: one line per kind per interval, with the count, never a line per
/// attempt, so a flood cannot fill the disk with logs.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;

/// How long a connection to a node started with `--auth-file` may take to
/// finish the handshake (two round trips). Shorter than
/// [`CLIENT_READ_TIMEOUT_MS`]: an unauthenticated connection holds a slot
/// of the small unauthenticated share.
pub const AUTH_TIMEOUT_MS: u64 = 5_000;

/// Largest frame read during the handshake, on either side (1 KiB): the
/// handshake's messages are at most 34 bytes, and an ERROR one sentence.
/// An unauthenticated peer cannot make the server buffer more than this.
pub const AUTH_FRAME_BYTES_MAX: u32 = 1024;

/// Shortest secret accepted (16 bytes). A shorter one could be found by
/// guessing offline from one captured handshake.
pub const AUTH_SECRET_BYTES_MIN: usize = 16;

/// Longest secret accepted (4 KiB): a secret is a line of text.
pub const AUTH_SECRET_BYTES_MAX: usize = 4096;

/// How long a new connection may take to send its first complete message
/// before the server drops it (a client that connects and never sends must
/// not hold a thread forever). After that, idle connections are kept, as
/// Redis keeps them by default (clients pool connections); their number is
/// bounded by `--max-connections`.
pub const CLIENT_READ_TIMEOUT_MS: u64 = 30_000;

/// Most slots a WAL segment's index grows by at once (each 8 bytes):
/// 1 Mi slots = 8 MiB. An index doubles until then, so a small segment
/// has a small index and a large one remaps rarely.
pub const INDEX_GROW_SLOTS: u64 = 1024 * 1024;

/// Default size at which a WAL segment is closed and the next begun
/// (`--wal-segment-bytes`, 64 MiB, like PostgreSQL's 16 MiB segments
/// scaled for larger records): compaction deletes whole segments, so this
/// is the granularity of the disk it frees, and a few dozen segments keep
/// the list `records_after` searches short.
pub const WAL_SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest `--wal-segment-bytes` accepted (4 KiB): below it every batch
/// would start a segment, and each costs two files and three fsyncs.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 4 * 1024;

/// Records whose post-apply digest a node remembers (64 Ki, 1 MiB): a
/// follower reports its digest every [`DIGEST_REPORT_INTERVAL_MS`] at its
/// last LSN, which is within this many records of the leader's unless it
/// lags by more than that, and then the check simply waits for it.
pub const DIGEST_RING_RECORDS: usize = 64 * 1024;

/// How often a follower puts `(lsn, digest)` in an ACK for the leader's
/// corruption check. Frequent enough to notice within seconds; rare enough
/// to cost nothing.
pub const DIGEST_REPORT_INTERVAL_MS: u64 = 2_000;

/// Longest node address on the wire (`host:port` text), in bytes: a DNS
/// name is at most 253 characters.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// Most members a cluster may have. Every member's address travels in each
/// LEADER_HELLO and a promotion asks each for its vote; replicated stores
/// run 3, 5 or 7 nodes, and 64 is far past any of them.
pub const MEMBERS_MAX: usize = 64;

/// Most keys a follower sizes its map for ahead of a catch-up, whatever
/// the leader's LEADER_HELLO says (`keys`). At 16 million keys the tables
/// alone take about 1 GiB; past it, the map grows by doubling as records
/// arrive, as it would without the hint. The hint is also capped by the
/// keys the follower could hold once caught up (its own plus the records
/// to come), so a wrong count never reserves room no record will fill.
pub const RESERVE_KEYS_MAX: u64 = 16 * 1024 * 1024;

/// How often a leader tells members that are not following it that it
/// leads (LEADER_ANNOUNCE): a deposed leader learns of its successor within
/// about this long of the link healing.
pub const ANNOUNCE_INTERVAL_MS: u64 = 1_000;

/// How long a promotion waits for each member's vote, and an announcement
/// for its answer. Members answer at once or are unreachable; a second
/// keeps `kv_client promote` quick when one is down.
pub const PEER_REQUEST_TIMEOUT_MS: u64 = 1_000;

/// Most refused probes the leader sends one follower before it gives up on
/// the link (the follower then redials). Each probe skips at least a whole
/// term of the follower's log, so this bounds the work a confused or
/// hostile follower can cause.
pub const PROBE_ROUNDS_MAX: u32 = 64;

/// Default of `--max-observers`: `kv_client watch` connections a leader
/// serves at once. Each costs a sender thread, an ACK reader thread and,
/// from `--from-lsn`, a catch-up read of the WAL; a few are enough to
/// watch a cluster, and the bound keeps watchers from crowding out the
/// members.
pub const OBSERVERS_MAX_DEFAULT: usize = 4;

/// Bytes of pairs in one chunk of a snapshot file (1 MiB): the writer and
/// the reader each hold one chunk in memory, never the whole file, and a
/// chunk is what one checksum covers.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest chunk body a snapshot reader accepts: [`SNAPSHOT_CHUNK_BYTES`]
/// plus one largest pair (a chunk holds at least one pair, and is closed
/// once it passes the target) and the pair count. A damaged length above
/// it is refused before anything is allocated for it.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u32 =
    SNAPSHOT_CHUNK_BYTES as u32 + 4 + 8 + KEY_BYTES_MAX + VALUE_BYTES_MAX;

/// The least WAL since the last snapshot that calls for the next one when
/// `--snapshot-after-bytes` is not given (64 MiB): below it, replaying the
/// log at start-up costs well under a second anyway. Above it, the
/// threshold is twice the live data.
pub const SNAPSHOT_AFTER_BYTES_FLOOR: u64 = 64 * 1024 * 1024;

/// Default `--wal-retain-bytes` (256 MiB): the WAL kept after a snapshot
/// however little it is needed, so that a follower that falls a little
/// behind catches up from the log instead of receiving a whole snapshot
/// (PostgreSQL's `wal_keep_size`, Redis's `repl-backlog-size`).
pub const WAL_RETAIN_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default `--wal-retain-max-bytes` (1 GiB): the most WAL a follower that
/// is away may hold back, so one that died for good cannot fill the disk
/// (PostgreSQL's `max_slot_wal_keep_size`). Beyond it, it gets a snapshot.
pub const WAL_RETAIN_MAX_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// Default `--follower-retain-secs` (300): a follower not heard from for
/// this long stops holding back WAL (a restart or a short outage is far
/// shorter; a machine being replaced is far longer).
pub const FOLLOWER_RETAIN_SECS_DEFAULT: u64 = 300;

/// How often the snapshot thread looks, unprompted, whether a snapshot is
/// due and what compaction may delete (1 s): followers come and go between
/// writes.
pub const SNAPSHOT_CHECK_INTERVAL_MS: u64 = 1_000;

/// How long a snapshot waits for the commit LSN to reach the map's LSN
/// (5 s): a snapshot holds only committed records. Followers ACK within
/// milliseconds; if a majority is away, it gives up and tries again later.
pub const SNAPSHOT_COMMIT_WAIT_MS: u64 = 5_000;

/// Most snapshot bytes in one INSTALL_SNAPSHOT message (1 MiB): the leader
/// reads and the follower writes one piece at a time, so a transfer of any
/// size costs each side about this much memory; it is far under
/// [`FRAME_BYTES_MAX`], and large enough that a piece's round trip is a
/// small part of its time on the wire.
pub const INSTALL_SNAPSHOT_DATA_BYTES_MAX: u32 = 1024 * 1024;

/// How long a leader waits for the follower's answer to the last piece of
/// a snapshot (120 s): the follower then verifies the whole file and loads
/// it into a new map before it answers, a few seconds per million keys.
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 120_000;
