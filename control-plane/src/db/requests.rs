//! Song requests: the station's requestable library, the queue and its record
//! (`song_requests`), and what the request rules read (`crate::requests`).
//!
//! A track is requestable when it is in the station's library and not only a jingle or a
//! station ID (a file all of whose playlists are `interval` or `station_id` ones).

use super::{Conn, parsed, rfc3339};
use crate::requests::Recent;
use onda_shared::api::{Page, RequestState, SongRequest};
use onda_shared::cluster::proto::{RequestSpec, TrackSpec};
use sqlx::Row as _;
use std::collections::BTreeMap;

/// A media file a listener may request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requestable {
    pub media_id: String,
    pub sha256: String,
    pub artist: String,
    pub title: String,
    pub album: String,
    /// Its cover picture, else the station's default one (content hashes).
    pub art_sha256: Option<String>,
}

/// The file's picture, else its station's default one.
const ART: &str = "COALESCE(m.art_sha256, (SELECT s.art_sha256 FROM stations s \
     WHERE s.id = m.station_id)) AS art";

/// The SQL condition (over `media_files m`) that makes a file requestable.
const REQUESTABLE: &str = "(NOT EXISTS (SELECT 1 FROM playlist_items i JOIN playlists p \
     ON p.id = i.playlist_id WHERE i.media_id = m.id AND p.kind IN ('interval', 'station_id')) \
     OR EXISTS (SELECT 1 FROM playlist_items i JOIN playlists p ON p.id = i.playlist_id \
     WHERE i.media_id = m.id AND p.kind IN ('rotation', 'scheduled')))";

fn requestable_row(r: &sqlx::any::AnyRow) -> Result<Requestable, sqlx::Error> {
    Ok(Requestable {
        media_id: r.try_get("id")?,
        sha256: r.try_get("sha256")?,
        artist: r.try_get("artist")?,
        title: r.try_get("title")?,
        album: r.try_get("album")?,
        art_sha256: r.try_get("art")?,
    })
}

/// One page (1-based) of the station's requestable files matching `q` (empty: all), by artist
/// and title, and how many match in all.
pub async fn requestable(
    conn: &mut Conn,
    station_id: &str,
    q: &str,
    page: u32,
    per_page: u32,
) -> Result<(Vec<Requestable>, u64), sqlx::Error> {
    let filter = format!(
        "FROM media_files m WHERE m.station_id = $1 AND ($2 = '' OR m.search_text LIKE $3 \
         ESCAPE '\\') AND {REQUESTABLE}"
    );
    let pattern = super::media::contains_pattern(q);
    let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n {filter}"));
    let total: i64 = sqlx::query(count_sql)
        .bind(station_id)
        .bind(q)
        .bind(&pattern)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT m.id, m.sha256, m.artist, m.title, m.album, {ART} {filter} \
         ORDER BY m.artist, m.title, m.id LIMIT $4 OFFSET $5"
    ));
    let rows = sqlx::query(sql)
        .bind(station_id)
        .bind(q)
        .bind(&pattern)
        .bind(i64::from(per_page))
        .bind(i64::from(page.saturating_sub(1)) * i64::from(per_page))
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(requestable_row).collect::<Result<_, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// The station's requestable file `media_id`, if it is one.
pub async fn requestable_one(
    conn: &mut Conn,
    station_id: &str,
    media_id: &str,
) -> Result<Option<Requestable>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT m.id, m.sha256, m.artist, m.title, m.album, {ART} FROM media_files m \
         WHERE m.station_id = $1 AND m.id = $2 AND {REQUESTABLE}"
    ));
    let row = sqlx::query(sql)
        .bind(station_id)
        .bind(media_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(requestable_row).transpose()
}

/// The station's plays and its requests that were not cleared, since `since_ms`.
pub async fn recent(
    conn: &mut Conn,
    station_id: &str,
    since_ms: i64,
) -> Result<Vec<Recent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT media_sha256 AS sha256, artist, started_at_ms AS at_ms FROM song_history \
         WHERE station_id = $1 AND started_at_ms >= $2 AND media_sha256 IS NOT NULL \
         UNION ALL SELECT sha256, artist, requested_at_ms AS at_ms FROM song_requests \
         WHERE station_id = $1 AND requested_at_ms >= $2 AND state <> 'cleared'",
    )
    .bind(station_id)
    .bind(since_ms)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Recent {
                sha256: r.try_get("sha256")?,
                artist: r.try_get("artist")?,
                at_ms: r.try_get("at_ms")?,
            })
        })
        .collect()
}

/// When the listener `client_hash` made requests of the station since `since_ms`.
pub async fn client_times(
    conn: &mut Conn,
    station_id: &str,
    client_hash: &str,
    since_ms: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT requested_at_ms FROM song_requests WHERE station_id = $1 AND client_hash = $2 \
         AND requested_at_ms >= $3",
    )
    .bind(station_id)
    .bind(client_hash)
    .bind(since_ms)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("requested_at_ms")).collect()
}

/// Queues a request of `track` (pending) and answers its id.
pub async fn insert(
    conn: &mut Conn,
    station_id: &str,
    track: &Requestable,
    client_hash: &str,
    at_ms: i64,
) -> Result<String, sqlx::Error> {
    let id = crate::secrets::new_id("req");
    sqlx::query(
        "INSERT INTO song_requests (id, station_id, media_id, sha256, artist, title, \
         client_hash, state, requested_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
    )
    .bind(&id)
    .bind(station_id)
    .bind(&track.media_id)
    .bind(&track.sha256)
    .bind(&track.artist)
    .bind(&track.title)
    .bind(client_hash)
    .bind(at_ms)
    .execute(conn)
    .await?;
    Ok(id)
}

