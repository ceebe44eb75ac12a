//! Usage reports from nodes, stored once per (node, seq), and the aggregates the stats API and
//! billing read: listener usage per station mount (`usage_mounts`) and relayed TURN bytes per
//! tenant (`usage_turn`).

use super::Conn;
use onda_shared::cluster::proto::UsageReport;
use sqlx::Row as _;

/// Most mounts one report may carry (a node carries at most a few thousand station mounts).
pub const MAX_MOUNTS_PER_REPORT: usize = 20_000;

/// Most tenants one report may carry TURN usage of (coturn's `total-quota` allows 1000
/// allocations by default).
pub const MAX_TURN_TENANTS_PER_REPORT: usize = 20_000;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores a report unless this node's `seq` is already stored; true when it was new. Runs in
/// the caller's transaction, so a report is stored whole or not at all.
pub async fn store(
    conn: &mut Conn,
    node_id: &str,
    r: &UsageReport,
    received_at_ms: u64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO usage_reports (node_id, seq, period_start_ms, period_end_ms, received_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id, seq) DO NOTHING",
    )
    .bind(node_id)
    .bind(i(r.seq))
    .bind(i(r.period_start_ms))
    .bind(i(r.period_end_ms))
    .bind(i(received_at_ms))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for m in &r.mounts {
        // The tenant is copied now, and read from `station_owners`, which outlives the station,
        // so usage stays billable after the station is deleted, even when its last report
        // arrives afterwards. Only a station id no control plane ever created stays unowned.
        let tenant: Option<String> =
            sqlx::query("SELECT tenant_id FROM station_owners WHERE station_id = $1")
                .bind(&m.station_id)
                .fetch_optional(&mut *conn)
                .await?
                .map(|row| row.try_get("tenant_id"))
                .transpose()?;
        sqlx::query(
            "INSERT INTO usage_mounts (node_id, seq, station_id, tenant_id, mount, period_start_ms, \
             period_end_ms, listener_ms, peak_listeners, sessions, bytes_sent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (node_id, seq, station_id, mount) DO NOTHING",
        )
        .bind(node_id)
        .bind(i(r.seq))
        .bind(&m.station_id)
        .bind(tenant.unwrap_or_default())
        .bind(&m.mount)
        .bind(i(r.period_start_ms))
        .bind(i(r.period_end_ms))
        .bind(i(m.listener_ms))
        .bind(i(m.peak_listeners))
        .bind(i(m.sessions))
        .bind(i(m.bytes_sent))
        .execute(&mut *conn)
        .await?;
    }
    for t in r.turn.iter().filter(|t| t.relayed_bytes > 0) {
        sqlx::query(
            "INSERT INTO usage_turn (node_id, seq, tenant_id, period_start_ms, period_end_ms, \
             relayed_bytes) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (node_id, seq, tenant_id) DO NOTHING",
        )
        .bind(node_id)
        .bind(i(r.seq))
        .bind(&t.tenant_id)
        .bind(i(r.period_start_ms))
        .bind(i(r.period_end_ms))
        .bind(i(t.relayed_bytes))
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// Which of `tenant_ids` exist or existed (a deleted tenant's last relays are still billed).
/// One query per 500 ids (a report names each tenant once; the chunks keep any report within
/// both databases' limits on bound parameters).
pub async fn known_tenants(
    conn: &mut Conn,
    tenant_ids: impl Iterator<Item = &str>,
) -> Result<std::collections::BTreeSet<String>, sqlx::Error> {
    let ids: std::collections::BTreeSet<&str> = tenant_ids.collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut out = std::collections::BTreeSet::new();
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT tenant_id FROM tenant_history WHERE tenant_id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.insert(row.try_get("tenant_id")?);
        }
    }
    Ok(out)
}

