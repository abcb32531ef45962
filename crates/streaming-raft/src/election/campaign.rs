//! The campaign task: one per node, it sleeps until the [`Elector`] says a pre-vote is due,
//! asks the voters through a [`Ballot`], and starts openraft's election only with a quorum.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use openraft::ServerState;
use rand::{Rng, SeedableRng};
use tracing::{debug, info};

use super::{Elector, PreVoteReply, PreVoteRequest, terms_to_climb};
use crate::log::LogStore;
use crate::types::{NodeId, NodeInfo, Raft};

/// Carries pre-votes to other nodes.
pub trait Ballot: Send + Sync + 'static {
    /// `target`'s answer, or `None` when it gave none within `timeout`.
    fn pre_vote(
        &self,
        target: &NodeInfo,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Option<PreVoteReply>> + Send;
}

/// Whether the nodes in `granted` are a majority of every configuration of a (possibly
/// joint) membership.
pub fn is_quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    configs
        .iter()
        .all(|c| c.iter().filter(|id| granted.contains(id)).count() * 2 > c.len())
}

/// Runs until the RAFT node shuts down.
pub async fn run<B: Ballot>(
    elector: Arc<Elector>,
    raft: Raft,
    log: LogStore,
    ballot: B,
    me: NodeId,
) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let (min, max) = elector.timeout_range();
    loop {
        let jitter =
            Duration::from_millis(rng.random_range(min.as_millis()..=max.as_millis()) as u64);
        // Leader contact moves the due time on: sleep again until it stops moving.
        while let Some(due) = elector.due(jitter)
            && due > Instant::now()
        {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = elector.urgent() => {}
            }
        }
        let (state, term, membership) = {
            let m = raft.metrics().borrow().clone();
            (
                m.state,
                m.current_term,
                m.membership_config.membership().clone(),
            )
        };
        let now = Instant::now();
        elector.attempt(now);
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => continue,
            _ if !membership.voter_ids().any(|id| id == me) => continue,
            _ => {}
        }
        let configs = membership.get_joint_config().clone();
        let req = PreVoteRequest {
            term,
            last_log: log.with(|f| f.last()),
        };
        let mut granted = BTreeSet::from([me]);
        let mut terms = Vec::new();
        let mut asked = 0;
        if !is_quorum(&configs, &granted) {
            let timeout = min / 2;
            let mut asks: FuturesUnordered<_> = membership
                .nodes()
                .filter(|(id, _)| **id != me && configs.iter().any(|c| c.contains(id)))
                .map(|(id, node)| {
                    let (ballot, req) = (&ballot, &req);
                    async move { (*id, ballot.pre_vote(node, req, timeout).await) }
                })
                .collect();
            asked = asks.len();
            while let Some((id, reply)) = asks.next().await {
                if let Some(r) = reply {
                    terms.push(r.term);
                    if r.granted {
                        granted.insert(id);
                    }
                }
                if is_quorum(&configs, &granted) {
                    break;
                }
            }
        }
        if !is_quorum(&configs, &granted) {
            debug!(
                "RAFT node {}: pre-vote in term {term}: {} of {} other voters would vote for this node, not a quorum",
                elector.name(),
                granted.len() - 1,
                asked
            );
            continue;
        }
        let climb = terms_to_climb(term, terms);
        info!(
            "RAFT node {}: no leader heard from and a quorum would vote for this node (pre-vote): campaigning in term {}",
            elector.name(),
            term + climb
        );
        for _ in 0..climb {
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn quorum_of_every_configuration() {
        let three = vec![set(&[1, 2, 3])];
        assert!(!is_quorum(&three, &set(&[1])));
        assert!(is_quorum(&three, &set(&[1, 3])));
        assert!(is_quorum(&[set(&[1])], &set(&[1])));
        // Joint: old {1,2,3}, new {3,4,5}: a majority of each.
        let joint = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!is_quorum(&joint, &set(&[1, 2, 3])));
        assert!(is_quorum(&joint, &set(&[2, 3, 4])));
    }
}
