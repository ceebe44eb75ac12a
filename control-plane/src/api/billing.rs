//! Billing: the admin runs a month's billing (`POST /v1/billing/runs`) and finalizes invoices;
//! the admin reads every invoice, a tenant key its own (another tenant's answers 404); JSON or
//! CSV. The arithmetic is `crate::billing`, the storage and its invariants `db::billing`.

use super::AppState;
use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult};
use super::export;
use super::extract::{ApiJson, ApiPath, ApiQuery, MAX_PAGE, Paging};
use crate::billing::Period;
use crate::db;
use crate::db::billing::{Finish, Outcome};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use onda_shared::api::{
    BillingRun, CreateBillingRun, FormatParams, Invoice, InvoiceParams, Page, PageParams, Problem,
    SkippedTenant,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no invoice {id:?}."))
}

fn period(s: &str) -> ApiResult<Period> {
    Period::parse(s).map_err(ApiError::Unprocessable)
}

fn now_ms() -> i64 {
    db::tenant_history::history_now()
}

/// A finalized invoice bills its whole month, so it waits until the month is over.
fn require_ended(p: Period) -> ApiResult<()> {
    if now_ms() < p.end_ms() {
        return Err(ApiError::Conflict(format!(
            "The period {p} has not ended yet (it ends at {}); its invoices stay drafts until then.",
            db::rfc3339(p.end_ms() / 1000)
        )));
    }
    Ok(())
}

/// One tenant's invoice; a database error (a deadlock PostgreSQL broke, a lost connection, a
/// stored value such as a plan that does not decode) skips the tenant with the reason instead
/// of ending the whole run, and writes nothing for it.
async fn generate_one(st: &AppState, tenant_id: &str, p: Period, finish: Finish) -> Outcome {
    match db::billing::generate(&st.db, tenant_id, p, finish).await {
        Ok(o) => o,
        Err(e @ sqlx::Error::ColumnDecode { .. }) => {
            tracing::error!(tenant = %tenant_id, period = %p, "billing failed: {e}");
            Outcome::Skipped(format!(
                "a stored value does not decode ({e}); repair it, then run again"
            ))
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant_id, period = %p, "billing failed: {e}");
            Outcome::Skipped(format!("the database refused the invoice ({e}); run again"))
        }
    }
}

