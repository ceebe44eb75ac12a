//! `/v1/users`: a tenant's end users, by the tenant's own ids, and the user tokens the tenant
//! mints for them (`POST /v1/users/{user_id}/tokens`). Tenant API keys only: end users are the
//! tenant's objects, and another tenant's user id names nothing here.

use super::AppState;
use super::auth::{Caller, TenantUser, users_tenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Paging};
use crate::db;
use crate::users;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateUserToken, EndUser, Page, PageParams, Problem, PutUser, UserListParams, UserToken,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no user {id:?}."))
}

/// Create or replace an end user's profile (201 when created, 200 when replaced).
#[utoipa::path(put, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    request_body = PutUser,
    responses((status = 200, body = EndUser), (status = 201, body = EndUser),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn put(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    ApiJson(req): ApiJson<PutUser>,
) -> ApiResult<(StatusCode, Json<EndUser>)> {
    let profile = users::profile(&user_id, req)?;
    let mut conn = st.db.conn().await?;
    let (user, outcome) = db::users::put(&mut conn, &tenant.id, &profile).await?;
    let status = match outcome {
        db::users::Put::Created => StatusCode::CREATED,
        db::users::Put::Replaced => StatusCode::OK,
    };
    Ok((status, Json(user)))
}

/// List the tenant's end users by id; `q` finds users by name or id.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserListParams),
    responses((status = 200, body = Page<EndUser>), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserListParams>,
) -> ApiResult<Json<Page<EndUser>>> {
    let tenant = users_tenant(&caller)?;
    let p = Paging::try_from(PageParams {
        limit: q.limit,
        cursor: q.cursor,
    })?;
    let search = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > 100) {
        return Err(ApiError::BadRequest(
            "q is longer than 100 characters.".to_string(),
        ));
    }
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::users::list(&mut conn, &tenant.id, search, p.limit, &p.cursor).await?,
    ))
}

/// One end user.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    responses((status = 200, body = EndUser), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
) -> ApiResult<Json<EndUser>> {
    let mut conn = st.db.conn().await?;
    db::users::get(&mut conn, &tenant.id, &user_id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&user_id))
}

/// Delete an end user: their profile goes, their connections end and their tokens stop
/// working at once; their messages stay for the other party.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if db::users::delete(&mut conn, &tenant.id, &user_id).await? {
        st.realtime.disconnect_user(&tenant.id, &user_id).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&user_id))
    }
}

/// The body of a token request: empty, or a JSON [`CreateUserToken`].
fn token_request(body: &[u8]) -> ApiResult<CreateUserToken> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateUserToken::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Unprocessable(format!("The JSON body does not fit this request: {e}"))
        } else {
            ApiError::BadRequest(format!("The body is not valid JSON: {e}"))
        }
    })
}

/// Mint a user token (a JWT, HS256) for the tenant's app to hand its user. The body is
/// optional.
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens", tag = "users",
    params(("user_id" = String, Path, description = "The tenant's own id of the user")),
    request_body(content = Option<CreateUserToken>, content_type = "application/json"),
    responses((status = 201, body = UserToken), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create_token(
    State(st): State<AppState>,
    TenantUser { tenant, user_id }: TenantUser,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<UserToken>)> {
    let ttl = users::token_ttl(token_request(&body)?.ttl_seconds)?;
    let mut conn = st.db.conn().await?;
    if db::users::get(&mut conn, &tenant.id, &user_id)
        .await?
        .is_none()
    {
        return Err(not_found(&user_id));
    }
    let token = users::mint(&mut conn, &tenant.id, &user_id, ttl, db::now()).await?;
    Ok((StatusCode::CREATED, Json(token)))
}
