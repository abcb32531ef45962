//! The one error type of the streaming client. The texts of the client-side errors are those of
//! the official clients (`stan: ...`); errors the streaming server sent are kept verbatim.

/// Everything that can go wrong. `Clone` so that one failure (a lost connection) can be handed
/// to every waiting publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No streaming server answered the `ConnectRequest` in time.
    #[error("stan: connect request timeout (possibly wrong cluster ID?)")]
    ConnectRequestTimeout,
    #[error("stan: close request timeout")]
    CloseRequestTimeout,
    #[error("stan: subscribe request timeout")]
    SubscribeRequestTimeout,
    #[error("stan: unsubscribe request timeout")]
    UnsubscribeRequestTimeout,
    /// No `PubAck` within the publish ack wait.
    #[error("stan: publish ack timeout")]
    PubAckTimeout,
    /// The streaming connection is closed (by `close`, or lost).
    #[error("stan: connection closed")]
    ConnectionClosed,
    /// More client PINGs than `ping_max_out` went unanswered.
    #[error("stan: connection lost due to PING failure")]
    MaxPings,
    /// `Msg::ack` on a subscription without manual acks.
    #[error("stan: cannot manually ack in auto-ack mode")]
    ManualAck,
    /// The subscription is already unsubscribed or closed.
    #[error("stan: invalid subscription")]
    BadSubscription,
    /// The streaming server answered with this error (e.g. `stan: unknown clientID`, a
    /// `PubAck` error, or the `PingResponse` error of a replaced connection).
    #[error("{0}")]
    Server(String),
    /// A response that does not decode as the expected protobuf message.
    #[error("stan: malformed response: {0}")]
    Protocol(String),
    /// Rejected before anything was sent.
    #[error("stan: invalid options: {0}")]
    InvalidOptions(String),
    /// The core NATS connection failed (connect, publish, subscribe).
    #[error("nats: {0}")]
    Nats(String),
}

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Error {
        Error::Nats(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_the_official_clients() {
        assert_eq!(
            Error::ConnectRequestTimeout.to_string(),
            "stan: connect request timeout (possibly wrong cluster ID?)"
        );
        assert_eq!(
            Error::PubAckTimeout.to_string(),
            "stan: publish ack timeout"
        );
        assert_eq!(
            Error::MaxPings.to_string(),
            "stan: connection lost due to PING failure"
        );
        assert_eq!(
            Error::Server("stan: unknown clientID".into()).to_string(),
            "stan: unknown clientID"
        );
    }
}
