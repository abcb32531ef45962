//! The subjects a streaming server answers on, derived from the server info (persisted, so
//! clients of a restarted server keep using the same ones).

use rnats_streaming::proto::ServerInfo;

use crate::options::Options;

/// The request subjects the server answers on.
#[derive(Debug, Clone)]
pub struct Subjects {
    pub discover: String,
    pub ping: String,
    pub publish: String,
    pub subscribe: String,
    pub unsubscribe: String,
    pub sub_close: String,
    pub close: String,
    pub acks: String,
}

impl Subjects {
    pub fn from_info(info: &ServerInfo, opts: &Options) -> Subjects {
        Subjects {
            discover: info.discovery.clone(),
            ping: format!("{}.{}.pings", opts.discover_prefix, opts.cluster_id),
            publish: info.publish.clone(),
            subscribe: info.subscribe.clone(),
            unsubscribe: info.unsubscribe.clone(),
            sub_close: info.sub_close.clone(),
            close: info.close.clone(),
            acks: info.acks_subs.clone(),
        }
    }
}

/// The server info of a new store.
pub fn new_server_info(opts: &Options) -> ServerInfo {
    let cid = &opts.cluster_id;
    ServerInfo {
        cluster_id: cid.clone(),
        discovery: format!("{}.{}", opts.discover_prefix, cid),
        publish: format!("_STAN.pub.{cid}"),
        subscribe: format!("_STAN.sub.{cid}"),
        unsubscribe: format!("_STAN.unsub.{cid}"),
        close: format!("_STAN.close.{cid}"),
        sub_close: format!("_STAN.subclose.{cid}"),
        // The reference's: the same on every node of a cluster.
        acks_subs: format!("_STAN.ack.{cid}"),
        node_id: opts.clustering.raft.node_id.clone(),
    }
}
