//! Message attachments: an end user's uploaded media, a reference to a content-addressed blob of
//! the media store (as `media_files` rows are), with what the upload's check measured. The row's
//! id is the capability its URL carries (`/v1/attachments/{id}`).

use super::Conn;
use onda_shared::api::{Attachment, MediaType};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, user_id, sha256, media_type, content_type, size_bytes, \
                       width, height, duration_ms";

/// The path an attachment is served at, which is also its URL in messages.
pub const URL_PREFIX: &str = "/v1/attachments/";

/// An attachment as stored: the wire type plus whose it is and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub tenant_id: String,
    pub user_id: String,
    pub sha256: String,
    pub attachment: Attachment,
}

/// The path of attachment `id` on the API's origin (how the rows are read back; messages are
/// matched to their attachment by it, whatever origin their `mediaUrl` has).
pub fn url(id: &str) -> String {
    format!("{URL_PREFIX}{id}")
}

/// The URL of attachment `id` that clients are given: absolute on `public_url`
/// (`http.public_url`, without its trailing `/`) when it is set, else the path.
pub fn public_url(public_url: Option<&str>, id: &str) -> String {
    format!("{}{URL_PREFIX}{id}", public_url.unwrap_or_default())
}

/// The attachment id a URL names: `/v1/attachments/{id}`, or that path on any origin and under
/// any path prefix (the `url` given when `http.public_url` is set, or a client's own
/// resolution of the path). None for anything else (a query, a fragment, more path after it).
pub fn id_in(url: &str) -> Option<&str> {
    let path = match url.find("://") {
        // An absolute URL: its path counts, which may have a prefix (a proxy's).
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            let path = &rest[rest.find('/')?..];
            &path[path.rfind(URL_PREFIX)?..]
        }
        None => url,
    };
    let id = path.strip_prefix(URL_PREFIX)?;
    crate::secrets::is_attachment_id(id).then_some(id)
}

/// A LIKE pattern matching any URL of attachment `id` (see [`id_in`]): ending with its path,
/// wildcard characters of the id taken literally.
fn any_url_of(id: &str) -> String {
    let mut p = String::from("%");
    for c in format!("{URL_PREFIX}{id}").chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// A column that must fit its type: a value this code did not write is an error naming the
/// column, never a default.
fn decode_err(column: &str, what: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: what.into(),
    }
}

fn opt_u32(row: &AnyRow, column: &str) -> Result<Option<u32>, sqlx::Error> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|v| u32::try_from(v).map_err(|e| decode_err(column, format!("{v}: {e}"))))
        .transpose()
}

