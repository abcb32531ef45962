//! HTTP monitoring: the same scenario against rnats and the reference nats-server, then
//! every endpoint's field names and JSON types compared, plus rnats's own values checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rnats_server::Options;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::harness::{Raw, TestServer, WAIT, test_options};

/// Fields the reference shows that rnats leaves out on purpose: they describe features
/// rnats does not have (JetStream, a system account, a git build stamp).
const KNOWN_ABSENT: &[(&str, &str)] = &[
    ("varz", "git_commit"), // omitempty; no git commit is stamped into the build
    ("varz", "system_account"), // omitempty; no system account
    ("varz", "feature_flags"), // JetStream feature flags
    ("varz", "disk_io_wait_stats"), // JetStream storage I/O
    ("varz", "ocsp_peer_cache"), // OCSP (omitempty)
    ("varz", "tls_ocsp_peer_verify"), // OCSP (omitempty)
    ("routez", "account"),  // routes pinned to an account ($SYS): no system account
];

/// An HTTP response: status, headers (lower-case names), body.
struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A tiny HTTP/1.1 GET over a fresh connection (handles chunked bodies).
async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to monitor");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = timeout(WAIT, fut).await.expect("HTTP response in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_line = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field name → JSON type, merged over several objects (e.g. every connection).
fn shape<'a>(objects: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for obj in objects {
        for (k, v) in obj.as_object().expect("a JSON object") {
            out.insert(k.clone(), json_type(v));
        }
    }
    out
}

/// Every field of `reference` must be in `ours` with the same JSON type, unless listed as a
/// known absence for `what`. Returns the differences.
fn compare(
    what: &str,
    ours: &BTreeMap<String, &'static str>,
    reference: &BTreeMap<String, &'static str>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (field, ty) in reference {
        if KNOWN_ABSENT.contains(&(what, field.as_str())) {
            continue;
        }
        match ours.get(field) {
            None => diffs.push(format!("{what}: missing `{field}` ({ty})")),
            Some(our) if our != ty => {
                diffs.push(format!("{what}: `{field}` is {our}, reference has {ty}"))
            }
            Some(_) => {}
        }
    }
    diffs
}

