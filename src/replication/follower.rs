//! The follower's side: dial, hello, apply, ack, redial (lessons 3 and 5).
//!
//! A follower runs one `follower` thread for its whole life:
//!
//! 1. Dial the leader (the same port its clients use).
//! 2. Send `FOLLOWER_HELLO [last_lsn][listen_port]` with the last LSN in its
//!    own WAL — lesson 5's handshake; 0 for a fresh node means "everything".
//! 3. For each APPEND_ENTRIES: hand the records to the one write path
//!    ([`Db::append_replicated`], which refuses anything but `last_lsn + 1`),
//!    which appends them to the WAL, fsyncs once for the batch and applies
//!    them; record the leader's `commit_lsn`; reply `APPEND_ENTRIES_ACK
//!    [last_lsn]`. Heartbeats (empty AppendEntries) are ACKed too, so the
//!    leader can tell a quiet follower from a dead one.
//! 4. When the link breaks — the leader restarted, the network failed, the
//!    leader was silent for [`REPLICATION_TIMEOUT_MS`] — wait with capped
//!    exponential backoff and go back to 1. HELLO resynchronises from the
//!    follower's real position, so nothing is lost or applied twice.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::{
    APPEND_ENTRIES_RECORDS_MAX, FRAME_BYTES_MAX, RECONNECT_BACKOFF_MAX_MS,
    RECONNECT_BACKOFF_MIN_MS, REPLICATION_TIMEOUT_MS,
};
use crate::protocol::frame::{is_timeout, read_frame};
use crate::protocol::{AppendEntries, Message};
use crate::replication::hub::LinkState;
use crate::replication::RateLimitedLine;
use crate::status::LeaderLink;
use crate::Lsn;

/// What the follower knows of its leader, for `status`.
pub struct FollowerLink {
    leader: SocketAddr,
    state: Mutex<(LinkState, Lsn)>,
}

impl FollowerLink {
    pub fn new(leader: SocketAddr) -> FollowerLink {
        FollowerLink { leader, state: Mutex::new((LinkState::Connecting, 0)) }
    }

