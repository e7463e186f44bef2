//! Account records: one JSON value per normalised primary address.

use redb::{ReadableDatabase, ReadableTable};

use super::record::account::Account;
use super::{ACCOUNTS, ALIASES, POLICY, Store, StoreError};

/// Rows an account change writes in its own transaction.
#[derive(Debug, Default)]
pub struct AlsoWrite {
    /// The scorer's state for the account (its `policy` row).
    pub policy_state: Option<Vec<u8>>,
}

impl Store {
    pub fn account_get(&self, address: &str) -> Result<Option<Account>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let Some(value) = table.get(address)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(value.value())?))
    }

    /// Inserts a new account; `false` if the address is taken (by an
    /// account or an alias, also in `+tag` form).
    pub fn account_create(&self, account: &Account) -> Result<bool, StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        {
            let mut table = tx.open_table(ACCOUNTS)?;
            let aliases = tx.open_table(ALIASES)?;
            if super::aliases::overlap(&table, &aliases, &account.address)?.is_some() {
                return Ok(false);
            }
            let bytes = serde_json::to_vec(account)?;
            table.insert(account.address.as_str(), bytes.as_slice())?;
        }
        self.commit(tx)?;
        Ok(true)
    }

    /// Reads, changes and writes back one account in one transaction,
    /// with whatever the change puts in `AlsoWrite` (rows that must change
    /// together with the account, e.g. the scorer's windows when a block
    /// lifts). `None` if there is no such account; the closure's error
    /// aborts.
    pub fn account_update<T, E>(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account, &mut AlsoWrite) -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        let result = {
            let mut table = tx.open_table(ACCOUNTS)?;
            let Some(value) = table.get(address)? else {
                return Ok(None);
            };
            let mut account: Account = serde_json::from_slice(value.value())?;
            drop(value);
            let mut also = AlsoWrite::default();
            match change(&mut account, &mut also) {
                Ok(out) => {
                    let bytes = serde_json::to_vec(&account)?;
                    table.insert(address, bytes.as_slice())?;
                    if let Some(state) = also.policy_state {
                        tx.open_table(POLICY)?.insert(address, state.as_slice())?;
                    }
                    Ok(out)
                }
                Err(e) => Err(e),
            }
        };
        if result.is_ok() {
            self.commit(tx)?;
        }
        Ok(Some(result))
    }

    pub fn account_list(&self) -> Result<Vec<Account>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// Deletes an account and frees its aliases.
    pub fn account_delete(&self, address: &str) -> Result<bool, StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        let existed = {
            let mut accounts = tx.open_table(ACCOUNTS)?;
            let mut aliases = tx.open_table(ALIASES)?;
            let removed: Option<Account> = match accounts.remove(address)? {
                Some(value) => Some(serde_json::from_slice(value.value())?),
                None => None,
            };
            for alias in removed.iter().flat_map(|a| &a.aliases) {
                aliases.remove(alias.as_str())?;
            }
            removed.is_some()
        };
        self.commit(tx)?;
        Ok(existed)
    }
}
