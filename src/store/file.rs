//! The SQLite store's file: one gateway process at a time, and noticing when the file is
//! deleted or replaced under the running gateway.
//!
//! SQLite itself does neither. Two processes on one file both run (each deduplicating
//! against records the other may not have committed yet, each claiming overdue reports),
//! and a process whose file was deleted keeps writing into the unlinked inode without an
//! error; everything it records from then on is gone at the next start. So the store takes
//! an exclusive advisory lock (`flock`, through fs4) on `<database>.lock` before it opens
//! the database, and holds it until it is closed; the lock file names the holder's pid for
//! the error the next process shows. The kernel drops the lock when the process ends,
//! however it ends, so a crashed gateway never leaves a stale lock behind.
//!
//! While running, the database file's identity (device and inode) is compared with what
//! the path names now: after every write the message path relies on, and periodically. A
//! file that is gone or another one is a problem the store reports (see `health.rs`) until
//! the path names the opened file again.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::StoreError;
use super::health::{Part, StoreHealth};

/// How often the file's identity is compared when nothing is written.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Device and inode: what a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        let meta = std::fs::metadata(path)?;
        Ok(Identity {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// The exclusive lock on a database, taken before it is opened.
#[derive(Debug)]
pub(super) struct Lock {
    path: PathBuf,
    file: File,
    identity: Identity,
}

impl Lock {
    /// Locks `database` for this process, or says who holds it.
    pub(super) fn acquire(database: &Path) -> Result<Lock, StoreError> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let failed = |source: std::io::Error| StoreError::Access {
            path: path.clone(),
            source: Arc::new(source),
        };
        // Not truncated on open: the holder's pid must survive until the lock is ours.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: database.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(failed(e)),
        }
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
        let identity = Identity::of(&path).map_err(failed)?;
        Ok(Lock {
            path,
            file,
            identity,
        })
    }
}

/// An open SQLite database file, with its lock.
#[derive(Debug)]
pub(super) struct DatabaseFile {
    path: PathBuf,
    identity: Identity,
    /// Taken (and so released) when the store is closed.
    lock: Mutex<Option<Lock>>,
}

impl DatabaseFile {
    /// The database at `path`, opened by this process under `lock`.
    pub(super) fn new(path: &Path, lock: Lock) -> Result<DatabaseFile, StoreError> {
        let identity = Identity::of(path).map_err(|source| StoreError::Access {
            path: path.to_path_buf(),
            source: Arc::new(source),
        })?;
        Ok(DatabaseFile {
            path: path.to_path_buf(),
            identity,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Whether the path still names the file that was opened (and its lock file); if not,
    /// what is wrong, for operators.
    pub(super) fn problem(&self) -> Option<String> {
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let lock = lock.as_ref()?;
        let files = [
            (&self.path, self.identity, "the database file"),
            (&lock.path, lock.identity, "the lock file"),
        ];
        for (path, opened, what) in files {
            let consequence = if what == "the database file" {
                "what the gateway records from now on would be lost at the next start"
            } else {
                "another gateway could open the same store"
            };
            match Identity::of(path) {
                Ok(now) if now == opened => {}
                Ok(_) => {
                    return Some(format!(
                        "{what} {} was replaced by another file while the gateway runs; \
                         {consequence}",
                        path.display()
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Some(format!(
                        "{what} {} was deleted while the gateway runs; {consequence}",
                        path.display()
                    ));
                }
                Err(e) => {
                    return Some(format!("cannot check {what} {}: {e}", path.display()));
                }
            }
        }
        None
    }

    /// Compares the identities and reports the result to `health`.
    pub(super) fn verify(&self, health: &StoreHealth) -> Result<(), StoreError> {
        match self.problem() {
            None => {
                health.answering(Part::File);
                Ok(())
            }
            Some(problem) => {
                health.set_failing(Part::File, problem.clone());
                Err(StoreError::File { problem })
            }
        }
    }

    /// Releases the lock: the store is closed.
    pub(super) fn release(&self) {
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(lock) = lock {
            // Unlocked when the file is closed; the pid stays as a hint that is never
            // trusted without the lock.
            drop(lock.file);
        }
    }

    /// Compares the identities every [`CHECK_INTERVAL`] until the store is closed or gone.
    pub(super) fn watch(file: Weak<DatabaseFile>, health: StoreHealth) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_INTERVAL).await;
                let Some(file) = file.upgrade() else { return };
                if file
                    .lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none()
                {
                    return;
                }
                let _ = file.verify(&health);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("gw.db");
        let first = Lock::acquire(&db).unwrap_or_else(|e| panic!("{e}"));
        // flock is per open file description: a second open in this process conflicts
        // just as another process's would.
        match Lock::acquire(&db) {
            Err(StoreError::Locked { holder, path }) => {
                assert_eq!(holder, Some(std::process::id()));
                assert_eq!(path, db);
            }
            other => panic!("second lock: {other:?}"),
        }
        std::fs::write(&db, b"").unwrap_or_else(|e| panic!("{e}"));
        let file = DatabaseFile::new(&db, first).unwrap_or_else(|e| panic!("{e}"));
        file.release();
        assert!(Lock::acquire(&db).is_ok(), "released lock still held");
    }

    #[test]
    fn deleted_and_replaced_files_are_problems() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("gw.db");
        std::fs::write(&db, b"one").unwrap_or_else(|e| panic!("{e}"));
        let lock = Lock::acquire(&db).unwrap_or_else(|e| panic!("{e}"));
        let file = DatabaseFile::new(&db, lock).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.problem(), None);

        // Moved away and back: the same file, no problem.
        let aside = dir.path().join("aside.db");
        std::fs::rename(&db, &aside).unwrap_or_else(|e| panic!("{e}"));
        let gone = file.problem().unwrap_or_default();
        assert!(gone.contains("was deleted"), "{gone}");
        std::fs::rename(&aside, &db).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.problem(), None);

        let other = dir.path().join("other.db");
        std::fs::write(&other, b"two").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&other, &db).unwrap_or_else(|e| panic!("{e}"));
        let replaced = file.problem().unwrap_or_default();
        assert!(replaced.contains("was replaced"), "{replaced}");
        assert!(replaced.contains(&db.display().to_string()), "{replaced}");
    }
}
