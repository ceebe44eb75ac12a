//! `/v1/stations/{id}/playlists` and `/v1/stations/{id}/autodj`: the AutoDJ's playlists and
//! schedule, and the station's time zone. A station with the AutoDJ on and no playlist plays
//! all its media in shuffle. Scheduled, interval and station-ID playlists need the plan's
//! `scheduling` feature; every playlist needs `autodj`.

use super::AppState;
use super::auth::{ReadableStation, WritableStation};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::db::{self, is_unique_violation};
use crate::{secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    AutoDjSettings, CreatePlaylist, Page, PageParams, Plan, PlayOrder, Playlist, PlaylistKind,
    Problem, Tenant, TimeZoneName, UpdatePlaylist,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no playlist {id:?}."))
}

/// The tenant's plan, which must include the AutoDJ (`what` says what needs it).
pub(super) async fn autodj_plan(
    conn: &mut db::Conn,
    tenant: &Tenant,
    what: &str,
) -> ApiResult<Plan> {
    let plan = db::plans::get(conn, &tenant.plan_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no plan {:?}.", tenant.plan_id)))?;
    if !plan.features.autodj {
        return Err(ApiError::PlanLimit {
            limit: "features.autodj",
            detail: format!("Plan {:?} does not include the AutoDJ, {what}.", plan.name),
        });
    }
    Ok(plan)
}

/// Saves a playlist; a name the station already uses is a conflict.
async fn save(conn: &mut db::Conn, p: &Playlist, insert: bool) -> ApiResult<Playlist> {
    match db::playlists::save(conn, p, insert).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!(
                "The station already has a playlist named {:?}.",
                p.name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    db::playlists::get(conn, &p.station_id, &p.id)
        .await?
        .ok_or_else(|| not_found(&p.id))
}

/// Checks a playlist as a whole, against the plan and the station's media.
async fn check(conn: &mut db::Conn, plan: &Plan, p: &Playlist) -> ApiResult<()> {
    validate::name("name", &p.name)?;
    if p.kind != PlaylistKind::Rotation && !plan.features.scheduling {
        return Err(ApiError::PlanLimit {
            limit: "features.scheduling",
            detail: format!(
                "Plan {:?} does not include scheduling: only rotation playlists.",
                plan.name
            ),
        });
    }
    if !(1..=1000).contains(&p.weight) {
        return Err(ApiError::Unprocessable(
            "weight must be between 1 and 1000.".to_string(),
        ));
    }
    let scheduled = p.kind == PlaylistKind::Scheduled;
    if scheduled {
        if p.start.is_none() || p.end.is_none() {
            return Err(ApiError::Unprocessable(
                "a scheduled playlist needs start and end (\"HH:MM\").".to_string(),
            ));
        }
        let mut seen = [false; 8];
        for &d in &p.days {
            if !(1..=7).contains(&d) || std::mem::replace(&mut seen[usize::from(d)], true) {
                return Err(ApiError::Unprocessable(format!(
                    "days must be distinct ISO weekdays 1 (Monday) to 7 (Sunday); {d} is not."
                )));
            }
        }
    } else if p.start.is_some() || p.end.is_some() || !p.days.is_empty() {
        return Err(ApiError::Unprocessable(
            "start, end and days apply to scheduled playlists only.".to_string(),
        ));
    }
    match (p.kind, p.every_songs) {
        (PlaylistKind::Interval, Some(n)) if (1..=1000).contains(&n) => {}
        (PlaylistKind::Interval, _) => {
            return Err(ApiError::Unprocessable(
                "an interval playlist needs every_songs between 1 and 1000.".to_string(),
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::Unprocessable(
                "every_songs applies to interval playlists only.".to_string(),
            ));
        }
        _ => {}
    }
    if p.media_ids.len() > 10_000 {
        return Err(ApiError::Unprocessable(
            "a playlist holds at most 10000 items.".to_string(),
        ));
    }
    for m in &p.media_ids {
        if db::media::get(conn, &p.station_id, m).await?.is_none() {
            return Err(ApiError::Unprocessable(format!(
                "media_ids: {m:?} is not a media file of this station."
            )));
        }
    }
    Ok(())
}

/// List a station's playlists.
#[utoipa::path(get, path = "/v1/stations/{id}/playlists", tag = "stations", params(("id" = String, Path, description = "Object id"), PageParams),
    responses((status = 200, body = Page<Playlist>), (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    ReadableStation { station_id: id, .. }: ReadableStation,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Playlist>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::playlists::list(&mut conn, &id, p.limit, &p.cursor).await?,
    ))
}

/// Create a playlist.
#[utoipa::path(post, path = "/v1/stations/{id}/playlists", tag = "stations", params(("id" = String, Path, description = "Object id")), request_body = CreatePlaylist,
    responses((status = 201, body = Playlist), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    WritableStation {
        tenant,
        station_id: id,
    }: WritableStation,
    ApiJson(req): ApiJson<CreatePlaylist>,
) -> ApiResult<(StatusCode, Json<Playlist>)> {
    let mut conn = st.db.conn().await?;
    let plan = autodj_plan(&mut conn, &tenant, "which playlists are for").await?;
    let p = Playlist {
        id: secrets::new_id("pl"),
        station_id: id.clone(),
        name: req.name.trim().to_string(),
        kind: req.kind,
        order: req.order.unwrap_or(PlayOrder::Shuffle),
        weight: req.weight.unwrap_or(1),
        days: req.days,
        start: req.start,
        end: req.end,
        every_songs: req.every_songs,
        media_ids: req.media_ids,
        created_at: String::new(),
        updated_at: String::new(),
    };
    check(&mut conn, &plan, &p).await?;
    let saved = save(&mut conn, &p, true).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Get a playlist.
#[utoipa::path(get, path = "/v1/stations/{id}/playlists/{playlist_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("playlist_id" = String, Path, description = "Playlist id")),
    responses((status = 200, body = Playlist), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    _station: ReadableStation,
    ApiPath((id, playlist_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<Playlist>> {
    let mut conn = st.db.conn().await?;
    db::playlists::get(&mut conn, &id, &playlist_id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&playlist_id))
}

/// Change a playlist; absent fields stay, `media_ids` replaces the list. The kind is fixed.
#[utoipa::path(patch, path = "/v1/stations/{id}/playlists/{playlist_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("playlist_id" = String, Path, description = "Playlist id")),
    request_body = UpdatePlaylist,
    responses((status = 200, body = Playlist), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    WritableStation { tenant, .. }: WritableStation,
    ApiPath((id, playlist_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdatePlaylist>,
) -> ApiResult<Json<Playlist>> {
    let mut conn = st.db.conn().await?;
    let plan = autodj_plan(&mut conn, &tenant, "which playlists are for").await?;
    let mut p = db::playlists::get(&mut conn, &id, &playlist_id)
        .await?
        .ok_or_else(|| not_found(&playlist_id))?;
    if let Some(v) = req.name {
        p.name = v.trim().to_string();
    }
    if let Some(v) = req.order {
        p.order = v;
    }
    if let Some(v) = req.weight {
        p.weight = v;
    }
    if let Some(v) = req.days {
        p.days = v;
    }
    if req.start.is_some() {
        p.start = req.start;
    }
    if req.end.is_some() {
        p.end = req.end;
    }
    if req.every_songs.is_some() {
        p.every_songs = req.every_songs;
    }
    if let Some(v) = req.media_ids {
        p.media_ids = v;
    }
    check(&mut conn, &plan, &p).await?;
    Ok(Json(save(&mut conn, &p, false).await?))
}

/// Delete a playlist (its media files stay in the library).
#[utoipa::path(delete, path = "/v1/stations/{id}/playlists/{playlist_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("playlist_id" = String, Path, description = "Playlist id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    _station: WritableStation,
    ApiPath((id, playlist_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if db::playlists::delete(&mut conn, &id, &playlist_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&playlist_id))
    }
}

/// The station's AutoDJ settings.
#[utoipa::path(get, path = "/v1/stations/{id}/autodj", tag = "stations", params(("id" = String, Path, description = "Object id")),
    responses((status = 200, body = AutoDjSettings), (status = 404, body = Problem)))]
pub async fn get_settings(
    State(st): State<AppState>,
    ReadableStation { station_id: id, .. }: ReadableStation,
) -> ApiResult<Json<AutoDjSettings>> {
    let mut conn = st.db.conn().await?;
    Ok(Json(db::playlists::settings(&mut conn, &id).await?))
}

/// Change the station's AutoDJ settings: the time zone its schedules are in, the crossfade.
#[utoipa::path(put, path = "/v1/stations/{id}/autodj", tag = "stations", params(("id" = String, Path, description = "Object id")),
    request_body = AutoDjSettings,
    responses((status = 200, body = AutoDjSettings), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_settings(
    State(st): State<AppState>,
    WritableStation {
        tenant,
        station_id: id,
    }: WritableStation,
    ApiJson(req): ApiJson<AutoDjSettings>,
) -> ApiResult<Json<AutoDjSettings>> {
    let timezone = TimeZoneName::new(req.timezone.as_str().trim());
    if timezone.zone().is_err() {
        return Err(ApiError::Unprocessable(format!(
            "timezone {:?} is not a known IANA time zone (e.g. \"Europe/Berlin\").",
            timezone.as_str()
        )));
    }
    if req.crossfade_ms > 10_000 {
        return Err(ApiError::Unprocessable(format!(
            "crossfade_ms = {} must be between 0 (off) and 10000.",
            req.crossfade_ms
        )));
    }
    let settings = AutoDjSettings {
        timezone,
        crossfade_ms: req.crossfade_ms,
    };
    let mut conn = st.db.conn().await?;
    autodj_plan(&mut conn, &tenant, "which these settings are for").await?;
    db::playlists::set_settings(&mut conn, &id, &settings).await?;
    Ok(Json(settings))
}
