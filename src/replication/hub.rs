//! The leader's table of followers: acked LSNs, commit LSN, write concern (lesson 4).
//!
//! A hub lives as long as one leadership: it is created when a node becomes
//! leader of a term and **deposed** when it stops being leader, which fails
//! every write still waiting for its write concern and closes every
//! follower link.
//!
//! Each follower session reports the follower's ACKs here. An ACK counts
//! only up to what log matching has confirmed on that link (Raft's
//! `match_index`): a new session starts at 0, whatever its HELLO claimed,
//! and the session refuses an ACK beyond what it sent. From the ACKs the
//! hub derives `commit_lsn` — the highest LSN held by a majority of the
//! cluster (the leader plus its `--peers`) and written in this leader's own
//! term (Raft section 5.4.2: a record of an older term is committed only
//! by a record of the current term after it) — and wakes client threads
//! waiting for a `majority` or `all` write concern.
//!
//! | `--write-concern` | a write is acknowledged when...             | like                                  |
//! |-------------------|---------------------------------------------|---------------------------------------|
//! | `local`           | it is durable in the leader's WAL           | Redis default; PG `synchronous_commit=local` |
//! | `majority`        | a majority of nodes (leader included) has it durably | Redis `WAIT n`; PG `synchronous_standby_names = ANY n`; etcd |
//! | `all`             | every expected follower has it durably too  | Redis `WAIT <all replicas>`; PG `FIRST n` with all standbys |
//!
//! ## Linearizable reads (Raft's ReadIndex, thesis section 6.4)
//!
//! A leader can be deposed without knowing it yet, so its map alone may be
//! stale. [`Hub::confirm_leadership`] proves it still leads: it asks every
//! member, on a fresh connection, which term and leader it knows
//! (LEADER_ANNOUNCE), and needs a majority (itself included) to answer
//! "this term, this leader" to a question asked after the read began. No
//! newer leader can have committed anything before that moment, since a
//! majority was still in this term. (An ACK on the replication link would
//! not do: one sent before the read began can arrive after it.) One round
//! at a time runs; reads that arrive meanwhile share the next one, so a
//! busy leader asks once per round trip, not once per read.
//!
//! The leader's map also holds records that are
//! durable here but not yet committed, so the reader then waits until the
//! LSN the map had applied when it was read is committed
//! ([`Hub::wait_committed`]): a read never returns a write that could still
//! be lost.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::HEARTBEAT_INTERVAL_MS;
use crate::replication::lag::{LagSummary, LagTracker};
use crate::stages::{Stage, Stages};
use crate::status::FollowerRow;
use crate::{Lsn, Term};

/// How many nodes must hold a write before the client hears OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConcern {
    Local,
    Majority,
    All,
}

impl WriteConcern {
    pub fn name(self) -> &'static str {
        match self {
            WriteConcern::Local => "local",
            WriteConcern::Majority => "majority",
            WriteConcern::All => "all",
        }
    }
}

/// A follower link's state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Expected, but has not connected yet.
    Connecting,
    /// Connected; receiving the records it missed.
    CatchingUp,
    /// Connected; receiving a snapshot, its log being behind ours.
    Snapshot,
    /// Connected and receiving new records as they are written.
    Streaming,
    /// Was connected; the link is gone.
    Disconnected,
}

impl LinkState {
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::CatchingUp => "catching-up",
            LinkState::Snapshot => "snapshot",
            LinkState::Streaming => "streaming",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// Identifies one connection of one follower. A follower that reconnects
/// gets a new session, and the old one's threads see they are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    peer: usize,
    id: u64,
}

struct Peer {
    address: SocketAddr,
    expected: bool,
    state: LinkState,
    acked_lsn: Lsn,
    last_ack: Option<Instant>,
    session_id: u64,
    /// The follower's term, from its HELLO and ACKs.
    term: Term,
    /// Set when the corruption check found this follower's digest differs
    /// from ours at that LSN. Sticky for this leadership.
    digest_mismatch: Option<Lsn>,
    /// A handle on the current session's socket, to close it on deposition.
    stream: Option<TcpStream>,
    /// `(sent, total)` bytes of a snapshot being sent to it.
    snapshot: Option<(u64, u64)>,
}

