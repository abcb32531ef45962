//! rnats-server: a NATS server, wire compatible with nats-server.
//!
//! See `ARCHITECTURE.md` beside this crate for the tasks, who owns which state, and the
//! buffering policy.

pub mod client;
pub mod conn;
pub mod local;
pub mod monitor;
pub mod options;
pub(crate) mod router;
pub mod server;
pub mod sublist;
pub mod subscription;

pub use local::{LocalConn, LocalError, LocalInbox, LocalMsg};
pub use options::Options;
pub use server::{ServerHandle, start};
pub mod auth;
pub mod cluster;
pub mod config;
pub mod flags;
pub mod log;
pub mod net;
pub mod ops;
pub mod route;
pub mod tls;
