use thiserror::Error;

/// A protocol violation by a client. Each one closes the connection; [`ProtoError::err_text`]
/// gives the `-ERR` text the reference server sends first, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// Unknown verb, a server-only verb from a client, or a payload not followed by `␍␊`.
    #[error("unknown protocol operation")]
    UnknownOp,
    /// The arguments of a control line are longer than `max_control_line`.
    #[error("maximum control line exceeded")]
    MaxControlLine,
    /// `PUB`/`HPUB` announced more bytes than `max_payload`.
    #[error("maximum payload exceeded: {size} > {max}")]
    MaxPayload { size: usize, max: usize },
    /// Wrong number of arguments, or a size that is not 1..9 decimal digits. The reference
    /// closes these without an `-ERR`.
    #[error("malformed {op} arguments")]
    BadArgs { op: &'static str },
    /// The client itself sent `-ERR`.
    #[error("client sent an error")]
    ClientErr,
}

impl ProtoError {
    /// The text that goes inside `-ERR '…'` before the connection is closed, or `None` where
    /// the reference closes silently.
    pub fn err_text(&self) -> Option<&'static str> {
        match self {
            ProtoError::UnknownOp => Some("Unknown Protocol Operation"),
            ProtoError::MaxControlLine => Some("maximum control line exceeded"),
            ProtoError::MaxPayload { .. } => Some("Maximum Payload Violation"),
            ProtoError::BadArgs { .. } | ProtoError::ClientErr => None,
        }
    }
}
