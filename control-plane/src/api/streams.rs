//! `/v1/streams`: a tenant's live video streams within its plan (`live_video` feature,
//! `max_live_streams`), their stream keys, and where to publish them. A tenant key sees only its
//! own streams (another tenant's id answers 404); the admin token reads and deletes any.

use super::AppState;
use super::auth::{Caller, WritingTenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use super::stations::{lock_active_tenant, plan_of};
use crate::db::{self, is_unique_violation};
use crate::{secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateLiveStream, CreatePlaybackToken, LiveStream, LiveStreamIngest, LiveStreamViewers, Page,
    PageParams, PlaybackToken, Problem, StationUsage, StreamAccess, UpdateLiveStream, UsageParams,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no live stream {id:?}."))
}

/// The stream `id` as `tenant` (None: the admin) may see it, else a 404.
pub(super) async fn find(
    conn: &mut db::Conn,
    id: &str,
    tenant: Option<&str>,
) -> ApiResult<LiveStream> {
    db::live_streams::get(conn, id, tenant)
        .await?
        .ok_or_else(|| not_found(id))
}

fn slug_taken(slug: &str) -> ApiError {
    ApiError::Conflict(format!(
        "The slug {slug:?} is already used by another live stream; choose another."
    ))
}

/// Creates a stream for a tenant in the caller's transaction, within its plan (also used by dev
/// mode for the demo stream).
pub async fn create_for_tenant(
    conn: &mut db::Conn,
    tenant_id: &str,
    req: CreateLiveStream,
) -> ApiResult<LiveStream> {
    let tenant = lock_active_tenant(conn, tenant_id).await?;
    let plan = plan_of(conn, &tenant.plan_id).await?;
    if !plan.features.live_video {
        return Err(ApiError::PlanLimit {
            limit: "live_video",
            detail: format!("Plan {:?} does not include live video.", plan.name),
        });
    }
    let count = db::live_streams::count_for_tenant(conn, tenant_id).await?;
    if count >= i64::from(plan.limits.max_live_streams) {
        return Err(ApiError::PlanLimit {
            limit: "max_live_streams",
            detail: format!(
                "Plan {:?} allows {} live stream(s) and this tenant already has {count}.",
                plan.name, plan.limits.max_live_streams
            ),
        });
    }
    let name = validate::name("name", &req.name)?;
    let slug = match &req.slug {
        Some(s) => validate::stream_slug(s)?,
        None => {
            let base = validate::slug_from_name(&name).unwrap_or_else(|| "live".to_string());
            let mut candidate = base.clone();
            while db::live_streams::slug_taken(conn, &candidate).await? {
                candidate = format!("{base}-{}", &secrets::new_id("s")[2..8]);
            }
            candidate
        }
    };
    let stream = LiveStream {
        id: secrets::new_id("lvs"),
        tenant_id: tenant_id.to_string(),
        name,
        slug: slug.clone(),
        access: req.access,
        creator_id: req.creator_id,
        price: req.price,
        stream_key: secrets::new_stream_key(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    check_access(conn, tenant_id, &stream).await?;
    match db::live_streams::insert(conn, &stream, &secrets::new_playback_secret()).await {
        Ok(s) => Ok(s),
        Err(e) if is_unique_violation(&e) => Err(slug_taken(&slug)),
        Err(e) => Err(e.into()),
    }
}

/// List live streams: a tenant's own, or every one for the admin.
#[utoipa::path(get, path = "/v1/streams", tag = "streams", params(PageParams),
    responses((status = 200, body = Page<LiveStream>)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<LiveStream>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::live_streams::list(&mut conn, caller.tenant_scope(), p.limit, &p.cursor).await?,
    ))
}

/// Create a live stream (tenant key); the plan needs `live_video` and room in
/// `max_live_streams`. The answer carries the stream key.
#[utoipa::path(post, path = "/v1/streams", tag = "streams", request_body = CreateLiveStream,
    responses((status = 201, body = LiveStream), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiJson(req): ApiJson<CreateLiveStream>,
) -> ApiResult<(StatusCode, Json<LiveStream>)> {
    let mut tx = st.db.begin().await?;
    let s = create_for_tenant(&mut tx, &tenant.id, req).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// Get a live stream.
#[utoipa::path(get, path = "/v1/streams/{id}", params(("id" = String, Path, description = "Object id")), tag = "streams",
    responses((status = 200, body = LiveStream), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LiveStream>> {
    let mut conn = st.db.conn().await?;
    find(&mut conn, &id, caller.tenant_scope()).await.map(Json)
}

/// Rename a live stream, change its slug, or its access (mode, creator, pay-per-view price).
#[utoipa::path(patch, path = "/v1/streams/{id}", params(("id" = String, Path, description = "Object id")), tag = "streams", request_body = UpdateLiveStream,
    responses((status = 200, body = LiveStream), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateLiveStream>,
) -> ApiResult<Json<LiveStream>> {
    let mut tx = st.db.begin().await?;
    lock_active_tenant(&mut tx, &tenant.id).await?;
    let mut s = find(&mut tx, &id, Some(&tenant.id)).await?;
    if let Some(n) = &req.name {
        s.name = validate::name("name", n)?;
    }
    if let Some(slug) = &req.slug {
        s.slug = validate::stream_slug(slug)?;
    }
    s.access = req.access.unwrap_or(s.access);
    s.creator_id = req.creator_id.or(s.creator_id);
    s.price = req.price.or(s.price);
    check_access(&mut tx, &tenant.id, &s).await?;
    let saved = match db::live_streams::update(&mut tx, &s).await {
        Ok(saved) => saved,
        Err(e) if is_unique_violation(&e) => return Err(slug_taken(&s.slug)),
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(Json(saved))
}

/// Delete a live stream; its publisher is disconnected when the node applies the change.
#[utoipa::path(delete, path = "/v1/streams/{id}", params(("id" = String, Path, description = "Object id")), tag = "streams",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if let Caller::Tenant(_) = caller {
        caller.writing_tenant("Live streams")?;
    }
    let mut tx = st.db.begin().await?;
    if !db::live_streams::delete(&mut tx, &id, caller.tenant_scope()).await? {
        return Err(not_found(&id));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the stream key with a new random one: the old key is refused from now on, and a
/// publisher using it is disconnected when the node applies the change.
#[utoipa::path(post, path = "/v1/streams/{id}/stream-key", params(("id" = String, Path, description = "Object id")), tag = "streams",
    responses((status = 200, body = LiveStream), (status = 404, body = Problem)))]
pub async fn rotate_key(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LiveStream>> {
    let mut tx = st.db.begin().await?;
    lock_active_tenant(&mut tx, &tenant.id).await?;
    let mut s = find(&mut tx, &id, Some(&tenant.id)).await?;
    s.stream_key = secrets::new_stream_key();
    let saved = db::live_streams::update(&mut tx, &s).await?;
    tx.commit().await?;
    Ok(Json(saved))
}

/// Mint a playback token for a viewer of a token stream (the tenant's site calls this for a
/// subscriber or a buyer and hands them `watch_path`). The edge checks it on every playlist and
/// segment request, with no round trip to the control plane.
#[utoipa::path(post, path = "/v1/streams/{id}/playback-tokens", params(("id" = String, Path, description = "Object id")), tag = "streams",
    request_body = CreatePlaybackToken,
    responses((status = 201, body = PlaybackToken), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn playback_token(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreatePlaybackToken>,
) -> ApiResult<(StatusCode, Json<PlaybackToken>)> {
    if let Caller::Tenant(_) = caller {
        caller.writing_tenant("Live streams")?;
    }
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(60..=7 * 86_400).contains(&ttl) {
        return Err(ApiError::Unprocessable(format!(
            "ttl_seconds is {ttl}; a token lasts 60 seconds to 7 days."
        )));
    }
    if !onda_shared::playback::valid_viewer(&req.viewer_id) {
        return Err(ApiError::Unprocessable(
            "viewer_id must be at most 64 letters, digits, '_' or '-'.".to_string(),
        ));
    }
    let mut conn = st.db.conn().await?;
    let s = find(&mut conn, &id, caller.tenant_scope()).await?;
    if s.access == StreamAccess::Public {
        return Err(ApiError::Conflict(format!(
            "Live stream {id:?} is public: anyone may watch it without a token (set access to \"token\" first)."
        )));
    }
    let token = sign(&mut conn, &s, &req.viewer_id, ttl).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// A playback token of `s` for `viewer` (checked with `valid_viewer`), valid `ttl` seconds.
pub(super) async fn sign(
    conn: &mut db::Conn,
    s: &LiveStream,
    viewer: &str,
    ttl: u64,
) -> ApiResult<PlaybackToken> {
    let secret = db::live_streams::playback_secret(conn, &s.id)
        .await?
        .ok_or_else(|| not_found(&s.id))?;
    let expiry = u64::try_from(db::now()).unwrap_or(0) + ttl;
    let token = onda_shared::playback::sign(&secret, &s.slug, expiry, viewer);
    Ok(PlaybackToken {
        watch_path: format!("/watch/{}.m3u8?token={token}", s.slug),
        token,
        expires_at: db::rfc3339(i64::try_from(expiry).unwrap_or(i64::MAX)),
    })
}

/// The stream's access settings, checked: `subscribers` and `pay_per_view` need a creator of
/// the tenant, `pay_per_view` a price.
pub(super) async fn check_access(
    conn: &mut db::Conn,
    tenant_id: &str,
    s: &LiveStream,
) -> ApiResult<()> {
    if let Some(p) = s.price {
        crate::ledger::amount("price", p).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    if let Some(c) = &s.creator_id {
        let u = db::users::get(conn, tenant_id, crate::users::user_id(c)?)
            .await?
            .ok_or_else(|| {
                ApiError::Unprocessable(format!("creator_id: there is no user {c:?}."))
            })?;
        if !u.creator {
            return Err(ApiError::Unprocessable(format!(
                "creator_id: user {c:?} is not a creator."
            )));
        }
    }
    let needs_creator = matches!(
        s.access,
        StreamAccess::Subscribers | StreamAccess::PayPerView
    );
    if needs_creator && s.creator_id.is_none() {
        return Err(ApiError::Unprocessable(format!(
            "access {:?} needs creator_id: the creator whose subscribers watch or who is paid.",
            s.access.as_str()
        )));
    }
    if s.access == StreamAccess::PayPerView && s.price.is_none() {
        return Err(ApiError::Unprocessable(
            "access \"pay_per_view\" needs a price (minor units of the tenant's currency)."
                .to_string(),
        ));
    }
    Ok(())
}

/// A stream's audience now, from the cluster's view: (viewers, publishing, carrying node).
pub(super) fn audience(st: &AppState, s: &LiveStream) -> (u64, bool, Option<String>) {
    match &st.cluster {
        Some(c) => c.view.get().stream(&s.id, &s.slug),
        None => (0, false, None),
    }
}

/// Viewers right now: playback sessions with a request within the edge's viewer timeout.
#[utoipa::path(get, path = "/v1/streams/{id}/viewers", params(("id" = String, Path, description = "Object id")), tag = "streams",
    responses((status = 200, body = LiveStreamViewers), (status = 404, body = Problem)))]
pub async fn viewers(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LiveStreamViewers>> {
    let s = {
        let mut conn = st.db.conn().await?;
        find(&mut conn, &id, caller.tenant_scope()).await?
    };
    let (viewers, publishing, node) = audience(&st, &s);
    Ok(Json(LiveStreamViewers {
        stream_id: id,
        viewers,
        publishing,
        node,
    }))
}

/// A live stream's viewer usage per hour or day (viewer time is the media time of the segments
/// served), JSON or CSV: the station usage answer, with the stream's id.
#[utoipa::path(get, path = "/v1/streams/{id}/usage", tag = "streams",
    params(("id" = String, Path, description = "Object id"), UsageParams),
    responses((status = 200, body = StationUsage, description = "JSON, or text/csv with format=csv"),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn usage(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UsageParams>,
) -> ApiResult<axum::response::Response> {
    {
        let mut conn = st.db.conn().await?;
        find(&mut conn, &id, caller.tenant_scope()).await?;
    }
    super::usage::usage_of(&st, id, q).await
}

/// The node carrying `s` and its RTMP server (`rtmp://HOST:PORT/live`, OBS's "Server"); None
/// until the scheduler placed it.
pub(super) async fn rtmp_server(
    st: &AppState,
    conn: &mut db::Conn,
    s: &LiveStream,
) -> ApiResult<(Option<String>, Option<String>)> {
    let origin = st
        .cluster
        .as_ref()
        .and_then(|c| {
            c.view
                .get()
                .placement
                .stations
                .get(&s.id)
                .map(|p| p.origin.clone())
        })
        .filter(|o| !o.is_empty());
    let node = match &origin {
        Some(n) => db::nodes::get(conn, n).await?,
        None => None,
    };
    let rtmp_url = node
        .as_ref()
        .map(|n| n.rtmp_url.clone())
        .filter(|u| !u.is_empty())
        .map(|u| format!("{}/live", u.trim_end_matches('/')));
    Ok((node.map(|n| n.name), rtmp_url))
}

/// Where to publish: the RTMP server of the node carrying the stream, with the key.
#[utoipa::path(get, path = "/v1/streams/{id}/ingest", params(("id" = String, Path, description = "Object id")), tag = "streams",
    responses((status = 200, body = LiveStreamIngest), (status = 404, body = Problem)))]
pub async fn ingest(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LiveStreamIngest>> {
    let mut conn = st.db.conn().await?;
    let s = find(&mut conn, &id, caller.tenant_scope()).await?;
    let snap = st.cluster.as_ref().map(|c| c.view.get());
    let failures = snap
        .as_ref()
        .map(|snap| super::stations::failures(snap, &id))
        .unwrap_or_default();
    let (node, rtmp_url) = rtmp_server(&st, &mut conn, &s).await?;
    Ok(Json(LiveStreamIngest {
        stream_id: s.id,
        node,
        publish_url: rtmp_url.as_ref().map(|u| format!("{u}/{}", s.stream_key)),
        rtmp_url,
        stream_key: s.stream_key,
        watch_path: format!("/watch/{}.m3u8", s.slug),
        failures,
    }))
}
