//! Tenants: the hosting company's customers.

use super::{Conn, now, paginate, rfc3339, tenant_history};
use crate::billing::Status;
use onda_shared::api::{Page, Tenant, TenantStatus};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str =
    "id, name, email, plan_id, status, currency, platform_fee_bps, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        plan_id: row.try_get("plan_id")?,
        status: if status == "suspended" {
            TenantStatus::Suspended
        } else {
            TenantStatus::Active
        },
        currency: row.try_get("currency")?,
        platform_fee_bps: u32::try_from(row.try_get::<i64, _>("platform_fee_bps")?).map_err(
            |e| sqlx::Error::ColumnDecode {
                index: "platform_fee_bps".to_string(),
                source: Box::new(e),
            },
        )?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(conn: &mut Conn, limit: u32, cursor: &str) -> Result<Page<Tenant>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
    ));
    let rows = sqlx::query(sql)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |t| &t.id))
}

pub async fn insert(conn: &mut Conn, t: &Tenant) -> Result<Tenant, sqlx::Error> {
    let ts = now();
    sqlx::query(
        "INSERT INTO tenants (id, name, email, plan_id, status, currency, platform_fee_bps, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.email)
    .bind(&t.plan_id)
    .bind(t.status.as_str())
    .bind(&t.currency)
    .bind(i64::from(t.platform_fee_bps))
    .bind(ts)
    .execute(&mut *conn)
    .await?;
    record(conn, t).await?;
    get(conn, &t.id).await?.ok_or(sqlx::Error::RowNotFound)
}

pub async fn update(conn: &mut Conn, t: &Tenant) -> Result<Tenant, sqlx::Error> {
    sqlx::query(
        "UPDATE tenants SET name = $1, email = $2, plan_id = $3, status = $4, currency = $5, \
         platform_fee_bps = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&t.name)
    .bind(&t.email)
    .bind(&t.plan_id)
    .bind(t.status.as_str())
    .bind(&t.currency)
    .bind(i64::from(t.platform_fee_bps))
    .bind(now())
    .bind(&t.id)
    .execute(&mut *conn)
    .await?;
    record(conn, t).await?;
    get(conn, &t.id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Takes the tenant's row lock for the rest of the transaction (a write, which SQLite and
/// PostgreSQL both serialise), so concurrent requests cannot both pass a plan-limit count.
pub async fn lock(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE tenants SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Billing prorates by the history of plan and status this keeps.
async fn record(conn: &mut Conn, t: &Tenant) -> Result<(), sqlx::Error> {
    let status = match t.status {
        TenantStatus::Active => Status::Active,
        TenantStatus::Suspended => Status::Suspended,
    };
    tenant_history::record_tenant(
        conn,
        &t.id,
        tenant_history::history_now(),
        &t.plan_id,
        status,
        &t.name,
    )
    .await
}

/// Deletes a tenant and its (revoked or live) API keys; callers refuse when stations remain.
/// Its history stays (ending in `deleted`) so its last month is still billed.
pub async fn delete(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    if let Some(t) = get(conn, id).await? {
        let now = tenant_history::history_now();
        tenant_history::record_tenant(conn, id, now, &t.plan_id, Status::Deleted, &t.name).await?;
    }
    sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    super::signing_keys::delete_all(conn, id).await?;
    super::users::delete_all(conn, id).await?;
    super::messages::delete_tenant(conn, id).await?;
    super::webhooks::delete_all(conn, id).await?;
    super::calls::delete_tenant(conn, id).await?;
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
