//! Making route connections: the route listener and its accept loop, dialing the configured
//! routes forever (1 s + jitter between attempts, skipped while a route to that server is up)
//! and the routes learned through gossip (`connect_retries` extra attempts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info};

use super::run_route;
use crate::net::host_port;
use crate::state::ServerShared;

/// Accepts route connections until shutdown.
pub async fn accept_loop(srv: Arc<ServerShared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = srv.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                debug!("{addr} - rid - Route connection created");
                tokio::spawn(run_route(srv.clone(), stream, addr, None));
            }
            Err(e) => {
                error!("Temporary route accept error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How a solicited route was configured.
#[derive(Clone)]
pub struct Solicit {
    pub url: String,
    pub user: Option<(String, String)>,
}

/// Dials an explicit route forever (1 s + jitter between attempts), skipping while a route
/// to the server at that address is up.
pub async fn solicit_forever(srv: Arc<ServerShared>, url: String) {
    let Some((user, host, port)) = crate::options::parse_route_url(&url) else {
        error!("Error parsing route URL \"{}\"", redact_url(&url));
        return;
    };
    let target = host_port(&host, port as u16);
    loop {
        if srv.shutdown.is_cancelled() {
            return;
        }
        let resolved = tokio::net::lookup_host(&target)
            .await
            .ok()
            .and_then(|mut a| a.next());
        let own = srv.cluster.as_ref().map(|c| c.listen_addr);
        let connected = resolved.is_some_and(|addr| {
            own.is_some_and(|o| {
                o.port() == addr.port()
                    && (o.ip() == addr.ip() || o.ip().is_unspecified())
                    && addr.ip().is_loopback()
            }) || srv
                .cluster
                .as_ref()
                .is_some_and(|c| c.routes.lock().values().any(|r| r.route_addr == Some(addr)))
        });
        if !connected {
            match TcpStream::connect(&target).await {
                Ok(stream) => {
                    debug!("Route connection to {target} established");
                    run_dialed(&srv, stream, resolved, &url, &user).await;
                }
                Err(e) => debug!("Error trying to connect to route ({target}): {e}"),
            }
        }
        let jitter = rand::rng().random_range(0..100);
        tokio::select! {
            () = srv.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(1000 + jitter)) => {}
        }
    }
}

/// Dials a route learned through gossip, with `connect_retries` extra attempts.
pub(super) async fn solicit_implicit(srv: Arc<ServerShared>, url: String, server_id: String) {
    let retries = srv.cluster.as_ref().map_or(0, |c| c.opts.connect_retries);
    let Some((_, host, port)) = crate::options::parse_route_url(&url) else {
        return;
    };
    let target = host_port(&host, port as u16);
    let user = srv.cluster.as_ref().and_then(|c| {
        c.opts
            .user
            .clone()
            .map(|u| (u, c.opts.password.clone().unwrap_or_default()))
    });
    for attempt in 0..=retries {
        if srv.shutdown.is_cancelled()
            || srv
                .cluster
                .as_ref()
                .is_some_and(|c| c.routes.lock().contains_key(&server_id))
        {
            break;
        }
        if let Ok(stream) = TcpStream::connect(&target).await {
            run_dialed(&srv, stream, None, &url, &user).await;
            break;
        }
        if attempt < retries {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if let Some(c) = &srv.cluster {
        c.dialing.lock().remove(&server_id);
    }
}

/// Runs a route this server dialed until it closes; `resolved` stands for the peer's address
/// if the socket cannot tell it.
async fn run_dialed(
    srv: &Arc<ServerShared>,
    stream: TcpStream,
    resolved: Option<SocketAddr>,
    url: &str,
    user: &Option<(String, String)>,
) {
    let _ = stream.set_nodelay(true);
    let addr = stream
        .peer_addr()
        .unwrap_or_else(|_| resolved.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
    let solicit = Solicit {
        url: url.to_string(),
        user: user.clone(),
    };
    run_route(srv.clone(), stream, addr, Some(solicit)).await;
}

/// Binds the route listener; logs like the reference.
pub async fn bind(opts: &crate::options::ClusterOptions) -> std::io::Result<TcpListener> {
    let port = if opts.port < 0 { 0 } else { opts.port as u16 };
    let listener = crate::net::listen(&host_port(&opts.host, port)).await?;
    let addr = listener.local_addr()?;
    info!(
        "Listening for route connections on {}",
        host_port(&opts.host, addr.port())
    );
    Ok(listener)
}

/// A route URL for logs: `user:pass@` becomes `user:[REDACTED]@`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:[REDACTED]@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact_url("nats-route://ruser:secret@10.0.0.2:6222"),
            "nats-route://ruser:[REDACTED]@10.0.0.2:6222"
        );
        assert_eq!(super::redact_url("nats://h:1"), "nats://h:1");
    }
}
