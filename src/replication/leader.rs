//! The leader's side of one follower: catch-up, then the live stream (lessons 3 and 5).
//!
//! A follower's connection starts like any client's; when its first message
//! is FOLLOWER_HELLO the connection thread calls [`serve_follower`] and
//! becomes that follower's **sender**. It spawns an **ack reader** on a
//! clone of the socket, so sending never waits for ACKs and ACKs never wait
//! for sending.
//!
//! ## One cursor, two sources
//!
//! The sender keeps one number, `next_lsn`: the next record the follower
//! needs. Records come from two places:
//!
//! - the **channel**, fed by [`crate::db::Db`] with every committed batch;
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

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::cluster::ClusterId;
use crate::db::{Batch, Db};
use crate::error::{Error, Result};
use crate::limits::{
    APPEND_ENTRIES_BYTES_MAX, APPEND_ENTRIES_RECORDS_MAX, FRAME_BYTES_MAX, HEARTBEAT_INTERVAL_MS,
    REPLICATION_TIMEOUT_MS,
};
use crate::protocol::frame::{is_timeout, read_frame, write_message};
use crate::protocol::message::AppendEntriesEncoder;
use crate::protocol::Message;
use crate::replication::hub::{Hub, LinkState, Session};
use crate::replication::RateLimitedLine;
use crate::Lsn;

/// What a follower said in its FOLLOWER_HELLO.
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    pub last_lsn: Lsn,
    pub listen_port: Option<u16>,
    pub cluster_id: Option<ClusterId>,
}

/// Serve a follower that said `FOLLOWER_HELLO [last_lsn]...` on `stream`.
///
/// Called on the connection's own thread; returns when the link ends.
/// 1. Refuse a follower from another cluster, or whose log is ahead of
///    ours (a diverged history): ERROR, logged on both sides.
/// 2. Register the session and subscribe to new batches.
/// 3. Answer LEADER_HELLO with our cluster id, then send everything after
///    `last_lsn` from the WAL (catch-up).
/// 4. Stream new batches, with heartbeats when idle, until the link breaks.
pub fn serve_follower(
    mut stream: TcpStream,
    peer: SocketAddr,
    hello: Hello,
    cluster_id: ClusterId,
    db: &Arc<Db>,
    hub: &Arc<Hub>,
) {
    let Hello { last_lsn, listen_port, .. } = hello;
    let address = SocketAddr::new(peer.ip(), listen_port.unwrap_or(peer.port()));

    // 1. Never mix histories.
    if let Err(err) = check_follower(&hello, cluster_id, db.last_lsn(), address) {
        log::error!("[replication] refusing follower {address}: {err}");
        let _ = write_message(&mut stream, &Message::error(&err));
        return;
    }

    // 2. Subscribe before reading the WAL, so no batch falls in between.
    let session = hub.attach(address, last_lsn);
    let batches = db.subscribe();
    let target = db.last_lsn();
    let _ = stream.set_write_timeout(Some(Duration::from_millis(REPLICATION_TIMEOUT_MS)));
    if let Err(e) =
        write_message(&mut stream, &Message::LeaderHello { cluster_id, last_lsn: target })
    {
        log::warn!("[replication] follower {address}: {e}");
        hub.detach(session);
        return;
    }
    log::info!(
        "[catch-up] follower {address} requests records after LSN {last_lsn}; \
         sending {} record(s) (leader last LSN {target})",
        target - last_lsn
    );

    let closed = Arc::new(AtomicBool::new(false));
    if let Err(e) = spawn_ack_reader(&stream, address, session, hub, &closed) {
        log::warn!("[replication] follower {address}: {e}");
        hub.detach(session);
        return;
    }

    let mut sender = Sender::new(stream, address, db, hub, session, last_lsn + 1);
    let outcome = sender.catch_up(target).and_then(|()| sender.stream_live(&batches, &closed));
    let _ = sender.stream.shutdown(Shutdown::Both);
    if hub.is_current(session) {
        hub.detach(session);
        match outcome {
            Ok(()) => log::warn!("[replication] follower {address} disconnected"),
            Err(e) => log::warn!("[replication] follower {address} disconnected: {e}"),
        }
    }
}

