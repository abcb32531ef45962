use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::proto::{MsgProto, SubState};
use crate::store::{ChannelLimits, NewMessage, StoreLimits};

fn opts() -> FileStoreOptions {
    FileStoreOptions {
        sync: SyncPolicy::Never,
        ..Default::default()
    }
}

fn unlimited() -> StoreLimits {
    StoreLimits::unlimited()
}

fn msg(i: u64) -> NewMessage {
    NewMessage {
        reply: String::new(),
        data: Bytes::from(format!("message number {i}")),
        timestamp: now_nanos(),
    }
}

fn fill(ch: &Channel, n: u64) -> Vec<MsgProto> {
    let out: Vec<MsgProto> = (1..=n).map(|i| ch.msgs().append(msg(i)).unwrap()).collect();
    ch.msgs().flush().unwrap();
    out
}

fn chan_dir(root: &Path, name: &str) -> PathBuf {
    root.join("channels")
        .join(encode_channel_dir(name).unwrap())
}

fn seg_files(root: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(chan_dir(root, name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("msgs."))
        .collect();
    v.sort();
    v
}

/// Offset of record `seq` (1-based) in a single-segment log holding `msgs`.
fn record_offset(msgs: &[MsgProto], seq: u64) -> u64 {
    16 + msgs[..(seq - 1) as usize]
        .iter()
        .map(|m| 8 + m.encoded_len() as u64)
        .sum::<u64>()
}

/// Truncates (or extends with zeros) `path` to `len` bytes: a torn write, a lost tail.
fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

#[test]
fn write_reopen_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        sync: SyncPolicy::OnFlush,
        slice_max_msgs: 7,
        ..Default::default()
    };
    let (written, sub_id) = {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        assert!(s.recover().unwrap().is_empty());
        let info = ServerInfo {
            cluster_id: "c1".into(),
            publish: "_STAN.pub.c1".into(),
            ..Default::default()
        };
        s.init(&info).unwrap();
        s.add_client(&ClientInfo {
            id: "me".into(),
            hb_inbox: "hb".into(),
            ..Default::default()
        })
        .unwrap();
        let ch = s.create_channel("foo.bar").unwrap();
        s.create_channel("weird name/é*").unwrap_err();
        s.create_channel("émoji-☃").unwrap();
        let written = fill(&ch, 20);
        let mut sub = SubState {
            client_id: "me".into(),
            durable_name: "dur".into(),
            is_durable: true,
            ..Default::default()
        };
        ch.subs().create_sub(&mut sub).unwrap();
        for seq in 1..=5 {
            ch.subs().add_seq_pending(sub.id, seq).unwrap();
        }
        ch.subs().ack_seq_pending(sub.id, 2).unwrap();
        ch.subs().flush().unwrap();
        (written, sub.id)
    };
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.info.as_ref().unwrap().cluster_id, "c1");
    assert_eq!(r.info.unwrap().publish, "_STAN.pub.c1");
    assert_eq!(r.clients.len(), 1);
    assert_eq!(r.clients[0].hb_inbox, "hb");
    let names: Vec<&str> = r.channels.iter().map(|c| c.channel.name()).collect();
    assert_eq!(names, ["foo.bar", "émoji-☃"]);
    let rc = &r.channels[0];
    assert_eq!(rc.subscriptions.len(), 1);
    let rs = &rc.subscriptions[0];
    assert_eq!(rs.state.id, sub_id);
    assert_eq!(rs.state.durable_name, "dur");
    assert_eq!(rs.state.last_sent, 5);
    assert_eq!(rs.pending.iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5]);
    let ch = &rc.channel;
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (1, 20, 20));
    for m in &written {
        assert_eq!(ch.msgs().lookup(m.sequence).unwrap().as_ref(), Some(m));
    }
    assert_eq!(ch.msgs().read_batch(1, 100, usize::MAX).unwrap(), written);
    assert_eq!(seg_files(dir.path(), "foo.bar").len(), 6);
    // Sequences, timestamps and subscription IDs continue.
    let m = ch
        .msgs()
        .append(NewMessage {
            timestamp: 0,
            ..msg(21)
        })
        .unwrap();
    assert_eq!(m.sequence, 21);
    assert_eq!(m.timestamp, written[19].timestamp);
    let mut sub2 = SubState::default();
    ch.subs().create_sub(&mut sub2).unwrap();
    assert_eq!(sub2.id, sub_id + 1);
}

