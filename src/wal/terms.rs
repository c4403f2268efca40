//! The term history: for each term in the log, the first LSN written in it.
//!
//! A log's terms never decrease, so the whole term column of a log with a
//! million records is a handful of runs: `[(1, 1), (2, 5001), (4, 5120)]`
//! says LSNs 1..5000 are term 1, 5001..5119 term 2 and 5120.. term 4. This
//! is PostgreSQL's timeline history file, and Redis's `replid2` + offset
//! kept for every past id, not just the last one.
//!
//! With it a node answers, without reading its WAL:
//! - "which term wrote LSN n?" ([`TermHistory::term_at`]) — the
//!   log-matching check of AppendEntries;
//! - "where does term t start in my log?" ([`TermHistory::first_lsn_of`]) —
//!   the hint a follower gives when it refuses AppendEntries;
//! - "where does my log stop being of term t or older?"
//!   ([`TermHistory::last_lsn_at_or_below`]) — the leader's jump back.
//!
//! It is rebuilt from the WAL at start-up (the WAL is read whole then
//! anyway) and kept up to date by every append and truncation.
//!
//! ## After compaction
//!
//! Once the segments that held the oldest records are deleted
//! (`docs/STORAGE.md`), the history no longer knows their terms. It then
//! starts at a **base**: the LSN just before the first record kept, and its
//! term (a segment's header carries it, and so does a snapshot). It knows
//! the term of the base and of every LSN after it; asked about an LSN below
//! the base it answers `None`, "compacted", and the caller turns to the
//! snapshot: every such record is committed (a node snapshots only up to its
//! commit LSN), so it is the same on every node that holds it.

use crate::{Lsn, Term};

/// Runs of equal terms in a log: `(term, first_lsn)`, both increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermHistory {
    runs: Vec<(Term, Lsn)>,
    last_lsn: Lsn,
    /// The base: the first LSN whose term is known (0 for a whole log).
    /// When it is above 0, `runs[0]` starts exactly there.
    known_from: Lsn,
    /// Set if a record ever had a lower term than the one before it.
    decreasing: Option<String>,
}

impl TermHistory {
    pub fn new() -> TermHistory {
        TermHistory::default()
    }

    /// The history of a log whose first record kept is `base + 1`, the
    /// record at `base` having term `base_term` (see "After compaction").
    pub fn starting_after(base: Lsn, base_term: Term) -> TermHistory {
        if base == 0 {
            return TermHistory::new();
        }
        TermHistory {
            runs: vec![(base_term, base)],
            last_lsn: base,
            known_from: base,
            decreasing: None,
        }
    }

    /// The first LSN whose term is known: 0 for a whole log, else the base.
    pub fn known_from(&self) -> Lsn {
        self.known_from
    }

    /// Forget the terms below `base` (the segments holding them were
    /// deleted). The term of `base` itself stays known.
    pub fn forget_before(&mut self, base: Lsn) {
        if base <= self.known_from || base > self.last_lsn {
            return;
        }
        let Some(term) = self.term_at(base) else { return };
        self.runs.retain(|&(_, first)| first > base);
        self.runs.insert(0, (term, base));
        self.known_from = base;
    }

    /// Record that `lsn` (the next LSN) holds a record of `term`.
    pub fn note(&mut self, lsn: Lsn, term: Term) {
        debug_assert_eq!(lsn, self.last_lsn + 1, "term history follows the log");
        match self.runs.last() {
            Some(&(last, _)) if last == term => {}
            Some(&(last, _)) if last > term => {
                self.decreasing.get_or_insert(format!(
                    "LSN {lsn} has term {term}, lower than term {last} before it"
                ));
                self.runs.push((term, lsn));
            }
            _ => self.runs.push((term, lsn)),
        }
        self.last_lsn = lsn;
    }

    /// Why the log is not a valid history (a term went down), if it is not.
    pub fn decreasing(&self) -> Option<String> {
        self.decreasing.clone()
    }

    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// Term of the last record; 0 for an empty log.
    pub fn last_term(&self) -> Term {
        self.runs.last().map_or(0, |&(term, _)| term)
    }

    /// Term of the record at `lsn`: 0 for LSN 0, `None` past the end.
    pub fn term_at(&self, lsn: Lsn) -> Option<Term> {
        if lsn < self.known_from {
            return None;
        }
        if lsn == 0 {
            return Some(0);
        }
        if lsn > self.last_lsn {
            return None;
        }
        // The last run starting at or before `lsn`.
        let i = self.runs.partition_point(|&(_, first)| first <= lsn);
        Some(self.runs[i - 1].0)
    }

