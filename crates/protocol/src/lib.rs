//! The NATS client protocol as pure functions over byte buffers: no I/O, no async.
//!
//! ```text
//! client → server                                   server → client
//! CONNECT {json}␍␊                                  INFO {json} ␍␊
//! PUB <subj> [reply] <#bytes>␍␊<payload>␍␊          MSG <subj> <sid> [reply] <#bytes>␍␊<payload>␍␊
//! HPUB <subj> [reply] <#hdr> <#total>␍␊<hdr+payload>␍␊
//!                                                   HMSG <subj> <sid> [reply] <#hdr> <#total>␍␊…␍␊
//! SUB <subj> [queue] <sid>␍␊                        +OK␍␊
//! UNSUB <sid> [max]␍␊                               -ERR '<text>'␍␊
//! PING␍␊ / PONG␍␊                                   PING␍␊ / PONG␍␊
//! ```
//!
//! [`parse_client_op`] reads one operation from the front of a buffer and never consumes
//! anything on incomplete input, so the caller can append the next read and call again: any
//! split of the byte stream yields the same operations. Operations borrow from the buffer;
//! payloads are never copied by the parser.

mod encode;
mod error;
mod parse;
mod route;
mod server_op;
mod subject;

pub use encode::{write_err, write_hmsg, write_msg, write_u64};
pub use error::ProtoError;
pub use parse::{ClientOp, Limits, Message, Parsed, parse_client_op};
pub use route::{RouteOp, parse_route_op, write_rmsg, write_rs_minus, write_rs_plus};
pub use server_op::{
    MAX_CONTROL_LINE as MAX_SERVER_CONTROL_LINE, ParseError as ServerOpError, ServerOp,
    parse_server_op,
};
pub use subject::{
    is_valid_literal_subject, is_valid_publish_subject, is_valid_subject, subject_matches, tokens,
};

/// Status line of the header block the server sends for "no responders" (503).
pub const NO_RESPONDERS_STATUS: &[u8] = b"NATS/1.0 503\r\n";
