//! Recovery of a clustered node's RAFT files: arbitrary bytes as the log's `meta` file, its
//! segment files and the snapshot files, opened as a restarting node opens them.
//!
//! Input: `flags (u8) entry*`, `entry := kind (u8, modulo 3) | length (u16 LE) | body`;
//! kind 0 is `log/meta`, kind 1 a segment `log/<first:020>.seg` and kind 2 a snapshot
//! `snap/<index:020>-f.snap` (for 1 and 2 the body starts with the number as u64 LE). A
//! length past the end takes what is left. Flag bit 0: small segments; bit 1: no cache.
//!
//! Checks: no panic, no unbounded allocation; the only errors are `Damaged` naming a file of
//! the directory, never `Io`; every entry from the first kept index to the last reads back
//! with its own index; a second open of what the first left finds the same vote, purge
//! point and last entry (recovery is idempotent).
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rnats_fuzz::CappedAlloc;
use rnats_streaming_raft::log::{LogError, LogFiles, LogFilesOptions};
use rnats_streaming_raft::snapshot::SnapshotStore;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn write_files(root: &Path, data: &[u8]) -> u8 {
    let Some((&flags, mut rest)) = data.split_first() else {
        return 0;
    };
    while rest.len() >= 3 {
        let kind = rest[0] % 3;
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let body = &rest[3..end];
        rest = &rest[end..];
        let (num, contents) = match body.split_first_chunk::<8>() {
            Some((n, c)) => (u64::from_le_bytes(*n), c),
            None => (0, body),
        };
        let path = match kind {
            0 => root.join("log").join("meta"),
            1 => root.join("log").join(format!("{num:020}.seg")),
            _ => root.join("snap").join(format!("{num:020}-f.snap")),
        };
        let contents = if kind == 0 { body } else { contents };
        fs::write(path, contents).expect("write an input file");
    }
    flags
}

fn options(flags: u8) -> LogFilesOptions {
    let mut o = LogFilesOptions::default();
    if flags & 1 != 0 {
        o.segment_bytes = 256;
    }
    if flags & 2 != 0 {
        o.cache = 0;
    }
    o
}

fn check_err(root: &Path, e: &LogError) {
    match e {
        LogError::Damaged { path, .. } => assert!(path.starts_with(root), "{e}"),
        other => panic!("recovery failed with something else than damage: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("log")).expect("mkdir");
    fs::create_dir_all(root.join("snap")).expect("mkdir");
    let flags = write_files(root, data);
    let log_dir = root.join("log");

    let first = match LogFiles::open(&log_dir, options(flags)) {
        Ok(l) => l,
        Err(e) => return check_err(root, &e),
    };
    let state = (first.vote(), first.purged(), first.last());
    if let Some(last) = first.last() {
        let start = first.purged().map_or(1, |p| p.index + 1).max(1);
        if start <= last.index {
            match first.read(start, last.index + 1) {
                Ok(entries) => {
                    assert_eq!(entries.len() as u64, last.index + 1 - start);
                    for (i, e) in entries.iter().enumerate() {
                        assert_eq!(e.log_id.index, start + i as u64);
                    }
                }
                Err(e) => check_err(root, &e),
            }
        }
    }
    drop(first);
    match LogFiles::open(&log_dir, options(flags)) {
        Ok(again) => assert_eq!((again.vote(), again.purged(), again.last()), state),
        Err(e) => check_err(root, &e),
    }

    match SnapshotStore::open(&root.join("snap"), 2) {
        Ok(s) => {
            let _ = s.current();
        }
        Err(e) => check_err(root, &e),
    }
});
