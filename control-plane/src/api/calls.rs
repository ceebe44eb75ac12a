//! Calls' records over REST: the tenant's calls (`GET /v1/calls`, optionally one user's) and a
//! user's own call history (`GET /v1/me/calls`). Calls are made and changed over the gateway
//! (docs/calls.md); these lists are what was made, newest first.

use super::AppState;
use super::auth::{Caller, UserCaller, users_tenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, page_limit};
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{Call, CallListParams, Page, Problem};

/// The tenant's calls, newest first; `user_id` keeps those the user made or received.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(CallListParams),
    responses((status = 200, body = Page<Call>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CallListParams>,
) -> ApiResult<Json<Page<Call>>> {
    let tenant = users_tenant(&caller)?;
    let user = q
        .user_id
        .as_deref()
        .map(crate::users::user_id)
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let cursor = q.cursor.unwrap_or_default();
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::calls::list(&mut conn, &tenant.id, user, limit, &cursor).await?,
    ))
}

/// Your calls, made and received, newest first (user token).
#[utoipa::path(get, path = "/v1/me/calls", tag = "calls", params(CallListParams),
    responses((status = 200, body = Page<Call>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiQuery(q): ApiQuery<CallListParams>,
) -> ApiResult<Json<Page<Call>>> {
    if q.user_id.is_some() {
        return Err(ApiError::BadRequest(
            "user_id filters the tenant's list (GET /v1/calls); this one lists only yours."
                .to_string(),
        ));
    }
    let limit = page_limit(q.limit)?;
    let cursor = q.cursor.unwrap_or_default();
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::calls::list(&mut conn, &me.tenant.id, Some(&me.user.id), limit, &cursor).await?,
    ))
}
