//! Opening a log after a crash.

use super::*;

pub(super) fn recover(log: &mut MsgLog) -> Result<()> {
    let dir = log.dir.clone();
    let mut dats = BTreeSet::new();
    let mut idxs = BTreeSet::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // An interrupted compaction of subs.dat.
            fs::remove_file(entry.path()).map_err(io_err(&dir))?;
        } else if let Some((n, is_dat)) = parse_seg_name(name) {
            if is_dat {
                dats.insert(n)
            } else {
                idxs.insert(n)
            };
        }
    }
    for n in idxs.difference(&dats) {
        let (_, ip) = seg_paths(&dir, *n);
        fs::remove_file(&ip).map_err(io_err(&ip))?;
    }
    let count = dats.len();
    for (i, n) in dats.iter().enumerate() {
        let seg = recover_segment(log, *n, i + 1 == count, idxs.contains(n))?;
        if let Some(prev) = log.segs.back()
            && prev.end_seq() != seg.first_seq
        {
            return Err(StoreError::corrupt(
                seg.dat.path(),
                8,
                Corruption::HeaderMismatch {
                    expected: prev.end_seq(),
                    found: seg.first_seq,
                },
            ));
        }
        log.segs.push_back(seg);
    }
    if let (Some(f), Some(l)) = (log.segs.front(), log.segs.back()) {
        log.first = f.first_seq;
        log.last = l.end_seq() - 1;
        log.msgs = log.segs.iter().map(|s| s.count).sum();
        log.bytes = log.segs.iter().map(|s| s.live_bytes).sum();
        log.last_ts = log
            .segs
            .iter()
            .rev()
            .find(|s| s.count > 0)
            .map_or(0, |s| s.last_ts);
        if log.msgs == 0 {
            log.first = log.last + 1;
        }
    }
    Ok(())
}

pub(super) fn valid_record(r: &mut ChunkReader<'_>, e: &IdxEntry) -> io::Result<bool> {
    Ok(
        matches!(r.record_at(e.offset, false)?, Parsed::Record { size, .. } if size == u64::from(e.size)),
    )
}

pub(super) fn read_idx_entry(r: &mut ChunkReader<'_>, j: u64) -> io::Result<Option<IdxEntry>> {
    Ok(
        r.slice(SEG_HEADER_LEN + j * IDX_ENTRY_LEN, IDX_ENTRY_LEN as usize)?
            .and_then(IdxEntry::decode),
    )
}

