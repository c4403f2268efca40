//! The one write path: WAL append → notify replication → fsync → apply.
//!
//! Every change — a client's PUT on the leader, or a batch of AppendEntries
//! on a follower — goes through [`Db`], in this order:
//!
//! 1. **Queue**: the change gets the next LSN and joins the queue of records
//!    waiting to be written (a short lock; no I/O).
//! 2. **Group commit**: the waiting threads share the committer's work
//!    instead of each writing and fsyncing its own record. Whoever finds
//!    the *writer* role free takes the whole queue and writes it with one
//!    `write`; threads that queued meanwhile wait on a condition variable.
//!    With 16 concurrent writers one write and one fsync serve them all
//!    (PostgreSQL's group commit, etcd's batched WAL).
//! 3. **Notify**: as soon as the batch is written the writer hands it to
//!    every replication subscriber (one crossbeam channel per follower
//!    sender, lesson 3).
//! 4. **Fsync**: whoever finds the *syncer* role free fsyncs everything
//!    written so far.
//! 5. **Apply**: whoever finds the *applier* role free applies everything
//!    fsynced so far to the map, in LSN order, and wakes the writers — a
//!    reader never sees a write that a crash of this node could take back,
//!    and no client hears OK for it before then.
//!
//! The three roles overlap (see `Db::wait_for`). With `--fsync always`
//! the next batch is written, and sent to the followers, while the one
//! before it is being fsynced, so a batch does not wait for the previous
//! fsync to end before it leaves for the followers. And a batch is applied
//! while the next one is fsynced: on a leader applying takes microseconds,
//! but a follower catching up applies thousands of records per batch, and
//! its reading thread fsyncs the next batch meanwhile
//! ([`Db::wait_synced`]).
//!
//! ## Sending before the leader's fsync (Raft section 10.2.1, etcd)
//!
//! A durable `majority` write needs two fsyncs: the leader's and a
//! follower's. Done one after the other, they add up; started together,
//! the write costs the slower of the two. So the batch goes to the
//! followers while the leader's own fsync runs. This is safe because of
//! terms and log matching (`docs/FAILOVER.md`): if the leader crashes
//! before its fsync and loses the batch, the followers hold records their
//! leader does not. Whichever node leads next, the log-matching check finds
//! the difference and repairs it: a follower's extra records are removed
//! (they were never acknowledged to any client, since a client's OK waits
//! for the leader's own fsync), or, if a majority holds them, they are
//! committed and the old leader's log is the one repaired. The commit LSN
//! counts the leader's own copy only up to its durable LSN
//! ([`crate::replication::hub::Hub::commit_lsn`]).
//!
//! One case is no longer a plain failure: if the leader's fsync *fails*,
//! the followers may already hold the batch and a majority may keep it.
//! The writers get an error (the node refuses writes from then on, see
//! below) but their writes may survive; read them back to know.
//!
//! ## Terms, and who may write
//!
//! A client write is stamped with the leader's current term, and only a
//! node that is leader takes one: [`Db::set_leader_term`] opens and closes
//! the gate under the queue lock, so a write that races with a step-down is
//! either queued before it (and stamped with the old term) or refused.
//!
//! ## Divergence repair
//!
//! A follower whose log holds records its leader does not have removes
//! them with [`Db::truncate_after`]: the WAL is cut (one `ftruncate` and an
//! fsync) and the map is rebuilt from the newest snapshot and the WAL that
//! remains after it. The map has no undo log; rebuilding costs a snapshot
//! load and a replay, but it is obviously correct, and after a crash at any
//! point the start-up replay does the same thing. A record at or below the
//! commit LSN is never removed: that would be losing data, not repairing
//! it; and since a snapshot holds only committed records, the snapshot is
//! never newer than the truncation point.
//!
//! ## Snapshots and compaction
//!
//! [`Db::open_with`] loads the newest good snapshot and replays only the
//! WAL after it (`crate::snapshot::choose`). While the node runs, the
//! `snapshot` thread ([`crate::snapshot::snapshotter`]) freezes the map
//! ([`Db::freeze`]), writes it, and calls [`Db::compact`]; the committer
//! wakes that thread as the WAL grows. A follower that receives a snapshot
//! from its leader switches to it with [`Db::install_snapshot`].
//!
//! ## The digest ring
//!
//! The map's digest is updated per record; the committer also keeps the
//! digest after each of the last [`DIGEST_RING_RECORDS`] records, so a
//! leader can check a follower's report "at LSN n my digest is d" against
//! its own digest at n (etcd's corruption check).
//!
//! ## When the disk fails
//!
//! A failed `write` (disk full, file-size limit) is undone: the file is cut
//! back, every queued record is discarded and its writer gets an error, and
//! the next write reuses the LSN — the node keeps working once space returns.
//! A failed **fsync** is different: the kernel may have dropped the dirty
//! pages and cleared the error, so the log's state on disk is unknown (the
//! PostgreSQL "fsyncgate" lesson). The node then refuses every further
//! write until it is restarted, and restart recovers from what is on disk.

use std::collections::VecDeque;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::cluster::ClusterId;
use crate::error::{Error, Result};
use crate::limits::{
    DIGEST_RING_RECORDS, FOLLOWER_CHANNEL_BATCHES_MAX, SNAPSHOT_AFTER_BYTES_FLOOR,
};
use crate::logline::{bytes, count};
use crate::snapshot::catalog::Catalog;
use crate::snapshot::policy::{self, FollowerPins, StorageOptions};
use crate::snapshot::{self as snapshots, SnapshotMeta};
use crate::stages::{Stage, Stages};
use crate::store::{CopyStats, Frozen, Store};
use crate::wal::{Base, Op, Record, TermHistory, Wal, WalOptions, WalRecovery};
use crate::{Lsn, Term};

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging (the default): an acknowledged write
    /// survives a crash of the machine.
    Always,
    /// Leave flushing to the kernel: an acknowledged write survives a crash
    /// of the process, not of the machine (Redis `appendfsync no`).
    Never,
}

/// A batch of committed records, shared by every follower's channel.
pub type Batch = Arc<Vec<Record>>;

