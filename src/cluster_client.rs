//! A client of a whole cluster: it finds the leader by itself
//! (`kv_client --cluster 9001,9002,9003 put k v`).
//!
//! After a failover the leader is on another port. A client that knows
//! every member does what a person would: send the write to the node it
//! believes leads; if that node says it is a follower, ask it (STATUS) who
//! leads and go there; if a node does not answer, try the next one. All of
//! it within a retry budget (default 5 s, long enough for an election),
//! after which it says plainly that no leader answered.
//!
//! One rule it never bends: **a write whose outcome is unknown is not
//! retried**. If the connection breaks after the request was sent, or the
//! leader answers that it could not confirm the write (ERROR 5, write
//! concern timeout; ERROR 11, deposed), the write may be applied or not.
//! Sending it again could apply it twice; calling it failed could be a
//! lie. It is reported as [`Error::Indeterminate`] and the caller decides.
//! Reads have no such problem and are simply retried.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::dial::Dialer;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::Consistency;
use crate::replication::parse_peer;
use crate::Lsn;

/// Default retry budget: an election takes one to two election timeouts.
pub const RETRY_BUDGET_MS_DEFAULT: u64 = 5_000;

/// First pause between two rounds of tries; doubled up to 100 ms.
const RETRY_PAUSE_MIN_MS: u64 = 25;
const RETRY_PAUSE_MAX_MS: u64 = 100;

/// A client that follows the leader across the members it knows.
pub struct ClusterClient {
    members: Vec<String>,
    budget: Duration,
    /// The node we believe leads, and our connection to it.
    leader: Option<(String, Client)>,
    /// The member to try next when no leader is known.
    next: usize,
    /// How each connection is opened (`--auth-file`, `--tls-*`).
    dialer: Dialer,
}

impl ClusterClient {
    /// `members` as the lessons write them: ports, or `host:port`.
    pub fn new(members: &[String], budget: Duration) -> Result<ClusterClient> {
        let members: Vec<String> =
            members.iter().map(|m| parse_peer(m).map(|a| a.to_string())).collect::<Result<_>>()?;
        if members.is_empty() {
            return Err(Error::NoLeader("no members given".into()));
        }
        Ok(ClusterClient { members, budget, leader: None, next: 0, dialer: Dialer::plain() })
    }

    /// Open every connection through `dialer` (`--auth-file`, `--tls-*`).
    pub fn with_dialer(mut self, dialer: Dialer) -> ClusterClient {
        self.dialer = dialer;
        self
    }

    /// The member that answered last as the leader, if any.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_ref().map(|(address, _)| address.as_str())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        self.on_leader(true, |c| c.put(key, value))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<Lsn> {
        self.on_leader(true, |c| c.delete(key))
    }

    /// Read from the leader's map (consistency `leader`).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(key, Consistency::Leader, 0)
    }

    /// Read with the consistency asked for (`leader` and `linearizable` go
    /// to the leader, `any` to whichever member answers first), once the
    /// node has applied `min_lsn`.
    pub fn read(
        &mut self,
        key: &[u8],
        consistency: Consistency,
        min_lsn: Lsn,
    ) -> Result<Option<Vec<u8>>> {
        self.on_leader(false, |c| c.read(key, consistency, min_lsn))
    }

    /// Run `request` on the leader, finding it first if need be. `write`:
    /// an outcome lost on the way is indeterminate, never retried.
    fn on_leader<T>(
        &mut self,
        write: bool,
        mut request: impl FnMut(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.budget;
        let mut pause = RETRY_PAUSE_MIN_MS;
        let mut tried: Vec<String> = Vec::new();
        loop {
            for _ in 0..self.members.len() {
                let (address, mut client) = match self.leader.take() {
                    Some(known) => known,
                    None => {
                        let address = self.members[self.next % self.members.len()].clone();
                        self.next += 1;
                        match self.connect(&address) {
                            Ok(client) => (address, client),
                            Err(e) => {
                                tried.push(format!("{address}: {e}"));
                                continue;
                            }
                        }
                    }
                };
                match request(&mut client) {
                    Ok(value) => {
                        self.leader = Some((address, client));
                        return Ok(value);
                    }
                    Err(Error::Server { code: ErrorCode::ReadOnly, .. }) => {
                        tried.push(format!("{address}: not the leader"));
                        self.follow_hint(&address, &mut client);
                    }
                    Err(Error::Server { code, message })
                        if write
                            && matches!(code, ErrorCode::WriteTimeout | ErrorCode::Deposed) =>
                    {
                        return Err(Error::Indeterminate(format!("{address}: {message}")));
                    }
                    Err(e @ Error::Server { .. }) => return Err(e),
                    Err(e) if write => {
                        return Err(Error::Indeterminate(format!(
                            "{address}: the connection failed after the write was sent ({e})"
                        )))
                    }
                    Err(e) => tried.push(format!("{address}: {e}")),
                }
                if self.leader.is_none() && Instant::now() >= deadline {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let last: Vec<&str> =
                    tried.iter().rev().take(self.members.len()).map(String::as_str).collect();
                return Err(Error::NoLeader(format!(
                    "no member answered as the leader within {} ms (last tries: {})",
                    self.budget.as_millis(),
                    last.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(pause));
            pause = (pause * 2).min(RETRY_PAUSE_MAX_MS);
        }
    }

    /// A follower refused: ask it who leads, and go there next.
    fn follow_hint(&mut self, refused_by: &str, client: &mut Client) {
        let Ok(status) = client.status() else { return };
        let Some(leader) = status.leader.map(|l| l.address) else { return };
        if leader == refused_by {
            return;
        }
        if let Ok(client) = self.connect(&leader) {
            self.leader = Some((leader, client));
        }
    }

    /// A connection whose replies are awaited at most one retry budget: a
    /// node that is frozen (or cut off after accepting) must not hold the
    /// caller forever. A write that times out is indeterminate, like any
    /// other write whose connection failed after it was sent.
    fn connect(&self, address: &str) -> Result<Client> {
        let client = Client::connect_with(address, &self.dialer)?;
        client.set_timeout(Some(self.budget.max(Duration::from_millis(1))))?;
        Ok(client)
    }
}
