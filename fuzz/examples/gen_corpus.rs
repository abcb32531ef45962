//! Writes the seed corpus of every fuzz target: valid inputs, made with the code under test
//! itself (the file store writes the store files, the sealer seals the payloads), so that
//! the fuzzer starts past magic numbers, CRCs and authentication tags.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus -- <dir>` writes
//! `<dir>/<target>/<seed>`; the checked-in corpus (`fuzz/corpus/`) is these seeds plus
//! what the campaign found, minimised with `cargo fuzz cmin`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use prost::Message;
use rnats_fuzz::files::{AGE_LIMIT, FULL_CHECK, File, Kind, SMALL_LIMITS, StoreFiles};
use rnats_streaming::fuzzing::ChannelSealer;
use rnats_streaming::proto::*;
use rnats_streaming::store::crypto::{Cipher, CryptoOptions, EncryptionKey, LogSealer};
use rnats_streaming::store::file::{FileStore, FileStoreOptions, SyncPolicy};
use rnats_streaming::store::{NewMessage, Store, StoreLimits, now_nanos};

type Seeds = Vec<(String, Vec<u8>)>;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: gen_corpus <dir>"));
    let mut all: Vec<(&str, Seeds)> = vec![
        ("stan_proto", stan_proto()),
        ("stan_ctrl", stan_ctrl()),
        ("stan_monitor", stan_monitor()),
        ("crypto_records", crypto_records()),
        ("creds", creds()),
        ("client_op", client_op()),
        ("route_op", route_op()),
        ("conf", conf()),
    ];
    let store = store_seeds();
    all.push(("store_recovery", store.clone()));
    all.push(("store_recovery_crc", store));
    for (target, seeds) in all {
        let dir = out.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
    }
}

