//! Fault tolerance (`--ft_group`): a warm standby sharing the store with an active server.
//!
//! Every member of a group attaches to the same NATS server or cluster and points at the same
//! store. A member starts as a *standby*: it recovers nothing and answers no client; it
//! watches the group's heartbeat subject `_STAN.ft.<cluster id>.<group>` and tries the
//! store's lock (for the FILE store, `flock` on `<dir>/.rootdir.lck`, which the kernel
//! releases the moment its holder dies). The member that gets the lock becomes *active*: it
//! recovers the store (clients, subscriptions, durable positions, pending messages) and
//! serves; clients keep their NATS connection, session and subscriptions.
//!
//! For the SQL store the lock is the `StoreLock` table (see `sql`): an owner ID and a tick the
//! active moves every second; a standby takes it over when the tick stood still for 4.5 s
//! while heartbeats are missed, and an active that loses it stops itself.
//!
//! The standby polls the FILE lock every [`LOCK_POLL`], so a same-host failover takes the poll
//! interval plus recovery, not the missed-heartbeat interval the reference waits for. The
//! heartbeats (every `ft_hb_interval`, randomised ±10 %) remain the guard in the two cases a
//! lock cannot settle:
//! * an active that hangs while holding the lock: the standby reports heartbeats missed for
//!   `ft_hb_missed_interval` while the lock stays taken;
//! * two actives (a lock that does not work across hosts): an active that hears a heartbeat
//!   from a server activated *earlier* stops itself; the other logs the conflict.
//!
//! Heartbeats are the reference's: a `CtrlMsg` of type `FTHeartbeat` with the server ID and
//! the activation time in Go's `time.Time` binary form, so rnats and nats-streaming-server
//! members recognise each other's heartbeats.

mod sql;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use rand::Rng as _;
use rnats_streaming::proto::{CtrlMsg, ctrl_msg};
use rnats_streaming::store::StoreError;
use rnats_streaming::store::file::DirLock;
use rnats_streaming::store::sql::SqlStoreOptions;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::nats::{Inbound, Nats};

pub(crate) use self::sql::SqlHeld;

/// The prefix of the heartbeat subjects.
pub(crate) const FT_PREFIX: &str = "_STAN.ft";
/// How often a standby tries the store lock.
pub(crate) const LOCK_POLL: Duration = Duration::from_millis(10);

/// The heartbeat subject of a group.
pub(crate) fn subject(cluster_id: &str, group: &str) -> String {
    format!("{FT_PREFIX}.{cluster_id}.{group}")
}

/// `d` ± up to 10 %, so that members of a group do not act in lockstep.
pub(crate) fn randomized(d: Duration) -> Duration {
    let tenth = d / 10;
    if tenth.is_zero() {
        return d;
    }
    let r = rand::rng().random_range(Duration::ZERO..tenth);
    if rand::rng().random_bool(0.5) {
        d + r
    } else {
        d - r
    }
}

/// Seconds from January 1 of year 1 (Go's internal epoch) to the Unix epoch.
const GO_UNIX_TO_INTERNAL: i64 = 62_135_596_800;

