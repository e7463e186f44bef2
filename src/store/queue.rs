//! The spool's tables: envelope records in `queue`, message bytes in `bodies`.
//! Writes are applied in batches: one commit, one fsync, for many messages.

use redb::{ReadableDatabase, ReadableTable};

use super::record::queue::{QueueEntry, QueueId, QueueState, QueueWrite};
use super::{BODIES, META, POLICY, QUEUE, SCHEDULE, SCHEDULE_BUILT, Store, StoreError};

/// The schedule key of an entry, if the runner should see it at all.
fn slot(entry: &QueueEntry) -> Option<(u64, u64)> {
    (entry.state == QueueState::Queued).then_some((entry.next_attempt, entry.id.0))
}

/// Fills the schedule from the queue table, unless it was built before:
/// the decoding of the whole queue happens once, not at every open.
pub(super) fn build_schedule_once(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    if meta.get(SCHEDULE_BUILT)?.is_some() {
        return Ok(());
    }
    meta.insert(SCHEDULE_BUILT, b"1".as_slice())?;
    let queue = tx.open_table(QUEUE)?;
    let mut schedule = tx.open_table(SCHEDULE)?;
    schedule.retain(|_, _| false)?;
    for row in queue.iter()? {
        let (id, value) = row?;
        // An unreadable row must not keep the store from opening (it can
        // still be shown and deleted); it just is not scheduled.
        match serde_json::from_slice::<QueueEntry>(value.value()) {
            Ok(entry) => {
                if let Some(key) = slot(&entry) {
                    schedule.insert(key, ())?;
                }
            }
            Err(e) => {
                tracing::warn!(event = "store.queue_row_unreadable", message_id = id.value(), error = %e);
            }
        }
    }
    Ok(())
}

/// Applies `writes` in `tx`: queue, bodies, scorer rows and the schedule.
/// Each result says whether the write found (or created) its message.
pub(super) fn write_queue<'a>(
    tx: &redb::WriteTransaction,
    writes: impl Iterator<Item = &'a QueueWrite>,
) -> Result<Vec<bool>, StoreError> {
    let mut results = Vec::new();
    {
        let mut queue = tx.open_table(QUEUE)?;
        let mut bodies = tx.open_table(BODIES)?;
        let mut policy = tx.open_table(POLICY)?;
        let mut schedule = tx.open_table(SCHEDULE)?;
        let stored =
            |queue: &redb::Table<u64, &[u8]>, id: u64| -> Result<Option<QueueEntry>, StoreError> {
                match queue.get(id)? {
                    Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                    None => Ok(None),
                }
            };
        // Moves an entry's schedule key from `old` to `new`.
        let mut reschedule =
            |old: Option<(u64, u64)>, new: Option<(u64, u64)>| -> Result<(), StoreError> {
                if old != new {
                    if let Some(key) = old {
                        schedule.remove(key)?;
                    }
                    if let Some(key) = new {
                        schedule.insert(key, ())?;
                    }
                }
                Ok(())
            };
        for write in writes {
            let found = match write {
                // Always a fresh id (`Spool::new_id`): nothing to unschedule.
                QueueWrite::Insert { entry, body } => {
                    queue.insert(entry.id.0, serde_json::to_vec(entry)?.as_slice())?;
                    bodies.insert(entry.id.0, body.as_slice())?;
                    reschedule(None, slot(entry))?;
                    true
                }
                QueueWrite::Update(entry) => match stored(&queue, entry.id.0)? {
                    Some(old) => {
                        queue.insert(entry.id.0, serde_json::to_vec(entry)?.as_slice())?;
                        reschedule(slot(&old), slot(entry))?;
                        true
                    }
                    None => false,
                },
                QueueWrite::Progress(entry) => match stored(&queue, entry.id.0)? {
                    Some(old) => {
                        let mut entry = entry.clone();
                        entry.state = old.state;
                        queue.insert(entry.id.0, serde_json::to_vec(&entry)?.as_slice())?;
                        reschedule(slot(&old), slot(&entry))?;
                        true
                    }
                    None => false,
                },
                QueueWrite::SetState(id, state) => match stored(&queue, id.0)? {
                    Some(old) => {
                        let mut entry = old.clone();
                        entry.state = *state;
                        queue.insert(id.0, serde_json::to_vec(&entry)?.as_slice())?;
                        reschedule(slot(&old), slot(&entry))?;
                        true
                    }
                    None => false,
                },
                QueueWrite::PolicyState { account, state } => {
                    match state {
                        Some(bytes) => policy.insert(account.as_str(), bytes.as_slice())?,
                        None => policy.remove(account.as_str())?,
                    };
                    true
                }
                QueueWrite::Remove(id) => {
                    // An unreadable row was never scheduled; remove it anyway.
                    let old = stored(&queue, id.0).ok().flatten();
                    bodies.remove(id.0)?;
                    reschedule(old.as_ref().and_then(slot), None)?;
                    queue.remove(id.0)?.is_some()
                }
            };
            results.push(found);
        }
    }
    Ok(results)
}

