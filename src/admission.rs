//! Admission: the budgets that every incoming connection draws on, and the
//! counting of refusals.
//!
//! `--max-connections` bounds threads and descriptors, but a server that
//! stops there can still be held down by strangers who never finish
//! anything: connections that never authenticate, frames that trickle in a
//! byte at a time (slow loris), length prefixes that promise megabytes
//! that never come, fake followers that each make the leader read its
//! whole log. Each of these has a budget here, each with its reason in
//! [`crate::limits`]:
//!
//! | budget                                 | drawn by                                         | when spent                                    |
//! |----------------------------------------|--------------------------------------------------|-----------------------------------------------|
//! | connections (`--max-connections`)      | every accepted connection, until it closes       | the new one gets ERROR 7 and is closed        |
//! | unauthenticated (`--max-unauthenticated`) | a connection until it authenticates (or, without auth, sends its first request) | the **oldest** such connection is closed to make room |
//! | partial-frame bytes (`--max-partial-frame-bytes`) | a large frame's buffer beyond its first 64 KiB, while the frame arrives | that frame gets ERROR 18; connection closed  |
//! | catch-ups (`--max-catch-ups`)          | a follower from FOLLOWER_HELLO until it is caught up | that FOLLOWER_HELLO gets ERROR 18; it redials |
//!
//! (The per-frame deadline, `--frame-timeout-ms`, needs no shared budget:
//! [`crate::server::inbound`] enforces it on each connection.)
//!
//! Closing the oldest unauthenticated connection, rather than refusing the
//! new one, is what keeps the door open during a flood: a legitimate
//! client finishes its handshake in a round trip or two, long before a
//! hundred newer strangers push it out, while a stranger that just sits
//! there is soon pushed out by the next.
//!
//! ## Refusals are counted, not logged one by one
//!
//! A flood of refusals must not become a flood of log lines. Each refusal
//! — of a limit, of authentication, and of bad input or silence, which a
//! flood can send as easily — is counted by kind ([`Refusal`]) with the
//! address it came from, and a `refusals` thread logs one line per kind at
//! most every [`REFUSAL_LOG_INTERVAL_MS`]: how many, the last address, and
//! for bad input the last one's error.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::limits::{CLIENT_READ_TIMEOUT_MS, REFUSAL_LOG_INTERVAL_MS};
use crate::status::ConnectionsReport;

/// The bounds admission enforces (from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// `--max-connections`.
    pub connections_max: usize,
    /// `--max-unauthenticated`: at most `connections_max`.
    pub unauthenticated_max: usize,
    /// `--max-partial-frame-bytes`.
    pub partial_frame_bytes_max: usize,
    /// `--max-catch-ups`.
    pub catch_ups_max: usize,
    /// `--frame-timeout-ms`.
    pub frame_timeout: Duration,
}

/// Every kind of refusal, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` was reached: the new connection was refused.
    ConnectionsFull,
    /// The unauthenticated share was full: its oldest connection was closed.
    Evicted,
    /// The node is stopping.
    ShuttingDown,
    /// A connection did not begin with the handshake, or not in time.
    AuthRequired,
    /// A connection's proof was wrong.
    AuthFailed,
    /// An authenticated connection asked for what its secret does not allow.
    Forbidden,
    /// A frame did not arrive within `--frame-timeout-ms` of its first byte.
    SlowFrame,
    /// The partial-frame budget was spent.
    PartialFrameBytes,
    /// `--max-catch-ups` followers were already being caught up.
    CatchUpsBusy,
    /// A new connection sent nothing within its first-request timeout.
    Silent,
    /// A connection sent malformed or unexpected input (a bad frame, a
    /// reply type as a request, FOLLOWER_HELLO to a follower, ...).
    BadInput,
}

impl Refusal {
    const ALL: [Refusal; 11] = [
        Refusal::ConnectionsFull,
        Refusal::Evicted,
        Refusal::ShuttingDown,
        Refusal::AuthRequired,
        Refusal::AuthFailed,
        Refusal::Forbidden,
        Refusal::SlowFrame,
        Refusal::PartialFrameBytes,
        Refusal::CatchUpsBusy,
        Refusal::Silent,
        Refusal::BadInput,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label of `kvstore_refusals_total` (`/metrics`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionsFull => "max_connections",
            Refusal::Evicted => "max_unauthenticated",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::AuthRequired => "auth_required",
            Refusal::AuthFailed => "auth_failed",
            Refusal::Forbidden => "forbidden",
            Refusal::SlowFrame => "slow_frame",
            Refusal::PartialFrameBytes => "partial_frame_bytes",
            Refusal::CatchUpsBusy => "max_catch_ups",
            Refusal::Silent => "silent",
            Refusal::BadInput => "bad_input",
        }
    }

