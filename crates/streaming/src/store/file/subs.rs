//! `subs.dat`: the subscriptions of one channel as an append-only log of typed records,
//! compacted when mostly dead.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::fds::FdCache;
use super::record::{
    AppendLog, LOG_HEADER_LEN, SUBS_MAGIC, decode_at, encode_record, log_header, replay_log,
    sync_dir,
};
use super::{FileStoreOptions, SyncPolicy};
use crate::proto::{SubState, SubStateDelete, SubStateSeqs, SubStateUpdate};
use crate::store::subs::SubsState;
use crate::store::{Corruption, RecoveredSubscription, Result, StoreError, SubStore};

const REC_NEW: u8 = 1;
const REC_UPDATE: u8 = 2;
const REC_DELETE: u8 = 3;
const REC_ACK: u8 = 4;
const REC_PENDING: u8 = 5;
/// `SubStateSeqs`: many pending sequences of one subscription.
const REC_PENDING_SEQS: u8 = 6;
/// `SubStateSeqs`: many acks of one subscription.
const REC_ACK_SEQS: u8 = 7;
/// Sequences per batched record (keeps records far below the size limit).
const SEQS_PER_RECORD: usize = 4096;

struct SubsFile {
    state: SubsState,
    log: AppendLog,
    dir: PathBuf,
    last_compact: Instant,
    closed: bool,
}

pub(crate) struct FileSubStore {
    inner: Mutex<SubsFile>,
    fds: Arc<FdCache>,
    o: Arc<FileStoreOptions>,
}

impl FileSubStore {
    /// Opens `dir/subs.dat`, replaying it (or creating it).
    pub(crate) fn open(
        dir: &Path,
        fds: Arc<FdCache>,
        o: Arc<FileStoreOptions>,
        max_subs: u64,
    ) -> Result<Self> {
        let path = dir.join("subs.dat");
        let file = fds.register(path.clone());
        let mut state = SubsState::new(max_subs);
        let (len, records) = if path.exists() {
            let f = fds.get(&file).map_err(|e| StoreError::io(&path, e))?;
            replay_log(&f, &path, SUBS_MAGIC, o.read_buffer_size, |t, b, off| {
                apply(&mut state, &path, t, b, off)
            })?
        } else {
            let f = fds.create(&file).map_err(|e| StoreError::io(&path, e))?;
            use std::os::unix::fs::FileExt;
            f.write_all_at(&log_header(SUBS_MAGIC), 0)
                .map_err(|e| StoreError::io(&path, e))?;
            (LOG_HEADER_LEN, 0)
        };
        Ok(FileSubStore {
            inner: Mutex::new(SubsFile {
                state,
                log: AppendLog::new(file, len, records),
                dir: dir.to_owned(),
                last_compact: Instant::now(),
                closed: false,
            }),
            fds,
            o,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut SubsFile) -> Result<T>) -> Result<T> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(StoreError::Closed);
        }
        f(&mut g)
    }

    /// Applies `apply` (add pending, or ack) to each of `seqs` and records those that changed
    /// the state, in batched records of type `rec_type`.
    fn record_seqs(
        &self,
        rec_type: u8,
        id: u64,
        seqs: &[u64],
        apply: fn(&mut SubsState, u64, u64) -> bool,
    ) -> Result<()> {
        self.with(|g| {
            let mut changed = Vec::with_capacity(seqs.len().min(SEQS_PER_RECORD));
            for chunk in seqs.chunks(SEQS_PER_RECORD) {
                changed.clear();
                changed.extend(chunk.iter().filter(|&&s| apply(&mut g.state, id, s)));
                push_seqs(g, rec_type, id, &changed)?;
            }
            Ok(())
        })
    }

    fn flush_impl(&self, force: bool) -> Result<()> {
        let ticket = {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(StoreError::Closed);
            }
            g.log.write_out(&self.fds)?;
            if self.should_compact(&g) {
                self.compact(&mut g)?;
            }
            g.log
                .sync_ticket(&self.fds, self.o.sync, force)?
                .map(|t| (t, g.log.file.clone()))
        };
        if let Some(((f, generation), r)) = ticket {
            f.sync_data().map_err(|e| StoreError::io(r.path(), e))?;
            drop(f);
            self.inner.lock().log.synced(generation);
        }
        Ok(())
    }

    fn should_compact(&self, g: &SubsFile) -> bool {
        let o = &self.o;
        if !o.compact_enabled || g.log.len < o.compact_min_size || g.log.records == 0 {
            return false;
        }
        let dead = g.log.records.saturating_sub(g.state.live_records());
        dead * 100 / g.log.records >= u64::from(o.compact_frag)
            && g.last_compact.elapsed() >= o.compact_interval
    }

    /// Rewrites the live state to a temporary file and renames it over `subs.dat`.
    fn compact(&self, g: &mut SubsFile) -> Result<()> {
        let mut buf = log_header(SUBS_MAGIC).to_vec();
        let mut records = 0;
        let mut max_live = 0;
        for e in g.state.subs.values() {
            encode_record(&mut buf, &e.state, Some(REC_NEW))?;
            records += 1;
            max_live = max_live.max(e.state.id);
            for seq in e.pending.keys() {
                encode_record(
                    &mut buf,
                    &SubStateUpdate {
                        id: e.state.id,
                        seqno: seq,
                    },
                    Some(REC_PENDING),
                )?;
                records += 1;
            }
        }
        if g.state.max_id > max_live {
            // Keep the highest ID ever assigned, so IDs are never reused.
            encode_record(
                &mut buf,
                &SubStateDelete { id: g.state.max_id },
                Some(REC_DELETE),
            )?;
            records += 1;
        }
        let path = g.log.file.path().to_owned();
        rewrite(&g.dir, &path, &buf, self.o.sync)?;
        self.fds.invalidate(&g.log.file);
        g.log.replaced(buf.len() as u64, records);
        g.last_compact = Instant::now();
        Ok(())
    }
}

