//! Subject syntax: dot-separated non-empty tokens; `*` and `>` are wildcards only as whole
//! tokens, and `>` only as the last one.

/// Splits a subject into its tokens (empty tokens included, so validation can see them).
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> {
    subject.split(|&b| b == b'.')
}

fn token_has_bad_byte(token: &[u8]) -> bool {
    token
        .iter()
        .any(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0c))
}

/// A subject (or reply subject, or queue name) that can go in a `PUB`/`SUB` line: not empty,
/// no whitespace or control bytes. The server takes wildcard tokens in a published subject
/// as literals, so they are not refused here.
pub fn is_valid_publish_subject(subject: &[u8]) -> bool {
    !subject.is_empty()
        && !subject
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// A subject valid for SUB: wildcards allowed, `>` last.
pub fn is_valid_subject(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut after_fwc = false;
    for token in tokens(subject) {
        if token.is_empty() || after_fwc || token_has_bad_byte(token) {
            return false;
        }
        if token == b">" {
            after_fwc = true;
        }
    }
    true
}

/// A subject valid for publishing: valid and without wildcard tokens.
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    is_valid_subject(subject) && tokens(subject).all(|t| t != b"*" && t != b">")
}

/// Whether a literal `subject` matches `pattern` (which may hold `*` and `>`).
pub fn subject_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut subject_tokens = tokens(subject);
    for pt in tokens(pattern) {
        if pt == b">" {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(st) if pt == b"*" || pt == st => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects() {
        for ok in [&b"foo"[..], b"foo.>", b"a..b", b"_INBOX.x*"] {
            assert!(is_valid_publish_subject(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"foo bar",
            b"foo\tbar",
            b"a\r\n",
            b"a\x00b",
            b"a\x7f",
        ] {
            assert!(!is_valid_publish_subject(bad), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(subject_matches(b"foo.*", b"foo.bar"));
        assert!(!subject_matches(b"foo.*", b"foo.bar.baz"));
        assert!(subject_matches(b"foo.>", b"foo.bar.baz"));
        assert!(!subject_matches(b"foo.>", b"foo"));
        assert!(subject_matches(b">", b"a"));
        assert!(subject_matches(b"a.b", b"a.b"));
        assert!(!subject_matches(b"a.b", b"a.b.c"));
        assert!(!subject_matches(b"a.b.c", b"a.b"));
    }

    #[test]
    fn valid_and_invalid_subjects() {
        for ok in [
            "foo", "foo.bar", "foo.*", "foo.>", ">", "*", "foo*.b>r", "a.*.c.>", "ü.ñ",
        ] {
            assert!(is_valid_subject(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            "> .a",
            "a b",
            "a\tb",
            ">.>",
        ] {
            assert!(!is_valid_subject(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn literal_subjects() {
        assert!(is_valid_literal_subject(b"foo.bar"));
        assert!(is_valid_literal_subject(b"foo*.bar>"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b">"));
        assert!(!is_valid_literal_subject(b"foo..bar"));
    }
}
