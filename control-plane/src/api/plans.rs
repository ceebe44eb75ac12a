//! `/v1/plans`: admin CRUD of plans.

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::db::{self, is_unique_violation};
use crate::{secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{CreatePlan, Page, PageParams, Plan, Problem, UpdatePlan};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no plan {id:?}."))
}

fn taken(name: &str) -> ApiError {
    ApiError::Conflict(format!("A plan named {name:?} already exists."))
}

/// List plans.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PageParams),
    responses((status = 200, body = Page<Plan>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Plan>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(db::plans::list(&mut conn, p.limit, &p.cursor).await?))
}

/// Create a plan.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = CreatePlan,
    responses((status = 201, body = Plan), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreatePlan>,
) -> ApiResult<(StatusCode, Json<Plan>)> {
    let plan = Plan {
        id: secrets::new_id("plan"),
        name: validate::name("name", &req.name)?,
        description: validate::text("description", &req.description)?,
        limits: req.limits,
        features: req.features,
        prices: req.prices,
        created_at: String::new(),
        updated_at: String::new(),
    };
    validate::plan(&plan)?;
    let mut conn = st.db.conn().await?;
    match db::plans::insert(&mut conn, &plan).await {
        Ok(p) => Ok((StatusCode::CREATED, Json(p))),
        Err(e) if is_unique_violation(&e) => Err(taken(&plan.name)),
        Err(e) => Err(e.into()),
    }
}

/// Get a plan.
#[utoipa::path(get, path = "/v1/plans/{id}", params(("id" = String, Path, description = "Object id")), tag = "plans",
    responses((status = 200, body = Plan), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Plan>> {
    let mut conn = st.db.conn().await?;
    db::plans::get(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Change a plan; absent fields stay. Tenants on the plan get the new limits at once; objects
/// they already have are kept even when the new limits are lower.
#[utoipa::path(patch, path = "/v1/plans/{id}", params(("id" = String, Path, description = "Object id")), tag = "plans", request_body = UpdatePlan,
    responses((status = 200, body = Plan), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdatePlan>,
) -> ApiResult<Json<Plan>> {
    let mut tx = st.db.begin().await?;
    // Lock before reading, so concurrent updates cannot undo each other's changes.
    if !db::plans::lock(&mut tx, &id).await? {
        return Err(not_found(&id));
    }
    let mut plan = db::plans::get(&mut tx, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if let Some(n) = &req.name {
        plan.name = validate::name("name", n)?;
    }
    if let Some(d) = &req.description {
        plan.description = validate::text("description", d)?;
    }
    if let Some(l) = req.limits {
        let t = &mut plan.limits;
        t.max_stations = l.max_stations.unwrap_or(t.max_stations);
        t.max_mounts_per_station = l.max_mounts_per_station.unwrap_or(t.max_mounts_per_station);
        t.allowed_formats = l
            .allowed_formats
            .unwrap_or(std::mem::take(&mut t.allowed_formats));
        t.max_bitrate_kbps = l.max_bitrate_kbps.unwrap_or(t.max_bitrate_kbps);
        t.max_listeners_per_station = l
            .max_listeners_per_station
            .unwrap_or(t.max_listeners_per_station);
        t.storage_bytes = l.storage_bytes.unwrap_or(t.storage_bytes);
        t.max_live_streams = l.max_live_streams.unwrap_or(t.max_live_streams);
        t.live_renditions = l
            .live_renditions
            .unwrap_or(std::mem::take(&mut t.live_renditions));
        t.attachment_bytes = l.attachment_bytes.unwrap_or(t.attachment_bytes);
        t.max_realtime_connections = l
            .max_realtime_connections
            .unwrap_or(t.max_realtime_connections);
    }
    if let Some(f) = req.features {
        let t = &mut plan.features;
        t.autodj = f.autodj.unwrap_or(t.autodj);
        t.scheduling = f.scheduling.unwrap_or(t.scheduling);
        t.hls = f.hls.unwrap_or(t.hls);
        t.live_video = f.live_video.unwrap_or(t.live_video);
        t.messaging = f.messaging.unwrap_or(t.messaging);
        t.monetization = f.monetization.unwrap_or(t.monetization);
        t.live_chat = f.live_chat.unwrap_or(t.live_chat);
        t.calls = f.calls.unwrap_or(t.calls);
        t.requests = f.requests.unwrap_or(t.requests);
    }
    if let Some(p) = req.prices {
        let t = &mut plan.prices;
        t.currency = p.currency.unwrap_or(std::mem::take(&mut t.currency));
        t.monthly_micros = p.monthly_micros.unwrap_or(t.monthly_micros);
        t.overage_per_gb_micros = p.overage_per_gb_micros.unwrap_or(t.overage_per_gb_micros);
        t.overage_per_listener_hour_micros = p
            .overage_per_listener_hour_micros
            .unwrap_or(t.overage_per_listener_hour_micros);
        t.included_gb = p.included_gb.unwrap_or(t.included_gb);
        t.included_listener_hours = p
            .included_listener_hours
            .unwrap_or(t.included_listener_hours);
        t.included_connection_minutes = p
            .included_connection_minutes
            .unwrap_or(t.included_connection_minutes);
        t.overage_per_1000_connection_minutes_micros = p
            .overage_per_1000_connection_minutes_micros
            .unwrap_or(t.overage_per_1000_connection_minutes_micros);
        t.included_messages = p.included_messages.unwrap_or(t.included_messages);
        t.overage_per_1000_messages_micros = p
            .overage_per_1000_messages_micros
            .unwrap_or(t.overage_per_1000_messages_micros);
        t.included_transactions = p.included_transactions.unwrap_or(t.included_transactions);
        t.overage_per_1000_transactions_micros = p
            .overage_per_1000_transactions_micros
            .unwrap_or(t.overage_per_1000_transactions_micros);
        t.included_call_minutes = p.included_call_minutes.unwrap_or(t.included_call_minutes);
        t.overage_per_1000_call_minutes_micros = p
            .overage_per_1000_call_minutes_micros
            .unwrap_or(t.overage_per_1000_call_minutes_micros);
        t.included_turn_gb = p.included_turn_gb.unwrap_or(t.included_turn_gb);
        t.overage_per_turn_gb_micros = p
            .overage_per_turn_gb_micros
            .unwrap_or(t.overage_per_turn_gb_micros);
    }
    validate::plan(&plan)?;
    let saved = match db::plans::update(&mut tx, &plan).await {
        Ok(p) => p,
        Err(e) if is_unique_violation(&e) => return Err(taken(&plan.name)),
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(Json(saved))
}

/// Delete a plan no tenant is or ever was on (billing prices the history with it).
#[utoipa::path(delete, path = "/v1/plans/{id}", params(("id" = String, Path, description = "Object id")), tag = "plans",
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.db.begin().await?;
    if !db::plans::lock(&mut tx, &id).await? {
        return Err(not_found(&id));
    }
    let n = db::plans::tenant_count(&mut tx, &id).await?;
    if n > 0 {
        return Err(ApiError::Conflict(format!(
            "{n} tenant(s) are or were on plan {id:?}; a plan in use or in a tenant's billing \
             history cannot be deleted (create a new plan instead of reusing this one)."
        )));
    }
    db::plans::delete(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
