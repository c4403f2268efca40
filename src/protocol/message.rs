//! Every kvstore message and its exact bytes (week 2; lessons 3 and 5;
//! terms and failover: `docs/FAILOVER.md`).
//!
//! A message is the payload of one frame: a type byte, then its fields.
//! Integers are big-endian; byte strings are `[len u32][bytes]`; addresses
//! (`host:port` text) are `[len u16][utf-8]`.
//!
//! | type | name               | fields                                                  |
//! |------|--------------------|---------------------------------------------------------|
//! | 0x01 | PUT                | `[key_len u32][key][value_len u32][value]`              |
//! | 0x02 | GET                | `[key_len u32][key]`                                    |
//! | 0x03 | DELETE             | `[key_len u32][key]`                                    |
//! | 0x04 | STATUS             | (none)                                                  |
//! | 0x05 | PROMOTE            | `[force u8]`                                            |
//! | 0x06 | FOLLOW             | `[leader address]`                                      |
//! | 0x07 | READ               | `[consistency u8][min_lsn u64][key_len u32][key]` — GET with a chosen consistency |
//! | 0x08 | TRANSFER_LEADERSHIP | `[target address]` — empty: the most up-to-date follower |
//! | 0x09 | SNAPSHOT           | (none) — take a snapshot now; answered by DONE         |
//! | 0x10 | OK                 | `[lsn u64]` — the LSN the write was logged at           |
//! | 0x11 | VALUE              | `[value_len u32][value]`                                |
//! | 0x12 | NOT_FOUND          | (none)                                                  |
//! | 0x13 | ERROR              | `[code u16][message_len u32][message utf-8]`            |
//! | 0x14 | STATUS_REPLY       | `[json_len u32][json utf-8]`                            |
//! | 0x15 | DONE               | `[message_len u32][message utf-8]`                      |
//! | 0x20 | APPEND_ENTRIES     | `[term u64][prev_lsn u64][prev_term u64][commit_lsn u64][leader_last_lsn u64][num_records u32][record]...` |
//! | 0x21 | APPEND_ENTRIES_ACK | `[last_lsn u64][term u64][digest_lsn u64][digest u64]`  |
//! | 0x22 | FOLLOWER_HELLO     | `[last_lsn u64][last_term u64][term u64][listen_port u16][cluster_id 16 bytes]` |
//! | 0x23 | LEADER_HELLO       | `[cluster_id 16 bytes][term u64][last_lsn u64][member_count u16][member address]...` |
//! | 0x24 | APPEND_ENTRIES_REFUSE | `[term u64][last_lsn u64][conflict_lsn u64][conflict_term u64]` |
//! | 0x25 | REQUEST_VOTE       | `[cluster_id 16 bytes][term u64][last_lsn u64][last_term u64][candidate address]` |
//! | 0x26 | VOTE               | `[term u64][granted u8][last_lsn u64][last_term u64]`   |
//! | 0x27 | LEADER_ANNOUNCE    | `[cluster_id 16 bytes][term u64][leader address]`       |
//! | 0x28 | PRE_VOTE           | `[cluster_id 16 bytes][term u64][last_lsn u64][last_term u64][candidate address]` |
//! | 0x29 | TIMEOUT_NOW        | `[cluster_id 16 bytes][term u64]`                       |
//! | 0x2a | OBSERVER_HELLO     | `[from_lsn u64]` — `kv_client watch`: the stream, no vote, no majority |
//! | 0x2b | INSTALL_SNAPSHOT   | `[term u64][snapshot_lsn u64][snapshot_term u64][total_bytes u64][offset u64][data_len u32][data][crc32 u32]` |
//! | 0x2c | INSTALL_SNAPSHOT_ACK | `[term u64][snapshot_lsn u64][received_bytes u64]`    |
//! | 0x30 | AUTH_HELLO         | `[scope u8][client_nonce 32 bytes]` — opens an authenticated connection |
//! | 0x31 | AUTH_CHALLENGE     | `[server_nonce 32 bytes]`                               |
//! | 0x32 | AUTH_PROOF         | `[client_proof 32 bytes]`                               |
//! | 0x33 | AUTH_OK            | `[server_proof 32 bytes]`                               |
//!
//! The AUTH_ messages are the handshake of [`crate::auth`]: a node started
//! with `--auth-file` accepts nothing else before it.
//!
//! A record inside APPEND_ENTRIES has the WAL's layout (see
//! [`crate::wal::record`]): `[lsn u64][term u64][cmd u8][key_len u32][key][value_len u32][value]`.
//!
//! Decoding checks every length against what remains and against the
//! limits, and refuses trailing bytes: a frame and its fields must agree.

use crate::auth::{Nonce, Proof, Scope, NONCE_BYTES, PROOF_BYTES};
use crate::cluster::{ClusterId, CLUSTER_ID_BYTES};
use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::limits::{
    ADDRESS_BYTES_MAX, APPEND_ENTRIES_RECORDS_MAX, FRAME_BYTES_MAX,
    INSTALL_SNAPSHOT_DATA_BYTES_MAX, KEY_BYTES_MAX, MEMBERS_MAX, VALUE_BYTES_MAX,
};
use crate::protocol::frame::{begin_frame, end_frame};
use crate::wal::record::{Record, RECORD_FIXED_BYTES};
use crate::{Lsn, Term};

pub const TYPE_PUT: u8 = 0x01;
pub const TYPE_GET: u8 = 0x02;
pub const TYPE_DELETE: u8 = 0x03;
pub const TYPE_STATUS: u8 = 0x04;
pub const TYPE_PROMOTE: u8 = 0x05;
pub const TYPE_FOLLOW: u8 = 0x06;
pub const TYPE_READ: u8 = 0x07;
pub const TYPE_TRANSFER_LEADERSHIP: u8 = 0x08;
pub const TYPE_SNAPSHOT: u8 = 0x09;
pub const TYPE_OK: u8 = 0x10;
pub const TYPE_VALUE: u8 = 0x11;
pub const TYPE_NOT_FOUND: u8 = 0x12;
pub const TYPE_ERROR: u8 = 0x13;
pub const TYPE_STATUS_REPLY: u8 = 0x14;
pub const TYPE_DONE: u8 = 0x15;
pub const TYPE_APPEND_ENTRIES: u8 = 0x20;
pub const TYPE_APPEND_ENTRIES_ACK: u8 = 0x21;
pub const TYPE_FOLLOWER_HELLO: u8 = 0x22;
pub const TYPE_LEADER_HELLO: u8 = 0x23;
pub const TYPE_APPEND_ENTRIES_REFUSE: u8 = 0x24;
pub const TYPE_REQUEST_VOTE: u8 = 0x25;
pub const TYPE_VOTE: u8 = 0x26;
pub const TYPE_LEADER_ANNOUNCE: u8 = 0x27;
pub const TYPE_PRE_VOTE: u8 = 0x28;
pub const TYPE_TIMEOUT_NOW: u8 = 0x29;
pub const TYPE_OBSERVER_HELLO: u8 = 0x2a;
pub const TYPE_INSTALL_SNAPSHOT: u8 = 0x2b;
pub const TYPE_INSTALL_SNAPSHOT_ACK: u8 = 0x2c;
pub const TYPE_AUTH_HELLO: u8 = 0x30;
pub const TYPE_AUTH_CHALLENGE: u8 = 0x31;
pub const TYPE_AUTH_PROOF: u8 = 0x32;
pub const TYPE_AUTH_OK: u8 = 0x33;

