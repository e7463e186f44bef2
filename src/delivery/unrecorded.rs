//! Outcomes the spool refused to record. A delivery whose outcome commit
//! failed has already reached the next hop: handing the message out again
//! would send it again. So its outcome is kept here, in memory, and the
//! message stays "in flight" (never handed out again); every worker stops
//! taking new work; one task retries the commit with backoff until the
//! spool takes it, then delivery goes on.
//!
//! Bounded: a worker has at most `COMMITS_IN_FLIGHT` outcomes waiting for
//! their commit, and takes no new message once one of them failed, so at
//! most workers × `COMMITS_IN_FLIGHT` outcomes are ever kept.
//!
//! What is kept here is lost if the process stops before the spool
//! accepts it: those recipients are sent again after the restart
//! (docs/delivery.md, "At least once").

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::runner::{Attempted, Runner};
use crate::events::{Event, EventKind};
use crate::locks::Recover;
use crate::spool::QueueId;
use crate::store::StoreError;

/// The first retry comes after this; each failure doubles it, up to `LAST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

pub(super) struct Unrecorded {
    held: Mutex<Vec<Attempted>>,
    /// True from the first failed outcome commit until every kept outcome
    /// is durable; changed only under the `held` lock.
    stalled: watch::Sender<bool>,
    /// Something was kept: the retry loop has work.
    kept: Notify,
}

impl Unrecorded {
    pub(super) fn new() -> Self {
        Self {
            held: Mutex::default(),
            stalled: watch::Sender::new(false),
            kept: Notify::new(),
        }
    }

    /// Whether workers must not send (outcomes are waiting for the spool).
    pub(super) fn is_stalled(&self) -> bool {
        *self.stalled.borrow()
    }

    /// Waits until every kept outcome is durable.
    pub(super) async fn resumed(&self) {
        let mut stalled = self.stalled.subscribe();
        let _ = stalled.wait_for(|s| !*s).await;
    }

    /// Keeps an outcome the spool refused; the first one pauses delivery.
    pub(super) fn keep(&self, runner: &Runner, attempted: Attempted, error: &StoreError) {
        let first = {
            let mut held = self.held.lock_or_recover();
            held.push(attempted);
            !self.stalled.send_replace(true)
        };
        self.kept.notify_one();
        if first {
            runner.events.emit(
                Event::new(EventKind::DeliveryPaused)
                    .reason("store")
                    .messages(1)
                    .error(error.to_string()),
            );
        }
    }

    /// Retries the kept outcomes until `stop`, then once more: until they
    /// are durable, the messages stay in `in_flight`.
    pub(super) async fn retry(
        self: Arc<Self>,
        runner: Arc<Runner>,
        in_flight: Arc<Mutex<HashSet<QueueId>>>,
        stop: CancellationToken,
    ) {
        let mut wait = FIRST_RETRY;
        loop {
            let empty = self.held.lock_or_recover().is_empty();
            if empty {
                wait = FIRST_RETRY;
                tokio::select! {
                    _ = self.kept.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            match self.commit(&runner, &in_flight).await {
                Ok(()) => wait = FIRST_RETRY,
                Err((kept, e)) => {
                    tracing::warn!(event = "delivery.unrecorded", kept, error = %e, retry_in_ms = (wait * 2).min(LAST_RETRY).as_millis() as u64, "the spool still refuses delivery outcomes; nothing is sent meanwhile");
                    wait = (wait * 2).min(LAST_RETRY);
                }
            }
        }
        // Stopping: the workers are done; one last try.
        if let Err((kept, e)) = self.commit(&runner, &in_flight).await {
            let ids: Vec<String> = self
                .held
                .lock_or_recover()
                .iter()
                .map(|a| a.id().to_string())
                .collect();
            tracing::error!(event = "delivery.unrecorded_lost", kept, error = %e, messages = %ids.join(","), "stopping with delivery outcomes the spool never took: these recipients will be sent again after the restart");
        }
    }

    /// One commit of every kept outcome; on failure they stay kept (Err:
    /// how many, and why).
    async fn commit(
        &self,
        runner: &Runner,
        in_flight: &Mutex<HashSet<QueueId>>,
    ) -> Result<(), (usize, StoreError)> {
        let batch = std::mem::take(&mut *self.held.lock_or_recover());
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<QueueId> = batch.iter().map(Attempted::id).collect();
        match runner.record_all(batch).await {
            Ok(()) => {
                {
                    let mut in_flight = in_flight.lock_or_recover();
                    for id in &ids {
                        in_flight.remove(id);
                    }
                }
                let resumed = {
                    let held = self.held.lock_or_recover();
                    held.is_empty() && self.stalled.send_replace(false)
                };
                if resumed {
                    runner
                        .events
                        .emit(Event::new(EventKind::DeliveryResumed).messages(ids.len() as u64));
                }
                Ok(())
            }
            Err((batch, e)) => {
                let mut held = self.held.lock_or_recover();
                let kept = batch.len() + held.len();
                // Oldest first, ahead of any kept meanwhile.
                held.splice(0..0, batch);
                Err((kept, e))
            }
        }
    }
}