/// The database of one node: its WAL and its map.
pub struct Db {
    data_dir: PathBuf,
    wal: Wal,
    store: RwLock<Store>,
    fsync: FsyncPolicy,
    queue: Mutex<Queue>,
    commit: Mutex<CommitState>,
    /// Woken when `durable_lsn` moves (and when a write fails).
    committed: Condvar,
    /// Woken when the writer's role is free and the queue holds records.
    to_write: Condvar,
    /// Bumped (under the queue lock) each time a failed write discards the queue.
    epoch: AtomicU64,
    /// Last LSN that is written, fsynced (per policy) and applied.
    durable_lsn: AtomicU64,
    /// Highest LSN known to be held by a majority (lesson 4); on a follower,
    /// the value the leader last sent.
    commit_lsn: AtomicU64,
    subscribers: Mutex<Vec<Sender<Batch>>>,
    cluster_id: Mutex<Option<ClusterId>>,
    /// `(lsn, digest after lsn)` for the most recent records.
    digests: Mutex<VecDeque<(Lsn, u64)>>,
    /// Where the time of a write goes (`status`, [`crate::stages`]).
    stages: Arc<Stages>,
    /// Segments, snapshots and compaction: how this node keeps its disk.
    options: StorageOptions,
    /// The `snapshots/` directory.
    catalog: Catalog,
    /// The newest snapshot on disk: the one start-up would load.
    snapshot: Mutex<Option<SnapshotMeta>>,
    /// Held while a snapshot is written or installed.
    snapshotting: Mutex<()>,
    /// Followers that still need the log (compaction keeps it for them).
    pins: Mutex<FollowerPins>,
    /// Wakes the snapshot thread as the WAL grows; the committer sends on
    /// it when the WAL passes `poke_at` bytes appended.
    pokes: (Sender<()>, Receiver<()>),
    poke_at: AtomicU64,
    /// A snapshot being received from the leader (a follower's `status`).
    resync: Mutex<Option<Resync>>,
    _lock: File,
}

/// What start-up found and did, for the operator's log lines.
#[derive(Debug)]
pub struct Recovery {
    pub wal: WalRecovery,
    /// The snapshot the map was loaded from.
    pub snapshot: Option<SnapshotMeta>,
    pub snapshot_load_ms: u64,
}

/// A snapshot transfer from the leader, as a follower's `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub snapshot_lsn: Lsn,
    pub received_bytes: u64,
    pub total_bytes: u64,
    pub bytes_per_sec: u64,
}

/// The disk side of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageReport {
    pub snapshot: Option<SnapshotMeta>,
    pub wal_bytes: u64,
    pub wal_segments: u64,
    pub wal_first_lsn: Lsn,
    /// WAL written after the newest snapshot, and the amount that calls
    /// for the next one.
    pub wal_bytes_since_snapshot: u64,
    pub snapshot_threshold_bytes: u64,
}

struct Queue {
    next_lsn: Lsn,
    pending: Vec<Record>,
    /// When the first of `pending` joined (for the `queue` stage).
    first_queued_at: Option<Instant>,
    /// `Some(term)` while this node is the leader of `term`: client writes
    /// are taken and stamped with it. `None`: client writes are refused.
    leader_term: Option<Term>,
}

struct CommitState {
    durable_lsn: Lsn,
    /// When the committer last moved `durable_lsn` (the `wakeup` stage).
    durable_at: Option<Instant>,
    /// A thread is writing the queue to the WAL (the *writer*).
    writing: bool,
    /// A thread is fsyncing written batches (the *syncer*).
    syncing: bool,
    /// A thread is applying fsynced batches to the map (the *applier*).
    applying: bool,
    /// Batches written and handed to the followers, not yet fsynced,
    /// oldest first, with when each was written.
    written: VecDeque<(Batch, Instant)>,
    /// Last LSN written to the WAL (durable or not).
    written_lsn: Lsn,
    /// Batches fsynced (as the policy asks), not yet applied, oldest first.
    synced: VecDeque<Batch>,
    /// Last LSN fsynced (as the policy asks), applied or not.
    synced_lsn: Lsn,
    /// `failed_from[e]`: the first LSN discarded when epoch `e` ended.
    failed_from: Vec<Lsn>,
    last_failure: String,
    /// Set after a failed fsync: every write is refused until restart.
    fatal: Option<String>,
}

/// A write queued without waiting for it (see [`Db::begin_term_with_noop`]
/// and [`Db::queue_replicated`]).
#[derive(Debug, Clone, Copy)]
pub struct QueuedWrite(Ticket);

impl QueuedWrite {
    pub fn lsn(&self) -> Lsn {
        self.0.lsn
    }
}

/// A queued write: its LSN and the epoch it was queued in.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    lsn: Lsn,
    epoch: u64,
}

impl Db {
    /// Open the data directory with the default storage options.
    pub fn open(data_dir: &Path, fsync: FsyncPolicy) -> Result<(Db, Recovery)> {
        Db::open_with(data_dir, fsync, StorageOptions::default())
    }

