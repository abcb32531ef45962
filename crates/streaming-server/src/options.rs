//! nats-streaming-server's options: defaults, configuration file keys and command line flags.
//!
//! The command line mixes the streaming flags (`-cid`, `-st`, `--dir`, the limits, the
//! heartbeats, `-ns`, `-m`, ...) with the embedded core server's own flags (`-a`, `-p`, `-DV`,
//! `--user`, ...). Streaming flags are taken here; everything else is handed to
//! [`rnats_server::flags::Flags`], which configures the embedded rnats server.
//!
//! Precedence: defaults < configuration file < command line. `-sc/--stan_config` names the
//! streaming configuration and `-c/--config` the NATS one; when only one is given it serves
//! both. In a file with a top-level `streaming { ... }` map, only that map configures
//! streaming, and it is hidden from the NATS configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rnats_conf::{Map, Spanned, Value};
use rnats_streaming::store::crypto::EncryptionKey;
use rnats_streaming::store::file::{FileStoreOptions, SyncPolicy};
use rnats_streaming::store::{ChannelLimitsOverride, StoreKind, StoreLimits};
use rnats_streaming_raft::ClusterOptions;

/// Version reported in logs and monitoring (the reference release this server mirrors).
pub const VERSION: &str = "0.25.6";

/// Default cluster ID.
pub const DEFAULT_CLUSTER_ID: &str = "test-cluster";
/// Default discovery prefix.
pub const DEFAULT_DISCOVER_PREFIX: &str = "_STAN.discover";

/// Everything the streaming server is configured with.
#[derive(Debug, Clone)]
pub struct Options {
    pub cluster_id: String,
    pub discover_prefix: String,
    pub store_type: StoreKind,
    /// Root directory of the FILE store.
    pub dir: Option<PathBuf>,
    pub limits: StoreLimits,
    pub file_options: FileStoreOptions,
    /// `-ns`: connect to this NATS server (or comma-separated list) instead of embedding one.
    pub nats_server_url: Option<String>,
    /// Options of the embedded rnats server (ignored with `nats_server_url`).
    pub nats: rnats_server::Options,
    /// Streaming monitoring port (`-m`): 0 = off, -1 = any free port.
    pub http_port: i32,
    pub http_host: String,
    /// Server → client heartbeat interval, reply timeout and tolerated failures.
    pub hb_interval: Duration,
    pub hb_timeout: Duration,
    pub hb_fail_count: u32,
    /// Most publishes processed in one store batch.
    pub io_batch_size: usize,
    /// Close the active durable instead of refusing a duplicate durable registration.
    pub replace_durable: bool,
    /// Credentials of the engine's connection to NATS.
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub stan_debug: bool,
    pub stan_trace: bool,
    /// How long the old connection of a duplicate client ID has to answer (500 ms).
    pub client_dup_check_timeout: Duration,
    /// Check at start-up that no other streaming server serves the cluster ID.
    pub startup_check: bool,
    /// Fault-tolerance group (`--ft_group`): the server starts as a standby and becomes
    /// active when it gets the store lock.
    pub ft_group: Option<String>,
    /// How often the active server of an FT group sends its heartbeat (default 1 s).
    pub ft_hb_interval: Duration,
    /// Heartbeats missed for this long mean the active is gone (default 1.25 s).
    pub ft_hb_missed_interval: Duration,
    /// Partitioning: only the channels of `store_limits.channels` are served here.
    pub partitioning: bool,
    /// Encryption at rest (`--encrypt`; a key given by flag or config implies it).
    pub encrypt: bool,
    /// `--encryption_cipher`: `AES` or `CHACHA`; empty for the platform's default.
    pub encryption_cipher: String,
    /// `--encryption_key` / `encryption_key` (the `NATS_STREAMING_ENCRYPTION_KEY`
    /// environment variable wins over it). Never printed.
    pub encryption_key: Option<EncryptionKey>,
    /// RAFT clustering (`--clustered` and the `cluster` block).
    pub clustering: Clustering,
}

/// RAFT clustering options, with the reference's names and defaults. `raft` holds the node
/// options proper (its `cluster_id`, `node_id` and `log_path` are filled at start-up).
#[derive(Debug, Clone)]
pub struct Clustering {
    /// `--clustered`.
    pub clustered: bool,
    pub raft: ClusterOptions,
    /// `--cluster_log_path` as given (default `<cluster id>/<node id>`).
    pub log_path: Option<PathBuf>,
    /// `--cluster_allow_add_remove_node`.
    pub allow_add_remove_node: bool,
    /// `--cluster_proceed_on_restore_failure`.
    pub proceed_on_restore_failure: bool,
}

impl Default for Clustering {
    fn default() -> Self {
        Clustering {
            clustered: false,
            raft: ClusterOptions::new("", "", ""),
            log_path: None,
            allow_add_remove_node: false,
            proceed_on_restore_failure: false,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            discover_prefix: DEFAULT_DISCOVER_PREFIX.to_string(),
            store_type: StoreKind::Memory,
            dir: None,
            limits: StoreLimits::default(),
            file_options: FileStoreOptions::default(),
            nats_server_url: None,
            nats: rnats_server::Options::default(),
            http_port: 0,
            http_host: "0.0.0.0".to_string(),
            hb_interval: Duration::from_secs(30),
            hb_timeout: Duration::from_secs(10),
            hb_fail_count: 10,
            io_batch_size: 1024,
            replace_durable: false,
            username: None,
            password: None,
            token: None,
            stan_debug: false,
            stan_trace: false,
            client_dup_check_timeout: Duration::from_millis(500),
            startup_check: true,
            ft_group: None,
            ft_hb_interval: Duration::from_secs(1),
            ft_hb_missed_interval: Duration::from_millis(1250),
            partitioning: false,
            encrypt: false,
            encryption_cipher: String::new(),
            encryption_key: None,
            clustering: Clustering::default(),
        }
    }
}

