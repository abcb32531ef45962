//! Server options with nats-server's defaults. Filled from the config file, then from the
//! command line (which wins), then validated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, Permissions, User};
use crate::tls::TlsError;
pub use crate::tls::TlsOptions;

pub const VERSION: &str = "2.11.0";
pub const DEFAULT_PORT: u16 = 4222;

#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    /// Client port; -1 picks a random one.
    pub port: i32,
    pub server_name: Option<String>,
    pub client_advertise: Option<String>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_pending: usize,
    /// Most client connections at once; `None` when the config file said 0 (reject all).
    pub max_connections: Option<usize>,
    /// Per connection; 0 = unlimited.
    pub max_subs: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    pub no_header_support: bool,
    pub auth: AuthOptions,
    pub tls: Option<TlsOptions>,
    pub cluster: Option<ClusterOptions>,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub logtime_utc: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub ports_file_dir: Option<PathBuf>,
    pub http_host: Option<String>,
    pub http_port: i32,
    /// HTTPS monitoring port (`-ms`, `https_port`): served with the client port's TLS
    /// certificate, client certificates not asked for; exclusive with `http_port`.
    pub https_port: i32,
    /// `--max_traced_msg_len`: payloads longer than this are cut in the `-V` trace (0: whole).
    pub max_traced_msg_len: usize,
    pub max_closed_clients: usize,
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
    pub config_file: Option<PathBuf>,
}

/// Why the authentication settings do not hold together, in the reference's words.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Can not have a token and a users array")]
    TokenAndUsers,
    #[error("Not a valid public nkey for a user: \"{0}\"")]
    InvalidNkey(String),
    #[error("Duplicate user \"{0}\" detected")]
    DuplicateUser(String),
    #[error(
        "no_auth_user: \"{0}\" not present as user or nkey in authorization block or account configuration"
    )]
    UnknownNoAuthUser(String),
}

/// Why options cannot start a server, in the reference's words.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("max_payload ({payload}) can not be higher than max_pending ({pending})")]
    MaxPayloadOverPending { payload: usize, pending: usize },
    #[error("server name \"{0}\" can not contain spaces")]
    ServerNameSpaces(String),
    #[error("invalid lame_duck_duration of {0:?}, minimum is 30 seconds")]
    LameDuckDuration(Duration),
    #[error("invalid port {0}")]
    InvalidPort(i32),
    #[error("Can't start monitoring: can't specify both HTTP ({http}) and HTTPs ({https}) ports")]
    HttpAndHttps { http: i32, https: i32 },
    #[error("Can't start monitoring: TLS cert and key required for HTTPS")]
    HttpsWithoutTls,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Client authentication settings.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// `authorization { timeout }`; defaults to 2 s (TLS: its timeout + 1 s).
    pub timeout: Option<Duration>,
    /// `authorization { users = [...] }`, user/password and nkey users.
    pub users: Vec<User>,
    /// Applied to users without permissions of their own.
    pub default_permissions: Option<Permissions>,
    pub no_auth_user: Option<String>,
}

/// Clustering: the route listener and the routes to solicit.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub name: Option<String>,
    pub host: String,
    /// Route port; -1 picks a random one.
    pub port: i32,
    /// `host:port` other servers should dial to reach this one.
    pub advertise: Option<String>,
    /// Do not tell clients about the other servers' URLs.
    pub no_advertise: bool,
    /// Explicit routes, `nats-route://[user:pass@]host:port`.
    pub routes: Vec<String>,
    /// Extra attempts for routes learned through gossip.
    pub connect_retries: u32,
    /// `cluster { authorization { user, password } }`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// `cluster { tls { … } }`: TLS on every route, certificates verified both ways.
    pub tls: Option<TlsOptions>,
}

impl AuthOptions {
    /// Whether a configured password is kept in plain text rather than as a bcrypt hash
    /// (nats-server warns about it at start).
    pub fn has_plaintext_passwords(&self) -> bool {
        let plain = |p: &Option<String>| p.as_deref().is_some_and(|p| !p.starts_with("$2"));
        plain(&self.password) || self.users.iter().any(|u| plain(&u.password))
    }

