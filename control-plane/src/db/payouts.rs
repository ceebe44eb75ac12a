//! Creators' payouts: the state of each (requested, then paid or rejected, once). Their money is
//! in the ledger (`payouts_pending` while requested); a row here names the transactions that
//! moved it. [`decide`] is the only change of a row and takes only a `requested` one, so two
//! decisions of one payout cannot both happen.

use super::{Conn, paginate};
use onda_shared::api::{Page, Payout, PayoutStatus};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, user_id, amount, currency, status, reference, reason, \
                       request_transaction_id, decision_transaction_id, created_ms, decided_ms";

fn from_row(row: &AnyRow) -> Result<Payout, sqlx::Error> {
    let ms = super::messages::rfc3339_ms;
    Ok(Payout {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        status: super::parsed(row, "status")?,
        reference: row.try_get("reference")?,
        reason: row.try_get("reason")?,
        request_transaction_id: row.try_get("request_transaction_id")?,
        decision_transaction_id: row.try_get("decision_transaction_id")?,
        created_at: ms(row.try_get("created_ms")?),
        decided_at: row.try_get::<Option<i64>, _>("decided_ms")?.map(ms),
    })
}

/// A new requested payout.
pub struct NewPayout<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub request_transaction_id: &'a str,
    pub created_ms: i64,
}

pub async fn insert(conn: &mut Conn, p: &NewPayout<'_>) -> Result<Payout, sqlx::Error> {
    sqlx::query(
        "INSERT INTO payouts (id, tenant_id, user_id, amount, currency, status, \
         request_transaction_id, created_ms) VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7)",
    )
    .bind(p.id)
    .bind(p.tenant_id)
    .bind(p.user_id)
    .bind(p.amount)
    .bind(p.currency)
    .bind(p.request_transaction_id)
    .bind(p.created_ms)
    .execute(&mut *conn)
    .await?;
    get(conn, p.tenant_id, p.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Payout>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payouts WHERE tenant_id = $1 AND id = $2"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The decision on a payout.
pub struct Decision<'a> {
    pub status: PayoutStatus,
    pub reference: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub decided_ms: i64,
}

/// Decides the payout if it is still `requested` (one conditional UPDATE: on PostgreSQL a
/// concurrent decision waits for this one's commit and then finds it decided; SQLite runs
/// them one after the other). False when it was decided already (or does not exist).
pub async fn decide(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    d: &Decision<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payouts SET status = $1, reference = $2, reason = $3, decided_ms = $4 \
         WHERE tenant_id = $5 AND id = $6 AND status = 'requested'",
    )
    .bind(d.status.as_str())
    .bind(d.reference)
    .bind(d.reason)
    .bind(d.decided_ms)
    .bind(tenant_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Names the ledger transaction of the decision [`decide`] made earlier in the same transaction.
pub async fn set_decision_transaction(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    transaction_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payouts SET decision_transaction_id = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(transaction_id)
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of the tenant's payouts, newest first, after `cursor` ("" for the first).
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    (user_id, status): (Option<&str>, Option<PayoutStatus>),
    limit: u32,
    cursor: &str,
) -> Result<Page<Payout>, sqlx::Error> {
    let mut clauses = vec!["tenant_id = $1".to_string()];
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if user_id.is_some() {
        clauses.push(format!("user_id = {}", next()));
    }
    if status.is_some() {
        clauses.push(format!("status = {}", next()));
    }
    if !cursor.is_empty() {
        clauses.push(format!("id < {}", next()));
    }
    let limit_param = next();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payouts WHERE {} ORDER BY id DESC LIMIT {limit_param}",
        clauses.join(" AND ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id.to_string());
    if let Some(u) = user_id {
        q = q.bind(u.to_string());
    }
    if let Some(s) = status {
        q = q.bind(s.as_str());
    }
    if !cursor.is_empty() {
        q = q.bind(cursor.to_string());
    }
    let rows = q.bind(i64::from(limit) + 1).fetch_all(conn).await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |p| &p.id))
}
