//! The metrics listener: `/metrics` (Prometheus text) and `/healthz`, with
//! no authentication and nothing else, so the admin API can stay on loopback.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::store::Store;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    store: Store,
}

pub fn router(metrics: Arc<Metrics>, store: Store) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(health))
        .with_state(MetricsState { metrics, store })
}

async fn render(State(state): State<MetricsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// 200 while the store answers a read; listeners are up if this one is.
async fn health(State(state): State<MetricsState>) -> impl IntoResponse {
    let store = state.store.clone();
    let ok = tokio::task::spawn_blocking(move || store.meta_get("key_id").is_ok())
        .await
        .unwrap_or(false);
    match ok {
        true => (StatusCode::OK, "ok\n"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}
