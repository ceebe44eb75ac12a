//! Memberships: creators' subscribers (bought from the wallet or declared by the tenant) and
//! the viewers who bought a pay-per-view stream. The money is in the ledger; these rows are
//! what `memberships::entitled` reads and what the renewal task advances.
//!
//! A wallet subscription moves from one period to the next only by [`advance`], one UPDATE
//! that requires the period it read and a due end: of two replicas renewing at once, the second
//! finds the period moved (PostgreSQL re-evaluates the condition once the first commits; SQLite
//! runs write transactions one after the other) and renews nothing.

use super::Conn;
use sqlx::Row as _;
use sqlx::any::AnyRow;

/// How a subscription came to be.
pub const WALLET: &str = "wallet";
pub const TENANT: &str = "tenant";

/// One subscription row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub tenant_id: String,
    pub creator_id: String,
    pub user_id: String,
    pub kind: String,
    pub price: Option<i64>,
    pub renews: bool,
    pub period: i64,
    pub started_ms: i64,
    pub ends_ms: i64,
    pub transaction_id: Option<String>,
    pub lapsed_ms: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, creator_id, user_id, kind, price, renews, period, \
                       started_ms, ends_ms, transaction_id, lapsed_ms";

fn from_row(r: &AnyRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        creator_id: r.try_get("creator_id")?,
        user_id: r.try_get("user_id")?,
        kind: r.try_get("kind")?,
        price: r.try_get("price")?,
        renews: r.try_get::<i64, _>("renews")? != 0,
        period: r.try_get("period")?,
        started_ms: r.try_get("started_ms")?,
        ends_ms: r.try_get("ends_ms")?,
        transaction_id: r.try_get("transaction_id")?,
        lapsed_ms: r.try_get("lapsed_ms")?,
    })
}

/// The subscription of `user` to `creator` (ended or not). On PostgreSQL `lock` takes its row
/// for the rest of the transaction.
pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    (creator, user): (&str, &str),
    lock: bool,
) -> Result<Option<Row>, sqlx::Error> {
    let suffix = if lock && conn.backend_name() == "PostgreSQL" {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions \
         WHERE tenant_id = $1 AND creator_id = $2 AND user_id = $3{suffix}"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(creator)
        .bind(user)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn by_id(conn: &mut Conn, id: &str) -> Result<Option<Row>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM subscriptions WHERE id = $1"));
    sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A user's subscriptions, by creator.
pub async fn of_user(
    conn: &mut Conn,
    tenant_id: &str,
    user: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND user_id = $2 \
         ORDER BY creator_id"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(user)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The users whose subscription to `creator` lasts beyond `now_ms` (bought or declared), by id.
pub async fn active_subscribers(
    conn: &mut Conn,
    tenant_id: &str,
    creator: &str,
    now_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM subscriptions WHERE tenant_id = $1 AND creator_id = $2 \
         AND ends_ms > $3 ORDER BY user_id",
    )
    .bind(tenant_id)
    .bind(creator)
    .bind(now_ms)
    .fetch_all(conn)
    .await
}

/// Writes `row` whole: a new subscription, or a new start of one that ended (same id).
pub async fn upsert(conn: &mut Conn, row: &Row, now_ms: i64) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "UPDATE subscriptions SET kind = $1, price = $2, renews = $3, period = $4, \
         started_ms = $5, ends_ms = $6, transaction_id = $7, lapsed_ms = $8, updated_ms = $9 \
         WHERE id = $10",
    )
    .bind(&row.kind)
    .bind(row.price)
    .bind(i64::from(row.renews))
    .bind(row.period)
    .bind(row.started_ms)
    .bind(row.ends_ms)
    .bind(&row.transaction_id)
    .bind(row.lapsed_ms)
    .bind(now_ms)
    .bind(&row.id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO subscriptions (id, tenant_id, creator_id, user_id, kind, price, renews, \
         period, started_ms, ends_ms, transaction_id, lapsed_ms, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.creator_id)
    .bind(&row.user_id)
    .bind(&row.kind)
    .bind(row.price)
    .bind(i64::from(row.renews))
    .bind(row.period)
    .bind(row.started_ms)
    .bind(row.ends_ms)
    .bind(&row.transaction_id)
    .bind(row.lapsed_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets whether a subscription renews; false when there is no such row.
pub async fn set_renews(
    conn: &mut Conn,
    id: &str,
    renews: bool,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE subscriptions SET renews = $1, updated_ms = $2 WHERE id = $3")
        .bind(i64::from(renews))
        .bind(now_ms)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn delete(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Wallet subscriptions that renew and whose end has come, oldest end first (at most `limit`).
pub async fn due(conn: &mut Conn, now_ms: i64, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE renews = 1 AND kind = 'wallet' \
         AND ends_ms <= $1 ORDER BY ends_ms, id LIMIT $2"
    ));
    let rows = sqlx::query(sql)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Moves a due subscription from `period` to the next, ending at `ends_ms` and paid by
/// `transaction_id`. False when another renewal (or a cancel) got there first.
pub async fn advance(
    conn: &mut Conn,
    row: &Row,
    (ends_ms, transaction_id): (i64, &str),
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE subscriptions SET period = period + 1, ends_ms = $1, transaction_id = $2, \
         updated_ms = $3 WHERE id = $4 AND period = $5 AND renews = 1 AND ends_ms <= $3",
    )
    .bind(ends_ms)
    .bind(transaction_id)
    .bind(now_ms)
    .bind(&row.id)
    .bind(row.period)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks a due subscription lapsed: it renews no more and ended at its end. False when it was
/// renewed or changed meanwhile.
pub async fn lapse(conn: &mut Conn, row: &Row, now_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE subscriptions SET renews = 0, lapsed_ms = $1, updated_ms = $1 \
         WHERE id = $2 AND period = $3 AND renews = 1 AND ends_ms <= $1",
    )
    .bind(now_ms)
    .bind(&row.id)
    .bind(row.period)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that `user` bought `stream`; false when they had already (the primary key).
pub async fn insert_purchase(
    conn: &mut Conn,
    tenant_id: &str,
    (stream_id, user): (&str, &str),
    transaction_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO stream_purchases (tenant_id, stream_id, user_id, transaction_id, \
         created_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, stream_id, user_id) \
         DO NOTHING",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(user)
    .bind(transaction_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The ledger transaction with which `user` bought `stream`, if they did.
pub async fn purchase(
    conn: &mut Conn,
    tenant_id: &str,
    (stream_id, user): (&str, &str),
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT transaction_id FROM stream_purchases \
         WHERE tenant_id = $1 AND stream_id = $2 AND user_id = $3",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(user)
    .fetch_optional(conn)
    .await?
    .map(|r| r.try_get("transaction_id"))
    .transpose()
}
