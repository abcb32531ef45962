//! Where monitoring listens: the `-a` host (checked in the process's socket table), HTTPS
//! with the client port's certificate (`-ms`), the reference's refusals, and flags for
//! features this build lacks refused instead of ignored.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rnats_server::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestServer, test_options};
use crate::pki::make_pki;

const BIN: &str = env!("CARGO_BIN_EXE_rnats-server");

/// The TCP sockets process `pid` listens on, from its descriptors and /proc/net/tcp{,6}.
pub fn listening_sockets(pid: u32) -> Vec<std::net::SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for (table, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode.
            if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let (ip, port) = f[1].split_once(':').expect("ip:port");
            let port = u16::from_str_radix(port, 16).expect("hex port");
            let ip: std::net::IpAddr = if v6 {
                let mut b = [0u8; 16];
                for (i, chunk) in b.chunks_mut(4).enumerate() {
                    let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).expect("hex");
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                std::net::Ipv6Addr::from(b).into()
            } else {
                let word = u32::from_str_radix(ip, 16).expect("hex");
                std::net::Ipv4Addr::from(word.to_le_bytes()).into()
            };
            out.push(std::net::SocketAddr::new(ip, port));
        }
    }
    out.sort();
    out
}

#[test]
fn monitor_binds_the_client_host_once() {
    let (child, port, _log) = super::process::spawn(&["-a", "127.0.0.1", "-p", "-1", "-m", "-1"]);
    let sockets = listening_sockets(child.0.id());
    assert_eq!(
        sockets.len(),
        2,
        "client and monitor ports only: {sockets:?}"
    );
    assert!(
        sockets.iter().all(|s| s.ip().to_string() == "127.0.0.1"),
        "everything on the -a host: {sockets:?}"
    );
    assert!(sockets.iter().any(|s| s.port() == port));
}

/// HTTPS monitoring (`https_port`) with the server's certificate, no client certificate
/// asked for even when the client port verifies them.
#[tokio::test]
async fn https_monitor_uses_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls = rnats_server::options::TlsOptions {
        cert_file: Some(pki.cert.clone()),
        key_file: Some(pki.key.clone()),
        ca_file: Some(pki.ca.clone()),
        verify: true,
        ..Default::default()
    };
    let server = TestServer::rnats_with(Options {
        https_port: -1,
        tls: Some(tls.clone()),
        ..test_options()
    })
    .await;
    let addr = server.monitor.expect("https monitor");
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls_stream = connector.connect(name, tcp).await.expect("TLS handshake");
    tls_stream
        .write_all(b"GET /varz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls_stream.read_to_end(&mut body))
        .await
        .expect("answer in time")
        .ok();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"https_port\": -1"), "{text}");
    // Plain HTTP on the HTTPS port gets no page.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /varz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("server_id"));
    server.stop().await;

    // The reference's refusals, word for word.
    let both = rnats_server::start(Options {
        http_port: -1,
        https_port: -1,
        tls: Some(tls),
        ..test_options()
    })
    .await;
    assert_eq!(
        both.err().unwrap().to_string(),
        "Can't start monitoring: can't specify both HTTP (-1) and HTTPs (-1) ports"
    );
    let no_tls = rnats_server::start(Options {
        https_port: -1,
        ..test_options()
    })
    .await;
    assert_eq!(
        no_tls.err().unwrap().to_string(),
        "Can't start monitoring: TLS cert and key required for HTTPS"
    );
}

/// `-js` and the other flags of features this build lacks stop the server with the
/// configuration file's wording; the configuration file refuses `https` no more.
#[test]
fn unsupported_features_are_refused() {
    for args in [&["-js"][..], &["--jetstream"], &["-sd", "/tmp/x"], &["-s"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is not supported by this rnats-server build yet"),
            "{args:?}: {err}"
        );
    }
    let out = Command::new(BIN).arg("-js").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "rnats-server: -js: \"jetstream\" is not supported by this rnats-server build yet"
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("js.conf");
    std::fs::write(&conf, "jetstream {}\n").unwrap();
    let out = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap(), "-t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("\"jetstream\" is not supported by this rnats-server build yet")
    );
    std::fs::write(&conf, "https: 127.0.0.1:8443\n").unwrap();
    let out = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap(), "-t"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/connz` `rtt`: measured at CONNECT (INFO out, CONNECT in), then from the server's own
/// PING (the first goes out within 2 s) to the client's PONG, here held back 300 ms.
#[tokio::test]
async fn connz_rtt_comes_from_the_servers_pings() {
    let server = TestServer::rnats_with(Options {
        http_port: -1,
        ..test_options()
    })
    .await;
    let monitor = server.monitor.unwrap();
    let mut raw =
        crate::harness::Raw::connect_with(server.addr, r#"{"verbose":false,"name":"rtt"}"#).await;
    let rtt = |body: &serde_json::Value| -> String {
        body["connections"][0]["rtt"].as_str().unwrap().to_string()
    };
    let first = rtt(&crate::monitor::get(monitor, "/connz").await.json());
    assert_ne!(first, "0s", "measured at CONNECT");
    let ping = tokio::time::timeout(Duration::from_secs(5), raw.line())
        .await
        .expect("the server's first PING within 2 s");
    assert_eq!(ping.as_deref(), Some("PING"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.send(b"PONG\r\n").await;
    raw.ping_pong().await;
    let after = rtt(&crate::monitor::get(monitor, "/connz").await.json());
    let secs: f64 = after
        .strip_suffix("ms")
        .map(|ms| ms.parse::<f64>().unwrap() / 1000.0)
        .or_else(|| after.strip_suffix('s').and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("rtt {after}"));
    assert!(
        (0.3..5.0).contains(&secs),
        "rtt of the held-back PONG: {after}"
    );
    server.stop().await;
}
