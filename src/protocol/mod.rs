//! The wire protocol (week 2's framing, lesson 3's replication messages).
//!
//! Every message on a kvstore connection is one **frame**:
//!
//! ```text
//! [length u32][payload: length bytes]      payload = [type u8][fields...]
//! ```
//!
//! [`frame`] reads and writes frames and enforces the size limit before any
//! allocation; [`message`] gives every message type and its byte layout.
//! `docs/PROTOCOL.md` has the same layouts with a hex example of each.

pub mod frame;
pub mod message;

pub use frame::{read_frame, write_message};
pub use message::{AppendEntries, AppendEntriesHeader, Consistency, InstallSnapshot, Message};
