use std::fs;
use std::path::Path;

use crate::{ConfError, Map, Spanned, Value, parse_file_with_env, parse_str_with_env};

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Map {
    parse_str_with_env(text, &no_env).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

fn parse_err(text: &str) -> ConfError {
    match parse_str_with_env(text, &no_env) {
        Ok(m) => panic!("expected an error, got {m:?}\n---\n{text}"),
        Err(e) => e,
    }
}

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Map, ConfError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    };
    parse_str_with_env(text, &env)
}

fn get<'m>(m: &'m Map, path: &str) -> &'m Spanned {
    let mut parts = path.split('.');
    let mut v = m
        .get(parts.next().unwrap())
        .unwrap_or_else(|| panic!("no {path}"));
    for p in parts {
        v = match p.parse::<usize>() {
            Ok(i) => &v
                .as_array()
                .unwrap_or_else(|| panic!("{path}: not an array"))[i],
            Err(_) => v
                .as_map()
                .and_then(|m| m.get(p))
                .unwrap_or_else(|| panic!("no {path}")),
        };
    }
    v
}

fn s<'m>(m: &'m Map, path: &str) -> &'m str {
    get(m, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path}: not a string: {:?}", get(m, path).value))
}

fn i(m: &Map, path: &str) -> i64 {
    get(m, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path}: not an integer: {:?}", get(m, path).value))
}

fn b(m: &Map, path: &str) -> bool {
    get(m, path).as_bool().unwrap()
}

#[test]
fn key_value_separators() {
    let m = parse("a: 1\nb = 2\nc 3\nd:4\ne=5\nf\t6\ng :  7\n");
    for (k, v) in [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("e", 5),
        ("f", 6),
        ("g", 7),
    ] {
        assert_eq!(i(&m, k), v, "{k}");
    }
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e", "f", "g"]
    );
}

#[test]
fn entry_separators() {
    let m = parse("a: 1; b: 2, c: 3\nd: 4;\n");
    assert_eq!(m.len(), 4);
    let m = parse("m { a: 1, b: 2; c: 3\n d: 4 }");
    assert_eq!(get(&m, "m").as_map().unwrap().len(), 4);
    let e = parse_err("a: 1 b: 2");
    assert!(e.message.contains("top-level value to end"), "{e}");
    assert_eq!((e.line, e.col), (1, 6));
    let e = parse_err("m { a: 1 b: 2 }");
    assert!(e.message.contains("map value terminator"), "{e}");
}

