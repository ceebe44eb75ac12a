//! `/v1/transactions`: a tenant's ledger transactions (list with filters, one, JSON or CSV) and
//! refunds (`POST /v1/transactions/{id}/refunds`, with an `Idempotency-Key`). The lists of one
//! user's history (`/v1/users/{user_id}/transactions`, `/v1/me/transactions`) answer through
//! [`history`] here too, and every money route refuses a movement through [`rule_error`] and
//! [`post_error`] (counted by reason).

use super::AppState;
use super::auth::{Caller, users_tenant};
use super::error::{ApiError, ApiResult};
use super::export;
use super::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use super::idempotency::{self, Begun, IdempotencyKey};
use crate::db::{self, ledger::Filter, ledger::PostError};
use crate::ledger::{self, Account, RuleError};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onda_shared::api::{
    CreateRefund, LedgerCheck, LedgerTransaction, Page, Problem, Tenant, TransactionListParams,
};

/// A short free text of a request (`reference`, `reason`): trimmed, 1 to `max` characters, no
/// control characters.
pub(super) fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {max} characters without control characters."
        )));
    }
    Ok(v.to_string())
}

/// A refusal of the ledger's rules, counted by reason.
pub(super) fn rule_error(st: &AppState, e: RuleError) -> ApiError {
    match e {
        RuleError::Amount(detail) => {
            st.metrics.ledger.refused("invalid_amount");
            ApiError::Unprocessable(detail)
        }
        RuleError::NotRefundable(detail) => {
            st.metrics.ledger.refused("not_refundable");
            ApiError::Conflict(detail)
        }
        e @ RuleError::Unbalanced { .. } => ApiError::Internal(anyhow::Error::new(e)),
    }
}

/// A posting the database refused: an account that does not hold what it would give.
/// Writes `posting` in the movement's transaction, stores the answer with its idempotency key,
/// commits, and answers 201 with the transaction.
pub(super) async fn post_and_finish(
    st: &AppState,
    mut m: idempotency::Movement,
    tenant: &Tenant,
    posting: &ledger::Posting,
) -> ApiResult<Response> {
    let t = db::ledger::post(&mut m.tx, tenant, posting)
        .await
        .map_err(|e| post_error(st, e))?;
    let resp = m.finish(StatusCode::CREATED, &t).await?;
    st.metrics.ledger.transaction(t.source);
    Ok(resp)
}

pub(super) fn post_error(st: &AppState, e: PostError) -> ApiError {
    match e {
        PostError::Insufficient { account, needed } => {
            st.metrics.ledger.refused("insufficient_funds");
            let whose = match Account::parse(&account) {
                Some(Account::Wallet(u)) => format!("The wallet of user {u:?}"),
                Some(Account::Earnings(u)) => format!("The earnings of user {u:?}"),
                _ => format!("Account {account:?}"),
            };
            ApiError::Conflict(format!(
                "{whose} holds less than the {needed} this takes from it; nothing was moved."
            ))
        }
        PostError::Database(e) => e.into(),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no transaction {id:?}."))
}

/// Whether the answer is CSV: `format` when given, else an `Accept` that asks for text/csv.
pub(super) fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> ApiResult<bool> {
    if format.is_some() {
        return export::wants_csv(format);
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv")))
}

fn millis(field: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "{field} = {v:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z."
                    ))
                })
        })
        .transpose()
}

