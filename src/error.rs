//! The one error type of kvstore, and the codes an ERROR reply carries.
//!
//! Every failure a user or operator can meet is a variant here with a
//! message they can act on. Errors that travel over the wire are reduced to
//! an [`ErrorCode`] plus the human message, so a client in any language can
//! branch on the code and print the text.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Lsn;

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
    /// A follower's log is ahead of its leader's: the histories diverged.
    Diverged { follower_lsn: Lsn, leader_lsn: Lsn },
    /// The server already serves as many connections as it is allowed.
    TooManyConnections { max: usize },
    /// The server answered with an ERROR reply.
    Server { code: ErrorCode, message: String },
    /// A request or reply arrived where it makes no sense.
    Unexpected(String),
    /// A replication link ended (closed, silent, refused).
    Link(String),
    /// A key or value is larger than the limit.
    TooLarge { what: &'static str, len: u64, max: u64 },
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
            Error::ReadOnly { .. } => ErrorCode::ReadOnly,
            Error::WriteTimeout { .. } => ErrorCode::WriteTimeout,
            Error::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            Error::NotContiguous { .. } | Error::Diverged { .. } | Error::OtherCluster { .. } => {
                ErrorCode::Replication
            }
            Error::Unexpected(_) => ErrorCode::Unexpected,
            Error::Link(_) => ErrorCode::Replication,
            Error::Server { code, .. } => *code,
            Error::Io { .. } | Error::CorruptWal { .. } | Error::WalFailed(_) => {
                ErrorCode::Internal
            }
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
            Error::Diverged { follower_lsn, leader_lsn } => write!(
                f,
                "follower's last LSN {follower_lsn} is beyond the leader's last LSN \
                 {leader_lsn}: the histories diverged; refusing to replicate"
            ),
            Error::TooManyConnections { max } => {
                write!(f, "too many connections (the limit is {max}); try again later")
            }
            Error::Server { message, .. } => write!(f, "{message}"),
            Error::Unexpected(what) => write!(f, "unexpected message: {what}"),
            Error::Link(why) => write!(f, "{why}"),
            Error::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max} bytes")
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
    /// Replication refused: non-contiguous entries or diverged histories.
    Replication = 8,
    /// A message arrived that makes no sense here (e.g. AppendEntries to a leader).
    Unexpected = 9,
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
            _ => ErrorCode::Internal,
        }
    }
}
