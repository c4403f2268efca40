//! The node's role in the cluster, and every change of it (`docs/FAILOVER.md`).
//!
//! A node is either the **leader** of a term (it takes writes and serves
//! followers through a [`Hub`]) or a **follower** (it replicates from the
//! leader it knows, or waits to learn one). Every change of role goes
//! through one function that says why in one log line:
//!
//! | change                  | happens when                                                   |
//! |-------------------------|----------------------------------------------------------------|
//! | follower → leader       | `kv_client promote` won a majority of votes (or `--force`)     |
//! | leader → follower       | a message carried a newer term; or `kv_client follow HOST:PORT` |
//! | follower → follower     | a LEADER_ANNOUNCE or `follow` names another leader              |
//!
//! ## Ordering rules, enforced here
//!
//! - A newer term is stored durably (the [`NodeState`] file) **before**
//!   anything is done with the message that carried it; a vote is stored
//!   before it is sent.
//! - A leader that steps down first closes the gate for client writes
//!   ([`Db::set_leader_term`]), then fails every write still waiting for its
//!   write concern and closes its follower links ([`Hub::depose`]).
//! - The state mutex is never held across network I/O: a promotion asks for
//!   votes without it, then checks that nothing changed meanwhile.
//!
//! The term and vote rules themselves are plain functions of
//! [`NodeState`]; the log-matching rules live in
//! [`crate::replication::log_match`]. This module wires them to threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cluster::ClusterId;
use crate::db::{Db, QueuedWrite};
use crate::dial::Dialer;
use crate::error::{Error, Result};
use crate::limits::ANNOUNCE_INTERVAL_MS;
use crate::protocol::{Consistency, Message};
use crate::replication::election::{self, ElectionClock, ElectionConfig, Timing};
use crate::replication::follower::{self, FollowerLink};
use crate::replication::hub::{same_node, Hub};
use crate::replication::parse_peer;
use crate::replication::peers;
use crate::replication::state::{NodeState, StoredRole};
use crate::status::RoleChange;

use crate::{Lsn, Term};

/// How the node was told to start (command-line flags; they win over the
/// stored role, except that a deposed leader does not depose its successor).
#[derive(Debug, Clone)]
pub enum Startup {
    /// `--role=leader --peers=...`.
    Leader { peers: Vec<SocketAddr> },
    /// `--role=follower --leader=...`.
    Follower { leader: SocketAddr },
    /// `--cluster`: every member; a new node waits for an election.
    Cluster { members: Vec<SocketAddr> },
    /// No `--role`: the stored role, or a standalone leader on a new node.
    Stored,
}

/// The role as a connection thread needs to see it, right now.
#[derive(Clone)]
pub enum RoleView {
    Leader { hub: Arc<Hub>, term: Term },
    Follower { term: Term, leader: Option<SocketAddr>, link: Option<Arc<FollowerLink>> },
}

enum Live {
    Leader { hub: Arc<Hub> },
    Follower { link: Option<Arc<FollowerLink>> },
}

struct RoleState {
    stored: NodeState,
    live: Live,
    /// The last term in which a second leader was reported (logged once).
    second_leader_logged: Term,
}

/// One node's role, term and membership, shared by all its threads.
pub struct Replica {
    /// Ourselves, for the threads a role change starts.
    me: Weak<Replica>,
    db: Arc<Db>,
    address: SocketAddr,
    state: Mutex<RoleState>,
    /// Why reads are refused, once the leader found our data differs.
    unhealthy: Mutex<Option<String>>,
    /// `--failover` and the election timing.
    election: ElectionConfig,
    /// When we last heard from a leader (rule 1 of [`election`]).
    clock: Mutex<ElectionClock>,
    /// The origin of the millisecond clock the election rules run on.
    epoch: Instant,
    /// Held while a bid for office runs, so two never overlap.
    campaigning: Mutex<()>,
    /// The last change of role: when, and the log line's words.
    last_change: Mutex<Option<(Instant, String)>>,
    /// When each member last showed it is reachable.
    contacts: Mutex<HashMap<SocketAddr, Instant>>,
    /// How this node dials its leader or asks another member something:
    /// TLS with `--tls-ca`, the handshake with `--auth-file`.
    dialer: Dialer,
}

impl Replica {
    /// Decide the starting role from `startup` and the stored state, store
    /// it, and start the threads it needs (follower link or announcer).
    pub fn start(
        db: Arc<Db>,
        address: SocketAddr,
        startup: Startup,
        election: ElectionConfig,
        dialer: Dialer,
    ) -> Result<Arc<Replica>> {
        let mut stored = NodeState::load(db.data_dir())?;
        // A node is never in a term older than a record it holds (a log
        // upgraded from format 1 holds term-1 records and no STATE file).
        stored.term = stored.term.max(db.last_term());
        let me = address.to_string();
        let replica = Arc::new_cyclic(|me| Replica {
            me: me.clone(),
            db,
            address,
            state: Mutex::new(RoleState {
                stored: stored.clone(),
                live: Live::Follower { link: None },
                second_leader_logged: 0,
            }),
            unhealthy: Mutex::new(None),
            election,
            clock: Mutex::new(ElectionClock::new(election.timing, clock_seed(address), 0)),
            epoch: Instant::now(),
            campaigning: Mutex::new(()),
            last_change: Mutex::new(None),
            contacts: Mutex::new(HashMap::new()),
            dialer,
        });
        let deposed_leader = stored.role == Some(StoredRole::Follower)
            && stored.leader.as_deref().is_some_and(|l| !replica.is_me(l));
        match startup {
            Startup::Leader { peers } if deposed_leader => {
                let leader = stored.leader.clone().unwrap_or_default();
                log::warn!(
                    "[failover] --role=leader ignored: this node stepped down in term {} and \
                     {leader} leads now; starting as its follower (to lead again: kv_client \
                     --port {} promote)",
                    stored.term,
                    address.port()
                );
                let mut st = replica.state.lock();
                if st.stored.members.is_empty() {
                    st.stored.members = members_of(&me, &peers);
                }
                replica.follow_locked(&mut st, parse_peer(&leader).ok(), "restarted")?;
            }
            Startup::Leader { peers } => {
                replica.state.lock().stored.members = members_of(&me, &peers);
                replica.take_office("started with --role=leader")?;
            }
            Startup::Follower { leader } => {
                let mut st = replica.state.lock();
                let known = st.stored.members.iter().any(|m| same_address(m, leader));
                if !known {
                    st.stored.members = members_of(&me, &[leader]);
                }
                replica.follow_locked(&mut st, Some(leader), "started with --role=follower")?;
            }
            Startup::Cluster { members } if stored.role.is_none() => {
                if !members.iter().any(|m| same_node(*m, address)) {
                    return Err(Error::Refused(format!(
                        "this node ({address}) is not in --cluster; list it, or give \
                         --advertise the address the others know it by"
                    )));
                }
                let mut st = replica.state.lock();
                st.stored.members = members.iter().map(|m| m.to_string()).collect();
                log::info!(
                    "[election] started with --cluster {}: no leader yet; the members elect one",
                    st.stored.members.join(",")
                );
                replica.follow_locked(
                    &mut st,
                    None,
                    "started with --cluster: the members elect a leader",
                )?;
            }
            Startup::Cluster { .. } | Startup::Stored => {
                let mut st = replica.state.lock();
                match stored.role {
                    Some(StoredRole::Leader) => {
                        drop(st);
                        replica.take_office("restarted as leader")?
                    }
                    Some(StoredRole::Follower) => {
                        let leader = stored.leader.as_deref().and_then(|l| parse_peer(l).ok());
                        replica.follow_locked(&mut st, leader, "restarted as follower")?
                    }
                    None => {
                        st.stored.members = vec![me.clone()];
                        replica.lead_locked(&mut st, stored.term + 1, "standalone node")?
                    }
                }
            }
        }
        let me = Arc::clone(&replica);
        std::thread::Builder::new()
            .name("election".into())
            .spawn(move || me.election_loop())
            .map_err(|e| Error::io("spawning the election thread", e))?;
        Ok(replica)
    }

