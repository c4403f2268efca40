//! The leader's side of one follower: probe, catch-up, then the live
//! stream (lessons 3 and 5; log matching: `docs/FAILOVER.md`).
//!
//! A follower's connection starts like any client's; when its first message
//! is FOLLOWER_HELLO the connection thread calls [`serve_follower`] and
//! becomes that follower's **sender**.
//!
//! ## Probe, then replicate (etcd's `StateProbe` / `StateReplicate`)
//!
//! HELLO says where the follower's log ends, `(last_lsn, last_term)`; that
//! is a claim, not a fact the leader may count on. So the sender first
//! **probes**: it sends an empty AppendEntries whose `(prev_lsn,
//! prev_term)` is its best guess of the last record both logs share
//! ([`log_match::first_probe`]), and waits for the answer. A refusal says
//! where the follower stands, and the sender jumps back past a whole term
//! ([`log_match::after_refusal`]); an ACK fixes the common point. Only then
//! does it spawn an **ack reader** on a clone of the socket and stream
//! records from the common point on, without waiting for ACKs.
//!
//! ## What an ACK may say
//!
//! The sender publishes, before each write, the last LSN it has put on
//! this link (`sent_through`). An ACK beyond it claims records the
//! follower was never sent: that is a protocol error, the link is dropped
//! and nothing is counted. An ACK in a newer term means this leader was
//! deposed: it steps down at once.
//!
//! ## One cursor, two sources
//!
//! The sender keeps one number, `next_lsn`: the next record the follower
//! needs. Records come from two places:
//!
//! - the **channel**, fed by [`crate::db::Db`] with every batch it writes;
//! - the **WAL**, through `records_after` and its memory-mapped index.
//!
//! The channel is subscribed to *before* the catch-up reads the WAL, so
//! every record is in at least one of the two. Then one rule handles every
//! race: a record below `next_lsn` is a duplicate and skipped; a record
//! above it means a gap, and the gap is read from the WAL first. That rule
//! covers the hand-over from catch-up to live streaming, and a channel that
//! filled up because the follower is slow (its batches were dropped; the log
//! on disk is the buffer, as in PostgreSQL, so memory stays bounded). No
//! record is lost, sent twice or reordered, however the two sources race.
//!
//! ## Observers (`kv_client watch`)
//!
//! A connection whose first message is OBSERVER_HELLO gets the same stream
//! from [`serve_observer`]: LEADER_HELLO, the records from the LSN it asked
//! for, then every new batch and the heartbeats. It skips the probe (it has
//! no log to match) and its row in the hub is an observer's, which nothing
//! counts: not the majority, not a write concern, not check-quorum. Its
//! ACKs only move its own row; one that claims a newer term is a protocol
//! error, never a reason to step down — an observer cannot depose a leader.
//!
//! ## The corruption check (etcd's `corrupt-check`)
//!
//! Every few seconds a follower's ACK carries `(digest_lsn, digest)`: its
//! map's digest right after applying `digest_lsn`. The ack reader compares
//! it with the leader's own digest at that LSN (from [`Db::digest_at`]); a
//! mismatch is logged once as an error, flagged in `status`, and the sender
//! tells the follower with an ERROR (code 12), after which it refuses reads.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::admission::Permit;
use crate::cluster::ClusterId;
use crate::db::{Batch, Db};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{
    APPEND_ENTRIES_BYTES_MAX, APPEND_ENTRIES_RECORDS_MAX, FOLLOWER_FRAME_BYTES_MAX,
    FRAME_BYTES_MAX, PROBE_ROUNDS_MAX, REPLICATION_TIMEOUT_MS,
};
use crate::progress::{Progress, Unit};
use crate::protocol::frame::{is_timeout, read_frame, write_message, FRAME_HEADER_BYTES};
use crate::protocol::message::{AppendEntriesEncoder, AppendEntriesHeader};
use crate::protocol::Message;
use crate::replication::hub::{Hub, LinkState, Session};
use crate::replication::install::{self, SnapshotLink};
use crate::replication::log_match::{self, Refusal};
use crate::replication::replica::{Replica, RoleView};
use crate::replication::trace::{Direction, LinkTrace};
use crate::replication::PeerKind;
use crate::replication::RateLimitedLine;
use crate::stages::Stage;
use crate::tls::Conn;
use crate::{Lsn, Term};

/// What a follower said in its FOLLOWER_HELLO.
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    pub last_lsn: Lsn,
    pub last_term: Term,
    pub term: Term,
    pub listen_port: Option<u16>,
    pub cluster_id: Option<ClusterId>,
}

