//! The panel API (`/v1`, JSON, bearer auth) plus `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json`. Every route is registered through utoipa-axum, so the OpenAPI document is
//! generated from the same list the router serves and cannot miss a route.

mod app;
mod art;
pub mod attachments;
pub mod auth;
mod billing;
mod calls;
mod chat;
mod conversations;
mod cors;
mod creators;
mod earnings;
pub mod error;
mod export;
pub mod extract;
mod health;
mod idempotency;
pub mod keys;
mod listen;
mod me;
pub mod media;
mod my_streams;
pub mod nodes;
mod notifications;
mod nowplaying;
mod pages;
mod payouts;
mod paywall;
mod plans;
mod playlists;
mod reports;
mod requests;
mod sessions;
mod signing_keys;
pub mod stations;
pub mod streamers;
pub mod streams;
mod subscriptions;
mod tenants;
mod tips;
mod transactions;
mod turn;
mod usage;
mod users;
mod wallets;
mod webhooks;

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
    /// None when the control plane runs without a cluster (API only).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Uploaded audio and message attachments, by content hash.
    pub media: Arc<crate::media::MediaStore>,
    /// Now-playing snapshots and their feeds (with the cluster).
    pub nowplaying: Option<Arc<crate::nowplaying::Hub>>,
    /// The realtime gateway (end users' Socket.io connections).
    pub realtime: crate::realtime::Gateway,
    /// Whether webhook URLs may point at private addresses (`webhooks.allow_private`).
    pub webhooks_allow_private: bool,
    /// `http.public_url` (no trailing `/`): links handed out are absolute on it when set.
    pub public_url: Option<Arc<str>>,
    /// The `[turn]` settings: how long the TURN credentials handed out last.
    pub turn: Arc<crate::config::TurnSettings>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Onda panel API",
        description = "Plans, tenants, API keys, stations, media and nodes of an Onda streaming cluster. \
            Authenticate with `Authorization: Bearer <admin token, tenant API key or user token>`. Errors are \
            RFC 9457 problem documents. Lists take `limit` (1-100) and `cursor`.",
    ),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "What tenants may use and pay (admin)"),
        (name = "tenants", description = "Customers of the hosting company (admin)"),
        (name = "api-keys", description = "Tenant API keys (admin)"),
        (name = "stations", description = "A tenant's radio stations"),
        (name = "media", description = "A station's media library: uploaded audio for the AutoDJ"),
        (name = "nodes", description = "Edge nodes of the cluster and their join tokens (admin)"),
        (name = "streams", description = "A tenant's live video streams: RTMP ingest with a stream key, HLS playback"),
        (name = "users", description = "A tenant's end users, the user tokens they act with, and the keys those are signed with (tenant API keys)"),
        (name = "messaging", description = "An end user's conversations and messages (user tokens); live delivery is the realtime gateway at /socket.io/"),
        (name = "webhooks", description = "Endpoints of a tenant's backend that receive signed events (message.created, user.online, …) and the state of each delivery (tenant API keys)"),
        (name = "notifications", description = "An end user's notifications: tenants send them (tenant API keys), users list and mark them read (user tokens); pushed live as the gateway's `notification` event"),
        (name = "chat", description = "Live streams' chats: moderators of a creator's chats and a stream's saved chat (everything said goes over the realtime gateway)"),
        (name = "calls", description = "Paid 1-to-1 video calls: made and changed over the realtime gateway (docs/calls.md); their records and history here, and TURN relays with time-limited credentials for an end user's peer connections"),
        (name = "money", description = "Wallets on a double-entry ledger: credits, refunds, adjustments and transaction history (tenant API keys; requests that move value need an Idempotency-Key header), and a user's own wallet (user tokens)"),
        (name = "billing", description = "Monthly invoices: the admin runs billing, a tenant reads its own invoices"),
        (name = "listen", description = "Public listener URLs, redirected to an edge carrying the station"),
        (name = "system", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

/// Builds the router (with the realtime gateway at `/socket.io/` in front of it) and its
/// OpenAPI document.
pub fn router(
    db: Db,
    cfg: &crate::config::Validated,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    media: Arc<crate::media::MediaStore>,
    nowplaying: Option<Arc<crate::nowplaying::Hub>>,
    (realtime, socketio): (crate::realtime::Gateway, crate::realtime::GatewayLayer),
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
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::get))
        .routes(routes!(nodes::drain))
        .routes(routes!(nodes::resume))
        .routes(routes!(nodes::revoke))
        .routes(routes!(nodes::list_tokens, nodes::create_token))
        .routes(routes!(nodes::delete_token))
        .routes(routes!(streams::list, streams::create))
        .routes(routes!(streams::get, streams::update, streams::delete))
        .routes(routes!(streams::rotate_key))
        .routes(routes!(streams::ingest))
        .routes(routes!(streams::playback_token))
        .routes(routes!(streams::viewers))
        .routes(routes!(streams::usage))
        .routes(routes!(my_streams::mine))
        .routes(routes!(my_streams::view, my_streams::update))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::mine))
        .merge(station_routes())
        .merge(usage_and_billing_routes())
        .routes(routes!(users::list))
        .routes(routes!(users::get, users::put, users::delete))
        .routes(routes!(users::create_token))
        .routes(routes!(signing_keys::list, signing_keys::create))
        .routes(routes!(signing_keys::revoke))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::test))
        .routes(routes!(conversations::list))
        .routes(routes!(conversations::history))
        .routes(routes!(attachments::upload))
        .routes(routes!(reports::list))
        .routes(routes!(notifications::create))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::read))
        .routes(routes!(notifications::read_all))
        .merge(money_routes())
        .routes(routes!(me::get, subscriptions::update_me))
        .routes(routes!(creators::get))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .split_for_parts();
    // The public routes get their CORS layer over their whole method routers, the "method not
    // allowed" answer included, so a preflight (OPTIONS) is answered by the layer.
    let (public, public_doc) = public_routes().split_for_parts();
    openapi.merge(public_doc);
    let public = public
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors::public());
    if let Some(components) = openapi.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let openapi_json = complete_error_responses(&openapi);
    let state = AppState {
        db,
        admin_token: cfg
            .admin_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Arc::from),
        metrics,
        openapi: Arc::new(openapi_json),
        cluster,
        media,
        nowplaying,
        realtime,
        webhooks_allow_private: cfg.webhooks.allow_private,
        public_url: cfg.public_url.as_deref().map(Arc::from),
        turn: Arc::new(cfg.turn.clone()),
    };
    let app = router
        .merge(public)
        .merge(pages::routes(&cfg.app_dir))
        .merge(app::routes(&cfg.app_dir))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    // Outermost: `/socket.io/` is answered by the gateway, everything else passes through.
    socketio.wrap(app)
}

