//! Media files: a station's references to content-addressed blobs, with their tags. The blobs
//! themselves are the media store's (the `media` module); these queries say which hashes are still
//! referenced and how many bytes a tenant holds (its files plus their renditions' estimate).

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{MediaFile, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, station_id, sha256, size_bytes, rendition_bytes, filename, \
    artist, title, album, duration_ms, codec, bitrate_kbps, art_sha256, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<MediaFile, sqlx::Error> {
    Ok(MediaFile {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        station_id: row.try_get("station_id")?,
        sha256: row.try_get("sha256")?,
        size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
        rendition_bytes: u64::try_from(row.try_get::<i64, _>("rendition_bytes")?).unwrap_or(0),
        filename: row.try_get("filename")?,
        artist: row.try_get("artist")?,
        title: row.try_get("title")?,
        album: row.try_get("album")?,
        duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
        codec: row.try_get("codec")?,
        bitrate_kbps: u32::try_from(row.try_get::<i64, _>("bitrate_kbps")?).unwrap_or(0),
        art_sha256: row.try_get("art_sha256")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// What `?q=` matches against: lowercased here rather than with SQL `LOWER`, which SQLite
/// applies to ASCII only.
fn search_text(m: &MediaFile) -> String {
    format!("{}\n{}\n{}\n{}", m.artist, m.title, m.album, m.filename).to_lowercase()
}

/// A LIKE pattern matching `q` anywhere, with `%`, `_` and the escape character taken literally.
pub(crate) fn contains_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A station's media file by id.
pub async fn get(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
) -> Result<Option<MediaFile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM media_files WHERE station_id = $1 AND id = $2"
    ));
    let row = sqlx::query(sql)
        .bind(station_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The station's file with this content, if it already has one.
pub async fn find_by_sha256(
    conn: &mut Conn,
    station_id: &str,
    sha256: &str,
) -> Result<Option<MediaFile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM media_files WHERE station_id = $1 AND sha256 = $2"
    ));
    let row = sqlx::query(sql)
        .bind(station_id)
        .bind(sha256)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// A page of a station's files, optionally only those whose tags or name contain `q`.
pub async fn list(
    conn: &mut Conn,
    station_id: &str,
    q: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<MediaFile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM media_files WHERE station_id = $1 AND id > $2 \
         AND ($3 = '' OR search_text LIKE $4 ESCAPE '\\') ORDER BY id LIMIT $5"
    ));
    let rows = sqlx::query(sql)
        .bind(station_id)
        .bind(cursor)
        .bind(q)
        .bind(contains_pattern(q))
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |m| &m.id))
}

/// Bytes the tenant's storage holds, summed over its rows (a file held by two of its stations
/// counts twice: each station could be given away or deleted on its own; so does the same
/// content attached twice): the library's files, their renditions' estimate, and its end users'
/// message attachments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub media_bytes: u64,
    pub rendition_bytes: u64,
    pub attachment_bytes: u64,
}

impl Usage {
    /// What counts against the plan's `storage_bytes`.
    pub fn total(self) -> u64 {
        self.media_bytes
            .saturating_add(self.rendition_bytes)
            .saturating_add(self.attachment_bytes)
    }
}

pub async fn tenant_usage(conn: &mut Conn, tenant_id: &str) -> Result<Usage, sqlx::Error> {
    // The cast: PostgreSQL's SUM of BIGINT is NUMERIC, which the Any driver cannot decode.
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS media, \
         CAST(COALESCE(SUM(rendition_bytes), 0) AS BIGINT) AS renditions, \
         (SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM attachments \
          WHERE tenant_id = $1) AS attachments \
         FROM media_files WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await?;
    let get = |name: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    Ok(Usage {
        media_bytes: get("media")?,
        rendition_bytes: get("renditions")?,
        attachment_bytes: get("attachments")?,
    })
}

/// Kilobits per second of the renditions the edge makes of each file of a station: one per
/// distinct (format, bitrate) of its mounts.
pub fn rendition_kbps(mounts: &[onda_shared::api::Mount]) -> u64 {
    let mut seen: Vec<(&onda_shared::api::AudioFormat, u32)> = Vec::new();
    for m in mounts {
        if !seen.contains(&(&m.format, m.bitrate_kbps)) {
            seen.push((&m.format, m.bitrate_kbps));
        }
    }
    seen.iter().map(|(_, kbps)| u64::from(*kbps)).sum()
}

/// The renditions' bytes of `duration_ms` of audio at `kbps`.
pub fn rendition_bytes(duration_ms: u64, kbps: u64) -> u64 {
    duration_ms.saturating_mul(kbps) / 8
}

