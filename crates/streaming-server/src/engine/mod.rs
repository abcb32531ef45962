//! The streaming engine: one task owning all state, fed by the NATS subscriptions.
//!
//! # Shape
//!
//! Every protocol message (connect, publish, subscribe, unsubscribe, close, ping, ack) reaches
//! the engine from its NATS subscriptions, which it reads itself ([`Inbound`], in arrival
//! order over a local connection, by priority over a client connection); other inputs
//! come as an [`Event`] on one channel; timers (redelivery, heartbeats, age expiry,
//! channel inactivity) live in a heap inside the engine; asynchronous checks (heartbeat
//! requests, the duplicate-client probe) run in small tasks that report back as events.
//!
//! Handlers are synchronous: they mutate the state, append what must be sent to an outbox, and
//! mark channels whose stores need a flush or whose subscriptions may get messages. After each
//! batch of events (up to `io_batch_size` publishes arrive together) the engine *commits*:
//!
//! 1. runs delivery for the marked channels (new messages, unstalled subscriptions, new subs),
//!    reading the messages in batches from the store, in the form they are sent;
//! 2. flushes the subscription stores that a reply depends on (a subscription created,
//!    resumed, closed or removed), on a blocking thread, and waits for it;
//! 3. hands the channels appended to since the previous commit, with the PubAcks of those
//!    messages, to the *flusher*;
//! 4. sends the replies, then the deliveries, then the PubAcks that became ready, each list
//!    with one call into the NATS connection (a local connection to the embedded server, or
//!    a client connection with `-ns`: see [`crate::nats`]).
//!
//! The flusher is one thread that runs message flushes (fsync for the file store) back to
//! back while the engine goes on (group commit, pipelined): what is appended during a flush
//! joins the next one, which starts as soon as the previous returns and covers all of it.
//! When a flush completes, the channel's *durable* sequence moves up to what it covered, its
//! PubAcks become ready and its subscriptions may receive the messages: **a message is
//! delivered and acknowledged only once it is durable** (per the store's sync policy), so a
//! sequence a subscriber saw cannot come back with another message after a crash. (The memory
//! store is "flushed" at the start of each commit.) A subscription response always goes out
//! before the first message to that subscription, and per-channel order is the store's.
//! Requests that end something (close, unsubscribe, subscription close) are handled only once
//! the PubAcks of the publishes received before them were sent.
//!
//! Pending and ack records of subscriptions (one per delivered batch, one per run of acks
//! handled together, written at the start of the next commit) are flushed in the
//! background, at most every 10 ms, not before the deliveries go out: a crash can lose the
//! last of them, and the messages concerned are then delivered again (at-least-once, as for
//! an ack lost on the way).
//! Each subscription keeps its pending messages' expiries in order ([`Deadlines`]), so finding
//! the next redelivery is O(1) (O(log n) for the out-of-order cases), not a walk over
//! everything in flight.

mod channels;
mod clients;
mod delivery;
mod errors;
mod flusher;
mod monitoring;
mod outbox;
mod publish;
mod recovery;
mod redelivery;
mod replicated;
mod state;
mod subscribe;
mod writes;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rnats_streaming::proto::{ConnectRequest, PubAck, ServerInfo};
use rnats_streaming::store::{Channel, Store, StoreKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, trace};

use crate::monitorz::{MonitorQuery, MonitorReply};
use crate::nats::{InMsg, Inbound, Kind, Nats, Subject};
use crate::options::Options;
use crate::status::Status;
use crate::subjects::Subjects;

pub use errors::ProtocolError;
use flusher::{FlushJob, Flushed, Flusher, PendingPubAck, encode_pubacks, flushed};
use outbox::Outbox;
pub(crate) use replicated::Repl;
use replicated::replicated;
use state::{ChannelState, ClientState, Stats};
use writes::Sink;

