//! The streaming store interface, shaped for memory, file and SQL back ends.
//!
//! ```text
//! Store ──┬── server info (cluster ID, request subjects)     init / recover
//!         ├── clients (ID, heartbeat inbox, connID, pings)   add_client / delete_client
//!         └── channels (created with resolved limits)        create / lookup / delete
//!               Channel ─┬─ MsgStore: the message log          append → sequence + timestamp
//!                        └─ SubStore: subscriptions            create / update / delete,
//!                                                              pending (sent) and acked seqs
//! ```
//!
//! # Sync, not async
//!
//! Every method is a plain blocking call taking `&self`; stores are `Send + Sync` and channels
//! are shared as `Arc<Channel>`. The reasons:
//!
//! * the file store is `std::fs` work. `tokio::fs` would only wrap each call in
//!   `spawn_blocking`, paying a thread hop per append, while an append here is a `memcpy` into
//!   the channel's write buffer;
//! * the traits stay object safe: the server picks `Box<dyn Store>` at run time from `-st`;
//! * each channel has its own lock, so "one task per channel appends" never contends, while
//!   other tasks (a backlog replay worker, monitoring) may still read the same channel.
//!
//! What the server must do in exchange: calls that may wait for the disk —
//! [`MsgStore::flush`] and [`SubStore::flush`] (fsync), [`Store::add_client`],
//! [`Store::create_channel`], recovery, [`Store::sync`] and [`Store::close`] — belong on a
//! blocking thread (`tokio::task::spawn_blocking`, `block_in_place`, or a dedicated I/O
//! thread, like the reference server's single I/O loop). Appends, lookups of recent messages
//! and subscription updates are buffered and cheap. A SQL store would implement the same
//! traits by driving its async client on its own runtime from these blocking calls.
//!
//! # Durability contract
//!
//! Appends and subscription updates are buffered: nothing is promised until the matching
//! `flush()` returns `Ok`. The server therefore stores a batch, flushes the touched channels,
//! and only then sends the PubAcks and delivers the messages (and likewise flushes
//! subscription stores before replying to subscription requests). The pending and ack
//! records of deliveries are flushed in the background: one lost in a crash means the message
//! is delivered again, which at-least-once delivery allows. What "flushed" means on disk
//! depends on the store; see the file store's module documentation. Client records and server info are durable when
//! [`Store::add_client`], [`Store::delete_client`] and [`Store::init`] return.
//!
//! # Limits
//!
//! Global limits with per-channel overrides ([`StoreLimits`]) are resolved once, when a
//! channel is created or recovered ([`Channel::limits`]). Message limits are enforced by the
//! store: `max_msgs` and `max_bytes` on every append (dropping the oldest messages, always
//! keeping the newest), `max_age` on append and whenever the owner calls
//! [`MsgStore::expire`] (the server arms a timer at the instant it returns). `max_channels`
//! and `max_subs` are hard errors. Sequences never go back: a channel whose messages all
//! expired keeps its last sequence and continues from there.

#[cfg(test)]
mod conformance;
pub mod crypto;
pub mod file;
mod limits;
pub mod memory;
pub mod replicate;
pub mod sql;
mod subs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::proto::{ClientInfo, MsgProto, ServerInfo, SubState};