/// Recovers segment `n`.
///
/// The index entries on disk describe durable data (see [`MsgLog::pending`]), so the longest
/// valid prefix of the index is the region a crash cannot have damaged. A bad record there
/// is corruption unless it is the very end of the file (a file cut short); a bad record after
/// it is where the last, interrupted write begins, and the file is truncated there. Without a
/// usable index there is no such mark, and a bad record followed by a valid one is reported.
pub(super) fn recover_segment(
    log: &mut MsgLog,
    n: u64,
    is_last: bool,
    has_idx: bool,
) -> Result<Segment> {
    let (dp, ip) = seg_paths(&log.dir, n);
    let dat = log.fds.register(dp.clone());
    let idx = log.fds.register(ip.clone());
    let dio = io_err(&dp);
    let iio = io_err(&ip);
    let sync = log.o.sync != SyncPolicy::Never;
    let full = log.o.check == RecoveryCheck::Full;
    let df = log.fds.get(&dat).map_err(&dio)?;
    let mut dat_len = df.metadata().map_err(&dio)?.len();
    if dat_len < SEG_HEADER_LEN {
        if !is_last {
            return Err(StoreError::corrupt(&dp, 0, Corruption::Truncated));
        }
        // Created, but the header never reached the disk.
        df.set_len(0).map_err(&dio)?;
        df.write_all_at(&seg_header(DATA_MAGIC, n), 0)
            .map_err(&dio)?;
        dat_len = SEG_HEADER_LEN;
    } else {
        let mut h = [0u8; 16];
        df.read_exact_at(&mut h, 0).map_err(&dio)?;
        let found = check_header(&dp, &h, DATA_MAGIC)?;
        if found != n {
            return Err(StoreError::corrupt(
                &dp,
                8,
                Corruption::HeaderMismatch { expected: n, found },
            ));
        }
    }

    // What the index says.
    let mut idx_n = 0;
    let mut idx_exact = false;
    let mut idx_usable = false;
    let ifile = if has_idx {
        Some(log.fds.get(&idx).map_err(&iio)?)
    } else {
        None
    };
    if let Some(f) = &ifile {
        let len = f.metadata().map_err(&iio)?.len();
        if len >= SEG_HEADER_LEN {
            let mut h = [0u8; 16];
            f.read_exact_at(&mut h, 0).map_err(&iio)?;
            if check_header(&ip, &h, IDX_MAGIC).ok() == Some(n) {
                idx_usable = true;
                idx_n = (len - SEG_HEADER_LEN) / IDX_ENTRY_LEN;
                idx_exact = (len - SEG_HEADER_LEN).is_multiple_of(IDX_ENTRY_LEN);
            }
        }
    }
    let ilen = SEG_HEADER_LEN + idx_n * IDX_ENTRY_LEN;
    let mut ir = ifile
        .as_ref()
        .filter(|_| idx_usable)
        .map(|f| ChunkReader::new(f, ilen, log.o.read_buffer));
    let mut r = ChunkReader::new(&df, dat_len, log.o.read_buffer);
    let segment = |count: u64, data_len: u64, first_ts: i64, last_ts: i64| Segment {
        first_seq: n,
        count,
        removed: 0,
        data_len,
        written: data_len,
        allocated: data_len,
        idx_written: count,
        first_ts,
        last_ts,
        // Accounted as in `push`: each record's length plus the index share of the overhead.
        live_bytes: data_len - SEG_HEADER_LEN + count * (MSG_OVERHEAD - REC_HEADER_LEN),
        dat: dat.clone(),
        idx: idx.clone(),
    };

    // Fast path: the index covers the whole file and the last record checks out (and the
    // index claims no more records than the file can hold, nor a segment end past 2^64 - 1).
    let plausible =
        idx_n <= (dat_len - SEG_HEADER_LEN) / MIN_MSG_RECORD && n.checked_add(idx_n).is_some();
    if let Some(ir) = ir.as_mut().filter(|_| idx_exact && plausible && !full) {
        if idx_n == 0 && dat_len == SEG_HEADER_LEN {
            return Ok(segment(0, dat_len, 0, 0));
        }
        if idx_n > 0 {
            let first = read_idx_entry(ir, 0).map_err(&iio)?;
            let last = read_idx_entry(ir, idx_n - 1).map_err(&iio)?;
            if let (Some(f), Some(l)) = (first, last)
                && f.seq == n
                && f.offset == SEG_HEADER_LEN
                && l.seq == n + idx_n - 1
                && l.end() == dat_len
                && valid_record(&mut r, &l).map_err(&dio)?
            {
                return Ok(segment(idx_n, dat_len, f.timestamp, l.timestamp));
            }
        }
    }

    // The longest valid prefix of the index: durable data.
    let mut covered: Vec<IdxEntry> = Vec::new();
    if let Some(ir) = ir.as_mut() {
        let mut expected_off = SEG_HEADER_LEN;
        for j in 0..idx_n {
            let Some(e) = read_idx_entry(ir, j).map_err(&iio)? else {
                break;
            };
            // Below 2^64 - 1: no covered record holds a sequence past the largest.
            if Some(e.seq) != n.checked_add(j)
                || e.seq == u64::MAX
                || e.offset != expected_off
                || e.end() > dat_len
            {
                break;
            }
            expected_off = e.end();
            covered.push(e);
        }
    }
    drop(ir);
    let covered_end = covered.last().map_or(SEG_HEADER_LEN, IdxEntry::end);

    // Fast check: the covered records are trusted, but the file may end inside them (cut
    // short, or zero-filled at the end): drop those from the end. Full check: keep nothing,
    // scan and verify everything.
    let keep = if full {
        0
    } else {
        let mut end = dat_len;
        while let Some(e) = covered.last() {
            let kind = match r.record_at(e.offset, false).map_err(&dio)? {
                Parsed::Record { size, .. } if size == u64::from(e.size) => break,
                Parsed::Bad { kind, .. } => kind,
                _ => Corruption::IndexMismatch,
            };
            if e.end() < end || !is_last {
                return Err(StoreError::corrupt(&dp, e.offset, kind));
            }
            end = e.offset;
            covered.pop();
        }
        if end < dat_len {
            truncate(&df, &dp, end, sync)?;
            dat_len = end;
            r = ChunkReader::new(&df, dat_len, log.o.read_buffer);
        }
        covered.len() as u64
    };
    let mut first_ts = covered
        .first()
        .filter(|_| keep > 0)
        .map_or(0, |e| e.timestamp);
    let mut last_ts = covered
        .last()
        .filter(|_| keep > 0)
        .map_or(0, |e| e.timestamp);
    let mut pos = if keep > 0 {
        covered_end.min(dat_len)
    } else {
        SEG_HEADER_LEN
    };
    let mut seq = n + keep;
    let mut fresh = Vec::new();
    loop {
        match r.record_at(pos, false).map_err(&dio)? {
            Parsed::End => break,
            Parsed::Record { size, .. } => {
                let payload = r.payload(pos, size).map_err(&dio)?;
                let m: MsgProto = decode_at(&dp, pos, payload)?;
                if m.sequence != seq {
                    return Err(StoreError::corrupt(
                        &dp,
                        pos,
                        Corruption::SequenceMismatch {
                            expected: seq,
                            found: m.sequence,
                        },
                    ));
                }
                if seq == u64::MAX {
                    return Err(StoreError::corrupt(&dp, pos, Corruption::SequenceOverflow));
                }
                fresh.push(IdxEntry {
                    seq,
                    offset: pos,
                    timestamp: m.timestamp,
                    size: size as u32,
                });
                if seq == n {
                    first_ts = m.timestamp;
                }
                last_ts = m.timestamp;
                pos += REC_HEADER_LEN + size;
                seq += 1;
            }
            Parsed::Bad { kind, next } => {
                let damage = if pos < covered_end {
                    // Durable data (full check): damage unless nothing follows it.
                    covered
                        .get((seq - n) as usize)
                        .is_none_or(|e| e.end() < dat_len)
                } else if !idx_usable {
                    r.valid_after(next, false).map_err(&dio)?
                        || r.msg_record_after(pos).map_err(&dio)?
                } else {
                    false
                };
                if damage || !is_last {
                    return Err(StoreError::corrupt(&dp, pos, kind));
                }
                // The interrupted last write: cut it off.
                drop(r);
                truncate(&df, &dp, pos, sync)?;
                dat_len = pos;
                break;
            }
        }
    }

    // Index entries for the records found, after making their data durable.
    if sync && !fresh.is_empty() {
        df.sync_data().map_err(&dio)?;
    }
    let f = match ifile {
        Some(f) if keep > 0 => f,
        _ => {
            drop(ifile);
            let f = log.fds.create(&idx).map_err(&iio)?;
            f.write_all_at(&seg_header(IDX_MAGIC, n), 0).map_err(&iio)?;
            f
        }
    };
    let at = SEG_HEADER_LEN + keep * IDX_ENTRY_LEN;
    f.set_len(at).map_err(&iio)?;
    let mut buf = Vec::with_capacity(fresh.len() * IDX_ENTRY_LEN as usize);
    for e in &fresh {
        e.encode(&mut buf);
    }
    f.write_all_at(&buf, at).map_err(&iio)?;
    if sync {
        f.sync_data().map_err(&iio)?;
    }
    Ok(segment(
        keep + fresh.len() as u64,
        dat_len,
        first_ts,
        last_ts,
    ))
}

pub(super) fn truncate(f: &std::fs::File, path: &Path, len: u64, sync: bool) -> Result<()> {
    f.set_len(len).map_err(io_err(path))?;
    if sync {
        f.sync_data().map_err(io_err(path))?;
    }
    Ok(())
}
