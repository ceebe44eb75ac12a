//! `/app/`: the web app for fans and creators (`web/`, built by Vite into `http.app_dir`),
//! served as static files from the control plane's origin, so it reaches the API and the
//! gateway without CORS. A path that is not a file gets `index.html` (the app routes itself).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::routing::get;
use std::path::Path;
use tower_http::services::{ServeDir, ServeFile};

/// Vite names built assets by their content hash: they never change under one name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The `/app` routes: the files of `dir`, or a sentence saying the app is not built.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let index = dir.join("index.html");
    if !index.is_file() {
        let missing = dir.display().to_string();
        let answer = move || {
            let missing = missing.clone();
            async move {
                super::error::ApiError::NotFound(format!(
                    "The web app is not built ({missing}/index.html is missing): run `make dev`, \
                     or set http.app_dir."
                ))
                .into_response()
            }
        };
        return Router::new()
            .route("/app", get(answer.clone()))
            .route("/app/", get(answer.clone()))
            .route("/app/{*rest}", get(answer));
    }
    let files = ServeDir::new(dir).fallback(ServeFile::new(index));
    Router::new()
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .nest_service("/app/", files)
        .layer(axum::middleware::map_response(cache_headers))
}

/// Hashed assets are cached for good; the page itself is revalidated, so a new build is seen.
async fn cache_headers(mut resp: Response) -> Response {
    let value = if resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"))
    {
        "no-cache"
    } else {
        IMMUTABLE
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}
