//! The streaming server's command line: its own flags ([`STAN_FLAGS`]) and the core server's
//! ([`NATS_FLAGS`]), parsed in one go by the core server's Go-style parser; the usage text.

use std::path::PathBuf;
use std::time::Duration;

use rnats_server::flags::{FlagError, FlagTable, FlagValues, Flags, NATS_FLAGS, Parsed, parse};
use rnats_streaming::store::crypto::EncryptionKey;
use rnats_streaming::store::file::SyncPolicy;

use super::{
    Options, OptionsError, crc_poly, nonneg, parse_flag_duration, parse_store_type, split_peers,
};

pub const USAGE: &str = "\
Usage: rnats-streaming-server [options]

Streaming Server Options:
    -cid, --cluster_id  <string>      Cluster ID (default: test-cluster)
    -st,  --store <string>            Store type: MEMORY|FILE|SQL (default: MEMORY)
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
          --max_clients <int>         Max number of clients connected at once (0 for unlimited, the default)
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
          --ft_group <string>         Name of this server's fault-tolerance group (FILE or SQL store): starts as a standby
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
    --file_crc <bool>                 Check the CRC-32 of a nats-streaming-server store being migrated (default: true)
    --file_crc_poly <int>             Its CRC-32 polynomial (default: IEEE, 3988292384)
    --file_truncate_bad_eof <bool>    Skip its last record when cut short by a crash instead of failing

Migration from nats-streaming-server (FILE store; -st FILE --dir D migrates D in place at start-up):
    --migrate_from <dir>              Migrate the store in <dir> into --dir (a new directory), print the report, exit
    --migrate_check <dir>             Read the whole store in <dir>, print what would be migrated and any damage, exit (1 if damaged)

Streaming Server SQL Store Options:
    --sql_driver <string>             Name of the SQL Driver (\"mysql\" or \"postgres\")
    --sql_source <string>             Datasource used when opening an SQL connection to the database
    --sql_no_caching <bool>           Enable/Disable caching for improved performance
    --sql_max_open_conns <int>        Maximum number of opened connections to the database
    --sql_bulk_insert_limit <int>     Maximum number of messages stored with a single SQL \"INSERT\" statement
                                      (default 256; 0: one per statement, as nats-streaming-server)
    --sql_create_schema               Create the store's tables in the (empty) database of
                                      --sql_driver/--sql_source, print what was done, and exit

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

/// The streaming server's own flags; they win over the core server's of the same name.
pub const STAN_FLAGS: FlagTable = FlagTable {
    values: VALUE_FLAGS,
    bools: BOOL_FLAGS,
};

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
    ("max_clients", &["max_clients"]),
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
    ("migrate_from", &["migrate_from"]),
    ("migrate_check", &["migrate_check"]),
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
    ("sql_max_open_conns", &["sql_max_open_conns"]),
    ("sql_bulk_insert_limit", &["sql_bulk_insert_limit"]),
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
    ("sql_no_caching", &["sql_no_caching"]),
    ("sql_create_schema", &["sql_create_schema"]),
    ("help", &["h", "help"]),
    ("version", &["v", "version"]),
];

/// The parsed command line: the streaming flags by canonical name, and the core server's.
#[derive(Debug, Default)]
pub struct CommandLine {
    pub stan: FlagValues,
    pub nats: Flags,
}

impl CommandLine {
    /// Parses the arguments (without the program name).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<CommandLine, FlagError> {
        let Parsed {
            values: [stan, nats],
            first_arg,
        } = parse([&STAN_FLAGS, &NATS_FLAGS], args).map_err(|e| match e {
            // A core server flag keeps the core server's wording.
            FlagError::InvalidBool { ref flag, .. } if STAN_FLAGS.lookup(flag).is_none() => {
                Flags::own_words(e)
            }
            e => e,
        })?;
        let mut nats = Flags(nats);
        if let Some(arg) = first_arg {
            nats.command(arg)?;
        }
        Ok(CommandLine { stan, nats })
    }

    /// The last value of a streaming flag.
    pub fn get(&self, canon: &str) -> Option<&str> {
        self.stan.get(canon)
    }

    pub fn is_true(&self, canon: &str) -> bool {
        self.stan.is_true(canon)
    }

    /// The options this command line asks for (see [`Options::from_command_line`]).
    pub fn options(&self) -> Result<Options, OptionsError> {
        Options::from_command_line(self)
    }

    /// Applies the streaming flags over `opts`.
    pub fn apply(&self, opts: &mut Options) -> Result<(), OptionsError> {
        for (name, v) in self.stan.iter() {
            let bad = || FlagError::InvalidValue {
                flag: name.into(),
                value: v.into(),
            };
            let int = || v.trim().parse::<i64>().map_err(|_| bad());
            let size = || rnats_conf::parse_size(v.trim()).ok_or_else(bad);
            let dur = || parse_flag_duration(v).ok_or_else(bad);
            let nonneg = |n: i64, what: &'static str| nonneg(what, n);
            match name {
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
                "max_clients" => opts.max_clients = nonneg(int()?, "max clients")?,
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
                "file_crc" => opts.reference_file.check_crc = v == "true",
                "file_crc_poly" => opts.reference_file.crc_poly = crc_poly(int()?)?,
                "file_truncate_bad_eof" => opts.reference_file.truncate_bad_eof = v == "true",
                "migrate_from" => opts.migrate_from = Some(PathBuf::from(v)),
                "migrate_check" => opts.migrate_check = Some(PathBuf::from(v)),
                "file_parallel_recovery" | "file_auto_sync" | "syslog_name" => {}
                "file_slice_archive_script" => return Err(OptionsError::ArchiveScript),
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
                n if n.starts_with("sql_") => {
                    opts.sql.apply_flag(n, v)?;
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
                    return Err(OptionsError::NatsTls);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
