//! Billing storage: usage by day for a tenant (listener usage and relayed TURN bytes from node
//! reports, realtime usage from the gateway), invoices and their lines, and the generation of
//! one tenant's invoice (`generate`) from them and the tenant history (`super::tenant_history`)
//! with `crate::billing`.
//!
//! Invariants: one invoice per (tenant, period), enforced by a UNIQUE key; a finalized invoice
//! is never written again (every write is conditioned on `status = 'draft'`); a usage row is
//! marked with the finalized invoice that billed it, in the same transaction as the
//! finalization, and the lines are computed from the marked rows only, so a row is billed once;
//! one billing transaction per tenant at a time (a lock on its history rows).

use super::{Conn, now, paginate, rfc3339};
use crate::billing::{self, Change, DayUsage, Line, Period, Status};
use onda_shared::api::{Invoice, InvoiceLine, InvoiceStatus, Page, Plan};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use std::collections::HashMap;

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The tenant's name: its current one, or the last its history kept once it is deleted.
async fn tenant_name(conn: &mut Conn, tenant_id: &str) -> Result<String, sqlx::Error> {
    if let Some(t) = super::tenants::get(conn, tenant_id).await? {
        return Ok(t.name);
    }
    let row = sqlx::query(
        "SELECT name FROM tenant_history WHERE tenant_id = $1 ORDER BY at_ms DESC LIMIT 1",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    row.map_or(Ok(String::new()), |r| r.try_get("name"))
}

/// A tenant's history, oldest first.
pub async fn history(conn: &mut Conn, tenant_id: &str) -> Result<Vec<Change>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at_ms, plan_id, status FROM tenant_history WHERE tenant_id = $1 ORDER BY at_ms",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Change {
                at_ms: r.try_get("at_ms")?,
                plan_id: r.try_get("plan_id")?,
                status: Status::parse(&r.try_get::<String, _>("status")?),
            })
        })
        .collect()
}

/// Every tenant that existed before `end_ms` (deleted ones included), by id.
pub async fn tenants_before(conn: &mut Conn, end_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT tenant_id FROM tenant_history WHERE at_ms < $1 ORDER BY tenant_id",
    )
    .bind(end_ms)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("tenant_id")).collect()
}

/// Which usage rows of a month to add up.
#[derive(Debug, Clone, Copy)]
enum Rows<'a> {
    /// Not billed yet (a draft prices them).
    Unbilled,
    /// Billed by this invoice (a finalization prices exactly the rows it marked).
    Mine(&'a str),
    /// Billed by any invoice, this one included.
    Billed,
    /// Billed by another invoice.
    BilledElsewhere(&'a str),
    /// Every row, billed or not.
    All,
}

/// The tables of metered usage billing reads and marks: both have `tenant_id`,
/// `period_start_ms` and `invoice_id` (NULL until a finalized invoice billed the row).
const USAGE_TABLES: [&str; 3] = ["usage_mounts", "realtime_usage", "usage_turn"];

/// The SQL condition on `invoice_id` that `rows` selects, using `$5` so every variant binds the
/// same parameters, and what to bind to it.
fn rows_clause(rows: Rows<'_>) -> (&'static str, &str) {
    match rows {
        Rows::Unbilled => ("AND invoice_id IS NULL AND $5 = ''", ""),
        Rows::Mine(id) => ("AND invoice_id = $5", id),
        Rows::Billed => ("AND invoice_id IS NOT NULL AND $5 = ''", ""),
        Rows::BilledElsewhere(id) => ("AND invoice_id IS NOT NULL AND invoice_id <> $5", id),
        Rows::All => ("AND $5 = ''", ""),
    }
}

/// The month's usage by day: listener time and bytes from `usage_mounts`, connection time,
/// messages, payments and call time from `realtime_usage`, relayed bytes from `usage_turn`.
async fn daily_usage(
    conn: &mut Conn,
    tenant_id: &str,
    period: Period,
    rows: Rows<'_>,
) -> Result<Vec<DayUsage>, sqlx::Error> {
    let (clause, invoice) = rows_clause(rows);
    let mut by_day: std::collections::BTreeMap<u32, DayUsage> = std::collections::BTreeMap::new();
    for (table, a, b, c, e) in [
        ("usage_mounts", "listener_ms", "bytes_sent", "0", "0"),
        (
            "realtime_usage",
            "connection_ms",
            "messages",
            "transactions",
            "call_ms",
        ),
        ("usage_turn", "relayed_bytes", "0", "0", "0"),
    ] {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT (period_start_ms - $2) / $4 AS day, CAST(SUM({a}) AS BIGINT) AS a, \
             CAST(SUM({b}) AS BIGINT) AS b, CAST(SUM({c}) AS BIGINT) AS c, \
             CAST(SUM({e}) AS BIGINT) AS e FROM {table} \
             WHERE tenant_id = $1 AND period_start_ms >= $2 AND period_start_ms < $3 {clause} \
             GROUP BY (period_start_ms - $2) / $4 ORDER BY day"
        ));
        let found = sqlx::query(sql)
            .bind(tenant_id)
            .bind(period.start_ms())
            .bind(period.end_ms())
            .bind(billing::DAY_MS)
            .bind(invoice)
            .fetch_all(&mut *conn)
            .await?;
        for r in &found {
            let day = u32::try_from(r.try_get::<i64, _>("day")?).unwrap_or(0);
            let (a, b, c) = (u(r.try_get("a")?), u(r.try_get("b")?), u(r.try_get("c")?));
            let d = by_day.entry(day).or_insert(DayUsage {
                day,
                ..DayUsage::default()
            });
            if table == "usage_mounts" {
                (d.listener_ms, d.bytes) = (a, b);
            } else if table == "usage_turn" {
                d.turn_bytes = a;
            } else {
                (d.connection_ms, d.messages, d.transactions) = (a, b, c);
                d.call_ms = u(r.try_get("e")?);
            }
        }
    }
    Ok(by_day.into_values().collect())
}

