//! What each node was told to carry, over time (table `carriage`): the leader records it before it
//! writes a desired state, and the control channel accepts a node's usage only for stations and
//! live streams the node carried during the report's period.

use super::Conn;
use sqlx::Row as _;
use std::collections::BTreeSet;

/// How far a node's clock may be off the control plane's when its usage periods are checked.
pub const CLOCK_SLACK_MS: u64 = 5 * 60 * 1000;

/// How late a usage report may arrive (a node back from a long partition): one whose period
/// ended longer ago is refused, and carriage that ended longer ago (plus the clock allowance)
/// is pruned, as no report can be checked against it any more.
pub const MAX_REPORT_AGE_MS: u64 = 62 * 24 * 3_600_000;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Brings the node's open rows in line with `carried`: open rows of objects no longer carried are
/// closed at `now_ms`; objects without an open row get one from `now_ms` when `new_state` (a
/// desired state being written now) and the node has a record already. Otherwise the state was
/// in force before anyone recorded it (a new leader's first round, or a node from before this
/// record existed), and the row starts when the node joined: it cannot have carried anything
/// before.
pub async fn sync(
    conn: &mut Conn,
    node_id: &str,
    carried: &BTreeSet<String>,
    now_ms: u64,
    new_state: bool,
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
    let opening: Vec<&String> = carried.difference(&open).collect();
    if opening.is_empty() {
        return Ok(());
    }
    let recorded = sqlx::query("SELECT 1 AS one FROM carriage WHERE node_id = $1 LIMIT 1")
        .bind(node_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let since_ms = if new_state && recorded {
        now_ms
    } else {
        let joined_s: Option<i64> = sqlx::query("SELECT created_at FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get("created_at"))
            .transpose()?;
        joined_s.map_or(0, |s| {
            u64::try_from(s)
                .unwrap_or(0)
                .saturating_mul(1000)
                .min(now_ms)
        })
    };
    for new in opening {
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

/// The nodes told to carry something that they have not been told to let go of: what a new
/// leader must wait for even when the coordinator lost the placement (the in-process one, when
/// its control plane restarted).
pub async fn carrying_nodes(conn: &mut Conn) -> Result<BTreeSet<String>, sqlx::Error> {
    sqlx::query("SELECT DISTINCT node_id FROM carriage WHERE until_ms IS NULL")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get("node_id"))
        .collect()
}

/// Deletes carriage that ended before any usage report still accepted can start (see
/// [`MAX_REPORT_AGE_MS`]); open rows and recent ones stay. Returns how many rows went.
pub async fn prune(conn: &mut Conn, now_ms: u64) -> Result<u64, sqlx::Error> {
    let before = now_ms
        .saturating_sub(MAX_REPORT_AGE_MS)
        .saturating_sub(onda_shared::cluster::proto::MAX_USAGE_PERIOD_MS)
        .saturating_sub(CLOCK_SLACK_MS);
    Ok(
        sqlx::query("DELETE FROM carriage WHERE until_ms IS NOT NULL AND until_ms < $1")
            .bind(i(before))
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use onda_shared::cluster::proto::MAX_USAGE_PERIOD_MS;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn carriage_is_kept_per_stretch_of_time() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.unwrap();
        // A node that joined at t = 1000 s.
        sqlx::query(
            "INSERT INTO nodes (id, name, region, labels, public_url, capacity_listeners, \
             capacity_mbps, status, created_at, draining) \
             VALUES ('n1', 'n1', '', '{}', 'http://x', 1, 1, 'ready', 1000, 0)",
        )
        .execute(&mut *c)
        .await
        .unwrap();
        const H: u64 = 3_600_000;
        // First record of a state already in force: from the node's join.
        sync(&mut c, "n1", &set(&["a"]), 10 * H, false)
            .await
            .unwrap();
        assert_eq!(
            carried_during(&mut c, "n1", H, 2 * H).await.unwrap(),
            set(&["a"])
        );
        assert!(
            carried_during(&mut c, "n1", 0, 50_000)
                .await
                .unwrap()
                .is_empty()
        );
        // A new state at 20 h: b from now, a dropped now.
        sync(&mut c, "n1", &set(&["b"]), 20 * H, true)
            .await
            .unwrap();
        assert_eq!(
            carried_during(&mut c, "n1", 15 * H, 16 * H).await.unwrap(),
            set(&["a"])
        );
        assert_eq!(
            carried_during(&mut c, "n1", 21 * H, 22 * H).await.unwrap(),
            set(&["b"])
        );
        assert_eq!(
            carried_during(&mut c, "n1", 19 * H, 21 * H).await.unwrap(),
            set(&["a", "b"])
        );
        // Clock skew allowance at the edges only.
        assert!(
            carried_during(
                &mut c,
                "n1",
                20 * H - 2 * CLOCK_SLACK_MS,
                20 * H - 2 * CLOCK_SLACK_MS + 1000
            )
            .await
            .unwrap()
            .contains("a")
        );
        assert!(
            !carried_during(&mut c, "n1", 20 * H + 2 * CLOCK_SLACK_MS, 21 * H)
                .await
                .unwrap()
                .contains("a")
        );
        // Carried again later: a second stretch; syncing the same state changes nothing.
        sync(&mut c, "n1", &set(&["a", "b"]), 30 * H, true)
            .await
            .unwrap();
        sync(&mut c, "n1", &set(&["a", "b"]), 31 * H, true)
            .await
            .unwrap();
        assert!(
            !carried_during(&mut c, "n1", 25 * H, 26 * H)
                .await
                .unwrap()
                .contains("a")
        );
        assert!(
            carried_during(&mut c, "n1", 32 * H, 33 * H)
                .await
                .unwrap()
                .contains("a")
        );
        // Another node carried nothing.
        assert!(
            carried_during(&mut c, "n2", 0, 40 * H)
                .await
                .unwrap()
                .is_empty()
        );

        // Pruning: the stretch of a that ended at 20 h goes once no report can reach back to
        // it; the open rows stay however old.
        async fn rows(c: &mut Conn) -> i64 {
            sqlx::query("SELECT COUNT(*) AS n FROM carriage")
                .fetch_one(&mut *c)
                .await
                .unwrap()
                .get::<i64, _>("n")
        }
        let total = rows(&mut c).await;
        assert_eq!(prune(&mut c, 20 * H + MAX_REPORT_AGE_MS).await.unwrap(), 0);
        let late = 20 * H + MAX_REPORT_AGE_MS + MAX_USAGE_PERIOD_MS + CLOCK_SLACK_MS + 1;
        assert_eq!(prune(&mut c, late).await.unwrap(), 1);
        assert_eq!(rows(&mut c).await, total - 1);
        assert!(
            carried_during(&mut c, "n1", 40 * H, 41 * H)
                .await
                .unwrap()
                .contains("a")
        );
        assert_eq!(prune(&mut c, u64::MAX / 2).await.unwrap(), 0);
    }
}
