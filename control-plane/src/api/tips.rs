//! `POST /v1/me/tips`: the caller (user token) tips a creator of their tenant from their wallet,
//! with a required `Idempotency-Key`. The work is [`crate::tips::send`], shared with the
//! gateway's `send-tip`; this answers it over HTTP and pushes the creator's `notification` and
//! `earnings` events after the commit.

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::idempotency::IdempotencyKey;
use crate::metrics::NotificationSource;
use crate::tips::{self, Refused};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::State};
use onda_shared::api::{CreateTip, Problem, Tip};

/// The API's answer to a refused tip.
pub(super) fn api_error(r: Refused) -> ApiError {
    match r {
        Refused::Invalid(m) | Refused::KeyConflict(m) => ApiError::Unprocessable(m),
        Refused::NotFound(m) => ApiError::NotFound(m),
        Refused::Forbidden {
            code: "blocked" | "banned" | "not_entitled",
            detail,
        } => ApiError::Forbidden(detail),
        Refused::Forbidden { detail, .. } => ApiError::PlanLimit {
            limit: "features.monetization",
            detail,
        },
        Refused::Insufficient(m) => ApiError::PaymentRequired(m),
        Refused::TenantGone(m) => ApiError::Unauthorized(m),
        Refused::Busy(detail) => ApiError::Unavailable {
            detail,
            retry_after_secs: 1,
        },
        Refused::Database(e) => e.into(),
    }
}

/// Tip a creator of your tenant from your wallet (user token): one ledger transaction, the
/// tenant's fee split off; the creator is notified. Requires an `Idempotency-Key` header (the
/// same key as a `send-tip` event's `idempotencyKey` answers that tip).
#[utoipa::path(post, path = "/v1/me/tips", tag = "money",
    params(("Idempotency-Key" = String, Header, description = "Unique per tip; a retry with the same key answers the same tip")),
    request_body = CreateTip,
    responses((status = 201, body = Tip), (status = 400, body = Problem),
              (status = 402, body = Problem, description = "The wallet does not hold the amount"),
              (status = 403, body = Problem, description = "Not a user token, the plan has no monetization, or a block between the two"),
              (status = 404, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem, description = "Too many tips are waiting to be written: send it again with the same key after Retry-After")))]
pub async fn create(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreateTip>, ApiError>,
) -> ApiResult<Response> {
    tips::monetized(&mut *st.db.conn().await?, &me.tenant)
        .await
        .map_err(api_error)?;
    let (IdempotencyKey(key), ApiJson(req)) = (key?, req?);
    let sent = tips::send(
        st.realtime.tips(),
        &st.metrics.ledger,
        &me.tenant.id,
        &me.user.id,
        (&key, &req),
    )
    .await
    .map_err(api_error)?;
    if !sent.replayed {
        super::idempotency::hold_answer(&key).await;
    }
    let mut resp = (StatusCode::CREATED, Json(&sent.tip)).into_response();
    if sent.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    } else {
        st.metrics.realtime.notification(NotificationSource::Money);
        st.realtime.send(&me.tenant.id, &sent.recorded).await;
    }
    if let Some(line) = &sent.chat {
        let body = serde_json::json!({ "streamId": line.stream_id, "message": line });
        st.realtime
            .to_stream(&me.tenant.id, &line.stream_id, "chat-message", &body)
            .await;
    }
    Ok(resp)
}
