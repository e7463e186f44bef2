//! The spool's tables: envelope records in `queue`, message bytes in `bodies`.
//! Writes are applied in batches: one commit, one fsync, for many messages.

use redb::{ReadableDatabase, ReadableTable};

use super::{BODIES, POLICY, QUEUE, Store, StoreError};
use crate::spool::{QueueEntry, QueueId, QueueWrite};

impl Store {
    /// Applies every write in one transaction; durable once this returns.
    /// Each result says whether the write found (or created) its message.
    pub fn queue_apply(&self, writes: &[QueueWrite]) -> Result<Vec<bool>, StoreError> {
        let tx = self.db().begin_write()?;
        let mut results = Vec::with_capacity(writes.len());
        {
            let mut queue = tx.open_table(QUEUE)?;
            let mut bodies = tx.open_table(BODIES)?;
            let mut policy = tx.open_table(POLICY)?;
            for write in writes {
                let found = match write {
                    QueueWrite::Insert { entry, body } => {
                        queue.insert(entry.id.0, serde_json::to_vec(entry)?.as_slice())?;
                        bodies.insert(entry.id.0, body.as_slice())?;
                        true
                    }
                    QueueWrite::Update(entry) => {
                        let exists = queue.get(entry.id.0)?.is_some();
                        if exists {
                            queue.insert(entry.id.0, serde_json::to_vec(entry)?.as_slice())?;
                        }
                        exists
                    }
                    QueueWrite::Progress(entry) => {
                        let stored = match queue.get(entry.id.0)? {
                            Some(v) => Some(serde_json::from_slice::<QueueEntry>(v.value())?),
                            None => None,
                        };
                        match stored {
                            Some(stored) => {
                                let mut entry = entry.clone();
                                entry.state = stored.state;
                                queue.insert(entry.id.0, serde_json::to_vec(&entry)?.as_slice())?;
                                true
                            }
                            None => false,
                        }
                    }
                    QueueWrite::SetState(id, state) => {
                        let entry = match queue.get(id.0)? {
                            Some(v) => Some(serde_json::from_slice::<QueueEntry>(v.value())?),
                            None => None,
                        };
                        match entry {
                            Some(mut entry) => {
                                entry.state = *state;
                                queue.insert(id.0, serde_json::to_vec(&entry)?.as_slice())?;
                                true
                            }
                            None => false,
                        }
                    }
                    QueueWrite::PolicyState { account, state } => {
                        match state {
                            Some(bytes) => policy.insert(account.as_str(), bytes.as_slice())?,
                            None => policy.remove(account.as_str())?,
                        };
                        true
                    }
                    QueueWrite::Remove(id) => {
                        bodies.remove(id.0)?;
                        queue.remove(id.0)?.is_some()
                    }
                };
                results.push(found);
            }
        }
        tx.commit()?;
        Ok(results)
    }

    pub fn queue_list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(QUEUE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    pub fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(QUEUE)?;
        match table.get(id.0)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn queue_body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(BODIES)?;
        Ok(table.get(id.0)?.map(|v| v.value().to_vec()))
    }
}
