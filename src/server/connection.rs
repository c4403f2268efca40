//! One client connection: read a request, answer it, repeat (week 2).
//!
//! Replies are buffered and flushed when no further request is already
//! waiting in the read buffer, so a client that pipelines requests gets its
//! replies in few syscalls, and one that waits gets each reply at once.
//! A pipelining client's writes are also *queued* together: when a PUT or
//! DELETE arrives with more whole write requests behind it in the read
//! buffer, all of them (up to [`PIPELINED_WRITES_MAX`]) join the WAL queue
//! at once, go into the same batch, and the thread waits for durability
//! and the write concern once, for the last; then the replies go out in
//! order (Redis does the same for the commands of one read).
//!
//! With `--auth-file`, a connection must first pass the handshake of
//! [`crate::auth`]; until it has, nothing else is read, and whatever goes
//! wrong gets one ERROR (code 15 or 16) that says nothing about the node.
//! A connection authenticated as a client may not send what only members
//! send (with `--replication-auth-file`): ERROR 17.
//!
//! Bad input ends only this connection: a frame over the limit, an unknown
//! type, a payload whose lengths disagree with the frame, or a message that
//! is not a request get an ERROR reply (where the socket still takes one)
//! and the connection is closed. Nothing is written to the WAL, and other
//! connections never notice.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Refusal, Ticket};
use crate::auth::{self, Scope, ServerHandshake, ServerKeys};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::{
    AUTH_FRAME_BYTES_MAX, AUTH_TIMEOUT_MS, CLIENT_READ_TIMEOUT_MS, FRAME_BYTES_MAX,
};
use crate::logline;
use crate::protocol::frame::is_timeout;
use crate::protocol::{write_message, Message};
use crate::replication::leader::{serve_follower, serve_observer, Hello};
use crate::replication::parse_peer;
use crate::replication::replica::RoleView;
use crate::server::inbound::Inbound;
use crate::server::{fsync_name, Node};
use crate::stages::Stage;
use crate::status::{
    LeaderLink, MemberContact, ResyncStatus, SnapshotStatus, StatusReport, StorageStatus,
};
use crate::tls::Conn;
use crate::wal::Op;
use crate::Lsn;

/// Bytes buffered for reading and writing on a client connection (64 KiB).
const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// Most writes of a pipelining client queued together (see the module doc).
pub const PIPELINED_WRITES_MAX: usize = 1024;

/// How long a refused connection's late bytes are read and dropped before
/// it is closed, so the ERROR arrives whole (see [`refuse`]).
const REFUSAL_LINGER_MS: u64 = 100;

/// Most bytes read and dropped from a refused connection.
const REFUSAL_DRAIN_BYTES_MAX: u64 = 64 * 1024;

/// Serve one connection until the peer closes it or sends something bad.
/// `ticket` is its place in the server's budgets, given back at the end.
/// Why it ended is counted, and logged once a second with the others like
/// it: a flood of bad connections is a few lines, not one each.
pub fn serve(stream: TcpStream, peer: SocketAddr, node: &Arc<Node>, mut ticket: Ticket) {
    match serve_requests(stream, peer, node, &mut ticket) {
        Ok(()) => {}
        Err(e @ Error::Io { .. }) => log::debug!("[server] {peer}: {e}"),
        Err(e) => match Refusal::of(&e) {
            Some(kind) => node.admission.count(kind, peer),
            None => node.admission.count_why(Refusal::BadInput, peer, Some(e.to_string())),
        },
    }
}

