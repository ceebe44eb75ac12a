//! `/v1/tenants`: admin CRUD of tenants, suspend and resume.

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::{db, secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateTenant, Page, PageParams, Problem, Tenant, TenantStatus, UpdateTenant,
};

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no tenant {id:?}."))
}

async fn require_plan(conn: &mut db::Conn, plan_id: &str) -> ApiResult<()> {
    if !validate::is_id(plan_id) {
        return Err(ApiError::Unprocessable(format!(
            "plan_id {plan_id:?} names no plan."
        )));
    }
    match db::plans::get(conn, plan_id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unprocessable(format!(
            "plan_id {plan_id:?} names no plan."
        ))),
    }
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageParams),
    responses((status = 200, body = Page<Tenant>), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Tenant>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::tenants::list(&mut conn, p.limit, &p.cursor).await?,
    ))
}

/// Create a tenant on a plan.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let tenant = Tenant {
        id: secrets::new_id("tnt"),
        name: validate::name("name", &req.name)?,
        email: validate::email(&req.email)?,
        plan_id: req.plan_id,
        status: TenantStatus::Active,
        currency: match &req.currency {
            Some(c) => validate::currency(c)?,
            None => onda_shared::api::DEFAULT_CURRENCY.to_string(),
        },
        platform_fee_bps: validate::fee_bps(
            req.platform_fee_bps
                .unwrap_or(onda_shared::api::DEFAULT_PLATFORM_FEE_BPS),
        )?,
        created_at: String::new(),
        updated_at: String::new(),
    };
    let mut tx = st.db.begin().await?;
    require_plan(&mut tx, &tenant.plan_id).await?;
    let t = db::tenants::insert(&mut tx, &tenant).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", params(("id" = String, Path, description = "Object id")), tag = "tenants",
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    let mut conn = st.db.conn().await?;
    db::tenants::get(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Change a tenant's name, e-mail, plan, commission (`platform_fee_bps`) or currency (only
/// while its ledger is empty).
#[utoipa::path(patch, path = "/v1/tenants/{id}", params(("id" = String, Path, description = "Object id")), tag = "tenants", request_body = UpdateTenant,
    responses((status = 200, body = Tenant), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateTenant>,
) -> ApiResult<Json<Tenant>> {
    let mut tx = st.db.begin().await?;
    // Lock before reading, so a concurrent suspend or update is not overwritten.
    if !db::tenants::lock(&mut tx, &id).await? {
        return Err(not_found(&id));
    }
    let mut t = db::tenants::get(&mut tx, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if let Some(n) = &req.name {
        t.name = validate::name("name", n)?;
    }
    if let Some(e) = &req.email {
        t.email = validate::email(e)?;
    }
    if let Some(p) = req.plan_id {
        require_plan(&mut tx, &p).await?;
        t.plan_id = p;
    }
    if let Some(bps) = req.platform_fee_bps {
        t.platform_fee_bps = validate::fee_bps(bps)?;
    }
    if let Some(c) = &req.currency {
        let c = validate::currency(c)?;
        // Amounts are stored without their currency per entry: changing it under existing
        // balances would relabel them.
        if c != t.currency && db::ledger::has_transactions(&mut tx, &id).await? {
            return Err(ApiError::Conflict(format!(
                "Tenant {id:?} already has ledger transactions in {}; its currency cannot change.",
                t.currency
            )));
        }
        t.currency = c;
    }
    let t = db::tenants::update(&mut tx, &t).await?;
    tx.commit().await?;
    Ok(Json(t))
}

/// Delete a tenant that has no stations or live streams left (its API keys go with it).
#[utoipa::path(delete, path = "/v1/tenants/{id}", params(("id" = String, Path, description = "Object id")), tag = "tenants",
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    // Its users' attachments go with it: rows in the transaction, blobs after the commit.
    let refs = st.media.lock_refs().await;
    let mut tx = st.db.begin().await?;
    if !db::tenants::lock(&mut tx, &id).await? {
        return Err(not_found(&id));
    }
    let n = db::stations::count_for_tenant(&mut tx, &id).await?;
    if n > 0 {
        return Err(ApiError::Conflict(format!(
            "Tenant {id:?} still has {n} station(s); delete them first."
        )));
    }
    let n = db::live_streams::count_for_tenant(&mut tx, &id).await?;
    if n > 0 {
        return Err(ApiError::Conflict(format!(
            "Tenant {id:?} still has {n} live stream(s); delete them first."
        )));
    }
    db::tenants::delete(&mut tx, &id).await?;
    let blobs = db::attachments::delete_tenant(&mut tx, &id).await?;
    tx.commit().await?;
    for sha256 in &blobs {
        st.media.remove_if_unreferenced(&refs, &st.db, sha256).await;
    }
    drop(refs);
    st.realtime.disconnect_tenant(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(st: &AppState, id: &str, status: TenantStatus) -> ApiResult<Json<Tenant>> {
    let mut tx = st.db.begin().await?;
    if !db::tenants::lock(&mut tx, id).await? {
        return Err(not_found(id));
    }
    let mut t = db::tenants::get(&mut tx, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    t.status = status;
    let t = db::tenants::update(&mut tx, &t).await?;
    tx.commit().await?;
    Ok(Json(t))
}

/// Suspend a tenant: its objects stay readable but cannot be changed, and its end users'
/// realtime connections end (their tokens are refused until the tenant is resumed).
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", params(("id" = String, Path, description = "Object id")), tag = "tenants",
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
pub async fn suspend(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    let t = set_status(&st, &id, TenantStatus::Suspended).await?;
    st.realtime.disconnect_tenant(&id).await;
    Ok(t)
}

/// Resume a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", params(("id" = String, Path, description = "Object id")), tag = "tenants",
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
pub async fn resume(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    set_status(&st, &id, TenantStatus::Active).await
}
