//! Tests: writes stores in the reference's file format (from the format facts in
//! `records.rs`), to exercise layouts the fixture does not have: many slices, missing or
//! damaged indexes, other CRC polynomials, leftovers.

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;

use super::crc::{Crc, IEEE_POLY};
use super::records::IdxEntry;
use crate::proto::{ClientDelete, ClientInfo, MsgProto, ServerInfo, SubState, SubStateUpdate};

pub(crate) fn record_with(payload: &[u8], word: u32, crc: &Crc) -> Vec<u8> {
    let mut b = word.to_le_bytes().to_vec();
    b.extend(crc.checksum(payload).to_le_bytes());
    b.extend(payload);
    b
}

pub(crate) fn record(payload: &[u8]) -> Vec<u8> {
    record_with(payload, payload.len() as u32, &Crc::new(IEEE_POLY))
}

pub(crate) fn typed_record(t: u8, payload: &[u8]) -> Vec<u8> {
    record_with(
        payload,
        (u32::from(t) << 24) | payload.len() as u32,
        &Crc::new(IEEE_POLY),
    )
}

pub(crate) fn index_entry(e: &IdxEntry, crc: &Crc) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.extend(e.seq.to_le_bytes());
    b.extend(e.offset.to_le_bytes());
    b.extend(e.timestamp.to_le_bytes());
    b.extend(e.size.to_le_bytes());
    b.extend(crc.checksum(&b).to_le_bytes());
    b
}

const V1: [u8; 4] = [1, 0, 0, 0];

/// A reference store under construction.
pub(crate) struct RefBuilder {
    pub(crate) root: PathBuf,
    pub(crate) crc: Crc,
}

/// Records of `subs.dat` / `clients.dat`.
pub(crate) enum Rec {
    SubNew(SubState),
    SubUpdate(SubState),
    SubDelete(u64),
    SubAck(u64, u64),
    SubPending(u64, u64),
    ClientAdd(ClientInfo),
    ClientDelete(String),
}

impl RefBuilder {
    pub(crate) fn new(root: &Path) -> RefBuilder {
        Self::with_crc(root, IEEE_POLY)
    }

    pub(crate) fn with_crc(root: &Path, poly: u32) -> RefBuilder {
        fs::create_dir_all(root).unwrap();
        RefBuilder {
            root: root.to_owned(),
            crc: Crc::new(poly),
        }
    }

    pub(crate) fn server(&self, cluster_id: &str) -> &Self {
        let info = ServerInfo {
            cluster_id: cluster_id.into(),
            discovery: format!("_STAN.discover.{cluster_id}"),
            ..Default::default()
        };
        let p = info.encode_to_vec();
        let mut b = V1.to_vec();
        b.extend(record_with(&p, p.len() as u32, &self.crc));
        fs::write(self.root.join("server.dat"), b).unwrap();
        self
    }

    fn log(&self, path: &Path, recs: &[Rec]) {
        let mut b = V1.to_vec();
        for r in recs {
            let (t, p) = match r {
                Rec::SubNew(s) => (1, s.encode_to_vec()),
                Rec::SubUpdate(s) => (2, s.encode_to_vec()),
                Rec::SubDelete(id) => (3, crate::proto::SubStateDelete { id: *id }.encode_to_vec()),
                Rec::SubAck(id, seqno) => (
                    4,
                    SubStateUpdate {
                        id: *id,
                        seqno: *seqno,
                    }
                    .encode_to_vec(),
                ),
                Rec::SubPending(id, seqno) => (
                    5,
                    SubStateUpdate {
                        id: *id,
                        seqno: *seqno,
                    }
                    .encode_to_vec(),
                ),
                Rec::ClientAdd(c) => (1, c.encode_to_vec()),
                Rec::ClientDelete(id) => (2, ClientDelete { id: id.clone() }.encode_to_vec()),
            };
            b.extend(record_with(&p, (t << 24) | p.len() as u32, &self.crc));
        }
        fs::write(path, b).unwrap();
    }

    pub(crate) fn clients(&self, recs: &[Rec]) -> &Self {
        self.log(&self.root.join("clients.dat"), recs);
        self
    }

    pub(crate) fn client(id: &str) -> ClientInfo {
        ClientInfo {
            id: id.into(),
            hb_inbox: format!("_INBOX.hb.{id}"),
            protocol: 1,
            ping_interval: 5,
            ping_max_out: 3,
            ..Default::default()
        }
    }

    pub(crate) fn channel_dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn subs(&self, channel: &str, recs: &[Rec]) -> &Self {
        let d = self.channel_dir(channel);
        self.log(&d.join("subs.dat"), recs);
        self
    }

    /// Writes slice `n` of `channel` holding `msgs` (data file, and the index unless
    /// `index` is false). Returns the offsets of the records in the data file.
    pub(crate) fn slice(&self, channel: &str, n: u64, msgs: &[MsgProto], index: bool) -> Vec<u64> {
        let d = self.channel_dir(channel);
        let mut dat = V1.to_vec();
        let mut idx = V1.to_vec();
        let mut offsets = Vec::new();
        for m in msgs {
            let p = m.encode_to_vec();
            let e = IdxEntry {
                seq: m.sequence,
                offset: dat.len() as u64,
                timestamp: m.timestamp,
                size: p.len() as u32,
            };
            offsets.push(e.offset);
            dat.extend(record_with(&p, p.len() as u32, &self.crc));
            idx.extend(index_entry(&e, &self.crc));
        }
        fs::write(d.join(format!("msgs.{n}.dat")), dat).unwrap();
        if index {
            fs::write(d.join(format!("msgs.{n}.idx")), idx).unwrap();
        }
        offsets
    }

    pub(crate) fn msg(channel: &str, seq: u64) -> MsgProto {
        MsgProto {
            sequence: seq,
            subject: channel.into(),
            reply: if seq.is_multiple_of(3) {
                format!("reply.{seq}")
            } else {
                String::new()
            },
            data: bytes::Bytes::from(format!("payload {channel} #{seq}").into_bytes()),
            timestamp: 1_700_000_000_000_000_000 + seq as i64 * 1_000,
            ..Default::default()
        }
    }

    pub(crate) fn msgs(channel: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<MsgProto> {
        seqs.map(|s| Self::msg(channel, s)).collect()
    }

    pub(crate) fn durable(id: u64, client: &str, name: &str, last_sent: u64) -> SubState {
        SubState {
            id,
            client_id: client.into(),
            inbox: format!("_INBOX.{client}.{id}"),
            ack_inbox: format!("_INBOX.ack.{id}"),
            max_in_flight: 1024,
            ack_wait_in_secs: 30,
            durable_name: name.into(),
            last_sent,
            is_durable: true,
            ..Default::default()
        }
    }
}
