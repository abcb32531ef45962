//! Connection options ([`Options`]) and subscription options ([`SubscriptionOptions`],
//! [`StartPosition`]). Defaults are those of the official Go client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rnats_client::{Client, ConnectOptions};
use rnats_streaming::proto::{self, SubscriptionRequest};

use crate::error::Error;
use crate::ping::encode_ping_interval;

/// Default core NATS URL when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default discovery prefix: connect requests go to `<prefix>.<cluster id>`.
pub const DEFAULT_DISCOVER_PREFIX: &str = "_STAN.discover";
/// Prefix of the publish-ack inbox (`_STAN.acks.<nuid>`).
pub const DEFAULT_ACK_PREFIX: &str = "_STAN.acks";
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(2);
pub const DEFAULT_PUB_ACK_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_PUB_ACKS_INFLIGHT: usize = 16384;
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_PING_MAX_OUT: u32 = 88;
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_IN_FLIGHT: i32 = 1024;

/// Called once when the streaming connection is lost for good (PINGs unanswered, or the
/// server says the connection was replaced); not called on [`close`](crate::StanClient::close).
pub type ConnectionLostHandler = Arc<dyn Fn(Error) + Send + Sync>;

/// How to reach the streaming server and how the connection behaves.
#[derive(Clone)]
pub struct Options {
    pub(crate) nats_url: String,
    pub(crate) nats_client: Option<Client>,
    pub(crate) nats_options: Option<ConnectOptions>,
    pub(crate) connect_timeout: Duration,
    pub(crate) pub_ack_wait: Duration,
    pub(crate) discover_prefix: String,
    pub(crate) max_pub_acks_inflight: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_max_out: u32,
    pub(crate) connection_lost: Option<ConnectionLostHandler>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nats_url: DEFAULT_NATS_URL.to_string(),
            nats_client: None,
            nats_options: None,
            connect_timeout: DEFAULT_CONNECT_WAIT,
            pub_ack_wait: DEFAULT_PUB_ACK_WAIT,
            discover_prefix: DEFAULT_DISCOVER_PREFIX.to_string(),
            max_pub_acks_inflight: DEFAULT_MAX_PUB_ACKS_INFLIGHT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_max_out: DEFAULT_PING_MAX_OUT,
            connection_lost: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("nats_url", &self.nats_url)
            .field("nats_client", &self.nats_client.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("pub_ack_wait", &self.pub_ack_wait)
            .field("discover_prefix", &self.discover_prefix)
            .field("max_pub_acks_inflight", &self.max_pub_acks_inflight)
            .field("ping_interval", &self.ping_interval)
            .field("ping_max_out", &self.ping_max_out)
            .finish_non_exhaustive()
    }
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// Core NATS server(s) to connect to (comma-separated URLs), when no
    /// [`nats_client`](Self::nats_client) is given. The streaming client then owns that
    /// connection and closes it with itself.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = url.into();
        self
    }

    /// Options for the core NATS connection made from [`nats_url`](Self::nats_url). Default:
    /// named after the client ID, reconnecting forever, no reconnect buffer (so that a publish
    /// that reports an error is not sent later behind the caller's back).
    pub fn nats_options(mut self, opts: ConnectOptions) -> Self {
        self.nats_options = Some(opts);
        self
    }

    /// Runs over an existing core NATS connection, which stays open after
    /// [`close`](crate::StanClient::close).
    pub fn nats_client(mut self, client: Client) -> Self {
        self.nats_client = Some(client);
        self
    }

    /// How long to wait for the answers to connect, subscribe, unsubscribe and close requests
    /// (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a publish waits for its `PubAck` (default 30 s).
    pub fn pub_ack_wait(mut self, d: Duration) -> Self {
        self.pub_ack_wait = d;
        self
    }

    /// Subject prefix of connect requests (default `_STAN.discover`).
    pub fn discover_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.discover_prefix = prefix.into();
        self
    }

    /// How many publishes may wait for their `PubAck` at once (default 16384); more wait for
    /// a slot.
    pub fn max_pub_acks_inflight(mut self, n: usize) -> Self {
        self.max_pub_acks_inflight = n;
        self
    }

    /// Client PINGs: one every `interval` (default 5 s); the connection is lost when more
    /// than `max_out` (default 88) are unanswered. Whole seconds go on the wire as seconds;
    /// other intervals as negative milliseconds, which only test servers understand.
    pub fn pings(mut self, interval: Duration, max_out: u32) -> Self {
        self.ping_interval = interval;
        self.ping_max_out = max_out;
        self
    }

    /// Called when the connection is lost for good (not on `close`).
    pub fn connection_lost_handler(mut self, f: impl Fn(Error) + Send + Sync + 'static) -> Self {
        self.connection_lost = Some(Arc::new(f));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.ping_interval.is_zero() {
            return Err(Error::InvalidOptions("ping interval must be > 0".into()));
        }
        if self.ping_max_out < 1 {
            return Err(Error::InvalidOptions("ping max out must be >= 1".into()));
        }
        if self.max_pub_acks_inflight < 1 {
            return Err(Error::InvalidOptions(
                "max pub acks in flight must be >= 1".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn wire_ping_interval(&self) -> i32 {
        encode_ping_interval(self.ping_interval)
    }

    pub(crate) fn wire_ping_max_out(&self) -> i32 {
        self.ping_max_out.min(i32::MAX as u32) as i32
    }
}

/// Where a new subscription starts. Ignored by the server when a durable subscription resumes
/// or a member joins an existing queue group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// Only messages published after the subscription is created (the default).
    #[default]
    NewOnly,
    /// The last message stored in the channel, then new ones.
    LastReceived,
    /// Messages stored at most this long before the subscription request reaches the server.
    TimeDelta(Duration),
    /// Messages stored at or after this time (sent as a delta from now).
    StartTime(SystemTime),
    /// From this sequence (or the first available one if it is older).
    Sequence(u64),
    /// Every message the channel still has.
    AllAvailable,
}

/// Options of one subscription. Defaults: new only, auto acks, ack wait 30 s, max in flight
/// 1024, not durable, no queue group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub(crate) start: StartPosition,
    pub(crate) durable_name: Option<String>,
    pub(crate) queue_group: Option<String>,
    pub(crate) manual_acks: bool,
    pub(crate) ack_wait: Duration,
    pub(crate) max_in_flight: i32,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            start: StartPosition::NewOnly,
            durable_name: None,
            queue_group: None,
            manual_acks: false,
            ack_wait: DEFAULT_ACK_WAIT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl SubscriptionOptions {
    pub fn new() -> SubscriptionOptions {
        SubscriptionOptions::default()
    }

    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    pub fn start_with_last_received(self) -> Self {
        self.start(StartPosition::LastReceived)
    }

    pub fn deliver_all_available(self) -> Self {
        self.start(StartPosition::AllAvailable)
    }

    pub fn start_at_sequence(self, seq: u64) -> Self {
        self.start(StartPosition::Sequence(seq))
    }

    pub fn start_at_time_delta(self, ago: Duration) -> Self {
        self.start(StartPosition::TimeDelta(ago))
    }

    pub fn start_at_time(self, t: SystemTime) -> Self {
        self.start(StartPosition::StartTime(t))
    }

    /// A durable subscription: the server keeps its position across
    /// [`close`](crate::Subscription::close) and reconnects of the same client ID, until
    /// [`unsubscribe`](crate::Subscription::unsubscribe).
    pub fn durable_name(mut self, name: impl Into<String>) -> Self {
        self.durable_name = Some(name.into());
        self
    }

    /// Join this queue group: each message goes to one member. With a durable name, a durable
    /// queue group (survives all members leaving by close).
    pub fn queue_group(mut self, group: impl Into<String>) -> Self {
        self.queue_group = Some(group.into());
        self
    }

    /// The application acks each message with [`Msg::ack`](crate::Msg::ack); otherwise each
    /// message is acked when it is taken from the subscription.
    pub fn manual_acks(mut self) -> Self {
        self.manual_acks = true;
        self
    }

    /// How long the server waits for an ack before redelivering (whole seconds on the wire;
    /// less than 1 s is refused by the server, as with the official clients).
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// How many unacked messages the server sends before it waits for acks.
    pub fn max_in_flight(mut self, n: i32) -> Self {
        self.max_in_flight = n;
        self
    }

    /// The `SubscriptionRequest` for these options; `now` is the client's clock for
    /// [`StartPosition::StartTime`].
    pub(crate) fn to_request(
        &self,
        client_id: &str,
        channel: &str,
        inbox: &str,
        now: SystemTime,
    ) -> SubscriptionRequest {
        let (pos, start_sequence, start_time_delta) = match self.start {
            StartPosition::NewOnly => (proto::StartPosition::NewOnly, 0, 0),
            StartPosition::LastReceived => (proto::StartPosition::LastReceived, 0, 0),
            StartPosition::TimeDelta(d) => {
                (proto::StartPosition::TimeDeltaStart, 0, saturating_nanos(d))
            }
            StartPosition::StartTime(t) => {
                let delta = match now.duration_since(t) {
                    Ok(ago) => saturating_nanos(ago),
                    // In the future: a negative delta (the server starts later than now).
                    Err(e) => -saturating_nanos(e.duration()),
                };
                (proto::StartPosition::TimeDeltaStart, 0, delta)
            }
            StartPosition::Sequence(s) => (proto::StartPosition::SequenceStart, s, 0),
            StartPosition::AllAvailable => (proto::StartPosition::First, 0, 0),
        };
        SubscriptionRequest {
            client_id: client_id.to_string(),
            subject: channel.to_string(),
            q_group: self.queue_group.clone().unwrap_or_default(),
            inbox: inbox.to_string(),
            max_in_flight: self.max_in_flight,
            ack_wait_in_secs: self.ack_wait.as_secs().min(i32::MAX as u64) as i32,
            durable_name: self.durable_name.clone().unwrap_or_default(),
            start_position: pos as i32,
            start_sequence,
            start_time_delta,
        }
    }
}

fn saturating_nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(o: &SubscriptionOptions, now: SystemTime) -> SubscriptionRequest {
        o.to_request("me", "orders", "_INBOX.x", now)
    }

    #[test]
    fn defaults_are_the_go_clients() {
        let r = req(&SubscriptionOptions::new(), SystemTime::now());
        assert_eq!(r.client_id, "me");
        assert_eq!(r.subject, "orders");
        assert_eq!(r.inbox, "_INBOX.x");
        assert_eq!(r.max_in_flight, 1024);
        assert_eq!(r.ack_wait_in_secs, 30);
        assert_eq!(r.start_position(), proto::StartPosition::NewOnly);
        assert_eq!((r.q_group.as_str(), r.durable_name.as_str()), ("", ""));
        let o = Options::new();
        assert_eq!(o.wire_ping_interval(), 5);
        assert_eq!(o.wire_ping_max_out(), 88);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn every_start_position() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let cases = [
            (StartPosition::NewOnly, proto::StartPosition::NewOnly, 0, 0),
            (
                StartPosition::LastReceived,
                proto::StartPosition::LastReceived,
                0,
                0,
            ),
            (
                StartPosition::TimeDelta(Duration::from_millis(1500)),
                proto::StartPosition::TimeDeltaStart,
                0,
                1_500_000_000,
            ),
            (
                StartPosition::StartTime(now - Duration::from_secs(2)),
                proto::StartPosition::TimeDeltaStart,
                0,
                2_000_000_000,
            ),
            (
                StartPosition::StartTime(now + Duration::from_secs(1)),
                proto::StartPosition::TimeDeltaStart,
                0,
                -1_000_000_000,
            ),
            (
                StartPosition::Sequence(42),
                proto::StartPosition::SequenceStart,
                42,
                0,
            ),
            (
                StartPosition::AllAvailable,
                proto::StartPosition::First,
                0,
                0,
            ),
        ];
        for (start, pos, seq, delta) in cases {
            let r = req(&SubscriptionOptions::new().start(start), now);
            assert_eq!(r.start_position(), pos, "{start:?}");
            assert_eq!(r.start_sequence, seq, "{start:?}");
            assert_eq!(r.start_time_delta, delta, "{start:?}");
        }
    }

    #[test]
    fn durable_queue_acks() {
        let o = SubscriptionOptions::new()
            .durable_name("dur")
            .queue_group("grp")
            .manual_acks()
            .ack_wait(Duration::from_millis(2500))
            .max_in_flight(3);
        let r = req(&o, SystemTime::now());
        assert_eq!(r.durable_name, "dur");
        assert_eq!(r.q_group, "grp");
        assert_eq!(r.ack_wait_in_secs, 2, "whole seconds, like the Go client");
        assert_eq!(r.max_in_flight, 3);
        assert!(o.manual_acks);
    }

    #[test]
    fn option_validation() {
        assert!(Options::new().pings(Duration::ZERO, 3).validate().is_err());
        assert!(
            Options::new()
                .pings(Duration::from_secs(1), 0)
                .validate()
                .is_err()
        );
        assert!(Options::new().max_pub_acks_inflight(0).validate().is_err());
        let o = Options::new().pings(Duration::from_millis(50), 3);
        assert_eq!(o.wire_ping_interval(), -50);
        assert_eq!(o.wire_ping_max_out(), 3);
    }
}