impl Options {
    /// Checks cross-field rules at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_id.is_empty()
            || !self
                .cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "invalid cluster name \"{}\": only alphanumeric and `-` or `_` characters allowed",
                self.cluster_id
            ));
        }
        if self.store_type == StoreKind::File && self.dir.is_none() {
            return Err("for FILE stores, the directory must be specified".into());
        }
        if self.store_type == StoreKind::Sql {
            return Err("SQL store is not supported by this rnats-streaming-server build".into());
        }
        if self.ft_group.is_some() {
            if self.store_type == StoreKind::Memory {
                return Err("ft: only FILE or SQL stores supported in FT mode".into());
            }
            if self.ft_hb_interval.is_zero()
                || self.ft_hb_missed_interval.as_secs_f64()
                    < self.ft_hb_interval.as_secs_f64() * 1.1
            {
                return Err(format!(
                    "ft: the missed heartbeat interval needs to be at least 10% more than the heartbeat interval (hb={:?} missed hb={:?})",
                    self.ft_hb_interval, self.ft_hb_missed_interval
                ));
            }
        }
        if self.clustering.clustered {
            if self.store_type == StoreKind::Memory {
                return Err("stan: clustering mode not supported with MEMORY store type".into());
            }
            if self.partitioning {
                return Err(
                    "stan: channels partitioning in clustering mode is not supported".into(),
                );
            }
            if self.ft_group.is_some() {
                return Err("stan: fault tolerance and clustering modes are exclusive".into());
            }
        }
        if self.partitioning && self.limits.per_channel.is_empty() {
            return Err("stan: no configured channel".into());
        }
        if self.hb_interval.is_zero() || self.hb_timeout.is_zero() {
            return Err("heartbeat interval and timeout must be positive".into());
        }
        self.limits.validate().map_err(|e| e.to_string())?;
        Ok(())
    }
}

pub const USAGE: &str = "\
Usage: rnats-streaming-server [options]

