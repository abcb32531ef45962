//! What a check or a migration found: per channel the sequences and counts the reference
//! would serve, the subscriptions with their positions, and any damage and findings. Its
//! `Display` is the operator-facing text of a dry run.

use std::fmt;
use std::path::PathBuf;

use super::error::{Damage, Finding};
use super::source::Scan;
use crate::proto::ServerInfo;

/// The outcome of [`check`](super::check) or [`migrate`](super::migrate).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The reference store read.
    pub source: PathBuf,
    /// Where the migrated store was written (`None` for a check).
    pub destination: Option<PathBuf>,
    /// `None` if the reference store was never initialised.
    pub server_info: Option<ServerInfo>,
    /// IDs of the registered clients, sorted.
    pub clients: Vec<String>,
    /// By name.
    pub channels: Vec<ChannelReport>,
    /// Damage found (a check collects all of it; a migration stops at the first, as an
    /// error).
    pub damage: Vec<Damage>,
    /// Things handled as the reference handles them (rebuilt indexes, leftovers ignored).
    pub findings: Vec<Finding>,
}

/// One channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelReport {
    pub name: String,
    /// First sequence served after the limits (`last_seq + 1` when no message is left).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Messages carried over.
    pub msgs: u64,
    /// Their size as the reference accounts it (encoded message + 40 bytes each).
    pub bytes: u64,
    /// Messages still in the reference's files that its limits drop on recovery.
    pub dropped_by_limits: u64,
    /// By reference ID.
    pub subscriptions: Vec<SubReport>,
}

/// One subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubReport {
    /// Empty for a durable queue group whose members are all gone.
    pub client_id: String,
    pub durable_name: String,
    /// As stored: `durable:group` for a durable queue group.
    pub queue_group: String,
    pub is_durable: bool,
    /// A plain durable whose client closed it.
    pub is_closed: bool,
    pub inbox: String,
    pub ack_inbox: String,
    pub max_in_flight: i32,
    pub ack_wait_secs: i32,
    pub last_sent: u64,
    /// Sent and not acknowledged: redelivered first when the subscription resumes.
    pub pending: Vec<u64>,
}

impl SubReport {
    /// Every sequence up to this one is acknowledged.
    pub fn acked_through(&self) -> u64 {
        self.pending
            .first()
            .map_or(self.last_sent, |p| p.saturating_sub(1))
    }
}

impl Report {
    pub(crate) fn from_scan(scan: &Scan) -> Report {
        let mut clients: Vec<String> = scan.clients.iter().map(|c| c.id.clone()).collect();
        clients.sort();
        Report {
            source: scan.root.clone(),
            destination: None,
            server_info: scan.info.clone(),
            clients,
            channels: scan
                .channels
                .iter()
                .map(|c| ChannelReport {
                    name: c.name.clone(),
                    first_seq: c.kept.first,
                    last_seq: c.kept.last,
                    msgs: c.kept.msgs,
                    bytes: c.kept.bytes,
                    dropped_by_limits: c.kept.dropped,
                    subscriptions: c
                        .subs
                        .iter()
                        .map(|s| SubReport {
                            client_id: s.state.client_id.clone(),
                            durable_name: s.state.durable_name.clone(),
                            queue_group: s.state.q_group.clone(),
                            is_durable: s.state.is_durable,
                            is_closed: s.state.is_closed,
                            inbox: s.state.inbox.clone(),
                            ack_inbox: s.state.ack_inbox.clone(),
                            max_in_flight: s.state.max_in_flight,
                            ack_wait_secs: s.state.ack_wait_in_secs,
                            last_sent: s.state.last_sent,
                            pending: s.pending.iter().copied().collect(),
                        })
                        .collect(),
                })
                .collect(),
            damage: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// The cluster ID the reference store was written with.
    pub fn cluster_id(&self) -> Option<&str> {
        self.server_info.as_ref().map(|i| i.cluster_id.as_str())
    }

    /// Messages carried over, all channels.
    pub fn messages(&self) -> u64 {
        self.channels.iter().map(|c| c.msgs).sum()
    }

    /// Subscriptions carried over, all channels.
    pub fn subscriptions(&self) -> usize {
        self.channels.iter().map(|c| c.subscriptions.len()).sum()
    }

    /// Durable subscriptions (plain and queue groups) carried over.
    pub fn durables(&self) -> usize {
        self.channels
            .iter()
            .flat_map(|c| &c.subscriptions)
            .filter(|s| s.is_durable)
            .count()
    }

    /// No damage found.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// One line: what is (or would be) migrated.
    pub fn summary(&self) -> String {
        format!(
            "{} channels, {} messages, {} clients, {} subscriptions ({} durable)",
            self.channels.len(),
            self.messages(),
            self.clients.len(),
            self.subscriptions(),
            self.durables()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nats-streaming-server file store {}",
            self.source.display()
        )?;
        match self.cluster_id() {
            Some(id) => writeln!(f, "  cluster id: {id}")?,
            None => writeln!(f, "  never initialised (no server information)")?,
        }
        writeln!(f, "  {}", self.summary())?;
        if let Some(d) = &self.destination {
            writeln!(f, "  migrated to {}", d.display())?;
        }
        for c in &self.channels {
            write!(
                f,
                "  channel {}: first {} last {}, {} messages ({} bytes)",
                c.name, c.first_seq, c.last_seq, c.msgs, c.bytes
            )?;
            if c.dropped_by_limits > 0 {
                write!(f, ", {} older ones dropped by limits", c.dropped_by_limits)?;
            }
            writeln!(f)?;
            for s in &c.subscriptions {
                let kind = match (s.is_durable, s.queue_group.is_empty()) {
                    (true, true) => format!("durable {:?}", s.durable_name),
                    (true, false) => format!("durable queue {:?}", s.queue_group),
                    (false, true) => "subscription".to_owned(),
                    (false, false) => format!("queue {:?}", s.queue_group),
                };
                writeln!(
                    f,
                    "    {kind} of client {:?}: last sent {}, acked through {}, pending {:?}{}",
                    s.client_id,
                    s.last_sent,
                    s.acked_through(),
                    s.pending,
                    if s.is_closed { " (closed)" } else { "" }
                )?;
            }
        }
        if !self.clients.is_empty() {
            writeln!(f, "  clients: {}", self.clients.join(", "))?;
        }
        for d in &self.damage {
            writeln!(f, "  DAMAGE: {d}")?;
        }
        for x in &self.findings {
            writeln!(f, "  note: {x}")?;
        }
        if self.damage.is_empty() {
            write!(f, "  no damage found")
        } else {
            write!(f, "  {} damaged places found", self.damage.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_through_and_summary() {
        let s = SubReport {
            last_sent: 43,
            pending: vec![41, 42, 43],
            is_durable: true,
            ..Default::default()
        };
        assert_eq!(s.acked_through(), 40);
        let none = SubReport {
            last_sent: 7,
            ..Default::default()
        };
        assert_eq!(none.acked_through(), 7);
        let r = Report {
            clients: vec!["a".into()],
            channels: vec![ChannelReport {
                name: "foo".into(),
                msgs: 3,
                subscriptions: vec![s, none],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            r.summary(),
            "1 channels, 3 messages, 1 clients, 2 subscriptions (1 durable)"
        );
        let text = r.to_string();
        assert!(
            text.contains("acked through 40, pending [41, 42, 43]"),
            "{text}"
        );
        assert!(text.ends_with("no damage found"), "{text}");
    }
}
