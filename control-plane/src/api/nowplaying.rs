//! Now playing: what a station plays, its listeners, whether a DJ is live, what comes next and
//! what played before. The panel route is tenant-scoped; the public JSON (unauthenticated, for
//! web players, in the shape AzuraCast's players read) and its Server-Sent Events feed are
//! answered from the replica's in-memory view plus the song history, and the feed sends the
//! answer again whenever it changes.

use super::AppState;
use super::auth::ReadableStation;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::cluster::Cluster;
use crate::db;
use crate::db::cluster::CatalogStation;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use onda_shared::api::{
    CurrentSong, NextSong, NowPlaying, NowPlayingListeners, NowPlayingLive, NowPlayingMount,
    NowPlayingStation, PlayedSong, Problem, Song,
};
use onda_shared::cluster::proto::TrackPlaying;
use std::sync::Arc;
use std::time::Duration;

/// Entries of `song_history` in an answer.
const HISTORY: u32 = 10;

fn song(t: &TrackPlaying) -> Song {
    Song {
        id: t.media_sha256.clone().unwrap_or_default(),
        text: t.title.clone(),
        artist: t.artist.clone(),
        title: t.track_title.clone(),
        album: String::new(),
        art: String::new(),
    }
}

fn source(t: &TrackPlaying) -> String {
    if t.live { "live" } else { "autodj" }.to_string()
}

fn secs(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

/// The answer for one station, as of now.
async fn build(
    st: &AppState,
    cluster: &Cluster,
    station: &CatalogStation,
    base: &str,
) -> ApiResult<NowPlaying> {
    let snap = cluster.view.get();
    let current = snap.now_playing.get(&station.id).cloned();
    let (history, streamer) = {
        let mut c = st.db.conn().await?;
        let history = db::history::recent(&mut c, &station.id, HISTORY + 1).await?;
        // A DJ's account name becomes the display name the tenant gave it.
        let streamer = match current.as_ref().filter(|t| t.live) {
            Some(t) if !t.streamer.is_empty() && t.streamer != "source" => {
                db::streamers::display_name(&mut c, &station.id, &t.streamer)
                    .await?
                    .unwrap_or_else(|| t.streamer.clone())
            }
            Some(t) => t.title.clone(),
            None => String::new(),
        };
        (history, streamer)
    };
    let now_ms = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0);
    let now_playing = current.as_ref().map(|t| {
        let elapsed = now_ms.saturating_sub(t.started_at_ms) / 1000;
        let duration = t.duration_ms.unwrap_or(0) / 1000;
        CurrentSong {
            played_at: secs(t.started_at_ms),
            duration,
            elapsed,
            remaining: duration.saturating_sub(elapsed),
            source: source(t),
            song: song(t),
        }
    });
    let playing_next = current
        .as_ref()
        .and_then(|t| t.next_title.as_ref())
        .map(|text| {
            let (artist, title) = text.split_once(" - ").unwrap_or(("", text.as_str()));
            NextSong {
                song: Song {
                    id: String::new(),
                    text: text.clone(),
                    artist: artist.to_string(),
                    title: title.to_string(),
                    album: String::new(),
                    art: String::new(),
                },
            }
        });
    let song_history = history
        .iter()
        .filter(|h| {
            current
                .as_ref()
                .is_none_or(|c| c.started_at_ms != h.started_at_ms)
        })
        .take(HISTORY as usize)
        .map(|h| PlayedSong {
            played_at: secs(h.started_at_ms),
            duration: h.duration_ms.unwrap_or(0) / 1000,
            source: source(h),
            song: song(h),
        })
        .collect();
    let live = current.as_ref().filter(|t| t.live);
    let listeners = snap.listeners.get(&station.id).copied().unwrap_or(0);
    let mounts: Vec<NowPlayingMount> = station
        .mounts
        .iter()
        .map(|(path, format, kbps)| NowPlayingMount {
            name: path.clone(),
            url: format!("{base}/listen/{}{path}", station.slug),
            format: format.clone(),
            bitrate: *kbps,
        })
        .collect();
    let is_online = station
        .mounts
        .iter()
        .any(|(path, _, _)| !snap.carriers(station, path).is_empty());
    Ok(NowPlaying {
        station: NowPlayingStation {
            id: station.id.clone(),
            name: station.name.clone(),
            shortcode: station.slug.clone(),
            listen_url: mounts.first().map(|m| m.url.clone()).unwrap_or_default(),
            mounts,
        },
        listeners: NowPlayingListeners {
            total: listeners,
            current: listeners,
        },
        live: NowPlayingLive {
            is_live: live.is_some(),
            streamer_name: streamer,
            broadcast_start: live.map(|t| secs(t.started_at_ms)),
        },
        now_playing,
        playing_next,
        song_history,
        is_online,
    })
}

