//! Message attachments: `POST /v1/me/attachments`, where an end user uploads an image, audio or
//! video file for a message (with a user token, on a plan with `messaging`), and
//! `GET /v1/attachments/{id}`, where anyone with its URL fetches it.
//!
//! An upload, in order: the user token, the plan's `messaging` feature, the `Content-Type` and
//! the declared length are checked before a byte of the body is read; the body streams into the
//! media store's temp directory while hashed and is cut off past the plan's `attachment_bytes`
//! (or the server's `media.max_upload_bytes`, when less) and must fit in the plan's
//! `storage_bytes`, which attachments share with the tenant's media files and their renditions
//! (413 with `limit` = "storage_bytes"); it is then checked as real media of
//! its declared type (`media::attachment`) in the tenant's fair share of probe slots; and under
//! the store's reference lock the row is inserted and the blob placed before the commit, as the
//! media library does. Every refusal answers `Connection: close`, since the unread rest of the
//! body makes the connection unusable.
//!
//! Serving: the id is the capability (190 random bits), so the URL works in `<img src>` and
//! `<audio src>` without a token. The file is served as the type it was checked as, never
//! sniffed (`nosniff`), under a Content-Security-Policy that lets it run nothing (an uploaded
//! file must never act on this origin), with long private caching (an attachment never
//! changes) and Range requests (tower-http's `ServeFile`). It is one of the public routes, with
//! their CORS layer, so a tenant's app on its own origin can fetch it too.

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use super::stations::{lock_active_tenant, plan_of};
use crate::db;
use crate::media::ReceiveError;
use crate::media::attachment::{self, CheckError};
use crate::secrets;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use onda_shared::api::{Attachment, Plan, Problem};

/// Headers of every served attachment: never sniffed, never run (a document it would be is
/// sandboxed with no sources), cached for a year by the client only (it never changes; it is
/// not public).
const SERVED_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    ),
    (
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable",
    ),
];

// How the OpenAPI document describes an upload's body.
/// The raw bytes of an image, audio or video file.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct MediaFileBytes(pub Vec<u8>);

/// Attachments are part of messaging: a plan without it has none.
fn require_messaging(plan: &Plan) -> ApiResult<()> {
    if plan.features.messaging {
        Ok(())
    } else {
        Err(ApiError::PlanLimit {
            limit: "features.messaging",
            detail: format!(
                "Plan {:?} does not include messaging, so its users cannot upload attachments.",
                plan.name
            ),
        })
    }
}

/// The refusal of an upload over `max` bytes: the plan's limit, or the server's when that is
/// the lower.
fn too_large(plan: &Plan, server_max: u64) -> ApiError {
    let limit = plan.limits.attachment_bytes;
    if limit <= server_max {
        ApiError::Quota {
            limit: "attachment_bytes",
            detail: format!(
                "The file is larger than plan {:?} allows for one attachment ({limit} bytes, \
                 attachment_bytes).",
                plan.name
            ),
        }
    } else {
        ApiError::PayloadTooLarge(format!(
            "The file is larger than this server accepts ({server_max} bytes, \
             media.max_upload_bytes)."
        ))
    }
}

fn check_error(e: CheckError) -> ApiError {
    if e.is_server_fault() {
        ApiError::Internal(anyhow::Error::new(e).context(
            "cannot check an attachment: are ffmpeg and ffprobe installed and on the PATH?",
        ))
    } else {
        ApiError::Unprocessable(e.to_string())
    }
}

/// Upload a media attachment (user token): the raw file is the body, its type the
/// `Content-Type` (JPEG, PNG, WebP or GIF images; MP3, AAC/M4A, FLAC, Ogg, WAV or WebM audio; MP4
/// or WebM video). It is checked as real media of that type (images decoded, audio and video
/// decoded in full) and refused with 422 when it is not, and with 413 when it is larger than
/// the plan's `attachment_bytes` or does not fit in the tenant's `storage_bytes` (shared with its
/// media files). Send the answer's `url` as a message's `mediaUrl`.
#[utoipa::path(post, path = "/v1/me/attachments", tag = "messaging",
    request_body(content = MediaFileBytes, content_type = "image/png",
        description = "The file's bytes, with its own Content-Type (image/jpeg, image/png, image/webp, image/gif, audio/mpeg, audio/mp4, audio/ogg, audio/webm, video/mp4, video/webm, …)"),
    responses((status = 201, body = Attachment, description = "Stored"),
              (status = 400, body = Problem, description = "The upload was interrupted"),
              (status = 403, body = Problem, description = "Not a user token, or the plan has no messaging"),
              (status = 413, body = Problem, description = "Larger than the plan's attachment_bytes or media.max_upload_bytes, or over its storage_bytes (`limit` names which)"),
              (status = 415, body = Problem, description = "A Content-Type attachments may not have"),
              (status = 422, body = Problem, description = "The content is not what its Content-Type says, or is damaged"),
              (status = 429, body = Problem, description = "No probe slot of the tenant's share came free in time (Retry-After)")))]
pub async fn upload(State(st): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    super::media::closing_on_refusal(receive_and_store(&st, &mut parts, body).await)
}

