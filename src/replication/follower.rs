//! The follower's side: dial, hello, check, repair, apply, ack, redial
//! (lessons 3 and 5; log matching and fencing: `docs/FAILOVER.md`).
//!
//! A follower runs one `follower` thread per leader it follows; a role
//! change stops it ([`FollowerLink::stop`]) and starts another.
//!
//! 1. Dial the leader (the same port its clients use); with `--auth-file`,
//!    run the handshake of [`crate::auth`] first: the leader proves it
//!    knows the secret before the follower says anything.
//! 2. Send `FOLLOWER_HELLO [last_lsn][last_term][term][listen_port][cluster_id]`
//!    — lesson 5's handshake, with where our log ends and our term.
//! 3. Read LEADER_HELLO. A leader in an **older term** than ours was
//!    deposed: refuse it (fencing). A newer term is stored before anything
//!    else. Remember the members it lists.
//! 4. For each APPEND_ENTRIES, apply the log-matching check
//!    ([`log_match::check_append`]):
//!    - no record at `prev_lsn` with `prev_term`: answer
//!      APPEND_ENTRIES_REFUSE with where our log ends; the leader probes
//!      further back;
//!    - a record we hold with another term than the leader's: our log
//!      diverges there; truncate it ([`Db::truncate_after`], which refuses
//!      to remove anything at or below the commit LSN) and log why;
//!    - then append the new records through the one write path (append,
//!      fsync, apply), advance our commit LSN, and ACK the LSN up to which
//!      our log now matches the leader's. Heartbeats are checked and ACKed
//!      the same way. Every [`DIGEST_REPORT_INTERVAL_MS`] the ACK also
//!      carries our map's digest for the leader's corruption check.
//! 5. When the link breaks — the leader restarted, the network failed, the
//!    leader was silent for [`REPLICATION_TIMEOUT_MS`] — wait with capped
//!    exponential backoff and go back to 1. If the leader's address refuses
//!    the connection, tell the election clock once per outage: no process
//!    listens there, so the leader is gone (election rule 4).
//!
//! **Two threads.** Appending, fsyncing and applying a batch takes longer
//! than reading the next one off the socket, and during a catch-up of a
//! million records the three used to take turns. So a session runs two
//! threads, and each batch passes through both, like a two-stage pipeline:
//! - The *reading* one reads, checks fencing and, for every AppendEntries
//!   that continues exactly what it queued before (same
//!   `prev_lsn`/`prev_term` as its last queued record: the log-matching
//!   check could only accept it, with nothing to skip or repair), queues
//!   the records ([`Db::queue_replicated`]), writes and fsyncs them
//!   ([`Db::wait_synced`]), and hands the message on.
//! - The *acknowledging* one, in arrival order, applies those records to
//!   the map ([`Db::wait_queued`]) and only then sends the ACK, so an ACK
//!   still means "written, fsynced and applied here". While it applies
//!   one batch, the reading thread reads and fsyncs the next.
//!
//! While the reading thread waits for its fsync, the leader's next
//! messages gather in the socket and in the 4 MiB read buffer, and the
//! next batch merges all that arrived whole (up to `MERGED_RECORDS_MAX`
//! records): one write and one fsync for several messages.
//!
//! Anything else — the first message of a session, a refusal, a repair, a
//! snapshot piece — goes to the acknowledging thread whole and is checked
//! against the complete log once everything queued before it is applied;
//! the reading thread waits for it before reading on. If either thread
//! fails, the session ends (the acknowledging one closes the socket under
//! the reading one).

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::db::{Db, QueuedWrite};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{
    APPEND_ENTRIES_RECORDS_MAX, DIGEST_REPORT_INTERVAL_MS, FRAME_BYTES_MAX,
    RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MIN_MS, REPLICATION_TIMEOUT_MS, RESERVE_KEYS_MAX,
};
use crate::logline::count;
use crate::progress::{Progress, Unit};
use crate::protocol::frame::{is_timeout, read_frame, FRAME_HEADER_BYTES};
use crate::protocol::message::TYPE_APPEND_ENTRIES;
use crate::protocol::{AppendEntries, InstallSnapshot, Message};
use crate::replication::hub::LinkState;
use crate::replication::install::{self, Received};
use crate::replication::log_match::{self, Verdict};
use crate::replication::replica::Replica;
use crate::replication::trace::{Direction, LinkTrace};
use crate::replication::PeerKind;
use crate::replication::RateLimitedLine;
use crate::status::LeaderLink;
use crate::tls::Conn;
use crate::wal::Record;
use crate::{Lsn, Term};

