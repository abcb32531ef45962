//! The streaming server's live status page at `/`, driven by headless Chromium (skipped
//! without it, unless `RNATS_REQUIRE_CHROMIUM=1`): channels, subscriptions with their
//! pending/ack state, clients, store totals and the fault-tolerance state of both members
//! of an FT group; each page also screenshotted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Raw, ServerProc, core_nats, http_get};

fn chromium_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("CHROMIUM_BIN") {
        return Some(bin.into());
    }
    let usr = PathBuf::from("/usr/bin/chromium");
    usr.exists().then_some(usr)
}

/// Runs headless Chromium on `url` (bounded: killed after 90 s), returns the DOM after the
/// page's scripts ran, and writes a screenshot to `shot`.
fn render(chromium: &Path, url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ];
    let run = |extra: &[String]| -> std::process::Output {
        let child = Command::new(chromium)
            .args(common)
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(out) => out.expect("chromium output"),
            Err(_) => {
                // Bounded: kill the browser we started (by its pid) and fail.
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("chromium did not finish within 90 s");
            }
        }
    };
    let dom = run(&[
        format!("--user-data-dir={}", profile.path().join("dom").display()),
        "--virtual-time-budget=4000".into(),
        "--dump-dom".into(),
    ]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot_run = run(&[
        format!("--user-data-dir={}", profile.path().join("shot").display()),
        "--virtual-time-budget=3000".into(),
        "--window-size=1280,1400".into(),
        format!("--screenshot={}", shot.display()),
    ]);
    assert!(shot_run.status.success());
    let png = std::fs::read(shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// The element with `id`: its `data-value` attribute and its text.
fn element<'a>(dom: &'a str, id: &str) -> (Option<&'a str>, &'a str) {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let tag_end = start + dom[start..].find('>').expect("end of tag");
    let attrs = &dom[start..tag_end];
    let value = attrs
        .split("data-value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next());
    let text_end = tag_end + dom[tag_end..].find('<').expect("end of text");
    (value, &dom[tag_end + 1..text_end])
}

fn polled(dom: &str) {
    let (_, _) = element(dom, "status");
    let at = dom.find("id=\"status\"").unwrap();
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let polls: u32 = tag
        .split("data-polls=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 2 && tag.contains("live"), "{tag}");
}

fn td(dom: &str, table: &str, text: &str) -> bool {
    let at = dom
        .find(&format!("id=\"{table}\""))
        .unwrap_or_else(|| panic!("no #{table}"));
    let end = at + dom[at..].find("</table>").unwrap();
    dom[at..end].contains(&format!(">{text}</td>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_of_an_ft_pair_in_headless_chromium() {
    let Some(chromium) = chromium_bin() else {
        assert!(
            std::env::var("RNATS_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "RNATS_REQUIRE_CHROMIUM=1 but no chromium: apt-get install chromium"
        );
        eprintln!("chromium not installed: status page test skipped");
        return;
    };
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let member = |until: &str| {
        ServerProc::spawn(
            &[
                "-ns",
                &url,
                "--ft_group",
                "grp",
                "-st",
                "FILE",
                "--dir",
                d,
                "-m",
                "-1",
            ],
            until,
        )
    };
    let active = member("Streaming Server is ready");
    let standby = member("Starting in standby mode");

    // Traffic: two channels, a durable that has not acked (pending), a caught-up one.
    let c = Raw::connect(&url, "test-cluster", "page-client", true).await;
    for i in 0..5 {
        assert_eq!(
            c.publish("orders", format!("o{i}").as_bytes()).await.error,
            ""
        );
    }
    assert_eq!(c.publish("audit", b"a").await.error, "");
    let mut req = c.sub_req("orders", "");
    req.durable_name = "billing".into();
    let mut pending = c.subscribe(req).await.unwrap();
    for _ in 0..5 {
        pending.next().await;
    }
    let mut req = c.sub_req("audit", "");
    req.q_group = "auditors".into();
    let mut acked = c.subscribe(req).await.unwrap();
    let m = acked.next().await;
    c.ack(&acked, m.sequence).await;

    let port = active.monitor_port.unwrap();
    let (status, page) = tokio::task::spawn_blocking(move || http_get(port, "/"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>rnats-streaming-server status</title>"));

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let (chromium2, url_a) = (chromium.clone(), format!("http://127.0.0.1:{port}/"));
    let shot_a = shots.join("rnats-streaming-status.png");
    let dom = tokio::task::spawn_blocking(move || render(&chromium2, &url_a, &shot_a))
        .await
        .unwrap();
    polled(&dom);
    assert_eq!(element(&dom, "state").0, Some("FT_ACTIVE"));
    assert!(element(&dom, "ft-state").1.starts_with("active"));
    assert_eq!(element(&dom, "channels").0, Some("2"));
    assert_eq!(element(&dom, "clients").0, Some("1"));
    assert_eq!(element(&dom, "subscriptions").0, Some("2"));
    assert_eq!(element(&dom, "total-msgs").0, Some("6"));
    assert_eq!(element(&dom, "pending-total").0, Some("5"));
    assert_eq!(element(&dom, "store-type").0, Some("FILE"));
    assert_eq!(element(&dom, "raft-role").1, "not clustered");
    for (table, cells) in [
        ("chan-table", &["orders", "audit"][..]),
        (
            "sub-table",
            &[
                "billing",
                "auditors",
                "awaiting acks",
                "caught up",
                "page-client",
            ],
        ),
        ("client-table", &["page-client"]),
    ] {
        for cell in cells {
            assert!(td(&dom, table, cell), "{cell} in #{table}:\n{dom}");
        }
    }

    // The standby's page says so, with nothing to serve.
    let sport = standby.monitor_port.unwrap();
    let url_b = format!("http://127.0.0.1:{sport}/");
    let shot_b = shots.join("rnats-streaming-standby.png");
    let dom = tokio::task::spawn_blocking(move || render(&chromium, &url_b, &shot_b))
        .await
        .unwrap();
    polled(&dom);
    assert_eq!(element(&dom, "state").0, Some("FT_STANDBY"));
    assert!(element(&dom, "ft-state").1.starts_with("standby"));
    assert_eq!(element(&dom, "channels").0, Some("0"));
    drop(pending);
}
