//! Subscriptions: one per `SUB` of a client, per subject a route announced interest in, or per
//! subscription of a local connection. Shared (`Arc`) by the sublist, the connection's sid map
//! and publishers' match caches; it counts its deliveries itself, under the subscriber's
//! outbound lock that every delivery takes anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::ClientShared;
use crate::auth::{Permissions, ResponsePermission};

/// A client subscription, shared by the sublist, its connection and match caches.
pub struct Subscription {
    pub client: Arc<ClientShared>,
    pub subject: Box<[u8]>,
    pub queue: Option<Box<[u8]>>,
    pub sid: Box<[u8]>,
    /// `sid` as a number, for local connections (which number their subscriptions).
    pub(crate) sid_num: u64,
    /// Auto-unsubscribe after this many deliveries; 0 = never.
    max: AtomicU64,
    /// For a route's queue interest: how many members the remote server has.
    pub(crate) weight: AtomicU32,
    delivered: AtomicU64,
    closed: AtomicBool,
    /// The subscriber's permissions, when they deny subjects this subscription may match.
    pub(crate) deliver_filter: Option<Arc<Permissions>>,
    /// Set when the subscriber may answer requests it receives (`allow_responses`).
    pub(crate) response_perm: Option<ResponsePermission>,
}

impl Subscription {
    pub(crate) fn new(
        client: Arc<ClientShared>,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        deliver_filter: Option<Arc<Permissions>>,
        response_perm: Option<ResponsePermission>,
    ) -> Subscription {
        Subscription {
            client,
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            sid_num: std::str::from_utf8(sid)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            max: AtomicU64::new(0),
            weight: AtomicU32::new(1),
            delivered: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            deliver_filter,
            response_perm,
        }
    }

    /// Counts one more delivery, or None past the auto-unsubscribe maximum. Called under the
    /// subscriber's outbound lock, which every delivery to it takes: a plain load and store,
    /// no atomic read-modify-write on the hot path.
    #[inline]
    pub(crate) fn count_delivery(&self) -> Option<u64> {
        let max = self.max.load(Ordering::Relaxed);
        let count = self.delivered.load(Ordering::Relaxed) + 1;
        if max > 0 && count > max {
            return None;
        }
        self.delivered.store(count, Ordering::Relaxed);
        Some(count)
    }

    /// Marks the subscription gone; returns whether it already was.
    pub(crate) fn mark_closed(&self) -> bool {
        self.closed.swap(true, Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sets the auto-unsubscribe maximum (`UNSUB sid max`).
    pub(crate) fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The auto-unsubscribe limit; 0 = none.
    #[inline]
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}
