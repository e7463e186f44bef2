//! Recovery from a write error without a restart. After an I/O error (a
//! full disk, EIO) redb refuses every later write ("Previous I/O error")
//! until the file is opened again. The store remembers the first such
//! error (so a full disk keeps being reported as one: 452, not 451), and
//! `reopen` swaps in a fresh handle once the disk takes a write again (a
//! small file in the data folder, written and fsync'd): it takes the old
//! handle away (callers meanwhile get the remembered error, at once, never
//! a wait), waits for the transactions still open on it to end, opens the
//! file again (redb repairs what the failed commit left) and proves a
//! write commits. Until the disk takes that write, the old handle stays:
//! reads it has cached still work, and no repair runs for nothing.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::queue::QueueWrite;
use super::{Backend, Handle, Store, StoreError};
use crate::locks::{Recover, RecoverRw};

/// How long `reopen` waits for open transactions of the old handle.
const DRAIN: Duration = Duration::from_secs(2);
/// The disk must take this much (written and fsync'd) before a reopen is
/// tried: the repair and the first commit need room.
const SPACE_PROBE: usize = 1024 * 1024;
const SPACE_PROBE_FILE: &str = ".space-probe";

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
        if let StoreError::Damaged(what) = e {
            return self.mark_damaged(what);
        }
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

    /// Remembers that the file is damaged: from now on the store takes no
    /// write (a reopen does not mend it; a restore does), so the spool
    /// refuses every message and readiness is red. Reads still answer from
    /// what the store has cached. Returns the error writers get.
    pub fn mark_damaged(&self, what: String) -> StoreError {
        let mut failure = self.shared.failure.lock_or_recover();
        match &*failure {
            Some(e @ StoreError::Damaged(_)) => e.clone(),
            _ => {
                let e = StoreError::Damaged(what);
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

    /// Opens the store file again after an I/O error, in this process, and
    /// applies `first` before anyone else can see the new handle (removals
    /// of messages whose commit was refused but may have reached the disk).
    /// On success the store takes writes again and `failure` is cleared; on
    /// failure (the disk still full, say) the old handle stays, or none
    /// (callers get the remembered error), and it can be tried again.
    pub fn reopen(&self, first: &[QueueWrite]) -> Result<Vec<bool>, StoreError> {
        if let Some(e @ StoreError::Damaged(_)) = self.failure() {
            return Err(e);
        }
        self.disk_takes_writes()?;
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
        let tx = db.begin_write()?;
        let found = super::queue::write_queue(&tx, first.iter())?;
        tx.commit()?;
        *self.shared.db.write_or_recover() = Some(Arc::new(db));
        let mut failure = self.shared.failure.lock_or_recover();
        if !matches!(*failure, Some(StoreError::Damaged(_))) {
            *failure = None;
        }
        Ok(found)
    }

    /// Whether the disk under the store takes a write now.
    fn disk_takes_writes(&self) -> Result<(), StoreError> {
        #[cfg(feature = "testing")]
        if let Backend::Faulty(switch) = &self.shared.backend
            && let Some(e) = switch.fault()
        {
            return Err(self.failed(StoreError::from(redb::Error::Io(e))));
        }
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        let probe = dir.join(SPACE_PROBE_FILE);
        let written = crate::files::create_private(&probe).and_then(|mut file| {
            std::io::Write::write_all(&mut file, &vec![0u8; SPACE_PROBE])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| self.failed(StoreError::from(redb::Error::Io(e))))
    }

    /// The existing file (never a new one: a store that vanished is not
    /// replaced by an empty one), once the old handle has let go of it.
    fn open_again(&self) -> Result<Handle, StoreError> {
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
                Backend::File => Handle::open(inner, &self.path),
                #[cfg(feature = "testing")]
                Backend::Faulty(switch) => Handle::open(
                    super::fault::FaultyBackend::new(inner, switch.clone()),
                    &self.path,
                ),
            };
            match opened {
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
fn drain(mut old: Arc<Handle>) -> Result<(), Arc<Handle>> {
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

#[cfg(all(test, feature = "testing"))]
mod tests {

    use super::*;
    use crate::store::fault::{Fault, FaultSwitch};
    use crate::store::record::queue::{Envelope, QueueEntry, QueueId};

    fn insert(id: u64) -> QueueWrite {
        let envelope = Envelope::for_tests(1);
        QueueWrite::Insert {
            entry: QueueEntry::new(QueueId(id), envelope),
            body: b"x".to_vec(),
        }
    }

    #[test]
    fn a_store_that_failed_a_write_takes_writes_again_once_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        let store = Store::open_or_create_faulty(dir.path(), switch.clone()).unwrap();
        store.queue_apply(&[insert(1)]).unwrap();

        switch.set(Fault::NoSpace);
        let e = store.queue_apply(&[insert(2)]).unwrap_err();
        assert!(matches!(e, StoreError::NoSpace(_)), "{e:?}");
        // redb latched the error: the next write fails even with the disk
        // back, and is still told as a full disk.
        switch.set(Fault::None);
        let e = store.meta_set("k", b"1").unwrap_err();
        assert!(matches!(e, StoreError::NoSpace(_)), "{e:?}");
        assert!(store.failure().is_some());

        // Not while the disk still fails: the old handle stays for reads.
        switch.set(Fault::Io);
        assert!(store.reopen(&[]).is_err());
        assert!(store.queue_get(QueueId(1)).unwrap().is_some());

        // The refused insert's data reached the file (only its fsync
        // failed): the reopen takes it out before anyone sees it.
        switch.set(Fault::None);
        let found = store.reopen(&[QueueWrite::Remove(QueueId(2))]).unwrap();
        assert_eq!(found, [true]);
        assert!(store.failure().is_none());
        assert!(store.queue_get(QueueId(2)).unwrap().is_none());
        assert!(store.queue_get(QueueId(1)).unwrap().is_some());
        store.meta_set("k", b"2").unwrap();
        // Every clone sees the new handle.
        let other = store.clone();
        assert_eq!(other.meta_get("k").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_vanished_store_file_is_not_replaced_by_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        std::fs::remove_file(store.path()).unwrap();
        assert!(store.reopen(&[]).is_err());
        assert!(!store.path().exists());
    }
}