/// What the follower knows of its leader, for `status`, and the switch
/// that stops its thread.
pub struct FollowerLink {
    leader: SocketAddr,
    state: Mutex<(LinkState, Lsn)>,
    stopped: AtomicBool,
    /// The current connection, closed by [`FollowerLink::stop`].
    socket: Mutex<Option<TcpStream>>,
}

impl FollowerLink {
    pub fn new(leader: SocketAddr) -> FollowerLink {
        FollowerLink {
            leader,
            state: Mutex::new((LinkState::Connecting, 0)),
            stopped: AtomicBool::new(false),
            socket: Mutex::new(None),
        }
    }

    pub fn leader(&self) -> SocketAddr {
        self.leader
    }

    /// End this link for good: the node follows someone else, or leads.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(socket) = self.socket.lock().take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn report(&self) -> LeaderLink {
        let (state, leader_last_lsn) = *self.state.lock();
        // A follower's link is never "disconnected": it is always redialling.
        let state = if state == LinkState::Disconnected { LinkState::Connecting } else { state };
        LeaderLink { address: self.leader.to_string(), state: state.name().into(), leader_last_lsn }
    }

    fn set(&self, state: LinkState, leader_last_lsn: Option<Lsn>) {
        let mut s = self.state.lock();
        s.0 = state;
        if let Some(lsn) = leader_last_lsn {
            s.1 = lsn;
        }
    }
}

/// Start the follower thread: replicate from `link.leader()` until stopped.
pub fn spawn(db: Arc<Db>, replica: Arc<Replica>, link: Arc<FollowerLink>) -> Result<()> {
    std::thread::Builder::new()
        .name("follower".into())
        .spawn(move || {
            crate::sched::request_thread();
            run(&db, &replica, &link)
        })
        .map(|_| ())
        .map_err(|e| Error::io("spawning follower thread", e))
}

fn run(db: &Db, replica: &Replica, link: &FollowerLink) {
    let leader = link.leader();
    let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    let mut failures = 0u64;
    // Whether this outage's "the leader is gone" was told (election rule 4).
    let mut gone_told = false;
    while !link.is_stopped() {
        link.set(LinkState::Connecting, None);
        let started = Instant::now();
        let outcome = session(db, replica, link);
        if link.is_stopped() {
            return;
        }
        let was_connected = link.state.lock().0 != LinkState::Connecting;
        if was_connected || started.elapsed() > Duration::from_millis(REPLICATION_TIMEOUT_MS) {
            backoff_ms = RECONNECT_BACKOFF_MIN_MS;
            failures = 0;
            gone_told = false;
        }
        failures += 1;
        if let Err(Error::Io { source, .. }) = &outcome {
            if source.kind() == std::io::ErrorKind::ConnectionRefused && !gone_told {
                gone_told = true;
                replica.leader_refuses_connections(leader);
            }
        }
        if let Err(e) = outcome {
            // One line per outage, not one per redial.
            if was_connected || failures == 1 || matches!(e, Error::Server { .. }) {
                log::warn!(
                    "[replication] link to leader {leader} failed: {e}; retrying every \
                     {RECONNECT_BACKOFF_MIN_MS}..{RECONNECT_BACKOFF_MAX_MS} ms"
                );
            } else {
                log::debug!("[replication] redial of leader {leader} failed: {e}");
            }
        }
        // Sleep in short steps so a stopped link ends promptly.
        let until = Instant::now() + Duration::from_millis(backoff_ms);
        while Instant::now() < until && !link.is_stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
    }
}

