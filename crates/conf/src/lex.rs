//! Character-level scanning. The format is context sensitive (what ends a token depends on
//! whether a key, a value or an include path is expected), so instead of a token stream the
//! lexer offers one scanning function per context and the parser picks the right one.

use std::path::Path;
use std::sync::Arc;

use crate::ConfError;

/// A scalar read from unquoted text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    DateTime(String),
    /// `$NAME`, holding `NAME`.
    Variable(String),
}

/// A key, with where it starts.
pub(crate) struct Key {
    pub text: String,
    pub quoted: bool,
    pub line: u32,
    pub col: u32,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    line: u32,
    col: u32,
    pub file: Option<Arc<Path>>,
}

/// Characters that end an unquoted value (nats-server: blanks, newlines, `;`, `,`, `]`, `}`).
fn ends_unquoted(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | ';' | ',' | ']' | '}')
}

/// Characters that end a bare key. nats-server stops only at whitespace, `=` and `:`;
/// stopping at structural characters too lets `cluster{` work and turns stray punctuation
/// into a clear error instead of a strange key.
fn ends_bare_key(c: char) -> bool {
    c.is_whitespace() || matches!(c, '=' | ':' | '{' | '}' | '[' | ']' | ',' | ';')
}

/// Makes control characters visible in messages.
pub(crate) fn show(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c => c.to_string(),
    }
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str, file: Option<Arc<Path>>) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            col: 1,
            file,
        }
    }

    pub fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.pos..].chars();
        it.next();
        it.next()
    }

    pub fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    /// Line and column of the next character.
    pub fn position(&self) -> (u32, u32) {
        (self.line, self.col)
    }

    pub fn error_at(&self, line: u32, col: u32, message: impl Into<String>) -> ConfError {
        ConfError::new(self.file.as_deref(), line, col, message)
    }

    pub fn error_here(&self, message: impl Into<String>) -> ConfError {
        self.error_at(self.line, self.col, message)
    }

    /// Skips spaces and tabs (not newlines).
    pub fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// Skips all whitespace, newlines included.
    pub fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Whether a `#` or `//` comment starts here.
    pub fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek2() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line, leaving the newline for the caller.
    pub fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
            self.bump();
        }
    }

    /// Skips whitespace, newlines and comments: what may come between entries or items.
    pub fn skip_trivia(&mut self) {
        loop {
            self.skip_whitespace();
            if !self.at_comment() {
                return;
            }
            self.skip_comment();
        }
    }

    /// Reads text up to (not including) `quote`, after the opening quote was consumed.
    fn until_quote(&mut self, quote: char, what: &str) -> Result<&'a str, ConfError> {
        let start = self.pos;
        loop {
            let end = self.pos;
            match self.bump() {
                Some(c) if c == quote => return Ok(&self.src[start..end]),
                Some(_) => {}
                None => return Err(self.error_here(format!("Unexpected EOF processing {what}."))),
            }
        }
    }

    /// A bare key, or a key in single or double quotes (taken literally, no escapes).
    pub fn key(&mut self) -> Result<Key, ConfError> {
        let (line, col) = self.position();
        let (text, quoted) = match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                (self.until_quote(q, "quoted key")?, true)
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !ends_bare_key(c)) {
                    self.bump();
                }
                let text = &self.src[start..self.pos];
                if text.is_empty() {
                    return Err(match self.peek() {
                        Some(c) => self
                            .error_here(format!("Expected a key but got '{}' instead.", show(c))),
                        None => self.error_here("Unexpected EOF, expected a key."),
                    });
                }
                (text, false)
            }
        };
        Ok(Key {
            text: text.to_string(),
            quoted,
            line,
            col,
        })
    }

    /// The path after `include` (blanks already skipped): quoted text, or bare text up to a
    /// blank, newline, `;`, `}` or `'`.
    pub fn include_path(&mut self) -> Result<String, ConfError> {
        let what = match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                return Ok(self.until_quote(q, "quoted include")?.to_string());
            }
            Some('[') => "start of an array",
            Some('{') => "start of a map",
            Some('(') => "start of a block",
            Some('\\') => "escape sequence",
            Some('\n' | '\r') => "new line",
            None => "end of file",
            Some(_) => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, ' ' | '\t' | '\n' | '\r' | ';' | '}' | '\''))
                {
                    self.bump();
                }
                return Ok(self.src[start..self.pos].to_string());
            }
        };
        Err(self.error_here(format!("Expected include value but found {what}")))
    }

    /// A `"…"` string (at the opening quote) with escapes `\t \n \r \" \\ \xHH`.
    pub fn double_quoted(&mut self) -> Result<String, ConfError> {
        self.bump();
        // Bytes, because `\xHH` escapes may spell UTF-8 sequences one byte at a time.
        let mut buf = Vec::new();
        loop {
            // Escape errors point at the backslash.
            let (line, col) = self.position();
            let Some(c) = self.bump() else {
                return Err(self.error_here("Unexpected EOF processing quoted string."));
            };
            match c {
                '"' => break,
                '\\' => {
                    let byte = match self.bump() {
                        Some('t') => b'\t',
                        Some('n') => b'\n',
                        Some('r') => b'\r',
                        Some('"') => b'"',
                        Some('\\') => b'\\',
                        Some('x') => self.hex_byte()?,
                        Some(c) => {
                            return Err(self.error_at(
                                line,
                                col,
                                format!(
                                    "Invalid escape character '{}'. Only the following escape \
                                     characters are allowed: \\xXX, \\t, \\n, \\r, \\\", \\\\.",
                                    show(c)
                                ),
                            ));
                        }
                        None => {
                            return Err(self.error_here("Unexpected EOF processing quoted string."));
                        }
                    };
                    buf.push(byte);
                }
                c => buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The two hex digits after `\x`.
    fn hex_byte(&mut self) -> Result<u8, ConfError> {
        let (line, col) = self.position();
        let mut digits = String::new();
        for _ in 0..2 {
            match self.peek() {
                Some('\n' | '\r') | None => {
                    return Err(self.error_here(
                        "Expected two hexadecimal digits after '\\x', but hit end of line",
                    ));
                }
                Some(c) => {
                    self.bump();
                    digits.push(c);
                }
            }
        }
        match u8::from_str_radix(&digits, 16) {
            // from_str_radix accepts a sign; an escape does not.
            Ok(b) if digits.chars().all(|c| c.is_ascii_hexdigit()) => Ok(b),
            _ => Err(self.error_at(
                line,
                col,
                format!("Expected two hexadecimal digits after '\\x', but got '{digits}'"),
            )),
        }
    }

    /// A `'…'` string (at the opening quote), taken literally.
    pub fn single_quoted(&mut self) -> Result<String, ConfError> {
        self.bump();
        Ok(self.until_quote('\'', "quoted string")?.to_string())
    }

    /// A `( … )` block (at the `(`): raw text up to a `)` that stands alone at the start of
    /// a line. The text keeps the newline before the `)`, as nats-server's does.
    pub fn block(&mut self) -> Result<String, ConfError> {
        self.bump();
        let start = self.pos;
        let mut prev = None;
        loop {
            let here = self.pos;
            match self.bump() {
                None => return Err(self.error_here("Unexpected EOF processing block.")),
                Some(')')
                    if prev == Some('\n') && matches!(self.peek(), None | Some('\n' | '\r')) =>
                {
                    return Ok(self.src[start..here].to_string());
                }
                c => prev = c,
            }
        }
    }

    /// An unquoted value, classified as bool, number, datetime, variable or string.
    pub fn unquoted(&mut self) -> Result<Scalar, ConfError> {
        let (line, col) = self.position();
        let start = self.pos;
        while self.peek().is_some_and(|c| !ends_unquoted(c)) {
            self.bump();
        }
        let raw = &self.src[start..self.pos];
        if raw.is_empty() {
            return Err(match self.peek() {
                Some(c) => {
                    self.error_here(format!("Expected a value but got '{}' instead.", show(c)))
                }
                None => self.error_here("Unexpected EOF, expected a value."),
            });
        }
        classify(raw).map_err(|e| self.error_at(line, col, e.to_string()))
    }
}

/// Why an unquoted token is no valid value (nats-server's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScalarError {
    #[error("Floats must start with a digit")]
    LeadingDot,
    #[error("integer '{0}' is out of the range")]
    IntRange(String),
    #[error("float '{0}' is out of the range")]
    FloatRange(String),
    #[error("expected Zulu formatted DateTime, but got '{0}'")]
    DateTime(String),
}

/// Decides what an unquoted token is.
///
/// Unlike nats-server, which switches lexer states on the first characters, this looks at
/// the whole token, so anything that is not exactly a number or datetime stays a string
/// (`127.0.0.1:4222`, `10s`, `1.5s`, `3secret`, `2020-01-01`).
pub(crate) fn classify(raw: &str) -> Result<Scalar, ScalarError> {
    const BOOLS: [(&str, bool); 6] = [
        ("true", true),
        ("yes", true),
        ("on", true),
        ("false", false),
        ("no", false),
        ("off", false),
    ];
    if let Some((_, b)) = BOOLS.iter().find(|(s, _)| raw.eq_ignore_ascii_case(s)) {
        return Ok(Scalar::Bool(*b));
    }
    if let Some(name) = raw.strip_prefix('$') {
        // bcrypt hashes look like variables; nats-server lets them through unquoted.
        if ["2a$", "2b$", "2y$"].iter().any(|p| name.starts_with(p)) {
            return Ok(Scalar::Str(raw.to_string()));
        }
        return Ok(Scalar::Variable(name.to_string()));
    }
    let bytes = raw.as_bytes();
    if bytes[0] == b'.' && bytes.get(1).is_some_and(u8::is_ascii_digit) {
        return Err(ScalarError::LeadingDot);
    }
    let body = raw.strip_prefix('-').unwrap_or(raw);
    let ndigits = body.bytes().take_while(u8::is_ascii_digit).count();
    if ndigits == 0 {
        return Ok(Scalar::Str(raw.to_string()));
    }
    let (digits, rest) = raw.split_at(raw.len() - body.len() + ndigits);
    let out_of_range = || ScalarError::IntRange(raw.to_string());
    if rest.is_empty() {
        return digits.parse().map(Scalar::Int).map_err(|_| out_of_range());
    }
    if let Some(frac) = rest.strip_prefix('.')
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
    {
        return match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Scalar::Float(f)),
            _ => Err(ScalarError::FloatRange(raw.to_string())),
        };
    }
    if is_datetime_shape(raw) {
        return if valid_datetime(raw) {
            Ok(Scalar::DateTime(raw.to_string()))
        } else {
            Err(ScalarError::DateTime(raw.to_string()))
        };
    }
    // The project spec makes a lone `m` a string, not 10^6: `ping_interval: 2m` means two
    // minutes, while nats-server would read 2000000 (seconds).
    if !rest.eq_ignore_ascii_case("m")
        && let Some(mult) = size_multiplier(rest)
    {
        let n: i64 = digits.parse().map_err(|_| out_of_range())?;
        return n
            .checked_mul(mult)
            .map(Scalar::Int)
            .ok_or_else(out_of_range);
    }
    Ok(Scalar::Str(raw.to_string()))
}

