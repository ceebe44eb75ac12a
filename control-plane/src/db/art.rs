//! Cover art: scaled JPEGs kept once per content hash (`cover_art`), named by media files and
//! by stations (their default picture). The pictures are kept in the database, not the media
//! directory, so every replica serves them. A picture nobody names any more is deleted with the
//! last reference ([`remove_if_unreferenced`]).

use super::{Conn, now};
use sqlx::Row as _;

/// The two sizes kept of every picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 500 px on its longer side (or the original, when smaller).
    Large,
    /// 100 px on its longer side.
    Small,
}

impl Size {
    /// From the file name's stem in `/art/{sha256}/{size}.jpg`.
    pub fn parse(s: &str) -> Option<Size> {
        match s {
            "500" => Some(Size::Large),
            "100" => Some(Size::Small),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Size::Large => "large",
            Size::Small => "small",
        }
    }
}

/// Stores a picture unless its hash is stored already.
pub async fn put(
    conn: &mut Conn,
    sha256: &str,
    large: &[u8],
    small: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cover_art (sha256, large, small, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(large)
    .bind(small)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

/// One size of a stored picture.
pub async fn get(
    conn: &mut Conn,
    sha256: &str,
    size: Size,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let sql = format!(
        "SELECT {} AS jpeg FROM cover_art WHERE sha256 = $1",
        size.column()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sha256)
        .fetch_optional(conn)
        .await?;
    row.map(|r| r.try_get::<Vec<u8>, _>("jpeg")).transpose()
}

/// Deletes a picture that no media file and no station names any more.
pub async fn remove_if_unreferenced(conn: &mut Conn, sha256: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM cover_art WHERE sha256 = $1 \
         AND NOT EXISTS (SELECT 1 FROM media_files WHERE art_sha256 = $1) \
         AND NOT EXISTS (SELECT 1 FROM stations WHERE art_sha256 = $1)",
    )
    .bind(sha256)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets (or with `None` clears) a station's default picture; the picture it named before.
pub async fn set_station_default(
    conn: &mut Conn,
    station_id: &str,
    sha256: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    let before = sqlx::query("SELECT art_sha256 FROM stations WHERE id = $1")
        .bind(station_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get::<Option<String>, _>("art_sha256"))
        .transpose()?
        .flatten();
    sqlx::query("UPDATE stations SET art_sha256 = $1 WHERE id = $2")
        .bind(sha256)
        .bind(station_id)
        .execute(conn)
        .await?;
    Ok(before)
}

/// The pictures of a station's media files with these content hashes: (media hash, art hash).
pub async fn of_media(
    conn: &mut Conn,
    station_id: &str,
    media: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if media.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (0..media.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT sha256, art_sha256 FROM media_files WHERE station_id = $1 \
         AND art_sha256 IS NOT NULL AND sha256 IN ({})",
        marks.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(station_id);
    for m in media {
        q = q.bind(*m);
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("sha256")?, r.try_get("art_sha256")?)))
        .collect()
}
