//! End users' notifications: stored, listed newest first by (`created_ms`, `id`) with keyset
//! pages, counted unread, marked read. What a notification may hold is checked before it gets
//! here (`crate::notifications`).

use super::Conn;
use super::messages::rfc3339_ms;
use onda_shared::api::Notification;
use serde_json::{Map, Value};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, kind, title, body, link, data, read_ms, created_ms";

fn from_row(row: &AnyRow) -> Result<Notification, sqlx::Error> {
    let raw: String = row.try_get("data")?;
    let data: Map<String, Value> =
        serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
            index: "data".to_string(),
            source: format!("data is not a JSON object ({e}): {raw:.64}").into(),
        })?;
    let read_ms: Option<i64> = row.try_get("read_ms")?;
    Ok(Notification {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        link: row.try_get("link")?,
        data,
        read: read_ms.is_some(),
        read_at: read_ms.map(rfc3339_ms),
        created_at: rfc3339_ms(row.try_get("created_ms")?),
    })
}

/// A notification to store, checked; its id and time are chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub link: Option<&'a str>,
    pub data: &'a Map<String, Value>,
    pub created_ms: i64,
}

/// Stores `notifications`, unread, and answers them as stored, in the order given: one
/// statement whatever the count.
pub async fn insert_all(
    conn: &mut Conn,
    notifications: &[NewNotification<'_>],
) -> Result<Vec<Notification>, sqlx::Error> {
    if notifications.is_empty() {
        return Ok(Vec::new());
    }
    let rows = super::value_rows(notifications.len(), 9, |m| {
        format!("({}, NULL, {})", m[..8].join(", "), m[8])
    });
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO notifications (id, tenant_id, user_id, kind, title, body, link, data, \
         read_ms, created_ms) VALUES {rows} RETURNING {COLUMNS}"
    ));
    let mut q = sqlx::query(sql);
    for n in notifications {
        q = q
            .bind(n.id)
            .bind(n.tenant_id)
            .bind(n.user_id)
            .bind(n.kind)
            .bind(n.title)
            .bind(n.body)
            .bind(n.link)
            .bind(Value::Object(n.data.clone()).to_string())
            .bind(n.created_ms);
    }
    let mut stored = std::collections::HashMap::new();
    for row in q.fetch_all(conn).await? {
        let n = from_row(&row)?;
        stored.insert(n.id.clone(), n);
    }
    notifications
        .iter()
        .map(|n| stored.remove(n.id).ok_or(sqlx::Error::RowNotFound))
        .collect()
}

/// One notification of `user_id`; None when it is not theirs (or does not exist).
pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    id: &str,
) -> Result<Option<Notification>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND id = $3"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(user_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The notifications of `user_id` older than `before` (one of theirs), newest first; only the
/// unread ones when `unread_only`.
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    before: Option<&str>,
    unread_only: bool,
    limit: u32,
) -> Result<Vec<Notification>, sqlx::Error> {
    let unread = if unread_only {
        "AND read_ms IS NULL"
    } else {
        ""
    };
    // `$3 = ''` keeps the parameters the same in both forms.
    let older = if before.is_some() {
        "AND (created_ms, id) < (SELECT created_ms, id FROM notifications \
         WHERE tenant_id = $1 AND user_id = $2 AND id = $3)"
    } else {
        "AND $3 = ''"
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
         {unread} {older} ORDER BY created_ms DESC, id DESC LIMIT $4"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(user_id)
        .bind(before.unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// How many notifications each of `users` (of one tenant) has unread; a user with none is
/// absent from the answer.
pub async fn unread_counts(
    conn: &mut Conn,
    tenant_id: &str,
    users: &[&str],
) -> Result<std::collections::HashMap<String, u64>, sqlx::Error> {
    if users.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let list: Vec<String> = (0..users.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT user_id, COUNT(*) AS n FROM notifications \
         WHERE tenant_id = $1 AND user_id IN ({}) AND read_ms IS NULL GROUP BY user_id",
        list.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for u in users {
        q = q.bind(*u);
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            let n: i64 = row.try_get("n")?;
            Ok((
                row.try_get("user_id")?,
                u64::try_from(n).map_err(|e| sqlx::Error::Decode(e.into()))?,
            ))
        })
        .collect()
}

/// How many notifications of `user_id` are unread.
pub async fn unread_count(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
) -> Result<u64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM notifications \
         WHERE tenant_id = $1 AND user_id = $2 AND read_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    let n: i64 = row.try_get("n")?;
    u64::try_from(n).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Marks one notification of `user_id` read (a read one keeps its first read time). False when
/// it is not theirs.
pub async fn mark_read(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET read_ms = CASE WHEN read_ms IS NULL THEN $1 ELSE read_ms END \
         WHERE tenant_id = $2 AND user_id = $3 AND id = $4",
    )
    .bind(now_ms)
    .bind(tenant_id)
    .bind(user_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks every unread notification of `user_id` read; returns how many were.
pub async fn mark_all_read(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET read_ms = $1 \
         WHERE tenant_id = $2 AND user_id = $3 AND read_ms IS NULL",
    )
    .bind(now_ms)
    .bind(tenant_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Removes a user's notifications (the user was deleted: a new user with the same id must not
/// inherit them).
pub async fn delete_for_user(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM notifications WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes every notification of a tenant (the tenant is being deleted).
pub async fn delete_all(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM notifications WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}
