//! Automatic election: when a follower stops hearing from its leader, and
//! when a leader stops hearing from its followers (Raft sections 5.2 and
//! 9.6; `docs/FAILOVER.md`). Pure rules on millisecond clocks, no threads:
//! [`crate::replication::replica`] calls them from its election thread, and
//! the tests drive them with any clock they like.
//!
//! ## The three rules
//!
//! 1. **Election timeout.** A follower that hears nothing from a leader
//!    (no AppendEntries, not even a heartbeat) for its election timeout
//!    starts an election. The timeout is drawn at random between `T` and
//!    `2T` each time the clock is reset, so two followers rarely time out
//!    together and split the vote. Heartbeats come every
//!    `heartbeat_ms` (a tenth of `T` by default): a healthy leader resets
//!    every follower's clock many times per timeout.
//! 2. **Pre-vote.** Before it increments its term, the follower asks every
//!    member "would you vote for me in term + 1?" (PRE_VOTE). A member says
//!    yes only if it has not heard from a leader for at least `T` itself
//!    and the asker's log is at least as up to date as its own; nothing is
//!    stored either way. Only with a majority of yeses does the real
//!    election (REQUEST_VOTE, term + 1, stored) begin. So a node that was
//!    cut off, whose clock ran out while the others kept hearing their
//!    leader, comes back without bumping anyone's term or deposing the
//!    leader.
//! 3. **Check-quorum.** A leader that has not heard an ACK from a majority
//!    of the members (itself included) within `T` steps down and stops
//!    taking writes: it is probably cut off, and the others may already
//!    have elected someone.
//! 4. **A leader that is gone.** Rules 1 and 2 wait out the lease because
//!    silence may only be a slow network. A connection *refused* by the
//!    leader's address is different: the leader's host answered that no
//!    process listens on that port, so the leader crashed or was stopped
//!    (a machine that loses power, or a cut cable, refuses nothing and
//!    leaves rules 1 and 2 in charge). A follower told so ends its lease
//!    early and stands for election after a short random wait, `[H, H +
//!    min(T/2, 5H))` with `H` the heartbeat interval, instead of the whole
//!    timeout, and retries as soon after a split vote, until a leader
//!    speaks. It still needs a majority of pre-votes, and a member that
//!    still hears a leader refuses them, so a healthy leader is never
//!    deposed this way.

use crate::{Lsn, Term};

/// `--failover`: whether followers elect a new leader by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Rules 1 to 3 below run.
    Auto,
    /// Only an operator changes the leader (`kv_client promote`).
    Manual,
}

/// A node's election settings: `failover` is `None` when not given, which
/// means `Auto` for a cluster of 3 or more members and `Manual` for 1 or 2
/// (a cluster of 2 cannot elect anyone once one of them is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    pub failover: Option<Failover>,
    pub timing: Timing,
}

impl ElectionConfig {
    /// Does a node with `members` members (itself included) fail over by itself?
    pub fn automatic(&self, members: usize) -> bool {
        match self.failover {
            Some(Failover::Auto) => true,
            Some(Failover::Manual) => false,
            None => members >= 3,
        }
    }
}

/// The election timing of a node, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `T`: the shortest election timeout; each one is drawn in `[T, 2T)`.
    pub election_ms: u64,
    /// How often an idle leader sends an empty AppendEntries.
    pub heartbeat_ms: u64,
}

/// A follower's election clock: when it last heard from a leader, when it
/// started waiting, and how long it waits this time.
#[derive(Debug, Clone)]
pub struct ElectionClock {
    timing: Timing,
    /// When a leader last spoke to us (the pre-vote lease runs from here).
    last_leader_ms: Option<u64>,
    /// Set by [`ElectionClock::leader_gone`]: the lease is over early.
    leader_gone: bool,
    /// When the current wait began, and how long it lasts.
    waiting_since_ms: u64,
    timeout_ms: u64,
    rng: u64,
}