#[test]
fn limits_across_segments_drop_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        slice_max_msgs: 4,
        ..opts()
    };
    let l = StoreLimits {
        channel: ChannelLimits {
            max_msgs: 10,
            ..ChannelLimits::UNLIMITED
        },
        ..unlimited()
    };
    {
        let s = FileStore::open(dir.path(), o.clone(), l.clone()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        let all = fill(&ch, 25);
        let st = ch.msgs().state();
        assert_eq!((st.first, st.last, st.msgs), (16, 25, 10));
        // Segments start at 1, 5, 9, 13, 17, 21, 25: those ending before 16 are gone.
        assert_eq!(
            seg_files(dir.path(), "foo"),
            [
                "msgs.13.dat",
                "msgs.13.idx",
                "msgs.17.dat",
                "msgs.17.idx",
                "msgs.21.dat",
                "msgs.21.idx",
                "msgs.25.dat",
                "msgs.25.idx"
            ]
        );
        assert_eq!(ch.msgs().lookup(15).unwrap(), None);
        assert_eq!(
            ch.msgs().read_batch(0, 100, usize::MAX).unwrap(),
            all[15..].to_vec()
        );
        let bytes: u64 = all[15..].iter().map(|m| m.encoded_len() as u64 + 40).sum();
        assert_eq!(st.bytes, bytes);
    }
    // Reopen with the same limits: same view (segment 13 is partly dropped again).
    {
        let s = FileStore::open(dir.path(), o.clone(), l).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        let st = ch.msgs().state();
        assert_eq!((st.first, st.last, st.msgs), (16, 25, 10));
        let bytes: u64 = (16..=25)
            .map(|i| ch.msgs().lookup(i).unwrap().unwrap().encoded_len() as u64 + 40)
            .sum();
        assert_eq!(st.bytes, bytes);
    }
    // Reopen with a lower limit: applied on recovery.
    let l3 = StoreLimits {
        channel: ChannelLimits {
            max_msgs: 3,
            ..ChannelLimits::UNLIMITED
        },
        ..unlimited()
    };
    let s = FileStore::open(dir.path(), o, l3).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (23, 25, 3));
    assert_eq!(
        seg_files(dir.path(), "foo"),
        ["msgs.21.dat", "msgs.21.idx", "msgs.25.dat", "msgs.25.idx"]
    );
}

#[test]
fn age_limit_on_reopen_keeps_last_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        slice_max_msgs: 3,
        ..opts()
    };
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        for i in 1..=8 {
            ch.msgs()
                .append(NewMessage {
                    timestamp: i * 1000,
                    ..msg(i as u64)
                })
                .unwrap();
        }
    }
    let l = StoreLimits {
        channel: ChannelLimits {
            max_age: Duration::from_secs(60),
            ..ChannelLimits::UNLIMITED
        },
        ..unlimited()
    };
    let s = FileStore::open(dir.path(), o, l).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (9, 8, 0));
    // Only the last segment is left, to remember the last sequence.
    assert_eq!(seg_files(dir.path(), "foo"), ["msgs.7.dat", "msgs.7.idx"]);
    assert_eq!(ch.msgs().append(msg(9)).unwrap().sequence, 9);
    assert_eq!(
        ch.msgs()
            .expire(now_nanos())
            .unwrap()
            .map(|t| t > now_nanos()),
        Some(true)
    );
}