/// The money API: wallets, transactions, tips, earnings and payouts (and beside it paywalls,
/// stream chats' moderators, and calls' TURN relays).
fn money_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(wallets::get))
        .routes(routes!(wallets::credit))
        .routes(routes!(wallets::adjust))
        .routes(routes!(wallets::transactions))
        .routes(routes!(wallets::me))
        .routes(routes!(wallets::my_transactions))
        .routes(routes!(transactions::list))
        .routes(routes!(transactions::get))
        .routes(routes!(transactions::refund))
        .routes(routes!(transactions::check))
        .routes(routes!(tips::create))
        .routes(routes!(earnings::get))
        .routes(routes!(earnings::mine))
        .routes(routes!(payouts::request, payouts::mine))
        .routes(routes!(payouts::list))
        .routes(routes!(calls::list))
        .routes(routes!(calls::mine))
        .routes(routes!(payouts::paid))
        .routes(routes!(payouts::rejected))
        .routes(routes!(subscriptions::create, subscriptions::mine))
        .routes(routes!(subscriptions::cancel))
        .routes(routes!(subscriptions::declare, subscriptions::remove))
        .routes(routes!(paywall::purchase))
        .routes(routes!(paywall::playback))
        .routes(routes!(turn::ice_servers))
        .routes(routes!(chat::moderators))
        .routes(routes!(chat::add, chat::remove))
        .routes(routes!(chat::my_moderators))
        .routes(routes!(chat::add_mine, chat::remove_mine))
        .routes(routes!(chat::saved))
}

