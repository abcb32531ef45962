//! Lame duck mode and configuration reload, in-process and through signals.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use rnats_server::options::ClusterOptions;
use tokio::time::timeout;

use crate::harness::{Raw, TestServer, WAIT, test_options, wait_until};

const P1: &str = r#"{"verbose":false,"protocol":1}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_moves_clients_to_another_server() {
    let mut opts = test_options();
    opts.lame_duck_grace_period = Duration::from_millis(200);
    opts.lame_duck_duration = Duration::from_secs(1);
    opts.cluster = Some(ClusterOptions {
        name: Some("ldm".into()),
        host: "127.0.0.1".into(),
        ..Default::default()
    });
    let a = TestServer::rnats_with(opts.clone()).await;
    let seed = format!(
        "nats-route://{}",
        a.handle().shared.cluster.as_ref().unwrap().listen_addr
    );
    let mut b_opts = opts.clone();
    b_opts.cluster.as_mut().unwrap().routes = vec![seed];
    let b = TestServer::rnats_with(b_opts).await;
    let routes = |s: &TestServer| {
        s.handle()
            .shared
            .cluster
            .as_ref()
            .unwrap()
            .routes
            .lock()
            .len()
    };
    wait_until(|| routes(&a) == 1 && routes(&b) == 1).await;

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |e| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(a.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("after.ldm").await.unwrap();
    client.flush().await.unwrap();
    let mut raw = Raw::connect_with(a.addr, P1).await;

    a.handle().lame_duck();
    // The raw client is told, with only the other server listed.
    let info = raw.line().await.expect("lame duck INFO");
    assert!(info.contains("\"ldm\":true"), "{info}");
    assert!(
        !info.contains(&format!(":{}\"", a.addr.port())),
        "own URL still listed: {info}"
    );
    assert!(info.contains(&format!("{}", b.addr.port())), "{info}");
    // No new clients.
    wait_until(|| std::net::TcpStream::connect(a.addr).is_err()).await;
    let lame = timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if e.to_lowercase().contains("lame") {
                return e;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(!lame.is_empty());

    // The client ends up on B and keeps its subscription.
    let publisher = async_nats::connect(b.url()).await.unwrap();
    let got = timeout(Duration::from_secs(20), async {
        loop {
            publisher
                .publish("after.ldm", "moved".into())
                .await
                .unwrap();
            if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub.next()).await {
                return m;
            }
        }
    })
    .await
    .expect("client moved to B");
    assert_eq!(got.payload, "moved");
    assert!(raw.until_closed().await.is_some(), "A closed its clients");
    timeout(WAIT, a.handle().stopped())
        .await
        .expect("A shuts down after lame duck");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_users_and_permissions_of_live_connections() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("auth.conf");
    let write = |text: &str| std::fs::write(&conf, text).unwrap();
    write("authorization { users = [ {user: alice, password: a}, {user: bob, password: b} ] }\n");
    let load = || {
        let mut o = test_options();
        rnats_server::config::apply_file(&conf, &mut o).unwrap();
        o
    };
    let srv = TestServer::rnats_with(load()).await;
    let mut alice =
        Raw::connect_with(srv.addr, r#"{"user":"alice","pass":"a","verbose":false}"#).await;
    let mut bob = Raw::connect_with(srv.addr, r#"{"user":"bob","pass":"b","verbose":false}"#).await;
    alice.send(b"SUB secret.x 1\r\nSUB public.x 2\r\n").await;
    alice.ping_pong().await;

    // bob goes away, alice may now only publish to public.> and subscribe to public.>.
    write(
        "authorization { users = [ {user: alice, password: a, permissions: { publish: \"public.>\", subscribe: \"public.>\" }} ] }\n",
    );
    srv.handle().reload(load()).unwrap();
    assert_eq!(
        bob.until_closed().await.as_deref(),
        Some("-ERR 'Authorization Violation'\r\n")
    );
    alice
        .send(b"PUB secret.x 1\r\nx\r\nPUB public.x 1\r\ny\r\n")
        .await;
    let lines = alice.ping_pong().await;
    assert_eq!(
        lines,
        [
            "-ERR 'Permissions Violation for Publish to \"secret.x\"'",
            "MSG public.x 2 1",
            "y"
        ],
        "secret.x sub removed"
    );

    // A setting that cannot change at run time fails the whole reload.
    let mut bad = load();
    bad.server_name = Some("renamed".into());
    assert!(
        srv.handle()
            .reload(bad)
            .unwrap_err()
            .to_string()
            .contains("server_name")
    );
    srv.stop().await;
}

#[tokio::test]
async fn signals_through_the_binary_reload_and_lame_duck() {
    let bin = env!("CARGO_BIN_EXE_rnats-server");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("s.conf");
    let pid_file = dir.path().join("s.pid");
    std::fs::write(&conf, "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"100ms\"\nauthorization { user: u, password: one }\n").unwrap();
    let mut child = Command::new(bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-c",
            conf.to_str().unwrap(),
            "-P",
            pid_file.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let port: u16 = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if let Some(a) = line.split("client connections on ").nth(1) {
            break a.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    wait_until(|| pid_file.exists()).await;
    let addr = ([127, 0, 0, 1], port).into();
    let mut c = Raw::connect_with(
        addr,
        r#"{"user":"u","pass":"one","verbose":false,"protocol":1}"#,
    )
    .await;

    // reload: the password changes, the connected client is dropped.
    std::fs::write(&conf, "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"100ms\"\nauthorization { user: u, password: two }\n").unwrap();
    let signal = |cmd: &str| {
        let status = Command::new(bin)
            .args(["--signal", &format!("{cmd}={}", pid_file.display())])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("reload");
    assert_eq!(
        c.until_closed().await.as_deref(),
        Some("-ERR 'Authorization Violation'\r\n")
    );
    let mut d = Raw::connect_with(
        addr,
        r#"{"user":"u","pass":"two","verbose":false,"protocol":1}"#,
    )
    .await;

    // ldm: the client hears about it, is closed, and the process exits 0.
    signal("ldm");
    let info = d.line().await.expect("ldm INFO");
    assert!(info.contains("\"ldm\":true"), "{info}");
    assert!(d.until_closed().await.is_some());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.expect("exits after lame duck").success());
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("Entering lame duck mode")),
        "{logs:?}"
    );
    let _ = child.kill();
}