fn items<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The scenario: alice (two subs, one in a queue group), bob (one sub), carol (publishes
/// 6 messages), and dave (one sub, then disconnects). Returns the live connections.
async fn scenario(server: &TestServer) -> Vec<Raw> {
    let connect = |name: &str| {
        format!(
            r#"{{"verbose":false,"pedantic":false,"name":"{name}","lang":"rust","version":"1.2.3"}}"#
        )
    };
    let mut alice = Raw::connect_with(server.addr, &connect("alice")).await;
    alice.send(b"SUB foo 1\r\nSUB bar.* q 2\r\n").await;
    alice.ping_pong().await;
    let mut bob = Raw::connect_with(server.addr, &connect("bob")).await;
    bob.send(b"SUB foo 1\r\n").await;
    bob.ping_pong().await;
    let mut carol = Raw::connect_with(server.addr, &connect("carol")).await;
    for _ in 0..3 {
        carol
            .send(b"PUB foo 5\r\nhello\r\nPUB bar.x 2\r\nhi\r\n")
            .await;
    }
    carol.ping_pong().await;
    for _ in 0..6 {
        alice.msg().await;
    }
    for _ in 0..3 {
        bob.msg().await;
    }
    let mut dave = Raw::connect_with(server.addr, &connect("dave")).await;
    dave.send(b"SUB x 1\r\n").await;
    dave.ping_pong().await;
    drop(dave);
    // Wait until the server has seen dave go.
    let monitor = server.monitor.expect("monitoring on");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let closed = get(monitor, "/connz?state=closed").await.json();
        if closed["total"].as_u64() == Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: dave never showed as closed",
            server.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    vec![alice, bob, carol]
}

const ENDPOINTS: &[&str] = &[
    "/varz",
    "/connz",
    "/connz?subs=1",
    "/connz?subs=detail",
    "/connz?state=closed&subs=1",
    "/connz?state=all&auth=1",
    "/routez",
    "/subsz",
    "/subsz?subs=1",
    "/healthz",
];

/// Field shapes of everything an endpoint returns: the top level and each nested list.
fn shapes(path: &str, body: &Value) -> Vec<(String, BTreeMap<String, &'static str>)> {
    let name = path.trim_start_matches('/').to_string();
    let mut out = vec![(name.clone(), shape([body]))];
    let conns = items(body, "connections");
    if !conns.is_empty() {
        out.push((
            format!("{name} connections[]"),
            shape(conns.iter().copied()),
        ));
        let details: Vec<&Value> = conns
            .iter()
            .flat_map(|c| items(c, "subscriptions_list_detail"))
            .collect();
        if !details.is_empty() {
            out.push((
                format!("{name} subscriptions_list_detail[]"),
                shape(details),
            ));
        }
    }
    let subs = items(body, "subscriptions_list");
    if subs.iter().all(|s| s.is_object()) && !subs.is_empty() {
        out.push((format!("{name} subscriptions_list[]"), shape(subs)));
    }
    let routes = items(body, "routes");
    if !routes.is_empty() {
        out.push((format!("{name} routes[]"), shape(routes.iter().copied())));
        let details: Vec<&Value> = routes
            .iter()
            .flat_map(|r| items(r, "subscriptions_list_detail"))
            .collect();
        if !details.is_empty() {
            out.push((
                format!("{name} routes[] subscriptions_list_detail[]"),
                shape(details),
            ));
        }
    }
    for nested in ["slow_consumer_stats", "stale_connection_stats", "cluster"] {
        if let Some(obj) = body.get(nested).filter(|v| v.is_object()) {
            out.push((format!("{name} {nested}"), shape([obj])));
        }
    }
    out
}

fn monitored() -> Options {
    Options {
        http_port: -1,
        ..test_options()
    }
}

#[tokio::test]
async fn endpoints_match_reference_shapes() {
    let rnats = TestServer::rnats_with(monitored()).await;
    let ours = rnats.monitor.expect("rnats monitor address");
    let _rnats_conns = scenario(&rnats).await;
    let mut our_bodies = BTreeMap::new();
    for path in ENDPOINTS {
        let resp = get(ours, path).await;
        assert_eq!(resp.status, 200, "rnats {path}: {}", resp.body);
        assert_eq!(
            resp.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "rnats {path}"
        );
        assert_eq!(
            resp.headers
                .get("access-control-allow-origin")
                .map(String::as_str),
            Some("*")
        );
        our_bodies.insert(*path, resp.json());
    }
    check_rnats_values(&our_bodies);

    let Some(reference) = TestServer::reference(&["-m", "-1"]) else {
        return;
    };
    let theirs = reference.monitor.expect("reference monitor address");
    let _ref_conns = scenario(&reference).await;
    let mut diffs = Vec::new();
    for path in ENDPOINTS {
        let resp = get(theirs, path).await;
        assert_eq!(resp.status, 200, "reference {path}: {}", resp.body);
        let their_shapes = shapes(path, &resp.json());
        let our_shapes: BTreeMap<_, _> = shapes(path, &our_bodies[path]).into_iter().collect();
        for (what, their_shape) in their_shapes {
            let empty = BTreeMap::new();
            let our_shape = our_shapes.get(&what).unwrap_or(&empty);
            let key = what
                .split([' ', '?'])
                .next()
                .unwrap_or_default()
                .to_string();
            let mut d = compare(&key, our_shape, &their_shape);
            d.iter_mut()
                .for_each(|line| *line = format!("{what}: {line}"));
            diffs.extend(d);
        }
    }
    assert!(
        diffs.is_empty(),
        "fields differ from the reference:\n{}",
        diffs.join("\n")
    );
}

fn check_rnats_values(bodies: &BTreeMap<&str, Value>) {
    let varz = &bodies["/varz"];
    assert_eq!(varz["connections"], 3);
    assert_eq!(varz["total_connections"], 4);
    assert_eq!(varz["in_msgs"], 6);
    assert_eq!(varz["in_bytes"], 21);
    assert_eq!(varz["out_msgs"], 9);
    assert_eq!(varz["out_bytes"], 36);
    assert_eq!(varz["subscriptions"], 3);
    assert_eq!(varz["ping_interval"], 120_000_000_000u64);
    assert_eq!(varz["write_deadline"], 10_000_000_000u64);
    assert_eq!(varz["max_pending"], 64 * 1024 * 1024);
    assert_eq!(varz["cluster"], serde_json::json!({}));
    assert!(varz["start"].as_str().unwrap().ends_with('Z'));
    assert!(varz["mem"].as_u64().unwrap() > 0);
    assert!(varz["http_req_stats"]["/connz"].as_u64().unwrap() >= 1);

    let connz = &bodies["/connz?subs=1"];
    assert_eq!(
        (connz["num_connections"].clone(), connz["total"].clone()),
        (3.into(), 3.into())
    );
    let conns = items(connz, "connections");
    let by_name = |n: &str| {
        *conns
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no connection named {n}"))
    };
    let alice = by_name("alice");
    assert_eq!(alice["subscriptions"], 2);
    assert_eq!(alice["out_msgs"], 6);
    assert_eq!(alice["out_bytes"], 21);
    assert_eq!(alice["lang"], "rust");
    assert_eq!(alice["version"], "1.2.3");
    assert_eq!(alice["kind"], "Client");
    assert_eq!(alice["type"], "nats");
    assert_eq!(alice["ip"], "127.0.0.1");
    let mut subjects: Vec<&str> = items(alice, "subscriptions_list")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["bar.*", "foo"]);
    let carol = by_name("carol");
    assert_eq!(
        (carol["in_msgs"].clone(), carol["in_bytes"].clone()),
        (6.into(), 21.into())
    );
    assert!(
        carol.get("subscriptions_list").is_none(),
        "omitted when empty"
    );
    assert_eq!(by_name("bob")["out_msgs"], 3);
    assert!(alice.get("subscriptions_list").is_some());
    assert!(
        bodies["/connz"]["connections"][0]
            .get("subscriptions_list")
            .is_none()
    );

    let detail = &bodies["/connz?subs=detail"];
    let alice_detail = items(detail, "connections")
        .into_iter()
        .find(|c| c["name"] == "alice")
        .unwrap();
    let queued = items(alice_detail, "subscriptions_list_detail")
        .into_iter()
        .find(|s| s["subject"] == "bar.*")
        .expect("bar.* in detail");
    assert_eq!(queued["qgroup"], "q");
    assert_eq!(queued["sid"], "2");
    assert_eq!(queued["msgs"], 3);

    let closed = &bodies["/connz?state=closed&subs=1"];
    let dave = &closed["connections"][0];
    assert_eq!(dave["name"], "dave");
    assert_eq!(dave["reason"], "Client Closed");
    assert_eq!(dave["subscriptions"], 1);
    assert_eq!(dave["subscriptions_list"], serde_json::json!(["x"]));
    assert!(dave["stop"].is_string());
    assert_eq!(bodies["/connz?state=all&auth=1"]["total"], 4);

    let routez = &bodies["/routez"];
    assert_eq!(routez["num_routes"], 0);
    assert_eq!(routez["routes"], serde_json::json!([]));

    let subsz = &bodies["/subsz?subs=1"];
    assert_eq!(subsz["num_subscriptions"], 3);
    assert_eq!(subsz["total"], 3);
    assert_eq!(subsz["num_inserts"], 4);
    assert_eq!(subsz["num_removes"], 1);
    let on_foo = items(subsz, "subscriptions_list")
        .into_iter()
        .filter(|s| s["subject"] == "foo")
        .count();
    assert_eq!(on_foo, 2);
    assert!(bodies["/subsz"].get("subscriptions_list").is_none());
    assert_eq!(bodies["/healthz"], serde_json::json!({"status": "ok"}));
}

