//! Recognising a reference store by what its files hold, not by their names: both stores
//! have a `server.dat` and a `clients.dat`, but the reference's start with its 4-byte file
//! version (1, little-endian) where ours start with a magic (`RSSV`, `RSCL`).

use std::io::Read;
use std::path::Path;

use super::error::{MigrateError, io_at};
use super::inplace::JOURNAL;
use super::records::FILE_VERSION;

/// Whether `dir` holds a nats-streaming-server file store: its `server.dat` (or, if there is
/// none, its `clients.dat`) starts with the reference's file version header. Our own store,
/// an empty or missing directory, and unrelated files give `false`.
pub fn is_reference_store(dir: impl AsRef<Path>) -> Result<bool, MigrateError> {
    let dir = dir.as_ref();
    for name in ["server.dat", "clients.dat"] {
        if let Some(v) = first_word(&dir.join(name))? {
            return Ok(v == Some(FILE_VERSION));
        }
    }
    Ok(false)
}

/// Whether `dir` holds the journal of an unfinished in-place migration (the store must not
/// be opened before [`migrate_in_place`](super::migrate_in_place) completes it).
pub fn has_pending_migration(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join(JOURNAL).exists()
}

/// `None` if the file does not exist; `Some(None)` if it is shorter than 4 bytes.
fn first_word(path: &Path) -> Result<Option<Option<u32>>, MigrateError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MigrateError::io(path, e)),
    };
    let mut b = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match f.read(&mut b[n..]).map_err(io_at(path))? {
            0 => return Ok(Some(None)),
            k => n += k,
        }
    }
    Ok(Some(Some(u32::from_le_bytes(b))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::testutil::RefBuilder;
    use crate::store::file::{FileStore, FileStoreOptions};
    use crate::store::{Store, StoreLimits};

    #[test]
    fn by_content() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_reference_store(d.path()).unwrap());
        assert!(!is_reference_store(d.path().join("missing")).unwrap());

        // Our store, initialised, with a client: not a reference store.
        let ours = d.path().join("ours");
        {
            let s = FileStore::open(&ours, FileStoreOptions::default(), StoreLimits::default())
                .unwrap();
            s.init(&Default::default()).unwrap();
            s.add_client(&RefBuilder::client("c")).unwrap();
        }
        assert!(!is_reference_store(&ours).unwrap());

        let r = d.path().join("ref");
        RefBuilder::new(&r).server("c1");
        assert!(is_reference_store(&r).unwrap());
        // Only clients.dat (server.dat never created).
        let r2 = d.path().join("ref2");
        RefBuilder::new(&r2).clients(&[]);
        assert!(is_reference_store(&r2).unwrap());

        // Names alone do not count.
        let fake = d.path().join("fake");
        std::fs::create_dir_all(&fake).unwrap();
        std::fs::write(fake.join("server.dat"), b"hello world").unwrap();
        std::fs::write(fake.join("clients.dat"), [1, 0, 0, 0]).unwrap();
        assert!(!is_reference_store(&fake).unwrap());
        std::fs::write(fake.join("server.dat"), [1, 0]).unwrap();
        assert!(!is_reference_store(&fake).unwrap());
    }
}
