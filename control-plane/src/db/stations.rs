//! Stations and their mounts. A station's mounts are rewritten as a whole with the station.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{Mount, Page, RequestSettings, Station};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, name, slug, description, genre, autodj_enabled, \
    max_listeners, source_password, region, node_labels, requests_enabled, \
    request_track_gap_minutes, request_artist_gap_minutes, request_ip_limit, request_ip_minutes, \
    hls_preferred, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Station, sqlx::Error> {
    Ok(Station {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        description: row.try_get("description")?,
        genre: row.try_get("genre")?,
        autodj_enabled: row.try_get::<i64, _>("autodj_enabled")? != 0,
        max_listeners: u32::try_from(row.try_get::<i64, _>("max_listeners")?).unwrap_or(0),
        mounts: Vec::new(),
        source_password: row.try_get("source_password")?,
        region: row.try_get("region")?,
        node_labels: super::labels(row, "node_labels")?,
        requests: requests_from_row(row)?,
        hls_preferred: row.try_get::<i64, _>("hls_preferred")? != 0,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

fn requests_from_row(row: &AnyRow) -> Result<RequestSettings, sqlx::Error> {
    let minutes = |column: &str| -> Result<u32, sqlx::Error> {
        let v: i64 = row.try_get(column)?;
        u32::try_from(v).map_err(|_| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: format!("{column} is {v}, not a count of minutes or requests").into(),
        })
    };
    Ok(RequestSettings {
        enabled: row.try_get::<i64, _>("requests_enabled")? != 0,
        track_gap_minutes: minutes("request_track_gap_minutes")?,
        artist_gap_minutes: minutes("request_artist_gap_minutes")?,
        per_ip_limit: minutes("request_ip_limit")?,
        per_ip_minutes: minutes("request_ip_minutes")?,
    })
}

/// Writes the station's request settings (beside the rest of its row).
async fn write_requests(conn: &mut Conn, s: &Station) -> Result<(), sqlx::Error> {
    let r = &s.requests;
    sqlx::query(
        "UPDATE stations SET requests_enabled = $1, request_track_gap_minutes = $2, \
         request_artist_gap_minutes = $3, request_ip_limit = $4, request_ip_minutes = $5 \
         WHERE id = $6",
    )
    .bind(i64::from(r.enabled))
    .bind(i64::from(r.track_gap_minutes))
    .bind(i64::from(r.artist_gap_minutes))
    .bind(i64::from(r.per_ip_limit))
    .bind(i64::from(r.per_ip_minutes))
    .bind(&s.id)
    .execute(conn)
    .await?;
    Ok(())
}

pub fn labels_json(labels: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_string())
}

async fn load_mounts(conn: &mut Conn, station: &mut Station) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT path, format, bitrate_kbps FROM mounts WHERE station_id = $1 ORDER BY position",
    )
    .bind(&station.id)
    .fetch_all(conn)
    .await?;
    station.mounts = rows
        .iter()
        .map(|r| {
            Ok(Mount {
                path: r.try_get("path")?,
                format: super::parsed(r, "format")?,
                bitrate_kbps: u32::try_from(r.try_get::<i64, _>("bitrate_kbps")?).unwrap_or(0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(())
}

async fn write_mounts(conn: &mut Conn, station: &Station) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mounts WHERE station_id = $1")
        .bind(&station.id)
        .execute(&mut *conn)
        .await?;
    for (position, m) in station.mounts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO mounts (station_id, position, path, format, bitrate_kbps) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&station.id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&m.path)
        .bind(m.format.as_str())
        .bind(i64::from(m.bitrate_kbps))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A station by id; with `tenant_id`, only if that tenant owns it.
pub async fn get(
    conn: &mut Conn,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<Option<Station>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stations WHERE id = $1 AND ($2 = '' OR tenant_id = $2)"
    ));
    let row = sqlx::query(sql)
        .bind(id)
        .bind(tenant_id.unwrap_or(""))
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut station = from_row(&row)?;
    load_mounts(conn, &mut station).await?;
    Ok(Some(station))
}

/// Stations of one tenant, or of all tenants when `tenant_id` is None.
pub async fn list(
    conn: &mut Conn,
    tenant_id: Option<&str>,
    limit: u32,
    cursor: &str,
) -> Result<Page<Station>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stations WHERE ($1 = '' OR tenant_id = $1) AND id > $2 \
         ORDER BY id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id.unwrap_or(""))
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *conn)
        .await?;
    let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    for s in &mut items {
        load_mounts(conn, s).await?;
    }
    Ok(paginate(items, limit, |s| &s.id))
}