    /// Open the data directory: lock it, load the newest good snapshot,
    /// recover the WAL and replay what follows the snapshot into the map.
    pub fn open_with(
        data_dir: &Path,
        fsync: FsyncPolicy,
        options: StorageOptions,
    ) -> Result<(Db, Recovery)> {
        crate::datadir::prepare(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let cluster_id = ClusterId::load(data_dir)?;
        // 1. Where does the log start? (Upgrading a wal.log first.)
        let prepared = crate::wal::prepare_dir(data_dir)?;
        // 2. The newest snapshot that is whole and whose WAL is still there.
        let catalog = Catalog::open(data_dir)?;
        let chosen = snapshots::choose(&catalog, prepared.first_lsn)?;
        let mut store = chosen.store;
        let base =
            chosen.snapshot.as_ref().map_or(Base::NONE, |s| Base { lsn: s.lsn, term: s.term });
        // 3. Replay the WAL after it.
        let wal_options =
            WalOptions { sync_full_segments: fsync == FsyncPolicy::Always, ..options.wal };
        let (wal, mut recovery) =
            Wal::open_with(data_dir, wal_options, base, |record| store.apply(record))?;
        recovery.upgraded = recovery.upgraded.or(prepared.upgraded);
        let last_lsn = recovery.last_lsn;
        let poke_at = poke_step(&options);
        let db = Db {
            data_dir: data_dir.to_path_buf(),
            wal,
            store: RwLock::new(store),
            fsync,
            queue: Mutex::new(Queue {
                next_lsn: last_lsn + 1,
                pending: Vec::new(),
                first_queued_at: None,
                leader_term: None,
            }),
            commit: Mutex::new(CommitState {
                durable_lsn: last_lsn,
                durable_at: None,
                writing: false,
                syncing: false,
                applying: false,
                written: VecDeque::new(),
                written_lsn: last_lsn,
                synced: VecDeque::new(),
                synced_lsn: last_lsn,
                failed_from: Vec::new(),
                last_failure: String::new(),
                fatal: None,
            }),
            committed: Condvar::new(),
            to_write: Condvar::new(),
            epoch: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(last_lsn),
            // Everything in a snapshot is committed.
            commit_lsn: AtomicU64::new(base.lsn),
            subscribers: Mutex::new(Vec::new()),
            cluster_id: Mutex::new(cluster_id),
            digests: Mutex::new(VecDeque::new()),
            stages: Arc::new(Stages::new()),
            options,
            catalog,
            snapshot: Mutex::new(chosen.snapshot.clone()),
            snapshotting: Mutex::new(()),
            pins: Mutex::new(FollowerPins::default()),
            pokes: crossbeam_channel::bounded(1),
            poke_at: AtomicU64::new(poke_at),
            resync: Mutex::new(None),
            _lock: lock,
        };
        let recovery =
            Recovery { wal: recovery, snapshot: chosen.snapshot, snapshot_load_ms: chosen.load_ms };
        Ok((db, recovery))
    }

    /// Open or close the gate for client writes: `Some(term)` when this
    /// node becomes leader of `term`, `None` when it stops being leader.
    pub fn set_leader_term(&self, term: Option<Term>) {
        self.queue.lock().leader_term = term;
    }

    /// Open the gate for client writes in `term`, with a NOOP queued ahead
    /// of them (a new leader's first record; see [`crate::wal::record`]).
    /// Returns the NOOP's LSN; [`Db::wait_queued`] makes it durable.
    pub fn begin_term_with_noop(&self, term: Term) -> QueuedWrite {
        let mut q = self.queue.lock();
        q.leader_term = Some(term);
        let lsn = q.next_lsn;
        q.next_lsn += 1;
        q.first_queued_at.get_or_insert_with(Instant::now);
        q.pending.push(Record { lsn, term, op: Op::Noop });
        QueuedWrite(Ticket { lsn, epoch: self.epoch.load(Ordering::Acquire) })
    }

    /// Wait until a write queued by [`Db::begin_term_with_noop`] or
    /// [`Db::queue_replicated`] is durable (and applied).
    pub fn wait_queued(&self, write: QueuedWrite) -> Result<Lsn> {
        self.wait_for(write.0, Goal::Applied)?;
        Ok(write.0.lsn)
    }

    /// Wait only until a write queued by [`Db::queue_replicated`] is
    /// written and fsynced, doing the writer's and syncer's work meanwhile
    /// but never the applier's: a follower's reading thread makes the next
    /// batch durable while its acknowledging thread applies the one before
    /// (`crate::replication::follower`, "Two threads"). Another waiter
    /// applies it: [`Db::wait_queued`].
    pub fn wait_synced(&self, write: QueuedWrite) -> Result<Lsn> {
        self.wait_for(write.0, Goal::Synced)?;
        Ok(write.0.lsn)
    }

    /// The last LSN handed out to a write (queued, maybe not yet durable).
    pub fn queued_lsn(&self) -> Lsn {
        self.queue.lock().next_lsn - 1
    }

    /// The term of the record at `lsn` (0 for LSN 0; `None` past the end).
    pub fn term_at(&self, lsn: Lsn) -> Option<Term> {
        self.wal.term_at(lsn)
    }

    /// Term of the last record in the log (0 if empty).
    pub fn last_term(&self) -> Term {
        self.wal.last_term()
    }

    /// The log's term history (term → first LSN).
    pub fn term_history(&self) -> TermHistory {
        self.wal.term_history()
    }

    /// The digest of the map right after `lsn` was applied, if `lsn` is
    /// recent enough to still be in the ring.
    pub fn digest_at(&self, lsn: Lsn) -> Option<u64> {
        let ring = self.digests.lock();
        let &(first, _) = ring.front()?;
        let at = lsn.checked_sub(first)?;
        ring.get(usize::try_from(at).ok()?).map(|&(l, d)| {
            debug_assert_eq!(l, lsn);
            d
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// How this node keeps its disk (segments, snapshots, compaction).
    pub fn storage_options(&self) -> &StorageOptions {
        &self.options
    }

    /// The `snapshots/` directory.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The newest snapshot on disk.
    pub fn latest_snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot.lock().clone()
    }

    /// A new snapshot is in place (written here, or installed).
    pub fn snapshot_written(&self, meta: SnapshotMeta) {
        *self.snapshot.lock() = Some(meta);
    }

    /// Freeze the map for a snapshot (see `crate::store`); returns it and
    /// how long writers were held off meanwhile.
    pub fn freeze(&self) -> (Frozen, Duration) {
        let started = Instant::now();
        let mut store = self.store.write();
        let frozen = store.freeze();
        drop(store);
        (frozen, started.elapsed())
    }

    /// Shard copies writers made since the last freeze.
    pub fn copy_stats(&self) -> CopyStats {
        self.store.read().copy_stats()
    }

    /// The channel on which the committer wakes the snapshot thread.
    pub fn snapshot_pokes(&self) -> Receiver<()> {
        self.pokes.1.clone()
    }

    /// `Some(why)` if the WAL after the newest snapshot has grown past the
    /// threshold (`crate::snapshot::policy`).
    pub fn snapshot_due(&self) -> Option<String> {
        let after = self.latest_snapshot().map_or(0, |s| s.lsn);
        let since = self.wal.bytes_after(after);
        let threshold = self.options.snapshot_threshold(self.store.read().live_bytes());
        (since > threshold && self.last_lsn() > after).then(|| {
            format!(
                "{} of WAL after LSN {}, threshold {}",
                bytes(since),
                count(after),
                bytes(threshold)
            )
        })
    }

    /// A follower acknowledged `acked_lsn` (or is being sent the snapshot
    /// that ends there): compaction keeps what comes after it for a while.
    pub fn note_follower(&self, follower: SocketAddr, acked_lsn: Lsn) {
        self.pins.lock().note(follower, acked_lsn, Instant::now());
    }

    /// Bytes of WAL the follower at `follower` holds back, if it does.
    pub fn pinned_bytes(&self, follower: SocketAddr) -> Option<u64> {
        let needs = self.pins.lock().needs(follower)?;
        Some(policy::pinned_bytes(&self.wal.segments(), needs, &self.options))
    }

    /// Compaction after the newest snapshot (`crate::snapshot::policy`):
    /// delete the segments nobody needs any more. Returns how many
    /// segments and bytes went.
    pub fn compact(&self) -> Result<(usize, u64)> {
        let Some(snapshot) = self.latest_snapshot() else { return Ok((0, 0)) };
        let segments = self.wal.segments();
        let live = self.pins.lock().live(Instant::now(), self.options.follower_retain);
        let needs: Vec<Lsn> = live.iter().map(|(_, needs)| *needs).collect();
        let through = policy::compaction_through(snapshot.lsn, &segments, &needs, &self.options);
        if segments.first().is_none_or(|s| s.last_lsn > through) {
            return Ok((0, 0));
        }
        let (removed, freed) = self.wal.remove_through(through)?;
        if removed > 0 {
            let kept: Vec<String> =
                live.iter().map(|(a, n)| format!("{a} needs LSN {} on", count(*n))).collect();
            log::info!(
                "[wal] compaction after the snapshot at LSN {}: deleted {removed} segment(s), {}; \
                 the log now starts at LSN {}{}",
                count(snapshot.lsn),
                bytes(freed),
                count(self.wal.first_lsn()),
                if kept.is_empty() { String::new() } else { format!(" ({})", kept.join(", ")) }
            );
        }
        Ok((removed, freed))
    }

    /// The disk side of `status`.
    pub fn storage_report(&self) -> StorageReport {
        let snapshot = self.latest_snapshot();
        let segments = self.wal.segments();
        let since = self.wal.bytes_after(snapshot.as_ref().map_or(0, |s| s.lsn));
        StorageReport {
            wal_bytes: segments.iter().map(|s| s.bytes).sum(),
            wal_segments: segments.len() as u64,
            wal_first_lsn: segments.first().map_or(1, |s| s.first_lsn),
            wal_bytes_since_snapshot: since,
            snapshot_threshold_bytes: self
                .options
                .snapshot_threshold(self.store.read().live_bytes()),
            snapshot,
        }
    }

    /// Held while a snapshot is written or installed: one at a time.
    pub fn snapshot_guard(&self) -> MutexGuard<'_, ()> {
        self.snapshotting.lock()
    }

    /// A follower's snapshot transfer: its progress, or `None` when done.
    pub fn set_resync(&self, resync: Option<Resync>) {
        *self.resync.lock() = resync;
    }

    pub fn resync(&self) -> Option<Resync> {
        self.resync.lock().clone()
    }

    /// The node's write-stage histograms.
    pub fn stages(&self) -> &Arc<Stages> {
        &self.stages
    }

    /// Last LSN that is durable and applied: what a reader can see and what
    /// may be sent to followers.
    pub fn last_lsn(&self) -> Lsn {
        self.durable_lsn.load(Ordering::Acquire)
    }

    pub fn commit_lsn(&self) -> Lsn {
        self.commit_lsn.load(Ordering::Acquire)
    }

    /// Raise the commit LSN (it never goes back).
    pub fn advance_commit_lsn(&self, lsn: Lsn) {
        self.commit_lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The cluster this node's log belongs to, if it knows yet.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        *self.cluster_id.lock()
    }

    /// A leader's id: the stored one, or a new random one stored now.
    /// Returns the id and whether it was just created.
    pub fn ensure_cluster_id(&self) -> Result<(ClusterId, bool)> {
        let mut id = self.cluster_id.lock();
        if let Some(id) = *id {
            return Ok((id, false));
        }
        let created = ClusterId::generate()?;
        created.store(&self.data_dir)?;
        *id = Some(created);
        Ok((created, true))
    }

    /// A fresh follower joins its leader's cluster: store the id durably
    /// before any of that cluster's records are written.
    pub fn adopt_cluster_id(&self, id: ClusterId) -> Result<()> {
        let mut current = self.cluster_id.lock();
        assert!(current.is_none(), "a node adopts a cluster id once");
        id.store(&self.data_dir)?;
        *current = Some(id);
        Ok(())
    }

    /// The map's digest and the LSN it was taken at (see [`Store::digest`]).
    pub fn digest(&self) -> (Lsn, u64) {
        let store = self.store.read();
        (store.applied_lsn(), store.digest())
    }

    /// Look a key up in the map.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.read().get(key).cloned()
    }

    /// Look a key up, with the LSN the map had applied when it was read (a
    /// linearizable read waits until that LSN is committed).
    pub fn get_at(&self, key: &[u8]) -> (Option<Vec<u8>>, Lsn) {
        let store = self.store.read();
        (store.get(key).cloned(), store.applied_lsn())
    }

    /// Wait until the map has applied `lsn` (read-your-writes: `--min-lsn`).
    /// False if `deadline` passed first.
    pub fn wait_applied(&self, lsn: Lsn, deadline: Instant) -> bool {
        let mut c = self.commit.lock();
        loop {
            if c.durable_lsn >= lsn {
                return true;
            }
            if self.committed.wait_until(&mut c, deadline).timed_out() {
                return c.durable_lsn >= lsn;
            }
        }
    }

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        self.store.read().len()
    }

