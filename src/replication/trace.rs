//! `--trace-replication`: every replication message a node sends and
//! receives, decoded, in its log at `debug` (lessons 3 and 5, visible).
//!
//! Run the lessons' three terminals with `RUST_LOG=debug` and this flag, and
//! each node shows its side of the conversation:
//!
//! ```text
//! DEBUG [trace] received from follower 127.0.0.1:9002: FollowerHello last_lsn=0 last_term=0 term=0 listen_port=9002 cluster=none
//! DEBUG [trace] sent to follower 127.0.0.1:9002: AppendEntries term=1 prev=(LSN 3, term 1) commit=3 records=1: [4 PUT hello = (5 bytes)] (1 of 12 messages on this link in 1.0 s: 6 sent, 6 received, 1 record)
//! DEBUG [trace] sent to leader 127.0.0.1:9001: AppendEntriesAck last_lsn=4 term=1
//! ```
//!
//! The line is [`crate::protocol::describe::line`], the same one `kv_client
//! watch` prints, except that a log never holds a value: only its size.
//!
//! ## At most one line a second per link
//!
//! A busy link carries thousands of messages a second, and an idle one ten
//! heartbeats and ten ACKs. So each link (one follower's or observer's
//! connection on the leader, the connection to the leader on a follower)
//! has a [`LinkTrace`] that logs at most one line a second, for both
//! directions together:
//!
//! - a message on a link that has been quiet for a second is logged at once;
//! - the others are counted, and the first message that arrives once the
//!   second is over logs one line for all of them: one message shown in
//!   full, then `(1 of N messages on this link in T s: S sent, R received,
//!   K records)`;
//! - the message shown is the first that carried records, else the first
//!   that was not a heartbeat or an ACK (a HELLO, a refusal, an ERROR),
//!   else the latest heartbeat or ACK that went the other way from the one
//!   the line before showed: a write stands out from the heartbeats around
//!   it, and an idle link's lines alternate between a heartbeat sent and
//!   an ACK received, the conversation's two halves;
//! - what is still counted when the link ends is logged then.
//!
//! Keeping the message shown costs one copy of it per second; a message is
//! decoded only when its line is written. Without the flag, or when `debug`
//! is not enabled, a link has no `LinkTrace` and nothing is done at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::describe::{self, Values};
use crate::protocol::message::{Message, TYPE_APPEND_ENTRIES, TYPE_APPEND_ENTRIES_ACK};
use crate::replication::PeerKind;

/// Shortest time between two trace lines of one link.
pub const TRACE_LINE_INTERVAL_MS: u64 = 1_000;

/// Set once at start-up by `--trace-replication`.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn tracing on for every link opened from now on (`--trace-replication`).
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// True if links should be traced: the flag is on and `debug` is logged.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire) && log::log_enabled!(log::Level::Debug)
}

/// Which way a message went, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One link's trace: the counts since its last line and the message it
/// will show. Shared by the threads that send and receive on the link.
pub struct LinkTrace {
    kind: PeerKind,
    peer: SocketAddr,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    last_line: Option<Instant>,
    /// Which way the message shown by the last line went.
    last_shown: Option<Direction>,
    /// When the first message counted since the last line arrived.
    started: Option<Instant>,
    sent: u64,
    received: u64,
    records: u64,
    shown: Option<Shown>,
}

/// The message a line will show, as its payload bytes.
struct Shown {
    direction: Direction,
    payload: Vec<u8>,
    rank: Rank,
}

/// Which message of a second is worth showing: higher ranks win, and
/// within the lowest rank the latest does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// A heartbeat or an ACK: the link's idle chatter.
    Routine,
    /// A HELLO, a refusal, an ERROR: the link's events.
    Event,
    /// An AppendEntries with records: a write going by.
    Records,
}

impl LinkTrace {
    /// A trace for the link to `kind` `peer`, or `None` if tracing is off.
    pub fn new(kind: PeerKind, peer: SocketAddr) -> Option<LinkTrace> {
        enabled().then(|| LinkTrace { kind, peer, window: Mutex::new(Window::default()) })
    }

    /// Count the message whose payload (type byte onwards) went `direction`,
    /// and log a line if one is due.
    pub fn note(&self, direction: Direction, payload: &[u8]) {
        if let Some(line) = self.line_for(direction, payload, Instant::now()) {
            log::debug!("{line}");
        }
    }

    /// [`LinkTrace::note`] for a message that is only at hand as a [`Message`].
    pub fn note_message(&self, direction: Direction, message: &Message) {
        let mut payload = Vec::with_capacity(64);
        message.encode_payload(&mut payload);
        self.note(direction, &payload);
    }

