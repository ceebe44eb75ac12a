//! Usage statistics of a station (tenant-scoped): listener time, sessions, bytes and peak
//! listeners per hour or day, from the usage reports nodes sent, as JSON or CSV.

use super::AppState;
use super::auth::ReadableStation;
use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::db;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use onda_shared::api::{Problem, StationUsage, UsageBucket, UsageParams, UsageTotal};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest range one request may ask for.
const MAX_RANGE_MS: i64 = 400 * DAY_MS;

fn parse_time(name: &str, v: &str) -> ApiResult<i64> {
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} = {v:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::BadRequest(format!("{name} = {v:?} is out of range")))
}

fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A station's usage per hour or day.
#[utoipa::path(get, path = "/v1/stations/{id}/usage", tag = "stations",
    params(("id" = String, Path, description = "Object id"), UsageParams),
    responses((status = 200, body = StationUsage, description = "JSON, or text/csv with format=csv"),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn station_usage(
    State(st): State<AppState>,
    ReadableStation { station_id, .. }: ReadableStation,
    ApiQuery(q): ApiQuery<UsageParams>,
) -> ApiResult<Response> {
    let (granularity, bucket_ms) = match q.granularity.as_deref().unwrap_or("hour") {
        "hour" => ("hour", HOUR_MS),
        "day" => ("day", DAY_MS),
        other => {
            return Err(ApiError::BadRequest(format!(
                "granularity = {other:?}: use \"hour\" or \"day\""
            )));
        }
    };
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "format = {other:?}: use \"json\" or \"csv\""
            )));
        }
    };
    let to = match &q.to {
        Some(v) => parse_time("to", v)?,
        None => i64::try_from(db::now_ms()).unwrap_or(i64::MAX),
    };
    let from = match &q.from {
        Some(v) => parse_time("from", v)?,
        None => to - DAY_MS,
    };
    if from >= to || to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(format!(
            "from must be before to, and the range at most {} days",
            MAX_RANGE_MS / DAY_MS
        )));
    }
    let rows = {
        let mut c = st.db.conn().await?;
        db::usage::buckets(&mut c, &station_id, from, to, bucket_ms).await?
    };
    let buckets: Vec<UsageBucket> = rows
        .iter()
        .map(|b| UsageBucket {
            start: format_ms(b.start_ms),
            listener_seconds: b.listener_ms as f64 / 1000.0,
            listener_ms: u(b.listener_ms),
            sessions: u(b.sessions),
            bytes_sent: u(b.bytes_sent),
            peak_listeners: u(b.peak_listeners),
        })
        .collect();
    let mut total = UsageTotal::default();
    for b in &buckets {
        total.listener_ms += b.listener_ms;
        total.sessions += b.sessions;
        total.bytes_sent += b.bytes_sent;
        total.peak_listeners = total.peak_listeners.max(b.peak_listeners);
    }
    total.listener_hours = total.listener_ms as f64 / HOUR_MS as f64;
    if csv {
        let mut out = String::from("start,listener_seconds,sessions,bytes_sent,peak_listeners\n");
        for b in &buckets {
            out.push_str(&format!(
                "{},{:.3},{},{},{}\n",
                b.start, b.listener_seconds, b.sessions, b.bytes_sent, b.peak_listeners
            ));
        }
        let name = format!("attachment; filename=\"{station_id}-usage-{granularity}.csv\"");
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, name),
            ],
            out,
        )
            .into_response());
    }
    Ok(Json(StationUsage {
        station_id,
        granularity: granularity.to_string(),
        from: format_ms(from),
        to: format_ms(to),
        buckets,
        total,
    })
    .into_response())
}