/// The upload itself; extractors run here so that their refusals close the connection too.
async fn receive_and_store(
    st: &AppState,
    parts: &mut Parts,
    body: Body,
) -> ApiResult<(StatusCode, Json<Attachment>)> {
    let UserCaller(me) = UserCaller::from_request_parts(parts, st).await?;
    let plan = {
        let mut conn = st.db.conn().await?;
        plan_of(&mut conn, &me.tenant.plan_id).await?
    };
    require_messaging(&plan)?;
    let declared = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = attachment::accepted(declared).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "An attachment is sent with its own Content-Type, one of {}; got {declared:?}.",
            attachment::accepted_list()
        ))
    })?;
    let server_max = st.media.max_upload_bytes();
    let max = plan.limits.attachment_bytes.min(server_max);
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > max) {
        return Err(too_large(&plan, server_max));
    }
    let upload = st
        .media
        .receive_at_most(body, max)
        .await
        .map_err(|e| match e {
            ReceiveError::TooLarge { .. } => too_large(&plan, server_max),
            ReceiveError::Body(e) => {
                ApiError::BadRequest(format!("The upload was interrupted before its end: {e}."))
            }
            ReceiveError::Io(e) => ApiError::Internal(anyhow::Error::new(e).context("media store")),
        })?;
    // A first look before the expensive check: an upload the tenant's storage cannot hold is
    // refused without one. Decided for good below, under the tenant's lock.
    {
        let mut conn = st.db.conn().await?;
        let used = db::media::tenant_usage(&mut conn, &me.tenant.id).await?;
        super::media::check_quota(&plan, used.total(), upload.size_bytes, 0)?;
    }
    let checked = {
        let _permit = st.media.probe_permit(&me.tenant.id).await.map_err(|busy| {
            ApiError::TooManyRequests {
                detail: format!(
                    "This tenant's uploads already use every probe slot they may use \
                     (media.probe_slots_per_tenant), and none came free within {} s; retry later.",
                    busy.waited.as_secs()
                ),
                retry_after_secs: 10,
            }
        })?;
        attachment::check(upload.path(), kind, st.media.max_duration())
            .await
            .map_err(check_error)?
    };
    let id = secrets::new_attachment_id();
    let stored = db::attachments::Stored {
        tenant_id: me.tenant.id.clone(),
        user_id: me.user.id.clone(),
        sha256: upload.sha256.clone(),
        attachment: Attachment {
            url: db::attachments::public_url(st.public_url.as_deref(), &id),
            id,
            media_type: kind.media_type,
            content_type: kind.content_type.to_string(),
            bytes: upload.size_bytes,
            width: checked.width,
            height: checked.height,
            duration_ms: checked.duration_ms,
        },
    };

    let refs = st.media.lock_refs().await;
    let mut tx = st.db.begin().await?;
    // Under the tenant's lock: a tenant deleted meanwhile keeps no attachment, and concurrent
    // uploads (attachments or media files) never overrun its storage together.
    let tenant = lock_active_tenant(&mut tx, &me.tenant.id).await?;
    let plan = plan_of(&mut tx, &tenant.plan_id).await?;
    let used = db::media::tenant_usage(&mut tx, &tenant.id).await?;
    super::media::check_quota(&plan, used.total(), upload.size_bytes, 0)?;
    db::attachments::insert(&mut tx, &stored, db::now_millis()).await?;
    super::media::place_and_commit(st, &refs, upload, tx).await?;
    Ok((StatusCode::CREATED, Json(stored.attachment)))
}

fn no_attachment() -> ApiError {
    ApiError::NotFound("There is no such attachment (or it was deleted).".to_string())
}

/// Fetch an attachment: no token, the id in the URL is the capability. Served as the type it
/// was uploaded as, with `Range` support, `X-Content-Type-Options: nosniff`, a
/// Content-Security-Policy that runs nothing, and long private caching.
#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "messaging", security(()),
    params(("id" = String, Path, description = "Attachment id (the capability)")),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = MediaFileBytes),
              (status = 206, description = "The requested range of the file"),
              (status = 404, body = Problem, description = "No such attachment, or it was deleted")))]
pub async fn serve(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> ApiResult<Response> {
    if !secrets::is_attachment_id(&id) {
        return Err(no_attachment());
    }
    let stored = {
        let mut conn = st.db.conn().await?;
        db::attachments::get(&mut conn, &id)
            .await?
            .ok_or_else(no_attachment)?
    };
    let Some(path) = st.media.blob_path(&stored.sha256) else {
        tracing::warn!(
            attachment = %id,
            sha256 = %stored.sha256,
            "an attachment's blob is missing from the media store"
        );
        return Err(no_attachment());
    };
    let served = tower_http::services::ServeFile::new(path)
        .try_call(req)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("media store")))?;
    let mut resp = served.map(Body::new);
    let success = resp.status().is_success();
    let headers = resp.headers_mut();
    if success {
        let content_type = HeaderValue::from_str(&stored.attachment.content_type)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("content type")))?;
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    for (name, value) in SERVED_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(resp)
}
