//! Partitioning (`partitioning: true`): each server of a cluster ID serves only the channels
//! listed in its `store_limits.channels` (wildcards allowed), and no two servers may list
//! overlapping channels.
//!
//! On start (and when the NATS client discovers new servers) a server sends its list on
//! `_STAN.part.<cluster id>` with a reply inbox, as `CtrlMsg{Partitioning, server ID, data}`
//! where data is the channels as (u16 little-endian length, bytes) pairs, split over several
//! messages if they exceed the maximum payload. Every other server answers with the same
//! message type whose data is empty, or holds the first channel of the request that overlaps
//! one of its own. The sender waits until no answer came for [`REPLY_WAIT`]; an overlap is
//! an error naming the channel and the server. This is the reference's wire format.
//!
//! Overlap is decided both ways with wildcards on both sides: `foo.*` and `*.bar` overlap
//! (on `foo.bar`), `foo.>` and `foo.bar.*` overlap, `foo.*` and `foo.bar.baz` do not.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use rnats_streaming::proto::{CtrlMsg, ctrl_msg};
use tracing::{debug, error};

use crate::nats::{Inbound, Nats, NatsError};

/// The prefix of the subject servers exchange their lists on.
pub(crate) const PART_PREFIX: &str = "_STAN.part";
/// The sender of a list waits this long after the last answer.
pub(crate) const REPLY_WAIT: Duration = Duration::from_secs(1);

/// Why a server cannot serve its partition.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("channel {channel:?} causes conflict with channels on server {server:?}")]
    Conflict { channel: String, server: String },
    #[error("unable to send channels list: {0}")]
    Send(#[from] NatsError),
    #[error("a channel name of {0} bytes does not fit in one message")]
    TooLong(usize),
    #[error("unable to decode partitioning response: {0}")]
    BadResponse(String),
}

/// Whether two channel patterns (`*` one token, `>` the rest) have a channel in common.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// The first of `theirs` that overlaps one of `ours`, or else the first of `ours` that
/// overlaps one of `theirs`.
pub(crate) fn first_conflict<'a>(ours: &'a [String], theirs: &'a [String]) -> Option<&'a str> {
    theirs
        .iter()
        .find(|t| ours.iter().any(|o| overlap(o, t)))
        .or_else(|| ours.iter().find(|o| theirs.iter().any(|t| overlap(o, t))))
        .map(String::as_str)
}

/// The channel list as messages of at most `max_payload` bytes each.
pub(crate) fn encode_lists(
    server_id: &str,
    channels: &[String],
    max_payload: usize,
) -> Result<Vec<Bytes>, PartitionError> {
    let header = ctrl(server_id, Vec::new()).encoded_len();
    // Room for the data field's key and length.
    let room = max_payload.saturating_sub(header + 1 + 8);
    let mut out = Vec::new();
    let mut data = Vec::new();
    for c in channels {
        let need = 2 + c.len();
        if need > room || c.len() > u16::MAX as usize {
            return Err(PartitionError::TooLong(c.len()));
        }
        if data.len() + need > room {
            out.push(Bytes::from(
                ctrl(server_id, std::mem::take(&mut data)).encode_to_vec(),
            ));
        }
        data.extend_from_slice(&(c.len() as u16).to_le_bytes());
        data.extend_from_slice(c.as_bytes());
    }
    if !data.is_empty() {
        out.push(Bytes::from(ctrl(server_id, data).encode_to_vec()));
    }
    Ok(out)
}

/// Reads a list's data; `None` if malformed.
pub(crate) fn decode_channels(mut data: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u16::from_le_bytes(data.get(..2)?.try_into().ok()?) as usize;
        let name = data.get(2..2 + len)?;
        out.push(String::from_utf8(name.to_vec()).ok()?);
        data = &data[2 + len..];
    }
    Some(out)
}

fn ctrl(server_id: &str, data: Vec<u8>) -> CtrlMsg {
    CtrlMsg {
        msg_type: ctrl_msg::Type::Partitioning as i32,
        server_id: server_id.to_string(),
        data,
        ..Default::default()
    }
}

/// The answer to another server's list: `None` for our own list or a malformed request.
pub(crate) fn answer(ours: &[String], server_id: &str, request: &[u8]) -> Option<Bytes> {
    let req = match CtrlMsg::decode(request) {
        Ok(r) => r,
        Err(e) => {
            error!("STREAM: Error processing partitioning request: {e}");
            return None;
        }
    };
    if req.server_id == server_id {
        return None;
    }
    let Some(theirs) = decode_channels(&req.data) else {
        error!(
            "STREAM: Error processing partitioning request from {:?}: bad channel list",
            req.server_id
        );
        return None;
    };
    let conflict = first_conflict(ours, &theirs).unwrap_or_default();
    Some(Bytes::from(
        ctrl(server_id, conflict.as_bytes().to_vec()).encode_to_vec(),
    ))
}

/// The partitioning side of a server: its list, and the connection it uses to send it and to
/// answer the others.
pub(crate) struct Partitions {
    pub(crate) channels: Vec<String>,
    server_id: String,
    subject: String,
    inbox: String,
    nc: Nats,
}