/// The periods of this node's stored TURN usage that overlap `[from, to)`, by tenant, other than
/// those of report `seq` itself (as [`reported_during`]).
pub async fn turn_reported_during(
    conn: &mut Conn,
    node_id: &str,
    seq: u64,
    from_ms: u64,
    to_ms: u64,
) -> Result<std::collections::BTreeMap<String, Vec<(u64, u64)>>, sqlx::Error> {
    const SQL: &str = "SELECT tenant_id, period_start_ms, period_end_ms FROM usage_turn \
         WHERE node_id = $1 AND period_end_ms >= $3 AND period_end_ms <= $5 \
         AND period_start_ms <= $4 AND seq <> $2";
    let rows = overlapping(conn, SQL, node_id, seq, from_ms, to_ms).await?;
    by_key(&rows, |r| r.try_get("tenant_id"))
}

/// A tenant's relayed TURN bytes per UTC day for the reports whose period starts in
/// `[from_ms, to_ms)`, billed or not: (day start, bytes), oldest first.
pub async fn turn_days(
    conn: &mut Conn,
    tenant_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT (period_start_ms / $4) * $4 AS day, CAST(SUM(relayed_bytes) AS BIGINT) AS bytes \
         FROM usage_turn WHERE tenant_id = $1 AND period_start_ms >= $2 AND period_start_ms < $3 \
         GROUP BY (period_start_ms / $4) * $4 ORDER BY day",
    )
    .bind(tenant_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(crate::billing::DAY_MS)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, r.try_get("bytes")?)))
        .collect()
}

/// The periods of this node's stored usage that overlap `[from, to)`, by (station, mount), other
/// than those of report `seq` itself (a resend is a duplicate, not an overlap).
pub async fn reported_during(
    conn: &mut Conn,
    node_id: &str,
    seq: u64,
    from_ms: u64,
    to_ms: u64,
) -> Result<std::collections::BTreeMap<(String, String), Vec<(u64, u64)>>, sqlx::Error> {
    const SQL: &str = "SELECT station_id, mount, period_start_ms, period_end_ms FROM usage_mounts \
         WHERE node_id = $1 AND period_end_ms >= $3 AND period_end_ms <= $5 \
         AND period_start_ms <= $4 AND seq <> $2";
    let rows = overlapping(conn, SQL, node_id, seq, from_ms, to_ms).await?;
    by_key(&rows, |r| {
        Ok((r.try_get("station_id")?, r.try_get("mount")?))
    })
}

/// The rows `sql` selects of a node's stored periods overlapping `[from, to)` other than those
/// of report `seq` (its binds: node, seq, from, to, and the latest end a stored period that
/// starts before `to` may have). `<=` and `>=` so a zero-length period at an instant a stored
/// period holds is found too; stored periods are at most MAX_USAGE_PERIOD_MS long, which bounds
/// the range of their ends the index is read over.
async fn overlapping(
    conn: &mut Conn,
    sql: &'static str,
    node_id: &str,
    seq: u64,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(node_id)
        .bind(i(seq))
        .bind(i(from_ms))
        .bind(i(to_ms))
        .bind(i(to_ms.saturating_add(
            onda_shared::cluster::proto::MAX_USAGE_PERIOD_MS,
        )))
        .fetch_all(&mut *conn)
        .await
}

/// Each row's (period_start_ms, period_end_ms), gathered under the key `key` reads of it.
fn by_key<K: Ord>(
    rows: &[sqlx::any::AnyRow],
    key: impl Fn(&sqlx::any::AnyRow) -> Result<K, sqlx::Error>,
) -> Result<std::collections::BTreeMap<K, Vec<(u64, u64)>>, sqlx::Error> {
    let mut out: std::collections::BTreeMap<K, Vec<(u64, u64)>> = std::collections::BTreeMap::new();
    for r in rows {
        let start: i64 = r.try_get("period_start_ms")?;
        let end: i64 = r.try_get("period_end_ms")?;
        out.entry(key(r)?).or_default().push((
            u64::try_from(start).unwrap_or(0),
            u64::try_from(end).unwrap_or(0),
        ));
    }
    Ok(out)
}

