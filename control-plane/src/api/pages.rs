//! The public web pages of radio stations: the control plane's root (a short page naming the
//! service, nothing private), a station's page (`/stations/{slug}`) and its embeddable player
//! (`/embed/{slug}`), both the web app's `station.html` (built by Vite into `http.app_dir`,
//! its assets under `/app/assets/`), and the panel route that writes a player's `<iframe>`
//! snippet (`GET /v1/stations/{id}/embed`). The pages read everything they show from the
//! public now-playing feed; here they are only named (their title) and found (404 for a
//! station that does not exist).

use super::AppState;
use super::auth::ReadableStation;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::db;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse as _, Response};
use onda_shared::api::{EmbedParams, EmbedSnippet, Problem};
use std::path::Path;
use std::sync::Arc;

/// `/`, `/stations/{slug}` and `/embed/{slug}`, with the station page as built in `app_dir`.
pub fn routes(app_dir: &Path) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", axum::routing::get(root))
        .route("/stations/{slug}", axum::routing::get(station))
        .route("/embed/{slug}", axum::routing::get(embed))
        .layer(axum::Extension(StationPage::load(app_dir)))
}

/// Where `station.html` is built. Read when served (a few hundred bytes), so a rebuilt web app
/// is served without a restart, as `/app/` is.
#[derive(Clone)]
pub struct StationPage(Arc<std::path::PathBuf>);

impl StationPage {
    pub fn load(app_dir: &Path) -> StationPage {
        StationPage(Arc::new(app_dir.join("station.html")))
    }

    async fn html(&self) -> Result<String, String> {
        tokio::fs::read_to_string(&*self.0).await.map_err(|_| {
            format!(
                "The web app is not built ({} is missing): run `make dev`, or set http.app_dir.",
                self.0.display()
            )
        })
    }
}

const ROOT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Onda</title>\
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;\
line-height:1.5;color:#1b1b1f}a{color:#5b4bdb}</style></head><body><h1>Onda</h1>\
<p>A streaming cluster for radio stations and creator platforms: Icecast-compatible audio, \
HLS, live video, chat, calls and payments.</p><ul>\
<li>API reference: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3)</li>\
<li>A station's public page: <code>/stations/{slug}</code>; its player for other sites: \
<code>/embed/{slug}</code></li><li>Listening: <code>/listen/{slug}/{mount}</code> \
(<code>.m3u</code>, <code>.pls</code>, <code>.m3u8</code>)</li></ul></body></html>";

/// The control plane's root page.
pub async fn root() -> Response {
    let mut resp = Html(ROOT).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Text made safe inside HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn page(st: &AppState, page: &StationPage, slug: &str, embed: bool) -> Response {
    let html = match page.html().await {
        Ok(html) => html,
        Err(missing) => return ApiError::NotFound(missing).into_response(),
    };
    let name = match st.nowplaying.as_ref() {
        Some(hub) => hub
            .current(slug)
            .await
            .map(|s| s.station_name().to_string()),
        None => Err(crate::nowplaying::HubError::NoStation(slug.to_string())),
    };
    let name = match name {
        Ok(name) => name,
        Err(crate::nowplaying::HubError::NoStation(_)) => {
            let body = format!(
                "<!doctype html><meta charset=\"utf-8\"><title>No such station</title>\
                 <p>There is no station {:?} here.</p>",
                escape(slug)
            );
            return (StatusCode::NOT_FOUND, Html(body)).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let title = format!("<title>{}</title>", escape(&name));
    let mut resp = Html(html.replacen("<title>Onda radio</title>", &title, 1)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The player is made to be framed by any site; the page itself only by its own origin.
    let frame = if embed {
        "frame-ancestors *"
    } else {
        "frame-ancestors 'self'"
    };
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(frame),
    );
    resp
}

/// `/stations/{slug}`: the station's public page.
pub async fn station(
    State(st): State<AppState>,
    axum::Extension(p): axum::Extension<StationPage>,
    ApiPath(slug): ApiPath<String>,
) -> Response {
    page(&st, &p, &slug, false).await
}

/// `/embed/{slug}`: the player other sites put in an `<iframe>`.
pub async fn embed(
    State(st): State<AppState>,
    axum::Extension(p): axum::Extension<StationPage>,
    ApiPath(slug): ApiPath<String>,
) -> Response {
    page(&st, &p, &slug, true).await
}

/// The query of an embed URL and the iframe's height for `p`, or the sentence refusing it.
fn embed_query(p: &EmbedParams) -> Result<(String, u32), String> {
    let mut q = Vec::new();
    let theme = p.theme.as_deref().unwrap_or("light");
    if !matches!(theme, "light" | "dark") {
        return Err(format!("theme is light or dark, not {theme:?}."));
    }
    let layout = p.layout.as_deref().unwrap_or("full");
    if !matches!(layout, "full" | "compact") {
        return Err(format!("layout is full or compact, not {layout:?}."));
    }
    q.push(format!("theme={theme}"));
    q.push(format!("layout={layout}"));
    if let Some(a) = &p.accent {
        let hex = a.strip_prefix('#').unwrap_or(a);
        if !matches!(hex.len(), 3 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "accent is a colour written #rgb or #rrggbb, not {a:?}."
            ));
        }
        q.push(format!("accent=%23{}", hex.to_ascii_lowercase()));
    }
    let compact = layout == "compact";
    let history = p.history.unwrap_or(!compact);
    let requests = p.requests.unwrap_or(false);
    let flag = |b: bool| if b { "1" } else { "0" };
    q.push(format!("history={}", flag(history)));
    q.push(format!("requests={}", flag(requests)));
    q.push(format!("volume={}", flag(p.volume.unwrap_or(true))));
    q.push(format!("cover={}", flag(p.cover.unwrap_or(true))));
    let mut height = if compact { 110 } else { 250 };
    if history {
        height += 330;
    }
    if requests {
        height += 280;
    }
    Ok((q.join("&"), height))
}

/// The embeddable player's URL and `<iframe>` snippet for the chosen look. Paste the snippet in
/// any page: the player plays the station, shows what plays and updates by itself.
#[utoipa::path(get, path = "/v1/stations/{id}/embed", tag = "stations",
    params(("id" = String, Path, description = "Station id"), EmbedParams),
    responses((status = 200, body = EmbedSnippet),
              (status = 400, body = Problem, description = "An unknown option"),
              (status = 422, body = Problem, description = "An option's value is not one it takes")))]
