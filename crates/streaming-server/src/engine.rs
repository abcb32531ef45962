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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use rnats_streaming::proto::{
    ClientInfo, CloseRequest, CloseResponse, ConnectRequest, ConnectResponse, CtrlMsg, MsgProto,
    Ping, PingResponse, PubAck, PubMsg, ServerInfo, StartPosition, SubState, SubscriptionRequest,
    SubscriptionResponse, UnsubscribeRequest, peek_ack,
};
use rnats_streaming::seqmap::SeqMap;
use rnats_streaming::store::{
    Channel, EncodedMsg, NewMessage, RecoveredState, Store, StoreError, StoreKind,
    is_valid_channel_name, now_nanos,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, trace, warn};

use crate::monitor::{self, MonitorQuery, MonitorReply};
use crate::nats::{InMsg, Inbound, Nats, Subject};
use crate::options::Options;

// Error texts, as the reference server sends them.
pub const ERR_INVALID_CONN_REQ: &str = "stan: invalid connection request";
pub const ERR_INVALID_CLIENT_ID: &str =
    "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed";
pub const ERR_INVALID_PUB_REQ: &str = "stan: invalid publish request";
pub const ERR_INVALID_SUB_REQ: &str = "stan: invalid subscription request";
pub const ERR_MISSING_CLIENT: &str = "stan: clientID missing";
pub const ERR_INVALID_ACK_WAIT: &str = "stan: invalid ack wait time, should be >= 1s";
pub const ERR_INVALID_MAX_INFLIGHT: &str = "stan: invalid MaxInflight, should be >= 1";
pub const ERR_INVALID_START: &str = "stan: invalid start position";
pub const ERR_INVALID_SUBJECT: &str = "stan: invalid subject";
pub const ERR_UNKNOWN_CLIENT: &str = "stan: unknown clientID";
pub const ERR_DUR_QUEUE_COLON: &str =
    "stan: durable name of a durable queue subscriber can't contain the character ':'";
pub const ERR_DUP_DURABLE: &str = "stan: duplicate durable registration";
pub const ERR_INVALID_UNSUB_REQ: &str = "stan: invalid unsubscribe request";
pub const ERR_UNKNOWN_CHANNEL: &str = "stan: unknown channel";
pub const ERR_INVALID_SUB: &str = "stan: invalid subscription";
pub const ERR_INVALID_CLOSE_REQ: &str = "stan: invalid close request";
pub const ERR_CLIENT_REGISTERED: &str = "stan: clientID already registered";
pub const ERR_CLIENT_REPLACED: &str = "client has been replaced or is no longer registered";
pub const ERR_MSG_TOO_LARGE: &str = "stan: message payload too large";

/// Pending and ack records of subscriptions go to disk (and are fsynced) at most this often:
/// losing the last of them in a crash only means redeliveries (see the module documentation).
const LAZY_SUBS_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Redelivery groups expiries this close together.
const REDELIVERY_SLACK: Duration = Duration::from_millis(15);
/// Pending messages of a queue member that left go to the others after this delay.
const QUEUE_REASSIGN_DELAY: Duration = Duration::from_millis(100);
/// Messages read from the store at once for delivery.
const DELIVER_BATCH: usize = 1024;
/// Bytes read from the store at once for delivery (at least one message).
const DELIVER_BATCH_BYTES: usize = 1 << 20;
/// What one commit delivers to a subscription (or queue group) at most, so that a large
/// window (MaxInFlight) is read and sent in turns, interleaved with the acks that come back,
/// instead of read whole while the subscriber waits for its first byte.
const DELIVER_ROUND: usize = 4 * DELIVER_BATCH;
const DELIVER_ROUND_BYTES: usize = DELIVER_BATCH_BYTES;

/// What one commit delivered to a subscription or queue group so far (see `DELIVER_ROUND`).
#[derive(Default)]
struct Round {
    msgs: usize,
    bytes: usize,
}

impl Round {
    fn add(&mut self, m: &EncodedMsg) {
        self.msgs += 1;
        self.bytes += m.encoded.len();
    }

    fn full(&self) -> bool {
        self.msgs >= DELIVER_ROUND || self.bytes >= DELIVER_ROUND_BYTES
    }
}

/// What a NATS message was received on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    SubClose,
    Close,
    Ping,
    Ack,
}

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

/// The request subjects the server answers on.
#[derive(Debug, Clone)]
pub struct Subjects {
    pub discover: String,
    pub ping: String,
    pub publish: String,
    pub subscribe: String,
    pub unsubscribe: String,
    pub sub_close: String,
    pub close: String,
    pub acks: String,
}

impl Subjects {
    pub fn from_info(info: &ServerInfo, opts: &Options) -> Subjects {
        Subjects {
            discover: info.discovery.clone(),
            ping: format!("{}.{}.pings", opts.discover_prefix, opts.cluster_id),
            publish: info.publish.clone(),
            subscribe: info.subscribe.clone(),
            unsubscribe: info.unsubscribe.clone(),
            sub_close: info.sub_close.clone(),
            close: info.close.clone(),
            acks: info.acks_subs.clone(),
        }
    }
}

/// The server info of a new store.
pub fn new_server_info(opts: &Options) -> ServerInfo {
    let cid = &opts.cluster_id;
    ServerInfo {
        cluster_id: cid.clone(),
        discovery: format!("{}.{}", opts.discover_prefix, cid),
        publish: format!("_STAN.pub.{cid}"),
        subscribe: format!("_STAN.sub.{cid}"),
        unsubscribe: format!("_STAN.unsub.{cid}"),
        close: format!("_STAN.close.{cid}"),
        sub_close: format!("_STAN.subclose.{cid}"),
        acks_subs: format!("_INBOX.{}", nuid::next()),
        node_id: String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The next background flush of subscription stores may start.
    LazySubsFlush,
    Redeliver(String, u64),
    Heartbeat(String),
    Expire(String),
    Inactivity(String),
}

/// A registered client.
pub(crate) struct ClientState {
    pub(crate) info: ClientInfo,
    /// (channel, subscription ID) of its subscriptions.
    pub(crate) subs: BTreeSet<(String, u64)>,
    hb_fails: u32,
    hb_in_flight: bool,
    hb_at: Option<Instant>,
}

/// A message sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    expire: Instant,
    count: u32,
}

pub(crate) struct Sub {
    pub(crate) st: SubState,
    /// Sent and not acknowledged. Insert only through [`Sub::add_pending`], which keeps
    /// `deadlines` in step; removing needs nothing more.
    pub(crate) pending: SeqMap<Pending>,
    /// (expiry, sequence) of the pending messages. Entries of messages acked or re-armed
    /// since are stale and dropped when they reach the front (or in a rebuild when they pile
    /// up).
    deadlines: Deadlines,
    /// `st.inbox`, shared by every delivery.
    inbox: Arc<str>,
    initialized: bool,
    /// Durable without a client (closed), or the shadow of a durable queue group.
    pub(crate) offline: bool,
    /// Group key (`q` or `durable:q`).
    pub(crate) queue: Option<String>,
    timer_at: Option<Instant>,
}

/// Expiries of a subscription's pending messages: a queue for those armed in order (every
/// delivery and redelivery: now + ack wait), a heap for the rest (recovery, messages taken
/// over from a queue member that left, a changed ack wait). Pushing, popping and finding the
/// earliest are O(1) for the queue, O(log n) for the heap.
#[derive(Default)]
struct Deadlines {
    queue: VecDeque<(Instant, u64)>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    fn from_pending(pending: &SeqMap<Pending>) -> Deadlines {
        let mut v: Vec<(Instant, u64)> = pending.iter().map(|(s, p)| (p.expire, s)).collect();
        v.sort_unstable();
        Deadlines {
            queue: v.into(),
            heap: BinaryHeap::new(),
        }
    }

    fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    fn push(&mut self, at: Instant, seq: u64) {
        match self.queue.back() {
            Some(&(last, _)) if at < last => self.heap.push(Reverse((at, seq))),
            _ => self.queue.push_back((at, seq)),
        }
    }