/// Marks the tenant's unbilled usage rows of `period` as billed by `invoice_id`.
async fn mark_usage(
    conn: &mut Conn,
    tenant_id: &str,
    period: Period,
    invoice_id: &str,
) -> Result<u64, sqlx::Error> {
    let mut marked = 0;
    for table in USAGE_TABLES {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET invoice_id = $4 WHERE tenant_id = $1 AND invoice_id IS NULL \
             AND period_start_ms >= $2 AND period_start_ms < $3"
        ));
        marked += sqlx::query(sql)
            .bind(tenant_id)
            .bind(period.start_ms())
            .bind(period.end_ms())
            .bind(invoice_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(marked)
}

/// Records that a billing run finalized `period`: from now on its usage that arrives late is
/// billed on later invoices, whether or not a tenant had an invoice for it.
pub async fn close_period(conn: &mut Conn, period: Period) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO billing_periods (period, closed_at) VALUES ($1, $2) \
         ON CONFLICT (period) DO NOTHING",
    )
    .bind(period.to_string())
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

async fn is_closed(conn: &mut Conn, period: Period) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT closed_at FROM billing_periods WHERE period = $1")
            .bind(period.to_string())
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// Earlier months that are closed (a finalize run, or this tenant's finalized invoice) and
/// hold usage rows of the tenant that `rows` selects: usage that arrived after its month was
/// finalized.
async fn late_periods(
    conn: &mut Conn,
    tenant_id: &str,
    before: Period,
    rows: Rows<'_>,
) -> Result<Vec<Period>, sqlx::Error> {
    let (clause, invoice) = match rows {
        Rows::Mine(id) => ("invoice_id = $3", id),
        _ => ("invoice_id IS NULL AND $3 = ''", ""),
    };
    let mut oldest: Option<i64> = None;
    for table in USAGE_TABLES {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT MIN(period_start_ms) AS oldest FROM {table} WHERE tenant_id = $1 \
             AND period_start_ms < $2 AND {clause}"
        ));
        let found: Option<i64> = sqlx::query(sql)
            .bind(tenant_id)
            .bind(before.start_ms())
            .bind(invoice)
            .fetch_one(&mut *conn)
            .await?
            .try_get("oldest")?;
        oldest = match (oldest, found) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let Some(oldest) = oldest else {
        return Ok(Vec::new());
    };
    // `YYYY-MM` sorts as text like the months it names.
    let rows = sqlx::query(
        "SELECT period FROM billing_periods WHERE period >= $2 AND period < $3 \
         UNION SELECT period FROM invoices WHERE tenant_id = $1 AND status = 'finalized' \
         AND period >= $2 AND period < $3 ORDER BY period",
    )
    .bind(tenant_id)
    .bind(Period::containing(oldest).to_string())
    .bind(before.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        if let Ok(p) = Period::parse(&r.try_get::<String, _>("period")?) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Every plan by id (a handful: hosting offers have few plans).
pub async fn plans(conn: &mut Conn) -> Result<HashMap<String, Plan>, sqlx::Error> {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = super::plans::list(conn, 100, &cursor).await?;
        for p in page.items {
            out.insert(p.id.clone(), p);
        }
        match page.next_cursor {
            Some(c) => cursor = c,
            None => return Ok(out),
        }
    }
}