Streaming Server Options:
    -cid, --cluster_id  <string>      Cluster ID (default: test-cluster)
    -st,  --store <string>            Store type: MEMORY|FILE (default: MEMORY)
          --dir <string>              For FILE store type, this is the root directory
    -mc,  --max_channels <int>        Max number of channels (0 for unlimited)
    -msu, --max_subs <int>            Max number of subscriptions per channel (0 for unlimited)
    -mm,  --max_msgs <int>            Max number of messages per channel (0 for unlimited)
    -mb,  --max_bytes <size>          Max messages total size per channel (0 for unlimited)
    -ma,  --max_age <duration>        Max duration a message can be stored (\"0s\" for unlimited)
    -mi,  --max_inactivity <duration> Max inactivity (no new message, no subscription) after which a channel can be garbage collected (0 for unlimited)
    -ns,  --nats_server <string>      Connect to this external NATS Server URL (embedded otherwise)
    -sc,  --stan_config <string>      Streaming server configuration file
    -hbi, --hb_interval <duration>    Interval at which server sends heartbeat to a client
    -hbt, --hb_timeout <duration>     How long server waits for a heartbeat response
    -hbf, --hb_fail_count <int>       Number of failed heartbeats before server closes the client connection
          --io_batch_size <int>       Max number of messages in an IO batch (default: 1024)
          --replace_durable <bool>    Replace the existing durable subscription instead of reporting a duplicate durable error
          --encrypt <bool>            Encrypt message payloads at rest
          --encryption_cipher <string> AES (default on x86-64) or CHACHA
          --encryption_key <string>   Encryption key (NATS_STREAMING_ENCRYPTION_KEY in the environment is preferred)
          --clustered <bool>          Run in clustered mode (RAFT replication)
          --cluster_node_id <string>  ID of this node in the cluster
          --cluster_bootstrap <bool>  Bootstrap the cluster with this node alone
          --cluster_peers <string>    Comma separated list of the cluster's node IDs
          --cluster_log_path <string> Directory of this node's RAFT log and snapshots
          --cluster_sync <bool>       Fsync the RAFT log and the store on every write
          --cluster_raft_logging <bool> Log RAFT internals
          --cluster_log_cache_size <int>, --cluster_log_snapshots <int>, --cluster_trailing_logs <int>
          --cluster_snapshot_threshold <int> RAFT entries between snapshots (default: 8192)
          --cluster_allow_add_remove_node <bool>, --cluster_proceed_on_restore_failure <bool>
          --ft_group <string>         Name of this server's fault-tolerance group (FILE store): starts as a standby
          --ft_hb_interval <duration> Heartbeat interval of the active FT server (default: 1s)
          --ft_hb_missed_interval <duration> Missed heartbeats after which a standby tries to take over (default: 1.25s)
    -m,   --http_port <int>           HTTP port for monitoring (NATS and /streaming endpoints)

Streaming Server File Store Options:
    --file_compact_enabled <bool>     Enable file compaction
    --file_compact_frag <int>         File fragmentation threshold for compaction
    --file_compact_interval <int>     Minimum interval (in seconds) between file compactions
    --file_compact_min_size <size>    Minimum file size for compaction
    --file_buffer_size <size>         File buffer size (in bytes)
    --file_sync <bool>                Enable File.Sync on Flush
    --file_slice_max_msgs <int>       Maximum number of messages per file slice (subject to channel limits)
    --file_slice_max_bytes <size>     Maximum file slice size - including index file (subject to channel limits)
    --file_slice_max_age <duration>   Maximum file slice duration starting when the first message is stored (subject to channel limits)
    --file_fds_limit <int>            Store will try to use no more file descriptors than this given limit
    --file_read_buffer_size <size>    Size of messages read ahead buffer (0 to disable)

Streaming Server Logging Options:
    -SD, --stan_debug=<bool>          Enable STAN debugging output
    -SV, --stan_trace=<bool>          Trace the raw STAN protocol
    -SDV                              Debug and trace STAN

Embedded NATS Server Options:
    -a, --addr <host>                 Bind to host address (default: 0.0.0.0)
    -p, --port <port>                 Use port for clients (default: 4222)
    -P, --pid <file>                  File to store PID
    -c, --config <file>               Configuration file
    -l, --log <file>                  File to redirect log output
    -T, --logtime                     Timestamp log entries (default: true)
    -D, --debug                       Enable debugging output
    -V, --trace                       Trace the raw protocol
    -DV                               Debug and trace
        --user <user>                 User required for connections
        --pass <password>             Password required for connections
        --auth <token>                Authorization token required for connections
        --tls, --tlscert, --tlskey, --tlsverify, --tlscacert   TLS options
        --routes <rurl-1, rurl-2>     Routes to solicit and connect
        --cluster <cluster-url>       Cluster URL for solicited routes

Common Options:
    -h, --help                        Show this message
    -v, --version                     Show version
";

/// Streaming flags that take a value: canonical name and aliases.
const VALUE_FLAGS: &[(&str, &[&str])] = &[
    ("cluster_id", &["cid", "cluster_id"]),
    ("store", &["st", "store"]),
    ("dir", &["dir"]),
    ("stan_config", &["sc", "stan_config"]),
    ("nats_server", &["ns", "nats_server"]),
    ("max_channels", &["mc", "max_channels"]),
    ("max_subs", &["msu", "max_subs"]),
    ("max_msgs", &["mm", "max_msgs"]),
    ("max_bytes", &["mb", "max_bytes"]),
    ("max_age", &["ma", "max_age"]),
    ("max_inactivity", &["mi", "max_inactivity"]),
    ("hb_interval", &["hbi", "hb_interval"]),
    ("hb_timeout", &["hbt", "hb_timeout"]),
    ("hb_fail_count", &["hbf", "hb_fail_count"]),
    ("http_port", &["m", "http_port"]),
    ("io_batch_size", &["io_batch_size"]),
    ("io_sleep_time", &["io_sleep_time"]),
    ("file_compact_frag", &["file_compact_frag"]),
    ("file_compact_interval", &["file_compact_interval"]),
    ("file_compact_min_size", &["file_compact_min_size"]),
    ("file_buffer_size", &["file_buffer_size"]),
    ("file_crc_poly", &["file_crc_poly"]),
    ("file_slice_max_msgs", &["file_slice_max_msgs"]),
    ("file_slice_max_bytes", &["file_slice_max_bytes"]),
    ("file_slice_max_age", &["file_slice_max_age"]),
    ("file_slice_archive_script", &["file_slice_archive_script"]),
    ("file_fds_limit", &["file_fds_limit"]),
    ("file_parallel_recovery", &["file_parallel_recovery"]),
    ("file_read_buffer_size", &["file_read_buffer_size"]),
    ("file_auto_sync", &["file_auto_sync"]),
    ("ft_group", &["ft_group"]),
    ("ft_hb_interval", &["ft_hb_interval"]),
    ("ft_hb_missed_interval", &["ft_hb_missed_interval"]),
    // Accepted so that the usage error names the feature, rejected in `apply`.
    ("cluster_node_id", &["cluster_node_id"]),
    ("cluster_peers", &["cluster_peers"]),
    ("cluster_log_path", &["cluster_log_path"]),
    ("cluster_log_cache_size", &["cluster_log_cache_size"]),
    ("cluster_log_snapshots", &["cluster_log_snapshots"]),
    ("cluster_trailing_logs", &["cluster_trailing_logs"]),
    (
        "cluster_snapshot_threshold",
        &["cluster_snapshot_threshold"],
    ),
    ("sql_driver", &["sql_driver"]),
    ("sql_source", &["sql_source"]),
    ("encryption_cipher", &["encryption_cipher"]),
    ("encryption_key", &["encryption_key"]),
    ("tls_client_cert", &["tls_client_cert"]),
    ("tls_client_key", &["tls_client_key"]),
    ("tls_client_cacert", &["tls_client_cacert"]),
    ("syslog_name", &["syslog_name"]),
];

/// Streaming boolean flags.
const BOOL_FLAGS: &[(&str, &[&str])] = &[
    ("stan_debug", &["SD", "stan_debug"]),
    ("stan_trace", &["SV", "stan_trace"]),
    ("stan_debug_trace", &["SDV"]),
    ("replace_durable", &["replace_durable"]),
    ("file_compact_enabled", &["file_compact_enabled"]),
    ("file_crc", &["file_crc"]),
    ("file_sync", &["file_sync"]),
    ("file_truncate_bad_eof", &["file_truncate_bad_eof"]),
    ("secure", &["secure"]),
    ("clustered", &["clustered"]),
    ("cluster_bootstrap", &["cluster_bootstrap"]),
    ("cluster_sync", &["cluster_sync"]),
    ("cluster_raft_logging", &["cluster_raft_logging"]),
    (
        "cluster_allow_add_remove_node",
        &["cluster_allow_add_remove_node"],
    ),
    (
        "cluster_proceed_on_restore_failure",
        &["cluster_proceed_on_restore_failure"],
    ),
    ("encrypt", &["encrypt"]),
    ("help", &["h", "help"]),
    ("version", &["v", "version"]),
];

/// The parsed command line: streaming flags by canonical name, and the core server's flags.
#[derive(Debug, Default)]
pub struct CommandLine {
    pub stan: Vec<(&'static str, String)>,
    pub nats: rnats_server::flags::Flags,
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl CommandLine {
    /// Splits and parses the arguments (without the program name).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<CommandLine, String> {
        let mut stan = Vec::new();
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                rest.push(arg);
                rest.extend(args.by_ref());
                break;
            }
            let Some(stripped) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
                rest.push(arg);
                continue;
            };
            let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (stripped, None),
            };
            if let Some((canon, _)) = BOOL_FLAGS.iter().find(|(_, n)| n.contains(&name)) {
                let value = match inline {
                    Some(v) => parse_go_bool(&v).ok_or_else(|| {
                        format!("invalid boolean value \"{v}\" for -{name}: parse error")
                    })?,
                    None => true,
                };
                stan.push((*canon, value.to_string()));
            } else if let Some((canon, _)) = VALUE_FLAGS.iter().find(|(_, n)| n.contains(&name)) {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
                };
                stan.push((*canon, value));
            } else {
                let takes_value = inline.is_none() && rnats_server::flags::takes_value(name);
                rest.push(arg);
                if takes_value && let Some(v) = args.next() {
                    rest.push(v);
                }
            }
        }
        let nats = rnats_server::flags::Flags::parse(rest).map_err(|e| e.to_string())?;
        Ok(CommandLine { stan, nats })
    }

    /// The last value of a streaming flag.
    pub fn get(&self, canon: &str) -> Option<&str> {
        self.stan
            .iter()
            .rev()
            .find(|(n, _)| *n == canon)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_true(&self, canon: &str) -> bool {
        self.get(canon) == Some("true")
    }

    /// Builds the options: defaults, then the configuration file(s), then the flags.
    pub fn options(&self) -> Result<Options, String> {
        let mut opts = Options::default();
        let nats_conf = self.nats.get("config").map(PathBuf::from);
        let stan_conf = self.get("stan_config").map(PathBuf::from);
        // The NATS configuration: -c, else -sc (a file serves both when only one is given).
        if let Some(path) = nats_conf.as_ref().or(stan_conf.as_ref()) {
            let map = parse_file(path)?;
            let nats_map = without_streaming_keys(&map);
            rnats_server::config::apply_map(&nats_map, &mut opts.nats)
                .map_err(|e| e.to_string())?;
        }
        if let Some(path) = stan_conf.as_ref().or(nats_conf.as_ref()) {
            let map = parse_file(path)?;
            let streaming = map
                .get_ci("streaming")
                .and_then(|v| v.as_map())
                .cloned()
                .unwrap_or(map);
            apply_config(&streaming, &mut opts)?;
        }
        self.nats.apply(&mut opts.nats)?;
        self.apply(&mut opts)?;
        // Engine credentials default to the embedded server's single user or token.
        if opts.username.is_none() && opts.token.is_none() {
            opts.username = opts.nats.auth.user.clone();
            opts.password = opts.nats.auth.password.clone();
            opts.token = opts.nats.auth.token.clone();
        }
        opts.nats.validate()?;
        opts.validate()?;
        Ok(opts)
    }

    /// Applies the streaming flags over `opts`.
    pub fn apply(&self, opts: &mut Options) -> Result<(), String> {
        for (name, value) in &self.stan {
            let v = value.as_str();
            let bad = || format!("invalid value \"{v}\" for flag -{name}: parse error");
            let int = || v.trim().parse::<i64>().map_err(|_| bad());
            let size = || rnats_conf::parse_size(v.trim()).ok_or_else(bad);
            let dur = || parse_flag_duration(v).ok_or_else(bad);
            let nonneg = |n: i64, what: &str| -> Result<u64, String> {
                u64::try_from(n).map_err(|_| format!("{what} limit cannot be negative ({n})"))
            };
            match *name {
                "cluster_id" => opts.cluster_id = v.to_string(),
                "store" => opts.store_type = parse_store_type(v)?,
                "dir" => opts.dir = Some(PathBuf::from(v)),
                "nats_server" => opts.nats_server_url = Some(v.to_string()),
                "max_channels" => opts.limits.max_channels = nonneg(int()?, "max channels")?,
                "max_subs" => opts.limits.channel.max_subs = nonneg(int()?, "max subscriptions")?,
                "max_msgs" => opts.limits.channel.max_msgs = nonneg(int()?, "max messages")?,
                "max_bytes" => opts.limits.channel.max_bytes = nonneg(size()?, "max bytes")?,
                "max_age" => opts.limits.channel.max_age = dur()?,
                "max_inactivity" => opts.limits.channel.max_inactivity = dur()?,
                "hb_interval" => opts.hb_interval = dur()?,
                "hb_timeout" => opts.hb_timeout = dur()?,
                "hb_fail_count" => opts.hb_fail_count = u32::try_from(int()?).map_err(|_| bad())?,
                "http_port" => opts.http_port = i32::try_from(int()?).map_err(|_| bad())?,
                "io_batch_size" => {
                    opts.io_batch_size = usize::try_from(int()?).map_err(|_| bad())?.max(1)
                }
                "io_sleep_time" => {}
                "stan_debug" => opts.stan_debug = v == "true",
                "stan_trace" => opts.stan_trace = v == "true",
                "stan_debug_trace" => {
                    opts.stan_debug = v == "true";
                    opts.stan_trace = v == "true";
                }
                "replace_durable" => opts.replace_durable = v == "true",
                "file_compact_enabled" => opts.file_options.compact_enabled = v == "true",
                "file_compact_frag" => {
                    opts.file_options.compact_frag = u32::try_from(int()?).map_err(|_| bad())?
                }
                "file_compact_interval" => {
                    opts.file_options.compact_interval =
                        Duration::from_secs(u64::try_from(int()?).map_err(|_| bad())?)
                }
                "file_compact_min_size" => {
                    opts.file_options.compact_min_size = nonneg(size()?, "compact min size")?
                }
                "file_buffer_size" => {
                    opts.file_options.write_buffer_size =
                        usize::try_from(size()?).map_err(|_| bad())?
                }
                "file_read_buffer_size" => {
                    opts.file_options.read_buffer_size =
                        usize::try_from(size()?).map_err(|_| bad())?
                }
                "file_sync" => {
                    opts.file_options.sync = if v == "true" {
                        SyncPolicy::OnFlush
                    } else {
                        SyncPolicy::Never
                    }
                }
                "file_slice_max_msgs" => {
                    opts.file_options.slice_max_msgs = nonneg(int()?, "slice max msgs")?
                }
                "file_slice_max_bytes" => {
                    opts.file_options.slice_max_bytes = nonneg(size()?, "slice max bytes")?
                }
                "file_slice_max_age" => opts.file_options.slice_max_age = dur()?,
                "file_fds_limit" => {
                    opts.file_options.fds_limit = usize::try_from(int()?).map_err(|_| bad())?
                }
                "file_crc"
                | "file_crc_poly"
                | "file_parallel_recovery"
                | "file_auto_sync"
                | "file_truncate_bad_eof"
                | "syslog_name" => {}
                "file_slice_archive_script" => {
                    return Err("--file_slice_archive_script is not supported by this build".into());
                }
                "ft_group" => opts.ft_group = Some(v.to_string()).filter(|g| !g.is_empty()),
                "ft_hb_interval" => opts.ft_hb_interval = dur()?,
                "ft_hb_missed_interval" => opts.ft_hb_missed_interval = dur()?,
                "clustered" => opts.clustering.clustered = v == "true",
                "cluster_node_id" => opts.clustering.raft.node_id = v.to_string(),
                "cluster_bootstrap" => opts.clustering.raft.bootstrap = v == "true",
                "cluster_peers" => opts.clustering.raft.peers = split_peers(v),
                "cluster_log_path" => opts.clustering.log_path = Some(PathBuf::from(v)),
                "cluster_log_cache_size" => {
                    opts.clustering.raft.log_cache_size =
                        usize::try_from(int()?).map_err(|_| bad())?
                }
                "cluster_log_snapshots" => {
                    opts.clustering.raft.log_snapshots =
                        usize::try_from(int()?).map_err(|_| bad())?
                }
                "cluster_trailing_logs" => {
                    opts.clustering.raft.trailing_logs = u64::try_from(int()?).map_err(|_| bad())?
                }
                "cluster_snapshot_threshold" => {
                    opts.clustering.raft.snapshot_threshold =
                        u64::try_from(int()?).map_err(|_| bad())?.max(1)
                }
                "cluster_sync" => opts.clustering.raft.sync = v == "true",
                "cluster_raft_logging" => opts.clustering.raft.raft_logging = v == "true",
                "cluster_allow_add_remove_node" => {
                    opts.clustering.allow_add_remove_node = v == "true"
                }
                "cluster_proceed_on_restore_failure" => {
                    opts.clustering.proceed_on_restore_failure = v == "true"
                }
                "sql_driver" | "sql_source" => {
                    return Err("SQL store is not supported by this build".into());
                }
                "encrypt" => opts.encrypt = v == "true",
                "encryption_cipher" => opts.encryption_cipher = v.to_string(),
                "encryption_key" => {
                    opts.encryption_key =
                        Some(EncryptionKey::new(v.as_bytes())).filter(|k| !k.is_empty())
                }
                "secure" | "tls_client_cert" | "tls_client_key" | "tls_client_cacert"
                    if v != "false" =>
                {
                    return Err("TLS to the NATS server is not supported by this build".into());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `MEMORY`, `FILE` or `SQL`, any case.
pub fn parse_store_type(v: &str) -> Result<StoreKind, String> {
    match v.to_ascii_uppercase().as_str() {
        "MEMORY" => Ok(StoreKind::Memory),
        "FILE" => Ok(StoreKind::File),
        "SQL" => Ok(StoreKind::Sql),
        _ => Err(format!("unknown store type: {v}")),
    }
}

/// A Go duration (`1h30m`, `250ms`) or a bare number of seconds.
fn parse_flag_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v == "0" {
        return Some(Duration::ZERO);
    }
    rnats_conf::parse_duration(v).or_else(|| v.parse::<u64>().ok().map(Duration::from_secs))
}

fn parse_file(path: &Path) -> Result<Map, String> {
    rnats_conf::parse_file(path).map_err(|e| e.to_string())
}

/// Top-level keys that belong to streaming, removed before the map configures NATS.
const STREAMING_KEYS: &[&str] = &[
    "streaming",
    "id",
    "cid",
    "cluster_id",
    "discover_prefix",
    "store",
    "st",
    "store_type",
    "storetype",
    "dir",
    "datastore",
    "ns",
    "nats_server",
    "nats_server_url",
    "store_limits",
    "limits",
    "storelimits",
    "file_options",
    "file",
    "sql_options",
    "sql",
    "hbi",
    "hb_interval",
    "server_to_client_hb_interval",
    "hbt",
    "hb_timeout",
    "server_to_client_hb_timeout",
    "hbf",
    "hb_fail_count",
    "server_to_client_hb_fail_count",
    "sd",
    "stan_debug",
    "sv",
    "stan_trace",
    "ft_group",
    "ft_group_name",
    "ft_hb_interval",
    "ft_hb_missed_interval",
    "partitioning",
    "replace_durable",
    "replace_durables",
    "replace_duplicate_durable",
    "replace_duplicate_durables",
    "credentials",
    "username",
    "password",
    "token",
    "nkey_seed_file",
    "secure",
    "encrypt",
    "encryption_cipher",
    "encryption_key",
    "syslog_name",
];

fn without_streaming_keys(map: &Map) -> Map {
    let mut out = Map::new();
    for entry in map {
        if !STREAMING_KEYS.contains(&entry.key.to_ascii_lowercase().as_str()) {
            out.insert_entry(entry.clone());
        }
    }
    out
}

fn conf_err(v: &Spanned, msg: impl Into<String>) -> String {
    v.error(msg).to_string()
}

fn conf_str(key: &str, v: &Spanned) -> Result<String, String> {
    match &v.value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(conf_err(
            v,
            format!(
                "parameter \"{key}\" value is expected to be string, got {}",
                other.type_name()
            ),
        )),
    }
}

fn conf_int(key: &str, v: &Spanned) -> Result<i64, String> {
    match &v.value {
        Value::Integer(i) => Ok(*i),
        Value::String(s) => rnats_conf::parse_size(s).ok_or_else(|| {
            conf_err(
                v,
                format!("parameter \"{key}\" value is expected to be int64, got string"),
            )
        }),
        other => Err(conf_err(
            v,
            format!(
                "parameter \"{key}\" value is expected to be int64, got {}",
                other.type_name()
            ),
        )),
    }
}

fn conf_bool(key: &str, v: &Spanned) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| {
        conf_err(
            v,
            format!(
                "parameter \"{key}\" value is expected to be bool, got {}",
                v.type_name()
            ),
        )
    })
}

fn conf_duration(key: &str, v: &Spanned) -> Result<Duration, String> {
    match &v.value {
        Value::String(s) => parse_flag_duration(s)
            .ok_or_else(|| conf_err(v, format!("parameter \"{key}\": invalid duration \"{s}\""))),
        Value::Integer(0) => Ok(Duration::ZERO),
        other => Err(conf_err(
            v,
            format!(
                "parameter \"{key}\" value is expected to be string, got {}",
                other.type_name()
            ),
        )),
    }
}

fn nonneg(key: &str, n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("{key} limit cannot be negative ({n})"))
}