/// One connection to the leader, from HELLO until it breaks.
fn session(db: &Db, replica: &Replica, link: &FollowerLink) -> Result<()> {
    let leader = link.leader();
    // With --tls-ca the link is encrypted, and with --auth-file both sides
    // prove they know the secret, before the follower says anything about
    // its log. The socket keeps the dial's timeouts: silence is failure.
    let stream = replica.dialer().dial(leader, Duration::from_millis(REPLICATION_TIMEOUT_MS))?;
    let setup = |e| Error::io("configuring replication socket", e);
    *link.socket.lock() = Some(stream.socket().try_clone().map_err(setup)?);
    if link.is_stopped() {
        return Ok(());
    }
    let mut writer = stream.try_clone().map_err(setup)?;
    let trace = LinkTrace::new(PeerKind::Leader, leader);
    let trace = trace.as_ref();
    let mut inbox = Inbox {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
        pending: None,
        bytes_received: 0,
        trace,
    };

    // Lesson 5: say where our log ends; the leader sends what comes after.
    let (last_lsn, last_term) = (db.last_lsn(), db.last_term());
    log::info!(
        "[catch-up] connected to leader {leader}, requesting records after LSN {last_lsn} \
         (term {last_term})"
    );
    let hello = Message::FollowerHello {
        last_lsn,
        last_term,
        term: replica.term(),
        listen_port: Some(replica.address().port()),
        cluster_id: db.cluster_id(),
    };
    send(&mut writer, &hello, trace)?;
    let answer = inbox.read_message(replica, leader)?;
    if let Err(e) = check_leader(db, replica, &answer, leader) {
        if let Error::OtherCluster { .. } | Error::Link(_) | Error::StaleTerm { .. } = e {
            log::error!("[replication] refusing leader {leader}: {e}");
            let _ = send(&mut writer, &Message::error(&e), trace);
        }
        return Err(e);
    }
    link.set(LinkState::CatchingUp, None);
    replica.heard_from_leader(link.leader());
    let (leader_last, leader_keys) = match answer {
        Message::LeaderHello { last_lsn, keys, .. } => (last_lsn, keys),
        _ => (last_lsn, 0),
    };
    size_map_for_catch_up(db, leader_keys, leader_last.saturating_sub(last_lsn));
    let what = format!("[catch-up] from leader {leader}");
    let progress = Progress::new(what, Unit::Records, leader_last.saturating_sub(last_lsn));

    let mut follower = Follower {
        db,
        replica,
        leader,
        catch_up: Some(CatchUp { received: 0, started: Instant::now(), progress }),
        bytes_received: 0,
        applied_log: RateLimitedLine::new(),
        digest_due: Instant::now(),
        snapshot: install::Receiver::new(db),
    };
    // Two threads ("Two threads" in the module doc): this one reads,
    // checks, queues and fsyncs; the acknowledging one applies each batch
    // and answers, in the order the messages came.
    let (jobs, jobs_rx) = crossbeam_channel::bounded::<Job>(JOBS_MAX);
    let (done_tx, done) = crossbeam_channel::bounded::<(Lsn, Term)>(1);
    std::thread::scope(|scope| {
        let acker = std::thread::Builder::new()
            .name("follower-ack".into())
            .spawn_scoped(scope, move || {
                let outcome = follower.answer(jobs_rx, done_tx, &mut writer, trace, link);
                if outcome.is_err() {
                    // End the reading side too: close the link's socket.
                    if let Some(socket) = link.socket.lock().as_ref() {
                        let _ = socket.shutdown(Shutdown::Both);
                    }
                }
                outcome
            })
            .map_err(|e| Error::io("starting the follower's ack thread", e))?;
        let mut last_queued = None;
        let received = receive(db, replica, leader, &mut inbox, jobs, done, &mut last_queued);
        let acked = acker.join();
        // Records queued but not applied when the session ended are
        // applied now (and written, if they were not), so the next
        // session's hello counts them.
        if let Some(write) = last_queued {
            let _ = db.wait_queued(write);
        }
        match acked {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => received,
            Err(_) => Err(Error::Unexpected("the follower's ack thread panicked".into())),
        }
    })
}

/// Most messages read ahead of their ACK (each up to [`MERGED_RECORDS_MAX`]
/// records).
const JOBS_MAX: usize = 4;

/// What the reading side hands the acknowledging side, in arrival order.
enum Job {
    /// An AppendEntries that continues what was queued before it: its
    /// records (if any) are queued and fsynced; ACK once they are applied.
    Queued(Queued),
    /// Any other AppendEntries (the first of a session, a repair, a refusal):
    /// checked against the whole log once everything before it is durable.
    Entries(AppendEntries, u64, u64),
    /// A piece of a snapshot (snapshot install).
    Snapshot(InstallSnapshot),
    /// Tell the leader why the link is dropped, and stop.
    Fail(Message),
}

/// An AppendEntries whose records the reading side queued, and what its
/// ACK and progress lines need.
struct Queued {
    write: Option<QueuedWrite>,
    term: Term,
    /// LSN and term of the last record queued: our log matches the
    /// leader's up to that LSN once `write` is durable.
    end: (Lsn, Term),
    commit_lsn: Lsn,
    leader_last_lsn: Lsn,
    count: usize,
    messages: u64,
    bytes_received: u64,
}