#[test]
fn blocks_and_nested_maps() {
    let m = parse(
        "cluster {\n  name: c1\n  authorization { user: route, timeout: 2 }\n}\n\
         tls{verify:true}\nsys\n{\n  x: 1\n}\nmap_sep: { a: { b: { c: deep } } }\n",
    );
    assert_eq!(s(&m, "cluster.name"), "c1");
    assert_eq!(s(&m, "cluster.authorization.user"), "route");
    assert_eq!(i(&m, "cluster.authorization.timeout"), 2);
    assert!(b(&m, "tls.verify"));
    assert_eq!(i(&m, "sys.x"), 1);
    assert_eq!(s(&m, "map_sep.a.b.c"), "deep");
    assert!(
        parse("empty {}")
            .get("empty")
            .unwrap()
            .as_map()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn optional_outer_braces() {
    let m = parse("{\n  a: 1\n  b: { c: 2 }\n}\n");
    assert_eq!(i(&m, "a"), 1);
    assert_eq!(i(&m, "b.c"), 2);
    let m = parse("{ \"a\": 1, \"b\": [1, 2], \"c\": {\"d\": true} }");
    assert_eq!(i(&m, "b.1"), 2);
    assert!(b(&m, "c.d"));
    assert!(parse("{}").is_empty());
    assert!(parse_err("{ a: 1").message.contains("EOF"));
    assert!(parse_err("a: 1\n}").message.contains("Unexpected '}'"));
}

#[test]
fn arrays() {
    let m = parse(
        "a: [1, 2, 3]\nb: [\n  x\n  y, z,\n]\nc: []\nd [ [1, 2], [] ]\n\
         e: [ # comment\n  one // another\n  \"two\"\n]\nf: [1,\n2]\n",
    );
    let a: Vec<i64> = get(&m, "a")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(a, [1, 2, 3]);
    let bs: Vec<&str> = get(&m, "b")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(bs, ["x", "y", "z"]);
    assert!(get(&m, "c").as_array().unwrap().is_empty());
    assert_eq!(i(&m, "d.0.1"), 2);
    assert!(get(&m, "d.1").as_array().unwrap().is_empty());
    assert_eq!(s(&m, "e.0"), "one");
    assert_eq!(s(&m, "e.1"), "two");
    assert_eq!(i(&m, "f.1"), 2);
    assert!(
        parse_err("a: [1,,2]")
            .message
            .contains("array value terminator")
    );
    assert!(
        parse_err("a: [,1]")
            .message
            .contains("array value terminator")
    );
    assert!(parse_err("a: [1 2]").message.contains("array terminator"));
    assert!(parse_err("a: [1, 2").message.contains("EOF"));
}

#[test]
fn arrays_of_maps_and_urls() {
    let m = parse(
        "routes = [\n  nats-route://route:pw@10.0.0.2:6222\n  nats-route://route:pw@10.0.0.3:6222\n]\n\
         users: [ {user: a, password: b}, {user: c} ]\n",
    );
    assert_eq!(s(&m, "routes.0"), "nats-route://route:pw@10.0.0.2:6222");
    assert_eq!(s(&m, "routes.1"), "nats-route://route:pw@10.0.0.3:6222");
    assert_eq!(s(&m, "users.0.password"), "b");
    assert_eq!(s(&m, "users.1.user"), "c");
}

#[test]
fn quoted_keys() {
    let m = parse("\"a b\": 1\n'c:d' = 2\n\"\": 3\nm { \"x y\" { z: 4 } }\n\"q\" 5\n");
    assert_eq!(i(&m, "a b"), 1);
    assert_eq!(i(&m, "c:d"), 2);
    assert_eq!(i(&m, ""), 3);
    assert_eq!(
        get(&m, "m")
            .as_map()
            .unwrap()
            .get("x y")
            .unwrap()
            .as_map()
            .unwrap()
            .get("z")
            .unwrap()
            .as_i64(),
        Some(4)
    );
    assert_eq!(i(&m, "q"), 5);
    assert!(parse_err("\"abc: 1").message.contains("EOF"));
}

#[test]
fn comments() {
    let m = parse(
        "# leading\n// also\nport: 4222 # client port\nhost: h // trailing\n\
         glued: abc#def\nurl: http://x//y\nm { # in map\n  a: 1 // after\n  // alone\n}\n  # indented\n",
    );
    assert_eq!(i(&m, "port"), 4222);
    assert_eq!(s(&m, "host"), "h");
    assert_eq!(s(&m, "glued"), "abc#def");
    assert_eq!(s(&m, "url"), "http://x//y");
    assert_eq!(i(&m, "m.a"), 1);
    assert_eq!(m.len(), 5);
    let m = parse("a: \"x\"# right after a quote\nb: 'y'// too\n");
    assert_eq!(s(&m, "a"), "x");
    assert_eq!(s(&m, "b"), "y");
    assert_eq!(s(&parse("p: 4222#x"), "p"), "4222#x");
}

#[test]
fn strings() {
    let m = parse(
        "dq: \"tab\\tnl\\ncr\\rq\\\"bs\\\\hex\\x41\"\nsq: 'raw \\t $X \"'\nvar_in_quotes: \"$X\"\n\
         multi: \"a\nb\"\nempty: \"\"\nunq: some-thing.else/path?x=1\n",
    );
    assert_eq!(s(&m, "dq"), "tab\tnl\ncr\rq\"bs\\hexA");
    assert_eq!(s(&m, "sq"), "raw \\t $X \"");
    assert_eq!(s(&m, "var_in_quotes"), "$X");
    assert_eq!(s(&m, "multi"), "a\nb");
    assert_eq!(s(&m, "empty"), "");
    assert_eq!(s(&m, "unq"), "some-thing.else/path?x=1");
    let e = parse_err("a: \"\\q\"");
    assert!(e.message.starts_with("Invalid escape character 'q'"), "{e}");
    assert!(parse_err("a: \"\\xZZ\"").message.contains("hexadecimal"));
    assert!(parse_err("a: \"abc").message.contains("EOF"));
    assert!(parse_err("a: 'abc").message.contains("EOF"));
}

#[test]
fn digit_led_strings() {
    let m = parse(
        "listen: 127.0.0.1:4222\nhttp: 0.0.0.0:8222\na: 10s\nb: 2m\nc: 3secret\nd: 1h30m\n\
         e: 1.5s\nf: [10s, 2m]\ng: 2020-01-01\n",
    );
    assert_eq!(s(&m, "listen"), "127.0.0.1:4222");
    assert_eq!(s(&m, "http"), "0.0.0.0:8222");
    assert_eq!(s(&m, "a"), "10s");
    assert_eq!(s(&m, "b"), "2m");
    assert_eq!(s(&m, "c"), "3secret");
    assert_eq!(s(&m, "d"), "1h30m");
    assert_eq!(s(&m, "e"), "1.5s");
    assert_eq!(s(&m, "f.1"), "2m");
    assert_eq!(s(&m, "g"), "2020-01-01");
}

#[test]
fn booleans() {
    let m = parse("a: true\nb: FALSE\nc: yes\nd: No\ne: on\nf: OFF\ng: \"true\"\nh: truth\n");
    assert!(b(&m, "a") && !b(&m, "b") && b(&m, "c") && !b(&m, "d") && b(&m, "e") && !b(&m, "f"));
    assert_eq!(s(&m, "g"), "true");
    assert_eq!(s(&m, "h"), "truth");
}

#[test]
fn numbers() {
    let m = parse(
        "max_payload: 8MB\nmax_connections: 10k\none_k: 1k\nkb: 4kb\nneg: -3\nf: 2.5\nnf: -0.5\n\
         big: 1GB\narr: [1k, 2kb]\nm { x: 1m1 }\n",
    );
    assert_eq!(i(&m, "max_payload"), 8_388_608);
    assert_eq!(i(&m, "max_connections"), 10_000);
    assert_eq!(i(&m, "one_k"), 1000);
    assert_eq!(i(&m, "kb"), 4096);
    assert_eq!(i(&m, "neg"), -3);
    assert_eq!(get(&m, "f").value, Value::Float(2.5));
    assert_eq!(get(&m, "nf").value, Value::Float(-0.5));
    assert_eq!(i(&m, "big"), 1 << 30);
    assert_eq!(i(&m, "arr.0"), 1000);
    assert_eq!(i(&m, "arr.1"), 2048);
    assert_eq!(s(&m, "m.x"), "1m1");
    assert!(
        parse_err("a: 99999999999999999999")
            .message
            .contains("out of the range")
    );
    assert!(parse_err("a: .5").message.contains("start with a digit"));
}

#[test]
fn datetimes() {
    let m = parse("t: 2016-05-04T18:53:41Z\n");
    assert_eq!(
        get(&m, "t").value,
        Value::DateTime("2016-05-04T18:53:41Z".into())
    );
    assert!(
        parse_err("t: 2016-02-30T00:00:00Z")
            .message
            .contains("Zulu")
    );
}

#[test]
fn raw_blocks() {
    let m = parse("text: (\n  line one\n  has ) and ( inside\n)\nnext: 1\nb2 (\nx\n)");
    assert_eq!(s(&m, "text"), "\n  line one\n  has ) and ( inside\n");
    assert_eq!(i(&m, "next"), 1);
    assert_eq!(s(&m, "b2"), "\nx\n");
    assert!(
        parse_err("t: (abc)\n")
            .message
            .contains("EOF processing block")
    );
}

#[test]
fn later_keys_override() {
    let m = parse("a: 1\nb: 2\na: 3\n");
    assert_eq!(i(&m, "a"), 3);
    assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "a"]);
    let m = parse("Port: 1\nport: 2\n");
    assert_eq!(m.len(), 2, "keys are case-sensitive in the tree");
    assert_eq!(m.get_ci("PORT").unwrap().as_i64(), Some(2));
}