impl Partitions {
    /// Subscribes the list subject and a reply inbox on `nc` (a connection of its own).
    pub(crate) async fn new(
        nc: Nats,
        cluster_id: &str,
        server_id: &str,
        channels: Vec<String>,
    ) -> Result<(Partitions, Inbound), NatsError> {
        let subject = format!("{PART_PREFIX}.{cluster_id}");
        let inbox = nc.new_inbox();
        let inbound = nc.control_inbound(&[&subject, &inbox]).await?;
        Ok((
            Partitions {
                channels,
                server_id: server_id.to_string(),
                subject,
                inbox,
                nc,
            },
            inbound,
        ))
    }

    /// Sends our list and checks every answer until none came for [`REPLY_WAIT`]. Requests
    /// of other servers arriving meanwhile are answered.
    pub(crate) async fn check_unique(&self, inbound: &mut Inbound) -> Result<(), PartitionError> {
        for m in encode_lists(&self.server_id, &self.channels, self.nc.max_payload())? {
            self.nc
                .publish_with_reply(&self.subject, &self.inbox, &m)
                .await?;
        }
        self.nc.flush().await?;
        let mut conflict = None;
        loop {
            let next = tokio::time::timeout(REPLY_WAIT, inbound.next()).await;
            let Ok((_, m)) = next else {
                break;
            };
            if *m.subject != *self.inbox {
                self.on_request(&m.payload, m.reply.as_deref()).await;
                continue;
            }
            let resp = CtrlMsg::decode(m.payload.clone())
                .map_err(|e| PartitionError::BadResponse(e.to_string()))?;
            if !resp.data.is_empty() && conflict.is_none() {
                conflict = Some(PartitionError::Conflict {
                    channel: String::from_utf8_lossy(&resp.data).into_owned(),
                    server: resp.server_id,
                });
            }
        }
        conflict.map_or(Ok(()), Err)
    }

    /// Answers another server's list.
    pub(crate) async fn on_request(&self, payload: &[u8], reply: Option<&str>) {
        let Some(reply) = reply.filter(|r| !r.is_empty()) else {
            return;
        };
        if payload.is_empty() {
            return;
        }
        if let Some(a) = answer(&self.channels, &self.server_id, payload)
            && let Err(e) = self.nc.publish_batch(&[(reply, &a[..])]).await
        {
            debug!("STREAM: Error sending reply to partitioning request: {e}");
        }
    }

    /// Answers the other servers until the connection closes.
    pub(crate) async fn serve(&self, inbound: &mut Inbound) {
        loop {
            let (_, m) = inbound.next().await;
            if *m.subject == *self.subject {
                self.on_request(&m.payload, m.reply.as_deref()).await;
            }
        }
    }

    pub(crate) async fn close(&self) {
        self.nc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlap_both_ways_with_wildcards() {
        for (a, b) in [
            ("foo", "foo"),
            ("foo.*", "foo.bar"),
            ("foo.*", "*.bar"),
            ("foo.>", "foo.bar.*"),
            (">", "x"),
            ("a.*.c", "a.b.*"),
        ] {
            assert!(overlap(a, b), "{a} {b}");
            assert!(overlap(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("foo", "bar"),
            ("foo.*", "foo.bar.baz"),
            ("foo.>", "foo"),
            ("foo", "foo.bar"),
            ("a.*.c", "a.b.d"),
        ] {
            assert!(!overlap(a, b), "{a} {b}");
            assert!(!overlap(b, a), "{b} {a}");
        }
    }

    #[test]
    fn lists_round_trip_and_split_at_max_payload() {
        let channels: Vec<String> = (0..100).map(|i| format!("channel.number.{i}")).collect();
        let msgs = encode_lists("SRV", &channels, 256).unwrap();
        assert!(msgs.len() > 1);
        let mut back = Vec::new();
        for m in &msgs {
            assert!(m.len() <= 256);
            let c = CtrlMsg::decode(m.clone()).unwrap();
            assert_eq!(c.server_id, "SRV");
            assert_eq!(c.msg_type, ctrl_msg::Type::Partitioning as i32);
            back.extend(decode_channels(&c.data).unwrap());
        }
        assert_eq!(back, channels);
        assert!(matches!(
            encode_lists("SRV", &list(&[&"x".repeat(300)]), 256),
            Err(PartitionError::TooLong(300))
        ));
        assert_eq!(decode_channels(&[5, 0, b'a']), None);
        assert_eq!(decode_channels(&[1]), None);
    }

    #[test]
    fn answers_name_the_conflicting_channel() {
        let ours = list(&["orders.>", "audit"]);
        let req = encode_lists("B", &list(&["users", "orders.eu"]), 1 << 20).unwrap();
        let a = CtrlMsg::decode(answer(&ours, "A", &req[0]).unwrap()).unwrap();
        assert_eq!(
            (a.server_id.as_str(), &a.data[..]),
            ("A", &b"orders.eu"[..])
        );
        let req = encode_lists("B", &list(&["users"]), 1 << 20).unwrap();
        let a = CtrlMsg::decode(answer(&ours, "A", &req[0]).unwrap()).unwrap();
        assert!(a.data.is_empty());
        assert!(answer(&ours, "A", &encode_lists("A", &ours, 1 << 20).unwrap()[0]).is_none());
        assert!(
            answer(&ours, "A", &[0xff, 0xff]).is_none(),
            "garbage is ignored"
        );
    }
}
