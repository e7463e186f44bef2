//! Fault injection for the store's disk: a redb backend that can be told to
//! fail its next fsyncs, as a dying disk or a full one would. Tests use it to
//! prove that a failed commit is answered 451/452 and never 250, and that a
//! panic inside the store is caught and turns readiness red.

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// fsync fails with EIO.
    Io,
    /// fsync fails with ENOSPC.
    NoSpace,
    /// fsync panics, as a bug in the store library would: the thread
    /// committing dies.
    Panic,
}

/// Shared switch: flip it while the server runs.
#[derive(Debug, Default)]
pub struct FaultSwitch(AtomicU8);

impl FaultSwitch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, fault: Fault) {
        let v = match fault {
            Fault::None => 0,
            Fault::Io => 1,
            Fault::NoSpace => 2,
            Fault::Panic => 3,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    /// The error the next fsync gets, if any.
    pub fn fault(&self) -> Option<std::io::Error> {
        self.error()
    }

    fn error(&self) -> Option<std::io::Error> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(std::io::Error::from_raw_os_error(5)),
            2 => Some(std::io::Error::from_raw_os_error(28)),
            _ => None,
        }
    }
}

pub struct FaultyBackend {
    inner: FileBackend,
    switch: Arc<FaultSwitch>,
}

impl FaultyBackend {
    pub fn new(inner: FileBackend, switch: Arc<FaultSwitch>) -> Self {
        Self { inner, switch }
    }
}

impl fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend").finish_non_exhaustive()
    }
}

type IoResult<T> = Result<T, std::io::Error>;

impl StorageBackend for FaultyBackend {
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> IoResult<()> {
        if self.switch.0.load(Ordering::SeqCst) == 3 {
            panic!("injected panic in fsync (FaultSwitch)");
        }
        match self.switch.error() {
            Some(e) => Err(e),
            None => self.inner.sync_data(),
        }
    }
    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
