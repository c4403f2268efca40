//! The leader's table of followers: acked LSNs, commit LSN, write concern (lesson 4).
//!
//! Each follower session reports the follower's ACKs here. From them the hub
//! derives `commit_lsn` — the highest LSN held by a majority of the cluster
//! (the leader plus its `--peers`) — and wakes client threads waiting for a
//! `majority` or `all` write concern.
//!
//! | `--write-concern` | a write is acknowledged when...             | like                                  |
//! |-------------------|---------------------------------------------|---------------------------------------|
//! | `local`           | it is durable in the leader's WAL           | Redis default; PG `synchronous_commit=local` |
//! | `majority`        | a majority of nodes (leader included) has it durably | Redis `WAIT n`; PG `synchronous_standby_names = ANY n`; etcd |
//! | `all`             | every expected follower has it durably too  | Redis `WAIT <all replicas>`; PG `FIRST n` with all standbys |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::replication::lag::{LagSummary, LagTracker};
use crate::status::FollowerRow;
use crate::Lsn;

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
}

struct HubState {
    peers: Vec<Peer>,
    next_session_id: u64,
}

/// The leader's replication bookkeeping.
pub struct Hub {
    state: Mutex<HubState>,
    acked: Condvar,
    expected_count: usize,
    lag: Mutex<LagTracker>,
}

impl Hub {
    /// A hub expecting the followers in `--peers`.
    pub fn new(expected: &[SocketAddr]) -> Hub {
        let peers = expected
            .iter()
            .map(|&address| Peer {
                address,
                expected: true,
                state: LinkState::Connecting,
                acked_lsn: 0,
                last_ack: None,
                session_id: 0,
            })
            .collect();
        Hub {
            state: Mutex::new(HubState { peers, next_session_id: 1 }),
            acked: Condvar::new(),
            expected_count: expected.len(),
            lag: Mutex::new(LagTracker::new()),
        }
    }

    /// Nodes that make a majority: the leader plus its expected followers.
    pub fn majority(&self) -> usize {
        let cluster_nodes = 1 + self.expected_count;
        cluster_nodes / 2 + 1
    }

    /// A follower said HELLO from `address` holding `last_lsn`. Match it to
    /// its `--peers` entry (or add it as an extra follower) and start a session.
    pub fn attach(&self, address: SocketAddr, last_lsn: Lsn) -> Session {
        let mut st = self.state.lock();
        let id = st.next_session_id;
        st.next_session_id += 1;
        let index = match st.peers.iter().position(|p| same_node(p.address, address)) {
            Some(i) => i,
            None => {
                st.peers.push(Peer {
                    address,
                    expected: false,
                    state: LinkState::Connecting,
                    acked_lsn: 0,
                    last_ack: None,
                    session_id: 0,
                });
                st.peers.len() - 1
            }
        };
        let peer = &mut st.peers[index];
        peer.session_id = id;
        peer.state = LinkState::CatchingUp;
        // Its log holds everything up to last_lsn: that counts as acked.
        peer.acked_lsn = last_lsn;
        self.acked.notify_all();
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
    pub fn record_ack(&self, session: Session, last_lsn: Lsn) {
        let mut st = self.state.lock();
        let before = self.positions(&st);
        let peer = &mut st.peers[session.peer];
        if peer.session_id != session.id {
            return;
        }
        peer.acked_lsn = peer.acked_lsn.max(last_lsn);
        let now = Instant::now();
        peer.last_ack = Some(now);
        let after = self.positions(&st);
        if after != before {
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
        self.set_state(session, LinkState::Disconnected);
    }

    /// Highest LSN held by a majority: the leader holds `leader_last_lsn`,
    /// each expected follower its acked LSN.
    pub fn commit_lsn(&self, leader_last_lsn: Lsn) -> Lsn {
        let (majority, _) = self.positions(&self.state.lock());
        majority.min(leader_last_lsn)
    }

    /// Block until `lsn` satisfies `concern`, or fail after `timeout`.
    pub fn wait_for(&self, lsn: Lsn, concern: WriteConcern, timeout: Duration) -> Result<()> {
        let followers_needed = match concern {
            WriteConcern::Local => return Ok(()),
            WriteConcern::Majority => self.majority() - 1,
            WriteConcern::All => self.expected_count,
        };
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            let acked = st.peers.iter().filter(|p| p.expected && p.acked_lsn >= lsn).count();
            if acked >= followers_needed {
                return Ok(());
            }
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
            })
            .collect()
    }
}