/// The reading side of a session: read, check fencing, queue the records
/// of every AppendEntries that continues what was queued before, and hand
/// each message to the acknowledging side. A message that does not simply
/// continue the log waits until that side has handled it, and with it
/// everything before.
fn receive(
    db: &Db,
    replica: &Replica,
    leader: SocketAddr,
    inbox: &mut Inbox,
    jobs: Sender<Job>,
    done: Receiver<(Lsn, Term)>,
    last_queued: &mut Option<QueuedWrite>,
) -> Result<()> {
    let stopped = || Error::Link("the follower's ack thread stopped".into());
    // Where the queued log ends: LSN and term of its last record.
    let mut end = (db.last_lsn(), db.last_term());
    loop {
        let job = match inbox.read_next(replica, leader)? {
            Incoming::Entries(ae, messages) if continues(&ae, end) => {
                match queue(db, replica, leader, ae, messages, inbox.bytes_received) {
                    Ok(queued) => {
                        end = queued.end;
                        if queued.write.is_some() {
                            *last_queued = queued.write;
                        }
                        Job::Queued(queued)
                    }
                    Err(e) => {
                        let _ = jobs.send(Job::Fail(Message::error(&e)));
                        return Err(e);
                    }
                }
            }
            Incoming::Entries(ae, messages) => Job::Entries(ae, messages, inbox.bytes_received),
            Incoming::Snapshot(piece) => Job::Snapshot(piece),
        };
        let awaited = !matches!(job, Job::Queued(_));
        jobs.send(job).map_err(|_| stopped())?;
        if awaited {
            end = done.recv().map_err(|_| stopped())?;
        }
    }
}

/// Fencing, then queue the records of `ae`, which [`continues`] the log,
/// and make them durable: written and fsynced here, while the
/// acknowledging thread applies the batch before them.
fn queue(
    db: &Db,
    replica: &Replica,
    leader: SocketAddr,
    mut ae: AppendEntries,
    messages: u64,
    bytes_received: u64,
) -> Result<Queued> {
    let term = check_term(replica, leader, ae.term, "AppendEntries")?;
    let count = ae.records.len();
    let end = ae.records.last().map_or((ae.prev_lsn, ae.prev_term), |r| (r.lsn, r.term));
    let write = db.queue_replicated(std::mem::take(&mut ae.records))?;
    if let Some(write) = write {
        db.wait_synced(write)?;
    }
    Ok(Queued {
        write,
        term,
        end,
        commit_lsn: ae.commit_lsn,
        leader_last_lsn: ae.leader_last_lsn,
        count,
        messages,
        bytes_received,
    })
}

/// True if `ae` continues the queued log that ends at `end` (LSN, term):
/// the log-matching check then accepts it with nothing to skip or repair,
/// and its records' terms do not go below the last one queued.
fn continues(ae: &AppendEntries, end: (Lsn, Term)) -> bool {
    ae.prev_lsn == end.0
        && ae.prev_term == end.1
        && ae.records.first().is_none_or(|r| r.term >= end.1 && r.lsn == end.0 + 1)
}

/// Fencing, for every message from the leader: refuse an older term,
/// store a newer one; our leader is alive. Returns the message's term.
fn check_term(replica: &Replica, leader: SocketAddr, theirs: Term, what: &str) -> Result<Term> {
    let ours = replica.term();
    if theirs < ours {
        let err = Error::StaleTerm { theirs, ours, leader: None };
        log::error!("[replication] refusing {what} from {leader}: {err}");
        return Err(err);
    }
    if theirs > ours {
        replica.observe_term(theirs, Some(leader), &format!("leader {leader}"))?;
    }
    // Our leader is alive: its followers' election clocks start again.
    replica.heard_from_leader(leader);
    Ok(theirs)
}

/// The state of one session after the handshake.
struct Follower<'a> {
    db: &'a Db,
    replica: &'a Replica,
    leader: SocketAddr,
    catch_up: Option<CatchUp>,
    /// Bytes of frames read from the leader on this link so far.
    bytes_received: u64,
    applied_log: RateLimitedLine,
    digest_due: Instant,
    /// A snapshot being received (snapshot install).
    snapshot: install::Receiver,
}

