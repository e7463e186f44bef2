//! `mailwarden store copy --to postgres://...`: an embedded install's
//! shared data (accounts with their blocks, history and aliases, the
//! scorer's states) into a PostgreSQL database, in one transaction. Rows
//! are written whole (insert or replace), so running it again gives the
//! same database; the counts are read back and compared.

use serde::Serialize;

use super::accounts::notify;
use super::{PgStore, pg_error, pool_error};
use crate::address;
use crate::store::shared::Change;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopySummary {
    pub accounts: usize,
    pub aliases: usize,
    pub scorer_states: usize,
}

impl PgStore {
    pub fn copy_from(&self, store: &Store) -> Result<CopySummary, StoreError> {
        let accounts = store.account_list()?;
        let states = store.policy_states()?;
        let mut rows = Vec::with_capacity(accounts.len());
        for a in &accounts {
            rows.push((
                a.address.clone(),
                serde_json::to_string(a)?,
                a.aliases.clone(),
            ));
        }
        let expected = CopySummary {
            accounts: rows.len(),
            aliases: rows.iter().map(|r| r.2.len()).sum(),
            scorer_states: states.len(),
        };
        let pool = self.pool();
        let found = self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let mut addresses = Vec::new();
            for (address, record, aliases) in &rows {
                tx.execute(
                    "INSERT INTO accounts (address, base, record) VALUES ($1, $2, $3)
                     ON CONFLICT (address) DO UPDATE SET record = EXCLUDED.record",
                    &[address, &address::strip_tag(address), record],
                )
                .await
                .map_err(pg_error)?;
                tx.execute("DELETE FROM aliases WHERE address = $1", &[address])
                    .await
                    .map_err(pg_error)?;
                for alias in aliases {
                    tx.execute(
                        "INSERT INTO aliases (alias, base, address) VALUES ($1, $2, $3)",
                        &[alias, &address::strip_tag(alias), address],
                    )
                    .await
                    .map_err(pg_error)?;
                }
                addresses.push(address.clone());
            }
            let mut accounts_with_state = Vec::new();
            for (account, state) in &states {
                super::accounts::write_policy(&tx, account, state).await?;
                accounts_with_state.push(account.clone());
            }
            let count = |sql: &'static str, keys: Vec<String>| {
                let tx = &tx;
                async move {
                    let row = tx.query_one(sql, &[&keys]).await.map_err(pg_error)?;
                    Ok::<usize, StoreError>(row.get::<_, i64>(0) as usize)
                }
            };
            let found = CopySummary {
                accounts: count(
                    "SELECT count(*) FROM accounts WHERE address = ANY($1)",
                    addresses.clone(),
                )
                .await?,
                aliases: count(
                    "SELECT count(*) FROM aliases WHERE address = ANY($1)",
                    addresses,
                )
                .await?,
                scorer_states: count(
                    "SELECT count(*) FROM scorer_state WHERE account = ANY($1)",
                    accounts_with_state,
                )
                .await?,
            };
            // Running nodes drop what they cached.
            notify(&tx, &Change::All).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(found)
        })?;
        if found != expected {
            return Err(StoreError::Failed(format!(
                "the copy does not add up: {expected:?} read, {found:?} in PostgreSQL"
            )));
        }
        Ok(found)
    }
}