fn serve_requests(
    stream: TcpStream,
    peer: SocketAddr,
    node: &Arc<Node>,
    ticket: &mut Ticket,
) -> Result<()> {
    let accepted = Instant::now();
    let setup = |e| Error::io("configuring client socket", e);
    stream.set_nodelay(true).map_err(setup)?;
    let stream = match &node.tls {
        Some(config) => accept_tls(stream, config)?,
        None => Conn::plain(stream),
    };
    let budget = node.admission.frame_bytes();
    let frame_timeout = node.admission.limits.frame_timeout;
    let reader = stream.try_clone().map_err(setup)?;
    let mut inbound = Inbound::new(reader, CONNECTION_BUFFER_BYTES, frame_timeout, budget);
    let mut writer = BufWriter::with_capacity(CONNECTION_BUFFER_BYTES, stream);

    // 1. With --auth-file, nothing is read but the handshake until the
    // connection has proved it knows the secret.
    let scope = match &node.auth {
        Some(keys) => {
            let until = accepted + Duration::from_millis(AUTH_TIMEOUT_MS);
            let scope = authenticate(&mut inbound, &mut writer, keys, until)?;
            ticket.proved();
            scope
        }
        None => Scope::Replication,
    };
    // 2. A client must say something soon after connecting; once it has,
    // it may stay idle (connection pools do).
    let mut wait_until = Some(accepted + Duration::from_millis(CLIENT_READ_TIMEOUT_MS));
    let mut first = true;
    // A request read ahead while gathering a pipelining client's writes.
    let mut read_ahead: Option<Result<Message>> = None;
    loop {
        let (message, is_first) = match read_ahead.take() {
            Some(Ok(message)) => (message, false),
            Some(Err(e @ Error::Io { .. })) => return Err(e),
            Some(Err(e)) => return Err(refuse(&mut writer, e)),
            None => {
                let frame = match inbound.read_frame(FRAME_BYTES_MAX, wait_until) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Ok(()),
                    Err(e) if is_timeout(&e) => {
                        node.admission.count(Refusal::Silent, peer);
                        return Ok(());
                    }
                    Err(e @ Error::Io { .. }) => return Err(e),
                    Err(e) => return Err(refuse(&mut writer, e)),
                };
                let is_first = std::mem::take(&mut first);
                if is_first {
                    wait_until = None;
                    ticket.proved();
                }
                (Message::decode(&frame).map_err(|e| refuse(&mut writer, e))?, is_first)
            }
        };
        if !scope.allows(&message) {
            let why = format!(
                "{} needs the replication secret (--replication-auth-file); this connection \
                 authenticated as a client",
                message.name()
            );
            return Err(refuse(&mut writer, Error::Forbidden(why)));
        }
        if let Message::FollowerHello { last_lsn, last_term, term, listen_port, cluster_id } =
            message
        {
            if !is_first {
                let e =
                    Error::Unexpected("FOLLOWER_HELLO must be a connection's first message".into());
                return Err(refuse(&mut writer, e));
            }
            let hello = Hello { last_lsn, last_term, term, listen_port, cluster_id };
            return hand_over_to_replication(writer, peer, node, hello);
        }
        if let Message::AuthHello { .. } = message {
            let why = "this node was started without --auth-file and cannot prove it knows a \
                       secret";
            return Err(refuse(&mut writer, Error::AuthFailed(why.into())));
        }
        if let Message::ObserverHello { from_lsn } = message {
            if !is_first {
                let e =
                    Error::Unexpected("OBSERVER_HELLO must be a connection's first message".into());
                return Err(refuse(&mut writer, e));
            }
            return hand_over_to_observer(writer, peer, node, from_lsn);
        }
        let in_flight = node.shutdown.begin_request();
        let kind = message.name();
        // A pipelining client: queue its buffered writes together.
        let pipelined = if inbound.has_whole_frame() { write_op(message) } else { Err(message) };
        let message = match pipelined {
            Ok(op) => {
                let mut group = vec![(kind, op)];
                read_ahead = read_ahead_writes(&mut inbound, &scope, &mut group);
                for (kind, reply) in write_group(node, group) {
                    crate::metrics::global().request(kind, &reply);
                    write_message(&mut writer, &reply)?;
                }
                if !inbound.has_buffered() || node.shutdown.is_requested() {
                    writer.flush().map_err(|e| Error::io("flushing reply", e))?;
                }
                drop(in_flight);
                continue;
            }
            Err(message) => message,
        };
        let reply = match handle_request(node, message) {
            Ok(reply) => reply,
            Err(e @ Error::Unexpected(_)) => return Err(refuse(&mut writer, e)),
            Err(e) => Message::error(&e),
        };
        crate::metrics::global().request(kind, &reply);
        write_message(&mut writer, &reply)?;
        if !inbound.has_buffered() || node.shutdown.is_requested() {
            writer.flush().map_err(|e| Error::io("flushing reply", e))?;
        }
        drop(in_flight);
    }
}