    /// The authenticator these options describe: the single user and the users list merged,
    /// default permissions applied, nkey users indexed by key.
    pub fn authenticator(&self) -> Result<Authenticator, AuthError> {
        let mut auth = Authenticator {
            token: self.token.clone(),
            no_auth_user: self.no_auth_user.clone(),
            ..Default::default()
        };
        if self.token.is_some() && (self.user.is_some() || !self.users.is_empty()) {
            return Err(AuthError::TokenAndUsers);
        }
        if let Some(user) = &self.user {
            auth.users.insert(
                user.clone(),
                User {
                    name: user.clone(),
                    password: self.password.clone(),
                    ..Default::default()
                },
            );
        }
        let defaults = self.default_permissions.clone().map(Arc::new);
        for user in &self.users {
            let mut user = user.clone();
            if user.permissions.is_none() {
                user.permissions.clone_from(&defaults);
            }
            if let Some(nkey) = &user.nkey {
                if !nkey.starts_with('U') || nkeys::KeyPair::from_public_key(nkey).is_err() {
                    return Err(AuthError::InvalidNkey(nkey.clone()));
                }
                auth.nkeys.insert(nkey.clone(), user);
            } else {
                if auth.users.contains_key(&user.name) {
                    return Err(AuthError::DuplicateUser(user.name));
                }
                auth.users.insert(user.name.clone(), user);
            }
        }
        if let Some(name) = &self.no_auth_user
            && !auth.users.contains_key(name)
        {
            return Err(AuthError::UnknownNoAuthUser(name.clone()));
        }
        Ok(auth)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "0.0.0.0".into(),
            port: i32::from(DEFAULT_PORT),
            server_name: None,
            client_advertise: None,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            max_connections: Some(64 * 1024),
            max_subs: 0,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            no_header_support: false,
            auth: AuthOptions::default(),
            tls: None,
            cluster: None,
            debug: false,
            trace: false,
            logtime: true,
            logtime_utc: false,
            log_file: None,
            pid_file: None,
            ports_file_dir: None,
            http_host: None,
            http_port: 0,
            https_port: 0,
            max_traced_msg_len: 0,
            max_closed_clients: 10_000,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            config_file: None,
        }
    }
}

impl Options {
    pub fn auth_timeout(&self) -> Duration {
        match (&self.auth.timeout, &self.tls) {
            (Some(t), _) => *t,
            (None, Some(tls)) => tls.timeout() + Duration::from_secs(1),
            (None, None) => Duration::from_secs(2),
        }
    }

    /// Checks cross-field rules the reference enforces at start-up.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.max_payload > self.max_pending {
            return Err(OptionsError::MaxPayloadOverPending {
                payload: self.max_payload,
                pending: self.max_pending,
            });
        }
        if let Some(name) = &self.server_name
            && name.contains(' ')
        {
            return Err(OptionsError::ServerNameSpaces(name.clone()));
        }
        if self.lame_duck_duration < Duration::from_secs(30) {
            return Err(OptionsError::LameDuckDuration(self.lame_duck_duration));
        }
        self.auth.authenticator()?;
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_none() {
                return Err(TlsError::MissingCert.into());
            }
            if tls.key_file.is_none() {
                return Err(TlsError::MissingKey.into());
            }
        }
        if self.port < -1 || self.port > 65535 {
            return Err(OptionsError::InvalidPort(self.port));
        }
        Ok(())
    }

    /// The monitoring port rules nats-server applies when it starts monitoring (at start,
    /// not when a configuration is only tested).
    pub fn check_monitor(&self) -> Result<(), OptionsError> {
        if self.http_port != 0 && self.https_port != 0 {
            return Err(OptionsError::HttpAndHttps {
                http: self.http_port,
                https: self.https_port,
            });
        }
        if self.https_port != 0 && self.tls.is_none() {
            return Err(OptionsError::HttpsWithoutTls);
        }
        Ok(())
    }
}

/// `(credentials, host, port)` of a route URL.
pub type RouteUrl = (Option<(String, String)>, String, i32);

/// Splits `nats://[user:pass@]host:port` (any scheme) into credentials, host and port.
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
