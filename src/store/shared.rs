//! The shared-data seam: what every node of one installation must see the
//! same (accounts with their blocks, aliases, the scorer's per-account
//! state, small facts such as the lockout counters). The spool is not part
//! of it: each node's queue stays in its own redb file.
//!
//! Two implementations: the embedded `Store` (redb, one node) and
//! `postgres::PgStore` (several nodes on one database). Every method blocks:
//! callers run them on the blocking pool (`spawn_blocking`), as they always
//! did with redb.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::record::account::Account;
use super::{AliasChange, AlsoWrite, Store, StoreError};

/// A change another node (or this one) made to shared data, heard through
/// the database (`postgres::listen`). Caches drop what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The account's record changed.
    Account(String),
    /// The account was blocked: its queued mail is held on every node.
    Blocked(String),
    /// The account's block lifted: its held mail is released on every node.
    Lifted(String),
    /// Brute-force counters another node counted (`accounts::lockout`):
    /// `origin` is the node that counted them, `note` what it counted.
    Lockout { origin: String, note: String },
    /// Changes may have been missed (the listener reconnected): drop every
    /// cache and look again.
    All,
}

impl Change {
    /// As sent through `pg_notify` (an address has no `:` before its `@`
    /// that matters: the kind is the text up to the first `:`).
    pub fn to_payload(&self) -> String {
        match self {
            Self::Account(a) => format!("account:{a}"),
            Self::Blocked(a) => format!("blocked:{a}"),
            Self::Lifted(a) => format!("lifted:{a}"),
            Self::Lockout { origin, note } => format!("lockout:{origin}|{note}"),
            Self::All => "all:".to_string(),
        }
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        let (kind, address) = payload.split_once(':')?;
        let address = address.to_string();
        Some(match kind {
            "account" => Self::Account(address),
            "blocked" => Self::Blocked(address),
            "lifted" => Self::Lifted(address),
            "all" => Self::All,
            "lockout" => {
                let (origin, note) = address.split_once('|')?;
                Self::Lockout {
                    origin: origin.to_string(),
                    note: note.to_string(),
                }
            }
            _ => return None,
        })
    }
}

/// An account's scorer state, locked against every other node until
/// `commit` (or until dropped: nothing is written then).
pub trait PolicyLock: Send {
    /// The state as saved, if any.
    fn saved(&self) -> Option<&[u8]>;
    /// Writes the new state and releases the lock.
    fn commit(self: Box<Self>, state: Vec<u8>) -> Result<(), StoreError>;
}

/// A store call's future (object safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// `PolicyLock` for an async caller: nothing blocks while the database
/// answers.
pub trait AsyncPolicyLock: Send {
    /// The state as saved, if any.
    fn saved(&self) -> Option<&[u8]>;
    /// Writes the new state and releases the lock.
    fn commit(self: Box<Self>, state: Vec<u8>) -> StoreFuture<'static, ()>;
}

/// Shared data. Object safe: generic helpers are on `dyn SharedStore`.
pub trait SharedStore: Send + Sync + 'static {
    /// `"redb"` or `"postgres"`, for messages.
    fn backend(&self) -> &'static str;
    /// Whether the store answered lately. `false`: new mail is refused
    /// (`451 4.3.0`) until it answers again.
    fn available(&self) -> bool {
        true
    }
    fn account_get(&self, address: &str) -> Result<Option<Account>, StoreError>;
    /// Inserts a new account; `false` if the address is taken (by an
    /// account or an alias, also in `+tag` form).
    fn account_create(&self, account: &Account) -> Result<bool, StoreError>;
    /// Reads, changes and writes back one account in one transaction;
    /// `change` returns whether to write. `false`: no such account.
    fn account_update_with(
        &self,
        address: &str,
        change: &mut dyn FnMut(&mut Account, &mut AlsoWrite) -> bool,
    ) -> Result<bool, StoreError>;
    fn account_list(&self) -> Result<Vec<Account>, StoreError>;
    /// Deletes an account and frees its aliases.
    fn account_delete(&self, address: &str) -> Result<bool, StoreError>;
    fn alias_add_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError>;
    fn alias_remove_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError>;
    /// One account's scorer state.
    fn policy_state(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every account's scorer state.
    fn policy_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Locks the account's scorer state across nodes. `None`: this store
    /// has one node only; the ledger's own lock is enough and the state is
    /// written with the spool's commits.
    fn policy_lock(&self, account: &str) -> Result<Option<Box<dyn PolicyLock>>, StoreError>;
    /// `policy_lock` for an async caller (the decision at the end of DATA
    /// holds no thread while it waits). The embedded store: `None`.
    fn policy_lock_async(
        &self,
        _account: &str,
    ) -> StoreFuture<'static, Option<Box<dyn AsyncPolicyLock>>> {
        Box::pin(std::future::ready(Ok(None)))
    }
    /// Saves this node's brute-force counters (`accounts::lockout`) at
    /// `now`.
    fn lockouts_save(&self, saved: &[u8], now: u64) -> Result<(), StoreError>;
    /// The counters saved by every node since `since` (one node: its own),
    /// for the counters to start from.
    fn lockouts_saved(&self, since: u64) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// The meta key the embedded store keeps the lockout counters under.
pub const LOCKOUTS_META_KEY: &str = "lockouts";

