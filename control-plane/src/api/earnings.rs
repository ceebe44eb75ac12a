//! Creators' earnings per UTC day and source (tip, purchase, subscription, call): gross, fee and
//! net, computed from the ledger's entries at each request (`ledger::earnings`), for the tenant
//! (`GET /v1/users/{user_id}/earnings`) and the creator (`GET /v1/me/earnings`).

use super::AppState;
use super::auth::{TenantUser, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::db;
use crate::ledger::earnings;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{EarningsParams, EarningsReport, Problem, Tenant};

async fn report(
    st: &AppState,
    tenant: &Tenant,
    user_id: &str,
    q: &EarningsParams,
) -> ApiResult<EarningsReport> {
    let range = earnings::range(q.from.as_deref(), q.to.as_deref(), db::now_millis())
        .map_err(ApiError::BadRequest)?;
    let span = (range.start_ms, range.end_ms);
    let mut conn = st.db.conn().await?;
    let rows = db::ledger::earnings_rows(&mut conn, &tenant.id, user_id, span).await?;
    let (days, total) = earnings::by_day(&rows);
    Ok(EarningsReport {
        user_id: user_id.to_string(),
        currency: tenant.currency.clone(),
        from: earnings::format_day(range.from),
        to: earnings::format_day(range.to),
        days,
        total,
    })
}

/// A user's earnings per UTC day and source (`from`/`to` are days, inclusive; the last 30 days
/// by default). Refunds count on the day they were made.
#[utoipa::path(get, path = "/v1/users/{user_id}/earnings", tag = "money",
    params(("user_id" = String, Path, description = "The tenant's own id of the user"), EarningsParams),
    responses((status = 200, body = EarningsReport), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    ApiQuery(q): ApiQuery<EarningsParams>,
) -> ApiResult<Json<EarningsReport>> {
    if db::users::get(&mut *st.db.conn().await?, &tenant.id, &user_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!("There is no user {user_id:?}.")));
    }
    Ok(Json(report(&st, &tenant, &user_id, &q).await?))
}

/// The caller's own earnings per UTC day and source (a creator's user token).
#[utoipa::path(get, path = "/v1/me/earnings", tag = "money", params(EarningsParams),
    responses((status = 200, body = EarningsReport), (status = 400, body = Problem),
              (status = 403, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiQuery(q): ApiQuery<EarningsParams>,
) -> ApiResult<Json<EarningsReport>> {
    if !me.user.creator {
        return Err(ApiError::Forbidden(
            "Only creators have earnings: this user is not a creator.".to_string(),
        ));
    }
    Ok(Json(report(&st, &me.tenant, &me.user.id, &q).await?))
}
