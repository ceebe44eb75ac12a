//! The panel API (`/v1`, JSON, bearer auth) plus `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json`. Every route is registered through utoipa-axum, so the OpenAPI document is
//! generated from the same list the router serves and cannot miss a route.

pub mod auth;
pub mod error;
pub mod extract;
mod health;
pub mod keys;
mod me;
mod nodes;
mod plans;
pub mod stations;
mod tenants;

use crate::db::Db;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use error::ApiError;
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// None disables admin access (a control plane with no admin token configured).
    pub admin_token: Option<Arc<str>>,
    pub metrics: Arc<Metrics>,
    pub openapi: Arc<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Onda panel API",
        description = "Plans, tenants, API keys, stations and nodes of an Onda streaming cluster. \
            Authenticate with `Authorization: Bearer <admin token or tenant API key>`. Errors are \
            RFC 9457 problem documents. Lists take `limit` (1-100) and `cursor`.",
    ),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "What tenants may use and pay (admin)"),
        (name = "tenants", description = "Customers of the hosting company (admin)"),
        (name = "api-keys", description = "Tenant API keys (admin)"),
        (name = "stations", description = "A tenant's radio stations"),
        (name = "nodes", description = "Edge nodes of the cluster (admin)"),
        (name = "system", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

/// Builds the router and its OpenAPI document.
pub fn router(
    db: Db,
    admin_token: Option<String>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
) -> Router {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(plans::list, plans::create))
        .routes(routes!(plans::get, plans::update, plans::delete))
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(tenants::suspend))
        .routes(routes!(tenants::resume))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(stations::list, stations::create))
        .routes(routes!(stations::get, stations::update, stations::delete))
        .routes(routes!(stations::rotate_source_password))
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::get))
        .routes(routes!(me::get))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .split_for_parts();
    if let Some(components) = openapi.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let openapi_json = openapi.to_pretty_json().unwrap_or_default();
    let state = AppState {
        db,
        admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::from),
        metrics,
        openapi: Arc::new(openapi_json),
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "There is no route {} {}.",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}.",
        req.method(),
        req.uri().path()
    ))
}

/// Counts and times every request by its route template (never the raw path, which would make
/// one series per object id).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe_request(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