fn named(items: Vec<(&str, Vec<u8>)>) -> Seeds {
    items.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

fn msg(seq: u64, data: &[u8]) -> MsgProto {
    MsgProto {
        sequence: seq,
        subject: "orders.eu".into(),
        reply: "_INBOX.r".into(),
        data: Bytes::copy_from_slice(data),
        timestamp: 1_700_000_000_000_000_000 + seq as i64,
        redelivered: seq % 2 == 0,
        redelivery_count: (seq % 3) as u32,
        ..Default::default()
    }
}

fn stan_proto() -> Seeds {
    named(vec![
        (
            "pubmsg",
            PubMsg {
                client_id: "me".into(),
                guid: "G1".into(),
                subject: "orders.eu".into(),
                reply: "r".into(),
                data: Bytes::from_static(b"hello"),
                conn_id: b"conn".to_vec(),
                sha256: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            "subreq",
            SubscriptionRequest {
                client_id: "me".into(),
                subject: "orders.eu".into(),
                q_group: "q".into(),
                inbox: "_INBOX.s".into(),
                max_in_flight: 1024,
                ack_wait_in_secs: 30,
                durable_name: "dur".into(),
                start_position: StartPosition::SequenceStart as i32,
                start_sequence: 42,
                start_time_delta: -5,
            }
            .encode_to_vec(),
        ),
        (
            "unsub",
            UnsubscribeRequest {
                client_id: "me".into(),
                subject: "orders.eu".into(),
                inbox: "_INBOX.ack".into(),
                durable_name: "dur".into(),
            }
            .encode_to_vec(),
        ),
        (
            "connect",
            ConnectRequest {
                client_id: "me".into(),
                heartbeat_inbox: "_INBOX.hb".into(),
                protocol: 1,
                conn_id: b"conn".to_vec(),
                ping_interval: 5,
                ping_max_out: 3,
            }
            .encode_to_vec(),
        ),
        (
            "close",
            CloseRequest {
                client_id: "me".into(),
            }
            .encode_to_vec(),
        ),
        (
            "ping",
            Ping {
                conn_id: b"conn".to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "ack",
            Ack {
                subject: "orders.eu".into(),
                sequence: 300,
            }
            .encode_to_vec(),
        ),
        ("msgproto", msg(7, b"payload").encode_to_vec()),
        (
            "ctrl",
            CtrlMsg {
                msg_type: ctrl_msg::Type::Partitioning as i32,
                server_id: "B".into(),
                data: vec![1, 0, b'x'],
                ref_id: String::new(),
            }
            .encode_to_vec(),
        ),
    ])
}

fn stan_ctrl() -> Seeds {
    use rnats_streaming_server::fuzzing as f;
    let now = SystemTime::now();
    let hb = CtrlMsg {
        msg_type: ctrl_msg::Type::FtHeartbeat as i32,
        server_id: "B".into(),
        data: f::encode_go_time(now),
        ref_id: String::new(),
    };
    let list = ["orders.eu", "users.*", "audit.>"].map(String::from);
    let mut seeds = vec![
        ("heartbeat", hb.encode_to_vec()),
        ("go_time", f::encode_go_time(now)),
        (
            "go_time_before_1970",
            f::encode_go_time(SystemTime::UNIX_EPOCH - std::time::Duration::new(86_400, 5)),
        ),
    ];
    let reqs = f::encode_lists("B", &list, 1 << 20).expect("list");
    seeds.push(("partition_request", reqs[0].to_vec()));
    let m = CtrlMsg::decode(reqs[0].clone()).expect("request");
    seeds.push(("channel_list", m.data));
    named(seeds)
}

fn stan_monitor() -> Seeds {
    named(vec![
        (
            "channelsz",
            b"/streaming/channelsz?offset=1&limit=2&subs=1&channel=foo%2Ebar".to_vec(),
        ),
        (
            "clientsz",
            b"/streaming/clientsz/?client=me+you&subs=true&limit=-1".to_vec(),
        ),
        ("serverz", b"/streaming/serverz".to_vec()),
        (
            "chunked",
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        ),
    ])
}

const CRYPTO_KEY: &[u8] = b"rnats-fuzz-key";

fn crypto_records() -> Seeds {
    let aes = ChannelSealer::new(Cipher::Aes, CRYPTO_KEY, "c");
    let chacha = ChannelSealer::new(Cipher::ChaCha, CRYPTO_KEY, "c");
    let prefix = [1, 2, 3, 4];
    let sealed_aes = aes.seal(prefix, 1, b"hello").expect("seal");
    let sealed_chacha = chacha.seal(prefix, 1, b"hello").expect("seal");
    let sealed_empty = aes.seal(prefix, 1, b"").expect("seal");
    let record = |data: Bytes| {
        MsgProto {
            data,
            ..msg(1, b"")
        }
        .encode_to_vec()
    };
    let log = LogSealer::new(&CryptoOptions {
        cipher: Cipher::Aes,
        key: EncryptionKey::new(CRYPTO_KEY),
    });
    named(vec![
        ("payload_aes", sealed_aes.to_vec()),
        ("payload_chacha", sealed_chacha.to_vec()),
        ("payload_empty", sealed_empty.to_vec()),
        ("payload_plain", b"plain text".to_vec()),
        ("record_aes", record(sealed_aes)),
        ("record_chacha", record(sealed_chacha.clone())),
        ("record_plain", record(Bytes::from_static(b"plain"))),
        (
            "record_long",
            record(aes.seal(prefix, 1, &[b'x'; 300]).expect("seal")),
        ),
        (
            "log_entry",
            log.seal(7, b"raft command").expect("seal").to_vec(),
        ),
    ])
}

fn creds() -> Seeds {
    let user = nkeys::KeyPair::new_user().seed().expect("seed");
    let account = nkeys::KeyPair::new_account().seed().expect("seed");
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVIn0.c2ln";
    let file = |seed: &str| {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
        .into_bytes()
    };
    named(vec![
        ("creds", file(&user)),
        (
            "creds_crlf",
            String::from_utf8(file(&user))
                .expect("utf8")
                .replace('\n', "\r\n")
                .into_bytes(),
        ),
        ("creds_account_seed", file(&account)),
        ("seed_only", format!("{user}\n").into_bytes()),
    ])
}

fn client_op() -> Seeds {
    named(vec![(
        "session",
        b"CONNECT {\"verbose\":false}\r\nPING\r\nSUB foo.* q 1\r\nPUB foo.bar r 5\r\nhello\r\n\
              HPUB foo.bar 12 17\r\nNATS/1.0\r\n\r\nhello\r\nUNSUB 1 10\r\nPONG\r\n"
            .to_vec(),
    )])
}

fn route_op() -> Seeds {
    named(vec![(
        "session",
        b"CONNECT {}\r\nINFO {}\r\nRS+ $G foo\r\nRS+ $G foo q 1\r\nRS- $G foo\r\n\
              RMSG $G foo r 5\r\nhello\r\nPING\r\nPONG\r\n-ERR 'x'\r\n"
            .to_vec(),
    )])
}

fn conf() -> Seeds {
    named(vec![(
        "server",
        b"port: 4222\nmonitor_port = 8222\n# comment\nauthorization {\n  users = [\n    {user: a, password: \"b\"}\n  ]\n}\ncluster { listen: 0.0.0.0:6222, routes: [nats://h:6222] }\nmax_payload: 1MB\nvar = $X\ninclude ./other.conf\n"
            .to_vec(),
    )])
}

// The store seeds: directories written by the file store, then serialised as the store
// targets read them (`rnats_fuzz::files`).

fn store_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let full = write_store(7, 3, 1_700_000_000_000_000_000, b"payload");
    seeds.push(("full".into(), full.encode()));
    let mut f = full.clone();
    f.flags = FULL_CHECK;
    seeds.push(("full_check".into(), f.encode()));
    let mut f = full.clone();
    f.flags = SMALL_LIMITS;
    seeds.push(("small_limits".into(), f.encode()));

    // A torn last write: the last segment cut inside its last record.
    let mut f = full.clone();
    if let Some(seg) = last_segment(&mut f) {
        let n = seg.contents.len();
        seg.contents.truncate(n - 3);
    }
    seeds.push(("torn_tail".into(), f.encode()));

    // Zeros after the last record (what preallocation leaves after a crash).
    let mut f = full.clone();
    if let Some(seg) = last_segment(&mut f) {
        seg.contents.extend_from_slice(&[0u8; 64]);
    }
    seeds.push(("zero_tail".into(), f.encode()));

    // Indexes lost: rebuilt from the segments.
    let mut f = full.clone();
    f.files.retain(|x| !matches!(x.kind, Kind::Index { .. }));
    seeds.push(("no_index".into(), f.encode()));

    // Old messages under an age limit: expired on recovery.
    let mut old = write_store(4, 2, 1_000_000_000, b"old");
    old.flags = AGE_LIMIT;
    seeds.push(("expired".into(), old.encode()));

    // Larger messages in one segment.
    let big = write_store(3, 0, 1_700_000_000_000_000_000, &[b'z'; 700]);
    seeds.push(("big".into(), big.encode()));
    seeds
}

fn last_segment(f: &mut StoreFiles) -> Option<&mut File> {
    f.files
        .iter_mut()
        .filter(|x| matches!(x.kind, Kind::Segment { channel: 0, .. }))
        .max_by_key(|x| match x.kind {
            Kind::Segment { first, .. } => first,
            _ => 0,
        })
}

/// A store with server info, clients, channel `a` holding `n` messages (segments of
/// `per_segment`, 0 = one segment) with subscriptions in every state, and channel `b` with
/// one message.
fn write_store(n: u64, per_segment: u64, ts: i64, data: &[u8]) -> StoreFiles {
    let tmp = rnats_fuzz::store::scratch();
    let root = tmp.path();
    let opts = FileStoreOptions {
        sync: SyncPolicy::Never,
        slice_max_msgs: per_segment,
        compact_enabled: false,
        ..FileStoreOptions::default()
    };
    let store = FileStore::open(root, opts, StoreLimits::default()).expect("open");
    store
        .init(&ServerInfo {
            cluster_id: "test-cluster".into(),
            discovery: "_STAN.discover".into(),
            publish: "_STAN.pub".into(),
            subscribe: "_STAN.sub".into(),
            unsubscribe: "_STAN.unsub".into(),
            close: "_STAN.close".into(),
            sub_close: "_STAN.subclose".into(),
            acks_subs: "_STAN.acks".into(),
            node_id: String::new(),
        })
        .expect("init");
    for id in ["me", "gone"] {
        store
            .add_client(&ClientInfo {
                id: id.into(),
                hb_inbox: format!("_INBOX.{id}"),
                conn_id: id.as_bytes().to_vec(),
                protocol: 1,
                ping_interval: 5,
                ping_max_out: 3,
            })
            .expect("client");
    }
    store.delete_client("gone").expect("delete client");

    let a = store.create_channel("a").expect("channel");
    for i in 0..n {
        a.msgs()
            .append(NewMessage {
                reply: if i % 2 == 0 {
                    String::new()
                } else {
                    "r".into()
                },
                data: Bytes::copy_from_slice(data),
                timestamp: ts + i as i64,
            })
            .expect("append");
    }
    a.msgs().flush().expect("flush");
    let mut subs = Vec::new();
    for (durable, queue) in [("dur", ""), ("", "q"), ("", "")] {
        let mut s = SubState {
            client_id: "me".into(),
            q_group: queue.into(),
            inbox: "_INBOX.in".into(),
            ack_inbox: "_INBOX.ack".into(),
            max_in_flight: 10,
            ack_wait_in_secs: 30,
            durable_name: durable.into(),
            is_durable: !durable.is_empty(),
            ..Default::default()
        };
        a.subs().create_sub(&mut s).expect("sub");
        subs.push(s);
    }
    let (first, second, third) = (subs[0].id, subs[1].id, subs[2].id);
    for seq in 1..=n.min(4) {
        a.subs().add_seq_pending(first, seq).expect("pending");
    }
    a.subs().ack_seq_pending(first, 1).expect("ack");
    a.subs()
        .add_seqs_pending(second, &[1, 2, 3])
        .expect("pending");
    a.subs().ack_seqs_pending(second, &[2, 3]).expect("acks");
    subs[0].last_sent = 4;
    a.subs().update_sub(&subs[0]).expect("update");
    a.subs().delete_sub(third).expect("delete");
    a.subs().flush().expect("flush subs");

    let b = store.create_channel("b").expect("channel");
    b.msgs()
        .append(NewMessage {
            reply: String::new(),
            data: Bytes::from_static(b"b"),
            timestamp: now_nanos(),
        })
        .expect("append");
    b.msgs().flush().expect("flush");
    store.close().expect("close");
    drop(store);
    read_dir(root)
}

/// The store files under `root`, as one input.
fn read_dir(root: &Path) -> StoreFiles {
    let mut files = Vec::new();
    let mut add = |kind: Kind| {
        let p = kind.path(root);
        if let Ok(contents) = fs::read(&p) {
            files.push(File { kind, contents });
        }
    };
    add(Kind::Server);
    add(Kind::Clients);
    for (channel, name) in rnats_fuzz::files::CHANNELS.iter().enumerate() {
        let channel = channel as u8;
        add(Kind::Subs { channel });
        let dir = root.join("channels").join(name);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let Some(rest) = n.strip_prefix("msgs.") else {
                continue;
            };
            let Some((num, ext)) = rest.split_once('.') else {
                continue;
            };
            let Ok(first) = num.parse() else { continue };
            match ext {
                "dat" => add(Kind::Segment { channel, first }),
                "idx" => add(Kind::Index { channel, first }),
                _ => {}
            }
        }
    }
    StoreFiles { flags: 0, files }
}
