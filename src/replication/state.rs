//! What a node must remember across restarts about the cluster: its
//! current term, whom it voted for in it, its role, its leader and the
//! members (Raft's "persistent state"; etcd's `HardState`).
//!
//! ## The rules this state enforces
//!
//! - **Terms only grow.** A node that sees a higher term in any message
//!   adopts it — stored durably *before* it acts on or answers the
//!   message — and, if it was leader, steps down ([`NodeState::observe_term`]).
//! - **One vote per term.** A node grants at most one REQUEST_VOTE per
//!   term, and only to a candidate whose log is at least as up to date as
//!   its own (last term first, then last LSN); the vote is stored before
//!   the reply is sent ([`NodeState::grant_vote`]). With promotion needing
//!   a majority of votes, two nodes can never both lead the same term.
//!
//! These are plain functions on a plain struct: the caller persists the
//! struct when they return `true`, before doing anything else.
//!
//! ## `DATA_DIR/STATE`
//!
//! A few `name value` lines, written atomically (temp file, fsync, rename,
//! fsync the directory):
//!
//! ```text
//! term 2
//! voted_for 127.0.0.1:9002
//! role leader
//! leader 127.0.0.1:9002
//! members 127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003
//! ```
//!
//! `voted_for` and `leader` are `-` when unset. Unknown names are ignored,
//! so a later version can add lines.

use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::{Lsn, Term};

/// Name of the state file inside the data directory.
pub const STATE_FILE_NAME: &str = "STATE";

/// The role a node had when it last stored its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredRole {
    Leader,
    Follower,
}

/// A node's durable cluster state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub term: Term,
    /// The candidate this node voted for in `term`.
    pub voted_for: Option<String>,
    /// `None` for a node that has never been given a role.
    pub role: Option<StoredRole>,
    /// The leader this node follows (or itself, on a leader), if known.
    pub leader: Option<String>,
    /// Every member's address (this node included), as the leader sent them.
    pub members: Vec<String>,
}

impl NodeState {
    /// The state of a node that has never run: term 0, no role.
    pub fn new() -> NodeState {
        NodeState { term: 0, voted_for: None, role: None, leader: None, members: Vec::new() }
    }

    /// A message carried `term`. If it is newer, adopt it (forgetting the
    /// vote, which was for an older term) and return true: the caller must
    /// store the state, and step down if it led, before anything else.
    pub fn observe_term(&mut self, term: Term) -> bool {
        if term <= self.term {
            return false;
        }
        self.term = term;
        self.voted_for = None;
        true
    }

    /// Decide a REQUEST_VOTE for `term` from `candidate`, whose log ends at
    /// `(last_term, last_lsn)`; ours ends at `ours`. Call after
    /// [`NodeState::observe_term`]. Returns true if the vote is granted:
    /// the caller stores the state before replying.
    pub fn grant_vote(
        &mut self,
        term: Term,
        candidate: &str,
        theirs: (Term, Lsn),
        ours: (Term, Lsn),
    ) -> bool {
        let free = match &self.voted_for {
            None => true,
            Some(v) => v == candidate,
        };
        // Term 0 is a query (where does your log end?), never an election.
        if term == 0 || term != self.term || !free || theirs < ours {
            return false;
        }
        self.voted_for = Some(candidate.to_string());
        true
    }

    /// Read `data_dir/STATE`; a missing file is a node that never ran.
    pub fn load(data_dir: &Path) -> Result<NodeState> {
        let path = data_dir.join(STATE_FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(NodeState::new()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let bad = |why: String| Error::CorruptWal { path: path.clone(), offset: 0, reason: why };
        let mut state = NodeState::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_once(' ').unwrap_or((line, ""));
            let value = value.trim();
            let optional = |v: &str| (v != "-" && !v.is_empty()).then(|| v.to_string());
            match name {
                "term" => {
                    state.term = value.parse().map_err(|_| bad(format!("bad term {value:?}")))?
                }
                "voted_for" => state.voted_for = optional(value),
                "role" => {
                    state.role = match value {
                        "leader" => Some(StoredRole::Leader),
                        "follower" => Some(StoredRole::Follower),
                        "-" => None,
                        other => return Err(bad(format!("bad role {other:?}"))),
                    }
                }
                "leader" => state.leader = optional(value),
                "members" => {
                    state.members = value
                        .split(',')
                        .filter(|m| !m.is_empty() && *m != "-")
                        .map(str::to_string)
                        .collect()
                }
                _ => {} // a newer version's line
            }
        }
        Ok(state)
    }

    /// Store the state durably in `data_dir/STATE`.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let role = match self.role {
            Some(StoredRole::Leader) => "leader",
            Some(StoredRole::Follower) => "follower",
            None => "-",
        };
        let members = if self.members.is_empty() { "-".into() } else { self.members.join(",") };
        let text = format!(
            "term {}\nvoted_for {}\nrole {role}\nleader {}\nmembers {members}\n",
            self.term,
            self.voted_for.as_deref().unwrap_or("-"),
            self.leader.as_deref().unwrap_or("-"),
        );
        write_atomically(data_dir, STATE_FILE_NAME, text.as_bytes())
    }
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), NodeState::new());
        let state = NodeState {
            term: 7,
            voted_for: Some("127.0.0.1:9002".into()),
            role: Some(StoredRole::Follower),
            leader: Some("127.0.0.1:9002".into()),
            members: vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()],
        };
        state.store(dir.path()).unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), state);
    }

    #[test]
    fn terms_only_grow_and_a_new_term_forgets_the_vote() {
        let mut s = NodeState { term: 3, voted_for: Some("a".into()), ..NodeState::new() };
        assert!(!s.observe_term(2));
        assert!(!s.observe_term(3));
        assert_eq!(s.voted_for.as_deref(), Some("a"));
        assert!(s.observe_term(4));
        assert_eq!((s.term, s.voted_for.clone()), (4, None));
    }

    #[test]
    fn one_vote_per_term_and_only_for_an_up_to_date_log() {
        // Goal: Raft's election restriction and single vote, without sockets.
        let mut s = NodeState { term: 5, ..NodeState::new() };
        let ours = (2, 100);
        assert!(!s.grant_vote(5, "b", (2, 99), ours), "shorter log of the same term");
        assert!(!s.grant_vote(5, "b", (1, 500), ours), "older last term, however long");
        assert!(s.grant_vote(5, "a", (2, 100), ours));
        assert!(s.grant_vote(5, "a", (3, 1), ours), "asking twice is fine");
        assert!(!s.grant_vote(5, "c", (9, 900), ours), "already voted in term 5");
        assert!(!s.grant_vote(4, "c", (9, 900), ours), "an old term");
        let mut fresh = NodeState::new();
        assert!(!fresh.grant_vote(0, "a", (1, 1), (0, 0)), "term 0 is only a query");
    }

    #[test]
    fn garbage_is_refused_and_unknown_lines_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE_NAME), "term x\n").unwrap();
        assert!(NodeState::load(dir.path()).is_err());
        std::fs::write(dir.path().join(STATE_FILE_NAME), "term 2\nfuture 1\n").unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap().term, 2);
    }
}
