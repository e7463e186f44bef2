//! Versioned migrations embedded in the binary, applied in order under a
//! session advisory lock (two nodes starting together cannot both
//! migrate). A database newer than this binary is refused.

use tokio_postgres::Client;

use super::{MIGRATION_LOCK, pg_error};
use crate::store::StoreError;

/// (version, SQL), in order.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_sessions_and_lockouts.sql")),
];

/// The version this binary brings the database to.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What `run` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

pub async fn run(client: &mut Client) -> Result<Migrated, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    let result = apply(client).await;
    // Unlocked whatever happened (the connection may be reused).
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<Migrated, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version int PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_error)?;
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(pg_error)?;
    let from: i32 = row.get(0);
    if from > latest() {
        return Err(StoreError::Failed(format!(
            "the PostgreSQL database is at schema version {from}, newer than this \
             mailwarden knows ({}): upgrade this node first",
            latest()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
    }
    Ok(Migrated { from, to: latest() })
}