/// Run billing for a month.
///
/// Creates a draft invoice for every tenant that was active or used something in the period,
/// recomputes drafts that exist, and leaves finalized invoices as they are; with `finalize` it
/// also finalizes them (only once the period has ended). Running it again changes nothing
/// unless usage or tenants changed meanwhile.
#[utoipa::path(post, path = "/v1/billing/runs", tag = "billing", request_body = CreateBillingRun,
    responses((status = 200, body = BillingRun), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn run(
    State(st): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateBillingRun>,
) -> ApiResult<Json<BillingRun>> {
    let p = period(&req.period)?;
    if p.start_ms() > now_ms() {
        return Err(ApiError::Unprocessable(format!(
            "The period {p} has not begun; bill a month that has."
        )));
    }
    let finish = if req.finalize {
        require_ended(p)?;
        Finish::Finalize
    } else {
        Finish::Draft
    };
    let tenants = {
        let mut c = st.db.conn().await?;
        db::billing::tenants_before(&mut c, p.end_ms()).await?
    };
    let mut out = BillingRun {
        period: p.to_string(),
        created: 0,
        updated: 0,
        unchanged: 0,
        finalized: 0,
        already_finalized: 0,
        invoice_ids: Vec::new(),
        skipped: Vec::new(),
    };
    for tenant_id in tenants {
        match generate_one(&st, &tenant_id, p, finish).await {
            Outcome::Created(id) => {
                out.created += 1;
                out.invoice_ids.push(id);
            }
            Outcome::Updated(id) => {
                out.updated += 1;
                out.invoice_ids.push(id);
            }
            Outcome::Unchanged(id) => {
                out.unchanged += 1;
                out.invoice_ids.push(id);
            }
            Outcome::Finalized { id, created } => {
                out.finalized += 1;
                out.created += u32::from(created);
                out.invoice_ids.push(id);
            }
            Outcome::AlreadyFinalized(id) => {
                out.already_finalized += 1;
                out.invoice_ids.push(id);
            }
            Outcome::Nothing => {}
            Outcome::Skipped(reason) => {
                tracing::warn!(tenant = %tenant_id, period = %p, "billing skipped: {reason}");
                out.skipped.push(SkippedTenant { tenant_id, reason });
            }
        }
    }
    if req.finalize {
        let mut c = st.db.conn().await?;
        db::billing::close_period(&mut c, p).await?;
    }
    st.metrics.billing_run(&out);
    Ok(Json(out))
}

const CSV_HEADER: [&str; 15] = [
    "invoice_id",
    "tenant_id",
    "tenant_name",
    "period",
    "status",
    "currency",
    "kind",
    "description",
    "plan_id",
    "usage_period",
    "quantity",
    "unit",
    "unit_price",
    "amount",
    "invoice_total",
];

/// One CSV row per invoice line (an invoice without lines gets one row with empty line fields).
fn csv_rows(invoices: &[Invoice]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for inv in invoices {
        let head = |row: &mut Vec<String>| {
            row.extend([
                inv.id.clone(),
                inv.tenant_id.clone(),
                inv.tenant_name.clone(),
                inv.period.clone(),
                inv.status.as_str().to_string(),
                inv.currency.clone(),
            ]);
        };
        if inv.lines.is_empty() {
            let mut row = Vec::new();
            head(&mut row);
            row.extend(std::iter::repeat_n(String::new(), 8));
            row.push(export::money(inv.total_micros));
            rows.push(row);
        }
        for l in &inv.lines {
            let mut row = Vec::new();
            head(&mut row);
            row.extend([
                l.kind.clone(),
                l.description.clone(),
                l.plan_id.clone(),
                l.usage_period.clone(),
                l.quantity.clone(),
                l.unit.clone(),
                export::money(l.unit_price_micros),
                export::money(l.amount_micros),
                export::money(inv.total_micros),
            ]);
            rows.push(row);
        }
    }
    rows
}

/// List invoices: the admin sees all, a tenant key its own.
#[utoipa::path(get, path = "/v1/invoices", tag = "billing", params(InvoiceParams),
    responses((status = 200, body = Page<Invoice>, description = "JSON, or with format=csv every selected invoice (no paging) as text/csv, one row per line"),
              (status = 400, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InvoiceParams>,
) -> ApiResult<Response> {
    let csv = export::wants_csv(q.format.as_deref())?;
    let paging = Paging::try_from(PageParams {
        limit: q.limit,
        cursor: q.cursor,
    })?;
    if let Some(p) = &q.period {
        Period::parse(p).map_err(ApiError::BadRequest)?;
    }
    if let Some(s) = &q.status
        && s != "draft"
        && s != "finalized"
    {
        return Err(ApiError::BadRequest(format!(
            "status = {s:?}: use \"draft\" or \"finalized\""
        )));
    }
    let tenant_id = match (caller.tenant_scope(), q.tenant_id) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(ApiError::NotFound(format!("There is no tenant {asked:?}.")));
        }
        (Some(own), _) => own.to_string(),
        (None, asked) => asked.unwrap_or_default(),
    };
    let filter = db::billing::Filter {
        tenant_id,
        period: q.period.unwrap_or_default(),
        status: q.status.unwrap_or_default(),
    };
    let mut c = st.db.conn().await?;
    if csv {
        // The export is every invoice the filters select, not a page of them.
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = db::billing::list(&mut c, &filter, MAX_PAGE, &cursor).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = next,
                None => break,
            }
        }
        return export::csv("invoices.csv", &CSV_HEADER, csv_rows(&all));
    }
    let page = db::billing::list(&mut c, &filter, paging.limit, &paging.cursor).await?;
    Ok(Json(page).into_response())
}

async fn readable(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Invoice> {
    let mut c = st.db.conn().await?;
    match db::billing::get(&mut c, id).await? {
        Some(inv) if caller.tenant_scope().is_none_or(|t| t == inv.tenant_id) => Ok(inv),
        _ => Err(not_found(id)),
    }
}

/// Get an invoice.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "billing",
    params(("id" = String, Path, description = "Object id"), FormatParams),
    responses((status = 200, body = Invoice, description = "JSON, or text/csv with format=csv"),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<FormatParams>,
) -> ApiResult<Response> {
    let csv = export::wants_csv(q.format.as_deref())?;
    let inv = readable(&st, &caller, &id).await?;
    if csv {
        let name = format!("{}-{}.csv", inv.id, inv.period);
        return export::csv(&name, &CSV_HEADER, csv_rows(std::slice::from_ref(&inv)));
    }
    Ok(Json(inv).into_response())
}

/// Finalize an invoice: computed a last time from the month's usage, then never changed again.
/// Usage of the month that arrives later is billed on a later invoice.
#[utoipa::path(post, path = "/v1/invoices/{id}/finalize", tag = "billing",
    params(("id" = String, Path, description = "Object id")),
    responses((status = 200, body = Invoice), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn finalize(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Invoice>> {
    let inv = readable(&st, &Caller::Admin, &id).await?;
    let p = period(&inv.period)?;
    require_ended(p)?;
    match generate_one(&st, &inv.tenant_id, p, Finish::Finalize).await {
        Outcome::Skipped(reason) => {
            return Err(ApiError::Unprocessable(format!(
                "Invoice {id:?} cannot be finalized: {reason}."
            )));
        }
        Outcome::Finalized { .. } => st.metrics.invoice_finalized(),
        _ => {}
    }
    Ok(Json(readable(&st, &Caller::Admin, &id).await?))
}
