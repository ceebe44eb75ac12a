//! CORS of the public routes web players call from a tenant's own site: the listener and viewer
//! redirects (`/listen`, `/watch`: an `<audio crossorigin>` or hls.js follows them to an edge,
//! and a browser drops a cross-origin redirect that does not allow its origin), the public
//! now-playing JSON and events, song requests, and message attachments (`/v1/attachments/{id}`,
//! whose URL is its own capability, fetched by a tenant's app from its own origin). One layer
//! builds the headers for all of them; the rest of the panel API (`/v1`, bearer tokens) gets
//! none.

use axum::http::{HeaderName, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Any origin may read these routes, as any origin may read the edges' streams: they carry
/// nothing private, and no credentials (cookies) are accepted with them.
pub fn public() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        // POST: a listener's song request (`/api/station/{station}/request/{id}`).
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::OPTIONS])
        // What a player may send on to the edge (a preflight is made again after a redirect).
        .allow_headers([
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::RANGE,
            HeaderName::from_static("icy-metadata"),
        ])
        .max_age(Duration::from_secs(86400))
}
