//! The parse loop both socket readers (a client's and a route's) run over their read buffer:
//! every complete op is parsed in place and handed to the reader; the loop stops early when
//! the reader closes the connection or must wait for a subscriber that fell behind (the rest
//! is processed after the wait), and keeps an incomplete op for the next read, reserving room
//! for its payload when its size is known.

use bytes::{Buf, BytesMut};
use rnats_protocol::{Parsed, ProtoError};

/// What processing input decided: go on, or close the connection for `R`.
pub(crate) enum Flow<R> {
    Continue,
    Close(R),
}

/// A reader of one protocol (the client's or the route's).
pub(crate) trait OpReader {
    /// One parsed op, borrowing from the read buffer.
    type Op<'a>;
    /// Why the connection closes.
    type Reason;

    /// Parses the op at the front of `buf`.
    fn parse<'a>(&self, buf: &'a [u8]) -> Result<Parsed<Self::Op<'a>>, ProtoError>;

    fn process_op(&mut self, op: Self::Op<'_>) -> Flow<Self::Reason>;

    /// `buf` holds something that is not the protocol.
    fn protocol_error(&mut self, e: ProtoError) -> Flow<Self::Reason>;

    /// A message went to a subscriber so far behind that reading must pause for it.
    fn stalled(&self) -> bool;
}

/// Runs every complete op in `buf` through `reader`, then drops the bytes consumed.
pub(crate) fn process_ops<R: OpReader>(reader: &mut R, buf: &mut BytesMut) -> Flow<R::Reason> {
    let mut pos = 0;
    let flow = loop {
        // (The parsed op borrows `buf`: the match ends before `buf` may grow.)
        let need = match reader.parse(&buf[pos..]) {
            Ok(Parsed::Op(op, used)) => {
                pos += used;
                let flow = reader.process_op(op);
                if matches!(flow, Flow::Close(_)) || reader.stalled() {
                    break flow;
                }
                continue;
            }
            Ok(Parsed::Incomplete { need }) => need,
            Err(e) => break reader.protocol_error(e),
        };
        if let Some(need) = need {
            buf.reserve(need.saturating_sub(buf.len() - pos));
        }
        break Flow::Continue;
    };
    buf.advance(pos);
    flow
}