/// Applies a streaming configuration map (keys case-insensitive).
pub fn apply_config(map: &Map, opts: &mut Options) -> Result<(), String> {
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        match key.as_str() {
            "id" | "cid" | "cluster_id" => opts.cluster_id = conf_str(&key, v)?,
            "discover_prefix" => opts.discover_prefix = conf_str(&key, v)?,
            "store" | "st" | "store_type" | "storetype" => {
                opts.store_type = parse_store_type(&conf_str(&key, v)?)?
            }
            "dir" | "datastore" => opts.dir = Some(PathBuf::from(conf_str(&key, v)?)),
            "ns" | "nats_server" | "nats_server_url" => {
                opts.nats_server_url = Some(conf_str(&key, v)?)
            }
            "hbi" | "hb_interval" | "server_to_client_hb_interval" => {
                opts.hb_interval = conf_duration(&key, v)?
            }
            "hbt" | "hb_timeout" | "server_to_client_hb_timeout" => {
                opts.hb_timeout = conf_duration(&key, v)?
            }
            "hbf" | "hb_fail_count" | "server_to_client_hb_fail_count" => {
                opts.hb_fail_count =
                    u32::try_from(conf_int(&key, v)?).map_err(|_| format!("invalid {key}"))?
            }
            "sd" | "stan_debug" => opts.stan_debug = conf_bool(&key, v)?,
            "sv" | "stan_trace" => opts.stan_trace = conf_bool(&key, v)?,
            "replace_durable"
            | "replace_durables"
            | "replace_duplicate_durable"
            | "replace_duplicate_durables" => opts.replace_durable = conf_bool(&key, v)?,
            "username" | "user" => opts.username = Some(conf_str(&key, v)?),
            "password" | "pass" => opts.password = Some(conf_str(&key, v)?),
            "token" => opts.token = Some(conf_str(&key, v)?),
            "store_limits" | "limits" | "storelimits" => {
                let m = v
                    .as_map()
                    .ok_or_else(|| conf_err(v, format!("parameter \"{key}\" must be a map")))?;
                apply_limits(m, opts)?
            }
            "file_options" | "file" => {
                let m = v
                    .as_map()
                    .ok_or_else(|| conf_err(v, format!("parameter \"{key}\" must be a map")))?;
                apply_file_options(m, &mut opts.file_options)?
            }
            "ft_group" | "ft_group_name" => {
                opts.ft_group = Some(conf_str(&key, v)?).filter(|g| !g.is_empty())
            }
            "ft_hb_interval" => opts.ft_hb_interval = conf_duration(&key, v)?,
            "ft_hb_missed_interval" => opts.ft_hb_missed_interval = conf_duration(&key, v)?,
            "partitioning" => opts.partitioning = conf_bool(&key, v)?,
            "encrypt" => opts.encrypt = conf_bool(&key, v)?,
            "encryption_cipher" => opts.encryption_cipher = conf_str(&key, v)?,
            "encryption_key" => {
                opts.encryption_key = Some(EncryptionKey::new(conf_str(&key, v)?.into_bytes()))
                    .filter(|k| !k.is_empty())
            }
            "cluster" => {
                let m = v
                    .as_map()
                    .ok_or_else(|| conf_err(v, format!("parameter \"{key}\" must be a map")))?;
                apply_cluster(m, &mut opts.clustering)?
            }
            "sql_options" | "sql" | "credentials" | "nkey_seed_file" | "tls" | "secure"
                if !matches!(v.value, Value::Bool(false)) =>
            {
                return Err(conf_err(
                    v,
                    format!("\"{}\" is not supported by this build", entry.key),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_limits(map: &Map, opts: &mut Options) -> Result<(), String> {
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        match key.as_str() {
            "max_channels" | "mc" | "maxchannels" => {
                opts.limits.max_channels = nonneg("max channels", conf_int(&key, v)?)?
            }
            "channels" | "channels_limits" | "channelslimits" | "per_channel"
            | "per_channel_limits" => {
                let m = v
                    .as_map()
                    .ok_or_else(|| conf_err(v, format!("parameter \"{key}\" must be a map")))?;
                for ch in m {
                    let cm = ch.value.as_map().ok_or_else(|| {
                        conf_err(
                            &ch.value,
                            format!("channel \"{}\" limits must be a map", ch.key),
                        )
                    })?;
                    let o = parse_override(cm)?;
                    opts.limits.per_channel.insert(ch.key.clone(), o);
                }
            }
            _ => {
                let o = parse_override_entry(&key, v)?;
                let c = &mut opts.limits.channel;
                if let Some(n) = o.max_msgs {
                    c.max_msgs = n;
                }
                if let Some(n) = o.max_bytes {
                    c.max_bytes = n;
                }
                if let Some(n) = o.max_age {
                    c.max_age = n;
                }
                if let Some(n) = o.max_subs {
                    c.max_subs = n;
                }
                if let Some(n) = o.max_inactivity {
                    c.max_inactivity = n;
                }
            }
        }
    }
    Ok(())
}

fn parse_override(map: &Map) -> Result<ChannelLimitsOverride, String> {
    let mut out = ChannelLimitsOverride::default();
    for entry in map {
        let o = parse_override_entry(&entry.key.to_ascii_lowercase(), &entry.value)?;
        out.max_msgs = o.max_msgs.or(out.max_msgs);
        out.max_bytes = o.max_bytes.or(out.max_bytes);
        out.max_age = o.max_age.or(out.max_age);
        out.max_subs = o.max_subs.or(out.max_subs);
        out.max_inactivity = o.max_inactivity.or(out.max_inactivity);
    }
    Ok(out)
}

fn parse_override_entry(key: &str, v: &Spanned) -> Result<ChannelLimitsOverride, String> {
    let mut o = ChannelLimitsOverride::default();
    match key {
        "max_msgs" | "mm" | "maxmsgs" | "max_count" | "maxcount" => {
            o.max_msgs = Some(nonneg("max messages", conf_int(key, v)?)?)
        }
        "max_bytes" | "mb" | "maxbytes" => {
            o.max_bytes = Some(nonneg("max bytes", conf_int(key, v)?)?)
        }
        "max_age" | "ma" | "maxage" => o.max_age = Some(conf_duration(key, v)?),
        "max_subs" | "msu" | "max_subscriptions" | "maxsubscriptions" => {
            o.max_subs = Some(nonneg("max subscriptions", conf_int(key, v)?)?)
        }
        "max_inactivity" | "mi" | "maxinactivity" => {
            o.max_inactivity = Some(conf_duration(key, v)?)
        }
        _ => {}
    }
    Ok(o)
}

/// `--cluster_peers` / `peers`: a comma-separated list.
fn split_peers(v: &str) -> Vec<String> {
    v.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `cluster { ... }` block (giving one implies `clustered`).
fn apply_cluster(map: &Map, c: &mut Clustering) -> Result<(), String> {
    c.clustered = true;
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        let count = || -> Result<u64, String> {
            u64::try_from(conf_int(&key, v)?).map_err(|_| conf_err(v, format!("invalid {key}")))
        };
        match key.as_str() {
            "node_id" => c.raft.node_id = conf_str(&key, v)?,
            "bootstrap" => c.raft.bootstrap = conf_bool(&key, v)?,
            "peers" => {
                c.raft.peers = match &v.value {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| conf_str(&key, i))
                        .collect::<Result<_, _>>()?,
                    _ => split_peers(&conf_str(&key, v)?),
                }
            }
            "log_path" => c.log_path = Some(PathBuf::from(conf_str(&key, v)?)),
            "log_cache_size" => c.raft.log_cache_size = count()? as usize,
            "log_snapshots" => c.raft.log_snapshots = count()? as usize,
            "trailing_logs" => c.raft.trailing_logs = count()?,
            "snapshot_threshold" => c.raft.snapshot_threshold = count()?.max(1),
            "sync" => c.raft.sync = conf_bool(&key, v)?,
            "raft_logging" => c.raft.raft_logging = conf_bool(&key, v)?,
            "proceed_on_restore_failure" => c.proceed_on_restore_failure = conf_bool(&key, v)?,
            "allow_add_remove_node" => c.allow_add_remove_node = conf_bool(&key, v)?,
            "raft_heartbeat_timeout" => c.raft.heartbeat_timeout = conf_duration(&key, v)?,
            "raft_election_timeout" => c.raft.election_timeout = conf_duration(&key, v)?,
            "raft_lease_timeout" => c.raft.lease_timeout = conf_duration(&key, v)?,
            "raft_commit_timeout" => c.raft.commit_timeout = conf_duration(&key, v)?,
            _ => {}
        }
    }
    Ok(())
}

fn apply_file_options(map: &Map, f: &mut FileStoreOptions) -> Result<(), String> {
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        let usize_of = |n: i64| usize::try_from(n).map_err(|_| format!("invalid {key}"));
        match key.as_str() {
            "compact" | "compact_enabled" => f.compact_enabled = conf_bool(&key, v)?,
            "compact_frag" | "compact_fragmentation" => {
                f.compact_frag = u32::try_from(conf_int(&key, v)?).map_err(|_| "bad frag")?
            }
            "compact_interval" => {
                f.compact_interval =
                    Duration::from_secs(nonneg("compact interval", conf_int(&key, v)?)?)
            }
            "compact_min_size" => f.compact_min_size = nonneg("size", conf_int(&key, v)?)?,
            "buffer_size" => f.write_buffer_size = usize_of(conf_int(&key, v)?)?,
            "file_read_buffer_size" | "read_buffer_size" => {
                f.read_buffer_size = usize_of(conf_int(&key, v)?)?
            }
            "sync" | "do_sync" | "sync_on_flush" => {
                f.sync = if conf_bool(&key, v)? {
                    SyncPolicy::OnFlush
                } else {
                    SyncPolicy::Never
                }
            }
            "slice_max_msgs" | "slice_max_count" | "slice_msgs" | "slice_count" => {
                f.slice_max_msgs = nonneg("slice", conf_int(&key, v)?)?
            }
            "slice_max_bytes" | "slice_max_size" | "slice_bytes" | "slice_size" => {
                f.slice_max_bytes = nonneg("slice", conf_int(&key, v)?)?
            }
            "slice_max_age" | "slice_age" | "slice_max_time" | "slice_time_limit" => {
                f.slice_max_age = conf_duration(&key, v)?
            }
            "file_descriptors_limit" | "fds_limit" => f.fds_limit = usize_of(conf_int(&key, v)?)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        CommandLine::parse(args.iter().map(|s| s.to_string()))?.options()
    }

    #[test]
    fn streaming_and_nats_flags_mix() {
        let o = parse(&[
            "-cid",
            "c1",
            "-st",
            "file",
            "--dir=/tmp/x",
            "-p",
            "4333",
            "-DV",
            "-mm",
            "10",
            "-mb",
            "1KB",
            "-ma",
            "1h",
            "-hbi",
            "250ms",
            "-hbf",
            "3",
            "-m",
            "8222",
            "-SDV",
            "-a",
            "127.0.0.1",
        ])
        .unwrap();
        assert_eq!(o.cluster_id, "c1");
        assert_eq!(o.store_type, StoreKind::File);
        assert_eq!(o.dir.as_deref(), Some(Path::new("/tmp/x")));
        assert_eq!(o.nats.port, 4333);
        assert_eq!(o.nats.host, "127.0.0.1");
        assert!(o.nats.debug && o.nats.trace && o.stan_debug && o.stan_trace);
        assert_eq!(o.limits.channel.max_msgs, 10);
        assert_eq!(o.limits.channel.max_bytes, 1024);
        assert_eq!(o.limits.channel.max_age, Duration::from_secs(3600));
        assert_eq!(o.hb_interval, Duration::from_millis(250));
        assert_eq!(o.hb_fail_count, 3);
        assert_eq!(o.http_port, 8222);
        assert_eq!(o.nats.http_port, 0);
    }

    #[test]
    fn defaults_and_errors() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.cluster_id, "test-cluster");
        assert_eq!(o.store_type, StoreKind::Memory);
        assert_eq!(o.limits.max_channels, 100);
        assert!(parse(&["-st", "FILE"]).unwrap_err().contains("directory"));
        assert!(parse(&["-st", "bogus"]).is_err());
        assert!(parse(&["-mm", "-1"]).unwrap_err().contains("negative"));
        assert!(parse(&["-cid", "a.b"]).is_err());
        assert!(parse(&["-x"]).unwrap_err().contains("not defined"));
        assert!(parse(&["--clustered"]).is_err());
    }

    #[test]
    fn config_file_with_streaming_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        std::fs::write(
            &path,
            "port: 4555\nstreaming {\n  id: mycluster\n  store: file\n  dir: \"/tmp/s\"\n  hb_interval: \"2s\"\n  store_limits {\n    max_channels: 5\n    max_msgs: 7\n    channels {\n      \"foo.>\" { max_msgs: 3 }\n      bar { max_age: \"1s\" }\n    }\n  }\n}\n",
        )
        .unwrap();
        let o = parse(&["-c", path.to_str().unwrap(), "-mc", "6"]).unwrap();
        assert_eq!(o.nats.port, 4555);
        assert_eq!(o.cluster_id, "mycluster");
        assert_eq!(o.store_type, StoreKind::File);
        assert_eq!(o.hb_interval, Duration::from_secs(2));
        assert_eq!(o.limits.max_channels, 6);
        assert_eq!(o.limits.channel.max_msgs, 7);
        assert_eq!(o.limits.resolve("foo.x").max_msgs, 3);
        assert_eq!(o.limits.resolve("bar").max_age, Duration::from_secs(1));
    }
}