pub use limits::{ChannelLimits, ChannelLimitsOverride, LimitsError, StoreLimits};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors returned by stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `max_channels` reached. The text is what the reference server sends to clients.
    #[error("too many channels")]
    TooManyChannels,
    /// `max_subs` reached on this channel. Text as sent to clients.
    #[error("too many subscriptions per channel")]
    TooManySubs,
    /// [`Store::create_channel`] on an existing channel.
    #[error("channel {0:?} already exists")]
    ChannelExists(String),
    /// A channel that differs from an existing one only by case. Text as sent to clients
    /// (including the reference server's typo).
    #[error(
        "rejecting channel {name:?} because channel {existing:?} alreay exists (different cases not allowed)"
    )]
    ChannelCaseConflict { name: String, existing: String },
    /// Not a valid channel name (empty, wildcards, `/`, bad dots, too long for the store).
    #[error("invalid channel name {0:?}")]
    InvalidChannel(String),
    /// [`MsgStore::store`] with a sequence beyond `last + 1` while messages are still held.
    #[error("sequence gap on channel {channel:?}: next sequence is {expected}, got {got}")]
    SequenceGap {
        channel: String,
        expected: u64,
        got: u64,
    },
    /// The channel reached the largest sequence a store holds (2^64 - 2): the next one
    /// cannot be stored.
    #[error("channel {channel:?} has no sequence numbers left")]
    SequencesExhausted { channel: String },
    /// A message or record too large for the store's record format.
    #[error("record of {size} bytes is larger than the maximum of {max}")]
    RecordTooLarge { size: u64, max: u64 },
    /// The store directory is locked by another store instance (this or another process).
    #[error("store directory {} is locked by another server (lock file {})", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },
    /// Data on disk fails its checks somewhere a crash cannot explain (not a torn tail).
    #[error("corrupt store file {} at offset {offset}: {kind}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        kind: Corruption,
    },
    /// An I/O error, with the file or directory it happened on.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Invalid store limits.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The directory holds an unfinished migration from nats-streaming-server
    /// (`rnats_streaming::migrate`): it must complete before the store is opened.
    #[error(
        "store directory {} holds an unfinished migration from nats-streaming-server: start rnats-streaming-server on it to complete the migration",
        dir.display()
    )]
    MigrationPending { dir: PathBuf },
    /// The directory holds a nats-streaming-server file store, which must be migrated first.
    #[error(
        "store directory {} holds a nats-streaming-server file store: migrate it first (rnats-streaming-server does so at start-up)",
        dir.display()
    )]
    ReferenceStore { dir: PathBuf },
    /// The store, or this channel's stores, were closed or the channel deleted.
    #[error("store is closed")]
    Closed,
    /// Encryption at rest: a payload that does not decrypt (wrong key), or a bad key setting.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The SQL store's database failed or refused (see [`sql::SqlError`]).
    #[error(transparent)]
    Sql(#[from] sql::SqlError),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, kind: Corruption) -> Self {
        StoreError::Corrupt {
            path: path.into(),
            offset,
            kind,
        }
    }
}

/// What is wrong with a corrupt record or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The file does not start with the expected magic number.
    BadMagic,
    /// A file format version this build does not read.
    UnsupportedVersion(u32),
    /// The header disagrees with the file name or with the previous file.
    HeaderMismatch { expected: u64, found: u64 },
    /// A record's CRC-32 does not match its payload.
    BadCrc { expected: u32, computed: u32 },
    /// A record length that cannot be right.
    BadLength(u64),
    /// The file ends inside a record where more records are known to follow.
    Truncated,
    /// A record whose payload is not the expected protobuf message.
    Decode(String),
    /// A record type this build does not know.
    UnknownRecordType(u8),
    /// A message record or index entry carries the wrong sequence.
    SequenceMismatch { expected: u64, found: u64 },
    /// The index disagrees with the data file.
    IndexMismatch,
    /// A message record with sequence 2^64 - 1, past the largest a store holds.
    SequenceOverflow,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadMagic => f.write_str("bad magic number"),
            Corruption::UnsupportedVersion(v) => write!(f, "unsupported file version {v}"),
            Corruption::HeaderMismatch { expected, found } => {
                write!(f, "header says {found}, expected {expected}")
            }
            Corruption::BadCrc { expected, computed } => {
                write!(
                    f,
                    "CRC mismatch (stored {expected:#010x}, computed {computed:#010x})"
                )
            }
            Corruption::BadLength(n) => write!(f, "implausible record length {n}"),
            Corruption::Truncated => f.write_str("record truncated"),
            Corruption::Decode(e) => write!(f, "undecodable record: {e}"),
            Corruption::UnknownRecordType(t) => write!(f, "unknown record type {t}"),
            Corruption::SequenceMismatch { expected, found } => {
                write!(f, "sequence {found} where {expected} was expected")
            }
            Corruption::IndexMismatch => f.write_str("index entry does not match the data file"),
            Corruption::SequenceOverflow => {
                f.write_str("sequence past the largest a store holds (2^64 - 2)")
            }
        }
    }
}

