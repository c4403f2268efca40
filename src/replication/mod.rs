//! Replication: lessons 3 (AppendEntries), 4 (commit index, write concern)
//! and 5 (follower catch-up), made safe across a change of leader by terms
//! and the log-matching check (`docs/FAILOVER.md`).
//!
//! ## The conversation
//!
//! ```text
//! follower                                              leader (term 2)
//!    | --- FOLLOWER_HELLO [last_lsn, last_term, term] -----> |  (follower dials; same port as clients)
//!    | <-- LEADER_HELLO [cluster, term 2, last_lsn, members]  |
//!    | <-- APPEND_ENTRIES [term 2, prev_lsn, prev_term] ----- |  probe: do our logs agree at prev?
//!    | --- APPEND_ENTRIES_REFUSE [last_lsn, conflict] ------> |  no: the leader jumps back a term
//!    | <-- APPEND_ENTRIES [term 2, prev_lsn', prev_term'] --- |
//!    | --- APPEND_ENTRIES_ACK [prev_lsn'] ------------------> |  yes: the common point
//!    | <-- APPEND_ENTRIES [records after prev_lsn' ...] ----- |  catch-up from the WAL (the follower
//!    | --- APPEND_ENTRIES_ACK [last_lsn] -------------------> |   truncates what conflicts first)
//!    | <-- APPEND_ENTRIES [new records] --------------------- |  live stream from the channel
//!    | <-- APPEND_ENTRIES [] (heartbeat) ------------------- |  when idle, every 100 ms
//!    | --- APPEND_ENTRIES_ACK [last_lsn, digest] -----------> |
//! ```
//!
//! The follower opens the connection, as PostgreSQL's walreceiver and a
//! Redis replica do: it knows its own last LSN, and it simply redials after
//! either side restarts. The leader's `--peers` lists the followers it
//! expects: they size the majority and appear in `status` even before they
//! connect.
//!
//! ## Ordering rules
//!
//! - A batch is sent once it is written on the leader, while the leader's
//!   own fsync runs; the leader applies it and answers its clients only
//!   after that fsync, and counts its own copy toward the commit LSN only
//!   from then on (see [`crate::db`]).
//! - A follower applies a batch only if its log holds the batch's
//!   `(prev_lsn, prev_term)`; it removes a conflicting suffix first, but
//!   never a record at or below its commit LSN.
//! - A follower ACKs only what it has written *and* fsynced, and only up to
//!   where its log is known to match the leader's; the leader counts an ACK
//!   only up to what it sent on that link.
//! - `commit_lsn` is the highest LSN held by a majority of the cluster and
//!   written in the leader's current term (or before such a record).
//! - A message from an older term is refused; a newer term is stored
//!   durably before anything else, and a leader that sees one steps down.
//!
//! ## Modules
//!
//! - [`state`]: the durable term, vote, role and members; term and vote rules.
//! - [`log_match`]: the log-matching rules, as pure functions.
//! - [`replica`]: the node's role and every change of it (promote, follow,
//!   step down).
//! - [`peers`]: votes for a promotion; a leader's announcements.
//! - [`hub`]: the leader's table of followers, acks, commit LSN, write concern.
//! - [`lag`]: how long an acknowledged write takes to reach every follower.
//! - [`leader`]: one follower's session on the leader — probe, catch-up, then
//!   the live stream from its channel, with the WAL as the overflow buffer.
//! - [`install`]: snapshot install, both sides — for a follower whose next
//!   record the leader's log no longer holds.
//! - [`follower`]: the follower's side — dial, hello, check, repair, apply,
//!   ack, redial.
//!
//! ## Left out (on purpose, for now)
//!
//! No automatic election: a human promotes a follower (`kv_client promote`),
//! with the votes and checks that keep it safe. The term and vote rules are
//! already those an election needs.

pub mod election;
pub mod follower;
pub mod hub;
pub mod install;
pub mod lag;
pub mod leader;
pub mod log_match;
pub mod peers;
pub mod replica;
pub mod state;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Parse a peer as the lessons write it: a bare port means 127.0.0.1, and
/// `host:port` is accepted too.
pub fn parse_peer(peer: &str) -> Result<SocketAddr> {
    let peer = peer.trim();
    let with_host =
        if peer.parse::<u16>().is_ok() { format!("127.0.0.1:{peer}") } else { peer.to_string() };
    with_host
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving peer address '{peer}'"), e))?
        .next()
        .ok_or_else(|| Error::Malformed(format!("peer address '{peer}' resolves to nothing")))
}

/// Lesson 3's per-message log lines, kept readable under load: the first
/// message logs at once, later ones are summed and logged at most once a
/// second (callers also call [`RateLimitedLine::note`] with 0 records on
/// heartbeats, which flushes a pending sum when the link goes idle).
pub struct RateLimitedLine {
    last_line: Option<Instant>,
    messages: u64,
    records: u64,
}

impl RateLimitedLine {
    pub fn new() -> RateLimitedLine {
        RateLimitedLine { last_line: None, messages: 0, records: 0 }
    }

    /// Count `messages` messages carrying `records` records (0 for
    /// heartbeats), and log `line(messages, records)` at `info` if one is due.
    pub fn note(&mut self, messages: u64, records: usize, line: impl FnOnce(u64, u64) -> String) {
        if records > 0 {
            self.messages += messages;
            self.records += records as u64;
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.messages == 0 || !due {
            return;
        }
        log::info!("{}", line(self.messages, self.records));
        self.last_line = Some(Instant::now());
        self.messages = 0;
        self.records = 0;
    }
}

impl Default for RateLimitedLine {
    fn default() -> Self {
        RateLimitedLine::new()
    }
}
