//! The monitoring listener: plain HTTP (`-m`, `http`) or HTTPS (`-ms`, `https`, with the
//! client port's certificate and no client certificate asked for, as nats-server), one hyper
//! HTTP/1.1 connection task per client.
//!
//! A service embedding the server adds its own pages to the same port ([`MonitorRoutes`],
//! registered with [`crate::ServerHandle::set_monitor_routes`]): its routes are asked first,
//! and what it adds to `/metrics` follows the server's families. So an embedding service never
//! needs a listener of its own; [`start_standalone`] serves only such routes, for one that
//! runs without an embedded server.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::options::{Options, OptionsError};
use crate::server::StartError;
use crate::state::ServerShared;

/// What an embedder's route answers.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl HttpReply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> HttpReply {
        HttpReply {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }
}

/// An answer still being computed (an embedder may ask its own task).
pub type ReplyFuture = Pin<Box<dyn Future<Output = HttpReply> + Send>>;
/// Prometheus text an embedder appends to `/metrics`.
pub type MetricsFuture = Pin<Box<dyn Future<Output = String> + Send>>;

/// Pages an embedding service serves on the server's monitoring port.
pub trait MonitorRoutes: Send + Sync + 'static {
    /// The answer for `path` (with its raw `query`), or `None` when the path is not this
    /// service's: the server's own pages answer then. Asked first, so a service may replace
    /// a page of the server's (its status page at `/`).
    fn route(&self, path: &str, query: &str) -> Option<ReplyFuture>;

    /// Families appended to the server's `/metrics` (Prometheus text format).
    fn metrics(&self) -> Option<MetricsFuture> {
        None
    }
}

/// Who answers on a listener: a server (and the routes registered with it), or only routes.
#[derive(Clone)]
pub(super) enum Target {
    Server(Arc<ServerShared>),
    Routes(Arc<dyn MonitorRoutes>),
}

/// A bound monitoring listener, HTTP or HTTPS.
pub(crate) struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    pub addr: SocketAddr,
}

/// Binds the monitoring port the options ask for (`None` when monitoring is off), on
/// `http_host` or else the client host, and logs it as nats-server does.
pub(crate) async fn bind(opts: &Options) -> Result<Option<Bound>, StartError> {
    opts.check_monitor().map_err(StartError::Options)?;
    let (port, secure) = match (opts.http_port, opts.https_port) {
        (0, 0) => return Ok(None),
        (0, p) => (p, true),
        (p, _) => (p, false),
    };
    let port = u16::try_from(port.max(0)).map_err(|_| {
        StartError::Options(OptionsError::InvalidPort(if secure {
            opts.https_port
        } else {
            opts.http_port
        }))
    })?;
    let host = opts.http_host.as_deref().unwrap_or(&opts.host);
    let addr = crate::net::host_port(host, port);
    let tls = match (&opts.tls, secure) {
        (Some(t), true) => {
            // The client port's certificate; no client certificate asked for (a browser
            // has none), as nats-server's HTTPS monitor.
            let mut t = t.clone();
            t.verify = false;
            t.verify_and_map = false;
            Some(TlsAcceptor::from(crate::tls::server_config(&t)?))
        }
        (None, true) => return Err(StartError::Options(OptionsError::HttpsWithoutTls)),
        _ => None,
    };
    let listener = crate::net::listen(&addr)
        .await
        .map_err(|source| StartError::Monitor {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Monitor {
            addr: addr.clone(),
            source,
        })?;
    info!(
        "Starting {} monitor on {}",
        if secure { "https" } else { "http" },
        crate::net::host_port(host, local.port())
    );
    Ok(Some(Bound {
        listener,
        tls,
        addr: local,
    }))
}

impl Bound {
    /// Whether this is the HTTPS monitor.
    pub fn secure(&self) -> bool {
        self.tls.is_some()
    }
}

/// Serves monitoring requests until `stop` is cancelled.
pub(super) async fn serve(bound: Bound, target: Target, stop: CancellationToken) {
    let Bound { listener, tls, .. } = bound;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                error!("Temporary monitor accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (target, stop, tls) = (target.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, target, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(tls)) => serve_conn(tls, target, stop).await,
                        Ok(Err(e)) => debug!("monitor TLS handshake error: {e}"),
                        Err(_) => debug!("monitor TLS handshake timeout"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<S>(stream: S, target: Target, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let target = target.clone();
        async move { Ok::<_, Infallible>(super::answer(&target, &req).await) }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        res = conn => if let Err(e) = res {
            debug!("monitor connection error: {e}");
        },
        () = stop.cancelled() => {}
    }
}

/// A monitoring listener of its own for a service that runs without an embedded server
/// (the streaming server with `-ns`): the options' monitoring port, host and TLS, answering
/// only `routes` (every other path is 404).
pub struct StandaloneMonitor {
    addr: SocketAddr,
    secure: bool,
    stop: CancellationToken,
}

impl StandaloneMonitor {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves HTTPS.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Stops accepting and closes the open monitoring connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Binds and serves [`StandaloneMonitor`]; `Ok(None)` when the options turn monitoring off.
pub async fn start_standalone(
    opts: &Options,
    routes: Arc<dyn MonitorRoutes>,
) -> Result<Option<StandaloneMonitor>, StartError> {
    let Some(bound) = bind(opts).await? else {
        return Ok(None);
    };
    let stop = CancellationToken::new();
    let monitor = StandaloneMonitor {
        addr: bound.addr,
        secure: bound.secure(),
        stop: stop.clone(),
    };
    tokio::spawn(serve(bound, Target::Routes(routes), stop));
    Ok(Some(monitor))
}

/// The response for an embedder's reply.
pub(super) fn response(reply: HttpReply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(reply.body));
    *r.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = reply.content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
