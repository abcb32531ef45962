//! TLS (server-verified and mutual), nkey users and `.creds` files, against rnats-server and
//! the reference, with certificates and keys made by the test.

use data_encoding::BASE64URL_NOPAD;
use rnats_client::{Client, ConnectErrorKind, ConnectOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::pki::*;
use crate::support::*;

/// Publishes one message to itself and waits for it.
async fn round_trip(c: &Client, what: &str) {
    let mut sub = c.subscribe("sec.check").await.unwrap();
    c.flush().await.unwrap();
    c.publish("sec.check", what).await.unwrap();
    let m = next(&mut sub, what).await.expect("a message");
    assert_eq!(&m.payload[..], what.as_bytes());
}

async fn connect(opts: ConnectOptions, url: &str) -> Result<Client, rnats_client::ConnectError> {
    within("connect", opts.connect(url)).await
}

#[tokio::test]
async fn tls_with_a_ca_file_and_tls_urls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &["--tls", "--tlscert", cert, "--tlskey", key]);
        let name = srv.name();
        // INFO says tls_required: the client upgrades after INFO, trusting the CA file.
        let c = connect(
            ConnectOptions::new().add_root_certificates(&pki.ca),
            &srv.url(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: TLS connect: {e}"));
        assert!(c.server_info().tls_required, "{name}");
        round_trip(&c, "over tls").await;
        c.close().await;

        // tls:// works the same.
        let url = format!("tls://127.0.0.1:{}", srv.port);
        let c = connect(ConnectOptions::new().add_root_certificates(&pki.ca), &url)
            .await
            .unwrap_or_else(|e| panic!("{name}: tls:// connect: {e}"));
        round_trip(&c, "tls url").await;
        c.close().await;

        // Without the CA the certificate is not trusted.
        let e = connect(ConnectOptions::new().max_reconnects(Some(0)), &srv.url())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ConnectErrorKind::Tls, "{name}: {e}");

        // A CA file that does not exist is reported as such.
        let e = connect(
            ConnectOptions::new().add_root_certificates(dir.path().join("missing.pem")),
            &srv.url(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ConnectErrorKind::Tls, "{name}: {e}");
        assert!(e.to_string().contains("missing.pem"), "{name}: {e}");
    }

    // A client that requires TLS refuses a server that does not offer it.
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let e = connect(
            ConnectOptions::new()
                .require_tls(true)
                .add_root_certificates(&pki.ca),
            &srv.url(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.kind(),
            ConnectErrorKind::TlsRequired,
            "{}: {e}",
            srv.name()
        );
        let e = connect(
            ConnectOptions::new(),
            &format!("tls://127.0.0.1:{}", srv.port),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.kind(),
            ConnectErrorKind::TlsRequired,
            "{}: {e}",
            srv.name()
        );
    }
}

#[tokio::test]
async fn mutual_tls_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let args = [
        "--tlsverify",
        "--tlscert",
        pki.cert.to_str().unwrap(),
        "--tlskey",
        pki.key.to_str().unwrap(),
        "--tlscacert",
        pki.ca.to_str().unwrap(),
    ];
    for kind in kinds() {
        let mut srv = ServerProc::start_with(kind, &args);
        let name = srv.name();
        let without = connect(
            ConnectOptions::new().add_root_certificates(&pki.ca),
            &srv.url(),
        )
        .await;
        assert!(
            without.is_err(),
            "{name}: connected without a client certificate"
        );

        let c = connect(
            ConnectOptions::new()
                .add_root_certificates(&pki.ca)
                .add_client_certificate(&pki.client_cert, &pki.client_key)
                .reconnect_delay(
                    std::time::Duration::from_millis(50),
                    std::time::Duration::from_millis(200),
                    std::time::Duration::ZERO,
                )
                .max_reconnects(None),
            &srv.url(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: mTLS connect: {e}"));
        round_trip(&c, "mutual").await;

        // The server restarts: the client reconnects over TLS and its subscription is back.
        let mut events = c.events();
        let mut sub = c.subscribe("sec.after").await.unwrap();
        c.flush().await.unwrap();
        srv.kill();
        wait_event(&mut events, "Disconnected", |e| {
            *e == rnats_client::Event::Disconnected
        })
        .await;
        srv.start_again();
        wait_event(&mut events, "Reconnected", |e| {
            matches!(e, rnats_client::Event::Reconnected(_))
        })
        .await;
        c.publish("sec.after", "back").await.unwrap();
        let m = next(&mut sub, "after reconnect").await.unwrap();
        assert_eq!(&m.payload[..], b"back", "{name}");
        c.close().await;
    }
}

#[tokio::test]
async fn nkey_users_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let kp = nkeys::KeyPair::new_user();
    let conf = write(
        dir.path(),
        "nkeys.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            kp.public_key()
        ),
    );
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &["-c", conf.to_str().unwrap()]);
        let name = srv.name();
        let c = connect(ConnectOptions::new().nkey(kp.seed().unwrap()), &srv.url())
            .await
            .unwrap_or_else(|e| panic!("{name}: nkey rejected: {e}"));
        assert!(c.server_info().nonce.is_some(), "{name}");
        round_trip(&c, "nkey").await;
        c.close().await;

        let other = nkeys::KeyPair::new_user();
        let e = connect(
            ConnectOptions::new().nkey(other.seed().unwrap()),
            &srv.url(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{name}: {e}"
        );
        let e = connect(ConnectOptions::new(), &srv.url())
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{name}: {e}"
        );
        let e = connect(ConnectOptions::new().nkey("SUBOGUS"), &srv.url())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ConnectErrorKind::Credentials, "{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// JWTs: the decorated .creds format, checked by the reference in operator mode and by a fake
