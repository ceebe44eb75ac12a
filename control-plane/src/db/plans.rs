//! Plans: what a tenant may use and what it pays.

use super::{Conn, now, paginate, rfc3339};
use onda_shared::api::{
    AudioFormat, LiveRendition, Page, Plan, PlanFeatures, PlanLimits, PlanPrices,
};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, name, description, max_stations, max_mounts_per_station, \
    allowed_formats, max_bitrate_kbps, max_listeners_per_station, storage_bytes, max_live_streams, \
    feature_autodj, feature_scheduling, feature_hls, feature_live_video, currency, monthly_micros, \
    overage_per_gb_micros, overage_per_listener_hour_micros, included_gb, included_listener_hours, \
    live_renditions, feature_messaging, attachment_bytes, max_realtime_connections, \
    included_connection_minutes, overage_per_1000_connection_minutes_micros, included_messages, \
    overage_per_1000_messages_micros, feature_monetization, feature_live_chat, \
    included_transactions, overage_per_1000_transactions_micros, feature_calls, \
    included_call_minutes, overage_per_1000_call_minutes_micros, feature_requests, \
    included_turn_gb, overage_per_turn_gb_micros, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Plan, sqlx::Error> {
    let u32_col = |name: &str| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    let u64_col = |name: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    let flag = |name: &str| -> Result<bool, sqlx::Error> { Ok(row.try_get::<i64, _>(name)? != 0) };
    let formats: String = row.try_get("allowed_formats")?;
    Ok(Plan {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        limits: PlanLimits {
            max_stations: u32_col("max_stations")?,
            max_mounts_per_station: u32_col("max_mounts_per_station")?,
            allowed_formats: formats
                .split(',')
                .filter(|f| !f.is_empty())
                .map(|f| super::parse_column("allowed_formats", f))
                .collect::<Result<_, _>>()?,
            max_bitrate_kbps: u32_col("max_bitrate_kbps")?,
            max_listeners_per_station: u32_col("max_listeners_per_station")?,
            storage_bytes: u64_col("storage_bytes")?,
            max_live_streams: u32_col("max_live_streams")?,
            live_renditions: renditions_from_column(
                "live_renditions",
                &row.try_get::<String, _>("live_renditions")?,
            )?,
            attachment_bytes: u64_col("attachment_bytes")?,
            max_realtime_connections: u32_col("max_realtime_connections")?,
        },
        features: PlanFeatures {
            autodj: flag("feature_autodj")?,
            scheduling: flag("feature_scheduling")?,
            hls: flag("feature_hls")?,
            live_video: flag("feature_live_video")?,
            messaging: flag("feature_messaging")?,
            monetization: flag("feature_monetization")?,
            live_chat: flag("feature_live_chat")?,
            calls: flag("feature_calls")?,
            requests: flag("feature_requests")?,
        },
        prices: PlanPrices {
            currency: row.try_get("currency")?,
            monthly_micros: u64_col("monthly_micros")?,
            overage_per_gb_micros: u64_col("overage_per_gb_micros")?,
            overage_per_listener_hour_micros: u64_col("overage_per_listener_hour_micros")?,
            included_gb: u64_col("included_gb")?,
            included_listener_hours: u64_col("included_listener_hours")?,
            included_connection_minutes: u64_col("included_connection_minutes")?,
            overage_per_1000_connection_minutes_micros: u64_col(
                "overage_per_1000_connection_minutes_micros",
            )?,
            included_messages: u64_col("included_messages")?,
            overage_per_1000_messages_micros: u64_col("overage_per_1000_messages_micros")?,
            included_transactions: u64_col("included_transactions")?,
            overage_per_1000_transactions_micros: u64_col("overage_per_1000_transactions_micros")?,
            included_call_minutes: u64_col("included_call_minutes")?,
            overage_per_1000_call_minutes_micros: u64_col("overage_per_1000_call_minutes_micros")?,
            included_turn_gb: u64_col("included_turn_gb")?,
            overage_per_turn_gb_micros: u64_col("overage_per_turn_gb_micros")?,
        },
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

fn formats_column(formats: &[AudioFormat]) -> String {
    formats
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The ladder, kept as JSON in `column`. A value this code did not write is an error naming the
/// column, never "no ladder": that would quietly take a plan's ABR renditions away.
pub fn renditions_from_column(column: &str, raw: &str) -> Result<Vec<LiveRendition>, sqlx::Error> {
    serde_json::from_str(raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("{column} is not a JSON list of renditions ({e}): {raw:.64}").into(),
    })
}

/// Saturating conversion: limits are validated before they get here, and SQL BIGINT is signed.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Plan>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM plans WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(conn: &mut Conn, limit: u32, cursor: &str) -> Result<Page<Plan>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM plans WHERE id > $1 ORDER BY id LIMIT $2"
    ));
    let rows = sqlx::query(sql)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let plans = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(plans, limit, |p| &p.id))
}

