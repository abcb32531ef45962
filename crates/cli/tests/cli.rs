//! Drives the built `rnats` binary against rnats-server and the reference nats-server.
//! Every wait is bounded: a command that hangs is killed and the test fails.

#[path = "../../client/tests/it/pki.rs"]
mod pki;
#[path = "../../client/tests/it/support.rs"]
mod support;

mod common;

use common::{Bg, rnats, run};
use support::{Kind, ServerProc, kinds};

#[test]
fn pub_then_sub_count() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut sub = Bg::spawn(
            &mut rnats(&url, &["sub", "cli.>", "--count", "3", "--raw"]),
            None,
        );
        sub.wait_stderr("Subscribing on cli.>");
        let (status, _, err) = run(&url, &["pub", "cli.x", "n {{Count}}", "--count", "3"], None);
        assert!(status.success(), "{}: pub failed: {err:?}", srv.name());
        let (status, out, err) = sub.finish();
        assert!(status.success(), "{}: {err:?}", srv.name());
        assert_eq!(out, ["n 1", "n 2", "n 3"], "{}", srv.name());
    }
}

#[test]
fn pub_from_stdin_with_headers_and_queue_sub() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut sub = Bg::spawn(
            &mut rnats(
                &url,
                &["sub", "h.x", "--queue", "q1", "--count", "1", "--headers"],
            ),
            None,
        );
        sub.wait_stderr("Subscribing on h.x in group q1");
        let (status, _, err) = run(
            &url,
            &["pub", "h.x", "-H", "X-A:1", "-H", "X-B: two"],
            Some("from stdin"),
        );
        assert!(status.success(), "{err:?}");
        let (status, out, _) = sub.finish();
        assert!(status.success());
        assert_eq!(
            out,
            [
                "[#1] Received on \"h.x\"",
                "X-A: 1",
                "X-B: two",
                "",
                "from stdin",
                ""
            ],
            "{}",
            srv.name()
        );
    }
}

#[test]
fn req_reply() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut fixed = Bg::spawn(
            &mut rnats(&url, &["reply", "svc.fixed", "pong {{Count}}"]),
            None,
        );
        fixed.wait_stderr("Listening on \"svc.fixed\"");
        for i in 1..=2 {
            let (status, out, err) = run(&url, &["req", "svc.fixed", "ping", "--raw"], None);
            assert!(status.success(), "{}: {err:?}", srv.name());
            assert_eq!(out, [format!("pong {i}")]);
        }

        let mut echo = Bg::spawn(
            &mut rnats(&url, &["reply", "svc.echo", "--echo", "--count", "1"]),
            None,
        );
        echo.wait_stderr("Listening on");
        let (status, out, err) = run(&url, &["req", "svc.echo", "hello there"], None);
        assert!(status.success(), "{err:?}");
        assert_eq!(out, ["hello there"]);
        assert!(
            err.iter().any(|l| l.starts_with("Received with rtt")),
            "{err:?}"
        );
        assert!(echo.finish().0.success(), "reply exits after --count");

        let mut cmd = Bg::spawn(
            &mut rnats(
                &url,
                &[
                    "reply",
                    "svc.cmd",
                    "--command",
                    "tr a-z A-Z",
                    "--count",
                    "1",
                ],
            ),
            None,
        );
        cmd.wait_stderr("Listening on");
        let (status, out, _) = run(&url, &["req", "svc.cmd", "--raw"], Some("shout"));
        assert!(status.success());
        assert_eq!(out, ["SHOUT"]);
        assert!(cmd.finish().0.success());
    }
}

