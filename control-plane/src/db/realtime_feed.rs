//! Each end user's recent gateway events with their offsets (`realtime_feeds`,
//! `realtime_events`): appended in the transaction of the change they tell, read back when a
//! client reconnects, pruned when older than the recovery window. What an offset means and why
//! it is kept this way is told by the gateway's recovery module.

use super::Conn;
use sqlx::Row as _;

/// One stored event of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: String,
    /// The event's payload as JSON text, as it was sent.
    pub payload: String,
    pub created_ms: i64,
}

/// A user's feed: its epoch and the offset of its newest event (0 before the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub epoch: String,
    pub seq: i64,
}

/// Appends an event to the user's feed and returns its offset. The feed's row stays locked
/// until the caller's transaction ends, so the user's offsets commit in the order they are
/// given out; a transaction that appends for several users must take them in one order
/// (the gateway sorts them by user id) or two could wait on each other.
/// `new_epoch` is used only if the user has no feed yet.
pub async fn append(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    new_epoch: &str,
    event: &str,
    payload: &str,
    now_ms: i64,
) -> Result<Head, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO realtime_feeds (tenant_id, user_id, epoch, head) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET head = realtime_feeds.head + 1 \
         RETURNING epoch, head",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(new_epoch)
    .fetch_one(&mut *conn)
    .await?;
    let head = Head {
        epoch: row.try_get("epoch")?,
        seq: row.try_get("head")?,
    };
    sqlx::query(
        "INSERT INTO realtime_events (tenant_id, user_id, seq, event, payload, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(head.seq)
    .bind(event)
    .bind(payload)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(head)
}

/// The user's feed head, made (empty, with `new_epoch`) if the user has none yet.
pub async fn head(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    new_epoch: &str,
) -> Result<Head, sqlx::Error> {
    sqlx::query(
        "INSERT INTO realtime_feeds (tenant_id, user_id, epoch, head) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (tenant_id, user_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(new_epoch)
    .execute(&mut *conn)
    .await?;
    let row =
        sqlx::query("SELECT epoch, head FROM realtime_feeds WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_one(conn)
            .await?;
    Ok(Head {
        epoch: row.try_get("epoch")?,
        seq: row.try_get("head")?,
    })
}

/// The user's events after offset `after`, oldest first, at most `limit`.
pub async fn since(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event, payload, created_ms FROM realtime_events \
         WHERE tenant_id = $1 AND user_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
                seq: r.try_get("seq")?,
                event: r.try_get("event")?,
                payload: r.try_get("payload")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .collect()
}

/// Forgets events stored before `before_ms` (out of the recovery window); the feeds' heads
/// stay, so offsets keep growing.
pub async fn prune(conn: &mut Conn, before_ms: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM realtime_events WHERE created_ms < $1")
        .bind(before_ms)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Removes a user's feed and events (the user is being deleted).
pub async fn delete_for_user(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    for table in ["realtime_events", "realtime_feeds"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND user_id = $2"
        )))
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Removes every feed of a tenant (the tenant is being deleted).
pub async fn delete_all(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    for table in ["realtime_events", "realtime_feeds"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
