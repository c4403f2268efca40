//! Snapshot install (full resync): a follower whose next record the
//! leader's log no longer holds receives the leader's snapshot, then the
//! records after it (Raft's InstallSnapshot; Redis's full resync;
//! PostgreSQL's base backup). Leader's side first, then the follower's.
//!
//! ```text
//! follower                                                  leader
//!    | --- FOLLOWER_HELLO [last_lsn 120] ------------------------> |
//!    | <-- LEADER_HELLO ------------------------------------------- |
//!    |                          probe: LSN 120 is compacted away -> |  (its log starts at 5,000,001)
//!    | <-- INSTALL_SNAPSHOT [lsn 5,000,000, total, offset 0, no data]  offer
//!    | --- INSTALL_SNAPSHOT_ACK [received 0] -------------------> |  (or the bytes of a .part it kept)
//!    | <-- INSTALL_SNAPSHOT [offset 0, 1 MiB of the file] ------- |
//!    | --- INSTALL_SNAPSHOT_ACK [received 1 MiB] ---------------> |
//!    |     ... one piece, one ACK ...                               |
//!    | <-- INSTALL_SNAPSHOT [the last piece] -------------------- |
//!    |     fsync, verify (load into a new map), rename: installed    |
//!    | --- INSTALL_SNAPSHOT_ACK [received = total] -------------> |
//!    | <-- APPEND_ENTRIES [prev (5,000,000, term)] + records ... |  the tail, from the WAL, then live
//! ```
//!
//! - **Bounded memory.** The leader reads the file one piece
//!   ([`INSTALL_SNAPSHOT_DATA_BYTES_MAX`]) at a time and waits for its ACK
//!   before the next; the follower writes each piece to its `.part` file as
//!   it comes ([`crate::snapshot::incoming`]). Neither holds the file.
//! - **Checksummed twice.** Each piece carries a CRC of its bytes (a piece
//!   damaged on the way is refused before it is written), and the file is
//!   the leader's snapshot as it is on disk, with its own chunk checksums,
//!   key count and digest, all verified before the follower switches.
//! - **Atomic switch; resume.** The follower switches only when the whole
//!   file is in and verified; until then its old state is untouched. A cut
//!   link leaves a `.part`, and the next offer of the same snapshot resumes
//!   from its end.
//! - **Terms.** Every message carries the leader's term and is fenced like
//!   AppendEntries. After the install the follower's log ends at the
//!   snapshot's `(lsn, term)`, which is what the log-matching check of the
//!   AppendEntries that follow compares with.
//! - **Limits.** The link is a replication link like any other: it passed
//!   authentication and TLS when it was opened, holds one of
//!   `--max-catch-ups` for the whole transfer, and the leader still reads
//!   only ACK-sized frames from the follower.

use std::fs::File;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::db::{Db, Resync};
use crate::error::{Error, Result};
use crate::limits::{
    INSTALL_SNAPSHOT_DATA_BYTES_MAX, REPLICATION_TIMEOUT_MS, SNAPSHOT_INSTALL_TIMEOUT_MS,
};
use crate::logline::{bytes, count};
use crate::protocol::{InstallSnapshot, Message};
use crate::replication::hub::{Hub, LinkState, Session};
use crate::snapshot::incoming::Incoming;
use crate::snapshot::progress::Progress;
use crate::snapshot::SnapshotMeta;
use crate::tls::Conn;
use crate::{Lsn, Term};

// ---- the leader's side ----------------------------------------------------------------

/// Who the snapshot goes to, and what the leader knows of the link.
pub struct SnapshotLink<'a> {
    pub address: SocketAddr,
    pub db: &'a Db,
    pub hub: &'a Hub,
    pub session: Session,
    pub term: Term,
}

