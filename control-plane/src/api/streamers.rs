//! `/v1/stations/{id}/streamers`: live DJ accounts, and `/v1/stations/{id}/live`: where they
//! connect. A DJ goes live with any Icecast source client on the station's live mount of its
//! origin edge; the AutoDJ gives way and resumes when the DJ leaves. Live DJs take over from the
//! AutoDJ, so they need the plan's `autodj` feature. Passwords are stored as Argon2 hashes, and
//! nodes receive only the hashes.

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
    CreateStreamer, LiveIngest, Page, PageParams, Problem, Streamer, UpdateStreamer,
};

fn station_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no station {id:?}."))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no streamer {id:?}."))
}

/// Fewest characters of a DJ password: the account is reachable by anyone who can reach an
/// edge, so it must resist guessing even before the edge's lockouts.
pub const MIN_PASSWORD_CHARS: usize = 12;

fn password(p: &str) -> ApiResult<String> {
    let n = p.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "password has {n} characters: a DJ password needs at least {MIN_PASSWORD_CHARS} \
             (and at most 128)."
        )));
    }
    if n > 128 {
        return Err(ApiError::Unprocessable(format!(
            "password has {n} characters: a DJ password has at most 128."
        )));
    }
    if p.chars().any(char::is_control) || p.contains(':') {
        return Err(ApiError::Unprocessable(
            "password must not contain control characters or ':' (source clients send it in \
             Basic authentication)."
                .to_string(),
        ));
    }
    secrets::hash_password(p)
        .map_err(|e| ApiError::Unprocessable(format!("password cannot be hashed: {e}")))
}

fn username(u: &str) -> ApiResult<String> {
    let ok = (1..=64).contains(&u.len())
        && u.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::Unprocessable(format!(
            "username {u:?} must be 1 to 64 of a-z, 0-9, '.', '_' and '-'."
        )));
    }
    if u == "source" {
        return Err(ApiError::Unprocessable(
            "username \"source\" is the station's own source account; choose another.".to_string(),
        ));
    }
    Ok(u.to_string())
}

/// List a station's live DJ accounts.
#[utoipa::path(get, path = "/v1/stations/{id}/streamers", tag = "stations", params(("id" = String, Path, description = "Object id"), PageParams),
    responses((status = 200, body = Page<Streamer>), (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    ReadableStation { station_id: id, .. }: ReadableStation,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Streamer>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::streamers::list(&mut conn, &id, p.limit, &p.cursor).await?,
    ))
}

/// Create a live DJ account.
#[utoipa::path(post, path = "/v1/stations/{id}/streamers", tag = "stations", params(("id" = String, Path, description = "Object id")), request_body = CreateStreamer,
    responses((status = 201, body = Streamer), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    WritableStation {
        tenant,
        station_id: id,
    }: WritableStation,
    ApiJson(req): ApiJson<CreateStreamer>,
) -> ApiResult<(StatusCode, Json<Streamer>)> {
    let user = username(&req.username)?;
    let display_name = match &req.display_name {
        Some(d) => validate::name("display_name", d)?,
        None => user.clone(),
    };
    let hash = password(&req.password)?;
    let mut conn = st.db.conn().await?;
    super::playlists::autodj_plan(&mut conn, &tenant, "which live DJs take over from").await?;
    let s = Streamer {
        id: secrets::new_id("dj"),
        station_id: id,
        username: user.clone(),
        display_name,
        created_at: String::new(),
        updated_at: String::new(),
    };
    match db::streamers::insert(&mut conn, &s, &hash).await {
        Ok(s) => Ok((StatusCode::CREATED, Json(s))),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict(format!(
            "The station already has a streamer named {user:?}."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Change a live DJ account's password or display name.
#[utoipa::path(patch, path = "/v1/stations/{id}/streamers/{streamer_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("streamer_id" = String, Path, description = "Streamer id")),
    request_body = UpdateStreamer,
    responses((status = 200, body = Streamer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    WritableStation { tenant, .. }: WritableStation,
    ApiPath((id, streamer_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateStreamer>,
) -> ApiResult<Json<Streamer>> {
    let display_name = req
        .display_name
        .as_deref()
        .map(|d| validate::name("display_name", d))
        .transpose()?;
    let hash = req.password.as_deref().map(password).transpose()?;
    let mut conn = st.db.conn().await?;
    super::playlists::autodj_plan(&mut conn, &tenant, "which live DJs take over from").await?;
    db::streamers::update(
        &mut conn,
        &id,
        &streamer_id,
        display_name.as_deref(),
        hash.as_deref(),
    )
    .await?
    .map(Json)
    .ok_or_else(|| not_found(&streamer_id))
}

/// Delete a live DJ account (a DJ on the air stays until disconnecting).
#[utoipa::path(delete, path = "/v1/stations/{id}/streamers/{streamer_id}", tag = "stations",
    params(("id" = String, Path, description = "Object id"), ("streamer_id" = String, Path, description = "Streamer id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    _station: WritableStation,
    ApiPath((id, streamer_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if db::streamers::delete(&mut conn, &id, &streamer_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&streamer_id))
    }
}

/// Where the station's live DJs connect (its origin edge and live mount).
#[utoipa::path(get, path = "/v1/stations/{id}/live", tag = "stations", params(("id" = String, Path, description = "Object id")),
    responses((status = 200, body = LiveIngest), (status = 404, body = Problem)))]
pub async fn live(
    State(st): State<AppState>,
    ReadableStation {
        caller,
        station_id: id,
    }: ReadableStation,
) -> ApiResult<Json<LiveIngest>> {
    let station = {
        let mut conn = st.db.conn().await?;
        db::stations::get(&mut conn, &id, caller.tenant_scope())
            .await?
            .ok_or_else(|| station_not_found(&id))?
    };
    // The same free path the leader gives the station's origin (`/live` unless a mount has it).
    let live_mount = onda_shared::paths::live_mount(station.mounts.iter().map(|m| m.path.as_str()));
    let mount = format!("/{}{live_mount}", station.slug);
    let server_url = st.cluster.as_ref().and_then(|c| {
        let snap = c.view.get();
        let origin = &snap.placement.stations.get(&id)?.origin;
        Some(snap.nodes.get(origin)?.edge_url.clone())
    });
    let icecast_url = server_url.as_ref().map(|u| {
        let host = u
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        format!("icecast://USER:PASSWORD@{host}{mount}")
    });
    Ok(Json(LiveIngest {
        server_url,
        mount,
        icecast_url,
    }))
}