/// Longest ERROR or DONE message accepted (64 KiB): such texts are a sentence.
const ERROR_MESSAGE_BYTES_MAX: u32 = 64 * 1024;

/// The body of an APPEND_ENTRIES message (lesson 3, plus lesson 4's commit
/// LSN, plus Raft's log-matching fields).
///
/// The follower accepts it only if its own log holds `prev_lsn` with
/// `prev_term` (LSN 0 has term 0, so an empty log matches `prev_lsn = 0`);
/// then `records` continue the log from `prev_lsn + 1`.
///
/// `leader_last_lsn` is the LSN this message brings the follower to: during
/// catch-up, the leader's last LSN when the catch-up began; afterwards the
/// last record in the message; in a heartbeat, the leader's last LSN. A
/// follower whose last LSN reaches it is caught up (lesson 5's log line),
/// and it is how far behind the leader a follower's `status` says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEntries {
    /// The sender's term: a follower in a newer term refuses the message.
    pub term: Term,
    pub prev_lsn: Lsn,
    pub prev_term: Term,
    pub commit_lsn: Lsn,
    pub leader_last_lsn: Lsn,
    /// Contiguous records (each LSN one more than the one before, the first
    /// `prev_lsn + 1`); may be empty, which makes the message a heartbeat.
    pub records: Vec<Record>,
}

/// The body of an INSTALL_SNAPSHOT message: `data` is the piece of the
/// leader's snapshot file from byte `offset` (the file is sent as it is on
/// disk, with its own header and chunk checksums, so the follower stores
/// exactly what the leader verified). `crc32` covers `data`, so a piece
/// damaged on the way is refused before it is written. The first message
/// of a transfer carries no data (`offset` 0): it offers the snapshot, and
/// the follower's ACK says how much of it it already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSnapshot {
    pub term: Term,
    pub snapshot_lsn: Lsn,
    pub snapshot_term: Term,
    pub total_bytes: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// How fresh a READ's answer must be (`kv_client get --consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The leader answers from its map, as GET does: fast, and right unless
    /// this node was deposed a moment ago without knowing it yet.
    Leader,
    /// Raft's ReadIndex: the leader confirms with a majority that it still
    /// leads, and answers only with committed data. Never stale.
    Linearizable,
    /// Whichever node is asked answers from its own map: possibly behind.
    Any,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Leader => "leader",
            Consistency::Linearizable => "linearizable",
            Consistency::Any => "any",
        }
    }

    /// Parse `leader`, `linearizable` or `any`.
    pub fn parse(text: &str) -> Option<Consistency> {
        [Consistency::Leader, Consistency::Linearizable, Consistency::Any]
            .into_iter()
            .find(|c| c.name() == text)
    }

    fn byte(self) -> u8 {
        match self {
            Consistency::Leader => 0,
            Consistency::Linearizable => 1,
            Consistency::Any => 2,
        }
    }

    fn from_byte(byte: u8) -> Result<Consistency> {
        match byte {
            0 => Ok(Consistency::Leader),
            1 => Ok(Consistency::Linearizable),
            2 => Ok(Consistency::Any),
            other => Err(Error::Malformed(format!("read consistency {other} is not 0, 1 or 2"))),
        }
    }
}

