//! The store against the memory store as a model, concurrency, and crash rounds.

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};

use super::*;

mod model {
    //! The file store against the memory store as a model, through random operations
    //! including reopening.
    use proptest::prelude::*;

    use super::*;
    use crate::store::memory::MemoryStore;

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Flush,
        Expire(i64),
        Reopen,
        Lookup(u64),
        Batch(u64, usize),
        Time(i64),
        Empty,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0usize..300).prop_map(Op::Append),
            1 => Just(Op::Flush),
            1 => (0i64..3_000).prop_map(Op::Expire),
            1 => Just(Op::Reopen),
            2 => (0u64..40).prop_map(Op::Lookup),
            2 => ((0u64..40), (1usize..20)).prop_map(|(s, n)| Op::Batch(s, n)),
            1 => (0i64..3_000).prop_map(Op::Time),
            1 => Just(Op::Empty),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn file_store_behaves_like_memory_store(
            ops in proptest::collection::vec(op(), 1..60),
            max_msgs in 0u64..12,
            slice in 1u64..5,
        ) {
            // A synthetic clock: ms steps for appends, larger jumps for expiry; a reopen
            // applies the limits as of the latest instant seen, as a restart would.
            let base = 1_700_000_000_000_000_000i64;
            let mut now = base;
            let ms = 1_000_000i64;
            let max_age = Duration::from_secs(3600);
            let l = StoreLimits {
                channel: ChannelLimits { max_msgs, max_age, ..ChannelLimits::UNLIMITED },
                ..StoreLimits::unlimited()
            };
            let dir = tempfile::tempdir().unwrap();
            let o = FileStoreOptions {
                slice_max_msgs: slice,
                write_buffer_size: 512,
                ..opts()
            };
            let model = MemoryStore::new(l.clone()).unwrap();
            let mch = model.create_channel("m").unwrap();
            let mut fs = FileStore::open(dir.path(), o.clone(), l.clone()).unwrap();
            let mut fch = fs.create_channel("m").unwrap();
            let mut clock = 0i64;
            for op in ops {
                match op {
                    Op::Append(len) => {
                        clock += 1;
                        let m = NewMessage {
                            reply: if len % 3 == 0 { "r".into() } else { String::new() },
                            data: Bytes::from(vec![len as u8; len]),
                            timestamp: base + clock * ms,
                        };
                        now = now.max(m.timestamp);
                        let a = mch.msgs().append(m.clone()).unwrap();
                        let b = fch.msgs().append(m).unwrap();
                        prop_assert_eq!(a, b);
                    }
                    Op::Flush => fch.msgs().flush().unwrap(),
                    Op::Expire(t) => {
                        // Far enough ahead to expire with a 1 h limit at times.
                        now = now.max(base + clock * ms + t * 2_000 * ms);
                        prop_assert_eq!(
                            mch.msgs().expire(now).unwrap(),
                            fch.msgs().expire(now).unwrap()
                        );
                    }
                    Op::Reopen => {
                        drop(fch);
                        drop(fs);
                        fs = FileStore::open_at(dir.path(), o.clone(), l.clone(), now, None).unwrap();
                        fch = fs.lookup_channel("m").unwrap();
                        mch.msgs().expire(now).unwrap();
                    }
                    Op::Lookup(seq) => {
                        prop_assert_eq!(mch.msgs().lookup(seq).unwrap(), fch.msgs().lookup(seq).unwrap());
                    }
                    Op::Batch(start, n) => {
                        prop_assert_eq!(
                            mch.msgs().read_batch(start, n, usize::MAX).unwrap(),
                            fch.msgs().read_batch(start, n, usize::MAX).unwrap()
                        );
                    }
                    Op::Time(t) => {
                        let ts = base + t * ms / 20;
                        prop_assert_eq!(
                            mch.msgs().sequence_for_timestamp(ts).unwrap(),
                            fch.msgs().sequence_for_timestamp(ts).unwrap()
                        );
                    }
                    Op::Empty => {
                        mch.msgs().empty().unwrap();
                        fch.msgs().empty().unwrap();
                    }
                }
                let (a, b) = (mch.msgs().state(), fch.msgs().state());
                prop_assert_eq!((a.first, a.last, a.msgs), (b.first, b.last, b.msgs));
            }
        }
    }
}

