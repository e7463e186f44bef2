//! Accounts and aliases in PostgreSQL: the same JSON records as redb, one
//! row each, with the alias index beside them.

use deadpool_postgres::{GenericClient, Transaction};

use super::exchange::{AsyncCaller, Exchange};
use super::{ADDRESS_LOCK, CHANNEL, POLICY_LOCK, PgStore, pg_error, pool_error};
use crate::address;
use crate::store::record::account::Account;
use crate::store::shared::{AsyncPolicyLock, Change, PolicyLock, SharedStore, StoreFuture};
use crate::store::{AliasChange, AlsoWrite, StoreError};

fn decode(record: &str) -> Result<Account, StoreError> {
    Ok(serde_json::from_str(record)?)
}

fn encode(account: &Account) -> Result<String, StoreError> {
    Ok(serde_json::to_string(account)?)
}

/// Tells every node (this one too) about `change`: in a transaction, at
/// its commit; on a plain connection, at once.
pub(crate) async fn notify(client: &impl GenericClient, change: &Change) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached("SELECT pg_notify($1, $2)")
        .await
        .map_err(pg_error)?;
    client
        .execute(&stmt, &[&CHANNEL, &change.to_payload()])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Holds the transaction lock `(kind, hashtext(name))` until commit.
async fn advisory_lock(tx: &Transaction<'_>, kind: i32, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&kind, &name],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Only one transaction at a time may claim addresses around `base`.
async fn lock_address(tx: &Transaction<'_>, base: &str) -> Result<(), StoreError> {
    advisory_lock(tx, ADDRESS_LOCK, base).await
}

/// The account or alias `candidate` would overlap (`store::aliases::overlap`):
/// every address whose untagged form is the candidate's.
async fn overlap(tx: &Transaction<'_>, candidate: &str) -> Result<Option<String>, StoreError> {
    let base = address::strip_tag(candidate);
    let row = tx
        .query_opt(
            "SELECT k FROM (SELECT address AS k FROM accounts WHERE base = $1
                            UNION ALL SELECT alias FROM aliases WHERE base = $1) o
             ORDER BY k = $2 DESC, k = $1 DESC, k LIMIT 1",
            &[&base, &candidate],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// Locks and reads one account for a change.
async fn read_for_update(
    tx: &Transaction<'_>,
    address: &str,
) -> Result<Option<Account>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT record FROM accounts WHERE address = $1 FOR UPDATE",
            &[&address],
        )
        .await
        .map_err(pg_error)?;
    row.map(|r| decode(r.get(0))).transpose()
}

async fn write(tx: &Transaction<'_>, account: &Account) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE accounts SET record = $2 WHERE address = $1",
        &[&account.address, &encode(account)?],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn write_policy(
    tx: &Transaction<'_>,
    account: &str,
    state: &[u8],
) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(WRITE_POLICY).await.map_err(pg_error)?;
    tx.execute(&stmt, &[&account, &state])
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn lock_policy(tx: &Transaction<'_>, account: &str) -> Result<(), StoreError> {
    advisory_lock(tx, POLICY_LOCK, account).await
}

/// The change an account update announces (`was_blocked`: before it).
fn change_of(was_blocked: bool, after: &Account) -> Change {
    let address = after.address.clone();
    match (was_blocked, after.block.is_some()) {
        (false, true) => Change::Blocked(address),
        (true, false) => Change::Lifted(address),
        _ => Change::Account(address),
    }
}

/// The lock of a scorer turn; its commit need not wait for the disk
/// (`synchronous_commit` off for this transaction only): the state is the
/// scorer's counting, not mail (mail is in the node's spool before its
/// 250), and a block is written by its own, synchronous, transaction whose
/// commit flushes every earlier one. A database crash can lose the last
/// fraction of a second of counting.
const LOCK_POLICY: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2)), \
     set_config('synchronous_commit', 'off', true)";
const READ_POLICY: &str = "SELECT state FROM scorer_state WHERE account = $1";
const WRITE_POLICY: &str = "INSERT INTO scorer_state (account, state) VALUES ($1, $2)
     ON CONFLICT (account) DO UPDATE
       SET state = EXCLUDED.state, version = scorer_state.version + 1";

/// A pooled connection inside a transaction begun by hand: unless `done`
/// says it ended, it is closed instead of going back to the pool (a call
/// that failed or timed out midway must not lend out an open transaction).
struct InTransaction(Option<deadpool_postgres::Object>);

impl InTransaction {
    fn new(client: deadpool_postgres::Object) -> Self {
        Self(Some(client))
    }

    fn get(&self) -> &deadpool_postgres::Object {
        self.0.as_ref().expect("present until dropped")
    }

