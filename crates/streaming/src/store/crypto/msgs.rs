//! One channel behind encryption: [`CryptoMsgStore`] seals `data` before the inner message
//! log stores it and opens it on every read; [`PlainSubs`] hands subscriptions straight
//! through (the reference encrypts payloads only).
//!
//! Writes hold the channel's writer lock across sealing and the inner append, so the
//! sequence the inner store will assign (`last + 1`) is known when the nonce is chosen.
//! Reads take no lock of this layer.
//!
//! Batch reads: the inner store charges sealed sizes against `max_bytes`, 30 bytes more per
//! message than the plaintext (29 of overhead, and one more for a longer length prefix at
//! most). So the inner batch is asked for with that much headroom per message and trimmed
//! back to the caller's budget in plaintext sizes: the batches are the ones a plain store
//! returns.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prost::Message;

use super::CryptoError;
use super::seal::{NonceSource, OVERHEAD, OpenError, Sealer};
use super::wire::{RewriteError, open_record};
use crate::proto::{MsgProto, SubState};
use crate::store::{
    Channel, EncodedMsg, MsgStore, MsgStoreState, NewMessage, RecoveredSubscription, Result,
    StoreError, SubStore,
};

/// The message log of an encrypted channel, over the inner store's channel.
pub(crate) struct CryptoMsgStore {
    inner: Arc<Channel>,
    sealer: Sealer,
    writer: Mutex<Writer>,
}

struct Writer {
    nonces: NonceSource,
    /// The inner log's last sequence, as seen by this layer (every write goes through it).
    last: u64,
}

impl CryptoMsgStore {
    pub(crate) fn new(inner: Arc<Channel>, sealer: Sealer) -> CryptoMsgStore {
        let last = inner.msgs().state().last;
        CryptoMsgStore {
            inner,
            sealer,
            writer: Mutex::new(Writer {
                nonces: NonceSource::new(),
                last,
            }),
        }
    }

    fn msgs(&self) -> &dyn MsgStore {
        self.inner.msgs()
    }

    fn seal(&self, w: &mut Writer, seq: u64, plain: &[u8]) -> Result<Bytes> {
        let nonce = w.nonces.next(seq);
        self.sealer.seal(&nonce, plain).map_err(|_| {
            CryptoError::Encrypt {
                channel: self.inner.name().to_owned(),
                len: plain.len(),
            }
            .into()
        })
    }

    fn open_error(&self, sequence: u64, e: OpenError) -> StoreError {
        let channel = self.inner.name().to_owned();
        match e {
            OpenError::Auth => CryptoError::Decrypt { channel, sequence },
            OpenError::TooShort(len) => CryptoError::NotEncrypted {
                channel,
                sequence,
                len,
            },
        }
        .into()
    }

    /// `m` with its data opened.
    fn open(&self, mut m: MsgProto) -> Result<MsgProto> {
        m.data = self
            .sealer
            .open(&m.data)
            .map_err(|e| self.open_error(m.sequence, e))?;
        Ok(m)
    }

    fn open_opt(&self, m: Option<MsgProto>) -> Result<Option<MsgProto>> {
        m.map(|m| self.open(m)).transpose()
    }
}

/// The byte budget to ask the inner store for, so that its batch (charged in sealed sizes)
/// holds at least every message the caller's budget (in plaintext sizes) admits. An encoded
/// message is at least 2 bytes, which bounds how many can fit.
fn inner_budget(max_msgs: usize, max_bytes: usize) -> usize {
    let fit = max_msgs.min(max_bytes / 2 + 1);
    max_bytes.saturating_add(fit.saturating_mul(OVERHEAD + 1))
}

