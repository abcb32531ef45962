//! Protocol tracing (`-V`): each op a client sent, as the reference logs it, with secrets
//! redacted.

use tracing::trace;

use rnats_protocol::{ClientOp, Message};
use serde_json::Value;

use crate::conn::ClientShared;

/// CONNECT JSON for the trace log, with passwords and tokens replaced by `[REDACTED]` (as
/// nats-server does): secrets never reach the logs.
fn redact_secrets(json: &[u8]) -> String {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(mut obj)) => {
            for key in ["pass", "auth_token"] {
                if let Some(v) = obj.get_mut(key)
                    && !v.is_null()
                {
                    *v = Value::String("[REDACTED]".into());
                }
            }
            Value::Object(obj).to_string()
        }
        // Not JSON: nothing structured to redact, so show none of it.
        _ => "[invalid JSON]".into(),
    }
}

pub(super) fn trace_op(me: &ClientShared, op: &ClientOp<'_>) {
    let text = match op {
        ClientOp::Connect(json) => format!("CONNECT {}", redact_secrets(json)),
        ClientOp::Pub(Message {
            subject,
            reply,
            size_token,
            header_len,
            ..
        }) => format!(
            "{} {}{} {}",
            if header_len.is_some() { "HPUB" } else { "PUB" },
            String::from_utf8_lossy(subject),
            reply
                .map(|r| format!(" {}", String::from_utf8_lossy(r)))
                .unwrap_or_default(),
            String::from_utf8_lossy(size_token)
        ),
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => format!(
            "SUB {}{} {}",
            String::from_utf8_lossy(subject),
            queue
                .map(|q| format!(" {}", String::from_utf8_lossy(q)))
                .unwrap_or_default(),
            String::from_utf8_lossy(sid)
        ),
        ClientOp::Unsub { sid, .. } => format!("UNSUB {}", String::from_utf8_lossy(sid)),
        ClientOp::Ping => "PING".into(),
        ClientOp::Pong => "PONG".into(),
        ClientOp::Ok => "+OK".into(),
        ClientOp::Info(json) => format!("INFO {}", String::from_utf8_lossy(json)),
    };
    trace!("{} - cid:{} - <<- [{text}]", me.addr, me.cid);
}

#[cfg(test)]
mod tests {
    #[test]
    fn connect_json_is_redacted() {
        let traced =
            super::redact_secrets(br#"{"user":"u","pass":"secret","auth_token":"tok","name":"n"}"#);
        assert!(
            !traced.contains("secret") && !traced.contains("\"tok\""),
            "{traced}"
        );
        assert!(traced.contains("\"user\":\"u\""));
    }
}