/// Pending and ack records of subscriptions go to disk (and are fsynced) at most this often:
/// losing the last of them in a crash only means redeliveries (see the module documentation).
const LAZY_SUBS_FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Input of the engine.
pub enum Event {
    Nats(Kind, InMsg),
    HbResult {
        client_id: String,
        conn_id: Vec<u8>,
        ok: bool,
    },
    DupCheck {
        req: ConnectRequest,
        reply: Option<Subject>,
        alive: bool,
    },
    Monitor(MonitorQuery, oneshot::Sender<MonitorReply>),
    Shutdown(oneshot::Sender<()>),
}

/// What the engine's timer heap holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The next background flush of subscription stores may start.
    LazySubsFlush,
    Redeliver(String, u64),
    Heartbeat(String),
    Expire(String),
    Inactivity(String),
}

/// What woke the engine up.
enum Wake {
    Event(Event),
    Closed,
    Timer,
    Flushed(Flushed),
    /// A replicated round committed (or failed).
    Replicated(replicated::Job, Result<(), String>),
    SubsFlushed,
    /// Deliveries left over from the last commit (see `DELIVER_ROUND`).
    MoreToDeliver,
}

async fn join_subs_flush(h: &mut Option<JoinHandle<()>>) {
    match h {
        Some(j) => {
            let _ = j.await;
            *h = None;
        }
        None => std::future::pending().await,
    }
}

/// Adds `name` to `set` (allocating only when it is not there yet).
fn mark(set: &mut BTreeSet<String>, name: &str) {
    if !set.contains(name) {
        set.insert(name.to_string());
    }
}

/// Flushes subscription stores, logging failures.
fn flush_subs(chans: &[Arc<Channel>]) {
    for ch in chans {
        if let Err(e) = ch.subs().flush() {
            error!(
                "STREAM: Unable to flush subscriptions of {:?}: {e}",
                ch.name()
            );
        }
    }
}

fn encode<M: prost::Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

/// The instant at wall-clock time `ts` (ns since the epoch), given that `now_ns` is `now`.
fn instant_from_nanos(ts: i64, now_ns: i64, now: Instant) -> Instant {
    if ts <= now_ns {
        now.checked_sub(Duration::from_nanos((now_ns - ts) as u64))
            .unwrap_or(now)
    } else {
        now + Duration::from_nanos((ts - now_ns) as u64)
    }
}

/// The engine: every piece of protocol state, owned by one task.
pub(crate) struct Engine {
    opts: Arc<Options>,
    nc: Nats,
    store: Arc<dyn Store>,
    subjects: Subjects,
    /// Identity and state, shared with monitoring.
    status: Arc<Status>,
    clients: BTreeMap<String, ClientState>,
    conn_ids: HashMap<Vec<u8>, String>,
    channels: BTreeMap<String, ChannelState>,
    /// Ack inbox → (channel, subscription ID). foldhash: one lookup per ack.
    acks: HashMap<Box<[u8]>, (String, u64), foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    dup_checks: HashSet<String>,
    tx: mpsc::UnboundedSender<Event>,
    stats: Stats,
    max_payload: usize,
    /// Deliveries, sent after the replies.
    outbox: Outbox,
    replies: Vec<(Subject, Bytes)>,
    /// PubAcks of messages appended since the last message flush started.
    pubacks: Vec<PendingPubAck>,
    /// PubAcks to send (messages flushed, or errors).
    ready_acks: Vec<(Subject, PubAck)>,
    to_deliver: BTreeSet<String>,
    /// Channels appended to since the last message flush started.
    dirty_msgs: BTreeSet<String>,
    /// Subscription stores with changes a reply depends on: flushed before the replies.
    dirty_subs: BTreeSet<String>,
    /// Subscription stores with only pending/ack records: flushed in the background.
    lazy_subs: BTreeSet<String>,
    /// Acks to record in the subscription stores at the next commit, one record per run of
    /// acks of the same subscription.
    acked: Vec<(Arc<Channel>, u64, Vec<u64>)>,
    /// The message flusher (file store; None for the memory store, flushed inline).
    flusher: Option<Flusher>,
    /// The background flush of subscription stores.
    subs_flushing: Option<JoinHandle<()>>,
    /// When the last background flush of subscription stores started (they start at most
    /// every `LAZY_SUBS_FLUSH_INTERVAL`), and whether a timer waits for the next one.
    lazy_flush_started: Option<Instant>,
    lazy_flush_armed: bool,
    warned_limits: HashSet<String>,
    /// During the start-up redelivery pass, queue messages stay with the member that had them.
    recovering: bool,
    /// Where store changes go (see `writes`).
    sink: Sink,
    /// The RAFT link of a clustered leader (see `replicated`).
    repl: Option<Repl>,
}

