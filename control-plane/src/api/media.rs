//! `/v1/stations/{id}/media`: a station's media library. Uploads are the raw file as the body,
//! streamed to the media store while hashed, probed as real audio (at most
//! `media.max_duration_secs` long, in the tenant's fair share of probe slots), charged against
//! the plan's `storage_bytes` per tenant with the estimated size of the renditions the edge will
//! make of it, and stored once per content. Scoping is the stations' own: a
//! tenant key reaches only its stations' files (another tenant's station answers 404); the admin
//! token reads and deletes any.
//!
//! An upload, in order: the caller, the station and the plan's `autodj` feature are checked
//! before a byte of the body is read; the body streams into the store while hashed; content the
//! station already holds answers 200 and a file over the quota is refused, both before the
//! probe; then, under the store's reference lock and in a transaction holding the tenant's lock,
//! the checks are made again, the row inserted and the blob placed before the commit. Every
//! refusal answers `Connection: close`, since the unread rest of the body makes the connection
//! unusable.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use super::stations::{lock_active_tenant, plan_of};
use crate::db::{self, is_unique_violation};
use crate::media::ReceiveError;
use crate::media::art;
use crate::media::probe::{self, ProbeError};
use crate::{secrets, validate};
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use onda_shared::api::{
    MediaFile, MediaListParams, Page, PageParams, Plan, Problem, Station, UpdateMedia,
    UploadMediaParams,
};

// How the OpenAPI document describes an upload's body: a `Vec<u8>` would be documented as an
// array of integers.
/// The raw bytes of an audio file.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct AudioFileBytes(pub Vec<u8>);

/// Longest `?q=`, in characters.
const MAX_QUERY: usize = 200;

fn station_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no station {id:?}."))
}

fn media_not_found(station_id: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("Station {station_id:?} has no media file {id:?}."))
}

async fn station_of(conn: &mut db::Conn, caller: &Caller, id: &str) -> ApiResult<Station> {
    db::stations::get(conn, id, caller.tenant_scope())
        .await?
        .ok_or_else(|| station_not_found(id))
}

/// The media library is part of the AutoDJ: a plan without it has no uploads.
fn require_autodj(plan: &Plan) -> ApiResult<()> {
    if plan.features.autodj {
        Ok(())
    } else {
        Err(ApiError::PlanLimit {
            limit: "features.autodj",
            detail: format!(
                "Plan {:?} does not include the AutoDJ, so its stations have no media library.",
                plan.name
            ),
        })
    }
}

/// The plan's `storage_bytes` holds the tenant's files, renditions and attachments (`used`
/// bytes, `db::media::Usage::total`) plus `size` more of the file and `renditions` more of its
/// renditions.
pub(super) fn check_quota(plan: &Plan, used: u64, size: u64, renditions: u64) -> ApiResult<()> {
    let quota = plan.limits.storage_bytes;
    let more = size.saturating_add(renditions);
    if used.saturating_add(more) <= quota {
        return Ok(());
    }
    let what = if renditions == 0 {
        format!("the file has {size} more")
    } else {
        format!(
            "the file needs {more} more ({size} of its own and {renditions} for the renditions \
             the station's mounts make of it)"
        )
    };
    Err(ApiError::Quota {
        limit: "storage_bytes",
        detail: format!(
            "Plan {:?} includes {quota} bytes of storage (media files, their renditions and \
             message attachments); this tenant uses {used} and {what}. Delete files or change \
             plan.",
            plan.name
        ),
    })
}

fn too_large(max: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "The file is larger than this server accepts ({max} bytes, media.max_upload_bytes)."
    ))
}

fn probe_error(e: ProbeError, filename: &str) -> ApiError {
    match e {
        ProbeError::Tool { .. } => {
            ApiError::Internal(anyhow::Error::new(e).context(
                "cannot probe an upload: are ffmpeg and ffprobe installed and on the PATH?",
            ))
        }
        refused => ApiError::Unprocessable(format!("{filename:?}: {refused}")),
    }
}

/// Upload an audio file (tenant key): the raw file is the body, with any Content-Type. Refused
/// with 422 when it is not audio, truncated, corrupt or plays longer than the server accepts,
/// and with 413 when it is larger than the server accepts or does not fit the plan's storage
/// with its renditions (`limit` = "storage_bytes"); nothing is stored then. The same content uploaded again to the same station answers 200 with the
/// existing file.
#[utoipa::path(post, path = "/v1/stations/{id}/media", tag = "media",
    params(("id" = String, Path, description = "Station id"), UploadMediaParams),
    request_body(content = AudioFileBytes, content_type = "application/octet-stream",
        description = "The audio file's bytes: MP3, AAC/M4A, FLAC, Ogg Vorbis/Opus, WAV or Matroska audio"),
    responses((status = 201, body = MediaFile, description = "Stored"),
              (status = 200, body = MediaFile, description = "This station already holds the same content"),
              (status = 400, body = Problem, description = "No filename, or the upload was interrupted"),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 413, body = Problem, description = "Larger than media.max_upload_bytes, or over the plan's storage_bytes (the file and its renditions)"),
              (status = 422, body = Problem, description = "Not audio, truncated, corrupt, or longer than media.max_duration_secs"),
              (status = 429, body = Problem, description = "No probe slot of the tenant's share came free in time (Retry-After)")))]