/// Every message kvstore sends or receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Status,
    /// `kv_client promote`: make this node the leader of a new term
    /// (`force` skips the check that it holds the most of a majority).
    Promote {
        force: bool,
    },
    /// `kv_client follow HOST:PORT`: make this node a follower of `leader`.
    Follow {
        leader: String,
    },
    /// A GET with a chosen consistency. With `min_lsn` > 0 the node first
    /// waits (bounded) until it has applied that LSN: read-your-writes on
    /// any node. Answered by VALUE, NOT_FOUND or ERROR.
    Read {
        consistency: Consistency,
        min_lsn: Lsn,
        key: Vec<u8>,
    },
    /// `kv_client transfer-leadership [HOST:PORT]`: hand leadership to
    /// `target` (empty: the most up-to-date follower). Answered by DONE.
    TransferLeadership {
        target: String,
    },
    /// `kv_client snapshot` (Redis's `BGSAVE`): take a snapshot now and
    /// compact the WAL; writes go on meanwhile. Answered by DONE, once the
    /// snapshot is written, saying what was done.
    Snapshot,
    Ok {
        lsn: Lsn,
    },
    Value {
        value: Vec<u8>,
    },
    NotFound,
    Error {
        code: u16,
        message: String,
    },
    StatusReply {
        json: String,
    },
    /// The answer to PROMOTE and FOLLOW: what was done (LEADER_ANNOUNCE is
    /// answered by a LEADER_ANNOUNCE).
    Done {
        message: String,
    },
    AppendEntries(AppendEntries),
    /// The follower holds the leader's log up to `last_lsn` (checked by
    /// log matching, written and fsynced). Every few seconds it also says
    /// what its map's digest was right after `digest_lsn` (0 = no report).
    AppendEntriesAck {
        last_lsn: Lsn,
        term: Term,
        digest_lsn: Lsn,
        digest: u64,
    },
    /// Lesson 5: the follower's opening message: where its log ends
    /// (`last_lsn`, and the term of that record), its current term, the port
    /// it serves clients on (the leader matches it with a member; 0 = not
    /// given), and the cluster its log belongs to (absent for a fresh node).
    FollowerHello {
        last_lsn: Lsn,
        last_term: Term,
        term: Term,
        listen_port: Option<u16>,
        cluster_id: Option<ClusterId>,
    },
    /// The leader's answer to FOLLOWER_HELLO, sent before any AppendEntries:
    /// the cluster's id (a fresh follower adopts it), the leader's term and
    /// last LSN, and the cluster's members (the leader and its `--peers`).
    LeaderHello {
        cluster_id: ClusterId,
        term: Term,
        last_lsn: Lsn,
        /// Live keys in the leader's map: a follower about to catch up
        /// sizes its map for them at once instead of growing it by
        /// doubling (Redis's RDB carries the same hint, `RESIZEDB`).
        keys: u64,
        members: Vec<String>,
    },
    /// The follower's log does not hold `prev_lsn` with `prev_term`. It
    /// says where its log ends, and, if it holds a record at `prev_lsn` of
    /// another term, that term and the first LSN it has of it (so the
    /// leader skips the whole term at once, Raft section 5.3).
    AppendEntriesRefuse {
        term: Term,
        last_lsn: Lsn,
        conflict_lsn: Lsn,
        conflict_term: Term,
    },
    /// "Make me leader of `term`": sent by a node being promoted to every
    /// member it knows, with where its log ends. A node of another cluster
    /// is refused before its term is even looked at.
    RequestVote {
        cluster_id: Option<ClusterId>,
        term: Term,
        last_lsn: Lsn,
        last_term: Term,
        candidate: String,
    },
    /// "Would you vote for me in `term`?": asked before an election, with
    /// the same fields as REQUEST_VOTE, and answered by VOTE. It changes
    /// nothing at the member (no term adopted, no vote stored): a node cut
    /// off from its leader cannot disrupt the cluster by asking (pre-vote,
    /// Raft thesis section 9.6).
    PreVote {
        cluster_id: Option<ClusterId>,
        term: Term,
        last_lsn: Lsn,
        last_term: Term,
        candidate: String,
    },
    /// The answer to REQUEST_VOTE and PRE_VOTE: the voter's term, whether it
    /// grants its vote, and where its own log ends.
    Vote {
        term: Term,
        granted: bool,
        last_lsn: Lsn,
        last_term: Term,
    },
    /// "Start an election now": a leader handing over its leadership sends
    /// this to a follower that holds its whole log (Raft's TimeoutNow). The
    /// follower skips pre-vote and the wait, and runs for `term + 1`.
    TimeoutNow {
        cluster_id: Option<ClusterId>,
        term: Term,
    },
    /// Snapshot install: a piece of the leader's snapshot file, for a
    /// follower whose next record the leader's log no longer holds (Raft's
    /// InstallSnapshot). See [`InstallSnapshot`].
    InstallSnapshot(InstallSnapshot),
    /// The follower holds the first `received_bytes` of the snapshot at
    /// `snapshot_lsn` (in its `.part` file); once it equals the total, the
    /// follower has verified and installed it. Answers every
    /// INSTALL_SNAPSHOT; the first answer says where to resume.
    InstallSnapshotAck {
        term: Term,
        snapshot_lsn: Lsn,
        received_bytes: u64,
    },
    /// "I am the leader of `term`, at `leader`": a leader tells members
    /// that are not following it, so a deposed leader learns it was. The
    /// answer is a LEADER_ANNOUNCE too: the term and leader the member knows.
    LeaderAnnounce {
        cluster_id: Option<ClusterId>,
        term: Term,
        leader: String,
    },
    /// `kv_client watch`: the opening message of an **observer**, which
    /// receives the replication stream like a follower but is not a member:
    /// it never votes and never counts toward a majority or a write
    /// concern. The leader sends the records from `from_lsn` on (0: only
    /// those written from now on), after a LEADER_HELLO.
    ObserverHello {
        from_lsn: Lsn,
    },
    /// The first message of a connection to a node started with
    /// `--auth-file`: what the connection wants to do (`scope`) and a fresh
    /// random nonce of the client's ([`crate::auth`]).
    AuthHello {
        scope: Scope,
        client_nonce: Nonce,
    },
    /// The server's answer to AUTH_HELLO: a fresh random nonce of its own.
    AuthChallenge {
        server_nonce: Nonce,
    },
    /// The client's proof that it knows the secret: an HMAC over both nonces.
    AuthProof {
        client_proof: Proof,
    },
    /// The server accepted the proof, and proves in turn that it knows the
    /// secret too (the client checks it before it sends anything else).
    AuthOk {
        server_proof: Proof,
    },
}