#[test]
fn second_store_on_the_same_dir_fails() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    let e = FileStore::open(dir.path(), opts(), unlimited())
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::Locked { .. }));
    let text = e.to_string();
    assert!(text.contains("is locked by another server"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    // Closing releases the lock.
    s.close().unwrap();
    let s2 = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    drop(s);
    assert!(FileStore::open(dir.path(), opts(), unlimited()).is_err());
    drop(s2);
    FileStore::open(dir.path(), opts(), unlimited()).unwrap();
}

#[test]
fn thousand_channels_with_a_small_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 16;
    let o = FileStoreOptions {
        fds_limit: limit,
        ..opts()
    };
    let n = 1000;
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        for i in 0..n {
            let ch = s.create_channel(&format!("ch.{i}")).unwrap();
            for j in 0..3 {
                ch.msgs().append(msg(j)).unwrap();
            }
            let mut sub = SubState::default();
            ch.subs().create_sub(&mut sub).unwrap();
            ch.subs().add_seq_pending(sub.id, 1).unwrap();
            ch.msgs().flush().unwrap();
            ch.subs().flush().unwrap();
            assert!(s.open_files() <= limit);
        }
        for i in (0..n).rev() {
            let ch = s.lookup_channel(&format!("ch.{i}")).unwrap();
            assert_eq!(
                ch.msgs().lookup(2).unwrap().unwrap().data,
                "message number 1"
            );
        }
        assert!(s.open_files() <= limit);
        assert!(
            s.peak_open_files() <= limit + 2,
            "peak {}",
            s.peak_open_files()
        );
    }
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    assert_eq!(s.channels().len(), n);
    assert!(
        s.peak_open_files() <= limit + 2,
        "peak {}",
        s.peak_open_files()
    );
    for ch in s.channels() {
        assert_eq!(ch.msgs().state().msgs, 3);
        assert_eq!(ch.subs().subscriptions()[0].pending.len(), 1);
        assert_eq!(ch.msgs().append(msg(4)).unwrap().sequence, 4);
    }
    s.sync().unwrap();
    assert!(s.open_files() <= limit);
    assert!(
        s.peak_open_files() <= limit + 2,
        "peak {}",
        s.peak_open_files()
    );
}

#[test]
fn subscription_log_compaction_and_tails() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        compact_min_size: 0,
        compact_interval: Duration::ZERO,
        compact_frag: 50,
        ..opts()
    };
    let subs_path = chan_dir(dir.path(), "foo").join("subs.dat");
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        let mut a = SubState {
            client_id: "a".into(),
            ..Default::default()
        };
        let mut b = SubState {
            client_id: "b".into(),
            ..Default::default()
        };
        let mut c = SubState {
            client_id: "c".into(),
            ..Default::default()
        };
        for sub in [&mut a, &mut b, &mut c] {
            ch.subs().create_sub(sub).unwrap();
        }
        for seq in 1..=200 {
            ch.subs().add_seq_pending(a.id, seq).unwrap();
            if seq <= 190 {
                ch.subs().ack_seq_pending(a.id, seq).unwrap();
            }
        }
        ch.subs().delete_sub(c.id).unwrap();
        ch.subs().flush().unwrap();
        // Compacted: 2 subscriptions, 10 pending, and the record keeping the highest ID.
        let len = fs::metadata(&subs_path).unwrap().len();
        assert!(len < 400, "subs.dat is {len} bytes");
    }
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        let subs = ch.subs().subscriptions();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].state.last_sent, 200);
        assert_eq!(
            subs[0].pending.iter().copied().collect::<Vec<_>>(),
            (191..=200).collect::<Vec<_>>()
        );
        let mut d = SubState::default();
        ch.subs().create_sub(&mut d).unwrap();
        assert_eq!(d.id, 4, "IDs survive compaction");
        ch.subs().add_seq_pending(d.id, 7).unwrap();
        ch.subs().add_seq_pending(d.id, 8).unwrap();
        ch.subs().flush().unwrap();
    }
    // Torn tail: the last record (pending 8) is cut.
    let len = fs::metadata(&subs_path).unwrap().len();
    set_len(&subs_path, len - 1);
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let subs = s.lookup_channel("foo").unwrap().subs().subscriptions();
        assert_eq!(subs[2].pending.iter().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(subs[2].state.last_sent, 7);
    }
    // Damage in the middle: reported with path and offset.
    flip(&subs_path, 8 + 8 + 1);
    let e = FileStore::open(dir.path(), o, unlimited()).err().unwrap();
    assert!(
        matches!(&e, StoreError::Corrupt { path, offset: 8, .. } if *path == subs_path),
        "{e}"
    );
}

