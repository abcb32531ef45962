//! The errors the engine answers requests with. The texts are what nats-streaming-server
//! sends (clients compare some of them), so they never change.

use rnats_streaming::store::StoreError;

/// Why a connect, publish, subscribe, unsubscribe, close or ping was refused; its `Display`
/// is the `error` field of the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("stan: invalid connection request")]
    InvalidConnReq,
    #[error("stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed")]
    InvalidClientId,
    #[error("stan: invalid publish request")]
    InvalidPubReq,
    #[error("stan: invalid subscription request")]
    InvalidSubReq,
    #[error("stan: clientID missing")]
    MissingClient,
    #[error("stan: invalid ack wait time, should be >= 1s")]
    InvalidAckWait,
    #[error("stan: invalid MaxInflight, should be >= 1")]
    InvalidMaxInflight,
    #[error("stan: invalid start position")]
    InvalidStart,
    #[error("stan: invalid subject")]
    InvalidSubject,
    #[error("stan: unknown clientID")]
    UnknownClient,
    #[error("stan: durable name of a durable queue subscriber can't contain the character ':'")]
    DurableQueueColon,
    #[error("stan: duplicate durable registration")]
    DuplicateDurable,
    #[error("stan: invalid unsubscribe request")]
    InvalidUnsubReq,
    #[error("stan: unknown channel")]
    UnknownChannel,
    #[error("stan: invalid subscription")]
    InvalidSub,
    #[error("stan: invalid close request")]
    InvalidCloseReq,
    #[error("stan: clientID already registered")]
    ClientRegistered,
    #[error("client has been replaced or is no longer registered")]
    ClientReplaced,
    #[error("stan: message payload too large")]
    MsgTooLarge,
    /// `max_clients` reached (an rnats limit: the reference has none).
    #[error("stan: too many clients")]
    TooManyClients,
    /// The store refused or failed (its own text, e.g. "too many channels").
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for ProtocolError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidChannel(_) => ProtocolError::InvalidSubject,
            e => ProtocolError::Store(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_references() {
        assert_eq!(
            ProtocolError::InvalidConnReq.to_string(),
            "stan: invalid connection request"
        );
        assert_eq!(
            ProtocolError::from(StoreError::TooManyChannels).to_string(),
            "too many channels"
        );
        assert_eq!(
            ProtocolError::from(StoreError::InvalidChannel("a..b".into())),
            ProtocolError::InvalidSubject
        );
    }
}
