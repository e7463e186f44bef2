//! Portal sessions and the saved brute-force counters in PostgreSQL: the
//! small per-node-agnostic state a browser or a guesser may meet on any
//! node (`SessionRows`, `SharedStore::lockouts_*`).

use std::future::Future;

use deadpool_postgres::Object;

use super::exchange::Exchange;
use super::{PgStore, on, pg_error, pool_error};
use crate::store::StoreError;
use crate::store::shared::{SessionRow, SessionRows, SessionWrite};

/// Seconds in the database's `bigint`.
fn db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `now`, and the times a live session was last used and created after.
fn live_at(now: u64, idle: u64, max_age: u64) -> (i64, i64, i64) {
    (
        db(now),
        db(now.saturating_sub(idle)),
        db(now.saturating_sub(max_age)),
    )
}

impl PgStore {
    /// The same on the portal's own pool, quietly (`PgStore::portal_pool`).
    fn with_portal_client<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_quietly(on(self.portal_pool(), f))
    }

    /// This node's saved counters (`accounts::lockout`), beside the other
    /// nodes'.
    pub(crate) fn save_lockouts(&self, saved: &[u8], now: u64) -> Result<(), StoreError> {
        let (node, saved) = (self.node().to_string(), saved.to_vec());
        self.with_client(move |c| async move {
            c.execute(
                "INSERT INTO lockout_counters (node, saved, updated) VALUES ($1, $2, $3)
                 ON CONFLICT (node) DO UPDATE SET saved = EXCLUDED.saved, updated = EXCLUDED.updated",
                &[&node, &saved, &db(now)],
            )
            .await
            .map_err(pg_error)?;
            Ok(())
        })
    }

    /// Every node's saved counters updated since `since`; older rows (of
    /// nodes long gone: every window is shorter) are deleted.
    pub(crate) fn saved_lockouts(&self, since: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with_client(move |c| async move {
            c.execute(
                "DELETE FROM lockout_counters WHERE updated < $1",
                &[&db(since)],
            )
            .await
            .map_err(pg_error)?;
            let rows = c
                .query("SELECT saved FROM lockout_counters", &[])
                .await
                .map_err(pg_error)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }
}

impl SessionRows for PgStore {
    fn session_touch(
        &self,
        id: &[u8],
        now: u64,
        idle: u64,
        max_age: u64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let id = id.to_vec();
        let (now, idle_after, created_after) = live_at(now, idle, max_age);
        self.with_portal_client(move |c| async move {
            let row = c
                .query_opt(
                    "UPDATE portal_sessions SET last_seen = GREATEST(last_seen, $2)
                     WHERE id = $1 AND last_seen > $3 AND created > $4
                     RETURNING data, created, last_seen",
                    &[&id, &now, &idle_after, &created_after],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| SessionRow {
                data: r.get(0),
                created: unix(r.get(1)),
                last_seen: unix(r.get(2)),
            }))
        })
    }

    fn session_insert(
        &self,
        id: &[u8],
        address: Option<&str>,
        row: &SessionRow,
    ) -> Result<(), StoreError> {
        let (id, address, row) = (id.to_vec(), address.map(str::to_string), row.clone());
        self.with_portal_client(move |c| async move {
            c.execute(
                "INSERT INTO portal_sessions (id, address, created, last_seen, data)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &id,
                    &address,
                    &db(row.created),
                    &db(row.last_seen),
                    &row.data,
                ],
            )
            .await
            .map_err(pg_error)?;
            Ok(())
        })
    }

    fn session_update(
        &self,
        id: &[u8],
        now: u64,
        idle: u64,
        max_age: u64,
        change: &mut dyn FnMut(&SessionRow) -> Option<SessionWrite>,
    ) -> Result<bool, StoreError> {
        let pool = self.portal_pool();
        let id = id.to_vec();
        let (now, idle_after, created_after) = live_at(now, idle, max_age);
        let caller = self.exchange_quietly(
            move |mut ex: Exchange<Option<SessionRow>, SessionWrite>| async move {
                let out = async {
                    let mut client = pool.get().await.map_err(pool_error)?;
                    let tx = client.transaction().await.map_err(pg_error)?;
                    let row = tx
                        .query_opt(
                            "SELECT data, created, last_seen FROM portal_sessions
                             WHERE id = $1 AND last_seen > $2 AND created > $3 FOR UPDATE",
                            &[&id, &idle_after, &created_after],
                        )
                        .await
                        .map_err(pg_error)?
                        .map(|r| SessionRow {
                            data: r.get(0),
                            created: unix(r.get(1)),
                            last_seen: unix(r.get(2)).max(unix(now)),
                        });
                    let found = row.is_some();
                    ex.send(row);
                    if !found {
                        return Ok(());
                    }
                    let Some((address, data)) = ex.answer().await else {
                        return Ok(());
                    };
                    tx.execute(
                        "UPDATE portal_sessions SET data = $2, address = $3,
                         last_seen = GREATEST(last_seen, $4) WHERE id = $1",
                        &[&id, &data, &address, &now],
                    )
                    .await
                    .map_err(pg_error)?;
                    tx.commit().await.map_err(pg_error)
                }
                .await;
                (ex, out)
            },
        );
        let Some(row) = caller.read()? else {
            return Ok(false);
        };
        if let Some(write) = change(&row) {
            caller.answer(write)?;
        }
        Ok(true)
    }

    fn session_take(&self, id: &[u8]) -> Result<Option<String>, StoreError> {
        let id = id.to_vec();
        self.with_portal_client(move |c| async move {
            let row = c
                .query_opt(
                    "DELETE FROM portal_sessions WHERE id = $1 RETURNING data",
                    &[&id],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn session_delete_for(&self, address: &str, keep: &[u8]) -> Result<u64, StoreError> {
        let (address, keep) = (address.to_string(), keep.to_vec());
        self.with_portal_client(move |c| async move {
            c.execute(
                "DELETE FROM portal_sessions WHERE address = $1 AND id <> $2",
                &[&address, &keep],
            )
            .await
            .map_err(pg_error)
        })
    }

    fn session_purge(
        &self,
        idle_before: u64,
        created_before: u64,
        keep_anonymous: u64,
    ) -> Result<u64, StoreError> {
        self.with_portal_client(move |c| async move {
            let expired = c
                .execute(
                    "DELETE FROM portal_sessions WHERE last_seen <= $1 OR created <= $2",
                    &[&db(idle_before), &db(created_before)],
                )
                .await
                .map_err(pg_error)?;
            let crowded = c
                .execute(
                    "DELETE FROM portal_sessions WHERE address IS NULL AND id IN
                     (SELECT id FROM portal_sessions WHERE address IS NULL
                      ORDER BY last_seen DESC OFFSET $1)",
                    &[&db(keep_anonymous)],
                )
                .await
                .map_err(pg_error)?;
            Ok(expired + crowded)
        })
    }
}
