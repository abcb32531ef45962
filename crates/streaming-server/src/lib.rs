//! rnats-streaming-server: a NATS Streaming server, drop-in compatible with
//! nats-streaming-server 0.25.
//!
//! The server is a NATS client: by default it runs an embedded rnats core server in its own
//! process and talks to it through a local connection (no socket); with `-ns` it attaches to
//! an existing NATS server or cluster as a client. It speaks the NATS Streaming protobuf
//! protocol (discovery, connect, publish with PubAcks, subscriptions with every start
//! position, durables, queue groups, acks, redelivery, heartbeats, pings, close) and keeps
//! all state in an [`rnats_streaming::store`] (memory or file).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut opts = rnats_streaming_server::Options::default();
//! opts.nats.port = -1; // any free port for the embedded NATS server
//! let server = rnats_streaming_server::start(opts).await?;
//! println!("clients connect to {}", server.nats_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! * [`options`]: defaults, configuration keys and the command line of nats-streaming-server.
//! * `engine`: the protocol state machine (one task; see its module documentation and
//!   `ARCHITECTURE.md` beside this crate).
//! * `nats`: the engine's NATS connection, local or over TCP.
//! * `monitor`: `/streaming/serverz`, `storez`, `clientsz`, `channelsz`.
//! * `migration`: a nats-streaming-server FILE store converted at start-up.

mod cluster;
mod engine;
mod ft;
#[doc(hidden)]
pub mod fuzzing;
mod migration;
mod monitor;
mod monitorz;
mod nats;
pub mod options;
mod partition;
mod promz;
mod server;
mod startup;
mod status;
mod subjects;

pub use engine::ProtocolError;
pub use options::Options;
pub use partition::PartitionError;
pub use server::{StartError, StreamingServer, start};
pub use status::ServerState;
