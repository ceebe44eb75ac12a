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

/// An event to append to a user's feed.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub user_id: &'a str,
    pub event: &'a str,
    /// The payload as JSON text, as it is sent.
    pub payload: String,
}

/// Appends `events` to their users' feeds and returns each one's position (its feed's epoch
/// and its offset), in the order of `events`; a user's events get consecutive offsets in that
/// order. Two statements whatever the count, because every message sent appends three: one
/// upsert moves each user's head past their events, one insert stores them.
///
/// The feeds' rows stay locked until the caller's transaction ends, so a user's offsets commit
/// in the order they are given out. The upsert takes the users in the order of their ids, so two
/// transactions that append for the same users never wait on each other in a cycle.
/// `new_epoch` names a feed made here (a user with none yet).
pub async fn append(
    conn: &mut Conn,
    tenant_id: &str,
    new_epoch: impl Fn() -> String,
    events: &[NewEvent<'_>],
    now_ms: i64,
) -> Result<Vec<Head>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts = std::collections::BTreeMap::<&str, i64>::new();
    for e in events {
        *counts.entry(e.user_id).or_default() += 1;
    }
    let rows: Vec<String> = (0..counts.len())
        .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO realtime_feeds (tenant_id, user_id, epoch, head) VALUES {} \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET head = realtime_feeds.head + excluded.head \
         RETURNING user_id, epoch, head",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for (user, n) in &counts {
        q = q.bind(*user).bind(new_epoch()).bind(*n);
    }
    let mut heads = std::collections::HashMap::<String, Head>::new();
    for row in q.fetch_all(&mut *conn).await? {
        let user: String = row.try_get("user_id")?;
        let head = Head {
            epoch: row.try_get("epoch")?,
            seq: row.try_get("head")?,
        };
        // The user's first new offset: their events take the heads up to the new one.
        let first = head.seq - counts.get(user.as_str()).copied().unwrap_or_default() + 1;
        heads.insert(user, Head { seq: first, ..head });
    }
    let mut placed = Vec::with_capacity(events.len());
    for e in events {
        let next = heads.get_mut(e.user_id).ok_or(sqlx::Error::RowNotFound)?;
        placed.push(next.clone());
        next.seq += 1;
    }
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let p = 4 * i + 3;
            format!("($1, ${p}, ${}, ${}, ${}, $2)", p + 1, p + 2, p + 3)
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO realtime_events (tenant_id, user_id, seq, event, payload, created_ms) \
         VALUES {}",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id).bind(now_ms);
    for (e, head) in events.iter().zip(&placed) {
        q = q
            .bind(e.user_id)
            .bind(head.seq)
            .bind(e.event)
            .bind(&e.payload);
    }
    q.execute(conn).await?;
    Ok(placed)
}

/// The user's feed head, made (empty, with `new_epoch`) if the user has none yet. With `lock`,
/// read by a no-op UPDATE that keeps the row locked until the caller's transaction ends (on
/// SQLite: the database's write lock), so no event of the user is appended meanwhile.
pub async fn head(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    new_epoch: &str,
    lock: bool,
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
    let sql = if lock {
        "UPDATE realtime_feeds SET head = head WHERE tenant_id = $1 AND user_id = $2 \
         RETURNING epoch, head"
    } else {
        "SELECT epoch, head FROM realtime_feeds WHERE tenant_id = $1 AND user_id = $2"
    };
    let row = sqlx::query(sql)
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
