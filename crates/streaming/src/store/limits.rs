//! Store limits: global values, per-channel overrides with wildcard inheritance.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{channel_matches, is_valid_channel_name, is_valid_channel_pattern};

/// Limits of one channel, fully resolved. `0` (or `Duration::ZERO`) means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    pub max_msgs: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    /// Subscriptions per channel, offline durables and every queue member included.
    pub max_subs: u64,
    /// Delete the channel after this long without active subscription nor new message (the
    /// server enforces it; the store only carries the value).
    pub max_inactivity: Duration,
}

impl Default for ChannelLimits {
    /// The reference server's defaults: 1,000,000 messages, 1,024,000,000 bytes, 1000
    /// subscriptions, no age or inactivity limit.
    fn default() -> Self {
        ChannelLimits {
            max_msgs: 1_000_000,
            max_bytes: 1_000_000 * 1024,
            max_age: Duration::ZERO,
            max_subs: 1000,
            max_inactivity: Duration::ZERO,
        }
    }
}

impl ChannelLimits {
    /// No limit at all.
    pub const UNLIMITED: ChannelLimits = ChannelLimits {
        max_msgs: 0,
        max_bytes: 0,
        max_age: Duration::ZERO,
        max_subs: 0,
        max_inactivity: Duration::ZERO,
    };

    fn apply(&mut self, o: &ChannelLimitsOverride) {
        if let Some(v) = o.max_msgs {
            self.max_msgs = v;
        }
        if let Some(v) = o.max_bytes {
            self.max_bytes = v;
        }
        if let Some(v) = o.max_age {
            self.max_age = v;
        }
        if let Some(v) = o.max_subs {
            self.max_subs = v;
        }
        if let Some(v) = o.max_inactivity {
            self.max_inactivity = v;
        }
    }
}

/// Per-channel override: `None` inherits, `Some(0)` means unlimited for that channel (a
/// configured `0`, stored as −1 by the reference server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelLimitsOverride {
    pub max_msgs: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    pub max_subs: Option<u64>,
    pub max_inactivity: Option<Duration>,
}

/// Limits of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// Channels in the store; `0` is unlimited. Default 100.
    pub max_channels: u64,
    /// Global per-channel limits.
    pub channel: ChannelLimits,
    /// Overrides keyed by channel name or wildcard pattern (`foo.*`, `foo.>`).
    pub per_channel: BTreeMap<String, ChannelLimitsOverride>,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_channels: 100,
            channel: ChannelLimits::default(),
            per_channel: BTreeMap::new(),
        }
    }
}

/// Invalid limits configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("invalid channel name {0:?}")]
    InvalidChannelName(String),
    #[error("too many channels defined ({defined}). The max channels limit is set to {max}")]
    TooManyChannelsDefined { defined: u64, max: u64 },
}

impl StoreLimits {
    /// No limit at all.
    pub fn unlimited() -> Self {
        StoreLimits {
            max_channels: 0,
            channel: ChannelLimits::UNLIMITED,
            per_channel: BTreeMap::new(),
        }
    }

    /// Checks the override keys, and that literal overrides fit in `max_channels`.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let mut literals = 0u64;
        for name in self.per_channel.keys() {
            if !is_valid_channel_pattern(name) {
                return Err(LimitsError::InvalidChannelName(name.clone()));
            }
            if is_valid_channel_name(name) {
                literals += 1;
                if self.max_channels > 0 && literals > self.max_channels {
                    return Err(LimitsError::TooManyChannelsDefined {
                        defined: literals,
                        max: self.max_channels,
                    });
                }
            }
        }
        Ok(())
    }

    /// The limits of channel `name`: the global limits, then every matching override from
    /// the widest to the narrowest (fewest literal tokens first, `>` before `*`, the literal
    /// name last), each replacing the values it sets. With `foo.>`, `foo.bar.>` and
    /// `foo.bar.baz` configured, `foo.bar.baz` inherits through all three.
    pub fn resolve(&self, name: &str) -> ChannelLimits {
        let mut matches: Vec<(&String, &ChannelLimitsOverride)> = self
            .per_channel
            .iter()
            .filter(|(p, _)| channel_matches(p, name))
            .collect();
        matches.sort_by_key(|(p, _)| (specificity(p), p.as_str()));
        let mut out = self.channel;
        for (_, o) in matches {
            out.apply(o);
        }
        out
    }
}

/// Sort key from widest to narrowest: literal tokens, then "no `>`", then fewer `*`.
fn specificity(pattern: &str) -> (usize, bool, usize) {
    let literal = pattern
        .split('.')
        .filter(|t| *t != "*" && *t != ">")
        .count();
    let fwc = pattern.ends_with('>');
    let pwc = pattern.split('.').filter(|t| *t == "*").count();
    (literal, !fwc, usize::MAX - pwc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(max_msgs: Option<u64>, max_bytes: Option<u64>) -> ChannelLimitsOverride {
        ChannelLimitsOverride {
            max_msgs,
            max_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn inheritance_from_widest_to_literal() {
        let mut l = StoreLimits::default();
        l.per_channel
            .insert("foo.>".into(), o(Some(10), Some(1000)));
        l.per_channel.insert("foo.bar.>".into(), o(Some(5), None));
        l.per_channel.insert("foo.bar.baz".into(), o(None, Some(0)));
        l.validate().unwrap();
        let r = l.resolve("foo.bar.baz");
        assert_eq!((r.max_msgs, r.max_bytes, r.max_subs), (5, 0, 1000));
        let r = l.resolve("foo.bar.qux");
        assert_eq!((r.max_msgs, r.max_bytes), (5, 1000));
        let r = l.resolve("foo.x");
        assert_eq!((r.max_msgs, r.max_bytes), (10, 1000));
        assert_eq!(l.resolve("other"), ChannelLimits::default());
    }

    #[test]
    fn validation() {
        let mut l = StoreLimits {
            max_channels: 1,
            ..Default::default()
        };
        l.per_channel.insert("a".into(), o(Some(1), None));
        l.per_channel.insert("b.>".into(), o(Some(1), None));
        l.validate().unwrap();
        l.per_channel.insert("c".into(), o(Some(1), None));
        assert_eq!(
            l.validate().unwrap_err().to_string(),
            "too many channels defined (2). The max channels limit is set to 1"
        );
        let mut l = StoreLimits::default();
        l.per_channel.insert("a..b".into(), o(None, None));
        assert!(matches!(
            l.validate(),
            Err(LimitsError::InvalidChannelName(_))
        ));
    }
}
