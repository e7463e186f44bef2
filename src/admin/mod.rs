//! The admin HTTP API (loopback by default): the CLI's way into a running
//! server. Bearer token from a 0600 file, compared in constant time; any
//! request with an `Origin` header is refused (no browser may drive it).

pub mod client;
pub mod metrics;
pub mod ops;

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

pub use ops::{OpError, OpErrorKind, Ops};

pub const TOKEN_FILE: &str = "admin.token";
/// The address the admin API actually listens on, for the CLI.
pub const ADDR_FILE: &str = "admin.addr";

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, creating a random one (mode 0600) on first start.
pub fn ensure_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if token.len() >= 32 {
            return Ok(token);
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::files::write_private(&path, token.as_bytes())?;
    Ok(token)
}

#[derive(Clone)]
struct AdminState {
    token: String,
    ops: Ops,
}

pub fn router(token: String, ops: Ops) -> Router {
    let state = AdminState { token, ops };
    Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/v1/ops", post(run_op))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers.contains_key(header::ORIGIN) {
        return error(
            StatusCode::FORBIDDEN,
            "requests with an Origin header are refused",
        );
    }
    if !bearer_matches(headers, &state.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(request).await
}

/// Constant-time comparison, so response timing says nothing about the token.
pub(crate) fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND => OpErrorKind::NotFound,
        StatusCode::BAD_REQUEST => OpErrorKind::Invalid,
        _ => OpErrorKind::Internal,
    };
    (
        status,
        Json(OpError {
            kind,
            error: message.to_string(),
        }),
    )
        .into_response()
}

async fn run_op(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let request: ops::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    tracing::info!(event = "admin.request", op = request.name());
    match state.ops.run(request).await {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            let status = match e.kind {
                OpErrorKind::Invalid => StatusCode::BAD_REQUEST,
                OpErrorKind::NotFound => StatusCode::NOT_FOUND,
                OpErrorKind::Conflict => StatusCode::CONFLICT,
                OpErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(e)).into_response()
        }
    }
}
