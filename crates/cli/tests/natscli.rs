//! natscli features, with natscli's flag names: contexts (stored where natscli stores them),
//! `rtt`, `sub --wait`, `req --replies`, `bench --pubsleep/--pubbatch`, the `Random` template.

#[path = "../../client/tests/it/pki.rs"]
mod pki;
#[path = "../../client/tests/it/support.rs"]
mod support;

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Bg, rnats, run};
use support::{Kind, ServerProc};

/// `rnats` with its configuration in `config` and no server from the environment.
fn rnats_in(config: &std::path::Path, args: &[&str]) -> Command {
    let mut c = rnats("unused", args);
    c.env_remove("NATS_URL")
        .env_remove("NATS_CONTEXT")
        .env("XDG_CONFIG_HOME", config);
    c
}

#[test]
fn contexts_are_stored_like_natscli_and_used() {
    let server = ServerProc::start(Kind::Rnats);
    let config = tempfile::tempdir().unwrap();
    let cfg = config.path();
    let url = server.url();

    let (st, _, err) = Bg::spawn(
        &mut rnats_in(
            cfg,
            &[
                "--server",
                &url,
                "--user",
                "u",
                "--password",
                "p",
                "context",
                "add",
                "local",
                "--description",
                "The test server",
                "--select",
            ],
        ),
        None,
    )
    .finish();
    assert!(st.success(), "{err:?}");
    let file = cfg.join("nats/context/local.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["url"], url.as_str());
    assert_eq!(saved["user"], "u");
    assert_eq!(saved["password"], "p");
    assert_eq!(saved["description"], "The test server");
    assert_eq!(
        std::fs::read_to_string(cfg.join("nats/context.txt")).unwrap(),
        "local"
    );

    // A second one, not selected; ls marks the selected one.
    let (st, _, _) = Bg::spawn(
        &mut rnats_in(
            cfg,
            &["--server", "nats://127.0.0.1:1", "context", "add", "dead"],
        ),
        None,
    )
    .finish();
    assert!(st.success());
    let (_, out, _) = Bg::spawn(&mut rnats_in(cfg, &["context", "ls"]), None).finish();
    assert!(
        out.iter().any(|l| l.trim_start().starts_with("local*")),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.trim_start().starts_with("dead ")),
        "{out:?}"
    );

    // Commands without --server use the selected context (the server has no auth, so the
    // saved user is accepted as is)...
    let (st, _, err) = Bg::spawn(&mut rnats_in(cfg, &["pub", "ctx.x", "hi"]), None).finish();
    assert!(st.success(), "selected context's URL: {err:?}");
    // ... or the one named, and flags still win over it.
    let (st, _, err) = Bg::spawn(
        &mut rnats_in(
            cfg,
            &["--context", "dead", "--timeout", "1s", "pub", "x", "y"],
        ),
        None,
    )
    .finish();
    assert_eq!(st.code(), Some(1), "{err:?}");
    assert!(err[0].contains("nats://127.0.0.1:1"), "{err:?}");
    let (st, _, err) = Bg::spawn(
        &mut rnats_in(cfg, &["--context", "dead", "-s", &url, "pub", "x", "y"]),
        None,
    )
    .finish();
    assert!(st.success(), "{err:?}");
    let (st, _, err) = Bg::spawn(
        &mut rnats_in(cfg, &["--context", "nope", "pub", "x", "y"]),
        None,
    )
    .finish();
    assert_eq!(st.code(), Some(1));
    assert!(err[0].contains("unknown context \"nope\""), "{err:?}");

    let (st, _, _) = Bg::spawn(&mut rnats_in(cfg, &["context", "select", "dead"]), None).finish();
    assert!(st.success());
    let (st, _, _) = Bg::spawn(&mut rnats_in(cfg, &["context", "rm", "dead"]), None).finish();
    assert!(st.success());
    assert!(!cfg.join("nats/context/dead.json").exists());
    assert!(
        !cfg.join("nats/context.txt").exists(),
        "the selection went with it"
    );
}

#[test]
fn rtt_sub_wait_and_random_template() {
    let server = ServerProc::start(Kind::Rnats);
    let url = server.url();
    let (st, out, err) = run(&url, &["rtt", "--iterations", "3"], None);
    assert!(st.success(), "{err:?}");
    assert!(
        out[0].starts_with(&format!("{url}: ")) && out[0].contains("average of 3 round trips"),
        "{out:?}"
    );

    // --wait: ends after a quiet period; messages in between restart it.
    let started = Instant::now();
    let mut sub = Bg::spawn(
        &mut rnats(&url, &["sub", "w.x", "--wait", "700ms", "--raw"]),
        None,
    );
    sub.wait_stderr("Subscribing on w.x");
    let (st, _, _) = run(&url, &["pub", "w.x", "{{Random 8 8}}"], None);
    assert!(st.success());
    let (st, out, err) = sub.finish();
    assert!(st.success(), "{err:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].len() == 8 && out[0].chars().all(|c| c.is_ascii_alphanumeric()),
        "{out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[test]
fn req_replies_collects_every_service() {
    let server = ServerProc::start(Kind::Rnats);
    let url = server.url();
    // Two services in different queue groups: both get each request.
    let mut a = Bg::spawn(
        &mut rnats(&url, &["reply", "svc", "from A", "--queue", "qa"]),
        None,
    );
    a.wait_stderr("Listening on");
    let mut b = Bg::spawn(
        &mut rnats(&url, &["reply", "svc", "from B", "--queue", "qb"]),
        None,
    );
    b.wait_stderr("Listening on");
    let (st, out, err) = run(&url, &["req", "svc", "hi", "--replies", "2", "--raw"], None);
    assert!(st.success(), "{err:?}");
    let mut got = out.clone();
    got.sort();
    assert_eq!(got, ["from A", "from B"]);
    // 0: every reply until the timeout.
    let started = Instant::now();
    let (st, out, err) = run(
        &url,
        &["req", "svc", "hi", "--replies", "0", "--timeout", "1s"],
        None,
    );
    assert!(st.success(), "{err:?}");
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(err.last().unwrap().contains("2 replies"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Nobody listens: the server's no-responders status, an error.
    let (st, _, err) = run(
        &url,
        &[
            "req",
            "nobody",
            "hi",
            "--replies",
            "3",
            "--timeout",
            "300ms",
        ],
        None,
    );
    assert_eq!(st.code(), Some(1));
    assert!(err.last().unwrap().contains("no responders"), "{err:?}");
}

#[test]
fn bench_pubsleep_and_pubbatch() {
    let server = ServerProc::start(Kind::Rnats);
    let started = Instant::now();
    let (st, out, err) = run(
        &server.url(),
        &[
            "bench",
            "b.slow",
            "--pub",
            "1",
            "--msgs",
            "20",
            "--pubbatch",
            "5",
            "--pubsleep",
            "20ms",
            "--no-progress",
            "--json",
        ],
        None,
    );
    assert!(st.success(), "{err:?}");
    let v: serde_json::Value = serde_json::from_str(&out.join("\n")).unwrap();
    assert_eq!(v["published"], 20, "{v}");
    // Four batches of five with three pauses of 5 × 20 ms between them.
    assert!(v["elapsed_s"].as_f64().unwrap() >= 0.3, "{v}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (st, _, err) = run(&server.url(), &["bench", "b", "--pubbatch", "0"], None);
    assert_eq!(st.code(), Some(1));
    assert!(err[0].contains("--pubbatch"), "{err:?}");
}
