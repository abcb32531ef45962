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
pub mod state;
pub mod sublist;

pub use local::{LocalConn, LocalError, LocalInbox, LocalMsg};
pub use options::Options;
pub use server::{ServerHandle, start};
pub mod auth;
pub mod config;
pub mod flags;
pub(crate) mod info;
pub mod log;
pub mod net;
pub mod ops;
pub(crate) mod reader;
pub mod route;
pub mod tls;