impl Follower<'_> {
    /// The acknowledging side of a session: answer each job in order —
    /// apply a queued batch, then ACK it; run the full
    /// check (and repair) for any other AppendEntries and snapshot pieces,
    /// then tell the reading side where the log ends. Returns when the
    /// reading side stops; an error ends the session.
    fn answer(
        &mut self,
        jobs: Receiver<Job>,
        done: Sender<(Lsn, Term)>,
        writer: &mut Conn,
        trace: Option<&LinkTrace>,
        link: &FollowerLink,
    ) -> Result<()> {
        for job in jobs {
            // The reading side waits for these (it could not queue them).
            let awaited = matches!(job, Job::Entries(..) | Job::Snapshot(_));
            let handled = match job {
                Job::Queued(queued) => self.acknowledge(queued, link),
                Job::Entries(ae, messages, bytes_received) => {
                    self.bytes_received = bytes_received;
                    self.handle(ae, messages, link)
                }
                Job::Snapshot(piece) => self.install(piece, link),
                Job::Fail(message) => {
                    let _ = send(writer, &message, trace);
                    return Ok(());
                }
            };
            let reply = match handled {
                Ok(reply) => reply,
                Err(e) => {
                    // Tell the leader why we drop the link (a stale term, a
                    // repair that would lose committed data), then redial.
                    let _ = send(writer, &Message::error(&e), trace);
                    return Err(e);
                }
            };
            send(writer, &reply, trace)?;
            if awaited {
                let _ = done.send((self.db.last_lsn(), self.db.last_term()));
            }
        }
        Ok(())
    }

    /// ACK an AppendEntries whose records the reading side queued: once
    /// they are durable and applied, as lesson 3 says.
    fn acknowledge(&mut self, queued: Queued, link: &FollowerLink) -> Result<Message> {
        let Queued {
            write,
            term,
            end: (matched, _),
            commit_lsn,
            leader_last_lsn,
            count,
            messages,
            bytes_received,
        } = queued;
        self.bytes_received = bytes_received;
        if let Some(write) = write {
            self.db.wait_queued(write)?;
        }
        self.db.advance_commit_lsn(commit_lsn.min(matched));
        self.note_progress(matched, count, messages, leader_last_lsn, link);
        let (digest_lsn, digest) = self.digest_report(matched);
        Ok(Message::AppendEntriesAck { last_lsn: matched, term, digest_lsn, digest })
    }

    fn check_term(&self, theirs: Term, what: &str) -> Result<Term> {
        check_term(self.replica, self.leader, theirs, what)
    }

    /// Snapshot install: one INSTALL_SNAPSHOT (see [`install`]). When the
    /// whole snapshot is in and verified, switch to it; the ACK says so.
    fn install(&mut self, piece: InstallSnapshot, link: &FollowerLink) -> Result<Message> {
        self.check_term(piece.term, "INSTALL_SNAPSHOT")?;
        link.set(LinkState::CatchingUp, None);
        let (leader, replica) = (self.leader, self.replica);
        let received =
            self.snapshot.receive(piece, self.db, leader, |_| replica.heard_from_leader(leader))?;
        let (store, meta, ack) = match received {
            Received::Piece(ack) => return Ok(ack),
            Received::Whole { store, meta, ack } => (store, meta, ack),
        };
        // The switch: no snapshot of our own is written meanwhile.
        let _one_at_a_time = self.db.snapshot_guard();
        let (lsn, keys) = (meta.lsn, meta.keys);
        self.db.install_snapshot(store, meta)?;
        self.db.catalog().keep_only(lsn, None)?;
        self.db.set_resync(None);
        log::info!(
            "[catch-up] installed the snapshot at LSN {}: {} keys; the log continues at LSN {}",
            count(lsn),
            count(keys),
            count(lsn + 1)
        );
        Ok(ack)
    }

    /// Step 4 of the module doc for one (merged) AppendEntries: check it,
    /// repair our log if it diverges, append, and build the reply.
    fn handle(
        &mut self,
        mut ae: AppendEntries,
        messages: u64,
        link: &FollowerLink,
    ) -> Result<Message> {
        let leader = self.leader;
        // Fencing: a leader of an older term was deposed.
        let term = self.check_term(ae.term, "AppendEntries")?;

        let history = self.db.term_history();
        let verdict = log_match::check_append(
            &history,
            ae.prev_lsn,
            ae.prev_term,
            ae.records.iter().map(|r| r.term),
        );
        let (truncate_after, skip, matched) = match verdict {
            Verdict::Refuse(r) => {
                log::info!(
                    "[catch-up] our log does not hold LSN {} of term {} (it ends at LSN {}, term \
                     {}); asking leader {leader} to go further back",
                    ae.prev_lsn,
                    ae.prev_term,
                    r.last_lsn,
                    history.last_term()
                );
                return Ok(Message::AppendEntriesRefuse {
                    term,
                    last_lsn: r.last_lsn,
                    conflict_lsn: r.conflict_lsn,
                    conflict_term: r.conflict_term,
                });
            }
            Verdict::Accept { truncate_after, skip, matched } => (truncate_after, skip, matched),
        };
        let new_records: Vec<Record> = ae.records.split_off(skip);
        if let Some(after) = truncate_after {
            self.repair(after, &new_records)?;
        }
        let count = new_records.len();
        if !new_records.is_empty() {
            self.db.append_replicated(new_records)?;
        }
        self.db.advance_commit_lsn(ae.commit_lsn.min(matched));
        self.note_progress(matched, count, messages, ae.leader_last_lsn, link);
        let (digest_lsn, digest) = self.digest_report(matched);
        Ok(Message::AppendEntriesAck { last_lsn: matched, term, digest_lsn, digest })
    }

    /// Our log diverges from the leader's after LSN `after`: remove our
    /// records from there on (never a committed one), saying why.
    fn repair(&self, after: Lsn, theirs: &[Record]) -> Result<()> {
        let ours_last = self.db.last_lsn();
        let history = self.db.term_history();
        let our_terms = match (history.term_at(after + 1), history.last_term()) {
            (Some(first), last) if first == last => format!("term {first}"),
            (Some(first), last) => format!("terms {first}..{last}"),
            (None, _) => "no term".into(),
        };
        let their_term = theirs.first().map_or(0, |r| r.term);
        let commit_lsn = self.db.commit_lsn();
        match self.db.truncate_after(after) {
            Ok(removed) => {
                log::warn!(
                    "[catch-up] our log diverges from leader {} after LSN {after}: LSN {}..{} \
                     were written in {our_terms}, the leader has term {their_term} from LSN {}; \
                     truncating {removed} record(s), all above the commit LSN this node knows \
                     ({commit_lsn})",
                    self.leader,
                    after + 1,
                    ours_last,
                    after + 1
                );
                Ok(())
            }
            Err(e @ Error::WouldLoseCommitted { .. }) => {
                log::error!(
                    "[catch-up] leader {} asks us to replace LSN {}..{ours_last} ({our_terms}) \
                     with its term {their_term}, but {e}; keeping our data and refusing the link",
                    self.leader,
                    after + 1
                );
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Lesson 3 and 5's log lines and the link state for `status`.
    fn note_progress(
        &mut self,
        matched: Lsn,
        count: usize,
        messages: u64,
        leader_last: Lsn,
        link: &FollowerLink,
    ) {
        if let Some(c) = &mut self.catch_up {
            c.received += count as u64;
            c.progress.note(c.received, self.bytes_received);
            if matched >= leader_last {
                log::info!(
                    "[catch-up] received {} records, caught up to LSN {matched} in {} ms",
                    c.received,
                    c.started.elapsed().as_millis()
                );
                self.catch_up = None;
                link.set(LinkState::Streaming, Some(leader_last));
            } else {
                link.set(LinkState::CatchingUp, Some(leader_last));
            }
            return;
        }
        link.set(LinkState::Streaming, Some(leader_last.max(matched)));
        self.applied_log.note(messages, count, |messages, records| {
            if messages == 1 {
                format!(
                    "[replication] received AppendEntries, applied {records} record(s), last LSN \
                     {matched}"
                )
            } else {
                format!(
                    "[replication] received {messages} AppendEntries, applied {records} \
                     record(s), last LSN {matched}"
                )
            }
        });
    }

    /// `(lsn, digest)` for the ACK when a report is due and our whole log
    /// matches the leader's; `(0, 0)` otherwise.
    fn digest_report(&mut self, matched: Lsn) -> (Lsn, u64) {
        if Instant::now() < self.digest_due {
            return (0, 0);
        }
        let (lsn, digest) = self.db.digest();
        if lsn != matched || lsn == 0 {
            return (0, 0);
        }
        self.digest_due = Instant::now() + Duration::from_millis(DIGEST_REPORT_INTERVAL_MS);
        (lsn, digest)
    }
}

/// The read side of the link, with room for one message read ahead.
struct Inbox<'t> {
    reader: BufReader<Conn>,
    pending: Option<AppendEntries>,
    /// Bytes of frames read so far (for catch-up progress lines).
    bytes_received: u64,
    /// `--trace-replication`: this link's trace, for both directions.
    trace: Option<&'t LinkTrace>,
}

/// What the leader sent next.
enum Incoming {
    /// AppendEntries, merged (see [`Inbox::read_next`]), and how many.
    Entries(AppendEntries, u64),
    /// A piece of a snapshot (snapshot install).
    Snapshot(InstallSnapshot),
}

impl Inbox<'_> {
    /// Read the leader's next message. APPEND_ENTRIES are merged with any
    /// more that have already arrived whole in the read buffer and continue
    /// them in the same term: under load, one WAL append, one fsync and one
    /// ACK then serve several messages.
    fn read_next(&mut self, replica: &Replica, leader: SocketAddr) -> Result<Incoming> {
        let mut merged = match self.pending.take() {
            Some(ae) => ae,
            None => match self.read_message(replica, leader)? {
                Message::AppendEntries(ae) => ae,
                Message::InstallSnapshot(piece) => return Ok(Incoming::Snapshot(piece)),
                other => {
                    return Err(Error::Unexpected(format!("{} from the leader", other.name())))
                }
            },
        };
        let mut messages = 1;
        while self.append_entries_is_buffered() && merged.records.len() < MERGED_RECORDS_MAX {
            let Message::AppendEntries(next) = self.read_message(replica, leader)? else {
                unreachable!("the buffered frame is an APPEND_ENTRIES");
            };
            let end = merged.prev_lsn + merged.records.len() as Lsn;
            let end_term = merged.records.last().map_or(merged.prev_term, |r| r.term);
            if next.term != merged.term || next.prev_lsn != end || next.prev_term != end_term {
                self.pending = Some(next);
                break;
            }
            merged.commit_lsn = merged.commit_lsn.max(next.commit_lsn);
            merged.leader_last_lsn = next.leader_last_lsn;
            merged.records.extend(next.records);
            messages += 1;
        }
        Ok(Incoming::Entries(merged, messages))
    }

    /// True if a whole APPEND_ENTRIES frame is already in the read buffer.
    fn append_entries_is_buffered(&self) -> bool {
        self.frame_is_buffered() && self.reader.buffer().get(4) == Some(&TYPE_APPEND_ENTRIES)
    }

    /// True if a whole frame is already in the read buffer (no syscall needed).
    fn frame_is_buffered(&self) -> bool {
        let buffered = self.reader.buffer();
        buffered.len() >= 4
            && buffered.len() - 4
                >= u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize
    }

    /// Read the leader's next message. An ERROR from the leader (it refused
    /// us) is logged and returned as an error, except the corruption
    /// check's verdict, which marks this node unhealthy and keeps the link.
    fn read_message(&mut self, replica: &Replica, leader: SocketAddr) -> Result<Message> {
        loop {
            let frame = match read_frame(&mut self.reader, FRAME_BYTES_MAX) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(Error::Link("the leader closed the connection".into())),
                Err(e) if is_timeout(&e) => {
                    return Err(Error::Link(format!(
                        "nothing from the leader for {REPLICATION_TIMEOUT_MS} ms (silent peer)"
                    )))
                }
                Err(e) => return Err(e),
            };
            self.bytes_received += (FRAME_HEADER_BYTES + frame.len()) as u64;
            if let Some(trace) = self.trace {
                trace.note(Direction::Received, &frame);
            }
            match Message::decode(&frame)? {
                Message::Error { code, message } if code == ErrorCode::Unhealthy as u16 => {
                    replica.mark_unhealthy(&message);
                }
                Message::Error { code, message } => {
                    log::error!("[replication] leader {leader} refused us: {message}");
                    return Err(Error::Server { code: ErrorCode::from_u16(code), message });
                }
                message => return Ok(message),
            }
        }
    }
}