/// The server's half of the handshake of [`crate::auth`] (steps 2 and 4),
/// all of it by `until`. Returns the scope the connection proved; any
/// failure is answered with one ERROR (code 15 or 16) that says nothing
/// else about this node, and ends the connection.
fn authenticate(
    inbound: &mut Inbound<'_>,
    writer: &mut BufWriter<Conn>,
    keys: &ServerKeys,
    until: Instant,
) -> Result<Scope> {
    let read = |inbound: &mut Inbound<'_>, missing: Error| -> Result<Message> {
        match inbound.read_frame(AUTH_FRAME_BYTES_MAX, Some(until)) {
            Ok(Some(frame)) => Message::decode(&frame).map_err(|_| missing),
            Ok(None) => Err(Error::AuthRequired),
            Err(e @ Error::Io { .. }) if !is_timeout(&e) => Err(e),
            Err(_) => Err(missing),
        }
    };
    let hello = read(inbound, Error::AuthRequired).map_err(|e| refuse(writer, e))?;
    let nonce = auth::new_nonce()?;
    let (handshake, challenge) =
        ServerHandshake::start(&hello, nonce).map_err(|e| refuse(writer, e))?;
    write_message(writer, &challenge)?;
    writer.flush().map_err(|e| Error::io("sending AUTH_CHALLENGE", e))?;
    let missing = Error::AuthFailed("no AUTH_PROOF in time".into());
    let proof = read(inbound, missing).map_err(|e| refuse(writer, e))?;
    let (scope, ok) = handshake.finish(keys, &proof).map_err(|e| refuse(writer, e))?;
    write_message(writer, &ok)?;
    writer.flush().map_err(|e| Error::io("sending AUTH_OK", e))?;
    Ok(scope)
}

/// The TLS handshake (`--tls-cert`), within the time the auth handshake
/// gets; a failure ends the connection (counted as bad input).
fn accept_tls(stream: TcpStream, config: &Arc<rustls::ServerConfig>) -> Result<Conn> {
    let setup = |e| Error::io("configuring client socket", e);
    let timeout = Some(Duration::from_millis(AUTH_TIMEOUT_MS));
    stream.set_read_timeout(timeout).map_err(setup)?;
    stream.set_write_timeout(timeout).map_err(setup)?;
    let conn = Conn::accept(stream, config)?;
    conn.socket().set_read_timeout(None).map_err(setup)?;
    conn.socket().set_write_timeout(None).map_err(setup)?;
    Ok(conn)
}

/// Send an ERROR for `err` (best effort) and return it, to close the
/// connection. Closing a socket with unread bytes (the rest of a pipeline)
/// sends a reset, which can destroy the ERROR before the peer reads it; so
/// stop writing, then read and drop what the peer sent for a moment
/// (bounded in time and bytes) before the caller closes.
fn refuse(writer: &mut BufWriter<Conn>, err: Error) -> Error {
    let _ = write_message(writer, &Message::error(&err));
    let _ = writer.flush();
    let socket = writer.get_ref().socket();
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(REFUSAL_LINGER_MS)));
    let _ = std::io::copy(&mut socket.take(REFUSAL_DRAIN_BYTES_MAX), &mut std::io::sink());
    err
}

/// Lesson 5: the first message was FOLLOWER_HELLO; this connection now
/// belongs to replication. A follower refuses it (naming its leader), after
/// taking note of a newer term.
fn hand_over_to_replication(
    mut writer: BufWriter<Conn>,
    peer: SocketAddr,
    node: &Arc<Node>,
    hello: Hello,
) -> Result<()> {
    match node.replica.view() {
        RoleView::Leader { .. } => {
            // A catch-up may read the whole WAL: only so many at once
            // (counted and logged by `catch_up_slot` when refused).
            let Some(slot) = node.admission.catch_up_slot(peer) else {
                let why = format!(
                    "{} catch-ups already running (--max-catch-ups)",
                    node.admission.limits.catch_ups_max
                );
                let _ = refuse(&mut writer, Error::Busy(why));
                return Ok(());
            };
            writer.flush().map_err(|e| Error::io("flushing", e))?;
            let stream = writer.into_inner().map_err(|e| Error::io("flushing", e.into_error()))?;
            serve_follower(stream, peer, hello, &node.replica, slot);
            Ok(())
        }
        RoleView::Follower { leader, .. } => {
            let why = match leader {
                Some(l) => {
                    format!("FOLLOWER_HELLO sent to a follower; replicate from the leader {l}")
                }
                None => "FOLLOWER_HELLO sent to a follower that knows no leader yet".into(),
            };
            Err(refuse(&mut writer, Error::Unexpected(why)))
        }
    }
}