#[test]
fn variables_from_scopes() {
    let m = parse(
        "port: 4222\nlisten: $port\nm {\n  port: 5000\n  inner: $port\n  deep { x: $port, y: $inner }\n}\n\
         after: $port\narr: [$port, { p: $port }]\n",
    );
    assert_eq!(i(&m, "listen"), 4222);
    assert_eq!(i(&m, "m.inner"), 5000, "innermost scope first");
    assert_eq!(i(&m, "m.deep.x"), 5000);
    assert_eq!(i(&m, "m.deep.y"), 5000);
    assert_eq!(i(&m, "after"), 4222, "inner keys are not visible outside");
    assert_eq!(i(&m, "arr.0"), 4222);
    assert_eq!(i(&m, "arr.1.p"), 4222);
    // Whole structures are copied.
    let m = parse("perms: { publish: [a, b] }\nuser: { permissions: $perms }\n");
    assert_eq!(s(&m, "user.permissions.publish.1"), "b");
    // The value takes the reference's position.
    let m = parse("a: 1\nb:   $a\n");
    assert_eq!((get(&m, "b").line, get(&m, "b").col), (2, 6));
}

#[test]
fn variables_mark_used_keys() {
    let m = parse("PASS: secret\nunused: 1\nuser: { password: $PASS }\n");
    assert!(m.entry("PASS").unwrap().used_as_variable);
    assert!(!m.entry("unused").unwrap().used_as_variable);
    assert!(!m.entry("user").unwrap().used_as_variable);
}