/// The plans a month was priced with: those frozen in the tenant's finalized invoice of it,
/// then today's for any plan it does not name. Frozen plans that do not decode are an error
/// naming the column, never "nothing frozen": late usage would be priced with today's plans.
async fn plans_of(
    conn: &mut Conn,
    tenant_id: &str,
    period: Period,
    current: &HashMap<String, Plan>,
) -> Result<HashMap<String, Plan>, sqlx::Error> {
    let frozen: Option<String> = sqlx::query(
        "SELECT plans FROM invoices WHERE tenant_id = $1 AND period = $2 AND status = 'finalized'",
    )
    .bind(tenant_id)
    .bind(period.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("plans"))
    .transpose()?;
    let mut out = current.clone();
    if let Some(raw) = frozen {
        out.extend(frozen_plans("plans", &raw)?);
    }
    Ok(out)
}

/// The plans frozen in `column` of an invoice, as JSON by plan id.
fn frozen_plans(column: &str, raw: &str) -> Result<HashMap<String, Plan>, sqlx::Error> {
    serde_json::from_str(raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("{column} is not a JSON object of plans by id ({e}): {raw:.64}").into(),
    })
}

/// Why a month cannot be priced (a plan gone, plans in two currencies), or a database error.
enum LinesError {
    Unpriceable(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for LinesError {
    fn from(e: sqlx::Error) -> Self {
        LinesError::Db(e)
    }
}

/// The lines of an invoice for the tenant's month. A draft (`finalizing` None) prices the
/// rows no invoice billed yet; a finalization prices exactly the rows it marked with its id.
async fn lines(
    conn: &mut Conn,
    tenant_id: &str,
    period: Period,
    finalizing: Option<&str>,
    plans: &HashMap<String, Plan>,
) -> Result<Vec<Line>, LinesError> {
    let history = history(conn, tenant_id).await?;
    let (month_rows, late_all, late_billed) = match finalizing {
        None => (Rows::Unbilled, Rows::All, Rows::Billed),
        Some(id) => (Rows::Mine(id), Rows::Billed, Rows::BilledElsewhere(id)),
    };
    let usage = daily_usage(conn, tenant_id, period, month_rows).await?;
    let mut lines =
        billing::month_lines(period, &history, &usage, plans).map_err(LinesError::Unpriceable)?;
    for late in late_periods(conn, tenant_id, period, month_rows).await? {
        let all = daily_usage(conn, tenant_id, late, late_all).await?;
        let billed = daily_usage(conn, tenant_id, late, late_billed).await?;
        let priced = plans_of(conn, tenant_id, late, plans).await?;
        lines.extend(
            billing::late_lines(late, &history, &all, &billed, &priced)
                .map_err(LinesError::Unpriceable)?,
        );
    }
    Ok(lines)
}

fn api_line(l: &Line) -> InvoiceLine {
    InvoiceLine {
        kind: l.kind.as_str().to_string(),
        description: l.description.clone(),
        plan_id: l.plan_id.clone(),
        usage_period: l.usage_period.clone(),
        quantity: l.quantity.clone(),
        unit: l.unit.clone(),
        unit_price_micros: l.unit_price_micros,
        amount_micros: l.amount_micros,
    }
}

/// What `generate` did for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Updated(String),
    Unchanged(String),
    /// Finalized by this call; `created` when the invoice did not exist before.
    Finalized {
        id: String,
        created: bool,
    },
    AlreadyFinalized(String),
    /// No active day and no usage in the period: no invoice.
    Nothing,
    /// The month cannot be priced (a plan was deleted, plans in two currencies).
    Skipped(String),
}

/// What a billing run leaves an invoice as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A draft, recomputed by every run until it is finalized.
    Draft,
    /// Finalized: never written again.
    Finalize,
}