/// The store back ends, as named in `-st` and in `/streaming/storez`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    Memory,
    File,
    Sql,
}

impl StoreKind {
    /// `"MEMORY"`, `"FILE"` or `"SQL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "MEMORY",
            StoreKind::File => "FILE",
            StoreKind::Sql => "SQL",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to append: the store assigns sequence and timestamp.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMessage {
    pub reply: String,
    pub data: Bytes,
    /// Wall clock at publish time, in ns since the Unix epoch (normally [`now_nanos`]). The
    /// stored timestamp is `max(timestamp, previous timestamp of the channel)`.
    pub timestamp: i64,
}

impl NewMessage {
    /// The message as stored at `sequence` of `channel`, whose previous message has timestamp
    /// `last_ts` (timestamps never go back within a channel).
    pub(crate) fn stamp(self, sequence: u64, channel: String, last_ts: i64) -> MsgProto {
        MsgProto {
            sequence,
            subject: channel,
            reply: self.reply,
            data: self.data,
            timestamp: self.timestamp.max(last_ts),
            ..Default::default()
        }
    }
}

/// A stored message in the form a subscriber receives it on first delivery: its encoded
/// `MsgProto` (`redelivered` false, `redelivery_count` 0), ready to send as a NATS payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMsg {
    pub sequence: u64,
    /// Length of the message's `data` (for statistics).
    pub data_len: usize,
    pub encoded: Bytes,
}

impl EncodedMsg {
    /// Encodes `m` as a first delivery.
    pub fn from_msg(m: &MsgProto) -> EncodedMsg {
        let mut m = m.clone();
        m.redelivered = false;
        m.redelivery_count = 0;
        EncodedMsg {
            sequence: m.sequence,
            data_len: m.data.len(),
            encoded: Bytes::from(prost::Message::encode_to_vec(&m)),
        }
    }
}

/// Counters of one message log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgStoreState {
    /// First sequence held; `last + 1` when no message is held (all expired, or none yet).
    pub first: u64,
    /// Last sequence ever stored (0 when none yet). Survives expiry.
    pub last: u64,
    /// Number of messages held.
    pub msgs: u64,
    /// Bytes accounted for the held messages (memory: encoded `MsgProto` size; file: encoded
    /// size + 40 bytes, as the reference file store).
    pub bytes: u64,
}

impl MsgStoreState {
    /// The first sequence as monitoring shows it: 0 when no message is held.
    pub fn first_seq_or_zero(&self) -> u64 {
        if self.msgs == 0 { 0 } else { self.first }
    }
}

/// The message log of one channel.
pub trait MsgStore: Send + Sync {
    /// Appends a message: sequence = last + 1, timestamp = max(`msg.timestamp`, last
    /// timestamp). Applies `max_msgs`/`max_bytes` and expires by `max_age` relative to the new
    /// timestamp. Returns the stored message (its `data` shares `msg.data`), ready to deliver.
    /// Buffered until [`flush`](Self::flush).
    fn append(&self, msg: NewMessage) -> Result<MsgProto>;

    /// Stores a message whose sequence and timestamp were assigned elsewhere (replication,
    /// replay). A sequence ≤ last is ignored (idempotent); a sequence beyond last + 1 is
    /// accepted only when no message is held (the log jumps forward), otherwise
    /// [`StoreError::SequenceGap`]. Returns the sequence.
    fn store(&self, msg: &MsgProto) -> Result<u64>;

    /// The message with this sequence, or `None` if it is not held (expired or never stored).
    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>>;

    /// Up to `max_msgs` consecutive messages from `start` (or from the first held message if
    /// `start` is older), stopping once `max_bytes` of encoded messages would be exceeded (at
    /// least one message is returned when any is available). For replay.
    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>>;

