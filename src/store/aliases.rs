//! Aliases: an index from each normalised alias to its account, kept in the
//! same commit as the account record, so no address is ever owned twice.

use redb::{ReadableTable, Table};

use super::record::account::Account;
use redb::ReadableDatabase;

use super::{ACCOUNTS, ALIASES, Store, StoreError};
use crate::address;

/// What an alias change did.
#[derive(Debug)]
pub enum AliasChange {
    Done(Box<Account>),
    NoAccount,
    /// The alias (or a `+tag` form that overlaps it) belongs to this
    /// account or alias already.
    Taken(String),
    /// Remove: the account has no such alias.
    NoAlias,
}

/// The existing account or alias that `candidate` would overlap: the same
/// address, its untagged form, or a `+tag` form of it (each of those is
/// owned by whoever owns the base address).
pub(crate) fn overlap(
    accounts: &impl ReadableTable<&'static str, &'static [u8]>,
    aliases: &impl ReadableTable<&'static str, &'static str>,
    candidate: &str,
) -> Result<Option<String>, StoreError> {
    let base = address::strip_tag(candidate);
    for key in [candidate, base.as_str()] {
        if accounts.get(key)?.is_some() || aliases.get(key)?.is_some() {
            return Ok(Some(key.to_string()));
        }
    }
    // Tagged keys of the candidate sort right after `local+`.
    if let Some((local, _)) = base.rsplit_once('@') {
        let prefix = format!("{local}+");
        if let Some(hit) = first_tagged(accounts.range(prefix.as_str()..)?, &prefix, &base)? {
            return Ok(Some(hit));
        }
        if let Some(hit) = first_tagged(aliases.range(prefix.as_str()..)?, &prefix, &base)? {
            return Ok(Some(hit));
        }
    }
    Ok(None)
}

fn first_tagged<V: redb::Value + 'static>(
    range: redb::Range<'_, &'static str, V>,
    prefix: &str,
    base: &str,
) -> Result<Option<String>, StoreError> {
    for row in range {
        let (key, _) = row?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        if address::strip_tag(key) == base {
            return Ok(Some(key.to_string()));
        }
    }
    Ok(None)
}

impl Store {
    /// The account that owns `alias` (normalised), if any.
    pub fn alias_owner(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let aliases = tx.open_table(ALIASES)?;
        Ok(aliases.get(alias)?.map(|v| v.value().to_string()))
    }

    /// Adds `alias` (normalised) to the account `address`.
    pub fn alias_add(
        &self,
        address: &str,
        alias: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        self.alias_tx(address, change, |accounts, aliases, account| {
            if let Some(owner) = overlap(accounts, aliases, alias)? {
                return Ok(Some(AliasChange::Taken(owner)));
            }
            account.aliases.push(alias.to_string());
            aliases.insert(alias, address)?;
            Ok(None)
        })
    }

    /// Removes `alias` from the account `address`.
    pub fn alias_remove(
        &self,
        address: &str,
        alias: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        self.alias_tx(address, change, |_, aliases, account| {
            let before = account.aliases.len();
            account.aliases.retain(|a| a != alias);
            if account.aliases.len() == before {
                return Ok(Some(AliasChange::NoAlias));
            }
            aliases.remove(alias)?;
            Ok(None)
        })
    }

    /// One alias change in one transaction: `edit` changes the account and
    /// the index, or says why not (nothing is written then); `change`
    /// records it in the account's history.
    fn alias_tx(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account),
        edit: impl FnOnce(
            &Table<&str, &[u8]>,
            &mut Table<&str, &str>,
            &mut Account,
        ) -> Result<Option<AliasChange>, StoreError>,
    ) -> Result<AliasChange, StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        let outcome = {
            let mut accounts = tx.open_table(ACCOUNTS)?;
            let mut aliases = tx.open_table(ALIASES)?;
            let Some(mut account) = read(&accounts, address)? else {
                return Ok(AliasChange::NoAccount);
            };
            if let Some(refused) = edit(&accounts, &mut aliases, &mut account)? {
                return Ok(refused);
            }
            change(&mut account);
            write(&mut accounts, &account)?;
            AliasChange::Done(Box::new(account))
        };
        self.commit(tx)?;
        Ok(outcome)
    }
}

fn read(accounts: &Table<&str, &[u8]>, address: &str) -> Result<Option<Account>, StoreError> {
    match accounts.get(address)? {
        Some(value) => Ok(Some(serde_json::from_slice(value.value())?)),
        None => Ok(None),
    }
}

fn write(accounts: &mut Table<&str, &[u8]>, account: &Account) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(account)?;
    accounts.insert(account.address.as_str(), bytes.as_slice())?;
    Ok(())
}
