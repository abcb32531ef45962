//! Behaviour every store must have, run against the memory and the file store, both
//! wrapped in encryption (each cipher over each store), and the SQL store on PostgreSQL
//! and MariaDB (one server per test binary from `rnats-test-db`, a fresh database per test;
//! skipped when the servers are not installed unless `RNATS_REQUIRE_SQL=1`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::crypto::{Cipher, CryptoOptions, CryptoStore, EncryptionKey};
use super::file::{FileStore, FileStoreOptions};
use super::memory::MemoryStore;
use super::*;

/// A store under test; keeps the temporary directory of file stores alive.
pub(crate) struct Subject {
    pub(crate) store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn msg(data: &str, ts: i64) -> NewMessage {
    NewMessage {
        reply: String::new(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        timestamp: ts,
    }
}

type Mk = fn(StoreLimits) -> Subject;

fn memory(limits: StoreLimits) -> Subject {
    Subject {
        store: Box::new(MemoryStore::new(limits).unwrap()),
        _dir: None,
    }
}

fn file(limits: StoreLimits) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    // Small segments so that limits cross segment boundaries.
    let opts = FileStoreOptions {
        slice_max_msgs: 4,
        ..Default::default()
    };
    let store = FileStore::open(dir.path(), opts, limits).unwrap();
    Subject {
        store: Box::new(store),
        _dir: Some(dir),
    }
}

fn encrypted(plain: Subject, cipher: Cipher) -> Subject {
    let opts = CryptoOptions {
        cipher,
        key: EncryptionKey::new("conformance key"),
    };
    Subject {
        store: Box::new(CryptoStore::new(plain.store, opts)),
        _dir: plain._dir,
    }
}

fn memory_aes(limits: StoreLimits) -> Subject {
    encrypted(memory(limits), Cipher::Aes)
}

fn memory_chacha(limits: StoreLimits) -> Subject {
    encrypted(memory(limits), Cipher::ChaCha)
}

fn file_aes(limits: StoreLimits) -> Subject {
    encrypted(file(limits), Cipher::Aes)
}

fn file_chacha(limits: StoreLimits) -> Subject {
    encrypted(file(limits), Cipher::ChaCha)
}

#[cfg(feature = "sql")]
fn sql(kind: rnats_test_db::Kind, limits: StoreLimits) -> Subject {
    use super::sql::{SqlStore, SqlStoreOptions, create_schema};
    let server = rnats_test_db::DbServer::shared(kind).expect("checked by the test");
    let db = server.create_database().unwrap();
    let driver = server.driver().parse().unwrap();
    create_schema(driver, &server.source(&db)).unwrap();
    let store = SqlStore::open(SqlStoreOptions::new(driver, server.source(&db)), limits).unwrap();
    Subject {
        store: Box::new(store),
        _dir: None,
    }
}

#[cfg(feature = "sql")]
fn postgres(limits: StoreLimits) -> Subject {
    sql(rnats_test_db::Kind::Postgres, limits)
}

#[cfg(feature = "sql")]
fn mariadb(limits: StoreLimits) -> Subject {
    sql(rnats_test_db::Kind::MariaDb, limits)
}

fn limits(max_msgs: u64, max_bytes: u64, max_age: Duration) -> StoreLimits {
    StoreLimits {
        channel: ChannelLimits {
            max_msgs,
            max_bytes,
            max_age,
            ..ChannelLimits::UNLIMITED
        },
        ..StoreLimits::unlimited()
    }
}

fn datas(msgs: &[crate::proto::MsgProto]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect()
}

fn max_msgs_drops_oldest(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    for i in 1..=10 {
        let m = ch.msgs().append(msg(&format!("m{i}"), i)).unwrap();
        assert_eq!(m.sequence, i as u64);
        assert_eq!(m.subject, "foo");
    }
    ch.msgs().flush().unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (8, 10, 3));
    assert_eq!(ch.msgs().lookup(7).unwrap(), None);
    assert_eq!(ch.msgs().lookup(8).unwrap().unwrap().data, "m8");
    assert_eq!(ch.msgs().first_msg().unwrap().unwrap().sequence, 8);
    assert_eq!(ch.msgs().last_msg().unwrap().unwrap().sequence, 10);
    assert_eq!(ch.msgs().append(msg("m11", 11)).unwrap().sequence, 11);
    assert_eq!(ch.msgs().state().first, 9);
}

