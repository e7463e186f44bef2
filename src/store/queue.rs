//! The spool's tables: envelope records in `queue`, message bytes in `bodies`,
//! both written in one commit.

use redb::{ReadableDatabase, ReadableTable};

use super::{BODIES, QUEUE, Store, StoreError};
use crate::spool::{QueueEntry, QueueId, QueueState};

impl Store {
    /// Durable once this returns: envelope and body in one fsync'd commit.
    pub fn queue_insert(&self, entry: &QueueEntry, body: &[u8]) -> Result<(), StoreError> {
        let tx = self.db().begin_write()?;
        {
            let record = serde_json::to_vec(entry)?;
            tx.open_table(QUEUE)?
                .insert(entry.id.0, record.as_slice())?;
            tx.open_table(BODIES)?.insert(entry.id.0, body)?;
        }
        tx.commit()?;
        Ok(())
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

    /// Removes a message (delivered or deleted); `false` if it was not there.
    pub fn queue_remove(&self, id: QueueId) -> Result<bool, StoreError> {
        let tx = self.db().begin_write()?;
        let existed = tx.open_table(QUEUE)?.remove(id.0)?.is_some();
        tx.open_table(BODIES)?.remove(id.0)?;
        tx.commit()?;
        Ok(existed)
    }

    /// Moves a message between queued and held; `false` if it was not there.
    pub fn queue_set_state(&self, id: QueueId, state: QueueState) -> Result<bool, StoreError> {
        let tx = self.db().begin_write()?;
        let found = {
            let mut table = tx.open_table(QUEUE)?;
            let entry = match table.get(id.0)? {
                Some(v) => {
                    let mut entry: QueueEntry = serde_json::from_slice(v.value())?;
                    entry.state = state;
                    Some(entry)
                }
                None => None,
            };
            if let Some(entry) = &entry {
                table.insert(id.0, serde_json::to_vec(entry)?.as_slice())?;
            }
            entry.is_some()
        };
        tx.commit()?;
        Ok(found)
    }
}