impl ElectionClock {
    /// A clock that starts waiting at `now_ms`; `seed` picks the timeouts.
    pub fn new(timing: Timing, seed: u64, now_ms: u64) -> ElectionClock {
        let mut clock = ElectionClock {
            timing,
            last_leader_ms: None,
            leader_gone: false,
            waiting_since_ms: now_ms,
            timeout_ms: 0,
            rng: seed | 1,
        };
        clock.restart(now_ms);
        clock
    }

    /// We heard from a leader: the lease starts, and so does a new wait.
    pub fn heard_from_leader(&mut self, now_ms: u64) {
        self.last_leader_ms = Some(now_ms);
        self.leader_gone = false;
        self.restart(now_ms);
    }

    /// Rule 4: our leader's address refuses connections, so no process
    /// listens there: the leader is gone, not merely quiet. The lease ends
    /// (there is no leader left to protect) and the wait is cut to a short
    /// one (`ElectionClock::short_wait`) if that ends sooner than the
    /// current one. Returns how long the wait still lasts.
    pub fn leader_gone(&mut self, now_ms: u64) -> u64 {
        self.leader_gone = true;
        let short = self.short_wait();
        let left = (self.waiting_since_ms + self.timeout_ms).saturating_sub(now_ms);
        if short < left {
            self.waiting_since_ms = now_ms;
            self.timeout_ms = short;
        }
        short.min(left)
    }

    /// Wait again, with a fresh random timeout (after granting a vote, or
    /// after an election that came to nothing). The lease is not renewed:
    /// only a leader renews it. While the leader is known to be gone (rule
    /// 4), the waits stay short: an election that split its votes is tried
    /// again soon, not after a whole timeout.
    pub fn restart(&mut self, now_ms: u64) {
        self.waiting_since_ms = now_ms;
        self.timeout_ms = if self.leader_gone {
            self.short_wait()
        } else {
            let t = self.timing.election_ms.max(1);
            t + self.next_random() % t
        };
    }

    /// Rule 4's wait: random in `[H, H + min(T/2, 5H))`, `H` the heartbeat
    /// interval — 100 to 600 ms by default: wide enough that followers told
    /// at once rarely stand together and split the vote.
    fn short_wait(&mut self) -> u64 {
        let h = self.timing.heartbeat_ms.max(1);
        let spread = (self.timing.election_ms / 2).min(5 * h).max(1);
        h + self.next_random() % spread
    }

    /// If this wait is over: how long since we last heard from a leader
    /// (or, if never, since the wait began). Time to start an election.
    pub fn expired(&self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.waiting_since_ms) < self.timeout_ms {
            return None;
        }
        Some(now_ms.saturating_sub(self.last_leader_ms.unwrap_or(self.waiting_since_ms)))
    }

    /// Heard from a leader within the shortest timeout: refuse pre-votes.
    pub fn in_lease(&self, now_ms: u64) -> bool {
        !self.leader_gone
            && self
                .last_leader_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < self.timing.election_ms)
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// xorshift64*: timeouts must differ between nodes, nothing more.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Rule 2: does a member whose term is `ours_term` and whose log ends at
/// `ours` say yes to a PRE_VOTE for `term` from a log ending at `theirs`?
pub fn grant_pre_vote(
    ours_term: Term,
    ours: (Term, Lsn),
    term: Term,
    theirs: (Term, Lsn),
    in_lease: bool,
) -> bool {
    !in_lease && term > ours_term && theirs >= ours
}

