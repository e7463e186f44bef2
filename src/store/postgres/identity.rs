//! The store identity scheme (`store::identity`) for a shared database.
//! The first node started on an empty database gives it a random identity
//! and a test value sealed with the server key. Every node then checks
//! that its key opens that value (all nodes must share one key: sealed
//! 2FA secrets and portal tokens must open everywhere) and that the
//! database is the one its data folder last used (the marker
//! `postgres.id`).

use std::path::{Path, PathBuf};

use super::{MIGRATION_LOCK, PgStore, pg_error, pool_error};
use crate::store::StoreError;
use crate::store::identity::{IdentityError, new_id, read_marker, write_marker};

/// The marker file in the data folder.
pub const MARKER_FILE: &str = "postgres.id";
const STORE_ID: &str = "store_id";
const SEALED: &str = "store_id_sealed";

pub fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER_FILE)
}

impl PgStore {
    /// The database's identity, given it on first use; checked against the
    /// server key (`seal`/`open` use it) and the node's marker.
    pub fn check_identity(
        &self,
        data_dir: &Path,
        seal: impl Fn(&[u8]) -> String,
        open: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<String, IdentityError> {
        let id = new_id();
        let sealed = seal(id.as_bytes());
        let pool = self.pool();
        // Both rows at once, under the migration lock: the first node wins;
        // then both read back in the same transaction.
        let (found, sealed) = self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg_error)?;
            let n = tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&STORE_ID, &id.as_bytes()],
                )
                .await
                .map_err(pg_error)?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)",
                    &[&SEALED, &sealed.as_bytes()],
                )
                .await
                .map_err(pg_error)?;
            }
            let read = |key: &'static str| {
                let tx = &tx;
                async move {
                    let row = tx
                        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                        .await
                        .map_err(pg_error)?;
                    let value: Option<Vec<u8>> = row.map(|r| r.get(0));
                    Ok::<_, StoreError>(
                        value
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default(),
                    )
                }
            };
            let (found, sealed) = (read(STORE_ID).await?, read(SEALED).await?);
            tx.commit().await.map_err(pg_error)?;
            Ok((found, sealed))
        })?;
        if open(&sealed).as_deref() != Some(found.as_bytes()) {
            return Err(IdentityError::WrongKey { found });
        }
        let marker = marker_path(data_dir);
        match read_marker(&marker)? {
            Some(expected) if expected != found => Err(IdentityError::ForeignDatabase {
                marker,
                found,
                expected,
            }),
            Some(_) => Ok(found),
            None => {
                write_marker(&marker, &found)?;
                Ok(found)
            }
        }
    }
}
