//! Bad and edge-case input, sent byte for byte to rnats and to the reference nats-server:
//! both must answer the same way (same lines, same -ERR text, same close), and a second
//! client's traffic must go on with nothing lost.

use std::time::Duration;

use crate::harness::{Raw, TestServer};

struct Case {
    name: &'static str,
    /// Sent after the INFO was read.
    input: Vec<u8>,
    /// Append `PING` so an open connection shows itself with a PONG; off for inputs that
    /// end mid-line.
    probe: bool,
}

fn case(name: &'static str, input: &[u8]) -> Case {
    Case {
        name,
        input: input.to_vec(),
        probe: true,
    }
}

fn cases() -> Vec<Case> {
    let quiet = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n".to_vec();
    let with = |rest: &[u8]| [quiet.clone(), rest.to_vec()].concat();
    let mut long_line = b"PUB ".to_vec();
    long_line.extend(std::iter::repeat_n(b'x', 5000));
    let mut long_partial = long_line.clone();
    long_line.extend_from_slice(b" 1\r\nx\r\n");
    long_partial.truncate(4500);
    vec![
        case("unknown verb", &with(b"FOO\r\n")),
        Case { name: "unknown verb without line end", input: with(b"FOO"), probe: false },
        case("control line over max", &with(&long_line)),
        Case { name: "partial control line over max", input: with(&long_partial), probe: false },
        case("payload over max_payload", &with(b"PUB foo 2000000\r\n")),
        case("payload longer than announced", &with(b"PUB foo 2\r\nhello\r\n")),
        case("PUB too few args", &with(b"PUB foo\r\n")),
        case("PUB too many args", &with(b"PUB a b c 1\r\nx\r\n")),
        case("PUB non-numeric size", &with(b"PUB foo abc\r\n")),
        case("SUB empty token", &with(b"SUB foo..bar 1\r\n")),
        case("SUB trailing dot", &with(b"SUB foo. 1\r\n")),
        case("SUB leading dot", &with(b"SUB .foo 1\r\n")),
        case("SUB token after >", &with(b"SUB foo.>.bar 1\r\n")),
        case("SUB too few args", &with(b"SUB 1\r\n")),
        case("SUB too many args", &with(b"SUB a b c d\r\n")),
        case("UNSUB without args", &with(b"UNSUB\r\n")),
        case("UNSUB unknown sid", &with(b"UNSUB 99\r\n")),
        case("CONNECT bad json", b"CONNECT {bad json\r\n"),
        case("CONNECT protocol 2", b"CONNECT {\"protocol\":2}\r\n"),
        case("no_responders without headers", b"CONNECT {\"no_responders\":true,\"headers\":false}\r\n"),
        case("verbose session", b"CONNECT {\"verbose\":true}\r\nSUB a 1\r\nPUB a 1\r\nx\r\nUNSUB 1\r\n"),
        case("HPUB without headers", &with(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")),
        case("HPUB header larger than total", b"CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB foo 14 12\r\n"),
        case("lower-case verbs", b"sub foo 1\r\npub foo 2\r\nhi\r\n"),
        case("PING with trailing text", &with(b"PING xyz\r\n")),
        case("bare newline line ends", b"CONNECT {\"verbose\":false}\nSUB a 1\nPUB a 2\r\nhi\r\n"),
        case("client sends MSG", &with(b"MSG foo 1 2\r\nhi\r\n")),
        case("client sends +OK", &with(b"+OK\r\n")),
        case("client sends -ERR", &with(b"-ERR 'x'\r\n")),
        case("client sends PONG", &with(b"PONG\r\n")),
        case("pedantic wildcard publish", b"CONNECT {\"verbose\":false,\"pedantic\":true}\r\nSUB foo.* 1\r\nPUB foo.* 1\r\nx\r\n"),
        case("duplicate sid", &with(b"SUB foo 1\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\n")),
        case("size token echoed", &with(b"SUB foo 1\r\nPUB foo 05\r\nhello\r\n")),
        case("empty payload", &with(b"SUB foo 1\r\nPUB foo 0\r\n\r\n")),
        case("bad payload terminator", &with(b"PUB foo 2\r\nhiXY\r\n")),
        case("auto-unsubscribe", &with(b"SUB t 7\r\nUNSUB 7 2\r\nPUB t 1\r\na\r\nPUB t 1\r\nb\r\nPUB t 1\r\nc\r\n")),
        case(
            "no responders",
            b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nSUB _INBOX.x.* 3\r\nPUB svc.none _INBOX.x.1 2\r\nhi\r\n",
        ),
        case(
            "no responders without reply sub",
            b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nPUB svc.none _INBOX.y 2\r\nhi\r\n",
        ),
    ]
}

/// What a server did with a case: the lines it sent (after INFO) and whether it closed.
async fn outcome(srv: &TestServer, case: &Case) -> (Vec<String>, bool) {
    let mut raw = Raw::connect(srv.addr).await;
    raw.send(&case.input).await;
    if case.probe {
        // A separate write, so the probe never merges into a line the case left open.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut raw.stream, b"PING\r\n").await;
    }
    let mut lines = Vec::new();
    let closed = loop {
        let line = if case.probe {
            raw.line().await
        } else {
            tokio::time::timeout(Duration::from_millis(700), raw.line())
                .await
                .unwrap_or(Some("<open>".into()))
        };
        match line {
            None => break true,
            Some(l) if l == "<open>" => break false,
            Some(l) if l == "PONG" && case.probe => break false,
            Some(l) => lines.push(l),
        }
    };
    (lines, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matches_the_reference_and_hurts_nobody_else() {
    let rnats = TestServer::rnats().await;
    let reference = TestServer::reference(&[]);

    // A bystander keeps a request stream going through all of it.
    let mut watcher = Raw::connect_with(rnats.addr, r#"{"verbose":false,"protocol":1}"#).await;
    watcher.send(b"SUB watch 1\r\n").await;
    watcher.ping_pong().await;
    let mut sender = Raw::connect_with(rnats.addr, r#"{"verbose":false,"protocol":1}"#).await;

    let mut mismatches = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let ours = outcome(&rnats, case).await;
        if let Some(reference) = &reference {
            let theirs = outcome(reference, case).await;
            if ours != theirs {
                mismatches.push(format!(
                    "{}:\n  rnats:     {ours:?}\n  reference: {theirs:?}",
                    case.name
                ));
            }
        }
        sender
            .send(format!("PUB watch {}\r\n{i}\r\n", i.to_string().len()).as_bytes())
            .await;
        sender.ping_pong().await;
        let (_, payload) = watcher.msg().await;
        assert_eq!(
            payload,
            i.to_string().as_bytes(),
            "bystander lost a message during {:?}",
            case.name
        );
    }
    assert!(
        mismatches.is_empty(),
        "differences from the reference:\n{}",
        mismatches.join("\n")
    );

    // The same cases, every one of them at once from many connections, must not hurt either.
    let mut handles = Vec::new();
    for case in cases() {
        let addr = rnats.addr;
        handles.push(tokio::spawn(async move {
            let mut raw = Raw::connect(addr).await;
            raw.send(&case.input).await;
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    sender.send(b"PUB watch 3\r\nend\r\n").await;
    assert_eq!(watcher.msg().await.1, b"end");
    rnats.stop().await;
    if let Some(r) = reference {
        r.stop().await;
    }
}

#[tokio::test]
async fn a_flooding_client_does_not_stall_others() {
    let srv = TestServer::rnats().await;
    let mut flooder = Raw::connect_with(srv.addr, r#"{"verbose":false}"#).await;
    let mut a = Raw::connect_with(srv.addr, r#"{"verbose":false}"#).await;
    let mut b = Raw::connect_with(srv.addr, r#"{"verbose":false}"#).await;
    b.send(b"SUB chat 1\r\n").await;
    b.ping_pong().await;
    let flood = tokio::spawn(async move {
        let chunk: Vec<u8> = b"PUB nobody.listens 8\r\n12345678\r\n".repeat(2000);
        for _ in 0..200 {
            flooder.send(&chunk).await;
        }
        flooder.ping_pong().await;
    });
    for i in 0..100 {
        a.send(format!("PUB chat {}\r\n{i}\r\n", i.to_string().len()).as_bytes())
            .await;
        assert_eq!(b.msg().await.1, i.to_string().as_bytes());
    }
    tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .unwrap()
        .unwrap();
    srv.stop().await;
}
