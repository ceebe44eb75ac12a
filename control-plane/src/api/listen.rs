//! The listener redirector: public URLs that stay the same whichever node carries a station.
//! `GET /listen/{station}/{mount}` answers 302 to the least-loaded live edge with the mount on
//! the air; `…/{mount}.m3u` and `.pls` list every such edge so players fail over by themselves;
//! `…/{mount}.m3u8` answers 302 to the mount's HLS playlist on that edge (MP3 and AAC mounts),
//! with a session token of its own for each listener; 503 with `Retry-After` when no edge has it
//! on the air (a failover in progress).

use super::AppState;
use super::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onda_shared::api::Problem;
use onda_shared::domain::AudioFormat;

fn unavailable(detail: String) -> Response {
    let problem = Problem {
        kind: "https://onda.dev/problems/unavailable".to_string(),
        title: "Service unavailable".to_string(),
        status: 503,
        detail,
        limit: None,
        grant: None,
    };
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::to_vec(&problem).unwrap_or_default(),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

enum Variant {
    Redirect,
    M3u,
    Pls,
    Hls,
}

/// Redirect a listener to an edge carrying the station's mount (`.m3u`/`.pls`: a playlist of
/// every edge carrying it).
#[utoipa::path(get, path = "/listen/{station}/{mount}", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id"),
           ("mount" = String, Path, description = "Mount name without the leading slash (`radio.mp3`), optionally with `.m3u` or `.pls` appended, or `.m3u8` for the mount as HLS (MP3 and AAC mounts)")),
    responses((status = 302, description = "To the least-loaded edge carrying the mount (`.m3u8`: to the mount's HLS playlist there, with a session token of the listener's own)"),
              (status = 200, description = "M3U or PLS playlist of every edge carrying it", body = String),
              (status = 404, body = Problem),
              (status = 503, description = "No edge has the mount on the air right now; retry", body = Problem)))]
pub async fn listen(
    State(st): State<AppState>,
    Path((station, mount)): Path<(String, String)>,
) -> Response {
    let Some(cluster) = &st.cluster else {
        return unavailable("This control plane runs without a cluster.".to_string());
    };
    let snap = cluster.view.get();
    if !snap.loaded {
        return unavailable("The control plane is starting.".to_string());
    }
    let Some(s) = snap.station(&station) else {
        return ApiError::NotFound(format!("There is no station {station:?}.")).into_response();
    };
    let (variant, name) = if let Some(m) = mount.strip_suffix(".m3u") {
        (Variant::M3u, m)
    } else if let Some(m) = mount.strip_suffix(".pls") {
        (Variant::Pls, m)
    } else if let Some(m) = mount.strip_suffix(".m3u8") {
        (Variant::Hls, m)
    } else {
        (Variant::Redirect, mount.as_str())
    };
    let path = format!("/{name}");
    // A mount literally named `x.m3u` wins over the playlist of `x`.
    let (variant, path) = if s.mounts.iter().any(|m| m.0 == format!("/{mount}")) {
        (Variant::Redirect, format!("/{mount}"))
    } else {
        (variant, path)
    };
    if !s.mounts.iter().any(|m| m.0 == path) {
        return ApiError::NotFound(format!(
            "Station {station:?} has no mount {path:?}; it has {}.",
            s.mounts
                .iter()
                .map(|m| m.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into_response();
    }
    if let Variant::Hls = variant
        && let Some((_, format, _)) = s.mounts.iter().find(|m| m.0 == path)
        && !matches!(format, AudioFormat::Mp3 | AudioFormat::Aac)
    {
        return ApiError::NotFound(format!(
            "Mount {path:?} of station {station:?} is {format} in Ogg: HLS is made only of MP3 \
             and AAC mounts; listen to /listen/{station}{path} instead."
        ))
        .into_response();
    }
    if let Variant::Hls = variant
        && !s.hls
    {
        return ApiError::Forbidden(format!(
            "Station {station:?} is not served as HLS: its plan does not include HLS; listen to \
             /listen/{station}{path} instead."
        ))
        .into_response();
    }
    if !s.active {
        return unavailable(format!("Station {station:?} is off the air."));
    }
    let carriers = snap.carriers(s, &path);
    if carriers.is_empty() {
        return unavailable(format!(
            "No edge has {station}{path} on the air right now; it is being placed or moved."
        ));
    }
    let no_store = (header::CACHE_CONTROL, "no-store");
    match variant {
        Variant::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, carriers[0].url.as_str()), no_store],
        )
            .into_response(),
        Variant::Hls => {
            let edge_path = onda_shared::cluster::edge_mount_path(&s.slug, &path);
            let base = carriers[0]
                .url
                .strip_suffix(&edge_path)
                .unwrap_or(&carriers[0].url);
            // One token per redirect: the edge counts each listener's session by it, also
            // behind one address.
            let token = hex::encode(rand::random::<[u8; 12]>());
            let url = format!("{base}/hls-audio{edge_path}/index.m3u8?s={token}");
            (
                StatusCode::FOUND,
                [(header::LOCATION, url.as_str()), no_store],
            )
                .into_response()
        }
        Variant::M3u => {
            let mut body = String::from("#EXTM3U\n");
            for c in &carriers {
                body.push_str(&format!("#EXTINF:-1,{}\n{}\n", s.name, c.url));
            }
            ([(header::CONTENT_TYPE, "audio/x-mpegurl"), no_store], body).into_response()
        }
        Variant::Pls => {
            let mut body = String::from("[playlist]\n");
            for (i, c) in carriers.iter().enumerate() {
                let n = i + 1;
                body.push_str(&format!(
                    "File{n}={}\nTitle{n}={}\nLength{n}=-1\n",
                    c.url, s.name
                ));
            }
            body.push_str(&format!("NumberOfEntries={}\nVersion=2\n", carriers.len()));
            ([(header::CONTENT_TYPE, "audio/x-scpls"), no_store], body).into_response()
        }
    }
}

