//! One fuzz input as the files of a store directory.
//!
//! ```text
//! input  := flags (u8) entry*
//! entry  := tag (u8) | length (u16 LE) | body        a length past the end takes what is left
//! tag    := kind (low 3 bits, modulo 5) | channel (bit 3: "b", else "a")
//! kind   := 0 server.dat | 1 clients.dat | 2 channels/<ch>/subs.dat
//!         | 3 channels/<ch>/msgs.<N>.dat | 4 channels/<ch>/msgs.<N>.idx
//!            (kinds 3 and 4: the body starts with N as u64 LE, then the contents)
//! flags  := bit 0 full recovery check | bit 1 small count/size limits | bit 2 an age limit
//! ```
//!
//! A later entry for the same file replaces an earlier one. [`fix_crcs`] rewrites the CRC of
//! every record and index entry that fits in its file, so that mutations of the variant
//! target get past the checksums to the parsing behind them.

use std::path::{Path, PathBuf};

/// The files of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFiles {
    pub flags: u8,
    pub files: Vec<File>,
}

/// One file: which, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub kind: Kind,
    pub contents: Vec<u8>,
}

/// Which file of the store directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Clients,
    Subs { channel: u8 },
    Segment { channel: u8, first: u64 },
    Index { channel: u8, first: u64 },
}

pub const FULL_CHECK: u8 = 1;
pub const SMALL_LIMITS: u8 = 2;
pub const AGE_LIMIT: u8 = 4;

/// The channels an input can name.
pub const CHANNELS: [&str; 2] = ["a", "b"];

impl Kind {
    /// The file's path under the store directory `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        let ch = |c: u8| root.join("channels").join(CHANNELS[usize::from(c & 1)]);
        match *self {
            Kind::Server => root.join("server.dat"),
            Kind::Clients => root.join("clients.dat"),
            Kind::Subs { channel } => ch(channel).join("subs.dat"),
            Kind::Segment { channel, first } => ch(channel).join(format!("msgs.{first}.dat")),
            Kind::Index { channel, first } => ch(channel).join(format!("msgs.{first}.idx")),
        }
    }

    fn tag(&self) -> u8 {
        match *self {
            Kind::Server => 0,
            Kind::Clients => 1,
            Kind::Subs { channel } => 2 | (channel & 1) << 3,
            Kind::Segment { channel, .. } => 3 | (channel & 1) << 3,
            Kind::Index { channel, .. } => 4 | (channel & 1) << 3,
        }
    }
}

impl StoreFiles {
    /// Reads an input (never fails: every byte string is some set of files).
    pub fn parse(data: &[u8]) -> StoreFiles {
        let Some((&flags, mut rest)) = data.split_first() else {
            return StoreFiles {
                flags: 0,
                files: Vec::new(),
            };
        };
        let mut files: Vec<File> = Vec::new();
        while rest.len() >= 3 {
            let tag = rest[0];
            let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
            let body = &rest[3..];
            let body_len = len.min(body.len());
            let (mut body, tail) = body.split_at(body_len);
            rest = tail;
            let channel = (tag >> 3) & 1;
            let mut first = || {
                let mut n = [0u8; 8];
                let k = body.len().min(8);
                n[..k].copy_from_slice(&body[..k]);
                body = &body[k..];
                u64::from_le_bytes(n)
            };
            let kind = match (tag & 7) % 5 {
                0 => Kind::Server,
                1 => Kind::Clients,
                2 => Kind::Subs { channel },
                3 => Kind::Segment {
                    channel,
                    first: first(),
                },
                _ => Kind::Index {
                    channel,
                    first: first(),
                },
            };
            files.retain(|f| f.kind != kind);
            files.push(File {
                kind,
                contents: body.to_vec(),
            });
        }
        StoreFiles { flags, files }
    }

    /// The input that [`parse`](Self::parse) reads back as `self` (contents longer than
    /// 64 KiB are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        for f in &self.files {
            let mut body = Vec::new();
            if let Kind::Segment { first, .. } | Kind::Index { first, .. } = f.kind {
                body.extend_from_slice(&first.to_le_bytes());
            }
            body.extend_from_slice(&f.contents);
            body.truncate(usize::from(u16::MAX));
            out.push(f.kind.tag());
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    /// Writes the files under `root` (creating the channel directories).
    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        for f in &self.files {
            let p = f.kind.path(root);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&p, &f.contents)?;
        }
        Ok(())
    }

    /// Rewrites every checksum that covers bytes inside its file.
    pub fn fix_crcs(&mut self) {
        for f in &mut self.files {
            match f.kind {
                Kind::Server | Kind::Clients | Kind::Subs { .. } => {
                    fix_records(&mut f.contents, 8, true)
                }
                Kind::Segment { .. } => fix_records(&mut f.contents, 16, false),
                Kind::Index { .. } => fix_index(&mut f.contents),
            }
        }
    }
}

/// Record files: `length (u32; typed: type << 24 | length) | CRC-32 | payload`.
fn fix_records(b: &mut [u8], header: usize, typed: bool) {
    let mut pos = header;
    while pos + 8 <= b.len() {
        let word = u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
        let size = if typed { word & 0x00FF_FFFF } else { word } as usize;
        let Some(end) = (pos + 8).checked_add(size).filter(|&e| e <= b.len()) else {
            return;
        };
        let crc = crc32(&b[pos + 8..end]);
        b[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Index files: 32-byte entries after a 16-byte header, the last 4 bytes the CRC of the 28
/// before.
fn fix_index(b: &mut [u8]) {
    let mut pos = 16;
    while pos + 32 <= b.len() {
        let crc = crc32(&b[pos..pos + 28]);
        b[pos + 28..pos + 32].copy_from_slice(&crc.to_le_bytes());
        pos += 32;
    }
}

fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}
