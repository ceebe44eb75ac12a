//! Tenant history: which plan and status each tenant had from when, under which name. Written
//! by every change of a tenant (the tenants module), read by billing to split a period by plan.

use super::{Conn, now_ms};
use crate::billing::Status;
use sqlx::Row as _;

/// Records that from `at_ms` (or just after the latest change, if that is later) the tenant
/// (called `name`) is on `plan_id` with `status`, unless that is already its latest plan and
/// status.
pub async fn record_tenant(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
    plan_id: &str,
    status: Status,
    name: &str,
) -> Result<(), sqlx::Error> {
    let latest = sqlx::query(
        "SELECT at_ms, plan_id, status FROM tenant_history WHERE tenant_id = $1 \
         ORDER BY at_ms DESC LIMIT 1",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let mut at_ms = at_ms;
    if let Some(row) = latest {
        let (p, s): (String, String) = (row.try_get("plan_id")?, row.try_get("status")?);
        if p == plan_id && s == status.as_str() {
            return Ok(());
        }
        // Changes stay in the order they were made even if this replica's clock is behind the
        // one that wrote the latest (the caller holds the tenant's lock).
        at_ms = at_ms.max(row.try_get::<i64, _>("at_ms")? + 1);
    }
    sqlx::query(
        "INSERT INTO tenant_history (tenant_id, at_ms, plan_id, status, name) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, at_ms) DO UPDATE SET \
         plan_id = excluded.plan_id, status = excluded.status, name = excluded.name",
    )
    .bind(tenant_id)
    .bind(at_ms)
    .bind(plan_id)
    .bind(status.as_str())
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// The current time in unix milliseconds as the history's clock.
pub fn history_now() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}
