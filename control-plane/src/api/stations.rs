//! `/v1/stations`: a tenant's stations and their mounts, within the tenant's plan. A tenant key
//! sees only its own stations (another tenant's id answers 404); the admin token reads and
//! deletes any station.

use super::AppState;
use super::auth::{Caller, WritingTenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::db::{self, is_unique_violation};
use crate::{secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateStation, Page, PageParams, PlacementFailure, PlacementStatus, Plan, Problem, Station,
    StationPlacementInfo, Tenant, TenantStatus, UpdateStation,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no station {id:?}."))
}

fn slug_taken(slug: &str) -> ApiError {
    ApiError::Conflict(format!(
        "The slug {slug:?} is already used by another station; choose another."
    ))
}

pub(crate) async fn plan_of(conn: &mut db::Conn, plan_id: &str) -> ApiResult<Plan> {
    db::plans::get(conn, plan_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("tenant's plan {plan_id} is missing")))
}

/// Locks the tenant for the rest of the transaction and re-reads it under the lock, so a
/// suspension or plan change that committed meanwhile is what the request is checked against.
pub(crate) async fn lock_active_tenant(conn: &mut db::Conn, tenant_id: &str) -> ApiResult<Tenant> {
    let missing = || ApiError::NotFound(format!("There is no tenant {tenant_id:?}."));
    if !db::tenants::lock(conn, tenant_id).await? {
        return Err(missing());
    }
    let tenant = db::tenants::get(conn, tenant_id)
        .await?
        .ok_or_else(missing)?;
    if tenant.status == TenantStatus::Suspended {
        return Err(ApiError::Forbidden(
            "This tenant is suspended: its objects can be read but not changed.".to_string(),
        ));
    }
    Ok(tenant)
}

/// Creates a station for a tenant inside the caller's transaction, enforcing every plan limit
/// under the tenant's lock (also used by dev mode to create the demo station).
pub async fn create_for_tenant(
    conn: &mut db::Conn,
    tenant_id: &str,
    req: CreateStation,
) -> ApiResult<Station> {
    let tenant = lock_active_tenant(conn, tenant_id).await?;
    let plan = plan_of(conn, &tenant.plan_id).await?;
    let name = validate::name("name", &req.name)?;
    let max_listeners = req
        .max_listeners
        .unwrap_or(plan.limits.max_listeners_per_station);
    validate::station(&plan, &req.mounts, max_listeners, req.autodj_enabled)?;
    validate::requests(&plan, &req.requests)?;
    let count = db::stations::count_for_tenant(conn, tenant_id).await?;
    if count >= i64::from(plan.limits.max_stations) {
        return Err(ApiError::PlanLimit {
            limit: "max_stations",
            detail: format!(
                "Plan {:?} allows {} station(s) and this tenant already has {count}.",
                plan.name, plan.limits.max_stations
            ),
        });
    }
    let slug = match &req.slug {
        Some(s) => validate::station_slug(s)?,
        None => {
            let base = validate::slug_from_name(&name).unwrap_or_else(|| "station".to_string());
            let mut candidate = base.clone();
            // A name like "HLS" gives a reserved slug: it gets a suffix like a taken one.
            while validate::station_slug(&candidate).is_err()
                || db::stations::slug_taken(conn, &candidate).await?
            {
                candidate = format!("{base}-{}", &secrets::new_id("s")[2..8]);
            }
            candidate
        }
    };
    validate::edge_paths(&slug, &req.mounts)?;
    let station = Station {
        id: secrets::new_id("stn"),
        tenant_id: tenant_id.to_string(),
        name,
        slug: slug.clone(),
        description: validate::text("description", &req.description)?,
        genre: validate::text("genre", &req.genre)?,
        autodj_enabled: req.autodj_enabled,
        max_listeners,
        mounts: req.mounts,
        source_password: secrets::new_password(),
        region: validate::region("region", &req.region)?,
        node_labels: validate::labels("node_labels", &req.node_labels)?,
        requests: req.requests,
        hls_preferred: req.hls_preferred,
        created_at: String::new(),
        updated_at: String::new(),
    };
    match db::stations::insert(conn, &station).await {
        Ok(s) => Ok(s),
        Err(e) if is_unique_violation(&e) => Err(slug_taken(&slug)),
        Err(e) => Err(e.into()),
    }
}