    /// [`read_batch`](Self::read_batch), each message in its wire form. The file store hands
    /// out the stored records themselves (checked, not decoded): one read for the index, one
    /// for the data, no allocation per message.
    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        Ok(self
            .read_batch(start, max_msgs, max_bytes)?
            .iter()
            .map(EncodedMsg::from_msg)
            .collect())
    }

    /// Counters: first/last sequence, message count, bytes.
    fn state(&self) -> MsgStoreState;

    /// The sequence of the first held message whose timestamp is ≥ `timestamp`, or `last + 1`
    /// if there is none (a subscription starting there gets only new messages).
    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64>;

    /// Removes messages older than `max_age` at `now` (ns since the epoch). Returns when the
    /// next message expires (ns since the epoch), or `None` when there is no age limit or no
    /// message; the owner calls `expire` again then.
    fn expire(&self, now: i64) -> Result<Option<i64>>;

    /// Makes every append so far durable according to the store's policy.
    fn flush(&self) -> Result<()>;

    /// Like [`flush`](Self::flush), but forces an fsync whatever the policy.
    fn sync(&self) -> Result<()> {
        self.flush()
    }

    /// Removes all messages. Sequences continue from the last one.
    fn empty(&self) -> Result<()>;

    /// Flushes and closes this log; later calls fail with [`StoreError::Closed`]. Called by
    /// the store on [`Store::delete_channel`] and [`Store::close`].
    fn close(&self) -> Result<()>;

    /// The first held message.
    fn first_msg(&self) -> Result<Option<MsgProto>> {
        let s = self.state();
        if s.msgs == 0 {
            Ok(None)
        } else {
            self.lookup(s.first)
        }
    }

    /// The last held message.
    fn last_msg(&self) -> Result<Option<MsgProto>> {
        let s = self.state();
        if s.msgs == 0 {
            Ok(None)
        } else {
            self.lookup(s.last)
        }
    }
}

/// A subscription as recovered: its last state and the sequences sent but not acked.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredSubscription {
    pub state: SubState,
    pub pending: BTreeSet<u64>,
}

/// The subscriptions of one channel.
///
/// Implementations do not validate that a subscription exists before recording pending or
/// acked sequences for it; records about unknown IDs are ignored.
pub trait SubStore: Send + Sync {
    /// Records a new subscription and assigns `state.id`. Fails with
    /// [`StoreError::TooManySubs`] when the channel's `max_subs` is reached (offline durables
    /// count).
    fn create_sub(&self, state: &mut SubState) -> Result<()>;

    /// Replaces the stored state of `state.id` (e.g. a durable going offline, a resume with a
    /// new ack inbox). Pending sequences are kept, and `last_sent` never goes back.
    fn update_sub(&self, state: &SubState) -> Result<()>;

    /// Deletes a subscription and its pending sequences.
    fn delete_sub(&self, id: u64) -> Result<()>;

    /// Records that message `seq` was sent to subscription `id` (it becomes pending, and
    /// `last_sent` moves up to it).
    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()>;

    /// Records that subscription `id` acknowledged `seq`.
    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()>;

    /// [`SubStore::add_seq_pending`] for each of `seqs`, in order (one record for all of them
    /// in the file store).
    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        seqs.iter().try_for_each(|&s| self.add_seq_pending(id, s))
    }

    /// [`SubStore::ack_seq_pending`] for each of `seqs` (one record in the file store).
    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        seqs.iter().try_for_each(|&s| self.ack_seq_pending(id, s))
    }

    /// The subscriptions as stored now, with their pending sequences (ordered by ID).
    fn subscriptions(&self) -> Vec<RecoveredSubscription>;

    /// Number of stored subscriptions.
    fn count(&self) -> usize;

    /// Makes every change so far durable according to the store's policy.
    fn flush(&self) -> Result<()>;

    /// Like [`flush`](Self::flush), but forces an fsync whatever the policy.
    fn sync(&self) -> Result<()> {
        self.flush()
    }

    /// Flushes and closes this store; later calls fail with [`StoreError::Closed`]. Called by
    /// the store on [`Store::delete_channel`] and [`Store::close`].
    fn close(&self) -> Result<()>;
}

/// One channel: its name, resolved limits, message log and subscriptions.
pub struct Channel {
    name: String,
    limits: ChannelLimits,
    msgs: Box<dyn MsgStore>,
    subs: Box<dyn SubStore>,
}

