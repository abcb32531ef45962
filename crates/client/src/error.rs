//! Errors: one generic [`Error`] carrying a per-operation kind, so callers `match err.kind()`
//! instead of parsing strings (the shape async-nats uses).

use std::fmt;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of some operation; `kind()` says what went wrong, `source()` the underlying cause.
pub struct Error<K> {
    kind: K,
    source: Option<Source>,
}

impl<K: Copy> Error<K> {
    pub fn new(kind: K) -> Self {
        Error { kind, source: None }
    }

    pub fn with_source(kind: K, source: impl Into<Source>) -> Self {
        Error {
            kind,
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> K {
        self.kind
    }
}

impl<K: Copy> From<K> for Error<K> {
    fn from(kind: K) -> Self {
        Error::new(kind)
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl<K: fmt::Debug + fmt::Display> std::error::Error for Error<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectErrorKind {
    #[error("invalid server address")]
    InvalidAddress,
    #[error("could not reach the server")]
    Io,
    #[error("timed out connecting")]
    TimedOut,
    #[error("authorization violation")]
    AuthorizationViolation,
    #[error("TLS mismatch: one side requires TLS and the other does not offer it")]
    TlsRequired,
    #[error("TLS error")]
    Tls,
    #[error("invalid credentials")]
    Credentials,
    #[error("the server refused the connection")]
    ServerError,
    #[error("the server does not speak the NATS protocol")]
    Protocol,
    #[error("no server to connect to")]
    NoServers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishErrorKind {
    #[error("invalid subject")]
    InvalidSubject,
    #[error("invalid reply subject")]
    InvalidReply,
    #[error("invalid header")]
    InvalidHeader,
    #[error("message larger than the server's max_payload")]
    MaxPayloadExceeded,
    #[error("reconnect buffer full: the client is disconnected and has buffered as much as it may")]
    ReconnectBufferFull,
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeErrorKind {
    #[error("invalid subject")]
    InvalidSubject,
    #[error("invalid queue group name")]
    InvalidQueue,
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeErrorKind {
    #[error("subscription already gone")]
    NotFound,
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestErrorKind {
    #[error("request timed out")]
    TimedOut,
    #[error("no responders: nobody is subscribed to the subject")]
    NoResponders,
    #[error("could not publish the request")]
    Publish,
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlushErrorKind {
    #[error("connection lost before the server confirmed the flush")]
    Disconnected,
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DrainErrorKind {
    #[error("drain timed out")]
    TimedOut,
    #[error("flush failed while draining")]
    Flush,
    #[error("connection closed")]
    Closed,
}

pub type ConnectError = Error<ConnectErrorKind>;
pub type PublishError = Error<PublishErrorKind>;
pub type SubscribeError = Error<SubscribeErrorKind>;
pub type UnsubscribeError = Error<UnsubscribeErrorKind>;
pub type RequestError = Error<RequestErrorKind>;
pub type FlushError = Error<FlushErrorKind>;
pub type DrainError = Error<DrainErrorKind>;

impl From<PublishError> for RequestError {
    fn from(e: PublishError) -> Self {
        match e.kind() {
            PublishErrorKind::Closed => RequestError::new(RequestErrorKind::Closed),
            _ => RequestError::with_source(RequestErrorKind::Publish, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_kind_and_source() {
        let e = ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        );
        assert_eq!(e.kind(), ConnectErrorKind::Io);
        assert_eq!(
            e.to_string(),
            "could not reach the server: connection refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        let r: RequestError = PublishError::new(PublishErrorKind::InvalidSubject).into();
        assert_eq!(r.kind(), RequestErrorKind::Publish);
        assert_eq!(
            r.to_string(),
            "could not publish the request: invalid subject"
        );
    }
}
