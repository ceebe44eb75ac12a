//! `/v1/signing-keys`: keys a tenant signs its own user tokens with (HS256, `kid` in the
//! header). Several may be active, so a tenant rotates by creating a new key, moving its
//! servers over, then revoking the old one. The secret is shown once.

use super::AppState;
use super::auth::{Caller, WritingTenant, users_tenant};
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::db::{self, signing_keys::Origin};
use crate::{secrets, users};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{NewSigningKey, Problem, SigningKey};

/// Create a signing key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/signing-keys", tag = "users",
    responses((status = 201, body = NewSigningKey), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
) -> ApiResult<(StatusCode, Json<NewSigningKey>)> {
    let mut conn = st.db.conn().await?;
    let active = db::signing_keys::count_active(&mut conn, &tenant.id).await?;
    if active >= users::MAX_ACTIVE_KEYS {
        return Err(ApiError::Conflict(format!(
            "The tenant already has {active} active signing keys, the most it may have; revoke \
             one first."
        )));
    }
    let secret = secrets::new_signing_secret();
    let stored = db::signing_keys::insert(
        &mut conn,
        &tenant.id,
        &secrets::new_id("sk"),
        &secret,
        Origin::Tenant,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewSigningKey {
            key: stored.key,
            secret,
        }),
    ))
}

/// The tenant's signing keys, newest first, revoked ones included (never their secrets).
#[utoipa::path(get, path = "/v1/signing-keys", tag = "users",
    responses((status = 200, body = Vec<SigningKey>), (status = 403, body = Problem)))]
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<SigningKey>>> {
    let tenant = users_tenant(&caller)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(db::signing_keys::list(&mut conn, &tenant.id).await?))
}

/// Revoke a signing key: every token signed with it is refused from now on.
#[utoipa::path(delete, path = "/v1/signing-keys/{kid}", tag = "users",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke(
    State(st): State<AppState>,
    WritingTenant(tenant): WritingTenant,
    ApiPath(kid): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if db::signing_keys::revoke(&mut conn, &tenant.id, &kid).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "There is no signing key {kid:?}."
        )))
    }
}