#[test]
fn variables_case_sensitive_and_only_earlier_keys() {
    let e = parse_err("a: $later\nlater: 1\n");
    assert_eq!(
        e.message,
        "variable reference for 'later' on line 1 can not be found"
    );
    assert_eq!((e.line, e.col), (1, 4));
    let e = parse_err("\n\nPort: 1\nx: $port\n");
    assert_eq!(
        e.to_string(),
        "4:4: variable reference for 'port' on line 4 can not be found"
    );
}

#[test]
fn variables_from_environment() {
    let vars = [
        ("NATS_PASS", "s3cr3t"),
        ("PORT", "4222"),
        ("LIST", "[a, b]"),
        ("MAP", "{ x: 1 }"),
        ("QUOTED", "\"a b\""),
        ("EMPTY", ""),
        ("NESTED", "$PORT"),
        ("SIZE", "1MB"),
        ("port", "shadowed"),
    ];
    let m = with_env(
        "pass: $NATS_PASS\nport: $PORT\nlist: $LIST\nmap: $MAP\nq: $QUOTED\ne: $EMPTY\n\
         n: $NESTED\nsize: $SIZE\nagain: $port\n",
        &vars,
    )
    .unwrap();
    assert_eq!(s(&m, "pass"), "s3cr3t");
    assert_eq!(i(&m, "port"), 4222, "environment values are parsed");
    assert_eq!(s(&m, "list.1"), "b");
    assert_eq!(i(&m, "map.x"), 1);
    assert_eq!(s(&m, "q"), "a b");
    assert_eq!(s(&m, "e"), "");
    assert_eq!(i(&m, "n"), 4222);
    assert_eq!(i(&m, "size"), 1 << 20);
    assert_eq!(i(&m, "again"), 4222, "config keys win over the environment");
    assert_eq!((get(&m, "list.1").line, get(&m, "list.1").col), (3, 7));
}

#[test]
fn environment_errors() {
    let e = with_env("a: $A\n", &[("A", "$B"), ("B", "$A")]).unwrap_err();
    assert!(e.message.contains("cycle"), "{e}");
    assert!(
        e.message
            .starts_with("variable reference for 'A' on line 1 could not be parsed"),
        "{e}"
    );
    let e = with_env("a: $A", &[("A", "$A")]).unwrap_err();
    assert!(
        e.message.contains("variable reference cycle for 'A'"),
        "{e}"
    );
    let e = with_env("a: $A", &[("A", "foo bar")]).unwrap_err();
    assert!(e.message.contains("could not be parsed"), "{e}");
    let e = with_env("a: $A", &[("A", "\"unterminated")]).unwrap_err();
    assert!(e.message.contains("could not be parsed"), "{e}");
    assert!(parse_err("a: $").message.contains("for '' on line 1"));
    assert!(parse_err("a: $X=Y").message.contains("can not be found"));
}

