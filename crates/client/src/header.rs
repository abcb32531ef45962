//! Message headers (NATS ADR-4): an ordered, case-preserving multi-map, plus the status line.
//!
//! ```text
//! NATS/1.0[ SP <3-digit status>[ SP <description>]]␍␊
//! (<Name>: <value>␍␊)*
//! ␍␊
//! ```

use std::fmt;

/// Status the server puts in the header block when a request reached no subscriber.
pub const NO_RESPONDERS: u16 = 503;

/// Headers of a message: names keep their case and order; a name may repeat.
/// Lookups compare names exactly, as the server delivers them exactly as published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, String)>,
}

/// A header name or value that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    #[error("header name {0:?} is empty or contains ':', whitespace or control characters")]
    Name(String),
    #[error("header value for {0:?} contains CR or LF")]
    Value(String),
}

impl HeaderMap {
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    /// Sets `name` to `value`, replacing any earlier values of `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let name = name.into();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value.into()));
        self
    }

    /// Adds a value for `name`, keeping earlier ones.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.entries.push((name.into(), value.into()));
        self
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that every name and value can go on the wire.
    pub fn validate(&self) -> Result<(), InvalidHeader> {
        for (n, v) in &self.entries {
            if n.is_empty()
                || n.bytes()
                    .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(InvalidHeader::Name(n.clone()));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(InvalidHeader::Value(n.clone()));
            }
        }
        Ok(())
    }

    /// The header block: `NATS/1.0␍␊`, one line per entry, and the blank line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            12 + self
                .entries
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>(),
        );
        out.extend_from_slice(b"NATS/1.0\r\n");
        for (n, v) in &self.entries {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for HeaderMap {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        HeaderMap {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

impl fmt::Display for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.entries {
            writeln!(f, "{n}: {v}")?;
        }
        Ok(())
    }
}

/// A parsed header block: the headers, and the status and description of the version line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedHeaders {
    pub headers: HeaderMap,
    pub status: Option<u16>,
    pub description: Option<String>,
}

/// Parses a header block as delivered in an `HMSG`. Lenient: lines without a `:` are skipped,
/// bytes that are not UTF-8 are replaced. `None` when the version line is missing.
pub fn parse_headers(block: &[u8]) -> Option<ParsedHeaders> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split("\r\n");
    let version = lines.next()?;
    let rest = version.strip_prefix("NATS/1.0")?;
    let mut parsed = ParsedHeaders::default();
    let rest = rest.trim_start();
    if !rest.is_empty() {
        let (code, desc) = rest.split_once(' ').unwrap_or((rest, ""));
        parsed.status = code.parse().ok();
        let desc = desc.trim();
        if !desc.is_empty() {
            parsed.description = Some(desc.to_string());
        }
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            parsed.headers.append(n.trim(), v.trim());
        }
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_case_and_repeats() {
        let mut h = HeaderMap::new();
        h.append("X-A", "1").append("x-a", "2").append("X-A", "3");
        let bytes = h.to_bytes();
        assert_eq!(bytes, b"NATS/1.0\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n");
        let p = parse_headers(&bytes).unwrap();
        assert_eq!(p.headers, h);
        assert_eq!(p.status, None);
        assert_eq!(p.headers.get_all("X-A").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(p.headers.get("x-a"), Some("2"));
    }

    #[test]
    fn insert_replaces() {
        let mut h: HeaderMap = [("a", "1"), ("a", "2"), ("b", "3")].into_iter().collect();
        h.insert("a", "9");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("b", "3"), ("a", "9")]);
        h.remove("b");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn status_lines() {
        let p = parse_headers(b"NATS/1.0 503\r\nNats-Subject: svc\r\n\r\n").unwrap();
        assert_eq!(p.status, Some(NO_RESPONDERS));
        assert_eq!(p.description, None);
        assert_eq!(p.headers.get("Nats-Subject"), Some("svc"));
        let p = parse_headers(b"NATS/1.0 408 Request Timeout\r\n\r\n").unwrap();
        assert_eq!(p.status, Some(408));
        assert_eq!(p.description.as_deref(), Some("Request Timeout"));
        assert!(parse_headers(b"HTTP/1.1 200\r\n\r\n").is_none());
    }

    #[test]
    fn values_may_contain_colons() {
        let p = parse_headers(b"NATS/1.0\r\nUrl: nats://a:4222\r\n\r\n").unwrap();
        assert_eq!(p.headers.get("Url"), Some("nats://a:4222"));
    }

    #[test]
    fn validation() {
        assert!(HeaderMap::new().validate().is_ok());
        let bad_name: HeaderMap = [("a b", "1")].into_iter().collect();
        assert!(matches!(bad_name.validate(), Err(InvalidHeader::Name(_))));
        let bad_value: HeaderMap = [("a", "1\r\nX: y")].into_iter().collect();
        assert!(matches!(bad_value.validate(), Err(InvalidHeader::Value(_))));
    }
}