/// `t` in Go's `time.Time.MarshalBinary` form, version 1, UTC: version (1), seconds since
/// year 1 (i64 BE), nanoseconds (i32 BE), zone offset in minutes (-1 = UTC, i16 BE).
pub(crate) fn encode_go_time(t: SystemTime) -> Vec<u8> {
    // i128: no instant a `SystemTime` holds overflows; Go's range (i64 seconds from year 1)
    // saturates.
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos() as i32),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (i128::from(d.as_secs()), d.subsec_nanos() as i32);
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    let go_secs = secs + i128::from(GO_UNIX_TO_INTERNAL);
    let go_secs = i64::try_from(go_secs).unwrap_or(if go_secs < 0 { i64::MIN } else { i64::MAX });
    let mut b = Vec::with_capacity(15);
    b.push(1);
    b.extend_from_slice(&go_secs.to_be_bytes());
    b.extend_from_slice(&nanos.to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

/// Reads Go's `time.Time.MarshalBinary` form (versions 1 and 2; the zone does not change
/// the instant). `None` if malformed.
pub(crate) fn decode_go_time(b: &[u8]) -> Option<SystemTime> {
    let len = match b.first()? {
        1 => 15,
        2 => 16,
        _ => return None,
    };
    if b.len() != len {
        return None;
    }
    // i128: seconds near i64::MIN (any peer can send them) must not overflow.
    let secs =
        i128::from(i64::from_be_bytes(b[1..9].try_into().ok()?)) - i128::from(GO_UNIX_TO_INTERNAL);
    let nanos = i32::from_be_bytes(b[9..13].try_into().ok()?);
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos as u32))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(u64::try_from(-secs).ok()?))?
            .checked_add(Duration::from_nanos(nanos as u64))
    }
}

/// The heartbeat an active server sends.
pub(crate) fn heartbeat(server_id: &str, activation: SystemTime) -> Bytes {
    let m = CtrlMsg {
        msg_type: ctrl_msg::Type::FtHeartbeat as i32,
        server_id: server_id.to_string(),
        data: encode_go_time(activation),
        ..Default::default()
    };
    Bytes::from(m.encode_to_vec())
}

/// A heartbeat received from another member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heartbeat {
    pub(crate) server_id: String,
    /// `None` when the activation time does not decode.
    pub(crate) activation: Option<SystemTime>,
}

/// Why a message on the heartbeat subject is not a heartbeat of another member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotHeartbeat {
    #[error("undecodable control message")]
    Undecodable,
    #[error("control message of type {0}, not a heartbeat")]
    OtherType(i32),
    #[error("our own heartbeat")]
    Own,
}

/// Decodes a message received on the heartbeat subject.
pub(crate) fn parse_heartbeat(payload: &[u8], own_id: &str) -> Result<Heartbeat, NotHeartbeat> {
    let m = CtrlMsg::decode(payload).map_err(|_| NotHeartbeat::Undecodable)?;
    if m.msg_type != ctrl_msg::Type::FtHeartbeat as i32 {
        return Err(NotHeartbeat::OtherType(m.msg_type));
    }
    if m.server_id == own_id {
        return Err(NotHeartbeat::Own);
    }
    Ok(Heartbeat {
        server_id: m.server_id,
        activation: decode_go_time(&m.data),
    })
}

/// The lock the members of a group compete for.
#[derive(Debug, Clone)]
pub(crate) enum StoreLock {
    /// The FILE store's directory lock.
    File(PathBuf),
    /// The SQL store's `StoreLock` table.
    Sql(Arc<sql::SqlLockWatch>),
}

/// A store lock held by this server, handed to the store when it opens.
#[derive(Debug)]
pub(crate) enum HeldLock {
    File(DirLock),
    Sql(SqlHeld),
}

impl StoreLock {
    /// The SQL store's lock for this server (owner ID `server_id`).
    pub(crate) fn sql(opts: &SqlStoreOptions, server_id: &str) -> StoreLock {
        StoreLock::Sql(Arc::new(sql::SqlLockWatch::new(opts, server_id)))
    }

    /// How often a standby tries the lock.
    fn poll(&self) -> Duration {
        match self {
            StoreLock::File(_) => LOCK_POLL,
            StoreLock::Sql(_) => sql::SQL_POLL,
        }
    }

    /// Takes the lock if it is free (SQL: or if its owner is gone and, `hb_missed`, the
    /// active's heartbeats stopped).
    pub(crate) async fn try_acquire(
        &self,
        hb_missed: bool,
    ) -> Result<Option<HeldLock>, StoreError> {
        let joined = match self {
            StoreLock::File(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    DirLock::try_acquire(dir).map(|l| l.map(HeldLock::File))
                })
                .await
            }
            StoreLock::Sql(w) => {
                let w = w.clone();
                tokio::task::spawn_blocking(move || {
                    w.attempt(hb_missed)
                        .map(|l| l.map(HeldLock::Sql))
                        .map_err(StoreError::from)
                })
                .await
            }
        };
        match joined {
            Ok(r) => r,
            Err(e) => Err(StoreError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            }),
        }
    }
}

