//! Reading the log: index entries (rebuilt when damaged) and records in batches.

use super::*;

impl MsgLog {
    /// Index entries `from .. from + n` of segment `i`, checked. An index entry that fails
    /// its checks gets the segment's index rebuilt from the data (the index is derived data);
    /// only damage in the data itself is an error.
    pub(super) fn read_entries(&mut self, i: usize, from: u64, n: u64) -> Result<Vec<IdxEntry>> {
        match self.try_read_entries(i, from, n)? {
            Ok(entries) => Ok(entries),
            Err(_) => {
                self.rebuild_index(i)?;
                self.try_read_entries(i, from, n)?
                    .map_err(|(off, kind)| StoreError::corrupt(self.segs[i].idx.path(), off, kind))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn try_read_entries(
        &mut self,
        i: usize,
        from: u64,
        n: u64,
    ) -> Result<std::result::Result<Vec<IdxEntry>, (u64, Corruption)>> {
        let seg = &self.segs[i];
        let in_file_end = seg.first_seq + seg.idx_written;
        let file_n = in_file_end.saturating_sub(from).min(n);
        let mut out = Vec::with_capacity(n as usize);
        if file_n > 0 {
            let path = seg.idx.path();
            let at = SEG_HEADER_LEN + (from - seg.first_seq) * IDX_ENTRY_LEN;
            let mut buf = vec![0u8; (file_n * IDX_ENTRY_LEN) as usize];
            let f = self.fds.get(&seg.idx).map_err(io_err(path))?;
            if let Err(e) = f.read_exact_at(&mut buf, at) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(Err((at, Corruption::Truncated)));
                }
                return Err(StoreError::io(path, e));
            }
            for (j, chunk) in buf.chunks_exact(IDX_ENTRY_LEN as usize).enumerate() {
                let off = at + j as u64 * IDX_ENTRY_LEN;
                let Some(e) = IdxEntry::decode(chunk) else {
                    return Ok(Err((off, Corruption::IndexMismatch)));
                };
                if e.seq != from + j as u64 {
                    let kind = Corruption::SequenceMismatch {
                        expected: from + j as u64,
                        found: e.seq,
                    };
                    return Ok(Err((off, kind)));
                }
                // An entry whose checksum holds can still describe the wrong place (a
                // damaged index rewritten whole): records follow each other inside the file.
                let follows = out.last().is_none_or(|p: &IdxEntry| p.end() == e.offset);
                if !follows || e.offset < SEG_HEADER_LEN || e.end() > seg.written {
                    return Ok(Err((off, Corruption::IndexMismatch)));
                }
                out.push(e);
            }
        }
        if file_n < n {
            // Entries of the last segment still in memory.
            let skip = (from + file_n - in_file_end) as usize;
            out.extend(self.pending.iter().skip(skip).take((n - file_n) as usize));
        }
        Ok(Ok(out))
    }

    /// Rewrites the index entries of segment `i` that were in its file, from its data.
    pub(super) fn rebuild_index(&mut self, i: usize) -> Result<()> {
        let seg = &self.segs[i];
        let dp = seg.dat.path();
        let df = self.fds.get(&seg.dat).map_err(io_err(dp))?;
        let mut r = ChunkReader::new(&df, seg.written, self.o.read_buffer);
        let mut buf = seg_header(IDX_MAGIC, seg.first_seq).to_vec();
        let mut pos = SEG_HEADER_LEN;
        for seq in seg.first_seq..seg.first_seq + seg.idx_written {
            match r.record_at(pos, false).map_err(io_err(dp))? {
                Parsed::Record { size, .. } => {
                    let payload = r.payload(pos, size).map_err(io_err(dp))?;
                    let m: MsgProto = decode_at(dp, pos, payload)?;
                    if m.sequence != seq {
                        let kind = Corruption::SequenceMismatch {
                            expected: seq,
                            found: m.sequence,
                        };
                        return Err(StoreError::corrupt(dp, pos, kind));
                    }
                    IdxEntry {
                        seq,
                        offset: pos,
                        timestamp: m.timestamp,
                        size: size as u32,
                    }
                    .encode(&mut buf);
                    pos += REC_HEADER_LEN + size;
                }
                Parsed::End => return Err(StoreError::corrupt(dp, pos, Corruption::Truncated)),
                Parsed::Bad { kind, .. } => return Err(StoreError::corrupt(dp, pos, kind)),
            }
        }
        drop(r);
        drop(df);
        let f = self.fds.create(&seg.idx).map_err(io_err(seg.idx.path()))?;
        f.write_all_at(&buf, 0).map_err(io_err(seg.idx.path()))?;
        Ok(())
    }

    /// The messages of consecutive `entries` of segment `i`, read with one positional read and
    /// checked (offsets, lengths, CRC, then the sequence `decode` finds in each record against
    /// the index). `decode` gets each record's payload, a slice of the shared read buffer.
    pub(super) fn read_records<T>(
        &mut self,
        i: usize,
        entries: &[IdxEntry],
        decode: impl Fn(Bytes) -> std::result::Result<(u64, T), Corruption>,
    ) -> Result<Vec<T>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        if last.end() > self.segs[i].written {
            self.write_out()?;
        }
        let seg = &self.segs[i];
        let path = seg.dat.path();
        let start = first.offset;
        // The read is sized from the entries: check they lie end to end inside the file first.
        let mut expected_off = start;
        for e in entries {
            if e.offset != expected_off || e.end() > seg.written {
                return Err(StoreError::corrupt(
                    path,
                    e.offset,
                    Corruption::IndexMismatch,
                ));
            }
            expected_off = e.end();
        }
        self.rbuf.clear();
        self.rbuf.resize((last.end() - start) as usize, 0);
        let file = self.fds.get(&seg.dat).map_err(io_err(path))?;
        file.read_exact_at(&mut self.rbuf, start)
            .map_err(io_err(path))?;
        drop(file);
        let buf = self.rbuf.split().freeze();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let corrupt = |kind| StoreError::corrupt(path, e.offset, kind);
            let p = (e.offset - start) as usize;
            let word = u32::from_le_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
            let crc = u32::from_le_bytes([buf[p + 4], buf[p + 5], buf[p + 6], buf[p + 7]]);
            if word != e.size {
                return Err(corrupt(Corruption::IndexMismatch));
            }
            let payload = buf.slice(p + 8..p + 8 + e.size as usize);
            let computed = crc32fast::hash(&payload);
            if computed != crc {
                return Err(corrupt(Corruption::BadCrc {
                    expected: crc,
                    computed,
                }));
            }
            let (found, item) = decode(payload).map_err(corrupt)?;
            if found != e.seq {
                return Err(corrupt(Corruption::SequenceMismatch {
                    expected: e.seq,
                    found,
                }));
            }
            out.push(item);
        }
        Ok(out)
    }

    /// The messages of consecutive `entries` of segment `i`, decoded.
    pub(super) fn read_data(&mut self, i: usize, entries: &[IdxEntry]) -> Result<Vec<MsgProto>> {
        self.read_records(i, entries, |payload| {
            MsgProto::decode(payload)
                .map(|m| (m.sequence, m))
                .map_err(|e| Corruption::Decode(e.to_string()))
        })
    }

    /// The messages of consecutive `entries` of segment `i` as stored (encoded `MsgProto`s,
    /// as a first delivery sends them), checked but not decoded.
    pub(super) fn read_encoded(
        &mut self,
        i: usize,
        entries: &[IdxEntry],
    ) -> Result<Vec<EncodedMsg>> {
        self.read_records(i, entries, |payload| {
            let (sequence, data_len) = peek_msg_proto(&payload)
                .ok_or_else(|| Corruption::Decode("malformed MsgProto".into()))?;
            Ok((
                sequence,
                EncodedMsg {
                    sequence,
                    data_len,
                    encoded: payload,
                },
            ))
        })
    }

    /// Up to `max_msgs` consecutive messages from `start`, within `max_bytes` (at least one),
    /// each segment's part read by `read`.
    pub(super) fn batch<T>(
        &mut self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
        read: impl Fn(&mut MsgLog, usize, &[IdxEntry]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        self.check_open()?;
        let mut out = Vec::new();
        if self.msgs == 0 {
            return Ok(out);
        }
        let mut seq = start.max(self.first);
        let mut budget = 0usize;
        while out.len() < max_msgs && seq <= self.last {
            let i = self.seg_index(seq);
            let end = self.segs[i].end_seq();
            let n = ((max_msgs - out.len()) as u64)
                .min(end - seq)
                .min(BATCH_ENTRIES);
            let entries = self.read_entries(i, seq, n)?;
            let mut k = 0;
            for e in &entries {
                let size = e.size as usize;
                if budget + size > max_bytes && (k > 0 || !out.is_empty()) {
                    break;
                }
                budget += size;
                k += 1;
            }
            out.extend(read(self, i, &entries[..k])?);
            seq += k as u64;
            if k < entries.len() {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn seg_index(&self, seq: u64) -> usize {
        self.segs
            .partition_point(|s| s.first_seq <= seq)
            .saturating_sub(1)
    }
}