/// Inserts `plan` (a new id).
pub async fn insert(conn: &mut Conn, plan: &Plan) -> Result<Plan, sqlx::Error> {
    save(conn, plan, INSERT).await
}

/// Replaces all fields of the plan with `plan`'s id.
pub async fn update(conn: &mut Conn, plan: &Plan) -> Result<Plan, sqlx::Error> {
    save(conn, plan, UPDATE).await
}

/// Both statements bind the same parameters, in the same order.
const INSERT: &str = "INSERT INTO plans (name, description, max_stations, max_mounts_per_station, \
         allowed_formats, max_bitrate_kbps, max_listeners_per_station, storage_bytes, \
         max_live_streams, feature_autodj, feature_scheduling, feature_hls, feature_live_video, \
         currency, monthly_micros, overage_per_gb_micros, overage_per_listener_hour_micros, \
         included_gb, included_listener_hours, updated_at, id, live_renditions, feature_messaging, \
         attachment_bytes, max_realtime_connections, included_connection_minutes, \
         overage_per_1000_connection_minutes_micros, included_messages, \
         overage_per_1000_messages_micros, feature_monetization, feature_live_chat, \
         included_transactions, overage_per_1000_transactions_micros, feature_calls, \
         included_call_minutes, overage_per_1000_call_minutes_micros, feature_requests, \
         included_turn_gb, overage_per_turn_gb_micros, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, \
         $37, $38, $39, $20)";
const UPDATE: &str = "UPDATE plans SET name = $1, description = $2, max_stations = $3, \
         max_mounts_per_station = $4, allowed_formats = $5, max_bitrate_kbps = $6, \
         max_listeners_per_station = $7, storage_bytes = $8, max_live_streams = $9, \
         feature_autodj = $10, feature_scheduling = $11, feature_hls = $12, \
         feature_live_video = $13, currency = $14, monthly_micros = $15, \
         overage_per_gb_micros = $16, overage_per_listener_hour_micros = $17, included_gb = $18, \
         included_listener_hours = $19, updated_at = $20, live_renditions = $22, \
         feature_messaging = $23, attachment_bytes = $24, max_realtime_connections = $25, \
         included_connection_minutes = $26, overage_per_1000_connection_minutes_micros = $27, \
         included_messages = $28, overage_per_1000_messages_micros = $29, \
         feature_monetization = $30, feature_live_chat = $31, included_transactions = $32, \
         overage_per_1000_transactions_micros = $33, feature_calls = $34, \
         included_call_minutes = $35, overage_per_1000_call_minutes_micros = $36, \
         feature_requests = $37, included_turn_gb = $38, overage_per_turn_gb_micros = $39 \
         WHERE id = $21";

