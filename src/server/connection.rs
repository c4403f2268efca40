//! One client connection: read a request, answer it, repeat (week 2).
//!
//! Replies are buffered and flushed when no further request is already
//! waiting in the read buffer, so a client that pipelines requests gets its
//! replies in few syscalls, and one that waits gets each reply at once.
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
use crate::replication::leader::{serve_follower, Hello};
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

/// Bytes buffered for reading and writing on a client connection (64 KiB).
const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

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
    loop {
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
        let message = Message::decode(&frame).map_err(|e| refuse(&mut writer, e))?;
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
        let in_flight = node.shutdown.begin_request();
        let reply = match handle_request(node, message) {
            Ok(reply) => reply,
            Err(e @ Error::Unexpected(_)) => return Err(refuse(&mut writer, e)),
            Err(e) => Message::error(&e),
        };
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

/// A client write: only a leader takes it, then waits for the write concern.
/// If the leader steps down meanwhile, a `majority`/`all` write fails.
fn write(node: &Node, op: Op) -> Result<Message> {
    let started = Instant::now();
    let hub = match node.replica.view() {
        RoleView::Leader { hub, .. } => hub,
        RoleView::Follower { .. } => return Err(node.replica.not_leader()),
    };
    let (lsn, term) = match node.db.write(op) {
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
                Ok(Message::Ok { lsn })
            }
            _ => Err(Error::Deposed { lsn, term, why: "the term changed".into() }),
        };
    }
    hub.wait_for(lsn, node.write_concern, node.write_timeout)?;
    hub.acknowledged(lsn);
    node.db.stages().record(Stage::Total, started.elapsed());
    Ok(Message::Ok { lsn })
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
