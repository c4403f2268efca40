//! The nemesis's schedule: which fault comes next, on whom, for how long.
//!
//! The schedule is a pure function of the seed (a small xorshift PRNG,
//! `common/rng.rs`), so a failing run is replayed by running it again with
//! its printed `KVSTORE_SEED`. What the schedule
//! cannot fix in advance is *which node leads* when a fault aimed at "the
//! leader" strikes: that is looked up when the fault starts, and the node
//! drawn for the step is used if no leader answers.
//!
//! There are two menus of faults, one for each way the nodes are wired
//! ([`Menu`]). Both share the process faults (kill, pause); they differ in
//! what a network fault can be. With the fault proxy, a partition
//! blackholes the links *into* one node and a reset cuts them mid-frame.
//! With network namespaces, a node's link can also go down altogether
//! (clients lose it too) or turn lossy and slow. The proxy menu draws from
//! the PRNG exactly as it always has, so its old seeds still replay.
//!
//! Slow links are not on the proxy's menu (its `Fault::Delay`). They were
//! left out because the proxy used to sleep with its fault setting locked,
//! so that under many connections healing waited behind every delayed
//! chunk and the "delay" became a partition of unbounded length. The proxy
//! no longer holds the lock while it sleeps, but adding them now would
//! change what every old seed replays; the namespace menu has them (the
//! kernel's `netem`), and `make demo-faults` slows links through the proxy.
//!
//! Faults come one at a time, each healed before the next, with a quiet
//! spell of one to two election timeouts between them: long enough for an
//! election to finish, short enough that a run sees many.

use std::fmt;
use std::time::Duration;

pub use crate::common::rng::Rng;

/// What the nemesis does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL, stay down for `hold`, restart without role flags (the node
    /// takes the role it stored).
    Kill,
    /// SIGSTOP for `hold`, then SIGCONT: a process that freezes (a long GC
    /// pause, a VM migration) and wakes up believing nothing happened.
    Pause,
    /// Blackhole the node's proxy for `hold`: nobody reaches the node, and
    /// its open links go silent without closing (namespaces: every packet
    /// between the node and the other members is dropped, both ways;
    /// clients still get through).
    Partition,
    /// Cut every connection through the node's proxy mid-frame for `hold`
    /// (namespaces: every member connection of the node is reset, and new
    /// ones are refused with a reset).
    Reset,
    /// Namespaces only: the node's link goes down for `hold`. Nobody
    /// reaches the node, clients neither; its packets go nowhere, silently.
    Isolate,
    /// Namespaces only: the node's link loses `loss_pct` percent of the
    /// packets each way and (where the kernel has `netem`) delays each one
    /// by `delay_ms` more, for `hold`.
    Degrade { loss_pct: u64, delay_ms: u64 },
}

/// Which faults the schedule draws from: those the wiring can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// Nodes behind fault proxies on 127.0.0.1.
    Proxy,
    /// Nodes in network namespaces, links through a bridge.
    Netns,
}

impl Menu {
    /// As `KVSTORE_JEPSEN_NET` names it.
    pub fn name(self) -> &'static str {
        match self {
            Menu::Proxy => "proxy",
            Menu::Netns => "netns",
        }
    }
}

/// Whom a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node of this index.
    Node(usize),
    /// Whichever node leads when the fault starts (else `Node(fallback)`).
    Leader { fallback: usize },
}

/// One fault of the schedule, and the quiet spell after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub kind: FaultKind,
    pub target: Target,
    pub hold: Duration,
    pub rest: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hold = self.hold.as_millis();
        match self.kind {
            FaultKind::Kill => write!(f, "kill, down {hold} ms"),
            FaultKind::Pause => write!(f, "SIGSTOP for {hold} ms"),
            FaultKind::Partition => write!(f, "partition for {hold} ms"),
            FaultKind::Reset => write!(f, "reset links for {hold} ms"),
            FaultKind::Isolate => write!(f, "link down for {hold} ms"),
            FaultKind::Degrade { loss_pct, delay_ms } => {
                write!(f, "link loses {loss_pct}%, +{delay_ms} ms delay, for {hold} ms")
            }
        }
    }
}

