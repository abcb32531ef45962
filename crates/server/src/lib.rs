//! rnats-server: a NATS server, wire compatible with nats-server.
//!
//! The public API, what the binary, the streaming server and other crates use:
//!
//! * Embedding: [`start`] binds the listeners and returns a [`ServerHandle`] (its addresses,
//!   [`ServerHandle::shutdown`], lame duck mode, configuration reload, and
//!   [`ServerHandle::connect_local`]); errors [`StartError`], [`ReloadError`].
//! * Local connections, for a service in the same process: [`LocalConn`] (publish, subscribe,
//!   request), [`LocalInbox`] and [`LocalMsg`] (what it received), [`LocalError`].
//! * Configuration: [`options`] ([`Options`] and its parts, [`options::VERSION`]), [`config`]
//!   (the configuration file), [`flags`] (nats-server's command line, and the Go-style
//!   parser the streaming server shares), [`auth`] (users and permissions in the options).
//! * [`log`]: nats-server's log format, levels and log file reopening.
//! * [`monitor::format`] (monitoring's value formats) and [`monitor::percent_decode`].
//! * [`sublist`]: the subject index (public for its benchmark).
//! * [`listen`]: a TCP listener with the reference's accept backlog (the streaming server's
//!   monitoring port uses it too).
//!
//! Everything else is internal. `ARCHITECTURE.md` beside this crate has the module map, the
//! tasks, who owns which state, and the buffering policy.

pub mod auth;
pub mod config;
pub mod flags;
pub mod log;
pub mod monitor;
pub mod options;
pub mod sublist;

pub(crate) mod client;
pub(crate) mod conn;
pub(crate) mod info;
pub(crate) mod local;
pub(crate) mod net;
pub(crate) mod ops;
pub(crate) mod reader;
pub(crate) mod route;
pub(crate) mod router;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod tls;

pub use local::{LocalConn, LocalError, LocalInbox, LocalMsg};
pub use net::listen;
pub use ops::ReloadError;
pub use options::Options;
pub use server::{ServerHandle, StartError, start};
pub use tls::TlsError;
