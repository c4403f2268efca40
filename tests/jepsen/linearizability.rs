//! A linearizability checker for one register (one key): Wing & Gong's
//! search with Lowe's just-in-time linearization and Porcupine's cache.
//!
//! ## The question
//!
//! Several clients ran operations on a key concurrently. Each operation
//! has an invocation time and a return time; a write whose outcome the
//! client never learned (`ret: None`) may have taken effect at any moment
//! after its invocation, or never. The history is *linearizable* if every
//! operation can be given a single instant inside its own window such that,
//! taken in that order, the operations behave like a single register: each
//! read returns the value of the write placed last before it (or nothing,
//! if none was). A stale read, a lost acknowledged write, or a read of a
//! value that was never written all make a history fail.
//!
//! ## The search
//!
//! The calls and returns are laid out in time order in a doubly linked
//! list. Walking it, the search tries to *linearize* the next call: if the
//! register model accepts it, both its entries are lifted out of the list,
//! the choice is pushed on a stack and the walk restarts from the head. If
//! the walk meets a return whose operation is not linearized yet, the last
//! choice was wrong: it is undone (put back into the list) and the walk
//! goes on past it. The history is linearizable when the list is empty; it
//! is not when a return is met with nothing left to undo.
//!
//! Two search paths that have linearized the same *set* of operations and
//! reached the same register value have the same future, so each such pair
//! (a bitset and the value) is remembered and never explored twice. That
//! cache is what makes the search practical on histories of thousands of
//! operations (Lowe, "Testing for linearizability", 2016; Porcupine).
//!
//! ## What makes it cheap here
//!
//! - **Unique values.** Every write writes a value no other write writes,
//!   so a read names the one write it saw, and the register's state is
//!   just "which write is current".
//! - **One key at a time.** Linearizability is compositional (P-compositional
//!   in Porcupine's terms): a multi-key history is linearizable iff each
//!   key's sub-history is. The caller checks each key separately.
//! - **Unknown outcomes are bounded.** A write with an unknown outcome that
//!   no read observed can always be placed after everything else, where it
//!   changes nothing; it is dropped. One that a read observed must take
//!   effect before the first such read returned, so that becomes its return
//!   time. Both transformations keep exactly the same set of valid
//!   linearizations, and keep the search's window of concurrent operations
//!   as small as the clients' own.
//!
//! Time ties count as concurrency: an operation precedes another only if
//! it returned strictly before the other was invoked.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What an operation did to the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<V> {
    /// Write this value (unique across the history).
    Write(V),
    /// A read, and what it returned (`None`: the key did not exist).
    Read(Option<V>),
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op<V> {
    /// Who ran it (reports only; a client's operations do not overlap).
    pub client: usize,
    /// When it was invoked.
    pub call: u64,
    /// When it returned; `None` for a write whose outcome is unknown.
    pub ret: Option<u64>,
    pub call_kind: Call<V>,
}

impl<V: fmt::Display> fmt::Display for Op<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.call_kind {
            Call::Write(v) => write!(f, "client {} put {v}", self.client)?,
            Call::Read(Some(v)) => write!(f, "client {} get -> {v}", self.client)?,
            Call::Read(None) => write!(f, "client {} get -> (none)", self.client)?,
        }
        // Times are nanoseconds; shown in seconds.
        let s = |t: u64| t as f64 / 1e9;
        match self.ret {
            Some(ret) => write!(f, " [{:.6}s .. {:.6}s]", s(self.call), s(ret)),
            None => write!(f, " [{:.6}s .. ?] outcome unknown", s(self.call)),
        }
    }
}

/// The checker's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid linearization exists; `states` cache entries were explored.
    Linearizable { states: usize },
    /// None exists. `ops` are indices into the history that show why.
    Violation { why: String, ops: Vec<usize> },
    /// The search ran out of its state budget before deciding.
    Unknown { states: usize },
}

impl Verdict {
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation { .. })
    }
}

/// Most cache entries one check may create before it answers `Unknown`.
pub const STATES_MAX: usize = 20_000_000;

