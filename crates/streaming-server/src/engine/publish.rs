//! Publish: a PubMsg is checked, stored (appended to its channel's log) and its PubAck held
//! until the flush that covers the message completes.
//!
//! `accept` (is this publish valid, from a known client, for a channel that may exist?) and
//! `store_accepted` (append, account, hold the PubAck) are separate steps: a replicated log
//! sits between them when the server is clustered.

use std::time::Instant;

use prost::Message as _;
use rnats_streaming::proto::{CtrlMsg, PubAck, PubMsg};
use rnats_streaming::store::{NewMessage, StoreError, is_valid_channel_name, now_nanos};
use tracing::{debug, error, warn};

use super::flusher::PendingPubAck;
use super::{Engine, ProtocolError, mark};
use crate::nats::{InMsg, Subject};

/// sequence, timestamp and redelivery count).
pub(super) fn max_delivery_len(subject: &str, reply: &str, data: usize) -> usize {
    pub(super) fn bytes_field(n: usize) -> usize {
        if n == 0 {
            0
        } else {
            1 + prost::encoding::encoded_len_varint(n as u64) + n
        }
    }
    // sequence u64::MAX: key + 10 bytes; timestamp i64::MAX: key + 9; redelivered: key + 1;
    // redelivery_count u32::MAX: key + 5.
    11 + bytes_field(subject.len()) + bytes_field(reply.len()) + bytes_field(data) + 10 + 2 + 6
}

/// A publish that passed every check, with its timestamp: what a replicated log would carry
/// between "accepted" and "stored".
pub(super) struct Accepted {
    pub(super) reply: Option<Subject>,
    pub(super) guid: String,
    pub(super) channel: String,
    pub(super) msg: NewMessage,
}

impl Engine {
    /// An error PubAck, sent with the next commit.
    pub(super) fn pub_error(&mut self, reply: &Option<Subject>, guid: String, err: ProtocolError) {
        if let Some(r) = reply.as_ref().filter(|r| !r.is_empty()) {
            self.ready_acks.push((
                r.clone(),
                PubAck {
                    guid,
                    error: err.to_string(),
                },
            ));
        }
    }

    pub(super) fn on_publish(&mut self, msg: InMsg) {
        if let Some(a) = self.accept(msg) {
            self.store_accepted(a);
        }
    }

    /// Checks a publish (decodes, valid channel name, known client, size); an invalid one
    /// gets its error PubAck here.
    pub(super) fn accept(&mut self, msg: InMsg) -> Option<Accepted> {
        let pm = match PubMsg::decode(msg.payload.clone()) {
            Ok(pm) => pm,
            Err(_) => {
                if CtrlMsg::decode(msg.payload.clone()).is_ok_and(|c| !c.server_id.is_empty()) {
                    return None;
                }
                self.pub_error(&msg.reply, String::new(), ProtocolError::InvalidPubReq);
                return None;
            }
        };
        let refuse = if pm.guid.is_empty() || !is_valid_channel_name(&pm.subject) {
            Some(ProtocolError::InvalidPubReq)
        } else if !self.publisher_known(&pm) {
            debug!(
                "STREAM: [Client:{}] Publish from unknown client rejected",
                pm.client_id
            );
            Some(ProtocolError::InvalidPubReq)
        } else if max_delivery_len(&pm.subject, &pm.reply, pm.data.len()) > self.max_payload {
            // The largest MsgProto this message can become must fit in a NATS message.
            // (Clients' PubMsgs carry more framing than that, so this only fires when the
            // server's NATS connection allows less than the publisher's.)
            Some(ProtocolError::MsgTooLarge)
        } else {
            None
        };
        if let Some(e) = refuse {
            self.pub_error(&msg.reply, pm.guid, e);
            return None;
        }
        Some(Accepted {
            reply: msg.reply,
            guid: pm.guid,
            channel: pm.subject,
            msg: NewMessage {
                reply: pm.reply,
                data: pm.data,
                timestamp: now_nanos(),
            },
        })
    }

    fn publisher_known(&self, pm: &PubMsg) -> bool {
        if pm.conn_id.is_empty() {
            self.clients.contains_key(&pm.client_id)
        } else {
            self.conn_ids
                .get(&pm.conn_id)
                .is_some_and(|id| *id == pm.client_id && self.clients.contains_key(id))
        }
    }

    /// Appends an accepted message to its channel (created on first use); its PubAck waits
    /// for the flush that covers it.
    pub(super) fn store_accepted(&mut self, a: Accepted) {
        let Accepted {
            reply,
            guid,
            channel: name,
            msg,
        } = a;
        let ch = match self.lookup_or_create(&name) {
            Ok(ch) => ch,
            Err(e) => return self.pub_error(&reply, guid, e),
        };
        // (In log mode the store has only what was committed: limits apply there, later.)
        let before = (!self.sink.is_log()).then(|| ch.msgs().state());
        let stored = match self.channels.get_mut(&name) {
            Some(cs) => self.sink.append(&ch, &mut cs.next, msg),
            None => Err(StoreError::Closed),
        };
        match stored {
            Ok(m) => {
                self.stats.in_msgs += 1;
                self.stats.in_bytes += m.data.len() as u64;
                let after = ch.msgs().state();
                if before.is_some_and(|b| after.msgs < b.msgs + 1)
                    && self.warned_limits.insert(name.clone())
                {
                    warn!(
                        "STREAM: Reached limits for store {name:?} (msgs={} bytes={}), dropping old messages",
                        after.msgs, after.bytes
                    );
                }
                mark(&mut self.dirty_msgs, &name);
                if let Some(cs) = self.channels.get_mut(&name) {
                    cs.last_activity = Instant::now();
                }
                self.arm_channel_timers(&name);
                // Sent (and the message delivered) once the flush that covers it completes.
                if let Some(reply) = reply.filter(|r| !r.is_empty()) {
                    self.pubacks.push(PendingPubAck {
                        reply,
                        guid,
                        channel: name,
                    });
                }
            }
            Err(e) => {
                error!("STREAM: Unable to store message on {name:?}: {e}");
                self.pub_error(&reply, guid, e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rnats_streaming::proto::MsgProto;

    use super::*;

    #[test]
    fn max_delivery_len_is_the_largest_encoding() {
        for (subject, reply, data) in [
            ("", "", 0),
            ("foo", "", 0),
            ("foo.bar", "r", 1),
            ("c", "", 127),
            ("c", "reply.inbox", 128),
            ("channel", "", 16_384),
            ("channel", "", 1 << 20),
        ] {
            let m = MsgProto {
                sequence: u64::MAX,
                subject: subject.into(),
                reply: reply.into(),
                data: Bytes::from(vec![0u8; data]),
                timestamp: i64::MAX,
                redelivered: true,
                redelivery_count: u32::MAX,
                crc32: 0,
            };
            assert_eq!(
                max_delivery_len(subject, reply, data),
                m.encoded_len(),
                "{subject:?} {reply:?} {data}"
            );
        }
    }
}