fn request_row(r: &sqlx::any::AnyRow) -> Result<SongRequest, sqlx::Error> {
    let ms_to_rfc = |ms: i64| rfc3339(ms.div_euclid(1000));
    Ok(SongRequest {
        id: r.try_get("id")?,
        station_id: r.try_get("station_id")?,
        media_id: r.try_get("media_id")?,
        artist: r.try_get("artist")?,
        title: r.try_get("title")?,
        state: parsed(r, "state")?,
        requested_at: ms_to_rfc(r.try_get("requested_at_ms")?),
        played_at: r.try_get::<Option<i64>, _>("played_at_ms")?.map(ms_to_rfc),
    })
}

/// Where a page of the newest-first list starts: after this request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor(Option<(i64, String)>);

impl Cursor {
    /// `""` (the first page) or a `next_cursor` this list gave; None for anything else.
    pub fn parse(raw: &str) -> Option<Cursor> {
        if raw.is_empty() {
            return Some(Cursor(None));
        }
        let (ms, id) = raw.split_once('.')?;
        Some(Cursor(Some((ms.parse().ok()?, id.to_string()))))
    }
}

/// The station's requests (in `state`, or all), newest first, a page of at most `limit`.
pub async fn list(
    conn: &mut Conn,
    station_id: &str,
    state: Option<RequestState>,
    cursor: Cursor,
    limit: u32,
) -> Result<Page<SongRequest>, sqlx::Error> {
    let (after_ms, after_id) = cursor.0.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(
        "SELECT id, station_id, media_id, artist, title, state, requested_at_ms, played_at_ms \
         FROM song_requests WHERE station_id = $1 AND ($2 = '' OR state = $2) \
         AND (requested_at_ms < $3 OR (requested_at_ms = $3 AND ($4 = '' OR id < $4))) \
         ORDER BY requested_at_ms DESC, id DESC LIMIT $5",
    )
    .bind(station_id)
    .bind(state.map_or("", RequestState::as_str))
    .bind(after_ms)
    .bind(&after_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    for r in &rows {
        keys.push(format!(
            "{}.{}",
            r.try_get::<i64, _>("requested_at_ms")?,
            r.try_get::<String, _>("id")?
        ));
        items.push(request_row(r)?);
    }
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        keys[limit as usize - 1].clone()
    });
    Ok(Page { items, next_cursor })
}

/// Clears one pending request of the station; false when there is no such pending request.
pub async fn clear(conn: &mut Conn, station_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE song_requests SET state = 'cleared' WHERE station_id = $1 AND id = $2 \
         AND state = 'pending'",
    )
    .bind(station_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Clears the pending requests of a media file (deleted from the library).
pub async fn clear_of_media(
    conn: &mut Conn,
    station_id: &str,
    media_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE song_requests SET state = 'cleared' WHERE station_id = $1 AND media_id = $2 \
         AND state = 'pending'",
    )
    .bind(station_id)
    .bind(media_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many requests of the station wait.
pub async fn pending_count(conn: &mut Conn, station_id: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM song_requests WHERE station_id = $1 AND state = 'pending'",
    )
    .bind(station_id)
    .fetch_one(conn)
    .await?
    .try_get("n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Clears every pending request of the station; how many.
pub async fn clear_pending(conn: &mut Conn, station_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE song_requests SET state = 'cleared' WHERE station_id = $1 AND state = 'pending'",
    )
    .bind(station_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The station's origin reports request `id` playing since `at_ms`: it is played (once; a
/// repeated report changes nothing). False when the station has no such request.
pub async fn mark_played(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let known = sqlx::query("SELECT 1 AS one FROM song_requests WHERE station_id = $1 AND id = $2")
        .bind(station_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if known {
        // A request cleared while the node already had it prepared still played.
        sqlx::query(
            "UPDATE song_requests SET state = 'played', played_at_ms = $3 \
             WHERE station_id = $1 AND id = $2 AND state <> 'played'",
        )
        .bind(station_id)
        .bind(id)
        .bind(at_ms)
        .execute(conn)
        .await?;
    }
    Ok(known)
}

/// Every station's pending requests whose file is still in its library, oldest first, as the
/// station's origin gets them.
pub async fn pending_all(
    conn: &mut Conn,
) -> Result<BTreeMap<String, Vec<RequestSpec>>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.id, r.station_id, m.sha256, m.size_bytes, m.artist, m.title, m.duration_ms \
         FROM song_requests r JOIN media_files m ON m.id = r.media_id AND m.station_id = r.station_id \
         WHERE r.state = 'pending' ORDER BY r.station_id, r.requested_at_ms, r.id",
    )
    .fetch_all(conn)
    .await?;
    let mut out: BTreeMap<String, Vec<RequestSpec>> = BTreeMap::new();
    for r in &rows {
        let spec = RequestSpec {
            request_id: r.try_get("id")?,
            track: TrackSpec {
                sha256: r.try_get("sha256")?,
                size_bytes: u64::try_from(r.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
                artist: r.try_get("artist")?,
                title: r.try_get("title")?,
                duration_ms: u64::try_from(r.try_get::<i64, _>("duration_ms")?).ok(),
                weight: 1,
            },
        };
        out.entry(r.try_get("station_id")?).or_default().push(spec);
    }
    Ok(out)
}

/// Forgets a deleted station's requests.
pub async fn delete_for_station(conn: &mut Conn, station_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM song_requests WHERE station_id = $1")
        .bind(station_id)
        .execute(conn)
        .await?;
    Ok(())
}
