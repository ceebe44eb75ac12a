//! Cover art: the public pictures (`/art/{sha256}/500.jpg` and `…/100.jpg`), named by content
//! hash and so cached by browsers and CDNs for good, and a station's default picture, which a
//! tenant uploads (`PUT /v1/stations/{id}/art`) and now-playing shows for tracks without one.
//! When a station has none either, `/art/default.svg` stands in.

use super::AppState;
use super::auth::WritableStation;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::db::{self, art::Size};
use crate::media::art;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use onda_shared::api::Problem;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Content-addressed: a name never changes its bytes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Pictures kept in memory. A track change sends every open station page for its cover at
/// once; this answers them without a database read each. By content hash, so one cache serves
/// every station and tenant. Hand-written: a FIFO of a few dozen entries needs no cache crate.
const CACHED: usize = 64;
static CACHE: Mutex<VecDeque<((String, u32), Bytes)>> = Mutex::new(VecDeque::new());

fn cached(key: &(String, u32)) -> Option<Bytes> {
    let cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.iter().find(|(k, _)| k == key).map(|(_, b)| b.clone())
}

fn remember(key: (String, u32), bytes: Bytes) {
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.iter().any(|(k, _)| *k == key) {
        return;
    }
    if cache.len() >= CACHED {
        cache.pop_front();
    }
    cache.push_back((key, bytes));
}

/// The built-in picture of a station without one of its own: a record, in the page's colours.
const DEFAULT_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><rect width="100" height="100" fill="#1f2937"/><circle cx="50" cy="50" r="34" fill="#111827"/><circle cx="50" cy="50" r="24" fill="none" stroke="#374151" stroke-width="1.5"/><circle cx="50" cy="50" r="10" fill="#6366f1"/><circle cx="50" cy="50" r="2" fill="#f9fafb"/></svg>"##;

fn no_picture() -> ApiError {
    ApiError::NotFound("There is no such picture.".to_string())
}

/// The client's copy, named in `If-None-Match`, is the one tagged `etag` (quoted): answer 304.
pub(super) fn current_copy(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn picture(bytes: Bytes, etag: &str, content_type: &'static str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{etag}\"");
    let mut resp = if current_copy(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// A cover picture by its content hash, 500 or 100 px on its longer side.
#[utoipa::path(get, path = "/art/{sha256}/{size}", tag = "listen", security(()),
    params(("sha256" = String, Path, description = "The picture's hash (a media file's or station's `art_sha256`)"),
           ("size" = String, Path, description = "`500.jpg` or `100.jpg`")),
    responses((status = 200, description = "The JPEG", content_type = "image/jpeg", body = super::attachments::MediaFileBytes),
              (status = 304, description = "The client's copy (If-None-Match) is current"),
              (status = 404, body = Problem)))]
pub async fn serve(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiPath((sha256, size)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let (Some(px), true) = (
        size.strip_suffix(".jpg").and_then(Size::parse),
        crate::media::is_sha256(&sha256),
    ) else {
        return Err(no_picture());
    };
    let width = if px == Size::Large { 500 } else { 100 };
    let key = (sha256.clone(), width);
    let bytes = match cached(&key) {
        Some(b) => b,
        None => {
            let mut conn = st.db.conn().await?;
            let jpeg = db::art::get(&mut conn, &sha256, px)
                .await?
                .ok_or_else(no_picture)?;
            let b = Bytes::from(jpeg);
            remember(key, b.clone());
            b
        }
    };
    Ok(picture(
        bytes,
        &format!("{sha256}-{width}"),
        "image/jpeg",
        &headers,
    ))
}

/// The picture shown for a station that has none of its own.
#[utoipa::path(get, path = "/art/default.svg", tag = "listen", security(()),
    responses((status = 200, description = "An SVG picture", content_type = "image/svg+xml", body = String)))]
pub async fn default_picture(headers: HeaderMap) -> Response {
    picture(
        Bytes::from_static(DEFAULT_SVG.as_bytes()),
        "default-1",
        "image/svg+xml",
        &headers,
    )
}

/// A station's default picture.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StationArt {
    pub art_sha256: String,
    /// `/art/{art_sha256}/500.jpg`
    pub url: String,
    /// `/art/{art_sha256}/100.jpg`
    pub small_url: String,
}

/// Set the station's default picture, shown for tracks without a cover of their own: the body
/// is a JPEG, PNG or WebP picture (at most 5 MiB) with its `Content-Type`; it is scaled to
/// 500 and 100 px.
#[utoipa::path(put, path = "/v1/stations/{id}/art", tag = "stations",
    params(("id" = String, Path, description = "Station id")),
    request_body(content = super::attachments::MediaFileBytes, content_type = "image/png",
        description = "The picture's bytes (image/jpeg, image/png or image/webp)"),
    responses((status = 200, body = StationArt),
              (status = 413, body = Problem, description = "Larger than 5 MiB"),
              (status = 415, body = Problem, description = "Not image/jpeg, image/png or image/webp"),
              (status = 422, body = Problem, description = "The bytes are not a picture of that type")))]
pub async fn put_station(
    State(st): State<AppState>,
    WritableStation { station_id, .. }: WritableStation,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<StationArt>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !art::IMAGE_TYPES.contains(&content_type.as_str()) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "A station's picture is a JPEG, PNG or WebP image (Content-Type image/jpeg, \
             image/png or image/webp), not {content_type:?}."
        )));
    }
    let bytes = axum::body::to_bytes(body, art::MAX_IMAGE_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "A station's picture is at most {} MiB.",
                art::MAX_IMAGE_BYTES / 1024 / 1024
            ))
        })?;
    let scratch = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("scratch file")))?;
    tokio::fs::write(scratch.path(), &bytes)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("scratch file")))?;
    let scaled = art::from_image(scratch.path())
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("scaling a picture")))?
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "The body is not a {content_type} picture that can be read."
            ))
        })?;
    let mut tx = st.db.begin().await?;
    db::art::put(&mut tx, &scaled.sha256, &scaled.large, &scaled.small).await?;
    let before = db::art::set_station_default(&mut tx, &station_id, Some(&scaled.sha256)).await?;
    if let Some(old) = before.filter(|o| *o != scaled.sha256) {
        db::art::remove_if_unreferenced(&mut tx, &old).await?;
    }
    tx.commit().await?;
    Ok(Json(StationArt {
        url: art::path(&scaled.sha256, 500),
        small_url: art::path(&scaled.sha256, 100),
        art_sha256: scaled.sha256,
    }))
}

/// Remove the station's default picture (`/art/default.svg` stands in again).
#[utoipa::path(delete, path = "/v1/stations/{id}/art", tag = "stations",
    params(("id" = String, Path, description = "Station id")),
    responses((status = 204, description = "Removed (or there was none)")))]
pub async fn delete_station(
    State(st): State<AppState>,
    WritableStation { station_id, .. }: WritableStation,
) -> ApiResult<StatusCode> {
    let mut tx = st.db.begin().await?;
    if let Some(old) = db::art::set_station_default(&mut tx, &station_id, None).await? {
        db::art::remove_if_unreferenced(&mut tx, &old).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
