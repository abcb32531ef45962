//! Data source names, parsed into plain structs (the driver module turns them into client
//! options). The forms are those the reference server's drivers take, so a `sql_source` that
//! works there works here:
//!
//! ```text
//! postgres  key=value:  host=db.local port=5432 user=stan password='s3 cr\'t' dbname=stan sslmode=disable
//!           URL:        postgres://stan:s3cret@db.local:5432/stan?sslmode=disable&connect_timeout=5
//! mysql     Go driver:  [user[:password]@][tcp[(host[:port])]|unix[(path)]]/dbname[?param=value&...]
//!                       e.g. stan:s3cret@tcp(db.local:3306)/stan?timeout=5s
//! ```
//!
//! PostgreSQL keys this store does not use for itself are sent as run-time parameters (`-c
//! key=value` in the startup options), as the Go driver sends them. MySQL parameters that are
//! not driver options become `SET name=value` on each new connection, as in the Go driver;
//! driver options that only matter to Go (`parseTime`, `loc`, `charset`, ...) are accepted and
//! ignored. TLS is not supported yet: `sslmode=require|verify-*` and `tls=true|skip-verify`
//! are refused with a clear error instead of silently connecting in clear text.

use std::time::Duration;

/// A PostgreSQL data source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PgDsn {
    /// Host names, IP addresses or unix socket directories (starting with `/`); empty means
    /// `localhost`.
    pub hosts: Vec<String>,
    /// One port for all hosts or one per host; empty means 5432.
    pub ports: Vec<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
    /// Server command-line options (`options` key, plus `-c key=value` for other keys).
    pub options: Vec<String>,
}

/// Where a MySQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MyAddr {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// A MySQL data source in the Go driver's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MyDsn {
    pub user: String,
    pub password: Option<String>,
    pub addr: MyAddr,
    pub dbname: String,
    /// `timeout`: how long connecting may take.
    pub timeout: Option<Duration>,
    /// `SET name=value` statements for parameters that are server variables.
    pub init: Vec<String>,
}

impl PgDsn {
    /// The target without secrets, for error messages.
    pub fn describe(&self) -> String {
        let hosts = if self.hosts.is_empty() {
            "localhost".to_owned()
        } else {
            self.hosts.join(",")
        };
        let ports = if self.ports.is_empty() {
            "5432".to_owned()
        } else {
            self.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "host={hosts} port={ports} user={} dbname={}",
            self.user.as_deref().unwrap_or("(default)"),
            self.dbname.as_deref().unwrap_or("(default)")
        )
    }
}

impl MyDsn {
    /// The target without the password, for error messages.
    pub fn describe(&self) -> String {
        match &self.addr {
            MyAddr::Tcp { host, port } => {
                format!("{}@tcp({host}:{port})/{}", self.user, self.dbname)
            }
            MyAddr::Unix(p) => format!("{}@unix({p})/{}", self.user, self.dbname),
        }
    }
}

