//! What the store targets do with the directory an input describes: open the file store
//! (recovery), read back everything it recovered, and, when that went cleanly, check that
//! the store opens again to the same state and still takes appends.
//!
//! Failures allowed: [`StoreError::Corrupt`] naming a file of the directory (path and
//! offset). Anything else — a panic, another error, an allocation above the cap, a store
//! that recovered cleanly but does not reopen — is a finding.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rnats_streaming::proto::{ClientInfo, ServerInfo};
use rnats_streaming::store::file::{FileStore, FileStoreOptions, RecoveryCheck, SyncPolicy};
use rnats_streaming::store::{
    ChannelLimits, MsgStoreState, NewMessage, RecoveredSubscription, Store, StoreError,
    StoreLimits, now_nanos,
};

use crate::files::{AGE_LIMIT, FULL_CHECK, SMALL_LIMITS, StoreFiles};

/// Most messages read back per channel (inputs cannot describe more anyway).
const MAX_READ: u64 = 100_000;

/// What one recovery yields, to compare two of them.
#[derive(Debug, PartialEq)]
struct Recovered {
    info: Option<ServerInfo>,
    clients: Vec<ClientInfo>,
    channels: Vec<(String, MsgStoreState, Vec<RecoveredSubscription>)>,
}

/// Store options and limits for the input's flags.
pub fn config(flags: u8) -> (FileStoreOptions, StoreLimits) {
    let opts = FileStoreOptions {
        sync: SyncPolicy::Never,
        recovery_check: if flags & FULL_CHECK != 0 {
            RecoveryCheck::Full
        } else {
            RecoveryCheck::Fast
        },
        // Small buffers: more of the chunked-reading paths on small files.
        read_buffer_size: 4096,
        write_buffer_size: 4096,
        compact_enabled: false,
        ..FileStoreOptions::default()
    };
    let mut channel = ChannelLimits::default();
    if flags & SMALL_LIMITS != 0 {
        channel.max_msgs = 3;
        channel.max_bytes = 400;
        channel.max_subs = 2;
    }
    if flags & AGE_LIMIT != 0 {
        channel.max_age = Duration::from_secs(3600);
    }
    let limits = StoreLimits {
        channel,
        ..StoreLimits::default()
    };
    (opts, limits)
}

/// A scratch directory, in memory when `/dev/shm` exists (recovery is file-system bound).
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b = tempfile::Builder::new()
        .prefix("rnats-fuzz-")
        .tempdir_in(if shm.is_dir() { shm } else { Path::new("/tmp") });
    b.expect("scratch directory")
}

/// Runs the scenario on `files`; panics on a finding.
pub fn run(files: &StoreFiles) {
    let tmp = scratch();
    let root = tmp.path();
    files.write(root).expect("writing the input's files");
    let (opts, limits) = config(files.flags);

    let store = match FileStore::open(root, opts.clone(), limits.clone()) {
        Ok(s) => s,
        Err(e) => return expect_corrupt(&e, root, "open"),
    };
    let first = visit(&store, root);
    store.close().expect("closing a recovered store");
    drop(store);
    let Some(first) = first else {
        // Damage found on a read: reported properly, and nothing more is promised.
        return;
    };

    let store = FileStore::open(root, opts.clone(), limits.clone())
        .unwrap_or_else(|e| panic!("a store that recovered cleanly does not reopen: {e}"));
    let again = visit(&store, root).expect("a store that recovered cleanly reads back");
    if files.flags & AGE_LIMIT == 0 {
        assert_eq!(first, again, "a second recovery differs from the first");
    }

    // Still usable: one append per channel survives a restart.
    let mut appended = Vec::new();
    for ch in store.channels() {
        let before = ch.msgs().state();
        let next = before.last.saturating_add(1);
        let r = ch.msgs().append(NewMessage {
            reply: String::new(),
            data: Bytes::from_static(b"after recovery"),
            timestamp: now_nanos(),
        });
        if next == u64::MAX {
            // The largest sequence a store holds is 2^64 - 2.
            assert!(
                matches!(r, Err(StoreError::SequencesExhausted { .. })),
                "append past the largest sequence: {r:?}"
            );
            continue;
        }
        let m = r.unwrap_or_else(|e| panic!("append after recovery on {}: {e}", ch.name()));
        assert_eq!(m.sequence, next, "sequence of an append after recovery");
        ch.msgs().flush().expect("flush after recovery");
        appended.push((ch.name().to_owned(), next));
    }
    store.close().expect("closing after appends");
    drop(store);
    let store = FileStore::open(root, opts, limits)
        .unwrap_or_else(|e| panic!("reopen after appending to a recovered store: {e}"));
    let state = store.recover().expect("recover");
    for (name, seq) in appended {
        let ch = state
            .channels
            .iter()
            .find(|c| c.channel.name() == name)
            .unwrap_or_else(|| panic!("channel {name} lost after an append"));
        assert_eq!(
            ch.channel.msgs().state().last,
            seq,
            "last sequence of {name}"
        );
        let m = ch
            .channel
            .msgs()
            .lookup(seq)
            .unwrap_or_else(|e| panic!("lookup of the appended message of {name}: {e}"))
            .unwrap_or_else(|| panic!("appended message of {name} lost"));
        assert_eq!(&m.data[..], b"after recovery");
    }
    store.close().expect("close");
}