/// Rule 3: did a majority of `members` (the leader included) answer within
/// `within_ms`? `acks_ms_ago` holds, for each other member, how long ago
/// its last ACK came (`None`: never).
pub fn quorum_alive(acks_ms_ago: &[Option<u64>], members: usize, within_ms: u64) -> bool {
    let heard = acks_ms_ago.iter().filter(|a| a.is_some_and(|ms| ms < within_ms)).count();
    let majority = members / 2 + 1;
    heard + 1 >= majority
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing { election_ms: 1000, heartbeat_ms: 100 };

    #[test]
    fn timeouts_are_random_between_t_and_2t() {
        let mut clock = ElectionClock::new(TIMING, 42, 0);
        let mut seen = Vec::new();
        for i in 0..1000 {
            clock.restart(i);
            assert!((1000..2000).contains(&clock.timeout_ms()), "{}", clock.timeout_ms());
            seen.push(clock.timeout_ms());
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 500, "only {} distinct timeouts", seen.len());
    }

    #[test]
    fn a_clock_expires_only_after_its_timeout_of_silence() {
        let mut clock = ElectionClock::new(TIMING, 7, 10_000);
        clock.heard_from_leader(10_000);
        let timeout = clock.timeout_ms();
        assert_eq!(clock.expired(10_000 + timeout - 1), None);
        assert_eq!(clock.expired(10_000 + timeout), Some(timeout));
        clock.heard_from_leader(10_000 + timeout); // a heartbeat just in time
        assert_eq!(clock.expired(10_000 + timeout + 999), None);
        assert!(clock.in_lease(10_000 + timeout + 999));
        assert!(!clock.in_lease(10_000 + timeout + 1000));
    }

    #[test]
    fn only_a_leader_renews_the_lease() {
        // Goal: two followers of a dead leader whose pre-votes failed must
        // not refuse each other's next pre-vote: waiting again is not
        // hearing from a leader.
        let mut clock = ElectionClock::new(TIMING, 9, 0);
        assert!(!clock.in_lease(0), "never heard from a leader");
        clock.heard_from_leader(100);
        clock.restart(5_000);
        assert!(!clock.in_lease(5_001));
        assert_eq!(clock.expired(5_000 + clock.timeout_ms()), Some(clock.timeout_ms() + 4_900));
    }

    #[test]
    fn a_leader_that_is_gone_ends_the_lease_and_shortens_the_wait() {
        let mut clock = ElectionClock::new(TIMING, 11, 0);
        clock.heard_from_leader(1_000);
        assert!(clock.in_lease(1_050));
        let wait = clock.leader_gone(1_100);
        assert!((100..600).contains(&wait), "waits {wait} ms");
        assert!(!clock.in_lease(1_100), "no lease for a leader that is gone");
        assert_eq!(clock.expired(1_100 + wait - 1), None);
        assert_eq!(clock.expired(1_100 + wait), Some(100 + wait), "silent since 1000");
        // A failed election tries again soon, still without a lease.
        clock.restart(1_500);
        assert!((100..600).contains(&clock.timeout_ms()) && !clock.in_lease(1_500));
        // A leader that speaks brings the lease back, and whole timeouts.
        clock.heard_from_leader(3_000);
        assert!(clock.in_lease(3_001));
        assert!(clock.timeout_ms() >= 1000);
    }

    #[test]
    fn a_leader_gone_late_in_the_wait_does_not_lengthen_it() {
        let mut clock = ElectionClock::new(TIMING, 13, 0);
        clock.heard_from_leader(0);
        let timeout = clock.timeout_ms();
        let wait = clock.leader_gone(timeout - 50);
        assert_eq!(wait, 50);
        assert_eq!(clock.expired(timeout), Some(timeout));
    }

    #[test]
    fn pre_votes_need_silence_a_newer_term_and_a_log_as_long() {
        assert!(grant_pre_vote(3, (3, 10), 4, (3, 10), false));
        assert!(!grant_pre_vote(3, (3, 10), 4, (3, 10), true), "heard from a leader lately");
        assert!(!grant_pre_vote(4, (3, 10), 4, (3, 10), false), "not a newer term");
        assert!(!grant_pre_vote(3, (3, 10), 4, (3, 9), false), "its log is shorter");
        assert!(!grant_pre_vote(3, (3, 10), 4, (2, 20), false), "its last term is older");
    }

    #[test]
    fn a_leader_needs_recent_acks_from_a_majority() {
        assert!(quorum_alive(&[Some(50), None], 3, 1000), "itself and one of two");
        assert!(!quorum_alive(&[Some(1500), None], 3, 1000), "nobody lately");
        assert!(!quorum_alive(&[Some(10), None, None, None], 5, 1000), "2 of 5");
        assert!(quorum_alive(&[], 1, 1000), "a cluster of one");
    }
}
