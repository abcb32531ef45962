//! Migration of a nats-streaming-server 0.25.6 FILE store through the binary: in place at
//! start-up (`-st FILE --dir D`), offline (`--migrate_from`), the dry run
//! (`--migrate_check`), a damaged store, the reference's file options, an FT group where
//! only the member holding the store lock migrates, and a clustered node that refuses. Every migrated store is checked against the fixture's manifest
//! through monitoring, the raw protocol client and node-nats-streaming (the node part skips
//! when it is not installed, except in CI).

mod common;
mod migration_support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use migration_support::*;

const SUMMARY: &str = "6 channels, 205 messages, 1 clients, 2 subscriptions (2 durable)";
/// Bound for a migration of the fixture on a loaded machine (it takes well under 1 s).
const MIGRATION: Duration = Duration::from_secs(60);
const RUN: Duration = Duration::from_secs(60);

fn server_args<'a>(dir: &'a str, conf: &'a str) -> Vec<&'a str> {
    vec!["-st", "FILE", "--dir", dir, "-sc", conf, "-m", "-1"]
}

/// Starts the binary on `dir` and returns it once ready, with its start-up log.
fn start_logged(args: &[&str]) -> (ServerProc, Vec<String>) {
    // Monitoring starts (and its port is logged) before the store is opened.
    let p = ServerProc::spawn(args, "STREAM: Starting monitoring on");
    let log = lines_until(&p, "Streaming Server is ready", MIGRATION);
    (p, log)
}

fn stop(mut p: ServerProc) {
    p.terminate();
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_migration_serves_everything_the_reference_stored() {
    let m = manifest();
    let (_t, dir) = fixture_copy();
    let original = tree(&dir);
    let (d, conf) = (dir.to_str().unwrap(), conf());
    let args = server_args(d, &conf);

    let (p, log) = start_logged(&args);
    let text = log.join("\n");
    assert!(
        text.contains(&format!(
            "STREAM: {d} holds a nats-streaming-server file store: migrating it to rnats's format"
        )),
        "{text}"
    );
    let backup = dir.join("nats-streaming-backup");
    let summary = log
        .iter()
        .find(|l| l.contains("[INF] STREAM: migrated the nats-streaming-server file store"))
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    assert!(summary.contains(SUMMARY), "{summary}");
    assert!(
        summary.contains(&format!(
            "original files were moved to {}",
            backup.display()
        )),
        "{summary}"
    );
    // The fixture's store holds nothing the reference would handle differently.
    assert!(!text.contains("STREAM: migration:"), "{text}");

    // The originals, byte for byte, in the backup folder; our store in their place.
    assert_eq!(differences(&original, &tree(&backup)), Vec::<&Path>::new());
    assert_eq!(
        entries(&dir),
        [
            ".rootdir.lck",
            "channels",
            "clients.dat",
            "nats-streaming-backup",
            "server.dat"
        ]
        .map(String::from)
        .into()
    );

    let port = p.monitor_port.expect("monitor port");
    check_monitoring(port, &m);
    replay_exact(&p.url(), &m).await;
    let node = node_checks(&p.url());
    if node {
        check_durables_resumed(port);
    }
    stop(p);

    // A restart opens our store: nothing is migrated again, everything is still there.
    let (p, log) = start_logged(&args);
    assert!(
        !log.iter().any(|l| l.contains("migrat")),
        "{}",
        log.join("\n")
    );
    if node {
        check_durables_resumed(p.monitor_port.unwrap());
    } else {
        check_monitoring(p.monitor_port.unwrap(), &m);
    }
    replay_exact(&p.url(), &m).await;
    assert_eq!(differences(&original, &tree(&backup)), Vec::<&Path>::new());
    assert!(!dir.join("nats-streaming-backup.1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_migration_and_dry_run() {
    let m = manifest();
    let (t, dir) = fixture_copy();
    let original = tree(&dir);
    let (d, conf) = (dir.to_str().unwrap(), conf());
    let new = t.path().join("new");
    let n = new.to_str().unwrap();

    // Dry run: the report, exit 0, nothing written.
    let r = run_bin(&["--migrate_check", d, "-sc", &conf], RUN);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for want in [
        format!("nats-streaming-server file store {d}"),
        "cluster id: test-cluster".to_string(),
        SUMMARY.to_string(),
        "channel capped.metrics: first 31 last 50, 20 messages (3260 bytes), 30 older ones dropped by limits".to_string(),
        "durable \"d1\" of client \"c-dur\": last sent 43, acked through 40, pending [41, 42, 43]".to_string(),
        "durable queue \"qd:workers\" of client \"\": last sent 27, acked through 24, pending [25, 26, 27]".to_string(),
        "clients: c-idle".to_string(),
        "no damage found".to_string(),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} not in:\n{}", r.stdout);
    }
    // Without the reference's limits, the capped channel's older messages are kept.
    let r = run_bin(&["--migrate_check", d], RUN);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("channel capped.metrics: first 1 last 50, 50 messages"),
        "{}",
        r.stdout
    );

    // Offline: the same report, into a new directory; the source is not changed at all.
    let r = run_bin(&["--migrate_from", d, "--dir", n, "-sc", &conf], RUN);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(SUMMARY), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("migrated to {n}")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("no damage found"), "{}", r.stdout);
    assert_eq!(differences(&original, &tree(&dir)), Vec::<&Path>::new());

    // Refusals: a destination that is not empty, a store that is not the reference's, no
    // destination.
    let r = run_bin(&["--migrate_from", d, "--dir", n, "-sc", &conf], RUN);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stderr.contains("already exists and is not empty"),
        "{}",
        r.stderr
    );
    let r = run_bin(&["--migrate_check", n], RUN);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("does not hold a nats-streaming-server file store"),
        "{}",
        r.stderr
    );
    let r = run_bin(&["--migrate_from", d], RUN);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("needs --dir"), "{}", r.stderr);

    // The migrated directory is our store: served as it is, nothing migrated.
    let (p, log) = start_logged(&server_args(n, &conf));
    assert!(
        !log.iter().any(|l| l.contains("migrat")),
        "{}",
        log.join("\n")
    );
    check_monitoring(p.monitor_port.unwrap(), &m);
    replay_exact(&p.url(), &m).await;
    if node_checks(&p.url()) {
        check_durables_resumed(p.monitor_port.unwrap());
    }
}

