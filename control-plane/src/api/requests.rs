//! Song requests over HTTP. Public, unauthenticated and with the public routes' CORS, in
//! AzuraCast's shape: `GET /api/station/{station}/requests` lists a station's requestable
//! tracks (searchable, paged), `POST /api/station/{station}/request/{request_id}` asks for one.
//! The tenant's side (`/v1/stations/{id}/requests`) lists the requests and clears pending ones;
//! the settings are fields of the station (`requests`). The rules are `crate::requests`.

use super::AppState;
use super::auth::{ReadableStation, WritableStation};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::db;
use crate::requests::{self as rules, Refusal};
use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use onda_shared::api::{
    Page, Problem, RequestAccepted, RequestableParams, RequestableSong, RequestableSongs,
    RequestsCleared, Song, SongRequest, SongRequestParams, Station, TenantStatus,
};
use std::net::{IpAddr, SocketAddr};

/// The longest search text.
const MAX_QUERY: usize = 200;

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::PerIp {
                retry_after_secs, ..
            } => ApiError::TooManyRequests {
                detail: r.to_string(),
                retry_after_secs,
            },
            Refusal::TrackGap { .. } | Refusal::ArtistGap { .. } => {
                ApiError::Conflict(r.to_string())
            }
            Refusal::QueueFull => ApiError::TooManyRequests {
                detail: r.to_string(),
                retry_after_secs: 60,
            },
        }
    }
}

/// The station a public route names (slug or id) when it takes requests now; else why not.
async fn requestable_station(conn: &mut db::Conn, key: &str) -> ApiResult<Station> {
    let station = db::stations::by_slug_or_id(conn, key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no station {key:?}.")))?;
    let tenant = db::tenants::get(conn, &station.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no station {key:?}.")))?;
    let plan = super::stations::plan_of(conn, &tenant.plan_id).await?;
    if !plan.features.requests {
        return Err(ApiError::PlanLimit {
            limit: "features.requests",
            detail: "This station's plan does not include song requests (plan feature \
                     requests), so it takes none."
                .to_string(),
        });
    }
    if !station.requests.enabled {
        return Err(ApiError::Forbidden(
            "This station does not take song requests.".to_string(),
        ));
    }
    if !station.autodj_enabled || tenant.status == TenantStatus::Suspended {
        return Err(ApiError::Forbidden(
            "This station's AutoDJ is off, so it takes no song requests now.".to_string(),
        ));
    }
    Ok(station)
}

/// The key song ids and client hashes are made with, as every replica has it.
async fn id_key(conn: &mut db::Conn) -> ApiResult<Vec<u8>> {
    let key = db::cluster::agree_fact(
        conn,
        crate::nowplaying::SONG_ID_KEY,
        &crate::secrets::new_playback_secret(),
    )
    .await?;
    Ok(key.into_bytes())
}

/// A station's requestable tracks (public): `q` searches artist, title, album and file name;
/// `request_id` is what a request names.
#[utoipa::path(get, path = "/api/station/{station}/requests", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id"), RequestableParams),
    responses((status = 200, body = RequestableSongs), (status = 400, body = Problem),
              (status = 403, body = Problem, description = "The station takes no requests"),
              (status = 404, body = Problem)))]
pub async fn list_requestable(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiPath(station): ApiPath<String>,
    ApiQuery(p): ApiQuery<RequestableParams>,
) -> ApiResult<Json<RequestableSongs>> {
    let q = p.q.as_deref().unwrap_or("").trim().to_string();
    if q.chars().count() > MAX_QUERY {
        return Err(ApiError::BadRequest(format!(
            "q is longer than {MAX_QUERY} characters."
        )));
    }
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(25);
    if page == 0 || !(1..=100).contains(&per_page) {
        return Err(ApiError::BadRequest(
            "page starts at 1 and per_page is 1 to 100.".to_string(),
        ));
    }
    let mut conn = st.db.conn().await?;
    let station = requestable_station(&mut conn, &station).await?;
    let key = id_key(&mut conn).await?;
    let (rows, total) =
        db::requests::requestable(&mut conn, &station.id, &q, page, per_page).await?;
    // Pictures as the now-playing JSON shows them: absolute, on the address the client used.
    let base = super::nowplaying::base_url(&headers);
    let art = |sha: Option<&str>| match sha {
        Some(sha) => format!("{base}{}", crate::media::art::path(sha, 500)),
        None => format!("{base}/art/default.svg"),
    };
    let items = rows
        .into_iter()
        .map(|m| RequestableSong {
            song: Song {
                id: crate::nowplaying::song_id(&key, &station.id, &m.sha256),
                text: match (m.artist.is_empty(), m.title.is_empty()) {
                    (false, false) => format!("{} - {}", m.artist, m.title),
                    (true, _) => m.title.clone(),
                    (false, true) => m.artist.clone(),
                },
                artist: m.artist,
                title: m.title,
                art: art(m.art_sha256.as_deref()),
                album: m.album,
            },
            request_url: format!("/api/station/{}/request/{}", station.slug, m.media_id),
            request_id: m.media_id,
        })
        .collect();
    Ok(Json(RequestableSongs {
        items,
        page,
        per_page,
        total,
        total_pages: total.div_ceil(u64::from(per_page)),
    }))
}