impl Peer {
    fn new(address: SocketAddr, expected: bool) -> Peer {
        Peer {
            address,
            expected,
            state: LinkState::Connecting,
            acked_lsn: 0,
            last_ack: None,
            session_id: 0,
            term: 0,
            digest_mismatch: None,
            stream: None,
            snapshot: None,
        }
    }
}

struct HubState {
    peers: Vec<Peer>,
    next_session_id: u64,
    /// Highest LSN known committed; never goes back.
    commit_lsn: Lsn,
    /// Set when this leadership ended: why.
    deposed: Option<String>,
    /// Threads in [`Hub::wait_acked_by`]: every ACK wakes them.
    confirming: usize,
    /// When an ACK last moved the majority or the all-followers position
    /// (the `wakeup` stage runs from here).
    moved_at: Option<Instant>,
}

/// The leader's replication bookkeeping for one term.
pub struct Hub {
    term: Term,
    state: Mutex<HubState>,
    acked: Condvar,
    expected_count: usize,
    lag: Mutex<LagTracker>,
    /// When this leadership began (check-quorum gives it one timeout).
    since: Instant,
    /// How often an idle link gets an empty AppendEntries.
    heartbeat: Duration,
    /// Where the log ended when this leadership began: once the commit LSN
    /// reaches it, every record committed by earlier leaders is known.
    office_lsn: Lsn,
    /// When the last confirmation round that succeeded began.
    confirmed_from: Mutex<Option<Instant>>,
    /// Held while a confirmation round runs: one at a time.
    round: Mutex<()>,
    /// The node's write-stage histograms (`None` in unit tests).
    stages: Option<Arc<Stages>>,
}

impl Hub {
    /// A hub for the leader of `term`, expecting the followers in `expected`
    /// (the members other than itself).
    pub fn new(expected: &[SocketAddr], term: Term) -> Hub {
        let peers = expected.iter().map(|&address| Peer::new(address, true)).collect();
        Hub {
            term,
            state: Mutex::new(HubState {
                peers,
                next_session_id: 1,
                commit_lsn: 0,
                deposed: None,
                confirming: 0,
                moved_at: None,
            }),
            acked: Condvar::new(),
            expected_count: expected.len(),
            lag: Mutex::new(LagTracker::new()),
            since: Instant::now(),
            heartbeat: Duration::from_millis(HEARTBEAT_INTERVAL_MS),
            office_lsn: 0,
            confirmed_from: Mutex::new(None),
            round: Mutex::new(()),
            stages: None,
        }
    }

    /// The same hub, recording the `wakeup` stage of its waiting writers.
    pub fn with_stages(mut self, stages: Arc<Stages>) -> Hub {
        self.stages = Some(stages);
        self
    }

    /// The same hub, for a leader whose log ends at `last_lsn` as it takes
    /// office and who knows everything up to `known_commit` is committed.
    pub fn starting_at(mut self, last_lsn: Lsn, known_commit: Lsn) -> Hub {
        self.office_lsn = last_lsn;
        self.state.get_mut().commit_lsn = known_commit.min(last_lsn);
        self
    }

    /// Where the log ended when this leadership began.
    pub fn office_lsn(&self) -> Lsn {
        self.office_lsn
    }

    /// The same hub, sending heartbeats every `ms` instead of the default.
    pub fn with_heartbeat_ms(mut self, ms: u64) -> Hub {
        self.heartbeat = Duration::from_millis(ms.max(1));
        self
    }

    /// How often an idle link gets an empty AppendEntries.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The term this hub's leader leads.
    pub fn term(&self) -> Term {
        self.term
    }