#[test]
fn batched_pending_and_ack_records() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        compact_enabled: false,
        ..opts()
    };
    let subs_path = chan_dir(dir.path(), "foo").join("subs.dat");
    let (a, b);
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        let mut sa = SubState::default();
        let mut sb = SubState::default();
        ch.subs().create_sub(&mut sa).unwrap();
        ch.subs().create_sub(&mut sb).unwrap();
        (a, b) = (sa.id, sb.id);
        // More than one record's worth, out of order, mixed with single records.
        let seqs: Vec<u64> = (1..=5000).collect();
        ch.subs().add_seqs_pending(a, &seqs).unwrap();
        ch.subs().add_seq_pending(b, 9).unwrap();
        ch.subs().add_seqs_pending(b, &[3, 1, 2]).unwrap();
        let acked: Vec<u64> = (1..=4990).rev().collect();
        ch.subs().ack_seqs_pending(a, &acked).unwrap();
        ch.subs().ack_seqs_pending(b, &[2]).unwrap();
        // Unknown subscription and sequences not pending: nothing recorded.
        ch.subs().ack_seqs_pending(b, &[77, 78]).unwrap();
        ch.subs().add_seqs_pending(99, &[1, 2]).unwrap();
        ch.subs().flush().unwrap();
        // One record per 4096 sequences, not one per sequence.
        let len = fs::metadata(&subs_path).unwrap().len();
        assert!(len < 40_000, "subs.dat is {len} bytes");
    }
    let pending = |s: &FileStore, i: usize| {
        let subs = s.lookup_channel("foo").unwrap().subs().subscriptions();
        (
            subs[i].pending.iter().copied().collect::<Vec<_>>(),
            subs[i].state.last_sent,
        )
    };
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        assert_eq!(pending(&s, 0), ((4991..=5000).collect(), 5000));
        assert_eq!(pending(&s, 1), (vec![1, 3, 9], 9));
    }
    // A torn batch record is cut like any other: the acks of `b` before it stay.
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        ch.subs().ack_seqs_pending(a, &[4991, 4992, 4993]).unwrap();
        ch.subs().flush().unwrap();
    }
    let len = fs::metadata(&subs_path).unwrap().len();
    set_len(&subs_path, len - 2);
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        assert_eq!(pending(&s, 0).0, (4991..=5000).collect::<Vec<_>>());
    }
    // Batched records weigh their sequences: acking them all makes the log worth compacting.
    let o = FileStoreOptions {
        compact_enabled: true,
        compact_min_size: 0,
        compact_interval: Duration::ZERO,
        compact_frag: 50,
        ..opts()
    };
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        let rest: Vec<u64> = (4991..=5000).collect();
        ch.subs().ack_seqs_pending(a, &rest).unwrap();
        ch.subs().flush().unwrap();
        let len = fs::metadata(&subs_path).unwrap().len();
        assert!(len < 200, "compacted subs.dat is {len} bytes");
    }
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    assert_eq!(pending(&s, 0), (vec![], 5000));
    assert_eq!(pending(&s, 1), (vec![1, 3, 9], 9));
}

#[test]
fn zeros_written_ahead_are_cut_on_seal_close_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        sync: SyncPolicy::OnFlush,
        slice_max_msgs: 50,
        ..Default::default()
    };
    let dat_lens = || -> Vec<u64> {
        seg_files(dir.path(), "foo")
            .iter()
            .filter(|f| f.ends_with(".dat"))
            .map(|f| {
                fs::metadata(chan_dir(dir.path(), "foo").join(f))
                    .unwrap()
                    .len()
            })
            .collect()
    };
    let records_end = |msgs: &[MsgProto]| -> u64 {
        record::SEG_HEADER_LEN
            + msgs
                .iter()
                .map(|m| REC_HEADER_LEN + m.encoded_len() as u64)
                .sum::<u64>()
    };
    let written: Vec<MsgProto>;
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        written = fill(&ch, 70);
        ch.msgs().flush().unwrap();
        // The sealed segment ends with its last record; the last one runs on into zeros.
        let lens = dat_lens();
        assert_eq!(lens.len(), 2);
        assert_eq!(lens[0], records_end(&written[..50]));
        assert_eq!(lens[1], 1 << 20);
        s.crash();
    }
    {
        // Recovery: the zeros are the end of the log.
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        assert_eq!(ch.msgs().state().last, 70);
        let back = ch.msgs().read_batch(1, usize::MAX, usize::MAX).unwrap();
        assert_eq!(back, written);
        assert_eq!(dat_lens()[1], records_end(&written[50..]));
        // Appending after recovery writes zeros ahead again, and close cuts them.
        let m = ch
            .msgs()
            .append(NewMessage {
                reply: String::new(),
                data: Bytes::from_static(b"after"),
                timestamp: now_nanos(),
            })
            .unwrap();
        ch.msgs().flush().unwrap();
        assert_eq!(dat_lens()[1], 1 << 20);
        s.close().unwrap();
        let mut all = written.clone();
        all.push(m);
        assert_eq!(dat_lens()[1], records_end(&all[50..]));
    }
    // Reopened after a clean close: everything is there.
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    assert_eq!(s.lookup_channel("foo").unwrap().msgs().state().last, 71);
}

