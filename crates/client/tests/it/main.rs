//! Integration tests of rnats-client: scenarios against rnats-server and the reference
//! nats-server (both as child processes), and a scripted fake server for the rest.

mod examples;
mod fake;
mod pki;
mod scenarios;
mod security;
mod support;
