//! Query parameters as the reference reads them: decoded as Go's `url.ParseQuery` does, the
//! first value of a name wins (`Query().Get`), and errors in the reference's words.

use super::Reply;

/// Query parameters, decoded; the first value of a name wins (Go's `Query().Get`).
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// The value, or "" when absent.
    pub(super) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Go `strconv.ParseBool` forms; "" is false.
    pub(super) fn bool(&self, name: &str) -> Result<bool, Reply> {
        let v = self.get(name);
        match v {
            "" => Ok(false),
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(Reply::BadRequest(format!(
                "Error decoding boolean for '{name}': strconv.ParseBool: parsing \"{v}\": invalid syntax"
            ))),
        }
    }

    pub(super) fn int(&self, name: &str) -> Result<i64, Reply> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(0);
        }
        v.parse::<i64>().map_err(|e| {
            let why = if matches!(
                e.kind(),
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
            ) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Reply::BadRequest(format!(
                "Error decoding int for '{name}': strconv.Atoi: parsing \"{v}\": {why}"
            ))
        })
    }

    pub(super) fn uint(&self, name: &str) -> Result<u64, Reply> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(0);
        }
        v.parse::<u64>().map_err(|e| {
            let why = if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Reply::BadRequest(format!(
                "Error decoding uint64 for '{name}': strconv.ParseUint: parsing \"{v}\": {why}"
            ))
        })
    }

    /// `subs`: a boolean, or `detail`. Returns (subs, detail).
    pub(super) fn subs(&self) -> Result<(bool, bool), Reply> {
        if self.get("subs").eq_ignore_ascii_case("detail") {
            return Ok((false, true));
        }
        Ok((self.bool("subs")?, false))
    }
}

/// Decodes one query component as Go's `url.QueryUnescape`, leniently: `+` is a space, `%XX`
/// a byte, a `%` without two hex digits stays as it is; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits, each checked (`from_str_radix` would take "+1").
                let digit = |at: usize| bytes.get(at).and_then(|&c| (c as char).to_digit(16));
                let hex = digit(i + 1)
                    .zip(digit(i + 2))
                    .map(|(hi, lo)| (hi << 4 | lo) as u8);
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse("subs=detail&test=foo%2Ebar&x=a+b&limit=2&limit=3&flag");
        assert_eq!(q.get("test"), "foo.bar");
        assert_eq!(q.get("x"), "a b");
        assert_eq!(q.get("limit"), "2");
        assert_eq!(q.get("flag"), "");
        assert_eq!(q.get("missing"), "");
        assert!(matches!(q.subs(), Ok((false, true))));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(percent_decode("%4"), "%4");
        let q = Query::parse("subs=maybe&limit=x");
        let Err(Reply::BadRequest(msg)) = q.subs() else {
            panic!("subs=maybe accepted")
        };
        assert_eq!(
            msg,
            "Error decoding boolean for 'subs': strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        let Err(Reply::BadRequest(msg)) = q.int("limit") else {
            panic!("limit=x accepted")
        };
        assert_eq!(
            msg,
            "Error decoding int for 'limit': strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }
}
