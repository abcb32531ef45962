//! nats-streaming-server's options: the resulting [`Options`] (defaults, validation) here,
//! the command line in `flags` ([`CommandLine`], [`USAGE`]) and the configuration file in
//! `file`.
//!
//! The command line mixes the streaming flags (`-cid`, `-st`, `--dir`, the limits, the
//! heartbeats, `-ns`, `-m`, ...) with the embedded core server's own flags (`-a`, `-p`, `-DV`,
//! `--user`, ...): one Go-style parse ([`rnats_server::flags::parse`]) over both tables, the
//! streaming one first; the core server's flags configure the embedded rnats server.
//!
//! Precedence: defaults < configuration file < command line. `-sc/--stan_config` names the
//! streaming configuration and `-c/--config` the NATS one; when only one is given it serves
//! both. In a file with a top-level `streaming { ... }` map, only that map configures
//! streaming, and it is hidden from the NATS configuration.

mod file;
mod flags;
mod sql;

use std::path::PathBuf;
use std::time::Duration;

use rnats_conf::ConfError;
use rnats_server::flags::FlagError;
use rnats_streaming::migrate::ReferenceOptions;
use rnats_streaming::store::crypto::EncryptionKey;
use rnats_streaming::store::file::FileStoreOptions;
use rnats_streaming::store::{LimitsError, StoreKind, StoreLimits};
use rnats_streaming_raft::ClusterOptions;

pub use self::file::apply_config;
pub use self::flags::{CommandLine, USAGE};
pub use self::sql::SqlOptions;

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
    /// How a nats-streaming-server file store found in `dir` (or named by `--migrate_from`,
    /// `--migrate_check`) was written: `--file_crc`, `--file_crc_poly`,
    /// `--file_truncate_bad_eof`. See [`Options::reference_options`].
    pub reference_file: ReferenceOptions,
    /// `--migrate_from <dir>`: migrate that nats-streaming-server file store into `--dir`
    /// (a new directory), print the report and exit.
    pub migrate_from: Option<PathBuf>,
    /// `--migrate_check <dir>`: read that nats-streaming-server file store, print what a
    /// migration would carry over and any damage, and exit (1 if damaged).
    pub migrate_check: Option<PathBuf>,
    /// The SQL store's options (`--sql_*`, the `sql_options` block).
    pub sql: SqlOptions,
    /// `-ns`: connect to this NATS server (or comma-separated list) instead of embedding one.
    pub nats_server_url: Option<String>,
    /// Options of the embedded rnats server (ignored with `nats_server_url`).
    pub nats: rnats_server::Options,
    /// Streaming monitoring port (`-m`): 0 = off, -1 = any free port. Off, the NATS
    /// configuration's `http`/`http_port` (or `-ms`/`https` for HTTPS) still turns it on.
    pub http_port: i32,
    /// Host of the monitoring port; empty: the NATS configuration's `http` host, else the
    /// `-a` host (as nats-server places its monitor).
    pub http_host: String,
    /// Server → client heartbeat interval, reply timeout and tolerated failures.
    pub hb_interval: Duration,
    pub hb_timeout: Duration,
    pub hb_fail_count: u32,
    /// Most publishes processed in one store batch.
    pub io_batch_size: usize,
    /// Close the active durable instead of refusing a duplicate durable registration.
    pub replace_durable: bool,
    /// Most clients registered at once (`--max_clients`, `max_clients`); 0 = unlimited, as
    /// the reference, which has no such limit. Bounds a flood of connects with fresh client
    /// IDs (each one a stored client record and a heartbeat every `hb_interval`).
    pub max_clients: u64,
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
            reference_file: ReferenceOptions::default(),
            migrate_from: None,
            migrate_check: None,
            sql: SqlOptions::default(),
            nats_server_url: None,
            nats: rnats_server::Options::default(),
            http_port: 0,
            http_host: String::new(),
            hb_interval: Duration::from_secs(30),
            hb_timeout: Duration::from_secs(10),
            hb_fail_count: 10,
            io_batch_size: 1024,
            replace_durable: false,
            max_clients: 0,
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