/// The next step of the schedule for a cluster of `nodes` nodes whose
/// election timeout is `election_ms`, from `menu`.
pub fn next_step(rng: &mut Rng, nodes: usize, election_ms: u64, menu: Menu) -> Step {
    let t = election_ms;
    let (kind, hold) = match menu {
        Menu::Proxy => match rng.below(100) {
            // Down from less than one election timeout to several.
            0..=29 => (FaultKind::Kill, rng.millis(100, 4 * t)),
            // Paused from well under an election timeout (nothing should
            // notice) to long enough for the others to elect a new leader.
            30..=59 => (FaultKind::Pause, rng.millis(t / 2, 6 * t)),
            60..=89 => (FaultKind::Partition, rng.millis(t, 8 * t)),
            _ => (FaultKind::Reset, rng.millis(20, 200)),
        },
        Menu::Netns => match rng.below(100) {
            0..=19 => (FaultKind::Kill, rng.millis(100, 4 * t)),
            20..=39 => (FaultKind::Pause, rng.millis(t / 2, 6 * t)),
            40..=59 => (FaultKind::Partition, rng.millis(t, 8 * t)),
            60..=74 => (FaultKind::Isolate, rng.millis(t, 8 * t)),
            // From a nuisance to a link TCP barely gets through; delays
            // from a fraction of an election timeout to more than one.
            75..=89 => {
                let loss_pct = 5 + rng.below(36);
                let delay_ms = rng.below(3 * t / 2);
                (FaultKind::Degrade { loss_pct, delay_ms }, rng.millis(t, 8 * t))
            }
            _ => (FaultKind::Reset, rng.millis(20, 200)),
        },
    };
    let node = rng.below(nodes as u64) as usize;
    let target = match rng.below(2) {
        0 => Target::Node(node),
        _ => Target::Leader { fallback: node },
    };
    Step { kind, target, hold, rest: rng.millis(t, 2 * t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_schedule() {
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            (0..50).map(|_| next_step(&mut rng, 3, 300, Menu::Proxy)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(42), schedule(42));
        assert_ne!(schedule(42), schedule(43));
    }

    #[test]
    fn one_seed_gives_one_namespace_schedule() {
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            (0..50).map(|_| next_step(&mut rng, 3, 300, Menu::Netns)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(42), schedule(42));
        assert_ne!(schedule(42), schedule(43));
    }

    #[test]
    fn every_fault_kind_and_target_occurs() {
        let mut rng = Rng::new(7);
        let steps: Vec<Step> = (0..500).map(|_| next_step(&mut rng, 3, 300, Menu::Proxy)).collect();
        let kinds = [
            |k: &FaultKind| *k == FaultKind::Kill,
            |k: &FaultKind| *k == FaultKind::Pause,
            |k: &FaultKind| *k == FaultKind::Partition,
            |k: &FaultKind| *k == FaultKind::Reset,
        ];
        for (i, is) in kinds.iter().enumerate() {
            assert!(steps.iter().any(|s| is(&s.kind)), "fault kind {i} never drawn");
        }
        assert!(
            steps.iter().all(|s| !matches!(s.kind, FaultKind::Isolate | FaultKind::Degrade { .. })),
            "the proxy cannot take a link down or make it lossy"
        );
        for node in 0..3 {
            assert!(steps.iter().any(|s| s.target == Target::Node(node)));
        }
        assert!(steps.iter().any(|s| matches!(s.target, Target::Leader { .. })));
        let rests = steps.iter().map(|s| s.rest.as_millis());
        assert!(rests.clone().all(|r| (300..600).contains(&r)), "1 to 2 election timeouts");
    }

    #[test]
    fn the_namespace_menu_draws_every_fault_kind() {
        let mut rng = Rng::new(7);
        let steps: Vec<Step> = (0..500).map(|_| next_step(&mut rng, 3, 300, Menu::Netns)).collect();
        let kinds = [
            |k: &FaultKind| *k == FaultKind::Kill,
            |k: &FaultKind| *k == FaultKind::Pause,
            |k: &FaultKind| *k == FaultKind::Partition,
            |k: &FaultKind| *k == FaultKind::Reset,
            |k: &FaultKind| *k == FaultKind::Isolate,
            |k: &FaultKind| matches!(k, FaultKind::Degrade { .. }),
        ];
        for (i, is) in kinds.iter().enumerate() {
            assert!(steps.iter().any(|s| is(&s.kind)), "fault kind {i} never drawn");
        }
        for step in &steps {
            if let FaultKind::Degrade { loss_pct, delay_ms } = step.kind {
                assert!((5..=40).contains(&loss_pct) && delay_ms < 450, "{step}");
            }
        }
    }
}