/// Parameter handling, answered exactly as the reference does (status and body).
#[tokio::test]
async fn parameters_like_reference() {
    let rnats = TestServer::rnats_with(monitored()).await;
    let _conns = scenario(&rnats).await;
    let ours = rnats.monitor.unwrap();
    let reference = TestServer::reference(&["-m", "-1"]);
    let mut theirs = None;
    let mut _ref_conns = Vec::new();
    if let Some(r) = &reference {
        _ref_conns = scenario(r).await;
        theirs = r.monitor;
    }
    let errors = [
        ("/connz?sort=xyz", "invalid sorting option: xyz"),
        (
            "/connz?subs=maybe",
            "Error decoding boolean for 'subs': strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
        (
            "/connz?sort=stop",
            "sort by stop only valid on closed connections",
        ),
        (
            "/connz?sort=reason",
            "sort by reason only valid on closed connections",
        ),
        ("/connz?state=bogus", "Error decoding state for bogus"),
        (
            "/connz?limit=abc",
            "Error decoding int for 'limit': strconv.Atoi: parsing \"abc\": invalid syntax",
        ),
        (
            "/connz?cid=abc",
            "Error decoding uint64 for 'cid': strconv.ParseUint: parsing \"abc\": invalid syntax",
        ),
        (
            "/subsz?test=foo.*",
            "invalid test subject, must be valid publish subject: foo.*",
        ),
    ];
    for (path, message) in errors {
        let resp = get(ours, path).await;
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (400, message),
            "rnats {path}"
        );
        if let Some(theirs) = theirs {
            let resp = get(theirs, path).await;
            assert_eq!(
                (resp.status, resp.body.as_str()),
                (400, message),
                "reference {path}"
            );
        }
    }

    // Paging, sorting and cid, with the same results on both servers.
    let mut servers = vec![("rnats", ours)];
    servers.extend(theirs.map(|t| ("reference", t)));
    for (name, addr) in servers {
        let top = get(addr, "/connz?sort=msgs_to&limit=1").await.json();
        assert_eq!(
            (
                top["num_connections"].clone(),
                top["total"].clone(),
                top["limit"].clone()
            ),
            (1.into(), 3.into(), 1.into()),
            "{name}"
        );
        assert_eq!(top["connections"][0]["name"], "alice", "{name}");
        let from = get(addr, "/connz?sort=bytes_from").await.json();
        assert_eq!(from["connections"][0]["name"], "carol", "{name}");
        let subs = get(addr, "/connz?sort=subs").await.json();
        assert_eq!(subs["connections"][0]["name"], "alice", "{name}");
        let page = get(addr, "/connz?offset=1&limit=1").await.json();
        assert_eq!(page["connections"][0]["name"], "bob", "{name}");
        assert_eq!(page["offset"], 1, "{name}");
        let past = get(addr, "/connz?offset=10").await.json();
        assert_eq!(past["num_connections"], 0, "{name}");
        assert_eq!(past["connections"], serde_json::json!([]), "{name}");
        let bob_cid = get(addr, "/connz").await.json()["connections"][1]["cid"].clone();
        let one = get(addr, &format!("/connz?cid={bob_cid}")).await.json();
        assert_eq!(one["connections"][0]["name"], "bob", "{name}");
        assert_eq!(one["limit"], 1, "{name}");
        let by_reason = get(addr, "/connz?state=closed&sort=reason").await.json();
        assert_eq!(by_reason["connections"][0]["name"], "dave", "{name}");
        let tested = get(addr, "/subsz?subs=1&test=foo").await.json();
        assert_eq!(tested["total"], 2, "{name}");
        let limited = get(addr, "/subsz?subs=1&test=foo&limit=1").await.json();
        assert_eq!(items(&limited, "subscriptions_list").len(), 1, "{name}");
        let health = get(addr, "/healthz?stream=x").await;
        assert_eq!(health.status, 400, "{name}");
        assert_eq!(
            health.json(),
            serde_json::json!({"status": "error", "error": "\"account\" must not be empty when checking stream health"}),
            "{name}"
        );
        let missing = get(addr, "/nothing").await;
        assert_eq!(missing.status, 404, "{name}");
        let alias = get(addr, "/subscriptionsz").await;
        assert_eq!(alias.status, 200, "{name}");
        let index = get(addr, "/").await;
        assert!(index.body.contains("varz"), "{name}");
    }
}