#[test]
fn bcrypt_is_not_a_variable() {
    let m =
        parse("a: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG\nb: $2b$10$xyz\n");
    assert_eq!(
        s(&m, "a"),
        "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
    );
    assert_eq!(s(&m, "b"), "$2b$10$xyz");
}

#[test]
fn positions() {
    let m = parse("a: 1\n  b = \"x\"\nm {\n\tc: [1,\n  two]\n}\n");
    let e = m.entry("b").unwrap();
    assert_eq!((e.line, e.col), (2, 3));
    assert_eq!((e.value.line, e.value.col), (2, 7));
    let c = get(&m, "m.c");
    assert_eq!((c.line, c.col), (4, 5));
    assert_eq!((get(&m, "m.c.1").line, get(&m, "m.c.1").col), (5, 3));
    assert_eq!(m.entry("m").unwrap().error("bad").to_string(), "3:1: bad");
}

#[test]
fn include_keyword() {
    // With a separator `include` is an ordinary key.
    let m = parse("include: 5\nINCLUDE = x\n");
    assert_eq!(i(&m, "include"), 5);
    assert_eq!(s(&m, "INCLUDE"), "x");
    assert!(parse_err("include\n").message.contains("found new line"));
    assert!(
        parse_err("include [a]")
            .message
            .contains("start of an array")
    );
    let e = parse_err("\ninclude ./definitely-missing-rnats.conf\n");
    assert!(
        e.message
            .starts_with("error opening include file './definitely-missing-rnats.conf'"),
        "{e}"
    );
    assert_eq!((e.line, e.col), (2, 1));
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn includes_relative_to_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "main.conf",
        "port: 1\ninclude ./accounts.conf\nm {\n  include \"sub/inner.conf\"\n  own: 1\n}\n\
         include 'sub/override.conf'; after: $from_include\n",
    );
    write(
        d,
        "accounts.conf",
        "accounts { A: { users: [ {user: a} ] } }\nfrom_include: yes\n",
    );
    write(d, "sub/inner.conf", "include nested.conf\ninner: 2\n");
    write(d, "sub/nested.conf", "nested: 3\n");
    write(d, "sub/override.conf", "port: 2 # later wins\n");
    let m = parse_file_with_env(&d.join("main.conf"), &no_env).unwrap();
    assert_eq!(s(&m, "accounts.A.users.0.user"), "a");
    assert_eq!(i(&m, "m.inner"), 2);
    assert_eq!(i(&m, "m.nested"), 3, "nested include is relative to sub/");
    assert_eq!(i(&m, "m.own"), 1);
    assert_eq!(i(&m, "port"), 2);
    assert!(b(&m, "after"), "included keys can be used as variables");
    let inc = get(&m, "m.nested");
    assert_eq!(
        inc.file.as_deref(),
        Some(d.join("sub/nested.conf").as_path())
    );
    assert_eq!((inc.line, inc.col), (1, 9));
    assert_eq!(
        get(&m, "m.own").file.as_deref(),
        Some(d.join("main.conf").as_path())
    );
}

#[test]
fn include_from_str_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "ok.conf", "x: 1\n");
    write(d, "bad.conf", "x: 1\ny: \"\\q\"\n");
    let m = parse(&format!("include \"{}\"\n", d.join("ok.conf").display()));
    assert_eq!(i(&m, "x"), 1);
    let e = parse_err(&format!("include \"{}\"\n", d.join("bad.conf").display()));
    assert_eq!(e.file.as_deref(), Some(d.join("bad.conf").as_path()));
    assert_eq!((e.line, e.col), (2, 5));
    assert!(e.to_string().starts_with(&format!(
        "{}:2:5: Invalid escape",
        d.join("bad.conf").display()
    )));
}

