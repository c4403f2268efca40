//! The STATUS report: what `kv_client status` shows (lesson 4).
//!
//! Modelled on PostgreSQL's `pg_stat_replication`: the node's own position,
//! and on a leader one row per expected follower with its state, acked LSN,
//! lag in records and time since its last ACK. It travels as JSON inside a
//! STATUS_REPLY so scripts can read it (`kv_client status --json`); the human
//! form is an aligned table.

use serde::{Deserialize, Serialize};

use crate::logline::{bytes, count};
use crate::replication::lag::LagSummary;
use crate::stages::StageSummary;
use crate::{Lsn, Term};

/// One node's view of itself and of its followers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `leader` or `follower`.
    pub role: String,
    /// This node's current term (see `docs/FAILOVER.md`).
    pub term: Term,
    /// Term of the last record in this node's log.
    pub last_term: Term,
    /// The address clients reach this node on.
    pub address: String,
    /// Every member of the cluster as this node knows it (itself included).
    #[serde(default)]
    pub members: Vec<String>,
    /// Each member, and how long ago it last showed it is reachable: it
    /// sent this node something (AppendEntries, an ACK, a vote request, an
    /// announcement) or answered one of its questions.
    #[serde(default)]
    pub member_contacts: Vec<MemberContact>,
    /// `None` while this node's data is believed good; otherwise why it
    /// refuses reads (its leader found its digest differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// The cluster this node's log belongs to (a fresh follower has none yet).
    pub cluster_id: Option<String>,
    pub last_lsn: Lsn,
    /// Hash of the applied state at `last_lsn`: the wrapping sum over all
    /// live pairs of xxh3_64(value, seed = xxh3_64(key)), 16 hex digits.
    /// Two nodes at the same LSN with the same digest hold the same data.
    pub digest: String,
    pub commit_lsn: Lsn,
    /// Live keys in the map.
    pub keys: u64,
    /// `always` or `never`.
    pub fsync: String,
    /// On a leader: `local`, `majority` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_concern: Option<String>,
    /// The leader: on a follower, the one it follows and the link's state;
    /// on a leader, itself (state `leader`). Absent while no leader is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderLink>,
    /// On a leader: one row per follower (expected ones first).
    #[serde(default)]
    pub followers: Vec<FollowerRow>,
    /// On a leader with followers: how long acknowledged writes took to
    /// reach every expected follower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag: Option<LagSummary>,
    /// Where the time of writes went on this node, stage by stage
    /// ([`crate::stages`]); only stages that have samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_stages: Vec<StageSummary>,
    /// `auto` (followers elect a new leader by themselves) or `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// Whom this node voted for in its current term, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voted_for: Option<String>,
    /// The last change of this node's role: when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_role_change: Option<RoleChange>,
    /// How much of each admission budget is in use ([`crate::admission`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionsReport>,
    /// The disk: the newest snapshot and the WAL (`docs/STORAGE.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// On a follower receiving a snapshot from its leader: how far it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<ResyncStatus>,
}

/// The newest snapshot and the WAL on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// `None` until the first snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStatus>,
    /// Bytes of every WAL segment, and how many there are.
    pub wal_bytes: u64,
    pub wal_segments: u64,
    /// The first LSN the WAL holds; older records are only in the snapshot.
    pub wal_first_lsn: Lsn,
    /// WAL written after the snapshot, and how much calls for the next one.
    pub wal_bytes_since_snapshot: u64,
    pub snapshot_after_bytes: u64,
}

/// A snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub lsn: Lsn,
    pub term: Term,
    pub keys: u64,
    pub bytes: u64,
    /// Milliseconds since it was taken.
    pub age_ms: u64,
}

/// A follower's snapshot transfer from its leader (full resync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncStatus {
    pub snapshot_lsn: Lsn,
    pub received_bytes: u64,
    pub total_bytes: u64,
    pub bytes_per_sec: u64,
}

