//! The state the client handle and the connection task share ([`Shared`]): the outbound
//! buffer and the link state, the subscription table, the request mux, the server's INFO and
//! the counters. Client calls append to it and wake the task; the task drains it and feeds
//! what arrives back in (see the `client` module documentation for the locks' order).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tracing::warn;

use crate::connection::{RawConnection as Established, ServerInfo};
use crate::error::*;
use crate::header::{HeaderMap, parse_headers};
use crate::options::{ConnectOptions, Event};
use crate::proto;
use crate::subject::is_valid_publish_subject;

use super::{Message, State};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) in_msgs: AtomicU64,
    pub(super) in_bytes: AtomicU64,
    pub(super) out_msgs: AtomicU64,
    pub(super) out_bytes: AtomicU64,
    pub(super) reconnects: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    Connected,
    Disconnected,
    Closing,
    Closed,
}

pub(super) type Waiter = Option<oneshot::Sender<()>>;

pub(super) struct Outbound {
    pub(super) buf: BytesMut,
    pub(super) link: Link,
    /// PINGs to send after the buffered data: `Some` for `flush()`, `None` for keepalive.
    pub(super) flush_waiters: Vec<Waiter>,
    /// PINGs sent, in order, waiting for their PONG.
    pub(super) in_flight: VecDeque<Waiter>,
    /// Keepalive PINGs since the last PONG.
    pub(super) pings_out: usize,
}

pub(super) enum Delivery {
    Channel {
        tx: mpsc::Sender<Message>,
        slow: bool,
    },
    /// The shared request inbox: routed by the last token to a waiting request.
    Mux,
}

pub(super) struct SubEntry {
    pub(super) subject: String,
    pub(super) queue: Option<String>,
    pub(super) delivery: Delivery,
    /// Auto-unsubscribe after this many messages in total.
    pub(super) max: Option<u64>,
    pub(super) delivered: u64,
}

pub(super) struct Mux {
    pub(super) sid: Option<u64>,
    /// `_INBOX.<nuid>.`
    pub(super) prefix: String,
    pub(super) next_token: u64,
    pub(super) waiting: HashMap<String, oneshot::Sender<Message>>,
}

pub(crate) struct Shared {
    pub(super) opts: ConnectOptions,
    pub(super) out: Mutex<Outbound>,
    pub(super) write_wake: Notify,
    pub(super) close_wake: Notify,
    pub(super) drained: Notify,
    /// By sid (foldhash: looked up for every message received).
    pub(super) subs: Mutex<HashMap<u64, SubEntry, foldhash::fast::RandomState>>,
    pub(super) mux: Mutex<Mux>,
    pub(super) next_sid: AtomicU64,
    pub(super) info: Mutex<ServerInfo>,
    pub(super) max_payload: AtomicUsize,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) state: watch::Sender<State>,
    pub(super) counters: Counters,
}

impl Shared {
    /// The state of a client that just connected to a server that sent `info`.
    pub(super) fn new(opts: ConnectOptions, info: ServerInfo) -> Shared {
        let (events, _) = broadcast::channel(256);
        let (state, _) = watch::channel(State::Connected);
        let mux_prefix = format!("{}.{}.", opts.inbox_prefix, nuid::next());
        Shared {
            out: Mutex::new(Outbound {
                buf: BytesMut::with_capacity(64 * 1024),
                link: Link::Connected,
                flush_waiters: Vec::new(),
                in_flight: VecDeque::new(),
                pings_out: 0,
            }),
            write_wake: Notify::new(),
            close_wake: Notify::new(),
            drained: Notify::new(),
            subs: Mutex::new(HashMap::default()),
            mux: Mutex::new(Mux {
                sid: None,
                prefix: mux_prefix,
                next_token: 0,
                waiting: HashMap::new(),
            }),
            next_sid: AtomicU64::new(1),
            max_payload: AtomicUsize::new(info.max_payload),
            info: Mutex::new(info),
            events,
            state,
            counters: Counters::default(),
            opts,
        }
    }

    pub(super) fn emit(&self, ev: Event) {
        if let Some(cb) = &self.opts.event_callback {
            cb(ev.clone());
        }
        let _ = self.events.send(ev);
    }

