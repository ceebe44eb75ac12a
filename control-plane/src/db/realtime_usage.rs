//! A tenant's metered realtime usage per UTC day: the connection time of its end users'
//! sockets (each replica flushes what it accumulated) and the messages they sent (counted in
//! the transaction that stores each message). Billing (`db::billing`) reads and marks these
//! rows like `usage_mounts`.
//!
//! A tenant's day has up to 16 unbilled rows, one picked at random by each writer, so writers
//! at once (messages, payments, flushes) do not queue on one row's lock; readers sum them. Writers add only to a row no
//! invoice has marked (and start a new one otherwise), so each row is billed by one invoice.

use super::Conn;
use crate::billing::DAY_MS;
use sqlx::Row as _;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The first millisecond of the UTC day that holds `at_ms`.
pub fn day_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(DAY_MS)
}

/// Unbilled rows per tenant and day.
const SHARDS: u8 = 16;

/// Adds `connection_ms` and `messages` to one of the tenant's unbilled rows of the day that holds
/// `at_ms`, creating it when there is none (a finalized invoice marked the last one). On
/// PostgreSQL the row stays locked until the caller's transaction ends, so a caller that holds
/// other locks calls this last.
pub async fn add(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
    connection_ms: u64,
    messages: u64,
) -> Result<(), sqlx::Error> {
    bump(conn, tenant_id, at_ms, (connection_ms, messages, 0, 0)).await
}

/// Counts one payment (`db::ledger::post` of a fan-to-creator payment), like [`add`].
pub async fn add_transaction(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    add_transactions(conn, tenant_id, at_ms, 1).await
}

/// Counts `n` payments written together (`db::ledger::post_payments`), like [`add`].
pub async fn add_transactions(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
    n: u64,
) -> Result<(), sqlx::Error> {
    bump(conn, tenant_id, at_ms, (0, 0, n, 0)).await
}

/// Counts `ms` of call time charged (`realtime::calls`: units × their length), like [`add`].
pub async fn add_call_time(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
    ms: u64,
) -> Result<(), sqlx::Error> {
    bump(conn, tenant_id, at_ms, (0, 0, 0, ms)).await
}

async fn bump(
    conn: &mut Conn,
    tenant_id: &str,
    at_ms: i64,
    (connection_ms, messages, transactions, call_ms): (u64, u64, u64, u64),
) -> Result<(), sqlx::Error> {
    // One of the day's unbilled rows at random: writers at once lock different rows (see
    // migration 0028); readers sum them.
    let shard = i64::from(rand::random::<u8>() % SHARDS);
    sqlx::query(
        "INSERT INTO realtime_usage (tenant_id, period_start_ms, connection_ms, messages, shard, \
         transactions, call_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, period_start_ms, shard) WHERE invoice_id IS NULL \
         DO UPDATE SET connection_ms = realtime_usage.connection_ms + excluded.connection_ms, \
         messages = realtime_usage.messages + excluded.messages, \
         transactions = realtime_usage.transactions + excluded.transactions, \
         call_ms = realtime_usage.call_ms + excluded.call_ms",
    )
    .bind(tenant_id)
    .bind(day_start(at_ms))
    .bind(i(connection_ms))
    .bind(i(messages))
    .bind(shard)
    .bind(i(transactions))
    .bind(i(call_ms))
    .execute(conn)
    .await?;
    Ok(())
}

/// The tenant's usage per UTC day for the days that start in `[from_ms, to_ms)`, billed or not:
/// (day start, connection ms, messages, payments, call ms), oldest first.
pub async fn days(
    conn: &mut Conn,
    tenant_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64, i64, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT period_start_ms, CAST(SUM(connection_ms) AS BIGINT) AS connection_ms, \
         CAST(SUM(messages) AS BIGINT) AS messages, \
         CAST(SUM(transactions) AS BIGINT) AS transactions, \
         CAST(SUM(call_ms) AS BIGINT) AS call_ms FROM realtime_usage WHERE tenant_id = $1 \
         AND period_start_ms >= $2 AND period_start_ms < $3 GROUP BY period_start_ms \
         ORDER BY period_start_ms",
    )
    .bind(tenant_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("period_start_ms")?,
                r.try_get("connection_ms")?,
                r.try_get("messages")?,
                r.try_get("transactions")?,
                r.try_get("call_ms")?,
            ))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_utc_midnight() {
        assert_eq!(day_start(0), 0);
        assert_eq!(day_start(DAY_MS - 1), 0);
        assert_eq!(day_start(DAY_MS), DAY_MS);
        assert_eq!(day_start(-1), -DAY_MS);
    }

    /// Additions go to the day's unbilled rows (spread over shards, summed here); once an
    /// invoice marked them, new rows start and the billed ones keep what they were billed for.
    #[tokio::test]
    async fn additions_go_to_the_unbilled_row_of_the_day() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.unwrap();
        add(&mut c, "t1", DAY_MS + 5, 1_000, 0).await.unwrap();
        add(&mut c, "t1", 2 * DAY_MS - 1, 500, 2).await.unwrap();
        add(&mut c, "t1", 2 * DAY_MS, 7, 0).await.unwrap();
        add(&mut c, "t2", DAY_MS, 0, 1).await.unwrap();
        sqlx::query("UPDATE realtime_usage SET invoice_id = 'inv' WHERE tenant_id = 't1'")
            .execute(&mut *c)
            .await
            .unwrap();
        add(&mut c, "t1", DAY_MS, 30, 1).await.unwrap();
        let rows = sqlx::query(
            "SELECT period_start_ms, CAST(SUM(connection_ms) AS BIGINT) AS connection_ms, \
             CAST(SUM(messages) AS BIGINT) AS messages, invoice_id FROM realtime_usage \
             WHERE tenant_id = 't1' GROUP BY period_start_ms, invoice_id \
             ORDER BY period_start_ms, invoice_id",
        )
        .fetch_all(&mut *c)
        .await
        .unwrap();
        let got: Vec<(i64, i64, i64, Option<String>)> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get("period_start_ms").unwrap(),
                    r.try_get("connection_ms").unwrap(),
                    r.try_get("messages").unwrap(),
                    r.try_get("invoice_id").unwrap(),
                )
            })
            .collect();
        // SQLite sorts NULL first.
        assert_eq!(
            got,
            [
                (DAY_MS, 30, 1, None),
                (DAY_MS, 1_500, 2, Some("inv".to_string())),
                (2 * DAY_MS, 7, 0, Some("inv".to_string())),
            ]
        );
    }
}
