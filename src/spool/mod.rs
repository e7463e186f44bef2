//! The `Spool` seam: durable insert (the message is on disk before the server
//! says 250), hold and release, and what delivery workers need to drain it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// A queue id: milliseconds since the epoch in the high bits, a counter in the
/// low 16, shown as 16 hex digits. Ordered by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s.trim(), 16)
            .map(QueueId)
            .map_err(|_| format!("{s:?} is not a queue id (16 hex digits)"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// ORCPT parameter, kept for DSNs.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// smtp-proto's RCPT_NOTIFY_* bits.
    #[serde(default)]
    pub notify: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<Recipient>,
    /// Primary address of the authenticated account.
    pub account: String,
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub received_at: u64,
    pub size: u64,
    /// smtp-proto's MAIL_* bits (BODY, SMTPUTF8, RET).
    #[serde(default)]
    pub mail_flags: u64,
    #[serde(default)]
    pub envid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Queued,
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: QueueId,
    pub envelope: Envelope,
    pub state: QueueState,
    #[serde(default)]
    pub attempts: u32,
}

#[async_trait]
pub trait Spool: Send + Sync + 'static {
    /// A fresh id, needed before insert for the Received header.
    fn new_id(&self) -> QueueId;
    /// Returns only once the message is durable.
    async fn insert(
        &self,
        id: QueueId,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<(), StoreError>;
    async fn hold(&self, id: QueueId) -> Result<bool, StoreError>;
    async fn release(&self, id: QueueId) -> Result<bool, StoreError>;
    /// Messages ready for delivery, oldest first.
    async fn ready(&self) -> Result<Vec<QueueEntry>, StoreError>;
    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Delivery finished (or the message was deleted): forget it.
    async fn remove(&self, id: QueueId) -> Result<bool, StoreError>;
    /// Waits until something may be ready, or `max` passes.
    async fn wait_for_work(&self, max: Duration);
}

/// The spool on the embedded store.
pub struct StoreSpool {
    store: Store,
    clock: Arc<dyn Clock>,
    last_id: AtomicU64,
    work: Notify,
}

impl StoreSpool {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            last_id: AtomicU64::new(0),
            work: Notify::new(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| StoreError::Failed(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl Spool for StoreSpool {
    fn new_id(&self) -> QueueId {
        let millis = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let floor = millis << 16;
        let mut last = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last + 1);
            match self
                .last_id
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return QueueId(next),
                Err(current) => last = current,
            }
        }
    }

    async fn insert(
        &self,
        id: QueueId,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<(), StoreError> {
        let entry = QueueEntry {
            id,
            envelope,
            state: QueueState::Queued,
            attempts: 0,
        };
        self.blocking(move |s| s.queue_insert(&entry, &message))
            .await?;
        self.work.notify_one();
        Ok(())
    }

    async fn hold(&self, id: QueueId) -> Result<bool, StoreError> {
        self.blocking(move |s| s.queue_set_state(id, QueueState::Held))
            .await
    }

    async fn release(&self, id: QueueId) -> Result<bool, StoreError> {
        let found = self
            .blocking(move |s| s.queue_set_state(id, QueueState::Queued))
            .await?;
        self.work.notify_one();
        Ok(found)
    }

    async fn ready(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let mut all = self.blocking(|s| s.queue_list()).await?;
        all.retain(|e| e.state == QueueState::Queued);
        Ok(all)
    }

    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(move |s| s.queue_body(id)).await
    }

    async fn remove(&self, id: QueueId) -> Result<bool, StoreError> {
        self.blocking(move |s| s.queue_remove(id)).await
    }

    async fn wait_for_work(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.work.notified()).await;
    }
}