    /// First LSN of `term` in this log, if the log has any record of it.
    pub fn first_lsn_of(&self, term: Term) -> Option<Lsn> {
        self.runs.iter().find(|&&(t, _)| t == term).map(|&(_, first)| first)
    }

    /// The last LSN whose term is `term` or older (0 if none): everything
    /// up to it *could* match a log whose records there are of `term`.
    /// Below the base the answer is `known_from - 1`: not known here.
    pub fn last_lsn_at_or_below(&self, term: Term) -> Lsn {
        match self.runs.iter().position(|&(t, _)| t > term) {
            Some(0) if self.known_from > 0 => self.known_from - 1,
            Some(i) => self.runs[i].1 - 1,
            None => self.last_lsn,
        }
    }

    /// Forget every record after `lsn`.
    pub fn truncate_after(&mut self, lsn: Lsn) {
        if lsn >= self.last_lsn {
            return;
        }
        assert!(
            lsn >= self.known_from,
            "truncating after LSN {lsn}, below the base {}",
            self.known_from
        );
        self.runs.retain(|&(_, first)| first <= lsn);
        self.last_lsn = lsn;
    }

    /// The runs, oldest first, for status and logs.
    pub fn runs(&self) -> &[(Term, Lsn)] {
        &self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(terms: &[Term]) -> TermHistory {
        let mut h = TermHistory::new();
        for (i, &t) in terms.iter().enumerate() {
            h.note(i as Lsn + 1, t);
        }
        h
    }

    #[test]
    fn runs_answer_term_questions() {
        // Goal: a log of terms [1,1,2,2,2,4] answers every question the
        // log-matching check asks, from three runs.
        let h = history(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(h.runs(), &[(1, 1), (2, 3), (4, 6)]);
        let terms: Vec<_> = (0..=7).map(|lsn| h.term_at(lsn)).collect();
        assert_eq!(terms, [Some(0), Some(1), Some(1), Some(2), Some(2), Some(2), Some(4), None]);
        assert_eq!((h.first_lsn_of(2), h.first_lsn_of(3)), (Some(3), None));
        assert_eq!(h.last_lsn_at_or_below(0), 0);
        assert_eq!(h.last_lsn_at_or_below(3), 5);
        assert_eq!(h.last_lsn_at_or_below(9), 6);
        assert_eq!(h.last_term(), 4);
    }

    #[test]
    fn truncation_drops_whole_and_partial_runs() {
        let mut h = history(&[1, 1, 2, 2, 3]);
        h.truncate_after(3);
        assert_eq!((h.runs(), h.last_lsn(), h.last_term()), (&[(1, 1), (2, 3)][..], 3, 2));
        h.truncate_after(0);
        assert_eq!((h.runs().len(), h.last_term(), h.term_at(1)), (0, 0, None));
        h.note(1, 5);
        assert_eq!(h.term_at(1), Some(5));
    }

    #[test]
    fn a_history_with_a_base_knows_nothing_below_it() {
        // Goal: after compaction the history answers for the base and
        // after, and says "not known" below it. Method: LSN 1..10 term 1,
        // 11..12 term 2; forget everything before 8.
        let mut h = history(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
        h.forget_before(8);
        assert_eq!((h.known_from(), h.runs()), (8, &[(1, 8), (2, 11)][..]));
        let terms: Vec<_> = (6..=13).map(|lsn| h.term_at(lsn)).collect();
        assert_eq!(terms, [None, None, Some(1), Some(1), Some(1), Some(2), Some(2), None]);
        assert_eq!(h.last_lsn_at_or_below(1), 10);
        assert_eq!(h.last_lsn_at_or_below(0), 7, "below the base: not known here");
        // The same history, as a log that starts after a snapshot at LSN 10.
        let mut s = TermHistory::starting_after(10, 1);
        s.note(11, 2);
        s.note(12, 2);
        assert_eq!(
            (s.term_at(10), s.term_at(9), s.last_term(), s.last_lsn()),
            (Some(1), None, 2, 12)
        );
        assert_eq!(TermHistory::starting_after(0, 0), TermHistory::new());
    }

    #[test]
    fn a_decreasing_term_is_reported() {
        let h = history(&[1, 3, 2]);
        assert!(h.decreasing().unwrap().contains("LSN 3 has term 2"));
    }
}
