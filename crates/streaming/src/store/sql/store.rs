//! [`SqlStore`]: opening (connect, check the schema, recover), the channel registry, clients
//! and server info, and the background flusher.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;

use super::SqlError;
use super::db::Db;
use super::driver::{Source, SqlDriver, V};
use super::fence;
use super::msgs::SqlMsgStore;
use super::queries::Q;
use super::recover::{self, SCHEMA_VERSION};
use super::schema;
use super::subs::SqlSubStore;
use crate::proto::{ClientInfo, MsgProto, ServerInfo, SubState};
use crate::store::{
    Channel, EncodedMsg, MsgStore, MsgStoreState, NewMessage, RecoveredState,
    RecoveredSubscription, Registry, Result, Store, StoreError, StoreKind, StoreLimits, SubStore,
};

/// How often the background thread looks for work.
const JANITOR_TICK: Duration = Duration::from_millis(250);

/// SQL store options (the reference server's `sql_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStoreOptions {
    /// `postgres` or `mysql` (`sql_driver`).
    pub driver: SqlDriver,
    /// The data source in the driver's form (`sql_source`; see the dsn module).
    pub source: String,
    /// One statement per operation instead of batching until flush (`sql_no_caching`).
    /// Default false.
    pub no_caching: bool,
    /// Connections open at once; 0 = unlimited (`sql_max_open_conns`). Default 0.
    pub max_open_conns: usize,
    /// Rows per multi-row `INSERT` of messages; below 5, one `INSERT` per message
    /// (`sql_bulk_insert_limit`). Default [`super::DEFAULT_BULK_INSERT_LIMIT`].
    pub bulk_insert_limit: usize,
    /// Newest messages kept in memory per channel after they are committed, to serve reads
    /// without a round trip. Default 1024.
    pub cache_msgs: usize,
    /// Bytes of committed messages kept in memory per channel. Default 8 MiB.
    pub cache_bytes: usize,
}

impl SqlStoreOptions {
    /// Default options for `driver` and `source`.
    pub fn new(driver: SqlDriver, source: impl Into<String>) -> SqlStoreOptions {
        SqlStoreOptions {
            driver,
            source: source.into(),
            no_caching: false,
            max_open_conns: 0,
            bulk_insert_limit: super::DEFAULT_BULK_INSERT_LIMIT,
            cache_msgs: 1024,
            cache_bytes: 8 << 20,
        }
    }
}

/// What the store and its channels share.
pub(crate) struct Shared {
    pub db: Db,
    pub opts: SqlStoreOptions,
    max_sub_id: AtomicU64,
    /// The largest encoded message the database takes (`Messages.data`, `max_allowed_packet`):
    /// larger ones are refused at append rather than failing every later flush.
    pub max_message: u64,
}

impl Shared {
    /// A new subscription ID (one counter for all channels).
    pub fn next_sub_id(&self) -> u64 {
        self.max_sub_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The highest subscription ID given so far.
    pub fn max_sub_id(&self) -> u64 {
        self.max_sub_id.load(Ordering::Relaxed)
    }

    fn exec(&self, stmts: Vec<super::driver::Stmt>) -> std::result::Result<Vec<u64>, SqlError> {
        let tx = stmts.len() > 1;
        self.db
            .call(move |cx| async move { cx.with_conn(async |c| c.run(&stmts, tx).await).await })
    }
}

/// A channel's stores, as the store keeps them (the registry holds them as trait objects).
#[derive(Clone)]
struct Parts {
    id: i64,
    msgs: Arc<SqlMsgStore>,
    subs: Arc<SqlSubStore>,
}

struct Inner {
    registry: Registry,
    parts: BTreeMap<String, Parts>,
    clients: BTreeMap<String, ClientInfo>,
    info: Option<ServerInfo>,
    max_channel_id: i64,
    closed: bool,
}

/// The SQL store (see the module documentation).
pub struct SqlStore {
    shared: Arc<Shared>,
    limits: StoreLimits,
    inner: Arc<Mutex<Inner>>,
    janitor: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

/// Creates the schema (every table and index of `crates/streaming/sql/<driver>.db.sql`) in the
/// database of `source`; tables that exist are left alone.
pub fn create_schema(driver: SqlDriver, source: &str) -> std::result::Result<(), SqlError> {
    let db = Db::open(Source::parse(driver, source)?, 1)?;
    let r = db.call(move |cx| async move { schema::create(&cx, driver).await });
    db.close();
    r
}

impl SqlStore {
    /// Connects, checks the schema and reads the store back. Errors: [`SqlError`]s
    /// `InvalidSource`, `Unreachable`, `MissingTable`, `MissingColumn`, and whatever
    /// recovery finds wrong with the data.
    pub fn open(opts: SqlStoreOptions, limits: StoreLimits) -> Result<SqlStore> {
        limits.validate()?;
        let driver = opts.driver;
        let db = Db::open(Source::parse(driver, &opts.source)?, opts.max_open_conns)?;
        let max_message = match db.call(move |cx| async move { schema::check(&cx, driver).await }) {
            Ok(m) => m,
            Err(e) => {
                db.close();
                return Err(e.into());
            }
        };
        // Let a previous owner's transactions still in flight end before reading (fence.rs);
        // a database that does not answer fails in the recovery that follows.
        let _ = db.call(|cx| async move { fence::wait_for_writers(&cx).await });
        let shared = Arc::new(Shared {
            db,
            opts,
            max_sub_id: AtomicU64::new(0),
            max_message,
        });
        let r = Self::recover_all(&shared, &limits);
        let inner = match r {
            Ok(i) => i,
            Err(e) => {
                shared.db.close();
                return Err(e);
            }
        };
        let store = SqlStore {
            shared,
            limits,
            inner: Arc::new(Mutex::new(inner)),
            janitor: Mutex::new(None),
        };
        store.start_janitor();
        Ok(store)
    }