/// The admission budgets in use right now, and their limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsReport {
    /// Connections being served (`--max-connections`).
    pub active: u64,
    pub active_max: u64,
    /// Of those, not yet authenticated or past their first frame
    /// (`--max-unauthenticated`).
    pub unauthenticated: u64,
    pub unauthenticated_max: u64,
    /// Followers between FOLLOWER_HELLO and caught up (`--max-catch-ups`).
    pub catch_ups: u64,
    pub catch_ups_max: u64,
    /// Bytes charged by frames still arriving (`--max-partial-frame-bytes`).
    pub partial_frame_bytes: u64,
    pub partial_frame_bytes_max: u64,
}

/// A member and when it was last heard from (`None`: not since this node
/// started; 0 for the node itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberContact {
    pub address: String,
    pub last_heard_ms_ago: Option<u64>,
}

/// When a node last became leader or follower, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChange {
    pub ms_ago: u64,
    pub what: String,
}

/// A follower's view of its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLink {
    pub address: String,
    /// `connecting`, `catching-up` or `streaming`; `leader` when the node
    /// reports itself.
    pub state: String,
    /// The leader's last LSN as of its latest AppendEntries.
    pub leader_last_lsn: Lsn,
}

/// A leader's view of one follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerRow {
    pub address: String,
    /// `connecting`, `catching-up`, `streaming` or `disconnected`.
    pub state: String,
    /// True if the follower is in `--peers` (and so counts for the majority).
    pub expected: bool,
    pub acked_lsn: Lsn,
    /// Records the follower is behind the leader's last LSN.
    pub lag_records: u64,
    /// Milliseconds since its last ACK, if it ever sent one.
    pub last_ack_ms_ago: Option<u64>,
    /// The follower's term, from its HELLO and ACKs.
    #[serde(default)]
    pub term: Term,
    /// True if the corruption check found its digest differs from ours.
    #[serde(default)]
    pub digest_mismatch: bool,
    /// Bytes of WAL compaction keeps for this follower (from its acked
    /// LSN on, at most `--wal-retain-max-bytes`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pinned_bytes: u64,
    /// While it is sent a snapshot: bytes sent so far, of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_sent_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_total_bytes: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StatusReport {
    /// The human form: a few `name: value` lines and a table of followers.
    pub fn render(&self) -> String {
        let mut out = format!(
            "role:        {}\nterm:        {}\naddress:     {}\ncluster:     {}\n\
             last_lsn:    {} (term {})\ncommit_lsn:  {}\n\
             digest:      {} (at LSN {})\nkeys:        {}\nfsync:       {}\n",
            self.role,
            self.term,
            self.address,
            self.cluster_id.as_deref().unwrap_or("(none yet)"),
            self.last_lsn,
            self.last_term,
            self.commit_lsn,
            self.digest,
            self.last_lsn,
            self.keys,
            self.fsync
        );
        if !self.member_contacts.is_empty() {
            let members: Vec<String> = self
                .member_contacts
                .iter()
                .map(|m| match m.last_heard_ms_ago {
                    _ if m.address == self.address => format!("{} (this node)", m.address),
                    Some(ms) => format!("{} (heard {:.1}s ago)", m.address, ms as f64 / 1000.0),
                    None => format!("{} (not heard from)", m.address),
                })
                .collect();
            out.push_str(&format!("members:     {}\n", members.join(", ")));
        } else if !self.members.is_empty() {
            out.push_str(&format!("members:     {}\n", self.members.join(", ")));
        }
        if let Some(why) = &self.unhealthy {
            out.push_str(&format!("UNHEALTHY:   {why}\n"));
        }
        if let Some(wc) = &self.write_concern {
            out.push_str(&format!("write:       {wc}\n"));
        }
        if let Some(c) = &self.connections {
            out.push_str(&format!(
                "connections: {}/{} ({}/{} unauthenticated), catch-ups {}/{}, partial frames \
                 {}/{} bytes\n",
                c.active,
                c.active_max,
                c.unauthenticated,
                c.unauthenticated_max,
                c.catch_ups,
                c.catch_ups_max,
                c.partial_frame_bytes,
                c.partial_frame_bytes_max
            ));
        }
        match &self.leader {
            Some(l) if l.state == "leader" => {
                out.push_str(&format!("leader:      {} (this node)\n", l.address))
            }
            Some(l) => out.push_str(&format!(
                "leader:      {} ({}, leader last_lsn {})\n",
                l.address, l.state, l.leader_last_lsn
            )),
            None => out.push_str("leader:      (not known)\n"),
        }
        if let Some(failover) = &self.failover {
            out.push_str(&format!("failover:    {failover}\n"));
        }
        if let Some(v) = &self.voted_for {
            out.push_str(&format!("voted for:   {v} (in term {})\n", self.term));
        }
        if let Some(change) = &self.last_role_change {
            out.push_str(&format!(
                "last change: {:.1}s ago: {}\n",
                change.ms_ago as f64 / 1000.0,
                change.what
            ));
        }
        if let Some(storage) = &self.storage {
            out.push_str(&render_storage(storage));
        }
        if let Some(r) = &self.resync {
            let percent = (r.received_bytes * 100).checked_div(r.total_bytes).unwrap_or(100);
            out.push_str(&format!(
                "resync:      receiving the snapshot at LSN {}: {} of {} ({percent}%), {}/s\n",
                count(r.snapshot_lsn),
                bytes(r.received_bytes),
                bytes(r.total_bytes),
                bytes(r.bytes_per_sec)
            ));
        }
        if let Some(lag) = &self.replication_lag {
            out.push_str(&format!(
                "repl lag:    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} writes\n",
                lag.p50_us as f64 / 1000.0,
                lag.p99_us as f64 / 1000.0,
                lag.max_us as f64 / 1000.0,
                lag.count
            ));
        }
        if !self.write_stages.is_empty() {
            out.push_str(&render_stages(&self.write_stages));
        }
        if self.role == "leader" {
            out.push_str(&render_followers(&self.followers));
        }
        out
    }
}

