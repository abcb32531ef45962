//! Operations on a running server: lame duck mode and configuration reload.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tracing::{error, info};

use crate::auth::{Authenticated, Credentials};
use crate::conn::{ClientShared, CloseReason};
use crate::options::{AuthError, Options};
use crate::state::ServerShared;

/// Why a configuration reload was refused (the old configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config reload not supported for {0}")]
    NotSupported(&'static str),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Lame duck mode (SIGUSR2): stop accepting clients, tell clients and routes, wait the grace
/// period, close the clients one by one over the rest of `lame_duck_duration`, then signal
/// shutdown.
pub(crate) async fn lame_duck(shared: Arc<ServerShared>) {
    if shared.lame_duck.swap(true, Ordering::Relaxed) {
        return;
    }
    info!("Entering lame duck mode, stop accepting new clients");
    shared.stop_accepting.cancel();
    announce_lame_duck(&shared);
    let opts = shared.opts();
    let clients: Vec<Arc<ClientShared>> = shared.clients.lock().values().cloned().collect();
    if !clients.is_empty() {
        tokio::select! {
            () = shared.shutdown.cancelled() => {}
            () = tokio::time::sleep(opts.lame_duck_grace_period) => {}
        }
        info!("Closing existing clients");
        let spread = opts
            .lame_duck_duration
            .saturating_sub(opts.lame_duck_grace_period);
        let step = (spread / clients.len() as u32).min(Duration::from_secs(1));
        for client in clients {
            if shared.shutdown.is_cancelled() {
                break;
            }
            client.close(CloseReason::ServerShutdown, true);
            let pause = if step.is_zero() {
                step
            } else {
                rand::rng().random_range(step / 2..step)
            };
            tokio::time::sleep(pause).await;
        }
    }
    shared.shutdown.cancel();
}

fn announce_lame_duck(srv: &ServerShared) {
    crate::info::push_async_info(srv);
    if let Some(cluster) = &srv.cluster {
        let line = crate::info::route_line(srv, cluster);
        for route in cluster.routes.lock().values() {
            route.conn.send_now(|out| out.extend_from_slice(&line));
        }
    }
}

/// After a reload: closes clients whose credentials no longer pass and hands the others
/// their new permissions.
fn reauthorize_clients(srv: &ServerShared) {
    let auth = srv.auth();
    let clients: Vec<Arc<ClientShared>> = srv.clients.lock().values().cloned().collect();
    for client in clients {
        let outcome = match client.credentials() {
            Some(creds) => auth.reauthenticate(&creds),
            None if auth.enabled() => auth.authenticate(&Credentials::default(), None),
            None => Some(Authenticated {
                user: None,
                permissions: None,
            }),
        };
        match outcome {
            Some(who) => client.set_new_permissions(who.permissions),
            None => {
                client.send_now(|out| rnats_protocol::write_err(out, "Authorization Violation"));
                client.close(CloseReason::AuthenticationViolation, true);
            }
        }
    }
}

/// Applies a reloaded configuration; see [`crate::ServerHandle::reload`].
pub(crate) fn reload(srv: &ServerShared, new: Options) -> Result<(), ReloadError> {
    let old = srv.opts();
    let fixed = [
        ("host", old.host != new.host),
        (
            "port",
            old.port != new.port && new.port != -1 && new.port != 0,
        ),
        ("server_name", old.server_name != new.server_name),
        ("http_port", old.http_port != new.http_port),
        ("https_port", old.https_port != new.https_port),
        (
            "cluster",
            old.cluster.as_ref().map(|c| (&c.host, c.port))
                != new.cluster.as_ref().map(|c| (&c.host, c.port)),
        ),
    ];
    if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
        let e = ReloadError::NotSupported(field);
        error!("Failed to reload server configuration: {e}");
        return Err(e);
    }
    let auth = new.auth.authenticator()?;
    crate::log::set_levels(new.debug, new.trace);
    srv.replace_options(new, auth);
    reauthorize_clients(srv);
    if let Some(max) = srv.opts().max_connections {
        let clients: Vec<Arc<ClientShared>> = srv.clients.lock().values().cloned().collect();
        for client in clients.iter().skip(max) {
            client.close(CloseReason::MaxConnectionsExceeded, true);
        }
    }
    info!("Reloaded server configuration");
    Ok(())
}