/// Creates or recomputes the tenant's invoice for `period`, and finalizes it when asked, in a
/// transaction of its own: committed when it wrote something, rolled back otherwise.
pub async fn generate(
    db: &super::Db,
    tenant_id: &str,
    period: Period,
    finish: Finish,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    let outcome = generate_in(&mut tx, tenant_id, period, finish).await?;
    match outcome {
        Outcome::Created(_) | Outcome::Updated(_) | Outcome::Finalized { .. } => {
            tx.commit().await?
        }
        _ => tx.rollback().await?,
    }
    Ok(outcome)
}

async fn generate_in(
    conn: &mut Conn,
    tenant_id: &str,
    period: Period,
    finish: Finish,
) -> Result<Outcome, sqlx::Error> {
    let finalize = finish == Finish::Finalize;
    // One billing transaction per tenant at a time: two finalizations of different months
    // would otherwise mark the same late rows and deadlock, or read each other's marks between
    // two statements (PostgreSQL reads committed rows statement by statement).
    sqlx::query("UPDATE tenant_history SET status = status WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    let period_s = period.to_string();
    let existing = find(conn, tenant_id, &period_s).await?;
    if let Some(inv) = &existing
        && inv.status == InvoiceStatus::Finalized
    {
        return Ok(Outcome::AlreadyFinalized(inv.id.clone()));
    }
    if existing.is_none() && is_closed(conn, period).await? {
        // A closed month gets no new invoices: what reaches it now is late usage, billed on
        // the tenant's next invoice.
        return Ok(Outcome::Nothing);
    }
    let id = existing
        .as_ref()
        .map_or_else(|| crate::secrets::new_id("inv"), |inv| inv.id.clone());
    if finalize {
        // Mark first, then price exactly the marked rows: a report stored meanwhile stays
        // unmarked and is billed later as late usage, never twice.
        mark_usage(conn, tenant_id, period, &id).await?;
        for late in late_periods(conn, tenant_id, period, Rows::Unbilled).await? {
            mark_usage(conn, tenant_id, late, &id).await?;
        }
    }
    let plans = plans(conn).await?;
    let finalizing = finalize.then_some(id.as_str());
    let lines = match lines(conn, tenant_id, period, finalizing, &plans).await {
        Ok(l) => l,
        Err(LinesError::Unpriceable(reason)) => return Ok(Outcome::Skipped(reason)),
        Err(LinesError::Db(e)) => return Err(e),
    };
    if lines.is_empty() && existing.is_none() {
        return Ok(Outcome::Nothing);
    }
    let currency = match billing::currency(&lines, &plans) {
        Ok(Some(c)) => c,
        Ok(None) => existing
            .as_ref()
            .map(|inv| inv.currency.clone())
            .unwrap_or_default(),
        Err(reason) => return Ok(Outcome::Skipped(reason)),
    };
    let api_lines: Vec<InvoiceLine> = lines.iter().map(api_line).collect();
    let total: u64 = lines.iter().map(|l| l.amount_micros).sum();
    let name = tenant_name(conn, tenant_id).await?;
    let outcome = match &existing {
        Some(inv)
            if inv.lines == api_lines && inv.currency == currency && inv.tenant_name == name =>
        {
            Outcome::Unchanged(id.clone())
        }
        Some(_) => {
            write_lines(conn, &id, &name, &currency, total, &api_lines).await?;
            Outcome::Updated(id.clone())
        }
        None => {
            let ts = now();
            let inserted = sqlx::query(
                "INSERT INTO invoices (id, tenant_id, tenant_name, period, status, currency, \
                 total_micros, created_at, updated_at, plans) \
                 VALUES ($1, $2, $3, $4, 'draft', $5, 0, $6, $6, '{}') \
                 ON CONFLICT (tenant_id, period) DO NOTHING",
            )
            .bind(&id)
            .bind(tenant_id)
            .bind(&name)
            .bind(&period_s)
            .bind(&currency)
            .bind(ts)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(Outcome::Skipped(
                    "another billing run created this invoice at the same moment; run again"
                        .to_string(),
                ));
            }
            write_lines(conn, &id, &name, &currency, total, &api_lines).await?;
            Outcome::Created(id.clone())
        }
    };
    if finalize {
        freeze(conn, tenant_id, &id, &plans).await?;
        let created = matches!(outcome, Outcome::Created(_));
        return Ok(Outcome::Finalized { id, created });
    }
    Ok(outcome)
}

