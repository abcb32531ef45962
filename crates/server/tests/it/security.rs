//! Authentication, permissions and TLS, against rnats and (same config file) the reference.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::timeout;

use crate::harness::{Raw, TestServer, WAIT, test_options};
use crate::pki::make_pki;

/// rnats and the reference, both configured by the same file.
async fn both_with_config(conf: &Path) -> Vec<TestServer> {
    let mut opts = test_options();
    rnats_server::config::apply_file(conf, &mut opts).expect("config parses");
    opts.host = "127.0.0.1".into();
    opts.port = 0;
    let mut servers = vec![TestServer::rnats_with(opts).await];
    servers.extend(TestServer::reference(&["-c", conf.to_str().unwrap()]));
    servers
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const USERS_CONF: &str = r#"
authorization {
  timeout: 1
  users = [
    { user: alice, password: "BCRYPT_OF_PW",
      permissions: { publish: "orders.>", subscribe: ["_INBOX.>", "orders.>", "work.* workers"] } }
    { user: bob, password: s3cret,
      permissions: { publish: { deny: ["admin.>"] }, subscribe: { deny: "secret.*" } } }
    { user: svc, password: pw, permissions: { subscribe: "svc.>", allow_responses: true } }
    { user: client, password: pw, permissions: { publish: "svc.>", subscribe: "_INBOX.>" } }
  ]
}
"#;

/// The users config, alice's password stored as a bcrypt hash of "pw".
fn users_conf(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash("pw", 4).unwrap();
    write(
        dir,
        "users.conf",
        &USERS_CONF.replace("BCRYPT_OF_PW", &hash),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_violations_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let conf = users_conf(dir.path());
    let mut outcomes = Vec::new();
    for srv in both_with_config(&conf).await {
        let mut seen = Vec::new();
        // Wrong password, unknown user, no credentials, an op before CONNECT, silence.
        for connect in [
            r#"{"user":"alice","pass":"nope","verbose":false}"#,
            r#"{"user":"mallory","pass":"pw","verbose":false}"#,
            r#"{"verbose":false}"#,
        ] {
            let mut c = Raw::connect(srv.addr).await;
            assert!(c.info.contains("\"auth_required\":true"), "{}", c.info);
            c.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
                .await;
            seen.push(c.until_closed().await);
        }
        let mut early = Raw::connect(srv.addr).await;
        early.send(b"SUB foo 1\r\n").await;
        seen.push(early.until_closed().await);
        let mut silent = Raw::connect(srv.addr).await;
        seen.push(silent.until_closed().await);

        // Permission violations keep the connection open.
        let mut alice =
            Raw::connect_with(srv.addr, r#"{"user":"alice","pass":"pw","verbose":false}"#).await;
        alice.send(b"PUB admin.x 1\r\nx\r\nSUB secret.a 1\r\nSUB work.a 2\r\nSUB work.a others 3\r\nSUB work.a workers 4\r\nSUB orders.* 5\r\nPUB orders.new 2\r\nok\r\n").await;
        seen.push(Some(alice.ping_pong().await.join("|")));
        let mut bob = Raw::connect_with(
            srv.addr,
            r#"{"user":"bob","pass":"s3cret","verbose":false}"#,
        )
        .await;
        bob.send(b"PUB admin.x 1\r\nx\r\nSUB secret.a 1\r\nSUB > 2\r\nPUB secret.b 1\r\nx\r\nPUB public.b 1\r\ny\r\n").await;
        seen.push(Some(bob.ping_pong().await.join("|")));
        outcomes.push((srv.name(), seen));
        srv.stop().await;
    }
    if outcomes.len() == 2 {
        assert_eq!(outcomes[0].1, outcomes[1].1, "rnats vs reference");
    }
    let (_, ours) = &outcomes[0];
    let violation = Some("-ERR 'Authorization Violation'\r\n".to_string());
    assert_eq!(
        ours[..4],
        [
            violation.clone(),
            violation.clone(),
            violation.clone(),
            violation
        ]
    );
    assert_eq!(
        ours[4].as_deref(),
        Some("-ERR 'Authentication Timeout'\r\n")
    );
    assert_eq!(
        ours[5].as_deref(),
        Some(
            "-ERR 'Permissions Violation for Publish to \"admin.x\"'|-ERR 'Permissions Violation for Subscription to \"secret.a\"'|\
             -ERR 'Permissions Violation for Subscription to \"work.a\"'|-ERR 'Permissions Violation for Subscription to \"work.a\" using queue \"others\"'|\
             MSG orders.new 5 2|ok"
        )
    );
    // bob's `>` subscription does not get what his deny list filters.
    assert_eq!(
        ours[6].as_deref(),
        Some(
            "-ERR 'Permissions Violation for Publish to \"admin.x\"'|-ERR 'Permissions Violation for Subscription to \"secret.a\"'|MSG public.b 2 1|y"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_with_users_tokens_nkeys_and_responses() {
    let dir = tempfile::tempdir().unwrap();
    let conf = users_conf(dir.path());
    for srv in both_with_config(&conf).await {
        let bad =
            async_nats::ConnectOptions::with_user_and_password("alice".into(), "wrong".into())
                .connect(srv.url())
                .await;
        assert!(bad.is_err(), "{}: wrong password accepted", srv.name());

        // allow_responses: svc may answer requests even though it may not publish.
        let svc = async_nats::ConnectOptions::with_user_and_password("svc".into(), "pw".into())
            .connect(srv.url())
            .await
            .unwrap();
        let client =
            async_nats::ConnectOptions::with_user_and_password("client".into(), "pw".into())
                .connect(srv.url())
                .await
                .unwrap();
        let mut requests = svc.subscribe("svc.echo").await.unwrap();
        svc.flush().await.unwrap();
        let responder = svc.clone();
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, m.payload).await;
                }
            }
        });
        // The subscription is in place once a request is answered; retry while it settles.
        let mut answer = None;
        for _ in 0..50 {
            if let Ok(Ok(m)) = timeout(
                Duration::from_millis(200),
                client.request("svc.echo", "hi".into()),
            )
            .await
            {
                answer = Some(m);
                break;
            }
        }
        assert_eq!(answer.expect("answered").payload, "hi", "{}", srv.name());
        srv.stop().await;
    }

    // A token, and nkeys (the nonce in INFO signed by the client), by flag and config.
    let kp = nkeys::KeyPair::new_user();
    let nkey_conf = write(
        dir.path(),
        "nkeys.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            kp.public_key()
        ),
    );
    for srv in both_with_config(&nkey_conf).await {
        let ok = async_nats::ConnectOptions::with_nkey(kp.seed().unwrap())
            .connect(srv.url())
            .await;
        assert!(ok.is_ok(), "{}: nkey rejected: {:?}", srv.name(), ok.err());
        let other = nkeys::KeyPair::new_user();
        let bad = async_nats::ConnectOptions::with_nkey(other.seed().unwrap())
            .connect(srv.url())
            .await;
        assert!(bad.is_err(), "{}: unknown nkey accepted", srv.name());
        let info = Raw::connect(srv.addr).await.info;
        assert!(info.contains("\"nonce\":\""), "{}: {info}", srv.name());
        srv.stop().await;
    }
    let mut opts = test_options();
    opts.auth.token = Some("t0ken".into());
    let srv = TestServer::rnats_with(opts).await;
    assert!(
        async_nats::ConnectOptions::with_token("t0ken".into())
            .connect(srv.url())
            .await
            .is_ok()
    );
    assert!(
        async_nats::ConnectOptions::with_token("nope".into())
            .connect(srv.url())
            .await
            .is_err()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_user_binds_anonymous_clients() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "noauth.conf",
        "authorization { users = [ { user: anon, password: x, permissions: { publish: \"public.>\" } } ] }\nno_auth_user: anon\n",
    );
    for srv in both_with_config(&conf).await {
        let mut c = Raw::connect(srv.addr).await;
        assert!(
            !c.info.contains("auth_required"),
            "{}: {}",
            srv.name(),
            c.info
        );
        c.send(b"CONNECT {\"verbose\":false}\r\nPUB private.x 1\r\nx\r\nPUB public.x 1\r\nx\r\n")
            .await;
        assert_eq!(
            c.ping_pong().await,
            ["-ERR 'Permissions Violation for Publish to \"private.x\"'"],
            "{}",
            srv.name()
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let conf = write(
        dir.path(),
        "tls.conf",
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 1 }}\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    for srv in both_with_config(&conf).await {
        let info = Raw::connect(srv.addr).await.info;
        assert!(
            info.contains("\"tls_required\":true"),
            "{}: {info}",
            srv.name()
        );
        let nc = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .connect(srv.url())
            .await
            .unwrap_or_else(|e| panic!("{}: TLS connect: {e}", srv.name()));
        let mut sub = nc.subscribe("secure").await.unwrap();
        nc.publish("secure", "x".into()).await.unwrap();
        assert_eq!(
            timeout(WAIT, sub.next()).await.unwrap().unwrap().payload,
            "x"
        );
        // Plain text on a TLS port gets nowhere.
        let mut plain = Raw::connect(srv.addr).await;
        plain.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
        let rest = plain.until_closed().await;
        assert!(
            rest.as_deref().is_some_and(|r| !r.contains("PONG")),
            "{}: {rest:?}",
            srv.name()
        );
        srv.stop().await;
    }

    let mtls = write(
        dir.path(),
        "mtls.conf",
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}\n",
            pki.cert.display(),
            pki.key.display(),
            pki.ca.display()
        ),
    );
    for srv in both_with_config(&mtls).await {
        let info = Raw::connect(srv.addr).await.info;
        assert!(
            info.contains("\"tls_verify\":true"),
            "{}: {info}",
            srv.name()
        );
        let without = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .max_reconnects(Some(1))
            .connect(srv.url());
        let without = timeout(WAIT, without).await;
        assert!(
            !matches!(without, Ok(Ok(_))),
            "{}: connected without a client certificate",
            srv.name()
        );
        let with = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
            .connect(srv.url())
            .await;
        assert!(with.is_ok(), "{}: mTLS: {:?}", srv.name(), with.err());
        srv.stop().await;
    }
}