/// Send our newest snapshot to a follower that asked for records after
/// `asked`, which our log no longer holds; `target` is our last LSN. Called
/// by the follower's sender instead of the WAL catch-up.
///
/// 1. Pick the newest snapshot, keep the WAL after it for this follower,
///    and say what is about to happen (the catch-up line).
/// 2. Offer it; the follower answers with the bytes it already holds.
/// 3. Send the rest piece by piece, each answered by an ACK; one progress
///    line a second.
/// 4. The ACK of the last piece comes once the follower has verified and
///    installed it. Returns the snapshot: the follower's log ends at its LSN.
pub fn send_snapshot(
    link: &SnapshotLink<'_>,
    stream: &mut Conn,
    reader: &mut BufReader<Conn>,
    (asked, target): (Lsn, Lsn),
) -> Result<SnapshotMeta> {
    let SnapshotLink { address, db, hub, session, term } = *link;
    // 1. The newest snapshot; compaction keeps what follows it for us.
    let Some(meta) = db.latest_snapshot() else {
        return Err(Error::Unexpected(format!(
            "LSN {} is compacted away but this node has no snapshot",
            asked + 1
        )));
    };
    let file = File::open(&meta.path)
        .map_err(|e| Error::io(format!("opening {}", meta.path.display()), e))?;
    let total = file.metadata().map_err(|e| Error::io("reading the snapshot's size", e))?.len();
    db.note_follower(address, meta.lsn);
    let through = target.max(db.last_lsn());
    let then = if through > meta.lsn {
        format!("LSN {}..{}", count(meta.lsn + 1), count(through))
    } else {
        "the live stream".into()
    };
    log::info!(
        "[catch-up] follower {address} asks for records after LSN {}; our log starts at LSN {} \
         (snapshot at {}); sending snapshot ({} keys, {}), then {then}",
        count(asked),
        count(db.wal().first_lsn()),
        count(meta.lsn),
        count(meta.keys),
        bytes(total)
    );
    // 2. The offer.
    let offer = piece(term, &meta, total, 0, Vec::new());
    send(stream, &offer, address)?;
    let mut sent = read_ack(reader, link, meta.lsn, None)?;
    if sent > total {
        return Err(Error::Link(format!(
            "protocol error: follower {address} holds {sent} bytes of a {total}-byte snapshot"
        )));
    }
    if sent > 0 {
        log::info!(
            "[catch-up] follower {address} already holds {} of the snapshot; resuming there",
            bytes(sent)
        );
    }
    // 3. The pieces.
    let started = Instant::now();
    let what =
        format!("[catch-up] sending snapshot at LSN {} to follower {address}", count(meta.lsn));
    let mut progress = Progress::new(what, total, sent);
    hub.set_snapshot_progress(session, sent, total);
    while sent < total {
        let len = (total - sent).min(u64::from(INSTALL_SNAPSHOT_DATA_BYTES_MAX)) as usize;
        let mut data = vec![0u8; len];
        file.read_exact_at(&mut data, sent)
            .map_err(|e| Error::io(format!("reading {}", meta.path.display()), e))?;
        send(stream, &piece(term, &meta, total, sent, data), address)?;
        let last = sent + len as u64 == total;
        // 4. The last ACK waits for the follower's verification and switch.
        let wait = last.then_some(Duration::from_millis(SNAPSHOT_INSTALL_TIMEOUT_MS));
        let held = read_ack(reader, link, meta.lsn, wait)?;
        if held != sent + len as u64 {
            return Err(Error::Link(format!(
                "protocol error: follower {address} acknowledged {held} bytes of the snapshot after \
                 piece {sent}..{}",
                sent + len as u64
            )));
        }
        sent = held;
        hub.set_snapshot_progress(session, sent, total);
        progress.note(sent);
    }
    log::info!(
        "[catch-up] follower {address} installed the snapshot at LSN {}: {} in {} ms ({}/s)",
        count(meta.lsn),
        bytes(total),
        started.elapsed().as_millis(),
        bytes(progress.rate(total))
    );
    hub.set_state(session, LinkState::CatchingUp);
    Ok(meta)
}

/// One INSTALL_SNAPSHOT message.
fn piece(term: Term, meta: &SnapshotMeta, total: u64, offset: u64, data: Vec<u8>) -> Message {
    Message::InstallSnapshot(InstallSnapshot {
        term,
        snapshot_lsn: meta.lsn,
        snapshot_term: meta.term,
        total_bytes: total,
        offset,
        data,
    })
}

fn send(stream: &mut Conn, message: &Message, address: SocketAddr) -> Result<()> {
    let mut frame = Vec::new();
    message.encode_frame(&mut frame);
    stream
        .write_all(&frame)
        .map_err(|e| Error::io(format!("sending INSTALL_SNAPSHOT to {address}"), e))
}

/// Read the follower's INSTALL_SNAPSHOT_ACK for the snapshot at `lsn`
/// (waiting `wait` instead of the usual timeout, if given); returns the
/// bytes it holds. A newer term deposes us; an ERROR ends the link.
fn read_ack(
    reader: &mut BufReader<Conn>,
    link: &SnapshotLink<'_>,
    lsn: Lsn,
    wait: Option<Duration>,
) -> Result<u64> {
    if let Some(wait) = wait {
        let _ = reader.get_ref().socket().set_read_timeout(Some(wait));
    }
    let reply = super::leader::read_reply(reader);
    if wait.is_some() {
        let timeout = Duration::from_millis(REPLICATION_TIMEOUT_MS);
        let _ = reader.get_ref().socket().set_read_timeout(Some(timeout));
    }
    match reply? {
        Message::InstallSnapshotAck { term, .. } if term > link.term => {
            Err(Error::SteppedDown { term: link.term, newer: term })
        }
        Message::InstallSnapshotAck { snapshot_lsn, received_bytes, .. } if snapshot_lsn == lsn => {
            Ok(received_bytes)
        }
        Message::Error { message, .. } => Err(Error::Link(format!("follower reported: {message}"))),
        other => Err(Error::Link(format!(
            "protocol error: {} answering INSTALL_SNAPSHOT of LSN {lsn}",
            other.name()
        ))),
    }
}

