//! Reading a store back at open: server info, clients, channels (limits applied again to
//! what the database holds, as the reference server does), subscriptions with their pending
//! messages. Channels marked deleted by an earlier run are purged in the background.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use super::driver::{Row, V};
use super::msgs::LogInit;
use super::queries::Q;
use super::subs::{SubRows, apply_row};
use super::{Shared, SqlError};
use crate::proto::{ClientInfo, ServerInfo, SubState};
use crate::store::subs::SubsState;
use crate::store::{ChannelLimits, now_nanos};

/// The schema version in `ServerInfo.version`.
pub(crate) const SCHEMA_VERSION: i64 = 1;

fn corrupt(what: &str) -> impl Fn(String) -> SqlError + '_ {
    move |message| SqlError::Corrupt {
        what: what.to_owned(),
        message,
    }
}

/// A channel row.
pub(crate) struct ChannelRow {
    pub id: i64,
    pub name: String,
    pub maxseq: u64,
    pub limits: (i64, i64, i64),
    pub deleted: bool,
}

/// Everything read at open, before the channels get their stores.
pub(crate) struct Loaded {
    pub info: Option<ServerInfo>,
    pub clients: BTreeMap<String, ClientInfo>,
    pub channels: Vec<ChannelRow>,
    pub max_channel_id: i64,
    pub max_sub_id: u64,
}

