//! nats-server's command line, parsed with Go `flag` semantics: `-name` and `--name` are the
//! same flag, values come as `-p 4222` or `-p=4222`, booleans take no separate value, and
//! parsing stops at the first non-flag argument.

use std::path::PathBuf;
use std::time::Duration;

use crate::options::Options;

pub const USAGE: &str = "\
Usage: rnats-server [options]

Server Options:
    -a, --addr, --net <host>         Bind to host address (default: 0.0.0.0)
    -p, --port <port>                Use port for clients (default: 4222)
    -n, --name
        --server_name <server_name>  Server name (default: auto)
    -P, --pid <file>                 File to store PID
    -m, --http_port <port>           Use port for http monitoring
    -ms,--https_port <port>          Use port for https monitoring
    -c, --config <file>              Configuration file
    -t                               Test configuration and exit
    -sl,--signal <signal>[=<pid>]    Send signal to rnats-server process (ldm, stop, quit, term, reopen, reload)
        --client_advertise <string>  Client URL to advertise to other servers
        --ports_file_dir <dir>       Creates a ports file in the specified directory (<executable_name>_<pid>.ports).

Logging Options:
    -l, --log <file>                 File to redirect log output
    -T, --logtime                    Timestamp log entries (default: true)
        --logtime_utc                Timestamps in UTC instead of local timezone (default: false)
    -s, --syslog                     Log to syslog or windows event log
    -r, --remote_syslog <addr>       Syslog server addr (udp://localhost:514)
    -D, --debug                      Enable debugging output
    -V, --trace                      Trace the raw protocol
    -VV                              Verbose trace (traces system account as well)
    -DV                              Debug and trace
    -DVV                             Debug and verbose trace (traces system account as well)
        --log_size_limit <limit>     Logfile size limit (default: auto)
        --max_traced_msg_len <len>   Maximum printable length for traced messages (default: unlimited)

Authorization Options:
        --user <user>                User required for connections
        --pass <password>            Password required for connections
        --auth <token>               Authorization token required for connections

TLS Options:
        --tls                        Enable TLS, do not verify clients (default: false)
        --tlscert <file>             Server certificate file
        --tlskey <file>              Private key for server certificate
        --tlsverify                  Enable TLS, verify client certificates
        --tlscacert <file>           Client certificate CA for verification

Cluster Options:
        --routes <rurl-1, rurl-2>    Routes to solicit and connect
        --cluster <cluster-url>      Cluster URL for solicited routes
        --cluster_name <string>      Cluster Name, if not set one will be dynamically generated
        --no_advertise <bool>        Do not advertise known cluster information to clients
        --cluster_advertise <string> Cluster URL to advertise to other servers
        --connect_retries <number>   For implicit routes, number of connect retries
        --cluster_listen <url>       Cluster url from which members can solicit routes

Common Options:
    -h, --help                       Show this message
    -v, --version                    Show version
        --help_tls                   TLS help
";

/// Canonical flag names; aliases map onto these.
const VALUE_FLAGS: &[(&str, &[&str])] = &[
    ("addr", &["a", "addr", "net"]),
    ("port", &["p", "port"]),
    ("server_name", &["n", "name", "server_name"]),
    ("pid", &["P", "pid"]),
    ("http_port", &["m", "http_port"]),
    ("https_port", &["ms", "https_port"]),
    ("config", &["c", "config"]),
    ("signal", &["sl", "signal"]),
    ("client_advertise", &["client_advertise"]),
    ("ports_file_dir", &["ports_file_dir"]),
    ("log", &["l", "log"]),
    ("remote_syslog", &["r", "remote_syslog"]),
    ("log_size_limit", &["log_size_limit"]),
    ("max_traced_msg_len", &["max_traced_msg_len"]),
    ("store_dir", &["sd", "store_dir"]),
    ("user", &["user"]),
    ("pass", &["pass"]),
    ("auth", &["auth"]),
    ("tlscert", &["tlscert"]),
    ("tlskey", &["tlskey"]),
    ("tlscacert", &["tlscacert"]),
    ("cluster", &["cluster", "cluster_listen"]),
    ("routes", &["routes"]),
    ("cluster_name", &["cluster_name"]),
    ("cluster_advertise", &["cluster_advertise"]),
    ("connect_retries", &["connect_retries"]),
    ("profile", &["profile"]),
];

const BOOL_FLAGS: &[(&str, &[&str])] = &[
    ("test_config", &["t"]),
    ("logtime", &["T", "logtime"]),
    ("logtime_utc", &["logtime_utc"]),
    ("syslog", &["s", "syslog"]),
    ("debug", &["D", "debug"]),
    ("trace", &["V", "trace"]),
    ("trace_verbose", &["VV"]),
    ("debug_trace", &["DV"]),
    ("debug_trace_verbose", &["DVV"]),
    ("jetstream", &["js", "jetstream"]),
    ("tls", &["tls"]),
    ("tlsverify", &["tlsverify"]),
    ("no_advertise", &["no_advertise"]),
    ("help", &["h", "help"]),
    ("version", &["v", "version"]),
    ("help_tls", &["help_tls"]),
];

/// Whether `name` (without dashes) is one of the server's flags that take a value: for
/// programs that pass the server's flags through (the streaming server).
pub fn takes_value(name: &str) -> bool {
    VALUE_FLAGS.iter().any(|(_, names)| names.contains(&name))
}

#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// `flag provided but not defined: -x`
    Undefined(String),
    /// `flag needs an argument: -x`
    NeedsArgument(String),
    /// `invalid boolean value "x" for -D: parse error` and the like.
    InvalidValue { flag: String, value: String },
    /// `unrecognized command: "x"`
    UnrecognizedCommand(String),
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagError::Undefined(name) => write!(f, "flag provided but not defined: -{name}"),
            FlagError::NeedsArgument(name) => write!(f, "flag needs an argument: -{name}"),
            FlagError::InvalidValue { flag, value } => {
                write!(f, "invalid value \"{value}\" for flag -{flag}: parse error")
            }
            FlagError::UnrecognizedCommand(cmd) => write!(f, "unrecognized command: \"{cmd}\""),
        }
    }
}

