//! `/api/v1/tokens` (admin scope): create, list and revoke API tokens. A token is shown
//! once, in the create response; only its SHA-256 is stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailferry_store::TokenRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::new_token;
use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, JsonBody};
use mailferry_model::Scope;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(delete))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// What the token is for (e.g. the automation using it): one line of at most 100 bytes
    /// once white space around it (Rust's `trim`, spelled out in the pattern) is removed.
    #[schema(min_length = 1, pattern = r"^[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f](?:[^\u0000-\u001f\u007f-\u009f]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f])?[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub name: String,
    pub scope: Scope,
}

/// A token without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        Self { id: t.id, name: t.name, scope: t.scope, created_at: t.created_at }
    }
}

/// A new token: the only time the token itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
    /// The bearer token. Store it now: it cannot be shown again.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// Create a token. `Idempotency-Key` is ignored here: replaying the response would mean
/// storing the token itself.
#[utoipa::path(post, operation_id = "create_token", path = "/tokens", tag = "tokens", request_body = TokenBody,
    responses(
        (status = 201, description = "Created; `token` is shown only in this response", body = TokenCreated),
        (status = 422, description = "Invalid name or scope", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(State(state): State<AppState>, JsonBody(body): JsonBody<TokenBody>) -> ApiResult<Response> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::Validation {
            detail: "invalid token name".into(),
            errors: vec![FieldError::invalid("name", "a token name is one non-empty line of at most 100 bytes")],
        });
    }
    let (token, hash) = new_token();
    let record = state.store.create_token(&name, body.scope, &hash).await?;
    tracing::info!(token.id = record.id, token.scope = record.scope.as_str(), "API token created");
    let created = TokenCreated {
        id: record.id,
        name: record.name,
        scope: record.scope,
        created_at: record.created_at,
        token,
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    response.extensions_mut().insert(crate::audit::AuditTarget(record.id.to_string()));
    Ok(response)
}

/// Every token (never the tokens themselves).
#[utoipa::path(get, operation_id = "list_tokens", path = "/tokens", tag = "tokens",
    responses((status = 200, description = "The tokens", body = TokenList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    let items = state.store.list_tokens().await?.into_iter().map(TokenView::from).collect();
    Ok(Json(TokenList { items }))
}

/// Revoke a token; requests with it are refused from now on.
#[utoipa::path(delete, operation_id = "delete_token", path = "/tokens/{id}", tag = "tokens", params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    if state.store.delete_token(id).await? {
        tracing::info!(token.id = id, "API token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("there is no token {id}")))
    }
}
