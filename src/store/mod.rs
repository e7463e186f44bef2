//! The embedded store: one redb file in the data folder holding accounts and
//! the spool. A commit returns only after fsync (`Durability::Immediate`).
//! After an I/O error redb refuses every write until the file is opened
//! again: `reopen` does that in the running process.
//!
//! The rest of the server sees this through the `Authenticator` and `Spool`
//! seams, so a shared store can replace it without touching the protocol.

mod accounts;
mod backup;
pub mod check;
pub mod identity;
pub mod record;

pub use backup::BackupSummary;
mod aliases;
#[cfg(feature = "testing")]
pub mod fault;
pub mod postgres;
mod queue;
mod reopen;
pub mod shared;
pub mod verify;

pub use shared::{Change, PolicyLock, SharedData, SharedStore, ToShared};

pub use accounts::AlsoWrite;
pub use aliases::AliasChange;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, TableDefinition};

use crate::locks::RecoverRw;

pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
pub(crate) const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// Small facts about the store itself (e.g. the id of the server key).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The scorer's per-account windows, written with the spool inserts.
pub(crate) const POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("policy");
/// The delivery schedule: (next attempt, id) of every queued (not held)
/// message, so the queue runner finds what is due without reading the
/// whole queue. Derived from `queue`: built when a store opens without it
/// (an older store, a restored backup), then kept by every queue write.
pub(crate) const SCHEDULE: TableDefinition<(u64, u64), ()> = TableDefinition::new("schedule");
/// META key present once `schedule` matches `queue`.
pub(crate) const SCHEDULE_BUILT: &str = "schedule_built";
/// Normalised alias → primary address of its account.
pub(crate) const ALIASES: TableDefinition<&str, &str> = TableDefinition::new("aliases");

pub const STORE_FILE: &str = "mailwarden.redb";

/// Why a store operation failed, in the terms the SMTP replies need. It is
/// `Clone` (one failed group commit answers every writer in it), so the
/// library's error is kept as its text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: `452 4.3.1`.
    #[error("store: no space left on device ({0})")]
    NoSpace(String),
    /// The disk failed (or failed before: redb then refuses every write
    /// until the store is reopened): `451 4.3.0`.
    #[error("store: I/O error ({0})")]
    Io(String),
    /// Another process holds the store open.
    #[error("store {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// The store does not exist and was not to be created.
    #[error("no store at {}", .0.display())]
    Missing(PathBuf),
    /// The file holds damage (a page of the newest commit that fails its
    /// checksum, found by `verify`): the store takes no write until it is
    /// restored. `451 4.3.0`. (An error the library calls corruption in a
    /// running store, such as the state a panic in a commit leaves, is
    /// `Failed`: only the file's checksums say the file is damaged.)
    #[error(
        "store: the file is damaged: {0}; stop the server and restore the last backup with `mailwarden restore`"
    )]
    Damaged(String),
    /// Anything else: `451 4.3.0`.
    #[error("store: {0}")]
    Failed(String),
}

/// Runs a store-library call on `path`, turning a panic inside the library
/// (a damaged file) into an error that names the file and what to do.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = crate::telemetry::health::panic_message(&*panic);
        Err(StoreError::Failed(format!(
            "the store file {} is damaged ({what}): restore the last backup with \
             `mailwarden restore`",
            path.display()
        )))
    })
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

impl StoreError {
    /// The store refuses writes after this until it is reopened.
    pub fn needs_reopen(&self) -> bool {
        matches!(self, Self::NoSpace(_) | Self::Io(_))
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match &e {
            redb::Error::Io(io) if is_no_space(io) => Self::NoSpace(e.to_string()),
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
                Self::Io(e.to_string())
            }
            _ => Self::Failed(e.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(format!("corrupt record: {e}"))
    }
}

#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    path: PathBuf,
}

/// What every clone of a `Store` sees: one database handle, replaced when
/// the store is reopened.
struct Shared {
    /// None while the store is being reopened (or could not be).
    db: RwLock<Option<Arc<Handle>>>,
    /// How the file is opened again.
    backend: Backend,
    /// The I/O error that stopped writes, until a reopen works.
    failure: Mutex<Option<StoreError>>,
}

/// An open database, and the watch on its file writes that lets
/// `verify` read the file as it was at one moment.
pub(crate) struct Handle {
    db: Database,
    watch: Arc<verify::Watch>,
}

impl std::ops::Deref for Handle {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Handle {
    /// Opens (or creates, in an empty file) the database on `backend`.
    fn open(backend: impl redb::StorageBackend, path: &Path) -> Result<Self, StoreError> {
        let (backend, watch) = verify::watch(backend);
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| Store::open_error(e, path))?;
        Ok(Self { db, watch })
    }
}

/// The disk under the store.
#[derive(Clone)]
enum Backend {
    File,
    #[cfg(feature = "testing")]
    Faulty(Arc<fault::FaultSwitch>),
}

