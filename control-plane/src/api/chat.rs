//! The REST side of live streams' chats: a creator's moderators (named by the creator with a
//! user token, or by the tenant) and a stream's saved chat (tenant). Everything said and done in
//! a chat goes over the gateway (`realtime::stream_chat`).

use super::AppState;
use super::auth::{Caller, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery, page_limit};
use crate::db;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{ChatMessage, EndUser, Moderators, Page, PageParams, Problem};

/// The tenant's user `id`, else a 404.
async fn user(conn: &mut db::Conn, tenant_id: &str, id: &str) -> ApiResult<EndUser> {
    let id = crate::users::user_id(id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    db::users::get(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no user {id:?}.")))
}

async fn creator(conn: &mut db::Conn, tenant_id: &str, id: &str) -> ApiResult<EndUser> {
    let c = user(conn, tenant_id, id).await?;
    if !c.creator {
        return Err(ApiError::Unprocessable(format!(
            "User {id:?} is not a creator: only creators have chats to moderate."
        )));
    }
    Ok(c)
}

async fn list(st: &AppState, tenant_id: &str, creator_id: &str) -> ApiResult<Json<Moderators>> {
    let mut conn = st.db.conn().await?;
    let c = creator(&mut conn, tenant_id, creator_id).await?;
    let moderators = db::stream_chat::moderators(&mut conn, tenant_id, &c.id).await?;
    Ok(Json(Moderators {
        creator_id: c.id,
        moderators,
    }))
}

/// Names (`on`) or removes a moderator: 204 either way; 404 for an unknown user or a
/// moderator who is not one.
async fn set(
    st: &AppState,
    tenant_id: &str,
    (creator_id, user_id): (&str, &str),
    on: bool,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    let c = creator(&mut conn, tenant_id, creator_id).await?;
    let u = user(&mut conn, tenant_id, user_id).await?;
    if u.id == c.id {
        return Err(ApiError::Unprocessable(
            "A creator moderates their own chats already.".to_string(),
        ));
    }
    let changed =
        db::stream_chat::set_moderator(&mut conn, tenant_id, (&c.id, &u.id), on, db::now_millis())
            .await?;
    if !on && !changed {
        return Err(ApiError::NotFound(format!(
            "{:?} is not a moderator of {:?}'s chats.",
            u.id, c.id
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The moderators of a creator's chats (tenant key).
#[utoipa::path(get, path = "/v1/creators/{creator_id}/moderators", tag = "chat",
    params(("creator_id" = String, Path, description = "The creator")),
    responses((status = 200, body = Moderators), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn moderators(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(creator_id): ApiPath<String>,
) -> ApiResult<Json<Moderators>> {
    let tenant = caller.writing_tenant("Moderators")?;
    list(&st, &tenant.id, &creator_id).await
}

/// Name a moderator of a creator's chats (tenant key): they may delete messages, time out and
/// ban viewers and change the chat's settings in all the creator's streams.
#[utoipa::path(put, path = "/v1/creators/{creator_id}/moderators/{user_id}", tag = "chat",
    params(("creator_id" = String, Path, description = "The creator"),
           ("user_id" = String, Path, description = "The moderator")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((creator_id, user_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.writing_tenant("Moderators")?;
    set(&st, &tenant.id, (&creator_id, &user_id), true).await
}

/// Remove a moderator of a creator's chats (tenant key).
#[utoipa::path(delete, path = "/v1/creators/{creator_id}/moderators/{user_id}", tag = "chat",
    params(("creator_id" = String, Path, description = "The creator"),
           ("user_id" = String, Path, description = "The moderator")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((creator_id, user_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.writing_tenant("Moderators")?;
    set(&st, &tenant.id, (&creator_id, &user_id), false).await
}

/// Your chats' moderators (a creator's user token).
#[utoipa::path(get, path = "/v1/me/moderators", tag = "chat",
    responses((status = 200, body = Moderators), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn my_moderators(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
) -> ApiResult<Json<Moderators>> {
    list(&st, &me.tenant.id, &me.user.id).await
}

/// Name a moderator of your chats (a creator's user token).
#[utoipa::path(put, path = "/v1/me/moderators/{user_id}", tag = "chat",
    params(("user_id" = String, Path, description = "The moderator")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn add_mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    set(&st, &me.tenant.id, (&me.user.id, &user_id), true).await
}

/// Remove a moderator of your chats (a creator's user token).
#[utoipa::path(delete, path = "/v1/me/moderators/{user_id}", tag = "chat",
    params(("user_id" = String, Path, description = "The moderator")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    set(&st, &me.tenant.id, (&me.user.id, &user_id), false).await
}

/// A stream's saved chat, oldest first; deleted messages are listed with `deleted` and no
/// text (tenant key).
#[utoipa::path(get, path = "/v1/streams/{id}/chat", tag = "chat",
    params(("id" = String, Path, description = "Object id"), PageParams),
    responses((status = 200, body = Page<ChatMessage>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn saved(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ChatMessage>>> {
    let limit = page_limit(q.limit)?;
    let mut conn = st.db.conn().await?;
    let stream = db::live_streams::get(&mut conn, &id, caller.tenant_scope())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no stream {id:?}.")))?;
    let page = db::stream_chat::list(
        &mut conn,
        &stream.tenant_id,
        &stream.id,
        (limit, q.cursor.as_deref()),
    )
    .await?;
    Ok(Json(page))
}