impl Message {
    /// The message's name as the lessons and docs write it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Put { .. } => "PUT",
            Message::Get { .. } => "GET",
            Message::Delete { .. } => "DELETE",
            Message::Status => "STATUS",
            Message::Promote { .. } => "PROMOTE",
            Message::Follow { .. } => "FOLLOW",
            Message::Read { .. } => "READ",
            Message::TransferLeadership { .. } => "TRANSFER_LEADERSHIP",
            Message::Snapshot => "SNAPSHOT",
            Message::Ok { .. } => "OK",
            Message::Value { .. } => "VALUE",
            Message::NotFound => "NOT_FOUND",
            Message::Error { .. } => "ERROR",
            Message::StatusReply { .. } => "STATUS_REPLY",
            Message::Done { .. } => "DONE",
            Message::AppendEntries(_) => "APPEND_ENTRIES",
            Message::AppendEntriesAck { .. } => "APPEND_ENTRIES_ACK",
            Message::FollowerHello { .. } => "FOLLOWER_HELLO",
            Message::LeaderHello { .. } => "LEADER_HELLO",
            Message::AppendEntriesRefuse { .. } => "APPEND_ENTRIES_REFUSE",
            Message::RequestVote { .. } => "REQUEST_VOTE",
            Message::PreVote { .. } => "PRE_VOTE",
            Message::Vote { .. } => "VOTE",
            Message::LeaderAnnounce { .. } => "LEADER_ANNOUNCE",
            Message::TimeoutNow { .. } => "TIMEOUT_NOW",
            Message::ObserverHello { .. } => "OBSERVER_HELLO",
            Message::InstallSnapshot(_) => "INSTALL_SNAPSHOT",
            Message::InstallSnapshotAck { .. } => "INSTALL_SNAPSHOT_ACK",
            Message::AuthHello { .. } => "AUTH_HELLO",
            Message::AuthChallenge { .. } => "AUTH_CHALLENGE",
            Message::AuthProof { .. } => "AUTH_PROOF",
            Message::AuthOk { .. } => "AUTH_OK",
        }
    }

    /// Build an ERROR reply from an error.
    pub fn error(err: &Error) -> Message {
        Message::Error { code: err.code() as u16, message: err.to_string() }
    }

    /// Append this message as one complete frame (length prefix included).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let at = begin_frame(out);
        self.encode_payload(out);
        end_frame(out, at);
    }

    /// Append the payload: type byte and fields.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Put { key, value } => {
                out.push(TYPE_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Message::Get { key } => {
                out.push(TYPE_GET);
                put_bytes(out, key);
            }
            Message::Delete { key } => {
                out.push(TYPE_DELETE);
                put_bytes(out, key);
            }
            Message::Status => out.push(TYPE_STATUS),
            Message::Promote { force } => {
                out.push(TYPE_PROMOTE);
                out.push(u8::from(*force));
            }
            Message::Follow { leader } => {
                out.push(TYPE_FOLLOW);
                put_address(out, leader);
            }
            Message::Read { consistency, min_lsn, key } => {
                out.push(TYPE_READ);
                out.push(consistency.byte());
                put_u64s(out, &[*min_lsn]);
                put_bytes(out, key);
            }
            Message::TransferLeadership { target } => {
                out.push(TYPE_TRANSFER_LEADERSHIP);
                put_address(out, target);
            }
            Message::Snapshot => out.push(TYPE_SNAPSHOT),
            Message::Ok { lsn } => {
                out.push(TYPE_OK);
                put_u64s(out, &[*lsn]);
            }
            Message::Value { value } => {
                out.push(TYPE_VALUE);
                put_bytes(out, value);
            }
            Message::NotFound => out.push(TYPE_NOT_FOUND),
            Message::Error { code, message } => {
                out.push(TYPE_ERROR);
                out.extend_from_slice(&code.to_be_bytes());
                put_bytes(out, message.as_bytes());
            }
            Message::StatusReply { json } => {
                out.push(TYPE_STATUS_REPLY);
                put_bytes(out, json.as_bytes());
            }
            Message::Done { message } => {
                out.push(TYPE_DONE);
                put_bytes(out, message.as_bytes());
            }
            Message::AppendEntries(ae) => {
                let header = AppendEntriesHeader {
                    term: ae.term,
                    prev_lsn: ae.prev_lsn,
                    prev_term: ae.prev_term,
                    commit_lsn: ae.commit_lsn,
                    leader_last_lsn: ae.leader_last_lsn,
                };
                encode_append_entries(out, &header, &ae.records)
            }
            Message::AppendEntriesAck { last_lsn, term, digest_lsn, digest } => {
                out.push(TYPE_APPEND_ENTRIES_ACK);
                put_u64s(out, &[*last_lsn, *term, *digest_lsn, *digest]);
            }
            Message::FollowerHello { last_lsn, last_term, term, listen_port, cluster_id } => {
                out.push(TYPE_FOLLOWER_HELLO);
                put_u64s(out, &[*last_lsn, *last_term, *term]);
                out.extend_from_slice(&listen_port.unwrap_or(0).to_be_bytes());
                put_cluster_id(out, *cluster_id);
            }
            Message::LeaderHello { cluster_id, term, last_lsn, keys, members } => {
                out.push(TYPE_LEADER_HELLO);
                out.extend_from_slice(&cluster_id.0);
                put_u64s(out, &[*term, *last_lsn, *keys]);
                out.extend_from_slice(&(members.len() as u16).to_be_bytes());
                for member in members {
                    put_address(out, member);
                }
            }
            Message::AppendEntriesRefuse { term, last_lsn, conflict_lsn, conflict_term } => {
                out.push(TYPE_APPEND_ENTRIES_REFUSE);
                put_u64s(out, &[*term, *last_lsn, *conflict_lsn, *conflict_term]);
            }
            Message::RequestVote { cluster_id, term, last_lsn, last_term, candidate } => {
                out.push(TYPE_REQUEST_VOTE);
                put_cluster_id(out, *cluster_id);
                put_u64s(out, &[*term, *last_lsn, *last_term]);
                put_address(out, candidate);
            }
            Message::PreVote { cluster_id, term, last_lsn, last_term, candidate } => {
                out.push(TYPE_PRE_VOTE);
                put_cluster_id(out, *cluster_id);
                put_u64s(out, &[*term, *last_lsn, *last_term]);
                put_address(out, candidate);
            }
            Message::Vote { term, granted, last_lsn, last_term } => {
                out.push(TYPE_VOTE);
                put_u64s(out, &[*term]);
                out.push(u8::from(*granted));
                put_u64s(out, &[*last_lsn, *last_term]);
            }
            Message::LeaderAnnounce { cluster_id, term, leader } => {
                out.push(TYPE_LEADER_ANNOUNCE);
                put_cluster_id(out, *cluster_id);
                put_u64s(out, &[*term]);
                put_address(out, leader);
            }
            Message::TimeoutNow { cluster_id, term } => {
                out.push(TYPE_TIMEOUT_NOW);
                put_cluster_id(out, *cluster_id);
                put_u64s(out, &[*term]);
            }
            Message::ObserverHello { from_lsn } => {
                out.push(TYPE_OBSERVER_HELLO);
                put_u64s(out, &[*from_lsn]);
            }
            Message::InstallSnapshot(is) => {
                out.push(TYPE_INSTALL_SNAPSHOT);
                put_u64s(
                    out,
                    &[is.term, is.snapshot_lsn, is.snapshot_term, is.total_bytes, is.offset],
                );
                out.extend_from_slice(&(is.data.len() as u32).to_be_bytes());
                out.extend_from_slice(&is.data);
                out.extend_from_slice(&crc32fast::hash(&is.data).to_be_bytes());
            }
            Message::InstallSnapshotAck { term, snapshot_lsn, received_bytes } => {
                out.push(TYPE_INSTALL_SNAPSHOT_ACK);
                put_u64s(out, &[*term, *snapshot_lsn, *received_bytes]);
            }
            Message::AuthHello { scope, client_nonce } => {
                out.push(TYPE_AUTH_HELLO);
                out.push(scope.byte());
                out.extend_from_slice(client_nonce);
            }
            Message::AuthChallenge { server_nonce } => {
                out.push(TYPE_AUTH_CHALLENGE);
                out.extend_from_slice(server_nonce);
            }
            Message::AuthProof { client_proof } => {
                out.push(TYPE_AUTH_PROOF);
                out.extend_from_slice(client_proof);
            }
            Message::AuthOk { server_proof } => {
                out.push(TYPE_AUTH_OK);
                out.extend_from_slice(server_proof);
            }
        }
    }

    /// Decode one frame's payload. Never panics; every error names the field.
    pub fn decode(payload: &[u8]) -> Result<Message> {
        let mut d = Decoder::new(payload);
        let message = match d.u8("message type")? {
            TYPE_PUT => Message::Put {
                key: d.bytes_u32("key", KEY_BYTES_MAX)?,
                value: d.bytes_u32("value", VALUE_BYTES_MAX)?,
            },
            TYPE_GET => Message::Get { key: d.bytes_u32("key", KEY_BYTES_MAX)? },
            TYPE_DELETE => Message::Delete { key: d.bytes_u32("key", KEY_BYTES_MAX)? },
            TYPE_STATUS => Message::Status,
            TYPE_PROMOTE => Message::Promote { force: decode_bool(&mut d, "promote force")? },
            TYPE_FOLLOW => Message::Follow { leader: decode_address(&mut d, "follow leader")? },
            TYPE_READ => Message::Read {
                consistency: Consistency::from_byte(d.u8("read consistency")?)?,
                min_lsn: d.u64("read min_lsn")?,
                key: d.bytes_u32("key", KEY_BYTES_MAX)?,
            },
            TYPE_TRANSFER_LEADERSHIP => Message::TransferLeadership {
                target: decode_address(&mut d, "transfer-leadership target")?,
            },
            TYPE_SNAPSHOT => Message::Snapshot,
            TYPE_OK => Message::Ok { lsn: d.u64("OK lsn")? },
            TYPE_VALUE => Message::Value { value: d.bytes_u32("value", VALUE_BYTES_MAX)? },
            TYPE_NOT_FOUND => Message::NotFound,
            TYPE_ERROR => {
                let code = d.u16("error code")?;
                let text = d.bytes_u32("error message", ERROR_MESSAGE_BYTES_MAX)?;
                Message::Error { code, message: String::from_utf8_lossy(&text).into_owned() }
            }
            TYPE_STATUS_REPLY => {
                let json = d.bytes_u32("status json", FRAME_BYTES_MAX)?;
                let json = String::from_utf8(json)
                    .map_err(|_| Error::Malformed("status json is not UTF-8".into()))?;
                Message::StatusReply { json }
            }
            TYPE_DONE => {
                let text = d.bytes_u32("done message", ERROR_MESSAGE_BYTES_MAX)?;
                Message::Done { message: String::from_utf8_lossy(&text).into_owned() }
            }
            TYPE_APPEND_ENTRIES => Message::AppendEntries(decode_append_entries(&mut d)?),
            TYPE_APPEND_ENTRIES_ACK => Message::AppendEntriesAck {
                last_lsn: d.u64("ack last_lsn")?,
                term: d.u64("ack term")?,
                digest_lsn: d.u64("ack digest_lsn")?,
                digest: d.u64("ack digest")?,
            },
            TYPE_FOLLOWER_HELLO => Message::FollowerHello {
                last_lsn: d.u64("hello last_lsn")?,
                last_term: d.u64("hello last_term")?,
                term: d.u64("hello term")?,
                listen_port: Some(d.u16("hello listen_port")?).filter(|p| *p != 0),
                cluster_id: decode_cluster_id(&mut d, "hello cluster_id")?,
            },
            TYPE_LEADER_HELLO => {
                let cluster_id =
                    decode_cluster_id(&mut d, "leader hello cluster_id")?.ok_or_else(|| {
                        Error::Malformed("LEADER_HELLO with a zero cluster id".into())
                    })?;
                let term = d.u64("leader hello term")?;
                let last_lsn = d.u64("leader hello last_lsn")?;
                let keys = d.u64("leader hello keys")?;
                let count = d.u16("leader hello member_count")?;
                if usize::from(count) > MEMBERS_MAX {
                    return Err(Error::TooLarge {
                        what: "LEADER_HELLO member count",
                        len: u64::from(count),
                        max: MEMBERS_MAX as u64,
                    });
                }
                let mut members = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    members.push(decode_address(&mut d, "leader hello member")?);
                }
                Message::LeaderHello { cluster_id, term, last_lsn, keys, members }
            }
            TYPE_APPEND_ENTRIES_REFUSE => Message::AppendEntriesRefuse {
                term: d.u64("refuse term")?,
                last_lsn: d.u64("refuse last_lsn")?,
                conflict_lsn: d.u64("refuse conflict_lsn")?,
                conflict_term: d.u64("refuse conflict_term")?,
            },
            TYPE_REQUEST_VOTE => Message::RequestVote {
                cluster_id: decode_cluster_id(&mut d, "request vote cluster_id")?,
                term: d.u64("request vote term")?,
                last_lsn: d.u64("request vote last_lsn")?,
                last_term: d.u64("request vote last_term")?,
                candidate: decode_address(&mut d, "request vote candidate")?,
            },
            TYPE_PRE_VOTE => Message::PreVote {
                cluster_id: decode_cluster_id(&mut d, "pre-vote cluster_id")?,
                term: d.u64("pre-vote term")?,
                last_lsn: d.u64("pre-vote last_lsn")?,
                last_term: d.u64("pre-vote last_term")?,
                candidate: decode_address(&mut d, "pre-vote candidate")?,
            },
            TYPE_VOTE => Message::Vote {
                term: d.u64("vote term")?,
                granted: decode_bool(&mut d, "vote granted")?,
                last_lsn: d.u64("vote last_lsn")?,
                last_term: d.u64("vote last_term")?,
            },
            TYPE_LEADER_ANNOUNCE => Message::LeaderAnnounce {
                cluster_id: decode_cluster_id(&mut d, "announce cluster_id")?,
                term: d.u64("announce term")?,
                leader: decode_address(&mut d, "announce leader")?,
            },
            TYPE_TIMEOUT_NOW => Message::TimeoutNow {
                cluster_id: decode_cluster_id(&mut d, "timeout-now cluster_id")?,
                term: d.u64("timeout-now term")?,
            },
            TYPE_OBSERVER_HELLO => {
                Message::ObserverHello { from_lsn: d.u64("observer hello from_lsn")? }
            }
            TYPE_INSTALL_SNAPSHOT => Message::InstallSnapshot(decode_install_snapshot(&mut d)?),
            TYPE_INSTALL_SNAPSHOT_ACK => Message::InstallSnapshotAck {
                term: d.u64("term")?,
                snapshot_lsn: d.u64("snapshot_lsn")?,
                received_bytes: d.u64("received_bytes")?,
            },
            TYPE_AUTH_HELLO => Message::AuthHello {
                scope: Scope::from_byte(d.u8("auth hello scope")?)?,
                client_nonce: decode_array::<NONCE_BYTES>(&mut d, "auth hello client_nonce")?,
            },
            TYPE_AUTH_CHALLENGE => Message::AuthChallenge {
                server_nonce: decode_array::<NONCE_BYTES>(&mut d, "auth challenge server_nonce")?,
            },
            TYPE_AUTH_PROOF => Message::AuthProof {
                client_proof: decode_array::<PROOF_BYTES>(&mut d, "auth proof client_proof")?,
            },
            TYPE_AUTH_OK => Message::AuthOk {
                server_proof: decode_array::<PROOF_BYTES>(&mut d, "auth ok server_proof")?,
            },
            other => return Err(Error::UnknownMessageType(other)),
        };
        d.finish(message.name())?;
        Ok(message)
    }
}