/// Re-estimates the renditions of a station's files after its mounts changed.
pub async fn update_renditions(
    conn: &mut Conn,
    station_id: &str,
    kbps: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE media_files SET rendition_bytes = duration_ms * $1 / 8 WHERE station_id = $2",
    )
    .bind(big(kbps))
    .bind(station_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// True while any row of any station or tenant names this content: a media file, or a message
/// attachment (the store holds both).
pub async fn is_referenced(conn: &mut Conn, sha256: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM media_files WHERE sha256 = $1 LIMIT 1")
        .bind(sha256)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some() || super::attachments::is_referenced(conn, sha256).await?)
}

pub async fn insert(conn: &mut Conn, m: &MediaFile) -> Result<MediaFile, sqlx::Error> {
    sqlx::query(
        "INSERT INTO media_files (id, tenant_id, station_id, sha256, size_bytes, filename, \
         artist, title, album, duration_ms, codec, bitrate_kbps, search_text, created_at, \
         updated_at, rendition_bytes, art_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16)",
    )
    .bind(&m.id)
    .bind(&m.tenant_id)
    .bind(&m.station_id)
    .bind(&m.sha256)
    .bind(big(m.size_bytes))
    .bind(&m.filename)
    .bind(&m.artist)
    .bind(&m.title)
    .bind(&m.album)
    .bind(big(m.duration_ms))
    .bind(&m.codec)
    .bind(i64::from(m.bitrate_kbps))
    .bind(search_text(m))
    .bind(now())
    .bind(big(m.rendition_bytes))
    .bind(m.art_sha256.as_deref())
    .execute(&mut *conn)
    .await?;
    get(conn, &m.station_id, &m.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Saves edited tags.
pub async fn update_tags(conn: &mut Conn, m: &MediaFile) -> Result<MediaFile, sqlx::Error> {
    sqlx::query(
        "UPDATE media_files SET artist = $1, title = $2, album = $3, search_text = $4, \
         updated_at = $5 WHERE station_id = $6 AND id = $7",
    )
    .bind(&m.artist)
    .bind(&m.title)
    .bind(&m.album)
    .bind(search_text(m))
    .bind(now())
    .bind(&m.station_id)
    .bind(&m.id)
    .execute(&mut *conn)
    .await?;
    get(conn, &m.station_id, &m.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Deletes a station's file; the content hash it referenced, or None when there was no such
/// file.
pub async fn delete(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let Some(m) = get(conn, station_id, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM media_files WHERE station_id = $1 AND id = $2")
        .bind(station_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if let Some(art) = &m.art_sha256 {
        super::art::remove_if_unreferenced(conn, art).await?;
    }
    Ok(Some(m.sha256))
}

/// Deletes every file of a station (before the station itself) and the station's default
/// picture; the content hashes the files referenced.
pub async fn delete_for_station(
    conn: &mut Conn,
    station_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT sha256 FROM media_files WHERE station_id = $1")
        .bind(station_id)
        .fetch_all(&mut *conn)
        .await?;
    let hashes = rows
        .iter()
        .map(|r| r.try_get("sha256"))
        .collect::<Result<Vec<String>, _>>()?;
    let arts = sqlx::query(
        "SELECT art_sha256 FROM media_files WHERE station_id = $1 AND art_sha256 IS NOT NULL \
         UNION SELECT art_sha256 FROM stations WHERE id = $1 AND art_sha256 IS NOT NULL",
    )
    .bind(station_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("art_sha256"))
    .collect::<Result<Vec<String>, _>>()?;
    sqlx::query("DELETE FROM media_files WHERE station_id = $1")
        .bind(station_id)
        .execute(&mut *conn)
        .await?;
    super::art::set_station_default(conn, station_id, None).await?;
    for art in &arts {
        super::art::remove_if_unreferenced(conn, art).await?;
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renditions_are_one_per_distinct_format_and_bitrate() {
        use onda_shared::api::{AudioFormat, Mount};
        let m = |format, kbps| Mount {
            path: "/x".to_string(),
            format,
            bitrate_kbps: kbps,
        };
        let mounts = [
            m(AudioFormat::Mp3, 128),
            m(AudioFormat::Mp3, 128),
            m(AudioFormat::Aac, 128),
            m(AudioFormat::Mp3, 64),
        ];
        assert_eq!(rendition_kbps(&mounts), 320);
        // 10 h at 64 kbps: the 288 MB of the report.
        assert_eq!(rendition_bytes(36_000_000, 64), 288_000_000);
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("AbC"), "%abc%");
        assert_eq!(contains_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
        assert_eq!(contains_pattern("ÉTÉ"), "%été%");
    }
}
