//! Live DJ accounts per station.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{Page, Streamer};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, station_id, username, display_name, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Streamer, sqlx::Error> {
    Ok(Streamer {
        id: row.try_get("id")?,
        station_id: row.try_get("station_id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

pub async fn insert(
    conn: &mut Conn,
    s: &Streamer,
    password_hash: &str,
) -> Result<Streamer, sqlx::Error> {
    let ts = now();
    sqlx::query(
        "INSERT INTO streamers (id, station_id, username, display_name, password_hash, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&s.id)
    .bind(&s.station_id)
    .bind(&s.username)
    .bind(&s.display_name)
    .bind(password_hash)
    .bind(ts)
    .execute(&mut *conn)
    .await?;
    get(conn, &s.station_id, &s.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn get(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
) -> Result<Option<Streamer>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM streamers WHERE station_id = $1 AND id = $2"
    ));
    sqlx::query(sql)
        .bind(station_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list(
    conn: &mut Conn,
    station_id: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<Streamer>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM streamers WHERE station_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(station_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |s| &s.id))
}

pub async fn update(
    conn: &mut Conn,
    station_id: &str,
    id: &str,
    display_name: Option<&str>,
    password_hash: Option<&str>,
) -> Result<Option<Streamer>, sqlx::Error> {
    sqlx::query(
        "UPDATE streamers SET display_name = COALESCE($1, display_name), \
         password_hash = COALESCE($2, password_hash), updated_at = $3 \
         WHERE station_id = $4 AND id = $5",
    )
    .bind(display_name)
    .bind(password_hash)
    .bind(now())
    .bind(station_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, station_id, id).await
}

pub async fn delete(conn: &mut Conn, station_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM streamers WHERE station_id = $1 AND id = $2")
        .bind(station_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// (username, password hash) of every account of every station, for desired states.
pub async fn all_credentials(
    conn: &mut Conn,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT station_id, username, password_hash FROM streamers ORDER BY station_id, username",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("station_id")?,
                r.try_get("username")?,
                r.try_get("password_hash")?,
            ))
        })
        .collect()
}

/// The display name of a station's account, by user name.
pub async fn display_name(
    conn: &mut Conn,
    station_id: &str,
    username: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT display_name FROM streamers WHERE station_id = $1 AND username = $2")
            .bind(station_id)
            .bind(username)
            .fetch_optional(conn)
            .await?;
    row.map(|r| r.try_get("display_name")).transpose()
}