/// The fixed fields of an APPEND_ENTRIES message, before its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendEntriesHeader {
    pub term: Term,
    pub prev_lsn: Lsn,
    pub prev_term: Term,
    pub commit_lsn: Lsn,
    pub leader_last_lsn: Lsn,
}

/// Append an APPEND_ENTRIES payload built from borrowed records, so a
/// leader's sender thread never copies records just to send them.
pub fn encode_append_entries(out: &mut Vec<u8>, header: &AppendEntriesHeader, records: &[Record]) {
    out.push(TYPE_APPEND_ENTRIES);
    put_u64s(
        out,
        &[
            header.term,
            header.prev_lsn,
            header.prev_term,
            header.commit_lsn,
            header.leader_last_lsn,
        ],
    );
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        record.encode(out);
    }
}

/// Builds one APPEND_ENTRIES frame record by record, so a sender can mix
/// records from its channel and from the WAL without copying them first.
pub struct AppendEntriesEncoder {
    buf: Vec<u8>,
    count: u32,
    last_lsn: Option<Lsn>,
}

/// Offset of `num_records` in the frame: length 4 + type 1 + five u64 fields.
const AE_COUNT_AT: usize = 4 + 1 + 5 * 8;

impl AppendEntriesEncoder {
    /// Start a message with these fixed fields.
    pub fn new(header: &AppendEntriesHeader) -> AppendEntriesEncoder {
        let mut buf = Vec::with_capacity(64 * 1024);
        let at = begin_frame(&mut buf);
        debug_assert_eq!(at, 0);
        encode_append_entries(&mut buf, header, &[]);
        AppendEntriesEncoder { buf, count: 0, last_lsn: Some(header.prev_lsn) }
    }

