//! Talking to other members outside a replication link: the votes of a
//! promotion, and a leader's announcements (`docs/FAILOVER.md`).
//!
//! ## Promotion, in two rounds
//!
//! `kv_client promote` on node P:
//!
//! 1. **Ask where every log ends.** P sends REQUEST_VOTE in term 0 to
//!    every member it knows ([`query_positions`]): no node is ever in term
//!    0, so nobody changes state or grants anything; each answers with its
//!    term and where its log ends. Without
//!    `--force`, P refuses to go on if fewer than a majority answered, or
//!    if a reachable member's log is ahead of P's (a later last term, or
//!    the same last term and a higher LSN): promoting the most up-to-date
//!    node of a majority is what guarantees that no write acknowledged
//!    with `majority` is lost, because every such write is on at least one
//!    node of every majority.
//! 2. **Ask for votes in the new term.** P stores term + 1 and its vote for
//!    itself, and sends REQUEST_VOTE in the new term. A member grants at
//!    most one vote per term, so two nodes promoted at once cannot both win
//!    the same term. Every member that hears the new term adopts it, and
//!    from then on refuses AppendEntries from the old leader: that is what
//!    fences the old leader off even before it learns it was deposed.
//!
//! ## Announcements
//!
//! Followers dial their leader, never the other way round. So that a
//! deposed leader, or a member still pointed at it, learns of the new
//! leader without an operator, a leader sends LEADER_ANNOUNCE `(term, its
//! address)` every [`ANNOUNCE_INTERVAL_MS`] to each member that is not
//! following it. A member in an older term adopts the term and follows the
//! announcer; every member answers with the term and leader it knows, so an
//! announcer that is itself out of date learns it and steps down.
//!
//! ## Authentication
//!
//! Every question goes on a fresh connection; on a node started with
//! `--auth-file`, [`ask`] first runs the handshake of [`crate::auth`] with
//! the node's own secret (the replication one, if set), and the member
//! proves in turn that it knows it: a vote or an announcement from someone
//! without the secret is never even read.

use std::io::{BufReader, Write};

use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::ClusterId;
use crate::dial::Dialer;
use crate::error::{Error, Result};
use crate::limits::{ANNOUNCE_INTERVAL_MS, FRAME_BYTES_MAX, PEER_REQUEST_TIMEOUT_MS};
use crate::protocol::{read_frame, Message};
use crate::replication::hub::{same_node, Hub};
use crate::replication::parse_peer;
use crate::replication::replica::Replica;
use crate::{Lsn, Term};

/// Ask every member where its log ends, changing nothing anywhere: a
/// REQUEST_VOTE in term 0, which every node answers without granting.
pub fn query_positions(
    dialer: &Dialer,
    members: &[String],
    cluster_id: Option<ClusterId>,
    ours: (Term, Lsn),
    me: &str,
) -> Vec<(String, Result<Message>)> {
    let request = vote_request(cluster_id, 0, ours, me);
    ask_each(dialer, members, &request).iter().take(members.len()).collect()
}

fn vote_request(cluster_id: Option<ClusterId>, term: Term, ours: (Term, Lsn), me: &str) -> Message {
    Message::RequestVote {
        cluster_id,
        term,
        last_lsn: ours.1,
        last_term: ours.0,
        candidate: me.into(),
    }
}

/// Send REQUEST_VOTE `(term, ours)` from `me` to every member in `members`,
/// all at once; return the answers (or why there was none) that came
/// before `majority` votes (ours included) or a newer term did.
pub fn request_votes(
    dialer: &Dialer,
    members: &[String],
    cluster_id: Option<ClusterId>,
    term: Term,
    ours: (Term, Lsn),
    me: &str,
    majority: usize,
) -> Vec<(String, Result<Message>)> {
    let request = vote_request(cluster_id, term, ours, me);
    until_majority(dialer, members, &request, term, majority)
}

/// Send PRE_VOTE `(term, ours)` from `me` to every member: would they vote
/// for us in `term`? Nothing changes at any of them.
pub fn pre_votes(
    dialer: &Dialer,
    members: &[String],
    cluster_id: Option<ClusterId>,
    term: Term,
    ours: (Term, Lsn),
    me: &str,
    majority: usize,
) -> Vec<(String, Result<Message>)> {
    let request = Message::PreVote {
        cluster_id,
        term,
        last_lsn: ours.1,
        last_term: ours.0,
        candidate: me.into(),
    };
    // A pre-vote answer carries the member's term, which is `term - 1` or
    // newer; only one newer than ours (`term - 1`) ends the round early.
    until_majority(dialer, members, &request, term.saturating_sub(1), majority)
}