/// Radio stations: the stations themselves, their media, playlists, DJs, now playing, pictures,
/// embeddable player and song requests.
fn station_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stations::list, stations::create))
        .routes(routes!(stations::get, stations::update, stations::delete))
        .routes(routes!(stations::rotate_source_password))
        .routes(routes!(stations::placement))
        .routes(routes!(media::list, media::upload))
        .routes(routes!(media::get, media::update, media::delete))
        .routes(routes!(playlists::list, playlists::create))
        .routes(routes!(
            playlists::get,
            playlists::update,
            playlists::delete
        ))
        .routes(routes!(playlists::get_settings, playlists::put_settings))
        .routes(routes!(streamers::list, streamers::create))
        .routes(routes!(streamers::update, streamers::delete))
        .routes(routes!(streamers::live))
        .routes(routes!(nowplaying::panel))
        .routes(routes!(art::put_station, art::delete_station))
        .routes(routes!(pages::snippet))
        .routes(routes!(requests::list, requests::clear_all))
        .routes(routes!(requests::clear))
}

/// Usage (stations, realtime, Prometheus discovery) and billing.
fn usage_and_billing_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage::station_usage))
        .routes(routes!(usage::station_listeners))
        .routes(routes!(usage::station_history))
        .routes(routes!(usage::realtime_usage))
        .routes(routes!(usage::prometheus_targets))
        .routes(routes!(billing::run))
        .routes(routes!(billing::list))
        .routes(routes!(billing::get))
        .routes(routes!(billing::finalize))
}

/// The routes web players call from other origins (no authentication), which get the CORS layer.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(listen::listen))
        .routes(routes!(listen::watch))
        .routes(routes!(nowplaying::public))
        .routes(routes!(nowplaying::events))
        .routes(routes!(requests::list_requestable))
        .routes(routes!(requests::request))
        .routes(routes!(attachments::serve))
        .routes(routes!(art::serve))
        .routes(routes!(art::default_picture))
}

/// Adds to every operation the error answers that the extractors give (401 for a missing or bad
/// token, 403 for the wrong role, 413/422 for bodies and 400/415 for JSON bodies) and marks
/// every error body as `application/problem+json`, so the document tells clients exactly what
/// they can receive.
fn complete_error_responses(openapi: &utoipa::openapi::OpenApi) -> String {
    let mut doc = serde_json::to_value(openapi).unwrap_or_default();
    let problem = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let has_body = op.get("requestBody").is_some();
                // Raw uploads (media) are not JSON: no 415, and their 400 is documented by hand.
                let has_json_body = op
                    .pointer("/requestBody/content/application~1json")
                    .is_some();
                let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut())
                else {
                    continue;
                };
                for (status, resp) in responses.iter_mut() {
                    if status.as_str() >= "400"
                        && let Some(content) =
                            resp.get_mut("content").and_then(|c| c.as_object_mut())
                        && let Some(json) = content.remove("application/json")
                    {
                        content.insert("application/problem+json".to_string(), json);
                    }
                }
                if !path.starts_with("/v1/") {
                    continue;
                }
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description));
                };
                // An attachment's URL is its capability: no token, so no 401 or 403.
                if path.starts_with("/v1/attachments/") {
                    continue;
                }
                add("401", "Missing, unknown or revoked bearer token");
                let open_to_all = path == "/v1/me"
                    || ((path.starts_with("/v1/stations")
                        || path.starts_with("/v1/invoices")
                        || path.starts_with("/v1/streams"))
                        && method == "get");
                if !open_to_all {
                    add(
                        "403",
                        "The token's role may not do this (admin route, or a suspended tenant)",
                    );
                }
                if has_json_body {
                    add("400", "The body is not valid JSON");
                    add("415", "The body is not sent as application/json");
                }
                if has_body {
                    add("413", "The body is larger than the server accepts");
                    add(
                        "422",
                        "The body does not fit the request (unknown field, wrong type, invalid value)",
                    );
                }
                if path.contains('{') {
                    add("404", "No such object (or it belongs to another tenant)");
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
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
    // Only standard methods become label values: any other string would add a series.
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .observe_request(method, &route, resp.status().as_u16(), start.elapsed());
    resp
}