    /// Add the next record; it must follow the previous one (or `prev_lsn`).
    pub fn push(&mut self, record: &Record) {
        if let Some(last) = self.last_lsn {
            assert_eq!(record.lsn, last + 1, "AppendEntries records must be contiguous");
        }
        record.encode(&mut self.buf);
        self.count += 1;
        self.last_lsn = Some(record.lsn);
    }

    /// True when no more records should be added (count or bytes limit).
    pub fn is_full(&self) -> bool {
        self.count >= APPEND_ENTRIES_RECORDS_MAX
            || self.buf.len() >= crate::limits::APPEND_ENTRIES_BYTES_MAX
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// LSN of the last record added (`prev_lsn` while empty).
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn.unwrap_or(0)
    }

    /// Set `leader_last_lsn` after the fact (e.g. to the last record added).
    pub fn set_leader_last_lsn(&mut self, lsn: Lsn) {
        self.buf[AE_COUNT_AT - 8..AE_COUNT_AT].copy_from_slice(&lsn.to_be_bytes());
    }

    /// The finished frame, length prefix included.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[AE_COUNT_AT..AE_COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        end_frame(&mut self.buf, 0);
        &self.buf
    }
}

fn decode_append_entries(d: &mut Decoder<'_>) -> Result<AppendEntries> {
    let term = d.u64("term")?;
    let prev_lsn = d.u64("prev_lsn")?;
    let prev_term = d.u64("prev_term")?;
    let commit_lsn = d.u64("commit_lsn")?;
    let leader_last_lsn = d.u64("leader_last_lsn")?;
    let count = d.u32("num_records")?;
    if count > APPEND_ENTRIES_RECORDS_MAX {
        return Err(Error::TooLarge {
            what: "AppendEntries record count",
            len: u64::from(count),
            max: u64::from(APPEND_ENTRIES_RECORDS_MAX),
        });
    }
    // Never trust `count` for the allocation: at most as many records as
    // the remaining bytes could hold.
    let mut records = Vec::with_capacity((count as usize).min(d.remaining() / RECORD_FIXED_BYTES));
    let mut prev = prev_lsn;
    for _ in 0..count {
        let record = Record::decode(d)?;
        // checked: a peer may send LSN u64::MAX.
        if prev.checked_add(1) != Some(record.lsn) {
            return Err(Error::Malformed(format!(
                "AppendEntries records are not contiguous: LSN {} follows {prev}",
                record.lsn
            )));
        }
        prev = record.lsn;
        records.push(record);
    }
    Ok(AppendEntries { term, prev_lsn, prev_term, commit_lsn, leader_last_lsn, records })
}

fn decode_install_snapshot(d: &mut Decoder<'_>) -> Result<InstallSnapshot> {
    let term = d.u64("term")?;
    let snapshot_lsn = d.u64("snapshot_lsn")?;
    let snapshot_term = d.u64("snapshot_term")?;
    let total_bytes = d.u64("total_bytes")?;
    let offset = d.u64("offset")?;
    let data = d.bytes_u32("snapshot data", INSTALL_SNAPSHOT_DATA_BYTES_MAX)?;
    let crc = d.u32("crc32")?;
    let computed = crc32fast::hash(&data);
    if crc != computed {
        return Err(Error::Malformed(format!(
            "INSTALL_SNAPSHOT data checksum mismatch (sent {crc:08x}, computed {computed:08x})"
        )));
    }
    let end = offset.checked_add(data.len() as u64);
    if end.is_none_or(|end| end > total_bytes) {
        return Err(Error::Malformed(format!(
            "INSTALL_SNAPSHOT piece at offset {offset} of {} bytes runs past the snapshot's {total_bytes}",
            data.len()
        )));
    }
    Ok(InstallSnapshot { term, snapshot_lsn, snapshot_term, total_bytes, offset, data })
}

