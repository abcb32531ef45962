//! The streaming server's monitoring port as an operator sees it: bound once, on the host
//! given with `-a`, serving both the NATS and the streaming endpoints; flags for features
//! this build lacks refused.

mod common;

use std::process::Command;

use common::{ServerProc, http_get};

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