#[tokio::test]
async fn metrics_in_prometheus_format() {
    let rnats = TestServer::rnats_with(monitored()).await;
    let _conns = scenario(&rnats).await;
    let resp = get(rnats.monitor.unwrap(), "/metrics").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.headers
    );
    let server_id = rnats.handle().shared.server_id.clone();
    let mut values = BTreeMap::new();
    let mut typed = BTreeSet::new();
    for line in resp.body.lines() {
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
        assert_eq!(labels, format!("server_id=\"{server_id}\"}}"), "{line}");
        assert!(typed.contains(name), "{name} has no TYPE line before it");
        values.insert(name.to_string(), value.parse::<f64>().expect("a number"));
    }
    for (name, expected) in [
        ("gnatsd_varz_connections", 3.0),
        ("gnatsd_varz_total_connections", 4.0),
        ("gnatsd_varz_subscriptions", 3.0),
        ("gnatsd_varz_in_msgs", 6.0),
        ("gnatsd_varz_out_msgs", 9.0),
        ("gnatsd_varz_in_bytes", 21.0),
        ("gnatsd_varz_out_bytes", 36.0),
        ("gnatsd_varz_slow_consumers", 0.0),
        ("gnatsd_varz_routes", 0.0),
        ("gnatsd_routez_num_routes", 0.0),
    ] {
        assert_eq!(
            values.get(name),
            Some(&expected),
            "{name} in\n{}",
            resp.body
        );
    }
}

#[tokio::test]
async fn closed_ring_is_bounded_and_monitor_is_optional() {
    let rnats = TestServer::rnats_with(Options {
        max_closed_clients: 2,
        ..monitored()
    })
    .await;
    let addr = rnats.monitor.unwrap();
    for i in 0..4 {
        let mut c =
            Raw::connect_with(rnats.addr, &format!(r#"{{"verbose":false,"name":"c{i}"}}"#)).await;
        c.ping_pong().await;
        drop(c);
        crate::harness::wait_until(|| rnats.handle().shared.num_clients() == 0).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let closed = get(addr, "/connz?state=closed").await.json();
        let names: Vec<String> = items(&closed, "connections")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        if names == ["c2", "c3"] {
            assert_eq!(closed["total"], 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed ring: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rnats.stop().await;
    // Shut down: the monitor port is closed with the server.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "monitor still listening"
    );

    let off = TestServer::rnats().await;
    assert_eq!(off.monitor, None, "monitoring is off by default");
}
