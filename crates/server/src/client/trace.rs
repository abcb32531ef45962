//! Protocol tracing (`-V`): each op a client sent, as the reference logs it, with secrets
//! redacted.

use tracing::trace;

use rnats_protocol::{ClientOp, Message};
use serde_json::Value;

use crate::conn::ClientShared;
use crate::conn::trace::payload_text;

/// CONNECT JSON for the trace log as the client wrote it, but with the values of `pass` and
/// `auth_token` replaced by `[REDACTED]` (as nats-server does): secrets never reach the logs.
fn redact_secrets(json: &[u8]) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(json) else {
        // Not JSON: nothing structured to redact, so show none of it.
        return "[invalid JSON]".into();
    };
    let mut text = String::from_utf8_lossy(json).into_owned();
    for key in ["pass", "auth_token"] {
        if obj.get(key).is_some_and(Value::is_string) {
            match redact_value(&text, key) {
                Some(t) => text = t,
                // A form the scan does not follow (escaped key, duplicate): show nothing.
                None => return "[invalid JSON]".into(),
            }
        }
    }
    text
}

/// `text` with the string value of top-level-looking `"key":` replaced; None if not found.
fn redact_value(text: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\"");
    let mut from = 0;
    while let Some(at) = text[from..].find(&pattern).map(|i| from + i) {
        let after = &text[at + pattern.len()..];
        let colon = after.trim_start();
        if let Some(value) = colon.strip_prefix(':') {
            let value = value.trim_start();
            if let Some(body) = value.strip_prefix('"') {
                // The end of the string literal: the first quote not escaped.
                let mut escaped = false;
                for (i, c) in body.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            let start = text.len() - value.len();
                            let end = text.len() - body.len() + i + 1;
                            return Some(format!(
                                "{}\"[REDACTED]\"{}",
                                &text[..start],
                                &text[end..]
                            ));
                        }
                        _ => escaped = false,
                    }
                }
                return None;
            }
        }
        from = at + pattern.len();
    }
    None
}

/// `<<- [OP]` for an op the client sent, and `<<- MSG_PAYLOAD: [...]` for a publish's
/// payload (cut after `max_payload_text` bytes; 0: whole).
pub(super) fn trace_op(me: &ClientShared, op: &ClientOp<'_>, max_payload_text: usize) {
    let text = match op {
        ClientOp::Connect(json) => format!("CONNECT {}", redact_secrets(json)),
        ClientOp::Pub(Message {
            subject,
            reply,
            size_token,
            header_len,
            header_token,
            ..
        }) => format!(
            "{} {}{}{} {}",
            if header_len.is_some() { "HPUB" } else { "PUB" },
            String::from_utf8_lossy(subject),
            reply
                .map(|r| format!(" {}", String::from_utf8_lossy(r)))
                .unwrap_or_default(),
            if header_len.is_some() {
                format!(" {}", String::from_utf8_lossy(header_token))
            } else {
                String::new()
            },
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
        ClientOp::Unsub {
            sid,
            max: Some(Some(max)),
        } => format!("UNSUB {} {max}", String::from_utf8_lossy(sid)),
        ClientOp::Unsub { sid, .. } => format!("UNSUB {}", String::from_utf8_lossy(sid)),
        ClientOp::Ping => "PING".into(),
        ClientOp::Pong => "PONG".into(),
        ClientOp::Ok => "+OK".into(),
        ClientOp::Info(json) => format!("INFO {}", String::from_utf8_lossy(json)),
    };
    let id = me.log_id();
    trace!("{id} - <<- [{text}]");
    if let ClientOp::Pub(msg) = op {
        trace!(
            "{id} - <<- MSG_PAYLOAD: {}",
            payload_text(msg.payload, max_payload_text)
        );
    }
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
        // As written, only the secrets replaced.
        assert_eq!(
            super::redact_secrets(br#"{"z":1, "pass" : "a\"b\\", "a":2}"#),
            r#"{"z":1, "pass" : "[REDACTED]", "a":2}"#
        );
        assert_eq!(super::redact_secrets(b"nope"), "[invalid JSON]");
    }
}
