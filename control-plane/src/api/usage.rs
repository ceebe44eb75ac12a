//! Usage statistics of a station (tenant-scoped): listener time, sessions, bytes and peak
//! listeners per hour or day, from the usage reports nodes sent, as JSON or CSV; its listeners
//! right now per mount and node; its song history (JSON or CSV); a tenant's realtime usage per
//! day (its end users' connection time and messages, as billing prices them); and the
//! Prometheus service discovery of the nodes.

use super::AppState;
use super::auth::{Admin, Caller, ReadableStation};
use super::error::{ApiError, ApiResult};
use super::export;
use super::extract::ApiQuery;
use crate::db;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use onda_shared::api::{
    HistoryEntry, HistoryParams, MountListeners, NodeListeners, Problem, RealtimeUsageDay,
    RealtimeUsageParams, SdTargetGroup, StationHistory, StationListeners, StationUsage,
    TenantRealtimeUsage, UsageBucket, UsageParams, UsageTotal,
};
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

/// `from` and `to` of a query: default the last 24 hours, at most `MAX_RANGE_MS` long.
fn time_range(from: Option<&str>, to: Option<&str>) -> ApiResult<(i64, i64)> {
    let to = match to {
        Some(v) => parse_time("to", v)?,
        None => i64::try_from(db::now_ms()).unwrap_or(i64::MAX),
    };
    let from = match from {
        Some(v) => parse_time("from", v)?,
        None => to - DAY_MS,
    };
    if from >= to || to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(format!(
            "from must be before to, and the range at most {} days",
            MAX_RANGE_MS / DAY_MS
        )));
    }
    Ok((from, to))
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

/// What a station played (song history), newest first.
#[utoipa::path(get, path = "/v1/stations/{id}/history", tag = "stations",
    params(("id" = String, Path, description = "Object id"), HistoryParams),
    responses((status = 200, body = StationHistory, description = "JSON, or text/csv with format=csv"),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn station_history(
    State(st): State<AppState>,
    ReadableStation { station_id, .. }: ReadableStation,
    ApiQuery(q): ApiQuery<HistoryParams>,
) -> ApiResult<Response> {
    let csv = export::wants_csv(q.format.as_deref())?;
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 1000, got {limit}."
        )));
    }
    let rows = {
        let mut c = st.db.conn().await?;
        db::history::range(&mut c, &station_id, from, to, limit).await?
    };
    let items: Vec<HistoryEntry> = rows
        .into_iter()
        .map(|t| HistoryEntry {
            started_at: format_ms(i64::try_from(t.started_at_ms).unwrap_or(i64::MAX)),
            started_at_ms: t.started_at_ms,
            duration_ms: t.duration_ms,
            source: if t.live { "live" } else { "autodj" }.to_string(),
            streamer: t.streamer,
            text: t.title,
            artist: t.artist,
            title: t.track_title,
            media_sha256: t.media_sha256,
            request_id: t.request_id,
        })
        .collect();
    if csv {
        let rows = items.iter().map(|h| {
            [
                h.started_at.clone(),
                h.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                h.source.clone(),
                h.streamer.clone(),
                h.artist.clone(),
                h.title.clone(),
                h.text.clone(),
                h.media_sha256.clone().unwrap_or_default(),
            ]
        });
        return export::csv(
            &format!("{station_id}-history.csv"),
            &[
                "started_at",
                "duration_ms",
                "source",
                "streamer",
                "artist",
                "title",
                "text",
                "media_sha256",
            ],
            rows,
        );
    }
    Ok(Json(StationHistory {
        station_id,
        from: format_ms(from),
        to: format_ms(to),
        items,
    })
    .into_response())
}

/// A tenant's end users' realtime usage per UTC day: connection time and messages.
#[utoipa::path(get, path = "/v1/realtime/usage", tag = "billing", params(RealtimeUsageParams),
    responses((status = 200, body = TenantRealtimeUsage),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn realtime_usage(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RealtimeUsageParams>,
) -> ApiResult<Json<TenantRealtimeUsage>> {
    let tenant_id = match (caller.tenant_scope(), q.tenant_id) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(ApiError::NotFound(format!("There is no tenant {asked:?}.")));
        }
        (Some(own), _) => own.to_string(),
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(ApiError::BadRequest(
                "tenant_id is required: name the tenant whose usage to read".to_string(),
            ));
        }
    };
    let to = match q.to.as_deref() {
        Some(v) => parse_time("to", v)?,
        None => i64::try_from(db::now_ms()).unwrap_or(i64::MAX),
    };
    let from = match q.from.as_deref() {
        Some(v) => parse_time("from", v)?,
        None => to - 30 * DAY_MS,
    };
    let from = db::realtime_usage::day_start(from);
    if from >= to || to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(format!(
            "from must be before to, and the range at most {} days",
            MAX_RANGE_MS / DAY_MS
        )));
    }
    let (rows, turn) = {
        let mut c = st.db.conn().await?;
        let rows = db::realtime_usage::days(&mut c, &tenant_id, from, to).await?;
        // Relayed TURN bytes by the day their report's period starts, as billing counts them.
        let turn = db::usage::turn_days(&mut c, &tenant_id, from, to).await?;
        (rows, turn)
    };
    use std::collections::BTreeMap;
    let mut by_day: BTreeMap<i64, RealtimeUsageDay> = BTreeMap::new();
    fn day(by_day: &mut BTreeMap<i64, RealtimeUsageDay>, start: i64) -> &mut RealtimeUsageDay {
        by_day.entry(start).or_insert_with(|| RealtimeUsageDay {
            start: format_ms(start),
            ..RealtimeUsageDay::default()
        })
    }
    for (start, ms, messages, payments, call_ms) in rows {
        let d = day(&mut by_day, start);
        d.connection_ms = u(ms);
        d.connection_minutes = u(ms) as f64 / 60_000.0;
        (d.messages, d.transactions) = (u(messages), u(payments));
        d.call_ms = u(call_ms);
        d.call_minutes = u(call_ms) as f64 / 60_000.0;
    }
    for (start, bytes) in turn {
        day(&mut by_day, start).turn_bytes = u(bytes);
    }
    let days: Vec<RealtimeUsageDay> = by_day.into_values().collect();
    let sum = |f: fn(&RealtimeUsageDay) -> u64| days.iter().map(f).sum::<u64>();
    let total = RealtimeUsageDay {
        start: String::new(),
        connection_ms: sum(|d| d.connection_ms),
        connection_minutes: sum(|d| d.connection_ms) as f64 / 60_000.0,
        messages: sum(|d| d.messages),
        transactions: sum(|d| d.transactions),
        call_ms: sum(|d| d.call_ms),
        call_minutes: sum(|d| d.call_ms) as f64 / 60_000.0,
        turn_bytes: sum(|d| d.turn_bytes),
    };
    Ok(Json(TenantRealtimeUsage {
        tenant_id,
        from: format_ms(from),
        to: format_ms(to),
        days,
        total,
    }))
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
    usage_of(&st, station_id, q).await
}

