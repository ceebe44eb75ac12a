//! Bearer authentication: the admin token from configuration, a tenant API key looked up by its
//! digest on every request (so a revoked key is refused at once), or an end user's token.
//!
//! Every authenticated route is authorized by one of these extractors, from the request head,
//! before its body is read: `Caller`, `Admin`, `WritingTenant`, `ReadableStation`,
//! `WritableStation` and `TenantUser` (a tenant's route on one of its end users) for the panel's
//! principals, `UserCaller` for end users, `AnyCaller` for routes that answer both. The
//! principals never mix: a user token (a JWT, told apart by its dots) is refused
//! by `Caller`, and API keys and the admin token by `UserCaller`; user tokens are checked by
//! `users::authenticate` alone.

use super::AppState;
use super::error::ApiError;
use crate::db;
use crate::secrets::{constant_time_eq, sha256_hex};
use crate::users::{self, Principal, Refused};
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

/// The bearer token of a request, or why there is none.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "Send an Authorization: Bearer header with the admin token, a tenant API key or a \
             user token."
                .to_string(),
        )
    })?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("The Authorization header must be `Bearer <token>`.".to_string())
        })
}

fn is_admin(state: &AppState, token: &str) -> bool {
    state
        .admin_token
        .as_ref()
        .is_some_and(|admin| constant_time_eq(admin.as_bytes(), token.as_bytes()))
}

/// A user token is a JWT (dots between its parts); API keys never contain a '.', and the
/// admin token, which an operator may choose freely, is recognised first.
fn is_user_token(state: &AppState, token: &str) -> bool {
    token.contains('.') && !is_admin(state, token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if is_admin(state, token) {
            return Ok(Caller::Admin);
        }
        if is_user_token(state, token) {
            return Err(ApiError::Forbidden(
                "This is a user token: it acts only as its user. This route needs the admin \
                 token or the tenant's API key."
                    .to_string(),
            ));
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

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Database(e) => e.into(),
            Refused::Suspended(_) => ApiError::Forbidden(e.to_string()),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// Extractor for routes an end user calls with a user token: who it acts as. API keys and the
/// admin token are refused (the principals are never mixed).
pub struct UserCaller(pub Principal);

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if !is_user_token(state, token) {
            return Err(ApiError::Forbidden(
                "This route is for end users: call it with a user token.".to_string(),
            ));
        }
        let mut conn = state.db.conn().await?;
        let principal = users::authenticate(&mut conn, token, db::now()).await;
        state.metrics.user_token_checked(principal.as_ref().err());
        Ok(UserCaller(principal?))
    }
}

/// Either kind of caller, for the routes that answer both (`/v1/me`).
pub enum AnyCaller {
    Panel(Caller),
    User(Box<Principal>),
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if bearer(parts).is_ok_and(|t| is_user_token(state, t)) {
            let UserCaller(p) = UserCaller::from_request_parts(parts, state).await?;
            return Ok(AnyCaller::User(Box::new(p)));
        }
        Ok(AnyCaller::Panel(
            Caller::from_request_parts(parts, state).await?,
        ))
    }
}

/// The tenant whose end users or signing keys a route reads: only the tenant itself (end users
/// are the tenant's, identified by its own ids, so the admin has no namespace to name them in).
pub fn users_tenant(caller: &Caller) -> Result<&Tenant, ApiError> {
    match caller {
        Caller::Admin => Err(ApiError::Forbidden(
            "End users, signing keys and webhooks belong to a tenant: call this route with the \
             tenant's API key."
                .to_string(),
        )),
        Caller::Tenant(t) => Ok(t),
    }
}

/// Extractor for routes on one end user (`{user_id}` in the path): the tenant's key (an active
/// tenant's for anything but GET) and a well-formed user id, checked before the body is read.
pub struct TenantUser {
    pub tenant: Tenant,
    pub user_id: String,
}

impl FromRequestParts<AppState> for TenantUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let tenant = users_tenant(&caller)?.clone();
        if parts.method != axum::http::Method::GET {
            caller.writing_tenant("Users")?;
        }
        // Percent-decoded: `fan%40example.com` names the user `fan@example.com`.
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("This route names no user.".to_string()))?;
        let user_id = users::user_id(&raw)?.to_string();
        Ok(TenantUser { tenant, user_id })
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
