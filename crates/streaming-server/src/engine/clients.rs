//! Clients: connect (with the duplicate-ID probe), close, pings and heartbeats.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use rnats_streaming::proto::{
    ClientInfo, CloseRequest, CloseResponse, ConnectRequest, ConnectResponse, Ping, PingResponse,
};
use std::cmp::Reverse;
use tracing::{debug, error, info};

use super::state::ClientState;
use super::{Engine, Event, ProtocolError, Timer, encode};
use crate::nats::{InMsg, Subject};

pub(super) fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
impl Engine {
    /// Adds a client (new or recovered) and arms its first heartbeat.
    pub(super) fn add_client_state(&mut self, info: ClientInfo, now: Instant) -> String {
        if !info.conn_id.is_empty() {
            self.conn_ids.insert(info.conn_id.clone(), info.id.clone());
        }
        let id = info.id.clone();
        self.clients.insert(
            id.clone(),
            ClientState {
                info,
                subs: BTreeSet::new(),
                hb_fails: 0,
                hb_in_flight: false,
                hb_at: None,
            },
        );
        self.arm_hb(&id, now + self.opts.hb_interval);
        id
    }
    pub(super) fn connect_error(&mut self, reply: &Option<Subject>, err: ProtocolError) {
        let payload = encode(&ConnectResponse {
            error: err.to_string(),
            protocol: 1,
            ..Default::default()
        });
        self.reply(reply, payload);
    }

    pub(super) fn on_connect(&mut self, msg: InMsg) {
        let req = match ConnectRequest::decode(msg.payload.clone()) {
            Ok(r) if !r.heartbeat_inbox.is_empty() => r,
            _ => {
                debug!("STREAM: Invalid connection request on {}", msg.subject);
                return self.connect_error(&msg.reply, ProtocolError::InvalidConnReq);
            }
        };
        if !is_valid_client_id(&req.client_id) {
            return self.connect_error(&msg.reply, ProtocolError::InvalidClientId);
        }
        if let Some(old) = self.clients.get(&req.client_id) {
            if self.dup_checks.contains(&req.client_id) {
                return self.connect_error(&msg.reply, ProtocolError::ClientRegistered);
            }
            debug!(
                "STREAM: [Client:{}] Duplicate client ID, checking the old connection",
                req.client_id
            );
            self.dup_checks.insert(req.client_id.clone());
            let nc = self.nc.clone();
            let tx = self.tx.clone();
            let inbox = old.info.hb_inbox.clone();
            let timeout = self.opts.client_dup_check_timeout;
            let reply = msg.reply.clone();
            tokio::spawn(async move {
                let alive = nc.request(&inbox, Bytes::new(), timeout).await.is_ok();
                let _ = tx.send(Event::DupCheck { req, reply, alive });
            });
            return;
        }
        self.register_client(req, &msg.reply);
    }

    pub(super) fn on_dup_check(
        &mut self,
        req: ConnectRequest,
        reply: Option<Subject>,
        alive: bool,
    ) {
        self.dup_checks.remove(&req.client_id);
        if alive {
            debug!(
                "STREAM: [Client:{}] Client ID already registered",
                req.client_id
            );
            return self.connect_error(&reply, ProtocolError::ClientRegistered);
        }
        if self.clients.contains_key(&req.client_id) {
            info!(
                "STREAM: [Client:{}] Replacing old client (it did not answer)",
                req.client_id
            );
            self.close_client(&req.client_id.clone());
        }
        self.register_client(req, &reply);
    }

    pub(super) fn register_client(&mut self, req: ConnectRequest, reply: &Option<Subject>) {
        // (A replaced client ID was removed before: replacing never counts twice.)
        let max = self.opts.max_clients;
        if max > 0 && self.clients.len() as u64 >= max {
            debug!(
                "STREAM: [Client:{}] Connection refused: max_clients ({max}) reached",
                req.client_id
            );
            return self.connect_error(reply, ProtocolError::TooManyClients);
        }
        let info = ClientInfo {
            id: req.client_id.clone(),
            hb_inbox: req.heartbeat_inbox.clone(),
            conn_id: req.conn_id.clone(),
            protocol: req.protocol,
            ping_interval: req.ping_interval,
            ping_max_out: req.ping_max_out,
        };
        if let Err(e) = self.sink.client_add(&self.store, &info) {
            error!("STREAM: [Client:{}] Unable to store client: {e}", info.id);
            return self.connect_error(reply, e.into());
        }
        let id = self.add_client_state(info, Instant::now());
        debug!(
            "STREAM: [Client:{}] Connected (Inbox={})",
            id, req.heartbeat_inbox
        );
        let mut resp = ConnectResponse {
            pub_prefix: self.subjects.publish.clone(),
            sub_requests: self.subjects.subscribe.clone(),
            unsub_requests: self.subjects.unsubscribe.clone(),
            close_requests: self.subjects.close.clone(),
            sub_close_requests: self.subjects.sub_close.clone(),
            protocol: 1,
            ..Default::default()
        };
        if req.protocol >= 1 {
            resp.ping_requests = self.subjects.ping.clone();
            resp.ping_interval = req.ping_interval;
            resp.ping_max_out = req.ping_max_out;
        }
        self.reply(reply, encode(&resp));
    }

