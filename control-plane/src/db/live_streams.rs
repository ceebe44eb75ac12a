//! Live video streams of tenants.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{LiveStream, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str =
    "id, tenant_id, name, slug, stream_key, access, creator_id, price, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<LiveStream, sqlx::Error> {
    Ok(LiveStream {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        stream_key: row.try_get("stream_key")?,
        access: super::parsed(row, "access")?,
        creator_id: row.try_get("creator_id")?,
        price: row.try_get("price")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// A stream by id, limited to `tenant` when given.
pub async fn get(
    conn: &mut Conn,
    id: &str,
    tenant: Option<&str>,
) -> Result<Option<LiveStream>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM live_streams WHERE id = $1 AND ($2 = '' OR tenant_id = $2)"
    ));
    let row = sqlx::query(sql)
        .bind(id)
        .bind(tenant.unwrap_or(""))
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_slug(conn: &mut Conn, slug: &str) -> Result<Option<LiveStream>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM live_streams WHERE slug = $1"
    ));
    let row = sqlx::query(sql).bind(slug).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Whether the plan of the stream's tenant gives it an ABR ladder.
pub async fn has_renditions(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let ladder: Option<String> = sqlx::query_scalar(
        "SELECT p.live_renditions FROM live_streams l JOIN tenants t ON t.id = l.tenant_id \
         JOIN plans p ON p.id = t.plan_id WHERE l.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(match ladder {
        Some(l) => !super::plans::renditions_from_column("live_renditions", &l)?.is_empty(),
        None => false,
    })
}

pub async fn list(
    conn: &mut Conn,
    tenant: Option<&str>,
    limit: u32,
    cursor: &str,
) -> Result<Page<LiveStream>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM live_streams WHERE id > $1 AND ($2 = '' OR tenant_id = $2) \
         ORDER BY id LIMIT $3"
    ));
    let rows = sqlx::query(sql)
        .bind(cursor)
        .bind(tenant.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |s| &s.id))
}

/// The streams of `tenant` whose creator is `creator_id` (at most 100: a creator has a few).
pub async fn for_creator(
    conn: &mut Conn,
    tenant: &str,
    creator_id: &str,
) -> Result<Vec<LiveStream>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM live_streams WHERE tenant_id = $1 AND creator_id = $2 \
         ORDER BY id LIMIT 100"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant)
        .bind(creator_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn count_for_tenant(conn: &mut Conn, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM live_streams WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await?
        .try_get("n")
}

pub async fn slug_taken(conn: &mut Conn, slug: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT id FROM live_streams WHERE slug = $1")
        .bind(slug)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Inserts a stream with the secret its playback tokens are signed with.
pub async fn insert(
    conn: &mut Conn,
    s: &LiveStream,
    playback_secret: &str,
) -> Result<LiveStream, sqlx::Error> {
    sqlx::query(
        "INSERT INTO live_streams (id, tenant_id, name, slug, stream_key, access, \
         playback_secret, created_at, updated_at, creator_id, price) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.name)
    .bind(&s.slug)
    .bind(&s.stream_key)
    .bind(s.access.as_str())
    .bind(playback_secret)
    .bind(now())
    .bind(&s.creator_id)
    .bind(s.price)
    .execute(&mut *conn)
    .await?;
    // Viewers are metered and billed like listeners, through the owner kept for stations.
    super::stations::record_owner(conn, &s.id, &s.tenant_id).await?;
    get(conn, &s.id, None)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn update(conn: &mut Conn, s: &LiveStream) -> Result<LiveStream, sqlx::Error> {
    sqlx::query(
        "UPDATE live_streams SET name = $1, slug = $2, stream_key = $3, updated_at = $4, \
         access = $6, creator_id = $7, price = $8 WHERE id = $5",
    )
    .bind(&s.name)
    .bind(&s.slug)
    .bind(&s.stream_key)
    .bind(now())
    .bind(&s.id)
    .bind(s.access.as_str())
    .bind(&s.creator_id)
    .bind(s.price)
    .execute(&mut *conn)
    .await?;
    get(conn, &s.id, None)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// The secret a stream's playback tokens are signed with.
pub async fn playback_secret(conn: &mut Conn, id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT playback_secret FROM live_streams WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|r| r.try_get("playback_secret"))
        .transpose()
}

pub async fn delete(conn: &mut Conn, id: &str, tenant: Option<&str>) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM live_streams WHERE id = $1 AND ($2 = '' OR tenant_id = $2)")
            .bind(id)
            .bind(tenant.unwrap_or(""))
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// What the leader places: every stream of an active tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogStream {
    pub id: String,
    pub slug: String,
    pub stream_key: String,
    /// Streams that need a token (every access but public): the playback secret.
    pub playback_secret: Option<String>,
    /// The ABR ladder of the tenant's plan.
    pub renditions: Vec<onda_shared::api::LiveRendition>,
}

pub async fn catalog(conn: &mut Conn) -> Result<Vec<CatalogStream>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.id, l.slug, l.stream_key, l.access, l.playback_secret, p.live_renditions \
         FROM live_streams l JOIN tenants t ON t.id = l.tenant_id \
         JOIN plans p ON p.id = t.plan_id \
         WHERE t.status = 'active' ORDER BY l.id",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CatalogStream {
                id: r.try_get("id")?,
                slug: r.try_get("slug")?,
                stream_key: r.try_get("stream_key")?,
                // The edge enforces tokens on every stream that is not public: subscribers and
                // pay-per-view streams too, so nothing plays past the paywall.
                playback_secret: (r.try_get::<String, _>("access")? != "public")
                    .then(|| r.try_get("playback_secret"))
                    .transpose()?,
                renditions: super::plans::renditions_from_column(
                    "live_renditions",
                    &r.try_get::<String, _>("live_renditions")?,
                )?,
            })
        })
        .collect()
}