#[test]
fn include_cycles_and_non_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.conf", "include b.conf\n");
    write(d, "b.conf", "include ./a.conf\n");
    let e = parse_file_with_env(&d.join("a.conf"), &no_env).unwrap_err();
    assert!(e.message.contains("Include cycle"), "{e}");
    write(d, "self.conf", "x: 1\ninclude self.conf\n");
    assert!(parse_file_with_env(&d.join("self.conf"), &no_env).is_err());
    let e = parse_err(&format!("include \"{}\"", d.display()));
    assert!(e.message.contains("not a regular file"), "{e}");
}

#[test]
fn parse_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "bad.conf", "a: 1\nb: [1, 2\n");
    let e = parse_file_with_env(&d.join("bad.conf"), &no_env).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(d.join("bad.conf").as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:1: Unexpected EOF processing array.",
            d.join("bad.conf").display()
        )
    );
    let e = parse_file_with_env(&d.join("missing.conf"), &no_env).unwrap_err();
    assert_eq!((e.line, e.col), (0, 0));
    assert!(e.to_string().contains("error opening config file"), "{e}");
}

#[test]
fn limits() {
    let deep = "a: ".to_string() + &"[".repeat(100_000);
    assert!(parse_err(&deep).message.contains("Nesting"));
    let deep_maps = "a { ".repeat(10_000);
    assert!(parse_err(&deep_maps).message.contains("Nesting"));
    let mut laughs = String::from("a0: [x, x, x, x, x, x, x, x, x, x]\n");
    for n in 1..10 {
        laughs += &format!("a{n}: [{}]\n", vec![format!("$a{}", n - 1); 10].join(", "));
    }
    assert!(parse_err(&laughs).message.contains("too large"));
    let env = |name: &str| {
        let n: u32 = name.strip_prefix('V')?.parse().ok()?;
        Some(format!("[$V{}, $V{}]", n + 1, n + 1))
    };
    assert!(parse_str_with_env("a: $V0", &env).is_err());
}

#[test]
fn misc_errors() {
    assert!(parse_err("a:").message.contains("EOF"));
    assert!(parse_err("a:\nb: 1").message.contains("found new line"));
    assert!(parse_err("a").message.contains("EOF"));
    assert!(parse_err(": 1").message.contains("key separator"));
    assert!(parse_err("m { a: 1").message.contains("EOF processing map"));
    assert!(
        parse_err("m { a: 1 ]")
            .message
            .contains("map value terminator")
    );
    assert!(parse_err("a: ,").message.contains("Expected a value"));
    assert!(parse_err(",").message.contains("Expected a key"));
}

#[test]
fn crlf_line_endings() {
    let m = parse("a: 1\r\nb: x\r\nm {\r\n  c: [1,\r\n 2]\r\n}\r\nt: (\r\nraw\r\n)\r\n");
    assert_eq!(i(&m, "a"), 1);
    assert_eq!(s(&m, "b"), "x");
    assert_eq!(i(&m, "m.c.1"), 2);
    assert_eq!(s(&m, "t"), "\r\nraw\r\n");
}

/// The example of spec §2.2, with a real bcrypt hash and the include pointing at a file.
#[test]
fn spec_example() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "accounts.conf",
        "accounts: { SYS: { users: [ { user: sys, password: pw } ] } }\n",
    );
    let conf = r#"# server.conf
