//! `FileMsgStore`: the `MsgStore` of one channel over its locked log.

use super::*;

/// The file message log of one channel.
pub(crate) struct FileMsgStore {
    log: Mutex<MsgLog>,
}

impl FileMsgStore {
    /// Opens (recovering whatever is in `dir`) the log of `channel`, then applies the limits
    /// at `now`.
    pub(crate) fn open(
        channel: &str,
        dir: &Path,
        fds: Arc<FdCache>,
        o: LogOptions,
        now: i64,
    ) -> Result<Self> {
        let mut log = MsgLog {
            channel: channel.to_owned(),
            dir: dir.to_owned(),
            fds,
            o,
            segs: VecDeque::new(),
            first: 1,
            last: 0,
            msgs: 0,
            bytes: 0,
            last_ts: 0,
            head: VecDeque::new(),
            wbuf: Vec::new(),
            pending: VecDeque::new(),
            write_gen: 0,
            synced_gen: 0,
            last_sync: Instant::now(),
            closed: false,
            rbuf: BytesMut::new(),
        };
        recover(&mut log)?;
        log.enforce(Some(now))?;
        Ok(FileMsgStore {
            log: Mutex::new(log),
        })
    }

    pub(super) fn flush_impl(&self, force: bool) -> Result<()> {
        let ticket = {
            let mut log = self.log.lock();
            log.check_open()?;
            log.write_out()?;
            log.release_buffers();
            log.sync_ticket(force)?
        };
        let Some(t) = ticket else { return Ok(()) };
        t.file.sync_data().map_err(|e| StoreError::io(&t.path, e))?;
        drop(t.file);
        let mut log = self.log.lock();
        log.synced_gen = log.synced_gen.max(t.generation);
        log.last_sync = Instant::now();
        if log.closed {
            return Ok(());
        }
        // The data up to `upto` is durable: its index entries can be written.
        log.write_index(t.upto)
    }
}

impl MsgStore for FileMsgStore {
    fn append(&self, msg: NewMessage) -> Result<MsgProto> {
        let mut log = self.log.lock();
        log.check_open()?;
        let m = msg.stamp(log.last + 1, log.channel.clone(), log.last_ts);
        log.push(&m)?;
        log.enforce(Some(m.timestamp))?;
        Ok(m)
    }

    fn store(&self, msg: &MsgProto) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        if msg.sequence <= log.last {
            return Ok(msg.sequence);
        }
        if msg.redelivered || msg.redelivery_count != 0 {
            let m = MsgProto {
                redelivered: false,
                redelivery_count: 0,
                ..msg.clone()
            };
            log.store_msg(&m)?;
        } else {
            log.store_msg(msg)?;
        }
        Ok(msg.sequence)
    }

    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        let mut log = self.log.lock();
        log.check_open()?;
        if log.msgs == 0 || seq < log.first || seq > log.last {
            return Ok(None);
        }
        let i = log.seg_index(seq);
        let e = log.read_entries(i, seq, 1)?;
        Ok(log.read_data(i, &e)?.pop())
    }

    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        self.log
            .lock()
            .batch(start, max_msgs, max_bytes, MsgLog::read_data)
    }

    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        self.log
            .lock()
            .batch(start, max_msgs, max_bytes, MsgLog::read_encoded)
    }

    fn state(&self) -> MsgStoreState {
        let log = self.log.lock();
        MsgStoreState {
            first: log.first,
            last: log.last,
            msgs: log.msgs,
            bytes: log.bytes,
        }
    }

    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        if log.msgs == 0 {
            return Ok(log.last + 1);
        }
        for i in 0..log.segs.len() {
            let s = &log.segs[i];
            if s.live() == 0 || s.last_ts < timestamp {
                continue;
            }
            let (mut lo, mut hi) = (s.first_seq + s.removed, s.end_seq());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let e = log.read_entries(i, mid, 1)?;
                if e[0].timestamp < timestamp {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return Ok(lo);
        }
        Ok(log.last + 1)
    }

    fn expire(&self, now: i64) -> Result<Option<i64>> {
        let mut log = self.log.lock();
        log.check_open()?;
        log.enforce(Some(now))?;
        if log.o.max_age <= 0 || log.msgs == 0 {
            return Ok(None);
        }
        let max_age = log.o.max_age;
        Ok(Some(log.head_entry()?.1.saturating_add(max_age)))
    }

    fn flush(&self) -> Result<()> {
        self.flush_impl(false)
    }

    fn sync(&self) -> Result<()> {
        self.flush_impl(true)
    }

    fn empty(&self) -> Result<()> {
        let mut log = self.log.lock();
        log.check_open()?;
        let next = log.last + 1;
        log.restart_at(next)
    }

    fn close(&self) -> Result<()> {
        let res = if self.log.lock().closed {
            Ok(())
        } else {
            self.flush_impl(true).and_then(|()| {
                // A cleanly closed segment has no zeros after its records.
                let mut log = self.log.lock();
                let cut = log.segs.back().is_some_and(|s| s.allocated > s.written);
                log.cut_zeros()?;
                if cut
                    && log.o.sync != SyncPolicy::Never
                    && let Some(seg) = log.segs.back()
                {
                    let f = log.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
                    f.sync_data().map_err(io_err(seg.dat.path()))?;
                }
                Ok(())
            })
        };
        let mut log = self.log.lock();
        log.closed = true;
        for s in &log.segs {
            log.fds.unregister(&s.dat);
            log.fds.unregister(&s.idx);
        }
        res
    }
}
