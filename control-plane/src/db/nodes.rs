//! Edge nodes known to the cluster. Registration arrives with the cluster (QUIC join); until
//! then the table is only read.

use super::{Conn, paginate, rfc3339};
use onda_shared::api::{Node, NodeStatus, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, name, region, labels, public_url, capacity_listeners, capacity_mbps, \
    status, last_heartbeat_at, created_at";

fn from_row(row: &AnyRow) -> Result<Node, sqlx::Error> {
    let labels: String = row.try_get("labels")?;
    let status: String = row.try_get("status")?;
    Ok(Node {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        region: row.try_get("region")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        public_url: row.try_get("public_url")?,
        capacity_listeners: u32::try_from(row.try_get::<i64, _>("capacity_listeners")?)
            .unwrap_or(0),
        capacity_mbps: u32::try_from(row.try_get::<i64, _>("capacity_mbps")?).unwrap_or(0),
        status: match status.as_str() {
            "ready" => NodeStatus::Ready,
            "draining" => NodeStatus::Draining,
            _ => NodeStatus::Unreachable,
        },
        last_heartbeat_at: row
            .try_get::<Option<i64>, _>("last_heartbeat_at")?
            .map(rfc3339),
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Node>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
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