/// A follower may replicate from us if it is of our cluster (or fresh) and
/// its log is not ahead of ours.
fn check_follower(
    hello: &Hello,
    ours: ClusterId,
    leader_last: Lsn,
    address: SocketAddr,
) -> Result<()> {
    match hello.cluster_id {
        Some(theirs) if theirs != ours => Err(Error::OtherCluster {
            ours: ours.to_string(),
            theirs: theirs.to_string(),
            peer: format!("follower {address}"),
        }),
        _ if hello.last_lsn > leader_last => {
            Err(Error::Diverged { follower_lsn: hello.last_lsn, leader_lsn: leader_last })
        }
        _ => Ok(()),
    }
}

/// One follower's sender: the socket and the cursor `next_lsn`.
struct Sender<'a> {
    stream: TcpStream,
    address: SocketAddr,
    db: &'a Db,
    hub: &'a Hub,
    session: Session,
    next_lsn: Lsn,
    sent_log: RateLimitedLine,
}

impl<'a> Sender<'a> {
    fn new(
        stream: TcpStream,
        address: SocketAddr,
        db: &'a Db,
        hub: &'a Hub,
        session: Session,
        next_lsn: Lsn,
    ) -> Sender<'a> {
        Sender { stream, address, db, hub, session, next_lsn, sent_log: RateLimitedLine::new() }
    }

    /// Lesson 5: send every record up to `target` from the WAL.
    fn catch_up(&mut self, target: Lsn) -> Result<()> {
        let started = Instant::now();
        let first = self.next_lsn;
        if first > target {
            // Already up to date: an empty AppendEntries says so.
            self.send_heartbeat()?;
        }
        while self.next_lsn <= target {
            self.send_from_wal(target, target)?;
        }
        self.hub.set_state(self.session, LinkState::Streaming);
        if target >= first {
            log::info!(
                "[catch-up] sent follower {} {} record(s), LSN {first}..{target}, in {} ms; \
                 now streaming",
                self.address,
                target + 1 - first,
                started.elapsed().as_millis()
            );
        }
        Ok(())
    }

    /// Lesson 3: forward committed batches as they arrive; heartbeat when idle.
    fn stream_live(&mut self, batches: &Receiver<Batch>, closed: &AtomicBool) -> Result<()> {
        let heartbeat = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
        loop {
            if closed.load(Ordering::Acquire) || !self.hub.is_current(self.session) {
                return Ok(());
            }
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

    /// Send the records of `ready` the follower still needs, reading any gap
    /// before them from the WAL.
    fn send_batches(&mut self, ready: &[Batch]) -> Result<()> {
        let mut message = self.new_message(0);
        for record in ready.iter().flat_map(|b| b.iter()) {
            if record.lsn < self.next_lsn {
                continue; // already sent (catch-up overlapped the channel)
            }
            if record.lsn > self.next_lsn {
                // Batches were dropped while the channel was full: the gap
                // is in the WAL. Send what we have, then the gap.
                self.flush(&mut message)?;
                log::info!(
                    "[replication] follower {} fell behind its channel; reading LSN {}..{} \
                     from the WAL",
                    self.address,
                    self.next_lsn,
                    record.lsn - 1
                );
                while self.next_lsn < record.lsn {
                    self.send_from_wal(record.lsn - 1, record.lsn - 1)?;
                }
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
        let mut message = self.new_message(leader_last);
        for record in &records {
            message.push(record);
        }
        self.next_lsn = last + 1;
        self.write(&mut message)
    }

    fn send_heartbeat(&mut self) -> Result<()> {
        let mut message = self.new_message(self.next_lsn - 1);
        self.write(&mut message)
    }

    fn new_message(&self, leader_last_lsn: Lsn) -> AppendEntriesEncoder {
        AppendEntriesEncoder::new(self.hub.commit_lsn(self.db.last_lsn()), leader_last_lsn)
    }

    /// Send `message` if it holds records, and start it afresh.
    fn flush(&mut self, message: &mut AppendEntriesEncoder) -> Result<()> {
        if let Some(last) = message.last_lsn() {
            message.set_leader_last_lsn(last);
            self.write(message)?;
            *message = self.new_message(0);
        }
        Ok(())
    }

    fn write(&mut self, message: &mut AppendEntriesEncoder) -> Result<()> {
        use std::io::Write;
        let count = message.count();
        let frame = message.finish();
        debug_assert!(frame.len() <= FRAME_BYTES_MAX as usize + 4);
        self.stream
            .write_all(frame)
            .map_err(|e| Error::io(format!("sending AppendEntries to {}", self.address), e))?;
        let (address, last) = (self.address, self.next_lsn - 1);
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

/// Start the thread that reads this follower's ACKs into the hub. It closes
/// the link if the follower is silent for [`REPLICATION_TIMEOUT_MS`].
fn spawn_ack_reader(
    stream: &TcpStream,
    address: SocketAddr,
    session: Session,
    hub: &Arc<Hub>,
    closed: &Arc<AtomicBool>,
) -> Result<()> {
    let mut reader = stream.try_clone().map_err(|e| Error::io("cloning follower socket", e))?;
    reader
        .set_read_timeout(Some(Duration::from_millis(REPLICATION_TIMEOUT_MS)))
        .map_err(|e| Error::io("setting read timeout", e))?;
    let hub = Arc::clone(hub);
    let closed = Arc::clone(closed);
    std::thread::Builder::new()
        .name(format!("acks-{address}"))
        .spawn(move || {
            let why = read_acks(&mut reader, session, &hub);
            if hub.is_current(session) {
                log::warn!("[replication] follower {address}: {why}; closing the link");
            }
            closed.store(true, Ordering::Release);
            let _ = reader.shutdown(Shutdown::Both);
        })
        .map_err(|e| Error::io("spawning ack reader", e))?;
    Ok(())
}

/// Read ACKs until the link fails; return why it ended.
fn read_acks(reader: &mut TcpStream, session: Session, hub: &Hub) -> String {
    let mut buffered = std::io::BufReader::new(reader);
    loop {
        let frame = match read_frame(&mut buffered, FRAME_BYTES_MAX) {
            Ok(Some(frame)) => frame,
            Ok(None) => return "connection closed".into(),
            Err(e) if is_timeout(&e) => {
                return format!("no ACK for {REPLICATION_TIMEOUT_MS} ms (silent peer)")
            }
            Err(e) => return e.to_string(),
        };
        match Message::decode(&frame) {
            Ok(Message::AppendEntriesAck { last_lsn }) => hub.record_ack(session, last_lsn),
            Ok(Message::Error { message, .. }) => return format!("follower reported: {message}"),
            Ok(other) => return format!("unexpected {} on a replication link", other.name()),
            Err(e) => return e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::FsyncPolicy;
    use crate::wal::{Op, Record};
    use std::net::TcpListener;

    /// A sender wired to a real socket, over a log of `count` records.
    fn setup(count: u64) -> (tempfile::TempDir, Arc<Db>, Arc<Hub>, TcpStream, TcpStream) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), FsyncPolicy::Never).unwrap();
        for i in 1..=count {
            db.write(Op::Put { key: format!("k{i}").into(), value: b"v".to_vec() }).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let follower_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (leader_side, _) = listener.accept().unwrap();
        (dir, Arc::new(db), Arc::new(Hub::new(&[])), leader_side, follower_side)
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
        let session = hub.attach(address, next_lsn - 1);
        let mut sender = Sender::new(stream, address, db, hub, session, next_lsn);
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
