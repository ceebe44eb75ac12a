//! Blocks between end users and abuse reports of messages.

use super::{Conn, paginate};
use onda_shared::api::{Message, Page, Report};
use sqlx::Row as _;

/// `blocker` blocks `blocked` (again: nothing changes).
pub async fn block(
    conn: &mut Conn,
    tenant_id: &str,
    blocker: &str,
    blocked: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_blocks (tenant_id, blocker_id, blocked_id, created_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, blocker_id, blocked_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(blocker)
    .bind(blocked)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn unblock(
    conn: &mut Conn,
    tenant_id: &str,
    blocker: &str,
    blocked: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM user_blocks WHERE tenant_id = $1 AND blocker_id = $2 AND blocked_id = $3",
    )
    .bind(tenant_id)
    .bind(blocker)
    .bind(blocked)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which of the two blocked the other: (a blocked b, b blocked a).
pub async fn between(
    conn: &mut Conn,
    tenant_id: &str,
    a: &str,
    b: &str,
) -> Result<(bool, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT blocker_id FROM user_blocks WHERE tenant_id = $1 AND \
         ((blocker_id = $2 AND blocked_id = $3) OR (blocker_id = $3 AND blocked_id = $2))",
    )
    .bind(tenant_id)
    .bind(a)
    .bind(b)
    .fetch_all(conn)
    .await?;
    let mut out = (false, false);
    for r in &rows {
        let blocker: String = r.try_get("blocker_id")?;
        if blocker == a {
            out.0 = true;
        } else {
            out.1 = true;
        }
    }
    Ok(out)
}

/// Stores a report of `message` by `reporter`, with the message as it is now.
pub async fn report(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    reporter: &str,
    reason: &str,
    message: &Message,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let snapshot = serde_json::to_string(message).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO reports (id, tenant_id, reporter_id, message_id, reason, snapshot, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(reporter)
    .bind(&message.id)
    .bind(reason)
    .bind(snapshot)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of the tenant's reports by id (ids sort by time).
pub async fn reports(
    conn: &mut Conn,
    tenant_id: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<Report>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, reporter_id, reason, snapshot, created_ms FROM reports \
         WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            let raw: String = r.try_get("snapshot")?;
            // Written by this code from a Message; anything else is an error naming the column.
            let message = serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
                index: "snapshot".to_string(),
                source: format!("snapshot is not a message ({e}): {raw:.64}").into(),
            })?;
            Ok(Report {
                id: r.try_get("id")?,
                reporter_id: r.try_get("reporter_id")?,
                reason: r.try_get("reason")?,
                message,
                created_at: super::messages::rfc3339_ms(r.try_get("created_ms")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(paginate(items, limit, |r| &r.id))
}
