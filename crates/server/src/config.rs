//! The typed layer over `rnats-conf`: configuration file entries → [`Options`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rnats_conf::{ConfError, Entry, Map, Spanned, Value};

use std::sync::Arc;

use crate::auth::{Permissions, ResponsePermission, SubjectRules, User};
use crate::options::{ClusterOptions, Options, TlsOptions};

/// Reads `path` and applies its entries to `opts`.
pub fn apply_file(path: &Path, opts: &mut Options) -> Result<(), ConfError> {
    let map = rnats_conf::parse_file(path)?;
    apply_map(&map, opts)
}

/// Applies the entries of a parsed configuration to `opts`.
pub fn apply_map(map: &Map, opts: &mut Options) -> Result<(), ConfError> {
    for entry in map {
        apply_entry(entry, opts)?;
    }
    Ok(())
}

fn int(v: &Spanned) -> Result<i64, ConfError> {
    v.as_i64()
        .ok_or_else(|| v.error(format!("expected an integer, got {}", v.type_name())))
}

fn size(v: &Spanned) -> Result<usize, ConfError> {
    usize::try_from(int(v)?).map_err(|_| v.error("expected a non-negative size"))
}

fn string(v: &Spanned) -> Result<String, ConfError> {
    match &v.value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(v.error(format!("expected a string, got {}", other.type_name()))),
    }
}

fn boolean(v: &Spanned) -> Result<bool, ConfError> {
    v.as_bool()
        .ok_or_else(|| v.error(format!("expected a boolean, got {}", v.type_name())))
}

/// A Go duration string, or (deprecated form) an integer number of seconds.
fn duration(v: &Spanned) -> Result<Duration, ConfError> {
    match &v.value {
        Value::Integer(secs) if *secs >= 0 => Ok(Duration::from_secs(*secs as u64)),
        Value::Float(secs) if *secs >= 0.0 => Ok(Duration::from_secs_f64(*secs)),
        Value::String(s) => rnats_conf::parse_duration(s)
            .ok_or_else(|| v.error(format!("error parsing duration \"{s}\""))),
        other => Err(v.error(format!("expected a duration, got {}", other.type_name()))),
    }
}

/// `host:port`, `:port` or a bare port.
fn host_port(v: &Spanned, host: &mut String, port: &mut i32) -> Result<(), ConfError> {
    if let Value::Integer(p) = v.value {
        *port = p as i32;
        return Ok(());
    }
    let s = string(v)?;
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| v.error(format!("could not parse address string \"{s}\"")))?;
    *port = p
        .parse()
        .map_err(|_| v.error(format!("could not parse port \"{p}\"")))?;
    if !h.is_empty() {
        *host = h.trim_matches(['[', ']']).to_string();
    }
    Ok(())
}

