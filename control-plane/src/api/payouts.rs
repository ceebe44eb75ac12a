//! Payouts: a creator asks for some of their earnings (`POST /v1/me/payouts`, user token), the
//! tenant lists them (`GET /v1/payouts`) and decides each once: paid by its payment provider
//! (`POST /v1/payouts/{id}/paid`, the amount leaves to `external`) or rejected
//! (`POST /v1/payouts/{id}/rejected`, the amount returns to earnings). Every step is a new
//! ledger transaction through `payouts_pending`, so balances stay derived from entries. Each
//! route moves value and requires an `Idempotency-Key`; a second decision of a payout is a 409.

use super::AppState;
use super::auth::{Caller, UserCaller, users_tenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use super::idempotency::{self, Begun, IdempotencyKey, Movement};
use super::tips::api_error;
use super::transactions::{post_error, rule_error, text};
use crate::db::{self, payouts::Decision};
use crate::ledger::{self, PayoutDecision};
use crate::metrics::NotificationSource;
use crate::notifications;
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery;
use crate::webhooks;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use onda_shared::api::{
    CreatePayout, LedgerSource, MarkPayoutPaid, Page, Payout, PayoutListParams, PayoutStatus,
    Problem, RejectPayout, Tenant, WebhookEventType,
};

const REQUEST_ROUTE: &str = "POST /v1/me/payouts";
const PAID_ROUTE: &str = "POST /v1/payouts/{id}/paid";
const REJECTED_ROUTE: &str = "POST /v1/payouts/{id}/rejected";

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no payout {id:?}."))
}

/// Request a payout of part of your earnings (a creator's user token): the amount moves from
/// earnings to `payouts_pending` until the tenant decides. Requires an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/me/payouts", tag = "money",
    params(("Idempotency-Key" = String, Header, description = "Unique per request; a retry with the same key answers the same payout")),
    request_body = CreatePayout,
    responses((status = 201, body = Payout), (status = 400, body = Problem),
              (status = 403, body = Problem, description = "Not a creator's user token, or the plan has no monetization"),
              (status = 409, body = Problem, description = "The earnings do not hold the amount"),
              (status = 422, body = Problem)))]
pub async fn request(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreatePayout>, ApiError>,
) -> ApiResult<Response> {
    crate::tips::monetized(&mut *st.db.conn().await?, &me.tenant)
        .await
        .map_err(api_error)?;
    if !me.user.creator {
        return Err(ApiError::Forbidden(
            "Only creators have earnings to pay out: this user is not a creator.".to_string(),
        ));
    }
    let (key, ApiJson(req)) = (key?, req?);
    let creator = me.user.id.clone();
    let ms = db::now_millis();
    let id = crate::secrets::new_time_id("pyt", ms);
    let posting =
        ledger::payout_request(&creator, req.amount, &id).map_err(|e| rule_error(&st, e))?;
    let hash = idempotency::request_hash(REQUEST_ROUTE, &creator, &req)?;
    let tenant = &me.tenant;
    let mut m = match idempotency::begin(&st, &tenant.id, key, REQUEST_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    let t = db::ledger::post(&mut m.tx, tenant, &posting)
        .await
        .map_err(|e| post_error(&st, e))?;
    let payout = db::payouts::insert(
        &mut m.tx,
        &db::payouts::NewPayout {
            id: &id,
            tenant_id: &tenant.id,
            user_id: &creator,
            amount: t.amount,
            currency: &t.currency,
            request_transaction_id: &t.id,
            created_ms: ms,
        },
    )
    .await?;
    webhooks::enqueue(
        &mut m.tx,
        &tenant.id,
        WebhookEventType::PayoutRequested,
        &payout,
    )
    .await?;
    let resp = m.finish(StatusCode::CREATED, &payout).await?;
    st.metrics.ledger.transaction(LedgerSource::Payout);
    Ok(resp)
}

/// The tenant's payouts, newest first, by `status` and `user_id`.
#[utoipa::path(get, path = "/v1/payouts", tag = "money", params(PayoutListParams),
    responses((status = 200, body = Page<Payout>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PayoutListParams>,
) -> ApiResult<Json<Page<Payout>>> {
    let tenant = users_tenant(&caller)?;
    let user = q
        .user_id
        .as_deref()
        .map(crate::users::user_id)
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let cursor = q.cursor.unwrap_or_default();
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::payouts::list(&mut conn, &tenant.id, (user, q.status), limit, &cursor).await?,
    ))
}

/// The caller's own payouts, newest first (a creator's user token).
#[utoipa::path(get, path = "/v1/me/payouts", tag = "money", params(PayoutListParams),
    responses((status = 200, body = Page<Payout>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiQuery(q): ApiQuery<PayoutListParams>,
) -> ApiResult<Json<Page<Payout>>> {
    if q.user_id.is_some() {
        return Err(ApiError::BadRequest(
            "user_id filters the tenant's list (GET /v1/payouts); this one lists only yours."
                .to_string(),
        ));
    }
    let limit = page_limit(q.limit)?;
    let cursor = q.cursor.unwrap_or_default();
    let mut conn = st.db.conn().await?;
    let filter = (Some(me.user.id.as_str()), q.status);
    Ok(Json(
        db::payouts::list(&mut conn, &me.tenant.id, filter, limit, &cursor).await?,
    ))
}

/// Mark a requested payout paid by the tenant's payment provider, with its reference: the
/// amount leaves `payouts_pending` to `external`. Decided once: a payout already paid or
/// rejected is a 409. Requires an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/payouts/{id}/paid", tag = "money",
    params(("id" = String, Path, description = "The payout's id"),
           ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry with the same key answers the same result")),
    request_body = MarkPayoutPaid,
    responses((status = 200, body = Payout), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem, description = "Already decided"),
              (status = 422, body = Problem)))]