/// Read 16 id bytes; all zeros means "none".
fn decode_cluster_id(d: &mut Decoder<'_>, what: &str) -> Result<Option<ClusterId>> {
    let mut id = [0u8; CLUSTER_ID_BYTES];
    id.copy_from_slice(d.take(CLUSTER_ID_BYTES, what)?);
    Ok((id != [0u8; CLUSTER_ID_BYTES]).then_some(ClusterId(id)))
}

/// Read exactly `N` bytes (a nonce or a proof).
fn decode_array<const N: usize>(d: &mut Decoder<'_>, what: &str) -> Result<[u8; N]> {
    let mut array = [0u8; N];
    array.copy_from_slice(d.take(N, what)?);
    Ok(array)
}

fn decode_bool(d: &mut Decoder<'_>, what: &str) -> Result<bool> {
    match d.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::Malformed(format!("{what}: {other} is neither 0 nor 1"))),
    }
}

/// Read `[len u16][utf-8]`, at most [`ADDRESS_BYTES_MAX`] bytes.
fn decode_address(d: &mut Decoder<'_>, what: &'static str) -> Result<String> {
    let len = d.u16(what)?;
    if usize::from(len) > ADDRESS_BYTES_MAX {
        return Err(Error::TooLarge { what, len: u64::from(len), max: ADDRESS_BYTES_MAX as u64 });
    }
    let bytes = d.take(usize::from(len), what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed(format!("{what} is not UTF-8")))
}

