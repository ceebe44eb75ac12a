//! The control plane's database: a pool over SQLite (embedded default) or PostgreSQL, chosen by
//! URL, with the embedded migrations applied at connect. One set of portable SQL serves both
//! backends through sqlx's Any driver; each submodule owns the queries of one resource.
//!
//! SQLite runs in WAL mode and its write transactions take the lock at once
//! (`BEGIN IMMEDIATE`, see [`Db::begin`]); a plan limit that counts rows is checked after
//! `tenants::lock` in the writing transaction. Lists are keyset pages over ids ([`paginate`]).
//! A domain value or a label column that does not decode ([`parsed`], [`labels`]) is an error
//! naming the column, never a default.

pub mod art;
pub mod attachments;
pub mod billing;
pub mod calls;
pub mod carriage;
pub mod cluster;
pub mod history;
pub mod keys;
pub mod ledger;
pub mod live_streams;
pub mod media;
pub mod messages;
pub mod moderation;
pub mod nodes;
pub mod notifications;
pub mod payouts;
pub mod plans;
pub mod playlists;
pub mod presence;
pub mod realtime_feed;
pub mod realtime_usage;
pub mod requests;
pub mod signing_keys;
pub mod stations;
pub mod stream_chat;
pub mod stream_sessions;
pub mod streamers;
pub mod subscriptions;
pub mod tenant_history;
pub mod tenants;
pub mod tips;
pub mod usage;
pub mod users;
pub mod webhooks;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Transaction};
use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// The migrations, embedded in the binary, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "panel", include_str!("../../migrations/0001_panel.sql")),
    (
        2,
        "cluster",
        include_str!("../../migrations/0002_cluster.sql"),
    ),
    (3, "media", include_str!("../../migrations/0003_media.sql")),
    (
        4,
        "song history",
        include_str!("../../migrations/0004_song_history.sql"),
    ),
    (
        5,
        "streamers",
        include_str!("../../migrations/0005_streamers.sql"),
    ),
    (
        6,
        "playlists",
        include_str!("../../migrations/0006_playlists.sql"),
    ),
    (7, "usage", include_str!("../../migrations/0007_usage.sql")),
    (
        8,
        "billing",
        include_str!("../../migrations/0008_billing.sql"),
    ),
    (
        9,
        "live streams",
        include_str!("../../migrations/0009_live_streams.sql"),
    ),
    (
        10,
        "live renditions",
        include_str!("../../migrations/0010_live_renditions.sql"),
    ),
    (
        11,
        "carriage",
        include_str!("../../migrations/0011_carriage.sql"),
    ),
    (
        12,
        "rendition storage",
        include_str!("../../migrations/0012_rendition_storage.sql"),
    ),
    (
        13,
        "usage overlap",
        include_str!("../../migrations/0013_usage_overlap.sql"),
    ),
    (14, "users", include_str!("../../migrations/0014_users.sql")),
    (
        15,
        "messaging",
        include_str!("../../migrations/0015_messaging.sql"),
    ),
    (
        17,
        "webhooks",
        include_str!("../../migrations/0017_webhooks.sql"),
    ),
    (
        18,
        "presence",
        include_str!("../../migrations/0018_presence.sql"),
    ),
    (
        19,
        "moderation",
        include_str!("../../migrations/0019_moderation.sql"),
    ),
    (
        20,
        "plan messaging",
        include_str!("../../migrations/0020_plan_messaging.sql"),
    ),
    (
        21,
        "presence sockets",
        include_str!("../../migrations/0021_presence_sockets.sql"),
    ),
    (
        22,
        "notifications",
        include_str!("../../migrations/0022_notifications.sql"),
    ),
    (
        23,
        "attachments",
        include_str!("../../migrations/0023_attachments.sql"),
    ),
    (
        24,
        "realtime usage",
        include_str!("../../migrations/0024_realtime_usage.sql"),
    ),
    (
        25,
        "realtime feed",
        include_str!("../../migrations/0025_realtime_feed.sql"),
    ),
    (
        26,
        "ledger",
        include_str!("../../migrations/0026_ledger.sql"),
    ),
    (
        27,
        "one managed key",
        include_str!("../../migrations/0027_one_managed_key.sql"),
    ),
    (
        28,
        "realtime usage shards",
        include_str!("../../migrations/0028_realtime_usage_shards.sql"),
    ),
    (
        29,
        "tenant sockets",
        include_str!("../../migrations/0029_tenant_sockets.sql"),
    ),
    (
        30,
        "monetization",
        include_str!("../../migrations/0030_monetization.sql"),
    ),
    (
        31,
        "subscriptions",
        include_str!("../../migrations/0031_subscriptions.sql"),
    ),
    (
        32,
        "stream_chat",
        include_str!("../../migrations/0032_stream_chat.sql"),
    ),
    (
        33,
        "stream sessions",
        include_str!("../../migrations/0033_stream_sessions.sql"),
    ),
    (
        34,
        "transactions_billing",
        include_str!("../../migrations/0034_transactions_billing.sql"),
    ),
    (
        35,
        "ledger_credit_shards",
        include_str!("../../migrations/0035_ledger_credit_shards.sql"),
    ),
    (
        37,
        "unsent_attachments",
        include_str!("../../migrations/0037_unsent_attachments.sql"),
    ),
    (38, "calls", include_str!("../../migrations/0038_calls.sql")),
    (39, "turn", include_str!("../../migrations/0039_turn.sql")),
    (
        40,
        "call_metering",
        include_str!("../../migrations/0040_call_metering.sql"),
    ),
    (
        41,
        "cover_art",
        include_str!("../../migrations/0041_cover_art.sql"),
    ),
    (
        42,
        "song_requests",
        include_str!("../../migrations/0042_song_requests.sql"),
    ),
    (
        43,
        "station_hls_preferred",
        include_str!("../../migrations/0043_station_hls_preferred.sql"),
    ),
    (
        44,
        "turn_usage",
        include_str!("../../migrations/0044_turn_usage.sql"),
    ),
    (
        45,
        "node_turn_last",
        include_str!("../../migrations/0045_node_turn_last.sql"),
    ),
];