fn max_bytes_drops_oldest_keeps_newest(mk: Mk, _l: StoreLimits) {
    // Measure what one message is accounted for, then allow 2.5 of them.
    let probe = mk(StoreLimits::unlimited());
    let ch = probe.store.create_channel("foo").unwrap();
    ch.msgs().append(msg("aaaa", 1)).unwrap();
    let per = ch.msgs().state().bytes;
    let s = mk(limits(0, per * 5 / 2, Duration::ZERO));
    let ch = s.store.create_channel("foo").unwrap();
    for i in 1..=6 {
        ch.msgs().append(msg("aaaa", i)).unwrap();
    }
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs, st.bytes), (5, 6, 2, 2 * per));
    // A message larger than max_bytes on its own is still kept (always keep the newest).
    let big = "x".repeat(4 * per as usize);
    ch.msgs().append(msg(&big, 7)).unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (7, 7, 1));
    assert_eq!(ch.msgs().lookup(7).unwrap().unwrap().data.len(), big.len());
}

fn max_age_expires(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    for (i, ts) in [1_000, 2_000, 3_000, 4_000, 5_000, 6_000]
        .into_iter()
        .enumerate()
    {
        ch.msgs().append(msg(&format!("m{}", i + 1), ts)).unwrap();
    }
    // max_age 2500 ns: at 6000, everything at or before 3500 went on append.
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (4, 6, 3));
    assert_eq!(ch.msgs().expire(6_000).unwrap(), Some(4_000 + 2_500));
    assert_eq!(ch.msgs().expire(7_000).unwrap(), Some(5_000 + 2_500));
    assert_eq!(ch.msgs().state().first, 5);
    // Everything expires; sequences do not go back.
    assert_eq!(ch.msgs().expire(100_000).unwrap(), None);
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs, st.bytes), (7, 6, 0, 0));
    assert_eq!(st.first_seq_or_zero(), 0);
    assert_eq!(ch.msgs().lookup(6).unwrap(), None);
    assert_eq!(ch.msgs().first_msg().unwrap(), None);
    assert_eq!(ch.msgs().sequence_for_timestamp(0).unwrap(), 7);
    let m = ch.msgs().append(msg("m7", 100_000)).unwrap();
    assert_eq!(m.sequence, 7);
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (7, 7, 1));
}

fn lookup_and_batches(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    assert_eq!(ch.msgs().lookup(1).unwrap(), None);
    assert!(ch.msgs().read_batch(1, 10, 1 << 20).unwrap().is_empty());
    for i in 1..=10 {
        let mut m = msg(&format!("m{i}"), i * 10);
        m.reply = format!("r{i}");
        ch.msgs().append(m).unwrap();
    }
    let m = ch.msgs().lookup(3).unwrap().unwrap();
    assert_eq!((m.sequence, m.reply.as_str(), m.timestamp), (3, "r3", 30));
    assert!(!m.redelivered);
    assert_eq!(ch.msgs().lookup(11).unwrap(), None);
    assert_eq!(ch.msgs().lookup(0).unwrap(), None);
    let b = ch.msgs().read_batch(0, 4, 1 << 20).unwrap();
    assert_eq!(datas(&b), ["m1", "m2", "m3", "m4"]);
    let b = ch.msgs().read_batch(3, 100, 1 << 20).unwrap();
    assert_eq!(b.len(), 8);
    assert_eq!(
        b.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        (3..=10).collect::<Vec<_>>()
    );
    // The wire form: the encoding of each message as a first delivery.
    let enc = ch.msgs().read_batch_encoded(3, 100, 1 << 20).unwrap();
    assert_eq!(
        enc,
        b.iter()
            .map(crate::store::EncodedMsg::from_msg)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ch.msgs().read_batch_encoded(0, 4, 1 << 20).unwrap().len(),
        4
    );
    assert_eq!(ch.msgs().read_batch_encoded(5, 100, 1).unwrap().len(), 1);
    // The byte budget stops the batch, but at least one message comes back.
    let one = ch.msgs().read_batch(5, 100, 1).unwrap();
    assert_eq!(datas(&one), ["m5"]);
    let b = ch.msgs().read_batch(5, 100, 3 * one_size(&one[0])).unwrap();
    assert_eq!(datas(&b), ["m5", "m6", "m7"]);
}

/// What `read_batch` charges for one message against `max_bytes`.
fn one_size(m: &crate::proto::MsgProto) -> usize {
    use prost::Message;
    m.encoded_len()
}

fn time_based_start(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    for ts in [10, 20, 20, 30, 40, 50] {
        ch.msgs().append(msg("x", ts)).unwrap();
    }
    let f = |ts| ch.msgs().sequence_for_timestamp(ts).unwrap();
    assert_eq!(f(i64::MIN), 1);
    assert_eq!(f(10), 1);
    assert_eq!(f(11), 2);
    assert_eq!(f(20), 2);
    assert_eq!(f(25), 4);
    assert_eq!(f(50), 6);
    assert_eq!(f(51), 7);
    // Timestamps never go back within a channel.
    let m = ch.msgs().append(msg("late", 5)).unwrap();
    assert_eq!(m.timestamp, 50);
    assert_eq!(f(50), 6);
}