/// `kv_client watch`: the first message was OBSERVER_HELLO. Only the
/// leader has a stream to watch; a follower names it.
fn hand_over_to_observer(
    mut writer: BufWriter<Conn>,
    peer: SocketAddr,
    node: &Arc<Node>,
    from_lsn: crate::Lsn,
) -> Result<()> {
    match node.replica.view() {
        RoleView::Leader { .. } => {
            writer.flush().map_err(|e| Error::io("flushing", e))?;
            let stream = writer.into_inner().map_err(|e| Error::io("flushing", e.into_error()))?;
            serve_observer(stream, peer, from_lsn, &node.replica);
            Ok(())
        }
        RoleView::Follower { leader, .. } => {
            let why = match leader {
                Some(l) => format!("OBSERVER_HELLO sent to a follower; watch the leader {l}"),
                None => "OBSERVER_HELLO sent to a follower that knows no leader yet".into(),
            };
            Err(refuse(&mut writer, Error::Unexpected(why)))
        }
    }
}

/// Answer one client request. `Err(Unexpected)` closes the connection;
/// other errors become an ERROR reply on an open connection.
fn handle_request(node: &Node, request: Message) -> Result<Message> {
    match request {
        Message::Put { key, value } => {
            // Keys at debug only, escaped and cut; values never (logline).
            log::debug!("[server] PUT {} ({} value bytes)", logline::key(&key), value.len());
            write(node, Op::Put { key, value })
        }
        Message::Delete { key } => {
            log::debug!("[server] DELETE {}", logline::key(&key));
            write(node, Op::Delete { key })
        }
        Message::Get { key } => {
            if let Some(why) = node.replica.unhealthy() {
                return Err(Error::Unhealthy(why));
            }
            Ok(match node.db.get(&key) {
                Some(value) => Message::Value { value },
                None => Message::NotFound,
            })
        }
        Message::Read { consistency, min_lsn, key } => {
            Ok(match node.replica.read(consistency, min_lsn, &key, node.write_timeout)? {
                Some(value) => Message::Value { value },
                None => Message::NotFound,
            })
        }
        Message::Promote { force } => Ok(Message::Done { message: node.replica.promote(force)? }),
        Message::Follow { leader } => {
            let leader = parse_peer(&leader)?;
            Ok(Message::Done { message: node.replica.follow(leader)? })
        }
        Message::RequestVote { cluster_id, term, last_lsn, last_term, candidate } => {
            node.replica.check_cluster(cluster_id, &format!("candidate {candidate}"))?;
            heard_from(node, &candidate);
            node.replica.handle_vote(term, &candidate, last_lsn, last_term)
        }
        Message::PreVote { cluster_id, term, last_lsn, last_term, candidate } => {
            node.replica.check_cluster(cluster_id, &format!("candidate {candidate}"))?;
            heard_from(node, &candidate);
            node.replica.handle_pre_vote(term, &candidate, last_lsn, last_term)
        }
        Message::TransferLeadership { target } => {
            let target = match target.as_str() {
                "" => None,
                t => Some(parse_peer(t)?),
            };
            Ok(Message::Done { message: node.replica.transfer_leadership(target)? })
        }
        Message::TimeoutNow { cluster_id, term } => {
            node.replica.check_cluster(cluster_id, "a leader handing over")?;
            node.replica.handle_timeout_now(term)
        }
        Message::LeaderAnnounce { cluster_id, term, leader } => {
            node.replica.check_cluster(cluster_id, &format!("leader {leader}"))?;
            heard_from(node, &leader);
            node.replica.handle_announce(term, &leader)
        }
        Message::Snapshot => Ok(Message::Done { message: node.snapshotter.request()?.describe() }),
        Message::Status => {
            let json = serde_json::to_string(&status(node))
                .map_err(|e| Error::Unexpected(format!("encoding status: {e}")))?;
            Ok(Message::StatusReply { json })
        }
        other => {
            Err(Error::Unexpected(format!("{} is not a request a client may send", other.name())))
        }
    }
}

