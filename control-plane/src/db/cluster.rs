//! Join tokens, facts every replica must agree on, and the catalogue snapshot the scheduler and
//! the redirector read.

use super::{Conn, now, rfc3339};
use onda_shared::api::JoinTokenInfo;
use onda_shared::domain::AudioFormat;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

fn token_from_row(row: &AnyRow) -> Result<JoinTokenInfo, sqlx::Error> {
    Ok(JoinTokenInfo {
        id: row.try_get("id")?,
        description: row.try_get("description")?,
        created_at: rfc3339(row.try_get("created_at")?),
        expires_at: rfc3339(row.try_get("expires_at")?),
        used_at: row.try_get::<Option<i64>, _>("used_at")?.map(rfc3339),
        node_id: row.try_get("node_id")?,
        token: None,
        command: None,
    })
}

pub async fn insert_token(
    conn: &mut Conn,
    id: &str,
    secret_sha256: &str,
    description: &str,
    ttl_seconds: i64,
) -> Result<JoinTokenInfo, sqlx::Error> {
    let now = now();
    sqlx::query(
        "INSERT INTO join_tokens (id, secret_sha256, description, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(secret_sha256)
    .bind(description)
    .bind(now)
    .bind(now.saturating_add(ttl_seconds))
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query("SELECT * FROM join_tokens WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    token_from_row(&row)
}

pub async fn list_tokens(conn: &mut Conn) -> Result<Vec<JoinTokenInfo>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM join_tokens ORDER BY created_at DESC, id LIMIT 1000")
        .fetch_all(conn)
        .await?;
    rows.iter().map(token_from_row).collect()
}

pub async fn delete_token(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM join_tokens WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Why a token cannot be used, in the words a node operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Used,
    Expired,
}

/// Consumes a token: succeeds once per token, and only before it expires. The conditional
/// UPDATE makes two concurrent joins with one token end with exactly one winner.
pub async fn consume_token(
    conn: &mut Conn,
    id: &str,
    secret_sha256: &str,
    node_id: &str,
) -> Result<Result<(), TokenProblem>, sqlx::Error> {
    let row =
        sqlx::query("SELECT secret_sha256, expires_at, used_at FROM join_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(Err(TokenProblem::Unknown));
    };
    let stored: String = row.try_get("secret_sha256")?;
    if !crate::secrets::constant_time_eq(stored.as_bytes(), secret_sha256.as_bytes()) {
        return Ok(Err(TokenProblem::Unknown));
    }
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        return Ok(Err(TokenProblem::Used));
    }
    let now = now();
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(Err(TokenProblem::Expired));
    }
    let done = sqlx::query(
        "UPDATE join_tokens SET used_at = $1, node_id = $2 WHERE id = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(node_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(TokenProblem::Used)
    })
}

/// The value recorded under `name`, if any.
pub async fn fact(conn: &mut Conn, name: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT value FROM cluster_facts WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("value"))
        .transpose()
}

/// Records `value` under `name`, replacing what was there (in the caller's transaction).
pub async fn put_fact(conn: &mut Conn, name: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM cluster_facts WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO cluster_facts (name, value) VALUES ($1, $2)")
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records `value` under `name` unless another replica did first; returns what is stored.
pub async fn agree_fact(conn: &mut Conn, name: &str, value: &str) -> Result<String, sqlx::Error> {
    let existing = sqlx::query("SELECT value FROM cluster_facts WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = existing {
        return row.try_get("value");
    }
    let inserted = sqlx::query("INSERT INTO cluster_facts (name, value) VALUES ($1, $2)")
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await;
    match inserted {
        Ok(_) => Ok(value.to_string()),
        // Lost a race with another replica: its value stands.
        Err(_) => sqlx::query("SELECT value FROM cluster_facts WHERE name = $1")
            .bind(name)
            .fetch_one(conn)
            .await?
            .try_get("value"),
    }
}

/// A station as the scheduler and the redirector see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogStation {
    pub id: String,
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    pub max_listeners: u64,
    pub source_password: String,
    pub region: String,
    pub node_labels: BTreeMap<String, String>,
    /// (path, format, bitrate kbps)
    pub mounts: Vec<(String, AudioFormat, u32)>,
    /// The tenant is active (suspended tenants' stations go off the air).
    pub active: bool,
    /// The station has the AutoDJ on.
    pub autodj: bool,
    /// The station's default cover picture (`stations.art_sha256`), for now-playing.
    pub art: Option<String>,
    /// Its web player prefers the mounts' HLS.
    pub hls_preferred: bool,
    /// Its plan includes HLS (`features.hls`): its MP3 and AAC mounts are served as HLS too.
    pub hls: bool,
}

pub async fn catalog(conn: &mut Conn) -> Result<Vec<CatalogStation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.id, s.tenant_id, s.slug, s.name, s.max_listeners, s.source_password, s.region, \
         s.node_labels, s.autodj_enabled, s.art_sha256, s.hls_preferred, t.status, p.feature_hls \
         FROM stations s JOIN tenants t ON t.id = s.tenant_id JOIN plans p ON p.id = t.plan_id \
         ORDER BY s.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut stations = Vec::with_capacity(rows.len());
    let mut index = BTreeMap::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        index.insert(id.clone(), stations.len());
        stations.push(CatalogStation {
            id,
            tenant_id: row.try_get("tenant_id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            max_listeners: u64::try_from(row.try_get::<i64, _>("max_listeners")?).unwrap_or(0),
            source_password: row.try_get("source_password")?,
            region: row.try_get("region")?,
            node_labels: super::labels(row, "node_labels")?,
            mounts: Vec::new(),
            active: row.try_get::<String, _>("status")? == "active",
            autodj: row.try_get::<i64, _>("autodj_enabled")? != 0,
            art: row.try_get("art_sha256")?,
            hls_preferred: row.try_get::<i64, _>("hls_preferred")? != 0,
            hls: row.try_get::<i64, _>("feature_hls")? != 0,
        });
    }
    let mounts = sqlx::query(
        "SELECT station_id, path, format, bitrate_kbps FROM mounts ORDER BY station_id, position",
    )
    .fetch_all(conn)
    .await?;
    for m in &mounts {
        let station: String = m.try_get("station_id")?;
        if let Some(&i) = index.get(&station) {
            stations[i].mounts.push((
                m.try_get("path")?,
                super::parsed(m, "format")?,
                u32::try_from(m.try_get::<i64, _>("bitrate_kbps")?).unwrap_or(0),
            ));
        }
    }
    Ok(stations)
}