impl Store {
    /// Applies every write in one transaction; durable once this returns.
    /// Each result says whether the write found (or created) its message.
    pub fn queue_apply(&self, writes: &[QueueWrite]) -> Result<Vec<bool>, StoreError> {
        self.queue_apply_with(writes, Vec::new)
    }

    /// Like `queue_apply`, adding the rows `more` returns, asked for only
    /// once this transaction holds the store's single writer: whatever
    /// `more` reads of in-memory state cannot interleave with another write
    /// transaction (a block lift restarting the scorer's windows, say), so
    /// an older copy can never land after a newer one.
    pub fn queue_apply_with(
        &self,
        writes: &[QueueWrite],
        more: impl FnOnce() -> Vec<QueueWrite>,
    ) -> Result<Vec<bool>, StoreError> {
        let tx = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        let more = more();
        let results = write_queue(&tx, writes.iter().chain(&more))?;
        self.commit(tx)?;
        Ok(results)
    }

    pub fn queue_list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(QUEUE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// Queued messages due at `now` (earliest first, at most `limit`), and
    /// the time of the next one not yet due. Reads keys only.
    pub fn queue_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<(Vec<QueueId>, Option<u64>), StoreError> {
        let tx = self.db()?.begin_read()?;
        let schedule = tx.open_table(SCHEDULE)?;
        let mut due = Vec::new();
        for row in schedule.range(..(now.saturating_add(1), 0))?.take(limit) {
            let (key, _) = row?;
            due.push(QueueId(key.value().1));
        }
        let next = schedule
            .range((now.saturating_add(1), 0)..)?
            .next()
            .transpose()?
            .map(|(key, _)| key.value().0);
        Ok((due, next))
    }

    pub fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(QUEUE)?;
        match table.get(id.0)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn queue_body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(BODIES)?;
        Ok(table.get(id.0)?.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::store::record::queue::Envelope;

    fn entry(id: u64, next_attempt: u64) -> QueueEntry {
        let mut e = QueueEntry::new(QueueId(id), Envelope::for_tests(1));
        e.next_attempt = next_attempt;
        e
    }

    fn insert(id: u64, next_attempt: u64) -> QueueWrite {
        QueueWrite::Insert {
            entry: entry(id, next_attempt),
            body: b"x".to_vec(),
        }
    }

    #[test]
    fn the_schedule_follows_every_kind_of_write_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        store
            .queue_apply(&[
                insert(1, 100),
                insert(2, 50),
                insert(3, 300),
                insert(4, 100),
            ])
            .unwrap();
        let ids = |v: Vec<QueueId>| v.into_iter().map(|i| i.0).collect::<Vec<_>>();
        let (due, next) = store.queue_due(100, 10).unwrap();
        assert_eq!((ids(due), next), (vec![2, 1, 4], Some(300)));
        // A limit gives the earliest first.
        assert_eq!(ids(store.queue_due(100, 2).unwrap().0), vec![2, 1]);

        // Held: out of the schedule; released: back at its time.
        store
            .queue_apply(&[QueueWrite::SetState(QueueId(2), QueueState::Held)])
            .unwrap();
        assert_eq!(ids(store.queue_due(100, 10).unwrap().0), vec![1, 4]);
        // Retried later (progress keeps the stored hold state).
        store
            .queue_apply(&[
                QueueWrite::Progress(entry(1, 200)),
                QueueWrite::Progress(entry(2, 10)),
            ])
            .unwrap();
        assert_eq!(ids(store.queue_due(100, 10).unwrap().0), vec![4]);
        assert_eq!(store.queue_due(100, 10).unwrap().1, Some(200));
        store
            .queue_apply(&[QueueWrite::SetState(QueueId(2), QueueState::Queued)])
            .unwrap();
        assert_eq!(ids(store.queue_due(100, 10).unwrap().0), vec![2, 4]);
        // Update moves it; Remove drops it.
        store
            .queue_apply(&[
                QueueWrite::Update(entry(4, 400)),
                QueueWrite::Remove(QueueId(2)),
            ])
            .unwrap();
        assert_eq!(store.queue_due(100, 10).unwrap(), (vec![], Some(200)));
        assert_eq!(ids(store.queue_due(1000, 10).unwrap().0), vec![1, 3, 4]);

        // Kept across a reopen.
        drop(store);
        let store = Store::open_existing(dir.path()).unwrap();
        assert_eq!(ids(store.queue_due(1000, 10).unwrap().0), vec![1, 3, 4]);
        assert_eq!(store.queue_due(100, 10).unwrap(), (vec![], Some(200)));

        // Built from the queue in a store restored from a backup.
        let backup = dir.path().join("backup.redb");
        store.backup_to(&backup).unwrap();
        let other = tempfile::tempdir().unwrap();
        Store::restore(other.path(), &backup).unwrap();
        let restored = Store::open_existing(other.path()).unwrap();
        assert_eq!(ids(restored.queue_due(1000, 10).unwrap().0), vec![1, 3, 4]);
        assert_eq!(restored.queue_due(100, 10).unwrap(), (vec![], Some(200)));
    }
}
