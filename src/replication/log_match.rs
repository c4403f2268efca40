//! The log-matching rules of AppendEntries (Raft section 5.3), as pure
//! functions: no sockets, no files, no clocks.
//!
//! ## Why
//!
//! Two replicas can hold *different* records at the same LSN: a leader that
//! lost its unsynced tail in a crash writes new records at those LSNs, or a
//! leader cut off from its followers keeps taking `local` writes while
//! another node is promoted. LSNs alone cannot tell these histories apart;
//! (LSN, term) can, because one term has one leader, and a leader never
//! writes two records at one LSN. From that follows Raft's **Log Matching
//! Property**: if two logs hold a record with the same LSN and term, they
//! are identical up to and including that LSN.
//!
//! ## The check, step by step
//!
//! Every AppendEntries names the record just before its first one:
//! `(prev_lsn, prev_term)`. The follower ([`check_append`]):
//!
//! 1. If its log has no record at `prev_lsn`, or one of another term, it
//!    **refuses**, and says where its log ends and which term it holds at
//!    `prev_lsn` (with the first LSN of that term in its log).
//! 2. Otherwise the two logs agree up to `prev_lsn`. For each record in
//!    the message it already holds with the same term, there is nothing to
//!    do; at the first one it holds with a *different* term, its log
//!    diverges: every record from there on is removed (truncated), and the
//!    leader's records are appended instead.
//!
//! The leader starts from a guess ([`first_probe`]) made from the
//! follower's FOLLOWER_HELLO `(last_lsn, last_term)` and its own term
//! history, and after a refusal jumps back past a whole term at once
//! ([`after_refusal`]), so the common point of two logs is found in at most
//! a round trip per term, without reading either WAL.
//!
//! What truncation never does — remove a record at or below the commit
//! LSN — is enforced where the removal happens ([`crate::db::Db::truncate_after`]).
//!
//! ## Below a snapshot
//!
//! A log whose oldest records were compacted into a snapshot knows terms
//! only from its base on ([`TermHistory::known_from`]). Every record at or
//! below the base is in the snapshot, hence committed, hence the same in
//! every log that holds it (Raft's Leader Completeness). So a follower
//! asked to match below its base accepts the part of the message it
//! already holds and checks the rest from its base (etcd answers such a
//! message with its commit index the same way). A leader whose own log no
//! longer reaches the point it must probe cannot name that record's term:
//! it sends its snapshot instead (`crate::replication::install`).

use crate::wal::TermHistory;
use crate::{Lsn, Term};

/// What the rules need to know about a log: the term at each LSN.
pub trait LogView {
    fn last_lsn(&self) -> Lsn;
    /// Term of the record at `lsn`: 0 for LSN 0, `None` past the end.
    fn term_at(&self, lsn: Lsn) -> Option<Term>;
    /// First LSN of `term` in this log, if it holds a record of it.
    fn first_lsn_of(&self, term: Term) -> Option<Lsn>;
    /// Last LSN whose term is `term` or older (0 if none).
    fn last_lsn_at_or_below(&self, term: Term) -> Lsn;
    /// The first LSN whose term is known: 0, or the base of a compacted log.
    fn known_from(&self) -> Lsn;
}

impl LogView for TermHistory {
    fn last_lsn(&self) -> Lsn {
        TermHistory::last_lsn(self)
    }
    fn term_at(&self, lsn: Lsn) -> Option<Term> {
        TermHistory::term_at(self, lsn)
    }
    fn first_lsn_of(&self, term: Term) -> Option<Lsn> {
        TermHistory::first_lsn_of(self, term)
    }
    fn last_lsn_at_or_below(&self, term: Term) -> Lsn {
        TermHistory::last_lsn_at_or_below(self, term)
    }
    fn known_from(&self) -> Lsn {
        TermHistory::known_from(self)
    }
}

/// A follower's refusal: the fields of APPEND_ENTRIES_REFUSE after the term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The follower's last LSN.
    pub last_lsn: Lsn,
    /// If the follower holds a record at `prev_lsn` of another term: the
    /// first LSN of that term in its log. 0 if its log is too short.
    pub conflict_lsn: Lsn,
    /// The term it holds at `prev_lsn`; 0 if its log is too short.
    pub conflict_term: Term,
}

/// What a follower does with an AppendEntries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `prev_lsn` / `prev_term` do not match this log.
    Refuse(Refusal),
    /// They match. Remove every record after `truncate_after` (if set: the
    /// first conflicting record is at `truncate_after + 1`), then append the
    /// message's records from index `skip` on (the ones before it are
    /// already in the log). The logs now agree up to `matched`.
    Accept { truncate_after: Option<Lsn>, skip: usize, matched: Lsn },
}

