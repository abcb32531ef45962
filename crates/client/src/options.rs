//! Connect options, server addresses and connection events.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
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

/// How to connect and how to behave once connected. Build with the setters, finish with
/// [`ConnectOptions::connect`].
///
/// Planned (the fields are designed in, not yet supported): TLS (`tls://`, CA and client
/// certificate), nkey seeds and `.creds` files (signing the INFO `nonce`).
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) name: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
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