/// The flags given, canonical name → value (booleans as "true"/"false"), in order.
#[derive(Debug, Default)]
pub struct Flags {
    pub set: Vec<(&'static str, String)>,
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl Flags {
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, FlagError> {
        let mut flags = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            let Some(stripped) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
                // First positional argument ends flag parsing.
                match arg.to_ascii_lowercase().as_str() {
                    "version" => flags.set.push(("version", "true".into())),
                    "help" => flags.set.push(("help", "true".into())),
                    _ => return Err(FlagError::UnrecognizedCommand(arg)),
                }
                break;
            };
            let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (stripped, None),
            };
            if let Some((canon, _)) = BOOL_FLAGS.iter().find(|(_, names)| names.contains(&name)) {
                let value = match inline {
                    Some(v) => parse_go_bool(&v).ok_or_else(|| FlagError::InvalidValue {
                        flag: name.into(),
                        value: v.clone(),
                    })?,
                    None => true,
                };
                flags.set.push((canon, value.to_string()));
            } else if let Some((canon, _)) =
                VALUE_FLAGS.iter().find(|(_, names)| names.contains(&name))
            {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| FlagError::NeedsArgument(name.into()))?,
                };
                flags.set.push((canon, value));
            } else {
                return Err(FlagError::Undefined(name.into()));
            }
        }
        Ok(flags)
    }

    pub fn get(&self, canon: &str) -> Option<&str> {
        self.set
            .iter()
            .rev()
            .find(|(n, _)| *n == canon)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_true(&self, canon: &str) -> bool {
        self.get(canon) == Some("true")
    }

    /// Applies the flags over `opts` (after the config file, so flags win).
    pub fn apply(&self, opts: &mut Options) -> Result<(), String> {
        let int = |flag: &str, v: &str| -> Result<i64, String> {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid value \"{v}\" for flag -{flag}: parse error"))
        };
        for (name, value) in &self.set {
            let v = value.as_str();
            match *name {
                "addr" => opts.host = v.to_string(),
                "port" => opts.port = int("port", v)? as i32,
                "server_name" => opts.server_name = Some(v.to_string()),
                "pid" => opts.pid_file = Some(PathBuf::from(v)),
                "http_port" => opts.http_port = int("http_port", v)? as i32,
                "config" => opts.config_file = Some(PathBuf::from(v)),
                "client_advertise" => opts.client_advertise = Some(v.to_string()),
                "ports_file_dir" => opts.ports_file_dir = Some(PathBuf::from(v)),
                "log" => opts.log_file = Some(PathBuf::from(v)),
                "logtime" => opts.logtime = v == "true",
                "logtime_utc" => opts.logtime_utc = v == "true",
                "debug" => opts.debug = v == "true",
                "trace" | "trace_verbose" => opts.trace = v == "true",
                "debug_trace" | "debug_trace_verbose" => {
                    opts.debug = v == "true";
                    opts.trace = v == "true";
                }
                "user" => opts.auth.user = Some(v.to_string()),
                "pass" => opts.auth.password = Some(v.to_string()),
                "auth" => opts.auth.token = Some(v.to_string()),

                _ => {}
            }
        }
        if let Some(url) = self.get("cluster") {
            if url.is_empty() {
                opts.cluster = None;
            } else {
                let cluster = opts.cluster.get_or_insert_with(Default::default);
                let (user, host, port) =
                    parse_route_url(url).ok_or_else(|| format!("invalid cluster URL \"{url}\""))?;
                cluster.host = host;
                cluster.port = port;
                if let Some((u, p)) = user {
                    cluster.user = Some(u);
                    cluster.password = Some(p);
                }
            }
        }
        if let Some(routes) = self.get("routes") {
            let Some(cluster) = opts.cluster.as_mut() else {
                return Err("solicited routes require cluster capabilities, e.g. --cluster".into());
            };
            cluster.routes = routes
                .split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
        }
        if let Some(cluster) = opts.cluster.as_mut() {
            if let Some(name) = self.get("cluster_name") {
                cluster.name = Some(name.to_string());
            }
            if let Some(adv) = self.get("cluster_advertise") {
                cluster.advertise = Some(adv.to_string());
            }
            if let Some(n) = self.get("connect_retries") {
                cluster.connect_retries = n.parse().map_err(|_| {
                    format!("invalid value \"{n}\" for flag -connect_retries: parse error")
                })?;
            }
            if self.get("no_advertise").is_some() {
                cluster.no_advertise = self.is_true("no_advertise");
            }
        }
        // As the reference: the TLS file flags only count with --tls or --tlsverify, and then
        // they replace the config file's tls block.
        let verify = self.is_true("tlsverify");
        if self.is_true("tls") || verify {
            let mut tls = opts.tls.take().unwrap_or_default();
            tls.verify |= verify;
            if let Some(f) = self.get("tlscert") {
                tls.cert_file = Some(PathBuf::from(f));
            }
            if let Some(f) = self.get("tlskey") {
                tls.key_file = Some(PathBuf::from(f));
            }
            if let Some(f) = self.get("tlscacert") {
                tls.ca_file = Some(PathBuf::from(f));
            }
            opts.tls = Some(tls);
        }
        Ok(())
    }
}