    /// Size the map for `keys` keys before a catch-up brings them
    /// ([`Store::reserve`]); the caller bounds `keys`. Returns how long it
    /// took, or `None` if the memory could not be had.
    pub fn reserve_keys(&self, keys: usize) -> Option<Duration> {
        let started = Instant::now();
        self.store.write().reserve(keys).then(|| started.elapsed())
    }

    /// Log and apply one client write (leader). Returns its LSN and the
    /// term it was written in, once durable.
    pub fn write(&self, op: Op) -> Result<(Lsn, Term)> {
        let (_, last, term) = self.write_all(vec![op])?;
        Ok((last, term))
    }

    /// Log and apply several client writes together (a pipelining client's
    /// requests, already in the read buffer): they are queued under one
    /// lock, so they get contiguous LSNs and go into the same batch, and
    /// the caller waits once for the last. Returns the first and last LSN
    /// and the term, once all are durable; on an error none was applied.
    pub fn write_all(&self, ops: Vec<Op>) -> Result<(Lsn, Lsn, Term)> {
        if ops.is_empty() {
            return Err(Error::Unexpected("an empty group of writes".into()));
        }
        for op in &ops {
            op.check_limits()?;
        }
        let (ticket, first, term) = {
            let mut q = self.queue.lock();
            let Some(term) = q.leader_term else {
                return Err(Error::NotLeader { term: None, leader: None });
            };
            let first = q.next_lsn;
            q.first_queued_at.get_or_insert_with(Instant::now);
            for op in ops {
                let lsn = q.next_lsn;
                q.next_lsn += 1;
                q.pending.push(Record { lsn, term, op });
            }
            (Ticket { lsn: q.next_lsn - 1, epoch: self.epoch.load(Ordering::Acquire) }, first, term)
        };
        self.wait_for(ticket, Goal::Applied)?;
        Ok((first, ticket.lsn, term))
    }

    /// Log and apply records received from the leader (follower, lesson 3).
    /// The first must continue this node's log exactly: no gap, no repeat;
    /// terms must not decrease, from the log's last term on.
    pub fn append_replicated(&self, records: Vec<Record>) -> Result<Lsn> {
        match self.queue_replicated(records)? {
            Some(write) => self.wait_queued(write),
            None => Ok(self.last_lsn()),
        }
    }

    /// The first half of [`Db::append_replicated`]: check the records and
    /// queue them, without waiting; [`Db::wait_queued`] makes them durable
    /// and applied. A follower queues the next AppendEntries while the one
    /// before is fsynced (`crate::replication::follower`). `None` if
    /// `records` is empty.
    pub fn queue_replicated(&self, records: Vec<Record>) -> Result<Option<QueuedWrite>> {
        let Some(last) = records.last().map(|r| r.lsn) else { return Ok(None) };
        if let Some(gap) = records.windows(2).find(|w| w[0].lsn.checked_add(1) != Some(w[1].lsn)) {
            let expected = gap[0].lsn.saturating_add(1);
            return Err(Error::NotContiguous { expected, got: gap[1].lsn });
        }
        if let Some(w) = records.windows(2).find(|w| w[1].term < w[0].term) {
            return Err(Error::Malformed(format!(
                "AppendEntries terms go down: LSN {} has term {}, LSN {} term {}",
                w[0].lsn, w[0].term, w[1].lsn, w[1].term
            )));
        }
        let ticket = {
            let mut q = self.queue.lock();
            if q.leader_term.is_some() {
                return Err(Error::Unexpected("AppendEntries to a leader".into()));
            }
            if records[0].lsn != q.next_lsn {
                return Err(Error::NotContiguous { expected: q.next_lsn, got: records[0].lsn });
            }
            // The last term queued, else written (the caller checks the
            // records' terms against what it queued before: see
            // `crate::replication::follower`, "Two threads").
            let last_term = q.pending.last().map_or_else(|| self.wal.last_term(), |r| r.term);
            if records[0].term < last_term {
                return Err(Error::Malformed(format!(
                    "AppendEntries record LSN {} has term {}, older than our last term {last_term}",
                    records[0].lsn, records[0].term
                )));
            }
            q.next_lsn = last + 1;
            q.first_queued_at.get_or_insert_with(Instant::now);
            q.pending.extend(records);
            Ticket { lsn: last, epoch: self.epoch.load(Ordering::Acquire) }
        };
        Ok(Some(QueuedWrite(ticket)))
    }