pub async fn upload(State(st): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    closing_on_refusal(receive_and_store(&st, &mut parts, body).await)
}

/// Places an upload's blob in the store, then commits `tx`, which references it; when the
/// commit fails the blob goes again unless something else references it.
pub(super) async fn place_and_commit(
    st: &AppState,
    refs: &crate::media::RefsGuard<'_>,
    upload: crate::media::Upload,
    tx: sqlx::Transaction<'static, sqlx::Any>,
) -> ApiResult<()> {
    let sha256 = upload.sha256.clone();
    st.media
        .place(refs, upload)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("media store")))?;
    if let Err(e) = tx.commit().await {
        st.media.remove_if_unreferenced(refs, &st.db, &sha256).await;
        return Err(e.into());
    }
    Ok(())
}

/// An upload's answer. A refusal may leave most of the body unread, and the server then closes
/// the connection; saying so (`Connection: close`) keeps clients from sending their next
/// request on it.
pub(super) fn closing_on_refusal(answer: ApiResult<impl axum::response::IntoResponse>) -> Response {
    match answer {
        Ok(stored) => stored.into_response(),
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// Probes an upload, and scales the cover it embeds, in a slot of the tenant's share (429 when
/// none comes free in time).
async fn probe_in_turn(
    st: &AppState,
    tenant_id: &str,
    path: &std::path::Path,
    filename: &str,
) -> ApiResult<(probe::Probed, Option<art::Art>)> {
    let _permit =
        st.media
            .probe_permit(tenant_id)
            .await
            .map_err(|busy| ApiError::TooManyRequests {
                detail: format!(
                    "This tenant's uploads already use every probe slot they may use \
                 (media.probe_slots_per_tenant), and none came free within {} s; retry later.",
                    busy.waited.as_secs()
                ),
                retry_after_secs: 10,
            })?;
    let probed = probe::probe(path, filename, st.media.max_duration())
        .await
        .map_err(|e| probe_error(e, filename))?;
    let cover = if probed.picture {
        art::from_audio(path)
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("cover art")))?
    } else {
        None
    };
    Ok((probed, cover))
}

