//! The memory store: everything in process memory, nothing survives a restart.
//!
//! Each channel's log is a `VecDeque<MsgProto>` behind its own mutex; message payloads are
//! [`Bytes`](bytes::Bytes) shared with the publisher's buffer and with deliveries. Bytes are
//! accounted as the encoded `MsgProto` size, like the reference memory store. `flush` and
//! `sync` do nothing: data is "durable" for as long as the process lives.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message;

use super::subs::SubsState;
use super::{
    Channel, MsgStore, MsgStoreState, NewMessage, RecoveredState, RecoveredSubscription, Registry,
    Result, Store, StoreError, StoreKind, StoreLimits, SubStore,
};
use crate::proto::{ClientInfo, MsgProto, ServerInfo, SubState};

/// The memory store.
pub struct MemoryStore {
    limits: StoreLimits,
    inner: Mutex<Inner>,
}

struct Inner {
    registry: Registry,
    clients: BTreeMap<String, ClientInfo>,
    info: Option<ServerInfo>,
    closed: bool,
}

impl MemoryStore {
    /// A new, empty store with these limits (validated).
    pub fn new(limits: StoreLimits) -> Result<Self> {
        limits.validate()?;
        Ok(MemoryStore {
            limits,
            inner: Mutex::new(Inner {
                registry: Registry::new(),
                clients: BTreeMap::new(),
                info: None,
                closed: false,
            }),
        })
    }

    fn new_channel(&self, name: &str) -> Arc<Channel> {
        let limits = self.limits.resolve(name);
        let msgs = MemoryMsgStore {
            log: Mutex::new(MemLog {
                channel: name.to_owned(),
                max_msgs: limits.max_msgs,
                max_bytes: limits.max_bytes,
                max_age: duration_nanos(limits.max_age),
                msgs: VecDeque::new(),
                first: 1,
                last: 0,
                bytes: 0,
                last_ts: 0,
                closed: false,
            }),
        };
        let subs = MemorySubStore {
            subs: Mutex::new((SubsState::new(limits.max_subs), false)),
        };
        Arc::new(Channel::new(
            name.to_owned(),
            limits,
            Box::new(msgs),
            Box::new(subs),
        ))
    }
}

pub(crate) fn duration_nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn init(&self, info: &ServerInfo) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        inner.info = Some(info.clone());
        Ok(())
    }

    fn recover(&self) -> Result<RecoveredState> {
        let inner = self.inner.lock();
        Ok(RecoveredState {
            info: inner.info.clone(),
            clients: inner.clients.values().cloned().collect(),
            channels: inner.registry.recovered(),
        })
    }

    fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    fn create_channel(&self, name: &str) -> Result<Arc<Channel>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        inner.registry.check_create(name, &self.limits)?;
        let ch = self.new_channel(name);
        inner.registry.insert(ch.clone());
        Ok(ch)
    }

    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lock().registry.channels.get(name).cloned()
    }

    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        if let Some(c) = inner.registry.channels.get(name) {
            return Ok((c.clone(), false));
        }
        inner.registry.check_create(name, &self.limits)?;
        let ch = self.new_channel(name);
        inner.registry.insert(ch.clone());
        Ok((ch, true))
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner
            .lock()
            .registry
            .channels
            .values()
            .cloned()
            .collect()
    }

    fn delete_channel(&self, name: &str) -> Result<bool> {
        let removed = self.inner.lock().registry.remove(name);
        match removed {
            Some(ch) => {
                close_channel(&ch);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn add_client(&self, info: &ClientInfo) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        inner.clients.insert(info.id.clone(), info.clone());
        Ok(())
    }

    fn delete_client(&self, id: &str) -> Result<bool> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        Ok(inner.clients.remove(id).is_some())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for ch in inner.registry.channels.values() {
            close_channel(ch);
        }
        Ok(())
    }
}

/// Closes a channel's stores (it has been deleted or the store closed).
fn close_channel(ch: &Channel) {
    let _ = ch.msgs().close();
    let _ = ch.subs().close();
}

struct MemLog {
    channel: String,
    max_msgs: u64,
    max_bytes: u64,
    max_age: i64,
    msgs: VecDeque<MsgProto>,
    /// Sequence of `msgs[0]`, or `last + 1` when empty.
    first: u64,
    last: u64,
    bytes: u64,
    last_ts: i64,
    closed: bool,
}

impl MemLog {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn pop_front(&mut self) {
        if let Some(m) = self.msgs.pop_front() {
            self.bytes -= m.encoded_len() as u64;
            self.first += 1;
        }
    }

    fn expire_age(&mut self, now: i64) {
        if self.max_age <= 0 {
            return;
        }
        let cutoff = now.saturating_sub(self.max_age);
        while self.msgs.front().is_some_and(|m| m.timestamp <= cutoff) {
            self.pop_front();
        }
    }