impl Channel {
    pub(crate) fn new(
        name: String,
        limits: ChannelLimits,
        msgs: Box<dyn MsgStore>,
        subs: Box<dyn SubStore>,
    ) -> Self {
        Channel {
            name,
            limits,
            msgs,
            subs,
        }
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Limits resolved for this channel (global, then wildcard and literal overrides).
    pub fn limits(&self) -> &ChannelLimits {
        &self.limits
    }

    /// The message log.
    pub fn msgs(&self) -> &dyn MsgStore {
        &*self.msgs
    }

    /// The subscriptions.
    pub fn subs(&self) -> &dyn SubStore {
        &*self.subs
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("state", &self.msgs.state())
            .field("subs", &self.subs.count())
            .finish()
    }
}

/// A recovered channel with its subscriptions.
#[derive(Debug, Clone)]
pub struct RecoveredChannel {
    pub channel: Arc<Channel>,
    pub subscriptions: Vec<RecoveredSubscription>,
}

/// Everything a persistent store remembers. Empty for the memory store and a new directory.
#[derive(Debug, Clone, Default)]
pub struct RecoveredState {
    /// `None` if [`Store::init`] was never called on this store.
    pub info: Option<ServerInfo>,
    pub clients: Vec<ClientInfo>,
    /// Ordered by channel name.
    pub channels: Vec<RecoveredChannel>,
}

impl RecoveredState {
    /// Nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.info.is_none() && self.clients.is_empty() && self.channels.is_empty()
    }
}

/// A streaming store.
pub trait Store: Send + Sync {
    /// Which back end this is.
    fn kind(&self) -> StoreKind;

    /// Persists the server information (cluster ID, request subjects). Durable on return.
    fn init(&self, info: &ServerInfo) -> Result<()>;

    /// The state found when the store was opened, as it is now (server info, clients,
    /// channels with their subscriptions). The server calls it once at start-up.
    fn recover(&self) -> Result<RecoveredState>;

    /// The limits this store applies.
    fn limits(&self) -> &StoreLimits;

    /// Creates a channel with its resolved limits. Errors: invalid name,
    /// [`StoreError::ChannelExists`], [`StoreError::ChannelCaseConflict`],
    /// [`StoreError::TooManyChannels`].
    fn create_channel(&self, name: &str) -> Result<Arc<Channel>>;

    /// The channel, if it exists.
    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>>;

    /// Looks the channel up, creating it if needed (atomically). `true` if it was created.
    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)>;

    /// All channels, ordered by name.
    fn channels(&self) -> Vec<Arc<Channel>>;

    /// Deletes a channel with its messages and subscriptions. Handles still held on it fail
    /// with [`StoreError::Closed`] afterwards. Returns `false` if there was no such channel.
    fn delete_channel(&self, name: &str) -> Result<bool>;

    /// Records a client (replacing any record with the same ID). Durable on return.
    fn add_client(&self, info: &ClientInfo) -> Result<()>;

    /// Removes a client record. Durable on return. Returns `false` if it was unknown.
    fn delete_client(&self, id: &str) -> Result<bool>;

    /// Forces everything written so far to stable storage, whatever the sync policy (for a
    /// periodic "auto sync" timer and before shutdown). No-op for the memory store.
    fn sync(&self) -> Result<()>;

    /// Flushes, syncs and closes every file, and releases the directory lock. Further calls
    /// fail with [`StoreError::Closed`].
    fn close(&self) -> Result<()>;
}

/// Nanoseconds since the Unix epoch, from the system clock.
pub fn now_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Whether `name` is a valid channel name for publish and subscribe: non-empty, no leading
/// or trailing `.`, no empty token (`..`), no `/`, no wildcard (`*`, `>`) and no whitespace
/// or control characters (they cannot appear in a NATS subject).
pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_channel(name, false)
}

/// Like [`is_valid_channel_name`] but allowing wildcard tokens (`*` anywhere, `>` last), as
/// in per-channel limits configuration keys.
pub fn is_valid_channel_pattern(name: &str) -> bool {
    is_valid_channel(name, true)
}

