//! 1-to-1 messages and each member's view of a conversation (last activity, what they read).
//! Messages are ordered by (`created_ms`, `id`): ids are unique, so the order is total even
//! when two messages share a millisecond.

use super::Conn;
use onda_shared::api::Message;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, conversation_id, sender_id, receiver_id, content, media_url, \
                       media_type, created_ms, edited_ms, deleted_ms";

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    message_at(row, "")
}

/// The message in `row`'s columns named `{prefix}{column}` (a join names them apart).
fn message_at(row: &AnyRow, prefix: &str) -> Result<Message, sqlx::Error> {
    let col = |c: &str| format!("{prefix}{c}");
    let deleted: Option<i64> = row.try_get(col("deleted_ms").as_str())?;
    Ok(Message {
        id: row.try_get(col("id").as_str())?,
        conversation_id: row.try_get(col("conversation_id").as_str())?,
        sender_id: row.try_get(col("sender_id").as_str())?,
        receiver_id: row.try_get(col("receiver_id").as_str())?,
        content: if deleted.is_some() {
            String::new()
        } else {
            row.try_get(col("content").as_str())?
        },
        media_url: if deleted.is_some() {
            None
        } else {
            row.try_get(col("media_url").as_str())?
        },
        media_type: row.try_get(col("media_type").as_str())?,
        created_at: rfc3339_ms(row.try_get(col("created_ms").as_str())?),
        edited_at: row
            .try_get::<Option<i64>, _>(col("edited_ms").as_str())?
            .map(rfc3339_ms),
        deleted_at: deleted.map(rfc3339_ms),
    })
}

/// The conversation of two users of a tenant: the same id whichever of them asks.
pub fn conversation_id(tenant_id: &str, a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("{tenant_id}\0{lo}\0{hi}").as_bytes());
    format!("cnv_{}", &hex::encode(digest)[..24])
}

/// A message to store: its id and time are chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub sender_id: &'a str,
    pub receiver_id: &'a str,
    pub content: &'a str,
    pub media_url: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub created_ms: i64,
}

/// What a sender needs to know before messaging a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The sender's display name; None when the sender's profile is gone.
    pub sender_name: Option<String>,
    pub receiver_exists: bool,
    /// The sender blocked the receiver.
    pub blocked_by_sender: bool,
    /// The receiver blocked the sender.
    pub blocked_by_receiver: bool,
}

