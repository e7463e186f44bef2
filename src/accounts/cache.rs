//! Account records as last written, in memory: AUTH, MAIL, every RCPT and
//! the end of DATA read an account without touching the store on a tokio
//! worker. Every write goes through `Accounts`, which puts the committed
//! record here, so the cache is never behind this process's own writes
//! (other processes cannot write while the server holds the store).
//!
//! A miss reads the store on the blocking pool. A write that commits while
//! a miss is being read wins: the miss is not cached over it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Account;
use crate::locks::Recover;

/// More accounts than this in memory and the cache starts over (each entry
/// is a few KiB; a server with more active accounts reads a few again).
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub(super) struct AccountCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `None`: known not to exist.
    records: HashMap<String, Option<Arc<Account>>>,
    /// Bumped by every write, so a miss read before it is not kept.
    writes: u64,
}

impl AccountCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_or_recover()
    }

    /// The cached record (`Some(None)`: known missing), and the write count
    /// to hand back to `fill` after a miss.
    pub(super) fn get(&self, address: &str) -> (Option<Option<Arc<Account>>>, u64) {
        let inner = self.lock();
        (inner.records.get(address).cloned(), inner.writes)
    }

    /// Keeps what a miss read, unless a write happened since `seen`.
    pub(super) fn fill(&self, address: &str, record: Option<Arc<Account>>, seen: u64) {
        let mut inner = self.lock();
        if inner.writes == seen {
            inner.insert(address, record);
        }
    }

    /// A committed write: the record as it now is (`None`: deleted).
    pub(super) fn wrote(&self, address: &str, record: Option<Arc<Account>>) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.insert(address, record);
    }
}

impl Inner {
    fn insert(&mut self, address: &str, record: Option<Arc<Account>>) {
        if self.records.len() >= CAPACITY && !self.records.contains_key(address) {
            self.records.clear();
        }
        self.records.insert(address.to_string(), record);
    }
}
