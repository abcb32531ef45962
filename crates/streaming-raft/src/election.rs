//! Lets a follower whose log is ahead campaign at once when a candidate with a shorter log
//! asks for its vote after the leader went silent.
//!
//! When a leader dies under load its followers often hold logs of different lengths, and
//! the one that campaigns first may be the one that is behind. openraft 0.9 refuses that
//! candidate without moving to its term, so the follower that is ahead later campaigns in
//! the *same* term; votes of one term are ordered by node id, and when the follower ahead
//! has the smaller id the two refuse each other and the election waits one more election
//! timeout (3.2–3.5 s after a kill with the defaults, against the 3 s the issue asks;
//! `a_candidate_with_a_shorter_log_does_not_delay_the_election`). hashicorp/raft (the
//! reference) moves to the candidate's term when it refuses, so its own campaign comes one
//! term above.
//!
//! Here the refusing node, once it has not heard from a leader for openraft's leader lease,
//! starts as many campaigns (`Trigger::elect`, one term each) as it takes to get above the
//! candidate's term. Safety is RAFT's own (any node may campaign at any time); the candidate
//! that was refused grants the vote because the log asking is longer than its own.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most campaigns started at once: enough to pass a candidate one or two terms ahead.
const MAX_CAMPAIGNS: u64 = 3;

/// What a refused vote request carried and what this node answered.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<L> {
    pub candidate_term: u64,
    pub candidate_log: L,
    pub my_term: u64,
    pub my_log: L,
}

/// Per node: when a leader was last heard from and when a campaign was last forced.
pub struct ElectionAssist {
    name: String,
    lease: Duration,
    min_gap: Duration,
    state: Mutex<State>,
}

struct State {
    leader_contact: Instant,
    last_forced: Option<Instant>,
}

impl ElectionAssist {
    /// `lease`: openraft's leader lease (`election_timeout_max`), during which this node
    /// still refuses votes for its leader's sake; `min_gap`: the least time between two
    /// forced campaigns (`election_timeout_min`), so a stale node asking again and again
    /// does not start an election storm.
    pub fn new(name: &str, lease: Duration, min_gap: Duration, now: Instant) -> ElectionAssist {
        ElectionAssist {
            name: name.to_string(),
            lease,
            min_gap,
            state: Mutex::new(State {
                leader_contact: now,
                last_forced: None,
            }),
        }
    }

    /// The node's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A leader's append was accepted at `now`.
    pub fn leader_contact(&self, now: Instant) {
        self.state.lock().leader_contact = now;
    }

    /// How many campaigns to start after refusing a vote (0: none). Only a node that is not
    /// the leader, whose log is longer than the candidate's and whose leader lease has run
    /// out campaigns.
    pub fn campaigns_after<L: PartialOrd>(
        &self,
        refusal: &Refusal<L>,
        is_leader: bool,
        now: Instant,
    ) -> u64 {
        if is_leader || refusal.my_log <= refusal.candidate_log {
            return 0;
        }
        let mut st = self.state.lock();
        if now.saturating_duration_since(st.leader_contact) <= self.lease {
            return 0;
        }
        if st
            .last_forced
            .is_some_and(|t| now.saturating_duration_since(t) < self.min_gap)
        {
            return 0;
        }
        st.last_forced = Some(now);
        (refusal.candidate_term + 1)
            .saturating_sub(refusal.my_term)
            .clamp(1, MAX_CAMPAIGNS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1200);
    const GAP: Duration = Duration::from_millis(900);

    fn refusal(candidate_log: u64, my_log: u64) -> Refusal<Option<u64>> {
        Refusal {
            candidate_term: 5,
            candidate_log: Some(candidate_log),
            my_term: 4,
            my_log: Some(my_log),
        }
    }

    #[test]
    fn campaigns_above_the_candidates_term_only_when_ahead_and_leaderless() {
        let t0 = Instant::now();
        let a = ElectionAssist::new("n", LEASE, GAP, t0);
        let late = t0 + LEASE + Duration::from_millis(1);
        // Within the lease: the leader may be alive.
        assert_eq!(a.campaigns_after(&refusal(10, 12), false, t0 + LEASE), 0);
        // Not ahead of the candidate, or leader itself.
        assert_eq!(a.campaigns_after(&refusal(12, 12), false, late), 0);
        assert_eq!(a.campaigns_after(&refusal(12, 10), false, late), 0);
        assert_eq!(a.campaigns_after(&refusal(10, 12), true, late), 0);
        // Term 4 → 6, one above the candidate's 5.
        assert_eq!(a.campaigns_after(&refusal(10, 12), false, late), 2);
        // Not again within the gap, again after it.
        assert_eq!(
            a.campaigns_after(&refusal(10, 12), false, late + GAP / 2),
            0
        );
        assert_eq!(a.campaigns_after(&refusal(10, 12), false, late + GAP), 2);
    }

    #[test]
    fn leader_contact_restarts_the_lease_and_campaigns_are_bounded() {
        let t0 = Instant::now();
        let a = ElectionAssist::new("n", LEASE, GAP, t0);
        let t1 = t0 + Duration::from_secs(5);
        a.leader_contact(t1);
        assert_eq!(a.campaigns_after(&refusal(1, 2), false, t1 + LEASE), 0);
        let far = Refusal {
            candidate_term: 40,
            candidate_log: Some(1),
            my_term: 2,
            my_log: Some(2),
        };
        assert_eq!(
            a.campaigns_after(&far, false, t1 + 2 * LEASE),
            MAX_CAMPAIGNS
        );
        let behind_in_term = Refusal {
            candidate_term: 2,
            candidate_log: Some(1),
            my_term: 7,
            my_log: Some(2),
        };
        let a = ElectionAssist::new("n", LEASE, GAP, t0);
        assert_eq!(a.campaigns_after(&behind_in_term, false, t1), 1);
    }
}
