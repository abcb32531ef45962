//! How a connection appears in the log, and the `-V` trace lines about what goes out to it,
//! in nats-server's words:
//!
//! * every line about a client starts with its id: `ip:port - cid:N`, and after CONNECT also
//!   the client's `"v<version>:<lang>:<name>"` (the parts it gave) and, with authentication,
//!   `"$G/user:<name>"` (or `"$G/token"`, `"$G/nkey:<key>"`);
//! * `->> [OP]` for what the server sends (PONG, PING, OK, -ERR, MSG), `<-> [DELSUB sid]` for
//!   a subscription removed, and `MSG_PAYLOAD: ["…"]` lines with the payload quoted as Go's
//!   `%q` does, cut after `max_traced_msg_len` bytes.
//!
//! Only called when tracing is on; nothing here runs on the message path otherwise.

use std::fmt::Write;

use tracing::trace;

use super::ClientShared;

/// The client tags after CONNECT: the name tag and the authentication tag, each quoted.
pub(crate) fn client_tags(
    version: &str,
    lang: &str,
    name: &str,
    auth: Option<&AuthTag<'_>>,
) -> String {
    let mut tags = String::new();
    let version = (!version.is_empty()).then(|| format!("v{version}"));
    let parts: Vec<&str> = [version.as_deref().unwrap_or(""), lang, name]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if !parts.is_empty() {
        let _ = write!(tags, " - {}", go_quote(parts.join(":").as_bytes()));
    }
    if let Some(auth) = auth {
        let label = match auth {
            AuthTag::User(u) => format!("$G/user:{u}"),
            AuthTag::Nkey(k) => format!("$G/nkey:{k}"),
            AuthTag::Token => "$G/token".to_string(),
        };
        let _ = write!(tags, " - {}", go_quote(label.as_bytes()));
    }
    tags
}

/// How a client authenticated, for its log tag.
pub(crate) enum AuthTag<'a> {
    User(&'a str),
    Nkey(&'a str),
    Token,
}

/// `bytes` as Go's `%q` writes a string: quoted, with `\"`, `\\`, the usual control escapes,
/// `\x..` for other bytes that are not printable UTF-8.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    push_quoted(&mut out, bytes);
    out.push('"');
    out
}

fn push_quoted(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// `["<payload>"]`, or its first `max` bytes followed by `...` (0: whole).
pub(crate) fn payload_text(payload: &[u8], max: usize) -> String {
    if max > 0 && payload.len() > max {
        let mut out = String::from("[\"");
        push_quoted(&mut out, &payload[..max]);
        out.push_str("...\"]");
        out
    } else {
        format!("[{}]", go_quote(payload))
    }
}

impl ClientShared {
    /// `->> [text]`: something the server sent this connection.
    pub(crate) fn trace_out(&self, text: &str) {
        trace!("{} - ->> [{text}]", self.log_id());
    }

    /// A message delivered to this connection: its `MSG`/`HMSG` line and payload.
    pub(crate) fn trace_msg_out(&self, line: &str, payload: &[u8], max: usize) {
        let id = self.log_id();
        trace!("{id} - ->> [{line}]");
        trace!("{id} - ->> MSG_PAYLOAD: {}", payload_text(payload, max));
    }

    /// `<-> [DELSUB sid]`: a subscription of this connection went away.
    pub(crate) fn trace_delsub(&self, sid: &[u8]) {
        trace!(
            "{} - <-> [DELSUB {}]",
            self.log_id(),
            String::from_utf8_lossy(sid)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_as_go() {
        assert_eq!(go_quote(b"hello"), "\"hello\"");
        assert_eq!(
            go_quote(b"NATS/1.0\r\nA: B\r\n\r\nhi"),
            r#""NATS/1.0\r\nA: B\r\n\r\nhi""#
        );
        assert_eq!(go_quote(b"h\"\\\x01\xc3\xa9\xff"), r#""h\"\\\x01é\xff""#);
        assert_eq!(payload_text(b"h\"\\\x01\xc3\xa9!", 3), r#"["h\"\\..."]"#);
        assert_eq!(payload_text(b"hi", 3), r#"["hi"]"#);
    }

    #[test]
    fn tags_as_the_reference() {
        assert_eq!(client_tags("", "", "", None), "");
        assert_eq!(
            client_tags("1", "raw", "tracer", None),
            r#" - "v1:raw:tracer""#
        );
        assert_eq!(client_tags("", "go", "n", None), r#" - "go:n""#);
        assert_eq!(
            client_tags("", "", "n", Some(&AuthTag::User("u1"))),
            r#" - "n" - "$G/user:u1""#
        );
        assert_eq!(
            client_tags("", "", "", Some(&AuthTag::Token)),
            r#" - "$G/token""#
        );
    }
}
