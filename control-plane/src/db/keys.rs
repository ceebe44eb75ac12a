//! Tenant API keys, stored as SHA-256 digests of the secret.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{ApiKey, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, name, prefix, created_at, revoked_at";

fn from_row(row: &AnyRow) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: rfc3339(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
    })
}

pub async fn insert(
    conn: &mut Conn,
    key: &ApiKey,
    secret_sha256: &str,
) -> Result<ApiKey, sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_sha256, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.id)
    .bind(&key.tenant_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(secret_sha256)
    .bind(now())
    .execute(&mut *conn)
    .await?;
    get(conn, &key.tenant_id, &key.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
    ));
    let row = sqlx::query(sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<ApiKey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |k| &k.id))
}

/// Marks the key revoked (idempotent: the first revocation time stays).
pub async fn revoke(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, tenant_id, id).await
}

/// The tenant owning a live (unrevoked) key with this digest.
pub async fn tenant_for_secret(
    conn: &mut Conn,
    secret_sha256: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tenant_id FROM api_keys WHERE secret_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(secret_sha256)
    .fetch_optional(conn)
    .await?;
    row.map(|r| r.try_get("tenant_id")).transpose()
}