/// The usage answer for a station or a live stream (its viewers) the caller may read.
pub(super) async fn usage_of(
    st: &AppState,
    station_id: String,
    q: UsageParams,
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
    let csv = export::wants_csv(q.format.as_deref())?;
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
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
        let rows = buckets.iter().map(|b| {
            [
                b.start.clone(),
                format!("{:.3}", b.listener_seconds),
                b.sessions.to_string(),
                b.bytes_sent.to_string(),
                b.peak_listeners.to_string(),
            ]
        });
        return export::csv(
            &format!("{station_id}-usage-{granularity}.csv"),
            &[
                "start",
                "listener_seconds",
                "sessions",
                "bytes_sent",
                "peak_listeners",
            ],
            rows,
        );
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

/// A station's listeners right now, per mount and per node, as the nodes last reported them.
#[utoipa::path(get, path = "/v1/stations/{id}/listeners", tag = "stations",
    params(("id" = String, Path, description = "Object id")),
    responses((status = 200, body = StationListeners), (status = 404, body = Problem)))]
pub async fn station_listeners(
    State(st): State<AppState>,
    ReadableStation { station_id, .. }: ReadableStation,
) -> ApiResult<Json<StationListeners>> {
    let mut out = StationListeners {
        station_id: station_id.clone(),
        listeners: 0,
        mounts: Vec::new(),
        nodes: Vec::new(),
    };
    let Some(cluster) = &st.cluster else {
        return Ok(Json(out));
    };
    let snap = cluster.view.get();
    let (Some(station), Some(placement)) = (
        snap.station(&station_id),
        snap.placement.stations.get(&station_id),
    ) else {
        return Ok(Json(out));
    };
    let prefix = format!("/{}", station.slug);
    let roles = std::iter::once((&placement.origin, "origin"))
        .chain(placement.relays.iter().map(|r| (r, "relay")))
        .chain(placement.leaving.iter().map(|l| (l, "leaving")));
    let mut by_mount: std::collections::BTreeMap<String, u64> = Default::default();
    for (node_id, role) in roles {
        let Some(node) = snap.nodes.get(node_id) else {
            continue;
        };
        let mounts: Vec<MountListeners> = node
            .mounts
            .iter()
            .filter(|m| m.station_id == station_id)
            .map(|m| MountListeners {
                mount: m.path.strip_prefix(&prefix).unwrap_or(&m.path).to_string(),
                listeners: m.listeners,
            })
            .collect();
        let total: u64 = mounts.iter().map(|m| m.listeners).sum();
        for m in &mounts {
            *by_mount.entry(m.mount.clone()).or_default() += m.listeners;
        }
        out.listeners += total;
        out.nodes.push(NodeListeners {
            node_id: node_id.clone(),
            name: node.name.clone(),
            role: role.to_string(),
            listeners: total,
            mounts,
        });
    }
    out.mounts = by_mount
        .into_iter()
        .map(|(mount, listeners)| MountListeners { mount, listeners })
        .collect();
    Ok(Json(out))
}

/// Prometheus HTTP service discovery (`http_sd_configs`): every node's edge, which serves the
/// node's metrics (edge and agent) on `/metrics`. Revoked nodes are left out.
#[utoipa::path(get, path = "/v1/prometheus/targets", tag = "nodes",
    responses((status = 200, body = Vec<SdTargetGroup>), (status = 403, body = Problem)))]
pub async fn prometheus_targets(
    State(st): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<SdTargetGroup>>> {
    let nodes = {
        let mut c = st.db.conn().await?;
        db::nodes::all(&mut c).await?
    };
    let groups = nodes
        .into_iter()
        .filter(|n| n.revoked_at.is_none())
        .filter_map(|n| {
            let (scheme, rest) = n.public_url.split_once("://")?;
            let host = rest.split('/').next().filter(|h| !h.is_empty())?;
            // A URL without a port uses the scheme's (`[v6]` or `[v6]:port`, `name[:port]`).
            let has_port = match host.strip_prefix('[') {
                Some(v6) => v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
                None => host.contains(':'),
            };
            let target = if has_port {
                host.to_string()
            } else {
                format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
            };
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("__scheme__".to_string(), scheme.to_string());
            labels.insert("node".to_string(), n.name.clone());
            labels.insert("node_id".to_string(), n.id.clone());
            labels.insert("region".to_string(), n.region.clone());
            Some(SdTargetGroup {
                targets: vec![target],
                labels,
            })
        })
        .collect();
    Ok(Json(groups))
}