/// What each of `asks` (tenant, sender, receiver) needs to know, in their order.
pub async fn reach_all(
    conn: &mut Conn,
    asks: &[(&str, &str, &str)],
) -> Result<Vec<Reach>, sqlx::Error> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<String> = (0..asks.len())
        .map(|i| {
            let p = 4 * i + 1;
            format!("(${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "WITH q (i, tenant_id, sender, receiver) AS (VALUES {}) \
         SELECT q.i, \
         (SELECT display_name FROM end_users u WHERE u.tenant_id = q.tenant_id \
          AND u.id = q.sender) AS sender_name, \
         (SELECT COUNT(*) FROM end_users u WHERE u.tenant_id = q.tenant_id \
          AND u.id = q.receiver) AS receivers, \
         (SELECT COUNT(*) FROM user_blocks b WHERE b.tenant_id = q.tenant_id \
          AND b.blocker_id = q.sender AND b.blocked_id = q.receiver) AS by_sender, \
         (SELECT COUNT(*) FROM user_blocks b WHERE b.tenant_id = q.tenant_id \
          AND b.blocker_id = q.receiver AND b.blocked_id = q.sender) AS by_receiver \
         FROM q ORDER BY q.i",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql);
    for (i, (tenant, sender, receiver)) in asks.iter().enumerate() {
        q = q.bind(i as i64).bind(*tenant).bind(*sender).bind(*receiver);
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            Ok(Reach {
                sender_name: row.try_get("sender_name")?,
                receiver_exists: row.try_get::<i64, _>("receivers")? > 0,
                blocked_by_sender: row.try_get::<i64, _>("by_sender")? > 0,
                blocked_by_receiver: row.try_get::<i64, _>("by_receiver")? > 0,
            })
        })
        .collect()
}

/// Stores `messages` and moves each conversation to the top of both members' lists; answers
/// the messages as stored, in the order given. Run it in a transaction: the messages and the
/// members' rows change together. Two statements whatever the count, because the gateway
/// stores every message sent through here (several at once when they arrive together).
pub async fn insert_all(
    conn: &mut Conn,
    messages: &[NewMessage<'_>],
) -> Result<Vec<Message>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let conversations: Vec<String> = messages
        .iter()
        .map(|m| conversation_id(m.tenant_id, m.sender_id, m.receiver_id))
        .collect();
    let rows: Vec<String> = (0..messages.len())
        .map(|i| {
            let ps: Vec<String> = (9 * i + 1..9 * i + 10).map(|n| format!("${n}")).collect();
            format!("({}, NULL, NULL)", ps.join(", "))
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO messages (id, tenant_id, conversation_id, sender_id, receiver_id, content, \
         media_url, media_type, created_ms, edited_ms, deleted_ms) VALUES {} RETURNING {COLUMNS}",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql);
    for (m, conversation) in messages.iter().zip(&conversations) {
        q = q
            .bind(m.id)
            .bind(m.tenant_id)
            .bind(conversation)
            .bind(m.sender_id)
            .bind(m.receiver_id)
            .bind(m.content)
            .bind(m.media_url)
            .bind(m.media_type)
            .bind(m.created_ms);
    }
    let mut stored = std::collections::HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        let message = from_row(&row)?;
        stored.insert(message.id.clone(), message);
    }
    // One row per member and peer (an upsert may not touch a row twice), with the newest time,
    // in the order of their keys, so concurrent writers lock them in one order and never wait
    // on each other in a cycle.
    let mut members = std::collections::BTreeMap::<(&str, &str, &str), (&str, i64)>::new();
    for (m, conversation) in messages.iter().zip(&conversations) {
        for (user, other) in [(m.sender_id, m.receiver_id), (m.receiver_id, m.sender_id)] {
            let row = members
                .entry((m.tenant_id, user, other))
                .or_insert((conversation, m.created_ms));
            row.1 = row.1.max(m.created_ms);
        }
    }
    let rows: Vec<String> = (0..members.len())
        .map(|i| {
            let ps: Vec<String> = (5 * i + 1..5 * i + 6).map(|n| format!("${n}")).collect();
            format!("({}, 0, '')", ps.join(", "))
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO conversation_members (tenant_id, user_id, other_id, conversation_id, \
         last_message_ms, read_ms, read_id) VALUES {} \
         ON CONFLICT (tenant_id, user_id, other_id) DO UPDATE SET last_message_ms = \
         CASE WHEN conversation_members.last_message_ms > excluded.last_message_ms \
         THEN conversation_members.last_message_ms ELSE excluded.last_message_ms END",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql);
    for ((tenant, user, other), (conversation, ms)) in &members {
        q = q
            .bind(*tenant)
            .bind(*user)
            .bind(*other)
            .bind(*conversation)
            .bind(*ms);
    }
    q.execute(&mut *conn).await?;
    messages
        .iter()
        .map(|m| stored.remove(m.id).ok_or(sqlx::Error::RowNotFound))
        .collect()
}

pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"
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

/// Replaces the text of `sender`'s own message `id` (not deleted); None when there is no such
/// message of theirs.
pub async fn edit(
    conn: &mut Conn,
    tenant_id: &str,
    sender: &str,
    id: &str,
    content: &str,
    now_ms: i64,
) -> Result<Option<Message>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE messages SET content = $1, edited_ms = $2 WHERE tenant_id = $3 AND id = $4          AND sender_id = $5 AND deleted_ms IS NULL",
    )
    .bind(content)
    .bind(now_ms)
    .bind(tenant_id)
    .bind(id)
    .bind(sender)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant_id, id).await
}

/// Deletes `sender`'s own message `id`: its text and attachment go, the message stays as
/// deleted in the history. None when there is no such message of theirs (or it is deleted).
pub async fn delete(
    conn: &mut Conn,
    tenant_id: &str,
    sender: &str,
    id: &str,
    now_ms: i64,
) -> Result<Option<Message>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE messages SET content = '', media_url = NULL, deleted_ms = $1          WHERE tenant_id = $2 AND id = $3 AND sender_id = $4 AND deleted_ms IS NULL",
    )
    .bind(now_ms)
    .bind(tenant_id)
    .bind(id)
    .bind(sender)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant_id, id).await
}

