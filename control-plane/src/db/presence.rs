//! Which replica each connected end user is on, and each replica's heartbeat: presence over
//! every control-plane replica, and the sweep of replicas that died without saying so.
//!
//! Beside the presence rows each replica keeps one socket count per tenant
//! (`realtime_tenant_sockets`), changed with them, so the handshake's check of the plan's
//! `max_realtime_connections` reads one row per replica whatever the number of users.

use super::Conn;
use sqlx::Row as _;

/// Records that the replica is alive at `now_ms`.
pub async fn heartbeat(conn: &mut Conn, replica: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO realtime_replicas (id, heartbeat_ms) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_ms = $2",
    )
    .bind(replica)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a replica other than `replica` beat at or after `alive_since_ms`.
pub async fn others_alive(
    conn: &mut Conn,
    replica: &str,
    alive_since_ms: i64,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM realtime_replicas WHERE id <> $1 AND heartbeat_ms >= $2",
    )
    .bind(replica)
    .bind(alive_since_ms)
    .fetch_one(conn)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// One more socket of the user on `replica`.
pub async fn join(
    conn: &mut Conn,
    replica: &str,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO realtime_presence (replica_id, tenant_id, user_id, sockets) \
         VALUES ($1, $2, $3, 1) ON CONFLICT (tenant_id, user_id, replica_id) \
         DO UPDATE SET sockets = realtime_presence.sockets + 1",
    )
    .bind(replica)
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    count_tenant(conn, replica, tenant_id, 1).await
}

/// Adds `delta` to the tenant's socket count on `replica` (see migration 0029).
async fn count_tenant(
    conn: &mut Conn,
    replica: &str,
    tenant_id: &str,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO realtime_tenant_sockets (tenant_id, replica_id, sockets) \
         VALUES ($1, $2, $3) ON CONFLICT (tenant_id, replica_id) \
         DO UPDATE SET sockets = realtime_tenant_sockets.sockets + excluded.sockets",
    )
    .bind(tenant_id)
    .bind(replica)
    .bind(delta)
    .execute(conn)
    .await?;
    Ok(())
}

/// One socket of the user on `replica` fewer. The count may go below zero for a moment when a
/// disconnect is handled before its connect; only rows above zero count as online.
pub async fn leave(
    conn: &mut Conn,
    replica: &str,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO realtime_presence (replica_id, tenant_id, user_id, sockets) \
         VALUES ($1, $2, $3, -1) ON CONFLICT (tenant_id, user_id, replica_id) \
         DO UPDATE SET sockets = realtime_presence.sockets - 1",
    )
    .bind(replica)
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM realtime_presence WHERE replica_id = $1 AND tenant_id = $2 \
         AND user_id = $3 AND sockets = 0",
    )
    .bind(replica)
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    count_tenant(conn, replica, tenant_id, -1).await
}

/// SQL counting the user's presence rows on replicas that heartbeat at or after `alive_since`
/// (more than zero: online). The arguments are SQL expressions: parameters or columns.
pub fn live_presence_count(tenant: &str, user: &str, alive_since: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM realtime_presence p JOIN realtime_replicas r \
         ON r.id = p.replica_id WHERE p.tenant_id = {tenant} AND p.user_id = {user} \
         AND p.sockets > 0 AND r.heartbeat_ms >= {alive_since})"
    )
}

/// Whether the user is connected to a replica that heartbeat at or after `alive_since_ms`.
pub async fn online(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    alive_since_ms: i64,
) -> Result<bool, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {} AS n",
        live_presence_count("$1", "$2", "$3")
    ));
    let row = sqlx::query(sql)
        .bind(tenant_id)
        .bind(user_id)
        .bind(alive_since_ms)
        .fetch_one(conn)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Sockets of the tenant's users on replicas that heartbeat at or after `alive_since_ms`: what
