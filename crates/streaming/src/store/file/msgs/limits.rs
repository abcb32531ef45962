//! Limits (count, bytes, age) applied to the front of the log, and sync tickets.

use super::*;

impl MsgLog {
    /// (size, timestamp) of the first held message.
    pub(super) fn head_entry(&mut self) -> Result<(u32, i64)> {
        if let Some(h) = self.head.front() {
            return Ok(*h);
        }
        let end = self.segs[0].end_seq();
        let n = HEAD_BATCH.min(end - self.first);
        let entries = self.read_entries(0, self.first, n)?;
        self.head
            .extend(entries.iter().map(|e| (e.size, e.timestamp)));
        self.head.front().copied().ok_or(StoreError::Closed)
    }

    pub(super) fn remove_first(&mut self) -> Result<()> {
        let (size, _) = self.head_entry()?;
        self.head.pop_front();
        let acc = u64::from(size) + MSG_OVERHEAD;
        let seg = &mut self.segs[0];
        seg.removed += 1;
        seg.live_bytes -= acc;
        self.msgs -= 1;
        self.bytes -= acc;
        self.first += 1;
        if self.segs[0].live() == 0 && self.segs.len() > 1 {
            self.drop_front()?;
        }
        Ok(())
    }

    /// Applies the limits: age (if `now` is given), then count and bytes keeping the newest
    /// message. Whole segments are dropped without reading their index when they must go.
    pub(super) fn enforce(&mut self, now: Option<i64>) -> Result<()> {
        let cutoff = now
            .filter(|_| self.o.max_age > 0)
            .map(|n| n.saturating_sub(self.o.max_age));
        loop {
            if self.segs.len() > 1 && self.segs[0].live() == 0 {
                self.drop_front()?;
                continue;
            }
            if self.msgs == 0 {
                return Ok(());
            }
            let (max_msgs, max_bytes) = (self.o.max_msgs, self.o.max_bytes);
            let pressure = self.msgs > 1
                && ((max_msgs > 0 && self.msgs > max_msgs)
                    || (max_bytes > 0 && self.bytes > max_bytes));
            if self.segs.len() > 1 {
                let s = &self.segs[0];
                let rest_msgs = self.msgs - s.live();
                let rest_bytes = self.bytes - s.live_bytes;
                let whole = (pressure
                    && rest_msgs >= 1
                    && ((max_msgs > 0 && rest_msgs >= max_msgs)
                        || (max_bytes > 0 && rest_bytes >= max_bytes)))
                    || cutoff.is_some_and(|c| s.last_ts <= c);
                if whole {
                    self.drop_front()?;
                    continue;
                }
            }
            let expired = match cutoff {
                Some(c) => self.head_entry()?.1 <= c,
                None => false,
            };
            if !(pressure || expired) {
                return Ok(());
            }
            self.remove_first()?;
        }
    }

    pub(super) fn store_msg(&mut self, m: &MsgProto) -> Result<()> {
        self.check_sequence(m.sequence)?;
        if m.sequence > self.last + 1 {
            if self.msgs > 0 {
                return Err(StoreError::SequenceGap {
                    channel: self.channel.clone(),
                    expected: self.last + 1,
                    got: m.sequence,
                });
            }
            self.restart_at(m.sequence)?;
        }
        self.push(m)?;
        self.enforce(Some(m.timestamp))
    }

    /// What a flush must fsync, if anything, to do it outside the lock. When no fsync is
    /// needed (or the policy is `Never`), the index entries of durable data are written now.
    pub(super) fn sync_ticket(&mut self, force: bool) -> Result<Option<SyncTicket>> {
        let durable = self.write_gen == self.synced_gen;
        if durable || (self.o.sync == SyncPolicy::Never && !force) {
            self.write_index(self.last)?;
            return Ok(None);
        }
        if !(force || self.o.sync.sync_now(self.last_sync)) {
            return Ok(None);
        }
        let Some(seg) = self.segs.back() else {
            return Ok(None);
        };
        let file = self.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
        Ok(Some(SyncTicket {
            file,
            path: seg.dat.path().to_owned(),
            generation: self.write_gen,
            upto: self.last,
        }))
    }
}

pub(super) struct SyncTicket {
    pub(super) file: Arc<super::super::fds::OpenFile>,
    pub(super) path: PathBuf,
    pub(super) generation: u64,
    /// Last sequence whose data the fsync covers.
    pub(super) upto: u64,
}