    /// The kind of refusal an error that ended a connection stands for.
    pub fn of(err: &Error) -> Option<Refusal> {
        match err {
            Error::AuthRequired => Some(Refusal::AuthRequired),
            Error::AuthFailed(_) => Some(Refusal::AuthFailed),
            Error::Forbidden(_) => Some(Refusal::Forbidden),
            Error::TooSlow { .. } => Some(Refusal::SlowFrame),
            Error::Busy(_) => Some(Refusal::PartialFrameBytes),
            _ => None,
        }
    }

    /// One log line for `count` refusals of this kind.
    fn line(self, count: u64, last: Option<Last>, limits: &AdmissionLimits) -> String {
        let what = match self {
            Refusal::ConnectionsFull => format!(
                "[server] refused {count} connection(s): --max-connections ({}) reached",
                limits.connections_max
            ),
            Refusal::Evicted => format!(
                "[server] closed {count} connection(s) that had not authenticated or sent a \
                 request yet, oldest first, to make room (--max-unauthenticated {})",
                limits.unauthenticated_max
            ),
            Refusal::ShuttingDown => {
                format!("[server] refused {count} connection(s): this node is shutting down")
            }
            Refusal::AuthRequired => format!(
                "[auth] refused {count} connection(s) that did not authenticate (no handshake, a \
                 malformed one, or not in time)"
            ),
            Refusal::AuthFailed => {
                format!("[auth] refused {count} connection(s) whose proof was wrong")
            }
            Refusal::Forbidden => format!(
                "[auth] refused {count} request(s) that the connection's secret does not allow \
                 (member messages need the replication secret)"
            ),
            Refusal::SlowFrame => format!(
                "[limits] closed {count} connection(s) whose frame did not arrive within {} ms \
                 of its first byte (--frame-timeout-ms)",
                limits.frame_timeout.as_millis()
            ),
            Refusal::PartialFrameBytes => format!(
                "[limits] refused {count} frame(s): partial frames already hold the most bytes \
                 allowed ({}, --max-partial-frame-bytes)",
                limits.partial_frame_bytes_max
            ),
            Refusal::CatchUpsBusy => format!(
                "[catch-up] refused {count} FOLLOWER_HELLO(s): {} catch-ups already running \
                 (--max-catch-ups)",
                limits.catch_ups_max
            ),
            Refusal::Silent => format!(
                "[server] closed {count} connection(s) that sent nothing within \
                 {CLIENT_READ_TIMEOUT_MS} ms of connecting"
            ),
            Refusal::BadInput => {
                format!("[server] closed {count} connection(s) that sent bad input")
            }
        };
        match last {
            Some(Last { peer, why: Some(why) }) => {
                format!("{what} in the last second; the last from {peer}: {why}")
            }
            Some(Last { peer, why: None }) => {
                format!("{what} in the last second; the last from {peer}")
            }
            None => format!("{what} in the last second"),
        }
    }
}

/// The shared budgets of one server, and its refusal counters.
pub struct Admission {
    pub limits: AdmissionLimits,
    /// Connections being served.
    active: AtomicUsize,
    /// Connections that have not proved anything yet, oldest first: the
    /// socket is a clone, to close it when it must make room.
    waiting: Mutex<VecDeque<(u64, TcpStream)>>,
    next_id: AtomicU64,
    /// Followers between FOLLOWER_HELLO and the end of their catch-up.
    catch_ups: Arc<Slots>,
    /// Bytes held by frames still arriving, over all connections.
    frame_bytes: ByteBudget,
    counts: [AtomicU64; Refusal::ALL.len()],
    last: Mutex<[Option<Last>; Refusal::ALL.len()]>,
}

