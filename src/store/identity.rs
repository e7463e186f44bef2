//! One identity per store, so a server never starts on the wrong one
//! (docs/operator-guide.md, "Backups and restore").
//!
//! The first start of an empty data folder (or `serve --init`) gives the
//! new store a random identity, recorded in the store and in the marker file
//! `store.id` beside it. Later starts check that they agree. A missing or
//! empty store file next to a marker or a secret key, or a store whose
//! identity is not the marker's, is refused with a message that names the
//! files and `mailwarden restore`: before, an emptied store file was
//! silently replaced by an empty one (every account and queued message
//! gone) that went on with the old key. A shared-database backend keeps
//! the same scheme.

use std::path::{Path, PathBuf};

use super::{Store, StoreError};

/// The marker file in the data folder.
pub const MARKER_FILE: &str = "store.id";
/// Where the store records its identity.
const STORE_ID: &str = "store_id";

/// Why a store was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the store {store} is missing or empty, but this data folder has been used ({evidence} exists): \
         refusing to start on an empty store. Restore it with `mailwarden restore BACKUP`, \
         or start a new, empty store on purpose with `mailwarden serve --init`"
    )]
    EmptyStore { store: PathBuf, evidence: String },
    #[error(
        "the store {store} is not the one this data folder belongs to (store {found}, {marker} says {expected}): \
         put the right store file back, or restore with `mailwarden restore BACKUP`"
    )]
    Foreign {
        store: PathBuf,
        marker: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot read or write {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the PostgreSQL database (store {found}) is not the one this node belongs to \
         ({marker} says {expected}): check `store.url`, or remove {marker} to join this database"
    )]
    ForeignDatabase {
        marker: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "the PostgreSQL database (store {found}) was initialised with another server key: \
         every node must use the same key file (copy secret.key from the first node; \
         docs/operator-guide.md, \"Running several nodes\")"
    )]
    WrongKey { found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER_FILE)
}

/// Before `serve` opens (and so perhaps creates) the store: a new store is
/// made only in an unused folder, or with `init`. `used_by` are files
/// whose presence says the folder was used (the secret key).
pub fn check_before_create(
    data_dir: &Path,
    used_by: &[&Path],
    init: bool,
) -> Result<(), IdentityError> {
    let store = Store::path_in(data_dir);
    let empty = match std::fs::metadata(&store) {
        Ok(m) => m.len() == 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(error) => return Err(IdentityError::Io { path: store, error }),
    };
    if !empty || init {
        return Ok(());
    }
    let marker = marker_path(data_dir);
    let evidence = std::iter::once(marker.as_path())
        .chain(used_by.iter().copied())
        .find(|p| p.exists());
    match evidence {
        Some(p) => Err(IdentityError::EmptyStore {
            store,
            evidence: p.display().to_string(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn read_marker(path: &Path) -> Result<Option<String>, IdentityError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(IdentityError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

pub(crate) fn write_marker(path: &Path, id: &str) -> Result<(), IdentityError> {
    crate::files::write_private(path, format!("{id}\n").as_bytes()).map_err(|e| IdentityError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e.to_string()),
    })
}

pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// The store's identity, if it has one.
    pub fn identity(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta_get(STORE_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// After opening for `serve`: the store and the marker must agree. A
    /// new store (or one from a release before identities) gets one, and
    /// the marker is written; `init` accepts a new store where a marker is.
    pub fn check_identity(&self, data_dir: &Path, init: bool) -> Result<String, IdentityError> {
        let marker = marker_path(data_dir);
        let expected = read_marker(&marker)?;
        match (self.identity()?, expected) {
            (Some(found), Some(expected)) if found != expected && !init => {
                Err(IdentityError::Foreign {
                    store: self.path().to_path_buf(),
                    marker,
                    found,
                    expected,
                })
            }
            (None, Some(expected)) if !init => Err(IdentityError::Foreign {
                store: self.path().to_path_buf(),
                marker,
                found: "none".into(),
                expected,
            }),
            (Some(found), Some(expected)) if found == expected => Ok(found),
            (Some(found), _) => {
                write_marker(&marker, &found)?;
                Ok(found)
            }
            (None, _) => {
                let id = new_id();
                self.meta_set(STORE_ID, id.as_bytes())?;
                write_marker(&marker, &id)?;
                Ok(id)
            }
        }
    }

    /// After `restore`: the marker follows the restored store (which keeps
    /// the identity it had, or gets one now).
    pub fn adopt_identity(&self, data_dir: &Path) -> Result<String, IdentityError> {
        let id = match self.identity()? {
            Some(id) => id,
            None => {
                let id = new_id();
                self.meta_set(STORE_ID, id.as_bytes())?;
                id
            }
        };
        write_marker(&marker_path(data_dir), &id)?;
        Ok(id)
    }
}
