//! Regression tests for what fuzzing the file store's recovery found (`fuzz/`, targets
//! `store_recovery` and `store_recovery_crc`): each test holds the files of a crashing input.

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::Bytes;

use super::record::IdxEntry;
use super::*;
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

/// A segment named after the largest sequence: its sequences would pass 2^64. It panicked
/// (overflow) in recovery; it is now reported as corruption of that file.
#[test]
fn segment_at_the_end_of_the_sequence_space_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("channels").join("b");
    fs::create_dir_all(&dir).unwrap();
    let seg = dir.join(format!("msgs.{}.dat", u64::MAX));
    fs::write(&seg, [0x01, 0xce, 0xff, 0x7a, 0x3f]).unwrap();
    let (opts, limits) = fuzz_config();
    match FileStore::open(tmp.path(), opts, limits) {
        Err(StoreError::Corrupt { path, offset, kind }) => {
            assert_eq!((path, offset), (seg, 8));
            assert_eq!(kind, Corruption::SequenceOverflow { first: u64::MAX });
        }
        Err(e) => panic!("expected corruption, got {e:?}"),
        Ok(_) => panic!("expected corruption, the store opened"),
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