    /// Remove every record after `lsn` from the WAL and the map (divergence
    /// repair on a follower; see the module doc). Returns how many records
    /// were removed. Refuses, and changes nothing, if a record to remove is
    /// at or below the commit LSN.
    pub fn truncate_after(&self, lsn: Lsn) -> Result<u64> {
        let commit_lsn = self.commit_lsn();
        if lsn < commit_lsn && lsn < self.last_lsn() {
            return Err(Error::WouldLoseCommitted { truncate_after: lsn, commit_lsn });
        }
        let (mut c, mut q) = self.exclusive("a truncation")?;
        let removed = self.wal.truncate_after(lsn)?;
        if removed == 0 {
            return Ok(0);
        }
        // Rebuild the map from what the WAL still holds.
        let mut store = self.rebuild_through(lsn)?;
        assert_eq!(store.applied_lsn(), lsn, "the map is rebuilt exactly to the truncation point");
        store.freeze(); // start its copy counts afresh
        *self.store.write() = store;
        q.next_lsn = lsn + 1;
        c.durable_lsn = lsn;
        c.written_lsn = lsn;
        c.synced_lsn = lsn;
        self.durable_lsn.store(lsn, Ordering::Release);
        let mut ring = self.digests.lock();
        while ring.back().is_some_and(|&(l, _)| l > lsn) {
            ring.pop_back();
        }
        Ok(removed)
    }

    /// Exclude the committer for `what` (a truncation, an install): wait
    /// until none is busy and hold its lock and the queue's; nothing may be
    /// queued (a follower's only writer is the caller itself).
    fn exclusive(
        &self,
        what: &str,
    ) -> Result<(MutexGuard<'_, CommitState>, MutexGuard<'_, Queue>)> {
        let mut c = self.commit.lock();
        while c.writing || c.syncing || c.applying || !c.written.is_empty() || !c.synced.is_empty()
        {
            self.committed.wait(&mut c);
        }
        if let Some(why) = &c.fatal {
            return Err(Error::WalFailed(why.clone()));
        }
        let q = self.queue.lock();
        if !q.pending.is_empty() {
            return Err(Error::Unexpected(format!(
                "{} write(s) still queued during {what}",
                q.pending.len()
            )));
        }
        Ok((c, q))
    }

    /// The map as of `lsn`: the newest snapshot at or before it, then the
    /// WAL after the snapshot.
    fn rebuild_through(&self, lsn: Lsn) -> Result<Store> {
        let mut store = match self.latest_snapshot() {
            Some(s) if s.lsn <= lsn => snapshots::load(&s.path, |_| {})?.0,
            Some(s) => {
                return Err(Error::WouldLoseCommitted { truncate_after: lsn, commit_lsn: s.lsn })
            }
            None => Store::new(),
        };
        let from = store.applied_lsn();
        self.wal.replay(from, lsn, |record| store.apply(record))?;
        Ok(store)
    }

    /// Switch to a snapshot received from the leader (snapshot install):
    /// `store` is its map, already verified, and the file is in place as
    /// `meta.path`. The WAL is replaced by an empty one after it, and the
    /// map by `store`; nothing else may be written meanwhile. (A crash
    /// during the switch is finished by start-up: a snapshot beyond the
    /// log supersedes it, see `crate::wal::log`.)
    pub fn install_snapshot(&self, store: Store, meta: SnapshotMeta) -> Result<()> {
        assert_eq!(store.applied_lsn(), meta.lsn, "the map is the snapshot's");
        let (mut c, mut q) = self.exclusive("a snapshot install")?;
        if q.leader_term.is_some() {
            return Err(Error::Unexpected("a snapshot install on a leader".into()));
        }
        self.wal.reset_after(meta.lsn, meta.term)?;
        *self.store.write() = store;
        q.next_lsn = meta.lsn + 1;
        c.durable_lsn = meta.lsn;
        c.written_lsn = meta.lsn;
        c.synced_lsn = meta.lsn;
        self.durable_lsn.store(meta.lsn, Ordering::Release);
        self.commit_lsn.fetch_max(meta.lsn, Ordering::AcqRel);
        self.digests.lock().clear();
        *self.snapshot.lock() = Some(meta);
        self.committed.notify_all();
        Ok(())
    }

    /// Subscribe to written batches (a follower's sender thread, lesson 3).
    ///
    /// The channel is bounded: when a subscriber falls behind, batches for it
    /// are dropped, and it must fetch the gap from the WAL with
    /// [`Wal::records_after`]. Subscribe *before* reading [`Db::last_lsn`]
    /// for a catch-up, so no batch can fall between the two.
    pub fn subscribe(&self) -> Receiver<Batch> {
        let (tx, rx) = crossbeam_channel::bounded(FOLLOWER_CHANNEL_BATCHES_MAX);
        self.subscribers.lock().push(tx);
        rx
    }