/// Redirect a viewer to the HLS playlist of a live stream on the edge carrying it.
#[utoipa::path(get, path = "/watch/{stream}", tag = "listen", security(()),
    params(("stream" = String, Path, description = "The live stream's slug with `.m3u8` appended")),
    responses((status = 302, description = "To the stream's HLS playlist on the edge carrying it"),
              (status = 404, body = Problem),
              (status = 503, description = "The stream is not placed on a live node right now; retry", body = Problem)))]
pub async fn watch(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(slug) = stream.strip_suffix(".m3u8") else {
        return ApiError::NotFound(format!(
            "There is no {stream:?} to watch: ask for /watch/SLUG.m3u8."
        ))
        .into_response();
    };
    let Some(cluster) = &st.cluster else {
        return unavailable("This control plane runs without a cluster.".to_string());
    };
    let live = match st.db.conn().await {
        Ok(mut c) => match crate::db::live_streams::by_slug(&mut c, slug).await {
            Ok(Some(s)) => crate::db::live_streams::has_renditions(&mut c, &s.id)
                .await
                .map(|r| Some((s, r))),
            other => other.map(|o| o.map(|s| (s, false))),
        },
        Err(e) => Err(e),
    };
    let (s, ladder) = match live {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError::NotFound(format!("There is no live stream {slug:?}."))
                .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let snap = cluster.view.get();
    // The least-loaded live carrier: the origin, or a relay with the stream's segments.
    let path = format!("/hls/{}", s.slug);
    let edge = snap
        .placement
        .stations
        .get(&s.id)
        .into_iter()
        .flat_map(|p| std::iter::once(&p.origin).chain(&p.relays))
        .filter_map(|id| snap.nodes.get(id).map(|n| (id, n)))
        .filter(|(_, n)| n.alive && n.on_air.contains(&path))
        .min_by(|(_, a), (_, b)| {
            let load = |n: &crate::cluster::view::NodeView| {
                n.listeners as f64 / n.capacity_listeners.max(1) as f64
            };
            load(a).total_cmp(&load(b))
        })
        .or_else(|| {
            // Before the publisher is on, the origin (it serves 404 until the first segment).
            snap.placement
                .stations
                .get(&s.id)
                .and_then(|p| snap.nodes.get(&p.origin).map(|n| (&p.origin, n)))
                .filter(|(_, n)| n.alive)
        });
    match edge {
        Some((node_id, n)) => {
            // A token stream's token goes on to the edge, which checks it.
            let token = query
                .as_deref()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "token")
                        .map(|(_, v)| v.into_owned())
                })
                .filter(|t| {
                    t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                })
                .map(|t| format!("?token={t}"))
                .unwrap_or_default();
            // The origin makes the stream's ABR ladder, listed in its master playlist; relays
            // carry the source only.
            let is_origin = snap
                .placement
                .stations
                .get(&s.id)
                .is_some_and(|p| &p.origin == node_id);
            let file = if ladder && is_origin {
                "master.m3u8"
            } else {
                "index.m3u8"
            };
            let url = format!(
                "{}/hls/{}/{file}{token}",
                n.edge_url.trim_end_matches('/'),
                s.slug
            );
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, url.as_str()),
                    (header::CACHE_CONTROL, "no-store"),
                ],
            )
                .into_response()
        }
        None => unavailable(format!(
            "No edge carries live stream {slug:?} right now; it is being placed or moved."
        )),
    }
}
