//! Request extractors that turn axum's rejections into problem documents: malformed JSON → 400,
//! unknown fields or wrong types → 422, too large → 413, not JSON → 415.

use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use onda_shared::api::PageParams;
use serde::de::DeserializeOwned;

/// `axum::Json` with problem+json rejections.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let text = r.body_text();
    match r {
        JsonRejection::JsonDataError(_) => ApiError::Unprocessable(format!(
            "The JSON body does not fit this request: {}",
            text.trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        )),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest(format!("The body is not valid JSON: {text}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "Send the body as JSON with Content-Type: application/json.".to_string(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(
            "The request body is larger than this server accepts.".to_string(),
        ),
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `axum::extract::Query` with problem+json rejections.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_encoded_control(parts.uri.query().unwrap_or_default()) {
            return Err(ApiError::BadRequest(
                "The query string contains a control character.".to_string(),
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::BadRequest(format!("Invalid query string: {}", r.body_text()))
            })
    }
}

/// `axum::extract::Path` with problem+json rejections.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No stored id contains a control character; such a path names nothing.
        if has_encoded_control(parts.uri.path()) {
            return Err(ApiError::NotFound(
                "There is no object with that id.".to_string(),
            ));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| ApiError::BadRequest(r.body_text()))
    }
}

/// True when a URI part carries a percent-encoded control character (`%00`–`%1F`, `%7F`).
fn has_encoded_control(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_some_and(|b| b < 0x20 || b == 0x7f)
    })
}

/// Validated paging: `limit` in 1..=100 (default 50) and the cursor to start after.
pub struct Paging {
    pub limit: u32,
    pub cursor: String,
}

pub const MAX_PAGE: u32 = 100;

/// A page size as asked for: 1..=100, 50 when not given.
pub fn page_limit(requested: Option<u32>) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(50);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}."
        )))
    }
}

impl TryFrom<PageParams> for Paging {
    type Error = ApiError;

    fn try_from(p: PageParams) -> Result<Self, ApiError> {
        Ok(Paging {
            limit: page_limit(p.limit)?,
            cursor: p.cursor.unwrap_or_default(),
        })
    }
}
