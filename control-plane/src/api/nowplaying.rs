//! Now playing: what a station plays, its listeners, whether a DJ is live, what comes next and
//! what played before. The panel route is tenant-scoped; the public JSON (unauthenticated, for
//! web players, in the shape AzuraCast's players read) and its Server-Sent Events feed are
//! answered from the now-playing hub's snapshot of the station (`crate::nowplaying`), built
//! once per change: no request and no subscriber reads the database. Feeds are bounded per
//! client address (429) and in total (503).

use super::AppState;
use super::auth::ReadableStation;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::nowplaying::{Hub, HubError, RETRY_AFTER_SECS, Snapshot, event_frame};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use onda_shared::api::{NowPlaying, Problem};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A comment this often keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NoStation(_) => ApiError::NotFound(e.to_string()),
            HubError::PerIp { .. } => ApiError::TooManyRequests {
                detail: e.to_string(),
                retry_after_secs: RETRY_AFTER_SECS,
            },
            HubError::Total { .. } => ApiError::Unavailable {
                detail: e.to_string(),
                retry_after_secs: RETRY_AFTER_SECS,
            },
            HubError::Db(e) => e.into(),
        }
    }
}

/// `http://host` as the client reached us, for absolute listen URLs.
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn hub(st: &AppState) -> ApiResult<&Arc<Hub>> {
    st.nowplaying
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("This control plane runs without a cluster.".to_string()))
}

async fn snapshot(st: &AppState, key: &str) -> ApiResult<Arc<Snapshot>> {
    Ok(hub(st)?.current(key).await?)
}

/// What a station plays now, its listeners, what comes next and what played before.
#[utoipa::path(get, path = "/v1/stations/{id}/nowplaying", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 200, body = NowPlaying), (status = 404, body = Problem)))]
pub async fn panel(
    State(st): State<AppState>,
    ReadableStation { station_id: id, .. }: ReadableStation,
    headers: HeaderMap,
) -> ApiResult<Json<NowPlaying>> {
    Ok(Json(snapshot(&st, &id).await?.json(&base_url(&headers))))
}

fn public_headers(resp: &mut Response) {
    // Web players on the tenant's own site read it: CORS comes from the public routes' layer.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// Public now-playing JSON of a station (no authentication), for web players.
#[utoipa::path(get, path = "/api/nowplaying/{station}", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id")),
    responses((status = 200, body = NowPlaying), (status = 404, body = Problem)))]
pub async fn public(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiPath(station): ApiPath<String>,
) -> ApiResult<Response> {
    let body = snapshot(&st, &station).await?.json(&base_url(&headers));
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("now playing")))?;
    // The body changes each second (elapsed, remaining) and on every change: its hash is the
    // validator, so a player polling within the same second is answered 304 without a body.
    let etag = format!("\"{:016x}\"", body_hash(&bytes));
    let mut resp = if super::art::current_copy(&headers, &etag) {
        axum::http::StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    public_headers(&mut resp);
    Ok(resp)
}

/// A 64-bit hash of the body for its ETag (not a security boundary: `DefaultHasher::new` has
/// fixed keys, so replicas running the same build agree on a body's tag).
fn body_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Server-Sent Events: the public now-playing JSON at once and again on every change (track,
/// live, listeners), as `event: nowplaying`; a comment every 15 s keeps proxies from closing it.
/// Each client address may hold `nowplaying.max_subscribers_per_ip` feeds (429 beyond) and the
/// server `nowplaying.max_subscribers` (503 beyond).
#[utoipa::path(get, path = "/api/nowplaying/{station}/events", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id")),
    responses((status = 200, description = "text/event-stream of now-playing JSON", content_type = "text/event-stream", body = String),
              (status = 404, body = Problem),
              (status = 429, body = Problem, description = "This address holds its maximum of feeds"),
              (status = 503, body = Problem, description = "The server holds its maximum of feeds")))]
pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    let ip = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let sub = hub(&st)?.subscribe(&key, ip).await?;
    let base = base_url(&headers);
    let first = event_frame(&sub.first.json(&base));
    struct Feed {
        first: Option<Bytes>,
        /// The snapshot last sent: a feed opened during a wave may be sent it again.
        last: Arc<Snapshot>,
        sub: crate::nowplaying::Subscription,
        base: String,
    }
    let feed = Feed {
        first: Some(first),
        last: sub.first.clone(),
        sub,
        base,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        if let Some(first) = f.first.take() {
            return Some((Ok::<_, std::convert::Infallible>(first), f));
        }
        let keep_alive = tokio::time::sleep(KEEP_ALIVE);
        tokio::pin!(keep_alive);
        loop {
            let next = tokio::select! {
                // The station was deleted, or the server stops: the feed ends.
                changed = f.sub.updates.changed() => {
                    changed.ok()?;
                    let snap = f.sub.updates.borrow_and_update().clone();
                    match snap {
                        Some(s) if !Arc::ptr_eq(&s, &f.last) => {
                            let bytes = s.event(&f.base);
                            f.last = s;
                            bytes
                        }
                        _ => continue,
                    }
                }
                () = &mut keep_alive => Bytes::from_static(b":\n\n"),
            };
            return Some((Ok(next), f));
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    public_headers(&mut resp);
    Ok(resp)
}
