//! AutoDJ playlists (with their ordered media items) and per-station AutoDJ settings, plus the
//! one query the leader needs to turn them into what a node plays.

use super::{Conn, now, paginate, parsed, parsed_opt, rfc3339};
use onda_shared::api::{AutoDjSettings, Page, Playlist};
use onda_shared::domain::TimeZoneName;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

const COLUMNS: &str = "id, station_id, name, kind, play_order, weight, days, start_time, \
    end_time, every_songs, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Playlist, sqlx::Error> {
    let days: String = row.try_get("days")?;
    Ok(Playlist {
        id: row.try_get("id")?,
        station_id: row.try_get("station_id")?,
        name: row.try_get("name")?,
        kind: parsed(row, "kind")?,
        order: parsed(row, "play_order")?,
        weight: u32::try_from(row.try_get::<i64, _>("weight")?).unwrap_or(1),
        days: days_from_column("days", &days)?,
        start: parsed_opt(row, "start_time")?,
        end: parsed_opt(row, "end_time")?,
        every_songs: row
            .try_get::<Option<i64>, _>("every_songs")?
            .and_then(|v| u32::try_from(v).ok()),
        media_ids: Vec::new(),
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// ISO weekdays (1 = Monday … 7 = Sunday) kept comma-separated in `column`. A value this code
/// did not write is an error naming the column, never a day left out: a scheduled playlist
/// with no day left would play every day.
fn days_from_column(column: &str, raw: &str) -> Result<Vec<u8>, sqlx::Error> {
    raw.split(',')
        .filter(|d| !d.is_empty())
        .map(|d| match d.parse::<u8>() {
            Ok(day) if (1..=7).contains(&day) => Ok(day),
            Ok(day) => Err(format!("{day} is not an ISO weekday")),
            Err(e) => Err(format!("{d:?}: {e}")),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: format!("{column} is not a list of ISO weekdays ({e}): {raw:.64}").into(),
        })
}

/// The playlist's media ids in order (files deleted since are left out).
async fn items(conn: &mut Conn, playlist_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.media_id FROM playlist_items i JOIN media_files m ON m.id = i.media_id \
         WHERE i.playlist_id = $1 ORDER BY i.position",
    )
    .bind(playlist_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("media_id")).collect()
}

pub async fn get(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
) -> Result<Option<Playlist>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM playlists WHERE station_id = $1 AND id = $2"
    ));
    let Some(row) = sqlx::query(sql)
        .bind(station_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut p = from_row(&row)?;
    p.media_ids = items(conn, &p.id).await?;
    Ok(Some(p))
}

pub async fn list(
    conn: &mut Conn,
    station_id: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<Playlist>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM playlists WHERE station_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(station_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut p = from_row(r)?;
        p.media_ids = items(conn, &p.id).await?;
        out.push(p);
    }
    Ok(paginate(out, limit, |p| &p.id))
}

