//! HTTP monitoring: the same scenario against rnats and the reference nats-server, then
//! every endpoint's field names and JSON types compared, plus rnats's own values checked.

use std::collections::BTreeMap;
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
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
}

impl HttpResponse {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A tiny HTTP/1.1 GET over a fresh connection (handles chunked bodies).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
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
pub(crate) async fn scenario(server: &TestServer) -> Vec<Raw> {
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

pub(crate) fn monitored() -> Options {
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

// ---------------------------------------------------------------------------------------
// Clusters: /routez, the /varz cluster block, route counters and /metrics route series.

const CLUSTER_ENDPOINTS: &[&str] = &["/varz", "/routez", "/routez?subs=1", "/routez?subs=detail"];

/// An rnats node with monitoring, in cluster `mon`, dialing `routes`.
async fn monitored_node(name: &str, routes: Vec<String>) -> TestServer {
    let mut opts = monitored();
    opts.server_name = Some(name.into());
    opts.cluster = Some(rnats_server::options::ClusterOptions {
        name: Some("mon".into()),
        host: "127.0.0.1".into(),
        port: 0,
        routes,
        ..Default::default()
    });
    TestServer::rnats_with(opts).await
}

/// An rnats node's route listener.
fn cluster_addr(node: &TestServer) -> SocketAddr {
    node.handle().shared.cluster.as_ref().unwrap().listen_addr
}

/// Polls `path` on a monitor until `cond` holds for its JSON, for at most `WAIT`.
async fn wait_json(server: &TestServer, path: &str, what: &str, cond: impl Fn(&Value) -> bool) {
    let monitor = server.monitor.expect("monitoring on");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = get(monitor, path).await.json();
        if cond(&body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {what} never happened; last {path}: {body}",
            server.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether some route of a `/routez?subs=1` body has learned `subject`.
fn route_knows(routez: &Value, subject: &str) -> bool {
    items(routez, "routes")
        .iter()
        .any(|r| items(r, "subscriptions_list").iter().any(|s| *s == subject))
}

/// The cluster scenario on a and b (b dials a): `sub-a` subscribes `foo` and `jobs` in queue
/// group `workers` on a, `sub-b` subscribes `foo` on b; `pub-a` publishes 3 `foo` on a and
/// `pub-b` 2 on b, so every `foo` reaches both subscribers. Returns the live connections.
async fn cluster_scenario(a: &TestServer, b: &TestServer) -> Vec<Raw> {
    let connect = |name: &str| format!(r#"{{"verbose":false,"pedantic":false,"name":"{name}"}}"#);
    wait_json(a, "/routez", "a route to b", |z| {
        z["num_routes"].as_u64() >= Some(1)
    })
    .await;
    wait_json(b, "/routez", "a route to a", |z| {
        z["num_routes"].as_u64() >= Some(1)
    })
    .await;
    let mut sub_a = Raw::connect_with(a.addr, &connect("sub-a")).await;
    sub_a.send(b"SUB foo 1\r\nSUB jobs workers 2\r\n").await;
    sub_a.ping_pong().await;
    let mut sub_b = Raw::connect_with(b.addr, &connect("sub-b")).await;
    sub_b.send(b"SUB foo 1\r\n").await;
    sub_b.ping_pong().await;
    wait_json(a, "/routez?subs=1", "foo learned from b", |z| {
        route_knows(z, "foo")
    })
    .await;
    wait_json(b, "/routez?subs=1", "foo and jobs learned from a", |z| {
        route_knows(z, "foo") && route_knows(z, "jobs")
    })
    .await;
    let mut pub_a = Raw::connect_with(a.addr, &connect("pub-a")).await;
    pub_a.send(&b"PUB foo 5\r\nhello\r\n".repeat(3)).await;
    pub_a.ping_pong().await;
    let mut pub_b = Raw::connect_with(b.addr, &connect("pub-b")).await;
    pub_b.send(&b"PUB foo 2\r\nhi\r\n".repeat(2)).await;
    pub_b.ping_pong().await;
    for sub in [&mut sub_a, &mut sub_b] {
        for _ in 0..5 {
            sub.msg().await;
        }
    }
    vec![sub_a, sub_b, pub_a, pub_b]
}

async fn bodies(server: &TestServer, paths: &[&'static str]) -> BTreeMap<&'static str, Value> {
    let monitor = server.monitor.expect("monitoring on");
    let mut out = BTreeMap::new();
    for path in paths {
        let resp = get(monitor, path).await;
        assert_eq!(resp.status, 200, "{} {path}: {}", server.name(), resp.body);
        out.insert(*path, resp.json());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_endpoints_match_reference_shapes() {
    let a = monitored_node("A", Vec::new()).await;
    let b = monitored_node("B", vec![format!("nats-route://{}", cluster_addr(&a))]).await;
    let _conns = cluster_scenario(&a, &b).await;
    let ours_a = bodies(&a, CLUSTER_ENDPOINTS).await;
    let ours_b = bodies(&b, CLUSTER_ENDPOINTS).await;
    check_rnats_cluster_values(&a, &b, &ours_a, &ours_b).await;

    // The reference: a listens on a free cluster port, b dials it. (The port is picked here:
    // the reference's /varz keeps showing `-1` for a random port if asked before it binds.)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster_a = format!("nats://127.0.0.1:{port}");
    let args = |name, cluster| {
        vec![
            "-m",
            "-1",
            "-n",
            name,
            "--cluster",
            cluster,
            "--cluster_name",
            "mon",
        ]
    };
    let Some(ref_a) = TestServer::reference(&args("A", &cluster_a)) else {
        return;
    };
    let mut args_b = args("B", "nats://127.0.0.1:-1");
    args_b.extend(["--routes", &cluster_a]);
    let ref_b = TestServer::reference(&args_b).expect("reference b");
    let _ref_conns = cluster_scenario(&ref_a, &ref_b).await;
    let theirs_a = bodies(&ref_a, CLUSTER_ENDPOINTS).await;
    let theirs_b = bodies(&ref_b, CLUSTER_ENDPOINTS).await;

    let mut diffs = Vec::new();
    for (node, ours, theirs) in [("a", &ours_a, &theirs_a), ("b", &ours_b, &theirs_b)] {
        for path in CLUSTER_ENDPOINTS {
            let our_shapes: BTreeMap<_, _> = shapes(path, &ours[path]).into_iter().collect();
            for (what, their_shape) in shapes(path, &theirs[path]) {
                let empty = BTreeMap::new();
                let our_shape = our_shapes.get(&what).unwrap_or(&empty);
                let key = what.split([' ', '?']).next().unwrap_or_default();
                diffs.extend(
                    compare(key, our_shape, &their_shape)
                        .into_iter()
                        .map(|d| format!("node {node} {what}: {d}")),
                );
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "fields differ from the reference:\n{}",
        diffs.join("\n")
    );
    // The reference agrees on the values rnats is checked for that do not depend on pooling.
    assert_eq!(
        theirs_b["/varz"]["cluster"]["urls"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
    assert_eq!(theirs_a["/varz"]["remotes"], 1);
    assert_eq!(theirs_a["/varz"]["in_client_msgs"], 3);
    assert_eq!(theirs_a["/varz"]["out_client_msgs"], 5);
}

async fn check_rnats_cluster_values(
    a: &TestServer,
    b: &TestServer,
    ours_a: &BTreeMap<&str, Value>,
    ours_b: &BTreeMap<&str, Value>,
) {
    let a_cluster_port = cluster_addr(a).port();
    let b_cluster_port = cluster_addr(b).port();

    // /varz: the cluster block, route counts, connect_urls, and totals with route traffic.
    let va = &ours_a["/varz"];
    let vb = &ours_b["/varz"];
    assert_eq!(
        va["cluster"],
        serde_json::json!({"name": "mon", "addr": "127.0.0.1", "cluster_port": a_cluster_port,
            "auth_timeout": 5, "tls_timeout": 2, "pool_size": -1})
    );
    assert_eq!(vb["cluster"]["cluster_port"], b_cluster_port);
    assert_eq!(
        vb["cluster"]["urls"],
        serde_json::json!([format!("127.0.0.1:{a_cluster_port}")])
    );
    for v in [va, vb] {
        assert_eq!(
            (v["routes"].clone(), v["remotes"].clone()),
            (1.into(), 1.into())
        );
        assert_eq!(v["connections"], 2, "routes are not client connections");
        let mut urls: Vec<&str> = items(v, "connect_urls")
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        urls.sort();
        let mut expected = [a.addr.to_string(), b.addr.to_string()];
        expected.sort();
        assert_eq!(urls, expected);
    }
    // a: 3 from pub-a + 2 over the route in; 5 to sub-a + 3 over the route out.
    assert_eq!(
        (va["in_msgs"].clone(), va["in_client_msgs"].clone()),
        (5.into(), 3.into())
    );
    assert_eq!(
        (va["out_msgs"].clone(), va["out_client_msgs"].clone()),
        (8.into(), 5.into())
    );
    assert_eq!(
        (va["in_bytes"].clone(), va["in_client_bytes"].clone()),
        (19.into(), 15.into())
    );
    assert_eq!(
        (va["out_bytes"].clone(), va["out_client_bytes"].clone()),
        (34.into(), 19.into())
    );
    // b: 2 from pub-b + 3 over the route in; 5 to sub-b + 2 over the route out.
    assert_eq!(
        (vb["in_msgs"].clone(), vb["in_client_msgs"].clone()),
        (5.into(), 2.into())
    );
    assert_eq!(
        (vb["out_msgs"].clone(), vb["out_client_msgs"].clone()),
        (7.into(), 5.into())
    );
    // Route-learned subscriptions count too: a has its 2 and b's foo.
    assert_eq!(va["subscriptions"], 3);

    // /routez: one route each way, with its counters and learned subscriptions.
    let ra = &ours_a["/routez?subs=1"];
    let rb = &ours_b["/routez?subs=detail"];
    assert_eq!(
        (ra["num_routes"].clone(), rb["num_routes"].clone()),
        (1.into(), 1.into())
    );
    let (route_a, route_b) = (&ra["routes"][0], &rb["routes"][0]);
    assert_eq!(route_a["remote_id"], vb["server_id"]);
    assert_eq!(route_a["remote_name"], "B");
    assert_eq!(route_b["remote_name"], "A");
    assert_eq!(
        (
            route_a["did_solicit"].clone(),
            route_a["is_configured"].clone()
        ),
        (false.into(), false.into())
    );
    assert_eq!(
        (
            route_b["did_solicit"].clone(),
            route_b["is_configured"].clone()
        ),
        (true.into(), true.into())
    );
    assert_eq!(route_b["port"], a_cluster_port, "b dialed a's route port");
    assert_eq!(route_a["ip"], "127.0.0.1");
    assert_eq!(
        (route_a["out_msgs"].clone(), route_a["in_msgs"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(
        (route_a["out_bytes"].clone(), route_a["in_bytes"].clone()),
        (15.into(), 4.into())
    );
    assert_eq!(
        (route_b["out_msgs"].clone(), route_b["in_msgs"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(route_a["subscriptions"], 1);
    assert_eq!(route_a["subscriptions_list"], serde_json::json!(["foo"]));
    assert!(route_a.get("subscriptions_list_detail").is_none());
    assert_eq!(route_b["subscriptions"], 2);
    assert!(route_b.get("subscriptions_list").is_none());
    let detail = items(route_b, "subscriptions_list_detail");
    let jobs = detail
        .iter()
        .find(|d| d["subject"] == "jobs")
        .expect("jobs in detail");
    assert_eq!(jobs["qgroup"], "workers");
    assert_eq!(jobs["sid"], "R $G jobs workers");
    assert_eq!(jobs["cid"], route_b["rid"]);
    assert!(route_a["start"].as_str().unwrap().ends_with('Z'));
    assert!(route_a["rtt"].is_string() && route_a["uptime"].is_string());
    assert_eq!(route_a["compression"], "off");
    assert!(
        ours_a["/routez"]["routes"][0]
            .get("subscriptions_list")
            .is_none()
    );

    // /metrics: the route count and per-route series.
    let metrics = get(a.monitor.unwrap(), "/metrics").await.body;
    let rid = route_a["rid"].as_u64().unwrap();
    let server_id = va["server_id"].as_str().unwrap();
    for line in [
        format!("gnatsd_varz_routes{{server_id=\"{server_id}\"}} 1"),
        format!("gnatsd_routez_num_routes{{server_id=\"{server_id}\"}} 1"),
        format!("gnatsd_routez_route_out_msgs{{server_id=\"{server_id}\",rid=\"{rid}\"}} 3"),
        format!("gnatsd_routez_route_in_msgs{{server_id=\"{server_id}\",rid=\"{rid}\"}} 2"),
        format!("gnatsd_routez_route_out_bytes{{server_id=\"{server_id}\",rid=\"{rid}\"}} 15"),
        format!("gnatsd_routez_route_subscriptions{{server_id=\"{server_id}\",rid=\"{rid}\"}} 1"),
        format!("gnatsd_varz_in_msgs{{server_id=\"{server_id}\"}} 5"),
        format!("gnatsd_varz_out_msgs{{server_id=\"{server_id}\"}} 8"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    let info = metrics
        .lines()
        .find(|l| l.starts_with("gnatsd_routez_route_info{"))
        .expect("route_info series");
    assert!(
        info.contains(&format!(
            "remote_id=\"{}\"",
            vb["server_id"].as_str().unwrap()
        )) && info.contains("remote_name=\"B\"")
            && info.ends_with(" 1"),
        "{info}"
    );
    assert!(metrics.contains("gnatsd_routez_route_rtt_seconds{"));
}

/// Counters stay monotonic when a route goes away: its traffic moves to the closed totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_traffic_survives_route_close() {
    let a = monitored_node("A", Vec::new()).await;
    let b = monitored_node("B", vec![format!("nats-route://{}", cluster_addr(&a))]).await;
    let conns = cluster_scenario(&a, &b).await;
    drop(conns);
    let monitor = a.monitor.unwrap();
    let before = get(monitor, "/varz").await.json();
    b.stop().await;
    wait_json(&a, "/routez", "the route to b closing", |z| {
        z["num_routes"] == 0
    })
    .await;
    let after = get(monitor, "/varz").await.json();
    assert_eq!(after["routes"], 0);
    for field in ["in_msgs", "out_msgs", "in_bytes", "out_bytes"] {
        assert!(
            after[field].as_u64() >= before[field].as_u64(),
            "{field} went down: {} -> {}",
            before[field],
            after[field]
        );
    }
    assert_eq!(after["in_msgs"], 5);
    assert_eq!(after["out_msgs"], 8);
}

// ---------------------------------------------------------------------------------------
// The live status page at `/`, driven by headless Chromium.

/// Debian's chromium: `CHROMIUM_BIN`, else `/usr/bin/chromium`, else `chromium` on PATH.
fn chromium_bin() -> Option<std::path::PathBuf> {
    if let Ok(bin) = std::env::var("CHROMIUM_BIN") {
        return Some(bin.into());
    }
    let usr = std::path::PathBuf::from("/usr/bin/chromium");
    if usr.exists() {
        return Some(usr);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.exists())
    })
}

/// The element with `id` in a dumped DOM: its `data-value` attribute and its text.
fn element<'a>(dom: &'a str, id: &str) -> (Option<&'a str>, &'a str) {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let tag_end = start + dom[start..].find('>').expect("end of tag");
    let attrs = &dom[start..tag_end];
    let value = attrs
        .split("data-value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next());
    let text_end = tag_end + dom[tag_end..].find('<').expect("end of text");
    (value, &dom[tag_end + 1..text_end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let Some(chromium) = chromium_bin() else {
        assert!(
            std::env::var("RNATS_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "RNATS_REQUIRE_CHROMIUM=1 but no chromium: apt-get install chromium"
        );
        eprintln!("chromium not installed: status page test skipped");
        return;
    };
    let rnats = TestServer::rnats_with(monitored()).await;
    let monitor = rnats.monitor.unwrap();
    let _conns = scenario(&rnats).await;

    // The page itself: HTML, the endpoint links kept, the script inline.
    let page = get(monitor, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    for link in [
        "./varz",
        "./connz",
        "./subsz",
        "./routez",
        "./healthz",
        "./metrics",
    ] {
        assert!(
            page.body.contains(&format!("href=\"{link}\"")),
            "link {link}"
        );
    }

    // Traffic while the browser watches: a connection publishing to itself, bounded in time.
    let mut flood = TcpStream::connect(rnats.addr).await.unwrap();
    flood
        .write_all(b"CONNECT {\"verbose\":false,\"name\":\"flood\"}\r\nSUB flood 1\r\nPING\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = flood.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let publish = tokio::spawn(async move {
        let batch = b"PUB flood 5\r\nhello\r\n".repeat(20);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if writer.write_all(&batch).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let monitor_json = |path: &'static str| async move { get(monitor, path).await.json() };
    let deadline = tokio::time::Instant::now() + WAIT;
    while monitor_json("/varz").await["connections"] != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flood never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The chart's past: the server samples its totals once a second; wait for a few.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = get(monitor, "/").await.body;
        if page.matches("\"t\":").count() >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rate samples in the page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{monitor}/");
    let mut cmd = std::process::Command::new(&chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(["--virtual-time-budget=5000", "--dump-dom", url.as_str()])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("chromium starts");
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = match timeout(Duration::from_secs(90), waited).await {
        Ok(done) => done.unwrap().expect("chromium output"),
        Err(_) => {
            // Bounded: kill the browser we started (by its pid) and fail.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("chromium did not finish within 90 s");
        }
    };
    // A screenshot too: the page renders to a real image (kept for a look).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rnats-status.png");
    let status = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("shot").display()
        ))
        .args(["--virtual-time-budget=3000", "--window-size=1280,1600"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("chromium screenshot");
    assert!(status.success(), "screenshot: {status}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    publish.abort();
    drain.abort();
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && dom.contains("id=\"status\""),
        "chromium failed ({}):\n{stderr}\n{dom}",
        output.status
    );

    // Polled more than once (rates need two samples), and live.
    let status_start = dom.find("id=\"status\"").unwrap();
    let status_tag = &dom[status_start..status_start + dom[status_start..].find('>').unwrap()];
    let polls: u32 = status_tag
        .split("data-polls=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 2, "page polled {polls} times: {status_tag}\n{dom}");
    assert!(status_tag.contains("live"), "{status_tag}");

    let (connections, text) = element(&dom, "connections");
    assert_eq!((connections, text), (Some("4"), "4"), "connections");
    let (total, _) = element(&dom, "total-connections");
    assert_eq!(total, Some("5"), "4 open and dave");
    let (in_msgs, _) = element(&dom, "in-msgs");
    let in_msgs: u64 = in_msgs.unwrap().parse().unwrap();
    assert!(in_msgs > 6, "the flood's messages counted: {in_msgs}");
    for id in [
        "in-msgs-rate",
        "out-msgs-rate",
        "in-bytes-rate",
        "out-bytes-rate",
    ] {
        let (value, text) = element(&dom, id);
        let rate: f64 = value
            .unwrap_or_else(|| panic!("#{id} not filled by the script: {text}"))
            .parse()
            .unwrap_or_else(|e| panic!("#{id}: {e}"));
        assert!(rate >= 0.0 && rate.is_finite(), "#{id} = {rate}");
        assert!(!text.is_empty() && text != "–", "#{id} shows {text:?}");
        eprintln!("status page #{id}: {text} ({rate})");
    }
    assert_eq!(element(&dom, "routes").0, Some("0"));
    assert_eq!(element(&dom, "slow-consumers").0, Some("0"));
    // The connections table was filled from /connz: the named clients are listed, with
    // their round-trip time and user columns.
    for name in ["alice", "bob", "carol", "flood"] {
        assert!(
            dom.contains(&format!("<td class=\"text\">{name}</td>")),
            "{name} in the table"
        );
    }
    for header in ["<th class=\"text\">user</th>", "<th>rtt</th>"] {
        assert!(dom.contains(header), "{header}");
    }
    assert!(
        dom.contains("µs</td>") || dom.contains("ms</td>"),
        "an rtt filled in:\n{dom}"
    );
    // The subscriptions view, from /subsz.
    let subs_at = dom.find("id=\"sub-table\"").expect("subscriptions table");
    let subs = &dom[subs_at..];
    for cell in ["foo", "bar.*", "q", "flood"] {
        assert!(
            subs.contains(&format!("<td class=\"text\">{cell}</td>")),
            "{cell} in the subscriptions table"
        );
    }
    // The chart started with the server's past, not empty.
    let chart_at = dom.find("id=\"chart\"").expect("chart");
    let chart_tag = &dom[chart_at..chart_at + dom[chart_at..].find('>').unwrap()];
    let attr = |name: &str| -> u32 {
        chart_tag
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(attr("data-prefilled") >= 3, "{chart_tag}");
    assert!(attr("data-points") >= attr("data-prefilled"), "{chart_tag}");
}
