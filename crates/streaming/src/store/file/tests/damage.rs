//! Damaged and torn files: what recovery truncates, rebuilds or reports (path and offset).

use super::*;

/// A store in `dir` with channel "foo" holding `n` messages, closed again; what was written.
fn filled(dir: &Path, o: FileStoreOptions, n: u64) -> Vec<MsgProto> {
    let s = FileStore::open(dir, o, unlimited()).unwrap();
    let ch = s.create_channel("foo").unwrap();
    fill(&ch, n)
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let written = filled(dir.path(), opts(), 10);
    let dat = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    let len = fs::metadata(&dat).unwrap().len();
    // Cut the last record in the middle of its payload.
    set_len(&dat, len - 3);
    {
        let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        let st = ch.msgs().state();
        assert_eq!((st.first, st.last, st.msgs), (1, 9, 9));
        assert_eq!(
            ch.msgs().read_batch(1, 100, usize::MAX).unwrap(),
            written[..9].to_vec()
        );
        assert_eq!(
            fs::metadata(&dat).unwrap().len(),
            record_offset(&written, 10)
        );
        // The next message takes the lost sequence.
        assert_eq!(ch.msgs().append(msg(10)).unwrap().sequence, 10);
        ch.msgs().flush().unwrap();
    }
    // A tail of zeros (a file extended but never written) and a torn header.
    let f = OpenOptions::new().append(true).open(&dat).unwrap();
    f.write_all_at(&[0u8; 4096], fs::metadata(&dat).unwrap().len())
        .unwrap();
    drop(f);
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    assert_eq!(ch.msgs().state().last, 10);
    assert_eq!(
        ch.msgs().lookup(10).unwrap().unwrap().data,
        "message number 10"
    );
    drop(s);
    let f = OpenOptions::new().append(true).open(&dat).unwrap();
    f.write_all_at(&[7, 0, 0], fs::metadata(&dat).unwrap().len())
        .unwrap();
    drop(f);
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    assert_eq!(s.lookup_channel("foo").unwrap().msgs().state().msgs, 10);
}

#[test]
fn torn_tail_with_index_ahead_of_data() {
    // The index says 10 records but the data of the last two never reached the disk.
    let dir = tempfile::tempdir().unwrap();
    let written = filled(dir.path(), opts(), 10);
    let dat = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    let cut = record_offset(&written, 9);
    set_len(&dat, cut + 5);
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    assert_eq!(ch.msgs().state().last, 8);
    assert_eq!(
        ch.msgs().read_batch(1, 100, usize::MAX).unwrap(),
        written[..8].to_vec()
    );
    assert_eq!(ch.msgs().append(msg(9)).unwrap().sequence, 9);
}

#[test]
fn flipped_byte_in_the_middle_is_reported_with_path_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let written = filled(dir.path(), opts(), 10);
    let dat = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    let off = record_offset(&written, 5);
    flip(&dat, off + 8 + 3);
    let expect = |e: StoreError| {
        let text = e.to_string();
        assert!(
            matches!(e, StoreError::Corrupt { offset, .. } if offset == off),
            "{text}"
        );
        assert!(text.contains(&dat.display().to_string()), "{text}");
        assert!(text.contains(&format!("offset {off}")), "{text}");
        assert!(text.contains("CRC mismatch"), "{text}");
    };

    // A full check refuses to open.
    let full = FileStoreOptions {
        recovery_check: RecoveryCheck::Full,
        ..opts()
    };
    expect(
        FileStore::open(dir.path(), full, unlimited())
            .err()
            .unwrap(),
    );

    // The fast check trusts the consistent index; the damage shows when the record is read,
    // while the rest stays readable.
    {
        let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        expect(ch.msgs().lookup(5).unwrap_err());
        expect(ch.msgs().read_batch(1, 100, usize::MAX).unwrap_err());
        assert_eq!(ch.msgs().lookup(6).unwrap().as_ref(), Some(&written[5]));
        assert_eq!(
            ch.msgs().read_batch(6, 100, usize::MAX).unwrap(),
            written[5..].to_vec()
        );
    }

    // Without an index, the scan finds valid records after the bad one: an error, not a
    // truncation, and the file is left as it was.
    let idx = chan_dir(dir.path(), "foo").join("msgs.1.idx");
    fs::remove_file(&idx).unwrap();
    let len = fs::metadata(&dat).unwrap().len();
    expect(
        FileStore::open(dir.path(), opts(), unlimited())
            .err()
            .unwrap(),
    );
    assert_eq!(fs::metadata(&dat).unwrap().len(), len);
}

#[test]
fn damaged_length_in_the_middle_is_caught_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let written = filled(dir.path(), opts(), 10);
    let dat = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    let off = record_offset(&written, 4);
    // A huge length: the record seems to run past the end of the file. Only the index can
    // tell that more records follow.
    flip(&dat, off + 3);
    let full = FileStoreOptions {
        recovery_check: RecoveryCheck::Full,
        ..opts()
    };
    let e = FileStore::open(dir.path(), full, unlimited())
        .err()
        .unwrap();
    assert!(
        matches!(e, StoreError::Corrupt { offset, .. } if offset == off),
        "{e}"
    );
}

#[test]
fn sealed_segment_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        slice_max_msgs: 5,
        ..opts()
    };
    filled(dir.path(), o.clone(), 12);
    let first = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    let len = fs::metadata(&first).unwrap().len();
    set_len(&first, len - 2);
    let e = FileStore::open(dir.path(), o.clone(), unlimited())
        .err()
        .unwrap();
    assert!(
        matches!(&e, StoreError::Corrupt { path, .. } if *path == first),
        "{e}"
    );

    // A missing segment in the middle breaks the sequence chain.
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), o.clone(), 12);
    fs::remove_file(chan_dir(dir.path(), "foo").join("msgs.6.dat")).unwrap();
    let e = FileStore::open(dir.path(), o, unlimited()).err().unwrap();
    let text = e.to_string();
    assert!(
        text.contains("msgs.11.dat") && text.contains("expected 6"),
        "{text}"
    );
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        slice_max_msgs: 6,
        ..opts()
    };
    let written = filled(dir.path(), o.clone(), 15);
    let cd = chan_dir(dir.path(), "foo");
    let idx1 = cd.join("msgs.1.idx");
    let idx7 = cd.join("msgs.7.idx");
    let (len1, len7) = (
        fs::metadata(&idx1).unwrap().len(),
        fs::metadata(&idx7).unwrap().len(),
    );
    assert_eq!(len1, 16 + 6 * 32);
    fs::remove_file(&idx1).unwrap();
    flip(&idx7, 16 + 32 * 2 + 5);
    set_len(&cd.join("msgs.13.idx"), 20);
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    assert_eq!(fs::metadata(&idx1).unwrap().len(), len1);
    assert_eq!(fs::metadata(&idx7).unwrap().len(), len7);
    for m in &written {
        assert_eq!(ch.msgs().lookup(m.sequence).unwrap().as_ref(), Some(m));
    }
    let ts = written[8].timestamp;
    assert_eq!(
        ch.msgs().sequence_for_timestamp(ts).unwrap(),
        written.iter().position(|m| m.timestamp == ts).unwrap() as u64 + 1
    );
}