/// The upload itself. Extractors run here rather than in the handler's signature so that their
/// refusals (401, 403, 400) also close the connection.
async fn receive_and_store(
    st: &AppState,
    parts: &mut Parts,
    body: Body,
) -> ApiResult<(StatusCode, Json<MediaFile>)> {
    let caller = Caller::from_request_parts(parts, st).await?;
    let tenant = caller.writing_tenant("Media files")?.clone();
    let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, st).await?;
    let ApiQuery(q) = ApiQuery::<UploadMediaParams>::from_request_parts(parts, st).await?;
    let headers = &parts.headers;
    // Everything that can be refused without the body is, before a byte of it is read.
    {
        let mut conn = st.db.conn().await?;
        station_of(&mut conn, &caller, &id).await?;
        require_autodj(&plan_of(&mut conn, &tenant.plan_id).await?)?;
    }
    let filename = validate::media_filename(q.filename.as_deref())?;
    let max = st.media.max_upload_bytes();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > max) {
        return Err(too_large(max));
    }

    let upload = st.media.receive(body).await.map_err(|e| match e {
        ReceiveError::TooLarge { max } => too_large(max),
        ReceiveError::Body(e) => {
            ApiError::BadRequest(format!("The upload was interrupted before its end: {e}."))
        }
        ReceiveError::Io(e) => ApiError::Internal(anyhow::Error::new(e).context("media store")),
    })?;
    // A first look before the expensive decode: content the station already holds needs no
    // probe, and a file over the quota is refused without one. Decided for good below, under
    // the tenant's lock.
    {
        let mut conn = st.db.conn().await?;
        if let Some(existing) = db::media::find_by_sha256(&mut conn, &id, &upload.sha256).await? {
            return Ok((StatusCode::OK, Json(existing)));
        }
        let plan = plan_of(&mut conn, &tenant.plan_id).await?;
        let used = db::media::tenant_usage(&mut conn, &tenant.id).await?;
        check_quota(&plan, used.total(), upload.size_bytes, 0)?;
    }
    let (probed, cover) = probe_in_turn(st, &tenant.id, upload.path(), &filename).await?;

    let refs = st.media.lock_refs().await;
    let mut tx = st.db.begin().await?;
    // Checked again under the tenant's lock: the upload took time, and the quota must hold
    // against concurrent uploads of the same tenant.
    let tenant = lock_active_tenant(&mut tx, &tenant.id).await?;
    let station = station_of(&mut tx, &caller, &id).await?;
    let plan = plan_of(&mut tx, &tenant.plan_id).await?;
    require_autodj(&plan)?;
    if let Some(existing) = db::media::find_by_sha256(&mut tx, &station.id, &upload.sha256).await? {
        return Ok((StatusCode::OK, Json(existing)));
    }
    let used = db::media::tenant_usage(&mut tx, &tenant.id).await?;
    let renditions = db::media::rendition_bytes(
        probed.duration_ms,
        db::media::rendition_kbps(&station.mounts),
    );
    check_quota(&plan, used.total(), upload.size_bytes, renditions)?;
    let file = MediaFile {
        id: secrets::new_id("med"),
        tenant_id: tenant.id.clone(),
        station_id: station.id.clone(),
        sha256: upload.sha256.clone(),
        size_bytes: upload.size_bytes,
        rendition_bytes: renditions,
        filename,
        artist: probed.artist,
        title: probed.title,
        album: probed.album,
        duration_ms: probed.duration_ms,
        codec: probed.codec,
        bitrate_kbps: probed.bitrate_kbps,
        art_sha256: cover.as_ref().map(|a| a.sha256.clone()),
        created_at: String::new(),
        updated_at: String::new(),
    };
    if let Some(a) = &cover {
        db::art::put(&mut tx, &a.sha256, &a.large, &a.small).await?;
    }
    let saved = match db::media::insert(&mut tx, &file).await {
        Ok(saved) => saved,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::Conflict(
                "The same file is being uploaded to this station at the same time; retry."
                    .to_string(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    place_and_commit(st, &refs, upload, tx).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// List a station's media files, optionally searching artist, title, album and file name.
#[utoipa::path(get, path = "/v1/stations/{id}/media", tag = "media",
    params(("id" = String, Path, description = "Station id"), MediaListParams),
    responses((status = 200, body = Page<MediaFile>), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MediaListParams>,
) -> ApiResult<Json<Page<MediaFile>>> {
    let p = Paging::try_from(PageParams {
        limit: q.limit,
        cursor: q.cursor,
    })?;
    let search = q.q.as_deref().unwrap_or_default().trim();
    if search.chars().count() > MAX_QUERY {
        return Err(ApiError::BadRequest(format!(
            "q is longer than {MAX_QUERY} characters."
        )));
    }
    let mut conn = st.db.conn().await?;
    let station = station_of(&mut conn, &caller, &id).await?;
    Ok(Json(
        db::media::list(&mut conn, &station.id, search, p.limit, &p.cursor).await?,
    ))
}

/// Get a media file.
#[utoipa::path(get, path = "/v1/stations/{id}/media/{media_id}", tag = "media",
    params(("id" = String, Path, description = "Station id"),
           ("media_id" = String, Path, description = "Media file id")),
    responses((status = 200, body = MediaFile), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((id, media_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<MediaFile>> {
    let mut conn = st.db.conn().await?;
    let station = station_of(&mut conn, &caller, &id).await?;
    db::media::get(&mut conn, &station.id, &media_id)
        .await?
        .map(Json)
        .ok_or_else(|| media_not_found(&id, &media_id))
}

/// Edit a media file's artist, title or album (tenant key); absent fields stay.
#[utoipa::path(patch, path = "/v1/stations/{id}/media/{media_id}", tag = "media",
    params(("id" = String, Path, description = "Station id"),
           ("media_id" = String, Path, description = "Media file id")),
    request_body = UpdateMedia,
    responses((status = 200, body = MediaFile), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((id, media_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateMedia>,
) -> ApiResult<Json<MediaFile>> {
    let tenant = caller.writing_tenant("Media files")?.clone();
    let mut tx = st.db.begin().await?;
    lock_active_tenant(&mut tx, &tenant.id).await?;
    let station = station_of(&mut tx, &caller, &id).await?;
    let mut m = db::media::get(&mut tx, &station.id, &media_id)
        .await?
        .ok_or_else(|| media_not_found(&id, &media_id))?;
    if let Some(a) = &req.artist {
        m.artist = validate::tag("artist", a)?;
    }
    if let Some(t) = &req.title {
        m.title = validate::tag("title", t)?;
    }
    if let Some(a) = &req.album {
        m.album = validate::tag("album", a)?;
    }
    let saved = db::media::update_tags(&mut tx, &m).await?;
    tx.commit().await?;
    Ok(Json(saved))
}

/// Delete a media file: its bytes leave the tenant's storage, and the stored content goes when
/// no station holds it any more.
#[utoipa::path(delete, path = "/v1/stations/{id}/media/{media_id}", tag = "media",
    params(("id" = String, Path, description = "Station id"),
           ("media_id" = String, Path, description = "Media file id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((id, media_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    if let Caller::Tenant(_) = caller {
        caller.writing_tenant("Media files")?;
    }
    let refs = st.media.lock_refs().await;
    let mut tx = st.db.begin().await?;
    let station = station_of(&mut tx, &caller, &id).await?;
    let sha256 = db::media::delete(&mut tx, &station.id, &media_id)
        .await?
        .ok_or_else(|| media_not_found(&id, &media_id))?;
    // Its pending requests can no longer play.
    db::requests::clear_of_media(&mut tx, &station.id, &media_id).await?;
    tx.commit().await?;
    st.media
        .remove_if_unreferenced(&refs, &st.db, &sha256)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