fn is_valid_channel(name: &str, wildcards: bool) -> bool {
    if name.is_empty() || name.contains('/') {
        return false;
    }
    if name
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return false;
    }
    let mut tokens = name.split('.').peekable();
    while let Some(tok) = tokens.next() {
        if tok.is_empty() {
            return false;
        }
        let wild = tok == "*" || (tok == ">" && tokens.peek().is_none());
        if tok.contains(['*', '>']) && !(wildcards && wild) {
            return false;
        }
    }
    true
}

/// Whether channel `name` (literal) matches `pattern` (tokens `*` = one token, `>` = rest).
pub(crate) fn channel_matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The channel map shared by the store implementations: name lookups, the case-insensitive
/// uniqueness rule and `max_channels`.
pub(crate) struct Registry {
    pub(crate) channels: BTreeMap<String, Arc<Channel>>,
    lower: HashMap<String, String>,
}

impl Registry {
    /// Every channel with its subscriptions, as recovery hands them to the server.
    pub(crate) fn recovered(&self) -> Vec<RecoveredChannel> {
        self.channels
            .values()
            .map(|c| RecoveredChannel {
                channel: c.clone(),
                subscriptions: c.subs().subscriptions(),
            })
            .collect()
    }

    pub(crate) fn new() -> Self {
        Registry {
            channels: BTreeMap::new(),
            lower: HashMap::new(),
        }
    }

    /// Checks that `name` may be created now.
    pub(crate) fn check_create(&self, name: &str, limits: &StoreLimits) -> Result<()> {
        if !is_valid_channel_name(name) {
            return Err(StoreError::InvalidChannel(name.to_owned()));
        }
        if self.channels.contains_key(name) {
            return Err(StoreError::ChannelExists(name.to_owned()));
        }
        if let Some(existing) = self.lower.get(&name.to_lowercase()) {
            return Err(StoreError::ChannelCaseConflict {
                name: name.to_owned(),
                existing: existing.clone(),
            });
        }
        if limits.max_channels > 0 && self.channels.len() as u64 >= limits.max_channels {
            return Err(StoreError::TooManyChannels);
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, channel: Arc<Channel>) {
        self.lower
            .insert(channel.name().to_lowercase(), channel.name().to_owned());
        self.channels.insert(channel.name().to_owned(), channel);
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<Channel>> {
        let ch = self.channels.remove(name)?;
        self.lower.remove(&name.to_lowercase());
        Some(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for ok in ["foo", "foo.bar", "a-b_c", "Foo.BAR.1", "é.ü", "foo!#"] {
            assert!(is_valid_channel_name(ok), "{ok}");
        }
        for bad in [
            "", ".foo", "foo.", "foo..bar", "foo/bar", "foo.*", ">", "a b", "f*o", "a\tb",
        ] {
            assert!(!is_valid_channel_name(bad), "{bad:?}");
        }
        for ok in ["foo.*", "foo.>", "*.bar", ">", "foo"] {
            assert!(is_valid_channel_pattern(ok), "{ok}");
        }
        for bad in ["foo.>.bar", "foo*", "foo.>>", ""] {
            assert!(!is_valid_channel_pattern(bad), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(channel_matches("foo.>", "foo.bar"));
        assert!(channel_matches("foo.>", "foo.bar.baz"));
        assert!(!channel_matches("foo.>", "foo"));
        assert!(channel_matches("foo.*", "foo.bar"));
        assert!(!channel_matches("foo.*", "foo.bar.baz"));
        assert!(channel_matches("*.bar", "foo.bar"));
        assert!(channel_matches("foo", "foo"));
        assert!(!channel_matches("foo", "foo.bar"));
    }

    #[test]
    fn error_texts_match_the_protocol() {
        assert_eq!(StoreError::TooManyChannels.to_string(), "too many channels");
        assert_eq!(
            StoreError::TooManySubs.to_string(),
            "too many subscriptions per channel"
        );
        let e = StoreError::ChannelCaseConflict {
            name: "Foo".into(),
            existing: "foo".into(),
        };
        assert_eq!(
            e.to_string(),
            "rejecting channel \"Foo\" because channel \"foo\" alreay exists (different cases not allowed)"
        );
    }
}