    /// The transaction ended: the connection may be reused.
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// What an alias transaction hands the caller.
enum AliasRead {
    Refused(AliasChange),
    Account(Box<Account>),
}

impl PgStore {
    fn alias_change(
        &self,
        address: &str,
        alias: &str,
        add: bool,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        let pool = self.pool();
        let (key, name) = (address.to_string(), alias.to_string());
        let caller = self.exchange(move |mut ex: Exchange<AliasRead, Account>| async move {
            let out = async {
                let mut client = pool.get().await.map_err(pool_error)?;
                let tx = client.transaction().await.map_err(pg_error)?;
                lock_address(&tx, &address::strip_tag(&name)).await?;
                let Some(mut account) = read_for_update(&tx, &key).await? else {
                    ex.send(AliasRead::Refused(AliasChange::NoAccount));
                    return Ok(());
                };
                if add {
                    if let Some(owner) = overlap(&tx, &name).await? {
                        ex.send(AliasRead::Refused(AliasChange::Taken(owner)));
                        return Ok(());
                    }
                    account.aliases.push(name.clone());
                } else {
                    let before = account.aliases.len();
                    account.aliases.retain(|a| *a != name);
                    if account.aliases.len() == before {
                        ex.send(AliasRead::Refused(AliasChange::NoAlias));
                        return Ok(());
                    }
                }
                ex.send(AliasRead::Account(Box::new(account)));
                let Some(account) = ex.answer().await else {
                    return Ok(());
                };
                if add {
                    tx.execute(
                        "INSERT INTO aliases (alias, base, address) VALUES ($1, $2, $3)",
                        &[&name, &address::strip_tag(&name), &key],
                    )
                    .await
                    .map_err(pg_error)?;
                } else {
                    tx.execute("DELETE FROM aliases WHERE alias = $1", &[&name])
                        .await
                        .map_err(pg_error)?;
                }
                write(&tx, &account).await?;
                notify(&tx, &Change::Account(key.clone())).await?;
                tx.commit().await.map_err(pg_error)
            }
            .await;
            (ex, out)
        });
        match caller.read()? {
            AliasRead::Refused(refused) => Ok(refused),
            AliasRead::Account(mut account) => {
                change(&mut account);
                caller.answer((*account).clone())?;
                Ok(AliasChange::Done(account))
            }
        }
    }
}

/// The scorer's state of one account, locked until committed.
struct PgPolicyLock {
    saved: Option<Vec<u8>>,
    caller: super::exchange::Caller<Option<Vec<u8>>, Vec<u8>>,
}

impl PolicyLock for PgPolicyLock {
    fn saved(&self) -> Option<&[u8]> {
        self.saved.as_deref()
    }

    fn commit(self: Box<Self>, state: Vec<u8>) -> Result<(), StoreError> {
        self.caller.answer(state)
    }
}

/// One scorer turn on the store's runtime: the lock and the state (handed
/// to the caller), then the caller's new state written and committed.
async fn policy_turn(
    mut ex: Exchange<Option<Vec<u8>>, Vec<u8>>,
    pool: deadpool_postgres::Pool,
    key: String,
) -> (Exchange<Option<Vec<u8>>, Vec<u8>>, Result<(), StoreError>) {
    let out = async {
        let client = InTransaction::new(pool.get().await.map_err(pool_error)?);
        let c = client.get();
        let lock = c.prepare_cached(LOCK_POLICY).await.map_err(pg_error)?;
        let read = c.prepare_cached(READ_POLICY).await.map_err(pg_error)?;
        let write = c.prepare_cached(WRITE_POLICY).await.map_err(pg_error)?;
        let (lock_args, read_args) = ([&POLICY_LOCK as _, &key as _], [&key as _]);
        let (begun, locked, row) = tokio::join!(
            c.batch_execute("BEGIN"),
            c.execute(&lock, &lock_args),
            c.query_opt(&read, &read_args),
        );
        begun.map_err(pg_error)?;
        locked.map_err(pg_error)?;
        let row = row.map_err(pg_error)?;
        ex.send(row.map(|r| r.get(0)));
        let Some(state) = ex.answer().await else {
            c.batch_execute("ROLLBACK").await.map_err(pg_error)?;
            client.done();
            return Ok(());
        };
        let write_args = [&key as _, &state as _];
        let (written, committed) =
            tokio::join!(c.execute(&write, &write_args), c.batch_execute("COMMIT"),);
        // A failed write turns the COMMIT into a rollback.
        written.map_err(pg_error)?;
        committed.map_err(pg_error)?;
        client.done();
        Ok(())
    }
    .await;
    (ex, out)
}

/// A scorer turn held by an async caller (`policy_lock_async`).
struct PgAsyncPolicyLock {
    saved: Option<Vec<u8>>,
    caller: AsyncCaller<Option<Vec<u8>>, Vec<u8>>,
}

impl AsyncPolicyLock for PgAsyncPolicyLock {
    fn saved(&self) -> Option<&[u8]> {
        self.saved.as_deref()
    }

    fn commit(self: Box<Self>, state: Vec<u8>) -> StoreFuture<'static, ()> {
        Box::pin(self.caller.answer(state))
    }
}