/// Two addresses name the same node if the ports match and the IPs match,
/// counting any loopback address as the same machine.
fn same_node(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || (a.ip().is_loopback() && b.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn commit_lsn_is_the_majority_position() {
        // Goal: with 3 nodes, commit_lsn is the larger of the followers' acks
        // (leader + that follower = 2 of 3).
        let hub = Hub::new(&[addr(9002), addr(9003)]);
        assert_eq!(hub.majority(), 2);
        assert_eq!(hub.commit_lsn(10), 0);
        let a = hub.attach(addr(9002), 0);
        hub.record_ack(a, 7);
        assert_eq!(hub.commit_lsn(10), 7);
        let b = hub.attach(addr(9003), 0);
        hub.record_ack(b, 9);
        assert_eq!(hub.commit_lsn(10), 9);
    }

    #[test]
    fn standalone_leader_commits_alone() {
        let hub = Hub::new(&[]);
        assert_eq!(hub.commit_lsn(5), 5);
        hub.wait_for(5, WriteConcern::All, Duration::from_millis(1)).unwrap();
    }

    #[test]
    fn write_concern_times_out_with_counts() {
        let hub = Hub::new(&[addr(9002), addr(9003)]);
        let a = hub.attach(addr(9002), 0);
        hub.record_ack(a, 3);
        hub.wait_for(3, WriteConcern::Majority, Duration::from_millis(1)).unwrap();
        match hub.wait_for(3, WriteConcern::All, Duration::from_millis(20)) {
            Err(Error::WriteTimeout { acked: 2, needed: 3, .. }) => {}
            other => panic!("expected a timeout with 2 of 3, got {other:?}"),
        }
    }

    #[test]
    fn stale_sessions_are_ignored() {
        let hub = Hub::new(&[addr(9002)]);
        let old = hub.attach(addr(9002), 0);
        let new = hub.attach(addr(9002), 0);
        hub.record_ack(old, 100);
        assert!(!hub.is_current(old));
        assert_eq!(hub.commit_lsn(100), 0);
        hub.record_ack(new, 50);
        assert_eq!(hub.commit_lsn(100), 50);
    }

    #[test]
    fn a_write_already_held_everywhere_is_measured_at_once() {
        // Goal: under majority/all the ACKs arrive before the client's OK;
        // such a write counts as replicated immediately, not at the next ACK.
        let hub = Hub::new(&[addr(9002)]);
        let a = hub.attach(addr(9002), 0);
        hub.record_ack(a, 5);
        hub.acknowledged(5);
        let lag = hub.lag_summary().expect("measured");
        assert_eq!(lag.count, 1);
        assert!(lag.max_us < 1_000_000, "{lag:?}");
        hub.acknowledged(6); // not yet on the follower
        assert_eq!(hub.lag_summary().unwrap().count, 1);
        hub.record_ack(a, 6);
        assert_eq!(hub.lag_summary().unwrap().count, 2);
    }

    #[test]
    fn unknown_followers_are_extras_and_do_not_count() {
        let hub = Hub::new(&[addr(9002), addr(9003)]);
        let x = hub.attach(addr(9999), 0);
        hub.record_ack(x, 10);
        assert_eq!(hub.commit_lsn(10), 0);
        assert_eq!(hub.rows(10).len(), 3);
    }
}
