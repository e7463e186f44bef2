//! Finding damage the running store cannot see. redb keeps every page it
//! has read or written in its cache (up to 1 GiB) and checks a page's
//! checksum only when it repairs a file, so a page damaged on disk under a
//! running server (a bad sector, a stray write) goes unnoticed: the server
//! reads its cached copy, and only the next start, a cache miss or a
//! backup meets the damage.
//!
//! `Store::verify` checks the checksum of every page of the newest commit
//! as the file holds it, not as the cache does: it opens the file a
//! second time, through a backend that keeps whatever that open writes in
//! memory (the open's integrity check is the checksum walk; it is stopped
//! before it would rebuild anything). The walk reads the file as it was at
//! one moment between two commits: every store handle writes through a
//! `Watched` backend, which, while a walk runs, keeps the old contents of
//! each block before the running store overwrites it, and the walk reads
//! those. So commits go on during a walk, and none is ever taken for
//! damage.
//!
//! Only live data is checked: garbage in free space is not damage.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{BackendError, Database, DatabaseError, StorageBackend, StorageError};

use super::{Store, StoreError};
use crate::locks::Recover;

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every page of the newest commit matches its checksum.
    Intact,
    /// The file holds damage: where, and what the store library said.
    Damaged(String),
}

/// The cache of the second handle: the walk reads each page once.
const VERIFY_CACHE: usize = 4 * 1024 * 1024;
/// The unit in which old contents are kept and the second open's writes held.
const BLOCK: u64 = 4096;

/// How the repair callback says where the walk got.
const WALKING: u8 = 0;
const PASSED: u8 = 1;
const FAILED: u8 = 2;

impl Store {
    /// Checks every page of the newest commit, as the file holds it.
    /// Err: it could not tell (the store is being reopened, the file
    /// cannot be read).
    pub fn verify(&self) -> Result<Verdict, StoreError> {
        let handle = self.db()?;
        let _one = handle.watch.walking.lock_or_recover();
        let snapshot = {
            // No commit is under way while the moment is taken: the file
            // then holds the newest commit whole (a commit writes its
            // header before all its pages are in the file).
            let _hold = handle.begin_write().map_err(|e| self.failed(e.into()))?;
            handle.watch.freeze().map_err(|e| self.read_error(e))?
        };
        self.walk(ReadThrough::new(snapshot))
    }

    fn read_error(&self, e: std::io::Error) -> StoreError {
        StoreError::Io(format!("cannot read {}: {e}", self.path.display()))
    }

    /// Opens the file again through `backend` with an integrity check,
    /// stopped once the newest commit's checksums are known.
    fn walk(&self, backend: ReadThrough) -> Result<Verdict, StoreError> {
        let state = Arc::new(AtomicU8::new(WALKING));
        let seen = state.clone();
        let mut builder = Database::builder();
        builder
            .set_cache_size(VERIFY_CACHE)
            .set_check_integrity_on_open(true)
            .set_repair_callback(move |session| {
                // 0.0: the walk starts. 0.3: the newest commit failed its
                // checksums (redb would fall back to the one before). 0.6:
                // it passed (redb would rebuild the allocator next).
                let p = session.progress();
                if p >= 0.6 {
                    let _ =
                        seen.compare_exchange(WALKING, PASSED, Ordering::SeqCst, Ordering::SeqCst);
                    session.abort();
                } else if p >= 0.3 {
                    seen.store(FAILED, Ordering::SeqCst);
                    session.abort();
                }
            });
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            builder.create_with_backend(backend)
        }));
        let what = |e: &dyn fmt::Display| format!("{} ({e})", self.path.display());
        match opened {
            Err(panic) => Ok(Verdict::Damaged(what(
                &crate::telemetry::health::panic_message(&*panic),
            ))),
            // Nothing ever committed: nothing to check.
            Ok(Ok(_)) => Ok(Verdict::Intact),
            Ok(Err(DatabaseError::RepairAborted)) => match state.load(Ordering::SeqCst) {
                PASSED => Ok(Verdict::Intact),
                FAILED => Ok(Verdict::Damaged(what(
                    &"a page does not match its checksum",
                ))),
                _ => Err(StoreError::Failed("the verification stopped early".into())),
            },
            Ok(Err(DatabaseError::Storage(StorageError::Corrupted(e)))) => {
                Ok(Verdict::Damaged(what(&e)))
            }
            Ok(Err(e)) => Err(StoreError::Failed(format!(
                "cannot verify {}: {e}",
                self.path.display()
            ))),
        }
    }
}