    /// Count the message; return the line to log if one is due at `now`.
    fn line_for(&self, direction: Direction, payload: &[u8], now: Instant) -> Option<String> {
        let mut w = self.window.lock();
        w.count(direction, payload, now);
        let interval = Duration::from_millis(TRACE_LINE_INTERVAL_MS);
        let due = w.last_line.is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if due {
            w.take_line(now, self.kind, self.peer)
        } else {
            None
        }
    }

    /// The line that would be logged now for what is counted (for tests).
    #[cfg(test)]
    fn flush_line(&self, now: Instant) -> Option<String> {
        self.window.lock().take_line(now, self.kind, self.peer)
    }
}

impl Drop for LinkTrace {
    /// The link ended: log what is still counted.
    fn drop(&mut self) {
        let (kind, peer) = (self.kind, self.peer);
        if let Some(line) = self.window.get_mut().take_line(Instant::now(), kind, peer) {
            log::debug!("{line}");
        }
    }
}

impl Window {
    fn count(&mut self, direction: Direction, payload: &[u8], now: Instant) {
        match direction {
            Direction::Sent => self.sent += 1,
            Direction::Received => self.received += 1,
        }
        self.started.get_or_insert(now);
        let records = record_count(payload);
        self.records += u64::from(records);
        let rank = match payload.first() {
            _ if records > 0 => Rank::Records,
            Some(&TYPE_APPEND_ENTRIES | &TYPE_APPEND_ENTRIES_ACK) => Rank::Routine,
            _ => Rank::Event,
        };
        // Among heartbeats and ACKs, the other way from the last line wins.
        let turn = |d: Direction| self.last_shown != Some(d);
        let replace = match &self.shown {
            None => true,
            Some(shown) if rank != shown.rank => rank > shown.rank,
            Some(shown) => rank == Rank::Routine && turn(direction) >= turn(shown.direction),
        };
        if replace {
            self.shown = Some(Shown { direction, payload: payload.to_vec(), rank });
        }
    }

    /// The line for everything counted, and a fresh window; `None` if
    /// nothing was counted.
    fn take_line(&mut self, now: Instant, kind: PeerKind, peer: SocketAddr) -> Option<String> {
        let shown = self.shown.take()?;
        let words = match shown.direction {
            Direction::Sent => "sent to",
            Direction::Received => "received from",
        };
        let text = match Message::decode(&shown.payload) {
            Ok(message) => describe::line(&message, Values::Sizes),
            Err(e) => format!("a message that does not decode ({e})"),
        };
        let mut line = format!("[trace] {words} {kind} {peer}: {text}");
        let total = self.sent + self.received;
        if total > 1 {
            let seconds = self.started.map_or(0.0, |t| (now - t).as_secs_f64());
            line.push_str(&format!(
                " (1 of {total} messages on this link in {seconds:.1} s: {} sent, {} received, \
                 {} record{})",
                self.sent,
                self.received,
                self.records,
                if self.records == 1 { "" } else { "s" }
            ));
        }
        *self =
            Window { last_line: Some(now), last_shown: Some(shown.direction), ..Window::default() };
        Some(line)
    }
}

