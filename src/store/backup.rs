//! Backup and restore. A backup is itself a redb file, copied table by table
//! from one read transaction: a consistent snapshot, taken while serving.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ACCOUNTS, ALIASES, BODIES, META, POLICY, QUEUE, SCHEDULE_BUILT, Store, StoreError};

/// Copies every row of one table; returns how many.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut n = 0;
    for row in source.iter()? {
        let (k, v) = row?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct BackupSummary {
    pub accounts: u64,
    pub queued: u64,
}

fn copy_all(from: &Database, to: &Database) -> Result<BackupSummary, StoreError> {
    let read = from.begin_read()?;
    let write = to.begin_write()?;
    let accounts = copy_table(&read, &write, ACCOUNTS)?;
    copy_table(&read, &write, META)?;
    // The schedule is derived, not copied: the store built from this
    // copy builds it again when it opens.
    write.open_table(META)?.remove(SCHEDULE_BUILT)?;
    copy_table(&read, &write, POLICY)?;
    copy_table(&read, &write, ALIASES)?;
    let queued = copy_table(&read, &write, QUEUE)?;
    copy_table(&read, &write, BODIES)?;
    write.commit()?;
    Ok(BackupSummary { accounts, queued })
}

/// A new, empty redb file at `path`, mode 0600 whatever the umask: a
/// backup holds everything the store does.
fn create_private_db(path: &Path) -> Result<Database, StoreError> {
    let file = crate::files::create_new_private(path).map_err(|e| io_error("create", path, e))?;
    let backend =
        redb::backends::FileBackend::new(file).map_err(|e| StoreError::Failed(e.to_string()))?;
    Database::builder()
        .create_with_backend(backend)
        .map_err(|e| StoreError::Failed(e.to_string()))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Failed(format!("cannot {what} {}: {e}", path.display()))
}

impl Store {
    /// Writes a consistent copy of the store to `path` (replaced atomically).
    pub fn backup_to(&self, path: &Path) -> Result<BackupSummary, StoreError> {
        let tmp = path.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let summary = {
            let target = create_private_db(&tmp)?;
            copy_all(&*self.db()?, &target)?
        };
        std::fs::rename(&tmp, path).map_err(|e| io_error("write", path, e))?;
        Ok(summary)
    }

    /// Replaces the store in `data_dir` with the backup at `path`. The caller
    /// makes sure no server runs; the store's lock is checked too.
    pub fn restore(data_dir: &Path, path: &Path) -> Result<BackupSummary, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let backup = Database::open(path).map_err(|e| {
            StoreError::Failed(format!(
                "{} is not a mailwarden backup: {e}",
                path.display()
            ))
        })?;
        crate::files::create_private_dir(data_dir).map_err(|e| io_error("create", data_dir, e))?;
        let live = Self::path_in(data_dir);
        if live.exists() {
            // Fails with Locked while a server holds it.
            drop(Self::open_existing(data_dir)?);
        }
        let tmp = live.with_extension("restoring");
        let _ = std::fs::remove_file(&tmp);
        let summary = {
            let target = create_private_db(&tmp)?;
            copy_all(&backup, &target)?
        };
        std::fs::rename(&tmp, &live).map_err(|e| io_error("replace", &live, e))?;
        // The data folder's marker now names the restored store.
        Self::open_existing(data_dir)?
            .adopt_identity(data_dir)
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        Ok(summary)
    }
}