    pub fn leader(&self) -> SocketAddr {
        self.leader
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

/// Start the follower thread: replicate from `link.leader()` forever.
pub fn spawn(db: Arc<Db>, link: Arc<FollowerLink>, listen_port: u16) -> Result<()> {
    std::thread::Builder::new()
        .name("follower".into())
        .spawn(move || run(&db, &link, listen_port))
        .map(|_| ())
        .map_err(|e| Error::io("spawning follower thread", e))
}

fn run(db: &Db, link: &FollowerLink, listen_port: u16) {
    let leader = link.leader();
    let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    let mut failures = 0u64;
    loop {
        link.set(LinkState::Connecting, None);
        let started = Instant::now();
        let outcome = session(db, link, listen_port);
        let was_connected = link.state.lock().0 != LinkState::Connecting;
        if was_connected || started.elapsed() > Duration::from_millis(REPLICATION_TIMEOUT_MS) {
            backoff_ms = RECONNECT_BACKOFF_MIN_MS;
            failures = 0;
        }
        failures += 1;
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
        std::thread::sleep(Duration::from_millis(backoff_ms));
        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
    }
}

/// One connection to the leader, from HELLO until it breaks.
fn session(db: &Db, link: &FollowerLink, listen_port: u16) -> Result<()> {
    let leader = link.leader();
    let timeout = Duration::from_millis(REPLICATION_TIMEOUT_MS);
    let stream = TcpStream::connect_timeout(&leader, timeout)
        .map_err(|e| Error::io(format!("connecting to {leader}"), e))?;
    let setup = |e| Error::io("configuring replication socket", e);
    stream.set_nodelay(true).map_err(setup)?;
    stream.set_read_timeout(Some(timeout)).map_err(setup)?;
    stream.set_write_timeout(Some(timeout)).map_err(setup)?;
    let mut writer = stream.try_clone().map_err(setup)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);

    // Lesson 5: say where our log ends; the leader sends what comes after.
    let last_lsn = db.last_lsn();
    let cluster_id = db.cluster_id();
    log::info!("[catch-up] connected to leader {leader}, requesting records after LSN {last_lsn}");
    let hello = Message::FollowerHello { last_lsn, listen_port: Some(listen_port), cluster_id };
    send(&mut writer, &hello)?;
    let answer = read_message(&mut reader, leader)?;
    if let Err(e) = check_leader(db, &answer, leader) {
        if let Error::OtherCluster { .. } | Error::Link(_) = e {
            log::error!("[replication] refusing leader {leader}: {e}");
            let _ = send(&mut writer, &Message::error(&e));
        }
        return Err(e);
    }
    link.set(LinkState::CatchingUp, None);

    let mut catch_up = Some(CatchUp { received: 0, started: Instant::now() });
    let mut applied_log = RateLimitedLine::new();
    loop {
        let (ae, messages) = read_append_entries(&mut reader, leader)?;
        let count = ae.records.len();
        let last = match apply(db, ae.records, ae.commit_lsn) {
            Ok(last) => last,
            Err(e) => {
                // Tell the leader why we drop the link (e.g. a gap), then
                // redial: HELLO resynchronises from our real position.
                let _ = send(&mut writer, &Message::error(&e));
                return Err(e);
            }
        };
        send(&mut writer, &Message::AppendEntriesAck { last_lsn: last })?;

        if let Some(c) = &mut catch_up {
            c.received += count as u64;
            if last >= ae.leader_last_lsn {
                log::info!(
                    "[catch-up] received {} records, caught up to LSN {last} in {} ms",
                    c.received,
                    c.started.elapsed().as_millis()
                );
                catch_up = None;
                link.set(LinkState::Streaming, Some(ae.leader_last_lsn));
            } else {
                link.set(LinkState::CatchingUp, Some(ae.leader_last_lsn));
            }
        } else {
            link.set(LinkState::Streaming, Some(ae.leader_last_lsn.max(last)));
            applied_log.note(messages, count, |messages, records| {
                if messages == 1 {
                    format!(
                        "[replication] received AppendEntries, applied {records} record(s), \
                         last LSN {last}"
                    )
                } else {
                    format!(
                        "[replication] received {messages} AppendEntries, applied {records} \
                         record(s), last LSN {last}"
                    )
                }
            });
        }
    }
}

/// Read the next APPEND_ENTRIES, merged with any more that have already
/// arrived whole in the read buffer: under load, one WAL append, one fsync
/// and one ACK then serve several messages. Returns the merged message and
/// how many were merged.
fn read_append_entries(
    reader: &mut BufReader<TcpStream>,
    leader: SocketAddr,
) -> Result<(AppendEntries, u64)> {
    let mut merged = expect_append_entries(read_message(reader, leader)?)?;
    let mut messages = 1;
    while frame_is_buffered(reader) && merged.records.len() < MERGED_RECORDS_MAX {
        let next = expect_append_entries(read_message(reader, leader)?)?;
        if let (Some(last), Some(first)) = (merged.records.last(), next.records.first()) {
            let expected = last.lsn.checked_add(1);
            if expected != Some(first.lsn) {
                let expected = expected.unwrap_or(u64::MAX);
                return Err(Error::NotContiguous { expected, got: first.lsn });
            }
        }
        merged.commit_lsn = merged.commit_lsn.max(next.commit_lsn);
        merged.leader_last_lsn = next.leader_last_lsn;
        merged.records.extend(next.records);
        messages += 1;
    }
    Ok((merged, messages))
}

/// Most records merged into one append (4 full messages).
const MERGED_RECORDS_MAX: usize = 4 * APPEND_ENTRIES_RECORDS_MAX as usize;

fn expect_append_entries(message: Message) -> Result<AppendEntries> {
    match message {
        Message::AppendEntries(ae) => Ok(ae),
        other => Err(Error::Unexpected(format!("{} from the leader", other.name()))),
    }
}

/// True if a whole frame is already in the read buffer (no syscall needed).
fn frame_is_buffered(reader: &BufReader<TcpStream>) -> bool {
    let buffered = reader.buffer();
    buffered.len() >= 4
        && buffered.len() - 4
            >= u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize
}

/// Read the leader's next message. An ERROR from the leader (it refused
/// us) is logged and returned as an error; so are silence and a close.
fn read_message(reader: &mut BufReader<TcpStream>, leader: SocketAddr) -> Result<Message> {
    let frame = match read_frame(reader, FRAME_BYTES_MAX) {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Error::Link("the leader closed the connection".into())),
        Err(e) if is_timeout(&e) => {
            return Err(Error::Link(format!(
                "nothing from the leader for {REPLICATION_TIMEOUT_MS} ms (silent peer)"
            )))
        }
        Err(e) => return Err(e),
    };
    match Message::decode(&frame)? {
        Message::Error { code, message } => {
            log::error!("[replication] leader {leader} refused us: {message}");
            Err(Error::Server { code: crate::error::ErrorCode::from_u16(code), message })
        }
        message => Ok(message),
    }
}

/// The leader's LEADER_HELLO must name our cluster; a fresh follower joins it.
fn check_leader(db: &Db, message: &Message, leader: SocketAddr) -> Result<()> {
    let Message::LeaderHello { cluster_id: theirs, .. } = *message else {
        return Err(Error::Unexpected(format!("{} instead of LEADER_HELLO", message.name())));
    };
    match db.cluster_id() {
        Some(ours) if ours == theirs => Ok(()),
        Some(ours) => Err(Error::OtherCluster {
            ours: ours.to_string(),
            theirs: theirs.to_string(),
            peer: format!("leader {leader}"),
        }),
        None if db.last_lsn() > 0 => Err(Error::Link(format!(
            "this node's log has {} record(s) but no cluster id, so it cannot be shown to \
             belong to leader {leader}'s cluster {theirs}; move its data dir aside",
            db.last_lsn()
        ))),
        None => {
            db.adopt_cluster_id(theirs)?;
            log::info!("[replication] joined cluster {theirs} of leader {leader}");
            Ok(())
        }
    }
}

/// Apply one AppendEntries through the write path; return our new last LSN.
fn apply(db: &Db, records: Vec<crate::wal::Record>, commit_lsn: Lsn) -> Result<Lsn> {
    let last = if records.is_empty() { db.last_lsn() } else { db.append_replicated(records)? };
    db.advance_commit_lsn(commit_lsn.min(last));
    Ok(last)
}

fn send(writer: &mut TcpStream, message: &Message) -> Result<()> {
    let mut out = Vec::with_capacity(32);
    message.encode_frame(&mut out);
    writer.write_all(&out).map_err(|e| Error::io(format!("sending {}", message.name()), e))
}

struct CatchUp {
    received: u64,
    started: Instant,
}
