//! The admin HTTP API (loopback by default): the CLI's way into a running
//! server. Bearer token from a 0600 file, compared in constant time; any
//! request with an `Origin` header is refused (no browser may drive it).

mod aliases;
pub mod client;

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::accounts::{AccountError, Accounts};

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
    crate::tls::write_private(&path, token.as_bytes())?;
    Ok(token)
}

#[derive(Clone)]
struct AdminState {
    token: String,
    accounts: Accounts,
}

pub fn router(token: String, accounts: Accounts) -> Router {
    let state = AdminState { token, accounts };
    Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/v1/accounts", post(add_account))
        .route("/v1/accounts/{address}", get(show_account))
        .merge(aliases::routes())
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

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.to_string(),
        }),
    )
        .into_response()
}

impl IntoResponse for AccountError {
    fn into_response(self) -> Response {
        let status = match &self {
            AccountError::Address(_) | AccountError::Password(_) => StatusCode::BAD_REQUEST,
            AccountError::Exists(_) | AccountError::AddressTaken(_) => StatusCode::CONFLICT,
            AccountError::NotFound(_) | AccountError::NoAlias { .. } => StatusCode::NOT_FOUND,
            AccountError::Store(_) | AccountError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, &self.to_string())
    }
}

#[derive(Serialize, Deserialize)]
pub struct NewAccount {
    pub address: String,
    pub password: String,
}

/// What `account show` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountView {
    pub address: String,
    pub aliases: Vec<String>,
    pub created: u64,
    pub disabled: bool,
}

impl From<crate::accounts::Account> for AccountView {
    fn from(a: crate::accounts::Account) -> Self {
        Self {
            address: a.address,
            aliases: a.aliases,
            created: a.created,
            disabled: a.disabled,
        }
    }
}

async fn add_account(
    State(state): State<AdminState>,
    Json(new): Json<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), AccountError> {
    let account = state
        .accounts
        .add(&new.address, &new.password, "admin-api")
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

async fn show_account(
    State(state): State<AdminState>,
    axum::extract::Path(address): axum::extract::Path<String>,
) -> Result<Json<AccountView>, AccountError> {
    Ok(Json(state.accounts.get(&address).await?.into()))
}