    pub(super) async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        if !is_valid_publish_subject(subject) {
            return Err(invalid_subject(subject));
        }
        if let Some(r) = reply.filter(|r| !is_valid_publish_subject(r)) {
            return Err(PublishError::with_source(
                PublishErrorKind::InvalidReply,
                format!("{r:?}"),
            ));
        }
        let header_block = match headers {
            Some(h) => {
                h.validate()
                    .map_err(|e| PublishError::with_source(PublishErrorKind::InvalidHeader, e))?;
                Some(h.to_bytes())
            }
            None => None,
        };
        // A tight publish loop yields now and then, so that the writer (and, on a
        // current-thread runtime, everything else) gets to run.
        tokio::task::coop::consume_budget().await;
        let size = header_block.as_ref().map_or(0, Vec::len) + payload.len();
        let max = self.max_payload.load(Ordering::Relaxed);
        if max > 0 && size > max {
            return Err(too_large(size, max));
        }
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut out = self.out.lock();
                match out.link {
                    Link::Closing | Link::Closed => {
                        return Err(PublishError::new(PublishErrorKind::Closed));
                    }
                    Link::Connected if out.buf.len() >= self.opts.write_buffer_limit => {}
                    link => {
                        self.append_pub(
                            &mut out,
                            subject,
                            reply,
                            header_block.as_deref(),
                            payload,
                        )?;
                        drop(out);
                        self.counters.out_msgs.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .out_bytes
                            .fetch_add(size as u64, Ordering::Relaxed);
                        if link == Link::Connected {
                            self.write_wake.notify_one();
                        }
                        return Ok(());
                    }
                }
            }
            self.write_wake.notify_one();
            drained.await;
        }
    }

    pub(super) async fn publish_batch<S, P>(&self, msgs: &[(S, P)]) -> Result<(), PublishError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        tokio::task::coop::consume_budget().await;
        let mut first_err: Option<PublishError> = None;
        let mut next = 0;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut out = self.out.lock();
                let link = out.link;
                if matches!(link, Link::Closing | Link::Closed) {
                    return Err(PublishError::new(PublishErrorKind::Closed));
                }
                let max = self.max_payload.load(Ordering::Relaxed);
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut done = false;
                loop {
                    if link == Link::Connected && out.buf.len() >= self.opts.write_buffer_limit {
                        break;
                    }
                    let Some((subject, payload)) = msgs.get(next) else {
                        done = true;
                        break;
                    };
                    next += 1;
                    let (subject, payload) = (subject.as_ref(), payload.as_ref());
                    if !is_valid_publish_subject(subject) {
                        first_err.get_or_insert_with(|| invalid_subject(subject));
                        continue;
                    }
                    if max > 0 && payload.len() > max {
                        first_err.get_or_insert_with(|| too_large(payload.len(), max));
                        continue;
                    }
                    if let Err(e) = self.append_pub(&mut out, subject, None, None, payload) {
                        drop(out);
                        self.count_out(n, bytes);
                        return Err(e);
                    }
                    n += 1;
                    bytes += payload.len() as u64;
                }
                drop(out);
                self.count_out(n, bytes);
                if link == Link::Connected && n > 0 {
                    self.write_wake.notify_one();
                }
                if done {
                    return first_err.map_or(Ok(()), Err);
                }
                // The buffer is full: the rest goes once the writer took it.
            }
            self.write_wake.notify_one();
            drained.await;
        }
    }

    /// Appends one `PUB`/`HPUB` to the outbound buffer; while disconnected, refuses (and
    /// takes back) one that would pass the reconnect buffer's limit.
    pub(super) fn append_pub(
        &self,
        out: &mut Outbound,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let before = out.buf.len();
        proto::encode_pub(&mut out.buf, subject, reply, headers, payload);
        if out.link == Link::Disconnected && out.buf.len() > self.opts.reconnect_buffer_size {
            out.buf.truncate(before);
            return Err(PublishError::with_source(
                PublishErrorKind::ReconnectBufferFull,
                format!(
                    "{before} bytes buffered, limit {}: wait for the reconnect or raise reconnect_buffer_size",
                    self.opts.reconnect_buffer_size
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn count_out(&self, n: u64, bytes: u64) {
        if n > 0 {
            self.counters.out_msgs.fetch_add(n, Ordering::Relaxed);
            self.counters.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(super) fn add_sub(&self, sid: u64, entry: SubEntry) -> Result<(), SubscribeError> {
        let mut subs = self.subs.lock();
        let mut out = self.out.lock();
        match out.link {
            Link::Closing | Link::Closed => {
                return Err(SubscribeError::new(SubscribeErrorKind::Closed));
            }
            Link::Connected => {
                proto::encode_sub(&mut out.buf, &entry.subject, entry.queue.as_deref(), sid);
                drop(out);
                self.write_wake.notify_one();
            }
            // Sent with the subscription table on reconnect.
            Link::Disconnected => {}
        }
        subs.insert(sid, entry);
        Ok(())
    }

    /// `max`: `None` unsubscribes now; `Some(n)` after `n` messages in total.
    pub(crate) fn unsubscribe(&self, sid: u64, max: Option<u64>) -> Result<(), UnsubscribeError> {
        let mut subs = self.subs.lock();
        let Some(entry) = subs.get_mut(&sid) else {
            return Err(UnsubscribeError::new(
                if self.out.lock().link == Link::Closed {
                    UnsubscribeErrorKind::Closed
                } else {
                    UnsubscribeErrorKind::NotFound
                },
            ));
        };
        let wire_max = match max {
            Some(n) if n > entry.delivered => {
                entry.max = Some(n);
                Some(n - entry.delivered)
            }
            _ => {
                subs.remove(&sid);
                None
            }
        };
        let mut out = self.out.lock();
        if out.link == Link::Connected {
            proto::encode_unsub(&mut out.buf, sid, wire_max);
            drop(out);
            self.write_wake.notify_one();
        }
        Ok(())
    }

    /// Stops delivery to `sid` once the server confirms the UNSUB: messages already sent
    /// still reach the stream, which then ends.
    pub(crate) async fn drain_sub(&self, sid: u64) -> Result<(), DrainError> {
        {
            let subs = self.subs.lock();
            if !subs.contains_key(&sid) {
                return Ok(());
            }
            let mut out = self.out.lock();
            match out.link {
                Link::Closed | Link::Closing => {
                    return Err(DrainError::new(DrainErrorKind::Closed));
                }
                Link::Connected => proto::encode_unsub(&mut out.buf, sid, None),
                Link::Disconnected => {}
            }
        }
        self.write_wake.notify_one();
        let flushed = tokio::time::timeout(self.opts.drain_timeout, self.flush()).await;
        self.subs.lock().remove(&sid);
        match flushed {
            Err(_) => Err(DrainError::new(DrainErrorKind::TimedOut)),
            Ok(Err(e)) => Err(DrainError::with_source(DrainErrorKind::Flush, e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    pub(super) fn unsub_all(&self) -> Result<(), DrainError> {
        let subs = self.subs.lock();
        let mut out = self.out.lock();
        match out.link {
            Link::Closed | Link::Closing => return Err(DrainError::new(DrainErrorKind::Closed)),
            Link::Disconnected => {}
            Link::Connected => {
                for (sid, e) in subs.iter() {
                    if matches!(e.delivery, Delivery::Channel { .. }) {
                        proto::encode_unsub(&mut out.buf, *sid, None);
                    }
                }
            }
        }
        drop(out);
        drop(subs);
        self.write_wake.notify_one();
        Ok(())
    }

    pub(super) fn remove_channel_subs(&self) {
        self.subs
            .lock()
            .retain(|_, e| matches!(e.delivery, Delivery::Mux));
    }

    pub(super) async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut out = self.out.lock();
            if matches!(out.link, Link::Closing | Link::Closed) {
                return Err(FlushError::new(FlushErrorKind::Closed));
            }
            out.flush_waiters.push(Some(tx));
        }
        self.write_wake.notify_one();
        match rx.await {
            Ok(()) => Ok(()),
            Err(_) if self.out.lock().link == Link::Closed => {
                Err(FlushError::new(FlushErrorKind::Closed))
            }
            Err(_) => Err(FlushError::new(FlushErrorKind::Disconnected)),
        }
    }

    pub(super) fn register_request(
        &self,
    ) -> Result<(String, String, oneshot::Receiver<Message>), RequestError> {
        let mut subs = self.subs.lock();
        let mut mux = self.mux.lock();
        if mux.sid.is_none() {
            let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
            let subject = format!("{}*", mux.prefix);
            let mut out = self.out.lock();
            match out.link {
                Link::Closing | Link::Closed => {
                    return Err(RequestError::new(RequestErrorKind::Closed));
                }
                Link::Connected => {
                    proto::encode_sub(&mut out.buf, &subject, None, sid);
                }
                Link::Disconnected => {}
            }
            drop(out);
            subs.insert(
                sid,
                SubEntry {
                    subject,
                    queue: None,
                    delivery: Delivery::Mux,
                    max: None,
                    delivered: 0,
                },
            );
            mux.sid = Some(sid);
        }
        let token = mux.next_token.to_string();
        mux.next_token += 1;
        let reply = format!("{}{token}", mux.prefix);
        let (tx, rx) = oneshot::channel();
        mux.waiting.insert(token.clone(), tx);
        Ok((token, reply, rx))
    }

    pub(super) fn start_close(&self) {
        {
            let mut out = self.out.lock();
            match out.link {
                Link::Connected | Link::Disconnected => out.link = Link::Closing,
                Link::Closing | Link::Closed => return,
            }
        }
        self.write_wake.notify_one();
        self.close_wake.notify_one();
        self.drained.notify_waiters();
    }

    pub(super) fn is_closing(&self) -> bool {
        matches!(self.out.lock().link, Link::Closing | Link::Closed)
    }

    /// Delivers a MSG/HMSG to its subscription.
    pub(super) fn deliver(
        &self,
        subject: Bytes,
        sid: u64,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        let length = headers.as_ref().map_or(0, Bytes::len) + payload.len();
        self.counters.in_msgs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .in_bytes
            .fetch_add(length as u64, Ordering::Relaxed);
        let parsed = headers
            .as_deref()
            .and_then(parse_headers)
            .unwrap_or_default();
        let msg = Message {
            subject: bytes_to_string(&subject),
            reply: reply.as_ref().map(bytes_to_string),
            payload,
            headers: headers.is_some().then_some(parsed.headers),
            status: parsed.status,
            description: parsed.description,
            length,
        };
        let mut event = None;
        let mut subs = self.subs.lock();
        let Some(entry) = subs.get_mut(&sid) else {
            return;
        };
        entry.delivered += 1;
        let mut remove = entry.max.is_some_and(|m| entry.delivered >= m);
        let mut send_unsub = false;
        match &mut entry.delivery {
            Delivery::Channel { tx, slow } => match tx.try_send(msg) {
                Ok(()) => *slow = false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !*slow {
                        *slow = true;
                        event = Some(Event::SlowConsumer(sid));
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    remove = true;
                    send_unsub = true;
                }
            },
            Delivery::Mux => {
                let mut mux = self.mux.lock();
                let token = msg
                    .subject
                    .strip_prefix(mux.prefix.as_str())
                    .map(str::to_owned);
                if let Some(tx) = token.and_then(|t| mux.waiting.remove(&t)) {
                    let _ = tx.send(msg);
                }
            }
        }
        if remove {
            subs.remove(&sid);
            if send_unsub {
                let mut out = self.out.lock();
                if out.link == Link::Connected {
                    proto::encode_unsub(&mut out.buf, sid, None);
                    drop(out);
                    self.write_wake.notify_one();
                }
            }
        }
        drop(subs);
        if let Some(ev) = event {
            warn!(
                sid,
                "slow consumer: subscription buffer full, dropping messages"
            );
            self.emit(ev);
        }
    }

    /// After a successful reconnect handshake: replays the subscriptions in front of what was
    /// buffered while disconnected, and marks the client connected. `false` if the client was
    /// closed meanwhile.
    pub(super) fn restore(&self, est: &Established) -> bool {
        let subs = self.subs.lock();
        let mut out = self.out.lock();
        if matches!(out.link, Link::Closing | Link::Closed) {
            return false;
        }
        let mut replay = BytesMut::with_capacity(subs.len() * 32 + out.buf.len());
        let mut sids: Vec<&u64> = subs.keys().collect();
        sids.sort();
        for sid in sids {
            let e = &subs[sid];
            proto::encode_sub(&mut replay, &e.subject, e.queue.as_deref(), *sid);
            if let Some(max) = e.max {
                proto::encode_unsub(&mut replay, *sid, Some(max.saturating_sub(e.delivered)));
            }
        }
        replay.put_slice(&out.buf);
        out.buf = replay;
        out.link = Link::Connected;
        out.pings_out = 0;
        drop(out);
        drop(subs);
        self.max_payload
            .store(est.info.max_payload, Ordering::Relaxed);
        *self.info.lock() = est.info.clone();
        self.state.send_replace(State::Connected);
        self.write_wake.notify_one();
        true
    }

    pub(super) fn finish_close(&self) {
        self.subs.lock().clear();
        {
            let mut mux = self.mux.lock();
            mux.waiting.clear();
            mux.sid = None;
        }
        {
            let mut out = self.out.lock();
            out.link = Link::Closed;
            out.buf = BytesMut::new();
            out.flush_waiters.clear();
            out.in_flight.clear();
        }
        self.drained.notify_waiters();
        self.state.send_replace(State::Closed);
        self.emit(Event::Closed);
    }
}

pub(super) fn invalid_subject(subject: &str) -> PublishError {
    PublishError::with_source(PublishErrorKind::InvalidSubject, format!("{subject:?}"))
}

pub(super) fn too_large(size: usize, max: usize) -> PublishError {
    PublishError::with_source(
        PublishErrorKind::MaxPayloadExceeded,
        format!("{size} bytes, the server allows {max}"),
    )
}

pub(super) fn bytes_to_string(b: &Bytes) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}
