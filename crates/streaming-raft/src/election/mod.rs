//! When a node campaigns: decided here, with a pre-vote; how votes are counted and terms
//! kept: openraft's.
//!
//! openraft 0.9's own election timer is switched off (`enable_elect: false`) for two of its
//! behaviours that cost seconds of service here:
//!
//! * **A node that wakes up deposes a healthy leader.** A follower paused (SIGSTOP, a VM
//!   stall) or cut off for longer than its election timeout campaigns in a new term the
//!   moment it runs again; the others refuse it, but the leader sees the higher term in the
//!   answers to its appends and steps down, and with the candidate behind, nobody wins until
//!   a retry 3.5 s later (seen in the cluster crash harness, a "PauseFollower" round). The
//!   reference (hashicorp/raft 1.6) behaves the same.
//! * **A candidate that is behind delays the election.** When a leader dies under load its
//!   followers often hold logs of different lengths, and the first to campaign may be the one
//!   behind. openraft refuses it without moving to its term, so the follower ahead campaigns
//!   later in the *same* term, where the larger node id wins the tie: when the follower ahead
//!   has the smaller id, the election waits one more election timeout (3.2–3.5 s after a
//!   kill with the defaults, `a_candidate_with_a_shorter_log_does_not_delay_the_election`).
//!
//! So each node runs its own timer ([`campaign::run`]): a follower that has not heard from a
//! leader for openraft's leader lease plus a random election timeout first asks the voters
//! whether they *would* vote for it (a pre-vote, Raft thesis §9.6: no state changes, no
//! term moves). A voter says yes only when it has not heard from a leader within the lease
//! either, is not a leader with a live quorum itself, and holds no longer log. Only with a
//! quorum of yeses does the node call openraft's election (`Trigger::elect`), once per term
//! it must climb to get above every term the voters reported. A voter that refuses because
//! its own log is longer, while it has no leader either, starts its own pre-vote at once.
//! Safety stays openraft's (a node may campaign at any time); only the timing is ours.

pub mod campaign;

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::types::LogId;

/// Most terms climbed in one campaign: a voter a few failed campaigns ahead is passed in one
/// go, a corrupt term does not start thousands of elections.
pub const MAX_TERMS_CLIMBED: u64 = 3;

/// "Would you vote for me?" (no state changes on either side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The asking node's current term (it would campaign above it).
    pub term: u64,
    pub last_log: Option<LogId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub granted: bool,
    /// The answering node's current term: the candidate campaigns above the highest.
    pub term: u64,
}

/// What a node knows of itself when it answers a pre-vote.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// A leader that heard from a quorum within the lease.
    pub leading: bool,
    pub term: u64,
    pub last_log: Option<LogId>,
}

/// One node's election clock, shared by its RPC handler (which sees leader contact and
/// pre-votes) and its campaign task.
pub struct Elector {
    name: String,
    lease: Duration,
    timeout: (Duration, Duration),
    state: Mutex<State>,
    /// Wakes the campaign task for an immediate pre-vote.
    urgent: Notify,
}

struct State {
    /// Last accepted append of a leader, or vote this node granted (`None`: none since a
    /// start without RAFT state).
    contact: Option<Instant>,
    /// Start of this node's last pre-vote.
    last_attempt: Option<Instant>,
    /// An immediate pre-vote was asked for and not yet run.
    urgent: bool,
}