    fn enforce(&mut self, now: i64) {
        self.expire_age(now);
        while self.msgs.len() > 1
            && ((self.max_msgs > 0 && self.msgs.len() as u64 > self.max_msgs)
                || (self.max_bytes > 0 && self.bytes > self.max_bytes))
        {
            self.pop_front();
        }
    }

    fn push(&mut self, m: MsgProto) {
        if self.msgs.is_empty() {
            self.first = m.sequence;
        }
        self.last = m.sequence;
        self.last_ts = self.last_ts.max(m.timestamp);
        self.bytes += m.encoded_len() as u64;
        let now = m.timestamp;
        self.msgs.push_back(m);
        self.enforce(now);
    }

    fn get(&self, seq: u64) -> Option<&MsgProto> {
        if seq < self.first {
            return None;
        }
        self.msgs.get(usize::try_from(seq - self.first).ok()?)
    }
}

/// The memory message log of one channel.
pub struct MemoryMsgStore {
    log: Mutex<MemLog>,
}

impl MsgStore for MemoryMsgStore {
    fn append(&self, msg: NewMessage) -> Result<MsgProto> {
        let mut log = self.log.lock();
        log.check_open()?;
        let m = msg.stamp(log.last + 1, log.channel.clone(), log.last_ts);
        log.push(m.clone());
        Ok(m)
    }

    fn store(&self, msg: &MsgProto) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        if msg.sequence <= log.last {
            return Ok(msg.sequence);
        }
        if msg.sequence > log.last + 1 {
            if !log.msgs.is_empty() {
                return Err(StoreError::SequenceGap {
                    channel: log.channel.clone(),
                    expected: log.last + 1,
                    got: msg.sequence,
                });
            }
            log.first = msg.sequence;
        }
        let mut m = msg.clone();
        m.redelivered = false;
        m.redelivery_count = 0;
        log.push(m);
        Ok(msg.sequence)
    }

    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        let log = self.log.lock();
        log.check_open()?;
        Ok(log.get(seq).cloned())
    }

    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        let log = self.log.lock();
        log.check_open()?;
        let start = start.max(log.first);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut seq = start;
        while out.len() < max_msgs {
            let Some(m) = log.get(seq) else { break };
            bytes += m.encoded_len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(m.clone());
            seq += 1;
        }
        Ok(out)
    }

    fn state(&self) -> MsgStoreState {
        let log = self.log.lock();
        MsgStoreState {
            first: log.first,
            last: log.last,
            msgs: log.msgs.len() as u64,
            bytes: log.bytes,
        }
    }

    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let log = self.log.lock();
        log.check_open()?;
        let i = log.msgs.partition_point(|m| m.timestamp < timestamp);
        Ok(log.first + i as u64)
    }

    fn expire(&self, now: i64) -> Result<Option<i64>> {
        let mut log = self.log.lock();
        log.check_open()?;
        log.expire_age(now);
        if log.max_age <= 0 {
            return Ok(None);
        }
        let max_age = log.max_age;
        Ok(log
            .msgs
            .front()
            .map(|m| m.timestamp.saturating_add(max_age)))
    }

    fn flush(&self) -> Result<()> {
        self.log.lock().check_open()
    }

    fn empty(&self) -> Result<()> {
        let mut log = self.log.lock();
        log.check_open()?;
        log.msgs.clear();
        log.bytes = 0;
        log.first = log.last + 1;
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.log.lock().closed = true;
        Ok(())
    }
}

/// The memory subscription store of one channel.
pub struct MemorySubStore {
    subs: Mutex<(SubsState, bool)>,
}

impl MemorySubStore {
    fn with<T>(&self, f: impl FnOnce(&mut SubsState) -> Result<T>) -> Result<T> {
        let mut g = self.subs.lock();
        if g.1 {
            return Err(StoreError::Closed);
        }
        f(&mut g.0)
    }
}

impl SubStore for MemorySubStore {
    fn create_sub(&self, state: &mut SubState) -> Result<()> {
        self.with(|s| s.create(state))
    }

    fn update_sub(&self, state: &SubState) -> Result<()> {
        self.with(|s| {
            s.put(state.clone());
            Ok(())
        })
    }

    fn delete_sub(&self, id: u64) -> Result<()> {
        self.with(|s| {
            s.delete(id);
            Ok(())
        })
    }

    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.with(|s| {
            s.add_pending(id, seq);
            Ok(())
        })
    }

    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.with(|s| {
            s.ack(id, seq);
            Ok(())
        })
    }

    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.with(|s| {
            for &seq in seqs {
                s.add_pending(id, seq);
            }
            Ok(())
        })
    }

    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.with(|s| {
            for &seq in seqs {
                s.ack(id, seq);
            }
            Ok(())
        })
    }

    fn subscriptions(&self) -> Vec<RecoveredSubscription> {
        self.subs.lock().0.snapshot()
    }

    fn count(&self) -> usize {
        self.subs.lock().0.len()
    }

    fn flush(&self) -> Result<()> {
        self.with(|_| Ok(()))
    }

    fn close(&self) -> Result<()> {
        self.subs.lock().1 = true;
        Ok(())
    }
}