/// One recovered channel's state.
pub(crate) struct LoadedChannel {
    pub log: LogInit,
    pub subs: SubsState,
    pub rows: HashMap<u64, SubRows>,
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

async fn query(cx: &super::db::Ctx, q: Q, params: Vec<V>) -> Result<Vec<Row>, SqlError> {
    let sql = cx.q.sql(q);
    cx.with_conn(async |c| c.query(&sql, &params).await).await
}

async fn scalar(cx: &super::db::Ctx, q: Q, params: Vec<V>) -> Result<i64, SqlError> {
    let rows = query(cx, q, params).await?;
    match rows.first() {
        Some(r) => Ok(r.opt_int(0).map_err(corrupt("aggregate"))?.unwrap_or(0)),
        None => Ok(0),
    }
}

/// Reads server info, clients, the channel list and the ID counters.
pub(crate) fn load(shared: &Shared) -> Result<Loaded, SqlError> {
    shared.db.call(|cx| async move {
        let mut rows = query(&cx, Q::InfoSelect, vec![]).await?;
        let info = match rows.first_mut() {
            None => None,
            Some(r) => {
                let column = r
                    .text(0)
                    .map_err(corrupt("ServerInfo"))?
                    .unwrap_or_default();
                let proto = r
                    .bytes(1)
                    .map_err(corrupt("ServerInfo"))?
                    .unwrap_or_default();
                let version = r.opt_int(2).map_err(corrupt("ServerInfo"))?.unwrap_or(0);
                if version != SCHEMA_VERSION {
                    return Err(SqlError::UnsupportedVersion(version));
                }
                let info = ServerInfo::decode(proto)
                    .map_err(|e| corrupt("ServerInfo.proto")(e.to_string()))?;
                if info.cluster_id != column {
                    return Err(SqlError::ClusterIdMismatch {
                        column,
                        data: info.cluster_id,
                    });
                }
                Some(info)
            }
        };
        let mut clients = BTreeMap::new();
        for mut r in query(&cx, Q::ClientsSelect, vec![]).await? {
            let id = r.text(0).map_err(corrupt("Clients"))?.unwrap_or_default();
            let hb = r.text(1).map_err(corrupt("Clients"))?.unwrap_or_default();
            let proto = r.bytes(2).map_err(corrupt("Clients"))?;
            let c = match proto.filter(|p| !p.is_empty()) {
                Some(p) => ClientInfo::decode(p)
                    .map_err(|e| corrupt("Clients.proto")(format!("client {id:?}: {e}")))?,
                // Rows written before the proto column existed.
                None => ClientInfo {
                    id: id.clone(),
                    hb_inbox: hb,
                    ..Default::default()
                },
            };
            clients.insert(id, c);
        }
        let mut channels = Vec::new();
        for mut r in query(&cx, Q::ChannelsSelect, vec![]).await? {
            let e = corrupt("Channels");
            channels.push(ChannelRow {
                id: r.int(0).map_err(&e)?,
                name: r.text(1).map_err(&e)?.unwrap_or_default(),
                maxseq: u(r.opt_int(2).map_err(&e)?.unwrap_or(0)),
                limits: (
                    r.opt_int(3).map_err(&e)?.unwrap_or(0),
                    r.opt_int(4).map_err(&e)?.unwrap_or(0),
                    r.opt_int(5).map_err(&e)?.unwrap_or(0),
                ),
                deleted: r.opt_int(6).map_err(&e)?.unwrap_or(0) != 0,
            });
        }
        let max_channel_id = scalar(&cx, Q::ChannelsMaxId, vec![]).await?;
        let max_sub_id = u(scalar(&cx, Q::SubsMaxId, vec![]).await?);
        Ok(Loaded {
            info,
            clients,
            channels,
            max_channel_id,
            max_sub_id,
        })
    })
}

/// The limits as the `Channels` row stores them.
pub(crate) fn stored_limits(l: &ChannelLimits) -> (i64, i64, i64) {
    (
        i64::try_from(l.max_msgs)
            .unwrap_or(i64::MAX)
            .min(i64::from(i32::MAX)),
        i64::try_from(l.max_bytes).unwrap_or(i64::MAX),
        crate::store::memory::duration_nanos(l.max_age),
    )
}

/// Applies `limits` to the rows of channel `ch`, then reads its counters, subscriptions and
/// pending messages.
pub(crate) fn load_channel(
    shared: &Arc<Shared>,
    ch: &ChannelRow,
    limits: &ChannelLimits,
) -> Result<LoadedChannel, SqlError> {
    let id = ch.id;
    let maxseq = ch.maxseq;
    let stored = ch.limits;
    let wanted = stored_limits(limits);
    let (max_msgs, max_bytes, max_age) = (limits.max_msgs, limits.max_bytes, wanted.2);
    let max_subs = limits.max_subs;
    shared.db.call(move |cx| async move {
        let read_stats =
            async |cx: &super::db::Ctx| -> Result<(u64, u64, u64, u64, i64), SqlError> {
                let rows = query(cx, Q::MsgsStats, vec![V::Int(id)]).await?;
                let e = corrupt("Messages statistics");
                match rows.first() {
                    Some(r) => Ok((
                        u(r.int(0).map_err(&e)?),
                        u(r.int(1).map_err(&e)?),
                        u(r.int(2).map_err(&e)?),
                        u(r.int(3).map_err(&e)?),
                        r.int(4).map_err(&e)?,
                    )),
                    None => Ok((0, 0, 0, 0, 0)),
                }
            };
        let (mut count, mut min, mut max, mut bytes, mut max_ts) = read_stats(&cx).await?;
        // The highest sequence to delete so that the limits hold (keeping at least the last
        // message for max_msgs and max_bytes; max_age may remove everything).
        let mut cut = 0u64;
        if count > 0 {
            if max_age > 0 {
                let before = now_nanos().saturating_sub(max_age);
                cut = cut.max(u(scalar(
                    &cx,
                    Q::MsgsLastExpired,
                    vec![V::Int(id), V::Int(before)],
                )
                .await?));
            }
            if max_msgs > 0 && count > max_msgs {
                let floor = u(scalar(
                    &cx,
                    Q::MsgsFloorForCount,
                    vec![V::Int(id), V::from(max_msgs)],
                )
                .await?);
                cut = cut.max(floor.saturating_sub(1));
            }
            if max_bytes > 0 && bytes > max_bytes {
                let mut floor = u(scalar(
                    &cx,
                    Q::MsgsFloorForBytes,
                    vec![V::Int(id), V::from(max_bytes)],
                )
                .await?);
                if floor == 0 {
                    floor = max; // even the last message alone is too large: keep it only
                }
                cut = cut.max(floor.saturating_sub(1));
            }
        }
        let mut stmts = Vec::new();
        if cut >= min && count > 0 {
            if cut >= max && max > maxseq {
                stmts.push(cx.q.stmt(Q::ChannelMaxSeq, vec![V::from(max), V::Int(id)]));
            }
            stmts.push(cx.q.stmt(Q::MsgsDeleteUpTo, vec![V::Int(id), V::from(cut)]));
        }
        if stored != wanted {
            stmts.push(cx.q.stmt(
                Q::ChannelLimits,
                vec![
                    V::Int(wanted.0),
                    V::Int(wanted.1),
                    V::Int(wanted.2),
                    V::Int(id),
                ],
            ));
        }
        let maxseq = if cut >= max { maxseq.max(max) } else { maxseq };
        if !stmts.is_empty() {
            let tx = stmts.len() > 1;
            cx.with_conn(async |c| c.run(&stmts, tx).await).await?;
            if cut > 0 {
                (count, min, max, bytes, max_ts) = read_stats(&cx).await?;
            }
        }
        // Subscriptions and their pending rows.
        let mut subs = SubsState::new(max_subs);
        let mut rows_of: HashMap<u64, SubRows> = HashMap::new();
        let mut last = maxseq.max(max);
        for mut r in query(&cx, Q::SubsSelect, vec![V::Int(id)]).await? {
            let e = corrupt("Subscriptions");
            let subid = u(r.int(0).map_err(&e)?);
            let col_lastsent = u(r.opt_int(1).map_err(&e)?.unwrap_or(0));
            let Some(proto) = r.bytes(2).map_err(&e)? else {
                last = last.max(col_lastsent);
                continue;
            };
            let mut state = SubState::decode(proto).map_err(|err| {
                corrupt("Subscriptions.proto")(format!("subscription {subid}: {err}"))
            })?;
            state.id = subid;
            state.last_sent = state.last_sent.max(col_lastsent);
            subs.put(state);
            rows_of.insert(subid, SubRows::recovered(col_lastsent));
            let pending = query(&cx, Q::PendingSelect, vec![V::from(subid)]).await?;
            let (Some(entry), Some(sr)) = (subs.subs.get_mut(&subid), rows_of.get_mut(&subid))
            else {
                continue;
            };
            for mut p in pending {
                let e = corrupt("SubsPending");
                let row = (
                    u(p.int(0).map_err(&e)?),
                    u(p.opt_int(1).map_err(&e)?.unwrap_or(0)),
                    u(p.opt_int(2).map_err(&e)?.unwrap_or(0)),
                    p.bytes(3).map_err(&e)?.filter(|b: &Bytes| !b.is_empty()),
                    p.bytes(4).map_err(&e)?.filter(|b: &Bytes| !b.is_empty()),
                );
                apply_row(entry, sr, row)
                    .map_err(|m| corrupt("SubsPending")(format!("subscription {subid}: {m}")))?;
            }
            last = last.max(entry.state.last_sent);
        }
        let first = if count > 0 { min } else { last + 1 };
        Ok(LoadedChannel {
            log: LogInit {
                first,
                last,
                msgs: count,
                bytes,
                last_ts: max_ts,
                maxseq,
            },
            subs,
            rows: rows_of,
        })
    })
}

/// Deletes every row of a channel marked deleted, in chunks (background).
pub(crate) async fn purge_channel(cx: &super::db::Ctx, id: i64) -> Result<(), SqlError> {
    for r in query(cx, Q::SubsOfChannel, vec![V::Int(id)]).await? {
        let subid = r.int(0).map_err(corrupt("Subscriptions"))?;
        let s = [cx.q.stmt(Q::PendingDeleteSub, vec![V::Int(subid)])];
        cx.with_conn(async |c| c.run(&s, false).await).await?;
    }
    loop {
        let end = scalar(cx, Q::MsgsChunkEnd, vec![V::Int(id), V::Int(1000)]).await?;
        if end == 0 {
            break;
        }
        let s = [cx.q.stmt(Q::MsgsDeleteUpTo, vec![V::Int(id), V::Int(end)])];
        cx.with_conn(async |c| c.run(&s, false).await).await?;
    }
    let s = [
        cx.q.stmt(Q::SubsDeleteChannel, vec![V::Int(id)]),
        cx.q.stmt(Q::ChannelDelete, vec![V::Int(id)]),
    ];
    cx.with_conn(async |c| c.run(&s, true).await).await?;
    Ok(())
}
