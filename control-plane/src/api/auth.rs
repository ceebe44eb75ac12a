//! Bearer authentication: the admin token from configuration, or a tenant API key looked up by
//! its digest on every request (so a revoked key is refused at once).

use super::AppState;
use super::error::ApiError;
use crate::db;
use crate::secrets::{constant_time_eq, sha256_hex};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use onda_shared::api::{Tenant, TenantStatus};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Tenant(Tenant),
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::Forbidden(
                "This route needs the admin token; a tenant API key cannot use it.".to_string(),
            )),
        }
    }

    /// The tenant whose objects a read is limited to; None for the admin (sees everything).
    pub fn tenant_scope(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(t) => Some(&t.id),
        }
    }

    /// The calling tenant, for routes that act on behalf of one; refused for a suspended tenant.
    pub fn writing_tenant(&self, what: &str) -> Result<&Tenant, ApiError> {
        match self {
            Caller::Admin => Err(ApiError::Forbidden(format!(
                "{what} belong to a tenant: call this route with the tenant's API key."
            ))),
            Caller::Tenant(t) if t.status == TenantStatus::Suspended => Err(ApiError::Forbidden(
                "This tenant is suspended: its objects can be read but not changed.".to_string(),
            )),
            Caller::Tenant(t) => Ok(t),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized(
                "Send an Authorization: Bearer header with the admin token or a tenant API key."
                    .to_string(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "The Authorization header must be `Bearer <token>`.".to_string(),
                )
            })?;
        if let Some(admin) = &state.admin_token
            && constant_time_eq(admin.as_bytes(), token.as_bytes())
        {
            return Ok(Caller::Admin);
        }
        let mut conn = state.db.conn().await?;
        let tenant_id = db::keys::tenant_for_secret(&mut conn, &sha256_hex(token)).await?;
        let tenant = match tenant_id {
            Some(id) => db::tenants::get(&mut conn, &id).await?,
            None => None,
        };
        tenant.map(Caller::Tenant).ok_or_else(|| {
            ApiError::Unauthorized("The token is unknown or has been revoked.".to_string())
        })
    }
}

/// Extractor for admin-only routes: refuses tenant keys with 403 before the body is read.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, state)
            .await?
            .require_admin()
            .map(|()| Admin)
    }
}

/// Extractor for routes that change a tenant's own objects: an active tenant's key, checked
/// before the body is read.
pub struct WritingTenant(pub Tenant);

impl FromRequestParts<AppState> for WritingTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller
            .writing_tenant("Stations")
            .map(|t| WritingTenant(t.clone()))
    }
}

/// Extractor for routes that change something of a station (`{id}` in the path): an active
/// tenant's key and that tenant's own station, both checked before the body is read, so another
/// tenant's station answers 404 whatever the body says.
pub struct WritableStation {
    pub tenant: Tenant,
    pub station_id: String,
}

impl FromRequestParts<AppState> for WritableStation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let WritingTenant(tenant) = WritingTenant::from_request_parts(parts, state).await?;
        let id = station_param(parts, state).await?;
        check_station(state, &id, Some(&tenant.id)).await?;
        Ok(WritableStation {
            tenant,
            station_id: id,
        })
    }
}

/// Extractor for routes that read something of a station (`{id}` in the path): the caller may
/// see it (the admin any, a tenant its own); otherwise 404.
pub struct ReadableStation {
    pub caller: Caller,
    pub station_id: String,
}

/// The route's `{id}` path parameter.
async fn station_param(parts: &mut Parts, state: &AppState) -> Result<String, ApiError> {
    let params = axum::extract::RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::NotFound("This route names no station.".to_string()))?;
    params
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| ApiError::NotFound("This route names no station.".to_string()))
}

async fn check_station(state: &AppState, id: &str, tenant: Option<&str>) -> Result<(), ApiError> {
    let mut conn = state.db.conn().await?;
    if db::stations::get(&mut conn, id, tenant).await?.is_none() {
        return Err(ApiError::NotFound(format!("There is no station {id:?}.")));
    }
    Ok(())
}

impl FromRequestParts<AppState> for ReadableStation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let station_id = station_param(parts, state).await?;
        check_station(state, &station_id, caller.tenant_scope()).await?;
        Ok(ReadableStation { caller, station_id })
    }
}
