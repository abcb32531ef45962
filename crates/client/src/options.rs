//! Connect options, server addresses and connection events.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::client::Client;
use crate::connection::RawConnection;
use crate::error::{ConnectError, ConnectErrorKind};

/// One server of the pool: `nats://[user[:pass]@]host[:port]` (also `tls://`, or a bare
/// `host[:port]`). The default port is 4222.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `tls://` was given: TLS is required for this server.
    pub tls: bool,
}

impl ServerAddr {
    /// `host:port`, with IPv6 hosts in brackets.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shows the URL without credentials.
impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        write!(f, "{scheme}://{}", self.host_port())
    }
}

impl fmt::Debug for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAddr({self})")
    }
}

impl FromStr for ServerAddr {
    type Err = ConnectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ConnectError::with_source(ConnectErrorKind::InvalidAddress, format!("{s:?}: {why}"))
        };
        let s = s.trim();
        let (tls, rest) = if let Some((scheme, rest)) = s.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                "nats" => (false, rest),
                "tls" => (true, rest),
                other => {
                    return Err(bad(&format!(
                        "unknown scheme {other:?}, use nats:// or tls://"
                    )));
                }
            }
        } else {
            (false, s)
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(u.to_string()), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ']'")),
            };
            (host.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 4222,
        };
        Ok(ServerAddr {
            host,
            port,
            user: user.filter(|u| !u.is_empty()),
            password,
            tls,
        })
    }
}

/// Anything that names one or more servers: `"nats://a:4222,nats://b:4222"`, a `Vec` or a slice
/// of URLs, or `ServerAddr`s.
pub trait ToServerAddrs {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError>;
}

impl ToServerAddrs for str {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        self.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl ToServerAddrs for String {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        self.as_str().to_server_addrs()
    }
}

impl ToServerAddrs for ServerAddr {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        Ok(vec![self.clone()])
    }
}

impl<T: ToServerAddrs> ToServerAddrs for [T] {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        let mut all = Vec::new();
        for t in self {
            all.extend(t.to_server_addrs()?);
        }
        Ok(all)
    }
}

impl<T: ToServerAddrs> ToServerAddrs for Vec<T> {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        self.as_slice().to_server_addrs()
    }
}

impl<T: ToServerAddrs + ?Sized> ToServerAddrs for &T {
    fn to_server_addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        (**self).to_server_addrs()
    }
}

/// Something that happened to the connection. Delivered to the `event_callback` and to every
/// receiver from [`Client::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first connection is up (to this server).
    Connected(String),
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// Connected again (to this server); subscriptions are restored and buffered publishes sent.
    Reconnected(String),
    /// The server told about a new server (`host:port`) of its cluster: added to the pool.
    ServerDiscovered(String),
    /// The server entered lame duck mode and will close this connection soon.
    LameDuck,
    /// A subscription's buffer was full: messages for it (sid) were dropped.
    SlowConsumer(u64),
    /// The server sent `-ERR` with this text.
    ServerError(String),
    /// The client gave up (closed, or out of reconnect attempts); the connection is gone.
    Closed,
}

pub type EventCallback = Arc<dyn Fn(Event) + Send + Sync>;
pub type ReconnectDelayCallback = Arc<dyn Fn(usize) -> Duration + Send + Sync>;

/// Where the user JWT and its nkey seed come from.
#[derive(Clone)]
pub(crate) enum UserCredentials {
    /// A `.creds` file, read at every connect (so that a rotated file is picked up).
    File(PathBuf),
    /// A JWT and the seed that signs the server's nonce.
    Jwt { jwt: String, seed: String },
}

/// TLS settings: trusted roots, a client certificate for mutual TLS, whether TLS is required,
/// or a complete rustls configuration. The rustls `ClientConfig` built from the files is cached
/// (shared by clones of the options) so that reconnects do not read them again.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) required: bool,
    pub(crate) root_certs: Vec<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) config: Option<Arc<rustls::ClientConfig>>,
    pub(crate) cache: Arc<OnceLock<Arc<rustls::ClientConfig>>>,
}

impl TlsOptions {
    /// Whether any TLS option was given (then TLS is used with every server).
    pub(crate) fn configured(&self) -> bool {
        self.required
            || !self.root_certs.is_empty()
            || self.client_cert.is_some()
            || self.config.is_some()
    }

    fn changed(&mut self) {
        self.cache = Arc::default();
    }
}