impl HeldLock {
    /// Starts keeping the lock while this server is active (SQL: refreshing its tick); the
    /// receiver, if any, learns why the lock was lost. The FILE lock cannot be lost.
    pub(crate) fn keep(
        &mut self,
    ) -> Option<oneshot::Receiver<rnats_streaming::store::sql::LockLost>> {
        match self {
            HeldLock::File(_) => None,
            HeldLock::Sql(h) => Some(h.keep()),
        }
    }
}

/// Resolves, with the error that must stop the server, when the lock `keep` watches is lost;
/// never otherwise.
pub(crate) async fn lock_lost(
    lost: Option<oneshot::Receiver<rnats_streaming::store::sql::LockLost>>,
) -> String {
    match lost {
        Some(rx) => match rx.await {
            Ok(l) => {
                let e = sql::describe(&l);
                error!("STREAM: {e}");
                e
            }
            // The refresher stopped without losing the lock (the store closed).
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Log lines at growing intervals (1 s, doubling, at most 1 min), as the reference does for
/// conditions that last.
struct Backoff {
    next: Instant,
    step: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Instant::now(),
            step: Duration::from_secs(1),
        }
    }

    fn ok(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + self.step;
        self.step = (self.step * 2).min(Duration::from_secs(60));
        true
    }
}

/// Standby: waits until this server holds the store lock. `Ok(None)` when told to stop.
pub(crate) async fn standby(
    heartbeats: &mut Inbound,
    lock: &StoreLock,
    server_id: &str,
    missed: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<HeldLock>, StoreError> {
    info!("STREAM: Starting in standby mode");
    let mut last_hb = Instant::now();
    let mut report = Backoff::new();
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        let hb_missed = last_hb.elapsed() > missed;
        match lock.try_acquire(hb_missed).await {
            Ok(Some(held)) => return Ok(Some(held)),
            Ok(None) => {}
            Err(e) => {
                if report.ok() {
                    error!("STREAM: ft: error attempting to get the store lock: {e}");
                }
            }
        }
        if last_hb.elapsed() > missed && report.ok() {
            warn!(
                "STREAM: ft: no heartbeat from the active server for {:?} but the store lock is still held, going back to standby",
                last_hb.elapsed()
            );
        }
        tokio::select! {
            (_, m) = heartbeats.next() => match parse_heartbeat(&m.payload, server_id) {
                Ok(_) => last_hb = Instant::now(),
                Err(NotHeartbeat::Own) => {}
                Err(e) => warn!("STREAM: ft: ignoring a message on the heartbeat subject: {e}"),
            },
            () = tokio::time::sleep(lock.poll()) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Why an active server stopped itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ft: serverID {other:?} claims to be active, aborting")]
pub(crate) struct TwoActives {
    pub(crate) other: String,
}

/// The active server's heartbeat loop: sends a heartbeat every `interval` and watches for
/// another active. Returns `Err` when one activated earlier than this server (this one
/// must stop), `Ok` when told to stop.
pub(crate) async fn active(
    nc: &Nats,
    heartbeats: &mut Inbound,
    subject: &str,
    server_id: &str,
    activation: SystemTime,
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), TwoActives> {
    info!("STREAM: Server is active");
    let hb = heartbeat(server_id, activation);
    let mut report = Backoff::new();
    let mut next = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= next {
            if let Err(e) = nc.publish_batch(&[(subject, &hb[..])]).await
                && report.ok()
            {
                error!("STREAM: Unable to send FT heartbeat: {e}");
            }
            next = tokio::time::Instant::now() + interval;
        }
        tokio::select! {
            (_, m) = heartbeats.next() => match parse_heartbeat(&m.payload, server_id) {
                Ok(hb) => match hb.activation {
                    Some(t) if t < activation => {
                        let e = TwoActives { other: hb.server_id };
                        error!("STREAM: {e}");
                        return Err(e);
                    }
                    Some(_) => error!(
                        "STREAM: ft: serverID {:?} claims to be active",
                        hb.server_id
                    ),
                    None => error!(
                        "STREAM: ft: error decoding the activation time of serverID {:?}",
                        hb.server_id
                    ),
                },
                Err(NotHeartbeat::Own) => {}
                Err(e) => warn!("STREAM: ft: ignoring a message on the heartbeat subject: {e}"),
            },
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_binary_form() {
        // Go: time.Unix(1700000000, 123456789).UTC().MarshalBinary()
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let b = encode_go_time(t);
        let mut want = vec![1u8];
        want.extend_from_slice(&(1_700_000_000i64 + 62_135_596_800).to_be_bytes());
        want.extend_from_slice(&123_456_789i32.to_be_bytes());
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(b, want);
        assert_eq!(decode_go_time(&b), Some(t));
        // Version 2 (offset with seconds) reads the same instant.
        let mut v2 = b.clone();
        v2[0] = 2;
        v2.push(0);
        assert_eq!(decode_go_time(&v2), Some(t));
        let before = UNIX_EPOCH - Duration::new(10, 500);
        assert_eq!(decode_go_time(&encode_go_time(before)), Some(before));
        for bad in [&b[..14], &[], &[3u8; 15][..]] {
            assert_eq!(decode_go_time(bad), None);
        }
    }

    /// Fuzzing (`stan_ctrl`): seconds near `i64::MIN` overflowed when moved to the Unix
    /// epoch (a panic with overflow checks, a wrong instant without).
    #[test]
    fn go_time_extremes_do_not_overflow() {
        let crash = [
            0x01, 0x80, 0x00, 0x00, 0x0e, 0x77, 0x90, 0xa5, 0x7f, 0x3b, 0xa5, 0xc9, 0xfb, 0xff,
            0xf7,
        ];
        let _ = decode_go_time(&crash);
        for secs in [
            i64::MIN,
            i64::MIN + GO_UNIX_TO_INTERNAL - 1,
            -1,
            0,
            i64::MAX,
        ] {
            let mut b = vec![1u8];
            b.extend_from_slice(&secs.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff]);
            if let Some(t) = decode_go_time(&b) {
                assert_eq!(encode_go_time(t), b, "{secs}");
            }
        }
        let hb = CtrlMsg {
            msg_type: ctrl_msg::Type::FtHeartbeat as i32,
            server_id: "A".into(),
            data: crash.to_vec(),
            ..Default::default()
        };
        assert!(parse_heartbeat(&hb.encode_to_vec(), "B").is_ok());
    }

    #[test]
    fn heartbeats_round_trip_and_bad_ones_are_named() {
        let t = UNIX_EPOCH + Duration::from_secs(5);
        let hb = heartbeat("A", t);
        assert_eq!(
            parse_heartbeat(&hb, "B"),
            Ok(Heartbeat {
                server_id: "A".into(),
                activation: Some(t)
            })
        );
        assert_eq!(parse_heartbeat(&hb, "A"), Err(NotHeartbeat::Own));
        assert_eq!(
            parse_heartbeat(&[0xff, 0xff], "B"),
            Err(NotHeartbeat::Undecodable)
        );
        let part = CtrlMsg {
            msg_type: ctrl_msg::Type::Partitioning as i32,
            server_id: "A".into(),
            ..Default::default()
        };
        assert_eq!(
            parse_heartbeat(&part.encode_to_vec(), "B"),
            Err(NotHeartbeat::OtherType(4))
        );
    }

    #[test]
    fn randomized_stays_within_ten_percent() {
        let d = Duration::from_millis(1000);
        for _ in 0..1000 {
            let r = randomized(d);
            assert!(r > Duration::from_millis(900) && r < Duration::from_millis(1100));
        }
    }
}
