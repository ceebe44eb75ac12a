//! `/v1/tenants/{id}/api-keys`: the admin issues, lists and revokes a tenant's API keys.

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use super::tenants::not_found as tenant_not_found;
use crate::{db, secrets, validate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{ApiKey, CreateApiKey, CreatedApiKey, Page, PageParams, Problem};

/// Issues a key for a tenant and returns it with its secret (also used by dev mode).
pub async fn issue(conn: &mut db::Conn, tenant_id: &str, name: &str) -> ApiResult<CreatedApiKey> {
    let secret = secrets::new_api_key();
    let key = ApiKey {
        id: secrets::new_id("key"),
        tenant_id: tenant_id.to_string(),
        name: name.to_string(),
        prefix: secrets::key_prefix(&secret),
        created_at: String::new(),
        revoked_at: None,
    };
    let key = db::keys::insert(conn, &key, &secrets::sha256_hex(&secret)).await?;
    Ok(CreatedApiKey { key, secret })
}

/// List a tenant's keys (prefixes only).
#[utoipa::path(get, path = "/v1/tenants/{id}/api-keys", tag = "api-keys", params(("id" = String, Path, description = "Object id"), PageParams),
    responses((status = 200, body = Page<ApiKey>), (status = 404, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ApiKey>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    if db::tenants::get(&mut conn, &id).await?.is_none() {
        return Err(tenant_not_found(&id));
    }
    Ok(Json(
        db::keys::list(&mut conn, &id, p.limit, &p.cursor).await?,
    ))
}

/// Create a key; the answer carries the secret, which is never shown again.
#[utoipa::path(post, path = "/v1/tenants/{id}/api-keys", params(("id" = String, Path, description = "Object id")), tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let name = if req.name.trim().is_empty() {
        "api key".to_string()
    } else {
        validate::name("name", &req.name)?
    };
    let mut tx = st.db.begin().await?;
    if !db::tenants::lock(&mut tx, &id).await? {
        return Err(tenant_not_found(&id));
    }
    let created = issue(&mut tx, &id, &name).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke a key: it is refused from the next request on.
#[utoipa::path(delete, path = "/v1/tenants/{id}/api-keys/{key_id}", params(("id" = String, Path, description = "Object id"), ("key_id" = String, Path, description = "API key id")), tag = "api-keys",
    responses((status = 200, body = ApiKey), (status = 404, body = Problem)))]
pub async fn revoke(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKey>> {
    let mut conn = st.db.conn().await?;
    db::keys::revoke(&mut conn, &id, &key_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("Tenant {id:?} has no API key {key_id:?}.")))
}
