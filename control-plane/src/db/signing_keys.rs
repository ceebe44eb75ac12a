//! Keys user tokens are signed with, per tenant: made by the tenant (shown once) or by Onda for
//! the tokens it mints (`managed`). Revoked keys are kept, so a token signed with one is refused
//! as revoked rather than unknown.

use super::{Conn, now, rfc3339};
use onda_shared::api::SigningKey;
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, secret, managed, created_at, revoked_at";

/// A key with what checking a signature needs.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub key: SigningKey,
    pub tenant_id: String,
    pub secret: String,
}

fn from_row(row: &AnyRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        key: SigningKey {
            id: row.try_get("id")?,
            managed: row.try_get::<i64, _>("managed")? != 0,
            created_at: rfc3339(row.try_get("created_at")?),
            revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
        },
        tenant_id: row.try_get("tenant_id")?,
        secret: row.try_get("secret")?,
    })
}

/// Whether a key is the tenant's own or one Onda made for the tokens it mints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Tenant,
    Managed,
}

pub async fn insert(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    secret: &str,
    origin: Origin,
) -> Result<StoredKey, sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (id, tenant_id, secret, managed, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(secret)
    .bind(i64::from(origin == Origin::Managed))
    .bind(now())
    .execute(&mut *conn)
    .await?;
    get(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The tenant's active managed key, made now if it has none. Two callers at once get the same
/// key: a unique index allows one active managed key per tenant, so the second insert does
/// nothing and both read the one that won.
pub async fn managed_or_insert(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    secret: &str,
) -> Result<StoredKey, sqlx::Error> {
    if let Some(key) = active_managed(conn, tenant_id).await? {
        return Ok(key);
    }
    sqlx::query(
        "INSERT INTO signing_keys (id, tenant_id, secret, managed, created_at, revoked_at) \
         VALUES ($1, $2, $3, 1, $4, NULL) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(secret)
    .bind(now())
    .execute(&mut *conn)
    .await?;
    active_managed(conn, tenant_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// A key by its id, whatever its tenant (a token names only the kid).
pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<StoredKey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM signing_keys WHERE id = $1"));
    sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The tenant's keys, newest first, revoked ones included.
pub async fn list(conn: &mut Conn, tenant_id: &str) -> Result<Vec<SigningKey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM signing_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id"
    ));
    let rows = sqlx::query(sql).bind(tenant_id).fetch_all(conn).await?;
    rows.iter().map(|r| Ok(from_row(r)?.key)).collect()
}

/// How many of the tenant's own (not managed) keys are active.
pub async fn count_active(conn: &mut Conn, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM signing_keys WHERE tenant_id = $1 AND managed = 0 \
         AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await?
    .try_get("n")
}

/// The tenant's newest active managed key, which minted tokens are signed with.
pub async fn active_managed(
    conn: &mut Conn,
    tenant_id: &str,
) -> Result<Option<StoredKey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM signing_keys WHERE tenant_id = $1 AND managed = 1 \
         AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT 1"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Marks the tenant's key revoked; false when the tenant has no such key. Revoking twice keeps
/// the first time.
pub async fn revoke(conn: &mut Conn, tenant_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE signing_keys SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes every key of a tenant (the tenant is being deleted).
pub async fn delete_all(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM signing_keys WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}
