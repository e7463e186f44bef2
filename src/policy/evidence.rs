//! Policy evidence expires: the refused message that tipped a block is kept
//! for `[policy] evidence_retention`, then deleted.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::spool::{QueueState, QueueWrite, Spool};

/// Deletes evidence older than `retention`; returns how many went.
pub async fn sweep(spool: &dyn Spool, retention: Duration) -> usize {
    let now = spool.now();
    let expired: Vec<QueueWrite> = match spool.list().await {
        Ok(list) => list
            .into_iter()
            .filter(|e| {
                e.state == QueueState::Evidence
                    && e.envelope.received_at + retention.as_secs() <= now
            })
            .map(|e| QueueWrite::Remove(e.id))
            .collect(),
        Err(e) => {
            tracing::error!(event = "store.error", error = %e, "cannot read the queue to expire evidence");
            return 0;
        }
    };
    let n = expired.len();
    if n > 0
        && let Err(e) = spool.apply(expired).await
    {
        tracing::error!(event = "store.error", error = %e, "cannot expire evidence");
        return 0;
    }
    n
}

/// Sweeps every `every` until shutdown.
pub async fn run(
    spool: Arc<dyn Spool>,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let n = sweep(&*spool, retention).await;
        if n > 0 {
            tracing::info!(event = "policy.evidence_expired", messages = n);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