/// A page of transactions (JSON), or every selected one as CSV.
pub(super) async fn history(
    st: &AppState,
    tenant: &Tenant,
    filter: &Filter,
    (limit, cursor): (Option<u32>, Option<String>),
    csv: bool,
) -> ApiResult<Response> {
    let limit = page_limit(limit)?;
    let cursor = cursor.unwrap_or_default();
    let mut conn = st.db.conn().await?;
    if !csv {
        let page = db::ledger::list(&mut conn, &tenant.id, filter, limit, &cursor).await?;
        return Ok(Json(page).into_response());
    }
    let mut rows = Vec::new();
    let mut cursor = cursor;
    loop {
        let page = db::ledger::list(&mut conn, &tenant.id, filter, 100, &cursor).await?;
        rows.extend(page.items.into_iter().map(csv_row));
        match page.next_cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    export::csv(
        "transactions.csv",
        &[
            "id",
            "created_at",
            "source",
            "user_id",
            "counterparty_id",
            "amount",
            "currency",
            "reference",
            "reason",
            "refund_of",
            "entries",
        ],
        rows,
    )
}

fn csv_row(t: LedgerTransaction) -> [String; 11] {
    let entries = t
        .entries
        .iter()
        .map(|e| format!("{} {}", e.account, e.amount))
        .collect::<Vec<_>>()
        .join("; ");
    [
        t.id,
        t.created_at,
        t.source.to_string(),
        t.user_id,
        t.counterparty_id.unwrap_or_default(),
        t.amount.to_string(),
        t.currency,
        t.reference.unwrap_or_default(),
        t.reason.unwrap_or_default(),
        t.refund_of.unwrap_or_default(),
        entries,
    ]
}

/// The tenant's transactions, newest first, filtered by user (as payer or creator paid),
/// source and time; as CSV with `format=csv` or `Accept: text/csv` (every selected one).
#[utoipa::path(get, path = "/v1/transactions", tag = "money", params(TransactionListParams),
    responses((status = 200, body = Page<LedgerTransaction>, description = "JSON, or text/csv with format=csv or Accept: text/csv"),
              (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TransactionListParams>,
) -> ApiResult<Response> {
    let tenant = users_tenant(&caller)?;
    let csv = wants_csv(q.format.as_deref(), &headers)?;
    let filter = Filter {
        user_id: q
            .user_id
            .as_deref()
            .map(crate::users::user_id)
            .transpose()?
            .map(str::to_string),
        source: q.source,
        since_ms: millis("since", q.since.as_deref())?,
        until_ms: millis("until", q.until.as_deref())?,
    };
    history(&st, tenant, &filter, (q.limit, q.cursor), csv).await
}

/// One transaction of the tenant, with its entries.
#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "money",
    params(("id" = String, Path, description = "The transaction's id")),
    responses((status = 200, body = LedgerTransaction), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LedgerTransaction>> {
    let tenant = users_tenant(&caller)?;
    let mut conn = st.db.conn().await?;
    db::ledger::get(&mut conn, &tenant.id, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Recompute the tenant's balances from its entries and compare them with the kept ones; also
/// checks that every transaction sums to zero and no wallet or earnings is below zero. Reads
/// every entry of the tenant: an audit, not something to poll.
#[utoipa::path(get, path = "/v1/ledger/check", tag = "money",
    responses((status = 200, body = LedgerCheck), (status = 403, body = Problem)))]
pub async fn check(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<LedgerCheck>> {
    let tenant = users_tenant(&caller)?;
    let mut conn = st.db.conn().await?;
    let c = db::ledger::check(&mut conn, &tenant.id).await?;
    if !c.ok {
        tracing::error!(tenant = %tenant.id, check = ?c, "the ledger check found discrepancies");
    }
    Ok(Json(c))
}

const REFUND_ROUTE: &str = "POST /v1/transactions/{id}/refunds";

/// Refund a credit (back from the wallet to the tenant's payment provider) or a payment (back
/// from the creator's earnings and the tenant's fee to the fan's wallet): all that remains
/// refundable, or `amount` of it. Refused with 409 when the account it comes back from no
/// longer holds it. Requires an `Idempotency-Key` header.
#[utoipa::path(post, path = "/v1/transactions/{id}/refunds", tag = "money",
    params(("id" = String, Path, description = "The transaction to refund"),
           ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry with the same key answers the same result")),
    request_body = CreateRefund,
    responses((status = 201, body = LedgerTransaction), (status = 400, body = Problem),
              (status = 409, body = Problem, description = "Refunded in full already, or the account no longer holds the amount"),
              (status = 422, body = Problem)))]
pub async fn refund(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreateRefund>, ApiError>,
) -> ApiResult<Response> {
    let tenant = caller.writing_tenant("Transactions")?.clone();
    // Another tenant's transaction, or none, is a 404 whatever the key and body.
    if db::ledger::get(&mut *st.db.conn().await?, &tenant.id, &id)
        .await?
        .is_none()
    {
        return Err(not_found(&id));
    }
    let (key, ApiJson(req)) = (key?, req?);
    let reason = text("reason", &req.reason, 500)?;
    let hash = idempotency::request_hash(REFUND_ROUTE, &id, &req)?;
    let mut m = match idempotency::begin(&st, &tenant.id, key, REFUND_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    let (original, refunded) = db::ledger::refundable(&mut m.tx, &tenant.id, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let posting =
        ledger::refund(&original, refunded, req.amount, &reason).map_err(|e| rule_error(&st, e))?;
    post_and_finish(&st, m, &tenant, &posting).await
}