/// the plan's `max_realtime_connections` limits.
pub async fn tenant_sockets(
    conn: &mut Conn,
    tenant_id: &str,
    alive_since_ms: i64,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(t.sockets), 0) AS BIGINT) AS n \
         FROM realtime_tenant_sockets t JOIN realtime_replicas r ON r.id = t.replica_id \
         WHERE t.tenant_id = $1 AND t.sockets > 0 AND r.heartbeat_ms >= $2",
    )
    .bind(tenant_id)
    .bind(alive_since_ms)
    .fetch_one(conn)
    .await?;
    row.try_get("n")
}

/// Removes replicas whose last heartbeat is older than `dead_before_ms` and their presence rows;
/// returns the (tenant, user) pairs whose rows were removed. Each row is removed by exactly one
/// sweeper (DELETE … RETURNING), so each loss is announced once.
pub async fn sweep(
    conn: &mut Conn,
    dead_before_ms: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let dead: Vec<String> =
        sqlx::query("DELETE FROM realtime_replicas WHERE heartbeat_ms < $1 RETURNING id")
            .bind(dead_before_ms)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
    let mut gone = Vec::new();
    for replica in dead {
        let rows = sqlx::query(
            "DELETE FROM realtime_presence WHERE replica_id = $1 RETURNING tenant_id, user_id",
        )
        .bind(&replica)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            gone.push((r.try_get("tenant_id")?, r.try_get("user_id")?));
        }
        sqlx::query("DELETE FROM realtime_tenant_sockets WHERE replica_id = $1")
            .bind(&replica)
            .execute(&mut *conn)
            .await?;
    }
    Ok(gone)
}

/// Forgets a replica that is stopping (its sockets are already gone).
pub async fn retire(conn: &mut Conn, replica: &str) -> Result<(), sqlx::Error> {
    for table in ["realtime_presence", "realtime_tenant_sockets"] {
        let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE replica_id = $1"));
        sqlx::query(sql).bind(replica).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM realtime_replicas WHERE id = $1")
        .bind(replica)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_replica_is_swept_once_and_its_users_listed() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.expect("conn");
        heartbeat(&mut c, "old", 1_000).await.expect("beat");
        heartbeat(&mut c, "live", 9_000).await.expect("beat");
        join(&mut c, "old", "t", "ana").await.expect("join");
        join(&mut c, "old", "t", "bo").await.expect("join");
        // A disconnect handled before its connect: the count ends where it should.
        leave(&mut c, "live", "t", "bo").await.expect("leave");
        join(&mut c, "live", "t", "bo").await.expect("join");
        assert!(!online(&mut c, "t", "bo", 5_000).await.expect("q"));
        join(&mut c, "live", "t", "bo").await.expect("join");
        assert!(!online(&mut c, "t", "ana", 5_000).await.expect("q"));
        assert!(online(&mut c, "t", "ana", 500).await.expect("q"));
        assert!(online(&mut c, "t", "bo", 5_000).await.expect("q"));
        // Only live replicas' sockets count against the tenant's limit.
        assert_eq!(tenant_sockets(&mut c, "t", 5_000).await.expect("q"), 1);
        assert_eq!(tenant_sockets(&mut c, "t", 500).await.expect("q"), 3);
        assert_eq!(tenant_sockets(&mut c, "t2", 0).await.expect("q"), 0);

        let mut gone = sweep(&mut c, 5_000).await.expect("sweep");
        gone.sort();
        assert_eq!(
            gone,
            [
                ("t".to_string(), "ana".to_string()),
                ("t".to_string(), "bo".to_string())
            ]
        );
        // A second sweeper finds nothing: each loss is announced once.
        assert!(sweep(&mut c, 5_000).await.expect("sweep").is_empty());
        // bo is still on the live replica; ana nowhere.
        assert!(online(&mut c, "t", "bo", 5_000).await.expect("q"));
        assert!(!online(&mut c, "t", "ana", 0).await.expect("q"));
        leave(&mut c, "live", "t", "bo").await.expect("leave");
        assert!(!online(&mut c, "t", "bo", 0).await.expect("q"));
        retire(&mut c, "live").await.expect("retire");
        assert!(sweep(&mut c, i64::MAX).await.expect("sweep").is_empty());
    }
}