fn store_with_sequences(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    let m = |seq, ts| crate::proto::MsgProto {
        sequence: seq,
        subject: "foo".into(),
        data: Bytes::from_static(b"d"),
        timestamp: ts,
        redelivered: true,
        ..Default::default()
    };
    assert_eq!(ch.msgs().store(&m(1, 1)).unwrap(), 1);
    assert_eq!(ch.msgs().store(&m(2, 2)).unwrap(), 2);
    // Replays are ignored.
    assert_eq!(ch.msgs().store(&m(1, 1)).unwrap(), 1);
    assert_eq!(ch.msgs().state().msgs, 2);
    assert!(!ch.msgs().lookup(2).unwrap().unwrap().redelivered);
    assert!(matches!(
        ch.msgs().store(&m(5, 5)),
        Err(StoreError::SequenceGap {
            expected: 3,
            got: 5,
            ..
        })
    ));
    // An empty log may jump forward.
    ch.msgs().empty().unwrap();
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (3, 2, 0));
    assert_eq!(ch.msgs().store(&m(10, 10)).unwrap(), 10);
    let st = ch.msgs().state();
    assert_eq!((st.first, st.last, st.msgs), (10, 10, 1));
    assert_eq!(ch.msgs().append(msg("n", 11)).unwrap().sequence, 11);
    assert_eq!(ch.msgs().lookup(10).unwrap().unwrap().data, "d");
}

fn channels_registry(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let st = &s.store;
    assert!(st.lookup_channel("foo").is_none());
    let (c, created) = st.lookup_or_create_channel("foo").unwrap();
    assert!(created);
    let (c2, created) = st.lookup_or_create_channel("foo").unwrap();
    assert!(!created && Arc::ptr_eq(&c, &c2));
    assert!(matches!(
        st.create_channel("foo"),
        Err(StoreError::ChannelExists(_))
    ));
    let e = st.create_channel("FOO").unwrap_err();
    assert_eq!(
        e.to_string(),
        "rejecting channel \"FOO\" because channel \"foo\" alreay exists (different cases not allowed)"
    );
    for bad in ["", "a..b", "a.*", "a/b", ".a"] {
        assert!(
            matches!(st.create_channel(bad), Err(StoreError::InvalidChannel(_))),
            "{bad:?}"
        );
    }
    st.create_channel("bar").unwrap();
    assert_eq!(
        st.create_channel("baz").unwrap_err().to_string(),
        "too many channels"
    );
    let names: Vec<String> = st.channels().iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["bar", "foo"]);
    assert!(st.delete_channel("foo").unwrap());
    assert!(!st.delete_channel("foo").unwrap());
    assert!(matches!(
        c.msgs().append(msg("x", 1)),
        Err(StoreError::Closed)
    ));
    assert!(matches!(c.subs().flush(), Err(StoreError::Closed)));
    // The slot is free again, and the name too.
    let c = st.create_channel("foo").unwrap();
    assert_eq!(c.msgs().state().last, 0);
}

fn per_channel_limits(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let st = &s.store;
    let a = st.create_channel("foo.bar").unwrap();
    let b = st.create_channel("other").unwrap();
    assert_eq!(a.limits().max_msgs, 2);
    assert_eq!(a.limits().max_subs, 1);
    assert_eq!(b.limits().max_msgs, 5);
    for i in 0..10 {
        a.msgs().append(msg("x", i)).unwrap();
        b.msgs().append(msg("x", i)).unwrap();
    }
    assert_eq!(a.msgs().state().msgs, 2);
    assert_eq!(b.msgs().state().msgs, 5);
    a.subs().create_sub(&mut SubState::default()).unwrap();
    assert!(matches!(
        a.subs().create_sub(&mut SubState::default()),
        Err(StoreError::TooManySubs)
    ));
}