/// Most records merged into one append (4 full messages).
const MERGED_RECORDS_MAX: usize = 4 * APPEND_ENTRIES_RECORDS_MAX as usize;

/// The session's read buffer: room for several full AppendEntries (about
/// 560 KB each with 100-byte values) to arrive whole while the reading
/// thread fsyncs, so that they merge into one batch. With 256 KB none did,
/// and a catch-up of a million records took 245 fsyncs instead of 70.
const READ_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The leader's LEADER_HELLO must name our cluster (a fresh follower joins
/// it) and a term no older than ours (fencing); a newer term is stored.
fn check_leader(db: &Db, replica: &Replica, message: &Message, leader: SocketAddr) -> Result<()> {
    let Message::LeaderHello { cluster_id: theirs, term, members, .. } = message else {
        return Err(Error::Unexpected(format!("{} instead of LEADER_HELLO", message.name())));
    };
    let ours_term = replica.term();
    if *term < ours_term {
        return Err(Error::StaleTerm { theirs: *term, ours: ours_term, leader: None });
    }
    match db.cluster_id() {
        Some(ours) if ours == *theirs => {}
        Some(ours) => {
            return Err(Error::OtherCluster {
                ours: ours.to_string(),
                theirs: theirs.to_string(),
                peer: format!("leader {leader}"),
            })
        }
        None if db.last_lsn() > 0 => {
            return Err(Error::Link(format!(
                "this node's log has {} record(s) but no cluster id, so it cannot be shown to \
                 belong to leader {leader}'s cluster {theirs}; move its data dir aside",
                db.last_lsn()
            )))
        }
        None => {
            db.adopt_cluster_id(*theirs)?;
            log::info!("[replication] joined cluster {theirs} of leader {leader}");
        }
    }
    if *term > ours_term {
        replica.observe_term(*term, Some(leader), &format!("leader {leader}"))?;
    }
    replica.set_members(members.clone())
}

