//! `CONNECT`: the client's options and credentials, checked the way the reference checks
//! them. [`check`] decides; the reader applies what it returns.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tracing::error;

use crate::auth::{Authenticator, Credentials, Permissions, StoredCredentials};
use crate::conn::trace::{AuthTag, client_tags};
use crate::conn::{CloseReason, ConnMeta};

/// Options from CONNECT; absent fields keep the reference's defaults.
#[derive(Clone, Copy)]
pub(super) struct ConnectFlags {
    pub verbose: bool,
    pub pedantic: bool,
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
    pub protocol: i64,
}

impl Default for ConnectFlags {
    fn default() -> Self {
        ConnectFlags {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
        }
    }
}

/// An accepted CONNECT: what the connection is from now on.
pub(super) struct Accepted {
    pub flags: ConnectFlags,
    pub meta: ConnMeta,
    /// With authentication on: what the client authenticated with, and its permissions.
    pub auth: Option<(StoredCredentials, Option<Arc<Permissions>>)>,
    /// The client's tags in log lines from now on (name, authentication).
    pub log_tags: String,
}

/// A refused CONNECT: the `-ERR` text to send first (if any) and why the connection closes.
pub(super) struct Refused {
    pub err: Option<&'static str>,
    pub reason: CloseReason,
}

/// Checks a CONNECT's JSON against the server's settings; `nonce` is the one sent in INFO.
/// `addr` and `cid` only label the log lines.
pub(super) fn check(
    json: &[u8],
    auth: &Authenticator,
    no_header_support: bool,
    nonce: Option<&str>,
    (addr, cid): (SocketAddr, u64),
) -> Result<Accepted, Refused> {
    let refuse = |err, reason| Refused { err, reason };
    let Some(obj) = serde_json::from_slice::<Value>(json)
        .ok()
        .and_then(|v| match v {
            Value::Object(obj) if connect_types_ok(&obj) => Some(obj),
            _ => None,
        })
    else {
        error!("{addr} - cid:{cid} - invalid CONNECT json");
        return Err(refuse(None, CloseReason::ProtocolViolation));
    };
    let get_bool =
        |key: &str, default: bool| obj.get(key).and_then(Value::as_bool).unwrap_or(default);
    let get_str = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let defaults = ConnectFlags::default();
    let flags = ConnectFlags {
        verbose: get_bool("verbose", defaults.verbose),
        pedantic: get_bool("pedantic", defaults.pedantic),
        echo: get_bool("echo", defaults.echo),
        headers: get_bool("headers", false) && !no_header_support,
        no_responders: get_bool("no_responders", false),
        protocol: obj.get("protocol").and_then(Value::as_i64).unwrap_or(0),
    };
    if !(0..=1).contains(&flags.protocol) {
        return Err(refuse(
            Some("invalid client protocol"),
            CloseReason::ProtocolViolation,
        ));
    }
    if flags.no_responders && !get_bool("headers", false) {
        return Err(refuse(
            Some("no responders requires headers support"),
            CloseReason::ProtocolViolation,
        ));
    }
    let user = obj.get("user").and_then(Value::as_str);
    let mut authenticated = None;
    let mut auth_tag = None;
    if auth.enabled() {
        let creds = Credentials {
            user,
            pass: obj.get("pass").and_then(Value::as_str),
            token: obj.get("auth_token").and_then(Value::as_str),
            nkey: obj.get("nkey").and_then(Value::as_str),
            sig: obj.get("sig").and_then(Value::as_str),
        };
        let legacy_account = obj.get("account").is_some_and(|a| !a.is_null())
            || obj.get("new_account").is_some_and(|a| !a.is_null());
        match auth.authenticate(&creds, nonce) {
            Some(who) if !legacy_account => {
                auth_tag = Some(match (creds.nkey, &auth.token, who.user) {
                    (Some(key), _, _) => AuthLabel::Nkey(key.to_string()),
                    (None, Some(_), _) => AuthLabel::Token,
                    (None, None, user) => AuthLabel::User(user.unwrap_or_default()),
                });
                authenticated = Some((StoredCredentials::from(&creds), who.permissions));
            }
            _ => {
                error!("{addr} - cid:{cid} - authentication error");
                return Err(refuse(
                    Some("Authorization Violation"),
                    CloseReason::AuthenticationViolation,
                ));
            }
        }
    }
    let meta = ConnMeta {
        name: get_str("name"),
        lang: get_str("lang"),
        version: get_str("version"),
        user: user.map(str::to_string),
    };
    let tag = auth_tag.as_ref().map(|a| match a {
        AuthLabel::User(u) => AuthTag::User(u),
        AuthLabel::Nkey(k) => AuthTag::Nkey(k),
        AuthLabel::Token => AuthTag::Token,
    });
    Ok(Accepted {
        flags,
        log_tags: client_tags(&meta.version, &meta.lang, &meta.name, tag.as_ref()),
        meta,
        auth: authenticated,
    })
}

/// How the client authenticated, owned (see `AuthTag`).
enum AuthLabel {
    User(String),
    Nkey(String),
    Token,
}

/// Field types the reference's JSON decoding insists on; a mismatch closes the connection.
fn connect_types_ok(obj: &serde_json::Map<String, Value>) -> bool {
    const BOOLS: [&str; 6] = [
        "verbose",
        "pedantic",
        "tls_required",
        "echo",
        "headers",
        "no_responders",
    ];
    const STRINGS: [&str; 9] = [
        "auth_token",
        "user",
        "pass",
        "name",
        "lang",
        "version",
        "sig",
        "jwt",
        "nkey",
    ];
    obj.iter().all(|(key, value)| {
        value.is_null()
            || if BOOLS.contains(&key.as_str()) {
                value.is_boolean()
            } else if STRINGS.contains(&key.as_str()) {
                value.is_string()
            } else if key == "protocol" {
                value.is_i64()
            } else {
                true
            }
    })
}