    /// Wait until `ticket` has reached `goal`, doing the committer's work
    /// meanwhile.
    ///
    /// The committer's work has three roles, each held by at most one
    /// thread at a time, so that one batch is written while the one before
    /// it is fsynced, and applied while the next is fsynced (a pipeline of
    /// three stages):
    /// - the **writer** takes the whole queue, writes it with one `write`
    ///   and hands it to the followers ([`Db::write_queue`]);
    /// - the **syncer** fsyncs everything written so far ([`Db::sync`]);
    /// - the **applier** applies everything fsynced so far to the map, in
    ///   LSN order, and moves the durable LSN ([`Db::apply`]).
    ///
    /// A waiting thread takes whichever role is free and has work, the
    /// applier's first (it finishes what is nearest done). A thread that
    /// waits only for [`Goal::Synced`] never applies. With no role to take,
    /// it sleeps on `to_write` while its record is still queued and on
    /// `committed` once it is written. The writer, when it leaves the queue
    /// non-empty, wakes one thread to write the next batch, then (usually)
    /// syncs its own.
    fn wait_for(&self, ticket: Ticket, goal: Goal) -> Result<()> {
        let mut c = self.commit.lock();
        let mut waited = false;
        let mut woken_to_write = false;
        loop {
            if let Some(why) = &c.fatal {
                return Err(Error::WalFailed(why.clone()));
            }
            if ticket.epoch != self.epoch.load(Ordering::Acquire)
                && ticket.lsn >= c.failed_from[ticket.epoch as usize]
            {
                // The queue was discarded after a failed write, and this
                // record with it. (A record written before that batch is
                // still in the log: it waits for durability as usual.)
                return Err(Error::WalFailed(c.last_failure.clone()));
            }
            let reached = match goal {
                Goal::Synced => c.synced_lsn >= ticket.lsn,
                Goal::Applied => c.durable_lsn >= ticket.lsn,
            };
            if reached {
                if let (Goal::Applied, true, Some(at)) = (goal, waited, c.durable_at) {
                    self.stages.record(Stage::Wakeup, at.elapsed());
                }
                // Work this thread did for others (a batch it wrote while
                // its own record was being made durable) must not be left
                // with every other waiter asleep: hand it on.
                if self.unowned_work(&c) {
                    self.wake_all();
                }
                return Ok(());
            }
            let can_write = !c.writing && !self.queue.lock().pending.is_empty();
            let can_sync = !c.syncing && !c.written.is_empty();
            let can_apply = goal == Goal::Applied && !c.applying && !c.synced.is_empty();
            if can_apply {
                c.applying = true;
                let batches: Vec<Batch> = c.synced.drain(..).collect();
                drop(c);
                let durable = self.apply(batches);
                c = self.commit.lock();
                c.applying = false;
                c.durable_lsn = durable.max(c.durable_lsn);
                c.durable_at = Some(Instant::now());
                self.wake_all();
                continue;
            }
            if can_write && (woken_to_write || !can_sync) {
                woken_to_write = false;
                c.writing = true;
                drop(c);
                let result = self.write_queue();
                c = self.commit.lock();
                c.writing = false;
                match result {
                    Ok(Some((batch, written_at))) => {
                        c.written_lsn = batch.last().map_or(c.written_lsn, |r| r.lsn);
                        c.written.push_back((batch, written_at));
                    }
                    Ok(None) => {}
                    Err(WriteFailure { first_lsn, why }) => {
                        c.failed_from.push(first_lsn);
                        c.last_failure = why;
                        self.wake_all();
                        continue;
                    }
                }
                if self.pipelined() && !self.queue.lock().pending.is_empty() {
                    self.to_write.notify_one();
                }
                continue;
            }
            if can_sync {
                if can_write && self.pipelined() {
                    // We sync; let another thread write the queue meanwhile.
                    self.to_write.notify_one();
                }
                c.syncing = true;
                let batches: Vec<(Batch, Instant)> = c.written.drain(..).collect();
                drop(c);
                let result = self.sync(&batches);
                c = self.commit.lock();
                c.syncing = false;
                match result {
                    Ok(()) => {
                        for (batch, _) in batches {
                            c.synced_lsn = batch.last().map_or(c.synced_lsn, |r| r.lsn);
                            c.synced.push_back(batch);
                        }
                    }
                    Err(why) => c.fatal = Some(why),
                }
                // Wake the others, unless this thread goes on to apply (as
                // on a leader): then it wakes them once it has, and each
                // thread wakes once, to find its write durable.
                if goal == Goal::Synced || c.applying || c.fatal.is_some() {
                    self.wake_all();
                }
                continue;
            }
            waited = true;
            if ticket.lsn > c.written_lsn {
                self.to_write.wait(&mut c);
                woken_to_write = true;
            } else {
                self.committed.wait(&mut c);
                woken_to_write = false;
            }
        }
    }

    /// Wake every waiter: those whose record is written sleep on
    /// `committed`, those whose record was still queued on `to_write`; each
    /// finds its write durable, or takes the role that has work.
    fn wake_all(&self) {
        self.committed.notify_all();
        self.to_write.notify_all();
    }

    /// True if the committer has work that no thread holds the role for:
    /// queued records and no writer, written ones and no syncer, fsynced
    /// ones and no applier.
    fn unowned_work(&self, c: &CommitState) -> bool {
        (!c.syncing && !c.written.is_empty())
            || (!c.applying && !c.synced.is_empty())
            || (!c.writing && !self.queue.lock().pending.is_empty())
    }

    /// Whether a batch is written while the one before it is fsynced. Only
    /// with an fsync to wait for: without one, syncing is only applying,
    /// and waking a second thread to write costs more than it overlaps.
    fn pipelined(&self) -> bool {
        self.fsync == FsyncPolicy::Always
    }

    /// The writer's job: write the whole queue with one `write` and hand it
    /// to the followers. `None` if the queue was empty.
    fn write_queue(&self) -> std::result::Result<Option<(Batch, Instant)>, WriteFailure> {
        let (batch, queued_at) = {
            let mut q = self.queue.lock();
            (std::mem::take(&mut q.pending), q.first_queued_at.take())
        };
        let Some(last) = batch.last().map(|r| r.lsn) else { return Ok(None) };
        let started = Instant::now();
        if let Some(at) = queued_at {
            self.stages.record(Stage::Queue, started.saturating_duration_since(at));
        }
        if let Err(e) = self.wal.append(&batch) {
            let first_lsn = batch[0].lsn;
            let mut q = self.queue.lock();
            let discarded = q.pending.len() + batch.len();
            q.pending.clear();
            q.first_queued_at = None;
            q.next_lsn = first_lsn;
            self.epoch.fetch_add(1, Ordering::AcqRel);
            log::error!("[wal] {e}; {discarded} queued write(s) refused, none applied");
            return Err(WriteFailure { first_lsn, why: e.to_string() });
        }
        let written = Instant::now();
        self.stages.record(Stage::Write, written - started);
        crate::metrics::global().commit_batch(batch.len());
        self.poke_snapshotter();
        // Hand the batch to the followers' senders now, before our own
        // fsync: see "Sending before the leader's fsync" in the module docs.
        let batch = Arc::new(batch);
        self.stages.published(last, written);
        self.publish(Arc::clone(&batch));
        Ok(Some((batch, written)))
    }

    /// The syncer's job: fsync (as the policy asks) everything written so
    /// far, which covers `batches`. On a failure, why.
    fn sync(&self, batches: &[(Batch, Instant)]) -> std::result::Result<(), String> {
        if self.fsync == FsyncPolicy::Never || batches.is_empty() {
            return Ok(());
        }
        let result = self.wal.sync();
        for (_, written) in batches {
            self.stages.record(Stage::Fsync, written.elapsed());
        }
        result.map_err(|e| {
            log::error!(
                "[wal] {e}; the log's state on disk is unknown, so this node refuses \
                 writes until it is restarted (restart recovers from the disk)"
            );
            e.to_string()
        })
    }

    /// The applier's job: apply `batches`, fsynced already, to the map in
    /// LSN order. Returns the new durable LSN.
    ///
    /// A batch that no follower's sender still holds (always so on a
    /// follower) is moved into the map; a shared one is copied.
    fn apply(&self, batches: Vec<Batch>) -> Lsn {
        let Some(last) = batches.last().and_then(|b| b.last()).map(|r| r.lsn) else {
            return self.last_lsn();
        };
        let count = batches.len();
        {
            let mut store = self.store.write();
            let mut ring = self.digests.lock();
            for record in batches.into_iter().flat_map(Arc::unwrap_or_clone) {
                let lsn = record.lsn;
                store.apply(record);
                if ring.len() == DIGEST_RING_RECORDS {
                    ring.pop_front();
                }
                ring.push_back((lsn, store.digest()));
            }
        }
        self.durable_lsn.store(last, Ordering::Release);
        log::trace!("[wal] committed LSN {last} ({count} batch(es))");
        last
    }

