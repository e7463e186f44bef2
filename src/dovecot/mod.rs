//! The Dovecot passdb endpoint: Dovecot's Lua passdb
//! (contrib/dovecot/mailwarden-auth.lua) posts each IMAP/POP3 login here,
//! and the running daemon answers it by the SMTP AUTH rules, with the same
//! lockout counters (docs/decisions.md, "Dovecot asks over loopback HTTP").
//!
//! Loopback only, a bearer token compared in constant time, no `Origin`
//! header. No password hash ever leaves: the answer is the canonical
//! address (200), one body for every failure (403), or a temporary failure
//! (503: a lockout, a full argon2 queue).

mod token;
mod verdict;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::accounts::{Accounts, Authenticator};
use crate::events::Events;

pub use token::read_token;
pub use verdict::Verdict;

/// The path the Lua script posts to.
pub const AUTH_PATH: &str = "/dovecot/auth";

/// Everything the endpoint needs.
pub struct DovecotParts {
    pub accounts: Accounts,
    pub authenticator: Arc<dyn Authenticator>,
    pub events: Arc<dyn Events>,
    pub token: String,
    /// `[dovecot] refuse_during_operator_block`.
    pub refuse_during_operator_block: bool,
}

/// One login as Dovecot passes it (form-encoded: Lua has no JSON).
#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
    /// The client's address (`req.rip`): the one counted.
    #[serde(default)]
    rip: String,
    #[serde(default)]
    service: String,
}

pub fn router(parts: DovecotParts) -> Router {
    let parts = Arc::new(parts);
    Router::new()
        .route(AUTH_PATH, post(login))
        .layer(middleware::from_fn_with_state(parts.clone(), guard))
        .with_state(parts)
}

/// Anything but the right token and no `Origin` is refused with a status
/// the script turns into a temporary failure: a misconfiguration never
/// reads as a wrong password.
async fn guard(State(parts): State<Arc<DovecotParts>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers.contains_key(header::ORIGIN) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if !token::bearer_matches(headers, &parts.token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

async fn login(State(parts): State<Arc<DovecotParts>>, Form(login): Form<Login>) -> Response {
    let verdict = verdict::judge(
        &parts,
        &login.user,
        &login.password,
        &login.rip,
        &login.service,
    )
    .await;
    match verdict {
        Verdict::Ok(address) => (StatusCode::OK, address).into_response(),
        Verdict::Failed => (StatusCode::FORBIDDEN, "authentication failed").into_response(),
        Verdict::TryLater => (StatusCode::SERVICE_UNAVAILABLE, "temporary failure").into_response(),
    }
}