pub async fn count_for_tenant(conn: &mut Conn, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM stations WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await?
        .try_get("n")
}

pub async fn insert(conn: &mut Conn, s: &Station) -> Result<Station, sqlx::Error> {
    sqlx::query(
        "INSERT INTO stations (id, tenant_id, name, slug, description, genre, autodj_enabled, \
         max_listeners, source_password, region, node_labels, hls_preferred, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.name)
    .bind(&s.slug)
    .bind(&s.description)
    .bind(&s.genre)
    .bind(i64::from(s.autodj_enabled))
    .bind(i64::from(s.max_listeners))
    .bind(&s.source_password)
    .bind(&s.region)
    .bind(labels_json(&s.node_labels))
    .bind(i64::from(s.hls_preferred))
    .bind(now())
    .execute(&mut *conn)
    .await?;
    record_owner(conn, &s.id, &s.tenant_id).await?;
    write_requests(conn, s).await?;
    write_mounts(conn, s).await?;
    get(conn, &s.id, None)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn update(conn: &mut Conn, s: &Station) -> Result<Station, sqlx::Error> {
    sqlx::query(
        "UPDATE stations SET name = $1, slug = $2, description = $3, genre = $4, \
         autodj_enabled = $5, max_listeners = $6, source_password = $7, region = $8, \
         node_labels = $9, hls_preferred = $10, updated_at = $11 WHERE id = $12",
    )
    .bind(&s.name)
    .bind(&s.slug)
    .bind(&s.description)
    .bind(&s.genre)
    .bind(i64::from(s.autodj_enabled))
    .bind(i64::from(s.max_listeners))
    .bind(&s.source_password)
    .bind(&s.region)
    .bind(labels_json(&s.node_labels))
    .bind(i64::from(s.hls_preferred))
    .bind(now())
    .bind(&s.id)
    .execute(&mut *conn)
    .await?;
    write_requests(conn, s).await?;
    write_mounts(conn, s).await?;
    get(conn, &s.id, None)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Deletes a station (with `tenant_id`, only if that tenant owns it) and its mounts.
pub async fn delete(
    conn: &mut Conn,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM stations WHERE id = $1 AND ($2 = '' OR tenant_id = $2)")
        .bind(id)
        .bind(tenant_id.unwrap_or(""))
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM mounts WHERE station_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM streamers WHERE station_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    super::playlists::delete_for_station(conn, id).await?;
    super::requests::delete_for_station(conn, id).await?;
    Ok(true)
}

/// The station a public URL names: by slug, or by id.
pub async fn by_slug_or_id(conn: &mut Conn, key: &str) -> Result<Option<Station>, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM stations WHERE slug = $1 OR id = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => get(conn, &r.try_get::<String, _>("id")?, None).await,
        None => Ok(None),
    }
}

pub async fn slug_taken(conn: &mut Conn, slug: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM stations WHERE slug = $1")
        .bind(slug)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Records who owns `id` (a station, or a live stream, metered the same way). The row outlives
/// its object, for usage reports that arrive after it was deleted (billing).
pub async fn record_owner(conn: &mut Conn, id: &str, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO station_owners (station_id, tenant_id) VALUES ($1, $2) \
         ON CONFLICT (station_id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant_id)
    .execute(conn)
    .await?;
    Ok(())
}
