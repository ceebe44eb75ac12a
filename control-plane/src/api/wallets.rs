//! `/v1/users/{user_id}/wallet`: a user's wallet (and a creator's earnings), credits after the
//! tenant's payment provider confirmed a purchase, adjustments, and the user's history; the
//! user's own view with a user token (`/v1/me/wallet`, `/v1/me/transactions`). Every route that
//! moves value requires an `Idempotency-Key` (see [`super::idempotency`]).

use super::AppState;
use super::auth::{TenantUser, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery};
use super::idempotency::{self, Begun, IdempotencyKey};
use super::transactions::{history, post_and_finish, rule_error, text, wants_csv};
use crate::db::{self, ledger::Filter};
use crate::ledger::{self, Account};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use onda_shared::api::{
    AdjustedAccount, CreateAdjustment, CreateCredit, EndUser, LedgerTransaction, Page, Problem,
    Tenant, Wallet, WalletHistoryParams,
};

async fn user(conn: &mut db::Conn, tenant_id: &str, user_id: &str) -> ApiResult<EndUser> {
    db::users::get(conn, tenant_id, user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no user {user_id:?}.")))
}

async fn wallet(st: &AppState, tenant: &Tenant, user_id: &str) -> ApiResult<Wallet> {
    let mut conn = st.db.conn().await?;
    let u = user(&mut conn, &tenant.id, user_id).await?;
    let balance =
        db::ledger::balance(&mut conn, &tenant.id, &Account::Wallet(u.id.clone())).await?;
    let earnings = if u.creator {
        Some(db::ledger::balance(&mut conn, &tenant.id, &Account::Earnings(u.id)).await?)
    } else {
        None
    };
    Ok(Wallet {
        currency: tenant.currency.clone(),
        balance,
        earnings,
    })
}

/// A user's wallet balance and, for creators, earnings.
#[utoipa::path(get, path = "/v1/users/{user_id}/wallet", tag = "money",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    responses((status = 200, body = Wallet), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
) -> ApiResult<Json<Wallet>> {
    Ok(Json(wallet(&st, &tenant, &user_id).await?))
}

/// The caller's own wallet (user token).
#[utoipa::path(get, path = "/v1/me/wallet", tag = "money",
    responses((status = 200, body = Wallet), (status = 403, body = Problem)))]
pub async fn me(State(st): State<AppState>, UserCaller(p): UserCaller) -> ApiResult<Json<Wallet>> {
    Ok(Json(wallet(&st, &p.tenant, &p.user.id).await?))
}

/// A user's transactions, newest first (as the paying or credited user, or the creator paid);
/// CSV with `format=csv` or `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/users/{user_id}/transactions", tag = "money",
    params(("user_id" = String, Path, description = "The tenant's own id of the user"), WalletHistoryParams),
    responses((status = 200, body = Page<LedgerTransaction>, description = "JSON, or text/csv with format=csv or Accept: text/csv"),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn transactions(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WalletHistoryParams>,
) -> ApiResult<Response> {
    let csv = wants_csv(q.format.as_deref(), &headers)?;
    user(&mut *st.db.conn().await?, &tenant.id, &user_id).await?;
    let filter = Filter {
        user_id: Some(user_id),
        ..Filter::default()
    };
    history(&st, &tenant, &filter, (q.limit, q.cursor), csv).await
}

/// The caller's own transactions, newest first (user token).
#[utoipa::path(get, path = "/v1/me/transactions", tag = "money", params(WalletHistoryParams),
    responses((status = 200, body = Page<LedgerTransaction>, description = "JSON, or text/csv with format=csv or Accept: text/csv"),
              (status = 403, body = Problem)))]
pub async fn my_transactions(
    State(st): State<AppState>,
    UserCaller(p): UserCaller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WalletHistoryParams>,
) -> ApiResult<Response> {
    let csv = wants_csv(q.format.as_deref(), &headers)?;
    let filter = Filter {
        user_id: Some(p.user.id),
        ..Filter::default()
    };
    history(&st, &p.tenant, &filter, (q.limit, q.cursor), csv).await
}

const CREDIT_ROUTE: &str = "POST /v1/users/{user_id}/wallet/credits";

/// Credit a user's wallet once the tenant's payment provider confirmed a purchase (money enters
/// the ledger from `external`). Requires an `Idempotency-Key` header.
#[utoipa::path(post, path = "/v1/users/{user_id}/wallet/credits", tag = "money",
    params(("user_id" = String, Path, description = "The tenant's own id of the user"),
           ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry with the same key answers the same result")),
    request_body = CreateCredit,
    responses((status = 201, body = LedgerTransaction), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn credit(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreateCredit>, ApiError>,
) -> ApiResult<Response> {
    // Another tenant's user, or none, is a 404 whatever the key and body.
    user(&mut *st.db.conn().await?, &tenant.id, &user_id).await?;
    let (key, ApiJson(req)) = (key?, req?);
    let reference = text("reference", &req.reference, 200)?;
    let posting =
        ledger::credit(&user_id, req.amount, &reference).map_err(|e| rule_error(&st, e))?;
    let hash = idempotency::request_hash(CREDIT_ROUTE, &user_id, &req)?;
    let mut m = match idempotency::begin(&st, &tenant.id, key, CREDIT_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    user(&mut m.tx, &tenant.id, &user_id).await?;
    post_and_finish(&st, m, &tenant, &posting).await
}

const ADJUSTMENT_ROUTE: &str = "POST /v1/users/{user_id}/wallet/adjustments";

/// Correct a user's wallet or a creator's earnings by a signed amount, against the tenant's
/// platform account; refused (409) when it would take the balance below zero. Requires an
/// `Idempotency-Key` header.
#[utoipa::path(post, path = "/v1/users/{user_id}/wallet/adjustments", tag = "money",
    params(("user_id" = String, Path, description = "The tenant's own id of the user"),
           ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry with the same key answers the same result")),
    request_body = CreateAdjustment,
    responses((status = 201, body = LedgerTransaction), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn adjust(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreateAdjustment>, ApiError>,
) -> ApiResult<Response> {
    // Another tenant's user, or none, is a 404 whatever the key and body.
    user(&mut *st.db.conn().await?, &tenant.id, &user_id).await?;
    let (key, ApiJson(req)) = (key?, req?);
    let reason = text("reason", &req.reason, 500)?;
    let posting = ledger::adjustment(&user_id, req.account, req.amount, &reason)
        .map_err(|e| rule_error(&st, e))?;
    let hash = idempotency::request_hash(ADJUSTMENT_ROUTE, &user_id, &req)?;
    let mut m = match idempotency::begin(&st, &tenant.id, key, ADJUSTMENT_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    let u = user(&mut m.tx, &tenant.id, &user_id).await?;
    if req.account == AdjustedAccount::Earnings && !u.creator {
        return Err(ApiError::Unprocessable(format!(
            "User {user_id:?} is not a creator: only creators have earnings to adjust."
        )));
    }
    post_and_finish(&st, m, &tenant, &posting).await
}