/// Records in an APPEND_ENTRIES payload (0 for any other message), read
/// from its `num_records` field without decoding the records.
fn record_count(payload: &[u8]) -> u32 {
    // type u8, then five u64 fields, then num_records u32.
    const COUNT_AT: usize = 1 + 5 * 8;
    match payload.get(..COUNT_AT + 4) {
        Some(head) if head[0] == TYPE_APPEND_ENTRIES => u32::from_be_bytes([
            head[COUNT_AT],
            head[COUNT_AT + 1],
            head[COUNT_AT + 2],
            head[COUNT_AT + 3],
        ]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::AppendEntries;
    use crate::wal::record::{Op, Record};

    fn trace() -> LinkTrace {
        let peer = SocketAddr::from(([127, 0, 0, 1], 9002));
        LinkTrace { kind: PeerKind::Follower, peer, window: Mutex::new(Window::default()) }
    }

    fn payload(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode_payload(&mut out);
        out
    }

    fn heartbeat() -> Vec<u8> {
        payload(&Message::AppendEntries(AppendEntries {
            term: 1,
            prev_lsn: 3,
            prev_term: 1,
            commit_lsn: 3,
            leader_last_lsn: 3,
            records: vec![],
        }))
    }

    fn put(lsn: u64) -> Vec<u8> {
        let op = Op::Put { key: b"hello".to_vec(), value: b"world".to_vec() };
        payload(&Message::AppendEntries(AppendEntries {
            term: 1,
            prev_lsn: lsn - 1,
            prev_term: 1,
            commit_lsn: 3,
            leader_last_lsn: lsn,
            records: vec![Record { lsn, term: 1, op }],
        }))
    }

    fn ack(lsn: u64) -> Vec<u8> {
        payload(&Message::AppendEntriesAck { last_lsn: lsn, term: 1, digest_lsn: 0, digest: 0 })
    }

    /// Feed `messages` to a window at 10 ms intervals from `t0`; return
    /// the lines it would have logged.
    fn feed(trace: &LinkTrace, t0: Instant, messages: &[(Direction, Vec<u8>)]) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, (direction, payload)) in messages.iter().enumerate() {
            let now = t0 + Duration::from_millis(10 * i as u64);
            lines.extend(trace.line_for(*direction, payload, now));
        }
        lines
    }

    #[test]
    fn the_first_message_is_logged_at_once_and_alone() {
        let trace = trace();
        let lines = feed(&trace, Instant::now(), &[(Direction::Received, ack(3))]);
        assert_eq!(
            lines,
            ["[trace] received from follower 127.0.0.1:9002: AppendEntriesAck last_lsn=3 term=1"]
        );
    }

    #[test]
    fn under_load_a_link_logs_at_most_one_line_a_second_and_says_how_many() {
        // Goal: 1000 messages in 10 s make at most 11 lines (the first at
        // once, then one a second), and every message is counted in one.
        // Method: heartbeats and ACKs every 10 ms, with a write at 4.5 s.
        let trace = trace();
        let t0 = Instant::now();
        let mut messages = Vec::new();
        for i in 0..500 {
            let out = if i == 225 { put(4) } else { heartbeat() };
            messages.push((Direction::Sent, out));
            messages.push((Direction::Received, ack(3)));
        }
        let mut lines = feed(&trace, t0, &messages);
        lines.extend(trace.flush_line(t0 + Duration::from_secs(10)));
        assert!(lines.len() <= 11, "{} lines:\n{}", lines.len(), lines.join("\n"));
        let counted: u64 = lines
            .iter()
            .map(|l| {
                l.split("(1 of ").nth(1).map_or(1, |rest| {
                    rest.split_whitespace().next().unwrap().parse::<u64>().unwrap()
                })
            })
            .sum();
        assert_eq!(counted, 1000, "{}", lines.join("\n"));
        // The second with the write shows the write, not a heartbeat.
        let write = lines.iter().find(|l| l.contains("records=1")).expect("the write is shown");
        assert!(write.contains("[4 PUT hello = (5 bytes)]"), "{write}");
        assert!(write.contains("1 record)"), "{write}");
        assert!(!write.contains("world"), "a value in a log line: {write}");
    }

    #[test]
    fn an_idle_links_lines_alternate_between_heartbeat_and_ack() {
        // Goal: a learner watching an idle link sees both halves of the
        // conversation, not only the heartbeats.
        let trace = trace();
        let mut messages = Vec::new();
        for _ in 0..400 {
            messages.push((Direction::Sent, heartbeat()));
            messages.push((Direction::Received, ack(3)));
        }
        let lines = feed(&trace, Instant::now(), &messages);
        assert!(lines.len() >= 6, "{lines:?}");
        for pair in lines.windows(2) {
            let sent = |l: &String| l.contains("sent to");
            assert_ne!(sent(&pair[0]), sent(&pair[1]), "{pair:?}");
        }
        assert!(lines.iter().any(|l| l.contains(
            "received from follower 127.0.0.1:9002: \
                                                  AppendEntriesAck last_lsn=3 term=1"
        )));
    }

    #[test]
    fn a_hello_outranks_the_chatter_around_it() {
        let trace = trace();
        let t0 = Instant::now();
        let hello = payload(&Message::ObserverHello { from_lsn: 0 });
        let lines = feed(
            &trace,
            t0,
            &[
                (Direction::Sent, heartbeat()),
                (Direction::Received, ack(3)),
                (Direction::Received, hello),
                (Direction::Received, ack(3)),
            ],
        );
        assert_eq!(lines.len(), 1, "only the first, at once");
        let line = trace.flush_line(t0 + Duration::from_secs(1)).unwrap();
        assert!(line.contains("ObserverHello from_lsn=0 (1 of 3 messages"), "{line}");
        assert!(line.contains("0 sent, 3 received, 0 records)"), "{line}");
    }

    #[test]
    fn record_count_reads_the_field_without_decoding() {
        assert_eq!(record_count(&put(4)), 1);
        assert_eq!(record_count(&heartbeat()), 0);
        assert_eq!(record_count(&ack(3)), 0);
        assert_eq!(record_count(&[TYPE_APPEND_ENTRIES, 0, 0]), 0);
    }
}