/// `http://host` as the client reached us, for absolute listen URLs.
fn base_url(headers: &HeaderMap) -> String {
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

fn lookup(st: &AppState, key: &str) -> ApiResult<(Arc<Cluster>, Arc<CatalogStation>)> {
    let cluster = st.cluster.clone().ok_or_else(|| {
        ApiError::NotFound("This control plane runs without a cluster.".to_string())
    })?;
    let station = cluster
        .view
        .get()
        .station(key)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("There is no station {key:?}.")))?;
    Ok((cluster, station))
}

/// What a station plays now, its listeners, what comes next and what played before.
#[utoipa::path(get, path = "/v1/stations/{id}/nowplaying", params(("id" = String, Path, description = "Object id")), tag = "stations",
    responses((status = 200, body = NowPlaying), (status = 404, body = Problem)))]
pub async fn panel(
    State(st): State<AppState>,
    ReadableStation { station_id: id, .. }: ReadableStation,
    headers: HeaderMap,
) -> ApiResult<Json<NowPlaying>> {
    let (cluster, station) = lookup(&st, &id)?;
    Ok(Json(
        build(&st, &cluster, &station, &base_url(&headers)).await?,
    ))
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
    let (cluster, station) = lookup(&st, &station)?;
    let body = build(&st, &cluster, &station, &base_url(&headers)).await?;
    let mut resp = Json(body).into_response();
    public_headers(&mut resp);
    Ok(resp)
}

/// Server-Sent Events: the public now-playing JSON at once and again on every change (track,
/// live, listeners), as `event: nowplaying`; a comment every 15 s keeps proxies from closing it.
#[utoipa::path(get, path = "/api/nowplaying/{station}/events", tag = "listen", security(()),
    params(("station" = String, Path, description = "Station slug or id")),
    responses((status = 200, description = "text/event-stream of now-playing JSON", content_type = "text/event-stream", body = String),
              (status = 404, body = Problem)))]
pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    let (cluster, _) = lookup(&st, &key)?;
    let base = base_url(&headers);
    let changed = cluster.changed.subscribe();
    struct Feed {
        st: AppState,
        cluster: Arc<Cluster>,
        key: String,
        base: String,
        changed: tokio::sync::watch::Receiver<u64>,
        last: Option<NowPlaying>,
    }
    let feed = Feed {
        st,
        cluster,
        key,
        base,
        changed,
        last: None,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if f.last.is_some() && f.changed.changed().await.is_err() {
                return None;
            }
            // The station may have been deleted meanwhile: then the feed ends.
            let station = f.cluster.view.get().station(&f.key).cloned()?;
            let Ok(np) = build(&f.st, &f.cluster, &station, &f.base).await else {
                // The database is briefly unreachable: try again at the next change.
                continue;
            };
            // Elapsed seconds alone do not make a change worth sending.
            let same = f.last.as_ref().is_some_and(|l| {
                let mut l = l.clone();
                l.now_playing = l.now_playing.map(|mut c| {
                    if let Some(n) = &np.now_playing {
                        c.elapsed = n.elapsed;
                        c.remaining = n.remaining;
                    }
                    c
                });
                l == np
            });
            if same {
                continue;
            }
            let event = Event::default()
                .event("nowplaying")
                .json_data(&np)
                .unwrap_or_else(|_| Event::default().comment("unencodable"));
            f.last = Some(np);
            return Some((Ok::<_, std::convert::Infallible>(event), f));
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    public_headers(&mut resp);
    Ok(resp)
}
