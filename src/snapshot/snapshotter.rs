//! The `snapshot` thread: takes a snapshot when one is due or asked for,
//! then lets compaction delete what it made unnecessary.
//!
//! It wakes up when the write path says enough WAL was written
//! ([`Db::snapshot_pokes`]), when `kv_client snapshot` asks, and once a
//! [`SNAPSHOT_CHECK_INTERVAL_MS`] anyway (followers come and go, and with
//! them what compaction must keep). Snapshots are taken on this thread
//! only, so two never run at once.
//!
//! ## Taking one, step by step
//!
//! 1. Wait (bounded) until the commit LSN reaches the last LSN: a snapshot
//!    holds only committed records, which no divergence repair can ever
//!    remove. A leader whose followers lag, or are gone, keeps its log
//!    until a majority holds it.
//! 2. Freeze the map (`crate::store`): its shards are shared with the
//!    snapshot; writers pause only for that.
//! 3. Write the file ([`crate::snapshot::write`]): `.tmp`, fsync, rename,
//!    fsync the directory. Keep the two newest snapshots.
//! 4. Compact the WAL ([`Db::compact`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::{SNAPSHOT_CHECK_INTERVAL_MS, SNAPSHOT_COMMIT_WAIT_MS};
use crate::logline::{bytes, count};
use crate::snapshot::catalog::SNAPSHOTS_KEPT;
use crate::snapshot::{self, SnapshotMeta};
use crate::Lsn;

/// The commit LSN as the node's role knows it (a leader computes it from
/// its followers' ACKs; a follower has it from its leader).
pub type CommitLsn = Box<dyn Fn() -> Lsn + Send>;

/// What one attempt did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new snapshot was written; compaction then deleted `segments`
    /// segments holding `freed` bytes.
    Written { meta: SnapshotMeta, took_ms: u64, segments: usize, freed: u64 },
    /// The newest snapshot already holds every record: nothing to do.
    Current(SnapshotMeta),
    /// The log is empty: there is nothing to snapshot.
    Empty,
}

/// A handle on the snapshot thread, for requests (`kv_client snapshot`).
#[derive(Clone)]
pub struct Snapshotter {
    requests: Sender<Sender<Result<Outcome>>>,
}

impl Snapshotter {
    /// Start the thread for `db`.
    pub fn spawn(db: Arc<Db>, commit_lsn: CommitLsn) -> Result<Snapshotter> {
        let (requests, asked) = crossbeam_channel::bounded(16);
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                crate::sched::background_thread();
                run(&db, &commit_lsn, &asked)
            })
            .map_err(|e| Error::io("spawning the snapshot thread", e))?;
        Ok(Snapshotter { requests })
    }

    /// Take a snapshot now (unless the newest is current), and wait for it.
    pub fn request(&self) -> Result<Outcome> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .send(reply)
            .map_err(|_| Error::Unexpected("the snapshot thread has stopped".into()))?;
        answer.recv().map_err(|_| Error::Unexpected("the snapshot thread has stopped".into()))?
    }
}

fn run(db: &Db, commit_lsn: &CommitLsn, asked: &Receiver<Sender<Result<Outcome>>>) {
    let pokes = db.snapshot_pokes();
    let interval = Duration::from_millis(SNAPSHOT_CHECK_INTERVAL_MS);
    let mut waiting_logged = false;
    loop {
        let mut reply = None;
        select! {
            recv(asked) -> request => match request {
                Ok(r) => reply = Some(r),
                Err(_) => return,
            },
            recv(pokes) -> _ => {},
            default(interval) => {},
        }
        if let Some(reply) = reply {
            let _ = reply.send(take(db, commit_lsn));
        } else if let Some(why) = db.snapshot_due() {
            match take(db, commit_lsn) {
                Ok(_) => waiting_logged = false,
                Err(Error::Busy(e)) if !waiting_logged => {
                    log::warn!("[snapshot] due ({why}) but {e}; trying again every second");
                    waiting_logged = true;
                }
                Err(Error::Busy(_)) => {}
                Err(e) => log::error!("[snapshot] due ({why}) but failed: {e}"),
            }
        }
        if let Err(e) = db.compact() {
            log::error!("[wal] compaction failed: {e}");
        }
    }
}

/// Take one snapshot (steps 1 to 4 of the module doc).
pub fn take(db: &Db, commit_lsn: &CommitLsn) -> Result<Outcome> {
    let _one_at_a_time = db.snapshot_guard();
    let started = Instant::now();
    let target = db.last_lsn();
    if target == 0 {
        return Ok(Outcome::Empty);
    }
    if let Some(latest) = db.latest_snapshot().filter(|s| s.lsn >= target) {
        return Ok(Outcome::Current(latest));
    }
    // 1. Only committed records go into a snapshot.
    let deadline = started + Duration::from_millis(SNAPSHOT_COMMIT_WAIT_MS);
    while commit_lsn() < target {
        if Instant::now() >= deadline {
            return Err(Error::Busy(format!(
                "LSN {target} is not committed yet (commit LSN {}): a snapshot holds only records \
                 a majority has",
                commit_lsn()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // 2. Freeze; the map may have moved past `target` since: wait for that too.
    let (frozen, pause) = db.freeze();
    while commit_lsn() < frozen.lsn {
        if Instant::now() >= deadline {
            return Err(Error::Busy(format!("LSN {} is not committed yet", frozen.lsn)));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let term = db
        .term_at(frozen.lsn)
        .ok_or_else(|| Error::Unexpected(format!("LSN {} has no term in the log", frozen.lsn)))?;
    // 3. Write it.
    let meta = snapshot::write(db.catalog(), frozen, term)?;
    let took_ms = started.elapsed().as_millis() as u64;
    log::info!(
        "{}",
        snapshot::written_line(&meta, took_ms, pause.as_micros() as u64, db.copy_stats())
    );
    db.snapshot_written(meta.clone());
    for old in db.catalog().keep_newest(SNAPSHOTS_KEPT)? {
        log::info!("[snapshot] removed the older snapshot {}", old.path.display());
    }
    // 4. Compact.
    let (segments, freed) = db.compact()?;
    Ok(Outcome::Written { meta, took_ms, segments, freed })
}

impl Outcome {
    /// The answer `kv_client snapshot` prints.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Written { meta, took_ms, segments, freed } => format!(
                "snapshot at LSN {} (term {}): {} keys, {}, written in {took_ms} ms; compaction \
                 deleted {segments} WAL segment(s) ({})",
                count(meta.lsn),
                meta.term,
                count(meta.keys),
                bytes(meta.bytes),
                bytes(*freed)
            ),
            Outcome::Current(meta) => format!(
                "the snapshot at LSN {} holds every record already; nothing to do",
                count(meta.lsn)
            ),
            Outcome::Empty => "the log is empty; nothing to snapshot".into(),
        }
    }
}
