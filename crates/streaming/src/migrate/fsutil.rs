//! Filesystem steps of the migration: fsync of files, directories and whole trees, and the
//! store directory lock (the same `.rootdir.lck` and `flock` both servers use, so a running
//! server, ours or the reference, and a migration exclude each other).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::error::{MigrateError, io_at};

pub(crate) const LOCK_FILE: &str = ".rootdir.lck";

/// fsync of a directory: entries created, renamed or removed in it become durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// fsync of every file and directory under `root` (children before their directory).
pub(crate) fn sync_tree(root: &Path) -> Result<(), MigrateError> {
    for e in std::fs::read_dir(root).map_err(io_at(root))? {
        let e = e.map_err(io_at(root))?;
        let p = e.path();
        if e.file_type().map_err(io_at(&p))?.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_at(&p))?;
        }
    }
    sync_dir(root)
}

/// Writes `content` to `path` durably: a temporary file, fsynced, renamed over `path`, and the
/// directory fsynced.
pub(crate) fn write_durably(path: &Path, content: &[u8]) -> Result<(), MigrateError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("new");
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(content).map_err(io_at(&tmp))?;
    f.sync_all().map_err(io_at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    sync_dir(dir)
}

/// Takes the directory lock of `dir`. Without `create`, a missing lock file means nobody
/// holds it (`None`): the reading then leaves the directory untouched.
pub(crate) fn lock_dir(dir: &Path, create: bool) -> Result<Option<File>, MigrateError> {
    let path = dir.join(LOCK_FILE);
    let f = match OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MigrateError::io(&path, e)),
    };
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Err(MigrateError::Locked {
            dir: dir.to_owned(),
            lock: path,
        }),
        Err(TryLockError::Error(e)) => Err(MigrateError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_excludes_a_second_holder_and_a_missing_file_is_not_created() {
        let d = tempfile::tempdir().unwrap();
        assert!(lock_dir(d.path(), false).unwrap().is_none());
        assert!(!d.path().join(LOCK_FILE).exists());
        let held = lock_dir(d.path(), true).unwrap();
        assert!(held.is_some());
        assert!(matches!(
            lock_dir(d.path(), false),
            Err(MigrateError::Locked { .. })
        ));
        drop(held);
        assert!(lock_dir(d.path(), false).unwrap().is_some());
    }

    #[test]
    fn durable_write_and_tree_sync() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        std::fs::create_dir_all(&p).unwrap();
        write_durably(&p.join("f"), b"one").unwrap();
        write_durably(&p.join("f"), b"two").unwrap();
        assert_eq!(std::fs::read(p.join("f")).unwrap(), b"two");
        assert!(!p.join("f.new").exists());
        sync_tree(d.path()).unwrap();
    }
}