/// Serve a follower that said FOLLOWER_HELLO on `stream`.
///
/// Called on the connection's own thread; returns when the link ends.
/// `catch_up_slot` is held through steps 1 to 5's catch-up and given back
/// when the follower streams live (`--max-catch-ups`).
/// 1. Refuse if we are not the leader, if the follower is in a newer term
///    (then we were deposed: step down), or if it belongs to another cluster.
/// 2. Register the session and subscribe to new batches.
/// 3. Answer LEADER_HELLO: cluster id, term, last LSN, members.
/// 4. Probe for the last record both logs share.
/// 5. Send everything after it from the WAL (catch-up), then stream new
///    batches, with heartbeats when idle, until the link breaks.
pub fn serve_follower(
    mut stream: Conn,
    peer: SocketAddr,
    hello: Hello,
    replica: &Replica,
    catch_up_slot: Permit,
) {
    let address = SocketAddr::new(peer.ip(), hello.listen_port.unwrap_or(peer.port()));
    let db = replica.db();
    let trace = LinkTrace::new(PeerKind::Follower, address).map(Arc::new);
    if let Some(trace) = &trace {
        let Hello { last_lsn, last_term, term, listen_port, cluster_id } = hello;
        let message = Message::FollowerHello { last_lsn, last_term, term, listen_port, cluster_id };
        trace.note_message(Direction::Received, &message);
    }
    let refuse = |stream: &mut Conn, err: &Error| send_error(stream, trace.as_deref(), err);

    // 1. Only a leader serves followers; a newer term deposes it.
    let (hub, term) = match replica.view() {
        RoleView::Leader { hub, term } => (hub, term),
        RoleView::Follower { .. } => {
            let err = replica.not_leader();
            log::warn!("[replication] refusing follower {address}: {err}");
            refuse(&mut stream, &err);
            return;
        }
    };
    // The cluster first: a stranger's term must not move ours.
    let Some(cluster_id) = db.cluster_id() else {
        refuse(&mut stream, &Error::Unexpected("this leader has no cluster id yet".into()));
        return;
    };
    if let Some(theirs) = hello.cluster_id.filter(|id| *id != cluster_id) {
        let err = Error::OtherCluster {
            ours: cluster_id.to_string(),
            theirs: theirs.to_string(),
            peer: format!("follower {address}"),
        };
        log::error!("[replication] refusing follower {address}: {err}");
        refuse(&mut stream, &err);
        return;
    }
    if hello.term > term && hello.cluster_id.is_none() {
        let err = Error::Malformed(format!(
            "a node without a cluster id cannot be in term {} (this leader is in term {term})",
            hello.term
        ));
        log::error!("[replication] refusing follower {address}: {err}");
        refuse(&mut stream, &err);
        return;
    }
    if hello.term > term {
        let err = Error::SteppedDown { term, newer: hello.term };
        let from = format!("follower {address}");
        if let Err(e) = replica.observe_term(hello.term, None, &from) {
            log::error!("[failover] cannot store term {}: {e}", hello.term);
        }
        refuse(&mut stream, &err);
        return;
    }

    // 2. Subscribe before reading the WAL, so no batch falls in between.
    let session = hub.attach(address, hello.term, stream.socket().try_clone().ok());
    let batches = db.subscribe();
    let target = db.last_lsn();
    let timeout = Some(Duration::from_millis(REPLICATION_TIMEOUT_MS));
    let _ = stream.socket().set_write_timeout(timeout);
    let _ = stream.socket().set_read_timeout(timeout);
    let kind = PeerKind::Follower;
    let link = Link { address, kind, db, hub: &hub, replica, session, term, trace };
    let outcome = link.run(stream, (cluster_id, &hello, target), &batches, catch_up_slot);
    if hub.is_current(session) {
        hub.detach(session);
        match outcome {
            Ok(()) => log::warn!("[replication] follower {address} disconnected"),
            Err(e) => log::warn!("[replication] follower {address} disconnected: {e}"),
        }
    }
}