/// Step 1 and 2 of the module doc: check an AppendEntries whose records
/// (LSNs `prev_lsn + 1 ..`) have the terms `record_terms`.
pub fn check_append(
    log: &impl LogView,
    prev_lsn: Lsn,
    prev_term: Term,
    record_terms: impl ExactSizeIterator<Item = Term>,
) -> Verdict {
    let known_from = log.known_from();
    if prev_lsn < known_from {
        return check_below_base(log, prev_lsn, record_terms.collect());
    }
    let last_lsn = log.last_lsn();
    let Some(ours) = log.term_at(prev_lsn) else {
        return Verdict::Refuse(Refusal { last_lsn, conflict_lsn: 0, conflict_term: 0 });
    };
    if ours != prev_term {
        let conflict_lsn = log.first_lsn_of(ours).unwrap_or(prev_lsn);
        return Verdict::Refuse(Refusal { last_lsn, conflict_lsn, conflict_term: ours });
    }
    let matched = prev_lsn + record_terms.len() as Lsn;
    for (i, theirs) in record_terms.enumerate() {
        let lsn = prev_lsn + 1 + i as Lsn;
        match log.term_at(lsn) {
            Some(t) if t == theirs => continue,
            Some(_) => return Verdict::Accept { truncate_after: Some(lsn - 1), skip: i, matched },
            None => return Verdict::Accept { truncate_after: None, skip: i, matched },
        }
    }
    Verdict::Accept {
        truncate_after: None,
        skip: matched.saturating_sub(prev_lsn) as usize,
        matched,
    }
}

/// [`check_append`] for a message that starts below the log's base (see
/// "Below a snapshot"): skip the records up to the base, which this node
/// holds in its snapshot, and check the rest from the base on.
fn check_below_base(log: &impl LogView, prev_lsn: Lsn, terms: Vec<Term>) -> Verdict {
    let below = usize::try_from(log.known_from() - prev_lsn).unwrap_or(usize::MAX);
    if below >= terms.len() {
        let matched = prev_lsn + terms.len() as Lsn;
        return Verdict::Accept { truncate_after: None, skip: terms.len(), matched };
    }
    let base = log.known_from();
    match check_append(log, base, terms[below - 1], terms[below..].iter().copied()) {
        Verdict::Accept { truncate_after, skip, matched } => {
            Verdict::Accept { truncate_after, skip: skip + below, matched }
        }
        refused => refused,
    }
}

/// The leader's first `prev_lsn` for a follower that said its log ends at
/// `(last_lsn, last_term)`. If the leader holds that very record, the logs
/// match there (Log Matching) and this is the answer; otherwise the best
/// candidate is the last LSN both logs could agree on: no later than the
/// follower's end, and no later than where the leader's log moves past
/// `last_term`. The first probe checks it.
pub fn first_probe(leader: &impl LogView, last_lsn: Lsn, last_term: Term) -> Lsn {
    if leader.term_at(last_lsn) == Some(last_term) {
        return last_lsn;
    }
    last_lsn.min(leader.last_lsn_at_or_below(last_term)).min(leader.last_lsn())
}