/// A member asked us something: it is reachable (status shows when).
fn heard_from(node: &Node, member: &str) {
    if let Ok(address) = parse_peer(member) {
        node.replica.heard_from(address);
    }
}

/// The change a PUT or DELETE request asks for; other requests back.
fn write_op(message: Message) -> std::result::Result<Op, Message> {
    match message {
        Message::Put { key, value } => Ok(Op::Put { key, value }),
        Message::Delete { key } => Ok(Op::Delete { key }),
        other => Err(other),
    }
}

/// Move the whole write requests already in the read buffer into `group`,
/// up to [`PIPELINED_WRITES_MAX`]. Reading a whole buffered frame cannot
/// block. Returns the first request that is not such a write (or why it
/// could not be read): it is served next, on its own.
fn read_ahead_writes(
    inbound: &mut Inbound<'_>,
    scope: &Scope,
    group: &mut Vec<(&'static str, Op)>,
) -> Option<Result<Message>> {
    while group.len() < PIPELINED_WRITES_MAX && inbound.has_whole_frame() {
        let message = match inbound.read_frame(FRAME_BYTES_MAX, None) {
            Ok(Some(frame)) => Message::decode(&frame),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        match message {
            Ok(message) if scope.allows(&message) => {
                let kind = message.name();
                match write_op(message) {
                    Ok(op) => group.push((kind, op)),
                    Err(message) => return Some(Ok(message)),
                }
            }
            other => return Some(other),
        }
    }
    None
}

/// A pipelining client's writes, queued together: one reply each, in the
/// order of the requests. A write over the size limits gets its own error
/// and changes nothing; the others share one batch, and succeed or fail
/// together.
fn write_group(node: &Node, group: Vec<(&'static str, Op)>) -> Vec<(&'static str, Message)> {
    let mut replies: Vec<(&'static str, Option<Message>)> = Vec::with_capacity(group.len());
    let mut ops = Vec::with_capacity(group.len());
    for (kind, op) in group {
        match op.check_limits() {
            Ok(()) => {
                replies.push((kind, None));
                ops.push(op);
            }
            Err(e) => replies.push((kind, Some(Message::error(&e)))),
        }
    }
    log::debug!("[server] {} pipelined writes queued together", ops.len());
    let written = if ops.is_empty() { None } else { Some(write_all(node, ops)) };
    // The queued writes got consecutive LSNs from the first, in order.
    let mut next_lsn = match &written {
        Some(Ok((first, _))) => *first,
        _ => 0,
    };
    replies
        .into_iter()
        .map(|(kind, refused)| match (refused, &written) {
            (Some(refused), _) => (kind, refused),
            (None, Some(Err(e))) => (kind, Message::error(e)),
            (None, _) => {
                next_lsn += 1;
                (kind, Message::Ok { lsn: next_lsn - 1 })
            }
        })
        .collect()
}

/// A client write: only a leader takes it, then waits for the write concern.
/// If the leader steps down meanwhile, a `majority`/`all` write fails.
fn write(node: &Node, op: Op) -> Result<Message> {
    let (_, lsn) = write_all(node, vec![op])?;
    Ok(Message::Ok { lsn })
}

/// Client writes queued together ([`Db::write_all`]); returns the first
/// and last LSN once all satisfy the write concern.
fn write_all(node: &Node, ops: Vec<Op>) -> Result<(Lsn, Lsn)> {
    let started = Instant::now();
    let count = ops.len();
    let hub = match node.replica.view() {
        RoleView::Leader { hub, .. } => hub,
        RoleView::Follower { .. } => return Err(node.replica.not_leader()),
    };
    let (first, lsn, term) = match node.db.write_all(ops) {
        Ok(written) => written,
        Err(Error::NotLeader { .. }) => return Err(node.replica.not_leader()),
        Err(e) => return Err(e),
    };
    if term != hub.term() {
        // Stamped by a newer leadership of this node than the hub we read:
        // wait on the hub that owns the term.
        return match node.replica.view() {
            RoleView::Leader { hub, .. } if hub.term() == term => {
                hub.wait_for(lsn, node.write_concern, node.write_timeout)?;
                Ok((first, lsn))
            }
            _ => Err(Error::Deposed { lsn, term, why: "the term changed".into() }),
        };
    }
    hub.wait_for(lsn, node.write_concern, node.write_timeout)?;
    hub.acknowledged(lsn);
    for _ in 0..count {
        node.db.stages().record(Stage::Total, started.elapsed());
    }
    Ok((first, lsn))
}

/// This node's STATUS report.
pub fn status(node: &Node) -> StatusReport {
    let db = &node.db;
    let (last_lsn, digest) = db.digest();
    let mut report = StatusReport {
        role: String::new(),
        term: node.replica.term(),
        last_term: db.term_at(last_lsn).unwrap_or(0),
        address: node.address.to_string(),
        members: node.replica.members(),
        member_contacts: node
            .replica
            .member_contacts()
            .into_iter()
            .map(|(address, last_heard_ms_ago)| MemberContact { address, last_heard_ms_ago })
            .collect(),
        unhealthy: node.replica.unhealthy(),
        cluster_id: db.cluster_id().map(|id| id.to_string()),
        last_lsn,
        digest: format!("{digest:016x}"),
        commit_lsn: db.commit_lsn(),
        keys: db.key_count() as u64,
        fsync: fsync_name(db.fsync_policy()).into(),
        write_concern: None,
        leader: None,
        followers: Vec::new(),
        replication_lag: None,
        write_stages: db.stages().summaries(),
        failover: Some(node.replica.failover_name().into()),
        voted_for: node.replica.voted_for(),
        last_role_change: node.replica.last_role_change(),
        timeline: None,
        connections: Some(node.admission.report()),
        storage: Some(storage_status(db)),
        resync: db.resync().map(|r| ResyncStatus {
            snapshot_lsn: r.snapshot_lsn,
            received_bytes: r.received_bytes,
            total_bytes: r.total_bytes,
            bytes_per_sec: r.bytes_per_sec,
        }),
    };
    match node.replica.view() {
        RoleView::Leader { hub, term } => {
            report.role = "leader".into();
            report.term = term;
            report.commit_lsn = hub.commit_lsn(db);
            report.write_concern = Some(node.write_concern.name().into());
            report.followers = hub.rows(last_lsn);
            for row in &mut report.followers {
                let pinned = row.address.parse().ok().and_then(|a| db.pinned_bytes(a));
                row.pinned_bytes = pinned.unwrap_or(0);
            }
            // A follower's last ACK is contact too.
            for row in &report.followers {
                let member = report.member_contacts.iter_mut().find(|m| m.address == row.address);
                if let (Some(member), Some(ack)) = (member, row.last_ack_ms_ago) {
                    let known = member.last_heard_ms_ago.unwrap_or(u64::MAX);
                    member.last_heard_ms_ago = Some(known.min(ack));
                }
            }
            report.replication_lag = hub.lag_summary();
            report.timeline = Some(hub.timeline(&node.address.to_string(), db));
            report.leader = Some(LeaderLink {
                address: node.address.to_string(),
                state: "leader".into(),
                leader_last_lsn: last_lsn,
            });
        }
        RoleView::Follower { link, .. } => {
            report.role = "follower".into();
            report.leader = link.map(|l| l.report());
        }
    }
    report
}

/// The disk side of the STATUS report.
fn storage_status(db: &Db) -> StorageStatus {
    let storage = db.storage_report();
    StorageStatus {
        snapshot: storage.snapshot.map(|s| SnapshotStatus {
            lsn: s.lsn,
            term: s.term,
            keys: s.keys,
            bytes: s.bytes,
            age_ms: s.age_ms(),
        }),
        wal_bytes: storage.wal_bytes,
        wal_segments: storage.wal_segments,
        wal_first_lsn: storage.wal_first_lsn,
        wal_bytes_since_snapshot: storage.wal_bytes_since_snapshot,
        snapshot_after_bytes: storage.snapshot_threshold_bytes,
    }
}