/// Serve an observer that said OBSERVER_HELLO on `stream` (`kv_client
/// watch`): the replication stream from `from_lsn` on (0: from now on),
/// for a connection that is no member and counts for nothing.
///
/// Called on the connection's own thread; returns when the link ends.
/// 1. Refuse if we are not the leader, or if `--max-observers` observers
///    are attached already (ERROR code 7).
/// 2. Give it an observer's row in the hub and subscribe to new batches.
/// 3. Answer LEADER_HELLO: cluster id, term, last LSN, members.
/// 4. Send the records from `from_lsn` up to our last LSN from the WAL (no
///    probe: an observer has no log to match), then stream new batches,
///    with heartbeats when idle, until the link breaks.
pub fn serve_observer(mut stream: Conn, peer: SocketAddr, from_lsn: Lsn, replica: &Replica) {
    let db = replica.db();
    let trace = LinkTrace::new(PeerKind::Observer, peer).map(Arc::new);
    if let Some(trace) = &trace {
        trace.note_message(Direction::Received, &Message::ObserverHello { from_lsn });
    }
    let refuse = |stream: &mut Conn, err: &Error| send_error(stream, trace.as_deref(), err);

    // 1. Only a leader has a stream to watch; only so many watch at once.
    let (hub, term) = match replica.view() {
        RoleView::Leader { hub, term } => (hub, term),
        RoleView::Follower { .. } => {
            refuse(&mut stream, &replica.not_leader());
            return;
        }
    };
    let Some(cluster_id) = db.cluster_id() else {
        refuse(&mut stream, &Error::Unexpected("this leader has no cluster id yet".into()));
        return;
    };
    let attached = stream
        .socket()
        .try_clone()
        .map_err(|e| Error::io("cloning observer socket", e))
        .and_then(|handle| hub.attach_observer(peer, handle));
    let session = match attached {
        Ok(session) => session,
        Err(e) => {
            if let Error::TooManyObservers { .. } = e {
                crate::metrics::global().refused("max_observers");
            }
            log::warn!("[observer] refusing {peer}: {e}");
            refuse(&mut stream, &e);
            return;
        }
    };

    // 2. Subscribe before reading the WAL, so no batch falls in between.
    let batches = db.subscribe();
    let target = db.last_lsn();
    // An observer cannot be sent a snapshot: records older than our log
    // (compacted into the snapshot) are skipped, and it is told so.
    let oldest = db.wal().first_lsn();
    let first = if from_lsn == 0 || from_lsn > target { target + 1 } else { from_lsn.max(oldest) };
    if from_lsn != 0 && from_lsn < oldest && from_lsn <= target {
        log::info!(
            "[observer] {peer} asks for records from LSN {from_lsn}; our log starts at LSN \
             {oldest} (older ones are only in the snapshot), so it gets LSN {oldest} on"
        );
    }
    log::info!(
        "[observer] {peer} attached ({} watching): sending LSN {first}..{target} from the WAL \
         ({} record(s)), then the live stream; it counts toward no majority",
        hub.observer_count(),
        (target + 1).saturating_sub(first)
    );
    let timeout = Some(Duration::from_millis(REPLICATION_TIMEOUT_MS));
    let _ = stream.socket().set_write_timeout(timeout);
    let _ = stream.socket().set_read_timeout(timeout);
    let kind = PeerKind::Observer;
    let link = Link { address: peer, kind, db, hub: &hub, replica, session, term, trace };
    let outcome = link.observe(stream, cluster_id, first - 1, target, &batches);
    if hub.is_current(session) {
        hub.detach(session);
        match outcome {
            Ok(()) => log::info!("[observer] {peer} detached"),
            Err(e) => log::info!("[observer] {peer} detached: {e}"),
        }
    }
}

/// Send an ERROR for `err` (best effort) before closing a link, and trace it.
fn send_error(stream: &mut Conn, trace: Option<&LinkTrace>, err: &Error) {
    let message = Message::error(err);
    if let Some(trace) = trace {
        trace.note_message(Direction::Sent, &message);
    }
    let _ = write_message(stream, &message);
}

/// One follower's (or observer's) link, for the steps after registration.
struct Link<'a> {
    address: SocketAddr,
    kind: PeerKind,
    db: &'a Arc<Db>,
    hub: &'a Arc<Hub>,
    replica: &'a Replica,
    session: Session,
    term: Term,
    /// `--trace-replication`: the link's trace, shared with its ACK reader.
    trace: Option<Arc<LinkTrace>>,
}

