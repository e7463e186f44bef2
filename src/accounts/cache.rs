//! Account records as last written, in memory: AUTH, MAIL, every RCPT and
//! the end of DATA read an account without touching the store on a tokio
//! worker. Every write goes through `Accounts` (other processes cannot
//! write while the server holds the store):
//! - a change of an existing account puts the new record here inside its
//!   store transaction, which holds the store's only writer, so two changes
//!   land here in the order they commit; if the commit then fails, the
//!   entry is forgotten;
//! - creating or deleting an account forgets the entry after the commit.
//!
//! A miss reads the store on the blocking pool; a write or a forget while
//! it reads wins (the miss is not cached over it).
//!
//! With a store other nodes write too, their changes arrive as
//! notifications (`remote.rs`); as a second line of defence against a
//! notification lost without the listener noticing, entries are also read
//! again once they are `SHARED_MAX_AGE` old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Account;
use crate::locks::Recover;

/// More accounts than this in memory and the cache starts over (each entry
/// is a few KiB; a server with more active accounts reads a few again).
const CAPACITY: usize = 65_536;

/// How old a cached record may be when other nodes share the store.
pub(super) const SHARED_MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct AccountCache {
    inner: Mutex<Inner>,
    /// Entries older than this are read again (a shared store only).
    max_age: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    /// `None`: known not to exist. With when it was cached.
    records: HashMap<String, (Option<Arc<Account>>, Instant)>,
    /// Bumped by every write, so a miss read before it is not kept.
    writes: u64,
}

impl AccountCache {
    /// A cache whose entries are read again once `max_age` old.
    pub(super) fn with_max_age(max_age: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            max_age: Some(max_age),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_or_recover()
    }

    /// The cached record (`Some(None)`: known missing), and the write count
    /// to hand back to `fill` after a miss.
    pub(super) fn get(&self, address: &str) -> (Option<Option<Arc<Account>>>, u64) {
        let inner = self.lock();
        let fresh = |at: &Instant| self.max_age.is_none_or(|max| at.elapsed() < max);
        let cached = inner
            .records
            .get(address)
            .filter(|(_, at)| fresh(at))
            .map(|(r, _)| r.clone());
        (cached, inner.writes)
    }

    /// Keeps what a miss read, unless a write happened since `seen`.
    pub(super) fn fill(&self, address: &str, record: Option<Arc<Account>>, seen: u64) {
        let mut inner = self.lock();
        if inner.writes == seen {
            inner.insert(address, record);
        }
    }

    /// A change being committed: the record as it will be.
    pub(super) fn wrote(&self, address: &str, record: Arc<Account>) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.insert(address, Some(record));
    }

    /// Every record may have changed (changes from other nodes were
    /// missed): every next read goes to the store.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.records.clear();
    }

    /// The stored record changed in a way this cache did not see (created,
    /// deleted, a failed commit): the next read goes to the store.
    pub(super) fn forget(&self, address: &str) {
        let mut inner = self.lock();
        inner.writes += 1;
        inner.records.remove(address);
    }
}

impl Inner {
    fn insert(&mut self, address: &str, record: Option<Arc<Account>>) {
        if self.records.len() >= CAPACITY && !self.records.contains_key(address) {
            self.records.clear();
        }
        self.records
            .insert(address.to_string(), (record, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(address: &str, seq: u64) -> Arc<Account> {
        let mut a = Account::new(address.into(), String::new(), 0);
        a.seq = seq;
        Arc::new(a)
    }

    #[test]
    fn a_miss_read_before_a_write_is_not_kept() {
        let cache = AccountCache::default();
        let (cached, seen) = cache.get("a@x.example");
        assert!(cached.is_none());
        // A change commits while the miss reads the older record.
        cache.wrote("a@x.example", account("a@x.example", 2));
        cache.fill("a@x.example", Some(account("a@x.example", 1)), seen);
        let (cached, _) = cache.get("a@x.example");
        assert_eq!(cached.unwrap().unwrap().seq, 2);
    }

    #[test]
    fn with_a_max_age_old_entries_are_read_again() {
        let cache = AccountCache::with_max_age(Duration::from_millis(50));
        cache.wrote("a@x.example", account("a@x.example", 1));
        assert!(cache.get("a@x.example").0.is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a@x.example").0.is_none());
        // Without one, entries stay until changed.
        let cache = AccountCache::default();
        cache.wrote("a@x.example", account("a@x.example", 1));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a@x.example").0.is_some());
    }

    #[test]
    fn forgetting_sends_the_next_read_to_the_store() {
        let cache = AccountCache::default();
        cache.wrote("a@x.example", account("a@x.example", 1));
        let (_, seen) = cache.get("a@x.example");
        cache.forget("a@x.example");
        assert!(cache.get("a@x.example").0.is_none());
        // A miss that started before the forget is not kept either.
        cache.fill("a@x.example", Some(account("a@x.example", 1)), seen);
        assert!(cache.get("a@x.example").0.is_none());
        let (_, seen) = cache.get("a@x.example");
        cache.fill("a@x.example", None, seen);
        assert!(matches!(cache.get("a@x.example").0, Some(None)));
    }
}
