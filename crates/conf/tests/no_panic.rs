//! Property tests: parsing arbitrary input returns `Ok` or `Err`, never panics (or
//! overflows the stack), and simple generated documents read back as written.

use proptest::prelude::*;
use rnats_conf::{parse_duration, parse_size, parse_str_with_env};

/// Environment for the properties: a few variables whose values are themselves
/// configuration fragments, including references to each other.
fn env(name: &str) -> Option<String> {
    let v = match name {
        "A" => "4222",
        "B" => "[1, $A, { x: $C }]",
        "C" => "$B",
        "D" => "\"quoted $A\"",
        "E" => "",
        _ => return None,
    };
    Some(v.to_string())
}

/// Pieces of configuration syntax, so random documents get past the first token often.
const FRAGMENTS: &[&str] = &[
    "a",
    "key",
    "include",
    " ",
    "\t",
    "\n",
    "\r\n",
    ":",
    "=",
    ";",
    ",",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\n)\n",
    "\"",
    "'",
    "\\",
    "\\x4",
    "\\q",
    "#",
    "//",
    "$",
    "$A",
    "$B",
    "$C",
    "$D",
    "$E",
    "$a",
    "$2a$",
    "1",
    "-",
    "-1",
    "4222",
    "1.5",
    ".5",
    "8MB",
    "1k",
    "2m",
    "10s",
    "99999999999999999999",
    "2016-05-04T18:53:41Z",
    "2016-13-04T18:53:41Z",
    "true",
    "off",
    "127.0.0.1:4222",
    "nats://u:p@h:1",
    "é",
    "\u{0}",
];

fn run(text: &str) {
    let _ = parse_str_with_env(text, &env);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_unicode_never_panics(text in any::<String>()) {
        run(&text);
    }

    #[test]
    fn printable_ascii_never_panics(text in "[ -~\t\n\r]{0,300}") {
        run(&text);
    }

    #[test]
    fn fragment_soup_never_panics(parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60)) {
        run(&parts.concat());
    }

    #[test]
    fn helpers_never_panic(text in "[-+0-9.a-zA-Zµμ]{0,30}") {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
    }

    #[test]
    fn simple_documents_read_back(entries in prop::collection::vec(("[a-z_][a-z0-9_]{0,8}".prop_filter("keyword", |k| k != "include"), any::<i64>(), 0..3usize), 0..20)) {
        let mut text = String::new();
        for (key, value, sep) in &entries {
            text += &format!("{key}{}{value}\n", [": ", " = ", " "][*sep]);
        }
        let map = parse_str_with_env(&text, &env).unwrap();
        for (key, _, _) in &entries {
            let last = entries.iter().rev().find(|(k, _, _)| k == key).map(|e| e.1);
            prop_assert_eq!(map.get(key).and_then(|v| v.as_i64()), last);
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{", "a {", "a: [{b: "] {
        let text = format!("x: {}", open.repeat(50_000));
        assert!(parse_str_with_env(&text, &env).is_err());
    }
}