/// An address: every one we send is a `SocketAddr` printed (at most 47
/// bytes) or one a peer sent us (checked when decoded), so the limit only
/// guards against a bug; it cuts at a character boundary, never inside one.
fn put_address(out: &mut Vec<u8>, address: &str) {
    let mut end = address.len().min(ADDRESS_BYTES_MAX);
    while !address.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &address.as_bytes()[..end];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// 16 id bytes; all zeros for "none".
fn put_cluster_id(out: &mut Vec<u8>, id: Option<ClusterId>) {
    out.extend_from_slice(&id.map_or([0; CLUSTER_ID_BYTES], |id| id.0));
}

fn put_u64s(out: &mut Vec<u8>, values: &[u64]) {
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::Op;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    /// `(prev_lsn, records after it)`.
    fn arb_records() -> impl Strategy<Value = (Lsn, Vec<Record>)> {
        (0..1_000_000u64, proptest::collection::vec((bytes(16), bytes(32), any::<bool>()), 0..8))
            .prop_map(|(prev, ops)| {
                let records = ops
                    .into_iter()
                    .enumerate()
                    .map(|(i, (key, value, put))| Record {
                        lsn: prev + 1 + i as u64,
                        term: 1 + i as u64 / 3,
                        op: if put { Op::Put { key, value } } else { Op::Delete { key } },
                    })
                    .collect();
                (prev, records)
            })
    }

    fn address() -> impl Strategy<Value = String> {
        "[a-z0-9.:]{0,40}"
    }

    fn arb_cluster_id() -> impl Strategy<Value = ClusterId> {
        any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]).prop_map(ClusterId)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (bytes(32), bytes(64)).prop_map(|(key, value)| Message::Put { key, value }),
            bytes(32).prop_map(|key| Message::Get { key }),
            bytes(32).prop_map(|key| Message::Delete { key }),
            Just(Message::Status),
            any::<bool>().prop_map(|force| Message::Promote { force }),
            address().prop_map(|leader| Message::Follow { leader }),
            (0..3u8, any::<u64>(), bytes(32)).prop_map(|(c, min_lsn, key)| Message::Read {
                consistency: Consistency::from_byte(c).unwrap(),
                min_lsn,
                key
            }),
            address().prop_map(|target| Message::TransferLeadership { target }),
            Just(Message::Snapshot),
            (any::<[u64; 4]>(), 0..1000u64, bytes(64)).prop_map(|(f, offset, data)| {
                Message::InstallSnapshot(InstallSnapshot {
                    term: f[0],
                    snapshot_lsn: f[1],
                    snapshot_term: f[2],
                    total_bytes: offset + data.len() as u64 + f[3] % 1000,
                    offset,
                    data,
                })
            }),
            any::<[u64; 3]>().prop_map(|f| Message::InstallSnapshotAck {
                term: f[0],
                snapshot_lsn: f[1],
                received_bytes: f[2]
            }),
            (proptest::option::of(arb_cluster_id()), any::<u64>())
                .prop_map(|(cluster_id, term)| Message::TimeoutNow { cluster_id, term }),
            ".{0,40}".prop_map(|message| Message::Done { message }),
            any::<u64>().prop_map(|lsn| Message::Ok { lsn }),
            bytes(64).prop_map(|value| Message::Value { value }),
            Just(Message::NotFound),
            (any::<u16>(), ".{0,40}").prop_map(|(code, message)| Message::Error { code, message }),
            ".{0,40}".prop_map(|json| Message::StatusReply { json }),
            (any::<[u64; 4]>(), arb_records()).prop_map(|(f, (prev_lsn, records))| {
                Message::AppendEntries(AppendEntries {
                    term: f[0],
                    prev_lsn,
                    prev_term: f[1],
                    commit_lsn: f[2],
                    leader_last_lsn: f[3],
                    records,
                })
            }),
            any::<[u64; 4]>().prop_map(|f| Message::AppendEntriesAck {
                last_lsn: f[0],
                term: f[1],
                digest_lsn: f[2],
                digest: f[3]
            }),
            (
                any::<[u64; 3]>(),
                proptest::option::of(1..=u16::MAX),
                proptest::option::of(arb_cluster_id())
            )
                .prop_map(|(f, listen_port, cluster_id)| Message::FollowerHello {
                    last_lsn: f[0],
                    last_term: f[1],
                    term: f[2],
                    listen_port,
                    cluster_id
                }),
            (arb_cluster_id(), any::<[u64; 3]>(), proptest::collection::vec(address(), 0..5))
                .prop_map(|(cluster_id, f, members)| Message::LeaderHello {
                    cluster_id,
                    term: f[0],
                    last_lsn: f[1],
                    keys: f[2],
                    members
                }),
            any::<u64>().prop_map(|from_lsn| Message::ObserverHello { from_lsn }),
            any::<[u64; 4]>().prop_map(|f| Message::AppendEntriesRefuse {
                term: f[0],
                last_lsn: f[1],
                conflict_lsn: f[2],
                conflict_term: f[3]
            }),
            (proptest::option::of(arb_cluster_id()), any::<[u64; 3]>(), address()).prop_map(
                |(cluster_id, f, candidate)| Message::RequestVote {
                    cluster_id,
                    term: f[0],
                    last_lsn: f[1],
                    last_term: f[2],
                    candidate
                }
            ),
            (proptest::option::of(arb_cluster_id()), any::<[u64; 3]>(), address()).prop_map(
                |(cluster_id, f, candidate)| Message::PreVote {
                    cluster_id,
                    term: f[0],
                    last_lsn: f[1],
                    last_term: f[2],
                    candidate
                }
            ),
            (any::<[u64; 3]>(), any::<bool>()).prop_map(|(f, granted)| Message::Vote {
                term: f[0],
                granted,
                last_lsn: f[1],
                last_term: f[2]
            }),
            (proptest::option::of(arb_cluster_id()), any::<u64>(), address()).prop_map(
                |(cluster_id, term, leader)| Message::LeaderAnnounce { cluster_id, term, leader }
            ),
            (any::<bool>(), any::<[u8; 32]>()).prop_map(|(client, client_nonce)| {
                let scope = if client { Scope::Client } else { Scope::Replication };
                Message::AuthHello { scope, client_nonce }
            }),
            any::<[u8; 32]>().prop_map(|server_nonce| Message::AuthChallenge { server_nonce }),
            any::<[u8; 32]>().prop_map(|client_proof| Message::AuthProof { client_proof }),
            any::<[u8; 32]>().prop_map(|server_proof| Message::AuthOk { server_proof }),
        ]
    }

    proptest! {
        // Goal: every message decodes to itself after encoding.
        #[test]
        fn every_message_round_trips(message in arb_message()) {
            let mut payload = Vec::new();
            message.encode_payload(&mut payload);
            prop_assert_eq!(Message::decode(&payload).unwrap(), message);
        }

        // Goal: a message cut short anywhere is an error, never a panic or
        // a different message.
        #[test]
        fn truncated_messages_are_errors(message in arb_message(), cut in any::<prop::sample::Index>()) {
            let mut payload = Vec::new();
            message.encode_payload(&mut payload);
            let at = cut.index(payload.len());
            if let Ok(decoded) = Message::decode(&payload[..at]) {
                prop_assert!(false, "{:?} decoded from a cut {:?}", decoded, message);
            }
        }

        // Goal: arbitrary payloads never panic the decoder.
        #[test]
        fn decoder_never_panics(payload in bytes(256)) {
            let _ = Message::decode(&payload);
        }
    }

    #[test]
    fn put_has_the_documented_bytes() {
        // Goal: PUT "k" = "v" is exactly the frame PROTOCOL.md shows.
        let mut out = Vec::new();
        Message::Put { key: b"k".to_vec(), value: b"v".to_vec() }.encode_frame(&mut out);
        assert_eq!(out, [0, 0, 0, 11, 0x01, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v']);
    }

    #[test]
    fn encoder_builds_the_same_bytes_as_the_message() {
        // Goal: the streaming encoder and Message::AppendEntries agree.
        let records: Vec<Record> = (3..6)
            .map(|lsn| Record {
                lsn,
                term: 2,
                op: Op::Put { key: vec![lsn as u8], value: vec![1, 2] },
            })
            .collect();
        let header = AppendEntriesHeader {
            term: 3,
            prev_lsn: 2,
            prev_term: 1,
            commit_lsn: 2,
            leader_last_lsn: 0,
        };
        let mut enc = AppendEntriesEncoder::new(&header);
        for r in &records {
            enc.push(r);
        }
        enc.set_leader_last_lsn(5);
        let mut expected = Vec::new();
        Message::AppendEntries(AppendEntries {
            term: 3,
            prev_lsn: 2,
            prev_term: 1,
            commit_lsn: 2,
            leader_last_lsn: 5,
            records,
        })
        .encode_frame(&mut expected);
        assert_eq!(enc.finish(), &expected[..]);
    }

    #[test]
    fn unknown_type_is_named() {
        assert!(matches!(Message::decode(&[0x7f]), Err(Error::UnknownMessageType(0x7f))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        // Goal: a frame longer than its fields say is malformed.
        assert!(matches!(Message::decode(&[TYPE_STATUS, 0]), Err(Error::Malformed(_))));
    }

    #[test]
    fn lengths_that_disagree_with_the_frame_are_refused() {
        // key_len says 100 but only 1 byte follows.
        let payload = [TYPE_GET, 0, 0, 0, 100, b'k'];
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }

    #[test]
    fn absurd_record_count_is_refused_before_allocation() {
        let mut payload = vec![TYPE_APPEND_ENTRIES];
        payload.extend_from_slice(&[0; 40]);
        payload.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Message::decode(&payload), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn a_record_after_lsn_u64_max_is_refused_without_overflow() {
        // Goal: found by `make fuzz`: "the next LSN" of u64::MAX must not
        // overflow; the message is malformed, never a panic.
        let records = vec![
            Record { lsn: u64::MAX, term: 1, op: Op::Delete { key: b"a".to_vec() } },
            Record { lsn: 1, term: 1, op: Op::Delete { key: b"b".to_vec() } },
        ];
        let mut payload = Vec::new();
        let header = AppendEntriesHeader {
            term: 1,
            prev_lsn: u64::MAX - 1,
            prev_term: 1,
            commit_lsn: 0,
            leader_last_lsn: 0,
        };
        encode_append_entries(&mut payload, &header, &records);
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }

    #[test]
    fn non_contiguous_records_are_refused() {
        let records = vec![
            Record { lsn: 5, term: 1, op: Op::Delete { key: b"a".to_vec() } },
            Record { lsn: 7, term: 1, op: Op::Delete { key: b"b".to_vec() } },
        ];
        let mut payload = Vec::new();
        let header = AppendEntriesHeader {
            term: 1,
            prev_lsn: 4,
            prev_term: 1,
            commit_lsn: 0,
            leader_last_lsn: 7,
        };
        encode_append_entries(&mut payload, &header, &records);
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
        // The first record must follow prev_lsn too.
        let mut payload = Vec::new();
        let header = AppendEntriesHeader { prev_lsn: 3, ..header };
        encode_append_entries(&mut payload, &header, &records[..1]);
        assert!(matches!(Message::decode(&payload), Err(Error::Malformed(_))));
    }
}