impl Store {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(STORE_FILE)
    }

    /// Opens the store in `data_dir`, creating it (and the folder) if needed.
    /// Only `serve` creates a store.
    pub fn open_or_create(data_dir: &Path) -> Result<Self, StoreError> {
        let path = Self::path_in(data_dir);
        let file = Self::private_file(data_dir, &path)?;
        let backend =
            redb::backends::FileBackend::new(file).map_err(|e| Self::open_error(e, &path))?;
        let opened = guarded(&path, || Handle::open(backend, &path))?;
        guarded(&path.clone(), || Self::init(opened, path, Backend::File))
    }

    /// The store file, created 0600 in a 0700 folder when missing
    /// (`files`); an existing one keeps its mode (`serve` checks it).
    fn private_file(data_dir: &Path, path: &Path) -> Result<std::fs::File, StoreError> {
        crate::files::create_private_dir(data_dir).map_err(|e| {
            StoreError::Failed(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        crate::files::open_or_create_private(path)
            .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))
    }

    /// Like `open_or_create`, on a disk whose fsyncs `switch` can make fail.
    #[cfg(feature = "testing")]
    pub fn open_or_create_faulty(
        data_dir: &Path,
        switch: Arc<fault::FaultSwitch>,
    ) -> Result<Self, StoreError> {
        let path = Self::path_in(data_dir);
        let file = Self::private_file(data_dir, &path)?;
        let inner =
            redb::backends::FileBackend::new(file).map_err(|e| Self::open_error(e, &path))?;
        let db = Handle::open(fault::FaultyBackend::new(inner, switch.clone()), &path)?;
        Self::init(db, path, Backend::Faulty(switch))
    }

    /// Opens an existing store; never creates one.
    pub fn open_existing(data_dir: &Path) -> Result<Self, StoreError> {
        let path = Self::path_in(data_dir);
        match std::fs::metadata(&path) {
            // Not made a store here: only `serve` creates one.
            Ok(meta) if meta.len() == 0 => {
                return Err(StoreError::Failed(format!(
                    "cannot open {}: the file is empty, not a store",
                    path.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(path));
            }
            // An unreadable data folder is not a missing store.
            Err(e) => {
                return Err(StoreError::Failed(format!(
                    "cannot open {}: {e}",
                    path.display()
                )));
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
        let backend =
            redb::backends::FileBackend::new(file).map_err(|e| Self::open_error(e, &path))?;
        let db = guarded(&path, || Handle::open(backend, &path))?;
        guarded(&path.clone(), || Self::init(db, path, Backend::File))
    }

    /// The error names the store file (a bare "Permission denied" does
    /// not say where).
    fn open_error(e: redb::DatabaseError, path: &Path) -> StoreError {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
            other => match StoreError::from(redb::Error::from(other)) {
                StoreError::NoSpace(e) => StoreError::NoSpace(format!("{}: {e}", path.display())),
                StoreError::Failed(e) => {
                    StoreError::Failed(format!("cannot open {}: {e}", path.display()))
                }
                other => other,
            },
        }
    }

    fn init(db: Handle, path: PathBuf, backend: Backend) -> Result<Self, StoreError> {
        Self::create_tables(&db)?;
        Ok(Self {
            shared: Arc::new(Shared {
                db: RwLock::new(Some(Arc::new(db))),
                backend,
                failure: Mutex::new(None),
            }),
            path,
        })
    }

    /// Every table exists (one write transaction: it also proves the store
    /// takes a write).
    fn create_tables(db: &Database) -> Result<(), StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(ACCOUNTS)?;
        tx.open_table(QUEUE)?;
        tx.open_table(BODIES)?;
        tx.open_table(META)?;
        tx.open_table(POLICY)?;
        tx.open_table(ALIASES)?;
        queue::build_schedule_once(&tx)?;
        tx.commit()?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database handle; an error while the store is being reopened.
    pub(crate) fn db(&self) -> Result<Arc<Handle>, StoreError> {
        self.shared
            .db
            .read_or_recover()
            .clone()
            .ok_or_else(|| self.unavailable())
    }

    /// Commits `tx`; an I/O error is remembered (the store then refuses
    /// writes until it is reopened). Nothing is committed to a damaged
    /// store (`tx` is dropped: aborted).
    pub(crate) fn commit(&self, tx: redb::WriteTransaction) -> Result<(), StoreError> {
        if let Some(e @ StoreError::Damaged(_)) = self.failure() {
            return Err(e);
        }
        tx.commit().map_err(|e| self.failed(e.into()))
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// One account's scorer state.
    pub fn policy_state(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(POLICY)?;
        Ok(table.get(account)?.map(|v| v.value().to_vec()))
    }

    /// Every account's scorer state.
    pub fn policy_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(POLICY)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        tx.open_table(META)?.insert(key, value)?;
        self.commit(tx)
    }
}
