//! `/metrics` under prometheus-nats-exporter's names, read by a real Prometheus text parser
//! (prometheus_client, when the `.venv` has it) and by a strict line check that always runs.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Raw, TestServer};
use crate::monitor::{get, monitored, scenario};
use crate::prom;

/// Every line a comment or `name{labels} value`, every sample's family typed before it.
fn check_lines(body: &str) -> BTreeMap<String, usize> {
    let mut typed = BTreeSet::new();
    let mut counts = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().unwrap().to_string());
            assert!(matches!(parts.next(), Some("gauge" | "counter")), "{line}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = series.split_once('{').expect("labels");
        assert!(labels.starts_with("server_id=\""), "{line}");
        assert!(typed.contains(name), "{name} has no TYPE line before it");
        value.parse::<f64>().expect("a number");
        *counts.entry(name.to_string()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn metrics_under_the_exporters_names() {
    let rnats = TestServer::rnats_with(monitored()).await;
    let _conns = scenario(&rnats).await;
    // Many idle clients: only the top connections get series of their own.
    let mut idle = Vec::new();
    for i in 0..25 {
        idle.push(
            Raw::connect_with(
                rnats.addr,
                &format!(r#"{{"verbose":false,"name":"idle{i}"}}"#),
            )
            .await,
        );
    }
    let resp = get(rnats.monitor.unwrap(), "/metrics").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.headers
    );
    let counts = check_lines(&resp.body);
    let per_conn = counts["gnatsd_connz_in_msgs"];
    assert!(
        (4..=1 + 2 * rnats_server::monitor::METRICS_TOP_CONNECTIONS).contains(&per_conn),
        "the total and at most two tops: {per_conn}"
    );

    let Some(f) = prom::parse(&resp.body) else {
        return;
    };
    let server_id = rnats.handle().shared.server_id.clone();
    let sid = [("server_id", server_id.as_str())];
    for (name, expected) in [
        ("gnatsd_varz_connections", 28.0),
        ("gnatsd_varz_subscriptions", 3.0),
        ("gnatsd_varz_in_msgs", 6.0),
        ("gnatsd_varz_out_msgs", 9.0),
        ("gnatsd_varz_in_bytes", 21.0),
        ("gnatsd_varz_out_bytes", 36.0),
        ("gnatsd_varz_slow_consumers", 0.0),
        ("gnatsd_varz_max_payload", 1048576.0),
        ("gnatsd_connz_num_connections", 28.0),
        ("gnatsd_connz_total", 28.0),
        ("gnatsd_connz_in_msgs", 6.0),
        ("gnatsd_connz_out_msgs", 9.0),
        ("gnatsd_connz_subscriptions", 3.0),
        ("gnatsd_subsz_num_subscriptions", 3.0),
        ("gnatsd_healthz_status", 0.0),
        ("gnatsd_routez_num_routes", 0.0),
    ] {
        // The total: the sample with the server id only.
        let total = prom::samples(&f, name)
            .into_iter()
            .find(|s| s.labels.len() == 1)
            .map(|s| s.value);
        assert_eq!(total, Some(expected), "{name}");
    }
    assert!(prom::value(&f, "gnatsd_varz_uptime_seconds", &sid).is_some());
    assert_eq!(
        prom::value(&f, "gnatsd_routez_server_id", &[("value", &server_id)]),
        Some(1.0)
    );
    assert!(prom::value(&f, "gnatsd_subsz_num_matches", &sid).is_some());
    // The busiest connections with the exporter's detail labels.
    assert_eq!(
        prom::value(
            &f,
            "gnatsd_connz_in_msgs",
            &[("name", "carol"), ("lang", "rust")]
        ),
        Some(6.0)
    );
    assert_eq!(
        prom::value(
            &f,
            "gnatsd_connz_out_msgs",
            &[("name", "alice"), ("kind", "Client")]
        ),
        Some(6.0)
    );
    let rtt = prom::value(&f, "gnatsd_connz_rtt", &[("name", "alice")]).unwrap();
    assert!(rtt > 0.0, "rtt in µs: {rtt}");
    for s in prom::samples(&f, "gnatsd_connz_pending_bytes") {
        if s.labels.len() > 1 {
            for label in [
                "cid",
                "kind",
                "type",
                "ip",
                "port",
                "name",
                "lang",
                "version",
                "tls_version",
                "tls_cipher_suite",
            ] {
                assert!(s.labels.contains_key(label), "{label} in {:?}", s.labels);
            }
        }
    }
    drop(idle);
}