/// Verifies the store every `every` (less often if a walk takes long: at
/// most a twentieth of the time goes to it) until `stop`. The first damage
/// found marks the store damaged (`Store::mark_damaged`): it takes no
/// write after that, so every message is answered 451 and readiness is
/// red, until the file is restored and the server restarted.
pub async fn keep_verifying(
    store: Store,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let mut wait = every;
        // Not while writes fail: the store is being reopened.
        if store.failure().is_none() {
            let started = Instant::now();
            let s = store.clone();
            let found = tokio::task::spawn_blocking(move || s.verify()).await;
            let took = started.elapsed();
            wait = every.max(took * 20);
            match found {
                Ok(Ok(Verdict::Intact)) => {
                    tracing::trace!(event = "store.verified", took_ms = took.as_millis() as u64)
                }
                Ok(Ok(Verdict::Damaged(what))) => {
                    let e = store.mark_damaged(what);
                    tracing::error!(event = "store.damaged", error = %e, "every message is refused (451) and readiness is red until the store is restored");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(event = "store.verify_failed", error = %e, "could not verify the store file")
                }
                Err(e) => {
                    tracing::warn!(event = "store.verify_failed", error = %e, "could not verify the store file")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The store file's backend as the running store uses it, and what a
/// walk reads through `Watch::freeze`.
pub(crate) struct Watch {
    inner: Box<dyn StorageBackend>,
    /// While a walk runs: the file's length and the old contents of every
    /// block written since the moment it reads.
    kept: Mutex<Option<Kept>>,
    /// One walk at a time.
    walking: Mutex<()>,
}

struct Kept {
    len: u64,
    blocks: HashMap<u64, Box<[u8]>>,
    /// An old block could not be read: the walk cannot tell (and the
    /// store's write goes on regardless).
    lost: bool,
}

/// Wraps `inner`: the store writes through the first, walks read through
/// the second.
pub(crate) fn watch(inner: impl StorageBackend) -> (Watched, Arc<Watch>) {
    let watch = Arc::new(Watch {
        inner: Box::new(inner),
        kept: Mutex::new(None),
        walking: Mutex::new(()),
    });
    (Watched(watch.clone()), watch)
}

impl Watch {
    /// The file as it is now, for a walk, while the returned snapshot
    /// lives. The caller makes sure no commit is under way.
    /// The caller holds `walking`.
    fn freeze(self: &Arc<Self>) -> std::io::Result<Snapshot> {
        let len = self.inner.len()?;
        *self.kept.lock_or_recover() = Some(Kept {
            len,
            blocks: HashMap::new(),
            lost: false,
        });
        Ok(Snapshot {
            watch: self.clone(),
            len,
        })
    }

    /// Keeps the old contents of the blocks of `from..to` not kept yet. A
    /// block that cannot be read spoils the walk, never the store's write.
    fn keep(&self, kept: &mut Kept, from: u64, to: u64) {
        let end = to.min(kept.len);
        let mut block = from / BLOCK;
        while !kept.lost && block * BLOCK < end {
            if !kept.blocks.contains_key(&block) {
                let start = block * BLOCK;
                let mut old = vec![0u8; BLOCK as usize].into_boxed_slice();
                let n = (kept.len - start).min(BLOCK) as usize;
                match self.inner.read(start, &mut old[..n]) {
                    Ok(()) => {
                        kept.blocks.insert(block, old);
                    }
                    Err(_) => {
                        kept.lost = true;
                        kept.blocks.clear();
                    }
                }
            }
            block += 1;
        }
    }
}

/// The file at one moment: read through it while it lives.
struct Snapshot {
    watch: Arc<Watch>,
    len: u64,
}

impl Snapshot {
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let kept = self.watch.kept.lock_or_recover();
        let Some(kept) = kept.as_ref().filter(|k| !k.lost) else {
            return Err(std::io::Error::other(
                "an old block could not be kept for the verification",
            ));
        };
        let mut at = offset;
        let mut done = 0;
        while done < out.len() {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(out.len() - done);
            match kept.blocks.get(&block) {
                Some(old) => out[done..done + n].copy_from_slice(&old[within..within + n]),
                None => self.watch.inner.read(at, &mut out[done..done + n])?,
            }
            at += n as u64;
            done += n;
        }
        Ok(())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        *self.watch.kept.lock_or_recover() = None;
    }
}

/// The running store's backend: `inner`, keeping old contents for a walk.
pub(crate) struct Watched(Arc<Watch>);

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

type IoResult<T> = Result<T, std::io::Error>;

impl StorageBackend for Watched {
    fn len(&self) -> IoResult<u64> {
        self.0.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.0.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        let mut kept = self.0.kept.lock_or_recover();
        if let Some(kept) = kept.as_mut() {
            // A shrink: what it cuts off is kept first.
            self.0.keep(kept, len, u64::MAX);
        }
        self.0.inner.set_len(len)
    }
    fn sync_data(&self) -> IoResult<()> {
        self.0.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        // Held across the write: a walk reads either the kept block or the
        // file before this write, never the file after it.
        let mut kept = self.0.kept.lock_or_recover();
        if let Some(kept) = kept.as_mut() {
            self.0.keep(kept, offset, offset + data.len() as u64);
        }
        self.0.inner.write(offset, data)
    }
    fn close(&self) -> IoResult<()> {
        self.0.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.inner.query_lock_range(start, end)
    }
}

/// What the walk's open sees: the snapshot, with its own writes held in
/// memory. Locks are granted without locking: the file is never written,
/// and the running store holds the real lock.
struct ReadThrough {
    snapshot: Snapshot,
    written: Mutex<Written>,
}

struct Written {
    blocks: BTreeMap<u64, Box<[u8]>>,
    len: u64,
}

impl ReadThrough {
    fn new(snapshot: Snapshot) -> Self {
        let len = snapshot.len;
        Self {
            snapshot,
            written: Mutex::new(Written {
                blocks: BTreeMap::new(),
                len,
            }),
        }
    }

    /// `out` from the snapshot at `offset`; zeros past its end.
    fn read_snapshot(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        let have = self
            .snapshot
            .len
            .saturating_sub(offset)
            .min(out.len() as u64) as usize;
        self.snapshot.read(offset, &mut out[..have])?;
        out[have..].fill(0);
        Ok(())
    }
}

impl fmt::Debug for ReadThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadThrough").finish_non_exhaustive()
    }
}

impl StorageBackend for ReadThrough {
    fn len(&self) -> IoResult<u64> {
        Ok(self.written.lock_or_recover().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        let written = self.written.lock_or_recover();
        if offset + out.len() as u64 > written.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the store file",
            ));
        }
        let mut at = offset;
        let mut done = 0;
        while done < out.len() {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(out.len() - done);
            match written.blocks.get(&block) {
                Some(data) => out[done..done + n].copy_from_slice(&data[within..within + n]),
                None => self.read_snapshot(at, &mut out[done..done + n])?,
            }
            at += n as u64;
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.written.lock_or_recover().len = len;
        Ok(())
    }

    fn sync_data(&self) -> IoResult<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        let mut written = self.written.lock_or_recover();
        let mut at = offset;
        let mut done = 0;
        while done < data.len() {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(data.len() - done);
            let target = match written.blocks.entry(block) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut fresh = vec![0u8; BLOCK as usize].into_boxed_slice();
                    self.read_snapshot(block * BLOCK, &mut fresh)?;
                    e.insert(fresh)
                }
            };
            target[within..within + n].copy_from_slice(&data[done..done + n]);
            at += n as u64;
            done += n;
        }
        written.len = written.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn try_lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }
    fn lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }
    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }
    fn query_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::queue::{Envelope, QueueEntry, QueueId, QueueWrite};
    use std::os::unix::fs::FileExt;

    fn insert(id: u64, body: Vec<u8>) -> QueueWrite {
        let envelope = Envelope::for_tests(body.len() as u64);
        QueueWrite::Insert {
            entry: QueueEntry::new(QueueId(id), envelope),
            body,
        }
    }

    fn body(i: u64) -> Vec<u8> {
        format!("marker-{i:04}-").repeat(2000).into_bytes()
    }

    /// Overwrites 8 KiB at the first page holding `needle`.
    fn damage(path: &std::path::Path, needle: &[u8]) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the marker is in the file") as u64;
        let page = at & !(BLOCK - 1);
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0xA5; 8192], page).unwrap();
        page
    }

    #[test]
    fn a_healthy_store_verifies_and_a_damaged_page_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        assert_eq!(store.verify().unwrap(), Verdict::Intact);
        for i in 0..20 {
            store.queue_apply(&[insert(i, body(i))]).unwrap();
        }
        assert_eq!(store.verify().unwrap(), Verdict::Intact);
        // The running store has the page cached: it does not notice.
        damage(store.path(), b"marker-0011-");
        assert!(store.queue_body(QueueId(11)).unwrap().unwrap() == body(11));
        match store.verify().unwrap() {
            Verdict::Damaged(what) => assert!(what.contains("mailwarden.redb"), "{what}"),
            other => panic!("not found: {other:?}"),
        }
    }

    #[test]
    fn garbage_in_free_space_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        store.queue_apply(&[insert(1, body(1))]).unwrap();
        store
            .queue_apply(&[QueueWrite::Remove(QueueId(1))])
            .unwrap();
        // Twice more: the freed pages are released.
        store.meta_set("k", b"1").unwrap();
        store.meta_set("k", b"2").unwrap();
        damage(store.path(), b"marker-0001-");
        assert_eq!(store.verify().unwrap(), Verdict::Intact);
    }

    #[test]
    fn commits_running_meanwhile_are_never_taken_for_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    store.queue_apply(&[insert(i, body(i))]).unwrap();
                    if i >= 5 {
                        store
                            .queue_apply(&[QueueWrite::Remove(QueueId(i - 5))])
                            .unwrap();
                    }
                    i += 1;
                }
                i
            })
        };
        let started = Instant::now();
        let mut passes = 0;
        while started.elapsed() < Duration::from_secs(3) {
            assert_eq!(store.verify().unwrap(), Verdict::Intact, "pass {passes}");
            passes += 1;
        }
        stop.store(true, Ordering::SeqCst);
        let commits = writer.join().unwrap();
        println!("{passes} walks, {commits} commits meanwhile");
        assert!(
            passes > 5 && commits > 20,
            "{passes} passes, {commits} commits"
        );
    }
}