fn subscriptions(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let ch = s.store.create_channel("foo").unwrap();
    let subs = ch.subs();
    let mut a = SubState {
        client_id: "c1".into(),
        inbox: "i1".into(),
        ..Default::default()
    };
    let mut b = SubState {
        client_id: "c2".into(),
        durable_name: "d".into(),
        is_durable: true,
        ..Default::default()
    };
    subs.create_sub(&mut a).unwrap();
    subs.create_sub(&mut b).unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert!(matches!(
        subs.create_sub(&mut SubState::default()),
        Err(StoreError::TooManySubs)
    ));
    subs.add_seq_pending(2, 5).unwrap();
    subs.add_seq_pending(2, 6).unwrap();
    subs.add_seq_pending(2, 7).unwrap();
    subs.ack_seq_pending(2, 6).unwrap();
    // Unknown subscriptions are ignored.
    subs.add_seq_pending(99, 1).unwrap();
    subs.ack_seq_pending(99, 1).unwrap();
    b.is_closed = true;
    b.ack_inbox = "new".into();
    subs.update_sub(&b).unwrap();
    subs.flush().unwrap();
    let all = subs.subscriptions();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].state.last_sent, 7);
    assert!(all[1].state.is_closed);
    assert_eq!(all[1].state.ack_inbox, "new");
    assert_eq!(all[1].pending.iter().copied().collect::<Vec<_>>(), [5, 7]);
    subs.delete_sub(1).unwrap();
    assert_eq!(subs.count(), 1);
    // IDs are never reused.
    let mut c = SubState::default();
    subs.create_sub(&mut c).unwrap();
    assert_eq!(c.id, 3);
}

fn clients_and_info(mk: Mk, l: StoreLimits) {
    let s = mk(l);
    let st = &s.store;
    assert!(st.recover().unwrap().is_empty());
    let info = crate::proto::ServerInfo {
        cluster_id: "test-cluster".into(),
        ..Default::default()
    };
    st.init(&info).unwrap();
    let c = |id: &str| crate::proto::ClientInfo {
        id: id.into(),
        hb_inbox: format!("hb.{id}"),
        ..Default::default()
    };
    st.add_client(&c("a")).unwrap();
    st.add_client(&c("b")).unwrap();
    let mut b2 = c("b");
    b2.conn_id = vec![1, 2];
    st.add_client(&b2).unwrap();
    assert!(st.delete_client("a").unwrap());
    assert!(!st.delete_client("zz").unwrap());
    st.create_channel("ch").unwrap();
    let r = st.recover().unwrap();
    assert_eq!(r.info.unwrap().cluster_id, "test-cluster");
    assert_eq!(r.clients, [b2]);
    assert_eq!(r.channels.len(), 1);
    assert_eq!(r.channels[0].channel.name(), "ch");
    st.close().unwrap();
    assert!(matches!(st.add_client(&c("x")), Err(StoreError::Closed)));
    assert!(matches!(st.create_channel("x"), Err(StoreError::Closed)));
}

macro_rules! both {
    ($name:ident, $limits:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn memory_store() {
                super::$name(memory, $limits);
            }
            #[test]
            fn file_store() {
                super::$name(file, $limits);
            }
            #[test]
            fn encrypted_memory_store_aes() {
                super::$name(memory_aes, $limits);
            }
            #[test]
            fn encrypted_memory_store_chacha() {
                super::$name(memory_chacha, $limits);
            }
            #[test]
            fn encrypted_file_store_aes() {
                super::$name(file_aes, $limits);
            }
            #[test]
            fn encrypted_file_store_chacha() {
                super::$name(file_chacha, $limits);
            }
            #[cfg(feature = "sql")]
            #[test]
            fn postgres_store() {
                if rnats_test_db::DbServer::shared(rnats_test_db::Kind::Postgres).is_some() {
                    super::$name(postgres, $limits);
                }
            }
            #[cfg(feature = "sql")]
            #[test]
            fn mariadb_store() {
                if rnats_test_db::DbServer::shared(rnats_test_db::Kind::MariaDb).is_some() {
                    super::$name(mariadb, $limits);
                }
            }
        }
    };
}

both!(max_msgs_drops_oldest, limits(3, 0, Duration::ZERO));
both!(
    max_bytes_drops_oldest_keeps_newest,
    StoreLimits::unlimited()
);
both!(max_age_expires, limits(0, 0, Duration::from_nanos(2_500)));
both!(lookup_and_batches, StoreLimits::unlimited());
both!(time_based_start, StoreLimits::unlimited());
both!(store_with_sequences, StoreLimits::unlimited());
both!(
    channels_registry,
    StoreLimits {
        max_channels: 2,
        ..StoreLimits::unlimited()
    }
);
both!(per_channel_limits, {
    let mut l = limits(5, 0, Duration::ZERO);
    l.per_channel.insert(
        "foo.>".into(),
        ChannelLimitsOverride {
            max_msgs: Some(2),
            max_subs: Some(1),
            ..Default::default()
        },
    );
    l
});
both!(
    subscriptions,
    StoreLimits {
        channel: ChannelLimits {
            max_subs: 2,
            ..ChannelLimits::UNLIMITED
        },
        ..StoreLimits::unlimited()
    }
);
both!(clients_and_info, StoreLimits::unlimited());