    /// Start as leader (`--role=leader`, or a stored leader restarting).
    ///
    /// The first leader of a new cluster (term 0, empty log) takes term 1
    /// at once, as the lessons' first command expects, and so does a node
    /// with no other members. Any other node takes office only as a
    /// promotion does: in a new term, voted for by a majority whose logs
    /// are not ahead of its own ([`Replica::campaign`]). A term taken
    /// without votes could be the term a majority gave another node while
    /// this one was down or cut off, and two leaders of one term break log
    /// matching. So a leader restarted without a majority in reach waits,
    /// asking again every second; one that finds a member ahead of it
    /// (it lost records others hold) starts as a follower instead.
    fn take_office(&self, why: &str) -> Result<()> {
        let mut st = self.state.lock();
        let alone = !st.stored.members.iter().any(|m| !self.is_me(m));
        let new_cluster = st.stored.term == 0 && self.db.last_lsn() == 0;
        if alone || new_cluster {
            let term = st.stored.term + 1;
            return self.lead_locked(&mut st, term, why);
        }
        st.stored.role = Some(StoredRole::Leader);
        st.stored.store(self.db.data_dir())?;
        drop(st);
        match self.campaign(false, why)? {
            Ok(_) => Ok(()),
            Err(Lost::Objection(peers::Objection::Behind { member, theirs, ours })) => {
                log::warn!(
                    "[failover] not taking office: member {member} holds LSN {} of term {}, \
                     more than this node (LSN {} of term {}), so this node lost records others \
                     have; starting as a follower (promote the most up-to-date node: kv_client \
                     --port {} promote)",
                    theirs.1,
                    theirs.0,
                    ours.1,
                    ours.0,
                    parse_peer(&member).map(|a| a.port()).unwrap_or(0)
                );
                let mut st = self.state.lock();
                self.follow_locked(&mut st, None, "a member holds more of the log")
            }
            Err(lost @ Lost::NewerTerm { .. }) => {
                log::warn!("[failover] not taking office: {lost}");
                Ok(())
            }
            Err(lost) => {
                log::warn!(
                    "[failover] not taking office yet: {lost}; asking again every {} ms \
                     (writes are refused meanwhile)",
                    ANNOUNCE_INTERVAL_MS
                );
                let me = self.self_handle()?;
                let why = why.to_string();
                std::thread::Builder::new()
                    .name("take-office".into())
                    .spawn(move || me.keep_asking_for_office(&why))
                    .map(|_| ())
                    .map_err(|e| Error::io("spawning the take-office thread", e))
            }
        }
    }

