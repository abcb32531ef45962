//! Integration tests of the replication core: whole clusters on the in-memory transport
//! (no sockets), and one on core NATS through an embedded server.

mod cluster;
mod harness;
mod nats;