/// The last refusal of a kind: from whom, and why (if more than the kind).
#[derive(Debug, Clone)]
struct Last {
    peer: SocketAddr,
    why: Option<String>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            active: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            catch_ups: Arc::new(Slots::new(limits.catch_ups_max)),
            frame_bytes: ByteBudget::new(limits.partial_frame_bytes_max),
            counts: Default::default(),
            last: Mutex::new(Default::default()),
        })
    }

    /// Admit a new connection, or say why not ([`Error::TooManyConnections`]).
    /// A full unauthenticated share closes its oldest connection instead.
    pub fn admit(self: &Arc<Self>, stream: &TcpStream, peer: SocketAddr) -> Result<Ticket> {
        if self.active.load(Ordering::Acquire) >= self.limits.connections_max {
            self.count(Refusal::ConnectionsFull, peer);
            return Err(Error::TooManyConnections { max: self.limits.connections_max });
        }
        let socket = stream.try_clone().map_err(|e| Error::io("cloning a new connection", e))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut waiting = self.waiting.lock();
            let evicted = if waiting.len() >= self.limits.unauthenticated_max {
                waiting.pop_front()
            } else {
                None
            };
            waiting.push_back((id, socket));
            evicted
        };
        if let Some((_, oldest)) = evicted {
            let from = oldest.peer_addr().unwrap_or(peer);
            // Its thread wakes with an error and ends, giving back its slot.
            let _ = oldest.shutdown(std::net::Shutdown::Both);
            self.count(Refusal::Evicted, from);
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        Ok(Ticket { admission: Arc::clone(self), id, waiting: true })
    }

    /// Connections being served right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Connections that have not authenticated (or sent a request) yet.
    pub fn unauthenticated(&self) -> usize {
        self.waiting.lock().len()
    }

    /// How much of each budget is in use, for STATUS.
    pub fn report(&self) -> ConnectionsReport {
        let limits = &self.limits;
        ConnectionsReport {
            active: self.active() as u64,
            active_max: limits.connections_max as u64,
            unauthenticated: self.unauthenticated() as u64,
            unauthenticated_max: limits.unauthenticated_max as u64,
            catch_ups: self.catch_ups.used() as u64,
            catch_ups_max: limits.catch_ups_max as u64,
            partial_frame_bytes: self.frame_bytes.used() as u64,
            partial_frame_bytes_max: limits.partial_frame_bytes_max as u64,
        }
    }

    /// A slot for one follower's probe and catch-up, if one is free.
    pub fn catch_up_slot(&self, peer: SocketAddr) -> Option<Permit> {
        let permit = self.catch_ups.try_acquire();
        if permit.is_none() {
            self.count(Refusal::CatchUpsBusy, peer);
        }
        permit
    }

    /// The partial-frame budget, for [`crate::server::inbound`].
    pub fn frame_bytes(&self) -> &ByteBudget {
        &self.frame_bytes
    }

    /// Count one refusal from `peer`; it is logged within a second.
    pub fn count(&self, kind: Refusal, peer: SocketAddr) {
        self.count_why(kind, peer, None);
    }

    /// Count one refusal from `peer`, with why; the last one's reason is
    /// logged with the sum.
    pub fn count_why(&self, kind: Refusal, peer: SocketAddr, why: Option<String>) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        crate::metrics::global().refused(kind.label());
        self.last.lock()[kind.index()] = Some(Last { peer, why });
    }

    /// The log lines for the refusals counted since the last call (one per
    /// kind that had any), resetting the counters.
    pub fn take_refusal_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for kind in Refusal::ALL {
            let count = self.counts[kind.index()].swap(0, Ordering::Relaxed);
            if count > 0 {
                let last = self.last.lock()[kind.index()].take();
                lines.push(kind.line(count, last, &self.limits));
            }
        }
        lines
    }

    /// Start the thread that logs the refusal counts every
    /// [`REFUSAL_LOG_INTERVAL_MS`].
    pub fn spawn_refusal_logger(self: &Arc<Self>) -> Result<()> {
        let admission = Arc::clone(self);
        std::thread::Builder::new()
            .name("refusals".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(REFUSAL_LOG_INTERVAL_MS));
                for line in admission.take_refusal_lines() {
                    log::warn!("{line}");
                }
            })
            .map(|_| ())
            .map_err(|e| Error::io("spawning the refusal logger", e))
    }
}

/// One admitted connection's place: it leaves the unauthenticated share
/// when it proves itself ([`Ticket::proved`]) and its slot when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    waiting: bool,
}