    /// [`Replica::take_office`] found no majority: ask again until one
    /// answers and votes, or until something else decides the role (a
    /// newer term, `kv_client follow`, `promote`).
    fn keep_asking_for_office(&self, why: &str) {
        loop {
            std::thread::sleep(Duration::from_millis(ANNOUNCE_INTERVAL_MS));
            {
                let st = self.state.lock();
                let waiting = st.stored.role == Some(StoredRole::Leader)
                    && matches!(st.live, Live::Follower { link: None });
                if !waiting {
                    return;
                }
            }
            match self.campaign(false, why) {
                Ok(Ok(_)) => return,
                Ok(Err(Lost::Objection(peers::Objection::TooFew { .. })))
                | Ok(Err(Lost::Outvoted { .. })) => continue,
                Ok(Err(lost)) => {
                    log::warn!("[failover] not taking office: {lost}; staying a follower");
                    let mut st = self.state.lock();
                    if st.stored.role == Some(StoredRole::Leader) {
                        if let Err(e) = self.follow_locked(&mut st, None, "lost the vote") {
                            log::error!("[failover] cannot store the follower role: {e}");
                        }
                    }
                    return;
                }
                Err(e) => {
                    log::error!("[failover] asking for office failed: {e}");
                    return;
                }
            }
        }
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The address clients and members reach this node on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How this node dials another member.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub fn view(&self) -> RoleView {
        let st = self.state.lock();
        match &st.live {
            Live::Leader { hub } => RoleView::Leader { hub: Arc::clone(hub), term: hub.term() },
            Live::Follower { link } => RoleView::Follower {
                term: st.stored.term,
                leader: link.as_ref().map(|l| l.leader()),
                link: link.clone(),
            },
        }
    }

    pub fn term(&self) -> Term {
        self.state.lock().stored.term
    }

    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<String> {
        self.state.lock().stored.members.clone()
    }

    /// The leader's address as this node knows it (itself if it leads).
    pub fn leader_address(&self) -> Option<String> {
        let st = self.state.lock();
        match &st.live {
            Live::Leader { .. } => Some(self.address.to_string()),
            Live::Follower { link } => link.as_ref().map(|l| l.leader().to_string()),
        }
    }

    /// The error a write gets on a node that is not the leader.
    pub fn not_leader(&self) -> Error {
        let st = self.state.lock();
        let leader = match &st.live {
            Live::Leader { .. } => None,
            Live::Follower { link } => link.as_ref().map(|l| l.leader().to_string()),
        };
        match leader {
            Some(leader) => Error::ReadOnly { leader },
            None => Error::NotLeader { term: Some(st.stored.term), leader: None },
        }
    }

    /// Why reads are refused, if they are.
    pub fn unhealthy(&self) -> Option<String> {
        self.unhealthy.lock().clone()
    }

    /// The leader found our data differs from its own: refuse reads until
    /// an operator repairs this node (restart after replacing its data).
    pub fn mark_unhealthy(&self, why: &str) {
        let mut u = self.unhealthy.lock();
        if u.is_none() {
            log::error!("[corruption] this node refuses reads from now on: {why}");
            *u = Some(why.to_string());
        }
    }

    /// A message from `from` carried `term`. If it is newer than ours, store
    /// it before anything else and, if we lead, step down; then follow
    /// `leader` if it is given. Returns true if the term was newer.
    pub fn observe_term(&self, term: Term, leader: Option<SocketAddr>, from: &str) -> Result<bool> {
        let mut st = self.state.lock();
        if !st.stored.observe_term(term) {
            return Ok(false);
        }
        // Stop taking writes at once; the stored term comes next, before
        // anything else is done with the message.
        self.db.set_leader_term(None);
        let why = format!("{from} is in term {term}");
        st.stored.role = Some(StoredRole::Follower);
        st.stored.leader = leader.map(|l| l.to_string());
        st.stored.store(self.db.data_dir())?;
        log::info!("[failover] adopted term {term}: {why}");
        self.follow_locked(&mut st, leader, &why)?;
        // A new term is a new wait (Raft's "become follower"): without it,
        // a clock that was about to run out would start a rival election
        // while the candidate that brought the term is still collecting votes.
        let now = self.now_ms();
        self.clock.lock().restart(now);
        Ok(true)
    }

    /// A leader (LEADER_HELLO) sent us the cluster's members: remember them.
    pub fn set_members(&self, members: Vec<String>) -> Result<()> {
        let mut st = self.state.lock();
        if st.stored.members != members && !members.is_empty() {
            st.stored.members = members;
            st.stored.store(self.db.data_dir())?;
        }
        Ok(())
    }

    /// `kv_client follow HOST:PORT`: follow `leader` from now on (a leader
    /// steps down first).
    pub fn follow(&self, leader: SocketAddr) -> Result<String> {
        if same_node(leader, self.address) {
            return Err(Error::Refused(format!(
                "FOLLOW names this node itself ({leader}); use promote to make it leader"
            )));
        }
        let mut st = self.state.lock();
        if let Live::Follower { link: Some(link) } = &st.live {
            if same_node(link.leader(), leader) {
                return Ok(format!("already following {leader} (term {})", st.stored.term));
            }
        }
        self.follow_locked(&mut st, Some(leader), "kv_client follow")?;
        Ok(format!("now following {leader} (term {})", st.stored.term))
    }

    /// Refuse a vote request or announcement from another cluster before
    /// its term can do anything (a node with no cluster id yet accepts).
    pub fn check_cluster(&self, theirs: Option<ClusterId>, peer: &str) -> Result<()> {
        match (self.db.cluster_id(), theirs) {
            (Some(ours), theirs) if theirs != Some(ours) => Err(Error::OtherCluster {
                ours: ours.to_string(),
                theirs: theirs.map_or("(none)".into(), |t| t.to_string()),
                peer: peer.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// A REQUEST_VOTE arrived: apply the term and vote rules of [`NodeState`]
    /// (storing the result before the reply is sent) and answer.
    pub fn handle_vote(
        &self,
        term: Term,
        candidate: &str,
        last_lsn: Lsn,
        last_term: Term,
    ) -> Result<Message> {
        if term > self.term() {
            self.observe_term(term, None, &format!("candidate {candidate}"))?;
        }
        let mut st = self.state.lock();
        let ours = (self.db.last_term(), self.db.last_lsn());
        let leads = matches!(st.live, Live::Leader { .. });
        let granted = !leads && st.stored.grant_vote(term, candidate, (last_term, last_lsn), ours);
        if granted {
            st.stored.store(self.db.data_dir())?;
            self.wait_again();
            log::info!(
                "[failover] voted for {candidate} in term {term} (its log ends at LSN \
                 {last_lsn} of term {last_term}; ours at LSN {} of term {})",
                ours.1,
                ours.0
            );
        }
        Ok(Message::Vote { term: st.stored.term, granted, last_lsn: ours.1, last_term: ours.0 })
    }

    /// A LEADER_ANNOUNCE arrived: `leader` says it leads `term`. Follow it
    /// if that is news; answer with the term and leader we now know.
    pub fn handle_announce(&self, term: Term, leader: &str) -> Result<Message> {
        let leader_addr = parse_peer(leader)?;
        if term > self.term() {
            // A node that never joined a cluster keeps dialing the leader
            // it was given (`--leader`): it may be the announcer under
            // another address (a proxy, NAT), and it will say so itself.
            let given = {
                let st = self.state.lock();
                match &st.live {
                    Live::Follower { link: Some(link) } if st.stored.term == 0 => {
                        Some(link.leader())
                    }
                    _ => None,
                }
            };
            self.observe_term(term, given.or(Some(leader_addr)), &format!("leader {leader}"))?;
        } else if term == self.term() {
            let mut st = self.state.lock();
            let following = match &st.live {
                Live::Follower { link: Some(l) } => same_node(l.leader(), leader_addr),
                Live::Follower { link: None } => false,
                Live::Leader { .. } if st.second_leader_logged == term => true,
                Live::Leader { .. } => {
                    // Only `promote --force` behind a partition can get
                    // here: every other way into office is voted on.
                    st.second_leader_logged = term;
                    log::error!(
                        "[failover] two leaders claim term {term}: this node and {leader}; \
                         their records of term {term} may differ without log matching \
                         noticing (the corruption check will); stop one of them and re-seed \
                         it and its followers from the other (docs/FAILOVER.md, section 13)"
                    );
                    true
                }
            };
            if !following {
                self.follow_locked(
                    &mut st,
                    Some(leader_addr),
                    &format!("{leader} leads term {term}"),
                )?;
            }
        }
        let st = self.state.lock();
        let known = match &st.live {
            Live::Leader { .. } => self.address.to_string(),
            Live::Follower { link } => {
                link.as_ref().map(|l| l.leader().to_string()).unwrap_or_default()
            }
        };
        Ok(Message::LeaderAnnounce {
            cluster_id: self.db.cluster_id(),
            term: st.stored.term,
            leader: known,
        })
    }

    /// `kv_client promote`: become the leader of a new term. See the
    /// module doc of [`peers`] for the two rounds; returns what was done.
    pub fn promote(&self, force: bool) -> Result<String> {
        if let Live::Leader { hub } = &self.state.lock().live {
            return Err(Error::Refused(format!(
                "this node is already the leader of term {}; to hand over, promote another \
                 member (this one then follows it)",
                hub.term()
            )));
        }
        self.campaign(force, "kv_client promote")?
            .map_err(|lost| Error::Refused(format!("promotion refused: {lost}{}", lost.hint())))
    }

    /// Ask for office: round 1 (where does every member's log end?), then
    /// round 2 (votes in a new term). `Ok(Err(..))` says why it was not
    /// won; `Err` is a local failure (the state file cannot be written).
    fn campaign(&self, force: bool, why: &str) -> Result<std::result::Result<String, Lost>> {
        let _one_at_a_time = self.campaigning.lock();
        let (term, others) = self.others()?;
        let ours = (self.db.last_term(), self.db.last_lsn());
        let member_count = others.len() + 1;
        let me = self.address.to_string();

        // Round 1: where does every reachable member's log end?
        let answers =
            peers::query_positions(&self.dialer, &others, self.db.cluster_id(), ours, &me);
        self.heard_from_all(&answers);
        if let Some((member, newer)) = newer_term(&answers, term) {
            self.observe_term(newer, None, &format!("member {member}"))?;
            return Ok(Err(Lost::NewerTerm { member, term: newer }));
        }
        if !force {
            if let Err(objection) = peers::check_promotion(&answers, ours, member_count) {
                return Ok(Err(Lost::Objection(objection)));
            }
        }
        Ok(self.ask_for_votes(term, &others, force, why)?.map(|(message, _)| message))
    }

    /// The members other than this node, and our term; `Err` if we lead.
    fn others(&self) -> Result<(Term, Vec<String>)> {
        let st = self.state.lock();
        if let Live::Leader { hub } = &st.live {
            return Err(Error::Refused(format!("already the leader of term {}", hub.term())));
        }
        let others = st.stored.members.iter().filter(|m| !self.is_me(m)).cloned().collect();
        Ok((st.stored.term, others))
    }

    /// Round 2 of a bid for office: store term + 1 and our own vote, ask
    /// `others` for theirs, and lead if a majority (us included) grants it.
    fn ask_for_votes(
        &self,
        term: Term,
        others: &[String],
        force: bool,
        why: &str,
    ) -> Result<std::result::Result<(String, Vec<String>), Lost>> {
        let ours = (self.db.last_term(), self.db.last_lsn());
        let member_count = others.len() + 1;
        let majority = member_count / 2 + 1;
        let me = self.address.to_string();
        let new_term = {
            let mut st = self.state.lock();
            // Term 1 belongs to the cluster's first leader, which took it
            // without a vote: a vote is always for term 2 or later.
            let new_term = st.stored.term.max(term).max(1) + 1;
            st.stored.observe_term(new_term);
            st.stored.voted_for = Some(me.clone());
            st.stored.store(self.db.data_dir())?;
            new_term
        };
        let votes = peers::request_votes(
            &self.dialer,
            others,
            self.db.cluster_id(),
            new_term,
            ours,
            &me,
            majority,
        );
        self.heard_from_all(&votes);
        if let Some((member, newer)) = newer_term(&votes, new_term) {
            self.observe_term(newer, None, &format!("member {member}"))?;
            return Ok(Err(Lost::NewerTerm { member, term: newer }));
        }
        let granted: Vec<&str> = votes
            .iter()
            .filter(|(_, v)| matches!(v, Ok(Message::Vote { granted: true, .. })))
            .map(|(m, _)| m.as_str())
            .collect();
        if granted.len() + 1 < majority && !force {
            return Ok(Err(Lost::Outvoted {
                term: new_term,
                votes: granted.len() + 1,
                members: member_count,
            }));
        }
        let mut st = self.state.lock();
        if st.stored.term != new_term {
            let term = st.stored.term;
            return Ok(Err(Lost::NewerTerm { member: "a member".into(), term }));
        }
        let why = if force && granted.len() + 1 < majority {
            format!("{why} --force (only {} of {member_count} votes)", granted.len() + 1)
        } else if granted.is_empty() {
            format!("{why} (a cluster of one)")
        } else {
            format!("{why}, with votes from {}", granted.join(", "))
        };
        self.lead_locked(&mut st, new_term, &why)?;
        let message = format!(
            "promoted to leader of term {new_term} ({why}); last LSN {} (term {})",
            ours.1, ours.0
        );
        Ok(Ok((message, granted.iter().map(|m| m.to_string()).collect())))
    }

    /// `kv_client transfer-leadership [TARGET]` (and SIGTERM on a leader):
    /// hand leadership to `target`, or to the most up-to-date follower,
    /// without waiting for an election timeout (Raft thesis section 3.10).
    ///
    /// 1. Stop taking writes (they get "not the leader" and go elsewhere);
    /// 2. wait until the target has acknowledged our whole log;
    /// 3. send it TIMEOUT_NOW: it starts an election at once, without
    ///    pre-vote, and wins it, since its log is as long as any;
    /// 4. wait until its REQUEST_VOTE deposes us. If anything fails, take
    ///    writes again and say why.
    pub fn transfer_leadership(&self, target: Option<SocketAddr>) -> Result<String> {
        let started = Instant::now();
        let hub = match self.view() {
            RoleView::Leader { hub, .. } => hub,
            RoleView::Follower { .. } => {
                return Err(Error::Refused(format!(
                    "this node is not the leader; {}",
                    self.not_leader()
                )))
            }
        };
        let term = hub.term();
        let target = match target {
            Some(t) if hub.acked_by(t).is_some() => t,
            Some(t) => {
                return Err(Error::Refused(format!(
                    "{t} is not a follower streaming from this leader (see kv_client status)"
                )))
            }
            None => match hub.most_up_to_date() {
                Some((t, _)) => t,
                None => {
                    return Err(Error::Refused(
                        "no follower is streaming from this leader; nobody to hand over to".into(),
                    ))
                }
            },
        };
        let timeout = Duration::from_millis(self.election.timing.election_ms);
        let deadline = started + timeout;
        log::info!("[election] handing leadership of term {term} to {target}: writes paused");
        self.db.set_leader_term(None);
        let outcome = self.hand_over(&hub, target, deadline);
        if let Err(e) = &outcome {
            let st = self.state.lock();
            if matches!(&st.live, Live::Leader { hub: h } if Arc::ptr_eq(h, &hub)) {
                self.db.set_leader_term(Some(term));
                log::warn!("[election] handover to {target} failed: {e}; taking writes again");
            }
        }
        outcome?;
        let message = format!(
            "{target} leads term {} now; writes were paused for {} ms",
            self.term(),
            started.elapsed().as_millis()
        );
        log::info!("[election] {message}");
        Ok(message)
    }

    /// Steps 2–4 of [`Replica::transfer_leadership`].
    fn hand_over(&self, hub: &Arc<Hub>, target: SocketAddr, deadline: Instant) -> Result<()> {
        let term = hub.term();
        let last = self.db.queued_lsn();
        if !self.db.wait_applied(last, deadline) || !hub.wait_acked_by(target, last, deadline) {
            return Err(Error::Refused(format!(
                "{target} did not acknowledge LSN {last} within the election timeout"
            )));
        }
        let request = Message::TimeoutNow { cluster_id: self.db.cluster_id(), term };
        match peers::ask(&self.dialer, &target.to_string(), &request)? {
            Message::Done { .. } => {}
            other => {
                return Err(Error::Refused(format!("{target} answered {}", other.name())));
            }
        }
        while Instant::now() < deadline {
            if self.term() > term {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::Refused(format!("{target} did not win an election within the timeout")))
    }

    /// TIMEOUT_NOW from the leader of `term`: it is handing over to us.
    /// Start an election for `term + 1` at once, skipping pre-vote (the
    /// leader asked; nobody is disrupted), on a thread of its own.
    pub fn handle_timeout_now(&self, term: Term) -> Result<Message> {
        let leader = {
            let st = self.state.lock();
            match &st.live {
                Live::Follower { link: Some(link) } if st.stored.term == term => link.leader(),
                _ => {
                    return Err(Error::Refused(format!(
                        "TIMEOUT_NOW for term {term}, but this node is not a follower in that \
                     term (term {})",
                        st.stored.term
                    )))
                }
            }
        };
        let me = self.self_handle()?;
        std::thread::Builder::new()
            .name("timeout-now".into())
            .spawn(move || {
                let _one_at_a_time = me.campaigning.lock();
                let ours = (me.db.last_term(), me.db.last_lsn());
                log::info!(
                    "[election] {leader} hands leadership over; starting election for term {} \
                     (last LSN {}, term {})",
                    term + 1,
                    ours.1,
                    ours.0
                );
                let outcome = me.others().and_then(|(term, others)| {
                    me.ask_for_votes(term, &others, false, &format!("handed over by {leader}"))
                });
                match outcome {
                    Ok(Ok((_, votes))) => log::info!(
                        "[election] won term {} with votes from {}",
                        term + 1,
                        votes.join(", ")
                    ),
                    Ok(Err(lost)) => log::info!("[election] handover election lost: {lost}"),
                    Err(e) => log::error!("[election] handover election failed: {e}"),
                }
            })
            .map_err(|e| Error::io("spawning the handover election", e))?;
        Ok(Message::Done { message: format!("starting an election for term {}", term + 1) })
    }

    /// `auto` or `manual`, as it applies to the members known now.
    pub fn failover_name(&self) -> &'static str {
        if self.election.automatic(self.state.lock().stored.members.len()) {
            "auto"
        } else {
            "manual"
        }
    }

    /// Whom we voted for in our current term (`status`).
    pub fn voted_for(&self) -> Option<String> {
        self.state.lock().stored.voted_for.clone()
    }

    /// The last change of role, for `status`.
    pub fn last_role_change(&self) -> Option<RoleChange> {
        let change = self.last_change.lock();
        change.as_ref().map(|(at, what)| RoleChange {
            ms_ago: at.elapsed().as_millis() as u64,
            what: what.clone(),
        })
    }

    /// Remember a change of role for `status`.
    fn note_change(&self, what: String) {
        *self.last_change.lock() = Some((Instant::now(), what));
    }

    /// Milliseconds since this node started: the election rules' clock.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The election timing (`--election-timeout-ms`, `--heartbeat-interval-ms`).
    pub fn timing(&self) -> Timing {
        self.election.timing
    }

    /// A message from the leader we follow arrived: its clock starts again.
    /// The commit LSN now: a leader computes it from its followers' ACKs
    /// (which also records it in the database); a follower has it from
    /// its leader. The snapshot thread snapshots only up to it.
    pub fn commit_lsn(&self) -> Lsn {
        match self.view() {
            RoleView::Leader { hub, .. } => hub.commit_lsn(&self.db),
            RoleView::Follower { .. } => self.db.commit_lsn(),
        }
    }

    pub fn heard_from_leader(&self, leader: SocketAddr) {
        let now = self.now_ms();
        self.clock.lock().heard_from_leader(now);
        self.heard_from(leader);
    }

    /// Election rule 4: the leader we follow refuses connections, so it is
    /// gone; end the lease and stand for election soon (if we may).
    pub fn leader_refuses_connections(&self, leader: SocketAddr) {
        {
            let st = self.state.lock();
            let following = match &st.live {
                Live::Follower { link: Some(l) } => same_node(l.leader(), leader),
                _ => false,
            };
            if !following || !self.election.automatic(st.stored.members.len()) {
                return;
            }
        }
        let now = self.now_ms();
        let wait = self.clock.lock().leader_gone(now);
        log::info!(
            "[election] leader {leader} refuses connections (no process listens there); \
             standing for election in {wait} ms unless a leader speaks first"
        );
    }

    /// `member` just showed it is reachable: it sent us something, or
    /// answered a question (`status` shows when each member last did).
    pub fn heard_from(&self, member: SocketAddr) {
        self.contacts.lock().insert(member, Instant::now());
    }

    /// [`Replica::heard_from`] for every member that answered.
    fn heard_from_all(&self, answers: &[(String, Result<Message>)]) {
        for (member, answer) in answers {
            if let (Ok(_), Ok(address)) = (answer, parse_peer(member)) {
                self.heard_from(address);
            }
        }
    }

    /// Every member, and how long ago it last showed it is reachable
    /// (`None`: not since this node started); this node says 0.
    pub fn member_contacts(&self) -> Vec<(String, Option<u64>)> {
        let members = self.members();
        let contacts = self.contacts.lock();
        members
            .into_iter()
            .map(|m| {
                let ago = match parse_peer(&m) {
                    _ if self.is_me(&m) => Some(0),
                    Ok(a) => contacts
                        .iter()
                        .find(|(c, _)| same_node(**c, a))
                        .map(|(_, at)| at.elapsed().as_millis() as u64),
                    Err(_) => None,
                };
                (m, ago)
            })
            .collect()
    }

    /// Wait a whole new election timeout (no leader has spoken).
    fn wait_again(&self) {
        let now = self.now_ms();
        self.clock.lock().restart(now);
    }

    /// The election thread: rule 1 (a silent leader starts an election) on
    /// a follower, rule 3 (check-quorum) on a leader, a few times per
    /// heartbeat. With `--failover manual` it only keeps the clock reset.
    fn election_loop(&self) {
        let tick = Duration::from_millis((self.election.timing.heartbeat_ms / 2).clamp(5, 50));
        loop {
            std::thread::sleep(tick);
            let now = self.now_ms();
            let (automatic, hub) = {
                let st = self.state.lock();
                let hub = match &st.live {
                    Live::Leader { hub } => Some(Arc::clone(hub)),
                    Live::Follower { .. } => None,
                };
                (self.election.automatic(st.stored.members.len()), hub)
            };
            if !automatic || hub.is_some() {
                // A leader is its own lease; with manual failover nobody
                // may campaign, so pre-votes are always refused.
                self.clock.lock().heard_from_leader(now);
            }
            if !automatic {
                continue;
            }
            let expired = self.clock.lock().expired(now); // not held below
            let outcome = match (hub, expired) {
                (Some(hub), _) => self.check_quorum(&hub),
                (None, Some(silent)) => self.run_election(silent),
                (None, None) => Ok(()),
            };
            if let Err(e) = outcome {
                log::error!("[election] {e}");
            }
        }
    }

    /// Rule 3: a leader that has not heard from a majority within the
    /// election timeout steps down.
    fn check_quorum(&self, hub: &Arc<Hub>) -> Result<()> {
        let within = self.election.timing.election_ms;
        if hub.age_ms() < within || hub.is_deposed() {
            return Ok(());
        }
        let acks = hub.ack_ages_ms();
        if election::quorum_alive(&acks, acks.len() + 1, within) {
            return Ok(());
        }
        let heard = acks.iter().filter(|a| a.is_some_and(|ms| ms < within)).count() + 1;
        let why = format!(
            "check-quorum: heard from {heard} of {} members (itself included) in the last \
             {within} ms, a majority needed",
            acks.len() + 1
        );
        let mut st = self.state.lock();
        match &st.live {
            Live::Leader { hub: current } if Arc::ptr_eq(current, hub) => {}
            _ => return Ok(()),
        }
        log::warn!("[election] stepping down as leader of term {}: {why}", hub.term());
        self.follow_locked(&mut st, None, &why)
    }

    /// Rules 1 and 2: our leader has been silent for `silent_ms`. Ask for
    /// pre-votes, and only with a majority of them stand for election.
    fn run_election(&self, silent_ms: u64) -> Result<()> {
        let (term, others, leader) = {
            let st = self.state.lock();
            let leader = match &st.live {
                Live::Follower { link: Some(link) } => Some(link.leader().to_string()),
                _ => None,
            };
            let others: Vec<String> =
                st.stored.members.iter().filter(|m| !self.is_me(m)).cloned().collect();
            (st.stored.term, others, leader)
        };
        let ours = (self.db.last_term(), self.db.last_lsn());
        let next = term.max(1) + 1;
        let members = others.len() + 1;
        let majority = members / 2 + 1;
        let me = self.address.to_string();
        let silence = match &leader {
            Some(l) => format!("no AppendEntries from {l} for {silent_ms} ms"),
            None => format!("no leader for {silent_ms} ms"),
        };
        log::info!(
            "[election] {silence}; starting election for term {next} (last LSN {}, term {})",
            ours.1,
            ours.0
        );
        // Rule 2: would a majority vote for us? Nothing changes anywhere.
        let answers = peers::pre_votes(
            &self.dialer,
            &others,
            self.db.cluster_id(),
            next,
            ours,
            &me,
            majority,
        );
        self.heard_from_all(&answers);
        if let Some((member, newer)) = newer_term(&answers, term) {
            self.observe_term(newer, None, &format!("member {member}"))?;
            self.wait_again();
            return Ok(());
        }
        let yes = answers
            .iter()
            .filter(|(_, v)| matches!(v, Ok(Message::Vote { granted: true, .. })))
            .count();
        if yes + 1 < majority {
            log::info!(
                "[election] pre-vote for term {next}: {} of {} members would vote for this node \
                 (itself included), {majority} needed; staying a follower",
                yes + 1,
                others.len() + 1
            );
            self.wait_again();
            return Ok(());
        }
        let _one_at_a_time = self.campaigning.lock();
        let now_term = self.term();
        if now_term != term {
            log::info!(
                "[election] not standing for term {next}: a candidate brought term {now_term} \
                 during the pre-vote"
            );
            return Ok(());
        }
        let why = format!("elected after {silence}");
        match self.ask_for_votes(term, &others, false, &why)? {
            Ok((_, votes)) => {
                log::info!("[election] won term {next} with votes from {}", votes.join(", "));
            }
            Err(lost) => {
                log::info!("[election] lost the election for term {next}: {lost}");
                self.wait_again();
            }
        }
        Ok(())
    }

    /// A PRE_VOTE arrived: would we vote for `candidate` in `term`? Rule 2
    /// of [`election`]; nothing is stored, whatever the answer.
    pub fn handle_pre_vote(
        &self,
        term: Term,
        candidate: &str,
        last_lsn: Lsn,
        last_term: Term,
    ) -> Result<Message> {
        let st = self.state.lock();
        let ours = (self.db.last_term(), self.db.last_lsn());
        let leads = matches!(st.live, Live::Leader { .. });
        let in_lease = leads || self.clock.lock().in_lease(self.now_ms());
        let granted =
            election::grant_pre_vote(st.stored.term, ours, term, (last_term, last_lsn), in_lease);
        log::info!(
            "[election] pre-vote for {candidate} in term {term}: {}",
            if granted {
                "yes".to_string()
            } else if leads {
                "no, this node leads".to_string()
            } else if in_lease {
                "no, this node heard from its leader lately".to_string()
            } else {
                format!(
                    "no (our term {}, our log ends at LSN {} of term {}, its at LSN \
                     {last_lsn} of term {last_term})",
                    st.stored.term, ours.1, ours.0
                )
            }
        );
        Ok(Message::Vote { term: st.stored.term, granted, last_lsn: ours.1, last_term: ours.0 })
    }

    /// Become (or stay) a follower of `leader` (`None`: wait to learn one).
    fn follow_locked(
        &self,
        st: &mut RoleState,
        leader: Option<SocketAddr>,
        why: &str,
    ) -> Result<()> {
        // 1. Already following this leader: keep the link, store the role.
        if let Live::Follower { link: Some(link) } = &st.live {
            if leader.is_some_and(|l| same_node(l, link.leader())) && !link.is_stopped() {
                st.stored.role = Some(StoredRole::Follower);
                st.stored.leader = leader.map(|l| l.to_string());
                return st.stored.store(self.db.data_dir());
            }
        }
        // 2. A leader steps down: no more writes, fail the waiting ones.
        // (The "following" line waits until the role is stored, so that
        // a restart after it finds the leader.)
        let mut following = None;
        let old = std::mem::replace(&mut st.live, Live::Follower { link: None });
        match old {
            Live::Leader { hub } => {
                self.db.set_leader_term(None);
                hub.depose(why);
                log::warn!(
                    "[failover] stepping down as leader of term {}: {why}; now {}",
                    hub.term(),
                    match leader {
                        Some(l) => format!("following {l}"),
                        None => "waiting to learn the new leader".into(),
                    }
                );
            }
            Live::Follower { link: Some(link) } => {
                link.stop();
                following = leader
                    .filter(|l| !same_node(*l, link.leader()))
                    .map(|l| format!("now following {l} instead of {}: {why}", link.leader()));
            }
            Live::Follower { link: None } => {
                following =
                    leader.map(|l| format!("following {l} in term {}: {why}", st.stored.term));
            }
        }
        self.note_change(match leader {
            Some(l) => format!("follower of {l} in term {} ({why})", st.stored.term),
            None => format!("follower in term {}, leader not known yet ({why})", st.stored.term),
        });
        // 3. Store the role, then start the link.
        st.stored.role = Some(StoredRole::Follower);
        st.stored.leader = leader.map(|l| l.to_string());
        st.stored.store(self.db.data_dir())?;
        if let Some(line) = following {
            log::info!("[failover] {line}");
        }
        let link = match leader {
            Some(leader) => {
                let link = Arc::new(FollowerLink::new(leader));
                follower::spawn(Arc::clone(&self.db), self.self_handle()?, Arc::clone(&link))?;
                Some(link)
            }
            None => None,
        };
        st.live = Live::Follower { link };
        Ok(())
    }

    /// Become the leader of `term` (stored first), with a new hub.
    fn lead_locked(&self, st: &mut RoleState, term: Term, why: &str) -> Result<()> {
        if let Live::Follower { link: Some(link) } = &st.live {
            link.stop();
        }
        let (cluster_id, created) = self.db.ensure_cluster_id()?;
        if created {
            log::info!("[server] new cluster: id {cluster_id}");
        }
        st.stored.term = term;
        st.stored.role = Some(StoredRole::Leader);
        st.stored.leader = Some(self.address.to_string());
        st.stored.voted_for = Some(self.address.to_string());
        if st.stored.members.is_empty() {
            st.stored.members = vec![self.address.to_string()];
        }
        st.stored.store(self.db.data_dir())?;
        let peers: Vec<SocketAddr> = st
            .stored
            .members
            .iter()
            .filter(|m| !self.is_me(m))
            .filter_map(|m| parse_peer(m).ok())
            .collect();
        // What this leader knows is committed: everything, alone; else
        // what its last leader told it. Anything after that is committed
        // only once a record of this term is (Raft section 5.4.2): so a
        // leader with followers and a non-empty log begins its term with
        // a NOOP (the first leader of a new cluster has nothing to commit).
        let last_lsn = self.db.last_lsn();
        let known_commit = if peers.is_empty() { last_lsn } else { self.db.commit_lsn() };
        let hub = Arc::new(
            Hub::new(&peers, term)
                .with_heartbeat_ms(self.election.timing.heartbeat_ms)
                .with_stages(Arc::clone(self.db.stages()))
                .starting_at(last_lsn, known_commit),
        );
        let noop = if !peers.is_empty() && last_lsn > 0 {
            Some(self.db.begin_term_with_noop(term))
        } else {
            self.db.set_leader_term(Some(term));
            None
        };
        log::info!(
            "[failover] leader of term {term} ({why}); log ends at LSN {} of term {}",
            self.db.last_lsn(),
            self.db.last_term()
        );
        self.note_change(format!("leader of term {term} ({why})"));
        st.live = Live::Leader { hub: Arc::clone(&hub) };
        if let Some(noop) = noop {
            self.write_term_start(term, noop, last_lsn)?;
        }
        peers::spawn_announcer(self.self_handle()?, hub)
    }

    /// Write the NOOP that starts `term` (see [`crate::wal::record`]), on a
    /// thread of its own: the role lock is held here, and the write waits
    /// for an fsync.
    fn write_term_start(&self, term: Term, noop: QueuedWrite, office_lsn: Lsn) -> Result<()> {
        let db = Arc::clone(&self.db);
        let spawned = std::thread::Builder::new().name("term-start".into()).spawn(move || match db
            .wait_queued(noop)
        {
            Ok(lsn) => log::info!(
                "[failover] term {term} starts with a NOOP at LSN {lsn}; the records of \
                     earlier terms up to LSN {office_lsn} are committed once it is"
            ),
            Err(e) => log::warn!("[failover] NOOP for term {term} not written: {e}"),
        });
        spawned.map(|_| ()).map_err(|e| Error::io("spawning the term-start thread", e))
    }

    /// Answer a read with the consistency asked for (`kv_client get
    /// --consistency`), after waiting, if asked, until this node has
    /// applied `min_lsn` (read-your-writes on any node).
    pub fn read(
        &self,
        consistency: Consistency,
        min_lsn: Lsn,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(why) = self.unhealthy() {
            return Err(Error::Unhealthy(why));
        }
        let asked = Instant::now();
        let deadline = asked + timeout;
        if min_lsn > 0 && !self.db.wait_applied(min_lsn, deadline) {
            return Err(Error::ReadTimeout {
                why: format!(
                    "this node has applied up to LSN {}, not LSN {min_lsn} yet",
                    self.db.last_lsn()
                ),
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        let hub = match (consistency, self.view()) {
            (Consistency::Any, _) => return Ok(self.db.get(key)),
            (_, RoleView::Leader { hub, .. }) => hub,
            (_, RoleView::Follower { .. }) => {
                let Error::ReadOnly { leader } = self.not_leader() else {
                    return Err(Error::NotLeaderForRead {
                        consistency: consistency.name(),
                        leader: None,
                    });
                };
                return Err(Error::NotLeaderForRead {
                    consistency: consistency.name(),
                    leader: Some(leader),
                });
            }
        };
        if consistency == Consistency::Leader {
            return Ok(self.db.get(key));
        }
        // ReadIndex (see the module doc of [`crate::replication::hub`]):
        // 1. this term's first record is committed, so the commit LSN
        //    covers every write acknowledged by any leader before;
        hub.wait_committed(&self.db, hub.office_lsn(), deadline)?;
        let read_lsn = hub.commit_lsn(&self.db);
        // 2. a majority confirms, after the read began, that we still lead;
        hub.confirm_leadership(asked, || peers::confirm_round(self, &hub, hub.majority() - 1))?;
        // 3. read, then wait until what the map held is committed.
        let (value, applied) = self.db.get_at(key);
        hub.wait_committed(&self.db, applied.max(read_lsn), deadline)?;
        Ok(value)
    }

    fn is_me(&self, member: &str) -> bool {
        same_address(member, self.address)
    }

    /// The address members know this node by (`--advertise`, or the bound one).
    pub fn identity(&self) -> SocketAddr {
        self.address
    }

    /// An `Arc` of ourselves, for a thread we start.
    pub fn self_handle(&self) -> Result<Arc<Replica>> {
        self.me.upgrade().ok_or_else(|| Error::Unexpected("the node is shutting down".into()))
    }
}

/// The members list for a leader at `me` with `peers`: itself first.
fn members_of(me: &str, peers: &[SocketAddr]) -> Vec<String> {
    let mut members = vec![me.to_string()];
    members.extend(peers.iter().map(|p| p.to_string()));
    members
}

/// True if the member text `member` names the node at `address`.
fn same_address(member: &str, address: SocketAddr) -> bool {
    parse_peer(member).is_ok_and(|m| same_node(m, address))
}

/// Why a bid for office ([`Replica::campaign`]) was not won.
#[derive(Debug)]
enum Lost {
    /// Round 1 found it unsafe to ask for votes.
    Objection(peers::Objection),
    /// Fewer than a majority voted for this node in `term`.
    Outvoted { term: Term, votes: usize, members: usize },
    /// `member` is in a newer `term`, which this node has now adopted.
    NewerTerm { member: String, term: Term },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Objection(objection) => write!(f, "{objection}"),
            Lost::Outvoted { term, votes, members } => write!(
                f,
                "{votes} of {members} members voted for this node in term {term} (itself \
                 included), {} needed; the members that heard the vote are in term {term} now \
                 and no longer accept the old leader's records",
                members / 2 + 1
            ),
            Lost::NewerTerm { member, term } => write!(
                f,
                "{member} is already in term {term}, newer than ours; this node adopted it and \
                 follows the leader of term {term} once it announces itself"
            ),
        }
    }
}

impl Lost {
    /// What an operator can do about it, for `kv_client promote`.
    fn hint(&self) -> String {
        match self {
            Lost::Objection(peers::Objection::Behind { member, .. }) => format!(
                "; promote {member} instead, or use --force (records only {member} holds would \
                 be lost)"
            ),
            Lost::Objection(peers::Objection::TooFew { .. }) => {
                "; use --force to promote anyway".into()
            }
            Lost::Outvoted { .. } => "; promote again (or use --force)".into(),
            Lost::NewerTerm { .. } => "; try again".into(),
        }
    }
}

/// A seed for the election clock that differs between the nodes of one
/// machine: the OS's randomness, or else the port and the time.
fn clock_seed(address: SocketAddr) -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (address.port() as u64) << 32 ^ nanos
}

/// The first member whose answer carries a term newer than `ours`.
fn newer_term(answers: &[(String, Result<Message>)], ours: Term) -> Option<(String, Term)> {
    answers.iter().find_map(|(member, answer)| match answer {
        Ok(Message::Vote { term, .. }) if *term > ours => Some((member.clone(), *term)),
        _ => None,
    })
}
