//! Group commit: one thread owns the spool's writes. Whatever arrived while
//! the previous commit was running goes into the next one, so concurrent
//! sessions share a single fsync, and none of them hears 250 before it.
//!
//! On a fast disk a commit takes a fraction of a millisecond, too short for
//! others to arrive. So when other sessions are in the middle of a mail
//! transaction (`Pending`, from MAIL to the final reply), the thread waits
//! for them, at most `WINDOW`. A lone client never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{CommitHook, QueueWrite};
use crate::store::{Store, StoreError};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Caps one commit, so a burst of huge messages does not stall everyone.
const MAX_BATCH_WRITES: usize = 1024;
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// The longest a commit waits for messages still being received.
const WINDOW: Duration = Duration::from_millis(5);
/// Its name for readiness and in `task.panicked`.
pub const THREAD: &str = "spool commit thread";
/// With the hook's rows waiting and no commit coming, write them after this.
const HOOK_FLUSH: Duration = Duration::from_secs(1);

type Job = (
    Vec<QueueWrite>,
    oneshot::Sender<Result<Vec<bool>, StoreError>>,
);

pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
}

/// A mail transaction in progress: the committer may wait for its message. Dropping it
/// (message queued or refused) says it is no longer coming.
pub struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Committer {
    /// Starts the commit thread. A panic in it is caught and reported
    /// (`health`); the writes waiting then get an error, never a 250.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        hook: Option<Arc<dyn CommitHook>>,
        health: &Arc<Health>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        let alive = health.register(THREAD);
        let thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || alive.run_blocking(|| run(store, rx, metrics, counter, hook)))
            .expect("spawn the spool commit thread");
        Self {
            jobs: Some(tx),
            thread: Some(thread),
            in_flight,
        }
    }

    pub fn pending(&self) -> Pending {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Pending(self.in_flight.clone())
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

fn run(
    store: Store,
    jobs: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    hook: Option<Arc<dyn CommitHook>>,
) {
    let inserts = |job: &Job| {
        job.0
            .iter()
            .filter(|w| matches!(w, QueueWrite::Insert { .. }))
            .count()
    };
    // Messages answered with an I/O error, to remove once the store is
    // reopened.
    let mut undo: Vec<QueueWrite> = Vec::new();
    loop {
        // Another writer (an account change, the readiness probe) may have
        // met the I/O error: the store refuses writes until reopened.
        if store.failure().is_some() && !recover(&store, &jobs, &mut undo) {
            break;
        }
        // Look at the hook's rows every HOOK_FLUSH even when no commit
        // comes: some change without one (delivery feedback, logins).
        let first = match jobs.recv_timeout(HOOK_FLUSH) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if hook.as_ref().is_some_and(|h| h.has_dirty()) {
                    commit_hook_rows(&store, &metrics, hook.as_deref());
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let deadline = Instant::now() + WINDOW;
        let mut inserted = inserts(&first);
        let mut bytes: usize = first.0.iter().map(QueueWrite::size).sum();
        let mut count = first.0.len();
        let mut batch = vec![first];
        while count < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                // Others are still receiving a message: give them a moment.
                Err(mpsc::TryRecvError::Empty) if in_flight.load(Ordering::SeqCst) > inserted => {
                    match jobs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            inserted += inserts(&job);
            bytes += job.0.iter().map(QueueWrite::size).sum::<usize>();
            count += job.0.len();
            batch.push(job);
        }
        let (writes, replies): (Vec<Vec<QueueWrite>>, Vec<_>) = batch.into_iter().unzip();
        let sizes: Vec<usize> = writes.iter().map(Vec::len).collect();
        let flat: Vec<QueueWrite> = writes.into_iter().flatten().collect();
        let own = flat.len();
        tracing::trace!(
            event = "spool.commit",
            writes = flat.len(),
            inserts = inserted
        );
        // State that counted these messages joins the commit (the hook says
        // how often), read inside its transaction.
        let rows = || {
            hook.as_ref()
                .map_or_else(Vec::new, |h| h.dirty_writes(false))
        };
        match store.queue_apply_with(&flat, rows) {
            Ok(results) => {
                let written = results.len();
                metrics.spool_fsyncs.increment(1);
                metrics.spool_committed_writes.increment(written as u64);
                let mut results = results.into_iter().take(own);
                for (reply, n) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                let e = store.failed(e);
                if e.needs_reopen() {
                    // Refused, yet perhaps on disk (the data was written, its
                    // fsync failed): taken out again once the store is back.
                    undo.extend(flat.iter().filter_map(|w| match w {
                        QueueWrite::Insert { entry, .. } => Some(QueueWrite::Remove(entry.id)),
                        _ => None,
                    }));
                }
                tracing::error!(event = "store.commit_failed", writes = flat.len(), error = %e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    // Shutting down: what the hook still holds.
    commit_hook_rows(&store, &metrics, hook.as_deref());
}

/// The first wait before reopening the store after an I/O error; each
/// failed reopen doubles it, up to `LAST_REOPEN`, so space freed is used
/// within seconds.
const FIRST_REOPEN: Duration = Duration::from_millis(250);
const LAST_REOPEN: Duration = Duration::from_secs(2);

/// The store refuses writes until it is reopened: answers every write
/// meanwhile with its error (clients get 452 or 451, never 250), and tries
/// to reopen it now and then. Once reopened, first removes the messages in
/// `undo`: their commit failed, so their clients were told to send them
/// again, but the data may have reached the disk all the same. False: the
/// spool closed meanwhile.
fn recover(store: &Store, jobs: &mpsc::Receiver<Job>, undo: &mut Vec<QueueWrite>) -> bool {
    let mut wait = FIRST_REOPEN;
    let mut tries = 0u32;
    loop {
        let until = Instant::now() + wait;
        loop {
            match jobs.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok((_, reply)) => {
                    let _ = reply.send(Err(store.unavailable_error()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        tries += 1;
        match store.reopen(undo) {
            Ok(found) => {
                let removed = found.iter().filter(|f| **f).count();
                tracing::warn!(
                    event = "store.reopened",
                    tries,
                    refused_removed = removed,
                    "the store takes writes again"
                );
                undo.clear();
                return true;
            }
            Err(e) => {
                let e = store.failed(e);
                if tries == 1 || tries.is_multiple_of(30) {
                    tracing::error!(event = "store.reopen_failed", tries, error = %e, "the store still refuses writes; trying again");
                }
                wait = (wait * 2).min(LAST_REOPEN);
            }
        }
    }
}

/// Writes every row the hook holds, in a commit of their own.
fn commit_hook_rows(store: &Store, metrics: &Metrics, hook: Option<&dyn CommitHook>) {
    let Some(hook) = hook else {
        return;
    };
    if !hook.has_dirty() {
        return;
    }
    match store.queue_apply_with(&[], || hook.dirty_writes(true)) {
        Ok(written) => {
            metrics.spool_fsyncs.increment(1);
            metrics
                .spool_committed_writes
                .increment(written.len() as u64);
        }
        Err(e) => {
            let e = store.failed(e);
            tracing::error!(event = "store.commit_failed", error = %e);
        }
    }
}