/// Request a track (public): it plays after the current track and the requests before it.
/// Refused with a sentence: the track (409) or its artist (409) played or requested within the
/// station's gap, this listener's limit (429, with Retry-After), requests off (403), no such
/// track (404).
#[utoipa::path(post, path = "/api/station/{station}/request/{request_id}", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id"),
           ("request_id" = String, Path, description = "A request_id from the station's requestable list")),
    responses((status = 200, body = RequestAccepted),
              (status = 403, body = Problem, description = "The station takes no requests"),
              (status = 404, body = Problem, description = "No such track"),
              (status = 409, body = Problem, description = "The track or its artist played or was requested within the gap"),
              (status = 429, body = Problem, description = "This listener made its limit of requests")))]
pub async fn request(
    State(st): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiPath((station, request_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<RequestAccepted>> {
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    });
    let mut tx = st.db.begin().await?;
    let station = requestable_station(&mut tx, &station).await?;
    // Requests of one tenant's stations are decided one at a time: two listeners asking for
    // the same track at once cannot both pass the gap.
    db::tenants::lock(&mut tx, &station.tenant_id).await?;
    let track = db::requests::requestable_one(&mut tx, &station.id, &request_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "This station has no requestable track {request_id:.64?}."
            ))
        })?;
    let key = id_key(&mut tx).await?;
    let client = rules::client_hash(&key, &station.id, ip);
    let now = db::now_millis();
    let s = &station.requests;
    let recent = db::requests::recent(&mut tx, &station.id, now - rules::lookback_ms(s)).await?;
    let mine = db::requests::client_times(
        &mut tx,
        &station.id,
        &client,
        now - rules::client_window_ms(s),
    )
    .await?;
    let queued = db::requests::pending_count(&mut tx, &station.id).await?;
    let facts = rules::Facts {
        recent: &recent,
        client: &mine,
        queued,
    };
    let decided = rules::admit(s, (&track.sha256, &track.artist), facts, now);
    st.metrics.song_request(decided.as_ref().err());
    decided?;
    db::requests::insert(&mut tx, &station.id, &track, &client, now).await?;
    tx.commit().await?;
    let what = match track.artist.is_empty() {
        true => track.title.clone(),
        false => format!("{} - {}", track.artist, track.title),
    };
    Ok(Json(RequestAccepted {
        ok: true,
        message: format!(
            "Your request of {what} is queued: it plays after the requests before it."
        ),
    }))
}

/// A station's song requests, newest first: pending (waiting for the AutoDJ), played, and
/// cleared.
#[utoipa::path(get, path = "/v1/stations/{id}/requests", tag = "stations",
    params(("id" = String, Path, description = "Object id"), SongRequestParams),
    responses((status = 200, body = Page<SongRequest>), (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    ReadableStation { station_id, .. }: ReadableStation,
    ApiQuery(p): ApiQuery<SongRequestParams>,
) -> ApiResult<Json<Page<SongRequest>>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit is 1 to 100.".to_string()));
    }
    let mut conn = st.db.conn().await?;
    let cursor = p.cursor.as_deref().unwrap_or("");
    let cursor = db::requests::Cursor::parse(cursor).ok_or_else(|| {
        ApiError::BadRequest(format!("cursor {cursor:.64?} is not one this list gave."))
    })?;
    Ok(Json(
        db::requests::list(&mut conn, &station_id, p.state, cursor, limit).await?,
    ))
}

/// Clear one pending request: the AutoDJ does not play it (unless it is already prepared).
#[utoipa::path(delete, path = "/v1/stations/{id}/requests/{request_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("request_id" = String, Path, description = "Request id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn clear(
    State(st): State<AppState>,
    WritableStation { station_id, .. }: WritableStation,
    ApiPath((_station, request_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if !db::requests::clear(&mut conn, &station_id, &request_id).await? {
        return Err(ApiError::NotFound(format!(
            "The station has no pending request {request_id:.64?}."
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Clear every pending request of the station.
#[utoipa::path(delete, path = "/v1/stations/{id}/requests", tag = "stations",
    params(("id" = String, Path, description = "Object id")),
    responses((status = 200, body = RequestsCleared), (status = 404, body = Problem)))]
pub async fn clear_all(
    State(st): State<AppState>,
    WritableStation { station_id, .. }: WritableStation,
) -> ApiResult<Json<RequestsCleared>> {
    let mut conn = st.db.conn().await?;
    let cleared = db::requests::clear_pending(&mut conn, &station_id).await?;
    Ok(Json(RequestsCleared { cleared }))
}