/// Offset in `msgs.1.dat` of the record of the `i`-th message (0-based), from the index
/// (4-byte file header, then 32-byte entries: sequence, offset, timestamp, size, CRC).
fn record_offset(channel_dir: &Path, i: u64) -> u64 {
    let idx = std::fs::read(channel_dir.join("msgs.1.idx")).unwrap();
    let at = (4 + i * 32 + 8) as usize;
    u64::from_le_bytes(idx[at..at + 8].try_into().unwrap())
}

#[test]
fn a_damaged_reference_store_is_refused_with_its_path_and_offset() {
    let (t, dir) = fixture_copy();
    let (d, conf) = (dir.to_str().unwrap(), conf());
    // A payload byte of jobs.durable's 50th message: its CRC no longer matches.
    let file = dir.join("jobs.durable/msgs.1.dat");
    let off = record_offset(&dir.join("jobs.durable"), 49);
    let mut b = std::fs::read(&file).unwrap();
    b[(off + 8 + 20) as usize] ^= 0x20;
    std::fs::write(&file, b).unwrap();
    let original = tree(&dir);
    let place = format!(
        "corrupt nats-streaming-server store file {} at offset {off}",
        file.display()
    );

    let r = run_bin(&["--migrate_check", d, "-sc", &conf], RUN);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("DAMAGE: {place}: CRC mismatch")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 damaged places found"), "{}", r.stdout);

    let new = t.path().join("new");
    let r = run_bin(
        &[
            "--migrate_from",
            d,
            "--dir",
            new.to_str().unwrap(),
            "-sc",
            &conf,
        ],
        RUN,
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stderr.contains(&place), "{}", r.stderr);
    assert!(!new.exists());
    assert_eq!(entries(t.path()), ["store".to_string()].into());

    // At start-up: the server does not start, says where, and leaves the store as it was
    // (only the lock file both servers use is created).
    let r = run_bin(
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-st",
            "FILE",
            "--dir",
            d,
            "-sc",
            &conf,
        ],
        RUN,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&place), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "(nothing was changed; --migrate_check {d} lists every damaged place)"
        )),
        "{}",
        r.stderr
    );
    let mut now = tree(&dir);
    now.remove(Path::new(".rootdir.lck"));
    assert_eq!(differences(&original, &now), Vec::<&Path>::new());

    // With the reference's `--file_crc=false` the record is read as it is: clean.
    let r = run_bin(
        &["--migrate_check", d, "-sc", &conf, "--file_crc=false"],
        RUN,
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no damage found"), "{}", r.stdout);
    let mut args = server_args(d, &conf);
    args.push("--file_crc=false");
    let (_p, log) = start_logged(&args);
    let text = log.join("\n");
    assert!(text.contains(SUMMARY), "{text}");
}