/// Parses a PostgreSQL data source (libpq `key=value` list or `postgres://` URL).
pub(crate) fn parse_pg(src: &str) -> Result<PgDsn, String> {
    let src = src.trim();
    let pairs = if let Some(rest) = src
        .strip_prefix("postgres://")
        .or_else(|| src.strip_prefix("postgresql://"))
    {
        pg_url_pairs(rest)?
    } else {
        pg_kv_pairs(src)?
    };
    let mut d = PgDsn::default();
    let mut fallback_app = None;
    for (k, v) in pairs {
        match k.as_str() {
            "host" | "hostaddr" => {
                d.hosts = v
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "port" => {
                d.ports = v
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<u16>().map_err(|_| format!("invalid port {p:?}")))
                    .collect::<Result<_, _>>()?
            }
            "user" => d.user = Some(v),
            "password" => d.password = Some(v),
            "dbname" => d.dbname = Some(v),
            "sslmode" => match v.as_str() {
                "disable" | "allow" | "prefer" => {}
                "require" | "verify-ca" | "verify-full" => {
                    return Err(format!(
                        "sslmode={v}: TLS connections to PostgreSQL are not supported by this \
                         build; use sslmode=disable"
                    ));
                }
                _ => return Err(format!("invalid sslmode {v:?}")),
            },
            "connect_timeout" => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("invalid connect_timeout {v:?} (seconds)"))?;
                d.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "application_name" => d.application_name = Some(v),
            "fallback_application_name" => fallback_app = Some(v),
            "options" => d.options.push(v),
            // Client-side settings with no meaning here (TLS files, Kerberos, keepalives).
            "sslcert"
            | "sslkey"
            | "sslrootcert"
            | "sslcrl"
            | "sslsni"
            | "sslinline"
            | "sslpassword"
            | "krbsrvname"
            | "krbspn"
            | "keepalives"
            | "keepalives_idle"
            | "keepalives_interval"
            | "keepalives_count"
            | "target_session_attrs"
            | "disable_prepared_binary_result"
            | "binary_parameters" => {}
            _ => {
                if !is_identifier(&k) {
                    return Err(format!("invalid parameter name {k:?}"));
                }
                d.options.push(format!(
                    "-c {k}={}",
                    v.replace('\\', "\\\\").replace(' ', "\\ ")
                ));
            }
        }
    }
    if d.application_name.is_none() {
        d.application_name = fallback_app;
    }
    if d.ports.len() > 1 && d.ports.len() != d.hosts.len().max(1) {
        return Err(format!(
            "{} ports for {} hosts (give one port, or one per host)",
            d.ports.len(),
            d.hosts.len()
        ));
    }
    Ok(d)
}

fn is_identifier(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// libpq `key = value` pairs: values unquoted (up to whitespace) or single-quoted, with `\`
/// escaping the next character in both.
fn pg_kv_pairs(src: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = src.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?}"));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut val = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                    Some('\'') => break,
                    Some('\\') => match it.next() {
                        Some(c) => val.push(c),
                        None => return Err(format!("unterminated quoted value of {key:?}")),
                    },
                    Some(c) => val.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = it.next() {
                        val.push(n);
                    }
                } else {
                    val.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err("empty parameter name".into());
        }
        out.push((key, val));
    }
}

/// The pairs a `postgres://` URL (after the scheme) stands for.
fn pg_url_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], Some(&main[i + 1..])),
        None => (main, None),
    };
    let mut out = Vec::new();
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (u, p) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !u.is_empty() {
                out.push(("user".to_owned(), percent_decode(u)?));
            }
            if let Some(p) = p {
                out.push(("password".to_owned(), percent_decode(p)?));
            }
            hosts
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for h in hostlist.split(',') {
            let (host, port) = split_host_port(h)?;
            hosts.push(percent_decode(host)?);
            if let Some(p) = port {
                ports.push(p.to_owned());
            }
        }
        out.push(("host".to_owned(), hosts.join(",")));
        if !ports.is_empty() {
            out.push(("port".to_owned(), ports.join(",")));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_owned(), percent_decode(db)?));
    }
    for kv in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

/// `host[:port]` or `[v6addr][:port]`.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unterminated IPv6 address in {s:?}"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((h, Some(p))),
            None if after.is_empty() => Ok((h, None)),
            None => Err(format!("invalid host {s:?}")),
        };
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("percent-encoding in {s:?} is not UTF-8"))
}

/// Like [`percent_decode`], also turning `+` into a space (query values).
fn query_unescape(s: &str) -> Result<String, String> {
    percent_decode(&s.replace('+', " "))
}

/// Driver options of the Go MySQL driver that mean nothing to this store (`clientFoundRows`
/// is ignored: the store needs affected-row counts of changed rows only).
const MY_IGNORED: &[&str] = &[
    "allowAllFiles",
    "allowCleartextPasswords",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "writeTimeout",
];

