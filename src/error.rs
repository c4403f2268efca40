//! The one error type of kvstore, and the codes an ERROR reply carries.
//!
//! Every failure a user or operator can meet is a variant here with a
//! message they can act on. Errors that travel over the wire are reduced to
//! an [`ErrorCode`] plus the human message, so a client in any language can
//! branch on the code and print the text.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{Lsn, Term};

/// The result type used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Every way an operation can fail.
#[derive(Debug)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing at the time.
    Io { context: String, source: io::Error },
    /// A peer sent bytes that do not form a valid frame or message.
    Malformed(String),
    /// A length prefix claimed more bytes than the limit allows.
    FrameTooLarge { len: u64, max: u64 },
    /// The message type byte is not one kvstore knows.
    UnknownMessageType(u8),
    /// The peer closed the connection in the middle of a frame.
    UnexpectedEof,
    /// A record in the middle of the WAL is damaged: refuse to start rather
    /// than silently drop what follows it.
    CorruptWal { path: PathBuf, offset: u64, reason: String },
    /// The WAL was written in a format this build does not know.
    WalVersion { path: PathBuf, found: u32, supported: u32 },
    /// Records were asked for that compaction has deleted: they are in a
    /// snapshot now, not in the WAL.
    Compacted { lsn: Lsn, first_lsn: Lsn },
    /// Start-up found records that are in no usable snapshot and no WAL
    /// segment: refuse rather than start with silently missing data.
    MissingRecords { from: Lsn, to: Lsn, why: String },
    /// A snapshot file is damaged or incomplete: it is never loaded.
    CorruptSnapshot { path: PathBuf, offset: u64, reason: String },
    /// A write was sent to a follower.
    ReadOnly { leader: String },
    /// A write concern was not met in time; the record is in the leader's
    /// log but not confirmed by enough nodes.
    WriteTimeout { lsn: Lsn, acked: usize, needed: usize, timeout_ms: u64 },
    /// The WAL could not be written or fsynced; the node refuses writes.
    WalFailed(String),
    /// AppendEntries did not continue the follower's log.
    NotContiguous { expected: Lsn, got: Lsn },
    /// Leader and follower belong to different clusters.
    OtherCluster { ours: String, theirs: String, peer: String },
    /// A repair would remove a record at or below the commit LSN.
    WouldLoseCommitted { truncate_after: Lsn, commit_lsn: Lsn },
    /// This node is not (or no longer) the leader.
    NotLeader { term: Option<Term>, leader: Option<String> },
    /// A read that only the leader may answer was sent to a follower.
    NotLeaderForRead { consistency: &'static str, leader: Option<String> },
    /// A message came from a term older than ours: its sender was deposed.
    StaleTerm { theirs: Term, ours: Term, leader: Option<String> },
    /// This node led `term` and stepped down: a follower is in `newer`.
    SteppedDown { term: Term, newer: Term },
    /// A `majority`/`all` write was waiting when its leader stepped down.
    Deposed { lsn: Lsn, term: Term, why: String },
    /// The leader found this node's data differs from its own.
    Unhealthy(String),
    /// The node is stopping (SIGTERM): it takes no new connections.
    ShuttingDown { leader: Option<String> },
    /// The server already serves as many connections as it is allowed.
    TooManyConnections { max: usize },
    /// The server answered with an ERROR reply.
    Server { code: ErrorCode, message: String },
    /// A request or reply arrived where it makes no sense.
    Unexpected(String),
    /// An operator's request (promote, follow) was understood and refused;
    /// the message says why and what to do instead.
    Refused(String),
    /// A replication link ended (closed, silent, refused).
    Link(String),
    /// A write's outcome is unknown: the connection was lost after it was
    /// sent, or the leader could not confirm it. It may or may not be
    /// applied; it must not be retried blindly, nor reported as failed.
    Indeterminate(String),
    /// No member answered as the leader within the client's retry budget.
    NoLeader(String),
    /// A read could not be answered with the consistency it asked for in
    /// time (the leader could not confirm it still leads, or the node had
    /// not applied the LSN asked for). Nothing was read.
    ReadTimeout { why: String, timeout_ms: u64 },
    /// A key or value is larger than the limit.
    TooLarge { what: &'static str, len: u64, max: u64 },
    /// This node requires authentication and the connection did not begin
    /// with the handshake. Nothing else is said to an unknown peer.
    AuthRequired,
    /// The handshake failed: a wrong proof, a secret this side does not
    /// have, or a peer that could not prove it knows ours. The text says
    /// which, to the side that may know (never to the unauthenticated one).
    AuthFailed(String),
    /// An authenticated connection asked for something its secret does not
    /// allow (a client's secret sending FOLLOWER_HELLO or votes while a
    /// separate `--replication-auth-file` is set).
    Forbidden(String),
    /// A shared budget is spent (concurrent catch-ups, bytes of partial
    /// frames): the request was not served; try again later.
    Busy(String),
    /// A frame began to arrive and did not finish within the deadline.
    TooSlow { timeout_ms: u64 },
    /// A file or directory is open to other users in a way that would leak
    /// or let them change what it holds; `fix` is the command that mends it.
    InsecurePermissions { path: PathBuf, mode: u32, why: &'static str, fix: String },
}

impl Error {
    /// Wrap an `io::Error` with a short description of the operation.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// The code this error travels with in an ERROR reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Malformed(_) | Error::UnexpectedEof | Error::TooLarge { .. } => {
                ErrorCode::BadRequest
            }
            Error::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Error::UnknownMessageType(_) => ErrorCode::UnknownType,
            Error::ReadOnly { .. }
            | Error::NotLeader { .. }
            | Error::NotLeaderForRead { .. }
            | Error::ShuttingDown { .. } => ErrorCode::ReadOnly,
            Error::StaleTerm { .. } | Error::SteppedDown { .. } => ErrorCode::StaleTerm,
            Error::Deposed { .. } => ErrorCode::Deposed,
            Error::Unhealthy(_) => ErrorCode::Unhealthy,
            Error::WouldLoseCommitted { .. } => ErrorCode::Replication,
            Error::WriteTimeout { .. } => ErrorCode::WriteTimeout,
            Error::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            Error::NotContiguous { .. } | Error::OtherCluster { .. } => ErrorCode::Replication,
            Error::Unexpected(_) => ErrorCode::Unexpected,
            Error::Refused(_) => ErrorCode::Refused,
            Error::ReadTimeout { .. } => ErrorCode::ReadTimeout,
            Error::Link(_) => ErrorCode::Replication,
            Error::Indeterminate(_) | Error::NoLeader(_) => ErrorCode::Internal,
            Error::Server { code, .. } => *code,
            Error::AuthRequired => ErrorCode::AuthRequired,
            Error::AuthFailed(_) => ErrorCode::AuthFailed,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::Busy(_) => ErrorCode::Busy,
            Error::TooSlow { .. } => ErrorCode::TooSlow,
            Error::InsecurePermissions { .. } => ErrorCode::Internal,
            Error::Compacted { .. } => ErrorCode::Replication,
            Error::Io { .. }
            | Error::CorruptWal { .. }
            | Error::WalVersion { .. }
            | Error::MissingRecords { .. }
            | Error::CorruptSnapshot { .. }
            | Error::WalFailed(_) => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Malformed(why) => write!(f, "malformed message: {why}"),
            Error::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::UnknownMessageType(t) => write!(f, "unknown message type 0x{t:02x}"),
            Error::UnexpectedEof => write!(f, "connection closed in the middle of a frame"),
            Error::CorruptWal { path, offset, reason } => write!(
                f,
                "corrupt WAL record in {} at byte offset {offset}: {reason}; records after it \
                 would be lost, so start-up stops here (inspect with `kv_client wal-dump`)",
                path.display()
            ),
            Error::WalVersion { path, found, supported } => write!(
                f,
                "{} has WAL format version {found}, but this kvstore reads versions 1 to \
                 {supported}; run the newer kvstore that wrote it (nothing was changed)",
                path.display()
            ),
            Error::Compacted { lsn, first_lsn } => write!(
                f,
                "LSN {lsn} is no longer in the WAL: it was compacted into a snapshot (the log \
                 starts at LSN {first_lsn})"
            ),
            Error::MissingRecords { from, to, why } => write!(
                f,
                "records LSN {from}..{to} are in no usable snapshot and no WAL segment ({why}); \
                 refusing to start with missing data (restore the data dir from a backup, or \
                 give this node an empty data dir to re-sync it from its leader)"
            ),
            Error::CorruptSnapshot { path, offset, reason } => write!(
                f,
                "corrupt snapshot {} at byte offset {offset}: {reason}; it is not loaded \
                 (inspect with `kv_client snapshot-dump`)",
                path.display()
            ),
            Error::ReadOnly { leader } => {
                write!(f, "this node is a follower and refuses writes; the leader is {leader}")
            }
            Error::WriteTimeout { lsn, acked, needed, timeout_ms } => write!(
                f,
                "write concern not met within {timeout_ms} ms: LSN {lsn} is in the leader's log \
                 but only {acked} of the {needed} nodes required have acknowledged it; \
                 the write is not confirmed"
            ),
            Error::WalFailed(why) => write!(f, "the WAL cannot be written: {why}"),
            Error::NotContiguous { expected, got } => write!(
                f,
                "AppendEntries does not continue the log: expected LSN {expected}, got {got}"
            ),
            Error::OtherCluster { ours, theirs, peer } => write!(
                f,
                "{peer} belongs to cluster {theirs}, this node to cluster {ours}; refusing to \
                 mix two histories (point it at the right cluster, or give it an empty data dir)"
            ),
            Error::WouldLoseCommitted { truncate_after, commit_lsn } => write!(
                f,
                "refusing to truncate the log after LSN {truncate_after}: records up to LSN \
                 {commit_lsn} are committed, and removing them would lose acknowledged writes"
            ),
            Error::NotLeader { term, leader } => {
                write!(f, "this node is not the leader and refuses writes")?;
                match (term, leader) {
                    (Some(t), Some(l)) => write!(f, "; the leader of term {t} is {l}"),
                    (Some(t), None) => write!(f, "; the leader of term {t} is not known yet"),
                    (None, Some(l)) => write!(f, "; the leader is {l}"),
                    (None, None) => write!(f, "; the leader is not known yet"),
                }
            }
            Error::NotLeaderForRead { consistency, leader } => {
                write!(
                    f,
                    "this node is a follower; a read with consistency {consistency} is \
                           answered by the leader"
                )?;
                match leader {
                    Some(l) => write!(f, "; the leader is {l}"),
                    None => write!(f, "; the leader is not known yet"),
                }
            }
            Error::StaleTerm { theirs, ours, leader } => {
                write!(f, "message from term {theirs}, but this node is in term {ours}")?;
                match leader {
                    Some(l) => write!(f, " (its leader is {l})"),
                    None => write!(f, " (its leader is not known yet)"),
                }?;
                write!(f, "; the sender was deposed and must step down")
            }
            Error::SteppedDown { term, newer } => write!(
                f,
                "this node led term {term} and steps down: the follower is in the newer term \
                 {newer}; replicate from the leader of term {newer}"
            ),
            Error::Deposed { lsn, term, why } => write!(
                f,
                "this node stopped being the leader of term {term} before LSN {lsn} reached the \
                 write concern ({why}); the write is not confirmed and will be lost if the new \
                 leader does not have it"
            ),
            Error::Unhealthy(why) => write!(f, "this node refuses reads: {why}"),
            Error::ShuttingDown { leader } => {
                write!(f, "this node is shutting down and takes no new connections")?;
                match leader {
                    Some(l) => write!(f, "; the leader is {l}"),
                    None => write!(f, "; the leader is not known yet"),
                }
            }
            Error::TooManyConnections { max } => {
                write!(f, "too many connections (the limit is {max}); try again later")
            }
            Error::Server { message, .. } => write!(f, "{message}"),
            Error::Unexpected(what) => write!(f, "unexpected message: {what}"),
            Error::Refused(why) => write!(f, "{why}"),
            Error::Link(why) => write!(f, "{why}"),
            Error::Indeterminate(why) => {
                write!(f, "outcome unknown: {why}; the write may or may not have been applied")
            }
            Error::NoLeader(why) => write!(f, "no leader found: {why}"),
            Error::ReadTimeout { why, timeout_ms } => {
                write!(f, "read not answered within {timeout_ms} ms: {why}")
            }
            Error::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::AuthRequired => write!(
                f,
                "authentication required: this node accepts only connections that begin with \
                 AUTH_HELLO (kv_client --auth-file FILE)"
            ),
            Error::AuthFailed(why) => write!(f, "authentication failed: {why}"),
            Error::Forbidden(why) => write!(f, "not allowed: {why}"),
            Error::Busy(why) => write!(f, "busy: {why}; try again later"),
            Error::TooSlow { timeout_ms } => write!(
                f,
                "a frame began to arrive and was not complete within {timeout_ms} ms \
                 (--frame-timeout-ms); connection closed"
            ),
            Error::InsecurePermissions { path, mode, why, fix } => {
                write!(f, "{} has mode {mode:04o}: {why}; fix it with `{fix}`", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The code carried by an ERROR reply: `[code u16]` on the wire.
///
/// Codes are stable; new ones are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was malformed (bad lengths, truncated payload, too large a key).
    BadRequest = 1,
    /// The length prefix exceeded the frame limit; the connection is closed.
    FrameTooLarge = 2,
    /// The message type byte is unknown; the connection is closed.
    UnknownType = 3,
    /// The node is a follower; the message names the leader.
    ReadOnly = 4,
    /// The write concern was not met in time; the write is logged, not confirmed.
    WriteTimeout = 5,
    /// The server failed internally (e.g. the WAL cannot be written).
    Internal = 6,
    /// The connection limit was reached.
    TooManyConnections = 7,
    /// Replication refused: entries that do not continue the log, another
    /// cluster, a repair that would remove committed records, a broken link.
    Replication = 8,
    /// A message arrived that makes no sense here (e.g. FOLLOWER_HELLO to a
    /// follower); the connection is closed.
    Unexpected = 9,
    /// The message came from an older term: its sender was deposed.
    StaleTerm = 10,
    /// The leader stepped down while the write waited for its write concern.
    Deposed = 11,
    /// The node's data was found to differ from its leader's; reads refused.
    Unhealthy = 12,
    /// A promote or follow was refused (nothing changed); the message says why.
    Refused = 13,
    /// A read with a consistency or `--min-lsn` could not be answered in time.
    ReadTimeout = 14,
    /// The node requires authentication and the connection did not begin
    /// with AUTH_HELLO; the connection is closed.
    AuthRequired = 15,
    /// The authentication handshake failed; the connection is closed.
    AuthFailed = 16,
    /// The connection's secret does not allow this message; closed.
    Forbidden = 17,
    /// A shared limit is reached (concurrent catch-ups, memory for partial
    /// frames); nothing was done; closed. Try again later.
    Busy = 18,
    /// A frame began and did not finish in time (slow sender); closed.
    TooSlow = 19,
}

impl ErrorCode {
    /// Decode a wire code; unknown codes from a newer server map to `Internal`.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::UnknownType,
            4 => ErrorCode::ReadOnly,
            5 => ErrorCode::WriteTimeout,
            7 => ErrorCode::TooManyConnections,
            8 => ErrorCode::Replication,
            9 => ErrorCode::Unexpected,
            10 => ErrorCode::StaleTerm,
            11 => ErrorCode::Deposed,
            12 => ErrorCode::Unhealthy,
            13 => ErrorCode::Refused,
            14 => ErrorCode::ReadTimeout,
            15 => ErrorCode::AuthRequired,
            16 => ErrorCode::AuthFailed,
            17 => ErrorCode::Forbidden,
            18 => ErrorCode::Busy,
            19 => ErrorCode::TooSlow,
            _ => ErrorCode::Internal,
        }
    }
}