    /// The earliest entry.
    fn peek(&self) -> Option<(Instant, u64)> {
        let q = self.queue.front().copied();
        let h = self.heap.peek().map(|Reverse(e)| *e);
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop(&mut self) {
        let from_queue = match (self.queue.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (a, _) => a.is_some(),
        };
        if from_queue {
            self.queue.pop_front();
        } else {
            self.heap.pop();
        }
    }
}

impl Sub {
    fn new(st: SubState, pending: SeqMap<Pending>, queue: Option<String>) -> Sub {
        let deadlines = Deadlines::from_pending(&pending);
        Sub {
            inbox: Arc::from(st.inbox.as_str()),
            st,
            pending,
            deadlines,
            initialized: false,
            offline: false,
            queue,
            timer_at: None,
        }
    }

    pub(crate) fn stalled(&self) -> bool {
        self.pending.len() >= self.max_in_flight()
    }

    fn max_in_flight(&self) -> usize {
        self.st.max_in_flight.max(1) as usize
    }

    /// Messages it can take before it stalls.
    fn room(&self) -> usize {
        self.max_in_flight().saturating_sub(self.pending.len())
    }

    fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.st.ack_wait_in_secs.max(1) as u64)
    }

    fn add_pending(&mut self, seq: u64, p: Pending) {
        self.pending.insert(seq, p);
        self.deadlines.push(p.expire, seq);
    }

    fn is_live(&self, at: Instant, seq: u64) -> bool {
        self.pending.get(seq).is_some_and(|p| p.expire == at)
    }

    /// The earliest expiry among the pending messages.
    fn next_expiry(&mut self) -> Option<Instant> {
        if self.deadlines.len() > 2 * self.pending.len() + 64 {
            self.deadlines = Deadlines::from_pending(&self.pending);
        }
        while let Some((at, seq)) = self.deadlines.peek() {
            if self.is_live(at, seq) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Takes the pending messages expiring at or before `limit`, earliest first.
    fn take_due(&mut self, limit: Instant) -> Vec<(Instant, u64)> {
        let mut due = Vec::new();
        while let Some((at, seq)) = self.deadlines.peek() {
            if self.is_live(at, seq) {
                if at > limit {
                    break;
                }
                if due.last() != Some(&(at, seq)) {
                    due.push((at, seq));
                }
            }
            self.deadlines.pop();
        }
        due
    }

    fn set_inbox(&mut self, inbox: &str) {
        self.st.inbox = inbox.to_string();
        self.inbox = Arc::from(inbox);
    }
}

#[derive(Default)]
struct QGroup {
    durable: bool,
    members: Vec<u64>,
    last_sent: u64,
    shadow: Option<u64>,
}

pub(crate) struct ChannelState {
    pub(crate) ch: Arc<Channel>,
    /// Last sequence known to be flushed: messages after it are not delivered yet.
    durable: u64,
    pub(crate) subs: BTreeMap<u64, Sub>,
    /// (client ID, durable name) → subscription ID, for plain durables.
    durables: HashMap<(String, String), u64>,
    queues: BTreeMap<String, QGroup>,
    expire_at: Option<Instant>,
    inactivity_at: Option<Instant>,
    last_activity: Instant,
}

impl ChannelState {
    fn new(ch: Arc<Channel>) -> Self {
        ChannelState {
            durable: ch.msgs().state().last,
            ch,
            subs: BTreeMap::new(),
            durables: HashMap::new(),
            queues: BTreeMap::new(),
            expire_at: None,
            inactivity_at: None,
            last_activity: Instant::now(),
        }
    }

    fn active_subs(&self) -> usize {
        self.subs.values().filter(|s| !s.offline).count()
    }
}

/// Counters for `/streaming/serverz`.
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) in_msgs: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_msgs: u64,
    pub(crate) out_bytes: u64,
}

/// A PubAck waiting for its message to be flushed.
struct PendingPubAck {
    reply: Subject,
    guid: String,
    channel: String,
}

/// A message flush: the channels appended to (with the last sequence each had when the flush
/// was started) and the PubAcks of those messages.
#[derive(Default)]
struct FlushJob {
    channels: Vec<(String, Arc<Channel>, u64)>,
    acks: Vec<PendingPubAck>,
}

/// What a message flush did: per channel the sequence it covered and its error, if any.
#[derive(Default)]
struct Flushed {
    channels: Vec<(String, Arc<Channel>, u64, Option<String>)>,
    acks: Vec<PendingPubAck>,
    /// Jobs submitted to the flusher that this flush covered.
    jobs: usize,
}

impl Flushed {
    /// The PubAcks of this flush (an error ack for a message whose channel failed to flush).
    fn take_pubacks(&mut self) -> Vec<(Subject, PubAck)> {
        let channels = &self.channels;
        let failed = |name: &str| {
            channels
                .iter()
                .find(|(n, ..)| n == name)
                .and_then(|(.., err)| err.clone())
        };
        std::mem::take(&mut self.acks)
            .into_iter()
            .map(|a| {
                let error = failed(&a.channel).unwrap_or_default();
                (
                    a.reply,
                    PubAck {
                        guid: a.guid,
                        error,
                    },
                )
            })
            .collect()
    }
}

/// PubAcks encoded into one buffer, each sent as a slice of it.
fn encode_pubacks(acks: Vec<(Subject, PubAck)>) -> Vec<(Subject, Bytes)> {
    let mut buf = BytesMut::with_capacity(acks.len() * 32);
    let mut ends = Vec::with_capacity(acks.len());
    for (_, ack) in &acks {
        // Encoding into a BytesMut cannot fail: it grows as needed.
        let _ = ack.encode(&mut buf);
        ends.push(buf.len());
    }
    let buf = buf.freeze();
    let mut start = 0;
    acks.into_iter()
        .zip(ends)
        .map(|((reply, _), end)| {
            let m = (reply, buf.slice(start..end));
            start = end;
            m
        })
        .collect()
}

impl FlushJob {
    fn run(self) -> Flushed {
        let channels = self
            .channels
            .into_iter()
            .map(|(name, ch, upto)| {
                let err = ch.msgs().flush().err().map(|e| e.to_string());
                (name, ch, upto, err)
            })
            .collect();
        Flushed {
            channels,
            acks: self.acks,
            jobs: 1,
        }
    }

    /// Adds `other` to this job (one flush per channel, up to the highest sequence).
    fn merge(&mut self, other: FlushJob) {
        for (name, ch, upto) in other.channels {
            match self.channels.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => e.2 = e.2.max(upto),
                None => self.channels.push((name, ch, upto)),
            }
        }
        self.acks.extend(other.acks);
    }
}

/// The message flusher: one thread running flushes back to back. While it flushes, the
/// engine adds what it appends to the *next* job; as soon as a flush returns, the flusher
/// takes that job, so the disk never waits for the engine (group commit, pipelined).
struct Flusher {
    shared: Arc<FlusherShared>,
    done: mpsc::UnboundedReceiver<Flushed>,
    /// Jobs submitted and not reported done yet.
    outstanding: usize,
}

struct FlusherShared {
    next: parking_lot::Mutex<FlusherNext>,
    wake: parking_lot::Condvar,
}

#[derive(Default)]
struct FlusherNext {
    job: FlushJob,
    jobs: usize,
    stop: bool,
}

