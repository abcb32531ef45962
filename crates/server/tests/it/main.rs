//! Cross-process tests of rnats-server: raw protocol, bad input compared with the reference
//! nats-server, and interop with the official async-nats client. One test binary, to save
//! link time.

mod bad_input;
mod cluster;
mod harness;
mod interop;
mod monitor;
mod ops;
mod process;
mod raw;
pub mod security;