fn apply_entry(entry: &Entry, opts: &mut Options) -> Result<(), ConfError> {
    let v = &entry.value;
    match entry.key.to_ascii_lowercase().as_str() {
        "listen" => host_port(v, &mut opts.host, &mut opts.port)?,
        "host" | "net" => opts.host = string(v)?,
        "port" => opts.port = int(v)? as i32,
        "server_name" => opts.server_name = Some(string(v)?),
        "client_advertise" => opts.client_advertise = Some(string(v)?),
        "http" => {
            let mut host = String::from("0.0.0.0");
            host_port(v, &mut host, &mut opts.http_port)?;
            opts.http_host = Some(host);
        }
        "http_port" | "monitor_port" => opts.http_port = int(v)? as i32,
        "https" => {
            let mut host = String::from("0.0.0.0");
            host_port(v, &mut host, &mut opts.https_port)?;
            opts.http_host = Some(host);
        }
        "https_port" => opts.https_port = int(v)? as i32,
        "max_traced_msg_len" => {
            opts.max_traced_msg_len =
                usize::try_from(int(v)?).map_err(|_| v.error("invalid max_traced_msg_len"))?
        }
        "max_payload" => opts.max_payload = size(v)?,
        "max_pending" => opts.max_pending = size(v)?,
        "max_control_line" => opts.max_control_line = size(v)?,
        "max_connections" | "max_conn" => {
            let n = int(v)?;
            // The reference maps an explicit 0 to "reject everyone".
            opts.max_connections = if n == 0 {
                None
            } else {
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            };
        }
        "max_subscriptions" | "max_subs" => opts.max_subs = size(v)?,
        "ping_interval" => opts.ping_interval = duration(v)?,
        "ping_max" => {
            opts.ping_max = u32::try_from(int(v)?).map_err(|_| v.error("invalid ping_max"))?
        }
        "write_deadline" => opts.write_deadline = duration(v)?,
        "lame_duck_duration" => opts.lame_duck_duration = duration(v)?,
        "lame_duck_grace_period" => opts.lame_duck_grace_period = duration(v)?,
        "no_header_support" => opts.no_header_support = boolean(v)?,
        "debug" => opts.debug = boolean(v)?,
        "trace" => opts.trace = boolean(v)?,
        "trace_verbose" => opts.trace = boolean(v)? || opts.trace,
        "logtime" => opts.logtime = boolean(v)?,
        "logtime_utc" => opts.logtime_utc = boolean(v)?,
        "log_file" | "logfile" => opts.log_file = Some(PathBuf::from(string(v)?)),
        "pid_file" | "pidfile" => opts.pid_file = Some(PathBuf::from(string(v)?)),
        "ports_file_dir" => opts.ports_file_dir = Some(PathBuf::from(string(v)?)),
        "max_closed_clients" => opts.max_closed_clients = size(v)?,
        "authorization" => apply_authorization(v, opts)?,
        "no_auth_user" => opts.auth.no_auth_user = Some(string(v)?),
        "tls" => opts.tls = Some(parse_tls(v)?),
        // Features this build lacks, switched on: refused (below) rather than ignored.
        "syslog" if boolean(v)? => return Err(unsupported(entry)),
        "remote_syslog" if !string(v)?.is_empty() => return Err(unsupported(entry)),
        "log_size_limit" | "logfile_size_limit" | "prof_port" if int(v)? != 0 => {
            return Err(unsupported(entry));
        }
        // Accepted and without effect here, as in a server that has them switched off.
        "syslog"
        | "remote_syslog"
        | "log_size_limit"
        | "logfile_size_limit"
        | "logfile_max_num"
        | "log_max_num"
        | "disable_sublist_cache"
        | "no_sublist_cache"
        | "connect_error_reports"
        | "reconnect_error_reports"
        | "write_timeout"
        | "max_sub_tokens"
        | "prof_port"
        | "server_tags"
        | "no_system_account" => {}
        key if entry.used_as_variable => {
            let _ = key;
        }
        "cluster" => opts.cluster = Some(parse_cluster(v)?),
        "accounts" | "jetstream" | "leafnodes" | "gateway" | "websocket" | "mqtt" | "operator"
        | "resolver" | "system_account" => return Err(unsupported(entry)),
        _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
    }
    Ok(())
}

/// The refusal of a feature this build does not have.
fn unsupported(entry: &Entry) -> ConfError {
    entry.error(format!(
        "\"{}\" is not supported by this rnats-server build yet",
        entry.key
    ))
}

fn apply_authorization(v: &Spanned, opts: &mut Options) -> Result<(), ConfError> {
    let map = v
        .as_map()
        .ok_or_else(|| v.error("authorization must be a map"))?;
    for entry in map {
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "user" | "username" => opts.auth.user = Some(string(v)?),
            "pass" | "password" => opts.auth.password = Some(string(v)?),
            "token" => opts.auth.token = Some(string(v)?),
            "timeout" => opts.auth.timeout = Some(duration(v)?),
            "users" => {
                let users = v
                    .as_array()
                    .ok_or_else(|| v.error("users must be an array"))?;
                for u in users {
                    opts.auth.users.push(parse_user(u)?);
                }
            }
            "default_permissions" | "default_permission" | "permissions" => {
                opts.auth.default_permissions = Some(parse_permissions(v)?);
            }
            _ if entry.used_as_variable => {}
            _ => {
                return Err(entry.error(format!(
                    "\"authorization.{}\" is not supported yet",
                    entry.key
                )));
            }
        }
    }
    if opts.auth.token.is_some() && opts.auth.user.is_some() {
        return Err(v.error("Cannot have a user/pass and token"));
    }
    Ok(())
}

fn parse_user(v: &Spanned) -> Result<User, ConfError> {
    let map = v
        .as_map()
        .ok_or_else(|| v.error("user entries must be maps"))?;
    let mut user = User::default();
    for entry in map {
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "user" | "username" => user.name = string(v)?,
            "pass" | "password" => user.password = Some(string(v)?),
            "nkey" => {
                let key = string(v)?;
                user.name.clone_from(&key);
                user.nkey = Some(key);
            }
            "permissions" | "permission" => {
                user.permissions = Some(Arc::new(parse_permissions(v)?))
            }
            "allowed_connection_types" | "connection_types" | "account" => {}
            _ if entry.used_as_variable => {}
            _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
        }
    }
    if user.nkey.is_some() && user.password.is_some() {
        return Err(v.error("Nkey users do not take passwords"));
    }
    if user.name.is_empty() {
        return Err(v.error("User entry requires a user"));
    }
    Ok(user)
}