/// Collect the answers to `request` until `majority` members (the asker
/// included) granted their vote, a member answered with a term newer than
/// `term`, or every member answered (or failed to).
fn until_majority(
    dialer: &Dialer,
    members: &[String],
    request: &Message,
    term: Term,
    majority: usize,
) -> Vec<(String, Result<Message>)> {
    let mut got = Vec::new();
    let mut granted = 1;
    for (member, answer) in ask_each(dialer, members, request).iter().take(members.len()) {
        let done = match &answer {
            Ok(Message::Vote { term: theirs, .. }) if *theirs > term => true,
            Ok(Message::Vote { granted: true, .. }) => {
                granted += 1;
                granted >= majority
            }
            _ => false,
        };
        got.push((member, answer));
        if done {
            break;
        }
    }
    got
}

/// Send `request` to every member at once, each on a thread of its own;
/// the answers (or why there was none) arrive on the channel as they come.
/// A member that does not answer — a partition holds the request until it
/// times out — delays nobody: the caller stops reading when it has heard
/// enough, and that member's thread ends on its own timeout.
pub fn ask_each(
    dialer: &Dialer,
    members: &[String],
    request: &Message,
) -> Receiver<(String, Result<Message>)> {
    let (tx, answers) = crossbeam_channel::unbounded();
    for member in members {
        let (thread_tx, thread_member, request) = (tx.clone(), member.clone(), request.clone());
        let dialer = dialer.clone();
        let spawned = std::thread::Builder::new().name("ask".into()).spawn(move || {
            let answer = ask(&dialer, &thread_member, &request);
            let _ = thread_tx.send((thread_member, answer));
        });
        if let Err(e) = spawned {
            let (tx, member) = (tx.clone(), member.clone());
            let _ = tx.send((member, Err(Error::io("spawning a thread to ask a member", e))));
        }
    }
    answers
}

/// Why round 1 of a promotion found it unsafe to ask for votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Objection {
    /// A reachable member's log is ahead of ours: `(last_term, last_lsn)`.
    Behind { member: String, theirs: (Term, Lsn), ours: (Term, Lsn) },
    /// Fewer than a majority answered (this node included).
    TooFew { answered: usize, members: usize, silent: Vec<String> },
}

impl std::fmt::Display for Objection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Objection::Behind { member, theirs, ours } => write!(
                f,
                "{member} holds LSN {} of term {}, more than this node (LSN {} of term {})",
                theirs.1, theirs.0, ours.1, ours.0
            ),
            Objection::TooFew { answered, members, silent } => write!(
                f,
                "only {answered} of {members} members answered (this node included), {} \
                 needed to be sure no acknowledged write is lost; no answer from {}",
                members / 2 + 1,
                silent.join(", ")
            ),
        }
    }
}

/// Round 1's checks: a majority answered, and nobody reachable is ahead.
pub fn check_promotion(
    answers: &[(String, Result<Message>)],
    ours: (Term, Lsn),
    member_count: usize,
) -> std::result::Result<(), Objection> {
    let majority = member_count / 2 + 1;
    let mut answered = 1; // ourselves
    let mut silent = Vec::new();
    for (member, answer) in answers {
        match answer {
            Ok(Message::Vote { last_lsn, last_term, .. }) => {
                answered += 1;
                if (*last_term, *last_lsn) > ours {
                    let theirs = (*last_term, *last_lsn);
                    return Err(Objection::Behind { member: member.clone(), theirs, ours });
                }
            }
            Ok(other) => silent.push(format!("{member} ({} instead of VOTE)", other.name())),
            Err(e) => silent.push(format!("{member} ({e})")),
        }
    }
    if answered < majority {
        return Err(Objection::TooFew { answered, members: member_count, silent });
    }
    Ok(())
}

/// One request, one reply, on a fresh connection with short timeouts,
/// after the handshake if this node has a secret (`--auth-file`).
pub fn ask(dialer: &Dialer, member: &str, request: &Message) -> Result<Message> {
    let address = parse_peer(member)?;
    let mut stream = dialer.dial(address, Duration::from_millis(PEER_REQUEST_TIMEOUT_MS))?;
    let mut out = Vec::with_capacity(64);
    request.encode_frame(&mut out);
    stream.write_all(&out).map_err(|e| Error::io(format!("sending to {member}"), e))?;
    let mut reader = BufReader::new(stream);
    let frame = read_frame(&mut reader, FRAME_BYTES_MAX)?
        .ok_or_else(|| Error::Link(format!("{member} closed the connection")))?;
    match Message::decode(&frame)? {
        Message::Error { message, .. } => Err(Error::Link(format!("{member}: {message}"))),
        reply => Ok(reply),
    }
}