/// Finalizes draft `id`, keeping with it the plans of every day the tenant ever had, as they
/// are now: late usage of its month will be priced with them even if a plan changes later.
async fn freeze(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    plans: &HashMap<String, Plan>,
) -> Result<(), sqlx::Error> {
    let history = history(conn, tenant_id).await?;
    let frozen: HashMap<&str, &Plan> = history
        .iter()
        .filter_map(|c| plans.get(&c.plan_id).map(|p| (c.plan_id.as_str(), p)))
        .collect();
    let done = sqlx::query(
        "UPDATE invoices SET status = 'finalized', finalized_at = $2, updated_at = $2, \
         plans = $3 WHERE id = $1 AND status = 'draft'",
    )
    .bind(id)
    .bind(now())
    .bind(serde_json::to_string(&frozen).unwrap_or_else(|_| "{}".to_string()))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if done != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Replaces a draft's lines and totals; a finalized invoice is left as it is (and the caller's
/// transaction fails, since it expected a draft).
async fn write_lines(
    conn: &mut Conn,
    id: &str,
    name: &str,
    currency: &str,
    total: u64,
    lines: &[InvoiceLine],
) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "UPDATE invoices SET tenant_name = $2, currency = $3, total_micros = $4, updated_at = $5 \
         WHERE id = $1 AND status = 'draft'",
    )
    .bind(id)
    .bind(name)
    .bind(currency)
    .bind(i(total))
    .bind(now())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if done != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    sqlx::query("DELETE FROM invoice_lines WHERE invoice_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (pos, l) in lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO invoice_lines (invoice_id, position, kind, description, plan_id, \
             usage_period, quantity, unit, unit_price_micros, amount_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(i64::try_from(pos).unwrap_or(i64::MAX))
        .bind(&l.kind)
        .bind(&l.description)
        .bind(&l.plan_id)
        .bind(&l.usage_period)
        .bind(&l.quantity)
        .bind(&l.unit)
        .bind(i(l.unit_price_micros))
        .bind(i(l.amount_micros))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

const COLUMNS: &str = "id, tenant_id, tenant_name, period, status, currency, total_micros, \
    created_at, updated_at, finalized_at";

async fn from_row(conn: &mut Conn, row: &AnyRow) -> Result<Invoice, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let period: String = row.try_get("period")?;
    let (start, end) = Period::parse(&period).map_or((0, 0), |p| (p.start_ms(), p.end_ms()));
    let lines = sqlx::query(
        "SELECT kind, description, plan_id, usage_period, quantity, unit, unit_price_micros, \
         amount_micros FROM invoice_lines WHERE invoice_id = $1 ORDER BY position",
    )
    .bind(&id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| {
        Ok(InvoiceLine {
            kind: r.try_get("kind")?,
            description: r.try_get("description")?,
            plan_id: r.try_get("plan_id")?,
            usage_period: r.try_get("usage_period")?,
            quantity: r.try_get("quantity")?,
            unit: r.try_get("unit")?,
            unit_price_micros: u(r.try_get("unit_price_micros")?),
            amount_micros: u(r.try_get("amount_micros")?),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let status: String = row.try_get("status")?;
    Ok(Invoice {
        id,
        tenant_id: row.try_get("tenant_id")?,
        tenant_name: row.try_get("tenant_name")?,
        period,
        period_start: rfc3339(start / 1000),
        period_end: rfc3339(end / 1000),
        status: if status == "finalized" {
            InvoiceStatus::Finalized
        } else {
            InvoiceStatus::Draft
        },
        currency: row.try_get("currency")?,
        lines,
        total_micros: u(row.try_get("total_micros")?),
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        finalized_at: row.try_get::<Option<i64>, _>("finalized_at")?.map(rfc3339),
    })
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Invoice>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"));
    match sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await? {
        Some(row) => Ok(Some(from_row(conn, &row).await?)),
        None => Ok(None),
    }
}

async fn find(
    conn: &mut Conn,
    tenant_id: &str,
    period: &str,
) -> Result<Option<Invoice>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND period = $2"
    ));
    match sqlx::query(sql)
        .bind(tenant_id)
        .bind(period)
        .fetch_optional(&mut *conn)
        .await?
    {
        Some(row) => Ok(Some(from_row(conn, &row).await?)),
        None => Ok(None),
    }
}

/// Filters of an invoice list; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant_id: String,
    pub period: String,
    pub status: String,
}