#[test]
fn concurrent_appenders_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(
        FileStore::open(
            dir.path(),
            FileStoreOptions {
                slice_max_msgs: 50,
                fds_limit: 8,
                ..opts()
            },
            unlimited(),
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let ch = s.create_channel(&format!("c{t}")).unwrap();
                for i in 1..=500u64 {
                    let m = ch.msgs().append(msg(i)).unwrap();
                    assert_eq!(m.sequence, i);
                    if i % 50 == 0 {
                        ch.msgs().flush().unwrap();
                    }
                }
            })
        })
        .collect();
    // A reader replays a channel while it is being written.
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut next = 1;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while next <= 500 && std::time::Instant::now() < deadline {
                let Some(ch) = s.lookup_channel("c0") else {
                    continue;
                };
                for m in ch.msgs().read_batch(next, 64, usize::MAX).unwrap() {
                    assert_eq!(m.sequence, next);
                    assert_eq!(m.data, format!("message number {next}"));
                    next += 1;
                }
            }
            next
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(reader.join().unwrap(), 501);
    for ch in s.channels() {
        assert_eq!(ch.msgs().state().msgs, 500);
    }
    assert!(
        s.peak_open_files() <= 8 + 2 * 5,
        "peak {}",
        s.peak_open_files()
    );
}

#[test]
fn index_entries_only_describe_synced_data() {
    let dir = tempfile::tempdir().unwrap();
    let idx = chan_dir(dir.path(), "foo").join("msgs.1.idx");
    let idx_len = || fs::metadata(&idx).unwrap().len();
    // Under OnFlush, a flush syncs the data and then writes the index.
    {
        let o = FileStoreOptions {
            sync: SyncPolicy::OnFlush,
            ..Default::default()
        };
        let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        for i in 1..=5 {
            ch.msgs().append(msg(i)).unwrap();
        }
        assert_eq!(idx_len(), 16);
        // Reads of unindexed messages are served from the in-memory entries.
        assert_eq!(ch.msgs().lookup(3).unwrap().unwrap().sequence, 3);
        ch.msgs().flush().unwrap();
        assert_eq!(idx_len(), 16 + 5 * 32);
    }
    // Under Periodic, entries wait for the fsync.
    let o = FileStoreOptions {
        sync: SyncPolicy::Periodic(Duration::from_secs(3600)),
        ..Default::default()
    };
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    for i in 6..=8 {
        ch.msgs().append(msg(i)).unwrap();
    }
    ch.msgs().flush().unwrap();
    assert_eq!(idx_len(), 16 + 5 * 32);
    assert_eq!(ch.msgs().read_batch(1, 100, usize::MAX).unwrap().len(), 8);
    assert_eq!(ch.msgs().sequence_for_timestamp(i64::MAX).unwrap(), 9);
    s.sync().unwrap();
    assert_eq!(idx_len(), 16 + 8 * 32);
}

#[test]
fn damage_after_the_index_is_an_interrupted_write() {
    // Power loss in the middle of a write can persist later pages and lose earlier ones: a
    // bad record with valid ones after it, past the synced (indexed) region. That is the
    // interrupted write, cut off, not corruption.
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        fill(&ch, 10)
    };
    let cd = chan_dir(dir.path(), "foo");
    let dat = cd.join("msgs.1.dat");
    // Only 5 entries made it to the index; record 7 lost a page.
    set_len(&cd.join("msgs.1.idx"), 16 + 5 * 32);
    let off7 = record_offset(&written, 7);
    let f = OpenOptions::new().write(true).open(&dat).unwrap();
    f.write_all_at(&[0u8; 12], off7 + 4).unwrap();
    drop(f);
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (1, 6, 6));
    assert_eq!(fs::metadata(&dat).unwrap().len(), off7);
    assert_eq!(
        ch.msgs().read_batch(1, 100, usize::MAX).unwrap(),
        written[..6].to_vec()
    );
}

