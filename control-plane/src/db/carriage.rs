//! What each node was told to carry, over time (table `carriage`): the leader records it before it
//! writes a desired state, and the control channel accepts a node's usage only for stations and
//! live streams the node carried during the report's period.

use super::Conn;
use sqlx::Row as _;
use std::collections::BTreeSet;

/// How far a node's clock may be off the control plane's when its usage periods are checked.
pub const CLOCK_SLACK_MS: u64 = 5 * 60 * 1000;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Brings the node's open rows in line with `carried`: objects without an open row get one from
/// `since_ms`, open rows of objects no longer carried are closed at `now_ms`.
pub async fn sync(
    conn: &mut Conn,
    node_id: &str,
    carried: &BTreeSet<String>,
    now_ms: u64,
    since_ms: u64,
) -> Result<(), sqlx::Error> {
    let open: BTreeSet<String> =
        sqlx::query("SELECT subject_id FROM carriage WHERE node_id = $1 AND until_ms IS NULL")
            .bind(node_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get("subject_id"))
            .collect::<Result<_, _>>()?;
    for gone in open.difference(carried) {
        sqlx::query(
            "UPDATE carriage SET until_ms = $3 WHERE node_id = $1 AND subject_id = $2 \
             AND until_ms IS NULL",
        )
        .bind(node_id)
        .bind(gone)
        .bind(i(now_ms))
        .execute(&mut *conn)
        .await?;
    }
    for new in carried.difference(&open) {
        // Carried again within the same millisecond it was dropped: the row opens again.
        sqlx::query(
            "INSERT INTO carriage (node_id, subject_id, since_ms, until_ms) VALUES ($1, $2, $3, NULL) \
             ON CONFLICT (node_id, subject_id, since_ms) DO UPDATE SET until_ms = NULL",
        )
        .bind(node_id)
        .bind(new)
        .bind(i(since_ms))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The stations and live streams the node carried at some time in [from_ms, to_ms], widened by
/// [`CLOCK_SLACK_MS`] on both sides (the period is on the node's clock).
pub async fn carried_during(
    conn: &mut Conn,
    node_id: &str,
    from_ms: u64,
    to_ms: u64,
) -> Result<BTreeSet<String>, sqlx::Error> {
    sqlx::query(
        "SELECT DISTINCT subject_id FROM carriage WHERE node_id = $1 AND since_ms <= $3 \
         AND (until_ms IS NULL OR until_ms >= $2)",
    )
    .bind(node_id)
    .bind(i(from_ms.saturating_sub(CLOCK_SLACK_MS)))
    .bind(i(to_ms.saturating_add(CLOCK_SLACK_MS)))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("subject_id"))
    .collect()
}
