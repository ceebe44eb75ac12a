//! Notifications: a tenant sends one to its user (`POST /v1/users/{user_id}/notifications`,
//! tenant API key), and the user lists theirs and marks them read (`/v1/me/notifications`, user
//! token). A new notification is recorded in the user's gateway feed with it, and pushed live to
//! their devices after the commit, as the gateway's `notification` event.

use super::AppState;
use super::auth::{TenantUser, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::db;
use crate::metrics::NotificationSource;
use crate::notifications;
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateNotification, Notification, NotificationList, NotificationListParams, Problem,
    UnreadCount,
};

/// Send the user a notification: stored, and pushed live to their connected devices with their
/// unread count.
#[utoipa::path(post, path = "/v1/users/{user_id}/notifications", tag = "notifications",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    request_body = CreateNotification,
    responses((status = 201, body = Notification), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    body: Result<ApiJson<CreateNotification>, ApiError>,
) -> ApiResult<(StatusCode, Json<Notification>)> {
    let mut tx = st.db.begin().await?;
    // The user first: another tenant's user id names nothing here, whatever the body says.
    if db::users::get(&mut tx, &tenant.id, &user_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!("There is no user {user_id:?}.")));
    }
    let ApiJson(req) = body?;
    let content = notifications::check(req)?;
    let push =
        notifications::store(&mut tx, &tenant.id, &user_id, &content, db::now_millis()).await?;
    let notification = push.notification.clone();
    let entry = recovery::Entry::new(&user_id, NOTIFICATION, serde_json::json!(push));
    let recorded = recovery::record(&mut tx, &tenant.id, vec![entry]).await?;
    tx.commit().await?;
    st.metrics.realtime.notification(NotificationSource::Tenant);
    st.realtime.send(&tenant.id, &recorded).await;
    Ok((StatusCode::CREATED, Json(notification)))
}

/// The caller's notifications, newest first, with their unread count; `before` pages to older
/// ones, `unread=true` lists only the unread.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "notifications",
    params(NotificationListParams),
    responses((status = 200, body = NotificationList), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiQuery(q): ApiQuery<NotificationListParams>,
) -> ApiResult<Json<NotificationList>> {
    let limit = super::extract::page_limit(q.limit)?;
    let (tenant, user) = (&me.tenant.id, &me.user.id);
    let mut conn = st.db.conn().await?;
    let mut items = db::notifications::list(
        &mut conn,
        tenant,
        user,
        q.before.as_deref(),
        q.unread,
        limit + 1,
    )
    .await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(Json(NotificationList {
        unread_count: db::notifications::unread_count(&mut conn, tenant, user).await?,
        next_before: if more {
            items.last().map(|n| n.id.clone())
        } else {
            None
        },
        items,
    }))
}

/// Mark one of the caller's notifications read (again is fine: it keeps its first read time).
#[utoipa::path(post, path = "/v1/me/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id")),
    responses((status = 200, body = UnreadCount), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn read(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UnreadCount>> {
    let (tenant, user) = (&me.tenant.id, &me.user.id);
    let mut conn = st.db.conn().await?;
    if !db::notifications::mark_read(&mut conn, tenant, user, &id, db::now_millis()).await? {
        return Err(ApiError::NotFound(format!(
            "You have no notification {id:.80?}."
        )));
    }
    Ok(Json(UnreadCount {
        unread_count: db::notifications::unread_count(&mut conn, tenant, user).await?,
    }))
}

/// Mark every notification of the caller read.
#[utoipa::path(post, path = "/v1/me/notifications/read-all", tag = "notifications",
    responses((status = 200, body = UnreadCount), (status = 403, body = Problem)))]
pub async fn read_all(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
) -> ApiResult<Json<UnreadCount>> {
    let (tenant, user) = (&me.tenant.id, &me.user.id);
    let mut conn = st.db.conn().await?;
    db::notifications::mark_all_read(&mut conn, tenant, user, db::now_millis()).await?;
    Ok(Json(UnreadCount {
        unread_count: db::notifications::unread_count(&mut conn, tenant, user).await?,
    }))
}
