//! Live streams' chats: the messages said in them (kept: a stream's saved chat), and each
//! creator's moderation — the moderators they named, the users they timed out or banned, and
//! the chat settings of their streams.
//!
//! A tip given in a stream's chat is written as a chat line in the tip's own transaction, at
//! most once per ledger transaction (the unique index `stream_chat_tips`).

use super::{Conn, paginate};
use onda_shared::api::{ChatMessage, ChatMessageKind, ChatSettings, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

/// The display name of a message whose author's profile was deleted.
pub const DELETED_USER: &str = "Deleted user";

const COLUMNS: &str = "m.id, m.stream_id, m.user_id, m.kind, m.content, m.amount, m.created_ms, \
                       m.deleted_ms, u.display_name";

fn from_row(row: &AnyRow) -> Result<ChatMessage, sqlx::Error> {
    let deleted: Option<i64> = row.try_get("deleted_ms")?;
    Ok(ChatMessage {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        user_id: row.try_get("user_id")?,
        display_name: row
            .try_get::<Option<String>, _>("display_name")?
            .unwrap_or_else(|| DELETED_USER.to_string()),
        kind: super::parsed(row, "kind")?,
        // A deleted message keeps its row (moderation history), not its words.
        content: if deleted.is_some() {
            String::new()
        } else {
            row.try_get("content")?
        },
        amount: row.try_get("amount")?,
        created_at: super::messages::rfc3339_ms(row.try_get("created_ms")?),
        deleted: deleted.is_some(),
    })
}

/// A message to store in a stream's chat.
pub struct NewChatMessage<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub stream_id: &'a str,
    pub creator_id: &'a str,
    pub user_id: &'a str,
    pub kind: ChatMessageKind,
    pub content: &'a str,
    /// A tip's amount and ledger transaction.
    pub tip: Option<(i64, &'a str)>,
    pub created_ms: i64,
}

/// Stores a message and answers it as the room sees it; a tip whose transaction is in the chat
/// already answers the row that is there.
pub async fn insert(conn: &mut Conn, m: &NewChatMessage<'_>) -> Result<ChatMessage, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO stream_chat_messages (id, tenant_id, stream_id, creator_id, user_id, kind, \
         content, amount, transaction_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10) ON CONFLICT (transaction_id) DO NOTHING",
    )
    .bind(m.id)
    .bind(m.tenant_id)
    .bind(m.stream_id)
    .bind(m.creator_id)
    .bind(m.user_id)
    .bind(m.kind.as_str())
    .bind(m.content)
    .bind(m.tip.map(|t| t.0))
    .bind(m.tip.map(|t| t.1))
    .bind(m.created_ms)
    .execute(&mut *conn)
    .await?;
    let found = if done.rows_affected() == 0
        && let Some((_, transaction)) = m.tip
    {
        by_transaction(conn, m.tenant_id, transaction).await?
    } else {
        get(conn, m.tenant_id, m.stream_id, m.id).await?
    };
    found.ok_or(sqlx::Error::RowNotFound)
}

async fn by_transaction(
    conn: &mut Conn,
    tenant_id: &str,
    transaction_id: &str,
) -> Result<Option<ChatMessage>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stream_chat_messages m LEFT JOIN end_users u \
         ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.transaction_id = $2"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(transaction_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// One message of a stream's chat.
pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    id: &str,
) -> Result<Option<ChatMessage>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stream_chat_messages m LEFT JOIN end_users u \
         ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.stream_id = $2 AND m.id = $3"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(stream_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The newest `limit` messages of a stream's chat that are not deleted, oldest first (what a
/// viewer who joins sees).
pub async fn recent(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    limit: u32,
) -> Result<Vec<ChatMessage>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stream_chat_messages m LEFT JOIN end_users u \
         ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.stream_id = $2 AND m.deleted_ms IS NULL \
         ORDER BY m.id DESC LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(stream_id)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

/// A stream's saved chat, oldest first, deleted messages included (marked), a page after
/// `cursor`.
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    (limit, cursor): (u32, Option<&str>),
) -> Result<Page<ChatMessage>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stream_chat_messages m LEFT JOIN end_users u \
         ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.stream_id = $2 AND m.id > $3 ORDER BY m.id LIMIT $4"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(stream_id)
        .bind(cursor.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |m| &m.id))
}