/// How to connect and how to behave once connected. Build with the setters, finish with
/// [`ConnectOptions::connect`].
///
/// Authentication: user/password or a token (also from the URL), an nkey seed
/// ([`nkey`](Self::nkey)) or a user JWT with its seed ([`credentials_file`](Self::credentials_file),
/// [`credentials`](Self::credentials)); for the last two the client signs the `nonce` of the
/// server's INFO. TLS (rustls with the ring provider) is used when the URL says `tls://`, when
/// the server requires it (INFO `tls_required`), or when any TLS option is set; the handshake
/// happens after INFO, as with every NATS server.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) name: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) nkey_seed: Option<String>,
    pub(crate) user_credentials: Option<UserCredentials>,
    pub(crate) tls: TlsOptions,
    pub(crate) no_echo: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) max_pings_outstanding: usize,
    pub(crate) max_reconnects: Option<usize>,
    pub(crate) reconnect_delay: Duration,
    pub(crate) max_reconnect_delay: Duration,
    pub(crate) reconnect_jitter: Duration,
    pub(crate) reconnect_delay_callback: Option<ReconnectDelayCallback>,
    pub(crate) reconnect_buffer_size: usize,
    pub(crate) write_buffer_limit: usize,
    pub(crate) subscription_capacity: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) inbox_prefix: String,
    pub(crate) retain_servers_order: bool,
    pub(crate) ignore_discovered_servers: bool,
    pub(crate) event_callback: Option<EventCallback>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            name: None,
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            user_credentials: None,
            tls: TlsOptions::default(),
            no_echo: false,
            connect_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(120),
            max_pings_outstanding: 2,
            max_reconnects: Some(60),
            reconnect_delay: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(4),
            reconnect_jitter: Duration::from_millis(100),
            reconnect_delay_callback: None,
            reconnect_buffer_size: 8 * 1024 * 1024,
            write_buffer_limit: 4 * 1024 * 1024,
            subscription_capacity: 65536,
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            inbox_prefix: "_INBOX".to_string(),
            retain_servers_order: false,
            ignore_discovered_servers: false,
            event_callback: None,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey", &self.nkey_seed.as_ref().map(|_| "***"))
            .field(
                "credentials",
                &self.user_credentials.as_ref().map(|c| match c {
                    UserCredentials::File(p) => p.display().to_string(),
                    UserCredentials::Jwt { .. } => "***".to_string(),
                }),
            )
            .field("tls_required", &self.tls.required)
            .field("tls_root_certs", &self.tls.root_certs)
            .field("tls_client_cert", &self.tls.client_cert)
            .field("no_echo", &self.no_echo)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("max_reconnects", &self.max_reconnects)
            .field("reconnect_buffer_size", &self.reconnect_buffer_size)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Connects to the first reachable server of `servers` (in random order unless
    /// [`retain_servers_order`](Self::retain_servers_order)).
    pub async fn connect(self, servers: impl ToServerAddrs) -> Result<Client, ConnectError> {
        Client::connect_with(servers.to_server_addrs()?, self).await
    }

    /// The connection name the server shows in `/connz`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Credentials for servers whose URL carries none.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticate with an nkey: `seed` is the user's seed (`SU…`); the client sends the public
    /// key and signs the server's nonce with it.
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.nkey_seed = Some(seed.into().trim().to_string());
        self
    }

    /// Authenticate with a `.creds` file (a user JWT and its nkey seed in the decorated
    /// format `nsc` writes). The file is read at every connect; a missing or malformed file
    /// fails the connect with `ConnectErrorKind::Credentials`.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.user_credentials = Some(UserCredentials::File(path.into()));
        self
    }

    /// Authenticate with the contents of a `.creds` file.
    pub fn credentials(mut self, contents: &str) -> Result<Self, ConnectError> {
        let (jwt, seed) = crate::auth::parse_creds(contents)
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Credentials, e))?;
        self.user_credentials = Some(UserCredentials::Jwt { jwt, seed });
        Ok(self)
    }

    /// Authenticate with a user JWT and the nkey seed that signs the server's nonce.
    pub fn user_jwt(mut self, jwt: impl Into<String>, seed: impl Into<String>) -> Self {
        self.user_credentials = Some(UserCredentials::Jwt {
            jwt: jwt.into().trim().to_string(),
            seed: seed.into().trim().to_string(),
        });
        self
    }

    /// Use TLS with every server, and fail with `ConnectErrorKind::TlsRequired` when a server
    /// does not offer it.
    pub fn require_tls(mut self, required: bool) -> Self {
        self.tls.required = required;
        self.tls.changed();
        self
    }

    /// Trust the CA certificate(s) in this PEM file (instead of the system's roots).
    /// Repeatable. Implies TLS.
    pub fn add_root_certificates(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.tls.root_certs.push(pem_file.into());
        self.tls.changed();
        self
    }

    /// Present this client certificate chain and private key (PEM files) to the server, for
    /// servers that verify clients (mutual TLS). Implies TLS.
    pub fn add_client_certificate(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls.client_cert = Some((cert_file.into(), key_file.into()));
        self.tls.changed();
        self
    }

    /// A complete rustls client configuration, replacing the root and client certificate
    /// options. Implies TLS.
    pub fn tls_client_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(Arc::new(config));
        self.tls.changed();
        self
    }

    /// Connects to one server and completes the handshake (TLS and authentication included),
    /// without the client machinery: for tools that speak the protocol themselves over the
    /// returned stream, such as a load generator. No reconnects, no keepalive.
    pub async fn connect_raw(&self, addr: &ServerAddr) -> Result<RawConnection, ConnectError> {
        crate::connection::handshake(addr, self).await
    }

    /// Do not deliver this connection's own publishes to its own subscriptions.
    pub fn no_echo(mut self) -> Self {
        self.no_echo = true;
        self
    }

    /// Bound on TCP connect plus the INFO/CONNECT/PING/PONG handshake, per attempt.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How often to PING the server; after `max_pings_outstanding` unanswered PINGs the
    /// connection is considered broken and the client reconnects.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }

    pub fn max_pings_outstanding(mut self, n: usize) -> Self {
        self.max_pings_outstanding = n.max(1);
        self
    }

    /// Give up after this many failed reconnect attempts in a row (`None`: never).
    pub fn max_reconnects(mut self, n: Option<usize>) -> Self {
        self.max_reconnects = n;
        self
    }

    /// Backoff between reconnect attempts: the first attempt is immediate, then `base`,
    /// doubling up to `max`, each plus a random jitter of up to `jitter`.
    pub fn reconnect_delay(mut self, base: Duration, max: Duration, jitter: Duration) -> Self {
        self.reconnect_delay = base;
        self.max_reconnect_delay = max.max(base);
        self.reconnect_jitter = jitter;
        self
    }

    /// Replaces the backoff: called with the number of failed attempts so far.
    pub fn reconnect_delay_callback(
        mut self,
        f: impl Fn(usize) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.reconnect_delay_callback = Some(Arc::new(f));
        self
    }

    /// Bytes of publishes kept while disconnected; a publish that does not fit fails with
    /// `PublishErrorKind::ReconnectBufferFull`.
    pub fn reconnect_buffer_size(mut self, bytes: usize) -> Self {
        self.reconnect_buffer_size = bytes;
        self
    }

    /// While connected, a publish waits when this many bytes are queued for the socket.
    pub fn write_buffer_limit(mut self, bytes: usize) -> Self {
        self.write_buffer_limit = bytes.max(1);
        self
    }

    /// Messages buffered per subscription before it is a slow consumer (and messages drop).
    pub fn subscription_capacity(mut self, n: usize) -> Self {
        self.subscription_capacity = n.max(1);
        self
    }

    /// Default timeout of [`Client::request`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Prefix of inbox subjects (`_INBOX` by default).
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = prefix.into();
        self
    }

    /// Try servers in the given order rather than shuffled.
    pub fn retain_servers_order(mut self) -> Self {
        self.retain_servers_order = true;
        self
    }

    /// Do not add servers announced in INFO `connect_urls` to the pool.
    pub fn ignore_discovered_servers(mut self) -> Self {
        self.ignore_discovered_servers = true;
        self
    }

    /// Called (from the connection task: keep it quick) for every [`Event`].
    pub fn event_callback(mut self, f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        self.event_callback = Some(Arc::new(f));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_urls() {
        let a: ServerAddr = "nats://u:p@example.com:4333".parse().unwrap();
        assert_eq!(
            (
                a.host.as_str(),
                a.port,
                a.user.as_deref(),
                a.password.as_deref(),
                a.tls
            ),
            ("example.com", 4333, Some("u"), Some("p"), false)
        );
        let b: ServerAddr = "127.0.0.1".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 4222));
        let c: ServerAddr = "tls://[::1]:5222".parse().unwrap();
        assert_eq!((c.host.as_str(), c.port, c.tls), ("::1", 5222, true));
        assert_eq!(c.to_string(), "tls://[::1]:5222");
        let d: ServerAddr = "nats://tok@h".parse().unwrap();
        assert_eq!(
            (d.user.as_deref(), d.password.as_deref()),
            (Some("tok"), None)
        );
        assert_eq!(d.to_string(), "nats://h:4222", "no credentials in Display");
        for bad in [
            "http://h",
            "nats://",
            "nats://h:port",
            "[::1",
            "nats://h:99999",
        ] {
            let err = bad.parse::<ServerAddr>().unwrap_err();
            assert_eq!(err.kind(), ConnectErrorKind::InvalidAddress, "{bad}");
        }
    }

    #[test]
    fn lists() {
        let all = "nats://a:1, b:2,".to_server_addrs().unwrap();
        assert_eq!(all.len(), 2);
        let v = vec!["a", "b:5"].to_server_addrs().unwrap();
        assert_eq!(v[1].port, 5);
    }
}