pub async fn snippet(
    State(st): State<AppState>,
    ReadableStation { station_id, caller }: ReadableStation,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<EmbedParams>,
) -> ApiResult<Json<EmbedSnippet>> {
    let (query, height) = embed_query(&p).map_err(ApiError::Unprocessable)?;
    let station = {
        let mut conn = st.db.conn().await?;
        db::stations::get(&mut conn, &station_id, caller.tenant_scope())
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("There is no station {station_id:?}.")))?
    };
    let base = match st.public_url.as_deref() {
        Some(u) => u.to_string(),
        None => super::nowplaying::base_url(&headers),
    };
    let url = format!("{base}/embed/{}?{query}", station.slug);
    let width = 560;
    let snippet = format!(
        "<iframe src=\"{}\" width=\"{width}\" height=\"{height}\" \
         style=\"border:0;max-width:100%\" allow=\"autoplay\" loading=\"lazy\" \
         title=\"{}\"></iframe>",
        escape(&url),
        escape(&station.name)
    );
    Ok(Json(EmbedSnippet {
        url,
        snippet,
        width,
        height,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_options_become_the_query_or_a_sentence() {
        let (q, h) = embed_query(&EmbedParams::default()).expect("defaults");
        assert_eq!(
            q,
            "theme=light&layout=full&history=1&requests=0&volume=1&cover=1"
        );
        assert_eq!(h, 580);
        let p = EmbedParams {
            theme: Some("dark".into()),
            accent: Some("E4572E".into()),
            layout: Some("compact".into()),
            requests: Some(true),
            ..EmbedParams::default()
        };
        let (q, h) = embed_query(&p).expect("valid");
        assert_eq!(
            q,
            "theme=dark&layout=compact&accent=%23e4572e&history=0&requests=1&volume=1&cover=1"
        );
        assert_eq!(h, 390);
        for (bad, word) in [
            (
                EmbedParams {
                    theme: Some("blue".into()),
                    ..EmbedParams::default()
                },
                "theme",
            ),
            (
                EmbedParams {
                    layout: Some("tiny".into()),
                    ..EmbedParams::default()
                },
                "layout",
            ),
            (
                EmbedParams {
                    accent: Some("#12345".into()),
                    ..EmbedParams::default()
                },
                "accent",
            ),
            (
                EmbedParams {
                    accent: Some("red\"><script>".into()),
                    ..EmbedParams::default()
                },
                "accent",
            ),
        ] {
            let e = embed_query(&bad).expect_err("refused");
            assert!(e.starts_with(word), "{e}");
        }
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<b>\"Rock\" & 'Roll'</b>"),
            "&lt;b&gt;&quot;Rock&quot; &amp; &#39;Roll&#39;&lt;/b&gt;"
        );
    }
}
