//! Recovery from a write error without a restart. After an I/O error (a
//! full disk, EIO) redb refuses every later write ("Previous I/O error")
//! until the file is opened again. The store remembers the first such
//! error (so a full disk keeps being reported as one: 452, not 451), and
//! `reopen` swaps in a fresh handle: it takes the old one away (callers
//! meanwhile get the remembered error, at once, never a wait), waits for
//! the transactions still open on it to end, opens the file again (redb
//! repairs what the failed commit left) and proves a write commits.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::Database;

use super::{Backend, Store, StoreError};
use crate::locks::{Recover, RecoverRw};

/// How long `reopen` waits for open transactions of the old handle.
const DRAIN: Duration = Duration::from_secs(2);

impl Store {
    /// The I/O error that stopped writes, while the store has not been
    /// reopened since.
    pub fn failure(&self) -> Option<StoreError> {
        self.shared.failure.lock_or_recover().clone()
    }

    /// Remembers `e` if it stops writes, and says it as the first such
    /// error did: once the disk was full, "Previous I/O error" still means
    /// a full disk.
    pub fn failed(&self, e: StoreError) -> StoreError {
        if !e.needs_reopen() {
            return e;
        }
        let mut failure = self.shared.failure.lock_or_recover();
        match &*failure {
            Some(first) => first.clone(),
            None => {
                *failure = Some(e.clone());
                e
            }
        }
    }

    /// The error callers get while the store refuses writes.
    pub fn unavailable_error(&self) -> StoreError {
        self.unavailable()
    }

    /// The error callers get while there is no handle (being reopened).
    pub(super) fn unavailable(&self) -> StoreError {
        self.failure()
            .unwrap_or_else(|| StoreError::Io("the store is being reopened".into()))
    }

    /// Opens the store file again after an I/O error, in this process. On
    /// success the store takes writes again and `failure` is cleared; on
    /// failure (the disk still full, say) it stays closed, answering with
    /// the remembered error, and can be tried again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let old = self.shared.db.write_or_recover().take();
        if let Some(old) = old
            && let Err(old) = drain(old)
        {
            // Someone holds it for long (a backup): try again later.
            *self.shared.db.write_or_recover() = Some(old);
            return Err(StoreError::Io(
                "cannot reopen the store: its handle is still in use".into(),
            ));
        }
        let db = self.open_again()?;
        Self::create_tables(&db)?;
        *self.shared.db.write_or_recover() = Some(Arc::new(db));
        *self.shared.failure.lock_or_recover() = None;
        Ok(())
    }

    /// The existing file (never a new one: a store that vanished is not
    /// replaced by an empty one), once the old handle has let go of it.
    fn open_again(&self) -> Result<Database, StoreError> {
        let deadline = Instant::now() + DRAIN;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", self.path.display())))?;
            let inner = redb::backends::FileBackend::new(file)
                .map_err(|e| Self::open_error(e, &self.path))?;
            let opened = match &self.shared.backend {
                Backend::File => Database::builder().create_with_backend(inner),
                #[cfg(feature = "testing")]
                Backend::Faulty(switch) => Database::builder()
                    .create_with_backend(super::fault::FaultyBackend::new(inner, switch.clone())),
            };
            match opened.map_err(|e| Self::open_error(e, &self.path)) {
                Ok(db) => return Ok(db),
                // Transactions of the old handle still hold the file.
                Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Drops the old handle once no one else holds it (a store call holds it
/// for one statement); gives it back after `DRAIN`.
fn drain(mut old: Arc<Database>) -> Result<(), Arc<Database>> {
    let deadline = Instant::now() + DRAIN;
    loop {
        match Arc::try_unwrap(old) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(back) if Instant::now() < deadline => {
                old = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(back) => return Err(back),
        }
    }
}