/// Marks a message deleted by `by`; false when there is no such message not yet deleted.
pub async fn delete(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    (id, by): (&str, &str),
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE stream_chat_messages SET deleted_ms = $4, deleted_by = $5 \
         WHERE tenant_id = $1 AND stream_id = $2 AND id = $3 AND deleted_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(id)
    .bind(now_ms)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When the user last wrote in any of the creator's chats (for slow mode).
pub async fn last_said_ms(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    user_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(created_ms) FROM stream_chat_messages \
         WHERE tenant_id = $1 AND creator_id = $2 AND user_id = $3 AND kind = 'message'",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// Messages said in a stream's chat between two times (a session's figure).
pub async fn count_between(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    (from_ms, to_ms): (i64, i64),
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM stream_chat_messages WHERE tenant_id = $1 AND stream_id = $2 \
         AND kind = 'message' AND created_ms >= $3 AND created_ms < $4",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(conn)
    .await
}

/// The moderators a creator named, by id.
pub async fn moderators(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM chat_moderators WHERE tenant_id = $1 AND creator_id = $2 \
         ORDER BY user_id",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .fetch_all(conn)
    .await
}

pub async fn is_moderator(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM chat_moderators WHERE tenant_id = $1 AND creator_id = $2 AND user_id = $3",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// Names (`true`) or removes a moderator; true when that changed something.
pub async fn set_moderator(
    conn: &mut Conn,
    tenant_id: &str,
    (creator_id, user_id): (&str, &str),
    on: bool,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = if on {
        sqlx::query(
            "INSERT INTO chat_moderators (tenant_id, creator_id, user_id, created_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, creator_id, user_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(creator_id)
        .bind(user_id)
        .bind(now_ms)
        .execute(conn)
        .await?
    } else {
        sqlx::query(
            "DELETE FROM chat_moderators WHERE tenant_id = $1 AND creator_id = $2 \
             AND user_id = $3",
        )
        .bind(tenant_id)
        .bind(creator_id)
        .bind(user_id)
        .execute(conn)
        .await?
    };
    Ok(done.rows_affected() > 0)
}

/// What holds a user out of a creator's chats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// Timed out until this time (unix ms).
    TimedOut {
        until_ms: i64,
    },
    Banned,
}

/// The user's restriction in the creator's chats at `now_ms` (a timeout that ended is none).
pub async fn restriction(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<Option<Restriction>, sqlx::Error> {
    let row: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT until_ms FROM chat_restrictions WHERE tenant_id = $1 AND creator_id = $2 \
         AND user_id = $3",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => None,
        Some(None) => Some(Restriction::Banned),
        Some(Some(until_ms)) if until_ms > now_ms => Some(Restriction::TimedOut { until_ms }),
        Some(Some(_)) => None,
    })
}

/// Bans (`until_ms` None) or times out a user in the creator's chats; a ban is not shortened
/// into a timeout.
pub async fn restrict(
    conn: &mut Conn,
    tenant_id: &str,
    (creator_id, user_id, by): (&str, &str, &str),
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<Option<Restriction>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_restrictions (tenant_id, creator_id, user_id, until_ms, by_user_id, \
         created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, creator_id, user_id) DO UPDATE SET \
         until_ms = CASE WHEN chat_restrictions.until_ms IS NULL THEN NULL \
         ELSE excluded.until_ms END, by_user_id = excluded.by_user_id, \
         created_ms = excluded.created_ms",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(user_id)
    .bind(until_ms)
    .bind(by)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    restriction(conn, tenant_id, creator_id, user_id, now_ms).await
}

/// Lifts a ban or timeout; false when there was none.
pub async fn lift(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM chat_restrictions WHERE tenant_id = $1 AND creator_id = $2 AND user_id = $3",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The chat settings of a creator's streams (the defaults when never set).
pub async fn settings(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
) -> Result<ChatSettings, sqlx::Error> {
    let row = sqlx::query(
        "SELECT slow_mode_secs, subscribers_only, blocked_words FROM chat_settings \
         WHERE tenant_id = $1 AND creator_id = $2",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(ChatSettings::default());
    };
    let words: String = row.try_get("blocked_words")?;
    Ok(ChatSettings {
        slow_mode_secs: u32::try_from(row.try_get::<i64, _>("slow_mode_secs")?).unwrap_or(0),
        subscribers_only: row.try_get::<i64, _>("subscribers_only")? != 0,
        blocked_words: serde_json::from_str(&words).map_err(|e| sqlx::Error::ColumnDecode {
            index: "blocked_words".to_string(),
            source: Box::new(e),
        })?,
    })
}

pub async fn put_settings(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    s: &ChatSettings,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_settings (tenant_id, creator_id, slow_mode_secs, subscribers_only, \
         blocked_words, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, creator_id) DO UPDATE SET \
         slow_mode_secs = excluded.slow_mode_secs, subscribers_only = excluded.subscribers_only, \
         blocked_words = excluded.blocked_words, updated_ms = excluded.updated_ms",
    )
    .bind(tenant_id)
    .bind(creator_id)
    .bind(i64::from(s.slow_mode_secs))
    .bind(i64::from(s.subscribers_only))
    .bind(serde_json::to_string(&s.blocked_words).unwrap_or_else(|_| "[]".into()))
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}