/// Atomically replaces `path` with `content`: temporary file, fsync, rename, fsync the dir.
pub(crate) fn rewrite(dir: &Path, path: &Path, content: &[u8], sync: SyncPolicy) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |e| StoreError::io(&tmp, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(content).map_err(io)?;
    if sync != SyncPolicy::Never {
        f.sync_all().map_err(io)?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    if sync != SyncPolicy::Never {
        sync_dir(dir)?;
    }
    Ok(())
}

/// One record for `seqs` (nothing when empty). It counts as one record per sequence, as the
/// single records it replaces: compaction compares records with live entries.
fn push_seqs(g: &mut SubsFile, rec_type: u8, id: u64, seqs: &[u64]) -> Result<()> {
    match seqs {
        [] => Ok(()),
        &[seqno] => {
            let t = if rec_type == REC_ACK_SEQS {
                REC_ACK
            } else {
                REC_PENDING
            };
            g.log.push(t, &SubStateUpdate { id, seqno })
        }
        _ => {
            g.log.push(
                rec_type,
                &SubStateSeqs {
                    id,
                    seqs: seqs.to_vec(),
                },
            )?;
            g.log.records += seqs.len() as u64 - 1;
            Ok(())
        }
    }
}

/// Applies one record; returns how many entries it holds.
fn apply(state: &mut SubsState, path: &Path, t: u8, b: &[u8], off: u64) -> Result<u64> {
    let mut entries = 1;
    match t {
        REC_NEW | REC_UPDATE => {
            state.put(decode_at::<SubState>(path, off, b)?);
        }
        REC_DELETE => {
            state.delete(decode_at::<SubStateDelete>(path, off, b)?.id);
        }
        REC_ACK => {
            let u: SubStateUpdate = decode_at(path, off, b)?;
            state.ack(u.id, u.seqno);
        }
        REC_PENDING => {
            let u: SubStateUpdate = decode_at(path, off, b)?;
            state.add_pending(u.id, u.seqno);
        }
        REC_PENDING_SEQS | REC_ACK_SEQS => {
            let u: SubStateSeqs = decode_at(path, off, b)?;
            entries = u.seqs.len() as u64;
            for seq in u.seqs {
                if t == REC_PENDING_SEQS {
                    state.add_pending(u.id, seq);
                } else {
                    state.ack(u.id, seq);
                }
            }
        }
        other => {
            return Err(StoreError::corrupt(
                path,
                off,
                Corruption::UnknownRecordType(other),
            ));
        }
    }
    Ok(entries)
}

impl SubStore for FileSubStore {
    fn create_sub(&self, state: &mut SubState) -> Result<()> {
        self.with(|g| {
            g.state.create(state)?;
            if let Err(e) = g.log.push(REC_NEW, state) {
                g.state.subs.remove(&state.id);
                return Err(e);
            }
            Ok(())
        })
    }

    fn update_sub(&self, state: &SubState) -> Result<()> {
        self.with(|g| {
            g.log.push(REC_UPDATE, state)?;
            g.state.put(state.clone());
            Ok(())
        })
    }

    fn delete_sub(&self, id: u64) -> Result<()> {
        self.with(|g| {
            if g.state.delete(id).is_some() {
                g.log.push(REC_DELETE, &SubStateDelete { id })?;
            }
            Ok(())
        })
    }

    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.with(|g| {
            if g.state.add_pending(id, seq) {
                g.log
                    .push(REC_PENDING, &SubStateUpdate { id, seqno: seq })?;
            }
            Ok(())
        })
    }

    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.with(|g| {
            if g.state.ack(id, seq) {
                g.log.push(REC_ACK, &SubStateUpdate { id, seqno: seq })?;
            }
            Ok(())
        })
    }

    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.record_seqs(REC_PENDING_SEQS, id, seqs, SubsState::add_pending)
    }

    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.record_seqs(REC_ACK_SEQS, id, seqs, SubsState::ack)
    }

    fn subscriptions(&self) -> Vec<RecoveredSubscription> {
        self.inner.lock().state.snapshot()
    }

    fn count(&self) -> usize {
        self.inner.lock().state.len()
    }

    fn flush(&self) -> Result<()> {
        self.flush_impl(false)
    }

    fn sync(&self) -> Result<()> {
        self.flush_impl(true)
    }

    fn close(&self) -> Result<()> {
        let res = if self.inner.lock().closed {
            Ok(())
        } else {
            self.flush_impl(true)
        };
        let mut g = self.inner.lock();
        g.closed = true;
        self.fds.unregister(&g.log.file);
        res
    }
}
