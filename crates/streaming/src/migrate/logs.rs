//! The reference's `server.dat`, `clients.dat` and per-channel `subs.dat`, replayed with the
//! reference's recovery rules.
//!
//! ```text
//! server.dat   version | one untyped record: ServerInfo (the file is exactly that long)
//! clients.dat  version | typed records: 1 add (ClientInfo, replaces), 2 delete (ClientDelete)
//! subs.dat     version | typed records: 1 new (SubState), 2 update (SubState, keeps pending),
//!              3 delete (SubStateDelete), 4 ack (SubStateUpdate: seq no longer pending),
//!              5 sent (SubStateUpdate: seq pending, last_sent raised to it)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost::Message;

use super::error::{DamageKind, MigrateError};
use super::records::{
    Ctx, REC_HEADER_LEN, RefFile, Step, VERSION_LEN, check_version, read_log, record_at,
};
use crate::proto::{
    ClientDelete, ClientInfo, ServerInfo, SubState, SubStateDelete, SubStateUpdate,
};
use crate::store::Corruption;

/// `server.dat`: `None` when absent or never written (only the version header).
pub(crate) fn read_server_info(
    path: &Path,
    ctx: &mut Ctx,
) -> Result<Option<ServerInfo>, MigrateError> {
    let Some(mut f) = RefFile::open(path, ctx.chunk)? else {
        return Ok(None);
    };
    if !check_version(&mut f, ctx)? {
        return Ok(None);
    }
    let len = f.len();
    let crc = ctx.crc().cloned();
    let (payload_len, decoded) = match record_at(&mut f, VERSION_LEN, false, crc.as_ref())? {
        Step::End => return Ok(None),
        // The reference fails on a zeroed record here (it only truncates zeros in logs).
        Step::Zeros => {
            ctx.issues
                .corrupt(path, VERSION_LEN, Corruption::BadLength(0))?;
            return Ok(None);
        }
        Step::Bad(kind) => {
            ctx.issues.corrupt(path, VERSION_LEN, kind)?;
            return Ok(None);
        }
        Step::Record { payload, .. } => (payload.len() as u64, ServerInfo::decode(payload)),
    };
    let expected = VERSION_LEN + REC_HEADER_LEN + payload_len;
    if len != expected {
        ctx.issues.damage(
            path,
            VERSION_LEN,
            DamageKind::ServerFileSize {
                expected,
                found: len,
            },
        )?;
        return Ok(None);
    }
    match decoded {
        Ok(info) => Ok(Some(info)),
        Err(e) => {
            ctx.issues
                .corrupt(path, VERSION_LEN, Corruption::Decode(e.to_string()))?;
            Ok(None)
        }
    }
}

/// `clients.dat`: the registered clients, by ID.
pub(crate) fn read_clients(
    path: &Path,
    ctx: &mut Ctx,
) -> Result<BTreeMap<String, ClientInfo>, MigrateError> {
    let mut clients = BTreeMap::new();
    read_log(path, ctx, |t, b| {
        match t {
            1 => {
                let c = ClientInfo::decode(b).map_err(decode_err)?;
                clients.insert(c.id.clone(), c);
            }
            2 => {
                let d = ClientDelete::decode(b).map_err(decode_err)?;
                clients.remove(&d.id);
            }
            other => return Err(Corruption::UnknownRecordType(other)),
        }
        Ok(())
    })?;
    Ok(clients)
}

/// A subscription as the reference recovers it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefSub {
    pub(crate) state: SubState,
    /// Sent and not acknowledged.
    pub(crate) pending: BTreeSet<u64>,
}

/// A channel's `subs.dat`: its subscriptions by reference ID.
pub(crate) fn read_subs(path: &Path, ctx: &mut Ctx) -> Result<BTreeMap<u64, RefSub>, MigrateError> {
    let mut subs: BTreeMap<u64, RefSub> = BTreeMap::new();
    read_log(path, ctx, |t, b| {
        match t {
            1 => {
                let s = SubState::decode(b).map_err(decode_err)?;
                subs.insert(
                    s.id,
                    RefSub {
                        state: s,
                        pending: BTreeSet::new(),
                    },
                );
            }
            2 => {
                let s = SubState::decode(b).map_err(decode_err)?;
                match subs.get_mut(&s.id) {
                    Some(e) => e.state = s,
                    None => {
                        subs.insert(
                            s.id,
                            RefSub {
                                state: s,
                                pending: BTreeSet::new(),
                            },
                        );
                    }
                }
            }
            3 => {
                let d = SubStateDelete::decode(b).map_err(decode_err)?;
                subs.remove(&d.id);
            }
            4 => {
                let u = SubStateUpdate::decode(b).map_err(decode_err)?;
                if let Some(e) = subs.get_mut(&u.id) {
                    e.pending.remove(&u.seqno);
                }
            }
            5 => {
                let u = SubStateUpdate::decode(b).map_err(decode_err)?;
                if let Some(e) = subs.get_mut(&u.id) {
                    e.state.last_sent = e.state.last_sent.max(u.seqno);
                    e.pending.insert(u.seqno);
                }
            }
            other => return Err(Corruption::UnknownRecordType(other)),
        }
        Ok(())
    })?;
    Ok(subs)
}