/// Removes every message, conversation, block and report of a tenant (it is being deleted).
pub async fn delete_tenant(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    for table in ["messages", "conversation_members", "user_blocks", "reports"] {
        let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = $1"));
        sqlx::query(sql).bind(tenant_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Marks what `reader` received from `sender` as read up to `upto` (a message of their
/// conversation; the newest when None). Never moves the mark back. Returns the message the mark
/// is now at, or None when there is nothing to read (or `upto` is not in the conversation).
pub async fn mark_read(
    conn: &mut Conn,
    tenant_id: &str,
    reader: &str,
    sender: &str,
    upto: Option<&str>,
) -> Result<Option<Message>, sqlx::Error> {
    let conversation = conversation_id(tenant_id, reader, sender);
    let target = match upto {
        Some(id) => get(conn, tenant_id, id)
            .await?
            .filter(|m| m.conversation_id == conversation),
        None => {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM messages WHERE conversation_id = $1 \
                 ORDER BY created_ms DESC, id DESC LIMIT 1"
            ));
            sqlx::query(sql)
                .bind(&conversation)
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(from_row)
                .transpose()?
        }
    };
    let Some(target) = target else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT created_ms FROM messages WHERE id = $1")
        .bind(&target.id)
        .fetch_one(&mut *conn)
        .await?;
    let ms: i64 = row.try_get("created_ms")?;
    sqlx::query(
        "UPDATE conversation_members SET read_ms = $1, read_id = $2 \
         WHERE tenant_id = $3 AND user_id = $4 AND other_id = $5 \
         AND (read_ms < $1 OR (read_ms = $1 AND read_id < $2))",
    )
    .bind(ms)
    .bind(&target.id)
    .bind(tenant_id)
    .bind(reader)
    .bind(sender)
    .execute(&mut *conn)
    .await?;
    Ok(Some(target))
}

/// The other member of a conversation as its list shows them.
#[derive(Debug, Clone)]
pub struct PeerRow {
    pub id: String,
    /// None when the user was deleted (their profile is gone, their messages stay).
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub last_seen_ms: Option<i64>,
    pub online: bool,
}

/// One member's row of a conversation, with its unread count, its last message and the other
/// member.
#[derive(Debug, Clone)]
pub struct Membership {
    pub conversation_id: String,
    pub peer: PeerRow,
    pub unread: u64,
    pub last: Option<Message>,
}

/// The conversations of `user`, most recently active first (at most `limit`), each with its
/// last message and the other member's profile and presence (online: connected to a replica
/// that heartbeat at or after `alive_since_ms`). One query, whatever the number of
/// conversations: the list is read on every app start.
pub async fn conversations(
    conn: &mut Conn,
    tenant_id: &str,
    user: &str,
    limit: u32,
    alive_since_ms: i64,
) -> Result<Vec<Membership>, sqlx::Error> {
    let last = COLUMNS
        .split(", ")
        .map(|c| format!("l.{c} AS l_{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let online = super::presence::live_presence_count("m.tenant_id", "m.other_id", "$4");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT m.conversation_id AS member_conversation, m.other_id, \
         (SELECT COUNT(*) FROM messages x WHERE x.conversation_id = m.conversation_id \
          AND x.receiver_id = m.user_id AND x.deleted_ms IS NULL \
          AND (x.created_ms > m.read_ms OR (x.created_ms = m.read_ms AND x.id > m.read_id))) \
          AS unread, \
         {online} AS peer_replicas, \
         u.display_name AS peer_name, u.avatar_url AS peer_avatar, \
         u.last_seen_at AS peer_last_seen, {last} \
         FROM conversation_members m \
         LEFT JOIN end_users u ON u.tenant_id = m.tenant_id AND u.id = m.other_id \
         LEFT JOIN messages l ON l.id = (SELECT y.id FROM messages y \
          WHERE y.conversation_id = m.conversation_id \
          ORDER BY y.created_ms DESC, y.id DESC LIMIT 1) \
         WHERE m.tenant_id = $1 AND m.user_id = $2 \
         ORDER BY m.last_message_ms DESC, m.other_id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(user)
        .bind(i64::from(limit))
        .bind(alive_since_ms)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            let last = match row.try_get::<Option<String>, _>("l_id")? {
                Some(_) => Some(message_at(row, "l_")?),
                None => None,
            };
            let display_name: Option<String> = row.try_get("peer_name")?;
            Ok(Membership {
                conversation_id: row.try_get("member_conversation")?,
                peer: PeerRow {
                    id: row.try_get("other_id")?,
                    avatar_url: row.try_get("peer_avatar")?,
                    last_seen_ms: row.try_get("peer_last_seen")?,
                    // A deleted user's sockets are closing; they are not online.
                    online: display_name.is_some() && row.try_get::<i64, _>("peer_replicas")? > 0,
                    display_name,
                },
                unread: u64::try_from(row.try_get::<i64, _>("unread")?).unwrap_or(0),
                last,
            })
        })
        .collect()
}

/// Messages of a conversation older than `before` (a message id), newest first.
pub async fn history(
    conn: &mut Conn,
    conversation_id: &str,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<Message>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(match before {
        Some(_) => format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = $1 AND \
             (created_ms, id) < (SELECT created_ms, id FROM messages WHERE id = $2) \
             ORDER BY created_ms DESC, id DESC LIMIT $3"
        ),
        None => format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = $1 AND $2 = '' \
             ORDER BY created_ms DESC, id DESC LIMIT $3"
        ),
    });
    let rows = sqlx::query(sql)
        .bind(conversation_id)
        .bind(before.unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The users who share a conversation with `user` (who should hear of their presence).
pub async fn peers(
    conn: &mut Conn,
    tenant_id: &str,
    user: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT other_id FROM conversation_members WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("other_id")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_the_same_from_both_sides_and_per_tenant() {
        let ab = conversation_id("t1", "ana", "bo");
        assert_eq!(ab, conversation_id("t1", "bo", "ana"));
        assert_ne!(ab, conversation_id("t2", "ana", "bo"));
        // User ids hold no NUL, so the separator keeps ("a", "b:c") and ("a:b", "c") apart.
        assert_ne!(
            conversation_id("t", "a", "b:c"),
            conversation_id("t", "a:b", "c")
        );
        assert!(ab.starts_with("cnv_") && ab.len() == 28);
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