async fn save(conn: &mut Conn, plan: &Plan, sql: &'static str) -> Result<Plan, sqlx::Error> {
    let ts = now();
    let l = &plan.limits;
    let f = &plan.features;
    let p = &plan.prices;
    sqlx::query(sql)
        .bind(&plan.name)
        .bind(&plan.description)
        .bind(i64::from(l.max_stations))
        .bind(i64::from(l.max_mounts_per_station))
        .bind(formats_column(&l.allowed_formats))
        .bind(i64::from(l.max_bitrate_kbps))
        .bind(i64::from(l.max_listeners_per_station))
        .bind(big(l.storage_bytes))
        .bind(i64::from(l.max_live_streams))
        .bind(i64::from(f.autodj))
        .bind(i64::from(f.scheduling))
        .bind(i64::from(f.hls))
        .bind(i64::from(f.live_video))
        .bind(&p.currency)
        .bind(big(p.monthly_micros))
        .bind(big(p.overage_per_gb_micros))
        .bind(big(p.overage_per_listener_hour_micros))
        .bind(big(p.included_gb))
        .bind(big(p.included_listener_hours))
        .bind(ts)
        .bind(&plan.id)
        .bind(serde_json::to_string(&l.live_renditions).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(f.messaging))
        .bind(big(l.attachment_bytes))
        .bind(i64::from(l.max_realtime_connections))
        .bind(big(p.included_connection_minutes))
        .bind(big(p.overage_per_1000_connection_minutes_micros))
        .bind(big(p.included_messages))
        .bind(big(p.overage_per_1000_messages_micros))
        .bind(i64::from(f.monetization))
        .bind(i64::from(f.live_chat))
        .bind(big(p.included_transactions))
        .bind(big(p.overage_per_1000_transactions_micros))
        .bind(i64::from(f.calls))
        .bind(big(p.included_call_minutes))
        .bind(big(p.overage_per_1000_call_minutes_micros))
        .bind(i64::from(f.requests))
        .bind(big(p.included_turn_gb))
        .bind(big(p.overage_per_turn_gb_micros))
        .execute(&mut *conn)
        .await?;
    get(conn, &plan.id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Takes the plan's row lock for the rest of the transaction; false when there is no such plan.
pub async fn lock(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE plans SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How many tenants are or were on the plan: a plan in use, or in a tenant's history (which
/// billing prices), cannot be deleted.
pub async fn tenant_count(conn: &mut Conn, id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(DISTINCT tenant_id) AS n FROM (SELECT id AS tenant_id FROM tenants \
         WHERE plan_id = $1 UNION SELECT tenant_id FROM tenant_history WHERE plan_id = $1) AS t",
    )
    .bind(id)
    .fetch_one(conn)
    .await?
    .try_get("n")
}

pub async fn delete(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM plans WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ladder_that_does_not_decode_is_an_error_naming_the_column() {
        assert_eq!(
            renditions_from_column("live_renditions", r#"[{"height":720,"video_kbps":2500}]"#)
                .unwrap(),
            [LiveRendition {
                height: 720,
                video_kbps: 2500
            }]
        );
        assert!(
            renditions_from_column("live_renditions", "[]")
                .unwrap()
                .is_empty()
        );
        let err = renditions_from_column("live_renditions", "{720p}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("live_renditions is not a JSON list of renditions"),
            "{err}"
        );
        assert!(err.contains("{720p}"), "{err}");
    }

    /// A plan, and the live streams of its tenants, whose stored ladder does not decode fail
    /// to read, instead of reading as "no ladder".
    #[tokio::test]
    async fn a_corrupt_ladder_fails_the_reads_of_its_plan_and_streams() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.unwrap();
        for sql in [
            "INSERT INTO tenants (id, name, email, plan_id, status, created_at, updated_at) \
             VALUES ('t1', 'T1', 't1@example.com', 'plan_basic', 'active', 0, 0)",
            "INSERT INTO live_streams (id, tenant_id, name, slug, stream_key, access, \
             playback_secret, created_at, updated_at) \
             VALUES ('ls1', 't1', 'Live', 'live', 'key', 'public', '', 0, 0)",
        ] {
            sqlx::query(sql).execute(&mut *c).await.unwrap();
        }
        assert!(get(&mut c, "plan_basic").await.unwrap().is_some());
        assert!(
            !super::super::live_streams::has_renditions(&mut c, "ls1")
                .await
                .unwrap()
        );
        sqlx::query("UPDATE plans SET live_renditions = 'not json' WHERE id = 'plan_basic'")
            .execute(&mut *c)
            .await
            .unwrap();
        let errors = [
            get(&mut c, "plan_basic").await.map(|_| ()).unwrap_err(),
            list(&mut c, 100, "").await.map(|_| ()).unwrap_err(),
            super::super::live_streams::has_renditions(&mut c, "ls1")
                .await
                .map(|_| ())
                .unwrap_err(),
            super::super::live_streams::catalog(&mut c)
                .await
                .map(|_| ())
                .unwrap_err(),
        ];
        for e in errors {
            assert!(
                matches!(&e, sqlx::Error::ColumnDecode { index, .. } if index == "live_renditions"),
                "{e:?}"
            );
            assert!(e.to_string().contains("not json"), "{e}");
        }
    }
}