/// Keeps the longest prefix of a batch within `max_bytes` (at least one item), the way the
/// stores count their batches; stops at the first error, which is returned only when no
/// item precedes it (the next batch, starting there, reports it).
fn trim<T>(
    items: impl Iterator<Item = Result<(T, usize)>>,
    max_msgs: usize,
    max_bytes: usize,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in items.take(max_msgs) {
        let (item, size) = match item {
            Ok(v) => v,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        bytes = bytes.saturating_add(size);
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push(item);
    }
    Ok(out)
}

impl MsgStore for CryptoMsgStore {
    fn append(&self, mut msg: NewMessage) -> Result<MsgProto> {
        let mut w = self.writer.lock();
        let seq = w.last + 1;
        let plain = if msg.data.is_empty() {
            None
        } else {
            let sealed = self.seal(&mut w, seq, &msg.data)?;
            Some(std::mem::replace(&mut msg.data, sealed))
        };
        let mut m = self.msgs().append(msg)?;
        if m.sequence != seq {
            // Not the sequence the nonce was made for: start a fresh prefix so that the
            // counters to come cannot meet one already used.
            w.nonces.renew();
        }
        w.last = m.sequence;
        drop(w);
        if let Some(plain) = plain {
            m.data = plain;
        }
        Ok(m)
    }

    fn store(&self, msg: &MsgProto) -> Result<u64> {
        let mut w = self.writer.lock();
        let seq = if msg.data.is_empty() {
            self.msgs().store(msg)?
        } else {
            let sealed = MsgProto {
                data: self.seal(&mut w, msg.sequence, &msg.data)?,
                ..msg.clone()
            };
            self.msgs().store(&sealed)?
        };
        w.last = w.last.max(seq);
        Ok(seq)
    }

    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        let m = self.msgs().lookup(seq)?;
        self.open_opt(m)
    }

    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        let batch = self
            .msgs()
            .read_batch(start, max_msgs, inner_budget(max_msgs, max_bytes))?;
        let opened = batch.into_iter().map(|m| {
            let m = self.open(m)?;
            let size = m.encoded_len();
            Ok((m, size))
        });
        trim(opened, max_msgs, max_bytes)
    }

    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        let batch =
            self.msgs()
                .read_batch_encoded(start, max_msgs, inner_budget(max_msgs, max_bytes))?;
        // One buffer for the whole batch; each message is a slice of it. Opened records are
        // shorter than sealed ones, so it never grows.
        let mut buf = BytesMut::with_capacity(batch.iter().map(|m| m.encoded.len()).sum());
        let opened = batch.into_iter().map(|m| {
            let m = match open_record(&self.sealer, &m.encoded, &mut buf) {
                Ok(None) => m,
                Ok(Some(data_len)) => EncodedMsg {
                    sequence: m.sequence,
                    data_len,
                    encoded: buf.split().freeze(),
                },
                Err(RewriteError::Open(e)) => return Err(self.open_error(m.sequence, e)),
                Err(RewriteError::Malformed) => {
                    return Err(CryptoError::MalformedRecord {
                        channel: self.inner.name().to_owned(),
                        sequence: m.sequence,
                    }
                    .into());
                }
            };
            let size = m.encoded.len();
            Ok((m, size))
        });
        trim(opened, max_msgs, max_bytes)
    }

    fn state(&self) -> MsgStoreState {
        self.msgs().state()
    }

    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        self.msgs().sequence_for_timestamp(timestamp)
    }

    fn expire(&self, now: i64) -> Result<Option<i64>> {
        self.msgs().expire(now)
    }

    fn flush(&self) -> Result<()> {
        self.msgs().flush()
    }

    fn sync(&self) -> Result<()> {
        self.msgs().sync()
    }

    fn empty(&self) -> Result<()> {
        self.msgs().empty()
    }

    fn close(&self) -> Result<()> {
        self.msgs().close()
    }

    fn first_msg(&self) -> Result<Option<MsgProto>> {
        let m = self.msgs().first_msg()?;
        self.open_opt(m)
    }

    fn last_msg(&self) -> Result<Option<MsgProto>> {
        let m = self.msgs().last_msg()?;
        self.open_opt(m)
    }
}

/// The subscriptions of an encrypted channel: the inner channel's, unchanged.
pub(crate) struct PlainSubs(pub(crate) Arc<Channel>);

impl SubStore for PlainSubs {
    fn create_sub(&self, state: &mut SubState) -> Result<()> {
        self.0.subs().create_sub(state)
    }

    fn update_sub(&self, state: &SubState) -> Result<()> {
        self.0.subs().update_sub(state)
    }

    fn delete_sub(&self, id: u64) -> Result<()> {
        self.0.subs().delete_sub(id)
    }

    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.0.subs().add_seq_pending(id, seq)
    }

    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.0.subs().ack_seq_pending(id, seq)
    }

    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.0.subs().add_seqs_pending(id, seqs)
    }

    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.0.subs().ack_seqs_pending(id, seqs)
    }

    fn subscriptions(&self) -> Vec<RecoveredSubscription> {
        self.0.subs().subscriptions()
    }

    fn count(&self) -> usize {
        self.0.subs().count()
    }

    fn flush(&self) -> Result<()> {
        self.0.subs().flush()
    }

    fn sync(&self) -> Result<()> {
        self.0.subs().sync()
    }

    fn close(&self) -> Result<()> {
        self.0.subs().close()
    }
}
