//! Cluster identity: a random id that keeps two histories from ever mixing.
//!
//! A leader's data directory gets a random 128-bit **cluster id** the first
//! time it starts. The leader sends it to each follower at the start of
//! replication (LEADER_HELLO); a fresh follower adopts it and stores it next
//! to its WAL, and from then on refuses any leader with another id — and a
//! leader refuses a follower that says it belongs elsewhere. Pointing a
//! follower at the wrong cluster is an error in both logs, never a silent mix
//! of two logs whose LSNs happen to line up. (Redis calls this the
//! replication id; PostgreSQL the system identifier.)
//!
//! The id is stored as 32 lowercase hex digits and a newline in
//! `DATA_DIR/CLUSTER_ID`, written to a temporary file, fsynced and renamed,
//! so a crash leaves either no id or the whole id.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomically;

/// Name of the file holding the id inside the data directory.
pub const CLUSTER_ID_FILE_NAME: &str = "CLUSTER_ID";

/// Bytes of a cluster id on the wire.
pub const CLUSTER_ID_BYTES: usize = 16;

/// A cluster's identity. All zeros is never generated and means "none" on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; CLUSTER_ID_BYTES]);

impl ClusterId {
    /// A new random id from the operating system's random source.
    pub fn generate() -> Result<ClusterId> {
        let mut bytes = [0u8; CLUSTER_ID_BYTES];
        while bytes == [0u8; CLUSTER_ID_BYTES] {
            getrandom::fill(&mut bytes).map_err(|e| {
                Error::io("generating a cluster id", std::io::Error::other(e.to_string()))
            })?;
        }
        Ok(ClusterId(bytes))
    }

    /// Parse 32 hex digits.
    pub fn parse(text: &str) -> Option<ClusterId> {
        let text = text.trim();
        if text.len() != CLUSTER_ID_BYTES * 2 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; CLUSTER_ID_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
        }
        (bytes != [0u8; CLUSTER_ID_BYTES]).then_some(ClusterId(bytes))
    }

    /// Read the id stored in `data_dir`, if there is one.
    pub fn load(data_dir: &Path) -> Result<Option<ClusterId>> {
        let path = data_dir.join(CLUSTER_ID_FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => ClusterId::parse(&text).map(Some).ok_or_else(|| Error::CorruptWal {
                path,
                offset: 0,
                reason: "not a cluster id (32 hex digits expected)".into(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Store the id in `data_dir` durably (write, fsync, rename, fsync dir).
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        write_atomically(data_dir, CLUSTER_ID_FILE_NAME, format!("{self}\n").as_bytes())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ClusterId::load(dir.path()).unwrap(), None);
        let id = ClusterId::generate().unwrap();
        assert_eq!(ClusterId::parse(&id.to_string()), Some(id));
        id.store(dir.path()).unwrap();
        assert_eq!(ClusterId::load(dir.path()).unwrap(), Some(id));
        assert_ne!(ClusterId::generate().unwrap(), id, "ids are random");
    }

    #[test]
    fn garbage_is_not_an_id() {
        assert_eq!(ClusterId::parse("xyz"), None);
        assert_eq!(ClusterId::parse(&"0".repeat(32)), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLUSTER_ID_FILE_NAME), "garbage").unwrap();
        assert!(ClusterId::load(dir.path()).is_err());
    }
}