/// Why the options cannot start a server; each says which flag, key or rule it is about.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Nats(#[from] rnats_server::options::OptionsError),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error("invalid cluster name \"{0}\": only alphanumeric and `-` or `_` characters allowed")]
    ClusterId(String),
    #[error("for FILE stores, the directory must be specified")]
    FileStoreWithoutDir,
    #[error(
        "for SQL stores, the SQL driver must be specified (--sql_driver postgres|mysql, or driver in the sql_options block)"
    )]
    SqlDriverMissing,
    #[error("unsupported SQL driver \"{0}\" (use \"postgres\" or \"mysql\")")]
    SqlDriver(String),
    #[error(
        "for SQL stores, the SQL source must be specified (--sql_source, or source in the sql_options block)"
    )]
    SqlSourceMissing,
    #[error("ft: only FILE or SQL stores supported in FT mode")]
    FtMemoryStore,
    #[error(
        "ft: the missed heartbeat interval needs to be at least 10% more than the heartbeat interval (hb={hb:?} missed hb={missed:?})"
    )]
    FtHeartbeats { hb: Duration, missed: Duration },
    #[error("stan: clustering mode not supported with MEMORY store type")]
    ClusteringMemoryStore,
    #[error("stan: channels partitioning in clustering mode is not supported")]
    ClusteringPartitioning,
    #[error("stan: fault tolerance and clustering modes are exclusive")]
    ClusteringAndFt,
    #[error("stan: no configured channel")]
    NoConfiguredChannel,
    #[error("heartbeat interval and timeout must be positive")]
    Heartbeats,
    #[error("unknown store type: {0}")]
    StoreType(String),
    #[error("{what} limit cannot be negative ({n})")]
    Negative { what: &'static str, n: i64 },
    /// A configuration value out of its type's range.
    #[error("invalid {0}")]
    OutOfRange(String),
    #[error("bad frag")]
    CompactFrag,
    #[error("--file_slice_archive_script is not supported by this build")]
    ArchiveScript,
    #[error("TLS to the NATS server is not supported by this build")]
    NatsTls,
    #[error("crc polynomial should be between 1 and 4294967295 (got {0})")]
    CrcPoly(i64),
    #[error("--migrate_from and --migrate_check are exclusive")]
    MigrateBoth,
    #[error("--migrate_from needs --dir: the new directory the migrated store is written to")]
    MigrateWithoutDir,
}