#[test]
fn client_log_compaction_and_channel_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        compact_min_size: 0,
        compact_interval: Duration::ZERO,
        ..opts()
    };
    {
        let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
        for i in 0..50 {
            let c = ClientInfo {
                id: format!("c{i}"),
                hb_inbox: "hb".into(),
                ..Default::default()
            };
            s.add_client(&c).unwrap();
            if i % 10 != 0 {
                s.delete_client(&c.id).unwrap();
            }
        }
        assert!(fs::metadata(dir.path().join("clients.dat")).unwrap().len() < 200);
        let ch = s.create_channel("gone").unwrap();
        fill(&ch, 3);
        s.create_channel("kept").unwrap();
        assert!(s.delete_channel("gone").unwrap());
        assert!(!chan_dir(dir.path(), "gone").exists());
    }
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    let r = s.recover().unwrap();
    let ids: Vec<String> = r.clients.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, ["c0", "c10", "c20", "c30", "c40"]);
    let names: Vec<&str> = r.channels.iter().map(|c| c.channel.name()).collect();
    assert_eq!(names, ["kept"]);
}

#[test]
fn sequence_jump_and_empty_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
        let ch = s.create_channel("foo").unwrap();
        fill(&ch, 3);
        ch.msgs().empty().unwrap();
        ch.msgs().flush().unwrap();
    }
    {
        let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
        let ch = s.lookup_channel("foo").unwrap();
        let st = ch.msgs().state();
        assert_eq!((st.first, st.last, st.msgs), (4, 3, 0));
        let m = MsgProto {
            sequence: 100,
            subject: "foo".into(),
            timestamp: 5,
            ..Default::default()
        };
        ch.msgs().store(&m).unwrap();
        ch.msgs().flush().unwrap();
    }
    let s = FileStore::open(dir.path(), opts(), unlimited()).unwrap();
    let ch = s.lookup_channel("foo").unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (100, 100, 1));
    assert_eq!(
        seg_files(dir.path(), "foo"),
        ["msgs.100.dat", "msgs.100.idx"]
    );
}

#[test]
fn periodic_sync_and_write_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileStoreOptions {
        sync: SyncPolicy::Periodic(Duration::from_millis(5)),
        write_buffer_size: 100,
        ..Default::default()
    };
    let s = FileStore::open(dir.path(), o.clone(), unlimited()).unwrap();
    let ch = s.create_channel("foo").unwrap();
    // The write buffer spills before any flush.
    for i in 0..20 {
        ch.msgs().append(msg(i)).unwrap();
    }
    let dat = chan_dir(dir.path(), "foo").join("msgs.1.dat");
    assert!(fs::metadata(&dat).unwrap().len() > 16);
    ch.msgs().flush().unwrap();
    std::thread::sleep(Duration::from_millis(6));
    ch.msgs().append(msg(21)).unwrap();
    ch.msgs().flush().unwrap();
    s.sync().unwrap();
    drop(s);
    let s = FileStore::open(dir.path(), o, unlimited()).unwrap();
    assert_eq!(s.lookup_channel("foo").unwrap().msgs().state().msgs, 21);
}

#[test]
fn channel_dir_names() {
    for name in [
        "foo",
        "foo.bar",
        "a-b_c",
        "Ünï.cödé",
        "a%b",
        "x:y",
        "$SYS.x",
    ] {
        let enc = encode_channel_dir(name).unwrap();
        assert!(
            enc.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)),
            "{enc}"
        );
        assert_eq!(decode_channel_dir(&enc).as_deref(), Some(name));
    }
    assert_eq!(encode_channel_dir("a b").unwrap(), "a%20b");
    assert_eq!(decode_channel_dir("lost+found"), None);
    assert_eq!(decode_channel_dir("a%2x"), None);
    assert_eq!(decode_channel_dir("a%62"), None, "not canonical");
    assert!(encode_channel_dir(&"é".repeat(50)).is_none());
}

mod crash;
mod damage;
