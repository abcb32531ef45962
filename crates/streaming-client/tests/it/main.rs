//! Integration tests of rnats-streaming-client: scenarios against `rnats-streaming-server`,
//! and client-side protocol behaviour (ack timeouts, PINGs, heartbeats, flow control) against a
//! scripted fake streaming server on a plain `rnats-server`.

mod fake;
mod scenarios;
mod support;
