//! The metrics listener: `/metrics` (Prometheus text), `/healthz` (liveness)
//! and `/readyz` (readiness), with no authentication and nothing else, so
//! the admin API can stay on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::store::{Store, StoreError};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    store: Store,
    health: Arc<Health>,
    disk: DiskCheck,
    /// The last write probe: when, and what it found. One probe at a time;
    /// a scrape within `PROBE_FRESH` of it reuses its answer.
    probe: Arc<tokio::sync::Mutex<Option<Probed>>>,
    /// A probe's write is still running (it outlived its timeout): no
    /// second one piles up behind it.
    writing: Arc<AtomicBool>,
}

/// When the last write probe ran, and what it found.
type Probed = (Instant, Result<(), String>);

/// How long a write probe's answer stands.
const PROBE_FRESH: Duration = Duration::from_secs(1);
/// A probe slower than this counts as a failure (a hung disk).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The META key the probe writes (the time of the probe).
const PROBE_KEY: &str = "ready_probe";

/// Where the data lives and how much free space readiness wants there.
#[derive(Clone)]
pub struct DiskCheck {
    pub dir: std::path::PathBuf,
    pub min_free: u64,
}

pub fn router(metrics: Arc<Metrics>, store: Store, health: Arc<Health>, disk: DiskCheck) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(health_check))
        .route("/readyz", get(ready))
        .with_state(MetricsState {
            metrics,
            store,
            health,
            disk,
            probe: Arc::default(),
            writing: Arc::default(),
        })
}

async fn render(State(state): State<MetricsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// 200 while the process serves HTTP: liveness. It touches nothing else
/// (a store that fails is readiness's business: a restart does not free a
/// disk).
async fn health_check() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// 200 `ready` when the store takes a write (and its file was not found
/// damaged: `store::verify`), the data folder's disk has
/// `server.min_free_disk` free, and the spool's commit thread and every
/// delivery worker are alive; otherwise 503, one line per check that
/// failed.
async fn ready(State(state): State<MetricsState>) -> impl IntoResponse {
    let mut failing = Vec::new();
    if let Some(e @ StoreError::Damaged(_)) = state.store.failure() {
        failing.push(e.to_string());
    } else if let Err(e) = probe(&state).await {
        failing.push(format!("store: cannot write: {e}"));
    }
    let disk = state.disk.clone();
    let free = tokio::task::spawn_blocking(move || crate::files::free_space(&disk.dir))
        .await
        .ok()
        .flatten();
    if let Some(free) = free
        && free < state.disk.min_free
    {
        failing.push(format!(
            "disk: {} MiB free in {}, below server.min_free_disk ({} MiB)",
            free >> 20,
            state.disk.dir.display(),
            state.disk.min_free >> 20
        ));
    }
    for (part, stopped, all) in state.health.stopped() {
        failing.push(match all {
            1 => format!("{part}: stopped"),
            _ => format!("{part}: {stopped} of {all} stopped"),
        });
    }
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            failing.iter().map(|l| format!("{l}\n")).collect(),
        )
    }
}

/// A small write transaction (fsync'd like every commit), at most one per
/// `PROBE_FRESH` however many scrapes come.
async fn probe(state: &MetricsState) -> Result<(), String> {
    let mut last = state.probe.lock().await;
    if let Some((at, found)) = &*last
        && at.elapsed() < PROBE_FRESH
    {
        return found.clone();
    }
    if state.writing.swap(true, Ordering::SeqCst) {
        let found = Err("the last write probe has not finished (a hung disk?)".to_string());
        *last = Some((Instant::now(), found.clone()));
        return found;
    }
    let (store, writing) = (state.store.clone(), state.writing.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let write = tokio::task::spawn_blocking(move || {
        let written = store
            .meta_set(PROBE_KEY, now.to_string().as_bytes())
            .map_err(|e| e.to_string());
        writing.store(false, Ordering::SeqCst);
        written
    });
    let found = match tokio::time::timeout(PROBE_TIMEOUT, write).await {
        Ok(Ok(found)) => found,
        // It panicked (inside the store library): `writing` stays set, as
        // a store that panics on a write will not take the next one.
        Ok(Err(e)) => Err(format!("the write probe failed: {e}")),
        Err(_) => Err(format!(
            "the write probe took over {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    };
    *last = Some((Instant::now(), found.clone()));
    found
}