impl Db {
    /// Connects (creating a SQLite file if needed) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(url)?;
        let opts = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("invalid database URL {}", redact(&url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            // No ping before each hand-out: it was a round trip per query batch (the realtime
            // benchmark counted it on every message). A connection that died fails its query,
            // which is an error like any other, and the pool drops it.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot connect to database {}", redact(&url)))?;
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while a writer commits; it persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .context("cannot switch SQLite to WAL")?;
        }
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await
            .context("cannot apply database migrations")
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes fails with SQLITE_BUSY instead of
    /// waiting when another writer got in between. PostgreSQL transactions lock rows as they go
    /// (see `tenants::lock`).
    pub async fn begin(&self) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// True when a trivial query answers: what `/readyz` reports.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

use sqlx::SqlSafeStr as _;

/// Accepts `sqlite://path`, `sqlite:path`, `postgres://...` and `postgresql://...`; SQLite
/// files are created when missing.
fn normalize_url(url: &str) -> anyhow::Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if url.contains(":memory:") || url.contains("mode=memory") {
        anyhow::bail!(
            "database URL {url}: in-memory SQLite is not supported (every pooled connection would \
             get its own empty database); use a file such as sqlite://onda.db"
        );
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let mut url = format!("sqlite:{rest}");
        if !rest.contains("mode=") {
            url.push(if rest.contains('?') { '&' } else { '?' });
            url.push_str("mode=rwc");
        }
        return Ok((Backend::Sqlite, url));
    }
    anyhow::bail!(
        "database URL {} is neither sqlite:… nor postgres://…",
        redact(url)
    )
}

/// Hides a password in a URL before it reaches a log or an error.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The VALUES list of a multi-row INSERT: `rows` rows of `cols` bound values each, numbered from
/// `$1`; `row` writes one row from its marks (`($1, $2, 'x')`). Callers keep `rows × cols`
/// within both databases' limits on bound values (SQLite's is 32,766).
pub fn value_rows(rows: usize, cols: usize, row: impl Fn(&[String]) -> String) -> String {
    (0..rows)
        .map(|r| {
            let marks: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            row(&marks)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fresh, migrated SQLite database in a temporary directory, for unit tests: keep the
/// directory as long as the database.
#[cfg(test)]
pub async fn scratch(max_connections: u32) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, max_connections)
        .await
        .expect("a scratch database");
    (dir, db)
}

/// Current time as unix seconds, the representation every table uses.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Current time as unix milliseconds (usage periods).
/// Milliseconds since 1970 as the database stores them (BIGINT).
pub fn now_millis() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

pub fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Unix seconds to RFC 3339 for the API.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What a request that waited in vain for a pooled connection (`sqlx::Error::PoolTimedOut`) is
/// told: overload, not a fault, so the client is asked to try again.
pub const POOL_BUSY: &str = "The server is busy: no database connection became free in time. \
     Send the request again in a moment (with the same Idempotency-Key if it has one).";

/// True when the error is a violated UNIQUE constraint (a name or slug already taken).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Splits `limit + 1` fetched rows into a page and the cursor of the next one.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> &str,
) -> onda_shared::api::Page<T> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    onda_shared::api::Page {
        items: rows,
        next_cursor,
    }
}

