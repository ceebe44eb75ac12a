//! Edge nodes known to the cluster: created when a node joins, updated from what it advertises
//! on each connection, drained and revoked by the admin. Liveness is not stored here (it is a
//! coordinator lease); `status` records what the leader last saw, for the API.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{Node, NodeStatus, Page};
use onda_shared::cluster::proto::NodeAdvert;
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, name, region, labels, public_url, rtmp_url, capacity_listeners, \
    capacity_mbps, status, last_heartbeat_at, created_at, draining, revoked_at, turn_urls";

/// The `turn_urls` column: a JSON array of URLs, as the node advertised them.
fn turn_urls(row: &AnyRow) -> Result<Vec<String>, sqlx::Error> {
    let raw: String = row.try_get("turn_urls")?;
    serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: "turn_urls".to_string(),
        source: format!("turn_urls is not a JSON array of strings ({e}): {raw:.64}").into(),
    })
}

fn turn_urls_json(urls: &[String]) -> String {
    serde_json::Value::from(urls.to_vec()).to_string()
}

fn from_row(row: &AnyRow) -> Result<Node, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    let draining = row.try_get::<i64, _>("draining")? != 0;
    Ok(Node {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        region: row.try_get("region")?,
        labels: super::labels(row, "labels")?,
        public_url: row.try_get("public_url")?,
        rtmp_url: row.try_get("rtmp_url")?,
        turn_urls: turn_urls(row)?,
        capacity_listeners: u32::try_from(row.try_get::<i64, _>("capacity_listeners")?)
            .unwrap_or(u32::MAX),
        capacity_mbps: u32::try_from(row.try_get::<i64, _>("capacity_mbps")?).unwrap_or(u32::MAX),
        status: if revoked_at.is_some() {
            NodeStatus::Revoked
        } else if draining {
            NodeStatus::Draining
        } else if status == "ready" {
            NodeStatus::Ready
        } else {
            NodeStatus::Unreachable
        },
        last_heartbeat_at: row
            .try_get::<Option<i64>, _>("last_heartbeat_at")?
            .map(rfc3339),
        created_at: rfc3339(row.try_get("created_at")?),
        revoked_at: revoked_at.map(rfc3339),
    })
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Node>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// The node holding the certificate with this fingerprint.
pub async fn by_cert(conn: &mut Conn, sha256: &str) -> Result<Option<Node>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nodes WHERE cert_sha256 = $1"
    ));
    let row = sqlx::query(sql).bind(sha256).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn name_taken(conn: &mut Conn, name: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM nodes WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

pub async fn list(conn: &mut Conn, limit: u32, cursor: &str) -> Result<Page<Node>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nodes WHERE id > $1 ORDER BY id LIMIT $2"
    ));
    let rows = sqlx::query(sql)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |n| &n.id))
}

/// Every node, for the scheduler and the redirector.
pub async fn all(conn: &mut Conn) -> Result<Vec<Node>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM nodes ORDER BY id"));
    let rows = sqlx::query(sql).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub async fn insert(
    conn: &mut Conn,
    id: &str,
    advert: &NodeAdvert,
    cert_sha256: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (id, name, region, labels, public_url, capacity_listeners, \
         capacity_mbps, status, last_heartbeat_at, created_at, cert_sha256, draining, rtmp_url, \
         turn_urls) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'unreachable', NULL, $8, $9, 0, $10, $11)",
    )
    .bind(id)
    .bind(&advert.name)
    .bind(&advert.region)
    .bind(super::stations::labels_json(&advert.labels))
    .bind(&advert.edge_url)
    .bind(clamp(advert.capacity_listeners))
    .bind(clamp(advert.capacity_mbps))
    .bind(now())
    .bind(cert_sha256)
    .bind(&advert.rtmp_url)
    .bind(turn_urls_json(&advert.turn_urls))
    .execute(conn)
    .await?;
    Ok(())
}

/// What a node says about itself on each connection replaces what was stored.
pub async fn update_advert(
    conn: &mut Conn,
    id: &str,
    advert: &NodeAdvert,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE nodes SET region = $1, labels = $2, public_url = $3, capacity_listeners = $4, \
         capacity_mbps = $5, status = 'ready', last_heartbeat_at = $6, rtmp_url = $8, \
         turn_urls = $9, \
         turn_last_ms = CASE WHEN $9 <> '[]' THEN NULL \
             WHEN turn_urls <> '[]' THEN $10 ELSE turn_last_ms END \
         WHERE id = $7",
    )
    .bind(&advert.region)
    .bind(super::stations::labels_json(&advert.labels))
    .bind(&advert.edge_url)
    .bind(clamp(advert.capacity_listeners))
    .bind(clamp(advert.capacity_mbps))
    .bind(now())
    .bind(id)
    .bind(&advert.rtmp_url)
    .bind(turn_urls_json(&advert.turn_urls))
    .bind(clamp(super::now_ms()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a node ran a TURN relay at `at_ms`: it advertises one now, or it stopped advertising
/// one at or after `at_ms` (`turn_last_ms`). None: no such node.
pub async fn ran_turn_at(
    conn: &mut Conn,
    id: &str,
    at_ms: u64,
) -> Result<Option<bool>, sqlx::Error> {
    let row = sqlx::query("SELECT turn_urls, turn_last_ms FROM nodes WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let last: Option<i64> = row.try_get("turn_last_ms")?;
    let stopped_after = last.is_some_and(|l| u64::try_from(l).is_ok_and(|l| l >= at_ms));
    Ok(Some(!turn_urls(&row)?.is_empty() || stopped_after))
}

pub async fn heartbeat(conn: &mut Conn, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE nodes SET status = 'ready', last_heartbeat_at = $1 WHERE id = $2")
        .bind(now())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_status(conn: &mut Conn, id: &str, ready: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE nodes SET status = $1 WHERE id = $2")
        .bind(if ready { "ready" } else { "unreachable" })
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets or clears the drain flag; false when there is no such node.
pub async fn set_draining(conn: &mut Conn, id: &str, draining: bool) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE nodes SET draining = $1 WHERE id = $2")
        .bind(i64::from(draining))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes a node (idempotent); false when there is no such node.
pub async fn revoke(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE nodes SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(get(conn, id).await?.is_some())
}

/// Takes the node's row lock for the rest of the transaction (PostgreSQL; SQLite transactions
/// already hold the write lock), so one node's usage reports are vetted one after another even
/// when they arrive on two connections at once.
pub async fn lock(conn: &mut Conn, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE nodes SET name = name WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