impl Options {
    /// Checks cross-field rules at start-up.
    pub fn check(&self) -> Result<(), OptionsError> {
        if self.migrate_from.is_some() || self.migrate_check.is_some() {
            return self.check_offline_migration();
        }
        if self.cluster_id.is_empty()
            || !self
                .cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(OptionsError::ClusterId(self.cluster_id.clone()));
        }
        if self.store_type == StoreKind::File && self.dir.is_none() {
            return Err(OptionsError::FileStoreWithoutDir);
        }
        if self.store_type == StoreKind::Sql {
            self.sql.store_options()?;
        }
        if self.ft_group.is_some() {
            if self.store_type == StoreKind::Memory {
                return Err(OptionsError::FtMemoryStore);
            }
            if self.ft_hb_interval.is_zero()
                || self.ft_hb_missed_interval.as_secs_f64()
                    < self.ft_hb_interval.as_secs_f64() * 1.1
            {
                return Err(OptionsError::FtHeartbeats {
                    hb: self.ft_hb_interval,
                    missed: self.ft_hb_missed_interval,
                });
            }
        }
        if self.clustering.clustered {
            if self.store_type == StoreKind::Memory {
                return Err(OptionsError::ClusteringMemoryStore);
            }
            if self.partitioning {
                return Err(OptionsError::ClusteringPartitioning);
            }
            if self.ft_group.is_some() {
                return Err(OptionsError::ClusteringAndFt);
            }
        }
        if self.partitioning && self.limits.per_channel.is_empty() {
            return Err(OptionsError::NoConfiguredChannel);
        }
        if self.hb_interval.is_zero() || self.hb_timeout.is_zero() {
            return Err(OptionsError::Heartbeats);
        }
        self.limits.validate()?;
        Ok(())
    }

    /// The offline migration modes use the limits and file options, and `--dir` only as the
    /// destination of `--migrate_from`: the server's own rules do not apply.
    fn check_offline_migration(&self) -> Result<(), OptionsError> {
        if self.migrate_from.is_some() && self.migrate_check.is_some() {
            return Err(OptionsError::MigrateBoth);
        }
        if self.migrate_from.is_some() && self.dir.is_none() {
            return Err(OptionsError::MigrateWithoutDir);
        }
        self.limits.validate()?;
        Ok(())
    }

    /// How to read a nats-streaming-server file store: [`Options::reference_file`], reading
    /// ahead `--file_read_buffer_size` bytes per file (the default when that is 0).
    pub fn reference_options(&self) -> ReferenceOptions {
        let mut r = self.reference_file.clone();
        if self.file_options.read_buffer_size > 0 {
            r.read_buffer_size = self.file_options.read_buffer_size;
        }
        r
    }

    /// Builds the options from a command line: defaults, then the configuration file(s),
    /// then the flags; then checks them.
    pub fn from_command_line(cl: &CommandLine) -> Result<Options, OptionsError> {
        let mut opts = Options::default();
        let nats_conf = cl.nats.get("config").map(PathBuf::from);
        let stan_conf = cl.get("stan_config").map(PathBuf::from);
        // The NATS configuration: -c, else -sc (a file serves both when only one is given).
        if let Some(path) = nats_conf.as_ref().or(stan_conf.as_ref()) {
            let map = rnats_conf::parse_file(path)?;
            rnats_server::config::apply_map(&file::nats_part(&map), &mut opts.nats)?;
        }
        if let Some(path) = stan_conf.as_ref().or(nats_conf.as_ref()) {
            let map = rnats_conf::parse_file(path)?;
            apply_config(&file::streaming_part(map), &mut opts)?;
        }
        cl.nats.apply(&mut opts.nats)?;
        cl.apply(&mut opts)?;
        // Engine credentials default to the embedded server's single user or token.
        if opts.username.is_none() && opts.token.is_none() {
            opts.username = opts.nats.auth.user.clone();
            opts.password = opts.nats.auth.password.clone();
            opts.token = opts.nats.auth.token.clone();
        }
        opts.nats.validate()?;
        opts.check()?;
        Ok(opts)
    }
}