/// Parses a MySQL data source in the Go driver's form.
pub(crate) fn parse_mysql(src: &str) -> Result<MyDsn, String> {
    // The database name follows the last '/': passwords and socket paths may contain '/'.
    let slash = src
        .rfind('/')
        .ok_or("missing the slash separating the database name")?;
    let (left, right) = (&src[..slash], &src[slash + 1..]);
    let (cred, netaddr) = match left.rfind('@') {
        Some(at) => (Some(&left[..at]), &left[at + 1..]),
        None => (None, left),
    };
    let (user, password) = match cred {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (c.to_owned(), None),
        },
        None => (String::new(), None),
    };
    let (net, addr) = match netaddr.find('(') {
        Some(i) => {
            let addr = netaddr[i + 1..]
                .strip_suffix(')')
                .ok_or("network address not terminated (missing closing brace)")?;
            (&netaddr[..i], Some(addr))
        }
        None => (netaddr, None),
    };
    let addr = match net {
        "" | "tcp" | "tcp4" | "tcp6" => {
            let a = addr.filter(|a| !a.is_empty()).unwrap_or("127.0.0.1:3306");
            let (host, port) = split_host_port(a)?;
            let port = match port {
                Some(p) => p.parse().map_err(|_| format!("invalid port in {a:?}"))?,
                None => 3306,
            };
            MyAddr::Tcp {
                host: host.to_owned(),
                port,
            }
        }
        "unix" => MyAddr::Unix(
            addr.filter(|a| !a.is_empty())
                .unwrap_or("/tmp/mysql.sock")
                .to_owned(),
        ),
        other => return Err(format!("unsupported network {other:?} (use tcp or unix)")),
    };
    let (db, params) = match right.split_once('?') {
        Some((d, p)) => (d, Some(p)),
        None => (right, None),
    };
    let mut d = MyDsn {
        user,
        password,
        addr,
        dbname: percent_decode(db)?,
        timeout: None,
        init: Vec::new(),
    };
    for kv in params
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("invalid parameter {kv:?} (expected name=value)"))?;
        let v = query_unescape(v)?;
        match k {
            "timeout" => d.timeout = Some(parse_go_duration(&v)?),
            "tls" => match v.as_str() {
                "false" | "preferred" => {}
                _ => {
                    return Err(format!(
                        "tls={v}: TLS connections to MySQL are not supported by this build; \
                         use tls=false"
                    ));
                }
            },
            _ if MY_IGNORED.contains(&k) => {}
            _ => {
                if !is_identifier(k) {
                    return Err(format!("invalid parameter name {k:?}"));
                }
                // As the Go driver: an unknown parameter is a system variable to set.
                d.init.push(format!("SET {k}={v}"));
            }
        }
    }
    Ok(d)
}