pub async fn list(
    conn: &mut Conn,
    f: &Filter,
    limit: u32,
    cursor: &str,
) -> Result<Page<Invoice>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE id > $1 AND ($2 = '' OR tenant_id = $2) \
         AND ($3 = '' OR period = $3) AND ($4 = '' OR status = $4) ORDER BY id LIMIT $5"
    ));
    let rows = sqlx::query(sql)
        .bind(cursor)
        .bind(&f.tenant_id)
        .bind(&f.period)
        .bind(&f.status)
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(conn, r).await?);
    }
    Ok(paginate(items, limit, |inv| &inv.id))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frozen_plans_that_do_not_decode_are_an_error_naming_the_column() {
        assert!(frozen_plans("plans", "{}").unwrap().is_empty());
        let err = frozen_plans("plans", r#"{"plan_basic": 7}"#).unwrap_err();
        assert!(
            matches!(&err, sqlx::Error::ColumnDecode { index, .. } if index == "plans"),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("plans is not a JSON object of plans by id"),
            "{err}"
        );
        assert!(err.contains(r#"{"plan_basic": 7}"#), "{err}");
    }

    /// Late usage of a month whose finalized invoice froze plans that no longer decode is not
    /// priced with today's plans: the tenant's billing fails and writes nothing.
    #[tokio::test]
    async fn corrupt_frozen_plans_fail_the_invoice_instead_of_pricing_with_todays() {
        let (_dir, db) = crate::db::scratch(1).await;
        let jan = Period::parse("2024-01").unwrap();
        let feb = Period::parse("2024-02").unwrap();
        {
            let mut c = db.conn().await.unwrap();
            sqlx::query(
                "INSERT INTO tenant_history (tenant_id, at_ms, plan_id, status, name) \
                 VALUES ('t1', $1, 'plan_basic', 'active', 'T1')",
            )
            .bind(jan.start_ms())
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO invoices (id, tenant_id, tenant_name, period, status, currency, \
                 total_micros, created_at, updated_at, finalized_at, plans) \
                 VALUES ('inv_jan', 't1', 'T1', '2024-01', 'finalized', 'USD', 0, 0, 0, 0, \
                 'garbage')",
            )
            .execute(&mut *c)
            .await
            .unwrap();
            // Usage of January that arrived after its invoice was finalized.
            sqlx::query(
                "INSERT INTO usage_mounts (node_id, seq, station_id, tenant_id, mount, \
                 period_start_ms, period_end_ms, listener_ms, peak_listeners, sessions, \
                 bytes_sent) VALUES ('n1', 1, 'st1', 't1', '/live', $1, $2, 3600000, 1, 1, \
                 1000000000)",
            )
            .bind(jan.start_ms() + 86_400_000)
            .bind(jan.start_ms() + 86_400_000 + 60_000)
            .execute(&mut *c)
            .await
            .unwrap();
        }
        for finish in [Finish::Draft, Finish::Finalize] {
            let err = generate(&db, "t1", feb, finish).await.unwrap_err();
            assert!(
                matches!(&err, sqlx::Error::ColumnDecode { index, .. } if index == "plans"),
                "{err:?}"
            );
            assert!(err.to_string().contains("garbage"), "{err}");
        }
        let mut c = db.conn().await.unwrap();
        assert!(find(&mut c, "t1", "2024-02").await.unwrap().is_none());
        let unbilled: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_mounts WHERE invoice_id IS NULL")
                .fetch_one(&mut *c)
                .await
                .unwrap();
        assert_eq!(unbilled, 1, "the finalization's marks were rolled back");
    }
}