impl Engine {
    pub(crate) fn new(
        opts: Arc<Options>,
        nc: Nats,
        store: Arc<dyn Store>,
        info: &ServerInfo,
        status: Arc<Status>,
        tx: mpsc::UnboundedSender<Event>,
        repl: Option<Repl>,
    ) -> Engine {
        let max_payload = nc.max_payload();
        let flusher = if store.kind() == StoreKind::Memory || repl.is_some() {
            None
        } else {
            // Over a local connection the flusher thread sends the PubAcks itself, as soon
            // as the flush returns (no hand-off to the engine task on the way).
            let sender = match &nc {
                Nats::Local(c) => Some(c.clone()),
                Nats::Remote(_) => None,
            };
            match Flusher::start(sender) {
                Ok(f) => Some(f),
                Err(e) => {
                    error!("STREAM: Unable to start the flusher thread, flushing inline: {e}");
                    None
                }
            }
        };
        Engine {
            subjects: Subjects::from_info(info, &opts),
            opts,
            nc,
            store,
            status,
            clients: BTreeMap::new(),
            conn_ids: HashMap::new(),
            channels: BTreeMap::new(),
            acks: HashMap::default(),
            timers: BinaryHeap::new(),
            dup_checks: HashSet::new(),
            tx,
            stats: Stats::default(),
            max_payload,
            outbox: Outbox::default(),
            replies: Vec::new(),
            pubacks: Vec::new(),
            ready_acks: Vec::new(),
            to_deliver: BTreeSet::new(),
            dirty_msgs: BTreeSet::new(),
            dirty_subs: BTreeSet::new(),
            lazy_subs: BTreeSet::new(),
            acked: Vec::new(),
            flusher,
            subs_flushing: None,
            lazy_flush_started: None,
            lazy_flush_armed: false,
            warned_limits: HashSet::new(),
            recovering: false,
            sink: if repl.is_some() {
                Sink::Log(Vec::new())
            } else {
                Sink::Direct
            },
            repl,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Main loop
    // -----------------------------------------------------------------------------------------

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut inbound: Inbound,
    ) {
        let batch = self.opts.io_batch_size.max(1);
        // The start-up pass (recovered pending messages) before anything else.
        self.commit().await;
        loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                (job, res) = replicated(&mut self.repl) => Wake::Replicated(job, res),
                (kind, m) = inbound.next() => {
                    Wake::Event(Event::Nats(kind, m))
                }
                ev = rx.recv() => ev.map_or(Wake::Closed, Wake::Event),
                () = sleep => Wake::Timer,
                done = flushed(&mut self.flusher) => Wake::Flushed(done),
                () = join_subs_flush(&mut self.subs_flushing) => Wake::SubsFlushed,
                () = std::future::ready(()), if !self.to_deliver.is_empty() => Wake::MoreToDeliver,
            };
            match wake {
                Wake::Closed => break,
                Wake::Timer => self.fire_timers(),
                Wake::Flushed(done) => self.on_flushed(done),
                Wake::Replicated(job, res) => self.on_replicated(job, res),
                Wake::SubsFlushed | Wake::MoreToDeliver => {}
                Wake::Event(ev) => {
                    let mut next = Some(ev);
                    let mut n = 0;
                    while let Some(ev) = next.take() {
                        if let Event::Shutdown(done) = ev {
                            self.settle(true).await;
                            let _ = done.send(());
                            return;
                        }
                        if self.is_barrier(&ev) {
                            self.settle(false).await;
                        }
                        self.handle(ev);
                        n += 1;
                        if n < batch {
                            next = rx
                                .try_recv()
                                .ok()
                                .or_else(|| inbound.try_next().map(|(k, m)| Event::Nats(k, m)));
                        }
                    }
                }
            }
            self.commit().await;
        }
        self.settle(true).await;
    }

    /// Requests that end something wait for the PubAcks of earlier publishes.
    fn is_barrier(&self, ev: &Event) -> bool {
        matches!(
            ev,
            Event::Nats(Kind::Close | Kind::Unsubscribe | Kind::SubClose, _)
        ) && (self.flushes_outstanding() || !self.dirty_msgs.is_empty())
    }

    /// Commits until every message flush (and with `all`, every subscription flush) is done
    /// and everything it made ready was sent.
    async fn settle(&mut self, all: bool) {
        loop {
            if all {
                // Everything now, not at the next background interval.
                self.lazy_flush_started = None;
            }
            self.commit().await;
            if self.repl.as_ref().is_some_and(|r| r.outstanding > 0) {
                let (job, res) = replicated(&mut self.repl).await;
                self.on_replicated(job, res);
            } else if self.flushes_outstanding() {
                let done = flushed(&mut self.flusher).await;
                self.on_flushed(done);
            } else if all && self.subs_flushing.is_some() {
                join_subs_flush(&mut self.subs_flushing).await;
            } else {
                break;
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Nats(kind, msg) => {
                if self.opts.stan_trace {
                    trace!(
                        "STREAM: Received {:?} on {} ({} bytes)",
                        kind,
                        msg.subject,
                        msg.payload.len()
                    );
                }
                match kind {
                    Kind::Connect => self.on_connect(msg),
                    Kind::Publish => self.on_publish(msg),
                    Kind::Subscribe => self.on_subscribe(msg),
                    Kind::Unsubscribe => self.on_unsubscribe(msg, true),
                    Kind::SubClose => self.on_unsubscribe(msg, false),
                    Kind::Close => self.on_close(msg),
                    Kind::Ping => self.on_ping(msg),
                    Kind::Ack => self.on_ack(msg),
                    // Never subscribed by the engine.
                    Kind::Control => {}
                }
            }
            Event::HbResult {
                client_id,
                conn_id,
                ok,
            } => self.on_hb_result(client_id, conn_id, ok),
            Event::DupCheck { req, reply, alive } => self.on_dup_check(req, reply, alive),
            Event::Monitor(q, tx) => {
                let _ = tx.send(self.answer(&q));
            }
            Event::Shutdown(_) => {}
        }
    }

    fn file_store(&self) -> bool {
        self.store.kind() != StoreKind::Memory
    }

    /// Message flushes (or replicated rounds) not completed yet.
    fn flushes_outstanding(&self) -> bool {
        self.flusher.as_ref().is_some_and(|f| f.outstanding > 0)
            || self.repl.as_ref().is_some_and(|r| r.outstanding > 0)
    }

    /// Delivers, flushes the subscription stores replies depend on, sends what the handlers
    /// produced and the PubAcks that are ready, then starts the next message flush.
    async fn commit(&mut self) {
        if self.sink.is_log() {
            return self.commit_replicated().await;
        }
        for (ch, id, seqs) in std::mem::take(&mut self.acked) {
            let _ = self.sink.acked(&ch, id, &seqs);
        }
        if self.flusher.is_none() && !self.dirty_msgs.is_empty() {
            // Memory store (nothing to wait for), or no flusher thread: flush now, so that
            // this commit delivers and acks.
            let job = self.flush_job();
            self.on_flushed(job.run());
        }
        let chans: Vec<String> = std::mem::take(&mut self.to_deliver).into_iter().collect();
        let mut more = Vec::new();
        for name in chans {
            if self.deliver(&name) {
                more.push(name);
            }
        }
        self.to_deliver.extend(more);
        if !self.dirty_subs.is_empty() {
            let names = std::mem::take(&mut self.dirty_subs);
            let subs: Vec<Arc<Channel>> = names
                .iter()
                .filter_map(|n| self.channels.get(n).map(|c| c.ch.clone()))
                .collect();
            for n in &names {
                self.lazy_subs.remove(n);
            }
            if self.file_store() {
                let _ = tokio::task::spawn_blocking(move || flush_subs(&subs)).await;
            } else {
                flush_subs(&subs);
            }
        }
        if !self.dirty_msgs.is_empty() {
            let job = self.flush_job();
            if let Some(f) = &mut self.flusher {
                f.submit(job);
            }
        }
        self.send().await;
        if self.subs_flushing.is_none() && !self.lazy_subs.is_empty() {
            let now = Instant::now();
            let due = self
                .lazy_flush_started
                .map_or(now, |t| t + LAZY_SUBS_FLUSH_INTERVAL);
            if !self.file_store() || due <= now {
                let subs: Vec<Arc<Channel>> = std::mem::take(&mut self.lazy_subs)
                    .iter()
                    .filter_map(|n| self.channels.get(n).map(|c| c.ch.clone()))
                    .collect();
                if self.file_store() {
                    self.lazy_flush_started = Some(now);
                    self.subs_flushing =
                        Some(tokio::task::spawn_blocking(move || flush_subs(&subs)));
                } else {
                    flush_subs(&subs);
                }
            } else if !self.lazy_flush_armed {
                self.lazy_flush_armed = true;
                self.arm(due, Timer::LazySubsFlush);
            }
        }
    }

    /// The next message flush: the channels appended to since the last one, with the PubAcks
    /// of their messages.
    fn flush_job(&mut self) -> FlushJob {
        let channels = std::mem::take(&mut self.dirty_msgs)
            .into_iter()
            .filter_map(|n| {
                let ch = self.channels.get(&n)?.ch.clone();
                let upto = ch.msgs().state().last;
                Some((n, ch, upto))
            })
            .collect();
        FlushJob {
            channels,
            acks: std::mem::take(&mut self.pubacks),
        }
    }

    /// A message flush completed: its messages may be delivered, its PubAcks sent.
    fn on_flushed(&mut self, mut done: Flushed) {
        let acks = done.take_pubacks();
        self.ready_acks.extend(acks);
        for (name, ch, upto, err) in done.channels {
            if let Some(e) = err {
                // Their publishers got an error PubAck; the messages are delivered only
                // once a later flush makes them durable (if the store keeps them).
                error!("STREAM: Unable to store messages of channel {name:?}: {e}");
                continue;
            }
            // (Not a channel deleted and created again meanwhile.)
            if let Some(cs) = self.channels.get_mut(&name)
                && Arc::ptr_eq(&cs.ch, &ch)
            {
                cs.durable = cs.durable.max(upto);
                if !cs.subs.is_empty() {
                    mark(&mut self.to_deliver, &name);
                }
            }
        }
    }

    /// Sends the replies, the deliveries, then the ready PubAcks.
    async fn send(&mut self) {
        if !self.replies.is_empty() {
            if let Err(e) = self.nc.publish_batch(&self.replies).await {
                debug!("STREAM: publish of a reply failed: {e}");
            }
            self.replies.clear();
        }
        if !self.outbox.is_empty() {
            let msgs = self.outbox.pairs();
            if let Err(e) = self.nc.publish_batch(&msgs).await {
                debug!("STREAM: publish of a message failed: {e}");
            }
            drop(msgs);
            self.outbox.clear();
        }
        if !self.ready_acks.is_empty() {
            let out = encode_pubacks(std::mem::take(&mut self.ready_acks));
            if let Err(e) = self.nc.publish_batch(&out).await {
                debug!("STREAM: publish of a PubAck failed: {e}");
            }
        }
    }

    fn reply(&mut self, reply: &Option<Subject>, payload: Bytes) {
        if let Some(r) = reply.as_ref().filter(|r| !r.is_empty()) {
            self.replies.push((r.clone(), payload));
        }
    }

    fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, t))) = self.timers.pop() else {
                break;
            };
            match t {
                // The commit after the timers starts it.
                Timer::LazySubsFlush => self.lazy_flush_armed = false,
                Timer::Redeliver(ch, id) => self.on_redelivery_timer(&ch, id, at),
                Timer::Heartbeat(cid) => self.on_hb_timer(&cid, at),
                Timer::Expire(ch) => self.on_expire_timer(&ch, at),
                Timer::Inactivity(ch) => self.on_inactivity_timer(&ch, at),
            }
        }
    }
}
