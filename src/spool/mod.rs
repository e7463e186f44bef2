//! The `Spool` seam: durable insert (the message is on disk before the server
//! says 250), hold and release, and what delivery workers need to drain it.

mod committer;
mod gauges;

pub use committer::Pending;
pub use gauges::watch_queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::store::{Store, StoreError};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

pub use crate::store::record::queue::{
    Envelope, QueueEntry, QueueId, QueueState, QueueWrite, RcptState, RcptStatus, Recipient,
};

/// Something whose state rides along with the spool's commits: asked for
/// its changed rows just before each group commit.
pub trait CommitHook: Send + Sync + 'static {
    /// Rows to write now; with `all`, every changed row (a timed flush or
    /// shutdown), otherwise those the hook judges due.
    fn dirty_writes(&self, all: bool) -> Vec<QueueWrite>;
    /// Whether rows are waiting, so the committer flushes them in time.
    fn has_dirty(&self) -> bool;
}

#[async_trait]
pub trait Spool: Send + Sync + 'static {
    /// A fresh id, needed before insert for the Received header.
    fn new_id(&self) -> QueueId;
    /// Applies writes durably; concurrent callers may share one commit.
    /// Each result says whether the write found (or created) its message.
    async fn apply(&self, writes: Vec<QueueWrite>) -> Result<Vec<bool>, StoreError>;
    /// Every message, queued or held, oldest first.
    async fn list(&self) -> Result<Vec<QueueEntry>, StoreError>;
    async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError>;
    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Queued messages due now (earliest first, at most `limit`), and when
    /// the next one falls due.
    async fn due(&self, limit: usize) -> Result<(Vec<QueueId>, Option<u64>), StoreError> {
        let now = self.now();
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for e in self.list().await? {
            if e.state != QueueState::Queued {
                continue;
            }
            if e.next_attempt <= now {
                due.push((e.next_attempt, e.id));
            } else {
                next = Some(next.map_or(e.next_attempt, |t| t.min(e.next_attempt)));
            }
        }
        due.sort();
        Ok((
            due.into_iter().take(limit).map(|(_, id)| id).collect(),
            next,
        ))
    }
    /// Waits until something may be ready, or `max` passes.
    async fn wait_for_work(&self, max: Duration);
    /// Unix seconds now, by the spool's clock.
    fn now(&self) -> u64;

    /// False once a write failed in a way that stops every later one (an
    /// I/O error), until the store takes writes again: delivery sends
    /// nothing whose outcome it could not record.
    fn accepts_writes(&self) -> bool {
        true
    }

    /// Announces a mail transaction (held from MAIL until its message is
    /// inserted or refused), so a group commit can wait for it.
    fn pending(&self) -> Option<Pending> {
        None
    }

    /// Returns only once the message is durable.
    async fn insert(
        &self,
        id: QueueId,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<(), StoreError> {
        let entry = QueueEntry::new(id, envelope);
        self.apply(vec![QueueWrite::Insert {
            entry,
            body: message,
        }])
        .await
        .map(|_| ())
    }

    async fn hold(&self, id: QueueId) -> Result<bool, StoreError> {
        Ok(self
            .apply(vec![QueueWrite::SetState(id, QueueState::Held)])
            .await?[0])
    }

    async fn release(&self, id: QueueId) -> Result<bool, StoreError> {
        Ok(self
            .apply(vec![QueueWrite::SetState(id, QueueState::Queued)])
            .await?[0])
    }

    async fn remove(&self, id: QueueId) -> Result<bool, StoreError> {
        Ok(self.apply(vec![QueueWrite::Remove(id)]).await?[0])
    }

    /// Queued messages whose next attempt is due, oldest first.
    async fn ready(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let now = self.now();
        let mut all = self.list().await?;
        all.retain(|e| e.state == QueueState::Queued && e.next_attempt <= now);
        Ok(all)
    }
}

/// The spool on the embedded store, with group commit.
pub struct StoreSpool {
    store: Store,
    clock: Arc<dyn Clock>,
    last_id: AtomicU64,
    work: Arc<Notify>,
    committer: committer::Committer,
}

impl StoreSpool {
    pub fn new(store: Store, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        Self::with_hook(store, clock, metrics, None, &Health::new())
    }

    /// A spool whose every commit also carries `hook`'s changed rows; its
    /// commit thread registers with `health`.
    pub fn with_hook(
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        hook: Option<Arc<dyn CommitHook>>,
        health: &Arc<Health>,
    ) -> Self {
        Self {
            committer: committer::Committer::start(store.clone(), metrics, hook, health),
            store,
            clock,
            last_id: AtomicU64::new(0),
            work: Arc::new(Notify::new()),
        }
    }

    async fn read<T: Send + 'static>(
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

    async fn apply(&self, writes: Vec<QueueWrite>) -> Result<Vec<bool>, StoreError> {
        let wakes = writes.iter().any(|w| {
            matches!(
                w,
                QueueWrite::Insert { .. }
                    | QueueWrite::Update(_)
                    | QueueWrite::Progress(_)
                    | QueueWrite::SetState(..)
            )
        });
        let results = self.committer.submit(writes).await?;
        if wakes {
            self.work.notify_one();
        }
        Ok(results)
    }

    async fn list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.read(|s| s.queue_list()).await
    }

    // One entry or one body is a point read from redb's cache: done in
    // place, cheaper than a trip through the blocking pool. Listing the
    // whole queue may be long and goes to the pool.
    async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        self.store.queue_get(id)
    }

    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.queue_body(id)
    }

    // The schedule index: keys only, however long the queue.
    async fn due(&self, limit: usize) -> Result<(Vec<QueueId>, Option<u64>), StoreError> {
        let now = self.now();
        self.read(move |s| s.queue_due(now, limit)).await
    }

    async fn wait_for_work(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.work.notified()).await;
    }

    fn now(&self) -> u64 {
        self.clock.unix()
    }

    fn accepts_writes(&self) -> bool {
        self.store.failure().is_none()
    }

    fn pending(&self) -> Option<Pending> {
        Some(self.committer.pending())
    }
}
