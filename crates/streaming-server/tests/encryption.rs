//! Encryption at rest through the binary: flags, the environment variable, key errors, no
//! plaintext on disk, and node-nats-streaming over an encrypted FILE store across a restart.

mod common;

use std::process::Command;

use common::*;

const KEY: &str = "correct horse battery staple";

fn start_error(args: &[&str], env: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"));
    c.args(["-a", "127.0.0.1", "-p", "-1"]).args(args);
    c.env_remove("NATS_STREAMING_ENCRYPTION_KEY");
    if let Some(v) = env {
        c.env("NATS_STREAMING_ENCRYPTION_KEY", v);
    }
    let out = c.output().unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_encrypted_on_disk_and_read_back_with_the_key_only() {
    for cipher in ["AES", "CHACHA"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let args = [
            "-st",
            "FILE",
            "--dir",
            d,
            "--encryption_cipher",
            cipher,
            "--encryption_key",
            KEY,
        ];
        let mut server = ServerProc::start(&args);
        let c = Raw::connect(&server.url(), "test-cluster", "enc", true).await;
        let secret = |i: usize| format!("TOP-SECRET-PAYLOAD-{cipher}-{i:04}");
        for i in 0..50 {
            assert_eq!(c.publish("vault", secret(i).as_bytes()).await.error, "");
        }
        drop(c);
        server.kill();
        for i in [0, 17, 49] {
            let hits = files_contain(dir.path(), secret(i).as_bytes());
            assert!(hits.is_empty(), "{cipher}: plaintext in {hits:?}");
        }
        assert!(
            files_contain(dir.path(), b"TOP-SECRET").is_empty(),
            "{cipher}: a prefix of the payloads is on disk"
        );
        // Same key: everything back, intact.
        let server = ServerProc::start(&args);
        let c = Raw::connect(&server.url(), "test-cluster", "enc2", true).await;
        let mut s = c.subscribe(c.sub_req("vault", "")).await.unwrap();
        for i in 0..50 {
            let m = s.next().await;
            assert_eq!(m.data, secret(i).as_bytes(), "{cipher}");
        }
        drop(c);
        drop(server);
        // Wrong key: refused at start, naming the channel; the key is not printed.
        let mut wrong = args;
        wrong[7] = "not the key";
        let err = start_error(&wrong, None);
        assert!(err.contains("\"vault\""), "{err}");
        assert!(err.contains("wrong encryption key"), "{err}");
        assert!(!err.contains(KEY) && !err.contains("not the key"), "{err}");
        // The environment variable wins over the flag.
        let server = ServerProc::spawn_env(
            &wrong,
            "Streaming Server is ready",
            &[("NATS_STREAMING_ENCRYPTION_KEY", KEY)],
        );
        let c = Raw::connect(&server.url(), "test-cluster", "enc3", true).await;
        let mut s = c.subscribe(c.sub_req("vault", "")).await.unwrap();
        assert_eq!(s.next().await.data, secret(0).as_bytes());
    }
}

#[test]
fn encrypt_without_a_key_and_an_unknown_cipher_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let err = start_error(&["-st", "FILE", "--dir", d, "--encrypt"], None);
    assert!(err.contains("encryption key required"), "{err}");
    let err = start_error(
        &[
            "-st",
            "FILE",
            "--dir",
            d,
            "--encryption_key",
            "k",
            "--encryption_cipher",
            "ROT13",
        ],
        None,
    );
    assert!(err.contains("encryption cipher not supported"), "{err}");
}

/// node-nats-streaming over an encrypted FILE store: messages and a durable's position survive
/// a kill -9.
#[test]
fn node_client_on_an_encrypted_store_across_a_restart() {
    if !node_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-st", "FILE", "--dir", d, "--encrypt"];
    let env = [("NATS_STREAMING_ENCRYPTION_KEY", KEY)];
    let mut server = ServerProc::spawn_env(&args, "Streaming Server is ready", &env);
    let (ok, out) = run_node("restart_phase1", &server.url());
    assert!(ok, "phase 1 failed:\n{out}");
    server.kill();
    let server = ServerProc::spawn_env(&args, "Streaming Server is ready", &env);
    let (ok, out) = run_node("restart_phase2", &server.url());
    assert!(ok, "phase 2 failed:\n{out}");
}