// server that verifies the signature of its nonce.

#[tokio::test]
async fn creds_file_against_the_reference_in_operator_mode() {
    if reference_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (conf, creds) = operator_setup(dir.path());
    let creds_path = write(dir.path(), "user.creds", &creds);
    let srv = ServerProc::start_with(Kind::Reference, &["-c", conf.to_str().unwrap()]);
    let c = connect(
        ConnectOptions::new().credentials_file(&creds_path),
        &srv.url(),
    )
    .await
    .unwrap_or_else(|e| panic!("creds rejected: {e}"));
    round_trip(&c, "jwt user").await;
    c.close().await;
    // The same contents given directly.
    let c = connect(
        ConnectOptions::new().credentials(&creds).unwrap(),
        &srv.url(),
    )
    .await
    .unwrap();
    round_trip(&c, "jwt inline").await;
    c.close().await;

    // A user JWT signed by an account the server does not know.
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let (_, stranger) = operator_setup(&other_dir);
    let e = connect(
        ConnectOptions::new().credentials(&stranger).unwrap(),
        &srv.url(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::AuthorizationViolation, "{e}");
    let e = connect(
        ConnectOptions::new().credentials_file(dir.path().join("nope.creds")),
        &srv.url(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::Credentials, "{e}");
}

/// rnats-server has no operator mode: a fake server checks what the client sends instead.
#[tokio::test]
async fn creds_sign_the_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let acc = nkeys::KeyPair::new_account();
    let jwt = encode_jwt(
        &acc,
        serde_json::json!({"name": "u", "sub": user.public_key(), "nats": {"type": "user", "version": 2}}),
    );
    let creds = write(
        dir.path(),
        "u.creds",
        &creds_file(&jwt, &user.seed().unwrap()),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", l.local_addr().unwrap());
    let server = async {
        let (s, _) = within("accept", l.accept()).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"INFO {\"server_id\":\"FAKE\",\"proto\":1,\"headers\":true,\"max_payload\":1048576,\"auth_required\":true,\"nonce\":\"n0nce-42\"}\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        within("CONNECT", r.read_line(&mut line)).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(line.trim_end().strip_prefix("CONNECT ").unwrap()).unwrap();
        let mut ping = String::new();
        within("PING", r.read_line(&mut ping)).await.unwrap();
        w.write_all(b"PONG\r\n").await.unwrap();
        (json, r, w)
    };
    let (c, (json, _r, _w)) = tokio::join!(
        async {
            ConnectOptions::new()
                .credentials_file(&creds)
                .connect(url.as_str())
                .await
                .unwrap()
        },
        server
    );
    assert_eq!(json["jwt"], jwt.as_str(), "{json}");
    assert!(json.get("nkey").is_none(), "jwt users send no nkey: {json}");
    let sig = BASE64URL_NOPAD
        .decode(json["sig"].as_str().unwrap().as_bytes())
        .unwrap();
    user.verify(b"n0nce-42", &sig).expect("the nonce is signed");
    drop(c);

    // An nkey user sends its public key and the signature.
    let (c, (json, _r, _w)) = tokio::join!(
        async {
            ConnectOptions::new()
                .nkey(user.seed().unwrap())
                .connect(url.as_str())
                .await
                .unwrap()
        },
        async {
            let (s, _) = within("accept", l.accept()).await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"INFO {\"server_id\":\"FAKE\",\"proto\":1,\"nonce\":\"abc\"}\r\n")
                .await
                .unwrap();
            let mut line = String::new();
            within("CONNECT", r.read_line(&mut line)).await.unwrap();
            let json: serde_json::Value =
                serde_json::from_str(line.trim_end().strip_prefix("CONNECT ").unwrap()).unwrap();
            let mut ping = String::new();
            within("PING", r.read_line(&mut ping)).await.unwrap();
            w.write_all(b"PONG\r\n").await.unwrap();
            (json, r, w)
        }
    );
    assert_eq!(json["nkey"], user.public_key().as_str());
    let sig = BASE64URL_NOPAD
        .decode(json["sig"].as_str().unwrap().as_bytes())
        .unwrap();
    user.verify(b"abc", &sig).unwrap();
    drop(c);
}