/// `snapshot:` and `wal:` lines.
fn render_storage(s: &StorageStatus) -> String {
    let snapshot = match &s.snapshot {
        Some(snap) => format!(
            "LSN {} (term {}), {} keys, {}, taken {:.1}s ago",
            count(snap.lsn),
            snap.term,
            count(snap.keys),
            bytes(snap.bytes),
            snap.age_ms as f64 / 1000.0
        ),
        None => "none yet".into(),
    };
    format!(
        "snapshot:    {snapshot}\nwal:         {} segment(s), {}, from LSN {}; {} since the \
         snapshot (the next one at {})\n",
        s.wal_segments,
        bytes(s.wal_bytes),
        count(s.wal_first_lsn),
        bytes(s.wal_bytes_since_snapshot),
        bytes(s.snapshot_after_bytes)
    )
}

/// `write stages (µs):  queue p50 12 p99 80 | write ...`, one stage a line.
fn render_stages(stages: &[StageSummary]) -> String {
    let mut out = String::from("write stages (p50 / p99 / max, µs, count):\n");
    for s in stages {
        out.push_str(&format!(
            "  {:<7} {:>8} {:>8} {:>8}  {}\n",
            s.stage, s.p50_us, s.p99_us, s.max_us, s.count
        ));
    }
    out
}

fn render_followers(rows: &[FollowerRow]) -> String {
    if rows.is_empty() {
        return "followers:   none\n".to_string();
    }
    let header = ["FOLLOWER", "STATE", "TERM", "ACKED_LSN", "LAG", "LAST_ACK", "DIGEST", "PINNED"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let name =
                if r.expected { r.address.clone() } else { format!("{} (extra)", r.address) };
            let ack = match r.last_ack_ms_ago {
                Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
                None => "never".to_string(),
            };
            let digest = if r.digest_mismatch { "MISMATCH" } else { "ok" };
            let state = match (r.snapshot_sent_bytes, r.snapshot_total_bytes) {
                (Some(sent), Some(total)) => {
                    let percent = (sent * 100).checked_div(total).unwrap_or(100);
                    format!("{} {percent}% of {}", r.state, bytes(total))
                }
                _ => r.state.clone(),
            };
            [
                name,
                state,
                r.term.to_string(),
                r.acked_lsn.to_string(),
                r.lag_records.to_string(),
                ack,
                digest.to_string(),
                if r.pinned_bytes > 0 { bytes(r.pinned_bytes) } else { "-".into() },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: [&str; 8]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{c:<w$}"));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = String::from("\n");
    out.push_str(&line(header));
    for row in &cells {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}