/// A linearizable read's confirmation round ([`Hub::confirm_leadership`]):
/// send LEADER_ANNOUNCE to every other member at once and count those that
/// answer with our term and us as its leader, stopping as soon as
/// `needed` have. A member in a newer term deposes us: `Err(NotLeader)`.
pub fn confirm_round(replica: &Replica, hub: &Hub, needed: usize) -> Result<usize> {
    let me = replica.address();
    let announce = Message::LeaderAnnounce {
        cluster_id: replica.db().cluster_id(),
        term: hub.term(),
        leader: me.to_string(),
    };
    let others: Vec<String> = replica
        .members()
        .into_iter()
        .filter(|m| parse_peer(m).is_ok_and(|a| !same_node(a, me)))
        .collect();
    let answers = ask_each(replica.dialer(), &others, &announce);
    let mut yes = 0;
    for (member, answer) in answers.iter().take(others.len()) {
        if let (Ok(_), Ok(address)) = (&answer, parse_peer(&member)) {
            replica.heard_from(address);
        }
        match answer {
            Ok(Message::LeaderAnnounce { term, leader, .. })
                if term == hub.term() && parse_peer(&leader).is_ok_and(|l| same_node(l, me)) =>
            {
                yes += 1;
                if yes >= needed {
                    break;
                }
            }
            Ok(Message::LeaderAnnounce { term, leader, .. }) if term > hub.term() => {
                let leader = parse_peer(&leader).ok().filter(|l| !same_node(*l, me));
                replica.observe_term(term, leader, &format!("member {member}"))?;
                return Err(Error::NotLeader { term: Some(term), leader: None });
            }
            Ok(_) => {}
            Err(e) => log::debug!("[read] confirming term {} with {member}: {e}", hub.term()),
        }
    }
    Ok(yes)
}

/// Start the announcer of a leadership: it ends when `hub` is deposed.
pub fn spawn_announcer(replica: Arc<Replica>, hub: Arc<Hub>) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("announce-t{}", hub.term()))
        .spawn(move || announce_loop(&replica, &hub))
        .map(|_| ())
        .map_err(|e| Error::io("spawning announcer thread", e))
}

fn announce_loop(replica: &Replica, hub: &Hub) {
    let me = replica.address();
    let announce = Message::LeaderAnnounce {
        cluster_id: replica.db().cluster_id(),
        term: hub.term(),
        leader: me.to_string(),
    };
    let mut warned = false; // about a second leader of our term, once
    while !hub.is_deposed() {
        // Every member not following us, all at once: one that does not
        // answer must not delay the others' news of a new leader.
        let connected = hub.connected();
        let targets: Vec<String> = replica
            .members()
            .into_iter()
            .filter(|m| {
                parse_peer(m)
                    .is_ok_and(|a| !same_node(a, me) && !connected.iter().any(|c| same_node(*c, a)))
            })
            .collect();
        let answers = ask_each(replica.dialer(), &targets, &announce);
        for (member, answer) in answers.iter().take(targets.len()) {
            if let (Ok(_), Ok(address)) = (&answer, parse_peer(&member)) {
                replica.heard_from(address);
            }
            match answer {
                Ok(Message::LeaderAnnounce { term, leader, .. }) if term > hub.term() => {
                    let leader = parse_peer(&leader).ok().filter(|l| !same_node(*l, me));
                    let from = format!("member {member}");
                    if let Err(e) = replica.observe_term(term, leader, &from) {
                        log::error!("[failover] cannot adopt term {term}: {e}");
                    }
                    return;
                }
                Ok(Message::LeaderAnnounce { term, leader, .. })
                    if term == hub.term()
                        && !warned
                        && parse_peer(&leader).is_ok_and(|l| !same_node(l, me)) =>
                {
                    warned = true;
                    log::error!(
                        "[failover] {member} says {leader} also leads term {term}; two leaders \
                         claim one term (see the error on {leader})"
                    );
                }
                Ok(_) => {}
                Err(e) => log::debug!("[failover] announcing term {} to {member}: {e}", hub.term()),
            }
        }
        if hub.is_deposed() {
            return;
        }
        std::thread::sleep(Duration::from_millis(ANNOUNCE_INTERVAL_MS));
    }
}