/// A Go `time.Duration` string: `300ms`, `1.5s`, `1m30s`, `2h`.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let num: f64 = rest[..n].parse().map_err(|_| err())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += num * unit;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_key_value() {
        let d = parse_pg(
            "host=db.local port=5433 user=stan password='s3 cr\\'t' dbname=nss sslmode=disable \
             connect_timeout=7 application_name=rnats search_path=stan",
        )
        .unwrap();
        assert_eq!(d.hosts, ["db.local"]);
        assert_eq!(d.ports, [5433]);
        assert_eq!(d.user.as_deref(), Some("stan"));
        assert_eq!(d.password.as_deref(), Some("s3 cr't"));
        assert_eq!(d.dbname.as_deref(), Some("nss"));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(d.application_name.as_deref(), Some("rnats"));
        assert_eq!(d.options, ["-c search_path=stan"]);
        assert!(!d.describe().contains("s3"));
        // Spaces around '=' and an empty source (all defaults).
        let d = parse_pg("  host = /var/run/postgresql  dbname= x ").unwrap();
        assert_eq!(d.hosts, ["/var/run/postgresql"]);
        assert_eq!(d.dbname.as_deref(), Some("x"));
        assert_eq!(parse_pg("").unwrap(), PgDsn::default());
    }

    #[test]
    fn pg_url() {
        let d = parse_pg(
            "postgres://st%40n:p%2Fw@db.local:5433/my%20db?sslmode=disable&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(d.user.as_deref(), Some("st@n"));
        assert_eq!(d.password.as_deref(), Some("p/w"));
        assert_eq!(d.hosts, ["db.local"]);
        assert_eq!(d.ports, [5433]);
        assert_eq!(d.dbname.as_deref(), Some("my db"));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(3)));
        let d = parse_pg("postgresql://[::1]:6000,h2:6001/x").unwrap();
        assert_eq!(d.hosts, ["::1", "h2"]);
        assert_eq!(d.ports, [6000, 6001]);
        let d = parse_pg("postgres://localhost").unwrap();
        assert_eq!((d.hosts.len(), d.dbname), (1, None));
    }

    #[test]
    fn pg_errors() {
        for (src, want) in [
            ("host=x sslmode=require", "not supported"),
            ("host=x sslmode=bogus", "invalid sslmode"),
            ("port=notaport", "invalid port"),
            ("host", "missing \"=\""),
            ("password='abc", "unterminated"),
            ("postgres://u@h:1,h2:2,h3:3/x?port=1,2", "ports for"),
            ("connect_timeout=soon", "connect_timeout"),
            ("postgres://h/db?x%zz=1", "percent"),
        ] {
            let e = parse_pg(src).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn mysql_go_form() {
        let d = parse_mysql("stan:p@ss:w/rd@tcp(db.local:3307)/nss?timeout=1m30s&parseTime=true&sql_mode=%27ANSI%27").unwrap();
        assert_eq!(d.user, "stan");
        assert_eq!(d.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(
            d.addr,
            MyAddr::Tcp {
                host: "db.local".into(),
                port: 3307
            }
        );
        assert_eq!(d.dbname, "nss");
        assert_eq!(d.timeout, Some(Duration::from_secs(90)));
        assert_eq!(d.init, ["SET sql_mode='ANSI'"]);
        assert_eq!(d.describe(), "stan@tcp(db.local:3307)/nss");
        // Defaults: no credentials, tcp to 127.0.0.1:3306; a unix socket.
        let d = parse_mysql("/db").unwrap();
        assert_eq!(
            (d.user.as_str(), d.password, d.addr),
            (
                "",
                None,
                MyAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 3306
                }
            )
        );
        let d = parse_mysql("root@unix(/run/mysqld/mysqld.sock)/x").unwrap();
        assert_eq!(d.addr, MyAddr::Unix("/run/mysqld/mysqld.sock".into()));
        let d = parse_mysql("u@tcp(h)/x").unwrap();
        assert_eq!(
            d.addr,
            MyAddr::Tcp {
                host: "h".into(),
                port: 3306
            }
        );
        let d = parse_mysql("u@tcp([::1]:4000)/x?tls=false").unwrap();
        assert_eq!(
            d.addr,
            MyAddr::Tcp {
                host: "::1".into(),
                port: 4000
            }
        );
    }

    #[test]
    fn mysql_errors() {
        for (src, want) in [
            ("user:pw@tcp(host:3306)", "missing the slash"),
            ("u@tcp(host:3306/db", "missing closing brace"),
            ("u@udp(h)/db", "unsupported network"),
            ("u@tcp(h:99999)/db", "invalid port"),
            ("u@tcp(h)/db?tls=true", "not supported"),
            ("u@tcp(h)/db?timeout=5 parsecs", "invalid duration"),
            ("u@tcp(h)/db?novalue", "expected name=value"),
            ("u@tcp(h)/db?bad;name=1", "invalid parameter name"),
        ] {
            let e = parse_mysql(src).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn go_durations() {
        let ms = |s| parse_go_duration(s).unwrap().as_millis();
        assert_eq!(ms("300ms"), 300);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("2m"), 120_000);
        assert_eq!(ms("1h1s"), 3_601_000);
        assert_eq!(ms("0"), 0);
        for bad in ["", "5", "s", "1x", "-1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
