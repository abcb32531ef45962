//! The streaming server's configuration file: which keys are streaming's (the rest configures
//! the embedded NATS server), and how they apply to the [`Options`]. Keys are
//! case-insensitive and take the reference's aliases.

use std::path::PathBuf;
use std::time::Duration;

use rnats_conf::{ConfError, Map, Spanned, Value};
use rnats_streaming::store::ChannelLimitsOverride;
use rnats_streaming::store::crypto::EncryptionKey;
use rnats_streaming::store::file::{FileStoreOptions, SyncPolicy};

use super::{
    Clustering, Options, OptionsError, crc_poly, nonneg, parse_flag_duration, parse_store_type,
    split_peers,
};

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
    "max_clients",
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

/// The part of a configuration that configures the embedded NATS server: all but the
/// streaming keys.
pub(super) fn nats_part(map: &Map) -> Map {
    let mut out = Map::new();
    for entry in map {
        if !STREAMING_KEYS.contains(&entry.key.to_ascii_lowercase().as_str()) {
            out.insert_entry(entry.clone());
        }
    }
    out
}

/// The part of a configuration that configures streaming: its `streaming { ... }` map if it
/// has one, else all of it.
pub(super) fn streaming_part(map: Map) -> Map {
    map.get_ci("streaming")
        .and_then(|v| v.as_map())
        .cloned()
        .unwrap_or(map)
}

fn conf_err(v: &Spanned, msg: impl Into<String>) -> ConfError {
    v.error(msg)
}

pub(super) fn conf_str(key: &str, v: &Spanned) -> Result<String, ConfError> {
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

pub(super) fn conf_int(key: &str, v: &Spanned) -> Result<i64, ConfError> {
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

pub(super) fn conf_bool(key: &str, v: &Spanned) -> Result<bool, ConfError> {
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

fn conf_duration(key: &str, v: &Spanned) -> Result<Duration, ConfError> {
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

/// Applies a streaming configuration map (keys case-insensitive).
pub fn apply_config(map: &Map, opts: &mut Options) -> Result<(), OptionsError> {
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
                opts.hb_fail_count = u32::try_from(conf_int(&key, v)?)
                    .map_err(|_| OptionsError::OutOfRange(key.clone()))?
            }
            "sd" | "stan_debug" => opts.stan_debug = conf_bool(&key, v)?,
            "sv" | "stan_trace" => opts.stan_trace = conf_bool(&key, v)?,
            "replace_durable"
            | "replace_durables"
            | "replace_duplicate_durable"
            | "replace_duplicate_durables" => opts.replace_durable = conf_bool(&key, v)?,
            "max_clients" => opts.max_clients = nonneg("max clients", conf_int(&key, v)?)?,
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
                apply_file_options(m, &mut opts.file_options)?;
                apply_reference_file_options(m, opts)?
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
            "sql_options" | "sql" => opts.sql.apply_config(v)?,
            "credentials" | "nkey_seed_file" | "tls" | "secure"
                if !matches!(v.value, Value::Bool(false)) =>
            {
                return Err(conf_err(
                    v,
                    format!("\"{}\" is not supported by this build", entry.key),
                )
                .into());
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_limits(map: &Map, opts: &mut Options) -> Result<(), OptionsError> {
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

fn parse_override(map: &Map) -> Result<ChannelLimitsOverride, OptionsError> {
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

fn parse_override_entry(key: &str, v: &Spanned) -> Result<ChannelLimitsOverride, OptionsError> {
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

/// The `cluster { ... }` block (giving one implies `clustered`).
fn apply_cluster(map: &Map, c: &mut Clustering) -> Result<(), ConfError> {
    c.clustered = true;
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        let count = || -> Result<u64, ConfError> {
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

/// The file options that describe how a nats-streaming-server store was written (read when
/// migrating one): `crc`/`do_crc` and `crc_poly`.
fn apply_reference_file_options(map: &Map, opts: &mut Options) -> Result<(), OptionsError> {
    for entry in map {
        let key = entry.key.to_ascii_lowercase();
        match key.as_str() {
            "crc" | "do_crc" => opts.reference_file.check_crc = conf_bool(&key, &entry.value)?,
            "crc_poly" => opts.reference_file.crc_poly = crc_poly(conf_int(&key, &entry.value)?)?,
            _ => {}
        }
    }
    Ok(())
}

fn apply_file_options(map: &Map, f: &mut FileStoreOptions) -> Result<(), OptionsError> {
    for entry in map {
        let v = &entry.value;
        let key = entry.key.to_ascii_lowercase();
        let usize_of =
            |n: i64| usize::try_from(n).map_err(|_| OptionsError::OutOfRange(key.clone()));
        match key.as_str() {
            "compact" | "compact_enabled" => f.compact_enabled = conf_bool(&key, v)?,
            "compact_frag" | "compact_fragmentation" => {
                f.compact_frag =
                    u32::try_from(conf_int(&key, v)?).map_err(|_| OptionsError::CompactFrag)?
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