/// A clustered node refuses a reference store (its RAFT log is not migrated), and leaves it
/// as it is.
#[test]
fn a_clustered_node_refuses_a_reference_store() {
    let (t, dir) = fixture_copy();
    let original = tree(&dir);
    let (d, conf) = (dir.to_str().unwrap(), conf());
    let raft = t.path().join("raft");
    let r = run_bin(
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "--clustered",
            "--cluster_node_id",
            "a",
            "--cluster_bootstrap",
            "--cluster_log_path",
            raft.to_str().unwrap(),
            "-st",
            "FILE",
            "--dir",
            d,
            "-sc",
            &conf,
        ],
        RUN,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{d} holds a nats-streaming-server file store: a clustered node cannot migrate it"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(differences(&original, &tree(&dir)), Vec::<&Path>::new());
}

/// A copy of a store written by the reference's own store package (`slices`,
/// `castagnoli`), with a configuration file holding `conf`.
fn generated_copy(name: &str, conf: &str) -> (tempfile::TempDir, String, String) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../streaming/tests/fixtures/stan-0.25.6-generated")
            .join(name)
            .join("store"),
        &dir,
    );
    let c = t.path().join("stan.conf");
    std::fs::write(&c, conf).unwrap();
    let (d, c) = (dir.display().to_string(), c.display().to_string());
    (t, d, c)
}

/// The reference's file options: a store written with the Castagnoli polynomial (by the
/// reference's own store package) reads with `crc_poly` from the configuration file or
/// `--file_crc_poly`, and is damaged without; things the reference handles itself are
/// notes of the report (leftovers of removed slices) and warnings at start-up (an index
/// rebuilt from its data file). Expected numbers: `expected.json` of each generated store.
/// (Their server information was written by a generator with only some of the subjects a
/// server uses, so no server can serve them: they are only checked here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_file_options_and_findings() {
    let limits = "store_limits: { channels: { old: { max_age: \"1h\" } } }\n";
    let (_t, d, c) = generated_copy("castagnoli", limits);
    let r = run_bin(&["--migrate_check", &d, "-sc", &c], RUN);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stdout.contains("CRC mismatch"), "{}", r.stdout);
    let r = run_bin(
        &[
            "--migrate_check",
            &d,
            "-sc",
            &c,
            "--file_crc_poly",
            "2197175160",
        ],
        RUN,
    );
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    std::fs::write(
        &c,
        format!("{limits}file_options: {{ crc_poly: 2197175160 }}\n"),
    )
    .unwrap();
    let r = run_bin(&["--migrate_check", &d, "-sc", &c], RUN);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    for want in [
        "cluster id: gen-castagnoli",
        "channel bytes: first 1 last 60, 60 messages (12902 bytes)",
        "channel old: first 11 last 10, 0 messages (0 bytes)",
        "no damage found",
    ] {
        assert!(r.stdout.contains(want), "{want:?} not in:\n{}", r.stdout);
    }

    let capped = "store_limits: { channels: { capped: { max_msgs: 25 } } }\n";
    let (_t, d, c) = generated_copy("slices", capped);
    let r = run_bin(&["--migrate_check", &d, "-sc", &c], RUN);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("channel capped: first 76 last 100, 25 messages (5710 bytes)"),
        "{}",
        r.stdout
    );
    let notes: Vec<&str> = r.stdout.lines().filter(|l| l.contains("note: ")).collect();
    assert_eq!(notes.len(), 14, "{}", r.stdout);
    assert!(notes.iter().all(|n| n.contains(".bak")), "{notes:?}");

    // At start-up: the reference's fixture without one of its index files.
    let m = manifest();
    let (_t, dir) = fixture_copy();
    let idx = dir.join("jobs.durable/msgs.1.idx");
    std::fs::remove_file(&idx).unwrap();
    let (d, conf) = (dir.to_str().unwrap(), conf());
    let (p, log) = start_logged(&server_args(d, &conf));
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("[WRN] STREAM: migration: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", log.join("\n"));
    assert!(
        warnings[0].contains(&format!(
            "{}: index not used (missing); messages read from the data file",
            idx.display()
        )),
        "{}",
        warnings[0]
    );
    check_monitoring(p.monitor_port.unwrap(), &m);
    replay_exact(&p.url(), &m).await;
}