/// The factor of a size suffix (case-insensitive): `k`=10^3, `kb`/`ki`/`kib`=2^10, and so
/// on through `m`, `g`, `t`, `p`, `e`.
fn size_multiplier(suffix: &str) -> Option<i64> {
    let lower = suffix.to_ascii_lowercase();
    let mut chars = lower.chars();
    let exp = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    match chars.as_str() {
        "" => Some(1000i64.pow(exp)),
        "b" | "i" | "ib" => Some(1i64 << (10 * exp)),
        _ => None,
    }
}

/// Parses a size such as `1k`, `8MB`, `64mib` or `1000` the way unquoted integers are read,
/// except that a lone `m` here means 10^6. For sizes given as quoted strings.
pub fn parse_size(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let ndigits = body.bytes().take_while(u8::is_ascii_digit).count();
    if ndigits == 0 {
        return None;
    }
    let (digits, rest) = s.split_at(s.len() - body.len() + ndigits);
    let n: i64 = digits.parse().ok()?;
    if rest.is_empty() {
        return Some(n);
    }
    n.checked_mul(size_multiplier(rest)?)
}

/// `YYYY-MM-DDTHH:MM:SSZ` by character class.
fn is_datetime_shape(s: &str) -> bool {
    const SHAPE: &[u8; 20] = b"0000-00-00T00:00:00Z";
    s.len() == SHAPE.len()
        && s.bytes().zip(SHAPE).all(|(c, &p)| {
            if p == b'0' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

/// Checks field ranges of a datetime already known to have the right shape.
fn valid_datetime(s: &str) -> bool {
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, min, sec) = (num(11..13), num(14..16), num(17..19));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour < 24 && min < 60 && sec < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Scalar {
        classify(s).unwrap()
    }

    fn s(v: &str) -> Scalar {
        Scalar::Str(v.to_string())
    }

    #[test]
    fn bools_any_case() {
        for t in ["true", "TRUE", "Yes", "on", "ON"] {
            assert_eq!(c(t), Scalar::Bool(true), "{t}");
        }
        for f in ["false", "No", "off", "OFF"] {
            assert_eq!(c(f), Scalar::Bool(false), "{f}");
        }
        assert_eq!(c("truely"), s("truely"));
    }

    #[test]
    fn integers_and_suffixes() {
        assert_eq!(c("4222"), Scalar::Int(4222));
        assert_eq!(c("-17"), Scalar::Int(-17));
        assert_eq!(c("007"), Scalar::Int(7));
        assert_eq!(c("1k"), Scalar::Int(1000));
        assert_eq!(c("10K"), Scalar::Int(10_000));
        assert_eq!(c("1kb"), Scalar::Int(1024));
        assert_eq!(c("1Ki"), Scalar::Int(1024));
        assert_eq!(c("1KiB"), Scalar::Int(1024));
        assert_eq!(c("8MB"), Scalar::Int(8 * 1024 * 1024));
        assert_eq!(c("2mib"), Scalar::Int(2 << 20));
        assert_eq!(c("3g"), Scalar::Int(3_000_000_000));
        assert_eq!(c("1GB"), Scalar::Int(1 << 30));
        assert_eq!(c("1t"), Scalar::Int(1_000_000_000_000));
        assert_eq!(c("1tb"), Scalar::Int(1 << 40));
        assert_eq!(c("1p"), Scalar::Int(1_000_000_000_000_000));
        assert_eq!(c("1pb"), Scalar::Int(1 << 50));
        assert_eq!(c("1e"), Scalar::Int(1_000_000_000_000_000_000));
        assert_eq!(c("1EB"), Scalar::Int(1 << 60));
        assert_eq!(c("-2k"), Scalar::Int(-2000));
        assert!(classify("9223372036854775808").is_err());
        assert!(
            classify("16eb")
                .unwrap_err()
                .to_string()
                .contains("out of the range")
        );
        assert_eq!(c("9223372036854775807"), Scalar::Int(i64::MAX));
    }

    #[test]
    fn digit_led_non_numbers_are_strings() {
        for v in [
            "127.0.0.1:4222",
            "0.0.0.0",
            "10s",
            "2m",
            "2M",
            "1h30m",
            "1.5s",
            "3secret",
            "1kbb",
            "1e5",
            "2020-01-01",
            "1.",
            "-x",
            "-",
            "4222#c",
        ] {
            assert_eq!(c(v), s(v), "{v}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(c("1.5"), Scalar::Float(1.5));
        assert_eq!(c("-0.25"), Scalar::Float(-0.25));
        assert!(
            classify(".5")
                .unwrap_err()
                .to_string()
                .contains("start with a digit")
        );
        assert_eq!(c("./nats.log"), s("./nats.log"));
    }

    #[test]
    fn datetimes() {
        assert_eq!(
            c("2016-05-04T18:53:41Z"),
            Scalar::DateTime("2016-05-04T18:53:41Z".into())
        );
        assert_eq!(
            c("2024-02-29T00:00:00Z"),
            Scalar::DateTime("2024-02-29T00:00:00Z".into())
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2016-13-04T18:53:41Z",
            "2016-05-04T24:00:00Z",
        ] {
            assert!(
                classify(bad).unwrap_err().to_string().contains("Zulu"),
                "{bad}"
            );
        }
    }

    #[test]
    fn variables_and_bcrypt() {
        assert_eq!(c("$PORT"), Scalar::Variable("PORT".into()));
        assert_eq!(c("$"), Scalar::Variable(String::new()));
        let hash = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";
        assert_eq!(c(hash), s(hash));
        assert_eq!(c("$2b$10$abc"), s("$2b$10$abc"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1m"), Some(1_000_000));
        assert_eq!(parse_size("8MB"), Some(8 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99eb"), None);
    }

    #[test]
    fn blocks_end_at_lone_paren() {
        let mut lx = Lexer::new("(\nline one)\n  )\n)\nrest", None);
        assert_eq!(lx.block().unwrap(), "\nline one)\n  )\n");
        assert_eq!(lx.peek(), Some('\n'));
        let mut lx = Lexer::new("(abc)", None);
        assert!(lx.block().is_err());
    }

    #[test]
    fn double_quoted_escapes() {
        let mut lx = Lexer::new(r#""a\tb\nc\rd\"e\\f\x41\xc3\xa9 $X""#, None);
        assert_eq!(lx.double_quoted().unwrap(), "a\tb\nc\rd\"e\\fAé $X");
        let mut lx = Lexer::new(r#""\q""#, None);
        assert!(
            lx.double_quoted()
                .unwrap_err()
                .message
                .contains("Invalid escape")
        );
        let mut lx = Lexer::new(r#""\x+1""#, None);
        assert!(lx.double_quoted().is_err());
        let mut lx = Lexer::new(r#""\xff""#, None);
        assert_eq!(lx.double_quoted().unwrap(), "\u{fffd}");
    }

    #[test]
    fn positions_count_characters() {
        let mut lx = Lexer::new("é\nab", None);
        lx.bump();
        assert_eq!(lx.position(), (1, 2));
        lx.bump();
        assert_eq!(lx.position(), (2, 1));
    }
}