impl Ticket {
    /// The connection authenticated (or, without auth, sent a complete
    /// request): it no longer counts against the unauthenticated share.
    pub fn proved(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.admission.waiting.lock().retain(|(id, _)| *id != self.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.proved();
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A fixed number of slots (the catch-ups).
pub struct Slots {
    used: AtomicUsize,
    max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots { used: AtomicUsize::new(0), max }
    }

    /// Take a slot if one is free; it is given back when the permit drops.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(self)))
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One slot of [`Slots`], given back on drop.
pub struct Permit(Arc<Slots>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A number of bytes shared by many users (the partial-frame budget).
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    pub fn new(max: usize) -> ByteBudget {
        ByteBudget { used: AtomicUsize::new(0), max }
    }

    /// Take `bytes` if they are available; false (and nothing taken) if not.
    pub fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// Give back `bytes` taken earlier.
    pub fn give_back(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        assert!(before >= bytes, "gave back {bytes} bytes of a budget holding {before}");
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn limits(connections_max: usize, unauthenticated_max: usize) -> AdmissionLimits {
        AdmissionLimits {
            connections_max,
            unauthenticated_max,
            partial_frame_bytes_max: 1000,
            catch_ups_max: 2,
            frame_timeout: Duration::from_secs(1),
        }
    }

    /// A connected pair: (the server's socket, the client's socket).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn a_full_unauthenticated_share_closes_its_oldest_connection() {
        // Goal: the oldest stranger makes room for the newest, and a
        // connection that proved itself is never pushed out.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let admission = Admission::new(limits(10, 2));
        let (s1, mut c1) = pair(&listener);
        let (s2, _c2) = pair(&listener);
        let (s3, _c3) = pair(&listener);
        let mut proved = admission.admit(&s1, peer).unwrap();
        proved.proved();
        let _t2 = admission.admit(&s2, peer).unwrap();
        let (s4, _c4) = pair(&listener);
        let _t3 = admission.admit(&s3, peer).unwrap();
        assert_eq!(admission.unauthenticated(), 2);
        let _t4 = admission.admit(&s4, peer).unwrap();
        assert_eq!(admission.unauthenticated(), 2, "s2 was closed to make room");
        let mut byte = [0u8; 1];
        use std::io::Read;
        assert_eq!(s2.try_clone().unwrap().read(&mut byte).unwrap(), 0, "s2 was shut down");
        c1.set_nonblocking(true).unwrap();
        assert!(c1.read(&mut byte).is_err(), "the proved connection is still open");
        assert_eq!(admission.active(), 4);
        let lines = admission.take_refusal_lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("closed 1 connection(s)"), "{lines:?}");
    }

    #[test]
    fn the_connection_limit_refuses_and_tickets_give_slots_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let admission = Admission::new(limits(1, 1));
        let (s1, _c1) = pair(&listener);
        let (s2, _c2) = pair(&listener);
        let ticket = admission.admit(&s1, peer).unwrap();
        assert!(matches!(admission.admit(&s2, peer), Err(Error::TooManyConnections { max: 1 })));
        drop(ticket);
        assert_eq!((admission.active(), admission.unauthenticated()), (0, 0));
        assert!(admission.admit(&s2, peer).is_ok());
    }

    #[test]
    fn refusals_are_summed_into_one_line_per_kind() {
        // Goal: a thousand refusals make one line, not a thousand.
        let admission = Admission::new(limits(1, 1));
        let peer: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        for _ in 0..1000 {
            admission.count(Refusal::AuthFailed, peer);
        }
        admission.count(Refusal::SlowFrame, peer);
        admission.count_why(Refusal::BadInput, peer, Some("unknown message type 0x7f".into()));
        let lines = admission.take_refusal_lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].ends_with("the last from 127.0.0.1:4242: unknown message type 0x7f"));
        assert!(
            lines[0].contains("refused 1000 connection(s)") && lines[0].contains("127.0.0.1:4242")
        );
        assert!(admission.take_refusal_lines().is_empty(), "counters reset");
    }

    #[test]
    fn slots_and_byte_budgets_never_exceed_their_maximum() {
        let slots = Arc::new(Slots::new(2));
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
        let budget = ByteBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41));
        assert!(budget.try_take(40));
        budget.give_back(100);
        assert_eq!(budget.used(), 0);
        assert!(!budget.try_take(usize::MAX), "no overflow");
    }
}
