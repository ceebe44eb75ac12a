//! Stream sessions: each RTMP publish of a live stream, opened, sampled and closed by the
//! leader (`crate::sessions`), and the signed-in viewers who got a playback token during one.
//!
//! Every write is conditional, so two leaders at once (an election in progress) never open two
//! sessions of one stream (the partial unique index `stream_sessions_open`), never close one
//! twice, and never count one interval of viewer time twice (a sample requires the
//! `sampled_ms` it was computed from). The money figures are not stored: [`list`] reads them
//! from the ledger over each session's time window, so they cannot drift from it.

use super::Conn;
use onda_shared::api::{Page, PaymentTotals, StreamSession};
use sqlx::Row as _;
use sqlx::any::AnyRow;

/// An open session as the leader reads it each second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub id: String,
    pub tenant_id: String,
    pub stream_id: String,
    pub creator_id: Option<String>,
    pub started_ms: i64,
    pub peak_viewers: i64,
    pub viewer_ms: i64,
    pub sampled_ms: i64,
    pub on_air_ms: i64,
}

/// What the leader needs of a live stream to tell whether it is on the air and to open its
/// session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub id: String,
    pub tenant_id: String,
    pub slug: String,
    /// Its title.
    pub name: String,
    pub creator_id: Option<String>,
}

/// Every live stream, of every tenant.
pub async fn streams(conn: &mut Conn) -> Result<Vec<StreamRow>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, tenant_id, slug, name, creator_id FROM live_streams ORDER BY id")
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(StreamRow {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                slug: r.try_get("slug")?,
                name: r.try_get("name")?,
                creator_id: r.try_get("creator_id")?,
            })
        })
        .collect()
}

/// Every open session, of every tenant.
pub async fn open_all(conn: &mut Conn) -> Result<Vec<Open>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, stream_id, creator_id, started_ms, peak_viewers, viewer_ms, \
         sampled_ms, on_air_ms FROM stream_sessions WHERE ended_ms IS NULL ORDER BY id",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Open {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                stream_id: r.try_get("stream_id")?,
                creator_id: r.try_get("creator_id")?,
                started_ms: r.try_get("started_ms")?,
                peak_viewers: r.try_get("peak_viewers")?,
                viewer_ms: r.try_get("viewer_ms")?,
                sampled_ms: r.try_get("sampled_ms")?,
                on_air_ms: r.try_get("on_air_ms")?,
            })
        })
        .collect()
}