impl SharedStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn available(&self) -> bool {
        self.is_up()
    }

    fn account_get(&self, address: &str) -> Result<Option<Account>, StoreError> {
        let key = address.to_string();
        let record: Option<String> = self.with_client(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT record FROM accounts WHERE address = $1")
                .await
                .map_err(pg_error)?;
            let row = client.query_opt(&stmt, &[&key]).await.map_err(pg_error)?;
            Ok(row.map(|r| r.get(0)))
        })?;
        record.as_deref().map(decode).transpose()
    }

    fn account_create(&self, account: &Account) -> Result<bool, StoreError> {
        let pool = self.pool();
        let (address, record) = (account.address.clone(), encode(account)?);
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let base = address::strip_tag(&address);
            lock_address(&tx, &base).await?;
            if overlap(&tx, &address).await?.is_some() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO accounts (address, base, record) VALUES ($1, $2, $3)",
                &[&address, &base, &record],
            )
            .await
            .map_err(pg_error)?;
            notify(&tx, &Change::Account(address.clone())).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(true)
        })
    }

    fn account_update_with(
        &self,
        address: &str,
        change: &mut dyn FnMut(&mut Account, &mut AlsoWrite) -> bool,
    ) -> Result<bool, StoreError> {
        let (pool, key) = (self.pool(), address.to_string());
        type Answer = (Account, Change, Option<Vec<u8>>);
        let caller = self.exchange(
            move |mut ex: Exchange<Option<Account>, Answer>| async move {
                let out = async {
                    let mut client = pool.get().await.map_err(pool_error)?;
                    let tx = client.transaction().await.map_err(pg_error)?;
                    let account = read_for_update(&tx, &key).await?;
                    let found = account.is_some();
                    ex.send(account);
                    if !found {
                        return Ok(());
                    }
                    let Some((account, change, policy)) = ex.answer().await else {
                        return Ok(());
                    };
                    write(&tx, &account).await?;
                    if let Some(state) = policy {
                        lock_policy(&tx, &key).await?;
                        write_policy(&tx, &key, &state).await?;
                    }
                    notify(&tx, &change).await?;
                    tx.commit().await.map_err(pg_error)
                }
                .await;
                (ex, out)
            },
        );
        let Some(mut account) = caller.read()? else {
            return Ok(false);
        };
        let was_blocked = account.block.is_some();
        let mut also = AlsoWrite::default();
        if change(&mut account, &mut also) {
            let announce = change_of(was_blocked, &account);
            caller.answer((account, announce, also.policy_state))?;
        }
        Ok(true)
    }

    fn account_list(&self) -> Result<Vec<Account>, StoreError> {
        let records: Vec<String> = self.with_client(move |client| async move {
            let rows = client
                .query("SELECT record FROM accounts ORDER BY address", &[])
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        records.iter().map(|r| decode(r)).collect()
    }

    fn account_delete(&self, address: &str) -> Result<bool, StoreError> {
        let (pool, key) = (self.pool(), address.to_string());
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let n = tx
                .execute("DELETE FROM accounts WHERE address = $1", &[&key])
                .await
                .map_err(pg_error)?;
            notify(&tx, &Change::Account(key.clone())).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(n > 0)
        })
    }

    fn alias_add_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        self.alias_change(address, alias, true, change)
    }

    fn alias_remove_with(
        &self,
        address: &str,
        alias: &str,
        change: &mut dyn FnMut(&mut Account),
    ) -> Result<AliasChange, StoreError> {
        self.alias_change(address, alias, false, change)
    }

    fn policy_state(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = account.to_string();
        self.with_client(move |client| async move {
            let stmt = client.prepare_cached(READ_POLICY).await.map_err(pg_error)?;
            let row = client.query_opt(&stmt, &[&key]).await.map_err(pg_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn policy_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_client(move |client| async move {
            let rows = client
                .query("SELECT account, state FROM scorer_state", &[])
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Two round trips: BEGIN, the lock and the read go out together, then
    /// the write and COMMIT together (tokio-postgres pipelines requests
    /// issued at once on one connection).
    fn policy_lock(&self, account: &str) -> Result<Option<Box<dyn PolicyLock>>, StoreError> {
        let (pool, key) = (self.pool(), account.to_string());
        let caller = self.exchange(move |ex| policy_turn(ex, pool, key));
        let saved = caller.read()?;
        Ok(Some(Box::new(PgPolicyLock { saved, caller })))
    }

    fn policy_lock_async(
        &self,
        account: &str,
    ) -> StoreFuture<'static, Option<Box<dyn AsyncPolicyLock>>> {
        let (pool, key) = (self.pool(), account.to_string());
        let mut caller = self.exchange_async(move |ex| policy_turn(ex, pool, key));
        Box::pin(async move {
            let saved = caller.read().await?;
            Ok(Some(
                Box::new(PgAsyncPolicyLock { saved, caller }) as Box<dyn AsyncPolicyLock>
            ))
        })
    }

    fn lockouts_save(&self, saved: &[u8], now: u64) -> Result<(), StoreError> {
        self.save_lockouts(saved, now)
    }

    fn lockouts_saved(&self, since: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.saved_lockouts(since)
    }
}
