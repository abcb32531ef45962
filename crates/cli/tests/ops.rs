//! What an operator runs into with the CLI: errors the server reports reach the user (exit
//! status 1 and the server's `-ERR`), durable streaming subscribers resume without a client
//! ID, `server info` without a monitoring port. Against rnats-server and, when installed,
//! the reference nats-server.

#[path = "../../client/tests/it/pki.rs"]
mod pki;
#[path = "../../client/tests/it/support.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use common::run;
use support::{ServerProc, kinds};

const CONF: &str = r#"
authorization {
  users = [
    {user: app, password: secret, permissions: {publish: {allow: ["ok.>", "_INBOX.>"]}, subscribe: {allow: ["ok.>", "_INBOX.>"]}}}
  ]
}
"#;

#[test]
fn server_refusals_print_the_err_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let conf = pki::write(dir.path(), "auth.conf", CONF);
    for kind in kinds() {
        let server = ServerProc::start_with(kind, &["-c", conf.to_str().unwrap()]);
        let url = server.url();
        let who = ["--user", "app", "--password", "secret"];
        let with = |args: &[&str]| -> Vec<String> {
            who.iter().chain(args).map(|s| s.to_string()).collect()
        };
        let run_as = |args: &[&str]| {
            let v = with(args);
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            let started = Instant::now();
            let r = run(&url, &v, None);
            (r, started.elapsed())
        };

        let ((st, _, err), _) = run_as(&["pub", "ok.x", "fine"]);
        assert!(st.success(), "{kind:?}: {err:?}");
        assert_eq!(err, ["Published 4 bytes to \"ok.x\""]);

        let ((st, _, err), _) = run_as(&["pub", "nope", "hi"]);
        assert_eq!(st.code(), Some(1), "{kind:?} pub refused: {err:?}");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with(
                "rnats: error: the server refused the publish to \"nope\": -ERR 'Permissions Violation for Publish to \"nope\"'"
            ),
            "{kind:?}: {err:?}"
        );

        // A refused subscription ends the command at once instead of waiting for messages.
        let ((st, _, err), took) = run_as(&["sub", "secret.x"]);
        assert_eq!(st.code(), Some(1), "{kind:?} sub refused: {err:?}");
        assert!(
            err.last()
                .unwrap()
                .contains("-ERR 'Permissions Violation for Subscription to \"secret.x\"'"),
            "{kind:?}: {err:?}"
        );
        assert!(took < Duration::from_secs(4), "sub took {took:?}");

        // A refused request says so before its timeout would.
        let ((st, _, err), took) = run_as(&["req", "nope", "q", "--timeout", "8s"]);
        assert_eq!(st.code(), Some(1), "{kind:?} req refused: {err:?}");
        assert!(
            err.last()
                .unwrap()
                .contains("-ERR 'Permissions Violation for Publish to \"nope\"'"),
            "{kind:?}: {err:?}"
        );
        assert!(took < Duration::from_secs(6), "req took {took:?}");
    }
}

#[test]
fn server_info_without_monitoring_falls_back_to_info() {
    let server = ServerProc::start(support::Kind::Rnats);
    // Port 1: nothing listens there.
    let (st, out, err) = run(
        &server.url(),
        &["server", "info", "--monitor", "http://127.0.0.1:1"],
        None,
    );
    assert!(st.success(), "{err:?}");
    assert!(
        out[0].starts_with("Server information for ") && out[0].ends_with("(from INFO)"),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.contains("Max Payload: 1.00 MiB")),
        "{out:?}"
    );
    let note = err.join(" ");
    assert!(
        note.contains("No monitoring endpoint at http://127.0.0.1:1/varz")
            && note.contains("start the server with -m 8222"),
        "{note}"
    );

    // Nothing at all to talk to: one line that names both attempts.
    server_gone_too();
}

fn server_gone_too() {
    let (st, _, err) = run(
        "nats://127.0.0.1:1",
        &[
            "server",
            "info",
            "--monitor",
            "http://127.0.0.1:1",
            "--timeout",
            "1s",
        ],
        None,
    );
    assert_eq!(st.code(), Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("http://127.0.0.1:1/varz") && err[0].contains("nats://127.0.0.1:1"),
        "{err:?}"
    );
}

#[test]
fn stan_durable_resumes_without_a_client_id() {
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
        &["stan", "pub", "orders", "order {{Count}}", "--count", "4"],
        None,
    );
    assert!(st.success(), "{err:?}");
    let durable = [
        "stan",
        "sub",
        "orders",
        "--all",
        "--durable",
        "d",
        "--raw",
        "--count",
        "2",
    ];
    let (st, out, err) = run(&url, &durable, None);
    assert!(st.success(), "{err:?}");
    assert_eq!(out, ["order 1", "order 2"]);
    let (st, out, err) = run(&url, &durable, None);
    assert!(st.success(), "{err:?}");
    assert_eq!(
        out,
        ["order 3", "order 4"],
        "resumed where the first run stopped"
    );
    rt.block_on(server.shutdown());
}