// ---- the follower's side --------------------------------------------------------------

/// The follower's half of one transfer: the `.part` file and the progress.
pub struct Receiver {
    incoming: Incoming,
    progress: Option<Progress>,
    started: Instant,
}

/// What a received INSTALL_SNAPSHOT led to.
pub enum Received {
    /// Part of the snapshot is here; the ACK to send.
    Piece(Message),
    /// The whole snapshot is verified and in place as a file; the follower
    /// switches to `store` ([`Db::install_snapshot`]) and then sends the ACK.
    Whole { store: crate::store::Store, meta: SnapshotMeta, ack: Message },
}

impl Receiver {
    pub fn new(db: &Db) -> Receiver {
        Receiver {
            incoming: Incoming::new(db.catalog().clone()),
            progress: None,
            started: Instant::now(),
        }
    }

    /// Take one INSTALL_SNAPSHOT from `leader` (its term already checked):
    /// an offer opens (or resumes) the `.part` file; a piece is appended;
    /// the last piece is verified and renamed into place.
    /// `still_alive` is called while a long verification runs (the leader
    /// is there; only this node is busy).
    pub fn receive(
        &mut self,
        is: InstallSnapshot,
        db: &Db,
        leader: SocketAddr,
        still_alive: impl FnMut(u64),
    ) -> Result<Received> {
        let ack = |received_bytes| Message::InstallSnapshotAck {
            term: is.term,
            snapshot_lsn: is.snapshot_lsn,
            received_bytes,
        };
        if is.offset == 0 && is.data.is_empty() {
            let held = self.incoming.offer(is.snapshot_lsn, is.snapshot_term, is.total_bytes)?;
            let resume = if held > 0 {
                format!("; resuming after the {} already here", bytes(held))
            } else {
                String::new()
            };
            log::info!(
                "[catch-up] leader {leader} sends its snapshot at LSN {} (term {}, {}): our log \
                 is behind its oldest record{resume}",
                count(is.snapshot_lsn),
                is.snapshot_term,
                bytes(is.total_bytes)
            );
            let what = format!(
                "[catch-up] receiving snapshot at LSN {} from leader {leader}",
                count(is.snapshot_lsn)
            );
            self.progress = Some(Progress::new(what, is.total_bytes, held));
            self.started = Instant::now();
        } else {
            let held = self.incoming.piece(is.snapshot_lsn, is.offset, &is.data)?;
            if let Some(p) = &mut self.progress {
                p.note(held);
            }
        }
        let held = self.incoming.progress().map_or(0, |(_, held, _)| held);
        self.report(db, held);
        // Not whole yet: ACK what is here. (A .part left whole by a crash
        // before its rename is finished at once, on the offer.)
        if !self.incoming.is_whole() {
            return Ok(Received::Piece(ack(held)));
        }
        let (store, meta) = match self.incoming.finish(still_alive) {
            Ok(installed) => installed,
            Err(e) => {
                db.set_resync(None);
                log::error!("[catch-up] the snapshot from leader {leader} is not usable: {e}; it is deleted, and the next offer starts over");
                return Err(e);
            }
        };
        log::info!(
            "[catch-up] received the snapshot at LSN {} (term {}) from leader {leader}: {} keys, {} \
             in {} ms; checksums, key count and digest verified",
            count(meta.lsn),
            meta.term,
            count(meta.keys),
            bytes(meta.bytes),
            self.started.elapsed().as_millis()
        );
        Ok(Received::Whole { store, meta, ack: ack(is.total_bytes) })
    }

    /// Show the transfer in `status`.
    fn report(&self, db: &Db, held: u64) {
        let Some((lsn, _, total)) = self.incoming.progress() else { return };
        let rate = self.progress.as_ref().map_or(0, |p| p.rate(held));
        db.set_resync(Some(Resync {
            snapshot_lsn: lsn,
            received_bytes: held,
            total_bytes: total,
            bytes_per_sec: rate,
        }));
    }
}
