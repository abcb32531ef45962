//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the crate-private
//! decoders of what other servers and HTTP clients send, called exactly as the server calls
//! them.

use std::time::SystemTime;

use bytes::Bytes;

/// A heartbeat on the fault-tolerance subject: the sender's server ID and its activation
/// time (`None` when that does not decode), or why the message is not another member's
/// heartbeat.
pub fn parse_heartbeat(
    payload: &[u8],
    own_id: &str,
) -> Result<(String, Option<SystemTime>), String> {
    crate::ft::parse_heartbeat(payload, own_id)
        .map(|h| (h.server_id, h.activation))
        .map_err(|e| e.to_string())
}

/// Go's `time.Time` binary form, as heartbeats carry it.
pub fn decode_go_time(b: &[u8]) -> Option<SystemTime> {
    crate::ft::decode_go_time(b)
}

/// The inverse of [`decode_go_time`].
pub fn encode_go_time(t: SystemTime) -> Vec<u8> {
    crate::ft::encode_go_time(t)
}

/// The channel list of a partitioning message's data.
pub fn decode_channels(data: &[u8]) -> Option<Vec<String>> {
    crate::partition::decode_channels(data)
}

/// A server's answer to another's partitioning request.
pub fn answer(ours: &[String], server_id: &str, request: &[u8]) -> Option<Bytes> {
    crate::partition::answer(ours, server_id, request)
}

/// The partitioning requests a server sends for its list.
pub fn encode_lists(
    server_id: &str,
    channels: &[String],
    max_payload: usize,
) -> Option<Vec<Bytes>> {
    crate::partition::encode_lists(server_id, channels, max_payload).ok()
}

/// How the monitoring server routes `path?raw_query` (its `Debug` form).
pub fn monitor_route(path: &str, raw_query: &str) -> String {
    format!("{:?}", crate::monitor::route(path, raw_query))
}
