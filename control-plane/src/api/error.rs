//! The API's one error type: each case maps to an HTTP status and an RFC 9457
//! `application/problem+json` body with a sentence a person understands.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onda_shared::api::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 402: the payer's wallet does not hold what the request would take.
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{detail}")]
    PlanLimit { limit: &'static str, detail: String },
    /// A viewer without access: 402 when buying the stream would grant it, 403 otherwise; the
    /// problem's `grant` says what would.
    #[error("{detail}")]
    NoAccess {
        detail: String,
        grant: Box<onda_shared::api::AccessGrant>,
    },
    /// A plan's storage quota: 413, because the request is refused for its size (and would be
    /// accepted once space is freed), with `limit` naming the quota like other plan limits.
    #[error("{detail}")]
    Quota { limit: &'static str, detail: String },
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 429: this client asks for more than its share; `Retry-After` says when to try again.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u32,
    },
    /// 503: the server is at a configured capacity; `Retry-After` says when to try again.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u32,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::validate::Invalid> for ApiError {
    fn from(e: crate::validate::Invalid) -> Self {
        use crate::validate::Invalid;
        match e {
            Invalid::Value(detail) => ApiError::Unprocessable(detail),
            Invalid::PlanLimit { limit, detail } => ApiError::PlanLimit { limit, detail },
            Invalid::Request(detail) => ApiError::BadRequest(detail),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            // Overload, not a fault: every connection stayed busy for the pool's whole wait.
            return ApiError::Unavailable {
                detail: crate::db::POOL_BUSY.to_string(),
                retry_after_secs: 1,
            };
        }
        if let sqlx::Error::Database(db) = &e {
            if db.is_foreign_key_violation() {
                // A referenced object (a plan, a tenant) was deleted or created concurrently.
                return ApiError::Conflict(
                    "An object this request refers to was changed at the same time; retry the request."
                        .to_string(),
                );
            }
            // PostgreSQL: invalid byte sequence / untranslatable character (a NUL in text).
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return ApiError::BadRequest(
                    "Text in this request contains a character that cannot be stored (such as NUL)."
                        .to_string(),
                );
            }
        }
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "payment-required",
                "Payment required",
            ),
            ApiError::NoAccess { grant, .. } if grant.action == "purchase" => (
                StatusCode::PAYMENT_REQUIRED,
                "payment-required",
                "Payment required",
            ),
            ApiError::NoAccess { .. } => (StatusCode::FORBIDDEN, "no-access", "No access"),
            ApiError::PlanLimit { .. } => {
                (StatusCode::FORBIDDEN, "plan-limit", "Plan limit exceeded")
            }
            ApiError::Quota { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "plan-limit",
                "Plan limit exceeded",
            ),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid request",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let detail = match self {
            ApiError::Unauthorized(d) => d.clone(),
            ApiError::Internal(_) => {
                "The server failed to handle the request; it has been logged.".to_string()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("https://onda.dev/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            limit: match self {
                ApiError::PlanLimit { limit, .. } | ApiError::Quota { limit, .. } => {
                    Some((*limit).to_string())
                }
                _ => None,
            },
            grant: match self {
                ApiError::NoAccess { grant, .. } => Some((**grant).clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            // Logged here, where it is handled, and only here.
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        }
        | ApiError::Unavailable {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"onda\""),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool that had no connection free in time is overload: 503 with Retry-After and a
    /// sentence that says to send it again, never a 500.
    #[test]
    fn a_pool_timeout_is_busy_not_internal() {
        let resp = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(1u32))
        );
        let other = ApiError::from(sqlx::Error::RowNotFound).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
