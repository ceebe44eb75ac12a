//! `/v1/webhooks`: endpoints of a tenant's backend that receive its events, signed with a
//! secret shown once, and the state of each delivery. Tenant API keys only; another tenant's
//! endpoint answers 404. Delivery itself is `crate::webhooks`.

use super::AppState;
use super::auth::{Caller, users_tenant};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::{db, secrets, webhooks};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{
    CreateWebhook, NewWebhook, Page, PageParams, Problem, Webhook, WebhookDelivery,
    WebhookTestEvent,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no webhook {id:?}."))
}

/// The tenant's endpoint `id`, or 404.
async fn endpoint(st: &AppState, tenant_id: &str, id: &str) -> ApiResult<Webhook> {
    let mut conn = st.db.conn().await?;
    db::webhooks::get_endpoint(&mut conn, tenant_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Register an endpoint. The URL must be http or https and, unless the control plane allows
/// it, not point at a loopback, private or link-local address. Its secret is in this answer
/// only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = NewWebhook), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<NewWebhook>)> {
    let tenant = users_tenant(&caller)?;
    caller.writing_tenant("Webhooks")?;
    let events = webhooks::event_filter(&req.events).map_err(ApiError::Unprocessable)?;
    let url = webhooks::target::check(req.url.trim(), st.webhooks_allow_private)
        .await
        .map_err(ApiError::Unprocessable)?;
    let mut tx = st.db.begin().await?;
    let count = db::webhooks::count_endpoints(&mut tx, &tenant.id).await?;
    if count >= webhooks::MAX_ENDPOINTS {
        return Err(ApiError::Conflict(format!(
            "The tenant already has {count} webhooks, the most it may have; delete one first."
        )));
    }
    let secret = format!("whsec_{}", secrets::new_signing_secret());
    let webhook = db::webhooks::insert_endpoint(
        &mut tx,
        &db::webhooks::NewEndpoint {
            id: &secrets::new_id("whk"),
            tenant_id: &tenant.id,
            url: url.as_str(),
            events: &events,
            secret: &secret,
            created_ms: db::now_millis(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(NewWebhook { webhook, secret })))
}

/// The tenant's endpoints, oldest first (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = Problem)))]
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Webhook>>> {
    let tenant = users_tenant(&caller)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::webhooks::list_endpoints(&mut conn, &tenant.id).await?,
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses((status = 200, body = Webhook), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Webhook>> {
    let tenant = users_tenant(&caller)?;
    endpoint(&st, &tenant.id, &id).await.map(Json)
}

/// Delete an endpoint: its pending deliveries are dropped and no more are made.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let tenant = users_tenant(&caller)?;
    caller.writing_tenant("Webhooks")?;
    let mut tx = st.db.begin().await?;
    if !db::webhooks::delete_endpoint(&mut tx, &tenant.id, &id).await? {
        return Err(not_found(&id));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's deliveries, newest event first: their state (pending, delivered, failed),
/// attempts, the last status or error, and when the next attempt is due.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)"), PageParams),
    responses((status = 200, body = Page<WebhookDelivery>), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn deliveries(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<WebhookDelivery>>> {
    let tenant = users_tenant(&caller)?;
    let p = Paging::try_from(q)?;
    endpoint(&st, &tenant.id, &id).await?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::webhooks::deliveries(&mut conn, &id, p.limit, &p.cursor).await?,
    ))
}

/// Send a `webhook.test` event to this endpoint (only), to check it receives and verifies
/// deliveries.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses((status = 202, body = WebhookTestEvent), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn test(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<WebhookTestEvent>)> {
    let tenant = users_tenant(&caller)?;
    caller.writing_tenant("Webhooks")?;
    let mut tx = st.db.begin().await?;
    if db::webhooks::get_endpoint(&mut tx, &tenant.id, &id)
        .await?
        .is_none()
    {
        return Err(not_found(&id));
    }
    let event_id = webhooks::enqueue_test(&mut tx, &tenant.id, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(WebhookTestEvent { event_id })))
}