fn ft_member(url: &str, dir: &str, conf: &str, until: &str) -> ServerProc {
    ServerProc::spawn(
        &[
            "-ns",
            url,
            "--ft_group",
            "grp",
            "-st",
            "FILE",
            "--dir",
            dir,
            "-sc",
            conf,
            "-m",
            "-1",
        ],
        until,
    )
}

/// Drains the log lines `p` has printed so far.
fn drain(p: &ServerProc) -> Vec<String> {
    p.lines.try_iter().collect()
}

/// Two standbys wait while another process (the test, standing for a running
/// nats-streaming-server) holds the store lock: neither touches the store. Once it is
/// released, the member that takes the lock migrates under it and serves; the other stays a
/// standby and never migrates. When the active dies, the standby opens the migrated store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_ft_group_only_the_member_holding_the_lock_migrates() {
    let m = manifest();
    let (_core, url) = core_nats().await;
    let (_t, dir) = fixture_copy();
    let (d, conf) = (dir.to_str().unwrap(), conf());
    let held = std::fs::File::create(dir.join(".rootdir.lck")).unwrap();
    held.try_lock().unwrap();
    let original = tree(&dir);

    let mut members = [
        ft_member(&url, d, &conf, "Starting in standby mode"),
        ft_member(&url, d, &conf, "Starting in standby mode"),
    ];
    // Standbys poll the lock every 10 ms: give them many polls while it is held.
    std::thread::sleep(Duration::from_millis(500));
    for p in &members {
        let log = drain(p);
        assert!(
            !log.iter().any(|l| l.contains("migrat")),
            "{}",
            log.join("\n")
        );
    }
    assert_eq!(differences(&original, &tree(&dir)), Vec::<&Path>::new());

    drop(held);
    let deadline = Instant::now() + MIGRATION;
    let mut logs = [Vec::new(), Vec::new()];
    let active = loop {
        for (i, p) in members.iter().enumerate() {
            logs[i].extend(drain(p));
        }
        if let Some(i) = (0..2).find(|&i| {
            logs[i]
                .iter()
                .any(|l| l.contains("Streaming Server is ready"))
        }) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no member became active: {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let standby = 1 - active;
    let text = logs[active].join("\n");
    assert!(text.contains(SUMMARY), "{text}");
    let backup = dir.join("nats-streaming-backup");
    let mut moved = original.clone();
    moved.remove(Path::new(".rootdir.lck"));
    assert_eq!(differences(&moved, &tree(&backup)), Vec::<&Path>::new());
    assert!(!dir.join("nats-streaming-backup.1").exists());

    let port = members[active].monitor_port.unwrap();
    check_monitoring(port, &m);
    replay_exact(&url, &m).await;
    logs[standby].extend(drain(&members[standby]));
    assert!(
        !logs[standby].iter().any(|l| l.contains("migrat")),
        "{}",
        logs[standby].join("\n")
    );

    // The active dies: the standby takes over our store, without migrating anything.
    members[active].kill();
    let log = lines_until(&members[standby], "Streaming Server is ready", MIGRATION);
    assert!(
        !log.iter().any(|l| l.contains("migrat")),
        "{}",
        log.join("\n")
    );
    check_monitoring(members[standby].monitor_port.unwrap(), &m);
    replay_exact(&url, &m).await;
}