/// Reads back everything the store recovered; `None` if a read reported damage.
fn visit(store: &FileStore, root: &Path) -> Option<Recovered> {
    let state = match store.recover() {
        Ok(s) => s,
        Err(e) => {
            expect_corrupt(&e, root, "recover");
            return None;
        }
    };
    let mut channels = Vec::new();
    for rc in &state.channels {
        let msgs = rc.channel.msgs();
        let st = msgs.state();
        if let Err(e) = read_all(msgs, &st) {
            expect_corrupt(&e, root, "read");
            return None;
        }
        channels.push((rc.channel.name().to_owned(), st, rc.subscriptions.clone()));
    }
    Some(Recovered {
        info: state.info,
        clients: state.clients,
        channels,
    })
}

/// Every message of a channel, in batches (decoded and as stored), plus the single reads.
fn read_all(
    msgs: &dyn rnats_streaming::store::MsgStore,
    st: &MsgStoreState,
) -> Result<(), StoreError> {
    if st.msgs == 0 {
        assert!(msgs.first_msg()?.is_none() && msgs.last_msg()?.is_none());
        return Ok(());
    }
    assert!(st.first <= st.last, "state {st:?}");
    assert_eq!(st.msgs, st.last - st.first + 1, "held messages of {st:?}");
    let end = st.last.min(st.first.saturating_add(MAX_READ));
    let mut seq = st.first;
    while seq <= end {
        let batch = msgs.read_batch(seq, 64, 1 << 16)?;
        assert!(!batch.is_empty(), "read_batch({seq}) of {st:?} is empty");
        for m in batch {
            assert_eq!(m.sequence, seq, "read_batch of {st:?}");
            seq = seq.saturating_add(1);
        }
    }
    let mut seq = st.first;
    while seq <= end {
        let batch = msgs.read_batch_encoded(seq, 64, 1 << 16)?;
        assert!(
            !batch.is_empty(),
            "read_batch_encoded({seq}) of {st:?} is empty"
        );
        for m in batch {
            assert_eq!(m.sequence, seq, "read_batch_encoded of {st:?}");
            seq = seq.saturating_add(1);
        }
    }
    let first = msgs.first_msg()?.map(|m| m.sequence);
    let last = msgs.last_msg()?.map(|m| m.sequence);
    assert_eq!((first, last), (Some(st.first), Some(st.last)));
    for ts in [0, i64::MAX, now_nanos()] {
        msgs.sequence_for_timestamp(ts)?;
    }
    Ok(())
}

/// The only acceptable failures: corruption reported with a file of the store and an offset,
/// or the directory recognised as a nats-streaming-server store (its `server.dat` is the
/// reference's), which must be migrated before it opens.
fn expect_corrupt(e: &StoreError, root: &Path, what: &str) {
    match e {
        StoreError::Corrupt { path, .. } => assert!(
            path.starts_with(root),
            "{what}: corruption reported on {} outside the store",
            path.display()
        ),
        StoreError::ReferenceStore { dir } => assert_eq!(dir, root, "{what}"),
        other => panic!("{what}: expected a corruption error, got {other:?}"),
    }
}