/// Failures exit with 1 and say, in one line, what to do.
#[test]
fn errors_are_one_line_and_exit_1() {
    let srv = ServerProc::start(Kind::Rnats);
    let url = srv.url();
    let (status, out, err) = run(&url, &["req", "nobody.home", "x"], None);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    let last = err.last().expect("an error line");
    assert!(
        last.starts_with("rnats: error: no responders on \"nobody.home\""),
        "{err:?}"
    );
    assert!(last.contains("rnats reply"), "says what to do: {last}");

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _, err) = run(
        &format!("nats://127.0.0.1:{dead}"),
        &["pub", "a", "b"],
        None,
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("--server or NATS_URL"), "{err:?}");

    let (status, _, err) = run(&url, &["--timeout", "300ms", "sub", "a b"], None);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.last().unwrap().contains("cannot subscribe to \"a b\""),
        "{err:?}"
    );

    let (status, _, _) = run(&url, &["pub"], None);
    assert_eq!(status.code(), Some(1), "usage errors exit 1");

    let (status, _, err) = run(&url, &["reply", "svc"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("--echo"), "{err:?}");

    let srv = ServerProc::start_with(Kind::Rnats, &["--user", "u", "--pass", "p"]);
    let (status, _, err) = run(&srv.url(), &["pub", "a", "b"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err[0].contains("--user/--password"), "{err:?}");
    let (status, _, err) = run(
        &srv.url(),
        &["--user", "u", "--password", "p", "pub", "a", "b"],
        None,
    );
    assert!(status.success(), "{err:?}");
}

#[test]
fn req_times_out_with_a_hint() {
    let srv = ServerProc::start(Kind::Rnats);
    let url = srv.url();
    // A subscriber that never answers: the request times out instead of "no responders".
    let mut silent = Bg::spawn(&mut rnats(&url, &["sub", "slow.svc"]), None);
    silent.wait_stderr("Subscribing on");
    let (status, _, err) = run(&url, &["--timeout", "300ms", "req", "slow.svc", "x"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("raise --timeout"), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// bench

fn json_of(out: &[String]) -> serde_json::Value {
    let text = out.join("\n");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

/// A valid SVG document: XML that parses, with an <svg> root in the SVG namespace.
fn assert_svg(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).expect("the SVG file was written");
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert!(root.attribute("width").is_some() && root.attribute("height").is_some());
    assert!(
        doc.descendants().any(|n| n.has_tag_name("rect")),
        "bars are drawn"
    );
}

#[test]
fn bench_pubsub_json_csv_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let name = srv.name();
        let csv = dir.path().join(format!("{name}.csv"));
        let svg = dir.path().join(format!("{name}.svg"));
        let (status, out, err) = run(
            &srv.url(),
            &[
                "bench",
                "cli.bench",
                "--pub",
                "2",
                "--sub",
                "2",
                "--msgs",
                "2001",
                "--size",
                "32",
                "--json",
                "--csv",
                csv.to_str().unwrap(),
                "--plot",
                svg.to_str().unwrap(),
            ],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        let j = json_of(&out);
        assert_eq!(j["mode"], "pubsub", "{name}: {j}");
        assert_eq!(
            (
                j["msgs"].as_u64(),
                j["published"].as_u64(),
                j["received"].as_u64()
            ),
            (Some(2001), Some(2001), Some(4002)),
            "{name}: --msgs is the total, every subscriber gets all: {j}"
        );
        assert_eq!(j["lost"], 0);
        assert_eq!(j["latency_us"], serde_json::Value::Null);
        let pubs = j["publishers"].as_array().unwrap();
        assert_eq!(
            pubs.iter()
                .map(|p| p["msgs"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1001, 1000],
            "{name}: the first publisher takes the remainder"
        );
        assert!(
            pubs.iter()
                .all(|p| p["msgs_per_sec"].as_f64().unwrap() > 0.0)
        );
        assert_eq!(j["subscribers"].as_array().unwrap().len(), 2);
        // The table goes to stderr with --json.
        let table = err.join("\n");
        for want in [
            "Starting Core NATS pub/sub benchmark",
            "NATS Pub/Sub stats:",
            "Msgs/sec",
            "pub 1",
            "pub 2",
            "sub 2",
            "sub (all)",
            " 4,002 ",
        ] {
            assert!(table.contains(want), "{name}: {want:?} in\n{table}");
        }
        let csv = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "#RunID, ClientID, MsgCount, MsgBytes, MsgsPerSec, BytesPerSec, DurationSecs"
        );
        assert_eq!(lines.len(), 5, "{csv}");
        let sub1: Vec<&str> = lines[3].split(',').collect();
        assert_eq!(
            (sub1[1], sub1[2], sub1[3]),
            ("sub-1", "2001", "64032"),
            "{csv}"
        );
        assert_svg(&svg);
    }
}

#[test]
fn bench_request_reply_latency() {
    let dir = tempfile::tempdir().unwrap();
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let name = srv.name();
        let svg = dir.path().join(format!("rr-{name}.svg"));
        let (status, out, err) = run(
            &srv.url(),
            &[
                "bench",
                "cli.rr",
                "--request",
                "--pub",
                "2",
                "--sub",
                "2",
                "--msgs",
                "400",
                "--size",
                "16",
                "--warmup",
                "10",
                "--plot",
                svg.to_str().unwrap(),
            ],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        let text = out.join("\n");
        for want in [
            "Starting Core NATS request/reply benchmark",
            "NATS Request/Reply stats:",
            "req 1",
            "req 2",
            "rep (all)",
            "Request/reply latency (HDR histogram)",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
        ] {
            assert!(text.contains(want), "{name}: {want:?} in\n{text}");
        }
        // The responders answered the 400 measured requests between them (warm-up excluded).
        let rep_all = out.iter().find(|l| l.contains("rep (all)")).unwrap();
        assert!(rep_all.contains(" 400 "), "{name}: {rep_all}");
        assert_svg(&svg);
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            svg_text.contains("latency by percentile"),
            "{name}: latency panel"
        );

        let (status, out, err) = run(
            &srv.url(),
            &[
                "bench",
                "cli.rr",
                "--request",
                "--sub",
                "1",
                "--msgs",
                "200",
                "--json",
            ],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        let j = json_of(&out);
        assert_eq!(j["mode"], "request");
        let l = &j["latency_us"];
        assert_eq!(l["count"], 200, "{name}: {j}");
        let (p50, p99, max) = (
            l["p50"].as_f64().unwrap(),
            l["p99"].as_f64().unwrap(),
            l["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{name}: {l}");
    }
}

#[test]
fn bench_pub_only_and_queue_group() {
    let srv = ServerProc::start(Kind::Rnats);
    let (status, out, err) = run(
        &srv.url(),
        &["bench", "cli.p", "--msgs", "5000", "--size", "1KB"],
        None,
    );
    assert!(status.success(), "{err:?}");
    let text = out.join("\n");
    assert!(text.contains("NATS Pub stats:"), "{text}");
    assert!(text.contains("size=1,024 B"), "{text}");
    assert!(text.contains("pub 1") && !text.contains("sub 1"), "{text}");

    let (status, out, err) = run(
        &srv.url(),
        &[
            "bench", "cli.q", "--sub", "3", "--queue", "workers", "--msgs", "3000", "--json",
        ],
        None,
    );
    assert!(status.success(), "{err:?}");
    let j = json_of(&out);
    assert_eq!(j["mode"], "queue");
    assert_eq!(j["received"], 3000, "each message once to the group: {j}");
    let per: u64 = j["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["msgs"].as_u64().unwrap())
        .sum();
    assert_eq!(per, 3000);
}

#[test]
fn bench_errors_say_what_to_do() {
    let srv = ServerProc::start(Kind::Rnats);
    let (status, _, err) = run(&srv.url(), &["bench", "x", "--request"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("--sub N"), "{err:?}");
    let (status, _, err) = run(&srv.url(), &["bench", "x", "--pub", "0"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("--pub"), "{err:?}");
    let (status, _, err) = run(&srv.url(), &["bench", "x", "--size", "1XB"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.join(" ").contains("size"), "{err:?}");

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _, err) = run(
        &format!("nats://127.0.0.1:{dead}"),
        &["bench", "x", "--msgs", "10"],
        None,
    );
    assert_eq!(status.code(), Some(1));
    let last = err.last().unwrap();
    assert!(
        last.starts_with("rnats: error: cannot run the benchmark") && last.contains("NATS_URL"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// server info / ping

#[test]
fn server_info_and_ping_read_varz() {
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &["-m", "-1", "--name", "cli-mon"]);
        let name = srv.name();
        let mport = srv.monitor_port.expect("monitor port logged").to_string();
        // Some traffic, so that the statistics move.
        let (status, _, _) = run(&srv.url(), &["pub", "mon.x", "hello"], None);
        assert!(status.success());

        let (status, out, err) = run(&srv.url(), &["server", "info", "-m", &mport], None);
        assert!(status.success(), "{name}: {err:?}");
        let text = out.join("\n");
        assert!(
            text.starts_with("Server information for cli-mon ("),
            "{name}: {text}"
        );
        for want in [
            "Version:",
            "Max Payload: 1.00 MiB",
            "Connections:",
            "Messages:",
        ] {
            assert!(text.contains(want), "{name}: {want:?} in\n{text}");
        }
        assert!(
            text.contains(&format!("Host: 127.0.0.1:{}", srv.port)),
            "{name}: {text}"
        );

        let url = format!("http://127.0.0.1:{mport}");
        let (status, out, err) = run(
            &srv.url(),
            &["server", "info", "--monitor", &url, "--json"],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        let j = json_of(&out);
        assert_eq!(j["server_name"], "cli-mon", "{name}");
        assert_eq!(j["port"].as_u64(), Some(u64::from(srv.port)));
        assert!(j["in_msgs"].as_u64().unwrap() >= 1, "{name}: {j}");

        let (status, out, err) = run(
            &srv.url(),
            &[
                "server",
                "ping",
                "-m",
                &mport,
                "--count",
                "2",
                "--interval",
                "50ms",
            ],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        assert_eq!(
            out.iter().filter(|l| l.starts_with("cli-mon (")).count(),
            2,
            "{name}: {out:?}"
        );
        assert!(
            out.iter().any(|l| l.starts_with("2 replies, 0 failed")),
            "{name}: {out:?}"
        );
    }

    // No monitoring port: the server's INFO, and a note that says how to point at it.
    let srv = ServerProc::start(Kind::Rnats);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let (status, out, err) = run(&srv.url(), &["server", "info", "-m", &dead], None);
    assert_eq!(status.code(), Some(0));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("-m PORT"), "{err:?}");
    assert!(out[0].ends_with("(from INFO)"), "{out:?}");
    let (status, out, _) = run(&srv.url(), &["server", "ping", "-m", &dead], None);
    assert_eq!(status.code(), Some(1));
    assert!(out.iter().any(|l| l.contains("failed")), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// TLS, nkeys, creds

#[test]
fn tls_flags_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki::make_pki(dir.path());
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (s(&p.ca), s(&p.client_cert), s(&p.client_key));
    let server_args = [
        "--tlsverify".to_string(),
        "--tlscert".into(),
        s(&p.cert),
        "--tlskey".into(),
        s(&p.key),
        "--tlscacert".into(),
        s(&p.ca),
    ];
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &server_args);
        let name = srv.name();
        let url = srv.url();
        let tls = [
            "--tlsca",
            ca.as_str(),
            "--tlscert",
            cert.as_str(),
            "--tlskey",
            key.as_str(),
        ];
        let mut sub_args = tls.to_vec();
        sub_args.extend(["sub", "tls.x", "--count", "1", "--raw"]);
        let mut sub = Bg::spawn(&mut rnats(&url, &sub_args), None);
        sub.wait_stderr("Subscribing on tls.x");
        let mut pub_args = tls.to_vec();
        pub_args.extend(["pub", "tls.x", "secret"]);
        let (status, _, err) = run(&url, &pub_args, None);
        assert!(status.success(), "{name}: {err:?}");
        let (status, out, _) = sub.finish();
        assert!(status.success());
        assert_eq!(out, ["secret"], "{name}");

        // The bench engine connects through rnats-client's TLS handshake.
        let mut bench_args = tls.to_vec();
        bench_args.extend(["bench", "tls.b", "--sub", "1", "--msgs", "500", "--json"]);
        let (status, out, err) = run(&url, &bench_args, None);
        assert!(status.success(), "{name}: {err:?}");
        assert_eq!(json_of(&out)["received"], 500, "{name}");

        // Without the client certificate, or without the CA: exit 1 and a hint.
        let (status, _, err) = run(&url, &["--tlsca", &ca, "pub", "tls.x", "y"], None);
        assert_eq!(status.code(), Some(1), "{name}");
        assert!(
            err.last()
                .unwrap()
                .starts_with("rnats: error: cannot connect"),
            "{err:?}"
        );
        let (status, _, err) = run(&url, &["pub", "tls.x", "y"], None);
        assert_eq!(status.code(), Some(1), "{name}");
        assert!(err.last().unwrap().contains("--tlsca"), "{name}: {err:?}");
        let (status, _, err) = run(&url, &["--tlscert", &cert, "pub", "tls.x", "y"], None);
        assert_eq!(status.code(), Some(1));
        assert!(err.last().unwrap().contains("--tlskey"), "{err:?}");
    }
}

#[test]
fn nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let kp = nkeys::KeyPair::new_user();
    let conf = pki::write(
        dir.path(),
        "nkey.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            kp.public_key()
        ),
    );
    let seed = pki::write(dir.path(), "user.nk", &format!("{}\n", kp.seed().unwrap()));
    let other = pki::write(
        dir.path(),
        "other.nk",
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );
    let (seed, other) = (seed.to_str().unwrap(), other.to_str().unwrap());
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &["-c", conf.to_str().unwrap()]);
        let name = srv.name();
        let (status, _, err) = run(&srv.url(), &["--nkey", seed, "pub", "nk.x", "y"], None);
        assert!(status.success(), "{name}: {err:?}");
        let (status, out, err) = run(
            &srv.url(),
            &[
                "--nkey", seed, "bench", "nk.b", "--sub", "1", "--msgs", "100", "--json",
            ],
            None,
        );
        assert!(status.success(), "{name}: {err:?}");
        assert_eq!(json_of(&out)["received"], 100, "{name}");

        let (status, _, err) = run(&srv.url(), &["--nkey", other, "pub", "nk.x", "y"], None);
        assert_eq!(status.code(), Some(1), "{name}");
        assert!(
            err.last().unwrap().contains("--creds or --nkey"),
            "{name}: {err:?}"
        );
        let missing = dir.path().join("missing.nk");
        let (status, _, err) = run(
            &srv.url(),
            &["--nkey", missing.to_str().unwrap(), "pub", "nk.x", "y"],
            None,
        );
        assert_eq!(status.code(), Some(1));
        assert!(
            err.last()
                .unwrap()
                .contains("cannot read the nkey seed file"),
            "{err:?}"
        );
    }
}

#[test]
fn creds_file_against_the_reference() {
    if support::reference_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (conf, creds) = pki::operator_setup(dir.path());
    let creds = pki::write(dir.path(), "user.creds", &creds);
    let creds = creds.to_str().unwrap();
    let srv = ServerProc::start_with(Kind::Reference, &["-c", conf.to_str().unwrap()]);
    let url = srv.url();
    let mut reply = Bg::spawn(
        &mut rnats(
            &url,
            &[
                "--creds",
                creds,
                "reply",
                "jwt.svc",
                "ok {{Count}}",
                "--count",
                "1",
            ],
        ),
        None,
    );
    reply.wait_stderr("Listening on");
    let (status, out, err) = run(
        &url,
        &["--creds", creds, "req", "jwt.svc", "hi", "--raw"],
        None,
    );
    assert!(status.success(), "{err:?}");
    assert_eq!(out, ["ok 1"]);
    assert!(reply.finish().0.success());

    let (status, out, err) = run(
        &url,
        &[
            "--creds", creds, "bench", "jwt.b", "--sub", "1", "--msgs", "100", "--json",
        ],
        None,
    );
    assert!(status.success(), "{err:?}");
    assert_eq!(json_of(&out)["received"], 100);

    let (status, _, err) = run(&url, &["pub", "jwt.x", "y"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("--creds or --nkey"), "{err:?}");
}

/// `rnats stan pub|sub` against an in-process rnats-streaming-server: publish with templates
/// and from stdin, replay from the start, a durable that resumes where it was (same client
/// ID), a start sequence, the last message, and a one-line error for an unknown cluster.
#[test]
fn stan_pub_and_sub() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let mut opts = rnats_streaming_server::Options::default();
        opts.nats.host = "127.0.0.1".into();
        opts.nats.port = -1;
        rnats_streaming_server::start(opts)
            .await
            .expect("streaming server starts")
    });
    let url = server.nats_url().to_string();

    let (st, _, err) = run(
        &url,
        &["stan", "pub", "orders", "order {{Count}}", "--count", "3"],
        None,
    );
    assert!(st.success(), "{err:?}");
    assert_eq!(err, ["Published 3 messages to \"orders\""]);
    let (st, _, err) = run(&url, &["stan", "pub", "orders"], Some("from stdin"));
    assert!(st.success(), "{err:?}");
    assert_eq!(err, ["Published 10 bytes to \"orders\""]);

    let (st, out, _) = run(
        &url,
        &["stan", "sub", "orders", "--all", "--count", "4"],
        None,
    );
    assert!(st.success());
    assert_eq!(out[0], "[#1] Received on \"orders\" (sequence 1)");
    assert_eq!(out[1], "order 1");
    assert_eq!(out.iter().filter(|l| l.starts_with("[#")).count(), 4);

    let durable = [
        "stan",
        "--client-id",
        "reader",
        "sub",
        "orders",
        "--all",
        "--durable",
        "d",
        "--raw",
        "--count",
        "2",
    ];
    let (st, out, _) = run(&url, &durable, None);
    assert!(st.success());
    assert_eq!(out, ["order 1", "order 2"]);
    // Resumed with the same client ID: the next two, not the first ones again.
    let (st, out, _) = run(&url, &durable, None);
    assert!(st.success());
    assert_eq!(out, ["order 3", "from stdin"]);

    let (_, out, _) = run(
        &url,
        &[
            "stan", "sub", "orders", "--seq", "2", "--count", "1", "--raw",
        ],
        None,
    );
    assert_eq!(out, ["order 2"]);
    let (_, out, _) = run(
        &url,
        &["stan", "sub", "orders", "--last", "--count", "1", "--raw"],
        None,
    );
    assert_eq!(out, ["from stdin"]);

    let (st, _, err) = run(
        &url,
        &[
            "stan",
            "--cluster",
            "nope",
            "--timeout",
            "500ms",
            "pub",
            "x",
            "y",
        ],
        None,
    );
    assert_eq!(st.code(), Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("cannot connect to streaming cluster \"nope\""),
        "{err:?}"
    );
    rt.block_on(server.shutdown());
}