/// Inserts or replaces a playlist and its items (`insert` false: the row exists).
pub async fn save(conn: &mut Conn, p: &Playlist, insert: bool) -> Result<(), sqlx::Error> {
    let ts = now();
    let days = p
        .days
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sql = if insert {
        "INSERT INTO playlists (name, kind, play_order, weight, days, start_time, end_time, \
         every_songs, updated_at, station_id, id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9)"
    } else {
        "UPDATE playlists SET name = $1, kind = $2, play_order = $3, weight = $4, days = $5, \
         start_time = $6, end_time = $7, every_songs = $8, updated_at = $9 \
         WHERE station_id = $10 AND id = $11"
    };
    sqlx::query(sql)
        .bind(&p.name)
        .bind(p.kind.as_str())
        .bind(p.order.as_str())
        .bind(i64::from(p.weight))
        .bind(days)
        .bind(p.start.map(|t| t.to_string()))
        .bind(p.end.map(|t| t.to_string()))
        .bind(p.every_songs.map(i64::from))
        .bind(ts)
        .bind(&p.station_id)
        .bind(&p.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM playlist_items WHERE playlist_id = $1")
        .bind(&p.id)
        .execute(&mut *conn)
        .await?;
    for (i, media) in p.media_ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO playlist_items (playlist_id, position, media_id) VALUES ($1, $2, $3)",
        )
        .bind(&p.id)
        .bind(i64::try_from(i).unwrap_or(i64::MAX))
        .bind(media)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn delete(conn: &mut Conn, station_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM playlists WHERE station_id = $1 AND id = $2")
        .bind(station_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM playlist_items WHERE playlist_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes a station's playlists and settings (the station is being deleted).
pub async fn delete_for_station(conn: &mut Conn, station_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM playlist_items WHERE playlist_id IN \
         (SELECT id FROM playlists WHERE station_id = $1)",
    )
    .bind(station_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM playlists WHERE station_id = $1")
        .bind(station_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM station_autodj WHERE station_id = $1")
        .bind(station_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The station's AutoDJ settings (defaults when it has none stored).
pub async fn settings(conn: &mut Conn, station_id: &str) -> Result<AutoDjSettings, sqlx::Error> {
    let row =
        sqlx::query("SELECT timezone, crossfade_ms FROM station_autodj WHERE station_id = $1")
            .bind(station_id)
            .fetch_optional(conn)
            .await?;
    row.as_ref()
        .map_or_else(|| Ok(default_settings()), settings_from_row)
}

fn default_settings() -> AutoDjSettings {
    AutoDjSettings {
        timezone: TimeZoneName::utc(),
        crossfade_ms: 0,
    }
}

fn settings_from_row(r: &AnyRow) -> Result<AutoDjSettings, sqlx::Error> {
    Ok(AutoDjSettings {
        timezone: TimeZoneName::new(r.try_get::<String, _>("timezone")?),
        crossfade_ms: u32::try_from(r.try_get::<i64, _>("crossfade_ms")?).unwrap_or(0),
    })
}

pub async fn set_settings(
    conn: &mut Conn,
    station_id: &str,
    s: &AutoDjSettings,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO station_autodj (station_id, timezone, crossfade_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (station_id) DO UPDATE SET timezone = $2, crossfade_ms = $3",
    )
    .bind(station_id)
    .bind(s.timezone.as_str())
    .bind(i64::from(s.crossfade_ms))
    .execute(conn)
    .await?;
    Ok(())
}

/// A media file as the AutoDJ needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRow {
    pub media_id: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub artist: String,
    pub title: String,
    pub duration_ms: u64,
}

/// Everything the leader turns into AutoDJ specs: per station, its media files (in upload
/// order), its playlists with their items, and its settings.
#[derive(Debug, Default)]
pub struct AutoDjCatalog {
    pub media: BTreeMap<String, Vec<TrackRow>>,
    pub playlists: BTreeMap<String, Vec<Playlist>>,
    pub settings: BTreeMap<String, AutoDjSettings>,
}

pub async fn autodj_catalog(conn: &mut Conn) -> Result<AutoDjCatalog, sqlx::Error> {
    let mut cat = AutoDjCatalog::default();
    let rows = sqlx::query(
        "SELECT id, station_id, sha256, size_bytes, artist, title, duration_ms FROM media_files \
         ORDER BY station_id, created_at, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let station: String = r.try_get("station_id")?;
        cat.media.entry(station).or_default().push(TrackRow {
            media_id: r.try_get("id")?,
            sha256: r.try_get("sha256")?,
            size_bytes: u64::try_from(r.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
            artist: r.try_get("artist")?,
            title: r.try_get("title")?,
            duration_ms: u64::try_from(r.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
        });
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM playlists ORDER BY station_id, created_at, id"
    ));
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    let mut by_id = BTreeMap::new();
    for r in &rows {
        let p = from_row(r)?;
        by_id.insert(
            p.id.clone(),
            (
                p.station_id.clone(),
                cat.playlists.entry(p.station_id.clone()).or_default().len(),
            ),
        );
        cat.playlists
            .entry(p.station_id.clone())
            .or_default()
            .push(p);
    }
    let items = sqlx::query(
        "SELECT playlist_id, media_id FROM playlist_items ORDER BY playlist_id, position",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in &items {
        let pid: String = r.try_get("playlist_id")?;
        if let Some((station, i)) = by_id.get(&pid)
            && let Some(p) = cat.playlists.get_mut(station).and_then(|v| v.get_mut(*i))
        {
            p.media_ids.push(r.try_get("media_id")?);
        }
    }
    let rows = sqlx::query("SELECT station_id, timezone, crossfade_ms FROM station_autodj")
        .fetch_all(conn)
        .await?;
    for r in &rows {
        cat.settings
            .insert(r.try_get("station_id")?, settings_from_row(r)?);
    }
    Ok(cat)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn days_that_do_not_decode_are_an_error_naming_the_column() {
        assert_eq!(days_from_column("days", "").unwrap(), Vec::<u8>::new());
        assert_eq!(days_from_column("days", "5,6").unwrap(), [5, 6]);
        for raw in ["5,x", "0", "1,8", "mon", "5,,6,256"] {
            let err = days_from_column("days", raw).unwrap_err();
            assert!(
                matches!(&err, sqlx::Error::ColumnDecode { index, .. } if index == "days"),
                "{raw}: {err:?}"
            );
            let err = err.to_string();
            assert!(err.contains("days is not a list of ISO weekdays"), "{err}");
            assert!(err.contains(raw), "{err}");
        }
    }

    /// A scheduled playlist whose stored days do not decode fails to read (its API calls and
    /// the leader's AutoDJ catalog), instead of playing on the days that are left, or every day.
    #[tokio::test]
    async fn corrupt_days_fail_the_reads_of_the_playlist() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.unwrap();
        sqlx::query(
            "INSERT INTO playlists (id, station_id, name, kind, play_order, weight, days, \
             start_time, end_time, every_songs, created_at, updated_at) \
             VALUES ('pl1', 'st1', 'Weekend', 'scheduled', 'shuffle', 1, '6,7', '22:00', \
             '02:00', NULL, 0, 0)",
        )
        .execute(&mut *c)
        .await
        .unwrap();
        assert_eq!(
            get(&mut c, "st1", "pl1").await.unwrap().unwrap().days,
            [6, 7]
        );
        sqlx::query("UPDATE playlists SET days = '6,Sun' WHERE id = 'pl1'")
            .execute(&mut *c)
            .await
            .unwrap();
        let errors = [
            get(&mut c, "st1", "pl1").await.map(|_| ()).unwrap_err(),
            list(&mut c, "st1", 100, "").await.map(|_| ()).unwrap_err(),
            autodj_catalog(&mut c).await.map(|_| ()).unwrap_err(),
        ];
        for e in errors {
            assert!(
                matches!(&e, sqlx::Error::ColumnDecode { index, .. } if index == "days"),
                "{e:?}"
            );
            assert!(e.to_string().contains("6,Sun"), "{e}");
        }
    }
}