impl Elector {
    /// `lease`: openraft's leader lease (its `election_timeout_max`); `timeout`: the range of
    /// the random election timeout. A node restarting with RAFT state (`has_state`) counts its
    /// start as leader contact, so it neither campaigns nor grants pre-votes before its
    /// leader had a lease's time to reach it; a brand-new node has no leader to wait for.
    pub fn new(
        name: &str,
        lease: Duration,
        timeout: (Duration, Duration),
        has_state: bool,
        now: Instant,
    ) -> Elector {
        Elector {
            name: name.to_string(),
            lease,
            timeout,
            state: Mutex::new(State {
                contact: has_state.then_some(now),
                last_attempt: None,
                urgent: false,
            }),
            urgent: Notify::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A leader's append was accepted, or this node granted a vote.
    pub fn contact(&self, now: Instant) {
        self.state.lock().contact = Some(now);
    }

    fn leaderless(&self, st: &State, now: Instant) -> bool {
        st.contact
            .is_none_or(|t| now.saturating_duration_since(t) > self.lease)
    }

    /// The answer to a pre-vote. A refusal for a shorter log from a node that has no leader
    /// either asks for this node's own pre-vote at once.
    pub fn answer(&self, req: &PreVoteRequest, local: &Local, now: Instant) -> PreVoteReply {
        let refuse = PreVoteReply {
            granted: false,
            term: local.term,
        };
        if local.leading {
            return refuse;
        }
        let mut st = self.state.lock();
        if !self.leaderless(&st, now) {
            return refuse;
        }
        if req.last_log < local.last_log {
            self.set_urgent(&mut st);
            return refuse;
        }
        PreVoteReply {
            granted: true,
            term: local.term,
        }
    }

    /// A real vote this node refused, for a candidate whose log is shorter: when leaderless,
    /// run this node's own pre-vote at once.
    pub fn refused_shorter_log(&self, now: Instant) {
        let mut st = self.state.lock();
        if self.leaderless(&st, now) {
            self.set_urgent(&mut st);
        }
    }

    fn set_urgent(&self, st: &mut State) {
        if !st.urgent {
            st.urgent = true;
            self.urgent.notify_one();
        }
    }

    /// When the next pre-vote is due, given this round's random election timeout `jitter`:
    /// a lease plus `jitter` after the last leader contact, and `jitter` after the last
    /// attempt; at once when urgent, but never twice within the shortest election timeout.
    pub fn due(&self, jitter: Duration) -> Option<Instant> {
        let st = self.state.lock();
        let after_attempt = st.last_attempt.map(|t| t + self.timeout.0);
        if st.urgent {
            return after_attempt;
        }
        let after_contact = st.contact.map(|t| t + self.lease + jitter);
        let after_retry = st.last_attempt.map(|t| t + jitter);
        after_contact.max(after_retry)
    }

    /// A pre-vote starts now.
    pub fn attempt(&self, now: Instant) {
        let mut st = self.state.lock();
        st.last_attempt = Some(now);
        st.urgent = false;
    }

    /// Waits for an urgent request (see [`Elector::answer`]).
    pub async fn urgent(&self) {
        self.urgent.notified().await
    }

    pub fn timeout_range(&self) -> (Duration, Duration) {
        self.timeout
    }
}

/// How many elections to start after a quorum granted: one per term to climb above the
/// highest term seen (ours included), bounded.
pub fn terms_to_climb(my_term: u64, replies: impl IntoIterator<Item = u64>) -> u64 {
    let highest = replies.into_iter().fold(my_term, u64::max);
    (highest + 1 - my_term).clamp(1, MAX_TERMS_CLIMBED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    const LEASE: Duration = Duration::from_millis(1200);
    const MIN: Duration = Duration::from_millis(900);
    const MAX: Duration = Duration::from_millis(1200);

    fn log(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(3, 1), index))
    }

    fn elector(has_state: bool, t0: Instant) -> Elector {
        Elector::new("n", LEASE, (MIN, MAX), has_state, t0)
    }

    fn ask(index: u64) -> PreVoteRequest {
        PreVoteRequest {
            term: 3,
            last_log: log(index),
        }
    }

    fn local(leading: bool, index: u64) -> Local {
        Local {
            leading,
            term: 4,
            last_log: log(index),
        }
    }

    #[test]
    fn grants_only_without_leader_and_with_no_longer_log() {
        let t0 = Instant::now();
        let e = elector(true, t0);
        // A restarted node waits a lease for its leader.
        assert!(!e.answer(&ask(10), &local(false, 10), t0 + LEASE).granted);
        let late = t0 + LEASE + Duration::from_millis(1);
        let yes = e.answer(&ask(10), &local(false, 10), late);
        assert_eq!(
            yes,
            PreVoteReply {
                granted: true,
                term: 4
            }
        );
        // A live leader, or a follower that just heard from one, refuses.
        assert!(!e.answer(&ask(10), &local(true, 10), late).granted);
        e.contact(late);
        assert!(!e.answer(&ask(10), &local(false, 10), late + LEASE).granted);
        // A brand-new node has no leader to wait for.
        let fresh = elector(false, t0);
        assert!(fresh.answer(&ask(0), &local(false, 0), t0).granted);
    }

    #[test]
    fn a_longer_log_refuses_and_asks_for_its_own_pre_vote_at_once() {
        let t0 = Instant::now();
        let e = elector(true, t0);
        let late = t0 + LEASE + Duration::from_millis(1);
        assert_eq!(e.due(MIN), Some(t0 + LEASE + MIN));
        assert!(!e.answer(&ask(9), &local(false, 10), late).granted);
        // Due at once (no attempt yet).
        assert_eq!(e.due(MIN), None);
        e.attempt(late);
        // Back to the normal clock: a jitter after the attempt.
        assert_eq!(e.due(MAX), Some(late + MAX));
        // Urgent again, but not before the shortest timeout since the last attempt.
        e.refused_shorter_log(late);
        assert_eq!(e.due(MAX), Some(late + MIN));
        // Within the lease, a refusal asks for nothing.
        let e = elector(true, t0);
        e.refused_shorter_log(t0 + LEASE);
        assert!(!e.answer(&ask(9), &local(false, 10), t0 + LEASE).granted);
        assert_eq!(e.due(MIN), Some(t0 + LEASE + MIN));
    }

    #[test]
    fn a_fresh_node_is_due_only_after_its_first_attempt_or_contact() {
        let t0 = Instant::now();
        let e = elector(false, t0);
        assert_eq!(e.due(MIN), None, "no contact, no attempt: due now");
        e.contact(t0);
        assert_eq!(e.due(MIN), Some(t0 + LEASE + MIN));
    }

    #[test]
    fn climbs_above_the_highest_term_seen_within_bounds() {
        assert_eq!(terms_to_climb(4, []), 1);
        assert_eq!(terms_to_climb(4, [2, 4]), 1);
        assert_eq!(terms_to_climb(4, [5]), 2);
        assert_eq!(terms_to_climb(4, [60]), MAX_TERMS_CLIMBED);
    }
}
