//! Regression tests for what fuzzing the file store's recovery found (`fuzz/`, targets
//! `store_recovery` and `store_recovery_crc`): each test holds the files of a crashing input.

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::Bytes;

use super::record::{DATA_MAGIC, IdxEntry, encode_record, seg_header};
use super::*;
use crate::proto::MsgProto;
use crate::store::{ChannelLimits, NewMessage, StoreLimits};

/// The configuration of the fuzz input flags 0x7f: full check, small limits, an age limit.
fn fuzz_config() -> (FileStoreOptions, StoreLimits) {
    let opts = FileStoreOptions {
        sync: SyncPolicy::Never,
        recovery_check: RecoveryCheck::Full,
        read_buffer_size: 4096,
        write_buffer_size: 4096,
        compact_enabled: false,
        ..FileStoreOptions::default()
    };
    let limits = StoreLimits {
        channel: ChannelLimits {
            max_msgs: 3,
            max_bytes: 400,
            max_subs: 2,
            max_age: Duration::from_secs(3600),
            ..ChannelLimits::default()
        },
        ..StoreLimits::default()
    };
    (opts, limits)
}

/// A segment named after the largest sequence, its header lost: recovery makes it an empty
/// log whose next sequence would be 2^64 - 1. Appending to it panicked (the segment's end
/// overflowed); it is now an error, and the store reopens.
#[test]
fn no_sequence_past_the_largest_is_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("channels").join("b");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("msgs.{}.dat", u64::MAX)),
        [0x01, 0xce, 0xff, 0x7a, 0x3f],
    )
    .unwrap();
    let (opts, limits) = fuzz_config();
    for _ in 0..2 {
        let store = FileStore::open(tmp.path(), opts.clone(), limits.clone()).unwrap();
        let ch = store.lookup_channel("b").unwrap();
        let st = ch.msgs().state();
        assert_eq!((st.first, st.last, st.msgs), (u64::MAX, u64::MAX - 1, 0));
        let e = ch
            .msgs()
            .append(NewMessage {
                reply: String::new(),
                data: Bytes::from_static(b"x"),
                timestamp: now_nanos(),
            })
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::SequencesExhausted { channel } if channel == "b"),
            "{e:?}"
        );
        let m = MsgProto {
            sequence: u64::MAX,
            ..Default::default()
        };
        assert!(matches!(
            ch.msgs().store(&m),
            Err(StoreError::SequencesExhausted { .. })
        ));
        drop(ch);
        store.close().unwrap();
    }
}

/// A record that claims sequence 2^64 - 1 (valid CRC, right place): corruption at its
/// offset, not an overflow.
#[test]
fn a_record_with_the_last_sequence_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("channels").join("a");
    fs::create_dir_all(&dir).unwrap();
    let first = u64::MAX - 1;
    let mut seg = seg_header(DATA_MAGIC, first).to_vec();
    for seq in [first, u64::MAX] {
        let m = MsgProto {
            sequence: seq,
            data: Bytes::from_static(b"x"),
            ..Default::default()
        };
        encode_record(&mut seg, &m, None).unwrap();
    }
    let second_at = 16 + 8 + (seg.len() as u64 - 16 - 16) / 2;
    let path = dir.join(format!("msgs.{first}.dat"));
    fs::write(&path, &seg).unwrap();
    for check in [RecoveryCheck::Fast, RecoveryCheck::Full] {
        let opts = FileStoreOptions {
            sync: SyncPolicy::Never,
            recovery_check: check,
            ..FileStoreOptions::default()
        };
        match FileStore::open(tmp.path(), opts, StoreLimits::unlimited()) {
            Err(StoreError::Corrupt {
                path: p,
                offset,
                kind,
            }) => {
                assert_eq!(
                    (p, offset, kind),
                    (path.clone(), second_at, Corruption::SequenceOverflow)
                );
            }
            Err(e) => panic!("expected corruption, got {e:?}"),
            Ok(_) => panic!("expected corruption, the store opened"),
        }
    }
}

/// An index entry of a sealed segment whose CRC holds but whose offset points far past the
/// file. Reading it was an I/O error (or, with another offset, an allocation sized by the
/// offset); the entry now fails its checks and the index is rebuilt from the data.
#[test]
fn index_entry_with_a_valid_crc_and_a_wild_offset_gets_the_index_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FileStoreOptions {
        sync: SyncPolicy::Never,
        slice_max_msgs: 3,
        ..FileStoreOptions::default()
    };
    let store = FileStore::open(tmp.path(), opts.clone(), StoreLimits::unlimited()).unwrap();
    let ch = store.create_channel("a").unwrap();
    for i in 0..4u8 {
        ch.msgs()
            .append(NewMessage {
                reply: String::new(),
                data: Bytes::from(vec![b'p'; 7 + usize::from(i)]),
                timestamp: now_nanos(),
            })
            .unwrap();
    }
    ch.msgs().flush().unwrap();
    drop(ch);
    store.close().unwrap();
    drop(store);

    // Entry 2 of the sealed first segment, rewritten with a wild offset and a valid CRC (the
    // fuzzer's input had 0xffff_ffff_ff00_0030).
    let idx = tmp.path().join("channels/a/msgs.1.idx");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&idx)
        .unwrap();
    let mut raw = [0u8; 32];
    f.read_exact_at(&mut raw, 16 + 32).unwrap();
    let mut e = IdxEntry::decode(&raw).unwrap();
    for offset in [0xffff_ffff_ff00_0030, 1 << 40, 3] {
        e.offset = offset;
        let mut buf = Vec::new();
        e.encode(&mut buf);
        f.write_all_at(&buf, 16 + 32).unwrap();

        let store = FileStore::open(tmp.path(), opts.clone(), StoreLimits::unlimited()).unwrap();
        let ch = store.lookup_channel("a").unwrap();
        let msgs = ch.msgs().read_batch(1, 10, 1 << 20).unwrap();
        let seqs: Vec<u64> = msgs.iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "offset {offset:#x}");
        assert_eq!(msgs[1].data.len(), 8);
        drop(ch);
        store.close().unwrap();
    }
}