fn subject_list(v: &Spanned) -> Result<Vec<String>, ConfError> {
    let list: Vec<String> = match &v.value {
        Value::Array(items) => items.iter().map(string).collect::<Result<_, _>>()?,
        _ => vec![string(v)?],
    };
    for subject in &list {
        let plain = subject.split_whitespace().next().unwrap_or_default();
        if !rnats_protocol::is_valid_subject(plain.as_bytes()) {
            return Err(v.error(format!("subject \"{subject}\" is not a valid subject")));
        }
    }
    Ok(list)
}

fn parse_rules(v: &Spanned) -> Result<SubjectRules, ConfError> {
    let Some(map) = v.as_map() else {
        return Ok(SubjectRules {
            allow: Some(subject_list(v)?),
            deny: Vec::new(),
        });
    };
    let mut rules = SubjectRules::default();
    for entry in map {
        match entry.key.to_ascii_lowercase().as_str() {
            "allow" => rules.allow = Some(subject_list(&entry.value)?),
            "deny" => rules.deny = subject_list(&entry.value)?,
            _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
        }
    }
    Ok(rules)
}

fn parse_permissions(v: &Spanned) -> Result<Permissions, ConfError> {
    let map = v
        .as_map()
        .ok_or_else(|| v.error("permissions must be a map"))?;
    let mut perms = Permissions::default();
    for entry in map {
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "publish" | "pub" | "import" => perms.publish = Some(parse_rules(v)?),
            "subscribe" | "sub" | "export" => perms.subscribe = Some(parse_rules(v)?),
            "allow_responses" | "publish_allow_responses" => {
                perms.allow_responses = match &v.value {
                    Value::Bool(false) => None,
                    Value::Bool(true) => Some(ResponsePermission::default()),
                    Value::Map(m) => {
                        let mut rp = ResponsePermission::default();
                        for e in m {
                            match e.key.to_ascii_lowercase().as_str() {
                                "max" => {
                                    rp.max = u32::try_from(int(&e.value)?)
                                        .map_err(|_| e.error("invalid max"))?
                                }
                                "expires" | "ttl" => rp.expires = duration(&e.value)?,
                                _ => return Err(e.error(format!("unknown field \"{}\"", e.key))),
                            }
                        }
                        Some(rp)
                    }
                    _ => return Err(v.error("allow_responses must be a boolean or a map")),
                };
            }
            _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
        }
    }
    Ok(perms)
}

fn parse_cluster(v: &Spanned) -> Result<ClusterOptions, ConfError> {
    let map = v.as_map().ok_or_else(|| v.error("cluster must be a map"))?;
    let mut c = ClusterOptions {
        host: "0.0.0.0".into(),
        ..Default::default()
    };
    for entry in map {
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "name" => c.name = Some(string(v)?),
            "listen" => host_port(v, &mut c.host, &mut c.port)?,
            "host" | "net" => c.host = string(v)?,
            "port" => c.port = int(v)? as i32,
            "advertise" | "cluster_advertise" => c.advertise = Some(string(v)?),
            "no_advertise" => c.no_advertise = boolean(v)?,
            "connect_retries" => {
                c.connect_retries =
                    u32::try_from(int(v)?).map_err(|_| v.error("invalid connect_retries"))?
            }
            "routes" => {
                let routes = v
                    .as_array()
                    .ok_or_else(|| v.error("routes must be an array"))?;
                c.routes = routes.iter().map(string).collect::<Result<_, _>>()?;
            }
            "authorization" => {
                let auth = v
                    .as_map()
                    .ok_or_else(|| v.error("authorization must be a map"))?;
                for e in auth {
                    match e.key.to_ascii_lowercase().as_str() {
                        "user" | "username" => c.user = Some(string(&e.value)?),
                        "pass" | "password" => c.password = Some(string(&e.value)?),
                        "timeout" => {}
                        "token" => {
                            return Err(e.error("Cluster authorization does not support tokens"));
                        }
                        "users" => {
                            return Err(
                                e.error("Cluster authorization does not allow multiple users")
                            );
                        }
                        _ => return Err(e.error(format!("unknown field \"{}\"", e.key))),
                    }
                }
            }
            "connect_backoff" | "ping_interval" | "ping_max" | "write_deadline"
            | "write_timeout" | "pool_size" | "compression" | "permissions" => {}
            "tls" => c.tls = Some(parse_tls(v)?),
            "accounts" => {
                return Err(entry.error(format!(
                    "\"cluster.{}\" is not supported by this rnats-server build yet",
                    entry.key
                )));
            }
            _ if entry.used_as_variable => {}
            _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
        }
    }
    Ok(c)
}