    /// Unregisters a client: non-durable subscriptions go away, durables go offline.
    pub(super) fn close_client(&mut self, id: &str) {
        let Some(client) = self.clients.remove(id) else {
            return;
        };
        if let Some(owner) = self.conn_ids.get(&client.info.conn_id)
            && owner == id
        {
            self.conn_ids.remove(&client.info.conn_id);
        }
        if let Err(e) = self.sink.client_delete(&self.store, id) {
            error!("STREAM: [Client:{id}] Unable to delete client: {e}");
        }
        for (ch, sid) in client.subs {
            self.remove_sub(&ch, sid, false);
        }
        debug!("STREAM: [Client:{id}] Closed");
    }

    pub(super) fn on_close(&mut self, msg: InMsg) {
        let Ok(req) = CloseRequest::decode(msg.payload.clone()) else {
            let p = encode(&CloseResponse {
                error: ProtocolError::InvalidCloseReq.to_string(),
            });
            return self.reply(&msg.reply, p);
        };
        if !self.clients.contains_key(&req.client_id) {
            let p = encode(&CloseResponse {
                error: ProtocolError::UnknownClient.to_string(),
            });
            return self.reply(&msg.reply, p);
        }
        self.close_client(&req.client_id);
        self.reply(&msg.reply, Bytes::new());
    }

    pub(super) fn on_ping(&mut self, msg: InMsg) {
        if msg.payload.is_empty() {
            return;
        }
        let Ok(ping) = Ping::decode(msg.payload.clone()) else {
            return;
        };
        let client = self
            .conn_ids
            .get(&ping.conn_id)
            .and_then(|id| self.clients.get(id))
            .filter(|c| c.info.conn_id == ping.conn_id);
        match client {
            Some(c) => {
                let fire = c.hb_fails > 0 && !c.hb_in_flight;
                let id = c.info.id.clone();
                self.reply(&msg.reply, Bytes::new());
                if fire {
                    self.arm_hb(&id, Instant::now());
                }
            }
            None => {
                let p = encode(&PingResponse {
                    error: ProtocolError::ClientReplaced.to_string(),
                });
                self.reply(&msg.reply, p);
            }
        }
    }

    pub(super) fn arm_hb(&mut self, id: &str, at: Instant) {
        if let Some(c) = self.clients.get_mut(id) {
            c.hb_at = Some(at);
            self.timers
                .push(Reverse((at, Timer::Heartbeat(id.to_string()))));
        }
    }

    pub(super) fn on_hb_timer(&mut self, id: &str, at: Instant) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if c.hb_at != Some(at) || c.hb_in_flight {
            return;
        }
        c.hb_at = None;
        c.hb_in_flight = true;
        let nc = self.nc.clone();
        let tx = self.tx.clone();
        let inbox = c.info.hb_inbox.clone();
        let conn_id = c.info.conn_id.clone();
        let client_id = id.to_string();
        let timeout = self.opts.hb_timeout;
        tokio::spawn(async move {
            let ok = nc.request(&inbox, Bytes::new(), timeout).await.is_ok();
            let _ = tx.send(Event::HbResult {
                client_id,
                conn_id,
                ok,
            });
        });
    }

    pub(super) fn on_hb_result(&mut self, id: String, conn_id: Vec<u8>, ok: bool) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.info.conn_id != conn_id {
            return;
        }
        c.hb_in_flight = false;
        if ok {
            c.hb_fails = 0;
        } else {
            c.hb_fails += 1;
            debug!(
                "STREAM: [Client:{id}] Missed heartbeat ({} failure(s))",
                c.hb_fails
            );
            if c.hb_fails > self.opts.hb_fail_count {
                info!("STREAM: [Client:{id}] Timed out on heartbeats");
                self.close_client(&id);
                return;
            }
        }
        self.arm_hb(&id, Instant::now() + self.opts.hb_interval);
        if ok {
            // Subscriptions skipped while the client looked dead get their messages now.
            let chans: Vec<String> = self.clients[&id]
                .subs
                .iter()
                .map(|(c, _)| c.clone())
                .collect();
            self.to_deliver.extend(chans);
        }
    }

    pub(super) fn client_healthy(clients: &BTreeMap<String, ClientState>, id: &str) -> bool {
        clients.get(id).is_some_and(|c| c.hb_fails == 0)
    }
}
