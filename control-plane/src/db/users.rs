//! A tenant's end users: profiles keyed by (tenant, the tenant's own user id).

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{EndUser, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, display_name, avatar_url, creator, tip_minimum, subscription_price, metadata, \
     created_at, updated_at, available_for_calls, call_price_per_minute, call_billing, \
     calls_subscribers_only, region";

fn from_row(row: &AnyRow) -> Result<EndUser, sqlx::Error> {
    let raw: String = row.try_get("metadata")?;
    // Written by this code as a JSON object; anything else is an error naming the column.
    let metadata = serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: "metadata".to_string(),
        source: format!("metadata is not a JSON object ({e}): {raw:.64}").into(),
    })?;
    Ok(EndUser {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        avatar_url: row.try_get("avatar_url")?,
        creator: row.try_get::<i64, _>("creator")? != 0,
        tip_minimum: row.try_get("tip_minimum")?,
        subscription_price: row.try_get("subscription_price")?,
        available_for_calls: row.try_get::<i64, _>("available_for_calls")? != 0,
        call_price_per_minute: row.try_get("call_price_per_minute")?,
        call_billing: super::parsed(row, "call_billing")?,
        calls_subscribers_only: row.try_get::<i64, _>("calls_subscribers_only")? != 0,
        region: row.try_get("region")?,
        metadata,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// Whether [`put`] made the user or replaced an existing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
}

/// Creates or replaces the profile `user` (its id and fields; the timestamps are set here).
pub async fn put(
    conn: &mut Conn,
    tenant_id: &str,
    user: &EndUser,
) -> Result<(EndUser, Put), sqlx::Error> {
    let ts = now();
    let metadata = serde_json::Value::Object(user.metadata.clone()).to_string();
    // One statement, so two replicas putting the same new user cannot both insert.
    let done = sqlx::query(
        "INSERT INTO end_users (tenant_id, id, display_name, avatar_url, creator, metadata, \
         created_at, updated_at, tip_minimum, subscription_price, available_for_calls, \
         call_price_per_minute, call_billing, calls_subscribers_only, region) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&user.id)
    .bind(&user.display_name)
    .bind(user.avatar_url.as_deref())
    .bind(i64::from(user.creator))
    .bind(&metadata)
    .bind(ts)
    .bind(user.tip_minimum)
    .bind(user.subscription_price)
    .bind(i64::from(user.available_for_calls))
    .bind(user.call_price_per_minute)
    .bind(user.call_billing.as_str())
    .bind(i64::from(user.calls_subscribers_only))
    .bind(user.region.as_deref())
    .execute(&mut *conn)
    .await?;
    let outcome = if done.rows_affected() > 0 {
        Put::Created
    } else {
        sqlx::query(
            "UPDATE end_users SET display_name = $1, avatar_url = $2, creator = $3, \
             metadata = $4, updated_at = $5, tip_minimum = $8, subscription_price = $9, \
             available_for_calls = $10, call_price_per_minute = $11, call_billing = $12, \
             calls_subscribers_only = $13, region = $14 WHERE tenant_id = $6 AND id = $7",
        )
        .bind(&user.display_name)
        .bind(user.avatar_url.as_deref())
        .bind(i64::from(user.creator))
        .bind(&metadata)
        .bind(ts)
        .bind(tenant_id)
        .bind(&user.id)
        .bind(user.tip_minimum)
        .bind(user.subscription_price)
        .bind(i64::from(user.available_for_calls))
        .bind(user.call_price_per_minute)
        .bind(user.call_billing.as_str())
        .bind(i64::from(user.calls_subscribers_only))
        .bind(user.region.as_deref())
        .execute(&mut *conn)
        .await?;
        Put::Replaced
    };
    let stored = get(conn, tenant_id, &user.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((stored, outcome))
}

pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<EndUser>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM end_users WHERE tenant_id = $1 AND id = $2"
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

/// `text` as a LIKE pattern matching it anywhere, with LIKE's own characters escaped.
fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A page of the tenant's users by id, optionally only those whose display name or id
/// contains `search` (case-insensitive).
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    search: Option<&str>,
    limit: u32,
    cursor: &str,
) -> Result<Page<EndUser>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM end_users WHERE tenant_id = $1 AND id > $2 \
         AND ($3 = '' OR LOWER(display_name) LIKE $4 ESCAPE '\\' OR LOWER(id) LIKE $4 ESCAPE '\\') \
         ORDER BY id LIMIT $5"
    ));
    let search = search.unwrap_or_default();
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(cursor)
        .bind(search)
        .bind(contains_pattern(search))
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |u| &u.id))
}

/// Deletes a user, their notifications and their gateway feed; their messages stay for the
/// other party.
pub async fn delete(conn: &mut Conn, tenant_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    super::notifications::delete_for_user(conn, tenant_id, id).await?;
    super::realtime_feed::delete_for_user(conn, tenant_id, id).await?;
    let done = sqlx::query("DELETE FROM end_users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// What a creator changes on their own profile (`PATCH /v1/me`); None leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OwnChange {
    pub subscription_price: Option<Option<i64>>,
    pub available_for_calls: Option<bool>,
    pub call_price_per_minute: Option<Option<i64>>,
    pub calls_subscribers_only: Option<bool>,
}

/// Applies `change` to the user's profile in one statement (a field not changed is written
/// back as it is).
pub async fn change_own(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    change: &OwnChange,
) -> Result<Option<EndUser>, sqlx::Error> {
    // CASE keeps a column whose flag is 0: one statement whatever the change.
    sqlx::query(
        "UPDATE end_users SET \
         subscription_price = CASE WHEN $1 = 1 THEN $2 ELSE subscription_price END, \
         available_for_calls = CASE WHEN $3 = 1 THEN $4 ELSE available_for_calls END, \
         call_price_per_minute = CASE WHEN $5 = 1 THEN $6 ELSE call_price_per_minute END, \
         calls_subscribers_only = CASE WHEN $7 = 1 THEN $8 ELSE calls_subscribers_only END, \
         updated_at = $9 WHERE tenant_id = $10 AND id = $11",
    )
    .bind(i64::from(change.subscription_price.is_some()))
    .bind(change.subscription_price.flatten())
    .bind(i64::from(change.available_for_calls.is_some()))
    .bind(i64::from(change.available_for_calls.unwrap_or(false)))
    .bind(i64::from(change.call_price_per_minute.is_some()))
    .bind(change.call_price_per_minute.flatten())
    .bind(i64::from(change.calls_subscribers_only.is_some()))
    .bind(i64::from(change.calls_subscribers_only.unwrap_or(false)))
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, tenant_id, id).await
}

/// Records when the user was last connected (unix seconds).
pub async fn touch_last_seen(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE end_users SET last_seen_at = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(at)
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the user was last connected (unix seconds), if ever.
pub async fn last_seen(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT last_seen_at FROM end_users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(r) => r.try_get("last_seen_at"),
        None => Ok(None),
    }
}

/// Removes every user of a tenant, their notifications and their gateway feeds (the tenant is
/// being deleted).
pub async fn delete_all(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    super::notifications::delete_all(conn, tenant_id).await?;
    super::realtime_feed::delete_all(conn, tenant_id).await?;
    sqlx::query("DELETE FROM end_users WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("Ana"), "%ana%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