fn parse_tls(v: &Spanned) -> Result<TlsOptions, ConfError> {
    let map = v.as_map().ok_or_else(|| v.error("tls must be a map"))?;
    let mut tls = TlsOptions::default();
    for entry in map {
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "cert_file" => tls.cert_file = Some(PathBuf::from(string(v)?)),
            "key_file" => tls.key_file = Some(PathBuf::from(string(v)?)),
            "ca_file" => tls.ca_file = Some(PathBuf::from(string(v)?)),
            "verify" => tls.verify = boolean(v)?,
            "verify_and_map" => {
                tls.verify_and_map = boolean(v)?;
                tls.verify |= tls.verify_and_map;
            }
            "timeout" => tls.timeout = Some(duration(v)?),
            "cipher_suites" | "curve_preferences" | "min_version" | "insecure" | "pinned_certs" => {
            }
            _ => return Err(entry.error(format!("unknown field \"{}\"", entry.key))),
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str) -> Result<Options, ConfError> {
        let map = rnats_conf::parse_str_with_env(text, &|name| {
            (name == "PORT").then(|| "4333".to_string())
        })?;
        let mut o = Options::default();
        apply_map(&map, &mut o)?;
        Ok(o)
    }

    #[test]
    fn core_options() {
        let o = opts(
            "server_name: n1\nlisten: 127.0.0.1:4555\nmax_payload: 2MB\nmax_connections = 10k\n\
             ping_interval: \"1m\"\nwrite_deadline: 5\nmax_subs 7\ndebug: true\n\
             authorization { user: a, password: b, timeout: 1.5 }",
        )
        .unwrap();
        assert_eq!(o.server_name.as_deref(), Some("n1"));
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4555));
        assert_eq!(o.max_payload, 2 * 1024 * 1024);
        assert_eq!(o.max_connections, Some(10_000));
        assert_eq!(o.ping_interval, Duration::from_secs(60));
        assert_eq!(o.write_deadline, Duration::from_secs(5));
        assert_eq!(o.max_subs, 7);
        assert!(o.debug);
        assert_eq!(o.auth.user.as_deref(), Some("a"));
        assert_eq!(o.auth.timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn variables_and_ports() {
        let o = opts("port: $PORT\nmax_connections: 0").unwrap();
        assert_eq!(o.port, 4333);
        assert_eq!(o.max_connections, None);
        let o = opts("P: 4999\nport: $P").unwrap();
        assert_eq!(o.port, 4999);
    }

    #[test]
    fn users_permissions_and_tls() {
        let o = opts(
            r#"
            authorization {
              users = [
                { user: alice, password: pw, permissions: { publish: "orders.>", subscribe: ["_INBOX.>", "orders.>"] } }
                { user: bob, password: pw2,
                  permissions: { publish: { allow: [">"], deny: ["admin.>"] }, subscribe: { deny: "secret.*" },
                                 allow_responses: { max: 2, expires: "1m" } } }
                { nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4 }
              ]
              default_permissions: { publish: "public.>" }
            }
            no_auth_user: bob
            tls { cert_file: "c.pem", key_file: "k.pem", ca_file: "ca.pem", verify: true, timeout: 3 }
            "#,
        )
        .unwrap();
        assert_eq!(o.auth.users.len(), 3);
        let bob = &o.auth.users[1];
        let perms = bob.permissions.as_ref().unwrap();
        assert_eq!(
            perms.allow_responses,
            Some(ResponsePermission {
                max: 2,
                expires: Duration::from_secs(60)
            })
        );
        assert_eq!(
            perms.publish.as_ref().unwrap().deny,
            vec!["admin.>".to_string()]
        );
        assert_eq!(
            o.auth.users[2].nkey.as_deref(),
            Some("UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4")
        );
        assert_eq!(o.auth.no_auth_user.as_deref(), Some("bob"));
        let tls = o.tls.unwrap();
        assert!(tls.verify);
        assert_eq!(tls.timeout, Some(Duration::from_secs(3)));
        let auth = o.auth.authenticator().unwrap();
        assert_eq!(
            auth.users["alice"]
                .permissions
                .as_ref()
                .unwrap()
                .publish
                .as_ref()
                .unwrap()
                .allow
                .as_deref(),
            Some(&["orders.>".to_string()][..])
        );
        let err =
            opts("authorization { users = [ { user: a, permissions: { publish: \"a..b\" } } ] }")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("subject \"a..b\" is not a valid subject"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_position() {
        let err = opts("port: 1\nfoo: bar").unwrap_err().to_string();
        assert!(err.ends_with("2:1: unknown field \"foo\""), "{err}");
    }
}