fn from_row(row: &AnyRow) -> Result<Stored, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let media_type: String = row.try_get("media_type")?;
    let size: i64 = row.try_get("size_bytes")?;
    Ok(Stored {
        tenant_id: row.try_get("tenant_id")?,
        user_id: row.try_get("user_id")?,
        sha256: row.try_get("sha256")?,
        attachment: Attachment {
            url: url(&id),
            media_type: MediaType::parse(&media_type).ok_or_else(|| {
                decode_err("media_type", format!("{media_type:?} is no media type"))
            })?,
            content_type: row.try_get("content_type")?,
            bytes: u64::try_from(size).map_err(|e| decode_err("size_bytes", e.to_string()))?,
            width: opt_u32(row, "width")?,
            height: opt_u32(row, "height")?,
            duration_ms: row
                .try_get::<Option<i64>, _>("duration_ms")?
                .map(|v| u64::try_from(v).map_err(|e| decode_err("duration_ms", e.to_string())))
                .transpose()?,
            id,
        },
    })
}

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores a checked upload. Run it under the media store's reference lock (see
/// `MediaStore::lock_refs`), before the blob is placed.
pub async fn insert(conn: &mut Conn, a: &Stored, created_ms: i64) -> Result<(), sqlx::Error> {
    let m = &a.attachment;
    sqlx::query(
        "INSERT INTO attachments (id, tenant_id, user_id, sha256, media_type, content_type, \
         size_bytes, width, height, duration_ms, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&m.id)
    .bind(&a.tenant_id)
    .bind(&a.user_id)
    .bind(&a.sha256)
    .bind(m.media_type.as_str())
    .bind(&m.content_type)
    .bind(big(m.bytes))
    .bind(m.width.map(i64::from))
    .bind(m.height.map(i64::from))
    .bind(m.duration_ms.map(big))
    .bind(created_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attachment with this id, whoever's it is (the id is the capability).
pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Stored>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM attachments WHERE id = $1"));
    sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Marks attachment `id` of its uploader (`tenant_id`, `user_id`) sent (the first send's time
/// stays), in the transaction of the message that carries it, so the sweep of unsent
/// attachments ([`delete_unsent`]) never removes it once that commits, and a send racing the
/// sweep either keeps it or finds it gone. False when there is no such attachment (any more).
pub async fn mark_sent(
    conn: &mut Conn,
    id: &str,
    tenant_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE attachments SET sent_ms = COALESCE(sent_ms, $4) \
         WHERE id = $1 AND tenant_id = $2 AND user_id = $3",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes up to `limit` attachments that no message ever carried and that were uploaded before
/// `before_ms`; returns the hash of each one's content (for the caller to remove the blobs no
/// row names any more, after the commit).
///
/// One conditional statement: on PostgreSQL a row a send marked meanwhile ([`mark_sent`]) is
/// waited for and, once that send commits, re-checked on its new version (`sent_ms` is set) and
/// kept; a row the sweep deleted first is not found by the send, which refuses the message. On
/// SQLite writers run one at a time. The conditions stand outside the subquery (which only
/// bounds the batch) so that the re-check sees them.
pub async fn delete_unsent(
    conn: &mut Conn,
    before_ms: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "DELETE FROM attachments WHERE sent_ms IS NULL AND created_ms < $1 AND id IN \
         (SELECT id FROM attachments WHERE sent_ms IS NULL AND created_ms < $1 \
          ORDER BY created_ms LIMIT $2) \
         RETURNING sha256",
    )
    .bind(before_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("sha256")).collect()
}

/// True while an attachment names this content.
pub async fn is_referenced(conn: &mut Conn, sha256: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM attachments WHERE sha256 = $1 LIMIT 1")
        .bind(sha256)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Deletes the attachment at `url` unless a message that is not deleted still carries it (the
/// same upload may be sent twice, also under another `http.public_url`). Returns the hash of its
/// content when a row went, so the caller can remove the blob after the commit.
pub async fn delete_unless_sent(
    conn: &mut Conn,
    tenant_id: &str,
    url: &str,
) -> Result<Option<String>, sqlx::Error> {
    let Some(id) = id_in(url) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "DELETE FROM attachments WHERE id = $1 AND tenant_id = $2 AND NOT EXISTS \
         (SELECT 1 FROM messages WHERE tenant_id = $2 AND media_url LIKE $3 ESCAPE '\\' \
          AND deleted_ms IS NULL) \
         RETURNING sha256",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(any_url_of(id))
    .fetch_optional(conn)
    .await?;
    row.map(|r| r.try_get("sha256")).transpose()
}

/// Removes every attachment of a tenant (it is being deleted); returns the hashes of their
/// contents, for the caller to remove the blobs no one references after the commit.
pub async fn delete_tenant(conn: &mut Conn, tenant_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("DELETE FROM attachments WHERE tenant_id = $1 RETURNING sha256")
        .bind(tenant_id)
        .fetch_all(conn)
        .await?;
    let mut hashes = rows
        .iter()
        .map(|r| r.try_get("sha256"))
        .collect::<Result<Vec<String>, _>>()?;
    hashes.sort();
    hashes.dedup();
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_an_attachment_on_any_origin_name_it() {
        let id = "att_0123456789abcdefABCDEF0123456789";
        assert_eq!(public_url(None, id), format!("/v1/attachments/{id}"));
        let base = Some("https://panel.example.com/onda");
        let absolute = public_url(base, id);
        assert_eq!(
            absolute,
            format!("https://panel.example.com/onda/v1/attachments/{id}")
        );
        for url in [url(id), absolute, format!("http://x/v1/attachments/{id}")] {
            assert_eq!(id_in(&url), Some(id), "{url}");
        }
        for bad in [
            format!("/v1/attachments/{id}?a=1"),
            format!("/v1/attachments/{id}/x"),
            format!("/prefix/v1/attachments/{id}"),
            format!("https://x{URL_PREFIX}"),
            "https://x".to_string(),
        ] {
            assert_eq!(id_in(&bad), None, "{bad}");
        }
        assert_eq!(any_url_of("att_a%b"), "%/v1/attachments/att\\_a\\%b");
    }
}