impl dyn SharedStore {
    /// `account_update_with` for a closure that may fail: `None` if there
    /// is no such account; the closure's error aborts (nothing written).
    pub fn account_update<T, E>(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account, &mut AlsoWrite) -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, StoreError> {
        let mut change = Some(change);
        let mut out = None;
        let found = self.account_update_with(address, &mut |a, also| {
            let Some(change) = change.take() else {
                return false;
            };
            let result = change(a, also);
            let ok = result.is_ok();
            out = Some(result);
            ok
        })?;
        Ok(if found { out } else { None })
    }

    pub fn alias_add(
        &self,
        address: &str,
        alias: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        let mut change = Some(change);
        self.alias_add_with(address, alias, &mut |a| {
            if let Some(c) = change.take() {
                c(a)
            }
        })
    }

    pub fn alias_remove(
        &self,
        address: &str,
        alias: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        let mut change = Some(change);
        self.alias_remove_with(address, alias, &mut |a| {
            if let Some(c) = change.take() {
                c(a)
            }
        })
    }
}

impl SharedStore for Store {
    fn backend(&self) -> &'static str {
        "redb"
    }

    fn account_get(&self, address: &str) -> Result<Option<Account>, StoreError> {
        Store::account_get(self, address)
    }

    fn account_create(&self, account: &Account) -> Result<bool, StoreError> {
        Store::account_create(self, account)
    }

    fn account_update_with(
        &self,
        address: &str,
        change: &mut dyn FnMut(&mut Account, &mut AlsoWrite) -> bool,
    ) -> Result<bool, StoreError> {
        let r = Store::account_update(self, address, |a, also| {
            if change(a, also) { Ok(()) } else { Err(()) }
        })?;
        Ok(r.is_some())
    }

    fn account_list(&self) -> Result<Vec<Account>, StoreError> {
        Store::account_list(self)
    }

    fn account_delete(&self, address: &str) -> Result<bool, StoreError> {
        Store::account_delete(self, address)
    }

    fn alias_add_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        Store::alias_add(self, address, alias, change)
    }

    fn alias_remove_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        Store::alias_remove(self, address, alias, change)
    }

    fn policy_state(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::policy_state(self, account)
    }

    fn policy_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Store::policy_states(self)
    }

    fn policy_lock(&self, _account: &str) -> Result<Option<Box<dyn PolicyLock>>, StoreError> {
        Ok(None)
    }

    fn lockouts_save(&self, saved: &[u8], _now: u64) -> Result<(), StoreError> {
        Store::meta_set(self, LOCKOUTS_META_KEY, saved)
    }

    fn lockouts_saved(&self, _since: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Store::meta_get(self, LOCKOUTS_META_KEY)?
            .into_iter()
            .collect())
    }
}

/// One portal session as stored for every node (`SessionRows`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The session, sealed by the portal.
    pub data: String,
    pub created: u64,
    pub last_seen: u64,
}

/// What a session change writes: the signed-in address and the sealed
/// session.
pub type SessionWrite = (Option<String>, String);

/// Portal sessions every node sees (several nodes behind one HTTP
/// balancer, no sticky sessions). Rows are keyed by a keyed hash of the
/// cookie's value; their content is sealed by the portal. Only the
/// PostgreSQL store has them: one node keeps its sessions in memory.
pub trait SessionRows: Send + Sync + 'static {
    /// The live session (used within `idle` seconds and created within
    /// `max_age`), marked as used at `now`.
    fn session_touch(
        &self,
        id: &[u8],
        now: u64,
        idle: u64,
        max_age: u64,
    ) -> Result<Option<SessionRow>, StoreError>;
    fn session_insert(
        &self,
        id: &[u8],
        address: Option<&str>,
        row: &SessionRow,
    ) -> Result<(), StoreError>;
    /// Reads the live row and locks it against every other node, then
    /// writes what `change` returns (`None`: nothing). `false`: no live
    /// row.
    fn session_update(
        &self,
        id: &[u8],
        now: u64,
        idle: u64,
        max_age: u64,
        change: &mut dyn FnMut(&SessionRow) -> Option<SessionWrite>,
    ) -> Result<bool, StoreError>;
    /// Deletes the row; its data, if it was there.
    fn session_take(&self, id: &[u8]) -> Result<Option<String>, StoreError>;
    /// Deletes every session of `address` but `keep`; how many.
    fn session_delete_for(&self, address: &str, keep: &[u8]) -> Result<u64, StoreError>;
    /// Deletes sessions idle since before `idle_before` or created before
    /// `created_before`, then anonymous ones (no `address`) past the
    /// `keep_anonymous` most recently used.
    fn session_purge(
        &self,
        idle_before: u64,
        created_before: u64,
        keep_anonymous: u64,
    ) -> Result<u64, StoreError>;
}

/// The shared store as the rest of the server holds it.
pub type SharedData = Arc<dyn SharedStore>;

/// Whatever can be held as the shared store: the embedded `Store` (as
/// itself) or a `SharedData` already.
pub trait ToShared {
    fn to_shared(&self) -> SharedData;
}

impl ToShared for Store {
    fn to_shared(&self) -> SharedData {
        Arc::new(self.clone())
    }
}

impl ToShared for SharedData {
    fn to_shared(&self) -> SharedData {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_notification_channel() {
        for change in [
            Change::Account("a@example.com".into()),
            Change::Blocked("b@example.com".into()),
            Change::Lifted("c@example.com".into()),
            Change::Lockout {
                origin: "0123abcd".into(),
                note: "f|192.0.2.1|ff|1|odd|login".into(),
            },
            Change::All,
        ] {
            assert_eq!(Change::from_payload(&change.to_payload()), Some(change));
        }
        assert_eq!(Change::from_payload("unknown:x"), None);
    }
}