pub async fn paid(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<MarkPayoutPaid>, ApiError>,
) -> ApiResult<Response> {
    let tenant = caller.writing_tenant("Payouts")?.clone();
    exists(&st, &tenant, &id).await?;
    let (key, ApiJson(req)) = (key?, req?);
    let reference = text("reference", &req.reference, 200)?;
    let hash = idempotency::request_hash(PAID_ROUTE, &id, &req)?;
    let m = match idempotency::begin(&st, &tenant.id, key, PAID_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    decide(&st, m, &tenant, &id, PayoutDecision::Paid { reference }).await
}

/// Reject a requested payout, with the reason told to the creator: the amount returns from
/// `payouts_pending` to their earnings (a new transaction). Decided once: a payout already paid
/// or rejected is a 409. Requires an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/payouts/{id}/rejected", tag = "money",
    params(("id" = String, Path, description = "The payout's id"),
           ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry with the same key answers the same result")),
    request_body = RejectPayout,
    responses((status = 200, body = Payout), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem, description = "Already decided"),
              (status = 422, body = Problem)))]
pub async fn rejected(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<RejectPayout>, ApiError>,
) -> ApiResult<Response> {
    let tenant = caller.writing_tenant("Payouts")?.clone();
    exists(&st, &tenant, &id).await?;
    let (key, ApiJson(req)) = (key?, req?);
    let reason = text("reason", &req.reason, 500)?;
    let hash = idempotency::request_hash(REJECTED_ROUTE, &id, &req)?;
    let m = match idempotency::begin(&st, &tenant.id, key, REJECTED_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    decide(&st, m, &tenant, &id, PayoutDecision::Rejected { reason }).await
}

/// Another tenant's payout, or none, is a 404 whatever the key and body.
async fn exists(st: &AppState, tenant: &Tenant, id: &str) -> ApiResult<()> {
    match db::payouts::get(&mut *st.db.conn().await?, &tenant.id, id).await? {
        Some(_) => Ok(()),
        None => Err(not_found(id)),
    }
}

fn already_decided(p: &Payout) -> ApiError {
    ApiError::Conflict(format!(
        "Payout {:?} was already {} at {}: a payout is decided once.",
        p.id,
        p.status.as_str(),
        p.decided_at.as_deref().unwrap_or("an earlier time")
    ))
}

/// Decides payout `id` in the movement's transaction: the payout row first (one conditional
/// UPDATE, so of two concurrent decisions the second finds it decided and is refused), then
/// the ledger transaction, the webhook event and the creator's notification.
async fn decide(
    st: &AppState,
    mut m: Movement,
    tenant: &Tenant,
    id: &str,
    decision: PayoutDecision,
) -> ApiResult<Response> {
    let payout = db::payouts::get(&mut m.tx, &tenant.id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let (status, reference, reason, event) = match &decision {
        PayoutDecision::Paid { reference } => (
            PayoutStatus::Paid,
            Some(reference.as_str()),
            None,
            WebhookEventType::PayoutPaid,
        ),
        PayoutDecision::Rejected { reason } => (
            PayoutStatus::Rejected,
            None,
            Some(reason.as_str()),
            WebhookEventType::PayoutRejected,
        ),
    };
    let d = Decision {
        status,
        reference,
        reason,
        decided_ms: db::now_millis(),
    };
    if !db::payouts::decide(&mut m.tx, &tenant.id, id, &d).await? {
        drop(m);
        let now = db::payouts::get(&mut *st.db.conn().await?, &tenant.id, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        return Err(already_decided(&now));
    }
    let posting = ledger::payout_decision(&payout.user_id, payout.amount, &decision)
        .map_err(|e| rule_error(st, e))?;
    let t = db::ledger::post(&mut m.tx, tenant, &posting)
        .await
        .map_err(|e| post_error(st, e))?;
    db::payouts::set_decision_transaction(&mut m.tx, &tenant.id, id, &t.id).await?;
    let payout = db::payouts::get(&mut m.tx, &tenant.id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let outbox = webhooks::Outbox::load(&mut m.tx, &tenant.id).await?;
    outbox.enqueue(&mut m.tx, event, &payout).await?;
    let content = notifications::for_payout(&payout);
    let push =
        notifications::store_with(&mut m.tx, &outbox, &payout.user_id, &content, d.decided_ms)
            .await?;
    let entry = recovery::Entry::new(&payout.user_id, NOTIFICATION, serde_json::json!(push));
    let recorded = recovery::record(&mut m.tx, &tenant.id, vec![entry]).await?;
    let resp = m.finish(StatusCode::OK, &payout).await?;
    st.metrics.ledger.transaction(LedgerSource::Payout);
    st.metrics.realtime.notification(NotificationSource::Money);
    st.realtime.send(&tenant.id, &recorded).await;
    Ok(resp)
}