    /// End this leadership: fail every waiting write with `why`, close
    /// every follower link. Returns false if it had already ended.
    pub fn depose(&self, why: &str) -> bool {
        let mut st = self.state.lock();
        if st.deposed.is_some() {
            return false;
        }
        st.deposed = Some(why.to_string());
        for peer in &mut st.peers {
            if let Some(stream) = peer.stream.take() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        self.acked.notify_all();
        true
    }

    /// True once [`Hub::depose`] was called.
    pub fn is_deposed(&self) -> bool {
        self.state.lock().deposed.is_some()
    }

    /// How long this leadership has lasted, in ms.
    pub fn age_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    /// For each expected follower: how long ago its last ACK came, in ms
    /// (`None`: none yet in this term). Check-quorum reads it.
    pub fn ack_ages_ms(&self) -> Vec<Option<u64>> {
        let st = self.state.lock();
        st.peers
            .iter()
            .filter(|p| p.expected)
            .map(|p| p.last_ack.map(|t| t.elapsed().as_millis() as u64))
            .collect()
    }

    /// Addresses of the followers whose link is up right now.
    pub fn connected(&self) -> Vec<SocketAddr> {
        let st = self.state.lock();
        st.peers
            .iter()
            .filter(|p| {
                matches!(
                    p.state,
                    LinkState::CatchingUp | LinkState::Snapshot | LinkState::Streaming
                )
            })
            .map(|p| p.address)
            .collect()
    }

    /// The corruption check found `session`'s follower differs from us at
    /// `lsn`. Returns true the first time for this follower.
    pub fn flag_digest_mismatch(&self, session: Session, lsn: Lsn) -> bool {
        let mut st = self.state.lock();
        let peer = &mut st.peers[session.peer];
        let first = peer.digest_mismatch.is_none();
        peer.digest_mismatch.get_or_insert(lsn);
        first
    }

    /// The LSN at which `session`'s follower was found to differ, if it was.
    pub fn digest_mismatch(&self, session: Session) -> Option<Lsn> {
        self.state.lock().peers[session.peer].digest_mismatch
    }

    /// Nodes that make a majority: the leader plus its expected followers.
    pub fn majority(&self) -> usize {
        let cluster_nodes = 1 + self.expected_count;
        cluster_nodes / 2 + 1
    }

    /// A follower in `term` said HELLO from `address`. Match it to its
    /// `--peers` entry (or add it as an extra follower) and start a session.
    /// Nothing it holds counts until log matching confirms it: its acked
    /// LSN starts at 0. `stream` is kept to close the link on deposition.
    pub fn attach(&self, address: SocketAddr, term: Term, stream: Option<TcpStream>) -> Session {
        let mut st = self.state.lock();
        let id = st.next_session_id;
        st.next_session_id += 1;
        let index = match st.peers.iter().position(|p| same_node(p.address, address)) {
            Some(i) => i,
            None => {
                st.peers.push(Peer::new(address, false));
                st.peers.len() - 1
            }
        };
        let deposed = st.deposed.is_some();
        let peer = &mut st.peers[index];
        peer.session_id = id;
        peer.state = LinkState::CatchingUp;
        peer.acked_lsn = 0;
        peer.term = term;
        if let Some(old) = std::mem::replace(&mut peer.stream, stream) {
            let _ = old.shutdown(Shutdown::Both);
        }
        if deposed {
            if let Some(s) = peer.stream.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        Session { peer: index, id }
    }

    /// The configured address of the session's follower.
    pub fn address(&self, session: Session) -> SocketAddr {
        self.state.lock().peers[session.peer].address
    }

    pub fn set_state(&self, session: Session, state: LinkState) {
        let mut st = self.state.lock();
        let peer = &mut st.peers[session.peer];
        if peer.session_id == session.id {
            peer.state = state;
            peer.snapshot = None;
        }
    }

    /// The session's follower is being sent a snapshot: `sent` of `total`
    /// bytes are through (`status` shows it).
    pub fn set_snapshot_progress(&self, session: Session, sent: u64, total: u64) {
        let mut st = self.state.lock();
        let peer = &mut st.peers[session.peer];
        if peer.session_id == session.id {
            peer.state = LinkState::Snapshot;
            peer.snapshot = Some((sent, total));
        }
    }

    /// False once the follower has reconnected on a newer session.
    pub fn is_current(&self, session: Session) -> bool {
        self.state.lock().peers[session.peer].session_id == session.id
    }

    /// Record an APPEND_ENTRIES_ACK and wake the writers it satisfies.
    ///
    /// Waiters are woken only when the position they wait on moves: the
    /// LSN a majority holds, or the LSN every expected follower holds. With
    /// 16 writers waiting and two followers ACKing every batch, waking them
    /// all on every ACK would cost more than the replication itself.
    pub fn record_ack(&self, session: Session, last_lsn: Lsn, term: Term) {
        let mut st = self.state.lock();
        let before = self.positions(&st);
        let peer = &mut st.peers[session.peer];
        if peer.session_id != session.id {
            return;
        }
        peer.term = peer.term.max(term);
        peer.acked_lsn = peer.acked_lsn.max(last_lsn);
        let now = Instant::now();
        peer.last_ack = Some(now);
        let after = self.positions(&st);
        if after != before {
            st.moved_at = Some(now);
        }
        if after != before || st.confirming > 0 {
            self.acked.notify_all();
        }
        if self.expected_count > 0 {
            self.lag.lock().all_followers_hold(after.1, now);
        }
    }

    /// From the followers' ACKs alone: (the LSN held by as many expected
    /// followers as a majority needs besides the leader, the LSN held by
    /// every expected follower). `Lsn::MAX` where no follower is needed.
    fn positions(&self, st: &HubState) -> (Lsn, Lsn) {
        let mut acked: Vec<Lsn> =
            st.peers.iter().filter(|p| p.expected).map(|p| p.acked_lsn).collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let followers_needed = self.majority() - 1;
        let majority = match followers_needed {
            0 => Lsn::MAX,
            n => acked[n - 1],
        };
        (majority, acked.last().copied().unwrap_or(Lsn::MAX))
    }

    /// The leader acknowledged the write at `lsn` to its client just now
    /// (for the replication-lag figures; nothing waits on it).
    pub fn acknowledged(&self, lsn: Lsn) {
        if self.expected_count == 0 {
            return;
        }
        // Under `majority`/`all` the followers' ACKs usually arrive before
        // the client's OK: then the write is already everywhere.
        let st = self.state.lock();
        let all_hold = st.peers.iter().filter(|p| p.expected).map(|p| p.acked_lsn).min();
        let now = Instant::now();
        let mut lag = self.lag.lock();
        lag.acknowledged(lsn, now);
        lag.all_followers_hold(all_hold.unwrap_or(0), now);
    }

    /// Lag from a write's acknowledgement until every expected follower had it.
    pub fn lag_summary(&self) -> Option<LagSummary> {
        self.lag.lock().summary()
    }

    /// The session ended; the row stays, marked disconnected.
    pub fn detach(&self, session: Session) {
        let mut st = self.state.lock();
        let peer = &mut st.peers[session.peer];
        if peer.session_id == session.id {
            peer.state = LinkState::Disconnected;
            peer.stream = None;
            peer.snapshot = None;
        }
    }

    /// Highest committed LSN: held by a majority (the leader holds its last
    /// durable LSN, each expected follower its acked LSN) and, when it
    /// moves, of this leader's term. Never goes back.
    pub fn commit_lsn(&self, db: &Db) -> Lsn {
        let mut st = self.state.lock();
        let (majority, _) = self.positions(&st);
        let candidate = majority.min(db.last_lsn());
        if candidate > st.commit_lsn && db.term_at(candidate) == Some(self.term) {
            st.commit_lsn = candidate;
            // The node's own record of it: after a step-down, its repair
            // must not remove what it knew to be committed.
            db.advance_commit_lsn(candidate);
        }
        st.commit_lsn
    }

    /// Block until `lsn` satisfies `concern`, or fail after `timeout`, or
    /// fail at once if this leadership ends first.
    pub fn wait_for(&self, lsn: Lsn, concern: WriteConcern, timeout: Duration) -> Result<()> {
        let followers_needed = match concern {
            WriteConcern::Local => return Ok(()),
            WriteConcern::Majority => self.majority() - 1,
            WriteConcern::All => self.expected_count,
        };
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        let mut waited = false;
        loop {
            let acked = st.peers.iter().filter(|p| p.expected && p.acked_lsn >= lsn).count();
            if acked >= followers_needed {
                if let (true, Some(stages), Some(at)) = (waited, &self.stages, st.moved_at) {
                    stages.record(Stage::Wakeup, at.elapsed());
                }
                return Ok(());
            }
            if let Some(why) = &st.deposed {
                return Err(Error::Deposed { lsn, term: self.term, why: why.clone() });
            }
            waited = true;
            if self.acked.wait_until(&mut st, deadline).timed_out() {
                let acked = st.peers.iter().filter(|p| p.expected && p.acked_lsn >= lsn).count();
                if acked >= followers_needed {
                    return Ok(());
                }
                return Err(Error::WriteTimeout {
                    lsn,
                    acked: acked + 1,
                    needed: followers_needed + 1,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        }
    }

    /// ReadIndex, step 2: make sure a confirmation round that began after
    /// `asked` has succeeded, running one if none has. `round` asks the
    /// members and returns how many confirmed (this leader not counted).
    pub fn confirm_leadership(
        &self,
        asked: Instant,
        round: impl FnOnce() -> Result<usize>,
    ) -> Result<()> {
        let confirmed = || self.confirmed_from.lock().is_some_and(|from| from >= asked);
        if self.majority() == 1 || confirmed() {
            return Ok(());
        }
        let _one_round_at_a_time = self.round.lock();
        if confirmed() {
            return Ok(()); // a round that began after us ended while we queued
        }
        if self.is_deposed() {
            return Err(Error::NotLeader { term: Some(self.term), leader: None });
        }
        let began = Instant::now();
        let yes = round()?;
        if yes + 1 < self.majority() {
            return Err(Error::ReadTimeout {
                why: format!(
                    "only {} of {} members confirmed this node still leads term {} ({} needed)",
                    yes + 1,
                    self.expected_count + 1,
                    self.term,
                    self.majority()
                ),
                timeout_ms: began.elapsed().as_millis() as u64,
            });
        }
        let mut from = self.confirmed_from.lock();
        *from = Some(from.map_or(began, |f| f.max(began)));
        Ok(())
    }

    /// Wait until the commit LSN reaches `lsn` (ReadIndex steps 1 and 3).
    /// Fails if this leadership ends first, or at `deadline`.
    pub fn wait_committed(&self, db: &Db, lsn: Lsn, deadline: Instant) -> Result<Lsn> {
        let started = Instant::now();
        loop {
            let commit = self.commit_lsn(db);
            if commit >= lsn {
                return Ok(commit);
            }
            let mut st = self.state.lock();
            if st.deposed.is_some() {
                return Err(Error::NotLeader { term: Some(self.term), leader: None });
            }
            // The leader's own fsync moves the commit LSN without an ACK,
            // so look again at least every few milliseconds.
            let wake = deadline.min(Instant::now() + Duration::from_millis(2));
            if self.acked.wait_until(&mut st, wake).timed_out() && Instant::now() >= deadline {
                return Err(Error::ReadTimeout {
                    why: format!(
                        "LSN {lsn} is not committed yet (commit LSN {commit}, term {})",
                        self.term
                    ),
                    timeout_ms: deadline.saturating_duration_since(started).as_millis() as u64,
                });
            }
        }
    }

    /// The expected follower with the most of the log acknowledged and a
    /// live link, and its acked LSN (planned handover picks it).
    pub fn most_up_to_date(&self) -> Option<(SocketAddr, Lsn)> {
        let st = self.state.lock();
        st.peers
            .iter()
            .filter(|p| p.expected && p.state == LinkState::Streaming)
            .max_by_key(|p| p.acked_lsn)
            .map(|p| (p.address, p.acked_lsn))
    }

    /// The acked LSN of the follower at `address`, if it is linked now.
    pub fn acked_by(&self, address: SocketAddr) -> Option<Lsn> {
        let st = self.state.lock();
        st.peers
            .iter()
            .find(|p| same_node(p.address, address) && p.state == LinkState::Streaming)
            .map(|p| p.acked_lsn)
    }

    /// Wait until the follower at `address` has acknowledged `lsn`.
    pub fn wait_acked_by(&self, address: SocketAddr, lsn: Lsn, deadline: Instant) -> bool {
        let mut st = self.state.lock();
        st.confirming += 1;
        let reached = loop {
            let acked = st.peers.iter().find(|p| same_node(p.address, address));
            if acked.is_some_and(|p| p.acked_lsn >= lsn) {
                break true;
            }
            if st.deposed.is_some() || self.acked.wait_until(&mut st, deadline).timed_out() {
                break false;
            }
        };
        st.confirming -= 1;
        reached
    }

    /// One status row per follower, expected ones first.
    pub fn rows(&self, leader_last_lsn: Lsn) -> Vec<FollowerRow> {
        let st = self.state.lock();
        st.peers
            .iter()
            .map(|p| FollowerRow {
                address: p.address.to_string(),
                state: p.state.name().to_string(),
                expected: p.expected,
                acked_lsn: p.acked_lsn,
                lag_records: leader_last_lsn.saturating_sub(p.acked_lsn),
                last_ack_ms_ago: p.last_ack.map(|t| t.elapsed().as_millis() as u64),
                term: p.term,
                digest_mismatch: p.digest_mismatch.is_some(),
                pinned_bytes: 0,
                snapshot_sent_bytes: p.snapshot.map(|(sent, _)| sent),
                snapshot_total_bytes: p.snapshot.map(|(_, total)| total),
            })
            .collect()
    }
}

/// Two addresses name the same node if the ports match and the IPs match,
/// counting any loopback address as the same machine.
pub fn same_node(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || (a.ip().is_loopback() && b.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A database holding `count` records of `term`.
    fn db_with(count: u64, term: Term) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), crate::db::FsyncPolicy::Never).unwrap();
        db.set_leader_term(Some(term));
        for i in 0..count {
            db.write(crate::wal::Op::Put { key: i.to_string().into(), value: vec![] }).unwrap();
        }
        db.set_leader_term(None);
        (dir, db)
    }

    #[test]
    fn commit_lsn_is_the_majority_position() {
        // Goal: with 3 nodes, commit_lsn is the larger of the followers' acks
        // (leader + that follower = 2 of 3).
        let (_dir, db) = db_with(10, 1);
        let hub = Hub::new(&[addr(9002), addr(9003)], 1);
        assert_eq!(hub.majority(), 2);
        assert_eq!(hub.commit_lsn(&db), 0);
        let a = hub.attach(addr(9002), 1, None);
        hub.record_ack(a, 7, 1);
        assert_eq!(hub.commit_lsn(&db), 7);
        let b = hub.attach(addr(9003), 1, None);
        hub.record_ack(b, 9, 1);
        assert_eq!(hub.commit_lsn(&db), 9);
    }

    #[test]
    fn standalone_leader_commits_alone() {
        let (_dir, db) = db_with(5, 1);
        let hub = Hub::new(&[], 1);
        assert_eq!(hub.commit_lsn(&db), 5);
        hub.wait_for(5, WriteConcern::All, Duration::from_millis(1)).unwrap();
    }

    #[test]
    fn write_concern_times_out_with_counts() {
        let hub = Hub::new(&[addr(9002), addr(9003)], 1);
        let a = hub.attach(addr(9002), 1, None);
        hub.record_ack(a, 3, 1);
        hub.wait_for(3, WriteConcern::Majority, Duration::from_millis(1)).unwrap();
        match hub.wait_for(3, WriteConcern::All, Duration::from_millis(20)) {
            Err(Error::WriteTimeout { acked: 2, needed: 3, .. }) => {}
            other => panic!("expected a timeout with 2 of 3, got {other:?}"),
        }
    }

    #[test]
    fn stale_sessions_are_ignored() {
        let (_dir, db) = db_with(100, 1);
        let hub = Hub::new(&[addr(9002)], 1);
        let old = hub.attach(addr(9002), 1, None);
        let new = hub.attach(addr(9002), 1, None);
        hub.record_ack(old, 100, 1);
        assert!(!hub.is_current(old));
        assert_eq!(hub.commit_lsn(&db), 0);
        hub.record_ack(new, 50, 1);
        assert_eq!(hub.commit_lsn(&db), 50);
    }

    #[test]
    fn a_write_already_held_everywhere_is_measured_at_once() {
        // Goal: under majority/all the ACKs arrive before the client's OK;
        // such a write counts as replicated immediately, not at the next ACK.
        let hub = Hub::new(&[addr(9002)], 1);
        let a = hub.attach(addr(9002), 1, None);
        hub.record_ack(a, 5, 1);
        hub.acknowledged(5);
        let lag = hub.lag_summary().expect("measured");
        assert_eq!(lag.count, 1);
        assert!(lag.max_us < 1_000_000, "{lag:?}");
        hub.acknowledged(6); // not yet on the follower
        assert_eq!(hub.lag_summary().unwrap().count, 1);
        hub.record_ack(a, 6, 1);
        assert_eq!(hub.lag_summary().unwrap().count, 2);
    }

    #[test]
    fn unknown_followers_are_extras_and_do_not_count() {
        let (_dir, db) = db_with(10, 1);
        let hub = Hub::new(&[addr(9002), addr(9003)], 1);
        let x = hub.attach(addr(9999), 1, None);
        hub.record_ack(x, 10, 1);
        assert_eq!(hub.commit_lsn(&db), 0);
        assert_eq!(hub.rows(10).len(), 3);
    }

    #[test]
    fn only_a_record_of_the_leaders_own_term_moves_the_commit_lsn() {
        // Goal: Raft 5.4.2: a majority holding LSN 10 of term 1 does not
        // commit it for the leader of term 2; LSN 11 of term 2 commits both.
        let (dir, db) = db_with(10, 1);
        let hub = Hub::new(&[addr(9002)], 2);
        let a = hub.attach(addr(9002), 2, None);
        hub.record_ack(a, 10, 2);
        assert_eq!(hub.commit_lsn(&db), 0);
        db.set_leader_term(Some(2));
        db.write(crate::wal::Op::Delete { key: b"k".to_vec() }).unwrap();
        hub.record_ack(a, 11, 2);
        assert_eq!(hub.commit_lsn(&db), 11);
        drop(dir);
    }

    #[test]
    fn deposing_fails_waiting_writes_at_once() {
        let hub = std::sync::Arc::new(Hub::new(&[addr(9002)], 3));
        let waiter = {
            let hub = std::sync::Arc::clone(&hub);
            std::thread::spawn(move || {
                hub.wait_for(1, WriteConcern::Majority, Duration::from_secs(30))
            })
        };
        while !hub.depose("a newer term") {}
        match waiter.join().unwrap() {
            Err(Error::Deposed { lsn: 1, term: 3, .. }) => {}
            other => panic!("expected Deposed, got {other:?}"),
        }
    }
}