/// The leader's next `prev_lsn` after the follower refused a probe at
/// `probed`. `None` if the refusal makes no sense (LSN 0 always matches,
/// so a refusal there is a protocol violation).
///
/// - Follower too short: probe at its last LSN.
/// - Follower holds term `t` at `probed`: if the leader has records of
///   `t`, the logs can agree up to the leader's last record of `t`;
///   otherwise none of the follower's term-`t` records can match, so probe
///   just before the first of them.
pub fn after_refusal(leader: &impl LogView, probed: Lsn, refusal: &Refusal) -> Option<Lsn> {
    if probed == 0 {
        return None;
    }
    let next = if refusal.conflict_term == 0 {
        refusal.last_lsn
    } else if leader.first_lsn_of(refusal.conflict_term).is_some() {
        leader.last_lsn_at_or_below(refusal.conflict_term)
    } else {
        refusal.conflict_lsn.saturating_sub(1)
    };
    // Always move back, whatever a confused follower said.
    Some(next.min(probed - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(terms: &[Term]) -> TermHistory {
        let mut h = TermHistory::new();
        for (i, &t) in terms.iter().enumerate() {
            h.note(i as Lsn + 1, t);
        }
        h
    }

    /// Run the leader's probing against a follower until they agree;
    /// returns the agreed LSN and how many probes it took.
    fn probe(leader: &TermHistory, follower: &TermHistory) -> (Lsn, usize) {
        let mut prev = first_probe(leader, follower.last_lsn(), follower.last_term());
        for round in 1..100 {
            let prev_term = leader.term_at(prev).unwrap();
            match check_append(follower, prev, prev_term, std::iter::empty()) {
                Verdict::Accept { matched, .. } => return (matched, round),
                Verdict::Refuse(r) => prev = after_refusal(leader, prev, &r).unwrap(),
            }
        }
        panic!("probing did not converge");
    }

    #[test]
    fn identical_logs_match_at_once() {
        let l = log(&[1, 1, 2, 2]);
        assert_eq!(probe(&l, &l), (4, 1));
    }

    #[test]
    fn a_follower_behind_matches_at_its_end() {
        assert_eq!(probe(&log(&[1, 1, 2, 2, 3]), &log(&[1, 1, 2])), (3, 1));
    }

    #[test]
    fn the_lost_tail_case_finds_the_fork() {
        // Goal: the case: the leader lost LSN 16..20 of term 1 and
        // wrote 16..25 in term 2; a follower has 1..20 of term 1. They agree
        // up to 15, found in one probe from the term history.
        let leader = log(&[&[1; 15][..], &[2; 10][..]].concat());
        let follower = log(&[1; 20]);
        assert_eq!(probe(&leader, &follower), (15, 1));
    }

    #[test]
    fn a_term_the_leader_never_saw_is_skipped_whole() {
        // Follower [1,1,3,3,3], leader [1,1,2,2,2,4]: the follower's term 3
        // never reached the leader; they agree up to LSN 2.
        let (matched, rounds) = probe(&log(&[1, 1, 2, 2, 2, 4]), &log(&[1, 1, 3, 3, 3]));
        assert_eq!(matched, 2);
        assert!(rounds <= 2, "{rounds} rounds");
    }

    #[test]
    fn accept_truncates_at_the_first_conflict_and_skips_what_matches() {
        let follower = log(&[1, 1, 1, 1]);
        // Leader sends LSN 2..5 with terms [1, 1, 2, 2] after prev (1, 1).
        let verdict = check_append(&follower, 1, 1, [1, 1, 2, 2].into_iter());
        assert_eq!(verdict, Verdict::Accept { truncate_after: Some(3), skip: 2, matched: 5 });
        // Everything already there: nothing to do.
        let verdict = check_append(&follower, 1, 1, [1, 1].into_iter());
        assert_eq!(verdict, Verdict::Accept { truncate_after: None, skip: 2, matched: 3 });
        // A heartbeat matching in the middle truncates nothing.
        let verdict = check_append(&follower, 2, 1, std::iter::empty());
        assert_eq!(verdict, Verdict::Accept { truncate_after: None, skip: 0, matched: 2 });
    }

    #[test]
    fn a_follower_with_a_compacted_log_accepts_what_its_snapshot_holds() {
        // Goal: a follower whose log starts after a snapshot at LSN 10
        // (term 1) takes a message from LSN 6 on: LSN 7..10 are skipped
        // (committed, in its snapshot), 11 and 12 checked and appended.
        let mut follower = TermHistory::starting_after(10, 1);
        follower.note(11, 1);
        let verdict = check_append(&follower, 6, 1, [1, 1, 1, 1, 1, 2].into_iter());
        assert_eq!(verdict, Verdict::Accept { truncate_after: None, skip: 5, matched: 12 });
        // A probe below the base matches: those records are committed.
        let probe = check_append(&follower, 3, 1, std::iter::empty());
        assert_eq!(probe, Verdict::Accept { truncate_after: None, skip: 0, matched: 3 });
        // A message whose record at the base has another term is refused.
        let other = check_append(&follower, 9, 1, [2, 2].into_iter());
        assert!(matches!(other, Verdict::Refuse(_)), "{other:?}");
    }

    #[test]
    fn refusals_say_where_the_follower_stands() {
        let follower = log(&[1, 1, 2, 2]);
        let short = check_append(&follower, 9, 2, std::iter::empty());
        let r = Refusal { last_lsn: 4, conflict_lsn: 0, conflict_term: 0 };
        assert_eq!(short, Verdict::Refuse(r));
        let other = check_append(&follower, 4, 3, std::iter::empty());
        let r = Refusal { last_lsn: 4, conflict_lsn: 3, conflict_term: 2 };
        assert_eq!(other, Verdict::Refuse(r));
        assert_eq!(after_refusal(&log(&[1]), 0, &r), None, "LSN 0 always matches");
    }
}