/// Check one key's history (see the module documentation).
pub fn check<V: Clone + Eq + Hash + fmt::Display>(history: &[Op<V>]) -> Verdict {
    check_with_budget(history, STATES_MAX)
}

pub fn check_with_budget<V: Clone + Eq + Hash + fmt::Display>(
    history: &[Op<V>],
    states_max: usize,
) -> Verdict {
    let prepared = match Prepared::new(history) {
        Ok(prepared) => prepared,
        Err(violation) => return violation,
    };
    prepared.search(history, states_max)
}

/// Shrink a violating history to a small sub-history that still violates,
/// within `budget` of time; returns indices into `history`.
///
/// Only removals that cannot turn a linearizable history into a violating
/// one are tried: dropping a read, or dropping a write together with every
/// read that returned its value (in a valid linearization of the whole,
/// those reads sit right after that write, so taking them all out leaves a
/// valid linearization of the rest). So whatever is left is a genuine
/// witness: if it cannot be linearized, neither could the whole history.
pub fn reduce<V: Clone + Eq + Hash + fmt::Display>(
    history: &[Op<V>],
    budget: Duration,
) -> Vec<usize> {
    let until = Instant::now() + budget;
    let violates = |kept: &[usize]| {
        let sub: Vec<Op<V>> = kept.iter().map(|&i| history[i].clone()).collect();
        check_with_budget(&sub, 1_000_000).is_violation()
    };
    let mut kept: Vec<usize> = (0..history.len()).collect();
    if !violates(&kept) {
        return kept;
    }
    // ddmin-style: try to drop chunks, halving the chunk size down to one.
    let mut chunk = kept.len().div_ceil(2);
    loop {
        let mut start = 0;
        while start < kept.len() && Instant::now() < until {
            let end = (start + chunk).min(kept.len());
            let rest: Vec<usize> = kept[..start].iter().chain(&kept[end..]).copied().collect();
            let candidate = without_orphan_reads(history, rest);
            if !candidate.is_empty() && violates(&candidate) {
                kept = candidate;
            } else {
                start = end;
            }
        }
        if chunk == 1 || Instant::now() >= until {
            return kept;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// `kept` without the reads whose value was written by a write of
/// `history` that is not kept.
fn without_orphan_reads<V: Eq + Hash>(history: &[Op<V>], kept: Vec<usize>) -> Vec<usize> {
    let all = written(history.iter());
    let still = written(kept.iter().map(|&i| &history[i]));
    kept.into_iter()
        .filter(|&i| match &history[i].call_kind {
            Call::Read(Some(v)) => still.contains(v) || !all.contains(v),
            _ => true,
        })
        .collect()
}

/// The values written by `ops`.
fn written<'a, V: Eq + Hash + 'a>(ops: impl Iterator<Item = &'a Op<V>>) -> HashSet<&'a V> {
    ops.filter_map(|op| match &op.call_kind {
        Call::Write(v) => Some(v),
        Call::Read(_) => None,
    })
    .collect()
}

/// The register's state: which write is current (0: none yet).
type State = u32;

/// A history ready for the search: values interned, unknown outcomes
/// bounded or dropped.
struct Prepared {
    /// Indices into the caller's history of the operations kept.
    index: Vec<usize>,
    /// Per kept operation: Some(value id) for a write, None for a read.
    writes: Vec<Option<State>>,
    /// Per kept operation, for a read: the value id it returned.
    reads: Vec<State>,
    call: Vec<u64>,
    ret: Vec<u64>,
}

impl Prepared {
    fn new<V: Clone + Eq + Hash + fmt::Display>(history: &[Op<V>]) -> Result<Prepared, Verdict> {
        // Intern the written values: id i + 1 for the write at index i.
        let mut writer: HashMap<&V, usize> = HashMap::new();
        for (i, op) in history.iter().enumerate() {
            if let Call::Write(v) = &op.call_kind {
                if let Some(&other) = writer.get(v) {
                    return Err(Verdict::Violation {
                        why: format!("the history writes {v} twice: values must be unique"),
                        ops: vec![other, i],
                    });
                }
                writer.insert(v, i);
            }
        }
        // Every read names its write, which must have begun before the
        // read returned; an unknown outcome ends at its first reader.
        let mut first_read_ret: HashMap<usize, u64> = HashMap::new();
        for (i, op) in history.iter().enumerate() {
            let Call::Read(value) = &op.call_kind else { continue };
            let ret = op.ret.expect("a read in the history has returned");
            let Some(v) = value else { continue };
            let Some(&w) = writer.get(v) else {
                return Err(Verdict::Violation {
                    why: format!("a read returned {v}, which no write in the history wrote"),
                    ops: vec![i],
                });
            };
            if history[w].call > ret {
                return Err(Verdict::Violation {
                    why: format!("a read returned {v} before the write of {v} was invoked"),
                    ops: vec![w, i],
                });
            }
            let first = first_read_ret.entry(w).or_insert(ret);
            *first = (*first).min(ret);
        }
        let mut prepared = Prepared {
            index: Vec::new(),
            writes: Vec::new(),
            reads: Vec::new(),
            call: Vec::new(),
            ret: Vec::new(),
        };
        for (i, op) in history.iter().enumerate() {
            let ret = match (op.ret, &op.call_kind) {
                (Some(ret), _) => ret,
                (None, Call::Write(_)) => match first_read_ret.get(&i) {
                    Some(&ret) => ret,
                    None => continue, // unobserved: may be placed last, where it changes nothing
                },
                (None, Call::Read(_)) => unreachable!("checked above"),
            };
            prepared.index.push(i);
            prepared.call.push(op.call);
            prepared.ret.push(ret.max(op.call));
            match &op.call_kind {
                Call::Write(_) => {
                    prepared.writes.push(Some(i as State + 1));
                    prepared.reads.push(0);
                }
                Call::Read(value) => {
                    prepared.writes.push(None);
                    prepared.reads.push(value.as_ref().map_or(0, |v| writer[v] as State + 1));
                }
            }
        }
        Ok(prepared)
    }

    /// The register model: the state after `op`, if `op` is legal in `state`.
    fn step(&self, state: State, op: usize) -> Option<State> {
        match self.writes[op] {
            Some(value) => Some(value),
            None => (self.reads[op] == state).then_some(state),
        }
    }

    fn search<V: fmt::Display>(&self, history: &[Op<V>], states_max: usize) -> Verdict {
        let n = self.index.len();
        if n == 0 {
            return Verdict::Linearizable { states: 0 };
        }
        let mut list = EventList::new(&self.call, &self.ret);
        let mut linearized = Bitset::new(n);
        let mut cache: HashSet<(Bitset, State)> = HashSet::new();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state: State = 0;
        // For the report: the deepest point reached, and what blocked it.
        let mut deepest: (usize, Vec<usize>, State, usize) = (0, Vec::new(), 0, 0);
        let mut entry = list.first();
        while !list.is_empty() {
            let op = list.op(entry);
            if list.is_call(entry) {
                if let Some(next) = self.step(state, op) {
                    linearized.set(op);
                    if cache.insert((linearized.clone(), next)) {
                        if cache.len() > states_max {
                            return Verdict::Unknown { states: cache.len() };
                        }
                        stack.push((entry, state));
                        state = next;
                        list.lift(entry);
                        entry = list.first();
                        continue;
                    }
                    linearized.clear(op);
                }
                entry = list.next(entry);
            } else {
                // `op` returned and is not linearized: undo the last choice.
                if stack.len() >= deepest.0 && (stack.len() > deepest.0 || deepest.1.is_empty()) {
                    let order = stack.iter().map(|&(e, _)| list.op(e)).collect();
                    deepest = (stack.len(), order, state, op);
                }
                let Some((undo, previous)) = stack.pop() else {
                    return self.violation(history, &deepest);
                };
                state = previous;
                linearized.clear(list.op(undo));
                list.unlift(undo);
                entry = list.next(undo);
            }
        }
        Verdict::Linearizable { states: cache.len() }
    }

    /// Explain the deepest point the search reached.
    fn violation<V: fmt::Display>(
        &self,
        history: &[Op<V>],
        (_, order, state, blocked): &(usize, Vec<usize>, State, usize),
    ) -> Verdict {
        let name = |state: State| match state {
            0 => "(none)".to_string(),
            w => match &history[w as usize - 1].call_kind {
                Call::Write(v) => v.to_string(),
                Call::Read(_) => unreachable!("a state is a write"),
            },
        };
        let blocked_op = &history[self.index[*blocked]];
        let (from, to) = (self.call[*blocked], self.ret[*blocked]);
        let mut ops: Vec<usize> = (0..self.index.len())
            .filter(|&o| self.call[o] <= to && self.ret[o] >= from)
            .map(|o| self.index[o])
            .collect();
        ops.extend(order.iter().rev().take(3).map(|&o| self.index[o]));
        ops.sort_unstable();
        ops.dedup();
        let why = format!(
            "at most {} of {} operations can be linearized: after them the register holds {}, \
             and then no order of the pending operations lets \"{blocked_op}\" take effect \
             before it returned",
            order.len(),
            self.index.len(),
            name(*state),
        );
        Verdict::Violation { why, ops }
    }
}

/// The calls and returns of a history in time order, as a doubly linked
/// list whose entries can be lifted out and put back (Lowe's algorithm).
struct EventList {
    /// Entry 0 is the head sentinel, the last one the tail sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per entry: its operation, whether it is the call, and its partner.
    op: Vec<usize>,
    call: Vec<bool>,
    partner: Vec<usize>,
}

impl EventList {
    fn new(call: &[u64], ret: &[u64]) -> EventList {
        let n = call.len();
        // (time, 0 for a call / 1 for a return, op): calls first on a tie,
        // so equal times count as overlapping.
        let mut events: Vec<(u64, u8, usize)> =
            (0..n).flat_map(|o| [(call[o], 0, o), (ret[o], 1, o)]).collect();
        events.sort_unstable();
        let size = 2 * n + 2;
        let mut list = EventList {
            next: (1..=size).collect(),
            prev: (0..size).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![usize::MAX; size],
            call: vec![false; size],
            partner: vec![usize::MAX; size],
        };
        let mut call_entry = vec![0; n];
        for (i, &(_, kind, o)) in events.iter().enumerate() {
            let entry = i + 1;
            list.op[entry] = o;
            list.call[entry] = kind == 0;
            if kind == 0 {
                call_entry[o] = entry;
            } else {
                list.partner[entry] = call_entry[o];
                list.partner[call_entry[o]] = entry;
            }
        }
        list
    }

    fn tail(&self) -> usize {
        self.next.len() - 1
    }
    fn first(&self) -> usize {
        self.next[0]
    }
    fn is_empty(&self) -> bool {
        self.first() == self.tail()
    }
    fn next(&self, entry: usize) -> usize {
        self.next[entry]
    }
    fn op(&self, entry: usize) -> usize {
        self.op[entry]
    }
    fn is_call(&self, entry: usize) -> bool {
        self.call[entry]
    }

    /// Take a call entry and its return out of the list.
    fn lift(&mut self, call: usize) {
        for entry in [call, self.partner[call]] {
            let (p, n) = (self.prev[entry], self.next[entry]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    /// Put back what [`EventList::lift`] took out (in reverse order).
    fn unlift(&mut self, call: usize) {
        for entry in [self.partner[call], call] {
            let (p, n) = (self.prev[entry], self.next[entry]);
            self.next[p] = entry;
            self.prev[n] = entry;
        }
    }
}

/// Which operations are linearized so far.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }
    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write of `v` by `client` over [call, ret].
    fn put(client: usize, call: u64, ret: u64, v: &str) -> Op<String> {
        Op { client, call, ret: Some(ret), call_kind: Call::Write(v.into()) }
    }
    /// A write whose outcome is unknown, invoked at `call`.
    fn put_unknown(client: usize, call: u64, v: &str) -> Op<String> {
        Op { client, call, ret: None, call_kind: Call::Write(v.into()) }
    }
    fn get(client: usize, call: u64, ret: u64, v: Option<&str>) -> Op<String> {
        Op { client, call, ret: Some(ret), call_kind: Call::Read(v.map(String::from)) }
    }

    fn ok(history: &[Op<String>]) -> bool {
        match check(history) {
            Verdict::Linearizable { .. } => true,
            Verdict::Violation { .. } => false,
            Verdict::Unknown { states } => panic!("undecided after {states} states"),
        }
    }

    #[test]
    fn sequential_histories_follow_the_register() {
        assert!(ok(&[]));
        assert!(ok(&[get(0, 0, 1, None)]));
        assert!(ok(&[put(0, 0, 1, "a"), get(0, 2, 3, Some("a")), put(1, 4, 5, "b")]));
        assert!(ok(&[put(0, 0, 1, "a"), put(0, 2, 3, "b"), get(1, 4, 5, Some("b"))]));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = [put(0, 0, 1, "a"), put(0, 2, 3, "b"), get(1, 4, 5, Some("a"))];
        assert!(!ok(&history));
        // Reading nothing after a completed write is stale too.
        assert!(!ok(&[put(0, 0, 1, "a"), get(1, 2, 3, None)]));
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        let with = |seen| [put(0, 0, 1, "a"), put(0, 2, 6, "b"), get(1, 3, 5, seen)];
        assert!(ok(&with(Some("a"))));
        assert!(ok(&with(Some("b"))));
        // Two overlapping writes, then reads that saw either one last.
        let both = |last| [put(0, 0, 5, "a"), put(1, 1, 4, "b"), get(2, 6, 7, Some(last))];
        assert!(ok(&both("a")));
        assert!(ok(&both("b")));
        // Equal times overlap: a read invoked the instant a write returned
        // may still see the previous value.
        assert!(ok(&[put(0, 0, 1, "a"), put(0, 2, 5, "b"), get(1, 5, 6, Some("a"))]));
    }

    #[test]
    fn a_value_read_back_after_a_newer_one_is_rejected() {
        // Two readers in sequence see b, then a: a is older than b (both
        // writes overlap both reads, but not in a way that allows this).
        let history = [
            put(0, 0, 10, "a"),
            put(1, 0, 10, "b"),
            get(2, 1, 2, Some("b")),
            get(2, 3, 4, Some("a")),
            get(2, 5, 6, Some("b")),
        ];
        assert!(!ok(&history));
        assert!(ok(&history[..4]));
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_be_applied_late_or_never() {
        // Observed long after its client gave up on it: accepted.
        let observed = [
            put(0, 0, 1, "a"),
            put_unknown(1, 2, "b"),
            get(2, 100, 101, Some("a")),
            get(2, 200, 201, Some("b")),
        ];
        assert!(ok(&observed));
        // Never observed: as if it was never applied.
        let never = [put(0, 0, 1, "a"), put_unknown(1, 2, "b"), get(2, 100, 101, Some("a"))];
        assert!(ok(&never));
        // But not before it was invoked.
        let early = [put(0, 0, 1, "a"), get(2, 2, 3, Some("b")), put_unknown(1, 4, "b")];
        assert!(!ok(&early));
        // And once observed it cannot vanish: a later read of the older
        // value is stale.
        let flicker = [
            put(0, 0, 1, "a"),
            put_unknown(1, 2, "b"),
            get(2, 3, 4, Some("b")),
            get(2, 5, 6, Some("a")),
        ];
        assert!(!ok(&flicker));
    }

    #[test]
    fn a_lost_acknowledged_write_is_rejected() {
        // b was acknowledged, then a final read sees a: b was lost.
        let history = [
            put(0, 0, 1, "a"),
            put(1, 2, 3, "b"),
            put_unknown(2, 4, "c"),
            get(0, 10, 11, Some("a")),
        ];
        let Verdict::Violation { why, ops } = check(&history) else { panic!("accepted") };
        assert!(why.contains("get -> a"), "{why}");
        assert!(ops.contains(&1) && ops.contains(&3), "{ops:?}");
    }

    #[test]
    fn reads_of_values_nobody_wrote_are_rejected() {
        let Verdict::Violation { why, .. } = check(&[get(0, 0, 1, Some("x"))]) else {
            panic!("accepted")
        };
        assert!(why.contains("no write"), "{why}");
    }

    #[test]
    fn many_clients_in_lockstep_are_checked_quickly() {
        // 500 rounds of 8 clients, all 8 operations of a round overlapping:
        // 4 writers, and 4 readers that see the value the previous round
        // left (its writer 6, placed last). Correct, and accepted without
        // exploring much.
        let mut history = Vec::new();
        for round in 0..500u64 {
            let base = round * 100;
            let previous = round.checked_sub(1).map(|r| format!("v{r}-6"));
            for client in 0..8u64 {
                let (call, c) = (base + client, client as usize);
                history.push(match client % 2 {
                    0 => put(c, call, base + 50 + client, &format!("v{round}-{client}")),
                    _ => get(c, call, base + 50, previous.as_deref()),
                });
            }
        }
        let started = Instant::now();
        assert!(ok(&history));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    /// The definition, by brute force: some subset of the unknown-outcome
    /// writes, and some order of the chosen operations that respects real
    /// time, behaves like a register.
    fn brute_force(history: &[Op<String>]) -> bool {
        fn place(ops: &[&Op<String>], placed: &mut Vec<bool>, state: Option<&String>) -> bool {
            if placed.iter().all(|&p| p) {
                return true;
            }
            for i in 0..ops.len() {
                // Every operation that returned before `i` began is placed.
                let ready = !placed[i]
                    && (0..ops.len()).all(|j| {
                        placed[j] || j == i || ops[j].ret.is_none_or(|r| r >= ops[i].call)
                    });
                if !ready {
                    continue;
                }
                let next = match &ops[i].call_kind {
                    Call::Write(v) => Some(v),
                    Call::Read(seen) if seen.as_ref() == state => state,
                    Call::Read(_) => continue,
                };
                placed[i] = true;
                if place(ops, placed, next) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        let unknown: Vec<usize> =
            (0..history.len()).filter(|&i| history[i].ret.is_none()).collect();
        (0..1u32 << unknown.len()).any(|mask| {
            let ops: Vec<&Op<String>> = (0..history.len())
                .filter(|i| match unknown.iter().position(|u| u == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .map(|i| &history[i])
                .collect();
            place(&ops, &mut vec![false; ops.len()], None)
        })
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut below = |n: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..3000 {
            let size = 1 + below(7) as usize;
            let mut history = Vec::new();
            let mut values = Vec::new();
            for i in 0..size {
                let call = below(20);
                let ret = call + below(8);
                history.push(match below(5) {
                    0 => {
                        values.push(format!("v{i}"));
                        put_unknown(i, call, &format!("v{i}"))
                    }
                    1 | 2 => {
                        values.push(format!("v{i}"));
                        put(i, call, ret, &format!("v{i}"))
                    }
                    _ => Op { client: i, call, ret: Some(ret), call_kind: Call::Read(None) },
                });
            }
            for op in &mut history {
                if let Call::Read(seen) = &mut op.call_kind {
                    let pick = below(values.len() as u64 + 1) as usize;
                    *seen = values.get(pick).cloned();
                }
            }
            let expected = brute_force(&history);
            assert_eq!(ok(&history), expected, "{history:#?}");
            if expected {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(accepted > 300 && rejected > 300, "{accepted} accepted, {rejected} rejected");
    }

    #[test]
    fn reduce_keeps_a_small_genuine_witness() {
        // A long correct history with one stale read in the middle.
        let mut history = Vec::new();
        for i in 0..200u64 {
            history.push(put(0, i * 10, i * 10 + 1, &format!("v{i}")));
            history.push(get(1, i * 10 + 2, i * 10 + 3, Some(&format!("v{i}"))));
        }
        history.push(get(1, 2000, 2001, Some("v100")));
        assert!(!ok(&history));
        let keep = reduce(&history, Duration::from_secs(10));
        let sub: Vec<Op<String>> = keep.iter().map(|&i| history[i].clone()).collect();
        assert!(!ok(&sub), "the witness still violates");
        assert!(keep.len() <= 4, "reduced to {keep:?}");
        assert!(keep.contains(&400), "the stale read is in it: {keep:?}");
    }
}