/// Opens `s`; false when the stream has an open session already (another leader opened it).
pub async fn open(conn: &mut Conn, s: &Open) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO stream_sessions (id, tenant_id, stream_id, creator_id, started_ms, \
         peak_viewers, viewer_ms, sampled_ms, on_air_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.stream_id)
    .bind(&s.creator_id)
    .bind(s.started_ms)
    .bind(s.peak_viewers)
    .bind(s.viewer_ms)
    .bind(s.sampled_ms)
    .bind(s.on_air_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a sample computed from the row as read at `read_sampled_ms`; false (and nothing
/// written) when another leader sampled it since, or it was closed.
pub async fn sample(conn: &mut Conn, s: &Open, read_sampled_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE stream_sessions SET peak_viewers = $1, viewer_ms = $2, sampled_ms = $3, \
         on_air_ms = $4 WHERE id = $5 AND sampled_ms = $6 AND ended_ms IS NULL",
    )
    .bind(s.peak_viewers)
    .bind(s.viewer_ms)
    .bind(s.sampled_ms)
    .bind(s.on_air_ms)
    .bind(&s.id)
    .bind(read_sampled_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes session `id` now (`now_ms`), ended at `ended_ms` (when its stream was last seen on
/// the air); false when it was closed already.
pub async fn close(
    conn: &mut Conn,
    id: &str,
    ended_ms: i64,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE stream_sessions SET ended_ms = $1, closed_ms = $2 \
         WHERE id = $3 AND ended_ms IS NULL",
    )
    .bind(ended_ms)
    .bind(now_ms)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts `user` among the unique viewers of the stream's open session, if it has one (a
/// second token in the same session changes nothing).
pub async fn add_viewer(
    conn: &mut Conn,
    tenant_id: &str,
    stream_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    // The WHERE clause also keeps SQLite from reading ON CONFLICT as part of a join.
    sqlx::query(
        "INSERT INTO stream_session_viewers (session_id, user_id, first_ms) \
         SELECT id, $1, $2 FROM stream_sessions \
         WHERE tenant_id = $3 AND stream_id = $4 AND ended_ms IS NULL \
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(now_ms)
    .bind(tenant_id)
    .bind(stream_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The session with its figures: viewers counted, and what happened while it was open (from its
/// start to its closing, or now): chat messages said, tips to its creator and purchases of its
/// stream in the ledger (gross amounts).
const SELECT: &str = "SELECT s.id, s.stream_id, s.creator_id, s.started_ms, s.ended_ms, \
     s.peak_viewers, s.viewer_ms, t.currency, \
     (SELECT COUNT(*) FROM stream_session_viewers v WHERE v.session_id = s.id) AS unique_viewers, \
     (SELECT COUNT(*) FROM stream_chat_messages m WHERE m.tenant_id = s.tenant_id \
        AND m.stream_id = s.stream_id AND m.kind = 'message' \
        AND m.created_ms >= s.started_ms AND m.created_ms <= COALESCE(s.closed_ms, $1)) \
        AS chat_messages, \
     (SELECT COUNT(*) FROM ledger_transactions l WHERE l.tenant_id = s.tenant_id \
        AND l.source = 'tip' AND l.counterparty_id = s.creator_id \
        AND l.created_ms >= s.started_ms AND l.created_ms <= COALESCE(s.closed_ms, $1)) AS tips, \
     (SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM ledger_transactions l \
        WHERE l.tenant_id = s.tenant_id AND l.source = 'tip' \
        AND l.counterparty_id = s.creator_id \
        AND l.created_ms >= s.started_ms AND l.created_ms <= COALESCE(s.closed_ms, $1)) \
        AS tips_amount, \
     (SELECT COUNT(*) FROM ledger_transactions l WHERE l.tenant_id = s.tenant_id \
        AND l.source = 'purchase' AND l.reference = s.stream_id \
        AND l.created_ms >= s.started_ms AND l.created_ms <= COALESCE(s.closed_ms, $1)) AS ppv, \
     (SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM ledger_transactions l \
        WHERE l.tenant_id = s.tenant_id AND l.source = 'purchase' \
        AND l.reference = s.stream_id \
        AND l.created_ms >= s.started_ms AND l.created_ms <= COALESCE(s.closed_ms, $1)) \
        AS ppv_amount \
     FROM stream_sessions s JOIN tenants t ON t.id = s.tenant_id";

fn count(r: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(r.try_get::<i64, _>(column)?).unwrap_or(0))
}

fn from_row(r: &AnyRow, now_ms: i64) -> Result<StreamSession, sqlx::Error> {
    let started: i64 = r.try_get("started_ms")?;
    let ended: Option<i64> = r.try_get("ended_ms")?;
    let viewer_ms: i64 = r.try_get("viewer_ms")?;
    Ok(StreamSession {
        id: r.try_get("id")?,
        stream_id: r.try_get("stream_id")?,
        creator_id: r.try_get("creator_id")?,
        started_at: super::messages::rfc3339_ms(started),
        ended_at: ended.map(super::messages::rfc3339_ms),
        live: ended.is_none(),
        duration_secs: u64::try_from((ended.unwrap_or(now_ms) - started) / 1000).unwrap_or(0),
        peak_viewers: count(r, "peak_viewers")?,
        // Minutes with two decimals: a short test session still shows its viewer time.
        viewer_minutes: (viewer_ms.max(0) as f64 / 600.0).round() / 100.0,
        unique_viewers: count(r, "unique_viewers")?,
        chat_messages: count(r, "chat_messages")?,
        tips: PaymentTotals {
            count: count(r, "tips")?,
            amount: r.try_get("tips_amount")?,
        },
        pay_per_view: PaymentTotals {
            count: count(r, "ppv")?,
            amount: r.try_get("ppv_amount")?,
        },
        currency: r.try_get("currency")?,
    })
}

/// Session `id` with its figures as of `now_ms`.
pub async fn get(
    conn: &mut Conn,
    id: &str,
    now_ms: i64,
) -> Result<Option<StreamSession>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE s.id = $2"));
    let row = sqlx::query(sql)
        .bind(now_ms)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(|r| from_row(r, now_ms)).transpose()
}

/// A stream's sessions, newest first, with their figures as of `now_ms`.
pub async fn list(
    conn: &mut Conn,
    (tenant_id, stream_id): (&str, &str),
    limit: u32,
    cursor: &str,
    now_ms: i64,
) -> Result<Page<StreamSession>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE s.tenant_id = $2 AND s.stream_id = $3 AND ($4 = '' OR s.id < $4) \
         ORDER BY s.id DESC LIMIT $5"
    ));
    let rows = sqlx::query(sql)
        .bind(now_ms)
        .bind(tenant_id)
        .bind(stream_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows
        .iter()
        .map(|r| from_row(r, now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(super::paginate(items, limit, |s| &s.id))
}