    /// Wake the snapshot thread once in a while as the WAL grows (every
    /// eighth of the threshold), so a due snapshot starts promptly.
    fn poke_snapshotter(&self) {
        let appended = self.wal.appended_bytes();
        let at = self.poke_at.load(Ordering::Acquire);
        if appended >= at {
            self.poke_at.store(appended + poke_step(&self.options), Ordering::Release);
            let _ = self.pokes.0.try_send(());
        }
    }

    fn publish(&self, batch: Batch) {
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|tx| match tx.try_send(Arc::clone(&batch)) {
            // Full: that follower's sender reads the gap from the WAL later.
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// Bytes of WAL between two wake-ups of the snapshot thread.
fn poke_step(options: &StorageOptions) -> u64 {
    let threshold = options.snapshot_after_bytes.unwrap_or(SNAPSHOT_AFTER_BYTES_FLOOR);
    (threshold / 8).clamp(4096, 8 * 1024 * 1024)
}

/// A failed WAL write: the first LSN of the discarded batch, and why.
struct WriteFailure {
    first_lsn: Lsn,
    why: String,
}

/// What a waiter in [`Db::wait_for`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Written and fsynced (as the policy asks).
    Synced,
    /// Written, fsynced and applied to the map: durable, readable.
    Applied,
}

/// Take an exclusive lock on `DATA_DIR/LOCK` so two servers never share a
/// data directory (PostgreSQL's `postmaster.pid`). The lock is released by
/// the kernel when the process exits, however it exits.
fn lock_data_dir(data_dir: &Path) -> Result<File> {
    let path = data_dir.join("LOCK");
    let file = crate::datadir::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
            format!("locking data dir {}", data_dir.display()),
            std::io::Error::other("another kvstore process is using it"),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("locking {}", path.display()), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    #[test]
    fn concurrent_writers_get_contiguous_lsns_and_all_apply() {
        // Goal: group commit under contention loses nothing and numbers
        // every write exactly once.
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
        db.set_leader_term(Some(1));
        let mut lsns: Vec<Lsn> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let db = &db;
                    s.spawn(move || {
                        (0..50)
                            .map(|i| db.write(put(&format!("{t}-{i}"), "v")).unwrap().0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        lsns.sort_unstable();
        assert_eq!(lsns, (1..=400).collect::<Vec<_>>());
        assert_eq!(db.key_count(), 400);
        drop(db);
        let (db, recovery) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(recovery.wal.last_lsn, 400);
        assert_eq!(db.get(b"7-49"), Some(b"v".to_vec()));
    }

    #[test]
    fn pipelined_writers_see_their_write_applied_and_batches_leave_in_order() {
        // Goal: with --fsync always one batch is written while the previous
        // one is fsynced. Every writer still finds its write in the map when
        // its OK comes, the followers' channel sees every LSN once and in
        // order, and segments rolling under the pipeline lose nothing.
        let dir = tempfile::tempdir().unwrap();
        let mut options = StorageOptions::default();
        options.wal.segment_bytes = 4096;
        let (db, _) = Db::open_with(dir.path(), FsyncPolicy::Always, options).unwrap();
        let batches = db.subscribe();
        db.set_leader_term(Some(1));
        std::thread::scope(|s| {
            for t in 0..8 {
                let db = &db;
                s.spawn(move || {
                    for i in 0..40 {
                        let key = format!("{t}-{i}");
                        let (lsn, _) = db.write(put(&key, "v")).unwrap();
                        assert_eq!(db.get(key.as_bytes()), Some(b"v".to_vec()));
                        assert!(db.last_lsn() >= lsn);
                    }
                });
            }
        });
        let sent: Vec<Lsn> =
            batches.try_iter().flat_map(|b| b.iter().map(|r| r.lsn).collect::<Vec<_>>()).collect();
        assert_eq!(sent, (1..=320).collect::<Vec<_>>());
        assert!(db.storage_report().wal_segments > 1, "segments rolled under the pipeline");
        drop(db);
        let (db, recovery) = Db::open_with(dir.path(), FsyncPolicy::Always, options).unwrap();
        assert_eq!((recovery.wal.last_lsn, db.key_count()), (320, 320));
    }

    #[test]
    fn no_writer_is_left_asleep_when_another_wrote_its_batch() {
        // Goal: a thread whose own write became durable while it was
        // writing others' records hands the batch it wrote on, instead of
        // leaving its writers asleep with nobody to fsync it (they waited
        // until the next write came; this test hung about 1 run in 30).
        // Rounds of 8 writers; each must finish within the deadline.
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let (db, _) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
            db.set_leader_term(Some(1));
            let db = Arc::new(db);
            let (done, finished) = crossbeam_channel::unbounded();
            for t in 0..8 {
                let (db, done) = (Arc::clone(&db), done.clone());
                std::thread::spawn(move || {
                    for i in 0..40 {
                        db.write(put(&format!("{t}-{i}"), "v")).unwrap();
                    }
                    let _ = done.send(());
                });
            }
            for _ in 0..8 {
                finished
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|_| panic!("round {round}: a writer is still asleep"));
            }
            assert_eq!((db.last_lsn(), db.key_count()), (320, 320));
        }
    }

    #[test]
    fn replicated_records_must_continue_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        let rec = |lsn| Record { lsn, term: 1, op: put("k", "v") };
        assert!(matches!(
            db.append_replicated(vec![rec(2)]),
            Err(Error::NotContiguous { expected: 1, got: 2 })
        ));
        assert_eq!(db.append_replicated(vec![rec(1), rec(2)]).unwrap(), 2);
        assert!(db.append_replicated(vec![rec(2)]).is_err(), "a repeat is refused");
    }

    #[test]
    fn queued_replicated_batches_become_durable_in_order_and_terms_never_go_down() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
        let rec = |lsn, term, v: &str| Record { lsn, term, op: put(&format!("k{lsn}"), v) };
        // Queued, nothing waited for: the next batch continues the queue.
        let first = db.queue_replicated(vec![rec(1, 1, "a"), rec(2, 2, "b")]).unwrap().unwrap();
        assert!(
            matches!(db.queue_replicated(vec![rec(3, 1, "c")]), Err(Error::Malformed(_))),
            "term 1 after a queued term 2 is refused"
        );
        let second = db.queue_replicated(vec![rec(3, 2, "c")]).unwrap().unwrap();
        assert!(db.queue_replicated(Vec::new()).unwrap().is_none());
        // Waiting for the second makes both durable and applied.
        assert_eq!(db.wait_queued(second).unwrap(), 3);
        assert_eq!(db.wait_queued(first).unwrap(), 2);
        assert_eq!((db.last_lsn(), db.last_term(), db.key_count()), (3, 2, 3));
    }

    #[test]
    fn a_synced_batch_waits_for_an_applier_and_reads_never_see_it_before() {
        // Goal: wait_synced writes and fsyncs a queued batch but leaves it
        // out of the map; the next wait_queued applies it (and any synced
        // after it) in one go.
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
        let rec = |lsn, v: &str| Record { lsn, term: 1, op: put("k", v) };
        let first = db.queue_replicated(vec![rec(1, "a"), rec(2, "b")]).unwrap().unwrap();
        assert_eq!(db.wait_synced(first).unwrap(), 2);
        assert_eq!(db.wal().last_lsn(), 2, "written");
        assert_eq!((db.last_lsn(), db.get(b"k")), (0, None), "not applied");
        let second = db.queue_replicated(vec![rec(3, "c")]).unwrap().unwrap();
        db.wait_synced(second).unwrap();
        assert_eq!(db.last_lsn(), 0);
        assert_eq!(db.wait_queued(second).unwrap(), 3);
        assert_eq!((db.last_lsn(), db.get(b"k")), (3, Some(b"c".to_vec())));
        assert_eq!(db.wait_queued(first).unwrap(), 2, "already applied");
    }

    #[test]
    fn one_thread_syncing_while_another_applies_loses_and_reorders_nothing() {
        // Goal: a follower's two threads — one queues and fsyncs batches,
        // the other applies each in order — end with the map a plain
        // in-order apply gives, every batch applied once.
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Always).unwrap();
        let batches: Vec<Vec<Record>> = (0..200u64)
            .map(|b| {
                (1..=50u64)
                    .map(|i| {
                        let lsn = b * 50 + i;
                        Record {
                            lsn,
                            term: 1,
                            op: put(&format!("k{}", lsn % 97), &lsn.to_string()),
                        }
                    })
                    .collect()
            })
            .collect();
        let mut expected = Store::new();
        batches.iter().flatten().for_each(|r| expected.apply(r.clone()));
        let (tx, rx) = crossbeam_channel::bounded::<QueuedWrite>(4);
        std::thread::scope(|scope| {
            let applier = scope
                .spawn(|| rx.iter().map(|write| db.wait_queued(write).unwrap()).last().unwrap());
            for batch in batches {
                let write = db.queue_replicated(batch).unwrap().unwrap();
                db.wait_synced(write).unwrap();
                tx.send(write).unwrap();
            }
            drop(tx);
            assert_eq!(applier.join().unwrap(), 10_000);
        });
        assert_eq!(db.last_lsn(), 10_000);
        assert_eq!(db.digest(), (10_000, expected.digest()));
        assert_eq!(db.key_count(), expected.len());
    }