/// Before a catch-up that will at least double the map, size it for the
/// leader's key count (LEADER_HELLO `keys`) at once: growing a table by
/// doubling moves every key it holds each time, and during a catch-up of
/// a million records that was a sixth of the follower's time. The count
/// is the leader's word, so it is capped by what the catch-up could bring
/// (`records` more keys at most) and by [`RESERVE_KEYS_MAX`]. A smaller
/// catch-up (a reconnection) leaves the map to grow as usual, a table at
/// a time.
fn size_map_for_catch_up(db: &Db, leader_keys: u64, records: u64) {
    let Some(keys) = keys_to_reserve(db.key_count() as u64, leader_keys, records) else {
        return;
    };
    match db.reserve_keys(keys as usize) {
        Some(took) => log::info!(
            "[catch-up] sized the map for {} keys, the leader's count, in {} ms",
            count(keys),
            took.as_millis()
        ),
        None => log::warn!(
            "[catch-up] could not size the map for {} keys ahead; it grows as records arrive",
            count(keys)
        ),
    }
}

/// How many keys to size the map for, holding `ours` with `records` to
/// come from a leader that holds `leader_keys`; `None` unless the catch-up
/// at least doubles the map.
fn keys_to_reserve(ours: u64, leader_keys: u64, records: u64) -> Option<u64> {
    let keys = leader_keys.min(ours.saturating_add(records)).min(RESERVE_KEYS_MAX);
    (keys >= ours.saturating_mul(2).max(1)).then_some(keys)
}

