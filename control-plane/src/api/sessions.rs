//! A live stream's sessions (each RTMP publish, opened and closed by the leader:
//! `crate::stream_sessions`), newest first with their figures: for the tenant
//! (`GET /v1/streams/{id}/sessions`) and for the stream's creator
//! (`GET /v1/me/streams/{id}/sessions`). Open sessions show their figures so far.

use super::AppState;
use super::auth::{Caller, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery, Paging};
use super::streams;
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{LiveStream, Page, PageParams, Problem, StreamSession};

async fn page(st: &AppState, s: &LiveStream, q: PageParams) -> ApiResult<Page<StreamSession>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(db::stream_sessions::list(
        &mut conn,
        (&s.tenant_id, &s.id),
        p.limit,
        &p.cursor,
        db::now_millis(),
    )
    .await?)
}

/// A live stream's sessions, newest first: start, end, duration, peak and unique viewers,
/// viewer minutes, tips to its creator and pay-per-view purchases while each was open.
#[utoipa::path(get, path = "/v1/streams/{id}/sessions", tag = "streams",
    params(("id" = String, Path, description = "The stream's id"), PageParams),
    responses((status = 200, body = Page<StreamSession>), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<StreamSession>>> {
    let s = streams::find(&mut *st.db.conn().await?, &id, caller.tenant_scope()).await?;
    Ok(Json(page(&st, &s, q).await?))
}

/// The sessions of a stream of yours (the stream's creator's user token), newest first.
#[utoipa::path(get, path = "/v1/me/streams/{id}/sessions", tag = "streams",
    params(("id" = String, Path, description = "The stream's id"), PageParams),
    responses((status = 200, body = Page<StreamSession>), (status = 400, body = Problem),
              (status = 403, body = Problem, description = "Not the stream's creator"),
              (status = 404, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<StreamSession>>> {
    let s = streams::find(&mut *st.db.conn().await?, &id, Some(&me.tenant.id)).await?;
    if s.creator_id.as_deref() != Some(me.user.id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "Live stream {:?} is not yours: only its creator reads its sessions.",
            s.name
        )));
    }
    Ok(Json(page(&st, &s, q).await?))
}