impl Flusher {
    fn start(sender: Option<Arc<rnats_server::LocalConn>>) -> std::io::Result<Flusher> {
        let shared = Arc::new(FlusherShared {
            next: parking_lot::Mutex::new(FlusherNext::default()),
            wake: parking_lot::Condvar::new(),
        });
        let (tx, done) = mpsc::unbounded_channel();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("stan-flusher".into())
            .spawn(move || {
                loop {
                    let (job, jobs) = {
                        let mut next = sh.next.lock();
                        while next.jobs == 0 && !next.stop {
                            sh.wake.wait(&mut next);
                        }
                        if next.jobs == 0 {
                            return;
                        }
                        let jobs = std::mem::take(&mut next.jobs);
                        (std::mem::take(&mut next.job), jobs)
                    };
                    // A panic must not stop the flusher (the engine would wait for it forever):
                    // the PubAcks of that flush are lost, the publishers time out.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
                    let mut done = run.unwrap_or_else(|_| {
                        error!("STREAM: A message flush panicked");
                        Flushed::default()
                    });
                    done.jobs = jobs;
                    if let Some(conn) = &sender {
                        let acks = encode_pubacks(done.take_pubacks());
                        if let Err(e) = conn.publish_batch_now(&acks) {
                            debug!("STREAM: publish of a PubAck failed: {e}");
                        }
                    }
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Flusher {
            shared,
            done,
            outstanding: 0,
        })
    }

    fn submit(&mut self, job: FlushJob) {
        {
            let mut next = self.shared.next.lock();
            next.job.merge(job);
            next.jobs += 1;
        }
        self.shared.wake.notify_one();
        self.outstanding += 1;
    }

    /// The next completed flush (never resolves when none is outstanding).
    async fn completed(&mut self) -> Flushed {
        if self.outstanding == 0 {
            return std::future::pending().await;
        }
        match self.done.recv().await {
            Some(done) => {
                self.outstanding = self.outstanding.saturating_sub(done.jobs);
                done
            }
            None => {
                self.outstanding = 0;
                std::future::pending().await
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.next.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

/// The flusher's next completion, if there is a flusher.
async fn flushed(f: &mut Option<Flusher>) -> Flushed {
    match f {
        Some(f) => f.completed().await,
        None => std::future::pending().await,
    }
}

/// What woke the engine up.
enum Wake {
    Event(Event),
    Closed,
    Timer,
    Flushed(Flushed),
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

/// Deliveries waiting to be published: each inbox is held once per run of messages to it (a
/// window's worth of deliveries to one subscription shares one), not cloned per message.
#[derive(Default)]
struct Outbox {
    inboxes: Vec<Arc<str>>,
    msgs: Vec<(u32, Bytes)>,
}

impl Outbox {
    fn push(&mut self, inbox: &Arc<str>, payload: Bytes) {
        if !self
            .inboxes
            .last()
            .is_some_and(|last| Arc::ptr_eq(last, inbox))
        {
            self.inboxes.push(inbox.clone());
        }
        self.msgs.push((self.inboxes.len() as u32 - 1, payload));
    }

    fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The messages as (subject, payload) pairs, for one publish.
    fn pairs(&self) -> Vec<(&str, &[u8])> {
        self.msgs
            .iter()
            .map(|(i, p)| (&*self.inboxes[*i as usize], &p[..]))
            .collect()
    }

    fn clear(&mut self) {
        self.inboxes.clear();
        self.msgs.clear();
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

/// The size of the largest `MsgProto` a message with these fields can be sent as (any
/// sequence, timestamp and redelivery count).
fn max_delivery_len(subject: &str, reply: &str, data: usize) -> usize {
    fn bytes_field(n: usize) -> usize {
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

pub(crate) struct Engine {
    pub(crate) opts: Arc<Options>,
    nc: Nats,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) subjects: Subjects,
    pub(crate) server_id: String,
    pub(crate) start_time: SystemTime,
    pub(crate) clients: BTreeMap<String, ClientState>,
    conn_ids: HashMap<Vec<u8>, String>,
    pub(crate) channels: BTreeMap<String, ChannelState>,
    /// Ack inbox → (channel, subscription ID). foldhash: one lookup per ack.
    acks: HashMap<Box<[u8]>, (String, u64), foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    dup_checks: HashSet<String>,
    tx: mpsc::UnboundedSender<Event>,
    pub(crate) stats: Stats,
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
}

fn encode<M: prost::Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

fn instant_from_nanos(ts: i64, now_ns: i64, now: Instant) -> Instant {
    if ts <= now_ns {
        now.checked_sub(Duration::from_nanos((now_ns - ts) as u64))
            .unwrap_or(now)
    } else {
        now + Duration::from_nanos((ts - now_ns) as u64)
    }
}

fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Engine {
    pub(crate) fn new(
        opts: Arc<Options>,
        nc: Nats,
        store: Arc<dyn Store>,
        info: &ServerInfo,
        server_id: String,
        tx: mpsc::UnboundedSender<Event>,
    ) -> Engine {
        let max_payload = nc.max_payload();
        let flusher = if store.kind() == StoreKind::Memory {
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
            server_id,
            start_time: SystemTime::now(),
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
            if self.flushes_outstanding() {
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
                }
            }
            Event::HbResult {
                client_id,
                conn_id,
                ok,
            } => self.on_hb_result(client_id, conn_id, ok),
            Event::DupCheck { req, reply, alive } => self.on_dup_check(req, reply, alive),
            Event::Monitor(q, tx) => {
                let _ = tx.send(monitor::answer(self, &q));
            }
            Event::Shutdown(_) => {}
        }
    }

    fn file_store(&self) -> bool {
        self.store.kind() != StoreKind::Memory
    }

    fn flushes_outstanding(&self) -> bool {
        self.flusher.as_ref().is_some_and(|f| f.outstanding > 0)
    }

    /// Delivers, flushes the subscription stores replies depend on, sends what the handlers
    /// produced and the PubAcks that are ready, then starts the next message flush.
    async fn commit(&mut self) {
        for (ch, id, seqs) in self.acked.drain(..) {
            let _ = ch.subs().ack_seqs_pending(id, &seqs);
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
                error!("STREAM: Unable to store messages of channel {name:?}: {e}");
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

    // -----------------------------------------------------------------------------------------
    // Recovery
    // -----------------------------------------------------------------------------------------

    /// Adds a client (new or recovered) and arms its first heartbeat.
    fn add_client_state(&mut self, info: ClientInfo, now: Instant) -> String {
        if !info.conn_id.is_empty() {
            self.conn_ids.insert(info.conn_id.clone(), info.id.clone());
        }
        let id = info.id.clone();
        self.clients.insert(
            id.clone(),
            ClientState {
                info,
                subs: BTreeSet::new(),
                hb_fails: 0,
                hb_in_flight: false,
                hb_at: None,
            },
        );
        self.arm_hb(&id, now + self.opts.hb_interval);
        id
    }

    pub(crate) fn recover(&mut self, state: RecoveredState) {
        let now = Instant::now();
        let now_ns = now_nanos();
        for info in state.clients {
            self.add_client_state(info, now);
        }
        for rc in state.channels {
            let name = rc.channel.name().to_string();
            let mut cs = ChannelState::new(rc.channel.clone());
            for rs in rc.subscriptions {
                let mut st = rs.state;
                let client_known = self.clients.contains_key(&st.client_id);
                let durable_queue = st.is_durable && !st.q_group.is_empty();
                let plain_durable = st.is_durable && st.q_group.is_empty();
                if !client_known && !st.is_durable {
                    let _ = cs.ch.subs().delete_sub(st.id);
                    self.dirty_subs.insert(name.clone());
                    continue;
                }
                let mut pending = SeqMap::new();
                let aw = Duration::from_secs(st.ack_wait_in_secs.max(1) as u64);
                for seq in rs.pending {
                    let ts = match cs.ch.msgs().lookup(seq) {
                        Ok(Some(m)) => m.timestamp,
                        _ => now_ns,
                    };
                    let expire = instant_from_nanos(ts, now_ns, now) + aw;
                    pending.insert(seq, Pending { expire, count: 0 });
                }
                let offline = if plain_durable {
                    st.is_closed || !client_known
                } else if durable_queue {
                    !client_known || st.client_id.is_empty()
                } else {
                    false
                };
                if plain_durable && offline && !st.is_closed {
                    st.is_closed = true;
                    let _ = cs.ch.subs().update_sub(&st);
                    self.dirty_subs.insert(name.clone());
                }
                let queue = (!st.q_group.is_empty()).then(|| st.q_group.clone());
                let id = st.id;
                if let Some(q) = &queue {
                    let g = cs.queues.entry(q.clone()).or_default();
                    g.durable = st.is_durable;
                    g.last_sent = g.last_sent.max(st.last_sent);
                    if offline {
                        if let Some(prev) = g.shadow {
                            // Only one shadow per group: merge this one's pending into it.
                            let _ = cs.ch.subs().delete_sub(id);
                            self.dirty_subs.insert(name.clone());
                            if let Some(p) = cs.subs.get_mut(&prev) {
                                for (seq, pe) in pending {
                                    let _ = cs.ch.subs().add_seq_pending(prev, seq);
                                    p.add_pending(seq, pe);
                                }
                            }
                            continue;
                        }
                        g.shadow = Some(id);
                    } else {
                        g.members.push(id);
                    }
                }
                if plain_durable {
                    cs.durables
                        .insert((st.client_id.clone(), st.durable_name.clone()), id);
                }
                if !offline {
                    self.acks
                        .insert(st.ack_inbox.as_bytes().into(), (name.clone(), id));
                    if let Some(c) = self.clients.get_mut(&st.client_id) {
                        c.subs.insert((name.clone(), id));
                    }
                }
                let mut sub = Sub::new(st, pending, queue);
                sub.initialized = true;
                sub.offline = offline;
                cs.subs.insert(id, sub);
            }
            // A group with online members and a shadow: the members take the shadow's pending.
            let groups: Vec<String> = cs.queues.keys().cloned().collect();
            for g in groups {
                let (shadow, members) = {
                    let q = &cs.queues[&g];
                    (q.shadow, q.members.clone())
                };
                if let (Some(sh), false) = (shadow, members.is_empty()) {
                    if let Some(s) = cs.subs.remove(&sh) {
                        for (i, (seq, pe)) in s.pending.into_iter().enumerate() {
                            let to = members[i % members.len()];
                            let _ = cs.ch.subs().add_seq_pending(to, seq);
                            if let Some(m) = cs.subs.get_mut(&to) {
                                m.add_pending(seq, pe);
                            }
                        }
                    }
                    let _ = cs.ch.subs().delete_sub(sh);
                    self.dirty_subs.insert(name.clone());
                    if let Some(q) = cs.queues.get_mut(&g) {
                        q.shadow = None;
                    }
                }
            }
            self.channels.insert(name.clone(), cs);
            self.arm_channel_timers(&name);
            // Redeliver what expired while the server was down, before any new message.
            let ids: Vec<u64> = self.channels[&name].subs.keys().copied().collect();
            self.recovering = true;
            for id in ids {
                self.redeliver(&name, id, false);
            }
            self.recovering = false;
            self.to_deliver.insert(name);
        }
    }

    fn arm_channel_timers(&mut self, name: &str) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let limits = *cs.ch.limits();
        if !limits.max_age.is_zero() && cs.expire_at.is_none() {
            match cs.ch.msgs().expire(now_nanos()) {
                Ok(Some(next)) => {
                    let at = instant_from_nanos(next, now_nanos(), Instant::now());
                    cs.expire_at = Some(at);
                    self.arm(at, Timer::Expire(name.to_string()));
                }
                Ok(None) => {}
                Err(e) => warn!("STREAM: Unable to expire messages of {name:?}: {e}"),
            }
        }
        self.check_inactivity(name);
    }

    fn check_inactivity(&mut self, name: &str) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let mi = cs.ch.limits().max_inactivity;
        if mi.is_zero() || cs.active_subs() > 0 || cs.inactivity_at.is_some() {
            return;
        }
        let at = cs.last_activity + mi;
        cs.inactivity_at = Some(at);
        self.arm(at, Timer::Inactivity(name.to_string()));
    }

    // -----------------------------------------------------------------------------------------
    // Connect / close / ping / heartbeats
    // -----------------------------------------------------------------------------------------

    fn connect_error(&mut self, reply: &Option<Subject>, err: &str) {
        let payload = encode(&ConnectResponse {
            error: err.to_string(),
            protocol: 1,
            ..Default::default()
        });
        self.reply(reply, payload);
    }

    fn on_connect(&mut self, msg: InMsg) {
        let req = match ConnectRequest::decode(msg.payload.clone()) {
            Ok(r) if !r.heartbeat_inbox.is_empty() => r,
            _ => {
                debug!("STREAM: Invalid connection request on {}", msg.subject);
                return self.connect_error(&msg.reply, ERR_INVALID_CONN_REQ);
            }
        };
        if !is_valid_client_id(&req.client_id) {
            return self.connect_error(&msg.reply, ERR_INVALID_CLIENT_ID);
        }
        if let Some(old) = self.clients.get(&req.client_id) {
            if self.dup_checks.contains(&req.client_id) {
                return self.connect_error(&msg.reply, ERR_CLIENT_REGISTERED);
            }
            debug!(
                "STREAM: [Client:{}] Duplicate client ID, checking the old connection",
                req.client_id
            );
            self.dup_checks.insert(req.client_id.clone());
            let nc = self.nc.clone();
            let tx = self.tx.clone();
            let inbox = old.info.hb_inbox.clone();
            let timeout = self.opts.client_dup_check_timeout;
            let reply = msg.reply.clone();
            tokio::spawn(async move {
                let alive = nc.request(&inbox, Bytes::new(), timeout).await.is_ok();
                let _ = tx.send(Event::DupCheck { req, reply, alive });
            });
            return;
        }
        self.register_client(req, &msg.reply);
    }

    fn on_dup_check(&mut self, req: ConnectRequest, reply: Option<Subject>, alive: bool) {
        self.dup_checks.remove(&req.client_id);
        if alive {
            debug!(
                "STREAM: [Client:{}] Client ID already registered",
                req.client_id
            );
            return self.connect_error(&reply, ERR_CLIENT_REGISTERED);
        }
        if self.clients.contains_key(&req.client_id) {
            info!(
                "STREAM: [Client:{}] Replacing old client (it did not answer)",
                req.client_id
            );
            self.close_client(&req.client_id.clone());
        }
        self.register_client(req, &reply);
    }

    fn register_client(&mut self, req: ConnectRequest, reply: &Option<Subject>) {
        let info = ClientInfo {
            id: req.client_id.clone(),
            hb_inbox: req.heartbeat_inbox.clone(),
            conn_id: req.conn_id.clone(),
            protocol: req.protocol,
            ping_interval: req.ping_interval,
            ping_max_out: req.ping_max_out,
        };
        if let Err(e) = self.store.add_client(&info) {
            error!("STREAM: [Client:{}] Unable to store client: {e}", info.id);
            return self.connect_error(reply, &e.to_string());
        }
        let id = self.add_client_state(info, Instant::now());
        debug!(
            "STREAM: [Client:{}] Connected (Inbox={})",
            id, req.heartbeat_inbox
        );
        let mut resp = ConnectResponse {
            pub_prefix: self.subjects.publish.clone(),
            sub_requests: self.subjects.subscribe.clone(),
            unsub_requests: self.subjects.unsubscribe.clone(),
            close_requests: self.subjects.close.clone(),
            sub_close_requests: self.subjects.sub_close.clone(),
            protocol: 1,
            ..Default::default()
        };
        if req.protocol >= 1 {
            resp.ping_requests = self.subjects.ping.clone();
            resp.ping_interval = req.ping_interval;
            resp.ping_max_out = req.ping_max_out;
        }
        self.reply(reply, encode(&resp));
    }

    /// Unregisters a client: non-durable subscriptions go away, durables go offline.
    fn close_client(&mut self, id: &str) {
        let Some(client) = self.clients.remove(id) else {
            return;
        };
        if let Some(owner) = self.conn_ids.get(&client.info.conn_id)
            && owner == id
        {
            self.conn_ids.remove(&client.info.conn_id);
        }
        if let Err(e) = self.store.delete_client(id) {
            error!("STREAM: [Client:{id}] Unable to delete client: {e}");
        }
        for (ch, sid) in client.subs {
            self.remove_sub(&ch, sid, false);
        }
        debug!("STREAM: [Client:{id}] Closed");
    }

    fn on_close(&mut self, msg: InMsg) {
        let Ok(req) = CloseRequest::decode(msg.payload.clone()) else {
            let p = encode(&CloseResponse {
                error: ERR_INVALID_CLOSE_REQ.into(),
            });
            return self.reply(&msg.reply, p);
        };
        if !self.clients.contains_key(&req.client_id) {
            let p = encode(&CloseResponse {
                error: ERR_UNKNOWN_CLIENT.into(),
            });
            return self.reply(&msg.reply, p);
        }
        self.close_client(&req.client_id);
        self.reply(&msg.reply, Bytes::new());
    }

    fn on_ping(&mut self, msg: InMsg) {
        if msg.payload.is_empty() {
            return;
        }
        let Ok(ping) = Ping::decode(msg.payload.clone()) else {
            return;
        };
        let client = self
            .conn_ids
            .get(&ping.conn_id)
            .and_then(|id| self.clients.get(id))
            .filter(|c| c.info.conn_id == ping.conn_id);
        match client {
            Some(c) => {
                let fire = c.hb_fails > 0 && !c.hb_in_flight;
                let id = c.info.id.clone();
                self.reply(&msg.reply, Bytes::new());
                if fire {
                    self.arm_hb(&id, Instant::now());
                }
            }
            None => {
                let p = encode(&PingResponse {
                    error: ERR_CLIENT_REPLACED.into(),
                });
                self.reply(&msg.reply, p);
            }
        }
    }

    fn arm_hb(&mut self, id: &str, at: Instant) {
        if let Some(c) = self.clients.get_mut(id) {
            c.hb_at = Some(at);
            self.timers
                .push(Reverse((at, Timer::Heartbeat(id.to_string()))));
        }
    }

    fn on_hb_timer(&mut self, id: &str, at: Instant) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if c.hb_at != Some(at) || c.hb_in_flight {
            return;
        }
        c.hb_at = None;
        c.hb_in_flight = true;
        let nc = self.nc.clone();
        let tx = self.tx.clone();
        let inbox = c.info.hb_inbox.clone();
        let conn_id = c.info.conn_id.clone();
        let client_id = id.to_string();
        let timeout = self.opts.hb_timeout;
        tokio::spawn(async move {
            let ok = nc.request(&inbox, Bytes::new(), timeout).await.is_ok();
            let _ = tx.send(Event::HbResult {
                client_id,
                conn_id,
                ok,
            });
        });
    }

    fn on_hb_result(&mut self, id: String, conn_id: Vec<u8>, ok: bool) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.info.conn_id != conn_id {
            return;
        }
        c.hb_in_flight = false;
        if ok {
            c.hb_fails = 0;
        } else {
            c.hb_fails += 1;
            debug!(
                "STREAM: [Client:{id}] Missed heartbeat ({} failure(s))",
                c.hb_fails
            );
            if c.hb_fails > self.opts.hb_fail_count {
                info!("STREAM: [Client:{id}] Timed out on heartbeats");
                self.close_client(&id);
                return;
            }
        }
        self.arm_hb(&id, Instant::now() + self.opts.hb_interval);
        if ok {
            // Subscriptions skipped while the client looked dead get their messages now.
            let chans: Vec<String> = self.clients[&id]
                .subs
                .iter()
                .map(|(c, _)| c.clone())
                .collect();
            self.to_deliver.extend(chans);
        }
    }

    fn client_healthy(clients: &BTreeMap<String, ClientState>, id: &str) -> bool {
        clients.get(id).is_some_and(|c| c.hb_fails == 0)
    }

    // -----------------------------------------------------------------------------------------
    // Publish
    // -----------------------------------------------------------------------------------------

    fn pub_error(&mut self, reply: &Option<Subject>, guid: String, err: &str) {
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

    fn on_publish(&mut self, msg: InMsg) {
        let pm = match PubMsg::decode(msg.payload.clone()) {
            Ok(pm) => pm,
            Err(_) => {
                if CtrlMsg::decode(msg.payload.clone()).is_ok_and(|c| !c.server_id.is_empty()) {
                    return;
                }
                return self.pub_error(&msg.reply, String::new(), ERR_INVALID_PUB_REQ);
            }
        };
        if pm.guid.is_empty() || !is_valid_channel_name(&pm.subject) {
            return self.pub_error(&msg.reply, pm.guid, ERR_INVALID_PUB_REQ);
        }
        let known = if pm.conn_id.is_empty() {
            self.clients.contains_key(&pm.client_id)
        } else {
            self.conn_ids
                .get(&pm.conn_id)
                .is_some_and(|id| *id == pm.client_id && self.clients.contains_key(id))
        };
        if !known {
            debug!(
                "STREAM: [Client:{}] Publish from unknown client rejected",
                pm.client_id
            );
            return self.pub_error(&msg.reply, pm.guid, ERR_INVALID_PUB_REQ);
        }
        // The largest MsgProto this message can become must fit in a NATS message. (Clients'
        // PubMsgs carry more framing than that, so this only fires when the server's NATS
        // connection allows less than the publisher's.)
        if max_delivery_len(&pm.subject, &pm.reply, pm.data.len()) > self.max_payload {
            return self.pub_error(&msg.reply, pm.guid, ERR_MSG_TOO_LARGE);
        }
        let ch = match self.lookup_or_create(&pm.subject) {
            Ok(ch) => ch,
            Err(e) => return self.pub_error(&msg.reply, pm.guid, &e),
        };
        let before = ch.msgs().state();
        let stored = ch.msgs().append(NewMessage {
            reply: pm.reply,
            data: pm.data,
            timestamp: now_nanos(),
        });
        let name = pm.subject;
        match stored {
            Ok(m) => {
                self.stats.in_msgs += 1;
                self.stats.in_bytes += m.data.len() as u64;
                let after = ch.msgs().state();
                if after.msgs < before.msgs + 1 && self.warned_limits.insert(name.clone()) {
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
                if let Some(reply) = msg.reply.filter(|r| !r.is_empty()) {
                    self.pubacks.push(PendingPubAck {
                        reply,
                        guid: pm.guid,
                        channel: name,
                    });
                }
            }
            Err(e) => {
                error!("STREAM: Unable to store message on {name:?}: {e}");
                self.pub_error(&msg.reply, pm.guid, &e.to_string());
            }
        }
    }

    fn lookup_or_create(&mut self, name: &str) -> Result<Arc<Channel>, String> {
        if let Some(cs) = self.channels.get(name) {
            return Ok(cs.ch.clone());
        }
        let (ch, created) = self
            .store
            .lookup_or_create_channel(name)
            .map_err(|e| match e {
                StoreError::InvalidChannel(_) => ERR_INVALID_SUBJECT.to_string(),
                e => e.to_string(),
            })?;
        if created {
            debug!("STREAM: Channel {name:?} has been created");
        }
        self.channels
            .insert(name.to_string(), ChannelState::new(ch.clone()));
        self.check_inactivity(name);
        Ok(ch)
    }

    fn on_expire_timer(&mut self, name: &str, at: Instant) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        if cs.expire_at != Some(at) {
            return;
        }
        cs.expire_at = None;
        self.arm_channel_timers(name);
    }

    fn on_inactivity_timer(&mut self, name: &str, at: Instant) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        if cs.inactivity_at != Some(at) {
            return;
        }
        cs.inactivity_at = None;
        if cs.active_subs() > 0 {
            return;
        }
        let mi = cs.ch.limits().max_inactivity;
        if cs.last_activity + mi > Instant::now() {
            self.check_inactivity(name);
            return;
        }
        // Delete the channel with its messages and offline durables.
        let Some(cs) = self.channels.remove(name) else {
            return;
        };
        for s in cs.subs.values() {
            self.acks.remove(s.st.ack_inbox.as_bytes());
        }
        self.dirty_msgs.remove(name);
        self.dirty_subs.remove(name);
        self.lazy_subs.remove(name);
        self.to_deliver.remove(name);
        match self.store.delete_channel(name) {
            Ok(_) => info!("STREAM: Channel {name:?} has been deleted (inactivity)"),
            Err(e) => error!("STREAM: Unable to delete channel {name:?}: {e}"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Subscribe
    // -----------------------------------------------------------------------------------------

    fn sub_response(&mut self, reply: &Option<Subject>, ack_inbox: String, error: &str) {
        let p = encode(&SubscriptionResponse {
            ack_inbox,
            error: error.to_string(),
        });
        self.reply(reply, p);
    }

    fn on_subscribe(&mut self, msg: InMsg) {
        let reply = msg.reply.clone();
        let Ok(sr) = SubscriptionRequest::decode(msg.payload.clone()) else {
            return self.sub_response(&reply, String::new(), ERR_INVALID_SUB_REQ);
        };
        match self.subscribe(&sr) {
            // The response goes out before anything is delivered (commit sends replies first).
            Ok(ack_inbox) => self.sub_response(&reply, ack_inbox, ""),
            Err(e) => {
                debug!(
                    "STREAM: [Client:{}] Subscription on {:?} rejected: {e}",
                    sr.client_id, sr.subject
                );
                self.sub_response(&reply, String::new(), &e)
            }
        }
    }

    fn start_last_sent(ch: &Channel, sr: &SubscriptionRequest, pos: StartPosition) -> u64 {
        let s = ch.msgs().state();
        if s.msgs == 0 {
            return s.last;
        }
        match pos {
            StartPosition::NewOnly => s.last,
            StartPosition::LastReceived => s.last - 1,
            StartPosition::TimeDeltaStart => {
                let start = now_nanos().saturating_sub(sr.start_time_delta);
                match ch.msgs().sequence_for_timestamp(start) {
                    Ok(seq) => seq.saturating_sub(1).min(s.last),
                    Err(_) => s.last,
                }
            }
            StartPosition::SequenceStart => {
                let q = sr.start_sequence;
                if q == 0 || q < s.first {
                    s.first - 1
                } else if q > s.last {
                    s.last
                } else {
                    q - 1
                }
            }
            StartPosition::First => s.first - 1,
        }
    }

    fn subscribe(&mut self, sr: &SubscriptionRequest) -> Result<String, String> {
        if sr.client_id.is_empty() {
            return Err(ERR_MISSING_CLIENT.into());
        }
        if sr.ack_wait_in_secs <= 0 {
            return Err(ERR_INVALID_ACK_WAIT.into());
        }
        if sr.max_in_flight <= 0 {
            return Err(ERR_INVALID_MAX_INFLIGHT.into());
        }
        let Ok(pos) = StartPosition::try_from(sr.start_position) else {
            return Err(ERR_INVALID_START.into());
        };
        if !is_valid_channel_name(&sr.subject) {
            return Err(ERR_INVALID_SUBJECT.into());
        }
        if !self.clients.contains_key(&sr.client_id) {
            return Err(ERR_UNKNOWN_CLIENT.into());
        }
        let name = sr.subject.clone();
        let ch = self.lookup_or_create(&name)?;
        let durable = !sr.durable_name.is_empty();
        if !sr.q_group.is_empty() && durable && sr.durable_name.contains(':') {
            return Err(ERR_DUR_QUEUE_COLON.into());
        }
        let ack_inbox = format!("{}.{}", self.subjects.acks, nuid::next());
        let cid = sr.client_id.clone();

        // The subscription this request creates or resumes.
        let mut resume: Option<u64> = None;
        let mut queue: Option<String> = None;
        let mut last_sent = 0u64;
        if !sr.q_group.is_empty() {
            let key = if durable {
                format!("{}:{}", sr.durable_name, sr.q_group)
            } else {
                sr.q_group.clone()
            };
            let cs = self
                .channels
                .get_mut(&name)
                .expect("channel just looked up");
            match cs.queues.get(&key) {
                Some(g) if !g.members.is_empty() => last_sent = g.last_sent,
                Some(g) if g.shadow.is_some() => resume = g.shadow,
                _ => last_sent = Self::start_last_sent(&ch, sr, pos),
            }
            queue = Some(key);
        } else if durable {
            let cs = self.channels.get(&name).expect("channel just looked up");
            if let Some(&id) = cs.durables.get(&(cid.clone(), sr.durable_name.clone())) {
                let online = cs.subs.get(&id).is_some_and(|s| !s.offline);
                if online {
                    if !self.opts.replace_durable {
                        return Err(ERR_DUP_DURABLE.into());
                    }
                    self.remove_sub(&name, id, false);
                }
                resume = Some(id);
            } else {
                last_sent = Self::start_last_sent(&ch, sr, pos);
            }
        } else {
            last_sent = Self::start_last_sent(&ch, sr, pos);
        }

        let cs = self
            .channels
            .get_mut(&name)
            .expect("channel just looked up");
        let id = if let Some(id) = resume {
            let sub = cs.subs.get_mut(&id).expect("resumed sub exists");
            sub.st.client_id = cid.clone();
            sub.set_inbox(&sr.inbox);
            sub.st.ack_inbox = ack_inbox.clone();
            sub.st.max_in_flight = sr.max_in_flight;
            sub.st.ack_wait_in_secs = sr.ack_wait_in_secs;
            sub.st.is_closed = false;
            sub.offline = false;
            sub.initialized = false;
            if let Err(e) = cs.ch.subs().update_sub(&sub.st) {
                return Err(e.to_string());
            }
            if let Some(q) = &queue
                && let Some(g) = cs.queues.get_mut(q)
            {
                g.shadow = None;
                g.members.push(id);
            }
            id
        } else {
            let mut st = SubState {
                id: 0,
                client_id: cid.clone(),
                q_group: queue.clone().unwrap_or_default(),
                inbox: sr.inbox.clone(),
                ack_inbox: ack_inbox.clone(),
                max_in_flight: sr.max_in_flight,
                ack_wait_in_secs: sr.ack_wait_in_secs,
                durable_name: if queue.is_some() {
                    String::new()
                } else {
                    sr.durable_name.clone()
                },
                last_sent,
                is_durable: durable,
                is_closed: false,
            };
            cs.ch
                .subs()
                .create_sub(&mut st)
                .map_err(|e| e.to_string())?;
            let id = st.id;
            if let Some(q) = &queue {
                let g = cs.queues.entry(q.clone()).or_insert_with(|| QGroup {
                    durable,
                    last_sent,
                    ..Default::default()
                });
                g.members.push(id);
            } else if durable {
                cs.durables
                    .insert((cid.clone(), sr.durable_name.clone()), id);
            }
            cs.subs
                .insert(id, Sub::new(st, SeqMap::new(), queue.clone()));
            id
        };
        cs.inactivity_at = None;
        self.dirty_subs.insert(name.clone());
        self.acks
            .insert(ack_inbox.as_bytes().into(), (name.clone(), id));
        if let Some(c) = self.clients.get_mut(&cid) {
            c.subs.insert((name.clone(), id));
        }
        debug!(
            "STREAM: [Client:{cid}] Started subscription on {name:?} (inbox={}, queue={:?}, durable={:?}, resumed={})",
            sr.inbox,
            queue,
            sr.durable_name,
            resume.is_some()
        );
        // Marked initialized now; its first messages are produced at commit, after the reply.
        if let Some(sub) = self
            .channels
            .get_mut(&name)
            .and_then(|c| c.subs.get_mut(&id))
        {
            sub.initialized = true;
        }
        if resume.is_some() {
            self.redeliver(&name, id, true);
        }
        self.to_deliver.insert(name);
        Ok(ack_inbox)
    }

    // -----------------------------------------------------------------------------------------
    // Unsubscribe / close subscription
    // -----------------------------------------------------------------------------------------

    fn on_unsubscribe(&mut self, msg: InMsg, unsubscribe: bool) {
        let reply = msg.reply.clone();
        let Ok(req) = UnsubscribeRequest::decode(msg.payload.clone()) else {
            return self.sub_response(&reply, String::new(), ERR_INVALID_UNSUB_REQ);
        };
        let Some(cs) = self.channels.get(&req.subject) else {
            return self.sub_response(&reply, String::new(), ERR_UNKNOWN_CHANNEL);
        };
        let by_ack = self
            .acks
            .get(req.inbox.as_bytes())
            .filter(|(c, _)| *c == req.subject)
            .map(|(_, id)| *id);
        let id = by_ack.or_else(|| {
            cs.subs
                .values()
                .find(|s| !s.offline && s.st.inbox == req.inbox)
                .map(|s| s.st.id)
        });
        let Some(id) = id else {
            return self.sub_response(&reply, String::new(), ERR_INVALID_SUB);
        };
        let owner = cs.subs[&id].st.client_id.clone();
        if owner != req.client_id || !self.clients.contains_key(&req.client_id) {
            return self.sub_response(&reply, String::new(), ERR_UNKNOWN_CLIENT);
        }
        if let Some(c) = self.clients.get_mut(&req.client_id) {
            c.subs.remove(&(req.subject.clone(), id));
        }
        debug!(
            "STREAM: [Client:{}] {} subscription on {:?}",
            req.client_id,
            if unsubscribe {
                "Unsubscribed"
            } else {
                "Closed"
            },
            req.subject
        );
        self.remove_sub(&req.subject, id, unsubscribe);
        self.reply(&reply, Bytes::new());
    }

    /// Removes a subscription (unsubscribe) or takes it offline (close of a durable, last
    /// member of a durable queue group).
    fn remove_sub(&mut self, name: &str, id: u64, unsubscribe: bool) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline {
            if unsubscribe {
                let key = (sub.st.client_id.clone(), sub.st.durable_name.clone());
                if let Some(q) = sub.queue.clone() {
                    cs.queues.remove(&q);
                } else {
                    cs.durables.remove(&key);
                }
                let _ = cs.ch.subs().delete_sub(id);
                cs.subs.remove(&id);
                self.dirty_subs.insert(name.to_string());
            }
            return;
        }
        self.acks.remove(sub.st.ack_inbox.as_bytes());
        if let Some(c) = self.clients.get_mut(&sub.st.client_id) {
            c.subs.remove(&(name.to_string(), id));
        }
        self.dirty_subs.insert(name.to_string());
        sub.timer_at = None;
        if let Some(q) = sub.queue.clone() {
            let group = cs.queues.get_mut(&q).expect("member's group exists");
            group.members.retain(|m| *m != id);
            if !group.members.is_empty() {
                // Its pending messages go to the remaining members, redelivered shortly.
                let sub = cs.subs.remove(&id).expect("sub exists");
                let _ = cs.ch.subs().delete_sub(id);
                let members = group.members.clone();
                let at = Instant::now() + QUEUE_REASSIGN_DELAY;
                for (i, (seq, pe)) in sub.pending.into_iter().enumerate() {
                    let to = members[i % members.len()];
                    let _ = cs.ch.subs().add_seq_pending(to, seq);
                    if let Some(m) = cs.subs.get_mut(&to) {
                        m.add_pending(
                            seq,
                            Pending {
                                expire: at,
                                count: pe.count,
                            },
                        );
                    }
                }
                for m in members {
                    self.arm_redelivery(name, m);
                }
                self.to_deliver.insert(name.to_string());
            } else if group.durable && !unsubscribe {
                group.shadow = Some(id);
                sub.offline = true;
                sub.st.client_id.clear();
                let _ = cs.ch.subs().update_sub(&sub.st);
            } else {
                cs.queues.remove(&q);
                cs.subs.remove(&id);
                let _ = cs.ch.subs().delete_sub(id);
            }
        } else if sub.st.is_durable && !unsubscribe {
            sub.offline = true;
            sub.st.is_closed = true;
            let _ = cs.ch.subs().update_sub(&sub.st);
        } else {
            if sub.st.is_durable {
                let key = (sub.st.client_id.clone(), sub.st.durable_name.clone());
                cs.durables.remove(&key);
            }
            cs.subs.remove(&id);
            let _ = cs.ch.subs().delete_sub(id);
        }
        self.check_inactivity(name);
    }

    // -----------------------------------------------------------------------------------------
    // Delivery, acks, redelivery
    // -----------------------------------------------------------------------------------------

    fn encode_msg(m: &MsgProto, redelivered: bool, count: u32) -> Bytes {
        let mut m = m.clone();
        m.redelivered = redelivered;
        m.redelivery_count = count;
        encode(&m)
    }

    /// Up to `n` messages from `seq` for delivery, in their wire form. A message the store
    /// cannot read is skipped, as a lookup would: `Err(seq)` to move past it.
    fn read_for_delivery(ch: &Channel, seq: u64, n: usize) -> Result<Vec<EncodedMsg>, u64> {
        match ch.msgs().read_batch_encoded(seq, n, DELIVER_BATCH_BYTES) {
            Ok(b) => Ok(b),
            Err(e) => {
                warn!(
                    "STREAM: Unable to read messages of {:?} from {seq}: {e}",
                    ch.name()
                );
                match ch.msgs().lookup(seq) {
                    Ok(Some(m)) => Ok(vec![EncodedMsg::from_msg(&m)]),
                    _ => Err(seq),
                }
            }
        }
    }

    /// Sends new (durable) messages to every subscription of the channel that can take them,
    /// up to `DELIVER_ROUND` each. True when one could take more than that right now.
    fn deliver(&mut self, name: &str) -> bool {
        let Engine {
            channels,
            clients,
            outbox,
            stats,
            timers,
            lazy_subs,
            ..
        } = self;
        let Some(cs) = channels.get_mut(name) else {
            return false;
        };
        let state = cs.ch.msgs().state();
        let last = state.last.min(cs.durable);
        let now = Instant::now();
        let mut sent_any = false;
        let mut more = false;
        let mut to_arm: Vec<u64> = Vec::new();
        // Plain subscriptions.
        for sub in cs.subs.values_mut() {
            if sub.queue.is_some() || sub.offline || !sub.initialized {
                continue;
            }
            let mut armed = false;
            let mut round = Round::default();
            loop {
                let room = sub.room();
                let seq = (sub.st.last_sent + 1).max(state.first);
                if room == 0 || seq > last {
                    break;
                }
                if round.full() {
                    more = true;
                    break;
                }
                let n = room.min((last - seq + 1) as usize).min(DELIVER_BATCH);
                let batch = match Self::read_for_delivery(&cs.ch, seq, n) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(skip) => {
                        sub.st.last_sent = skip;
                        continue;
                    }
                };
                if batch[0].sequence > last {
                    break;
                }
                let expire = now + sub.ack_wait();
                let mut sent = Vec::with_capacity(batch.len());
                for m in batch {
                    if m.sequence > last {
                        break;
                    }
                    sub.st.last_sent = m.sequence;
                    stats.out_msgs += 1;
                    stats.out_bytes += m.data_len as u64;
                    round.add(&m);
                    outbox.push(&sub.inbox, m.encoded);
                    sub.add_pending(m.sequence, Pending { expire, count: 0 });
                    sent.push(m.sequence);
                    sent_any = true;
                    armed = true;
                }
                let _ = cs.ch.subs().add_seqs_pending(sub.st.id, &sent);
            }
            if armed {
                to_arm.push(sub.st.id);
            }
        }
        // Queue groups: each message to the least loaded healthy member.
        for group in cs.queues.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let mut round = Round::default();
            'group: loop {
                let seq = (group.last_sent + 1).max(state.first);
                if seq > last {
                    break;
                }
                if round.full() {
                    more = true;
                    break;
                }
                let room: usize = group
                    .members
                    .iter()
                    .filter_map(|mid| cs.subs.get(mid))
                    .filter(|m| m.initialized && Self::client_healthy(clients, &m.st.client_id))
                    .map(Sub::room)
                    .sum();
                if room == 0 {
                    break;
                }
                let n = room.min((last - seq + 1) as usize).min(DELIVER_BATCH);
                let batch = match Self::read_for_delivery(&cs.ch, seq, n) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(skip) => {
                        group.last_sent = skip;
                        continue;
                    }
                };
                for m in batch {
                    if m.sequence > last {
                        break 'group;
                    }
                    let mut best: Option<(usize, usize)> = None;
                    for (i, mid) in group.members.iter().enumerate() {
                        let Some(m) = cs.subs.get(mid) else { continue };
                        if !m.initialized
                            || m.stalled()
                            || !Self::client_healthy(clients, &m.st.client_id)
                        {
                            continue;
                        }
                        if best.is_none_or(|(_, n)| m.pending.len() < n) {
                            best = Some((i, m.pending.len()));
                        }
                    }
                    let Some((idx, _)) = best else {
                        break 'group;
                    };
                    group.last_sent = m.sequence;
                    let mid = group.members.remove(idx);
                    group.members.push(mid);
                    let sub = cs.subs.get_mut(&mid).expect("member exists");
                    sub.st.last_sent = m.sequence;
                    stats.out_msgs += 1;
                    stats.out_bytes += m.data_len as u64;
                    round.add(&m);
                    outbox.push(&sub.inbox, m.encoded);
                    let expire = now + sub.ack_wait();
                    sub.add_pending(m.sequence, Pending { expire, count: 0 });
                    let _ = cs.ch.subs().add_seq_pending(mid, m.sequence);
                    sent_any = true;
                    to_arm.push(mid);
                }
            }
        }
        if sent_any {
            mark(lazy_subs, name);
        }
        to_arm.sort_unstable();
        to_arm.dedup();
        for id in to_arm {
            Self::arm_sub_timer(timers, cs, name, id);
        }
        more
    }

    /// Makes sure a redelivery timer fires at the subscription's earliest expiry.
    fn arm_sub_timer(
        timers: &mut BinaryHeap<Reverse<(Instant, Timer)>>,
        cs: &mut ChannelState,
        name: &str,
        id: u64,
    ) {
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline {
            return;
        }
        let Some(min) = sub.next_expiry() else {
            return;
        };
        if sub.timer_at.is_some_and(|t| t <= min) {
            return;
        }
        sub.timer_at = Some(min);
        timers.push(Reverse((min, Timer::Redeliver(name.to_string(), id))));
    }

    fn arm_redelivery(&mut self, name: &str, id: u64) {
        let Engine {
            channels, timers, ..
        } = self;
        if let Some(cs) = channels.get_mut(name) {
            Self::arm_sub_timer(timers, cs, name, id);
        }
    }

    fn on_ack(&mut self, msg: InMsg) {
        let Engine {
            acks,
            channels,
            lazy_subs,
            to_deliver,
            acked: to_record,
            ..
        } = self;
        let Some((name, id)) = acks.get(msg.subject.as_bytes()) else {
            return;
        };
        let id = *id;
        let Some((channel, sequence)) = peek_ack(&msg.payload) else {
            return;
        };
        if channel != name.as_str() {
            return;
        }
        let Some(cs) = channels.get_mut(name) else {
            return;
        };
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        let was_stalled = sub.stalled();
        let mut acked = None;
        if sub.pending.remove(sequence).is_some() {
            acked = Some((id, was_stalled));
        } else if let Some(q) = sub.queue.clone()
            && let Some(g) = cs.queues.get(&q)
        {
            for mid in &g.members {
                if let Some(m) = cs.subs.get_mut(mid) {
                    let was = m.stalled();
                    if m.pending.remove(sequence).is_some() {
                        acked = Some((*mid, was));
                        break;
                    }
                }
            }
        }
        if let Some((sid, was_stalled)) = acked {
            match to_record.last_mut() {
                Some((ch, id, seqs)) if *id == sid && Arc::ptr_eq(ch, &cs.ch) => {
                    seqs.push(sequence);
                }
                _ => to_record.push((cs.ch.clone(), sid, vec![sequence])),
            }
            mark(lazy_subs, name);
            if was_stalled {
                mark(to_deliver, name);
            }
        }
    }

    fn on_redelivery_timer(&mut self, name: &str, id: u64, at: Instant) {
        let Some(sub) = self
            .channels
            .get_mut(name)
            .and_then(|c| c.subs.get_mut(&id))
        else {
            return;
        };
        if sub.timer_at != Some(at) {
            return;
        }
        sub.timer_at = None;
        self.redeliver(name, id, false);
    }

    /// Resends pending messages of a subscription: all of them (`all`, a resumed durable or
    /// group), or those whose ack wait expired.
    fn redeliver(&mut self, name: &str, id: u64, all: bool) {
        let Engine {
            channels,
            clients,
            outbox,
            stats,
            timers,
            lazy_subs,
            recovering,
            ..
        } = self;
        let keep_member = all || *recovering;
        let Some(cs) = channels.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline || !sub.initialized {
            return;
        }
        let limit = now + REDELIVERY_SLACK;
        let due: Vec<(Instant, u64)> = if all {
            sub.pending.iter().map(|(s, p)| (p.expire, s)).collect()
        } else {
            sub.take_due(limit)
        };
        let healthy = Self::client_healthy(clients, &sub.st.client_id);
        let queue = sub.queue.clone();
        if queue.is_none() && !healthy && !all {
            // The client missed heartbeats: try again after another ack wait.
            let aw = sub.ack_wait();
            for (_, seq) in &due {
                if let Some(p) = sub.pending.get(*seq).copied() {
                    sub.add_pending(
                        *seq,
                        Pending {
                            expire: now + aw,
                            ..p
                        },
                    );
                }
            }
            Self::arm_sub_timer(timers, cs, name, id);
            return;
        }
        let mut touched = vec![id];
        for (_, seq) in due {
            let msg = match cs.ch.msgs().lookup(seq) {
                Ok(Some(m)) => m,
                _ => {
                    // Gone from the store (limits): nothing to redeliver.
                    if let Some(s) = cs.subs.get_mut(&id) {
                        s.pending.remove(seq);
                    }
                    let _ = cs.ch.subs().ack_seq_pending(id, seq);
                    mark(lazy_subs, name);
                    continue;
                }
            };
            // Queue members: the message may go to another (healthy, least loaded) member.
            let mut target = id;
            if let Some(q) = &queue
                && !keep_member
                && let Some(g) = cs.queues.get(q)
            {
                let mut best: Option<(u64, usize)> = None;
                for mid in &g.members {
                    let Some(m) = cs.subs.get(mid) else { continue };
                    if !m.initialized || !Self::client_healthy(clients, &m.st.client_id) {
                        continue;
                    }
                    if best.is_none_or(|(_, n)| m.pending.len() < n) {
                        best = Some((*mid, m.pending.len()));
                    }
                }
                if let Some((b, _)) = best {
                    target = b;
                }
            }
            let Some(pe) = cs.subs.get_mut(&id).and_then(|s| s.pending.remove(seq)) else {
                continue;
            };
            if target != id {
                let _ = cs.ch.subs().ack_seq_pending(id, seq);
                let _ = cs.ch.subs().add_seq_pending(target, seq);
                mark(lazy_subs, name);
            }
            let Some(t) = cs.subs.get_mut(&target) else {
                continue;
            };
            let count = pe.count + 1;
            let payload = Self::encode_msg(&msg, true, count);
            stats.out_msgs += 1;
            stats.out_bytes += msg.data.len() as u64;
            outbox.push(&t.inbox, payload);
            let expire = now + t.ack_wait();
            t.add_pending(seq, Pending { expire, count });
            touched.push(target);
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            Self::arm_sub_timer(timers, cs, name, t);
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn deadlines_follow_pending() {
        let now = Instant::now();
        let st = SubState {
            max_in_flight: 3,
            ..Default::default()
        };
        let mut sub = Sub::new(st, SeqMap::new(), None);
        let at = |ms| now + Duration::from_millis(ms);
        for (seq, ms) in [(1, 30), (2, 10), (3, 20)] {
            sub.add_pending(
                seq,
                Pending {
                    expire: at(ms),
                    count: 0,
                },
            );
        }
        assert!(sub.stalled());
        assert_eq!(sub.room(), 0);
        assert_eq!(sub.next_expiry(), Some(at(10)));
        // Acked: its deadline goes stale.
        sub.pending.remove(2);
        assert_eq!(sub.next_expiry(), Some(at(20)));
        // Re-armed later: the old deadline is stale.
        sub.add_pending(
            3,
            Pending {
                expire: at(40),
                count: 1,
            },
        );
        assert_eq!(sub.next_expiry(), Some(at(30)));
        assert_eq!(sub.take_due(at(35)), vec![(at(30), 1)]);
        assert_eq!(sub.take_due(at(100)), vec![(at(40), 3)]);
        assert_eq!(sub.next_expiry(), None);
        // The caller redelivers (re-adds) or drops what it took.
        sub.pending.remove(1);
        sub.pending.remove(3);
        // Many acks: the heap is rebuilt instead of growing without bound.
        for seq in 10..1000 {
            sub.add_pending(
                seq,
                Pending {
                    expire: at(seq),
                    count: 0,
                },
            );
            sub.pending.remove(seq);
        }
        sub.add_pending(
            5000,
            Pending {
                expire: at(5000),
                count: 0,
            },
        );
        assert_eq!(sub.next_expiry(), Some(at(5000)));
        assert!(sub.deadlines.len() <= 2 * sub.pending.len() + 64);
    }
}