fn send(writer: &mut Conn, message: &Message, trace: Option<&LinkTrace>) -> Result<()> {
    let mut out = Vec::with_capacity(64);
    message.encode_frame(&mut out);
    if let Some(trace) = trace {
        trace.note(Direction::Sent, &out[FRAME_HEADER_BYTES..]);
    }
    writer.write_all(&out).map_err(|e| Error::io(format!("sending {}", message.name()), e))
}

struct CatchUp {
    received: u64,
    started: Instant,
    /// A line a second while it lasts longer than one ([`crate::progress`]).
    progress: Progress,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Op;

    fn append(prev_lsn: Lsn, prev_term: Term, terms: &[Term]) -> AppendEntries {
        let records = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Record { lsn: prev_lsn + 1 + i as Lsn, term, op: Op::Noop })
            .collect();
        AppendEntries { term: 3, prev_lsn, prev_term, commit_lsn: 0, leader_last_lsn: 0, records }
    }

    #[test]
    fn the_leaders_key_count_is_trusted_only_as_far_as_the_catch_up_can_fill() {
        assert_eq!(keys_to_reserve(0, 1_000_000, 1_000_000), Some(1_000_000), "a late joiner");
        assert_eq!(keys_to_reserve(0, 1_000, 5_000), Some(1_000), "an overwritten log");
        assert_eq!(keys_to_reserve(10, 5_000, 100), Some(110), "no more than can come");
        assert_eq!(keys_to_reserve(0, u64::MAX, u64::MAX), Some(RESERVE_KEYS_MAX));
        assert_eq!(keys_to_reserve(600, 1_000, 400), None, "less than doubles the map");
        assert_eq!(keys_to_reserve(0, 0, 10), None, "nothing to hold");
        assert_eq!(keys_to_reserve(u64::MAX, u64::MAX, u64::MAX), None);
    }

    #[test]
    fn only_an_exact_continuation_of_the_queued_log_skips_the_full_check() {
        let end = (10, 2);
        assert!(continues(&append(10, 2, &[2, 3]), end));
        assert!(continues(&append(10, 2, &[]), end), "a heartbeat at the end");
        assert!(!continues(&append(9, 2, &[2]), end), "overlaps what is queued");
        assert!(!continues(&append(11, 2, &[2]), end), "leaves a gap");
        assert!(!continues(&append(10, 1, &[2]), end), "another term at prev_lsn: a repair");
        assert!(!continues(&append(10, 2, &[1]), end), "a term going down");
    }
}