server_name: n1
listen: 0.0.0.0:4222          # or: host: 0.0.0.0 / port: 4222
http_port: 8222               # or http: 127.0.0.1:8222
max_payload: 2MB
max_connections: 10k
ping_interval: "1m"
write_deadline: "5s"
lame_duck_duration: "60s"
debug: false
logtime = true
log_file: "./nats.log"
PASS: $NATS_PASS              // variable resolved from environment
authorization {
  timeout: 2
  users = [
    { user: alice, password: $PASS, permissions: { publish: "orders.>", subscribe: ["_INBOX.>", "orders.>"] } }
    { user: bob,   password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG,
      permissions: { publish: { allow: [">"], deny: ["admin.>"] },
                     subscribe: { deny: "secret.*" },
                     allow_responses: { max: 1, expires: "1m" } } }
    { user: svc,   password: s3cr3t, permissions: { subscribe: ["work.q workers"] } }   # queue-qualified
  ]
  default_permissions: { publish: ">", subscribe: ">" }
}
no_auth_user: bob
cluster {
  name: c1
  listen: 0.0.0.0:6222
  authorization { user: route, password: pw, timeout: 2 }
  routes = [
    nats-route://route:pw@10.0.0.2:6222
    nats-route://route:pw@10.0.0.3:6222
  ]
  no_advertise: false
  connect_retries: 3
}
tls {
  cert_file: "./server-cert.pem"
  key_file:  "./server-key.pem"
  ca_file:   "./ca.pem"
  verify:    true
  timeout:   2
}
include ./accounts.conf
"#;
    write(d, "server.conf", conf);
    let env = |name: &str| (name == "NATS_PASS").then(|| "hunter2".to_string());
    let m = parse_file_with_env(&d.join("server.conf"), &env).unwrap();

    assert_eq!(s(&m, "server_name"), "n1");
    assert_eq!(s(&m, "listen"), "0.0.0.0:4222");
    assert_eq!(i(&m, "http_port"), 8222);
    assert_eq!(i(&m, "max_payload"), 2 * 1024 * 1024);
    assert_eq!(i(&m, "max_connections"), 10_000);
    assert_eq!(s(&m, "ping_interval"), "1m");
    assert_eq!(s(&m, "write_deadline"), "5s");
    assert_eq!(s(&m, "lame_duck_duration"), "60s");
    assert!(!b(&m, "debug"));
    assert!(b(&m, "logtime"));
    assert_eq!(s(&m, "log_file"), "./nats.log");
    assert_eq!(s(&m, "PASS"), "hunter2");
    assert!(m.entry("PASS").unwrap().used_as_variable);
    assert_eq!(i(&m, "authorization.timeout"), 2);
    assert_eq!(s(&m, "authorization.users.0.user"), "alice");
    assert_eq!(s(&m, "authorization.users.0.password"), "hunter2");
    assert_eq!(
        s(&m, "authorization.users.0.permissions.publish"),
        "orders.>"
    );
    assert_eq!(
        s(&m, "authorization.users.0.permissions.subscribe.0"),
        "_INBOX.>"
    );
    assert_eq!(
        s(&m, "authorization.users.1.password"),
        "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
    );
    assert_eq!(
        s(&m, "authorization.users.1.permissions.publish.deny.0"),
        "admin.>"
    );
    assert_eq!(
        s(&m, "authorization.users.1.permissions.subscribe.deny"),
        "secret.*"
    );
    assert_eq!(
        i(&m, "authorization.users.1.permissions.allow_responses.max"),
        1
    );
    assert_eq!(
        s(
            &m,
            "authorization.users.1.permissions.allow_responses.expires"
        ),
        "1m"
    );
    assert_eq!(s(&m, "authorization.users.2.password"), "s3cr3t");
    assert_eq!(
        s(&m, "authorization.users.2.permissions.subscribe.0"),
        "work.q workers"
    );
    assert_eq!(s(&m, "authorization.default_permissions.subscribe"), ">");
    assert_eq!(s(&m, "no_auth_user"), "bob");
    assert_eq!(s(&m, "cluster.name"), "c1");
    assert_eq!(s(&m, "cluster.listen"), "0.0.0.0:6222");
    assert_eq!(s(&m, "cluster.authorization.password"), "pw");
    assert_eq!(
        s(&m, "cluster.routes.1"),
        "nats-route://route:pw@10.0.0.3:6222"
    );
    assert!(!b(&m, "cluster.no_advertise"));
    assert_eq!(i(&m, "cluster.connect_retries"), 3);
    assert_eq!(s(&m, "tls.key_file"), "./server-key.pem");
    assert!(b(&m, "tls.verify"));
    assert_eq!(i(&m, "tls.timeout"), 2);
    assert_eq!(s(&m, "accounts.SYS.users.0.user"), "sys");
    assert_eq!(
        m.keys().last(),
        Some("accounts"),
        "included entries are merged in order"
    );
    assert_eq!(m.get_ci("SERVER_NAME").and_then(|v| v.as_str()), Some("n1"));

    // Without the environment variable the reference is reported.
    let e = parse_file_with_env(&d.join("server.conf"), &no_env).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:13:7: variable reference for 'NATS_PASS' on line 13 can not be found",
            d.join("server.conf").display()
        )
    );
}
