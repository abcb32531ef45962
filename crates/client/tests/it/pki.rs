//! Test material made on the fly: a CA with server and client certificates (rcgen), and
//! operator / account / user JWTs with a user's `.creds` file (nkeys). Shared by the client's,
//! the server's and the CLI's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;

pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
pub fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client".into()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca: write(dir, "ca.pem", &ca.pem()),
        cert: write(dir, "server.pem", &server.pem()),
        key: write(dir, "server-key.pem", &server_key.serialize_pem()),
        client_cert: write(dir, "client.pem", &client.pem()),
        client_key: write(dir, "client-key.pem", &client_key.serialize_pem()),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ed25519-nkey JWT with these claims, signed by `issuer`.
pub fn encode_jwt(issuer: &nkeys::KeyPair, mut claims: serde_json::Value) -> String {
    claims["iss"] = issuer.public_key().into();
    claims["iat"] = now().into();
    claims["jti"] = format!("{:X}{}", now(), rand_suffix()).into();
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{body}");
    let sig = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&sig))
}

fn rand_suffix() -> String {
    nkeys::KeyPair::new_user().public_key()[1..12].to_string()
}

/// The `.creds` file of a user: its JWT and seed, decorated as `nsc` writes them.
pub fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// An operator, an account and a user of it: the server config (operator mode, memory
/// resolver) and the user's .creds contents.
pub fn operator_setup(dir: &Path) -> (PathBuf, String) {
    let op = nkeys::KeyPair::new_operator();
    let acc = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = encode_jwt(
        &op,
        serde_json::json!({
            "name": "op", "sub": op.public_key(),
            "nats": {"type": "operator", "version": 2}
        }),
    );
    let acc_jwt = encode_jwt(
        &op,
        serde_json::json!({
            "name": "acc", "sub": acc.public_key(),
            "nats": {
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                           "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account", "version": 2
            }
        }),
    );
    let user_jwt = encode_jwt(
        &acc,
        serde_json::json!({
            "name": "u", "sub": user.public_key(),
            "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                     "type": "user", "version": 2}
        }),
    );
    let op_file = write(dir, "op.jwt", &op_jwt);
    let conf = write(
        dir,
        "operator.conf",
        &format!(
            "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{acc_jwt}\"\n}}\n",
            op_file.display(),
            acc.public_key()
        ),
    );
    (conf, creds_file(&user_jwt, &user.seed().unwrap()))
}