    fn recover_all(shared: &Arc<Shared>, limits: &StoreLimits) -> Result<Inner> {
        let loaded = recover::load(shared)?;
        shared
            .max_sub_id
            .store(loaded.max_sub_id, Ordering::Relaxed);
        let mut inner = Inner {
            registry: Registry::new(),
            parts: BTreeMap::new(),
            clients: loaded.clients,
            info: loaded.info,
            max_channel_id: loaded.max_channel_id,
            closed: false,
        };
        for row in &loaded.channels {
            if row.deleted {
                // An earlier run was interrupted while purging it.
                let id = row.id;
                let _ = shared.db.spawn(move |cx| async move {
                    let _ = recover::purge_channel(&cx, id).await;
                });
                continue;
            }
            let l = limits.resolve(&row.name);
            let lc = recover::load_channel(shared, row, &l)?;
            let msgs = Arc::new(SqlMsgStore::new(
                shared.clone(),
                &row.name,
                row.id,
                &l,
                Some(lc.log),
            ));
            let subs = Arc::new(SqlSubStore::new(
                shared.clone(),
                row.id,
                l.max_subs,
                Some((lc.subs, lc.rows)),
            ));
            Self::insert(&mut inner, &row.name, row.id, l, msgs, subs);
        }
        Ok(inner)
    }

    fn insert(
        inner: &mut Inner,
        name: &str,
        id: i64,
        limits: crate::store::ChannelLimits,
        msgs: Arc<SqlMsgStore>,
        subs: Arc<SqlSubStore>,
    ) -> Arc<Channel> {
        let ch = Arc::new(Channel::new(
            name.to_owned(),
            limits,
            Box::new(MsgsHandle(msgs.clone())),
            Box::new(SubsHandle(subs.clone())),
        ));
        inner.registry.insert(ch.clone());
        inner
            .parts
            .insert(name.to_owned(), Parts { id, msgs, subs });
        ch
    }

    fn start_janitor(&self) {
        let (tx, rx) = mpsc::channel::<()>();
        let inner = Arc::downgrade(&self.inner);
        let t = std::thread::Builder::new()
            .name("rnats-sql-flusher".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(JANITOR_TICK) {
                    let Some(inner) = inner.upgrade() else { return };
                    let parts: Vec<Parts> = inner.lock().parts.values().cloned().collect();
                    drop(inner);
                    for p in parts {
                        if p.subs.due() {
                            let _ = p.subs.flush();
                        }
                        let _ = p.msgs.flush_inner(true);
                    }
                }
            })
            .ok();
        *self.janitor.lock() = t.map(|t| (tx, t));
    }

    fn stop_janitor(&self) {
        if let Some((tx, t)) = self.janitor.lock().take() {
            drop(tx);
            let _ = t.join();
        }
    }

    fn open_inner(&self) -> Result<parking_lot::MutexGuard<'_, Inner>> {
        let g = self.inner.lock();
        if g.closed {
            Err(StoreError::Closed)
        } else {
            Ok(g)
        }
    }

    fn create_locked(&self, inner: &mut Inner, name: &str) -> Result<Arc<Channel>> {
        inner.registry.check_create(name, &self.limits)?;
        let l = self.limits.resolve(name);
        let id = inner.max_channel_id + 1;
        let (mm, mb, ma) = recover::stored_limits(&l);
        self.shared.exec(vec![self.shared.db.q.stmt(
            Q::ChannelInsert,
            vec![
                V::Int(id),
                V::from(name),
                V::Int(mm),
                V::Int(mb),
                V::Int(ma),
            ],
        )])?;
        inner.max_channel_id = id;
        let msgs = Arc::new(SqlMsgStore::new(self.shared.clone(), name, id, &l, None));
        let subs = Arc::new(SqlSubStore::new(self.shared.clone(), id, l.max_subs, None));
        Ok(Self::insert(inner, name, id, l, msgs, subs))
    }
}

