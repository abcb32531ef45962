//! The streaming server's monitoring port as an operator sees it: bound once, on the host
//! given with `-a`, serving both the NATS and the streaming endpoints; flags for features
//! this build lacks refused.

mod common;
#[path = "../../server/tests/it/prom.rs"]
mod prom;

use std::process::Command;
use std::time::Duration;

use common::{Raw, ServerProc, eventually, http_get};

/// The TCP sockets process `pid` listens on: its socket descriptors looked up in
/// /proc/net/tcp{,6} (state 0A = LISTEN).
fn listening_sockets(pid: u32) -> Vec<(String, u16)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let (ip, port) = f[1].split_once(':').expect("ip:port");
            let port = u16::from_str_radix(port, 16).expect("hex port");
            let ip = match u32::from_str_radix(ip, 16) {
                Ok(w) if ip.len() == 8 => std::net::Ipv4Addr::from(w.to_le_bytes()).to_string(),
                _ => format!("v6:{ip}"),
            };
            out.push((ip, port));
        }
    }
    out.sort();
    out
}

#[test]
fn monitoring_binds_the_given_host_exactly_once() {
    let server = ServerProc::start(&["-m", "-1"]);
    let mport = server.monitor_port.expect("monitor port logged");
    let sockets = listening_sockets(server.child.id());
    assert_eq!(
        sockets,
        {
            let mut want = vec![
                ("127.0.0.1".to_string(), server.port),
                ("127.0.0.1".to_string(), mport),
            ];
            want.sort();
            want
        },
        "the client port and one monitoring port, both on the -a host"
    );
    // One port serves the NATS endpoints and the streaming ones.
    let (status, body) = http_get(mport, "/varz");
    assert_eq!(status, 200);
    let varz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(varz["http_host"], "127.0.0.1");
    let (status, body) = http_get(mport, "/streaming/serverz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cluster_id\": \"test-cluster\""), "{body}");
    let (status, _) = http_get(mport, "/connz");
    assert_eq!(status, 200);
    assert_eq!(http_get(mport, "/streaming/nope").0, 404);
}

#[test]
fn unsupported_feature_flags_are_refused() {
    let bin = env!("CARGO_BIN_EXE_rnats-streaming-server");
    for args in [&["-js"][..], &["-sd", "/tmp/js"]] {
        let out = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {err}");
        assert!(
            err.contains("\"jetstream\" is not supported by this rnats-server build yet"),
            "{args:?}: {err}"
        );
    }
}

/// `/metrics` of the streaming server: the core server's families and the streaming ones
/// under the exporter's names, read by prometheus_client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_the_streaming_families() {
    let server = ServerProc::start(&["-m", "-1"]);
    let mport = server.monitor_port.unwrap();
    let c = Raw::connect(&server.url(), "test-cluster", "metrics-client", true).await;
    for i in 0..3 {
        assert_eq!(
            c.publish("orders", format!("o{i}").as_bytes()).await.error,
            ""
        );
    }
    // A durable that does not ack, with the shortest ack wait: its messages get redelivered.
    let mut req = c.sub_req("orders", "");
    req.durable_name = "d".into();
    req.ack_wait_in_secs = 1;
    req.max_in_flight = 3;
    let mut sub = c.subscribe(req).await.unwrap();
    for _ in 0..3 {
        sub.next().await;
    }
    let get = || async move {
        tokio::task::spawn_blocking(move || http_get(mport, "/metrics"))
            .await
            .unwrap()
    };
    let mut last = String::new();
    let redelivered = eventually(Duration::from_secs(10), async || {
        let (status, body) = get().await;
        assert_eq!(status, 200);
        last = body;
        last.contains("nss_chan_subs_redelivered_count{") && {
            let line = last
                .lines()
                .find(|l| l.starts_with("nss_chan_subs_redelivered_count{"))
                .unwrap_or_default();
            line.ends_with(" 3")
        }
    })
    .await;
    assert!(redelivered, "three pending messages redelivered:\n{last}");
    let Some(f) = prom::parse(&last) else {
        return;
    };
    let one = |name: &str, labels: &[(&str, &str)]| {
        prom::value(&f, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in\n{last}"))
    };
    let chan = [("channel", "orders")];
    assert_eq!(one("nss_server_channels", &[]), 1.0);
    assert_eq!(one("nss_server_clients", &[]), 1.0);
    assert_eq!(one("nss_server_subscriptions", &[]), 1.0);
    assert_eq!(one("nss_server_msgs_total", &[]), 3.0);
    assert_eq!(one("nss_server_in_msgs", &[]), 3.0);
    assert!(one("nss_server_bytes_total", &[]) > 0.0);
    assert_eq!(
        one(
            "nss_server_info",
            &[("state", "STANDALONE"), ("cluster_id", "test-cluster")]
        ),
        1.0
    );
    assert_eq!(one("nss_chan_msgs_total", &chan), 3.0);
    assert_eq!(one("nss_chan_last_seq", &chan), 3.0);
    assert_eq!(one("nss_chan_subscriptions", &chan), 1.0);
    let sub_labels = [
        ("channel", "orders"),
        ("client_id", "metrics-client"),
        ("is_durable", "true"),
        ("is_offline", "false"),
    ];
    assert_eq!(one("nss_chan_subs_pending_count", &sub_labels), 3.0);
    assert_eq!(one("nss_chan_subs_last_sent", &sub_labels), 3.0);
    assert_eq!(one("nss_chan_subs_max_inflight", &sub_labels), 3.0);
    assert_eq!(one("nss_chan_subs_redelivered_count", &sub_labels), 3.0);
    assert_eq!(one("nss_chan_subs_stalled", &sub_labels), 1.0);
    // The core server's families come first, on the same page.
    assert!(one("gnatsd_varz_connections", &[]) >= 1.0);
    assert_eq!(one("gnatsd_healthz_status", &[]), 0.0);
}