/// Splits `nats://[user:pass@]host:port` (any scheme) into credentials, host and port.
/// `(credentials, host, port)` of a route URL.
pub type RouteUrl = (Option<(String, String)>, String, i32);

pub fn parse_route_url(url: &str) -> Option<RouteUrl> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = hostport.rsplit_once(':')?;
    let port: i32 = port.parse().ok()?;
    let creds = userinfo.map(|u| match u.split_once(':') {
        Some((user, pass)) => (user.to_string(), pass.to_string()),
        None => (u.to_string(), String::new()),
    });
    Some((creds, host.trim_matches(['[', ']']).to_string(), port))
}

/// Parses a duration option the way the reference does for ping_interval/write_deadline:
/// a Go duration string, or a bare number of seconds.
pub fn seconds_or_duration(v: &str) -> Option<Duration> {
    rnats_conf::parse_duration(v).or_else(|| v.parse::<u64>().ok().map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn go_flag_forms() {
        let f = parse(&[
            "-p",
            "4333",
            "--addr=127.0.0.1",
            "-DV",
            "-T=false",
            "--name",
            "n1",
            "-ms",
            "8443",
        ])
        .unwrap();
        assert_eq!(f.get("port"), Some("4333"));
        assert_eq!(f.get("addr"), Some("127.0.0.1"));
        assert!(f.is_true("debug_trace"));
        assert_eq!(f.get("logtime"), Some("false"));
        assert_eq!(f.get("server_name"), Some("n1"));
        assert_eq!(f.get("https_port"), Some("8443"));
        let mut opts = Options::default();
        f.apply(&mut opts).unwrap();
        assert_eq!(
            (
                opts.port,
                opts.host.as_str(),
                opts.debug,
                opts.trace,
                opts.logtime
            ),
            (4333, "127.0.0.1", true, true, false)
        );
    }

    #[test]
    fn errors_and_positionals() {
        assert_eq!(
            parse(&["-x"]).unwrap_err().to_string(),
            "flag provided but not defined: -x"
        );
        assert_eq!(
            parse(&["-p"]).unwrap_err().to_string(),
            "flag needs an argument: -p"
        );
        assert_eq!(
            parse(&["foo"]).unwrap_err().to_string(),
            "unrecognized command: \"foo\""
        );
        assert!(parse(&["VERSION"]).unwrap().is_true("version"));
        assert!(
            parse(&["-D", "false"]).is_err(),
            "a bool takes no separate value"
        );
        assert!(parse(&["-D", "--", "-x"]).is_ok());
        assert_eq!(parse(&["-p", "-1"]).unwrap().get("port"), Some("-1"));
    }
}