impl Store for SqlStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sql
    }

    fn init(&self, info: &ServerInfo) -> Result<()> {
        let mut inner = self.open_inner()?;
        let proto = Bytes::from(info.encode_to_vec());
        self.shared.exec(vec![self.shared.db.q.stmt(
            Q::InfoUpsert,
            vec![
                V::from(info.cluster_id.as_str()),
                V::Bytes(proto),
                V::Int(SCHEMA_VERSION),
            ],
        )])?;
        inner.info = Some(info.clone());
        Ok(())
    }

    fn recover(&self) -> Result<RecoveredState> {
        let inner = self.open_inner()?;
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
        let mut inner = self.open_inner()?;
        self.create_locked(&mut inner, name)
    }

    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lock().registry.channels.get(name).cloned()
    }

    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)> {
        let mut inner = self.open_inner()?;
        if let Some(c) = inner.registry.channels.get(name) {
            return Ok((c.clone(), false));
        }
        Ok((self.create_locked(&mut inner, name)?, true))
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
        let mut inner = self.open_inner()?;
        let Some(p) = inner.parts.get(name).cloned() else {
            return Ok(false);
        };
        // Marked first: if the purge is interrupted, the next open finishes it.
        self.shared.exec(vec![
            self.shared
                .db
                .q
                .stmt(Q::ChannelMarkDeleted, vec![V::Int(p.id)]),
        ])?;
        inner.registry.remove(name);
        inner.parts.remove(name);
        drop(inner);
        p.msgs.abandon();
        p.subs.abandon();
        let id = p.id;
        // Failures leave the row marked; the next open purges it.
        let _ = self.shared.db.spawn(move |cx| async move {
            let _ = recover::purge_channel(&cx, id).await;
        });
        Ok(true)
    }

    fn add_client(&self, info: &ClientInfo) -> Result<()> {
        let mut inner = self.open_inner()?;
        let proto = Bytes::from(info.encode_to_vec());
        self.shared.exec(vec![self.shared.db.q.stmt(
            Q::ClientUpsert,
            vec![
                V::from(info.id.as_str()),
                V::from(info.hb_inbox.as_str()),
                V::Bytes(proto),
            ],
        )])?;
        inner.clients.insert(info.id.clone(), info.clone());
        Ok(())
    }

    fn delete_client(&self, id: &str) -> Result<bool> {
        let mut inner = self.open_inner()?;
        self.shared.exec(vec![
            self.shared.db.q.stmt(Q::ClientDelete, vec![V::from(id)]),
        ])?;
        Ok(inner.clients.remove(id).is_some())
    }

    fn sync(&self) -> Result<()> {
        let parts: Vec<Parts> = self.open_inner()?.parts.values().cloned().collect();
        let mut first = Ok(());
        for p in parts {
            for r in [p.msgs.flush(), p.subs.flush()] {
                if first.is_ok() {
                    first = r;
                }
            }
        }
        first
    }

    fn close(&self) -> Result<()> {
        let parts: Vec<Parts> = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Ok(());
            }
            inner.closed = true;
            inner.parts.values().cloned().collect()
        };
        self.stop_janitor();
        let mut first = Ok(());
        for p in parts {
            for r in [p.msgs.close(), p.subs.close()] {
                if first.is_ok() {
                    first = r;
                }
            }
        }
        self.shared.db.close();
        first
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        self.stop_janitor();
    }
}

/// The registry's view of a channel's message log (the store keeps the same `Arc`).
struct MsgsHandle(Arc<SqlMsgStore>);

impl MsgStore for MsgsHandle {
    fn append(&self, msg: NewMessage) -> Result<MsgProto> {
        self.0.append(msg)
    }
    fn store(&self, msg: &MsgProto) -> Result<u64> {
        self.0.store(msg)
    }
    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        self.0.lookup(seq)
    }
    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        self.0.read_batch(start, max_msgs, max_bytes)
    }
    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        self.0.read_batch_encoded(start, max_msgs, max_bytes)
    }
    fn state(&self) -> MsgStoreState {
        self.0.state()
    }
    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        self.0.sequence_for_timestamp(timestamp)
    }
    fn expire(&self, now: i64) -> Result<Option<i64>> {
        self.0.expire(now)
    }
    fn flush(&self) -> Result<()> {
        self.0.flush()
    }
    fn empty(&self) -> Result<()> {
        self.0.empty()
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
}

/// The registry's view of a channel's subscriptions (the store keeps the same `Arc`).
struct SubsHandle(Arc<SqlSubStore>);

impl SubStore for SubsHandle {
    fn create_sub(&self, state: &mut SubState) -> Result<()> {
        self.0.create_sub(state)
    }
    fn update_sub(&self, state: &SubState) -> Result<()> {
        self.0.update_sub(state)
    }
    fn delete_sub(&self, id: u64) -> Result<()> {
        self.0.delete_sub(id)
    }
    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.0.add_seq_pending(id, seq)
    }
    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.0.ack_seq_pending(id, seq)
    }
    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.0.add_seqs_pending(id, seqs)
    }
    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.0.ack_seqs_pending(id, seqs)
    }
    fn subscriptions(&self) -> Vec<RecoveredSubscription> {
        self.0.subscriptions()
    }
    fn count(&self) -> usize {
        self.0.count()
    }
    fn flush(&self) -> Result<()> {
        self.0.flush()
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
}
