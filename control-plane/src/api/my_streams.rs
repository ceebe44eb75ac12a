//! `/v1/me/streams`: live streams as the signed-in user sees them (user tokens), for the web
//! app's watch and go-live pages. A viewer reads one stream of their tenant by id or slug with
//! whether the membership check ([`crate::memberships::entitled`]) lets them watch and what
//! would otherwise (never its key); a creator lists the streams they are the `creator_id` of,
//! with where to publish them (RTMP server and key) and their live figures, and sells them to
//! subscribers or per view. Another tenant's stream is a 404 like one that does not exist.

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::stations::lock_active_tenant;
use super::streams;
use crate::db;
use crate::memberships::{self, Access};
use axum::Json;
use axum::extract::State;
use onda_shared::api::{
    CreatorStream, LiveStream, Page, Problem, StreamAccess, StreamCreator, StreamView,
    UpdateCreatorStream,
};

/// The stream `id_or_slug` of `tenant_id`, else a 404 (the same for another tenant's).
async fn find_in_tenant(
    conn: &mut db::Conn,
    tenant_id: &str,
    id_or_slug: &str,
) -> ApiResult<LiveStream> {
    let by_id = db::live_streams::get(conn, id_or_slug, Some(tenant_id)).await?;
    let found = match by_id {
        Some(s) => Some(s),
        None => db::live_streams::by_slug(conn, id_or_slug)
            .await?
            .filter(|s| s.tenant_id == tenant_id),
    };
    found.ok_or_else(|| ApiError::NotFound(format!("There is no live stream {id_or_slug:?}.")))
}

/// A live stream of your tenant by id or slug (user token): its public fields, its creator,
/// whether you may watch it (then `POST /v1/me/streams/{id}/playback` answers a token) or what
/// would let you in, and its viewers now. Never the stream key.
#[utoipa::path(get, path = "/v1/me/streams/{id}", tag = "streams",
    params(("id" = String, Path, description = "The stream's id or slug")),
    responses((status = 200, body = StreamView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn view(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id_or_slug): ApiPath<String>,
) -> ApiResult<Json<StreamView>> {
    let mut conn = st.db.conn().await?;
    let s = find_in_tenant(&mut conn, &me.tenant.id, &id_or_slug).await?;
    let creator = match &s.creator_id {
        Some(c) => db::users::get(&mut conn, &me.tenant.id, c)
            .await?
            .map(|u| StreamCreator {
                id: u.id,
                display_name: u.display_name,
                avatar_url: u.avatar_url,
                subscription_price: u.subscription_price,
                tip_minimum: u.tip_minimum,
            }),
        None => None,
    };
    let access = memberships::entitled(
        &mut conn,
        &me.tenant.id,
        &me.user.id,
        (None, Some(&s)),
        db::now_millis(),
    )
    .await?;
    let currency = me.tenant.currency.clone();
    let (entitled, grant) = match access {
        Access::Granted(_) => (true, None),
        Access::Denied(offer) => (false, Some(offer.grant(&currency))),
    };
    let (viewers, publishing, _) = streams::audience(&st, &s);
    Ok(Json(StreamView {
        id: s.id,
        slug: s.slug,
        name: s.name,
        access: s.access,
        price: s.price,
        currency,
        creator,
        entitled,
        grant,
        viewers,
        publishing,
    }))
}

async fn creator_stream(
    st: &AppState,
    conn: &mut db::Conn,
    currency: &str,
    s: LiveStream,
) -> ApiResult<CreatorStream> {
    let (_, rtmp_url) = streams::rtmp_server(st, conn, &s).await?;
    let (viewers, publishing, _) = streams::audience(st, &s);
    Ok(CreatorStream {
        publish_url: rtmp_url.as_ref().map(|u| format!("{u}/{}", s.stream_key)),
        rtmp_url,
        watch_page_path: format!("/app/watch/{}", s.slug),
        id: s.id,
        slug: s.slug,
        name: s.name,
        access: s.access,
        price: s.price,
        currency: currency.to_string(),
        stream_key: s.stream_key,
        viewers,
        publishing,
    })
}

/// Your own live streams (user token of a creator: the streams whose `creator_id` you are),
/// each with its RTMP server and stream key for OBS and its viewers now. Empty for anyone else.
#[utoipa::path(get, path = "/v1/me/streams", tag = "streams",
    responses((status = 200, body = Page<CreatorStream>), (status = 403, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
) -> ApiResult<Json<Page<CreatorStream>>> {
    let mut conn = st.db.conn().await?;
    let own = db::live_streams::for_creator(&mut conn, &me.tenant.id, &me.user.id).await?;
    let mut items = Vec::with_capacity(own.len());
    for s in own {
        items.push(creator_stream(&st, &mut conn, &me.tenant.currency, s).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Sell your own stream (creator's user token) to your subscribers or per view at a price.
/// Only a stream the tenant already made a creator's paid stream (`subscribers` or
/// `pay_per_view`) can be changed, and only between those two: making it public or a token
/// stream is the tenant's decision.
#[utoipa::path(patch, path = "/v1/me/streams/{id}", tag = "streams", request_body = UpdateCreatorStream,
    params(("id" = String, Path, description = "The stream's id")),
    responses((status = 200, body = CreatorStream), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateCreatorStream>,
) -> ApiResult<Json<CreatorStream>> {
    let mut tx = st.db.begin().await?;
    lock_active_tenant(&mut tx, &me.tenant.id).await?;
    let mut s = find_in_tenant(&mut tx, &me.tenant.id, &id).await?;
    if s.creator_id.as_deref() != Some(me.user.id.as_str()) {
        // Not yours: the same answer as no stream, so ids of others' streams tell nothing.
        return Err(ApiError::NotFound(format!(
            "There is no live stream {id:?}."
        )));
    }
    let paid = |a: StreamAccess| matches!(a, StreamAccess::Subscribers | StreamAccess::PayPerView);
    if !paid(s.access) {
        return Err(ApiError::Forbidden(format!(
            "Live stream {:?} is {}: only the platform changes who may watch it.",
            s.name,
            s.access.as_str()
        )));
    }
    if let Some(a) = req.access {
        if !paid(a) {
            return Err(ApiError::Unprocessable(format!(
                "access {:?}: a creator sells a stream to \"subscribers\" or \"pay_per_view\".",
                a.as_str()
            )));
        }
        s.access = a;
    }
    s.price = req.price.or(s.price);
    streams::check_access(&mut tx, &me.tenant.id, &s).await?;
    let saved = db::live_streams::update(&mut tx, &s).await?;
    let out = creator_stream(&st, &mut tx, &me.tenant.currency, saved).await?;
    tx.commit().await?;
    Ok(Json(out))
}
