//! Group commit: one thread owns the spool's writes. Whatever arrived while
//! the previous commit was running goes into the next one, so concurrent
//! sessions share a single fsync, and none of them hears 250 before it.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::QueueWrite;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// Caps one commit, so a burst of huge messages does not stall everyone.
const MAX_BATCH_WRITES: usize = 1024;
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

type Job = (Vec<QueueWrite>, oneshot::Sender<Result<Vec<bool>, StoreError>>);

pub struct Committer {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run(store, rx, metrics))
            .expect("spawn the spool commit thread");
        Self {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    pub async fn submit(&self, writes: Vec<QueueWrite>) -> Result<Vec<bool>, StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send((writes, done)).ok())
            .ok_or_else(|| StoreError::Failed("the spool is closed".into()))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Failed("the spool commit thread stopped".into())))
    }
}

impl Drop for Committer {
    /// Finishes the writes already submitted and closes the store handle, so
    /// the store can be opened again as soon as the server is gone.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: Store, mut jobs: mpsc::UnboundedReceiver<Job>, metrics: Arc<Metrics>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        let mut bytes: usize = batch[0].0.iter().map(QueueWrite::size).sum();
        let mut count = batch[0].0.len();
        while count < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.0.iter().map(QueueWrite::size).sum::<usize>();
                    count += job.0.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<Vec<QueueWrite>>, Vec<_>) = batch.into_iter().unzip();
        let sizes: Vec<usize> = writes.iter().map(Vec::len).collect();
        let flat: Vec<QueueWrite> = writes.into_iter().flatten().collect();
        match store.queue_apply(&flat) {
            Ok(results) => {
                metrics.spool_fsyncs.increment(1);
                metrics.spool_committed_writes.increment(flat.len() as u64);
                let mut results = results.into_iter();
                for (reply, n) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                tracing::error!(event = "store.commit_failed", writes = flat.len(), error = %e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