    #[test]
    fn a_second_process_cannot_open_the_same_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert!(Db::open(dir.path(), FsyncPolicy::Never).is_err());
    }

    #[test]
    fn a_full_subscriber_channel_drops_batches_but_keeps_the_subscriber() {
        // Goal: a slow follower costs the leader bounded memory: its channel
        // holds at most FOLLOWER_CHANNEL_BATCHES_MAX batches, later ones are
        // dropped (the sender reads them from the WAL), and it stays subscribed.
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        db.set_leader_term(Some(1));
        let rx = db.subscribe();
        for i in 0..FOLLOWER_CHANNEL_BATCHES_MAX + 100 {
            db.write(put(&i.to_string(), "v")).unwrap();
        }
        assert_eq!(rx.len(), FOLLOWER_CHANNEL_BATCHES_MAX);
        rx.try_iter().for_each(drop);
        db.write(put("after", "v")).unwrap();
        assert_eq!(rx.len(), 1, "still subscribed after overflowing");
    }

    #[test]
    fn subscribers_see_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        db.set_leader_term(Some(1));
        let rx = db.subscribe();
        db.write(put("a", "1")).unwrap();
        db.write(put("b", "2")).unwrap();
        let lsns: Vec<Lsn> =
            rx.try_iter().flat_map(|b| b.iter().map(|r| r.lsn).collect::<Vec<_>>()).collect();
        assert_eq!(lsns, vec![1, 2]);
    }

    #[test]
    fn truncation_removes_records_from_the_log_and_the_map() {
        // Goal: divergence repair leaves the WAL, the map, the digest and
        // the next LSN exactly as if the removed records never existed.
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        db.append_replicated(
            (1..=5).map(|lsn| Record { lsn, term: 1, op: put("k", &lsn.to_string()) }).collect(),
        )
        .unwrap();
        let (_, digest_at_3) = {
            let dir3 = tempfile::tempdir().unwrap();
            let (db3, _) = Db::open(dir3.path(), FsyncPolicy::Never).unwrap();
            db3.append_replicated(
                (1..=3)
                    .map(|lsn| Record { lsn, term: 1, op: put("k", &lsn.to_string()) })
                    .collect(),
            )
            .unwrap();
            db3.digest()
        };
        assert_eq!(db.digest_at(3), Some(digest_at_3));
        assert_eq!(db.truncate_after(3).unwrap(), 2);
        assert_eq!((db.last_lsn(), db.get(b"k")), (3, Some(b"3".to_vec())));
        assert_eq!(db.digest(), (3, digest_at_3));
        assert_eq!(db.digest_at(4), None);
        // The log continues at LSN 4, in a newer term.
        db.append_replicated(vec![Record { lsn: 4, term: 2, op: put("k", "new") }]).unwrap();
        drop(db);
        let (db, recovery) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!((recovery.wal.last_lsn, recovery.wal.last_term), (4, 2));
        assert_eq!(db.get(b"k"), Some(b"new".to_vec()));
    }

    #[test]
    fn a_committed_record_is_never_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        db.append_replicated(
            (1..=5).map(|lsn| Record { lsn, term: 1, op: put("k", "v") }).collect(),
        )
        .unwrap();
        db.advance_commit_lsn(4);
        match db.truncate_after(3) {
            Err(Error::WouldLoseCommitted { truncate_after: 3, commit_lsn: 4 }) => {}
            other => panic!("expected WouldLoseCommitted, got {other:?}"),
        }
        assert_eq!(db.last_lsn(), 5, "nothing removed");
        assert_eq!(db.truncate_after(4).unwrap(), 1, "after the commit LSN is fine");
    }

    #[test]
    fn writes_need_the_leader_gate_and_carry_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert!(matches!(db.write(put("a", "1")), Err(Error::NotLeader { .. })));
        db.set_leader_term(Some(7));
        assert_eq!(db.write(put("a", "1")).unwrap(), (1, 7));
        assert_eq!(db.term_at(1), Some(7));
        // A leader takes no replicated records; terms never go down.
        assert!(db.append_replicated(vec![Record { lsn: 2, term: 7, op: put("b", "2") }]).is_err());
        db.set_leader_term(None);
        let old = Record { lsn: 2, term: 6, op: put("b", "2") };
        assert!(matches!(db.append_replicated(vec![old]), Err(Error::Malformed(_))));
    }
}