/// Rounds of: append (and track subscription state), flush at random points, die at a random
/// moment, tear the unflushed tail of the last segment at a random length, reopen. Every
/// flushed message must come back intact, in order, once per sequence, and the durable
/// subscription state must be as flushed.
#[test]
fn crash_rounds_keep_every_flushed_message() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        sync: SyncPolicy::OnFlush,
        slice_max_msgs: 37,
        write_buffer_size: 700,
        ..Default::default()
    };
    // Seeded: the crash rounds are reproducible.
    let mut rng = SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    // Everything appended, by sequence, and the last flushed sequence.
    let mut all: Vec<MsgProto> = Vec::new();
    let mut acked = 0u64;
    let mut acked_pending: Vec<u64> = Vec::new();
    let mut sub_id = 0;
    let (mut lost_unflushed, mut kept_unflushed) = (0, 0);
    for round in 0..25 {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let (ch, _) = s.lookup_or_create_channel("crash").unwrap();
        // Check what survived.
        let st = ch.msgs().state();
        assert!(
            st.last >= acked,
            "round {round}: last {} < acked {acked}",
            st.last
        );
        assert!(
            st.last as usize <= all.len(),
            "round {round}: invented messages"
        );
        let back = ch.msgs().read_batch(1, usize::MAX, usize::MAX).unwrap();
        assert_eq!(back.len() as u64, st.last, "round {round}");
        assert_eq!(back[..], all[..st.last as usize], "round {round}");
        lost_unflushed += u64::from((st.last as usize) < all.len());
        kept_unflushed += u64::from(st.last > acked);
        // Unflushed messages that did not survive are gone for good; sequences continue.
        all.truncate(st.last as usize);
        acked = st.last;
        let subs = ch.subs().subscriptions();
        if sub_id == 0 {
            let mut sub = SubState {
                durable_name: "d".into(),
                is_durable: true,
                ..Default::default()
            };
            ch.subs().create_sub(&mut sub).unwrap();
            ch.subs().flush().unwrap();
            sub_id = sub.id;
        } else {
            assert_eq!(subs.len(), 1, "round {round}");
            // Subscription changes are written at flush only: exactly the flushed state.
            let pending: Vec<u64> = subs[0].pending.iter().copied().collect();
            assert_eq!(pending, acked_pending, "round {round}");
        }

        let ops = 20 + rng.random_range(0..200);
        for _ in 0..ops {
            match rng.random_range(0..10) {
                0..=6 => {
                    let len = rng.random_range(0..300) as usize;
                    let m = ch
                        .msgs()
                        .append(NewMessage {
                            reply: String::new(),
                            data: Bytes::from(vec![b'a' + (len % 26) as u8; len]),
                            timestamp: now_nanos(),
                        })
                        .unwrap();
                    assert_eq!(m.sequence as usize, all.len() + 1);
                    all.push(m);
                }
                7 => {
                    let seq = 1 + rng.random_range(0..all.len().max(1) as u64);
                    ch.subs().add_seq_pending(sub_id, seq).unwrap();
                }
                8 => {
                    if let Some(&seq) = acked_pending.first() {
                        ch.subs().ack_seq_pending(sub_id, seq).unwrap();
                    }
                }
                _ => {
                    ch.msgs().flush().unwrap();
                    ch.subs().flush().unwrap();
                    acked = all.len() as u64;
                    acked_pending = ch.subs().subscriptions()[0]
                        .pending
                        .iter()
                        .copied()
                        .collect();
                }
            }
        }
        drop(ch);
        s.crash();

        // Tear the last segment somewhere after its flushed part.
        let mut segs: Vec<u64> = seg_files(dir.path(), "crash")
            .iter()
            .filter_map(|n| n.strip_suffix(".dat")?.strip_prefix("msgs.")?.parse().ok())
            .collect();
        segs.sort();
        let Some(&last_first) = segs.last() else {
            continue;
        };
        let dat = chan_dir(dir.path(), "crash").join(format!("msgs.{last_first}.dat"));
        let durable_end = 16
            + all
                .iter()
                .filter(|m| m.sequence >= last_first && m.sequence <= acked)
                .map(|m| 8 + m.encoded_len() as u64)
                .sum::<u64>();
        let len = fs::metadata(&dat).unwrap().len();
        if len > durable_end && rng.random_range(0..2) == 0 {
            let cut = durable_end + rng.random_range(0..len - durable_end);
            set_len(&dat, cut);
        }
    }
    assert!(acked > 100, "the rounds flushed too little ({acked})");
    // Both outcomes of a crash were exercised: unflushed messages lost, and kept (written to
    // the kernel before the crash, or past a torn cut).
    assert!(
        lost_unflushed > 0 && kept_unflushed > 0,
        "{lost_unflushed} {kept_unflushed}"
    );
}

#[test]
fn dir_lock_is_exclusive_and_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let lock = DirLock::try_acquire(dir.path()).unwrap().expect("free");
    assert!(DirLock::try_acquire(dir.path()).unwrap().is_none(), "held");
    assert!(matches!(
        FileStore::open(
            dir.path(),
            FileStoreOptions::default(),
            StoreLimits::default()
        ),
        Err(StoreError::Locked { .. })
    ));
    let fs =
        FileStore::open_locked(lock, FileStoreOptions::default(), StoreLimits::default()).unwrap();
    assert!(
        DirLock::try_acquire(dir.path()).unwrap().is_none(),
        "held by the store"
    );
    fs.close().unwrap();
    assert!(
        DirLock::try_acquire(dir.path()).unwrap().is_some(),
        "released by close"
    );
}