/// One bucket of a station's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Unix milliseconds where the bucket starts.
    pub start_ms: i64,
    pub listener_ms: i64,
    pub sessions: i64,
    pub bytes_sent: i64,
    /// Most listeners at once: per report slot, the sum over nodes and mounts; then the most
    /// over the bucket's slots.
    pub peak_listeners: i64,
}

/// Reports of different nodes are compared at this granularity for the peak.
const SLOT_MS: i64 = 10_000;

/// A station's usage in [from, to) in buckets of `bucket_ms` (aligned to the Unix epoch, so
/// hours and days in UTC), by the start of each report's period.
pub async fn buckets(
    conn: &mut Conn,
    station_id: &str,
    from_ms: i64,
    to_ms: i64,
    bucket_ms: i64,
) -> Result<Vec<Bucket>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT (period_start_ms / $4) * $4 AS bucket, CAST(SUM(listener_ms) AS BIGINT) AS listener_ms, \
         CAST(SUM(sessions) AS BIGINT) AS sessions, CAST(SUM(bytes_sent) AS BIGINT) AS bytes_sent \
         FROM usage_mounts \
         WHERE station_id = $1 AND period_start_ms >= $2 AND period_start_ms < $3 \
         GROUP BY (period_start_ms / $4) * $4 ORDER BY bucket",
    )
    .bind(station_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(bucket_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Bucket> = rows
        .iter()
        .map(|r| {
            Ok(Bucket {
                start_ms: r.try_get("bucket")?,
                listener_ms: r.try_get("listener_ms")?,
                sessions: r.try_get("sessions")?,
                bytes_sent: r.try_get("bytes_sent")?,
                peak_listeners: 0,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let peaks = sqlx::query(
        "SELECT bucket, CAST(MAX(slot_peak) AS BIGINT) AS peak FROM (SELECT (period_start_ms / $4) * $4 AS bucket, \
         period_start_ms / $5 AS slot, CAST(SUM(peak_listeners) AS BIGINT) AS slot_peak FROM usage_mounts \
         WHERE station_id = $1 AND period_start_ms >= $2 AND period_start_ms < $3 \
         GROUP BY (period_start_ms / $4) * $4, period_start_ms / $5) AS slots GROUP BY bucket",
    )
    .bind(station_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(bucket_ms)
    .bind(SLOT_MS)
    .fetch_all(&mut *conn)
    .await?;
    for r in &peaks {
        let bucket: i64 = r.try_get("bucket")?;
        let peak: i64 = r.try_get("peak")?;
        if let Some(b) = out.iter_mut().find(|b| b.start_ms == bucket) {
            b.peak_listeners = peak;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_tenants_are_those_with_history_in_any_chunk() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.expect("conn");
        for (id, at) in [("ten_a", 1), ("ten_a", 2), ("ten_z", 1)] {
            sqlx::query(
                "INSERT INTO tenant_history (tenant_id, at_ms, plan_id, status, name) \
                 VALUES ($1, $2, 'free', 'active', 'x')",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *c)
            .await
            .expect("insert");
        }
        // 1,200 names (more than two chunks), one of them twice, two known.
        let mut ids: Vec<String> = (0..1200).map(|i| format!("ten_{i:04}")).collect();
        ids.extend(["ten_a".to_string(), "ten_a".to_string()]);
        ids.insert(700, "ten_z".to_string());
        let known = known_tenants(&mut c, ids.iter().map(String::as_str))
            .await
            .expect("query");
        assert_eq!(
            known.into_iter().collect::<Vec<_>>(),
            ["ten_a".to_string(), "ten_z".to_string()]
        );
        let none = known_tenants(&mut c, std::iter::empty())
            .await
            .expect("empty");
        assert!(none.is_empty());
    }
}
