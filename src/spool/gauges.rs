//! The queue gauges (depth, held, oldest age), refreshed now and then.

use std::sync::Arc;

use super::{QueueState, Spool};
use crate::telemetry::metrics::{Metrics, QUEUE_DEPTH, QUEUE_HELD, QUEUE_OLDEST};

/// Refreshes the queue gauges now and then (depth, held, oldest age).
pub async fn watch_queue(
    metrics: Arc<Metrics>,
    spool: Arc<dyn Spool>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Ok(list) = spool.list().await {
            let now = spool.now();
            let queued = list.iter().filter(|e| e.state == QueueState::Queued);
            let oldest = queued
                .clone()
                .map(|e| now.saturating_sub(e.envelope.received_at))
                .max()
                .unwrap_or(0);
            metrics.gauge(QUEUE_DEPTH).set(queued.count() as f64);
            metrics.gauge(QUEUE_HELD).set(
                list.iter()
                    .filter(|e| e.state != QueueState::Queued)
                    .count() as f64,
            );
            metrics.gauge(QUEUE_OLDEST).set(oldest as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