/// Connection type every query function takes, so it runs inside or outside a transaction.
pub type Conn = AnyConnection;

/// Labels stored as a JSON object in `column` of `row`. A value that does not decode is an
/// error naming the column (a decode error of the row), never "no labels": for a station that
/// would mean "any node", for a node "matches nothing".
pub fn labels(
    row: &sqlx::any::AnyRow,
    column: &str,
) -> Result<std::collections::BTreeMap<String, String>, sqlx::Error> {
    use sqlx::Row as _;
    let raw: String = row.try_get(column)?;
    serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("{column} is not a JSON object of strings ({e}): {raw:.64}").into(),
    })
}

/// A column holding one of the domain's names (an audio format, a playlist kind, a time
/// "HH:MM"). A value this code did not write is an error naming the column, never a default.
pub fn parsed<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    use sqlx::Row as _;
    parse_column(column, &row.try_get::<String, _>(column)?)
}

/// [`parsed`] of a nullable column.
pub fn parsed_opt<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<T>, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    use sqlx::Row as _;
    row.try_get::<Option<String>, _>(column)?
        .map(|raw| parse_column(column, &raw))
        .transpose()
}

/// `raw`, read from `column`, as a `T`; the error names the column and quotes the value.
pub fn parse_column<T>(column: &str, raw: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("{column}: {e}").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("sqlite://a.db").expect("ok"),
            (Backend::Sqlite, "sqlite://a.db?mode=rwc".into())
        );
        assert_eq!(
            normalize_url("sqlite://a.db?mode=ro").expect("ok").1,
            "sqlite://a.db?mode=ro"
        );
        assert_eq!(
            normalize_url("postgres://u@h/db").expect("ok").0,
            Backend::Postgres
        );
        assert!(normalize_url("mysql://x").is_err());
        assert!(normalize_url("sqlite::memory:").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[tokio::test]
    async fn labels_that_do_not_decode_are_an_error_not_no_labels() {
        let (_dir, db) = super::scratch(1).await;
        let mut c = db.conn().await.expect("conn");
        let row = sqlx::query(r#"SELECT '{"tier": "gold"}' AS good, 'garbage' AS bad"#)
            .fetch_one(&mut *c)
            .await
            .expect("row");
        assert_eq!(
            labels(&row, "good").expect("good"),
            [("tier".to_string(), "gold".to_string())].into()
        );
        let err = labels(&row, "bad").expect_err("bad").to_string();
        assert!(err.contains("bad is not a JSON object"), "{err}");
    }

    #[tokio::test]
    async fn a_domain_name_that_does_not_decode_is_an_error_naming_the_column() {
        use onda_shared::domain::{AudioFormat, PlaylistKind, TimeOfDay};
        let (_dir, db) = super::scratch(1).await;
        let mut c = db.conn().await.expect("conn");
        let row = sqlx::query(
            "SELECT 'aac' AS format, 'flac' AS bad_format, 'station_id' AS kind, \
             '22:00' AS start_time, NULL AS end_time, '25:00' AS bad_time",
        )
        .fetch_one(&mut *c)
        .await
        .expect("row");
        assert_eq!(
            parsed::<AudioFormat>(&row, "format").expect("aac"),
            AudioFormat::Aac
        );
        assert_eq!(
            parsed::<PlaylistKind>(&row, "kind").expect("kind"),
            PlaylistKind::StationId
        );
        assert_eq!(
            parsed_opt::<TimeOfDay>(&row, "start_time").expect("start"),
            TimeOfDay::new(22, 0)
        );
        assert_eq!(
            parsed_opt::<TimeOfDay>(&row, "end_time").expect("end"),
            None
        );
        let err = parsed::<AudioFormat>(&row, "bad_format")
            .expect_err("flac")
            .to_string();
        assert!(
            err.contains(r#"bad_format: "flac" is not an audio format"#),
            "{err}"
        );
        let err = parsed_opt::<TimeOfDay>(&row, "bad_time")
            .expect_err("25:00")
            .to_string();
        assert!(err.contains(r#"bad_time: "25:00" is not a time"#), "{err}");
    }
}
