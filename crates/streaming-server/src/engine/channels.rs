//! Channels: created on first use, age expiry timers, deletion after `max_inactivity`.

use std::sync::Arc;
use std::time::Instant;

use rnats_streaming::store::{Channel, now_nanos};
use tracing::{debug, error, info, warn};

use super::state::ChannelState;
use super::{Engine, ProtocolError, Timer, instant_from_nanos};

impl Engine {
    /// Whether this server serves `channel`: always, unless partitioning limits it to the
    /// channels of `store_limits.channels`.
    pub(super) fn serves(&self, channel: &str) -> bool {
        !self.opts.partitioning
            || self
                .opts
                .limits
                .per_channel
                .keys()
                .any(|p| crate::partition::overlap(p, channel))
    }

    pub(super) fn arm_channel_timers(&mut self, name: &str) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let limits = *cs.ch.limits();
        if !limits.max_age.is_zero() && cs.expire_at.is_none() {
            match cs.ch.msgs().expire(now_nanos()) {
                Ok(Some(next)) => {
                    let at = instant_from_nanos(next, now_nanos(), Instant::now());
                    cs.expire_at = Some(at);
                    self.arm(at, Timer::Expire(name.to_string()));
                }
                Ok(None) => {}
                Err(e) => warn!("STREAM: Unable to expire messages of {name:?}: {e}"),
            }
        }
        self.check_inactivity(name);
    }

    pub(super) fn check_inactivity(&mut self, name: &str) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let mi = cs.ch.limits().max_inactivity;
        if mi.is_zero() || cs.active_subs() > 0 || cs.inactivity_at.is_some() {
            return;
        }
        let at = cs.last_activity + mi;
        cs.inactivity_at = Some(at);
        self.arm(at, Timer::Inactivity(name.to_string()));
    }

    /// The channel, created (in the store and here) on first use.
    pub(super) fn lookup_or_create(&mut self, name: &str) -> Result<Arc<Channel>, ProtocolError> {
        if let Some(cs) = self.channels.get(name) {
            return Ok(cs.ch.clone());
        }
        let (ch, created) = self.store.lookup_or_create_channel(name)?;
        if created {
            debug!("STREAM: Channel {name:?} has been created");
        }
        self.channels
            .insert(name.to_string(), ChannelState::new(ch.clone()));
        self.check_inactivity(name);
        Ok(ch)
    }

    pub(super) fn on_expire_timer(&mut self, name: &str, at: Instant) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        if cs.expire_at != Some(at) {
            return;
        }
        cs.expire_at = None;
        self.arm_channel_timers(name);
    }

    pub(super) fn on_inactivity_timer(&mut self, name: &str, at: Instant) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        if cs.inactivity_at != Some(at) {
            return;
        }
        cs.inactivity_at = None;
        if cs.active_subs() > 0 {
            return;
        }
        let mi = cs.ch.limits().max_inactivity;
        if cs.last_activity + mi > Instant::now() {
            self.check_inactivity(name);
            return;
        }
        // Delete the channel with its messages and offline durables.
        let Some(cs) = self.channels.remove(name) else {
            return;
        };
        for s in cs.subs.values() {
            self.acks.remove(s.st.ack_inbox.as_bytes());
        }
        self.dirty_msgs.remove(name);
        self.dirty_subs.remove(name);
        self.lazy_subs.remove(name);
        self.to_deliver.remove(name);
        match self.sink.channel_delete(&self.store, name) {
            Ok(_) => info!("STREAM: Channel {name:?} has been deleted (inactivity)"),
            Err(e) => error!("STREAM: Unable to delete channel {name:?}: {e}"),
        }
    }
}