impl Link<'_> {
    fn run(
        &self,
        mut stream: Conn,
        (cluster_id, hello, target): (ClusterId, &Hello, Lsn),
        batches: &Receiver<Batch>,
        catch_up_slot: Permit,
    ) -> Result<()> {
        let (address, term) = (self.address, self.term);
        // 3. Our half of the handshake.
        self.send_leader_hello(&mut stream, cluster_id, target)?;
        let reader = stream.try_clone().map_err(|e| Error::io("cloning follower socket", e))?;
        let mut reader = BufReader::new(reader);

        // 4. Probe; a follower behind our compacted log gets the snapshot.
        let matched = match self.probe(&mut stream, &mut reader, hello)? {
            Probe::Matched(matched) => {
                self.log_catch_up(hello, matched, target);
                matched
            }
            Probe::Compacted => {
                let link = SnapshotLink {
                    address,
                    db: self.db,
                    hub: self.hub,
                    session: self.session,
                    term,
                };
                let asked = (hello.last_lsn, target);
                match install::send_snapshot(&link, &mut stream, &mut reader, asked) {
                    Ok(snapshot) => snapshot.lsn,
                    Err(e @ Error::SteppedDown { newer, .. }) => {
                        self.deposed_by(newer)?;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.hub.catching_up(self.session, target);
        self.hub.record_ack(self.session, matched, hello.term);
        self.db.note_follower(address, matched);

        // 5. Stream, with ACKs read on their own thread.
        self.stream_after(stream, reader, (matched, target), batches, Some(catch_up_slot))
    }

    /// An observer's link: LEADER_HELLO, then the stream after `matched`
    /// (the LSN before the first one it asked for), without a probe.
    fn observe(
        &self,
        mut stream: Conn,
        cluster_id: ClusterId,
        matched: Lsn,
        target: Lsn,
        batches: &Receiver<Batch>,
    ) -> Result<()> {
        self.send_leader_hello(&mut stream, cluster_id, target)?;
        let reader = stream.try_clone().map_err(|e| Error::io("cloning observer socket", e))?;
        self.hub.catching_up(self.session, target);
        self.stream_after(stream, BufReader::new(reader), (matched, target), batches, None)
    }

    fn send_leader_hello(
        &self,
        stream: &mut Conn,
        cluster_id: ClusterId,
        target: Lsn,
    ) -> Result<()> {
        let members = self.replica.members();
        let keys = self.db.key_count() as u64;
        let hello =
            Message::LeaderHello { cluster_id, term: self.term, last_lsn: target, keys, members };
        if let Some(trace) = &self.trace {
            trace.note_message(Direction::Sent, &hello);
        }
        write_message(stream, &hello)
    }

    /// Catch-up from the WAL after `matched` up to `target`, then the live
    /// stream, with the ACKs read on their own thread; until the link ends.
    /// A follower's catch-up slot (`--max-catch-ups`) is given back once
    /// it has caught up; an observer holds none.
    fn stream_after(
        &self,
        stream: Conn,
        reader: BufReader<Conn>,
        (matched, target): (Lsn, Lsn),
        batches: &Receiver<Batch>,
        catch_up_slot: Option<Permit>,
    ) -> Result<()> {
        crate::metrics::global().catch_up(&self.kind.to_string());
        let sent_through = Arc::new(AtomicU64::new(matched));
        let closed = Arc::new(AtomicBool::new(false));
        self.spawn_ack_reader(reader, &sent_through, &closed)?;
        let mut sender = Sender::new(
            stream,
            (self.address, self.db, self.hub),
            (self.session, self.term),
            matched + 1,
            sent_through,
        );
        sender.kind = self.kind;
        sender.trace = self.trace.clone();
        let caught_up = sender.catch_up(target);
        drop(catch_up_slot);
        let outcome = caught_up.and_then(|()| sender.stream_live(batches, &closed));
        let _ = sender.stream.shutdown(Shutdown::Both);
        outcome
    }

    /// Lesson 5's line: what the follower asked for and what it gets.
    fn log_catch_up(&self, hello: &Hello, matched: Lsn, target: Lsn) {
        let address = self.address;
        if matched < hello.last_lsn {
            log::warn!(
                "[catch-up] follower {address}'s log diverges from ours after LSN {matched}: it \
                 holds LSN {}..{} (up to term {}) that we do not; it will truncate them",
                matched + 1,
                hello.last_lsn,
                hello.last_term
            );
        }
        let agreed = if matched == hello.last_lsn {
            String::new()
        } else {
            format!("our logs agree up to LSN {matched}, so ")
        };
        log::info!(
            "[catch-up] follower {address} requests records after LSN {}; {agreed}sending {} \
             record(s) (leader last LSN {target}, term {})",
            hello.last_lsn,
            target.saturating_sub(matched),
            self.term
        );
    }

    /// Step 4: find the last LSN both logs share. Each probe is an empty
    /// AppendEntries; the follower ACKs it or refuses with a hint. If the
    /// point to probe is older than our log (compacted into our snapshot),
    /// the follower needs the snapshot.
    fn probe(
        &self,
        stream: &mut Conn,
        reader: &mut BufReader<Conn>,
        hello: &Hello,
    ) -> Result<Probe> {
        let history = self.db.term_history();
        let mut prev = log_match::first_probe(&history, hello.last_lsn, hello.last_term);
        for _ in 0..PROBE_ROUNDS_MAX {
            let prev_term = match history.term_at(prev) {
                Some(term) => term,
                None if prev < history.known_from() => return Ok(Probe::Compacted),
                None => {
                    return Err(Error::Unexpected(format!("probe at LSN {prev} beyond our log")))
                }
            };
            let header = AppendEntriesHeader {
                term: self.term,
                prev_lsn: prev,
                prev_term,
                commit_lsn: self.hub.commit_lsn(self.db),
                leader_last_lsn: self.db.last_lsn(),
            };
            let mut probe = AppendEntriesEncoder::new(&header);
            let frame = probe.finish();
            if let Some(trace) = &self.trace {
                trace.note(Direction::Sent, &frame[FRAME_HEADER_BYTES..]);
            }
            stream
                .write_all(frame)
                .map_err(|e| Error::io(format!("probing {}", self.address), e))?;
            match read_reply(reader, self.trace.as_deref())? {
                Message::AppendEntriesAck { term, .. }
                | Message::AppendEntriesRefuse { term, .. }
                    if term > self.term =>
                {
                    self.deposed_by(term)?;
                    return Err(Error::SteppedDown { term: self.term, newer: term });
                }
                Message::AppendEntriesAck { last_lsn, term, .. }
                    if last_lsn == prev && term == self.term =>
                {
                    return Ok(Probe::Matched(prev))
                }
                Message::AppendEntriesAck { last_lsn, term, .. } => {
                    return Err(Error::Link(format!(
                        "protocol error: ACK of LSN {last_lsn} in term {term} for a probe at LSN \
                         {prev} in term {}",
                        self.term
                    )))
                }
                Message::AppendEntriesRefuse { last_lsn, conflict_lsn, conflict_term, .. } => {
                    let refusal = Refusal { last_lsn, conflict_lsn, conflict_term };
                    prev = log_match::after_refusal(&history, prev, &refusal).ok_or_else(|| {
                        Error::Link("protocol error: follower refused a probe at LSN 0".into())
                    })?;
                    log::debug!(
                        "[catch-up] follower {} refused: {refusal:?}; probing at LSN {prev}",
                        self.address
                    );
                }
                Message::Error { message, .. } => {
                    return Err(Error::Link(format!("follower reported: {message}")))
                }
                other => {
                    return Err(Error::Unexpected(format!("{} answering a probe", other.name())))
                }
            }
        }
        Err(Error::Link(format!("no common point after {PROBE_ROUNDS_MAX} probes")))
    }

    /// A follower told us of a newer term: store it and step down.
    fn deposed_by(&self, term: Term) -> Result<bool> {
        self.replica.observe_term(term, None, &format!("follower {}", self.address))
    }

    /// Start the thread that reads this follower's ACKs into the hub. It
    /// closes the link if the follower is silent for [`REPLICATION_TIMEOUT_MS`].
    fn spawn_ack_reader(
        &self,
        mut reader: BufReader<Conn>,
        sent_through: &Arc<AtomicU64>,
        closed: &Arc<AtomicBool>,
    ) -> Result<()> {
        let acks = AckReader {
            address: self.address,
            kind: self.kind,
            trace: self.trace.clone(),
            session: self.session,
            term: self.term,
            hub: Arc::clone(self.hub),
            db: Arc::clone(self.db),
            sent_through: Arc::clone(sent_through),
            measured_from: self.db.last_lsn(),
        };
        let replica = self.replica.self_handle()?;
        let closed = Arc::clone(closed);
        std::thread::Builder::new()
            .name(format!("acks-{}", self.address))
            .spawn(move || {
                crate::sched::request_thread();
                let why = acks.read(&mut reader, &replica);
                if acks.hub.is_current(acks.session) {
                    log::warn!(
                        "[replication] {} {}: {why}; closing the link",
                        acks.kind,
                        acks.address
                    );
                }
                closed.store(true, Ordering::Release);
                let _ = reader.get_ref().shutdown(Shutdown::Both);
            })
            .map(|_| ())
            .map_err(|e| Error::io("spawning ack reader", e))
    }
}

/// What the probe found.
enum Probe {
    /// Both logs hold this LSN with the same term: catch up from the WAL.
    Matched(Lsn),
    /// The follower's log is behind our oldest record (what it holds, we
    /// compacted into our snapshot): it needs the snapshot.
    Compacted,
}

/// Read one reply during the probe (or a snapshot install), turning
/// silence and EOF into errors.
pub(super) fn read_reply(
    reader: &mut BufReader<Conn>,
    trace: Option<&LinkTrace>,
) -> Result<Message> {
    match read_frame(reader, FOLLOWER_FRAME_BYTES_MAX) {
        Ok(Some(frame)) => {
            if let Some(trace) = trace {
                trace.note(Direction::Received, &frame);
            }
            Message::decode(&frame)
        }
        Ok(None) => Err(Error::Link("connection closed during the probe".into())),
        Err(e) if is_timeout(&e) => {
            Err(Error::Link(format!("no answer to a probe for {REPLICATION_TIMEOUT_MS} ms")))
        }
        Err(e) => Err(e),
    }
}

/// The ack reader's state: what it checks every ACK against.
struct AckReader {
    address: SocketAddr,
    kind: PeerKind,
    trace: Option<Arc<LinkTrace>>,
    session: Session,
    term: Term,
    hub: Arc<Hub>,
    db: Arc<Db>,
    sent_through: Arc<AtomicU64>,
    /// Batches up to here were written before the link existed: their `ack`
    /// time would measure the catch-up, not the stream ([`crate::stages`]).
    measured_from: Lsn,
}

impl AckReader {
    /// Read ACKs until the link fails; return why it ended.
    fn read(&self, reader: &mut BufReader<Conn>, replica: &Replica) -> String {
        let mut measured = self.measured_from;
        loop {
            let frame = match read_frame(reader, FOLLOWER_FRAME_BYTES_MAX) {
                Ok(Some(frame)) => frame,
                Ok(None) => return "connection closed".into(),
                Err(e) if is_timeout(&e) => {
                    return format!("no ACK for {REPLICATION_TIMEOUT_MS} ms (silent peer)")
                }
                Err(e) => return e.to_string(),
            };
            if let Some(trace) = &self.trace {
                trace.note(Direction::Received, &frame);
            }
            let observer = self.kind == PeerKind::Observer;
            let ack = match Message::decode(&frame) {
                Ok(Message::AppendEntriesAck { term, .. }) if observer && term > self.term => {
                    return format!(
                        "protocol error: an observer's ACK in term {term}, newer than ours; an \
                         observer cannot depose a leader"
                    )
                }
                Ok(Message::AppendEntriesAck { last_lsn, term, digest_lsn, digest }) => {
                    (last_lsn, term, digest_lsn, digest)
                }
                Ok(Message::AppendEntriesRefuse { term, .. }) if term > self.term && !observer => {
                    let _ = replica.observe_term(term, None, &format!("follower {}", self.address));
                    return format!("it is in term {term}, newer than ours");
                }
                Ok(Message::Error { message, .. }) => {
                    return format!("follower reported: {message}")
                }
                Ok(other) => return format!("unexpected {} on a replication link", other.name()),
                Err(e) => return e.to_string(),
            };
            let (last_lsn, term, digest_lsn, digest) = ack;
            if term > self.term {
                let _ = replica.observe_term(term, None, &format!("follower {}", self.address));
                return format!("it is in term {term}, newer than ours");
            }
            let sent = self.sent_through.load(Ordering::Acquire);
            if last_lsn > sent {
                return format!(
                    "protocol error: ACK of LSN {last_lsn}, but this link has only been sent up \
                     to LSN {sent}; nothing counted"
                );
            }
            self.hub.record_ack(self.session, last_lsn, term);
            if observer {
                continue; // an observer's ACKs move its own row only
            }
            self.db.note_follower(self.address, last_lsn);
            measured = self.db.stages().reached(Stage::Ack, measured, last_lsn);
            if digest_lsn != 0 && digest_lsn <= last_lsn {
                self.check_digest(digest_lsn, digest);
            }
        }
    }

    /// The corruption check: compare the follower's digest at `lsn` with ours.
    fn check_digest(&self, lsn: Lsn, theirs: u64) {
        let Some(ours) = self.db.digest_at(lsn) else { return };
        if ours != theirs && self.hub.flag_digest_mismatch(self.session, lsn) {
            log::error!(
                "[corruption] follower {} has digest {theirs:016x} at LSN {lsn}, the leader has \
                 {ours:016x}: its data differs from ours although its log matches; it is marked \
                 unhealthy and refuses reads (replace its data dir to repair it)",
                self.address
            );
        }
    }
}

/// One follower's (or observer's) sender: the socket and the cursor `next_lsn`.
struct Sender<'a> {
    stream: Conn,
    address: SocketAddr,
    kind: PeerKind,
    trace: Option<Arc<LinkTrace>>,
    db: &'a Db,
    hub: &'a Hub,
    session: Session,
    term: Term,
    next_lsn: Lsn,
    /// The last LSN put on this link (shared with the ack reader).
    sent_through: Arc<AtomicU64>,
    told_unhealthy: bool,
    sent_log: RateLimitedLine,
    /// Batches through here are counted in the `send` stage (or predate the link).
    send_measured: Lsn,
    /// Bytes of AppendEntries frames written on this link.
    bytes_sent: u64,
}

impl<'a> Sender<'a> {
    fn new(
        stream: Conn,
        (address, db, hub): (SocketAddr, &'a Db, &'a Hub),
        (session, term): (Session, Term),
        next_lsn: Lsn,
        sent_through: Arc<AtomicU64>,
    ) -> Sender<'a> {
        Sender {
            stream,
            address,
            kind: PeerKind::Follower,
            trace: None,
            db,
            hub,
            session,
            term,
            next_lsn,
            sent_through,
            told_unhealthy: false,
            sent_log: RateLimitedLine::new(),
            send_measured: db.last_lsn(),
            bytes_sent: 0,
        }
    }

    /// Lesson 5: send every record up to `target` from the WAL.
    fn catch_up(&mut self, target: Lsn) -> Result<()> {
        let started = Instant::now();
        let first = self.next_lsn;
        if first > target {
            // Already up to date: an empty AppendEntries says so.
            self.send_heartbeat()?;
        }
        // Long catch-ups say how far they are, once a second (crate::progress).
        let what = format!("[catch-up] to {} {}", self.kind, self.address);
        let mut progress = Progress::new(what, Unit::Records, (target + 1).saturating_sub(first));
        while self.next_lsn <= target {
            self.send_from_wal(target, target)?;
            progress.note(self.next_lsn - first, self.bytes_sent);
        }
        self.hub.set_state(self.session, LinkState::Streaming);
        if target >= first {
            log::info!(
                "[catch-up] sent {} {} {} record(s), LSN {first}..{target}, in {} ms; now \
                 streaming",
                self.kind,
                self.address,
                target + 1 - first,
                started.elapsed().as_millis()
            );
        }
        Ok(())
    }

    /// Lesson 3: forward written batches as they arrive; heartbeat when idle.
    fn stream_live(&mut self, batches: &Receiver<Batch>, closed: &AtomicBool) -> Result<()> {
        let heartbeat = self.hub.heartbeat();
        loop {
            if closed.load(Ordering::Acquire)
                || !self.hub.is_current(self.session)
                || self.hub.is_deposed()
            {
                return Ok(());
            }
            self.tell_if_unhealthy()?;
            match batches.recv_timeout(heartbeat) {
                Ok(batch) => {
                    // Coalesce whatever else is already queued into one message.
                    let mut ready = vec![batch];
                    let mut records = ready[0].len();
                    while records < APPEND_ENTRIES_RECORDS_MAX as usize {
                        let Ok(more) = batches.try_recv() else { break };
                        records += more.len();
                        ready.push(more);
                    }
                    self.send_batches(&ready)?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Idle, or batches were dropped while we were slow.
                    let last = self.db.last_lsn();
                    if self.next_lsn > last {
                        self.send_heartbeat()?;
                    }
                    while self.next_lsn <= last {
                        self.send_from_wal(last, last)?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    /// Once the corruption check flagged this follower, tell it (once per
    /// link): it then refuses reads. The link stays up.
    fn tell_if_unhealthy(&mut self) -> Result<()> {
        if self.told_unhealthy {
            return Ok(());
        }
        let Some(lsn) = self.hub.digest_mismatch(self.session) else { return Ok(()) };
        self.told_unhealthy = true;
        let message = format!(
            "the leader's corruption check found this node's data differs from the leader's at \
             LSN {lsn} (digest mismatch)"
        );
        let error = Message::Error { code: ErrorCode::Unhealthy as u16, message };
        if let Some(trace) = &self.trace {
            trace.note_message(Direction::Sent, &error);
        }
        write_message(&mut self.stream, &error)
    }

    /// Send the records of `ready` the follower still needs, reading any gap
    /// before them from the WAL.
    fn send_batches(&mut self, ready: &[Batch]) -> Result<()> {
        let mut message = self.new_message(0)?;
        for record in ready.iter().flat_map(|b| b.iter()) {
            if record.lsn < self.next_lsn {
                continue; // already sent (catch-up overlapped the channel)
            }
            if record.lsn > self.next_lsn {
                // Batches were dropped while the channel was full: the gap
                // is in the WAL. Send what we have, then the gap.
                self.flush(&mut message)?;
                log::info!(
                    "[replication] {} {} fell behind its channel; reading LSN {}..{} from the \
                     WAL",
                    self.kind,
                    self.address,
                    self.next_lsn,
                    record.lsn - 1
                );
                while self.next_lsn < record.lsn {
                    self.send_from_wal(record.lsn - 1, record.lsn - 1)?;
                }
                message = self.new_message(0)?;
            }
            message.push(record);
            self.next_lsn = record.lsn + 1;
            if message.is_full() {
                self.flush(&mut message)?;
            }
        }
        self.flush(&mut message)
    }

    /// Send one AppendEntries of records `next_lsn..=through` read from the WAL
    /// (bounded by the per-message limits), telling the follower that the
    /// leader's last LSN is `leader_last`.
    fn send_from_wal(&mut self, through: Lsn, leader_last: Lsn) -> Result<()> {
        let records = self.db.wal().records_after(
            self.next_lsn - 1,
            through,
            APPEND_ENTRIES_RECORDS_MAX as usize,
            APPEND_ENTRIES_BYTES_MAX,
        )?;
        let Some(last) = records.last().map(|r| r.lsn) else {
            return Err(Error::Unexpected(format!(
                "WAL returned no records after LSN {} (through {through})",
                self.next_lsn - 1
            )));
        };
        let mut message = self.new_message(leader_last)?;
        for record in &records {
            message.push(record);
        }
        self.next_lsn = last + 1;
        self.write(&mut message)
    }

    fn send_heartbeat(&mut self) -> Result<()> {
        let mut message = self.new_message(self.next_lsn - 1)?;
        self.write(&mut message)
    }

    /// A message continuing the follower's log after `next_lsn - 1`.
    fn new_message(&self, leader_last_lsn: Lsn) -> Result<AppendEntriesEncoder> {
        let prev_lsn = self.next_lsn - 1;
        let prev_term = self.db.term_at(prev_lsn).ok_or_else(|| {
            Error::Unexpected(format!("LSN {prev_lsn} is beyond this leader's log"))
        })?;
        Ok(AppendEntriesEncoder::new(&AppendEntriesHeader {
            term: self.term,
            prev_lsn,
            prev_term,
            commit_lsn: self.hub.commit_lsn(self.db),
            leader_last_lsn,
        }))
    }

    /// Send `message` if it holds records, and start it afresh.
    fn flush(&mut self, message: &mut AppendEntriesEncoder) -> Result<()> {
        if message.count() > 0 {
            message.set_leader_last_lsn(message.last_lsn());
            self.write(message)?;
            *message = self.new_message(0)?;
        }
        Ok(())
    }

    fn write(&mut self, message: &mut AppendEntriesEncoder) -> Result<()> {
        let count = message.count();
        // Publish what this link will hold *before* it can be ACKed.
        self.sent_through.fetch_max(message.last_lsn(), Ordering::AcqRel);
        let frame = message.finish();
        debug_assert!(frame.len() <= FRAME_BYTES_MAX as usize + FRAME_HEADER_BYTES);
        if let Some(trace) = &self.trace {
            trace.note(Direction::Sent, &frame[FRAME_HEADER_BYTES..]);
        }
        self.stream
            .write_all(frame)
            .map_err(|e| Error::io(format!("sending AppendEntries to {}", self.address), e))?;
        self.bytes_sent += frame.len() as u64;
        let (address, last) = (self.address, self.next_lsn - 1);
        if self.kind == PeerKind::Observer {
            return Ok(()); // neither a write stage nor lesson 3's log line
        }
        self.send_measured = self.db.stages().reached(Stage::Send, self.send_measured, last);
        self.sent_log.note(1, count as usize, |messages, records| {
            let what = if messages == 1 {
                "AppendEntries".into()
            } else {
                format!("{messages} AppendEntries")
            };
            format!("[replication] sent {what} to {address}: {records} record(s), last LSN {last}")
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::FsyncPolicy;
    use crate::wal::{Op, Record};
    use std::net::{TcpListener, TcpStream};

    /// A sender wired to a real socket, over a log of `count` records.
    fn setup(count: u64) -> (tempfile::TempDir, Arc<Db>, Arc<Hub>, TcpStream, TcpStream) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        db.set_leader_term(Some(1));
        for i in 1..=count {
            db.write(Op::Put { key: format!("k{i}").into(), value: b"v".to_vec() }).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let follower_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (leader_side, _) = listener.accept().unwrap();
        (dir, Arc::new(db), Arc::new(Hub::new(&[], 1)), leader_side, follower_side)
    }

    fn batch(db: &Db, first: Lsn, last: Lsn) -> Batch {
        Arc::new(db.wal().records_after(first - 1, last, 1000, 1 << 20).unwrap())
    }

    /// Every LSN the follower side receives until the leader side closes.
    fn received(follower_side: TcpStream) -> Vec<Lsn> {
        let mut reader = std::io::BufReader::new(follower_side);
        let mut lsns = Vec::new();
        while let Some(frame) = read_frame(&mut reader, FRAME_BYTES_MAX).unwrap() {
            let Message::AppendEntries(ae) = Message::decode(&frame).unwrap() else { panic!() };
            lsns.extend(ae.records.iter().map(|r: &Record| r.lsn));
        }
        lsns
    }

    fn send(db: &Arc<Db>, hub: &Arc<Hub>, stream: TcpStream, next_lsn: Lsn, ready: &[Batch]) {
        let address = stream.peer_addr().unwrap();
        let session = hub.attach(address, 1, None);
        let sent = Arc::new(AtomicU64::new(next_lsn - 1));
        let stream = Conn::plain(stream);
        let mut sender = Sender::new(stream, (address, db, hub), (session, 1), next_lsn, sent);
        sender.send_batches(ready).unwrap();
    }

    #[test]
    fn a_gap_between_channel_batches_is_filled_from_the_wal() {
        // Goal: when batches were dropped (full channel), the records in
        // between come from the WAL, in order. Method: hand the sender
        // batches 1..=3 and 7..=9 only; the follower must get 1..=9.
        let (_dir, db, hub, leader_side, follower_side) = setup(9);
        let ready = [batch(&db, 1, 3), batch(&db, 7, 9)];
        send(&db, &hub, leader_side, 1, &ready);
        assert_eq!(received(follower_side), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn records_already_sent_by_catch_up_are_skipped() {
        // Goal: the catch-up/live overlap never sends a record twice.
        // Method: the cursor is at 5; batches 1..=3 and 4..=8 arrive.
        let (_dir, db, hub, leader_side, follower_side) = setup(8);
        let ready = [batch(&db, 1, 3), batch(&db, 4, 8)];
        send(&db, &hub, leader_side, 5, &ready);
        assert_eq!(received(follower_side), vec![5, 6, 7, 8]);
    }

    #[test]
    fn a_gap_at_the_start_is_filled_too() {
        // Goal: a batch that starts beyond the cursor (the first batches
        // were dropped) is preceded by the WAL's records.
        let (_dir, db, hub, leader_side, follower_side) = setup(6);
        send(&db, &hub, leader_side, 2, &[batch(&db, 5, 6)]);
        assert_eq!(received(follower_side), vec![2, 3, 4, 5, 6]);
    }
}