fn decode_err(e: prost::DecodeError) -> Corruption {
    Corruption::Decode(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::crc::{Crc, IEEE_POLY};
    use crate::migrate::error::Issues;
    use crate::migrate::testutil::{Rec, RefBuilder, record};

    fn ctx() -> Ctx {
        Ctx {
            crc: Crc::new(IEEE_POLY),
            check_crc: true,
            truncate_bad_eof: false,
            chunk: 4096,
            issues: Issues::collecting(),
        }
    }

    #[test]
    fn server_info_rules() {
        let d = tempfile::tempdir().unwrap();
        let b = RefBuilder::new(d.path());
        let p = d.path().join("server.dat");
        assert_eq!(read_server_info(&p, &mut ctx()).unwrap(), None);
        b.server("c1");
        let info = read_server_info(&p, &mut ctx()).unwrap().unwrap();
        assert_eq!(info.cluster_id, "c1");

        // Only the version header: never initialised.
        std::fs::write(&p, [1, 0, 0, 0]).unwrap();
        assert_eq!(read_server_info(&p, &mut ctx()).unwrap(), None);

        // A trailing byte: the reference refuses the file.
        let mut bytes = vec![1, 0, 0, 0];
        bytes.extend(record(b"\x0a\x02c1"));
        bytes.push(0);
        std::fs::write(&p, &bytes).unwrap();
        let mut c = ctx();
        assert_eq!(read_server_info(&p, &mut c).unwrap(), None);
        assert_eq!(
            c.issues.damage[0].kind,
            DamageKind::ServerFileSize {
                expected: 16,
                found: 17
            }
        );
    }

    #[test]
    fn clients_replay_adds_and_deletes() {
        let d = tempfile::tempdir().unwrap();
        let b = RefBuilder::new(d.path());
        b.clients(&[
            Rec::ClientAdd(RefBuilder::client("a")),
            Rec::ClientAdd(RefBuilder::client("b")),
            Rec::ClientDelete("a".into()),
            Rec::ClientDelete("never".into()),
            Rec::ClientAdd(RefBuilder::client("c")),
        ]);
        let c = read_clients(&d.path().join("clients.dat"), &mut ctx()).unwrap();
        assert_eq!(c.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(c["b"].hb_inbox, "_INBOX.hb.b");
    }

    #[test]
    fn subs_replay_follows_the_reference() {
        let d = tempfile::tempdir().unwrap();
        let b = RefBuilder::new(d.path());
        let mut offline = RefBuilder::durable(2, "", "dq", 5);
        offline.q_group = "dq:g".into();
        b.subs(
            "foo",
            &[
                Rec::SubNew(RefBuilder::durable(1, "c", "d1", 0)),
                Rec::SubNew(RefBuilder::durable(2, "c", "dq", 0)),
                Rec::SubNew(RefBuilder::durable(3, "x", "", 0)),
                Rec::SubPending(1, 1),
                Rec::SubPending(1, 2),
                Rec::SubPending(1, 3),
                Rec::SubAck(1, 1),
                Rec::SubPending(2, 4),
                Rec::SubPending(2, 5),
                Rec::SubAck(2, 4),
                Rec::SubUpdate(offline),
                Rec::SubDelete(3),
                Rec::SubPending(3, 9),
                Rec::SubAck(7, 1),
                // An update for an unknown ID creates it.
                Rec::SubUpdate(RefBuilder::durable(8, "z", "dz", 4)),
            ],
        );
        let s = read_subs(&d.path().join("foo/subs.dat"), &mut ctx()).unwrap();
        assert_eq!(s.keys().copied().collect::<Vec<_>>(), [1, 2, 8]);
        assert_eq!(s[&1].state.last_sent, 3);
        assert_eq!(s[&1].pending.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s[&2].state.client_id, "");
        assert_eq!(s[&2].state.q_group, "dq:g");
        assert_eq!(s[&2].pending.iter().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(s[&8].state.last_sent, 4);
        assert!(s[&8].pending.is_empty());
    }

    #[test]
    fn unknown_record_type_is_damage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("clients.dat");
        let mut b = vec![1, 0, 0, 0];
        b.extend(crate::migrate::testutil::typed_record(9, b""));
        std::fs::write(&p, b).unwrap();
        let mut c = ctx();
        read_clients(&p, &mut c).unwrap();
        assert_eq!(c.issues.damage[0].offset, 4);
        assert_eq!(
            c.issues.damage[0].kind,
            DamageKind::Record(Corruption::UnknownRecordType(9))
        );
    }
}
