//! nats-server's command line: its flags ([`NATS_FLAGS`], [`USAGE`]), parsed by the Go-style
//! parser in `go` (which the streaming server uses too), and applied over the [`Options`].

mod go;

use std::path::PathBuf;

pub use self::go::{FlagError, FlagTable, FlagValues, Parsed, parse, parse_go_bool};
use crate::options::{Options, parse_route_url};

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

/// nats-server's flags: canonical names and the names each answers to.
pub const NATS_FLAGS: FlagTable = FlagTable {
    values: VALUE_FLAGS,
    bools: BOOL_FLAGS,
};

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

/// A flag that would switch on a feature this build does not have: the flag as the reference
/// spells it and the feature, as the configuration file names it. Values that leave the
/// feature off (`-js=false`, `--log_size_limit 0`) are accepted.
fn unsupported(canon: &str, v: &str) -> Option<(&'static str, &'static str)> {
    let on = !matches!(v.trim(), "" | "false" | "0");
    match canon {
        "jetstream" if on => Some(("js", "jetstream")),
        "store_dir" if !v.is_empty() => Some(("sd", "jetstream")),
        "syslog" if on => Some(("s", "syslog")),
        "remote_syslog" if !v.is_empty() => Some(("r", "remote_syslog")),
        "log_size_limit" if on => Some(("log_size_limit", "log_size_limit")),
        "profile" if on => Some(("profile", "prof_port")),
        _ => None,
    }
}

/// The flags given to nats-server.
#[derive(Debug, Default)]
pub struct Flags(pub FlagValues);

impl Flags {
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, FlagError> {
        let Parsed {
            values: [values],
            first_arg,
        } = parse([&NATS_FLAGS], args).map_err(Flags::own_words)?;
        let mut flags = Flags(values);
        if let Some(arg) = first_arg {
            flags.command(arg)?;
        }
        Ok(flags)
    }

    /// nats-server's commands, given where the flags end: `version` and `help` (any case).
    pub fn command(&mut self, arg: String) -> Result<(), FlagError> {
        match arg.to_ascii_lowercase().as_str() {
            "version" => self.0.push("version", "true"),
            "help" => self.0.push("help", "true"),
            _ => return Err(FlagError::UnrecognizedCommand(arg)),
        }
        Ok(())
    }

    /// rnats-server has always said "invalid value" for a bad boolean too.
    pub fn own_words(e: FlagError) -> FlagError {
        match e {
            FlagError::InvalidBool { flag, value } => FlagError::InvalidValue { flag, value },
            e => e,
        }
    }

    pub fn get(&self, canon: &str) -> Option<&str> {
        self.0.get(canon)
    }

    pub fn is_true(&self, canon: &str) -> bool {
        self.0.is_true(canon)
    }

    /// Applies the flags over `opts` (after the config file, so flags win).
    pub fn apply(&self, opts: &mut Options) -> Result<(), FlagError> {
        let int = |flag: &str, v: &str| -> Result<i64, FlagError> {
            v.trim()
                .parse::<i64>()
                .map_err(|_| FlagError::InvalidValue {
                    flag: flag.into(),
                    value: v.into(),
                })
        };
        for (name, v) in self.0.iter() {
            match name {
                "addr" => opts.host = v.to_string(),
                "port" => opts.port = int("port", v)? as i32,
                "server_name" => opts.server_name = Some(v.to_string()),
                "pid" => opts.pid_file = Some(PathBuf::from(v)),
                "http_port" => opts.http_port = int("http_port", v)? as i32,
                "https_port" => opts.https_port = int("https_port", v)? as i32,
                "max_traced_msg_len" => {
                    opts.max_traced_msg_len = usize::try_from(int("max_traced_msg_len", v)?)
                        .map_err(|_| FlagError::InvalidValue {
                            flag: "max_traced_msg_len".into(),
                            value: v.into(),
                        })?
                }
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
            if let Some((flag, feature)) = unsupported(name, v) {
                return Err(FlagError::Unsupported {
                    flag: flag.into(),
                    feature,
                });
            }
        }
        if let Some(url) = self.get("cluster") {
            if url.is_empty() {
                opts.cluster = None;
            } else {
                let cluster = opts.cluster.get_or_insert_with(Default::default);
                let (user, host, port) =
                    parse_route_url(url).ok_or_else(|| FlagError::InvalidClusterUrl(url.into()))?;
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
                return Err(FlagError::RoutesWithoutCluster);
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
                cluster.connect_retries = n.parse().map_err(|_| FlagError::InvalidValue {
                    flag: "connect_retries".into(),
                    value: n.into(),
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
        // A feature this build lacks is refused, not ignored; switching it off is fine.
        let apply = |args: &[&str]| parse(args).unwrap().apply(&mut Options::default());
        assert_eq!(
            apply(&["-js"]).unwrap_err().to_string(),
            "-js: \"jetstream\" is not supported by this rnats-server build yet"
        );
        for args in [
            &["--jetstream"][..],
            &["-sd", "/tmp/js"],
            &["-s"],
            &["-r", "udp://h:514"],
        ] {
            assert!(
                matches!(apply(args), Err(FlagError::Unsupported { .. })),
                "{args:?}"
            );
        }
        assert!(apply(&["-js=false", "--log_size_limit", "0"]).is_ok());
        let mut opts = Options::default();
        parse(&["-ms", "8443", "--max_traced_msg_len", "10"])
            .unwrap()
            .apply(&mut opts)
            .unwrap();
        assert_eq!((opts.https_port, opts.max_traced_msg_len), (8443, 10));
        assert_eq!(parse(&["-p", "-1"]).unwrap().get("port"), Some("-1"));
    }
}
