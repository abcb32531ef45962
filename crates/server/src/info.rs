//! The `INFO` a server sends: to clients when they connect and when the cluster changes, to
//! routes at the handshake and in lame duck mode. One [`Info`] type serves both (fields a
//! kind does not use are left out of its JSON), and `/varz` opens with the same fields.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::conn::ClientShared;
use crate::net::host_port;
use crate::options::VERSION;
use crate::state::ServerShared;
use crate::state::cluster::Cluster;

/// The fields every INFO and `/varz` open with, in the reference's order.
#[derive(Serialize)]
pub(crate) struct InfoHead<'a> {
    pub server_id: &'a str,
    pub server_name: &'a str,
    pub version: &'static str,
    pub proto: u8,
    pub go: &'static str,
    pub host: String,
    pub port: u16,
    /// Said in INFO, not in `/varz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
}

impl<'a> InfoHead<'a> {
    /// This server on a listener at `host:port` speaking protocol `proto`; the flags off.
    pub(crate) fn new(srv: &'a ServerShared, proto: u8, host: String, port: u16) -> Self {
        InfoHead {
            server_id: &srv.server_id,
            server_name: &srv.server_name,
            version: VERSION,
            proto,
            go: "rnats",
            host,
            port,
            headers: None,
            auth_required: false,
            tls_required: false,
            tls_verify: false,
        }
    }
}

/// An INFO, to a client (`client_id`, `client_ip`, `nonce`, `connect_info`, …) or to a route
/// (`cluster_dynamic`); what a kind does not use stays out of its JSON.
#[derive(Serialize)]
struct Info<'a> {
    #[serde(flatten)]
    head: InfoHead<'a>,
    max_payload: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cluster_dynamic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    connect_info: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_account: Option<&'a str>,
}

/// `INFO {json} ␍␊`.
pub(crate) fn line(info: &impl Serialize) -> Vec<u8> {
    let mut line = b"INFO ".to_vec();
    serde_json::to_writer(&mut line, info).expect("INFO serializes");
    line.extend_from_slice(b" \r\n");
    line
}

/// The `INFO` line for a new client, or (with `connect_info`) the one that follows the first
/// PONG of a protocol-1 client and names its account.
pub(crate) fn client_line(
    srv: &ServerShared,
    cid: u64,
    addr: SocketAddr,
    nonce: Option<&str>,
    connect_info: bool,
) -> Vec<u8> {
    let (host, port) = advertised_client_host_port(srv);
    let opts = srv.opts();
    line(&Info {
        head: InfoHead {
            headers: Some(!opts.no_header_support),
            auth_required: srv.auth().required(),
            tls_required: srv.tls.is_some(),
            tls_verify: opts.tls.as_ref().is_some_and(|t| t.verify),
            ..InfoHead::new(srv, 1, host, port)
        },
        max_payload: opts.max_payload,
        client_id: Some(cid),
        client_ip: Some(addr.ip().to_string()),
        nonce,
        cluster: srv.cluster.as_ref().map(|c| c.name.lock().clone()),
        cluster_dynamic: false,
        connect_urls: connect_urls(srv),
        ldm: srv.lame_duck.load(Ordering::Relaxed),
        connect_info,
        remote_account: connect_info.then_some("$G"),
    })
}

/// The `INFO` line a route gets at the handshake (and again in lame duck mode).
pub(crate) fn route_line(srv: &ServerShared, cluster: &Cluster) -> Vec<u8> {
    let (host, port) = match cluster
        .opts
        .advertise
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
    {
        Some((h, p)) => (
            h.to_string(),
            p.parse().unwrap_or(cluster.listen_addr.port()),
        ),
        None => (cluster.opts.host.clone(), cluster.listen_addr.port()),
    };
    let connect_urls = if cluster.opts.no_advertise {
        Vec::new()
    } else {
        own_client_urls(srv)
    };
    line(&Info {
        head: InfoHead {
            headers: Some(true),
            auth_required: cluster.opts.user.is_some(),
            tls_required: cluster.tls.is_some(),
            tls_verify: cluster.tls.is_some(),
            ..InfoHead::new(srv, 2, host, port)
        },
        max_payload: srv.opts().max_payload,
        client_id: None,
        client_ip: None,
        nonce: None,
        cluster: Some(cluster.name.lock().clone()),
        cluster_dynamic: cluster.dynamic_name,
        connect_urls: (!connect_urls.is_empty()).then_some(connect_urls),
        ldm: srv.lame_duck.load(Ordering::Relaxed),
        connect_info: false,
        remote_account: None,
    })
}

fn advertised_client_host_port(srv: &ServerShared) -> (String, u16) {
    if let Some(adv) = &srv.opts().client_advertise {
        if let Some((h, p)) = adv.rsplit_once(':')
            && let Ok(p) = p.parse()
        {
            return (h.trim_matches(['[', ']']).to_string(), p);
        }
        return (adv.clone(), srv.client_addr.port());
    }
    (srv.opts().host.clone(), srv.client_addr.port())
}

/// This server's client URLs as other servers and clients should see them.
pub fn own_client_urls(srv: &ServerShared) -> Vec<String> {
    if let Some(adv) = &srv.opts().client_advertise {
        return vec![adv.clone()];
    }
    let port = srv.client_addr.port();
    let ip: std::net::IpAddr = match srv.opts().host.parse() {
        Ok(ip) => ip,
        Err(_) => return vec![format!("{}:{port}", srv.opts().host)],
    };
    if !ip.is_unspecified() {
        return vec![host_port(&ip.to_string(), port)];
    }
    let mut urls: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && (ip.is_ipv6() || i.ip().is_ipv4()))
        .map(|i| host_port(&i.ip().to_string(), port))
        .collect();
    if urls.is_empty() {
        urls.push(host_port("127.0.0.1", port));
    }
    urls
}

/// `connect_urls` for client INFO: this server's URLs first, then the cluster's.
pub fn connect_urls(srv: &ServerShared) -> Option<Vec<String>> {
    let cluster = srv.cluster.as_ref()?;
    if cluster.opts.no_advertise {
        return None;
    }
    // In lame duck mode clients are pointed only at the other servers.
    let mut urls = if srv.lame_duck.load(Ordering::Relaxed) {
        Vec::new()
    } else {
        own_client_urls(srv)
    };
    urls.extend(cluster.remote_client_urls());
    Some(urls)
}

/// Sends a fresh INFO (new `connect_urls`) to every client that takes async INFOs.
pub fn push_async_info(srv: &ServerShared) {
    if srv.cluster.as_ref().is_none_or(|c| c.opts.no_advertise)
        && !srv.lame_duck.load(Ordering::Relaxed)
    {
        return;
    }
    let clients: Vec<Arc<ClientShared>> = srv.clients.lock().values().cloned().collect();
    for client in clients {
        if client.async_info.load(Ordering::Relaxed) {
            let info = client_line(srv, client.cid, client.addr, None, false);
            client.send_now(|out| out.extend_from_slice(&info));
        }
    }
}
