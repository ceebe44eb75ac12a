//! Song history: every track (or live show) a station's origin node reported playing, and which
//! of them were listeners' requests.

use super::Conn;
use onda_shared::cluster::proto::TrackPlaying;
use sqlx::Row as _;

/// Records a report; a repeat of the same (station, start) is ignored.
pub async fn record(conn: &mut Conn, node_id: &str, t: &TrackPlaying) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO song_history (station_id, started_at_ms, node_id, title, artist, track_title, \
         media_sha256, duration_ms, live, streamer, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (station_id, started_at_ms) DO NOTHING",
    )
    .bind(&t.station_id)
    .bind(i64::try_from(t.started_at_ms).unwrap_or(i64::MAX))
    .bind(node_id)
    .bind(&t.title)
    .bind(&t.artist)
    .bind(&t.track_title)
    .bind(&t.media_sha256)
    .bind(t.duration_ms.and_then(|d| i64::try_from(d).ok()))
    .bind(i64::from(t.live))
    .bind(&t.streamer)
    .bind(&t.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

const COLUMNS: &str = "station_id, started_at_ms, title, artist, track_title, media_sha256, \
    duration_ms, live, streamer, request_id";

fn from_row(r: &sqlx::any::AnyRow) -> Result<TrackPlaying, sqlx::Error> {
    Ok(TrackPlaying {
        station_id: r.try_get("station_id")?,
        started_at_ms: u64::try_from(r.try_get::<i64, _>("started_at_ms")?).unwrap_or(0),
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        track_title: r.try_get("track_title")?,
        media_sha256: r.try_get("media_sha256")?,
        duration_ms: r
            .try_get::<Option<i64>, _>("duration_ms")?
            .and_then(|d| u64::try_from(d).ok()),
        live: r.try_get::<i64, _>("live")? != 0,
        streamer: r.try_get("streamer")?,
        next_title: None,
        request_id: r.try_get("request_id")?,
        next_request_id: None,
    })
}

/// The station's last `limit` entries, newest first.
pub async fn recent(
    conn: &mut Conn,
    station_id: &str,
    limit: u32,
) -> Result<Vec<TrackPlaying>, sqlx::Error> {
    range(conn, station_id, 0, i64::MAX, limit).await
}

/// Entries that started in [from_ms, to_ms), newest first, at most `limit`.
pub async fn range(
    conn: &mut Conn,
    station_id: &str,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> Result<Vec<TrackPlaying>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM song_history WHERE station_id = $1 AND started_at_ms >= $2 \
         AND started_at_ms < $3 ORDER BY started_at_ms DESC LIMIT $4"
    ));
    let rows = sqlx::query(sql)
        .bind(station_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}
