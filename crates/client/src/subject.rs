//! Client-side subject checks, so that a mistake fails locally with a clear error instead of
//! as a `-ERR` (or a silently closed connection) from the server.

/// A subject to publish to: not empty, no whitespace or control bytes. (The server accepts
/// wildcard tokens in publish subjects as literals, so they are not refused here.)
pub fn is_valid_publish_subject(s: &str) -> bool {
    rnats_protocol::is_valid_publish_subject(s.as_bytes())
}

/// A subject to subscribe to: dot-separated non-empty tokens, no whitespace, `>` only as the
/// last token.
pub fn is_valid_subject(s: &str) -> bool {
    if !is_valid_publish_subject(s) {
        return false;
    }
    let mut tokens = s.split('.').peekable();
    while let Some(t) = tokens.next() {
        if t.is_empty() || (t == ">" && tokens.peek().is_some()) {
            return false;
        }
    }
    true
}

/// A queue group name: one non-empty token without whitespace.
pub fn is_valid_queue(q: &str) -> bool {
    is_valid_publish_subject(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in [
            "foo", "foo.bar", "foo.*", "foo.>", ">", "*", "foo*.b>r", "ä.ö",
        ] {
            assert!(is_valid_subject(ok), "{ok}");
        }
        for bad in [
            "",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            "foo bar",
            "foo\tbar",
            "a\r\n",
        ] {
            assert!(!is_valid_subject(bad), "{bad:?}");
        }
        assert!(is_valid_publish_subject("foo.>"));
        assert!(!is_valid_publish_subject("foo bar"));
        assert!(!is_valid_publish_subject(""));
        assert!(is_valid_queue("workers"));
        assert!(!is_valid_queue("a b"));
    }
}