/// List stations: a tenant's own, or every station for the admin.
#[utoipa::path(get, path = "/v1/stations", tag = "stations", params(PageParams),
    responses((status = 200, body = Page<Station>), (status = 401, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Station>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::stations::list(&mut conn, caller.tenant_scope(), p.limit, &p.cursor).await?,
    ))
}

/// Create a station (tenant key). Plan limits are checked: stations, mounts, formats, bitrate,
/// listeners, AutoDJ; a refusal is a 403 problem whose `limit` names the limit.
#[utoipa::path(post, path = "/v1/stations", tag = "stations", request_body = CreateStation,
    responses((status = 201, body = Station), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiJson(req): ApiJson<CreateStation>,
) -> ApiResult<(StatusCode, Json<Station>)> {
    let mut tx = st.db.begin().await?;
    let station = create_for_tenant(&mut tx, &tenant.id, req).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(station)))
}

/// Get a station.
#[utoipa::path(get, path = "/v1/stations/{id}", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 200, body = Station), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Station>> {
    let mut conn = st.db.conn().await?;
    db::stations::get(&mut conn, &id, caller.tenant_scope())
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Where a station plays right now: its origin node, relay nodes, and nodes it is leaving.
#[utoipa::path(get, path = "/v1/stations/{id}/placement", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 200, body = StationPlacementInfo), (status = 404, body = Problem)))]
pub async fn placement(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<StationPlacementInfo>> {
    let mut conn = st.db.conn().await?;
    if db::stations::get(&mut conn, &id, caller.tenant_scope())
        .await?
        .is_none()
    {
        return Err(not_found(&id));
    }
    let (placed, failures) = match &st.cluster {
        Some(c) => {
            let snap = c.view.get();
            (
                snap.placement.stations.get(&id).cloned(),
                failures(&snap, &id),
            )
        }
        None => (None, Vec::new()),
    };
    let status = if !failures.is_empty() {
        PlacementStatus::Failed
    } else if placed.as_ref().is_some_and(|p| !p.origin.is_empty()) {
        PlacementStatus::Placed
    } else {
        PlacementStatus::Unplaced
    };
    Ok(Json(StationPlacementInfo {
        status,
        failures,
        station_id: id,
        origin: placed
            .as_ref()
            .map(|p| p.origin.clone())
            .filter(|o| !o.is_empty()),
        relays: placed
            .as_ref()
            .map(|p| p.relays.clone())
            .unwrap_or_default(),
        leaving: placed.map(|p| p.leaving).unwrap_or_default(),
    }))
}

/// The nodes that refused a station or live stream, as the API shows them.
pub(crate) fn failures(snap: &crate::cluster::view::Snapshot, id: &str) -> Vec<PlacementFailure> {
    snap.refusals(id)
        .into_iter()
        .map(|(node, reason)| PlacementFailure { node, reason })
        .collect()
}

/// Change a station; absent fields stay, `mounts` replaces the whole list. Plan limits apply.
#[utoipa::path(patch, path = "/v1/stations/{id}", params(("id" = String, Path, description = "Object id")), tag = "stations", request_body = UpdateStation,
    responses((status = 200, body = Station), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateStation>,
) -> ApiResult<Json<Station>> {
    let mut tx = st.db.begin().await?;
    // The tenant's lock before reading, so a concurrent change is not overwritten.
    let tenant = lock_active_tenant(&mut tx, &tenant.id).await?;
    let mut s = db::stations::get(&mut tx, &id, Some(&tenant.id))
        .await?
        .ok_or_else(|| not_found(&id))?;
    let plan = plan_of(&mut tx, &tenant.plan_id).await?;
    if let Some(n) = &req.name {
        s.name = validate::name("name", n)?;
    }
    if let Some(slug) = &req.slug {
        s.slug = validate::station_slug(slug)?;
    }
    if let Some(d) = &req.description {
        s.description = validate::text("description", d)?;
    }
    if let Some(g) = &req.genre {
        s.genre = validate::text("genre", g)?;
    }
    s.autodj_enabled = req.autodj_enabled.unwrap_or(s.autodj_enabled);
    s.hls_preferred = req.hls_preferred.unwrap_or(s.hls_preferred);
    s.max_listeners = req.max_listeners.unwrap_or(s.max_listeners);
    if let Some(m) = req.mounts {
        s.mounts = m;
    }
    if let Some(r) = &req.region {
        s.region = validate::region("region", r)?;
    }
    if let Some(l) = &req.node_labels {
        s.node_labels = validate::labels("node_labels", l)?;
    }
    let taking_requests = s.requests.enabled;
    if let Some(r) = &req.requests {
        s.requests = r.apply(s.requests);
        validate::requests(&plan, &s.requests)?;
    }
    validate::station(&plan, &s.mounts, s.max_listeners, s.autodj_enabled)?;
    validate::edge_paths(&s.slug, &s.mounts)?;
    let saved = match db::stations::update(&mut tx, &s).await {
        Ok(saved) => saved,
        Err(e) if is_unique_violation(&e) => return Err(slug_taken(&s.slug)),
        Err(e) => return Err(e.into()),
    };
    renditions_fit(&mut tx, &plan, &tenant.id, &saved).await?;
    if taking_requests && !saved.requests.enabled {
        // Off means off: what waited would otherwise play whenever they are turned on again.
        db::requests::clear_pending(&mut tx, &saved.id).await?;
    }
    tx.commit().await?;
    Ok(Json(saved))
}

/// Re-estimates the renditions of the station's media for its (new) mounts; more mounts whose
/// renditions would not fit the plan's storage are refused (fewer always pass).
async fn renditions_fit(
    conn: &mut db::Conn,
    plan: &Plan,
    tenant_id: &str,
    station: &Station,
) -> ApiResult<()> {
    let before = db::media::tenant_usage(conn, tenant_id).await?;
    let kbps = db::media::rendition_kbps(&station.mounts);
    db::media::update_renditions(conn, &station.id, kbps).await?;
    let after = db::media::tenant_usage(conn, tenant_id).await?;
    let quota = plan.limits.storage_bytes;
    if after.rendition_bytes > before.rendition_bytes && after.total() > quota {
        return Err(ApiError::Quota {
            limit: "storage_bytes",
            detail: format!(
                "With these mounts the renditions of the tenant's media would take {} bytes, \
                 and the tenant's storage {} of the {quota} bytes plan {:?} includes. Remove \
                 media, use fewer or lower bitrates, or change plan.",
                after.rendition_bytes,
                after.total(),
                plan.name
            ),
        });
    }
    Ok(())
}

/// Delete a station, its mounts and its media library (freeing the tenant's storage).
#[utoipa::path(delete, path = "/v1/stations/{id}", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if let Caller::Tenant(_) = caller {
        caller.writing_tenant("Stations")?;
    }
    // The media store's lock before the transaction, as everywhere media rows change.
    let refs = st.media.lock_refs().await;
    let mut tx = st.db.begin().await?;
    if db::stations::get(&mut tx, &id, caller.tenant_scope())
        .await?
        .is_none()
    {
        return Err(not_found(&id));
    }
    let hashes = db::media::delete_for_station(&mut tx, &id).await?;
    if !db::stations::delete(&mut tx, &id, caller.tenant_scope()).await? {
        return Err(not_found(&id));
    }
    tx.commit().await?;
    for sha256 in &hashes {
        st.media.remove_if_unreferenced(&refs, &st.db, sha256).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the source password with a new random one (connected sources keep streaming until
/// they reconnect).
#[utoipa::path(post, path = "/v1/stations/{id}/source-password", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 200, body = Station), (status = 404, body = Problem)))]
pub async fn rotate_source_password(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Station>> {
    let mut tx = st.db.begin().await?;
    lock_active_tenant(&mut tx, &tenant.id).await?;
    let mut s = db::stations::get(&mut tx, &id, Some(&tenant.id))
        .await?
        .ok_or_else(|| not_found(&id))?;
    s.source_password = secrets::new_password();
    let saved = db::stations::update(&mut tx, &s).await?;
    tx.commit().await?;
    Ok(Json(saved))
}
