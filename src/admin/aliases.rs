//! Admin API routes for aliases: list, add, remove. Each answers with the
//! account as `account show` prints it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{AccountView, AdminState};
use crate::accounts::AccountError;

#[derive(Serialize, Deserialize)]
pub struct NewAlias {
    pub alias: String,
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route(
            "/v1/accounts/{address}/aliases",
            get(list_aliases).post(add_alias),
        )
        .route(
            "/v1/accounts/{address}/aliases/{alias}",
            delete(remove_alias),
        )
}

async fn list_aliases(
    State(state): State<AdminState>,
    Path(address): Path<String>,
) -> Result<Json<Vec<String>>, AccountError> {
    Ok(Json(state.accounts.alias_list(&address).await?))
}

async fn add_alias(
    State(state): State<AdminState>,
    Path(address): Path<String>,
    Json(new): Json<NewAlias>,
) -> Result<(StatusCode, Json<AccountView>), AccountError> {
    let account = state
        .accounts
        .alias_add(&address, &new.alias, "admin-api")
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

async fn remove_alias(
    State(state): State<AdminState>,
    Path((address, alias)): Path<(String, String)>,
) -> Result<Json<AccountView>, AccountError> {
    let account = state
        .accounts
        .alias_remove(&address, &alias, "admin-api")
        .await?;
    Ok(Json(account.into()))
}