/// `MEMORY`, `FILE` or `SQL`, any case.
pub fn parse_store_type(v: &str) -> Result<StoreKind, OptionsError> {
    match v.to_ascii_uppercase().as_str() {
        "MEMORY" => Ok(StoreKind::Memory),
        "FILE" => Ok(StoreKind::File),
        "SQL" => Ok(StoreKind::Sql),
        _ => Err(OptionsError::StoreType(v.to_string())),
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

/// `--cluster_peers` / `peers`: a comma-separated list.
fn split_peers(v: &str) -> Vec<String> {
    v.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `--file_crc_poly` / `crc_poly`: a CRC-32 polynomial, 1 to 2^32-1 as in the reference.
fn crc_poly(n: i64) -> Result<u32, OptionsError> {
    u32::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or(OptionsError::CrcPoly(n))
}

/// `n` as a limit, which cannot be negative.
fn nonneg(what: &'static str, n: i64) -> Result<u64, OptionsError> {
    u64::try_from(n).map_err(|_| OptionsError::Negative { what, n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let options = CommandLine::parse(args.iter().map(|s| s.to_string()))
            .map_err(OptionsError::from)
            .and_then(|cl| cl.options());
        options.map_err(|e| e.to_string())
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
    fn max_clients_from_flag_and_file() {
        assert_eq!(parse(&[]).unwrap().max_clients, 0);
        assert_eq!(parse(&["--max_clients", "500"]).unwrap().max_clients, 500);
        assert!(
            parse(&["--max_clients", "-1"])
                .unwrap_err()
                .contains("negative")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        std::fs::write(&path, "streaming {\n  max_clients: 1000\n}\n").unwrap();
        let o = parse(&["-sc", path.to_str().unwrap()]).unwrap();
        assert_eq!(o.max_clients, 1000);
        // A top-level key is streaming's too, and the command line wins.
        std::fs::write(&path, "max_clients: 7\nport: 4333\n").unwrap();
        let o = parse(&["-sc", path.to_str().unwrap()]).unwrap();
        assert_eq!((o.max_clients, o.nats.port), (7, 4333));
        let o = parse(&["-sc", path.to_str().unwrap(), "--max_clients", "9"]).unwrap();
        assert_eq!(o.max_clients, 9);
    }

    #[test]
    fn reference_file_options_and_offline_migration_flags() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.reference_options(), ReferenceOptions::default());
        let o = parse(&[
            "--file_crc=false",
            "--file_crc_poly",
            "2197175160",
            "--file_truncate_bad_eof",
            "--file_read_buffer_size",
            "64KB",
        ])
        .unwrap();
        let r = o.reference_options();
        assert!(!r.check_crc && r.truncate_bad_eof);
        assert_eq!((r.crc_poly, r.read_buffer_size), (0x82f6_3b78, 65536));
        // A read buffer of 0 (disabled) still reads the reference's files with the default.
        let o = parse(&["--file_read_buffer_size", "0"]).unwrap();
        assert_eq!(o.reference_options().read_buffer_size, 1 << 20);
        for bad in ["0", "-1", "4294967296", "x"] {
            assert!(parse(&["--file_crc_poly", bad]).is_err(), "{bad}");
        }
        assert!(
            parse(&["--file_crc_poly", "0"])
                .unwrap_err()
                .contains("between 1 and 4294967295")
        );

        // The offline modes: --dir is the destination of --migrate_from only, and the
        // server's own rules (FILE needs --dir) do not apply to a check.
        let o = parse(&["--migrate_from", "/ref", "--dir", "/new", "-mm", "5"]).unwrap();
        assert_eq!(o.migrate_from.as_deref(), Some(Path::new("/ref")));
        assert_eq!(o.limits.channel.max_msgs, 5);
        let o = parse(&["--migrate_check", "/ref", "-st", "FILE"]).unwrap();
        assert_eq!(o.migrate_check.as_deref(), Some(Path::new("/ref")));
        assert!(
            parse(&["--migrate_from", "/ref"])
                .unwrap_err()
                .contains("needs --dir")
        );
        assert!(
            parse(&[
                "--migrate_from",
                "/a",
                "--migrate_check",
                "/b",
                "--dir",
                "/c"
            ])
            .unwrap_err()
            .contains("exclusive")
        );
        assert!(parse(&["--migrate_check", "/ref", "-mm", "-1"]).is_err());

        // The configuration file's `file_options` block: crc, crc_poly.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        std::fs::write(
            &path,
            "streaming {\n  file_options {\n    crc: false\n    crc_poly: 2197175160\n  }\n}\n",
        )
        .unwrap();
        let r = parse(&["-sc", path.to_str().unwrap()])
            .unwrap()
            .reference_options();
        assert!(!r.check_crc);
        assert_eq!(r.crc_poly, 0x82f6_3b78);
        std::fs::write(&path, "streaming {\n  file_options { crc_poly: 0 }\n}\n").unwrap();
        assert!(parse(&["-sc", path.to_str().unwrap()]).is_err());
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
