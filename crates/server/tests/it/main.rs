//! Cross-process tests of rnats-server: raw protocol, bad input compared with the reference
//! nats-server, and interop with the official async-nats client. One test binary, to save
//! link time.

mod bad_input;
mod cluster;
mod harness;
mod hostile;
mod interop;
mod metrics;
mod monitor;
mod monitor_port;
mod ops;
/// Certificates made on the fly: the client tests' helper.
#[path = "../../../client/tests/it/pki.rs"]
mod pki;
mod process;
mod prom;
mod raw;
mod security;
mod trace_log;
